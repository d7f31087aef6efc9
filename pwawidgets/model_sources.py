"""Your own model from the command line: one resolver for every form a ``--model`` (or ``audit``) word takes.

- a known name (``efficientnet_lite0``, ``mini_vgg``, ``vgg19``...): :func:`pwawidgets.models.load_model`;
- ``package.module:callable``: imported and called with no arguments; it returns an ``nn.Module``;
- ``path/to/file.py`` or ``path/to/file.py:factory``: the file is run as a module and its factory called with
  no arguments (default name: :data:`DEFAULT_FACTORY`);
- a TorchScript file (saved with ``torch.jit.save``; recognised by its content, whatever its suffix);
- a factory (either form above) with ``--weights file.pt``: a state dict saved with ``torch.save``, read with
  ``torch.load(weights_only=True)`` and loaded strictly.

Every failure is a :class:`ModelSourceError` (a ``ValueError``) whose message says what to do.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from .models import check_model_name, load_model

__all__ = ["DEFAULT_FACTORY", "ModelSourceError", "is_torchscript", "load_source", "load_weights"]

DEFAULT_FACTORY = "build_model"
FORMS = ("a known name (see python -m pwawidgets audit --help), package.module:callable, file.py, file.py:factory "
         "or a TorchScript file")


class ModelSourceError(ValueError):
    """A model source that cannot be loaded; the message names it and says what to do."""


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether a file was written by ``torch.jit.save`` (a zip archive holding compiled ``code/``), not by
    ``torch.save`` (a zip archive holding only data)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def _is_known(source: str) -> bool:
    try:
        check_model_name(source)
    except ValueError:
        return False
    return True


def _split(source: str) -> tuple[str, str | None]:
    """``file.py:factory`` or ``module:callable`` -> (left, right); a Windows drive letter is not a separator."""
    left, sep, right = source.rpartition(":")
    if not sep or not right or (len(left) == 1 and left.isalpha()) or "/" in right or "\\" in right:
        return source, None
    return left, right


def _module_from_file(path: Path) -> object:
    if not path.is_file():
        raise ModelSourceError(f"model source {str(path)!r}: no such file")
    name = f"pwawidgets_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelSourceError(f"model source {str(path)!r}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelSourceError(f"model source {str(path)!r}: running the file failed ({type(exc).__name__}: "
                               f"{exc})") from exc
    return module


def _import(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ModelSourceError(f"model source {name!r}: cannot import it ({exc}); run from the folder that holds "
                               f"it, or give the file: path/to/{name.replace('.', '/')}.py:factory") from exc


def _factory(source: str) -> nn.Module:
    """Build the model of ``module:callable``, ``file.py`` or ``file.py:factory``."""
    left, name = _split(source)
    if left.endswith(".py"):
        module, name = _module_from_file(Path(left)), name or DEFAULT_FACTORY
    else:
        module = _import(left)
    factory = getattr(module, name, None)
    if factory is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
        default = f" (the default factory name for a file is {DEFAULT_FACTORY!r})" if left.endswith(".py") else ""
        raise ModelSourceError(f"model source {source!r}: {left} has no attribute {name!r}{default}; its callables: "
                               f"{', '.join(public) or 'none'}")
    if not callable(factory):
        raise ModelSourceError(f"model source {source!r}: {name!r} is a {type(factory).__name__}, not a callable")
    try:
        model = factory()
    except Exception as exc:
        raise ModelSourceError(f"model source {source!r}: calling {name}() failed ({type(exc).__name__}: {exc}); "
                               "the factory is called with no arguments") from exc
    if not isinstance(model, nn.Module):
        raise ModelSourceError(f"model source {source!r}: {name}() returned {type(model).__name__!r}, not a "
                               "torch.nn.Module")
    return model


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict file (``torch.load(weights_only=True)``) into ``model``, strictly; a clear
    :class:`ModelSourceError` for a missing or unreadable file and for keys that do not match."""
    path = Path(path)
    if not path.is_file():
        raise ModelSourceError(f"--weights {str(path)!r}: no such file")
    if is_torchscript(path):
        raise ModelSourceError(f"--weights {str(path)!r} is a TorchScript file, a whole model: give it as the model "
                               "source itself, without --weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, EOFError, RuntimeError (bad zip)...
        raise ModelSourceError(f"--weights {str(path)!r}: not a state dict torch.load can read with "
                               f"weights_only=True ({type(exc).__name__}); save it with "
                               "torch.save(model.state_dict(), path)") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelSourceError(f"--weights {str(path)!r} holds a {type(state).__name__} that is not a state dict; "
                               "save it with torch.save(model.state_dict(), path)")
    own = model.state_dict()
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{what} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs for", wrong))
                 if keys]
        raise ModelSourceError(f"--weights {str(path)!r} does not fit the model: {'; '.join(parts)} (was it saved "
                               "from another architecture?)")
    model.load_state_dict(state)
    return model


def load_source(
    source: str,
    weights: str | os.PathLike | None = None,
    pretrained: bool = True,
    device: str | torch.device | None = None,
) -> nn.Module:
    """The model a command-line word names, in eval mode on ``device`` (forms: see the module docstring).

    Args:
        source: a known name, ``module:callable``, ``file.py[:factory]`` or a TorchScript file.
        weights: a state dict file for a factory or a known name (not for a TorchScript file).
        pretrained: for a known name: its pretrained weights (True) or random ones (False).
        device: where to put the model (default: CPU).
    """
    if not isinstance(source, str) or not source.strip():
        raise ModelSourceError(f"the model source must be a non-empty string: {FORMS}")
    if _is_known(source):
        if weights is None:
            return load_model(source, pretrained=pretrained, device=device)
        return load_weights(load_model(source, pretrained=False), weights).to(device or "cpu")
    left, name = _split(source)
    if name is None and not left.endswith(".py"):  # a file: TorchScript
        path = Path(source)
        if not path.is_file():
            if not path.suffix:  # a bare word: most likely a misspelt model name
                try:
                    check_model_name(source)
                except ValueError as exc:
                    raise ModelSourceError(f"{exc}; or your own model: {FORMS}") from exc
            raise ModelSourceError(f"model source {source!r}: no such file; use {FORMS}")
        if not is_torchscript(path):
            raise ModelSourceError(f"model source {source!r} is not a TorchScript file; if it holds a state dict, "
                                   f"give the architecture and the file: file.py:factory --weights {source}")
        if weights is not None:
            raise ModelSourceError(f"--weights: a TorchScript file ({source!r}) holds its own weights; drop --weights")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            model = torch.jit.load(str(path), map_location="cpu")
    else:
        model = _factory(source)
        if weights is not None:
            load_weights(model, weights)
    return model.eval().to(device or "cpu")
