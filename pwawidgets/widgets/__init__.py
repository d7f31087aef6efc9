"""Interactive explorers (ipywidgets 8). Each keeps its state in one object and only renders from it; both share
:class:`~pwawidgets.widgets.base.Explorer` (errors shown inside the widget, ``message``, ``snapshot()``, ``close()``).

Imported on first use, so that ``import pwawidgets.widgets`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"RegionExplorer": ".region_explorer", "ContributionExplorer": ".contribution_explorer"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
