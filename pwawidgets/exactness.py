"""Exactness tools: which models qualify, TF32 off, region radius, and a local-affinity check."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import operator
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.autograd.forward_ad as fwAD
import torch.fx
import torch.nn.functional as F
from torch import nn


class ExactnessWarning(UserWarning):
    """The decomposition is not exact here (low precision, a non piece-wise affine model...)."""


# --------------------------------------------------------------------------------------------------------
# TF32 guard

_TF32_BACKENDS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn")


def _backend(path: str):
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@contextlib.contextmanager
def exact_math(device: torch.device | str | None = None) -> Iterator[None]:
    """Turn TF32 off for cuBLAS and cuDNN inside the block; restore the caller's flags afterwards.

    On Ampere/Hopper GPUs PyTorch runs float32 convolutions in TF32 (10-bit mantissa) by default, which makes
    the local affine prediction wrong for small steps. The flags are global, so they are set whatever the
    device; on a CPU they change nothing else.
    """
    del device  # flags are process-wide
    new_api = hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision")
    if new_api:
        saved = {path: _backend(path).fp32_precision for path in _TF32_BACKENDS}
        try:
            for path in _TF32_BACKENDS:
                _backend(path).fp32_precision = "ieee"
            yield
        finally:
            for path, value in saved.items():
                _backend(path).fp32_precision = value
    else:  # older PyTorch
        saved_legacy = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        try:
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_legacy


# --------------------------------------------------------------------------------------------------------
# audit

_AFFINE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
    nn.Identity, nn.Flatten, nn.Unflatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d,
    nn.ConstantPad3d, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
)
_PIECEWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.PReLU, nn.Hardtanh, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_MODE_MODULES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.Dropout,
                                              nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_SMOOTH_MODULES: tuple[type[nn.Module], ...] = (
    nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softplus, nn.ELU, nn.SELU,
    nn.CELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid, nn.Tanhshrink, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm, nn.MultiheadAttention,
    nn.RNNBase, nn.Bilinear, nn.RMSNorm,
)
_AFFINE_FUNCTIONS = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.neg, operator.pos, operator.getitem,
    getattr, torch.add, torch.sub, torch.cat, torch.concat, torch.stack, torch.flatten, torch.reshape,
    torch.transpose, torch.permute, torch.squeeze, torch.unsqueeze, torch.mean, torch.sum, torch.chunk,
    torch.split, F.linear, F.conv1d, F.conv2d, F.conv3d, F.pad, F.interpolate, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.dropout,
}
_PIECEWISE_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.hardtanh, F.prelu, torch.max_pool2d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
}
_SMOOTH_FUNCTIONS = {
    F.gelu, F.silu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.softmax, torch.softmax, F.log_softmax,
    torch.exp, torch.log, F.softplus, F.elu, F.selu, F.mish, F.hardswish, F.layer_norm, F.group_norm,
    F.instance_norm, torch.sqrt, torch.rsqrt, F.normalize, F.scaled_dot_product_attention, torch.matmul,
    torch.bmm, torch.einsum,
}
_AFFINE_METHODS = {
    "view", "reshape", "flatten", "size", "permute", "transpose", "contiguous", "add", "add_", "sub", "sub_",
    "mean", "sum", "squeeze", "unsqueeze", "expand", "expand_as", "dim", "chunk", "split", "clone", "neg",
    "relu", "relu_", "type_as", "to", "float", "double", "view_as", "reshape_as", "narrow",
}
_SMOOTH_METHODS = {"sigmoid", "tanh", "softmax", "exp", "log", "sqrt", "rsqrt", "matmul", "bmm", "norm"}


@dataclass(frozen=True)
class Finding:
    """One module or operation that stops the model from being (verifiably) piece-wise affine."""

    where: str
    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.where} ({self.what}): {self.why}"


@dataclass
class AuditReport:
    """What :func:`audit` found. ``ok`` is False when an offending module or operation is present."""

    offending: list[Finding] = field(default_factory=list)
    unverified: list[Finding] = field(default_factory=list)
    traced: bool = True

    @property
    def ok(self) -> bool:
        return not self.offending

    def __str__(self) -> str:
        if self.ok and not self.unverified:
            return "piece-wise affine: every module and operation checked."
        lines = []
        if self.offending:
            lines.append("not piece-wise affine here:")
            lines += [f"  - {f}" for f in self.offending]
        if self.unverified:
            lines.append("unverified (could not be checked; exact only if they are piece-wise affine):")
            lines += [f"  - {f}" for f in self.unverified]
        return "\n".join(lines)


def _computed(node_args: tuple) -> int:
    """How many arguments are values computed from the input (not constants, parameters or buffers)."""
    return sum(isinstance(a, torch.fx.Node) and a.op != "get_attr" for a in node_args)


def _module_finding(name: str, module: nn.Module, traced: bool) -> tuple[str, Finding] | None:
    kind = type(module).__name__
    if isinstance(module, _MODE_MODULES):
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.track_running_stats:
            return "offending", Finding(name, kind, "uses batch statistics (track_running_stats=False)")
        if module.training:
            return "offending", Finding(name, kind, "in training mode: call model.eval() first")
        return None
    if isinstance(module, (_AFFINE_MODULES + _PIECEWISE_MODULES)):
        return None
    if isinstance(module, _SMOOTH_MODULES):
        return "offending", Finding(name, kind, "smooth non-linearity or normalisation, not piece-wise affine")
    if traced and not type(module).__module__.startswith("torch.nn"):
        return None  # a custom module: the trace went through its forward and checked every operation
    return "unverified", Finding(name, kind, "unknown module type")


class _LeafTracer(torch.fx.Tracer):
    """Keeps torch.nn modules as leaves so each appears by name."""


_TRACE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_AUDIT_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _graph_findings(model: nn.Module, key: tuple) -> tuple[list[tuple[str, Finding]], bool]:
    """Findings on the functional operations of the forward pass (fx trace), cached per model and ``key``
    (the identities of its modules)."""
    cached = _TRACE_CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    try:
        graph = _LeafTracer().trace(model)
        traced = True
    except Exception as exc:  # dynamic control flow etc.
        findings = [("unverified", Finding("forward", "trace", f"could not be traced ({type(exc).__name__}): "
                                           "functional calls inside custom modules are unchecked"))]
        _TRACE_CACHE[model] = (key, findings, False)
        return findings, False
    findings = []
    for node in graph.nodes:
        if node.op == "call_function":
            fn = node.target
            label = getattr(fn, "__name__", str(fn))
            if fn in _AFFINE_FUNCTIONS or fn in _PIECEWISE_FUNCTIONS:
                continue
            if fn in (operator.mul, operator.truediv, torch.mul, operator.imul):
                if _computed(node.args) > 1:
                    findings.append(("unverified", Finding(node.name, label, "product of two computed values")))
                continue
            status = "offending" if fn in _SMOOTH_FUNCTIONS else "unverified"
            findings.append((status, Finding(node.name, label, "operation" if status == "unverified"
                                             else "smooth operation, not piece-wise affine")))
        elif node.op == "call_method":
            if node.target in _AFFINE_METHODS:
                continue
            if node.target in ("mul", "mul_", "div", "div_"):
                if _computed(node.args) > 1:
                    findings.append(("unverified", Finding(node.name, f".{node.target}()",
                                                           "product of two computed values")))
                continue
            status = "offending" if node.target in _SMOOTH_METHODS else "unverified"
            findings.append((status, Finding(node.name, f".{node.target}()", "method call")))
    _TRACE_CACHE[model] = (key, findings, traced)
    return findings, traced


def audit(model: nn.Module, modules: dict[str, nn.Module] | None = None) -> AuditReport:
    """Name the modules and operations that keep ``model`` from being piece-wise affine.

    Offending: smooth non-linearities (GELU, SiLU, sigmoid, tanh, softmax inside...), LayerNorm/GroupNorm,
    BatchNorm or Dropout in training mode. Unverified: module types or operations this audit does not know
    (custom code); they are exact only if they are piece-wise affine themselves. ``modules``:
    ``dict(model.named_modules())`` if the caller already has it.
    """
    named = list((modules if modules is not None else dict(model.named_modules())).items())
    signature = tuple((id(m), m.training) for _, m in named)
    cached = _AUDIT_CACHE.get(model)
    if cached is not None and cached[0] == signature:
        return dataclasses.replace(cached[1], offending=list(cached[1].offending),
                                   unverified=list(cached[1].unverified))
    report = AuditReport()
    findings, report.traced = _graph_findings(model, tuple(id(m) for _, m in named))
    for name, module in named:
        if any(True for _ in module.children()):
            continue
        found = _module_finding(name or type(model).__name__, module, report.traced)
        if found:
            getattr(report, found[0]).append(found[1])
    for status, finding in findings:
        getattr(report, status).append(finding)
    _AUDIT_CACHE[model] = (signature, report)
    return dataclasses.replace(report, offending=list(report.offending), unverified=list(report.unverified))


# --------------------------------------------------------------------------------------------------------
# region radius

_THRESHOLDS = {nn.ReLU: (0.0,), nn.LeakyReLU: (0.0,), nn.PReLU: (0.0,), nn.RReLU: (0.0,), nn.ReLU6: (0.0, 6.0)}


def _thresholds(module: nn.Module) -> tuple[float, ...] | None:
    if isinstance(module, nn.ReLU6):
        return (0.0, 6.0)
    if isinstance(module, nn.Hardtanh):
        return (float(module.min_val), float(module.max_val))
    for kind, values in _THRESHOLDS.items():
        if isinstance(module, kind):
            return values
    return None


def _crossing_steps(z: torch.Tensor, dz: torch.Tensor, threshold: float) -> torch.Tensor:
    """Smallest ``t >= 0`` with ``z + t dz == threshold`` per example (inf if never)."""
    t = (threshold - z) / dz
    t = torch.where((dz != 0) & (t >= 0), t, torch.full_like(t, float("inf")))
    return t.flatten(1).amin(1)


def _pool_windows(x: torch.Tensor, module: nn.Module, fill: float) -> torch.Tensor | None:
    """Max-pool windows of a 4-D tensor as ``(B, C, window, positions)``."""
    if isinstance(module, nn.AdaptiveMaxPool2d):
        out = module.output_size if isinstance(module.output_size, tuple) else (module.output_size,) * 2
        h, w = x.shape[-2:]
        oh, ow = (h if out[0] is None else out[0]), (w if out[1] is None else out[1])
        if h % oh or w % ow:
            return None
        kernel, stride, padding, dilation = (h // oh, w // ow), (h // oh, w // ow), 0, 1
    elif isinstance(module, nn.MaxPool2d):
        kernel, stride, padding, dilation = module.kernel_size, module.stride, module.padding, module.dilation
        if module.ceil_mode:
            return None
    else:
        return None
    pad = padding if isinstance(padding, tuple) else (padding, padding)
    x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=fill)
    cols = F.unfold(x, kernel_size=kernel, dilation=dilation, stride=stride)
    b, c = x.shape[:2]
    return cols.view(b, c, -1, cols.shape[-1])


def _pool_switch_steps(v: torch.Tensor, dv: torch.Tensor, module: nn.Module) -> torch.Tensor | None:
    """Smallest step before another element of a max-pool window overtakes the current maximum."""
    vals = _pool_windows(v, module, float("-inf"))
    rates = _pool_windows(dv, module, 0.0)
    if vals is None or rates is None:
        return None
    top, idx = vals.max(dim=2, keepdim=True)
    top_rate = rates.gather(2, idx)
    gap, closing = top - vals, rates - top_rate
    t = gap / closing
    valid = (closing > 0) & torch.isfinite(gap)
    t = torch.where(valid, t, torch.full_like(t, float("inf")))
    return t.flatten(1).amin(1)


def _replace_layer(model: nn.Module, layer: str | None, fn):
    """Context: the named layer's output goes through ``fn`` (the input when ``layer`` is None)."""
    from .layers import resolve_layers

    if layer is None or layer == "input":
        return contextlib.nullcontext(), None
    specs, wants_all = resolve_layers(model, [layer])
    if wants_all or len(specs) != 1:
        raise ValueError(f"name one layer, not a preset: {layer!r}")
    spec = specs[0]
    module = dict(model.named_modules())[spec.module]
    calls = {"n": 0}

    def hook(mod, args, output):
        index = calls["n"]
        calls["n"] += 1
        if spec.call is None or spec.call == index:
            return fn(output)
        return output

    return _HookContext(module, hook), spec


