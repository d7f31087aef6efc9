"""What the ContributionExplorer takes in: a model's preprocessing and class names, sample images, and any image
source turned into a model input (with notes on what was dropped)."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..images import ImageLoadError, ImageWarning, load_with
from ..layers import INPUT, layer_presets, resolve_layers, resolve_one
from ..models import imagenet_categories
from ..preprocessing import IMAGENET, Preprocessing, PreprocessingWarning, preprocessing_of

__all__ = [
    "MAX_IMAGE_SIZE",
    "MAX_UPLOAD_BYTES",
    "Preprocess",
    "check_choice",
    "check_number",
    "class_names_for",
    "default_model",
    "is_mini",
    "layer_choices",
    "one_image",
    "option_labels",
    "photos_fit",
    "prepare",
    "preprocessing_for",
    "sample_image",
    "sample_names",
    "square_side",
]

MAX_UPLOAD_BYTES = 50 * 2**20
MAX_IMAGE_SIZE = 4096


def check_number(name: str, value: Any, low: float, high: float, hint: str = "") -> float:
    """``value`` as a float if it is a real number in ``[low, high]`` (NaN refused); else a TypeError or
    ValueError naming ``name`` and the allowed range (``hint`` says what the number means)."""
    what = f"{name} is a number from {low:g} to {high:g}" + (f" ({hint})" if hint else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}, got {type(value).__name__} {value!r}")
    number = float(value)
    if math.isnan(number) or not low <= number <= high:
        raise ValueError(f"{what}, got {number:g}")
    return number


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; else a ValueError naming ``name`` and the choices."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} is one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input (``preprocessing``), and how big it is shown."""

    preprocessing: Preprocessing
    display: int  # side of the displayed picture, pixels


def is_mini(model: nn.Module) -> bool:
    try:
        from ..zoo import MiniResNet, MiniVGG
    except ImportError:
        return False
    return isinstance(model, (MiniVGG, MiniResNet))


def preprocessing_for(model: nn.Module, image_size: int | None = None,
                      preprocessing: Preprocessing | None = None) -> Preprocess:
    """Preprocessing decided from the model: ``preprocessing`` if given, else the model's own
    (:func:`pwawidgets.preprocessing_of`), else ImageNet's default with a
    :class:`~pwawidgets.PreprocessingWarning`. ``image_size``: resize and centre-crop to that side instead.
    """
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral)
                                   or not 1 <= image_size <= MAX_IMAGE_SIZE):
        raise ValueError(f"image_size is a whole number of pixels from 1 to {MAX_IMAGE_SIZE} (or None for the "
                         f"model's own size), got {image_size!r}")
    if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
        raise TypeError(f"preprocessing is a pwawidgets.Preprocessing(size, crop, mean, std) or None for the "
                        f"model's own, got {type(preprocessing).__name__}")
    prep = preprocessing or preprocessing_of(model)
    if prep is None:
        prep = IMAGENET
        warnings.warn(f"the model ({type(model).__name__}) carries no preprocessing: images are made the "
                      f"{IMAGENET.describe()} way. Pass preprocessing=pwawidgets.Preprocessing(size, crop, mean, std) "
                      "or set model.preprocessing", PreprocessingWarning, stacklevel=3)
    if len(prep.mean) != 3:
        raise ValueError(f"the preprocessing has {len(prep.mean)} channel(s); the explorer shows RGB images "
                         "(3 channels)")
    if image_size is not None:
        prep = replace(prep, size=int(image_size), crop=int(image_size),
                       name=f"{prep.name}; image_size={int(image_size)}")
    crop = prep.crop or prep.size
    display = crop if crop >= 200 else crop * max(1, round(256 / crop))
    return Preprocess(prep, display)


def class_names_for(model: nn.Module, n_classes: int | None) -> list[str]:
    names = getattr(model, "class_names", None)
    if names is not None:
        return [str(n) for n in names]
    if n_classes == 1000:
        return imagenet_categories()
    return [f"class {i}" for i in range(n_classes or 0)]


