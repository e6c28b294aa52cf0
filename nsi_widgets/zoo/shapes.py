"""A labelled synthetic image set: coloured shapes on textured, tinted grey backgrounds.

240 classes, each one combination of a **colour** (10, black, white and grey included), a
**shape** (6 kinds) and a **background texture** (4): ``"red star on grain"``, ``"grey ring on
flat"``... A unit that responds to one attribute alone (all red things, all stars, all grainy
backgrounds) sees 24, 40 or 60 classes among its top images, a unit tuned to a combination sees a
few: the class selectivity index spreads over its range (docs/zoo.md, "Why this default").

Three class hierarchies: by shape (class -> shape kind -> shape family), by colour (class -> colour
-> colour family), both two levels deep, and by texture (class -> texture -> plain or textured). Every shape keeps a luminance contrast with its
background, so shapes stay visible after a conversion to grey (the colour index compares the two).
The generator is seeded and vectorised: :func:`make_shapes` with the same arguments returns
identical images.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .render import BACKGROUND_KINDS, EXTENT, ROTATIONAL_SYMMETRY, SHAPE_KINDS, render, texture_fields

# Hue (degrees), saturation range, value range. Black and white have no hue.
_PALETTE: dict[str, tuple[float, tuple[float, float], tuple[float, float]]] = {
    "red": (0.0, (0.80, 1.00), (0.80, 1.00)),
    "orange": (28.0, (0.85, 1.00), (0.90, 1.00)),
    "yellow": (56.0, (0.80, 1.00), (0.90, 1.00)),
    "green": (125.0, (0.75, 1.00), (0.70, 0.95)),
    "cyan": (185.0, (0.75, 1.00), (0.85, 1.00)),
    "blue": (228.0, (0.80, 1.00), (0.85, 1.00)),
    "magenta": (305.0, (0.70, 1.00), (0.85, 1.00)),
    "white": (0.0, (0.00, 0.04), (0.90, 1.00)),
    "grey": (0.0, (0.00, 0.04), (0.35, 0.65)),
    "black": (0.0, (0.00, 0.04), (0.00, 0.10)),
}
COLORS: tuple[str, ...] = tuple(_PALETTE)
"""The colour names, in the order of ``ShapesDataset.ground_truth["color_id"]``."""

_HUE_JITTER = 8.0  # degrees either side: "red" is a family of reds, not one RGB value


SHAPE_FAMILIES: dict[str, str] = {"circle": "round", "ring": "round", "square": "polygon",
                                  "triangle": "polygon", "star": "star-like", "cross": "star-like"}
"""Second level of the shape hierarchy: shape kind -> family."""
COLOR_FAMILIES: dict[str, str] = {"red": "warm", "orange": "warm", "yellow": "warm", "green": "cool",
                                  "cyan": "cool", "blue": "cool", "magenta": "cool", "white": "achromatic",
                                  "grey": "achromatic", "black": "achromatic"}
"""Second level of the colour hierarchy: colour -> family."""
TEXTURE_FAMILIES: dict[str, str] = {"flat": "plain", "grain": "textured", "clouds": "textured",
                                    "gradient": "textured"}
"""Second level of the texture hierarchy: texture -> family."""

CLASSES: list[str] = [f"{color} {shape} on {texture}" for shape in SHAPE_KINDS for color in COLORS
                      for texture in BACKGROUND_KINDS]
"""The 240 class names in label order: label = (shape_id * 10 + color_id) * 4 + background_id."""

CLASS_PARENTS: dict[str, str] = {
    **{name: name.split()[1] for name in CLASSES}, **SHAPE_FAMILIES}
"""The shape hierarchy, child -> parent: class -> shape kind -> shape family (two levels)."""
COLOR_PARENTS: dict[str, str] = {
    **{name: name.split()[0] for name in CLASSES}, **COLOR_FAMILIES}
"""The colour hierarchy, child -> parent: class -> colour -> colour family (two levels)."""
TEXTURE_PARENTS: dict[str, str] = {
    **{name: name.split()[3] for name in CLASSES}, **TEXTURE_FAMILIES}
"""The texture hierarchy, child -> parent: class -> background texture -> plain or textured."""
CLASS_HIERARCHIES: dict[str, dict[str, str]] = {"shape": CLASS_PARENTS, "colour": COLOR_PARENTS,
                                                "texture": TEXTURE_PARENTS}
"""Both hierarchies by name; ``index_neurons`` reads ``class_parents`` (the shape one) unless given another."""

_CHUNK = 256  # images rendered per vectorised step: fixed, so the noise streams never depend on it
_MIN_LUMA_CONTRAST = 0.2  # background level is kept this far from the shape's luminance
_BG_RANGE = (0.08, 0.92)


def class_label(shape: str, color: str, texture: str) -> int:
    """The label of the class with these attributes (see :data:`CLASSES`)."""
    return ((SHAPE_KINDS.index(shape) * len(COLORS) + COLORS.index(color)) * len(BACKGROUND_KINDS)
            + BACKGROUND_KINDS.index(texture))


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Luminance ``0.299R + 0.587G + 0.114B`` over the last axis."""
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=rgb.dtype)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; ``h`` in degrees, ``s`` and ``v`` in [0, 1]; returns (n, 3)."""
    h = np.mod(h, 360.0) / 60.0
    k = np.mod(np.array([5.0, 3.0, 1.0])[None, :] + h[:, None], 6.0)
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


class ShapesDataset(torch.utils.data.Dataset):
    """Labelled synthetic images; item ``i`` is ``(image, label)``.

    ``image`` is a float32 tensor ``3xHxW`` in ``[0, 1]`` (stored as uint8, so values are
    multiples of 1/255); ``label`` an int in ``0 .. len(classes) - 1``. Build one with
    :func:`make_shapes`.

    Attributes
    ----------
    pixels : ndarray, (n, 3, H, W) uint8
        All images.
    labels : ndarray, (n,) int64
        Class of each image.
    classes : list of str
        Class names, in label order.
    class_parents : dict of str to str
        The shape hierarchy (class -> shape kind -> shape family).
    class_hierarchies : dict of str to dict
        ``{"shape": class_parents, "colour": class -> colour -> colour family, "texture": class ->
        texture -> plain or textured}``.
    ground_truth : dict of str to ndarray
        Per image: ``shape`` and ``color`` (names), ``shape_id`` and ``color_id`` (into
        :data:`SHAPE_KINDS` and :data:`COLORS`), ``color_rgb`` (n, 3)
        the drawn colour, ``center`` (n, 2) ``(y, x)`` in pixels, ``radius`` in pixels, ``rotation``
        in degrees, ``background`` (texture name), ``background_id``, ``background_rgb`` (n, 3) the
        base colour of the background.
    object_masks : ndarray, (n, H, W) bool, or None
        The shape's pixels by the inside rule (docs/zoo.md), when made with ``masks=True``.
    seed : int
        The seed it was generated with.
    """

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, ground_truth: dict[str, np.ndarray],
                 seed: int | None = None, classes: Sequence[str] = CLASSES,
                 class_parents: dict[str, str] | None = None, object_masks: np.ndarray | None = None):
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be uint8 (n, 3, H, W), got {pixels.dtype} {pixels.shape}")
        if len(labels) != len(pixels):
            raise ValueError(f"{len(labels)} labels for {len(pixels)} images")
        self.pixels = pixels
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ground_truth = ground_truth
        self.seed = seed
        self.classes = list(classes)
        self.class_parents = dict(CLASS_PARENTS if class_parents is None else class_parents)
        self.class_hierarchies = {"shape": self.class_parents, "colour": dict(COLOR_PARENTS),
                                  "texture": dict(TEXTURE_PARENTS)}
        self.object_masks = object_masks

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.pixels[index]).to(torch.float32).div_(255.0)
        return image, int(self.labels[index])

    @property
    def targets(self) -> list[int]:
        """Labels as a list of ints (the name torchvision datasets use)."""
        return self.labels.tolist()

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of every image."""
        return int(self.pixels.shape[2]), int(self.pixels.shape[3])

    def images(self, indices: Sequence[int] | slice | None = None) -> torch.Tensor:
        """A batch of images as one float32 tensor ``(k, 3, H, W)`` in ``[0, 1]``.

        Parameters
        ----------
        indices : sequence of int, slice, or None
            Which images; all of them when ``None``.
        """
        chosen = self.pixels if indices is None else self.pixels[indices]
        return torch.from_numpy(np.ascontiguousarray(chosen)).to(torch.float32).div_(255.0)

    def describe(self, index: int) -> dict:
        """The ground truth of one image as a plain dict (class, shape, colour, position...)."""
        info = {"index": int(index), "label": int(self.labels[index]),
                "class": self.classes[int(self.labels[index])]}
        info["superclass"] = self.class_parents.get(info["class"])
        for key, values in self.ground_truth.items():
            value = values[index]
            info[key] = value.tolist() if isinstance(value, np.ndarray) else value.item()
        return info

    def to_pandas(self):
        """The ground truth as a ``pandas.DataFrame``, one row per image."""
        import pandas as pd

        columns = {"label": self.labels, "class": np.asarray(self.classes)[self.labels]}
        for key, values in self.ground_truth.items():
            if values.ndim == 1:
                columns[key] = values
            else:
                suffixes = ("y", "x") if key == "center" else ("r", "g", "b")
                for j, suffix in enumerate(suffixes):
                    columns[f"{key}_{suffix}"] = values[:, j]
        return pd.DataFrame(columns)

    def __repr__(self) -> str:
        h, w = self.image_size
        return (f"ShapesDataset({len(self)} images {h}x{w}, {len(self.classes)} classes, "
                f"seed={self.seed})")


