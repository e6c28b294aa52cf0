"""The package's error types: what the command line prints as one ``error:`` line (exit status 2).

Every error a user can cause (bad arguments, data or files) is one of these, so that callers can
catch them as a group (``except nsi.NsiError``) and the CLI can tell a user error from a bug. Each
also derives from the built-in type it refines (``ValueError``, ``TypeError``...), so code written
against the built-in types keeps working.
"""
from __future__ import annotations


class NsiError(Exception):
    """Base of every error a user can cause; the message says what is wrong and what to do."""


class InputError(NsiError, ValueError):
    """A bad argument or bad data, found before long work starts."""


class InputTypeError(NsiError, TypeError):
    """An argument or data item of the wrong type."""


class DataReadError(NsiError, RuntimeError):
    """Reading an item of the user's dataset raised; the message names the item and the cause."""


class IndexFileError(NsiError, ValueError):
    """A file that is not one of ours, is damaged, is of a newer format version, or is inconsistent."""


class CheckpointMismatchError(NsiError, ValueError):
    """A checkpoint written by a different run (other data, model, preprocess or arguments)."""


class OutputError(NsiError, OSError):
    """An output location that cannot be written (missing or read-only folder, existing file, full disk)."""


class DistributedError(NsiError, RuntimeError):
    """Another process of a distributed run failed or did not answer within the timeout."""
