"""``layer_similarity``: every layer of model A against every layer of model B (docs/methods.md section 8).

Three measures, each computed on the same images for both models:

* ``"cka"``: debiased linear CKA (default; biased with ``debiased=False``) of the layers' features
  (:func:`~.activations.features_of`: channel means by default, or flattened maps), accumulated
  over minibatches (Nguyen et al. 2021, :class:`~.cka.MinibatchCKA`): one pass over ``data``
  running both models, memory independent of the number of images.
* ``"net2vec"``: Net2Vec probes fitted for every layer of each model (:mod:`.net2vec`; one pass
  per model collects all its layers) on the fitting images of the concept data; then, on the
  held-out images, per concept the set IoU of the two layers' maps ``p > 0.5`` (:class:`MapAgreement`);
  the matrix is the mean over the concepts whose probes reach ``quality_floor`` IoU (default 0.1)
  in both layers.
* ``"tcav"``: CAVs for every concept and layer (:mod:`.tcav`); on the held-out images, per concept
  the Pearson correlation of the two layers' concept scores (the images' features projected on the
  CAVs, :class:`ScoreCorrelation`); the matrix is the mean over concepts whose classifiers reach
  ``quality_floor`` held-out accuracy (default 0.7) in both layers.

Each is symmetric when model B is model A, 1 on the diagonal (a layer against itself), and does
not change when B is A with the channels of a hidden layer permuted (CKA is invariant to orthogonal
transforms; the probes and classifiers are fitted by permutation-equivariant optimisers from zero).
Float sums (CKA's HSIC, the correlations' co-moments) merged from several processes agree with one
process's to about 1e-12 relative, not bit for bit; the IoU tallies are integers and exact.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.data import DataCheck
from ..core.errors import InputError
from ..core.layers import resolve_layers
from ..core.passes import Batch, Consumer, run_pass
from .activations import ModelPair, check_features, feature_size, features_of
from .cka import BiasedCKAWarning, MinibatchCKA
from .data import describe
from .plan import RunOptions, checkpoint_for, data_check, eval_mode, model_device, output_shapes
from .similarity_results import MEASURES, LayerSimilarity
from .vectors import _method_options, fit_vectors

_DEFAULT_FLOOR = {"net2vec": 0.1, "tcav": 0.7}


@dataclass
class _Joint:
    """The pass over both models: the model it runs, its recorded modules, and each axis's names in it."""

    model: nn.Module
    modules: dict[str, nn.Module]
    rows: list[str]
    cols: list[str]
    preprocess: object
    same: bool
    sides: list[tuple[str, nn.Module, dict[str, nn.Module], object]]   # (tag, model, modules, preprocess)


def _joint(model_a, layers_a, model_b, layers_b, preprocess_a, preprocess_b) -> _Joint:
    if not isinstance(model_a, nn.Module):
        raise InputError(f"model_a must be a torch.nn.Module, got {type(model_a).__name__}")
    same = model_b is None or model_b is model_a
    names_a = list(resolve_layers(model_a, layers_a))
    if same:
        names_b = names_a if layers_b is None else list(resolve_layers(model_a, layers_b))
        union = list(dict.fromkeys(names_a + names_b))
        modules = resolve_layers(model_a, union)
        return _Joint(model_a, modules, names_a, names_b, preprocess_a, True, [("A", model_a, modules, preprocess_a)])
    if not isinstance(model_b, nn.Module):
        raise InputError(f"model_b must be a torch.nn.Module or None, got {type(model_b).__name__}")
    if layers_b is None:
        raise InputError("give layers_b, the layers of model_b to compare")
    modules_a, modules_b = resolve_layers(model_a, layers_a), resolve_layers(model_b, layers_b)
    pair = ModelPair(model_a, model_b, preprocess_a, preprocess_b)
    modules = {**{f"a.{n}": m for n, m in modules_a.items()}, **{f"b.{n}": m for n, m in modules_b.items()}}
    return _Joint(pair, modules, [f"a.{n}" for n in modules_a], [f"b.{n}" for n in modules_b], None, False,
                  [("A", model_a, modules_a, preprocess_a), ("B", model_b, modules_b, preprocess_b)])


def _joint_name(joint: _Joint, tag: str, name: str) -> str:
    return name if joint.same else f"{tag.lower()}.{name}"


