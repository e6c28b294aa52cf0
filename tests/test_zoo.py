"""The embedded default (synthetic shapes, two trained models) and the loaders for users' material.

Speed targets (load < 3 s, 10,000 images < 15 s) are not asserted here: see benchmarks/bench_zoo.py.
The index of the default (both models' accuracy, the spread of the class index, the layer
statistics) is computed once per session.
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nsi_widgets import zoo
from nsi_widgets.zoo.models import ShapesCNN, ShapesResNet, conv_layers

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
LUMA = np.array([0.299, 0.587, 0.114])
NOISE_TOLERANCE = 6 * 0.012 + 1 / 255  # six sigma of the sensor noise, plus rounding to uint8
ARCHITECTURES = {"cnn": ShapesCNN, "resnet": ShapesResNet}


def weights_file(model):
    return zoo.WEIGHTS_DIR / f"shapes_{model}.pt"


@pytest.fixture(scope="session")
def default():
    return zoo.load("shapes")


# --- names ------------------------------------------------------------------------------------

def test_available_lists_shapes_and_unknown_names_list_the_choices():
    assert zoo.available() == ["shapes"]
    with pytest.raises(ValueError, match="available: shapes"):
        zoo.load("imagenet")
    assert list(zoo.MODELS) == ["cnn", "resnet"]
    with pytest.raises(ValueError, match="available: cnn, resnet"):
        zoo.load("shapes", model="vgg")


# --- the generator ------------------------------------------------------------------------------

def test_same_seed_gives_identical_images_and_ground_truth():
    # 300 images span two render chunks (256), so the chunk boundary is covered.
    a, b = zoo.make_shapes(300, seed=11), zoo.make_shapes(300, seed=11)
    assert np.array_equal(a.pixels, b.pixels)
    assert np.array_equal(a.labels, b.labels)
    assert a.ground_truth.keys() == b.ground_truth.keys()
    for key in a.ground_truth:
        assert np.array_equal(a.ground_truth[key], b.ground_truth[key]), key
    c = zoo.make_shapes(300, seed=12)
    assert not np.array_equal(a.pixels, c.pixels)
    assert np.array_equal(zoo.make_shapes(300, seed=11, masks=True).pixels, a.pixels)


@pytest.mark.parametrize("n", [10, 103, 1000])
def test_labels_are_balanced_and_cover_every_class(n):
    data = zoo.make_shapes(n, seed=0, size=24)
    counts = np.bincount(data.labels, minlength=len(data.classes))
    assert counts.sum() == n
    assert counts.max() - counts.min() <= 1
    assert (counts > 0).all() or n < len(data.classes)


def test_items_are_float32_rgb_in_unit_range_with_int_labels():
    data = zoo.make_shapes(40, seed=1, size=32)
    assert isinstance(data, torch.utils.data.Dataset) and len(data) == 40
    for i in range(len(data)):
        image, label = data[i]
        assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert isinstance(label, int) and 0 <= label < len(data.classes)
        # stored as uint8: the item is exactly pixels / 255
        assert torch.equal(image, torch.from_numpy(data.pixels[i]).float() / 255)
    assert torch.equal(data.images([3, 5])[1], data[5][0])
    assert data.targets == data.labels.tolist()
    assert data.image_size == (32, 32)


def test_classes_are_every_colour_shape_and_texture():
    assert len(zoo.CLASSES) == len(set(zoo.CLASSES)) == 240 >= 100
    assert zoo.CLASSES[zoo.class_label("star", "red", "grain")] == "red star on grain"
    # the class of each image is the image's colour, shape and background texture
    data = zoo.make_shapes(2400, seed=4, size=24)
    gt = data.ground_truth
    names = [f"{c} {s} on {t}" for c, s, t in zip(gt["color"], gt["shape"], gt["background"])]
    assert names == [data.classes[k] for k in data.labels]
    counts = np.bincount(data.labels, minlength=240)
    assert (counts == 10).all()
    # one attribute alone spans many classes: what makes the class index spread (docs/zoo.md)
    assert len({n for n in data.classes if " red " in f" {n} "}) == 24
    assert len({n for n in data.classes if " star " in f" {n} "}) == 40
    assert len({n for n in data.classes if n.endswith(" on grain")}) == 60


def test_hierarchies_have_two_levels_above_the_classes():
    data = zoo.make_shapes(20, seed=0, size=24)
    assert data.class_parents == data.class_hierarchies["shape"] == zoo.CLASS_PARENTS
    assert set(data.class_hierarchies) == {"shape", "colour", "texture"}
    for name, first, second in (("shape", zoo.SHAPE_KINDS, {"round", "polygon", "star-like"}),
                                ("colour", zoo.COLORS, {"warm", "cool", "achromatic"}),
                                ("texture", zoo.BACKGROUND_KINDS, {"plain", "textured"})):
        parents = data.class_hierarchies[name]
        level1 = {parents[c] for c in data.classes}
        assert level1 == set(first), name
        assert {parents[p] for p in level1} == second, name
        assert all(parents[p] not in parents for p in level1)   # exactly two levels
    gt = zoo.make_shapes(600, seed=8, size=24)
    for i in range(0, 600, 37):
        info = gt.describe(i)
        assert gt.class_hierarchies["shape"][info["class"]] == info["shape"] == info["superclass"]
        assert gt.class_hierarchies["colour"][info["class"]] == info["color"]
        assert gt.class_hierarchies["texture"][info["class"]] == info["background"]


def test_two_classes_differ_only_by_colour():
    # "red circle on flat" vs "blue circle on flat" is decided by colour alone.
    data = zoo.make_shapes(2400, seed=9, size=24)
    gt = data.ground_truth
    red = data.labels == zoo.class_label("circle", "red", "flat")
    blue = data.labels == zoo.class_label("circle", "blue", "flat")
    assert set(gt["shape"][red]) == set(gt["shape"][blue]) == {"circle"}
    assert set(gt["background"][red]) == set(gt["background"][blue]) == {"flat"}
    assert (gt["color_rgb"][red][:, 0] > gt["color_rgb"][red][:, 2]).all()
    assert (gt["color_rgb"][blue][:, 2] > gt["color_rgb"][blue][:, 0]).all()


def test_ground_truth_matches_the_pixels():
    data = zoo.make_shapes(400, seed=5, size=64, backgrounds=("flat",))
    gt = data.ground_truth
    image = data.pixels.astype(np.float64) / 255
    n, size = len(data), 64
    assert set(gt["background"]) == {"flat"}
    assert all(name.endswith(" on flat") for name in np.asarray(data.classes)[data.labels])
    # The corner never lies in a shape (shapes stay inside the image), so it shows the flat background.
    assert np.abs(image[:, :, 0, 0] - gt["background_rgb"]).max() <= NOISE_TOLERANCE
    # Filled shapes cover their centre pixel with the drawn colour (a ring's centre is its hole).
    cy, cx = np.floor(gt["center"]).astype(int).T
    centre = image[np.arange(n), :, cy, cx]
    filled = gt["shape"] != "ring"
    assert np.abs(centre[filled] - gt["color_rgb"][filled]).max() <= NOISE_TOLERANCE
    ring = ~filled
    assert np.abs(centre[ring] - gt["background_rgb"][ring]).max() <= NOISE_TOLERANCE
    # Geometry within its documented ranges.
    radius = gt["radius"]
    assert ((radius >= 0.12 * size - 1e-3) & (radius <= 0.30 * size + 1e-3)).all()
    assert ((gt["center"] > radius[:, None]) & (gt["center"] < size - radius[:, None])).all()
    # Every shape stays visible in grey: its luminance differs from the background's by >= 0.2
    # (the tint leaves luminance unchanged; clipping at [0, 1] may take off a little).
    contrast = np.abs(gt["color_rgb"] @ LUMA - gt["background_rgb"] @ LUMA)
    assert contrast.min() >= 0.19


def test_textures_are_what_their_names_say():
    data = zoo.make_shapes(800, seed=10, size=64)
    gt = data.ground_truth
    image = data.pixels.astype(np.float64) / 255
    luma = np.einsum("nchw,c->nhw", image, LUMA)
    corner = luma[:, :12, :12]                         # a corner patch (shapes rarely reach it)
    fine = np.abs(np.diff(corner, axis=2)).mean(axis=(1, 2))          # pixel-to-pixel changes
    spread = corner.std(axis=(1, 2))
    kind = gt["background"]
    assert np.median(fine[kind == "grain"]) > 3 * np.median(fine[kind == "flat"])
    assert np.median(spread[kind == "flat"]) < 0.02
    for textured in ("clouds", "gradient"):
        assert np.median(spread[kind == textured]) > 1.5 * np.median(spread[kind == "flat"]), textured
        assert np.median(fine[kind == textured]) < 1.5 * np.median(fine[kind == "flat"]), textured


def test_shapes_are_drawn_as_their_kind():
    # Each figure's area, measured from the pixels, against its geometry (radius r):
    # circle pi r^2, square side 1.64 r, triangle and star of outer radius 1.25 r (star inner 0.5 r),
    # cross of two 2 r x 0.68 r bars, ring between 0.5 r and 1.02 r.
    data = zoo.make_shapes(1200, seed=6, size=64, backgrounds=("flat",))
    gt = data.ground_truth
    image = data.pixels.astype(np.float64) / 255
    fg, bg = gt["color_rgb"].astype(np.float64), gt["background_rgb"].astype(np.float64)
    step = fg - bg
    # Per-pixel coverage: where the pixel lies between background and shape colour (anti-aliased edges
    # count in part, so the sum is the area).
    coverage = np.einsum("nchw,nc->nhw", image - bg[:, :, None, None], step) / (step ** 2).sum(1)[:, None, None]
    area = coverage.sum(axis=(1, 2)) / gt["radius"].astype(np.float64) ** 2
    expected = {
        "circle": np.pi,
        "square": 1.64 ** 2,
        "triangle": 3 * np.sqrt(3) / 4 * 1.25 ** 2,
        "star": 5 * 1.25 * 0.5 * np.sin(np.pi / 5),
        "cross": 2 * (2 * 0.68) - 0.68 ** 2,
        "ring": np.pi * (1.02 ** 2 - 0.5 ** 2),
    }
    for kind, value in expected.items():
        measured = area[gt["shape"] == kind]
        assert len(measured) > 20
        assert np.median(measured) == pytest.approx(value, rel=0.05), kind


def test_make_shapes_rejects_bad_arguments_before_work():
    with pytest.raises(ValueError, match="n must be"):
        zoo.make_shapes(0)
    with pytest.raises(ValueError, match="size"):
        zoo.make_shapes(5, size=8)
    with pytest.raises(ValueError, match="backgrounds"):
        zoo.make_shapes(5, backgrounds=("plaid",))
    with pytest.raises(ValueError, match="radius_range"):
        zoo.make_shapes(5, radius_range=(0.3, 0.1))
    with pytest.raises(ValueError, match="seed"):
        zoo.make_shapes(5, seed=-1)


def test_describe_and_to_pandas_report_the_ground_truth():
    data = zoo.make_shapes(12, seed=2, size=24)
    info = data.describe(3)
    assert info["class"] == data.classes[data.labels[3]]
    assert info["superclass"] == data.class_parents[info["class"]]
    assert info["shape"] == data.ground_truth["shape"][3]
    frame = data.to_pandas()
    assert len(frame) == 12
    assert list(frame["class"]) == [data.classes[k] for k in data.labels]
    assert np.allclose(frame["center_x"], data.ground_truth["center"][:, 1])


# --- the models ---------------------------------------------------------------------------------

def _record(model, names):
    recorded = {}
    for name in names:
        module = dict(model.named_modules())[name]
        module.register_forward_hook(lambda m, args, out, name=name: recorded.__setitem__(name, out))
    logits = model(torch.rand(2, 3, 64, 64))
    return logits, recorded


def test_shapes_cnn_layer_names_record_rectified_activations():
    torch.manual_seed(0)
    model = ShapesCNN().eval()
    names = conv_layers(model)
    assert names == list(zoo.CONV_LAYERS) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    for name in names:
        block = getattr(model, name)
        assert isinstance(block, nn.Sequential)
        assert isinstance(block[0], nn.Conv2d) and isinstance(block[-1], nn.ReLU)
    for k in range(1, len(names)):
        assert isinstance(getattr(model, f"pool{k}"), nn.MaxPool2d)
    logits, recorded = _record(model, names)
    assert logits.shape == (2, 240)
    assert [tuple(recorded[n].shape[2:]) for n in names] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert all(bool((recorded[n] >= 0).all()) for n in names)


def test_shapes_resnet_is_deeper_residual_and_its_layers_are_rectified():
    torch.manual_seed(0)
    model = ShapesResNet().eval()
    names = conv_layers(model)
    assert names == list(zoo.RESNET_LAYERS) == ["stem", "block1", "block2", "block3", "block4"]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 9 > len(zoo.CONV_LAYERS)                    # deeper main path than the CNN
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) >= 9
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    block = model.block2
    assert isinstance(block.relu2, nn.ReLU) and isinstance(block.shortcut, nn.Sequential)
    logits, recorded = _record(model, names)
    assert logits.shape == (2, 240)
    assert [tuple(recorded[n].shape[2:]) for n in names] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert all(bool((recorded[n] >= 0).all()) for n in names)
    # the residual sum is real: zeroing the main path leaves relu(shortcut(x))
    x = torch.rand(2, 24, 32, 32)
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
        torch.testing.assert_close(block(x), torch.relu(block.shortcut(x)))
    assert 80_000 < sum(p.numel() for p in ShapesResNet().parameters()) < 160_000


def test_conv_layers_of_other_models_lists_their_convolutions():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()))
    assert conv_layers(model) == ["0", "2.0"]


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_shipped_weights_load_with_weights_only_and_match_their_report(name):
    path = weights_file(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    report = zoo.shapes_report(name)
    assert report["arch"] == name
    assert report["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert 50_000 < path.stat().st_size < 2_000_000
    model = ARCHITECTURES[name](n_classes=len(zoo.CLASSES), widths=tuple(report["widths"]))
    assert set(state) == set(model.state_dict())
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    model.load_state_dict(state)
    assert report["held_out_accuracy"] >= 0.95
    assert report["train_seed"] != report["held_out_seed"]
    assert zoo.INDEX_SEED not in (report["train_seed"], report["held_out_seed"])
    assert zoo.CONCEPT_SEED not in (report["train_seed"], report["held_out_seed"], zoo.INDEX_SEED)
    assert isinstance(zoo.load_model(name), ARCHITECTURES[name])


def test_docs_record_the_reported_accuracies():
    docs = (REPO / "docs" / "zoo.md").read_text()
    for name in zoo.MODELS:
        assert f"{100 * zoo.shapes_report(name)['held_out_accuracy']:.2f} %" in docs, name


def test_load_returns_eval_model_and_index_split(default):
    model, data = default
    assert isinstance(model, ShapesCNN)
    assert not any(m.training for m in model.modules())
    assert isinstance(data, zoo.ShapesDataset)
    assert len(data) == zoo.INDEX_SIZE == 6000 and data.seed == zoo.INDEX_SEED
    assert np.array_equal(data.pixels[:50], zoo.make_shapes(6000, seed=zoo.INDEX_SEED).pixels[:50])
    assert (np.bincount(data.labels) == 25).all()
    image, label = data[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    resnet, _ = zoo.load("shapes", model="resnet", n=4)
    assert isinstance(resnet, ShapesResNet) and not resnet.training


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_shipped_model_accuracy_on_fresh_images_is_at_least_95_percent(name):
    model = zoo.load_model(name)
    fresh = zoo.make_shapes(2400, seed=20240601)
    with torch.no_grad():
        predicted = torch.cat([model(fresh.images(slice(s, s + 400))).argmax(1) for s in range(0, 2400, 400)])
    accuracy = float((predicted.numpy() == fresh.labels).mean())
    print(f"{name}: held-out accuracy on 2,400 fresh images {accuracy:.4f}")
    assert accuracy >= 0.95


# --- neuron indexes on the default (the engine: nsi_widgets.index_neurons) ----------------------
# Indexing the 6,000 default images (5 layers, PCA grey and class indexes) once per session.

@pytest.fixture(scope="session")
def default_index(default):
    import nsi_widgets as nsi

    model, data = default
    return nsi.index_neurons(model, data, layers=conv_layers(model), top_n=100, progress=False)


def test_default_has_colour_selective_and_colour_blind_neurons(default_index):
    colour = np.concatenate([default_index[name].color_selectivity for name in default_index.layers])
    assert colour.dtype == np.float32
    live = colour[np.isfinite(colour)]
    assert (live > 0.5).sum() >= 10, "too few colour-selective neurons"
    assert (np.abs(live) < 0.1).sum() >= 10, "too few colour-blind neurons"


def test_default_class_selectivity_rises_with_depth(default_index):
    means = []
    for name in default_index.layers:
        gamma = default_index[name].class_selectivity
        live = gamma[np.isfinite(gamma)]
        assert ((live >= 0) & (live <= 1)).all()
        means.append(float(live.mean()))
    print("mean class selectivity per layer (N = 100, nu = 1):",
          dict(zip(default_index.layers, np.round(means, 3))))
    assert all(b > a for a, b in zip(means, means[1:])), means


def test_default_class_index_spreads_in_the_deepest_layer(default_index):
    # The acceptance: at N = 100, nu = 1, the deepest conv layer's class index takes at least
    # 20 distinct values and spans at least 0.3 between its 5th and 95th percentiles.
    L = default_index[default_index.layers[-1]]
    gamma = L.class_selectivity[np.isfinite(L.class_selectivity)]
    assert L.top_n == 100 and default_index.meta["nu"] == 1.0
    low, high = np.percentile(gamma, [5, 95])
    print(f"{L.name}: {len(np.unique(gamma))} distinct values, 5th-95th percentile {low:.3f}-{high:.3f} "
          f"(spread {high - low:.3f})")
    assert len(np.unique(gamma)) >= 20
    assert high - low >= 0.3


def test_default_layer_statistics(default_index):
    import nsi_widgets as nsi

    stats = nsi.layer_statistics(default_index)
    print(stats.round(3).to_string())
    assert list(stats.index) == default_index.layers
    assert (stats["dead"] + stats["alive"] == stats["units"]).all()
    assert (stats["color>=0.25"] > 0).all()                 # colour-selective units in every layer
    assert stats["class_mean"].is_monotonic_increasing


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_colour_index_agrees_with_the_colours_of_the_top_images(name):
    # Ground truth turned into a test, in the deepest layer: a colour-selective unit's top images
    # share one hue and are rarely achromatic (white, grey, black); a colour-blind unit's top images
    # mix hues and include many achromatic shapes (which greying leaves as they are).
    import nsi_widgets as nsi

    model = zoo.load_model(name)
    data = zoo.make_shapes(2400, seed=zoo.INDEX_SEED)
    layer = conv_layers(model)[-1]
    L = nsi.index_neurons(model, data, [layer], top_n=50, progress=False)[layer]
    gt = data.ground_truth
    chromatic = [zoo.COLORS.index(c) for c in ("red", "orange", "yellow", "green", "cyan", "blue", "magenta")]
    colours = gt["color_id"][L.top_indices]                                   # (C, 50)
    hue_purity = np.array([np.bincount(row, minlength=10)[chromatic].max() / len(row) for row in colours])
    achromatic = (~np.isin(colours, chromatic)).mean(axis=1)
    alpha = L.color_selectivity
    selective, blind = alpha >= 0.5, np.abs(alpha) < 0.15
    print(f"{name} {layer}: {selective.sum()} units alpha >= 0.5: hue purity {hue_purity[selective].mean():.2f}, "
          f"achromatic {achromatic[selective].mean():.2f}; {blind.sum()} units |alpha| < 0.15: hue purity "
          f"{hue_purity[blind].mean():.2f}, achromatic {achromatic[blind].mean():.2f}")
    assert selective.sum() >= 3 and blind.sum() >= 3
    assert hue_purity[selective].mean() > hue_purity[blind].mean() + 0.1
    assert achromatic[selective].mean() < achromatic[blind].mean() - 0.2
    assert np.corrcoef(alpha, achromatic)[0, 1] < -0.3


# --- users' own images ---------------------------------------------------------------------------

def _write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_reads_classes_labels_and_exact_pixels(tmp_path):
    rng = np.random.default_rng(0)
    cat = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    dog = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    _write_image(tmp_path / "dog" / "b.png", dog)
    _write_image(tmp_path / "cat" / "a.PNG", cat)
    _write_image(tmp_path / "cat" / "sub" / "c.bmp", cat[::-1].copy())
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    data = zoo.ImageFolderDataset(tmp_path)
    assert data.classes == ["cat", "dog"]  # the empty folder is not a class
    assert len(data) == 3 and data.labels.tolist() == [0, 0, 1]
    image, label = data[0]
    assert image.dtype == torch.float32 and image.shape == (3, 5, 7) and label == 0
    assert torch.equal(image, torch.from_numpy(cat).permute(2, 0, 1).float() / 255)
    assert torch.equal(data[1][0], torch.from_numpy(cat[::-1].copy()).permute(2, 0, 1).float() / 255)
    assert torch.equal(data[2][0], torch.from_numpy(dog).permute(2, 0, 1).float() / 255)


def test_image_folder_resizes_to_a_common_size_and_converts_to_rgb(tmp_path):
    _write_image(tmp_path / "a" / "wide.png", np.full((10, 30, 3), 200, np.uint8))
    Image.fromarray(np.full((40, 20), 77, np.uint8), mode="L").save(tmp_path / "a" / "grey.png")
    data = zoo.ImageFolderDataset(tmp_path, size=(16, 12))
    shapes = {tuple(data[i][0].shape) for i in range(len(data))}
    assert shapes == {(3, 16, 12)}
    grey = data[0][0]  # "grey.png" sorts first
    assert torch.equal(grey, torch.full((3, 16, 12), 77 / 255))  # constant stays exact under bilinear
    assert zoo.ImageFolderDataset(tmp_path, size=8)[1][0].shape == (3, 8, 8)


def test_image_folder_without_images_names_the_accepted_extensions(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("")
    _write_image(tmp_path / "loose.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\.png.*\.jpg") as error:
        zoo.ImageFolderDataset(tmp_path)
    assert "subfolder" in str(error.value)
    with pytest.raises(FileNotFoundError):
        zoo.ImageFolderDataset(tmp_path / "missing")


# --- models from users' code ---------------------------------------------------------------------

FACTORY_SOURCE = '''
import torch
def build(width=4):
    return torch.nn.Conv2d(3, width, 3)
def not_a_model():
    return "a string"
'''


def test_load_factory_from_a_file_and_from_a_module(tmp_path, monkeypatch):
    path = tmp_path / "my_models.py"
    path.write_text(FACTORY_SOURCE)
    model = zoo.load_factory(f"{path}:build", width=5)
    assert isinstance(model, nn.Conv2d) and model.out_channels == 5
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    model = zoo.load_factory("my_models:build")
    assert isinstance(model, nn.Conv2d) and model.out_channels == 4


def test_load_factory_errors_are_clear(tmp_path):
    path = tmp_path / "factories.py"
    path.write_text(FACTORY_SOURCE)
    with pytest.raises(TypeError, match="returned str, not a torch.nn.Module"):
        zoo.load_factory(f"{path}:not_a_model")
    with pytest.raises(AttributeError, match="no attribute 'missing'.*build"):
        zoo.load_factory(f"{path}:missing")
    with pytest.raises(ValueError, match="module:factory"):
        zoo.load_factory("no_colon_here")
    with pytest.raises(FileNotFoundError):
        zoo.load_factory(f"{tmp_path / 'absent.py'}:build")
    with pytest.raises(TypeError, match="not a callable"):
        zoo.load_factory("math:pi")


def test_torchvision_helpers_raise_a_clear_import_error_without_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(ImportError, match="torchvision is not installed"):
        zoo.torchvision_model("vgg16")
    with pytest.raises(ImportError, match="torchvision is not installed"):
        zoo.torchvision_dataset("CIFAR10", "/nonexistent")


def test_torchvision_helpers_refuse_downloads():
    with pytest.raises(ValueError, match="never downloads"):
        zoo.torchvision_dataset("CIFAR10", "/nonexistent", download=True)
    with pytest.raises(ValueError, match="weights_path"):
        zoo.torchvision_model("vgg16", weights="IMAGENET1K_V1")

