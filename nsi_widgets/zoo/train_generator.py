"""Train the shipped generator prior of ``"shapes"`` (docs/zoo.md, "Generator prior") reproducibly on CPU.

Usage::

    python -m nsi_widgets.zoo.train generator --out nsi_widgets/zoo/weights/shapes_generator.pt

Two stages, on freshly generated default images (:func:`~nsi_widgets.zoo.make_shapes`, seed
:data:`GENERATOR_TRAIN_SEED`, never used by the models or the index):

1. encoder ``E`` and generator ``G`` jointly as an autoencoder: the loss is the pixel mean squared
   error of ``x_hat = G(E(x) + noise)`` plus
   ``feature_weight`` times the relative squared error of the shipped ShapesCNN ``C``'s (frozen)
   ``conv3`` maps (a perceptual term), ``energy_weight`` times the squared difference of the local
   high-frequency energy (:func:`grain_energy`: how grainy each 8x8 cell is, blind to where each grain
   lies, which no decoder can know; it teaches ``G`` the amplitude of its fixed grain pattern),
   ``pose_weight`` times the squared error of the latent pose (:data:`~nsi_widgets.zoo.generator.POSE_DIMS`)
   against the ground truth (:func:`pose_targets`), ``shape_weight`` times the cross entropy of the shape
   logits (:data:`~nsi_widgets.zoo.generator.SHAPE_DIMS`) with the true shape kind plus the squared error
   of the rotation dimensions, and a small penalty on ``mean(h^2)`` of the other dimensions. The
   shipped generator (``generator="conv"``, :class:`~nsi_widgets.zoo.generator.ShapesGenerator`) uses
   the pixel and ``conv3`` terms only; the pose, shape and energy terms are for
   ``generator="layered"`` (:class:`~nsi_widgets.zoo.generator.LayeredShapesGenerator`, tried, not
   shipped: docs/zoo.md "Generator prior"), ``texture_weight`` (the per-channel spatial means of ``C``'s
   ``conv1`` and ``conv2`` maps) and ``class_weight`` (the cross entropy of ``C(x_hat)`` with the label)
   were tried too (0 by default). The latent noise (``latent_noise``; none on the centre when the pose
   is trained) makes ``G`` smooth around the codes of real images, where PPGN walks;
   ``generator="structured"`` (:class:`~nsi_widgets.zoo.generator.StructuredShapesGenerator`, shipped as
   ``load_generator("shapes-structured")``) replaces this stage by :mod:`nsi_widgets.zoo.train_structured` (``G`` fitted on the images'
   true factors, then ``E`` taught them, with ``recon_weight`` times the pixel error of ``G(E(x))``);
2. the latent denoiser ``R`` on the codes ``h = E(x)`` of the training images: ``R(h + n) ~ h`` with
   ``n ~ N(0, (prior_noise * std_d)^2)`` per dimension ``d``.

Writes one float32 state dict (the three networks and the latents' per-dimension training range) and
a JSON report beside it with every setting, the held-out PSNR of ``G(E(x))`` and the seconds taken.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import generator as gen
from .render import BACKGROUND_KINDS, ROTATIONAL_SYMMETRY, SHAPE_KINDS
from .shapes import COLORS, make_shapes

GENERATOR_TRAIN_SEED = 5
"""Seed of the generator's training images (the models used 1 and 2, the index 3, concepts 4)."""
GENERATOR_HELD_OUT_SEED = 6
"""Seed of the held-out images of the reported PSNR."""

