"""Selectivity indexes against the definitions of docs/methods.md sections 4-6."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import nsi_widgets as nsi
from nsi_widgets.index.selectivity import (gray_pca, orientation_angles, orientation_combine, orientation_transforms, rotate,
                                           shuffle_pixels)
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


def plain_transformed_activation(model, layer, image, unit, y, x, rf, crop_transform, preprocess=None):
    """The definition: transform only the RF crop in the full image, full forward, read the stored location.

    ``crop_transform(crop (h, w, 3) float64 with zeros outside the image, inside (h, w) bool) -> (h, w, 3)``;
    only the in-image pixels of its result are pasted back.
    """
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
    new = crop_transform(crop, inside)
    for dy in range(h):
        for dx in range(w):
            if inside[dy, dx]:
                image[:, y0 + dy, x0 + dx] = new[dy, dx]
    module = dict(model.named_modules())[layer]
    captured = {}
    handle = module.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.no_grad():
        inp = torch.tensor(image, dtype=torch.float32)[None]
        model(preprocess(inp) if preprocess else inp)
    handle.remove()
    return float(captured["out"][0, unit, y, x])


def plain_gray_activation(model, layer, image, unit, y, x, rf, method, preprocess=None):
    """The colour index's definition: grey only the RF crop (see reference_gray)."""
    return plain_transformed_activation(model, layer, image, unit, y, x, rf,
                                        lambda crop, inside: reference_gray(crop, inside, method), preprocess)


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


# ------------------------------------------------------------------ the authors' orientation and symmetry
def keys_cubic(t, a=-0.75):
    """The cubic convolution kernel (Keys 1981) with a = -0.75, at offsets t."""
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                    np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))


def reference_rotate(crop, angle):
    """Rotate a crop (h, w, 3) counter-clockwise (as displayed) about its centre by ``angle`` degrees,
    bicubic convolution, samples outside the crop replicate its nearest edge pixel: written out."""
    h, w, _ = crop.shape
    theta = np.deg2rad(angle)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = np.zeros_like(crop)
    for i in range(h):
        for j in range(w):
            dy, dx = i - cy, j - cx
            sx = cx + dx * np.cos(theta) - dy * np.sin(theta)
            sy = cy + dx * np.sin(theta) + dy * np.cos(theta)
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            value = np.zeros(3)
            for m in range(-1, 3):
                for n in range(-1, 3):
                    weight = keys_cubic(sy - (y0 + m)) * keys_cubic(sx - (x0 + n))
                    value += weight * crop[min(max(y0 + m, 0), h - 1), min(max(x0 + n, 0), w - 1)]
            out[i, j] = value
    return out


REFERENCE_MIRRORS = {
    "horizontal": lambda c: c[:, ::-1],
    "vertical": lambda c: c[::-1, :],
    "diagonal": lambda c: c.transpose(1, 0, 2),
    "antidiagonal": lambda c: c[::-1, ::-1].transpose(1, 0, 2),
}


def test_reference_rotation_turns_counter_clockwise():
    # The reference agrees with the documented direction: 90 degrees is numpy.rot90.
    crop = np.random.default_rng(0).random((5, 5, 3))
    np.testing.assert_allclose(reference_rotate(crop, 90), np.rot90(crop), atol=1e-12)
    np.testing.assert_allclose(reference_rotate(crop, 360), crop, atol=1e-12)


def test_rotate_transform_equals_bicubic_with_edge_padding():
    crops = torch.rand(3, 3, 7, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for angle in (15, 30, 45, 90, 105, 200, 345):
        got = rotate(angle)(crops).numpy()
        for r in range(3):
            want = reference_rotate(crops[r].permute(1, 2, 0).numpy(), angle)
            np.testing.assert_allclose(got[r].transpose(1, 2, 0), want, atol=1e-9, err_msg=str(angle))
    assert orientation_angles() == [15.0 * k for k in range(1, 25)]
    assert len(orientation_angles(30)) == 12
    with pytest.raises(ValueError, match="divide 360"):
        orientation_angles(25)


def orientation_model():
    """Two local layers with oriented, asymmetric filters (a tiny model for the full-forward reference)."""
    torch.manual_seed(3)
    model = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 4, 3, padding=1), relu1=nn.ReLU(),
                                      conv2=nn.Conv2d(4, 3, 3, stride=2, padding=1), relu2=nn.ReLU()))
    return model.eval()


