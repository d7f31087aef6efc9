"""Image loading: anything a user has (path, bytes, PIL image, array, tensor) to a model-ready batch.

``load_image(source, model=m)`` makes the batch the way ``m`` expects (``m.preprocessing``: size, crop, mean,
std); contributions at ``"input"`` are then contributions of normalised pixels. Decompose with
``reference="raw"`` to express them in raw pixels while the model gets normalised ones.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from .preprocessing import IMAGENET, Preprocessing, PreprocessingWarning, outside_stacklevel, preprocessing_of

MAX_PIXELS = 64_000_000  # refuse larger images (decompression bombs); a 8000 x 8000 photo still loads

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray | torch.Tensor


class ImageLoadError(ValueError):
    """The input is not an image we can use; the message says why and what to do."""


class ImageWarning(UserWarning):
    """Information was dropped while converting an image to RGB."""


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    what = "the uploaded data" if isinstance(source, bytes) else f"{os.fspath(source)!r}"
    if isinstance(source, bytes):
        if not source:
            raise ImageLoadError("the data is empty (0 bytes): give the bytes of an image file (PNG, JPEG, ...)")
    else:
        path = os.path.expanduser(os.fspath(source))
        source = path
        if isinstance(path, str) and path.startswith(("http://", "https://")):
            raise ImageLoadError(f"{what} is a URL: images are not downloaded here; save it and give the file's "
                                 "path, or its bytes")
        if os.path.isdir(path):
            raise ImageLoadError(f"{what} is a directory, not an image file: give the path of one image in it")
        if not os.path.exists(path):
            raise ImageLoadError(f"no file at {what}: check the path (relative paths start at {os.getcwd()!r})")
        if os.path.getsize(path) == 0:
            raise ImageLoadError(f"{what} is empty (0 bytes): give an image file (PNG, JPEG, ...)")
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"{what} is too large to load safely ({exc}); resize it below "
                             f"{MAX_PIXELS // 1_000_000} megapixels first") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{what} is not an image format Pillow can read (PNG, JPEG, ...)") from exc
    except PermissionError as exc:
        raise ImageLoadError(f"{what} cannot be read: permission denied ({exc})") from exc
    except Exception as exc:  # OSError, SyntaxError, ValueError...: Pillow's ways of saying "damaged"
        raise ImageLoadError(f"{what} could not be decoded, the file may be truncated or corrupt ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    return image


def _range_text(arr: np.ndarray) -> str:
    return f"[{float(arr.min()):.6g}, {float(arr.max()):.6g}]"


def _from_16bit(values: np.ndarray, what: str, stacklevel: int) -> np.ndarray:
    """uint8 pixels from 16-bit values: the type's range 0..65535 maps to 0..255 (no stretching)."""
    note = ""
    if values.max() <= 255:
        note = ("; all values are <= 255: if these are 8-bit pixels in a 16-bit container, convert them to "
                "uint8 first, else the image comes out nearly black")
    warnings.warn(f"{what}: scaled from 0..65535 to 8 bits per channel{note}", ImageWarning, stacklevel=stacklevel)
    return np.round(values.astype(np.float64) * (255 / 65535)).astype(np.uint8)


