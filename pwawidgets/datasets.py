"""Image sets for the experiments: any folder of images, Pascal VOC on disk, the bundled photos, generated shapes.

An :class:`ImageSet` holds names and a loader; images are read when a batch is asked for, so a large folder does
not sit in memory. Every draw of ``n`` images is seeded (:func:`draw`): the same seed gives the same images.

- :func:`folder`: a flat folder of images, or an ImageNet-style tree (one sub-folder per class); every file with an
  image suffix below the root, in sorted path order;
- :func:`voc`: Pascal VOC through ``torchvision.datasets.VOCSegmentation(root, download=False)``; its
  segmentation masks give the object masks of the pointing game (every labelled object, class-agnostic: VOC's
  20 classes are not ImageNet's; the void border 255 is left out);
- :func:`bundled_photos`: the real photos shipped inside installed packages (:data:`pwawidgets.data.PHOTOS`),
  offline;
- :func:`generated_shapes`: :func:`pwawidgets.data.shapes` (64 x 64, raw pixels in [0, 1], exact masks).

Images go through :func:`pwawidgets.load_image` made the way ``model`` expects (its ``preprocessing``: resize, centre
crop, mean and std; ImageNet's default without a model; ``size``, ``crop`` and ``normalization`` override it); VOC
masks get the same resize (nearest) and crop. Batches keep the record of the preprocessing (``x.preprocessing``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import PIL.Image
import torch
from torch import nn

from . import data
from .images import DEFAULT, ImageWarning, center_crop, load_with, resize_shorter_side, resolve_preprocessing

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
BUNDLED, SHAPES = "bundled", "shapes"
T = TypeVar("T")
Normalization = tuple[Sequence[float], Sequence[float]]
Crop = int | None | str
Item = tuple[torch.Tensor, torch.Tensor | None]

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "bundled_photos", "draw", "folder", "generated_shapes", "image_files",
           "open_images", "voc", "voc_root"]


@dataclass
class ImageSet:
    """Named images loaded on demand: ``load(i)`` gives a ``(1, 3, H, W)`` tensor and a ``(1, H, W)`` bool object
    mask or None."""

    names: list[str]
    load: Callable[[int], Item]
    description: str
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.names)

    def batches(self, batch_size: int) -> Iterator[Item]:
        """``(images, masks)`` batches in order (masks None when the set has none)."""
        for start in range(0, len(self), batch_size):
            items = [self.load(i) for i in range(start, min(start + batch_size, len(self)))]
            masks = [m for _, m in items]
            yield (_joined([x for x, _ in items]), None if any(m is None for m in masks) else torch.cat(masks))

    def tensor(self) -> torch.Tensor:
        """Every image in one ``(N, 3, H, W)`` tensor (for small sets)."""
        return _joined([self.load(i)[0] for i in range(len(self))])


def _joined(images: list[torch.Tensor]) -> torch.Tensor:
    """The images in one batch, which keeps their preprocessing record when they share one."""
    batch = torch.cat(images)
    made = {getattr(x, "preprocessing", None) for x in images}
    if len(made) == 1 and None not in made:
        batch.preprocessing = made.pop()
    return batch


def draw(items: Sequence[T], n: int | None, seed: int) -> list[T]:
    """``n`` of ``items`` drawn without replacement by a generator seeded with ``seed``, kept in their original
    order; all of them when ``n`` is None or not smaller than ``len(items)``."""
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ValueError(f"the number of images must be at least 1, got {n}")
    picked = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:n]
    return [items[i] for i in sorted(picked.tolist())]


def image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file below ``root`` (a flat folder or one sub-folder per class), sorted; hidden files skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder at {str(root)!r}: give a folder of images (flat, or one sub-folder per "
                                "class)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) below {str(root)!r}")
    return files


class _Loading:
    """How every image of a set is loaded: the preprocessing decided once (checked before any image is read)."""

    def __init__(self, model: nn.Module | None, size: int | None, crop: Crop, normalization: Normalization | None):
        self.prep = resolve_preprocessing(model, size, crop, True, normalization)

    def __call__(self, source) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImageWarning)  # grey-scale or RGBA files: converted to RGB, as expected
            return load_with(source, self.prep)


def readable(path: Path) -> bool:
    """Whether Pillow can read the file's header (a cheap check, without decoding the pixels)."""
    try:
        with PIL.Image.open(path) as image:
            image.verify()
        return True
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError):
        return False


def _readable_draw(files: list[Path], n: int | None, seed: int) -> list[Path]:
    """``draw(files, n, seed)`` over the readable files: each unreadable one drawn is replaced by the next file of
    the same seeded order, with one warning naming them all (a large folder is not opened file by file)."""
    if n is not None and n < 1:
        raise ValueError(f"the number of images must be at least 1, got {n}")
    order = list(files)
    if n is not None and n < len(files):  # the seeded order of the whole folder; its first n are draw(files, n)
        perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
        order = [files[i] for i in perm]
    picked, skipped = [], []
    for path in order:
        if n is not None and len(picked) == n:
            break
        (picked if readable(path) else skipped).append(path)
    if skipped:
        warnings.warn(f"{len(skipped)} file(s) Pillow cannot read were skipped: "
                      f"{', '.join(p.name for p in skipped[:5])}{' ...' if len(skipped) > 5 else ''}", ImageWarning,
                      stacklevel=3)
    if not picked:
        raise ValueError("none of the image files could be read")
    return sorted(picked)


