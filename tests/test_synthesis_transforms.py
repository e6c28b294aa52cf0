"""The random transformation of one step against a NumPy bilinear warp written from its definition
(docs/methods.md section 9): x_in = c + A^-1 (u + o2 - c) + o1 - pad, fill colour outside the image."""
import math

import numpy as np
import pytest
import torch

from nsi_widgets.core.errors import InputError
from nsi_widgets.synthesis.transforms import (Draw, RandomTransforms, TransformSpec, apply, draw, resolve_transforms,
                                              standard_transforms)


def _reference(image, spec, d, fill):
    """(3, H, W) float64 -> (3, Ho, Wo): bilinear sampling with pixel centres at i + 0.5."""
    _, h, w = image.shape
    ho, wo = h + 2 * spec.pad - sum(spec.jitter), w + 2 * spec.pad - sum(spec.jitter)
    c = ((h + 2 * spec.pad - spec.jitter[0]) / 2, (w + 2 * spec.pad - spec.jitter[0]) / 2)
    t = math.radians(d.angle)
    inv = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) / d.scale  # on (x, y)
    out = np.empty((3, ho, wo))
    for i in range(ho):
        for j in range(wo):
            u = np.array([j + 0.5 + d.o2[1] - c[1], i + 0.5 + d.o2[0] - c[0]])
            x, y = inv @ u
            x, y = x + c[1] + d.o1[1] - spec.pad - 0.5, y + c[0] + d.o1[0] - spec.pad - 0.5  # to pixel index space
            x0, y0 = math.floor(x), math.floor(y)
            value = np.zeros(3)
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    inside = 0 <= yy < h and 0 <= xx < w
                    value += wy * wx * (image[:, yy, xx] if inside else fill)
            out[:, i, j] = value
    return out


@pytest.mark.parametrize("spec, d", [
    (TransformSpec(pad=2, jitter=(3, 1)), Draw((1, 3), (0, 1), 1.0, 0.0)),
    (TransformSpec(pad=3, jitter=(2, 2), scales=(0.9,), angles=(10.0,)), Draw((2, 0), (1, 2), 0.9, 10.0)),
    (TransformSpec(pad=0, jitter=(0, 0), scales=(1.1,), angles=(-7.0,)), Draw((0, 0), (0, 0), 1.1, -7.0)),
])
def test_warp_matches_the_definition(spec, d):
    rng = np.random.default_rng(0)
    image = rng.random((3, 9, 11))
    fill = np.array([0.2, 0.5, 0.9])
    got = apply(torch.from_numpy(image).float()[None], spec, d, torch.from_numpy(fill).float())[0].numpy()
    np.testing.assert_allclose(got, _reference(image, spec, d, fill), atol=2e-5)


def test_integer_jitter_without_scale_or_rotation_is_pad_and_crop():
    image = torch.rand(2, 3, 6, 7)
    spec = TransformSpec(pad=2, jitter=(3, 1))
    d = Draw((1, 3), (1, 0), 1.0, 0.0)
    fill = torch.tensor([0.1, 0.2, 0.3])
    padded = fill.view(1, 3, 1, 1).expand(2, 3, 10, 11).clone()
    padded[:, :, 2:8, 2:9] = image
    expected = padded[:, :, 1 + 1:1 + 1 + 6, 3 + 0:3 + 0 + 7]
    np.testing.assert_allclose(apply(image, spec, d, fill).numpy(), expected.numpy(), atol=1e-6)


def test_identity_returns_the_input():
    image = torch.rand(1, 3, 5, 5)
    assert apply(image, TransformSpec(), Draw((0, 0), (0, 0), 1.0, 0.0), torch.zeros(3)) is image
    assert resolve_transforms("none", (5, 5)).is_identity and resolve_transforms(None, (5, 5)).is_identity


def test_draws_are_seeded_and_in_range():
    spec = standard_transforms((64, 64))
    a = [draw(spec, np.random.default_rng([3, 0x7A5F])) for _ in range(1)]
    r1, r2 = RandomTransforms(spec, 3, torch.zeros(3)), RandomTransforms(spec, 3, torch.zeros(3))
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(r1(x), r2(x))
    assert a[0] == draw(spec, np.random.default_rng([3, 0x7A5F]))
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = draw(spec, rng)
        assert 0 <= min(d.o1) and max(d.o1) <= spec.jitter[0] and 0 <= min(d.o2) and max(d.o2) <= spec.jitter[1]
        assert d.scale in spec.scales and d.angle in spec.angles


def test_standard_transforms_scale_lucids_pixel_amounts():
    assert standard_transforms((224, 224)) == TransformSpec(
        pad=12, jitter=(8, 4), scales=tuple(1 + (i - 5) / 50 for i in range(11)),
        angles=tuple(float(a) for a in list(range(-10, 11)) + [0] * 5))
    spec = standard_transforms((64, 64))
    assert (spec.pad, spec.jitter) == (3, (2, 1)) and spec.output_size((64, 64)) == (67, 67)
    assert TransformSpec.from_dict(spec.to_dict()) == spec


def test_bad_transformations_are_refused():
    with pytest.raises(InputError):
        TransformSpec(pad=-1)
    with pytest.raises(InputError):
        TransformSpec(scales=(0.0,))
    with pytest.raises(InputError):
        resolve_transforms("heavy", (8, 8))
