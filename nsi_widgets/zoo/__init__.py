"""Models and data to index: the embedded default, and loaders for your own.

The embedded default, ``"shapes"``, is a labelled synthetic image set (:func:`make_shapes`: 240
classes of coloured shapes) with two small trained CNNs (:class:`~.models.ShapesCNN`, the default,
and :class:`~.models.ShapesResNet`) and exact concept masks (:func:`load_concepts`): nothing to
download, ready in a few seconds.

>>> import nsi_widgets as nsi
>>> model, data = nsi.zoo.load("shapes")                    # doctest: +SKIP
>>> resnet, data = nsi.zoo.load("shapes", model="resnet")   # doctest: +SKIP
>>> idx = nsi.index_neurons(model, data, layers=nsi.zoo.conv_layers(model))  # doctest: +SKIP
>>> concepts = nsi.zoo.load_concepts("shapes")              # doctest: +SKIP
>>> G = nsi.zoo.load_generator("shapes")                    # doctest: +SKIP  (generator, encoder, prior)

Your own material: :class:`ImageFolderDataset` (one subfolder per class), :func:`load_factory`
(``"module:function"`` or ``"file.py:function"`` returning a model), and, when torchvision is
installed, :func:`torchvision_model` / :func:`torchvision_dataset` (local files only).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core.errors import InputError
from .concepts import CONCEPT_CATEGORIES, CONCEPTS, ConceptDataset
from .external import FactoryError, FactoryTypeError, load_factory, torchvision_dataset, torchvision_model
from .generator import GeneratorPrior, LatentDenoiser, ShapesEncoder, ShapesGenerator
from .folder import IMAGE_EXTENSIONS, BadImageError, ImageFolderDataset, ImageFolderError
from .models import ARCHITECTURES, CONV_LAYERS, RESNET_LAYERS, ShapesCNN, ShapesResNet, conv_layers
from .render import BACKGROUND_KINDS, SHAPE_KINDS
from .shapes import (CLASS_HIERARCHIES, CLASS_PARENTS, CLASSES, COLOR_FAMILIES, COLOR_PARENTS, COLORS,
                     SHAPE_FAMILIES, TEXTURE_FAMILIES, TEXTURE_PARENTS, ShapesDataset, class_label,
                     make_shapes)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Folder of the shipped weights (``shapes_<model>.pt``) and their training reports (``.json``)."""

INDEX_SEED = 3
"""Seed of the default ``"index"`` split returned by :func:`load` (training used 1, held-out 2)."""
INDEX_SIZE = 6000
"""Number of images in the default ``"index"`` split (50 per class)."""
CONCEPT_SEED = 4
"""Seed of the default concept split returned by :func:`load_concepts`."""
CONCEPT_SIZE = 2000
"""Number of images in the default concept split."""

MODELS: dict[str, str] = {
    "cnn": "ShapesCNN: VGG-like, 5 conv blocks conv1..conv5 with max pooling (113k parameters)",
    "resnet": "ShapesResNet: a stem and 4 residual blocks with batch norm, stem and block1..block4 (119k parameters)",
}
"""The trained models of ``"shapes"``, by the name :func:`load` takes as ``model=``."""

_AVAILABLE = {
    "shapes": "240 classes of coloured shapes (colour x shape x background texture), 64x64; 6,000 "
              "labelled images (seed 3, never used in training); models 'cnn' (default) and 'resnet'",
}

