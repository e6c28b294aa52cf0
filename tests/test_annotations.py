"""The hand-annotation store: nothing lost, nothing corrupted, several writers, clear errors."""
import csv
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nsi_widgets.annotations import store as ann
from nsi_widgets.annotations import (AnnotationStore, NotAnAnnotationStoreError, SchemaVersionError,
                                     StoreLockedError, StoreReadOnlyError, merge_stores)
from nsi_widgets.core.receptive_field import ReceptiveField
from nsi_widgets.index.results import LayerIndex, NeuronIndex

WRITER = Path(__file__).with_name("_annotation_writer.py")
MODULE = Path(ann.__file__).parent  # the package folder, imported by the writer
TRICKY = "Gesichtsneuron ü 狗脸 🐶"
TRICKY_NOTE = 'first line, with "quotes", commas\nsecond line; 狗脸 🐶\r\nthird\ttabbed'


def _index(fingerprint="fp-tiny", units=(4, 6)):
    """A NeuronIndex of two layers with the given numbers of units (arrays are placeholders)."""
    layers = {}
    for name, c in zip(("conv1", "conv2"), units):
        layers[name] = LayerIndex(
            name=name, top_indices=np.zeros((c, 2), np.int64), top_activations=np.ones((c, 2), np.float32),
            top_positions=np.zeros((c, 2, 2), np.int64),
            receptive_field=ReceptiveField((3, 3), (1, 1), (1, 1)), map_size=(8, 8),
            top_labels=np.full((c, 2), -1, np.int64))
    return NeuronIndex(layers, meta={"model_fingerprint": fingerprint})


def _fields(a):
    """Everything a user wrote, plus who, when and for which model."""
    return (a.model, a.layer, a.unit, a.author, a.label, a.note, a.tags, a.time)


def _file_digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fill(store):
    """Annotations exercising every field, by two authors."""
    written = [
        store.annotate("conv1", 0, TRICKY, note=TRICKY_NOTE, tags=["ü", "狗", "a,b", 'q"uote']),
        store.annotate("conv1", 3, "red-mushroom"),
        store.annotate("conv2", 5, "dog-face", note="  leading and trailing spaces kept  ",
                       tags=("animal", "face")),
        store.annotate("conv2", 0, "=SUM(A1)", note="", author="bob"),
    ]
    return {(a.layer, a.unit, a.author): a for a in written}


