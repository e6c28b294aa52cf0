"""``index_neurons``: a plan, two passes of the streaming engine, and the assembly of the results.

1. *Plan*: options validated (:class:`~.options.IndexOptions`), a probe of the model on the first
   image (layers fire, ``preprocess`` keeps the image size), receptive fields, the checkpoint key.
2. *Scan* pass over the whole dataset: the running top-N of every unit (:class:`~.scan.TopNScan`)
   and every image's label.
3. *Crop* pass over only the images some top-N list references, each read once: Neuron Features
   (:class:`~.features.NeuronFeatureAccumulator`) and the transformed activations of the crop
   indexes (:mod:`.local_forward`), by the cheapest exact way each layer allows.
4. *Assembly*: the indexes from the records (:mod:`.selectivity`), one :class:`~.results.NeuronIndex`.

Both passes checkpoint, resume and run distributed through :mod:`nsi_widgets.core.passes`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..core import distributed, modules as module_kinds
from ..core.checkpoint import Checkpoint
from ..core.data import DataCheck, check_dataset, check_labels, get_item, iterate_batches, read_item
from ..core.errors import InputError, InputTypeError
from ..core.fingerprint import callable_fingerprint, data_fingerprint, model_fingerprint
from ..core.layers import LayerRecorder, modules_run_before, resolve_layers
from ..core.passes import PassOptions, run_pass
from ..core.receptive_field import ReceptiveField, receptive_field
from .cone import ChainCone, chain_cone
from .features import LayerReferences, NeuronFeatureAccumulator, referenced_images
from .local_forward import TransformedActivations, WholeImageTransforms, check_samples
from .options import IndexOptions
from .results import LayerIndex, NeuronIndex
from .scan import LabelCollector, TopNScan
from .selectivity import class_selectivity, get_index, population_code, ratio_index, top_weights


def index_neurons(model: nn.Module, data, layers, *, top_n: int = 100,
                  preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None, batch_size: int = 64,
                  device: str | torch.device | None = None, progress: bool = True,
                  indexes=("color", "class"), gray: str = "pca", nu: float = 1.0,
                  neuron_features: str | None = "weighted", n_thumbnails: int = 16, thumbnail_size: int = 48,
                  checkpoint=None, checkpoint_every: int = 50, num_workers: int = 0,
                  shortcut: str = "auto", class_names=None, class_parents=None,
                  skip_nonfinite: bool = False) -> NeuronIndex:
    """Index the neurons of ``layers`` of ``model`` over ``data`` (Rafegas et al. 2019).

    For every unit (channel) of each layer: the ``top_n`` images with the largest map maximum, where
    that maximum lies, the receptive-field crop there, the Neuron Feature (weighted mean of the crops)
    and the selectivity indexes (docs/methods.md sections 1-6).

    Parameters
    ----------
    model : torch.nn.Module
        Put in eval mode during the run (its mode is restored afterwards).
    data : Dataset or sequence
        Items ``(image, label)`` or ``image``; images RGB in ``[0, 1]`` (float ``3xHxW``), uint8 arrays
        or PIL images, all of one size; labels integer class ids. ``data.classes`` and
        ``data.class_parents`` are used if present. Every item is checked as it is read (see
        :mod:`nsi_widgets.core.data`); a bad one stops the run with its index.
    layers : str, module, or list of them
        Dotted names from ``model.named_modules()`` (see :func:`nsi_widgets.list_layers`) or modules.
        The recorded tensor is each module's output.
    top_n : int
        Images kept per unit (the paper: 100); capped at the dataset size.
    preprocess : callable, optional
        Maps a batch ``(B, 3, H, W)`` of RGB in ``[0, 1]`` to the model's input (e.g. normalisation).
        It must keep the image size (receptive fields and crops refer to the dataset's pixels: resize
        in the dataset instead); for the index shortcuts it must act per pixel (normalisation does).
    batch_size, num_workers : DataLoader settings.
    device : str or torch.device, optional
        Defaults to the device of the model's parameters.
    progress : bool
        Show ``tqdm`` progress bars (on rank 0 only when distributed).
    indexes : sequence of str
        Indexes to compute: built-ins ``"color"``, ``"class"``, ``"orientation"``, ``"symmetry"``,
        ``"shape"``, or any added with :func:`nsi_widgets.register_index`. ``()`` computes none.
    gray : {"pca", "luminance"}
        Grey version for the colour index (docs/methods.md section 4).
    nu : float
        Threshold of the class indexes, also over superclasses (default 1.0, as in the authors'
        group code; docs/methods.md section 5).
    neuron_features : {"weighted", "mean", "border"} or None
        How to average the crops (docs/methods.md section 3); None skips Neuron Features and thumbnails.
    n_thumbnails, thumbnail_size : int
        Top crops kept per unit as uint8 thumbnails (for the neuron card), and their longest side.
    checkpoint : path, optional
        Save the state of both passes there every ``checkpoint_every`` batches; a rerun with the same
        path resumes (bit for bit equal to an uninterrupted run). The file is keyed by the model's
        weights, a fingerprint of the data and of ``preprocess``, and every argument that changes the
        result: a checkpoint of another run is refused with a message naming what differs.
    shortcut : {"auto", "never"}
        ``auto`` computes transformed activations from crop-sized forwards where the layer is shown
        to be local (checked against the plain definition on sample crops): forwards of each unit's
        receptive cone where a verified chain of local modules reaches the layer, else of a sub-image
        around the crop; ``meta["shortcut_kind"]`` records which. ``never`` always uses the plain
        definition (full-image forwards).
    class_names, class_parents : optional
        Override ``data.classes`` / ``data.class_parents`` (a child -> parent mapping of names).
    skip_nonfinite : bool
        Leave out images with NaN or infinite pixels (counted in ``meta["skipped_images"]``) instead
        of stopping with an error.

    Returns
    -------
    NeuronIndex

    Notes
    -----
    Under ``torch.distributed`` (an initialised process group, e.g. started by ``torchrun``) both
    passes are sharded by whole batches over the processes and their states merged: every rank
    returns the same index, equal to one process's.
    """
    started = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n_images = check_dataset(data)
    options = IndexOptions(top_n, preprocess, batch_size, device, progress, indexes, gray, nu, neuron_features,
                           n_thumbnails, thumbnail_size, checkpoint, checkpoint_every, num_workers, shortcut,
                           class_names, class_parents, skip_nonfinite).validated(model, data, n_images)
    modules = resolve_layers(model, layers)
    with _eval_mode(model):
        plan = _plan(model, data, modules, options, n_images)
        layer_results, labels = _scan(plan)
        crops = _crop_pass(plan, layer_results)
        return _assemble(plan, layer_results, labels, crops, started)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass
class _Plan:
    """What both passes share: the model, data, layers, options, probe and checkpoint."""

    model: nn.Module
    data: object
    modules: dict[str, nn.Module]
    options: IndexOptions
    n_images: int
    image_size: tuple[int, int]
    probe_input: torch.Tensor
    fields: dict[str, ReceptiveField]
    fingerprint: str
    checkpoint: Checkpoint | None
    passes: PassOptions


def _plan(model, data, modules, options: IndexOptions, n_images: int) -> _Plan:
    """Probe the model on the first image, get receptive fields, and open the checkpoint."""
    check_labels(data, len(options.class_names) if options.class_names else None)
    image, _, _ = read_item(get_item(data, 0), 0, DataCheck(skip_nonfinite=options.skip_nonfinite))
    image_size = tuple(image.shape[-2:])
    probe_input = _probe(model, modules, image[None], options)
    fields = {name: _receptive_field(model, name, image_size) for name in modules}
    fingerprint = model_fingerprint(model)
    check = DataCheck(image_shape=tuple(image.shape),
                      n_classes=len(options.class_names) if options.class_names else None,
                      skip_nonfinite=options.skip_nonfinite)
    checkpoint = None
    if options.checkpoint or distributed.active():
        # The run's key: needed to refuse another run's checkpoint and to check that all ranks agree.
        key = {"model": fingerprint, "layers": list(modules),
               "data": data_fingerprint(data, lambda i: read_item(get_item(data, i), i, check)[:2]),
               "preprocess": callable_fingerprint(options.preprocess), **options.key()}
        distributed.check_same(key, "the run (model, data, preprocess and arguments)")
        if options.checkpoint:
            checkpoint = Checkpoint(options.checkpoint, key, options.checkpoint_every)
    passes = PassOptions(options.batch_size, options.num_workers, options.device, options.preprocess, check,
                         options.progress)
    return _Plan(model, data, modules, options, n_images, image_size, probe_input, fields, fingerprint,
                 checkpoint, passes)


def _receptive_field(model, name: str, image_size) -> ReceptiveField:
    try:
        return receptive_field(model, name, input_size=image_size)
    except ValueError as err:
        raise InputError(" ".join(str(err).split())) from err


def _probe(model, modules, image: torch.Tensor, options: IndexOptions) -> torch.Tensor:
    """The model input of one image; checks ``preprocess`` and that every layer fires on it."""
    inputs = image.to(options.device)
    if options.preprocess is not None:
        try:
            out = options.preprocess(inputs)
        except Exception as err:  # noqa: BLE001 - the user's function: report it in one line
            raise InputError(f"preprocess failed on the first image ({type(err).__name__}: {err})") from err
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != 1:
            raise InputError(f"preprocess must map a batch (B, 3, H, W) to a batch tensor (B, C, H, W); for "
                             f"one image it returned {_describe(out)}")
        if tuple(out.shape[-2:]) != tuple(image.shape[-2:]):
            raise InputError(f"preprocess changes the image size from {tuple(image.shape[-2:])} to "
                             f"{tuple(out.shape[-2:])}; receptive fields and crops refer to the dataset's "
                             "pixels, so resize in the dataset instead (e.g. ImageFolderDataset(root, size=...)) "
                             "and keep preprocess to per-pixel normalisation")
        inputs = out
    try:
        with LayerRecorder(modules, lambda n, o: None) as recorder, torch.inference_mode():
            recorder.run(model, inputs)
    except (RuntimeError, TypeError) as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"the model cannot run on the dataset's first image of shape {tuple(inputs.shape)} "
                         f"({type(err).__name__}: {first})") from err
    return inputs


def _describe(value) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__


# ---------------------------------------------------------------------------------------------
# The scan pass
# ---------------------------------------------------------------------------------------------
def _scan(plan: _Plan) -> tuple[dict[str, LayerIndex], LabelCollector]:
    """The top-N records of every layer, and the labels of all images."""
    top = TopNScan(list(plan.modules), plan.options.top_n, device=plan.options.device)
    labels = LabelCollector(plan.n_images)
    run_pass("scan", plan.model, plan.data, plan.modules, [top, labels], plan.passes, checkpoint=plan.checkpoint)
    records = _trim_empty_slots(top.result())
    all_labels = labels.result()
    results = {}
    for name, (arrays, shape) in records.items():
        width = shape[-1] if len(shape) >= 3 else 1
        flat = arrays["positions"]
        indices = arrays["indices"].astype(np.int64)
        results[name] = LayerIndex(
            name=name, top_indices=indices, top_activations=arrays["values"].astype(np.float32),
            top_positions=np.stack([flat // width, flat % width], axis=-1).astype(np.int64),
            receptive_field=plan.fields[name], map_size=tuple(int(s) for s in shape[-2:]),
            top_labels=np.where(indices >= 0, all_labels[np.clip(indices, 0, None)], -1).astype(np.int64))
    return results, labels


def _trim_empty_slots(records: dict) -> dict:
    """Top lists hold ``-inf`` entries only when fewer images gave finite maxima than ``top_n`` (skipped
    images, NaN maps): cut every list to the number all units have, with a warning."""
    finite = min(int(np.isfinite(arrays["values"]).sum(axis=1).min()) for arrays, _ in records.values())
    top_n = next(iter(records.values()))[0]["values"].shape[1]
    if finite == top_n:
        return records
    if finite == 0:
        raise InputError("no image gave a finite activation for some unit (all images skipped, or the model "
                         "produces NaN); check the data and the model")
    warnings.warn(f"only {finite} images gave finite activations for every unit; the top lists are cut "
                  f"from {top_n} to {finite} entries", UserWarning, stacklevel=4)
    return {name: ({k: v[:, :finite] for k, v in arrays.items()}, shape) for name, (arrays, shape) in records.items()}


# ---------------------------------------------------------------------------------------------
# The crop pass
# ---------------------------------------------------------------------------------------------
@dataclass
class _Crops:
    """The consumers of the crop pass and how each layer's transformed activations were computed."""

    features: dict[str, NeuronFeatureAccumulator]
    transformed: dict[str, TransformedActivations]
    whole_image: WholeImageTransforms | None
    local: dict[str, bool]
    cones: dict[str, ChainCone | None]
    n_images: int


