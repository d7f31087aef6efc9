"""ContributionExplorer: a photo's exact contributions at every block, against Grad-CAM and the gradient.

A new image is explained once: one forward pass for the top-k classes, then one
``decompose(model, x, target=top_k, layers=["input", *blocks], keep_gradients=True)`` call, which gives the
contributions, the bias and (from the kept activations and gradients) Grad-CAM and the gradient at every
layer. The maps are reduced to one ``H_l x W_l`` array per (method, layer, class) and kept; a class outside
the top-k is decomposed once when first asked for, then kept too. Moving a slider only re-renders from this
cache: numpy colormap, blend and PNG into an ``ipywidgets.Image`` (no figure, no network pass).

All state is in one :class:`ContributionState`; rendering reads only the state. Errors (a bad upload, an unknown
class name, a model that is not piece-wise affine) are shown inside the widget (``explorer.message``); a new image
is committed only once it has been explained and drawn, so a failure leaves the previous one in place.
"""

from __future__ import annotations

import functools
import html
import math
import numbers
import operator
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from torch import nn

from .. import viz
from ..baselines import from_decomposition, resize_maps
from ..bias import REMAINDER, bias_sources_at
from ..core import decompose
from ..images import ImageLoadError, display_image
from ..layers import INPUT
from ..placement import model_device, model_dtype
from ..preprocessing import Preprocessing, preprocessing_of
from .base import Explorer, Messages, guarded, picture_widget, side_by_side
from .contribution_inputs import (
    Preprocess,
    check_choice,
    check_number,
    class_names_for,
    default_model,
    is_mini,
    layer_choices,
    option_labels,
    photos_fit,
    prepare,
    preprocessing_for,
    sample_image,
    sample_names,
    square_side,
)

__all__ = ["ClassExplanation", "ContributionExplorer", "ContributionState", "Preprocess", "map_units",
           "preprocessing_for"]

METHODS: dict[str, str] = {"ours": "contributions (ours)", "gradcam": "Grad-CAM", "gradient": "gradient"}
SIDE_BY_SIDE = "side"
METHOD_CHOICES: tuple[str, ...] = (*METHODS, SIDE_BY_SIDE)
KEEP_HINT = "the percentage of the map's pixels coloured, e.g. 30 for the top 30 %"
OPACITY_HINT = "0 shows the plain image, 1 the map only"
TOP_SOURCES = 6  # bars of the bias view; the rest is summed into one bar

Sources = dict[str, list[tuple[str, str, float]]]  # layer -> [(source, kind, part of the bias)], largest first


# ------------------------------------------------------------------------------------------------- state


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
class ContributionState(Messages):
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
    show_sources: bool = False  # the bias view: where the bias at the chosen layer comes from
    sources: dict[int, Sources] = field(default_factory=dict)  # class -> its bias sources at every layer
    stats: dict[str, int] = field(default_factory=lambda: {"forwards": 0, "decompositions": 0, "renders": 0,
                                                           "bias_passes": 0})


# what a new image replaces: restored as a whole when showing it fails
IMAGE_FIELDS = ("class_names", "inputs", "picture", "probabilities", "top", "explained", "target", "source", "note",
                "sources")


def _probability_text(p: float) -> str:
    return f"{p:.1%}" if p >= 0.001 else f"{p:.1e}"


def map_units(method: str, layer: str) -> str:
    """The units of a map's colour bar: contributions and Grad-CAM (gradient x activation) are in score units."""
    if method == "gradient":
        return "score / pixel value" if layer == INPUT else "score / unit of activation"
    return "score units"


def check_arguments(model: Any, top_k: Any, method: Any, sign: Any, class_names: Any, label: Any) -> None:
    """TypeError or ValueError, naming the argument and what it takes, for a constructor argument of the wrong
    kind or out of range (``keep``, ``opacity``, ``image_size`` and ``layer`` are checked where they are used)."""
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model is a torch nn.Module (e.g. pw.load_model('mini_vgg')) or None for the default, "
                        f"got {type(model).__name__}")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
        raise TypeError(f"top_k is a whole number of classes (at least 1), got {type(top_k).__name__} {top_k!r}")
    if top_k < 1:
        raise ValueError(f"top_k is a whole number of classes (at least 1), got {top_k}")
    check_choice("method", method, METHOD_CHOICES)
    check_choice("sign", sign, viz.SIGN_VIEWS)
    if class_names is not None and (isinstance(class_names, str)
                                    or not all(isinstance(n, str) for n in class_names)):
        raise TypeError("class_names is a list of strings, one per class (or None to read them from the model)")
    if label is not None and not isinstance(label, str):
        raise TypeError(f"label is a string (or None), got {type(label).__name__}")


