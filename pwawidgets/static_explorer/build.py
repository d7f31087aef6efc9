"""``build(out_dir)``: the static explorer as a self-contained folder (``index.html``, its script and style, and
``data/``), which a browser opens from disk or any static host, with no kernel and no network."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from .. import __version__
from ..models import imagenet_categories
from .encoding import jpeg_data_url, js_data, meta_payload, photo_payload, region_payload
from .precompute import MODEL, check_photos, load_explained_model, precompute_photo, precompute_regions

__all__ = ["ASSETS", "build"]

ASSETS: tuple[str, ...] = ("index.html", "explorer.js", "region_view.js", "explorer.css")
"""The front end's files, shipped as package data in ``pwawidgets/static_explorer/assets``."""


def build(out_dir: Path | str, photos: int | Sequence[str] | None = None, progress: bool = True) -> Path:
    """Precompute every bundled photo's explanations and the toy net's regions, and write the explorer to
    ``out_dir``; returns the path of its ``index.html``.

    ``photos``: None for every photo of :data:`pwawidgets.data.PHOTOS`, a count (the first ``n``, e.g. 2 for a
    quick test) or a list of names. ``out_dir`` is created if needed; the files written earlier by ``build`` in
    it (``data/``) are replaced. ``progress`` shows a tqdm bar.
    """
    names = check_photos(photos)
    if not isinstance(out_dir, (str, Path)):
        raise TypeError(f"out_dir is a folder path (str or pathlib.Path), got {type(out_dir).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} is a file: give a folder to write the explorer into")
    from tqdm.auto import tqdm

    start = time.perf_counter()
    data = out / "data"
    if data.is_dir():
        for old in data.glob("photo-*.js"):
            old.unlink()
    data.mkdir(parents=True, exist_ok=True)

    model = load_explained_model()
    categories = imagenet_categories(MODEL)
    done, thumbnails = [], {}
    steps = tqdm(names, desc="static explorer: photos", disable=not progress)
    for name in steps:
        steps.set_postfix_str(name)
        photo = precompute_photo(model, name, categories)
        (data / f"photo-{name}.js").write_text(js_data("photo", photo_payload(photo)), encoding="ascii")
        thumbnails[name] = jpeg_data_url(photo.picture, size=64, quality=85)
        done.append(photo)
    regions = precompute_regions()
    (data / "regions.js").write_text(js_data("regions", region_payload(regions)), encoding="ascii")
    meta = meta_payload(done, thumbnails, __version__)
    meta["build_seconds"] = round(time.perf_counter() - start, 1)
    (data / "meta.js").write_text(js_data("meta", meta), encoding="ascii")
    assets = resources.files(__package__) / "assets"
    for name in ASSETS:
        with resources.as_file(assets / name) as source:
            shutil.copyfile(source, out / name)
    return out / "index.html"
