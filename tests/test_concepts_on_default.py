"""Concept vectors and layer similarity on the embedded default's two trained models (shipped weights;
docs/methods.md section 8): Net2Vec's combination against the best single unit, TCAV's "red" against
the colours of the 240 classes and a random concept against its significance, and the paper's
relative-depth finding between the ShapesCNN and the ShapesResNet, shown in the SimilarityExplorer.

The ground truth is the generator's: the concept masks, the class colours. Expected fractions are
the documented ones (docs/methods.md section 8), measured once; the test asserts the claim with the
margin stated at each assertion."""
import numpy as np
import pytest
import torch

import nsi_widgets as nsi
from nsi_widgets import zoo
from _models import ListDataset

pytestmark = [pytest.mark.filterwarnings("ignore:receptive field of layer")]

CONCEPT_IMAGES = 800          # zoo.load_concepts("shapes", n=800, seed=4): 600 fit, 200 held out
PER_CLASS = 8                 # TCAV target images per class: 1,920 images of seed 3 (the index split's seed)


@pytest.fixture(scope="module")
def cnn():
    return zoo.load_model("cnn")


@pytest.fixture(scope="module")
def resnet():
    return zoo.load_model("resnet")


@pytest.fixture(scope="module")
def concepts():
    return zoo.load_concepts("shapes", n=CONCEPT_IMAGES, seed=4)


# ---------------------------------------------------------------------------------------------
# Net2Vec: the combination of units beats the best single unit (Fong & Vedaldi 2018's finding)
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_net2vec_combination_beats_the_best_single_unit_for_most_shapes_in_the_deepest_layer(cnn, concepts):
    """conv5, default options (raw activations, SGD). The single unit: each unit's map upsampled and
    thresholded at Network Dissection's rule (top 0.5 % quantile of its activations over all positions
    of all concept images), set IoU on the same held-out images (``details["best_unit_iou"]``, equal
    to a numpy brute force in test_concept_vectors.py), the best unit per concept; and, independently,
    the best unit of ``nsi.concepts.dissect`` on all 800 images. "Most" = at least 5 of the 6 shape
    concepts (measured: 6 of 6, IoU 0.18-0.30 against 0.05-0.12)."""
    cv = nsi.concept_vectors(cnn, concepts, "conv5", progress=False)
    shapes = [k for k, c in enumerate(concepts.concept_categories) if c == "shape"]
    assert [concepts.concepts[k] for k in shapes] == list(zoo.SHAPE_KINDS)
    beats = cv.iou[shapes] > cv.details["best_unit_iou"][shapes]
    assert beats.sum() >= 5, dict(zip(zoo.SHAPE_KINDS, zip(cv.iou[shapes], cv.details["best_unit_iou"][shapes])))
    dissection = nsi.concepts.dissect(cnn, concepts, "conv5", progress=False)["conv5"]
    assert (cv.iou[shapes] > dissection.iou[:, shapes].max(axis=0)).sum() >= 5
    # against the ground truth: far above the trivial probe that marks every pixel of every held-out image
    order = np.random.default_rng(0).permutation(len(concepts))     # the documented split (seed 0, 25 %)
    masks = concepts.masks(np.sort(order[:int(round(0.25 * len(concepts)))]))
    everything = masks.mean(axis=(0, 2, 3))                      # IoU of "all pixels" with the masks
    assert (cv.iou[shapes] > 3 * everything[shapes]).all()


# ---------------------------------------------------------------------------------------------
# TCAV: which layer, "red" against the classes' colours, a random concept
# ---------------------------------------------------------------------------------------------
def _logit_gradients(model, layer, images, target):
    module = dict(model.named_modules())[layer]
    kept = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        kept.append(output)

    handle = module.register_forward_hook(keep)
    try:
        model(images.requires_grad_(True))[:, target].sum().backward()
    finally:
        handle.remove()
    return kept[0].grad


