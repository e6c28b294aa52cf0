"""Hardening of users' own material (issue 14): image folders and model factories.

Each case of the tables builds files in a fresh folder and does one bad thing; the test checks the
error's type (always an :class:`nsi_widgets.NsiError`), phrases of its one-line message (the bad
file's name among them), and that every file in the folder is unchanged byte for byte with none
added (reading images writes nothing; importing a model file leaves no ``__pycache__``).
"""
from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from nsi_widgets import zoo
from nsi_widgets.core.errors import InputError, InputTypeError
from nsi_widgets.zoo import BadImageError, FactoryError, FactoryTypeError, ImageFolderError

from _hardening import raises_clearly, run_unprivileged, shared_folder, snapshot

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)


# Image files -------------------------------------------------------------------------------------
def encoded(fmt: str, array: np.ndarray = PIXELS, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header claiming 2.5 gigapixels (the file itself is tiny)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + png_chunk(b"IEND", b""))


def broken_scan_jpeg() -> bytes:
    data = bytearray(encoded("JPEG", quality=90))
    start = data.find(b"\xff\xda") + 40  # inside the entropy-coded scan, after its header
    for k in range(start, len(data) - 10, 7):
        data[k] = 0xFF
    return bytes(data)


JPEG = encoded("JPEG", quality=90)
PNG = encoded("PNG")
BAD_FILES = {
    "JPEG cut after 300 bytes, then garbage": ("corrupt.jpg", JPEG[:300] + bytes(range(256)) * 8,
                                               "damaged or truncated image"),
    "JPEG with a broken scan": ("scan.jpg", broken_scan_jpeg(), "broken data stream"),
    "truncated JPEG": ("half.jpg", JPEG[: len(JPEG) // 2], "truncated"),
    "truncated PNG": ("half.png", PNG[: len(PNG) - 200], "truncated"),
    "text named .png": ("notes.png", b"not an image at all\n", "not an image Pillow can read"),
    "empty file": ("empty.jpg", b"", "the file is empty"),
    "decompression bomb": ("bomb.png", bomb_png(), "2,500,000,000 pixels, more than twice "
                                                   f"PIL.Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS:,})"),
}


def folder_with(bad_name: str, bad_bytes: bytes) -> Callable[[Path], Callable]:
    """A case builder: a class folder with one good image and the bad file; the action reads the bad one."""
    def build(folder: Path) -> Callable:
        (folder / "cats").mkdir()
        (folder / "cats" / "a_good.png").write_bytes(PNG)
        (folder / "cats" / bad_name).write_bytes(bad_bytes)
        data = zoo.ImageFolderDataset(folder)
        index = [Path(p).name for p, _ in data.samples].index(bad_name)
        return lambda: data[index]
    return build


def constructing(make: Callable[[Path], Path], **kwargs) -> Callable[[Path], Callable]:
    def build(folder: Path) -> Callable:
        root = make(folder)
        return lambda: zoo.ImageFolderDataset(root, **kwargs)
    return build


def only_bad_images(folder: Path) -> Path:
    (folder / "dogs").mkdir()
    (folder / "dogs" / "x.png").write_bytes(b"nope")
    (folder / "dogs" / "y.jpg").write_bytes(JPEG[:100])
    return folder


def loose_images(folder: Path) -> Path:
    (folder / "loose.png").write_bytes(PNG)
    return folder


def a_file(folder: Path) -> Path:
    (folder / "images.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return folder / "images.zip"


def removed_after_listing(folder: Path) -> Callable:
    (folder / "cats").mkdir()
    (folder / "cats" / "gone.png").write_bytes(PNG)
    data = zoo.ImageFolderDataset(folder)
    (folder / "cats" / "gone.png").unlink()
    return lambda: data[0]


# Model factories ---------------------------------------------------------------------------------
FACTORIES = '''import torch


def build(width=4):
    return torch.nn.Conv2d(3, width, 3)


def boom():
    raise RuntimeError("weights file\\nmissing")


def wrong_shape():
    return torch.nn.Conv2d(3, -1, 3)


def not_a_model():
    return "a string"


LAYERS = ["conv1"]
'''

MODEL_FILES = {
    "syntax_error.py": "import torch\ndef build(:\n    return torch.nn.ReLU()\n",
    "imports_missing.py": "import torch\nimport no_such_package_xyz\n\ndef build():\n    return torch.nn.ReLU()\n",
    "bad_name.py": "from os import no_such_name\n\ndef build():\n    pass\n",
    "divides.py": "RATIO = 1 / 0\n",
    "script.py": "import argparse\nargparse.ArgumentParser().parse_args(['--unknown-option'])\n",
    "weights.txt": "not python\n",
}


def factory(spec: str, *args) -> Callable[[Path], Callable]:
    """A case builder: model files in the folder; the action loads ``spec`` (``{dir}`` = the folder)."""
    def build(folder: Path) -> Callable:
        (folder / "factories.py").write_text(FACTORIES)
        for name, source in MODEL_FILES.items():
            (folder / name).write_text(source)
        return lambda: zoo.load_factory(spec.format(dir=folder), *args)
    return build


# The table ---------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    build: Callable[[Path], Callable]
    error: type
    phrases: tuple[str, ...]  # "{dir}" stands for the case's folder
    also: tuple[type, ...] = ()  # built-in types the error also is, for code that catches those


CASES = [
    *(Case(f"image: {what}", folder_with(name, content), BadImageError,
           (f"{{dir}}/cats/{name}", "dataset item 1", reason, "skip_bad_images=True"), (OSError,))
      for what, (name, content, reason) in BAD_FILES.items()),
    Case("image removed after listing", removed_after_listing, BadImageError,
         ("gone.png", "dataset item 0", "no longer exists")),
    Case("missing folder", constructing(lambda folder: folder / "nowhere"), ImageFolderError,
         ("nowhere", "does not exist"), (FileNotFoundError,)),
    Case("a file instead of a folder", constructing(a_file), ImageFolderError,
         ("images.zip", "not a folder"), (FileNotFoundError,)),
    Case("images not in class subfolders", constructing(loose_images), ImageFolderError,
         ("no images found", "1 image(s) lie directly in the folder", ".png")),
    Case("bad size", constructing(loose_images, size=(0, 5)), InputError, ("size must be",)),
    Case("size of the wrong type", constructing(loose_images, size="big"), InputError, ("size must be", "'big'")),
    Case("skip_bad_images leaves nothing", constructing(only_bad_images, skip_bad_images=True),
         ImageFolderError, ("no readable image", "all 2 files", "dogs/x.png")),
    Case("factory raises", factory("{dir}/factories.py:boom"), FactoryError,
         ("factories.py:boom", "raised RuntimeError: weights file missing", "{dir}/factories.py:9")),
    Case("factory fails inside torch", factory("{dir}/factories.py:wrong_shape"), FactoryError,
         ("wrong_shape", "RuntimeError", "negative dimension", "{dir}/factories.py:13")),
    Case("factory called with bad arguments", factory("{dir}/factories.py:build", 1, 2, 3), FactoryError,
         ("factories.py:build", "TypeError", "positional argument")),
    Case("syntax error", factory("{dir}/syntax_error.py:build"), FactoryError,
         ("syntax_error.py:build", "SyntaxError", "{dir}/syntax_error.py:2")),
    Case("import error inside the file", factory("{dir}/imports_missing.py:build"), FactoryError,
         ("imports_missing.py", "ModuleNotFoundError", "no_such_package_xyz", "{dir}/imports_missing.py:2")),
    Case("name that cannot be imported", factory("{dir}/bad_name.py:build"), FactoryError,
         ("bad_name.py", "ImportError", "no_such_name", "bad_name.py:1")),
    Case("error while importing", factory("{dir}/divides.py:build"), FactoryError,
         ("divides.py", "ZeroDivisionError", "divides.py:1")),
    Case("script that exits when imported", factory("{dir}/script.py:build"), FactoryError,
         ("script.py", "SystemExit", "__main__")),
    Case("missing factory", factory("{dir}/factories.py:missing"), FactoryError,
         ("no attribute 'missing'", "'boom'", "'build'"), (AttributeError,)),
    Case("factory returns a str", factory("{dir}/factories.py:not_a_model"), FactoryTypeError,
         ("not_a_model", "returned str, not a torch.nn.Module"), (TypeError,)),
    Case("not callable", factory("{dir}/factories.py:LAYERS"), FactoryTypeError,
         ("LAYERS", "is a list, not a callable factory"), (TypeError,)),
    Case("missing file", factory("{dir}/absent.py:build"), FactoryError,
         ("absent.py", "not found"), (FileNotFoundError,)),
    Case("missing module", factory("no_such_module_xyz.models:build"), FactoryError,
         ("no_such_module_xyz", "no module named", "PYTHONPATH"), (ModuleNotFoundError,)),
    Case("spec without a colon", factory("{dir}/factories.py"), FactoryError, ("module:factory",)),
    Case("not a Python file", factory("{dir}/weights.txt:build"), FactoryError,
         ("weights.txt", "not a Python source file")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_error_and_writes_nothing(case, tmp_path):
    """Also: the error is the built-in type(s) it was before, and chains the original (for --debug)."""
    phrases = [phrase.format(dir=tmp_path) for phrase in case.phrases]
    error = raises_clearly(case.build(tmp_path), tmp_path, case.error, phrases)  # no __pycache__ either
    for also in case.also:
        assert isinstance(error, also), (type(error).__mro__, also)
    assert error.__cause__ is not None or isinstance(error, (ImageFolderError, InputError, InputTypeError))


UNREADABLE_IMAGE = """
from nsi_widgets import zoo
def action():
    data = zoo.ImageFolderDataset(ROOT)
    try:
        data[0]
    except zoo.BadImageError as exc:
        read_error = str(exc)
    skipping = zoo.ImageFolderDataset(ROOT, skip_bad_images=True)
    return {"read_error": read_error, "skipped": skipping.skipped, "kept": len(skipping)}
"""


def test_unreadable_image_as_an_unprivileged_user():
    with shared_folder() as folder:
        (folder / "cats").mkdir()
        (folder / "cats" / "a_private.png").write_bytes(PNG)
        os.chmod(folder / "cats" / "a_private.png", 0o600)  # root's: the child may not read it
        (folder / "cats" / "b_public.png").write_bytes(PNG)
        before = snapshot(folder)
        result = run_unprivileged(f"ROOT = {str(folder)!r}\n" + UNREADABLE_IMAGE, light=False)
        private = str(folder / "cats" / "a_private.png")
        assert "ok" in result, result
        assert private in result["ok"]["read_error"] and "permission denied" in result["ok"]["read_error"]
        assert result["ok"]["skipped"] == [[private, "permission denied"]] and result["ok"]["kept"] == 1
        assert snapshot(folder) == before


# What skip_bad_images and the conversions do -----------------------------------------------------
def test_skip_bad_images_lists_and_warns_and_keeps_the_good_ones(tmp_path):
    grey = RNG.integers(0, 256, (24, 24), dtype=np.uint8)
    rgba = RNG.integers(0, 256, (24, 24, 4), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "1_rgb.png").write_bytes(PNG)
    Image.fromarray(grey, mode="L").save(tmp_path / "a" / "2_grey.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "b" / "3_rgba.png")
    Image.fromarray(PIXELS).convert("CMYK").save(tmp_path / "b" / "4_cmyk.tif")
    bad = {}
    for what, (name, content, reason) in BAD_FILES.items():
        (tmp_path / "b" / f"9_{name}").write_bytes(content)
        bad[str(tmp_path / "b" / f"9_{name}")] = reason
    with pytest.warns(UserWarning, match=rf"skipped {len(bad)} unreadable image file\(s\) of {len(bad) + 4}"):
        data = zoo.ImageFolderDataset(tmp_path, skip_bad_images=True)
    assert [path for path, _ in data.skipped] == sorted(bad)
    for path, reason in data.skipped:
        assert bad[path] in reason
    assert data.classes == ["a", "b"] and data.labels.tolist() == [0, 0, 1, 1] and len(data) == 4
    as_float = lambda a: torch.from_numpy(np.array(a)).permute(2, 0, 1).float() / 255
    assert torch.equal(data[0][0], as_float(PIXELS))
    assert torch.equal(data[1][0], as_float(np.repeat(grey[..., None], 3, axis=2)))  # grey -> RGB exactly
    assert torch.equal(data[2][0], as_float(rgba[..., :3]))  # alpha dropped, colours kept
    cmyk = np.asarray(Image.fromarray(PIXELS).convert("CMYK").convert("RGB"))  # Pillow's CMYK -> RGB
    assert torch.equal(data[3][0], as_float(cmyk)) and data[3][1] == 1
    assert "7 unreadable files skipped" in repr(data)
    assert zoo.ImageFolderDataset(tmp_path).skipped == []  # without the option nothing is checked up front


def test_pillow_pixel_limits_are_kept_and_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    (tmp_path / "c").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "c" / "big.png")  # 1600: warn
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "c" / "huge.png")  # 2500 > 2 x 1000
    data = zoo.ImageFolderDataset(tmp_path)
    with pytest.warns(Image.DecompressionBombWarning, match=r"big\.png.*1,600 pixels.*MAX_IMAGE_PIXELS \(1,000\)"):
        assert data[0][0].shape == (3, 40, 40)
    with pytest.raises(BadImageError, match=r"huge\.png.*2,500 pixels, more than twice "
                                            r"PIL\.Image\.MAX_IMAGE_PIXELS \(1,000\).*decompression bomb"):
        data[1]
    with warnings.catch_warnings(), pytest.warns(UserWarning, match=r"skipped 1 unreadable .*huge\.png"):
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        checked = zoo.ImageFolderDataset(tmp_path, skip_bad_images=True)
    assert [Path(p).name for p, _ in checked.skipped] == ["huge.png"] and len(checked) == 1
    assert Image.MAX_IMAGE_PIXELS == 1000  # read, never changed


def test_factory_errors_chain_the_original_for_debugging(tmp_path):
    (tmp_path / "factories.py").write_text(FACTORIES)
    with pytest.raises(FactoryError) as info:
        zoo.load_factory(f"{tmp_path}/factories.py:boom")
    assert isinstance(info.value.__cause__, RuntimeError) and "weights file\nmissing" in str(info.value.__cause__)
    model = zoo.load_factory(f"{tmp_path}/factories.py:build", 6)  # the good factory still loads
    assert isinstance(model, torch.nn.Conv2d) and model.out_channels == 6
    assert not (tmp_path / "__pycache__").exists()
