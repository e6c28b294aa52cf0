"""Concept vectors: Net2Vec against a planted channel and a brute force, TCAV against a model whose
answer is known, the t-test against scipy and a written-out fallback, the classifier by its optimality
conditions, and the results' files and attachments."""
import math
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import nsi_widgets as nsi
from nsi_widgets.concepts import (CAVOptions, ConceptVectors, ConceptVectorSet, Net2VecOptions, load_concept_vectors,
                                  load_tcav)
from nsi_widgets.concepts import stats
from nsi_widgets.concepts.classifier import fit_linear, stratified_split
from nsi_widgets.concepts.net2vec import PixelSampler, pixel_positions
from nsi_widgets.concepts.plan import RunOptions, plan_layers
from nsi_widgets.core.data import DataCheck
from nsi_widgets.core.errors import InputError
from nsi_widgets.core.passes import PassOptions, run_pass
from _concept_data import Labelled, Squares
from _models import ListDataset, make_cnn, make_images
from test_dissection import Concepts, _upsample

pytestmark = [pytest.mark.filterwarnings("ignore:receptive field of layer"),
              pytest.mark.filterwarnings("ignore:the dataset has no labels")]
scipy_stats = pytest.importorskip("scipy.stats", reason="the t-test is compared with scipy's")


def held_out(n, fraction=0.25, seed=0):
    """The documented split: a seeded permutation, its first round(fraction * n) items held out."""
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(fraction * n))
    return np.sort(order[k:]), np.sort(order[:k])


