"""Diagram: bias_from_constants (drawn by code)."""

from __future__ import annotations


def bias_from_constants():
    raise NotImplementedError("bias_from_constants is not drawn yet")
