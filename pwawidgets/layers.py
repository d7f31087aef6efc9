"""Layer names: which tensor of a network a name refers to, and how to capture it.

A *layer tensor* is the value a module hands to the next one, as it left the module, before any later
in-place operation (torchvision's ``ReLU(inplace=True)``, ResNet's ``out += identity``) overwrote it.

Names accepted wherever a list of layers is asked for:

- ``"input"`` -- the tensor given to the model;
- a module name from ``model.named_modules()`` (``"features.35"``, ``"layer3.4.relu"``); a module that runs
  several times in one forward pass (torchvision's ResNet blocks reuse one ``relu``) is named per call,
  ``"layer1.0.relu@0"``, ``"layer1.0.relu@1"``...;
- a preset layer name (``"conv4"`` on a VGG, ``"layer2"`` on a ResNet, see :func:`layer_presets`);
- a preset name: ``"blocks"`` (one tensor per block) or ``"all"`` (every ReLU output, in execution order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .kinds import is_activation

INPUT = "input"


@dataclass(frozen=True)
class LayerSpec:
    """One requested layer: the name shown to the user, the module that produces it, and which call."""

    name: str
    module: str | None  # None for the input
    call: int | None = None  # None: the module must run exactly once


def vgg_blocks(model: nn.Module) -> dict[str, str]:
    """VGG: ``conv1``..``convN`` = the last ReLU of each block, just before the block's max-pool."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        return {}
    blocks: dict[str, str] = {}
    last_relu: str | None = None
    for idx, module in features.named_children():
        if is_activation(module):
            last_relu = idx
        elif isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) and last_relu is not None:
            blocks[f"conv{len(blocks) + 1}"] = f"features.{last_relu}"
            last_relu = None
    return blocks


def resnet_blocks(model: nn.Module) -> dict[str, str]:
    """ResNet: ``stem`` = output of the stem's max-pool, ``layer1``..``layer4`` = output of each stage."""
    names = dict(model.named_children())
    if not all(k in names for k in ("conv1", "layer1")):
        return {}
    blocks = {"stem": "maxpool" if "maxpool" in names else "relu"}
    for k in range(1, 5):
        if f"layer{k}" in names:
            blocks[f"layer{k}"] = f"layer{k}"
    return blocks


def check_model(model: object) -> nn.Module:
    """The model itself (the original module of a ``torch.compile``d one), or a clear TypeError for anything that
    is not an ``nn.Module``. Decomposing the original is the same function: hooks need the eager modules."""
    if not isinstance(model, nn.Module):
        hint = " (load it first: pwawidgets.load_model(name))" if isinstance(model, str) else ""
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}{hint}")
    if type(model).__name__ == "OptimizedModule":  # torch.compile's wrapper: its one child is the original
        children = list(model.children())
        if len(children) == 1:
            return children[0]
    return model


def layer_presets(model: nn.Module) -> dict[str, dict[str, str]]:
    """Preset layer groups of a model: ``{"blocks": {alias: module name}}``.

    A model may declare its own blocks with a ``block_layers`` attribute ``{alias: module name}`` (the mini
    zoo does); otherwise VGG- and ResNet-shaped torchvision models are recognised. ``"all"`` is resolved at
    run time (every ReLU call) and is not listed here.
    """
    model = check_model(model)
    declared = getattr(model, "block_layers", None)
    blocks = dict(declared) if declared else (vgg_blocks(model) or resnet_blocks(model))
    return {"blocks": blocks} if blocks else {}


def _split_call(name: str) -> tuple[str, int | None]:
    if "@" in name:
        base, _, idx = name.rpartition("@")
        if idx.isdigit():
            return base, int(idx)
    return name, None