def _crop_pass(plan: _Plan, layers: dict[str, LayerIndex]) -> _Crops:
    """One pass over the referenced images feeds every crop consumer."""
    options = plan.options
    references = {name: LayerReferences.from_top_lists(name, L.receptive_field, L.top_indices, L.top_positions,
                                                       L.top_activations, top_weights(L.top_activations))
                  for name, L in layers.items()}
    features = {}
    if options.neuron_features is not None:
        features = {name: NeuronFeatureAccumulator(refs, plan.image_size, options.neuron_features,
                                                   options.n_thumbnails, options.thumbnail_size)
                    for name, refs in references.items()}
    crops = _Crops(features, {}, None, {}, {}, 0)
    transforms = {f"{spec.name}:{t}": fn for spec in _crop_specs(options)
                  for t, fn in spec.crop_transforms({"gray": options.gray}).items()}
    if transforms:
        _plan_transformed(plan, references, transforms, crops)
    consumers = [*crops.features.values(), *crops.transformed.values()]
    consumers += [crops.whole_image] if crops.whole_image is not None else []
    image_ids = referenced_images([L.top_indices for L in layers.values()])
    crops.n_images = int(len(image_ids))
    if consumers:
        run_pass("crops & indexes", plan.model, plan.data, {}, consumers, plan.passes, indices=image_ids,
                 checkpoint=plan.checkpoint, forward=False)
    return crops