def _from_unit_floats(values: np.ndarray, what: str) -> np.ndarray:
    """uint8 pixels from floats that must lie in [0, 1]."""
    arr = values.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ImageLoadError(f"{what} holds NaN or infinite values: replace them (e.g. np.nan_to_num) first")
    if arr.min() < 0 or arr.max() > 1:
        raise ImageLoadError(f"{what}: float values must lie in [0, 1], got {_range_text(arr)}; divide by 255 "
                             "(8-bit values) or 65535 (16-bit values) first")
    return np.round(arr * 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Orientation from EXIF, then RGB; warns (``ImageWarning``) wherever information is dropped.

    16-bit images (modes ``I;16*``, and ``I`` with values in 0..65535) are scaled by the type's range,
    ``/ 65535``; float images (mode ``F``) must lie in [0, 1]. Other ranges raise :class:`ImageLoadError`.
    """
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        warnings.warn(f"{mode} image: alpha channel dropped (composited on white)", ImageWarning, stacklevel=3)
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image)
        if mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise ImageLoadError(f"32-bit integer image (mode I) with values in {_range_text(values)}: not 16-bit "
                                 "pixels, so its scale is unknown; convert it to 8 or 16 bits yourself first")
        grey = _from_16bit(values, f"{mode} image (16-bit grey-scale), replicated to RGB", stacklevel=4)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        grey = _from_unit_floats(np.asarray(image), "float image (mode F)")
        warnings.warn("F image (32-bit float grey-scale): scaled from [0, 1] to 8 bits, replicated to RGB",
                      ImageWarning, stacklevel=3)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("L", "1"):
        warnings.warn("grayscale image: replicated to three channels", ImageWarning, stacklevel=3)
    elif mode == "CMYK":
        warnings.warn("CMYK image: converted to RGB, colours are approximate", ImageWarning, stacklevel=3)
    elif mode != "P":
        warnings.warn(f"{mode} image: converted to RGB", ImageWarning, stacklevel=3)
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageLoadError(f"{mode} image: Pillow cannot convert it to RGB ({exc}); save it as RGB first") from exc


def _array_to_pil(array: np.ndarray) -> Image.Image:
    shape = tuple(array.shape)
    if array.size == 0:
        raise ImageLoadError(f"empty array of shape {shape}: there are no pixels to load")
    if array.ndim not in (2, 3):
        hint = "; for a batch, pass one image (batch[0])" if array.ndim == 4 else ""
        raise ImageLoadError(f"array of shape {shape} is not an image: expected H x W, H x W x C or C x H x W "
                             f"with C = 1, 3 or 4{hint}")
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] not in (3, 4):
        raise ImageLoadError(f"array of shape {shape} is not an image: expected H x W, H x W x C or C x H x W "
                             "with C = 1, 3 or 4")
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == bool:
        data = array.astype(np.uint8) * 255  # a mask: False black, True white
    elif array.dtype == np.uint16:
        grey = array.ndim == 2
        data = _from_16bit(array, "16-bit grey-scale array, replicated to RGB" if grey else "16-bit array",
                           stacklevel=4)
        data = np.stack([data] * 3, axis=-1) if grey else data
    elif np.issubdtype(array.dtype, np.floating):
        data = _from_unit_floats(array, "image array")
    else:
        raise ImageLoadError(f"unsupported array dtype {array.dtype}: use uint8 (0..255: array.astype(np.uint8) "
                             "if the values fit), uint16 (0..65535), bool, or floats in [0, 1]")
    return Image.fromarray(np.ascontiguousarray(data))


def as_pil(source: ImageSource) -> Image.Image:
    """Any supported source as an RGB PIL image (warnings for dropped information, clear errors else)."""
    if source is None:
        raise ImageLoadError("no image given (None): pass a path, bytes, a PIL image, a numpy array or a tensor")
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, torch.Tensor):
        tensor = source.detach().cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()  # numpy has no bfloat16
        image = _array_to_pil(tensor.numpy())
    elif isinstance(source, np.ndarray):
        image = _array_to_pil(source)
    elif isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        image = _open(bytes(source) if isinstance(source, (bytearray, memoryview)) else source)
    else:
        raise ImageLoadError(f"cannot load an image from {type(source).__name__}: give a path, bytes, a PIL "
                             "image, a numpy array or a tensor")
    if image.width * image.height > MAX_PIXELS:
        raise ImageLoadError(f"image of {image.width} x {image.height} pixels is too large; resize it below "
                             f"{MAX_PIXELS // 1_000_000} megapixels first")
    if min(image.size) < 1:
        raise ImageLoadError(f"empty image ({image.width} x {image.height} pixels)")
    return to_rgb(image)


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer (pixels), got {value!r}")
    return int(value)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``size``, as torchvision's ``resize`` computes it."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize_shorter_side(tensor: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """``(C, H, W)`` resized so that its shorter side is ``size``, as torchvision's ``resize`` does it (torch's
    ``interpolate``, antialiased unless ``"nearest"``). Written on torch alone so that loading an image does not
    import torchvision, which pulls in PyTorch's compiler stack (about 170 MB of memory)."""
    height, width = tensor.shape[-2:]
    new_width, new_height = resized_size(width, height, size)
    if (new_height, new_width) == (height, width):
        return tensor
    smooth = interpolation != "nearest"
    resized = F.interpolate(tensor[None], size=[new_height, new_width], mode=interpolation,
                            align_corners=False if smooth else None, antialias=smooth)
    return resized[0]


