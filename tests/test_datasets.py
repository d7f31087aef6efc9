"""Image sets: folders (flat and per class), a Pascal VOC tree written here, the bundled photos, seeded draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pwawidgets import data, datasets
from pwawidgets.images import ImageWarning
from pwawidgets.preprocessing import IMAGENET_NORMALIZATION


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_voc(root: Path, n: int = 4) -> None:
    """A tiny VOC2012 tree: 80 x 60 images whose mask is class 1 in the left half, void (255) on column 40."""
    voc = root / "VOCdevkit" / "VOC2012"
    names = [f"2007_00000{i}" for i in range(n)]
    for i, name in enumerate(names):
        write_image(voc / "JPEGImages" / f"{name}.jpg", (20 * i, 100, 200), (80, 60))
        labels = np.zeros((60, 80), np.uint8)
        labels[:, :40] = 1
        labels[:, 40] = 255
        mask = Image.fromarray(labels, mode="P")
        mask.putpalette([0, 0, 0, 128, 0, 0] + [224, 224, 192] * 254)
        (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        mask.save(voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names) + "\n")


def test_image_files_flat_and_per_class(tmp_path):
    write_image(tmp_path / "flat" / "b.png", (0, 0, 0))
    write_image(tmp_path / "flat" / "a.JPG", (0, 0, 0))
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "flat" / ".hidden" / "c.png", (0, 0, 0))
    assert [p.name for p in datasets.image_files(tmp_path / "flat")] == ["a.JPG", "b.png"]
    write_image(tmp_path / "tree" / "dog" / "1.png", (0, 0, 0))
    write_image(tmp_path / "tree" / "cat" / "2.png", (0, 0, 0))
    files = datasets.image_files(tmp_path / "tree")
    assert [str(p.relative_to(tmp_path / "tree")) for p in files] == ["cat/2.png", "dog/1.png"]
    with pytest.raises(FileNotFoundError, match="no folder"):
        datasets.image_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        datasets.image_files(tmp_path / "empty")


def test_draws_are_seeded_and_keep_the_order():
    items = list(range(100))
    a = datasets.draw(items, 10, seed=3)
    assert a == datasets.draw(items, 10, seed=3) and a == sorted(a) and len(set(a)) == 10
    assert a != datasets.draw(items, 10, seed=4)
    assert datasets.draw(items, None, 0) == items and datasets.draw(items, 500, 0) == items
    with pytest.raises(ValueError, match="at least 1"):
        datasets.draw(items, 0, 0)


def test_folder_loads_model_ready_batches(tmp_path):
    for i in range(5):
        write_image(tmp_path / f"class{i % 2}" / f"{i}.png", (255, 0, 0) if i == 0 else (0, 0, 0), (50, 40))
    images = datasets.folder(tmp_path, n=3, seed=1, size=32, crop=24, normalization=IMAGENET_NORMALIZATION)
    assert len(images) == 3 and images.seed == 1 and images.names == sorted(images.names)
    batches = list(images.batches(2))
    assert [b[0].shape for b in batches] == [(2, 3, 24, 24), (1, 3, 24, 24)] and batches[0][1] is None
    everything = datasets.folder(tmp_path, size=32, crop=24)
    assert everything.names[0] == "class0/0.png"
    mean, std = (torch.tensor(v) for v in IMAGENET_NORMALIZATION)
    red = (torch.tensor([1.0, 0, 0]) - mean) / std
    assert torch.allclose(everything.tensor()[0, :, 5, 5], red, atol=1e-5)


def test_unreadable_files_are_skipped_replaced_and_named(tmp_path):
    for i in range(6):
        write_image(tmp_path / f"{i}.png", (0, 0, 0), (20, 20))
    clean = datasets.folder(tmp_path, n=3, seed=5, size=16, crop=None)
    assert clean.names == [str(p) for p in datasets.draw([f"{i}.png" for i in range(6)], 3, 5)]
    (tmp_path / clean.names[0]).write_bytes(b"not an image")  # one drawn file breaks
    with pytest.warns(ImageWarning, match=f"1 file.*cannot read.*{clean.names[0]}"):
        redrawn = datasets.folder(tmp_path, n=3, seed=5, size=16, crop=None)
    assert len(redrawn) == 3 and clean.names[0] not in redrawn.names
    assert set(clean.names[1:]) <= set(redrawn.names)  # the rest of the draw is kept
    assert redrawn.tensor().shape == (3, 3, 16, 16)
    for i in range(6):
        (tmp_path / f"{i}.png").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the image files could be read"), pytest.warns(ImageWarning):
        datasets.folder(tmp_path, n=2)


def test_pascal_voc_with_object_masks(tmp_path):
    write_voc(tmp_path)
    for where in (tmp_path, tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        assert datasets.voc_root(where) == tmp_path.resolve()
    assert datasets.voc_root(tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages") is None
    (tmp_path / "photos").mkdir()
    assert datasets.voc_root(tmp_path / "photos") is None  # a folder beside a VOC tree is not VOC
    images = datasets.voc(tmp_path / "VOCdevkit", n=3, seed=0, size=60, crop=None)
    assert len(images) == 3 and images.description == "3 Pascal VOC 2012 val images"
    x, masks = next(images.batches(3))
    assert x.shape == (3, 3, 60, 80) and masks.shape == (3, 60, 80) and masks.dtype == torch.bool
    assert masks[:, :, :40].all() and not masks[:, :, 40:].any()  # class 1 inside, void 255 and background out
    cropped = datasets.voc(tmp_path, size=60, crop=40)
    x, masks = next(cropped.batches(4))
    assert x.shape == (4, 3, 40, 40) and masks[0, :, :20].all() and not masks[0, :, 20:].any()  # from column 20
    assert datasets.open_images(tmp_path, 2, seed=0, size=60, crop=40).description.startswith("2 Pascal VOC")
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        datasets.voc(tmp_path / "photos")


def test_bundled_photos_and_shapes():
    photos = datasets.open_images("bundled", n=3, seed=0, size=64, crop=48)
    assert len(photos) == 3 and set(photos.names) <= set(data.PHOTOS)
    assert photos.names == datasets.draw(list(data.PHOTOS), 3, 0)
    assert photos.tensor().shape == (3, 3, 48, 48)
    assert datasets.open_images("bundled", size=64, crop=48).names == list(data.PHOTOS)
    shapes = datasets.open_images("shapes", n=7, seed=2)
    x, masks = next(shapes.batches(10))
    expected = data.shapes(7, seed=2)
    assert torch.equal(x, expected.images) and torch.equal(masks, expected.masks)
    assert shapes.names[0] == f"0:{data.SHAPE_CLASSES[int(expected.labels[0])]}"