__all__ = [
    "load", "load_concepts", "available", "make_shapes", "ShapesDataset", "ConceptDataset", "ShapesCNN",
    "ShapesResNet", "conv_layers", "CONV_LAYERS", "RESNET_LAYERS", "MODELS", "CLASSES", "CLASS_PARENTS",
    "COLOR_PARENTS", "CLASS_HIERARCHIES", "SHAPE_FAMILIES", "COLOR_FAMILIES", "COLORS", "SHAPE_KINDS",
    "TEXTURE_PARENTS", "TEXTURE_FAMILIES", "BACKGROUND_KINDS", "CONCEPTS", "CONCEPT_CATEGORIES", "class_label",
    "ImageFolderDataset", "IMAGE_EXTENSIONS", "ImageFolderError", "BadImageError", "load_factory", "FactoryError",
    "FactoryTypeError", "torchvision_model", "torchvision_dataset", "shapes_report", "load_model", "WEIGHTS_DIR",
    "INDEX_SEED", "INDEX_SIZE", "CONCEPT_SEED", "CONCEPT_SIZE", "load_generator", "generator_report",
    "GeneratorPrior", "ShapesGenerator", "ShapesEncoder", "LatentDenoiser",
]


def available() -> list[str]:
    """Names accepted by :func:`load`.

    Returns
    -------
    list of str
    """
    return list(_AVAILABLE)


def _check_name(name: str) -> None:
    if name not in _AVAILABLE:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(available())}")


def load(name: str = "shapes", *, model: str = "cnn", n: int = INDEX_SIZE,
         seed: int = INDEX_SEED) -> tuple[torch.nn.Module, torch.utils.data.Dataset]:
    """Load an embedded model and the labelled data set to index it on.

    Parameters
    ----------
    name : str
        One of :func:`available` (``"shapes"``).
    model : {"cnn", "resnet"}
        Which trained model (:data:`MODELS`): ``"cnn"`` (:class:`ShapesCNN`, the default) or
        ``"resnet"`` (:class:`ShapesResNet`).
    n : int
        Number of images to generate (default 6,000: 50 per class).
    seed : int
        Seed of the images; the default :data:`INDEX_SEED` is the ``"index"`` split, distinct from
        the training and held-out seeds (see ``shapes_report()``).

    Returns
    -------
    model : ShapesCNN or ShapesResNet
        Trained weights, in eval mode, on the CPU. Takes RGB in ``[0, 1]`` (no preprocessing).
        Its layers to index are ``conv_layers(model)``.
    data : ShapesDataset
        ``(image, label)`` items, images float32 ``3x64x64`` in ``[0, 1]``, with ``classes``,
        ``class_parents``, ``class_hierarchies`` and per-image ``ground_truth``.

    Raises
    ------
    ValueError
        For an unknown name or model (the message lists the available ones).
    FileNotFoundError
        If the weights file is missing from the installation.
    """
    _check_name(name)
    network = load_model(model)
    data = make_shapes(n, seed=seed, size=int(shapes_report(model)["size"]))
    return network, data


def load_model(model: str = "cnn") -> torch.nn.Module:
    """One of the trained ``"shapes"`` models (:data:`MODELS`), in eval mode on the CPU.

    The weights are a float32 state dict loaded with ``torch.load(..., weights_only=True)``.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} of 'shapes'; available: {', '.join(MODELS)}")
    weights = _shipped(f"shapes_{model}.pt", f"--arch {model}")
    report = shapes_report(model)
    network = ARCHITECTURES[model](n_classes=len(CLASSES), widths=tuple(report["widths"]))
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return network.eval()


def _shipped(filename: str, train_arguments: str) -> Path:
    """The path of a shipped weights file; FileNotFoundError naming the command that retrains it."""
    weights = WEIGHTS_DIR / filename
    if not weights.is_file():
        raise FileNotFoundError(
            f"the shipped weights {weights} are missing; reinstall nsi-widgets or retrain them with "
            f"`python -m nsi_widgets.zoo.train {train_arguments} --out {weights}`")
    return weights


def load_concepts(name: str = "shapes", *, n: int = CONCEPT_SIZE, seed: int = CONCEPT_SEED) -> ConceptDataset:
    """Images with exact concept masks (shape kinds, colours, background textures, background).

    Parameters
    ----------
    name : str
        One of :func:`available` (``"shapes"``).
    n : int
        Number of images (default 2,000).
    seed : int
        Seed of the images (default :data:`CONCEPT_SEED`, distinct from the training, held-out and
        index splits; pass other seeds for separate training and test sets of concept probes).

    Returns
    -------
    ConceptDataset
        Items ``(image, masks)``: image float32 ``3xHxW``, masks bool ``(K, H, W)``, one per name of
        ``.concepts`` (K = 21), with ``.concept_categories``. The inside rule and how the masks of a
        category partition the pixels: docs/zoo.md, "Concept masks".
    """
    _check_name(name)
    return ConceptDataset(make_shapes(n, seed=seed, size=int(shapes_report("cnn")["size"]), masks=True))


def shapes_report(model: str = "cnn") -> dict:
    """The training report of a shipped ``"shapes"`` model (settings, held-out accuracy, SHA-256).

    Returns
    -------
    dict
        The contents of ``weights/shapes_<model>.json``.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r} of 'shapes'; available: {', '.join(MODELS)}")
    return json.loads((WEIGHTS_DIR / f"shapes_{model}.json").read_text())


