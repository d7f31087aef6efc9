"""Model loading: torchvision classifiers through its weights API, checkpoints, and the offline mini zoo."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from .images import IMAGENET_NORMALIZATION

PAPER_MODELS = ("vgg19", "vgg19_bn", "resnet101")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable right now."""


def _weights_enum(name: str):
    try:
        return torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as exc:
        known = sorted(torchvision.models.list_models(module=torchvision.models))
        raise ValueError(
            f"unknown model {name!r}: use 'mini_vgg', 'mini_vgg_bn', 'mini_resnet' or a torchvision classifier "
            f"such as {', '.join(PAPER_MODELS)} (all: {len(known)} in torchvision.models.list_models())"
        ) from exc


def weights_cache_path(name: str) -> Path:
    """Where torchvision keeps (or will keep) the default pretrained weights of ``name``."""
    weights = _weights_enum(name).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def imagenet_categories(name: str = "vgg19") -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (available offline)."""
    return list(_weights_enum(name).DEFAULT.meta["categories"])


def _tag(model: nn.Module, name: str, pretrained: bool, categories: list[str], normalization) -> nn.Module:
    model.model_name = name
    model.pretrained = pretrained
    model.class_names = categories
    model.normalization = normalization
    return model.eval()


def load_model(
    name: str,
    pretrained: bool | str | os.PathLike = True,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A classifier in eval mode, tagged with ``class_names``, ``normalization`` and ``pretrained``.

    Args:
        name: ``"mini_vgg"``, ``"mini_vgg_bn"``, ``"mini_resnet"`` (trained nets shipped with the package,
            offline), or any torchvision classifier (``"vgg19"``, ``"vgg19_bn"``, ``"resnet101"``...).
        pretrained: True for the default pretrained weights (torchvision's cache, downloaded once), False for
            random weights, or a path to a ``state_dict`` checkpoint (loaded with ``weights_only=True``).
        device: where to put the model (default: CPU).

    Raises:
        WeightsUnavailableError: no cached weights and no connection; the message says how to fetch them.
    """
    if name.startswith("mini_"):
        from . import zoo

        model = zoo.load(name) if pretrained is True else zoo.build(name)
        if pretrained not in (True, False):
            model.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
        model.pretrained = pretrained is not False
        return model.eval().to(device or "cpu")

    weights_enum = _weights_enum(name)
    categories = list(weights_enum.DEFAULT.meta["categories"])
    if pretrained is True:
        model = _download_pretrained(name, weights_enum.DEFAULT)
    else:
        model = torchvision.models.get_model(name, weights=None)
        if pretrained is not False:
            state = torch.load(Path(pretrained), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
    model = _tag(model, name, pretrained is not False, categories, IMAGENET_NORMALIZATION)
    return model.to(device or "cpu")


def _download_pretrained(name: str, weights) -> nn.Module:
    try:
        return torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        cache = weights_cache_path(name)
        partial = [p for p in cache.parent.glob(cache.name + "*") if p != cache] if cache.parent.exists() else []
        raise WeightsUnavailableError(
            f"pretrained weights for {name!r} are not cached and could not be downloaded ({exc}).\n"
            f"Fix: connect to the internet once and run pwawidgets.load_model({name!r}), or download\n"
            f"  {weights.url}\nto\n  {cache}\n"
            f"(or run: python -m pwawidgets fetch {name}). Offline, use load_model({name!r}, pretrained=False) "
            "for random weights, or a trained mini-zoo net: load_model('mini_vgg')."
            + (f"\nNote: an incomplete download lies beside it: {partial[0]}" if partial else "")
        ) from exc


def has_cached_weights(name: str) -> bool:
    """True if torchvision's cache already holds the default pretrained weights of ``name``."""
    return weights_cache_path(name).exists()
