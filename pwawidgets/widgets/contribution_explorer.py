"""ContributionExplorer: a photo's exact contributions at every block, against Grad-CAM and the gradient.

A new image is explained once: one forward pass for the top-k classes, then one
``decompose(model, x, target=top_k, layers=["input", *blocks], keep_gradients=True)`` call, which gives the
contributions, the bias and (from the kept activations and gradients) Grad-CAM and the gradient at every
layer. The maps are reduced to one ``H_l x W_l`` array per (method, layer, class) and kept; a class outside
the top-k is decomposed once when first asked for, then kept too. Moving a slider only re-renders from this
cache: numpy colormap, blend and PNG into an ``ipywidgets.Image`` (no figure, no network pass).

All state is in one :class:`ExplorerState`; rendering reads only the state. Errors (a bad upload, an unknown
class name, a model that is not piece-wise affine) are shown inside the widget (``explorer.message``).
"""

from __future__ import annotations

import functools
import html
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from torch import nn

from .. import viz
from ..baselines import maps_from, resize_maps
from ..core import decompose
from ..images import IMAGENET_NORMALIZATION, ImageLoadError, ImageWarning, display_image, load_image
from ..layers import INPUT, layer_presets
from ..models import imagenet_categories
from ._sync import close_tree, holding

__all__ = ["ClassExplanation", "ContributionExplorer", "ExplorerState", "Preprocess", "preprocessing_for"]

METHODS: dict[str, str] = {"ours": "contributions (ours)", "gradcam": "Grad-CAM", "gradient": "gradient"}
SIDE_BY_SIDE = "side"
MAX_UPLOAD_BYTES = 50 * 2**20
MINI_SIZE = 64


# ------------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input, and how big it is shown."""

    size: int  # shorter side after resizing
    crop: int | None  # centre crop
    normalize: bool
    normalization: tuple[tuple[float, ...], tuple[float, ...]]
    display: int  # side of the displayed picture, pixels


def _is_mini(model: nn.Module) -> bool:
    try:
        from ..zoo import MiniResNet, MiniVGG
    except ImportError:
        return False
    return isinstance(model, (MiniVGG, MiniResNet))


def preprocessing_for(model: nn.Module, image_size: int | None = None) -> Preprocess:
    """Preprocessing decided from the model.

    Input size: ``image_size`` if given, else a ``model.input_size`` attribute, else 64 for the mini zoo and
    224 (resize 256, centre crop 224) for ImageNet classifiers. Normalisation: ``model.normalization``; a model
    whose normalisation is ``((0, 0, 0), (1, 1, 1))`` (the mini zoo) takes raw pixels in [0, 1].
    """
    norm = getattr(model, "normalization", None) or IMAGENET_NORMALIZATION
    mean, std = (tuple(float(v) for v in norm[0]), tuple(float(v) for v in norm[1]))
    raw = all(v == 0 for v in mean) and all(v == 1 for v in std)
    side = image_size or getattr(model, "input_size", None) or (MINI_SIZE if _is_mini(model) else None)
    if side is None:
        size, crop = 256, 224
    else:
        size, crop = int(side), int(side)
    display = crop if crop >= 200 else crop * max(1, round(256 / crop))
    return Preprocess(size, crop, not raw, (mean, std), display)


@dataclass
class ClassExplanation:
    """What is shown for one class of the current image; maps ``(H_l, W_l)`` on the model's device."""

    index: int
    score: float
    bias: dict[str, float]
    maps: dict[tuple[str, str], torch.Tensor]  # (method, layer) -> map on the layer grid

    def ratio(self, layer: str) -> float:
        """``bias / score`` at a layer (NaN when the score is 0)."""
        return self.bias[layer] / self.score if self.score != 0 else math.nan


