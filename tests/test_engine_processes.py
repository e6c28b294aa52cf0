"""The engine across processes: kill -9 and resume, two gloo ranks, a rank that dies, torchrun + the CLI."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nsi_widgets as nsi
from nsi_widgets.core.errors import IndexFileError
from nsi_widgets.core.storage import read_archive
from _engine_child import KWARGS, LAYERS, dataset
from _models import make_cnn
from test_engine import _assert_same_index

CHILD = Path(__file__).with_name("_engine_child.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent))


def _sections(checkpoint: Path) -> dict:
    try:
        with read_archive(checkpoint, "nsi-widgets-checkpoint", 2) as archive:
            return archive.manifest["sections"]
    except (FileNotFoundError, IndexFileError):
        return {}


def _kill_when(checkpoint: Path, process: subprocess.Popen, ready, timeout: float = 120.0) -> dict:
    """SIGKILL ``process`` as soon as the checkpoint's sections satisfy ``ready``; return them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        sections = _sections(checkpoint)
        if ready(sections):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return sections
        if process.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed: {process.stderr.read()}")
        time.sleep(0.01)
    process.kill()
    raise AssertionError("the checkpoint never reached the wanted state")


@pytest.fixture(scope="module")
def uninterrupted():
    return nsi.index_neurons(make_cnn(0), dataset(), LAYERS, batch_size=4, **KWARGS)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["scan", "crops & indexes"])
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted, where):
    checkpoint, out = tmp_path / "run.ckpt", tmp_path / "out.npz"
    process = subprocess.Popen([sys.executable, str(CHILD), "index", str(out), str(checkpoint), "0"], env=ENV,
                               stderr=subprocess.PIPE, text=True)

    def ready(sections):
        section = sections.get(where)
        return section is not None and not section["finished"] and section["batches_done"] >= 3

    sections = _kill_when(checkpoint, process, ready)
    assert process.returncode == -signal.SIGKILL and not out.exists()
    if where == "crops & indexes":
        assert sections["scan"]["finished"]
    resumed = subprocess.run([sys.executable, str(CHILD), "index", str(out), str(checkpoint)], env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".nsi-tmp")]
    _assert_same_index(uninterrupted, nsi.load_index(out))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(tmp_path, batch, n, *extra, world=2):
    port = str(_free_port())
    out = tmp_path / f"dist-{batch}"
    processes = [subprocess.Popen([sys.executable, str(CHILD), "dist", str(r), str(world), port, str(out),
                                   str(batch), str(n), *map(str, extra)], env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in range(world)]
    return out, processes


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 7])
def test_two_gloo_ranks_equal_one_process_exactly(tmp_path, batch):
    n = 37                                   # not divisible by 2 (nor by 7)
    single = nsi.index_neurons(make_cnn(0), dataset(n), LAYERS, batch_size=batch, **KWARGS)
    out, processes = _ranks(tmp_path, batch, n)
    for p in processes:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for rank in range(2):
        _assert_same_index(single, nsi.load_index(f"{out}.rank{rank}.npz"))


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_run_with_a_clear_error_within_the_timeout(tmp_path):
    out, processes = _ranks(tmp_path, 4, 120, 40)       # rank 1 dies when it reads item 40
    started = time.time()
    _, err0 = processes[0].communicate(timeout=120)
    elapsed = time.time() - started
    processes[1].communicate(timeout=60)
    assert processes[1].returncode == 17
    assert processes[0].returncode != 0
    assert "another process of the distributed run failed or did not answer" in err0, err0
    assert elapsed < 20 + 30                                # the group's timeout (20 s) plus start-up


@pytest.mark.slow
def test_torchrun_cli_writes_one_file_equal_to_the_single_process_file(tmp_path):
    args = ["index", "shapes", "shapes", "--layers", "conv1", "conv3", "--top-n", "8", "--no-progress",
            "--batch-size", "32"]
    single = subprocess.run([sys.executable, "-m", "nsi_widgets", *args, "-o", str(tmp_path / "one.npz")],
                            capture_output=True, text=True, timeout=600, env=ENV)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_free_port()), "-m", "nsi_widgets"]
    two = subprocess.run([*torchrun, *args, "-o", str(tmp_path / "two.npz")], capture_output=True, text=True,
                         timeout=600, env=ENV)
    assert two.returncode == 0, two.stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["one.npz", "two.npz"]                # one file, written by rank 0 only
    a, b = nsi.load_index(tmp_path / "one.npz"), nsi.load_index(tmp_path / "two.npz")
    _assert_same_index(a, b)
    assert a.meta["world_size"] == 1 and b.meta["world_size"] == 2
    assert two.stdout.count("wrote") == 1
