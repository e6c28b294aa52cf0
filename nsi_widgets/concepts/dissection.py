"""Network Dissection (Bau et al. 2017) on the streaming engine (docs/methods.md section 7).

Two passes over a concept dataset (items ``(image, masks)``, :mod:`.data`), one forward each:

1. *Quantiles*: per unit the threshold ``T_k``, the top ``quantile`` of its activations over all
   positions of all images. Exact: every unit keeps its ``k`` largest values, just enough for
   ``T_k = numpy.quantile(values, 1 - quantile)`` with NumPy's default ("linear") interpolation, the
   rule of NetDissect-Lite (``np.percentile``). When the kept values would exceed
   ``max_quantile_bytes``, each image contributes a fixed share of its positions instead, chosen by
   a permutation seeded by the image's index (deterministic, so resumed and distributed runs agree),
   and the result reports the sample rate and a three-sigma bound on the share above the threshold;
   the IoU pass also measures the share above the threshold exactly (``above_share``).
2. *IoU*: each map upsampled to the mask size aligned with the receptive fields (:mod:`.upsample`),
   ``M_k = up(A_k) > T_k``, and integer tallies of ``|M_k & L_c|``, ``|M_k|`` and ``|L_c|`` over the
   dataset (set IoU, not a mean of per-image IoUs). Only maps whose maximum exceeds the threshold
   are upsampled (an upsampled value never exceeds the map's maximum), and intersections are counted
   at the pixels of ``M_k`` only.

Counting conventions (``union=``): ``"labelled"`` (default, NetDissect-Lite's ``tally_units_cat``:
``|M_k|`` is counted only over images where concept ``c``'s category is labelled, i.e. has a pixel of
some concept of that category) and ``"all"`` (``|M_k|`` over all images). On data where every image
labels every category (the embedded default's concept set) they agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..core import distributed
from ..core.checkpoint import Checkpoint
from ..core.data import DataCheck, get_item, read_item
from ..core.errors import InputError
from ..core.fingerprint import callable_fingerprint, data_fingerprint, model_fingerprint
from ..core.layers import LayerRecorder, resolve_layers
from ..core.passes import Batch, Consumer, PassOptions, run_pass
from ..core.receptive_field import receptive_field
from .data import ConceptSet, describe
from .dissection_results import DissectionResult, LayerDissection
from .upsample import AlignedUpsampler

UNIONS = ("labelled", "all")
_SAMPLE_SEED = 7919


@dataclass(frozen=True)
class DissectOptions:
    """The settings of :func:`dissect` (see there)."""

    quantile: float = 0.005
    iou_threshold: float = 0.04
    union: str = "labelled"
    preprocess: Callable | None = None
    batch_size: int = 64
    device: object = None
    progress: bool = True
    checkpoint: object = None
    checkpoint_every: int = 50
    num_workers: int = 0
    max_quantile_bytes: int = 512 * 2**20

    def check(self) -> None:
        if isinstance(self.quantile, bool) or not isinstance(self.quantile, (int, float)) or not 0 < self.quantile < 1:
            raise InputError(f"quantile must be a number in (0, 1), got {self.quantile!r}")
        if isinstance(self.iou_threshold, bool) or not isinstance(self.iou_threshold, (int, float)) \
                or not 0 <= self.iou_threshold < 1:
            raise InputError(f"iou_threshold must be a number in [0, 1), got {self.iou_threshold!r}")
        if self.union not in UNIONS:
            raise InputError(f"union must be one of {UNIONS}, not {self.union!r}")
        for name in ("batch_size", "checkpoint_every", "max_quantile_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.preprocess is not None and not callable(self.preprocess):
            raise InputError("preprocess must be a callable (batch -> batch) or None")

    def key(self) -> dict:
        return {"quantile": float(self.quantile), "batch_size": self.batch_size,
                "max_quantile_bytes": self.max_quantile_bytes}


def dissect(model: nn.Module, concept_data, layers, *, quantile: float = 0.005, iou_threshold: float = 0.04,
            union: str = "labelled", preprocess=None, batch_size: int = 64, device=None, progress: bool = True,
            checkpoint=None, checkpoint_every: int = 50, num_workers: int = 0,
            max_quantile_bytes: int = 512 * 2**20) -> DissectionResult:
    """Label every unit of ``layers`` with the concept its thresholded map matches best (docs/methods.md section 7).

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode (its mode is restored afterwards).
    concept_data : dataset of ``(image, masks)``
        ``masks`` bool ``(K, H, W)`` at the image's size or smaller, ``.concepts`` (K names) and
        optionally ``.concept_categories``; ``nsi.zoo.load_concepts("shapes")`` is one (see
        :mod:`nsi_widgets.concepts.data`).
    layers : str, module or list of them
        Layers whose output channels (units) are dissected.
    quantile : float
        Each unit's threshold is the top ``quantile`` of its activations over all positions of all
        images (NetDissect: 0.005).
    iou_threshold : float
        A unit is a detector of its best concept when that IoU exceeds this (NetDissect: 0.04).
    union : {"labelled", "all"}
        Where the unit's pixels count in the union: over images where the concept's category is
        labelled (NetDissect-Lite) or over all images.
    preprocess, batch_size, device, progress, num_workers
        As for :func:`~nsi_widgets.index.pipeline.index_neurons`.
    checkpoint : path, optional
        Checkpoint of both passes (keyed by the model, the concept data, preprocess and the
        settings); a rerun resumes, bit for bit equal to an uninterrupted run.
    max_quantile_bytes : int
        Memory for the exact quantiles of all layers; beyond it, layers are sampled (see the module).

    Returns
    -------
    DissectionResult
        ``result[layer].iou``, ``.thresholds``, ``.concepts``, ``.categories``, ``.best_concept``,
        ``.best_iou``; ``result.to_pandas()``, ``result.summary()``, ``result.save(path)``,
        ``idx.attach("dissection", result.to_attachment())``.
    """
    options = DissectOptions(quantile, iou_threshold, union, preprocess, batch_size, device, progress, checkpoint,
                             checkpoint_every, num_workers, max_quantile_bytes)
    options.check()
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    concepts = describe(concept_data)
    modules = resolve_layers(model, layers)
    device = _device(model, device)
    was_training = model.training
    model.eval()
    try:
        plans = _plan_layers(model, modules, concept_data, concepts, options, device)
        check = DataCheck(image_shape=(3, *concepts.image_size), split=concepts.split)
        passes = PassOptions(batch_size, num_workers, device, preprocess, check, progress)
        ckpt = _checkpoint(model, modules, concept_data, concepts, options, check)
        quantiles = QuantileConsumer(plans, quantile)
        run_pass("dissection: quantiles", model, concept_data, modules, [quantiles], passes, checkpoint=ckpt)
        thresholds = quantiles.thresholds()
        tallies = IoUConsumer(plans, thresholds, concepts)
        run_pass("dissection: IoU", model, concept_data, modules, [tallies], passes, checkpoint=ckpt)
    finally:
        model.train(was_training)
    layers_out = {name: _layer_result(name, plans[name], thresholds[name], tallies, concepts, options,
                                      len(concept_data)) for name in modules}
    meta = {"quantile": float(quantile), "iou_threshold": float(iou_threshold), "union": union,
            "model_name": type(model).__name__, "model_fingerprint": model_fingerprint(model),
            "n_images": len(concept_data), "image_size": list(concepts.image_size),
            "mask_size": list(concepts.mask_size), "world_size": distributed.world_size()}
    return DissectionResult(layers_out, meta)


def _device(model, device) -> torch.device:
    if device is not None:
        from ..index.options import _device as checked

        return checked(device, model)
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


@dataclass
class _LayerPlan:
    """One layer's geometry and how its quantile is computed."""

    n_units: int
    map_size: tuple[int, int]
    upsampler: AlignedUpsampler
    positions: int          # positions per image contributing to the quantile (all, or a sample)
    total: int              # positions of the whole dataset contributing (P)
    keep: int               # top values kept per unit
    sampled: bool


