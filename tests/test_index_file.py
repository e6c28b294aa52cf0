"""The index file: attachments round-trip; damaged files give one error type naming the file."""
import json
import zipfile

import numpy as np
import pytest

import nsi_widgets as nsi
from nsi_widgets.core.errors import IndexFileError, InputError
from nsi_widgets.index.results import Attachment
from _fake_index import make_fake_index


def _attachment(idx):
    c1 = idx["conv1"].n_units
    return Attachment("dissection", {"concepts": ["red", "disc"]},
                      {"conv1": {"best_iou": np.linspace(0, 1, c1, dtype=np.float32),
                                 "iou": np.arange(c1 * 2, dtype=np.float32).reshape(c1, 2)}},
                      {"conv1": ["best_iou"]})


def test_attachments_round_trip_and_become_columns(tmp_path):
    idx = make_fake_index()
    idx.attach("dissection", _attachment(idx))
    path = idx.save(tmp_path / "with-attachment")
    assert path.name == "with-attachment.npz"
    loaded = nsi.load_index(path)
    a = loaded.attachments["dissection"]
    assert a.kind == "dissection" and a.meta == {"concepts": ["red", "disc"]} and a.columns == {"conv1": ["best_iou"]}
    for name, value in _attachment(idx).arrays["conv1"].items():
        np.testing.assert_array_equal(a.arrays["conv1"][name], value)
    df = loaded.to_pandas()
    conv1 = df[df.layer == "conv1"]
    np.testing.assert_array_equal(conv1["dissection.best_iou"].to_numpy(), a.arrays["conv1"]["best_iou"])
    assert df[df.layer == "conv2"]["dissection.best_iou"].isna().all()


def test_attach_refuses_unknown_layers_and_wrong_column_lengths():
    idx = make_fake_index()
    with pytest.raises(InputError, match="layer 'conv9'"):
        idx.attach("x", Attachment("k", {}, {"conv9": {"a": np.zeros(3)}}))
    with pytest.raises(InputError, match="one value per unit"):
        idx.attach("x", Attachment("k", {}, {"conv1": {"a": np.zeros(3)}}, {"conv1": ["a"]}))
    idx.attach("x", _attachment(idx))
    with pytest.raises(InputError, match="exists"):
        idx.attach("x", _attachment(idx), replace=False)


def _rewrite(path, out, *, manifest=None, drop=None, replace=None):
    """Copy an index archive member by member, changing what the case asks for."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            name = info.filename
            if drop and name == drop:
                continue
            data = src.read(name)
            if name == "manifest.npy" and manifest is not None:
                import io
                buf = io.BytesIO()
                np.save(buf, np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8))
                data = buf.getvalue()
            if replace and name in replace:
                import io
                buf = io.BytesIO()
                np.save(buf, replace[name])
                data = buf.getvalue()
            dst.writestr(name, data)


def _manifest(path):
    with zipfile.ZipFile(path) as z:
        import io
        return json.loads(np.load(io.BytesIO(z.read("manifest.npy"))).tobytes())


@pytest.fixture
def saved(tmp_path):
    return make_fake_index().save(tmp_path / "good.npz")


@pytest.mark.parametrize("case, phrase", [
    ("missing array", "array 'L0/top_activations' is missing"),
    ("wrong shape", "has shape"),
    ("wrong dtype", "dtype"),
    ("layers not a list", "'layers' is not a list"),
    ("layer without name", "has no name"),
    ("bad receptive field", "malformed"),
    ("score of wrong length", "score0"),
    ("duplicate layer", "appears twice"),
    ("object array", "object arrays are refused"),
])
def test_damaged_index_files_raise_index_file_error(tmp_path, saved, case, phrase):
    manifest = _manifest(saved)
    out = tmp_path / "bad.npz"
    if case == "missing array":
        _rewrite(saved, out, drop="L0/top_activations.npy")
    elif case == "wrong shape":
        _rewrite(saved, out, replace={"L0/top_positions.npy": np.zeros((3, 2), np.int64)})
    elif case == "wrong dtype":
        _rewrite(saved, out, replace={"L0/top_indices.npy": np.zeros((12, 20), np.float32)})
    elif case == "layers not a list":
        _rewrite(saved, out, manifest=dict(manifest, layers={"a": 1}))
    elif case == "layer without name":
        _rewrite(saved, out, manifest=dict(manifest, layers=[{}]))
    elif case == "bad receptive field":
        layers = [dict(manifest["layers"][0], receptive_field={"size": "x"})] + manifest["layers"][1:]
        _rewrite(saved, out, manifest=dict(manifest, layers=layers))
    elif case == "score of wrong length":
        _rewrite(saved, out, replace={"L0/score0.npy": np.zeros(5, np.float32)})
    elif case == "duplicate layer":
        renamed = dict(manifest["layers"][1], name=manifest["layers"][0]["name"])
        _rewrite(saved, out, manifest=dict(manifest, layers=[manifest["layers"][0], renamed]))
    elif case == "object array":
        with zipfile.ZipFile(saved) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                data = src.read(info.filename)
                if info.filename == "L0/top_indices.npy":
                    data = data.replace(b"'descr': '<i8'", b"'descr': '|O' ")
                dst.writestr(info.filename, data)
    before = out.read_bytes()
    with pytest.raises(IndexFileError, match=phrase) as err:
        nsi.load_index(out)
    assert "bad.npz" in str(err.value)
    assert out.read_bytes() == before


def test_crafted_header_cannot_make_it_allocate(tmp_path, saved):
    """A header claiming a huge shape is refused from the stored size, not by a MemoryError."""
    out = tmp_path / "bomb.npz"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "L0/top_activations.npy":
                data = data.replace(b"'shape': (12, 20)", b"'shape': (999999999999,)".ljust(len(b"'shape': (12, 20)")))
            dst.writestr(info.filename, data)
    with pytest.raises(IndexFileError, match="header claims"):
        nsi.load_index(out)


@pytest.mark.parametrize("content, phrase", [
    (b"hello", "not an .npz archive"),
    (b"PK\x03\x04garbage", "not an .npz archive"),
    (b"\x93NUMPY\x01\x00" + b"x" * 40, "not an .npz archive"),
])
def test_random_files_are_not_indexes_and_no_pickle_advice(tmp_path, content, phrase):
    path = tmp_path / "random.npz"
    path.write_bytes(content)
    with pytest.raises(IndexFileError, match=phrase) as err:
        nsi.load_index(path)
    assert "pickle" not in str(err.value)


def test_deeply_nested_manifest_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.npz"
    text = b'{"format": "nsi-widgets-index", "version": 1, "x": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    np.savez(path, manifest=np.frombuffer(text, dtype=np.uint8))
    with pytest.raises(IndexFileError, match="manifest is damaged"):
        nsi.load_index(path)


def test_directory_is_not_an_index(tmp_path):
    with pytest.raises(IndexFileError, match="directory"):
        nsi.load_index(tmp_path)
