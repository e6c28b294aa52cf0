"""Concept data: items ``(image, masks)``, one boolean mask per concept (docs/methods.md section 7).

A concept dataset has ``__len__``/``__getitem__`` returning ``(image, masks)``: the image as anywhere
in nsi-widgets (RGB in ``[0, 1]``, uint8 or PIL), ``masks`` a boolean array or tensor ``(K, Hm, Wm)``
(where concept ``k`` is, one mask per concept) at the image's size or smaller (each mask pixel then
covers an equal block of image pixels: the image size must be a whole multiple of the mask size, or
the mask grid is stretched evenly over the image). It names its concepts in ``.concepts`` (K names)
and, optionally, their categories in ``.concept_categories`` (K names, e.g. "shape", "colour";
default one category ``"concept"``).

Two optional attributes let a pass read only what it needs (both are checked against item 0 and
ignored when they disagree with it): ``masks(indices)`` -> boolean ``(B, K, Hm, Wm)``, the masks of those
items (:class:`MaskReader`), and ``image_data``, a dataset of the same images in the same order (items
an image or ``(image, label)``; :func:`image_view`). ``nsi.zoo.load_concepts`` datasets have both.

A category counts as *labelled* in an image when any of its concepts has a pixel there (the rule
of NetDissect-Lite, which only annotates categories it has labels for); see ``union=`` of
:func:`~nsi_widgets.concepts.dissection.dissect`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.data import get_item, to_image_tensor
from ..core.errors import InputError, InputTypeError


@dataclass(frozen=True)
class ConceptSet:
    """The concepts of a concept dataset and the sizes of its images and masks.

    Attributes
    ----------
    concepts : tuple of str
        K concept names.
    categories : tuple of str
        K category names (one per concept).
    category_names : tuple of str
        The distinct categories, in order of first appearance.
    category_of : ndarray (K,) int64
        Index into ``category_names`` of each concept.
    image_size, mask_size : (H, W)
    """

    concepts: tuple[str, ...]
    categories: tuple[str, ...]
    image_size: tuple[int, int]
    mask_size: tuple[int, int]

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.categories))

    @property
    def category_of(self) -> np.ndarray:
        names = self.category_names
        return np.array([names.index(c) for c in self.categories], dtype=np.int64)

    def split(self, item: Any, index: int) -> tuple[Any, int, torch.Tensor]:
        """``(image, -1, masks)`` of one item, the masks checked (for :class:`~nsi_widgets.core.data.DataCheck`)."""
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InputError(f"concept data item {index}: items must be (image, masks), got "
                             f"{type(item).__name__}{f' of {len(item)}' if isinstance(item, (tuple, list)) else ''}")
        image, masks = item
        return image, -1, _masks(masks, index, len(self.concepts), self.mask_size)

    def masks_only(self, item: Any, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """As :meth:`split`, with a 1-pixel placeholder for the image (a pass that needs only masks)."""
        _, label, masks = self.split(item, index)
        return _PLACEHOLDER, label, masks


_PLACEHOLDER = torch.zeros(3, 1, 1)


class MaskReader:
    """Masks read in batches through a concept dataset's own ``masks(indices)`` (``(B, K, Hm, Wm)``
    boolean, the masks of those items), for a pass that needs only masks: no images are made.

    :meth:`of` gives the reader when the dataset offers one whose masks of item 0 equal the item's,
    else None (the items are read instead). Each batch is checked like an item's masks.
    """

    def __init__(self, read, concept_set: ConceptSet):
        self._read, self.concept_set = read, concept_set

    @classmethod
    def of(cls, concept_data, concept_set: ConceptSet) -> "MaskReader | None":
        read = getattr(concept_data, "masks", None)
        if not callable(read):
            return None
        reader = cls(read, concept_set)
        try:
            first = reader([0])
        except Exception:  # noqa: BLE001 - not a batch reader of this kind: read the items
            return None
        item = _masks(get_item(concept_data, 0)[1], 0, len(concept_set.concepts), concept_set.mask_size)
        return reader if torch.equal(first[0], item) else None

    def __call__(self, indices) -> torch.Tensor:
        indices = [int(i) for i in indices]
        masks = self._read(indices)
        if isinstance(masks, np.ndarray):
            masks = torch.from_numpy(np.ascontiguousarray(masks))
        if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool or masks.ndim != 4 \
                or len(masks) != len(indices):
            raise InputError(f"concept data: masks(indices) of items {indices[0]}..{indices[-1]} must be a boolean "
                             f"array (B, K, H, W) with one entry per index, got {getattr(masks, 'shape', type(masks))}")
        for index, one in zip(indices, masks):
            _masks(one, index, len(self.concept_set.concepts), self.concept_set.mask_size)
        return masks


def image_view(concept_data):
    """``(data, split)`` for a pass that needs only the images: the dataset's ``image_data`` (items an
    image or ``(image, label)``) when it has the same length and the same first image, else the
    concept data itself; ``split`` gives ``(image, -1, None)`` of an item of that data."""
    images = getattr(concept_data, "image_data", None)
    if images is not None and hasattr(images, "__getitem__") and hasattr(images, "__len__") \
            and len(images) == len(concept_data):
        try:
            first = to_image_tensor(_image(get_item(images, 0)), 0)
        except Exception:  # noqa: BLE001 - not a dataset of these images: read the items
            first = None
        if first is not None and torch.equal(first, to_image_tensor(get_item(concept_data, 0)[0], 0)):
            return images, _image_only
    return concept_data, _image_of_pair


def _image(item):
    return item[0] if isinstance(item, (tuple, list)) else item


def _image_only(item: Any, index: int):
    """``(image, -1, None)`` of an ``image_data`` item."""
    return _image(item), -1, None


def _image_of_pair(item: Any, index: int):
    """``(image, -1, None)`` of a concept item (its masks are read and checked by another pass)."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise InputError(f"concept data item {index}: items must be (image, masks), got {type(item).__name__}")
    return item[0], -1, None


