"""Exactness checks: how far an explanation stays exact (region radius), and whether it is (verify).

``region_radius`` follows the input (or a layer tensor) along a direction with forward-mode AD and watches every
piece-wise operation of :mod:`pwawidgets.kinds` as it runs (modules and functional calls alike, through a
``TorchFunctionMode``): the radius is the first step at which one of them switches to another affine piece.
``verify`` then compares the network with its affine prediction inside that radius, in float64.

The audit, the TF32 guard and the TF32 simulation live in :mod:`pwawidgets.audit` and
:mod:`pwawidgets.precision`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.overrides import TorchFunctionMode

from . import arguments, kinds
from .audit import AuditReport, audit, require_piecewise_affine
from .calls import left_as_found
from .core import decompose
from .layers import LayerSpec, check_model, resolve_one, substitute
from .placement import model_device, model_dtype
from .precision import ExactnessWarning, exact_math

__all__ = ["VerifyReport", "region_radius", "verify"]


class _SwitchWatcher(TorchFunctionMode):
    """Records, for every piece-wise operation that sees a moving value, the step at which it switches."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[torch.Tensor] = []
        self.unmodelled: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = kinds.kind_of_function(func)
        if kind is not None and kind.switches is not None:
            try:
                self.steps.extend(kind.switches(args, kwargs))
            except NotImplementedError:
                self.unmodelled.add(getattr(func, "__name__", kind.name))
        return func(*args, **kwargs)


def _run_moving(model: nn.Module, x: torch.Tensor, spec: LayerSpec, make_moving) -> torch.Tensor:
    """One forward pass in which the input, or the layer of ``spec``, is replaced by ``make_moving(value)``."""
    if spec.module is None:
        return model(make_moving(x))
    with substitute(model, spec, make_moving):
        return model(x)


def _moves(output) -> bool:
    """Whether the model's output carries a tangent (depends on the moved tensor)."""
    tensors = output if isinstance(output, (tuple, list)) else [output]
    return any(isinstance(t, torch.Tensor) and fwAD.unpack_dual(t).tangent is not None for t in tensors)


