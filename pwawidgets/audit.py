"""The audit: which modules and operations keep a model from being piece-wise affine in its input.

``torch.fx`` traces ``forward`` (``torch.nn`` modules stay whole, custom code is traced through). Every value of
the trace gets a state: *constant* (parameters, buffers, numbers, shapes), *step* (piece-wise constant in the
input: masks, indices) or *affine* (piece-wise affine in the input). Each operation is judged by its kind
(:mod:`pwawidgets.kinds`) and by the states of its operands: ``lin(x) * self.scale.exp()`` is affine (the
exponential acts on a constant), ``lin(x) * lin(x)`` and ``1 / lin(x)`` are not.
"""

from __future__ import annotations

import contextlib
import inspect
import operator
import warnings
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

import torch
import torch.fx
from torch import nn
from torch.overrides import TorchFunctionMode

from . import arguments, kinds
from .kinds import (
    AFFINE,
    BILINEAR,
    DETACH,
    DIVISION,
    LOOKUP,
    MODE,
    PIECEWISE,
    SHAPE,
    SMOOTH,
    STEP,
    Kind,
)
from .layers import check_model
from .precision import ExactnessWarning

CONST, STEPWISE, VARYING = 0, 1, 2  # how a value depends on the input

_METADATA = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "is_leaf"}
_VIEWS = {"T", "mT", "H", "mH", "real"}
_TRAINING_ARG = {"dropout": (2, True), "dropout1d": (2, True), "dropout2d": (2, True), "dropout3d": (2, True),
                 "alpha_dropout": (2, False), "feature_alpha_dropout": (2, False), "batch_norm": (5, False),
                 "rrelu": (3, False), "rrelu_": (3, False)}


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
    """What :func:`audit` found. ``ok``: nothing offending; ``verified``: ok and nothing left unchecked."""

    offending: list[Finding] = field(default_factory=list)
    unverified: list[Finding] = field(default_factory=list)
    traced: bool = True

    @property
    def ok(self) -> bool:
        return not self.offending

    @property
    def verified(self) -> bool:
        return self.ok and not self.unverified

    def __str__(self) -> str:
        if self.verified:
            return "piece-wise affine: every module and operation checked."
        lines = []
        if self.offending:
            lines.append("not piece-wise affine here:")
            lines += [f"  - {f}" for f in self.offending]
        if self.unverified:
            lines.append("unverified (could not be checked; exact only if they are piece-wise affine):")
            lines += [f"  - {f}" for f in self.unverified]
        return "\n".join(lines)


class _LeafTracer(torch.fx.Tracer):
    """Keeps ``torch.nn`` modules as leaves (each appears by name); custom modules are traced through."""


_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


@dataclass(frozen=True)
class Call:
    """How ``forward`` is called: its first ``n_inputs`` arguments are the inputs (input-dependent), the arguments
    after them (``additional_forward_args``) are constants. Non-tensor ones are traced with their value (a flag or a
    list of ints then steers the trace as it steers the call); arguments not given are traced with their default."""

    n_inputs: int = 1
    additional_forward_args: tuple = ()

    def key(self) -> tuple:
        """What a kept verdict depends on: the number of inputs and the values of the non-tensor arguments."""
        return (self.n_inputs, tuple("tensor" if isinstance(a, torch.Tensor) else repr(a)
                                     for a in self.additional_forward_args))


def audit(model: nn.Module, modules: dict[str, nn.Module] | None = None, call: Call | None = None) -> AuditReport:
    """Name the modules and operations that keep ``model`` from being piece-wise affine in its input.

    Offending: smooth non-linearities (GELU, SiLU, sigmoid, erf, softmax inside...) and normalisations
    (LayerNorm, GroupNorm) applied to input-dependent values; products or quotients of two input-dependent values;
    BatchNorm, Dropout or RReLU in training mode; ``detach()`` of an input-dependent value. Unverified:
    operations or module types this audit does not know, or a forward that ``torch.fx`` cannot trace. ``modules``:
    ``dict(model.named_modules())`` if the caller already has it. ``call``: how ``forward`` is called (several
    inputs, constant arguments after them, see :class:`Call`); None traces every argument as an input.

    Traced afresh on every call of this function: ``forward`` may switch on any Python state (a config dict edited
    in place, a global), which no cache key can see. Decomposition-like calls keep a clean verdict and watch each
    pass instead (:class:`PassAudit`).
    """
    model = check_model(model)
    if modules is not None and not isinstance(modules, dict):
        raise TypeError(f"modules must be dict(model.named_modules()) or None, got {type(modules).__name__}")
    named = modules if modules is not None else dict(model.named_modules())
    return _audit(model, named, call)


