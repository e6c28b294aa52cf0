"""Hardening of the annotation store (issue 14): every bad input gets one clear error, nothing is written.

Each case of :data:`CASES` builds files in a fresh folder, then does one bad thing; the test checks the
error's type (always an :class:`nsi_widgets.NsiError`), phrases of its message (the file's name among
them), that the message is one line where the CLI prints it, and that every file in the folder is
unchanged byte for byte, with no file added (no ``-wal``/``-shm`` journal, no temporary file).

Read-only cases run in a child process as an unprivileged user (root ignores file modes): see
``tests/_hardening.py``. Cases marked "mode bits" check that a file or folder without write
permission bits is refused also by root, as :mod:`nsi_widgets.core.storage` does.
"""
from __future__ import annotations

import csv
import json
import os
import sqlite3
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import nsi_widgets as nsi
from nsi_widgets.annotations import (AnnotationStore, AnnotationStoreError, BackupExistsError,
                                     NotAnAnnotationStoreError, SchemaVersionError, StoreIsADirectoryError,
                                     StoreNotFoundError, StorePermissionError, StoreReadOnlyError)
from nsi_widgets.core.errors import InputError, InputTypeError, NsiError, OutputError

from _hardening import finish, raises_clearly, run_unprivileged, shared_folder, snapshot, start_unprivileged

CSV_LIMIT = 128 * 1024  # the csv module's default field size limit


# Helpers -----------------------------------------------------------------------------------------
def make_store(folder: Path, name: str = "s.sqlite", **annotations: str) -> Path:
    """A store with a few annotations by 'alice' (the journal files are gone once it is closed)."""
    path = folder / name
    with AnnotationStore(path, author="alice") as store:
        store.annotate("conv1", 0, "red blob", note="first", tags=["colour"])
        store.annotate("conv1", 1, "stripes")
        for layer_unit, label in annotations.items():
            layer, unit = layer_unit.rsplit("_", 1)
            store.annotate(layer, int(unit), label)
    return path


def importing(kind: str, name: str, content: bytes | str, **kwargs: Any) -> Callable[[Path], Callable]:
    """A case builder: a store and a file ``name``; the action imports the file into the store."""
    def build(folder: Path) -> Callable:
        store_path = make_store(folder)
        target = folder / name
        if isinstance(content, str):
            target.write_text(content, encoding="utf-8")
        else:
            target.write_bytes(content)

        def action():
            with AnnotationStore(store_path, author="alice") as store:
                getattr(store, f"import_{kind}")(target, **kwargs)
        return action
    return build


def opening(make: Callable[[Path], Path], **kwargs: Any) -> Callable[[Path], Callable]:
    """A case builder: ``make(folder)`` returns a path; the action opens it as a store."""
    def build(folder: Path) -> Callable:
        path = make(folder)
        return lambda: AnnotationStore(path, **kwargs).close()
    return build


def on_store(do: Callable[[AnnotationStore, Path], Any], **kwargs: Any) -> Callable[[Path], Callable]:
    """A case builder: a store; the action opens it and calls ``do(store, folder)``."""
    def build(folder: Path) -> Callable:
        path = make_store(folder)

        def action():
            with AnnotationStore(path, author="alice", **kwargs) as store:
                do(store, folder)
        return action
    return build