def _crop_specs(options: IndexOptions):
    return [spec for spec in map(get_index, options.indexes) if spec.is_crop_index]


def _plan_transformed(plan: _Plan, references: dict[str, LayerReferences], transforms: dict, crops: _Crops) -> None:
    """Decide per layer how transformed activations are computed, and make their consumers."""
    auto = plan.options.shortcut == "auto"
    for name, module in plan.modules.items():
        cone = chain_cone(plan.model, module, plan.probe_input) if auto else None
        crops.local[name] = auto and _layer_is_local(plan, module, references[name], cone)
        crops.cones[name] = cone if crops.local[name] else None
    pixelwise = {k for k, fn in transforms.items() if getattr(fn, "pixelwise", False)}
    for name, module in plan.modules.items():
        per_crop = {k: fn for k, fn in transforms.items() if not (crops.local[name] and k in pixelwise)}
        if per_crop:
            crops.transformed[name] = TransformedActivations(
                plan.model, module, references[name], per_crop, plan.options.preprocess, plan.image_size,
                plan.options.device, shortcut=crops.local[name], batch_size=plan.options.batch_size,
                cone=crops.cones[name])
    whole = {n: m for n, m in plan.modules.items() if crops.local[n]}
    if pixelwise and whole:
        crops.whole_image = WholeImageTransforms(plan.model, whole, {n: references[n] for n in whole},
                                                 {k: transforms[k] for k in pixelwise}, plan.options.preprocess,
                                                 plan.options.device)


