"""How a model wants its images: :class:`Preprocessing` (resize, crop, mean, std, interpolation), carried by the model
as ``model.preprocessing`` and found by :func:`preprocessing_of`, the one lookup every caller uses.

Every loader of :mod:`pwawidgets.models` attaches one; for a model you built, attach it yourself::

    model.preprocessing = pw.Preprocessing(size=32, crop=32, mean=(0.5,) * 3, std=(0.25,) * 3, name="my net")

:func:`pwawidgets.load_image` records on the batch it returns the preprocessing it applied (``x.preprocessing``);
:func:`check_inputs_fit` warns when such a batch is given to a model that wants another normalisation.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


class PreprocessingWarning(UserWarning):
    """An image was normalised otherwise than the model it is given to expects."""


def _floats(value: object, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a sequence of numbers, one per channel, got {value!r}") from exc
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must hold finite numbers, one per channel, got {value!r}")
    return values


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: shorter side resized to ``size`` (``interpolation``), centre crop ``crop``
    (None: no crop), then ``(x - mean) / std`` per channel on pixels in [0, 1] (mean 0 and std 1: raw pixels).

    ``name`` says where the values come from (e.g. ``"vgg19: torchvision's IMAGENET1K_V1 transforms"``).
    """

    size: int
    crop: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    name: str = ""

    def __post_init__(self) -> None:
        for field, value in (("size", self.size), ("crop", self.crop)):
            if value is None and field == "crop":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Preprocessing: {field} must be a positive integer (pixels), got {value!r}")
        if self.crop is not None and self.crop > self.size:
            raise ValueError(f"Preprocessing: crop={self.crop} is larger than size={self.size}; use crop <= size")
        mean, std = _floats(self.mean, "Preprocessing: mean"), _floats(self.std, "Preprocessing: std")
        if len(mean) != len(std) or not all(s > 0 for s in std):
            raise ValueError(f"Preprocessing: mean and std need one value per channel each and every std > 0; got "
                             f"mean={self.mean!r}, std={self.std!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"Preprocessing: interpolation must be one of {', '.join(INTERPOLATIONS)}, got "
                             f"{self.interpolation!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)``."""
        return self.mean, self.std

    @property
    def raw(self) -> bool:
        """True when the model takes raw pixels in [0, 1] (mean 0, std 1)."""
        return all(m == 0 for m in self.mean) and all(s == 1 for s in self.std)

    def same_normalization(self, other: Preprocessing) -> bool:
        """Whether ``other`` normalises as this does (to 1e-6)."""
        return len(self.mean) == len(other.mean) and all(
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
            for a, b in zip(self.mean + self.std, other.mean + other.std, strict=True))

    def describe(self) -> str:
        """One line: the name, then the values."""
        crop = f", centre crop {self.crop}" if self.crop is not None else ""
        values = (f"resize {self.size} ({self.interpolation}){crop}, mean {_short(self.mean)}, "
                  f"std {_short(self.std)}")
        return f"{self.name} ({values})" if self.name else values


def _short(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # (mean, std) of torchvision's classifiers
IMAGENET = Preprocessing(256, 224, *IMAGENET_NORMALIZATION, "bilinear",
                         "ImageNet default of torchvision's classifiers")


def preprocessing_of(model: nn.Module) -> Preprocessing | None:
    """The preprocessing a model carries (``model.preprocessing``), None if it carries none.

    A model wrapped by ``torch.compile`` (its attributes are the wrapped model's) or by ``nn.DataParallel`` /
    ``DistributedDataParallel`` (``.module``) is looked through. Anything else than a :class:`Preprocessing` raises
    a ``TypeError`` that says what to set.
    """
    found = getattr(model, "preprocessing", None)
    if found is None and isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        found = getattr(model.module, "preprocessing", None)
    if found is not None and not isinstance(found, Preprocessing):
        raise TypeError(f"model.preprocessing is a {type(found).__name__}; set it to a pwawidgets.Preprocessing("
                        "size, crop, mean, std, ...)")
    return found


def normalization_of(model: nn.Module, normalization: Sequence[Sequence[float]] | None = None
                     ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``normalization`` when given (checked: ``(mean, std)``, one value per channel, every std > 0), else the
    model's (``preprocessing_of(model).normalization``), else None."""
    if normalization is None:
        found = preprocessing_of(model)
        return None if found is None else found.normalization
    try:
        mean, std = normalization
    except (TypeError, ValueError) as exc:
        raise ValueError(f"normalization must be (mean, std), one value per channel each; got {normalization!r}"
                         ) from exc
    mean, std = _floats(mean, "normalization: mean"), _floats(std, "normalization: std")
    if len(mean) != len(std) or not all(s > 0 for s in std):
        raise ValueError(f"normalization must be (mean, std) of equal length with every std > 0; got "
                         f"{normalization!r}")
    return mean, std


def outside_stacklevel() -> int:
    """The ``stacklevel`` of a warning raised here that points at the first caller outside pwawidgets."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def check_inputs_fit(model: nn.Module, inputs: torch.Tensor) -> None:
    """Warn (:class:`PreprocessingWarning`, naming both) when ``inputs`` was made by :func:`pwawidgets.load_image`
    for a normalisation other than the model's. Tensors without a record (``inputs.preprocessing``) pass."""
    made = getattr(inputs, "preprocessing", None)
    wanted = preprocessing_of(model)
    if isinstance(made, Preprocessing) and wanted is not None and not made.same_normalization(wanted):
        warnings.warn(f"the inputs were normalised for {made.describe()}, but the model expects {wanted.describe()}: "
                      "load them with pw.load_image(source, model=model)", PreprocessingWarning,
                      stacklevel=outside_stacklevel())
