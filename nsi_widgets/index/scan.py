"""The streaming top-N scan (METHODS.md section 1).

For every unit (channel) of every requested layer, keep the ``N`` images with the largest map
maximum, with the location of that maximum. State lives on the model's device and is bounded by
``units x N``; partial states merge associatively (:meth:`TopNState.merge`), which is what
checkpoint/resume and a split over several processes rest on. :class:`TopNScan` is the pass consumer
(:mod:`nsi_widgets.core.passes`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..core.passes import Batch, Consumer


@dataclass
class TopNState:
    """Running top-N of one layer.

    Attributes
    ----------
    values : Tensor (C, N) float32
        Map maxima, descending per row; ``-inf`` where fewer than N images were seen.
    indices : Tensor (C, N) int64
        Dataset index of each entry (``-1`` where empty). Ties in value: smaller index first.
    positions : Tensor (C, N) int64
        Flat (row-major) position of the maximum in the feature map.
    """

    values: torch.Tensor
    indices: torch.Tensor
    positions: torch.Tensor

    @classmethod
    def empty(cls, n_units: int, top_n: int, device=None) -> "TopNState":
        return cls(torch.full((n_units, top_n), -torch.inf, device=device),
                   torch.full((n_units, top_n), -1, dtype=torch.int64, device=device),
                   torch.full((n_units, top_n), -1, dtype=torch.int64, device=device))

    @property
    def top_n(self) -> int:
        return self.values.shape[1]

    def update(self, batch_max: torch.Tensor, batch_argmax: torch.Tensor, batch_indices: torch.Tensor) -> None:
        """Add one batch: ``batch_max``/``batch_argmax`` are (B, C), ``batch_indices`` (B,), ascending,
        and larger than every index already held (a sequential scan). ``batch_argmax`` need only be
        right where ``batch_max`` beats the unit's current N-th value: no other entry can enter."""
        # Skip the sort when nothing in the batch beats the current N-th value of any unit.
        if not bool((batch_max.t() >= self.values[:, -1:]).any()):
            return
        values = torch.cat([self.values, batch_max.t().float()], dim=1)
        indices = torch.cat([self.indices, batch_indices.to(self.indices.device).expand(batch_max.shape[1], -1)], dim=1)
        positions = torch.cat([self.positions, batch_argmax.t()], dim=1)
        # Held entries come first and in (value desc, index asc) order, the batch follows with larger
        # indices in ascending order: a stable descending sort therefore breaks ties by index.
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.top_n]
        # In place: the state keeps the memory it was given at the start, so the scan allocates no
        # long-lived block between the large transient feature maps (which fragments the heap).
        torch.gather(values, 1, order, out=self.values)
        torch.gather(indices, 1, order, out=self.indices)
        torch.gather(positions, 1, order, out=self.positions)

    def merge(self, other: "TopNState") -> "TopNState":
        """The top-N of the union of two states (any index order); associative and commutative."""
        if self.values.shape != other.values.shape:
            raise ValueError(f"cannot merge states of shapes {tuple(self.values.shape)} and "
                             f"{tuple(other.values.shape)}")
        values = torch.cat([self.values, other.values.to(self.values.device)], dim=1)
        indices = torch.cat([self.indices, other.indices.to(self.values.device)], dim=1)
        positions = torch.cat([self.positions, other.positions.to(self.values.device)], dim=1)
        # Lexicographic (value desc, index asc); empty slots (index -1) sort after real ones.
        sort_key = torch.where(indices < 0, torch.iinfo(torch.int64).max, indices)
        by_index = torch.sort(sort_key, dim=1, stable=True).indices
        values, indices, positions = values.gather(1, by_index), indices.gather(1, by_index), positions.gather(1, by_index)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.top_n]
        return TopNState(values.gather(1, order), indices.gather(1, order), positions.gather(1, order))

    def to_numpy(self) -> dict[str, np.ndarray]:
        return {"values": self.values.cpu().numpy().astype(np.float32),
                "indices": self.indices.cpu().numpy(), "positions": self.positions.cpu().numpy()}

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray], device=None) -> "TopNState":
        return cls(torch.as_tensor(arrays["values"], device=device),
                   torch.as_tensor(arrays["indices"], device=device),
                   torch.as_tensor(arrays["positions"], device=device))


#: On CPU, maps at least this wide are reduced row by row first (see :func:`spatial_max`).
_ROW_FIRST_MIN_WIDTH = 32


