"""Plug & Play Generative Networks: sampling in a generator's latent space (docs/methods.md section 10).

Nguyen, Clune, Bengio, Dosovitskiy & Yosinski 2017. A generator ``G`` maps a latent code ``h`` to an
image, the model ``C`` (the condition network) scores the image, and a denoising autoencoder ``R`` on
the latents is the prior. Each step::

    d = eps1 (R(h) - h) + eps2 grad_h c(G(h)) + eps3 n,    n ~ N(0, I)
    h <- clip(h + lr d / mean|d|, low, high)

with ``c`` the condition: ``log p(y | x) = log_softmax(C(x))[y]`` for a class ``y``, or a unit's
activation (its map maximum by default) for ``(layer, unit)``; ``mean|d|`` is the mean absolute value
of ``d`` over the latent dimensions of each sample (each sample has its own step), and the clip range
is the latents' training range. ``eps1 = 0`` is DGN-AM (no learned prior).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError
from .objectives import _select, evaluate
from .running import PreparedModel
from .visualize import _device, _progress_bar, _resolve_layer, image_seed

DEFAULT_STEPS = 100
DEFAULT_EPS1 = 1.0
"""Weight of the prior term ``R(h) - h`` on the shipped generator (see docs/methods.md section 10 for why
it is not the paper's 1e-5: the terms' scales depend on the latent space)."""
DEFAULT_EPS2 = 1.0
DEFAULT_EPS3 = 1e-17
DEFAULT_LR = 0.02
DEFAULT_BATCH = 64
"""Chains per forward and backward pass: on the CPU larger batches are slower (480 chains of the shipped
structured generator: 1.9x the time of batches of 48, mostly the system's time for fresh allocations)."""
UNIT_OPTIONS = {"steps": 200, "lr": 0.2, "eps1": 0.1}
"""Settings for unit targets on the shipped generator (docs/methods.md section 10): a weaker prior and longer,
larger steps than the class defaults let the samples exceed the best dataset image for most units of the
deepest layer (measured: 56 of 64 units of conv5)."""
CLASS_OPTIONS = {"steps": 20, "restarts": 24}
"""Settings for class targets on the structured generator, ``nsi.zoo.load_generator("shapes-structured")``
(docs/methods.md section 10b, "Restarts"): 24 chains of 20 steps per sample, the one whose ``log p(y|x)`` ends
highest kept. Its shape and texture kinds are discrete, which the condition's gradient seldom finds from one
start (measured on the 240 classes: the second model reads about 95 % of the kept samples, 19 to 28 % of
single chains)."""
UNIT_OBJECTIVES = ("max", "neuron", "channel")
"""Values of ``objective=`` for a ``(layer, unit)`` target: the map maximum (default, what the index ranks
by), the map centre, or the spatial mean."""


@dataclass
class PPGNSamples:
    """Samples of :func:`ppgn`.

    Attributes
    ----------
    target : int or (str, int)
        The class, or the (layer, unit), of every sample (the first one when several were given).
    targets : list
        The target of each sample (``len(images)``), target-major: ``n`` samples of each in turn.
    images : ndarray, (S, H, W, 3) float32
        ``G(h)`` of the final latents, RGB in ``[0, 1]``.
    latents : ndarray, (S, D) float32
        The final latents.
    values : ndarray, (S,) float32
        The condition on the final images (``log p(y|x)`` for a class, the unit's objective otherwise).
    history : ndarray, (steps, S) float32
        The condition before each step.
    probabilities : ndarray, (S,) float32 or None
        For class targets, ``p(y|x)`` of the final images.
    recipe : dict
        Every setting (JSON-able).
    chain_values : ndarray, (S, restarts) float32
        The condition at the end of every chain of each sample (the kept one is the largest).
    """

    target: Any
    targets: list
    images: np.ndarray
    latents: np.ndarray
    values: np.ndarray
    history: np.ndarray
    probabilities: np.ndarray | None
    recipe: dict
    chain_values: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"PPGNSamples(target={self.target!r}, samples={len(self.images)}, steps={len(self.history)}, "
                f"median value={np.median(self.values):.3g})")


@dataclass(frozen=True)
class _Target:
    layer_name: str
    module: nn.Module | None
    units: np.ndarray  # (T,) classes or units
    is_class: bool
    keys: list         # the user's targets, one per entry of ``units``