def _plan_layers(model, modules, data, concepts: ConceptSet, options: DissectOptions, device) -> dict[str, _LayerPlan]:
    """Probe the model on the first image: map sizes, receptive fields, exact or sampled quantiles."""
    image, _, _ = read_item(get_item(data, 0)[0], 0)
    shapes = {}
    inputs = image[None].to(device)
    if options.preprocess is not None:
        inputs = options.preprocess(inputs)
    with LayerRecorder(modules, lambda n, o: shapes.__setitem__(n, tuple(o.shape[1:]))) as recorder, \
            torch.inference_mode():
        recorder.run(model, inputs)
    n = len(data)
    plans = {}
    for name in modules:
        if len(shapes[name]) != 3:
            raise InputError(f"layer {name!r} outputs shape {shapes[name]}, not (C, H, W) feature maps")
        units, h, w = shapes[name]
        rf = receptive_field(model, name, input_size=concepts.image_size)
        positions = h * w
        plans[name] = _LayerPlan(units, (h, w), AlignedUpsampler(rf, (h, w), concepts.image_size, concepts.mask_size),
                                 positions, n * positions, _keep(n * positions, options.quantile), False)
    budget = options.max_quantile_bytes
    if sum(4 * p.n_units * p.keep for p in plans.values()) > budget:
        share = budget / len(plans)
        for plan in plans.values():
            if 4 * plan.n_units * plan.keep > share:
                per_image = max(1, int(share / (4 * plan.n_units * options.quantile * n * 1.05)))
                if per_image < plan.positions:
                    plan.positions, plan.total, plan.sampled = per_image, n * per_image, True
                    plan.keep = _keep(plan.total, options.quantile)
    return plans


