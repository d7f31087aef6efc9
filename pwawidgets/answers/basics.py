"""Expected values of the exercises of notebooks 00–03 (see the package docstring)."""

from __future__ import annotations
