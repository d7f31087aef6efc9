"""The paper's Fig. 3: bias / score at the input and after every ReLU, averaged over images.

Protocol (the paper leaves it open; here it is fixed and written into fig3.csv):
  * score: the logit of the predicted class (--target top1, default), or the mean of the ratios of the k highest
    classes of each image (--target top5, ...). "Averaged among the 20 classes" of Pascal VOC is read as: images
    drawn from VOC's 20 classes, each explained for the ImageNet class the network predicts;
  * a ratio is computed per image and class, b_l / S; pairs whose score is not positive are left out (their
    number is written), the rest averaged: bias_ratio is the mean, with the median, the quartiles and the ratio
    of means (sum b / sum S) beside it;
  * layers: the input (normalised reference) and every ReLU-like output, in the order they run (depth 0, 1, ...).
Written to --out: fig3.csv (one row per layer), fig3_per_image.csv, fig3.png, images.txt.

examples:
  python -m pwawidgets reproduce fig3 --model vgg19 --data ~/data/VOC --images 300 --out out/
  python -m pwawidgets reproduce fig3 --model efficientnet_lite0 --data bundled --out out/
  python -m pwawidgets reproduce fig3 --model mini_vgg_fc --data shapes --images 300 --out out/
"""

from __future__ import annotations

import argparse
import sys
import time

from .common import UsageError, output_folder, pick_device, write_csv

HELP = "the paper's Fig. 3: bias / score after every ReLU, averaged over images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name: vgg19, vgg19_bn, resnet101 (cached weights), "
                        "efficientnet_lite0 or a mini-zoo net")
    parser.add_argument("--data", required=True, help="a folder of images, a Pascal VOC folder, 'bundled' (the "
                        "photos shipped with installed packages) or 'shapes' (generated images, for the mini zoo)")
    parser.add_argument("--images", type=int, default=300, help="number of images drawn (default 300)")
    parser.add_argument("--target", default="top1", help="top1 (the predicted class, default) or top<k>: the "
                        "mean ratio over the k highest classes of each image")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per decomposition pass (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw of images (default 0)")
    parser.add_argument("--out", required=True, help="output folder")


def layer_rows(curve, model_name: str, description: str, target: str) -> list[dict]:
    """One row per layer: depth, mean/median/quartiles of the per-image ratios, ratio of means, counts."""
    mean, median = curve.summary("mean"), curve.summary("median")
    ratio_of_means, quartiles = curve.summary("ratio_of_means"), curve.quantiles()
    kept = (~curve.per_image().isnan()).sum(0)
    return [{"layer": name, "depth": d, "bias_ratio": float(mean[d]), "median": float(median[d]),
             "q25": float(quartiles[0, d]), "q75": float(quartiles[1, d]), "ratio_of_means": float(ratio_of_means[d]),
             "images": int(curve.score.shape[0]), "images_used": int(kept[d]), "scores_not_positive": curve.skipped(),
             "target": target, "model": model_name, "data": description}
            for d, name in enumerate(curve.layers)]


def image_rows(curve, names: list[str]) -> list[dict]:
    """One row per image and class: the score and the ratio at every layer (empty where the score is not positive)."""
    ratios = curve.ratios()
    rows = []
    for i, name in enumerate(names):
        for j in range(curve.score.shape[1]):
            row = {"image": name, "class": int(curve.target[i, j]), "score": float(curve.score[i, j])}
            row.update({layer: ("" if ratios[i, j, d].isnan() else float(ratios[i, j, d]))
                        for d, layer in enumerate(curve.layers)})
            rows.append(row)
    return rows


def figure(curve, title: str):
    """Mean bias/score per layer with the middle half of the images, against depth."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    depth = curve.depth
    quartiles = curve.quantiles().numpy()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.22 * len(depth) + 2), 3.4))
    ax.fill_between(depth, quartiles[0], quartiles[1], alpha=0.25, label="middle 50 % of images")
    ax.plot(depth, curve.summary("mean").numpy(), "o-", ms=3, label="mean over images")
    ax.plot(depth, curve.summary("ratio_of_means").numpy(), "--", lw=1, label="ratio of means (sum b / sum S)")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("depth (0 = input, then every ReLU in the order they run)")
    ax.set_ylabel("bias / score")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _validate(args: argparse.Namespace) -> None:
    for name in ("images", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    k = args.target[3:]
    if not (args.target.startswith("top") and k.isdigit() and int(k) >= 1):
        raise UsageError(f"--target {args.target!r}: use top1 (the predicted class) or top<k>, e.g. top5")


def run(args: argparse.Namespace) -> int:
    from ..datasets import open_images
    from ..models import WeightsUnavailableError, check_model_name, load_model
    from ..robustness import bias_curve

    try:
        _validate(args)
        check_model_name(args.model)
        device = pick_device(args.device)
        model = load_model(args.model, device=device)
        try:
            images = open_images(args.data, args.images, args.seed, model=model)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--data {args.data}: {exc}") from exc
        out = output_folder(args.out)
    except (UsageError, ValueError, TypeError) as exc:
        print(f"pwawidgets reproduce fig3: error: {exc}", file=sys.stderr)
        return 2
    except WeightsUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"seed {args.seed}: {images.description}; {args.model} on {device}; target {args.target}")
    (out / "images.txt").write_text(f"# seed {args.seed}: {images.description}\n" + "\n".join(images.names) + "\n")
    start = time.perf_counter()
    batches = (x.to(device) for x, _ in images.batches(args.batch_size))
    curve = bias_curve(model, batches, "top1" if args.target == "top1" else args.target, progress=True)
    seconds = time.perf_counter() - start
    rows = layer_rows(curve, args.model, images.description, args.target)
    write_csv(out / "fig3.csv", rows)
    write_csv(out / "fig3_per_image.csv", image_rows(curve, images.names))
    title = (f"{args.model}: {images.description}\nscore of the {args.target} class(es); {curve.skipped()} "
             "non-positive score(s) left out")
    figure(curve, title).savefig(out / "fig3.png", dpi=120)
    print(f"{len(images)} images in {seconds:.1f} s ({len(images) / seconds:.1f} images/s); "
          f"{curve.skipped()} score(s) not positive, left out")
    print(f"{'depth':>5} {'layer':>28} {'mean':>7} {'median':>7} {'ratio of means':>15}")
    for r in rows:
        print(f"{r['depth']:5d} {r['layer']:>28} {r['bias_ratio']:7.3f} {r['median']:7.3f} {r['ratio_of_means']:15.3f}")
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0
