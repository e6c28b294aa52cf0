"""Cone forwards (nsi_widgets.index.cone): every unit at every position equals the full forward, border
positions included, on chains with padding, stride, dilation, pooling (ceil mode, padding) and batch
norm; models that are not plain chains get no cone."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from nsi_widgets.index.cone import chain_cone
from _models import make_cnn


def _chains():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return {
        "tiny": (make_cnn(seed=1).eval(), ["relu1", "relu2", "pool", "relu3"], (20, 24)),
        "pool-variants": (nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 5, 5, stride=2, padding=2), bn=bn, act=nn.LeakyReLU(0.1),
            maxpool=nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
            conv2=nn.Conv2d(5, 6, (3, 1), padding=(1, 0), dilation=(2, 1), groups=1), relu2=nn.ReLU(inplace=True),
            avgpool=nn.AvgPool2d(2, stride=2, padding=1), conv3=nn.Conv2d(6, 4, 2), relu3=nn.ReLU(),
        )).eval(), ["act", "maxpool", "relu2", "avgpool", "relu3"], (23, 30)),
        "grouped": (nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 6, 3, padding=1), relu1=nn.ReLU(), lrn=nn.LocalResponseNorm(3),
            conv2=nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=3), relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2), conv3=nn.Conv2d(6, 3, 3, padding=2, dilation=2), relu3=nn.ReLU(),
        )).eval(), ["relu1", "relu2", "pool", "relu3"], (17, 17)),
    }


@pytest.mark.parametrize("name", list(_chains()))
def test_cone_equals_full_forward_everywhere(name):
    model, layers, (height, width) = _chains()[name]
    generator = torch.Generator().manual_seed(7)
    images = torch.rand(3, 3, height, width, generator=generator)
    modules = dict(model.named_modules())
    for layer in layers:
        cone = chain_cone(model, modules[layer], images[:1])
        assert cone is not None, layer
        captured = {}
        handle = modules[layer].register_forward_hook(lambda m, i, o: captured.__setitem__("out", o.clone()))
        with torch.no_grad():
            model(images)
        handle.remove()
        full = captured["out"]
        checked = 0
        for y in range(full.shape[2]):
            rows = cone.axis(0, y)
            for x in range(full.shape[3]):
                columns = cone.axis(1, x)
                window = images[:, :, rows.start:rows.stop, columns.start:columns.stop]
                with torch.no_grad():
                    got = cone.run(window, rows, columns)
                np.testing.assert_allclose(got.numpy(), full[:, :, y, x].numpy(), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name} {layer} ({y}, {x})")
                checked += 1
        assert checked == full.shape[2] * full.shape[3]


def test_cone_windows_shrink_and_stay_in_the_image():
    model, layers, (height, width) = _chains()["tiny"]
    cone = chain_cone(model, dict(model.named_modules())["relu3"], torch.rand(1, 3, height, width))
    for y in range(cone.sizes[-1][0]):
        rows = cone.axis(0, y)
        assert 0 <= rows.start < rows.stop <= height
        assert all(before >= 0 and after >= 0 for before, after in rows.pads)
    # An interior row needs no padding at any step and has the receptive field's height.
    interior = cone.axis(0, cone.sizes[-1][0] // 2)
    assert all(p == (0, 0) for p in interior.pads)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(self.conv2(self.relu(self.conv1(x))) + x)


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x * 2.0))


@pytest.mark.parametrize("model, layer", [
    (_Residual(), "out"),                                                    # the skip is not a module
    (_Scaled(), "relu"),                                                     # functional op in forward
    (nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), relu=nn.ReLU())), "relu"),
    (nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), norm=nn.InstanceNorm2d(4), relu=nn.ReLU())), "relu"),
    (nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), pool=nn.AdaptiveAvgPool2d(4), relu=nn.ReLU())), "relu"),
])
def test_no_cone_for_models_that_are_not_plain_chains(model, layer):
    """(Before the skip of a residual block, conv2 alone, a chain does reach the layer: covered above.)"""
    model.eval()
    assert chain_cone(model, dict(model.named_modules())[layer], torch.rand(1, 3, 12, 12)) is None
