"""Training stages of the structured generator prior (``generator="structured"`` of
:func:`nsi_widgets.zoo.train_generator.train_generator`; docs/zoo.md "Generator prior").

The latent of :class:`~nsi_widgets.zoo.generator.StructuredShapesGenerator` holds the default's
generative factors (:data:`~nsi_widgets.zoo.generator.STRUCTURED_LAYOUT`), all known for the training
images (:func:`~nsi_widgets.zoo.shapes.generative_factors`), so

1. ``G``'s learned parts (the sprite templates, the texture strengths) are fitted on the true latents
   of the training images: pixel mean squared error of ``G(h_true)`` plus ``energy_weight`` times the
   squared difference of the local grain energy (:func:`~nsi_widgets.zoo.train_generator.grain_energy`:
   the mean squared error alone would fade the fixed grain pattern, which cannot match an image's grain);
2. ``E`` is trained to fill the latent with the true factors (squared error per block, weighted by
   :data:`BLOCK_WEIGHTS`; a factor the image does not show, such as the clouds field of a flat background,
   is pulled to 0 with weight :data:`UNSEEN_WEIGHT`, the texture's amplitude excepted) plus
   ``recon_weight`` times the pixel error of ``G(E(x))`` (``G`` frozen), which refines what the image
   shows exactly (the pose).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import generator as gen
from .render import BACKGROUND_KINDS, ROTATIONAL_SYMMETRY, SHAPE_KINDS
from .shapes import _luma
from .train_generator import grain_energy, pose_targets

BLOCK_WEIGHTS = {"shape": 1.0, "pose": 30.0, "rotation": 1.0, "colour": 10.0, "background": 10.0, "texture": 1.0,
                 "amplitude": 3.0, "direction": 1.0, "clouds": 1.0, "spare": 1.0}
"""Weights of the encoder's squared error per latent block (the pose must be right to a fraction of a pixel)."""
UNSEEN_WEIGHT = 0.1
"""Weight pulling to 0 a factor an image does not show (rotation of a round shape, texture of a flat one...)."""


