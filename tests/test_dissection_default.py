"""Network Dissection on the embedded default's concept set (docs/methods.md section 7, docs/zoo.md):
planted units with a known answer, and the trained ShapesCNN against its colour index."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import nsi_widgets as nsi
from nsi_widgets import zoo

N_CONCEPT_IMAGES = 300
HUE_LIMIT = 14.0     # degrees: the shapes' reds have hue 0 +- 8 (zoo/shapes.py), orange starts at 20, magenta ends at -47
MIN_CHROMA = 0.3     # a red shape's pixels have R - G, R - B >= 0.34 (V, S >= 0.8, edges half covered); backgrounds < 0.2
PENALTY = 1e4


@pytest.fixture(scope="module")
def concepts():
    return zoo.load_concepts("shapes", n=N_CONCEPT_IMAGES, seed=11)


def red_unit_model() -> nn.Module:
    """Two 1x1 convolutions whose one output channel fires exactly on the red pixels of the shapes palette.

    Red, as the generator draws it, is a hue within 8 degrees of 0 at saturation and value >= 0.8
    (``zoo/shapes.py``, ``_PALETTE``). A pixel counts as red when four linear inequalities hold:
    hue <= 14 degrees on either side (``14R - 60G + 46B >= 0`` and ``14R + 46G - 60B >= 0`` for
    a pixel whose largest channel is R) and ``R - G >= 0.3``, ``R - B >= 0.3``. The first layer
    computes ``R - (G + B) / 2`` and the four violations ``max(0, -l_i)``; the unit is
    ``relu(relu(R - (G + B) / 2) - 1e4 * sum of violations)``. Pixel values are multiples of 1/255,
    so a violated inequality is violated by at least 0.002 and the penalty wins: the unit is
    positive exactly where all four hold, and there it grows with the redness ``R - (G + B) / 2``.
    """
    first, second = nn.Conv2d(3, 5, 1), nn.Conv2d(5, 1, 1)
    with torch.no_grad():
        first.weight[:, :, 0, 0] = torch.tensor([
            [1.0, -0.5, -0.5],                                  # redness R - (G + B) / 2
            [-HUE_LIMIT / 60, 1.0, -(60 - HUE_LIMIT) / 60],     # -(hue limit, G >= B side) / 60
            [-HUE_LIMIT / 60, -(60 - HUE_LIMIT) / 60, 1.0],     # -(hue limit, B >= G side) / 60
            [-1.0, 1.0, 0.0],                                   # -(R - G - 0.3)
            [-1.0, 0.0, 1.0],                                   # -(R - B - 0.3)
        ], dtype=torch.float64).float()
        first.bias[:] = torch.tensor([0.0, 0.0, 0.0, MIN_CHROMA, MIN_CHROMA])
        second.weight[0, :, 0, 0] = torch.tensor([1.0, -PENALTY, -PENALTY, -PENALTY, -PENALTY])
        second.bias.zero_()
    return nn.Sequential(OrderedDict(features=first, violations=nn.ReLU(), red=second, fires=nn.ReLU())).eval()


def _outputs(model, concepts) -> np.ndarray:
    with torch.no_grad():
        return model(concepts.shapes.images()).numpy()[:, 0].astype(np.float64)     # (n, H, W)


def test_a_unit_planted_on_red_pixels_detects_red(concepts):
    model = red_unit_model()
    values = _outputs(model, concepts)
    fires = values > 0
    red = concepts.masks()[:, concepts.concepts.index("red")]
    share = fires.mean()
    assert 0.005 < share < 0.05
    expected = (fires & red).sum() / (fires | red).sum()          # the unit's pixels against the mask, counted here
    assert expected >= 0.9

    # At a quantile equal to the share it fires on, the threshold falls between its zeros and its smallest
    # positive value: the thresholded map is exactly where it fires.
    result = nsi.dissect(model, concepts, "fires", quantile=float(share), progress=False)["fires"]
    k = result.concepts.index("red")
    assert result.best_concept_names == ["red"]
    assert result.iou[0, k] >= 0.8
    assert result.iou[0, k] == pytest.approx(expected, rel=1e-6)
    assert result.above_share[0] == pytest.approx(share, rel=1e-12)

    # At the default quantile 0.005 it keeps only its reddest 0.5 % of pixels. A concept covering more
    # pixels than that cannot reach a higher IoU than the ratio of the two shares:
    # IoU = |M & L| / |M | L| <= |M| / |L|, with |M| <= 0.005 N + 1 (N positions, the quantile rule).
    default = nsi.dissect(model, concepts, "fires", progress=False)["fires"]
    n_positions = fires.size
    cap = (0.005 * n_positions + 1) / red.sum()
    assert red.mean() > 0.005 and cap < 0.6
    assert default.iou[0, k] <= cap
    assert default.iou[0, k] >= 0.9 * cap                  # its reddest pixels all lie on red shapes
    assert default.best_concept_names == ["red"]          # still the best, and above the 0.04 of a detector


class _NoiseMaps:
    """Forward hooks that replace every unit's map of the given layers by independent Gaussian noise.

    The noise of each image is drawn from a generator seeded by the image's pixels (so both passes of
    dissect see the same maps), independent of anything the image shows. The receptive fields stay the
    layers' own (the hooks stand aside while torch.fx traces the model)."""

    def __init__(self, model, layers):
        self.seeds = None
        self.handles = [model.register_forward_pre_hook(self._remember)]
        modules = dict(model.named_modules())
        self.handles += [modules[name].register_forward_hook(self._replace) for name in layers]

    def _remember(self, module, args):
        if not isinstance(args[0], torch.Tensor):      # torch.fx tracing the geometry: leave the layers alone
            self.seeds = None
            return
        pixels = torch.round(args[0].double() * 255).flatten(1)
        self.seeds = (pixels * torch.arange(1, pixels.shape[1] + 1, dtype=torch.float64) % 2**31).sum(1).long()

    def _replace(self, module, args, output):
        if self.seeds is None or not isinstance(output, torch.Tensor):
            return None
        maps = [torch.randn(output.shape[1:], generator=torch.Generator().manual_seed(int(s) + output.shape[1]))
                for s in self.seeds]
        return torch.stack(maps)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def test_units_of_independent_noise_detect_no_concept(concepts):
    model = zoo.load_model("cnn")
    layers = zoo.conv_layers(model)
    hooks = _NoiseMaps(model, layers)
    try:
        result = nsi.dissect(model, concepts, layers, progress=False)
    finally:
        hooks.remove()
    for layer in layers:
        L = result[layer]
        assert (L.best_concept == -1).all(), (layer, L.best_concept_names)
        # a random 0.5 % of the pixels: its IoU with any concept is at most about 0.005
        assert L.best_iou.max() < 0.02, (layer, float(L.best_iou.max()))


