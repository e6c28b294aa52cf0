"""Checkpoints of every pass, keyed by everything that changes the result.

One checkpoint file serves a whole run of several passes: per pass (a *section*) the number of
batches done and every consumer's state. The file's *key* holds the fingerprints of the model
weights, the data and the preprocess (:mod:`.fingerprint`) and every argument that changes the
result. Opening a checkpoint whose key differs in anything raises
:class:`~nsi_widgets.core.errors.CheckpointMismatchError` naming what differs: a checkpoint of
folder A is never used for folder B, and a finished run's checkpoint never short-circuits a
different run. Writes are atomic (:func:`~.storage.atomic_write`): ``kill -9`` at any moment leaves
the previous checkpoint, and a resumed run equals an uninterrupted one bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import distributed
from .errors import CheckpointMismatchError, IndexFileError
from .storage import read_archive, write_archive

FORMAT = "nsi-widgets-checkpoint"
VERSION = 2


@dataclass
class Section:
    """The saved progress of one pass: batches done, whether it finished, each consumer's state."""

    batches_done: int = 0
    finished: bool = False
    states: list[dict[str, np.ndarray]] = field(default_factory=list)


class Checkpoint:
    """A checkpoint file for one run, identified by ``key`` (a JSON-able dict).

    Parameters
    ----------
    path : str or Path
    key : dict
        Everything the result depends on. An existing file with another key is refused.
    every : int
        Save every this many rounds of batches (one batch per process a round).
    """

    def __init__(self, path, key: dict, every: int = 50):
        self.path = Path(path)
        self.key = key
        self.every = max(1, int(every))
        self.sections: dict[str, Section] = {}
        if self.path.exists():
            try:
                self._load()
            except IndexFileError as err:
                raise IndexFileError(f"cannot resume from checkpoint {str(self.path)!r}: {err}. Delete it or "
                                     "pass another checkpoint path to start afresh") from None

    def _load(self) -> None:
        with read_archive(self.path, FORMAT, VERSION, what="checkpoint") as archive:
            manifest = archive.manifest
            saved = manifest.get("key")
            if not isinstance(saved, dict) or not isinstance(manifest.get("sections"), dict):
                raise archive.error("its key or sections are missing")
            differing = sorted(k for k in set(saved) | set(self.key) if saved.get(k) != self.key.get(k))
            if differing:
                details = "; ".join(f"{k}: checkpoint {_short(saved.get(k))} vs now {_short(self.key.get(k))}"
                                    for k in differing)
                raise CheckpointMismatchError(
                    f"checkpoint {str(self.path)!r} belongs to a different run ({details}). Resume with the "
                    "same model, data, preprocess and arguments, or pass another checkpoint path (or delete "
                    "this one) to start afresh")
            for name, entry in manifest["sections"].items():
                try:
                    states = [{k: archive.array(f"{name}/{i}/{k}") for k in keys}
                              for i, keys in enumerate(entry["states"])]
                    self.sections[name] = Section(int(entry["batches_done"]), bool(entry["finished"]), states)
                except (KeyError, TypeError, ValueError) as err:
                    raise archive.error(f"section {name!r} is malformed ({err})") from None

    def section(self, name: str) -> Section | None:
        """The saved progress of pass ``name``, or None."""
        return self.sections.get(name)

    def save(self, name: str, section: Section) -> None:
        """Record pass ``name``'s progress and write the file (rank 0 only; atomic)."""
        self.sections[name] = section
        if not distributed.is_main():
            return
        arrays = {}
        entries = {}
        for sname, s in self.sections.items():
            entries[sname] = {"batches_done": s.batches_done, "finished": s.finished,
                              "states": [list(state) for state in s.states]}
            for i, state in enumerate(s.states):
                for k, v in state.items():
                    arrays[f"{sname}/{i}/{k}"] = v
        write_archive(self.path, {"format": FORMAT, "version": VERSION, "key": self.key, "sections": entries},
                      arrays, what="checkpoint")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
