"""Image priors, objectives, the diversity term and the redirected ReLU against NumPy written from
their definitions (docs/methods.md section 9); TV denoising against scikit-image's Chambolle."""
import numpy as np
import pytest
import torch

from nsi_widgets.core.errors import InputError
from nsi_widgets.synthesis.objectives import diversity, evaluate
from nsi_widgets.synthesis.regularizers import (alpha_norm, blur, center, check_regularizers, l2, penalty,
                                                total_variation, tv_denoise)
from nsi_widgets.synthesis.running import RedirectedReLU


@pytest.fixture
def x():
    return torch.from_numpy(np.random.default_rng(1).random((2, 3, 5, 6)))


def _diffs(a):
    dx = np.zeros_like(a)
    dy = np.zeros_like(a)
    dx[..., :, :-1] = a[..., :, 1:] - a[..., :, :-1]
    dy[..., :-1, :] = a[..., 1:, :] - a[..., :-1, :]
    return dx, dy


def test_total_variation_and_alpha_norm(x):
    a = x.numpy()
    dx, dy = _diffs(a)
    energy = (dx ** 2 + dy ** 2).sum(1)
    np.testing.assert_allclose(total_variation(x, 2.0).numpy(), energy.reshape(2, -1).mean(1))
    np.testing.assert_allclose(total_variation(x, 1.0).numpy(), np.sqrt(energy + 1e-8).reshape(2, -1).mean(1))
    m = np.array([0.4, 0.5, 0.6])
    ref = (np.abs((a - m[None, :, None, None]) / 0.5) ** 6).reshape(2, -1).mean(1)
    np.testing.assert_allclose(alpha_norm(x, 6, torch.from_numpy(m), 0.5).numpy(), ref)


def test_l2_blur_center(x):
    a = x.numpy()
    m = np.array([0.4, 0.5, 0.6])
    np.testing.assert_allclose(l2(x, torch.from_numpy(m)).numpy(),
                               ((a - m[None, :, None, None]) ** 2).reshape(2, -1).mean(1))
    padded = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    k = np.outer([1, 2, 1], [1, 2, 1]) / 16
    blurred = sum(k[i, j] * padded[..., i:i + 5, j:j + 6] for i in range(3) for j in range(3))
    np.testing.assert_allclose(blur(x).numpy(), ((a - blurred) ** 2).reshape(2, -1).mean(1))
    yy = (np.arange(5) + 0.5) / 5 * 2 - 1
    xx = (np.arange(6) + 0.5) / 6 * 2 - 1
    r2 = (yy[:, None] ** 2 + xx[None, :] ** 2) / (yy[0] ** 2 + xx[0] ** 2)
    assert r2.max() == pytest.approx(1.0)
    np.testing.assert_allclose(center(x, torch.from_numpy(m)).numpy(),
                               (r2 * (a - m[None, :, None, None]) ** 2).reshape(2, -1).mean(1), rtol=1e-6)
    both = penalty(x, {"l2": 2.0, "tv": 0.5}, torch.from_numpy(m))
    np.testing.assert_allclose(both.numpy(), 2 * l2(x, torch.from_numpy(m)).numpy() + 0.5 * total_variation(x).numpy())


def test_regularizer_names_and_weights_are_checked():
    assert check_regularizers(None) == {}
    with pytest.raises(InputError, match="unknown regularizer"):
        check_regularizers({"jitter": 1})
    with pytest.raises(InputError, match=">= 0"):
        check_regularizers({"tv": -1})


def test_tv_denoise_equals_scikit_image_chambolle(x):
    skimage = pytest.importorskip("skimage.restoration", reason="scikit-image is a dependency; checked if present")
    for weight, iterations in ((0.1, 1), (0.1, 7), (0.03, 20)):
        got = tv_denoise(x, weight, iterations).numpy()
        for b in range(2):
            ref = skimage.denoise_tv_chambolle(x[b].numpy(), weight=weight, eps=0.0, max_num_iter=iterations,
                                               channel_axis=0)
            np.testing.assert_allclose(got[b], ref, atol=1e-10)
    assert tv_denoise(x, 0.0) is x


def test_objectives_read_the_units_of_each_image():
    t = torch.from_numpy(np.random.default_rng(2).random((3, 4, 5, 6)))
    units = torch.tensor([2, 0, 2])
    a = t.numpy()
    np.testing.assert_allclose(evaluate("channel", t, units).numpy(), [a[b, u].mean() for b, u in enumerate([2, 0, 2])])
    np.testing.assert_allclose(evaluate("neuron", t, units).numpy(), [a[b, u, 2, 3] for b, u in enumerate([2, 0, 2])])
    logits = torch.from_numpy(np.random.default_rng(3).random((3, 7)))
    np.testing.assert_allclose(evaluate("class", logits, units).numpy(), logits.numpy()[[0, 1, 2], [2, 0, 2]])
    with pytest.raises(InputError, match="class"):
        evaluate("class", t, units)
    with pytest.raises(InputError, match="objective"):
        evaluate("mean", t, units)


def test_diversity_is_the_mean_gram_cosine_to_the_same_units_images():
    t = torch.from_numpy(np.random.default_rng(4).random((4, 3, 2, 2)))
    units = torch.tensor([5, 5, 1, 5])
    a = t.numpy().reshape(4, 3, -1)
    grams = [g.ravel() / np.linalg.norm(g) for g in (ai @ ai.T for ai in a)]
    ref = []
    for b in range(4):
        others = [j for j in range(4) if j != b and units[j] == units[b]]
        ref.append(np.mean([grams[b] @ grams[j] for j in others]) if others else 0.0)
    np.testing.assert_allclose(diversity(t, units).numpy(), ref, rtol=1e-10)


def test_redirected_relu_gradient():
    """lucid's rule: the ReLU gradient where any of an image's passes, else the incoming gradient except
    where it would push a negative input lower (loss gradient > 0 at x < 0)."""
    x = torch.tensor([[[-1.0, 2.0, -3.0]], [[-1.0, -2.0, -0.5]]], requires_grad=True)
    out = RedirectedReLU.apply(x)
    np.testing.assert_array_equal(out.detach().numpy(), np.maximum(x.detach().numpy(), 0))
    grad = torch.tensor([[[0.5, -1.0, 2.0]], [[-0.5, 1.0, -2.0]]])
    out.backward(grad)
    xs, gs = x.detach().numpy(), grad.numpy()
    ref = np.empty_like(gs)
    for b in range(2):
        relu = np.where(xs[b] > 0, gs[b], 0)
        ref[b] = relu if np.linalg.norm(relu) > 0 else np.where((xs[b] < 0) & (gs[b] > 0), 0, gs[b])
    np.testing.assert_array_equal(x.grad.numpy(), ref)
    assert ref[1].tolist() == [[-0.5, 0.0, -2.0]]  # the second image had no ReLU gradient at all
