"""The index attachment of synthesised images: what the Explorer's card shows and the index file keeps.

One attachment, named :data:`ATTACHMENT_NAME` (``"synthesis"``) in ``index.attachments``, of kind
``"synthesis"``, holds per layer the units computed so far. Images are stored as uint8 (what the
card shows; reading them back gives multiples of 1/255). Arrays of one layer (``M`` units with an
activation-maximisation image, ``F`` facets over all units):

==========================  =============================  ============================================
name                        shape, dtype                   meaning
==========================  =============================  ============================================
``am_units``                (M,) int64, ascending          the units
``am_images``               (M, H, W, 3) uint8             activation-maximisation image of each
``am_activations``          (M,) float32                   the objective on the final image
``am_history``              (M, S) float32                 objective per step (NaN-padded to the longest)
``facet_units``             (F,) int64                     unit of each facet (grouped, ascending)
``facet_numbers``           (F,) int64                     0 .. k-1 within its unit
``facet_sizes``             (F,) int64                     number of member images
``facet_members``           (F, P) int64                   dataset indices of the members, best first, -1 padded
``facet_member_ranks``      (F, P) int64                   their ranks in the unit's top list, -1 padded
``facet_mean_images``       (F, H', W', 3) uint8           mean image of the members
``facet_images``            (F, H', W', 3) uint8           the facet's visualisation
``facet_activations``       (F,) float32                   the objective on the visualisation
``am_activation`` (column)  (C,) float32                   per unit, NaN where not computed
``n_facets`` (column)       (C,) float32                   per unit, NaN where not computed
==========================  =============================  ============================================

``meta = {"version": 1, "layers": {layer: {"visualize": recipe, "facets": recipe}}}`` holds the
recipes (every setting and the seed) of the last computation of each part.
:func:`merge` combines attachments (later ones replace the units they hold).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError
from ..index.results import Attachment

ATTACHMENT_NAME = "synthesis"
"""Name of the attachment in ``NeuronIndex.attachments``."""
KIND = "synthesis"
VERSION = 1
COLUMNS = ("am_activation", "n_facets")
_AM = ("am_units", "am_images", "am_activations", "am_history")
_FACETS = ("facet_units", "facet_numbers", "facet_sizes", "facet_members", "facet_member_ranks",
           "facet_mean_images", "facet_images", "facet_activations")


def to_uint8(images: np.ndarray) -> np.ndarray:
    """RGB in ``[0, 1]`` to uint8 (rounded)."""
    return np.round(np.clip(np.asarray(images, dtype=np.float64), 0, 1) * 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 to float32 RGB in ``[0, 1]``."""
    return np.asarray(images, dtype=np.float32) / 255.0


@dataclass
class AmRecord:
    """One unit's activation-maximisation image (float RGB) and numbers."""

    image: np.ndarray
    activation: float
    history: np.ndarray


@dataclass
class FacetRecord:
    """One facet of one unit."""

    members: np.ndarray
    member_ranks: np.ndarray
    mean_image: np.ndarray
    image: np.ndarray
    activation: float


@dataclass
class LayerEntries:
    """Decoded contents of one layer: per unit, its AM record and its list of facets."""

    n_units: int
    am: dict[int, AmRecord] = field(default_factory=dict)
    facets: dict[int, list[FacetRecord]] = field(default_factory=dict)


def encode(layers: dict[str, LayerEntries], recipes: dict[str, dict]) -> Attachment:
    """Build the attachment from decoded entries and ``{layer: {"visualize": ..., "facets": ...}}``."""
    arrays, columns = {}, {}
    for layer, entries in layers.items():
        arrays[layer] = {**_encode_am(entries), **_encode_facets(entries)}
        am_column = np.full(entries.n_units, np.nan, dtype=np.float32)
        for unit, record in entries.am.items():
            am_column[unit] = record.activation
        facet_column = np.full(entries.n_units, np.nan, dtype=np.float32)
        for unit, facets in entries.facets.items():
            facet_column[unit] = len(facets)
        arrays[layer]["am_activation"] = am_column
        arrays[layer]["n_facets"] = facet_column
        columns[layer] = list(COLUMNS)
    meta = {"version": VERSION, "layers": copy.deepcopy(recipes)}
    return Attachment(KIND, meta, arrays, columns)


