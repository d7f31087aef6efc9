"""The paper's fidelity table (Sec. 3.1): keep the most relevant pixels of each map, fill the rest, run the network
again, and count the top-5 classes it still shares with the full image.

The paper: 100 random Pascal VOC images, VGG-19, conv4, keep 30 %: 35 % for the contributions, 17 % for
Grad-CAM. Written to --out: fidelity.csv (one row per method x layer x keep: mean and 95 % bootstrap interval
over images of the top-5 intersection, the top-1 agreement and the retained score), fidelity.png, images.txt
(the images drawn, with the seed); with --curves also curves.csv, areas.csv and deletion_insertion.png; with
Pascal VOC also pointing.csv (pointing game on its object masks).

examples:
  python -m pwawidgets reproduce fidelity --model vgg19 --data ~/data/VOC --images 100 --out out/
  python -m pwawidgets reproduce fidelity --model efficientnet_lite0 --data bundled --out out/
  python -m pwawidgets reproduce fidelity --model efficientnet_lite0 --data photos/ --layer blocks --out out/
  python -m pwawidgets reproduce fidelity --model mini_vgg --data shapes --images 500 --curves --out out/
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from .. import fidelity as fd
from ..metrics import bootstrap_ci
from .common import UsageError, output_folder, pick_device, write_csv

HELP = "the paper's fidelity table: keep the top 30 %% of pixels, top-5 intersection with the full image"
COLOURS = {"ours": "#c44e52", "gradcam": "#4c72b0", "gradcam_relu": "#8172b2", "gradient": "#55a868",
           "random": "#7f7f7f"}
LABELS = {"ours": "contributions (ours)", "gradcam": "Grad-CAM", "gradcam_relu": "Grad-CAM (ReLU)",
          "gradient": "gradient", "random": "random map"}
SCORE_COLUMNS = {"topk": "top5_intersection", "top1": "top1_agreement", "retained": "retained_score",
                 "prob": "class_probability"}
UNITS = {"top5_intersection": "top-5 intersection", "top1_agreement": "top-1 agreement",
         "retained_score": "retained score (masked / full logit)", "class_probability": "probability of the class"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="efficientnet_lite0", help="model name (default: efficientnet_lite0)")
    parser.add_argument("--data", required=True, help="a folder of images (flat or one sub-folder per class), a "
                        "Pascal VOC folder, 'bundled' (the photos shipped with installed packages) or 'shapes' "
                        "(generated images, for the mini zoo)")
    parser.add_argument("--layer", nargs="+", help="layer(s), or 'blocks' for every preset block (default: conv4 on "
                        "a VGG, else the preset block with the grid closest to input/8: stage3 on EfficientNet-Lite0)")
    parser.add_argument("--keep", nargs="+", type=float, default=[fd.PAPER_KEEP], help="fraction(s) of pixels kept "
                        "(default 0.3)")
    parser.add_argument("--methods", nargs="+", default=list(fd.DEFAULT_METHODS),
                        help=f"methods (default: {' '.join(fd.DEFAULT_METHODS)}); any of pwawidgets.baselines.METHODS")
    parser.add_argument("--images", type=int, default=100, help="number of images drawn (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw, the random maps and the bootstrap")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--fill", choices=fd.FILLS, default="zero", help="removed pixels: 0 in the model's input "
                        "space (the mean colour of a normalised model; default) or black")
    parser.add_argument("--sign", choices=fd.SIGNS, default="signed", help="rank by signed value (default) or |map|")
    parser.add_argument("--curves", action="store_true", help="also deletion and insertion curves, 0 to 100 %% by 10")
    parser.add_argument("--batch-size", type=int, default=8, help="images per decomposition pass (default 8)")
    parser.add_argument("--chunk", type=int, default=32, help="masked images per forward pass (default 32)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--out", required=True, help="output folder")


# ----------------------------------------------------------------------------------------------- tables


def summary_rows(result: fd.FidelityResult, n_boot: int = 2000, level: float = 0.95) -> list[dict]:
    """One row per method x layer x keep: every score's mean and bootstrap interval (``<score>_low/_high``)."""
    rows: dict[tuple, dict] = {}
    for score in ("topk", "top1", "retained"):
        column = SCORE_COLUMNS[score]
        for r in result.table(score, "keep", n_boot=n_boot, level=level):
            first = {"method": r["method"], "layer": r["layer"], "keep": r["keep"], "images": r["images"]}
            row = rows.setdefault((r["method"], r["layer"], r["keep"]), first)
            row.update({column: r["mean"], f"{column}_low": r["ci_low"], f"{column}_high": r["ci_high"]})
            if score == "retained":
                row["retained_images"] = r["images"]
    return list(rows.values())


