"""The neuron card's views: a registry of named sections and tabs, each drawn from a per-unit payload.

Every method that has something to say about one neuron shows it in the Explorer's card. A view
is registered twice, once on each side, under the same renderer name:

* in Python (here), a :class:`CardView`: a title, where it goes (a ``"card"`` section or its own
  ``"tab"``), and ``payload(source, layer, unit) -> dict``, the JSON-able data of one unit
  (``bytes`` for PNG images, NumPy arrays for numbers: both travel as binary). ``source`` is the
  :class:`~nsi_widgets.index.results.NeuronIndex` for ``kind=None``, otherwise one
  :class:`~nsi_widgets.index.results.Attachment` of that ``kind`` (one view per such attachment);
* in JavaScript, ``registerCardView(renderer, {render(ctx)})`` in ``js/src/cardviews.js``, which
  draws ``ctx.payload`` into ``ctx.el``.

A view may offer an on-demand computation (``compute_label``): its button sends (view, layer,
unit) to the kernel, which runs the handler registered with :func:`register_compute` (or given
as ``Explorer(..., compute={view: handler})``) in a background thread and attaches the result to
the index, so the exported page shows it too. docs/widgets.md walks through an example.

The card's own sections (``summary``, ``classes``, ``top_images``) are registered here the same way.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import _data

PLACEMENTS = ("card", "tab")

#: options of the built-in views (NeuronCard's n_crops, crop_px, nf_px)
CORE_OPTIONS = {"n_crops": 8, "crop_px": 64, "nf_px": 192}


@dataclass(frozen=True)
class CardView:
    """A view of one neuron shown in the card (a section) or beside it (a tab).

    Parameters
    ----------
    name : str
        Unique name; also the JavaScript renderer's name unless ``renderer`` is given.
    title : str
        Shown as the section heading or the tab's name.
    payload : callable or None
        ``payload(source, layer, unit) -> dict`` of JSON-able values, ``bytes`` (PNG images) and
        NumPy arrays; None when the browser draws the view from the layer data it already holds.
        Keyword arguments it declares among ``n_crops``, ``crop_px``, ``nf_px`` (the card's sizes)
        and ``index`` (the :class:`~nsi_widgets.index.results.NeuronIndex`) are passed to it.
    kind : str or None
        The :class:`~nsi_widgets.index.results.Attachment` kind it shows (``source`` is then
        that attachment); None: the index itself.
    renderer : str or None
        The JavaScript view that draws it (``registerCardView`` name); default ``name``. The
        generic ``"panel"`` renderer draws ``{"text", "images": [{"png", "caption"}], "rows":
        [[key, value], ...]}``.
    placement : {"card", "tab"}
        A section of the neuron card, or its own tab beside the card.
    compute_label : str or None
        Text of a button that runs this view's compute handler for the unit shown.
    order : int
        Position among the views (smaller first).
    layer_payload : callable or None
        ``layer_payload(source, layer) -> dict``: data of the whole layer (e.g. a table over all units),
        sent once per layer with the layer's data (``ctx.layerPayload`` in JavaScript) instead of
        once per unit.
    """

    name: str
    title: str
    payload: Callable[[Any, str, int], dict] | None = None
    kind: str | None = None
    renderer: str | None = None
    placement: str = "tab"
    compute_label: str | None = None
    order: int = 100
    layer_payload: Callable[[Any, str], dict] | None = None

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str) or ":" in self.name:
            raise _data.WidgetArgumentError(f"a card view needs a name without ':', got {self.name!r}")
        if self.placement not in PLACEMENTS:
            raise _data.choice_error("placement", self.placement, PLACEMENTS)
        for what in ("payload", "layer_payload"):
            if getattr(self, what) is not None and not callable(getattr(self, what)):
                raise _data.WidgetArgumentError(f"{what} of card view {self.name!r} must be callable")


@dataclass(frozen=True)
class ViewInstance:
    """One view as shown for one index: a registered view and, for attachment views, which attachment."""

    key: str
    view: CardView
    attachment: str | None = None
    computable: bool = False

    def spec(self) -> dict:
        """What the front end needs to lay the view out (``card_views`` trait)."""
        title = self.view.title
        if self.attachment is not None and self.attachment != self.view.name:
            title = f"{title} · {self.attachment}"
        return {"key": self.key, "name": self.view.name, "renderer": self.view.renderer or self.view.name,
                "title": title, "placement": self.view.placement, "has_payload": self.view.payload is not None,
                "has_layer_payload": self.view.layer_payload is not None, "attachment": self.attachment,
                "compute": self.view.compute_label if self.computable else None}


_VIEWS: dict[str, CardView] = {}
_COMPUTE: dict[str, Callable] = {}


def register_card_view(view: CardView, *, replace: bool = False) -> CardView:
    """Add a view to every Explorer and NeuronCard created afterwards.

    Raises
    ------
    WidgetArgumentError
        A view of that name exists and ``replace`` is False.
    """
    if not isinstance(view, CardView):
        raise _data.WidgetArgumentError(f"register_card_view takes a CardView, got {type(view).__name__}")
    if view.name in _VIEWS and not replace:
        raise _data.WidgetArgumentError(f"a card view named {view.name!r} is registered; pass replace=True")
    _VIEWS[view.name] = view
    return view


def unregister_card_view(name: str) -> None:
    """Remove a registered view (and its compute handler)."""
    _VIEWS.pop(name, None)
    _COMPUTE.pop(name, None)


def registered_card_views() -> list[CardView]:
    """The registered views, in display order."""
    return sorted(_VIEWS.values(), key=lambda v: (v.order, v.name))


def register_compute(view: str, handler: Callable, *, replace: bool = False) -> None:
    """Register the on-demand computation behind a view's button (see :mod:`._compute`).

    ``handler(request) -> Attachment`` gets a :class:`~nsi_widgets.widgets._compute.ComputeRequest`
    (index, layer, unit, the current attachment or None, and ``request.progress(fraction, text)``)
    and returns the attachment to store under the view's attachment name.
    """
    if not callable(handler):
        raise _data.WidgetArgumentError(f"the compute handler of {view!r} must be callable")
    if view in _COMPUTE and not replace:
        raise _data.WidgetArgumentError(f"view {view!r} has a compute handler; pass replace=True")
    _COMPUTE[view] = handler


def compute_handlers(extra: dict | None = None) -> dict[str, Callable]:
    """The registered compute handlers, overridden by ``extra`` (an Explorer's ``compute=``)."""
    handlers = dict(_COMPUTE)
    for name, handler in (extra or {}).items():
        if not callable(handler):
            raise _data.WidgetArgumentError(f"compute[{name!r}] must be callable, got {type(handler).__name__}")
        handlers[str(name)] = handler
    return handlers


def view_instances(idx, handlers: dict[str, Callable] | None = None,
                   only: list[str] | None = None) -> list[ViewInstance]:
    """The views of ``idx``: every index view, one per attachment of each attachment kind, and
    a computable view without its attachment yet (its button makes it)."""
    handlers = handlers or {}
    attachments = getattr(idx, "attachments", None) or {}
    out: list[ViewInstance] = []
    for view in registered_card_views():
        if only is not None and view.name not in only:
            continue
        computable = view.name in handlers
        if view.kind is None:
            out.append(ViewInstance(view.name, view, None, computable))
            continue
        names = [name for name, a in attachments.items() if a.kind == view.kind]
        if not names and computable:
            names = [view.name]  # shown with its button; the result is attached under the view's name
        for name in names:
            key = view.name if name == view.name else f"{view.name}:{name}"
            out.append(ViewInstance(key, view, name, computable))
    return out


def instance_payload(idx, instance: ViewInstance, layer: str, unit: int, options: dict | None = None) -> dict:
    """The payload of one view for one unit (``{"missing": True}`` while its attachment is absent)."""
    view = instance.view
    if view.payload is None:
        return {}
    source = _source(idx, instance)
    if source is None:
        return {"missing": True}
    accepted = inspect.signature(view.payload).parameters
    offered = {**(options or {}), "index": idx}   # an attachment view may read the index (e.g. its crops)
    kwargs = {k: v for k, v in offered.items() if k in accepted and k not in ("source", "layer", "unit")}
    return view.payload(source, layer, int(unit), **kwargs)


def _source(idx, instance: ViewInstance):
    if instance.view.kind is None:
        return idx
    return (getattr(idx, "attachments", None) or {}).get(instance.attachment)


def instance_layer_payload(idx, instance: ViewInstance, layer: str) -> dict | None:
    """The layer payload of one view (None when the view has none or its attachment is absent)."""
    source = _source(idx, instance) if instance.view.layer_payload is not None else None
    return None if source is None else instance.view.layer_payload(source, layer)


# ---------------------------------------------------------------------------------------------
# Per-unit columns that hold categories (e.g. a dissection's best concept): the grid shows names
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CategoryColumn:
    """A per-unit column of attachments of ``kind`` whose values are codes into a list of names.

    ``names(attachment) -> list of str`` gives the names of codes ``0 .. len - 1``; ``groups``, if
    given, a group name per code (e.g. the concept's category). A negative code means "none": the
    grid shows it as a missing value (it sorts last and no range filter keeps it).
    """

    kind: str
    column: str
    names: Callable[[Any], list]
    groups: Callable[[Any], list] | None = None


_CATEGORY_COLUMNS: dict[tuple[str, str], CategoryColumn] = {}


def register_category_column(column: CategoryColumn) -> CategoryColumn:
    """Declare a per-unit attachment column as categorical (see :class:`CategoryColumn`)."""
    if not isinstance(column, CategoryColumn):
        raise _data.WidgetArgumentError(f"register_category_column takes a CategoryColumn, got {type(column).__name__}")
    _CATEGORY_COLUMNS[(column.kind, column.column)] = column
    return column


def category_columns(idx, layer: str) -> dict[str, dict]:
    """``{"{attachment}.{column}": {"names": [...], "groups": [...]}}`` of the layer's categorical columns."""
    out = {}
    for name, attachment in (getattr(idx, "attachments", None) or {}).items():
        for column in attachment.columns.get(layer, []):
            spec = _CATEGORY_COLUMNS.get((attachment.kind, column))
            if spec is None:
                continue
            names = [str(n) for n in spec.names(attachment)]
            groups = [str(g) for g in spec.groups(attachment)] if spec.groups is not None else []
            out[f"{name}.{column}"] = {"names": names, "groups": groups if len(groups) == len(names) else []}
    return out


# ---------------------------------------------------------------------------------------------
# The card's own sections
# ---------------------------------------------------------------------------------------------
def summary_payload(idx, layer: str, unit: int, nf_px: int = CORE_OPTIONS["nf_px"]) -> dict:
    """The Neuron Feature as PNG (largest side at most ``nf_px``) and its size in pixels."""
    L = idx[layer]
    if L.neuron_features is None:
        return {"nf": b"", "nf_size": []}
    nf = np.asarray(L.neuron_features[unit])
    return {"nf": _data.fit_png(nf, nf_px), "nf_size": [int(nf.shape[0]), int(nf.shape[1])]}


def top_images_payload(idx, layer: str, unit: int, n_crops: int = CORE_OPTIONS["n_crops"],
                       crop_px: int = CORE_OPTIONS["crop_px"]) -> dict:
    """The first top crops as one horizontal PNG strip, their dataset indices and classes, and the
    grey-crop activations (float32 ``(N,)``, empty when not computed)."""
    L = idx[layer]
    k = 0
    if L.top_crops is not None and L.top_crops.ndim == 5:
        k = int(min(n_crops, L.top_crops.shape[1], L.top_n))
    out: dict[str, Any] = {"crops": b"", "crop_size": [], "n_crops": k}
    if k:
        out["crops"], size = _data.png_strip(np.asarray(L.top_crops[unit, :k]), crop_px)
        out["crop_size"] = list(size)
    shown = k if k else min(n_crops, L.top_n)  # without crops: ranks, activations and classes only
    names = _data.class_names_of(idx, L)
    out["images"] = [int(i) for i in L.top_indices[unit, :shown]]
    out["classes"] = [names[c] if 0 <= c < len(names) else "" for c in (int(x) for x in L.top_labels[unit, :shown])]
    gray = L.details.get("gray_activations") if L.details else None
    out["gray"] = (np.asarray(gray[unit], dtype=np.float32) if gray is not None
                   and np.shape(gray)[:1] == (L.n_units,) else np.zeros(0, np.float32))
    return out


CORE_VIEWS = (
    CardView("summary", "Neuron Feature", summary_payload, placement="card", order=0),
    CardView("classes", "classes", None, placement="card", order=10),
    CardView("top_images", "top images", top_images_payload, placement="card", order=20),
)
for _view in CORE_VIEWS:
    register_card_view(_view)


@dataclass
class Panel:
    """A payload for the generic ``"panel"`` renderer: text, captioned images and a key/value table.

    Examples
    --------
    >>> Panel(text="3 concepts", rows=[["best", "stripes"], ["IoU", 0.21]]).to_payload()["rows"]
    [['best', 'stripes'], ['IoU', 0.21]]
    """

    text: str = ""
    images: list[tuple[np.ndarray, str]] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)

    def to_payload(self, max_px: int = 160) -> dict:
        """``{"text", "images": [{"png", "caption", "size"}], "rows"}``; images RGB in [0, 1] or uint8."""
        images = []
        for image, caption in self.images:
            img = np.asarray(image)
            images.append({"png": _data.fit_png(img, max_px), "caption": str(caption),
                           "size": [int(img.shape[0]), int(img.shape[1])]})
        return {"text": str(self.text), "images": images, "rows": [list(r) for r in self.rows]}