def require_piecewise_affine(model: nn.Module, allow_non_affine: bool = False, strict: bool = False,
                             modules: dict[str, nn.Module] | None = None) -> AuditReport:
    """Refuse (or, with ``allow_non_affine``, warn about) a model the audit finds not piece-wise affine; warn about
    (or, with ``strict``, refuse) one with unverified parts. Returns the report."""
    arguments.flag("allow_non_affine", allow_non_affine)
    arguments.flag("strict", strict)
    report = audit(model, modules)
    _enforce(report, allow_non_affine, strict)
    return report


def _enforce(report: AuditReport, allow_non_affine: bool, strict: bool) -> None:
    if not report.ok:
        if not allow_non_affine:
            raise ValueError(f"{report}\nPass allow_non_affine=True to go on anyway (not exact).")
        warnings.warn(f"{report}\nGoing on (allow_non_affine=True): the results are not exact.", ExactnessWarning, 4)
    elif report.unverified:
        message = f"the audit could not check everything, so exactness is not guaranteed:\n{report}"
        if strict:
            raise ValueError(message + "\n(strict=True) Check with pwawidgets.verify, then pass strict=False.")
        warnings.warn(message + "\nCheck with pwawidgets.verify.", ExactnessWarning, 4)


# ----------------------------------------------------------------- a verdict kept, and watched on every pass

_KEPT: WeakKeyDictionary = WeakKeyDictionary()  # model -> (its state, the report given for it)
_WATCH_SAFE = (AFFINE, PIECEWISE, STEP, SHAPE)
_TRAINING_ARGUMENT = {"batch_norm": (5, False), "rrelu": (3, False)}  # position and default of `training`


def _state(named: dict[str, nn.Module]) -> tuple:
    """What a verdict was given for: every module's name, type, mode and own ``forward``, and the hooks on them."""
    modules = tuple((name, type(m), m.training, id(vars(m).get("forward"))) for name, m in named.items())
    return modules + tuple(str(finding) for _, finding in _hook_findings(named))


def _verdict_holds_for(func, args: tuple, kwargs: dict) -> bool:
    """Whether an operation the pass runs leaves a kept verdict standing: one whose verdict cannot depend on the
    values it reads (affine, piece-wise affine, step, shape; a mode-dependent one in eval mode; a reduction that
    keeps the batch axis). Anything else (smooth, products, divisions, detach, unknown) asks for a fresh audit."""
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a Tensor property: metadata, except the ones that cut autograd
        return getattr(func, "__self__", None) not in (torch.Tensor.data, torch.Tensor.grad)
    kind = kinds.kind_of_call(func)
    if kind is None:
        return False
    if kind.category == MODE:
        position, default = _TRAINING_ARGUMENT.get(name, (2, True))  # F.dropout and kin: training=True by default
        training = kwargs.get("training", args[position] if len(args) > position else default)
        return not training
    if kind.category in (BILINEAR, DIVISION):  # fine while one side is a constant (a weight, a buffer, a number)
        computed = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.grad_fn is not None]
        if kind.category == BILINEAR:
            return len(computed) <= 1
        divisor = kwargs.get("other", args[1] if len(args) > 1 else None)
        return not (isinstance(divisor, torch.Tensor) and divisor.grad_fn is not None)
    if kind.category not in _WATCH_SAFE:
        return False
    if name.strip("_") in _REDUCTIONS and args and isinstance(args[0], torch.Tensor):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if isinstance(dim, torch.Tensor):  # max(x, other): elementwise
            return True
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        return None not in dims and all(int(d) % max(args[0].dim(), 1) != 0 for d in dims)
    return True


