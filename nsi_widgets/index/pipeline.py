"""``index_neurons``: scan a dataset, then crop, build Neuron Features and compute the indexes."""
from __future__ import annotations

import datetime as _dt
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..core.data import check_dataset, iterate_batches
from .features import (NF_MODES, LayerReferences, NeuronFeatureAccumulator, referenced_image_pass,
                       referenced_images)
from .cone import ChainCone, chain_cone
from ..core.layers import LayerRecorder, model_fingerprint, modules_run_before, resolve_layers
from .local_forward import TransformedActivations, check_samples
from ..core.receptive_field import receptive_field
from .results import LayerIndex, NeuronIndex
from .scan import scan_top_n
from .selectivity import (GRAY_METHODS, class_selectivity, get_index, population_code, ratio_index,
                          top_weights)

# Leaf modules whose output at a position depends only on a window of their input (in eval mode).
# Not InstanceNorm/GroupNorm/LayerNorm: they normalise with statistics over the whole map.
_LOCAL_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d,
    nn.BatchNorm2d, nn.LocalResponseNorm, nn.Identity, nn.Dropout, nn.Dropout2d,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.ZeroPad2d,
)


def index_neurons(model: nn.Module, data: Sequence, layers, *, top_n: int = 100,
                  preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None, batch_size: int = 64,
                  device: str | torch.device | None = None, progress: bool = True,
                  indexes: Sequence[str] = ("color", "class"), gray: str = "pca", nu: float = 1.0,
                  neuron_features: str | None = "weighted", n_thumbnails: int = 16, thumbnail_size: int = 48,
                  checkpoint: str | None = None, checkpoint_every: int = 50, num_workers: int = 0,
                  shortcut: str = "auto", class_names: Sequence[str] | None = None,
                  class_parents: dict[str, str] | None = None) -> NeuronIndex:
    """Index the neurons of ``layers`` of ``model`` over ``data`` (Rafegas et al. 2019).

    For every unit (channel) of each layer: the ``top_n`` images with the largest map maximum, where
    that maximum lies, the receptive-field crop there, the Neuron Feature (weighted mean of the crops)
    and the selectivity indexes.

    Parameters
    ----------
    model : torch.nn.Module
        Put in eval mode during the run (its mode is restored afterwards).
    data : Dataset or sequence
        Items ``(image, label)`` or ``image``; images RGB in ``[0, 1]`` (float ``3xHxW``), uint8 arrays
        or PIL images, all of one size. ``data.classes`` and ``data.class_parents`` are used if present.
    layers : str, module, or list of them
        Dotted names from ``model.named_modules()`` (see :func:`nsi_widgets.list_layers`) or modules.
        The recorded tensor is each module's output.
    top_n : int
        Images kept per unit (the paper: 100); capped at the dataset size.
    preprocess : callable, optional
        Maps a batch ``(B, 3, H, W)`` of RGB in ``[0, 1]`` to the model's input (e.g. normalisation).
        For the index shortcuts it must act per pixel (normalisation does).
    batch_size, num_workers : DataLoader settings.
    device : str or torch.device, optional
        Defaults to the device of the model's parameters.
    progress : bool
        Show ``tqdm`` progress bars.
    indexes : sequence of str
        Indexes to compute: built-ins ``"color"``, ``"class"``, ``"orientation"``, ``"symmetry"``,
        ``"shape"``, or any added with :func:`nsi_widgets.register_index`. ``()`` computes none.
    gray : {"pca", "luminance"}
        Grey version for the colour index (METHODS.md section 4).
    nu : float
        Threshold of the class index (default 1.0, as in the authors' group code).
    neuron_features : {"weighted", "mean", "border"} or None
        How to average the crops (METHODS.md section 3); None skips Neuron Features and thumbnails.
    n_thumbnails, thumbnail_size : int
        Top crops kept per unit as uint8 thumbnails (for the neuron card), and their longest side.
    checkpoint : path, optional
        Save the scan state every ``checkpoint_every`` batches; a rerun with the same path resumes.
    shortcut : {"auto", "never"}
        ``auto`` computes transformed activations from crop-sized forwards where the layer is shown
        to be local (checked against the plain definition on sample crops): forwards of each unit's
        receptive cone where a verified chain of local modules reaches the layer, else of a sub-image
        around the crop; ``meta["shortcut_kind"]`` records which. ``never`` always uses the plain
        definition (full-image forwards).
    class_names, class_parents : optional
        Override ``data.classes`` / ``data.class_parents`` (a child -> parent mapping of names).

    Returns
    -------
    NeuronIndex
    """
    started = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    n_images = check_dataset(data)
    modules = resolve_layers(model, layers)
    if not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise ValueError(f"top_n must be a positive integer, got {top_n!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if gray not in GRAY_METHODS:
        raise ValueError(f"gray must be one of {GRAY_METHODS}, not {gray!r}")
    if neuron_features is not None and neuron_features not in NF_MODES:
        raise ValueError(f"neuron_features must be one of {NF_MODES} or None, not {neuron_features!r}")
    if shortcut not in ("auto", "never"):
        raise ValueError(f"shortcut must be 'auto' or 'never', not {shortcut!r}")
    if isinstance(indexes, str):
        indexes = (indexes,)
    specs = [get_index(name) for name in indexes]
    if not 0 < nu <= 1:
        raise ValueError(f"nu must be in (0, 1], got {nu}")
    top_n = int(min(top_n, n_images))
    if device is None:
        first_param = next(iter(model.parameters()), None)
        device = first_param.device if first_param is not None else torch.device("cpu")
    device = torch.device(device)
    class_names = list(class_names) if class_names is not None else _attr_list(data, "classes")
    class_parents = dict(class_parents) if class_parents is not None else _attr_dict(data, "class_parents")

    was_training = model.training
    model.eval()
    try:
        # Probe with the first image: checks the data and the model before the long work starts.
        _, probe_images, _ = next(iter(iterate_batches(data, [0], 1)))
        image_size = tuple(probe_images.shape[-2:])
        probe_input = probe_images.to(device)
        if preprocess is not None:
            probe_input = preprocess(probe_input)
        with LayerRecorder(modules, lambda n, o: None) as recorder, torch.inference_mode():
            recorder.run(model, probe_input)
        fields = {name: receptive_field(model, name, input_size=image_size) for name in modules}
        fingerprint = model_fingerprint(model)

        bar = _progress(progress, n_images, "scan")
        states, labels, map_shapes = scan_top_n(
            model, data, modules, top_n, preprocess=preprocess, batch_size=batch_size, device=device,
            num_workers=num_workers, progress=bar, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
            checkpoint_key={"model": fingerprint}, n_images=n_images)
        if bar is not None:
            bar.close()

        layer_results: dict[str, LayerIndex] = {}
        references: dict[str, LayerReferences] = {}
        for name in modules:
            arrays = states[name].to_numpy()
            shape = map_shapes[name]
            width = shape[-1] if len(shape) >= 3 else 1
            flat = arrays["positions"]
            positions = np.stack([flat // width, flat % width], axis=-1).astype(np.int64)
            top_labels = np.where(arrays["indices"] >= 0, labels[np.clip(arrays["indices"], 0, None)], -1)
            layer_results[name] = LayerIndex(
                name=name, top_indices=arrays["indices"].astype(np.int64),
                top_activations=arrays["values"].astype(np.float32), top_positions=positions,
                receptive_field=fields[name], map_size=tuple(int(s) for s in shape[-2:]),
                top_labels=top_labels.astype(np.int64))
            references[name] = LayerReferences.from_top_lists(
                name, fields[name], layer_results[name].top_indices, positions,
                layer_results[name].top_activations, top_weights(layer_results[name].top_activations))

        # One pass over the referenced images feeds every crop consumer.
        consumers: list = []
        accumulators: dict[str, NeuronFeatureAccumulator] = {}
        if neuron_features is not None:
            for name, refs in references.items():
                accumulators[name] = NeuronFeatureAccumulator(refs, image_size, neuron_features, n_thumbnails,
                                                         thumbnail_size)
                consumers.append(accumulators[name])
        crop_specs = [s for s in specs if s.is_crop_index]
        options = {"gray": gray}
        transforms = {s.name: s.crop_transforms(options) for s in crop_specs}
        local_by_layer: dict[str, bool] = {}
        pixelwise: dict[str, Callable] = {}
        transformed: dict[str, TransformedActivations] = {}
        full_image, whole = None, {}
        cones: dict[str, ChainCone | None] = {}
        if crop_specs:
            for name, module in modules.items():
                cones[name] = chain_cone(model, module, probe_input) if shortcut == "auto" else None
                local_by_layer[name] = shortcut == "auto" and _layer_is_local(
                    model, module, references[name], data, preprocess, image_size, device, probe_input, batch_size,
                    cones[name])
                if not local_by_layer[name]:
                    cones[name] = None
            all_transforms = {f"{s}:{t}": fn for s, ts in transforms.items() for t, fn in ts.items()}
            pixelwise = {k: fn for k, fn in all_transforms.items() if getattr(fn, "pixelwise", False)}
            for name, module in modules.items():
                per_crop = {k: fn for k, fn in all_transforms.items()
                            if not (local_by_layer[name] and k in pixelwise)}
                if per_crop:
                    transformed[name] = TransformedActivations(
                        model, module, references[name], per_crop, preprocess, image_size, device,
                        shortcut=local_by_layer[name], batch_size=batch_size, cone=cones[name])
                    consumers.append(transformed[name])
            whole = {n: m for n, m in modules.items() if local_by_layer[n]}
            if pixelwise and whole:
                full_image = _WholeImageTransforms(model, whole, {n: references[n] for n in whole}, pixelwise,
                                                   preprocess, device)
                consumers.append(full_image)

        image_ids = referenced_images([L.top_indices for L in layer_results.values()])
        bar = _progress(progress and bool(consumers), len(image_ids), "crops & indexes")
        referenced_image_pass(data, image_ids, consumers, batch_size=batch_size, num_workers=num_workers,
                              progress=bar)
        if bar is not None:
            bar.close()

        meta = {"model_name": type(model).__name__, "model_fingerprint": fingerprint, "n_images": n_images,
                "input_size": list(image_size), "top_n": top_n, "gray": gray, "nu": nu,
                "neuron_features": neuron_features, "indexes": [s.name for s in specs],
                "n_referenced_images": int(len(image_ids)),
                "shortcut": {n: bool(v) for n, v in local_by_layer.items()},
                "shortcut_kind": {n: ("cone" if cones.get(n) is not None else "sub-image") if v else "plain"
                                  for n, v in local_by_layer.items()},
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "nsi_widgets_version": __version__}
        for name, L in layer_results.items():
            if name in accumulators:
                weights = top_weights(L.top_activations).sum(axis=1)
                L.neuron_features, L.feature_coverage = accumulators[name].result(weights)
                L.top_crops = accumulators[name].thumbnails
            values: dict[str, np.ndarray] = {}
            if name in transformed:
                values.update(transformed[name].result())
            if full_image is not None and name in whole:
                values.update(full_image.result(name))
            for spec in crop_specs:
                ratios = {}
                for t in transforms[spec.name]:
                    table = values[f"{spec.name}:{t}"]
                    ratios[t] = ratio_index(L.top_activations, table)
                    if spec.details:
                        L.details[f"{t}_activations"] = table
                L.scores[spec.score] = np.asarray(spec.combine(ratios), dtype=np.float32)
            for spec in specs:
                if not spec.is_crop_index:
                    result = spec.function(L, dict(meta, class_names=class_names, class_parents=class_parents))
                    if isinstance(result, dict):
                        for key, value in result.items():
                            L.scores[key] = np.asarray(value, dtype=np.float32)
                    else:
                        L.scores[spec.score] = np.asarray(result, dtype=np.float32)
            if any(s.name == "class" for s in specs):
                _add_class_extras(L, class_names, class_parents)
        if any(s.name == "class" for s in specs) and (labels < 0).all():
            warnings.warn("the dataset has no labels: class selectivity is NaN for every unit "
                          "(give items as (image, label) to compute it)", UserWarning, stacklevel=2)
        meta["seconds"] = round(time.perf_counter() - started, 3)
        return NeuronIndex(layer_results, meta=meta, class_names=class_names, class_parents=class_parents,
                           data=data)
    finally:
        model.train(was_training)


def _add_class_extras(L: LayerIndex, class_names, class_parents) -> None:
    """Population code and, with a hierarchy, the class index over superclasses."""
    L.scores["class_population"] = population_code(L.top_labels, L.top_activations).astype(np.float32)
    L.scores["class_population"][L.dead] = np.nan
    if class_names and class_parents:
        parents = sorted({class_parents.get(c, c) for c in class_names})
        mapping = np.array([parents.index(class_parents.get(c, c)) for c in class_names], dtype=np.int64)
        L.scores["superclass_selectivity"] = class_selectivity(L.top_labels, L.top_activations,
                                                               nu=1.0, parents=mapping)


class _WholeImageTransforms:
    """Pixel-wise transforms (luminance grey) applied to whole images: one forward per image and
    transform serves every reference of that image in every local layer."""

    def __init__(self, model, modules: dict[str, nn.Module], refs: dict[str, LayerReferences],
                 transforms: dict[str, Callable], preprocess, device):
        self.model, self.modules, self.refs = model, modules, refs
        self.transforms, self.preprocess, self.device = transforms, preprocess, device
        self.values = {(layer, key): np.full(len(r.unit), np.nan, dtype=np.float32)
                       for layer, r in refs.items() for key in transforms}

    def consume(self, batch_indices: np.ndarray, images: torch.Tensor) -> None:
        for key, transform in self.transforms.items():
            outputs: dict[str, torch.Tensor] = {}
            inputs = transform(images, None).to(self.device)
            if self.preprocess is not None:
                inputs = self.preprocess(inputs)
            with LayerRecorder(self.modules, lambda n, o: outputs.__setitem__(n, o.float().cpu())) as rec, \
                    torch.inference_mode():
                rec.run(self.model, inputs)
            for layer, refs in self.refs.items():
                sl = refs.in_batch(batch_indices)
                if sl.stop <= sl.start:
                    continue
                pos = torch.from_numpy(np.searchsorted(batch_indices, refs.image[sl]))
                out = outputs[layer]
                self.values[(layer, key)][sl] = out[pos, torch.from_numpy(refs.unit[sl]),
                                                    torch.from_numpy(refs.y[sl]), torch.from_numpy(refs.x[sl])].numpy()

    def result(self, layer: str) -> dict[str, np.ndarray]:
        refs = self.refs[layer]
        out = {}
        for key in self.transforms:
            table = np.full((refs.n_units, refs.top_n), np.nan, dtype=np.float32)
            table[refs.unit, refs.rank] = self.values[(layer, key)]
            out[key] = table
        return out


def _layer_is_local(model, module, refs: LayerReferences, data, preprocess, image_size, device,
                    probe_input, batch_size, cone: ChainCone | None = None) -> bool:
    """Whether a unit of this layer depends only on its receptive-field pixels (so shortcuts hold).

    Two checks: every module run up to the layer is of a known local kind, and on sample crops
    (border ones included) the shortcut (by ``cone`` forwards when given, else sub-images) equals
    the plain definition.
    """
    ran = modules_run_before(model, module, probe_input)
    foreign = sorted({type(m).__name__ for m in ran if not isinstance(m, _LOCAL_MODULES)})
    if foreign:
        warnings.warn(f"layer {refs.name!r}: modules {foreign} run before it and may not be local; "
                      "its transformed activations use the plain definition (full-image forwards, slower)",
                      UserWarning, stacklevel=3)
        return False
    samples = check_samples(refs, image_size)
    if len(samples) == 0:
        return True
    sample_images = np.unique(refs.image[samples])
    _, images, _ = next(iter(iterate_batches(data, sample_images, len(sample_images))))
    probe = TransformedActivations(model, module, refs, {}, preprocess, image_size, device, shortcut=True,
                                   batch_size=batch_size, cone=cone)
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
                      UserWarning, stacklevel=3)
    return ok


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=True)


def _attr_list(data: Any, name: str):
    value = getattr(data, name, None)
    return [str(v) for v in value] if value is not None else None


def _attr_dict(data: Any, name: str):
    value = getattr(data, name, None)
    return {str(k): str(v) for k, v in dict(value).items()} if value else None
