"""What the static explorer shows, computed once at build time: photo decompositions and a toy net's regions.

For a photo, one ``decompose(model, inputs, "top5", ["input", *blocks], keep_gradients=True)`` call gives, for
each of the top-5 classes, the score, the bias at every layer and, read from the same pass, the contribution map
(ours) and Grad-CAM at every layer, signed, on the layer's own grid. For the toy network, the exact partition
after each hidden layer, with the affine map ``W x + b`` of every final region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..baselines import from_decomposition
from ..core import decompose
from ..data import PHOTOS, sample_photo
from ..images import display_image, load_image
from ..layers import INPUT, layer_presets
from ..models import imagenet_categories, load_model
from ..placement import best_device
from ..preprocessing import preprocessing_of
from ..regions import ToyNet, enumerate_layers, region_colors, train_toy

__all__ = ["METHODS", "MODEL", "TOP_K", "TOY", "PhotoData", "RegionData", "check_photos", "explorer_layers",
           "load_explained_model", "precompute_photo", "precompute_regions", "toy_network"]

MODEL = "efficientnet_lite0"
TOP_K = 5
METHODS: dict[str, str] = {"ours": "contributions (ours)", "gradcam": "Grad-CAM"}
TOY: dict[str, object] = {"dataset": "moons", "hidden": (5, 5, 5), "seed": 0, "steps": 1500}
"""The toy network of the region view: the paper's Fig. 1 net (three hidden layers of five units, two moons)."""


@dataclass
class PhotoData:
    """One photo's explanations: for each of its top-k classes (in order), score, biases, and signed maps.

    ``maps[(method, layer)]`` is a float32 ``(k, H_l, W_l)`` array on the layer's grid; ``sums`` the same maps
    summed in float64; ``picture`` the ``H x W x 3`` uint8 crop the network sees."""

    name: str
    description: str
    picture: np.ndarray
    layers: list[str]
    modules: dict[str, str]
    channels: dict[str, int]
    classes: list[int]
    class_names: list[str]
    probabilities: list[float]
    scores: list[float]
    biases: dict[str, list[float]]
    maps: dict[tuple[str, str], np.ndarray]
    sums: dict[tuple[str, str], list[float]]
    exact: bool  # the pass's audit: every operation piece-wise affine (S = Σ w·h + b holds)


@dataclass
class RegionData:
    """A toy net's exact partition after each hidden layer, and the affine map of each final region."""

    toy: ToyNet
    polygons: list[list[np.ndarray]]  # per layer, per region: (v, 2) vertices, counter-clockwise
    patterns: list[list[str]]  # per layer, per region: the activation pattern as 0/1 text, layers split by ' '
    colours: list[np.ndarray]  # per layer: (R, 4) RGBA
    W: np.ndarray  # (R, outputs, 2): the final regions' maps
    b: np.ndarray  # (R, outputs)
    boundary: list[np.ndarray]


def check_photos(photos: int | Sequence[str] | None) -> list[str]:
    """The photo names to precompute: all of :data:`pwawidgets.data.PHOTOS` (None), the first ``n``, or the names
    given; a clear error naming ``photos`` otherwise, before any work."""
    names = list(PHOTOS)
    if photos is None:
        return names
    if isinstance(photos, bool) or not isinstance(photos, (int, list, tuple)):
        raise TypeError(f"photos is None (every bundled photo), a count or a list of names from {names}, "
                        f"got {type(photos).__name__}")
    if isinstance(photos, int):
        if not 1 <= photos <= len(names):
            raise ValueError(f"photos is a count from 1 to {len(names)} (the bundled photos), got {photos}")
        return names[:photos]
    unknown = [p for p in photos if p not in PHOTOS]
    if unknown or not photos:
        raise ValueError(f"photos names bundled photos, one or more of {names}; unknown: {unknown}")
    return list(dict.fromkeys(photos))


def explorer_layers(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    """The layer slider's names (the input, then the preset blocks) and the module behind each alias."""
    blocks = layer_presets(model).get("blocks", {})
    return [INPUT, *blocks], {INPUT: INPUT, **blocks}


def precompute_photo(model: nn.Module, name: str, categories: Sequence[str] | None = None,
                     top_k: int = TOP_K) -> PhotoData:
    """Decompose one bundled photo for its top-k classes at every preset layer: one pass, ours and Grad-CAM."""
    if name not in PHOTOS:
        raise ValueError(f"name is one of the bundled photos {list(PHOTOS)}, got {name!r}")
    categories = list(categories) if categories is not None else imagenet_categories(MODEL)
    layers, modules = explorer_layers(model)
    device = best_device()
    inputs = load_image(sample_photo(name), model=model).to(device)
    dec = decompose(model, inputs, f"top{top_k}", layers, keep_gradients=True)
    classes = [int(c) for c in dec.target[0].tolist()]
    probabilities = dec.logits[0].double().softmax(0)
    maps, sums = {}, {}
    for method in METHODS:
        for layer in layers:
            values = from_decomposition(dec, method, layer)[0].detach().float().cpu()
            maps[(method, layer)] = values.numpy()
            sums[(method, layer)] = [float(v) for v in values.double().sum(dim=(-2, -1))]
    picture = display_image(inputs.cpu(), normalization=preprocessing_of(model).normalization)
    return PhotoData(
        name=name,
        description=PHOTOS[name].description,
        picture=np.rint(np.clip(picture, 0, 1) * 255).astype(np.uint8),
        layers=layers,
        modules=modules,
        channels={layer: int(dec.activation(layer).shape[1]) for layer in layers},
        classes=classes,
        class_names=[categories[c] for c in classes],
        probabilities=[float(probabilities[c]) for c in classes],
        scores=[float(s) for s in dec.score[0]],
        biases={layer: [float(v) for v in dec.bias[layer][0]] for layer in layers},
        maps=maps,
        sums=sums,
        exact=bool(dec.exact),
    )


def toy_network() -> ToyNet:
    """The region view's network, trained as :data:`TOY` says (deterministic: the same net on every build)."""
    return train_toy(TOY["dataset"], TOY["hidden"], TOY["seed"], steps=TOY["steps"])


def precompute_regions(toy: ToyNet | None = None) -> RegionData:
    """The exact partition of the toy network after each hidden layer, with each final region's ``W``, ``b``."""
    toy = toy if toy is not None else toy_network()
    sets = enumerate_layers(toy.model, toy.bounds)
    final = sets[-1]

    def pattern(region) -> str:
        return " ".join("".join("1" if v else "0" for v in part) for part in region.layer_patterns)

    return RegionData(
        toy=toy,
        polygons=[[np.asarray(r.polygon, dtype=np.float64) for r in rs] for rs in sets],
        patterns=[[pattern(r) for r in rs] for rs in sets],
        colours=[region_colors(rs) for rs in sets],
        W=np.stack([r.W for r in final]).astype(np.float64),
        b=np.stack([r.b for r in final]).astype(np.float64),
        boundary=final.decision_boundary() if final.complete else [],
    )


def load_explained_model() -> nn.Module:
    """EfficientNet-Lite0 (weights shipped offline) on :func:`pwawidgets.best_device`, in eval mode."""
    model = load_model(MODEL)
    return model.to(best_device()).eval()
