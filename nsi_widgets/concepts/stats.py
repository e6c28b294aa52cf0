"""The two-sample t-test of TCAV's significance (docs/methods.md section 8).

:func:`ttest_ind` is ``scipy.stats.ttest_ind`` (two-sided): Student's test with a pooled variance
(``equal_var=True``, scipy's default, which tcav uses) or Welch's. The p-value comes from scipy when it
is installed, else from the t distribution's CDF written out here (the regularised incomplete beta
function by its continued fraction, Lentz's method; agrees with scipy to about 1e-12).

Degenerate samples, where scipy returns NaN: when both samples are constant the test is decided by
their means: equal means give ``t = 0, p = 1``, different means ``t = +-inf, p = 0`` (every score
of the one sample lies beyond every score of the other; TCAV's scores at a layer whose class gradient
is the same for every image are all 0 or 1).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

_UNLOADED = object()
_special = _UNLOADED
"""``scipy.special`` once first needed (importing it costs ~0.2 s, so not at ``import nsi_widgets``);
None without scipy (it comes with scikit-image, a dependency, but is not one itself)."""


def _scipy_special():
    global _special
    if _special is _UNLOADED:
        try:
            from scipy import special
        except ImportError:  # pragma: no cover - exercised by forcing the fallback in the tests
            special = None
        _special = special
    return _special


def ttest_ind(a: Sequence[float], b: Sequence[float], equal_var: bool = True) -> tuple[float, float]:
    """Two-sided two-sample t-test of equal means: ``(t, p_value)``.

    Parameters
    ----------
    a, b : sequences of float
        At least two values each.
    equal_var : bool
        Student's test with a pooled variance (True, as tcav) or Welch's test (False).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the t-test needs at least 2 values in each sample, got {len(a)} and {len(b)}")
    n1, n2 = len(a), len(b)
    v1, v2 = a.var(ddof=1), b.var(ddof=1)
    diff = a.mean() - b.mean()
    if equal_var:
        df = n1 + n2 - 2.0
        scale = math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / df * (1.0 / n1 + 1.0 / n2))
    else:
        s1, s2 = v1 / n1, v2 / n2
        scale = math.sqrt(s1 + s2)
        df = (s1 + s2) ** 2 / (s1 ** 2 / (n1 - 1) + s2 ** 2 / (n2 - 1)) if scale > 0 else n1 + n2 - 2.0
    if scale == 0:
        return (0.0, 1.0) if diff == 0 else (math.copysign(math.inf, diff), 0.0)
    t = diff / scale
    return float(t), two_sided_p(t, df)


def two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t distribution with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    special = _scipy_special()
    if special is not None:
        return float(min(1.0, special.betainc(df / 2.0, 0.5, x)))
    return float(min(1.0, betainc(df / 2.0, 0.5, x)))


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` (continued fraction, Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float, tiny: float = 1e-300, eps: float = 1e-15) -> float:
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h
