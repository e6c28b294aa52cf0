"""``torch.distributed`` for the engine: which process this is, merging states, failing clearly.

A pass shards its batches over the processes of the default process group (batch ``b`` runs on
rank ``b % world_size``); consumers' states are then gathered and merged in rank order, so every
rank returns the same result, equal to one process's bit for bit. Only rank 0 writes files and shows
progress. CPU uses the ``gloo`` backend, CUDA ``nccl``.

Timeouts: a collective waits for the other ranks at most the process group's timeout. Started
from the command line, the group is made with :data:`DEFAULT_TIMEOUT_S` seconds (``--dist-timeout``
or the environment variable ``NSI_DIST_TIMEOUT`` change it); a rank that dies makes the others raise
:class:`~nsi_widgets.core.errors.DistributedError` at their next collective, at the latest after the
timeout (``torchrun``'s agent also stops the other workers when one fails). With a checkpoint, a
rerun resumes where the last checkpoint left off, with any number of processes.
"""
from __future__ import annotations

import datetime as _dt
import os
from typing import Any

import torch
import torch.distributed as dist

from .errors import DistributedError

DEFAULT_TIMEOUT_S = 300


def active() -> bool:
    """Whether a default process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files and shows progress (rank 0)."""
    return rank() == 0


def started_by_launcher() -> bool:
    """Whether the environment of ``torchrun`` (or a similar launcher) asks for several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_environment(timeout_s: float | None = None, device: str | None = None) -> str:
    """Initialise the default process group from ``torchrun``'s environment, if not done yet.

    Chooses ``nccl`` when the device is CUDA and ``gloo`` otherwise. Returns the device this rank
    should use (``cuda:LOCAL_RANK`` on CUDA, else ``device`` or ``"cpu"``).
    """
    timeout_s = float(timeout_s if timeout_s is not None else os.environ.get("NSI_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device is None or str(device).startswith("cuda")) and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=_dt.timedelta(seconds=timeout_s))
    return f"cuda:{local_rank}" if use_cuda else (device or "cpu")


def all_gather(value: Any, what: str) -> list[Any]:
    """Every rank's ``value`` (any picklable object, between our own processes only), in rank order.

    Raises
    ------
    DistributedError
        When another rank failed or did not answer within the process group's timeout.
    """
    if not active():
        return [value]
    gathered: list[Any] = [None] * world_size()
    try:
        dist.all_gather_object(gathered, value)
    except Exception as err:  # noqa: BLE001 - gloo/nccl raise several types; the cause is kept
        raise DistributedError(
            f"rank {rank()}: another process of the distributed run failed or did not answer while "
            f"{what} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); with a "
            "checkpoint, rerun the same command to resume") from err
    return gathered


def check_same(value: Any, what: str) -> None:
    """Raise :class:`DistributedError` unless every rank has the same ``value`` (e.g. a run key)."""
    values = all_gather(value, f"comparing {what}")
    if any(v != values[0] for v in values[1:]):
        differing = [r for r, v in enumerate(values) if v != values[0]]
        raise DistributedError(f"the processes of the distributed run disagree on {what} (ranks {differing} "
                               "differ from rank 0): give every rank the same model, data and arguments")
