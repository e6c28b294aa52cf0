"""Smoke test of the benchmark runner: ``benchmarks/run_all.py --quick --skip-crp`` completes and
reports every row with finite numbers. It checks structure only, never speed (the machine is shared)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_ALL = ROOT / "benchmarks" / "run_all.py"

EXPECTED_ROWS = ("forward", "scan", "full_luminance", "full_pca", "naive", "scan_n40", "crp")
SKIPPED_WITHOUT_CRP = {"scan_n40", "crp"}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    docs = (ROOT / "docs" / "benchmarks.md")
    docs_before = docs.read_bytes() if docs.exists() else None
    done = subprocess.run([sys.executable, str(RUN_ALL), "--quick", "--skip-crp", "--out", str(out)],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # --quick must never overwrite the published results.
    assert (docs.read_bytes() if docs.exists() else None) == docs_before
    return json.loads(out.read_text()), done.stdout


def test_every_row_is_reported_with_finite_numbers(quick_results):
    res, _ = quick_results
    assert tuple(res["rows"]) == EXPECTED_ROWS
    for key, row in res["rows"].items():
        if key in SKIPPED_WITHOUT_CRP:
            assert row["status"] == "skipped" and "skip" in row["note"]
            continue
        assert row["status"] == "measured", key
        for field in ("seconds", "ratio", "peak_rss_mb", "added_mb"):
            assert _finite(row[field]), (key, field, row[field])
        assert row["seconds"] > 0 and row["ratio"] > 0 and row["peak_rss_mb"] > 0
        assert len(row["ratios"]) == len(row["times"]) == row["runs"] >= 1


def test_scaling_pca_and_acceptance_tables(quick_results):
    res, stdout = quick_results
    sizes = {(e["method"], e["factor"]) for e in res["scaling"]}
    assert sizes == {(m, f) for m in ("naive baseline", "nsi-widgets scan") for f in (1, 2, 4)}
    for entry in res["scaling"]:
        assert _finite(entry["seconds"]) and _finite(entry["peak_rss_mb"])
        assert entry["images"] == res["workload"]["images"] * entry["factor"]
    pca = res["pca"]
    assert list(pca["layers"]) == res["workload"]["layers"]
    # The three ways compute every reference's grey activation, and the same numbers.
    assert pca["references"] == sum(q["references"] for q in pca["layers"].values()) > 0
    for q in pca["layers"].values():
        assert q["missing_plain"] == q["missing_plain_at_layer"] == 0
        assert q["references"] == q["units"] * res["workload"]["top_n"]
    assert pca["max_abs_difference"] < 1e-4
    for way in ("shortcut", "plain_at_layer", "plain"):
        assert _finite(pca["ways"][way]["seconds"]) and _finite(pca["ways"][way]["ratio"])
    assert _finite(pca["whole_index_speedup"])
    lum = res["rows"]["full_luminance"]
    assert 1 <= lum["n_referenced_images"] <= lum["n_images"] == res["workload"]["images"]
    names = [a["name"] for a in res["acceptance"]]
    assert len(names) == 7
    for entry in res["acceptance"]:
        assert entry["result"] in ("PASS", "FAIL", "n/a")
        assert entry["result"] == "n/a" or _finite(entry["value"])
    assert res["cross_check"]["status"] == "skipped"
    for key in ("cpu", "cores", "torch", "date"):
        assert res["machine"][key]
    for header in ("x forward", "Scaling", "Acceptance"):
        assert header in stdout


def test_markdown_results_section_replaces_only_the_marked_region(quick_results, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run_all", RUN_ALL)
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    res, _ = quick_results
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"intro\n{run_all.DOC_START}\nold table\n{run_all.DOC_END}\noutro\n")
    run_all.update_doc(doc, res)
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{run_all.DOC_END}\noutro\n")
    assert "old table" not in text
    region = text.split(run_all.DOC_START)[1].split(run_all.DOC_END)[0]
    for _, label in run_all.ROWS:
        assert f"| {label} |" in region
    doc.write_text("no markers here\n")
    with pytest.raises(RuntimeError, match="marker"):
        run_all.update_doc(doc, res)
