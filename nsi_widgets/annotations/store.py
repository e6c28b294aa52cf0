"""Hand annotations of neurons: a transactional, append-only store in one SQLite file.

A researcher names a neuron ("red-mushroom", "dog-face"); a class of students each label the
same layer and the teacher compares. Annotations are the one thing users create by hand, so the
store is built so that none is ever lost or corrupted, with several notebooks writing at once.

Data model
----------
Every change is one row of an append-only ``history`` table; nothing is ever updated or deleted
(triggers in the file refuse it). A row holds the model fingerprint, layer, unit, author, the
label, note, tags, the UTC time and what happened (``"set"``, ``"remove"``, ``"undo"``,
``"import"``, ``"merge"``). Its ``id`` is the annotation's ``revision``.

*The current annotation* of a neuron is kept **per author**: the key is
``(model fingerprint, layer, unit, author)`` and the current annotation is the key's latest
history row, unless that row is a removal. So two students writing into one shared file never
overwrite each other, and :meth:`AnnotationStore.agreement` compares authors. A store object has
a default ``author`` (the OS user name unless given): :meth:`~AnnotationStore.get`,
:meth:`~AnnotationStore.annotate`, :meth:`~AnnotationStore.remove`, :meth:`~AnnotationStore.undo`,
:meth:`~AnnotationStore.history`, :meth:`~AnnotationStore.all` and
:meth:`~AnnotationStore.search` act on that author's annotations unless ``author=`` says
otherwise; the read methods take ``author="*"`` (:data:`ALL_AUTHORS`) for everyone.
Exports and :meth:`~AnnotationStore.to_pandas` cover all authors by default.

A store object is bound to one model: given ``index`` (a :class:`nsi_widgets.results.NeuronIndex`)
it uses ``index.meta["model_fingerprint"]`` and rejects layers and units the index does not
have; given ``model`` (a fingerprint string) it uses that without validation; given neither it
is unbound (fingerprint ``""``, no validation). Reads and exports see the bound model only.
One file may hold annotations of several models (see :meth:`~AnnotationStore.models`);
imports and merges keep each record's own fingerprint, so nothing is dropped.

Undo restores the state before the current one and can be repeated (three edits, undo, undo
gives the first edit back); an undo is itself a history row, so history stays complete.

Several annotators: each in their own file (merge the files with :func:`merge_stores`) or under
their own author name in one file. Imports and merges never overwrite silently: a record whose
key already has a *different* current label, note or tags is a conflict, listed in the returned
:class:`ImportReport` and resolved as ``on_conflict`` says. Merges copy current annotations
(not the sources' full history, which stays in the source files) and never delete.

Durability and concurrency
--------------------------
WAL journal mode, ``synchronous=FULL`` (every committed annotation is on disk when
:meth:`~AnnotationStore.annotate` returns, even across a power loss; annotations are written
at human pace, so the fsync per write costs nothing noticeable), each write one
``BEGIN IMMEDIATE`` transaction, and a busy timeout for waiting on other writers. A process
killed in the middle of a write leaves the file valid with every committed annotation.
SQLite's lock is not fair: while one process writes continuously (a large import), the others
wait, up to ``timeout`` seconds, then get :class:`StoreLockedError` and nothing is written. WAL
needs shared memory between processes on one machine: keep the store on a local disk, not on a
network share (give each student their own file there and merge). A store in a read-only
folder can still be read with ``read_only=True`` (see :mod:`.sqlite_file` for the SQLite modes).

Files are data: nothing is pickled, text is stored as SQLite text, and a file is only opened
as a store if its application id, schema version and exact schema (no foreign triggers or
views) are ours (:mod:`.schema`); ``PRAGMA trusted_schema`` is off.

The store's parts: :mod:`.records` (records and field cleaning), :mod:`.schema` (the file
layout), :mod:`.sqlite_file` (opening), :mod:`.io` (CSV/JSON export and import, backup),
:mod:`.merge` (merging stores), :mod:`.agreement` (comparing authors).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..core.errors import InputError, InputTypeError
from .agreement import AgreementMixin
from .errors import AnnotationStoreError, StoreReadOnlyError
from .io import CSV_COLUMNS, ImportExportMixin
from .merge import MergeMixin
from .records import (ALL_AUTHORS, Annotation, Conflict, ImportReport, Problems, clean_author, clean_label,
                      clean_layer, clean_note, clean_tags, clean_unit, default_author, utc_now)
from .schema import FORMAT_NAME, ROW_COLUMNS, SCHEMA_VERSION  # noqa: F401 (also read from this module)
from .sqlite_file import IMMUTABLE, file_state, open_store_file, rollback_quietly, translate

__all__ = ["AnnotationStore", "CONFLICT_POLICIES"]

CONFLICT_POLICIES = ("report", "theirs", "ours")
_READ_ATTEMPTS = 5


class AnnotationStore(ImportExportMixin, MergeMixin, AgreementMixin):
    """Hand annotations of neurons in one SQLite file, safe for several writing processes.

    Parameters
    ----------
    path : str or os.PathLike
        The store's file; created (with its directory's permission) if it does not exist.
    index : NeuronIndex, optional
        Binds the store to ``index.meta["model_fingerprint"]`` and validates layers and units
        against ``index.layers`` and ``index[layer].n_units``.
    model : str, optional
        A model fingerprint to bind to without validation (must match ``index`` if both given).
    author : str, optional
        Default author of writes and reads; the OS user name if not given.
    timeout : float
        Seconds to wait for another process's write lock before :class:`StoreLockedError`.
    read_only : bool
        Open an existing store for reading only (e.g. a file on a read-only share, or in a
        folder you may not write; see :mod:`nsi_widgets.annotations.sqlite_file`).

    Raises
    ------
    NotAnAnnotationStoreError
        The file is not a SQLite database, or a database of something else.
    SchemaVersionError
        The file was written by a newer nsi-widgets.
    StoreReadOnlyError
        The file or its directory is not writable (and ``read_only`` is False).
    StorePermissionError
        The file cannot be read.
    StoreNotFoundError
        The folder of a new store does not exist, or (``read_only=True``) the store does not.
    StoreIsADirectoryError
        ``path`` is a folder.
    StoreLockedError
        Another process kept the file locked for longer than ``timeout``.
    InputError, InputTypeError
        A bad ``author``, ``model``, ``index`` or ``timeout``.

    All are :class:`nsi_widgets.NsiError`.

    Examples
    --------
    >>> store = AnnotationStore("annotations.sqlite", index=idx)       # doctest: +SKIP
    >>> store.annotate("conv2", 7, "dog-face", note="fur, eyes", tags=["animal"])  # doctest: +SKIP
    >>> store.get("conv2", 7).label                                     # doctest: +SKIP
    'dog-face'
    """

    def __init__(self, path: str | os.PathLike, *, index: Any = None, model: str | None = None,
                 author: str | None = None, timeout: float = 10.0, read_only: bool = False):
        try:
            self._path = Path(os.fspath(path)).expanduser().absolute()
        except TypeError:
            raise InputTypeError(f"path must be a file name (str or path), not {type(path).__name__}") from None
        self._index = index
        self._model = self._resolve_model(index, model)
        self._author = clean_author(author) if author is not None else default_author()
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise InputError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self._timeout = float(timeout)
        self._read_only = bool(read_only)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        #: Reports of the last :func:`merge_stores` into this store object.
        self.merge_reports: list[ImportReport] = []
        self._opened_state = file_state(self._path)
        self._conn, self._mode = open_store_file(self._path, read_only=self._read_only, timeout=self._timeout)

    @staticmethod
    def _resolve_model(index: Any, model: str | None) -> str:
        fingerprint = None
        if index is not None:
            if not hasattr(index, "layers") or not hasattr(index, "meta"):
                raise InputTypeError(f"index must be a nsi_widgets NeuronIndex, not {type(index).__name__}")
            fingerprint = str(index.meta.get("model_fingerprint", "") or "")
        if model is not None:
            if not isinstance(model, str):
                raise InputTypeError(f"model must be a fingerprint str, not {type(model).__name__}")
            if fingerprint is not None and model != fingerprint:
                raise InputError(f"model={model!r} does not match the index's model fingerprint {fingerprint!r}")
            fingerprint = model
        return fingerprint or ""

    # Properties ------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The store's file."""
        return self._path

    @property
    def model(self) -> str:
        """Fingerprint of the bound model (``""`` when unbound)."""
        return self._model

    @property
    def author(self) -> str:
        """Default author of this store object's writes and reads."""
        return self._author

    @property
    def index(self) -> Any:
        """The bound :class:`~nsi_widgets.results.NeuronIndex`, or None."""
        return self._index

    @property
    def read_only(self) -> bool:
        """True if opened with ``read_only=True``."""
        return self._read_only

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._conn is None

    @property
    def revision(self) -> int:
        """Id of the latest committed change by any process, any model, any author (0 if none).

        Grows with every committed change; compare it with a previous value to refresh cheaply,
        and read what changed with :meth:`changes`.
        """
        return int(self._read("SELECT coalesce(max(id), 0) FROM history")[0][0])

    # Connection helpers ----------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise InputError(f"annotation store {self._path} is closed")
        return self._conn

    def _unchanged(self) -> bool:
        """False if the file was written since an ``immutable`` connection opened it."""
        return self._mode != IMMUTABLE or file_state(self._path) == self._opened_state

    def _reopen(self) -> None:
        state = file_state(self._path)
        conn, mode = open_store_file(self._path, read_only=self._read_only, timeout=self._timeout)
        self._conn.close()
        self._conn, self._mode, self._opened_state = conn, mode, state

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        params = tuple(params)
        with self._lock:
            for _ in range(_READ_ATTEMPTS):
                conn = self._connection()
                if not self._unchanged():  # immutable, and someone wrote the file since: read it afresh
                    self._reopen()
                    conn = self._conn
                try:
                    rows = conn.execute(sql, params).fetchall()
                except sqlite3.Error as exc:
                    if self._unchanged():
                        raise translate(exc, self._path, "read", self._timeout, self._mode) from exc
                    continue
                if self._unchanged():
                    return rows
        raise AnnotationStoreError(f"annotation store {self._path} changed during each of {_READ_ATTEMPTS} reads "
                                   f"(opened read-only in a read-only folder while someone writes it); retry")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed or none of it (also on KeyboardInterrupt)."""
        with self._lock:
            conn = self._connection()
            if self._read_only:
                raise StoreReadOnlyError(f"annotation store {self._path} was opened with read_only=True; "
                                         f"open it without read_only to write")
            try:
                conn.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting up to timeout
            except sqlite3.Error as exc:
                raise translate(exc, self._path, "write", self._timeout) from exc
            try:
                yield conn
            except BaseException as exc:
                rollback_quietly(conn)
                if isinstance(exc, sqlite3.Error):
                    raise translate(exc, self._path, "write", self._timeout) from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                rollback_quietly(conn)
                raise translate(exc, self._path, "commit", self._timeout) from exc

    def _check_key(self, layer: Any, unit: Any) -> tuple[str, int]:
        layer, unit = clean_layer(layer), clean_unit(unit)
        if self._index is not None:
            self._check_in_index(layer, unit)
        return layer, unit

    def _check_layer(self, layer: Any) -> str | None:
        """Validate an optional layer filter."""
        if layer is None:
            return None
        layer = clean_layer(layer)
        if self._index is not None and layer not in list(self._index.layers):
            raise InputError(f"unknown layer {layer!r}; the bound index has layers {list(self._index.layers)}")
        return layer

    def _check_in_index(self, layer: str, unit: int) -> None:
        layers = list(self._index.layers)
        if layer not in layers:
            raise InputError(f"unknown layer {layer!r}; the bound index has layers {layers}")
        n_units = int(self._index[layer].n_units)
        if unit >= n_units:
            raise InputError(f"unit {unit} is out of range for layer {layer!r}: valid units are "
                             f"0..{n_units - 1} ({n_units} units)")

    def _write_author(self, author: Any) -> str:
        return self._author if author is None else clean_author(author)

    def _read_author(self, author: Any) -> str | None:
        """The author filter of a read: None means everyone."""
        if author is None:
            return self._author
        if author == ALL_AUTHORS:
            return None
        return clean_author(author)

    @staticmethod
    def _to_annotation(row: tuple) -> Annotation:
        rid, model, layer, unit, author, action, removed, label, note, tags, time, undo_to = row
        try:
            tag_list = json.loads(tags)
            if not isinstance(tag_list, list) or not all(isinstance(t, str) for t in tag_list):
                raise ValueError
        except (ValueError, TypeError, RecursionError):
            raise AnnotationStoreError(f"history row {rid} has damaged tags {tags!r}") from None
        return Annotation(layer=layer, unit=int(unit), label=label, note=note, tags=tuple(tag_list),
                          author=author, time=time, model=model, revision=int(rid), action=action,
                          removed=bool(removed), undo_to=undo_to)

    def _latest(self, conn: sqlite3.Connection, model: str, layer: str, unit: int,
                author: str) -> Annotation | None:
        row = conn.execute(
            f"SELECT {ROW_COLUMNS} FROM history WHERE model = ? AND layer = ? AND unit = ? AND author = ? "
            f"ORDER BY id DESC LIMIT 1", (model, layer, unit, author)).fetchone()
        return None if row is None else self._to_annotation(row)

    def _append(self, conn: sqlite3.Connection, *, model: str, layer: str, unit: int, author: str,
                action: str, removed: bool, label: str, note: str, tags: tuple[str, ...],
                time: str | None, undo_to: int | None) -> Annotation:
        time = time or utc_now()
        cur = conn.execute(
            "INSERT INTO history (model, layer, unit, author, action, removed, label, note, tags, time, undo_to) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (model, layer, unit, author, action, int(removed), label, note,
             json.dumps(list(tags), ensure_ascii=False), time, undo_to))
        return Annotation(layer=layer, unit=unit, label=label, note=note, tags=tuple(tags), author=author,
                          time=time, model=model, revision=int(cur.lastrowid), action=action,
                          removed=removed, undo_to=undo_to)

    def _current_rows(self, *, author: str | None, layer: str | None = None,
                      all_models: bool = False) -> list[Annotation]:
        """Current (latest, not removed) annotations of the bound model (or every model)."""
        where: list[str] = []
        params: list[Any] = []
        if not all_models:
            where.append("model = ?")
            params.append(self._model)
        if layer is not None:
            where.append("layer = ?")
            params.append(layer)
        if author is not None:
            where.append("author = ?")
            params.append(author)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        rows = self._read(
            f"SELECT {ROW_COLUMNS} FROM history WHERE id IN "
            f"(SELECT max(id) FROM history {clause} GROUP BY model, layer, unit, author) AND removed = 0",
            params)
        return self._sorted([self._to_annotation(r) for r in rows])

    def _sorted(self, annotations: list[Annotation]) -> list[Annotation]:
        order = {name: i for i, name in enumerate(self._index.layers)} if self._index is not None else {}
        return sorted(annotations, key=lambda a: (a.model, order.get(a.layer, len(order)), a.layer,
                                                  a.unit, a.author))

    # Writing ---------------------------------------------------------------------------------
    def annotate(self, layer: str, unit: int, label: str, note: str = "", tags: Iterable[str] = (),
                 author: str | None = None) -> Annotation:
        """Set the label, note and tags of a neuron (a new version; the old one stays in the history).

        Parameters
        ----------
        layer : str
            Layer name (checked against the bound index).
        unit : int
            Unit index (checked against the bound index).
        label : str
            Non-empty, one line; surrounding whitespace is removed.
        note : str
            Free text, may span lines.
        tags : iterable of str
            Non-empty one-line strings; duplicates are dropped.
        author : str, optional
            Defaults to the store's author.

        Returns
        -------
        Annotation
            The stored version. If label, note and tags equal the current version, nothing is
            written and the current version is returned.
        """
        layer, unit = self._check_key(layer, unit)
        label, note, tags = clean_label(label), clean_note(note), clean_tags(tags)
        author = self._write_author(author)
        with self._write() as conn:
            current = self._latest(conn, self._model, layer, unit, author)
            if current is not None and not current.removed and (current.label, current.note, current.tags) == (
                    label, note, tags):
                return current
            return self._append(conn, model=self._model, layer=layer, unit=unit, author=author, action="set",
                                removed=False, label=label, note=note, tags=tags, time=None,
                                undo_to=None if current is None else current.revision)

    def remove(self, layer: str, unit: int, author: str | None = None) -> Annotation:
        """Remove a neuron's current annotation (recorded as a history row; undo brings it back).

        Returns
        -------
        Annotation
            The removal's history row (``removed=True``).

        Raises
        ------
        LookupError
            If the neuron has no current annotation by that author.
        """
        layer, unit = self._check_key(layer, unit)
        author = self._write_author(author)
        with self._write() as conn:
            current = self._latest(conn, self._model, layer, unit, author)
            if current is None or current.removed:
                raise LookupError(f"{layer}[{unit}] has no annotation by {author!r} to remove")
            return self._append(conn, model=self._model, layer=layer, unit=unit, author=author, action="remove",
                                removed=True, label="", note="", tags=(), time=None, undo_to=current.revision)

    def undo(self, layer: str, unit: int, author: str | None = None) -> Annotation | None:
        """Go back to the version before the current one; repeat to go further back.

        The undo is itself appended to the history (nothing is deleted).

        Returns
        -------
        Annotation or None
            The annotation now current, or None if the neuron is now unannotated.

        Raises
        ------
        LookupError
            If there is nothing to undo.
        """
        layer, unit = self._check_key(layer, unit)
        author = self._write_author(author)
        with self._write() as conn:
            current = self._latest(conn, self._model, layer, unit, author)
            if current is None or (current.undo_to is None and current.removed):
                raise LookupError(f"nothing to undo for {layer}[{unit}] by {author!r}")
            if current.undo_to is None:  # undoing the first version: back to no annotation
                restored = dict(removed=True, label="", note="", tags=(), undo_to=None)
            else:
                row = conn.execute(f"SELECT {ROW_COLUMNS} FROM history WHERE id = ?", (current.undo_to,)).fetchone()
                target = self._to_annotation(row)
                restored = dict(removed=target.removed, label=target.label, note=target.note, tags=target.tags,
                                undo_to=target.undo_to)
            new = self._append(conn, model=self._model, layer=layer, unit=unit, author=author, action="undo",
                               time=None, **restored)
        return None if new.removed else new

    # Reading ---------------------------------------------------------------------------------
    def get(self, layer: str, unit: int, author: str | None = None) -> Annotation | None:
        """The current annotation of a neuron by the store's author (or ``author``), or None."""
        layer, unit = self._check_key(layer, unit)
        author = self._write_author(author)
        row = self._read(
            f"SELECT {ROW_COLUMNS} FROM history WHERE model = ? AND layer = ? AND unit = ? AND author = ? "
            f"ORDER BY id DESC LIMIT 1", (self._model, layer, unit, author))
        if not row:
            return None
        annotation = self._to_annotation(row[0])
        return None if annotation.removed else annotation

    def history(self, layer: str, unit: int, author: str | None = None) -> list[Annotation]:
        """Every change of a neuron's annotation, oldest first (removals and undos included).

        ``author=None`` means the store's author, ``"*"`` every author.
        """
        layer, unit = self._check_key(layer, unit)
        who = self._read_author(author)
        sql = f"SELECT {ROW_COLUMNS} FROM history WHERE model = ? AND layer = ? AND unit = ?"
        params: list[Any] = [self._model, layer, unit]
        if who is not None:
            sql += " AND author = ?"
            params.append(who)
        return [self._to_annotation(r) for r in self._read(sql + " ORDER BY id", params)]

    def all(self, layer: str | None = None, author: str | None = None) -> dict:
        """Current annotations of the bound model, by ``(layer, unit)``.

        With ``author="*"`` every author's, keyed by ``(layer, unit, author)``.
        """
        layer = self._check_layer(layer)
        who = self._read_author(author)
        rows = self._current_rows(author=who, layer=layer)
        if who is None:
            return {(a.layer, a.unit, a.author): a for a in rows}
        return {(a.layer, a.unit): a for a in rows}

    def search(self, text: str, author: str | None = None) -> list[Annotation]:
        """Current annotations whose label, note or a tag contains ``text`` (case-insensitive)."""
        if not isinstance(text, str):
            raise InputTypeError(f"text must be a str, not {type(text).__name__}")
        needle = unicodedata.normalize("NFKC", text).casefold().strip()
        if not needle:
            raise InputError("search text must not be empty")

        def matches(a: Annotation) -> bool:
            fields = (a.label, a.note, *a.tags)
            return any(needle in unicodedata.normalize("NFKC", f).casefold() for f in fields)

        return [a for a in self._current_rows(author=self._read_author(author)) if matches(a)]

    def changes(self, since: int = 0) -> list[Annotation]:
        """History rows of the bound model (all authors) with ``revision > since``, oldest first.

        Lets a view refresh incrementally: remember :attr:`revision`, later ask for the changes.
        """
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise InputError(f"since must be a revision (an int >= 0), got {since!r}")
        rows = self._read(f"SELECT {ROW_COLUMNS} FROM history WHERE id > ? AND model = ? ORDER BY id",
                          (since, self._model))
        return [self._to_annotation(r) for r in rows]

    def authors(self) -> list[str]:
        """Authors with a current annotation of the bound model, sorted."""
        return sorted({a.author for a in self._current_rows(author=None)})

    def models(self) -> dict[str, int]:
        """Every model fingerprint in the file with its number of current annotations (all authors)."""
        counts = Counter(a.model for a in self._current_rows(author=None, all_models=True))
        return dict(sorted(counts.items()))

    def to_pandas(self, author: str | None = ALL_AUTHORS, history: bool = False):
        """The current annotations (or, with ``history=True``, every change) as a DataFrame.

        Columns: model, layer, unit, author, label, note, tags (tuple), time, revision, and with
        ``history=True`` also action and removed. All authors unless ``author`` is given
        (``None`` = the store's author).

        Returns
        -------
        pandas.DataFrame
        """
        import pandas as pd

        who = self._read_author(author)
        if history:
            sql = f"SELECT {ROW_COLUMNS} FROM history WHERE model = ?"
            params: list[Any] = [self._model]
            if who is not None:
                sql += " AND author = ?"
                params.append(who)
            rows = [self._to_annotation(r) for r in self._read(sql + " ORDER BY id", params)]
            columns = list(CSV_COLUMNS) + ["action", "removed"]
        else:
            rows = self._current_rows(author=who)
            columns = list(CSV_COLUMNS)
        records = [{c: getattr(a, c) for c in columns} for a in rows]
        frame = pd.DataFrame.from_records(records, columns=columns)
        return frame.astype({"unit": "int64", "revision": "int64"})


    def _apply_records(self, records: list[Annotation], problems: Problems, *, source: str, on_conflict: str,
                       action: str) -> ImportReport:
        """Write imported or merged records in one transaction, after checking all of them.

        Records equal to the current annotation are skipped; a different current annotation is a
        conflict resolved as ``on_conflict`` says. Any problem (also one found here: a unit the
        bound index lacks, a key given twice with different content) means nothing is written.
        """
        if on_conflict not in CONFLICT_POLICIES:
            raise InputError(f"on_conflict must be one of {CONFLICT_POLICIES}, got {on_conflict!r}")
        seen: dict[tuple, Annotation] = {}
        for a in records:
            if a.model == self._model and self._index is not None:
                try:
                    self._check_in_index(a.layer, a.unit)
                except InputError as exc:
                    problems.add(f"{a.layer}[{a.unit}] by {a.author!r}: {exc}")
            key = (a.model, a.layer, a.unit, a.author)
            if key in seen and not seen[key].same_content(a):
                problems.add(f"{a.layer}[{a.unit}] by {a.author!r} appears twice with different content")
            seen[key] = a
        if problems:
            raise problems.error(source)
        report = ImportReport(source=source, on_conflict=on_conflict)
        with self._write() as conn:
            for theirs in seen.values():
                current = self._latest(conn, theirs.model, theirs.layer, theirs.unit, theirs.author)
                ours = None if current is None or current.removed else current
                if ours is not None and ours.same_content(theirs):
                    report.unchanged += 1
                    continue
                if ours is not None:
                    resolution = {"report": "unresolved", "ours": "ours", "theirs": "theirs"}[on_conflict]
                    report.conflicts.append(Conflict(ours=ours, theirs=theirs, resolution=resolution))
                    if resolution != "theirs":
                        continue
                written = self._append(conn, model=theirs.model, layer=theirs.layer, unit=theirs.unit,
                                       author=theirs.author, action=action, removed=False, label=theirs.label,
                                       note=theirs.note, tags=theirs.tags, time=theirs.time,
                                       undo_to=None if current is None else current.revision)
                (report.updated if ours is not None else report.added).append(written)
                if theirs.model != self._model:
                    report.other_models[theirs.model] = report.other_models.get(theirs.model, 0) + 1
        return report

    # Lifetime --------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the file (idempotent). Every committed annotation is already on disk."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def __enter__(self) -> "AnnotationStore":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"revision={self.revision}"
        return (f"AnnotationStore({str(self._path)!r}, model={self._model!r}, author={self._author!r}, "
                f"{state}{', read_only' if self._read_only else ''})")
