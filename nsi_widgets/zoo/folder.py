"""Your own images: a folder with one subfolder per class, read with Pillow.

A file that cannot be read (not an image, a corrupt JPEG, a truncated PNG, an image over Pillow's
decompression-bomb limit, no permission) raises :class:`BadImageError` naming the file, the dataset
item and the reason; with ``skip_bad_images=True`` such files are found when the data set is built,
left out, and listed in :attr:`ImageFolderDataset.skipped`. Pillow's limits are kept: an image over
``PIL.Image.MAX_IMAGE_PIXELS`` is read with a warning naming it, one over twice that is refused.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..core.errors import InputError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
"""File extensions :class:`ImageFolderDataset` reads (case-insensitive)."""

_SKIP_HINT = "fix or remove the file, or skip unreadable files with skip_bad_images=True (--skip-bad-images)"


class ImageFolderError(InputError):
    """A folder data set that cannot be used: no folder, no images, or an image file that cannot be read."""


class BadImageError(ImageFolderError, OSError):
    """An image file that cannot be read; the message names the file, the dataset item and why."""


class _FolderNotFoundError(ImageFolderError, FileNotFoundError):
    pass


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


class ImageFolderDataset(torch.utils.data.Dataset):
    """Labelled images from ``root/<class name>/<image file>``.

    Classes are the subfolder names in sorted order (label ``k`` is ``classes[k]``). Images are
    read when indexed, converted to RGB (grey, palette, CMYK and RGBA images too; alpha is
    dropped), optionally resized, and returned as float32 tensors ``3xHxW`` in ``[0, 1]``.

    Parameters
    ----------
    root : str or path
        The folder holding one subfolder per class (files directly in ``root`` are ignored).
    size : int or (int, int), optional
        Resize every image to ``size x size`` (or ``(height, width)``) with bilinear filtering.
        The index needs one common size; leave ``None`` only if all images already share one.
    class_parents : dict of str to str, optional
        A class hierarchy (child -> parent) to attach, used by the superclass index.
    skip_bad_images : bool
        Check every file now (decoding it, JPEGs at 1/8 scale, so cheaply) and leave out those
        that cannot be read, listing them in :attr:`skipped` and with one warning giving their
        count. Without it, a bad file raises :class:`BadImageError` when it is read.

    Attributes
    ----------
    classes : list of str
        Every subfolder holding image files (also when ``skip_bad_images`` left all of a
        class's files out, so that labels do not depend on which files are readable).
    class_to_idx : dict of str to int
    samples : list of (str, int)
        Each image's path and label, in dataset order (sorted by class, then file name).
    labels : ndarray (n,) int64
    skipped : list of (str, str)
        The files left out by ``skip_bad_images`` and why (empty otherwise).

    Raises
    ------
    ImageFolderError
        If ``root`` is not a folder (also a ``FileNotFoundError``), no subfolder holds an image
        with one of :data:`IMAGE_EXTENSIONS`, or ``skip_bad_images`` left no image.
    BadImageError
        When an item whose file cannot be read is indexed (an ``OSError`` too).
    """

    def __init__(self, root: str | os.PathLike, size: int | tuple[int, int] | None = None,
                 class_parents: dict[str, str] | None = None, *, skip_bad_images: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise _FolderNotFoundError(f"image folder {str(root)!r} does not exist or is not a folder")
        self.root = root
        self.size = _check_size(size)
        self.classes: list[str] = []
        self.samples: list[tuple[str, int]] = []
        self.skipped: list[tuple[str, str]] = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(p for p in folder.rglob("*") if _is_image(p))
            if not files:
                continue  # an empty subfolder is not a class
            label = len(self.classes)
            self.classes.append(folder.name)
            self.samples.extend((str(f), label) for f in files)
        if not self.samples:
            loose = [p.name for p in root.iterdir() if _is_image(p)]
            hint = (f" ({len(loose)} image(s) lie directly in the folder: move them into one subfolder "
                    "per class)") if loose else ""
            raise ImageFolderError(
                f"no images found in the subfolders of {str(root)!r}{hint}; expected root/<class>/<image> "
                f"with extensions {', '.join(IMAGE_EXTENSIONS)}")
        if skip_bad_images:
            self._skip_bad_images()
        self.class_to_idx = {name: k for k, name in enumerate(self.classes)}
        self.labels = np.array([label for _, label in self.samples], dtype=np.int64)
        self.class_parents = dict(class_parents) if class_parents else {}

    def _skip_bad_images(self) -> None:
        kept = []
        for path, label in self.samples:
            reason = _check_file(path)
            if reason is None:
                kept.append((path, label))
            else:
                self.skipped.append((path, reason))
        if not kept:
            raise ImageFolderError(f"no readable image in {str(self.root)!r}: all {len(self.samples)} files "
                                   f"were skipped (the first, {self.skipped[0][0]!r}: {self.skipped[0][1]})")
        if self.skipped:
            first_path, first_reason = self.skipped[0]
            warnings.warn(f"skipped {len(self.skipped)} unreadable image file(s) of {len(self.samples)} in "
                          f"{str(self.root)!r} (the first, {first_path!r}: {first_reason}); the list is in "
                          f"dataset.skipped", UserWarning, stacklevel=3)
        self.samples = kept

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            pixels = _read_rgb(path, self.size)
        except _Unreadable as bad:
            raise BadImageError(f"cannot read image {path!r} (dataset item {index}): {bad}; {_SKIP_HINT}") \
                from bad.__cause__
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)
        return tensor, label

    @property
    def targets(self) -> list[int]:
        """Labels as a list of ints (the name torchvision datasets use)."""
        return self.labels.tolist()

    def __repr__(self) -> str:
        size = "original size" if self.size is None else f"resized to {self.size[0]}x{self.size[1]}"
        skipped = f", {len(self.skipped)} unreadable files skipped" if self.skipped else ""
        return (f"ImageFolderDataset({str(self.root)!r}, {len(self)} images, {len(self.classes)} classes, "
                f"{size}{skipped})")


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be a positive int or (height, width), got {size!r}") from None
    if len(size) != 2 or min(size) < 1:
        raise InputError(f"size must be a positive int or (height, width), got {size}")
    return size


# Reading one file --------------------------------------------------------------------------------
class _Unreadable(Exception):
    """Why a file cannot be read (the message); the original error is its ``__cause__``."""


def _read_rgb(path: str, size: tuple[int, int] | None, *, check_only: bool = False) -> np.ndarray | None:
    """The image as RGB uint8 ``(H, W, 3)``, resized to ``size``; :class:`_Unreadable` if it cannot be read.

    With ``check_only`` the image is decoded (a JPEG at 1/8 scale) and nothing is returned.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow's own warning does not name the file: _check_pixels gives one that does.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            _check_pixels(image, path)
            if check_only:
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
                return None
            image = image.convert("RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except Image.DecompressionBombError as error:
        raise _Unreadable(_bomb_reason(error)) from error
    except Exception as error:  # a damaged file can make a decoder raise nearly anything
        raise _Unreadable(_reason(path, error)) from error


def _check_file(path: str) -> str | None:
    """Why ``path`` cannot be read, or None if it decodes."""
    try:
        _read_rgb(path, None, check_only=True)
    except _Unreadable as bad:
        return str(bad)
    return None


def _check_pixels(image, path: str) -> None:
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.width * image.height
    if limit is not None and pixels > limit:
        warnings.warn(f"image {path!r} has {pixels:,} pixels, more than PIL.Image.MAX_IMAGE_PIXELS "
                      f"({limit:,}); read anyway (Pillow refuses images over twice the limit as possible "
                      f"decompression bombs)", Image.DecompressionBombWarning, stacklevel=4)


def _bomb_reason(error: Exception) -> str:
    from PIL import Image

    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    limit = Image.MAX_IMAGE_PIXELS
    return (f"{pixels}, more than twice PIL.Image.MAX_IMAGE_PIXELS ({limit:,}): refused as a possible "
            f"decompression bomb; if the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS (or shrink the image)")


def _reason(path: str, error: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(error, FileNotFoundError):
        return "the file no longer exists"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, UnidentifiedImageError):
        try:
            empty = os.path.getsize(path) == 0
        except OSError:
            empty = False
        return "the file is empty" if empty else "not an image Pillow can read (unknown or damaged format)"
    message = str(error) or type(error).__name__
    return f"damaged or truncated image ({message})"