def center_crop(tensor: torch.Tensor, crop: int) -> torch.Tensor:
    """The central ``crop`` x ``crop`` of ``(..., H, W)`` (no larger than it), placed as torchvision places it."""
    height, width = tensor.shape[-2:]
    if crop > min(height, width):
        raise ValueError(f"a centre crop of {crop} px does not fit in {height} x {width} px")
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return tensor[..., top:top + crop, left:left + crop]


DEFAULT = "default"  # crop=DEFAULT: the model's crop (ImageNet's 224 without a model)


def load_image(
    source: ImageSource,
    size: int | None = None,
    crop: int | None | str = DEFAULT,
    normalize: bool = True,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    *,
    model: nn.Module | None = None,
) -> torch.Tensor:
    """A ``(1, 3, H, W)`` float32 batch made the way ``model`` expects: RGB, shorter side resized, centre-cropped,
    normalised, all as ``model.preprocessing`` says (:class:`~pwawidgets.Preprocessing`; every model of
    :func:`pwawidgets.load_model` carries one). Without a model: torchvision's ImageNet default (resize 256, crop
    224, ImageNet mean and std).

    ``size``, ``crop`` (None: no crop), ``normalization=(mean, std)`` and ``normalize=False`` (raw pixels in [0, 1])
    override the model's values; a normalisation other than the model's gives a
    :class:`~pwawidgets.preprocessing.PreprocessingWarning` naming both. The batch records what it was made with
    as ``x.preprocessing`` (a :class:`~pwawidgets.Preprocessing`; operations that make a new tensor, such as
    ``x.double()``, drop it); the library warns when such a batch is given to a model that normalises otherwise.
    Use :func:`display_image` to get the pixels back.

    Raises:
        ImageLoadError: the source is not a usable image, or resizing it would make it too large (an extreme
            aspect ratio); the message says what to do.
        ValueError: ``size`` or ``crop`` is not a positive integer, ``crop > size`` (it would pad with black), a
            bad ``normalization``, or a ``model`` without a 3-channel preprocessing.
    """
    return load_with(source, resolve_preprocessing(model, size, crop, normalize, normalization))


def load_with(source: ImageSource, prep: Preprocessing) -> torch.Tensor:
    """:func:`load_image` with its preprocessing already decided: ``prep`` applied as it is (3 channels)."""
    if len(prep.mean) != 3:
        raise ValueError(f"the preprocessing has {len(prep.mean)} channel(s); images are loaded as RGB (3)")
    image = as_pil(source)
    width, height = resized_size(image.width, image.height, prep.size)
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"image of {image.width} x {image.height} pixels would become {width} x {height} "
            f"({width * height / 1e6:.0f} megapixels) with its shorter side resized to {prep.size}: its aspect ratio "
            "is too extreme; crop it first (e.g. to the region of interest) or pass a smaller size"
        )
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)  # (3, H, W), channels last
    tensor = resize_shorter_side(pixels.to(torch.float32).mul_(1 / 255), prep.size, prep.interpolation)
    if prep.crop is not None:
        tensor = center_crop(tensor, prep.crop)
    tensor = tensor.clamp(0, 1)
    if not prep.raw:
        tensor = (tensor - torch.tensor(prep.mean)[:, None, None]) / torch.tensor(prep.std)[:, None, None]
    batch = tensor.unsqueeze(0).as_subclass(torch.Tensor)
    batch.preprocessing = prep
    return batch


