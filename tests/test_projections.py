"""Projections to pixels (docs/methods.md section 10): DeconvNet, guided backpropagation, gradient.

Checked against explicit references written here (a hand-written backward pass: unpooling with the
recorded switches, rectification, transposed convolutions with the same weights, batch norm as its
linear map), never against autograd on the same code path.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nsi_widgets as nsi
from nsi_widgets.core.errors import InputError
from nsi_widgets.index.results import NeuronIndex
from nsi_widgets.synthesis import projections as P

from _models import ListDataset, make_cnn, make_images

METHODS = ("deconvnet", "guided_backprop", "gradient")


@pytest.fixture(scope="module")
def default():
    torch.manual_seed(0)
    model, data = nsi.zoo.load("shapes", n=160)
    return model, data


def _batch(data, indices):
    return torch.stack([data[i][0] for i in indices])


# ----------------------------------------------------------------------------------------------
# The explicit reference: a chain of leaf modules walked backwards by hand


def _leaf_chain(model, layer_module, images):
    """The leaf modules that run, one after the other, from the input to the layer's output.

    Asserts that the network up to the layer is a chain (each leaf takes the previous one's output),
    which the reference below needs, and that replaying the chain gives the layer's output."""
    calls, layer_out = [], {}
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0], o))) for m in leaves]
    handles.append(layer_module.register_forward_hook(lambda m, i, o: layer_out.update(out=o, n=len(calls))))
    with torch.no_grad():
        model(images)
    for h in handles:
        h.remove()
    chain = calls[:layer_out["n"]]
    assert chain[0][1] is images or torch.equal(chain[0][1], images)
    for (_, _, previous), (module, inp, _) in zip(chain, chain[1:]):
        assert inp is previous, f"{type(module).__name__} does not take the previous leaf's output: not a chain"
    assert chain[-1][2] is layer_out["out"]
    return [m for m, _, _ in chain], layer_out["out"]


def _reference(model, layer, unit, images, positions, method):
    """(B, 3, H, W): the rule's backward written out step by step (docs/methods.md section 10)."""
    module = dict(model.named_modules())[layer]
    chain, layer_out = _leaf_chain(model, module, images)
    saved, x = [], images
    with torch.no_grad():
        for m in chain:  # forward, keeping what the backward needs
            if isinstance(m, nn.MaxPool2d):
                assert m.kernel_size == m.stride, "explicit unpooling is the transpose for non-overlapping windows"
                y, switches = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                                           return_indices=True)
                saved.append((x, switches))
            else:
                y = m(x)
                saved.append((x, None))
            x = y
        assert torch.equal(x, layer_out)
        g = torch.zeros_like(x)
        rows = torch.arange(len(images))
        g[rows, unit, positions[:, 0], positions[:, 1]] = 1.0
        for m, (inp, switches) in zip(reversed(chain), reversed(saved)):
            if isinstance(m, nn.ReLU):
                if method == "deconvnet":
                    g = F.relu(g)
                elif method == "guided_backprop":
                    g = F.relu(g) * (inp > 0)
                else:
                    g = g * (inp > 0)
            elif isinstance(m, nn.MaxPool2d):
                g = F.max_unpool2d(g, switches, m.kernel_size, m.stride, m.padding, output_size=inp.shape[-2:])
            elif isinstance(m, nn.BatchNorm2d):
                assert not m.training
                g = g * (m.weight / torch.sqrt(m.running_var + m.eps))[None, :, None, None]
            elif isinstance(m, nn.Conv2d):
                out_size = [(o - 1) * s - 2 * p + d * (k - 1) + 1 for o, s, p, d, k in
                            zip(g.shape[-2:], m.stride, m.padding, m.dilation, m.kernel_size)]
                output_padding = [i - o for i, o in zip(inp.shape[-2:], out_size)]
                g = F.conv_transpose2d(g, m.weight, None, m.stride, m.padding, output_padding, m.groups, m.dilation)
            elif isinstance(m, (nn.Identity, nn.Dropout)):
                pass
            else:
                raise AssertionError(f"the reference has no rule for {type(m).__name__}")
    return g