def layer_similarity(model_a: nn.Module, data, layers_a, model_b: nn.Module | None = None, layers_b=None,
                     method: str = "cka", *, features: str = "pooled", debiased: bool = True, options=None,
                     quality_floor: float | None = None, preprocess=None, preprocess_b="same", batch_size: int = 64,
                     device=None, progress: bool = True, checkpoint=None, checkpoint_every: int = 50,
                     num_workers: int = 0, test_fraction: float = 0.25, seed: int = 0, max_feature_bytes: int = 512 * 2**20
                     ) -> LayerSimilarity:
    """Compare layers within a model or across two models (docs/methods.md section 8).

    Parameters
    ----------
    model_a : torch.nn.Module
    data : dataset
        Images (``(image, label)`` or ``image`` items) for ``"cka"``; concept data (items
        ``(image, masks)``, :mod:`.data`) for ``"net2vec"`` and ``"tcav"`` (and usable for ``"cka"``).
    layers_a : list of str or modules
        The rows of the matrix.
    model_b : torch.nn.Module, optional
        Default (or ``model_a`` itself): compare ``model_a``'s layers among themselves.
    layers_b : list, optional
        The columns (required with another ``model_b``; default ``layers_a`` for one model).
    method : {"cka", "net2vec", "tcav"}
    features : {"pooled", "flatten"}
        CKA's representation of a layer (channel means, or every value of the map).
    debiased : bool
        CKA's HSIC estimator: unbiased (default) or biased (warned about when a batch has fewer images
        than a layer has features).
    options : Net2VecOptions or CAVOptions, optional
        Settings of the concept vectors (see :func:`~.vectors.concept_vectors`).
    quality_floor : float, optional
        Concepts count in a pair's mean only where both layers' vectors reach it (Net2Vec IoU, default
        0.1; TCAV accuracy, default 0.7).
    preprocess, preprocess_b : callable, optional
        Each model's preprocess (``preprocess_b="same"``: the same as model A's).
    batch_size, device, progress, num_workers
        As for :func:`~nsi_widgets.index.pipeline.index_neurons`; for CKA, ``batch_size`` is the
        minibatch of the HSIC estimate.
    checkpoint : path, optional
        One checkpoint for all passes of the run; a rerun resumes (``checkpoint_every``: save every this
        many batches).
    test_fraction, seed
        The held-out share of the concept data, and the seed of the split and of the fits.

    Returns
    -------
    LayerSimilarity
        ``.matrix`` (len(layers_a), len(layers_b)), ``.layers_a``, ``.layers_b``, ``.per_concept``,
        ``.depth_a``/``.depth_b``, ``to_pandas()``, ``concept_agreement(a, b)``, ``best_matches()``.
    """
    if method not in MEASURES:
        raise InputError(f"method must be one of {MEASURES}, not {method!r}")
    check_features(features)
    if quality_floor is not None and (isinstance(quality_floor, bool) or not isinstance(quality_floor, (int, float))):
        raise InputError(f"quality_floor must be a number or None, got {quality_floor!r}")
    run = RunOptions(preprocess, batch_size, device, progress, checkpoint, checkpoint_every, num_workers,
                     test_fraction, seed, max_feature_bytes)
    run.check()
    preprocess_b = preprocess if isinstance(preprocess_b, str) and preprocess_b == "same" else preprocess_b
    if preprocess_b is not None and not callable(preprocess_b):
        raise InputError("preprocess_b must be a callable, None or 'same'")
    joint = _joint(model_a, layers_a, model_b, layers_b, preprocess, preprocess_b)
    device = model_device(model_a, device)
    with eval_mode(*[side[1] for side in joint.sides]):
        if method == "cka":
            return _cka(joint, data, features, debiased, run, device)
        return _concepts(joint, data, method, _method_options(method, options),
                         _DEFAULT_FLOOR[method] if quality_floor is None else float(quality_floor), run, device)


def _display(joint: _Joint, names: list[str]) -> list[str]:
    return names if joint.same else [n[2:] for n in names]


def _cka(joint: _Joint, data, features: str, debiased: bool, run: RunOptions, device) -> LayerSimilarity:
    check = data_check(data)
    names = list(joint.modules)
    if not debiased:
        sizes = {}
        for tag, model, modules, pre in joint.sides:
            shapes = output_shapes(model, modules, data, pre, device, check)
            sizes.update({_joint_name(joint, tag, n): feature_size(s, features) for n, s in shapes.items()})
        widest = max(sizes.values())
        if run.batch_size < widest:
            warnings.warn(f"biased CKA over minibatches of {run.batch_size} images with up to {widest} features is "
                          "biased towards 1 (near 1 even for independent features); use debiased=True",
                          BiasedCKAWarning, stacklevel=3)
    ckpt = checkpoint_for(run, "layer similarity (cka)", [side[1] for side in joint.sides], names, data, check,
                          {"features": features, "debiased": bool(debiased)})
    consumer = MinibatchCKA(names, features, debiased)
    run_pass("similarity: cka", joint.model, data, joint.modules, [consumer],
             run.passes(device, check, joint.preprocess), checkpoint=ckpt)
    full = consumer.matrix()
    full = (full + full.T) / 2
    rows, cols = [names.index(n) for n in joint.rows], [names.index(n) for n in joint.cols]
    return LayerSimilarity("cka", full[np.ix_(rows, cols)], _display(joint, joint.rows), _display(joint, joint.cols),
                           same_model=joint.same,
                           meta={"features": features, "debiased": bool(debiased), "batch_size": run.batch_size,
                                 "batches": int(consumer.counts[0]), "images": int(consumer.counts[1]),
                                 "images_left_out": int(consumer.counts[2])})