def make_shapes(n: int, seed: int = 0, size: int = 64, *,
                radius_range: tuple[float, float] = (0.12, 0.30),
                backgrounds: Sequence[str] = BACKGROUND_KINDS, masks: bool = False) -> ShapesDataset:
    """Generate ``n`` labelled images of coloured shapes (deterministic for a given seed).

    Labels are balanced over the classes (counts differ by at most one) and shuffled. Each image
    holds one shape of its class's kind and colour on a background of its class's texture, with a
    random hue and saturation within the colour's range, radius, position, rotation and background
    grey level and tint. The background's grey level keeps a luminance contrast of at least 0.2
    with the shape.

    Parameters
    ----------
    n : int
        Number of images (>= 1).
    seed : int
        Seed of the generator, in ``[0, 2**32)``; the same arguments give identical images.
    size : int
        Side of the square images in pixels (>= 16).
    radius_range : (float, float)
        Shape radius as fractions of ``size`` (a shape's extent is up to 1.25 radius).
    backgrounds : sequence of str
        Background textures to draw, a subset of :data:`BACKGROUND_KINDS`: only the classes on these
        textures are drawn (all 240 by default).
    masks : bool
        Also keep each image's shape mask (``object_masks``, the inside rule of docs/zoo.md). The
        images are the same either way.

    Returns
    -------
    ShapesDataset

    Examples
    --------
    >>> data = make_shapes(100, seed=3)
    >>> image, label = data[0]
    >>> image.shape, data.classes[label]  # doctest: +SKIP
    (torch.Size([3, 64, 64]), 'cyan star on clouds')
    """
    n = int(n)
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    seed = int(seed)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if int(size) < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    size = int(size)
    lo, hi = (float(x) for x in radius_range)
    if not 0 < lo <= hi <= 0.38:
        raise ValueError(f"radius_range must satisfy 0 < low <= high <= 0.38 (fractions of the image "
                         f"size, so that shapes fit), got {radius_range}")
    unknown = [b for b in backgrounds if b not in BACKGROUND_KINDS]
    if unknown or not backgrounds:
        raise ValueError(f"backgrounds must be a non-empty subset of {BACKGROUND_KINDS}, got {list(backgrounds)}")
    background_ids = np.array([BACKGROUND_KINDS.index(b) for b in backgrounds])

    rng = np.random.default_rng(seed)
    params = _sample_parameters(rng, n, size, lo, hi, background_ids)
    pixels = np.empty((n, 3, size, size), dtype=np.uint8)
    inside = np.empty((n, size, size), dtype=bool) if masks else None
    for start, stop, noise_rng in _noise_streams(seed, n):
        pixels[start:stop], chunk_inside = render({k: v[start:stop] for k, v in params.items()}, size, noise_rng)
        if masks:
            inside[start:stop] = chunk_inside

    ground_truth = {
        "shape": np.asarray(SHAPE_KINDS)[params["shape_id"]],
        "shape_id": params["shape_id"],
        "color": np.asarray(COLORS)[params["color_id"]],
        "color_id": params["color_id"],
        "color_rgb": params["color_rgb"],
        "center": np.stack([params["cy"], params["cx"]], axis=1),
        "radius": params["radius"],
        "rotation": params["rotation"],
        "background": np.asarray(BACKGROUND_KINDS)[params["background_id"]],
        "background_id": params["background_id"],
        "background_rgb": params["background_rgb"],
    }
    return ShapesDataset(pixels, params["label"], ground_truth, seed=seed, object_masks=inside)


