"""The explorer with no kernel: precomputed decompositions served to a page of plain HTML and JavaScript.

``build(out_dir)`` decomposes every bundled photo with EfficientNet-Lite0 (top-5 classes, every preset layer, our
contributions and Grad-CAM, with the bias and the score) and the toy net's regions, and writes a folder that a
browser opens from disk (``file://``) or any static host: no CDN, no build chain, no Python at view time.

- :mod:`.precompute`: the decompositions and the regions, as arrays;
- :mod:`.encoding`: the data files (int8 maps with a scale each, numbers in full precision);
- :mod:`.build`: the folder; the front end is ``assets/`` (``index.html``, ``explorer.js``, ``region_view.js``,
  ``explorer.css``).

``python -c "from pathlib import Path; from pwawidgets.static_explorer import build; build(Path('explorer'))"``
"""

from __future__ import annotations

from .build import build
from .precompute import METHODS, MODEL, TOP_K, TOY, precompute_photo, precompute_regions

__all__ = ["METHODS", "MODEL", "TOP_K", "TOY", "build", "precompute_photo", "precompute_regions"]
