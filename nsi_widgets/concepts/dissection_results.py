"""Results of Network Dissection: per layer IoU of every unit with every concept, thresholds, labels.

:class:`DissectionResult` is indexed by layer name (a :class:`LayerDissection` each); it saves to and
loads from the safe archive format (no pickles), becomes a pandas table, and attaches to a
:class:`~nsi_widgets.index.results.NeuronIndex` of the same model (``idx.attach("dissection",
result.to_attachment())``) so that the Explorer and ``idx.to_pandas()`` show each unit's concept.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.layered import LayerMapping
from ..core.storage import read_archive, write_archive

FORMAT = "nsi-widgets-dissection"
VERSION = 1
_ARRAYS = ("iou", "thresholds", "best_concept", "best_iou", "intersection", "unit_pixels", "concept_pixels",
           "above_share")


@dataclass
class LayerDissection:
    """Network Dissection of one layer (docs/methods.md section 7); ``C`` units, ``K`` concepts.

    Attributes
    ----------
    name : str
    iou : ndarray (C, K) float32
        Set IoU over the dataset of each unit's thresholded, upsampled map with each concept's masks.
    thresholds : ndarray (C,) float64
        Each unit's ``T_k`` (float64, exactly the value the maps were compared with): the top ``quantile`` of its activations over all positions of all images.
    concepts, categories : list of str (K,)
    best_concept : ndarray (C,) int64
        Index into ``concepts`` of the unit's best concept, ``-1`` where none passes ``iou_threshold``.
    best_iou : ndarray (C,) float32
        The unit's largest IoU (whether or not it passes the threshold).
    intersection, unit_pixels, concept_pixels : ndarray (C, K) int64
        The tallies behind ``iou``: ``iou = intersection / (unit_pixels + concept_pixels - intersection)``.
    above_share : ndarray (C,) float64
        The share of all activation positions above the threshold (``quantile`` when the threshold is
        exact and there are no ties; the measure of a sampled threshold's error).
    quantile_mode : str
        ``"exact"`` or ``"sampled"`` (with ``sample_rate``, ``quantile_error_bound``).
    """

    name: str
    iou: np.ndarray
    thresholds: np.ndarray
    concepts: list[str]
    categories: list[str]
    best_concept: np.ndarray
    best_iou: np.ndarray
    intersection: np.ndarray
    unit_pixels: np.ndarray
    concept_pixels: np.ndarray
    above_share: np.ndarray
    quantile_mode: str = "exact"
    sample_rate: float = 1.0
    quantile_error_bound: float = 0.0

    @property
    def n_units(self) -> int:
        return int(self.iou.shape[0])

    @property
    def best_concept_names(self) -> list[str | None]:
        """The best concept's name per unit, None where it is no detector."""
        return [self.concepts[k] if k >= 0 else None for k in self.best_concept.tolist()]

    def detectors(self) -> dict[str, dict[str, int]]:
        """Per category: the number of detector units and of unique concepts they detect."""
        out: dict[str, dict[str, int]] = {}
        for category in dict.fromkeys(self.categories):
            ks = {k for k in self.best_concept.tolist() if k >= 0 and self.categories[k] == category}
            units = sum(1 for k in self.best_concept.tolist() if k >= 0 and self.categories[k] == category)
            out[category] = {"detectors": units, "unique_concepts": len(ks)}
        return out

    def top_concepts(self, unit: int, n: int = 5) -> list[tuple[str, str, float]]:
        """The unit's ``n`` best concepts: ``(concept, category, iou)``, best first."""
        if not 0 <= int(unit) < self.n_units:
            raise InputError(f"unit {unit} is not in layer {self.name!r} (0..{self.n_units - 1})")
        order = np.argsort(-self.iou[int(unit)], kind="stable")[:n]
        return [(self.concepts[k], self.categories[k], float(self.iou[int(unit), k])) for k in order]


class DissectionResult(LayerMapping):
    """Network Dissection of several layers; ``result[layer]`` is a :class:`LayerDissection`.

    Attributes
    ----------
    meta : dict
        Settings (quantile, iou_threshold, union convention, model fingerprint, number of images, ...).
    """

    _what = "dissection"

    def __init__(self, layers: dict[str, LayerDissection], meta: dict | None = None):
        self._layers = dict(layers)
        self.meta = dict(meta or {})


    def to_pandas(self):
        """One row per unit: layer, unit, best concept, its category and IoU, detector or not, threshold."""
        import pandas as pd

        rows = []
        for L in self._layers.values():
            for unit in range(L.n_units):
                k = int(np.argmax(L.iou[unit])) if L.iou.shape[1] else -1
                rows.append({"layer": L.name, "unit": unit, "concept": L.concepts[k] if k >= 0 else None,
                             "category": L.categories[k] if k >= 0 else None, "iou": float(L.best_iou[unit]),
                             "detector": bool(L.best_concept[unit] >= 0), "threshold": float(L.thresholds[unit])})
        return pd.DataFrame(rows)

    def summary(self):
        """Detectors and unique concepts per layer and category (a DataFrame)."""
        import pandas as pd

        rows = [{"layer": L.name, "category": category, **counts}
                for L in self._layers.values() for category, counts in L.detectors().items()]
        return pd.DataFrame(rows)

    def to_attachment(self):
        """This result as an :class:`~nsi_widgets.index.results.Attachment` (``idx.attach("dissection", ...)``)."""
        from ..index.results import Attachment

        arrays = {name: {"iou": L.iou, "thresholds": L.thresholds, "best_concept": L.best_concept,
                         "best_iou": L.best_iou} for name, L in self._layers.items()}
        first = next(iter(self._layers.values()))
        meta = dict(self.meta, concepts=list(first.concepts), categories=list(first.categories))
        return Attachment("dissection", meta, arrays, {name: ["best_iou", "best_concept"] for name in self._layers})

    def save(self, path) -> Path:
        """Write to ``path`` (``.npz`` appended when missing), atomically; no pickles."""
        path = Path(path)
        path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        layers, arrays = [], {}
        for i, L in enumerate(self._layers.values()):
            layers.append({"name": L.name, "concepts": L.concepts, "categories": L.categories,
                           "quantile_mode": L.quantile_mode, "sample_rate": L.sample_rate,
                           "quantile_error_bound": L.quantile_error_bound})
            for a in _ARRAYS:
                arrays[f"L{i}/{a}"] = getattr(L, a)
        return write_archive(path, {"format": FORMAT, "version": VERSION, "meta": self.meta, "layers": layers},
                             arrays, what="dissection file")


def load_dissection(path) -> DissectionResult:
    """Read a :class:`DissectionResult` written by :meth:`DissectionResult.save`, checking its shapes."""
    with read_archive(path, FORMAT, VERSION, what="dissection file") as archive:
        layers = {}
        try:
            entries = list(archive.manifest["layers"])
            for i, entry in enumerate(entries):
                concepts, categories = list(entry["concepts"]), list(entry["categories"])
                iou = archive.array(f"L{i}/iou", dtype_kind="f", ndim=2)
                c, k = iou.shape
                if k != len(concepts) or len(categories) != k:
                    raise archive.error(f"layer {entry['name']!r}: {k} IoU columns for {len(concepts)} concepts")
                shapes = {"thresholds": ("f", (c,)), "best_concept": ("i", (c,)), "best_iou": ("f", (c,)),
                          "intersection": ("i", (c, k)), "unit_pixels": ("i", (c, k)),
                          "concept_pixels": ("i", (c, k)), "above_share": ("f", (c,))}
                values = {a: archive.array(f"L{i}/{a}", dtype_kind=kind, shape=shape)
                          for a, (kind, shape) in shapes.items()}
                layers[str(entry["name"])] = LayerDissection(
                    str(entry["name"]), iou, concepts=concepts, categories=categories,
                    quantile_mode=str(entry["quantile_mode"]), sample_rate=float(entry["sample_rate"]),
                    quantile_error_bound=float(entry["quantile_error_bound"]), **values)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise archive.error(f"its manifest is malformed ({err})") from None
        return DissectionResult(layers, dict(archive.manifest.get("meta") or {}))


def detector_counts(result: DissectionResult) -> dict[str, dict[str, int]]:
    """``{layer: {category: detectors}}`` (for charts of unique detectors per layer)."""
    return {name: {c: v["detectors"] for c, v in L.detectors().items()} for name, L in result.items()}