def spatial_max(output: torch.Tensor, threshold: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Map maximum and its flat row-major position (first on ties) per (image, channel).

    ``output`` is (B, C, ...spatial). NaN maxima become ``-inf`` so they never enter a top list.

    ``threshold`` (C,), each unit's current N-th value, lets the scan skip locating maxima that cannot
    enter a top list: positions are then exact wherever ``value > threshold`` and ``-1`` elsewhere.
    Why: on CPU, ``max`` with indices is a scalar loop, up to 8x slower than ``amax``, and it made
    up most of the scan's cost over the forward pass. So (CPU only):

    * wide 2-D maps: row maxima by ``amax`` over the last axis (one vectorised pass), then, for the
      maps that beat the threshold, the first maximal row and the first maximal column of that row;
    * other maps: ``amax``, then ``max`` with indices only over the maps that beat the threshold.

    The share of maps that beat the threshold falls like N / images seen.

    Both give exactly what ``flatten(2).max(dim=2)`` gives (``tests/test_scan.py`` checks ties and NaN).
    """
    maps = output.detach()
    if maps.ndim == 2:
        maps = maps.unsqueeze(-1)
    if maps.device.type != "cpu":
        values, positions = maps.flatten(2).max(dim=2)
    elif maps.ndim == 4 and maps.shape[-1] >= _ROW_FIRST_MIN_WIDTH:
        values, positions = _row_first_max(maps, threshold)
    else:
        flat = maps.flatten(2)
        values = flat.amax(dim=2)
        positions = torch.full((values.numel(),), -1, dtype=torch.int64, device=maps.device)
        located = _located(values, threshold)
        if len(located):
            positions[located] = flat.reshape(values.numel(), -1).index_select(0, located).max(dim=1).indices
        positions = positions.view(values.shape)
    values = values.float()
    values = torch.where(torch.isnan(values), -torch.inf, values)
    return values, positions


def _row_first_max(maps: torch.Tensor, threshold: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``maps`` (B, C, H, W): the maximum and its first row-major position, via the row maxima: the
    first maximal row, then the first maximal column of that row (only where ``value > threshold``)."""
    height, width = maps.shape[-2:]
    row_max = maps.amax(dim=3)
    values = row_max.amax(dim=2)
    positions = torch.full((values.numel(),), -1, dtype=torch.int64, device=maps.device)
    located = _located(values, threshold)
    if len(located):
        rows = row_max.reshape(-1, height).index_select(0, located).max(dim=1).indices
        columns = maps.reshape(-1, height, width)[located, rows].max(dim=1).indices
        positions[located] = rows * width + columns
    return values, positions.view(values.shape)


def _located(values: torch.Tensor, threshold: torch.Tensor | None) -> torch.Tensor:
    """Flat indices of the (image, unit) maps whose maximum beats the unit's ``threshold`` (all if None)."""
    if threshold is None:
        return torch.arange(values.numel(), device=values.device)
    return (values > threshold.to(values.dtype)[None, :]).flatten().nonzero().squeeze(1)


class TopNScan(Consumer):
    """The running top-N of every unit of ``layers`` (METHODS.md section 1), as a pass consumer.

    Each layer's map is reduced as soon as the layer produces it. Images that are not ``valid``
    (skipped) never enter a top list. State: per layer the (C, N) values, dataset indices and flat
    positions, and the map shape; merging two states is :meth:`TopNState.merge` (exact, associative).
    """

    def __init__(self, layers: Sequence[str], top_n: int, device=None):
        self.layers = tuple(layers)
        self.top_n = int(top_n)
        self.device = device
        self.states: dict[str, TopNState] = {}
        self.map_shapes: dict[str, tuple[int, ...]] = {}

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        state = self.states.get(name)
        if state is None:
            state = self.states[name] = TopNState.empty(output.shape[1], self.top_n, device=output.device)
            self.map_shapes[name] = tuple(output.shape[1:])
        values, positions = spatial_max(output, threshold=state.values[:, -1])
        if not bool(batch.valid.all()):
            values[~batch.valid.to(values.device)] = -torch.inf
        state.update(values, positions, batch.indices.to(values.device))

    def state(self) -> dict[str, np.ndarray]:
        out = {}
        for name, state in self.states.items():
            for key, value in state.to_numpy().items():
                out[f"{name}/{key}"] = value
            out[f"{name}/map_shape"] = np.asarray(self.map_shapes[name], dtype=np.int64)
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.states, self.map_shapes = {}, {}
        for name in self.layers:
            if f"{name}/values" in state:
                self.states[name] = TopNState.from_numpy(
                    {k: state[f"{name}/{k}"] for k in ("values", "indices", "positions")}, device=self.device)
                self.map_shapes[name] = tuple(int(v) for v in state[f"{name}/map_shape"])

    def merge_state(self, state: dict[str, np.ndarray]) -> None:
        other = TopNScan(self.layers, self.top_n, self.device)
        other.load_state(state)
        for name, theirs in other.states.items():
            mine = self.states.get(name)
            self.states[name] = theirs if mine is None else mine.merge(theirs)
            self.map_shapes.setdefault(name, other.map_shapes[name])

    def result(self) -> dict[str, tuple[dict[str, np.ndarray], tuple[int, ...]]]:
        """Per layer: ``({"values", "indices", "positions"}, map_shape)``."""
        missing = [n for n in self.layers if n not in self.states]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output in the scan")
        return {name: (self.states[name].to_numpy(), self.map_shapes[name]) for name in self.layers}


class LabelCollector(Consumer):
    """The label of every image of the pass (one int64 each: negligible next to the images), so that
    class indexes need no second read of the dataset."""

    _UNSEEN = -2

    def __init__(self, n_images: int):
        self.labels = np.full(n_images, self._UNSEEN, dtype=np.int64)
        self.skipped = np.zeros(n_images, dtype=bool)

    def on_batch(self, batch: Batch) -> None:
        valid = batch.valid.numpy()
        self.labels[batch.indices.numpy()] = np.where(valid, batch.labels.numpy(), -1)
        self.skipped[batch.indices.numpy()] = ~valid

    def state(self) -> dict[str, np.ndarray]:
        return {"labels": self.labels.copy(), "skipped": self.skipped.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.labels = np.array(state["labels"], dtype=np.int64)
        self.skipped = np.array(state["skipped"], dtype=bool)

    def merge_state(self, state: dict[str, np.ndarray]) -> None:
        theirs = state["labels"]
        self.labels = np.where(theirs != self._UNSEEN, theirs, self.labels)
        self.skipped = self.skipped | np.asarray(state["skipped"], dtype=bool)

    def result(self) -> np.ndarray:
        """(n,) int64 labels, ``-1`` for unlabelled, skipped or unseen images."""
        return np.where(self.labels == self._UNSEEN, -1, self.labels)
