"""Reading images and labels from a user's dataset, as batches of RGB tensors in ``[0, 1]``.

A dataset is anything with ``__len__`` and ``__getitem__`` (a ``torch.utils.data.Dataset``, a list...)
whose items are ``(image, label)`` or ``image``. An image is a float tensor ``3xHxW`` in ``[0, 1]``,
a uint8 array/tensor (``HxWx3`` or ``3xHxW``), a float array ``HxWx3`` in ``[0, 1]``, or a PIL image.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

UNLABELLED = -1


def to_image_tensor(image: Any, index: int | None = None) -> torch.Tensor:
    """Convert one image to a float32 tensor ``3xHxW`` in ``[0, 1]``.

    Raises
    ------
    TypeError, ValueError
        With the dataset index, for types or shapes that are not an RGB image.
    """
    where = f"dataset item {index}" if index is not None else "image"
    if hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, (np.ndarray, torch.Tensor)):
        image = np.asarray(image.convert("RGB"))  # PIL
    if isinstance(image, np.ndarray):
        image = np.ascontiguousarray(image)
        image = torch.from_numpy(image if image.flags.writeable else image.copy())
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{where}: expected an image (float tensor 3xHxW in [0, 1], uint8 array, or PIL "
                        f"image), got {type(image).__name__}")
    if image.ndim == 2:
        raise ValueError(f"{where}: a 2-D (grey) image of shape {tuple(image.shape)}; the indexes need RGB: "
                         "repeat it to 3 channels (e.g. PIL's .convert('RGB'))")
    if image.ndim != 3:
        raise ValueError(f"{where}: expected 3 dimensions (3xHxW or HxWx3), got shape {tuple(image.shape)}")
    if image.shape[0] != 3 and image.shape[-1] == 3:
        image = image.permute(2, 0, 1)
    if image.shape[0] != 3:
        raise ValueError(f"{where}: expected 3 colour channels, got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float().div_(255.0)
    if not image.is_floating_point():
        raise TypeError(f"{where}: integer images must be uint8 (0-255), got {image.dtype}")
    return image.float()


def split_item(item: Any) -> tuple[Any, int]:
    """Split a dataset item into ``(image, label)``; ``label`` is ``-1`` when absent."""
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            image, label = item
            if label is None:
                return image, UNLABELLED
            if isinstance(label, torch.Tensor):
                label = label.item()
            try:
                return image, int(label)
            except (TypeError, ValueError):
                raise TypeError(f"labels must be integers (class ids), got {label!r}") from None
        if len(item) == 1:
            return item[0], UNLABELLED
        raise ValueError(f"dataset items must be (image, label) or image; got a sequence of {len(item)}")
    return item, UNLABELLED


class _Collate:
    """Turn a list of ``(index, item)`` into ``(indices, images, labels)`` tensors."""

    def __call__(self, batch):
        indices, images, labels = [], [], []
        for index, item in batch:
            image, label = split_item(item)
            images.append(to_image_tensor(image, index))
            indices.append(index)
            labels.append(label)
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            raise ValueError(f"images in one batch differ in size {sorted(shapes)} (dataset items "
                             f"{indices[0]}..{indices[-1]}); resize them to one size first, e.g. "
                             "nsi_widgets.zoo.ImageFolderDataset(root, size=224)")
        return (torch.as_tensor(indices, dtype=torch.int64), torch.stack(images),
                torch.as_tensor(labels, dtype=torch.int64))


class _IndexedView(torch.utils.data.Dataset):
    """Items ``(index, data[index])`` for the chosen indices (a DataLoader-friendly view)."""

    def __init__(self, data: Sequence, indices: Sequence[int]):
        self.data = data
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        return index, self.data[index]


def iterate_batches(data: Sequence, indices: Sequence[int], batch_size: int,
                    num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(indices, images, labels)`` batches for ``indices`` of ``data``, in that order."""
    loader = torch.utils.data.DataLoader(
        _IndexedView(data, indices), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, collate_fn=_Collate(), persistent_workers=False)
    yield from loader


def check_dataset(data: Any) -> int:
    """Return ``len(data)`` after checking that ``data`` is a non-empty indexable dataset."""
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"data must be a dataset or sequence with __len__ and __getitem__ (a map-style "
                        f"torch Dataset, a list...), got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise ValueError("the dataset is empty")
    return n