class _HookContext:
    def __init__(self, module: nn.Module, hook):
        self.module, self.hook, self.handle = module, hook, None

    def __enter__(self):
        self.handle = self.module.register_forward_hook(self.hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def region_radius(
    model: nn.Module, x: torch.Tensor, direction: torch.Tensor, layer: str | None = None
) -> torch.Tensor:
    """Largest step ``t`` along ``direction`` before any ReLU or max-pool downstream of ``layer`` switches.

    Pre-activations move linearly with ``t`` inside the region; their rates come from one forward-mode AD pass
    (a JVP). Returns one radius per example ``(B,)`` (``inf`` if nothing switches). ``direction`` has the
    shape of the layer tensor (of ``x`` for the input). ReLUs and max-pools must be modules to be seen.
    """
    steps: list[torch.Tensor] = []
    skipped: list[str] = []
    handles = []

    def pre_hook(name: str, module: nn.Module):
        def hook(mod, args):
            primal, tangent = fwAD.unpack_dual(args[0])
            if tangent is None:  # upstream of the perturbed layer: it does not move
                return None
            primal, tangent = primal.detach().clone(), tangent.detach().clone()
            thresholds = _thresholds(mod)
            if thresholds is not None:
                for thr in thresholds:
                    steps.append(_crossing_steps(primal, tangent, thr))
            else:
                t = _pool_switch_steps(primal, tangent, mod) if primal.dim() == 4 else None
                if t is None:
                    skipped.append(name)
                else:
                    steps.append(t)
            return None

        return hook

    watched = _PIECEWISE_MODULES
    device = next(model.parameters()).device
    x = x.detach().to(device)
    direction = direction.detach().to(device=device, dtype=x.dtype)
    try:
        for name, module in model.named_modules():
            if isinstance(module, watched):
                handles.append(module.register_forward_pre_hook(pre_hook(name, module)))
        with exact_math(device), torch.no_grad(), fwAD.dual_level(), warnings.catch_warnings():
            # PyTorch loads its forward-AD decompositions through torch.jit.script on first use
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            if layer is None or layer == "input":
                model(fwAD.make_dual(x, direction))
            else:
                context, _ = _replace_layer(model, layer, lambda out: fwAD.make_dual(out.detach(), direction))
                with context:
                    model(x)
    finally:
        for handle in handles:
            handle.remove()
    if skipped:
        warnings.warn(f"region radius ignores pools it cannot model: {sorted(set(skipped))}", ExactnessWarning, 2)
    if not steps:
        return torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=device)
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
        elif not self.ok:
            verdict = "NOT affine within tolerance"
        elif self.max_error <= self.tol:
            verdict = f"locally affine: relative error <= {self.tol:g}"
        else:
            verdict = f"agrees only to rounding: these steps are below what {self.dtype} resolves"
        radius = ", ".join(f"{r:.3g}" for r in self.radius.tolist())
        return f"{verdict}: radius {radius} ({self.dtype})\n" + "\n".join(rows)


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
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    layer: str | None = None,
    *,
    direction: torch.Tensor | None = None,
    steps: Sequence[float] = (0.1, 0.5, 0.9),
    dtype: torch.dtype = torch.float64,
    tol: float = 1e-6,
    seed: int = 0,
) -> VerifyReport:
    """Check ``F(h + t d) = F(h) + t w.d`` for steps ``t`` given as fractions of the region radius.

    Runs on a copy of the model in ``dtype`` (float64 by default; float32 or lower shows how precision breaks
    the identity). ``direction`` defaults to a random direction scaled to the norm of ``h`` (at a layer, on
    its non-zero units). Steps ``>= 1`` (beyond the region) are reported but do not count towards ``ok``.
    If nothing switches along ``direction`` (infinite radius), steps are taken as multiples of 1.
    """
    from .core import decompose

    work = copy.deepcopy(model).to(dtype)
    x = x.detach().to(dtype=dtype, device=next(work.parameters()).device)
    is_input = layer is None or layer == "input"
    name = "input" if is_input else layer
    dec = decompose(work, x, target, [name], keep_gradients=True)
    if dec.per_class:
        raise ValueError("verify takes one class per example")
    h, w = dec.activations[name], dec.gradients[name]
    direction = _default_direction(h, is_input, seed) if direction is None else direction.to(h.device, dtype)
    radius = region_radius(work, x, direction, layer)
    finite = torch.where(torch.isfinite(radius), radius, torch.ones_like(radius))
    slope = (w * direction).flatten(1).sum(1)
    targets = dec.target.view(-1, 1)
    abs_errors, predicted = [], []
    with exact_math(h.device), torch.no_grad():
        for s in steps:
            t = (finite * s).view(-1, *[1] * (h.dim() - 1))
            if is_input:
                out = work(x + t * direction)
            else:
                context, _ = _replace_layer(work, layer, lambda o, t=t: h + t * direction)
                with context:
                    out = work(x)
            change = out.gather(1, targets).squeeze(1) - dec.score
            predicted.append(finite * s * slope)
            abs_errors.append((change - predicted[-1]).abs())
    noise = 1000 * torch.finfo(dtype).eps * dec.score.abs()
    return VerifyReport(radius=radius, steps=tuple(steps), abs_error=torch.stack(abs_errors, 1),
                        predicted=torch.stack(predicted, 1), noise=noise, tol=tol, dtype=dtype)