def structured_targets(factors: dict, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 64)`` true latents of images from their factors (each block divided by its
    :data:`~nsi_widgets.zoo.generator.LATENT_SCALES`), and ``(n, 64)`` booleans: where the image shows the
    factor (elsewhere the target is 0)."""
    n = len(factors["shape_id"])
    kinds, textures = np.asarray(factors["shape_id"]), np.asarray(factors["background_id"])
    pose = pose_targets({"center": np.stack([factors["cy"], factors["cx"]], 1), "radius": factors["radius"],
                         "shape_id": kinds, "rotation": factors["rotation"]}, size).numpy()
    round_shape = np.array([ROTATIONAL_SYMMETRY[k] >= 360 for k in SHAPE_KINDS])[kinds]
    direction = np.asarray(factors["texture_angle"], np.float64)
    blocks = {
        "shape": 2 * np.eye(len(SHAPE_KINDS))[kinds] - 1,
        "pose": pose[:, :3],
        "rotation": pose[:, 3:],                               # 0 for the round shapes (not shown)
        "colour": factors["color_rgb"], "background": _level_and_tint(np.asarray(factors["background_rgb"])),
        "texture": 2 * np.eye(len(BACKGROUND_KINDS))[textures] - 1,
        "amplitude": np.asarray(factors["texture_amp"])[:, None],
        "direction": np.stack([np.cos(direction), np.sin(direction)], 1),
        "clouds": np.asarray(factors["clouds"]).reshape(n, -1),
        "spare": np.zeros((n, 4)),
    }
    # the amplitude is kept for flat backgrounds too (E learns its mean there): at amplitude 0 no texture would
    # show, and the texture logits would get no gradient in PPGN
    seen = {"rotation": ~round_shape,
            "direction": textures == BACKGROUND_KINDS.index("gradient"),
            "clouds": textures == BACKGROUND_KINDS.index("clouds")}
    scales = gen.LATENT_SCALES
    target = torch.zeros((n, gen.LATENT_DIM))
    shown = torch.ones((n, gen.LATENT_DIM), dtype=torch.bool)
    for name, (start, stop) in gen.STRUCTURED_LAYOUT.items():
        mask = np.asarray(seen.get(name, np.ones(n, bool)))
        target[:, start:stop] = torch.as_tensor(np.where(mask[:, None], blocks[name], 0.0) / scales[name],
                                                dtype=torch.float32)
        shown[:, start:stop] = torch.as_tensor(mask)[:, None]
    return target, shown


def _level_and_tint(rgb: np.ndarray) -> np.ndarray:
    """``(n, 3)``: a background's grey level (its luminance) and its tint's coordinates in :func:`~nsi_widgets.zoo.
    generator.tint_basis` (the renderer's background is the level plus a tint of luminance 0)."""
    level = _luma(rgb)
    return np.concatenate([level[:, None], (rgb - level[:, None]) @ gen.tint_basis().numpy().T.astype(np.float64)], 1)


def _block_weights(shown: torch.Tensor) -> torch.Tensor:
    """The squared error's weights per image and dimension, in factor units (``scale**2`` per latent unit)."""
    weights = torch.empty(gen.LATENT_DIM)
    for name, (start, stop) in gen.STRUCTURED_LAYOUT.items():
        weights[start:stop] = BLOCK_WEIGHTS[name] * gen.LATENT_SCALES[name] ** 2
    return torch.where(shown, weights, weights * UNSEEN_WEIGHT)


def _batches(n: int, batch_size: int, epochs: int, rng: torch.Generator):
    for _ in range(epochs):
        order = torch.randperm(n, generator=rng)
        for step in range(math.ceil(n / batch_size)):
            yield order[step * batch_size:(step + 1) * batch_size]


def fit_generator(generator: gen.StructuredShapesGenerator, x: torch.Tensor, targets: torch.Tensor, s: dict,
                  log: Callable[[str], None] | None) -> None:
    """Stage 1: ``G``'s templates and texture strengths on the true latents (module docstring)."""
    optimiser = torch.optim.Adam(generator.parameters(), lr=s["generator_lr"])
    total = s["generator_epochs"] * math.ceil(len(x) / s["batch_size"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=s["generator_lr"], total_steps=total,
                                                   pct_start=0.1)
    generator.train()
    start = time.perf_counter()
    order = torch.Generator().manual_seed(s["seed"])
    for step, batch in enumerate(_batches(len(x), s["batch_size"], s["generator_epochs"], order)):
        x_hat = generator(targets[batch])
        loss = (x_hat - x[batch]).pow(2).mean()
        loss = loss + s["energy_weight"] * (grain_energy(x_hat) - grain_energy(x[batch])).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if log is not None and (step + 1) % 200 == 0:
            log(f"generator step {step + 1}/{total}: loss {float(loss.detach()):.5f}, texture strengths "
                f"{[round(v, 4) for v in generator.texture_strength.tolist()]}, {time.perf_counter() - start:.0f} s")
    generator.eval()
    for p in generator.parameters():
        p.requires_grad_(False)


def fit_encoder(encoder: nn.Module, generator: nn.Module, x: torch.Tensor, targets: torch.Tensor, shown: torch.Tensor,
                s: dict, log: Callable[[str], None] | None, check: Callable[[], str] | None = None) -> None:
    """Stage 2: ``E`` on the true factors plus the pixel error of ``G(E(x))`` (module docstring)."""
    optimiser = torch.optim.Adam(encoder.parameters(), lr=s["lr"])
    steps_per_epoch = math.ceil(len(x) / s["batch_size"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=s["lr"], total_steps=s["epochs"] * steps_per_epoch,
                                                   pct_start=0.2)
    weights = _block_weights(shown)
    encoder.train()
    start, total = time.perf_counter(), 0.0
    order = torch.Generator().manual_seed(s["seed"] + 1)
    for step, batch in enumerate(_batches(len(x), s["batch_size"], s["epochs"], order)):
        h = encoder(x[batch])
        loss = (weights[batch] * (h - targets[batch]).pow(2)).mean()
        if s["recon_weight"]:
            loss = loss + s["recon_weight"] * (generator(h) - x[batch]).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        total += float(loss.detach()) * len(batch)
        if log is not None and (step + 1) % steps_per_epoch == 0:
            encoder.eval()
            extra = check() if check is not None else ""
            encoder.train()
            log(f"encoder epoch {(step + 1) // steps_per_epoch}/{s['epochs']}: loss {total / len(x):.5f}{extra}, "
                f"{time.perf_counter() - start:.0f} s")
            total = 0.0
    encoder.eval()
