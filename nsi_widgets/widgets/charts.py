"""Charts: the colour-index histogram (plotly FigureWidget) and class-selectivity bars."""
from __future__ import annotations

import html
from typing import Any, Callable, Sequence

import ipywidgets as W
import numpy as np
import traitlets as t

from . import _data
from ._linked import DisplayOptions, LinkedWidget

#: qualitative colours for layers (colour-blind friendly, Okabe-Ito without black/yellow)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#F0E442")


def chart_payload(idx, layer: str, unit: int | None, top_k: int = 15, bins: int = 20) -> dict:
    """The ``data`` trait of a :class:`ClassSelectivityChart`."""
    L = idx[layer]
    if unit is None:
        return {"mode": "layer", "layer": layer,
                "hist": _data.layer_score_histogram(L, "class_selectivity", bins)}
    return {"mode": "unit", "layer": layer, "unit": int(unit),
            "bars": _data.class_bars(idx, layer, unit, top_k=top_k)}


class ClassSelectivityChart(LinkedWidget):
    """Class selectivity of one unit, or of a whole layer.

    With ``unit`` set: the activation-weighted class frequencies of the unit's top-N images
    (METHODS.md section 5), top classes first, grouped by parent class when the index has a
    hierarchy (``idx.class_parents``), above the layer's class-selectivity histogram with the unit
    marked. With ``unit=None``: the histogram alone. Its axis fits the data (the index often lives
    in [0.9, 1]). The Explorer's front end showing only this chart; :attr:`data` is what it draws.

    Parameters
    ----------
    idx : NeuronIndex
    layer : str, optional
        Default: the first indexed layer.
    unit : int or None
    top_k : int
        Classes shown for a unit.
    bins : int
        Histogram bins.
    """

    _VIEWS = ("class_chart",)
    _FOLLOW_FIRST = False

    def __init__(self, idx, layer: str | None = None, unit: int | None = None, *,
                 top_k: int = 15, bins: int = 20):
        options = DisplayOptions(top_k=int(top_k), bins=int(bins))
        super().__init__(idx, None, layer=layer, unit=unit, sort_by="unit", descending=False, options=options)

    @property
    def data(self) -> dict:
        """What the chart shows: ``{"mode": "unit", "bars": ...}`` or ``{"mode": "layer", "hist": ...}``."""
        return chart_payload(self._idx, self.layer, self.unit, top_k=self._options.top_k, bins=self._options.bins)

    def show(self, layer: str | None = None, unit: int | None = None) -> None:
        """Show ``unit`` (None: the layer's distribution) of ``layer`` (default: unchanged)."""
        layer = _data.check_layer(self._idx, layer if layer is not None else self.layer)
        with self.hold_sync():
            if layer != self.layer:
                self.layer = layer
            self.unit = unit

    def __repr__(self) -> str:
        return f"ClassSelectivityChart(layer={self.layer!r}, unit={self.unit})"


