"""Charts of layer similarity and concept vectors (plotly), for notebooks.

They read results only (:class:`~nsi_widgets.concepts.LayerSimilarity`,
:class:`~nsi_widgets.concepts.ConceptVectorSet`); nothing here runs a model.

* :func:`similarity_heatmap`: the matrix, layers of model A down, of model B across, optionally placed
  at their relative depths (docs/methods.md section 8).
* :func:`concept_agreement_chart`: the per-concept agreement of one pair of layers, the concepts that
  count in the mean in colour.
* :class:`SimilarityExplorer`: the heatmap as a ``FigureWidget``; clicking a cell shows that pair's
  per-concept agreement below it.
* :func:`concept_quality_chart`: each concept's quality (Net2Vec IoU, TCAV accuracy) through the
  relative depth of every model given: where each concept emerges.
"""
from __future__ import annotations

from typing import Mapping

import ipywidgets as W
import numpy as np

from ..concepts.similarity_results import LayerSimilarity, relative_depth
from ._data import WidgetArgumentError

_NAMES = {"cka": "CKA", "net2vec": "Net2Vec map IoU", "tcav": "TCAV score correlation"}
_QUALITY = {"net2vec": "held-out IoU", "tcav": "held-out accuracy"}


def _check(similarity) -> LayerSimilarity:
    if not isinstance(similarity, LayerSimilarity):
        raise WidgetArgumentError(f"expected a LayerSimilarity (nsi.layer_similarity(...)), got "
                                  f"{type(similarity).__name__}")
    return similarity


