"""Receptive-field crops and Neuron Features (METHODS.md section 3).

The crops are read in one pass (:func:`nsi_widgets.core.passes.run_pass`) over only the images that
some top-N list references, each image loaded once; every consumer of crops (Neuron Features, the grey
and transformed activations of the indexes) works on the same loaded batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.passes import Batch, Consumer
from ..core.receptive_field import ReceptiveField

NF_MODES = ("weighted", "mean", "border")
_CROP_CHUNK_BYTES = 64 * 2**20  # bound the memory of gathered crops


@dataclass
class LayerReferences:
    """All (unit, rank) entries of one layer's top-N lists, sorted by image index.

    Each array has one element per reference ``R``.
    """

    name: str
    receptive_field: ReceptiveField
    n_units: int
    top_n: int
    unit: np.ndarray
    rank: np.ndarray
    image: np.ndarray
    y: np.ndarray
    x: np.ndarray
    activation: np.ndarray
    weight: np.ndarray

    @classmethod
    def from_top_lists(cls, name: str, rf: ReceptiveField, top_indices: np.ndarray, top_positions: np.ndarray,
                       top_activations: np.ndarray, weights: np.ndarray) -> "LayerReferences":
        n_units, top_n = top_indices.shape
        unit = np.repeat(np.arange(n_units), top_n)
        rank = np.tile(np.arange(top_n), n_units)
        image = top_indices.reshape(-1)
        order = np.argsort(image, kind="stable")
        return cls(name, rf, n_units, top_n, unit[order], rank[order], image[order],
                   top_positions[..., 0].reshape(-1)[order], top_positions[..., 1].reshape(-1)[order],
                   top_activations.reshape(-1)[order], weights.reshape(-1)[order])

    def in_batch(self, batch_indices: np.ndarray) -> slice:
        """The slice of references whose image lies in the (sorted) batch."""
        lo = np.searchsorted(self.image, batch_indices[0], side="left")
        hi = np.searchsorted(self.image, batch_indices[-1], side="right")
        return slice(int(lo), int(hi))

    def window_origin(self, sl: slice) -> tuple[np.ndarray, np.ndarray]:
        """Top-left input pixel ``(y0, x0)`` of each reference's receptive field."""
        rf = self.receptive_field
        return (self.y[sl] * rf.stride[0] - rf.padding[0], self.x[sl] * rf.stride[1] - rf.padding[1])

    def chunks(self, sl: slice, max_refs: int):
        """Split a slice into sub-slices of at most ``max_refs`` references."""
        for start in range(sl.start, sl.stop, max(1, max_refs)):
            yield slice(start, min(start + max_refs, sl.stop))


