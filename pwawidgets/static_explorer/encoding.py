"""The static explorer's data files: maps quantised to int8 with a per-map scale, numbers in full precision.

Every map is stored on its layer's grid as ``q * s`` with ``q`` an int8 in [-127, 127] and ``s = max|map| / 127``
(a float64), so each stored value is within ``s / 2`` of the computed one and 0 stays exactly 0: the same
resolution as the explorer's 256-colour diverging scale centred on 0. The numbers the page shows (score, bias,
the maps' sums) are the float values computed at build time, written as shortest round-trip decimals.
Data files are JavaScript (``pwaReceive(kind, {...});``), loaded with ``<script>`` tags, so that the page works
from ``file://``, where a browser refuses ``fetch()``.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
from PIL import Image

from ..data import PHOTOS
from ..viz import lut
from .precompute import METHODS, PhotoData, RegionData

__all__ = ["CMAP", "QUANTISATION_NOTE", "dequantise", "js_data", "jpeg_data_url", "meta_payload",
           "photo_payload", "quantise", "region_payload", "unpack_maps"]

CMAP = "RdBu_r"  # diverging, white at 0: red adds to the score, blue takes from it
QUANTISATION_NOTE = ("maps are stored on each layer's grid as int8 q with a scale s per map (value = q·s, "
                     "s = max|map|/127, each value within s/2); score, bias and sums are the full-precision floats")
THUMBNAIL = 64


def quantise(values: np.ndarray) -> tuple[np.ndarray, float]:
    """``(q, s)``: int8 ``q`` in [-127, 127] and ``s = max|values| / 127`` with ``|values - q s| <= s / 2``
    (``s = 1`` for an all-zero map). ValueError for a map holding NaN or infinite values."""
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError("values hold NaN or infinite entries: such a map cannot be stored")
    top = float(np.abs(v).max()) if v.size else 0.0
    scale = top / 127 if top > 0 else 1.0
    return np.clip(np.rint(v / scale), -127, 127).astype(np.int8), scale


def dequantise(q: np.ndarray, scale: float) -> np.ndarray:
    """The stored map's values, float64."""
    return q.astype(np.float64) * scale


def jpeg_data_url(picture: np.ndarray, size: int | None = None, quality: int = 90) -> str:
    """A ``data:image/jpeg`` URL of an ``H x W x 3`` uint8 picture, resized to ``size`` square if given (a data
    URL, not a file: a canvas drawing it stays readable under ``file://``)."""
    image = Image.fromarray(np.asarray(picture, dtype=np.uint8))
    if size is not None:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def photo_payload(photo: PhotoData) -> dict[str, Any]:
    """One photo's data file: the picture, and per class its numbers and its maps' scales; the int8 maps of every
    (method, class, layer), in that order, row-major, as one base64 string."""
    chunks: list[bytes] = []
    scales: dict[str, list[list[float]]] = {m: [] for m in METHODS}
    for method in METHODS:
        for j in range(len(photo.classes)):
            row = []
            for layer in photo.layers:
                q, s = quantise(photo.maps[(method, layer)][j])
                chunks.append(q.tobytes())
                row.append(s)
            scales[method].append(row)
    classes = [
        {"index": c, "name": photo.class_names[j], "probability": photo.probabilities[j], "score": photo.scores[j],
         "bias": [photo.biases[layer][j] for layer in photo.layers],
         "sums": {m: [photo.sums[(m, layer)][j] for layer in photo.layers] for m in METHODS},
         "scales": {m: scales[m][j] for m in METHODS}}
        for j, c in enumerate(photo.classes)
    ]
    height, width = photo.picture.shape[:2]
    return {"name": photo.name, "description": photo.description, "exact": photo.exact, "width": width,
            "height": height,
            "picture": jpeg_data_url(photo.picture), "classes": classes,
            "maps": base64.b64encode(b"".join(chunks)).decode("ascii")}


def unpack_maps(payload: dict[str, Any], shapes: list[tuple[int, int]]) -> dict[tuple[str, int, int], np.ndarray]:
    """The stored maps of a photo payload, ``(method, class position, layer position) -> float64 (H_l, W_l)``:
    the reader's side of :func:`photo_payload` (what the page decodes)."""
    raw = np.frombuffer(base64.b64decode(payload["maps"]), dtype=np.int8)
    out, offset = {}, 0
    for method in METHODS:
        for j, cls in enumerate(payload["classes"]):
            for i, (h, w) in enumerate(shapes):
                q = raw[offset: offset + h * w].reshape(h, w)
                out[(method, j, i)] = dequantise(q, cls["scales"][method][i])
                offset += h * w
    if offset != raw.size:
        raise ValueError(f"the payload holds {raw.size} map values, the layers {offset}")
    return out


def _hex(rgb: np.ndarray) -> str:
    r, g, b = (int(round(float(c) * 255)) for c in rgb[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def meta_payload(photos: list[PhotoData], thumbnails: dict[str, str], version: str) -> dict[str, Any]:
    """What the page reads first: the model, the layers (grid, channels, pixels per position), the methods, the
    colour table, and the photo list (file, thumbnail, what the network reads in it)."""
    first = photos[0]
    side = first.picture.shape[0]
    layers = []
    for layer in first.layers:
        h, w = first.maps[("ours", layer)].shape[-2:]
        layers.append({"name": layer, "module": first.modules[layer], "height": int(h), "width": int(w),
                       "channels": first.channels[layer], "stride": side // int(h)})
    table = lut(CMAP)
    return {
        "model": "EfficientNet-Lite0", "version": version, "top_k": len(first.classes),
        "methods": METHODS, "layers": layers, "colours": "".join(_hex(c)[1:] for c in table),
        "quantisation": QUANTISATION_NOTE,
        "photos": [{"name": p.name, "description": p.description, "file": f"data/photo-{p.name}.js",
                    "thumbnail": thumbnails[p.name], "top1": p.class_names[0],
                    "sensible": p.class_names[0] in PHOTOS[p.name].imagenet} for p in photos],
        "regions": "data/regions.js",
    }


def region_payload(data: RegionData) -> dict[str, Any]:
    """The region view's data file: polygons per layer (rounded to 1e-6, for drawing), the final regions' ``W``
    and ``b`` (full precision), the decision boundary and the training points."""
    toy = data.toy

    def points(array: np.ndarray, digits: int = 6) -> list[list[float]]:
        return np.round(np.asarray(array, dtype=np.float64), digits).tolist()

    return {
        "dataset": toy.dataset, "hidden": list(toy.hidden), "seed": toy.seed, "accuracy": toy.accuracy,
        "bounds": [list(map(float, toy.bounds[0])), list(map(float, toy.bounds[1]))],
        "outputs": int(data.W.shape[1]),
        "layers": [{"polygons": [points(p) for p in polys], "patterns": pats,
                    "colours": [_hex(c) for c in cols]}
                   for polys, pats, cols in zip(data.polygons, data.patterns, data.colours, strict=True)],
        "W": data.W.tolist(), "b": data.b.tolist(),
        "boundary": [points(line) for line in data.boundary],
        "points": [[*points(x, 4), int(label)] for x, label in zip(toy.X, toy.y, strict=True)],
    }


def js_data(kind: str, payload: dict[str, Any]) -> str:
    """A data file's text: one call ``pwaReceive(kind, payload)`` (meta is a plain global, read before the page's
    script runs)."""
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    if kind == "meta":
        return f"var PWA_META = {text};\n"
    return f"pwaReceive({json.dumps(kind)}, {text});\n"
