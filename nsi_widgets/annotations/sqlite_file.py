"""Opening the store's SQLite file: path checks, the read-only modes, pragmas, and SQLite's errors.

Writing: WAL journal mode and ``synchronous=FULL`` (every commit is fsynced), each write one
``BEGIN IMMEDIATE`` transaction (see :mod:`.store`). WAL keeps two side files next to the store,
``<store>-wal`` and ``<store>-shm``, so SQLite must be able to create files in the store's folder.

Reading only (``read_only=True``) picks one of two SQLite URI modes:

``mode=ro&immutable=1``
    When there is no ``-wal`` file, so no process is writing the store (nor was killed while
    writing it): a store's ``-wal`` is folded into the main file and deleted when its last
    writer closes, so every committed annotation is in the main file. ``immutable`` tells SQLite
    the file will not change: it takes no locks and creates no side files. That is what makes a
    store readable in a folder we may not write (plain ``mode=ro`` would have to create the
    ``-shm`` file there and fails with "attempt to write a readonly database"), and it leaves a
    folder we may write as it was (a ``mode=ro`` connection cannot delete the ``-wal`` and
    ``-shm`` files it made). Because someone may start writing later, the store object compares
    the file's inode, size and time, and whether a ``-wal`` exists, before and after every read
    (:func:`file_state`), and reopens the file when they changed (in ``mode=ro`` once a ``-wal``
    exists), so it never returns what a checkpoint in progress left.
``mode=ro``
    When a ``-wal`` exists: a writer is working (or was killed) and committed annotations may
    still be in the log. The connection shares the writer's ``-shm`` locks (read-only if the
    folder is, which SQLite supports) and sees every commit.

A ``-wal`` file without its ``-shm`` in a read-only folder cannot be read safely (the log may
hold committed annotations that ``immutable`` would ignore): that is refused with a message.

Read-only is decided on the permission bits too (``chmod a-w``), like
:func:`nsi_widgets.core.storage.check_output_path`, so a file or folder marked read-only is
respected even by root (who can write anything).
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from ..core.errors import InputError
from . import schema
from .errors import (AnnotationStoreError, NotAnAnnotationStoreError, StoreIsADirectoryError, StoreLockedError,
                     StoreNotFoundError, StorePermissionError, StoreReadOnlyError)

SQLITE_HEADER = b"SQLite format 3\x00"
READ_WRITE, READ_ONLY, IMMUTABLE = "read-write", "mode=ro", "immutable"


def suggested_location() -> str:
    return str(Path.home() / "nsi-annotations.sqlite")


def side_files(path: Path) -> tuple[Path, Path]:
    """The WAL journal files SQLite keeps next to the store."""
    return Path(f"{path}-wal"), Path(f"{path}-shm")


def writable(path: Path) -> bool:
    """Whether we may write ``path``: permission for this user and, for root too, a write bit set."""
    try:
        return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)
    except OSError:
        return False


def file_state(path: Path) -> tuple:
    """What changes when someone writes the store: the main file's identity, size and time, and the -wal."""
    try:
        st = path.stat()
        main = (st.st_ino, st.st_size, st.st_mtime_ns)
    except (OSError, ValueError):  # ValueError: a NUL in the name (refused when opening)
        return None, False
    try:
        return main, side_files(path)[0].exists()
    except OSError:
        return main, False


def open_store_file(path: Path, *, read_only: bool, timeout: float) -> tuple[sqlite3.Connection, str]:
    """Check ``path``, connect, verify (or, when writing, initialise) the schema and set the pragmas.

    Returns the connection and the mode used (:data:`READ_WRITE`, :data:`READ_ONLY` or
    :data:`IMMUTABLE`). Raises the store's errors, naming the file and what to do.
    """
    try:
        mode, target = _check_path(path, read_only)
    except AnnotationStoreError:
        raise
    except OSError as exc:  # a name too long, a loop of links...
        raise StorePermissionError(f"cannot open annotation store {path}: {exc.strerror or exc}") from None
    try:
        conn = sqlite3.connect(target, uri=read_only, timeout=timeout, isolation_level=None,
                               check_same_thread=False)
    except sqlite3.Error as exc:
        raise translate(exc, path, "open", timeout, mode) from exc
    try:
        _prepare(conn, path, read_only)
    except sqlite3.Error as exc:
        conn.close()
        error = translate(exc, path, "open", timeout, mode)
        if type(error) is AnnotationStoreError and _header_application_id(path) != schema.APPLICATION_ID:
            error = NotAnAnnotationStoreError(f"{path} is not an annotation store (a SQLite file of something "
                                              f"else, or a damaged one: {exc})")
        raise error from exc
    except BaseException:
        conn.close()
        raise
    return conn, mode


def _check_path(path: Path, read_only: bool) -> tuple[str, str]:
    """Check the file (and its folder) before SQLite sees it; return the mode and what to connect to."""
    if "\x00" in str(path):
        raise InputError(f"annotation store path {str(path)!r} contains a NUL character")
    if path.is_dir():
        raise StoreIsADirectoryError(f"{path} is a directory; give the annotation store's file name, "
                                     f"e.g. {path / 'annotations.sqlite'}")
    exists = path.exists()
    if exists:
        _check_sqlite_header(path)
    if not read_only:
        _check_writable(path, exists)
        return READ_WRITE, str(path)
    mode = _read_mode(path, exists)
    return mode, f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if mode == IMMUTABLE else "")