def _keep(total: int, quantile: float) -> int:
    """How many of the largest values ``numpy.quantile(values, 1 - quantile)`` (linear) depends on."""
    previous = math.floor((total - 1) * (1.0 - quantile))
    return int(min(total, total - previous))


def _checkpoint(model, modules, data, concepts, options: DissectOptions, check) -> Checkpoint | None:
    if not options.checkpoint and not distributed.active():
        return None
    key = {"analysis": "dissection", "model": model_fingerprint(model), "layers": list(modules),
           "data": data_fingerprint(data, lambda i: read_item(get_item(data, i), i, check)[:2]),
           "preprocess": callable_fingerprint(options.preprocess), "concepts": list(concepts.concepts),
           **options.key()}
    distributed.check_same(key, "the dissection run (model, data, preprocess and arguments)")
    return Checkpoint(options.checkpoint, key, options.checkpoint_every) if options.checkpoint else None


# ---------------------------------------------------------------------------------------------
# Pass 1: quantiles
# ---------------------------------------------------------------------------------------------
class QuantileConsumer(Consumer):
    """Per layer and unit, the largest ``keep`` activation values (of all positions or of the sample)."""

    def __init__(self, plans: dict[str, _LayerPlan], quantile: float):
        self.plans, self.quantile = plans, float(quantile)
        self.layers = tuple(plans)
        self.values = {name: torch.empty(p.n_units, 0) for name, p in plans.items()}

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        plan = self.plans[name]
        flat = output.detach().float().flatten(2)               # (B, C, X)
        if plan.sampled:
            picks = torch.stack([_sample_positions(int(i), flat.shape[2], plan.positions)
                                 for i in batch.indices.tolist()]).to(flat.device)
            flat = flat.gather(2, picks[:, None, :].expand(-1, flat.shape[1], -1))
        values = flat.permute(1, 0, 2).reshape(flat.shape[1], -1).cpu()
        self.values[name] = _top(torch.cat([self.values[name], values], dim=1), plan.keep)

    def state(self) -> dict[str, np.ndarray]:
        return {name: v.numpy().copy() for name, v in self.values.items()}

    def load_state(self, state) -> None:
        self.values = {name: torch.from_numpy(np.array(state[name], dtype=np.float32)) for name in self.plans}

    def merge_state(self, state) -> None:
        for name, plan in self.plans.items():
            theirs = torch.from_numpy(np.asarray(state[name], dtype=np.float32))
            self.values[name] = _top(torch.cat([self.values[name], theirs], dim=1), plan.keep)

    def thresholds(self) -> dict[str, np.ndarray]:
        """Per layer ``(C,)`` float64: ``numpy.quantile(values, 1 - quantile)`` with linear interpolation."""
        out = {}
        for name, plan in self.plans.items():
            top = np.sort(self.values[name].numpy().astype(np.float64), axis=1)[:, ::-1]   # descending
            if top.shape[1] < plan.keep:
                raise RuntimeError(f"layer {name!r}: {top.shape[1]} values kept, {plan.keep} needed")
            out[name] = _linear_quantile(top, plan.total, self.quantile)
        return out

    def result(self):
        return self.thresholds()


