"""Merging stores: copying the current annotations of other stores (e.g. one per student) into one."""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import ImportReport, Problems

if TYPE_CHECKING:
    from .store import AnnotationStore

__all__ = ["merge_stores"]


class MergeMixin:
    """The merge method of :class:`~nsi_widgets.annotations.AnnotationStore`."""

    def merge(self, other: "AnnotationStore | str | os.PathLike", on_conflict: str = "report") -> ImportReport:
        """Copy the current annotations of another store (every model and author) into this one.

        Merging is repeatable: records equal to ours are skipped, different ones are conflicts
        (see :meth:`import_csv`). Nothing is deleted; the other store's history stays in its file.
        A store given as a path is opened read-only (so it may lie in a read-only folder).

        Returns
        -------
        ImportReport
        """
        if isinstance(other, MergeMixin):
            source, records = other, other._current_rows(author=None, all_models=True)
        else:
            path = Path(os.fspath(other)).expanduser()
            with type(self)(path, read_only=True, timeout=self._timeout) as source:
                records = source._current_rows(author=None, all_models=True)
        return self._apply_records(records, Problems(), source=str(source.path), on_conflict=on_conflict,
                                   action="merge")


def merge_stores(sources: Iterable["AnnotationStore | str | os.PathLike"], into: "AnnotationStore | str | os.PathLike",
                 *, on_conflict: str = "report", index: Any = None, model: str | None = None,
                 author: str | None = None, timeout: float = 10.0) -> "AnnotationStore":
    """Merge several stores (e.g. one per student) into one, for comparing with :meth:`~AnnotationStore.agreement`.

    Parameters
    ----------
    sources : iterable of AnnotationStore or path
        The stores to copy current annotations from (opened read-only if given as paths).
    into : AnnotationStore or path
        The target; created if it does not exist.
    on_conflict : {"report", "theirs", "ours"}
        See :meth:`AnnotationStore.import_csv`. Unresolved conflicts raise a warning.
    index, model, author, timeout
        Used to open ``into`` when it is a path. If neither ``index`` nor ``model`` is given and
        the merged file holds exactly one model fingerprint, the returned store is bound to it.

    Returns
    -------
    AnnotationStore
        The target store (open; close it when done). Its ``merge_reports`` attribute lists one
        :class:`ImportReport` per source.
    """
    from .store import AnnotationStore  # the store is built from this module's mixin

    sources = list(sources)
    opened_here = not isinstance(into, AnnotationStore)
    store = into if not opened_here else AnnotationStore(into, index=index, model=model, author=author,
                                                         timeout=timeout)
    try:
        reports = [store.merge(source, on_conflict=on_conflict) for source in sources]
        if opened_here and index is None and model is None:
            fingerprints = store.models()
            if len(fingerprints) == 1:
                store._model = next(iter(fingerprints))
    except BaseException:
        if opened_here:
            store.close()
        raise
    store.merge_reports = reports
    unresolved = sum(len(r.unresolved) for r in reports)
    if unresolved:
        warnings.warn(f"merge into {store.path}: {unresolved} conflicting annotations were not merged; "
                      f"see store.merge_reports or re-run with on_conflict='theirs' or 'ours'", stacklevel=2)
    return store
