"""Pieces shared by the explorers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ipywidgets as W


@contextmanager
def holding(explorer: Any) -> Iterator[None]:
    """Within the block, control changes made by the explorer itself trigger no callback (``_syncing``)."""
    previous = explorer._syncing
    explorer._syncing = True
    try:
        yield
    finally:
        explorer._syncing = previous


def close_tree(widget: W.Widget) -> None:
    """Close a widget and all its children, so the kernel can free them."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()
