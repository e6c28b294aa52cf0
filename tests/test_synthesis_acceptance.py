"""Acceptance of feature visualisation on the trained embedded default (issue 19; docs/methods.md
section 9). Everything is read from ``nsi.zoo.load("shapes")`` and ``nsi.zoo.conv_layers(model)``
(no class names, counts or layer names), so the tests re-run unchanged on a new default.

Marked slow: together about two minutes on one core (activation maximisation of every alive unit of
the two deepest conv layers, twice; facets of 16 units; two inversions)."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import nsi_widgets as nsi
from nsi_widgets.core.receptive_field import ReceptiveField
from nsi_widgets.index.results import LayerIndex, NeuronIndex

pytestmark = pytest.mark.slow

RED_MARGIN = 0.25
"""The planted red unit's image: mean R exceeds mean G and mean B by at least this (RGB in [0, 1]).
Measured on the default at 128 steps: R 0.70, G 0.31, B 0.41 (0.84, 0.23, 0.25 at 512 steps); the
data's colour decorrelation moves chroma more slowly than luminance."""


@pytest.fixture(scope="module")
def default():
    model, data = nsi.zoo.load("shapes")
    return model, data, nsi.zoo.conv_layers(model)


@pytest.fixture(scope="module")
def index(default):
    model, data, layers = default
    return nsi.index_neurons(model, data, layers=layers[-2:], top_n=60, indexes=(), neuron_features=None,
                             progress=False)


@pytest.fixture(scope="module")
def maximised(default, index):
    """Default settings (and param='pixel') for every alive unit of the two deepest conv layers."""
    model, _, layers = default
    out = {}
    for layer in layers[-2:]:
        alive = np.flatnonzero(~index[layer].dead)
        for param in ("fft", "pixel"):
            out[layer, param] = (alive, nsi.visualize(model, layer, alive, param=param, progress=False))
    return out


def _layer_output(model, layer, images):
    out = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.__setitem__("t", o))
    with torch.no_grad():
        model(torch.as_tensor(images).permute(0, 3, 1, 2))
    handle.remove()
    return out["t"]


