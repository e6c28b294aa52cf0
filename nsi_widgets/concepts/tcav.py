"""TCAV (Kim et al. 2018) on the streaming engine (docs/methods.md section 8).

A *CAV* of a concept at a layer: a linear classifier of the layer's features of concept images
against random images (balanced, a stratified 33 % held out; :mod:`.classifier`), and the unit
normal of its boundary, pointing to the concept. Features (:func:`~.activations.features_of`):
``"pooled"`` (default: the channel means, so the CAV is a weight per unit, i.e. the direction
``v`` repeated at every position) or ``"flatten"`` (tcav's: every value of the map).

*TCAV score* of a class: the share of the class's images whose directional derivative of the class
logit along the CAV is positive, ``grad_A logit_c . v > 0`` (for pooled features ``sum_k v_k
sum_yx d logit_c / d A_k(y, x)``). Where the head is global average pooling + a linear layer, the
last conv layer's gradient is the same for every image, so each run scores 0 or 1: test layers
before it.

*Significance* (:func:`tcav`): ``n_runs`` concept runs, each with a fresh draw of concept images (all
of them when there are at most ``n_images``) and of as many random images, against ``n_random_runs``
random-versus-random runs, each with two fresh disjoint random draws; a two-sided t-test of the two
sets of scores per class (:mod:`.stats`). tcav's own protocol uses one fixed random set as the
null's "concept"; its runs then share their positives and their scores vary too little, which marks
random concepts significant far too often (9 of 30 in the issue's measurement). Here the null runs
are independent, and a concept is significant only when its classifiers also reach
``accuracy_floor`` (default 0.7) on their held-out images: a concept the layer cannot separate
from random images (random concepts sit near 0.5) has no direction worth testing.

Passes: the concept's images by their masks (no forward), the features of the drawn images (one
forward, collected with :class:`~.activations.ActivationCollector`), and the gradients of the
target images (a forward and backward per batch, run by :class:`LogitGradients` with autograd on).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core.data import DataCheck
from ..core.errors import InputError
from ..core.layers import resolve_layers
from ..core.passes import Batch, Consumer, run_pass
from .activations import ActivationCollector, check_budget, check_features, feature_size, features_of
from .classifier import accuracy, fit_linear, stratified_split
from .data import describe
from .plan import (RunOptions, check_int, check_number, checkpoint_for, data_check, eval_mode, model_device,
                   output_shapes)
from .stats import ttest_ind
from .tcav_results import TCAVResult
from .vector_results import ConceptVectors


@dataclass(frozen=True)
class CAVOptions:
    """How CAVs are fitted: features, the penalty, the held-out share, images per concept."""

    features: str = "pooled"
    alpha: float = 0.01
    cav_test_fraction: float = 0.33
    n_images: int = 100
    min_fraction: float = 0.0

    def check(self) -> None:
        check_features(self.features)
        check_number("alpha", self.alpha, 0, float("inf"), open_low=True)
        check_int("n_images", self.n_images, 3)
        check_number("min_fraction", self.min_fraction, 0, 1, open_high=True)

    def key(self) -> dict:
        return {"features": self.features, "alpha": float(self.alpha), "n_images": self.n_images,
                "min_fraction": float(self.min_fraction)}


@dataclass
class CAV:
    """One fitted CAV: unit ``vector`` (D,), ``bias`` (of the unit-length boundary), held-out ``accuracy``."""

    vector: np.ndarray
    bias: float
    accuracy: float


def fit_cav(positive: np.ndarray, negative: np.ndarray, options: CAVOptions, seed: int) -> CAV:
    """The CAV separating ``positive`` (n, D) from ``negative`` (m, D) features (see the module)."""
    x = np.concatenate([positive, negative]).astype(np.float64)
    y = np.concatenate([np.ones(len(positive), bool), np.zeros(len(negative), bool)])
    train, test = stratified_split(y, options.cav_test_fraction, seed)
    w, b = fit_linear(x[train], y[train], options.alpha)
    norm = float(np.linalg.norm(w))
    if norm == 0:
        return CAV(np.zeros(x.shape[1]), 0.0, accuracy(x[test], y[test], w, b))
    return CAV(w / norm, b / norm, accuracy(x[test], y[test], w, b))


class MaskCounts(Consumer):
    """Per item of the pass, the pixels of every concept's mask (``(n, K)`` int64); no forward needed."""

    def __init__(self, n_items: int, n_concepts: int):
        self.counts = np.zeros((n_items, n_concepts), np.int64)
        self.pixels = 0

    def on_batch(self, batch: Batch) -> None:
        self.counts[batch.indices.numpy()] = batch.extra.sum(dim=(2, 3)).numpy()
        self.pixels = int(batch.extra.shape[2] * batch.extra.shape[3])

    def state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts.copy(), "pixels": np.array([self.pixels], np.int64)}

    def load_state(self, state) -> None:
        self.counts = np.array(state["counts"], dtype=np.int64)
        self.pixels = int(np.asarray(state["pixels"])[0])

    def merge_state(self, state) -> None:
        theirs = np.asarray(state["counts"], dtype=np.int64)
        rows = theirs.any(axis=1)
        self.counts[rows] = theirs[rows]
        self.pixels = max(self.pixels, int(np.asarray(state["pixels"])[0]))

    def present(self, min_fraction: float) -> np.ndarray:
        """``(n, K)`` bool: the concept covers more than ``min_fraction`` of the item (any pixel at 0)."""
        return self.counts > min_fraction * max(1, self.pixels)

    def result(self) -> np.ndarray:
        return self.counts