def _layer_is_local(plan: _Plan, module, refs: LayerReferences, cone: ChainCone | None) -> bool:
    """Whether a unit of this layer depends only on its receptive-field pixels (so shortcuts hold).

    Two checks: every module run up to the layer is local (:mod:`nsi_widgets.core.modules`), and on
    sample crops (border ones included) the shortcut (by ``cone`` forwards when given, else
    sub-images) equals the plain definition.
    """
    ran = modules_run_before(plan.model, module, plan.probe_input)
    foreign = sorted({type(m).__name__ for m in ran if not module_kinds.is_local(m)})
    if foreign:
        warnings.warn(f"layer {refs.name!r}: modules {foreign} run before it and may not be local; "
                      "its transformed activations use the plain definition (full-image forwards, slower)",
                      UserWarning, stacklevel=5)
        return False
    samples = check_samples(refs, plan.image_size)
    if len(samples) == 0:
        return True
    sample_images = np.unique(refs.image[samples])
    _, images, _ = next(iter(iterate_batches(plan.data, sample_images, len(sample_images))))
    probe = TransformedActivations(plan.model, module, refs, {}, plan.options.preprocess, plan.image_size,
                                   plan.options.device, shortcut=True, batch_size=plan.options.batch_size,
                                   cone=cone)
    generator = torch.Generator().manual_seed(1234)

    def noise(crops, inside):
        return torch.rand(crops.shape, generator=generator, dtype=crops.dtype)

    fast = probe.compute(sample_images, images, samples, noise, shortcut=True)
    generator.manual_seed(1234)
    plain = probe.compute(sample_images, images, samples, noise, shortcut=False)
    scale = max(1.0, float(np.abs(plain).max()))
    ok = bool(np.allclose(fast, plain, rtol=1e-3, atol=1e-4 * scale))
    if not ok:
        warnings.warn(f"layer {refs.name!r}: crop-sized forwards do not reproduce full-image activations "
                      f"(max difference {np.abs(fast - plain).max():.3g}); using the plain definition",
                      UserWarning, stacklevel=5)
    return ok


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------
def _assemble(plan: _Plan, layers: dict[str, LayerIndex], labels: LabelCollector, crops: _Crops,
              started: float) -> NeuronIndex:
    options = plan.options
    specs = [get_index(name) for name in options.indexes]
    meta = _meta(plan, crops, labels)
    for name, L in layers.items():
        if name in crops.features:
            weights = top_weights(L.top_activations).sum(axis=1)
            L.neuron_features, L.feature_coverage = crops.features[name].result(weights)
            L.top_crops = crops.features[name].thumbnails
        _crop_scores(L, specs, crops)
        _record_scores(L, specs, dict(meta, class_names=options.class_names, class_parents=options.class_parents))
        if any(s.name == "class" for s in specs):
            _add_class_extras(L, options.class_names, options.class_parents, options.nu)
    if any(s.name == "class" for s in specs) and (labels.result() < 0).all():
        warnings.warn("the dataset has no labels: class selectivity is NaN for every unit "
                      "(give items as (image, label) to compute it)", UserWarning, stacklevel=3)
    meta["seconds"] = round(time.perf_counter() - started, 3)
    class_names = list(options.class_names) if options.class_names is not None else None
    return NeuronIndex(layers, meta=meta, class_names=class_names, class_parents=options.class_parents,
                       data=plan.data)


