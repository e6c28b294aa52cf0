"""Bad input to the engine and its files: one clear error, before long work, and nothing written.

Each case: the bad input, the expected error type and a phrase of its message. The run is given a
checkpoint path in a folder of its own, and afterwards that folder is as it was (nothing written,
no temporary file left)."""
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nsi_widgets as nsi
from nsi_widgets.core.errors import (DataReadError, IndexFileError, InputError, InputTypeError, NsiError,
                                     OutputError)
from _models import ListDataset, make_cnn, make_images

LAYERS = ["relu1", "relu3"]
CLASSES = ["a", "b", "c", "d"]


class _Raw(torch.utils.data.Dataset):
    """Items ``(image, label)`` exactly as given (no conversion of the label)."""

    def __init__(self, images, labels):
        self.images, self.labels, self.classes = images, labels, CLASSES

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def _data(images=None, labels=None, n=12):
    images = images if images is not None else make_images(n, seed=1)
    labels = labels if labels is not None else [i % 4 for i in range(len(images))]
    return _Raw(images, labels)


def _replace(i, value, n=12):
    images = make_images(n, seed=1)
    images[i] = value
    return images


class _Raising(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i == 7:
            raise OSError("cannot identify image file 'broken.jpg'")
        return torch.rand(3, 20, 24), 0


def _preprocess_raises(x):
    raise RuntimeError("normalisation tables missing")


CASES = {
    # silent wrong results before
    "0..255 floats": (dict(data=_data(_replace(3, torch.rand(3, 20, 24) * 255))), InputError, "divide by 255"),
    "negative floats": (dict(data=_data(_replace(5, torch.rand(3, 20, 24) - 0.5))), InputError, r"in \[0, 1\]"),
    "NaN pixels": (dict(data=_data(_replace(4, torch.full((3, 20, 24), float("nan"))))), InputError,
                   "skip_nonfinite"),
    "an infinite pixel": (dict(data=_data(_replace(9, torch.zeros(3, 20, 24).index_fill_(1, torch.tensor([2]),
                                                                                           float("inf"))))),
                          InputError, "NaN or infinite"),
    "one larger image in a later batch": (dict(data=_data(_replace(10, torch.rand(3, 30, 24))), batch_size=4),
                                          InputError, "item 10: images differ in size"),
    "a grey 2-D image": (dict(data=_data(_replace(2, torch.rand(20, 24)))), InputError, "2-D"),
    "a four-channel image": (dict(data=_data(_replace(2, torch.rand(4, 20, 24)))), InputError, "3 colour channels"),
    "an int32 image": (dict(data=_data(_replace(1, torch.zeros(3, 20, 24, dtype=torch.int32)))), InputTypeError,
                       "uint8"),
    "a string as image": (dict(data=_data(_replace(1, "cat.jpg"))), InputTypeError, "expected an image"),
    "a float label": (dict(data=_data(labels=[0.0, 1.5] + [0] * 10)), InputError, "float"),
    "a string label": (dict(data=_data(labels=["cat"] + [0] * 11)), InputError, "string 'cat'"),
    "one-hot labels": (dict(data=_data(labels=[torch.eye(4)[i % 4] for i in range(12)])), InputError, "one-hot"),
    "a label beyond the class names": (dict(data=_data(labels=[0] * 11 + [7])), InputError, "only 4 class names"),
    "a negative label": (dict(data=_data(labels=[-3] + [0] * 11)), InputError, "negative"),
    "a bool label": (dict(data=_data(labels=[True] + [0] * 11)), InputError, "bool"),
    "a dataset that raises": (dict(data=_Raising()), DataReadError, "item 7 could not be read.*broken.jpg"),
    # preprocess and model
    "preprocess changes the size": (dict(preprocess=lambda x: x[..., ::2, ::2]), InputError,
                                    "changes the image size"),
    "preprocess raises": (dict(preprocess=_preprocess_raises), InputError, "preprocess failed.*tables missing"),
    "preprocess returns a list": (dict(preprocess=lambda x: [x]), InputError, "preprocess must map"),
    "preprocess is not callable": (dict(preprocess=3), InputTypeError, "callable"),
    "the model rejects the images": (dict(model=torch.nn.Sequential(torch.nn.Conv2d(4, 2, 3), torch.nn.ReLU()),
                                          layers=["1"]), InputError, "cannot run on the dataset's first image"),
    "the model is a function": (dict(model=lambda x: x), InputTypeError, "torch.nn.Module"),
    # arguments
    "cuda on a CPU build": (dict(device="cuda"), InputError, "CUDA"),
    "an unknown device": (dict(device="banana"), InputError, "not a device"),
    "top_n 0": (dict(top_n=0), InputError, "top_n"),
    "top_n as a string": (dict(top_n="5"), InputError, "top_n"),
    "top_n True": (dict(top_n=True), InputError, "top_n"),
    "negative batch size": (dict(batch_size=-1), InputError, "batch_size"),
    "nu above 1": (dict(nu=1.5), InputError, "nu"),
    "an unknown grey": (dict(gray="average"), InputError, "gray"),
    "an unknown index": (dict(indexes=("texture",)), InputError, "unknown index 'texture'"),
    "an unknown neuron-feature mode": (dict(neuron_features="median"), InputError, "neuron_features"),
    "an unknown shortcut": (dict(shortcut="always"), InputError, "shortcut"),
    "an unknown layer": (dict(layers=["conv9"]), InputError, "unknown layer .conv9."),
    "no layers": (dict(layers=[]), InputError, "layers is empty"),
    "an empty dataset": (dict(data=ListDataset([], [])), InputError, "empty"),
    "not a dataset": (dict(data=42), InputTypeError, "__len__"),
    "class names that are not a list": (dict(class_names="abcd"), InputError, "class_names"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_error_and_nothing_is_written(tmp_path, case):
    changes, error, phrase = CASES[case]
    args = dict(model=make_cnn(0), data=_data(), layers=LAYERS, top_n=4, progress=False,
                checkpoint=tmp_path / "run.ckpt", checkpoint_every=1000)
    args.update(changes)
    with pytest.raises(error, match=phrase) as info:
        nsi.index_neurons(args.pop("model"), args.pop("data"), args.pop("layers"), **args)
    assert isinstance(info.value, NsiError)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_when_every_image_is_skipped_the_error_says_so(tmp_path):
    """Found only after the scan (which left a complete checkpoint, and no temporary file)."""
    data = _data([torch.full((3, 20, 24), float("nan"))] * 6)
    with pytest.raises(InputError, match="no image gave a finite activation"):
        nsi.index_neurons(make_cnn(0), data, LAYERS, progress=False, skip_nonfinite=True,
                          checkpoint=tmp_path / "run.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]


def test_skipped_images_are_counted_and_enter_no_top_list():
    images = make_images(12, seed=1)
    images[3] = torch.full((3, 20, 24), float("nan"))
    idx = nsi.index_neurons(make_cnn(0), _data(images), LAYERS, top_n=4, progress=False, skip_nonfinite=True)
    assert idx.meta["skipped_images"] == 1
    for layer in LAYERS:
        assert not (idx[layer].top_indices == 3).any()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_index():
    return nsi.index_neurons(make_cnn(0), _data(), LAYERS, top_n=3, progress=False, indexes=())


def test_a_read_only_index_file_is_refused_not_replaced(tmp_path, small_index):
    path = small_index.save(tmp_path / "kept.npz")
    before = _digest(path)
    path.chmod(0o444)
    with pytest.raises(OutputError, match="read-only"):
        small_index.save(path)
    assert _digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["kept.npz"]


def test_a_read_only_folder_is_refused(tmp_path, small_index):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="not writable"):
            small_index.save(folder / "x.npz")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_a_directory_in_the_way_is_refused(tmp_path, small_index):
    (tmp_path / "x.npz").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        small_index.save(tmp_path / "x.npz")


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_a_damaged_index_file_is_an_index_file_error(tmp_path, small_index, damage):
    path = small_index.save(tmp_path / "i.npz")
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFileError, match="i.npz"):
        nsi.load_index(path)


def test_labels_listed_by_the_dataset_are_checked_before_the_scan(tmp_path):
    reads = []

    class Listed(ListDataset):
        def __getitem__(self, i):
            reads.append(i)
            return super().__getitem__(i)

    data = Listed(make_images(12, seed=1), np.array([0] * 11 + [9]), classes=CLASSES)
    data.targets = data.labels
    with pytest.raises(InputError, match="item 11: label 9"):
        nsi.index_neurons(make_cnn(0), data, LAYERS, progress=False)
    assert reads == []                                   # refused before any image was read


# ---------------------------------------------------------------------------------------------
# Faults in subprocesses: kill -9 during a save, a full disk, a folder the user cannot write
# ---------------------------------------------------------------------------------------------
_SAVE_CHILD = r"""
import os, resource, sys, time
import numpy as np
from nsi_widgets.core import storage
mode, target = sys.argv[1], sys.argv[2]
arrays = {"big": np.arange(2_000_000, dtype=np.float64)}
if mode == "slow":
    def write(f):
        f.write(b"x" * 1000)
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
    storage.atomic_write(target, write)
elif mode == "full":
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    try:
        storage.write_archive(target, {"format": "t", "version": 1}, arrays)
    except storage.OutputError as err:
        print("OutputError:", err)
        sys.exit(3)
elif mode == "save":
    storage.write_archive(target, {"format": "t", "version": 1}, {"a": np.zeros(3)})
"""


def _child(tmp_path, *args, user=None):
    script = tmp_path / "child.py"
    script.write_text(_SAVE_CHILD)
    command = [sys.executable, str(script), *map(str, args)]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return command


def _old_file(tmp_path) -> tuple[Path, str]:
    from nsi_widgets.core import storage
    path = tmp_path / "data.npz"
    storage.write_archive(path, {"format": "t", "version": 1}, {"a": np.ones(5)})
    return path, _digest(path)


@pytest.mark.slow
def test_kill_9_during_a_save_keeps_the_old_file_and_the_next_save_cleans_up(tmp_path):
    path, before = _old_file(tmp_path)
    process = subprocess.Popen(_child(tmp_path, "slow", path), stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    temps = [p for p in tmp_path.iterdir() if p.name.endswith(".nsi-tmp")]
    assert len(temps) == 1 and str(process.pid) in temps[0].name
    process.kill()
    process.wait()
    assert _digest(path) == before                       # the old file is intact
    done = subprocess.run(_child(tmp_path, "save", path), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".nsi-tmp")]  # the orphan is gone


@pytest.mark.slow
def test_a_full_disk_keeps_the_old_file_and_says_so(tmp_path):
    path, before = _old_file(tmp_path)
    done = subprocess.run(_child(tmp_path, "full", path), capture_output=True, text=True)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "cannot write" in done.stdout and "unchanged" in done.stdout
    assert _digest(path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".nsi-tmp")]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(),
                    reason="switching to the 'nobody' user needs root and setpriv")
def test_a_folder_the_user_cannot_write_is_refused_as_that_user(tmp_path):
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="nsi-owned-by-root-"))
    try:
        folder.chmod(0o755)                                # writable by root only
        (tmp_path / "child.py").write_text(_SAVE_CHILD)
        script = folder / "child.py"
        script.write_text(_SAVE_CHILD)
        script.chmod(0o644)
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                               str(script), "save", str(folder / "x.npz")], capture_output=True, text=True,
                              cwd="/tmp")
        assert done.returncode != 0 and "not writable" in done.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["child.py"]
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_permissions_of_saved_files_are_the_usual_ones(tmp_path, small_index):
    path = small_index.save(tmp_path / "i.npz")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