class _PassWatch(TorchFunctionMode):
    """Runs the forward pass and notes the first operation that a kept verdict does not cover."""

    def __init__(self) -> None:
        super().__init__()
        self.uncovered = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.uncovered is None and not _verdict_holds_for(func, args, kwargs):
            self.uncovered = func
        return func(*args, **kwargs)


@dataclass
class PassAudit:
    """The audit of one decomposition-like call (:func:`pwawidgets.core.run_passes`).

    A clean verdict (nothing offending, nothing unverified) is kept per model, for the model's state (modules, their
    modes, their own ``forward``, hooks). The next call with the same state takes it and runs its forward pass
    watched: when every operation of the pass is one a verdict cannot depend on, the kept verdict stands; otherwise
    (``forward`` may switch on any Python setting) the model is audited afresh right after the pass, before any
    backward pass. A changed state, or a verdict that was not clean, is audited before the pass. So no kept verdict
    is ever served for operations it did not see."""

    model: nn.Module
    named: dict[str, nn.Module]
    allow_non_affine: bool
    strict: bool
    call: Call | None = None
    report: AuditReport | None = None
    watch: _PassWatch | None = None

    @classmethod
    def before_pass(cls, model: nn.Module, named: dict[str, nn.Module], allow_non_affine: bool, strict: bool,
                    call: Call | None = None) -> PassAudit:
        arguments.flag("allow_non_affine", allow_non_affine)
        arguments.flag("strict", strict)
        self = cls(model, named, allow_non_affine, strict, call)
        state = (_state(named), None if call is None else call.key())
        kept = _KEPT.get(model)
        if kept is not None and kept[0] == state and kept[1].ok and not kept[1].unverified:
            self.report, self.watch = kept[1], _PassWatch()
        else:
            self.report = audit(model, named, call)
            _KEPT[model] = (state, self.report)
        _enforce(self.report, allow_non_affine, strict)
        return self

    def watching(self):
        """The context the forward pass runs in."""
        return self.watch if self.watch is not None else contextlib.nullcontext()

    def after_pass(self) -> None:
        """A fresh audit when the watched pass ran an operation the kept verdict does not cover."""
        if self.watch is None or self.watch.uncovered is None:
            return
        fresh = audit(self.model, self.named, self.call)
        _KEPT[self.model] = ((_state(self.named), None if self.call is None else self.call.key()), fresh)
        if (fresh.offending, fresh.unverified) != (self.report.offending, self.report.unverified):
            self.report = fresh
            _enforce(fresh, self.allow_non_affine, self.strict)