def write(name: str, content: bytes | str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path
    return make


def exported(kind: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        source = make_store(folder, "source.sqlite")
        with AnnotationStore(source, author="alice") as store:
            getattr(store, f"export_{kind}")(folder / f"export.{kind}")
        source.unlink()
        return folder / f"export.{kind}"
    return make


def npz_file(folder: Path) -> Path:
    path = folder / "index.npz"
    np.savez(path, top_indices=np.arange(6).reshape(2, 3))
    return path


def with_sql(path: Path, *statements: str) -> Path:
    """Run ``statements`` on the SQLite file ``path`` with a plain connection (as another program would)."""
    raw = sqlite3.connect(path)
    for statement in statements:
        raw.execute(statement)
    raw.commit()
    raw.close()
    return path


def other_sqlite(folder: Path) -> Path:
    return with_sql(folder / "measurements.db", "CREATE TABLE measurements (x REAL)",
                    "INSERT INTO measurements VALUES (1.5)")


def tampered_store(folder: Path) -> Path:
    return with_sql(make_store(folder), "CREATE VIEW everything AS SELECT * FROM history")


def future_store(folder: Path) -> Path:
    return with_sql(make_store(folder), "PRAGMA user_version = 99")


def truncated_store(folder: Path) -> Path:
    path = make_store(folder)
    records = folder / "many.json"
    records.write_text(json.dumps([{"layer": "conv2", "unit": u, "label": "x" * 200} for u in range(200)]))
    with AnnotationStore(path, author="alice") as store:
        store.import_json(records)  # one transaction: many pages, so that half the file loses some
    records.unlink()
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def read_only_file_store(folder: Path) -> Path:
    path = make_store(folder)
    os.chmod(path, 0o444)
    return path


def read_only_folder(folder: Path) -> Path:
    locked = folder / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    return locked / "new.sqlite"


def export_over_read_only(name: str) -> Callable[[Path], Callable]:
    """A case builder: a store and a previous export ``name`` made read-only; the action exports over it."""
    def build(folder: Path) -> Callable:
        path = make_store(folder)
        target = folder / name
        target.write_text("the previous export\n")
        os.chmod(target, 0o444)

        def action():
            with AnnotationStore(path, author="alice") as store:
                getattr(store, f"export_{name.rsplit('.', 1)[1]}")(target)
        return action
    return build


def nested_json(depth: int) -> str:
    return '{"annotations": ' + "[" * depth + "]" * depth + "}"


def many_bad_items(n: int) -> str:
    return json.dumps({"annotations": list(range(n))})


LATIN1_CSV = "layer,unit,label\nconv1,2,caf\xe9 cr\xe8me\n".encode("latin-1")


# The table ---------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    build: Callable[[Path], Callable]
    error: type
    phrases: tuple[str, ...]
    one_line: bool = True  # an import lists every bad record, one per line; everything else is one line


CASES = [
    # `report --annotations FILE` opens FILE read-only: anything but a store is NotAnAnnotationStoreError.
    Case("text file", opening(write("notes.txt", "just some notes\n"), read_only=True),
         NotAnAnnotationStoreError, ("notes.txt", "not a SQLite database")),
    Case("the store's CSV export", opening(exported("csv"), read_only=True),
         NotAnAnnotationStoreError, ("export.csv", "not an annotation store")),
    Case("the store's JSON export", opening(exported("json"), read_only=True),
         NotAnAnnotationStoreError, ("export.json", "not an annotation store")),
    Case("an index file (.npz)", opening(npz_file, read_only=True),
         NotAnAnnotationStoreError, ("index.npz", "not a SQLite database")),
    Case("random bytes", opening(write("noise.bin", bytes(range(256)) * 64), read_only=True),
         NotAnAnnotationStoreError, ("noise.bin", "not an annotation store")),
    Case("empty file", opening(write("empty.sqlite", b""), read_only=True),
         NotAnAnnotationStoreError, ("empty.sqlite", "empty database")),
    Case("another program's SQLite file", opening(other_sqlite, read_only=True),
         NotAnAnnotationStoreError, ("measurements.db", "not an nsi-widgets annotation store", "measurements")),
    Case("SQLite header then garbage", opening(write("fake.sqlite", b"SQLite format 3\x00" + b"\xa5" * 5000),
                                               read_only=True),
         NotAnAnnotationStoreError, ("fake.sqlite", "not an annotation store")),
    Case("store with a foreign view", opening(tampered_store, read_only=True),
         NotAnAnnotationStoreError, ("s.sqlite", "schema was altered", "everything")),
    Case("store of a newer schema", opening(future_store, read_only=True),
         SchemaVersionError, ("s.sqlite", "schema version 99", "Upgrade nsi-widgets")),
    Case("truncated store", opening(truncated_store, read_only=True),
         AnnotationStoreError, ("s.sqlite", "damaged", "backup")),
    Case("a folder", opening(lambda folder: folder, read_only=True),
         StoreIsADirectoryError, ("is a directory", "annotations.sqlite")),
    Case("missing store, read-only", opening(lambda folder: folder / "absent.sqlite", read_only=True),
         StoreNotFoundError, ("absent.sqlite", "no annotation store")),
    Case("new store in a missing folder", opening(lambda folder: folder / "nowhere" / "a.sqlite"),
         StoreNotFoundError, ("nowhere", "does not exist")),
    Case("read-only (0444) store opened for writing (mode bits)", opening(read_only_file_store),
         StoreReadOnlyError, ("s.sqlite", "read-only", "read_only=True")),
    Case("new store in a 0555 folder (mode bits)", opening(read_only_folder),
         StoreReadOnlyError, ("locked", "read-only", "choose another location")),
    Case("path with a NUL character", lambda folder: (lambda: AnnotationStore(f"{folder}/a\0b.sqlite")),
         InputError, ("NUL character",)),
    Case("file name too long", opening(lambda folder: folder / ("x" * 300 + ".sqlite")),
         StorePermissionError, ("cannot open annotation store", "File name too long")),
    Case("bad author", opening(write("e.sqlite", b""), author="*"), InputError, ("author",)),
    Case("path of the wrong type", lambda folder: (lambda: AnnotationStore(3.5)), InputTypeError, ("path",)),
    # Imports: the file is named, the problem located; the store is unchanged.
    Case("CSV in Latin-1", importing("csv", "latin1.csv", LATIN1_CSV),
         InputError, ("latin1.csv", "not UTF-8", "line 2", "column 12", "e9")),
    Case("JSON in Windows-1252", importing("json", "cp1252.json", '[{"label": "“quoted”"}]'.encode("cp1252")),
         InputError, ("cp1252.json", "not UTF-8", "line 1", "93")),
    Case("CSV in UTF-16", importing("csv", "utf16.csv", "layer,unit,label\nconv1,2,x\n".encode("utf-16")),
         InputError, ("utf16.csv", "UTF-16", "save it as UTF-8")),
    Case("deeply nested JSON", importing("json", "deep.json", nested_json(100_000)),
         InputError, ("deep.json", "nested too deeply")),
    Case("JSON integer of 5000 digits", importing("json", "digits.json", '[{"layer": "conv1", "unit": '
                                                  + "9" * 5000 + ', "label": "x"}]'),
         InputError, ("digits.json", "cannot be read as JSON")),
    Case("JSON over max_bytes", importing("json", "big.json", json.dumps([{"layer": "conv1", "unit": u, "label": "x"}
                                                                           for u in range(100)]), max_bytes=1000),
         InputError, ("big.json", "more than max_bytes=1,000", "max_bytes=None")),
    Case("JSON that does not parse", importing("json", "broken.json", '[\n {"layer": "conv1",\n  "unit": 1,,\n'),
         InputError, ("broken.json", "not valid JSON", "line 3")),
    Case("JSON 'annotations' not a list", importing("json", "dict.json", '{"annotations": {"a": 1}}'),
         InputError, ("dict.json", "expected a list", "dict")),
    Case("JSON of 20,000 non-records", importing("json", "junk.json", many_bad_items(20_000)),
         InputError, ("junk.json", "nothing was written", "20000 problems", "annotation #9:", "19990 more"),
         one_line=False),
    Case("unit 10**30 in a CSV", importing("csv", "huge_unit.csv", f"layer,unit,label\nconv1,{10**30},x\n"),
         InputError, ("huge_unit.csv", "line 2", "too large", "nothing was written"), one_line=False),
    Case("lone surrogate in a JSON label", importing("json", "surrogate.json",
                                                     '[{"layer": "conv1", "unit": 3, "label": "a\\ud800b"}]'),
         InputError, ("surrogate.json", "annotation #0", "not valid Unicode"), one_line=False),
    Case("CSV time not ISO-8601", importing("csv", "time.csv", "layer,unit,label,time\nconv1,3,x,31/01/2025\n"),
         InputError, ("time.csv", "line 2", "ISO-8601"), one_line=False),
    Case("CSV row with fewer cells", importing("csv", "short.csv", "layer,unit,label\nconv1,3,x\nconv1,4\n"),
         InputError, ("short.csv", "line 3", "fewer cells"), one_line=False),
    Case("CSV without the label column", importing("csv", "nolabel.csv", "layer,unit\nconv1,1\n"),
         InputError, ("nolabel.csv", "lacks the column", "label")),
    Case("CSV with a column twice", importing("csv", "twice.csv", "layer,unit,label,label\nconv1,1,a,b\n"),
         InputError, ("twice.csv", "more than once", "label")),
    Case("empty CSV", importing("csv", "empty.csv", ""), InputError, ("empty.csv", "is empty")),
    Case("CSV import of a folder", on_store(lambda store, folder: store.import_csv(folder)),
         StoreIsADirectoryError, ("is a directory", "CSV")),
    Case("JSON import of a missing file", on_store(lambda store, folder: store.import_json(folder / "gone.json")),
         StoreNotFoundError, ("gone.json", "no JSON file")),
    Case("unknown on_conflict", importing("csv", "ok.csv", "layer,unit,label\nconv1,5,x\n", on_conflict="mine"),
         InputError, ("on_conflict", "'mine'")),
    # Writes and exports.
    Case("unit 10**30 (unbound store)", on_store(lambda store, folder: store.annotate("conv1", 10**30, "x")),
         InputError, ("unit", "too large")),
    Case("label with a lone surrogate", on_store(lambda store, folder: store.annotate("conv1", 2, "a\ud800")),
         InputError, ("label", "not valid Unicode")),
    Case("write to a store opened read-only", on_store(lambda store, folder: store.annotate("conv1", 2, "x"),
                                                       read_only=True),
         StoreReadOnlyError, ("s.sqlite", "read_only=True")),
    Case("CSV export over a 0444 file (mode bits)", export_over_read_only("old.csv"),
         OutputError, ("old.csv", "read-only", "not replaced")),
    Case("JSON export onto a folder", on_store(lambda store, folder: store.export_json(folder)),
         OutputError, ("is a directory",)),
    Case("backup over an existing file", on_store(lambda store, folder: store.backup(folder / "s.sqlite")),
         BackupExistsError, ("s.sqlite", "exists", "new file name")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_error_and_writes_nothing(case, tmp_path):
    raises_clearly(case.build(tmp_path), tmp_path, case.error, case.phrases, one_line=case.one_line)


# Read-only cases, as a user file permissions apply to ----------------------------------------------
@dataclass
class UnprivilegedCase:
    name: str
    build: Callable[[Path], str]  # prepares files (as root) and returns the child's action() source
    error: str
    phrases: tuple[str, ...]
    builtin: str = "PermissionError"  # the built-in type the error also is


def _child(body: str, **values: Any) -> str:
    """Source of an ``action()`` run by the unprivileged child, with ``values`` as its constants."""
    constants = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return ("from nsi_widgets.annotations import AnnotationStore\n" + constants
            + "def action():\n" + textwrap.indent(textwrap.dedent(body), "    "))


def _store_in_locked_folder(folder: Path, mode: int = 0o555) -> Path:
    """A store in a folder the child cannot write (0555; or root's 0755, write bit for the owner only)."""
    inner = folder / "class"
    inner.mkdir()
    path = make_store(inner)
    os.chmod(inner, mode)
    return path


def _write_into_locked_folder(folder: Path) -> str:
    path = _store_in_locked_folder(folder, 0o755)
    return _child("""
        with AnnotationStore(PATH, author="student") as store:
            store.annotate("conv1", 5, "x")
    """, PATH=str(path))


def _unreadable_store(folder: Path) -> str:
    path = make_store(folder)
    os.chmod(path, 0o600)  # root's own file: the child may not read it
    return _child("AnnotationStore(PATH, read_only=True)\n", PATH=str(path))


def _wal_without_shm(folder: Path) -> str:
    path = _store_in_locked_folder(folder)
    Path(f"{path}-wal").write_bytes(b"")  # a log left by a killed writer whose -shm is gone
    os.chmod(Path(f"{path}-wal"), 0o644)
    return _child("AnnotationStore(PATH, read_only=True)\n", PATH=str(path))


def _new_store_in_others_folder(folder: Path) -> str:
    inner = folder / "teacher"
    inner.mkdir()  # root's, 0755: the child has no write permission although a write bit is set
    return _child("AnnotationStore(PATH, author='student')\n", PATH=str(inner / "mine.sqlite"))


def _import_unreadable_csv(folder: Path) -> str:
    writable = folder / "mine"
    writable.mkdir()
    store = make_store(writable, "student.sqlite")
    os.chmod(writable, 0o777)  # the child may write the store and make its journal files
    os.chmod(store, 0o666)
    source = folder / "secret.csv"
    source.write_text("layer,unit,label\nconv1,3,x\n")
    os.chmod(source, 0o600)
    return _child("""
        with AnnotationStore(STORE, author="student") as store:
            store.import_csv(CSV)
    """, STORE=str(store), CSV=str(source))


def _export_into_others_folder(folder: Path) -> str:
    path = _store_in_locked_folder(folder, 0o755)
    return _child("""
        with AnnotationStore(PATH, read_only=True) as store:
            store.export_csv(TARGET)
    """, PATH=str(path), TARGET=str(path.parent / "export.csv"))


UNPRIVILEGED_CASES = [
    UnprivilegedCase("write a store in a folder we may not write", _write_into_locked_folder,
                     "StoreReadOnlyError", ("s.sqlite", "read-only", "read_only=True")),
    UnprivilegedCase("read a store we may not read", _unreadable_store,
                     "StorePermissionError", ("s.sqlite", "permission denied")),
    UnprivilegedCase("-wal without -shm in a read-only folder", _wal_without_shm,
                     "StorePermissionError", ("s.sqlite-wal", "write-ahead log", "-shm")),
    UnprivilegedCase("create a store in another user's folder", _new_store_in_others_folder,
                     "StoreReadOnlyError", ("teacher", "read-only", "choose another location")),
    UnprivilegedCase("import a CSV we may not read", _import_unreadable_csv,
                     "StorePermissionError", ("secret.csv", "permission denied")),
    UnprivilegedCase("export into another user's folder", _export_into_others_folder,
                     "OutputError", ("export.csv", "not writable"), builtin="OSError"),
]


@pytest.mark.parametrize("case", UNPRIVILEGED_CASES, ids=[c.name for c in UNPRIVILEGED_CASES])
def test_permission_errors_as_an_unprivileged_user(case):
    with shared_folder() as folder:
        code = case.build(folder)
        before = snapshot(folder)
        result = run_unprivileged(code)
        assert result.get("error") == case.error, result
        assert "NsiError" in result["types"] and case.builtin in result["types"], result["types"]
        for phrase in case.phrases:
            assert phrase in result["message"], (phrase, result["message"])
        assert "\n" not in result["message"]
        assert snapshot(folder) == before


READ_LABELS = """
with AnnotationStore(PATH, read_only=True, author="alice") as store:
    labels = {f"{layer}[{unit}]": a.label for (layer, unit), a in store.all().items()}
    try:
        store.annotate("conv1", 9, "x")
        refused = ""
    except Exception as exc:
        refused = type(exc).__name__
    return {"labels": labels, "revision": store.revision, "refused": refused}
"""


@pytest.mark.parametrize("mode", [0o555, 0o755], ids=["0555 folder", "root's 0755 folder"])
def test_store_in_a_read_only_folder_opens_read_only(mode):
    with shared_folder() as folder:
        path = _store_in_locked_folder(folder, mode)
        before = snapshot(folder)
        result = run_unprivileged(_child(READ_LABELS, PATH=str(path)))
        assert result == {"ok": {"labels": {"conv1[0]": "red blob", "conv1[1]": "stripes"}, "revision": 2,
                                 "refused": "StoreReadOnlyError"}}
        assert snapshot(folder) == before  # no -shm or -wal made, nothing changed


def test_reading_read_only_sees_a_writer_that_holds_the_store_open():
    """Annotations still in the owner's -wal are read through its -shm (SQLite's read-only shm)."""
    with shared_folder() as folder:
        path = _store_in_locked_folder(folder, 0o755)
        writer = AnnotationStore(path, author="alice")  # keeps -wal and -shm, as a notebook does
        try:
            writer.annotate("conv1", 2, "still in the log")
            assert Path(f"{path}-wal").stat().st_size > 0
            result = run_unprivileged(_child(READ_LABELS, PATH=str(path)))
            assert result["ok"]["labels"]["conv1[2]"] == "still in the log" and result["ok"]["revision"] == 3
        finally:
            writer.close()


FOLLOW_WRITES = """
import sys
with AnnotationStore(PATH, read_only=True, author="alice") as store:
    seen = [store.revision]
    print("READY", flush=True)
    sys.stdin.readline()  # the owner writes meanwhile
    seen.append(store.revision)
    seen.append(sorted(a.label for a in store.all().values()))
    return seen
"""


def test_read_only_reader_follows_later_writes_by_the_folder_owner():
    """Opened without locks (immutable), the reader notices the owner's writes and reopens the file."""
    with shared_folder() as folder:
        path = _store_in_locked_folder(folder, 0o755)
        child = start_unprivileged(_child(FOLLOW_WRITES, PATH=str(path)))
        try:
            assert child.stdout.readline().strip() == "READY", child.stderr.read()
            with AnnotationStore(path, author="alice") as owner:
                owner.annotate("conv1", 2, "new")
                owner.annotate("conv1", 3, "newer")
            child.stdin.write("go\n")
            child.stdin.flush()
            result = finish(child)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert result == {"ok": [2, 4, ["new", "newer", "red blob", "stripes"]]}


def test_csv_round_trip_of_fields_over_the_csv_limit(tmp_path):
    limit = csv.field_size_limit()
    note = ("a long note, with commas, \"quotes\" and\nline breaks; " * 10_000)[:3 * CSV_LIMIT]
    label = "x" * (2 * CSV_LIMIT)
    tags = [f"tag{i}" for i in range(30_000)]  # the tags cell alone is over 200 KiB of JSON
    with AnnotationStore(tmp_path / "a.sqlite", author="alice") as source:
        source.annotate("conv1", 0, label, note=note, tags=tags)
        source.annotate("conv1", 1, "short")
        assert source.export_csv(tmp_path / "big.csv") == 2
        assert source.export_json(tmp_path / "big.json") == 2
    assert (tmp_path / "big.csv").stat().st_size > 3 * CSV_LIMIT
    for kind in ("csv", "json"):
        with AnnotationStore(tmp_path / f"b-{kind}.sqlite", author="alice") as target:
            report = getattr(target, f"import_{kind}")(tmp_path / f"big.{kind}")
            assert len(report.added) == 2
            got = target.get("conv1", 0)
            assert (got.label, got.note, got.tags) == (label, note, tuple(tags))
    assert csv.field_size_limit() == limit  # raised only while the file was parsed
    (tmp_path / "bad.csv").write_text(f"layer,unit,label\nconv1,x,{label}\n")
    with AnnotationStore(tmp_path / "c.sqlite") as target, pytest.raises(InputError, match="line 2"):
        target.import_csv(tmp_path / "bad.csv")
    assert csv.field_size_limit() == limit  # also after a failed import


def test_store_errors_are_nsi_errors_with_their_built_in_bases():
    expected = {
        "AnnotationStoreError": (), "NotAnAnnotationStoreError": (ValueError,), "SchemaVersionError": (),
        "StoreReadOnlyError": (PermissionError,), "StorePermissionError": (PermissionError,),
        "StoreLockedError": (TimeoutError,), "StoreNotFoundError": (FileNotFoundError,),
        "StoreIsADirectoryError": (IsADirectoryError,), "BackupExistsError": (FileExistsError,),
    }
    import nsi_widgets.annotations as annotations

    for name, bases in expected.items():
        cls = getattr(annotations, name)
        assert issubclass(cls, NsiError) and issubclass(cls, AnnotationStoreError), name
        assert all(issubclass(cls, base) for base in bases), name
    assert issubclass(StoreReadOnlyError, StorePermissionError)
    assert (nsi.AnnotationStore, nsi.Annotation, nsi.merge_stores) == (
        annotations.AnnotationStore, annotations.Annotation, annotations.merge_stores)
