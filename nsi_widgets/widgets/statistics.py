"""Charts and galleries of the paper's layer statistics (:func:`nsi_widgets.layer_statistics`).

* :func:`selectivity_figure`: per layer, the fraction of alive units at or above each threshold of
  one index (the paper's "how features and classes are represented through layers");
* :func:`means_figure`: mean (and spread) of each index per layer;
* :func:`gallery_figure`: the most colour- or class-selective Neuron Features of every layer;
* :func:`statistics_html`: all of them as one self-contained HTML fragment (inline SVG charts and
  PNG images, no script, no external file) for the exported report.

Views only: they read an index's arrays and never run a model.
"""
from __future__ import annotations

import base64
import html
from typing import Sequence

import numpy as np

from . import _data
from ..index.statistics import layer_statistics, most_selective, short_name

#: line colours (Okabe-Ito), shared by the plotly charts and the SVG fragment
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999")
TITLES = {"color_selectivity": "colour selectivity", "class_selectivity": "class selectivity"}


def _title(score: str) -> str:
    return TITLES.get(score, score.replace("_", " "))


def _threshold_columns(stats, score: str) -> list[tuple[str, float]]:
    prefix = short_name(score)
    return [(f"{prefix}>={t:g}", t) for t in stats.attrs.get("thresholds", {}).get(score, [])
            if f"{prefix}>={t:g}" in stats.columns]


