"""Concept diagrams drawn by code (no image files): the ideas of the course, each shown where it first appears.

- :func:`affine_patchwork`: a ReLU network as a patchwork of affine pieces, and one input's piece (notebook 01);
- :func:`contributions_add_up`: a layer's contributions plus the bias adding up to the score (notebook 02);
- :func:`bias_from_constants`: the constants after a layer that make its bias (notebook 06).
"""

from .bias import bias_from_constants
from .decomposition import contributions_add_up
from .patchwork import affine_patchwork

__all__ = ["affine_patchwork", "bias_from_constants", "contributions_add_up"]
