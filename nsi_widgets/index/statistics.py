"""The paper's layer statistics: how colour and class selectivity are spread through the layers.

Rafegas et al. (2019) summarise a network layer by layer: how many units are selective to colour
and to classes, at several thresholds of the indexes, and how the indexes' means change with depth
(their "how features and classes are represented through layers"). :func:`layer_statistics` gives
those numbers as one table; :mod:`nsi_widgets.widgets.statistics` draws them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..core.errors import InputError

DEFAULT_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "color_selectivity": (0.1, 0.25, 0.5),
    "class_selectivity": (0.5, 0.65, 0.8),
}
"""Thresholds used when none are given: per score, the fractions of alive units at or above each."""


def short_name(score: str) -> str:
    """Column prefix of a score: ``"color_selectivity"`` -> ``"color"``."""
    return score[: -len("_selectivity")] if score.endswith("_selectivity") else score


def _normalise_thresholds(thresholds, scores: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``thresholds`` as ``{score: (t1, t2, ...)}`` for every score in ``scores``."""
    if thresholds is None:
        return {s: DEFAULT_THRESHOLDS.get(s, ()) for s in scores}
    if isinstance(thresholds, Mapping):
        unknown = [k for k in thresholds if k not in scores]
        if unknown:
            raise InputError(f"thresholds given for {unknown}, which are not among the scores {list(scores)}; "
                             "add them to scores= or use their full names (e.g. 'color_selectivity')")
        table = {s: DEFAULT_THRESHOLDS.get(s, ()) for s in scores}
        for key, values in thresholds.items():
            table[key] = tuple(float(v) for v in np.atleast_1d(values))
        return table
    values = tuple(float(v) for v in np.atleast_1d(thresholds))
    return {s: values for s in scores}


def layer_statistics(idx, thresholds=None, *,
                     scores: Sequence[str] = ("color_selectivity", "class_selectivity")):
    """Per-layer statistics of selectivity indexes (docs/methods.md section 4 and 5; the paper's layer view).

    Parameters
    ----------
    idx : NeuronIndex
        From :func:`nsi_widgets.index_neurons` or :func:`nsi_widgets.load_index`.
    thresholds : float, sequence of float, or dict of score name to float(s), optional
        The fractions of alive units with a score **at or above** each threshold are reported. One
        value or a sequence applies to every score; a dict sets them per score. Default:
        :data:`DEFAULT_THRESHOLDS` (colour 0.1, 0.25, 0.5; class 0.5, 0.65, 0.8).
    scores : sequence of str
        Per-unit scores to summarise (any name in ``LayerIndex.scores``).

    Returns
    -------
    pandas.DataFrame
        One row per layer, in the index's order, indexed by layer name. Columns: ``depth`` (1 for the
        first layer), ``units``, ``dead`` (units whose top activations are all <= 0), ``alive``; then
        for each score, with prefix ``p`` = the score's name without ``_selectivity`` (``color``,
        ``class``): ``p_mean``, ``p_median``, ``p_std`` over the alive units with a finite value,
        ``p_defined`` (their number) and ``p>=t`` for each threshold ``t``: the fraction of *alive*
        units with the score at or above ``t`` (an undefined score counts as below). A layer without
        the score has NaN in its columns.

    Raises
    ------
    InputError
        If a score is computed in no layer of the index, or thresholds name an unknown score.

    Examples
    --------
    >>> stats = nsi.layer_statistics(idx, thresholds={"color_selectivity": [0.25, 0.5]})  # doctest: +SKIP
    >>> stats[["color_mean", "color>=0.5", "class_mean"]]                                 # doctest: +SKIP
    """
    import pandas as pd

    scores = list(scores)
    layers = [idx[name] for name in idx.layers]
    missing = [s for s in scores if not any(s in L.scores for L in layers)]
    if missing:
        available = sorted({s for L in layers for s in L.scores})
        raise InputError(f"scores {missing} are in no layer of this index (computed: {available}); "
                         "compute them with index_neurons(indexes=...) or choose others with scores=")
    table = _normalise_thresholds(thresholds, scores)
    rows = []
    for depth, L in enumerate(layers, start=1):
        alive = ~L.dead
        row = {"layer": L.name, "depth": depth, "units": L.n_units, "dead": int((~alive).sum()),
               "alive": int(alive.sum())}
        for score in scores:
            prefix = short_name(score)
            values = L.scores.get(score)
            if values is None:
                row.update({f"{prefix}_{k}": np.nan for k in ("mean", "median", "std", "defined")})
                row.update({f"{prefix}>={t:g}": np.nan for t in table[score]})
                continue
            values = np.asarray(values, dtype=np.float64)
            defined = values[alive & np.isfinite(values)]
            row[f"{prefix}_mean"] = float(defined.mean()) if defined.size else np.nan
            row[f"{prefix}_median"] = float(np.median(defined)) if defined.size else np.nan
            row[f"{prefix}_std"] = float(defined.std()) if defined.size else np.nan
            row[f"{prefix}_defined"] = int(defined.size)
            for t in table[score]:
                above = int((defined >= t).sum())
                row[f"{prefix}>={t:g}"] = above / row["alive"] if row["alive"] else np.nan
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("layer")
    frame.attrs["thresholds"] = {s: list(v) for s, v in table.items()}
    frame.attrs["top_n"] = idx.meta.get("top_n") if hasattr(idx, "meta") else None
    return frame


def most_selective(idx, score: str = "color_selectivity", k: int = 8) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ``k`` most selective alive units of every layer by ``score`` (for the galleries).

    Ties are broken by the larger top activation, then the smaller unit id. Dead units and units
    whose score is undefined (NaN) are left out, so a layer may give fewer than ``k``.

    Returns
    -------
    dict of layer name to (units (k,) int64, values (k,) float64)
        Layers without the score are left out.
    """
    if int(k) < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    chosen = {}
    for name in idx.layers:
        L = idx[name]
        if score not in L.scores:
            continue
        values = np.asarray(L.scores[score], dtype=np.float64)
        top = L.top_activations[:, 0].astype(np.float64) if L.top_n else np.zeros(L.n_units)
        valid = np.flatnonzero(~L.dead & np.isfinite(values))
        order = valid[np.lexsort((valid, -top[valid], -values[valid]))][: int(k)]
        chosen[name] = (order.astype(np.int64), values[order])
    if not chosen:
        raise InputError(f"no layer of this index has the score {score!r}")
    return chosen
