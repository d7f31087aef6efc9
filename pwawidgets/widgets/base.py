"""What every explorer shares: errors shown inside the widget, the message line, the picture (an image that keeps
its aspect ratio, and as an array), display, closing, the parts named in the page, and a per-thread hold so that
control changes made by the explorer itself trigger no callback.

A subclass builds ``self.state`` (a dataclass deriving from :class:`Messages`), ``self.controls`` (the ipywidgets by
name), ``self.image`` (the ``ipywidgets.Image`` shown, from :func:`picture_widget`), ``self.info`` (the text beside
it) and ``self.widget`` (the whole layout, holding ``self.message_widget``), and decorates its callbacks with
:func:`guarded`.
"""

from __future__ import annotations

import functools
import html
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import ipywidgets as W
import numpy as np

from .. import viz

__all__ = ["CLOSED", "Explorer", "Messages", "close_tree", "guarded", "message_html", "picture_widget", "side_by_side"]

F = TypeVar("F", bound=Callable[..., Any])

ERROR_STYLE = "color:#b00020;font-weight:bold"
NOTE_STYLE = "color:#8a5a00"
CLOSED = "this explorer was closed (close() gave its memory back): create a new one to go on"


@dataclass(kw_only=True)
class Messages:
    """The message part of an explorer's state: an error (red) wins over a note (amber)."""

    error: str = ""
    note: str = ""

    @property
    def message(self) -> str:
        return self.error or self.note


def message_html(error: str, note: str = "") -> str:
    """The message line: the error in bold red, else the note in amber, else nothing."""
    if error:
        return f"<div style='{ERROR_STYLE}'>{html.escape(error)}</div>"
    if note:
        return f"<div style='{NOTE_STYLE}'>{html.escape(note)}</div>"
    return ""


def picture_widget() -> W.Image:
    """The ``ipywidgets.Image`` an explorer draws its PNG into, sized so that it keeps its aspect ratio everywhere.

    Its natural width, never more than its container's (``max_width``), and the height that goes with it
    (``height: auto``). ``align_self`` keeps a row or column of the layout from stretching it to its neighbour's
    height (JupyterLab 4 showed a 454 x 280 picture at 454 x 670 without it).
    """
    return W.Image(format="png", layout=W.Layout(width="auto", height="auto", max_width="100%", flex="0 0 auto",
                                                 align_self="flex-start"))


def side_by_side(picture: W.Widget, controls: W.Widget, controls_width: str) -> W.HBox:
    """The picture and, beside it, the controls: they take the room left (at least ``controls_width``, their long
    lines wrap) and go under the picture when the window is too narrow for both."""
    controls.layout.flex = f"1 1 {controls_width}"
    controls.layout.min_width = controls_width
    return W.HBox([picture, controls], layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))


def close_tree(widget: W.Widget) -> None:
    """Close a widget and all its children, so the kernel can free them."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()


def guarded(what: str = "") -> Callable[[F], F]:
    """Run a callback or public method; show any exception as a message inside the widget (never a traceback).

    On an exception the message is ``"<what>: <error>"`` and the call returns False; otherwise it returns the
    method's result. Calls nest: only the outermost guarded call of a thread clears the error on success, and not
    when a guarded call inside it failed. Once the explorer is closed, the call does nothing, says so
    (:data:`CLOSED`) and returns False.
    """

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Explorer, *args: Any, **kwargs: Any) -> Any:
            if self.closed:
                self._set_error(f"{what}: {CLOSED}" if what else CLOSED[0].upper() + CLOSED[1:])
                return False
            local = self._local
            depth = getattr(local, "guard_depth", 0)
            if depth == 0:
                local.failed = False
            local.guard_depth = depth + 1
            try:
                result = method(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - every error of a callback is shown to the learner
                local.failed = True
                self._set_error(self._error_text(e, what))
                return False
            finally:
                local.guard_depth = depth
            if depth == 0 and not local.failed:
                self._after_success()
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


class Explorer:
    """Base of the explorers: message, snapshot, display, close, hold. ``state`` holds everything shown."""

    #: exceptions whose text is shown without their type name (they are written for the learner)
    PLAIN_ERRORS: tuple[type[BaseException], ...] = ()

    state: Messages
    controls: dict[str, W.Widget]
    image: W.Image
    info: W.HTML
    widget: W.Widget

    def __init__(self) -> None:
        self._lock = threading.RLock()  # guards the state and the rendering against a worker thread
        self._local = threading.local()  # per thread: hold depth, guard depth
        self._closed = False
        self.message_widget = W.HTML()

    # ------------------------------------------------------------------ public surface

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called: every guarded call then only says so."""
        return getattr(self, "_closed", False)

    @property
    def message(self) -> str:
        """The text shown under the picture: an error, else a note; empty when all is well."""
        return self.state.message

    def snapshot(self) -> np.ndarray:
        """The picture the widget shows now, as an RGB uint8 array (decoded from the displayed PNG)."""
        return viz.from_png(self.image.value)

    def close(self) -> None:
        """Close every widget of the explorer and drop its caches.

        ipywidgets keeps each open widget (and so the explorer behind its callbacks, and the model) alive until it
        is closed: close an explorer you no longer need to give its memory back. Later calls say it was closed.
        """
        with self._lock:
            self._closed = True
        for widget in self._widgets():
            close_tree(widget)
        with self._lock:
            self._drop_caches()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------ for subclasses

    def _name_parts(self, kind: str) -> None:
        """Name the parts in the page, for styles and browser tests: CSS classes ``pwa-<kind>`` (the layout),
        ``pwa-<kind>-picture``, ``pwa-<kind>-info``, ``pwa-<kind>-message`` and ``pwa-<kind>-<control>`` (each of
        ``controls``)."""
        self.widget.add_class(f"pwa-{kind}")
        self.image.add_class(f"pwa-{kind}-picture")
        self.info.add_class(f"pwa-{kind}-info")
        self.message_widget.add_class(f"pwa-{kind}-message")
        for name, control in self.controls.items():
            control.add_class(f"pwa-{kind}-{name}")

    def _widgets(self) -> list[W.Widget]:
        """The widgets to close: the layout, plus any widget outside it (e.g. an event source)."""
        return [self.widget]

    def _drop_caches(self) -> None:
        """Forget what was computed (called by :meth:`close`, under the lock)."""

    @contextmanager
    def _hold(self) -> Iterator[None]:
        """Within the block, control changes made by this thread trigger no callback (see :attr:`_held`).

        Per thread: a worker thread holding its own changes never swallows a user's move in the kernel thread.
        """
        depth = getattr(self._local, "hold", 0)
        self._local.hold = depth + 1
        try:
            yield
        finally:
            self._local.hold = depth

    @property
    def _held(self) -> bool:
        """True inside :meth:`_hold` in this thread: callbacks return at once."""
        return getattr(self._local, "hold", 0) > 0

    def _error_text(self, error: BaseException, what: str = "") -> str:
        text = str(error) if isinstance(error, self.PLAIN_ERRORS) else f"{type(error).__name__}: {error}"
        return f"{what}: {text}" if what else text

    def _after_success(self) -> None:
        """A guarded call succeeded: clear the error."""
        if self.state.error:
            self._set_error("")

    def _set_error(self, text: str) -> None:
        with self._lock:
            self.state.error = text
            self._show_message()

    def _show_message(self) -> None:
        self.message_widget.value = message_html(self.state.error, self.state.note)