def test_the_deepest_conv_layers_class_gradient_is_the_same_for_every_image(cnn):
    """With global average pooling and one linear layer after conv5, d logit_c / d conv5(y, x) =
    fc.weight[c] / (h w) at every position of every image: every TCAV run at conv5 scores 0 or 1.
    conv4's passes through conv5's ReLU and pool4's maxima, so it differs from image to image."""
    data = zoo.make_shapes(4, seed=11)
    images = torch.stack([data[i][0] for i in range(4)])
    with torch.enable_grad():
        deep = _logit_gradients(cnn, "conv5", images.clone(), 17)
        earlier = _logit_gradients(cnn, "conv4", images.clone(), 17)
    expected = (cnn.fc.weight[17] / (deep.shape[2] * deep.shape[3]))[None, :, None, None].expand_as(deep)
    torch.testing.assert_close(deep, expected, rtol=1e-6, atol=1e-9)
    pooled = earlier.sum(dim=(2, 3))
    assert (pooled - pooled[0]).abs().max() > 0.1 * pooled.abs().max()


@pytest.fixture(scope="module")
def labelled():
    return zoo.load("shapes", n=240 * PER_CLASS, seed=3)[1]


@pytest.mark.slow
def test_tcav_red_is_significant_for_the_red_classes_and_not_positive_for_most_others(cnn, concepts, labelled):
    """ShapesCNN conv4 (the deepest layer whose class gradient varies by image, see above), "red" =
    concept images with a red shape, 10 + 10 runs, all 240 classes (8 images each).

    Measured: all 24 red classes significant, score 1.00, CAV accuracy 0.98. The two hue neighbours of
    red, orange and magenta, are raised too (20 of 48 significant positive: a red direction that a
    little orange or magenta shares). Of the 168 classes of the other seven colours, 5 (3.0 %) are
    significant in the positive direction: the model's own small positive sensitivities (e.g. "green
    star on gradient", score 1.0 against 0.52 for random CAVs), not an error of the test; 100 are
    significant in the negative direction ("red lowers this class", scores near 0). Asserted: every red
    class significant with score >= 0.8; at most 5 % of the seven other colours' classes, and at most
    15 % of all non-red classes (measured 11.6 %), significant and positive; every significant negative
    result has a score below 0.5."""
    red = nsi.tcav(cnn, "conv4", "red", data=labelled, concept_data=concepts, n_runs=10,
                   max_target_images=PER_CLASS, progress=False)
    colour = np.array([labelled.class_hierarchies["colour"][name] for name in labelled.classes])[red.classes]
    positive = red.significant & (red.direction > 0)
    is_red = colour == "red"
    assert is_red.sum() == 24 and red.learnable
    assert red.significant[is_red].all() and (red.score[is_red] >= 0.8).all() and (red.p_value[is_red] < 0.05).all()
    far = ~np.isin(colour, ["red", "orange", "magenta"])
    assert far.sum() == 168 and positive[far].mean() <= 0.05
    assert positive[~is_red].mean() <= 0.15
    negative = red.significant & (red.direction < 0)
    assert negative[~is_red].sum() >= 50 and (red.score[negative] < 0.5).all()


@pytest.mark.slow
def test_a_random_concept_is_significant_for_at_most_a_tenth_of_the_classes(cnn, concepts, labelled):
    """100 concept images drawn at random (their masks ignored) against random images of the same
    pool: the classifiers cannot tell them apart (held-out accuracy near 0.5), and the accuracy floor
    (0.7) keeps the test from marking them significant. Measured with three draws: accuracy
    0.45-0.55, significant for 0 of 240 classes; by the p-value alone (no floor) for 45-72 of 240
    (19-30 %), the plain protocol's weakness the floor remedies (asserted: > 10 % without it)."""
    rng = np.random.default_rng(9)
    chosen = rng.choice(len(concepts), 100, replace=False)
    random_concept = ListDataset([concepts[int(i)][0] for i in chosen])
    result = nsi.tcav(cnn, "conv4", random_concept, data=labelled, random_data=concepts, n_runs=10,
                      max_target_images=PER_CLASS, progress=False)
    assert len(result.classes) == 240
    assert np.mean(result.accuracies) < 0.6 and not result.learnable
    assert result.significant.mean() <= 0.10
    assert (result.p_values < 0.05).mean() > 0.10          # what the floor prevents


