"""Linear CKA against the published formulas, its invariances, and the minibatch consumer on the engine."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import nsi_widgets as nsi
from nsi_widgets.concepts.cka import BiasedCKAWarning, MinibatchCKA
from nsi_widgets.core.data import DataCheck
from nsi_widgets.core.errors import InputError
from nsi_widgets.core.passes import PassOptions, run_pass
from _models import ListDataset, make_images


# ---------------------------------------------------------------------------------------------
# The published formulas, written out here
# ---------------------------------------------------------------------------------------------
def hsic_biased(K, L):
    """Gretton et al. 2005: tr(K H L H) / (n - 1)^2."""
    n = len(K)
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def hsic_unbiased(K, L):
    """Song et al. 2012: [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))."""
    n = len(K)
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ Kt @ Lt @ one) / (n * (n - 3))


def kornblith_debiased(K, L):
    """Kornblith et al.'s code form: unbiased centring of each Gram matrix, then the dot product."""
    def centre(G):
        G = G.copy()
        n = len(G)
        np.fill_diagonal(G, 0)
        means = G.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        G -= means[:, None]
        G -= means[None, :]
        np.fill_diagonal(G, 0)
        return G
    k, l = centre(K), centre(L)
    return k.ravel() @ l.ravel() / np.sqrt((k.ravel() @ k.ravel()) * (l.ravel() @ l.ravel()))


def reference_cka(X, Y, debiased):
    K, L = X @ X.T, Y @ Y.T
    h = hsic_unbiased if debiased else hsic_biased
    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


def related(n, p, q, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    Y = X[:, : min(p, q)] @ rng.normal(size=(min(p, q), q)) + 2 * rng.normal(size=(n, q)) + 3.0
    return X, Y


# ---------------------------------------------------------------------------------------------
# nsi.cka on arrays
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, p, q", [(50, 10, 7), (20, 100, 80), (64, 300, 5)])  # feature and Gram routes
@pytest.mark.parametrize("debiased", [True, False])
def test_cka_equals_the_published_formulas(n, p, q, debiased):
    X, Y = related(n, p, q)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasedCKAWarning)
        value = nsi.cka(X, Y, debiased=debiased)
    assert value == pytest.approx(reference_cka(X, Y, debiased), rel=1e-10, abs=1e-12)
    if debiased:
        assert value == pytest.approx(kornblith_debiased(X @ X.T, Y @ Y.T), rel=1e-10)


def test_cka_takes_tensors_and_feature_maps():
    X, Y = related(30, 48, 12, seed=3)
    maps = torch.from_numpy(X).reshape(30, 3, 4, 4).float()
    assert nsi.cka(maps, Y) == pytest.approx(reference_cka(maps.double().reshape(30, -1).numpy(), Y, True), rel=1e-9)


@pytest.mark.parametrize("debiased", [True, False])
def test_cka_is_invariant_to_orthogonal_transforms_scaling_and_translation(debiased):
    X, Y = related(40, 12, 9, seed=1)
    rng = np.random.default_rng(2)
    Qx, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    Qy, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    base = nsi.cka(X, Y, debiased=debiased)
    for X2, Y2 in [(X @ Qx, Y), (X, Y @ Qy), (X @ Qx, Y @ Qy), (7.5 * X, Y), (X, 0.01 * Y), (X + 4.0, Y - 2.0)]:
        assert nsi.cka(X2, Y2, debiased=debiased) == pytest.approx(base, abs=1e-6)


@pytest.mark.parametrize("debiased", [True, False])
def test_cka_of_a_representation_with_itself_is_one(debiased):
    X, _ = related(25, 40, 3, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasedCKAWarning)
        assert nsi.cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


def test_debiased_cka_is_near_zero_on_independent_features_where_biased_is_near_one():
    """64 images, 1,000 independent Gaussian features each. One draw of the debiased estimate has a
    standard deviation of about 0.022 here, so "|CKA| < 0.02" is checked on the mean of 40 draws
    (its sd ~0.0035), with every draw within 0.1; the biased estimate of the same draws is ~0.97."""
    rng = np.random.default_rng(0)
    debiased, biased = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BiasedCKAWarning)
        for _ in range(40):
            X, Y = rng.normal(size=(64, 1000)), rng.normal(size=(64, 1000))
            debiased.append(nsi.cka(X, Y))
            biased.append(nsi.cka(X, Y, debiased=False))
    assert abs(np.mean(debiased)) < 0.02
    assert np.std(debiased) < 0.03 and np.max(np.abs(debiased)) < 0.1
    assert np.mean(biased) > 0.9


