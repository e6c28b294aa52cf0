"""Results of concept vectors (Net2Vec, TCAV): per layer a vector over the units for every concept.

:class:`ConceptVectors` is one layer's (``.vectors`` (K, D), ``.concepts``, ``.quality``);
:class:`ConceptVectorSet` several layers' of one model. Both save to and load from the safe archive
format (no pickles), become pandas tables, and attach to a
:class:`~nsi_widgets.index.results.NeuronIndex` of the same model (``idx.attach("net2vec",
cv.to_attachment())``): the attachment holds every unit's weight for every concept (``weights``
(C, K)), so that a view can list, for a concept, the units with the largest weights, and per-unit
columns ``top_concept`` / ``top_weight`` (the concept in which the unit weighs most, relative to the
concept's largest weight).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.layered import LayerMapping
from ..core.storage import read_archive, write_archive

FORMAT = "nsi-widgets-concept-vectors"
VERSION = 1
METHODS = ("net2vec", "tcav")


@dataclass
class ConceptVectors:
    """Concept vectors of one layer (docs/methods.md section 8); ``K`` concepts, ``C`` units.

    Attributes
    ----------
    layer : str
    method : {"net2vec", "tcav"}
    concepts, categories : list of str (K,)
    vectors : ndarray (K, D) float32
        Net2Vec: the probe's weight per channel (D = C). TCAV: the unit-length CAV, pointing to the
        concept, over the features (D = C for pooled features, C * h * w flattened).
    bias : ndarray (K,) float64
        The probe's or the classifier's bias.
    quality : ndarray (K,) float64
        Net2Vec: set IoU of ``p > 0.5`` with the masks on held-out images. TCAV: the classifier's
        accuracy on its held-out 33 %.
    details : dict of str to ndarray
        Net2Vec: ``iou`` (K,), ``best_unit`` (K,) and ``best_unit_iou`` (K,) (the baseline: the best
        single unit's dissection IoU on the same held-out images), ``alpha`` (K,), ``thresholds`` (C,).
        TCAV: ``accuracy`` (K,), ``n_positive`` (K,) concept images used.
    meta : dict
        Settings (``n_units``, features, binarise, numbers of images, ...).
    """

    layer: str
    method: str
    concepts: list[str]
    categories: list[str]
    vectors: np.ndarray
    bias: np.ndarray
    quality: np.ndarray
    details: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meta.setdefault("n_units", int(self.vectors.shape[1]))

    @property
    def n_units(self) -> int:
        return int(self.meta["n_units"])

    @property
    def iou(self) -> np.ndarray:
        """Net2Vec: held-out IoU per concept (K,)."""
        return self._detail("iou", "net2vec")

    @property
    def accuracy(self) -> np.ndarray:
        """TCAV: held-out accuracy of each concept's classifier (K,)."""
        return self._detail("accuracy", "tcav")

    def _detail(self, name: str, method: str) -> np.ndarray:
        if name not in self.details:
            raise AttributeError(f"{name!r} belongs to {method} concept vectors; these are {self.method}'s")
        return self.details[name]

    @property
    def unit_weights(self) -> np.ndarray:
        """``(K, C)``: each unit's weight in each concept's vector (flattened CAVs summed over positions)."""
        if self.vectors.shape[1] == self.n_units:
            return self.vectors
        return self.vectors.reshape(self.vectors.shape[0], self.n_units, -1).sum(axis=2)

    def concept_index(self, concept) -> int:
        if isinstance(concept, (int, np.integer)) and not isinstance(concept, bool):
            if 0 <= int(concept) < len(self.concepts):
                return int(concept)
        elif concept in self.concepts:
            return self.concepts.index(concept)
        raise InputError(f"unknown concept {concept!r}; concepts: {', '.join(self.concepts[:20])}"
                         f"{' ...' if len(self.concepts) > 20 else ''}")

    def top_units(self, concept, n: int = 5) -> list[tuple[int, float]]:
        """The ``n`` units with the largest weights in ``concept``'s vector: ``(unit, weight)``, largest first."""
        weights = self.unit_weights[self.concept_index(concept)]
        order = np.argsort(-weights, kind="stable")[:n]
        return [(int(u), float(weights[u])) for u in order]

    def to_pandas(self):
        """One row per concept: its category, quality, the three largest-weighted units, method details."""
        import pandas as pd

        rows = []
        for k, concept in enumerate(self.concepts):
            row = {"layer": self.layer, "method": self.method, "concept": concept, "category": self.categories[k],
                   "quality": float(self.quality[k]), "top_units": [u for u, _ in self.top_units(k, 3)]}
            for name, values in self.details.items():
                if values.shape == (len(self.concepts),):
                    row[name] = values[k].item()
            if self.method == "net2vec":
                row["beats_best_unit"] = bool(self.details["iou"][k] > self.details["best_unit_iou"][k])
            rows.append(row)
        return pd.DataFrame(rows)

    def to_attachment(self):
        """This layer's vectors as an :class:`~nsi_widgets.index.results.Attachment` (see the module)."""
        return ConceptVectorSet({self.layer: self}).to_attachment()

    def save(self, path) -> Path:
        """Write to ``path`` (``.npz`` appended when missing), atomically; no pickles."""
        return ConceptVectorSet({self.layer: self})._save(path, "layer")


def _attachment_arrays(cv: ConceptVectors) -> dict[str, np.ndarray]:
    weights = cv.unit_weights.astype(np.float32)                       # (K, C)
    scale = np.abs(weights).max(axis=1, keepdims=True)
    relative = np.divide(weights, scale, out=np.zeros_like(weights), where=scale > 0)
    top = relative.argmax(axis=0) if len(cv.concepts) else np.zeros(cv.n_units, np.int64)
    return {"weights": weights.T.copy(), "top_concept": top.astype(np.int64),
            "top_weight": relative[top, np.arange(cv.n_units)].astype(np.float32),
            "vectors": cv.vectors, "bias": cv.bias, "quality": cv.quality,
            **{f"details/{name}": value for name, value in cv.details.items()}}


class ConceptVectorSet(LayerMapping):
    """Concept vectors of several layers of one model; ``result[layer]`` is a :class:`ConceptVectors`."""

    _what = "set of concept vectors"

    def __init__(self, layers: dict[str, ConceptVectors], meta: dict | None = None):
        self._layers = dict(layers)
        self.meta = dict(meta or {})

    def quality(self) -> np.ndarray:
        """``(L, K)``: every concept's quality in every layer (the curve of each concept through depth)."""
        return np.stack([cv.quality for cv in self._layers.values()])

    def to_pandas(self):
        import pandas as pd

        return pd.concat([cv.to_pandas() for cv in self._layers.values()], ignore_index=True)

    def to_attachment(self):
        """All layers as one :class:`~nsi_widgets.index.results.Attachment` (kind ``"concept_vectors"``)."""
        from ..index.results import Attachment

        first = next(iter(self._layers.values()))
        meta = dict(self.meta, method=first.method, concepts=list(first.concepts), categories=list(first.categories),
                    layer_meta={name: cv.meta for name, cv in self._layers.items()}, meaning={"weights": "(C, K) each unit's weight in each concept's vector",
                             "top_concept": "the concept whose vector weighs this unit most, relative to that "
                                            "vector's largest weight", "quality": "(K,) the concept's quality"})
        arrays = {name: _attachment_arrays(cv) for name, cv in self._layers.items()}
        return Attachment("concept_vectors", meta, arrays, {name: ["top_concept", "top_weight"] for name in arrays})

    @classmethod
    def from_attachment(cls, attachment) -> "ConceptVectorSet":
        """The set back from :meth:`to_attachment`'s attachment (e.g. of a loaded index)."""
        if getattr(attachment, "kind", None) != "concept_vectors":
            raise InputError(f"not a concept vectors attachment (kind {getattr(attachment, 'kind', None)!r})")
        meta = dict(attachment.meta)
        method, concepts, categories = meta.pop("method"), list(meta.pop("concepts")), list(meta.pop("categories"))
        layer_meta = meta.pop("layer_meta", {})
        meta.pop("meaning", None)
        layers = {}
        for name, arrays in attachment.arrays.items():
            details = {k[len("details/"):]: v for k, v in arrays.items() if k.startswith("details/")}
            layers[name] = ConceptVectors(name, method, concepts, categories, np.asarray(arrays["vectors"]),
                                          np.asarray(arrays["bias"]), np.asarray(arrays["quality"]), details,
                                          dict(layer_meta.get(name, {})))
        return cls(layers, meta)

    def save(self, path) -> Path:
        """Write to ``path`` (``.npz`` appended when missing), atomically; no pickles."""
        return self._save(path, "set")

    def _save(self, path, kind: str) -> Path:
        path = Path(path)
        path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        entries, arrays = [], {}
        for i, cv in enumerate(self._layers.values()):
            entries.append({"layer": cv.layer, "method": cv.method, "concepts": cv.concepts,
                            "categories": cv.categories, "meta": cv.meta, "details": sorted(cv.details)})
            arrays.update({f"L{i}/vectors": cv.vectors, f"L{i}/bias": cv.bias, f"L{i}/quality": cv.quality})
            arrays.update({f"L{i}/details/{name}": value for name, value in cv.details.items()})
        return write_archive(path, {"format": FORMAT, "version": VERSION, "kind": kind, "meta": self.meta,
                                    "layers": entries},
                             arrays, what="concept vectors file")


def load_concept_vectors(path):
    """Read what :meth:`ConceptVectors.save` or :meth:`ConceptVectorSet.save` wrote.

    Returns a :class:`ConceptVectors` for a file of one layer, else a :class:`ConceptVectorSet`.
    """
    with read_archive(path, FORMAT, VERSION, what="concept vectors file") as archive:
        layers = {}
        try:
            for i, entry in enumerate(list(archive.manifest["layers"])):
                concepts, categories = [str(c) for c in entry["concepts"]], [str(c) for c in entry["categories"]]
                if entry["method"] not in METHODS or len(categories) != len(concepts):
                    raise archive.error(f"layer entry {i} is malformed")
                k = len(concepts)
                vectors = archive.array(f"L{i}/vectors", dtype_kind="f", shape=(k, None))
                values = {a: archive.array(f"L{i}/{a}", dtype_kind="f", shape=(k,)) for a in ("bias", "quality")}
                details = {str(name): archive.array(f"L{i}/details/{name}", dtype_kind="fiub")
                           for name in entry["details"]}
                meta = dict(entry["meta"])
                layers[str(entry["layer"])] = ConceptVectors(str(entry["layer"]), str(entry["method"]), concepts,
                                                             categories, vectors, details=details, meta=meta,
                                                             **values)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise archive.error(f"its manifest is malformed ({err})") from None
        meta = dict(archive.manifest.get("meta") or {})
        kind = archive.manifest.get("kind")
        if kind not in ("layer", "set") or (kind == "layer" and len(layers) != 1):
            raise archive.error(f"its kind {kind!r} is not 'layer' (one layer) or 'set'")
    if kind == "layer":
        return next(iter(layers.values()))
    return ConceptVectorSet(layers, meta)
