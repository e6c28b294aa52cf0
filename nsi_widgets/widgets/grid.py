"""NeuronGrid: the Explorer's grid alone (sortable, filterable, selectable thumbnails)."""
from __future__ import annotations

import numpy as np

from . import _data
from ._linked import DisplayOptions, LinkedWidget


class NeuronGrid(LinkedWidget):
    """Grid of one layer's Neuron Features with their indexes and annotation labels.

    The Explorer's front end showing only its toolbar and grid. Sort by any index (either
    direction) or by unit id; filter by index ranges, dead/alive, "unlabelled only" and text in
    the annotations; switch layers; select one unit (click), a range (shift-click, shift+arrows)
    or several (ctrl/cmd-click). The browser sorts and filters; Python applies the same rules and
    mirrors the display order in :attr:`order`.

    Parameters
    ----------
    idx : NeuronIndex
        The index to show.
    layer : str, optional
        Layer shown first (default: the first indexed layer).
    sort_by : str
        ``"unit"`` or any column of the layer (``idx[layer].scores``, ``"top_activation"``, attachment
        columns). The default ``"color_selectivity"`` falls back to ascending unit order when the
        index lacks it.
    descending : bool
        Largest first. Units with NaN (or dead units) come last in both directions.
    annotations : AnnotationStore or path, optional
        Store whose labels are shown under the thumbnails and searched by the search box.
    filters : dict, optional
        ``{column: (min, max)}`` inclusive ranges; ``None`` leaves an end open.
    show : {"all", "alive", "dead"}
        Which units to list.
    search : str
        Whitespace-separated terms that must all occur in a unit's annotation (case-insensitive).
    thumb_size : int
        Pixels per thumbnail side sent to the browser (32: at most ~3.1 KB per unit).
    cell_size : int
        Displayed thumbnail size in CSS pixels.
    height : int
        Height of the scrolling grid in CSS pixels.

    Attributes
    ----------
    show_units (alias ``show``) : str
        ``"all"``, ``"alive"`` or ``"dead"``.
    selection (alias ``selected``) : list of int
        Selected unit ids (observe it: ``grid.observe(callback, "selection")``).
    unit (alias ``active``) : int or None
        The unit under the keyboard cursor / last clicked.
    order : list of int
        Unit ids in display order after filters (read only).
    """

    _VIEWS = ("toolbar", "grid")
    _FOLLOW_FIRST = False

    def __init__(self, idx, layer: str | None = None, sort_by: str = "color_selectivity",
                 descending: bool = True, annotations=None, *, filters: dict | None = None,
                 show: str = "all", search: str = "", thumb_size: int = _data.DEFAULT_THUMB,
                 cell_size: int = 64, height: int = 420):
        options = DisplayOptions(thumb_size=int(thumb_size), cell_size=int(cell_size), grid_height=int(height))
        super().__init__(idx, annotations, layer=layer, sort_by=sort_by, descending=descending,
                         filters=filters, show=show, search=search, options=options)

    @property
    def show(self) -> str:
        """Alias of :attr:`show_units`: ``"all"``, ``"alive"`` or ``"dead"`` units listed."""
        return self.show_units

    @show.setter
    def show(self, value: str) -> None:
        self.show_units = value

    @property
    def selected(self) -> list[int]:
        """Alias of :attr:`selection`."""
        return list(self.selection)

    @selected.setter
    def selected(self, units) -> None:
        self.selection = list(units)

    @property
    def active(self) -> int | None:
        """Alias of :attr:`unit` (the keyboard cursor)."""
        return self.unit

    @active.setter
    def active(self, unit) -> None:
        self.unit = unit

    @property
    def n_units(self) -> int:
        """Units in the layer shown."""
        return int(self.layer_index.n_units)

    @property
    def thumbs(self) -> bytes:
        """The layer's PNG sprite sheet of thumbnails as sent."""
        return self.layer_payload()["thumbs"]

    @property
    def sprite_cols(self) -> int:
        """Thumbnails per row of :attr:`thumbs`."""
        return int(self.layer_payload()["sprite_cols"])

    @property
    def scores(self) -> np.ndarray:
        """float32 ``(len(score_names), n_units)``: the columns as sent."""
        a = self.layer_payload()["scores"]
        return np.frombuffer(a["data"], "<f4").reshape(a["shape"])

    @property
    def annotation_table(self) -> dict[str, dict]:
        """``{str(unit): annotation}`` of the layer shown."""
        return dict(self.annotations.get(self.layer, {}))

    def __repr__(self) -> str:
        return (f"NeuronGrid(layer={self.layer!r}, units={self.n_units}, shown={len(self.order)}, "
                f"sort_by={self.sort_by!r}, descending={self.descending}, selected={self.selection})")
