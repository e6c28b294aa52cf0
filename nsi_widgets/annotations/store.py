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
network share (give each student their own file there and merge).

Files are data: nothing is pickled, text is stored as SQLite text, and a file is only opened
as a store if its application id, schema version and exact schema (no foreign triggers or
views) are ours; ``PRAGMA trusted_schema`` is off.
"""
from __future__ import annotations

import csv
import getpass
import io
import json
import operator
import os
import re
import sqlite3
import threading
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "ALL_AUTHORS",
    "Annotation",
    "AnnotationStore",
    "AnnotationStoreError",
    "Conflict",
    "ImportReport",
    "NotAnAnnotationStoreError",
    "SchemaVersionError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "merge_stores",
    "normalize_label",
]

#: Version of the file layout; a file with a larger ``PRAGMA user_version`` is refused.
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of an annotation store: "NSIW" in ASCII.
APPLICATION_ID = 0x4E534957
#: Pass as ``author`` to the read methods to see every author's annotations.
ALL_AUTHORS = "*"
FORMAT_NAME = "nsi-widgets annotations"
ACTIONS = ("set", "remove", "undo", "import", "merge")
CONFLICT_POLICIES = ("report", "theirs", "ours")
CSV_COLUMNS = ("model", "layer", "unit", "author", "label", "note", "tags", "time", "revision")

# The exact schema; a file is accepted only if its sqlite_master holds these statements.
_SCHEMA = (
    ("table", "meta", """CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
)"""),
    ("table", "history", """CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    layer TEXT NOT NULL CHECK (length(layer) > 0),
    unit INTEGER NOT NULL CHECK (typeof(unit) = 'integer' AND unit >= 0),
    author TEXT NOT NULL CHECK (length(author) > 0),
    action TEXT NOT NULL CHECK (action IN ('set', 'remove', 'undo', 'import', 'merge')),
    removed INTEGER NOT NULL CHECK (removed IN (0, 1)),
    label TEXT NOT NULL,
    note TEXT NOT NULL,
    tags TEXT NOT NULL,
    time TEXT NOT NULL,
    undo_to INTEGER,
    CHECK (removed = 1 OR length(trim(label)) > 0)
)"""),
    ("index", "history_key", "CREATE INDEX history_key ON history (model, layer, unit, author, id)"),
    ("trigger", "history_no_update", """CREATE TRIGGER history_no_update BEFORE UPDATE ON history
BEGIN SELECT RAISE(ABORT, 'annotation history is append-only'); END"""),
    ("trigger", "history_no_delete", """CREATE TRIGGER history_no_delete BEFORE DELETE ON history
BEGIN SELECT RAISE(ABORT, 'annotation history is append-only'); END"""),
)
# Objects SQLite creates by itself (AUTOINCREMENT bookkeeping, the primary-key index of meta).
_INTERNAL_OBJECTS = {("table", "sqlite_sequence"), ("index", "sqlite_autoindex_meta_1")}

_ROW_COLUMNS = "id, model, layer, unit, author, action, removed, label, note, tags, time, undo_to"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# Errors ------------------------------------------------------------------------------------------
class AnnotationStoreError(Exception):
    """Base class of the annotation store's errors about files, locks and versions."""


class NotAnAnnotationStoreError(AnnotationStoreError, ValueError):
    """The file exists but is not an nsi-widgets annotation store."""


class SchemaVersionError(AnnotationStoreError):
    """The store was written by a newer nsi-widgets with a schema this version cannot read."""


class StoreReadOnlyError(AnnotationStoreError, PermissionError):
    """The store (or its directory) cannot be written."""


class StoreLockedError(AnnotationStoreError, TimeoutError):
    """Another process held the store's write lock for longer than the timeout."""


# Records -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Annotation:
    """One version of a neuron's annotation (one row of the history).

    Attributes
    ----------
    layer : str
        Layer name.
    unit : int
        Unit (channel) index in the layer.
    label : str
        The name given to the neuron; ``""`` for a removal.
    note : str
        Free text.
    tags : tuple of str
        Tags, in the order given, without duplicates.
    author : str
        Who wrote it.
    time : str
        When, as UTC ISO-8601 (``"2025-01-31T12:00:00.000000+00:00"``).
    model : str
        Fingerprint of the model annotated (``""`` when unbound).
    revision : int or None
        The history row's id; grows with every change. ``None`` for a record not (yet) stored,
        such as the incoming side of an import conflict.
    action : str
        ``"set"``, ``"remove"``, ``"undo"``, ``"import"`` or ``"merge"``.
    removed : bool
        True if, after this change, the neuron has no annotation by this author.
    """

    layer: str
    unit: int
    label: str
    note: str = ""
    tags: tuple[str, ...] = ()
    author: str = ""
    time: str = ""
    model: str = ""
    revision: int | None = None
    action: str = "set"
    removed: bool = False
    # The history row whose state this one replaced in the undo sense (internal bookkeeping).
    undo_to: int | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        """``(layer, unit)``."""
        return (self.layer, self.unit)

    def same_content(self, other: "Annotation") -> bool:
        """True if label, note and tags are equal (what an import compares)."""
        return (self.label, self.note, self.tags) == (other.label, other.note, other.tags)

    def to_dict(self) -> dict[str, Any]:
        """The public fields as a JSON-ready dict (tags as a list)."""
        d = asdict(self)
        d.pop("undo_to")
        d["tags"] = list(self.tags)
        return d


