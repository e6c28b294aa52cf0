"""Subprocess helper for tests/test_annotations.py: writes into an annotation store from another process.

Usage::

    python _annotation_writer.py MODULE STORE MODE AUTHOR LAYER START COUNT [PAUSE]

MODULE is the folder of the ``nsi_widgets.annotations`` package under test. It is imported from that
folder without running ``nsi_widgets/__init__.py``, so that the process starts in a fraction of a
second (the top package imports torch; the annotations package needs only the standard library and
``nsi_widgets.core.errors``).

Modes
-----
annotate  After "ready", wait for a line on stdin, then annotate units START .. START+COUNT-1
          one by one, printing each unit (flushed) after its call returned, then sleeping PAUSE
          seconds (default 0; a pause lets the other writer in, as SQLite's lock is not fair).
batch     Import JSON files of COUNT annotations each (batch b covers units START+b*COUNT ...),
          printing the batch number after each import returned; runs until killed.
hold      Take the store's write lock with a raw sqlite3 connection, print "locked", keep it until
          stdin is closed.
"""
import importlib
import json
import os
import sqlite3
import sys
import time
import types


def _load(package_dir):
    """Import ``nsi_widgets.annotations`` from ``package_dir`` under an empty stand-in top package."""
    top = types.ModuleType("nsi_widgets")
    top.__path__ = [os.path.dirname(os.path.abspath(package_dir))]  # its subpackages are found there
    sys.modules["nsi_widgets"] = top
    return importlib.import_module("nsi_widgets.annotations")


def _note(unit):
    return f"Gesichtsneuron ü 狗脸 🐶, \"quoted\"\nunit {unit}"


def main(argv):
    package_dir, store_path, mode, author, layer, start, count, *rest = argv
    start, count = int(start), int(count)
    pause = float(rest[0]) if rest else 0.0
    if mode == "hold":
        conn = sqlite3.connect(store_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        sys.stdin.read()  # until the test closes our stdin
        conn.execute("ROLLBACK")
        return
    annotations = _load(package_dir)
    store = annotations.AnnotationStore(store_path, author=author, timeout=60.0)
    if mode == "annotate":
        print("ready", flush=True)
        sys.stdin.readline()
        for unit in range(start, start + count):
            store.annotate(layer, unit, f"{author}-{unit}", note=_note(unit), tags=[author, "ü"])
            print(unit, flush=True)
            if pause:
                time.sleep(pause)
    elif mode == "batch":
        batch = 0
        while True:
            records = [{"layer": layer, "unit": start + batch * count + i, "author": author,
                        "label": f"batch-{batch}", "note": _note(i), "tags": ["batch"]} for i in range(count)]
            path = f"{store_path}.batch-{os.getpid()}.json"
            with open(path, "w", encoding="utf-8") as f:
                json.dump(records, f, ensure_ascii=False)
            store.import_json(path)
            print(batch, flush=True)
            batch += 1
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