def _parse_target(model: nn.Module, target) -> _Target:
    """``int`` / sequence of ints (classes), ``(layer, unit)`` or ``(layer, [units])``."""
    spec = _parse_target_kind(model, target)
    if (spec.units < 0).any():
        raise InputError(f"targets {spec.units[spec.units < 0].tolist()} are outside the model's classes or units "
                         "(they count from 0)")
    return spec


def _parse_target_kind(model: nn.Module, target) -> _Target:
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return _Target("output", None, np.array([int(target)]), True, [int(target)])
    if isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], (str, nn.Module)):
        layer, units = target
        name, module = _resolve_layer(model, layer, "neuron")
        units = [units] if isinstance(units, (int, np.integer)) else list(units) if not isinstance(units, str) else None
        if not units or not all(isinstance(u, (int, np.integer)) and not isinstance(u, bool) for u in units):
            raise InputError(f"target ({layer!r}, unit) needs an int unit or a non-empty list of ints, got {target[1]!r}")
        return _Target(name, module, np.asarray(units, np.int64), False, [(name, int(u)) for u in units])
    if isinstance(target, (list, tuple, np.ndarray)) and len(target) and all(
            isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in target):
        units = np.asarray(target, np.int64)
        return _Target("output", None, units, True, [int(t) for t in units])
    raise InputError(f"target must be a class index (int), a list of classes, or (layer, unit); got {target!r}")


def _parts(generator, prior, clip, latent_dim):
    """The generator module, the prior module (or None) and the clip range from what the user passed."""
    bundle = generator if hasattr(generator, "generator") and isinstance(getattr(generator, "generator"), nn.Module) else None
    g = bundle.generator if bundle is not None else generator
    if not isinstance(g, nn.Module):
        raise InputError(f"generator must be an nn.Module (latent -> image) or nsi.zoo.load_generator(...)'s result, "
                         f"got {type(generator).__name__}")
    if isinstance(prior, str) and prior == "auto":
        prior = bundle.prior if bundle is not None else None
    if prior is not None and not isinstance(prior, nn.Module):
        raise InputError(f"prior must be an nn.Module (latent -> latent) or None, got {type(prior).__name__}")
    if isinstance(clip, str) and clip == "auto":
        clip = (bundle.low, bundle.high) if bundle is not None else None
    if latent_dim is None:
        latent_dim = bundle.latent_dim if bundle is not None else getattr(g, "latent_dim", None)
    if not isinstance(latent_dim, (int, np.integer)) or latent_dim < 1:
        raise InputError("the generator's latent size is unknown: pass latent_dim= (or give the module a "
                         "`latent_dim` attribute)")
    if clip is not None:
        try:
            low, high = (torch.as_tensor(c, dtype=torch.float32).flatten() for c in clip)
        except (TypeError, ValueError):
            raise InputError(f"clip must be None or (low, high), got {clip!r}") from None
        low, high = (c.expand(latent_dim) if c.numel() == 1 else c for c in (low, high))
        if low.numel() != latent_dim or high.numel() != latent_dim or bool((low > high).any()):
            raise InputError(f"clip must be (low, high) with low <= high, scalars or ({latent_dim},) each")
        clip = (low, high)
    start = None
    if bundle is not None and getattr(bundle, "mean", None) is not None and getattr(bundle, "std", None) is not None:
        start = (torch.as_tensor(bundle.mean, dtype=torch.float32), torch.as_tensor(bundle.std, dtype=torch.float32))
    return g, prior, clip, int(latent_dim), start


def _check_numbers(steps, n, eps1, eps2, eps3, lr):
    for name, value in (("steps", steps), ("n", n)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("eps1", eps1), ("eps2", eps2), ("eps3", eps3)):
        if not isinstance(value, (int, float, np.floating, np.integer)) or not np.isfinite(value) or value < 0:
            raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    if not isinstance(lr, (int, float, np.floating, np.integer)) or not np.isfinite(lr) or lr <= 0:
        raise InputError(f"lr must be a finite number > 0, got {lr!r}")


