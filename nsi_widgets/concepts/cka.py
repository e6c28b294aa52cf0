"""Linear CKA on arrays, and its minibatch accumulation as a consumer (docs/methods.md section 8).

Linear CKA (Kornblith, Norouzi, Lee, Hinton 2019) of two representations ``X`` (n, p) and ``Y``
(n, q) of the same ``n`` images::

    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),    K = X X^T,  L = Y Y^T

* *biased* HSIC (Gretton et al. 2005): ``tr(K H L H) / (n - 1)^2`` with the centring matrix ``H``;
  with few images and many features it is near 1 even for independent representations (0.92 at
  32 images with 512 against 256 independent Gaussian features), so :func:`cka` warns when it is
  asked for with fewer images than features.
* *unbiased* HSIC (Song, Smola, Gretton, Bedo, Borgwardt 2012), the default::

      HSIC_u = [tr(K~ L~) + 1'K~1 1'L~1 / ((n - 1)(n - 2)) - 2/(n - 2) 1'K~L~1] / (n (n - 3))

  where ``K~`` is ``K`` with its diagonal set to zero; it needs ``n >= 4``. The debiased CKA built
  from it is near 0 for independent representations at any ``n`` (within +-0.02 at 64 images).

Both are invariant to orthogonal transforms and isotropic scaling of either argument and to
translations of the features (the features are centred first, which changes neither estimator).
:func:`cka` picks the cheaper of two exact routes: ``n x n`` Gram matrices, or, with centred
features, the ``p x q`` cross-covariance (``tr(KL) = ||X^T Y||_F^2``, ``1'K~1 = -sum_i |x_i|^2`` and
``(K~1)_i = -|x_i|^2``).

:class:`MinibatchCKA` accumulates the minibatch estimator of Nguyen, Raghu, Kornblith 2021 over a
pass: per batch of ``m`` images, the HSIC of every pair of recorded layers from the batch's ``m x m``
Gram matrices; CKA is then ``mean_b HSIC_b(K, L) / sqrt(mean_b HSIC_b(K, K) mean_b HSIC_b(L, L))``.
Its memory is ``m x m`` per layer and one ``L x L`` matrix of sums, whatever the number of images.
With the unbiased HSIC each batch's term is an unbiased estimate of the population HSIC, so the
average is too; it equals the full-data estimate exactly when the pass is one batch, and differs
from it otherwise by sampling noise of the order of the full estimate's own (within 0.02 on the
correlated data of ``tests/test_cka.py``: 1,024 images in batches of 128). Batches with fewer than 4
valid images (2 for the biased HSIC) are left out and counted. The sums are float64; merged in
another order (several processes) they agree to about 1e-12 relative, not bit for bit.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from ..core.errors import InputError
from ..core.passes import Batch, Consumer
from .activations import features_of


class BiasedCKAWarning(UserWarning):
    """Biased CKA asked for with fewer images than features, where it is biased towards 1."""


def cka(X, Y, debiased: bool = True) -> float:
    """Linear CKA of two representations of the same images (docs/methods.md section 8).

    Parameters
    ----------
    X, Y : array-like (n, ...) 
        NumPy arrays or tensors; the first axis is the image, the others are flattened into features
        (``(n, p)`` and ``(n, q)``). Computed in float64.
    debiased : bool
        Use the unbiased HSIC estimator (Song et al. 2012; needs ``n >= 4``). The biased one
        (``debiased=False``) warns with :class:`BiasedCKAWarning` when ``n`` is smaller than the
        number of features of either argument: there it is near 1 even for independent data.

    Returns
    -------
    float
        In ``[0, 1]`` for the biased estimator; the debiased one can be slightly negative for
        unrelated representations. NaN when either representation is constant over the images.
    """
    x, y = _as_matrix(X, "X"), _as_matrix(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise InputError(f"X and Y must describe the same images: X has {x.shape[0]} rows, Y {y.shape[0]}")
    n = x.shape[0]
    minimum = 4 if debiased else 2
    if n < minimum:
        raise InputError(f"{'debiased' if debiased else 'biased'} CKA needs at least {minimum} images, got {n}")
    if not debiased and n < max(x.shape[1], y.shape[1]):
        warnings.warn(f"biased CKA with {n} images and {max(x.shape[1], y.shape[1])} features is biased "
                      "towards 1 (near 1 even for independent features); use debiased=True",
                      BiasedCKAWarning, stacklevel=2)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    xy, xx, yy = (_hsic_centred(a, b, debiased) for a, b in ((x, y), (x, x), (y, y)))
    return _ratio(xy, xx, yy)


def _as_matrix(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    array = np.asarray(value)
    if array.dtype.hasobject or array.dtype.kind not in "biuf":
        raise InputError(f"{name} must be a numeric array (images x features), got dtype {array.dtype}")
    if array.ndim < 2:
        raise InputError(f"{name} must have an image axis and at least one feature axis, got shape {array.shape}")
    array = array.reshape(array.shape[0], -1).astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{name} has NaN or infinite values")
    return array


def _hsic_centred(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """HSIC of centred features ``x`` (n, p), ``y`` (n, q) by the cheaper exact route."""
    n, p = x.shape
    q = y.shape[1]
    if n * (p + q) <= p * q + p * p + q * q:
        return float(hsic_matrix(torch.from_numpy(np.stack([x @ x.T, y @ y.T])), debiased)[0, 1])
    cross = float(np.sum((x.T @ y) ** 2))                     # tr(K L)
    if not debiased:
        return cross / (n - 1) ** 2
    a, b = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)   # |x_i|^2, |y_i|^2
    ab = float(a @ b)
    return (cross - ab + a.sum() * b.sum() / ((n - 1) * (n - 2)) - 2.0 * ab / (n - 2)) / (n * (n - 3))


def _ratio(xy: float, xx: float, yy: float) -> float:
    denominator = xx * yy
    if not denominator > 0:
        return float("nan")
    return float(xy / np.sqrt(denominator))


def hsic_matrix(grams: torch.Tensor, debiased: bool = True) -> torch.Tensor:
    """HSIC of every pair of ``L`` Gram matrices of the same ``m`` images: ``(L, m, m) -> (L, L)``.

    The unbiased estimator (Song et al. 2012) or the biased ``tr(K H L H) / (m - 1)^2``, in the
    Grams' dtype (use float64).
    """
    count, m = grams.shape[0], grams.shape[1]
    if debiased:
        tilde = grams.clone()
        tilde.diagonal(dim1=1, dim2=2).zero_()
        flat = tilde.reshape(count, -1)
        rows = tilde.sum(dim=2)                                # K~ 1, (L, m)
        totals = rows.sum(dim=1)                               # 1' K~ 1, (L,)
        return (flat @ flat.T + torch.outer(totals, totals) / ((m - 1) * (m - 2))
                - 2.0 / (m - 2) * rows @ rows.T) / (m * (m - 3))
    centred = (grams - grams.mean(dim=1, keepdim=True) - grams.mean(dim=2, keepdim=True)
               + grams.mean(dim=(1, 2), keepdim=True))
    flat = centred.reshape(count, -1)
    return flat @ flat.T / (m - 1) ** 2


def cka_from_hsic(hsic: np.ndarray) -> np.ndarray:
    """CKA of every pair from a matrix of (summed or averaged) HSIC values; NaN where undefined."""
    diagonal = np.diag(hsic)
    denominator = np.outer(diagonal, diagonal)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, hsic / np.sqrt(np.where(denominator > 0, denominator, 1.0)), np.nan)


class MinibatchCKA(Consumer):
    """The minibatch CKA of Nguyen et al. 2021 between every pair of ``layers`` (see the module).

    Parameters
    ----------
    layers : sequence of str
        The recorded layers (their order is the order of :meth:`matrix`'s rows).
    features : {"pooled", "flatten"}
        Each layer's representation of an image (:func:`~.activations.features_of`).
    debiased : bool
        Unbiased HSIC per batch (default) or the biased one.

    State: ``sums`` (L, L) float64, the sum over batches of each pair's HSIC, and ``counts``
    (batches used, images used, images in batches too small to use).
    """

    def __init__(self, layers: Sequence[str], features: str = "pooled", debiased: bool = True):
        self.layers = tuple(layers)
        self.features, self.debiased = features, bool(debiased)
        self.sums = np.zeros((len(self.layers), len(self.layers)), np.float64)
        self.counts = np.zeros(3, np.int64)
        self._grams: dict[str, torch.Tensor] = {}

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        f = features_of(output, self.features, torch.float64, batch.valid)
        f = f - f.mean(dim=0, keepdim=True)
        self._grams[name] = f @ f.T

    def on_batch(self, batch: Batch) -> None:
        grams, self._grams = self._grams, {}
        m = int(batch.valid.sum())
        if m < (4 if self.debiased else 2) or not grams:
            self.counts[2] += m
            return
        stacked = torch.stack([grams[name] for name in self.layers])
        self.sums += hsic_matrix(stacked, self.debiased).cpu().numpy()
        self.counts[0] += 1
        self.counts[1] += m

    def state(self) -> dict[str, np.ndarray]:
        return {"sums": self.sums.copy(), "counts": self.counts.copy()}

    def load_state(self, state) -> None:
        self.sums = np.array(state["sums"], dtype=np.float64)
        self.counts = np.array(state["counts"], dtype=np.int64)

    def merge_state(self, state) -> None:
        self.sums += np.asarray(state["sums"], dtype=np.float64)
        self.counts += np.asarray(state["counts"], dtype=np.int64)

    def matrix(self) -> np.ndarray:
        """``(L, L)`` CKA between the layers (NaN where a layer is constant, or no batch was used)."""
        if self.counts[0] == 0:
            return np.full(self.sums.shape, np.nan)
        return cka_from_hsic(self.sums / self.counts[0])

    def result(self) -> np.ndarray:
        return self.matrix()
