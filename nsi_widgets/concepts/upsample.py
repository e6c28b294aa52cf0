"""Activation maps upsampled to the concept masks, aligned with the receptive fields (docs/methods.md section 7).

Unit ``(y, x)`` of a layer looks at the input window that starts at ``y * S - P`` and is ``r`` pixels
wide (its receptive field, :mod:`nsi_widgets.core.receptive_field`), so its value is placed at the
window's centre, image pixel ``y * S - P + (r - 1) / 2``. A mask pixel ``v`` of a mask ``m`` pixels high
on an image ``H`` pixels high has its centre at image pixel ``u = (v + 0.5) * H / m - 0.5``; it takes
the map's value at map coordinate ``t = (u + P - (r - 1) / 2) / S``, interpolated linearly between the
two nearest rows (``t`` clamped to the map: beyond the outermost units their values continue).
Rows first, then columns, in float64: ``a[lo] * (1 - f) + a[hi] * f`` with ``lo = floor(t)``,
``hi = min(lo + 1, h - 1)``, ``f = t - lo``. A unit's upsampled peak therefore lands on its receptive
field's centre (within half a pixel where the centre falls between pixels).

This differs from NetDissect-Lite, which resizes each map to the mask size with ``imresize`` (corner
alignment, no receptive-field geometry): for layers whose field is centred on its unit, as in
padded ``3x3`` stacks, the two differ by a fraction of the stride.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.receptive_field import ReceptiveField


def axis_coordinates(mask_length: int, image_length: int, map_length: int, size: int, stride: int,
                     padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, f)`` per mask pixel of one axis: the map rows to blend and the weight of ``hi``."""
    v = np.arange(mask_length, dtype=np.float64)
    u = (v + 0.5) * (image_length / mask_length) - 0.5
    t = np.clip((u + padding - (size - 1) / 2.0) / stride, 0.0, map_length - 1.0)
    lo = np.floor(t).astype(np.int64)
    hi = np.minimum(lo + 1, map_length - 1)
    return lo, hi, t - lo


class AlignedUpsampler:
    """Upsample ``(N, h, w)`` maps of one layer to ``(N, Hm, Wm)`` masks (float64), as described above."""

    def __init__(self, rf: ReceptiveField, map_size: tuple[int, int], image_size: tuple[int, int],
                 mask_size: tuple[int, int]):
        self.axes = [axis_coordinates(mask_size[a], image_size[a], map_size[a], rf.size[a], rf.stride[a],
                                      rf.padding[a]) for a in (0, 1)]
        self.identity = all(len(lo) == map_size[a] and not f.any() and (lo == np.arange(len(lo))).all()
                            for a, (lo, _, f) in enumerate(self.axes))
        self._torch = [(torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(f))
                       for lo, hi, f in self.axes]
        self.cells = [CellAxis(lo, hi, f, map_size[a]) for a, (lo, hi, f) in enumerate(self.axes)]

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps.to(torch.float64)
        if self.identity:
            return x
        if self._torch[0][0].device != x.device:
            self._torch = [tuple(t.to(x.device) for t in axis) for axis in self._torch]
        (ly, hy, fy), (lx, hx, fx) = self._torch
        x = x[:, ly, :] * (1 - fy)[:, None] + x[:, hy, :] * fy[:, None]
        return x[:, :, lx] * (1 - fx) + x[:, :, hx] * fx


class CellAxis:
    """One axis of an :class:`AlignedUpsampler` seen from the map: which mask pixels each map row feeds.

    Mask pixels ``v`` with ``lo[v] == i`` form the contiguous block ``start[i] .. start[i] + length[i]``
    of *cell* ``i``; every pixel of the block blends rows ``i`` and ``nxt[i]`` (``= hi`` of the block, or
    ``i`` itself where all its weights ``f`` are 0). ``touch[y]`` lists the (at most two) cells whose
    pixels depend on map row ``y`` (``-1`` for none): an upsampled value exceeds a threshold only in a
    cell with a corner above it, so cells next to the map positions above it are all that need upsampling.
    """

    def __init__(self, lo: np.ndarray, hi: np.ndarray, f: np.ndarray, map_length: int):
        cells = np.arange(map_length)
        self.start = np.searchsorted(lo, cells, side="left").astype(np.int64)
        self.length = (np.searchsorted(lo, cells, side="right") - self.start).astype(np.int64)
        uses_next = np.zeros(map_length, bool)
        np.logical_or.at(uses_next, lo, f > 0)
        self.nxt = np.where(uses_next, np.minimum(cells + 1, map_length - 1), cells).astype(np.int64)
        touch = np.full((map_length, 2), -1, np.int64)
        touch[:, 0] = np.where(self.length > 0, cells, -1)
        before = (cells >= 1) & (self.length[np.maximum(cells - 1, 0)] > 0) & (self.nxt[np.maximum(cells - 1, 0)] == cells)
        touch[:, 1] = np.where(before, cells - 1, -1)
        self.touch = touch
        # the rows of each touched cell relative to the map row, as one number: 3 (i - y + 1) + (i' - y + 1)
        y = np.arange(map_length)[:, None]
        rel = 3 * (touch - y + 1) + (self.nxt[np.maximum(touch, 0)] - y + 1)
        self.rel = np.where(touch >= 0, rel, -1).astype(np.int64)
        self.max_length = int(self.length.max()) if map_length else 0
        self.single = bool((touch[:, 1] < 0).all())          # every map row feeds one cell at most
        self.torch = {name: torch.from_numpy(getattr(self, name)) for name in ("nxt", "touch", "rel")}
        # per cell: its first pixel, which of max_length steps are inside it, the weights f of its pixels
        # and 1 - f (NaN beyond the cell, so that no blend there passes a comparison), and the weights of its
        # first and last pixel and 1 - those
        f = np.ascontiguousarray(f, dtype=np.float64)
        steps = np.arange(self.max_length)
        inside = steps[None, :] < self.length[:, None]
        pixels = np.where(inside, self.start[:, None] + steps[None, :], 0)
        weights = f[pixels] if len(f) else np.zeros(pixels.shape)
        last = np.maximum(self.length - 1, 0)
        ends = weights[:, [0]].repeat(2, 1) if self.max_length else np.zeros((map_length, 2))
        if self.max_length:
            ends[:, 1] = weights[np.arange(map_length), last]
        outside = np.where(inside, 0.0, np.nan)
        self.torch.update(start=torch.from_numpy(self.start), inside=torch.from_numpy(inside),
                          weights=torch.from_numpy(weights + outside),
                          complements=torch.from_numpy(1 - weights + outside),
                          first_last=torch.from_numpy(np.ascontiguousarray(ends)),
                          first_last_complements=torch.from_numpy(np.ascontiguousarray(1 - ends)))
