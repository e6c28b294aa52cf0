"""Explorer: one linked front end over an index (histograms, grid, card, agreement)."""
from __future__ import annotations

from pathlib import Path

from ._linked import DisplayOptions, LinkedWidget


class Explorer(LinkedWidget):
    """Every view of one index, linked in the browser: no view change waits for the kernel.

    * the toolbar's layer control, sort, filters, search and "unlabelled only" drive the grid;
    * the colour histogram shows every layer: dragging across it (or clicking a bar) filters the
      grid by that index, a bar of another layer switches to that layer, a double-click or the
      filter chip's x clears it; the class histogram does the same for the layer shown; both mark
      the unit shown;
    * the card shows the unit chosen in the grid and steps through the grid's order; its views
      (Neuron Feature, classes, top images, other methods' results: Network Dissection's
      concepts and picture, synthesised images and facets, projections, concept weights) come from
      a registry (:mod:`nsi_widgets.widgets.views`); a dissection's best concept is offered as a
      suggested label;
    * with a store, the card's editor is keyboard-first: ``L`` (or Enter in the grid) types a
      label, Enter saves and moves to the next unit, Page Down / Page Up (or Alt+Down / Alt+Up) move
      without saving, Esc leaves the box; undo, redo, history and the author are in the card, and
      the agreement tab compares authors.

    The state lives in the browser and is mirrored in traits that notebooks read and set:
    :attr:`layer`, :attr:`unit`, :attr:`selection`, :attr:`sort_by`, :attr:`descending`,
    :attr:`filters`, :attr:`show_units` (``"all"``, ``"alive"``, ``"dead"``), :attr:`search`, :attr:`unlabelled_only`, :attr:`author`, and
    read-only :attr:`order` (unit ids in display order).

    Parameters
    ----------
    idx : NeuronIndex
    annotations : AnnotationStore or path, optional
        Labels shown in the grid and searched; the card's editor writes here.
    layer : str, optional
        First layer shown.
    unit : int, optional
        First unit shown (default: the first in display order).
    sort_by : str
        Initial sort key (any column of the layer, or ``"unit"``).
    descending : bool
        Largest first.
    histogram_score : str
        Index of the all-layers histogram (left out when no layer has it).
    class_score : str
        Index of the layer histogram.
    grid_height : int
        Largest height of the grid in pixels.
    filters, show, search, unlabelled_only, author
        Initial values of the traits of the same names (``show`` sets :attr:`show_units`).
    compute : dict, optional
        ``{view name: handler}``: on-demand computations behind card views' buttons
        (see :func:`nsi_widgets.widgets.views.register_compute`);
        ``nsi.default_compute(model, data, concept_data=...)`` gives those of every view of the
        other methods (synthesised images and facets, projections, Network Dissection's pictures).
    autosave : path, optional
        Save the index there after each computation (its results live in ``idx.attachments``).
    title : str, optional
        Title of the exported page.
    thumb_size, cell_size : int
        Grid thumbnail pixels as sent, and as shown.

    Examples
    --------
    >>> ex = Explorer(idx, annotations=store, layer="conv3")          # doctest: +SKIP
    >>> ex.sort_by = "class_selectivity"; ex.order[:5]               # doctest: +SKIP
    >>> ex.observe(lambda change: print(change["new"]), "unit")      # doctest: +SKIP
    """

    _VIEWS = ("toolbar", "charts", "grid", "card", "agreement")

    def __init__(self, idx, annotations=None, *, layer: str | None = None, unit: int | None = None,
                 sort_by: str = "color_selectivity", descending: bool = True,
                 histogram_score: str = "color_selectivity", class_score: str = "class_selectivity",
                 grid_height: int = 460, filters: dict | None = None, show: str = "all", search: str = "",
                 unlabelled_only: bool = False, author: str | None = None, compute: dict | None = None,
                 autosave: str | Path | None = None, title: str | None = None, thumb_size: int = 32,
                 cell_size: int = 64):
        options = DisplayOptions(thumb_size=int(thumb_size), cell_size=int(cell_size), grid_height=int(grid_height),
                                 histogram_score=histogram_score, class_score=class_score)
        super().__init__(idx, annotations, layer=layer, unit=unit, sort_by=sort_by, descending=descending,
                         filters=filters, show=show, search=search, unlabelled_only=unlabelled_only,
                         author=author, options=options, compute=compute, autosave=autosave, title=title)

    def __repr__(self) -> str:
        return (f"Explorer(layer={self.layer!r}, unit={self.unit}, shown={len(self.order)}, "
                f"sort_by={self.sort_by!r}, filters={self.filters}, selection={self.selection})")