def _concepts(joint: _Joint, data, method: str, options, floor: float, run: RunOptions, device) -> LayerSimilarity:
    if getattr(data, "concepts", None) is None:
        raise InputError(f"method {method!r} compares concept vectors: data must be concept data (items "
                         "(image, masks) with .concepts), e.g. nsi.zoo.load_concepts('shapes')")
    concepts = describe(data)
    check = DataCheck(image_shape=(3, *concepts.image_size), split=concepts.split)
    names = list(joint.modules)
    ckpt = checkpoint_for(run, f"layer similarity ({method})", [side[1] for side in joint.sides], names, data, check,
                          {"concepts": list(concepts.concepts), **options.key()})
    vectors, fitted = {}, {}
    for tag, model, modules, pre in joint.sides:
        side_run = RunOptions(pre, run.batch_size, run.device, run.progress, run.checkpoint, run.checkpoint_every,
                              run.num_workers, run.test_fraction, run.seed, run.max_feature_bytes)
        results, extra = fit_vectors(model, data, modules, concepts, method, options, side_run, device, check, ckpt,
                                     tag=f"{method} {tag}")
        for name, cv in results.items():
            vectors[_joint_name(joint, tag, name)] = cv
        for name in modules:
            fitted[_joint_name(joint, tag, name)] = {"probe": extra.get("probes", {}).get(name),
                                                     "plan": extra.get("plans", {}).get(name)}
        test_items = extra["items"][1]
    pairs = sorted({(min(a, b), max(a, b)) for a in (names.index(r) for r in joint.rows)
                    for b in (names.index(c) for c in joint.cols)})
    if method == "net2vec":
        consumer = MapAgreement(names, {n: fitted[n]["probe"] for n in names}, {n: fitted[n]["plan"] for n in names},
                                pairs, len(concepts.concepts))
    else:
        consumer = ScoreCorrelation(names, {n: vectors[n].vectors for n in names}, options.features, pairs)
    run_pass(f"similarity: {method}", joint.model, data, joint.modules, [consumer],
             run.passes(device, check, joint.preprocess), indices=test_items, checkpoint=ckpt)
    full = consumer.per_concept()                                         # (L, L, K)
    rows, cols = [names.index(n) for n in joint.rows], [names.index(n) for n in joint.cols]
    per_concept = full[np.ix_(rows, cols)]
    quality_a = np.stack([vectors[n].quality for n in joint.rows])
    quality_b = np.stack([vectors[n].quality for n in joint.cols])
    result = LayerSimilarity(method, np.full(per_concept.shape[:2], np.nan), _display(joint, joint.rows),
                             _display(joint, joint.cols), per_concept, list(concepts.concepts),
                             list(concepts.categories), quality_a, quality_b, floor, joint.same,
                             {"n_test": int(len(test_items)), **options.key()})
    counted = result.passing() & ~np.isnan(per_concept)
    with np.errstate(invalid="ignore"):
        sums = np.where(counted, per_concept, 0.0).sum(axis=2)
        result.matrix = np.where(counted.any(axis=2), sums / np.maximum(1, counted.sum(axis=2)), np.nan)
    return result


class MapAgreement(Consumer):
    """Integer tallies of the agreement of Net2Vec maps between pairs of layers, per concept.

    For each pair ``(a, b)`` of ``pairs`` (indices into ``layers``): ``|P_a & P_b|`` (K,) over the
    pass's images, and per layer ``|P_l|`` (K,), where ``P_l`` are the layer's binarised concept maps
    (``p > 0.5``) at the mask resolution.
    """

    def __init__(self, layers: list[str], probes: dict, plans: dict, pairs: list[tuple[int, int]], n_concepts: int):
        self.layers = tuple(layers)
        self.probes, self.plans, self.pairs = probes, plans, list(pairs)
        self.both = np.zeros((len(self.pairs), n_concepts), np.int64)
        self.sizes = np.zeros((len(layers), n_concepts), np.int64)
        self._maps: dict[str, torch.Tensor] = {}

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        valid = batch.valid.to(output.device)
        self._maps[name] = self.probes[name].masks(output[valid], self.plans[name].upsampler)

    def on_batch(self, batch: Batch) -> None:
        maps, self._maps = self._maps, {}
        if not maps:
            return
        for i, name in enumerate(self.layers):
            self.sizes[i] += maps[name].sum(dim=(0, 2, 3)).numpy()
        for p, (a, b) in enumerate(self.pairs):
            self.both[p] += (maps[self.layers[a]] & maps[self.layers[b]]).sum(dim=(0, 2, 3)).numpy()

    def per_concept(self) -> np.ndarray:
        """``(L, L, K)`` IoU of the maps (NaN where neither layer marks any pixel; pairs not tallied NaN)."""
        out = np.full((len(self.layers), len(self.layers), self.both.shape[1]), np.nan)
        for p, (a, b) in enumerate(self.pairs):
            union = self.sizes[a] + self.sizes[b] - self.both[p]
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.where(union > 0, self.both[p] / np.where(union > 0, union, 1), np.nan)
            out[a, b] = out[b, a] = value
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {"both": self.both.copy(), "sizes": self.sizes.copy()}

    def load_state(self, state) -> None:
        self.both = np.array(state["both"], dtype=np.int64)
        self.sizes = np.array(state["sizes"], dtype=np.int64)

    def merge_state(self, state) -> None:
        self.both += np.asarray(state["both"], dtype=np.int64)
        self.sizes += np.asarray(state["sizes"], dtype=np.int64)

    def result(self) -> np.ndarray:
        return self.per_concept()


