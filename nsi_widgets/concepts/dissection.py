"""Network Dissection (Bau et al. 2017) on the streaming engine (docs/methods.md section 7).

Two passes over a concept dataset (items ``(image, masks)``, :mod:`.data`); by default only the
first runs the model:

1. *Quantiles* (a forward): per unit the threshold ``T_k``, the top ``quantile`` of its activations
   over all positions of all images. Exact: every unit keeps its ``k`` largest values, just enough
   for ``T_k = numpy.quantile(values, 1 - quantile)`` with NumPy's default ("linear")
   interpolation, the rule of NetDissect-Lite (``np.percentile``). By default (*one forward*) each
   kept value also keeps its position and its 3 x 3 neighbourhood of map values: once ``T_k`` is
   known, the map positions above it and the corners of every upsampling cell around them are
   known too, which is all the IoU pass needs of the maps. When those entries would exceed
   ``max_quantile_bytes`` but the values alone fit, the values alone are kept and the IoU pass
   forwards again (*two forwards*); beyond that, each image contributes a fixed share of its
   positions instead, chosen by a permutation seeded by the image's index (deterministic, so
   resumed and distributed runs agree), and the result reports the sample rate and a three-sigma
   bound on the share above the threshold; the IoU pass (with a forward) also measures the share
   above the threshold exactly (``above_share``).
2. *IoU*: each map upsampled to the mask size aligned with the receptive fields (:mod:`.upsample`),
   ``M_k = up(A_k) > T_k``, and integer tallies of ``|M_k & L_c|``, ``|M_k|`` and ``|L_c|`` over the
   dataset (set IoU, not a mean of per-image IoUs). Only cells next to a map position above the
   threshold are upsampled (an upsampled value never exceeds its cell's largest corner), and
   intersections are counted at the pixels of ``M_k`` only. In the one-forward mode this pass
   reads only the masks and reads each cell's corners from the neighbourhood of the candidate that
   owns it (:func:`_owned_cells`); a layer whose threshold ties with its smallest kept value (a
   value equal to it may be missing from the kept ones) is counted from a second forward instead
   (``meta["second_pass_layers"]``). Either way the tallies are those of upsampling every map.

Counting conventions (``union=``): ``"labelled"`` (default, NetDissect-Lite's ``tally_units_cat``:
``|M_k|`` is counted only over images where concept ``c``'s category is labelled, i.e. has a pixel of
some concept of that category) and ``"all"`` (``|M_k|`` over all images). On data where every image
labels every category (the embedded default's concept set) they agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
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
from .data import ConceptSet, Indices, MaskReader, describe, image_view, placeholder
from .dissection_results import DissectionResult, LayerDissection
from .upsample import AlignedUpsampler

UNIONS = ("labelled", "all")
_TIE_MARGIN = 16  # one-forward layers keep this many values more than the quantile needs: a threshold
                  # equal to the last needed value (ties) then still lies above the smallest kept one
_TRANSIENT = 4   # the one-forward entries take up to this many times their size while they are merged
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
        :mod:`nsi_widgets.concepts.data`). Its images alone (``.image_data``) and masks in batches
        (``.masks(indices)``), where it offers them and they agree with item 0, are read instead of
        the items by the passes that need only those.
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
        Memory for the exact quantiles of all layers: with their positions and neighbourhoods (48
        bytes per kept value, 4 x that counted for the copies made while merging; one forward),
        else the values alone (4 bytes, two forwards), else sampled (see the module).

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
        images, split = image_view(concept_data)                      # the first pass needs no masks
        first = replace(passes, check=replace(check, split=split))
        run_pass("dissection: quantiles", model, images, modules, [quantiles], first, checkpoint=ckpt)
        thresholds = quantiles.thresholds()
        found = {name: quantiles.candidates(name, thresholds[name]) for name in modules}
        tallies = IoUConsumer(plans, thresholds, concepts, {n: c for n, c in found.items() if c is not None})
        del quantiles, found
        second, data = passes, concept_data
        if not tallies.layers:                          # the images were checked: the masks alone are read
            tallies.read_masks = MaskReader.of(concept_data, concepts)
            if tallies.read_masks is None:
                second = replace(passes, check=DataCheck(split=concepts.masks_only))
            else:
                second, data = replace(passes, check=DataCheck(split=placeholder)), Indices(len(concept_data))
        run_pass("dissection: IoU", model, data, {n: modules[n] for n in tallies.layers}, [tallies], second,
                 checkpoint=ckpt)
    finally:
        model.train(was_training)
    layers_out = {name: _layer_result(name, plans[name], thresholds[name], tallies, concepts, options,
                                      len(concept_data)) for name in modules}
    meta = {"quantile": float(quantile), "iou_threshold": float(iou_threshold), "union": union,
            "model_name": type(model).__name__, "model_fingerprint": model_fingerprint(model),
            "n_images": len(concept_data), "image_size": list(concepts.image_size),
            "mask_size": list(concepts.mask_size), "world_size": distributed.world_size(),
            "forward_passes": 2 if tallies.layers else 1, "second_pass_layers": list(tallies.layers)}
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
    deferred: bool = False  # one forward: the kept values carry their positions and neighbourhoods

    @property
    def neighbourhood(self) -> int:
        """Map values kept around each kept value (3 x 3, or none where the upsampling is the identity)."""
        return 0 if self.upsampler.identity else 9

    def kept_bytes(self, deferred: bool) -> int:
        """Bytes of the kept values (and, when ``deferred``, their positions and neighbourhoods)."""
        per_value = 4 + (8 + 4 * self.neighbourhood if deferred else 0)
        return self.n_units * self.keep * per_value


def _plan_layers(model, modules, data, concepts: ConceptSet, options: DissectOptions, device) -> dict[str, _LayerPlan]:
    """Probe the model on the first image: map sizes, receptive fields, exact or sampled quantiles."""
    image, _, _ = read_item(get_item(data, 0)[0], 0)
    shapes, dtypes = {}, {}
    inputs = image[None].to(device)
    if options.preprocess is not None:
        inputs = options.preprocess(inputs)

    def probe(name, output):
        shapes[name], dtypes[name] = tuple(output.shape[1:]), output.dtype

    with LayerRecorder(modules, probe) as recorder, torch.inference_mode():
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
    if all(dtypes[name] != torch.float64 for name in plans) and \
            _TRANSIENT * sum(p.kept_bytes(deferred=True) for p in plans.values()) <= budget:
        for plan in plans.values():
            plan.deferred = True
            plan.keep = min(plan.total, plan.keep + _TIE_MARGIN)
        return plans
    if sum(p.kept_bytes(deferred=False) for p in plans.values()) > budget:
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
    key = {"analysis": "dissection", "version": 2, "model": model_fingerprint(model), "layers": list(modules),
           "data": data_fingerprint(data, lambda i: read_item(get_item(data, i), i, check)[:2]),
           "preprocess": callable_fingerprint(options.preprocess), "concepts": list(concepts.concepts),
           **options.key()}
    distributed.check_same(key, "the dissection run (model, data, preprocess and arguments)")
    return Checkpoint(options.checkpoint, key, options.checkpoint_every) if options.checkpoint else None


# ---------------------------------------------------------------------------------------------
# Pass 1: quantiles
# ---------------------------------------------------------------------------------------------
class QuantileConsumer(Consumer):
    """Per layer and unit, the largest ``keep`` activation values (of all positions or of the sample).

    Once a unit holds ``keep`` values, the smallest of them bounds what can still enter: a batch's
    values above it are found through row maxima (one reduction over the map, then only the rows
    that reach the bound), buffered, and folded in with ``topk`` when the buffer outgrows the kept
    values (and before any state is read), so the kept values are always the exact top ``keep``.

    For *deferred* layers (:class:`_LayerPlan`) each kept value also keeps (in an :class:`_EntryPool`,
    addressed by the id beside the value) where it is (image, row, column) and its 3 x 3 neighbourhood
    of map values (``-inf`` beyond the map), which is all the IoU counting needs of the map once the
    threshold is known (:meth:`candidates`); and, unless its upsampling is the identity, the layer's
    smallest value (with the kept maxima, the rounding margin of :func:`_candidate_bound`). Other
    layers keep the values alone.
    """

    _COMPACT = 3      # drop the entries of values no longer kept when the pool is this many times the kept ones

    def __init__(self, plans: dict[str, _LayerPlan], quantile: float):
        self.plans, self.quantile = plans, float(quantile)
        self.layers = tuple(plans)
        self.values = {name: torch.empty(p.n_units, 0) for name, p in plans.items()}
        self.ids = {name: _no_ids(p) for name, p in plans.items()}    # pool ids beside the values, or None
        self.pools = {name: _EntryPool(p.neighbourhood) for name, p in plans.items() if p.deferred}
        self.low = {name: math.inf for name in plans}
        self._pending: dict[str, list] = {name: [] for name in plans}
        self._lower: dict[str, torch.Tensor | None] = {name: None for name in plans}
        self._buffers: dict[str, torch.Tensor] = {}

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        plan = self.plans[name]
        maps = output.detach().float()                                   # (B, C, h, w)
        if plan.sampled:
            flat = maps.flatten(2)
            picks = torch.stack([_sample_positions(int(i), flat.shape[2], plan.positions)
                                 for i in batch.indices.tolist()]).to(flat.device)
            maps = flat.gather(2, picks[:, None, :].expand(-1, flat.shape[1], -1))[:, :, None, :]
        if plan.deferred and not plan.upsampler.identity:        # the rounding margin of blends needs the smallest
            self.low[name] = min(self.low[name], float(maps.amin()))
        lower = self._lower[name]
        if lower is None:                                                 # still filling: keep the batch's top
            values = maps.transpose(0, 1).reshape(maps.shape[1], -1)
            top = torch.topk(values, min(plan.keep, values.shape[1]), dim=1, sorted=False)
            units = torch.arange(maps.shape[1], device=maps.device)[:, None].expand_as(top.indices).reshape(-1)
            flat = top.indices.reshape(-1)
            b, y, x = _unravel(flat, maps.shape[:1] + maps.shape[2:])
            ids = self._add_entries(name, batch, maps, units, b, y, x)
            self._combine(name, top.values.cpu(), None if ids is None else ids.reshape(top.indices.shape))
            return
        units, values, (b, y, x) = _above(maps, lower.to(maps.device), by_unit=True)
        if len(values):
            ids = self._add_entries(name, batch, maps, units, b, y, x)
            self._pending[name].append((units.cpu(), values.cpu(), ids))
            if sum(len(p[1]) for p in self._pending[name]) > self.values[name].numel():
                self._fold(name)

    def _add_entries(self, name: str, batch: Batch, maps, units, b, y, x) -> torch.Tensor | None:
        """Pool ids of the map entries ``(units, b, y, x)`` of a deferred layer (else None): their
        place ``(image h + y) w + x`` and, unless the upsampling is the identity, their 3 x 3
        neighbourhood (rows first, ``-inf`` beyond the map)."""
        pool = self.pools.get(name)
        if pool is None:
            return None
        n_images, n_units, h, w = maps.shape
        where = ((_pick(batch.indices.to(b.device), b) * h + y) * w + x).cpu()
        around = None
        if pool.neighbourhood:
            padded = self._padded(name, maps)                                          # (B, C, h + 2, w + 2)
            centre = ((b * n_units + units) * (h + 2) + y + 1) * (w + 2) + x + 1
            offsets = (centre[:, None] + _offsets(w + 2, centre.device)).reshape(-1)
            around = _pick(padded.reshape(-1), offsets).reshape(-1, 9).cpu()
        return pool.add(where, around)

    def _padded(self, name: str, maps: torch.Tensor) -> torch.Tensor:
        """``maps`` with a border of ``-inf``, in a buffer kept for the layer (a fresh one per batch costs
        more: large allocations come as new pages)."""
        shape = (*maps.shape[:2], maps.shape[2] + 2, maps.shape[3] + 2)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.device != maps.device:
            buffer = self._buffers[name] = torch.full(shape, -math.inf, device=maps.device)
        buffer[:, :, 1:-1, 1:-1] = maps
        return buffer

    def _combine(self, name: str, values: torch.Tensor, ids: torch.Tensor | None) -> None:
        """Keep the top ``keep`` of the kept values and ``values`` (C, n), with their pool ids (if any)."""
        values = torch.cat([self.values[name], values], dim=1)
        pool = self.pools.get(name)
        if pool is not None:
            ids = torch.cat([self.ids[name], ids], dim=1)
        keep = self.plans[name].keep
        if values.shape[1] > keep:
            chosen = torch.topk(values, keep, dim=1, largest=True, sorted=False).indices
            values = values.gather(1, chosen)
            ids = ids.gather(1, chosen) if pool is not None else None
        self.values[name], self.ids[name] = values, ids
        full = values.shape[1] >= keep and values.shape[1] > 0
        self._lower[name] = values.amin(dim=1) if full else None
        if pool is not None and pool.size > self._COMPACT * ids.numel() + 4096:
            self.ids[name] = pool.compact(ids)

    def _fold(self, name: str) -> None:
        """Merge the buffered values of ``name`` into its kept values."""
        pending, self._pending[name] = self._pending[name], []
        if not pending:
            return
        n_units = self.plans[name].n_units
        filled, slots = torch.zeros(n_units, dtype=torch.int64), []
        for units, *_ in pending:                 # each batch's entries come ordered by unit
            counts = torch.bincount(units, minlength=n_units)
            first = torch.cumsum(counts, 0) - counts
            slots.append(torch.arange(len(units)) + torch.repeat_interleave(filled - first, counts))
            filled += counts
        units, values = torch.cat([p[0] for p in pending]), torch.cat([p[1] for p in pending])
        slot, width = torch.cat(slots), int(filled.max())
        dense = torch.full((n_units, width), -math.inf)
        dense[units, slot] = values
        dense_ids = None
        if name in self.pools:
            dense_ids = torch.zeros((n_units, width), dtype=torch.int64)
            dense_ids[units, slot] = torch.cat([p[2] for p in pending])
        self._combine(name, dense, dense_ids)

    def state(self) -> dict[str, np.ndarray]:
        out = {}
        for name in self.plans:
            self._fold(name)
            out[name] = self.values[name].numpy().copy()
            pool = self.pools.get(name)
            if pool is not None:
                where, around = pool.rows(self.ids[name])
                out[f"{name}|where"], out[f"{name}|around"] = where.numpy(), around.numpy()
                out[f"{name}|low"] = np.array([self.low[name]], np.float64)
        return out

    def _read(self, name: str, state) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """``(values, pool ids or None, smallest value)`` of a saved or received state (entries added to
        the pool)."""
        values = torch.from_numpy(np.array(state[name], dtype=np.float32))
        pool = self.pools.get(name)
        if pool is None:
            return values, None, math.inf
        where = torch.from_numpy(np.array(state[f"{name}|where"], dtype=np.int64)).reshape(-1)
        around = torch.from_numpy(np.array(state[f"{name}|around"], dtype=np.float32))
        ids = pool.add(where, around.reshape(-1, pool.neighbourhood) if pool.neighbourhood else None)
        return values, ids.reshape(values.shape), float(np.asarray(state[f"{name}|low"])[0])

    def load_state(self, state) -> None:
        for name, plan in self.plans.items():
            self._pending[name] = []
            if name in self.pools:
                self.pools[name] = _EntryPool(plan.neighbourhood)
            values, ids, low = self._read(name, state)
            self.values[name], self.ids[name] = torch.empty(plan.n_units, 0), _no_ids(plan)
            self._combine(name, values, ids)
            self.low[name] = low

    def merge_state(self, state) -> None:
        for name in self.plans:
            self._fold(name)
            values, ids, low = self._read(name, state)
            self._combine(name, values, ids)
            self.low[name] = min(self.low[name], low)

    def thresholds(self) -> dict[str, np.ndarray]:
        """Per layer ``(C,)`` float64: ``numpy.quantile(values, 1 - quantile)`` with linear interpolation."""
        out = {}
        for name, plan in self.plans.items():
            self._fold(name)
            top = np.sort(self.values[name].numpy().astype(np.float64), axis=1)[:, ::-1]   # descending
            if top.shape[1] < plan.keep:
                raise RuntimeError(f"layer {name!r}: {top.shape[1]} values kept, {plan.keep} needed")
            out[name] = _linear_quantile(top, plan.total, self.quantile)
        return out

    def candidates(self, name: str, thresholds: np.ndarray) -> "_Candidates | None":
        """The kept entries that the IoU counting of a deferred layer needs, or None when the kept
        values may miss one (the threshold within the rounding margin of the smallest kept value:
        ties; the layer then needs a second forward pass)."""
        plan = self.plans[name]
        if not plan.deferred:
            return None
        self._fold(name)
        t = torch.from_numpy(np.asarray(thresholds, np.float64))
        high = self.values[name].amax(dim=1)                             # the kept values hold each maximum
        if plan.upsampler.identity:       # no blends: the positions above T_k are those above its float32 bound
            wide = t.clone()
        else:
            wide = _candidate_bound(torch.tensor(self.low[name]), high[None, :, None], t)
        smallest = self.values[name].amin(dim=1).double()
        zeros = (t == 0) & (smallest == 0) & (self.low[name] >= 0)   # all else is 0, and blends of 0 are 0
        if not bool(((wide >= smallest) | zeros).all()):
            return None
        bound = torch.where(zeros, 0.0, _narrow(wide, torch.float32).double())   # zeros: positive corners only
        chosen = self.values[name].double() > bound[:, None]              # (C, keep)
        units, slot = _where_nd(chosen)
        h, w = plan.map_size
        where, around = self.pools[name].rows(self.ids[name][units, slot])
        image, y, x = _unravel(where, (-1, h, w))
        order = _by_image(image)
        return _Candidates(_pick(units, order), _pick(self.values[name][units, slot], order),
                           _pick(torch.stack([image, y, x], dim=1), order), _pick(around, order), wide, bound)

    def result(self):
        return self.thresholds()


def _where(mask: torch.Tensor) -> torch.Tensor:
    """The flat indices (row-major) of the true entries of ``mask`` (as ``nonzero``; NumPy's on the CPU,
    which is faster)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.reshape(-1).nonzero().squeeze(1)