# ---------------------------------------------------------------------------------------------
# Net2Vec: a planted channel
# ---------------------------------------------------------------------------------------------
class Planted(nn.Module):
    """A layer of 8 channels: channel 3 is exactly the mask of concept "bright red" (red > 0.6); the
    others are ReLUs of a random convolution of the green and blue planes, which carry nothing about it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 7, 3, padding=1)
        with torch.no_grad():
            self.conv.weight[:, 0] = 0
        self.mix = nn.Identity()

    def forward(self, x):
        other = torch.relu(self.conv(x))
        return self.mix(torch.cat([other[:, :3], (x[:, :1] > 0.6).float(), other[:, 3:]], 1))


class Blobs(torch.utils.data.Dataset):
    """Smooth random images; concepts "bright red" (red > 0.6) and "dark green" (green < 0.3)."""

    concepts = ["bright red", "dark green"]

    def __init__(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        self.images = [nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(24, 24),
                                                 mode="bilinear", align_corners=False)[0] for _ in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        return image, torch.stack([image[0] > 0.6, image[1] < 0.3])


def test_net2vec_recovers_a_planted_channel():
    cv = nsi.concept_vectors(Planted().eval(), Blobs(200), "mix", progress=False)
    weights = np.abs(cv.vectors[0])
    assert weights[3] / weights.sum() >= 0.95
    assert cv.iou[0] >= 0.9
    assert cv.top_units("bright red", 1)[0][0] == 3
    assert cv.vectors.shape == (2, 8) and cv.concepts == ["bright red", "dark green"]


# ---------------------------------------------------------------------------------------------
# Net2Vec against a brute force
# ---------------------------------------------------------------------------------------------
LAYERS = ["relu1", "relu2", "relu3"]


def _all_maps(model, data, layer):
    module = dict(model.named_modules())[layer]
    out = []
    handle = module.register_forward_hook(lambda m, i, o: out.append(o.detach().double().numpy()))
    with torch.no_grad():
        model(torch.stack([data[i][0] for i in range(len(data))]))
    handle.remove()
    return out[0]


@pytest.mark.parametrize("binarise", [False, True])
def test_net2vec_samples_thresholds_and_ious_equal_a_brute_force(binarise):
    """Thresholds = numpy's quantile over all positions of all images; the training samples = the
    full upsampled maps read at the sampled pixels; the held-out IoU of the probes and of every single
    unit = set IoU counted on every pixel of the held-out images' full upsampled maps."""
    model, data = make_cnn(0, dead_unit=False), Concepts(40, mask_scale=2)
    options = Net2VecOptions(binarise=binarise, epochs=3)
    cvs = nsi.concept_vectors(model, data, LAYERS, options=options, batch_size=7, progress=False)
    fit, test = held_out(len(data))
    masks = np.stack([data[i][1].numpy() for i in range(len(data))])           # (n, K, Hm, Wm)
    image_size, mask_size = tuple(data[0][0].shape[1:]), masks.shape[2:]
    for layer in LAYERS:
        cv, maps = cvs[layer], _all_maps(model, data, layer)
        thresholds = np.array([np.quantile(maps[:, c].ravel(), 1 - 0.005) for c in range(maps.shape[1])])
        np.testing.assert_allclose(cv.details["thresholds"], thresholds, rtol=1e-6)
        rf = nsi.receptive_field(model, layer, input_size=image_size)
        inputs = (maps > thresholds[None, :, None, None]).astype(np.float64) if binarise else maps
        up = _upsample(inputs, rf, image_size, mask_size)                         # (n, C, Hm, Wm)
        z = np.einsum("nchw,kc->nkhw", up, cv.vectors.astype(np.float64)) + cv.bias[None, :, None, None]
        predicted, truth = z[test] > 0, masks[test]
        both = (predicted & truth).sum(axis=(0, 2, 3))
        union = (predicted | truth).sum(axis=(0, 2, 3))
        np.testing.assert_allclose(cv.iou, np.where(union > 0, both / np.maximum(union, 1), 0), atol=1e-12)
        single = _upsample(maps, rf, image_size, mask_size)[test] > thresholds[None, :, None, None]
        unit_iou = np.array([[(single[:, c] & truth[:, k]).sum() / max(1, (single[:, c] | truth[:, k]).sum())
                              for k in range(truth.shape[1])] for c in range(maps.shape[1])])
        np.testing.assert_allclose(cv.details["best_unit_iou"], unit_iou.max(axis=0), atol=1e-12)
        np.testing.assert_array_equal(unit_iou[cv.details["best_unit"], range(truth.shape[1])], unit_iou.max(axis=0))
        fraction = masks[fit].mean(axis=(0, 2, 3))
        np.testing.assert_allclose(cv.details["alpha"], 1 - fraction, atol=1e-12)
    # the samples themselves
    concepts = nsi.concepts.describe(data)
    modules = {n: dict(model.named_modules())[n] for n in LAYERS}
    plans = plan_layers(model, modules, data, concepts, 0.005, RunOptions(progress=False), torch.device("cpu"))
    sampler = PixelSampler(plans, fit, 50, concepts)
    run_pass("samples", model, data, modules, [sampler], PassOptions(batch_size=7, progress=False,
                                                                        check=DataCheck(split=concepts.split)))
    for layer in LAYERS:
        maps = _all_maps(model, data, layer)
        up = _upsample(maps, nsi.receptive_field(model, layer, input_size=image_size), image_size, mask_size)
        for row, item in enumerate(fit):
            pixels = pixel_positions(item, mask_size[0] * mask_size[1], 50).numpy()
            expected = up[item].reshape(up.shape[1], -1)[:, pixels].T
            np.testing.assert_allclose(sampler.samples[layer][row], expected, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(sampler.labels[row], masks[item].reshape(masks.shape[1], -1)[:, pixels])


def test_net2vec_is_deterministic_and_resumes_from_a_checkpoint(tmp_path):
    """The same run twice is bit-for-bit equal; a run that crashed in its evaluation pass resumes to it."""
    model = make_cnn(0, dead_unit=False)
    kwargs = dict(options=Net2VecOptions(epochs=3), batch_size=4, progress=False)
    first = nsi.concept_vectors(model, Concepts(30), "relu2", **kwargs)
    second = nsi.concept_vectors(model, Concepts(30), "relu2", **kwargs)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    test_items = held_out(30)[1]
    crashing = Concepts(30, fail_at=int(test_items[-1]))       # fails on its second read (evaluation)
    path = tmp_path / "n2v.ckpt"
    with pytest.raises(Exception, match="simulated crash"):
        nsi.concept_vectors(model, crashing, "relu2", checkpoint=path, checkpoint_every=1, **kwargs)
    resumed = nsi.concept_vectors(model, Concepts(30), "relu2", checkpoint=path, checkpoint_every=1, **kwargs)
    np.testing.assert_array_equal(resumed.vectors, first.vectors)
    np.testing.assert_array_equal(resumed.iou, first.iou)
    np.testing.assert_array_equal(resumed.details["best_unit_iou"], first.details["best_unit_iou"])


def test_net2vec_samples_fewer_pixels_when_its_memory_would_not_fit():
    cv = nsi.concept_vectors(make_cnn(0), Concepts(20), "relu1", options=Net2VecOptions(epochs=1),
                             max_feature_bytes=15 * 20 * 32, progress=False)
    assert cv.meta["pixels_per_image"] < 256
    with pytest.raises(InputError, match="max_feature_bytes"):
        nsi.concept_vectors(make_cnn(0), Concepts(20), "relu1", max_feature_bytes=100, progress=False)


# ---------------------------------------------------------------------------------------------
# TCAV
# ---------------------------------------------------------------------------------------------
class ColourLogits(nn.Module):
    """Layer "feat": the image's planes and 9 ReLUs of a random 1x1 convolution of them. Class c's logit:
    4 * the mean over positions of relu(x_c - mean of the other two planes - 0.2) (c's colour raises
    it, the others' lower it), plus a random convolutional head on "feat" whose gradient varies from
    image to image, so that random directions score anywhere between 0 and 1."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lift = nn.Conv2d(3, 9, 1)
        self.feat = nn.Identity()
        self.head = nn.Sequential(nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x):
        f = self.feat(torch.cat([x, torch.relu(self.lift(x))], 1))
        rgb = f[:, :3]
        others = (rgb.sum(dim=1, keepdim=True) - rgb) / 2
        return 4 * torch.relu(rgb - others - 0.2).mean(dim=(2, 3)) + self.head(f)


def test_tcav_finds_the_concept_that_drives_a_class_and_not_a_random_one():
    """Measured: red's score 1.0 for the red class (p 0.004), 0 for green and blue (significant there in
    the negative direction or not at all); the random concept's classifiers reach 0.51 (p 0.15-0.64)."""
    data = Squares(300, seed=2)
    labelled = Labelled(data)
    model = ColourLogits().eval()
    kwargs = dict(data=labelled, n_runs=8, n_images=40, max_target_images=40, progress=False)
    red = nsi.tcav(model, "feat", "red", target_class=[0, 1, 2], concept_data=data, **kwargs)
    assert red.significant[0] and red.score[0] >= 0.8 and red.p_value[0] < 0.05 and red.direction[0] == 1
    assert not (red.significant[1:] & (red.direction[1:] > 0)).any()   # red lowers green and blue: never positive
    assert red.learnable and np.mean(red.accuracies) >= 0.8
    one = nsi.tcav(model, "feat", "red", target_class="red", concept_data=data, **kwargs)
    assert isinstance(one.score, float) and isinstance(one.significant, bool) and one.score == red.score[0]
    random_images = [data[int(i)][0] for i in np.random.default_rng(9).choice(len(data), 40, replace=False)]
    noise = nsi.tcav(model, "feat", ListDataset(random_images), random_data=data, **kwargs)
    assert np.mean(noise.accuracies) < 0.7 and not noise.significant.any()


