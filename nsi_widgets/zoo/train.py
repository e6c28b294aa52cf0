"""Train the shipped shapes models (:class:`~nsi_widgets.zoo.models.ShapesCNN`,
:class:`~nsi_widgets.zoo.models.ShapesResNet`) reproducibly on CPU.

Usage::

    python -m nsi_widgets.zoo.train --arch cnn --out nsi_widgets/zoo/weights/shapes_cnn.pt
    python -m nsi_widgets.zoo.train --arch resnet --out nsi_widgets/zoo/weights/shapes_resnet.pt
    python -m nsi_widgets.zoo.train generator --out nsi_widgets/zoo/weights/shapes_generator.pt

The last trains the generator prior (generator, encoder, latent denoiser: :func:`train_generator`,
docs/zoo.md "Generator prior").

Writes the float32 state dict (``torch.save``; load with ``torch.load(..., weights_only=True)``)
and, next to it, a JSON file with the held-out accuracy and every training setting, so that a
retrain can be compared with the shipped weights. Reproducible: fixed seeds and data,
``torch.use_deterministic_algorithms(True)`` and a fixed number of CPU threads.
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

from .models import ARCHITECTURES
from .shapes import CLASSES, make_shapes

TRAIN_SEED = 1
"""Seed of the training images."""
HELD_OUT_SEED = 2
"""Seed of the held-out images the reported accuracy is measured on."""

ARCH_WIDTHS: dict[str, list[int]] = {"cnn": [16, 32, 64, 64, 64], "resnet": [16, 24, 32, 48, 48]}
"""Default channel widths of each architecture."""

DEFAULTS: dict = {
    "arch": "cnn",
    "n_train": 24000,
    "n_held_out": 2000,
    "epochs": 12,
    "batch_size": 64,
    "lr": 0.004,
    "weight_decay": 1e-4,
    "seed": 0,  # initialisation and batch order
    "train_seed": TRAIN_SEED,
    "held_out_seed": HELD_OUT_SEED,
    "threads": 1,
    "size": 64,
    "widths": None,  # None: ARCH_WIDTHS[arch]
}


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of ``images`` (float ``(n, 3, H, W)``) that ``model`` classifies as ``labels``."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start:start + batch_size])
            correct += int((logits.argmax(1) == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / len(images)


def train(arch: str = DEFAULTS["arch"], n_train: int = DEFAULTS["n_train"], n_held_out: int = DEFAULTS["n_held_out"],
          epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
          lr: float = DEFAULTS["lr"], weight_decay: float = DEFAULTS["weight_decay"],
          seed: int = DEFAULTS["seed"], train_seed: int = DEFAULTS["train_seed"],
          held_out_seed: int = DEFAULTS["held_out_seed"], threads: int = DEFAULTS["threads"],
          size: int = DEFAULTS["size"], widths: tuple[int, ...] | None = None,
          log: Callable[[str], None] | None = print) -> tuple[nn.Module, dict]:
    """Train a shapes model on :func:`make_shapes` images; return it (eval mode) and a report.

    AdamW with a one-cycle learning-rate schedule, cross entropy, batches in a seeded order.
    The global torch settings (threads, deterministic algorithms) are restored afterwards.

    Parameters
    ----------
    arch : {"cnn", "resnet"}
        :class:`~nsi_widgets.zoo.models.ShapesCNN` or :class:`~nsi_widgets.zoo.models.ShapesResNet`.
    n_train, n_held_out : int
        Numbers of training and held-out images.
    epochs, batch_size, lr, weight_decay : int, int, float, float
        Optimisation settings (``lr`` is the peak of the one-cycle schedule).
    seed : int
        Seed of the initial weights and of the batch order.
    train_seed, held_out_seed : int
        Seeds of the generated training and held-out images (must differ).
    threads : int
        CPU threads torch may use; results are reproducible for a fixed value.
    size : int
        Image side in pixels.
    widths : tuple of int, optional
        Channels of the conv blocks (default :data:`ARCH_WIDTHS` of ``arch``).
    log : callable or None
        Receives one progress line per epoch.

    Returns
    -------
    model : ShapesCNN or ShapesResNet
        The trained model, in eval mode.
    report : dict
        ``held_out_accuracy``, ``train_accuracy``, ``seconds`` and every setting above.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    widths = list(ARCH_WIDTHS[arch] if widths is None else widths)
    if train_seed == held_out_seed:
        raise ValueError("train_seed and held_out_seed must differ: the held-out images must be new")
    settings = {"arch": arch, "n_train": n_train, "n_held_out": n_held_out, "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "weight_decay": weight_decay, "seed": seed, "train_seed": train_seed,
                "held_out_seed": held_out_seed, "threads": threads, "size": size, "widths": list(widths)}
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    # Deterministic mode NaN-fills every new tensor; our kernels overwrite them anyway, and the
    # fill took a quarter of the training time.
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        start = time.perf_counter()
        train_data = make_shapes(n_train, seed=train_seed, size=size)
        held_out = make_shapes(n_held_out, seed=held_out_seed, size=size)
        x_train, y_train = train_data.images(), torch.from_numpy(train_data.labels)
        x_held, y_held = held_out.images(), torch.from_numpy(held_out.labels)

        torch.manual_seed(seed)
        model = ARCHITECTURES[arch](n_classes=len(CLASSES), widths=tuple(widths))
        # channels_last makes the full-resolution layers about 1.5x faster on CPU.
        model = model.to(memory_format=torch.channels_last)
        x_train = x_train.contiguous(memory_format=torch.channels_last)
        optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(n_train / batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.25)
        order_rng = torch.Generator().manual_seed(seed)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n_train, generator=order_rng)
            total_loss = 0.0
            for step in range(steps_per_epoch):
                batch = order[step * batch_size:(step + 1) * batch_size]
                optimiser.zero_grad(set_to_none=True)
                loss = loss_fn(model(x_train[batch]), y_train[batch])
                loss.backward()
                optimiser.step()
                schedule.step()
                total_loss += float(loss.detach()) * len(batch)
            if log is not None:
                log(f"epoch {epoch + 1}/{epochs}: loss {total_loss / n_train:.4f}, "
                    f"held-out accuracy {accuracy(model, x_held, y_held):.4f}, "
                    f"{time.perf_counter() - start:.0f} s")
        model = model.to(memory_format=torch.contiguous_format).eval()
        report = dict(settings)
        report["held_out_accuracy"] = accuracy(model, x_held, y_held)
        report["train_accuracy"] = accuracy(model, x_train, y_train)
        report["seconds"] = round(time.perf_counter() - start, 1)
        report["torch_version"] = torch.__version__
        report["numpy_version"] = np.__version__
        return model, report
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = old_fill


