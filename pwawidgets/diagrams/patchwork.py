"""Diagram: affine_patchwork (drawn by code)."""

from __future__ import annotations


def affine_patchwork():
    raise NotImplementedError("affine_patchwork is not drawn yet")
