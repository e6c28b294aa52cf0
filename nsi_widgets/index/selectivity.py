"""Selectivity indexes (docs/methods.md sections 4-6) and the registry that makes new ones first-class.

Two kinds of index:

* a **crop index** is computed from activations at each top image's stored location after a
  transform ``T`` of the receptive-field crop (colour: greying; orientation: rotations; symmetry:
  mirrors; shape: shuffled pixels); ``ratio_T = sum_j a^T_j / sum_j a_j`` and the index combines
  the ratios of its transforms;
* a **record index** is a function of the top-N records alone (class selectivity).

Both are registered with :func:`register_index` and are then computed by
:func:`nsi_widgets.index_neurons`, saved, loaded, sorted and shown like the built-ins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

GRAY_METHODS = ("pca", "luminance")
LUMINANCE = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------------------------------------
# Grey versions of a crop (colour selectivity)
# ---------------------------------------------------------------------------------------------
def gray_luminance(crops: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
    """``0.299 R + 0.587 G + 0.114 B`` per pixel, copied to three channels. (R,3,h,w) -> (R,3,h,w)."""
    weights = torch.tensor(LUMINANCE, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
    grey = (crops * weights).sum(dim=1, keepdim=True)
    return grey.expand(-1, 3, -1, -1).clone()


#: Rows O1, O2, O3 of the opponent transform without its offset (which centring removes).
_OPPONENT = ((1 / 1.5, 1 / 1.5, 1 / 1.5), (1.0, -1.0, 0.0), (0.5, 0.5, -1.0))


def gray_pca(crops: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
    """The thesis' grey version: first principal component of the crop in opponent space.

    Per crop: convert the in-image pixels to ``O1=(R+G+B-1.5)/1.5, O2=R-G, O3=(R+G-2B)/2``, project
    the mean-centred pixels on the first eigenvector of their 3x3 covariance, orient it to correlate
    positively with ``O1``, min-max scale to ``[0, 1]``, copy to three channels. Pixels outside the
    image stay zero and take no part. A crop with no spread keeps its luminance (the PCA is undefined).

    How (the same numbers, fewer passes over the pixels): the opponent transform is linear, so its
    covariance is ``M C M^T`` for the RGB covariance ``C`` (3x3 per crop, accumulated from centred
    pixels; mean and eigenvectors in float64), the projection is ``(M^T v) . (p - mean)`` and its
    covariance with ``O1`` is ``lambda v_1``, so the orientation is the sign of ``v_1``.
    """
    n, _, h, w = crops.shape
    dtype, device = crops.dtype, crops.device
    pixels = crops.reshape(n, 3, h * w)
    if inside is None:
        mask = None
        count = torch.full((n, 1), float(h * w), dtype=torch.float64, device=device)
        mean = pixels.sum(dim=2, dtype=torch.float64) / count
        centred = pixels - mean[:, :, None].to(dtype)
    else:
        mask = inside.reshape(n, 1, h * w)
        count = mask.sum(dim=2, dtype=torch.float64).clamp(min=1)
        mean = (pixels * mask).sum(dim=2, dtype=torch.float64) / count
        centred = (pixels - mean[:, :, None].to(dtype)) * mask
    covariance = (centred @ centred.transpose(1, 2)).double() / count[:, :, None]
    opponent = torch.tensor(_OPPONENT, dtype=torch.float64, device=device)
    _, vectors = torch.linalg.eigh(opponent @ covariance @ opponent.T)
    first = vectors[:, :, -1]                                   # eigenvector of the largest eigenvalue
    # Orient: the grey image should correlate positively with O1 (bright stays bright).
    first = first * torch.where(first[:, :1] < 0, -1.0, 1.0)
    projection = ((first @ opponent).to(dtype)[:, None, :] @ centred).squeeze(1)   # (n, h*w)
    if mask is None:
        low, high = projection.amin(dim=1), projection.amax(dim=1)
    else:
        low = projection.masked_fill(~mask[:, 0], torch.inf).amin(dim=1)
        high = projection.masked_fill(~mask[:, 0], -torch.inf).amax(dim=1)
    spread = high - low
    flat = spread <= 1e-12
    scaled = (projection - low[:, None]) / torch.where(flat, 1.0, spread)[:, None]
    if bool(flat.any()):
        scaled[flat] = gray_luminance(crops[flat])[:, 0].reshape(-1, h * w)
    if mask is not None:
        scaled = scaled * mask[:, 0]
    return scaled.reshape(n, 1, h, w).expand(-1, 3, -1, -1).clone()


gray_luminance.pixelwise = True  # the same on a whole image as on each crop: one forward per image

GRAY_TRANSFORMS = {"pca": gray_pca, "luminance": gray_luminance}


# ---------------------------------------------------------------------------------------------
# Transforms of the other built-in crop indexes
# ---------------------------------------------------------------------------------------------
ORIENTATION_STEP = 15.0
"""Default angle step (degrees) of the orientation index: 24 rotations, as in the authors' code."""
MIRROR_AXES = ("horizontal", "vertical", "diagonal", "antidiagonal")
"""The four mirror axes of the symmetry index (docs/methods.md section 6)."""
SHUFFLE_SEED = 0
"""Default seed of the shape index's pixel permutation."""