def generative_factors(n: int, seed: int = 0, size: int = 64, *, radius_range: tuple[float, float] = (0.12, 0.30),
                       backgrounds: Sequence[str] = BACKGROUND_KINDS) -> dict[str, np.ndarray]:
    """Every factor :func:`make_shapes` draws for its images, including the texture's (not in ``ground_truth``).

    Replays the same random streams as :func:`make_shapes` with the same arguments (which it does not
    validate again): the per-image parameters (``label``, ``shape_id``, ``color_rgb``, ``cy``, ``cx``,
    ``radius``, ``rotation``, ``background_rgb``, ``background_id``, ``texture_amp``, ``texture_angle``)
    and ``clouds`` ``(n, 6, 6)``, the coarse field the clouds texture is upsampled from (drawn for every
    image). The generator prior's supervised targets (``nsi_widgets.zoo.train_generator``).
    """
    n, size = int(n), int(size)
    lo, hi = (float(x) for x in radius_range)
    background_ids = np.array([BACKGROUND_KINDS.index(b) for b in backgrounds])
    params = _sample_parameters(np.random.default_rng(int(seed)), n, size, lo, hi, background_ids)
    clouds = np.empty((n, 6, 6), dtype=np.float32)
    for start, stop, noise_rng in _noise_streams(int(seed), n):
        clouds[start:stop] = texture_fields(stop - start, size, noise_rng)[1]  # the renderer's first draws
    return dict(params, clouds=clouds)


