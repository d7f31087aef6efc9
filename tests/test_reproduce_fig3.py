"""``python -m pwawidgets reproduce fig3``: the CSV holds the stated protocol's numbers; usage errors exit 2."""

from __future__ import annotations

import csv
import math
import urllib.error

import pytest
import torch
from PIL import Image

import pwawidgets as pw
from pwawidgets import cli, data


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_mini_zoo_on_generated_shapes_matches_decompose(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["reproduce", "fig3", "--model", "mini_vgg_bn", "--data", "shapes", "--images", "12",
                     "--batch-size", "5", "--out", str(out)]) == 0
    assert {"fig3.csv", "fig3_per_image.csv", "fig3.png", "images.txt"} <= {p.name for p in out.iterdir()}
    rows = _rows(out / "fig3.csv")
    assert list(rows[0])[:3] == ["layer", "depth", "bias_ratio"]
    model = pw.load_model("mini_vgg_bn")
    images = data.shapes(12, seed=0).images  # what --data shapes draws with the default seed
    dec = pw.decompose(model, images, None, ["input", "all"])
    assert [r["layer"] for r in rows] == dec.layers and [int(r["depth"]) for r in rows] == list(range(len(rows)))
    positive = dec.score > 0
    for r in rows:
        ratio = dec.bias[r["layer"]][positive] / dec.score[positive]
        assert float(r["bias_ratio"]) == pytest.approx(float(ratio.mean()), rel=1e-5, abs=1e-6)
        assert float(r["median"]) == pytest.approx(float(ratio.median()), rel=1e-5, abs=1e-6)
        total = dec.bias[r["layer"]][positive].sum() / dec.score[positive].sum()
        assert float(r["ratio_of_means"]) == pytest.approx(float(total), rel=1e-5, abs=1e-6)
        assert int(r["images"]) == 12 and int(r["scores_not_positive"]) == int((~positive).sum())
        assert r["target"] == "top1" and r["model"] == "mini_vgg_bn"
    per_image = _rows(out / "fig3_per_image.csv")
    assert len(per_image) == 12 and float(per_image[0]["score"]) == pytest.approx(float(dec.score[0]), rel=1e-5)
    assert "images/s" in capsys.readouterr().out


def test_a_folder_of_photos_with_top3(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, name in enumerate(("coffee", "rocket", "chelsea")):
        Image.fromarray(data.sample_photo(name)).save(folder / ("sub" if i else "") / f"{name}.png")
    out = tmp_path / "out"
    assert cli.main(["reproduce", "fig3", "--model", "efficientnet_lite0", "--data", str(folder), "--images", "2",
                     "--target", "top3", "--out", str(out)]) == 0
    rows = _rows(out / "fig3.csv")
    assert len(rows) == 34 and rows[0]["layer"] == "input" and rows[-1]["layer"] == "_act1"  # input + 33 ReLU6
    assert all(math.isfinite(float(r["bias_ratio"])) for r in rows)
    assert len(_rows(out / "fig3_per_image.csv")) == 2 * 3  # two images drawn, three classes each
    assert len((out / "images.txt").read_text().splitlines()) == 3  # a header and the two images drawn


@pytest.mark.parametrize("argv, message", [
    (["--model", "mini_vgg", "--data", "shapes", "--images", "0"], "--images must be at least 1"),
    (["--model", "mini_vgg", "--data", "/no/such/folder"], "--data /no/such/folder"),
    (["--model", "mini_vgg", "--data", "shapes", "--target", "best"], "--target 'best'"),
    (["--model", "not_a_model", "--data", "shapes"], "unknown model"),
    (["--model", "mini_vgg", "--data", "shapes", "--device", "cuda:7"], "--device"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
    if "cuda" in " ".join(argv) and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert cli.main(["reproduce", "fig3", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_uncached_weights_exit_1_without_a_download(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert cli.main(["reproduce", "fig3", "--model", "resnet18", "--data", "bundled", "--out", str(tmp_path)]) == 1
    assert "could not be downloaded" in capsys.readouterr().err


USER_NET = """
import torch
from torch import nn

def build_model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                         nn.Linear(6 * 16 * 16, 16), nn.ReLU(), nn.Linear(16, 4))
"""


def test_your_own_model_with_weights_on_shapes_matches_decompose(tmp_path, capsys):
    (tmp_path / "net.py").write_text(USER_NET)
    namespace: dict = {}
    exec(USER_NET, namespace)  # the test's own copy of the factory
    reference = namespace["build_model"]()
    with torch.no_grad():
        reference[0].weight.mul_(-1.5)  # weights that differ from the factory's: --weights must be read
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "out"
    assert cli.main(["reproduce", "fig3", "--model", str(tmp_path / "net.py"), "--weights", str(tmp_path / "w.pt"),
                     "--data", "shapes", "--images", "5", "--target", "top2",
                     "--out", str(out)]) == 0
    assert "declares no normalization: it is given pixels in [0, 1]" in capsys.readouterr().out
    dec = pw.decompose(reference.eval(), data.shapes(5, seed=0).images, "top2", ["input", "all"])
    per_image = _rows(out / "fig3_per_image.csv")
    assert [float(r["score"]) for r in per_image] == pytest.approx(dec.score.flatten().tolist(), rel=1e-5)
    assert [r["layer"] for r in _rows(out / "fig3.csv")] == dec.layers


@pytest.mark.parametrize("argv, message", [
    (["--model", "mini_vgg", "--data", "shapes", "--images", "4", "--target", "top99"],
     "--target top99: the model has 6 classes; use top1 to top6"),
    (["--model", "NET", "--data", "bundled", "--images", "2"], "--image-size: NET does not say what input size it "
     "takes; give it, e.g. --image-size 32 (or set model.input_size in your factory)"),
    (["--model", "NET", "--data", "shapes", "--images", "2", "--image-size", "32"],
     "--image-size 32: --data shapes makes 64 x 64 images; give a folder of images for another size"),
    (["--model", "NET", "--data", "bundled", "--images", "2", "--image-size", "32"],
     "the model cannot run on these images (one image: (1, 3, 32, 32)): mat1 and mat2 shapes cannot be multiplied"),
])
def test_what_used_to_print_a_traceback_is_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "net.py").write_text(USER_NET)
    argv = [str(tmp_path / "net.py") if a == "NET" else a for a in argv]
    message = message.replace("NET", str(tmp_path / "net.py"))
    assert cli.main(["reproduce", "fig3", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_too_many_shapes_are_refused_before_any_is_generated(tmp_path, capsys, monkeypatch):
    def generate(*args, **kwargs):
        raise AssertionError("shapes were generated")

    monkeypatch.setattr(data, "shapes", generate)
    for experiment in ("fig3", "fidelity"):
        assert cli.main(["reproduce", experiment, "--model", "mini_vgg", "--data", "shapes", "--images", "200000",
                         "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("--images 200000 with --data shapes: the shapes are generated up front and would need "
                            "about 10.7 GB of memory; use --images 40320 or fewer")
