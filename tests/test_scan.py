"""Top-N scan against brute force (every activation stored), checkpoint/resume, merge."""
import numpy as np
import pytest
import torch

import nsi_widgets as nsi
from nsi_widgets.core.fingerprint import sample_indices
from nsi_widgets.index.scan import TopNState
from _models import ListDataset, make_cnn, make_images

LAYERS = ["relu1", "relu2", "pool", "relu3"]


def brute_force_top_n(model, data, layer, top_n, batch_size):
    """Store every activation map, then sort: (value desc, index asc); argmax first in row-major."""
    module = dict(model.named_modules())[layer]
    maps = []
    hook = module.register_forward_hook(lambda m, i, o: maps.append(o.detach().clone()))
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = torch.stack([data[i][0] for i in range(start, min(start + batch_size, len(data)))])
            model(batch)
    hook.remove()
    maps = torch.cat(maps).numpy()                      # (n, C, H, W)
    n, channels, height, width = maps.shape
    flat = maps.reshape(n, channels, -1)
    values = flat.max(axis=2)                           # (n, C)
    positions = flat.argmax(axis=2)                     # first maximum, row-major
    top_idx = np.zeros((channels, top_n), np.int64)
    for c in range(channels):
        order = np.lexsort((np.arange(n), -values[:, c]))[:top_n]
        top_idx[c] = order
    top_val = np.take_along_axis(values.T, top_idx, axis=1)
    top_pos = np.take_along_axis(positions.T, top_idx, axis=1)
    return top_idx, top_val, np.stack([top_pos // width, top_pos % width], axis=-1)


def assert_equals_brute_force(idx, model, data, top_n, batch_size):
    for layer in LAYERS:
        want_idx, want_val, want_pos = brute_force_top_n(model, data, layer, top_n, batch_size)
        L = idx[layer]
        np.testing.assert_array_equal(L.top_indices, want_idx)
        np.testing.assert_array_equal(L.top_activations, want_val)
        np.testing.assert_array_equal(L.top_positions, want_pos)


@pytest.mark.parametrize("shape", [(5, 3, 36, 40), (5, 3, 9, 33), (4, 6, 7, 8), (4, 6, 3, 31), (4, 5, 50), (6, 7)])
@pytest.mark.parametrize("with_threshold", [False, True])
def test_spatial_max_is_the_first_row_major_maximum(shape, with_threshold):
    """Both CPU strategies (row-first for wide maps, amax + located candidates otherwise) equal the
    definition: the maximum and its first row-major position, with many ties and a NaN map."""
    from nsi_widgets.index.scan import spatial_max
    generator = torch.Generator().manual_seed(sum(shape))
    maps = torch.randint(0, 4, shape, generator=generator).float()   # values 0..3: ties everywhere
    maps[0, 0] = 2.0                                                  # a constant map: first position
    maps[1, 0].view(-1)[-1] = 9.0                                     # the maximum at the very end
    maps[1, 1].view(-1)[0] = float("nan")                             # NaN never enters a top list
    flat = maps.reshape(shape[0], shape[1], -1).numpy()
    want_values = np.where(np.isnan(flat).any(axis=2), -np.inf, np.nan_to_num(flat, nan=-1.0).max(axis=2))
    want_positions = np.nan_to_num(flat, nan=-1.0).argmax(axis=2)       # numpy: first maximum
    threshold = torch.full((shape[1],), 2.5) if with_threshold else None
    values, positions = spatial_max(maps, threshold)
    np.testing.assert_array_equal(values.numpy(), want_values)
    located = np.isfinite(want_values) & (want_values > 2.5 if with_threshold else True)
    np.testing.assert_array_equal(positions.numpy()[located], want_positions[located])
    if with_threshold:                                                # not located: visibly so
        assert (positions.numpy()[~located] == -1).all()


@pytest.mark.parametrize("batch_size", [3, 16])
def test_top_n_equals_brute_force_on_wide_maps(batch_size):
    """Maps at least 32 wide take the row-first reduction; duplicated images make ties between images."""
    model = make_cnn(seed=3)
    images = make_images(14, height=36, width=40, seed=4)
    data = ListDataset(images + images[:4], [0] * 18)
    idx = nsi.index_neurons(model, data, LAYERS, top_n=6, batch_size=batch_size,
                            progress=False, indexes=(), neuron_features=None)
    assert idx["relu1"].map_size == (36, 40)
    assert_equals_brute_force(idx, model, data, 6, batch_size)


@pytest.mark.parametrize("batch_size", [1, 5, 16, 64])
def test_top_n_equals_brute_force(tiny_model, tiny_data, batch_size):
    idx = nsi.index_neurons(tiny_model, tiny_data, LAYERS, top_n=7, batch_size=batch_size,
                            progress=False, indexes=(), neuron_features=None)
    assert idx.layers == LAYERS
    assert_equals_brute_force(idx, tiny_model, tiny_data, 7, batch_size)
    for layer in LAYERS:
        assert idx[layer].top_indices.dtype == np.int64 and idx[layer].top_activations.dtype == np.float32


def test_ties_break_by_dataset_index_and_dead_units(tiny_model, tiny_data):
    # conv2 unit 0 is dead: every map is all zero, so all images tie at 0 with argmax at (0, 0).
    idx = nsi.index_neurons(tiny_model, tiny_data, ["relu2"], top_n=5, batch_size=4, progress=False,
                            indexes=(), neuron_features=None)
    L = idx["relu2"]
    np.testing.assert_array_equal(L.top_indices[0], np.arange(5))
    np.testing.assert_array_equal(L.top_activations[0], np.zeros(5, np.float32))
    np.testing.assert_array_equal(L.top_positions[0], np.zeros((5, 2)))
    assert L.dead[0] and not L.dead[1:].any()


def test_duplicate_images_tie_to_smaller_index():
    model = make_cnn(1, dead_unit=False)
    images = make_images(6)
    data = [images[i % 3] for i in range(6)]            # image i and i + 3 are identical
    idx = nsi.index_neurons(model, data, ["relu1"], top_n=6, batch_size=4, progress=False, indexes=(),
                            neuron_features=None)
    for row in idx["relu1"].top_indices:
        for a, b in zip(row[0::2], row[1::2]):           # pairs of equal values, smaller index first
            assert a + 3 == b


def test_top_n_capped_at_dataset_size(tiny_model):
    data = make_images(4)
    idx = nsi.index_neurons(tiny_model, data, ["relu1"], top_n=100, progress=False, indexes=(), neuron_features=None)
    assert idx["relu1"].top_indices.shape == (6, 4)
    assert (np.sort(idx["relu1"].top_indices, axis=1) == np.arange(4)).all()
    assert (idx["relu1"].top_labels == -1).all()


def test_image_types_give_identical_results(tiny_model):
    images = make_images(9, seed=3)
    as_uint8 = [(im * 255).round().to(torch.uint8) for im in images]
    as_float = [im.float() / 255 for im in as_uint8]
    as_hwc = [im.permute(1, 2, 0).numpy() for im in as_uint8]
    from PIL import Image
    as_pil = [Image.fromarray(a) for a in as_hwc]
    results = [nsi.index_neurons(tiny_model, d, ["relu3"], top_n=4, progress=False, indexes=(), neuron_features=None)
               for d in (as_float, as_uint8, as_hwc, as_pil)]
    for other in results[1:]:
        np.testing.assert_array_equal(other["relu3"].top_indices, results[0]["relu3"].top_indices)
        np.testing.assert_array_equal(other["relu3"].top_activations, results[0]["relu3"].top_activations)


def test_preprocess_is_applied(tiny_model, tiny_data):
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    pre = lambda x: (x - mean) / 0.25
    idx = nsi.index_neurons(tiny_model, tiny_data, ["relu3"], top_n=5, preprocess=pre, progress=False,
                            indexes=(), neuron_features=None)
    normalised = ListDataset([pre(im[None])[0] for im in tiny_data.images], tiny_data.labels)
    want_idx, want_val, _ = brute_force_top_n(tiny_model, normalised, "relu3", 5, 64)
    np.testing.assert_array_equal(idx["relu3"].top_indices, want_idx)
    np.testing.assert_allclose(idx["relu3"].top_activations, want_val, rtol=1e-6)


def test_layers_by_module_and_bad_input(tiny_model, tiny_data):
    idx = nsi.index_neurons(tiny_model, tiny_data, [tiny_model.relu1], top_n=3, progress=False, indexes=(),
                            neuron_features=None)
    assert idx.layers == ["relu1"]
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*conv1"):
        nsi.index_neurons(tiny_model, tiny_data, ["conv9"], progress=False)
    with pytest.raises(ValueError, match="top_n"):
        nsi.index_neurons(tiny_model, tiny_data, ["relu1"], top_n=0, progress=False)
    with pytest.raises(ValueError, match="gray"):
        nsi.index_neurons(tiny_model, tiny_data, ["relu1"], gray="average", progress=False)
    with pytest.raises(ValueError, match="unknown index 'texture'"):
        nsi.index_neurons(tiny_model, tiny_data, ["relu1"], indexes=("texture",), progress=False)
    with pytest.raises(TypeError, match="nn.Module"):
        nsi.index_neurons(lambda x: x, tiny_data, ["relu1"], progress=False)
    with pytest.raises(ValueError, match="differ in size"):
        nsi.index_neurons(tiny_model, make_images(2) + make_images(2, height=30), ["relu1"], progress=False)
    with pytest.raises(ValueError, match="3 colour channels"):
        nsi.index_neurons(tiny_model, [torch.rand(4, 8, 8)], ["relu1"], progress=False)
    assert "relu2" in nsi.list_layers(tiny_model) and "conv1" in nsi.list_layers(tiny_model, "conv")


def test_model_mode_restored(tiny_model, tiny_data):
    tiny_model.train()
    nsi.index_neurons(tiny_model, tiny_data, ["relu1"], top_n=3, progress=False, indexes=(), neuron_features=None)
    assert tiny_model.training


class FailingDataset(ListDataset):
    """Raises when the scan reaches item ``fail_at`` (a crash in the middle of a scan). The checkpoint's
    data fingerprint reads a few items spread over the dataset first; the crash comes only once the
    scan itself has read the item before ``fail_at``."""

    fail_at = None

    def __getitem__(self, i):
        read = self.__dict__.setdefault("read", set())
        if self.fail_at is not None and i >= self.fail_at and self.fail_at - 1 in read:
            raise RuntimeError("simulated crash")
        read.add(i)
        return super().__getitem__(i)


def test_resumed_equals_uninterrupted(tmp_path, tiny_model, tiny_data):
    kwargs = dict(top_n=6, batch_size=4, progress=False, indexes=(), neuron_features=None)
    whole = nsi.index_neurons(tiny_model, tiny_data, LAYERS, **kwargs)
    data = FailingDataset(tiny_data.images, tiny_data.labels)
    data.fail_at = 22
    ckpt = tmp_path / "scan.ckpt.npz"
    with pytest.raises(RuntimeError, match="simulated crash"):
        nsi.index_neurons(tiny_model, data, LAYERS, checkpoint=ckpt, checkpoint_every=2, **kwargs)
    assert ckpt.exists()
    data.fail_at = None
    seen = []
    original = data.__class__.__getitem__

    class Counting(FailingDataset):
        def __getitem__(self, i):
            seen.append(i)
            return original(self, i)

    data.__class__ = Counting
    resumed = nsi.index_neurons(tiny_model, data, LAYERS, checkpoint=ckpt, checkpoint_every=2, **kwargs)
    fingerprinted = set(sample_indices(len(data)))       # read to check the checkpoint's data
    assert min(i for i in seen if i != 0 and i not in fingerprinted) >= 16   # the scan resumed past the saved batches
    for layer in LAYERS:
        for field in ("top_indices", "top_activations", "top_positions", "top_labels"):
            np.testing.assert_array_equal(getattr(resumed[layer], field), getattr(whole[layer], field))


def test_checkpoint_of_another_run_is_refused(tmp_path, tiny_model, tiny_data):
    ckpt = tmp_path / "scan.ckpt.npz"
    nsi.index_neurons(tiny_model, tiny_data, ["relu1"], top_n=3, progress=False, indexes=(),
                      neuron_features=None, checkpoint=ckpt)
    with pytest.raises(ValueError, match="different run.*top_n"):
        nsi.index_neurons(tiny_model, tiny_data, ["relu1"], top_n=4, progress=False, indexes=(),
                          neuron_features=None, checkpoint=ckpt)
    (tmp_path / "junk.npz").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot resume"):
        nsi.index_neurons(tiny_model, tiny_data, ["relu1"], top_n=3, progress=False, indexes=(),
                          neuron_features=None, checkpoint=tmp_path / "junk.npz")


def test_merge_is_associative_and_equals_single_scan():
    rng = np.random.default_rng(0)
    n, channels, top_n = 40, 3, 5
    values = rng.integers(0, 6, size=(n, channels)).astype(np.float32)   # many ties
    positions = rng.integers(0, 9, size=(n, channels))

    def state_of(ids):
        s = TopNState.empty(channels, top_n)
        for chunk in np.array_split(np.array(ids), 3):
            if len(chunk):
                s.update(torch.tensor(values[chunk]), torch.tensor(positions[chunk]), torch.tensor(chunk))
        return s

    full = state_of(range(n))
    a, b, c = state_of(range(0, 13)), state_of(range(13, 29)), state_of(range(29, 40))
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    swapped = c.merge(a).merge(b)
    for s in (left, right, swapped):
        for f in ("values", "indices", "positions"):
            assert torch.equal(getattr(s, f), getattr(full, f))
    # brute force of the tie rule
    for ch in range(channels):
        want = np.lexsort((np.arange(n), -values[:, ch]))[:top_n]
        np.testing.assert_array_equal(full.indices[ch].numpy(), want)


def test_dataloader_workers_give_the_same_result(tiny_model, tiny_data):
    kwargs = dict(top_n=5, batch_size=8, progress=False, indexes=("color",))
    serial = nsi.index_neurons(tiny_model, tiny_data, ["relu2"], **kwargs)
    parallel = nsi.index_neurons(tiny_model, tiny_data, ["relu2"], num_workers=2, **kwargs)
    np.testing.assert_array_equal(parallel["relu2"].top_indices, serial["relu2"].top_indices)
    np.testing.assert_array_equal(parallel["relu2"].gray_activations, serial["relu2"].gray_activations)
