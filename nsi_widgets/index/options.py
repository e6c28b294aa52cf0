"""The options of :func:`~nsi_widgets.index.pipeline.index_neurons`, validated before any work starts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.errors import InputError, InputTypeError
from .features import NF_MODES
from .selectivity import GRAY_METHODS, get_index

SHORTCUTS = ("auto", "never")


@dataclass(frozen=True)
class IndexOptions:
    """Every setting of an indexing run (see :func:`~nsi_widgets.index.pipeline.index_neurons`)."""

    top_n: int = 100
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None
    batch_size: int = 64
    device: Any = None
    progress: bool = True
    indexes: tuple[str, ...] = ("color", "class")
    gray: str = "pca"
    nu: float = 1.0
    neuron_features: str | None = "weighted"
    n_thumbnails: int = 16
    thumbnail_size: int = 48
    checkpoint: Any = None
    checkpoint_every: int = 50
    num_workers: int = 0
    shortcut: str = "auto"
    class_names: tuple[str, ...] | None = None
    class_parents: dict[str, str] | None = None
    skip_nonfinite: bool = False

    def validated(self, model: torch.nn.Module, data, n_images: int) -> "IndexOptions":
        """A copy with every value checked and defaults resolved (device, class names, ``top_n`` capped
        at the dataset size); raises :class:`InputError` / :class:`InputTypeError` naming the problem."""
        for name in ("top_n", "batch_size", "n_thumbnails", "thumbnail_size", "checkpoint_every", "num_workers"):
            value = getattr(self, name)
            minimum = 0 if name in ("n_thumbnails", "num_workers") else 1
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.gray not in GRAY_METHODS:
            raise InputError(f"gray must be one of {GRAY_METHODS}, not {self.gray!r}")
        if self.neuron_features is not None and self.neuron_features not in NF_MODES:
            raise InputError(f"neuron_features must be one of {NF_MODES} or None, not {self.neuron_features!r}")
        if self.shortcut not in SHORTCUTS:
            raise InputError(f"shortcut must be 'auto' or 'never', not {self.shortcut!r}")
        if isinstance(self.nu, bool) or not isinstance(self.nu, (int, float, np.floating)) or not 0 < self.nu <= 1:
            raise InputError(f"nu must be a number in (0, 1], got {self.nu!r}")
        if self.preprocess is not None and not callable(self.preprocess):
            raise InputTypeError(f"preprocess must be a callable (batch -> batch) or None, got "
                                 f"{type(self.preprocess).__name__}")
        indexes = (self.indexes,) if isinstance(self.indexes, str) else tuple(self.indexes)
        for name in indexes:
            try:
                get_index(name)
            except ValueError as err:
                raise InputError(str(err)) from None
        class_names = _names(self.class_names, data)
        class_parents = _parents(self.class_parents, data)
        return dataclasses.replace(
            self, top_n=int(min(self.top_n, n_images)), indexes=indexes, device=_device(self.device, model),
            nu=float(self.nu), class_names=class_names, class_parents=class_parents)

    def key(self) -> dict:
        """The settings that change the result (part of the checkpoint key)."""
        return {"top_n": int(self.top_n), "batch_size": int(self.batch_size), "indexes": list(self.indexes),
                "gray": self.gray, "nu": self.nu, "neuron_features": self.neuron_features,
                "n_thumbnails": int(self.n_thumbnails), "thumbnail_size": int(self.thumbnail_size),
                "shortcut": self.shortcut, "class_names": list(self.class_names or []),
                "class_parents": dict(self.class_parents or {}), "skip_nonfinite": bool(self.skip_nonfinite),
                "device_type": self.device.type}


def _device(device, model: torch.nn.Module) -> torch.device:
    """The device to run on: the given one (checked against what torch has), else the model's."""
    if device is None:
        first = next(iter(model.parameters()), None)
        return first.device if first is not None else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device {device!r} is not a device torch knows ({err}); use e.g. 'cpu' or 'cuda:0'") from None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise InputError(f"device {str(device)!r}: this torch build ({torch.__version__}) has no CUDA support; "
                             "use device='cpu' or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r}: no CUDA GPU is available on this machine; use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' is not available on this machine; use device='cpu'")
    return device


def _names(given: Sequence[str] | None, data) -> tuple[str, ...] | None:
    value = given if given is not None else getattr(data, "classes", None)
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, (str, int, np.integer)) for v in value):
        raise InputError("class_names (or data.classes) must be a sequence of names")
    return tuple(str(v) for v in value)


def _parents(given: dict | None, data) -> dict[str, str] | None:
    value = given if given is not None else getattr(data, "class_parents", None)
    if not value:
        return None
    try:
        return {str(k): str(v) for k, v in dict(value).items()}
    except (TypeError, ValueError):
        raise InputError("class_parents (or data.class_parents) must be a mapping child -> parent") from None
