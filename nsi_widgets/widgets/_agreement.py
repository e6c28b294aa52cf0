"""Agreement between annotators for the Explorer's agreement tab: per neuron each author's label,
and chance-corrected agreement (Cohen's kappa for two authors, Fleiss' kappa for more).

The per-neuron table is the store's :meth:`~nsi_widgets.annotations.AnnotationStore.agreement`;
labels are compared as the store compares them (:func:`~nsi_widgets.annotations.normalize_label`).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels of the same items (``a[i]``, ``b[i]`` for item ``i``).

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed share of agreeing items and
    ``p_e = sum_k p_a(k) p_b(k)`` the agreement expected from each rater's label frequencies.
    None when undefined (no items, or both raters used one and the same label: ``p_e = 1``).
    """
    if len(a) != len(b):
        raise ValueError(f"the two raters label different numbers of items ({len(a)} and {len(b)})")
    n = len(a)
    if not n:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if p_e >= 1.0:
        return None
    return float((p_o - p_e) / (1.0 - p_e))


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa from an ``(items, categories)`` table of how many raters chose each category.

    Every item must have the same number ``n >= 2`` of ratings. ``P_i = (sum_j n_ij^2 - n) /
    (n (n - 1))``, ``p_j = sum_i n_ij / (N n)``, ``kappa = (mean P_i - sum p_j^2) / (1 - sum p_j^2)``.
    None when undefined (no items, or every rating in one category).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or not counts.shape[0]:
        return None
    n = counts.sum(axis=1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    n = float(n[0])
    p_i = ((counts ** 2).sum(axis=1) - n) / (n * (n - 1))
    p_j = counts.sum(axis=0) / (counts.shape[0] * n)
    p_e = float((p_j ** 2).sum())
    if p_e >= 1.0:
        return None
    return float((p_i.mean() - p_e) / (1.0 - p_e))


def kappa_of(labels_by_author: dict[str, list[str | None]]) -> dict:
    """Kappa over the neurons every author labelled: Cohen's for two authors, Fleiss' for more.

    ``labels_by_author[author][i]`` is the (normalised) label of neuron ``i`` or None.
    """
    authors = list(labels_by_author)
    if len(authors) < 2:
        return {"kind": None, "value": None, "n_items": 0, "authors": authors,
                "reason": "agreement needs labels by at least two authors"}
    columns = [labels_by_author[a] for a in authors]
    common = [i for i in range(len(columns[0])) if all(col[i] is not None for col in columns)]
    if not common:
        return {"kind": "cohen" if len(authors) == 2 else "fleiss", "value": None, "n_items": 0,
                "authors": authors, "reason": "no neuron is labelled by every author"}
    if len(authors) == 2:
        value = cohen_kappa([columns[0][i] for i in common], [columns[1][i] for i in common])
        kind = "cohen"
    else:
        categories = sorted({col[i] for col in columns for i in common})
        table = np.zeros((len(common), len(categories)))
        where = {c: j for j, c in enumerate(categories)}
        for row, i in enumerate(common):
            for col in columns:
                table[row, where[col[i]]] += 1
        value = fleiss_kappa(table)
        kind = "fleiss"
    out = {"kind": kind, "value": value, "n_items": len(common), "authors": authors}
    if value is None:
        out["reason"] = "undefined: every author used one and the same label"
    return out


def agreement_payload(store, layer: str) -> dict:
    """The agreement tab of one layer: authors, one row per labelled neuron, and the kappa."""
    from ..annotations import normalize_label

    frame = store.agreement(layer=layer)
    fixed = {"layer", "unit", "n_authors", "n_labels", "agree", "majority", "majority_count"}
    columns = [c for c in frame.columns if c not in fixed]
    authors = [c[:-len(" (author)")] if c.endswith(" (author)") else c for c in columns]
    rows, normalised = [], {a: [] for a in authors}
    for record in frame.to_dict("records"):
        labels = {}
        for author, column in zip(authors, columns):
            value = record[column]
            label = value if isinstance(value, str) else None
            labels[author] = label
            normalised[author].append(normalize_label(label) if label is not None else None)
        n_authors = int(record["n_authors"])
        rows.append({"unit": int(record["unit"]), "labels": labels, "n_authors": n_authors,
                     "n_labels": int(record["n_labels"]), "majority": record["majority"],
                     "agree": bool(record["agree"]) if n_authors >= 2 else None})
    return {"authors": authors, "rows": rows, "kappa": kappa_of(normalised),
            "n_disagree": sum(1 for r in rows if r["agree"] is False)}
