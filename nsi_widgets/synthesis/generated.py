"""PPGN samples of one unit for the Explorer's card, computed on demand (docs/methods.md section 10).

:func:`make_generated_handler` makes an on-demand handler ``(index, model, data, layer, unit,
progress_callback) -> Attachment`` that samples the unit with :func:`~nsi_widgets.synthesis.ppgn` in a
generator's latent space and returns an update of the index's ``"generated"`` attachment holding that
unit only; :func:`merge_generated_attachments` merges it in (``idx.attach("generated", ...)``), where
the card's "generated" view and the exported page read it.

Attachment of kind ``"generated"``: ``meta`` holds the PPGN recipe (without the unit); per layer
``units`` (U,), ``images`` (U, n, H, W, 3) uint8 (the samples, RGB), ``values`` (U, n) float32 (the unit's
objective on each sample, its map maximum by default) and ``history`` (U, steps) float32 (the objective
per step of the unit's best sample).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.errors import InputError
from ..index.results import Attachment
from .attachment import to_uint8
from .ppgn import UNIT_OPTIONS, PPGNSamples, ppgn

ATTACHMENT_KIND = "generated"
"""The kind (and the index's attachment name) of PPGN samples shown in the card."""
_SETTINGS = ("steps", "eps1", "eps2", "eps3", "lr", "n", "seed", "objective", "prior", "clip", "latent_dim")


def samples_to_attachment(samples: PPGNSamples) -> Attachment:
    """Unit-conditional :class:`PPGNSamples` as a ``"generated"`` attachment (see the module docstring)."""
    if not samples.targets or not all(isinstance(t, tuple) for t in samples.targets):
        raise InputError("only unit targets (layer, unit) go into the card's 'generated' attachment")
    layers = {t[0] for t in samples.targets}
    if len(layers) != 1:
        raise InputError(f"samples of one layer expected, got {sorted(layers)}")
    units = np.array(sorted({t[1] for t in samples.targets}), np.int64)
    per_unit = np.array([t[1] for t in samples.targets])
    n = int(samples.recipe["n"])
    rows = [np.flatnonzero(per_unit == u) for u in units]
    images = np.stack([to_uint8(samples.images[r]) for r in rows])
    values = np.stack([samples.values[r] for r in rows]).astype(np.float32)
    history = np.stack([samples.history[:, r[int(np.argmax(samples.values[r]))]] for r in rows]).astype(np.float32)
    meta = {"version": 1, **{k: samples.recipe[k] for k in _SETTINGS if k in samples.recipe}}
    assert images.shape[1] == n
    return Attachment(ATTACHMENT_KIND, meta, {layers.pop(): {"units": units, "images": images, "values": values,
                                                             "history": history}}, {})


def merge_generated_attachments(current: Attachment | None, update: Attachment) -> Attachment:
    """Units of ``update`` replace the same units of ``current``; other units and layers are kept.

    Raises
    ------
    InputError
        Either is not a ``"generated"`` attachment, or they were made with other settings.
    """
    for attachment in (current, update):
        if attachment is not None and attachment.kind != ATTACHMENT_KIND:
            raise InputError(f"not a 'generated' attachment (kind {attachment.kind!r})")
    if current is None:
        return update
    if any(current.meta.get(k) != update.meta.get(k) for k in _SETTINGS):
        raise InputError("the update was sampled with other settings; recompute it or replace the attachment")
    arrays = {layer: dict(named) for layer, named in current.arrays.items()}
    for layer, new in update.arrays.items():
        old = arrays.get(layer, {"units": np.zeros(0, np.int64)})
        keep = ~np.isin(old["units"], new["units"])
        merged = {key: np.concatenate([old[key][keep], new[key]]) if key in old else new[key] for key in new}
        order = np.argsort(merged["units"], kind="stable")
        arrays[layer] = {key: value[order] for key, value in merged.items()}
    return Attachment(ATTACHMENT_KIND, dict(current.meta), arrays, {})


def make_generated_handler(generator, *, n: int = 4, seed: int = 0, preprocess: Callable | None = None, **ppgn_options):
    """An on-demand handler ``(index, model, data, layer, unit, progress_callback) -> Attachment``.

    It samples ``n`` images of the unit with :func:`~nsi_widgets.synthesis.ppgn` (``generator``:
    ``nsi.zoo.load_generator(...)`` or a generator module, with ``ppgn_options`` such as ``steps``,
    ``prior``, ``eps1``, ``lr``, ``objective``; default :data:`~nsi_widgets.synthesis.ppgn.UNIT_OPTIONS`) and returns that unit's ``"generated"`` update; ``data`` is not
    used (the generator replaces the dataset). ``progress_callback(done, total)`` may be None.
    """

    def handler(index, model, data, layer, unit, progress_callback=None) -> Attachment:
        if index is not None and layer not in index:
            raise InputError(f"layer {layer!r} is not in the index (indexed: {list(index)})")
        samples = ppgn(model, generator, (layer, int(unit)), n=n, seed=seed, preprocess=preprocess,
                       progress=progress_callback or False, **{**UNIT_OPTIONS, **ppgn_options})
        return samples_to_attachment(samples)

    handler.__doc__ = "PPGN samples of one unit as a 'generated' attachment update (make_generated_handler)."
    return handler
