"""Concept ground truth of the shapes images: one exact pixel mask per concept (docs/zoo.md).

Concepts, by category (in this order, :data:`CONCEPTS` / :data:`CONCEPT_CATEGORIES`):

* ``shape``: each shape kind (6): the pixels of the image's shape when it is of that kind;
* ``colour``: each colour (10): the pixels of the shape when it has that colour;
* ``texture``: each background texture (4): the background's pixels when it has that texture;
* ``background``: the pixels outside the shape.

A pixel is part of the shape by the renderer's inside rule (signed distance <= 0 at the pixel
centre, i.e. anti-aliased coverage >= 0.5). So within ``shape`` and ``colour`` every pixel
is in exactly one mask of the category or in ``background``; the ``texture`` masks split the
``background`` pixels (all of them go to the image's texture).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .render import BACKGROUND_KINDS, SHAPE_KINDS
from .shapes import COLORS, ShapesDataset

_GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    # (category, concept names, ground-truth key of the image's concept id)
    ("shape", SHAPE_KINDS, "shape_id"),
    ("colour", COLORS, "color_id"),
    ("texture", BACKGROUND_KINDS, "background_id"),
    ("background", ("background",), None),
)
CONCEPTS: list[str] = [name for _, names, _ in _GROUPS for name in names]
"""The 21 concept names, in mask order."""
CONCEPT_CATEGORIES: list[str] = [category for category, names, _ in _GROUPS for _ in names]
"""The category of each concept: ``"shape"``, ``"colour"``, ``"texture"`` or ``"background"``."""


class ConceptDataset(torch.utils.data.Dataset):
    """Images with concept masks; item ``i`` is ``(image, masks)``.

    ``image`` is the float32 tensor ``3xHxW`` of the underlying :class:`ShapesDataset` item,
    ``masks`` a bool ndarray ``(K, H, W)``, one mask per concept of :attr:`concepts` (K = 21).

    Attributes
    ----------
    concepts : list of str
        Concept names, in mask order.
    concept_categories : list of str
        The category of each concept.
    shapes : ShapesDataset
        The images, labels and per-image ground truth (``labels``, ``classes`` and ``ground_truth``
        are also readable here).
    """

    def __init__(self, shapes: ShapesDataset):
        if shapes.object_masks is None:
            raise ValueError("the ShapesDataset has no object masks: make it with make_shapes(..., masks=True)")
        self.shapes = shapes
        self.concepts = list(CONCEPTS)
        self.concept_categories = list(CONCEPT_CATEGORIES)

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        return self.shapes[index][0], self.masks([index])[0]

    @property
    def image_data(self) -> ShapesDataset:
        """The images alone (the underlying :class:`ShapesDataset`): a pass that needs no masks reads these
        (nsi_widgets.concepts.data)."""
        return self.shapes

    @property
    def labels(self) -> np.ndarray:
        """(n,) class label of each image."""
        return self.shapes.labels

    @property
    def classes(self) -> list[str]:
        """Class names, in label order."""
        return self.shapes.classes

    @property
    def ground_truth(self) -> dict[str, np.ndarray]:
        """Per-image ground truth of the underlying :class:`ShapesDataset`."""
        return self.shapes.ground_truth

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of every image and mask."""
        return self.shapes.image_size

    def masks(self, indices: Sequence[int] | slice | None = None) -> np.ndarray:
        """Masks of several images as one bool array ``(k, K, H, W)``.

        Parameters
        ----------
        indices : sequence of int, slice, or None
            Which images; all of them when ``None`` (mind the memory: ``n * K * H * W`` bytes).
        """
        chosen = np.arange(len(self))[slice(None) if indices is None else indices]
        chosen = np.atleast_1d(chosen)
        inside = self.shapes.object_masks[chosen]                     # (k, H, W)
        k, h, w = inside.shape
        out = np.zeros((k, len(self.concepts), h, w), dtype=bool)
        rows = np.arange(k)
        offset = 0
        for category, names, key in _GROUPS:
            if category == "background":
                out[:, offset] = ~inside
            else:
                ids = self.shapes.ground_truth[key][chosen]
                out[rows, offset + ids] = ~inside if category == "texture" else inside
            offset += len(names)
        return out

    def category_slices(self) -> dict[str, slice]:
        """The range of mask indices of each category."""
        slices, offset = {}, 0
        for category, names, _ in _GROUPS:
            slices[category] = slice(offset, offset + len(names))
            offset += len(names)
        return slices

    def __repr__(self) -> str:
        h, w = self.shapes.image_size
        return (f"ConceptDataset({len(self)} images {h}x{w}, {len(self.concepts)} concepts in "
                f"{len(set(self.concept_categories))} categories, seed={self.shapes.seed})")
