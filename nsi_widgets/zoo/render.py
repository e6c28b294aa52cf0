"""Geometry and rasterisation of the shapes images: signed distances, anti-aliasing, backgrounds.

Every shape is defined by a signed distance ``d`` (pixels, negative inside) in its rotated frame; its
zero level set is the exact outline (a polygon or circles). A pixel's colour mixes shape and
background by the *coverage* ``clip(0.5 - d, 0, 1)`` evaluated at the pixel centre (a one-pixel
anti-aliased edge). The **inside rule** of the masks: a pixel belongs to the shape when ``d <= 0`` at
its centre, which is exactly when its coverage is at least 0.5 (docs/zoo.md, "Concept masks").
"""
from __future__ import annotations

import numpy as np

SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
"""The shapes drawn, in the order of ``ShapesDataset.ground_truth["shape_id"]``."""

BACKGROUND_KINDS: tuple[str, ...] = ("flat", "grain", "clouds", "gradient")
"""Background textures, in the order of ``ShapesDataset.ground_truth["background_id"]``."""

NOISE_SIGMA = 0.012
"""Standard deviation of the sensor noise added to every pixel and channel (in [0, 1] units)."""


# Signed distance (in pixels, negative inside) of each shape, in its rotated frame (u, v).
# ``r`` is the shape's nominal radius; the factors give the shapes comparable areas.
def _sdf_circle(u, v, r):
    return np.sqrt(u * u + v * v) - r


def _sdf_square(u, v, r):
    return np.maximum(np.abs(u), np.abs(v)) - 0.82 * r


def _sdf_triangle(u, v, r):
    inradius = 0.5 * 1.25 * r  # equilateral triangle of circumradius 1.25 r
    d = None
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        edge = u * np.float32(np.cos(angle)) + v * np.float32(np.sin(angle)) - inradius
        d = edge if d is None else np.maximum(d, edge)
    return d


def _sdf_star(u, v, r):
    outer, inner = 1.25 * r, 0.5 * r
    half = np.pi / 5
    # Fold the angle into [0, pi/5]: outer tip at 0, inner corner at pi/5; the edge between them
    # is a straight line, whose radius at angle t is outer*inner*sin(pi/5) / (outer sin t + inner sin(pi/5 - t)).
    t = np.mod(np.arctan2(v, u), 2 * half)
    t = np.minimum(t, 2 * half - t)
    edge = outer * inner * np.float32(np.sin(half)) / (outer * np.sin(t) + inner * np.sin(half - t))
    return np.sqrt(u * u + v * v) - edge


def _sdf_cross(u, v, r):
    arm, width = 1.0 * r, 0.34 * r
    au, av = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - arm, av - width), np.maximum(av - arm, au - width))


def _sdf_ring(u, v, r):
    return np.abs(np.sqrt(u * u + v * v) - 0.76 * r) - 0.26 * r


_SDF = {"circle": _sdf_circle, "square": _sdf_square, "triangle": _sdf_triangle,
        "star": _sdf_star, "cross": _sdf_cross, "ring": _sdf_ring}
EXTENT = {"circle": 1.0, "square": 1.16, "triangle": 1.25, "star": 1.25, "cross": 1.06, "ring": 1.02}
"""Farthest point of each shape from its centre, in radii (a shape of radius r fits a disc of EXTENT r)."""
ROTATIONAL_SYMMETRY = {"circle": 360.0, "square": 90.0, "triangle": 120.0, "star": 72.0, "cross": 90.0,
                       "ring": 360.0}
"""Rotation (degrees) that maps each shape onto itself; rotations are drawn in [0, this)."""


def area(kind: str, radius):
    """Exact area (pixels^2) of a shape of nominal ``radius`` (pixels): the region ``d <= 0``."""
    r2 = np.asarray(radius, dtype=np.float64) ** 2
    inradius = 0.625  # triangle
    factor = {
        "circle": np.pi,
        "square": 1.64 ** 2,
        "triangle": 3 * np.sqrt(3) * inradius ** 2,
        "star": 5 * 1.25 * 0.5 * np.sin(np.pi / 5),
        "cross": 2 * (2 * 0.68) - 0.68 ** 2,
        "ring": np.pi * (1.02 ** 2 - 0.5 ** 2),
    }[kind]
    return factor * r2


