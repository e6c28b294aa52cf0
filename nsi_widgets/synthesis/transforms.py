"""Random transformations applied to the image before each forward pass (transformation robustness; docs/methods.md section 9).

One step's transformation is lucid's chain ``pad -> jitter -> scale -> rotate -> jitter`` computed as a
single bilinear warp of the image: output pixel centre ``u`` (continuous pixel coordinates) reads the
input at::

    x_in = c + A^-1 (u + o2 - c) + o1 - pad,     A = scale * Rot(angle),  c = (size + 2 pad - d1) / 2

with ``o1`` (each axis uniform in ``0 .. d1``) and ``o2`` (``0 .. d2``) the two jitters; the output is
``size + 2 pad - d1 - d2`` pixels a side. Outside the image the warp reads the data's mean colour (the
"pad" value). All images of a batch get the same draw, from a generator seeded by the call's seed, so
an image's transformations do not depend on the other images in the batch.

``standard_transforms(size)`` scales lucid's pixel amounts (made for 224-pixel inputs: pad 12, jitter 8,
jitter 4) to the image size and keeps its relative ones: scale ``1 + (i - 5) / 50`` for ``i = 0..10``,
rotation ``-10..10`` degrees with 0 five times more.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import InputError

_LUCID_SIZE = 224
_LUCID_ANGLES = tuple(float(a) for a in list(range(-10, 11)) + 5 * [0])
_LUCID_SCALES = tuple(1 + (i - 5) / 50.0 for i in range(11))


@dataclass(frozen=True)
class TransformSpec:
    """The random transformation of one optimisation step.

    Attributes
    ----------
    pad : int
        Pixels added on each side (filled with the mean colour).
    jitter : (int, int)
        ``(d1, d2)``: the crop before and after scale and rotation; each offset uniform in ``0..d``.
    scales : tuple of float
        Scale factors to draw from (uniformly).
    angles : tuple of float
        Rotations in degrees to draw from (uniformly; repeat a value to weight it).
    """

    pad: int = 0
    jitter: tuple[int, int] = (0, 0)
    scales: tuple[float, ...] = (1.0,)
    angles: tuple[float, ...] = (0.0,)

    def __post_init__(self):
        if self.pad < 0 or len(self.jitter) != 2 or min(self.jitter) < 0 or not self.scales or not self.angles:
            raise InputError(f"invalid transformation {self}: pad and jitter must be >= 0, jitter a pair "
                             "(before, after), scales and angles non-empty")
        if min(self.scales) <= 0:
            raise InputError(f"scales must be positive, got {self.scales}")

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Side lengths after the transformation of an image of ``size``."""
        grow = 2 * self.pad - sum(self.jitter)
        out = (size[0] + grow, size[1] + grow)
        if min(out) < 1:
            raise InputError(f"the transformation {self} leaves nothing of a {size} image")
        return out

    @property
    def is_identity(self) -> bool:
        return (self.pad == 0 and self.jitter == (0, 0) and set(self.scales) == {1.0}
                and set(self.angles) == {0.0})

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "TransformSpec":
        return cls(pad=int(d["pad"]), jitter=tuple(int(v) for v in d["jitter"]),
                   scales=tuple(float(v) for v in d["scales"]), angles=tuple(float(v) for v in d["angles"]))


def standard_transforms(size: tuple[int, int]) -> TransformSpec:
    """lucid's standard transformations, their pixel amounts scaled from 224 pixels to ``max(size)``."""
    factor = max(size) / _LUCID_SIZE
    return TransformSpec(pad=round(12 * factor), jitter=(round(8 * factor), round(4 * factor)),
                         scales=_LUCID_SCALES, angles=_LUCID_ANGLES)


def resolve_transforms(transforms, size: tuple[int, int]) -> TransformSpec:
    """``transforms=`` of :func:`nsi_widgets.visualize`: ``"standard"``, ``"none"``/None, or a TransformSpec."""
    if isinstance(transforms, TransformSpec):
        return transforms
    if transforms is None or transforms == "none":
        return TransformSpec()
    if transforms == "standard":
        return standard_transforms(size)
    if isinstance(transforms, dict):
        return TransformSpec.from_dict(transforms)
    raise InputError(f"transforms must be 'standard', 'none' or a TransformSpec, not {transforms!r}")


@dataclass(frozen=True)
class Draw:
    """One step's random values: the two jitter offsets ``(y, x)``, the scale and the angle (degrees)."""

    o1: tuple[int, int]
    o2: tuple[int, int]
    scale: float
    angle: float


def draw(spec: TransformSpec, rng: np.random.Generator) -> Draw:
    """Draw one step's transformation (the same for every image of the batch)."""
    d1, d2 = spec.jitter
    o1 = (int(rng.integers(0, d1 + 1)), int(rng.integers(0, d1 + 1)))
    scale = float(spec.scales[int(rng.integers(0, len(spec.scales)))])
    angle = float(spec.angles[int(rng.integers(0, len(spec.angles)))])
    o2 = (int(rng.integers(0, d2 + 1)), int(rng.integers(0, d2 + 1)))
    return Draw(o1, o2, scale, angle)


def sample_grid(spec: TransformSpec, d: Draw, size: tuple[int, int]) -> torch.Tensor:
    """The ``(Ho, Wo, 2)`` grid of input positions (``grid_sample``'s normalised x, y) of one draw."""
    h, w = size
    ho, wo = spec.output_size(size)
    d1 = spec.jitter[0]
    cy, cx = (h + 2 * spec.pad - d1) / 2.0, (w + 2 * spec.pad - d1) / 2.0
    uy = torch.arange(ho, dtype=torch.float64)[:, None] + 0.5 + d.o2[0] - cy
    ux = torch.arange(wo, dtype=torch.float64)[None, :] + 0.5 + d.o2[1] - cx
    theta = math.radians(d.angle)
    cos, sin = math.cos(theta) / d.scale, math.sin(theta) / d.scale
    # A^-1 = Rot(-angle) / scale, with (x, y) = (column, row)
    x_in = cx + cos * ux + sin * uy + d.o1[1] - spec.pad
    y_in = cy - sin * ux + cos * uy + d.o1[0] - spec.pad
    grid = torch.stack(torch.broadcast_tensors(2 * x_in / w - 1, 2 * y_in / h - 1), dim=-1)
    return grid.float()


def apply(images: torch.Tensor, spec: TransformSpec, d: Draw, fill: torch.Tensor) -> torch.Tensor:
    """Warp a batch ``(B, 3, H, W)`` by one draw; outside the image the colour ``fill`` (3,) is read."""
    if spec.is_identity:
        return images
    size = (images.shape[-2], images.shape[-1])
    grid = sample_grid(spec, d, size).to(images.device)
    grid = grid[None].expand(images.shape[0], -1, -1, -1)
    fill = fill.to(images)[None, :, None, None]
    return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


class RandomTransforms:
    """Callable applying a fresh draw of ``spec`` at each call; seeded, so a rerun repeats the draws.

    Parameters
    ----------
    spec : TransformSpec
    seed : int
    fill : tensor (3,)
        Colour read outside the image (the data's mean colour).
    """

    def __init__(self, spec: TransformSpec, seed: int, fill: torch.Tensor):
        self.spec = spec
        self.fill = fill
        self.rng = np.random.default_rng([int(seed), 0x7A5F])

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return apply(images, self.spec, draw(self.spec, self.rng), self.fill)