class Indices(torch.utils.data.Dataset):
    """Items that are their own index (``n`` of them): the data of a pass whose consumers read everything
    else themselves (e.g. through a :class:`MaskReader`); :func:`placeholder` is its split."""

    def __init__(self, n: int):
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return int(index)


def placeholder(item: Any, index: int) -> tuple[torch.Tensor, int, None]:
    """``(1-pixel placeholder image, -1, None)``: the split of :class:`Indices` items."""
    return _PLACEHOLDER, -1, None


def describe(concept_data) -> ConceptSet:
    """Check a concept dataset's names and its first item; return its :class:`ConceptSet`."""
    if not hasattr(concept_data, "__len__") or not hasattr(concept_data, "__getitem__"):
        raise InputTypeError(f"concept_data must be a dataset of (image, masks) items, got "
                             f"{type(concept_data).__name__}")
    if len(concept_data) == 0:
        raise InputError("the concept dataset is empty")
    concepts = getattr(concept_data, "concepts", None)
    if concepts is None or isinstance(concepts, str) or not len(concepts):
        raise InputError("concept_data must name its concepts in .concepts (one name per mask)")
    concepts = tuple(str(c) for c in concepts)
    if len(set(concepts)) != len(concepts):
        raise InputError("concept names in .concepts must be distinct")
    categories = getattr(concept_data, "concept_categories", None)
    categories = tuple(str(c) for c in categories) if categories is not None else ("concept",) * len(concepts)
    if len(categories) != len(concepts):
        raise InputError(f".concept_categories has {len(categories)} names for {len(concepts)} concepts")
    item = get_item(concept_data, 0)
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise InputError("concept data items must be (image, masks)")
    image = to_image_tensor(item[0], 0)
    masks = _masks(item[1], 0, len(concepts), None)
    image_size = tuple(int(s) for s in image.shape[-2:])
    mask_size = tuple(int(s) for s in masks.shape[-2:])
    if mask_size[0] > image_size[0] or mask_size[1] > image_size[1]:
        raise InputError(f"masks of size {mask_size} are larger than the images {image_size}; give masks at the "
                         "image's size or smaller")
    return ConceptSet(concepts, categories, image_size, mask_size)


def _masks(masks: Any, index: int, n_concepts: int, size: tuple[int, int] | None) -> torch.Tensor:
    if isinstance(masks, np.ndarray):
        if masks.dtype.hasobject:
            raise InputTypeError(f"concept data item {index}: masks must be a boolean array, not objects")
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, torch.Tensor):
        raise InputTypeError(f"concept data item {index}: masks must be a boolean array (K, H, W), got "
                             f"{type(masks).__name__}")
    if masks.dtype != torch.bool:
        if masks.is_floating_point() or not ((masks == 0) | (masks == 1)).all():
            raise InputError(f"concept data item {index}: masks must be boolean (or 0/1 integers), got "
                             f"{masks.dtype}")
        masks = masks.bool()
    if masks.ndim != 3 or masks.shape[0] != n_concepts:
        raise InputError(f"concept data item {index}: masks of shape {tuple(masks.shape)}, expected "
                         f"({n_concepts}, H, W): one mask per concept")
    if size is not None and tuple(masks.shape[-2:]) != tuple(size):
        raise InputError(f"concept data item {index}: masks of size {tuple(masks.shape[-2:])}, the first item's "
                         f"are {tuple(size)}; give every item masks of one size")
    return masks