class LogitGradients(Consumer):
    """The gradient of each chosen image's target logit with respect to one layer's output.

    Runs its own forward and backward per batch (autograd on inside the engine's inference mode), so
    it asks the pass for no layer. Keeps ``(n, D)`` float32: the gradient summed over positions
    (``"pooled"``) or flattened.
    """

    def __init__(self, model: nn.Module, module: nn.Module, items: Sequence[int], targets: Sequence[int],
                 size: int, features: str, preprocess, device):
        self.model, self.module, self.features = model, module, features
        self.preprocess, self.device = preprocess, device
        self.rows = {int(i): r for r, i in enumerate(items)}
        self.targets = np.asarray(targets, np.int64)
        self.values = np.zeros((len(self.rows), size), np.float32)
        self.filled = np.zeros(len(self.rows), bool)

    def on_batch(self, batch: Batch) -> None:
        where = [(b, self.rows[i]) for b, i in enumerate(batch.indices.tolist()) if i in self.rows and
                 bool(batch.valid[b])]
        if not where:
            return
        images, rows = [b for b, _ in where], np.array([r for _, r in where])
        captured = {}

        def hook(module, inputs, output):   # the graph starts here: nothing before the layer is recorded
            captured["output"] = output.detach().requires_grad_(True)
            torch.set_grad_enabled(True)
            return captured["output"]

        with torch.inference_mode(False), torch.no_grad():
            x = batch.images[images].clone().to(self.device)
            if self.preprocess is not None:
                x = self.preprocess(x)
            handle = self.module.register_forward_hook(hook)
            try:
                logits = self.model(x)
            finally:
                handle.remove()
                torch.set_grad_enabled(False)
        with torch.inference_mode(False), torch.enable_grad():
            chosen = logits[torch.arange(len(rows)), torch.as_tensor(self.targets[rows], device=logits.device)]
            if "output" not in captured:
                raise InputError("the TCAV layer did not run in the model's forward pass (is it used by forward?)")
            grad, = torch.autograd.grad(chosen.sum(), captured["output"])
        summed = grad.flatten(1) if self.features == "flatten" or grad.ndim <= 2 else grad.flatten(2).sum(dim=2)
        self.values[rows] = summed.detach().float().cpu().numpy()
        self.filled[rows] = True

    def state(self) -> dict[str, np.ndarray]:
        return {"values": self.values.copy(), "filled": self.filled.copy()}

    def load_state(self, state) -> None:
        self.values = np.array(state["values"], dtype=np.float32)
        self.filled = np.array(state["filled"], dtype=bool)

    def merge_state(self, state) -> None:
        theirs = np.asarray(state["filled"], dtype=bool)
        self.values[theirs] = np.asarray(state["values"], dtype=np.float32)[theirs]
        self.filled |= theirs

    def result(self) -> np.ndarray:
        return self.values


