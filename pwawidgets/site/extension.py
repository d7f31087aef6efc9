"""Sphinx extension of the site: a note beside every widget that needs Python, and saved widget state the page
can render.

MyST-NB writes a widget output as ``<script type="application/vnd.jupyter.widget-view+json">`` and the notebook's
saved widget state (kept by the execution) as one script per page. A widget whose tree holds a control (slider,
dropdown, button, upload...) needs a kernel to react; after it the page says so, with links to the static explorer
and to Binder. A progress bar gets no note. The state keeps only the models of ipywidgets' own packages, the ones the
offline widget manager can draw (a model it cannot load would stop it from drawing the page's other widgets).
The Colab set-up cell is left out, and an image from the web (the Colab badge) is replaced by its alt text.
"""

from __future__ import annotations

import json
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx

VIEW = "application/vnd.jupyter.widget-view+json"
STATE_KEY = "ipywidgets_state"
DRAWABLE = "@jupyter-widgets/"  # the module prefix of ipywidgets' own models (controls, base, output)
CONTROLS = {"Button", "Checkbox", "ColorPicker", "Combobox", "DatePicker", "Dropdown", "FileUpload",
            "FloatLogSlider", "FloatRangeSlider", "FloatSlider", "FloatText", "BoundedFloatText", "IntRangeSlider",
            "IntSlider", "IntText", "BoundedIntText", "Play", "RadioButtons", "Select", "SelectMultiple",
            "SelectionRangeSlider", "SelectionSlider", "Text", "Textarea", "ToggleButton", "ToggleButtons"}
NOTE_CLASS = "pwawidgets-needs-python"
BINDER_URL = "https://mybinder.org/v2/gh/pwawidgets/pwawidgets/main?urlpath=lab/tree/notebooks/{name}"


def page_state(env: Any, docname: str) -> dict[str, Any] | None:
    """The saved widget state of one page (``{"state": {model_id: {...}}}``), or None."""
    js_files = getattr(env, "nb_metadata", {}).get(docname, {}).get("js_files", {})
    entry = js_files.get(STATE_KEY)
    if not entry:
        return None
    body = entry[1].get("body", "")
    return json.loads(body.replace("<\\/", "</")) if body else None


def references(value: Any) -> list[str]:
    """The model ids a widget's state refers to (``"IPY_MODEL_<id>"``, alone or in lists)."""
    if isinstance(value, str):
        return [value[len("IPY_MODEL_"):]] if value.startswith("IPY_MODEL_") else []
    if isinstance(value, list | tuple):
        return [ref for item in value for ref in references(item)]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in references(item)]
    return []


def needs_python(model_id: str, state: dict[str, Any] | None) -> bool:
    """Whether the widget tree under ``model_id`` holds a control; with no saved state, assume it does."""
    if state is None:
        return True
    models, seen, todo = state.get("state", {}), set(), [model_id]
    while todo:
        current = todo.pop()
        if current in seen or current not in models:
            continue
        seen.add(current)
        model = models[current]
        if model.get("model_name", "").removesuffix("Model") in CONTROLS:
            return True
        todo += references(model.get("state", {}))
    return False


def note(docname: str, explorer: bool) -> nodes.note:
    """The note put after a widget that needs Python."""
    up = "../" * docname.count("/")
    notebook = docname.split("/")[-1] + ".ipynb"
    para = nodes.paragraph()
    para += nodes.Text("This explorer needs a running Python kernel: on this page its controls do nothing, and the "
                       "picture is the one drawn when the site was built. ")
    if explorer:
        para += nodes.Text("Try the ")
        para += nodes.reference("", "static explorer", refuri=f"{up}explorer/index.html")
        para += nodes.Text(" (no Python needed), or run this notebook on ")
    else:
        para += nodes.Text("Run this notebook on ")
    para += nodes.reference("", "Binder", refuri=BINDER_URL.format(name=notebook))
    para += nodes.Text(".")
    return nodes.note("", para, classes=[NOTE_CLASS])


def add_notes(app: Sphinx, doctree: nodes.document) -> None:
    """After each cell whose output is a widget that needs Python, a note (once per cell)."""
    docname = app.env.docname
    state = page_state(app.env, docname)
    for raw in list(doctree.findall(nodes.raw)):
        if f'type="{VIEW}"' not in raw.astext():
            continue
        view = json.loads(raw.astext().split(">", 1)[1].rsplit("</script>", 1)[0].replace("<\\/", "</"))
        if not needs_python(view.get("model_id", ""), state):
            continue
        cell = raw
        while cell.parent is not None and "cell" not in cell.get("classes", []):
            cell = cell.parent
        if cell.parent is None:
            cell = raw
        after = cell.next_node(descend=False, siblings=True)
        if not (isinstance(after, nodes.note) and NOTE_CLASS in after.get("classes", [])):
            cell.parent.insert(cell.parent.index(cell) + 1, note(docname, app.config.pwawidgets_explorer))


def filter_state(app: Sphinx, env: Any) -> None:
    """Before pages are written: each page's saved widget state keeps ipywidgets' own models only."""
    for docname, meta in getattr(env, "nb_metadata", {}).items():
        entry = meta.get("js_files", {}).get(STATE_KEY)
        if not entry or not app.config.pwawidgets_widget_js:
            if entry:  # no widget manager: the state would only weigh on the page
                del meta["js_files"][STATE_KEY]
            continue
        state = page_state(env, docname)
        models = state.get("state", {})
        state["state"] = {key: model for key, model in models.items()
                          if model.get("model_module", "").startswith(DRAWABLE)}
        entry[1]["body"] = json.dumps(state).replace("</", "<\\/")


def drop_colab_cells(app: Sphinx, doctree: nodes.document) -> None:
    """The cell tagged ``colab-setup`` installs the package in Colab and does nothing elsewhere: not on the site."""
    for cell in list(doctree.findall(nodes.container)):
        if "tag_colab-setup" in cell.get("classes", []):
            cell.parent.remove(cell)


def no_remote_images(app: Sphinx, doctree: nodes.document) -> None:
    """An image from the web (the Colab badge) becomes its alt text, so that no page fetches anything when read."""
    for image in list(doctree.findall(nodes.image)):
        if image["uri"].startswith(("http://", "https://", "//")):
            image.parent.replace(image, nodes.inline("", image.get("alt", "") or image["uri"]))


def failed_before(app: Sphinx, env: Any, added: set[str], changed: set[str], removed: set[str]) -> list[str]:
    """Notebooks whose last execution failed are read (executed) again, even when unchanged."""
    return [docname for docname, meta in getattr(env, "nb_metadata", {}).items()
            if not (meta.get("exec_data") or {}).get("succeeded", True) and docname not in removed]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("pwawidgets_explorer", False, "env", bool)
    app.add_config_value("pwawidgets_widget_js", False, "env", bool)
    app.connect("doctree-read", add_notes)
    app.connect("doctree-read", drop_colab_cells)
    app.connect("doctree-read", no_remote_images)
    app.connect("env-get-outdated", failed_before)
    app.connect("env-updated", filter_state)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
