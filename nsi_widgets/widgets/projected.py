"""Projections of a unit's top images back to pixels in the card (DeconvNet, guided backpropagation;
docs/methods.md section 10).

Shown for an index with a ``"projections"`` attachment (``TopProjections.to_attachment()``) or with a
projection compute handler (:func:`~nsi_widgets.widgets.on_demand.default_compute`). The view's own
section says how the projections were made and how they are coloured, and holds the button; its
payload is drawn by two other sections of the card as well: the top images get a toggle between the
crops and their projections (same ranks, same receptive-field windows), and the mean projection
stands beside the Neuron Feature.

Colours (``projection_to_rgb``): per image ``rgb = 0.5 + 0.5 p / max|p|``: grey 0.5 is zero, a
channel brighter than grey is positive, darker negative.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _data
from .views import CORE_OPTIONS, CardView, register_card_view

KIND = "projections"
COLOURS = "grey = 0; brighter than grey in a channel: positive, darker: negative (each image scaled to its largest |value|)"


def projections_payload(attachment, layer: str, unit: int, n_crops: int = CORE_OPTIONS["n_crops"],
                        crop_px: int = CORE_OPTIONS["crop_px"], nf_px: int = CORE_OPTIONS["nf_px"]) -> dict:
    """What the card shows of one unit's projections.

    Returns
    -------
    dict
        ``computed``; ``method``, ``weighting``, ``n_mean``, ``colours`` (the colour mapping in
        words) and, once computed: ``strip`` (PNG of the first ``n_crops`` colour-mapped projections
        side by side, each ``tile`` = [h, w] pixels), ``n`` (how many), ``images`` (their dataset
        indices: the unit's top images, best first), ``scales`` (each one's ``max|p|``), ``mean``
        (PNG of the mean projection, largest side ``nf_px``) and ``mean_scale``.
    """
    meta = attachment.meta or {}
    out: dict[str, Any] = {"computed": False, "method": str(meta.get("method", "")),
                           "weighting": str(meta.get("weighting", "")), "n_mean": meta.get("n_mean"),
                           "colours": COLOURS}
    arrays = attachment.arrays.get(layer) or {}
    rows = _data.unit_rows(arrays, "units", unit)
    if not len(rows):
        return out
    row = int(rows[0])
    indices = np.asarray(arrays["image_indices"][row])
    k = int(min(int(n_crops), int((indices >= 0).sum())))
    out.update(computed=True, n=k, images=[int(i) for i in indices[:k]],
               scales=np.asarray(arrays["scales"][row, :k], np.float32),
               mean=_data.fit_png(np.asarray(arrays["mean_image"][row]), nf_px),
               mean_scale=float(arrays["mean_scale"][row]))
    if k:
        out["strip"], size = _data.png_strip(np.asarray(arrays["images"][row, :k]), crop_px)
        out["tile"] = list(size)
    return out


register_card_view(CardView(KIND, "projections", projections_payload, kind=KIND, renderer="projections",
                            placement="card", compute_label="Project top images", order=22))
