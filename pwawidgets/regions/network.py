"""A Linear/ReLU network read as exact float64 layers, checked against the model's own forward."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..placement import model_device, model_dtype

__all__ = ["PlaneNet", "float64_copy", "read_net"]

Layer = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class PlaneNet:
    """The network as numpy float64: hidden layers ``(W_l, b_l)`` each followed by ReLU, then an affine head."""

    hidden: tuple[Layer, ...]
    head: Layer

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(W.shape[0] for W, _ in self.hidden)

    @property
    def n_in(self) -> int:
        return (self.hidden[0][0] if self.hidden else self.head[0]).shape[1]

    @property
    def n_outputs(self) -> int:
        return self.head[0].shape[0]

    def forward(self, X: np.ndarray, upto_layer: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Outputs (or layer ``upto_layer``'s activations) and the pre-activations of each hidden layer."""
        h = np.asarray(X, dtype=np.float64)
        pres = []
        for W, b in self.hidden[:upto_layer]:
            z = h @ W.T + b
            pres.append(z)
            h = np.maximum(z, 0.0)
        if upto_layer is not None and upto_layer < len(self.hidden):
            return h, pres
        W, b = self.head
        return h @ W.T + b, pres


def _leaves(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    children = list(module.named_children())
    if not children:
        if not isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict):  # an empty container: no layer
            yield type(module).__name__, module
        return
    for name, child in children:
        for sub, leaf in _leaves(child):
            yield (f"{name}.{sub}" if list(child.children()) else name), leaf


def read_net(model: nn.Module) -> PlaneNet:
    """Read ``model`` as Linear/ReLU layers (consecutive Linears are composed) and check it against its forward.

    Raises ``ValueError`` naming the first layer that is not nn.Linear, nn.ReLU, nn.Identity, nn.Flatten or
    nn.Dropout (in eval mode), when there is no nn.Linear, or when the first layer does not take 2 inputs.
    """
    passthrough = (nn.Identity, nn.Flatten, nn.Dropout)
    n_in = None
    cur_W: np.ndarray | None = None
    cur_b: np.ndarray | None = None
    hidden: list[Layer] = []
    last_was_relu = False
    for name, leaf in _leaves(model):
        if isinstance(leaf, nn.Linear):
            W = leaf.weight.detach().cpu().double().numpy()
            b = (leaf.bias.detach().cpu().double().numpy() if leaf.bias is not None else np.zeros(W.shape[0]))
            if n_in is None:
                n_in = W.shape[1]
            if cur_W is None:
                cur_W, cur_b = W, b
            else:
                cur_W, cur_b = W @ cur_W, W @ cur_b + b
            last_was_relu = False
        elif isinstance(leaf, nn.ReLU):
            if cur_W is None:
                if not last_was_relu:
                    raise ValueError(f"layer {name!r}: a ReLU before any nn.Linear is not supported")
                continue
            hidden.append((cur_W, cur_b))
            cur_W = cur_b = None
            last_was_relu = True
        elif isinstance(leaf, passthrough):
            if isinstance(leaf, nn.Dropout) and leaf.training and leaf.p > 0:
                raise ValueError(f"layer {name!r}: dropout in training mode; call model.eval() first")
        else:
            raise ValueError(
                f"layer {name!r} ({type(leaf).__name__}) is not supported: regions are computed for networks "
                "made of nn.Linear and nn.ReLU layers only"
            )
    if n_in is None:
        raise ValueError("the model has no nn.Linear layer: regions are computed for networks made of nn.Linear "
                         "and nn.ReLU layers")
    if n_in != 2:
        raise ValueError(f"regions are computed on the plane: the first layer takes {n_in} inputs, not 2")
    if cur_W is None:  # the network ends with a ReLU: its outputs are the last hidden layer
        n = hidden[-1][0].shape[0]
        cur_W, cur_b = np.eye(n), np.zeros(n)
    net = PlaneNet(tuple(hidden), (cur_W, cur_b))
    _check_read(model, net)
    return net


def _check_read(model: nn.Module, net: PlaneNet) -> None:
    """The layers read must reproduce the model's own forward (catches modules not called in registration order)."""
    X = np.random.default_rng(0).normal(size=(16, 2)) * 2
    dtype = model_dtype(model)
    with torch.no_grad():
        ref = model(torch.as_tensor(X, dtype=dtype, device=model_device(model))).double().cpu().numpy()
    mine, _ = net.forward(X)
    rtol = 1e-9 if dtype == torch.float64 else 1e-4
    if ref.shape != mine.shape or not np.allclose(ref, mine, rtol=rtol, atol=rtol * (1 + np.abs(ref).max())):
        raise ValueError(
            "the model could not be read as a chain of nn.Linear and ReLU layers in registration order; "
            "build it as an nn.Sequential"
        )


def float64_copy(model: nn.Module) -> nn.Module:
    """``model`` itself when it is float64 on the CPU (or has no floating-point tensors), else a float64 CPU copy."""
    if model_dtype(model, torch.float64) == torch.float64 and model_device(model).type == "cpu":
        return model
    return copy.deepcopy(model).cpu().double()