def region_radius(
    model: nn.Module, inputs: torch.Tensor, direction: torch.Tensor, layer: str | None = None, *,
    allow_non_affine: bool = False,
) -> torch.Tensor:
    """Largest step ``t`` along ``direction`` before any piece-wise operation downstream of ``layer`` switches.

    Pre-activations move linearly with ``t`` inside the region; their rates come from one forward-mode AD pass
    (a JVP). Every operation of :data:`pwawidgets.kinds.KINDS` with switch points is watched, whether it runs as
    a module or as a functional call: ReLU and kin (ReLU6 and Hardtanh caps included), max-pool windows,
    clamp, abs, max/min, comparisons. Returns one radius per example ``(B,)`` (``inf`` if nothing switches).
    ``direction`` has the shape of the layer tensor (of ``inputs`` for the input). ``layer`` names one layer (None
    means ``"input"``); a module that runs several times must be named per call (``"layer1.0.relu@1"``). Like
    :func:`~pwawidgets.decompose`, it refuses a model the audit rejects unless ``allow_non_affine`` (a radius means
    nothing there).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("region_radius needs forward-mode AD: call it outside torch.inference_mode()")
    model = check_model(model)
    if isinstance(inputs, tuple):
        raise ValueError("region_radius takes one input tensor, not a tuple (several model inputs are supported by "
                         "decompose and layer_biases)")
    if not isinstance(inputs, torch.Tensor) or not isinstance(direction, torch.Tensor):
        raise TypeError("inputs and direction must be tensors")
    arguments.flag("allow_non_affine", allow_non_affine)
    spec = resolve_one(model, layer)
    if not inputs.is_floating_point() and spec.module is None:
        raise ValueError("integer inputs have no direction to move along: name a layer after the embedding")
    if not direction.is_floating_point():
        raise TypeError(f"direction must hold floats, got {direction.dtype}")
    arguments.finite("inputs", inputs)
    arguments.finite("the direction", direction)
    if spec.module is None and direction.shape != inputs.shape:
        raise ValueError(f"direction has shape {tuple(direction.shape)}; inputs have {tuple(inputs.shape)}")
    require_piecewise_affine(model, allow_non_affine)
    device = model_device(model, inputs.device)
    # copies: a model that edits its input in place must not edit the caller's tensors
    x = inputs.detach().clone().to(device)
    if x.is_floating_point():
        x = x.to(model_dtype(model, x.dtype))
    direction = direction.detach().clone().to(device=device, dtype=x.dtype if x.is_floating_point() else None)

    def make_moving(value: torch.Tensor) -> torch.Tensor:
        if direction.shape != value.shape:
            raise ValueError(f"direction has shape {tuple(direction.shape)}; layer {spec.name!r} has "
                             f"{tuple(value.shape)}")
        return fwAD.make_dual(value.detach().clone(), direction.to(value.dtype))

    watcher = _SwitchWatcher()
    modules = dict(model.named_modules())
    with (left_as_found(model, modules, device), exact_math(device), torch.no_grad(), fwAD.dual_level(),
          warnings.catch_warnings()):
        # PyTorch loads its forward-AD decompositions through torch.jit.script on first use
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        with watcher:
            output = _run_moving(model, x, spec, make_moving)
        if not _moves(output):
            raise ValueError(f"the output does not depend on {spec.name!r} (forward() cuts it off: detach(), .data, "
                             "torch.no_grad()): no direction moves the score")
    if watcher.unmodelled:
        warnings.warn(f"region radius ignores operations it cannot model (the radius may be too large): "
                      f"{sorted(watcher.unmodelled)}", ExactnessWarning, 2)
    batch = x.shape[0]
    steps = [s.to(device=device, dtype=direction.dtype) for s in watcher.steps]
    if not steps:
        return torch.full((batch,), float("inf"), dtype=direction.dtype, device=device)
    return torch.stack(steps, dim=0).amin(0)


# --------------------------------------------------------------------------------------------------------
# verify


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`: the affine prediction against the network along one direction.

    ``rel_error`` compares the change of the score with the predicted change ``t w.d``; ``noise`` is the
    rounding level of one evaluation of the network (``1000 * eps * |score|``), below which no disagreement
    can be seen. ``ok``: every step inside the region agrees to ``tol`` (relative) or to that rounding level.
    """

    radius: torch.Tensor  # (B,)
    steps: tuple[float, ...]
    abs_error: torch.Tensor  # (B, n): |F(h+td) - F(h) - t w.d|
    predicted: torch.Tensor  # (B, n): t w.d
    noise: torch.Tensor  # (B,)
    tol: float
    dtype: torch.dtype
    audit: AuditReport | None = None  # what the audit found, when verify ran with allow_non_affine=True

    @property
    def rel_error(self) -> torch.Tensor:
        return self.abs_error / self.predicted.abs().clamp_min(torch.finfo(self.dtype).tiny)

    @property
    def inside(self) -> list[int]:
        return [i for i, s in enumerate(self.steps) if s < 1]

    @property
    def max_error(self) -> float:
        """Largest relative error inside the region."""
        return float(self.rel_error[:, self.inside].max()) if self.inside else float("nan")

    @property
    def ok(self) -> bool:
        idx = self.inside
        if not idx or bool((self.radius == 0).any()):
            return False  # no step inside, or the point lies on a region edge
        allowed = torch.maximum(self.tol * self.predicted[:, idx].abs(), self.noise[:, None])
        return bool((self.abs_error[:, idx] <= allowed).all())

    def __str__(self) -> str:
        rows = [f"  step {s:g} x radius: relative error {float(self.rel_error[:, i].max()):.2e}"
                for i, s in enumerate(self.steps)]
        if bool((self.radius == 0).any()):
            verdict = f"on a region edge in {self.dtype} (radius 0): no step stays inside one affine piece"
        elif not self.inside:
            verdict = "no step inside the region (steps are fractions of the radius: give some below 1)"
        elif not self.ok:
            verdict = "NOT affine within tolerance"
        elif self.max_error <= self.tol:
            verdict = f"locally affine: relative error <= {self.tol:g}"
        else:
            verdict = f"agrees only to rounding: these steps are below what {self.dtype} resolves"
        radius = ", ".join(f"{r:.3g}" for r in self.radius.tolist())
        found = [] if self.audit is None or self.audit.verified else [f"the audit found:\n{self.audit}"]
        return "\n".join([f"{verdict}: radius {radius} ({self.dtype})", *rows, *found])


def _check_steps(steps) -> tuple[float, ...]:
    if isinstance(steps, (int, float)):
        steps = (steps,)
    try:
        steps = tuple(float(t) for t in steps)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"steps are fractions of the region radius, e.g. (0.1, 0.5, 0.9); got {steps!r}") from exc
    if not steps or not all(math.isfinite(t) and t > 0 for t in steps):
        raise ValueError(f"steps must be positive fractions of the region radius, e.g. (0.1, 0.5, 0.9); got {steps}")
    return steps


