"""Generated shapes and the sample photos."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pwawidgets import data
from pwawidgets.data import CHUNK_SIZE, IMAGE_SIZE, SAMPLE_PHOTOS, SHAPE_CLASSES, sample_photo, shapes


@pytest.fixture(scope="module")
def batch() -> data.ShapesBatch:
    return shapes(600, seed=7)


def test_classes() -> None:
    assert isinstance(SHAPE_CLASSES, tuple) and len(SHAPE_CLASSES) >= 6
    assert len(set(SHAPE_CLASSES)) == len(SHAPE_CLASSES)
    assert all(isinstance(c, str) and c for c in SHAPE_CLASSES)


def test_shapes_dtypes_and_ranges(batch: data.ShapesBatch) -> None:
    images, labels, masks = batch
    assert images.shape == (600, 3, IMAGE_SIZE, IMAGE_SIZE) and images.dtype == torch.float32
    assert labels.shape == (600,) and labels.dtype == torch.int64
    assert masks.shape == (600, IMAGE_SIZE, IMAGE_SIZE) and masks.dtype == torch.bool
    assert images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.1  # textured, not flat
    assert labels.min() >= 0 and labels.max() < len(SHAPE_CLASSES)


def test_empty_and_invalid_arguments() -> None:
    images, labels, masks = shapes(0)
    assert images.shape == (0, 3, IMAGE_SIZE, IMAGE_SIZE) and labels.shape == (0,) and masks.shape[0] == 0
    with pytest.raises(ValueError, match="non-negative"):
        shapes(-1)
    with pytest.raises(ValueError, match="seed"):
        shapes(3, seed=-2)


def test_same_seed_same_images_different_seed_different() -> None:
    a, b, c = shapes(20, seed=3), shapes(20, seed=3), shapes(20, seed=4)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.masks, c.masks)


def test_prefix_invariance_across_chunks() -> None:
    """Chunk k depends only on (seed, k): shapes(n)[:k] == shapes(k), also across a chunk boundary."""
    big = shapes(CHUNK_SIZE + 30, seed=11)
    for k in (5, CHUNK_SIZE, CHUNK_SIZE + 7):
        small = shapes(k, seed=11)
        for x, y in zip(small, big, strict=True):
            assert torch.equal(x, y[:k])


def test_thread_count_does_not_change_images() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = shapes(40, seed=5)
        torch.set_num_threads(max(2, threads))
        two = shapes(40, seed=5)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.images, two.images) and torch.equal(one.masks, two.masks)


def test_masks_non_empty_and_inside_the_image(batch: data.ShapesBatch) -> None:
    area = batch.masks.sum((1, 2))
    assert area.min() >= 50  # the smallest object is a 9-pixel-radius star
    assert area.max() < IMAGE_SIZE * IMAGE_SIZE / 2
    border = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    border[:2], border[-2:], border[:, :2], border[:, -2:] = True, True, True, True
    assert not (batch.masks & border).any()  # whole object with a margin


def test_each_class_appears_balanced(batch: data.ShapesBatch) -> None:
    counts = torch.bincount(batch.labels, minlength=len(SHAPE_CLASSES))
    assert (counts > 0).all()
    expected = len(batch.labels) / len(SHAPE_CLASSES)
    assert (counts - expected).abs().max() <= 0.2 * expected
    full_chunk = torch.bincount(batch.labels[:CHUNK_SIZE], minlength=len(SHAPE_CLASSES))
    assert (full_chunk == CHUNK_SIZE // len(SHAPE_CLASSES)).all()  # exactly balanced within a chunk


def test_object_is_one_colour_and_stands_out(batch: data.ShapesBatch) -> None:
    images, _, masks = batch
    m = masks.float()[:, None]
    fg = (images * m).sum((2, 3)) / m.sum((2, 3))
    spread = (((images - fg[:, :, None, None]) ** 2 * m).sum((2, 3)) / m.sum((2, 3))).sqrt()
    assert spread.max() < 0.12  # flat colour + mild shading + pixel noise: the mask is the drawn object
    ring = F.max_pool2d(m, 9, 1, 4) - m  # background just around the object
    bg = (images * ring).sum((2, 3)) / ring.sum((2, 3))
    distance = (fg - bg).norm(dim=1)
    assert distance.min() > 0.3
    assert distance.quantile(0.05) > 0.4


def test_classes_differ_in_shape(batch: data.ShapesBatch) -> None:
    """Masks of one class have a consistent fill ratio (area / bounding-circle area), distinct per class."""
    masks, labels = batch.masks, batch.labels
    ys, xs = torch.meshgrid(torch.arange(IMAGE_SIZE), torch.arange(IMAGE_SIZE), indexing="ij")
    ratios = []
    for mask in masks:
        pts = torch.stack([ys[mask], xs[mask]], 1).float() + 0.5
        radius = (pts - pts.mean(0)).norm(dim=1).max()
        ratios.append(mask.sum() / (np.pi * radius**2))
    ratios = torch.stack(ratios)
    medians = torch.stack([ratios[labels == k].median() for k in range(len(SHAPE_CLASSES))])
    fill = dict(zip(SHAPE_CLASSES, medians.tolist(), strict=True))
    # geometry: circle 1, ring 0.7, square 2/pi, cross 0.6, triangle 0.41, star 0.37 (pixelisation blurs it)
    assert fill["circle"] > 0.85
    assert 0.55 < fill["square"] < 0.75 and 0.5 < fill["cross"] < 0.72 and 0.6 < fill["ring"] < 0.8
    assert fill["triangle"] < 0.5 and fill["star"] < 0.5


@pytest.mark.parametrize("name", list(data.PHOTOS))
def test_every_photo_loads_as_rgb_uint8(name: str) -> None:
    image = sample_photo(name)
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 200
    assert image.std() > 10
    size = data.PHOTOS[name].description.rsplit("(", 1)[1].rstrip(")")  # "(H x W)" at the end
    assert size == f"{image.shape[0]} x {image.shape[1]}"


def test_photo_table_records_sources_and_predictions() -> None:
    packages = {"scikit-image": "skimage", "scikit-learn": "sklearn", "matplotlib": "matplotlib"}
    for name, photo in data.PHOTOS.items():
        assert photo.package in packages and photo.origin.startswith(packages[photo.package]), name
        assert data.SAMPLE_PHOTO_SOURCES[name].startswith(photo.package)
        cls, p = photo.lite0
        assert isinstance(cls, str) and 0 < p < 1
    assert set(data.SAMPLE_PHOTO_INFO) == set(data.SAMPLE_PHOTO_SOURCES) == set(data.PHOTOS)
    assert {p.package for p in data.PHOTOS.values()} == set(packages)  # a photo from each package


def test_sample_photo_names() -> None:
    assert {"chelsea", "coffee", "rocket", "motorcycle", "china"} <= set(SAMPLE_PHOTOS)
    assert set(SAMPLE_PHOTOS) < set(data.PHOTOS)
    # the names sample_photo always took keep working, offered as samples or not
    for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "clock"):
        assert name in data.PHOTOS
    assert "astronaut" not in SAMPLE_PHOTOS and "clock" not in SAMPLE_PHOTOS  # Lite0 misreads them


def test_legacy_grey_photo_is_stacked() -> None:
    clock = sample_photo("clock")
    assert np.array_equal(clock[..., 0], clock[..., 2])


def test_unknown_sample_photo_lists_names() -> None:
    with pytest.raises(ValueError) as info:
        sample_photo("lena")
    assert "lena" in str(info.value)
    assert all(name in str(info.value) for name in data.PHOTOS)


def _by_origin(name: str) -> np.ndarray:
    """The photo as its ``origin`` reads it: the package's own loader, stacked to RGB like sample_photo."""
    from matplotlib import cbook
    from PIL import Image
    from skimage import data as skdata
    from sklearn.datasets import load_sample_image

    loaders = {"motorcycle": lambda: skdata.stereo_motorcycle()[0],
               "china": lambda: load_sample_image("china.jpg"), "flower": lambda: load_sample_image("flower.jpg"),
               "grace_hopper": lambda: np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg",
                                                                                   asfileobj=False)).convert("RGB"))}
    image = loaders.get(name, lambda: getattr(skdata, name)())()
    return np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]


def test_photos_read_from_files_equal_the_packages_own_loaders() -> None:
    script = ("import sys\nfrom pwawidgets import data\n[data.sample_photo(n) for n in data.PHOTOS]\n"
              "print(sorted(m for m in ('sklearn', 'skimage', 'scipy', 'pandas') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"  # read without importing the packages (about 150 MB in a kernel)
    for name in data.PHOTOS:
        assert np.array_equal(sample_photo(name), _by_origin(name)), name


def test_a_missing_photo_file_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setitem(data.PHOTOS, "chelsea", data.PHOTOS["chelsea"]._replace(file="skimage/data/gone.png"))
    with pytest.raises(FileNotFoundError, match="gone.png is missing from the installed scikit-image; reinstall"):
        sample_photo("chelsea")