# --------------------------------------------------------------------------------------------------------
# TF32 on a CPU, for teaching


def round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """Round float32 values to TF32 (10 explicit mantissa bits, nearest, ties away from zero)."""
    if t.dtype != torch.float32:
        raise TypeError("TF32 rounding applies to float32 tensors")
    bits = t.contiguous().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF
    return torch.where(torch.isfinite(t), rounded.view(torch.float32), t)


def _tf32_inputs(module: nn.Module, args: tuple) -> tuple:
    """Round a layer's input to TF32 in value; derivatives pass straight through (as if the rounding were
    an error added to the input), so gradients and forward-mode tangents stay those of the layer."""
    x = args[0]
    rounded = round_to_tf32(x.detach())
    return (x + (rounded - x.detach()), *args[1:])


def simulate_tf32(model: nn.Module) -> nn.Module:
    """A float32 copy of ``model`` whose convolutions and linear layers compute as TF32 tensor cores do.

    Weights are rounded once and inputs at every call to TF32, products accumulate in float32. This lets a
    CPU show what a GPU's default TF32 convolutions do to the decomposition's exactness.
    """
    copy_ = copy.deepcopy(model).float()
    with torch.no_grad():
        for module in copy_.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                module.weight.copy_(round_to_tf32(module.weight))
                module.register_forward_pre_hook(_tf32_inputs)
    return copy_
