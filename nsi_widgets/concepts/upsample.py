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

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        x = maps.to(torch.float64)
        if self.identity:
            return x
        if self._torch[0][0].device != x.device:
            self._torch = [tuple(t.to(x.device) for t in axis) for axis in self._torch]
        (ly, hy, fy), (lx, hx, fx) = self._torch
        x = x[:, ly, :] * (1 - fy)[:, None] + x[:, hy, :] * fy[:, None]
        return x[:, :, lx] * (1 - fx) + x[:, :, hx] * fx