def _rotation_grid(height: int, width: int, angle_degrees: float, dtype) -> torch.Tensor:
    """``grid_sample`` grid (1, h, w, 2) sampling the source of each output pixel of a rotation.

    Output pixel ``(i, j)``, offset ``(dy, dx)`` from the crop centre ``((h-1)/2, (w-1)/2)``, takes
    the crop at ``x = cx + dx cos t - dy sin t``, ``y = cy + dx sin t + dy cos t``: the content turns
    by ``t`` counter-clockwise as displayed (rows downwards), as ``numpy.rot90`` for ``t = 90``.
    """
    theta = math.radians(angle_degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    dy = torch.arange(height, dtype=torch.float64)[:, None] - cy
    dx = torch.arange(width, dtype=torch.float64)[None, :] - cx
    x = cx + dx * cos - dy * sin
    y = cy + dx * sin + dy * cos
    # align_corners=True: -1 and +1 are the centres of the first and last pixel.
    gx = 2 * x / max(width - 1, 1) - 1
    gy = 2 * y / max(height - 1, 1) - 1
    return torch.stack([gx, gy], dim=-1)[None].to(dtype)


def rotate(angle_degrees: float) -> Callable:
    """A crop transform rotating the crop about its centre by ``angle_degrees`` (counter-clockwise).

    As in the authors' code: cubic interpolation and edge padding. Precisely: bicubic convolution
    (Keys kernel, ``a = -0.75``, the kernel of OpenCV and of ``torch.nn.functional.grid_sample``)
    of the crop as stored (pixels outside the image are zero), where every sample position outside
    the crop takes the value of the nearest crop pixel (edge replication, per tap). Multiples of
    90 degrees of a square crop are exact pixel permutations. docs/methods.md section 6.
    """
    angle = float(angle_degrees) % 360.0

    def transform(crops: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
        h, w = crops.shape[-2:]
        if angle == 0:
            return crops.clone()
        if angle % 90 == 0 and h == w:
            return torch.rot90(crops, k=int(angle // 90), dims=(-2, -1))
        grid = _rotation_grid(h, w, angle, crops.dtype).to(crops.device).expand(crops.shape[0], h, w, 2)
        return F.grid_sample(crops, grid, mode="bicubic", padding_mode="border", align_corners=True)

    transform.__name__ = f"rotate_{angle_degrees:g}"
    return transform


def orientation_angles(step_degrees: float = ORIENTATION_STEP) -> list[float]:
    """The rotations of the orientation index: ``step, 2 step, ..., 360`` degrees (360 = the crop itself).

    ``360 / step_degrees`` must be a whole number (default 15: 24 rotations, as the authors' code).
    """
    step = float(step_degrees)
    count = 360.0 / step if step > 0 else 0.0
    if step <= 0 or abs(count - round(count)) > 1e-9:
        raise ValueError(f"the orientation step must divide 360 degrees, got {step_degrees!r}")
    return [step * k for k in range(1, int(round(count)) + 1)]


def orientation_transforms(step_degrees: float = ORIENTATION_STEP) -> dict[str, Callable]:
    """Crop transforms of the orientation index, keyed ``"rot15"``, ``"rot30"``, ... ``"rot360"``.

    Use with :func:`register_index` for another step, e.g.
    ``register_index("orientation_30", transforms=orientation_transforms(30), combine=orientation_combine)``.
    """
    return {f"rot{angle:g}".replace(".", "_"): rotate(angle) for angle in orientation_angles(step_degrees)}


def orientation_combine(ratios: dict[str, np.ndarray]) -> np.ndarray:
    """Orientation index from the rotation ratios: ``1 - mean ratio`` (1: only its own orientation)."""
    return 1.0 - np.mean(list(ratios.values()), axis=0)


def mirror(axis: str) -> Callable:
    """A crop transform mirroring the crop about one of :data:`MIRROR_AXES` through its centre.

    ``"horizontal"`` flips left-right (about the vertical centre line), ``"vertical"`` flips
    up-down, ``"diagonal"`` transposes (about the line from top-left to bottom-right) and
    ``"antidiagonal"`` mirrors about the line from top-right to bottom-left. The diagonal mirrors
    need square crops (square receptive fields).
    """
    if axis not in MIRROR_AXES:
        raise ValueError(f"axis must be one of {MIRROR_AXES}, got {axis!r}")

    def transform(crops: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
        if axis == "horizontal":
            return torch.flip(crops, dims=(-1,))
        if axis == "vertical":
            return torch.flip(crops, dims=(-2,))
        if crops.shape[-1] != crops.shape[-2]:
            raise ValueError(f"the {axis} mirror of the symmetry index needs square receptive fields, "
                             f"got crops of {tuple(crops.shape[-2:])}")
        flipped = crops if axis == "diagonal" else torch.flip(crops, dims=(-2, -1))
        return flipped.transpose(-2, -1).contiguous()

    transform.__name__ = f"mirror_{axis}"
    return transform


def shuffle_pixels(seed: int = SHUFFLE_SEED) -> Callable:
    """A crop transform permuting the crop's pixels: one permutation per crop size, from ``seed``.

    Every crop of a layer gets the same permutation, so the index is reproducible (the authors'
    code draws an unseeded one).
    """

    def transform(crops: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = crops.shape
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(h * w, generator=generator).to(crops.device)
        return crops.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)

    transform.__name__ = "shuffle_pixels"
    return transform


# ---------------------------------------------------------------------------------------------
# Class selectivity (record index)
# ---------------------------------------------------------------------------------------------
def top_weights(top_activations: np.ndarray) -> np.ndarray:
    """``w_j = a_j / a_1`` per unit, negative activations weighing 0; all zero for dead units."""
    a = np.clip(np.asarray(top_activations, dtype=np.float64), 0.0, None)
    first = a[:, :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(first > 0, a / np.where(first > 0, first, 1.0), 0.0)


def class_frequencies(top_labels: np.ndarray, top_activations: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Activation-weighted class frequencies of each unit's top-N: ``f_c = sum_{c(j)=c} w_j / sum_j w_j``.

    Parameters
    ----------
    top_labels : (C, N) int, ``-1`` for unlabelled images (they count in neither sum).
    top_activations : (C, N) float
    n_classes : int, optional; default ``max label + 1``.

    Returns
    -------
    ndarray (C, n_classes) float64; rows of dead units are zero.
    """
    labels = np.asarray(top_labels, dtype=np.int64)
    weights = top_weights(top_activations)
    if n_classes is None:
        n_classes = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    weights = np.where(labels >= 0, weights, 0.0)
    rows = np.repeat(np.arange(labels.shape[0]), labels.shape[1])
    table = np.zeros((labels.shape[0], n_classes), dtype=np.float64)
    valid = labels.reshape(-1) >= 0
    np.add.at(table, (rows[valid], labels.reshape(-1)[valid]), weights.reshape(-1)[valid])
    totals = table.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, table / np.where(totals > 0, totals, 1.0), 0.0)


def class_selectivity(top_labels: np.ndarray, top_activations: np.ndarray, nu: float = 1.0,
                      parents: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Class selectivity index ``gamma = (N - M) / (N - 1)`` per unit (docs/methods.md section 5).

    ``M`` is the smallest number of classes, taken by descending ``f_c``, whose frequencies add up to
    at least ``nu``; classes of zero frequency never count. ``nu`` defaults to 1.0 as in the authors'
    group code (then ``M`` is the number of distinct classes with positive weight); the paper's value
    could not be confirmed.

    Parameters
    ----------
    top_labels, top_activations : (C, N) arrays from a :class:`~nsi_widgets.results.LayerIndex`.
    nu : float in (0, 1]
    parents : optional (n_classes,) int array mapping each class to a superclass id: the index is
        then computed over superclasses (a class hierarchy level).

    Returns
    -------
    ndarray (C,) float32; NaN for dead units and for units whose top images are all unlabelled.
    """
    if not 0 < nu <= 1:
        raise ValueError(f"nu must be in (0, 1], got {nu}")
    labels = np.asarray(top_labels, dtype=np.int64)
    if parents is not None:
        parents = np.asarray(parents, dtype=np.int64)
        labels = np.where(labels >= 0, parents[np.clip(labels, 0, None)], -1)
    freqs = class_frequencies(labels, top_activations)
    n = labels.shape[1]
    if freqs.shape[1] == 0:  # nothing labelled
        return np.full(labels.shape[0], np.nan, dtype=np.float32)
    ordered = -np.sort(-freqs, axis=1)
    cumulative = np.cumsum(ordered, axis=1)
    # Smallest M with cumulative >= nu (a tolerance absorbs the float sum of frequencies).
    reached = cumulative >= nu - 1e-9
    positive = ordered > 0
    m = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, positive.sum(axis=1))
    m = np.minimum(m, positive.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        gamma = (n - m) / (n - 1) if n > 1 else np.zeros(len(m))
    undefined = freqs.sum(axis=1) <= 0  # dead, or nothing labelled
    return np.where(undefined, np.nan, gamma).astype(np.float32)


def population_code(top_labels: np.ndarray, top_activations: np.ndarray, threshold: float = 0.1,
                    n_classes: int | None = None) -> np.ndarray:
    """Number of classes with ``f_c >= threshold`` per unit (0 for dead units)."""
    freqs = class_frequencies(top_labels, top_activations, n_classes)
    return (freqs >= threshold).sum(axis=1)


def ratio_index(activations: np.ndarray, transformed: np.ndarray) -> np.ndarray:
    """``sum_j a^T_j / sum_j a_j`` per unit; NaN for dead units (all ``a_j <= 0``)."""
    a = np.asarray(activations, dtype=np.float64)
    t = np.asarray(transformed, dtype=np.float64)
    total = a.sum(axis=1)
    dead = ~(a[:, 0] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = t.sum(axis=1) / total
    return np.where(dead | ~np.isfinite(ratio), np.nan, ratio)


def color_selectivity(activations: np.ndarray, gray_activations: np.ndarray) -> np.ndarray:
    """``alpha = 1 - sum_j a'_j / sum_j a_j`` per unit, not clipped; NaN for dead units."""
    return (1.0 - ratio_index(activations, gray_activations)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------
@dataclass
class IndexSpec:
    """A registered selectivity index.

    Attributes
    ----------
    name : str
        Short name used in ``index_neurons(indexes=...)``.
    score : str
        The column it fills in ``LayerIndex.scores`` (e.g. ``"color_selectivity"``).
    transforms : dict of str to callable, or None
        Crop transforms (crop index). A callable of ``options`` may build them (see ``make_transforms``).
    combine : callable, optional
        Crop index: ``combine(ratios: dict name -> (C,) array) -> (C,) array``.
    function : callable, optional
        Record index: ``function(layer_index, index_meta) -> (C,) array``.
    description : str
    """

    name: str
    score: str
    description: str = ""
    transforms: dict[str, Callable] | None = None
    make_transforms: Callable[[dict], dict[str, Callable]] | None = None
    combine: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None
    function: Callable | None = None
    details: bool = True  # keep the per-image transformed activations in LayerIndex.details

    @property
    def is_crop_index(self) -> bool:
        return self.function is None

    def crop_transforms(self, options: dict) -> dict[str, Callable]:
        if self.make_transforms is not None:
            return self.make_transforms(options)
        return dict(self.transforms or {})


_REGISTRY: dict[str, IndexSpec] = {}


def register_index(name: str, *, transform: Callable | None = None,
                   transforms: dict[str, Callable] | None = None,
                   combine: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
                   function: Callable | None = None, score: str | None = None,
                   description: str = "", replace: bool = False) -> IndexSpec:
    """Add a selectivity index that :func:`nsi_widgets.index_neurons` can compute.

    Give either a crop ``transform`` (or several ``transforms`` and a ``combine``), or a ``function``
    of the top-N records.

    Parameters
    ----------
    name : str
        The name to pass in ``indexes=(...)``; the score is stored as ``score`` (default
        ``f"{name}_selectivity"``).
    transform : callable ``T(crops (R,3,h,w), inside (R,1,h,w) bool) -> (R,3,h,w)``
        Default combine: ``1 - sum_j a^T_j / sum_j a_j`` (like the colour index).
    transforms : dict of name -> transform, with ``combine(ratios) -> (C,)`` over their ratios.
    function : callable ``f(layer_index, meta) -> (C,)`` for an index of the records alone.
    replace : bool
        Allow replacing an existing index of that name.

    Examples
    --------
    >>> import torch, nsi_widgets as nsi
    >>> def invert(crops, inside):
    ...     return torch.where(inside, 1 - crops, crops)
    >>> spec = nsi.register_index("contrast_polarity", transform=invert, replace=True)
    >>> spec.score
    'contrast_polarity_selectivity'
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"index name must be a Python identifier, got {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"an index named {name!r} is already registered; pass replace=True to replace it")
    given = sum(x is not None for x in (transform, transforms, function))
    if given != 1:
        raise ValueError("give exactly one of transform=, transforms= (with combine=) or function=")
    if transform is not None:
        if not callable(transform):
            raise TypeError("transform must be callable: T(crops, inside) -> crops")
        transforms = {name: transform}
        combine = combine or (lambda ratios, _n=name: 1.0 - ratios[_n])
    if transforms is not None:
        if not transforms or not all(callable(t) for t in transforms.values()):
            raise TypeError("transforms must be a non-empty dict of callables")
        if combine is None:
            raise ValueError("transforms= needs combine=: a function of the dict of ratios")
    if function is not None and not callable(function):
        raise TypeError("function must be callable: f(layer_index, meta) -> (C,) array")
    spec = IndexSpec(name=name, score=score or f"{name}_selectivity", description=description,
                     transforms=transforms, combine=combine, function=function)
    _REGISTRY[name] = spec
    return spec


def unregister_index(name: str) -> None:
    """Remove a user-registered index (built-ins cannot be removed)."""
    if name in _BUILTINS:
        raise ValueError(f"{name!r} is a built-in index")
    _REGISTRY.pop(name, None)


def available_indexes() -> dict[str, str]:
    """Registered index names and their descriptions."""
    return {name: spec.description for name, spec in _REGISTRY.items()}


def get_index(name: str) -> IndexSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown index {name!r}; available: {sorted(_REGISTRY)} "
                         "(add one with nsi_widgets.register_index)") from None


def _class_index(layer, meta: dict) -> np.ndarray:
    return class_selectivity(layer.top_labels, layer.top_activations, nu=meta.get("nu", 1.0))


_BUILTIN_SPECS = [
    IndexSpec("color", "color_selectivity",
              "1 - sum a'/sum a with the receptive-field crop greyed (gray='pca' or 'luminance')",
              make_transforms=lambda options: {"gray": GRAY_TRANSFORMS[options.get("gray", "pca")]},
              combine=lambda ratios: 1.0 - ratios["gray"]),
    IndexSpec("class", "class_selectivity",
              "(N - M)/(N - 1), M classes covering nu of the activation-weighted top-N",
              function=_class_index),
    IndexSpec("orientation", "orientation_selectivity",
              "1 - mean over rotations (15, 30, ..., 360 deg; bicubic, edge padding) of sum a_rot / sum a",
              make_transforms=lambda options: orientation_transforms(options.get("orientation_step", ORIENTATION_STEP)),
              combine=orientation_combine),
    IndexSpec("symmetry", "symmetry_selectivity",
              "mean over 4 mirror axes (left-right, up-down, both diagonals) of sum a_mirror / sum a",
              transforms={f"mirror_{axis}": mirror(axis) for axis in MIRROR_AXES},
              combine=lambda ratios: np.mean([ratios[f"mirror_{axis}"] for axis in MIRROR_AXES], axis=0)),
    IndexSpec("shape", "shape_selectivity",
              "1 - sum a_shuffled / sum a with the crop's pixels shuffled (a seeded permutation)",
              make_transforms=lambda options: {"shuffled": shuffle_pixels(options.get("shuffle_seed", SHUFFLE_SEED))},
              combine=lambda ratios: 1.0 - ratios["shuffled"]),
]
_BUILTINS = {spec.name for spec in _BUILTIN_SPECS}
for _spec in _BUILTIN_SPECS:
    _REGISTRY[_spec.name] = _spec