def tcav(model: nn.Module, layer, concept, target_class=None, *, data, concept_data=None, random_data=None,
         n_runs: int = 10, n_random_runs: int | None = None, n_images: int = 100, max_target_images: int = 200,
         features: str = "pooled", alpha: float = 0.01, accuracy_floor: float = 0.7, significance: float = 0.05,
         equal_var: bool = True, min_fraction: float = 0.0, preprocess=None, batch_size: int = 64, device=None,
         progress: bool = True, checkpoint=None, num_workers: int = 0, seed: int = 0) -> TCAVResult:
    """Test whether a concept matters to classes at a layer: TCAV scores and their significance.

    See docs/methods.md section 8 and the module for the protocol.

    Parameters
    ----------
    model : torch.nn.Module
        Returns class logits ``(B, n_classes)``; run in eval mode (restored afterwards).
    layer : str or module
        Where the CAVs live. Not the last conv layer before a global-average-pool + linear head (its
        gradient is the same for every image; every run then scores 0 or 1).
    concept : str or dataset
        A concept name of ``concept_data`` (its images are those where the concept's mask covers more
        than ``min_fraction`` of the image) or a dataset of the concept's example images.
    target_class : int, str, list of them, or None
        Class id(s) or name(s) of ``data.classes``; None: every class present in ``data``.
    data : dataset of ``(image, label)``
        Where the target classes' images come from (at most ``max_target_images`` per class, a seeded
        choice).
    concept_data : concept dataset, optional
        Items ``(image, masks)`` (:mod:`.data`), needed when ``concept`` is a name.
    random_data : dataset, optional
        The pool of random images (default: ``concept_data`` if given, else ``data``).
    n_runs, n_random_runs : int
        Concept runs and random-versus-random runs (default as many as ``n_runs``; at least 2 each).
    n_images : int
        Images per side of each classifier (concept and random sets are balanced).
    features : {"pooled", "flatten"}
    alpha : float
        The classifier's L2 penalty (tcav's SGDClassifier alpha).
    accuracy_floor : float
        Minimum mean held-out accuracy of the concept's classifiers for any result to be significant.
    significance : float
        p-value threshold (two-sided).
    equal_var : bool
        Student's t-test (True, as tcav) or Welch's.
    preprocess, batch_size, device, progress, num_workers
        As for :func:`~nsi_widgets.index.pipeline.index_neurons`.
    checkpoint : path, optional
        Checkpoint of the passes (keyed by the model, the data, the concept and the settings).
    seed : int
        Seed of every draw (concept and random sets, target images, splits).

    Returns
    -------
    TCAVResult
        ``.score``, ``.p_value``, ``.significant``, ``.direction`` (numbers for one target class,
        arrays for several), ``.scores``, ``.random_scores``, ``.accuracies``, ``to_pandas()``, ``save``.
    """
    options = CAVOptions(features, alpha, 0.33, n_images, min_fraction)
    options.check()
    protocol = _Protocol(n_runs, n_runs if n_random_runs is None else n_random_runs, max_target_images,
                         accuracy_floor, significance, equal_var)
    protocol.check()
    run = RunOptions(preprocess, batch_size, device, progress, checkpoint, 50, num_workers, 0.25, seed)
    run.check()
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = resolve_layers(model, layer)
    if len(modules) != 1:
        raise InputError("tcav() takes one layer")
    classes, class_names = _target_classes(data, target_class)
    sources = _Sources(concept, concept_data, random_data, data)
    with eval_mode(model):
        gathered = _gather(model, modules, sources, data, classes, options, protocol, run,
                           model_device(model, device))
    result = _test(gathered, classes, options, protocol, seed)
    result.class_names = class_names
    result.single = not isinstance(target_class, (list, tuple)) and target_class is not None
    return result


@dataclass(frozen=True)
class _Protocol:
    """TCAV's runs and test (see :func:`tcav`)."""

    n_runs: int
    n_random_runs: int
    max_target_images: int
    accuracy_floor: float
    significance: float
    equal_var: bool

    def check(self) -> None:
        check_int("n_runs", self.n_runs, 2)
        check_int("n_random_runs", self.n_random_runs, 2)
        check_int("max_target_images", self.max_target_images)
        check_number("accuracy_floor", self.accuracy_floor, 0, 1)
        check_number("significance", self.significance, 0, 1)

    def key(self) -> dict:
        return {"n_runs": self.n_runs, "n_random_runs": self.n_random_runs,
                "max_target_images": self.max_target_images}


