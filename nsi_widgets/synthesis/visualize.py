"""Activation maximisation: the image a unit wants (docs/methods.md section 9).

``x* = argmax_x objective(T(P(theta))) - sum_k w_k R_k(P(theta))``, with ``P`` a parameterisation
(:mod:`.parameterisations`), ``T`` a random transformation per step (:mod:`.transforms`), ``R_k`` the
image priors (:mod:`.regularizers`), optimised with Adam. All units of a call are the images of one
batch; each image has its own start (seeded by the call's seed and its unit), the transformations
are drawn once per step for the whole batch, and the model runs in eval mode (checked not to mix
the batch), so a unit's image does not depend on the other units of the call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError
from ..core.layers import resolve_layers
from ..index.results import Attachment
from . import attachment as _attachment
from .objectives import OBJECTIVES, diversity as _diversity, evaluate
from .parameterisations import PARAMETERISATIONS, make_image
from .regularizers import check_regularizers, penalty
from .running import PreparedModel
from .statistics import ImageStatistics, resolve_statistics
from .transforms import RandomTransforms, resolve_transforms

DEFAULT_STEPS = 128
"""Optimisation steps of :func:`visualize` (lucid: 512 at 224 pixels)."""
DEFAULT_OBJECTIVE = "neuron"
"""The unit at the centre of the map: the synthetic counterpart of the index's top activation (the map
maximum, one position) and of the Neuron Feature (crops around it). lucid's default is ``"channel"``,
the spatial mean (a texture); on the embedded default's deeper layers that objective leaves the map
maximum below the best dataset image for many units (docs/methods.md section 9)."""
DEFAULT_LR = 0.05
"""Adam's learning rate (lucid's)."""
DEFAULT_REDIRECT_STEPS = 16
"""Steps with the redirected ReLU gradient at the start of an optimisation."""


@dataclass
class Visualization:
    """Activation-maximisation images of units of one layer.

    Attributes
    ----------
    layer : str
        The layer's name (``"output"`` for ``objective="class"``).
    units : ndarray, (U,) int64
        The unit (or class) of each image.
    images : ndarray, (U, H, W, 3) float32
        RGB in ``[0, 1]``.
    activations : ndarray, (U,) float32
        The objective on each final image, without transformations.
    history : ndarray, (steps, U) float32
        The objective at each step (on the transformed image the step optimised).
    recipe : dict
        Every setting (JSON-able), including the seed and a description of the image statistics.
    n_channels : int
        Units of the layer (for the index attachment's per-unit columns).
    statistics : ImageStatistics or None
        The priors used (not saved in attachments; ``recipe["decorrelate"]`` describes them).
    """

    layer: str
    units: np.ndarray
    images: np.ndarray
    activations: np.ndarray
    history: np.ndarray
    recipe: dict
    n_channels: int
    statistics: ImageStatistics | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"Visualization({self.layer!r}, units={len(self.units)}, size={self.images.shape[1:3]}, "
                f"median activation={np.median(self.activations):.3g})")

    def to_attachment(self) -> Attachment:
        """This result as the index's ``"synthesis"`` attachment (see :mod:`.attachment`).

        ``idx.attach(ATTACHMENT_NAME, merge(idx.attachments.get(ATTACHMENT_NAME), v.to_attachment()))``
        keeps earlier units. Units repeated in the call (diversity) keep their last image.
        """
        entries = _attachment.LayerEntries(self.n_channels)
        for row, unit in enumerate(self.units):
            entries.am[int(unit)] = _attachment.AmRecord(self.images[row], float(self.activations[row]),
                                                         self.history[:, row])
        return _attachment.encode({self.layer: entries}, {self.layer: {"visualize": self.recipe}})

    @classmethod
    def from_attachment(cls, attachment: Attachment, layer: str, units: Sequence[int] | None = None) -> "Visualization":
        """Read the images of ``layer`` (all stored units, or ``units``) back from an attachment."""
        layers, recipes = _attachment.decode(attachment)
        if layer not in layers or not layers[layer].am:
            raise InputError(f"the attachment has no activation-maximisation images for layer {layer!r}")
        entries = layers[layer]
        chosen = sorted(entries.am) if units is None else [int(u) for u in units]
        missing = [u for u in chosen if u not in entries.am]
        if missing:
            raise InputError(f"units {missing} of layer {layer!r} are not in the attachment (it has {sorted(entries.am)})")
        records = [entries.am[u] for u in chosen]
        longest = max(len(r.history) for r in records)
        history = np.full((longest, len(records)), np.nan, dtype=np.float32)
        for j, r in enumerate(records):
            history[: len(r.history), j] = r.history
        return cls(layer=layer, units=np.asarray(chosen, dtype=np.int64),
                   images=np.stack([r.image for r in records]).astype(np.float32),
                   activations=np.asarray([r.activation for r in records], dtype=np.float32),
                   history=history, recipe=dict(recipes.get(layer, {}).get("visualize", {})),
                   n_channels=entries.n_units)


def image_seed(seed: int, unit: int, occurrence: int) -> int:
    """The start seed of one image: a function of the call's seed, its unit and repeat number only."""
    return int(np.random.SeedSequence([int(seed), int(unit), int(occurrence)]).generate_state(1)[0])


def _units_array(units) -> np.ndarray:
    if isinstance(units, (int, np.integer)):
        units = [units]
    try:
        array = np.asarray(list(units))
    except TypeError:
        raise InputError(f"units must be an int or a sequence of ints, got {type(units).__name__}") from None
    if array.size == 0 or array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"units must be a non-empty sequence of ints, got {units!r}")
    return array.astype(np.int64)


