"""Expected values of the exercises of notebooks 04–08 (see the package docstring)."""

from __future__ import annotations