def curve_rows(result: fd.FidelityResult, n_boot: int = 2000) -> tuple[list[dict], list[dict]]:
    """Deletion and insertion curves of the class probability (mean and interval per fraction), and their areas."""
    points, areas = [], []
    for method in result.methods:
        for layer in result.layers:
            for mode, name in (("delete", "deletion"), ("keep", "insertion")):
                fractions, values = result.curve(method, layer, "prob", mode)
                for f, column in zip(fractions, values.T, strict=True):
                    mean, low, high = bootstrap_ci(column, n_boot, seed=result.seed)
                    points.append({"method": method, "layer": layer, "mode": name, "fraction": f,
                                   "images": len(column), "class_probability": mean, "low": low, "high": high})
                mean, low, high = bootstrap_ci(result.area(method, layer, "prob", mode), n_boot, seed=result.seed)
                areas.append({"method": method, "layer": layer, "mode": name, "images": result.images,
                              "auc": mean, "low": low, "high": high})
    return points, areas


def pointing_rows(result: fd.FidelityResult, n_boot: int = 2000) -> list[dict]:
    """Pointing game and positive share inside the object masks, per method x layer (when masks were given)."""
    rows = []
    for (method, layer), scores in result.localisation.items():
        row = {"method": method, "layer": layer, "images": result.images}
        for name, v in scores.items():
            mean, low, high = bootstrap_ci(v, n_boot, seed=result.seed)
            row.update({name: mean, f"{name}_low": low, f"{name}_high": high})
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- figures


def _style(method: str, i: int) -> dict:
    return {"color": COLOURS.get(method, f"C{i % 10}"), "label": LABELS.get(method, method)}