def save(model: nn.Module, report: dict, out: str | Path) -> Path:
    """Write ``model``'s float32 state dict to ``out`` and ``report`` (plus a SHA-256) beside it as JSON.

    Returns
    -------
    Path
        The JSON file's path (``out`` with the suffix ``.json``).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out)
    report = dict(report, weights_file=out.name,
                  sha256=hashlib.sha256(out.read_bytes()).hexdigest())
    meta_path = out.with_suffix(".json")
    meta_path.write_text(json.dumps(report, indent=2) + "\n")
    return meta_path


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the report (also printed as JSON)."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generator"]:
        from .train_generator import main as generator_main

        return generator_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m nsi_widgets.zoo.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None,
                        help="where to write the state dict (.pt); a .json report is written beside it. "
                             "Without --out nothing is written.")
    for key, value in DEFAULTS.items():
        if key == "widths":
            parser.add_argument("--widths", type=int, nargs="+", default=value)
        elif key == "arch":
            parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default=value)
        else:
            parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    kwargs = {key: getattr(args, key) for key in DEFAULTS}
    kwargs["widths"] = tuple(kwargs["widths"]) if kwargs["widths"] else None
    model, report = train(**kwargs)
    if args.out:
        meta_path = save(model, report, args.out)
        print(f"wrote {args.out} and {meta_path}")
    print(json.dumps(report, indent=2))
    return report


from .train_generator import train_generator  # noqa: E402,F401  (the generator prior's training)


if __name__ == "__main__":
    main()
