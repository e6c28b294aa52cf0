"""Layer activations as features: pooled or flattened, collected for chosen images in one pass.

* :func:`features_of`: one image's representation at a layer. ``"pooled"``: the spatial mean of each
  channel, ``(C,)`` (the default of the similarity measures: layers of different resolutions are
  compared on their channels, and it costs nothing beside the forward); ``"flatten"``: every value of
  the map, ``(C * h * w,)`` (what TCAV and Kornblith et al. use; costs ``m x C h w`` per image for
  minibatch CKA's Gram matrices). Outputs that are already ``(B, D)`` are used as they are.
* :class:`ActivationCollector`: the features of several layers for a chosen set of dataset items,
  filled as a pass goes; its memory (``items x features x 4`` bytes) is checked before the pass
  (:func:`check_budget`) and does not depend on the rest of the dataset. State: one float32 array per
  layer and which rows are filled; merging copies the other shard's filled rows (exact).
* :class:`ModelPair`: two models run one after the other on the same input batch, so that one pass
  over the data records the layers of both (each model runs once per image) and consumers see both
  models' activations of the same images together.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError
from ..core.passes import Batch, Consumer

FEATURES = ("pooled", "flatten")


def features_of(output: torch.Tensor, features: str, dtype: torch.dtype | None = None,
                valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, D)`` features of a layer's output ``(B, C, ...)``: channel means or every value.

    ``dtype``: of the result; channel means are taken in the map's dtype (torch's cascaded sums: a
    relative error of about 1e-7 in float32, 25x faster than converting the map first) and then
    converted. ``valid``: keep only these images (bool ``(B,)``).
    """
    if valid is not None and not bool(valid.all()):
        output = output[valid.to(output.device)]
    if output.ndim <= 2 or features == "flatten":
        flat = output.flatten(1) if output.ndim > 1 else output[:, None]
        return flat if dtype is None else flat.to(dtype)
    means = output.flatten(2).mean(dim=2)
    return means if dtype is None else means.to(dtype)


def check_features(features: str) -> str:
    if features not in FEATURES:
        raise InputError(f"features must be one of {FEATURES}, not {features!r}")
    return features


def feature_size(shape: Sequence[int], features: str) -> int:
    """Number of features of one image for a layer whose output (without the batch axis) is ``shape``."""
    if len(shape) <= 1 or features == "flatten":
        return int(np.prod(shape)) if len(shape) else 1
    return int(shape[0])


def check_budget(n_items: int, sizes: dict[str, int], max_bytes: int, what: str) -> None:
    """Refuse, before any pass, to keep more than ``max_bytes`` of float32 features."""
    needed = 4 * n_items * sum(sizes.values())
    if needed > max_bytes:
        raise InputError(f"{what} would keep {needed / 2**20:.0f} MiB of activations ({n_items} images x "
                         f"{sum(sizes.values())} features), more than max_feature_bytes={max_bytes}; use "
                         "fewer images (n_images=), features='pooled', or raise max_feature_bytes")


class ActivationCollector(Consumer):
    """Features of ``layers`` for the dataset items ``indices`` (rows in the order given).

    Parameters
    ----------
    layers : dict of str to int
        Layer name -> number of features per image (see :func:`feature_size`).
    indices : sequence of int
        The dataset items to keep; others are skipped. Each item once.
    features : {"pooled", "flatten"}
    transform : callable, optional
        ``transform(name, output) -> output`` applied before :func:`features_of`.
    """

    def __init__(self, layers: dict[str, int], indices: Sequence[int], features: str = "pooled",
                 transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None):
        self.layers = tuple(layers)
        self.features, self.transform = features, transform
        order = np.asarray(indices, dtype=np.int64)
        if len(np.unique(order)) != len(order):
            raise ValueError("ActivationCollector: indices must be distinct")
        self.rows = {int(i): r for r, i in enumerate(order.tolist())}
        self.values = {name: np.zeros((len(order), size), np.float32) for name, size in layers.items()}
        self.filled = np.zeros(len(order), bool)

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        keep = [(b, self.rows[i]) for b, i in enumerate(batch.indices.tolist()) if i in self.rows]
        if not keep:
            return
        if self.transform is not None:
            output = self.transform(name, output)
        where, rows = (torch.as_tensor(v) for v in zip(*keep))
        values = features_of(output[where.to(output.device)], self.features).float().cpu().numpy()
        self.values[name][rows.numpy()] = values

    def on_batch(self, batch: Batch) -> None:
        for i, ok in zip(batch.indices.tolist(), batch.valid.tolist()):
            if i in self.rows and ok:
                self.filled[self.rows[i]] = True

    def state(self) -> dict[str, np.ndarray]:
        return {"filled": self.filled.copy(), **{f"values|{n}": v.copy() for n, v in self.values.items()}}

    def load_state(self, state) -> None:
        self.filled = np.array(state["filled"], dtype=bool)
        self.values = {n: np.array(state[f"values|{n}"], dtype=np.float32) for n in self.values}

    def merge_state(self, state) -> None:
        theirs = np.asarray(state["filled"], dtype=bool)
        for n in self.values:
            self.values[n][theirs] = np.asarray(state[f"values|{n}"], dtype=np.float32)[theirs]
        self.filled |= theirs

    def result(self) -> dict[str, np.ndarray]:
        """Per layer ``(n, D)`` float32 (rows of invalid items are zero and ``filled`` False)."""
        return self.values


class ModelPair(nn.Module):
    """Run model ``a`` then model ``b`` on the same input (each with its own preprocess).

    Its layers are named ``"a.<name>"`` and ``"b.<name>"`` (:func:`pair_layer_names`). The output is
    nothing useful: the pair exists to be recorded by a pass.
    """

    def __init__(self, a: nn.Module, b: nn.Module, preprocess_a: Callable | None = None,
                 preprocess_b: Callable | None = None):
        super().__init__()
        self.a, self.b = a, b
        self._pre = (preprocess_a, preprocess_b)

    def forward(self, x: torch.Tensor) -> None:
        pre_a, pre_b = self._pre
        self.a(pre_a(x) if pre_a is not None else x)
        self.b(pre_b(x) if pre_b is not None else x)


def pair_layer_names(prefix: str, names: Sequence[str]) -> list[str]:
    return [f"{prefix}.{n}" for n in names]
