"""The linear classifier behind a CAV, fitted deterministically in torch (docs/methods.md section 8).

tcav fits ``sklearn.linear_model.SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)``: a linear SVM
(hinge loss) with the penalty ``alpha/2 ||w||^2`` on the mean loss, by stochastic gradient descent
over shuffled samples, so its CAV varies with the shuffling. scikit-learn is not a dependency here;
instead :func:`fit_linear` minimises the same regularised objective with the logistic loss,

    mean_i log(1 + exp(-y_i (w . x_i + b))) + alpha/2 ||w||^2,     y_i = +1 (concept) or -1 (random),

which is smooth and strictly convex: L-BFGS (float64, strong Wolfe line search, from zero) reaches its
one minimum, the same for the same data on every run and every process. The logistic and hinge
losses give nearly the same boundary on separable concepts (both are large-margin losses; the
logistic one weighs every sample, the hinge one only the margin's); the bias is not penalised, as
in scikit-learn. :func:`stratified_split` is ``train_test_split(test_size=0.33, stratify=y)`` made
explicit: per class, ``ceil(0.33 n_c)`` items for the test, chosen by a seeded permutation.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def fit_linear(x: np.ndarray, y: np.ndarray, alpha: float = 0.01, max_iter: int = 500) -> tuple[np.ndarray, float]:
    """``(w (D,), b)`` of the L2-regularised logistic regression of ``y`` (bool: concept) on ``x`` (n, D)."""
    features = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    signs = torch.as_tensor(np.where(np.asarray(y, bool), 1.0, -1.0), dtype=torch.float64)
    w = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        optimiser.zero_grad()
        margins = signs * (features @ w + b)
        loss = torch.nn.functional.softplus(-margins).mean() + 0.5 * alpha * (w @ w)
        loss.backward()
        return loss

    with torch.inference_mode(False), torch.enable_grad():
        optimiser.step(objective)
    return w.detach().numpy().copy(), float(b.detach())


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