def perimeter(kind: str, radius):
    """Exact length (pixels) of a shape's outline (inner and outer circle for the ring)."""
    r = np.asarray(radius, dtype=np.float64)
    star_edge = np.sqrt(1.25 ** 2 + 0.5 ** 2 - 2 * 1.25 * 0.5 * np.cos(np.pi / 5))
    factor = {
        "circle": 2 * np.pi,
        "square": 4 * 1.64,
        "triangle": 6 * np.sqrt(3) * 0.625,
        "star": 10 * star_edge,
        "cross": 4 * 0.68 + 8 * (1.0 - 0.34),
        "ring": 2 * np.pi * (1.02 + 0.5),
    }[kind]
    return factor * r


def signed_distance(p: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Signed distance ``(m, size, size)`` float32 of each image's shape at every pixel centre."""
    m = len(p["shape_id"])
    f32 = np.float32
    coords = np.arange(size, dtype=f32) + f32(0.5)  # pixel centres
    dy = coords[None, :, None] - p["cy"][:, None, None]
    dx = coords[None, None, :] - p["cx"][:, None, None]
    theta = np.deg2rad(p["rotation"]).astype(f32)[:, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    r = p["radius"][:, None, None]
    sdf = np.empty((m, size, size), dtype=f32)
    for shape_id, kind in enumerate(SHAPE_KINDS):
        sel = np.flatnonzero(p["shape_id"] == shape_id)
        if sel.size:
            sdf[sel] = _SDF[kind](u[sel], v[sel], r[sel])
    return sdf


def upsample_matrix(cells: int, size: int) -> np.ndarray:
    """(size, cells) bilinear interpolation weights from a coarse grid to ``size`` pixels."""
    pos = (np.arange(size) + 0.5) / size * (cells - 1)
    left = np.clip(np.floor(pos).astype(int), 0, cells - 2)
    frac = pos - left
    m = np.zeros((size, cells), dtype=np.float32)
    m[np.arange(size), left] = 1 - frac
    m[np.arange(size), left + 1] = frac
    return m


def texture_fields(m: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The random fields of ``m`` images' textures, drawn from ``rng`` in this order: the grain
    ``(m, size, size)``, then the clouds' coarse field ``(m, 6, 6)`` (float32, N(0, 1))."""
    return (rng.standard_normal((m, size, size), dtype=np.float32),
            rng.standard_normal((m, 6, 6), dtype=np.float32))


def _texture(p: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Luminance-only background texture ``(m, size, size)``: zero for ``flat``.

    The random fields are drawn for every image, whatever its texture, so that the noise streams
    never depend on the textures; each image's texture is computed only where it is needed.
    """
    m = len(p["shape_id"])
    f32 = np.float32
    coords = np.arange(size, dtype=f32) + f32(0.5)
    kind = p["background_id"]
    amp = p["texture_amp"][:, None, None]
    texture = np.zeros((m, size, size), dtype=f32)
    grain, coarse = texture_fields(m, size, rng)
    sel = kind == BACKGROUND_KINDS.index("grain")
    texture[sel] = f32(0.07) * amp[sel] * grain[sel]
    sel = kind == BACKGROUND_KINDS.index("clouds")
    up = upsample_matrix(6, size)
    texture[sel] = f32(0.09) * amp[sel] * (up @ coarse[sel] @ up.T)
    sel = kind == BACKGROUND_KINDS.index("gradient")
    ang = p["texture_angle"][sel][:, None, None]
    ramp = (np.cos(ang) * (coords[None, None, :] - size / 2) + np.sin(ang) * (coords[None, :, None] - size / 2)) / size
    texture[sel] = f32(0.25) * amp[sel] * ramp
    return texture


def render(p: dict[str, np.ndarray], size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render one chunk of images from its parameters.

    Returns
    -------
    pixels : (m, 3, size, size) uint8
    inside : (m, size, size) bool
        The inside rule: ``d <= 0`` at the pixel centre (coverage >= 0.5).
    """
    f32 = np.float32
    sdf = signed_distance(p, size)
    coverage = np.clip(f32(0.5) - sdf, 0.0, 1.0)[:, None]  # one-pixel anti-aliased edge
    background = p["background_rgb"][:, :, None, None] + _texture(p, size, rng)[:, None]
    foreground = p["color_rgb"][:, :, None, None]
    image = foreground - background
    image *= coverage
    image += background
    # Faint sensor noise everywhere (per channel), as in any photograph. In place, in the same
    # order of operations as `background + coverage * (fg - bg) + sigma * noise`: the same numbers.
    noise = rng.standard_normal(image.shape, dtype=f32)
    noise *= f32(NOISE_SIGMA)
    image += noise
    image *= f32(255)
    np.rint(image, out=image)
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8), sdf <= 0