def resolve_layers(
    model: nn.Module, layers: str | Sequence[str] | None, modules: dict[str, nn.Module] | None = None
) -> tuple[list[LayerSpec], bool]:
    """Turn user layer names into specs. Returns ``(specs, wants_all)``; ``"all"`` is resolved at run time.
    ``modules``: ``dict(model.named_modules())`` if the caller already has it."""
    if layers is None:
        layers = [INPUT]
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)):
        raise TypeError(f"layers must be a name or a list of names, got {type(layers).__name__}: {layers!r}")
    model = check_model(model)
    modules = dict(model.named_modules()) if modules is None else modules
    presets = layer_presets(model)
    for group in presets.values():
        missing = {alias: target for alias, target in group.items() if target not in modules}
        if missing:
            raise ValueError(f"the model's block_layers name modules it does not have: {missing}")
    aliases = {alias: target for group in presets.values() for alias, target in group.items()}
    specs: list[LayerSpec] = []
    wants_all = False
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"layer names are strings, got {type(name).__name__}: {name!r}")
        if name == INPUT:
            specs.append(LayerSpec(INPUT, None))
        elif name == "all":
            wants_all = True
        elif name in presets:
            specs.extend(LayerSpec(alias, target) for alias, target in presets[name].items())
        elif name in aliases:
            specs.append(LayerSpec(name, aliases[name]))
        else:
            base, call = _split_call(name)
            if base in modules and base != "":
                specs.append(LayerSpec(name, base, call))
            else:
                raise ValueError(_unknown_layer_message(name, presets, modules))
    seen: set[str] = set()
    unique = [s for s in specs if not (s.name in seen or seen.add(s.name))]
    return unique, wants_all


def _unknown_layer_message(name: str, presets: dict[str, dict[str, str]], modules: dict[str, nn.Module]) -> str:
    examples = [n for n, m in modules.items() if is_activation(m)][:4] or [n for n in modules if n][:4]
    if name == "blocks" and not presets:
        pairs = ", ".join(f'"b{i + 1}": "{n}"' for i, n in enumerate(examples[:3]))
        return (f"no 'blocks' preset is known for this model (only VGG- and ResNet-shaped ones are recognised). "
                f"Declare your own once: model.block_layers = {{{pairs}}} (any module names from "
                f"model.named_modules(), e.g. {examples}); or pass the module names themselves as layers.")
    parts = [f"unknown layer {name!r}. Use 'input'", "'all' (every ReLU output)"]
    if presets:
        for group, members in presets.items():
            parts.append(f"{group!r} or one of {sorted(members)}")
    else:
        parts.append("(no 'blocks' preset: declare one with model.block_layers = {alias: module name})")
    parts.append(f"or a module name from model.named_modules(), e.g. {examples}")
    return ", ".join(parts) + "."


def _tracked(t: torch.Tensor) -> torch.Tensor:
    if t.requires_grad or not t.is_floating_point() or not torch.is_grad_enabled():
        return t
    return t.detach().requires_grad_(True)


@dataclass
class _Record:
    outputs: list[torch.Tensor] = field(default_factory=list)


