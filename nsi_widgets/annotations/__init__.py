"""Hand annotations of neurons: the SQLite store, import/export, merging and agreement."""
from .store import (ALL_AUTHORS, Annotation, AnnotationStore, AnnotationStoreError, Conflict, ImportReport,
                    NotAnAnnotationStoreError, SchemaVersionError, StoreLockedError, StoreReadOnlyError,
                    merge_stores, normalize_label)

__all__ = ["ALL_AUTHORS", "Annotation", "AnnotationStore", "AnnotationStoreError", "Conflict", "ImportReport",
           "NotAnAnnotationStoreError", "SchemaVersionError", "StoreLockedError", "StoreReadOnlyError",
           "merge_stores", "normalize_label"]
