"""``PiecewiseAffine`` and ``LayerPiecewiseAffine``: the exact decomposition as Captum attribution methods.

They keep Captum's contract (``attribute(inputs, target, additional_forward_args, return_convergence_delta)``, every
input and target form of Captum, attributions in the structure of the inputs or of the layer's output) and are what
Captum's ``InputXGradient`` and ``LayerGradientXActivation`` compute, ``w * h``, with two things more:

- the convergence delta is the exactness error ``score - sum(attributions) - bias`` per example, ~0 (not Captum's
  inherited ``F(end) - F(start) - sum``, which would be ``F(0) - bias``); ``return_bias=True`` also returns the bias;
- the model is audited first: one that is not piece-wise affine is refused with the audit's findings
  (``allow_non_affine=True`` computes ``w * h`` anyway). Several layers come from one forward pass.

Example::

    import torch
    from captum.attr import NoiseTunnel

    import pwawidgets as pw
    from pwawidgets.integrations.captum import LayerPiecewiseAffine, PiecewiseAffine

    model = pw.load_model("mini_vgg_bn")  # the mini zoo: 64 px images, 6 classes
    x = torch.rand(2, 3, 64, 64)
    attr, delta, bias = PiecewiseAffine(model).attribute(x, target=3, return_convergence_delta=True, return_bias=True)
    blocks = LayerPiecewiseAffine(model, [model.features[6], model.features[13]]).attribute(x, target=[3, 5])
    smooth = NoiseTunnel(PiecewiseAffine(model)).attribute(x, nt_type="smoothgrad", nt_samples=4, target=3)

The score is the model's output as Captum selects it with ``target``: one logit per example (an output of more than
two dimensions is indexed by a tuple target). ``additional_forward_args`` are passed to ``forward`` after the inputs
and are not attributed: what they add to the score lands in the bias. Integer inputs (token indices) go into an
embedding: attribute at the embedding (``LayerPiecewiseAffine(model, model.embedding)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import nn

from ..calls import forward_args, logits_of
from ..core import Decomposition, Parts, Request, decompose_request

CaptumTarget = int | tuple | torch.Tensor | list | None


class _Function(nn.Module):
    """A ``forward_func`` that is not a module's own ``forward``, as a module (the module it belongs to, if any, is
    a child, so that its layers are found)."""

    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, nn.Module):
            self.owner = owner

    def forward(self, *args):
        return self.fn(*args)


def _as_module(forward_func: Callable) -> nn.Module:
    owner = getattr(forward_func, "__self__", None)
    if isinstance(forward_func, nn.DataParallel) or isinstance(owner, nn.DataParallel):
        raise ValueError("a DataParallel model: give the module it wraps (model.module); the decomposition runs on "
                         "one device")
    if isinstance(forward_func, nn.Module):
        return forward_func
    if not callable(forward_func):
        raise TypeError(f"forward_func must be a torch.nn.Module or a callable, got {type(forward_func).__name__}")
    if isinstance(owner, nn.Module) and getattr(forward_func, "__func__", None) is type(owner).forward:
        return owner  # model.forward: the model itself
    return _Function(forward_func)


def _flat_index(index: tuple, dims: tuple[int, ...], where: str) -> int:
    """A tuple index into the output's non-batch dimensions, as one index into the flattened output."""
    if len(index) != len(dims) or not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
        raise ValueError(f"{where} {index!r}: the model returns (batch, {', '.join(map(str, dims))}); give one int per "
                         f"dimension after the batch ({len(dims)} ints) to select one score per example")
    flat = 0
    for i, n in zip(index, dims, strict=True):
        if not -n <= i < n:
            raise ValueError(f"{where} {index!r} is out of range for outputs of shape (batch, {dims})")
        flat = flat * n + (i % n)
    return flat