# ---------------------------------------------------------------------------------------------
# The paper's finding: similar concepts at similar relative depth, in both architectures
# ---------------------------------------------------------------------------------------------
def _depth_gaps(similarity):
    best = np.nanargmax(similarity.matrix, axis=1)
    return best, np.abs(similarity.depth_a - similarity.depth_b[best])


@pytest.fixture(scope="module")
def pair_data():
    return zoo.load_concepts("shapes", n=600, seed=4)


@pytest.fixture(scope="module")
def pair_similarity(cnn, resnet, pair_data):
    """``compare(method)``: the two models' conv layers compared on ``pair_data`` (computed once)."""
    done = {}

    def compare(method):
        if method not in done:
            done[method] = nsi.layer_similarity(cnn, pair_data, zoo.conv_layers(cnn), resnet, zoo.conv_layers(resnet),
                                                method=method, progress=False)
        return done[method]
    return compare


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cka", "tcav", "net2vec"])
def test_each_cnn_layer_is_most_similar_to_the_resnet_layer_at_a_similar_relative_depth(method, pair_similarity):
    """ShapesCNN conv1..conv5 against ShapesResNet stem, block1..block4 on 600 concept images (150
    held out for the concept measures). A random match is 0.32 off in relative depth on average;
    measured mean gaps of the best matches: CKA 0.08, TCAV 0.04, Net2Vec 0.04 (same at 2,000 images:
    0.08, 0.08, 0.04). Asserted: a mean gap <= 0.12, no gap above 0.2 (one layer), the first layers
    matched to each other and the deepest to block3 or block4, and the matches in depth order."""
    s = pair_similarity(method)
    b = s.layers_b
    assert s.layers_a == ["conv1", "conv2", "conv3", "conv4", "conv5"] and s.matrix.shape == (5, 5) and np.isfinite(s.matrix).all()
    best, gaps = _depth_gaps(s)
    random_gap = np.abs(s.depth_a[:, None] - s.depth_b[None, :]).mean()
    assert random_gap == pytest.approx(0.32)
    assert gaps.mean() <= 0.12 and gaps.max() <= 0.2 + 1e-9, (method, [b[j] for j in best])
    assert best[0] == 0 and best[-1] >= 3 and (np.diff(best) >= 0).all()


@pytest.mark.slow
def test_the_similarity_explorer_on_the_two_default_models(pair_similarity, pair_data):
    from plotly.callbacks import Points

    from nsi_widgets.widgets.similarity import SimilarityExplorer, concept_quality_chart

    s = pair_similarity("tcav")
    explorer = SimilarityExplorer(s, relative_depth=True, labels=("ShapesCNN", "ShapesResNet"))
    np.testing.assert_allclose(np.asarray(explorer.heatmap.data[0].z, dtype=float), s.matrix)
    assert "ShapesCNN" in explorer.heatmap.layout.yaxis.title.text
    assert "ShapesResNet" in explorer.heatmap.layout.xaxis.title.text
    explorer._on_click(explorer.heatmap.data[0], Points(point_inds=[[3, 3]], xs=[s.depth_b[3]], ys=[s.depth_a[3]],
                                                        trace_name="", trace_index=0), None)
    assert explorer.selected == ("conv4", "block3")
    np.testing.assert_allclose(explorer.bars.data[0].y, np.nan_to_num(s.per_concept[3, 3]))
    assert list(explorer.bars.data[0].x) == list(pair_data.concepts)
    quality = concept_quality_chart(s, by="category", labels=("ShapesCNN", "ShapesResNet"))
    shapes = [k for k, c in enumerate(pair_data.concept_categories) if c == "shape"]
    np.testing.assert_allclose(quality.data[0].y, s.quality_a[:, shapes].mean(axis=1))
    # shapes become separable with depth in both models (TCAV accuracy, first layer to last)
    for q in (s.quality_a, s.quality_b):
        assert q[-1, shapes].mean() > q[0, shapes].mean() + 0.25
