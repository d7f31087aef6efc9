"""``python -m pwawidgets reproduce fidelity|fig2`` on folders the tests write: files, columns, exit statuses."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from pwawidgets import cli, data
from pwawidgets.images import ImageWarning


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three bundled photos saved as files in an ImageNet-style tree, and a text file that is not an image."""
    root = tmp_path_factory.mktemp("photos")
    for name, folder in (("chelsea", "cat"), ("coffee", "cup"), ("rocket", "rocket")):
        (root / folder).mkdir()
        Image.fromarray(data.sample_photo(name)).save(root / folder / f"{name}.jpg")
    (root / "README.txt").write_text("not an image")
    return root


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fidelity_on_a_folder_of_photos(photos, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["reproduce", "fidelity", "--model", "efficientnet_lite0", "--data", str(photos), "--images", "2",
            "--device", "cpu", "--bootstrap", "200", "--out", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("seed 0: 2 images from") and "layers stage3" in printed
    rows = read(out / "fidelity.csv")
    assert list(rows[0])[:5] == ["method", "layer", "keep", "images", "top5_intersection"]
    assert [(r["method"], r["layer"], r["keep"], r["images"]) for r in rows] == [
        (m, "stage3", "0.3", "2") for m in ("ours", "gradcam", "gradient", "random")]
    assert all(0 <= float(r["top5_intersection_low"]) <= float(r["top5_intersection"])
               <= float(r["top5_intersection_high"]) <= 1 for r in rows)
    drawn = (out / "images.txt").read_text().splitlines()
    assert drawn[0].startswith("# seed 0") and len(drawn) == 3
    assert (out / "fidelity.png").stat().st_size > 10_000

    again = tmp_path / "again"
    assert cli.main(args[:-1] + [str(again)]) == 0  # same seed, same images, same table
    assert (again / "fidelity.csv").read_text() == (out / "fidelity.csv").read_text()

    everything = tmp_path / "everything"
    assert cli.main(args[:-1] + [str(everything), "--keep", "1.0", "--fill", "black"]) == 0
    assert {r["top5_intersection"] for r in read(everything / "fidelity.csv")} == {"1.0"}


def test_fidelity_on_the_mini_zoo_with_layers_keeps_and_curves(tmp_path, capsys):
    out = tmp_path / "zoo"
    assert cli.main(["reproduce", "fidelity", "--model", "mini_vgg", "--data", "shapes", "--images", "12",
                     "--layer", "blocks", "--keep", "0.1", "0.5", "--methods", "ours", "random", "--curves",
                     "--bootstrap", "100", "--device", "cpu", "--out", str(out)]) == 0
    rows = read(out / "fidelity.csv")
    assert len(rows) == 2 * 4 * 2 and {r["keep"] for r in rows} == {"0.1", "0.5"}
    assert {r["layer"] for r in rows} == {"conv1", "conv2", "conv3", "conv4"}
    curves = read(out / "curves.csv")
    assert len(curves) == 2 * 4 * 2 * 11 and set(curves[0]) >= {"mode", "fraction", "class_probability"}
    areas = read(out / "areas.csv")
    assert {(r["mode"]) for r in areas} == {"deletion", "insertion"} and len(areas) == 16
    pointing = read(out / "pointing.csv")  # the generated shapes come with object masks
    assert len(pointing) == 8 and 0 <= float(pointing[0]["pointing"]) <= 1
    for name in ("fidelity.png", "deletion_insertion.png"):
        assert (out / name).stat().st_size > 10_000


@pytest.mark.parametrize(("extra", "message"), [
    (["--keep", "1.5"], "--keep takes fractions in (0, 1]"),
    (["--images", "0"], "--images must be at least 1"),
    (["--methods", "ours", "lime"], "unknown method(s) lime"),
    (["--layer", "conv9"], "--layer: unknown layer 'conv9'"),
    (["--data", "/no/such/folder"], "--data /no/such/folder: no folder"),
    (["--fill", "white"], "invalid choice: 'white'"),
    (["--layer", "all"], "--layer all: every ReLU output is too many rows for the table; give 'blocks' or layer"),
    (["--layer", "input", "--methods", "gradcam_captum", "layercam"],
     "--methods gradcam_captum layercam at --layer input: each of them needs a feature layer"),
    (["--model", "mini_vgg_fc", "--layer", "conv2", "classifier.1"],
     "--layer classifier.1: its output has shape (1, 128), no spatial map (C x H x W); choose a convolutional "
     "layer, e.g. conv2"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    args = ["reproduce", "fidelity", "--model", "mini_vgg", "--data", "shapes", "--images", "2",
            "--device", "cpu", "--out", str(tmp_path / "out")]
    assert cli.main(args + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_an_empty_folder_and_an_unknown_model(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["reproduce", "fidelity", "--model", "mini_vgg", "--data", str(tmp_path / "empty"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert cli.main(["reproduce", "fidelity", "--model", "vgg91", "--data", "shapes", "--out", str(tmp_path)]) == 2
    assert "unknown model 'vgg91'" in capsys.readouterr().err


def test_fig2_for_files_and_bundled_photos(photos, tmp_path, capsys):
    out = tmp_path / "fig2"
    image = photos / "cat" / "chelsea.jpg"
    assert cli.main(["reproduce", "fig2", "--model", "mini_vgg", "--image", str(image), "coffee",
                     "--device", "cpu", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["fig2_chelsea.png", "fig2_coffee.png"]
    assert Image.open(out / "fig2_chelsea.png").size[0] > 500
    assert cli.main(["reproduce", "fig2", "--model", "mini_vgg", "--image", "nothing.png", "--out", str(out)]) == 2
    assert "no such file, nor a bundled photo" in capsys.readouterr().err
    assert cli.main(["reproduce", "fig2", "--model", "mini_vgg", "--image", str(photos / "README.txt"),
                     "--out", str(out)]) == 2
    assert "not an image format" in capsys.readouterr().err


def test_output_folder_and_device_errors_come_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    base = ["--model", "mini_vgg", "--device", "cpu"]
    cases = [
        (["reproduce", "fidelity", *base, "--data", "shapes", "--out", str(a_file)], "a file of that name exists"),
        (["reproduce", "fig3", *base, "--data", "shapes", "--out", str(a_file)], "a file of that name exists"),
        (["reproduce", "fig2", *base, "--image", "coffee", "--out", str(a_file)], "a file of that name exists"),
        (["reproduce", "fig2", "--model", "mini_vgg", "--device", "tpu", "--image", "coffee", "--out",
          str(tmp_path / "o")], "--device"),
        (["reproduce", "fig2", *base, "--image", "coffee", "--layer", "all", "--out", str(tmp_path / "o")],
         "give 'blocks' or layer names"),
    ]
    if not torch.cuda.is_available():
        cases.append((["reproduce", "fidelity", "--model", "mini_vgg", "--device", "cuda", "--data", "shapes",
                       "--out", str(tmp_path / "o")], "no CUDA device here"))
    for args, message in cases:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "o").exists()


def test_a_broken_file_in_the_folder_is_skipped_with_a_warning(photos, tmp_path, capsys):
    broken = tmp_path / "photos"
    broken.mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(data.sample_photo(name)).save(broken / f"{name}.png")
    (broken / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(ImageWarning, match="broken.jpg"):
        assert cli.main(["reproduce", "fidelity", "--model", "mini_vgg", "--data", str(broken), "--methods", "ours",
                         "--bootstrap", "50", "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    assert [r["images"] for r in read(tmp_path / "out" / "fidelity.csv")] == ["2"]


def test_the_module_runs_as_a_program(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pwawidgets", "reproduce", "fig2", "--model", "efficientnet_lite0",
                           "--image", "coffee", "--device", "cpu", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fig2_coffee.png").exists()


def test_your_own_model_on_bundled_photos(tmp_path, capsys):
    """A factory in a file, --image-size for its input, fewer photos than --images: a note, then the table."""
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def build_model():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))\n")
    out = tmp_path / "out"
    assert cli.main(["reproduce", "fidelity", "--model", str(tmp_path / "net.py"), "--image-size", "32",
                     "--data", "bundled", "--images", "500", "--layer", "3", "--methods", "ours", "random",
                     "--bootstrap", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    held = len(data.PHOTOS)
    assert f"note: --images 500: --data bundled holds {held}; all of them are used" in printed
    rows = read(out / "fidelity.csv")
    assert [(r["method"], r["layer"], int(r["images"])) for r in rows] == [("ours", "3", held), ("random", "3", held)]


def test_fig2_for_your_own_model_and_a_layer_without_a_map(tmp_path, capsys):
    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),\n"
        "                         nn.Linear(4 * 16 * 16, 10))\n")
    source = f"{tmp_path / 'net.py'}:make"
    out = tmp_path / "out"
    assert cli.main(["reproduce", "fig2", "--model", source, "--image-size", "32", "--image", "chelsea",
                     "--layer", "1", "--out", str(out)]) == 0
    assert (out / "fig2_chelsea.png").is_file()
    assert cli.main(["reproduce", "fig2", "--model", source, "--image-size", "32", "--image", "chelsea",
                     "--layer", "1", "4", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("pwawidgets reproduce fig2: error: --layer 4: its output has shape (1, 10), no spatial map "
                   "(C x H x W); choose a convolutional layer, e.g. 1")
    assert not (tmp_path / "o2").exists()
