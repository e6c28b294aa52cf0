"""``concept_vectors``: a vector over a layer's units for every concept, by Net2Vec or TCAV.

The concept data (items ``(image, masks)``, :mod:`.data`) is split once, by a seeded permutation,
into fitting images and held-out images (``test_fraction``, default 25 %): Net2Vec's probes are
fitted on the former and their IoU measured on the latter (:mod:`.net2vec`); TCAV's classifiers
(:mod:`.tcav`) use the fitting images only (with their own stratified 33 % held out for the
accuracy), so that the held-out images stay unseen for the comparison of layers (:mod:`.similarity`).
"""
from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..core.data import DataCheck
from ..core.errors import InputError
from ..core.layers import resolve_layers
from .data import ConceptSet, describe
from .net2vec import Net2VecOptions, fit_net2vec
from .plan import RunOptions, checkpoint_for, eval_mode, model_device, output_shapes, plan_layers, split_items
from .tcav import CAVOptions, fit_tcav_vectors
from .vector_results import METHODS, ConceptVectors, ConceptVectorSet

_MIN_PIXELS = 16


def concept_vectors(model: nn.Module, concept_data, layer, method: str = "net2vec", *, options=None,
                    test_fraction: float = 0.25, preprocess=None, batch_size: int = 64, device=None,
                    progress: bool = True, checkpoint=None, checkpoint_every: int = 50, num_workers: int = 0,
                    seed: int = 0, max_feature_bytes: int = 512 * 2**20):
    """Concept vectors of a layer (docs/methods.md section 8): per concept a weight per unit.

    Parameters
    ----------
    model : torch.nn.Module
        Run in eval mode (its mode is restored afterwards).
    concept_data : dataset of ``(image, masks)``
        ``.concepts`` names the masks (e.g. ``nsi.zoo.load_concepts("shapes")``; :mod:`.data`).
    layer : str, module, or a list of them
        One layer gives a :class:`ConceptVectors`, a list a :class:`ConceptVectorSet` (all layers
        from the same passes, one forward each).
    method : {"net2vec", "tcav"}
        Net2Vec's segmentation probes (``quality`` = held-out set IoU; ``details`` has the best
        single unit's IoU for comparison) or TCAV's CAVs (``quality`` = held-out accuracy).
    options : Net2VecOptions or CAVOptions, optional
        The method's settings (default ``Net2VecOptions()``: raw activations, 50 epochs of SGD with
        momentum at lr 1.0, 128 sampled pixels per image; ``CAVOptions()``: pooled features, alpha
        0.01, 100 concept images against 100 random ones). ``Net2VecOptions(binarise=True)`` probes the
        activations thresholded at Network Dissection's quantile.
    test_fraction : float
        Share of the concept data held out (seeded by ``seed``).
    preprocess, batch_size, device, progress, num_workers
        As for :func:`~nsi_widgets.index.pipeline.index_neurons`.
    checkpoint : path, optional
        Checkpoint of every pass (keyed by the model, the data, preprocess and the settings); a rerun
        resumes. ``checkpoint_every``: save every this many batches.
    max_feature_bytes : int
        Memory for the kept training samples or activations; Net2Vec samples fewer pixels per image
        to stay within it (at least 16), other cases are refused up front.

    Returns
    -------
    ConceptVectors or ConceptVectorSet
        ``.vectors`` (K, D), ``.concepts``, ``.quality``, ``.iou``/``.accuracy``, ``to_pandas()``,
        ``save(path)``, ``to_attachment()``.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, not {method!r}")
    options = _method_options(method, options)
    run = RunOptions(preprocess, batch_size, device, progress, checkpoint, checkpoint_every, num_workers,
                     test_fraction, seed, max_feature_bytes)
    run.check()
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    concepts = describe(concept_data)
    modules = resolve_layers(model, layer)
    device = model_device(model, device)
    with eval_mode(model):
        check = DataCheck(image_shape=(3, *concepts.image_size), split=concepts.split)
        ckpt = checkpoint_for(run, f"concept vectors ({method})", [model], list(modules), concept_data, check,
                              {"concepts": list(concepts.concepts), **options.key()})
        results, _ = fit_vectors(model, concept_data, modules, concepts, method, options, run, device, check, ckpt)
    if isinstance(layer, (str, nn.Module)):
        return next(iter(results.values()))
    return ConceptVectorSet(results, {"method": method, "model_name": type(model).__name__})


def _method_options(method: str, options):
    kind = Net2VecOptions if method == "net2vec" else CAVOptions
    options = kind() if options is None else options
    if not isinstance(options, kind):
        raise InputError(f"options of method {method!r} must be a {kind.__name__}, got {type(options).__name__}")
    options.check()
    return options


def fit_vectors(model: nn.Module, data, modules: dict[str, nn.Module], concepts: ConceptSet, method: str, options,
                run: RunOptions, device, check: DataCheck, ckpt, tag: str | None = None
                ) -> tuple[dict[str, ConceptVectors], dict]:
    """The vectors of every layer, and what comparing layers needs (Net2Vec: probes and plans)."""
    items = split_items(len(data), run.test_fraction, run.seed)
    tag = tag or method
    passes = run.passes(device, check)
    if method == "net2vec":
        plans = plan_layers(model, modules, data, concepts, options.quantile, run, device)
        options = _fit_pixels(options, len(items[0]), sum(p.n_units for p in plans.values()), len(concepts.concepts),
                              run.max_feature_bytes)
        probes, results = fit_net2vec(model, data, modules, concepts, plans, options, items, passes, ckpt, tag)
        return results, {"probes": probes, "plans": plans, "items": items}
    shapes = output_shapes(model, modules, data, run.preprocess, device, check)
    results = fit_tcav_vectors(model, data, modules, concepts, shapes, options, items[0], run, device, ckpt, tag)
    return results, {"items": items, "shapes": shapes}


def _fit_pixels(options: Net2VecOptions, n_fit: int, channels: int, n_concepts: int, budget: int) -> Net2VecOptions:
    """Fewer sampled pixels per image when the training samples would exceed ``budget`` bytes."""
    per_pixel = n_fit * (4 * channels + n_concepts)
    fitting = budget // max(1, per_pixel)
    if fitting >= options.pixels_per_image:
        return options
    if fitting < _MIN_PIXELS:
        raise InputError(f"Net2Vec's training samples would need {per_pixel * _MIN_PIXELS / 2**20:.0f} MiB even at "
                         f"{_MIN_PIXELS} pixels per image ({n_fit} images x {channels} channels), more than "
                         f"max_feature_bytes={budget}; use fewer layers or images, or raise max_feature_bytes")
    return replace(options, pixels_per_image=int(fitting))

