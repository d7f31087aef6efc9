"""Draw the README's gallery: the linear regions of a toy ReLU net, Fig. 2 on a real ImageNet network, and Fig. 3.

    python docs/make_figure.py      # writes docs/gallery_regions.png, docs/gallery_fig2.png, docs/gallery_fig3.png

Everything runs offline: the toy net trains in seconds, EfficientNet-Lite0's weights ship with a package, and the
photos ship with scikit-image, scikit-learn and matplotlib.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import pwawidgets as pw  # noqa: E402
from pwawidgets import data, regions  # noqa: E402
from pwawidgets.reproduce import fig2, fig3  # noqa: E402
from pwawidgets.robustness import bias_curve  # noqa: E402

HERE = Path(__file__).parent


def toy_regions() -> None:
    toy = regions.train_toy("moons", (5, 5, 5), seed=0)
    found = regions.enumerate_regions(toy.model, toy.bounds)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    regions.plot_regions(ax, found, toy.X, toy.y)
    ax.set_title(f"a 3×5 ReLU net on two moons: {len(found)} linear regions,\nthe exact decision boundary in black",
                 fontsize=9)
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    fig.tight_layout()
    fig.savefig(HERE / "gallery_regions.png", dpi=90)


def imagenet_fig2(model) -> None:
    figure = fig2.draw(model, data.sample_photo("coffee"), ["stem", "stage3", "stage5", "stage7", "head"])
    figure.savefig(HERE / "gallery_fig2.png", dpi=80)


def imagenet_fig3(model) -> None:
    photos = [pw.load_image(data.sample_photo(name), model=model) for name in data.PHOTOS]
    curve = bias_curve(model, photos, "top1")
    figure = fig3.figure(curve, f"EfficientNet-Lite0 (ImageNet weights), the {len(photos)} bundled photos: "
                                "bias / score of the predicted class after every ReLU6")
    figure.savefig(HERE / "gallery_fig3.png", dpi=90)


def main() -> None:
    toy_regions()
    model = pw.load_model("efficientnet_lite0")
    imagenet_fig2(model)
    imagenet_fig3(model)


if __name__ == "__main__":
    main()
