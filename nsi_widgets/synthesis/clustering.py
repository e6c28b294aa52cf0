"""Reducing and clustering image codes for the facets (docs/methods.md section 9), in NumPy.

* :func:`pca`: projection on the leading principal components of the centred codes (SVD);
* :func:`kmeans`: Lloyd's algorithm from k-means++ starts, the best of ``n_init`` runs by inertia;
* :func:`silhouette`: mean silhouette coefficient (Rousseeuw 1987);
* :func:`choose_k`: the rule used when ``k`` is not given: among the ``k`` in ``2 .. k_max`` whose
  clusters all hold at least :data:`MIN_FACET_SHARE` of the points (and at least 2), the one with the
  largest mean silhouette; 1 when none reaches :data:`MIN_SILHOUETTE` (no substantial structure,
  Kaufman & Rousseeuw).
* :func:`tsne`: optional 2-D embedding with scikit-learn's t-SNE (an optional extra; not a dependency).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError

MIN_SILHOUETTE = 0.25
"""Below this best mean silhouette, :func:`choose_k` keeps one facet."""
MIN_FACET_SHARE = 0.05
"""Smallest share of the points a facet may hold for :func:`choose_k` to consider its ``k``."""
PCA_VARIANCE = 0.95
"""Default share of the variance kept by :func:`pca` (at most :data:`PCA_MAX_COMPONENTS` components)."""
PCA_MAX_COMPONENTS = 20


def pca(codes: np.ndarray, n_components: int | None = None) -> np.ndarray:
    """Coordinates of the centred ``codes`` (n, D) on their leading principal components.

    ``n_components`` None: the fewest components explaining :data:`PCA_VARIANCE` of the variance,
    at most :data:`PCA_MAX_COMPONENTS`. Signs are fixed so that each component's largest loading is
    positive. Returns ``(n, d)`` float64.
    """
    x = np.asarray(codes, dtype=np.float64)
    x = x - x.mean(0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    if n_components is None:
        share = np.cumsum(s ** 2) / max((s ** 2).sum(), 1e-300)
        n_components = int(min(np.searchsorted(share, PCA_VARIANCE) + 1, PCA_MAX_COMPONENTS))
    d = int(max(1, min(n_components, vt.shape[0])))
    vt = vt[:d]
    signs = np.sign(vt[np.arange(d), np.abs(vt).argmax(1)])
    return x @ (vt * signs[:, None]).T


@dataclass
class KMeansResult:
    """Labels ``(n,)``, centres ``(k, d)`` and inertia (sum of squared distances to the centres)."""

    labels: np.ndarray
    centers: np.ndarray
    inertia: float


def _squared_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - centers[None, :, :]) ** 2).sum(-1)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = _squared_distances(x, np.asarray(centers)).min(1)
        total = d.sum()
        index = rng.choice(len(x), p=d / total) if total > 0 else rng.integers(len(x))
        centers.append(x[index])
    return np.asarray(centers)


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 10, max_iter: int = 100) -> KMeansResult:
    """k-means of the rows of ``x`` (n, d): the lowest-inertia of ``n_init`` seeded k-means++ runs."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= k <= len(x):
        raise InputError(f"k must be between 1 and the number of points ({len(x)}), got {k}")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        centers = _kmeans_pp(x, k, rng)
        labels = None
        for _ in range(max_iter):
            new = _squared_distances(x, centers).argmin(1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                members = x[labels == j]
                # an empty cluster takes the point farthest from its centre
                centers[j] = members.mean(0) if len(members) else x[_squared_distances(x, centers).min(1).argmax()]
        inertia = float(_squared_distances(x, centers)[np.arange(len(x)), labels].sum())
        if best is None or inertia < best.inertia - 1e-12:
            best = KMeansResult(_relabel(labels), None, inertia)
    best.centers = np.stack([x[best.labels == j].mean(0) for j in range(k)])
    return best


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Number clusters by first appearance (a canonical labelling)."""
    order = {label: i for i, label in enumerate(dict.fromkeys(labels.tolist()))}
    return np.asarray([order[label] for label in labels.tolist()], dtype=np.int64)


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette ``(b - a) / max(a, b)`` over points; 0 for points alone in their cluster."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    clusters = np.unique(labels)
    if len(clusters) < 2:
        raise InputError("the silhouette needs at least two clusters")
    d = np.sqrt(np.maximum(_squared_distances(x, x), 0))
    mean_to = np.stack([d[:, labels == c].sum(1) for c in clusters], axis=1)
    sizes = np.asarray([(labels == c).sum() for c in clusters])
    own = np.searchsorted(clusters, labels)
    a = mean_to[np.arange(len(x)), own] / np.maximum(sizes[own] - 1, 1)
    others = mean_to / sizes[None, :]
    others[np.arange(len(x)), own] = np.inf
    b = others.min(1)
    s = np.where(sizes[own] > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def choose_k(x: np.ndarray, k_max: int = 6, *, seed: int = 0) -> tuple[int, dict[int, float]]:
    """The number of facets by the silhouette rule (module docstring); also the score of each ``k``."""
    n = len(x)
    min_size = max(2, int(np.ceil(MIN_FACET_SHARE * n)))
    scores = {}
    for k in range(2, min(k_max, n // min_size) + 1):
        result = kmeans(x, k, seed=seed)
        if np.bincount(result.labels, minlength=k).min() >= min_size:
            scores[k] = silhouette(x, result.labels)
    if not scores or max(scores.values()) < MIN_SILHOUETTE:
        return 1, scores
    return max(scores, key=lambda k: (scores[k], -k)), scores


def tsne(x: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """2-D t-SNE embedding (scikit-learn, an optional extra: ``pip install scikit-learn``)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise InputError("reduce='tsne' needs scikit-learn (pip install scikit-learn); reduce='pca' needs "
                         "nothing more") from None
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(x)