def test_tcav_scores_are_shares_of_positive_directional_derivatives():
    """Each run's score equals the share of the class's images whose gradient (by autograd, here) has
    a positive dot product with the run's CAV, recomputed from the saved CAV-free quantities."""
    data = Squares(120, seed=3)
    model = ColourLogits().eval()
    result = nsi.tcav(model, "feat", "green", target_class=1, data=Labelled(data), concept_data=data, n_runs=3,
                      n_images=20, max_target_images=15, progress=False)
    assert result.scores.shape == (1, 3) and result.random_scores.shape == (1, 3)
    assert set(np.unique(result.scores * 15).round(6)) <= set(np.arange(16.0))   # shares of 15 images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # scipy on nearly equal samples
        t, p = scipy_stats.ttest_ind(result.scores[0], result.random_scores[0])
    if np.isfinite(t):
        assert result.p_value == pytest.approx(p, rel=1e-9)


def pixels_model():
    """Layer "feat" is the image itself."""
    return nn.Sequential(OrderedDict(feat=nn.Identity(), pool=nn.AdaptiveAvgPool2d(1))).eval()


def test_tcav_concept_vectors_point_to_the_concept_channel():
    data = Squares(200, seed=4)
    cv = nsi.concept_vectors(pixels_model(), data, "feat", method="tcav", progress=False)
    assert cv.vectors.shape == (4, 3)
    for k in range(3):                   # red, green, blue: the CAV's largest weight is on its own plane
        assert int(np.argmax(cv.vectors[k])) == k and cv.accuracy[k] >= 0.9
    assert cv.accuracy[3] < 0.7          # "background" is in every image: indistinguishable from random
    np.testing.assert_allclose(np.linalg.norm(cv.vectors[:3], axis=1), 1.0, rtol=1e-6)