def crop_chunk_size(rf: ReceptiveField) -> int:
    """How many crops of this receptive field fit the crop memory budget."""
    return max(1, _CROP_CHUNK_BYTES // (3 * 4 * rf.size[0] * rf.size[1]))


def _overlap(y: int, x: int, size: tuple[int, int], image_size: tuple[int, int]):
    """``(ys, ye, xs, xe)``: the part of a window at ``(y, x)`` that lies inside the image, in window
    coordinates (empty when ``ye <= ys`` or ``xe <= xs``)."""
    return max(0, -y), min(size[0], image_size[0] - y), max(0, -x), min(size[1], image_size[1] - x)


def inside_mask(y0: np.ndarray, x0: np.ndarray, size: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """(R, 1, h, w) bool: True where a window pixel lies inside the image."""
    h, w = size
    rows = torch.from_numpy(np.asarray(y0))[:, None] + torch.arange(h)[None, :]
    cols = torch.from_numpy(np.asarray(x0))[:, None] + torch.arange(w)[None, :]
    row_in = (rows >= 0) & (rows < image_size[0])
    col_in = (cols >= 0) & (cols < image_size[1])
    return (row_in[:, :, None] & col_in[:, None, :])[:, None]


def gather_crops(images: torch.Tensor, batch_pos: np.ndarray, y0: np.ndarray, x0: np.ndarray,
                 size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut windows of ``size`` at ``(y0, x0)`` from ``images[batch_pos]``, zero outside the image.

    Returns
    -------
    crops : Tensor (R, 3, h, w)
    inside : Tensor (R, 1, h, w) bool, True where the pixel lies in the image
    """
    h, w = size
    image_size = tuple(images.shape[-2:])
    crops = images.new_zeros((len(batch_pos), images.shape[1], h, w))
    for i, (b, y, x) in enumerate(zip(np.asarray(batch_pos).tolist(), np.asarray(y0).tolist(), np.asarray(x0).tolist())):
        ys, ye, xs, xe = _overlap(y, x, size, image_size)
        if ye > ys and xe > xs:
            crops[i, :, ys:ye, xs:xe] = images[b, :, y + ys: y + ye, x + xs: x + xe]
    return crops, inside_mask(y0, x0, size, image_size)


def referenced_images(top_indices: Sequence[np.ndarray]) -> np.ndarray:
    """Sorted unique dataset indices referenced by any of the given top-N lists (``-1`` slots left out)."""
    if not top_indices:
        return np.zeros(0, dtype=np.int64)
    ids = np.unique(np.concatenate([t.reshape(-1) for t in top_indices]))
    return ids[ids >= 0]


#: Fixed-point scale of the crop sums: each batch's float32 partial sums are rounded to multiples of
#: 2**-32 and added as int64, so sums are exact and merge in any order (several processes, resume).
_FIXED_POINT = 2.0 ** 32


class NeuronFeatureAccumulator(Consumer):
    """Weighted sums of receptive-field crops per unit, and thumbnails of the first top crops; a
    consumer of the pass over the referenced images.

    Within a batch the crops are summed in float32 in reference order; each batch's sums are then
    added to the totals in 2**-32 fixed point (int64), which makes the totals independent of how the
    batches are split over processes or runs.

    Parameters
    ----------
    refs : LayerReferences
    image_size : (H, W) of the dataset's images
    mode : {"weighted", "mean", "border"}
        ``weighted``: ``sum w I / sum w`` (default). ``mean``: ``(1/N) sum w I``. ``border``: each pixel
        averaged over the crops where it lies inside the image (``sum w I / sum_inside w``).
    n_thumbnails : int
        How many of each unit's top crops to keep as uint8 thumbnails (0 for none).
    thumbnail_size : int
        Longest side of a thumbnail at most; a larger crop is reduced by the smallest integer factor
        ``k`` that fits, each thumbnail pixel the mean of a ``k x k`` block (partial blocks at the
        bottom/right edge average the pixels they have).
    """

    def __init__(self, refs: LayerReferences, image_size: tuple[int, int], mode: str = "weighted",
                 n_thumbnails: int = 16, thumbnail_size: int = 48):
        if mode not in NF_MODES:
            raise ValueError(f"neuron feature mode must be one of {NF_MODES}, not {mode!r}")
        self.refs = refs
        self.mode = mode
        h, w = refs.receptive_field.size
        self.sums = torch.zeros(refs.n_units, 3, h, w, dtype=torch.int64)
        self._partial = torch.zeros(refs.n_units, 3, h, w, dtype=torch.float32)
        self.image_size = tuple(image_size)
        self.n_thumbnails = min(n_thumbnails, refs.top_n)
        self.thumb_factor = max(1, -(-max(h, w) // max(1, thumbnail_size)))  # ceil division
        self.thumb_shape = (-(-h // self.thumb_factor), -(-w // self.thumb_factor))
        self.thumbnails = np.zeros((refs.n_units, self.n_thumbnails, *self.thumb_shape, 3), dtype=np.uint8)
        self.thumb_filled = np.zeros((refs.n_units, self.n_thumbnails), dtype=bool)

    def on_batch(self, batch: Batch) -> None:
        self.consume(batch.indices.numpy(), batch.images)

    def consume(self, batch_indices: np.ndarray, images: torch.Tensor) -> None:
        """Add the crops of the references whose images are ``images`` (dataset ``batch_indices``)."""
        refs = self.refs
        sl = refs.in_batch(batch_indices)
        if sl.stop <= sl.start:
            return
        size = refs.receptive_field.size
        image_size = self.image_size
        y0, x0 = refs.window_origin(sl)
        batch_pos = np.searchsorted(batch_indices, refs.image[sl])
        units, weights, ranks = refs.unit[sl], refs.weight[sl], refs.rank[sl]
        # Accumulate in place, one window at a time: no (R, 3, h, w) tensor of crops is ever built.
        (h, w), (height, width) = size, image_size
        partial = self._partial
        for b, y, x, unit, weight in zip(batch_pos.tolist(), y0.tolist(), x0.tolist(), units.tolist(), weights.tolist()):
            ys, ye, xs, xe = max(0, -y), min(h, height - y), max(0, -x), min(w, width - x)
            if weight > 0 and ye > ys and xe > xs:
                partial[unit, :, ys:ye, xs:xe].add_(images[b, :, y + ys: y + ye, x + xs: x + xe], alpha=weight)
        self._flush(np.unique(units))
        if self.n_thumbnails:
            keep = np.nonzero(ranks < self.n_thumbnails)[0]
            if len(keep):
                crops, _ = gather_crops(images, batch_pos[keep], y0[keep], x0[keep], size)
                self._store_thumbnails(crops, units[keep], ranks[keep])

    def _flush(self, touched: np.ndarray) -> None:
        """Add this batch's float32 partial sums of the ``touched`` units to the int64 totals.

        ``round(partial * 2**32)`` is computed in float32: scaling by a power of two is exact and the
        rounding of the same float32 value to an integer is the same number in any precision, so this
        equals the float64 computation while moving half the bytes (partial sums stay far below
        ``2**31``, the largest value ``* 2**32`` that int64 holds)."""
        partial = self._partial
        if 2 * len(touched) >= len(partial):  # most units: whole-tensor in-place ops beat gathering rows
            self.sums.add_(partial.mul_(_FIXED_POINT).round_().long())
            partial.zero_()
            return
        rows = torch.from_numpy(touched)
        self.sums.index_add_(0, rows, partial.index_select(0, rows).mul_(_FIXED_POINT).round_().long())
        partial.index_fill_(0, rows, 0)

    def _store_thumbnails(self, crops: torch.Tensor, units: np.ndarray, ranks: np.ndarray) -> None:
        if self.thumb_factor > 1:
            crops = F.avg_pool2d(crops, self.thumb_factor, ceil_mode=True)
        pixels = (crops.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        self.thumbnails[units, ranks] = pixels
        self.thumb_filled[units, ranks] = True

    def state(self) -> dict[str, np.ndarray]:
        return {"sums": self.sums.numpy().copy(), "thumbnails": self.thumbnails.copy(),
                "thumb_filled": self.thumb_filled.copy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.sums = torch.from_numpy(np.array(state["sums"], dtype=np.int64))
        self.thumbnails = np.array(state["thumbnails"], dtype=np.uint8)
        self.thumb_filled = np.array(state["thumb_filled"], dtype=bool)

    def merge_state(self, state: dict[str, np.ndarray]) -> None:
        self.sums += torch.from_numpy(np.asarray(state["sums"], dtype=np.int64))
        filled = np.asarray(state["thumb_filled"], dtype=bool)
        self.thumbnails[filled] = np.asarray(state["thumbnails"])[filled]
        self.thumb_filled |= filled

    def _inside_weight(self) -> torch.Tensor:
        """(C, h, w): per unit and crop pixel, the summed weight of the crops where it is inside the
        image. A window's inside-mask is the outer product of a row mask and a column mask, so this is
        one batched matrix product over the top-N (no pass over the images needed)."""
        refs = self.refs
        y0, x0 = refs.window_origin(slice(0, len(refs.unit)))
        height, width = self.image_size
        h, w = refs.receptive_field.size
        order = np.lexsort((refs.rank, refs.unit))  # (unit, rank) order -> reshape to (C, N)
        rows = torch.from_numpy(y0[order].reshape(refs.n_units, refs.top_n))[..., None] + torch.arange(h)
        cols = torch.from_numpy(x0[order].reshape(refs.n_units, refs.top_n))[..., None] + torch.arange(w)
        row_in = ((rows >= 0) & (rows < height)).float()
        col_in = ((cols >= 0) & (cols < width)).float()
        weight = torch.from_numpy(refs.weight[order].reshape(refs.n_units, refs.top_n)).float()
        return torch.bmm((row_in * weight[..., None]).transpose(1, 2), col_in)

    def result(self, weight_totals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(neuron_features (C,h,w,3) float32, coverage (C,h,w) float32)``.

        ``weight_totals`` is ``sum_j w_j`` per unit (0 for dead units, whose feature is all zero).
        """
        totals = torch.from_numpy(weight_totals.astype(np.float32))
        safe = torch.where(totals > 0, totals, torch.ones_like(totals))
        inside_weight = self._inside_weight()
        coverage = inside_weight / safe[:, None, None]
        sums = self.sums.double() / _FIXED_POINT
        if self.mode == "weighted":
            nf = sums / safe[:, None, None, None]
        elif self.mode == "mean":
            nf = sums / self.refs.top_n
        else:
            per_pixel = torch.where(inside_weight > 0, inside_weight, torch.ones_like(inside_weight))
            nf = sums / per_pixel[:, None]
        nf = torch.where((totals > 0)[:, None, None, None], nf, torch.zeros_like(nf))
        return (nf.permute(0, 2, 3, 1).float().numpy(), coverage.float().numpy())