GENERATORS: dict[str, str] = {
    "shapes": "ShapesGenerator G (latent 64 -> 64x64 RGB), ShapesEncoder E (image -> latent) and LatentDenoiser R, "
              "trained on the default's images (docs/zoo.md, 'Generator prior'); for unit targets",
    "shapes-structured": "StructuredShapesGenerator G (the default's generative factors, 64 numbers -> 64x64 RGB; "
                         "every output an image of the default's kind), its encoder E and LatentDenoiser R "
                         "(docs/zoo.md, 'A structured generator'); for class targets",
}
"""The shipped generator priors, by the name :func:`load_generator` takes."""
_GENERATOR_TRAINING = {
    "shapes": "generator",
    "shapes-structured": "generator --generator structured --epochs 12 --recon-weight 10 --energy-weight 100",
}
"""The ``python -m nsi_widgets.zoo.train`` arguments that made each shipped generator (docs/zoo.md)."""


def generator_report(name: str = "shapes") -> dict:
    """The training report of a shipped generator prior (settings, held-out PSNR, seconds, SHA-256)."""
    if name not in GENERATORS:
        raise InputError(f"unknown generator {name!r}; available: {', '.join(GENERATORS)}")
    return json.loads((WEIGHTS_DIR / f"{name}_generator.json").read_text())


def load_generator(name: str = "shapes") -> GeneratorPrior:
    """The shipped generator prior of a data set, for :func:`nsi_widgets.ppgn` (docs/methods.md section 10).

    Parameters
    ----------
    name : str
        One of :data:`GENERATORS`: ``"shapes"`` (a convolutional generator; its samples reach past the
        best dataset image, the choice for unit targets) or ``"shapes-structured"`` (every output an image
        of the default's kind, whose class samples a second model recognises; the choice for class
        targets, with ``restarts``: docs/methods.md section 10b).

    Returns
    -------
    GeneratorPrior
        ``.generator`` (``G``: latent ``(B, 64)`` -> RGB ``(B, 3, 64, 64)`` in ``[0, 1]``), ``.encoder``
        (``E``), ``.prior`` (``R``, the latent denoiser), all in eval mode on the CPU, with the training
        latents' range ``.low``/``.high``, ``.mean``/``.std`` and the training ``.report``.

    Raises
    ------
    InputError
        For an unknown name (a ValueError; the message lists the available ones).
    FileNotFoundError
        If the weights file is missing from the installation.
    """
    from .generator import from_state_dict

    if name not in GENERATORS:
        raise InputError(f"unknown generator {name!r}; available: {', '.join(GENERATORS)}")
    weights = _shipped(f"{name}_generator.pt", _GENERATOR_TRAINING[name])
    return from_state_dict(torch.load(weights, map_location="cpu", weights_only=True), generator_report(name))
