"""The linear classifier behind a CAV, fitted deterministically in torch (docs/methods.md section 8).

tcav fits ``sklearn.linear_model.SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)``: a linear SVM
(hinge loss) with the penalty ``alpha/2 ||w||^2`` on the mean loss, by stochastic gradient descent
over shuffled samples, so its CAV varies with the shuffling. scikit-learn is not a dependency here;
instead :func:`fit_linear` minimises the same regularised objective with the logistic loss,

    mean_i log(1 + exp(-y_i (w . x_i + b))) + alpha/2 ||w||^2,     y_i = +1 (concept) or -1 (random),

which is smooth and strictly convex: Newton's method (float64, from zero) reaches its one minimum,
the same for the same data on every run and every process. The logistic and hinge
losses give nearly the same boundary on separable concepts (both are large-margin losses; the
logistic one weighs every sample, the hinge one only the margin's); the bias is not penalised, as
in scikit-learn. :func:`stratified_split` is ``train_test_split(test_size=0.33, stratify=y)`` made
explicit: per class, ``ceil(0.33 n_c)`` items for the test, chosen by a seeded permutation.
"""
from __future__ import annotations

import math

import numpy as np


def fit_linear(x: np.ndarray, y: np.ndarray, alpha: float = 0.01, max_iter: int = 100) -> tuple[np.ndarray, float]:
    """``(w (D,), b)`` of the L2-regularised logistic regression of ``y`` (bool: concept) on ``x`` (n, D).

    Newton's method with a backtracking line search, in float64, until the gradient's largest entry is
    below 1e-10. With more features than samples it is solved in the span of the samples (``x = r q'``
    with ``q`` orthonormal, by a QR decomposition): the penalised optimum lies there, since a part of
    ``w`` orthogonal to every sample changes no margin and only adds to the penalty.
    """
    x = np.asarray(x, np.float64)
    signs = np.where(np.asarray(y, bool), 1.0, -1.0)
    basis = None
    if x.shape[1] > x.shape[0]:
        basis, r = np.linalg.qr(x.T)                        # x' = q r, x = r' q'
        x = r.T
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(d + 1, alpha)
    penalty[-1] = 0.0
    theta = np.zeros(d + 1)

    def objective(t):
        return np.logaddexp(0.0, -signs * (design @ t)).mean() + 0.5 * alpha * (t[:-1] @ t[:-1])

    value = objective(theta)
    for _ in range(max_iter):
        margins = signs * (design @ theta)
        miss = _sigmoid(-margins)                            # sigmoid(-margin)
        gradient = -(design.T @ (signs * miss)) / n + penalty * theta
        if np.abs(gradient).max() < 1e-10:
            break
        curvature = miss * (1.0 - miss)
        hessian = (design.T * curvature) @ design / n + np.diag(penalty) + 1e-12 * np.eye(d + 1)
        direction = np.linalg.solve(hessian, -gradient)
        size = 1.0
        while size > 1e-10:
            candidate = theta + size * direction
            new = objective(candidate)
            if new <= value + 1e-4 * size * (gradient @ direction):
                break
            size *= 0.5
        theta, value = candidate, new
    w = theta[:-1] if basis is None else basis @ theta[:-1]
    return w, float(theta[-1])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def accuracy(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    """Share of ``x`` on the right side of the boundary (``w . x + b > 0`` for the concept)."""
    predicted = np.asarray(x, np.float64) @ w + b > 0
    return float(np.mean(predicted == np.asarray(y, bool)))


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` positions of ``y``: per class, ``ceil(test_fraction * n_c)`` test items."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for value in np.unique(y):
        where = np.flatnonzero(y == value)
        where = where[rng.permutation(len(where))]
        n_test = min(len(where) - 1, max(1, math.ceil(test_fraction * len(where))))
        test.append(where[:n_test])
        train.append(where[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
