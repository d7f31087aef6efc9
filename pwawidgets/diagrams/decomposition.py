"""Diagram: contributions_add_up (drawn by code)."""

from __future__ import annotations


def contributions_add_up():
    raise NotImplementedError("contributions_add_up is not drawn yet")
