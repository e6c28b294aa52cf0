"""Selectivity indexes against the definitions of METHODS.md sections 4-6."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import nsi_widgets as nsi
from nsi_widgets.index.selectivity import gray_pca
from _models import make_images

LAYERS = ["relu1", "relu2", "pool", "relu3"]


# ------------------------------------------------------------------ independent references
def reference_gray(crop, inside, method):
    """crop (h, w, 3) float64, inside (h, w) bool -> grey crop (h, w, 3), zero outside the image."""
    out = np.zeros_like(crop)
    pixels = crop[inside]
    if method == "luminance":
        grey = pixels @ np.array([0.299, 0.587, 0.114])
    else:
        r, g, b = pixels.T
        opp = np.stack([(r + g + b - 1.5) / 1.5, r - g, (r + g - 2 * b) / 2], axis=1)
        centred = opp - opp.mean(axis=0)
        cov = centred.T @ centred / len(centred)
        vals, vecs = np.linalg.eigh(cov)
        proj = centred @ vecs[:, -1]
        if np.dot(proj, centred[:, 0]) < 0:
            proj = -proj
        spread = proj.max() - proj.min()
        grey = (proj - proj.min()) / spread if spread > 1e-12 else pixels @ np.array([0.299, 0.587, 0.114])
    out[inside] = grey[:, None]
    return out


def plain_gray_activation(model, layer, image, unit, y, x, rf, method, preprocess=None):
    """The definition: grey only the RF crop in the full image, full forward, read the stored location."""
    image = image.clone().double().numpy()          # (3, H, W)
    _, H, W = image.shape
    y0, x0 = y * rf.stride[0] - rf.padding[0], x * rf.stride[1] - rf.padding[1]
    h, w = rf.size
    crop = np.zeros((h, w, 3))
    inside = np.zeros((h, w), bool)
    for dy in range(h):
        for dx in range(w):
            if 0 <= y0 + dy < H and 0 <= x0 + dx < W:
                crop[dy, dx] = image[:, y0 + dy, x0 + dx]
                inside[dy, dx] = True
    grey = reference_gray(crop, inside, method)
    for dy in range(h):
        for dx in range(w):
            if inside[dy, dx]:
                image[:, y0 + dy, x0 + dx] = grey[dy, dx]
    module = dict(model.named_modules())[layer]
    captured = {}
    handle = module.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.no_grad():
        inp = torch.tensor(image, dtype=torch.float32)[None]
        model(preprocess(inp) if preprocess else inp)
    handle.remove()
    return float(captured["out"][0, unit, y, x])


# ------------------------------------------------------------------ colour index
@pytest.mark.parametrize("gray", ["pca", "luminance"])
def test_gray_activations_equal_plain_definition(tiny_model, tiny_data, gray):
    pre = lambda x: (x - 0.45) / 0.25
    idx = nsi.index_neurons(tiny_model, tiny_data, LAYERS, top_n=4, batch_size=8, progress=False,
                            indexes=("color",), gray=gray, preprocess=pre)
    assert all(idx.meta["shortcut"].values()), "the tiny CNN is local: the shortcut should be used"
    border = 0
    for layer in LAYERS:
        L = idx[layer]
        rf = L.receptive_field
        for unit in range(L.n_units):
            for j in range(L.top_n):
                y, x = L.top_positions[unit, j]
                want = plain_gray_activation(tiny_model, layer, tiny_data[int(L.top_indices[unit, j])][0],
                                             unit, y, x, rf, gray, pre)
                got = L.gray_activations[unit, j]
                assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), (layer, unit, j, got, want)
                border += int(y * rf.stride[0] - rf.padding[0] < 0 or x * rf.stride[1] - rf.padding[1] < 0)
        with np.errstate(invalid="ignore", divide="ignore"):   # dead units: 0 / 0
            want_alpha = 1 - L.gray_activations.sum(1).astype(np.float64) / L.top_activations.sum(1)
        want_alpha[L.dead] = np.nan
        np.testing.assert_allclose(L.color_selectivity, want_alpha, rtol=1e-5, atol=1e-6)
    assert border > 0, "crops at the image border must be part of the comparison"
    assert np.isnan(idx["relu2"].color_selectivity[0])      # dead unit


def test_shortcut_equals_never(tiny_model, tiny_data):
    kwargs = dict(top_n=5, batch_size=16, progress=False, indexes=("color", "symmetry", "shape"))
    fast = nsi.index_neurons(tiny_model, tiny_data, LAYERS, **kwargs)
    plain = nsi.index_neurons(tiny_model, tiny_data, LAYERS, shortcut="never", **kwargs)
    assert not any(plain.meta["shortcut"].values())
    for layer in LAYERS:
        for name in fast[layer].details:
            np.testing.assert_allclose(fast[layer].details[name], plain[layer].details[name], rtol=1e-4, atol=1e-5)


def red_images(n, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        im = rng.uniform(0, 0.3, size=(3, size, size))
        y, x = rng.integers(0, size - 4, size=2)
        im[0, y:y + 4, x:x + 4] = rng.uniform(0.6, 1.0)
        images.append(torch.tensor(im, dtype=torch.float32))
    return images


def planted(weights_rgb, kernel=3):
    conv = nn.Conv2d(3, 1, kernel, padding=kernel // 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights_rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, kernel, kernel))
        conv.bias.zero_()
    return nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU())).eval()


@pytest.mark.parametrize("gray", ["pca", "luminance"])
def test_planted_red_neuron_is_colour_selective(gray):
    model = planted([1.0, -1.0, -1.0])
    idx = nsi.index_neurons(model, red_images(30), ["relu"], top_n=10, progress=False, gray=gray, indexes=("color",))
    assert idx["relu"].color_selectivity[0] > 0.9


def test_planted_luminance_neuron_is_colour_blind():
    model = planted([0.299, 0.587, 0.114])
    idx = nsi.index_neurons(model, red_images(30), ["relu"], top_n=10, progress=False, gray="luminance",
                            indexes=("color",))
    assert abs(idx["relu"].color_selectivity[0]) < 1e-3


def test_gray_pca_properties():
    generator = torch.Generator().manual_seed(0)
    crops = torch.rand(5, 3, 6, 7, generator=generator)
    inside = torch.ones(5, 1, 6, 7, dtype=torch.bool)
    inside[0, :, :2] = False
    crops[0] = crops[0] * inside[0]
    grey = gray_pca(crops, inside)
    for i in range(5):
        ref = reference_gray(crops[i].permute(1, 2, 0).double().numpy(), inside[i, 0].numpy(), "pca")
        np.testing.assert_allclose(grey[i].permute(1, 2, 0).numpy(), ref, atol=1e-6)
    assert (grey[0][:, :2] == 0).all()
    flat = torch.full((1, 3, 4, 4), 0.25)
    flat[0, 0] = 0.5
    np.testing.assert_allclose(gray_pca(flat)[0, 0].numpy(), 0.299 * 0.5 + (0.587 + 0.114) * 0.25, rtol=1e-6)


# ------------------------------------------------------------------ class index
def test_class_index_hand_computed():
    acts = np.array([[4.0, 3.0, 2.0, 1.0]])
    two = np.array([[0, 0, 1, 1]])   # w = 1, .75, .5, .25: f0 = 0.7, f1 = 0.3
    for nu, want in [(1.0, 2 / 3), (0.8, 2 / 3), (0.7, 1.0), (0.5, 1.0), (0.71, 2 / 3)]:
        np.testing.assert_allclose(nsi.class_selectivity(two, acts, nu=nu), [want], rtol=1e-6)
    np.testing.assert_allclose(nsi.class_selectivity(np.zeros((1, 4), int), acts), [1.0])
    np.testing.assert_allclose(nsi.class_selectivity(np.array([[0, 1, 2, 3]]), acts), [0.0])
    # zero-weight top images do not count as classes
    np.testing.assert_allclose(nsi.class_selectivity(np.array([[0, 1, 2, 3]]), np.array([[2.0, 1.0, 0.0, 0.0]])), [2 / 3])
    assert np.isnan(nsi.class_selectivity(two, np.zeros((1, 4)))[0])                  # dead
    assert np.isnan(nsi.class_selectivity(-np.ones((1, 4), int), acts)[0])            # unlabelled
    np.testing.assert_allclose(nsi.class_frequencies(two, acts, 3), [[0.7, 0.3, 0.0]])
    assert nsi.population_code(two, acts)[0] == 2
    # hierarchy: classes 0, 1 share parent 0 -> one superclass
    np.testing.assert_allclose(nsi.class_selectivity(two, acts, parents=[0, 0]), [1.0])
    with pytest.raises(ValueError, match="nu"):
        nsi.class_selectivity(two, acts, nu=0)


def test_class_scores_in_index(tiny_model, tiny_data):
    idx = nsi.index_neurons(tiny_model, tiny_data, ["relu3"], top_n=8, progress=False, indexes=("class",), nu=0.5)
    L = idx["relu3"]
    np.testing.assert_array_equal(L.class_selectivity, nsi.class_selectivity(L.top_labels, L.top_activations, nu=0.5))
    np.testing.assert_array_equal(L.top_labels, np.asarray(tiny_data.labels)[L.top_indices])
    parents = [0, 0, 1, 1]   # a, b -> ab; c, d -> cd (sorted parent names)
    # The superclass index honours the run's nu (issue 16: it used to be computed at nu = 1 always).
    np.testing.assert_array_equal(L.superclass_selectivity,
                                  nsi.class_selectivity(L.top_labels, L.top_activations, nu=0.5, parents=parents))
    assert "class_population" in L.scores


def test_unlabelled_data_warns_once(tiny_model):
    with pytest.warns(UserWarning, match="no labels") as record:
        idx = nsi.index_neurons(tiny_model, make_images(10), ["relu1", "relu3"], top_n=3, progress=False,
                                indexes=("class",))
    assert sum("no labels" in str(w.message) for w in record) == 1
    assert np.isnan(idx["relu1"].class_selectivity).all()


# ------------------------------------------------------------------ other indexes, registry, fallback
def test_symmetric_kernel_has_symmetry_one():
    conv = nn.Conv2d(3, 1, 3, padding=0)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]).expand(1, 3, 3, 3))
        conv.bias.zero_()
    model = nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU())).eval()
    idx = nsi.index_neurons(model, make_images(12), ["relu"], top_n=5, progress=False,
                            indexes=("symmetry", "orientation", "shape"))
    L = idx["relu"]
    np.testing.assert_allclose(L.symmetry_selectivity, [1.0], rtol=1e-5)
    # 90-degree rotations of a symmetric kernel's crop give the same activation
    np.testing.assert_allclose(L.rot90_activations, L.top_activations, rtol=1e-5)
    assert np.isfinite(L.orientation_selectivity).all() and np.isfinite(L.shape_selectivity).all()


def test_registered_index_is_computed_saved_and_loaded(tmp_path, tiny_model, tiny_data):
    def invert(crops, inside):
        return torch.where(inside, 1 - crops, crops)

    nsi.register_index("polarity", transform=invert, description="inverted crop", replace=True)
    nsi.register_index("top_mean", function=lambda L, meta: L.top_activations.mean(axis=1), replace=True)
    try:
        idx = nsi.index_neurons(tiny_model, tiny_data, ["relu3"], top_n=4, progress=False,
                                indexes=("polarity", "top_mean"))
        L = idx["relu3"]
        want = 1 - L.polarity_activations.sum(1).astype(np.float64) / L.top_activations.sum(1)
        np.testing.assert_allclose(L.polarity_selectivity, want, rtol=1e-5)
        np.testing.assert_allclose(L.top_mean_selectivity, L.top_activations.mean(axis=1))
        idx.save(tmp_path / "i.npz")
        again = nsi.load_index(tmp_path / "i.npz")
        np.testing.assert_array_equal(again["relu3"].polarity_selectivity, L.polarity_selectivity)
        assert "polarity_selectivity" in again.to_pandas().columns
    finally:
        nsi.unregister_index("polarity")
        nsi.unregister_index("top_mean")
    with pytest.raises(ValueError, match="already registered"):
        nsi.register_index("color", transform=invert)
    with pytest.raises(ValueError, match="exactly one"):
        nsi.register_index("nothing")


class Doubling(nn.Module):
    """Element-wise, but of a kind the engine does not know to be local."""

    def forward(self, x):
        return 2 * x


def check_plain(idx, model, data, layer, gray, preprocess=None):
    L = idx[layer]
    for unit in range(L.n_units):
        for j in range(L.top_n):
            y, x = L.top_positions[unit, j]
            want = plain_gray_activation(model, layer, data[int(L.top_indices[unit, j])][0], unit, y, x,
                                         L.receptive_field, gray, preprocess)
            assert abs(L.gray_activations[unit, j] - want) <= 1e-4 * max(1, abs(want))


def test_unknown_module_falls_back_to_plain_definition(tiny_data):
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(doubling=Doubling(), conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU())).eval()
    with pytest.warns(UserWarning, match="plain definition"):
        idx = nsi.index_neurons(model, tiny_data, ["relu"], top_n=3, progress=False, indexes=("color",),
                                gray="luminance")
    assert idx.meta["shortcut"] == {"relu": False}
    check_plain(idx, model, tiny_data, "relu", "luminance")


def test_non_pixelwise_preprocess_is_caught_by_the_self_check(tiny_model, tiny_data):
    def standardise(x):   # per-image statistics: every pixel affects every input value
        return (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True)

    with pytest.warns(UserWarning, match="do not reproduce full-image activations"):
        idx = nsi.index_neurons(tiny_model, tiny_data, ["relu3"], top_n=3, progress=False, indexes=("color",),
                                gray="pca", preprocess=standardise)
    assert idx.meta["shortcut"] == {"relu3": False}
    check_plain(idx, tiny_model, tiny_data, "relu3", "pca", standardise)


def test_layer_without_receptive_field_is_a_clear_error(tiny_data):
    class GlobalContrast(nn.Module):
        def forward(self, x):
            return x - x.mean(dim=(2, 3), keepdim=True)

    model = nn.Sequential(OrderedDict(norm=GlobalContrast(), conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU()))
    with pytest.raises(ValueError, match="receptive field of layer 'relu'"):
        nsi.index_neurons(model, tiny_data, ["relu"], top_n=3, progress=False)
