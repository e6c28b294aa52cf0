"""Build a realistic fake :class:`NeuronIndex` from random arrays (for widget tests; no model).

The arrays follow the contract of ``nsi_widgets.index.results``: descending top activations, dead
units (all top activations <= 0) with NaN indexes, labels with ``-1`` for some unlabelled images,
Neuron Features in RGB ``[0, 1]``, uint8 top crops, ``gray_activations`` consistent with the colour
index (``alpha = 1 - sum a' / sum a``), a class hierarchy, ties in a score (to check stable
ordering) and an alive unit with a NaN score (NaN goes last).

Also a tiny in-memory stand-in for ``nsi_widgets.annotations.AnnotationStore`` (same API).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from nsi_widgets.core.receptive_field import ReceptiveField
from nsi_widgets.index.results import LayerIndex, NeuronIndex

CLASS_NAMES = ["circle", "ring", "square", "triangle", "star", "cross"]
CLASS_PARENTS = {"circle": "round", "ring": "round", "square": "polygon", "triangle": "polygon",
                 "star": "polygon", "round": "shape", "polygon": "shape"}


def _weighted_class_frequencies(labels: np.ndarray, acts: np.ndarray, n_classes: int) -> np.ndarray:
    a = np.clip(acts.astype(np.float64), 0, None)
    w = np.where(a[:, :1] > 0, a / np.where(a[:, :1] > 0, a[:, :1], 1), 0.0)
    f = np.zeros((labels.shape[0], n_classes))
    for c in range(n_classes):
        f[:, c] = (w * (labels == c)).sum(axis=1)
    tot = f.sum(axis=1, keepdims=True)
    return np.where(tot > 0, f / np.where(tot > 0, tot, 1), 0.0)


def _smooth_features(rng, C: int, rf: int) -> np.ndarray:
    """Colourful smooth patterns: a random colour times an oriented ramp plus a blob."""
    yy, xx = np.mgrid[0:rf, 0:rf].astype(np.float32) / max(rf - 1, 1)
    angle = rng.uniform(0, np.pi, C).astype(np.float32)
    ramp = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
    cy, cx = rng.uniform(0.2, 0.8, (2, C)).astype(np.float32)
    blob = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / 0.05)
    colour = rng.uniform(0, 1, (C, 1, 1, 3)).astype(np.float32)
    other = rng.uniform(0, 1, (C, 1, 1, 3)).astype(np.float32)
    mix = np.clip(0.5 * ramp + 0.5 * blob, 0, 1)[..., None]
    return np.clip(mix * colour + (1 - mix) * other * 0.6 + 0.1, 0, 1).astype(np.float32)


def make_layer(name: str, C: int, rf: int, *, top_n: int = 20, n_classes: int = 6, n_crops: int = 4,
               crop_size: int = 12, n_images: int = 500, rng=None, dead_units=(1,), nan_unit=None,
               tie_units=(2, 4), with_features: bool = True, with_crops: bool = True,
               with_gray: bool = True, extra_scores=("symmetry_selectivity",)) -> LayerIndex:
    """One fake layer of ``C`` units with receptive field ``rf`` (square)."""
    rng = np.random.default_rng(0) if rng is None else rng
    top = rng.uniform(0.5, 5.0, C).astype(np.float32)
    decay = np.sort(rng.uniform(0.2, 1.0, (C, top_n)), axis=1)[:, ::-1].astype(np.float32)
    decay[:, 0] = 1.0
    acts = (top[:, None] * decay).astype(np.float32)
    dead = np.zeros(C, dtype=bool)
    for u in dead_units:
        if u < C:
            dead[u] = True
            acts[u] = -np.abs(acts[u]) * 0.1 if u % 2 else 0.0  # all <= 0
    # some alive units whose tail is zero (zero weight)
    acts[C - 1, top_n // 2:] = 0.0 if C > 3 else acts[C - 1, top_n // 2:]
    acts = -np.sort(-acts, axis=1)
    indices = np.stack([rng.choice(n_images, top_n, replace=False) for _ in range(C)]).astype(np.int64)
    preferred = rng.integers(0, n_classes, C)
    labels = np.where(rng.uniform(size=(C, top_n)) < 0.6, preferred[:, None],
                      rng.integers(0, n_classes, (C, top_n))).astype(np.int64)
    labels[rng.uniform(size=(C, top_n)) < 0.05] = -1
    map_h = max(1, 64 // max(1, rf // 4))
    positions = rng.integers(0, map_h, (C, top_n, 2)).astype(np.int64)

    alpha = rng.uniform(-0.1, 0.9, C).astype(np.float32)
    for u in tie_units[1:]:
        if u < C and tie_units[0] < C:
            alpha[u] = alpha[tie_units[0]]  # exact tie: order must fall back to unit id
    gray = (acts * (1 - alpha)[:, None]).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        color = (1 - gray.sum(1, dtype=np.float64) / acts.sum(1, dtype=np.float64)).astype(np.float32)
    color[dead] = np.nan
    freq = _weighted_class_frequencies(labels, acts, n_classes)
    M = (freq > 0).sum(axis=1)
    gamma = ((top_n - M) / (top_n - 1)).astype(np.float32)
    gamma[dead] = np.nan
    scores = {"color_selectivity": color, "class_selectivity": gamma}
    for k, extra in enumerate(extra_scores):
        values = rng.uniform(0, 1, C).astype(np.float32)
        values[dead] = np.nan
        scores[extra] = values
    if nan_unit is not None and nan_unit < C:
        scores[extra_scores[0] if extra_scores else "class_selectivity"][nan_unit] = np.nan
    nf = _smooth_features(rng, C, rf) if with_features else None
    if nf is not None:
        nf[dead] = 0.0
    crops = None
    if with_crops:
        crops = (rng.uniform(0, 1, (C, n_crops, crop_size, crop_size, 3)) * 255).astype(np.uint8)
    stride = max(1, rf // 4)
    return LayerIndex(
        name=name, top_indices=indices, top_activations=acts, top_positions=positions,
        receptive_field=ReceptiveField((rf, rf), (stride, stride), (rf // 2, rf // 2)),
        map_size=(map_h, map_h), top_labels=labels, neuron_features=nf, top_crops=crops,
        scores=scores, details={"gray_activations": gray} if with_gray else {})


def make_fake_index(layers=(("conv1", 12, 5), ("conv2", 40, 13)), *, top_n: int = 20, seed: int = 0,
                    class_names=None, hierarchy: bool = True, html_class_name: bool = False,
                    **layer_options) -> NeuronIndex:
    """A fake :class:`NeuronIndex`: ``layers`` is a sequence of ``(name, n_units, rf_size)``.

    In every layer: unit 1 is dead, units 2 and 4 tie in colour selectivity, unit 3 is alive with
    a NaN ``symmetry_selectivity``. ``html_class_name`` makes one class name look like HTML.
    """
    rng = np.random.default_rng(seed)
    names = list(class_names or CLASS_NAMES)
    if html_class_name:
        names[-1] = "<b>cross</b> & <img src=x onerror=alert(1)>"
    out = {}
    for name, C, rf in layers:
        out[name] = make_layer(name, C, rf, top_n=top_n, n_classes=len(names), rng=rng, nan_unit=3,
                               **layer_options)
    parents = None
    if hierarchy:
        parents = {k: v for k, v in CLASS_PARENTS.items()}
        if html_class_name:
            parents[names[-1]] = "polygon"
    meta = {"model_name": "fake", "n_images": 500, "top_n": top_n}
    return NeuronIndex(out, meta=meta, class_names=names, class_parents=parents)


@dataclass
class FakeAnnotation:
    label: str
    note: str = ""
    tags: tuple = ()
    author: str = ""
    time: float = field(default_factory=time.time)


class MemoryAnnotationStore:
    """In-memory stand-in with the ``AnnotationStore`` API (annotate/get/all/search/revision)."""

    def __init__(self, path=None, index=None, author: str = "tester"):
        self.path = path
        self.author = author
        self.revision = 0
        self._data: dict[tuple[str, int], FakeAnnotation] = {}

    def annotate(self, layer, unit, label, note="", tags=(), author=None):
        self._data[(layer, int(unit))] = FakeAnnotation(label, note, tuple(tags), author or self.author)
        self.revision += 1
        return self._data[(layer, int(unit))]

    def remove(self, layer, unit, author=None):
        removed = self._data.pop((layer, int(unit)))
        self.revision += 1
        return removed

    def get(self, layer, unit):
        return self._data.get((layer, int(unit)))

    def all(self, layer=None):
        return {k: v for k, v in self._data.items() if layer is None or k[0] == layer}

    def search(self, text):
        text = text.lower()
        return {k: v for k, v in self._data.items()
                if text in " ".join([v.label, v.note, *v.tags]).lower()}


def annotation_store(path, index=None, author="tester"):
    """The real ``AnnotationStore`` when it exists, else the in-memory stand-in."""
    try:
        from nsi_widgets.annotations import AnnotationStore
    except ImportError:
        return MemoryAnnotationStore(path, index=index, author=author)
    return AnnotationStore(path, index=index, author=author)
