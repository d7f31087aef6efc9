"""The explorers' shared base: errors become messages, the hold is per thread, snapshot, close."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import ipywidgets as W
import numpy as np
import pytest

from pwawidgets import viz
from pwawidgets.widgets.base import Explorer, Messages, guarded, message_html


@dataclass
class DemoState(Messages):
    value: float = 0.0
    calls: int = 0


class Demo(Explorer):
    """A minimal explorer: one slider, a picture of its value."""

    PLAIN_ERRORS = (LookupError,)

    def __init__(self) -> None:
        super().__init__()
        self.state = DemoState()
        self.controls = {"value": W.FloatSlider(min=0, max=10)}
        self.image = W.Image(format="png")
        self.widget = W.VBox([W.HBox([self.image, self.controls["value"]]), self.message_widget])
        self.dropped = False
        self.controls["value"].observe(self._on_value, names="value")
        self._render()

    @guarded("Value")
    def _on_value(self, change: dict) -> None:
        if self._held:
            return
        self.state.calls += 1
        if change["new"] == 7:
            raise RuntimeError("seven is not allowed")
        if change["new"] == 8:
            raise LookupError("no eight here")
        self.state.value = float(change["new"])
        self._render()

    @guarded()
    def outer(self, value: float) -> bool:
        self.controls["value"].value = value  # a guarded callback inside a guarded call
        return True

    def set_quietly(self, value: float) -> None:
        with self._hold():
            self.controls["value"].value = value

    def _render(self) -> None:
        self.image.value = viz.to_png(np.full((4, 6, 3), int(self.state.value * 20), np.uint8))

    def _drop_caches(self) -> None:
        self.dropped = True


def test_errors_become_messages_and_the_next_success_clears_them() -> None:
    demo = Demo()
    demo.controls["value"].value = 7  # raises inside: never out of the setter
    assert demo.message == "Value: RuntimeError: seven is not allowed"
    assert "#b00020" in demo.message_widget.value and "seven" in demo.message_widget.value
    demo.controls["value"].value = 8
    assert demo.message == "Value: no eight here"  # a plain error: no type name
    demo.controls["value"].value = 3
    assert demo.message == "" and demo.message_widget.value == ""
    assert demo.state.value == 3


def test_nested_guards_keep_an_inner_error() -> None:
    demo = Demo()
    assert demo.outer(7) is True  # the outer call worked; the callback it triggered did not
    assert "seven" in demo.message
    assert demo.outer(2) is True
    assert demo.message == ""


def test_message_html() -> None:
    assert message_html("", "") == ""
    error = message_html("bad <b>", "a note")
    assert "#b00020" in error and "bad &lt;b&gt;" in error and "note" not in error
    note = message_html("", "careful & slow")
    assert "#8a5a00" in note and "careful &amp; slow" in note
    state = DemoState(note="n")
    assert state.message == "n"
    state.error = "e"
    assert state.message == "e"


def test_the_hold_mutes_own_changes_in_this_thread_only() -> None:
    demo = Demo()
    demo.set_quietly(4)
    assert demo.state.calls == 0 and demo.state.value == 0
    inside, release, seen = threading.Event(), threading.Event(), []

    def worker() -> None:
        with demo._hold():
            inside.set()
            release.wait(10)
            seen.append(demo._held)

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(10)
    assert not demo._held  # the worker's hold is its own
    demo.controls["value"].value = 5  # a user's move while the worker holds: applied
    assert demo.state.value == 5 and demo.state.calls == 1
    release.set()
    thread.join(10)
    assert seen == [True]
    demo.controls["value"].value = 6
    assert demo.state.value == 6


def test_the_hold_is_released_after_an_exception_and_nests() -> None:
    demo = Demo()
    with pytest.raises(ZeroDivisionError), demo._hold():
        with demo._hold():
            assert demo._held
        assert demo._held  # the inner block ended, the outer still holds
        1 / 0  # noqa: B018
    assert not demo._held
    demo.controls["value"].value = 2
    assert demo.state.value == 2


def test_snapshot_display_and_close() -> None:
    demo = Demo()
    demo.controls["value"].value = 5
    snap = demo.snapshot()
    assert snap.shape == (4, 6, 3) and snap.dtype == np.uint8 and (snap == 100).all()
    assert callable(demo._ipython_display_)
    demo.close()
    assert demo.dropped
    assert demo.widget.comm is None and demo.image.comm is None and demo.controls["value"].comm is None
    assert demo.message_widget.comm is None


def test_guarded_calls_after_close_say_so_and_change_nothing() -> None:
    from pwawidgets.widgets.base import CLOSED

    demo = Demo()
    demo.controls["value"].value = 2
    demo.close()
    assert demo.closed
    assert demo.outer(5) is False
    assert demo.message == CLOSED[0].upper() + CLOSED[1:]
    demo.controls["value"].value = 6  # a callback after close: the message names it
    assert demo.message == f"Value: {CLOSED}"
    assert demo.state.value == 2 and demo.state.calls == 1
