"""Image loading: anything a user has (path, bytes, PIL image, array, tensor) to a model-ready batch.

Reference space: by default the tensor is normalised with the ImageNet mean and std, as torchvision's
classifiers expect; contributions at ``"input"`` are then contributions of normalised pixels. Pass
``normalize=False`` for raw pixels in [0, 1] (the mini zoo takes those), or decompose with
``reference="raw"`` to express contributions in raw pixels while the model gets normalised ones.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # (mean, std) of torchvision's classifiers
MAX_PIXELS = 64_000_000  # refuse larger images (decompression bombs); a 8000 x 8000 photo still loads

ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray | torch.Tensor


class ImageLoadError(ValueError):
    """The input is not an image we can use; the message says why and what to do."""


class ImageWarning(UserWarning):
    """Information was dropped while converting an image to RGB."""


def _open(source: str | os.PathLike | bytes) -> Image.Image:
    what = "the uploaded data" if isinstance(source, bytes) else f"{os.fspath(source)!r}"
    if not isinstance(source, bytes) and not os.path.exists(source):
        raise ImageLoadError(f"no file at {what}")
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
    except OSError as exc:
        raise ImageLoadError(f"{what} could not be decoded, the file may be truncated or corrupt ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Orientation from EXIF, then RGB; warns (``ImageWarning``) wherever information is dropped."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        warnings.warn(f"{mode} image: alpha channel dropped (composited on white)", ImageWarning, stacklevel=3)
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        warnings.warn(f"{mode} image (16-bit or float): scaled to 8 bits per channel and replicated to RGB",
                      ImageWarning, stacklevel=3)
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray((arr * 255).round().astype(np.uint8)).convert("RGB")
    if mode in ("L", "1"):
        warnings.warn("grayscale image: replicated to three channels", ImageWarning, stacklevel=3)
    elif mode == "CMYK":
        warnings.warn("CMYK image: converted to RGB, colours are approximate", ImageWarning, stacklevel=3)
    elif mode != "P":
        warnings.warn(f"{mode} image: converted to RGB", ImageWarning, stacklevel=3)
    return image.convert("RGB")


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(f"array of shape {array.shape} is not an image: expected H x W, H x W x 3 or 4")
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.uint16:
        return to_rgb(Image.fromarray(array.astype(np.int32), mode="I")) if array.ndim == 2 else \
            Image.fromarray((array // 257).astype(np.uint8))
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == bool:
        arr = array.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ImageLoadError("image array holds NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise ImageLoadError(f"float image values must lie in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]"
                                 "; divide by 255 if they are 8-bit values")
        data = (arr * 255).round().astype(np.uint8)
    else:
        raise ImageLoadError(f"unsupported array dtype {array.dtype}: use uint8 or floats in [0, 1]")
    return Image.fromarray(data)


def as_pil(source: ImageSource) -> Image.Image:
    """Any supported source as an RGB PIL image (warnings for dropped information, clear errors else)."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, torch.Tensor):
        image = _array_to_pil(source.detach().cpu().numpy())
    elif isinstance(source, np.ndarray):
        image = _array_to_pil(source)
    elif isinstance(source, (str, os.PathLike, bytes, bytearray)):
        image = _open(bytes(source) if isinstance(source, bytearray) else source)
    else:
        raise ImageLoadError(f"cannot load an image from {type(source).__name__}: give a path, bytes, a PIL "
                             "image, a numpy array or a tensor")
    if image.width * image.height > MAX_PIXELS:
        raise ImageLoadError(f"image of {image.width} x {image.height} pixels is too large; resize it first")
    if min(image.size) < 1:
        raise ImageLoadError("empty image")
    return to_rgb(image)


def load_image(
    source: ImageSource,
    size: int = 256,
    crop: int | None = 224,
    normalize: bool = True,
    normalization: tuple[Sequence[float], Sequence[float]] = IMAGENET_NORMALIZATION,
) -> torch.Tensor:
    """A ``(1, 3, crop, crop)`` float32 batch: RGB, resized (shorter side ``size``), centre-cropped.

    ``normalize=True`` (default) applies ``(x - mean) / std`` as torchvision's ImageNet classifiers expect;
    ``normalize=False`` keeps raw pixels in [0, 1]. Use :func:`display_image` to get the pixels back.
    """
    image = as_pil(source)
    tensor = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
    tensor = TF.resize(tensor, [size], antialias=True)
    if crop is not None:
        tensor = TF.center_crop(tensor, [crop, crop])
    tensor = tensor.clamp(0, 1)
    if normalize:
        tensor = TF.normalize(tensor, list(normalization[0]), list(normalization[1]))
    return tensor.unsqueeze(0).as_subclass(torch.Tensor)


def display_image(
    batch: torch.Tensor,
    normalized: bool = True,
    normalization: tuple[Sequence[float], Sequence[float]] = IMAGENET_NORMALIZATION,
) -> np.ndarray:
    """The first image of a batch as ``H x W x 3`` floats in [0, 1] for plotting (undoes normalisation)."""
    image = batch[0].detach().cpu().double()
    if normalized:
        mean = torch.tensor(normalization[0], dtype=torch.float64).view(-1, 1, 1)
        std = torch.tensor(normalization[1], dtype=torch.float64).view(-1, 1, 1)
        image = image * std + mean
    return image.clamp(0, 1).permute(1, 2, 0).numpy()