def _read_output(output: object, target: CaptumTarget) -> tuple[torch.Tensor, object]:
    """The model's output as ``(B, C)`` scores and Captum's target as ours (an int or one int per example)."""
    if not isinstance(output, torch.Tensor) or output.dim() == 0:
        return logits_of(output), target  # its error names what the model returned
    dims = tuple(output.shape[1:])
    flat = output.reshape(output.shape[0], -1)
    if target is None:
        if flat.shape[1] != 1:
            raise ValueError(f"target=None, but the model returns {tuple(output.shape)}: more than one score per "
                             "example. Give a target (an int, one per example, or a tuple for outputs of more than "
                             "two dimensions), as Captum asks.")
        return flat, 0
    if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = int(target.item())
    elif isinstance(target, torch.Tensor) and target.dim() > 1:
        raise ValueError(f"a target tensor of shape {tuple(target.shape)}: give one int per example, (batch,), as "
                         "Captum does")
    if isinstance(target, tuple):
        return flat, _flat_index(target, dims, "target")
    if isinstance(target, list) and target and all(isinstance(t, tuple) for t in target):
        return flat, [_flat_index(t, dims, f"target[{i}]") for i, t in enumerate(target)]
    if len(dims) != 1:
        raise ValueError(f"the model returns {tuple(output.shape)}: give the target as a tuple of {len(dims)} ints "
                         "(or a list of such tuples, one per example) to select one score per example")
    return flat, target


def _layer_names(model: nn.Module, layer: nn.Module | Sequence[nn.Module]) -> list[str]:
    """The qualified name in ``model`` of each module of ``layer``."""
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not layers:
        raise ValueError("layer is an empty list: give a module of the model, or a list of them")
    names = {id(m): n for n, m in model.named_modules() if n}
    found = []
    for i, module in enumerate(layers):
        if not isinstance(module, nn.Module):
            raise TypeError(f"layer[{i}] is a {type(module).__name__}: give modules of the model (model.layer3)")
        if id(module) not in names:
            raise ValueError(f"layer {type(module).__name__} (layer[{i}]) is not a submodule of the model: give "
                             "modules from model.named_modules()")
        found.append(names[id(module)])
    return found


def _decompose(model: nn.Module, inputs, target: CaptumTarget, additional_forward_args: object, layers: list[str],
               allow_non_affine: bool) -> Decomposition:
    request = Request(target, layers, allow_non_affine=allow_non_affine,
                      forward_args=forward_args(additional_forward_args), several=True, unused_zero=True,
                      read_output=_read_output)
    return decompose_request(model, inputs, request)


def _delta(dec: Decomposition, layer: str) -> torch.Tensor:
    """``score - sum(attributions) - bias`` per example, in float64."""
    contrib = dec.contribution(layer)
    parts = contrib if isinstance(contrib, tuple) else (contrib,)
    total = sum(c.double().reshape(c.shape[0], -1).sum(1) for c in parts)
    return dec.score.double() - total - dec.bias[layer].double()


def _packed(attributions: object, delta: object, bias: object, return_convergence_delta: bool,
            return_bias: bool) -> object:
    extra = ([delta] if return_convergence_delta else []) + ([bias] if return_bias else [])
    return (attributions, *extra) if extra else attributions


class _ExactContract:
    """What both classes answer Captum alike: the delta is the exactness error, and it needs the bias."""

    def has_convergence_delta(self) -> bool:
        return True

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    def compute_convergence_delta(self, *args, **kwargs) -> torch.Tensor:
        raise ValueError("the delta of this method is score - sum(attributions) - bias, which needs the bias: call "
                         "attribute(..., return_convergence_delta=True)")

    def attribute_future(self) -> None:
        raise NotImplementedError("attribute_future is not implemented for this method (as for Captum's gradient "
                                  "methods): call attribute")