def test_biased_cka_warns_when_there_are_fewer_images_than_features():
    X, Y = related(20, 30, 5)
    with pytest.warns(BiasedCKAWarning, match="debiased=True"):
        nsi.cka(X, Y, debiased=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nsi.cka(X, Y)                                   # debiased: no warning
        nsi.cka(X[:, :4], Y[:, :4], debiased=False)     # more images than features: no warning


@pytest.mark.parametrize("X, Y, phrase", [
    (np.zeros((5, 3)), np.zeros((6, 3)), "same images"),
    (np.ones((3, 2)), np.ones((3, 2)), "at least 4 images"),
    (np.full((6, 2), np.nan), np.ones((6, 2)), "NaN"),
    (np.array([["a"]] * 6), np.ones((6, 1)), "numeric"),
    (np.ones(6), np.ones((6, 2)), "feature axis"),
])
def test_bad_arrays_are_clear_errors(X, Y, phrase):
    with pytest.raises(InputError, match=phrase):
        nsi.cka(X, Y)


def test_a_constant_representation_gives_nan():
    X, Y = related(10, 3, 3)
    assert np.isnan(nsi.cka(np.ones((10, 3)), Y))


# ---------------------------------------------------------------------------------------------
# The minibatch consumer on the engine
# ---------------------------------------------------------------------------------------------
class TwoViews(nn.Module):
    """Two fixed functions of the image: its pixels, and a nonlinear mix of them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pixels = nn.Identity()
        self.mix = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.Tanh())

    def forward(self, x):
        return self.mix(self.pixels(x))


def _activations(model, images, names, batch_size):
    """Every layer's flattened output, batch by batch as the pass runs them (written anew)."""
    out = {n: [] for n in names}
    hooks = [dict(model.named_modules())[n].register_forward_hook(
        lambda m, i, o, n=n: out[n].append(o.detach().double().flatten(1).numpy())) for n in names]
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model(torch.stack(images[start:start + batch_size]))
    for h in hooks:
        h.remove()
    return out


def _run(model, data, names, batch_size, features="flatten", debiased=True, indices=None):
    consumer = MinibatchCKA(names, features, debiased)
    run_pass("cka", model, data, dict((n, dict(model.named_modules())[n]) for n in names), [consumer],
             PassOptions(batch_size=batch_size, progress=False, check=DataCheck()), indices=indices)
    return consumer


@pytest.mark.parametrize("debiased", [True, False])
def test_minibatch_cka_is_the_mean_of_per_batch_hsic_by_the_formulas(debiased):
    """39 images in batches of 7: five full batches and one of 4 (biased: the same)."""
    model, images = TwoViews().eval(), make_images(39, 6, 5, seed=1)
    names = ["pixels", "mix"]
    consumer = _run(model, ListDataset(images), names, 7, debiased=debiased)
    acts = _activations(model, images, names, 7)
    h = hsic_unbiased if debiased else hsic_biased
    sums = np.zeros((2, 2))
    for b in range(len(acts["pixels"])):
        grams = [acts[n][b] @ acts[n][b].T for n in names]
        sums += np.array([[h(grams[i], grams[j]) for j in range(2)] for i in range(2)])
    expected = sums[0, 1] / np.sqrt(sums[0, 0] * sums[1, 1])
    assert consumer.matrix()[0, 1] == pytest.approx(expected, rel=1e-10)
    assert consumer.matrix()[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert consumer.counts.tolist() == [6, 39, 0]


def test_batches_too_small_for_the_unbiased_estimator_are_left_out_and_counted():
    model, images = TwoViews().eval(), make_images(23, 6, 5, seed=2)
    consumer = _run(model, ListDataset(images), ["pixels", "mix"], 10)    # 10, 10, 3
    assert consumer.counts.tolist() == [2, 20, 3]


def test_one_batch_equals_the_full_estimate_and_small_batches_stay_close():
    """Where the whole set is one batch the minibatch estimate is the full one (1e-10). In batches of
    128 of 1,024 images it differs by sampling noise only: within 0.02 here (measured: 0.0012-0.0017 at 128, up to 0.004 at 32)."""
    model = TwoViews().eval()
    images = make_images(1024, 6, 5, seed=3)
    data = ListDataset(images)
    acts = _activations(model, images, ["pixels", "mix"], 1024)
    full = nsi.cka(acts["pixels"][0], acts["mix"][0])
    assert 0.2 < full < 0.95
    assert _run(model, data, ["pixels", "mix"], 1024).matrix()[0, 1] == pytest.approx(full, rel=1e-10)
    assert abs(_run(model, data, ["pixels", "mix"], 128).matrix()[0, 1] - full) < 0.02


def test_pooled_features_are_channel_means():
    """Channel means are taken in float32 (relative error ~1e-7, documented in activations.py): 1e-6."""
    model, images = TwoViews().eval(), make_images(30, 6, 5, seed=4)
    consumer = _run(model, ListDataset(images), ["pixels", "mix"], 30, features="pooled")
    acts = _activations(model, images, ["pixels", "mix"], 30)
    pooled = [acts[n][0].reshape(30, c, -1).mean(axis=2) for n, c in (("pixels", 3), ("mix", 5))]
    assert consumer.matrix()[0, 1] == pytest.approx(nsi.cka(*pooled), rel=1e-6)


def test_merged_shards_equal_one_pass_within_float_tolerance():
    """Two shards' states merged (what several processes and a resumed run do) agree with one pass
    over all batches to 1e-12 relative (float64 sums in another order), and the state round-trips."""
    model, images = TwoViews().eval(), make_images(48, 6, 5, seed=5)
    data, names = ListDataset(images), ["pixels", "mix"]
    whole = _run(model, data, names, 8)
    first, second = _run(model, data, names, 8, indices=range(0, 24)), _run(model, data, names, 8, indices=range(24, 48))
    first.merge_state(second.state())
    np.testing.assert_allclose(first.sums, whole.sums, rtol=1e-12)
    assert first.counts.tolist() == whole.counts.tolist()
    copy = MinibatchCKA(names, "flatten")
    copy.load_state(whole.state())
    np.testing.assert_array_equal(copy.matrix(), whole.matrix())
