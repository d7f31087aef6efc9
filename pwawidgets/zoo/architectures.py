"""Small ReLU networks that mirror the paper's VGG-19, VGG-19-BN and ResNet-101, sized for 64x64 shapes.

Every net is built only from piece-wise affine pieces (convolutions, linear layers, ReLU, max/average pooling,
BatchNorm in eval mode, flatten, additions) plus :class:`Normalize`, a fixed affine layer, so it takes the raw
[0, 1] images of :func:`pwawidgets.data.shapes` as they are.

Attributes every net carries:

- ``block_layers``: preset alias -> module name whose output is a ReLU output (the value a block hands on);
- ``preprocessing``: :data:`PREPROCESSING`, what the inputs are: 64 x 64 raw pixels in [0, 1] (mean 0, std 1);
- ``class_names``: :data:`pwawidgets.data.SHAPE_CLASSES`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import IMAGE_SIZE, SHAPE_CLASSES
from ..preprocessing import Preprocessing

PREPROCESSING = Preprocessing(IMAGE_SIZE, IMAGE_SIZE, (0.0,) * 3, (1.0,) * 3, "bilinear",
                              f"mini zoo: {IMAGE_SIZE} x {IMAGE_SIZE} raw pixels in [0, 1]")
DATA_MEAN = (0.5, 0.5, 0.5)  # measured on shapes(): per-channel mean 0.498, standard deviation 0.277
DATA_STD = (0.28, 0.28, 0.28)
FC_HIDDEN = 128  # units of each hidden layer of mini_vgg_fc's head


class Normalize(nn.Module):
    """Fixed affine input layer: ``(x - mean) / std`` per channel (constant buffers, not trained)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _init_weights(model: nn.Module, linear: bool = False) -> None:
    """He (Kaiming) initialisation for convolutions, as torchvision's VGG/ResNet do; BN starts as identity.

    ``linear=True`` also He-initialises linear layers (fan-in) with zero biases: a fully connected head without
    BatchNorm trains with it, as the convolutions do."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) or (linear and isinstance(m, nn.Linear)):
            mode = "fan_out" if isinstance(m, nn.Conv2d) else "fan_in"
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MiniVGG(nn.Module):
    """VGG-style net: blocks of 3x3 conv [+ BN] + ReLU, a max-pool after each block, then a head.

    ``features`` is an ``nn.Sequential`` as in torchvision's VGG; ``conv1``..``convK`` name the last ReLU of
    each block, before its pool. Default widths 16-32-64x2-128x2 (four blocks; 64 -> 32 -> 16 -> 8 -> 4 px).

    Head: a global max-pool and one linear layer (``hidden=None``, the default), or VGG's fully connected head
    (``hidden=n``): the last feature map flattened (4 x 4 x 128 = 2048 values), then linear-ReLU twice (``n``
    units each) and a linear classifier: three linear layers with biases, as in VGG-19's ``classifier``.
    ``dropout > 0`` puts dropout after each hidden ReLU as VGG does (off by default: it draws from the global
    random state while training, and with p = 0.5 the plain net did not leave chance level).
    """

    preprocessing = PREPROCESSING
    class_names = SHAPE_CLASSES

    def __init__(
        self,
        blocks: Sequence[Sequence[int]] = ((16,), (32,), (64, 64), (128, 128)),
        batch_norm: bool = False,
        num_classes: int = len(SHAPE_CLASSES),
        hidden: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.normalize = Normalize(DATA_MEAN, DATA_STD)
        layers: list[nn.Module] = []
        self.block_layers: dict[str, str] = {}
        channels = 3
        for b, widths in enumerate(blocks, start=1):
            for width in widths:
                layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
                channels = width
            self.block_layers[f"conv{b}"] = f"features.{len(layers) - 1}"
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        if hidden is None:
            self.pool: nn.Module = nn.AdaptiveMaxPool2d(1)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels, num_classes))
        else:  # VGG's head: flatten every position, three linear layers (torchvision: 25088-4096-4096-1000)
            self.pool = nn.Identity()
            size = IMAGE_SIZE // 2 ** len(blocks)
            drop = [nn.Dropout(dropout)] if dropout > 0 else []
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(channels * size * size, hidden), nn.ReLU(inplace=True), *drop,
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True), *drop,
                nn.Linear(hidden, num_classes),
            )
        _init_weights(self, linear=hidden is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(self.normalize(x))))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN, plus the shortcut (not in place), then a second ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + identity)  # a new tensor: x and identity are left untouched


class MiniResNet(nn.Module):
    """ResNet-style net laid out like torchvision's: stem (conv1, bn1, relu, maxpool), layer1..3, avgpool, fc.

    One basic block per stage; widths 16 (stem), 32, 64, 128; 64 -> 32 px after the stem's pool, then 16, 8.
    """

    preprocessing = PREPROCESSING
    class_names = SHAPE_CLASSES
    block_layers: dict[str, str] = {
        "stem": "maxpool",
        "layer1": "layer1",
        "layer2": "layer2",
        "layer3": "layer3",
    }

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), num_classes: int = len(SHAPE_CLASSES)):
        super().__init__()
        self.normalize = Normalize(DATA_MEAN, DATA_STD)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.layer1 = BasicBlock(widths[0], widths[1])
        self.layer2 = BasicBlock(widths[1], widths[2], stride=2)
        self.layer3 = BasicBlock(widths[2], widths[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(x)))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def mini_vgg() -> MiniVGG:
    """Plain VGG-style net (no BatchNorm), mirrors VGG-19."""
    return MiniVGG(batch_norm=False)


def mini_vgg_bn() -> MiniVGG:
    """VGG-style net with BatchNorm after each convolution, mirrors VGG-19-BN."""
    return MiniVGG(batch_norm=True)


def mini_vgg_fc() -> MiniVGG:
    """Plain VGG-style net with VGG-19's fully connected head (three linear layers with biases)."""
    return MiniVGG(batch_norm=False, hidden=FC_HIDDEN)


def mini_resnet() -> MiniResNet:
    """ResNet-style net with one basic block per stage, mirrors ResNet-101."""
    return MiniResNet()


BUILDERS = {"mini_vgg": mini_vgg, "mini_vgg_bn": mini_vgg_bn, "mini_resnet": mini_resnet, "mini_vgg_fc": mini_vgg_fc}