def similarity_heatmap(similarity: LayerSimilarity, *, relative_depth: bool = False, title: str | None = None,
                       labels: tuple[str, str] = ("model A", "model B"), height: int = 420):
    """The similarity matrix as a plotly heatmap.

    Parameters
    ----------
    similarity : LayerSimilarity
    relative_depth : bool
        Place each layer at its relative depth ``(i + 1) / n`` (hover shows its name) instead of one
        column per layer: layers of two models of different depth then line up where the paper's
        finding ("similar concepts at similar relative depth") says they should, along the diagonal.
    title : str, optional
    labels : (str, str)
        Names of the two models, for the axes.
    height : int

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    s = _check(similarity)
    rows, cols = (s.depth_a, s.depth_b) if relative_depth else (s.layers_a, s.layers_b)
    text = [[f"{a} x {b}: {s.matrix[i, j]:.3f}" for j, b in enumerate(s.layers_b)] for i, a in enumerate(s.layers_a)]
    high = 1.0
    low = 0.0 if s.method != "tcav" else min(0.0, float(np.nanmin(s.matrix))) if np.isfinite(s.matrix).any() else 0.0
    heat = go.Heatmap(z=s.matrix, x=list(cols), y=list(rows), text=text, hoverinfo="text", zmin=low, zmax=high,
                      colorscale="Viridis", colorbar={"title": _NAMES[s.method]})
    name_b = labels[0] if s.same_model else labels[1]
    figure = go.Figure(heat)
    axis = {"title": "relative depth", "range": [0, 1.05]} if relative_depth else {"type": "category"}
    figure.update_layout(title=title or f"{_NAMES[s.method]} between layers", height=height,
                         margin={"l": 70, "r": 20, "t": 50, "b": 60},
                         xaxis={**axis, "title": f"{name_b}: {axis.get('title', 'layer')}"},
                         yaxis={**axis, "title": f"{labels[0]}: {axis.get('title', 'layer')}", "autorange": "reversed"
                                if not relative_depth else None})
    if relative_depth:
        figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "white"},
                                    hoverinfo="skip", showlegend=False))
    return figure


def concept_agreement_chart(similarity: LayerSimilarity, layer_a, layer_b, *, height: int = 300):
    """Bars of the per-concept agreement of ``layer_a`` (model A) with ``layer_b`` (model B).

    Concepts whose vectors reach the quality floor in both layers (those averaged into the matrix)
    are coloured; the others are grey. Hover shows both qualities.
    """
    import plotly.graph_objects as go

    table = _check(similarity).concept_agreement(layer_a, layer_b)
    colours = np.where(table["counted"], "#0072B2", "#BBBBBB")
    hover = [f"{c} ({g}): {v:.3f}<br>quality A {qa:.3f}, B {qb:.3f}" for c, g, v, qa, qb in
             zip(table["concept"], table["category"], table["agreement"], table["quality_a"], table["quality_b"])]
    figure = go.Figure(go.Bar(x=list(table["concept"]), y=np.nan_to_num(table["agreement"].to_numpy()),
                              marker_color=list(colours), hovertext=hover, hoverinfo="text"))
    figure.update_layout(title=f"{_NAMES[similarity.method]} per concept: {layer_a} x {layer_b}", height=height,
                         yaxis={"title": "agreement"}, margin={"l": 60, "r": 20, "t": 50, "b": 100})
    return figure


class SimilarityExplorer(W.VBox):
    """The heatmap (a plotly ``FigureWidget``); clicking a cell shows that pair's per-concept agreement.

    Parameters
    ----------
    similarity : LayerSimilarity
    relative_depth : bool
    labels : (str, str)
        As for :func:`similarity_heatmap`.

    Attributes
    ----------
    heatmap, bars : plotly.graph_objects.FigureWidget
    selected : tuple (layer_a, layer_b) or None
        The pair shown below (set it with :meth:`select`).
    """

    def __init__(self, similarity: LayerSimilarity, *, relative_depth: bool = False,
                 labels: tuple[str, str] = ("model A", "model B")):
        import plotly.graph_objects as go

        self.similarity = _check(similarity)
        self._relative = bool(relative_depth)
        self.heatmap = go.FigureWidget(similarity_heatmap(similarity, relative_depth=relative_depth, labels=labels))
        self.heatmap.data[0].on_click(self._on_click)
        self.bars = go.FigureWidget(layout={"height": 300, "margin": {"l": 60, "r": 20, "t": 50, "b": 100}})
        self.selected = None
        self._note = W.Label("click a cell to see its concepts" if similarity.per_concept is not None else
                             f"{_NAMES[similarity.method]} has no concepts to break a cell into")
        super().__init__([self.heatmap, self._note, self.bars])

    def _on_click(self, trace, points, _state) -> None:
        if not points.xs or not points.ys:
            return
        i, j = self._index(points.ys[0], "a"), self._index(points.xs[0], "b")
        self.select(self.similarity.layers_a[i], self.similarity.layers_b[j])

    def _index(self, value, axis: str) -> int:
        names = self.similarity.layers_a if axis == "a" else self.similarity.layers_b
        if value in names:
            return names.index(value)
        depths = relative_depth(len(names))
        return int(np.argmin(np.abs(depths - float(value))))

    def select(self, layer_a, layer_b) -> None:
        """Show the per-concept agreement of ``layer_a`` x ``layer_b`` (what a click does)."""
        s = self.similarity
        value = s.matrix[s.layers_a.index(layer_a), s.layers_b.index(layer_b)]
        self.selected = (layer_a, layer_b)
        self._note.value = f"{layer_a} x {layer_b}: {value:.3f}"   # a Label: names shown as text
        if s.per_concept is None:
            return
        chart = concept_agreement_chart(s, layer_a, layer_b)
        with self.bars.batch_update():
            self.bars.data = []
            self.bars.add_traces(chart.data)
            self.bars.layout.title = chart.layout.title
            self.bars.layout.yaxis.title = "agreement"


def concept_quality_chart(models: Mapping[str, object], *, by: str = "concept",
                          labels: tuple[str, str] = ("model A", "model B"), height: int = 360):
    """Each concept's quality through relative depth, one panel per model.

    Parameters
    ----------
    models : dict of str to ConceptVectorSet, or a LayerSimilarity
        Per model name its concept vectors of several layers (in depth order). A
        :class:`LayerSimilarity` of a concept method gives its two axes (``quality_a``, ``quality_b``).
    by : {"concept", "category"}
        One line per concept, or per category (its concepts' mean quality).
    labels : (str, str)
        Panel titles of a :class:`LayerSimilarity`'s two models.
    height : int

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = _quality_panels(models, labels)
    if by not in ("concept", "category"):
        raise WidgetArgumentError(f"by must be 'concept' or 'category', not {by!r}")
    figure = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, subplot_titles=[p[0] for p in panels])
    palette = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#F0E442")
    for c, (name, layers, quality, concepts, categories, method) in enumerate(panels, start=1):
        depth = relative_depth(len(layers))
        groups = ([(k, [k]) for k in range(len(concepts))] if by == "concept" else
                  [(g, [k for k, cat in enumerate(categories) if cat == g]) for g in dict.fromkeys(categories)])
        for n, (label, members) in enumerate(groups):
            title = concepts[label] if by == "concept" else label
            values = np.nanmean(quality[:, members], axis=1) if len(members) else np.full(len(layers), np.nan)
            figure.add_trace(go.Scatter(x=depth, y=values, mode="lines+markers", name=title, legendgroup=title,
                                        showlegend=c == 1, line={"color": palette[n % len(palette)]},
                                        text=layers, hovertemplate=f"{title}<br>%{{text}} (depth %{{x:.2f}}): "
                                                                   "%{y:.3f}<extra></extra>"), row=1, col=c)
        figure.update_xaxes(title_text="relative depth", range=[0, 1.05], row=1, col=c)
    figure.update_yaxes(title_text=_QUALITY.get(panels[0][5], "quality"), row=1, col=1)
    figure.update_layout(height=height, title="Concept quality through depth", margin={"l": 60, "r": 20, "t": 70,
                                                                                          "b": 50})
    return figure


def _quality_panels(models, labels) -> list[tuple]:
    if isinstance(models, LayerSimilarity):
        s = models
        if s.per_concept is None:
            raise WidgetArgumentError("a CKA similarity has no concept qualities; use 'net2vec' or 'tcav'")
        panels = [(labels[0], s.layers_a, s.quality_a, s.concepts, s.categories, s.method)]
        if not s.same_model:
            panels.append((labels[1], s.layers_b, s.quality_b, s.concepts, s.categories, s.method))
        return panels
    if not isinstance(models, Mapping) or not models:
        raise WidgetArgumentError("models must be a dict of model name -> ConceptVectorSet, or a LayerSimilarity")
    panels = []
    for name, cvs in models.items():
        if not hasattr(cvs, "quality") or not hasattr(cvs, "layers"):
            raise WidgetArgumentError(f"models[{name!r}] is a {type(cvs).__name__}, not a ConceptVectorSet "
                                      "(nsi.concept_vectors(model, data, [layers...]))")
        first = cvs[cvs.layers[0]]
        panels.append((str(name), cvs.layers, cvs.quality(), first.concepts, first.categories, first.method))
    return panels
