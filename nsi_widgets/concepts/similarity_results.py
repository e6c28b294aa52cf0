"""The result of comparing layers: a matrix (layers of model A x layers of model B), per concept too.

:class:`LayerSimilarity` holds the matrix, the layer names and their relative depths, and, for the
concept-based measures, the agreement of every pair of layers per concept and each concept's quality
in each layer. Saves to and loads from the safe archive format (no pickles); ``to_pandas()`` gives
one row per pair of layers, :meth:`~LayerSimilarity.concept_agreement` one row per concept of a pair.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.storage import read_archive, write_archive

FORMAT = "nsi-widgets-layer-similarity"
VERSION = 1
MEASURES = ("cka", "net2vec", "tcav")


def relative_depth(n: int) -> np.ndarray:
    """``(i + 1) / n`` for the ``i``-th of ``n`` layers: the last compared layer has depth 1."""
    return (np.arange(n) + 1.0) / max(1, n)


@dataclass
class LayerSimilarity:
    """Similarity of every layer of ``layers_a`` with every layer of ``layers_b`` (docs/methods.md section 8).

    Attributes
    ----------
    method : {"cka", "net2vec", "tcav"}
    matrix : ndarray (La, Lb) float64
        CKA; or the mean over concepts of ``per_concept`` where both layers' concept vectors reach
        ``quality_floor`` (NaN where no concept does).
    layers_a, layers_b : list of str
    per_concept : ndarray (La, Lb, K) or None
        Net2Vec: set IoU of the two layers' concept maps (``p > 0.5``) over the held-out images;
        TCAV: the correlation over the held-out images of the two layers' concept scores (the
        projections of the images' features on the CAVs).
    concepts, categories : list of str or None
    quality_a, quality_b : ndarray (La, K), (Lb, K) or None
        Each concept's quality in each layer (Net2Vec IoU, TCAV accuracy).
    quality_floor : float or None
    same_model : bool
        Whether both axes are layers of one model.
    meta : dict
    """

    method: str
    matrix: np.ndarray
    layers_a: list[str]
    layers_b: list[str]
    per_concept: np.ndarray | None = None
    concepts: list[str] | None = None
    categories: list[str] | None = None
    quality_a: np.ndarray | None = None
    quality_b: np.ndarray | None = None
    quality_floor: float | None = None
    same_model: bool = True
    meta: dict = field(default_factory=dict)

    @property
    def depth_a(self) -> np.ndarray:
        """Relative depth of each layer of ``layers_a`` (:func:`relative_depth`)."""
        return relative_depth(len(self.layers_a))

    @property
    def depth_b(self) -> np.ndarray:
        return relative_depth(len(self.layers_b))

    def _pair(self, layer_a, layer_b) -> tuple[int, int]:
        def find(layer, names, axis):
            if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and 0 <= layer < len(names):
                return int(layer)
            if layer in names:
                return names.index(layer)
            raise InputError(f"unknown layer {layer!r} of {axis}; layers: {names}")
        return find(layer_a, self.layers_a, "model A"), find(layer_b, self.layers_b, "model B")

    def passing(self) -> np.ndarray | None:
        """``(La, Lb, K)`` bool: the concept's vectors reach the floor in both layers (None without concepts)."""
        if self.per_concept is None:
            return None
        floor = -np.inf if self.quality_floor is None else self.quality_floor
        with np.errstate(invalid="ignore"):
            return (self.quality_a[:, None, :] >= floor) & (self.quality_b[None, :, :] >= floor)

    def concept_agreement(self, layer_a, layer_b):
        """One row per concept for a pair of layers: agreement, qualities, whether it counts in the mean."""
        import pandas as pd

        if self.per_concept is None:
            raise InputError(f"method {self.method!r} has no concepts; per-concept agreement exists for "
                             "'net2vec' and 'tcav'")
        i, j = self._pair(layer_a, layer_b)
        return pd.DataFrame({"concept": self.concepts, "category": self.categories,
                             "agreement": self.per_concept[i, j], "quality_a": self.quality_a[i],
                             "quality_b": self.quality_b[j], "counted": self.passing()[i, j]})

    def best_matches(self):
        """For each layer of A, the layer of B it is most similar to, with both relative depths."""
        import pandas as pd

        rows = []
        for i, layer in enumerate(self.layers_a):
            values = self.matrix[i]
            if np.all(np.isnan(values)):
                rows.append({"layer_a": layer, "depth_a": self.depth_a[i], "layer_b": None, "depth_b": np.nan,
                             "value": np.nan})
                continue
            j = int(np.nanargmax(values))
            rows.append({"layer_a": layer, "depth_a": float(self.depth_a[i]), "layer_b": self.layers_b[j],
                         "depth_b": float(self.depth_b[j]), "value": float(values[j])})
        return pd.DataFrame(rows)

    def to_pandas(self):
        """One row per pair of layers: names, relative depths, value (and concepts counted)."""
        import pandas as pd

        passing = self.passing()
        rows = []
        for i, a in enumerate(self.layers_a):
            for j, b in enumerate(self.layers_b):
                row = {"layer_a": a, "layer_b": b, "depth_a": float(self.depth_a[i]), "depth_b": float(self.depth_b[j]),
                       "value": float(self.matrix[i, j])}
                if passing is not None:
                    row["concepts_counted"] = int(passing[i, j].sum())
                rows.append(row)
        return pd.DataFrame(rows)

    def save(self, path) -> Path:
        """Write to ``path`` (``.npz`` appended when missing), atomically; no pickles."""
        path = Path(path)
        path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        arrays = {"matrix": self.matrix}
        for name in ("per_concept", "quality_a", "quality_b"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        manifest = {"format": FORMAT, "version": VERSION, "method": self.method, "layers_a": self.layers_a,
                    "layers_b": self.layers_b, "concepts": self.concepts, "categories": self.categories,
                    "quality_floor": self.quality_floor, "same_model": self.same_model, "meta": self.meta}
        return write_archive(path, manifest, arrays, what="layer similarity file")


def load_similarity(path) -> LayerSimilarity:
    """Read a :class:`LayerSimilarity` written by :meth:`LayerSimilarity.save`, checking its shapes."""
    with read_archive(path, FORMAT, VERSION, what="layer similarity file") as archive:
        m = archive.manifest
        try:
            la, lb = [str(n) for n in m["layers_a"]], [str(n) for n in m["layers_b"]]
            if m["method"] not in MEASURES:
                raise archive.error(f"unknown method {m['method']!r}")
            matrix = archive.array("matrix", dtype_kind="f", shape=(len(la), len(lb)))
            concepts = None if m["concepts"] is None else [str(c) for c in m["concepts"]]
            extra = {}
            if concepts is not None:
                k = len(concepts)
                extra = {"per_concept": archive.array("per_concept", dtype_kind="f", shape=(len(la), len(lb), k)),
                         "quality_a": archive.array("quality_a", dtype_kind="f", shape=(len(la), k)),
                         "quality_b": archive.array("quality_b", dtype_kind="f", shape=(len(lb), k))}
            floor = m["quality_floor"]
            return LayerSimilarity(str(m["method"]), matrix, la, lb, concepts=concepts,
                                   categories=None if m["categories"] is None else [str(c) for c in m["categories"]],
                                   quality_floor=None if floor is None else float(floor),
                                   same_model=bool(m["same_model"]), meta=dict(m.get("meta") or {}), **extra)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise archive.error(f"its manifest is malformed ({err})") from None