def option_labels(names: Sequence[str]) -> list[str]:
    """Class names for completion; repeated names (ImageNet has two 'crane's) get their index appended."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [n if counts[n] == 1 else f"{n} (#{i})" for i, n in enumerate(names)]


def sample_names(model: nn.Module) -> list[str]:
    from .. import data

    photos = list(data.SAMPLE_PHOTOS)
    if is_mini(model):
        return [f"shape:{c}" for c in data.SHAPE_CLASSES] + photos
    return photos


def sample_image(name: str) -> np.ndarray:
    """A sample picture by name: a scikit-image photo, or ``"shape:<class>"`` (a generated 64x64 shape)."""
    from .. import data

    if name.startswith("shape:"):
        cls = name.split(":", 1)[1]
        if cls not in data.SHAPE_CLASSES:
            raise LookupError(f"unknown shape {cls!r}: the shapes are "
                              f"{', '.join('shape:' + c for c in data.SHAPE_CLASSES)}")
        batch = data.shapes(len(data.SHAPE_CLASSES) * 4, seed=0)
        i = int((batch.labels == data.SHAPE_CLASSES.index(cls)).nonzero()[0, 0])
        return batch.images[i].permute(1, 2, 0).numpy()
    return data.sample_photo(name)


def default_model() -> nn.Module:
    """The best ImageNet classifier available offline (pretrained weights cached, else one shipped offline)."""
    from .. import models

    return models.load_model(models.best_available_imagenet())


def one_image(batch: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """A 4-D batch of one: a float tensor is model-ready and kept (checked); pixels (``uint8`` 0..255, other
    integers, an array) are returned as one ``(3, H, W)`` or ``(H, W, 3)`` picture, to be scaled like a photo."""
    shape = tuple(batch.shape)
    if shape[0] != 1:
        raise ImageLoadError(f"one image at a time: got a batch of {shape[0]} {shape}")
    if isinstance(batch, torch.Tensor) and batch.is_floating_point():
        if shape[1] != 3:
            raise ImageLoadError(f"a model-ready tensor must be (1, 3, H, W), got {shape}")
        x = batch.detach().float()
        if not bool(torch.isfinite(x).all()):
            raise ImageLoadError("the image tensor holds NaN or infinite values")
        return x
    return batch[0]


def prepare(source: Any, p: Preprocess) -> tuple[torch.Tensor, list[str]]:
    """Source -> model input ``(1, 3, H, W)`` and the notes of information dropped on the way.

    Pixels (a path, bytes, a PIL image, an array or a 3-D tensor, ``uint8`` 0..255 or floats in [0, 1], and a
    4-D batch of one such picture) are resized, cropped and normalised as ``p`` says; a float ``(1, 3, H, W)``
    tensor is taken as model-ready (with a note when :func:`~pwawidgets.load_image` made it for another
    normalisation). Raises :class:`ImageLoadError` with the reason.
    """
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if isinstance(source, bytes) and len(source) > MAX_UPLOAD_BYTES:
        raise ImageLoadError(f"the file has {len(source) / 2**20:.0f} MB; use an image under "
                             f"{MAX_UPLOAD_BYTES // 2**20} MB")
    if isinstance(source, bytes) and not source:
        raise ImageLoadError("the uploaded file is empty")
    if isinstance(source, (torch.Tensor, np.ndarray)) and source.ndim == 4:
        made = getattr(source, "preprocessing", None)
        source = one_image(source)
        if isinstance(source, torch.Tensor) and source.ndim == 4:  # model-ready: used as it is
            wanted = p.preprocessing
            if isinstance(made, Preprocessing) and not made.same_normalization(wanted):
                return source, [f"this tensor was normalised for {made.describe()}, but the model expects "
                                f"{wanted.describe()}: give the picture itself, or load it with "
                                "pw.load_image(source, model=model)"]
            return source, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageWarning)
        x = load_with(source, p.preprocessing)
    notes = []
    for w in caught:
        if issubclass(w.category, ImageWarning):
            notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return x, notes


# ------------------------------------------------------------------ the explorer's layers, size and samples


def layer_choices(model: nn.Module, layer: str | None, layers: Sequence[str] | None) -> list[str]:
    """The layer slider's names: ``layers`` (resolved: presets expand) if given, else the input and the preset
    blocks, with ``layer`` added when it is another module name. A ValueError naming the argument otherwise."""
    if layers is not None:
        if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
            raise TypeError(f"layers is a list of layer names for the slider, e.g. ['input', 'features.3'], got "
                            f"{layers!r}")
        try:
            specs, wants_all = resolve_layers(model, list(layers))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layers: {exc}") from None
        if wants_all:
            raise ValueError("layers: 'all' (every ReLU output) is too many for a slider; name the layers")
        names = [spec.name for spec in specs]
        if layer is not None and layer not in names:
            raise ValueError(f"layer {layer!r} is not one of layers {names}: add it to layers or pick one of them")
        return names
    names = [INPUT, *layer_presets(model).get("blocks", {})]
    if layer is not None and layer not in names:
        try:
            names.append(resolve_one(model, layer).name)  # any module name
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer: {exc}") from None
    return names


def square_side(model: nn.Module, image_size: Any) -> Any:
    """``image_size``, or the side of a square ``model.input_size``; a ValueError for a non-square size (the
    explorer resizes and centre-crops to a square)."""
    for what, value in (("image_size", image_size), ("model.input_size", getattr(model, "input_size", None))):
        if isinstance(value, (tuple, list, torch.Size)):
            if len(value) != 2 or value[0] != value[1]:
                raise ValueError(f"{what} is {tuple(value)}: the explorer takes square images (resized and "
                                 "centre-cropped); give image_size=<side>, one whole number")
            if image_size is None or what == "image_size":
                return value[0]
    return image_size


def photos_fit(model: nn.Module, preprocess: Preprocess, declared: bool) -> str:
    """Empty when the sample photos suit the model (it takes ImageNet-size RGB input, or it is a mini-zoo net,
    which resizes them); else why not, for the prompt that replaces them."""
    if is_mini(model):
        return ""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != 3:
        return f"the model takes {first.in_channels}-channel images, not RGB photos"
    if not declared:
        return ("the model does not say what input size it takes (224 x 224 is assumed): give image_size=<side>, "
                "e.g. image_size=32")
    side = preprocess.preprocessing.crop or preprocess.preprocessing.size
    if side < 200:
        return f"the model takes {side} x {side} images, not ImageNet-size photos"
    return ""
