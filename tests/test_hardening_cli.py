"""The real ``nsi-widgets`` executable on user mistakes: exit 2, one ``error:`` line, no traceback,
and every file in the working folder unchanged."""
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import subprocess

EXE = Path(sys.executable).with_name("nsi-widgets")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with an index, a store-like file, factories and image folders, made once."""
    import nsi_widgets as nsi
    from _models import ListDataset, make_cnn, make_images

    root = tmp_path_factory.mktemp("cli")
    idx = nsi.index_neurons(make_cnn(0), ListDataset(make_images(8), [0] * 8), ["relu1"], top_n=2, progress=False,
                            indexes=())
    idx.save(root / "good.npz")
    (root / "existing.npz").write_bytes((root / "good.npz").read_bytes())
    (root / "random.npz").write_bytes(b"\x00" * 100)
    (root / "truncated.npz").write_bytes((root / "good.npz").read_bytes()[:300])
    (root / "notes.sqlite").write_text("not a database")
    (root / "ro").mkdir()
    (root / "ro").chmod(0o555)
    (root / "adir").mkdir()
    (root / "dir.npz").mkdir()
    (root / "raises.py").write_text("def build():\n    raise RuntimeError('weights missing')\n")
    (root / "syntax.py").write_text("def build(:\n    pass\n")
    (root / "number.py").write_text("def build():\n    return 42\n")
    from PIL import Image
    for cls in ("cats", "dogs"):
        (root / "images" / cls).mkdir(parents=True)
        Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(root / "images" / cls / "ok.png")
    (root / "images" / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "plain.txt").write_text("hello")
    (root / "junk.ckpt").write_text("junk")
    (root / "readonly.html").write_text("<html></html>")
    (root / "readonly.html").chmod(0o444)
    yield root
    (root / "ro").chmod(0o755)


CASES = {
    "existing output without --force": (["index", "shapes", "shapes", "-o", "existing"], "exists"),
    "output in a missing folder": (["index", "shapes", "shapes", "-o", "nowhere/x.npz"], "does not exist"),
    "output in a read-only folder": (["index", "shapes", "shapes", "-o", "ro/x.npz"], "not writable"),
    "output is a directory": (["index", "shapes", "shapes", "-o", "dir.npz"], "is a directory"),
    "cuda on a CPU build": (["index", "shapes", "shapes", "-o", "x.npz", "--device", "cuda"], "CUDA"),
    "an unknown device": (["index", "shapes", "shapes", "-o", "x.npz", "--device", "banana"], "not a device"),
    "top-n 0": (["index", "shapes", "shapes", "-o", "x.npz", "--top-n", "0"], ">= 1"),
    "image size not a number": (["index", "shapes", "images", "-o", "x.npz", "--image-size", "big"], "whole number"),
    "an unknown layer": (["index", "shapes", "shapes", "-o", "x.npz", "--layers", "conv9"], "unknown layer"),
    "an unknown model": (["index", "vgg99", "shapes", "-o", "x.npz"], "unknown model 'vgg99'"),
    "a factory that raises": (["index", "raises.py:build", "shapes", "-o", "x.npz"], "weights missing"),
    "a factory with a syntax error": (["index", "syntax.py:build", "shapes", "-o", "x.npz"], "syntax"),
    "a factory returning a number": (["index", "number.py:build", "shapes", "-o", "x.npz"], "not a torch.nn.Module"),
    "missing data": (["index", "shapes", "nowhere", "-o", "x.npz"], "neither a zoo name"),
    "data is a file": (["index", "shapes", "plain.txt", "-o", "x.npz"], "is a file"),
    "a corrupt image in the folder": (["index", "shapes", "images", "-o", "x.npz", "--image-size", "64",
                                       "--no-progress"], "broken.jpg"),
    "a checkpoint that is junk": (["index", "shapes", "shapes", "-o", "x.npz", "--checkpoint", "junk.ckpt",
                                   "--no-progress"], "cannot resume"),
    "a checkpoint that is a directory": (["index", "shapes", "shapes", "-o", "x.npz", "--checkpoint", "adir"],
                                         "is a directory"),
    "info on a missing file": (["info", "missing.npz"], "no index file"),
    "info on a directory": (["info", "adir"], "directory"),
    "info on a random file": (["info", "random.npz"], "not an nsi-widgets index"),
    "info on a truncated index": (["info", "truncated.npz"], "truncated.npz"),
    "report into a directory": (["report", "good.npz", "-o", "adir"], "is a directory"),
    "report over a read-only page": (["report", "good.npz", "-o", "readonly.html"], "read-only"),
    "report with a file that is not a store": (["report", "good.npz", "-o", "r.html", "--annotations",
                                                "notes.sqlite"], "notes.sqlite"),
    "report with a missing store": (["report", "good.npz", "-o", "r.html", "--annotations", "none.sqlite"],
                                    "no annotation store"),
    "demo into a file": (["demo", "--out", "plain.txt"], "is a file"),
    "lab into a file": (["lab", "--dir", "plain.txt"], "is a file"),
    "a negative timeout": (["index", "shapes", "shapes", "-o", "x.npz", "--dist-timeout", "-1"], "positive"),
}


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_exit_2_with_one_error_line_and_change_nothing(workdir, case):
    args, phrase = CASES[case]
    before = _snapshot(workdir)
    done = subprocess.run([str(EXE), *args], capture_output=True, text=True, cwd=workdir, timeout=300)
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    assert phrase.lower() in lines[0].lower(), lines[0]
    assert _snapshot(workdir) == before


def test_debug_shows_the_traceback(workdir):
    done = subprocess.run([str(EXE), "--debug", "info", "random.npz"], capture_output=True, text=True, cwd=workdir,
                          timeout=120)
    assert done.returncode != 0 and "Traceback" in done.stderr and "IndexFileError" in done.stderr
