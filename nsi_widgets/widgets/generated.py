"""The card's "generated" view: PPGN samples of the unit in a generator's latent space (docs/methods.md section 10).

Shown for an index with a ``"generated"`` attachment (:mod:`nsi_widgets.synthesis.generated`) or with a
``generated`` compute handler (``default_compute(model, data, generator=nsi.zoo.load_generator("shapes"))``):
the button samples the unit shown with :func:`nsi_widgets.ppgn`, in the background with progress; the
result is attached to the index (saved with it, shown by the exported page).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _data
from .views import CORE_OPTIONS, CardView, register_card_view

KIND = "generated"


def generated_payload(attachment, layer: str, unit: int, crop_px: int = CORE_OPTIONS["crop_px"]) -> dict:
    """What the "generated" view shows of one unit.

    Returns
    -------
    dict
        ``computed`` (False until the unit has samples), ``recipe`` (a short text of the PPGN settings);
        once computed: ``strip`` (PNG of the ``n`` samples side by side, each ``tile`` = [h, w] pixels,
        largest side ``crop_px``), ``n``, ``values`` (float32, the unit's objective on each sample) and
        ``history`` (float32, the objective per step of the best sample).
    """
    meta = attachment.meta or {}
    keys = ("steps", "eps1", "eps2", "eps3", "lr", "objective", "seed")
    out: dict[str, Any] = {"computed": False,
                           "recipe": ", ".join(f"{k} {meta[k]}" for k in keys if k in meta)}
    arrays = attachment.arrays.get(layer) or {}
    rows = _data.unit_rows(arrays, "units", unit)
    if not len(rows):
        return out
    row = int(rows[0])
    images = np.asarray(arrays["images"][row])
    strip, size = _data.png_strip(images, crop_px)
    history = np.asarray(arrays["history"][row], np.float32)
    out.update(computed=True, n=int(len(images)), strip=strip, tile=list(size),
               values=np.asarray(arrays["values"][row], np.float32), history=history[np.isfinite(history)])
    return out


register_card_view(CardView(KIND, "generated", generated_payload, kind=KIND, renderer="generated",
                            placement="card", compute_label="Generate", order=32))