def test_activation_maximisation_beats_every_dataset_image(default, index, maximised):
    model, _, layers = default
    fractions = {}
    for layer in layers[-2:]:
        alive, v = maximised[layer, "fft"]
        top1 = index[layer].top_activations[alive, 0]
        # the result's activation is the objective (the map centre) on the final image: check it here
        t = _layer_output(model, layer, v.images)[torch.arange(len(alive)), torch.from_numpy(alive)]
        h, w = t.shape[-2:]
        np.testing.assert_allclose(v.activations, t[:, h // 2, w // 2].numpy(), rtol=1e-4, atol=1e-4)
        fractions[layer] = float(np.mean(v.activations > top1))
        print(f"{layer}: {len(alive)} alive units; synthesised > top-1 dataset activation for "
              f"{fractions[layer]:.3f}; median ratio {np.median(v.activations / top1):.2f}")
    assert min(fractions.values()) >= 0.95, fractions


def test_fft_with_data_priors_against_pixels_at_equal_steps(default, index, maximised):
    """Reported: the median activation of both. Asserted (what holds on the default): the Fourier
    parameterisation beats the top-1 dataset activation for at least as many units as pixels do."""
    _, _, layers = default
    wins = {}
    for layer in layers[-2:]:
        top1 = index[layer].top_activations[maximised[layer, "fft"][0], 0]
        for param in ("fft", "pixel"):
            v = maximised[layer, param][1]
            wins[layer, param] = int((v.activations > top1).sum())
            print(f"{layer} {param}: median activation {np.median(v.activations):.3f}, "
                  f"above top-1 for {wins[layer, param]} of {len(top1)}, steps {v.recipe['steps']}")
    assert sum(wins[l, "fft"] for l in layers[-2:]) >= sum(wins[l, "pixel"] for l in layers[-2:]), wins


def test_same_seed_same_images_on_the_default(default):
    model, _, layers = default
    a = nsi.visualize(model, layers[-1], [0, 5], steps=8, progress=False)
    b = nsi.visualize(model, layers[-1], [0, 5], steps=8, progress=False)
    assert np.array_equal(a.images, b.images)


def _first_conv(model, layer):
    block = dict(model.named_modules())[layer]
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    return block, convs[0], (norms[0] if norms else None)


def test_a_planted_red_unit_gets_a_red_image(default):
    model, _, layers = default
    planted = copy.deepcopy(model)
    _, conv, norm = _first_conv(planted, layers[0])
    unit = 0
    with torch.no_grad():  # response = R - (G + B) / 2 at the centre tap
        conv.weight[unit].zero_()
        k = conv.weight.shape[-1] // 2
        conv.weight[unit, :, k, k] = torch.tensor([1.0, -0.5, -0.5])
        if conv.bias is not None:
            conv.bias[unit] = 0
        if norm is not None:
            norm.running_mean[unit], norm.running_var[unit] = 0, 1 - norm.eps
            norm.weight[unit], norm.bias[unit] = 1, 0
    # the channel objective, so that the whole image (not only the centre the default objective reads) shows it
    v = nsi.visualize(planted, layers[0], [unit], objective="channel", progress=False)
    r, g, b = v.images[0].reshape(-1, 3).mean(0)
    print(f"planted red unit: mean RGB {r:.3f} {g:.3f} {b:.3f}")
    assert r - max(g, b) >= RED_MARGIN


def _adjusted_rand_index(a, b):
    """Hubert & Arabie's ARI from the contingency table."""
    a, b = np.asarray(a), np.asarray(b)
    table = np.array([[np.sum((a == i) & (b == j)) for j in np.unique(b)] for i in np.unique(a)])
    comb = lambda n: n * (n - 1) / 2  # noqa: E731
    index = comb(table).sum()
    rows, cols = comb(table.sum(1)).sum(), comb(table.sum(0)).sum()
    expected = rows * cols / comb(len(a))
    return (index - expected) / ((rows + cols) / 2 - expected)


class _Planted(nn.Module):
    """The default with one more unit on top: relu(max_k (w_k . pooled code + b_k)), one detector per group.

    One linear function that fires for two separate clusters separates them poorly from the other 238
    classes of the default (least squares: 9 of 100 blue squares above every other image); one detector
    per group and their maximum is the two-faceted unit the issue describes (73 and 91 of 100)."""

    def __init__(self, base, code_layer, size):
        super().__init__()
        self.base = base
        self.code_layer = code_layer
        width = _layer_output(base, code_layer, torch.zeros(1, size, size, 3)).shape[1]
        self.planted = nn.Linear(width, 2)
        self._code = None
        dict(base.named_modules())[code_layer].register_forward_hook(lambda m, i, o: setattr(self, "_code", o))

    def forward(self, x):
        self.base(x)
        return torch.relu(self.planted(self._code.mean((2, 3))).amax(1, keepdim=True))


def test_a_planted_two_faceted_unit_splits_into_its_two_groups(default):
    model, data, layers = default
    truth = data.ground_truth
    group = np.full(len(data), -1)
    group[(truth["shape"] == "circle") & (truth["color"] == "red")] = 0
    group[(truth["shape"] == "square") & (truth["color"] == "blue")] = 1
    base = copy.deepcopy(model)
    planted = _Planted(base, layers[-1], data.image_size[0]).eval()
    images = data.images()
    with torch.no_grad():
        codes = torch.cat([_layer_output(base, layers[-1], images[i:i + 500].permute(0, 2, 3, 1)).mean((2, 3))
                           for i in range(0, len(data), 500)]).double().numpy()
    weights, biases = [], []
    for k in (0, 1):  # detector k: least squares on "group k or not", thresholded above every image outside it
        w = np.linalg.lstsq(np.c_[codes, np.ones(len(codes))], (group == k).astype(float), rcond=None)[0]
        score = codes @ w[:-1] + w[-1]
        threshold = score[group < 0].max() + 1e-3 * np.abs(score).max()  # nothing else fires on these images
        weights.append(w[:-1])
        biases.append(w[-1] - threshold)
    with torch.no_grad():
        planted.planted.weight.copy_(torch.from_numpy(np.stack(weights)))
        planted.planted.bias.copy_(torch.tensor(biases))
        activation = torch.cat([planted(images[i:i + 500]) for i in range(0, len(data), 500)])[:, 0].numpy()
    assert (group[activation > 0] >= 0).all()
    order = np.argsort(-activation, kind="stable")[: int((activation > 0).sum())]
    counts = np.bincount(group[order], minlength=2)
    assert counts.min() >= 10, f"the planted unit must fire for both groups, got {counts}"
    n = len(order)
    L = LayerIndex(name="planted", top_indices=order[None], top_activations=activation[order][None].astype(np.float32),
                   top_positions=np.zeros((1, n, 2), np.int64), receptive_field=ReceptiveField((64, 64), (1, 1), (0, 0)),
                   map_size=(1, 1), top_labels=data.labels[order][None])
    f = nsi.facets(planted, data, NeuronIndex({"planted": L}), "planted", 0, k=2,
                   code_layer=f"base.{layers[-1]}", progress=False)
    predicted = f.labels
    ari = _adjusted_rand_index(predicted, group[f.candidates])
    print(f"planted two-faceted unit: {n} members ({counts.tolist()}), adjusted Rand index {ari:.3f}")
    assert ari >= 0.9


def test_each_facet_visualisation_stays_nearest_its_own_facet(default, index):
    model, data, layers = default
    code_layer = layers[-1]
    near = total = 0
    for layer in layers[-2:]:
        alive = np.flatnonzero(~index[layer].dead)
        for unit in alive[:: max(1, len(alive) // 8)][:8]:
            f = nsi.facets(model, data, index, layer, int(unit), progress=False)
            if f.k < 2:
                continue
            centroids = np.stack([_layer_output(model, code_layer, data.images(m).permute(0, 2, 3, 1)).mean((2, 3))
                                  .mean(0).numpy() for m in f.members])
            codes = _layer_output(model, code_layer, f.images).mean((2, 3)).numpy()
            d = ((codes[:, None] - centroids[None]) ** 2).sum(-1)
            near += int((d.argmin(1) == np.arange(f.k)).sum())
            total += f.k
            assert np.all(f.activations > f.mean_activations)  # the visualisation excites the unit more
    print(f"facet visualisations nearest their own facet's mean code: {near} of {total} ({near / total:.3f})")
    assert total >= 8 and near / total >= 0.8


@pytest.fixture(scope="module")
def held_out(default):
    _, data, _ = default
    chosen = np.linspace(0, len(data) - 1, 16).round().astype(int)
    return data.images(chosen), data.labels[chosen]


def test_first_conv_layer_inversion_reaches_25_db(default, held_out):
    model, _, layers = default
    images, _ = held_out
    r = nsi.invert(model, layers[0], images, progress=False)
    print(f"{layers[0]} inversion: PSNR median {np.median(r.psnr):.1f} dB, min {r.psnr.min():.1f} dB")
    assert r.psnr.min() >= 25


def test_deepest_conv_layer_inversion_keeps_the_class(default, held_out):
    model, _, layers = default
    images, labels = held_out
    r = nsi.invert(model, layers[-1], images, progress=False)
    with torch.no_grad():
        predicted = model(torch.from_numpy(r.images).permute(0, 3, 1, 2)).argmax(1).numpy()
        original = model(images).argmax(1).numpy()
    same_label = float(np.mean(predicted == labels))
    print(f"{layers[-1]} inversion: classified as the original's class {same_label:.3f} (as the model classifies "
          f"the original: {np.mean(predicted == original):.3f}); PSNR median {np.median(r.psnr):.1f} dB")
    assert same_label >= 0.9
