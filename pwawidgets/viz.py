"""Overlays, colormaps and figures: pure functions of numpy arrays (the plotting edge).

A *map* is an ``H x W`` float array of signed values (contributions, Grad-CAM, gradients). How it is shown is
decided here, never in the maths:

- the **sign view** (:data:`SIGN_VIEWS`): ``"positive"`` keeps ``max(v, 0)``, ``"negative"`` shows the
  magnitude of the negative evidence ``max(-v, 0)``, ``"both"`` shows ``|v|``, ``"diverging"`` keeps the sign
  and uses a diverging colormap centred at zero (white = 0);
- the **scale**: ``vmax`` = the largest magnitude of the view (or a given value), so colours compare within a
  map, not across methods whose units differ;
- the **keep-top-p % threshold**: only the ``p`` % displayed pixels with the largest view value (``|v|`` for
  the diverging view) are coloured; pixels whose view value is 0 are never kept. Ranks are taken on the
  array given, i.e. on the displayed (upsampled) map.

Rendering is a 256-entry colour table lookup, a blend and a PNG encode: a few milliseconds for 224 x 224.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIGN_VIEWS: tuple[str, ...] = ("positive", "negative", "both", "diverging")
DEFAULT_CMAPS = {"positive": "inferno", "negative": "viridis", "both": "magma", "diverging": "RdBu_r"}

__all__ = [
    "DEFAULT_CMAPS",
    "SIGN_VIEWS",
    "colorbar",
    "colorize",
    "from_png",
    "image_panel",
    "label",
    "lut",
    "map_grid",
    "overlay",
    "panel",
    "render_map",
    "shown_mask",
    "sign_view",
    "stack",
    "to_png",
    "to_uint8",
    "view_scale",
]


def _check_sign(sign: str) -> None:
    if sign not in SIGN_VIEWS:
        raise ValueError(f"unknown sign view {sign!r}; choose one of {', '.join(SIGN_VIEWS)}")


def sign_view(values: np.ndarray, sign: str) -> np.ndarray:
    """The values a sign view shows: non-negative for ``positive``/``negative``/``both``, signed for ``diverging``."""
    _check_sign(sign)
    v = np.asarray(values, dtype=np.float32)
    if sign == "positive":
        return np.maximum(v, 0)
    if sign == "negative":
        return np.maximum(-v, 0)
    if sign == "both":
        return np.abs(v)
    return v


def view_scale(view: np.ndarray) -> float:
    """Colour scale of a view: its largest magnitude (1.0 for an all-zero map, so nothing is divided by 0)."""
    top = float(np.max(np.abs(view))) if view.size else 0.0
    return top if np.isfinite(top) and top > 0 else 1.0


def shown_mask(view: np.ndarray, percent: float) -> np.ndarray:
    """Boolean mask of the ``percent`` % entries with the largest ``|view|``; zeros are never kept.

    A display threshold (the widgets' keep-top-% slider); the paper's fidelity masking of images is
    :func:`pwawidgets.metrics.keep_top`.

    Ties at the cut-off are all kept, so slightly more than ``percent`` % may be kept on flat maps.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must lie in [0, 100], got {percent}")
    mag = np.abs(np.asarray(view))
    nonzero = mag > 0
    if percent >= 100:
        return nonzero
    k = int(round(mag.size * percent / 100))
    if k <= 0:
        return np.zeros(mag.shape, dtype=bool)
    flat = mag.ravel()
    cutoff = np.partition(flat, flat.size - k)[flat.size - k]
    return nonzero & (mag >= cutoff)


@functools.lru_cache(maxsize=32)
def lut(name: str, n: int = 256) -> np.ndarray:
    """Colour table of a matplotlib colormap: ``(n, 3)`` float32 in [0, 1] (read-only, cached)."""
    from matplotlib import colormaps

    table = colormaps[name](np.linspace(0, 1, n))[:, :3].astype(np.float32)
    table.setflags(write=False)
    return table


def colorize(view: np.ndarray, sign: str, vmax: float | None = None, cmap: str | None = None) -> np.ndarray:
    """Colours of a view, ``H x W x 3`` float32: ``[0, vmax]`` mapped to the colormap, or ``[-vmax, vmax]``
    with zero at its centre for the diverging view."""
    _check_sign(sign)
    vmax = view_scale(view) if vmax is None else float(vmax)
    if not vmax > 0:
        raise ValueError(f"vmax must be positive, got {vmax}")
    table = lut(cmap or DEFAULT_CMAPS[sign])
    n = len(table)
    t = view / vmax
    t = (np.clip(t, -1, 1) + 1) / 2 if sign == "diverging" else np.clip(t, 0, 1)
    idx = np.rint(t * (n - 1)).astype(np.intp)
    return table[idx]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (or uint8) to ``uint8``."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, colours: np.ndarray, mask: np.ndarray | None, opacity: float) -> np.ndarray:
    """``image`` with ``colours`` blended in at ``opacity`` where ``mask`` is True; uint8 ``H x W x 3``."""
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    arr = np.asarray(image)
    base = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if base.shape[:2] != colours.shape[:2]:
        raise ValueError(f"image {base.shape[:2]} and map {colours.shape[:2]} differ in size: resize the map first")
    alpha = np.full(base.shape[:2], opacity, dtype=np.float32)
    if mask is not None:
        alpha *= mask
    out = base + (colours - base) * alpha[..., None]
    return to_uint8(out)


def render_map(
    image: np.ndarray,
    values: np.ndarray,
    sign: str = "positive",
    keep: float = 100.0,
    opacity: float = 0.6,
    cmap: str | None = None,
    vmax: float | None = None,
) -> tuple[np.ndarray, float]:
    """Overlay of one map on its image: returns the ``uint8`` picture and the colour scale used."""
    view = sign_view(values, sign)
    if not np.isfinite(view).all():
        raise ValueError("the map holds NaN or infinite values: nothing sensible to colour")
    scale = view_scale(view) if vmax is None else float(vmax)
    mask = shown_mask(view, keep)
    return overlay(image, colorize(view, sign, scale, cmap), mask, opacity), scale


# ------------------------------------------------------------------------------------ text, bars, panels


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def label(width: int, text: str, height: int = 18, align: str = "center", size: int = 12) -> np.ndarray:
    """A white strip with one line of dark text: ``height x width x 3`` uint8."""
    strip = Image.new("RGB", (max(1, width), height), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    font = _font(size)
    box = draw.textbbox((0, 0), text, font=font)
    tw, th = box[2] - box[0], box[3] - box[1]
    x = {"left": 2, "right": width - tw - 2}.get(align, (width - tw) // 2)
    draw.text((x - box[0], (height - th) // 2 - box[1]), text, fill=(20, 20, 20), font=font)
    return np.asarray(strip)


def colorbar(width: int, sign: str, vmax: float, cmap: str | None = None, height: int = 10,
             units: str = "score units") -> np.ndarray:
    """The colour scale of a view with its end values written under it, then its ``units`` (no line when
    ``units`` is empty): uint8 ``H x width x 3``."""
    _check_sign(sign)
    if not isinstance(units, str):
        raise TypeError(f"units is a string such as 'score units', got {type(units).__name__}")
    ramp = np.linspace(-1 if sign == "diverging" else 0, 1, max(2, width), dtype=np.float32)
    bar = to_uint8(colorize(np.tile(ramp * vmax, (height, 1)), sign, vmax, cmap))
    low = f"{-vmax:.3g}" if sign == "diverging" else "0"
    prefix = "-" if sign == "negative" else ("|c| " if sign == "both" else "")
    ends = label(width, f"{low}", height=14, align="left", size=10)
    right = label(width, f"{prefix}{vmax:.3g}", height=14, align="right", size=10)
    text = np.minimum(ends, right)
    if sign == "diverging":
        text = np.minimum(text, label(width, "0", height=14, size=10))
    strips = [bar, text] + ([label(width, units, height=14, size=10)] if units else [])
    return np.concatenate(strips, axis=0)


def panel(picture: np.ndarray, title: str, sign: str, vmax: float, cmap: str | None = None,
          units: str = "score units") -> np.ndarray:
    """A titled overlay with its colour bar, labelled in ``units``, under it (uint8)."""
    width = picture.shape[1]
    return np.concatenate([label(width, title), to_uint8(picture), colorbar(width, sign, vmax, cmap, units=units)],
                          axis=0)


def image_panel(picture: np.ndarray, title: str = "image") -> np.ndarray:
    """A titled picture with no colour bar (the plain image beside its maps), uint8."""
    return np.concatenate([label(picture.shape[1], title), to_uint8(picture)], axis=0)


def stack(pictures: Sequence[np.ndarray], gap: int = 6) -> np.ndarray:
    """Pictures side by side (padded at the bottom to the tallest), separated by white gaps (uint8)."""
    if not pictures:
        raise ValueError("nothing to stack")
    height = max(p.shape[0] for p in pictures)
    parts: list[np.ndarray] = []
    for i, p in enumerate(pictures):
        p = to_uint8(p)
        if p.shape[0] < height:
            p = np.concatenate([p, np.full((height - p.shape[0], *p.shape[1:]), 255, np.uint8)], axis=0)
        if i:
            parts.append(np.full((height, gap, 3), 255, np.uint8))
        parts.append(p)
    return np.concatenate(parts, axis=1)


def to_png(picture: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of a uint8 (or [0, 1] float) RGB picture; fast compression by default."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(picture)).save(buf, format="png", compress_level=compress_level)
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """RGB uint8 array of PNG (or any image) bytes."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ------------------------------------------------------------------------------------------- figures


def map_grid(
    image: np.ndarray,
    rows: dict[str, Sequence[np.ndarray]],
    columns: Sequence[str],
    title: str = "",
    sign: str = "positive",
    keep: float = 100.0,
    opacity: float = 0.6,
    cell: float = 1.9,
    show_image: bool = True,
    units: str | dict[str, str] = "score units",
    colorbars: bool = True,
):
    """The paper's Fig. 2 layout: one row per method, one column per layer, each map on the image.

    ``rows`` maps a method name to its maps (``H x W`` arrays, one per column, already at the image's size); each
    map is scaled to its own maximum and gets a colour bar in ``units`` (one string, or one per row). A map whose
    view is empty (e.g. no positive part) says so on its panel. The plain image comes first in each row. Returns a
    matplotlib ``Figure`` (not attached to pyplot).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    n_rows, n_cols = len(rows), len(columns) + int(show_image)
    extra = 0.45 if colorbars else 0.0
    fig = Figure(figsize=(cell * n_cols, (cell + extra) * n_rows + (0.5 if title else 0.2)), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    empty = {"positive": "no positive part", "negative": "no negative part"}.get(sign, "all zero")
    for r, (method, maps) in enumerate(rows.items()):
        if len(maps) != len(columns):
            raise ValueError(f"row {method!r} has {len(maps)} maps for {len(columns)} columns")
        unit = units.get(method, "") if isinstance(units, dict) else units
        if show_image:
            axes[r, 0].imshow(to_uint8(image))
            axes[r, 0].set_title("image", fontsize=9)
        for c, values in enumerate(maps):
            ax = axes[r, c + int(show_image)]
            view = sign_view(values, sign)
            picture, vmax = render_map(image, values, sign, keep, opacity)
            ax.imshow(picture)
            ax.set_title(f"{method}: {columns[c]}" if n_rows > 1 else columns[c], fontsize=8)
            if not np.any(view):
                ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", fontsize=8,
                        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})
            if colorbars:
                low = -vmax if sign == "diverging" else 0.0
                mappable = ScalarMappable(Normalize(low, vmax), colormaps[DEFAULT_CMAPS[sign]])
                bar = fig.colorbar(mappable, ax=ax, orientation="horizontal", fraction=0.08, pad=0.02)
                bar.ax.tick_params(labelsize=6)
                bar.set_ticks([low, vmax], labels=[f"{low:.3g}", f"{vmax:.3g}"])
                bar.set_label(unit, fontsize=6, labelpad=1)
        axes[r, 0].set_ylabel(method, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
