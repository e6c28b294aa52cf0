"""Layer similarity: the properties every measure must have, and each measure against a brute force."""
import warnings

import numpy as np
import pytest
import torch

import nsi_widgets as nsi
from nsi_widgets.concepts import CAVOptions, LayerSimilarity, Net2VecOptions, load_similarity
from nsi_widgets.concepts.cka import BiasedCKAWarning
from nsi_widgets.core.errors import InputError
from _concept_data import Squares, make_bn_cnn, permuted
from test_cka import hsic_unbiased
from test_concept_vectors import held_out
from test_dissection import _upsample

LAYERS = ["relu1", "relu2", "relu3"]
OPTIONS = {"cka": None, "net2vec": Net2VecOptions(epochs=8), "tcav": CAVOptions(n_images=30)}
pytestmark = pytest.mark.filterwarnings("ignore:the dataset has no labels")


@pytest.fixture(scope="module")
def data():
    return Squares(160, seed=7)


@pytest.fixture(scope="module")
def models():
    model = make_bn_cnn(0)
    return model, permuted(model)[0]


def _similarity(model_a, data, model_b=None, method="cka", layers_b=None, **kwargs):
    return nsi.layer_similarity(model_a, data, LAYERS, model_b, layers_b, method=method, options=OPTIONS[method],
                                batch_size=32, progress=False, **kwargs)


def _outputs(model, data, layer, items):
    """Every output of the layer for ``items`` (one forward of them all)."""
    module = dict(model.named_modules())[layer]
    out = []
    handle = module.register_forward_hook(lambda m, i, o: out.append(o.detach().double().numpy()))
    with torch.no_grad():
        model(torch.stack([data[int(i)][0] for i in items]))
    handle.remove()
    return out[0]


# ---------------------------------------------------------------------------------------------
# Properties of every measure
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["cka", "net2vec", "tcav"])
def test_every_measure_is_symmetric_one_on_the_diagonal_and_blind_to_permuted_channels(method, data, models):
    """Measured differences against the permuted model: CKA and TCAV 2e-8 (float32 forwards), Net2Vec 0."""
    model, shuffled = models
    alone = _similarity(model, data, method=method)
    itself = _similarity(model, data, model, method=method, layers_b=LAYERS)
    np.testing.assert_allclose(alone.matrix, alone.matrix.T, atol=1e-12)
    np.testing.assert_allclose(itself.matrix, alone.matrix, atol=1e-12)
    np.testing.assert_allclose(np.diag(alone.matrix), 1.0, atol=1e-9)
    assert alone.same_model and alone.matrix.shape == (3, 3) and alone.layers_a == alone.layers_b == LAYERS
    across = _similarity(model, data, shuffled, method=method, layers_b=LAYERS)
    assert not across.same_model and across.layers_b == LAYERS
    assert np.all(np.isfinite(across.matrix))
    assert np.abs(across.matrix - alone.matrix).max() < 0.02
    if method != "cka":   # the concept measures count concepts: at least one per pair here
        assert across.passing().any(axis=2).all()


# ---------------------------------------------------------------------------------------------
# Each measure against a brute force
# ---------------------------------------------------------------------------------------------
def test_cka_across_two_models_equals_minibatch_hsic_by_the_formulas(data):
    a, b = make_bn_cnn(0), make_bn_cnn(5)
    result = nsi.layer_similarity(a, data, ["relu1", "relu3"], b, ["relu2"], batch_size=50, progress=False)
    items = np.arange(len(data))
    expected = np.zeros((2, 1))
    sums = {}
    for start in range(0, len(data), 50):
        batch = items[start:start + 50]
        if len(batch) < 4:
            continue
        pooled = {("a", n): _outputs(a, data, n, batch).mean(axis=(2, 3)) for n in ("relu1", "relu3")}
        pooled[("b", "relu2")] = _outputs(b, data, "relu2", batch).mean(axis=(2, 3))
        grams = {k: (v - v.mean(0)) @ (v - v.mean(0)).T for k, v in pooled.items()}
        for i in grams:
            for j in grams:
                sums[i, j] = sums.get((i, j), 0.0) + hsic_unbiased(grams[i], grams[j])
    for r, n in enumerate(("relu1", "relu3")):
        expected[r, 0] = sums[("a", n), ("b", "relu2")] / np.sqrt(sums[("a", n), ("a", n)] *
                                                                 sums[("b", "relu2"), ("b", "relu2")])
    np.testing.assert_allclose(result.matrix, expected, rtol=1e-6)      # float32 channel means: ~1e-7
    assert result.layers_a == ["relu1", "relu3"] and result.layers_b == ["relu2"]
    assert result.meta["images"] == 160 and result.meta["images_left_out"] == 0