def _meta(plan: _Plan, crops: _Crops, labels: LabelCollector) -> dict:
    options = plan.options
    return {"model_name": type(plan.model).__name__, "model_fingerprint": plan.fingerprint,
            "n_images": plan.n_images, "input_size": list(plan.image_size), "top_n": options.top_n,
            "gray": options.gray, "nu": options.nu, "neuron_features": options.neuron_features,
            "indexes": list(options.indexes), "n_referenced_images": crops.n_images,
            "skipped_images": int(labels.skipped.sum()),
            "shortcut": {n: bool(v) for n, v in crops.local.items()},
            "shortcut_kind": {n: ("cone" if crops.cones.get(n) is not None else "sub-image") if v else "plain"
                              for n, v in crops.local.items()},
            "world_size": distributed.world_size(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "nsi_widgets_version": __version__}


def _crop_scores(L: LayerIndex, specs, crops: _Crops) -> None:
    """Ratio indexes from the transformed activations of the crop indexes."""
    values: dict[str, np.ndarray] = {}
    if L.name in crops.transformed:
        values.update(crops.transformed[L.name].result())
    if crops.whole_image is not None and L.name in crops.whole_image.refs:
        values.update(crops.whole_image.result(L.name))
    for spec in specs:
        if not spec.is_crop_index:
            continue
        ratios = {}
        for key, table in values.items():
            index_name, transform = key.split(":", 1)
            if index_name == spec.name:
                ratios[transform] = ratio_index(L.top_activations, table)
                if spec.details:
                    L.details[f"{transform}_activations"] = table
        L.scores[spec.score] = np.asarray(spec.combine(ratios), dtype=np.float32)


def _record_scores(L: LayerIndex, specs, meta: dict) -> None:
    """Indexes computed from the top-N records alone (the class index, user functions)."""
    for spec in specs:
        if spec.is_crop_index:
            continue
        result = spec.function(L, meta)
        if isinstance(result, dict):
            for key, value in result.items():
                L.scores[key] = np.asarray(value, dtype=np.float32)
        else:
            L.scores[spec.score] = np.asarray(result, dtype=np.float32)


def _add_class_extras(L: LayerIndex, class_names, class_parents, nu: float) -> None:
    """Population code and, with a hierarchy, the class index over superclasses (at the same ``nu``)."""
    L.scores["class_population"] = population_code(L.top_labels, L.top_activations).astype(np.float32)
    L.scores["class_population"][L.dead] = np.nan
    if class_names and class_parents:
        parents = sorted({class_parents.get(c, c) for c in class_names})
        mapping = np.array([parents.index(class_parents.get(c, c)) for c in class_names], dtype=np.int64)
        L.scores["superclass_selectivity"] = class_selectivity(L.top_labels, L.top_activations,
                                                               nu=nu, parents=mapping)
