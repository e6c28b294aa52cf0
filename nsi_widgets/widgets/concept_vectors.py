"""Concept vectors (Net2Vec, TCAV) linked to the Explorer (docs/methods.md section 8).

Shown for an index with a ``"concept_vectors"`` attachment (``idx.attach("net2vec",
cv.to_attachment())``): per layer every unit's weight in every concept's vector, ``weights`` ``(C, K)``
(or ``vectors`` ``(K, C)``), with ``meta["concepts"]`` (and ``meta["categories"]``, optional
``quality`` ``(K,)`` per layer).

* the card (:func:`unit_weights_payload`): the concepts in whose vectors the unit weighs most;
* a tab (:func:`concept_units_payload`, sent once per layer): for a chosen concept, the units with
  the largest weights, each a link to its card;
* the grid: the attachment's ``top_concept`` column by name.

A unit's concepts are ranked by its weight relative to each concept's largest absolute weight (the
``top_concept`` column's rule), a concept's units by their raw weights (``ConceptVectors.top_units``).
"""
from __future__ import annotations

import numpy as np

from .views import CardView, CategoryColumn, register_card_view, register_category_column

KIND = "concept_vectors"
#: concepts listed in the card, units listed per concept in the tab
N_CONCEPTS = 6
N_UNITS = 12


def unit_weights(attachment, layer: str) -> np.ndarray | None:
    """``(C, K)`` float32: every unit's weight in every concept's vector (None without the layer)."""
    arrays = attachment.arrays.get(layer)
    if not arrays:
        return None
    k = len(attachment.meta.get("concepts", []))
    if "weights" in arrays and np.ndim(arrays["weights"]) == 2 and np.shape(arrays["weights"])[1] == k:
        return np.asarray(arrays["weights"], dtype=np.float32)
    if "vectors" in arrays and np.ndim(arrays["vectors"]) == 2 and np.shape(arrays["vectors"])[0] == k:
        return np.asarray(arrays["vectors"], dtype=np.float32).T
    return None


def _relative(weights: np.ndarray) -> np.ndarray:
    """Each weight over its concept's largest absolute weight (0 for an all-zero concept)."""
    scale = np.abs(weights).max(axis=0, keepdims=True)
    return np.divide(weights, scale, out=np.zeros_like(weights), where=scale > 0)


def _names(attachment) -> tuple[list[str], list[str]]:
    names = [str(n) for n in attachment.meta.get("concepts", [])]
    categories = [str(c) for c in attachment.meta.get("categories", [])]
    return names, categories if len(categories) == len(names) else [""] * len(names)


def _quality(attachment, layer: str, k: int) -> np.ndarray:
    q = (attachment.arrays.get(layer) or {}).get("quality")
    return np.asarray(q, np.float32) if q is not None and np.shape(q) == (k,) else np.full(k, np.nan, np.float32)


def unit_weights_payload(attachment, layer: str, unit: int) -> dict:
    """The card's list: ``concepts`` (``name``, ``category``, ``weight``, ``relative``, ``quality``,
    ``index``), the unit's :data:`N_CONCEPTS` largest relative weights first; ``method``."""
    weights = unit_weights(attachment, layer)
    if weights is None or not 0 <= unit < weights.shape[0]:
        return {"missing": True}
    names, categories = _names(attachment)
    relative = _relative(weights)[unit]
    quality = _quality(attachment, layer, len(names))
    top = np.argsort(-relative, kind="stable")[:N_CONCEPTS]
    return {"method": str(attachment.meta.get("method", "")),
            "concepts": [{"name": names[k], "category": categories[k], "weight": float(weights[unit, k]),
                          "relative": float(relative[k]), "quality": float(quality[k]), "index": int(k)} for k in top]}


def concept_units_payload(attachment, layer: str) -> dict | None:
    """The tab's table for the whole layer: ``concepts``, ``categories``, ``quality`` (K,),
    ``top_units`` (K, n) int32 and ``top_weights`` (K, n) float32, largest weight first, ``method``."""
    weights = unit_weights(attachment, layer)
    if weights is None:
        return None
    names, categories = _names(attachment)
    n = min(N_UNITS, weights.shape[0])
    order = np.argsort(-weights.T, axis=1, kind="stable")[:, :n]  # (K, n)
    return {"method": str(attachment.meta.get("method", "")), "concepts": names, "categories": categories,
            "quality": _quality(attachment, layer, len(names)), "top_units": order.astype(np.int32),
            "top_weights": np.take_along_axis(weights.T, order, axis=1).astype(np.float32)}


register_card_view(CardView(KIND, "concept weights", unit_weights_payload, kind=KIND, renderer="concept_weights",
                            placement="card", order=40))
register_card_view(CardView("concept_units", "concept → units", None, kind=KIND, renderer="concept_units",
                            placement="tab", order=41, layer_payload=concept_units_payload))
register_category_column(CategoryColumn(KIND, "top_concept", lambda a: _names(a)[0], lambda a: _names(a)[1]))
