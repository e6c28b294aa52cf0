"""Net2Vec (Fong & Vedaldi 2018) on the streaming engine (docs/methods.md section 8).

Per concept ``c`` a weight per channel ``w_c`` and a bias ``b_c``: a 1x1 linear probe whose map,
upsampled to the concept masks and squashed, is the concept's segmentation::

    p_c(x) = sigmoid(up(sum_k w_ck A_k)(x) + b_c)

``A_k`` is the raw activation (default, as in the authors' later code) or ``1[A_k > T_k]`` with Network
Dissection's threshold ``T_k`` (``binarise=True``, as in the paper; thresholding comes before the
upsampling, as in Net2Vec's rerun of dissection). ``up`` is dissection's receptive-field-aligned
bilinear upsampling (:mod:`.upsample`); it is linear, so ``up(sum_k w_k A_k) = sum_k w_k up(A_k)``.
Loss (Net2Vec's, linear in ``p``), per concept over the pixels of the fitting images::

    L_c = -mean_x [alpha_c M_c(x) p_c(x) + (1 - alpha_c) (1 - M_c(x)) (1 - p_c(x))]
    alpha_c = 1 - (foreground pixels of c) / (all pixels)   over the fitting images

minimised from zero by SGD with momentum 0.9 (default lr 1.0, each concept's loss divided by
``2 alpha_c (1 - alpha_c)``) or AdamW (``optimizer="adamw"``, the authors' later code: lr 0.1,
weight decay 0.01 on the weights, not the bias), ``epochs`` passes over the fitting images in seeded
random order, ``images_per_step`` images a step.

Passes (one forward each, all layers at once):

1. over all images: dissection's exact quantile per unit (the thresholds, for the binarised input
   and the single-unit baseline), and, with raw inputs, the *training samples*: per fitting image
   ``pixels_per_image`` mask pixels chosen by a permutation seeded by the image's index, and at them
   every layer's upsampled activations and every concept's mask bit. Sampling pixels keeps memory at
   ``images x pixels x channels`` whatever the map size; uniformly chosen pixels make the sampled
   loss an unbiased estimate of the loss over all pixels. ``alpha_c`` is counted over all pixels.
2. (binarised only) the training samples of the thresholded maps, over the fitting images.
3. over the held-out images: integer tallies of the set IoU of ``p_c > 0.5`` (``z > 0``) with the
   masks at the mask resolution, and dissection's IoU tallies of every single unit
   (``up(A_k) > T_k``), whose best per concept is the baseline. Both use the union over all
   held-out images (dissection's ``union="all"``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.data import DataCheck
from ..core.errors import InputError
from ..core.passes import Batch, Consumer, run_pass
from .data import ConceptSet
from .dissection import IoUConsumer, QuantileConsumer, _LayerPlan
from .plan import check_int, check_number
from .vector_results import ConceptVectors

_PIXEL_SEED = 104729
_CHUNK = 2**22  # mask pixels x concepts evaluated at once


@dataclass(frozen=True)
class Net2VecOptions:
    """Settings of Net2Vec's probes (see the module)."""

    binarise: bool = False
    quantile: float = 0.005
    optimizer: str = "sgd"
    epochs: int = 50
    lr: float = 1.0
    weight_decay: float = 0.0
    pixels_per_image: int = 128
    images_per_step: int = 64

    def check(self) -> None:
        if not isinstance(self.binarise, bool):
            raise InputError(f"binarise must be True or False, got {self.binarise!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise InputError(f"optimizer must be 'sgd' or 'adamw', not {self.optimizer!r}")
        check_number("quantile", self.quantile, 0, 1, open_low=True, open_high=True)
        for name in ("epochs", "pixels_per_image", "images_per_step"):
            check_int(name, getattr(self, name))
        check_number("lr", self.lr, 0, float("inf"), open_low=True)
        check_number("weight_decay", self.weight_decay, 0, float("inf"))

    def key(self) -> dict:
        return {"binarise": self.binarise, "quantile": float(self.quantile), "optimizer": self.optimizer,
                "epochs": self.epochs,
                "lr": float(self.lr), "weight_decay": float(self.weight_decay),
                "pixels_per_image": self.pixels_per_image, "images_per_step": self.images_per_step}


@dataclass
class Probe:
    """One layer's fitted probes: ``weights`` (K, C), ``bias`` (K,), ``thresholds`` (C,) when binarised."""

    weights: np.ndarray
    bias: np.ndarray
    thresholds: np.ndarray | None = None

    def masks(self, output: torch.Tensor, upsampler) -> torch.Tensor:
        """``p > 0.5`` of every concept at the mask resolution: ``(B, C, h, w) -> (B, K, Hm, Wm)`` bool.

        The upsampling is the aligned bilinear one of :mod:`.upsample` written as two interpolation
        matrices (two weights per row, the same ``a (1 - f) + b f``), applied by matrix products.
        """
        maps = output.detach().to(torch.float64)
        if self.thresholds is not None:
            maps = (maps > torch.as_tensor(self.thresholds, device=maps.device)[None, :, None, None]).to(torch.float64)
        weights = torch.as_tensor(self.weights, dtype=torch.float64, device=maps.device)
        bias = torch.as_tensor(self.bias, dtype=torch.float64, device=maps.device)
        rows, cols = (m.to(maps.device) for m in interpolation_matrices(upsampler, maps.shape[2:]))
        b, k = maps.shape[0], weights.shape[0]
        per = max(1, _CHUNK // max(1, k * rows.shape[0] * cols.shape[0]))
        out = []
        for start in range(0, b, per):
            z = torch.einsum("bchw,kc->bkhw", maps[start:start + per], weights)
            up = rows @ z @ cols.T                                        # (b, K, Hm, Wm)
            out.append((up + bias[None, :, None, None] > 0).cpu())
        return torch.cat(out)


def interpolation_matrices(upsampler, map_size) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows (Hm, h), cols (Wm, w))`` float64: ``up(z) = rows @ z @ cols'`` for an :class:`.AlignedUpsampler`."""
    out = []
    for (lo, hi, f), length in zip(upsampler.axes, map_size):
        matrix = np.zeros((len(lo), int(length)))
        np.add.at(matrix, (np.arange(len(lo)), lo), 1.0 - f)
        np.add.at(matrix, (np.arange(len(lo)), hi), f)
        out.append(torch.from_numpy(matrix))
    return out[0], out[1]


def fit_net2vec(model: nn.Module, data, modules: dict[str, nn.Module], concepts: ConceptSet,
                plans: dict[str, _LayerPlan], options: Net2VecOptions, items: tuple[np.ndarray, np.ndarray],
                passes, checkpoint, tag: str = "net2vec") -> tuple[dict[str, Probe], dict[str, ConceptVectors]]:
    """Fit and evaluate the probes of every layer in ``modules`` (see the module); ``items`` = (fit, held-out)."""
    fit_items, test_items = items
    quantiles = QuantileConsumer(plans, options.quantile)
    sampler = PixelSampler(plans, fit_items, options.pixels_per_image, concepts)
    first = [quantiles] if options.binarise else [quantiles, sampler]
    run_pass(f"{tag}: thresholds" + ("" if options.binarise else " and samples"), model, data, modules, first,
             passes, checkpoint=checkpoint)
    thresholds = quantiles.thresholds()
    if options.binarise:
        sampler = PixelSampler(plans, fit_items, options.pixels_per_image, concepts, thresholds)
        run_pass(f"{tag}: samples", model, data, modules, [sampler], passes, indices=fit_items, checkpoint=checkpoint)
    if not sampler.filled.any():
        raise InputError("no fitting image could be used (all were skipped)")
    alpha = sampler.alpha()
    probes = {}
    for name in modules:
        weights, bias = train_probes(sampler.samples[name][sampler.filled], sampler.labels[sampler.filled], alpha,
                                     options, seed=_PIXEL_SEED)
        probes[name] = Probe(weights, bias, thresholds[name] if options.binarise else None)
    tallies = ProbeIoU(plans, probes, len(concepts.concepts))
    single = IoUConsumer(plans, thresholds, concepts)
    run_pass(f"{tag}: evaluation", model, data, modules, [tallies, single], passes, indices=test_items,
             checkpoint=checkpoint)
    results = {}
    for name in modules:
        unit_iou = _single_unit_iou(single, name)
        best = unit_iou.argmax(axis=0) if unit_iou.size else np.zeros(len(concepts.concepts), np.int64)
        probe_iou = tallies.iou(name)
        details = {"iou": probe_iou, "best_unit": best.astype(np.int64),
                   "best_unit_iou": unit_iou[best, np.arange(unit_iou.shape[1])].astype(np.float64),
                   "alpha": alpha, "thresholds": thresholds[name].astype(np.float64)}
        meta = {"binarise": options.binarise, "n_fit": int(sampler.filled.sum()), "n_test": int(len(test_items)),
                **options.key()}
        results[name] = ConceptVectors(name, "net2vec", list(concepts.concepts), list(concepts.categories),
                                       probes[name].weights.astype(np.float32), probes[name].bias.astype(np.float64),
                                       probe_iou, details, meta)
    return probes, results


def _single_unit_iou(consumer: IoUConsumer, name: str) -> np.ndarray:
    """``(C, K)`` IoU of each unit's thresholded map with each concept, union over all images."""
    t = consumer.tallies[name]
    union = t["units"][:, None] + consumer.concept_pixels[None, :] - t["both"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, t["both"] / np.where(union > 0, union, 1), 0.0)


def pixel_positions(index: int, total: int, count: int) -> torch.Tensor:
    """The ``count`` mask pixels (flat indices) sampled from image ``index``: a seeded permutation's first."""
    generator = torch.Generator().manual_seed(_PIXEL_SEED * 1_000_003 + int(index))
    return torch.randperm(total, generator=generator)[:count]


class PixelSampler(Consumer):
    """Net2Vec's training samples of the fitting images ``items`` (see the module, pass 1).

    State: per layer ``(n, P, C)`` float32 upsampled activations at the sampled pixels, the concepts'
    mask bits there ``(n, K, P)``, which rows are filled, and the foreground counts for ``alpha``.
    """

    def __init__(self, plans: dict[str, _LayerPlan], items, pixels: int, concepts: ConceptSet,
                 thresholds: dict[str, np.ndarray] | None = None):
        self.plans, self.layers = plans, tuple(plans)
        self.mask_size = concepts.mask_size
        total = self.mask_size[0] * self.mask_size[1]
        self.pixels = min(int(pixels), total)
        self.rows = {int(i): r for r, i in enumerate(np.asarray(items).tolist())}
        n, k = len(self.rows), len(concepts.concepts)
        self.thresholds = {name: torch.from_numpy(t) for name, t in thresholds.items()} if thresholds else None
        self.samples = {name: np.zeros((n, self.pixels, p.n_units), np.float32) for name, p in plans.items()}
        self.labels = np.zeros((n, k, self.pixels), bool)
        self.filled = np.zeros(n, bool)
        self.counts = np.zeros(k + 1, np.int64)          # foreground pixels per concept, then all pixels
        self._positions: dict = {}

    def _batch_positions(self, batch: Batch) -> tuple[list[int], list[int], torch.Tensor]:
        if self._positions.get("number") != batch.number:
            where = [(b, self.rows[i]) for b, i in enumerate(batch.indices.tolist()) if i in self.rows]
            total = self.mask_size[0] * self.mask_size[1]
            positions = torch.stack([pixel_positions(int(batch.indices[b]), total, self.pixels) for b, _ in where]) \
                if where else torch.zeros(0, self.pixels, dtype=torch.int64)
            self._positions = {"number": batch.number, "where": where, "positions": positions}
        entry = self._positions
        return [b for b, _ in entry["where"]], [r for _, r in entry["where"]], entry["positions"]

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        images, rows, positions = self._batch_positions(batch)
        if not images:
            return
        maps = output.detach()[torch.as_tensor(images, device=output.device)].to(torch.float64).cpu()
        if self.thresholds is not None:
            maps = (maps > self.thresholds[name][None, :, None, None]).to(torch.float64)
        self.samples[name][rows] = sample_upsampled(maps, self.plans[name].upsampler, positions,
                                                    self.mask_size[1]).numpy().astype(np.float32)

    def on_batch(self, batch: Batch) -> None:
        images, rows, positions = self._batch_positions(batch)
        if not images:
            return
        valid = batch.valid[images].numpy()
        masks = batch.extra[images].flatten(2)                        # (n, K, X)
        picked = masks.gather(2, positions[:, None, :].expand(-1, masks.shape[1], -1))
        self.labels[rows] = picked.numpy()
        self.counts[:-1] += masks[torch.from_numpy(valid)].sum(dim=(0, 2)).numpy().astype(np.int64)
        self.counts[-1] += int(valid.sum()) * masks.shape[2]
        self.filled[np.asarray(rows)[valid]] = True

    def alpha(self) -> np.ndarray:
        """``alpha_c = 1 - foreground share`` of each concept over the fitting images."""
        return 1.0 - self.counts[:-1] / max(1, self.counts[-1])

    def state(self) -> dict[str, np.ndarray]:
        return {"labels": self.labels.copy(), "filled": self.filled.copy(), "counts": self.counts.copy(),
                **{f"samples|{n}": v.copy() for n, v in self.samples.items()}}

    def load_state(self, state) -> None:
        self.labels = np.array(state["labels"], dtype=bool)
        self.filled = np.array(state["filled"], dtype=bool)
        self.counts = np.array(state["counts"], dtype=np.int64)
        self.samples = {n: np.array(state[f"samples|{n}"], dtype=np.float32) for n in self.samples}

    def merge_state(self, state) -> None:
        theirs = np.asarray(state["filled"], dtype=bool)
        self.labels[theirs] = np.asarray(state["labels"], dtype=bool)[theirs]
        for n in self.samples:
            self.samples[n][theirs] = np.asarray(state[f"samples|{n}"], dtype=np.float32)[theirs]
        self.filled |= theirs
        self.counts += np.asarray(state["counts"], dtype=np.int64)

    def result(self):
        return self.samples, self.labels


def sample_upsampled(maps: torch.Tensor, upsampler, positions: torch.Tensor, mask_width: int) -> torch.Tensor:
    """``up(maps)`` at flat mask pixels: ``(n, C, h, w)``, ``(n, P)`` -> ``(n, P, C)``, as :class:`.AlignedUpsampler`
    computes it (rows first, then columns, float64)."""
    (ly, hy, fy), (lx, hx, fx) = [tuple(torch.from_numpy(a) for a in axis) for axis in upsampler.axes]
    v, u = positions // mask_width, positions % mask_width
    image = torch.arange(maps.shape[0])[:, None]
    fy_, fx_ = fy[v][..., None], fx[u][..., None]
    low = maps[image, :, ly[v], lx[u]] * (1 - fy_) + maps[image, :, hy[v], lx[u]] * fy_
    high = maps[image, :, ly[v], hx[u]] * (1 - fy_) + maps[image, :, hy[v], hx[u]] * fy_
    return low * (1 - fx_) + high * fx_


def train_probes(samples: np.ndarray, labels: np.ndarray, alpha: np.ndarray, options: Net2VecOptions,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Net2Vec's probes of all concepts of one layer: ``(weights (K, C), bias (K,))`` (see the module).

    Fitted on features centred by their mean over the samples (so that no channel serves as a second
    bias) and divided by one scale for the whole layer, their root mean square (so that the learning
    rate means the same at every layer; the channels keep their relative sizes), then folded back:
    ``w . (a - mu) / s + b = (w / s) . a + (b - (w / s) . mu)``.
    """
    x = torch.from_numpy(np.ascontiguousarray(samples))                   # (n, P, C)
    flat = x.reshape(-1, x.shape[2]).double()
    mean = flat.mean(dim=0)
    scale = float(((flat - mean) ** 2).mean().sqrt())
    scale = scale if scale > 0 else 1.0
    x = ((x.double() - mean) / scale).float()
    a = torch.as_tensor(alpha, dtype=torch.float32)
    per_concept = 1.0 / torch.clamp(2 * a * (1 - a), min=1e-6) if options.optimizer == "sgd" else torch.ones_like(a)
    # d loss / d p per sample: -(alpha M - (1 - alpha)(1 - M)), times the per-concept step scale
    signed = torch.where(torch.from_numpy(np.ascontiguousarray(labels.transpose(0, 2, 1))), a, a - 1) * per_concept
    n, k, c = x.shape[0], signed.shape[2], x.shape[2]
    weights, bias = torch.zeros(k, c), torch.zeros(k)
    step = _Optimiser(options, (weights, bias))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(options.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, options.images_per_step):
            chosen = order[start:start + options.images_per_step]
            xb, sb = x[chosen].reshape(-1, c), signed[chosen].reshape(-1, k)
            p = torch.sigmoid(torch.addmm(bias, xb, weights.T))
            dz = sb.mul_(p * (p - 1)).div_(len(xb))         # d loss / d z, the loss being the mean over samples
            step((dz.T @ xb, dz.sum(dim=0)))
    w = weights.detach().double() / scale
    return w.float().numpy().copy(), (bias.detach().double() - w @ mean).numpy().copy()


class _Optimiser:
    """torch's SGD (momentum 0.9) or AdamW (betas 0.9, 0.999, eps 1e-8) update, written out: the
    optimiser classes of torch.optim load torch's compiler on first use (seconds), for two lines of
    arithmetic. Weight decay on the weights only (the first parameter), not the bias."""

    def __init__(self, options: Net2VecOptions, params: tuple[torch.Tensor, torch.Tensor]):
        self.params, self.lr, self.decay, self.kind = params, float(options.lr), float(options.weight_decay), \
            options.optimizer
        self.first = [torch.zeros_like(p) for p in params]
        self.second = [torch.zeros_like(p) for p in params]
        self.t = 0

    def __call__(self, grads: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.t += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            decay = self.decay if i == 0 else 0.0
            if self.kind == "sgd":
                g = g + decay * p if decay else g
                self.first[i] = g.clone() if self.t == 1 else self.first[i].mul_(0.9).add_(g)
                p.sub_(self.lr * self.first[i])
                continue
            p.mul_(1 - self.lr * decay)
            self.first[i].mul_(0.9).add_(g, alpha=0.1)
            self.second[i].mul_(0.999).addcmul_(g, g, value=0.001)
            denominator = (self.second[i] / (1 - 0.999 ** self.t)).sqrt_().add_(1e-8)
            p.addcdiv_(self.first[i], denominator, value=-self.lr / (1 - 0.9 ** self.t))


class ProbeIoU(Consumer):
    """Integer tallies of the probes' set IoU: per layer ``|P_c & M_c|`` and ``|P_c|`` (K,), and ``|M_c|``."""

    def __init__(self, plans: dict[str, _LayerPlan], probes: dict[str, Probe], n_concepts: int):
        self.plans, self.probes, self.layers = plans, probes, tuple(plans)
        self.tallies = {n: np.zeros((2, n_concepts), np.int64) for n in plans}
        self.concept_pixels = np.zeros(n_concepts, np.int64)

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        valid = batch.valid
        predicted = self.probes[name].masks(output[valid.to(output.device)], self.plans[name].upsampler)
        masks = batch.extra[valid]
        self.tallies[name][0] += (predicted & masks).sum(dim=(0, 2, 3)).numpy()
        self.tallies[name][1] += predicted.sum(dim=(0, 2, 3)).numpy()

    def on_batch(self, batch: Batch) -> None:
        self.concept_pixels += batch.extra[batch.valid].sum(dim=(0, 2, 3)).numpy().astype(np.int64)

    def iou(self, name: str) -> np.ndarray:
        both, predicted = self.tallies[name]
        union = predicted + self.concept_pixels - both
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, both / np.where(union > 0, union, 1), 0.0)

    def state(self) -> dict[str, np.ndarray]:
        return {"concept_pixels": self.concept_pixels.copy(), **{f"t|{n}": t.copy() for n, t in self.tallies.items()}}

    def load_state(self, state) -> None:
        self.concept_pixels = np.array(state["concept_pixels"], dtype=np.int64)
        self.tallies = {n: np.array(state[f"t|{n}"], dtype=np.int64) for n in self.tallies}

    def merge_state(self, state) -> None:
        self.concept_pixels += np.asarray(state["concept_pixels"], dtype=np.int64)
        for n in self.tallies:
            self.tallies[n] += np.asarray(state[f"t|{n}"], dtype=np.int64)

    def result(self):
        return {n: self.iou(n) for n in self.tallies}
