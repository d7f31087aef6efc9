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


# --------------------------------------------------------------------------------------- 16-bit and float


def _white_png16() -> bytes:
    return _png(Image.fromarray(np.full((12, 10), 65535, dtype=np.uint16)))


def test_white_16bit_png_stays_white():
    assert Image.open(io.BytesIO(_white_png16())).mode.startswith("I;16")
    with pytest.warns(pw.ImageWarning, match="16-bit"):
        out = pw.load_image(_white_png16(), size=10, crop=10, normalize=False)
    assert torch.equal(out, torch.ones_like(out))


def test_16bit_is_scaled_by_the_type_range_not_stretched():
    grey = np.array([[0, 257 * 10], [257 * 128, 65535]], dtype=np.uint16)
    with pytest.warns(pw.ImageWarning, match="0..65535"):
        rgb = np.asarray(images.as_pil(Image.fromarray(grey)))
    np.testing.assert_array_equal(rgb[..., 0], [[0, 10], [128, 255]])
    with pytest.warns(pw.ImageWarning, match="0..65535"):  # uint16 arrays, grey and colour, the same way
        np.testing.assert_array_equal(np.asarray(images.as_pil(grey))[..., 1], rgb[..., 1])
    colour = np.stack([grey, grey // 2, np.full_like(grey, 65535)], axis=-1)
    with pytest.warns(pw.ImageWarning, match="0..65535"):
        out = np.asarray(images.as_pil(colour))
    np.testing.assert_array_equal(out[..., 0], rgb[..., 0])
    np.testing.assert_array_equal(out[..., 2], 255)


def test_16bit_holding_8bit_values_warns_that_it_will_be_dark():
    with pytest.warns(pw.ImageWarning, match="8-bit pixels in a 16-bit container"):
        images.as_pil(np.full((4, 4), 200, dtype=np.uint16))


def test_mode_i_and_f_images():
    ints = Image.fromarray(np.array([[0, 65535]], dtype=np.int32), mode="I")
    with pytest.warns(pw.ImageWarning, match="16-bit"):
        np.testing.assert_array_equal(np.asarray(images.as_pil(ints))[..., 0], [[0, 255]])
    with pytest.raises(pw.ImageLoadError, match=r"mode I.*\[-5, 70000\].*convert"):
        images.as_pil(Image.fromarray(np.array([[-5, 70000]], dtype=np.int32), mode="I"))
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    with pytest.warns(pw.ImageWarning, match="float"):
        np.testing.assert_array_equal(np.asarray(images.as_pil(floats))[..., 0], [[0, 128, 255]])
    with pytest.raises(pw.ImageLoadError, match=r"mode F.*\[0, 255\].*divide"):
        images.as_pil(Image.fromarray(np.array([[0.0, 255.0]], dtype=np.float32), mode="F"))
    with pytest.raises(pw.ImageLoadError, match="NaN"):
        images.as_pil(Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32), mode="F"))


# ------------------------------------------------------------------------------------------ size guards


def test_extreme_aspect_ratio_is_refused_before_resizing(monkeypatch):
    thin = np.zeros((2, 200_000, 3), dtype=np.uint8)  # 0.4 megapixels: passes the megapixel guard
    assert thin.shape[0] * thin.shape[1] < images.MAX_PIXELS

    def no_resize(*args, **kwargs):
        raise AssertionError("resize must not be reached")

    monkeypatch.setattr(images, "resize_shorter_side", no_resize)
    with pytest.raises(pw.ImageLoadError, match=r"200000 x 2 pixels would become 25600000 x 256.*crop it first"):
        pw.load_image(thin)
    assert images.resized_size(300, 451, 256) == (256, 384)  # torchvision's rounding (int)


