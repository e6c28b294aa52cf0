"""Network Dissection's picture of a unit: its thresholded map over its top images, beside the concept's mask.

For each unit, the images of the concept data where its map maximum is largest (its *top images*, as
NetDissect-Lite sorts them), and on each the mask the dissection counted, ``M_k = up(A_k) > T_k``
(the layer's map upsampled to the mask size with the dissection's own aligned upsampler,
:mod:`.upsample`, and compared with the dissection's own threshold ``T_k``, in float64, exactly as in
the IoU pass of :mod:`.dissection`), beside the mask ``L_c`` of the unit's best concept (the argmax of
its IoUs; docs/methods.md section 7). So the picture shows exactly what was counted: summed over all
images, ``M_k & L_c`` is the dissection's intersection tally.

Two passes of the streaming engine: a top-N scan of the layer over the concept data (skipped when
the top images are known already, e.g. from an earlier call: they are kept for every unit of the
layer), then one forward of only the pictured images. :func:`dissection_pictures` returns the
arrays, :func:`add_pictures` puts them into the dissection's attachment (so that the index file and
the exported page keep them), :func:`merge_dissection_attachments` combines dissections of several
layers into one attachment.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..core.data import DataCheck
from ..core.errors import InputError
from ..core.fingerprint import model_fingerprint
from ..core.layers import resolve_layers
from ..core.passes import Batch, Consumer, PassOptions, run_pass
from ..core.receptive_field import receptive_field
from ..index.results import Attachment
from ..index.scan import TopNScan
from .data import describe
from .dissection import _device
from .dissection_results import DissectionResult, LayerDissection
from .upsample import AlignedUpsampler

#: per-unit picture arrays kept in the attachment (``U`` units pictured, ``n`` images each)
PICTURE_ARRAYS = ("picture_units", "picture_images", "picture_activations", "picture_concepts", "picture_maps",
                  "picture_masks", "picture_rgb")
#: every unit's top images, kept so that a later call needs no scan (``C`` units)
CANDIDATE_ARRAYS = ("picture_candidates", "picture_candidate_activations")


@dataclass
class DissectionPictures:
    """The pictures of some units of one layer.

    Attributes
    ----------
    layer : str
    units : ndarray (U,) int64, ascending
    images : ndarray (U, n) int64
        Concept-data indices of each unit's top images, best first; -1 where there are fewer.
    activations : ndarray (U, n) float32
        The unit's map maximum on each.
    concepts : ndarray (U,) int64
        The concept pictured: the unit's best concept (argmax of its IoUs, detector or not).
    maps : ndarray (U, n, Hm, Wm) bool
        ``up(A_k) > T_k`` on each image, at the mask size.
    masks : ndarray (U, n, Hm, Wm) bool
        The concept's mask on each image.
    rgb : ndarray (U, n, H, W, 3) uint8
        The images.
    candidates, candidate_activations : ndarray (C, n)
        The top images (and map maxima) of every unit of the layer.
    """

    layer: str
    units: np.ndarray
    images: np.ndarray
    activations: np.ndarray
    concepts: np.ndarray
    maps: np.ndarray
    masks: np.ndarray
    rgb: np.ndarray
    candidates: np.ndarray
    candidate_activations: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays under their attachment names (:data:`PICTURE_ARRAYS`, :data:`CANDIDATE_ARRAYS`)."""
        names = PICTURE_ARRAYS + CANDIDATE_ARRAYS
        return {name: getattr(self, f.name) for name, f in zip(names, fields(self)[1:])}