class ScoreCorrelation(Consumer):
    """Pearson correlation over the pass's images of concept scores between pairs of layers, per concept.

    A layer's score of concept ``k`` for an image is its features projected on the CAV,
    ``f(x) . v_k``. State: the count, the means ``(L, K)``, the second moments ``(L, K)`` and the
    co-moments of the pairs ``(P, K)``, merged by the pairwise update of Chan, Golub and LeVeque
    (exact in exact arithmetic, so associative; float64).
    """

    def __init__(self, layers: list[str], cavs: dict[str, np.ndarray], features: str, pairs: list[tuple[int, int]]):
        self.layers = tuple(layers)
        self.cavs = {n: torch.as_tensor(v, dtype=torch.float64) for n, v in cavs.items()}
        self.features, self.pairs = features, list(pairs)
        k = next(iter(cavs.values())).shape[0]
        self.count = np.zeros(1, np.int64)
        self.mean = np.zeros((len(layers), k))
        self.m2 = np.zeros((len(layers), k))
        self.co = np.zeros((len(self.pairs), k))
        self._scores: dict[str, torch.Tensor] = {}

    def on_layer(self, batch: Batch, name: str, output: torch.Tensor) -> None:
        f = features_of(output, self.features, torch.float64, batch.valid).cpu()
        self._scores[name] = f @ self.cavs[name].T                        # (B, K)

    def on_batch(self, batch: Batch) -> None:
        scores, self._scores = self._scores, {}
        if not scores or not len(next(iter(scores.values()))):
            return
        s = torch.stack([scores[n] for n in self.layers]).numpy()         # (L, B, K)
        mean = s.mean(axis=1)
        centred = s - mean[:, None, :]
        batch_state = {"count": np.array([s.shape[1]]), "mean": mean, "m2": (centred ** 2).sum(axis=1),
                       "co": np.stack([(centred[a] * centred[b]).sum(axis=0) for a, b in self.pairs])}
        self.merge_state(batch_state)

    def state(self) -> dict[str, np.ndarray]:
        return {"count": self.count.copy(), "mean": self.mean.copy(), "m2": self.m2.copy(), "co": self.co.copy()}

    def load_state(self, state) -> None:
        self.count = np.array(state["count"], dtype=np.int64)
        self.mean, self.m2, self.co = (np.array(state[k], dtype=np.float64) for k in ("mean", "m2", "co"))

    def merge_state(self, state) -> None:
        n1, n2 = int(self.count[0]), int(np.asarray(state["count"])[0])
        if n2 == 0:
            return
        total = n1 + n2
        delta = np.asarray(state["mean"]) - self.mean
        weight = n1 * n2 / total
        self.m2 = self.m2 + np.asarray(state["m2"]) + delta ** 2 * weight
        self.co = self.co + np.asarray(state["co"]) + np.stack([delta[a] * delta[b] for a, b in self.pairs]) * weight
        self.mean = self.mean + delta * (n2 / total)
        self.count = np.array([total], np.int64)

    def per_concept(self) -> np.ndarray:
        """``(L, L, K)`` Pearson correlations (NaN where a score is constant or the pair was not tallied)."""
        out = np.full((len(self.layers), len(self.layers), self.mean.shape[1]), np.nan)
        for p, (a, b) in enumerate(self.pairs):
            denominator = np.sqrt(self.m2[a] * self.m2[b])
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.where(denominator > 0, self.co[p] / np.where(denominator > 0, denominator, 1), np.nan)
            out[a, b] = out[b, a] = np.clip(value, -1.0, 1.0)
        return out

    def result(self) -> np.ndarray:
        return self.per_concept()

