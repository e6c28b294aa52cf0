"""The one streaming engine: passes over a dataset, each batch handed to every consumer.

A *pass* reads a dataset (or chosen items of it) batch by batch, runs the model once per batch with
hooks on the layers its consumers need, and hands each layer's output to every consumer that asked for
it, as the layer produces it (so the map can be freed early), then the whole batch. A second consumer
adds no second forward. Every analysis is a set of consumers: the running top-N of the index, its
crop statistics, dissection's quantiles and IoU tallies, pooled activations for concept vectors, CKA
sums...

A *consumer* (:class:`Consumer`) keeps a state that it can save as plain arrays (:meth:`~Consumer.state`),
load (:meth:`~Consumer.load_state`) and merge with another shard's state (:meth:`~Consumer.merge_state`;
associative, so that the order of merging does not matter), and gives a :meth:`~Consumer.result`. From
that protocol every pass gets, without any analysis doing anything for it:

* bounded memory: states are bounded by the consumers, never by the dataset;
* checkpoints: every ``checkpoint.every`` rounds the (merged) states are written atomically
  (:mod:`.checkpoint`), and a rerun resumes from them, bit for bit equal to an uninterrupted run;
* ``torch.distributed``: batch ``b`` runs on rank ``b % world_size`` (whole batches, the same batches
  one process runs, so activations are computed exactly as by one process), then states are gathered
  and merged in rank order, so every rank returns the same result (:mod:`.distributed`);
* progress bars, on rank 0 only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import distributed
from .checkpoint import Checkpoint, Section
from .data import DataCheck, load_batches, split_batches
from .layers import LayerRecorder


@dataclass
class Batch:
    """One batch of a pass, as consumers see it.

    Attributes
    ----------
    number : int
        The batch's number in the pass (the same on every rank).
    indices : Tensor (B,) int64
        Dataset indices, ascending.
    images : Tensor (B, 3, H, W) float32
        RGB in ``[0, 1]``, on the CPU, as read from the dataset.
    labels : Tensor (B,) int64
        Class ids, ``-1`` where unlabelled.
    valid : Tensor (B,) bool
        False for images that are skipped (non-finite pixels with ``skip_nonfinite``).
    extra : Tensor or None
        Per-item extras of the data's items, stacked (e.g. concept masks ``(B, K, H, W)``), see
        :class:`~nsi_widgets.core.data.DataCheck`.
    inputs : Tensor or None
        The model's input on its device (after ``preprocess``), when the pass runs the model.
    """

    number: int
    indices: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    extra: torch.Tensor | None = None
    inputs: torch.Tensor | None = None


class Consumer:
    """Base class of everything that accumulates over a pass (see the module docstring).

    Subclasses set ``layers`` (names of the layers whose outputs they need; empty for consumers of
    images only) and implement the methods they need; ``state``/``load_state``/``merge_state`` are
    required for checkpoints and several processes.
    """

    layers: tuple[str, ...] = ()

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        """One of ``layers`` produced ``output`` (on the model's device) for ``batch``."""

    def on_batch(self, batch: Batch) -> None:
        """``batch`` is done (every layer fired, or no forward was run)."""

    def state(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (no objects, no pickles)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed or merged")

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Replace the state by a saved one."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed or merged")

    def merge_state(self, state: dict[str, np.ndarray]) -> None:
        """Fold another shard's state into this one (associative and commutative)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be checkpointed or merged")

    def result(self):
        """What the consumer computed."""
        raise NotImplementedError


@dataclass(frozen=True)
class PassOptions:
    """How a pass reads and runs: batch size, DataLoader workers, device, preprocess, checks, progress."""

    batch_size: int = 64
    num_workers: int = 0
    device: torch.device = torch.device("cpu")
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None
    check: DataCheck | None = None
    progress: bool = True


def run_pass(name: str, model: nn.Module | None, data, modules: dict[str, nn.Module],
             consumers: Sequence[Consumer], options: PassOptions, *, indices: Sequence[int] | None = None,
             checkpoint: Checkpoint | None = None, forward: bool = True) -> None:
    """Run one pass named ``name`` over ``indices`` of ``data`` (default: all), feeding ``consumers``.

    ``modules`` maps layer names to the model's modules; each consumer's ``layers`` must be among
    them. With ``forward=False`` (or when no consumer needs a layer) the model is not run and
    consumers see images only. With a ``checkpoint``, a finished pass is loaded instead of run, an
    unfinished one resumes where it stopped.
    """
    needed = {n for c in consumers for n in c.layers}
    missing = needed - set(modules)
    if missing:
        raise ValueError(f"consumers need layers {sorted(missing)} that the pass does not record")
    batches = split_batches(range(len(data)) if indices is None else indices, options.batch_size)
    section = checkpoint.section(name) if checkpoint is not None else None
    if section is not None and section.finished:
        for consumer, state in zip(consumers, section.states):
            consumer.load_state(state)
        return
    start = 0
    empty = [c.state() for c in consumers] if (distributed.active() or checkpoint is not None) else None
    if section is not None:
        start = section.batches_done
        if distributed.is_main():
            for consumer, state in zip(consumers, section.states):
                consumer.load_state(state)
    recorded = {n: modules[n] for n in modules if n in needed} if forward and model is not None else {}
    _Runner(name, model, data, recorded, consumers, options, batches, start, checkpoint, empty).run()


class _Runner:
    """The loop of one pass on one rank: rounds of one batch per rank, checkpoints, the final merge."""

    def __init__(self, name, model, data, modules, consumers, options, batches, start, checkpoint, empty):
        self.name, self.model, self.data, self.modules = name, model, data, modules
        self.consumers, self.options, self.batches, self.start = list(consumers), options, batches, start
        self.checkpoint, self.empty = checkpoint, empty
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.by_layer = {n: [c for c in self.consumers if n in c.layers] for n in modules}

    def run(self) -> None:
        n_rounds = -(-(len(self.batches) - self.start) // self.world)
        mine = [self.start + k * self.world + self.rank for k in range(n_rounds)]
        mine = [b for b in mine if b < len(self.batches)]
        bar = self._progress()
        loader = iter(load_batches(self.data, [self.batches[b] for b in mine], self.options.num_workers,
                                   self.options.check))
        current: dict = {}
        with LayerRecorder(self.modules, lambda n, o: self._on_layer(current["batch"], n, o)) as recorder, \
                torch.inference_mode():
            for k in range(n_rounds):
                number = self.start + k * self.world + self.rank
                if number < len(self.batches):
                    indices, images, labels, valid, extra = next(loader)
                    current["batch"] = batch = Batch(number, indices, images, labels, valid, extra)
                    if self.modules:
                        batch.inputs = self._inputs(images)
                        recorder.run(self.model, batch.inputs)
                    for consumer in self.consumers:
                        consumer.on_batch(batch)
                    batch.inputs = None
                if bar is not None:
                    first = self.start + k * self.world
                    bar.update(sum(len(self.batches[b]) for b in range(first, min(first + self.world, len(self.batches)))))
                done = self.start + (k + 1) * self.world
                if self.checkpoint is not None and (k + 1) % self.checkpoint.every == 0 and done < len(self.batches):
                    self._save(done, finished=False)
        if bar is not None:
            bar.close()
        self._merge_all()
        if self.checkpoint is not None:
            self.checkpoint.save(self.name, Section(len(self.batches), True, [c.state() for c in self.consumers]))

    def _on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        for consumer in self.by_layer[name]:
            consumer.on_layer(batch, name, output)

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        inputs = images.to(self.options.device, non_blocking=True)
        return self.options.preprocess(inputs) if self.options.preprocess is not None else inputs

    def _gather(self, what: str) -> list[list[dict]]:
        """Every rank's consumer states, in rank order."""
        return distributed.all_gather([c.state() for c in self.consumers], f"{what} of pass {self.name!r}")

    def _merge_into_main(self, gathered: list[list[dict]]) -> None:
        """Rank 0 folds in the other ranks' states; the others start again from empty states."""
        for i, consumer in enumerate(self.consumers):
            if self.rank == 0:
                for states in gathered[1:]:
                    consumer.merge_state(states[i])
            else:
                consumer.load_state(self.empty[i])

    def _save(self, done: int, finished: bool) -> None:
        if self.world > 1:
            self._merge_into_main(self._gather("checkpointing the states"))
        self.checkpoint.save(self.name, Section(done, finished, [c.state() for c in self.consumers]))

    def _merge_all(self) -> None:
        """Every rank ends with the states of all ranks merged in rank order (identical everywhere)."""
        if self.world == 1:
            return
        gathered = self._gather("merging the states")
        for i, consumer in enumerate(self.consumers):
            consumer.load_state(gathered[0][i])
            for states in gathered[1:]:
                consumer.merge_state(states[i])

    def _progress(self):
        if not self.options.progress or not distributed.is_main():
            return None
        from tqdm.auto import tqdm

        total = sum(len(b) for b in self.batches)
        done = sum(len(b) for b in self.batches[:self.start])
        return tqdm(total=total, initial=done, desc=self.name, unit="img", leave=True)
