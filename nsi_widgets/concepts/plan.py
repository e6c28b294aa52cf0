"""What the concept-vector and similarity analyses share: run settings, the held-out split, layer plans.

* :class:`RunOptions`: how the passes read and run (preprocess, batch size, device, progress,
  checkpoint, DataLoader workers) and the split of concept data into fitting and held-out images.
* :func:`split_items`: the held-out split, a seeded permutation of the items (the same on every
  process and every run).
* :func:`plan_layers`: per layer the output shape, the receptive-field-aligned upsampler to the
  concept masks (:mod:`.upsample`) and the exact-quantile plan of Network Dissection, from one probe
  forward (the dissection's own planning, :func:`~.dissection._plan_layers`).
* :func:`checkpoint_for`: the checkpoint of a run, keyed by everything that changes its result.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..core import distributed
from ..core.checkpoint import Checkpoint
from ..core.data import DataCheck, get_item, read_item
from ..core.errors import InputError
from ..core.fingerprint import callable_fingerprint, data_fingerprint, model_fingerprint
from ..core.layers import LayerRecorder
from ..core.passes import PassOptions
from .data import ConceptSet
from .dissection import DissectOptions, _LayerPlan, _plan_layers


@dataclass(frozen=True)
class RunOptions:
    """Settings of the passes of one analysis (see the functions that take them)."""

    preprocess: Callable | None = None
    batch_size: int = 64
    device: object = None
    progress: bool = True
    checkpoint: object = None
    checkpoint_every: int = 50
    num_workers: int = 0
    test_fraction: float = 0.25
    seed: int = 0
    max_feature_bytes: int = 512 * 2**20

    def check(self) -> None:
        for name in ("batch_size", "checkpoint_every", "max_feature_bytes"):
            check_int(name, getattr(self, name))
        check_int("num_workers", self.num_workers, 0)
        check_int("seed", self.seed, None)
        check_number("test_fraction", self.test_fraction, 0, 1, open_low=True, open_high=True)
        if self.preprocess is not None and not callable(self.preprocess):
            raise InputError("preprocess must be a callable (batch -> batch) or None")

    def passes(self, device: torch.device, check: DataCheck | None, preprocess: Callable | None = "same") -> PassOptions:
        pre = self.preprocess if preprocess == "same" else preprocess
        return PassOptions(self.batch_size, self.num_workers, device, pre, check, self.progress)

    def key(self) -> dict:
        return {"batch_size": self.batch_size, "test_fraction": float(self.test_fraction), "seed": self.seed,
                "preprocess": callable_fingerprint(self.preprocess)}


def check_int(name: str, value, minimum: int | None = 1) -> None:
    """Refuse anything but an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (minimum is not None and value < minimum):
        raise InputError(f"{name} must be an integer{'' if minimum is None else f' >= {minimum}'}, got {value!r}")


def check_number(name: str, value, low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> None:
    """Refuse anything but a number (not a bool) in ``[low, high]`` (ends excluded where open)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    ok = ok and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise InputError(f"{name} must be a number in {interval}, got {value!r}")


def split_items(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, held_out)`` item indices, each ascending: ``round(test_fraction * n)`` held out (at least 1)."""
    if n < 2:
        raise InputError(f"the concept data has {n} image; at least 2 are needed (fitting and held-out images)")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(test_fraction * n))))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def data_check(data) -> DataCheck:
    """How items of ``data`` are read: concept data (with ``.concepts``) as ``(image, masks)``, else as
    ``(image, label)`` or ``image``."""
    if getattr(data, "concepts", None) is not None:
        from .data import describe

        concepts = describe(data)
        return DataCheck(image_shape=(3, *concepts.image_size), split=concepts.split)
    return DataCheck()


@contextlib.contextmanager
def eval_mode(*models: nn.Module):
    """Run ``models`` in eval mode; each module's train/eval flag is restored afterwards."""
    modes = [(m, m.training) for model in models for m in model.modules()]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def model_device(model: nn.Module, device) -> torch.device:
    """The device to run on: the given one (checked), else the model's."""
    from ..index.options import _device

    return _device(device, model)


def plan_layers(model: nn.Module, modules: dict[str, nn.Module], data, concepts: ConceptSet, quantile: float,
                options: RunOptions, device: torch.device) -> dict[str, _LayerPlan]:
    """Per layer: units, map size, aligned upsampler, quantile plan (Network Dissection's planning)."""
    dissect_options = DissectOptions(quantile=quantile, preprocess=options.preprocess, batch_size=options.batch_size)
    return _plan_layers(model, modules, data, concepts, dissect_options, device)


def output_shapes(model: nn.Module, modules: dict[str, nn.Module], data, preprocess, device,
                  check: DataCheck | None = None) -> dict[str, tuple]:
    """Each layer's output shape (without the batch axis) on the first image, after the index's
    checks of ``preprocess`` and of the model on that image (:func:`~nsi_widgets.index.pipeline._probe`)."""
    from types import SimpleNamespace

    from ..index.pipeline import _probe

    image, _, _ = read_item(get_item(data, 0), 0, check)
    inputs = _probe(model, modules, image[None], SimpleNamespace(device=device, preprocess=preprocess))
    shapes: dict[str, tuple] = {}
    with LayerRecorder(modules, lambda n, o: shapes.__setitem__(n, tuple(o.shape[1:]))) as recorder, \
            torch.inference_mode():
        recorder.run(model, inputs)
    return shapes


def checkpoint_for(options: RunOptions, analysis: str, models: list[nn.Module], layers: list[str], data,
                   check: DataCheck | None, settings: dict) -> Checkpoint | None:
    """The run's checkpoint (None without ``options.checkpoint``), keyed by models, data and settings."""
    if not options.checkpoint and not distributed.active():
        return None
    key = {"analysis": analysis, "models": [model_fingerprint(m) for m in models], "layers": list(layers),
           "data": data_fingerprint(data, lambda i: read_item(get_item(data, i), i, check)[:2]),
           **options.key(), **settings}
    distributed.check_same(key, f"the {analysis} run (models, data, preprocess and arguments)")
    return Checkpoint(options.checkpoint, key, options.checkpoint_every) if options.checkpoint else None