def folder(root: str | os.PathLike, n: int | None = None, seed: int = 0, size: int | None = None, crop: Crop = DEFAULT,
           normalization: Normalization | None = None, *, model: nn.Module | None = None) -> ImageSet:
    """``n`` images drawn from a folder (seeded), loaded for ``model``; names are paths relative to ``root``. Files
    Pillow cannot read are skipped with a warning (and replaced, so that ``n`` images are drawn when the folder has
    them)."""
    root = Path(root)
    loading = _Loading(model, size, crop, normalization)
    files = _readable_draw(image_files(root), n, seed)
    return ImageSet([str(p.relative_to(root)) for p in files], lambda i: (loading(files[i]), None),
                    f"{len(files)} images from {root}", seed)


def voc_root(path: str | os.PathLike, year: str = "2012") -> Path | None:
    """The folder ``VOCSegmentation`` wants as ``root`` (the one holding ``VOCdevkit/VOC<year>``), found from that
    folder, ``VOCdevkit`` or ``VOC<year>`` itself; None when ``path`` holds no VOC."""
    path = Path(path).resolve()
    root = {"VOCdevkit": path.parent, f"VOC{year}": path.parent.parent}.get(path.name, path)
    return root if (root / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Segmentation").is_dir() else None


def _mask(target, size: int, crop: int | None) -> torch.Tensor:
    labels = torch.from_numpy(np.asarray(target, dtype=np.uint8).copy())[None]
    labels = resize_shorter_side(labels, size, "nearest")
    if crop is not None:
        labels = center_crop(labels, crop)
    return (labels > 0) & (labels < 255)


def voc(root: str | os.PathLike, n: int | None = None, seed: int = 0, year: str = "2012", image_set: str = "val",
        size: int | None = None, crop: Crop = DEFAULT, normalization: Normalization | None = None, *,
        model: nn.Module | None = None) -> ImageSet:
    """``n`` Pascal VOC images drawn from ``image_set`` (seeded), loaded for ``model``, with their object masks;
    nothing is downloaded."""
    from torchvision.datasets import VOCSegmentation

    found = voc_root(root, year)
    if found is None:
        raise FileNotFoundError(f"no Pascal VOC {year} under {str(root)!r} (expected VOCdevkit/VOC{year}/...); it "
                                "is never downloaded here")
    loading = _Loading(model, size, crop, normalization)
    dataset = VOCSegmentation(str(found), year=year, image_set=image_set, download=False)
    picked = draw(range(len(dataset)), n, seed)

    def load(i: int) -> Item:
        image, target = dataset[picked[i]]
        return loading(image), _mask(target, loading.prep.size, loading.prep.crop)

    names = [Path(dataset.images[j]).stem for j in picked]
    return ImageSet(names, load, f"{len(picked)} Pascal VOC {year} {image_set} images", seed)


def bundled_photos(names: Sequence[str] | None = None, size: int | None = None, crop: Crop = DEFAULT,
                   normalization: Normalization | None = None, *, model: nn.Module | None = None) -> ImageSet:
    """The photos shipped inside installed packages (default: all of :data:`pwawidgets.data.PHOTOS`), loaded for
    ``model``, offline."""
    names = list(data.PHOTOS if names is None else names)
    loading = _Loading(model, size, crop, normalization)
    return ImageSet(names, lambda i: (loading(data.sample_photo(names[i])), None),
                    f"{len(names)} photos shipped with installed packages")


def generated_shapes(n: int, seed: int = 0) -> ImageSet:
    """``n`` generated 64 x 64 shape images (raw pixels in [0, 1]) with their exact object masks."""
    images, labels, masks = data.shapes(n, seed)
    names = [f"{i}:{data.SHAPE_CLASSES[int(c)]}" for i, c in enumerate(labels)]
    return ImageSet(names, lambda i: (images[i:i + 1], masks[i:i + 1]), f"{n} generated shapes (seed {seed})", seed)


def open_images(spec: str | os.PathLike, n: int | None = None, seed: int = 0, size: int | None = None,
                crop: Crop = DEFAULT, normalization: Normalization | None = None, *,
                model: nn.Module | None = None) -> ImageSet:
    """An image set from a command-line word: ``"bundled"`` (the shipped photos), ``"shapes"`` (``n`` generated
    images, default 100), a Pascal VOC folder, or any folder of images; loaded for ``model``."""
    loading = {"size": size, "crop": crop, "normalization": normalization, "model": model}
    if str(spec) == BUNDLED:
        photos = bundled_photos(**loading)
        keep = draw(photos.names, n, seed)
        return bundled_photos(keep, **loading) if len(keep) < len(photos) else photos
    if str(spec) == SHAPES:
        return generated_shapes(100 if n is None else n, seed)
    if voc_root(spec) is not None:
        return voc(spec, n, seed, **loading)
    return folder(spec, n, seed, **loading)