def test_tcav_with_flattened_features_keeps_a_weight_per_unit():
    data = Squares(120, seed=5)
    cv = nsi.concept_vectors(pixels_model(), data, "feat", method="tcav",
                             options=CAVOptions(features="flatten", n_images=30), progress=False)
    assert cv.vectors.shape == (4, 3 * 16 * 16) and cv.unit_weights.shape == (4, 3)
    np.testing.assert_allclose(cv.unit_weights, cv.vectors.reshape(4, 3, -1).sum(axis=2), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The t-test and the classifier
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("equal_var", [True, False])
def test_the_t_test_equals_scipy(equal_var):
    rng = np.random.default_rng(0)
    for n1, n2, shift in [(10, 10, 0.0), (10, 30, 0.4), (5, 8, 2.0)]:
        a, b = rng.normal(size=n1), rng.normal(shift, 1.5, size=n2)
        t, p = stats.ttest_ind(a, b, equal_var)
        ref = scipy_stats.ttest_ind(a, b, equal_var=equal_var)
        assert t == pytest.approx(ref.statistic, rel=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-10)


def test_the_fallback_incomplete_beta_equals_scipy(monkeypatch):
    from scipy import special

    for a, b, x in [(0.5, 0.5, 0.3), (9.0, 0.5, 0.999), (4.5, 0.5, 0.02), (29.0, 0.5, 0.6), (1.0, 3.0, 0.5)]:
        assert stats.betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-11, abs=1e-15)
    monkeypatch.setattr(stats, "_special", None)
    a, b = [0.1, 0.5, 0.3, 0.9, 0.7], [0.6, 0.8, 1.1, 0.9, 1.3, 0.7]
    assert stats.ttest_ind(a, b)[1] == pytest.approx(scipy_stats.ttest_ind(a, b).pvalue, rel=1e-10)


def test_the_t_test_of_constant_samples_is_decided_by_their_means():
    assert stats.ttest_ind([1, 1, 1], [0, 0, 0]) == (math.inf, 0.0)
    assert stats.ttest_ind([0.5, 0.5], [0.5, 0.5]) == (0.0, 1.0)
    with pytest.raises(ValueError):
        stats.ttest_ind([1.0], [1.0, 2.0])