def figure_fidelity(rows: Sequence[dict], score: str = "top5_intersection", title: str = ""):
    """Mean and 95 % interval of one score: lines over ``keep`` (a panel per layer) when there are several
    fractions, lines over layers when there are several layers, bars otherwise. A matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    methods = list(dict.fromkeys(r["method"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    keeps = sorted({r["keep"] for r in rows})
    at = {(r["method"], r["layer"], r["keep"]): r for r in rows}
    panels = layers if len(keeps) > 1 else [None]
    cols = min(len(panels), 4)
    n_rows = -(-len(panels) // cols)
    width = max(5.2, 3.6 * cols) + (1.5 if len(panels) == 1 and len(layers) > 1 else 0)
    fig = Figure(figsize=(width, 3.0 * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, cols, squeeze=False).ravel()
    for ax, layer in zip(axes, panels, strict=False):
        for i, method in enumerate(methods):
            if len(keeps) > 1:
                x, found = keeps, [at.get((method, layer, k)) for k in keeps]
            else:
                x, found = list(range(len(layers))), [at.get((method, name, keeps[0])) for name in layers]
            pts = [(xi, r) for xi, r in zip(x, found, strict=True) if r is not None]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            mean = [p[1][score] for p in pts]
            low, high = [p[1][f"{score}_low"] for p in pts], [p[1][f"{score}_high"] for p in pts]
            if len(keeps) == 1 and len(layers) == 1:
                ax.bar(i, mean[0], yerr=[[mean[0] - low[0]], [high[0] - mean[0]]], capsize=4, **_style(method, i))
                continue
            ax.plot(xs, mean, "o-", ms=3, **_style(method, i))
            ax.fill_between(xs, low, high, alpha=0.18, color=_style(method, i)["color"], lw=0)
        if len(keeps) > 1:
            ax.set_xlabel("fraction of pixels kept")
            ax.set_title(f"layer {layer}", fontsize=9)
        elif len(layers) > 1:
            ax.set_xticks(range(len(layers)), layers, rotation=45, fontsize=8)
            ax.set_xlabel("layer")
            ax.set_title(f"every layer, keep {keeps[0]:g}", fontsize=9)
        else:
            ax.set_xticks(range(len(methods)), [LABELS.get(m, m) for m in methods], rotation=20, fontsize=8)
            ax.set_title(f"layer {layers[0]}, keep {keeps[0]:g}", fontsize=9)
        if score != "retained_score":  # the others lie in [0, 1]
            ax.set_ylim(0, 1.02)
        ax.set_ylabel(UNITS.get(score, score), fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    lines = len(keeps) > 1 or len(layers) > 1
    note = f"mean over images; {'bands' if lines else 'bars'}: 95 % bootstrap interval"
    if lines:
        axes[0].legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, int(width * 14)) + "\n" + note if title else note, fontsize=9)
    return fig


def figure_curves(points: Sequence[dict], areas: Sequence[dict], layer: str | None = None, title: str = ""):
    """Deletion and insertion curves of the class probability at one layer (default: the first), with 95 %
    bootstrap bands; the legend gives each area under the curve (AUC)."""
    from matplotlib.figure import Figure

    layer = layer or points[0]["layer"]
    auc = {(a["method"], a["mode"]): a["auc"] for a in areas if a["layer"] == layer}
    fig = Figure(figsize=(8.5, 3.3), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, mode, better in zip(axes, ("deletion", "insertion"), ("lower", "higher"), strict=True):
        mine = [p for p in points if p["layer"] == layer and p["mode"] == mode]
        for i, method in enumerate(dict.fromkeys(p["method"] for p in mine)):
            pts = [p for p in mine if p["method"] == method]
            style = _style(method, i)
            style["label"] += f" (AUC {auc[(method, mode)]:.3f})"
            ax.plot([p["fraction"] for p in pts], [p["class_probability"] for p in pts], "o-", ms=3, **style)
            ax.fill_between([p["fraction"] for p in pts], [p["low"] for p in pts], [p["high"] for p in pts],
                            alpha=0.15, color=style["color"], lw=0)
        what = "removed (most relevant first)" if mode == "deletion" else "kept (most relevant first)"
        ax.set_xlabel(f"fraction of pixels {what}", fontsize=8)
        ax.set_title(f"{mode} at {layer}: {better} AUC is better", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("probability of the predicted class", fontsize=8)
    if title:
        fig.suptitle(textwrap.fill(title, 120), fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------- run


def _validate(args: argparse.Namespace) -> None:
    if any(not 0 < k <= 1 for k in args.keep):
        raise UsageError(f"--keep takes fractions in (0, 1], got {args.keep}")
    for name in ("images", "batch_size", "chunk", "bootstrap"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    from ..baselines import METHODS

    unknown = [m for m in args.methods if m != fd.RANDOM and m not in METHODS]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)}; choose from {fd.RANDOM}, {', '.join(METHODS)}")


def prepare(args: argparse.Namespace):
    """Model, image set and layers from the arguments (``UsageError`` for bad ones). Shared with ``fig2``."""
    from ..datasets import open_images
    from ..layers import resolve_layers
    from ..models import load_model
    from ..preprocessing import preprocessing_of

    device = pick_device(args.device)
    try:
        model = load_model(args.model, device=device)
    except (TypeError, ValueError) as exc:  # WeightsUnavailableError is not one: it is reported as a failure
        raise UsageError(str(exc)) from exc
    try:
        images = open_images(args.data, args.images, args.seed, model=model)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"--data {args.data}: {exc}") from exc
    try:
        layers = args.layer or [fd.paper_layer(model, preprocessing_of(model).crop)]
        names = [s.name for s in resolve_layers(model, layers)[0]]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--layer: {exc}") from exc
    return model, images, names, device


def run(args: argparse.Namespace) -> int:
    from ..models import WeightsUnavailableError

    try:
        _validate(args)
        model, images, layers, device = prepare(args)
        out = output_folder(args.out)
    except UsageError as exc:
        print(f"pwawidgets reproduce fidelity: error: {exc}", file=sys.stderr)
        return 2
    except WeightsUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"seed {args.seed}: {images.description}; {args.model} on {device}; layers {', '.join(layers)}; "
          f"keep {', '.join(f'{k:g}' for k in args.keep)}; fill {args.fill}; sign {args.sign}")
    (out / "images.txt").write_text(f"# seed {args.seed}: {images.description}\n" + "\n".join(images.names) + "\n")
    result = fd.evaluate(model, images.batches(args.batch_size), args.methods, layers, args.keep,
                         curves=fd.CURVE_FRACTIONS if args.curves else (), fill=args.fill, sign=args.sign,
                         seed=args.seed, chunk=args.chunk, total=len(images))
    for note in result.notes:
        print(f"note: {note}")
    rows = [r for r in summary_rows(result, args.bootstrap) if r["keep"] in {float(k) for k in args.keep}]
    write_csv(out / "fidelity.csv", rows)
    title = f"{args.model}, {images.description}, fill {args.fill}, {args.sign} ranking"
    figure_fidelity(rows, title=title).savefig(out / "fidelity.png", dpi=120)
    print(f"{'method':>14} {'layer':>8} {'keep':>5} {'images':>6}  top-5 intersection [95 % CI]   top-1 agreement")
    for r in rows:
        print(f"{r['method']:>14} {r['layer']:>8} {r['keep']:5.2f} {r['images']:6d}  {r['top5_intersection']:.3f} "
              f"[{r['top5_intersection_low']:.3f}, {r['top5_intersection_high']:.3f}]"
              f"{r['top1_agreement']:18.3f}")
    if args.curves:
        points, areas = curve_rows(result, args.bootstrap)
        write_csv(out / "curves.csv", points)
        write_csv(out / "areas.csv", areas)
        figure_curves(points, areas, title=title).savefig(out / "deletion_insertion.png", dpi=120)
    if result.localisation:
        write_csv(out / "pointing.csv", pointing_rows(result, args.bootstrap))
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0