# Round trips -----------------------------------------------------------------------------------
def test_round_trip_sqlite_every_field(tmp_path):
    path = tmp_path / "a.sqlite"
    with AnnotationStore(path, index=_index(), author="alice") as store:
        written = _fill(store)
    with AnnotationStore(path, index=_index(), author="alice") as store:
        assert store.model == "fp-tiny"
        for (layer, unit, author), a in written.items():
            got = store.get(layer, unit, author=author)
            assert got == a
            assert _fields(got) == _fields(a)
        assert store.get("conv1", 0).tags == ("ü", "狗", "a,b", 'q"uote')
        assert store.get("conv1", 0).note == TRICKY_NOTE
        assert store.get("conv1", 1) is None
        assert set(store.all(author="*")) == set(written)
        # UTC ISO-8601 times
        for a in written.values():
            assert datetime.fromisoformat(a.time).utcoffset() == timedelta(0)
    # text stored as text, nothing pickled
    raw = sqlite3.connect(path)
    types = raw.execute("SELECT DISTINCT typeof(model), typeof(layer), typeof(unit), typeof(author), "
                        "typeof(label), typeof(note), typeof(tags), typeof(time) FROM history").fetchall()
    assert types == [("text", "text", "integer", "text", "text", "text", "text", "text")]
    assert json.loads(raw.execute("SELECT tags FROM history WHERE unit = 0 AND layer = 'conv1'").fetchone()[0]) == [
        "ü", "狗", "a,b", 'q"uote']
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_round_trip_export_import(tmp_path, fmt):
    with AnnotationStore(tmp_path / "a.sqlite", index=_index(), author="alice") as store:
        written = _fill(store)
        out = tmp_path / f"export.{fmt}"
        assert getattr(store, f"export_{fmt}")(out) == len(written)
    # the file itself, read with the standard library (not our importer)
    if fmt == "csv":
        with open(out, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        by_key = {(r["layer"], int(r["unit"]), r["author"]): r for r in rows}
        assert by_key[("conv1", 0, "alice")]["note"] == TRICKY_NOTE
        assert json.loads(by_key[("conv1", 0, "alice")]["tags"]) == ["ü", "狗", "a,b", 'q"uote']
        assert by_key[("conv1", 0, "alice")]["label"] == TRICKY
    else:
        doc = json.loads(out.read_text(encoding="utf-8"))
        assert doc["format"] == ann.FORMAT_NAME and doc["schema_version"] == ann.SCHEMA_VERSION
        by_key = {(r["layer"], r["unit"], r["author"]): r for r in doc["annotations"]}
        assert by_key[("conv1", 0, "alice")]["note"] == TRICKY_NOTE
    assert set(by_key) == set(written)
    # import into a fresh store: every field back
    with AnnotationStore(tmp_path / "b.sqlite", index=_index(), author="carol") as other:
        report = getattr(other, f"import_{fmt}")(out)
        assert len(report.added) == len(written) and not report.conflicts and report.unchanged == 0
        got = other.all(author="*")
        assert {k: _fields(a) for k, a in got.items()} == {k: _fields(a) for k, a in written.items()}
        assert all(a.action == "import" for a in got.values())
        # importing the same file again changes nothing
        revision = other.revision
        again = getattr(other, f"import_{fmt}")(out)
        assert again.unchanged == len(written) and not again.added and other.revision == revision


def test_pandas_view(tmp_path):
    with AnnotationStore(tmp_path / "a.sqlite", index=_index(), author="alice") as store:
        written = _fill(store)
        df = store.to_pandas()
        assert list(df.columns) == list(ann.CSV_COLUMNS)
        assert len(df) == len(written)
        row = df[(df.layer == "conv1") & (df.unit == 0)].iloc[0]
        assert row.note == TRICKY_NOTE and row.tags == ("ü", "狗", "a,b", 'q"uote') and row.author == "alice"
        assert len(store.to_pandas(author=None)) == 3  # alice's only
        store.annotate("conv1", 3, "changed")
        hist = store.to_pandas(history=True)
        assert len(hist) == len(written) + 1 and list(hist.revision) == sorted(hist.revision)


# Several processes ------------------------------------------------------------------------------
def _spawn(*args):
    return subprocess.Popen([sys.executable, str(WRITER), str(MODULE), *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_write_concurrently(tmp_path):
    path = tmp_path / "shared.sqlite"
    store = AnnotationStore(path, author="class")  # created before, kept open while they write
    # A short pause after each write lets the other process in (SQLite's lock is not fair: a writer
    # that never pauses makes the other wait until it is done, which loses nothing but proves less).
    writers = [_spawn(path, "annotate", "class", "conv1", start, 500, 0.0005) for start in (0, 500)]
    for w in writers:
        assert w.stdout.readline().strip() == "ready", w.stderr.read()
    for w in writers:  # release both at once
        w.stdin.write("go\n")
        w.stdin.flush()
    outputs = [w.communicate(timeout=120) for w in writers]
    for w, (out, err) in zip(writers, outputs):
        assert w.returncode == 0, err
        assert len(out.split()) == 500
    assert store.revision == 1000  # seen through the connection opened before the writes
    got = store.all()
    assert sorted(u for _, u in got) == list(range(1000))
    for (_, unit), a in got.items():
        assert a.label == f"class-{unit}" and a.tags == ("class", "ü") and "狗脸 🐶" in a.note
    # the writes really interleaved
    first = [a.revision for (_, u), a in got.items() if u < 500]
    second = [a.revision for (_, u), a in got.items() if u >= 500]
    assert min(first) < max(second) and min(second) < max(first)
    assert store._read("PRAGMA integrity_check") == [("ok",)]
    store.close()


def _run_and_kill(args, min_lines, extra_seconds):
    """Start a writer, let it write, SIGKILL it; return the lines it printed (calls that returned)."""
    proc = _spawn(*args)
    proc.stdin.write("go\n")  # the annotate mode waits for it after "ready"
    proc.stdin.flush()
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout))  # until EOF at the kill
    reader.start()
    deadline = time.monotonic() + 30
    while sum(1 for line in lines if line.endswith("\n")) < min_lines:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the writer did not start writing"
        time.sleep(0.01)
    time.sleep(extra_seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    proc.stdin.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return [line.strip() for line in lines if line.endswith("\n")]


def _check_integrity(path):
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        raw.close()


def test_killed_writer_loses_no_committed_annotation(tmp_path):
    path = tmp_path / "killed.sqlite"
    expected = set()
    for round_ in range(3):
        start = round_ * 100_000
        lines = _run_and_kill([path, "annotate", "alice", "conv1", start, 10**6], min_lines=2,
                              extra_seconds=0.35 + 0.15 * round_)
        assert lines[0] == "ready"
        returned = {int(x) for x in lines[1:]}
        assert len(returned) > 20
        expected |= returned
        _check_integrity(path)
        with AnnotationStore(path, author="alice") as store:
            got = store.all()
            units = {u for _, u in got}
            assert expected <= units  # every call that returned is there
            # at most the one write in flight at the kill may be there too
            assert len(units - expected) <= 1 and units - expected <= {start + len(returned)}
            for unit in returned:
                assert got[("conv1", unit)].label == f"alice-{unit}"
            assert store.revision == len(units)
        expected = units


def test_killed_import_is_all_or_nothing(tmp_path):
    path = tmp_path / "batches.sqlite"
    AnnotationStore(path, author="alice").close()
    for round_ in range(2):
        start = round_ * 1_000_000
        lines = _run_and_kill([path, "batch", "alice", "conv1", start, 200], min_lines=2,
                              extra_seconds=0.3 + 0.2 * round_)
        returned = {int(x) for x in lines}
        _check_integrity(path)
        with AnnotationStore(path, author="alice") as store:
            counts = {}
            for (_, unit), a in store.all().items():
                if unit >= start and unit < start + 1_000_000:
                    counts[a.label] = counts.get(a.label, 0) + 1
            assert set(counts.values()) <= {200}  # never a partial batch
            assert {f"batch-{b}" for b in returned} <= set(counts)


# History and undo -------------------------------------------------------------------------------
def test_history_and_undo(tmp_path):
    with AnnotationStore(tmp_path / "h.sqlite", index=_index(), author="alice") as store:
        v1 = store.annotate("conv2", 4, "dog", note="first", tags=["a"])
        v2 = store.annotate("conv2", 4, "dog-face", note="second", tags=["a", "b"])
        v3 = store.annotate("conv2", 4, "wolf", note="third", tags=[])
        assert v1.revision < v2.revision < v3.revision
        back = store.undo("conv2", 4)
        assert (back.label, back.note, back.tags) == (v2.label, v2.note, v2.tags)
        assert store.get("conv2", 4) == back
        hist = store.history("conv2", 4)
        assert [(h.label, h.action) for h in hist] == [("dog", "set"), ("dog-face", "set"), ("wolf", "set"),
                                                       ("dog-face", "undo")]
        assert hist[:3] == [v1, v2, v3]  # append-only: the old versions are untouched
        assert store.undo("conv2", 4).label == "dog"
        assert store.undo("conv2", 4) is None and store.get("conv2", 4) is None
        with pytest.raises(LookupError, match="nothing to undo"):
            store.undo("conv2", 4)
        # removal is a history row; undo brings the annotation back
        store.annotate("conv2", 4, "cat")
        removal = store.remove("conv2", 4)
        assert removal.removed and store.get("conv2", 4) is None and ("conv2", 4) not in store.all()
        assert store.undo("conv2", 4).label == "cat"
        with pytest.raises(LookupError):
            store.remove("conv2", 5)
        assert len(store.history("conv2", 4)) == 9
        # an unchanged annotate writes nothing
        revision = store.revision
        assert store.annotate("conv2", 4, "  cat ").revision == store.get("conv2", 4).revision
        assert store.revision == revision
        # the history cannot be rewritten, even with raw SQL
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store._connection().execute("DELETE FROM history")
        assert len(store.history("conv2", 4)) == 9


def test_authors_are_separate_and_search(tmp_path):
    with AnnotationStore(tmp_path / "s.sqlite", author="alice") as store:
        store.annotate("conv1", 0, TRICKY, tags=["Pelz"])
        store.annotate("conv1", 1, "stripes", note="looks like a ZEBRA")
        store.annotate("conv1", 0, "something else", author="bob")
        assert store.get("conv1", 0).label == TRICKY
        assert store.get("conv1", 0, author="bob").label == "something else"
        assert len(store.history("conv1", 0)) == 1 and len(store.history("conv1", 0, author="*")) == 2
        assert [a.unit for a in store.search("GESICHTSNEURON Ü")] == [0]
        assert [a.unit for a in store.search("zebra")] == [1]
        assert [a.unit for a in store.search("pelz")] == [0]
        assert [a.author for a in store.search("else")] == []
        assert [a.author for a in store.search("else", author="*")] == ["bob"]
        assert store.authors() == ["alice", "bob"]
        rev = store.revision
        store.annotate("conv1", 2, "new")
        assert [a.label for a in store.changes(since=rev)] == ["new"]


# Import conflicts, merge and agreement -----------------------------------------------------------
def test_import_conflict_report(tmp_path):
    out = tmp_path / "theirs.json"
    with AnnotationStore(tmp_path / "theirs.sqlite", index=_index(), author="alice") as theirs:
        theirs.annotate("conv1", 0, "dog")
        theirs.annotate("conv1", 1, "cat")
        theirs.annotate("conv1", 2, "new one")
        theirs.export_json(out)
    with AnnotationStore(tmp_path / "ours.sqlite", index=_index(), author="alice") as ours:
        ours.annotate("conv1", 0, "wolf")
        ours.annotate("conv1", 1, "cat")
        ours.annotate("conv1", 2, "gone")
        ours.remove("conv1", 2)
        revision = ours.revision
        report = ours.import_json(out)  # on_conflict="report"
        assert [(c.ours.label, c.theirs.label, c.resolution) for c in report.conflicts] == [
            ("wolf", "dog", "unresolved")]
        assert report.unchanged == 1 and [a.label for a in report.added] == ["new one"]
        assert ours.get("conv1", 0).label == "wolf" and ours.revision == revision + 1
        assert "wolf" in str(report) and "dog" in str(report)
        assert ours.import_json(out, on_conflict="ours").conflicts[0].resolution == "ours"
        assert ours.get("conv1", 0).label == "wolf"
        settled = ours.import_json(out, on_conflict="theirs")
        assert [a.label for a in settled.updated] == ["dog"] and settled.conflicts[0].resolution == "theirs"
        assert ours.get("conv1", 0).label == "dog"
        assert [h.label for h in ours.history("conv1", 0)] == ["wolf", "dog"]  # ours kept in the history
        assert ours.undo("conv1", 0).label == "wolf"
        with pytest.raises(ValueError, match="on_conflict"):
            ours.import_json(out, on_conflict="mine")


def test_import_bad_files_write_nothing(tmp_path):
    with AnnotationStore(tmp_path / "s.sqlite", index=_index(), author="alice") as store:
        store.annotate("conv1", 0, "keep")
        revision = store.revision
        bad_csv = tmp_path / "bad.csv"
        bad_csv.write_text("layer,unit,label\nconv1,1,fine\nconv9,0,unknown layer\nconv1,99,bad unit\n"
                           "conv1,2,\n", encoding="utf-8")
        with pytest.raises(ValueError) as info:
            store.import_csv(bad_csv)
        message = str(info.value)
        assert "nothing was written" in message and "conv9" in message and "0..3" in message
        assert "line 5" in message
        dup = tmp_path / "dup.json"
        dup.write_text(json.dumps([{"layer": "conv1", "unit": 1, "label": "a"},
                                   {"layer": "conv1", "unit": 1, "label": "b"}]), encoding="utf-8")
        with pytest.raises(ValueError, match="twice"):
            store.import_json(dup)
        no_label = tmp_path / "nolabel.csv"
        no_label.write_text("layer,unit\nconv1,1\n", encoding="utf-8")
        with pytest.raises(ValueError, match="label"):
            store.import_csv(no_label)
        assert store.revision == revision
        # a hand-written CSV: ';'-separated tags, missing optional columns
        hand = tmp_path / "hand.csv"
        hand.write_text("unit,layer,label,tags,extra\n3,conv2, stripes ,red; round ,ignored\n", encoding="utf-8")
        got = store.import_csv(hand).added[0]
        assert (got.layer, got.unit, got.label, got.tags, got.author, got.model) == (
            "conv2", 3, "stripes", ("red", "round"), "alice", "fp-tiny")


def _expected_agreement(labels_by_author):
    """Brute force: per neuron, the authors' labels compared lowercased with whitespace collapsed."""
    neurons = sorted({key for labels in labels_by_author.values() for key in labels})
    expected = {}
    for key in neurons:
        given = {a: labels[key] for a, labels in labels_by_author.items() if key in labels}
        distinct = {" ".join(v.lower().split()) for v in given.values()}
        expected[key] = (len(given), len(distinct), len(given) >= 2 and len(distinct) == 1, given)
    return expected


def test_merge_and_agreement_three_authors(tmp_path):
    labels_by_author = {
        "alice": {("conv1", 0): "Dog face", ("conv1", 1): "red", ("conv1", 2): "stripes", ("conv2", 5): "eye"},
        "bob": {("conv1", 0): "dog  FACE", ("conv1", 1): "red", ("conv2", 5): "Eye "},
        "carol": {("conv1", 0): " dog face", ("conv1", 1): "blue", ("conv2", 1): "wheel"},
    }
    paths = []
    for author, labels in labels_by_author.items():
        path = tmp_path / f"{author}.sqlite"
        with AnnotationStore(path, index=_index(), author=author) as store:
            for (layer, unit), label in labels.items():
                store.annotate(layer, unit, label)
            store.annotate("conv2", 0, "removed later")
            store.remove("conv2", 0)
        paths.append(path)

    merged = merge_stores(paths, into=tmp_path / "class.sqlite", author="teacher")
    try:
        assert merged.model == "fp-tiny"  # bound to the students' model
        assert [len(r.added) for r in merged.merge_reports] == [4, 3, 3]
        table = merged.agreement()
        expected = _expected_agreement(labels_by_author)
        assert [(r.layer, r.unit) for r in table.itertuples()] == list(expected)
        for row in table.to_dict("records"):
            n_authors, n_labels, agree, given = expected[(row["layer"], row["unit"])]
            assert (row["n_authors"], row["n_labels"], row["agree"]) == (n_authors, n_labels, agree)
            for author in labels_by_author:
                if author in given:
                    assert row[author] == given[author].strip()
                else:
                    assert pd.isna(row[author])
        red = table[(table.layer == "conv1") & (table.unit == 1)].iloc[0]
        assert (red.majority, red.majority_count) == ("red", 2)
        assert list(merged.agreement(layer="conv2").unit) == [1, 5]
        # merging again adds nothing; a changed student label is reported, not overwritten
        revision = merged.revision
        assert all(not r.added and not r.conflicts for r in (merged.merge(p) for p in paths))
        assert merged.revision == revision
        with AnnotationStore(paths[2], index=_index(), author="carol") as carol:
            carol.annotate("conv1", 1, "red")
        with pytest.warns(UserWarning, match="1 conflicting"):
            merge_stores([paths[2]], into=merged)
        assert merged.get("conv1", 1, author="carol").label == "blue"
        assert merged.merge(paths[2], on_conflict="theirs").updated[0].label == "red"
        assert bool(merged.agreement().query("layer == 'conv1' and unit == 1").agree.iloc[0])
    finally:
        merged.close()

    # several authors in one file give the same table as separate files
    with AnnotationStore(tmp_path / "one.sqlite", index=_index(), author="teacher") as one:
        for author, labels in labels_by_author.items():
            for (layer, unit), label in labels.items():
                one.annotate(layer, unit, label, author=author)
        table_one = one.agreement()
        assert list(table_one.n_labels) == [expected[k][1] for k in expected]


# Errors -----------------------------------------------------------------------------------------
def test_bad_input_errors_write_nothing(tmp_path):
    with AnnotationStore(tmp_path / "s.sqlite", index=_index(units=(4, 6)), author="alice") as store:
        store.annotate("conv1", 0, "keep")
        revision = store.revision
        with pytest.raises(ValueError, match=r"unknown layer 'conv3'.*\['conv1', 'conv2'\]"):
            store.annotate("conv3", 0, "x")
        with pytest.raises(ValueError, match=r"unit 4 .*'conv1'.*0\.\.3"):
            store.annotate("conv1", 4, "x")
        with pytest.raises(ValueError, match=r"0\.\.5"):
            store.get("conv2", 6)
        for label in ("", "   ", "two\nlines"):
            with pytest.raises(ValueError):
                store.annotate("conv1", 1, label)
        with pytest.raises(TypeError):
            store.annotate("conv1", 1, 7)
        with pytest.raises(TypeError, match="tags"):
            store.annotate("conv1", 1, "x", tags="red")
        with pytest.raises(TypeError):
            store.annotate("conv1", 1, "x", tags=["ok", 3])
        with pytest.raises(TypeError):
            store.annotate("conv1", True, "x")
        with pytest.raises(ValueError):
            store.annotate("conv1", -1, "x")
        with pytest.raises(ValueError):
            store.annotate("conv1", 1, "x", author="*")
        assert store.revision == revision
        assert store.annotate("conv1", np.int64(3), " ok ").label == "ok"
    with pytest.raises(ValueError, match="does not match"):
        AnnotationStore(tmp_path / "s.sqlite", index=_index(), model="other")
    with pytest.raises(ValueError, match="closed"):
        store.get("conv1", 0)
    # unbound: no layer or unit validation, fingerprint ""
    with AnnotationStore(tmp_path / "s.sqlite", author="alice") as unbound:
        assert unbound.model == "" and unbound.get("conv1", 0) is None  # annotations are per model
        assert unbound.annotate("anything.at.all", 10**6, "x").model == ""
        assert unbound.models() == {"": 1, "fp-tiny": 2}
    with AnnotationStore(tmp_path / "s.sqlite", model="fp-tiny", author="alice") as by_fingerprint:
        assert by_fingerprint.get("conv1", 3).label == "ok"


def test_not_a_store(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n", encoding="utf-8")
    with pytest.raises(NotAnAnnotationStoreError, match="not a SQLite database") as info:
        AnnotationStore(text)
    assert str(text) in str(info.value)
    assert text.read_text(encoding="utf-8") == "just some notes\n"

    other = tmp_path / "other.db"
    raw = sqlite3.connect(other)
    raw.execute("CREATE TABLE measurements (x REAL)")
    raw.execute("INSERT INTO measurements VALUES (1.5)")
    raw.commit()
    raw.close()
    digest = _file_digest(other)
    with pytest.raises(NotAnAnnotationStoreError, match="measurements"):
        AnnotationStore(other)
    assert _file_digest(other) == digest  # not converted to WAL, nothing added
    assert not Path(f"{other}-wal").exists()

    # a store whose schema was tampered with (a foreign trigger) is refused
    tampered = tmp_path / "tampered.sqlite"
    AnnotationStore(tampered).close()
    raw = sqlite3.connect(tampered)
    raw.execute("CREATE TRIGGER sneaky AFTER INSERT ON history BEGIN SELECT 1; END")
    raw.commit()
    raw.close()
    with pytest.raises(NotAnAnnotationStoreError, match="sneaky"):
        AnnotationStore(tampered)

    with pytest.raises(IsADirectoryError):
        AnnotationStore(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AnnotationStore(tmp_path / "missing-dir" / "a.sqlite")
    # an empty file becomes a store
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with AnnotationStore(empty, author="a") as store:
        store.annotate("l", 0, "x")


def test_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "future.sqlite"
    with AnnotationStore(path, author="alice") as store:
        store.annotate("conv1", 0, "from the future")
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {ann.SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    digest = _file_digest(path)
    with pytest.raises(SchemaVersionError, match=rf"schema version {ann.SCHEMA_VERSION + 1}.*[Uu]pgrade"):
        AnnotationStore(path)
    assert _file_digest(path) == digest
    future_json = tmp_path / "future.json"
    future_json.write_text(json.dumps({"format": ann.FORMAT_NAME, "schema_version": 99, "annotations": []}))
    with AnnotationStore(tmp_path / "now.sqlite") as store, pytest.raises(SchemaVersionError):
        store.import_json(future_json)


def test_locked_store_times_out_with_clear_error(tmp_path):
    path = tmp_path / "locked.sqlite"
    with AnnotationStore(path, author="alice") as store:
        store.annotate("conv1", 0, "before")
    holder = _spawn(path, "hold", "-", "-", 0, 0)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        with AnnotationStore(path, author="alice", timeout=0.3) as store:  # reading needs no lock
            assert store.get("conv1", 0).label == "before"
            t0 = time.monotonic()
            with pytest.raises(StoreLockedError, match="another process") as info:
                store.annotate("conv1", 1, "blocked")
            assert 0.25 <= time.monotonic() - t0 < 10
            assert str(path) in str(info.value) and isinstance(info.value, TimeoutError)
            with pytest.raises(StoreLockedError):
                store.remove("conv1", 0)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
        holder.stderr.close()
    with AnnotationStore(path, author="alice", timeout=0.3) as store:
        assert store.get("conv1", 1) is None and store.get("conv1", 0).label == "before"
        assert store.annotate("conv1", 1, "after").label == "after"


def _as_unprivileged(fn):
    """Run ``fn`` without the right to write others' files: in a child as 'nobody' when we are root
    (root ignores permission bits), else directly. Returns fn's JSON-able result or the error."""
    def outcome():
        try:
            return {"ok": fn()}
        except Exception as exc:  # reported to the parent
            return {"error": type(exc).__name__, "message": str(exc),
                    "read_only_error": isinstance(exc, StoreReadOnlyError),
                    "permission_error": isinstance(exc, PermissionError)}

    if os.geteuid() != 0:
        return outcome()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, run, report, exit without running pytest's teardown
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            result = outcome()
        except BaseException as exc:
            result = {"error": type(exc).__name__, "message": f"child failed: {exc}"}
        with os.fdopen(write_end, "w") as f:
            json.dump(result, f)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_read_only_file_and_location(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="nsi-ro-"))  # outside tmp_path: 'nobody' must reach it
    try:
        os.chmod(base, 0o755)
        # a read-only file in a writable directory
        writable_dir = base / "mine"
        writable_dir.mkdir()
        store_path = writable_dir / "shared.sqlite"
        with AnnotationStore(store_path, author="alice") as store:
            store.annotate("conv1", 0, "teacher's label")
        os.chmod(store_path, 0o444)
        if os.geteuid() == 0:
            os.chown(writable_dir, 65534, 65534)
        digest = _file_digest(store_path)

        def write_read_only_file():
            with AnnotationStore(store_path, author="student") as s:
                s.annotate("conv1", 1, "x")

        result = _as_unprivileged(write_read_only_file)
        assert result.get("read_only_error"), result
        assert result["permission_error"] and str(store_path) in result["message"]
        assert "read-only" in result["message"] and "AnnotationStore(" in result["message"]

        def read_read_only_file():
            with AnnotationStore(store_path, author="alice", read_only=True) as s:
                label = s.get("conv1", 0).label
                try:
                    s.annotate("conv1", 2, "x")
                except StoreReadOnlyError:
                    return label
                return "written!"

        assert _as_unprivileged(read_read_only_file) == {"ok": "teacher's label"}
        assert _file_digest(store_path) == digest

        # a new store in a read-only directory
        locked_dir = base / "theirs"
        locked_dir.mkdir()
        os.chmod(locked_dir, 0o555)
        new_path = locked_dir / "new.sqlite"

        def create_in_read_only_dir():
            AnnotationStore(new_path, author="student").close()

        result = _as_unprivileged(create_in_read_only_dir)
        assert result.get("read_only_error"), result
        assert str(locked_dir) in result["message"] and "choose another location" in result["message"]
        assert list(locked_dir.iterdir()) == []
    finally:
        for p in base.rglob("*"):
            if p.is_dir():
                os.chmod(p, 0o755)
        shutil.rmtree(base)


def test_backup_copies_everything(tmp_path):
    with AnnotationStore(tmp_path / "a.sqlite", index=_index(), author="alice") as store:
        written = _fill(store)
        store.annotate("conv1", 3, "second version")
        target = store.backup(tmp_path / "copy.sqlite")
        with pytest.raises(FileExistsError):
            store.backup(target)
    with AnnotationStore(target, index=_index(), author="alice") as copy:
        assert len(copy.all(author="*")) == len(written)
        assert [h.label for h in copy.history("conv1", 3)] == ["red-mushroom", "second version"]