def _concrete_args(model: nn.Module, call: Call) -> dict | None:
    """The arguments of ``forward`` traced with their value: non-tensor additional arguments, and the defaults of
    those not given."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    concrete = {}
    for i, param in enumerate(params[call.n_inputs:]):
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            break
        if i < len(call.additional_forward_args):
            value = call.additional_forward_args[i]
            if not isinstance(value, torch.Tensor):
                concrete[param.name] = value
        elif param.default is not param.empty:
            concrete[param.name] = param.default
    return concrete or None


def _audit(model: nn.Module, named: dict[str, nn.Module], call: Call | None = None) -> AuditReport:
    try:
        graph = _LeafTracer().trace(model, concrete_args=None if call is None else _concrete_args(model, call))
    except Exception as exc:  # noqa: BLE001 - dynamic control flow and the like: fall back to the modules
        return _module_walk(named, exc)
    judge = _Judge(named, None if call is None else call.n_inputs)
    for node in graph.nodes:
        judge.node(node)
    report = AuditReport(traced=True)
    judge.findings += _hook_findings(named)
    for status, finding in judge.findings:
        bucket = report.offending if status == "offending" else report.unverified
        if finding not in bucket:
            bucket.append(finding)
    return report


def _hook_findings(named: dict[str, nn.Module]) -> list[tuple[str, Finding]]:
    """Hooks the user left on the model: they can change values or gradients in ways the trace does not show."""
    found = []
    for name, module in named.items():
        kinds_ = [t.strip("_").replace("_", " ")[:-1] for t in _HOOK_TABLES if getattr(module, t)]
        if kinds_:
            found.append(("unverified", Finding(name or type(module).__name__, ", ".join(kinds_),
                                                "a hook can change values or gradients unseen by the audit")))
    globals_ = nn.modules.module
    if any(getattr(globals_, t, None) for t in ("_global_forward_hooks", "_global_forward_pre_hooks",
                                                 "_global_backward_hooks", "_global_backward_pre_hooks")):
        found.append(("unverified", Finding("every module", "global hook", "a global module hook is registered")))
    return found


def _module_walk(named: dict[str, nn.Module], exc: Exception) -> AuditReport:
    """Without a trace: judge every leaf module by its type, and say that functional code went unchecked."""
    report = AuditReport(traced=False)
    report.unverified.append(Finding("forward", "trace", f"could not be traced ({type(exc).__name__}): functional "
                                                         "calls inside custom modules are unchecked"))
    for _status, finding in _hook_findings(named):
        report.unverified.append(finding)
    for name, module in named.items():
        if any(True for _ in module.children()):
            continue
        where = name or type(module).__name__
        status, why = _module_verdict(module, VARYING)
        if status:
            (report.offending if status == "offending" else report.unverified).append(
                Finding(where, type(module).__name__, why))
    return report


def _module_verdict(module: nn.Module, state: int) -> tuple[str | None, str]:
    kind = kinds.kind_of_module(module)
    if kind is None:
        custom = not type(module).__module__.startswith("torch.")
        return "unverified", ("custom module, not traced" if custom else "module type unknown to the audit")
    if kind.category == MODE:
        why = kinds.training_finding(module)
        return ("offending", why) if why else (None, "")
    if kind.category == SMOOTH and state == VARYING:
        return "offending", "smooth non-linearity or normalisation, not piece-wise affine"
    if kind.category == BILINEAR and isinstance(module, nn.Bilinear):
        return "offending", "product of two inputs"
    return None, ""


_REDUCTIONS = {"mean", "sum", "nansum", "max", "min", "amax", "amin", "std", "var", "cumsum", "median", "nanmedian"}


def _over_batch(node: torch.fx.Node) -> bool:
    """Whether a reduction covers axis 0 (no ``dim`` at all, or one that includes 0)."""
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if isinstance(dim, torch.fx.Node):
        return False  # computed at run time; cannot tell
    if dim is None:
        return True
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return any(d == 0 for d in dims if isinstance(d, int))


class _Judge:
    """Walks a traced graph, giving each value a state and collecting findings."""

    def __init__(self, modules: dict[str, nn.Module], n_inputs: int | None = None):
        self.modules = modules
        self.inputs_left = n_inputs  # placeholders still to come that are inputs (None: all of them)
        self.state: dict[torch.fx.Node, int] = {}
        self.findings: list[tuple[str, Finding]] = []

    def _of(self, value) -> int:
        if isinstance(value, torch.fx.Node):
            return self.state.get(value, CONST)
        if isinstance(value, (tuple, list)):
            return max((self._of(v) for v in value), default=CONST)
        if isinstance(value, dict):
            return max((self._of(v) for v in value.values()), default=CONST)
        if isinstance(value, slice):
            return max(self._of(value.start), self._of(value.stop), self._of(value.step))
        return CONST

    def _flag(self, status: str, node: torch.fx.Node, what: str, why: str) -> None:
        self.findings.append((status, Finding(node.name, what, why)))

    def node(self, node: torch.fx.Node) -> None:
        if node.op == "placeholder":  # an input; a constant after the first n_inputs (additional arguments)
            varying = self.inputs_left is None or self.inputs_left > 0
            self.state[node] = VARYING if varying else CONST
            if self.inputs_left:
                self.inputs_left -= 1
        elif node.op in ("get_attr", "output"):
            self.state[node] = CONST
        elif node.op == "call_module":
            self.state[node] = self._module(node)
        elif node.op == "call_function":
            self.state[node] = self._function(node)
        elif node.op == "call_method":
            self.state[node] = self._method(node)

    def _module(self, node: torch.fx.Node) -> int:
        module = self.modules.get(node.target)
        state = self._of(node.args) if not node.kwargs else max(self._of(node.args), self._of(node.kwargs))
        if module is None or state == CONST:
            return state
        status, why = _module_verdict(module, state)
        if status:
            self.findings.append((status, Finding(node.target, type(module).__name__, why)))
        kind = kinds.kind_of_module(module)
        return VARYING if kind is not None and kind.category == LOOKUP else state

    def _function(self, node: torch.fx.Node) -> int:
        fn = node.target
        if fn is getattr:
            return self._getattr(node)
        if fn is operator.getitem:
            base, index = node.args[0], node.args[1]
            return max(self._of(base), min(self._of(index), STEPWISE))
        label = getattr(fn, "__name__", str(fn))
        return self._judge(node, kinds.kind_of_function(fn), label, label)

    def _method(self, node: torch.fx.Node) -> int:
        name = str(node.target)
        return self._judge(node, kinds.kind_of_method(name), f".{name}()", name)

    def _getattr(self, node: torch.fx.Node) -> int:
        base, attr = node.args[0], node.args[1]
        if attr in _METADATA:
            return CONST
        if attr in _VIEWS or attr == "values":  # .values of torch.max(x, dim)
            return self._of(base)
        if attr == "indices":
            return min(self._of(base), STEPWISE)
        if attr == "data" and self._of(base) == VARYING:
            self._flag("offending", node, ".data", "reads the value without its gradient: w misses this path")
            return VARYING
        if self._of(base) != CONST:
            self._flag("unverified", node, f".{attr}", "attribute of an input-dependent value")
        return self._of(base)

    def _judge(self, node: torch.fx.Node, kind: Kind | None, what: str, name: str) -> int:
        args, kwargs = node.args, node.kwargs
        states = [self._of(a) for a in args] + [self._of(v) for v in kwargs.values()]
        top = max(states, default=CONST)
        if top == CONST:
            return CONST
        if kind is None:
            self._flag("unverified", node, what, "operation unknown to the audit")
            return top
        category = kind.category
        if category in (AFFINE, PIECEWISE) and name in _REDUCTIONS and top == VARYING and _over_batch(node):
            self._flag("unverified", node, what, "reduces over the batch axis: examples are no longer independent, "
                                                "so one example's gradient mixes in the others'")
        if category in (AFFINE, PIECEWISE):
            return top
        if category == STEP:
            return STEPWISE
        if category == SHAPE:
            return CONST
        if category == LOOKUP:
            return VARYING
        if category == DETACH:
            if top == VARYING:
                self._flag("offending", node, what, "cuts the gradient: w misses this path, so the contributions "
                                                    "are not the network's slope")
            return top
        if category == BILINEAR:
            if sum(s == VARYING for s in states) > 1:
                self._flag("offending", node, what, "product of two values that depend on the input")
            return top
        if category == DIVISION:
            denominator = args[1] if len(args) > 1 else kwargs.get("other")
            if self._of(denominator) == VARYING:
                self._flag("offending", node, what, "division by a value that depends on the input")
            return top
        if category == MODE:
            return self._functional_mode(node, name, top)
        if category == SMOOTH:
            return self._smooth(node, what, states, top)
        return top

    def _smooth(self, node: torch.fx.Node, what: str, states: list[int], top: int) -> int:
        if node.target in (operator.pow, torch.pow, "pow") and len(node.args) > 1 and node.args[1] == 1:
            return top  # x ** 1
        if top == VARYING:
            self._flag("offending", node, what, "smooth operation, not piece-wise affine")
            return VARYING
        return STEPWISE

    def _functional_mode(self, node: torch.fx.Node, name: str, top: int) -> int:
        index, default = _TRAINING_ARG.get(name, (None, False))
        training = node.kwargs.get("training", node.args[index] if index is not None and len(node.args) > index
                                   else default)
        p = node.kwargs.get("p", node.args[1] if len(node.args) > 1 and "dropout" in name else 0.5)
        if training is True and not ("dropout" in name and p == 0):
            self._flag("offending", node, name, "runs in training mode (training=True): pass training=False or "
                                                "call it as a module in eval mode")
        elif not isinstance(training, bool):
            self._flag("unverified", node, name, "training flag computed at run time")
        return top
