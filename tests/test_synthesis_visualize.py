"""Activation maximisation, facets, inversion and their attachments on tiny models (fast; the
acceptance on the trained default is in test_synthesis_acceptance.py)."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import nsi_widgets as nsi
from nsi_widgets.core.errors import InputError
from nsi_widgets.synthesis import (ATTACHMENT_NAME, FacetOptions, Facets, Inversion, OnDemandOptions, Visualization,
                                   image_statistics, inversion_figure, merge, synthesise_unit)
from nsi_widgets.synthesis.facets import shift

SIZE = (12, 12)


@pytest.fixture
def stats(tiny_data):
    return image_statistics(tiny_data, image_size=SIZE)


def _vis(model, stats, units=(1, 3), **kw):
    kw = {"steps": 6, "decorrelate": stats, "progress": False, **kw}
    return nsi.visualize(model, "conv2", list(units), **kw)


def test_same_seed_identical_images_other_seed_different(tiny_model, stats):
    a, b = _vis(tiny_model, stats), _vis(tiny_model, stats)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.activations, b.activations)
    c = _vis(tiny_model, stats, seed=1)
    assert not np.allclose(a.images, c.images)
    assert a.images.shape == (2, 12, 12, 3) and a.images.dtype == np.float32
    assert 0 <= a.images.min() and a.images.max() <= 1
    assert a.history.shape == (6, 2) and a.recipe["seed"] == 0 and a.recipe["units"] == [1, 3]
    assert a.recipe["decorrelate"]["digest"] == stats.digest


def test_a_units_image_does_not_depend_on_the_other_units_of_the_batch(tiny_model, stats):
    together = _vis(tiny_model, stats, units=(1, 3, 5))
    alone = _vis(tiny_model, stats, units=(3,))
    one_by_one = _vis(tiny_model, stats, units=(1, 3, 5), batch=False)
    np.testing.assert_allclose(together.images[1], alone.images[0], atol=1e-4)
    np.testing.assert_allclose(together.images, one_by_one.images, atol=1e-4)


def test_activations_are_the_objective_on_the_final_image_without_transforms(tiny_model, stats):
    v = _vis(tiny_model, stats, objective="neuron")
    out = {}
    handle = tiny_model.conv2.register_forward_hook(lambda m, i, o: out.__setitem__("t", o))
    with torch.no_grad():
        tiny_model(torch.from_numpy(v.images).permute(0, 3, 1, 2))
    handle.remove()
    t = out["t"].numpy()
    h, w = t.shape[-2:]
    np.testing.assert_allclose(v.activations, [t[0, 1, h // 2, w // 2], t[1, 3, h // 2, w // 2]], rtol=1e-4, atol=1e-5)
    logits = nsi.visualize(tiny_model, None, [2], objective="class", steps=3, decorrelate=stats, progress=False)
    with torch.no_grad():
        ref = tiny_model(torch.from_numpy(logits.images).permute(0, 3, 1, 2))[0, 2]
    assert logits.layer == "output" and logits.activations[0] == pytest.approx(float(ref), rel=1e-4, abs=1e-5)


def test_the_model_is_left_as_it_was(tiny_model, stats):
    tiny_model.train()
    tiny_model.conv1.weight.requires_grad_(True)
    tiny_model.conv3.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    _vis(tiny_model, stats)
    assert tiny_model.training
    assert tiny_model.conv1.weight.requires_grad and not tiny_model.conv3.weight.requires_grad
    assert tiny_model.conv1.weight.is_contiguous() and tiny_model.conv1.weight.grad is None
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert "forward" not in vars(tiny_model.relu1)  # the redirected ReLU is removed


def test_bad_arguments_are_refused_before_any_work(tiny_model, stats):
    with pytest.raises(InputError, match="outside layer"):
        _vis(tiny_model, stats, units=(8,))
    with pytest.raises(InputError, match="unknown layer"):
        nsi.visualize(tiny_model, "conv9", [0], decorrelate=stats, progress=False)
    with pytest.raises(InputError, match="objective"):
        _vis(tiny_model, stats, objective="mean")
    with pytest.raises(InputError, match="param"):
        _vis(tiny_model, stats, param="cppn")
    with pytest.raises(InputError, match="image_size"):
        nsi.visualize(tiny_model, "conv2", [0], decorrelate=None, progress=False)
    with pytest.raises(InputError, match="units"):
        _vis(tiny_model, stats, units=())


class _BatchMixer(nn.Module):
    def forward(self, x):
        return x - x.mean(0, keepdim=True)


def test_a_model_that_mixes_the_batch_is_detected(stats):
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), mix=_BatchMixer(), relu=nn.ReLU()))
    with pytest.raises(InputError, match="batch=False"):
        nsi.visualize(model, "relu", [0, 1], steps=2, decorrelate=stats, progress=False)
    v = nsi.visualize(model, "relu", [0, 1], steps=2, decorrelate=stats, progress=False, batch=False)
    assert v.images.shape[0] == 2


def _threshold_model():
    """conv unit 0 = relu(R - 0.6): zero (and zero gradient) at the grey start."""
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 2, 1), relu=nn.ReLU()))
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.weight[0, 0] = 1.0
        model.conv.weight[1, 1] = 1.0
        model.conv.bias.fill_(-0.6)
    return model.eval()


def test_redirected_relu_revives_a_unit_that_starts_at_zero(stats):
    model = _threshold_model()
    kw = dict(steps=30, decorrelate=None, image_size=(6, 6), transforms="none", progress=False)
    stuck = nsi.visualize(model, "relu", [0], redirect_relu=0, **kw)
    assert stuck.history[0, 0] == 0 and stuck.activations[0] == 0  # never moves: zero gradient throughout
    revived = nsi.visualize(model, "relu", [0], **kw)
    assert revived.history[0, 0] == 0 and revived.activations[0] > 0


def test_attachment_round_trip_through_the_index_file(tiny_model, tiny_data, stats, tmp_path):
    idx = nsi.index_neurons(tiny_model, tiny_data, layers=["conv2", "conv3"], top_n=8, progress=False,
                            indexes=(), neuron_features=None)
    v = _vis(tiny_model, stats, units=(1, 3))
    idx.attach(ATTACHMENT_NAME, v.to_attachment())
    table = idx.to_pandas()
    column = table[table.layer == "conv2"]["synthesis.am_activation"].to_numpy()
    assert np.isnan(column[[0, 2, 4, 5, 6, 7]]).all() and column[1] == pytest.approx(v.activations[0])
    loaded = nsi.load_index(idx.save(tmp_path / "idx"))
    back = Visualization.from_attachment(loaded.attachments[ATTACHMENT_NAME], "conv2")
    np.testing.assert_array_equal(back.units, [1, 3])
    np.testing.assert_allclose(back.images, v.images, atol=0.5 / 255 + 1e-7)
    np.testing.assert_array_equal(back.activations, v.activations)
    np.testing.assert_array_equal(back.history, v.history)
    assert back.recipe == v.recipe
    # a later result replaces the units it holds and keeps the others
    w = _vis(tiny_model, stats, units=(3, 4), seed=5)
    both = Visualization.from_attachment(merge(v.to_attachment(), w.to_attachment()), "conv2")
    np.testing.assert_array_equal(both.units, [1, 3, 4])
    np.testing.assert_array_equal(both.activations, [v.activations[0], w.activations[0], w.activations[1]])


def test_facets_partition_the_top_images_and_average_them(tiny_model, tiny_data):
    idx = nsi.index_neurons(tiny_model, tiny_data, layers=["conv3"], top_n=20, progress=False, indexes=(),
                            neuron_features=None)
    options = FacetOptions(steps=3, objective="channel")
    f = nsi.facets(tiny_model, tiny_data, idx, "conv3", 1, k=3, code_layer="conv3", options=options, progress=False)
    L = idx["conv3"]
    top = L.top_indices[1][L.top_activations[1] > 0]
    assert sorted(np.concatenate(f.members).tolist()) == sorted(top.tolist()) and f.k == 3
    for members, ranks in zip(f.members, f.member_ranks):
        np.testing.assert_array_equal(L.top_indices[1][ranks], members)
        assert list(ranks) == sorted(ranks)
    for j, members in enumerate(f.members):
        mean = np.mean([tiny_data[int(i)][0].numpy() for i in members], axis=0).transpose(1, 2, 0)
        np.testing.assert_allclose(f.mean_images[j], mean, atol=1e-6)
    assert f.images.shape == f.mean_images.shape and f.activations.shape == (3,)
    back = Facets.from_attachment(f.to_attachment(), "conv3", 1)
    assert [m.tolist() for m in back.members] == [m.tolist() for m in f.members]
    np.testing.assert_allclose(back.images, f.images, atol=0.5 / 255 + 1e-7)
    with pytest.raises(InputError, match="at least k"):
        nsi.facets(tiny_model, tiny_data, idx, "conv3", 1, k=50, progress=False)


def test_shift_moves_the_image_and_fills_with_its_mean():
    image = torch.arange(3 * 3 * 4, dtype=torch.float32).view(3, 3, 4)
    out = shift(image, 1, -2).numpy()
    ref = np.broadcast_to(image.numpy().mean(axis=(1, 2), keepdims=True), image.shape).copy()
    ref[:, 1:, :2] = image.numpy()[:, :2, 2:]
    np.testing.assert_array_equal(out, ref)


def test_on_demand_handler_returns_the_merged_attachment(tiny_model, tiny_data):
    idx = nsi.index_neurons(tiny_model, tiny_data, layers=["conv2", "conv3"], top_n=12, progress=False,
                            indexes=(), neuron_features=None)
    calls = []
    options = OnDemandOptions(steps=4, k=2, facet_options=FacetOptions(steps=2))
    update = synthesise_unit(idx, tiny_model, tiny_data, "conv3", 2, lambda f, m: calls.append(f), options=options)
    assert ATTACHMENT_NAME not in idx.attachments  # the handler does not change the index
    fractions = np.asarray(calls)
    assert fractions[0] == 0 and fractions[-1] == 1 and np.all(np.diff(fractions) >= 0)
    idx.attach(ATTACHMENT_NAME, update)
    update = synthesise_unit(idx, tiny_model, tiny_data, "conv3", 4, None, options=options)
    idx.attach(ATTACHMENT_NAME, update)
    v = Visualization.from_attachment(idx.attachments[ATTACHMENT_NAME], "conv3")
    np.testing.assert_array_equal(v.units, [2, 4])
    assert Facets.from_attachment(idx.attachments[ATTACHMENT_NAME], "conv3", 4).k == 2
    row = idx.to_pandas().query("layer == 'conv3'")
    assert row["synthesis.n_facets"].to_numpy()[[2, 4]].tolist() == [2, 2]


def test_inversion_fits_the_features_and_reports_psnr(tiny_model, tiny_data):
    images = torch.stack([tiny_data[i][0] for i in range(3)])
    r = nsi.invert(tiny_model, "conv1", images, steps=40, progress=False)
    again = nsi.invert(tiny_model, "conv1", [tiny_data[i] for i in range(3)], steps=40, progress=False)
    np.testing.assert_array_equal(r.images, again.images)  # (image, label) items read as images; same seed
    assert r.history[-1].mean() < r.history[0].mean() and r.feature_error.shape == (3,)
    mse = ((r.images.astype(np.float64) - images.permute(0, 2, 3, 1).numpy()) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(r.psnr, 10 * np.log10(1 / mse), rtol=1e-5)
    out = {}
    h = tiny_model.conv1.register_forward_hook(lambda m, i, o: out.__setitem__("t", o))
    with torch.no_grad():
        tiny_model(torch.from_numpy(r.images).permute(0, 3, 1, 2))
        a = out["t"].clone()
        tiny_model(images)
    h.remove()
    ref = ((a - out["t"]) ** 2).flatten(1).sum(1) / (out["t"] ** 2).flatten(1).sum(1)
    np.testing.assert_allclose(r.feature_error, ref.numpy(), rtol=1e-3, atol=1e-6)
    back = Inversion.from_attachment(r.to_attachment())
    np.testing.assert_array_equal(back.feature_error, r.feature_error)
    fig = inversion_figure({"conv1": r, "again": again}, max_images=2)
    assert len(fig.data) == 6  # originals + two layers, two images each


def test_the_public_names():
    assert nsi.visualize is nsi.synthesis.visualize and nsi.facets is nsi.synthesis.facets
    assert nsi.invert is nsi.synthesis.invert
    assert {"visualize", "facets", "invert"} <= set(nsi.__all__)