def _default_direction(h: torch.Tensor, is_input: bool, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(10_007 + seed)
    direction = torch.randn(h.shape, generator=gen, dtype=h.dtype).to(h.device)
    if not is_input:
        # Zero ReLU outputs tie inside max-pool windows, so lifting them crosses a region edge at once:
        # move the non-zero units (the zero ones contribute nothing anyway).
        direction = direction * (h != 0)
    scale = h.flatten(1).norm(dim=1) / direction.flatten(1).norm(dim=1).clamp_min(1e-30)
    return direction * scale.view(-1, *[1] * (h.dim() - 1))



def verify(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    layer: str | None = None,
    *,
    direction: torch.Tensor | None = None,
    steps: Sequence[float] = (0.1, 0.5, 0.9),
    dtype: torch.dtype = torch.float64,
    tol: float = 1e-6,
    seed: int = 0,
    allow_non_affine: bool = False,
) -> VerifyReport:
    """Check ``F(h + t d) = F(h) + t w.d`` for steps ``t`` given as fractions of the region radius.

    Runs on a copy of the model in ``dtype`` (float64 by default; float32 or lower shows how precision breaks
    the identity). ``direction`` defaults to a random direction scaled to the norm of ``h`` (at a layer, on
    its non-zero units). Steps ``>= 1`` (beyond the region) are reported but do not count towards ``ok``.
    If nothing switches along ``direction`` (infinite radius), steps are taken as multiples of 1.
    ``layer`` names one layer, not a preset; None means ``"input"``. ``target``: one class per example (an int,
    one int per example, or None for the predicted class). ``allow_non_affine``: check a model the audit
    rejects (warned once); the report then says how far it is from affine and lists what the audit found.
    """
    model = check_model(model)
    if isinstance(inputs, tuple):
        raise ValueError("verify takes one input tensor, not a tuple: a model with several inputs (or with "
                         "additional_forward_args) is decomposed by decompose; check it with verify on a module that "
                         "takes one tensor (wrap the others as constants)")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}; see pwawidgets.load_image")
    spec = resolve_one(model, layer)
    steps = _check_steps(steps)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    arguments.flag("allow_non_affine", allow_non_affine)
    arguments.finite("inputs", inputs)
    if direction is not None:
        if not isinstance(direction, torch.Tensor) or not direction.is_floating_point():
            raise TypeError(f"direction must be a float tensor, got {type(direction).__name__}")
        arguments.finite("the direction", direction)
    report = audit(model) if allow_non_affine else None
    try:
        work = copy.deepcopy(model).to(dtype)
    except (TypeError, RuntimeError, copy.Error) as exc:
        raise TypeError(f"verify works on a {dtype} copy of the model, and this model cannot be copied ({exc}); "
                        "call region_radius and decompose on a float64 model yourself") from exc
    device = model_device(work, inputs.device)
    # a copy: a model that edits its input in place must not edit the caller's tensor (nor this one between runs)
    x = inputs.detach().clone().to(device=device, dtype=dtype if inputs.is_floating_point() else None)
    dec = decompose(work, x, target, [spec.name], keep_gradients=True, allow_non_affine=allow_non_affine)
    if dec.per_class:
        raise ValueError("verify takes one class per example: an int, one int per example, or None")
    h, w = dec.activation(spec.name), dec.gradient(spec.name)
    if direction is None:
        direction = _default_direction(h, spec.module is None, seed)
    else:
        direction = direction.detach().to(h.device, dtype)
        if direction.shape != h.shape:
            raise ValueError(f"direction has shape {tuple(direction.shape)}; {spec.name!r} has {tuple(h.shape)}")
        if not bool((direction.flatten(1).abs().sum(1) > 0).all()):
            raise ValueError("the direction is zero for some example: nothing moves, so there is nothing to check")
    with warnings.catch_warnings():
        if report is not None:  # decompose said it once
            warnings.filterwarnings("ignore", message=r"(?s).*allow_non_affine=True", category=ExactnessWarning)
        radius = region_radius(work, x, direction, spec.name, allow_non_affine=allow_non_affine)
    finite = torch.where(torch.isfinite(radius), radius, torch.ones_like(radius))
    slope = (w * direction).flatten(1).sum(1)
    targets = dec.target.view(-1, 1)
    abs_errors, predicted = [], []
    with exact_math(h.device), torch.no_grad():
        for s in steps:
            t = (finite * s).view(-1, *[1] * (h.dim() - 1))
            if spec.module is None:
                out = work(x + t * direction)
            else:
                with substitute(work, spec, lambda o, t=t: h + t * direction):
                    out = work(x.clone())
            change = out.gather(1, targets).squeeze(1) - dec.score
            predicted.append(finite * s * slope)
            abs_errors.append((change - predicted[-1]).abs())
    noise = 1000 * torch.finfo(dtype).eps * dec.score.abs()
    return VerifyReport(radius=radius, steps=tuple(steps), abs_error=torch.stack(abs_errors, 1),
                        predicted=torch.stack(predicted, 1), noise=noise, tol=tol, dtype=dtype, audit=report)