@dataclass(frozen=True)
class Conflict:
    """An imported record whose key has a different current annotation in the store.

    Attributes
    ----------
    ours : Annotation
        The store's current annotation.
    theirs : Annotation
        The incoming record.
    resolution : str
        ``"unresolved"`` (``on_conflict="report"``: ours kept, theirs not written),
        ``"ours"`` (ours kept) or ``"theirs"`` (theirs written as the new current version;
        ours stays in the history).
    """

    ours: Annotation
    theirs: Annotation
    resolution: str

    @property
    def key(self) -> tuple[str, str, int, str]:
        """``(model, layer, unit, author)``."""
        return (self.ours.model, self.ours.layer, self.ours.unit, self.ours.author)


@dataclass
class ImportReport:
    """What an import or merge did.

    Attributes
    ----------
    source : str
        The file or store read.
    on_conflict : str
        The policy used.
    added : list of Annotation
        Records written for keys that had no current annotation.
    updated : list of Annotation
        Records written over a different current annotation (``on_conflict="theirs"``).
    unchanged : int
        Records equal to the current annotation (nothing written).
    conflicts : list of Conflict
        Every key whose current annotation differed from the incoming record.
    other_models : dict of str to int
        Records kept under a model fingerprint other than the store's (not visible through
        this store object; see :meth:`AnnotationStore.models`).
    """

    source: str
    on_conflict: str
    added: list[Annotation] = field(default_factory=list)
    updated: list[Annotation] = field(default_factory=list)
    unchanged: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    other_models: dict[str, int] = field(default_factory=dict)

    @property
    def unresolved(self) -> list[Conflict]:
        """Conflicts left for the user (``on_conflict="report"``)."""
        return [c for c in self.conflicts if c.resolution == "unresolved"]

    def summary(self) -> str:
        """One line per fact, for printing in a notebook."""
        lines = [f"import from {self.source}: {len(self.added)} added, {len(self.updated)} updated, "
                 f"{self.unchanged} unchanged, {len(self.conflicts)} conflicts (on_conflict={self.on_conflict!r})"]
        for c in self.conflicts:
            lines.append(f"  conflict {c.ours.layer}[{c.ours.unit}] by {c.ours.author!r}: ours {c.ours.label!r}, "
                         f"theirs {c.theirs.label!r} -> {c.resolution}")
        for model, n in self.other_models.items():
            lines.append(f"  {n} records kept under other model fingerprint {model!r}")
        if self.unresolved:
            lines.append("  re-run with on_conflict='theirs' or 'ours' to settle the conflicts")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# Validation and text helpers ---------------------------------------------------------------------
def normalize_label(label: str) -> str:
    """The form in which labels are compared: NFKC, case-folded, whitespace runs collapsed.

    ``"Dog  Face"`` and ``" dog face"`` are the same label; ``"dog-face"`` is not.
    """
    return " ".join(unicodedata.normalize("NFKC", label).casefold().split())


def _clean_label(label: Any) -> str:
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, not {type(label).__name__}")
    label = label.strip()
    if not label:
        raise ValueError("label must not be empty; to delete an annotation use store.remove(layer, unit)")
    if _CONTROL.search(label):
        raise ValueError(f"label must be one line of text without control characters: {label!r}")
    return label


def _clean_note(note: Any) -> str:
    if note is None:
        return ""
    if not isinstance(note, str):
        raise TypeError(f"note must be a str, not {type(note).__name__}")
    if "\x00" in note:
        raise ValueError("note must not contain NUL characters")
    return note


def _clean_tags(tags: Any) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        raise TypeError(f"tags must be a list of str, not a single str; write tags=[{tags!r}]")
    try:
        items = list(tags)
    except TypeError:
        raise TypeError(f"tags must be a list of str, not {type(tags).__name__}") from None
    cleaned: list[str] = []
    for tag in items:
        if not isinstance(tag, str):
            raise TypeError(f"each tag must be a str, got {type(tag).__name__} ({tag!r})")
        tag = tag.strip()
        if not tag or _CONTROL.search(tag):
            raise ValueError(f"tags must be non-empty single-line text, got {tag!r}")
        if tag not in cleaned:
            cleaned.append(tag)
    return tuple(cleaned)