def _where_nd(mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The coordinates of the true entries of ``mask``, one tensor per dimension (``nonzero().unbind(1)``)."""
    return _unravel(_where(mask), mask.shape)


def _unravel(flat: torch.Tensor, shape) -> tuple[torch.Tensor, ...]:
    """The coordinates in ``shape`` (row-major) of the flat indices ``flat``, one tensor per dimension
    (by NumPy on the CPU: its integer division by one number is several times faster than torch's)."""
    out = []
    if flat.device.type == "cpu":
        rest = flat.numpy()
        for size in reversed(shape[1:]):
            rest, last = np.divmod(rest, size)
            out.append(torch.from_numpy(last))
        return (torch.from_numpy(rest), *reversed(out))
    for size in reversed(shape[1:]):
        out.append(flat % size)
        flat = flat // size
    return (flat, *reversed(out))


def _by_image(image: torch.Tensor) -> torch.Tensor:
    """A stable order of entries by image index (a radix sort of 16-bit keys where they fit)."""
    keys = image.numpy()
    if len(keys) and int(keys.max()) < 2**16:
        keys = keys.astype(np.uint16)
    return torch.from_numpy(np.argsort(keys, kind="stable"))


def _pick(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` along the first dimension (``index_select``: a few times faster than indexing)."""
    return torch.index_select(table, 0, index)


def _no_ids(plan: _LayerPlan) -> torch.Tensor | None:
    """The empty pool ids of a deferred layer; None for a layer that keeps values alone."""
    return torch.empty(plan.n_units, 0, dtype=torch.int64) if plan.deferred else None


def _offsets(width: int, device) -> torch.Tensor:
    """Flat offsets of the 3 x 3 neighbourhood (rows first) in a map ``width`` wide."""
    return torch.tensor([dy * width + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], device=device)


class _EntryPool:
    """The entries (place, neighbourhood) of one deferred layer's kept values, appended as they come
    and addressed by id, so that merging the kept values moves only ids; :meth:`compact` drops the
    entries of values no longer kept."""

    def __init__(self, neighbourhood: int):
        self.neighbourhood = neighbourhood
        self.size = 0
        self._where: list[torch.Tensor] = []
        self._around: list[torch.Tensor] = []

    def add(self, where: torch.Tensor, around: torch.Tensor | None) -> torch.Tensor:
        """Append ``where`` (n,) int64 and ``around`` (n, 9) (or None); return their ids."""
        ids = torch.arange(self.size, self.size + len(where), dtype=torch.int64)
        self._where.append(where)
        if self.neighbourhood:
            self._around.append(around)
        self.size += len(where)
        return ids

    def rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(where, around)`` of ``ids`` (any shape: the rows come in its order, flattened)."""
        self._join()
        flat = ids.reshape(-1)
        where = _pick(self._where[0], flat) if self._where else torch.zeros(0, dtype=torch.int64)
        around = _pick(self._around[0], flat) if self.neighbourhood and self._around else torch.empty(len(flat), 0)
        return where, around

    def compact(self, ids: torch.Tensor) -> torch.Tensor:
        """Keep only the entries of ``ids``; return their new ids (same shape)."""
        where, around = self.rows(ids)
        self._where, self._around, self.size = [where], [around] if self.neighbourhood else [], len(where)
        return torch.arange(len(where), dtype=torch.int64).reshape(ids.shape)

    def _join(self) -> None:
        if len(self._where) > 1:
            self._where = [torch.cat(self._where)]
        if len(self._around) > 1:
            self._around = [torch.cat(self._around)]


@dataclass
class _Candidates:
    """A deferred layer's map entries above the candidate bound, sorted by image (see
    :meth:`QuantileConsumer.candidates`): unit, value, (image, row, column), 3 x 3 neighbourhood."""

    units: torch.Tensor
    values: torch.Tensor
    where: torch.Tensor
    around: torch.Tensor
    wide: torch.Tensor
    bound: torch.Tensor   # (C,) float64: the candidates are the map entries above it

    def of_images(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, b)``: the candidates of the images ``indices`` (the batch) and their batch position."""
        images = self.where[:, 0].numpy()
        wanted = indices.numpy()
        lo, hi = np.searchsorted(images, wanted, "left"), np.searchsorted(images, wanted, "right")
        counts = hi - lo
        starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)      # each image's rows lo .. hi - 1 in turn
        rows = np.arange(int(counts.sum()), dtype=np.int64) + starts
        return torch.from_numpy(rows), torch.from_numpy(np.repeat(np.arange(len(wanted)), counts))


def _above(maps: torch.Tensor, bound: torch.Tensor, by_unit: bool = False, rowmax: torch.Tensor | None = None):
    """The entries of ``maps`` (B, C, h, w) above ``bound`` (C,): ``(units, values, (b, y, x))``.

    Row maxima first (one reduction; or given), then only the rows that reach the bound are compared.
    With ``by_unit`` the entries come ordered by unit (else by image)."""
    rowmax = maps.amax(dim=3) if rowmax is None else rowmax               # (B, C, h)
    n_units, h, w = maps.shape[1:]
    if by_unit:
        c, b, y = _where_nd(rowmax.transpose(0, 1) > bound[:, None, None])
    else:
        b, c, y = _where_nd(rowmax > bound[None, :, None])
    rows = _pick(maps.reshape(-1, w), (b * n_units + c) * h + y)          # (r, w)
    r, x = _where_nd(rows > _pick(bound, c)[:, None])
    return _pick(c, r), _pick(rows.reshape(-1), r * w + x), (_pick(b, r), _pick(y, r), x)


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
    category (C, G), positions above the threshold (C,), and ``|L_c|`` (K,).

    Per batch, each mask pixel's set of concepts becomes a *pattern* id (the distinct patterns of the
    batch, :func:`_mask_patterns`), so a thresholded pixel costs one lookup, not one per concept.
    Per layer, only the cells of the upsampling (:class:`~.upsample.CellAxis`) with a corner above
    ``T_k`` can hold pixels above it; their pixels are upsampled with the formula of
    :class:`~.upsample.AlignedUpsampler` (the same float64 operations, so the same values) and
    compared with ``T_k``.

    Layers with ``candidates`` (deferred layers, :meth:`QuantileConsumer.candidates`) need no forward:
    their map positions above the bound and the 3 x 3 neighbourhoods around them come from the first
    pass, each cell's corners are read from the candidate that owns it (:func:`_owned_cells`), and
    they are counted with the same operations per batch of masks. Only the other layers are recorded
    (``layers``).
    """

    _CELL_PIXELS = 2**21  # cell pixels upsampled at once

    def __init__(self, plans: dict[str, _LayerPlan], thresholds: dict[str, np.ndarray], concepts: ConceptSet,
                 candidates: dict[str, "_Candidates"] | None = None):
        self.candidates = dict(candidates or {})
        self.plans, self.layers = plans, tuple(n for n in plans if n not in self.candidates)
        self.thresholds = {n: torch.from_numpy(np.asarray(t, dtype=np.float64)) for n, t in thresholds.items()}
        self.n_categories = len(concepts.category_names)
        self._category_onehot = np.eye(self.n_categories, dtype=np.int64)[concepts.category_of]   # (K, G)
        k = len(concepts.concepts)
        self.tallies = {n: {"both": np.zeros((p.n_units, k), np.int64), "units": np.zeros(p.n_units, np.int64),
                            "units_cat": np.zeros((p.n_units, self.n_categories), np.int64),
                            "above": np.zeros(p.n_units, np.int64)} for n, p in plans.items()}
        self.concept_pixels = np.zeros(k, np.int64)
        self.read_masks: Callable | None = None       # indices -> masks, when they are not the batches' extra
        self._batch: dict = {}

    def _masks(self, batch: Batch) -> dict:
        """The batch's mask patterns, computed once per batch (see :func:`_mask_patterns`)."""
        if self._batch.get("number") != batch.number:
            masks = batch.extra if self.read_masks is None else self.read_masks(batch.indices.tolist())
            self._batch = {"number": batch.number, **_mask_patterns(masks, self._category_onehot)}
        return self._batch

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        maps = output.detach()
        maps = (maps if maps.dtype == torch.float64 else maps.float()).contiguous()
        thresholds = self.thresholds[name].to(maps.device)
        rowmax = maps.amax(dim=3)                                                 # (B, C, h)
        wide = _candidate_bound(maps.amin(), rowmax, thresholds)
        units, values, (b, y, x) = _above(maps, _narrow(wide, maps.dtype), rowmax=rowmax)
        self._count_layer(name, maps, thresholds, wide, units, values, b, y, x, self._masks(batch))

    def _deferred(self, batch: Batch, name: str) -> None:
        """Count a deferred layer's pixels of this batch's images from the first pass's entries.

        Every cell with a corner above the candidate bound is counted once, by its *owner*: the first of
        its corners (in the order ``(i, j)``, ``(i, j')``, ``(i', j)``, ``(i', j')``) above the bound,
        which is a candidate whose 3 x 3 neighbourhood holds all four corners."""
        found = self.candidates[name]
        rows, b = found.of_images(batch.indices.cpu())
        plan, units, values = self.plans[name], _pick(found.units, rows), _pick(found.values, rows)
        where = _pick(found.where, rows)
        y, x = where[:, 1], where[:, 2]
        masks = self._masks(batch)
        self._count_above(name, self.thresholds[name], units, values, b, y, x, masks)
        if plan.upsampler.identity or not len(units):
            return
        cells, corners = _owned_cells(plan.upsampler.cells, units, b, y, x, _pick(found.around, rows), found.bound)
        self._count_cells(name, cells, corners, self.thresholds[name], found.wide, masks)

    def _count_layer(self, name, maps, thresholds, wide, units, values, b, y, x, masks) -> None:
        """Tally the layer's pixels above ``T_k`` from its map positions above the candidate bound
        (``maps``: the layer's maps, contiguous)."""
        plan = self.plans[name]
        self._count_above(name, thresholds, units, values, b, y, x, masks)
        if plan.upsampler.identity or not len(units):
            return
        shape = (len(masks["labelled"]), plan.n_units, *plan.map_size)
        cells = _cells(plan.upsampler.cells, units, b, y, x, shape)
        self._count_cells(name, cells, _map_corners(plan.upsampler.cells, maps, cells), thresholds, wide, masks)

    def _count_above(self, name, thresholds, units, values, b, y, x, masks) -> None:
        """Tally the map positions above ``T_k`` (``above``); where the upsampling is the identity they
        are ``M_k`` itself."""
        tally, plan = self.tallies[name], self.plans[name]
        above = _where(values.double() > _pick(thresholds, units))
        tally["above"] += np.bincount(_pick(units, above).cpu().numpy(), minlength=plan.n_units)
        if plan.upsampler.identity and len(above):
            self._tally(name, _pick(units, above).cpu().numpy(), *(_pick(t, above).cpu() for t in (b, y, x)), masks)

    def _count_cells(self, name, cells, corners, thresholds, wide, masks) -> None:
        """:meth:`_count` the cells a bounded number of pixels at a time."""
        ay, ax = self.plans[name].upsampler.cells
        per = max(1, self._CELL_PIXELS // max(1, ay.max_length * ax.max_length))
        for start in range(0, len(cells[0]), per):
            part = slice(start, start + per)
            self._count(name, tuple(t[part] for t in cells), tuple(t[part] for t in corners), thresholds, wide, masks)

    def _count(self, name, cells, corners, thresholds, wide, masks) -> None:
        """Upsample the pixels of ``cells`` (unit, image, cell row, cell column), whose corner values are
        ``corners`` (``a00, a10, a01, a11``: rows ``i, i'``, columns ``j, j'``; float64), threshold and
        tally them."""
        c, b, i, j = cells
        plan = self.plans[name]
        ay, ax = plan.upsampler.cells
        ty, tx = ay.torch, ax.torch
        a00, a10, a01, a11 = (t[:, None] for t in corners)
        fy, gy = _pick(ty["weights"], i), _pick(ty["complements"], i)                # f and 1 - f (NaN beyond)
        left = a00 * gy + a10 * fy                                                 # (n, Ly): rows first
        right = a01 * gy + a11 * fy
        if ax.max_length > 2:
            # Along a row the blend is linear in fx, so its largest value is at the row's first or last
            # pixel: only rows where one of them reaches the bound are blended in full.
            f, g = _pick(tx["first_last"], j), _pick(tx["first_last_complements"], j)
            ends = torch.maximum(left * g[:, :1] + right * f[:, :1], left * g[:, 1:] + right * f[:, 1:])
            cell, dy = _where_nd(ends > _pick(wide, c)[:, None])                   # NaN beyond the cell: never
        else:
            cell, dy = _where_nd(_pick(ty["inside"], i))
        if not len(cell):
            return
        row = cell * ay.max_length + dy
        column = _pick(j, cell)
        f, g = _pick(tx["weights"], column), _pick(tx["complements"], column)
        up = _pick(left.reshape(-1), row)[:, None] * g + _pick(right.reshape(-1), row)[:, None] * f   # (m, Lx)
        unit = _pick(c, cell)
        pair, dx = _where_nd(up > _pick(thresholds, unit)[:, None])                 # NaN beyond the cell: never
        if not len(pair):
            return
        cell = _pick(cell, pair)
        self._tally(name, _pick(unit, pair).cpu().numpy(), _pick(b, cell).cpu(),
                    (_pick(ty["start"], _pick(i, cell)) + _pick(dy, pair)).cpu(),
                    (_pick(tx["start"], _pick(column, pair)) + dx).cpu(), masks)

    def _tally(self, name, unit: np.ndarray, image: torch.Tensor, row: torch.Tensor, col: torch.Tensor, masks) -> None:
        """Count the thresholded pixels ``(unit, image, row, col)`` into the layer's tallies."""
        plan, tally = self.plans[name], self.tallies[name]
        pixel = (image * masks["pixels"] + row * masks["width"] + col).numpy()
        n_units, n_images = plan.n_units, masks["labelled"].shape[0]
        per_image = np.bincount(unit * n_images + image.numpy(), minlength=n_units * n_images).reshape(n_units, -1)
        tally["units"] += per_image.sum(axis=1)
        tally["units_cat"] += per_image @ masks["labelled"]
        patterns = masks["patterns"]
        key = unit * len(patterns) + masks["pattern_of"][pixel]
        tally["both"] += np.bincount(key, minlength=n_units * len(patterns)).reshape(n_units, -1) @ patterns

    def on_batch(self, batch: Batch) -> None:
        self.concept_pixels += self._masks(batch)["concept_pixels"]
        for name in self.candidates:
            self._deferred(batch, name)

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


_EPS = float(np.finfo(np.float64).eps)


def _candidate_bound(smallest: torch.Tensor, rowmax: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Per unit, a float64 bound just below ``T_k``: every upsampled value above ``T_k`` has a cell
    corner above it. (A blend of corners never exceeds the largest in exact arithmetic; in float64 by
    at most a few roundings of the largest magnitude, which the margin covers: ``smallest`` is the
    layer's smallest value in the batch, ``rowmax`` its row maxima.)"""
    magnitude = torch.maximum(smallest.abs(), rowmax.abs().amax(dim=(0, 2))).double()
    return thresholds - 16 * _EPS * torch.maximum(magnitude, thresholds.abs())


def _narrow(bound: torch.Tensor, dtype) -> torch.Tensor:
    """``bound`` in ``dtype``, rounded down: ``x > result`` for every ``x`` of ``dtype`` above ``bound``."""
    if dtype == torch.float64:
        return bound
    narrow = bound.to(dtype)                          # rounded down, so that x > narrow for every x > bound
    return torch.where(narrow.double() > bound, torch.nextafter(narrow, torch.tensor(-math.inf, dtype=dtype)), narrow)


def _map_corners(axes, maps: torch.Tensor, cells) -> tuple[torch.Tensor, ...]:
    """The corner values ``(a00, a10, a01, a11)`` float64 of ``cells`` (unit, image, i, j) read from ``maps``
    (B, C, h, w), contiguous."""
    c, b, i, j = cells
    ni, nj = _pick(axes[0].torch["nxt"], i), _pick(axes[1].torch["nxt"], j)
    flat, (_, units, h, w) = maps.reshape(-1), maps.shape
    base = (b * units + c) * h
    corner = lambda r, q: _pick(flat, (base + r) * w + q).to(torch.float64)   # noqa: E731
    return corner(i, j), corner(ni, j), corner(i, nj), corner(ni, nj)


def _ownership_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """For every pair of relative row and column layouts of a cell (``CellAxis.rel``: ``3 r + r'``, the
    rows ``i, i'`` of the cell relative to the candidate's, 0..2; the same for columns): ``slots`` (81, 4),
    the neighbourhood slots (``3 row + column``) of the corners ``(i, j), (i, j'), (i', j), (i', j')``, and
    ``before`` (81,), the bits of the slots of the corners before the candidate's own (slot 4)."""
    slots = torch.zeros(81, 4, dtype=torch.int64)
    before = torch.zeros(81, dtype=torch.int32)
    for row_layout in range(9):
        r = (row_layout // 3, row_layout % 3)
        for col_layout in range(9):
            c = (col_layout // 3, col_layout % 3)
            corners = [3 * r[0] + c[0], 3 * r[0] + c[1], 3 * r[1] + c[0], 3 * r[1] + c[1]]
            slots[row_layout * 9 + col_layout] = torch.tensor(corners)
            own = corners.index(4) if 4 in corners else 4
            before[row_layout * 9 + col_layout] = sum(1 << k for k in set(corners[:own]) - {4})
    return slots, before


_SLOTS, _BEFORE = _ownership_tables()
_BITS = torch.tensor([float(1 << k) for k in range(9)])


def _owned_cells(axes, units, b, y, x, around: torch.Tensor, bound: torch.Tensor):
    """The cells ``(unit, image, i, j)`` owned by the candidates ``(units, b, y, x)`` and their corner values.

    A candidate's cells are those whose corners include its position (``touch``: up to 2 x 2); it
    owns a cell when no corner before its own, in the order ``(i, j)``, ``(i, j')``, ``(i', j)``,
    ``(i', j')``, lies above ``bound`` (so each cell with a corner above it is counted once). All four
    corners lie within the candidate's 3 x 3 neighbourhood ``around`` (rows first; ``bound`` is a float32
    value, so comparing in float32 is exact)."""
    ay, ax = axes
    ry, rx = _pick(ay.torch["rel"], y), _pick(ax.torch["rel"], x)                   # (n, 2) each, -1 = none
    layout = (ry[:, :, None] * 9 + rx[:, None, :]).reshape(-1)                       # (n * 4,): options a, c
    valid = ((ry >= 0)[:, :, None] & (rx >= 0)[:, None, :]).reshape(-1)
    high = around > _pick(bound.to(around.dtype), units)[:, None]                    # (n, 9)
    code = (high.to(torch.float32) @ _BITS).to(torch.int32).repeat_interleave(4)
    owned = _where(valid & ((_pick(_BEFORE, layout.clamp(min=0)) & code) == 0))
    entry, a, c = _unravel(owned, (-1, 2, 2))
    i = _pick(ay.torch["touch"].reshape(-1), _pick(y, entry) * 2 + a)
    j = _pick(ax.torch["touch"].reshape(-1), _pick(x, entry) * 2 + c)
    corners = _pick(around, entry).gather(1, _pick(_SLOTS, _pick(layout, owned))).to(torch.float64)
    cells = (_pick(units, entry), _pick(b, entry), i, j)
    return cells, (corners[:, 0], corners[:, 2], corners[:, 1], corners[:, 3])


def _cells(axes, units, b, y, x, shape) -> tuple[torch.Tensor, ...]:
    """The distinct cells ``(unit, image, i, j)`` next to the map positions ``(units, b, y, x)``."""
    ay, ax = axes
    cy, cx = _pick(ay.torch["touch"], y), _pick(ax.torch["touch"], x)              # (n, 2) each, -1 = none
    n_images, n_units, h, w = shape
    if ay.single and ax.single:
        keep = _where((cy[:, 0] >= 0) & (cx[:, 0] >= 0))
        return _pick(units, keep), _pick(b, keep), _pick(cy[:, 0], keep), _pick(cx[:, 0], keep)
    ci = cy[:, :, None].expand(-1, 2, 2).reshape(-1)
    cj = cx[:, None, :].expand(-1, 2, 2).reshape(-1)
    base = (units * n_images + b).repeat_interleave(4)
    keep = _where((ci >= 0) & (cj >= 0))
    key = torch.unique((_pick(base, keep) * h + _pick(ci, keep)) * w + _pick(cj, keep))
    return _unravel(key, (n_units, n_images, h, w))


_TABLE_BITS = 22  # up to this many concepts, distinct patterns are found with a table of 2**K flags


def _mask_patterns(masks: torch.Tensor, category_onehot: np.ndarray) -> dict:
    """Each mask pixel's set of concepts as an id into the batch's distinct sets (``patterns``).

    Returns ``pattern_of`` (B * Hm * Wm,) int64, ``patterns`` (n, K) int64 0/1, ``labelled`` (B, G) int64
    (category labelled in the image), ``concept_pixels`` (K,), and the layout (``pixels`` per image,
    ``width``)."""
    n_images, k, hm, wm = masks.shape
    bits = masks.cpu().numpy().reshape(n_images, k, hm * wm).view(np.uint8)
    if k <= 63:
        codes, present = _pattern_codes(bits)
        if k <= _TABLE_BITS:
            seen = np.zeros(1 << k, bool)
            seen[codes] = True
            distinct = np.flatnonzero(seen)
            table = np.empty(1 << k, np.int64)
            table[distinct] = np.arange(len(distinct))
            pattern_of = table[codes]
        else:
            distinct, pattern_of = np.unique(codes, return_inverse=True)
        patterns = ((distinct[:, None] >> np.arange(k)) & 1).astype(np.int64)
        present = ((present[:, None] >> np.arange(k)) & 1).astype(np.int64)                # (B, K)
    else:
        pattern_of, patterns = _pattern_bytes(bits)
        n_patterns = len(patterns)
        image = np.repeat(np.arange(n_images), hm * wm)
        counts = np.bincount(image * n_patterns + pattern_of, minlength=n_images * n_patterns).reshape(n_images, -1)
        present = (counts > 0).astype(np.int64) @ patterns
    pattern_of = pattern_of.reshape(-1).astype(np.int64, copy=False)
    labelled = ((present @ category_onehot) > 0).astype(np.int64)
    return {"pattern_of": pattern_of, "patterns": patterns, "labelled": labelled,
            "concept_pixels": np.bincount(pattern_of, minlength=len(patterns)) @ patterns, "pixels": hm * wm,
            "width": wm}


def _pattern_codes(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, present)`` of masks ``bits`` (B, K, P) uint8 0/1 with K <= 63: each pixel's concepts as the
    bits of an integer (B * P,), and each image's concepts present (B,) the same way."""
    n_images, k, pixels = bits.shape
    dtype = np.int32 if k <= 31 else np.int64
    codes, shifted = np.zeros((n_images, pixels), dtype), np.empty((n_images, pixels), dtype)
    for bit in range(k):
        np.left_shift(bits[:, bit], bit, out=shifted, dtype=dtype)
        codes |= shifted
    return codes.reshape(-1), np.bitwise_or.reduce(codes, axis=1)


def _pattern_bytes(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pattern_of, patterns)`` for any number of concepts: pixels packed into bytes, distinct rows found
    with ``numpy.unique``."""
    n_images, k, pixels = bits.shape
    packed = np.packbits(bits.transpose(0, 2, 1).reshape(n_images * pixels, k), axis=1, bitorder="little")
    codes, pattern_of = np.unique(packed.view(np.dtype((np.void, packed.shape[1])))[:, 0], return_inverse=True)
    pattern_bytes = codes.view(np.uint8).reshape(-1, packed.shape[1])
    return pattern_of, np.unpackbits(pattern_bytes, axis=1, bitorder="little")[:, :k].astype(np.int64)


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