def dissection_pictures(model: nn.Module, concept_data, dissection, layer: str, units=None, n_images: int = 4, *,
                        preprocess=None, device=None, batch_size: int = 64, num_workers: int = 0,
                        candidates: np.ndarray | None = None, progress: bool = False,
                        progress_callback: Callable[[float, str], None] | None = None) -> DissectionPictures:
    """The NetDissect picture of ``units`` of ``layer`` (see the module; docs/methods.md section 7).

    Parameters
    ----------
    model : torch.nn.Module
        The dissected model (checked against the dissection's fingerprint when it has one).
    concept_data : dataset of ``(image, masks)``
        The concept data the dissection ran on.
    dissection : DissectionResult, LayerDissection or Attachment
        The dissection (or its ``"dissection"`` attachment): its thresholds, IoUs and concepts are used.
    layer : str
    units : int or list of int, optional
        Default: every unit of the layer.
    n_images : int
        Top images per unit.
    preprocess, device, batch_size, num_workers, progress
        As for :func:`~nsi_widgets.concepts.dissect`.
    candidates : ndarray (C, >= n_images) int64, optional
        The units' top images, known from an earlier call (``DissectionPictures.candidates``): the scan
        is skipped.
    progress_callback : callable, optional
        ``(fraction in [0, 1], text)``, called as batches are done.

    Returns
    -------
    DissectionPictures
    """
    thresholds, iou, concepts = _dissection_layer(dissection, layer)
    meta = getattr(dissection, "meta", None) or {}
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if meta.get("model_fingerprint") not in (None, model_fingerprint(model)):
        raise InputError("the model is not the one that was dissected (its fingerprint differs); pass that model")
    concept_set = describe(concept_data)
    if list(concept_set.concepts) != list(concepts):
        raise InputError("the concept data names other concepts than the dissection; pass the concept data it ran on")
    units = _check_units(units, len(thresholds), layer)
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise InputError(f"n_images must be a positive integer, got {n_images!r}")
    modules = resolve_layers(model, layer)
    report = progress_callback or (lambda fraction, text: None)
    device = _device(model, device)
    check = DataCheck(image_shape=(3, *concept_set.image_size), split=concept_set.split)
    options = PassOptions(batch_size, num_workers, device, preprocess, check, progress)
    was_training = model.training
    model.eval()
    try:
        if candidates is None or np.shape(candidates)[1] < n_images:
            scan = TopNScan([layer], int(n_images))
            run_pass("dissection pictures: top images", model, concept_data, modules,
                     [scan, _Progress(len(concept_data), report, 0.0, 0.7, "top images")], options)
            top, _ = scan.result()[layer]
            candidates, candidate_acts = top["indices"], top["values"].astype(np.float32)
        else:
            candidate_acts = None
        candidates = np.asarray(candidates, dtype=np.int64)
        chosen = candidates[units, :n_images]
        best = np.argmax(iou[units], axis=1).astype(np.int64) if iou.shape[1] else np.full(len(units), -1)
        rf = receptive_field(model, layer, input_size=concept_set.image_size)
        pictures = _PictureConsumer(layer, units, chosen, best, thresholds, rf, concept_set)
        wanted = np.unique(chosen[chosen >= 0])
        run_pass("dissection pictures: maps", model, concept_data, modules,
                 [pictures, _Progress(len(wanted), report, 0.7, 1.0, "maps")], options, indices=wanted)
    finally:
        model.train(was_training)
    if candidate_acts is None:
        candidate_acts = np.full(candidates.shape, np.nan, np.float32)
        candidate_acts[units, :n_images] = pictures.peaks
    report(1.0, "done")
    return DissectionPictures(layer, units, chosen, pictures.peaks, best, pictures.maps, pictures.masks,
                              pictures.rgb, candidates, np.asarray(candidate_acts, np.float32))


