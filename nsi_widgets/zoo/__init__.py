"""Models and data to index: the embedded default, and loaders for your own.

The embedded default, ``"shapes"``, is a small trained CNN (:class:`~.models.ShapesCNN`) with a
labelled synthetic image set (:func:`make_shapes`): nothing to download, ready in about a second.

>>> import nsi_widgets as nsi
>>> model, data = nsi.zoo.load("shapes")           # doctest: +SKIP
>>> idx = nsi.index_neurons(model, data, layers=nsi.zoo.conv_layers(model))  # doctest: +SKIP

Your own material: :class:`ImageFolderDataset` (one subfolder per class), :func:`load_factory`
(``"module:function"`` or ``"file.py:function"`` returning a model), and, when torchvision is
installed, :func:`torchvision_model` / :func:`torchvision_dataset` (local files only).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .external import FactoryError, FactoryTypeError, load_factory, torchvision_dataset, torchvision_model
from .folder import IMAGE_EXTENSIONS, BadImageError, ImageFolderDataset, ImageFolderError
from .models import CONV_LAYERS, ShapesCNN, conv_layers
from .shapes import (BACKGROUND_KINDS, CLASS_PARENTS, CLASSES, COLORS, SHAPE_KINDS, ShapesDataset,
                     make_shapes)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Folder of the shipped weights (``shapes_cnn.pt``) and their training report (``shapes_cnn.json``)."""

INDEX_SEED = 3
"""Seed of the default ``"index"`` split returned by :func:`load` (training used 1, held-out 2)."""
INDEX_SIZE = 2000
"""Number of images in the default ``"index"`` split."""

_AVAILABLE = {
    "shapes": "ShapesCNN (5 conv layers, ~100k parameters) trained on 10 classes of coloured shapes; "
              "returns 2,000 labelled 64x64 images (seed 3, never used in training)",
}

__all__ = [
    "load", "available", "make_shapes", "ShapesDataset", "ShapesCNN", "conv_layers", "CONV_LAYERS",
    "CLASSES", "CLASS_PARENTS", "COLORS", "SHAPE_KINDS", "BACKGROUND_KINDS", "ImageFolderDataset",
    "IMAGE_EXTENSIONS", "ImageFolderError", "BadImageError", "load_factory", "FactoryError", "FactoryTypeError",
    "torchvision_model", "torchvision_dataset", "shapes_report",
    "WEIGHTS_DIR", "INDEX_SEED", "INDEX_SIZE",
]


def available() -> list[str]:
    """Names accepted by :func:`load`.

    Returns
    -------
    list of str
    """
    return list(_AVAILABLE)


def load(name: str = "shapes", *, n: int = INDEX_SIZE, seed: int = INDEX_SEED) -> tuple[torch.nn.Module, torch.utils.data.Dataset]:
    """Load an embedded model and the labelled data set to index it on.

    Parameters
    ----------
    name : str
        One of :func:`available` (``"shapes"``).
    n : int
        Number of images to generate (default 2,000).
    seed : int
        Seed of the images; the default :data:`INDEX_SEED` is the ``"index"`` split, distinct from
        the training and held-out seeds (see ``shapes_report()``).

    Returns
    -------
    model : ShapesCNN
        Trained weights, in eval mode, on the CPU. Takes RGB in ``[0, 1]`` (no preprocessing).
        Its layers to index are ``conv_layers(model)`` = ``["conv1", ..., "conv5"]``.
    data : ShapesDataset
        ``(image, label)`` items, images float32 ``3x64x64`` in ``[0, 1]``, with ``classes``,
        ``class_parents`` and per-image ``ground_truth``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the available ones).
    FileNotFoundError
        If the weights file is missing from the installation.
    """
    if name not in _AVAILABLE:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    weights = WEIGHTS_DIR / "shapes_cnn.pt"
    if not weights.is_file():
        raise FileNotFoundError(
            f"the shipped weights {weights} are missing; reinstall nsi-widgets or retrain them with "
            f"`python -m nsi_widgets.zoo.train --out {weights}`")
    report = shapes_report()
    model = ShapesCNN(n_classes=len(CLASSES), widths=tuple(report["widths"]))
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    data = make_shapes(n, seed=seed, size=int(report["size"]))
    return model, data


def shapes_report() -> dict:
    """The training report of the shipped ``"shapes"`` weights (settings, held-out accuracy, SHA-256).

    Returns
    -------
    dict
        The contents of ``weights/shapes_cnn.json``.
    """
    return json.loads((WEIGHTS_DIR / "shapes_cnn.json").read_text())
