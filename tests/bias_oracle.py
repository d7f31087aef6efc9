"""An independent oracle for the sources of a bias: the network with its activation pattern frozen at the input.

Each ReLU becomes a product by its mask at ``x``, each cap (ReLU6, Hardtanh) its linear part plus a constant on the
units it held at ``x``, each max-pool the selection it made at ``x``; the layer's output is set to 0. The frozen
network is then linear in its constants: run with every constant after the layer on, its output is the bias; with
one on, that constant's part. Nothing here defines the bias as a difference, and none of the package's code runs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from pwawidgets.zoo.architectures import Normalize


class FreezableFill(nn.Module):
    """A test module that adds a constant in functional code; ``frozen`` is its frozen form (``at``: its input
    at x, ``on``: whether its constant is on)."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def frozen(self, inp: torch.Tensor, at: torch.Tensor, on: bool) -> torch.Tensor:
        raise NotImplementedError


class Where(FreezableFill):
    def forward(self, h):
        return torch.where(h > 0, h, self.value)

    def frozen(self, inp, at, on):
        return torch.where(at > 0, inp, self.value * on)


class Fill(FreezableFill):
    def forward(self, h):
        return h.masked_fill(h < 0, self.value)

    def frozen(self, inp, at, on):
        return inp.masked_fill(at < 0, self.value * on)


class Pad(FreezableFill):
    def forward(self, h):
        return F.pad(h, (1, 2, 1, 0), value=self.value)

    def frozen(self, inp, at, on):
        return F.pad(inp, (1, 2, 1, 0), value=self.value * on)


class Residual(nn.Module):
    """conv - ReLU - conv, plus the block's input (the shortcut, a constant for a layer inside the block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.shortcut = 1.0  # the oracle turns it off

    def forward(self, x):
        out = self.conv2(self.relu(self.conv1(x)))
        return out + x if self.shortcut == 1.0 else out + self.shortcut * x


def _caps(module: nn.Module) -> tuple[float, float] | None:
    if isinstance(module, nn.Hardtanh):  # ReLU6 too
        return module.min_val, module.max_val
    return None


def _has_constant(module: nn.Module) -> bool:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return module.bias is not None
    return isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, FreezableFill, Residual, Normalize)) or bool(
        _caps(module))


class Frozen:
    """``Frozen(model, x, layer)(on)``: the frozen network's logits with the layer's output at 0 and only the
    constants of the modules in ``on`` (names; None: all) among those after the layer."""

    def __init__(self, model: nn.Module, x: torch.Tensor, layer: str | None, raw_zero: torch.Tensor | None = None):
        self.model = copy.deepcopy(model).eval()
        for m in self.model.modules():
            if hasattr(m, "inplace"):
                m.inplace = False
        self.x, self.layer, self.raw_zero = x, layer, raw_zero
        self.inputs: dict[str, torch.Tensor] = {}
        order: list[str] = []
        handles = [m.register_forward_hook(self._record(name, order)) for name, m in self.model.named_modules()]
        with torch.no_grad():
            self.model(x)
        for h in handles:
            h.remove()
        after = order.index(layer) + 1 if layer is not None else 0
        modules = dict(self.model.named_modules())
        # a block's shortcut is a constant only for a layer inside the block (else both operands depend on it)
        self.after = {name for name in order[after:] if _has_constant(modules[name])
                      and (not isinstance(modules[name], Residual) or (layer or "").startswith(name + "."))}

    def _record(self, name, order):
        def hook(module, args, output):
            order.append(name)
            self.inputs[name] = args[0].detach().clone()
        return hook

    def __call__(self, on: set[str] | None = None) -> torch.Tensor:
        model = copy.deepcopy(self.model)
        modules = dict(model.named_modules())
        off = {n for n in self.after if on is not None and n not in on}
        with torch.no_grad():
            for name in off:
                m = modules[name]
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.bias.zero_()
                elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                    m.running_mean.zero_()
                    m.bias.zero_()
                elif isinstance(m, Residual):
                    m.shortcut = 0.0
                elif isinstance(m, Normalize):
                    m.mean.zero_()
        handles = []
        for name, m in modules.items():
            if name == self.layer:
                handles.append(m.register_forward_hook(lambda mod, a, out: torch.zeros_like(out)))
            elif isinstance(m, (nn.ReLU, nn.MaxPool2d, nn.AdaptiveMaxPool2d, FreezableFill)) or _caps(m):
                handles.append(m.register_forward_hook(self._freeze(name, name not in off)))
        start = torch.zeros_like(self.x) if self.layer is None else self.x
        if self.raw_zero is not None:
            start = self.raw_zero
        with torch.no_grad():
            out = model(start)
        for h in handles:
            h.remove()
        return out

    def _freeze(self, name: str, on: bool):
        at = self.inputs[name]

        def hook(module, args, output):
            inp = args[0]
            if isinstance(module, FreezableFill):
                return module.frozen(inp, at, on)
            if isinstance(module, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
                if isinstance(module, nn.MaxPool2d):
                    _, idx = F.max_pool2d(at, module.kernel_size, module.stride, module.padding, module.dilation,
                                          module.ceil_mode, return_indices=True)
                else:
                    _, idx = F.adaptive_max_pool2d(at, module.output_size, return_indices=True)
                return inp.flatten(2).gather(2, idx.flatten(2)).view_as(idx)
            caps = _caps(module)
            if caps is None:  # ReLU
                return inp * (at > 0)
            low, high = caps
            linear = (at > low) & (at < high)
            return inp * linear + on * (low * (at <= low) + high * (at >= high))

        return hook


def part(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The logits of the target classes, ``(B,)`` or ``(B, k)`` as ``target``."""
    return logits.gather(1, target.view(target.shape[0], -1)).view(target.shape)