def _clean_author(author: Any) -> str:
    if not isinstance(author, str):
        raise TypeError(f"author must be a str, not {type(author).__name__}")
    author = author.strip()
    if not author or author == ALL_AUTHORS or _CONTROL.search(author):
        raise ValueError(f"author must be a non-empty single-line name other than {ALL_AUTHORS!r}, "
                         f"got {author!r}")
    return author


def _clean_layer(layer: Any) -> str:
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a str (the layer's name), not {type(layer).__name__}")
    if not layer.strip() or _CONTROL.search(layer):
        raise ValueError(f"layer must be a non-empty single-line name, got {layer!r}")
    return layer


def _clean_unit(unit: Any) -> int:
    if isinstance(unit, bool):
        raise TypeError("unit must be an int, not bool")
    try:
        unit = operator.index(unit)
    except TypeError:
        raise TypeError(f"unit must be an int, not {type(unit).__name__} ({unit!r})") from None
    if unit < 0:
        raise ValueError(f"unit must be >= 0, got {unit}")
    return unit


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _clean_time(value: Any) -> str:
    """Parse an ISO-8601 time (``Z`` or an offset; naive means UTC) into the stored UTC form."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return _utc_now()
    if not isinstance(value, str):
        raise TypeError(f"time must be an ISO-8601 str, not {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"time {value!r} is not ISO-8601 (e.g. 2025-01-31T12:00:00+00:00)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _default_author() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no user name in the environment or the password database (containers)
        name = ""
    name = (name or "").strip()
    return name if name and name != ALL_AUTHORS and not _CONTROL.search(name) else "unknown"


def _suggested_location() -> str:
    return str(Path.home() / "nsi-annotations.sqlite")


def _error_name(exc: sqlite3.Error) -> str:
    # sqlite_errorname exists from Python 3.11; older versions only give the message.
    return getattr(exc, "sqlite_errorname", "") or ""


def _normalize_schema_sql(sql: str | None) -> str:
    return " ".join((sql or "").split())


_EXPECTED_SCHEMA = {(kind, name): _normalize_schema_sql(sql) for kind, name, sql in _SCHEMA}


# The store ---------------------------------------------------------------------------------------
class AnnotationStore:
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
        Open an existing store for reading only (e.g. a file on a read-only share).

    Raises
    ------
    NotAnAnnotationStoreError
        The file is not a SQLite database, or a database of something else.
    SchemaVersionError
        The file was written by a newer nsi-widgets.
    StoreReadOnlyError
        The file or its directory is not writable (and ``read_only`` is False).
    StoreLockedError
        Another process kept the file locked for longer than ``timeout``.

    Examples
    --------
    >>> store = AnnotationStore("annotations.sqlite", index=idx)       # doctest: +SKIP
    >>> store.annotate("conv2", 7, "dog-face", note="fur, eyes", tags=["animal"])  # doctest: +SKIP
    >>> store.get("conv2", 7).label                                     # doctest: +SKIP
    'dog-face'
    """

    def __init__(self, path: str | os.PathLike, *, index: Any = None, model: str | None = None,
                 author: str | None = None, timeout: float = 10.0, read_only: bool = False):
        self._path = Path(os.fspath(path)).expanduser().absolute()
        self._index = index
        self._model = self._resolve_model(index, model)
        self._author = _clean_author(author) if author is not None else _default_author()
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self._timeout = float(timeout)
        self._read_only = bool(read_only)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        #: Reports of the last :func:`merge_stores` into this store object.
        self.merge_reports: list[ImportReport] = []
        self._conn = self._open()

    # Opening ---------------------------------------------------------------------------------
    @staticmethod
    def _resolve_model(index: Any, model: str | None) -> str:
        fingerprint = None
        if index is not None:
            if not hasattr(index, "layers") or not hasattr(index, "meta"):
                raise TypeError(f"index must be a nsi_widgets NeuronIndex, not {type(index).__name__}")
            fingerprint = str(index.meta.get("model_fingerprint", "") or "")
        if model is not None:
            if not isinstance(model, str):
                raise TypeError(f"model must be a fingerprint str, not {type(model).__name__}")
            if fingerprint is not None and model != fingerprint:
                raise ValueError(f"model={model!r} does not match the index's model fingerprint {fingerprint!r}")
            fingerprint = model
        return fingerprint or ""

    def _open(self) -> sqlite3.Connection:
        path = self._path
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory; give the annotation store's file name, "
                                    f"e.g. {path / 'annotations.sqlite'}")
        exists = path.exists()
        if exists:
            self._check_sqlite_header(path)
        if self._read_only:
            if not exists:
                raise FileNotFoundError(f"no annotation store at {path}")
            target, uri = f"file:{_uri_path(path)}?mode=ro", True
        else:
            self._check_writable(path, exists)
            target, uri = str(path), False
        try:
            conn = sqlite3.connect(target, uri=uri, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._translate(exc, "open") from exc
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _check_sqlite_header(path: Path) -> None:
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except PermissionError:
            raise PermissionError(f"cannot read {path}: permission denied") from None
        # An empty file is an empty database (its content may still sit in the -wal file).
        if head and head != b"SQLite format 3\x00":
            raise NotAnAnnotationStoreError(
                f"{path} is not an annotation store (not a SQLite database); "
                f"give a new file name or an existing store's file")

    @staticmethod
    def _check_writable(path: Path, exists: bool) -> None:
        directory = path.parent
        if not directory.exists():
            raise FileNotFoundError(f"directory {directory} does not exist; create it first or choose "
                                    f"another location for the annotation store")
        if exists and not os.access(path, os.W_OK):
            raise StoreReadOnlyError(
                f"annotation store {path} is read-only (no write permission on the file); "
                f"open it with read_only=True to read it, or copy it to a writable location, e.g. "
                f"AnnotationStore({_suggested_location()!r})")
        journals_exist = all(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
        if not os.access(directory, os.W_OK) and not journals_exist:
            what = "create the store" if not exists else "create its -wal and -shm journal files"
            raise StoreReadOnlyError(
                f"cannot write annotation store {path}: directory {directory} is read-only and SQLite "
                f"needs to {what} there; choose another location, e.g. "
                f"AnnotationStore({_suggested_location()!r})"
                + (", or open it with read_only=True to read it" if exists else ""))

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the file is our store (initialising an empty one), then set the pragmas."""
        try:
            try:
                conn.execute("PRAGMA trusted_schema = OFF")
            except sqlite3.Error:  # SQLite < 3.31 has no such setting (and no risky schema features)
                pass
            state = self._inspect(conn)
            if state is None:  # an empty database: make it a store
                if self._read_only:
                    raise NotAnAnnotationStoreError(f"{self._path} is an empty database, not an annotation store")
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise AnnotationStoreError(
                        f"cannot use WAL journal mode for {self._path} (got {mode!r}); "
                        f"put the store on a local disk")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if self._inspect(conn) is None:  # another process may have initialised it meanwhile
                        self._create_schema(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback_quietly(conn)
                    raise
                state = self._inspect(conn)
            self._verify(state)
            if not self._read_only:
                conn.execute("PRAGMA journal_mode = WAL")  # persistent; a no-op after creation
                conn.execute("PRAGMA synchronous = FULL")  # per connection: fsync at every commit
        except sqlite3.Error as exc:
            raise self._translate(exc, "open") from exc

    @staticmethod
    def _inspect(conn: sqlite3.Connection) -> tuple[int, int, dict] | None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = {(kind, name): sql for kind, name, sql in
                   conn.execute("SELECT type, name, sql FROM sqlite_master")}
        if app_id == 0 and version == 0 and not objects:
            return None
        return app_id, version, objects

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        for _kind, _name, sql in _SCHEMA:
            conn.execute(sql)
        now = _utc_now()
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
            ("format", FORMAT_NAME), ("schema_version", str(SCHEMA_VERSION)), ("created", now)])
        # Both live in the database header and are part of this transaction.
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _verify(self, state: tuple[int, int, dict]) -> None:
        app_id, version, objects = state
        if app_id != APPLICATION_ID:
            names = sorted(name for kind, name in objects if kind == "table")
            raise NotAnAnnotationStoreError(
                f"{self._path} is a SQLite database but not an nsi-widgets annotation store "
                f"(application_id={app_id}, tables: {names}); give another file name")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"annotation store {self._path} has schema version {version}, written by a newer "
                f"nsi-widgets; this version reads up to {SCHEMA_VERSION}. Upgrade nsi-widgets "
                f"(pip install -U nsi-widgets) to open it; the file was not changed")
        if version < 1:
            raise NotAnAnnotationStoreError(f"{self._path} has an invalid schema version {version}")
        found = {key: _normalize_schema_sql(sql) for key, sql in objects.items() if key not in _INTERNAL_OBJECTS}
        if found != _EXPECTED_SCHEMA:
            extra = sorted(set(found) - set(_EXPECTED_SCHEMA))
            missing = sorted(set(_EXPECTED_SCHEMA) - set(found))
            changed = sorted(k for k in set(found) & set(_EXPECTED_SCHEMA) if found[k] != _EXPECTED_SCHEMA[k])
            raise NotAnAnnotationStoreError(
                f"{self._path} claims to be an annotation store but its schema was altered "
                f"(unexpected: {extra}, missing: {missing}, changed: {changed}); it is not opened. "
                f"Restore it from a backup or export")

    def _translate(self, exc: sqlite3.Error, doing: str) -> Exception:
        """Turn a sqlite3 error into one that names the file and says what to do."""
        name, message = _error_name(exc), str(exc)
        lowered = message.lower()
        if name.startswith("SQLITE_BUSY") or "locked" in lowered:
            return StoreLockedError(
                f"annotation store {self._path} is locked: another process (another notebook or "
                f"script writing to it) held the lock for more than timeout={self._timeout:g} s. "
                f"Nothing was written; retry, close the other writer, or open the store with a larger timeout")
        if name.startswith("SQLITE_READONLY") or "readonly" in lowered or "read-only" in lowered:
            return StoreReadOnlyError(
                f"cannot write annotation store {self._path}: the file or its directory is read-only. "
                f"Nothing was written; choose another location, e.g. AnnotationStore({_suggested_location()!r})")
        if name == "SQLITE_NOTADB" or "not a database" in lowered:
            return NotAnAnnotationStoreError(f"{self._path} is not an annotation store (not a SQLite database)")
        if name.startswith("SQLITE_CANTOPEN") or "unable to open" in lowered:
            return StoreReadOnlyError(
                f"cannot {doing} annotation store {self._path}: {message}; check the path and permissions "
                f"or choose another location, e.g. AnnotationStore({_suggested_location()!r})")
        if name.startswith("SQLITE_CORRUPT") or "malformed" in lowered:
            return AnnotationStoreError(
                f"annotation store {self._path} is damaged ({message}); restore it from a backup or an export")
        return AnnotationStoreError(f"annotation store {self._path}: {doing} failed: {message}")

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
            raise ValueError(f"annotation store {self._path} is closed")
        return self._conn

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise self._translate(exc, "read") from exc

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
                raise self._translate(exc, "write") from exc
            try:
                yield conn
            except BaseException as exc:
                _rollback_quietly(conn)
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc, "write") from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback_quietly(conn)
                raise self._translate(exc, "commit") from exc

    def _check_key(self, layer: Any, unit: Any) -> tuple[str, int]:
        layer, unit = _clean_layer(layer), _clean_unit(unit)
        if self._index is not None:
            self._check_in_index(layer, unit)
        return layer, unit

    def _check_layer(self, layer: Any) -> str | None:
        """Validate an optional layer filter."""
        if layer is None:
            return None
        layer = _clean_layer(layer)
        if self._index is not None and layer not in list(self._index.layers):
            raise ValueError(f"unknown layer {layer!r}; the bound index has layers {list(self._index.layers)}")
        return layer

    def _check_in_index(self, layer: str, unit: int) -> None:
        layers = list(self._index.layers)
        if layer not in layers:
            raise ValueError(f"unknown layer {layer!r}; the bound index has layers {layers}")
        n_units = int(self._index[layer].n_units)
        if unit >= n_units:
            raise ValueError(f"unit {unit} is out of range for layer {layer!r}: valid units are "
                             f"0..{n_units - 1} ({n_units} units)")

    def _write_author(self, author: Any) -> str:
        return self._author if author is None else _clean_author(author)

    def _read_author(self, author: Any) -> str | None:
        """The author filter of a read: None means everyone."""
        if author is None:
            return self._author
        if author == ALL_AUTHORS:
            return None
        return _clean_author(author)

    @staticmethod
    def _to_annotation(row: tuple) -> Annotation:
        rid, model, layer, unit, author, action, removed, label, note, tags, time, undo_to = row
        try:
            tag_list = json.loads(tags)
            if not isinstance(tag_list, list) or not all(isinstance(t, str) for t in tag_list):
                raise ValueError
        except ValueError:
            raise AnnotationStoreError(f"history row {rid} has damaged tags {tags!r}") from None
        return Annotation(layer=layer, unit=int(unit), label=label, note=note, tags=tuple(tag_list),
                          author=author, time=time, model=model, revision=int(rid), action=action,
                          removed=bool(removed), undo_to=undo_to)

    def _latest(self, conn: sqlite3.Connection, model: str, layer: str, unit: int,
                author: str) -> Annotation | None:
        row = conn.execute(
            f"SELECT {_ROW_COLUMNS} FROM history WHERE model = ? AND layer = ? AND unit = ? AND author = ? "
            f"ORDER BY id DESC LIMIT 1", (model, layer, unit, author)).fetchone()
        return None if row is None else self._to_annotation(row)

    def _append(self, conn: sqlite3.Connection, *, model: str, layer: str, unit: int, author: str,
                action: str, removed: bool, label: str, note: str, tags: tuple[str, ...],
                time: str | None, undo_to: int | None) -> Annotation:
        time = time or _utc_now()
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
            f"SELECT {_ROW_COLUMNS} FROM history WHERE id IN "
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
        label, note, tags = _clean_label(label), _clean_note(note), _clean_tags(tags)
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
                row = conn.execute(f"SELECT {_ROW_COLUMNS} FROM history WHERE id = ?", (current.undo_to,)).fetchone()
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
            f"SELECT {_ROW_COLUMNS} FROM history WHERE model = ? AND layer = ? AND unit = ? AND author = ? "
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
        sql = f"SELECT {_ROW_COLUMNS} FROM history WHERE model = ? AND layer = ? AND unit = ?"
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
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        needle = unicodedata.normalize("NFKC", text).casefold().strip()
        if not needle:
            raise ValueError("search text must not be empty")

        def matches(a: Annotation) -> bool:
            fields = (a.label, a.note, *a.tags)
            return any(needle in unicodedata.normalize("NFKC", f).casefold() for f in fields)

        return [a for a in self._current_rows(author=self._read_author(author)) if matches(a)]

    def changes(self, since: int = 0) -> list[Annotation]:
        """History rows of the bound model (all authors) with ``revision > since``, oldest first.

        Lets a view refresh incrementally: remember :attr:`revision`, later ask for the changes.
        """
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ValueError(f"since must be a revision (an int >= 0), got {since!r}")
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM history WHERE id > ? AND model = ? ORDER BY id",
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
            sql = f"SELECT {_ROW_COLUMNS} FROM history WHERE model = ?"
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

    # Agreement -------------------------------------------------------------------------------
    def agreement(self, layer: str | None = None, authors: Iterable[str] | None = None):
        """Who labelled each neuron what, and whether they agree: for a teacher comparing students.

        Labels are compared with :func:`normalize_label` (case and whitespace do not matter).

        Parameters
        ----------
        layer : str, optional
            Only this layer.
        authors : iterable of str, optional
            Only these authors (default: every author in the store for the bound model).

        Returns
        -------
        pandas.DataFrame
            One row per neuron labelled by at least one of the authors, in layer and unit order:
            ``layer``, ``unit``, ``n_authors`` (how many labelled it), ``n_labels`` (distinct
            labels), ``agree`` (True when at least two authors labelled it and all gave the same
            label), ``majority`` (the most frequent label, spelled as by the alphabetically first
            author who gave it; ties between labels: alphabetical), ``majority_count``, then one
            column per author with that author's label (missing where the author gave none).
            An author column whose name clashes with a fixed column is named ``"<name> (author)"``.
        """
        import pandas as pd

        layer = self._check_layer(layer)
        wanted = None if authors is None else [_clean_author(a) for a in authors]
        rows = self._current_rows(author=None, layer=layer)
        if wanted is not None:
            rows = [a for a in rows if a.author in wanted]
        author_names = wanted if wanted is not None else sorted({a.author for a in rows})
        fixed = ["layer", "unit", "n_authors", "n_labels", "agree", "majority", "majority_count"]
        author_columns = {name: (f"{name} (author)" if name in fixed else name) for name in author_names}

        by_neuron: dict[tuple[str, int], dict[str, str]] = {}
        for a in rows:  # rows are sorted by layer order and unit
            by_neuron.setdefault((a.layer, a.unit), {})[a.author] = a.label
        records = []
        for (lay, unit), labels in by_neuron.items():
            counts = Counter(normalize_label(v) for v in labels.values())
            top = max(counts.values())
            winner = sorted(k for k, n in counts.items() if n == top)[0]
            shown = next(labels[name] for name in sorted(labels) if normalize_label(labels[name]) == winner)
            record = {"layer": lay, "unit": unit, "n_authors": len(labels), "n_labels": len(counts),
                      "agree": len(labels) >= 2 and len(counts) == 1, "majority": shown, "majority_count": top}
            for name in author_names:
                record[author_columns[name]] = labels.get(name)
            records.append(record)
        frame = pd.DataFrame.from_records(records, columns=fixed + list(author_columns.values()))
        return frame.astype({"unit": "int64", "n_authors": "int64", "n_labels": "int64", "agree": "bool",
                             "majority_count": "int64"})

    # Export ----------------------------------------------------------------------------------
    def export_csv(self, path: str | os.PathLike, author: str | None = ALL_AUTHORS) -> int:
        """Write the current annotations of the bound model to a UTF-8 CSV file (atomically).

        Columns: ``model, layer, unit, author, label, note, tags, time, revision``; ``tags`` is a
        JSON list (``["red", "round"]``). All authors unless ``author`` is given.

        Returns
        -------
        int
            Number of annotations written.
        """
        rows = self._current_rows(author=self._read_author(author))
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for a in rows:
            writer.writerow([a.model, a.layer, a.unit, a.author, a.label, a.note,
                             json.dumps(list(a.tags), ensure_ascii=False), a.time, a.revision])
        _write_atomically(Path(os.fspath(path)).expanduser(), buffer.getvalue())
        return len(rows)

    def export_json(self, path: str | os.PathLike, author: str | None = ALL_AUTHORS) -> int:
        """Write the current annotations of the bound model to a UTF-8 JSON file (atomically).

        The file holds ``{"format", "schema_version", "exported", "model", "annotations": [...]}``,
        one object per annotation with the fields of :class:`Annotation` (tags as a list).

        Returns
        -------
        int
            Number of annotations written.
        """
        rows = self._current_rows(author=self._read_author(author))
        keep = CSV_COLUMNS
        document = {"format": FORMAT_NAME, "schema_version": SCHEMA_VERSION, "exported": _utc_now(),
                    "model": self._model,
                    "annotations": [{k: v for k, v in a.to_dict().items() if k in keep} for a in rows]}
        _write_atomically(Path(os.fspath(path)).expanduser(),
                          json.dumps(document, ensure_ascii=False, indent=1) + "\n")
        return len(rows)

    def backup(self, path: str | os.PathLike) -> Path:
        """Copy the whole file (every model, author and history row) to ``path``, consistently.

        Uses SQLite's online backup, so it is safe while other processes write.
        """
        target = Path(os.fspath(path)).expanduser()
        if target.exists():
            raise FileExistsError(f"{target} exists; give a new file name for the backup")
        with self._lock:
            conn = self._connection()
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            try:
                dest = sqlite3.connect(str(tmp))
                try:
                    conn.backup(dest)
                finally:
                    dest.close()
                os.replace(tmp, target)
            except sqlite3.Error as exc:
                raise AnnotationStoreError(f"cannot back up {self._path} to {target}: {exc}") from exc
            finally:
                if tmp.exists():
                    tmp.unlink()
        return target

    # Import and merge ------------------------------------------------------------------------
    def import_csv(self, path: str | os.PathLike, on_conflict: str = "report") -> ImportReport:
        """Import annotations from a CSV file written by :meth:`export_csv` (or by hand).

        Required columns: ``layer, unit, label``; optional: ``model`` (default: the store's),
        ``author`` (default: the store's), ``note``, ``tags`` (a JSON list, or ``;``-separated),
        ``time`` (ISO-8601; default: now). Other columns are ignored. The whole file is checked
        before anything is written, and written in one transaction.

        Parameters
        ----------
        on_conflict : {"report", "theirs", "ours"}
            What to do when a key already has a *different* current annotation: ``"report"``
            keeps ours and lists the conflict, ``"theirs"`` writes the file's version (ours stays
            in the history), ``"ours"`` keeps ours. Keys without a current annotation are added.

        Returns
        -------
        ImportReport
        """
        path = Path(os.fspath(path)).expanduser()
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in ("layer", "unit", "label") if c not in header]
            if missing:
                raise ValueError(f"{path}: CSV lacks the column(s) {missing}; found {header}")
            reader.fieldnames = header
            raw = [(i, row) for i, row in enumerate(reader, start=2)]
        records, errors = [], []
        for line, row in raw:
            if None in row:  # more cells than header columns
                errors.append(f"line {line}: more cells than columns")
                continue
            try:
                records.append(self._record_from_fields(row, tags_text=True))
            except (TypeError, ValueError) as exc:
                errors.append(f"line {line}: {exc}")
        return self._import(records, errors, source=str(path), on_conflict=on_conflict, action="import")

    def import_json(self, path: str | os.PathLike, on_conflict: str = "report") -> ImportReport:
        """Import annotations from a JSON file written by :meth:`export_json`.

        Also accepts a plain list of records. Fields as in :meth:`import_csv`, with ``unit`` a
        JSON integer and ``tags`` a JSON list of strings. See :meth:`import_csv` for
        ``on_conflict`` and the report.
        """
        path = Path(os.fspath(path)).expanduser()
        with open(path, encoding="utf-8-sig") as f:
            try:
                document = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON: {exc}") from None
        default_model = None
        if isinstance(document, dict):
            if document.get("format", FORMAT_NAME) != FORMAT_NAME:
                raise ValueError(f"{path} is not an nsi-widgets annotation export "
                                 f"(format {document.get('format')!r})")
            version = document.get("schema_version", SCHEMA_VERSION)
            if not isinstance(version, int) or version > SCHEMA_VERSION:
                raise SchemaVersionError(f"{path} was exported by a newer nsi-widgets (schema_version "
                                         f"{version!r} > {SCHEMA_VERSION}); upgrade nsi-widgets to import it")
            default_model = document.get("model")
            items = document.get("annotations")
        else:
            items = document
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a list of annotations (or an object with 'annotations')")
        records, errors = [], []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise TypeError(f"expected an object, got {type(item).__name__}")
                if default_model is not None and "model" not in item:
                    item = {**item, "model": default_model}
                records.append(self._record_from_fields(item, tags_text=False))
            except (TypeError, ValueError) as exc:
                errors.append(f"annotation #{i}: {exc}")
        return self._import(records, errors, source=str(path), on_conflict=on_conflict, action="import")

    def merge(self, other: "AnnotationStore | str | os.PathLike", on_conflict: str = "report") -> ImportReport:
        """Copy the current annotations of another store (every model and author) into this one.

        Merging is repeatable: records equal to ours are skipped, different ones are conflicts
        (see :meth:`import_csv`). Nothing is deleted; the other store's history stays in its file.

        Returns
        -------
        ImportReport
        """
        if isinstance(other, AnnotationStore):
            source = other
            records = other._current_rows(author=None, all_models=True)
        else:
            path = Path(os.fspath(other)).expanduser()
            with AnnotationStore(path, read_only=True, timeout=self._timeout) as source:
                records = source._current_rows(author=None, all_models=True)
        return self._import(records, [], source=str(source.path), on_conflict=on_conflict, action="merge")

    def _record_from_fields(self, fields: Mapping[str, Any], *, tags_text: bool) -> Annotation:
        def text(name: str) -> Any:
            value = fields.get(name)
            return None if value is None or value == "" else value

        unit = fields.get("unit")
        if tags_text:  # CSV cells are text
            if not isinstance(unit, str) or not re.fullmatch(r"\s*\d+\s*", unit):
                raise ValueError(f"unit must be a non-negative integer, got {unit!r}")
            unit = int(unit)
        tags: Any = fields.get("tags")
        if tags_text:
            tags = _parse_tags_cell(tags or "")
        model = text("model")  # empty: annotations made unbound, adopted by this store's model
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model must be a str, got {model!r}")
        author = text("author")
        return Annotation(layer=_clean_layer(fields.get("layer")), unit=_clean_unit(unit),
                          label=_clean_label(fields.get("label")), note=_clean_note(text("note")),
                          tags=_clean_tags(tags), author=self._author if author is None else _clean_author(author),
                          time=_clean_time(text("time")), model=self._model if model is None else model)

    def _import(self, records: list[Annotation], errors: list[str], *, source: str, on_conflict: str,
                action: str) -> ImportReport:
        if on_conflict not in CONFLICT_POLICIES:
            raise ValueError(f"on_conflict must be one of {CONFLICT_POLICIES}, got {on_conflict!r}")
        seen: dict[tuple, Annotation] = {}
        for a in records:
            if a.model == self._model and self._index is not None:
                try:
                    self._check_in_index(a.layer, a.unit)
                except ValueError as exc:
                    errors.append(f"{a.layer}[{a.unit}] by {a.author!r}: {exc}")
            key = (a.model, a.layer, a.unit, a.author)
            if key in seen and not seen[key].same_content(a):
                errors.append(f"{a.layer}[{a.unit}] by {a.author!r} appears twice with different content")
            seen[key] = a
        if errors:
            shown = "\n  ".join(errors[:10]) + (f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else "")
            raise ValueError(f"cannot import {source}; nothing was written:\n  {shown}")
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


def merge_stores(sources: Iterable["AnnotationStore | str | os.PathLike"], into: "AnnotationStore | str | os.PathLike",
                 *, on_conflict: str = "report", index: Any = None, model: str | None = None,
                 author: str | None = None, timeout: float = 10.0) -> AnnotationStore:
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


# File helpers ------------------------------------------------------------------------------------
def _parse_tags_cell(cell: str) -> list[str]:
    """A CSV tags cell: a JSON list as exported, or ``;``-separated text typed by hand."""
    cell = cell.strip()
    if not cell:
        return []
    if cell.startswith("["):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list):
            return value
    return [t for t in (part.strip() for part in cell.split(";")) if t]


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.resolve()))


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # the transaction is already gone; SQLite rolled it back


def _write_atomically(path: Path, text: str) -> None:
    """Write a text file so that a crash leaves either the old file or the complete new one."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except PermissionError:
        raise PermissionError(f"cannot write {path}: permission denied; choose another location") from None
    finally:
        if tmp.exists():
            tmp.unlink()
