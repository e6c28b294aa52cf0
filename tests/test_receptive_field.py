"""Receptive fields (METHODS.md section 2): published values, empirical vs analytic, brute force."""
from __future__ import annotations

import math
import random
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from nsi_widgets.core.receptive_field import ReceptiveField, receptive_field

torch.set_num_threads(1)
# Random chains use padding="same" with even kernels, about which PyTorch warns (harmless here).
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


def _square(size, stride, padding, method="analytic"):
    return ReceptiveField((size, size), (stride, stride), (padding, padding), method)


# --------------------------------------------------------------------------------------------
# Models in torchvision's layouts (no torchvision, no weights)

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    """torchvision vgg16 layout; ``width`` divides the channel counts (geometry is unchanged)."""

    def __init__(self, width: int = 1):
        super().__init__()
        layers, channels = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, v // width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = v // width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(channels * 49, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    """torchvision alexnet layout (conv1 has padding 2)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Linear(256 * 36, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class Bottleneck(nn.Module):
    """torchvision Bottleneck (ResNet v1.5: the stride is on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet50(nn.Module):
    """torchvision resnet50 layout; ``base`` is the stem width (64 in torchvision)."""

    def __init__(self, base: int = 64):
        super().__init__()
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(base, 3)
        self.layer2 = self._make_layer(base * 2, 4, stride=2)
        self.layer3 = self._make_layer(base * 4, 6, stride=2)
        self.layer4 = self._make_layer(base * 8, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(base * 32, 10)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------------------------
# Published values (METHODS.md section 2), analytic

VGG16_PUBLISHED = {  # torchvision index: (size, stride, padding)
    0: (3, 1, 1), 4: (6, 2, 2), 5: (10, 2, 4), 9: (16, 4, 6), 10: (24, 4, 10), 16: (44, 8, 18),
    17: (60, 8, 26), 23: (100, 16, 42), 24: (132, 16, 58), 28: (196, 16, 90), 30: (212, 32, 90)}


@pytest.fixture(scope="module")
def vgg16():
    torch.manual_seed(0)
    return VGG16()


@pytest.mark.parametrize("index", sorted(VGG16_PUBLISHED))
def test_vgg16_published_values(vgg16, index):
    expected = _square(*VGG16_PUBLISHED[index])
    assert receptive_field(vgg16, f"features.{index}", method="analytic") == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto must not warn when the analytic method works
        assert receptive_field(vgg16, f"features.{index}") == expected


def test_vgg16_relu_keeps_geometry_and_module_object_is_accepted(vgg16):
    # features.1 is the ReLU after conv1_1, features.29 the ReLU after conv5_3.
    assert receptive_field(vgg16, "features.1") == _square(3, 1, 1)
    assert receptive_field(vgg16, vgg16.features[29]) == _square(196, 16, 90)
    assert receptive_field(vgg16, "features") == _square(212, 32, 90)


def test_alexnet_published_values():
    torch.manual_seed(0)
    model = AlexNet()
    assert receptive_field(model, "features.10", method="analytic") == _square(163, 16, 66)  # conv5
    assert receptive_field(model, "features.12", method="analytic") == _square(195, 32, 66)  # pool5


def test_resnet50_published_values():
    torch.manual_seed(0)
    model = ResNet50()
    # Paddings by hand from P = sum p_l prod_{i<l} s_i along the longest path (the 3x3 convs; the
    # 1x1 downsample windows lie inside): stem conv 3 + maxpool 1*2 = 5 (RF 11, stride 4);
    # layer1: +1*4 per block -> 17; layer2: +1*4 (stride-2 3x3) then +1*8 x3 -> 45;
    # layer3: +1*8 then +1*16 x5 -> 133; layer4: +1*16 then +1*32 x2 -> 213.
    assert receptive_field(model, "layer1", method="analytic") == _square(35, 4, 17)
    assert receptive_field(model, "layer2", method="analytic") == _square(91, 8, 45)
    assert receptive_field(model, "layer3", method="analytic") == _square(267, 16, 133)
    assert receptive_field(model, "layer4", method="analytic") == _square(427, 32, 213)
    # The downsample branch of layer2's first block sees layer1's field through a 1x1 stride-2 conv.
    assert receptive_field(model, "layer2.0.downsample", method="analytic") == _square(35, 8, 17)
    assert receptive_field(model, "maxpool", method="analytic") == _square(11, 4, 5)


# --------------------------------------------------------------------------------------------
# Empirical measurement


def _measurable(geometry, n_in, n_out):
    """Whether one axis can be measured (see `receptive_field` Notes): the windows of two units
    start, or of two units end, strictly inside the pixels seen by the layer, and at least one of
    each kind."""
    size, stride, padding = geometry
    starts = [u * stride - padding for u in range(n_out)]
    lo, hi = max(0, starts[0]), min(n_in - 1, starts[-1] + size - 1)
    inside_starts = sum(s > lo for s in starts)
    inside_ends = sum(s + size - 1 < hi for s in starts)
    return inside_starts >= 1 and inside_ends >= 1 and (inside_starts >= 2 or inside_ends >= 2)


def _output_shape(model, name, shape):
    out = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: out.append(o.shape))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, dtype=next(model.parameters(), torch.zeros(())).dtype))
    except RuntimeError:
        pass  # layers after the one of interest may reject the size
    finally:
        handle.remove()
    return out[0][2:] if out else None


def _smallest_measurable_size(model, name, expected: ReceptiveField, channels=3, start=4):
    for n in range(start, 400):
        out = _output_shape(model, name, (channels, n, n))
        if out is None or min(out) < 1:
            continue
        if all(_measurable((expected.size[a], expected.stride[a], expected.padding[a]), n, out[a])
               for a in range(2)):
            return n
    raise AssertionError("no measurable input size")


@pytest.mark.parametrize("index, input_size", [(10, 64), (23, 128), (28, 128), (30, 160)])
def test_vgg16_empirical_matches_published_values(index, input_size):
    torch.manual_seed(0)
    model = VGG16(width=16)  # same geometry, 16x fewer channels
    size, stride, padding = VGG16_PUBLISHED[index]
    assert receptive_field(model, f"features.{index}", input_size=input_size,
                           method="empirical") == _square(size, stride, padding, "empirical")
    if index in (28, 30):
        assert size > input_size  # the field exceeds the input; corner units still see an edge


def test_resnet50_empirical_matches_hand_values():
    torch.manual_seed(0)
    model = ResNet50(base=2)
    assert receptive_field(model, "layer1", input_size=64, method="empirical") == _square(35, 4, 17, "empirical")
    assert receptive_field(model, "layer3", input_size=176, method="empirical") == _square(267, 16, 133, "empirical")


def _chain_reference(specs):
    """METHODS.md formulas, literally, for a chain of (kernel, stride, padding, dilation) per axis."""
    axes = []
    for axis in range(2):
        chain = [(d[axis] * (k[axis] - 1) + 1, s[axis], p[axis]) for k, s, p, d in specs]
        prods = [math.prod(s for _, s, _ in chain[:i]) for i in range(len(chain))]
        size = 1 + sum((k - 1) * prods[i] for i, (k, _, _) in enumerate(chain))
        stride = math.prod(s for _, s, _ in chain)
        padding = sum(p * prods[i] for i, (_, _, p) in enumerate(chain))
        axes.append((size, stride, padding))
    return ReceptiveField((axes[0][0], axes[1][0]), (axes[0][1], axes[1][1]), (axes[0][2], axes[1][2]))


def _random_chain(seed, dilation=True, holes=True):
    """Random Sequential CNN and, per geometric layer, its name and (k, s, p, d) per axis."""
    rng = random.Random(seed)
    layers, specs, checkpoints, channels, total_stride = [], [], [], 3, [1, 1]
    for _ in range(rng.randint(3, 6)):
        kind = rng.choice(["conv", "conv", "max", "avg"])
        k = tuple(rng.randint(1 if kind == "conv" else 2, 5 if kind == "conv" else 3) for _ in range(2))
        s = tuple(rng.choice([1, 2]) if total_stride[a] < 8 else 1 for a in range(2))
        if not holes:
            s = tuple(min(si, ki) for si, ki in zip(s, k))
        d = tuple(rng.choice([1, 2]) if dilation and (kind != "avg") else 1 for _ in range(2))
        if kind == "conv":
            mode = rng.choice(["int", "int", "same", "valid"])
            if mode == "same" and s == (1, 1):
                padding, p = "same", tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))  # PyTorch: left = total // 2
            elif mode == "valid":
                padding, p = "valid", (0, 0)
            else:
                padding = p = tuple(rng.randint(0, ki - 1) for ki in k)
            layers.append(nn.Conv2d(channels, 4, k, stride=s, padding=padding, dilation=d))
            channels = 4
        else:
            p = tuple(rng.randint(0, ki // 2) for ki in k)
            ceil = rng.random() < 0.5
            if kind == "max":
                layers.append(nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil))
            else:
                layers.append(nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil))
        specs.append((k, s, p, d))
        checkpoints.append((str(len(layers) - 1), list(specs)))
        total_stride = [total_stride[a] * s[a] for a in range(2)]
        if kind == "conv":
            layers.append(rng.choice([nn.ReLU(), nn.BatchNorm2d(4), nn.Identity()]))
            checkpoints.append((str(len(layers) - 1), list(specs)))
    return nn.Sequential(*layers), checkpoints


def _check_empirical(model, name, expected: ReceptiveField):
    """The empirical method on inputs from the smallest measurable size up: it either returns the
    expected field or raises (borders too close to tell), and it answers on the larger inputs."""
    n = _smallest_measurable_size(model, name, expected)
    stride = max(expected.stride)
    sizes = [n, n + 1, n + 2, n + stride + 3, n + 3 * stride + 4]
    answered = []
    for size in sizes:
        try:
            measured = receptive_field(model, name, input_size=size, method="empirical")
        except ValueError as err:
            assert "input_size" in str(err), err  # the message says to enlarge the input
            continue
        assert measured == ReceptiveField(expected.size, expected.stride, expected.padding, "empirical"), \
            (name, size)
        answered.append(size)
    assert sizes[-2] in answered and sizes[-1] in answered, (name, answered)
    return answered


@pytest.mark.parametrize("seed", range(6))
def test_empirical_agrees_with_analytic_on_random_chains(seed):
    torch.manual_seed(seed)
    model, checkpoints = _random_chain(seed)
    model.eval()
    for name, specs in checkpoints:
        expected = _chain_reference(specs)
        assert receptive_field(model, name, method="analytic") == expected, name
        _check_empirical(model, name, expected)


def test_empirical_field_larger_than_input():
    # Five 5x5 convs with padding 2: size 21, stride 1, padding 10, measured on a 16x16 input.
    model = nn.Sequential(*[m for _ in range(5) for m in (nn.Conv2d(3, 3, 5, padding=2), nn.ReLU())])
    assert receptive_field(model, "8", input_size=16, method="empirical") == _square(21, 1, 10, "empirical")


class TinyResidual(nn.Module):
    """Residual, concatenated and gated branches, with modules and functional calls."""

    class Basic(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.downsample = nn.Conv2d(cin, cout, 1, stride=2)

        def forward(self, x):
            return F.relu(self.conv2(F.relu(self.conv1(x))) + self.downsample(x))

    class Mix(nn.Module):  # two branches whose windows overlap without nesting
        def __init__(self, c):
            super().__init__()
            self.a = nn.Conv2d(c, c, 3, padding=1)
            self.b = nn.Sequential(nn.ZeroPad2d((2, 0, 2, 0)), nn.Conv2d(c, c, 3))

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], dim=1)

    class Gate(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.g = nn.Conv2d(c, c, 5, padding=2)

        def forward(self, x):
            return x * torch.sigmoid(self.g(x))

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block1 = self.Basic(4, 4)
        self.mix = self.Mix(4)
        self.gate = self.Gate(8)
        self.block2 = Bottleneck(8, 2, stride=2, downsample=nn.Sequential(
            nn.Conv2d(8, 8, 1, stride=2), nn.BatchNorm2d(8)))

    def forward(self, x):
        x = self.gate(self.mix(self.block1(F.relu(self.stem(x)))))
        return self.block2(F.max_pool2d(x, 3, 2, 1))


# Derived by hand (hull of the branches' windows [y*S - P, y*S - P + r - 1]):
TINY_RESIDUAL = {
    "stem": (3, 1, 1),
    "block1.downsample": (3, 2, 1),
    "block1": (9, 2, 4),  # main: 3x3 s2 p1 -> (5, 2, 2), 3x3 p1 -> (9, 2, 4); shortcut (3, 2, 1) inside
    "mix.a": (13, 2, 6),
    "mix.b": (13, 2, 8),  # pad 2 on the top/left shifts by 2*2, then a valid 3x3
    "mix": (15, 2, 8),  # hull of [2y-6, 2y+6] and [2y-8, 2y+4]
    "gate": (23, 2, 12),  # the 5x5 gate conv: (23, 2, 12) contains x's (15, 2, 8)
    "block2": (35, 8, 18),  # max_pool2d(3, 2, 1) -> (27, 4, 14); 3x3 s2 p1 -> (35, 8, 18)
}


@pytest.mark.parametrize("name", sorted(TINY_RESIDUAL))
def test_residual_branches_analytic_and_empirical(name):
    torch.manual_seed(0)
    model = TinyResidual().eval()
    expected = _square(*TINY_RESIDUAL[name])
    assert receptive_field(model, name, method="analytic") == expected
    _check_empirical(model, name, expected)


def test_conv1d_chain():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool1d(3, 2, 1),
                          nn.Conv1d(4, 4, 3, dilation=2, padding=2))
    # conv (5, 2, 2); pool: 5 + 2*2 = 9, stride 4, 2 + 1*2 = 4; dilated conv k=5: 9 + 4*4 = 25, 4 + 2*4 = 12
    expected = ReceptiveField((1, 25), (1, 4), (0, 12))
    assert receptive_field(model, "3", method="analytic") == expected
    assert receptive_field(model, "3", input_size=(64,), method="empirical") == \
        ReceptiveField((1, 25), (1, 4), (0, 12), "empirical")


class Functional(nn.Module):
    """Geometry given by functional calls and a Conv2d subclass that fx traces through."""

    class WeightScaledConv(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(x, self.weight * 0.5, self.bias, self.stride, self.padding, self.dilation)

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3) * 0.3)
        self.conv = self.WeightScaledConv(4, 4, 3, padding=1, padding_mode="zeros")
        self.reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")

    def forward(self, x):
        x = F.pad(x, (1, 2, 3, 0))  # left, right, top, bottom
        x = F.conv2d(x, self.w, stride=2, padding=(1, 0), dilation=(1, 2))
        x = F.avg_pool2d(x, 3, 1, 1)
        x = x.relu().contiguous() * 2
        return self.reflect(self.conv(x))


def test_functional_calls():
    torch.manual_seed(0)
    model = Functional()
    # pad: P = (3, 1); conv 3x3 s2, padding (1, 0), dilation (1, 2): h (3, 2, 3 + 1 = 4),
    # w (k_eff 5: 5, 2, 1); avg_pool 3 s1 p1: h (3 + 2*2 = 7, 2, 4 + 2 = 6), w (5 + 4 = 9, 2, 1 + 2 = 3);
    # conv 3x3 p1: h (7 + 4 = 11, 2, 6 + 2 = 8), w (9 + 4 = 13, 2, 3 + 2 = 5).
    expected = ReceptiveField((11, 13), (2, 2), (8, 5))
    assert receptive_field(model, "conv", method="analytic") == expected
    with pytest.raises(ValueError, match=r"input_size=\(C, H, W\)"):  # first conv *module* takes 4 channels
        receptive_field(model, "conv", input_size=40, method="empirical")
    assert receptive_field(model, "conv", input_size=(3, 40, 40), method="empirical") == \
        ReceptiveField((11, 13), (2, 2), (8, 5), "empirical")
    # Reflection padding mirrors taps that stay inside the window: the same geometry as zeros.
    assert receptive_field(model, "reflect", method="analytic") == ReceptiveField((15, 17), (2, 2), (10, 7))
    assert receptive_field(model, "reflect", input_size=(3, 40, 40), method="empirical") == \
        ReceptiveField((15, 17), (2, 2), (10, 7), "empirical")


def test_empirical_sees_through_dead_relus_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))
    with torch.no_grad():
        model[0].bias.fill_(-1e3)  # every ReLU is off: the model's own gradients are all zero
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # conv (3, 1, 1); pool 2: (4, 2, 1); conv 3: (4 + 2*2 = 8, 2, 1)
    with torch.inference_mode():  # callers such as a scan may be in inference mode
        assert receptive_field(model, "3", input_size=20, method="empirical") == _square(8, 2, 1, "empirical")
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------------------------
# Errors and fallback


def test_unknown_layer_name_lists_valid_names():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"unknown layer 'conv9'.*'0'.*list_layers"):
        receptive_field(model, "conv9")
    with pytest.raises(ValueError, match="not a submodule"):
        receptive_field(model, nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="method"):
        receptive_field(model, "0", method="exact")
    with pytest.raises(ValueError, match="input_size"):
        receptive_field(model, "0", input_size=(1, 2, 3, 4))


@pytest.mark.parametrize("pool", [nn.AdaptiveAvgPool2d(4), nn.AdaptiveMaxPool2d(4)])
def test_adaptive_pool_analytic_error_auto_falls_back(pool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), pool)
    with pytest.raises(ValueError, match="Adaptive"):
        receptive_field(model, "2", method="analytic")
    # On a 16x16 input the adaptive pool to 4 has windows 4, stride 4: conv (3, 1, 1) -> (6, 4, 1).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = receptive_field(model, "2", input_size=16)
    assert [w.category for w in caught] == [UserWarning]
    assert "empirical" in str(caught[0].message)
    assert result == _square(6, 4, 1, "empirical")
    # The layer before the pool is still analytic.
    assert receptive_field(model, "1") == _square(3, 1, 1)


def test_uneven_adaptive_windows_are_not_guessed():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(4))
    # 18 -> 4 windows start at 0, 4, 9, 13: no single stride.
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no single receptive-field geometry"):
        receptive_field(model, "1", input_size=18)


class DataDependent(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        if x.sum() > -1e30:
            return self.conv(x)
        return self.conv(-x)


def test_untraceable_module_analytic_error_auto_falls_back():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), DataDependent(),
                          nn.Conv2d(4, 4, 3, padding=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert receptive_field(model, "0") == _square(3, 2, 1)
    expected = {"2": (7, 2, 3), "2.conv": (7, 2, 3), "3": (11, 2, 5)}
    for name, geometry in expected.items():
        with pytest.raises(ValueError, match="DataDependent|not reached"):
            receptive_field(model, name, method="analytic")
        with pytest.warns(UserWarning, match="empirical"):
            assert receptive_field(model, name, input_size=24) == _square(*geometry, "empirical")


class TwoStrides(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 2, stride=2)
        self.b = nn.Conv2d(3, 4, 5)

    def forward(self, x):  # on 8x8 both branches give 4x4 maps, with strides 2 and 1
        return self.a(x) + self.b(x)


def test_branches_with_different_strides():
    with pytest.raises(ValueError, match="different strides"):
        receptive_field(TwoStrides(), "", method="analytic")
    # Measured: unit y sees [2y, 2y+1] and [y, y+4]; on 8 pixels the hull is [y, y+4] for y < 4.
    with pytest.warns(UserWarning):
        assert receptive_field(TwoStrides(), "", input_size=8) == _square(5, 1, 0, "empirical")


def test_unknown_torch_module_is_not_guessed():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2), nn.Conv2d(4, 4, 3))
    with pytest.raises(ValueError, match="Upsample"):
        receptive_field(model, "2", method="analytic")


# --------------------------------------------------------------------------------------------
# Brute force: the window of unit (y, x) is exactly the set of pixels that change its output


def _pixels_changing_units(net, shape):
    """(H, W, Ho, Wo) bool: perturbing input pixel (i, j) changes output unit (y, x)."""
    h, w = shape
    base = torch.rand(1, 3, h, w, dtype=torch.float64) + 0.5
    perturbed = base.repeat(h * w, 1, 1, 1)
    for i in range(h * w):
        perturbed[i, :, i // w, i % w] += 1e12
    with torch.no_grad():
        out_base, out = net(base), net(perturbed)
    return (out != out_base).any(1).reshape(h, w, *out.shape[2:])


def _seen_pixels(net, n):
    """Rows and columns of an n x n input that change some output unit, or None if the map is < 3."""
    base = torch.rand(1, 3, n, n, dtype=torch.float64) + 0.5
    perturbed = base.repeat(2 * n, 1, 1, 1)
    for i in range(n):
        perturbed[i, :, i, :] += 1e12  # row i
        perturbed[n + i, :, :, i] += 1e12  # column i
    try:
        with torch.no_grad():
            out_base, out = net(base), net(perturbed)
    except RuntimeError:
        return None
    if min(out.shape[2:]) < 3:
        return None
    changed = (out != out_base).flatten(1).any(1)
    return changed[:n], changed[n:]


@pytest.mark.parametrize("seed", range(4))
def test_window_brute_force(seed):
    torch.manual_seed(seed)
    # No dilation and kernel >= stride everywhere, so windows have no holes; positive weights and
    # inputs with a huge perturbation make every pixel of a window change the unit (through max
    # pools too); float64 so that pixels outside leave the output bit-identical.
    model, checkpoints = _random_chain(100 + seed, dilation=False, holes=False)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) * 0.5 + 0.5)
    name = checkpoints[-1][0]
    net = model[: int(name) + 1]
    rf = receptive_field(model, name, method="analytic")
    # Strided layers may drop the last rows or columns of some input sizes (floor division): no
    # unit sees them. Window == pixels that change the unit where nothing is dropped; a subset always.
    seen = {n: _seen_pixels(net, n) for n in range(12, 48)}
    full_rows = [n for n, s in seen.items() if s is not None and s[0].all()]
    full_cols = [n for n, s in seen.items() if s is not None and s[1].all()]
    dropping = [n for n, s in seen.items() if s is not None and not (s[0].all() and s[1].all())]
    shapes = [(full_rows[0], full_cols[0]), (full_rows[1], full_cols[1])] + [(n, n) for n in dropping[:1]]
    for shape in shapes:
        changed = _pixels_changing_units(net, shape)
        exact = shape[0] in full_rows and shape[1] in full_cols
        for y in range(changed.shape[2]):
            for x in range(changed.shape[3]):
                y0, x0, y1, x1 = rf.window(y, x)
                inside = torch.zeros(shape, dtype=torch.bool)
                inside[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
                assert not (changed[:, :, y, x] & ~inside).any(), (shape, y, x, rf)  # nothing outside
                if exact:
                    assert torch.equal(changed[:, :, y, x], inside), (shape, y, x, rf)


def test_to_dict_round_trip():
    rf = ReceptiveField((5, 7), (2, 4), (1, 3), "empirical")
    assert ReceptiveField.from_dict(rf.to_dict()) == rf