def resolve_preprocessing(
    model: nn.Module | None = None,
    size: int | None = None,
    crop: int | None | str = DEFAULT,
    normalize: bool = True,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Preprocessing:
    """What :func:`load_image` applies: the model's preprocessing (ImageNet's without a model) with the explicit
    arguments put over it, all checked before any image is read; a normalisation other than the model's warns."""
    if model is None:
        base = IMAGENET
    else:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch nn.Module (e.g. pw.load_model('mini_vgg')), got "
                            f"{type(model).__name__}")
        base = preprocessing_of(model)
        if base is None:
            raise ValueError(f"model ({type(model).__name__}) carries no preprocessing: set model.preprocessing = "
                             "pwawidgets.Preprocessing(size, crop, mean, std), or call load_image without model= "
                             "and give size, crop and normalization")
    given = []
    if size is not None:
        size = _positive_int(size, "size")
        given.append(f"size={size}")
    size = base.size if size is None else size
    if isinstance(crop, str):
        if crop != DEFAULT:
            raise ValueError(f"crop must be a positive integer (pixels), None (no crop) or {DEFAULT!r}, got {crop!r}")
        crop = base.crop
        if crop is not None and crop > size:
            raise ValueError(f"size={size} is smaller than the crop {crop} of {base.name or 'the preprocessing'}: "
                             f"give crop too (e.g. crop={size}, or crop=None for no crop)")
    else:
        crop = None if crop is None else _positive_int(crop, "crop")
        given.append(f"crop={crop}")
    if crop is not None and crop > size:
        raise ValueError(f"crop={crop} is larger than size={size}: the crop would be padded with black; "
                         f"use crop <= size (e.g. size={crop})")
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    mean, std = base.normalization
    if not normalize:
        mean, std = (0.0,) * 3, (1.0,) * 3
        given.append("normalize=False")
    elif normalization is not None:
        mean, std = _check_normalization(normalization)
        given.append("normalization")
    name = base.name + (f"; given to load_image: {', '.join(given)}" if given else "")
    prep = Preprocessing(size, crop, mean, std, base.interpolation, name)
    if model is not None and not prep.same_normalization(base):
        warnings.warn(f"load_image: the normalisation given ({'raw pixels' if not normalize else 'normalization='}"
                      f" mean {mean}, std {std}) is not the model's: {base.describe()}; the model expects its own "
                      "(leave normalize and normalization out)", PreprocessingWarning,
                      stacklevel=outside_stacklevel())
    return prep


def _check_normalization(normalization) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        mean, std = (tuple(float(v) for v in part) for part in normalization)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"normalization must be (mean, std) with one value per channel, e.g. "
                         f"pwawidgets.IMAGENET_NORMALIZATION or model.preprocessing.normalization; got "
                         f"{normalization!r}") from exc
    if len(mean) != 3 or len(std) != 3 or not all(v > 0 for v in std):
        raise ValueError(f"normalization must hold 3 means and 3 positive stds (RGB); got {normalization!r}")
    return mean, std


def display_image(
    inputs: torch.Tensor,
    normalized: bool = True,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    *,
    model: nn.Module | None = None,
) -> np.ndarray:
    """The first image of model inputs ``(B, 3, H, W)`` (or one image ``(3, H, W)``) as ``H x W x 3`` floats in [0, 1]
    for plotting: the normalisation undone, taken from ``normalization``, else ``model``'s preprocessing, else
    what :func:`load_image` recorded on the batch, else ImageNet's. ``normalized=False``: raw pixels as they are."""
    if not isinstance(inputs, torch.Tensor) or inputs.dim() not in (3, 4) or inputs.shape[-3] != 3:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ValueError(f"display_image takes a (B, 3, H, W) batch or a (3, H, W) image, got {shape}")
    image = (inputs[0] if inputs.dim() == 4 else inputs).detach().cpu().double()
    if normalized:
        if normalization is None:
            found = preprocessing_of(model) if model is not None else getattr(inputs, "preprocessing", None)
            normalization = (found or IMAGENET).normalization
        normalization = _check_normalization(normalization)
        mean = torch.tensor(normalization[0], dtype=torch.float64).view(-1, 1, 1)
        std = torch.tensor(normalization[1], dtype=torch.float64).view(-1, 1, 1)
        image = image * std + mean
    return image.clamp(0, 1).permute(1, 2, 0).numpy()
