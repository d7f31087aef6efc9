"""What the experiments of ``reproduce`` share: usage errors, the device, the model and its input size, the image
count, a one-image probe of layers and classes, the output folder, CSV files."""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..placement import best_device
from ..preprocessing import preprocessing_of


class UsageError(ValueError):
    """A bad argument: reported as one line, exit status 2."""


def pick_device(name: str | None) -> torch.device:
    """``--device``: the GPU when present and none is named; a clear error for a device this machine lacks."""
    if name is None:
        return best_device()
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"--device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: no usable Apple GPU here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: use cpu, cuda, cuda:N or mps")
    return device


def add_model_arguments(parser: argparse.ArgumentParser, default: str | None = "efficientnet_lite0") -> None:
    """``--model``, ``--weights`` and ``--image-size``: a known model or your own (see
    :mod:`pwawidgets.model_sources`)."""
    from ..model_sources import DEFAULT_FACTORY

    parser.add_argument("--model", default=default, required=default is None,
                        help="a known name (efficientnet_lite0, a mini-zoo net, a torchvision classifier), "
                        f"package.module:callable, file.py (its {DEFAULT_FACTORY}()), file.py:factory or a "
                        "TorchScript file" + (f" (default: {default})" if default else ""))
    parser.add_argument("--weights", help="a state dict file (torch.save(model.state_dict(), path)) for the model "
                        "a factory builds")
    parser.add_argument("--image-size", type=int, help="side of the square input your model takes (default: the "
                        "model's own: 64 for the mini zoo, 224 for ImageNet nets, else model.preprocessing or "
                        "model.input_size)")


def load(args: argparse.Namespace, device: torch.device) -> nn.Module:
    """The model of ``--model`` and ``--weights`` on ``device``; a ``UsageError`` for a source that cannot load
    (:class:`pwawidgets.models.WeightsUnavailableError` is left to the caller: it is a failure, not a usage error)."""
    from ..model_sources import load_source

    try:
        return load_source(args.model, args.weights, device=device)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def input_geometry(model: nn.Module, args: argparse.Namespace) -> tuple[int, int, tuple, list[str]]:
    """``(resize, crop, normalization, notes)`` for the images of ``model``: ``--image-size``, else the model's
    ``preprocessing`` (``size``/``crop``/``normalization``) or ``input_size``, else 64 for the mini zoo and for
    ``--data shapes``, and
    resize 256 / crop 224 for known ImageNet nets; a ``UsageError`` asking for ``--image-size`` otherwise."""
    from .. import zoo
    from ..models import check_model_name

    notes = []
    prep = preprocessing_of(model)
    side = getattr(prep, "crop", None) or getattr(prep, "size", None) or getattr(model, "input_size", None)
    shapes = str(getattr(args, "data", "")) == "shapes"
    if args.image_size is not None:
        if not 8 <= args.image_size <= 4096:
            raise UsageError(f"--image-size {args.image_size}: give the side of the model's input in pixels, 8 to "
                             "4096")
        if shapes and args.image_size != SHAPE_SIDE:
            raise UsageError(f"--image-size {args.image_size}: --data shapes makes {SHAPE_SIDE} x {SHAPE_SIDE} images; "
                             "give a folder of images for another size")
        size = crop = args.image_size
    elif args.model in zoo.NAMES or shapes:
        size = crop = SHAPE_SIDE
    elif side is not None:
        size, crop = int(getattr(prep, "size", None) or side), int(side)
    else:
        try:
            check_model_name(args.model)
        except (TypeError, ValueError):
            raise UsageError(f"--image-size: {args.model} does not say what input size it takes; give it, e.g. "
                             "--image-size 32 (or set model.input_size in your factory)") from None
        size, crop = 256, 224
    norm = None if prep is None else prep.normalization
    if norm is None:
        norm = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        notes.append(f"{args.model} declares no normalization: it is given pixels in [0, 1] (set model.preprocessing "
                     "= pwawidgets.Preprocessing(...) in your factory if it expects normalised ones)")
    return size, crop, norm, notes


SHAPE_SIDE = 64  # pwawidgets.data.IMAGE_SIZE: --data shapes makes images of this side only
SHAPES_MEMORY_LIMIT = 2 * 2**30  # bytes: generated shapes are made up front
SHAPE_BYTES = 3 * SHAPE_SIDE**2 * 4 + SHAPE_SIDE**2 + 8  # image (float32), mask, label


def check_image_count(data: str, n: int) -> None:
    """Refuse ``--images`` that would not fit in memory before anything is allocated (generated shapes are made
    all at once)."""
    if str(data) != "shapes":
        return
    from ..data import CHUNK_SIZE

    need = -(-n // CHUNK_SIZE) * CHUNK_SIZE * SHAPE_BYTES
    if need > SHAPES_MEMORY_LIMIT:
        most = SHAPES_MEMORY_LIMIT // SHAPE_BYTES // CHUNK_SIZE * CHUNK_SIZE
        raise UsageError(f"--images {n} with --data shapes: the shapes are generated up front and would need about "
                         f"{need / 1e9:.1f} GB of memory; use --images {most} or fewer")


def probe(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> tuple[int, dict[str, tuple[int, ...]]]:
    """One forward pass on one image, before the real work: the number of classes and each layer's output
    shape. A ``UsageError`` when the model cannot run on these images or a layer does not run."""
    from ..calls import logits_of
    from ..layers import LayerCapture, resolve_layers
    from ..placement import model_device, model_dtype

    specs = resolve_layers(model, list(layers))[0]
    x = x[:1].to(model_device(model), model_dtype(model))
    try:
        with torch.no_grad(), LayerCapture(model, specs) as capture:
            logits = logits_of(model(x))
            shapes = {s.name: tuple(x.shape if s.module is None else capture.tensor(s).shape) for s in specs}
    except (RuntimeError, ValueError, TypeError) as exc:
        raise UsageError(f"the model cannot run on these images (one image: {tuple(x.shape)}): {exc}; check "
                         "--image-size and --data") from exc
    return int(logits.shape[-1]), shapes


def spatial(shapes: dict[str, tuple[int, ...]]) -> None:
    """A ``UsageError`` for a layer whose output has no ``C x H x W`` map."""
    flat = {name: shape for name, shape in shapes.items() if len(shape) != 4}
    if flat:
        name, shape = next(iter(flat.items()))
        good = [n for n, s in shapes.items() if len(s) == 4 and n != "input"]
        raise UsageError(f"--layer {name}: its output has shape {shape}, no spatial map (C x H x W); choose a "
                         f"convolutional layer{', e.g. ' + good[0] if good else ' (a module before the flatten)'}")


def output_folder(path: str | Path) -> Path:
    """``--out``, created (with its parents) and checked writable before any work starts."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file of that name exists; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".pwawidgets-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc}); give a folder you can write to") \
            from exc
    return out


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    """Rows of dicts (the first row's keys are the columns) as a CSV file."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
