"""Train the shipped generator prior of ``"shapes"`` (docs/zoo.md, "Generator prior") reproducibly on CPU.

Usage::

    python -m nsi_widgets.zoo.train generator --out nsi_widgets/zoo/weights/shapes_generator.pt

Two stages, on freshly generated default images (:func:`~nsi_widgets.zoo.make_shapes`, seed
:data:`GENERATOR_TRAIN_SEED`, never used by the models or the index):

1. encoder ``E`` and generator ``G`` jointly as an autoencoder: the loss is the pixel mean squared
   error of ``G(E(x) + noise)`` plus a small perceptual term (the relative squared error of the
   shipped ShapesCNN's ``conv3`` features) and a small penalty on ``mean(h^2)``; the latent noise
   (``latent_noise``) makes ``G`` smooth around the codes of real images, where PPGN walks;
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
from .shapes import make_shapes

GENERATOR_TRAIN_SEED = 5
"""Seed of the generator's training images (the models used 1 and 2, the index 3, concepts 4)."""
GENERATOR_HELD_OUT_SEED = 6
"""Seed of the held-out images of the reported PSNR."""

GENERATOR_DEFAULTS: dict = {
    "n_train": 16000,
    "n_held_out": 1000,
    "epochs": 6,
    "batch_size": 32,
    "lr": 2e-3,
    "feature_weight": 0.01,
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


def _cnn_features(cnn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ShapesCNN's ``conv3`` output (the perceptual term's features)."""
    return cnn.conv3(cnn.pool2(cnn.conv2(cnn.pool1(cnn.conv1(x)))))


def _train_autoencoder(generator, encoder, cnn, x_train, s: dict, log) -> None:
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
            x = x_train[order[step * s["batch_size"]:(step + 1) * s["batch_size"]]]
            h = encoder(x)
            noise = torch.randn(h.shape, generator=noise_rng) * s["latent_noise"]
            x_hat = generator(h + noise)
            loss = (x_hat - x).pow(2).mean() + s["latent_weight"] * h.pow(2).mean()
            if s["feature_weight"]:
                with torch.no_grad():
                    target = _cnn_features(cnn, x)
                loss = loss + s["feature_weight"] * (_cnn_features(cnn, x_hat) - target).pow(2).sum() / target.pow(2).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(x)
        if log is not None:
            log(f"autoencoder epoch {epoch + 1}/{s['epochs']}: loss {total / len(x_train):.5f}, "
                f"{time.perf_counter() - start:.0f} s")
    generator.eval()
    encoder.eval()


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
            log(f"prior step {step + 1}/{s['prior_steps']}: loss {float(loss):.5f}")
    prior.eval()


def train_generator(log: Callable[[str], None] | None = print, **settings) -> tuple[gen.GeneratorPrior, dict]:
    """Train ``G``, ``E`` and ``R`` on default images (module docstring); return them and a report.

    Parameters
    ----------
    log : callable or None
        Receives progress lines.
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
        x_train = make_shapes(s["n_train"], seed=s["train_seed"], size=s["size"]).images()
        x_held = make_shapes(s["n_held_out"], seed=s["held_out_seed"], size=s["size"]).images()
        cnn = load_model("cnn")
        for p in cnn.parameters():
            p.requires_grad_(False)
        report = dict(s, generator_widths=list(gen.GENERATOR_WIDTHS), encoder_widths=list(gen.ENCODER_WIDTHS),
                      prior_hidden=gen.PRIOR_HIDDEN)
        torch.manual_seed(s["seed"])
        generator, encoder, prior = gen.build(report)
        # channels_last makes the convolutions about 1.5-2x faster on CPU (the same numbers up to rounding)
        for module in (generator, encoder, cnn):
            module.to(memory_format=torch.channels_last)
        _train_autoencoder(generator, encoder, cnn, x_train.contiguous(memory_format=torch.channels_last), s, log)
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
        result = gen.GeneratorPrior(generator, encoder, prior, latents.min(0).values, latents.max(0).values,
                                    latents.mean(0), latents.std(0), report)
        report.update(
            held_out_psnr=round(float(psnr(reconstruct(generator, encoder, x_held), x_held).mean()), 3),
            train_psnr=round(float(psnr(reconstruct(generator, encoder, x_train[:2000]), x_train[:2000]).mean()), 3),
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