def _encode_am(entries: LayerEntries) -> dict[str, np.ndarray]:
    if not entries.am:
        return {}
    units = sorted(entries.am)
    records = [entries.am[u] for u in units]
    _same_shape([r.image for r in records], "activation-maximisation images")
    longest = max(len(r.history) for r in records)
    history = np.full((len(units), longest), np.nan, dtype=np.float32)
    for row, r in enumerate(records):
        history[row, : len(r.history)] = r.history
    return {"am_units": np.asarray(units, dtype=np.int64),
            "am_images": to_uint8(np.stack([r.image for r in records])),
            "am_activations": np.asarray([r.activation for r in records], dtype=np.float32),
            "am_history": history}


def _encode_facets(entries: LayerEntries) -> dict[str, np.ndarray]:
    rows = [(u, i, f) for u in sorted(entries.facets) for i, f in enumerate(entries.facets[u])]
    if not rows:
        return {}
    facets = [f for _, _, f in rows]
    _same_shape([f.image for f in facets] + [f.mean_image for f in facets], "facet images")
    width = max(len(f.members) for f in facets)
    members = np.full((len(rows), width), -1, dtype=np.int64)
    ranks = np.full((len(rows), width), -1, dtype=np.int64)
    for row, f in enumerate(facets):
        members[row, : len(f.members)] = f.members
        ranks[row, : len(f.member_ranks)] = f.member_ranks
    return {"facet_units": np.asarray([u for u, _, _ in rows], dtype=np.int64),
            "facet_numbers": np.asarray([i for _, i, _ in rows], dtype=np.int64),
            "facet_sizes": np.asarray([len(f.members) for f in facets], dtype=np.int64),
            "facet_members": members, "facet_member_ranks": ranks,
            "facet_mean_images": to_uint8(np.stack([f.mean_image for f in facets])),
            "facet_images": to_uint8(np.stack([f.image for f in facets])),
            "facet_activations": np.asarray([f.activation for f in facets], dtype=np.float32)}


def _same_shape(images: list[np.ndarray], what: str) -> None:
    shapes = {np.shape(im) for im in images}
    if len(shapes) > 1:
        raise InputError(f"{what} of one layer must all have one size to be stored together, got {sorted(shapes)}; "
                         "compute them with the same image_size")


def decode(attachment: Attachment) -> tuple[dict[str, LayerEntries], dict[str, dict]]:
    """The entries and recipes of a ``"synthesis"`` attachment (inverse of :func:`encode`)."""
    if not isinstance(attachment, Attachment) or attachment.kind != KIND:
        kind = getattr(attachment, "kind", type(attachment).__name__)
        raise InputError(f"expected an attachment of kind {KIND!r}, got {kind!r}")
    version = attachment.meta.get("version")
    if version != VERSION:
        raise InputError(f"synthesis attachment version {version!r} is not supported (this version reads {VERSION})")
    layers = {}
    for layer, named in attachment.arrays.items():
        n_units = int(np.shape(named["am_activation"])[0])
        entries = LayerEntries(n_units)
        if "am_units" in named:
            for row, unit in enumerate(named["am_units"]):
                history = np.asarray(named["am_history"][row], dtype=np.float32)
                entries.am[int(unit)] = AmRecord(from_uint8(named["am_images"][row]),
                                                 float(named["am_activations"][row]), history[~np.isnan(history)])
        if "facet_units" in named:
            for row, unit in enumerate(named["facet_units"]):
                size = int(named["facet_sizes"][row])
                record = FacetRecord(np.asarray(named["facet_members"][row, :size], dtype=np.int64),
                                     np.asarray(named["facet_member_ranks"][row, :size], dtype=np.int64),
                                     from_uint8(named["facet_mean_images"][row]),
                                     from_uint8(named["facet_images"][row]),
                                     float(named["facet_activations"][row]))
                entries.facets.setdefault(int(unit), []).append(record)
        layers[layer] = entries
    return layers, copy.deepcopy(dict(attachment.meta.get("layers") or {}))


def merge(*attachments: Attachment | None) -> Attachment:
    """Combine ``"synthesis"`` attachments; later ones replace the units (and recipes) they hold.

    None entries are skipped (e.g. an index without a synthesis attachment yet).
    """
    layers: dict[str, LayerEntries] = {}
    recipes: dict[str, dict] = {}
    for attachment in attachments:
        if attachment is None:
            continue
        new_layers, new_recipes = decode(attachment)
        for layer, entries in new_layers.items():
            current = layers.setdefault(layer, LayerEntries(entries.n_units))
            if current.n_units != entries.n_units:
                raise InputError(f"layer {layer!r} has {current.n_units} units in one attachment and "
                                 f"{entries.n_units} in another")
            current.am.update(entries.am)
            current.facets.update(entries.facets)
        for layer, parts in new_recipes.items():
            recipes.setdefault(layer, {}).update(parts)
    return encode(layers, recipes)
