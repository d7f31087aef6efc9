"""RegionExplorer: the linear regions of a toy 2-D ReLU network, one point's affine piece at a time.

The state lives in one :class:`RegionState`; rendering only reads it. The figure is persistent (Agg canvas): the
regions, boundary and data of each layer's partition are drawn once and kept as a bitmap, and a point pick only
redraws the highlight and the bar chart of contributions over it.

Retraining runs in a worker thread. The state and the rendering are guarded by one lock, and the controls are
written from the state by :meth:`RegionExplorer._push_control` under a per-thread hold: a slider moved in the
kernel while the worker installs a new network is applied (clamped to the new box), never dropped.
"""

from __future__ import annotations

import functools
import io
import math
import numbers
import threading
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from PIL import Image
from torch import nn

from ..regions import DATASETS, Region, RegionSet, ToyNet, enumerate_layers, region_colors, train_toy
from .base import CLOSED, Explorer, Messages, guarded, picture_widget, side_by_side

__all__ = ["RegionExplorer", "RegionState", "check_seed"]

MAX_SEED = 2**32 - 1  # the largest seed the data sets take


def check_seed(seed: Any) -> int:
    """``seed`` if it is a whole number from 0 to :data:`MAX_SEED`; else a ValueError saying so."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed is a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


def _finite(name: str, value: Any) -> float:
    """``value`` as a finite float, else a ValueError naming ``name``."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} is a finite number, got {number}")
    return number


@dataclass
class RegionState(Messages):
    """Everything the explorer shows: the network and data, its cached partitions, and the current choices."""

    toy: ToyNet
    layer_sets: list[RegionSet]  # the partition after hidden layer 1..L, computed once per network
    colors: list[np.ndarray]
    boundary: list[np.ndarray]
    point: tuple[float, float] = (0.0, 0.0)
    layer: int = 1
    output: int = 0
    stats: dict[str, int] = field(default_factory=lambda: {"enumerations": 0, "trainings": 0, "scene_draws": 0})

    @property
    def n_layers(self) -> int:
        return len(self.layer_sets[-1].widths) if self.layer_sets else 0

    @property
    def regions(self) -> RegionSet:
        """The partition shown (after ``layer``)."""
        return self.layer_sets[max(self.layer, 1) - 1]

    @property
    def full(self) -> RegionSet:
        return self.layer_sets[-1]


@dataclass(frozen=True)
class _Partitions:
    """A network's partitions with their colours and decision boundary: computed before taking the lock."""

    toy: ToyNet
    layer_sets: list[RegionSet]
    colors: list[np.ndarray]
    boundary: list[np.ndarray]


