"""Tier 2: every notebook in ``notebooks/`` executes headless, and matches its generator.

Each notebook runs in a fresh ``python3`` kernel (the venv's own: ``python`` in a kernelspec's argv
is replaced by the Python running the tests; :func:`test_kernel_is_this_python` checks it) with a
temporary copy of the notebook as the working directory, so the files notebooks write never land
in the repository. The repository root is put first on the kernel's ``PYTHONPATH``: the notebooks
test this working tree even when nsi-widgets is not installed.

Run: ``python -m pytest tests/test_notebooks.py -q`` (about two minutes on two cores).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need nbformat (pip install -e '.[test]')")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need nbclient (pip install -e '.[test]')")
from nbclient.exceptions import CellExecutionError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"quickstart", "colour_selectivity", "class_selectivity", "annotating_neurons", "own_model_and_images",
            "projections", "feature_visualisation", "generator_priors", "reproduce_the_paper",
            "network_dissection", "concept_vectors", "comparing_layers"}
KERNEL = "python3"
CELL_TIMEOUT = 600  # seconds per cell: generous for a loaded machine; the notebooks take ~10-40 s each
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colour codes of IPython tracebacks


def _generator():
    """``scripts/make_notebooks.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kernel_env() -> dict[str, str]:
    """The test's environment, with the repository first on PYTHONPATH and one thread per library
    (the test machines have two cores shared with other jobs)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


def _execute(notebook, workdir: Path) -> None:
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute(env=_kernel_env())


def _failing_cell(notebook) -> str:
    """Number and source of the first cell with an error output, for the failure message."""
    for number, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"cell {number} (id {cell.get('id')}):\n{cell.source}"
    return "(no cell has an error output)"


def test_the_notebooks_exist():
    assert {path.stem for path in NOTEBOOKS} == EXPECTED


def test_notebooks_match_their_generator_and_have_no_outputs():
    generator = _generator()
    assert set(generator.NOTEBOOKS) == EXPECTED
    for path in NOTEBOOKS:
        text = path.read_text(encoding="utf-8")
        assert text == generator.render(path.stem), (
            f"{path.name} differs from scripts/make_notebooks.py: edit the cell list there and run "
            f"`python scripts/make_notebooks.py`")
        document = json.loads(text)
        assert document["metadata"]["kernelspec"]["name"] == KERNEL
        for cell in document["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: committed outputs"


@pytest.mark.notebook
def test_kernel_is_this_python(tmp_path):
    """The ``python3`` kernel runs the Python of the tests (else: the venv lacks a kernelspec)."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    _execute(notebook, tmp_path)
    printed = "".join(o.get("text", "") for o in notebook.cells[0].outputs).strip()
    assert Path(printed).resolve() == Path(sys.prefix).resolve(), (
        f"kernel {KERNEL!r} runs the Python of {printed}, not of {sys.prefix}; install a kernelspec into "
        f"this environment: `{sys.executable} -m ipykernel install --sys-prefix`")


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_executes(path, tmp_path):
    workdir = tmp_path / "notebooks"
    workdir.mkdir()
    copy = workdir / path.name
    shutil.copy(path, copy)
    notebook = nbformat.read(copy, as_version=4)
    try:
        _execute(notebook, workdir)
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed in {_failing_cell(notebook)}\n\n{_ANSI.sub('', str(error))}",
                    pytrace=False)