@dataclass
class _Gathered:
    """What the passes collected: the layer, the draws, their features, the target images' gradients."""

    layer: str
    concept: str
    draws: dict
    features: object              # lookup(side, items) -> (n, D)
    gradients: np.ndarray         # (n_targets, D)
    target_labels: np.ndarray
    n_positives: int


def _gather(model, modules, sources: "_Sources", data, classes, options: CAVOptions, protocol: _Protocol,
            run: RunOptions, device) -> _Gathered:
    """The passes: concept images by their masks, the drawn images' features, the targets' gradients."""
    name, module = next(iter(modules.items()))
    rng = np.random.default_rng(run.seed)
    key = {"layer": name, "concept": sources.concept_name, "classes": [int(c) for c in classes], **protocol.key(),
           **options.key()}
    ckpt = checkpoint_for(run, "tcav", [model], [name], data, None, key)
    positives = sources.positives(run, device, options, ckpt)
    draws = _draw_sets(positives, sources, protocol.n_runs, protocol.n_random_runs, options.n_images, rng)
    size = feature_size(output_shapes(model, modules, data, run.preprocess, device)[name], options.features)
    lookup = sources.collect(model, modules, draws, size, options, run, device, ckpt)
    targets, target_labels = _target_items(data, classes, protocol.max_target_images, rng)
    check_budget(len(targets), {name: size}, run.max_feature_bytes, "tcav's gradients")
    gradients = LogitGradients(model, module, targets, target_labels, size, options.features, run.preprocess, device)
    run_pass("tcav: gradients", model, data, {}, [gradients], run.passes(device, DataCheck()),
             indices=np.sort(targets), checkpoint=ckpt)
    return _Gathered(name, sources.concept_name, draws, lookup, gradients.values, target_labels, int(len(positives)))


def _test(g: _Gathered, classes, options: CAVOptions, protocol: _Protocol, seed: int) -> TCAVResult:
    """Fit every run's CAV, score every class, and test the concept's scores against the random runs'."""
    concept_runs = [fit_cav(g.features("concept", p), g.features("random", q), options, seed + r)
                    for r, (p, q) in enumerate(g.draws["concept"])]
    random_runs = [fit_cav(g.features("random", p), g.features("random", q), options, seed + 1000 + r)
                   for r, (p, q) in enumerate(g.draws["random"])]
    by_class = [np.flatnonzero(g.target_labels == c) for c in classes]
    scores = np.array([[_score(g.gradients[rows], cav) for cav in concept_runs] for rows in by_class])
    random_scores = np.array([[_score(g.gradients[rows], cav) for cav in random_runs] for rows in by_class])
    tests = [ttest_ind(s, r, equal_var=protocol.equal_var) for s, r in zip(scores, random_scores)]
    meta = {"n_images": options.n_images, "n_target_images": [int(len(r)) for r in by_class],
            "n_concept_images": g.n_positives, "equal_var": bool(protocol.equal_var), "seed": seed, **options.key()}
    return TCAVResult(g.layer, g.concept, np.asarray(classes, np.int64), scores, random_scores,
                      np.array([c.accuracy for c in concept_runs]), np.array([c.accuracy for c in random_runs]),
                      np.array([t for t, _ in tests]), np.array([p for _, p in tests]), float(protocol.significance),
                      float(protocol.accuracy_floor), meta=meta)


def _score(gradients: np.ndarray, cav: CAV) -> float:
    """Share of images whose directional derivative along the CAV is positive."""
    if not len(gradients):
        return float("nan")
    return float(np.mean(gradients.astype(np.float64) @ cav.vector > 0))