def test_crop_larger_than_size_and_bad_sizes():
    photo = _photo()
    with pytest.raises(ValueError, match="crop=300 is larger than size=256.*black"):
        pw.load_image(photo, size=256, crop=300)
    with pytest.raises(ValueError, match="size=64 is smaller than the crop 224 of ImageNet default.*give crop too"):
        pw.load_image(photo, size=64)
    for bad in (0, -3, 2.5, True, "224"):
        with pytest.raises(ValueError, match="positive integer"):
            pw.load_image(photo, size=bad)
        with pytest.raises(ValueError, match="positive integer"):
            pw.load_image(photo, size=256, crop=bad)
    out = pw.load_image(photo, size=24, crop=24)  # crop == size is fine
    assert out.shape == (1, 3, 24, 24)


# ------------------------------------------------------------------------------------------ bad sources


@pytest.mark.parametrize(("source", "pattern"), [
    (np.zeros((3, 8, 8, 1), dtype=np.uint8), r"shape \(3, 8, 8, 1\).*batch\[0\]"),
    (np.zeros((1, 1, 3, 8, 8)), r"shape \(1, 1, 3, 8, 8\) is not an image"),
    (np.zeros((8, 8, 2), dtype=np.uint8), r"C = 1, 3 or 4"),
    (np.zeros((0, 0, 3), dtype=np.uint8), "empty array"),
    (np.zeros((0,)), "empty array"),
    (np.zeros((8, 8), dtype=np.int64), "unsupported array dtype int64.*astype"),
    (np.zeros((8, 8), dtype=np.complex64), "unsupported array dtype"),
    (torch.full((3, 8, 8), float("inf")), "NaN or infinite"),
    (torch.full((3, 8, 8), float("nan"), dtype=torch.bfloat16), "NaN or infinite"),
    (torch.zeros(2, 3, 8, 8), r"batch\[0\]"),
    (b"", r"empty \(0 bytes\)"),
    (b"this is not an image", "not an image format"),
    (None, r"no image given \(None\)"),
    ("https://example.com/cat.jpg", "URL.*save it"),
    ([[0, 1], [1, 0]], "cannot load an image from list"),
])
def test_bad_sources_say_what_to_do(source, pattern):
    with pytest.raises(pw.ImageLoadError, match=pattern):
        pw.load_image(source)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(pw.ImageLoadError, match="is a directory.*one image in it"):
        pw.load_image(tmp_path)
    with pytest.raises(pw.ImageLoadError, match="no file at"):
        pw.load_image(str(tmp_path / "nope.jpg"))


def test_bool_arrays_are_black_and_white_and_low_precision_tensors_load():
    mask = np.zeros((8, 8), dtype=bool)
    mask[:, 4:] = True
    with pytest.warns(pw.ImageWarning, match="grayscale"):
        out = pw.load_image(mask, size=8, crop=None, normalize=False)
    assert torch.equal(out[0, :, :, :4], torch.zeros(3, 8, 4)) and torch.equal(out[0, :, :, 4:], torch.ones(3, 8, 4))
    half = torch.full((3, 8, 8), 0.5, dtype=torch.bfloat16)
    assert pw.load_image(half, size=8, crop=None, normalize=False).sub(128 / 255).abs().max() < 1e-6
    assert pw.load_image(bytearray(_png(_photo())), size=8, crop=8).shape == (1, 3, 8, 8)


def test_display_image_takes_one_image_or_a_batch_and_load_image_checks_its_options(tmp_path):
    x = pw.load_image(np.full((40, 40, 3), 0.25), size=32, crop=32)
    np.testing.assert_allclose(pw.display_image(x[0]), pw.display_image(x), atol=1e-12)
    assert abs(float(pw.display_image(x).mean()) - 0.25) < 0.01
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) batch or a \(3, H, W\)"):
        pw.display_image(x[0, 0])
    with pytest.raises(TypeError, match="normalize must be True or False"):
        pw.load_image(np.zeros((8, 8, 3)), size=8, crop=8, normalize="no")
    with pytest.raises(ValueError, match="normalization must be"):
        pw.load_image(np.zeros((8, 8, 3)), size=8, crop=8, normalization=(0.5, 0.25))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(pw.ImageLoadError, match=r"empty \(0 bytes\)"):
        pw.load_image(empty)
