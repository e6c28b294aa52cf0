"""Reading images and labels from a user's dataset, as batches of RGB tensors in ``[0, 1]``, checked.

A dataset is anything with ``__len__`` and ``__getitem__`` (a ``torch.utils.data.Dataset``, a list...)
whose items are ``(image, label)`` or ``image``. An image is a float tensor ``3xHxW`` in ``[0, 1]``,
a uint8 array/tensor (``HxWx3`` or ``3xHxW``), a float array ``HxWx3`` in ``[0, 1]``, or a PIL image.
A label is an integer class id (``-1`` or ``None``: unlabelled).

Every item is checked as it is read, and the error names the item (:class:`DataCheck`): the image
type, channels and size (all images of one size, the size of the first), float values in ``[0, 1]``
(0..255 floats are refused with the hint to divide by 255), finite pixels (refused, or skipped with
``skip_nonfinite``: such an image then enters no top list and is counted), integer labels below the
number of classes (one-hot vectors, strings and non-integer floats refused with a hint).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import DataReadError, InputError, InputTypeError, NsiError

UNLABELLED = -1


@dataclass(frozen=True)
class DataCheck:
    """What every item must satisfy.

    Attributes
    ----------
    image_shape : (3, H, W) or None
        Every image's shape (None: not checked).
    n_classes : int or None
        Labels must be ``< n_classes`` (None: not checked).
    skip_nonfinite : bool
        Images with NaN or infinite pixels are skipped (``valid`` False) instead of refused.
    split : callable or None
        ``split(item, index) -> (image, label, extra)`` for items of another form (e.g. concept
        data's ``(image, masks)``: extra = the masks); ``extra`` tensors are stacked per batch.
        Default: ``(image, label)`` or ``image`` items, no extra.
    """

    image_shape: tuple[int, ...] | None = None
    n_classes: int | None = None
    skip_nonfinite: bool = False
    split: Callable[[Any, int], tuple[Any, int, Any]] | None = None


def to_image_tensor(image: Any, index: int | None = None) -> torch.Tensor:
    """Convert one image to a float32 tensor ``3xHxW`` (values not yet checked).

    Raises
    ------
    InputTypeError, InputError
        With the dataset index, for types or shapes that are not an RGB image.
    """
    where = f"dataset item {index}" if index is not None else "image"
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, (np.ndarray, torch.Tensor)):
        image = np.asarray(image.convert("RGB"))  # PIL
    if isinstance(image, np.ndarray):
        if image.dtype.hasobject:
            raise InputTypeError(f"{where}: an object array is not an image")
        image = np.ascontiguousarray(image)
        image = torch.from_numpy(image if image.flags.writeable else image.copy())
    if not isinstance(image, torch.Tensor):
        raise InputTypeError(f"{where}: expected an image (float tensor 3xHxW in [0, 1], uint8 array, or PIL "
                             f"image), got {type(image).__name__}")
    if image.ndim == 2:
        raise InputError(f"{where}: a 2-D (grey) image of shape {tuple(image.shape)}; the indexes need RGB: "
                         "repeat it to 3 channels (e.g. PIL's .convert('RGB'))")
    if image.ndim != 3:
        raise InputError(f"{where}: expected 3 dimensions (3xHxW or HxWx3), got shape {tuple(image.shape)}")
    if image.shape[0] != 3 and image.shape[-1] == 3:
        image = image.permute(2, 0, 1)
    if image.shape[0] != 3:
        raise InputError(f"{where}: expected 3 colour channels (RGB), got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float().div_(255.0)
    if image.dtype == torch.bool or not image.is_floating_point():
        raise InputTypeError(f"{where}: integer images must be uint8 (0-255), got {image.dtype}")
    return image.float()


def split_item(item: Any, index: int | None = None) -> tuple[Any, int]:
    """Split a dataset item into ``(image, label)``; ``label`` is ``-1`` when absent."""
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            image, label = item
            return image, _label(label, index)
        if len(item) == 1:
            return item[0], UNLABELLED
        raise InputError(f"dataset item {index}: items must be (image, label) or image; got a sequence of "
                         f"{len(item)}")
    return item, UNLABELLED


def _label(label: Any, index: int | None) -> int:
    """One integer class id from the label types users have (int, NumPy or 0-d tensor integers)."""
    where = f"dataset item {index}" if index is not None else "label"
    if label is None:
        return UNLABELLED
    if isinstance(label, (torch.Tensor, np.ndarray)):
        size = label.size if isinstance(label, np.ndarray) else label.numel()
        if size != 1:
            raise InputError(f"{where}: the label is an array of shape {tuple(label.shape)}; give one integer "
                             "class id per image (for one-hot labels: label.argmax())")
        is_int = (label.dtype.kind in "iu") if isinstance(label, np.ndarray) else \
            (not label.is_floating_point() and not label.is_complex() and label.dtype != torch.bool)
        if not is_int:
            raise InputError(f"{where}: the label has dtype {label.dtype}; labels must be integer class ids "
                             "(cast them, e.g. int(label))")
        label = label.reshape(-1)[0].item()
    if isinstance(label, (bool, np.bool_)):
        raise InputError(f"{where}: the label is a bool; labels must be integer class ids")
    if isinstance(label, (int, np.integer)):
        label = int(label)
        if label < UNLABELLED:
            raise InputError(f"{where}: label {label} is negative; class ids start at 0 (-1 means unlabelled)")
        return label
    if isinstance(label, (float, np.floating)):
        raise InputError(f"{where}: the label is the float {label!r}; labels must be integer class ids "
                         "(cast them, e.g. int(label))")
    if isinstance(label, str):
        raise InputError(f"{where}: the label is the string {label!r}; labels must be integer class ids "
                         "(map names to ids, e.g. classes.index(name), and give data.classes the names)")
    if isinstance(label, (list, tuple)):
        raise InputError(f"{where}: the label is a {type(label).__name__} of {len(label)}; give one integer "
                         "class id per image (for one-hot labels: the index of the 1)")
    raise InputError(f"{where}: labels must be integer class ids, got {type(label).__name__}")


def read_item(item: Any, index: int, check: DataCheck | None = None) -> tuple[torch.Tensor, int, bool]:
    """``(image 3xHxW float32 in [0, 1], label, valid)`` of one item, checked against ``check``."""
    return _read(item, index, check or DataCheck())[:3]


def _read(item: Any, index: int, check: DataCheck) -> tuple[torch.Tensor, int, bool, Any]:
    """``(image, label, valid, extra)`` of one item, checked against ``check``."""
    if check.split is not None:
        raw, label, extra = check.split(item, index)
    else:
        (raw, label), extra = split_item(item, index), None
    image = to_image_tensor(raw, index)
    if check.image_shape is not None and tuple(image.shape) != tuple(check.image_shape):
        raise InputError(f"dataset item {index}: images differ in size: this one is {tuple(image.shape[1:])}, "
                         f"the first is {tuple(check.image_shape[1:])}; resize every image to one size first, "
                         "e.g. nsi_widgets.zoo.ImageFolderDataset(root, size=224)")
    if check.n_classes is not None and label >= check.n_classes:
        raise InputError(f"dataset item {index}: label {label} but only {check.n_classes} class names are "
                         f"known (labels 0..{check.n_classes - 1}); give all class names (data.classes or "
                         "class_names=)")
    finite = bool(torch.isfinite(image).all())
    if not finite:
        if not check.skip_nonfinite:
            raise InputError(f"dataset item {index}: the image has NaN or infinite pixels; fix it, or pass "
                             "skip_nonfinite=True (--skip-nonfinite) to leave such images out")
        return torch.zeros_like(image), UNLABELLED, False, extra
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        hint = " (0..255 values? divide by 255 or give uint8 images)" if high > 1.0 else ""
        raise InputError(f"dataset item {index}: float pixel values must lie in [0, 1], found "
                         f"[{low:.4g}, {high:.4g}]{hint}; normalisation belongs in preprocess=")
    return image, label, True, extra


class _Collate:
    """Turn a list of ``(index, item)`` into ``(indices, images, labels, valid, extra)``."""

    def __init__(self, check: DataCheck | None):
        self.check = check or DataCheck()

    def __call__(self, batch):
        indices, images, labels, valid, extras = [], [], [], [], []
        for index, item in batch:
            image, label, ok, extra = _read(item, index, self.check)
            images.append(image)
            indices.append(index)
            labels.append(label)
            valid.append(ok)
            extras.append(extra)
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise InputError(f"images in one batch differ in size {sorted(shapes)} (dataset items "
                             f"{indices[0]}..{indices[-1]}); resize them to one size first, e.g. "
                             "nsi_widgets.zoo.ImageFolderDataset(root, size=224)")
        extra = None if extras[0] is None else torch.stack(extras)
        return (torch.as_tensor(indices, dtype=torch.int64), torch.stack(images),
                torch.as_tensor(labels, dtype=torch.int64), torch.as_tensor(valid, dtype=torch.bool), extra)


def get_item(data: Sequence, index: int):
    """``data[index]``; an error raised by the dataset becomes a :class:`DataReadError` naming the item."""
    try:
        return data[int(index)]
    except NsiError:
        raise  # already says what is wrong (e.g. a bad image file of a folder dataset)
    except Exception as err:  # noqa: BLE001 - the user's dataset: report which item and why
        first = str(err).splitlines()[0] if str(err) else ""
        raise DataReadError(f"dataset item {int(index)} could not be read ({type(err).__name__}: {first})") from err


class _IndexedView(torch.utils.data.Dataset):
    """Items ``(index, data[index])`` (a DataLoader-friendly view)."""

    def __init__(self, data: Sequence):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return int(index), get_item(self.data, index)


def load_batches(data: Sequence, batches: Sequence[Sequence[int]], num_workers: int = 0,
                 check: DataCheck | None = None) -> Iterator[tuple]:
    """Yield ``(indices, images, labels, valid, extra)`` for each list of dataset indices in ``batches``,
    in order (``extra``: the stacked extras of ``check.split``, or None)."""
    if not len(batches):
        return
    loader = torch.utils.data.DataLoader(
        _IndexedView(data), batch_sampler=[list(map(int, b)) for b in batches],
        num_workers=num_workers, collate_fn=_Collate(check), persistent_workers=False)
    yield from loader


def iterate_batches(data: Sequence, indices: Sequence[int], batch_size: int, num_workers: int = 0,
                    check: DataCheck | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(indices, images, labels)`` batches of ``batch_size`` for ``indices`` of ``data``, in order."""
    for batch_indices, images, labels, _, _ in load_batches(data, split_batches(indices, batch_size), num_workers,
                                                            check):
        yield batch_indices, images, labels


def split_batches(indices: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """``indices`` cut into consecutive batches of ``batch_size`` (the last may be shorter)."""
    indices = np.asarray(indices, dtype=np.int64)
    return [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]


def check_labels(data: Any, n_classes: int | None) -> None:
    """Check a dataset's labels up front where it lists them (``data.targets`` or ``data.labels``):
    integer class ids from -1 (unlabelled) to ``n_classes - 1``. Other datasets are checked item by
    item as they are read."""
    labels = getattr(data, "targets", None)
    if labels is None:
        labels = getattr(data, "labels", None)
    if labels is None or isinstance(labels, str):
        return
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError):
        return
    if array.ndim != 1 or len(array) != len(data) or array.dtype.kind not in "iu":
        return
    bad = np.nonzero((array < UNLABELLED) | ((array >= n_classes) if n_classes else False))[0]
    if len(bad):
        i = int(bad[0])
        _label(array[i].item(), i)  # negative labels: its message
        raise InputError(f"dataset item {i}: label {int(array[i])} but only {n_classes} class names are known "
                         f"(labels 0..{n_classes - 1}; {len(bad)} items in all); give all class names "
                         "(data.classes or class_names=)")


def check_dataset(data: Any) -> int:
    """Return ``len(data)`` after checking that ``data`` is a non-empty indexable dataset."""
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise InputTypeError(f"data must be a dataset or sequence with __len__ and __getitem__ (a map-style "
                             f"torch Dataset, a list...), got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise InputError("the dataset is empty")
    return n