def test_the_classifier_reaches_the_optimum_of_its_objective():
    """At the returned (w, b) the gradient of mean log-loss + alpha/2 |w|^2 vanishes (numpy, here)."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.5, 1, (40, 6)), rng.normal(-0.5, 1, (40, 6))])
    y = np.arange(80) < 40
    w, b = fit_linear(x, y, alpha=0.01)
    s = np.where(y, 1.0, -1.0)
    sigma = 1 / (1 + np.exp(s * (x @ w + b)))                  # sigmoid(-margin)
    assert np.abs(-(s * sigma) @ x / 80 + 0.01 * w).max() < 1e-7
    assert abs(-(s * sigma).mean()) < 1e-7
    order = rng.permutation(6)                                 # permuted features: permuted weights
    w2, b2 = fit_linear(x[:, order], y)
    np.testing.assert_allclose(w2, w[order], atol=1e-8)
    again = fit_linear(x, y)                                   # deterministic: the same bits again
    np.testing.assert_array_equal(again[0], w)
    assert again[1] == b


def test_with_more_features_than_samples_the_optimum_holds_in_the_full_space():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 50)), np.arange(30) < 12
    x[y, :5] += 1.0
    w, b = fit_linear(x, y, alpha=0.01)
    s = np.where(y, 1.0, -1.0)
    sigma = 1 / (1 + np.exp(s * (x @ w + b)))
    assert np.abs(-(s * sigma) @ x / 30 + 0.01 * w).max() < 1e-7 and abs((s * sigma).mean()) < 1e-7


@pytest.mark.parametrize("optimizer, lr, decay", [("sgd", 0.5, 0.0), ("sgd", 0.5, 0.1), ("adamw", 0.1, 0.01)])
def test_the_written_out_optimiser_steps_equal_torchs(optimizer, lr, decay):
    from nsi_widgets.concepts.net2vec import _Optimiser

    rng = np.random.default_rng(3)
    ours = (torch.zeros(4, 3), torch.zeros(4))
    theirs = [torch.zeros(4, 3, requires_grad=True), torch.zeros(4, requires_grad=True)]
    groups = [{"params": [theirs[0]], "weight_decay": decay}, {"params": [theirs[1]], "weight_decay": 0.0}]
    reference = (torch.optim.SGD(groups, lr=lr, momentum=0.9) if optimizer == "sgd" else torch.optim.AdamW(groups, lr=lr))
    step = _Optimiser(Net2VecOptions(optimizer=optimizer, lr=lr, weight_decay=decay), ours)
    for _ in range(5):
        grads = (torch.from_numpy(rng.normal(size=(4, 3))).float(), torch.from_numpy(rng.normal(size=4)).float())
        step(grads)
        theirs[0].grad, theirs[1].grad = grads[0].clone(), grads[1].clone()
        reference.step()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_the_stratified_split_holds_out_a_third_of_each_class():
    y = np.array([True] * 30 + [False] * 12)
    train, test = stratified_split(y, 0.33, seed=0)
    assert y[test].sum() == 10 and (~y[test]).sum() == 4
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 42


# ---------------------------------------------------------------------------------------------
# Results: tables, files, attachments; arguments
# ---------------------------------------------------------------------------------------------
def test_concept_vectors_save_load_and_attach(tmp_path):
    model, data = make_cnn(0), Concepts(24)
    cvs = nsi.concept_vectors(model, data, ["relu1", "relu3"], options=Net2VecOptions(epochs=2), progress=False)
    assert isinstance(cvs, ConceptVectorSet) and cvs.layers == ["relu1", "relu3"] and cvs.quality().shape == (2, 4)
    table = cvs.to_pandas()
    assert len(table) == 8 and {"quality", "best_unit_iou", "beats_best_unit", "top_units"} <= set(table.columns)
    for item in (cvs, cvs["relu3"]):
        path = item.save(tmp_path / type(item).__name__)
        loaded = load_concept_vectors(path)
        assert type(loaded) is type(item)
    back = load_concept_vectors(tmp_path / "ConceptVectorSet.npz")
    np.testing.assert_array_equal(back["relu3"].vectors, cvs["relu3"].vectors)
    assert back["relu3"].details.keys() == cvs["relu3"].details.keys()
    idx = nsi.index_neurons(model, ListDataset(make_images(12)), ["relu1", "relu3"], top_n=3, progress=False)
    idx.attach("net2vec", cvs.to_attachment())
    frame = idx.to_pandas()
    assert {"net2vec.top_concept", "net2vec.top_weight"} <= set(frame.columns)
    weights = idx.attachments["net2vec"].arrays["relu3"]["weights"]
    assert weights.shape == (5, 4)                         # (units, concepts): a concept's best units by a sort
    idx.save(tmp_path / "idx.npz")
    again = ConceptVectorSet.from_attachment(nsi.load_index(tmp_path / "idx.npz").attachments["net2vec"])
    np.testing.assert_array_equal(again["relu1"].vectors, cvs["relu1"].vectors)
    assert again["relu1"].method == "net2vec" and again["relu1"].concepts == cvs["relu1"].concepts


def test_tcav_results_save_and_load(tmp_path):
    data = Squares(90, seed=6)
    result = nsi.tcav(ColourLogits().eval(), "feat", "blue", data=Labelled(data), concept_data=data, n_runs=2,
                      n_images=12, max_target_images=10, progress=False)
    loaded = load_tcav(result.save(tmp_path / "t"))
    np.testing.assert_array_equal(loaded.scores, result.scores)
    assert loaded.class_names == ["red", "green", "blue"] and list(loaded.to_pandas()["class_name"]) == loaded.class_names


@pytest.mark.parametrize("kwargs, phrase", [
    ({"method": "svm"}, "method must be one of"),
    ({"options": CAVOptions()}, "must be a Net2VecOptions"),
    ({"options": Net2VecOptions(epochs=0)}, "epochs must be an integer >= 1"),
    ({"options": Net2VecOptions(optimizer="lbfgs")}, "optimizer must be"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"layer": "nope"}, "unknown layer"),
])
def test_bad_concept_vector_arguments_are_clear_errors(kwargs, phrase):
    args = {"layer": "relu2", **kwargs}
    with pytest.raises(InputError, match=phrase):
        nsi.concept_vectors(make_cnn(0), Concepts(10), args.pop("layer"), progress=False, **args)


def test_bad_tcav_arguments_are_clear_errors():
    data = Squares(20)
    model = ColourLogits().eval()
    with pytest.raises(InputError, match="concept_data"):
        nsi.tcav(model, "feat", "red", data=Labelled(data), progress=False)
    with pytest.raises(InputError, match="unknown concept"):
        nsi.tcav(model, "feat", "purple", data=Labelled(data), concept_data=data, progress=False)
    with pytest.raises(InputError, match="unknown class"):
        nsi.tcav(model, "feat", "red", "mauve", data=Labelled(data), concept_data=data, progress=False)
    with pytest.raises(InputError, match="n_runs"):
        nsi.tcav(model, "feat", "red", data=Labelled(data), concept_data=data, n_runs=1, progress=False)
    with pytest.raises(InputError, match="must name its concepts in .concepts"):
        nsi.concept_vectors(model, Labelled(data), "feat", progress=False)
