"""Hand annotations of neurons: the SQLite store, import/export, merging and agreement.

Modules: :mod:`.store` (:class:`AnnotationStore`: opening, writing, reading), :mod:`.records`
(:class:`Annotation` and the cleaning of fields), :mod:`.schema` (the file layout),
:mod:`.sqlite_file` (opening the file, read-only modes), :mod:`.io` (CSV/JSON export and import,
backup), :mod:`.merge` (:func:`merge_stores`), :mod:`.agreement` (comparing authors),
:mod:`.errors` (the store's errors, all :class:`nsi_widgets.NsiError`).
"""
from .errors import (AnnotationStoreError, BackupExistsError, NotAnAnnotationStoreError, SchemaVersionError,
                     StoreIsADirectoryError, StoreLockedError, StoreNotFoundError, StorePermissionError,
                     StoreReadOnlyError)
from .io import CSV_COLUMNS, MAX_IMPORT_BYTES
from .merge import merge_stores
from .records import ALL_AUTHORS, Annotation, Conflict, ImportReport, normalize_label
from .schema import SCHEMA_VERSION
from .store import AnnotationStore

__all__ = ["ALL_AUTHORS", "Annotation", "AnnotationStore", "AnnotationStoreError", "BackupExistsError", "Conflict",
           "CSV_COLUMNS", "ImportReport", "MAX_IMPORT_BYTES", "NotAnAnnotationStoreError", "SCHEMA_VERSION",
           "SchemaVersionError", "StoreIsADirectoryError", "StoreLockedError", "StoreNotFoundError",
           "StorePermissionError", "StoreReadOnlyError", "merge_stores", "normalize_label"]