class RegionExplorer(Explorer):
    """Pick a point: its linear region is highlighted with ``W``, ``b``, the contributions ``w_i x_i`` and the bias.

    ``RegionExplorer()`` trains the paper's 3x5 network on the two moons; pass a :class:`ToyNet` (from
    :func:`~pwawidgets.regions.train_toy`) or use :meth:`from_model` for any Linear/ReLU network on the plane.
    ``controls`` holds the ipywidgets by name; :meth:`snapshot` returns the picture shown as an RGB array.
    """

    def __init__(
        self,
        toy: ToyNet | None = None,
        *,
        dataset: str = "moons",
        hidden: tuple[int, ...] = (5, 5, 5),
        seed: int = 0,
        steps: int = 1500,
        figsize: tuple[float, float] = (9.0, 4.0),
        dpi: int = 80,
    ):
        super().__init__()
        if isinstance(toy, nn.Module):
            raise TypeError("RegionExplorer(toy) takes a ToyNet (from pwawidgets.regions.train_toy), not a bare "
                            "model: use RegionExplorer.from_model(model, bounds=((x0, x1), (y0, y1))) for a network "
                            "of nn.Linear and ReLU layers with two inputs")
        if toy is not None and not isinstance(toy, ToyNet):
            raise TypeError(f"toy is a ToyNet (from pwawidgets.regions.train_toy) or None to train one, got "
                            f"{type(toy).__name__}; for a bare model use RegionExplorer.from_model(model, bounds)")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(f"steps is a whole number of training steps, at least 1, got {steps!r}")
        self.steps = int(steps)
        self._thread: threading.Thread | None = None
        self._backgrounds: dict[int, Any] = {}
        if toy is None:
            check_seed(seed)
            toy = train_toy(dataset, hidden, seed, steps=steps)
        parts = _partitions(toy)  # a model that cannot be read raises here, before any widget exists
        self.state = RegionState(toy, [], [], [])
        self.state.stats["trainings"] += 1
        self._build_figure(figsize, dpi)
        self._build_controls(toy)
        self._name_parts("region")
        self._install(parts)
        self._connect()
        self._render()

    @classmethod
    def from_model(
        cls, model: Any, bounds: Any, X: np.ndarray | None = None, y: np.ndarray | None = None, **kwargs: Any
    ) -> RegionExplorer:
        """An explorer for any network of nn.Linear and ReLU layers with two inputs, on the box ``bounds``.

        The model is put in eval mode; ``X``, ``y`` (optional) are drawn as data points.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model is a torch nn.Module of nn.Linear and ReLU layers, got {type(model).__name__}")
        X = np.zeros((0, 2)) if X is None else np.asarray(X, dtype=np.float64)
        y = np.zeros(len(X), dtype=np.int64) if y is None else np.asarray(y)
        return cls(ToyNet(model.eval(), X, y, bounds), **kwargs)

    # ------------------------------------------------------------------ public surface

    @property
    def regions(self) -> RegionSet:
        """The partition currently shown."""
        self._check_open()
        return self.state.regions

    @property
    def region(self) -> Region:
        """The final region (all layers) holding the picked point."""
        self._check_open()
        return self.state.full.locate(self.state.point)

    @guarded()
    def pick(self, x: float, y: float) -> bool:
        """Move the point to ``(x, y)`` (clamped to the box), as the sliders or a click do; NaN or an infinite
        coordinate is refused (the point stays)."""
        x, y = _finite("x₁", x), _finite("x₂", y)
        with self._lock:
            self._set_point(x, y)
        return True

    @guarded()
    def pick_pixel(self, px: float, py: float) -> bool:
        """Move the point to the image pixel ``(px, py)`` (from the top left), if it falls on the map."""
        px, py = _finite("the pixel's x", px), _finite("the pixel's y", py)
        with self._lock:
            h = self.fig.bbox.height
            xy = self.ax_map.transData.inverted().transform((px, h - py))
            (x0, x1), (y0, y1) = self.state.full.bounds
            if not (x0 <= xy[0] <= x1 and y0 <= xy[1] <= y1):
                return False
            self._set_point(float(xy[0]), float(xy[1]))
        return True

    def retrain(self, wait: bool = False) -> threading.Thread | None:
        """Train a new network with the dataset/depth/width/seed controls, in a background thread.

        A progress bar follows the training; the notebook stays free. ``wait=True`` blocks until it is done.
        Returns the training thread, or None (and says why in the widget) when nothing was started: the explorer
        is closed or the seed is out of range.
        """
        if self.closed:
            self._set_error(f"Retrain: {CLOSED}")
            return None
        if self._training:
            self._set_error("Training is already running: wait for it to finish.")
            return self._thread
        c = self.controls
        try:
            seed = check_seed(c["seed"].value)
        except ValueError as e:
            self._set_error(f"Retrain: {e}")
            return None
        hidden = (int(c["width"].value),) * int(c["depth"].value)
        params = dict(dataset=c["dataset"].value, hidden=hidden, seed=seed)
        c["retrain"].disabled = True
        c["progress"].value = 0
        self._set_error("")
        self._thread = threading.Thread(target=self._retrain_job, kwargs=params, daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
        return self._thread

    def wait(self, timeout: float | None = None) -> None:
        """Block until a running retraining has finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ building

    def _build_figure(self, figsize: tuple[float, float], dpi: int) -> None:
        self.fig = Figure(figsize=figsize, dpi=dpi)
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax_map = self.fig.add_axes((0.06, 0.1, 0.5, 0.8))
        self.ax_bar = self.fig.add_axes((0.66, 0.16, 0.31, 0.68))
        self.ax_bar.set_animated(True)
        self.poly = PolyCollection([], edgecolors="white", linewidths=0.4)
        self.ax_map.add_collection(self.poly)
        self.lines = LineCollection([], colors="black", linewidths=2)
        self.ax_map.add_collection(self.lines)
        self.scatter = self.ax_map.scatter([], [], s=7, edgecolors="k", linewidths=0.3)
        self.highlight = Polygon(np.zeros((3, 2)), closed=True, fill=False, edgecolor="crimson", linewidth=2.5)
        self.highlight.set_animated(True)
        self.ax_map.add_patch(self.highlight)
        (self.marker,) = self.ax_map.plot([], [], marker="*", ms=14, color="gold", mec="k", animated=True)
        self.ax_map.set_aspect("equal")
        self.bars = self.ax_bar.bar(range(4), np.zeros(4), color=["#4c72b0", "#55a868", "#8172b2", "#333333"])
        self.ax_bar.set_xticks(range(4), ["w₁·x₁", "w₂·x₂", "bias b", "logit"])
        self.ax_bar.set_yticks([])  # the bars carry their values: fewer texts keep a pick fast
        self.ax_bar.axhline(0, color="k", lw=0.8)
        self.bar_labels = [self.ax_bar.text(i, 0, "", ha="center", fontsize=8) for i in range(4)]
        self.map_title = self.fig.text(0.31, 0.93, "", ha="center", fontsize=10, animated=True)

    def _build_controls(self, toy: ToyNet) -> None:
        slider = dict(continuous_update=True, readout_format=".2f", layout=W.Layout(width="300px"))
        c = {
            "x": W.FloatSlider(description="x₁", **slider),
            "y": W.FloatSlider(description="x₂", **slider),
            "layer": W.IntSlider(description="after layer", min=1, max=1, layout=W.Layout(width="300px")),
            "output": W.Dropdown(description="output", layout=W.Layout(width="200px")),
            "dataset": W.Dropdown(description="data set", options=list(DATASETS),
                                  value=toy.dataset if toy.dataset in DATASETS else "moons"),
            "depth": W.IntSlider(description="depth", min=1, max=6, value=max(1, len(toy.hidden)) if toy.hidden else 3),
            "width": W.IntSlider(description="width", min=2, max=32, value=toy.hidden[0] if toy.hidden else 5),
            "seed": W.IntText(description="seed", value=toy.seed, layout=W.Layout(width="160px")),
            "retrain": W.Button(description="Retrain", icon="refresh", button_style="primary"),
            "progress": W.IntProgress(value=0, min=0, max=100, description="training"),
        }
        self.controls = c
        self.image = picture_widget()
        self.info = W.HTML()
        left = W.VBox([self.image, W.HBox([c["x"], c["y"]]), W.HBox([c["layer"], c["output"]])])
        retrain = W.VBox([W.HTML("<b>Another network</b>"), c["dataset"], c["depth"], c["width"], c["seed"],
                          c["retrain"], c["progress"]])
        self.widget = W.VBox([side_by_side(left, W.VBox([self.info, retrain]), "300px"), self.message_widget])
        self._events = None
        try:  # clicks on the picture: optional, the sliders do the same
            from ipyevents import Event

            self._events = Event(source=self.image, watched_events=["click"])
            self._events.on_dom_event(self._on_click)
        except ImportError:
            pass

    def _connect(self) -> None:
        c = self.controls
        c["x"].observe(functools.partial(self._on_axis, 0), names="value")
        c["y"].observe(functools.partial(self._on_axis, 1), names="value")
        c["layer"].observe(self._on_layer, names="value")
        c["output"].observe(self._on_output, names="value")
        c["retrain"].on_click(lambda _: self._on_retrain())

    def _widgets(self) -> list[W.Widget]:
        return [self.widget] + ([self._events] if self._events is not None else [])

    def _drop_caches(self) -> None:
        self._backgrounds.clear()
        s = self.state
        s.layer_sets, s.colors, s.boundary = [], [], []

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(CLOSED)

    @property
    def _training(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _after_success(self) -> None:
        if not self._training:  # a message about the running training stays until it ends
            super()._after_success()

    # ------------------------------------------------------------------ state changes

    def _install(self, parts: _Partitions) -> bool:
        """Make a network current: commit its partitions to the state (under the lock), then reset the controls
        (each under the lock, in a hold). False, and nothing changed, once the explorer is closed."""
        with self._lock:
            if self._closed:
                return False
            s = self.state
            first_time = not s.layer_sets
            s.stats["enumerations"] += 1
            s.toy, s.layer_sets, s.colors, s.boundary = parts.toy, parts.layer_sets, parts.colors, parts.boundary
            (x0, x1), (y0, y1) = s.full.bounds
            if first_time and len(s.toy.X):  # start on a data point: a zero point has zero contributions
                s.point = (float(s.toy.X[0, 0]), float(s.toy.X[0, 1]))
            s.point = (float(np.clip(s.point[0], x0, x1)), float(np.clip(s.point[1], y0, y1)))
            s.layer = max(1, s.n_layers)
            s.output = min(s.output, s.full.n_outputs - 1)
            self._backgrounds.clear()
            self._set_data(s.toy)
        with self._hold():
            for key in ("x", "y", "layer", "output"):
                self._push_control(key)
        return True

    def _push_control(self, key: str) -> None:
        """Show the state's current value (and range) on one control; call it inside :meth:`_hold`."""
        with self._lock:
            s, w = self.state, self.controls[key]
            if key in ("x", "y"):
                axis = "xy".index(key)
                lo, hi = s.full.bounds[axis]
                if (w.min, w.max) != (lo, hi):
                    w.min, w.max = -1e9, 1e9  # widen first so that min < max holds while moving
                    w.min, w.max, w.step = lo, hi, (hi - lo) / 200
                w.value = s.point[axis]
            elif key == "layer":
                w.min, w.max = min(1, s.n_layers), max(1, s.n_layers)
                w.value = s.layer
            elif key == "output":
                options = [(f"logit {k}", k) for k in range(s.full.n_outputs)]
                if list(w.options) != options:
                    w.options = options
                w.value = s.output

    def _set_point(self, x: float, y: float) -> None:
        """Move the point (clamped to the box) and show it; the caller holds the lock."""
        (x0, x1), (y0, y1) = self.state.full.bounds
        self.state.point = (float(np.clip(x, x0, x1)), float(np.clip(y, y0, y1)))
        with self._hold():
            self._push_control("x")
            self._push_control("y")
        self._render()

    def _set_data(self, toy: ToyNet) -> None:
        (x0, x1), (y0, y1) = self.state.full.bounds
        self.scatter.set_offsets(toy.X if len(toy.X) else np.zeros((0, 2)))
        cmap = "coolwarm" if toy.n_classes <= 2 else "brg"
        self.scatter.set_cmap(cmap)
        self.scatter.set_array(toy.y.astype(float))
        self.scatter.set_clim(0, max(1, toy.n_classes - 1))
        self.ax_map.set_xlim(x0, x1)
        self.ax_map.set_ylim(y0, y1)
        self.lines.set_segments(self.state.boundary)

    @guarded()
    def _on_axis(self, axis: int, change: dict) -> None:
        if self._held:
            return
        with self._lock:  # the moved coordinate from the event: the other one from the state
            point = list(self.state.point)
            try:
                point[axis] = _finite("x₁x₂"[2 * axis:2 * axis + 2], change["new"])
            except (TypeError, ValueError) as e:  # refused: the slider goes back to the point
                with self._hold():
                    self._push_control("xy"[axis])
                raise ValueError(f"{e}; the point stays at ({point[0]:.3f}, {point[1]:.3f})") from None
            self._set_point(*point)

    @guarded()
    def _on_layer(self, change: dict) -> None:
        if self._held:
            return
        with self._lock:
            s = self.state
            s.layer = int(np.clip(int(change["new"]), 1, max(1, s.n_layers)))
            if s.layer != change["new"]:
                with self._hold():
                    self._push_control("layer")
            self._render()

    @guarded()
    def _on_output(self, change: dict) -> None:
        if self._held or change["new"] is None:
            return
        with self._lock:
            s = self.state
            s.output = int(np.clip(int(change["new"]), 0, s.full.n_outputs - 1))
            self._render()

    @guarded()
    def _on_retrain(self) -> None:
        self.retrain(wait=False)

    def _on_click(self, event: dict) -> None:
        if event.get("type") == "click" and "dataX" in event:
            self.pick_pixel(float(event["dataX"]), float(event["dataY"]))

    def _retrain_job(self, dataset: str, hidden: tuple[int, ...], seed: int) -> None:
        """The worker thread: train and enumerate (no lock held), then install and render."""
        try:
            bar = self.controls["progress"]

            def progress(step: int, total: int) -> None:
                bar.value = int(100 * step / total)

            toy = train_toy(dataset, hidden, seed, steps=self.steps, progress=progress)
            parts = _partitions(toy)
            with self._lock:
                self.state.stats["trainings"] += 1
            if self._install(parts):
                self._set_error("")
                self._render()
        except Exception as e:  # noqa: BLE001 - shown in the widget
            self._set_error(self._error_text(e))
        finally:
            self.controls["retrain"].disabled = False

    # ------------------------------------------------------------------ rendering (reads the state only)

    def _render(self) -> None:
        with self._lock:
            s = self.state
            if s.layer not in self._backgrounds:
                self._draw_scene()
            self.canvas.restore_region(self._backgrounds[s.layer])
            self._update_point()
            for artist in (self.highlight, self.marker, self.map_title, self.ax_bar):
                self.fig.draw_artist(artist)
            rgb = np.asarray(self.canvas.buffer_rgba())[..., :3]
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="png", compress_level=1)
            self.image.value = buf.getvalue()

    def _draw_scene(self) -> None:
        """Draw the partition of the current layer with the boundary and data, and keep it as a bitmap."""
        s = self.state
        rs = s.regions
        self.poly.set_verts([r.polygon for r in rs])
        self.poly.set_facecolor(s.colors[s.layer - 1])
        self.canvas.draw()
        self._backgrounds[s.layer] = self.canvas.copy_from_bbox(self.fig.bbox)
        s.stats["scene_draws"] += 1

    def _update_point(self) -> None:
        s = self.state
        p = np.asarray(s.point)
        cell = s.regions.locate(p)
        final = s.full.locate(p)
        self.highlight.set_xy(cell.polygon)
        self.marker.set_data([p[0]], [p[1]])
        w, b = final.W[s.output], final.b[s.output]
        contrib = w * p
        score = float(contrib.sum() + b)
        vals = [contrib[0], contrib[1], b, score]
        for bar, label, v, i in zip(self.bars, self.bar_labels, vals, range(4), strict=True):
            bar.set_height(v)
            label.set_position((i, v))
            label.set_text(f"{v:.2f}")
            label.set_va("bottom" if v >= 0 else "top")
        top = max(1e-6, max(abs(v) for v in vals)) * 1.25
        self.ax_bar.set_ylim(-top, top)
        self.ax_bar.set_title(f"logit {s.output} = {_affine_text(w, b)}", fontsize=9)
        n = len(s.regions)
        self.map_title.set_text(
            f"after layer {s.layer}/{s.n_layers}: {n} region{'s' * (n != 1)}; point in region {cell.index}"
        )
        self.info.value = self._info_html(p, cell, final)

    def _info_html(self, p: np.ndarray, cell: Region, final: Region) -> str:
        s = self.state
        k = s.output
        pats = " | ".join("".join("1" if v else "0" for v in lp) for lp in final.layer_patterns)
        rows = "".join(
            f"<tr><td>logit {c}</td><td>{final.W[c, 0]:+.4f}</td><td>{final.W[c, 1]:+.4f}</td>"
            f"<td>{final.b[c]:+.4f}</td></tr>"
            for c in range(final.W.shape[0])
        )
        contrib = final.W[k] * p
        note = "" if s.layer == s.n_layers else (
            f"<br><i>The cell after layer {s.layer} is split further by later layers: W and b below are those of "
            f"the final region {final.index}.</i>"
        )
        return (
            f"<b>x</b> = ({p[0]:.3f}, {p[1]:.3f}) &nbsp; region {final.index} &nbsp; pattern <code>{pats}</code>{note}"
            f"<table><tr><th></th><th>w₁</th><th>w₂</th><th>b</th></tr>{rows}</table>"
            f"logit {k}: w₁x₁ = {contrib[0]:+.4f}, w₂x₂ = {contrib[1]:+.4f}, b = {final.b[k]:+.4f}; "
            f"sum = <b>{contrib.sum() + final.b[k]:+.4f}</b>"
        )


def _affine_text(w: np.ndarray, b: float) -> str:
    """``w1·x₁ + w2·x₂ + b`` with the signs written once."""
    def term(v: float, name: str, first: bool) -> str:
        sign = ("-" if v < 0 else "") if first else (" - " if v < 0 else " + ")
        return f"{sign}{abs(v):.2f}{name}"

    return term(w[0], "·x₁", True) + term(w[1], "·x₂", False) + term(b, "", False)


def _partitions(toy: ToyNet) -> _Partitions:
    """Enumerate a network's partitions once (the slow part of an install: no lock is held)."""
    sets = enumerate_layers(toy.model, toy.bounds)
    boundary = sets[-1].decision_boundary() if sets[-1].complete else []
    return _Partitions(toy, sets, [region_colors(rs) for rs in sets], boundary)
