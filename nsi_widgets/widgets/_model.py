"""Thin anywidget classes: only the synced traits and the bundle (jupyter-scatter's split).

:class:`~nsi_widgets.widgets._linked.LinkedWidget` subclasses :class:`_LinkedModel` and adds the
logic (turning a :class:`~nsi_widgets.results.NeuronIndex` into trait values, validation, annotation
writes); the Explorer and the single views subclass that. One esbuild bundle draws them all;
``_views`` tells it which views to lay out.
"""
from __future__ import annotations

import pathlib

import anywidget
import traitlets as t

STATIC = pathlib.Path(__file__).resolve().parent.parent / "static"
ESM = STATIC / "index.js"
CSS = STATIC / "styles.css"


class _MissingBundle:
    """Stands in for ``_esm``/``_css`` when the front end was not built.

    Importing the package keeps working (compute code needs no browser); creating a widget
    raises an error that says how to build the bundle. ``hasattr`` in anywidget's ``__init__``
    only swallows ``AttributeError``, so the ``FileNotFoundError`` reaches the user.
    """

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __get__(self, instance, owner):
        if instance is None:
            return self
        raise FileNotFoundError(
            f"the nsi-widgets front end is not built: {self.path} is missing. Build it with "
            f"`cd js && npm install && npm run build` (or install a wheel, which ships it).")


def _bundle(path: pathlib.Path):
    # anywidget's template style: a pathlib.Path (anywidget reads it, and live-reloads it in dev)
    return path if path.is_file() else _MissingBundle(path)


class _BundleWidget(anywidget.AnyWidget):
    # subclasses inherit the coerced FileContents; one bundle draws every view
    _esm = _bundle(ESM)
    _css = _bundle(CSS)
    _kind = t.Unicode("").tag(sync=True)


#: the linked state: set in the browser or in Python, mirrored both ways
STATE_TRAITS = ("layer", "unit", "selection", "sort_by", "descending", "filters", "show_units", "search",
                "unlabelled_only", "author")


class _LinkedModel(_BundleWidget):
    """The traits of the one front end (js/src/app.js). ``_views`` picks what it draws."""

    _kind = t.Unicode("linked").tag(sync=True)
    _views = t.List(t.Unicode()).tag(sync=True)

    # data (Python -> browser)
    info = t.Dict().tag(sync=True)                # layers, class names and parents, title, histogram scores
    layer_data = t.Dict().tag(sync=True)          # {layer: layer payload with binary arrays}
    card_views = t.List(t.Dict()).tag(sync=True)  # the card's views (views.ViewInstance.spec)
    annotations = t.Dict().tag(sync=True)         # {layer: {str(unit): annotation}} of `author`
    agreement = t.Dict().tag(sync=True)           # {layer: agreement tab data}
    authors = t.List(t.Unicode()).tag(sync=True)
    editable = t.Bool(False).tag(sync=True)
    readonly_note = t.Unicode("").tag(sync=True)
    cell_size = t.Int(64).tag(sync=True)
    grid_height = t.Int(420).tag(sync=True)

    # the linked state (both ways)
    layer = t.Unicode("").tag(sync=True)
    unit = t.Int(None, allow_none=True).tag(sync=True)
    selection = t.List(t.Int()).tag(sync=True)
    sort_by = t.Unicode("unit").tag(sync=True)
    descending = t.Bool(False).tag(sync=True)
    filters = t.Dict().tag(sync=True)             # {column: [lo|None, hi|None]}
    show_units = t.Unicode("all").tag(sync=True)     # "all", "alive" or "dead"
    search = t.Unicode("").tag(sync=True)
    unlabelled_only = t.Bool(False).tag(sync=True)
    author = t.Unicode("").tag(sync=True)