class LayerCapture:
    """Forward hooks that keep each requested layer tensor as it left its module.

    The hook hands the rest of the network a clone, so later in-place operations change the clone and the
    recorded tensor (a node of the autograd graph) keeps its value; gradients taken with respect to it are
    gradients with respect to that value. Used as a context manager: hooks are removed on exit, also after an
    exception.
    """

    def __init__(self, model: nn.Module, specs: Iterable[LayerSpec], capture_all_relus: bool = False,
                 modules: dict[str, nn.Module] | None = None):
        self.model = model
        self.modules = dict(model.named_modules()) if modules is None else modules
        self.specs = [s for s in specs if s.module is not None]
        self.capture_all_relus = capture_all_relus
        self.records: dict[str, _Record] = {}
        self._order: list[tuple[str, int]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> LayerCapture:
        modules = self.modules
        wanted = {s.module for s in self.specs}
        if self.capture_all_relus:
            wanted |= {n for n, m in modules.items() if is_activation(m)}
        try:
            order = {name: i for i, name in enumerate(modules)}
            for name in sorted(wanted, key=order.__getitem__):
                self.records[name] = _Record()
                self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
            several = isinstance(output, tuple) and output and all(isinstance(t, torch.Tensor) for t in output)
            if not isinstance(output, torch.Tensor) and not several:
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor (or a tuple of "
                                "tensors): pick another layer")
            # a layer no parameter or input before it makes differentiable (frozen embedding, integer inputs) becomes
            # a leaf that requires grad, so that the score's gradient reaches it
            output = tuple(map(_tracked, output)) if several else _tracked(output)
            record = self.records[name]
            self._order.append((name, len(record.outputs)))
            record.outputs.append(output)
            return tuple(t.clone() for t in output) if several else output.clone()

        return hook

    def tensor(self, spec: LayerSpec) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The captured tensor (or tuple of tensors) of one spec, with a clear error if the module ran zero or several
        times."""
        outputs = self.records[spec.module].outputs
        if not outputs:
            raise RuntimeError(f"layer {spec.name!r} (module {spec.module!r}) did not run in the forward pass")
        if spec.call is None:
            if len(outputs) > 1:
                calls = ", ".join(f"'{spec.module}@{i}'" for i in range(len(outputs)))
                raise ValueError(
                    f"module {spec.module!r} ran {len(outputs)} times in one forward pass; name one call: {calls}"
                )
            return outputs[0]
        if spec.call >= len(outputs):
            raise ValueError(f"{spec.name!r}: module {spec.module!r} ran only {len(outputs)} time(s)")
        return outputs[spec.call]

    def relu_specs(self) -> list[LayerSpec]:
        """Every ReLU call of the forward pass, in execution order (for the ``"all"`` preset)."""
        modules = self.modules
        specs = []
        for name, call in self._order:
            if not is_activation(modules[name]):
                continue
            several = len(self.records[name].outputs) > 1
            specs.append(LayerSpec(f"{name}@{call}" if several else name, name, call if several else None))
        return specs


def resolve_one(model: nn.Module, layer: str | None, modules: dict[str, nn.Module] | None = None) -> LayerSpec:
    """Exactly one layer: ``"input"`` (or None) or one module call. Presets and ``"all"`` are refused with the
    names to choose from."""
    if layer is None or layer == INPUT:
        return LayerSpec(INPUT, None)
    if not isinstance(layer, str):
        raise TypeError(f"a layer name is a string, got {type(layer).__name__}: {layer!r}")
    specs, wants_all = resolve_layers(model, [layer], modules)
    if wants_all or len(specs) != 1:
        members = sorted(layer_presets(model).get(layer, {})) or ["a module name from model.named_modules()"]
        raise ValueError(f"{layer!r} names several layers; name one of them, e.g. {members}")
    return specs[0]


class substitute:  # noqa: N801 - a context manager used like a function
    """Within the block, one layer's output goes through ``fn`` before the rest of the network sees it.

    ``spec`` comes from :func:`resolve_one` (not the input). On leaving the block without an error, it checks that
    the layer ran: exactly once, or at least ``spec.call + 1`` times when one call is named; a module that ran
    several times with no call named is refused as in :class:`LayerCapture`.
    """

    def __init__(self, model: nn.Module, spec: LayerSpec, fn, modules: dict[str, nn.Module] | None = None):
        if spec.module is None:
            raise ValueError("the input is not a module output: change the input itself")
        modules = dict(model.named_modules()) if modules is None else modules
        self.spec, self.fn, self.module = spec, fn, modules[spec.module]
        self.calls = 0
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor):
        index = self.calls
        self.calls += 1
        if self.spec.call is None or self.spec.call == index:
            return self.fn(output)
        return output

    def __enter__(self) -> substitute:
        self.calls = 0
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if exc_type is not None:
            return
        spec = self.spec
        if self.calls == 0:
            raise RuntimeError(f"layer {spec.name!r} (module {spec.module!r}) did not run in the forward pass")
        if spec.call is None and self.calls > 1:
            calls = ", ".join(f"'{spec.module}@{i}'" for i in range(self.calls))
            raise ValueError(f"module {spec.module!r} ran {self.calls} times in one forward pass; name one call: "
                             f"{calls}")
        if spec.call is not None and spec.call >= self.calls:
            raise ValueError(f"{spec.name!r}: module {spec.module!r} ran only {self.calls} time(s)")