def test_orientation_and_symmetry_equal_the_authors_definition():
    model = orientation_model()
    data = make_images(10, height=14, width=12, seed=5)
    idx = nsi.index_neurons(model, data, ["relu1", "relu2"], top_n=3, progress=False,
                            indexes=("orientation", "symmetry"))
    angles = [15 * k for k in range(1, 25)]
    for layer in ("relu1", "relu2"):
        L = idx[layer]
        rf = L.receptive_field
        assert rf.size[0] == rf.size[1] >= 3
        activations = L.top_activations.astype(np.float64)
        for unit in range(L.n_units):
            if L.dead[unit]:
                continue
            refs = [(data[int(L.top_indices[unit, j])], *L.top_positions[unit, j]) for j in range(L.top_n)]

            def ratio(crop_transform):
                total = sum(plain_transformed_activation(model, layer, image, unit, y, x, rf, crop_transform)
                            for image, y, x in refs)
                return total / activations[unit].sum()

            rotation_ratios = [ratio(lambda crop, inside, a=a: reference_rotate(crop, a)) for a in angles]
            mirror_ratios = [ratio(lambda crop, inside, f=f: f(crop)) for f in REFERENCE_MIRRORS.values()]
            np.testing.assert_allclose(L.orientation_selectivity[unit], 1 - np.mean(rotation_ratios), atol=2e-5)
            np.testing.assert_allclose(L.symmetry_selectivity[unit], np.mean(mirror_ratios), atol=2e-5)
        assert len([k for k in L.details if k.startswith("rot")]) == 24
        assert {f"mirror_{axis}_activations" for axis in REFERENCE_MIRRORS} <= set(L.details)
        np.testing.assert_allclose(L.details["rot360_activations"], L.top_activations, rtol=1e-5)


def test_orientation_with_another_step_is_one_registration():
    model = orientation_model()
    data = make_images(6, height=14, width=12, seed=5)
    nsi.register_index("orientation_90", transforms=orientation_transforms(90), combine=orientation_combine,
                       replace=True)
    try:
        idx = nsi.index_neurons(model, data, ["relu1"], top_n=2, progress=False,
                                indexes=("orientation", "orientation_90"))
    finally:
        nsi.unregister_index("orientation_90")
    L = idx["relu1"]
    by_quarter = [L.details[f"rot{a}_activations"] for a in (90, 180, 270, 360)]
    want = 1 - np.mean([t.sum(1) / L.top_activations.sum(1) for t in by_quarter], axis=0)
    np.testing.assert_allclose(L.orientation_90_selectivity, want, rtol=1e-5)


def test_shape_shuffle_is_seeded():
    crops = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    a, b = shuffle_pixels(0)(crops), shuffle_pixels(0)(crops)
    assert torch.equal(a, b) and not torch.equal(a, shuffle_pixels(1)(crops))
    assert torch.equal(torch.sort(a.reshape(2, 3, -1), dim=-1).values, torch.sort(crops.reshape(2, 3, -1), dim=-1).values)


# ------------------------------------------------------------------ superclass index and nu
def test_superclass_index_honours_nu_by_hand():
    # Four top images of classes 0..3 with weights 1, .75, .5, .25 (sum 2.5); parents: 0, 1 -> A; 2 -> B; 3 -> C.
    # Superclass frequencies: A (1 + .75) / 2.5 = 0.7, B 0.2, C 0.1.
    acts = np.array([[4.0, 3.0, 2.0, 1.0]])
    labels = np.array([[0, 1, 2, 3]])
    parents = [0, 0, 1, 2]
    # nu = 1: all three superclasses are needed, M = 3, gamma = (4 - 3) / 3
    np.testing.assert_allclose(nsi.class_selectivity(labels, acts, nu=1.0, parents=parents), [1 / 3], rtol=1e-6)
    # nu = 0.5: superclass A alone covers 0.7 >= 0.5, M = 1, gamma = 1
    np.testing.assert_allclose(nsi.class_selectivity(labels, acts, nu=0.5, parents=parents), [1.0], rtol=1e-6)
    # nu = 0.8: A + B = 0.9 >= 0.8, M = 2, gamma = 2/3; over the classes themselves M = 3 (1, .75, .5 -> 0.9)
    np.testing.assert_allclose(nsi.class_selectivity(labels, acts, nu=0.8, parents=parents), [2 / 3], rtol=1e-6)
    np.testing.assert_allclose(nsi.class_selectivity(labels, acts, nu=0.8), [1 / 3], rtol=1e-6)
    # where nu cannot matter: every top image in one superclass gives 1 at any nu
    for nu in (1.0, 0.5):
        np.testing.assert_allclose(nsi.class_selectivity(np.array([[0, 1, 1, 0]]), acts, nu=nu, parents=parents), [1.0])


def test_superclass_selectivity_in_the_index_uses_the_runs_nu(tiny_model, tiny_data):
    idx = nsi.index_neurons(tiny_model, tiny_data, ["relu3"], top_n=8, progress=False, indexes=("class",), nu=0.5)
    L = idx["relu3"]
    parents = [0, 0, 1, 1]   # a, b -> ab; c, d -> cd
    want = nsi.class_selectivity(L.top_labels, L.top_activations, nu=0.5, parents=parents)
    assert not np.array_equal(want, nsi.class_selectivity(L.top_labels, L.top_activations, nu=1.0, parents=parents))
    np.testing.assert_array_equal(L.superclass_selectivity, want)
