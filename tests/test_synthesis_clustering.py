"""PCA, k-means, the silhouette and the rule for k against brute force and NumPy definitions."""
import itertools

import numpy as np
import pytest

from nsi_widgets.core.errors import InputError
from nsi_widgets.synthesis.clustering import MIN_SILHOUETTE, choose_k, kmeans, pca, silhouette


def _blobs(centres, n=12, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.asarray(c) + spread * rng.standard_normal((n, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n)


def test_pca_projects_on_the_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)) @ rng.standard_normal((5, 5)) + 3
    values, vectors = np.linalg.eigh(np.cov(x.T))
    order = np.argsort(values)[::-1]
    got = pca(x, 3)
    ref = (x - x.mean(0)) @ vectors[:, order[:3]]
    np.testing.assert_allclose(np.abs(got), np.abs(ref), atol=1e-8)
    # default: the fewest components with 95 % of the variance
    share = np.cumsum(values[order]) / values.sum()
    assert pca(x).shape[1] == int(np.searchsorted(share, 0.95) + 1)


def test_kmeans_finds_the_optimal_partition_of_a_small_set():
    x, _ = _blobs([(0, 0), (2, 0)], n=6, spread=0.9, seed=1)
    best = np.inf
    for labels in itertools.product(range(2), repeat=len(x)):  # brute force over all 2^12 labellings
        labels = np.asarray(labels)
        if len(set(labels)) < 2:
            continue
        inertia = sum(((x[labels == j] - x[labels == j].mean(0)) ** 2).sum() for j in range(2))
        best = min(best, inertia)
    assert kmeans(x, 2, seed=0).inertia == pytest.approx(best)


def test_kmeans_labels_are_canonical_and_seeded():
    x, truth = _blobs([(0, 0), (5, 5)], n=10)
    result = kmeans(x, 2, seed=4)
    assert result.labels[0] == 0 and np.array_equal(result.labels, truth)
    np.testing.assert_allclose(result.centers, [x[truth == 0].mean(0), x[truth == 1].mean(0)])
    with pytest.raises(InputError):
        kmeans(x, 0)


def test_silhouette_matches_its_definition():
    x, labels = _blobs([(0, 0), (2, 1), (0, 3)], n=5, spread=0.7, seed=2)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    s = []
    for i in range(len(x)):
        own = labels == labels[i]
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, labels == c].mean() for c in set(labels) if c != labels[i])
        s.append((b - a) / max(a, b))
    assert silhouette(x, labels) == pytest.approx(np.mean(s))


def test_choose_k_by_the_silhouette_rule():
    x, _ = _blobs([(0, 0), (6, 0), (0, 6)], n=15)
    k, scores = choose_k(x, 6)
    assert k == 3 and scores[3] == max(scores.values())
    noise = np.random.default_rng(3).standard_normal((60, 10))  # no structure (in 2-D k-means scores ~0.35)
    k, scores = choose_k(noise, 6)
    assert k == 1 and max(scores.values()) < MIN_SILHOUETTE
