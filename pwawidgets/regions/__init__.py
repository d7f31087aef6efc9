"""Exact linear regions of small ReLU networks on the plane.

A network made of ``nn.Linear`` and ReLU layers is piece-wise affine: the plane splits into convex polygons, one per
activation pattern, and on each polygon every output is exactly ``W @ x + b``. :func:`enumerate_regions` finds these
polygons without sampling.

Modules, each importing only those above it:

- :mod:`.geometry`: boxes and convex polygons (area, centroid, cuts, segments);
- :mod:`.threads`: torch on one thread, in the calling thread only;
- :mod:`.toy`: 2-D data sets, seeded MLPs and :func:`train_toy` (the 3x5 network of the paper's Fig. 1);
- :mod:`.network`: reading a Linear/ReLU model as float64 layers, checked against its forward;
- :mod:`.partition`: :class:`Region`, :class:`RegionSet`, :func:`enumerate_regions`, :func:`enumerate_layers`;
- :mod:`.patterns`: activation patterns and affine maps;
- :mod:`.counting`: region counts against the known bounds;
- :mod:`.plotting`: region colours, the partition and the logit surface;
- :mod:`.checks`: the checks of notebook 01's exercises.
"""

from __future__ import annotations

from .checks import check_affine_map, check_contributions, check_pattern
from .counting import count_regions_on_grid, montufar_lower_bound, region_growth, region_upper_bound
from .geometry import Bounds
from .partition import (
    DEFAULT_MAX_REGIONS,
    Region,
    RegionLimitError,
    RegionSet,
    enumerate_layers,
    enumerate_regions,
)
from .patterns import activation_pattern, affine_map_at, affine_map_from_pattern
from .plotting import plot_logit_surface, plot_regions, region_colors
from .toy import DATASETS, ToyNet, build_mlp, data_bounds, make_toy_data, train_toy

__all__ = [
    "DATASETS",
    "DEFAULT_MAX_REGIONS",
    "Bounds",
    "Region",
    "RegionLimitError",
    "RegionSet",
    "ToyNet",
    "activation_pattern",
    "affine_map_at",
    "affine_map_from_pattern",
    "build_mlp",
    "check_affine_map",
    "check_contributions",
    "check_pattern",
    "count_regions_on_grid",
    "data_bounds",
    "enumerate_layers",
    "enumerate_regions",
    "make_toy_data",
    "montufar_lower_bound",
    "plot_logit_surface",
    "plot_regions",
    "region_colors",
    "region_growth",
    "region_upper_bound",
    "train_toy",
]
