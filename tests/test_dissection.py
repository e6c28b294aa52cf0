"""Network Dissection against brute force: every map stored, numpy quantiles, numpy upsampling, counts."""
from collections import OrderedDict

import numpy as np
import pytest
import torch

import nsi_widgets as nsi
from nsi_widgets.concepts import dissect, load_dissection
from nsi_widgets.concepts.dissection import _keep
from nsi_widgets.concepts.upsample import AlignedUpsampler
from nsi_widgets.core.errors import InputError
from _models import make_cnn, make_images

LAYERS = ["relu1", "relu2", "pool", "relu3"]


class Concepts(torch.utils.data.Dataset):
    """Masks from the images themselves: bright pixels, reddish pixels, the left third, and a concept
    of a second category that only some images label (the 'spot' category is absent elsewhere)."""

    concepts = ["bright", "reddish", "left", "spot"]
    concept_categories = ["tone", "tone", "place", "marks"]

    def __init__(self, n, mask_scale=1, seed=3, fail_at=None, fail_after=None):
        self.images = make_images(n, seed=seed)
        self.scale, self.fail_at, self.fail_after = mask_scale, fail_at, fail_after

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        reads = self.__dict__.setdefault("reads", [])    # crash when the second (IoU) pass reaches fail_at
        if self.fail_at is not None and i == self.fail_at and reads.count(i) == 1:
            raise RuntimeError("simulated crash")
        if self.fail_after is not None and len(reads) == self.fail_after:     # crash at the n-th read
            raise RuntimeError("simulated crash")
        reads.append(i)
        image = self.images[i]
        h, w = image.shape[1] // self.scale, image.shape[2] // self.scale
        small = torch.nn.functional.avg_pool2d(image[None], self.scale)[0] if self.scale > 1 else image
        left = torch.zeros(h, w, dtype=torch.bool)
        left[:, : w // 3] = True
        spot = torch.zeros(h, w, dtype=torch.bool)
        if i % 3 == 0:
            spot[h // 4: h // 2, w // 4: w // 2] = True
        masks = torch.stack([small.mean(0) > 0.55, small[0] > small[1] + 0.1, left, spot])
        return image, masks


def _maps(model, data, layer, batch_size):
    """Every map of the layer, forwarded in the same batches as the run (CPU results depend on them)."""
    module = dict(model.named_modules())[layer]
    out = []
    handle = module.register_forward_hook(lambda m, i, o: out.append(o.detach().double().numpy()))
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            model(torch.stack([data[i][0] for i in range(start, min(start + batch_size, len(data)))]))
    handle.remove()
    return np.concatenate(out)                               # (n, C, h, w)


def _upsample(maps, rf, image_size, mask_size):
    """Rows then columns, a[lo] * (1 - f) + a[hi] * f, at the receptive-field centres (written anew)."""
    def axis(m, image, length, r, s, p):
        lo, hi, f = [], [], []
        for v in range(m):
            u = (v + 0.5) * image / m - 0.5
            t = min(max((u + p - (r - 1) / 2) / s, 0.0), length - 1.0)
            a = int(np.floor(t))
            lo.append(a), hi.append(min(a + 1, length - 1)), f.append(t - a)
        return np.array(lo), np.array(hi), np.array(f)

    ly, hy, fy = axis(mask_size[0], image_size[0], maps.shape[-2], rf.size[0], rf.stride[0], rf.padding[0])
    lx, hx, fx = axis(mask_size[1], image_size[1], maps.shape[-1], rf.size[1], rf.stride[1], rf.padding[1])
    x = maps[..., ly, :] * (1 - fy)[:, None] + maps[..., hy, :] * fy[:, None]
    return x[..., lx] * (1 - fx) + x[..., hx] * fx


def brute_force(model, data, layer, quantile, union, batch_size):
    maps = _maps(model, data, layer, batch_size)
    n, units = maps.shape[:2]
    thresholds = np.array([np.quantile(maps[:, c].ravel(), 1 - quantile) for c in range(units)])
    masks = np.stack([data[i][1].numpy() for i in range(n)])              # (n, K, Hm, Wm)
    image_size = tuple(data[0][0].shape[1:])
    rf = nsi.receptive_field(model, layer, input_size=image_size)
    up = _upsample(maps, rf, image_size, masks.shape[-2:])                # (n, C, Hm, Wm)
    above = up > thresholds[None, :, None, None]
    categories = data.concept_categories
    both = np.einsum("ncyx,nkyx->ck", above.astype(np.int64), masks.astype(np.int64))
    concept_pixels = masks.sum(axis=(0, 2, 3))
    iou = np.zeros((units, masks.shape[1]))
    for k in range(masks.shape[1]):
        if union == "all":
            images = np.ones(n, bool)
        else:                                  # images where k's category has a pixel of some concept
            same = [j for j, c in enumerate(categories) if c == categories[k]]
            images = masks[:, same].any(axis=(1, 2, 3))
        unit_pixels = above[images].sum(axis=(0, 2, 3))
        denominator = unit_pixels + concept_pixels[k] - both[:, k]
        iou[:, k] = np.where(denominator > 0, both[:, k] / np.where(denominator > 0, denominator, 1), 0)
    return thresholds, iou, (maps > thresholds[None, :, None, None]).mean(axis=(0, 2, 3))


@pytest.mark.parametrize("union", ["labelled", "all"])
@pytest.mark.parametrize("batch_size", [1, 7])
@pytest.mark.parametrize("mask_scale", [1, 2])
def test_iou_and_thresholds_equal_brute_force(union, batch_size, mask_scale):
    model, data = make_cnn(0), Concepts(23, mask_scale)
    result = dissect(model, data, LAYERS, quantile=0.02, union=union, batch_size=batch_size, progress=False)
    for layer in LAYERS:
        thresholds, iou, share = brute_force(model, data, layer, 0.02, union, batch_size)
        L = result[layer]
        np.testing.assert_array_equal(L.thresholds, thresholds)
        np.testing.assert_allclose(L.iou, iou, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(L.above_share, share, rtol=1e-12)
        best = np.where(iou.max(axis=1) > 0.04, iou.argmax(axis=1), -1)
        np.testing.assert_array_equal(L.best_concept, best)
        assert L.concepts == Concepts.concepts and L.categories == Concepts.concept_categories
    if union == "labelled":   # the conventions differ here: 'spot' is labelled in a third of the images
        other = dissect(model, data, ["relu3"], quantile=0.02, union="all", batch_size=batch_size, progress=False)
        assert (other["relu3"].unit_pixels[:, 3] > result["relu3"].unit_pixels[:, 3]).any()
        np.testing.assert_array_equal(other["relu3"].unit_pixels[:, :3], result["relu3"].unit_pixels[:, :3])


def test_a_checkpoint_resumed_mid_way_equals_an_uninterrupted_run(tmp_path):
    model = make_cnn(0)
    whole = dissect(model, Concepts(23), LAYERS, quantile=0.02, batch_size=4, progress=False)
    ckpt = tmp_path / "dissect.ckpt"
    crashing = Concepts(23, fail_at=14)
    with pytest.raises(RuntimeError, match="simulated crash"):
        dissect(model, crashing, LAYERS, quantile=0.02, batch_size=4, progress=False, checkpoint=ckpt,
                checkpoint_every=1)
    from nsi_widgets.core.storage import read_archive
    with read_archive(ckpt, "nsi-widgets-checkpoint", 2) as archive:
        sections = archive.manifest["sections"]
    assert sections["dissection: quantiles"]["finished"]
    assert 0 < sections["dissection: IoU"]["batches_done"] < 6 and not sections["dissection: IoU"]["finished"]
    resumed = dissect(model, Concepts(23), LAYERS, quantile=0.02, batch_size=4, progress=False, checkpoint=ckpt,
                      checkpoint_every=1)
    for layer in LAYERS:
        np.testing.assert_array_equal(resumed[layer].iou, whole[layer].iou)
        np.testing.assert_array_equal(resumed[layer].thresholds, whole[layer].thresholds)


def test_a_checkpoint_resumed_in_the_first_pass_equals_an_uninterrupted_run(tmp_path):
    """The first pass's state holds the kept values with their positions and neighbourhoods."""
    model = make_cnn(0)
    whole = dissect(model, Concepts(23), LAYERS, quantile=0.02, batch_size=4, progress=False)
    counting = Concepts(23)
    dissect(model, counting, LAYERS, quantile=0.02, batch_size=4, progress=False, checkpoint=tmp_path / "count.ckpt")
    before = len(counting.reads) - 2 * 23                         # reads of the fingerprint and the plan
    ckpt = tmp_path / "dissect.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        dissect(model, Concepts(23, fail_after=before + 10), LAYERS, quantile=0.02, batch_size=4, progress=False,
                checkpoint=ckpt, checkpoint_every=1)
    from nsi_widgets.core.storage import read_archive
    with read_archive(ckpt, "nsi-widgets-checkpoint", 2) as archive:
        sections = archive.manifest["sections"]
    assert sections["dissection: quantiles"]["batches_done"] == 2 and not sections["dissection: quantiles"]["finished"]
    resumed = dissect(model, Concepts(23), LAYERS, quantile=0.02, batch_size=4, progress=False, checkpoint=ckpt)
    for layer in LAYERS:
        for field in ("iou", "thresholds", "intersection", "unit_pixels", "above_share"):
            np.testing.assert_array_equal(getattr(resumed[layer], field), getattr(whole[layer], field))


def _batch_forwards(model, run):
    """How many batches (more than one image) went through the model's first layer during ``run()``."""
    sizes = []
    handle = model.conv1.register_forward_hook(lambda m, i, o: sizes.append(len(o)))
    try:
        result = run()
    finally:
        handle.remove()
    return result, sum(size > 1 for size in sizes)


def test_one_forward_by_default_and_two_when_only_the_values_fit_in_memory():
    """Default: one forward; the first pass keeps each kept value's position and 3 x 3 neighbourhood
    and the IoU pass reads only the masks. With a budget that holds the kept values but not those
    entries, the IoU pass forwards again. Both equal each other (and brute force, above)."""
    model, data = make_cnn(0), Concepts(23, 2)
    one, forwards_one = _batch_forwards(model, lambda: dissect(model, data, LAYERS, quantile=0.02, batch_size=7,
                                                                progress=False))
    sizes = {layer: _maps(model, data, layer, 7).shape for layer in LAYERS}
    values_only = sum(4 * s[1] * _keep(s[0] * s[2] * s[3], 0.02) for s in sizes.values())
    two, forwards_two = _batch_forwards(model, lambda: dissect(model, data, LAYERS, quantile=0.02, batch_size=7,
                                                                progress=False, max_quantile_bytes=2 * values_only))
    assert (one.meta["forward_passes"], forwards_one) == (1, 4)
    assert (two.meta["forward_passes"], forwards_two) == (2, 8) and two.meta["second_pass_layers"] == LAYERS
    for layer in LAYERS:
        assert one[layer].quantile_mode == two[layer].quantile_mode == "exact"
        for field in ("iou", "thresholds", "best_concept", "intersection", "unit_pixels", "above_share"):
            np.testing.assert_array_equal(getattr(one[layer], field), getattr(two[layer], field), err_msg=field)


def test_ties_at_a_threshold_send_that_layer_to_a_second_forward_and_equal_brute_force():
    """A layer clipped at 0.05 holds that value at more than 2 % of its positions, so its threshold
    equals the smallest kept value and values tied with it may be missing from the kept ones: that
    layer (only) is counted in a second forward. conv3 (before its ReLU: negative values) stays in
    the one-forward counting."""
    base = make_cnn(0)
    parts = list(base.named_children())
    model = torch.nn.Sequential(OrderedDict(parts[:-1] + [("clip", torch.nn.Hardtanh(0.0, 0.05)), parts[-1]])).eval()
    data = Concepts(23)
    result = dissect(model, data, ["conv3", "clip"], quantile=0.02, batch_size=7, progress=False)
    assert result.meta["second_pass_layers"] == ["clip"] and result.meta["forward_passes"] == 2
    for layer in ("conv3", "clip"):
        thresholds, iou, share = brute_force(model, data, layer, 0.02, "labelled", 7)
        np.testing.assert_array_equal(result[layer].thresholds, thresholds)
        np.testing.assert_allclose(result[layer].iou, iou, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(result[layer].above_share, share, rtol=1e-12)
    assert result["clip"].thresholds.max() == np.float32(0.05) and _maps(model, data, "conv3", 7).min() < 0


class BatchMasks(Concepts):
    """Concepts that also read masks in batches (``masks(indices)``, as zoo.ConceptDataset does); ``wrong``
    corrupts them from item ``wrong`` on, ``shape`` returns them flattened from item ``shape`` on."""

    def __init__(self, *args, wrong=None, shape=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.wrong, self.shape, self.batch_reads = wrong, shape, []

    def masks(self, indices):
        self.batch_reads.extend(indices)
        out = np.stack([Concepts.__getitem__(self, i)[1].numpy() for i in indices])
        del self.reads[-len(indices):]                   # reads counts the items read, not these
        if self.wrong is not None:
            out[np.asarray(indices) >= self.wrong] ^= True
        if self.shape is not None and max(indices) >= self.shape:
            return out.reshape(len(indices), -1)
        return out


def test_masks_read_in_batches_give_the_same_tallies_without_reading_items():
    """The IoU pass of the one-forward mode reads a dataset's own masks(indices) when it has one whose
    masks of item 0 equal the item's: no item is read then, and every tally equals the items' path."""
    model = make_cnn(0)
    items = dissect(model, Concepts(23, 2), LAYERS, quantile=0.02, batch_size=7, progress=False)
    data = BatchMasks(23, 2)
    batched = dissect(model, data, LAYERS, quantile=0.02, batch_size=7, progress=False)
    assert batched.meta["forward_passes"] == 1 and sorted(set(data.batch_reads)) == list(range(23))
    assert all(data.reads.count(i) == 1 for i in range(1, 23))          # by the first pass only
    for layer in LAYERS:
        for field in ("iou", "thresholds", "best_concept", "intersection", "unit_pixels", "concept_pixels"):
            np.testing.assert_array_equal(getattr(batched[layer], field), getattr(items[layer], field), err_msg=field)
    # masks(indices) that disagree with the items at item 0: the items are read instead
    disagree = BatchMasks(23, 2, wrong=0)
    again = dissect(model, disagree, LAYERS, quantile=0.02, batch_size=7, progress=False)
    for layer in LAYERS:
        np.testing.assert_array_equal(again[layer].intersection, items[layer].intersection)
    with pytest.raises(InputError, match="masks\\(indices\\)"):
        dissect(model, BatchMasks(23, 2, shape=8), LAYERS, quantile=0.02, batch_size=7, progress=False)


class WithImages(BatchMasks):
    """Also offers its images alone (``image_data``, as zoo.ConceptDataset does); ``shift`` makes them differ."""

    def __init__(self, *args, shift=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.image_data = [(image.clamp(0, 1 - shift) + shift, 0) for image in self.images]


def test_a_dataset_s_images_alone_feed_the_first_pass_when_they_are_its_items_images():
    model = make_cnn(0)
    items = dissect(model, Concepts(23, 2), LAYERS, quantile=0.02, batch_size=7, progress=False)
    data = WithImages(23, 2)
    fast = dissect(model, data, LAYERS, quantile=0.02, batch_size=7, progress=False)
    assert set(data.reads) == {0}          # item 0 only (describe, the plan and the two checks); no pass reads items
    shifted = WithImages(23, 2, shift=0.01)                     # other images: ignored, the items are read
    slow = dissect(model, shifted, LAYERS, quantile=0.02, batch_size=7, progress=False)
    assert all(shifted.reads.count(i) >= 1 for i in range(23))
    for layer in LAYERS:
        for field in ("iou", "thresholds", "intersection", "unit_pixels", "above_share"):
            np.testing.assert_array_equal(getattr(fast[layer], field), getattr(items[layer], field), err_msg=field)
            np.testing.assert_array_equal(getattr(slow[layer], field), getattr(items[layer], field), err_msg=field)


def test_the_upsampled_peak_lands_on_the_receptive_field_centre():
    model = make_cnn(0)
    for layer in ("relu2", "pool", "relu3"):
        rf = nsi.receptive_field(model, layer, input_size=(40, 48))
        out = {}
        handle = dict(model.named_modules())[layer].register_forward_hook(
            lambda m, i, o: out.__setitem__("s", o.shape))
        with torch.no_grad():
            model(torch.zeros(1, 3, 40, 48))
        handle.remove()
        h, w = out["s"][-2:]
        up = AlignedUpsampler(rf, (h, w), (40, 48), (40, 48))
        for y, x in [(1, 1), (h // 2, w // 2), (h - 2, w - 3)]:
            delta = torch.zeros(1, h, w)
            delta[0, y, x] = 1.0
            peak = up(delta)[0]
            py, px = np.unravel_index(int(peak.argmax()), peak.shape)
            cy = y * rf.stride[0] - rf.padding[0] + (rf.size[0] - 1) / 2
            cx = x * rf.stride[1] - rf.padding[1] + (rf.size[1] - 1) / 2
            assert abs(py - cy) <= 0.5 and abs(px - cx) <= 0.5, (layer, y, x, py, px, cy, cx)


def test_sampled_quantiles_report_their_error_and_stay_within_it():
    model, data = make_cnn(0), Concepts(23)
    exact = dissect(model, data, ["relu1"], quantile=0.05, progress=False)
    sampled = dissect(model, data, ["relu1"], quantile=0.05, progress=False, max_quantile_bytes=2000)
    L = sampled["relu1"]
    assert exact["relu1"].quantile_mode == "exact" and L.quantile_mode == "sampled"
    assert 0 < L.sample_rate < 1 and L.quantile_error_bound > 0
    alive = exact["relu1"].thresholds > 0
    assert (np.abs(L.above_share[alive] - 0.05) <= L.quantile_error_bound).all()


def test_results_save_load_and_attach(tmp_path):
    model, data = make_cnn(0), Concepts(13)
    result = dissect(model, data, ["relu1", "relu3"], progress=False)
    loaded = load_dissection(result.save(tmp_path / "d"))
    for layer in result:
        for field in ("iou", "thresholds", "best_concept", "best_iou", "intersection", "unit_pixels"):
            np.testing.assert_array_equal(getattr(loaded[layer], field), getattr(result[layer], field))
    assert loaded.meta == result.meta
    idx = nsi.index_neurons(model, data_for_index(data), ["relu1", "relu3"], top_n=3, progress=False, indexes=())
    idx.attach("dissection", result.to_attachment())
    df = nsi.load_index(idx.save(tmp_path / "i")).to_pandas()
    np.testing.assert_allclose(df[df.layer == "relu3"]["dissection.best_iou"].to_numpy(), result["relu3"].best_iou)
    assert set(result.summary().columns) >= {"layer", "category", "detectors", "unique_concepts"}


def data_for_index(concepts):
    return [concepts[i][0] for i in range(len(concepts))]


@pytest.mark.parametrize("kwargs, phrase", [
    (dict(quantile=0), "quantile"), (dict(quantile=1.5), "quantile"), (dict(iou_threshold=-1), "iou_threshold"),
    (dict(union="some"), "union"), (dict(batch_size=0), "batch_size"), (dict(layers=["nope"]), "unknown layer"),
])
def test_bad_arguments_are_clear_errors(kwargs, phrase):
    layers = kwargs.pop("layers", ["relu1"])
    with pytest.raises(InputError, match=phrase):
        dissect(make_cnn(0), Concepts(5), layers, progress=False, **kwargs)


@pytest.mark.parametrize("bad, phrase", [
    ("no names", "name its concepts"), ("wrong mask count", "one mask per concept"),
    ("float masks", "boolean"), ("not pairs", "(image, masks)"), ("masks larger", "larger than the images"),
])
def test_bad_concept_data_is_a_clear_error(bad, phrase):
    data = Concepts(5)
    if bad == "no names":
        data.concepts = None
    elif bad == "wrong mask count":
        data.concepts = ["a", "b"]
        data.concept_categories = ["x", "y"]
    elif bad == "float masks":
        data.__class__ = type("F", (Concepts,), {"__getitem__": lambda s, i: (s.images[i], torch.rand(4, 20, 24))})
    elif bad == "not pairs":
        data.__class__ = type("P", (Concepts,), {"__getitem__": lambda s, i: s.images[i]})
    elif bad == "masks larger":
        data.__class__ = type("L", (Concepts,), {"__getitem__": lambda s, i: (s.images[i],
                                                                            torch.zeros(4, 40, 48, dtype=torch.bool))})
    with pytest.raises(InputError, match=phrase):
        dissect(make_cnn(0), data, ["relu1"], progress=False)


@pytest.mark.parametrize("k", [4, 30, 70])
def test_mask_patterns_describe_every_pixel_for_any_number_of_concepts(k):
    """The pattern ids (a flag table up to 22 concepts, numpy.unique up to 63, bytes beyond) give each
    pixel exactly its concepts; per image the categories labelled, and the pixels of each concept."""
    from nsi_widgets.concepts.dissection import _mask_patterns

    rng = np.random.default_rng(k)
    masks = torch.from_numpy(rng.random((3, k, 5, 6)) < 0.3)
    masks[1, : k // 2] = False                                     # image 1 lacks the first categories
    category = np.arange(k) % 3
    onehot = np.eye(3, dtype=np.int64)[category]
    out = _mask_patterns(masks, onehot)
    m = masks.numpy()
    pixels = m.transpose(0, 2, 3, 1).reshape(-1, k)                # (B * H * W, K), row-major pixels
    np.testing.assert_array_equal(out["patterns"][out["pattern_of"]], pixels.astype(np.int64))
    assert len({tuple(p) for p in out["patterns"]}) == len(out["patterns"])      # distinct sets
    present = m.any(axis=(2, 3))                                   # (B, K)
    labelled = np.stack([[present[b, category == g].any() for g in range(3)] for b in range(3)])
    np.testing.assert_array_equal(out["labelled"], labelled.astype(np.int64))
    np.testing.assert_array_equal(out["concept_pixels"], m.sum(axis=(0, 2, 3)))
    assert (out["pixels"], out["width"]) == (30, 6)
