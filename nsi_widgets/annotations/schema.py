"""The store's file layout: the exact SQLite schema, and the checks that a file holds it.

A file is only used as a store if its ``PRAGMA application_id`` is ours, its ``user_version``
is one this version reads, and its ``sqlite_master`` holds exactly our statements (no foreign
tables, triggers or views: a file from someone else cannot make a query run their SQL).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from .errors import NotAnAnnotationStoreError, SchemaVersionError
from .records import utc_now

#: Version of the file layout; a file with a larger ``PRAGMA user_version`` is refused.
SCHEMA_VERSION = 1
#: ``PRAGMA application_id`` of an annotation store: "NSIW" in ASCII.
APPLICATION_ID = 0x4E534957
#: The ``format`` of the store's meta table and of JSON exports.
FORMAT_NAME = "nsi-widgets annotations"
ACTIONS = ("set", "remove", "undo", "import", "merge")
#: The columns of a history row, in the order the store reads them.
ROW_COLUMNS = "id, model, layer, unit, author, action, removed, label, note, tags, time, undo_to"

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


def _normalize_sql(sql: str | None) -> str:
    return " ".join((sql or "").split())


_EXPECTED = {(kind, name): _normalize_sql(sql) for kind, name, sql in _SCHEMA}

State = tuple[int, int, dict]


def inspect(conn: sqlite3.Connection) -> State | None:
    """``(application_id, user_version, {(type, name): sql})`` of the file, or None if it is empty."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    objects = {(kind, name): sql for kind, name, sql in conn.execute("SELECT type, name, sql FROM sqlite_master")}
    if app_id == 0 and version == 0 and not objects:
        return None
    return app_id, version, objects


def create(conn: sqlite3.Connection) -> None:
    """Make an empty database a store (inside the caller's transaction)."""
    for _kind, _name, sql in _SCHEMA:
        conn.execute(sql)
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
        ("format", FORMAT_NAME), ("schema_version", str(SCHEMA_VERSION)), ("created", utc_now())])
    # Both live in the database header and are part of this transaction.
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def verify(state: State, path: Path) -> None:
    """Raise unless ``state`` (from :func:`inspect`) is a store this version reads."""
    app_id, version, objects = state
    if app_id != APPLICATION_ID:
        names = sorted(name for kind, name in objects if kind == "table")
        raise NotAnAnnotationStoreError(
            f"{path} is a SQLite database but not an nsi-widgets annotation store "
            f"(application_id={app_id}, tables: {names}); give another file name")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"annotation store {path} has schema version {version}, written by a newer "
            f"nsi-widgets; this version reads up to {SCHEMA_VERSION}. Upgrade nsi-widgets "
            f"(pip install -U nsi-widgets) to open it; the file was not changed")
    if version < 1:
        raise NotAnAnnotationStoreError(f"{path} has an invalid schema version {version}; "
                                        f"it is not an annotation store")
    found = {key: _normalize_sql(sql) for key, sql in objects.items() if key not in _INTERNAL_OBJECTS}
    if found != _EXPECTED:
        extra = sorted(set(found) - set(_EXPECTED))
        missing = sorted(set(_EXPECTED) - set(found))
        changed = sorted(k for k in set(found) & set(_EXPECTED) if found[k] != _EXPECTED[k])
        raise NotAnAnnotationStoreError(
            f"{path} claims to be an annotation store but its schema was altered "
            f"(unexpected: {extra}, missing: {missing}, changed: {changed}); it is not opened. "
            f"Restore it from a backup or export")
