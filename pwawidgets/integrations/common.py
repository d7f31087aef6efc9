"""What the integrations read from a decomposition, in one place: a layer's pixel map, and maps resized to the
input keeping their sums."""

from __future__ import annotations

import torch

from ..core import Decomposition


def layer_map(decomposition: Decomposition, layer: str) -> torch.Tensor:
    """The contributions of ``layer`` summed over channels, on the layer's grid: ``(B, H_l, W_l)``."""
    return decomposition.pixel_map(layer)


def spread(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, h, w)`` maps to ``size`` keeping each sum: every cell's value is shared among the output pixels
    it covers in proportion to the overlap (the cells tile the image evenly), so the total is unchanged."""

    def share(n_in: int, n_out: int) -> torch.Tensor:
        # overlap of output pixel p, [p, p+1), with cell c, [c, c+1) * n_out / n_in, as a fraction of the cell
        edges = torch.arange(n_in + 1, dtype=torch.float64) * (n_out / n_in)
        lo = torch.maximum(torch.arange(n_out, dtype=torch.float64)[:, None], edges[None, :-1])
        hi = torch.minimum(torch.arange(1, n_out + 1, dtype=torch.float64)[:, None], edges[None, 1:])
        return ((hi - lo).clamp_min(0) * (n_in / n_out)).to(device=maps.device, dtype=maps.dtype)

    rows, cols = share(maps.shape[-2], size[0]), share(maps.shape[-1], size[1])
    return rows @ maps @ cols.T