# ---------------------------------------------------------------------------------------------
# The trained default: colour-selective units (the paper's colour index) detect colour concepts
# ---------------------------------------------------------------------------------------------
FIRST_LAYERS = {"cnn": ["conv1", "conv2", "conv3"], "resnet": ["stem", "block1", "block2"]}
COLOUR_SELECTIVE = 0.9      # colour index alpha above this: the unit's top images lose it in grey
MOSTLY = 0.75               # docs/zoo.md, "Network Dissection on the default": at least this share gets a colour
N_INDEX_IMAGES = 2400       # 10 per class of the default index split
N_DISSECTION_IMAGES = 500


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["cnn", "resnet"])
def test_colour_selective_units_of_the_trained_default_detect_colours(arch):
    model = zoo.load_model(arch)
    layers = FIRST_LAYERS[arch]
    data = zoo.make_shapes(N_INDEX_IMAGES, seed=zoo.INDEX_SEED)
    idx = nsi.index_neurons(model, data, layers, indexes=("color",), neuron_features=None, progress=False)
    concepts = zoo.load_concepts("shapes", n=N_DISSECTION_IMAGES)
    result = nsi.dissect(model, concepts, layers, progress=False)
    colours = set(zoo.COLORS)
    found = []
    for layer in layers:
        alpha = idx[layer].color_selectivity
        names = result[layer].best_concept_names
        found += [(layer, int(u), names[u]) for u in np.flatnonzero(alpha > COLOUR_SELECTIVE)]
    assert len(found) >= 5, found                   # enough units for "mostly" to mean something
    share = np.mean([name in colours for _, _, name in found])
    assert share >= MOSTLY, found                    # measured: 6 of 6 (cnn), 9 of 9 (resnet)