def test_net2vec_similarity_is_the_iou_of_the_two_layers_maps_on_held_out_images(data):
    a, b = make_bn_cnn(0), make_bn_cnn(5)
    options = OPTIONS["net2vec"]
    result = nsi.layer_similarity(a, data, ["relu2"], b, ["relu1", "relu3"], method="net2vec", options=options,
                                  batch_size=32, progress=False)
    va = nsi.concept_vectors(a, data, ["relu2"], options=options, batch_size=32, progress=False)
    vb = nsi.concept_vectors(b, data, ["relu1", "relu3"], options=options, batch_size=32, progress=False)
    test = held_out(len(data))[1]
    masks_size, image_size = (16, 16), (16, 16)

    def maps(model, cv):
        outputs = _outputs(model, data, cv.layer, test)
        rf = nsi.receptive_field(model, cv.layer, input_size=image_size)
        up = _upsample(outputs, rf, image_size, masks_size)
        return np.einsum("nchw,kc->nkhw", up, cv.vectors.astype(np.float64)) + cv.bias[None, :, None, None] > 0

    pa = maps(a, va["relu2"])
    for j, layer in enumerate(["relu1", "relu3"]):
        pb = maps(b, vb[layer])
        both, union = (pa & pb).sum(axis=(0, 2, 3)), (pa | pb).sum(axis=(0, 2, 3))
        expected = np.where(union > 0, both / np.maximum(union, 1), np.nan)
        np.testing.assert_allclose(result.per_concept[0, j], expected, atol=1e-12)
        np.testing.assert_array_equal(result.quality_b[j], vb[layer].quality)
    counted = result.passing() & ~np.isnan(result.per_concept)
    np.testing.assert_allclose(result.matrix, np.nanmean(np.where(counted, result.per_concept, np.nan), axis=2))
    np.testing.assert_array_equal(counted, (result.quality_a[:, None] >= 0.1) & (result.quality_b[None] >= 0.1)
                                  & ~np.isnan(result.per_concept))


def test_tcav_similarity_is_the_correlation_of_concept_scores_on_held_out_images(data):
    a, b = make_bn_cnn(0), make_bn_cnn(5)
    options = OPTIONS["tcav"]
    result = nsi.layer_similarity(a, data, ["relu1", "relu3"], b, ["relu2"], method="tcav", options=options,
                                  batch_size=32, progress=False)
    va = nsi.concept_vectors(a, data, ["relu1", "relu3"], method="tcav", options=options, batch_size=32,
                             progress=False)
    vb = nsi.concept_vectors(b, data, "relu2", method="tcav", options=options, batch_size=32, progress=False)
    test = held_out(len(data))[1]
    sb = _outputs(b, data, "relu2", test).mean(axis=(2, 3)) @ vb.vectors.astype(np.float64).T
    for i, layer in enumerate(["relu1", "relu3"]):
        sa = _outputs(a, data, layer, test).mean(axis=(2, 3)) @ va[layer].vectors.astype(np.float64).T
        expected = [np.corrcoef(sa[:, k], sb[:, k])[0, 1] for k in range(sa.shape[1])]
        np.testing.assert_allclose(result.per_concept[i, 0], expected, atol=1e-6)   # float32 channel means
        np.testing.assert_array_equal(result.quality_a[i], va[layer].accuracy)
    assert result.quality_floor == 0.7


def test_biased_cka_over_small_minibatches_warns(data, models):
    with pytest.warns(BiasedCKAWarning, match="debiased=True"):
        nsi.layer_similarity(models[0], data, LAYERS, features="flatten", debiased=False, batch_size=32,
                             progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiasedCKAWarning)
        nsi.layer_similarity(models[0], data, LAYERS, features="flatten", batch_size=32, progress=False)


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------
def test_the_result_as_tables_and_files(tmp_path, data, models):
    result = _similarity(models[0], data, method="net2vec")
    table = result.to_pandas()
    assert len(table) == 9 and {"layer_a", "layer_b", "depth_a", "depth_b", "value", "concepts_counted"} <= set(table)
    np.testing.assert_allclose(result.depth_a, [1 / 3, 2 / 3, 1.0])
    matches = result.best_matches()
    assert list(matches["layer_b"]) == LAYERS            # every layer is most similar to itself
    agreement = result.concept_agreement("relu1", "relu3")
    assert list(agreement["concept"]) == data.concepts and agreement["agreement"].shape == (4,)
    loaded = load_similarity(result.save(tmp_path / "s"))
    assert isinstance(loaded, LayerSimilarity) and loaded.concepts == result.concepts
    np.testing.assert_array_equal(loaded.matrix, result.matrix)
    np.testing.assert_array_equal(loaded.per_concept, result.per_concept)
    cka = load_similarity(_similarity(models[0], data).save(tmp_path / "c"))
    assert cka.per_concept is None and cka.method == "cka"
    with pytest.raises(InputError, match="no concepts"):
        cka.concept_agreement("relu1", "relu2")


