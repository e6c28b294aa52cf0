"""Result containers: :class:`LayerIndex` (one layer) and :class:`NeuronIndex` (all layers).

These hold arrays only; they never run a model. The widgets read them. Their file form (one
versioned archive, :mod:`nsi_widgets.core.storage`) is written by :meth:`NeuronIndex.save` and read
by :func:`load_index`, both here, so that the containers and their format change together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import IndexFileError, InputError
from ..core.layered import LayerMapping
from ..core.receptive_field import ReceptiveField
from ..core.storage import read_archive, write_archive


@dataclass
class LayerIndex:
    """Everything indexed for one layer; ``C`` units (channels), ``N`` top images per unit.

    Attributes
    ----------
    name : str
        The layer's dotted name in ``model.named_modules()``.
    top_indices : ndarray, (C, N) int64
        Dataset indices of each unit's top images, best first (ties: smaller index first).
    top_activations : ndarray, (C, N) float32
        The map maximum of each top image, descending.
    top_positions : ndarray, (C, N, 2) int64
        ``(y, x)`` of that maximum in the layer's feature map (first in row-major order on ties).
    receptive_field : ReceptiveField
        Size, stride and padding per axis of one unit's input window.
    map_size : tuple of int
        ``(H, W)`` of the layer's feature map for the scanned input size.
    top_labels : ndarray, (C, N) int64
        Class of each top image, ``-1`` where the data is unlabelled.
    neuron_features : ndarray, (C, rf_h, rf_w, 3) float32 or None
        Neuron Features in RGB ``[0, 1]`` at the receptive field's full size.
    feature_coverage : ndarray, (C, rf_h, rf_w) float32 or None
        Fraction of the total weight for which each NF pixel lies inside the image.
    top_crops : ndarray, (C, K, h, w, 3) uint8 or None
        Thumbnails of the first ``K`` top crops (for the neuron card's mosaic).
    scores : dict of str to ndarray (C,) float32
        Per-unit selectivity indexes (``"color_selectivity"``, ``"class_selectivity"``, ...);
        NaN for dead units. Also readable as attributes: ``L.color_selectivity``.
    details : dict of str to ndarray
        Per-image arrays behind the scores, e.g. ``"gray_activations"`` (C, N).
    """

    name: str
    top_indices: np.ndarray
    top_activations: np.ndarray
    top_positions: np.ndarray
    receptive_field: ReceptiveField
    map_size: tuple[int, int]
    top_labels: np.ndarray
    neuron_features: np.ndarray | None = None
    feature_coverage: np.ndarray | None = None
    top_crops: np.ndarray | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    details: dict[str, np.ndarray] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: expose scores/details as attributes.
        if name.startswith("__"):
            raise AttributeError(name)
        for table in ("scores", "details"):
            values = self.__dict__.get(table, {})
            if name in values:
                return values[name]
        known = sorted(self.__dict__.get("scores", {})) + sorted(self.__dict__.get("details", {}))
        raise AttributeError(
            f"LayerIndex {self.__dict__.get('name')!r} has no attribute {name!r}; "
            f"computed indexes and details: {known or 'none (index_neurons(..., indexes=()) skipped them)'}"
        )

    @property
    def n_units(self) -> int:
        """Number of units (channels) ``C``."""
        return int(self.top_indices.shape[0])

    @property
    def top_n(self) -> int:
        """Number of top images kept per unit ``N``."""
        return int(self.top_indices.shape[1])

    @property
    def dead(self) -> np.ndarray:
        """(C,) bool: units whose top activations are all <= 0 (METHODS.md section 1)."""
        top = self.top_activations[:, 0] if self.top_n else np.zeros(self.n_units)
        return ~(top > 0)  # NaN counts as dead too

    @property
    def weights(self) -> np.ndarray:
        """(C, N) float32: ``w_j = a_j / a_1``, clipped at 0; zeros for dead units."""
        from .selectivity import top_weights

        return top_weights(self.top_activations).astype(np.float32)

    def __repr__(self) -> str:
        rf = self.receptive_field
        return (f"LayerIndex({self.name!r}, units={self.n_units}, top_n={self.top_n}, "
                f"rf={rf.size[0]}x{rf.size[1]}/{rf.stride[0]}, dead={int(self.dead.sum())}, "
                f"scores={sorted(self.scores)})")


@dataclass
class Attachment:
    """Results of another method attached to an index (dissection, synthesised images, ...).

    Saved in the index file, so the Explorer and the exported page show them. Plain data only:
    ``meta`` is JSON-able, ``arrays`` maps each layer to named NumPy arrays.

    Attributes
    ----------
    kind : str
        What produced it (``"dissection"``, ``"synthesis"``, ...); the reader of that kind knows the arrays.
    meta : dict
        Settings and anything JSON-able (e.g. concept names).
    arrays : dict of str to dict of str to ndarray
        Per layer, named arrays. Arrays whose first axis is the layer's units and that are listed in
        ``columns`` become per-unit columns of :meth:`NeuronIndex.to_pandas` and of the Explorer's grid.
    columns : dict of str to list of str
        Per layer, the names in ``arrays[layer]`` that are (C,) per-unit columns.
    """

    kind: str
    meta: dict = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)


class NeuronIndex(LayerMapping):
    """The index of several layers of one model over one dataset.

    ``idx[layer]`` is a :class:`LayerIndex`; ``idx.layers`` lists the layer names in scan order.

    Attributes
    ----------
    meta : dict
        Model name and fingerprint, number of images, input size, parameters of the run.
    class_names : list of str or None
        Names of the label values ``0 .. n_classes - 1``.
    class_parents : dict of str to str or None
        A class hierarchy as a child -> parent mapping of names (one level or more).
    data : sequence or None
        The dataset the index was computed on, when known (not saved); used to show crops.
    attachments : dict of str to Attachment
        Results of other methods on the same model (see :meth:`attach`), saved with the index.
    """

    _what = "index"

    def __init__(self, layers: dict[str, LayerIndex], meta: dict | None = None,
                 class_names: list[str] | None = None, class_parents: dict[str, str] | None = None,
                 data: Any = None, attachments: dict[str, Attachment] | None = None):
        self._layers = dict(layers)
        self.meta = dict(meta or {})
        self.class_names = list(class_names) if class_names is not None else None
        self.class_parents = dict(class_parents) if class_parents else None
        self.data = data
        self.attachments: dict[str, Attachment] = dict(attachments or {})

    def attach(self, name: str, attachment: Attachment, *, replace: bool = True) -> None:
        """Attach another method's results under ``name`` (saved with the index; shown by the Explorer).

        Raises
        ------
        InputError
            ``name`` is taken and ``replace`` is False, a layer is not in this index, or a per-unit
            column does not have one value per unit.
        """
        if not isinstance(attachment, Attachment):
            raise InputError(f"attach() takes an Attachment, got {type(attachment).__name__}; results of "
                             "other methods offer .to_attachment()")
        if name in self.attachments and not replace:
            raise InputError(f"an attachment named {name!r} exists; pass replace=True to replace it")
        for layer, arrays in attachment.arrays.items():
            if layer not in self._layers:
                raise InputError(f"the attachment has layer {layer!r}, which this index does not have "
                                 f"(indexed layers: {self.layers})")
            for column in attachment.columns.get(layer, []):
                value = arrays.get(column)
                if value is None or np.shape(value)[:1] != (self._layers[layer].n_units,) or np.ndim(value) != 1:
                    raise InputError(f"attachment column {column!r} of layer {layer!r} must have one value "
                                     f"per unit ({self._layers[layer].n_units})")
        self.attachments[name] = attachment

    @property
    def n_units(self) -> int:
        """Total number of units over all layers."""
        return sum(L.n_units for L in self._layers.values())

    @property
    def score_names(self) -> list[str]:
        """Names of the per-unit indexes present in every layer, in a stable order."""
        names: list[str] = []
        for L in self._layers.values():
            for n in L.scores:
                if n not in names:
                    names.append(n)
        return names

    def to_pandas(self):
        """One row per neuron: layer, unit, dead, top activation, each index, rf size.

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        frames = []
        for L in self._layers.values():
            cols = {
                "layer": np.full(L.n_units, L.name, dtype=object),
                "unit": np.arange(L.n_units),
                "dead": L.dead,
                "top_activation": L.top_activations[:, 0] if L.top_n else np.full(L.n_units, np.nan),
                "mean_top_activation": L.top_activations.mean(axis=1) if L.top_n else np.nan,
                "rf_size": np.full(L.n_units, L.receptive_field.size[0]),
            }
            for name, values in L.scores.items():
                cols[name] = values
            for name, attachment in self.attachments.items():
                for column in attachment.columns.get(L.name, []):
                    cols[f"{name}.{column}"] = attachment.arrays[L.name][column]
            frames.append(pd.DataFrame(cols))
        if not frames:
            return pd.DataFrame(columns=["layer", "unit", "dead", "top_activation"])
        return pd.concat(frames, ignore_index=True)

    def save(self, path) -> Path:
        """Write the index to ``path`` (a versioned ``.npz`` with a JSON manifest; no pickles).

        ``.npz`` is appended when missing. The write is atomic: a crash or a full disk leaves either
        the old file or the new one; a read-only file is refused
        (:class:`~nsi_widgets.core.errors.OutputError`), not replaced.

        Returns
        -------
        pathlib.Path
            The file written.
        """
        manifest, arrays = _to_archive(self)
        return write_archive(index_path(path), manifest, arrays, what="index")

    def summary(self) -> str:
        """A short text table: layers, units, dead units, and the mean of each index."""
        lines = [f"NeuronIndex of {self.meta.get('model_name', 'model')} over "
                 f"{self.meta.get('n_images', '?')} images, top_n={self.meta.get('top_n', '?')}"]
        for L in self._layers.values():
            parts = [f"{L.name:>20}: {L.n_units:5d} units, {int(L.dead.sum()):4d} dead, "
                     f"rf {L.receptive_field.size[0]}"]
            for name, v in L.scores.items():
                if np.isfinite(v).any():
                    parts.append(f"{name}={np.nanmean(v):.3f}")
            lines.append("  ".join(parts))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


# ---------------------------------------------------------------------------------------------
# File form (format version 1): ``manifest`` holds the format name and version, meta, class names
# and hierarchy, and per layer its name, receptive field, map size and the names of its arrays;
# every array is stored under ``L{i}/{field}``.
# ---------------------------------------------------------------------------------------------
FORMAT = "nsi-widgets-index"
FORMAT_VERSION = 1
_ARRAY_FIELDS = ("top_indices", "top_activations", "top_positions", "top_labels", "neuron_features",
                 "feature_coverage", "top_crops")


def index_path(path) -> Path:
    """The file an index saved to ``path`` lands in (``.npz`` appended when missing)."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _to_archive(index: NeuronIndex) -> tuple[dict, dict[str, np.ndarray]]:
    layers_manifest = []
    arrays: dict[str, np.ndarray] = {}
    for i, (name, L) in enumerate(index.items()):
        entry = {"name": name, "receptive_field": L.receptive_field.to_dict(), "map_size": list(L.map_size),
                 "arrays": [], "scores": list(L.scores), "details": list(L.details)}
        for field_name in _ARRAY_FIELDS:
            value = getattr(L, field_name)
            if value is not None:
                arrays[f"L{i}/{field_name}"] = value
                entry["arrays"].append(field_name)
        for j, value in enumerate(L.scores.values()):
            arrays[f"L{i}/score{j}"] = np.asarray(value, dtype=np.float32)
        for j, value in enumerate(L.details.values()):
            arrays[f"L{i}/detail{j}"] = np.asarray(value)
        layers_manifest.append(entry)
    attachments = []
    for a, (name, attachment) in enumerate(index.attachments.items()):
        entry = {"name": name, "kind": attachment.kind, "meta": _jsonable(attachment.meta),
                 "arrays": {layer: list(named) for layer, named in attachment.arrays.items()},
                 "columns": {layer: list(c) for layer, c in attachment.columns.items()}}
        for layer, named in attachment.arrays.items():
            i = index.layers.index(layer)
            for j, value in enumerate(named.values()):
                arrays[f"A{a}/L{i}/{j}"] = np.asarray(value)
        attachments.append(entry)
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "meta": _jsonable(index.meta),
                "class_names": index.class_names, "class_parents": index.class_parents,
                "layers": layers_manifest, "attachments": attachments}
    return manifest, arrays


def load_index(path, data=None) -> NeuronIndex:
    """Read an index written by :meth:`NeuronIndex.save`, checking it thoroughly first.

    Parameters
    ----------
    path : str or Path
        The file (``.npz`` may be left out).
    data : dataset, optional
        Attach the dataset the index was computed on (to show full crops again).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    IndexFileError
        (a ``ValueError``) the file is not an nsi-widgets index, is of a newer format version, or
        is damaged: its manifest and arrays disagree in names, shapes or dtypes.
    """
    path = Path(path)
    if not path.exists() and index_path(path).exists():
        path = index_path(path)
    with read_archive(path, FORMAT, FORMAT_VERSION, what="index") as archive:
        manifest = archive.manifest
        _check(archive, isinstance(manifest.get("layers"), list), "'layers' is not a list")
        layers = {}
        for i, entry in enumerate(manifest["layers"]):
            layer = _read_layer(archive, i, entry)
            _check(archive, layer.name not in layers, f"layer {layer.name!r} appears twice")
            layers[layer.name] = layer
        class_names = manifest.get("class_names")
        parents = manifest.get("class_parents")
        _check(archive, class_names is None or (isinstance(class_names, list)
                                               and all(isinstance(c, str) for c in class_names)),
               "'class_names' is not a list of names")
        _check(archive, parents is None or isinstance(parents, dict), "'class_parents' is not a mapping")
        meta = manifest.get("meta") or {}
        _check(archive, isinstance(meta, dict), "'meta' is not a mapping")
        attachments = _read_attachments(archive, list(layers))
    index = NeuronIndex(layers, meta=meta, class_names=class_names, class_parents=parents, data=data)
    for name, attachment in attachments.items():
        try:
            index.attach(name, attachment)
        except InputError as err:
            raise IndexFileError(f"{str(path)!r} is a damaged index: attachment {name!r}: {err}") from None
    return index


def _read_attachments(archive, layer_names: list[str]) -> dict[str, Attachment]:
    entries = archive.manifest.get("attachments", [])
    _check(archive, isinstance(entries, list), "'attachments' is not a list")
    out = {}
    for a, entry in enumerate(entries):
        try:
            name, kind, meta = str(entry["name"]), str(entry["kind"]), dict(entry.get("meta") or {})
            listed = {str(layer): [str(n) for n in names] for layer, names in dict(entry["arrays"]).items()}
            columns = {str(layer): [str(c) for c in cs] for layer, cs in dict(entry.get("columns") or {}).items()}
        except (KeyError, TypeError, ValueError):
            raise archive.error(f"attachment entry {a} is malformed") from None
        arrays = {}
        for layer, names in listed.items():
            _check(archive, layer in layer_names, f"attachment {name!r} names unknown layer {layer!r}")
            i = layer_names.index(layer)
            arrays[layer] = {n: archive.array(f"A{a}/L{i}/{j}") for j, n in enumerate(names)}
        out[name] = Attachment(kind, meta, arrays, columns)
    return out


def _check(archive, condition: bool, message: str) -> None:
    if not condition:
        raise archive.error(message)


def _read_layer(archive, i: int, entry) -> LayerIndex:
    """One layer's entry and arrays, each checked against the others' shapes."""
    _check(archive, isinstance(entry, dict) and isinstance(entry.get("name"), str),
           f"layer entry {i} has no name")
    name = entry["name"]
    try:
        rf = ReceptiveField.from_dict(entry["receptive_field"])
        map_size = tuple(int(v) for v in entry["map_size"])
        fields, scores, details = list(entry["arrays"]), list(entry["scores"]), list(entry["details"])
        ok = (len(rf.size) == len(rf.stride) == len(rf.padding) == 2 == len(map_size)
              and all(isinstance(v, int) and v >= 1 for v in rf.size + rf.stride)
              and all(isinstance(v, str) for v in scores + details))
    except (KeyError, TypeError, ValueError):
        ok = False
    _check(archive, ok, f"layer {name!r}: its receptive field, map size or array lists are malformed")
    for required in ("top_indices", "top_activations", "top_positions", "top_labels"):
        _check(archive, required in fields, f"layer {name!r} has no {required}")
    _check(archive, set(fields) <= set(_ARRAY_FIELDS), f"layer {name!r} lists unknown arrays")
    prefix = f"L{i}/"
    top = archive.array(prefix + "top_indices", dtype_kind="i", ndim=2)
    c, n = top.shape
    h, w = rf.size
    shapes = {"top_activations": ("f", (c, n)), "top_positions": ("i", (c, n, 2)), "top_labels": ("i", (c, n)),
              "neuron_features": ("f", (c, h, w, 3)), "feature_coverage": ("f", (c, h, w)),
              "top_crops": ("u", (c, None, None, None, 3))}
    values = {"top_indices": top}
    for field_name in fields:
        if field_name != "top_indices":
            kind, shape = shapes[field_name]
            values[field_name] = archive.array(prefix + field_name, dtype_kind=kind, shape=shape)
    score_values = {s: archive.array(f"{prefix}score{j}", dtype_kind="f", shape=(c,)) for j, s in enumerate(scores)}
    detail_values = {d: archive.array(f"{prefix}detail{j}") for j, d in enumerate(details)}
    for d, value in detail_values.items():
        _check(archive, value.ndim >= 1 and value.shape[0] == c, f"layer {name!r}: detail {d!r} is not per unit")
    return LayerIndex(name=name, receptive_field=rf, map_size=map_size, scores=score_values, details=detail_values,
                      top_indices=top, top_activations=values["top_activations"],
                      top_positions=values["top_positions"], top_labels=values["top_labels"],
                      neuron_features=values.get("neuron_features"),
                      feature_coverage=values.get("feature_coverage"), top_crops=values.get("top_crops"))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
