"""The streaming top-N scan (METHODS.md section 1).

For every unit (channel) of every requested layer, keep the ``N`` images with the largest map
maximum, with the location of that maximum. State lives on the model's device and is bounded by
``units x N``; partial states merge associatively (:meth:`TopNState.merge`), which is what
checkpoint/resume (and a split over several processes) rests on.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.data import iterate_batches
from ..core.layers import LayerRecorder
from ..core.storage import read_archive, write_archive

CHECKPOINT_FORMAT = "nsi-widgets-scan-checkpoint"
CHECKPOINT_VERSION = 1


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


def scan_top_n(model: nn.Module, data: Sequence, modules: dict[str, nn.Module], top_n: int, *,
               preprocess: Callable | None, batch_size: int, device: torch.device, num_workers: int = 0,
               progress=None, checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 50,
               checkpoint_key: dict | None = None, n_images: int,
               ) -> tuple[dict[str, TopNState], np.ndarray, dict[str, tuple[int, ...]]]:
    """Scan ``data`` and return per-layer top-N states, the labels of all images, and map shapes.

    Labels of every image are kept (one int64 each: negligible next to the images) so that the
    class index can be computed without reading the dataset again.
    """
    states: dict[str, TopNState] = {}
    labels = np.full(n_images, -1, dtype=np.int64)
    map_shapes: dict[str, tuple[int, ...]] = {}
    start = 0
    key = dict(checkpoint_key or {}, batch_size=batch_size, top_n=top_n, n_images=n_images,
               layers=list(modules))
    if checkpoint is not None and Path(checkpoint).exists():
        start, states, labels, map_shapes = _load_checkpoint(checkpoint, key, device)
        if progress is not None:
            progress.update(start)

    batch = {}

    def on_output(name: str, output: torch.Tensor) -> None:
        # Reduce each map as soon as the layer produces it, so the output can be freed early.
        state = states.get(name)
        if state is None:
            state = states[name] = TopNState.empty(output.shape[1], top_n, device=output.device)
            map_shapes[name] = tuple(output.shape[1:])
        values, positions = spatial_max(output, threshold=state.values[:, -1])
        state.update(values, positions, batch["indices"].to(values.device))

    batches_since_save = 0
    with LayerRecorder(modules, on_output) as recorder, torch.inference_mode():
        for batch_indices, images, batch_labels in iterate_batches(
                data, range(start, n_images), batch_size, num_workers):
            inputs = images.to(device, non_blocking=True)
            if preprocess is not None:
                inputs = preprocess(inputs)
            batch["indices"] = batch_indices
            recorder.run(model, inputs)
            labels[batch_indices.numpy()] = batch_labels.numpy()
            if progress is not None:
                progress.update(len(batch_indices))
            batches_since_save += 1
            if checkpoint is not None and batches_since_save >= checkpoint_every:
                _save_checkpoint(checkpoint, key, int(batch_indices[-1]) + 1, states, labels, map_shapes)
                batches_since_save = 0
    if checkpoint is not None:
        _save_checkpoint(checkpoint, key, n_images, states, labels, map_shapes)
    return states, labels, map_shapes


def _save_checkpoint(path, key: dict, next_index: int, states: dict[str, TopNState], labels: np.ndarray,
                     map_shapes: dict[str, tuple[int, ...]]) -> None:
    """Write the scan state atomically (temp file + rename): a crash leaves the previous checkpoint."""
    manifest = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "key": key,
                "next_index": next_index, "map_shapes": {k: list(v) for k, v in map_shapes.items()},
                "layers": list(states)}
    arrays = {"labels": labels}
    for i, (name, state) in enumerate(states.items()):
        for field, value in state.to_numpy().items():
            arrays[f"layer{i}_{field}"] = value
    write_archive(path, manifest, arrays, what="checkpoint")


def _load_checkpoint(path, key: dict, device):
    try:
        with read_archive(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, what="checkpoint") as z:
            manifest = z.manifest
            labels = z.array("labels")
            states = {name: TopNState.from_numpy({f: z.array(f"layer{i}_{f}") for f in ("values", "indices", "positions")},
                                                 device=device)
                      for i, name in enumerate(manifest["layers"])}
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot resume from checkpoint {str(path)!r}: {err}. Delete it or pass another "
                         "checkpoint path to start afresh") from None
    saved = manifest["key"]
    differing = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k))
    if differing:
        details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {key.get(k)!r}" for k in differing)
        raise ValueError(f"checkpoint {str(path)!r} belongs to a different run ({details}). Resume with the "
                         "same model, data and arguments, or pass another checkpoint path")
    map_shapes = {k: tuple(v) for k, v in manifest["map_shapes"].items()}
    return int(manifest["next_index"]), states, labels, map_shapes