def _check_sqlite_header(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except PermissionError:
        raise StorePermissionError(f"cannot read annotation store {path}: permission denied") from None
    except OSError as exc:
        raise StorePermissionError(f"cannot read annotation store {path}: {exc.strerror or exc}") from None
    # An empty file is an empty database (its content may still sit in the -wal file).
    if head and head != SQLITE_HEADER:
        raise NotAnAnnotationStoreError(
            f"{path} is not an annotation store (not a SQLite database); "
            f"give a new file name or an existing store's file")


def _header_application_id(path: Path) -> int | None:
    """The application id in a SQLite file's header (bytes 68-71), without SQLite."""
    try:
        with open(path, "rb") as f:
            header = f.read(72)
    except OSError:
        return None
    return int.from_bytes(header[68:72], "big") if len(header) == 72 else None


def _read_mode(path: Path, exists: bool) -> str:
    if not exists:
        raise StoreNotFoundError(f"no annotation store at {path} (opened with read_only=True, which "
                                 f"never creates one)")
    wal, shm = side_files(path)
    if wal.exists():
        if not shm.exists() and not writable(path.parent):
            raise StorePermissionError(
                f"cannot read annotation store {path}: it has a write-ahead log {wal.name} (from a process "
                f"that is writing it or was killed) but no {shm.name}, and the folder is read-only, so "
                f"SQLite cannot read the log; open the store once where its folder is writable (that folds "
                f"the log into the file), or copy the store with its {wal.name} file to a writable folder")
        return READ_ONLY
    return IMMUTABLE


def _check_writable(path: Path, exists: bool) -> None:
    directory = path.parent
    if not directory.exists():
        raise StoreNotFoundError(f"directory {directory} does not exist; create it first or choose "
                                 f"another location for the annotation store")
    if exists and not writable(path):
        raise StoreReadOnlyError(
            f"annotation store {path} is read-only (no write permission on the file); "
            f"open it with read_only=True to read it, or copy it to a writable location, e.g. "
            f"AnnotationStore({suggested_location()!r})")
    journals_exist = all(p.exists() for p in side_files(path))
    if not writable(directory) and not journals_exist:
        what = "create the store" if not exists else "create its -wal and -shm journal files"
        raise StoreReadOnlyError(
            f"cannot write annotation store {path}: directory {directory} is read-only and SQLite "
            f"needs to {what} there; choose another location, e.g. "
            f"AnnotationStore({suggested_location()!r})"
            + (", or open it with read_only=True to read it" if exists else ""))


def _prepare(conn: sqlite3.Connection, path: Path, read_only: bool) -> None:
    """Check the file is our store (initialising an empty one), then set the pragmas."""
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
    except sqlite3.Error:  # SQLite < 3.31 has no such setting (and no risky schema features)
        pass
    state = schema.inspect(conn)
    if state is None:  # an empty database: make it a store
        if read_only:
            raise NotAnAnnotationStoreError(f"{path} is an empty database, not an annotation store")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise AnnotationStoreError(f"cannot use WAL journal mode for {path} (got {mode!r}); "
                                       f"put the store on a local disk")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema.inspect(conn) is None:  # another process may have initialised it meanwhile
                schema.create(conn)
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise
        state = schema.inspect(conn)
    schema.verify(state, path)
    if not read_only:
        conn.execute("PRAGMA journal_mode = WAL")  # persistent; a no-op after creation
        conn.execute("PRAGMA synchronous = FULL")  # per connection: fsync at every commit


def translate(exc: sqlite3.Error, path: Path, doing: str, timeout: float, mode: str = READ_WRITE) -> Exception:
    """Turn a sqlite3 error into one of the store's errors, naming the file and saying what to do."""
    name, message = getattr(exc, "sqlite_errorname", "") or "", str(exc)  # errorname: Python 3.11+
    lowered = message.lower()
    if name.startswith("SQLITE_BUSY") or "locked" in lowered:
        return StoreLockedError(
            f"annotation store {path} is locked: another process (another notebook or "
            f"script writing to it) held the lock for more than timeout={timeout:g} s. "
            f"Nothing was written; retry, close the other writer, or open the store with a larger timeout")
    if mode != READ_WRITE and (name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN"))
                               or "readonly" in lowered or "unable to open" in lowered):
        return StorePermissionError(
            f"cannot read annotation store {path} read-only: {message}; SQLite needs to read (and "
            f"share locks in) {side_files(path)[1].name} next to it; copy the store to a writable folder")
    if name.startswith("SQLITE_READONLY") or "readonly" in lowered or "read-only" in lowered:
        return StoreReadOnlyError(
            f"cannot write annotation store {path}: the file or its directory is read-only. "
            f"Nothing was written; choose another location, e.g. AnnotationStore({suggested_location()!r})")
    if name == "SQLITE_NOTADB" or "not a database" in lowered:
        return NotAnAnnotationStoreError(f"{path} is not an annotation store (not a SQLite database)")
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in lowered:
        return StoreReadOnlyError(
            f"cannot {doing} annotation store {path}: {message}; check the path and permissions "
            f"or choose another location, e.g. AnnotationStore({suggested_location()!r})")
    if name.startswith("SQLITE_CORRUPT") or "malformed" in lowered:
        return AnnotationStoreError(
            f"annotation store {path} is damaged ({message}); restore it from a backup or an export")
    if name == "SQLITE_TOOBIG" or "too big" in lowered:
        return AnnotationStoreError(f"cannot {doing} annotation store {path}: a label, note or tag is larger "
                                    f"than SQLite allows ({message}); nothing was written")
    if name == "SQLITE_FULL" or "disk is full" in lowered:
        return AnnotationStoreError(f"cannot {doing} annotation store {path}: the disk is full; nothing "
                                    f"was written; free some space and retry")
    return AnnotationStoreError(f"annotation store {path}: {doing} failed: {message}")


def rollback_quietly(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # the transaction is already gone; SQLite rolled it back