class PiecewiseAffine(_ExactContract, GradientAttribution):
    """Exact input contributions ``w * x`` with the bias (see the module's docstring): Captum's ``InputXGradient``
    on a piece-wise affine model, with a convergence delta that is ~0 and the bias on request.

    Args:
        forward_func: the model (a ``torch.nn.Module``) or a function of it, returning scores ``(B, ...)``.
    """

    def __init__(self, forward_func: Callable) -> None:
        GradientAttribution.__init__(self, forward_func)
        self.model = _as_module(forward_func)

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: CaptumTarget = None,
        additional_forward_args: object = None,
        return_convergence_delta: bool = False,
        *,
        return_bias: bool = False,
        allow_non_affine: bool = False,
    ) -> Parts | tuple:
        """Attributions ``w * x`` in the structure of ``inputs`` (a tensor, or a tuple of them).

        Args:
            inputs: a batch ``(B, ...)`` or a tuple of batches (one per input of ``forward``, same ``B``).
            target: as in Captum: an int, a tuple (outputs of more than two dimensions), a tensor, a list of ints or
                of tuples (one per example), or None for a model with one score per example.
            additional_forward_args: passed to ``forward`` after the inputs; not attributed (they land in the bias).
            return_convergence_delta: also return ``score - sum(attributions) - bias``, ``(B,)`` float64 (~0).
            return_bias: also return the bias ``(B,)``: the part of the score no input explains.
            allow_non_affine: attribute a model the audit rejects (the result is then ``w * x``, not exact).

        Returns:
            ``attributions``, then ``delta`` and ``bias`` where asked, in that order.
        """
        dec = _decompose(self.model, inputs, target, additional_forward_args, ["input"], allow_non_affine)
        attributions = dec.contribution("input")
        return _packed(attributions, _delta(dec, "input"), dec.bias["input"], return_convergence_delta, return_bias)


class LayerPiecewiseAffine(_ExactContract, LayerAttribution, GradientAttribution):
    """Exact contributions ``w * h`` at one layer or several, with the bias: Captum's ``LayerGradientXActivation`` on
    a piece-wise affine model, every layer from one forward pass.

    Args:
        forward_func: the model (a ``torch.nn.Module``) or a function of it, returning scores ``(B, ...)``.
        layer: a module of the model, or a list of them; attributions come at their outputs (a tuple for a module
            returning a tuple of tensors). A module that runs several times in one forward pass is refused with the
            names of its calls; one whose output the score does not use gives zeros and a warning, as Captum gives.
        device_ids: Captum's argument for a ``forward_func`` that runs a DataParallel model; not supported (the
            decomposition runs on one device): leave it None and give the module DataParallel wraps.
    """

    def __init__(self, forward_func: Callable, layer: nn.Module | Sequence[nn.Module],
                 device_ids: list[int] | None = None) -> None:
        if device_ids is not None:
            raise ValueError("device_ids (a DataParallel model inside forward_func) is not supported: the "
                             "decomposition runs on one device; give the module DataParallel wraps, device_ids=None")
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self.model = _as_module(forward_func)
        self.layer_names = _layer_names(self.model, layer)

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: CaptumTarget = None,
        additional_forward_args: object = None,
        return_convergence_delta: bool = False,
        attribute_to_layer_input: bool = False,
        grad_kwargs: dict | None = None,
        *,
        return_bias: bool = False,
        allow_non_affine: bool = False,
    ) -> Parts | list | tuple:
        """Attributions ``w * h`` with the shape of the layer's output; a list (one per layer) for a list of layers.

        ``inputs``, ``target``, ``additional_forward_args``, ``return_convergence_delta``, ``return_bias`` and
        ``allow_non_affine`` as for :meth:`PiecewiseAffine.attribute` (integer inputs pass into an embedding);
        delta and bias are per layer (lists for a list of layers). ``attribute_to_layer_input`` must be False
        (attribute at the previous module's output instead); ``grad_kwargs`` is accepted for Captum's signature and
        not needed (an unused layer gives zeros without it).
        """
        if attribute_to_layer_input:
            raise ValueError("attribute_to_layer_input=True is not supported: give the module whose output feeds the "
                             "layer (its input as a layer output), or the model's input with PiecewiseAffine")
        names = list(dict.fromkeys(self.layer_names))
        dec = _decompose(self.model, inputs, target, additional_forward_args, names, allow_non_affine)
        attributions = [dec.contribution(n) for n in self.layer_names]
        deltas = [_delta(dec, n) for n in self.layer_names]
        biases = [dec.bias[n] for n in self.layer_names]
        if isinstance(self.layer, nn.Module):
            return _packed(attributions[0], deltas[0], biases[0], return_convergence_delta, return_bias)
        return _packed(attributions, deltas, biases, return_convergence_delta, return_bias)