def selectivity_figure(stats, score: str = "color_selectivity", height: int = 320):
    """Fraction of each layer's alive units with ``score`` at or above each threshold (plotly).

    Parameters
    ----------
    stats : pandas.DataFrame
        From :func:`nsi_widgets.layer_statistics`.
    score : str
        Which index (its thresholds are those the statistics were computed with).
    """
    import plotly.graph_objects as go

    columns = _threshold_columns(stats, score)
    if not columns:
        raise _data.WidgetArgumentError(f"the statistics have no thresholds for {score!r}; compute them "
                                        f"with layer_statistics(idx, thresholds={{{score!r}: [...]}})")
    fig = go.Figure()
    for i, (column, t) in enumerate(columns):
        fig.add_trace(go.Scatter(x=list(stats.index), y=stats[column].to_numpy(), mode="lines+markers",
                                 name=f">= {t:g}", line={"color": COLOURS[i % len(COLOURS)]}))
    fig.update_layout(title=f"Share of alive units by {_title(score)}", height=height,
                      xaxis_title="layer", yaxis_title="fraction of alive units", yaxis_range=[0, 1.02],
                      legend_title=_title(score), margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def means_figure(stats, scores: Sequence[str] = ("color_selectivity", "class_selectivity"), height: int = 320):
    """Mean of each index per layer, with one standard deviation as error bars (plotly)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, score in enumerate(scores):
        prefix = short_name(score)
        if f"{prefix}_mean" not in stats.columns:
            raise _data.WidgetArgumentError(f"the statistics have no column {prefix}_mean; "
                                            f"compute them with layer_statistics(idx, scores=[..., {score!r}])")
        fig.add_trace(go.Scatter(x=list(stats.index), y=stats[f"{prefix}_mean"].to_numpy(), mode="lines+markers",
                                 name=_title(score), line={"color": COLOURS[i % len(COLOURS)]},
                                 error_y={"type": "data", "array": stats[f"{prefix}_std"].to_numpy(),
                                          "visible": True, "thickness": 1}))
    fig.update_layout(title="Mean index per layer (error bars: one standard deviation)", height=height,
                      xaxis_title="layer", yaxis_title="mean over alive units",
                      margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def _tiles(idx, score: str, per_layer: int, thumb: int):
    """Per layer: the chosen units, their values, and their Neuron Features as uint8 tiles."""
    chosen = most_selective(idx, score, per_layer)
    rows = []
    for name, (units, values) in chosen.items():
        source = _data.thumbnail_source(idx[name])
        if source is None:
            raise _data.WidgetArgumentError(f"layer {name!r} has no Neuron Features (indexed with "
                                            "neuron_features=None): the gallery needs them")
        tiles = _data.to_uint8(_data.box_resize(source[units], thumb, thumb)) if len(units) else \
            np.zeros((0, thumb, thumb, 3), np.uint8)
        rows.append((name, units, values, tiles))
    return rows


def gallery_figure(idx, score: str = "color_selectivity", per_layer: int = 8, thumb: int = 48):
    """The ``per_layer`` most selective Neuron Features of every layer by ``score`` (plotly image).

    One row per layer, best first from the left; each tile is labelled with the unit and its value.
    Ties are broken by the larger top activation (:func:`nsi_widgets.index.statistics.most_selective`).
    """
    import plotly.graph_objects as go

    rows = _tiles(idx, score, per_layer, thumb)
    gap = 4
    cell = thumb + gap
    mosaic = np.full((len(rows) * (cell + 14), per_layer * cell, 3), 255, np.uint8)
    annotations = []
    for r, (name, units, values, tiles) in enumerate(rows):
        top = r * (cell + 14)
        for c, (unit, value) in enumerate(zip(units, values)):
            mosaic[top:top + thumb, c * cell:c * cell + thumb] = tiles[c]
            annotations.append({"x": c * cell + thumb / 2, "y": top + thumb + 8, "text": f"{unit}: {value:.2f}",
                                "showarrow": False, "font": {"size": 10}, "xref": "x", "yref": "y"})
    fig = go.Figure(go.Image(z=mosaic, hoverinfo="skip"))
    fig.update_layout(title=f"Most {_title(score)}-selective Neuron Features per layer (unit: value)",
                      height=len(rows) * (cell + 14) * 1.6 + 80, annotations=annotations,
                      margin={"l": 70, "r": 10, "t": 50, "b": 10})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(tickvals=[r * (cell + 14) + thumb / 2 for r in range(len(rows))],
                     ticktext=[name for name, *_ in rows], showgrid=False)
    return fig


# ---------------------------------------------------------------------------------------------
# The HTML fragment for the exported report
# ---------------------------------------------------------------------------------------------
_STYLE = """
.nsi-stats{font-family:system-ui,sans-serif;color:#222;max-width:980px}
.nsi-stats h2{font-size:1.25em;margin:1em 0 .4em}.nsi-stats h3{font-size:1.05em;margin:1em 0 .3em}
.nsi-stats table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
.nsi-stats td,.nsi-stats th{border:1px solid #ccc;padding:2px 6px;text-align:right}
.nsi-stats th:first-child,.nsi-stats td:first-child{text-align:left}
.nsi-stats .charts{display:flex;flex-wrap:wrap;gap:12px}
.nsi-stats .row{display:flex;align-items:flex-start;gap:6px;margin:4px 0}
.nsi-stats .row .name{width:80px;font-size:.85em;padding-top:14px}
.nsi-stats figure{margin:0;text-align:center;font-size:.72em}
.nsi-stats figure img{display:block;image-rendering:pixelated;border:1px solid #ddd}
"""


def _svg_lines(x_labels: Sequence[str], series: Sequence[tuple[str, np.ndarray]], title: str,
               y_label: str, y_range: tuple[float, float] | None = None, width: int = 460,
               height: int = 260) -> str:
    """A small line chart as inline SVG (no script): one polyline with markers per series."""
    left, right, top, bottom = 48, 110, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = np.concatenate([np.asarray(v, dtype=np.float64) for _, v in series]) if series else np.zeros(1)
    finite = values[np.isfinite(values)]
    lo, hi = y_range if y_range is not None else (
        (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    n = len(x_labels)
    xs = [left + (plot_w * (i + 0.5) / max(n, 1)) for i in range(n)]

    def y_of(v: float) -> float:
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    e = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}" font-size="11" '
             f'font-family="system-ui,sans-serif">',
             f'<text x="{left}" y="16" font-size="13" font-weight="600">{e(title)}</text>']
    for tick in np.linspace(lo, hi, 5):
        y = y_of(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#888"/>'
                 f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#888"/>')
    for x, label in zip(xs, x_labels):
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{e(str(label))}</text>')
    parts.append(f'<text x="12" y="{top + plot_h / 2:.1f}" transform="rotate(-90 12 {top + plot_h / 2:.1f})" '
                 f'text-anchor="middle">{e(y_label)}</text>')
    for i, (name, vals) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        points = [(x, y_of(float(v))) for x, v in zip(xs, np.asarray(vals, dtype=np.float64)) if np.isfinite(v)]
        if points:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in points)
        ly = top + 14 * i + 6
        parts.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 24}" y1="{ly}" y2="{ly}" '
                     f'stroke="{colour}" stroke-width="2"/><text x="{left + plot_w + 28}" y="{ly + 4}">{e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table_html(stats) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(c))}</th>" for c in ["layer", *stats.columns])
    body = []
    for layer, row in stats.iterrows():
        cells = [f"<td>{e(str(layer))}</td>"]
        for value in row.to_numpy():
            if isinstance(value, (float, np.floating)):
                cells.append(f"<td>{'' if not np.isfinite(value) else f'{value:.3f}'}</td>")
            else:
                cells.append(f"<td>{e(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _gallery_html(idx, score: str, per_layer: int, thumb: int) -> str:
    e = html.escape
    rows = []
    for name, units, values, tiles in _tiles(idx, score, per_layer, thumb):
        figures = []
        for unit, value, tile in zip(units, values, tiles):
            data = base64.b64encode(_data.png_bytes(tile)).decode("ascii")
            figures.append(f'<figure><img width="{thumb}" height="{thumb}" alt="{e(name)} unit {int(unit)}" '
                           f'src="data:image/png;base64,{data}"><figcaption>{int(unit)}: {value:.2f}'
                           f'</figcaption></figure>')
        rows.append(f'<div class="row"><div class="name">{e(name)}</div>{"".join(figures)}</div>')
    return "".join(rows)


def statistics_html(idx, thresholds=None, *, per_layer: int = 8, thumb: int = 48,
                    scores: Sequence[str] = ("color_selectivity", "class_selectivity")) -> str:
    """The layer statistics, their charts and the galleries as one self-contained HTML fragment.

    Inline SVG charts and PNG data URIs under a scoped ``<style>``; no script and no external file,
    so it can be pasted into any page (the exported report) and works offline. Text from the index
    (layer names) is escaped.

    Parameters
    ----------
    idx : NeuronIndex
    thresholds : see :func:`nsi_widgets.layer_statistics`.
    per_layer : int
        Neuron Features shown per layer in each gallery.
    thumb : int
        Side of a gallery tile in pixels.
    scores : sequence of str
        The indexes to summarise; one chart of threshold shares and one gallery per index.

    Returns
    -------
    str
        A ``<section class="nsi-stats">`` element.
    """
    stats = layer_statistics(idx, thresholds, scores=scores)
    layers = list(stats.index)
    charts = []
    for score in scores:
        columns = _threshold_columns(stats, score)
        if columns:
            charts.append(_svg_lines(layers, [(f">= {t:g}", stats[c].to_numpy()) for c, t in columns],
                                     f"Share of alive units by {_title(score)}", "fraction of alive units",
                                     (0.0, 1.0)))
    charts.append(_svg_lines(layers, [(_title(s), stats[f"{short_name(s)}_mean"].to_numpy()) for s in scores],
                             "Mean index per layer", "mean over alive units"))
    galleries = "".join(
        f"<h3>Most {html.escape(_title(s))}-selective Neuron Features (unit: value)</h3>"
        + _gallery_html(idx, s, per_layer, thumb) for s in scores)
    top_n = stats.attrs.get("top_n")
    note = f"N = {top_n} top images per unit; " if top_n else ""
    return (f'<section class="nsi-stats"><style>{_STYLE}</style><h2>Layer statistics</h2>'
            f"<p>{note}fractions are of each layer's alive units; dead units have no index.</p>"
            f'{_table_html(stats)}<div class="charts">{"".join(charts)}</div>{galleries}</section>')