def sample_streams(seed: int, unit: int, occurrence: int, steps: int, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's random numbers: its start ``z0`` ``(D,)`` and its step noise ``(steps, D)``, both N(0, 1).

    Drawn in this order from ``torch.Generator().manual_seed(image_seed(seed, unit, occurrence))``
    (:func:`~nsi_widgets.synthesis.visualize.image_seed`): a sample never depends on the other samples
    of the call.
    """
    g = torch.Generator().manual_seed(image_seed(seed, unit, occurrence))
    z0 = torch.randn(latent_dim, generator=g)
    return z0, torch.randn(steps, latent_dim, generator=g)


def ppgn(model: nn.Module, generator, target, *, prior: Any = "auto", steps: int = DEFAULT_STEPS,
         eps1: float = DEFAULT_EPS1, eps2: float = DEFAULT_EPS2, eps3: float = DEFAULT_EPS3, lr: float = DEFAULT_LR,
         n: int = 1, seed: int = 0, objective: str = "max", clip: Any = "auto", latent_dim: int | None = None,
         start: torch.Tensor | None = None, init_sd: float = 1.0, restarts: int = 1, batch_size: int | None = DEFAULT_BATCH,
         preprocess: Callable | None = None, device=None, progress: bool | Callable = True) -> PPGNSamples:
    """Sample images a class or a unit wants in a generator's latent space (PPGN; docs/methods.md section 10).

    Parameters
    ----------
    model : torch.nn.Module
        The condition network ``C`` (eval mode, frozen weights during the call; restored afterwards).
    generator : GeneratorPrior or nn.Module
        ``nsi.zoo.load_generator("shapes")`` (its ``generator``, ``prior`` and latent range are used), or
        any module mapping latents ``(B, D)`` to RGB images ``(B, 3, H, W)`` in ``[0, 1]``.
    target : int, list of int, (layer, unit) or (layer, [units])
        A class index (``log p(y|x)`` is the condition), several classes (sampled in one batch), or units
        of a layer.
    prior : nn.Module, None or "auto"
        ``R``: latent -> latent. ``"auto"``: the GeneratorPrior's; None switches the prior term off.
    steps : int
    eps1, eps2, eps3 : float
        Weights of the prior term, the condition's gradient and the noise (``eps1 = 0``: DGN-AM).
    lr : float
        The step size: each step moves ``h`` by ``lr`` on average per latent dimension.
    n : int
        Samples per target.
    seed : int
        Seeds each sample's start and noise (:func:`sample_streams`): identical results on the CPU.
    objective : {"max", "neuron", "channel"}
        For a unit target: its map maximum (default), map centre or spatial mean.
    clip : (low, high), None or "auto"
        Range ``h`` is clipped to after each step (scalars or ``(D,)``); ``"auto"``: the GeneratorPrior's
        training range, none for a plain module.
    latent_dim : int, optional
        ``D`` for a plain module without a ``latent_dim`` attribute.
    start : tensor (S * restarts, D), optional
        Start latents, one per chain (default: the training latents' mean plus ``init_sd`` times their
        per-dimension standard deviation times ``z0`` for a GeneratorPrior; ``init_sd * z0`` otherwise;
        then clipped).
    restarts : int
        Chains per sample (default 1, the paper's sampler): each sample runs ``restarts`` chains from
        independent starts and keeps the one whose condition ends highest (docs/methods.md section 10b,
        "Restarts"). Sample ``k`` of a target keeps the best of its chains ``k * restarts`` to
        ``k * restarts + restarts - 1``, chain ``j`` drawing :func:`sample_streams` ``(seed, u, j)``.
    batch_size : int or None
        Chains per forward and backward pass (default :data:`DEFAULT_BATCH`, 64; None: all at once). The
        chains are independent, so the results do not depend on it (up to float rounding); it bounds
        the memory.
    preprocess, device, progress
        As for :func:`nsi_widgets.visualize`.

    Returns
    -------
    PPGNSamples
        ``.images`` (S, H, W, 3), ``.latents`` (S, D), ``.history`` (steps, S), ``.values``, each of the
        kept chain; ``.chain_values`` (S, restarts) the final condition of every chain.

    Raises
    ------
    InputError
        Bad target, numbers, generator, prior or clip range; before any work.
    """
    _check_numbers(steps, n, eps1, eps2, eps3, lr)
    _check_counts(restarts, batch_size)
    if objective not in UNIT_OBJECTIVES:
        raise InputError(f"objective must be one of {UNIT_OBJECTIVES}, not {objective!r}")
    spec = _parse_target(model, target)
    g, r, clip, dim, stats = _parts(generator, prior, clip, latent_dim)
    if float(eps1) == 0.0:
        r = None
    device = _device(model, device)
    chain_units = np.repeat(spec.units, n * restarts)  # target-major; sample i owns chains i*R .. i*R+R-1
    occurrence = _occurrences(chain_units)
    keys = [k for k in spec.keys for _ in range(n)]
    if start is not None:
        start = torch.as_tensor(start, dtype=torch.float32)
        if start.shape != (len(chain_units), dim):
            raise InputError(f"start must have shape ({len(chain_units)}, {dim}) (samples x restarts, latent_dim), "
                             f"got {tuple(start.shape)}")
    low, high = (None, None) if clip is None else (clip[0].to(device), clip[1].to(device))
    recipe = {"target": spec.keys[0] if len(spec.keys) == 1 else spec.keys, "layer": spec.layer_name,
              "steps": int(steps), "eps1": float(eps1), "eps2": float(eps2), "eps3": float(eps3), "lr": float(lr),
              "n": int(n), "seed": int(seed), "objective": "log_softmax" if spec.is_class else objective,
              "prior": r is not None, "clip": clip is not None, "latent_dim": dim, "restarts": int(restarts)}
    size = len(chain_units) if batch_size is None else int(batch_size)
    batches = [slice(lo, min(lo + size, len(chain_units))) for lo in range(0, len(chain_units), size)]
    kept = _Kept(len(keys), int(restarts), steps)
    advance, close = _progress_bar(progress, steps * len(batches), f"ppgn {spec.layer_name}")
    with ExitStack() as stack:
        run = stack.enter_context(PreparedModel(model, spec.module, preprocess, device))
        gen_run = stack.enter_context(PreparedModel(g, None, None, device))
        prior_run = stack.enter_context(PreparedModel(r, None, None, device)) if r is not None else None
        stack.callback(close)
        chains = _Chains(run, gen_run, prior_run, spec, objective, (low, high), (eps1, eps2, eps3, lr), advance)
        for i, chunk in enumerate(batches):
            z0, noise = _streams(seed, chain_units, occurrence, chunk, steps, dim)
            if start is not None:
                h = start[chunk]
            else:
                h = init_sd * z0 if stats is None else stats[0] + init_sd * stats[1] * z0
            h = chains.clip(h.to(device))
            if i == 0:
                _check_target(run, gen_run, h[:1], spec)
            kept.offer(chunk, *chains.sample(h, noise.to(device), torch.as_tensor(chain_units[chunk], device=device)))
    return PPGNSamples(spec.keys[0], keys, kept.images, kept.latents, kept.values, kept.history,
                       kept.probabilities if spec.is_class else None, recipe, kept.chain_values)


def _check_counts(restarts, batch_size) -> None:
    if not isinstance(restarts, (int, np.integer)) or isinstance(restarts, bool) or restarts < 1:
        raise InputError(f"restarts must be a positive integer, got {restarts!r}")
    if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool)
                                   or batch_size < 1):
        raise InputError(f"batch_size must be None or a positive integer, got {batch_size!r}")


def _occurrences(units: np.ndarray) -> np.ndarray:
    """For each entry, how many entries before it hold the same value."""
    order = np.argsort(units, kind="stable")
    ordered = units[order]
    occurrence = np.empty(len(units), dtype=np.int64)
    occurrence[order] = np.arange(len(units)) - np.searchsorted(ordered, ordered, side="left")
    return occurrence


def _streams(seed: int, chain_units: np.ndarray, occurrence: np.ndarray, chunk: slice, steps: int, dim: int):
    """Starts ``(C, D)`` and noise ``(steps, C, D)`` of the chains in ``chunk``: chain ``j`` of target ``u`` (its
    ``j``-th occurrence among all chains of the call) draws :func:`sample_streams` ``(seed, u, j)``."""
    streams = [sample_streams(seed, int(chain_units[i]), int(occurrence[i]), steps, dim)
               for i in range(chunk.start, chunk.stop)]
    return torch.stack([s[0] for s in streams]), torch.stack([s[1] for s in streams], dim=1)


class _Chains:
    """The PPGN step of docs/methods.md section 10b, run on a batch of independent chains."""

    def __init__(self, run, gen_run, prior_run, spec, objective, clip, weights, advance):
        self.model, self.gen_run, self.prior_run, self.spec, self.objective = run, gen_run, prior_run, spec, objective
        self.low, self.high = clip
        self.eps1, self.eps2, self.eps3, self.lr = weights
        self.advance = advance

    def clip(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.low is None else torch.maximum(torch.minimum(h, self.high), self.low)

    def condition(self, latent: torch.Tensor, units: torch.Tensor):
        out = self.model(self.gen_run(latent))
        if self.spec.is_class:
            return torch.log_softmax(out, dim=1).gather(1, units[:, None])[:, 0], out
        if self.objective == "max":
            chosen = _select(out, units)
            return (chosen.flatten(1).amax(1) if chosen.ndim > 1 else chosen), out
        return evaluate(self.objective, out, units), out

    def sample(self, h: torch.Tensor, noise: torch.Tensor, units: torch.Tensor):
        """``steps`` updates of ``h``; returns NumPy latents, values, probabilities, images and history."""
        history = np.empty((len(noise), len(h)), dtype=np.float32)
        for step in range(len(noise)):
            latent = h.detach().requires_grad_(True)
            value, _ = self.condition(latent, units)
            (grad,) = torch.autograd.grad(value.sum(), latent)
            d = self.eps2 * grad + self.eps3 * noise[step]
            if self.prior_run is not None:
                with torch.no_grad():
                    d = d + self.eps1 * (self.prior_run(h) - h)
            scale = d.abs().mean(dim=1, keepdim=True)
            h = self.clip(h + self.lr * d / torch.where(scale > 0, scale, torch.ones_like(scale)))
            history[step] = value.detach().cpu().numpy()
            self.advance(1)
        with torch.no_grad():
            value, out = self.condition(h, units)
            images = self.gen_run(h)
        probabilities = torch.softmax(out, 1).gather(1, units[:, None])[:, 0] if self.spec.is_class else value
        return (h.cpu().numpy().astype(np.float32), value.cpu().numpy().astype(np.float32),
                probabilities.cpu().numpy().astype(np.float32),
                images.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32), history)


class _Kept:
    """Per sample, the chain whose condition ends highest (the first on ties), as the chains come in."""

    def __init__(self, samples: int, restarts: int, steps: int):
        self.restarts = restarts
        self.chain_values = np.empty((samples, restarts), dtype=np.float32)
        self.history = np.empty((steps, samples), dtype=np.float32)
        self.images = self.latents = self.values = self.probabilities = None

    def offer(self, chunk: slice, latents, values, probabilities, images, history) -> None:
        if self.images is None:
            samples = len(self.chain_values)
            self.images = np.empty((samples, *images.shape[1:]), np.float32)
            self.latents = np.empty((samples, latents.shape[1]), np.float32)
            self.values, self.probabilities = np.empty(samples, np.float32), np.empty(samples, np.float32)
        for c, chain in enumerate(range(chunk.start, chunk.stop)):
            sample, r = divmod(chain, self.restarts)
            self.chain_values[sample, r] = values[c]
            if r == 0 or values[c] > self.values[sample]:
                self.images[sample], self.latents[sample], self.values[sample] = images[c], latents[c], values[c]
                self.probabilities[sample], self.history[:, sample] = probabilities[c], history[:, c]


@torch.no_grad()
def _check_target(run: PreparedModel, gen_run: PreparedModel, h: torch.Tensor, spec: _Target) -> None:
    """Generator output and target range, checked on one latent before the optimisation."""
    image = gen_run(h)
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"the generator must return RGB images (B, 3, H, W); it returned "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    out = run(image)
    count = int(out.shape[1]) if out.ndim >= 2 else 0
    bad = spec.units[(spec.units < 0) | (spec.units >= count)]
    if bad.size:
        what = "classes" if spec.is_class else f"units of layer {spec.layer_name!r}"
        raise InputError(f"targets {bad.tolist()} are outside the model's {count} {what}")
    if spec.is_class and out.ndim != 2:
        raise InputError(f"a class target reads the model's output (B, classes); it has shape {tuple(out.shape)}")