class ColorSelectivityHistogram(W.VBox):
    """Distribution of the colour selectivity index per layer, with a threshold and range selection.

    A plotly ``FigureWidget`` (one bar trace per layer, the share of the layer's alive units per
    bin). Box-select along x, or click a bar, to select a range; double-click clears it. The
    range is :attr:`selected_range` and the units inside it, per layer, :attr:`selected_units`.

    Parameters
    ----------
    idx : NeuronIndex
    layers : list of str, optional
        Layers to show (default: every layer that has the index).
    score : str
        The per-unit index to histogram (any name in ``scores``; default colour selectivity).
    bins : int
        Number of bins, shared by all layers.
    threshold : float, optional
        Draws a dashed line and counts the units at or above it per layer.
    height : int
        Figure height in pixels.

    Attributes
    ----------
    selected_range : tuple (low, high) or None
    selected_units : dict of str to list of int
        Alive units with ``low <= value <= high``, per layer.
    threshold : float or None
    figure : plotly.graph_objects.FigureWidget
    """

    selected_range = t.Tuple(t.Float(), t.Float(), default_value=None, allow_none=True)
    selected_units = t.Dict()
    threshold = t.Float(None, allow_none=True)

    def __init__(self, idx, layers: Sequence[str] | None = None, *, score: str = "color_selectivity",
                 bins: int = 20, threshold: float | None = None, height: int = 280):
        import plotly.graph_objects as go

        all_layers = list(idx.layers)
        if layers is None:
            layers = [name for name in all_layers if score in idx[name].scores]
        else:
            layers = [layers] if isinstance(layers, str) else list(layers)
            for name in layers:
                _data.check_layer(idx, name)
        with_score = [name for name in layers if score in idx[name].scores]
        if not with_score:
            available = sorted({s for name in all_layers for s in idx[name].scores})
            raise _data.WidgetArgumentError(
                f"no layer of this index has the index {score!r}; indexes present: "
                f"{', '.join(map(repr, available)) or 'none'} (pass score=... to histogram another)")
        if int(bins) < 1:
            raise _data.WidgetArgumentError(f"bins must be a positive integer, got {bins}")
        self._idx = idx
        self._score = score
        self._layers = with_score
        self._values = {name: np.asarray(idx[name].scores[score], dtype=np.float64) for name in with_score}
        self._alive = {name: ~np.asarray(idx[name].dead, dtype=bool) for name in with_score}
        self._edges = _data.shared_edges(
            [v[self._alive[n]] for n, v in self._values.items()], int(bins))
        self._callbacks: list[Callable] = []
        self.figure = go.FigureWidget(self._figure_spec(go, int(height)))
        for trace in self.figure.data:
            trace.on_click(self._on_click, append=False)
        if self.figure.data:
            # selection callbacks fire once per trace with the same selector: listen on one
            self.figure.data[0].on_selection(self._on_selection)
            self.figure.data[0].on_deselect(lambda *_: self.clear_selection())
        lo, hi = float(self._edges[0]), float(self._edges[-1])
        self._enable = W.Checkbox(value=threshold is not None, description="threshold", indent=False,
                                  layout=W.Layout(width="auto"))
        self._slider = W.FloatSlider(value=threshold if threshold is not None else round((lo + hi) / 2, 2),
                                     min=lo, max=hi, step=(hi - lo) / 200 or 0.01, readout_format=".2f",
                                     continuous_update=True, disabled=threshold is None,
                                     layout=W.Layout(width="320px"))
        self._counts = W.Label(layout=W.Layout(flex="1 1 auto"))
        self._clear = W.Button(description="clear selection", layout=W.Layout(width="auto"),
                               tooltip="Clear the selected range")
        self._clear.on_click(lambda _b: self.clear_selection())
        self._enable.observe(self._on_threshold_controls, "value")
        self._slider.observe(self._on_threshold_controls, "value")
        controls = W.HBox([self._enable, self._slider, self._clear, self._counts],
                          layout=W.Layout(align_items="center", flex_flow="row wrap"))
        super().__init__([controls, self.figure])
        self.add_class("nsi-histogram")
        self.threshold = threshold
        self._update_counts()

    # -- public API ------------------------------------------------------------------------------
    @property
    def score(self) -> str:
        """Name of the index shown."""
        return self._score

    @property
    def layers(self) -> list[str]:
        """Layers shown."""
        return list(self._layers)

    @property
    def edges(self) -> np.ndarray:
        """Bin edges shared by all layers."""
        return self._edges.copy()

    def select_range(self, low: float | None, high: float | None) -> None:
        """Select ``[low, high]`` (as a box selection would); ``None, None`` clears."""
        if low is None and high is None:
            self.selected_range = None
            return
        low = float(self._edges[0]) if low is None else float(low)
        high = float(self._edges[-1]) if high is None else float(high)
        if low > high:
            low, high = high, low
        self.selected_range = (low, high)

    def select_bin(self, i: int) -> None:
        """Select the range of bin ``i`` (what clicking a bar does)."""
        if not 0 <= int(i) < len(self._edges) - 1:
            raise _data.WidgetArgumentError(f"bin {i} out of range 0..{len(self._edges) - 2}")
        self.select_range(float(self._edges[i]), float(self._edges[i + 1]))

    def clear_selection(self) -> None:
        """Forget the selected range."""
        self.selected_range = None

    def on_select(self, callback: Callable[[tuple | None, dict], Any]) -> None:
        """Call ``callback(selected_range, selected_units)`` when the selection changes."""
        self._callbacks.append(callback)

    def units_in_range(self, low: float, high: float) -> dict[str, list[int]]:
        """Alive units of each layer shown with ``low <= value <= high``."""
        out = {}
        for name in self._layers:
            v = self._values[name]
            ok = self._alive[name] & np.isfinite(v) & (v >= low) & (v <= high)
            out[name] = [int(u) for u in np.flatnonzero(ok)]
        return out

    # -- internals ---------------------------------------------------------------------------------
    def _figure_spec(self, go, height: int):
        edges = self._edges
        centers = (edges[:-1] + edges[1:]) / 2
        traces = []
        for k, name in enumerate(self._layers):
            v = self._values[name][self._alive[name]]
            counts = np.asarray(_data.histogram(v, edges))
            n_alive = int(np.isfinite(v).sum())
            share = 100.0 * counts / max(n_alive, 1)
            n_dead = int((~self._alive[name]).sum())
            # plotly reads pseudo-HTML in names: escape the user-chosen layer name
            label = html.escape(name) + (f" ({n_dead} dead)" if n_dead else "")
            traces.append(go.Bar(
                x=centers, y=share, name=label, marker_color=PALETTE[k % len(PALETTE)], marker_line_width=0,
                customdata=np.stack([edges[:-1], edges[1:], counts], axis=1),
                hovertemplate=("[%{customdata[0]:.3f}, %{customdata[1]:.3f}]: "
                               "%{customdata[2]} units (%{y:.1f}%)<extra>%{fullData.name}</extra>")))
        fig = go.Figure(traces)
        fig.update_layout(
            height=height, barmode="group", bargap=0.08, dragmode="select", selectdirection="h",
            margin=dict(l=48, r=12, t=28, b=40), legend=dict(orientation="h", y=1.12, x=0),
            xaxis_title=self._score.replace("_", " "), yaxis_title="% of alive units",
            # transparent with mid-grey ink: readable in JupyterLab's light and dark themes
            template="plotly_white", clickmode="event", font=dict(size=11, color="#808080"),
            paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
            xaxis=dict(gridcolor="rgba(128,128,128,0.25)", zerolinecolor="rgba(128,128,128,0.5)"),
            yaxis=dict(gridcolor="rgba(128,128,128,0.25)", zerolinecolor="rgba(128,128,128,0.5)"),
            shapes=[dict(type="line", xref="x", yref="paper", x0=0, x1=0, y0=0, y1=1, visible=False,
                         line=dict(color="#D55E00", width=2, dash="dash")),
                    dict(type="rect", xref="x", yref="paper", x0=0, x1=0, y0=0, y1=1, visible=False,
                         fillcolor="rgba(0,114,178,0.12)", line=dict(width=0), layer="below")])
        return fig

    def _on_click(self, trace, points, state):
        if points.point_inds:
            self.select_bin(int(points.point_inds[0]))

    def _on_selection(self, trace, points, selector):
        xs = None
        if selector is not None and getattr(selector, "xrange", None):
            xs = selector.xrange
        elif selector is not None and getattr(selector, "xs", None):
            xs = (min(selector.xs), max(selector.xs))
        if xs:
            self.select_range(min(xs), max(xs))

    def _on_threshold_controls(self, _change):
        self._slider.disabled = not self._enable.value
        self.threshold = float(self._slider.value) if self._enable.value else None

    @t.observe("threshold")
    def _on_threshold(self, change):
        value = change["new"]
        if value is not None:
            if not self._enable.value:
                self._enable.value = True
            if self._slider.value != value:
                self._slider.value = min(max(value, self._slider.min), self._slider.max)
        with self.figure.batch_update():
            line = self.figure.layout.shapes[0]
            line.visible = value is not None
            if value is not None:
                line.x0 = line.x1 = value
        self._update_counts()

    @t.observe("selected_range")
    def _on_range(self, change):
        rng = change["new"]
        self.selected_units = self.units_in_range(*rng) if rng is not None else {}
        with self.figure.batch_update():
            if rng is None:
                for trace in self.figure.data:  # undim the bars of a cleared box selection
                    trace.selectedpoints = None
            rect = self.figure.layout.shapes[1]
            rect.visible = rng is not None
            if rng is not None:
                rect.x0, rect.x1 = rng
        self._update_counts()
        for callback in list(self._callbacks):
            callback(rng, dict(self.selected_units))

    def _update_counts(self) -> None:
        parts = []
        if self.threshold is not None:
            counts = []
            for name in self._layers:
                v = self._values[name]
                alive = self._alive[name]
                counts.append(f"{name} {int((alive & (v >= self.threshold)).sum())}/{int(alive.sum())}")
            parts.append(f"≥ {self.threshold:.2f}: " + ", ".join(counts))
        if self.selected_range is not None:
            lo, hi = self.selected_range
            n = sum(len(u) for u in self.selected_units.values())
            parts.append(f"selected [{lo:.3f}, {hi:.3f}]: {n} units")
        # a Label renders text, never HTML, so layer names are safe here
        self._counts.value = " · ".join(parts)
