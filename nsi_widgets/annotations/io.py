"""Moving annotations in and out of a store: CSV and JSON export and import, and backups.

Exports are written atomically with :func:`nsi_widgets.core.storage.atomic_write` (a crash leaves
the old file or the complete new one). Imports read the whole file, check every record, and write
nothing unless all are good, in one transaction (see ``AnnotationStore._apply_records``).

What an import refuses, each with an :class:`~nsi_widgets.core.errors.InputError` naming the file:
text that is not UTF-8 (with the line, column and bytes), files over ``max_bytes``
(:data:`MAX_IMPORT_BYTES` by default), CSV that does not parse, JSON that does not parse, is nested
deeper than Python's reader allows or holds integers longer than Python converts. CSV fields of
any length are read (the ``csv`` module's 128 KiB field limit is raised only while the file is
parsed, then restored), so a store's own exports always import again.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..core.errors import InputError
from .errors import (AnnotationStoreError, BackupExistsError, SchemaVersionError, StoreIsADirectoryError,
                     StoreNotFoundError, StorePermissionError)
from .records import ALL_AUTHORS, ImportReport, Problems, record_from_fields, shown, utc_now
from .schema import FORMAT_NAME, SCHEMA_VERSION

__all__ = ["CSV_COLUMNS", "MAX_IMPORT_BYTES"]

CSV_COLUMNS = ("model", "layer", "unit", "author", "label", "note", "tags", "time", "revision")
#: Imports refuse larger files unless given ``max_bytes=None`` (the records are held in memory).
MAX_IMPORT_BYTES = 2**30
_REQUIRED = ("layer", "unit", "label")
_FIELD_LIMIT_LOCK = threading.Lock()
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


class ImportExportMixin:
    """The export, import and backup methods of :class:`~nsi_widgets.annotations.AnnotationStore`."""

    # Export ----------------------------------------------------------------------------------
    def export_csv(self, path: str | os.PathLike, author: str | None = ALL_AUTHORS) -> int:
        """Write the current annotations of the bound model to a UTF-8 CSV file (atomically).

        Columns: ``model, layer, unit, author, label, note, tags, time, revision``; ``tags`` is a
        JSON list (``["red", "round"]``). All authors unless ``author`` is given.

        Returns
        -------
        int
            Number of annotations written.

        Raises
        ------
        nsi_widgets.core.errors.OutputError
            If the file cannot be written (a folder, read-only, full disk); the old file is kept.
        """
        rows = self._current_rows(author=self._read_author(author))
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for a in rows:
            writer.writerow([a.model, a.layer, a.unit, a.author, a.label, a.note,
                             json.dumps(list(a.tags), ensure_ascii=False), a.time, a.revision])
        _write_text(path, buffer.getvalue(), "annotation CSV export")
        return len(rows)

    def export_json(self, path: str | os.PathLike, author: str | None = ALL_AUTHORS) -> int:
        """Write the current annotations of the bound model to a UTF-8 JSON file (atomically).

        The file holds ``{"format", "schema_version", "exported", "model", "annotations": [...]}``,
        one object per annotation with the fields of :class:`Annotation` (tags as a list). Returns
        the number of annotations written; errors as :meth:`export_csv`.
        """
        rows = self._current_rows(author=self._read_author(author))
        document = {"format": FORMAT_NAME, "schema_version": SCHEMA_VERSION, "exported": utc_now(),
                    "model": self._model,
                    "annotations": [{k: v for k, v in a.to_dict().items() if k in CSV_COLUMNS} for a in rows]}
        _write_text(path, json.dumps(document, ensure_ascii=False, indent=1) + "\n", "annotation JSON export")
        return len(rows)

    def backup(self, path: str | os.PathLike) -> Path:
        """Copy the whole file (every model, author and history row) to ``path``, consistently.

        Uses SQLite's online backup, so it is safe while other processes write. Never replaces a
        file (:class:`BackupExistsError`).
        """
        target = Path(os.fspath(path)).expanduser()
        if target.exists():
            raise BackupExistsError(f"{target} exists; give a new file name for the backup")
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
            except (sqlite3.Error, OSError) as exc:
                raise AnnotationStoreError(f"cannot back up {self._path} to {target}: {exc}") from exc
            finally:
                if tmp.exists():
                    tmp.unlink()
        return target

    # Import ----------------------------------------------------------------------------------
    def import_csv(self, path: str | os.PathLike, on_conflict: str = "report", *,
                   max_bytes: int | None = MAX_IMPORT_BYTES) -> ImportReport:
        """Import annotations from a CSV file written by :meth:`export_csv` (or by hand).

        Required columns: ``layer, unit, label``; optional: ``model`` (default: the store's),
        ``author`` (default: the store's), ``note``, ``tags`` (a JSON list, or ``;``-separated),
        ``time`` (ISO-8601; default: now). Other columns are ignored. The file must be UTF-8
        (a byte-order mark is allowed). The whole file is checked before anything is written,
        and written in one transaction.

        Parameters
        ----------
        on_conflict : {"report", "theirs", "ours"}
            What to do when a key already has a *different* current annotation: ``"report"``
            keeps ours and lists the conflict, ``"theirs"`` writes the file's version (ours stays
            in the history), ``"ours"`` keeps ours. Keys without a current annotation are added.
        max_bytes : int or None
            Refuse larger files (default :data:`MAX_IMPORT_BYTES`, 1 GiB); ``None``: no limit.

        Returns
        -------
        ImportReport

        Raises
        ------
        InputError
            The file is not UTF-8, not CSV, lacks a column, or a record is bad (every problem is
            listed, with its line); nothing was written.
        """
        path = Path(os.fspath(path)).expanduser()
        text = _read_text(path, "CSV", max_bytes)
        problems = Problems()
        records = [self._record(fields, line, problems, from_csv=True)
                   for line, fields in _csv_records(text, path, problems)]
        return self._apply_records([r for r in records if r is not None], problems, source=str(path),
                                   on_conflict=on_conflict, action="import")

    def import_json(self, path: str | os.PathLike, on_conflict: str = "report", *,
                    max_bytes: int | None = MAX_IMPORT_BYTES) -> ImportReport:
        """Import annotations from a JSON file written by :meth:`export_json`.

        Also accepts a plain list of records. Fields as in :meth:`import_csv`, with ``unit`` a
        JSON integer and ``tags`` a JSON list of strings. See :meth:`import_csv` for
        ``on_conflict``, ``max_bytes``, the report and the errors.
        """
        path = Path(os.fspath(path)).expanduser()
        document = _parse_json(_read_text(path, "JSON", max_bytes), path)
        default_model = None
        if isinstance(document, dict):
            if document.get("format", FORMAT_NAME) != FORMAT_NAME:
                raise InputError(f"{path} is not an nsi-widgets annotation export "
                                 f"(format {shown(document.get('format'))})")
            version = document.get("schema_version", SCHEMA_VERSION)
            if isinstance(version, bool) or not isinstance(version, int) or version > SCHEMA_VERSION:
                raise SchemaVersionError(f"{path} was exported by a newer nsi-widgets (schema_version "
                                         f"{shown(version)} > {SCHEMA_VERSION}); upgrade nsi-widgets to import it")
            default_model = document.get("model")
            items = document.get("annotations")
        else:
            items = document
        if not isinstance(items, list):
            raise InputError(f"{path}: expected a list of annotations (or an object with 'annotations'), "
                             f"got {type(items).__name__}")
        problems = Problems()
        records = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                problems.add(f"annotation #{i}: expected an object, got {type(item).__name__}")
                continue
            if default_model is not None and "model" not in item:
                item = {**item, "model": default_model}
            records.append(self._record(item, f"annotation #{i}", problems, from_csv=False))
        return self._apply_records([r for r in records if r is not None], problems, source=str(path),
                                   on_conflict=on_conflict, action="import")

    def _record(self, fields: dict, where: str, problems: Problems, *, from_csv: bool):
        """The record's :class:`Annotation`, or None after noting what is wrong with it."""
        try:
            return record_from_fields(fields, model=self._model, author=self._author, from_csv=from_csv)
        except (TypeError, ValueError) as exc:
            problems.add(f"{where}: {exc}")
            return None


# Reading files -----------------------------------------------------------------------------------
def _read_text(path: Path, kind: str, max_bytes: int | None) -> str:
    """The UTF-8 text of a file to import, or an error naming the file and the problem."""
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
        raise InputError(f"max_bytes must be a number of bytes >= 0 or None, got {max_bytes!r}")
    if "\x00" in str(path):
        raise InputError(f"the path {str(path)!r} of the {kind} file contains a NUL character")
    try:
        if path.is_dir():
            raise StoreIsADirectoryError(f"{path} is a directory; give the {kind} file to import")
        size = path.stat().st_size
    except FileNotFoundError:
        raise StoreNotFoundError(f"no {kind} file {path} to import") from None
    except PermissionError:
        raise StorePermissionError(f"cannot read {path}: permission denied") from None
    except StoreIsADirectoryError:
        raise
    except OSError as exc:
        raise StorePermissionError(f"cannot read {path}: {exc.strerror or exc}") from None
    if max_bytes is not None and size > max_bytes:
        raise InputError(f"{path} is {size:,} bytes, more than max_bytes={max_bytes:,}: not imported; "
                         f"split it, merge stores directly with merge_stores(), or pass max_bytes=None "
                         f"if you have the memory")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise StorePermissionError(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise StorePermissionError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _decode_utf8(data, path)


def _decode_utf8(data: bytes, path: Path) -> str:
    if data.startswith(_UTF16_BOMS):
        raise InputError(f"{path} is UTF-16 text; imports read UTF-8: save it as UTF-8 "
                         f"(in a spreadsheet program: 'CSV UTF-8')")
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        bad = data[offset:start + exc.end].hex(" ")
        raise InputError(f"{path} is not UTF-8 text: byte(s) {bad} at line {line}, column {column} "
                         f"(offset {offset}): {exc.reason}; save the file as UTF-8 (in a spreadsheet "
                         f"program: 'CSV UTF-8'; or convert it, e.g. iconv -f latin1 -t utf-8)") from None


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Raise the ``csv`` module's (process-wide) field size limit to ``limit`` for the block only."""
    with _FIELD_LIMIT_LOCK:  # imports in other threads wait rather than restore a limit under us
        previous = csv.field_size_limit()
        csv.field_size_limit(max(previous, limit))
        try:
            yield
        finally:
            csv.field_size_limit(previous)


def _csv_records(text: str, path: Path, problems: Problems) -> list[tuple[str, dict]]:
    """``("line N", cells by column)`` of each data row; bad rows are noted, a bad file raised."""
    rows = []
    with _csv_field_limit(len(text) + 1):  # no field can be longer than the file
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise InputError(f"{path} is empty; a CSV import needs a header line with the columns "
                                 f"{list(_REQUIRED)}")
            missing = [c for c in _REQUIRED if c not in header]
            if missing:
                raise InputError(f"{path}: CSV lacks the column(s) {missing}; found {[shown(h) for h in header]}")
            twice = sorted({h for h in header if header.count(h) > 1})
            if twice:
                raise InputError(f"{path}: CSV has the column(s) {twice} more than once")
            needed = max(header.index(c) for c in _REQUIRED) + 1
            start = reader.line_num + 1
            for cells in reader:  # a record may span lines (a note with line breaks)
                where, start = f"line {start}", reader.line_num + 1
                if not cells:
                    continue  # a blank line
                if len(cells) > len(header):
                    problems.add(f"{where}: more cells than columns")
                elif len(cells) < needed:
                    problems.add(f"{where}: fewer cells than columns")
                else:
                    rows.append((where, dict(zip(header, cells))))
        except csv.Error as exc:
            raise InputError(f"{path}, line {reader.line_num}: not valid CSV ({exc})") from None
    return rows


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be read (an annotation export is three levels "
                         f"deep: an object with a list of objects)") from None
    except MemoryError:
        raise InputError(f"{path} is too large to import in memory; split it") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts (sys.int_info)
        raise InputError(f"{path} cannot be read as JSON: {exc}") from None


def _write_text(path: str | os.PathLike, text: str, what: str) -> None:
    from ..core.storage import atomic_write  # numpy: not imported until an export needs it

    data = text.encode("utf-8")
    atomic_write(Path(os.fspath(path)).expanduser(), lambda f: f.write(data), what=what)