def _dissection_layer(dissection, layer: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(thresholds (C,) float64, iou (C, K), concepts)`` of one layer of any form of a dissection."""
    if isinstance(dissection, DissectionResult):
        if layer not in dissection:
            raise InputError(f"layer {layer!r} was not dissected; dissected layers: {dissection.layers}")
        dissection = dissection[layer]
    if isinstance(dissection, LayerDissection):
        if dissection.name != layer:
            raise InputError(f"this is the dissection of layer {dissection.name!r}, not {layer!r}")
        return np.asarray(dissection.thresholds, np.float64), np.asarray(dissection.iou), list(dissection.concepts)
    if isinstance(dissection, Attachment) and dissection.kind == "dissection":
        arrays = dissection.arrays.get(layer)
        if arrays is None or "thresholds" not in arrays or "iou" not in arrays:
            raise InputError(f"the dissection attachment has no layer {layer!r}; it has {sorted(dissection.arrays)}")
        return (np.asarray(arrays["thresholds"], np.float64), np.asarray(arrays["iou"]),
                list(dissection.meta.get("concepts", [])))
    raise InputError(f"expected a DissectionResult, a LayerDissection or a 'dissection' attachment, got "
                     f"{type(dissection).__name__}")


def _check_units(units, n_units: int, layer: str) -> np.ndarray:
    units = np.arange(n_units) if units is None else np.atleast_1d(np.asarray(units))
    if units.ndim != 1 or not len(units) or units.dtype.kind not in "iu":
        raise InputError(f"units must be a unit index or a non-empty list of them, got {units!r}")
    bad = units[(units < 0) | (units >= n_units)]
    if len(bad):
        raise InputError(f"unit {int(bad[0])} is out of range: layer {layer!r} has {n_units} units")
    return np.unique(units).astype(np.int64)


class _Progress(Consumer):
    """Reports ``start + (end - start) * images done / total`` after every batch (no state of its own)."""

    def __init__(self, total: int, report, start: float, end: float, text: str):
        self.total, self.report, self.start, self.end, self.text = max(1, total), report, start, end, text
        self.done = 0

    def on_batch(self, batch: Batch) -> None:
        self.done += len(batch.indices)
        self.report(self.start + (self.end - self.start) * min(1.0, self.done / self.total), self.text)

    def state(self) -> dict:
        return {}

    def load_state(self, state) -> None:
        pass

    def merge_state(self, state) -> None:
        pass


class _PictureConsumer(Consumer):
    """For (unit, image) pairs: the image, ``up(A_k) > T_k`` and the concept's mask (as in the IoU pass)."""

    def __init__(self, layer: str, units, chosen, concepts, thresholds, rf, concept_set):
        self.layers = (layer,)
        self.units, self.chosen, self.concepts = units, chosen, concepts
        self.thresholds = torch.from_numpy(np.asarray(thresholds, np.float64))
        self.rf, self.image_size, self.mask_size = rf, concept_set.image_size, concept_set.mask_size
        shape = chosen.shape
        self.maps = np.zeros((*shape, *self.mask_size), bool)
        self.masks = np.zeros((*shape, *self.mask_size), bool)
        self.rgb = np.zeros((*shape, *self.image_size, 3), np.uint8)
        self.peaks = np.full(shape, np.nan, np.float32)
        self.done = np.zeros(shape, bool)
        self._upsampler = None

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        if self._upsampler is None:
            self._upsampler = AlignedUpsampler(self.rf, tuple(output.shape[-2:]), self.image_size, self.mask_size)
        where = {int(i): b for b, i in enumerate(batch.indices.tolist())}
        maps = output.detach().to(torch.float64)
        for row, col in zip(*np.nonzero(np.isin(self.chosen, list(where)))):
            b, unit = where[int(self.chosen[row, col])], int(self.units[row])
            up = self._upsampler(maps[b, unit][None]).cpu()[0]
            self.maps[row, col] = (up > self.thresholds[unit]).numpy()
            self.peaks[row, col] = float(maps[b, unit].max())
            if self.concepts[row] >= 0:
                self.masks[row, col] = batch.extra[b, int(self.concepts[row])].numpy()
            image = batch.images[b].permute(1, 2, 0).numpy()
            self.rgb[row, col] = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
            self.done[row, col] = True

    def state(self) -> dict[str, np.ndarray]:
        return {"maps": self.maps, "masks": self.masks, "rgb": self.rgb, "peaks": self.peaks, "done": self.done}

    def load_state(self, state) -> None:
        for key in ("maps", "masks", "rgb", "peaks", "done"):
            setattr(self, key, np.array(state[key]))

    def merge_state(self, state) -> None:
        theirs = np.asarray(state["done"], bool)
        for key in ("maps", "masks", "rgb", "peaks"):
            getattr(self, key)[theirs] = np.asarray(state[key])[theirs]
        self.done |= theirs

    def result(self):
        return self.state()


def add_pictures(attachment: Attachment, pictures: DissectionPictures) -> Attachment:
    """A copy of a ``"dissection"`` attachment with ``pictures`` added (units pictured before are replaced).

    Raises
    ------
    InputError
        Not a dissection attachment, its layer is missing, or the pictures' image or mask size differs
        from those already stored.
    """
    if not isinstance(attachment, Attachment) or attachment.kind != "dissection":
        raise InputError(f"expected a 'dissection' attachment, got {getattr(attachment, 'kind', type(attachment).__name__)!r}")
    layer = pictures.layer
    if layer not in attachment.arrays:
        raise InputError(f"the dissection attachment has no layer {layer!r}; it has {sorted(attachment.arrays)}")
    arrays = {name: dict(named) for name, named in attachment.arrays.items()}
    old, new = arrays[layer], pictures.arrays()
    if "picture_units" in old:
        if np.shape(old["picture_maps"])[1:] != new["picture_maps"].shape[1:] or \
                np.shape(old["picture_rgb"])[1:] != new["picture_rgb"].shape[1:]:
            raise InputError("these pictures have another number of images or another size than those stored; "
                             "compute them with the same n_images and concept data")
        kept = ~np.isin(old["picture_units"], new["picture_units"])
        merged = {k: np.concatenate([np.asarray(old[k])[kept], new[k]]) for k in PICTURE_ARRAYS}
        order = np.argsort(merged["picture_units"], kind="stable")
        new.update({k: v[order] for k, v in merged.items()})
    old.update(new)
    return Attachment(attachment.kind, dict(attachment.meta), arrays, {k: list(v) for k, v in attachment.columns.items()})


def merge_dissection_attachments(current: Attachment | None, update: Attachment) -> Attachment:
    """Combine two ``"dissection"`` attachments of one model and concept set: the layers of ``update``
    replace those of ``current`` (pictures included), the others are kept.

    Raises
    ------
    InputError
        Either is not a dissection attachment, or they differ in concepts or settings.
    """
    for a in (current, update):
        if a is not None and (not isinstance(a, Attachment) or a.kind != "dissection"):
            raise InputError(f"expected 'dissection' attachments, got {getattr(a, 'kind', type(a).__name__)!r}")
    if current is None:
        return update
    settings = ("concepts", "categories", "quantile", "iou_threshold", "union", "model_fingerprint")
    differ = [k for k in settings if current.meta.get(k) != update.meta.get(k)]
    if differ:
        raise InputError(f"the two dissections differ in {', '.join(differ)}; dissect with the same settings "
                         "or attach the new one under another name")
    arrays = {name: dict(named) for name, named in current.arrays.items()}
    columns = {name: list(c) for name, c in current.columns.items()}
    for name, named in update.arrays.items():
        arrays[name] = dict(named)
        columns[name] = list(update.columns.get(name, []))
    return Attachment("dissection", dict(current.meta), arrays, columns)