def _noise_streams(seed: int, n: int):
    """``(start, stop, rng)`` per chunk of ``_CHUNK`` images: one noise stream per chunk, derived from the
    seed, so images never depend on other chunks."""
    for chunk_index, start in enumerate(range(0, n, _CHUNK)):
        yield start, min(n, start + _CHUNK), np.random.default_rng([seed, chunk_index, 0x5A1])


def _sample_parameters(rng: np.random.Generator, n: int, size: int, r_lo: float, r_hi: float,
                       background_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Draw every per-image scalar (label, shape, colour, geometry, background) up front."""
    n_colors, n_textures = len(COLORS), len(BACKGROUND_KINDS)
    allowed = np.flatnonzero(np.isin(np.arange(len(CLASSES)) % n_textures, background_ids))
    label = allowed[rng.permutation(np.arange(n) % len(allowed))].astype(np.int64)
    shape_id = label // (n_colors * n_textures)
    color_id = (label // n_textures) % n_colors
    background_id = label % n_textures

    hue0 = np.array([_PALETTE[c][0] for c in COLORS])[color_id]
    s_lo, s_hi = (np.array([_PALETTE[c][1][j] for c in COLORS])[color_id] for j in (0, 1))
    v_lo, v_hi = (np.array([_PALETTE[c][2][j] for c in COLORS])[color_id] for j in (0, 1))
    hue = hue0 + rng.uniform(-_HUE_JITTER, _HUE_JITTER, n)
    sat = rng.uniform(s_lo, s_hi)
    val = rng.uniform(v_lo, v_hi)
    color_rgb = _hsv_to_rgb(hue, sat, val)

    # Geometry: the whole shape stays inside the image.
    radius = rng.uniform(r_lo, r_hi, n) * size
    extent = radius * np.array([EXTENT[k] for k in SHAPE_KINDS])[shape_id] + 1.0
    cy = extent + rng.random(n) * (size - 2 * extent)
    cx = extent + rng.random(n) * (size - 2 * extent)
    rotation = rng.random(n) * np.array([ROTATIONAL_SYMMETRY[k] for k in SHAPE_KINDS])[shape_id]

    # Background: a grey level at least _MIN_LUMA_CONTRAST away from the shape's luminance
    # (sampled uniformly from the allowed part of _BG_RANGE), a slight tint, a texture.
    luma = _luma(color_rgb)
    g_lo, g_hi = _BG_RANGE
    gap_lo = np.clip(luma - _MIN_LUMA_CONTRAST, g_lo, g_hi)
    gap_hi = np.clip(luma + _MIN_LUMA_CONTRAST, g_lo, g_hi)
    below = gap_lo - g_lo
    u = rng.random(n) * (below + (g_hi - gap_hi))
    level = np.where(u < below, g_lo + u, gap_hi + (u - below))
    tint_dir = _hsv_to_rgb(rng.uniform(0, 360, n), np.ones(n), np.ones(n))
    tint_dir -= _luma(tint_dir)[:, None]  # a hue shift that leaves the luminance unchanged
    tint = rng.uniform(0.0, 0.10, n)[:, None] * tint_dir
    background_rgb = np.clip(level[:, None] + tint, 0.0, 1.0)
    texture_amp = rng.uniform(0.7, 1.0, n)  # relative strength of the texture
    texture_angle = rng.uniform(0, 2 * np.pi, n)  # gradient direction

    f32 = np.float32
    return {"label": label, "shape_id": shape_id.astype(np.int64), "color_id": color_id.astype(np.int64),
            "color_rgb": color_rgb.astype(f32),
            "radius": radius.astype(f32), "cy": cy.astype(f32), "cx": cx.astype(f32),
            "rotation": rotation.astype(f32), "background_rgb": background_rgb.astype(f32),
            "background_id": background_id.astype(np.int64), "texture_amp": texture_amp.astype(f32),
            "texture_angle": texture_angle.astype(f32)}