GENERATOR_DEFAULTS: dict = {
    "generator": "conv",
    "n_train": 16000,
    "n_held_out": 1000,
    "epochs": 6,
    "batch_size": 32,
    "lr": 2e-3,
    "feature_weight": 0.01,
    "texture_weight": 0.0,
    "energy_weight": 0.0,
    "pose_weight": 0.0,
    "shape_weight": 0.0,
    "class_weight": 0.0,
    "recon_weight": 0.0,
    "generator_epochs": 2,
    "generator_lr": 0.05,
    "latent_weight": 1e-4,
    "latent_noise": 0.05,
    "prior_steps": 3000,
    "prior_lr": 2e-3,
    "prior_noise": 0.5,
    "seed": 0,
    "train_seed": GENERATOR_TRAIN_SEED,
    "held_out_seed": GENERATOR_HELD_OUT_SEED,
    "threads": 1,
    "size": 64,
    "latent_dim": gen.LATENT_DIM,
}


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image peak signal-to-noise ratio in dB, ``10 log10(1 / MSE)`` (peak 1); ``(B,)``."""
    mse = (images.double() - reference.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-12))


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``E(x)`` for a stack of images, in batches."""
    return torch.cat([encoder(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def reconstruct(generator: nn.Module, encoder: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``G(E(x))`` for a stack of images, in batches."""
    return torch.cat([generator(encoder(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])


def _cnn_outputs(cnn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ShapesCNN's ``conv1``, ``conv2``, ``conv3`` maps and its logits (the perceptual terms' inputs)."""
    f1 = cnn.conv1(x)
    f2 = cnn.conv2(cnn.pool1(f1))
    f3 = cnn.conv3(cnn.pool2(f2))
    f5 = cnn.conv5(cnn.pool4(cnn.conv4(cnn.pool3(f3))))
    return f1, f2, f3, cnn.fc(torch.flatten(cnn.gap(f5), 1))


def _relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).sum() / b.pow(2).sum().clamp(min=1e-12)


def attributes(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colour, shape and texture ids of class labels (label = (shape * 10 + colour) * 4 + texture)."""
    texture = labels % len(BACKGROUND_KINDS)
    rest = labels // len(BACKGROUND_KINDS)
    return rest % len(COLORS), rest // len(COLORS), texture


def grain_energy(x: torch.Tensor, block: int = 8) -> torch.Tensor:
    """Local high-frequency energy ``(B, 1, H/block, W/block)``: the RMS over ``block x block`` cells of
    the luminance minus its 3x3 mean (the grain's strength, blind to where each grain lies)."""
    lum = x.mean(1, keepdim=True)
    high = lum - nn.functional.avg_pool2d(nn.functional.pad(lum, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return (nn.functional.avg_pool2d(high.pow(2), block) + 1e-4).sqrt()


def pose_targets(ground_truth: dict, size: int) -> torch.Tensor:
    """``(n, 5)``: the latent pose of :data:`~nsi_widgets.zoo.generator.POSE_DIMS` (centre ``(y, x)`` in
    ``[-1, 1]``, ``(radius / size - 0.21) / 0.05``) and of :data:`~nsi_widgets.zoo.generator.ROTATION_DIMS`
    from the images' ground truth."""
    centre = torch.as_tensor(np.asarray(ground_truth["center"], np.float32)) / size * 2 - 1
    radius = torch.as_tensor(np.asarray(ground_truth["radius"], np.float32)) / size
    kinds = np.asarray(ground_truth["shape_id"])
    symmetry = np.array([ROTATIONAL_SYMMETRY[k] for k in SHAPE_KINDS])[kinds]
    angle = 2 * np.pi * np.asarray(ground_truth["rotation"], np.float64) / symmetry
    turns = (symmetry < 360)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return torch.cat([centre, ((radius - 0.21) / 0.05)[:, None], torch.as_tensor(turns, dtype=torch.float32)], 1)


def _loss(generator, encoder, cnn, x, y, noise, s: dict, pose=None) -> torch.Tensor:
    """Pixel MSE + perceptual terms of the module docstring + latent penalty, for one batch."""
    h = encoder(x)
    x_hat = generator(h + noise)
    free = gen.ROTATION_DIMS[1] if s["shape_weight"] else gen.POSE_DIMS if s["pose_weight"] else 0
    loss = (x_hat - x).pow(2).mean() + s["latent_weight"] * h[:, free:].pow(2).mean()
    if s["pose_weight"]:
        loss = loss + s["pose_weight"] * (h[:, :gen.POSE_DIMS] - pose[:, :gen.POSE_DIMS]).pow(2).mean()
    if s["shape_weight"]:
        rotation = h[:, gen.ROTATION_DIMS[0]:gen.ROTATION_DIMS[1]]
        loss = loss + s["shape_weight"] * ((rotation - pose[:, gen.POSE_DIMS:]).pow(2).mean()
                                           + nn.functional.cross_entropy(h[:, gen.SHAPE_DIMS[0]:gen.SHAPE_DIMS[1]],
                                                                         attributes(y)[1]))
    if s["energy_weight"]:
        loss = loss + s["energy_weight"] * (grain_energy(x_hat) - grain_energy(x)).pow(2).mean()
    if s["feature_weight"] or s["texture_weight"] or s["class_weight"]:
        with torch.no_grad():
            t1, t2, t3, _ = _cnn_outputs(cnn, x)
        f1, f2, f3, logits = _cnn_outputs(cnn, x_hat)
        loss = loss + s["feature_weight"] * _relative(f3, t3)
        # texture: per-image, per-channel spatial means of the rectified maps (blind to the noise's phase)
        loss = loss + s["texture_weight"] * (_relative(f1.mean((2, 3)), t1.mean((2, 3)))
                                             + _relative(f2.mean((2, 3)), t2.mean((2, 3))))
        loss = loss + s["class_weight"] * nn.functional.cross_entropy(logits, y)
    return loss


def _train_autoencoder(generator, encoder, cnn, x_train, y_train, pose_train, s: dict, log, check=None) -> None:
    params = list(generator.parameters()) + list(encoder.parameters())
    optimiser = torch.optim.Adam(params, lr=s["lr"])
    steps_per_epoch = math.ceil(len(x_train) / s["batch_size"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=s["lr"], total_steps=s["epochs"] * steps_per_epoch,
                                                   pct_start=0.2)
    order_rng = torch.Generator().manual_seed(s["seed"])
    noise_rng = torch.Generator().manual_seed(s["seed"] + 1)
    start = time.perf_counter()
    for epoch in range(s["epochs"]):
        generator.train()
        encoder.train()
        order = torch.randperm(len(x_train), generator=order_rng)
        total = 0.0
        for step in range(steps_per_epoch):
            batch = order[step * s["batch_size"]:(step + 1) * s["batch_size"]]
            noise = torch.randn((len(batch), s["latent_dim"]), generator=noise_rng) * s["latent_noise"]
            if s["pose_weight"]:
                noise[:, :2] = 0  # none on the centre: a shift of the sprite is not a smooth change of the image
            loss = _loss(generator, encoder, cnn, x_train[batch], y_train[batch], noise, s, pose_train[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        if log is not None:
            extra = check() if check is not None else ""
            log(f"autoencoder epoch {epoch + 1}/{s['epochs']}: loss {total / len(x_train):.5f}{extra}, "
                f"{time.perf_counter() - start:.0f} s")
    generator.eval()
    encoder.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((model(images).argmax(1) == labels).float().mean())


def _train_prior(prior, latents: torch.Tensor, s: dict, log) -> None:
    std = latents.std(0)
    optimiser = torch.optim.Adam(prior.parameters(), lr=s["prior_lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=s["prior_steps"])
    rng = torch.Generator().manual_seed(s["seed"] + 2)
    prior.train()
    for step in range(s["prior_steps"]):
        h = latents[torch.randint(len(latents), (256,), generator=rng)]
        noisy = h + torch.randn(h.shape, generator=rng) * (s["prior_noise"] * std)
        loss = (prior(noisy) - h).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if log is not None and (step + 1) % 1000 == 0:
            log(f"prior step {step + 1}/{s['prior_steps']}: loss {float(loss.detach()):.5f}")
    prior.eval()


def _train_structured(generator, encoder, x_train, s: dict, log, check) -> None:
    """The structured generator's two stages (:mod:`nsi_widgets.zoo.train_structured`) on the training images."""
    from .shapes import generative_factors
    from .train_structured import fit_encoder, fit_generator, structured_targets

    factors = generative_factors(s["n_train"], seed=s["train_seed"], size=s["size"])
    targets, shown = structured_targets(factors, s["size"])
    fit_generator(generator, x_train, targets, s, log)
    fit_encoder(encoder, generator, x_train, targets, shown, s, log, check)


def train_generator(log: Callable[[str], None] | None = print, monitor: nn.Module | None = None,
                    **settings) -> tuple[gen.GeneratorPrior, dict]:
    """Train ``G``, ``E`` and ``R`` on default images (module docstring); return them and a report.

    Parameters
    ----------
    log : callable or None
        Receives progress lines.
    monitor : nn.Module, optional
        A second classifier whose accuracy on ``G(E(x))`` of held-out images is logged after each epoch
        (a measurement only: it takes no part in the training).
    **settings
        Any key of :data:`GENERATOR_DEFAULTS` (numbers of images, epochs, learning rates, loss
        weights, noise levels, seeds, threads, image size, latent size).

    Returns
    -------
    prior : GeneratorPrior
        The trained networks in eval mode and the latents' training range.
    report : dict
        Every setting, ``held_out_psnr`` (mean over held-out images of the per-image PSNR of
        ``G(E(x))``), ``train_psnr``, ``prior_denoising`` and the seconds taken.
    """
    unknown = set(settings) - set(GENERATOR_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(GENERATOR_DEFAULTS)}")
    if settings.get("generator", "conv") not in gen.GENERATORS:
        raise ValueError(f"generator must be one of {sorted(gen.GENERATORS)}, got {settings['generator']!r}")
    s = dict(GENERATOR_DEFAULTS, **settings)
    if s["train_seed"] == s["held_out_seed"]:
        raise ValueError("train_seed and held_out_seed must differ: the held-out images must be new")
    from . import load_model

    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(s["threads"])
    torch.use_deterministic_algorithms(True)
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        start = time.perf_counter()
        train_data = make_shapes(s["n_train"], seed=s["train_seed"], size=s["size"])
        held_data = make_shapes(s["n_held_out"], seed=s["held_out_seed"], size=s["size"])
        x_train, y_train = train_data.images(), torch.from_numpy(train_data.labels)
        x_held, y_held = held_data.images(), torch.from_numpy(held_data.labels)
        cnn = load_model("cnn")
        for p in cnn.parameters():
            p.requires_grad_(False)
        if s["generator"] == "structured":
            report = dict(s, encoder_widths=list(gen.STRUCTURED_ENCODER_WIDTHS), encoder_coords=True,
                          template_size=gen.TEMPLATE_SIZE, hard_choice=True, choice_temperature=gen.CHOICE_TEMPERATURE,
                          prior_hidden=gen.PRIOR_HIDDEN)
        else:
            widths = gen.GENERATOR_WIDTHS if s["generator"] == "conv" else gen.LAYERED_WIDTHS
            report = dict(s, generator_widths=list(widths), encoder_widths=list(gen.ENCODER_WIDTHS),
                          prior_hidden=gen.PRIOR_HIDDEN)
        torch.manual_seed(s["seed"])
        generator, encoder, prior = gen.build(report)
        # channels_last makes the convolutions about 1.5-2x faster on CPU (the same numbers up to rounding)
        for module in (generator, encoder, cnn):
            module.to(memory_format=torch.channels_last)
        def check() -> str:
            generator.eval()
            encoder.eval()
            rec = reconstruct(generator, encoder, x_held[:500])
            if monitor is not None:
                return (f", held-out PSNR {float(psnr(rec, x_held[:500]).mean()):.2f} dB, cnn/resnet accuracy on G(E(x)) "
                        f"{_accuracy(cnn, rec, y_held[:500]):.3f}/{_accuracy(monitor, rec, y_held[:500]):.3f}")
            return (f", held-out PSNR {float(psnr(rec, x_held[:500]).mean()):.2f} dB, cnn accuracy on G(E(x)) "
                    f"{float((cnn(rec).argmax(1) == y_held[:500]).float().mean()):.3f}")

        if s["generator"] == "structured":
            _train_structured(generator, encoder, x_train.contiguous(memory_format=torch.channels_last), s, log, check)
        else:
            _train_autoencoder(generator, encoder, cnn, x_train.contiguous(memory_format=torch.channels_last), y_train,
                               pose_targets(train_data.ground_truth, s["size"]), s, log, check)
        for module in (generator, encoder, cnn):
            module.to(memory_format=torch.contiguous_format)
        autoencoder_seconds = time.perf_counter() - start
        latents = encode(encoder, x_train)
        _train_prior(prior, latents, s, log)
        held_latents = encode(encoder, x_held)
        with torch.no_grad():
            noisy = held_latents + torch.randn(held_latents.shape, generator=torch.Generator().manual_seed(9)) * (
                s["prior_noise"] * latents.std(0))
            before = (noisy - held_latents).pow(2).sum(1).mean()
            after = (prior(noisy) - held_latents).pow(2).sum(1).mean()
        low, high = latents.min(0).values, latents.max(0).values
        if s["generator"] == "structured":
            low, high = gen.clip_to_factor_ranges(low, high)
        result = gen.GeneratorPrior(generator, encoder, prior, low, high, latents.mean(0), latents.std(0), report)
        report.update(
            held_out_psnr=round(float(psnr(reconstruct(generator, encoder, x_held), x_held).mean()), 3),
            train_psnr=round(float(psnr(reconstruct(generator, encoder, x_train[:2000]), x_train[:2000]).mean()), 3),
            held_out_cnn_accuracy=round(_accuracy(cnn, reconstruct(generator, encoder, x_held), y_held), 4),
            held_out_resnet_accuracy=round(_accuracy(load_model("resnet"), reconstruct(generator, encoder, x_held),
                                                     y_held), 4),
            prior_denoising=round(float(after / before), 4),
            latent_std=round(float(latents.std(0).mean()), 4),
            autoencoder_seconds=round(autoencoder_seconds, 1), seconds=round(time.perf_counter() - start, 1),
            torch_version=torch.__version__, numpy_version=np.__version__)
        result.report = report
        return result, report
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = old_fill


def save_generator(result: gen.GeneratorPrior, out: str | Path) -> Path:
    """Write the state dict to ``out`` and the report (plus a SHA-256) beside it as JSON; return the JSON path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(gen.state_dict(result), out)
    report = dict(result.report, weights_file=out.name, sha256=hashlib.sha256(out.read_bytes()).hexdigest())
    meta = out.with_suffix(".json")
    meta.write_text(json.dumps(report, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> dict:
    """``python -m nsi_widgets.zoo.train generator [--out FILE] [--SETTING VALUE ...]``."""
    parser = argparse.ArgumentParser(prog="python -m nsi_widgets.zoo.train generator",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help="the state dict (.pt) to write; a .json report goes beside it")
    for key, value in GENERATOR_DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    result, report = train_generator(**{key: getattr(args, key) for key in GENERATOR_DEFAULTS})
    if args.out:
        print(f"wrote {args.out} and {save_generator(result, args.out)}")
    print(json.dumps(report, indent=2))
    return report
