"""RegionExplorer: the linear regions of a toy 2-D ReLU network, one point's affine piece at a time.

The state lives in one :class:`ExplorerState`; rendering only reads it. The figure is persistent (Agg canvas): the
regions, boundary and data of each layer's partition are drawn once and kept as a bitmap, and a point pick only
redraws the highlight and the bar chart of contributions over it.
"""

from __future__ import annotations

import functools
import html
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from PIL import Image

from ..regions import DATASETS, Region, RegionSet, ToyNet, enumerate_layers, region_colors, train_toy
from ._sync import holding

__all__ = ["ExplorerState", "RegionExplorer"]


@dataclass
class ExplorerState:
    """Everything the explorer shows: the network and data, its cached partitions, and the current choices."""

    toy: ToyNet
    layer_sets: list[RegionSet]  # the partition after hidden layer 1..L, computed once per network
    colors: list[np.ndarray]
    boundary: list[np.ndarray]
    point: tuple[float, float] = (0.0, 0.0)
    layer: int = 1
    output: int = 0
    message: str = ""
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


def _guard(method: Callable) -> Callable:
    """Show any exception of a callback as a message inside the widget, never as a traceback."""

    @functools.wraps(method)
    def wrapper(self: RegionExplorer, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
            if not (self._thread is not None and self._thread.is_alive()):
                self._set_message("")
            return result
        except Exception as e:  # noqa: BLE001 - every error of a callback is shown to the learner
            self._set_message(f"{type(e).__name__}: {e}")
            return None

    return wrapper


class RegionExplorer:
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
        self.steps = steps
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._syncing = False
        self._backgrounds: dict[int, Any] = {}
        if toy is None:
            toy = train_toy(dataset, hidden, seed, steps=steps)
        self.state = ExplorerState(toy, [], [], [])
        self.state.stats["trainings"] += 1
        self._build_figure(figsize, dpi)
        self._build_controls(toy)
        self._install(toy)
        self._connect()
        self._render()

    @classmethod
    def from_model(
        cls, model: Any, bounds: Any, X: np.ndarray | None = None, y: np.ndarray | None = None, **kwargs: Any
    ) -> RegionExplorer:
        """An explorer for any network of nn.Linear and ReLU layers with two inputs, on the box ``bounds``.

        The model is put in eval mode; ``X``, ``y`` (optional) are drawn as data points.
        """
        X = np.zeros((0, 2)) if X is None else np.asarray(X, dtype=np.float64)
        y = np.zeros(len(X), dtype=np.int64) if y is None else np.asarray(y)
        return cls(ToyNet(model.eval(), X, y, bounds), **kwargs)

    # ------------------------------------------------------------------ public surface

    @property
    def message(self) -> str:
        """The error shown in the widget; empty when all is well."""
        return self.state.message

    @property
    def regions(self) -> RegionSet:
        """The partition currently shown."""
        return self.state.regions

    @property
    def region(self) -> Region:
        """The final region (all layers) holding the picked point."""
        return self.state.full.locate(self.state.point)

    def snapshot(self) -> np.ndarray:
        """The picture the widget shows now, as an RGB uint8 array (decoded from the displayed PNG)."""
        return np.asarray(Image.open(io.BytesIO(self.image.value)).convert("RGB"))

    def pick(self, x: float, y: float) -> None:
        """Move the point to ``(x, y)`` (clamped to the box), as the sliders or a click do."""
        (x0, x1), (y0, y1) = self.state.full.bounds
        with self._hold():
            self.controls["x"].value = float(np.clip(x, x0, x1))
            self.controls["y"].value = float(np.clip(y, y0, y1))
        self._on_point()

    @_guard
    def pick_pixel(self, px: float, py: float) -> None:
        """Move the point to the image pixel ``(px, py)`` (from the top left), if it falls on the map."""
        h = self.fig.bbox.height
        xy = self.ax_map.transData.inverted().transform((px, h - py))
        (x0, x1), (y0, y1) = self.state.full.bounds
        if x0 <= xy[0] <= x1 and y0 <= xy[1] <= y1:
            self.pick(*xy)

    def retrain(self, wait: bool = False) -> threading.Thread | None:
        """Train a new network with the dataset/depth/width/seed controls, in a background thread.

        A progress bar follows the training; the notebook stays free. ``wait=True`` blocks until it is done.
        """
        if self._thread is not None and self._thread.is_alive():
            self._set_message("Training is already running: wait for it to finish.")
            return self._thread
        c = self.controls
        hidden = (int(c["width"].value),) * int(c["depth"].value)
        params = dict(dataset=c["dataset"].value, hidden=hidden, seed=int(c["seed"].value))
        c["retrain"].disabled = True
        c["progress"].value = 0
        self._set_message("")
        self._thread = threading.Thread(target=self._retrain_job, kwargs=params, daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
        return self._thread

    def wait(self, timeout: float | None = None) -> None:
        """Block until a running retraining has finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

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
        self.image = W.Image(format="png")
        self.info = W.HTML()
        self.message_widget = W.HTML()
        left = W.VBox([self.image, W.HBox([c["x"], c["y"]]), W.HBox([c["layer"], c["output"]])])
        retrain = W.VBox([W.HTML("<b>Another network</b>"), c["dataset"], c["depth"], c["width"], c["seed"],
                          c["retrain"], c["progress"]])
        self.widget = W.VBox([W.HBox([left, W.VBox([self.info, retrain])]), self.message_widget])
        self._events = None
        try:  # clicks on the picture: optional, the sliders do the same
            from ipyevents import Event

            self._events = Event(source=self.image, watched_events=["click"])
            self._events.on_dom_event(self._on_click)
        except ImportError:
            pass

    def _connect(self) -> None:
        c = self.controls
        c["x"].observe(lambda _: self._on_point(), names="value")
        c["y"].observe(lambda _: self._on_point(), names="value")
        c["layer"].observe(lambda _: self._on_layer(), names="value")
        c["output"].observe(lambda _: self._on_output(), names="value")
        c["retrain"].on_click(lambda _: self._on_retrain())

    def _hold(self):
        return holding(self)

    # ------------------------------------------------------------------ state changes

    def _install(self, toy: ToyNet) -> None:
        """Make ``toy`` the current network: enumerate its partitions once, reset the controls, redraw the scene."""
        sets = enumerate_layers(toy.model, toy.bounds)
        with self._lock:
            s = self.state
            first_time = not s.layer_sets
            s.stats["enumerations"] += 1
            s.toy, s.layer_sets = toy, sets
            s.colors = [region_colors(rs) for rs in sets]
            s.boundary = sets[-1].decision_boundary() if sets[-1].complete else []
            (x0, x1), (y0, y1) = toy.bounds
            if first_time and len(toy.X):  # start on a data point: a zero point has zero contributions
                s.point = (float(toy.X[0, 0]), float(toy.X[0, 1]))
            s.point = (float(np.clip(s.point[0], x0, x1)), float(np.clip(s.point[1], y0, y1)))
            s.layer = len(sets[-1].widths) if sets[-1].widths else 1
            s.output = min(s.output, sets[-1].n_outputs - 1)
            self._backgrounds.clear()
            c = self.controls
            with self._hold():
                for key, (lo, hi), v in (("x", (x0, x1), s.point[0]), ("y", (y0, y1), s.point[1])):
                    c[key].min, c[key].max = -1e9, 1e9  # widen first so that min < max holds while moving
                    c[key].min, c[key].max, c[key].step, c[key].value = lo, hi, (hi - lo) / 200, v
                c["layer"].min, c["layer"].max = min(1, s.n_layers), max(1, s.n_layers)
                c["layer"].value = s.layer
                c["output"].options = [(f"logit {k}", k) for k in range(sets[-1].n_outputs)]
                c["output"].value = s.output
            self._set_data(toy)

    def _set_data(self, toy: ToyNet) -> None:
        (x0, x1), (y0, y1) = toy.bounds
        self.scatter.set_offsets(toy.X if len(toy.X) else np.zeros((0, 2)))
        cmap = "coolwarm" if toy.n_classes <= 2 else "brg"
        self.scatter.set_cmap(cmap)
        self.scatter.set_array(toy.y.astype(float))
        self.scatter.set_clim(0, max(1, toy.n_classes - 1))
        self.ax_map.set_xlim(x0, x1)
        self.ax_map.set_ylim(y0, y1)
        self.lines.set_segments(self.state.boundary)

    @_guard
    def _on_point(self) -> None:
        if self._syncing:
            return
        self.state.point = (float(self.controls["x"].value), float(self.controls["y"].value))
        self._render()

    @_guard
    def _on_layer(self) -> None:
        if self._syncing:
            return
        self.state.layer = int(self.controls["layer"].value)
        self._render()

    @_guard
    def _on_output(self) -> None:
        if self._syncing or self.controls["output"].value is None:
            return
        self.state.output = int(self.controls["output"].value)
        self._render()

    @_guard
    def _on_retrain(self) -> None:
        self.retrain(wait=False)

    def _on_click(self, event: dict) -> None:
        if event.get("type") == "click" and "dataX" in event:
            self.pick_pixel(float(event["dataX"]), float(event["dataY"]))

    def _retrain_job(self, dataset: str, hidden: tuple[int, ...], seed: int) -> None:
        try:
            bar = self.controls["progress"]

            def progress(step: int, total: int) -> None:
                bar.value = int(100 * step / total)

            toy = train_toy(dataset, hidden, seed, steps=self.steps, progress=progress)
            self.state.stats["trainings"] += 1
            self._install(toy)
            self._set_message("")
            self._render()
        except Exception as e:  # noqa: BLE001 - shown in the widget
            self._set_message(f"{type(e).__name__}: {e}")
        finally:
            self.controls["retrain"].disabled = False

    def _set_message(self, text: str) -> None:
        self.state.message = text
        self.message_widget.value = (
            f"<div style='color:#b00020;font-weight:bold'>{html.escape(text)}</div>" if text else ""
        )

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
