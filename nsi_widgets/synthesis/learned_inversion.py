"""Learned inversion: a one-shot reconstruction ``G(E(x))`` through a generator's encoder (docs/methods.md section 10).

The survey's other inversion (Dosovitskiy & Brox 2016 train a network to invert features): an encoder
``E`` trained with the generator ``G`` as an autoencoder maps an image to a latent code in one pass,
``G`` maps it back. Where the optimisation-based inversion (:func:`nsi_widgets.invert`, section 9)
asks what one layer of the *model* keeps, this one shows what the generator's latent space keeps, the
space PPGN samples in. The result is an :class:`~nsi_widgets.synthesis.inversion.Inversion`, so
:func:`~nsi_widgets.synthesis.inversion_figure` shows both side by side::

    learned = learned_inversion(nsi.zoo.load_generator("shapes"), images, model=model, layer="conv3")
    inversion_figure({"conv3 (optimised)": nsi.invert(model, "conv3", images), "G(E(x))": learned})
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError
from ..core.layers import resolve_layers
from .inversion import Inversion, _as_batch
from .running import PreparedModel

LAYER_NAME = "G(E(x))"
"""The ``layer`` of a learned inversion's result (its row name in the figure)."""


def learned_inversion(generator, images: Any, *, encoder: nn.Module | None = None, model: nn.Module | None = None,
                      layer=None, preprocess: Callable | None = None, batch_size: int = 256) -> Inversion:
    """One-shot reconstructions ``G(E(x))`` of images (docs/methods.md section 10).

    Parameters
    ----------
    generator : GeneratorPrior or nn.Module
        ``nsi.zoo.load_generator("shapes")`` (its ``generator`` and ``encoder``), or a generator module
        with ``encoder=`` given.
    images : tensor (B, 3, H, W), array, or a sequence of images / (image, label) items
        RGB in ``[0, 1]``.
    encoder : nn.Module, optional
        ``E`` (image -> latent) for a plain generator module.
    model, layer : optional
        With both, ``feature_error`` is the relative error ``||Phi(G(E(x))) - Phi(x)||^2 / ||Phi(x)||^2`` of
        the model's layer (as :func:`nsi_widgets.invert` reports it); otherwise NaN.
    preprocess : callable, optional
        The model's input normalisation (for the feature error only).
    batch_size : int

    Returns
    -------
    Inversion
        ``layer`` = ``"G(E(x))"``, ``.images``, ``.originals``, ``.psnr``, ``.feature_error``; ``history`` is
        empty (no optimisation).
    """
    g = getattr(generator, "generator", generator)
    e = encoder if encoder is not None else getattr(generator, "encoder", None)
    if not isinstance(g, nn.Module) or not isinstance(e, nn.Module):
        raise InputError("learned_inversion needs a generator and an encoder: pass nsi.zoo.load_generator(...) "
                         "or a generator module with encoder=")
    if (model is None) != (layer is None):
        raise InputError("pass both model= and layer= for the feature error, or neither")
    originals = _as_batch(images)
    module = None
    if model is not None:
        try:
            ((layer, module),) = resolve_layers(model, layer).items()
        except ValueError as err:
            raise InputError(str(err)) from None
    out, errors = [], []
    with PreparedModel(g, None, None, "cpu") as gen_run, PreparedModel(e, None, None, "cpu") as enc_run:
        with torch.no_grad():
            for start in range(0, len(originals), batch_size):
                x = originals[start:start + batch_size]
                out.append(gen_run(enc_run(x)))
                if out[-1].shape != x.shape:
                    raise InputError(f"G(E(x)) has shape {tuple(out[-1].shape)}, the images {tuple(x.shape)}")
    reconstructions = torch.cat(out)
    if module is not None:
        with PreparedModel(model, module, preprocess, "cpu") as run, torch.no_grad():
            for start in range(0, len(originals), batch_size):
                phi0 = run(originals[start:start + batch_size]).flatten(1)
                phi = run(reconstructions[start:start + batch_size]).flatten(1)
                errors.append((phi - phi0).pow(2).sum(1) / phi0.pow(2).sum(1).clamp(min=1e-12))
    feature_error = torch.cat(errors).numpy() if errors else np.full(len(originals), np.nan)
    hwc = lambda t: t.permute(0, 2, 3, 1).numpy().astype(np.float32)  # noqa: E731
    recipe = {"method": "learned", "feature_layer": layer, "n_images": len(originals)}
    return Inversion(LAYER_NAME, hwc(reconstructions), hwc(originals), feature_error.astype(np.float32),
                     np.zeros((0, len(originals)), np.float32), recipe)
