"""The one front end's Python side: linked state mirrored in traits, data sent as binary, messages.

The browser (js/src/store.js) holds the linked state (layer, unit, selection, sort, filters,
search, "unlabelled only", author) and changes it without asking the kernel; every change is
mirrored here in traits, which notebooks read and set. Both sides apply the same rules after any
change (:meth:`LinkedWidget._reconcile`, ``reconcile`` in js/src/store.js), so they agree:

* switching the layer clears the selection, drops filters on columns the layer lacks, falls back
  to unit order if the layer lacks the sort key, and shows the first unit in display order;
* the selection keeps only units the grid lists; the unit shown is always one the grid lists
  (the first one when a change hides it), or None when the grid is empty.

What only Python can do travels as custom messages: per-unit payloads of the card's views,
annotation writes (with undo, redo, history), refreshing from the store, and on-demand
computations (:mod:`._compute`).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import traitlets as t

from . import _data, _wire, views as _views
from ._agreement import agreement_payload
from ._compute import ComputeRequest, ComputeRunner
from ._editor import AnnotationEditor, check_author
from ._model import STATE_TRAITS, _LinkedModel

#: traits of data the front end draws from (with the state traits: everything the page needs)
DATA_TRAITS = ("_views", "info", "layer_data", "card_views", "annotations", "agreement", "authors", "editable",
               "readonly_note", "cell_size", "grid_height")


@dataclass(frozen=True)
class DisplayOptions:
    """Sizes of what is sent and shown.

    Attributes
    ----------
    thumb_size : int
        Pixels per side of a grid thumbnail as sent (the browser scales it to ``cell_size``).
    cell_size : int
        Displayed thumbnail size in CSS pixels.
    grid_height : int
        Largest height of the scrolling grid in CSS pixels.
    n_crops, crop_px, nf_px : int
        Top crops in the card, their largest side, and the Neuron Feature's largest side, in pixels.
    histogram_score, class_score : str
        The indexes of the Explorer's two histograms (all layers; the layer shown).
    top_k : int
        Classes listed in a unit's class-frequency bars.
    bins : int
        Bins of the histograms.
    """

    thumb_size: int = _data.DEFAULT_THUMB
    cell_size: int = 64
    grid_height: int = 420
    n_crops: int = _views.CORE_OPTIONS["n_crops"]
    crop_px: int = _views.CORE_OPTIONS["crop_px"]
    nf_px: int = _views.CORE_OPTIONS["nf_px"]
    histogram_score: str = "color_selectivity"
    class_score: str = "class_selectivity"
    top_k: int = 8
    bins: int = 20

    def __post_init__(self):
        if not 4 <= int(self.thumb_size) <= 256:
            raise _data.WidgetArgumentError(f"thumb_size must be between 4 and 256 pixels, got {self.thumb_size}")


class LinkedWidget(_LinkedModel):
    """Base of the Explorer and the single views: one index, one store, the linked state.

    Subclasses set ``_VIEWS`` (what the front end lays out) and ``_FOLLOW_FIRST`` (whether a unit
    is always shown: the first in display order when none is chosen).
    """

    _VIEWS: tuple[str, ...] = ("toolbar", "charts", "grid", "card", "agreement")
    _FOLLOW_FIRST = True

    order = t.List(t.Int(), read_only=True)

    def __init__(self, idx, annotations=None, *, layer: str | None = None, unit: int | None = None,
                 sort_by: str = "color_selectivity", descending: bool = True, filters: dict | None = None,
                 show: str = "all", search: str = "", unlabelled_only: bool = False, author: str | None = None,
                 options: DisplayOptions | None = None, compute: dict | None = None,
                 autosave: str | Path | None = None, title: str | None = None, hide_views: tuple = ()):
        if not (hasattr(idx, "layers") and hasattr(idx, "__getitem__")):
            raise _data.WidgetArgumentError(f"expected a NeuronIndex, got {type(idx).__name__}")
        layer = _data.check_layer(idx, layer)
        if show not in _data.SHOW_CHOICES:
            raise _data.choice_error("show option", show, _data.SHOW_CHOICES)
        self._idx = idx
        self._store = _data.open_store(annotations, idx)
        self._editor = AnnotationEditor(self._store) if self._store is not None else None
        self._options = options or DisplayOptions()
        self._handlers = _views.compute_handlers(compute)
        self._autosave = Path(autosave) if autosave is not None else None
        self._columns_cache: dict[str, tuple[dict, np.ndarray]] = {}
        self._lock = threading.RLock()
        self._settling = 0
        self._store_revision: Any = _data.store_revision(self._store)
        self._annotate_callbacks: list[Callable] = []
        self._runner = ComputeRunner(self._on_compute_progress, self._on_compute_done)
        self._hide = tuple(hide_views)
        self._instances = self._view_instances()

        if author is not None:
            author = check_author(author)
        else:
            author = self._editor.default_author if self._editor else ""
        names = list(self._columns(layer)[0])
        if sort_by not in _data.sort_keys(names):
            if sort_by != "color_selectivity":
                raise _data.choice_error("sort key", sort_by, _data.sort_keys(names))
            sort_by, descending = _data.SORT_UNIT, False  # default index missing: unit order
        filters = _data.normalize_filters(filters, names)
        tables = self._tables(author)
        state = dict(layer=layer, unit=None, selection=[], sort_by=sort_by, descending=bool(descending),
                     filters=filters, show_units=show, search=str(search), unlabelled_only=bool(unlabelled_only),
                     author=author)
        order = self._order_for(state, tables)
        if unit is not None:
            unit = _data.check_unit(idx[layer].n_units, unit, layer)
            if unit not in set(order):
                raise self._hidden_error(layer, unit)
        elif self._FOLLOW_FIRST and order:
            unit = order[0]
        state["unit"] = unit
        editable = self._store is not None and not self._editor.read_only
        note = "" if editable else ("this store was opened read-only" if self._store is not None
                                    else "read-only: pass annotations=AnnotationStore(path) to edit")
        self._settling += 1
        try:
            super().__init__(
                _views=list(self._VIEWS), info=self._info(title), layer_data=self._all_layer_data(),
                card_views=[i.spec() for i in self._instances], annotations=tables,
                agreement=self._agreement_tables(), authors=self._authors(author), editable=editable,
                readonly_note=note, cell_size=int(self._options.cell_size),
                grid_height=int(self._options.grid_height), **state)
        finally:
            self._settling -= 1
        self.set_trait("order", order)
        self.on_msg(self._on_message)

    # -- public API ------------------------------------------------------------------------------
    @property
    def index(self):
        """The :class:`~nsi_widgets.results.NeuronIndex` shown."""
        return self._idx

    @property
    def store(self):
        """The annotation store (or None)."""
        return self._store

    @property
    def layer_index(self):
        """The :class:`~nsi_widgets.results.LayerIndex` of the layer shown."""
        return self._idx[self.layer]

    @property
    def score_names(self) -> list[str]:
        """Per-unit columns of the layer shown (its indexes, ``top_activation``, attachment columns)."""
        return list(self._columns(self.layer)[0])

    @property
    def sort_keys(self) -> list[str]:
        """Valid values of :attr:`sort_by` for the layer shown."""
        return _data.sort_keys(self.score_names)

    def show_unit(self, layer: str | None = None, unit: int | None = None) -> None:
        """Show ``unit`` of ``layer`` (either may be left as is), validated together."""
        layer = _data.check_layer(self._idx, layer if layer is not None else self.layer)
        with self.hold_sync():
            if layer != self.layer:
                self.layer = layer
            if unit is not None:
                self.unit = unit

    def set_filter(self, key: str, low: float | str | None = None, high: float | None = None) -> None:
        """Keep units whose column ``key`` lies in ``[low, high]`` (None: open end; both None: remove).

        For a column of names (e.g. ``"dissection.best_concept"``) ``low`` may be one of its names:
        ``ex.set_filter("dissection.best_concept", "red")`` keeps the units whose best concept is red.
        """
        if isinstance(low, str):
            names = _views.category_columns(self._idx, self.layer).get(key, {}).get("names", [])
            if low not in names:
                raise _data.choice_error(f"name of column {key!r}", low, names)
            low = high = names.index(low)
        filters = dict(self.filters)
        filters.pop(key, None)
        if low is not None or high is not None:
            filters[key] = [low, high]
        elif key not in self.score_names:
            raise _data.choice_error("filter key", key, self.score_names)
        self.filters = filters

    def clear_filters(self) -> None:
        """Remove every range filter, the dead/alive filter, the search text and "unlabelled only"."""
        with self._quiet(), self.hold_sync():  # one change, as the browser makes it
            self.filters = {}
            self.show_units = "all"
            self.search = ""
            self.unlabelled_only = False
        self._reconcile({"filters", "show_units", "search", "unlabelled_only"})

    def annotate(self, label: str, note: str = "", tags=(), *, layer: str | None = None,
                 unit: int | None = None) -> dict:
        """Save an annotation of a unit (default: the one shown) as :attr:`author` (what Save does).

        Empty label, note and tags remove the unit's annotation.

        Returns
        -------
        dict
            The stored annotation (label, note, tags, author, time), empty if removed.
        """
        if self._editor is None:
            raise _data.WidgetArgumentError(
                "this widget has no annotation store: create it with annotations=AnnotationStore(path)")
        layer = self.layer if layer is None else _data.check_layer(self._idx, layer)
        unit = self.unit if unit is None else _data.check_unit(self._idx[layer].n_units, unit, layer)
        if unit is None:
            raise _data.WidgetArgumentError("no unit is shown: pass unit=...")
        self._editor.annotate(layer, unit, label, note, tags, self.author)
        return self._after_write(layer, unit, self.author)["annotation"] or {}

    def undo(self, layer: str | None = None, unit: int | None = None) -> dict:
        """Undo the last change of a unit's annotation by :attr:`author` (what the card's undo does)."""
        layer, unit = self._target(layer, unit)
        self._editor.undo(layer, unit, self.author)
        return self._after_write(layer, unit, self.author)

    def redo(self, layer: str | None = None, unit: int | None = None) -> dict:
        """Redo what the last :meth:`undo` of that unit took back."""
        layer, unit = self._target(layer, unit)
        self._editor.redo(layer, unit, self.author)
        return self._after_write(layer, unit, self.author)

    def on_annotate(self, callback: Callable[[str, int, dict], Any]) -> None:
        """Call ``callback(layer, unit, annotation)`` after every saved change of an annotation."""
        self._annotate_callbacks.append(callback)

    def on_select(self, callback: Callable[[str, list[int]], Any]) -> None:
        """Call ``callback(layer, selection)`` whenever the selection changes."""
        self.observe(lambda change: callback(self.layer, list(change["new"])), "selection")

    def refresh_annotations(self, force: bool = False) -> None:
        """Reload the labels from the annotation store if it changed (``store.revision``)."""
        revision = _data.store_revision(self._store)
        if not force and revision is not None and revision == self._store_revision:
            return
        self._store_revision = revision
        with self.hold_sync():
            self._reload_annotations()

    def compute(self, view: str, layer: str | None = None, unit: int | None = None) -> bool:
        """Start a view's computation for a unit, as its button does; False if it is already running."""
        layer, unit = layer or self.layer, self.unit if unit is None else unit
        return self._start_compute(view, layer, int(unit))

    def wait_for_computations(self, timeout: float | None = None) -> None:
        """Block until every running computation has finished (for scripts and tests)."""
        self._runner.wait(timeout)

    def layer_payload(self, layer: str | None = None) -> dict:
        """What the browser holds of a layer (``layer_data[layer]``): arrays, thumbnails, names."""
        return self.layer_data[_data.check_layer(self._idx, layer or self.layer)]

    def unit_payload(self, layer: str | None = None, unit: int | None = None, **options) -> dict:
        """The card views' payloads of a unit, ``{view key: payload}`` (what the card asks for);
        ``options`` override the card's ``n_crops``, ``crop_px`` and ``nf_px``."""
        layer, unit = self._target(layer, unit, need_store=False)
        options = {"n_crops": self._options.n_crops, "crop_px": self._options.crop_px,
                   "nf_px": self._options.nf_px, **options}
        return {inst.key: _views.instance_payload(self._idx, inst, layer, unit, options)
                for inst in self._instances if inst.view.payload is not None}

    def close(self) -> None:
        runner = getattr(self, "_runner", None)  # absent when __init__ failed early
        if runner is not None:
            runner.shutdown()
        super().close()

    # -- state rules (js/src/store.js applies the same ones) ---------------------------------------
    def _columns(self, layer: str) -> tuple[dict, np.ndarray]:
        with self._lock:
            if layer not in self._columns_cache:
                categorical = list(_views.category_columns(self._idx, layer))
                self._columns_cache[layer] = (_data.layer_columns(self._idx, layer, categorical),
                                              np.asarray(self._idx[layer].dead, dtype=bool))
            return self._columns_cache[layer]

    def _order_for(self, state: dict, tables: dict) -> list[int]:
        columns, dead = self._columns(state["layer"])
        texts = {int(u): _data.annotation_text(a) for u, a in tables.get(state["layer"], {}).items()}
        order = _data.display_order(columns, dead, state["sort_by"], state["descending"], state["filters"],
                                    state["show_units"], state["search"], texts, state["unlabelled_only"])
        return [int(u) for u in order]

    def _reconcile(self, keys: set[str]) -> None:
        with self._lock:
            new = {name: getattr(self, name) for name in STATE_TRAITS}
            names = list(self._columns(new["layer"])[0])
            if "layer" in keys:
                if new["sort_by"] not in _data.sort_keys(names):
                    new["sort_by"], new["descending"] = _data.SORT_UNIT, False
                new["filters"] = {k: v for k, v in new["filters"].items() if k in names}
                if "selection" not in keys:
                    new["selection"] = []
                if "unit" not in keys:
                    new["unit"] = None
            if "author" in keys and self._store is not None:
                with self.hold_sync():
                    self.authors = self._authors(new["author"])
                    self.annotations = self._tables(new["author"])
            order = self._order_for(new, self.annotations)
            shown = set(order)
            new["selection"] = [u for u in new["selection"] if u in shown]
            if new["unit"] is None or new["unit"] not in shown:
                new["unit"] = order[0] if self._FOLLOW_FIRST and order else None
            with self._quiet(), self.hold_sync():
                for name, value in new.items():
                    if getattr(self, name) != value:
                        setattr(self, name, value)
                self.set_trait("order", order)

    @contextmanager
    def _quiet(self):
        self._settling += 1
        try:
            yield
        finally:
            self._settling -= 1

    def set_state(self, sync_data):
        """Apply a state update from the browser, then the linking rules once for all of it."""
        keys = set(sync_data) & set(STATE_TRAITS)
        with self._quiet():
            super().set_state(sync_data)
        if keys:
            self._reconcile(keys)

    def notify_change(self, change):
        # a state trait set in Python travels with what follows from it, as one consistent update
        if change["name"] in STATE_TRAITS and not self._settling and getattr(self, "comm", None) is not None:
            with self.hold_sync():
                super().notify_change(change)
        else:
            super().notify_change(change)

    @t.observe(*STATE_TRAITS)
    def _on_state(self, change):
        if self._settling:
            return
        self._reconcile({change["name"]})

    def _hidden_error(self, layer: str, unit: int) -> _data.WidgetArgumentError:
        return _data.WidgetArgumentError(
            f"unit {unit} of layer {layer!r} is not listed: the filters, the search or 'unlabelled only' "
            f"hide it; clear them (clear_filters()) or choose one of .order")

    @t.validate("layer")
    def _check_layer(self, proposal):
        return _data.check_layer(self._idx, proposal["value"])

    @t.validate("unit")
    def _check_unit(self, proposal):
        unit = proposal["value"]
        if unit is None:
            return None
        unit = _data.check_unit(self._idx[self.layer].n_units, unit, self.layer)
        if not self._settling and unit not in set(self.order):
            raise self._hidden_error(self.layer, unit)
        return unit

    @t.validate("selection")
    def _check_selection(self, proposal):
        seen: dict[int, None] = {}
        n = self._idx[self.layer].n_units
        for unit in proposal["value"]:
            seen[_data.check_unit(n, unit, self.layer)] = None
        return list(seen)

    @t.validate("sort_by")
    def _check_sort(self, proposal):
        value = proposal["value"]
        if value not in self.sort_keys:
            raise _data.choice_error("sort key", value, self.sort_keys)
        return value

    @t.validate("show_units")
    def _check_show(self, proposal):
        if proposal["value"] not in _data.SHOW_CHOICES:
            raise _data.choice_error("show option", proposal["value"], _data.SHOW_CHOICES)
        return proposal["value"]

    @t.validate("filters")
    def _check_filters(self, proposal):
        return _data.normalize_filters(proposal["value"], self.score_names)

    @t.validate("author")
    def _check_author(self, proposal):
        if self._store is None:
            return proposal["value"]
        return check_author(proposal["value"])

    # -- data for the front end ----------------------------------------------------------------------
    def _info(self, title: str | None) -> dict:
        idx = self._idx
        meta = {k: v for k, v in (idx.meta or {}).items() if isinstance(v, (str, int, float, bool))}
        return {"layers": list(idx.layers), "title": title or f"Neuron explorer: {meta.get('model_name', 'model')}",
                "meta": meta, "class_names": _data.index_class_names(idx),
                "class_parents": dict(idx.class_parents or {}),
                "histogram_score": self._options.histogram_score, "class_score": self._options.class_score,
                "top_k": int(self._options.top_k), "bins": int(self._options.bins),
                "follow_first": bool(self._FOLLOW_FIRST)}

    def _view_instances(self) -> list:
        return [i for i in _views.view_instances(self._idx, self._handlers) if i.view.name not in self._hide]

    def _all_layer_data(self) -> dict:
        return {name: self._layer_payload(name) for name in self._idx.layers}

    def _layer_payload(self, layer: str) -> dict:
        views = {}
        for instance in self._instances:
            payload = _views.instance_layer_payload(self._idx, instance, layer)
            if payload is not None:
                views[instance.key] = payload
        return _data.layer_payload(self._idx, layer, self._options.thumb_size,
                                   categories=_views.category_columns(self._idx, layer), views=views)

    def _tables(self, author: str) -> dict:
        if self._editor is None:
            return {name: {} for name in self._idx.layers}
        return self._editor.tables(self._idx.layers, author)

    def _authors(self, author: str) -> list[str]:
        return self._editor.authors(author) if self._editor is not None else []

    def _agreement_tables(self) -> dict:
        if self._store is None or not callable(getattr(self._store, "agreement", None)):
            return {}
        return {name: agreement_payload(self._store, name) for name in self._idx.layers}

    def _reload_annotations(self) -> None:
        self.annotations = self._tables(self.author)
        self.authors = self._authors(self.author)
        self.agreement = self._agreement_tables()
        self._reconcile(set())

    # -- messages from the browser ---------------------------------------------------------------------
    def _reply(self, request_id, content: dict) -> None:
        body, buffers = _wire.pack(content)
        if request_id is not None:
            body["reply_to"] = request_id
        self.send(body, buffers)

    def _on_message(self, _widget, content, _buffers) -> None:
        if not isinstance(content, dict):
            return
        kind, request_id = content.get("type"), content.get("request_id")
        handler = {"unit": self._msg_unit, "annotate": self._msg_write, "undo": self._msg_write,
                   "redo": self._msg_write, "state": self._msg_state, "ping": self._msg_ping,
                   "refresh": self._msg_refresh, "compute": self._msg_compute}.get(kind)
        if handler is None:
            return
        try:
            handler(content, request_id)
        except Exception as exc:  # told to the view that asked, instead of lost in a log
            self._reply(request_id, {"type": "error", "request": kind, "layer": content.get("layer"),
                                     "unit": content.get("unit"), "message": f"{type(exc).__name__}: {exc}"})

    def _msg_unit(self, content, request_id) -> None:
        layer = _data.check_layer(self._idx, content.get("layer"))
        for unit in list(content.get("units") or [])[:64]:
            unit = _data.check_unit(self._idx[layer].n_units, unit, layer)
            self._reply(request_id, {"type": "unit", "layer": layer, "unit": unit,
                                     "views": self.unit_payload(layer, unit)})

    def _target(self, layer, unit, need_store: bool = True) -> tuple[str, int]:
        if need_store and self._editor is None:
            raise _data.WidgetArgumentError(
                "this widget has no annotation store: create it with annotations=AnnotationStore(path)")
        layer = self.layer if layer is None else _data.check_layer(self._idx, layer)
        unit = self.unit if unit is None else unit
        if unit is None:
            raise _data.WidgetArgumentError("no unit is shown: pass unit=...")
        return layer, _data.check_unit(self._idx[layer].n_units, unit, layer)

    def _msg_write(self, content, request_id) -> None:
        layer, unit = self._target(content.get("layer"), content.get("unit"))
        author = check_author(content.get("author") or self.author)
        kind = content["type"]
        if kind == "annotate":
            tags = [str(x) for x in content.get("tags", []) or []]
            self._editor.annotate(layer, unit, str(content.get("label", "")), str(content.get("note", "")),
                                  tags, author)
        elif kind == "undo":
            self._editor.undo(layer, unit, author)
        else:
            self._editor.redo(layer, unit, author)
        state = self._after_write(layer, unit, author)
        self._reply(request_id, {"type": "saved", "action": kind, **state})

    def _after_write(self, layer: str, unit: int, author: str) -> dict:
        with self.hold_sync():
            self._store_revision = _data.store_revision(self._store)
            self._reload_annotations()
        state = self._editor.state(layer, unit, author)
        for callback in list(self._annotate_callbacks):
            callback(layer, unit, dict(state["annotation"] or {}))
        return state

    def _msg_state(self, content, request_id) -> None:
        layer, unit = self._target(content.get("layer"), content.get("unit"))
        author = check_author(content.get("author") or self.author)
        self._reply(request_id, {"type": "state", **self._editor.state(layer, unit, author)})

    def _msg_ping(self, content, request_id) -> None:
        self._reply(request_id, {"type": "pong"})

    def _msg_refresh(self, content, request_id) -> None:
        self.refresh_annotations()

    # -- on-demand computations ------------------------------------------------------------------------
    def _msg_compute(self, content, request_id) -> None:
        layer, unit = self._target(content.get("layer"), content.get("unit"), need_store=False)
        if not self._start_compute(str(content.get("view")), layer, unit):
            self._reply(request_id, {"type": "progress", "view": content.get("view"), "layer": layer, "unit": unit,
                                     "state": "running", "fraction": None, "text": "already running"})

    def _start_compute(self, key: str, layer: str, unit: int) -> bool:
        instance = next((i for i in self._instances if i.key == key), None)
        if instance is None or instance.view.name not in self._handlers:
            computable = [i.key for i in self._instances if i.computable]
            raise _data.choice_error("computable view", key, computable)
        name = instance.attachment or instance.view.name
        request = ComputeRequest(self._idx, layer, unit, instance.view.name, name,
                                 (getattr(self._idx, "attachments", None) or {}).get(name))
        return self._runner.submit((key, layer, unit), self._handlers[instance.view.name], request)

    def _on_compute_progress(self, message: dict) -> None:
        self._reply(None, {"type": "progress", **message})

    def _on_compute_done(self, request: ComputeRequest, result) -> None:
        from ..index.results import Attachment

        if not isinstance(result, Attachment):
            raise TypeError(f"the compute handler of {request.view!r} returned {type(result).__name__}, "
                            f"not an Attachment")
        with self._lock:
            previous = (getattr(self._idx, "attachments", None) or {}).get(request.attachment_name)
            self._idx.attach(request.attachment_name, result)
            if self._autosave is not None:
                self._idx.save(self._autosave)
            self._instances = self._view_instances()
            # the unit's layer, and layers the result brings anew (a handler computes for one layer)
            before = set(previous.arrays) if previous is not None else set()
            touched = [layer for layer in self._idx.layers
                       if layer in result.arrays and (layer == request.layer or layer not in before)]
            for layer in touched:
                self._columns_cache.pop(layer, None)
            with self.hold_sync():
                self.card_views = [i.spec() for i in self._instances]
                if touched:
                    data = dict(self.layer_data)
                    for layer in touched:
                        data[layer] = self._layer_payload(layer)
                    self.layer_data = data
        key = next((i.key for i in self._instances if (i.attachment or i.view.name) == request.attachment_name
                    and i.view.name == request.view), request.view)
        self._reply(None, {"type": "unit", "layer": request.layer, "unit": request.unit,
                           "views": self.unit_payload(request.layer, request.unit)})
        self._reply(None, {"type": "progress", "view": key, "layer": request.layer, "unit": request.unit,
                           "fraction": 1.0, "text": "done", "state": "done"})

    # -- the exported page -----------------------------------------------------------------------------
    def page_document(self, units: bool = True, **options) -> dict:
        """Everything the exported page mounts: the traits and, per unit, the card views' payloads
        (``options`` as in :meth:`unit_payload`)."""
        state = {name: getattr(self, name) for name in DATA_TRAITS + STATE_TRAITS}
        state["editable"] = False
        state["readonly_note"] = "exported page: annotations are read-only here"
        table = {}
        if units:
            for layer in self._idx.layers:
                table[layer] = {str(u): self.unit_payload(layer, u, **options)
                                for u in range(self._idx[layer].n_units)}
        return {"version": 2, "kind": "explorer", "state": state, "units": table}