def _top(values: torch.Tensor, keep: int) -> torch.Tensor:
    if values.shape[1] <= keep:
        return values
    return torch.topk(values, keep, dim=1, largest=True, sorted=False).values


def _sample_positions(image_index: int, positions: int, count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_SAMPLE_SEED * 1_000_003 + image_index)
    return torch.randperm(positions, generator=generator)[:count]


def _linear_quantile(descending: np.ndarray, total: int, quantile: float) -> np.ndarray:
    """``numpy.quantile(all_values, 1 - quantile)`` (method "linear") from each row's largest values.

    Follows NumPy's computation: virtual index ``(n - 1) * (1 - quantile)``, the two neighbouring
    order statistics, and its two-sided linear interpolation.
    """
    virtual = (total - 1) * (1.0 - quantile)
    previous = int(math.floor(virtual))
    following = min(previous + 1, total - 1)
    if virtual >= total - 1:
        previous = following = total - 1
    gamma = virtual - previous
    a = descending[:, total - 1 - previous]
    b = descending[:, total - 1 - following]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


# ---------------------------------------------------------------------------------------------
# Pass 2: IoU tallies
# ---------------------------------------------------------------------------------------------
class IoUConsumer(Consumer):
    """Integer tallies per layer: ``|M_k & L_c|`` (C, K), ``|M_k|`` overall (C,) and per labelled
    category (C, G), positions above the threshold (C,), and ``|L_c|`` (K,)."""

    _CHUNK = 2**22  # mask pixels upsampled at once (float64)

    def __init__(self, plans: dict[str, _LayerPlan], thresholds: dict[str, np.ndarray], concepts: ConceptSet):
        self.plans, self.layers = plans, tuple(plans)
        self.thresholds = {n: torch.from_numpy(t) for n, t in thresholds.items()}
        self.n_categories = len(concepts.category_names)
        self._category_onehot = torch.nn.functional.one_hot(torch.from_numpy(concepts.category_of),
                                                            self.n_categories).float()
        k = len(concepts.concepts)
        self.tallies = {n: {"both": np.zeros((p.n_units, k), np.int64), "units": np.zeros(p.n_units, np.int64),
                            "units_cat": np.zeros((p.n_units, self.n_categories), np.int64),
                            "above": np.zeros(p.n_units, np.int64)} for n, p in plans.items()}
        self.concept_pixels = np.zeros(k, np.int64)
        self._batch: dict = {}

    def _masks(self, batch: Batch):
        """The batch's masks as (B, Hm, Wm, K) and which categories each image labels (B, G)."""
        if self._batch.get("number") != batch.number:
            masks = batch.extra
            present = masks.flatten(2).any(dim=2)                        # (B, K)
            labelled = (present.float() @ self._category_onehot) > 0          # (B, G)
            self._batch = {"number": batch.number, "pixels": masks.permute(0, 2, 3, 1).contiguous(),
                           "labelled": labelled, "counted": False}
        return self._batch

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        masks = self._masks(batch)
        tally, plan = self.tallies[name], self.plans[name]
        threshold = self.thresholds[name].to(output.device)
        maps = output.detach().to(torch.float64)                          # (B, C, h, w)
        tally["above"] += (maps > threshold[None, :, None, None]).sum(dim=(0, 2, 3)).cpu().numpy()
        active = (maps.amax(dim=(2, 3)) > threshold[None, :]).nonzero().cpu()  # (n, 2): image, unit
        pixels = masks["pixels"]
        per = max(1, self._CHUNK // max(1, pixels.shape[1] * pixels.shape[2]))
        for start in range(0, len(active), per):
            pairs = active[start:start + per]
            b, c = pairs[:, 0], pairs[:, 1]
            up = plan.upsampler(maps[b.to(maps.device), c.to(maps.device)]).cpu()
            above = up > self.thresholds[name][c][:, None, None]           # (n, Hm, Wm)
            counts = above.flatten(1).sum(dim=1)
            tally["units"] += np.bincount(c.numpy(), weights=counts.numpy(), minlength=plan.n_units).astype(np.int64)
            per_cat = counts[:, None] * masks["labelled"][b].long()
            np.add.at(tally["units_cat"], c.numpy(), per_cat.numpy())
            where = above.nonzero()                                        # (m, 3): pair, y, x
            hits = pixels[b[where[:, 0]], where[:, 1], where[:, 2]].long()  # (m, K)
            both = torch.zeros(plan.n_units, hits.shape[1], dtype=torch.int64)
            both.index_add_(0, c[where[:, 0]], hits)
            tally["both"] += both.numpy()

    def on_batch(self, batch: Batch) -> None:
        self.concept_pixels += batch.extra.sum(dim=(0, 2, 3)).numpy().astype(np.int64)

    def state(self) -> dict[str, np.ndarray]:
        out = {f"{n}|{k}": v.copy() for n, t in self.tallies.items() for k, v in t.items()}
        out["concept_pixels"] = self.concept_pixels.copy()
        return out

    def load_state(self, state) -> None:
        for n, t in self.tallies.items():
            for k in t:
                t[k] = np.array(state[f"{n}|{k}"], dtype=np.int64)
        self.concept_pixels = np.array(state["concept_pixels"], dtype=np.int64)

    def merge_state(self, state) -> None:
        for n, t in self.tallies.items():
            for k in t:
                t[k] += np.asarray(state[f"{n}|{k}"], dtype=np.int64)
        self.concept_pixels += np.asarray(state["concept_pixels"], dtype=np.int64)

    def result(self):
        return self.tallies


def _layer_result(name: str, plan: _LayerPlan, thresholds: np.ndarray, tallies: IoUConsumer,
                  concepts: ConceptSet, options: DissectOptions, n_images: int) -> LayerDissection:
    t = tallies.tallies[name]
    k = len(concepts.concepts)
    if options.union == "all":
        unit_pixels = np.repeat(t["units"][:, None], k, axis=1)
    else:
        unit_pixels = t["units_cat"][:, concepts.category_of]
    concept_pixels = np.repeat(tallies.concept_pixels[None, :], plan.n_units, axis=0)
    union = unit_pixels + concept_pixels - t["both"]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, t["both"] / np.where(union > 0, union, 1), 0.0)
    best = iou.argmax(axis=1) if k else np.zeros(plan.n_units, np.int64)
    best_iou = iou[np.arange(plan.n_units), best] if k else np.zeros(plan.n_units)
    positions = n_images * plan.map_size[0] * plan.map_size[1]
    bound = 3 * math.sqrt(options.quantile * (1 - options.quantile) / plan.total) if plan.sampled else 0.0
    return LayerDissection(
        name, iou.astype(np.float32), thresholds.astype(np.float64), list(concepts.concepts),
        list(concepts.categories), np.where(best_iou > options.iou_threshold, best, -1).astype(np.int64),
        best_iou.astype(np.float32), t["both"].copy(), unit_pixels.astype(np.int64), concept_pixels,
        (t["above"] / positions).astype(np.float64), "sampled" if plan.sampled else "exact",
        plan.positions / (plan.map_size[0] * plan.map_size[1]), bound)
