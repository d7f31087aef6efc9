"""The course as a static site: ``python -m pwawidgets site --out DIR`` (Sphinx + MyST-NB, offline, searchable).

``builder`` runs the build; ``sources`` lays out the Sphinx sources (landing page with the course table, API pages,
offline MathJax and widget manager); ``course`` reads the course table from the notebooks; ``extension`` is the
Sphinx extension (a note beside widgets that need Python, saved widget state the page can draw). Sphinx and MyST-NB
come with ``pip install 'pwawidgets[site]'`` and are imported only when a site is built.
"""

from __future__ import annotations

from .builder import SiteBuildError, SiteReport, build, default_cache

__all__ = ["SiteBuildError", "SiteReport", "build", "default_cache"]
