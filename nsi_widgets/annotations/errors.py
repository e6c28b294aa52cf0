"""The annotation store's errors: about its file, its folder, locks and versions.

Each derives from :class:`nsi_widgets.core.errors.NsiError` (so the command line prints it as one
``error:`` line) and from the built-in type it refines (``ValueError``, ``PermissionError``,
``FileNotFoundError``...), so code written against the built-in types keeps working. Bad
arguments and bad records (an empty label, a unit out of range, a CSV line that does not parse)
are :class:`~nsi_widgets.core.errors.InputError` / :class:`~nsi_widgets.core.errors.InputTypeError`.
"""
from __future__ import annotations

from ..core.errors import NsiError

__all__ = ["AnnotationStoreError", "BackupExistsError", "NotAnAnnotationStoreError", "SchemaVersionError",
           "StoreIsADirectoryError", "StoreLockedError", "StoreNotFoundError", "StorePermissionError",
           "StoreReadOnlyError"]


class AnnotationStoreError(NsiError):
    """Base class of the annotation store's errors about files, locks and versions."""


class NotAnAnnotationStoreError(AnnotationStoreError, ValueError):
    """The file exists but is not an nsi-widgets annotation store."""


class SchemaVersionError(AnnotationStoreError):
    """The store was written by a newer nsi-widgets with a schema this version cannot read."""


class StorePermissionError(AnnotationStoreError, PermissionError):
    """A file or folder the store needs cannot be read (or, for the subclass, written)."""


class StoreReadOnlyError(StorePermissionError):
    """The store (or its directory) cannot be written."""


class StoreLockedError(AnnotationStoreError, TimeoutError):
    """Another process held the store's write lock for longer than the timeout."""


class StoreNotFoundError(AnnotationStoreError, FileNotFoundError):
    """A missing file or folder: the store opened read-only, the folder of a new store, a file to import."""


class StoreIsADirectoryError(AnnotationStoreError, IsADirectoryError):
    """A folder where the store needs a file (the store itself, or a file to import)."""


class BackupExistsError(AnnotationStoreError, FileExistsError):
    """A backup's target exists; backups never replace a file."""
