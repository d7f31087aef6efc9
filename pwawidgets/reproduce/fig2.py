"""The paper's Fig. 2: the contributions (ours) and Grad-CAM at every block of the network, for given images.

One decomposition per image (``decompose(..., "blocks", keep_gradients=True)``) gives both rows: the
contributions summed over channels, and Grad-CAM from the same activations and gradients. As in the paper, the
positive parts are shown (negative evidence discarded), for the predicted class, each map on its own scale,
resized bilinearly to the image. Written to --out: fig2_<image>.png per image.

examples:
  python -m pwawidgets reproduce fig2 --model vgg19 --image cat.jpg dog.jpg --out out/
  python -m pwawidgets reproduce fig2 --model efficientnet_lite0 --image chelsea coffee --out out/
(a name of pwawidgets.data.PHOTOS stands for that bundled photo)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..preprocessing import normalization_of
from .common import UsageError, add_model_arguments, input_geometry, load, output_folder, pick_device, probe, spatial

HELP = "the paper's Fig. 2: ours and Grad-CAM at every block, for given images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--image", nargs="+", required=True, help="image file(s), or names of bundled photos "
                        "(chelsea, coffee, ...)")
    parser.add_argument("--layer", nargs="+", default=["blocks"], help="columns (default: every preset block)")
    parser.add_argument("--sign", choices=("positive", "negative", "both", "diverging"), default="positive",
                        help="which part of the maps to show (default: positive, as the paper)")
    parser.add_argument("--device", default=None, help="cpu, cuda... (default: cuda when available)")
    parser.add_argument("--out", required=True, help="output folder")


def _sources(names: list[str]) -> list[tuple[str, object]]:
    from ..data import PHOTOS, sample_photo

    found = []
    for name in names:
        if Path(name).is_file():
            found.append((Path(name).stem, name))
        elif name in PHOTOS:
            found.append((name, sample_photo(name)))
        else:
            raise UsageError(f"--image {name!r}: no such file, nor a bundled photo ({', '.join(PHOTOS)})")
    return found


def draw(model, source, layers: list[str], sign: str = "positive", size: tuple[int, int] = (256, 224),
         normalization=None):
    """The Fig. 2 panel of one image: a matplotlib ``Figure`` (rows ours / Grad-CAM, one column per layer);
    ``normalization``: the model's input normalisation (default: the model's preprocessing)."""
    from .. import viz
    from ..baselines import gradcam_from
    from ..core import decompose, resize_maps
    from ..images import display_image, load_image

    normalization = normalization_of(model, normalization)
    x = load_image(source, size=size[0], crop=size[1], normalization=normalization)
    dec = decompose(model, x, None, layers, keep_gradients=True)
    side = tuple(x.shape[-2:])
    rows = {
        "ours": [resize_maps(dec.pixel_map(name)[0], side).cpu().numpy() for name in dec.layers],
        "Grad-CAM": [resize_maps(gradcam_from(dec, name)[0], side).cpu().numpy() for name in dec.layers],
    }
    c = int(dec.target[0])
    names = getattr(model, "class_names", None)
    label = names[c] if names else f"class {c}"
    title = (f"{getattr(model, 'model_name', type(model).__name__)}: {label} (score {float(dec.score[0]):.2f}), "
             f"{sign} parts")
    image = display_image(x, normalization=normalization)
    return viz.map_grid(image, rows, dec.layers, title=title, sign=sign, units="score units")


def run(args: argparse.Namespace) -> int:
    from ..images import load_image
    from ..layers import resolve_layers
    from ..models import WeightsUnavailableError

    try:
        sources = _sources(args.image)
        device = pick_device(args.device)
        model = load(args, device)
        size, crop, normalization, notes = input_geometry(model, args)
        try:
            specs, wants_all = resolve_layers(model, args.layer)
            if wants_all:
                raise ValueError("'all' (every ReLU) would make one column per activation; give 'blocks' or layer "
                                 "names")
            layers = [s.name for s in specs]
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--layer: {exc}") from exc
        first = load_image(sources[0][1], size=size, crop=crop, normalization=normalization)
        spatial(probe(model, first, layers)[1])
        out = output_folder(args.out)
    except UsageError as exc:
        print(f"pwawidgets reproduce fig2: error: {exc}", file=sys.stderr)
        return 2
    except WeightsUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:  # the first image cannot be read (ImageLoadError)
        print(f"pwawidgets reproduce fig2: error: --image {sources[0][0]}: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}")
    for stem, source in sources:
        try:
            fig = draw(model, source, layers, args.sign, (size, crop), normalization)
        except ValueError as exc:  # an unreadable image file (ImageLoadError)
            print(f"pwawidgets reproduce fig2: error: {stem}: {exc}", file=sys.stderr)
            return 2
        path = out / f"fig2_{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}.png"
        fig.savefig(path, dpi=110)
        print(f"wrote {path}")
    return 0