def _resolve_size(image_size, statistics: ImageStatistics | None) -> tuple[int, int]:
    if image_size is None:
        if statistics is None:
            raise InputError("image_size is needed when decorrelate=None (no data to take the model's input "
                             "size from); pass image_size=(H, W)")
        return tuple(int(s) for s in statistics.image_size)
    if isinstance(image_size, (int, np.integer)):
        image_size = (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise InputError(f"image_size must be (H, W) of positive ints, got {image_size!r}")
    return size


def _resolve_layer(model: nn.Module, layer, objective: str) -> tuple[str, nn.Module | None]:
    if objective == "class":
        if layer not in (None, "output"):
            raise InputError("objective='class' maximises the model's output: pass layer=None (or 'output')")
        return "output", None
    if layer is None:
        raise InputError(f"objective={objective!r} needs a layer name")
    try:
        ((name, module),) = resolve_layers(model, layer).items()
    except ValueError as err:
        raise InputError(str(err)) from None
    return name, module


def _device(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _progress_bar(progress, total: int, desc: str):
    """A callable ``advance(n)`` and a ``close()``: tqdm for ``progress=True``, or the user's callback."""
    if callable(progress):
        done = [0]

        def advance(n: int = 1) -> None:
            done[0] += n
            progress(done[0], total)
        return advance, lambda: None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, leave=False)
        return bar.update, bar.close
    return (lambda n=1: None), (lambda: None)


def visualize(model: nn.Module, layer, units, *, objective: str = DEFAULT_OBJECTIVE, steps: int = DEFAULT_STEPS,
              param: str = "fft", decorrelate: Any = "shapes", transforms: Any = "standard",
              regularizers: dict[str, float] | None = None, image_size=None, batch: bool = True, seed: int = 0,
              preprocess: Callable | None = None, device=None, progress: bool | Callable = True,
              lr: float = DEFAULT_LR, diversity: float = 0.0,
              redirect_relu: int = DEFAULT_REDIRECT_STEPS, sd: float = 0.01) -> Visualization:
    """Synthesise the image that maximises each unit (activation maximisation; docs/methods.md section 9).

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode with frozen weights during the call (both restored afterwards).
    layer : str or module
        The layer whose units are maximised (its module output); None with ``objective="class"``.
    units : int or sequence of int
        Channels of the layer (or classes); repeat a unit for several images of it (see ``diversity``).
    objective : {"neuron", "channel", "class"}
        The channel at the map centre (default), its spatial mean (lucid's default), or a class logit
        of the output.
    steps : int
        Adam steps.
    param : {"fft", "pixel"}
        Fourier parameterisation scaled by the data's amplitude spectrum, or pixels; both in the
        data's decorrelated colour space.
    decorrelate : "shapes", dataset, ImageStatistics, or None
        Where the colour matrix, mean colour and spectrum come from: the embedded default's images
        (default), your images (a dataset as for ``index_neurons``), precomputed statistics
        (:func:`nsi_widgets.synthesis.image_statistics`), or None (identity, grey, lucid's 1/f).
    transforms : "standard", "none", or TransformSpec
        Random transformations per step (lucid's, scaled to the image size).
    regularizers : dict, optional
        ``{name: weight}`` with names ``"l2"``, ``"tv"``, ``"blur"``, ``"center"``; none by default.
    image_size : int or (int, int), optional
        Default: the size of the images in ``decorrelate`` (the model's own input size), never upsampled.
    batch : bool
        Optimise all units in one batch (True) or one after another (False; same results up to
        floating-point rounding).
    seed : int
        Seeds every start and every transformation: the same seed gives identical images on the CPU.
    preprocess : callable, optional
        Maps RGB in ``[0, 1]`` to the model's input (e.g. normalisation).
    device : optional
        Default: the device of the model's parameters.
    progress : bool or callable
        A progress bar, or a function ``(done, total)`` called after every step.
    lr : float
        Adam's learning rate.
    diversity : float
        Weight of the diversity term between images of the same unit.
    redirect_relu : int
        First steps with the redirected ReLU gradient (0: never).
    sd : float
        Standard deviation of the random start of the parameters.

    Returns
    -------
    Visualization
        ``.images`` (U, H, W, 3), ``.activations`` (U,), ``.history`` (steps, U), ``.recipe``.

    Raises
    ------
    InputError
        Unknown layer, objective, parameterisation or regulariser; a unit outside the layer; a model
        that mixes the images of a batch with ``batch=True``.
    """
    if objective not in OBJECTIVES:
        raise InputError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    if param not in PARAMETERISATIONS:
        raise InputError(f"param must be one of {PARAMETERISATIONS}, not {param!r}")
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    weights = check_regularizers(regularizers)
    units_np = _units_array(units)
    name, module = _resolve_layer(model, layer, objective)
    statistics = resolve_statistics(decorrelate, None if image_size is None else _resolve_size(image_size, None))
    size = _resolve_size(image_size, statistics)
    spec = resolve_transforms(transforms, size)
    device = _device(model, device)
    mean = torch.as_tensor(statistics.mean if statistics is not None else [0.5] * 3, dtype=torch.float32).to(device)
    occurrence = [int((units_np[:i] == u).sum()) for i, u in enumerate(units_np)]
    seeds = [image_seed(seed, u, k) for u, k in zip(units_np, occurrence)]
    recipe = {"layer": name, "units": units_np.tolist(), "objective": objective, "steps": int(steps), "param": param,
              "decorrelate": statistics.describe() if statistics is not None else None,
              "transforms": spec.to_dict(), "regularizers": weights, "image_size": list(size), "batch": bool(batch),
              "seed": int(seed), "lr": float(lr), "diversity": float(diversity), "redirect_relu": int(redirect_relu),
              "sd": float(sd), "preprocess": None if preprocess is None else getattr(preprocess, "__name__", repr(preprocess))}

    groups = [np.arange(len(units_np))] if batch else [np.array([i]) for i in range(len(units_np))]
    images = np.empty((len(units_np), size[0], size[1], 3), dtype=np.float32)
    activations = np.empty(len(units_np), dtype=np.float32)
    history = np.empty((steps, len(units_np)), dtype=np.float32)
    advance, close = _progress_bar(progress, steps * len(groups), f"visualize {name}")
    with PreparedModel(model, module, preprocess, device) as run:
        n_channels = _check_units(run, size, units_np, device, name)
        if batch and len(units_np) > 1:
            run.check_independent(size, seed)
        try:
            for group in groups:
                out = _optimise(run, group, units_np, seeds, size, statistics, spec, weights, mean, recipe, device, advance)
                images[group], activations[group], history[:, group] = out
        finally:
            close()
    return Visualization(name, units_np, images, activations, history, recipe, n_channels, statistics)


@torch.no_grad()
def _check_units(run: PreparedModel, size, units: np.ndarray, device, name: str) -> int:
    probe = run(torch.full((1, 3, *size), 0.5, device=device))
    n_channels = int(probe.shape[1]) if probe.ndim >= 2 else 0
    bad = units[(units < 0) | (units >= n_channels)]
    if bad.size:
        raise InputError(f"units {bad.tolist()} are outside layer {name!r}, which has {n_channels} units")
    return n_channels


def _optimise(run, group, units_np, seeds, size, statistics, spec, weights, mean, recipe, device, advance):
    """Optimise the images of ``group`` (indices into the call's units) together."""
    units = torch.as_tensor(units_np[group], device=device)
    image = make_image(recipe["param"], size, [seeds[i] for i in group], statistics, recipe["sd"]).to(device)
    optimizer = torch.optim.Adam(image.parameters(), lr=recipe["lr"])
    transform = RandomTransforms(spec, recipe["seed"], mean)
    steps, history = recipe["steps"], np.empty((recipe["steps"], len(group)), dtype=np.float32)
    for step in range(steps):
        with run.redirect(step < recipe["redirect_relu"]):
            x = image()
            t = run(transform(x))
            value = evaluate(recipe["objective"], t, units)
            loss = penalty(x, weights, mean) - value
            if recipe["diversity"]:
                loss = loss + recipe["diversity"] * _diversity(t, units)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
        optimizer.step()
        history[step] = value.detach().cpu().numpy()
        advance(1)
    with torch.no_grad():
        x = image()
        final = evaluate(recipe["objective"], run(x), units)
    return x.permute(0, 2, 3, 1).cpu().numpy(), final.cpu().numpy(), history