@dataclass
class ExplorerState:
    """The whole interactive state: model facts, the current image and its cached explanations, the choices."""

    model_label: str
    untrained: bool
    class_names: list[str]
    layers: list[str]
    preprocess: Preprocess
    top_k: int = 5
    source: str = ""
    inputs: torch.Tensor | None = None  # (1, 3, H, W) on the model's device
    picture: np.ndarray | None = None  # display-size RGB floats in [0, 1]
    probabilities: torch.Tensor | None = None  # (C,)
    top: list[int] = field(default_factory=list)
    explained: dict[int, ClassExplanation] = field(default_factory=dict)
    layer: str = INPUT
    target: int = 0
    method: str = "ours"
    sign: str = "positive"
    keep: float = 100.0
    opacity: float = 0.6
    error: str = ""
    note: str = ""
    stats: dict[str, int] = field(default_factory=lambda: {"forwards": 0, "decompositions": 0, "renders": 0})

    @property
    def message(self) -> str:
        return self.error or self.note


# ---------------------------------------------------------------------------------------------- helpers


def _guard(what: str) -> Callable[[Callable], Callable]:
    """Run a callback; show any exception as a message inside the widget (never a traceback)."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self: ContributionExplorer, *args: Any, **kwargs: Any) -> Any:
            try:
                result = method(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - every error of a callback is shown to the learner
                plain = isinstance(e, (ImageLoadError, LookupError, ValueError))
                text = str(e) if plain else f"{type(e).__name__}: {e}"
                self._set_error(f"{what}: {text}")
                return False
            if self.state.error:
                self._set_error("")
            return True if result is None else result

        return wrapper

    return decorate


def _class_names(model: nn.Module, n_classes: int | None) -> list[str]:
    names = getattr(model, "class_names", None)
    if names is not None:
        return [str(n) for n in names]
    if n_classes == 1000:
        return imagenet_categories()
    return [f"class {i}" for i in range(n_classes or 0)]


def _option_labels(names: Sequence[str]) -> list[str]:
    """Class names for completion; repeated names (ImageNet has two 'crane's) get their index appended."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [n if counts[n] == 1 else f"{n} (#{i})" for i, n in enumerate(names)]


def _sample_names(model: nn.Module) -> list[str]:
    from .. import data

    photos = list(data.SAMPLE_PHOTOS)
    if _is_mini(model):
        return [f"shape:{c}" for c in data.SHAPE_CLASSES] + photos
    return photos


def _sample_image(name: str) -> np.ndarray:
    """A sample picture by name: a scikit-image photo, or ``"shape:<class>"`` (a generated 64x64 shape)."""
    from .. import data

    if name.startswith("shape:"):
        cls = name.split(":", 1)[1]
        if cls not in data.SHAPE_CLASSES:
            raise LookupError(f"unknown shape {cls!r}; one of {', '.join(data.SHAPE_CLASSES)}")
        batch = data.shapes(len(data.SHAPE_CLASSES) * 4, seed=0)
        i = int((batch.labels == data.SHAPE_CLASSES.index(cls)).nonzero()[0, 0])
        return batch.images[i].permute(1, 2, 0).numpy()
    return data.sample_photo(name)


def _probability_text(p: float) -> str:
    return f"{p:.1%}" if p >= 0.001 else f"{p:.1e}"


# ----------------------------------------------------------------------------------------------- widget


class ContributionExplorer:
    """Explore the exact contributions of an image at every preset layer, against Grad-CAM and the gradient.

    ``ContributionExplorer(model, image)``: ``image`` is a sample name (``"chelsea"``, ``"shape:star"`` on a
    mini-zoo net), a path, bytes, a PIL image, an array, or a model-ready ``(1, 3, H, W)`` tensor; None picks
    the first sample. Testing surface: ``controls`` (the ipywidgets by name), :meth:`set_image`,
    :attr:`message`, :meth:`snapshot`; ``state`` holds everything shown.
    """

    def __init__(
        self,
        model: nn.Module,
        image: Any = None,
        *,
        top_k: int = 5,
        layer: str | None = None,
        method: str = "ours",
        sign: str = "positive",
        keep: float = 100.0,
        opacity: float = 0.6,
        image_size: int | None = None,
        class_names: Sequence[str] | None = None,
        label: str | None = None,
    ):
        self.model = model
        presets = layer_presets(model).get("blocks", {})
        layers = [INPUT, *presets]
        head = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
        names = list(class_names) if class_names is not None else _class_names(
            model, head.out_features if head is not None else None)
        untrained = getattr(model, "pretrained", None) is False
        base = label or getattr(model, "model_name", None) or type(model).__name__
        self.state = ExplorerState(
            model_label=base + (" (untrained: random weights)" if untrained else ""),
            untrained=untrained,
            class_names=names,
            layers=layers,
            preprocess=preprocessing_for(model, image_size),
            top_k=top_k,
            layer=layer if layer in layers else layers[-1],
            method=method,
            sign=sign,
            keep=float(keep),
            opacity=float(opacity),
        )
        self._syncing = False
        self._build_controls(model)
        self._connect()
        if not presets:
            self.state.note = "No preset blocks are known for this model: only the input layer is shown."
        if image is None:
            samples = _sample_names(model)
            image = "chelsea" if "chelsea" in samples and not _is_mini(model) else samples[0]
        self.set_image(image)
        if self.state.inputs is None:
            self._render()

    # ------------------------------------------------------------------ public surface

    @property
    def message(self) -> str:
        """The text shown to the user under the picture: an error, else a note; empty when all is well."""
        return self.state.message

    def snapshot(self) -> np.ndarray:
        """The picture the widget shows now, as an RGB uint8 array (decoded from the displayed PNG)."""
        return viz.from_png(self.image.value)

    @_guard("Could not use this image")
    def set_image(self, source: Any, name: str | None = None) -> bool:
        """Explain a new image (anything the picker takes); returns False and shows why if it cannot be used."""
        if isinstance(source, str) and source in self._samples:
            name, source = name or f"sample '{source}'", _sample_image(source)
        inputs, notes = self._prepare(source)
        self._install(inputs, notes, name or self._describe(source))
        return True

    @_guard("Class")
    def select_class(self, cls: int | str) -> bool:
        """Show class ``cls`` (an index or a name); a class outside the top-k is decomposed once, then cached."""
        index = self._class_index(cls)
        self._ensure_explained(index)
        self._sync_target_options()
        with self._hold():
            self.controls["target"].value = index
        self.state.target = index
        self._render()
        return True

    def summary(self) -> dict[str, Any]:
        """The numbers shown for the current class and layer: score, bias, their ratio, the contributions' sum."""
        s = self.state
        ex = s.explained[s.target]
        p = float(s.probabilities[s.target]) if s.probabilities is not None else math.nan
        bias = ex.bias[s.layer]
        return {
            "class": s.target, "name": s.class_names[s.target] if s.target < len(s.class_names) else str(s.target),
            "probability": p, "layer": s.layer, "score": ex.score, "bias": bias,
            "contributions": ex.score - bias, "bias_ratio": ex.ratio(s.layer),
        }

    def close(self) -> None:
        """Close every widget of the explorer and drop its cached maps and image.

        ipywidgets keeps each open widget (and so the explorer behind its callbacks, and the model) alive until it
        is closed: close an explorer you no longer need to give its memory back.
        """
        close_tree(self.widget)
        s = self.state
        s.explained.clear()
        s.inputs = s.picture = s.probabilities = None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------ building

    def _build_controls(self, model: nn.Module) -> None:
        s = self.state
        self._samples = _sample_names(model)
        self._labels = _option_labels(s.class_names)
        self._label_index = {lab: i for i, lab in enumerate(self._labels)}
        wide = W.Layout(width="420px")
        c: dict[str, W.Widget] = {
            "sample": W.Dropdown(options=[("sample image…", "")] + [(n, n) for n in self._samples], value="",
                                 description="image", layout=W.Layout(width="260px")),
            "path": W.Text(placeholder="path to an image file", layout=W.Layout(width="260px")),
            "load": W.Button(description="load", icon="folder-open", layout=W.Layout(width="80px")),
            "upload": W.FileUpload(accept="image/*", multiple=False, description="upload"),
            "target": W.Dropdown(description="class", options=[], layout=wide),
            "class_name": W.Combobox(placeholder="any class by name…", options=self._labels,
                                     ensure_option=False, continuous_update=False, description="find",
                                     layout=wide),
            "layer": W.SelectionSlider(options=s.layers, value=s.layer, description="layer",
                                       continuous_update=True, layout=wide),
            "method": W.ToggleButtons(options=[(lab, key) for key, lab in METHODS.items()]
                                      + [("side by side", SIDE_BY_SIDE)], value=s.method, description="method"),
            "sign": W.ToggleButtons(options=[("positive", "positive"), ("negative", "negative"),
                                             ("both |c|", "both"), ("diverging ±", "diverging")],
                                    value=s.sign, description="sign"),
            "threshold": W.FloatSlider(value=s.keep, min=1, max=100, step=1, description="keep top %",
                                       readout_format=".0f", layout=wide),
            "opacity": W.FloatSlider(value=s.opacity, min=0, max=1, step=0.05, description="opacity",
                                     layout=wide),
        }
        for toggle in (c["method"], c["sign"]):
            toggle.style.button_width = "auto"
        self.controls = c
        self.image = W.Image(format="png")
        self.info = W.HTML()
        self.message_widget = W.HTML()
        picker = W.HBox([c["sample"], c["path"], c["load"], c["upload"]])
        settings = W.VBox([c["target"], c["class_name"], c["layer"], c["method"], c["sign"], c["threshold"],
                           c["opacity"], self.info])
        self.widget = W.VBox([picker, W.HBox([self.image, settings]), self.message_widget])

    def _connect(self) -> None:
        c = self.controls
        for key, attr, cast in (("layer", "layer", str), ("method", "method", str), ("sign", "sign", str),
                                ("threshold", "keep", float), ("opacity", "opacity", float)):
            c[key].observe(functools.partial(self._on_setting, attr, cast), names="value")
        c["target"].observe(self._on_target, names="value")
        c["class_name"].observe(self._on_class_name, names="value")
        c["sample"].observe(self._on_sample, names="value")
        c["load"].on_click(lambda _: self._on_path())
        c["upload"].observe(self._on_upload, names="value")

    def _hold(self):
        return holding(self)

    # ------------------------------------------------------------------ callbacks

    @_guard("Setting")
    def _on_setting(self, attr: str, cast: Callable, change: dict) -> None:
        if self._syncing or change["new"] is None:
            return
        setattr(self.state, attr, cast(change["new"]))
        self._render()

    def _on_target(self, change: dict) -> None:
        if not self._syncing and change["new"] is not None:
            self.select_class(int(change["new"]))

    def _on_class_name(self, change: dict) -> None:
        text = str(change["new"] or "").strip()
        if not self._syncing and text:
            self.select_class(text)

    def _on_sample(self, change: dict) -> None:
        if not self._syncing and change["new"]:
            self.set_image(change["new"])
            with self._hold():  # back to the prompt, so that the same sample can be picked again
                self.controls["sample"].value = ""

    def _on_path(self) -> None:
        path = self.controls["path"].value.strip()
        if not self._syncing and path:
            self.set_image(path, name=path)

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if self._syncing or not files:
            return
        item = files[-1]
        content = item["content"] if isinstance(item, dict) else getattr(item, "content", b"")
        name = item.get("name", "upload") if isinstance(item, dict) else "upload"
        self.set_image(bytes(content), name=f"upload '{name}'")
        with self._hold():  # clear, so that the same file can be uploaded again
            self.controls["upload"].value = ()

    # ------------------------------------------------------------------ state changes

    def _describe(self, source: Any) -> str:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return "uploaded bytes"
        if isinstance(source, str):
            return source
        shape = getattr(source, "shape", None) or getattr(source, "size", None)
        return f"{type(source).__name__} {tuple(shape) if shape is not None else ''}".strip()

    def _prepare(self, source: Any) -> tuple[torch.Tensor, list[str]]:
        """Source -> model input ``(1, 3, H, W)`` and the notes of information dropped on the way."""
        p = self.state.preprocess
        if isinstance(source, (bytearray, memoryview)):
            source = bytes(source)
        if isinstance(source, bytes) and len(source) > MAX_UPLOAD_BYTES:
            raise ImageLoadError(f"the file has {len(source) / 2**20:.0f} MB; use an image under "
                                 f"{MAX_UPLOAD_BYTES // 2**20} MB")
        if isinstance(source, bytes) and not source:
            raise ImageLoadError("the uploaded file is empty")
        if isinstance(source, torch.Tensor) and source.dim() == 4:
            if source.shape[0] != 1 or source.shape[1] != 3:
                raise ImageLoadError(f"a model-ready tensor must be (1, 3, H, W), got {tuple(source.shape)}")
            return source.detach().float(), []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ImageWarning)
            x = load_image(source, size=p.size, crop=p.crop, normalize=p.normalize, normalization=p.normalization)
        notes = []
        for w in caught:
            if issubclass(w.category, ImageWarning):
                notes.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return x, notes

    def _device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def _picture(self, x: torch.Tensor) -> np.ndarray:
        p = self.state.preprocess
        rgb = torch.from_numpy(display_image(x, normalized=p.normalize, normalization=p.normalization).copy())
        if tuple(rgb.shape[:2]) != (p.display, p.display):
            rgb = resize_maps(rgb.permute(2, 0, 1).float(), p.display).clamp(0, 1).permute(1, 2, 0)
        return rgb.float().numpy()

    def _install(self, inputs: torch.Tensor, notes: list[str], source: str) -> None:
        """Explain a new image (one forward, one decomposition), then make it the current one."""
        s = self.state
        param = next(self.model.parameters(), None)
        x = inputs.to(self._device(), dtype=param.dtype if param is not None else inputs.dtype)
        known = len(s.class_names)
        explained, logits = self._explain(x, f"top{min(s.top_k, known) if known else s.top_k}")
        s.stats["forwards"] += 1
        if logits.dim() != 2 or logits.shape[0] != 1:
            raise ValueError(f"the model returned {tuple(logits.shape)}; a classifier must return (1, classes)")
        if len(s.class_names) < logits.shape[1]:
            s.class_names = _class_names(self.model, logits.shape[1])
            self._labels = _option_labels(s.class_names)
            self._label_index = {lab: i for i, lab in enumerate(self._labels)}
            self.controls["class_name"].options = self._labels
        probabilities = logits[0].double().softmax(0)
        top = list(explained)
        # commit only now: a failure above leaves the previous image in place
        s.inputs, s.picture, s.probabilities, s.top, s.explained = x, self._picture(x), probabilities, top, explained
        s.target, s.source = top[0], source
        s.note = "; ".join(f"Note: {n}" for n in notes)
        self._sync_target_options()
        with self._hold():
            self.controls["target"].value = s.target
            self.controls["class_name"].value = ""
        self._render()

    def _explain(self, x: torch.Tensor, target: list[int] | str) -> tuple[dict[int, ClassExplanation], torch.Tensor]:
        """One decomposition (one forward pass) for a list of classes or ``"top<k>"``: contributions, Grad-CAM
        and gradient maps at every layer, in the order of the classes; and the logits."""
        s = self.state
        if not isinstance(target, str):
            target = torch.tensor([target], device=x.device)
        dec = decompose(self.model, x, target, s.layers, keep_gradients=True)
        classes = dec.target[0].tolist()
        s.stats["decompositions"] += 1
        tables = {(m, layer): maps_from(dec, m, layer)[0] for m in METHODS for layer in s.layers}
        out = {}
        for j, c in enumerate(classes):
            out[c] = ClassExplanation(
                index=c,
                score=float(dec.score[0, j]),
                bias={layer: float(dec.bias[layer][0, j]) for layer in s.layers},
                maps={key: table[j] for key, table in tables.items()},
            )
        return out, dec.logits

    def _ensure_explained(self, index: int) -> None:
        s = self.state
        if s.inputs is None:
            raise ValueError("no image yet: pick or upload one first")
        if index not in s.explained:
            s.explained.update(self._explain(s.inputs, [index])[0])

    def _class_index(self, cls: int | str) -> int:
        n = len(self.state.class_names)
        if isinstance(cls, (int, np.integer)) or (isinstance(cls, str) and cls.strip().isdigit()):
            index = int(cls)
            if not 0 <= index < n:
                raise LookupError(f"class index {index} is outside [0, {n - 1}]")
            return index
        text = str(cls).strip()
        if text in self._label_index:
            return self._label_index[text]
        low = text.lower()
        exact = [i for i, name in enumerate(self.state.class_names) if name.lower() == low]
        found = exact or [i for i, name in enumerate(self.state.class_names) if low in name.lower()]
        if len(found) == 1:
            return found[0]
        if not found:
            raise LookupError(f"no class name contains {text!r}; type part of a name, e.g. "
                              f"{self.state.class_names[self.state.top[0] if self.state.top else 0]!r}")
        shown = ", ".join(self._labels[i] for i in found[:6]) + (", ..." if len(found) > 6 else "")
        raise LookupError(f"{len(found)} classes match {text!r} ({shown}): type more of the name")

    def _sync_target_options(self) -> None:
        s = self.state
        extra = [c for c in s.explained if c not in s.top]
        options = []
        for c in s.top + extra:
            p = _probability_text(float(s.probabilities[c])) if s.probabilities is not None else "?"
            tag = "" if c in s.top else ", on demand"
            options.append((f"{self._labels[c]}: p = {p}{tag}", c))
        with self._hold():
            self.controls["target"].options = options

    def _set_error(self, text: str) -> None:
        self.state.error = text
        self._show_message()

    def _show_message(self) -> None:
        s = self.state
        if s.error:
            self.message_widget.value = f"<div style='color:#b00020;font-weight:bold'>{html.escape(s.error)}</div>"
        elif s.note:
            self.message_widget.value = f"<div style='color:#8a5a00'>{html.escape(s.note)}</div>"
        else:
            self.message_widget.value = ""

    # ------------------------------------------------------------------ rendering (reads the state only)

    def _render(self) -> None:
        s = self.state
        s.stats["renders"] += 1
        self._show_message()
        if s.picture is None or s.target not in s.explained:
            side = s.preprocess.display
            self.image.value = viz.to_png(viz.stack([viz.label(side, "no image yet"),
                                                     np.full((side, side, 3), 240, np.uint8)]))
            self.info.value = f"<b>{html.escape(s.model_label)}</b>"
            return
        ex = s.explained[s.target]
        methods = list(METHODS) if s.method == SIDE_BY_SIDE else [s.method]
        panels = []
        for method in methods:
            values = resize_maps(ex.maps[(method, s.layer)], s.preprocess.display).float().cpu().numpy()
            picture, vmax = viz.render_map(s.picture, values, s.sign, s.keep, s.opacity)
            panels.append(viz.panel(picture, f"{METHODS[method]} at {s.layer}", s.sign, vmax))
        self.image.value = viz.to_png(viz.stack(panels))
        self.info.value = self._info_html(ex)

    def _info_html(self, ex: ClassExplanation) -> str:
        s = self.state
        info = self.summary()
        ratio = info["bias_ratio"]
        if math.isnan(ratio):
            ratio_text = "undefined (score is 0)"
        else:
            ratio_text = f"{ratio:+.3f}" + (" (score &lt; 0: read the sign with care)" if ex.score < 0 else "")
        warn = ("<div style='color:#b00020'>Untrained network (random weights): the maps show the mechanics, "
                "not what a trained network looks at.</div>") if s.untrained else ""
        return (
            f"<b>{html.escape(s.model_label)}</b>{warn}"
            f"<div>{html.escape(s.source)}</div>"
            f"<div>class <b>{html.escape(info['name'])}</b> (#{ex.index}), p = "
            f"{_probability_text(info['probability'])}</div>"
            f"<table><tr><td>score S (logit)</td><td><b>{ex.score:+.4g}</b></td></tr>"
            f"<tr><td>Σ contributions at {html.escape(s.layer)}</td><td>{info['contributions']:+.4g}</td></tr>"
            f"<tr><td>bias b at {html.escape(s.layer)}</td><td>{info['bias']:+.4g}</td></tr>"
            f"<tr><td>b / S</td><td>{ratio_text}</td></tr></table>"
            "<small>S = Σ w·h + b exactly at every layer. Each map has its own colour scale; keep-top-% ranks "
            "the displayed (upsampled) pixels.</small>"
        )