@pytest.mark.parametrize("kwargs, phrase", [
    ({"method": "svcca"}, "method must be one of"),
    ({"model_b": "x"}, "model_b must be"),
    ({"model_b": make_bn_cnn(1)}, "give layers_b"),
    ({"features": "mean"}, "features must be one of"),
    ({"method": "net2vec", "options": CAVOptions()}, "must be a Net2VecOptions"),
    ({"preprocess_b": 3}, "preprocess_b"),
])
def test_bad_arguments_are_clear_errors(kwargs, phrase, data, models):
    with pytest.raises(InputError, match=phrase):
        nsi.layer_similarity(models[0], data, LAYERS, progress=False, **kwargs)


def test_concept_measures_need_concept_data(models):
    plain = [Squares(8)[i][0] for i in range(8)]
    with pytest.raises(InputError, match="must be concept data"):
        nsi.layer_similarity(models[0], plain, LAYERS, method="tcav", progress=False)
    assert np.isfinite(nsi.layer_similarity(models[0], plain, LAYERS, progress=False).matrix).all()


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------
def test_charts_show_the_matrix_the_clicked_pair_and_quality_through_depth(data, models):
    from plotly.callbacks import Points

    from nsi_widgets.widgets.similarity import (SimilarityExplorer, concept_agreement_chart, concept_quality_chart,
                                                similarity_heatmap)

    result = _similarity(models[0], data, models[1], method="net2vec", layers_b=LAYERS)
    heat = similarity_heatmap(result)
    np.testing.assert_array_equal(np.asarray(heat.data[0].z, dtype=float), result.matrix)
    assert list(heat.data[0].x) == LAYERS
    deep = similarity_heatmap(result, relative_depth=True)
    np.testing.assert_allclose(deep.data[0].y, result.depth_a)
    bars = concept_agreement_chart(result, "relu1", "relu2")
    np.testing.assert_allclose(bars.data[0].y, np.nan_to_num(result.per_concept[0, 1]))
    explorer = SimilarityExplorer(result, relative_depth=True)
    explorer._on_click(explorer.heatmap.data[0], Points(point_inds=[[2, 0]], xs=[result.depth_b[0]],
                                                        ys=[result.depth_a[2]], trace_name="", trace_index=0), None)
    assert explorer.selected == ("relu3", "relu1")
    np.testing.assert_allclose(explorer.bars.data[0].y, np.nan_to_num(result.per_concept[2, 0]))
    quality = concept_quality_chart(result)
    assert len(quality.data) == 2 * len(data.concepts)            # a line per concept and model
    np.testing.assert_allclose(quality.data[0].y, result.quality_a[:, 0])
    vectors = {"A": nsi.concept_vectors(models[0], data, LAYERS, options=OPTIONS["net2vec"], batch_size=32,
                                        progress=False)}
    by_category = concept_quality_chart(vectors, by="category")
    assert [t.name for t in by_category.data] == ["colour", "place"]
    np.testing.assert_allclose(by_category.data[0].y, vectors["A"].quality()[:, :3].mean(axis=1))
    cka_view = SimilarityExplorer(_similarity(models[0], data))
    cka_view.select("relu1", "relu2")
    assert "relu1" in cka_view._note.value and not cka_view.bars.data


# ---------------------------------------------------------------------------------------------
# Several processes
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path):
    """Batch b runs on rank b % 2 and the states are merged: the integer tallies, kept samples and
    activations merge exactly (Net2Vec's vectors and IoUs bit for bit), the float sums of CKA and of
    the correlations' co-moments to 1e-12 relative."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    child = Path(__file__).with_name("_concepts_child.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(child.parent), str(child.parents[1])]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    out = tmp_path / "run"
    single = subprocess.run([sys.executable, str(child), "0", "1", port, str(tmp_path / "single")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ranks = [subprocess.Popen([sys.executable, str(child), str(r), "2", port, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in ranks:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    one = np.load(tmp_path / "single.rank0.npz")
    for key in [k for k in one.files if k.startswith("dissect_readers_both")]:   # batch readers = items
        np.testing.assert_array_equal(one[key], one[key.replace("readers_", "")], err_msg=key)
    for rank in range(2):
        two = np.load(f"{out}.rank{rank}.npz")
        for key in one.files:
            if key.startswith(("net2vec", "dissect")):
                np.testing.assert_array_equal(two[key], one[key], err_msg=key)
            else:
                np.testing.assert_allclose(two[key], one[key], rtol=1e-12, atol=1e-14, err_msg=key)