# ----------------------------------------------------------------------------------------------- widget


class ContributionExplorer(Explorer):
    """Explore the exact contributions of an image at every preset layer, against Grad-CAM and the gradient.

    ``ContributionExplorer(model, image)``: ``model`` defaults to the best ImageNet classifier available offline
    (:func:`pwawidgets.models.best_available_imagenet`). ``image`` is a sample name (``"chelsea"``,
    ``"shape:star"`` on a mini-zoo net), a path, bytes, a PIL image, an array or tensor of pixels (``uint8``
    0..255, or floats in [0, 1]), or a model-ready float ``(1, 3, H, W)`` tensor; None picks the first sample
    (sample photos are offered only where they fit: ImageNet-size RGB input, or the mini zoo; else a prompt).
    Images are made as ``model.preprocessing`` says (every model of :func:`pwawidgets.load_model` carries one);
    ``preprocessing=pw.Preprocessing(size, crop, mean, std)`` for a model that carries none (e.g. your own 32 x 32
    net), ``image_size`` to resize and crop to another side. ``layer`` is any module name (added to the slider),
    ``layers`` the list of names the layer slider offers (default: the input and the preset blocks);
    ``class_names`` one name per class.
    Testing surface: ``controls`` (the ipywidgets by name), :meth:`set_image`, :meth:`select_class`,
    :attr:`message`, :meth:`snapshot`; ``state`` holds everything shown. A bad image, class or control value never
    raises: it is shown as a message in the widget, which keeps working (a refused control goes back to the value in
    use). A constructor argument of the wrong kind or out of range raises a TypeError/ValueError naming it.
    The picture shows the plain image, then each map on it with a colour bar in its units (:func:`map_units`).
    """

    PLAIN_ERRORS = (ImageLoadError, LookupError, ValueError)

    def __init__(
        self,
        model: nn.Module | None = None,
        image: Any = None,
        *,
        top_k: int = 5,
        layer: str | None = None,
        layers: Sequence[str] | None = None,
        method: str = "ours",
        sign: str = "positive",
        keep: float = 100.0,
        opacity: float = 0.6,
        image_size: int | None = None,
        preprocessing: Preprocessing | None = None,
        class_names: Sequence[str] | None = None,
        label: str | None = None,
    ):
        super().__init__()
        check_arguments(model, top_k, method, sign, class_names, label)
        keep = check_number("keep", keep, 1, 100, KEEP_HINT)
        opacity = check_number("opacity", opacity, 0, 1, OPACITY_HINT)
        if model is None:
            model = default_model()
        image_size = square_side(model, image_size)
        preprocess = preprocessing_for(model, image_size, preprocessing)
        self.model = model
        layers = layer_choices(model, layer, layers)
        head = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
        if class_names is not None and head is not None and len(class_names) != head.out_features:
            raise ValueError(f"class_names has {len(class_names)} names, but the model's last layer has "
                             f"{head.out_features} outputs: give one name per class")
        self._names_given = class_names is not None
        names = list(class_names) if class_names is not None else class_names_for(
            model, head.out_features if head is not None else None)
        declared = any(v is not None for v in (image_size, preprocessing, preprocessing_of(model)))
        self._no_photos = photos_fit(model, preprocess, declared)
        untrained = getattr(model, "pretrained", None) is False
        base = label or getattr(model, "model_name", None) or type(model).__name__
        self.state = ContributionState(
            model_label=base + (" (untrained: random weights)" if untrained else ""),
            untrained=untrained,
            class_names=names,
            layers=layers,
            preprocess=preprocess,
            top_k=int(top_k),
            layer=layer if layer is not None else layers[-1],
            method=method,
            sign=sign,
            keep=keep,
            opacity=opacity,
        )
        self._build_controls(model)
        self._name_parts("contribution")
        self._connect()
        if layers == [INPUT]:
            self.state.note = ("No preset blocks are known for this model: only the input layer is shown; pass "
                               "layers=[module names] or set model.block_layers = {alias: module name}.")
        if image is None and self._samples:
            image = "chelsea" if "chelsea" in self._samples and not is_mini(model) else self._samples[0]
        elif image is None:
            self.state.note = (f"Upload an image or call explorer.set_image(array): no sample photo here "
                               f"({self._no_photos}).")
        if image is not None:
            self.set_image(image)
        if self.state.inputs is None:
            self._render()

    # ------------------------------------------------------------------ public surface

    @guarded("Could not use this image")
    def set_image(self, source: Any, name: str | None = None) -> bool:
        """Explain a new image (anything the picker takes); returns False and shows why if it cannot be used."""
        if isinstance(source, str):
            key, missing = source.strip(), not os.path.exists(source)
            if key in self._samples or (missing and key.startswith("shape:")):  # an unknown shape lists them
                name, source = name or f"sample '{key}'", sample_image(key)
            elif missing and key and not any(ch in key for ch in "./\\"):  # a bare word: a misspelt sample
                samples = f"the samples are {', '.join(self._samples)}" if self._samples else \
                    f"no sample photo here ({self._no_photos})"
                raise LookupError(f"no sample image or file named {key!r}: {samples}; or give the path to an image "
                                  "file")
        inputs, notes = prepare(source, self.state.preprocess)
        self._install(inputs, notes, name or self._describe(source))
        return True

    @guarded("Class")
    def select_class(self, cls: int | str) -> bool:
        """Show class ``cls`` (an index or a name); a class outside the top-k is decomposed once, then cached.

        Returns False, and shows why in the widget, for an index out of range, an unknown or ambiguous name, or a
        value that is neither (a float, None...)."""
        index = self._class_index(cls)
        self._ensure_explained(index)
        if self.state.show_sources:
            self._ensure_sources(index)
        self._sync_target_options()
        with self._hold():
            self.controls["target"].value = index
        self.state.target = index
        self._render()
        return True

    def summary(self) -> dict[str, Any]:
        """The numbers shown for the current class and layer: score, bias, their ratio, the contributions' sum,
        and (with the bias view on) the bias sources. ValueError when no image is explained yet."""
        s = self.state
        if s.target not in s.explained:
            raise ValueError("no image is explained yet: pick or upload one first (explorer.message says why "
                             "the last one could not be used)")
        ex = s.explained[s.target]
        p = float(s.probabilities[s.target]) if s.probabilities is not None else math.nan
        bias = ex.bias[s.layer]
        return {
            "class": s.target, "name": s.class_names[s.target] if s.target < len(s.class_names) else str(s.target),
            "probability": p, "layer": s.layer, "score": ex.score, "bias": bias,
            "contributions": ex.score - bias, "bias_ratio": ex.ratio(s.layer),
            "sources": list(s.sources.get(s.target, {}).get(s.layer, [])),
        }

    @guarded("Bias sources")
    def show_bias_sources(self, on: bool = True) -> bool:
        """Turn the bias view on (or off): where the bias at the chosen layer and class comes from, as bars.

        The first time for an image, one :func:`pwawidgets.bias.bias_sources_at` pass (one forward pass, one
        backward pass per explained class) gives the sources at every layer; slider moves then read that cache."""
        if not isinstance(on, (bool, np.bool_)) and not (isinstance(on, numbers.Integral) and on in (0, 1)):
            raise ValueError(f"on is True or False, got {on!r}")
        with self._hold():
            self.controls["sources"].value = bool(on)
        self.state.show_sources = bool(on)
        if on:
            self._ensure_sources(self.state.target)
        self._render()
        return True

    def _drop_caches(self) -> None:
        s = self.state
        s.explained.clear()
        s.sources.clear()
        s.inputs = s.picture = s.probabilities = None

    # ------------------------------------------------------------------ building

    def _build_controls(self, model: nn.Module) -> None:
        s = self.state
        self._samples = [n for n in sample_names(model) if n.startswith("shape:")] if self._no_photos else \
            sample_names(model)
        self._labels = option_labels(s.class_names)
        self._label_index = {lab: i for i, lab in enumerate(self._labels)}
        wide = W.Layout(width="420px")
        c: dict[str, W.Widget] = {
            "sample": W.Dropdown(options=[("sample image…" if self._samples else "upload an image…", "")]
                                 + [(n, n) for n in self._samples], value="", disabled=not self._samples,
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
            "sources": W.Checkbox(value=s.show_sources, description="where the bias comes from",
                                  indent=False),
        }
        for toggle in (c["method"], c["sign"]):
            toggle.style.button_width = "auto"
        self.controls = c
        self.image = picture_widget()
        self.info = W.HTML()
        picker = W.HBox([c["sample"], c["path"], c["load"], c["upload"]])
        settings = W.VBox([c["target"], c["class_name"], c["layer"], c["method"], c["sign"], c["threshold"],
                           c["opacity"], c["sources"], self.info])
        self.widget = W.VBox([picker, side_by_side(self.image, settings, "420px"), self.message_widget])

    def _connect(self) -> None:
        c = self.controls
        for key, attr in (("layer", "layer"), ("method", "method"), ("sign", "sign"), ("threshold", "keep"),
                          ("opacity", "opacity")):
            c[key].observe(functools.partial(self._on_setting, key, attr), names="value")
        c["target"].observe(self._on_target, names="value")
        c["sources"].observe(lambda change: None if self._held else self.show_bias_sources(change["new"]),
                             names="value")
        c["class_name"].observe(self._on_class_name, names="value")
        c["sample"].observe(self._on_sample, names="value")
        c["load"].on_click(lambda _: self._on_path())
        c["upload"].observe(self._on_upload, names="value")

    # ------------------------------------------------------------------ callbacks

    @guarded("Setting")
    def _on_setting(self, key: str, attr: str, change: dict) -> None:
        """A control moved: a bad value (NaN set from Python...) is refused and the control goes back."""
        if self._held or change["new"] is None:
            return
        try:
            value = self._checked(attr, change["new"])
        except (TypeError, ValueError) as e:
            kept = getattr(self.state, attr)
            with self._hold():
                self.controls[key].value = kept
            raise type(e)(f"{e}; kept {kept:g}" if isinstance(kept, float) else f"{e}; kept {kept!r}") from None
        setattr(self.state, attr, value)
        self._render()

    def _checked(self, attr: str, value: Any) -> Any:
        """A setting's value if it is allowed, else a TypeError/ValueError saying what is."""
        if attr == "keep":
            return check_number("keep top %", value, 1, 100, KEEP_HINT)
        if attr == "opacity":
            return check_number("opacity", value, 0, 1, OPACITY_HINT)
        choices = {"layer": self.state.layers, "method": METHOD_CHOICES, "sign": viz.SIGN_VIEWS}[attr]
        return check_choice(attr, value, choices)

    def _on_target(self, change: dict) -> None:
        if not self._held and change["new"] is not None:
            self.select_class(int(change["new"]))

    def _on_class_name(self, change: dict) -> None:
        text = str(change["new"] or "").strip()
        if not self._held and text:
            self.select_class(text)

    def _on_sample(self, change: dict) -> None:
        if not self._held and change["new"]:
            self.set_image(change["new"])
            with self._hold():  # back to the prompt, so that the same sample can be picked again
                self.controls["sample"].value = ""

    def _on_path(self) -> None:
        path = self.controls["path"].value.strip()
        if not self._held and path:
            self.set_image(path, name=path)

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if self._held or not files:
            return
        item = files[-1]
        content = item.get("content", b"") if isinstance(item, dict) else getattr(item, "content", b"")
        name = item.get("name", "upload") if isinstance(item, dict) else getattr(item, "name", "upload")
        self.set_image(content, name=f"upload '{name}'")
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

    def _picture(self, x: torch.Tensor) -> np.ndarray:
        p = self.state.preprocess
        rgb = torch.from_numpy(display_image(x, normalization=p.preprocessing.normalization).copy())
        if tuple(rgb.shape[:2]) != (p.display, p.display):
            rgb = resize_maps(rgb.permute(2, 0, 1).float(), p.display).clamp(0, 1).permute(1, 2, 0)
        return rgb.float().numpy()

    def _install(self, inputs: torch.Tensor, notes: list[str], source: str) -> None:
        """Explain a new image (one forward, one decomposition), then make it the current one.

        Nothing is committed before the explanation succeeded, and if showing the new image fails, every field of
        the previous one is restored: a failed image leaves the explorer as it was.
        """
        s = self.state
        x = inputs.to(model_device(self.model), dtype=model_dtype(self.model, inputs.dtype))
        known = len(s.class_names)
        try:
            explained, logits = self._explain(x, f"top{min(s.top_k, known) if known else s.top_k}")
        except RuntimeError as exc:  # most often a size the model cannot take: a shape error from torch
            raise ValueError(f"the model cannot take this {x.shape[-2]} x {x.shape[-1]} input ({exc}); if it takes "
                             "another size, give image_size=<side>, e.g. ContributionExplorer(model, image, "
                             "image_size=32)") from exc
        s.stats["forwards"] += 1
        if logits.dim() != 2 or logits.shape[0] != 1:
            raise ValueError(f"the model returned {tuple(logits.shape)}; a classifier must return (1, classes)")
        if self._names_given and known != logits.shape[1]:
            raise ValueError(f"class_names has {known} names for the model's {logits.shape[1]} classes: give one "
                             "name per class, ContributionExplorer(model, image, class_names=[...])")
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("the model's scores for this image are not finite (NaN or infinite)")
        names = s.class_names if len(s.class_names) >= logits.shape[1] else class_names_for(self.model, logits.shape[1])
        sources = self._sources_for(x, list(explained)) if s.show_sources else {}
        new = dict(class_names=names, inputs=x, picture=self._picture(x), probabilities=logits[0].double().softmax(0),
                   top=list(explained), explained=explained, target=next(iter(explained)), source=source,
                   note="; ".join(f"Note: {n}" for n in notes), sources=sources)
        previous = {key: getattr(s, key) for key in IMAGE_FIELDS}
        try:
            self._show_image(new)
        except Exception:
            self._show_image(previous)
            raise

    def _show_image(self, fields: dict[str, Any]) -> None:
        """Make an image (all of :data:`IMAGE_FIELDS`) the current one: state, class controls, picture."""
        s = self.state
        if fields["class_names"] is not s.class_names:
            self._set_class_names(fields["class_names"])
        for key, value in fields.items():
            setattr(s, key, value)
        self._sync_target_options()
        with self._hold():
            self.controls["target"].value = s.target if s.top else None
            self.controls["class_name"].value = ""
        self._render()

    def _set_class_names(self, names: list[str]) -> None:
        self.state.class_names = names
        self._labels = option_labels(names)
        self._label_index = {lab: i for i, lab in enumerate(self._labels)}
        self.controls["class_name"].options = self._labels

    def _explain(self, x: torch.Tensor, target: list[int] | str) -> tuple[dict[int, ClassExplanation], torch.Tensor]:
        """One decomposition (one forward pass) for a list of classes or ``"top<k>"``: contributions, Grad-CAM
        and gradient maps at every layer, in the order of the classes; and the logits."""
        s = self.state
        if not isinstance(target, str):
            target = torch.tensor([target], device=x.device)
        dec = decompose(self.model, x, target, s.layers, keep_gradients=True)
        classes = dec.target[0].tolist()
        s.stats["decompositions"] += 1
        flat = [name for name in s.layers if dec.activation(name).dim() != 4]
        if flat:
            raise ValueError(f"layer {flat[0]!r} gives a {tuple(dec.activation(flat[0]).shape)} tensor, no map to "
                             "show: give convolutional layers (layer=, layers=)")
        tables = {(m, layer): from_decomposition(dec, m, layer)[0] for m in METHODS for layer in s.layers}
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

    def _sources_for(self, x: torch.Tensor, classes: list[int]) -> dict[int, Sources]:
        """One pass of :func:`bias_sources_at` for these classes at every layer: their sources, largest first."""
        s = self.state
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a remainder that is not ~0 is shown as its own bar
            found = bias_sources_at(self.model, x, torch.tensor([classes], device=x.device), s.layers)
        s.stats["bias_passes"] += 1
        out: dict[int, Sources] = {}
        for j, c in enumerate(classes):
            out[c] = {layer: sorted(((name, res.kinds[name], float(v[0, j])) for name, v in res.items()),
                                    key=lambda row: -abs(row[2])) for layer, res in found.items()}
        return out

    def _ensure_sources(self, index: int) -> None:
        s = self.state
        if s.inputs is None or index in s.sources:
            return
        wanted = [c for c in s.explained if c not in s.sources] if index in s.explained else [index]
        s.sources.update(self._sources_for(s.inputs, wanted))

    def _class_index(self, cls: int | str) -> int:
        n = len(self.state.class_names)
        if not isinstance(cls, str):
            try:  # an int, a numpy or 0-d torch integer; not a bool, a float or None
                index = operator.index(cls) if not isinstance(cls, bool) else None
            except TypeError:
                index = None
            if index is None:
                raise LookupError(f"a class is an index (0 to {n - 1}) or part of a name, got {cls!r}")
            cls = str(index)
        if cls.strip().lstrip("-").isdigit():
            index = int(cls)
            if not 0 <= index < n:
                raise LookupError(f"class index {index} is outside [0, {n - 1}]")
            return index
        text = cls.strip()
        if not text:
            raise LookupError("type part of a class name, or its index")
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
        panels = [viz.image_panel(s.picture, "image")]  # the plain image first, to compare with its maps
        empty = []
        for method in methods:
            values = resize_maps(ex.maps[(method, s.layer)], s.preprocess.display).float().cpu().numpy()
            if not np.any(viz.sign_view(values, s.sign)):  # nothing to colour: say so, no bar on an empty scale
                bound = {"positive": "≤ 0; pick another sign", "negative": "≥ 0; pick another sign"}.get(s.sign, "0")
                empty.append(f"{METHODS[method]} has no {s.sign} part at {s.layer}: every value is {bound}")
                panels.append(viz.image_panel(s.picture, f"{METHODS[method]}: no {s.sign} part"))
                continue
            picture, vmax = viz.render_map(s.picture, values, s.sign, s.keep, s.opacity)
            panels.append(viz.panel(picture, f"{METHODS[method]} at {s.layer}", s.sign, vmax,
                                    units=map_units(method, s.layer)))
        self.image.value = viz.to_png(viz.stack(panels))
        self.info.value = self._info_html(ex, empty)

    def _info_html(self, ex: ClassExplanation, empty: list[str]) -> str:
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
            + "".join(f"<div style='color:#8a5a00'>{html.escape(e)}</div>" for e in empty) +
            f"<div>{html.escape(s.source)}</div>"
            f"<div>class <b>{html.escape(info['name'])}</b> (#{ex.index}), p = "
            f"{_probability_text(info['probability'])}</div>"
            f"<table><tr><td>score S (logit)</td><td><b>{ex.score:+.4g}</b></td></tr>"
            f"<tr><td>Σ contributions at {html.escape(s.layer)}</td><td>{info['contributions']:+.4g}</td></tr>"
            f"<tr><td>bias b at {html.escape(s.layer)}</td><td>{info['bias']:+.4g}</td></tr>"
            f"<tr><td>b / S</td><td>{ratio_text}</td></tr></table>"
            + (self._sources_html(info["sources"]) if s.show_sources else "")
            + "<small>S = Σ w·h + b exactly at every layer. Each map has its own colour scale; keep-top-% ranks "
            "the displayed (upsampled) pixels.</small>"
        )

    def _sources_html(self, rows: list[tuple[str, str, float]]) -> str:
        """The bias view: the largest parts of the bias at the chosen layer as bars (red adds, blue subtracts)."""
        s = self.state
        if not rows:
            return "<div><i>bias sources: not computed for this class</i></div>"
        shown = [r for r in rows if r[0] != REMAINDER][:TOP_SOURCES]
        rest = [r for r in rows if r[0] != REMAINDER and r not in shown]
        if rest:
            shown.append((f"{len(rest)} other sources", "", sum(r[2] for r in rest)))
        remainder = next((r for r in rows if r[0] == REMAINDER), None)
        if remainder is not None and abs(remainder[2]) > 1e-4 * max(abs(r[2]) for r in rows):
            shown.append(remainder)
        top = max(abs(r[2]) for r in shown) or 1.0
        bars = "".join(
            f"<tr><td title='{html.escape(kind)}' style='font-family:monospace;font-size:11px'>"
            f"{html.escape(name if len(name) <= 26 else name[:25] + '…')}</td>"
            f"<td style='width:130px'><div style='width:{max(1, round(120 * abs(v) / top))}px;height:10px;"
            f"background:{'#c44e52' if v >= 0 else '#4c72b0'}'></div></td><td>{v:+.3g}</td></tr>"
            for name, kind, v in shown)
        return (f"<div style='margin-top:4px'><b>where the bias at {html.escape(s.layer)} comes from</b> "
                f"({len(rows) - (remainder is not None)} source(s))</div><table>{bars}</table>")
