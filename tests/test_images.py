"""load_image(): every kind of input, and a clear warning or error for each bad one."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import pwawidgets as pw
from pwawidgets import images


def _png(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _photo(w: int = 40, h: int = 30) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_rgb_path_array_tensor_and_pil_agree(tmp_path):
    photo = _photo()
    path = tmp_path / "photo.png"
    photo.save(path)
    from_path = pw.load_image(path, size=32, crop=32)
    assert from_path.shape == (1, 3, 32, 32) and from_path.dtype == torch.float32
    for source in (str(path), photo, np.asarray(photo), np.asarray(photo) / 255.0, path.read_bytes(),
                   torch.from_numpy(np.asarray(photo) / 255.0).permute(2, 0, 1)):
        torch.testing.assert_close(pw.load_image(source, size=32, crop=32), from_path, atol=1e-6, rtol=0)


def test_normalisation_round_trip():
    arr = np.full((20, 20, 3), 128, dtype=np.uint8)
    raw = pw.load_image(arr, size=20, crop=None, normalize=False)
    assert torch.allclose(raw, torch.full_like(raw, 128 / 255))
    normed = pw.load_image(arr, size=20, crop=None)
    mean, std = pw.IMAGENET_NORMALIZATION
    assert normed[0, 0, 0, 0].item() == pytest.approx((128 / 255 - mean[0]) / std[0], abs=1e-6)
    np.testing.assert_allclose(pw.display_image(normed), 128 / 255, atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "pattern"),
    [("RGBA", "alpha channel dropped"), ("LA", "alpha channel dropped"), ("L", "grayscale"),
     ("CMYK", "CMYK"), ("I;16", "16-bit")],
)
def test_conversions_warn(mode, pattern):
    image = _photo().convert(mode) if mode != "I;16" else Image.fromarray(
        (np.arange(600).reshape(20, 30) * 100).astype(np.uint16))
    data = _png(image, "JPEG" if mode == "CMYK" else "PNG")
    with pytest.warns(pw.ImageWarning, match=pattern):
        out = pw.load_image(data, size=16, crop=16)
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()


def test_palette_with_transparency_warns():
    image = _photo().convert("P")
    image.info["transparency"] = 0
    with pytest.warns(pw.ImageWarning, match="alpha"):
        pw.load_image(_png(image, transparency=0), size=16, crop=16)


def test_exif_orientation_is_applied():
    image = _photo(40, 20)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated = images.as_pil(_png(image, "JPEG", exif=exif.tobytes()))
    assert rotated.size == (20, 40)


def test_not_an_image_truncated_and_bomb(tmp_path, monkeypatch):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(pw.ImageLoadError, match="not an image"):
        pw.load_image(text)
    jpeg = _png(_photo(200, 200), "JPEG")
    with pytest.raises(pw.ImageLoadError, match="truncated"):
        pw.load_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(pw.ImageLoadError, match="no file"):
        pw.load_image(tmp_path / "missing.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(pw.ImageLoadError, match="too large"):
        pw.load_image(_png(_photo(100, 100)))
    with pytest.raises(pw.ImageLoadError, match="too large"):
        pw.load_image(np.zeros((100, 100, 3), dtype=np.uint8))


def test_bad_arrays_and_types():
    with pytest.raises(pw.ImageLoadError, match=r"\[0, 1\]"):
        pw.load_image(np.full((8, 8, 3), 200.0))
    with pytest.raises(pw.ImageLoadError, match="not an image"):
        pw.load_image(np.zeros((5,)))
    with pytest.raises(pw.ImageLoadError, match="NaN"):
        pw.load_image(np.full((8, 8, 3), np.nan))
    with pytest.raises(pw.ImageLoadError, match="cannot load an image from int"):
        pw.load_image(42)
    with pytest.warns(pw.ImageWarning, match="alpha"):
        pw.load_image(np.zeros((8, 8, 4), dtype=np.uint8), size=8, crop=8)
