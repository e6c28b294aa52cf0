"""The result of a TCAV test: per target class the scores of the concept's runs and of random runs.

:class:`TCAVResult` holds every run's score, the t-test against the random-versus-random runs and the
classifiers' held-out accuracies; ``.score``, ``.p_value`` and ``.significant`` are numbers when one
target class was tested, arrays (one value per class) when several were. Saves to and loads from the
safe archive format (no pickles); ``to_pandas()`` gives one row per class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.storage import read_archive, write_archive

FORMAT = "nsi-widgets-tcav"
VERSION = 1
_ARRAYS = ("classes", "scores", "random_scores", "accuracies", "random_accuracies", "t", "p_values")


@dataclass
class TCAVResult:
    """TCAV of one concept at one layer for one or more target classes (docs/methods.md section 8).

    Attributes
    ----------
    layer, concept : str
    classes : ndarray (T,) int64
        The target classes (label ids); ``class_names`` their names where the data names them.
    scores : ndarray (T, R) float64
        Per class and concept run: the fraction of the class's images whose directional derivative of
        the class logit along the run's CAV is positive.
    random_scores : ndarray (T, Q) float64
        The same for the random-versus-random runs (the null distribution).
    accuracies, random_accuracies : ndarray (R,), (Q,)
        Held-out accuracy of each run's linear classifier.
    t, p_values : ndarray (T,)
        Two-sided two-sample t-test of ``scores`` against ``random_scores`` (Student's by default, as
        tcav; :mod:`.stats`).
    significance : float
        The p-value below which a result is significant (0.05).
    accuracy_floor : float
        The concept's classifiers must reach this mean held-out accuracy to be significant at all (a
        concept the layer cannot tell from random images has no direction to test; random concepts
        sit near 0.5).
    """

    layer: str
    concept: str
    classes: np.ndarray
    scores: np.ndarray
    random_scores: np.ndarray
    accuracies: np.ndarray
    random_accuracies: np.ndarray
    t: np.ndarray
    p_values: np.ndarray
    significance: float = 0.05
    accuracy_floor: float = 0.7
    class_names: list[str] | None = None
    single: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def learnable(self) -> bool:
        """Whether the concept's classifiers reach ``accuracy_floor`` (mean over runs)."""
        return bool(np.mean(self.accuracies) >= self.accuracy_floor) if len(self.accuracies) else False

    def _one(self, values: np.ndarray):
        return values[0].item() if self.single else values

    @property
    def score(self):
        """Mean TCAV score over the concept's runs (a float for one class, else (T,))."""
        return self._one(self.scores.mean(axis=1))

    @property
    def p_value(self):
        return self._one(self.p_values)

    @property
    def significant(self):
        """``p < significance`` and the concept is learnable (a bool for one class, else (T,))."""
        return self._one((self.p_values < self.significance) & self.learnable)

    @property
    def direction(self):
        """+1 where the concept's scores exceed the random runs' on average, -1 below, 0 equal."""
        return self._one(np.sign(self.scores.mean(axis=1) - self.random_scores.mean(axis=1)).astype(np.int64))

    def to_pandas(self):
        """One row per target class: score (mean, sd), random score, t, p-value, significant, direction."""
        import pandas as pd

        significant = (self.p_values < self.significance) & self.learnable
        direction = np.sign(self.scores.mean(axis=1) - self.random_scores.mean(axis=1))
        return pd.DataFrame({
            "layer": self.layer, "concept": self.concept, "class": self.classes,
            "class_name": self.class_names if self.class_names is not None else [None] * len(self.classes),
            "score": self.scores.mean(axis=1), "score_sd": self.scores.std(axis=1, ddof=1) if self.scores.shape[1] > 1
            else np.nan, "random_score": self.random_scores.mean(axis=1), "t": self.t, "p_value": self.p_values,
            "significant": significant, "direction": direction.astype(np.int64),
            "cav_accuracy": float(np.mean(self.accuracies)) if len(self.accuracies) else np.nan})

    def save(self, path) -> Path:
        """Write to ``path`` (``.npz`` appended when missing), atomically; no pickles."""
        path = Path(path)
        path = path if path.suffix == ".npz" else path.with_name(path.name + ".npz")
        manifest = {"format": FORMAT, "version": VERSION, "layer": self.layer, "concept": self.concept,
                    "significance": self.significance, "accuracy_floor": self.accuracy_floor,
                    "class_names": self.class_names, "single": self.single, "meta": self.meta}
        return write_archive(path, manifest, {a: getattr(self, a) for a in _ARRAYS}, what="TCAV file")


def load_tcav(path) -> TCAVResult:
    """Read a :class:`TCAVResult` written by :meth:`TCAVResult.save`, checking its shapes."""
    with read_archive(path, FORMAT, VERSION, what="TCAV file") as archive:
        m = archive.manifest
        try:
            classes = archive.array("classes", dtype_kind="i", ndim=1)
            t = len(classes)
            scores = archive.array("scores", dtype_kind="f", shape=(t, None))
            random_scores = archive.array("random_scores", dtype_kind="f", shape=(t, None))
            values = {"accuracies": archive.array("accuracies", dtype_kind="f", shape=(scores.shape[1],)),
                      "random_accuracies": archive.array("random_accuracies", dtype_kind="f",
                                                         shape=(random_scores.shape[1],)),
                      "t": archive.array("t", dtype_kind="f", shape=(t,)),
                      "p_values": archive.array("p_values", dtype_kind="f", shape=(t,))}
            names = m.get("class_names")
            if names is not None and len(names) != t:
                raise archive.error(f"{len(names)} class names for {t} classes")
            return TCAVResult(str(m["layer"]), str(m["concept"]), classes, scores, random_scores,
                              significance=float(m["significance"]), accuracy_floor=float(m["accuracy_floor"]),
                              class_names=[str(n) for n in names] if names is not None else None,
                              single=bool(m["single"]), meta=dict(m.get("meta") or {}), **values)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise archive.error(f"its manifest is malformed ({err})") from None
