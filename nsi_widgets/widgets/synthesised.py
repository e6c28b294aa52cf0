"""The card's "synthesised" view: a unit's activation-maximisation image and its facets (docs/methods.md section 9).

Shown for an index with a ``"synthesis"`` attachment (:mod:`nsi_widgets.synthesis.attachment`) or with
a synthesis compute handler (:func:`~nsi_widgets.widgets.on_demand.default_compute`): the button runs
:func:`nsi_widgets.synthesis.synthesise_unit` for the unit shown, in the background with progress; the
result is attached to the index (saved with it, shown by the exported page).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _data
from .views import CORE_OPTIONS, CardView, register_card_view

KIND = "synthesis"
#: member thumbnails sent per facet
MAX_MEMBERS = 12


def synthesis_payload(attachment, layer: str, unit: int, index=None, crop_px: int = CORE_OPTIONS["crop_px"],
                      nf_px: int = CORE_OPTIONS["nf_px"]) -> dict:
    """What the "synthesised" view shows of one unit.

    Returns
    -------
    dict
        ``computed`` (False until the unit has an image or facets); ``am``: ``png`` (the
        activation-maximisation image, largest side ``nf_px``), ``size``, ``activation`` (the
        objective on it), ``history`` (float32, the objective per step), ``recipe`` (a short text of
        its settings); ``facets``: per facet ``mean`` and ``image`` (PNG, largest side ``crop_px``),
        ``activation``, ``size`` (members), ``ranks`` and ``images`` (the members' ranks in the unit's
        top list and dataset indices, best first), ``thumbs`` (one PNG strip of the members' top crops
        from the index, where it has them: ``thumb_ranks`` lists which, ``thumb_size`` their size).
    """
    arrays = attachment.arrays.get(layer) or {}
    out: dict[str, Any] = {"computed": False, "am": None, "facets": []}
    recipes = ((attachment.meta or {}).get("layers") or {}).get(layer) or {}
    rows = _data.unit_rows(arrays, "am_units", unit)
    if len(rows):
        row = int(rows[0])
        image = np.asarray(arrays["am_images"][row])
        history = np.asarray(arrays["am_history"][row], dtype=np.float32)
        out["am"] = {"png": _data.fit_png(image, nf_px), "size": [int(image.shape[0]), int(image.shape[1])],
                     "activation": float(arrays["am_activations"][row]), "history": history[np.isfinite(history)],
                     "recipe": _recipe_text(recipes.get("visualize"))}
        out["computed"] = True
    facet_rows = _data.unit_rows(arrays, "facet_units", unit)
    order = facet_rows[np.argsort(np.asarray(arrays["facet_numbers"])[facet_rows], kind="stable")] if len(facet_rows) else []
    crops = _top_crops(index, layer, unit)
    for row in order:
        size = int(arrays["facet_sizes"][row])
        ranks = [int(r) for r in np.asarray(arrays["facet_member_ranks"][row, :size])]
        facet = {"number": int(arrays["facet_numbers"][row]), "size": size,
                 "mean": _data.fit_png(np.asarray(arrays["facet_mean_images"][row]), crop_px),
                 "image": _data.fit_png(np.asarray(arrays["facet_images"][row]), crop_px),
                 "activation": float(arrays["facet_activations"][row]), "ranks": ranks,
                 "images": [int(i) for i in np.asarray(arrays["facet_members"][row, :size])]}
        facet.update(_member_thumbs(crops, ranks, crop_px))
        out["facets"].append(facet)
        out["computed"] = True
    if out["facets"]:
        out["facet_recipe"] = _recipe_text(recipes.get("facets"))
    return out


def _top_crops(index, layer: str, unit: int) -> np.ndarray | None:
    try:
        crops = index[layer].top_crops if index is not None else None
    except KeyError:
        return None
    if crops is None or np.ndim(crops) != 5:
        return None
    return np.asarray(crops[unit])


def _member_thumbs(crops: np.ndarray | None, ranks: list[int], crop_px: int) -> dict:
    """The members' top crops (those the index keeps) as one horizontal PNG strip."""
    if crops is None:
        return {"thumbs": b"", "thumb_ranks": [], "thumb_size": []}
    have = [r for r in ranks if 0 <= r < crops.shape[0]][:MAX_MEMBERS]
    if not have:
        return {"thumbs": b"", "thumb_ranks": [], "thumb_size": []}
    strip, size = _data.png_strip(crops[have], max(16, crop_px // 2))
    return {"thumbs": strip, "thumb_ranks": have, "thumb_size": list(size)}


def _recipe_text(recipe) -> str:
    """A one-line summary of a recipe's main settings (the full recipe stays in the attachment's meta)."""
    if not isinstance(recipe, dict):
        return ""
    keys = ("objective", "steps", "param", "seed", "k", "code_layer")
    return ", ".join(f"{k} {recipe[k]}" for k in keys if k in recipe and isinstance(recipe[k], (str, int, float)))


register_card_view(CardView(KIND, "synthesised", synthesis_payload, kind=KIND, renderer="synthesis",
                            placement="card", compute_label="Synthesise", order=30))