def _target_classes(data, target_class) -> tuple[list[int], list[str] | None]:
    names = list(getattr(data, "classes", None) or []) or None
    wanted = target_class if isinstance(target_class, (list, tuple)) else [target_class]
    if target_class is None:
        labels = _labels(data)
        return sorted(int(c) for c in np.unique(labels[labels >= 0])), names
    out = []
    for c in wanted:
        if isinstance(c, str):
            if names is None or c not in names:
                raise InputError(f"unknown class {c!r}; " + (f"classes: {', '.join(names[:20])}" if names else
                                                             "the data names no classes (data.classes): give ids"))
            out.append(names.index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 0:
            out.append(int(c))
        else:
            raise InputError(f"target_class must be class ids or names, got {c!r}")
    return out, [names[c] for c in out] if names and all(c < len(names) for c in out) else None


def _labels(data) -> np.ndarray:
    """Every item's label (from ``data.targets``/``labels`` when listed, else read item by item)."""
    from ..core.data import get_item, split_item

    listed = getattr(data, "targets", None)
    if listed is None:
        listed = getattr(data, "labels", None)
    if listed is not None and len(listed) == len(data):
        return np.asarray(listed, np.int64)
    return np.array([split_item(get_item(data, i), i)[1] for i in range(len(data))], np.int64)


def _target_items(data, classes, most: int, rng) -> tuple[np.ndarray, np.ndarray]:
    labels = _labels(data)
    items, targets = [], []
    for c in classes:
        where = np.flatnonzero(labels == c)
        if not len(where):
            raise InputError(f"class {c} has no images in data")
        chosen = np.sort(rng.choice(where, size=min(most, len(where)), replace=False))
        items.extend(chosen.tolist())
        targets.extend([c] * len(chosen))
    order = np.argsort(items, kind="stable")
    return np.asarray(items, np.int64)[order], np.asarray(targets, np.int64)[order]


def _draw_sets(positives: np.ndarray, sources: "_Sources", n_runs: int, n_random_runs: int, n_images: int,
               rng) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Concept runs (concept items, random items) and random runs (two disjoint random draws)."""
    pool = np.arange(len(sources.random_data))
    if len(positives) < 3:
        raise InputError(f"the concept {sources.concept_name!r} has {len(positives)} images; at least 3 are needed")
    n = min(n_images, len(positives))
    if len(pool) < 2 * n:
        raise InputError(f"the random pool has {len(pool)} images; {2 * n} are needed (two sets of {n})")
    concept_runs = []
    for _ in range(n_runs):
        chosen = np.sort(rng.choice(positives, size=n, replace=False)) if len(positives) > n else np.sort(positives)
        candidates = np.setdiff1d(pool, chosen) if sources.same_pool else pool
        concept_runs.append((chosen, np.sort(rng.choice(candidates, size=n, replace=False))))
    random_runs = []
    for _ in range(n_random_runs):
        both = rng.choice(pool, size=2 * n, replace=False)
        random_runs.append((np.sort(both[:n]), np.sort(both[n:])))
    return {"concept": concept_runs, "random": random_runs}


class _Sources:
    """Where the concept's images and the random images come from, and their feature collection."""

    def __init__(self, concept, concept_data, random_data, data):
        self.concept_data = concept_data
        if isinstance(concept, str):
            if concept_data is None:
                raise InputError(f"concept {concept!r} is a name: pass concept_data= (items (image, masks)) that "
                                 "names it, or pass a dataset of the concept's images as concept")
            self.concepts = describe(concept_data)
            if concept not in self.concepts.concepts:
                raise InputError(f"unknown concept {concept!r}; concept_data's concepts: "
                                 f"{', '.join(self.concepts.concepts[:30])}")
            self.concept_name, self.concept_items = concept, concept_data
        else:
            if not hasattr(concept, "__len__") or not hasattr(concept, "__getitem__"):
                raise InputError(f"concept must be a concept name or a dataset of images, got {type(concept).__name__}")
            self.concepts = None
            self.concept_name = str(getattr(concept, "name", None) or "concept")
            self.concept_items = concept
        self.concept_check = data_check(self.concept_items)
        self.random_data = random_data if random_data is not None else (concept_data if concept_data is not None
                                                                         else data)
        self.random_check = data_check(self.random_data)
        self.same_pool = self.random_data is self.concept_items

    def positives(self, run: RunOptions, device, options: CAVOptions, ckpt) -> np.ndarray:
        if self.concepts is None:
            return np.arange(len(self.concept_items))
        counts = MaskCounts(len(self.concept_items), len(self.concepts.concepts))
        run_pass("tcav: concept images", None, self.concept_items, {}, [counts], run.passes(device, self.concept_check),
                 checkpoint=ckpt, forward=False)
        k = self.concepts.concepts.index(self.concept_name)
        return np.flatnonzero(counts.present(options.min_fraction)[:, k])

    def collect(self, model, modules, draws, size: int, options: CAVOptions, run: RunOptions, device, ckpt):
        """Features of every drawn item; returns ``lookup(side, items) -> (n, D)``."""
        name = next(iter(modules))
        concept_items = np.unique(np.concatenate([p for p, _ in draws["concept"]]))
        random_items = np.unique(np.concatenate([q for _, q in draws["concept"]] +
                                                [a for pair in draws["random"] for a in pair]))
        wanted = {"concept": concept_items, "random": random_items}
        if self.same_pool:
            wanted = {"concept": np.union1d(concept_items, random_items)}
            wanted["random"] = wanted["concept"]
        collected = {}
        check_budget(len(np.union1d(wanted["concept"], wanted["random"])), {name: size}, run.max_feature_bytes,
                     "tcav's activations")
        for side, dataset, check in (("concept", self.concept_items, self.concept_check),
                                     ("random", self.random_data, self.random_check)):
            if side == "random" and self.same_pool:
                collected["random"] = collected["concept"]
                continue
            collector = ActivationCollector({name: size}, wanted[side], options.features)
            run_pass(f"tcav: {side} activations", model, dataset, modules, [collector],
                     run.passes(device, check), indices=wanted[side], checkpoint=ckpt)
            collected[side] = (collector.rows, collector.values[name])

        def lookup(side: str, items: np.ndarray) -> np.ndarray:
            rows, values = collected[side]
            return values[[rows[int(i)] for i in items]]

        return lookup


def fit_tcav_vectors(model: nn.Module, data, modules: dict[str, nn.Module], concepts, shapes: dict[str, tuple],
                     options: CAVOptions, fit_items: np.ndarray, run: RunOptions, device, checkpoint,
                     tag: str = "tcav") -> dict[str, ConceptVectors]:
    """One CAV per concept and layer from the concept data's fitting items (concept vs random images)."""
    check = DataCheck(split=concepts.split)
    sizes = {name: feature_size(shapes[name], options.features) for name in modules}
    check_budget(len(fit_items), sizes, run.max_feature_bytes, f"{tag}'s activations")
    counts = MaskCounts(len(data), len(concepts.concepts))
    collector = ActivationCollector(sizes, fit_items, options.features)
    run_pass(f"{tag}: activations", model, data, modules, [counts, collector], run.passes(device, check),
             indices=fit_items, checkpoint=checkpoint)
    present = counts.present(options.min_fraction)[fit_items]
    rows = np.flatnonzero(collector.filled)
    rng = np.random.default_rng(run.seed)
    draws = []
    for k in range(len(concepts.concepts)):
        positive = rows[present[rows, k]]
        n = min(options.n_images, len(positive), len(rows) // 2)
        if n < 3:
            draws.append(None)
            continue
        chosen = np.sort(rng.choice(positive, size=n, replace=False))
        draws.append((chosen, np.sort(rng.choice(np.setdiff1d(rows, chosen), size=n, replace=False))))
    results = {}
    for name in modules:
        values = collector.values[name]
        cavs = [fit_cav(values[d[0]], values[d[1]], options, run.seed + k) if d is not None else None
                for k, d in enumerate(draws)]
        size = sizes[name]
        vectors = np.stack([c.vector if c is not None else np.zeros(size) for c in cavs]).astype(np.float32)
        bias = np.array([c.bias if c is not None else 0.0 for c in cavs])
        acc = np.array([c.accuracy if c is not None else np.nan for c in cavs])
        n_positive = np.array([len(d[0]) if d is not None else 0 for d in draws], np.int64)
        results[name] = ConceptVectors(name, "tcav", list(concepts.concepts), list(concepts.categories), vectors,
                                       bias, acc, {"accuracy": acc, "n_positive": n_positive},
                                       {"n_fit": int(len(rows)), "n_units": int(shapes[name][0]), **options.key()})
    return results
