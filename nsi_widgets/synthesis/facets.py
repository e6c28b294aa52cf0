"""Multifaceted feature visualisation (Nguyen, Yosinski, Clune 2016; docs/methods.md section 9).

A unit may fire for several kinds of input. Its top images (from a :class:`~nsi_widgets.NeuronIndex`)
are embedded in a code space (by default the spatially averaged output of the model's deepest conv
layer, the analogue of the paper's fc7 codes), reduced (PCA; t-SNE optional) and clustered with
k-means; each cluster is a facet. Per facet: its members, their mean image (with the ``"neuron"``
objective, each member first shifted so that the unit's maximum in it lies at the map centre, as the
paper's objects lie at the centre of ImageNet images), and a visualisation
started from the mean image and optimised with the paper's regularisers: normalised gradient steps,
total-variation denoising between steps, and a centre bias (the gradient acts first in a central
square covering ``center_start`` of each side, which grows to the whole image over the first
``center_grow`` of the steps). On a small network the unit's strongest pattern pulls every facet's
image to the same place; a facet anchor (the relative distance of the image's code to the facet's
mean code, see :class:`FacetOptions`) keeps each visualisation in its facet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.data import iterate_batches
from ..core.errors import InputError
from ..core.layers import resolve_layers
from ..index.results import Attachment
from . import attachment as _attachment
from .clustering import choose_k, kmeans, pca, tsne
from .objectives import OBJECTIVES, evaluate
from .regularizers import tv_denoise
from .running import PreparedModel
from .visualize import _device, _progress_bar

DEFAULT_K_MAX = 6
"""Largest number of facets tried when ``k`` is not given."""


@dataclass(frozen=True)
class FacetOptions:
    """Settings of the facet visualisation (the paper's regularisers).

    Attributes
    ----------
    steps : int
        Gradient steps.
    step_size : float
        Each step adds ``step_size * g / mean|g|`` to the pixels (RGB in ``[0, 1]``).
    tv_weight : float
        Weight of the total-variation denoising after each step (Chambolle, ``tv_iterations`` iterations).
    tv_iterations : int
    center_start : float
        Side of the central square where the gradient acts at the first step, as a fraction of the image.
    center_grow : float
        Fraction of the steps over which that square grows to the whole image.
    objective : str
        As in :func:`nsi_widgets.visualize` (default ``"neuron"``, the map centre).
    anchor : float
        Weight of the facet anchor ``||c(x) - c_f||^2 / ||c_f||^2`` subtracted from the objective, with
        ``c(x)`` the image's code and ``c_f`` the mean code of the facet's members: it keeps each
        visualisation in its own facet (0: the paper's procedure alone).
    """

    steps: int = 64
    step_size: float = 0.003
    tv_weight: float = 0.01
    tv_iterations: int = 5
    center_start: float = 0.5
    center_grow: float = 0.5
    objective: str = "neuron"
    anchor: float = 10.0

    def __post_init__(self):
        if self.objective not in OBJECTIVES or self.objective == "class":
            raise InputError(f"the facets' objective must be 'neuron' or 'channel', not {self.objective!r}")
        if self.steps < 0 or self.step_size < 0 or self.tv_weight < 0 or not 0 < self.center_start <= 1:
            raise InputError(f"invalid facet options {self}")


@dataclass
class Facets:
    """The facets of one unit.

    Attributes
    ----------
    layer : str
    unit : int
    candidates : ndarray, (n,) int64
        Dataset indices of the top images that were clustered (positive activation), best first.
    labels : ndarray, (n,) int64
        Facet of each candidate (facets numbered by their best member).
    members : list of ndarray
        Per facet, dataset indices of its members, best first.
    member_ranks : list of ndarray
        Per facet, the members' ranks in the unit's top list.
    mean_images : ndarray, (k, H, W, 3) float32
    images : ndarray, (k, H, W, 3) float32
        The visualisation of each facet, started from its mean image.
    activations : ndarray, (k,) float32
        The objective on each visualisation.
    mean_activations : ndarray, (k,) float32
        The objective on each mean image (the start).
    codes : ndarray, (n, D) float32
        The candidates' codes.
    coordinates : ndarray, (n, d) float64
        The reduced codes that k-means clustered.
    silhouettes : dict of int to float
        Mean silhouette per ``k`` tried (empty when ``k`` was given).
    code_layer : str
    recipe : dict
    n_channels : int
    """

    layer: str
    unit: int
    candidates: np.ndarray
    labels: np.ndarray
    members: list
    member_ranks: list
    mean_images: np.ndarray
    images: np.ndarray
    activations: np.ndarray
    mean_activations: np.ndarray
    codes: np.ndarray
    coordinates: np.ndarray
    silhouettes: dict
    code_layer: str
    recipe: dict
    n_channels: int
    image_codes: np.ndarray | None = field(default=None, repr=False)

    @property
    def k(self) -> int:
        """Number of facets."""
        return len(self.members)

    def __repr__(self) -> str:
        return (f"Facets({self.layer!r}, unit={self.unit}, k={self.k}, sizes={[len(m) for m in self.members]}, "
                f"code_layer={self.code_layer!r})")

    def to_attachment(self) -> Attachment:
        """This unit's facets as the index's ``"synthesis"`` attachment (see :mod:`.attachment`)."""
        entries = _attachment.LayerEntries(self.n_channels)
        entries.facets[int(self.unit)] = [
            _attachment.FacetRecord(np.asarray(m), np.asarray(r), self.mean_images[i], self.images[i],
                                    float(self.activations[i]))
            for i, (m, r) in enumerate(zip(self.members, self.member_ranks))]
        return _attachment.encode({self.layer: entries}, {self.layer: {"facets": self.recipe}})

    @classmethod
    def from_attachment(cls, attachment: Attachment, layer: str, unit: int) -> "Facets":
        """The stored facets of one unit (images quantised to 1/255; codes are not stored: empty arrays)."""
        layers, recipes = _attachment.decode(attachment)
        if layer not in layers or int(unit) not in layers[layer].facets:
            raise InputError(f"the attachment has no facets for unit {unit} of layer {layer!r}")
        records = layers[layer].facets[int(unit)]
        members = [r.members for r in records]
        candidates = np.concatenate(members)
        labels = np.concatenate([np.full(len(m), i) for i, m in enumerate(members)])
        order = np.argsort(np.concatenate([r.member_ranks for r in records]), kind="stable")
        recipe = dict(recipes.get(layer, {}).get("facets", {}))
        return cls(layer=layer, unit=int(unit), candidates=candidates[order], labels=labels[order].astype(np.int64),
                   members=members, member_ranks=[r.member_ranks for r in records],
                   mean_images=np.stack([r.mean_image for r in records]), images=np.stack([r.image for r in records]),
                   activations=np.asarray([r.activation for r in records], dtype=np.float32),
                   mean_activations=np.full(len(records), np.nan, dtype=np.float32),
                   codes=np.empty((0, 0), np.float32), coordinates=np.empty((0, 0)), silhouettes={},
                   code_layer=str(recipe.get("code_layer", "")), recipe=recipe, n_channels=layers[layer].n_units)


def default_code_layer(model: nn.Module) -> str:
    """The deepest conv layer (``nsi_widgets.zoo.conv_layers(model)[-1]``): its pooled output is the code."""
    from ..zoo import conv_layers

    names = conv_layers(model)
    if not names:
        raise InputError("the model has no conv layer to take codes from; pass code_layer=")
    return names[-1]


def facets(model: nn.Module, data: Sequence, index, layer: str, unit: int, *, k: int | None = None,
           code_layer: str | None = None, top_n: int | None = None, reduce: str = "pca",
           n_components: int | None = None, k_max: int = DEFAULT_K_MAX, options: FacetOptions | None = None,
           preprocess: Callable | None = None, device=None, seed: int = 0, batch_size: int = 64,
           progress: bool | Callable = True) -> Facets:
    """Cluster a unit's top images into facets and visualise each (docs/methods.md section 9).

    Parameters
    ----------
    model : torch.nn.Module
    data : Dataset or sequence
        The dataset the index was computed on.
    index : NeuronIndex
        Gives the unit's top images (``index[layer].top_indices[unit]``).
    layer : str
    unit : int
    k : int, optional
        Number of facets; default: the silhouette rule of :func:`~nsi_widgets.synthesis.clustering.choose_k`
        over ``2 .. k_max`` (1 when no clustering reaches a mean silhouette of 0.25).
    code_layer : str, optional
        Layer whose spatially averaged output is the code; default :func:`default_code_layer`.
    top_n : int, optional
        Use only the best ``top_n`` top images (default: all with a positive activation).
    reduce : {"pca", "tsne"}
        PCA (``n_components`` or 95 % of the variance, at most 20) or 2-D t-SNE (needs scikit-learn).
    options : FacetOptions, optional
        The visualisation's settings (steps, step size, TV denoising, centre bias, objective).
    preprocess, device, batch_size : as for :func:`nsi_widgets.index_neurons`.
    seed : int
        Seeds k-means and t-SNE.
    progress : bool or callable
        A progress bar, or a function ``(done, total)``.

    Returns
    -------
    Facets
        ``.members``, ``.mean_images``, ``.images``, ``.activations``, ...

    Raises
    ------
    InputError
        Unknown layer or unit, fewer top images with a positive activation than facets asked for.
    """
    options = options or FacetOptions()
    if reduce not in ("pca", "tsne"):
        raise InputError(f"reduce must be 'pca' or 'tsne', not {reduce!r}")
    if layer not in index:
        raise InputError(f"layer {layer!r} is not in the index (indexed: {list(index)})")
    L = index[layer]
    if not isinstance(unit, (int, np.integer)) or not 0 <= unit < L.n_units:
        raise InputError(f"unit must be an int in 0 .. {L.n_units - 1}, got {unit!r}")
    positive = L.top_activations[unit] > 0
    ranks = np.flatnonzero(positive)[: top_n if top_n is not None else None]
    candidates = L.top_indices[unit][ranks].astype(np.int64)
    if k is not None and (not isinstance(k, (int, np.integer)) or not 1 <= k <= len(candidates)):
        raise InputError(f"k={k!r} facets need at least k top images with a positive activation; unit {unit} of "
                         f"{layer!r} has {len(candidates)}")
    if len(candidates) == 0:
        raise InputError(f"unit {unit} of {layer!r} is dead (no top image with a positive activation): no facets")
    code_layer = code_layer or default_code_layer(model)
    ((_, code_module),) = _resolve(model, code_layer).items()
    ((layer_name, layer_module),) = _resolve(model, layer).items()
    device = _device(model, device)
    recipe = {"layer": layer_name, "unit": int(unit), "k": None if k is None else int(k), "k_max": int(k_max),
              "code_layer": code_layer, "top_n": top_n, "reduce": reduce, "n_components": n_components,
              "seed": int(seed), "options": dict(options.__dict__)}

    images = torch.cat([batch for _, batch, _ in iterate_batches(data, candidates, batch_size)]).to(device)
    with PreparedModel(model, code_module, preprocess, device) as run:
        codes = _codes(run, images, batch_size)
    coordinates = tsne(codes, seed=seed) if reduce == "tsne" else pca(codes, n_components)
    silhouettes = {}
    if k is None:
        k, silhouettes = choose_k(coordinates, k_max, seed=seed) if len(candidates) >= 4 else (1, {})
    labels = kmeans(coordinates, int(k), seed=seed).labels           # numbered by first appearance = best member
    recipe["k_chosen"] = int(k)
    members = [candidates[labels == j] for j in range(k)]
    member_ranks = [ranks[labels == j] for j in range(k)]
    if options.objective == "neuron":  # the unit's maximum of each member moved to the map centre
        images_for_mean = _centre_on_maxima(images, L, unit, ranks)
    else:
        images_for_mean = images
    mean_images = torch.stack([images_for_mean[torch.from_numpy(labels == j).to(device)].mean(0) for j in range(k)])

    centroids = torch.from_numpy(np.stack([codes[labels == j].mean(0) for j in range(k)])).to(device)
    advance, close = _progress_bar(progress, options.steps, f"facets {layer_name}:{unit}")
    try:
        with PreparedModel(model, layer_module, preprocess, device, also=code_module) as run:
            units = torch.full((k,), int(unit), device=device)
            with torch.no_grad():
                start = evaluate(options.objective, run(mean_images), units)
            final_images, final = _visualise(run, mean_images, units, centroids, options, advance)
    finally:
        close()
    with PreparedModel(model, code_module, preprocess, device) as run:
        image_codes = _codes(run, final_images, batch_size)
    return Facets(layer=layer_name, unit=int(unit), candidates=candidates, labels=labels, members=members,
                  member_ranks=member_ranks, mean_images=_hwc(mean_images), images=_hwc(final_images),
                  activations=final.cpu().numpy().astype(np.float32),
                  mean_activations=start.cpu().numpy().astype(np.float32), codes=codes, coordinates=coordinates,
                  silhouettes=silhouettes, code_layer=code_layer, recipe=recipe, n_channels=L.n_units,
                  image_codes=image_codes)


def _resolve(model, name):
    try:
        return resolve_layers(model, name)
    except ValueError as err:
        raise InputError(str(err)) from None


def _hwc(images: torch.Tensor) -> np.ndarray:
    return images.detach().permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


@torch.no_grad()
def _codes(run: PreparedModel, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """Spatially averaged layer outputs ``(n, D)`` float32."""
    out = []
    for start in range(0, len(images), batch_size):
        out.append(_pooled(run(images[start:start + batch_size])))
    return torch.cat(out).cpu().numpy().astype(np.float32)


def _centre_on_maxima(images: torch.Tensor, L, unit: int, ranks: np.ndarray) -> torch.Tensor:
    """Each image shifted by whole receptive-field strides so that the unit's maximum in it moves to the
    centre of the map (the place the ``"neuron"`` objective reads); uncovered pixels take the image's mean."""
    mh, mw = L.map_size
    sy, sx = L.receptive_field.stride
    out = torch.empty_like(images)
    for i, rank in enumerate(ranks):
        y, x = (int(v) for v in L.top_positions[unit, rank])
        out[i] = shift(images[i], (mh // 2 - y) * sy, (mw // 2 - x) * sx)
    return out


def shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` (3, H, W) moved down by ``dy`` and right by ``dx`` pixels, new pixels at its mean colour."""
    h, w = image.shape[-2:]
    out = image.mean(dim=(1, 2), keepdim=True).expand_as(image).clone()
    if abs(dy) < h and abs(dx) < w:
        out[:, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = \
            image[:, max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    return out


def center_mask(size: tuple[int, int], fraction: float) -> torch.Tensor:
    """1 inside the central square whose sides are ``fraction`` of the image's, 0 outside; ``(H, W)``."""
    h, w = size
    mask = torch.zeros(h, w)
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    mask[top:top + ch, left:left + cw] = 1
    return mask


def _pooled(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).mean(2) if t.ndim > 2 else t


def _visualise(run: PreparedModel, start: torch.Tensor, units: torch.Tensor, centroids: torch.Tensor,
               options: FacetOptions, advance):
    """The paper's optimisation from ``start`` (B, 3, H, W) with the facet anchor to ``centroids`` (B, D);
    returns the images and their objective."""
    x = start.detach().clone()
    size = (x.shape[-2], x.shape[-1])
    grow_steps = max(1, round(options.center_grow * options.steps))
    for step in range(options.steps):
        fraction = options.center_start + (1 - options.center_start) * min(1.0, step / grow_steps)
        x.requires_grad_(True)
        with run.redirect(step == 0):
            t, code = run.outputs(x)
            value = evaluate(options.objective, t, units)
            if options.anchor:
                drift = (_pooled(code) - centroids).pow(2).sum(1) / centroids.pow(2).sum(1).clamp(min=1e-12)
                value = value - options.anchor * drift
            (grad,) = torch.autograd.grad(value.sum(), x)
        with torch.no_grad():
            mask = center_mask(size, fraction).to(grad)
            grad = grad * mask
            # normalised step: mean |g| over the active region (3 channels x the mask's pixels) is 1
            grad = grad / (grad.abs().flatten(1).sum(1).view(-1, 1, 1, 1) / (3 * mask.sum()) + 1e-12)
            x = tv_denoise(x.detach() + options.step_size * grad, options.tv_weight, options.tv_iterations).clamp_(0, 1)
        advance(1)
    with torch.no_grad():
        final = evaluate(options.objective, run(x), units)
    return x.detach(), final
