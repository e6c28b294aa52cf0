"""Network Dissection in the Explorer: the card's concept view, the grid's concept column, a suggested
label, and a plotly chart of unique detectors per layer for notebooks (docs/methods.md section 7).

Shown for an index with a ``"dissection"`` attachment (``idx.attach("dissection",
nsi.dissect(...).to_attachment())``) or with a dissection compute handler
(:func:`~nsi_widgets.widgets.on_demand.default_compute` with ``concept_data=``):

* the grid: the per-unit columns ``dissection.best_iou`` and ``dissection.best_concept``, the latter
  shown by name (a categorical column: its filter picks a concept; units without a concept above
  the IoU threshold have none);
* the card (:func:`dissection_payload`): the unit's top concepts with IoU bars and categories, and,
  once computed (the view's button, :func:`nsi_widgets.concepts.dissection_views.dissection_pictures`),
  NetDissect's picture: for its top images the thresholded map over the image beside the concept's
  mask;
* the annotation editor: a detector's best concept as a suggested label; accepting it writes a normal
  annotation whose note says where it came from (:func:`suggestion_note`).
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np

from . import _data
from .views import CardView, CategoryColumn, register_card_view, register_category_column

KIND = "dissection"
#: concepts listed in the card
N_CONCEPTS = 6
#: largest side of a picture as sent (the image's own size when smaller)
PICTURE_PX = 128
#: brightness left outside the region shown (the thresholded map, or the concept's mask)
DIM = 0.25


def suggestion_note(concept: str, category: str, iou: float) -> str:
    """The note of an accepted suggestion, e.g. ``suggested by Network Dissection: IoU 0.23 with 'red' (colour)``."""
    return f"suggested by Network Dissection: IoU {float(iou):.2f} with '{concept}' ({category})"


def dissection_payload(attachment, layer: str, unit: int, nf_px: int = PICTURE_PX) -> dict:
    """What the card's concept view shows of one unit.

    Returns
    -------
    dict
        ``{"missing": True}`` when the layer is not dissected; else ``concepts`` (the top
        :data:`N_CONCEPTS`: ``name``, ``category``, ``iou``, best first), ``detector`` (its best IoU
        exceeds ``iou_threshold``), ``iou_threshold``, ``threshold`` (the unit's ``T_k``),
        ``suggestion`` (``label``, ``note``, ``source``, ``score``; detectors only), and, once
        computed, ``pictures``: per top image ``map`` and ``mask`` (PNG: the image, dimmed outside
        the unit's thresholded map, resp. outside the concept's mask), ``image`` (concept-data index),
        ``activation`` (map maximum), ``iou`` (of map and mask on this image), with
        ``picture_concept`` (``name``, ``category``) and ``picture_size``.
    """
    arrays = attachment.arrays.get(layer)
    if arrays is None or "iou" not in arrays:
        return {"missing": True}
    names, categories = _names(attachment)
    iou = np.asarray(arrays["iou"], dtype=np.float64)[unit]
    top = np.argsort(-iou, kind="stable")[:N_CONCEPTS]
    best = int(np.asarray(arrays["best_concept"])[unit]) if "best_concept" in arrays else -1
    out: dict[str, Any] = {
        "concepts": [{"name": names[k], "category": categories[k], "iou": float(iou[k])} for k in top],
        "detector": best >= 0, "iou_threshold": attachment.meta.get("iou_threshold"),
        "threshold": float(np.asarray(arrays["thresholds"])[unit]) if "thresholds" in arrays else None,
    }
    if best >= 0:
        score = float(np.asarray(arrays["best_iou"])[unit]) if "best_iou" in arrays else float(iou[best])
        out["suggestion"] = {"label": names[best], "note": suggestion_note(names[best], categories[best], score),
                             "source": "Network Dissection", "score": score, "score_name": "IoU",
                             "category": categories[best]}
    out.update(_pictures(arrays, unit, names, categories, min(int(nf_px), PICTURE_PX)))
    return out


def _names(attachment) -> tuple[list[str], list[str]]:
    names = [str(n) for n in attachment.meta.get("concepts", [])]
    categories = [str(c) for c in attachment.meta.get("categories", [])]
    if len(categories) != len(names):
        categories = ["concept"] * len(names)
    return names, categories


def _pictures(arrays, unit: int, names, categories, max_px: int) -> dict:
    rows = _data.unit_rows(arrays, "picture_units", unit)
    if not len(rows):
        return {}
    row = int(rows[0])
    concept = int(arrays["picture_concepts"][row])
    pictures = []
    for col, image_index in enumerate(np.asarray(arrays["picture_images"][row]).tolist()):
        if image_index < 0:
            continue
        rgb = np.asarray(arrays["picture_rgb"][row, col])
        shown, covered = np.asarray(arrays["picture_maps"][row, col], bool), np.asarray(arrays["picture_masks"][row, col], bool)
        union = int((shown | covered).sum())
        pictures.append({"map": _region_png(rgb, shown, max_px), "mask": _region_png(rgb, covered, max_px),
                         "image": int(image_index), "activation": float(arrays["picture_activations"][row, col]),
                         "iou": float((shown & covered).sum() / union) if union else 0.0,
                         "map_share": float(shown.mean()), "mask_share": float(covered.mean())})
    h, w = np.shape(arrays["picture_rgb"])[2:4]
    return {"pictures": pictures, "picture_size": [int(h), int(w)],
            "picture_concept": {"name": names[concept], "category": categories[concept]} if concept >= 0 else None}


def _region_png(rgb: np.ndarray, region: np.ndarray, max_px: int) -> bytes:
    """The image with everything outside ``region`` (a mask of any size, stretched evenly) dimmed."""
    h, w = rgb.shape[:2]
    rows = (np.arange(h) * region.shape[0]) // h
    cols = (np.arange(w) * region.shape[1]) // w
    inside = region[rows][:, cols]
    return _data.fit_png(rgb.astype(np.float32) / 255.0 * np.where(inside, 1.0, DIM)[..., None], max_px)


# ---------------------------------------------------------------------------------------------
# The chart of unique detectors per layer
# ---------------------------------------------------------------------------------------------
def detector_table(source) -> dict[str, dict[str, dict[str, int]]]:
    """``{layer: {category: {"detectors": units, "unique_concepts": concepts}}}`` of a dissection.

    ``source``: a :class:`~nsi_widgets.concepts.DissectionResult`, a ``"dissection"`` attachment or a
    :class:`~nsi_widgets.index.results.NeuronIndex` holding one (its first).
    """
    attachment = _as_attachment(source)
    _, categories = _names(attachment)
    table = {}
    for layer, arrays in attachment.arrays.items():
        best = np.asarray(arrays.get("best_concept", np.zeros(0, np.int64))).astype(np.int64)
        table[layer] = {}
        for category in dict.fromkeys(categories):
            hits = [k for k in best.tolist() if k >= 0 and categories[k] == category]
            table[layer][category] = {"detectors": len(hits), "unique_concepts": len(set(hits))}
    return table


def _as_attachment(source):
    if hasattr(source, "to_attachment") and not hasattr(source, "attachments"):
        return source.to_attachment()
    if getattr(source, "kind", None) == KIND:
        return source
    for attachment in (getattr(source, "attachments", None) or {}).values():
        if attachment.kind == KIND:
            return attachment
    raise _data.WidgetArgumentError(f"expected a dissection (DissectionResult, its attachment, or an index with one), "
                                    f"got {type(source).__name__}")


def detector_chart(source, *, count: str = "unique_concepts", title: str | None = None):
    """Bars per layer, stacked by category: unique detectors (concepts detected by at least one unit,
    as NetDissect counts them) or detector units (``count="detectors"``).

    Parameters
    ----------
    source : DissectionResult, Attachment or NeuronIndex
    count : {"unique_concepts", "detectors"}

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    if count not in ("unique_concepts", "detectors"):
        raise _data.choice_error("count", count, ("unique_concepts", "detectors"))
    table = detector_table(source)
    layers = list(table)
    categories = list(dict.fromkeys(c for per in table.values() for c in per))
    from .charts import PALETTE

    figure = go.Figure()
    for i, category in enumerate(categories):
        figure.add_bar(x=[html.escape(layer) for layer in layers], y=[table[layer][category][count] for layer in layers],
                       name=html.escape(category), marker_color=PALETTE[i % len(PALETTE)])
    what = "unique detectors (concepts)" if count == "unique_concepts" else "detector units"
    figure.update_layout(barmode="stack", title=html.escape(title) if title else f"Network Dissection: {what} per layer",
                         xaxis_title="layer", yaxis_title=what, legend_title="category", height=360,
                         margin=dict(l=50, r=20, t=50, b=40))
    return figure


register_card_view(CardView(KIND, "concepts", dissection_payload, kind=KIND, renderer="dissection", placement="card",
                            compute_label="Show top images", order=25))
register_category_column(CategoryColumn(KIND, "best_concept", lambda a: _names(a)[0], lambda a: _names(a)[1]))
