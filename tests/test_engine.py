"""The streaming engine: one forward per batch for any number of consumers; checkpoints keyed by the data."""
import numpy as np
import pytest
import torch

import nsi_widgets as nsi
from nsi_widgets.core.errors import CheckpointMismatchError
from nsi_widgets.core.passes import Consumer, PassOptions, run_pass
from _models import ListDataset, make_cnn, make_images

LAYERS = ["relu1", "relu2", "pool", "relu3"]


class Recording(Consumer):
    """Keeps a copy of every layer output it is given, and counts batches."""

    def __init__(self, layers):
        self.layers = tuple(layers)
        self.seen = {n: [] for n in layers}
        self.batches = []

    def on_layer(self, batch, name, output):
        self.seen[name].append((batch.number, batch.indices.clone(), output.detach().clone()))

    def on_batch(self, batch):
        self.batches.append(batch.number)


class CountingModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_two_consumers_see_identical_outputs_from_one_forward_per_batch(tiny_data):
    model = CountingModel(make_cnn(0)).eval()
    modules = {n: model.inner.get_submodule(n) for n in LAYERS}
    a, b = Recording(["relu1", "relu3"]), Recording(["relu3", "pool"])
    run_pass("test", model, tiny_data, modules, [a, b], PassOptions(batch_size=8, progress=False))
    n_batches = -(-len(tiny_data) // 8)
    assert model.calls == n_batches                      # one forward per batch for both consumers
    assert a.batches == b.batches == list(range(n_batches))
    for (na, ia, oa), (nb, ib, ob) in zip(a.seen["relu3"], b.seen["relu3"]):
        assert na == nb and torch.equal(ia, ib) and torch.equal(oa, ob)
    # ... and they are the layer's real outputs
    images = torch.stack([tiny_data[i][0] for i in range(8)])
    captured = []
    handle = model.inner.relu3.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        model.inner(images)
    handle.remove()
    assert torch.equal(a.seen["relu3"][0][2], captured[0])
    assert "relu1" not in b.seen and a.seen["relu1"] and b.seen["pool"]


def test_a_pass_without_layers_runs_no_forward(tiny_data):
    model = CountingModel(make_cnn(0)).eval()
    images_only = Recording([])
    run_pass("images", model, tiny_data, {"relu1": model.inner.relu1}, [images_only],
             PassOptions(batch_size=5, progress=False), indices=[3, 4, 9, 30])
    assert model.calls == 0 and images_only.batches == [0]


def _index(model, data, **kwargs):
    defaults = dict(top_n=5, batch_size=4, progress=False, indexes=("color", "class"), checkpoint_every=1)
    return nsi.index_neurons(model, data, LAYERS, **{**defaults, **kwargs})


@pytest.mark.parametrize("change, phrase", [
    ("other data of the same size", "data"),
    ("preprocess", "preprocess"),
    ("model weights", "model"),
    ("layers", "layers"),
    ("top_n", "top_n"),
    ("gray", "gray"),
])
def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(tmp_path, tiny_model, tiny_data, change, phrase):
    ckpt = tmp_path / "run.ckpt"
    _index(tiny_model, tiny_data, checkpoint=ckpt)        # a finished run's checkpoint
    before = ckpt.read_bytes()
    model, data, kwargs = tiny_model, tiny_data, {}
    if change == "other data of the same size":
        data = ListDataset(make_images(len(tiny_data), seed=99), tiny_data.labels, classes=tiny_data.classes,
                           class_parents=tiny_data.class_parents)
    elif change == "preprocess":
        kwargs["preprocess"] = lambda x: x * 0.5
    elif change == "model weights":
        model = make_cnn(1)
    elif change == "layers":
        kwargs["layers"] = ["relu1"]
    elif change == "top_n":
        kwargs["top_n"] = 4
    elif change == "gray":
        kwargs["gray"] = "luminance"
    layers = kwargs.pop("layers", LAYERS)
    with pytest.raises(CheckpointMismatchError, match=f"different run.*{phrase}"):
        nsi.index_neurons(model, data, layers, **{**dict(top_n=5, batch_size=4, progress=False,
                                                         checkpoint_every=1, checkpoint=ckpt), **kwargs})
    assert ckpt.read_bytes() == before


def _scaler(value):
    return lambda x: x * value


def test_two_preprocess_functions_differing_only_in_a_constant_are_told_apart(tmp_path, tiny_model, tiny_data):
    ckpt = tmp_path / "run.ckpt"
    _index(tiny_model, tiny_data, checkpoint=ckpt, preprocess=_scaler(torch.tensor(0.5)), indexes=())
    _index(tiny_model, tiny_data, checkpoint=ckpt, preprocess=_scaler(torch.tensor(0.5)), indexes=())  # same: fine
    with pytest.raises(CheckpointMismatchError, match="preprocess"):
        _index(tiny_model, tiny_data, checkpoint=ckpt, preprocess=_scaler(torch.tensor(0.25)), indexes=())


def test_a_finished_checkpoint_gives_the_same_index_without_reading_the_data_again(tmp_path, tiny_model, tiny_data):
    ckpt = tmp_path / "run.ckpt"
    first = _index(tiny_model, tiny_data, checkpoint=ckpt)
    reads = []

    class Counting(ListDataset):
        def __getitem__(self, i):
            reads.append(i)
            return super().__getitem__(i)

    data = Counting(tiny_data.images, tiny_data.labels, classes=tiny_data.classes,
                    class_parents=tiny_data.class_parents)
    again = _index(tiny_model, data, checkpoint=ckpt)
    from nsi_widgets.core.fingerprint import sample_indices
    extra = set(reads) - set(sample_indices(len(data))) - {0}
    # besides the probe and the fingerprint: only the shortcut's sample self-check reads a few images
    assert len(extra) <= 8
    _assert_same_index(first, again)


def _assert_same_index(a, b):
    assert a.layers == b.layers
    for layer in a.layers:
        A, B = a[layer], b[layer]
        for field in ("top_indices", "top_activations", "top_positions", "top_labels", "neuron_features",
                      "feature_coverage", "top_crops"):
            np.testing.assert_array_equal(getattr(A, field), getattr(B, field), err_msg=f"{layer}.{field}")
        assert list(A.scores) == list(B.scores)
        for name in A.scores:
            np.testing.assert_array_equal(A.scores[name], B.scores[name], err_msg=f"{layer}.{name}")
        for name in A.details:
            np.testing.assert_array_equal(A.details[name], B.details[name], err_msg=f"{layer}.{name}")