def _layer_output(model, layer, images):
    out = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.setdefault("o", o))
    with torch.no_grad():
        model(images)
    handle.remove()
    return out["o"]


def _map_maxima(model, layer, unit, images):
    """(B, 2): first row-major maximum of the unit's map, by NumPy."""
    maps = _layer_output(model, layer, images)[:, unit].numpy()
    flat = np.array([np.argmax(m.reshape(-1)) for m in maps])  # NumPy argmax: first maximum
    return torch.from_numpy(np.stack([flat // maps.shape[-1], flat % maps.shape[-1]], 1))


def _close(actual, expected):
    """Max abs difference, asserting it is float32 round-off of the reference's scale."""
    expected = expected.permute(0, 2, 3, 1).numpy()
    scale = max(float(np.abs(expected).max()), 1e-30)
    diff = float(np.abs(actual - expected).max())
    assert diff <= 2e-5 * scale, f"max difference {diff:.3g} at scale {scale:.3g}"
    return diff / scale


@pytest.mark.parametrize("method", METHODS)
def test_equals_explicit_reference_on_the_default(default, method):
    model, data = default
    images = _batch(data, range(6))
    worst = 0.0
    for layer in nsi.zoo.conv_layers(model):
        n_units = _layer_output(model, layer, images[:1]).shape[1]
        for unit in sorted({0, n_units // 2, n_units - 1}):
            projection = P.project(model, layer, unit, images, method=method)
            reference = _reference(model, layer, unit, images, _map_maxima(model, layer, unit, images), method)
            assert np.abs(projection).max() > 0
            worst = max(worst, _close(projection, reference))
    print(f"{method}: max relative difference to the explicit reference {worst:.2e}")


def test_public_functions_are_the_methods(default):
    model, data = default
    images = _batch(data, range(3))
    layer = nsi.zoo.conv_layers(model)[2]
    for function, method in ((nsi.deconvnet, "deconvnet"), (nsi.guided_backprop, "guided_backprop"),
                             (nsi.gradient, "gradient")):
        np.testing.assert_array_equal(function(model, layer, 1, images), P.project(model, layer, 1, images, method=method))
    # the three rules differ on a trained network
    d, g, p = (f(model, layer, 1, images) for f in (nsi.deconvnet, nsi.guided_backprop, nsi.gradient))
    assert not np.allclose(d, g) and not np.allclose(g, p)


def test_explicit_positions_and_batching(default):
    model, data = default
    layer = nsi.zoo.conv_layers(model)[3]
    images = _batch(data, range(5))
    positions = np.array([[0, 0], [1, 2], [3, 1], [2, 2], [0, 3]])
    for method in METHODS:
        batched = P.project(model, layer, 4, images, method=method, position=positions)
        reference = _reference(model, layer, 4, images, torch.from_numpy(positions), method)
        _close(batched, reference)
        one_by_one = np.concatenate([P.project(model, layer, 4, images[b], method=method, position=tuple(positions[b]))
                                     for b in range(5)])
        np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-6 * np.abs(batched).max())
        shared = P.project(model, layer, 4, images, method=method, position=(1, 2))
        np.testing.assert_allclose(shared[1], batched[1], rtol=0, atol=1e-6 * np.abs(batched).max())


def test_default_position_is_the_first_maximum_on_ties():
    model = make_cnn()
    images = torch.full((2, 3, 20, 24), 0.5)  # a flat image: flat maps away from the borders
    images[1, :, 10:, 12:] = 0.9
    maxima = _map_maxima(model, "relu3", 2, images)
    for method in METHODS:
        np.testing.assert_array_equal(P.project(model, "relu3", 2, images, method=method),
                                      P.project(model, "relu3", 2, images, method=method, position=maxima.numpy()))


# ----------------------------------------------------------------------------------------------
# Four spellings of ReLU in one network (with batch norm, average pooling and a residual addition)


class _Variant(nn.Module):
    """conv-bn-relu, max pool, residual block (conv-bn-relu-conv + skip, relu), avg pool, conv-relu."""

    def __init__(self, relu_kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.avg = nn.AvgPool2d(2)
        self.conv4 = nn.Conv2d(8, 6, 3, padding=1)
        self.out = nn.Identity()
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)
        self.kind = relu_kind
        if relu_kind == "modules":
            self.r1, self.r2, self.r3, self.r4 = (nn.ReLU() for _ in range(4))
        elif relu_kind == "shared":
            self.relu = nn.ReLU()
        elif relu_kind == "inplace":
            self.r1, self.r4 = nn.ReLU(inplace=True), nn.ReLU(inplace=True)

    def _relus(self):
        if self.kind == "modules":
            return self.r1, self.r2, self.r3, self.r4
        if self.kind == "shared":
            return (self.relu,) * 4
        if self.kind == "functional":
            return F.relu, lambda t: torch.relu(input=t), torch.Tensor.relu, lambda t: F.relu(t, False)
        return self.r1, torch.Tensor.relu_, F.relu_, self.r4  # in place: module, method, function, module

    def forward(self, x):
        r1, r2, r3, r4 = self._relus()
        x = self.pool(r1(self.bn1(self.conv1(x))))
        x = r3(x + self.conv3(r2(self.bn2(self.conv2(x)))))
        return self.out(r4(self.conv4(self.avg(x))))


def _variant_reference(net, images, unit, positions, method):
    """The backward of :class:`_Variant` by hand: transposed convolutions, batch norm scales, the
    average pool spread evenly, the residual's signal to both branches, unpooling with switches."""
    def rule(g, pre):
        if method == "deconvnet":
            return F.relu(g)
        if method == "guided_backprop":
            return F.relu(g) * (pre > 0)
        return g * (pre > 0)

    def bn_scale(bn):
        return (bn.weight / torch.sqrt(bn.running_var + bn.eps))[None, :, None, None]

    def back_conv(g, conv):
        return F.conv_transpose2d(g, conv.weight, None, 1, 1)

    with torch.no_grad():
        a1 = net.bn1(net.conv1(images))
        p, switches = F.max_pool2d(F.relu(a1), 2, return_indices=True)
        a2 = net.bn2(net.conv2(p))
        s = p + net.conv3(F.relu(a2))
        a4 = net.conv4(F.avg_pool2d(F.relu(s), 2))
        g = torch.zeros_like(a4)
        g[torch.arange(len(images)), unit, positions[:, 0], positions[:, 1]] = 1.0
        g = back_conv(rule(g, a4), net.conv4)
        g = F.interpolate(g, scale_factor=2, mode="nearest") / 4  # average pool: each input gets 1/4
        g = rule(g, s)
        branch = back_conv(rule(back_conv(g, net.conv3), a2) * bn_scale(net.bn2), net.conv2)
        g = F.max_unpool2d(g + branch, switches, 2, output_size=a1.shape[-2:])
        return back_conv(rule(g, a1) * bn_scale(net.bn1), net.conv1)


def test_four_relu_spellings_give_identical_projections():
    images = torch.stack(make_images(4, 16, 16, seed=1))
    nets = {kind: _Variant(kind).eval() for kind in ("modules", "functional", "inplace", "shared")}
    outputs = {kind: net(images.clone()) for kind, net in nets.items()}
    for kind in nets:
        assert torch.equal(outputs[kind], outputs["modules"]), kind
    positions = np.array([[0, 0], [1, 3], [2, 2], [3, 1]])
    for method in METHODS:
        for unit, position in ((2, None), (5, positions)):
            results = {kind: P.project(net, "out", unit, images, method=method, position=position)
                       for kind, net in nets.items()}
            for kind, value in results.items():
                np.testing.assert_array_equal(value, results["modules"], err_msg=f"{method}: {kind}")
            where = _map_maxima(nets["modules"], "out", unit, images) if position is None else torch.from_numpy(position)
            _close(results["modules"], _variant_reference(nets["modules"], images, unit, where, method))


def test_every_relu_call_is_seen_by_the_mode():
    images = torch.stack(make_images(2, 16, 16)).requires_grad_(True)
    for kind in ("modules", "functional", "inplace", "shared"):
        net = _Variant(kind).eval()
        mode = P._ReluRuleMode(P._GuidedReLU)
        with mode:
            net(images * 1.0)
        assert mode.calls == 4, kind


# ----------------------------------------------------------------------------------------------
# Receptive fields


def _assert_inside_field(projection, rf, positions):
    height, width = projection.shape[1:3]
    assert np.abs(projection).max() > 0
    for b, (y, x) in enumerate(positions):
        y0, x0, y1, x1 = rf.window(int(y), int(x))
        support = np.abs(projection[b]).sum(-1) > 0
        outside = support.copy()
        outside[max(0, y0):max(0, min(height, y1)), max(0, x0):max(0, min(width, x1))] = False
        assert not outside.any(), f"pixels {np.argwhere(outside)[:3].tolist()} outside window {(y0, x0, y1, x1)}"


def test_nonzero_pixels_lie_in_the_receptive_field(default):
    model, data = default
    images = _batch(data, range(4))
    generator = np.random.default_rng(0)
    for layer in nsi.zoo.conv_layers(model):
        rf = nsi.receptive_field(model, layer, input_size=tuple(images.shape[-2:]))
        for method in METHODS:
            maxima = _map_maxima(model, layer, 1, images).numpy()
            _assert_inside_field(P.project(model, layer, 1, images, method=method), rf, maxima)
            map_h, map_w = _layer_output(model, layer, images[:1]).shape[-2:]
            positions = np.stack([generator.integers(0, map_h, 4), generator.integers(0, map_w, 4)], 1)
            # guided/gradient may be all zero at a position where the unit is off; deconvnet is not
            if method == "deconvnet":
                _assert_inside_field(P.project(model, layer, 1, images, method=method, position=positions), rf,
                                     positions)


def test_nonzero_pixels_lie_in_the_field_with_stride_dilation_and_padding():
    model = make_cnn()
    images = torch.stack(make_images(3, 20, 24))
    for layer in ("relu1", "conv2", "relu2", "pool", "relu3"):
        rf = nsi.receptive_field(model, layer, input_size=(20, 24))
        unit = 1
        maxima = _map_maxima(model, layer, unit, images).numpy()
        for method in METHODS:
            _assert_inside_field(P.project(model, layer, unit, images, method=method), rf, maxima)


# ----------------------------------------------------------------------------------------------
# Nothing left on the model


def _hooks(model):
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_state_dict_hooks")
    return {(n, h): dict(getattr(m, h)) for n, m in model.named_modules() for h in names if hasattr(m, h)}


class _Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.armed = False

    def forward(self, x):
        if self.armed:
            raise RuntimeError("boom inside the forward")
        return x


def test_model_hooks_modes_and_outputs_unchanged_also_after_an_exception():
    model = make_cnn()
    model.conv3 = nn.Sequential(_Boom(), model.conv3)
    seen = []
    model.relu1.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))  # a user's own hook
    model.train()
    model.pool.eval()  # a mixed state must come back as it was
    images = torch.stack(make_images(3, 20, 24))
    modes = {n: m.training for n, m in model.named_modules()}
    hooks = _hooks(model)
    with torch.no_grad():
        model.eval()
        before = model(images)
    for n, m in model.named_modules():
        m.training = modes[n]
    for method in METHODS:
        P.project(model, "relu3", 2, images, method=method)
        assert _hooks(model) == hooks and {n: m.training for n, m in model.named_modules()} == modes
        assert torch._C._len_torch_function_stack() == 0
        assert all(p.grad is None for p in model.parameters())
        model.conv3[0].armed = True
        with pytest.raises(RuntimeError, match="boom"):
            P.project(model, "relu3", 2, images, method=method)
        model.conv3[0].armed = False
        assert _hooks(model) == hooks and {n: m.training for n, m in model.named_modules()} == modes
        assert torch._C._len_torch_function_stack() == 0
        with pytest.raises(ZeroDivisionError):
            P.project(model, "relu3", 2, images, method=method, preprocess=lambda x: 1 / 0)
        assert _hooks(model) == hooks and torch._C._len_torch_function_stack() == 0
    assert seen and set(seen) <= {1, 3}  # the user's hook ran on the probe and the batch
    with torch.no_grad():
        model.eval()
        after = model(images)
    assert torch.equal(before, after)
    relu_out = F.relu(torch.tensor([-1.0, 2.0], requires_grad=True))  # plain ReLU again outside
    assert relu_out.grad_fn.name() != "BackwardCFunction"


def test_works_under_no_grad_and_inference_mode():
    model = make_cnn()
    images = torch.stack(make_images(2, 20, 24))
    expected = P.project(model, "relu3", 1, images, method="guided_backprop")
    with torch.no_grad():
        np.testing.assert_array_equal(P.project(model, "relu3", 1, images), expected)
    with torch.inference_mode():
        np.testing.assert_array_equal(P.project(model, "relu3", 1, images), expected)


def test_preprocess_projects_onto_the_rgb_image():
    model = make_cnn()
    images = torch.stack(make_images(2, 20, 24))
    mean, std = torch.tensor([0.4, 0.5, 0.6])[:, None, None], torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    with_pre = P.project(model, "relu3", 1, images, method="deconvnet", preprocess=lambda x: (x - mean) / std)
    normalised = ((images - mean) / std)
    # the same network on normalised input, projected onto that input, then through d(normalised)/d(rgb) = 1/std
    plain = P._backward_projections(model.eval(), "relu3", model.relu3, normalised, torch.tensor([1, 1]), None,
                                    "deconvnet", None) / std
    np.testing.assert_allclose(with_pre, plain.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Bad input: clear errors before the batch's forward pass


def test_bad_input_is_refused_before_work():
    model = make_cnn()
    images = torch.stack(make_images(4, 20, 24))
    batches = []
    model.conv1.register_forward_pre_hook(lambda m, i: batches.append(i[0].shape[0]))
    cases = [
        (dict(layer="conv9"), "unknown layer 'conv9'.*conv1"),
        (dict(layer="head"), "returns shape"),
        (dict(unit=8), "unit 8 is out of range.*5 units"),
        (dict(unit=-1), "out of range"),
        (dict(unit=1.5), "integer"),
        (dict(position=(5, 0)), r"position \(y, x\) = \(5, 0\).*outside.*5 x 6"),
        (dict(position=np.zeros((3, 2), int)), "one per image"),
        (dict(images=images * 2), r"\[0, 1\]"),
        (dict(images=images[:, :2]), "shape"),
        (dict(images=images[0, 0]), "shape"),
        (dict(images=torch.empty(0, 3, 20, 24)), "empty"),
        (dict(images="cat.png"), "tensor, an array or a list"),
        (dict(method="lrp"), "unknown method 'lrp'"),
    ]
    for change, message in cases:
        args = dict(model=model, layer="relu3", unit=1, images=images, position=None, method="deconvnet") | change
        batches.clear()
        with pytest.raises(InputError, match=message):
            P.project(args.pop("model"), args.pop("layer"), args.pop("unit"), args.pop("images"), **args)
        assert all(b == 1 for b in batches), f"{change}: a forward of the batch ran before the error"
    assert isinstance(InputError("x"), ValueError)


def test_accepts_uint8_channels_last_and_lists():
    model = make_cnn()
    images = torch.stack(make_images(2, 20, 24))
    pixels = (images * 255).round().to(torch.uint8)
    expected = P.project(model, "relu3", 1, pixels.float() / 255)
    np.testing.assert_array_equal(P.project(model, "relu3", 1, pixels), expected)
    np.testing.assert_array_equal(P.project(model, "relu3", 1, pixels.permute(0, 2, 3, 1).numpy()), expected)
    np.testing.assert_array_equal(P.project(model, "relu3", 1, list(pixels.float() / 255)), expected)


# ----------------------------------------------------------------------------------------------
# Colour mapping


def test_colour_mapping():
    p = np.zeros((2, 2, 2, 3), dtype=np.float32)
    p[0, 0, 0] = [2.0, -1.0, 0.0]
    p[0, 1, 1] = [-4.0, 0.0, 1.0]
    rgb = P.projection_to_rgb(p)
    np.testing.assert_allclose(rgb[0, 0, 0], [0.75, 0.375, 0.5])
    np.testing.assert_allclose(rgb[0, 1, 1], [0.0, 0.5, 0.625])
    assert np.all(rgb[1] == 0.5)  # all-zero projection: uniform grey
    np.testing.assert_allclose(P.projection_scales(p), [4.0, 0.0])
    fixed = P.projection_to_rgb(p, scale=2.0)  # one scale for all, beyond it clipped
    np.testing.assert_allclose(fixed[0, 1, 1], [0.0, 0.5, 0.75])
    assert rgb.dtype == np.float32 and rgb.min() >= 0 and rgb.max() <= 1


# ----------------------------------------------------------------------------------------------
# Top images of an index, cut to the receptive field; attachment and on-demand handler


@pytest.fixture(scope="module")
def small_index(default):
    model, data = default
    layer = nsi.zoo.conv_layers(model)[2]
    idx = nsi.index_neurons(model, data, [layer], top_n=6, progress=False, indexes=(), n_thumbnails=4)
    return model, data, idx, layer


def _window(projection, rf, y, x):
    """The receptive-field window of a (H, W, 3) projection, zero outside the image (by slicing)."""
    y0, x0, y1, x1 = rf.window(y, x)
    height, width = projection.shape[:2]
    pad = max(0, -y0, -x0, y1 - height, x1 - width)
    padded = np.pad(projection, ((pad, pad), (pad, pad), (0, 0)))
    return padded[y0 + pad:y1 + pad, x0 + pad:x1 + pad]


def test_top_projections_are_the_projections_cut_to_the_field(small_index):
    model, data, idx, layer = small_index
    L = idx[layer]
    units = [0, 3, 5]
    result = P.top_projections(idx, model, layer, units, method="guided_backprop", n_images=4, batch_size=7,
                               progress=False)
    assert result.crops.shape == (3, 4, *L.receptive_field.size, 3)
    np.testing.assert_array_equal(result.image_indices, L.top_indices[units, :4])
    for s, unit in enumerate(units):
        images = _batch(data, L.top_indices[unit])
        full = P.project(model, layer, unit, images, method="guided_backprop", position=L.top_positions[unit])
        windows = np.stack([_window(full[j], L.receptive_field, *L.top_positions[unit, j]) for j in range(6)])
        np.testing.assert_allclose(result.crops[s], windows[:4], rtol=0, atol=1e-6 * np.abs(windows).max())
        weights = L.top_activations[unit] / L.top_activations[unit, 0]
        mean = (weights[:, None, None, None] * windows).sum(0) / weights.sum()
        np.testing.assert_allclose(result.mean[s], mean, rtol=1e-5, atol=1e-6 * np.abs(mean).max())
    plain = P.top_projections(idx, model, layer, [3], weighting="mean", n_mean=3, progress=False)
    images = _batch(data, L.top_indices[3, :3])
    full = P.project(model, layer, 3, images, position=L.top_positions[3, :3])
    windows = np.stack([_window(full[j], L.receptive_field, *L.top_positions[3, j]) for j in range(3)])
    np.testing.assert_allclose(plain.mean[0], windows.mean(0), rtol=1e-5, atol=1e-6 * np.abs(windows).max())


def test_attachment_round_trip_merge_and_handler(small_index, tmp_path):
    model, data, idx, layer = small_index
    result = P.top_projections(idx, model, layer, [1, 2], method="deconvnet", n_images=3, progress=False)
    attachment = result.to_attachment()
    arrays = attachment.arrays[layer]
    assert attachment.kind == "projections" and attachment.meta["method"] == "deconvnet"
    assert arrays["images"].dtype == np.uint8 and arrays["images"].shape == result.crops.shape
    back = P.TopProjections.from_attachment(attachment, layer)
    scale = np.abs(result.crops).max(axis=(2, 3, 4), keepdims=True)
    assert np.all(np.abs(back.crops - result.crops) <= scale / 255 + 1e-7)  # 8-bit precision
    idx.attach("projections", attachment)
    loaded = nsi.load_index(idx.save(tmp_path / "idx"), data=data)
    np.testing.assert_array_equal(loaded.attachments["projections"].arrays[layer]["images"], arrays["images"])

    handler = P.make_projection_handler("deconvnet", n_images=3, thumbnail_size=None)
    calls = []
    update = handler(loaded, model, None, layer, 5, lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] == 6
    merged = P.merge_projection_attachments(loaded.attachments["projections"], update)
    np.testing.assert_array_equal(merged.arrays[layer]["units"], [1, 2, 5])
    alone = P.top_projections(idx, model, layer, [5], method="deconvnet", n_images=3, progress=False).to_attachment()
    np.testing.assert_array_equal(merged.arrays[layer]["images"][2], alone.arrays[layer]["images"][0])
    again = P.merge_projection_attachments(merged, update)  # replacing a unit keeps one copy
    np.testing.assert_array_equal(again.arrays[layer]["units"], [1, 2, 5])
    loaded.attach("projections", merged)
    with pytest.raises(InputError, match="other settings"):
        P.merge_projection_attachments(merged, result.to_attachment(thumbnail_size=8))
    small = P.projection_handler(idx, model, data, layer, 0)
    rf = idx[layer].receptive_field.size[0]
    assert small.arrays[layer]["images"].shape[2] == -(-rf // -(-rf // 48))


def test_top_projections_refuses_bad_input(small_index):
    model, data, idx, layer = small_index
    cases = [
        (dict(index="idx"), "NeuronIndex"),
        (dict(layer="conv1"), "not in this index"),
        (dict(units=[99]), "unit 99 is out of range"),
        (dict(units=[]), "non-empty"),
        (dict(method="x"), "unknown method"),
        (dict(weighting="x"), "weighting"),
        (dict(n_images=-1), "n_images must be an integer >= 0"),
        (dict(batch_size=0), "batch_size"),
        (dict(model=make_cnn()), "fingerprint"),
    ]
    for change, message in cases:
        args = dict(index=idx, model=model, layer=layer) | change
        with pytest.raises(InputError, match=message):
            P.top_projections(args.pop("index"), args.pop("model"), args.pop("layer"), progress=False, **args)
    unattached = NeuronIndex({layer: idx[layer]}, meta=idx.meta)
    with pytest.raises(InputError, match="pass data="):
        P.top_projections(unattached, model, layer, progress=False)
    with pytest.raises(InputError, match="dataset has"):
        P.top_projections(unattached, model, layer, data=ListDataset([data[i][0] for i in range(5)]), progress=False)
