"""Python side of the widgets (no browser): traits, linking rules, order, filters, payloads, store writes,
undo/redo, agreement, card views and on-demand computations, export; and, under node, that the
browser's rules (js/src) equal Python's."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _fake_index import MemoryAnnotationStore, make_fake_index, make_layer
from nsi_widgets.index.results import Attachment, NeuronIndex
from nsi_widgets.widgets import (ClassSelectivityChart, ColorSelectivityHistogram, Explorer, NeuronCard,
                                 NeuronGrid, WidgetArgumentError, export_html)
from nsi_widgets.widgets import _data, _wire, views
from nsi_widgets.widgets._agreement import cohen_kappa, fleiss_kappa, kappa_of
from nsi_widgets.widgets._model import ESM, _MissingBundle

XSS = "<img src=x onerror=alert(1)>"
REPO = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (needed to run js/src under test)")


@pytest.fixture(autouse=True)
def _bundle_built():
    if not ESM.is_file():
        pytest.fail(f"{ESM} is missing: build the front end first (cd js && npm install && npm run build)")


@pytest.fixture
def idx():
    return make_fake_index(html_class_name=True)


@pytest.fixture(params=["sqlite", "memory"])
def store(request, idx, tmp_path):
    """The real AnnotationStore (when present) and the in-memory stand-in with the same API."""
    if request.param == "memory":
        return MemoryAnnotationStore(author="ada")
    annotations = pytest.importorskip("nsi_widgets.annotations", reason="AnnotationStore not written yet")
    return annotations.AnnotationStore(tmp_path / "annotations.sqlite", index=idx, author="ada")


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _reference_order(values, dead, descending):
    """Brute force: alive finite values sorted (ties by id), then the rest by id (np.lexsort)."""
    units = np.arange(len(values))
    valid = np.isfinite(values) & ~dead
    key = -values.astype(np.float64) if descending else values.astype(np.float64)
    ranked = np.lexsort((units[valid], key[valid]))
    return list(units[valid][ranked]) + list(units[~valid])


# ---------------------------------------------------------------------------------------------
# order, filters, selection
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("descending", [True, False])
def test_grid_sort_orders_equal_numpy_argsort_nan_and_dead_last(idx, descending):
    grid = NeuronGrid(idx, "conv2", descending=descending)
    L = idx["conv2"]
    assert grid.sort_keys == ["unit", "color_selectivity", "class_selectivity", "symmetry_selectivity",
                              "top_activation"]
    for key in grid.sort_keys[1:]:
        grid.sort_by = key
        values = L.top_activations[:, 0] if key == "top_activation" else L.scores[key]
        expected = _reference_order(values, L.dead, descending)
        assert grid.order == expected, key
        # dead unit 1 (and unit 3, alive with a NaN symmetry index) come last, in id order
        tail = [1, 3] if key == "symmetry_selectivity" else [1]
        assert grid.order[-len(tail):] == tail
    # the exact tie (units 2 and 4 share a colour index) keeps ascending ids in both directions
    grid.sort_by = "color_selectivity"
    assert grid.order.index(2) + 1 == grid.order.index(4)
    grid.sort_by = "unit"
    assert grid.order == (list(range(L.n_units))[::-1] if descending else list(range(L.n_units)))


def test_grid_filters_show_and_search(idx, store):
    L = idx["conv2"]
    store.annotate("conv2", 5, "Red edge", note="strong", tags=("colour",))
    store.annotate("conv2", 9, "blue blob", tags=("Colour", "blob"))
    store.annotate("conv1", 5, "red elsewhere")
    grid = NeuronGrid(idx, "conv2", annotations=store)
    color = L.scores["color_selectivity"].astype(np.float64)

    grid.filters = {"color_selectivity": (0.2, 0.6)}
    expected = {u for u in range(L.n_units) if np.isfinite(color[u]) and 0.2 <= color[u] <= 0.6}
    assert set(grid.order) == expected and expected
    assert grid.order == [u for u in _reference_order(L.scores["color_selectivity"], L.dead, True) if u in expected]

    grid.set_filter("color_selectivity", None, 0.3)
    assert set(grid.order) == {u for u in range(L.n_units) if np.isfinite(color[u]) and color[u] <= 0.3}
    grid.clear_filters()
    assert len(grid.order) == L.n_units

    grid.show = "dead"
    assert grid.order == [1]
    grid.show = "alive"
    assert 1 not in grid.order and len(grid.order) == L.n_units - 1
    grid.show = "all"

    grid.search = "colour"
    assert set(grid.order) == {5, 9}          # tags, case-insensitive
    grid.search = "RED  strong"
    assert grid.order == [5]                  # every term must match (label + note)
    grid.search = "elsewhere"
    assert grid.order == []                   # other layer's annotation does not leak
    grid.search = ""


def test_grid_selection_is_observable_and_validated(idx):
    grid = NeuronGrid(idx, "conv2")
    seen = []
    grid.observe(lambda change: seen.append(change["new"]), "selection")
    picked = []
    grid.on_select(lambda layer, units: picked.append((layer, units)))
    # what a click in the browser does: a state update over the comm
    grid.set_state({"selection": [7, 3, 7], "unit": 3})
    assert grid.selected == grid.selection == [7, 3] and grid.active == grid.unit == 3
    assert seen == [[7, 3]] and picked == [("conv2", [7, 3])]
    with pytest.raises(WidgetArgumentError, match=r"unit 40 is out of range for layer 'conv2': valid units are 0\.\.39"):
        grid.selected = [40]
    assert grid.selected == [7, 3]


def test_grid_layer_switch_reloads_payload_and_clears_selection(idx):
    grid = NeuronGrid(idx, "conv2", filters={"color_selectivity": (0.0, 1.0)})
    grid.selected = [5, 6]
    grid.active = 5
    grid.layer = "conv1"
    assert grid.n_units == 12 and grid.selected == [] and grid.active is None
    assert grid.filters == {"color_selectivity": [0.0, 1.0]}
    np.testing.assert_array_equal(grid.scores[0], idx["conv1"].scores["color_selectivity"])
    dead = grid.layer_payload()["dead"]
    assert np.frombuffer(dead["data"], np.uint8).tolist() == idx["conv1"].dead.astype(int).tolist()
    assert set(grid.order) <= set(range(12))


def test_unknown_arguments_list_the_valid_ones(idx):
    with pytest.raises(WidgetArgumentError, match=r"unknown layer 'convv1'\. Did you mean 'conv1'\? "
                                                  r"Valid layers: 'conv1', 'conv2'"):
        NeuronGrid(idx, "convv1")
    with pytest.raises(ValueError, match=r"unknown sort key 'colour_selectivity'\. Did you mean "
                                         r"'color_selectivity'\?.*'unit'.*'top_activation'"):
        NeuronGrid(idx, sort_by="colour_selectivity")
    grid = NeuronGrid(idx)
    with pytest.raises(WidgetArgumentError, match="unknown sort key 'nope'"):
        grid.sort_by = "nope"
    assert grid.sort_by == "color_selectivity"
    with pytest.raises(WidgetArgumentError, match="unknown filter key 'hue'"):
        grid.filters = {"hue": (0, 1)}
    with pytest.raises(WidgetArgumentError, match="min 0.9 > max 0.1"):
        grid.set_filter("color_selectivity", 0.9, 0.1)
    with pytest.raises(WidgetArgumentError, match="unknown show option 'zombie'.*'alive'"):
        grid.show = "zombie"
    with pytest.raises(WidgetArgumentError, match="unknown layer"):
        grid.layer = "fc8"
    with pytest.raises(WidgetArgumentError, match="unit 99 is out of range"):
        NeuronCard(idx, "conv1", 99)
    with pytest.raises(WidgetArgumentError, match="no layer of this index has the index 'hue'"):
        ColorSelectivityHistogram(idx, score="hue")
    with pytest.raises(WidgetArgumentError, match="annotations must be an AnnotationStore"):
        NeuronGrid(idx, annotations=object())


def test_default_sort_falls_back_when_index_lacks_colour():
    idx = make_fake_index(layers=(("conv1", 6, 3),))
    del idx["conv1"].scores["color_selectivity"]
    assert NeuronGrid(idx).sort_by == "unit"


def test_missing_bundle_error_says_how_to_build(tmp_path):
    class Owner:
        _esm = _MissingBundle(tmp_path / "index.js")

    with pytest.raises(FileNotFoundError, match="npm install && npm run build"):
        Owner()._esm


# ---------------------------------------------------------------------------------------------
# binary payloads
# ---------------------------------------------------------------------------------------------
def test_box_resize_matches_brute_force():
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(2, 13, 7, 3)).astype(np.float32)
    out = _data.box_resize(images, 4, 3)
    for i in range(4):
        r0, r1 = i * 13 // 4, (i + 1) * 13 // 4
        for j in range(3):
            c0, c1 = j * 7 // 3, (j + 1) * 7 // 3
            np.testing.assert_allclose(out[:, i, j], images[:, r0:r1, c0:c1].mean(axis=(1, 2)), rtol=1e-5)
    up = _data.box_resize(images[:, :3, :2], 7, 5)  # nearest when upscaling
    for i in range(7):
        for j in range(5):
            np.testing.assert_array_equal(up[:, i, j], images[:, i * 3 // 7, j * 2 // 5])


def test_grid_thumbnails_are_one_png_sprite_of_the_features(idx):
    # tiles of thumb_size pixels: the 13 px features scaled down to 8 px ...
    grid = NeuronGrid(idx, "conv2", thumb_size=8)
    L = idx["conv2"]
    sheet = _png(grid.thumbs)
    cols = grid.sprite_cols
    assert cols == 40 and grid.layer_payload()["thumb_size"] == 8 and sheet.shape == (8, 40 * 8, 3)
    expected = _data.to_uint8(_data.box_resize(L.neuron_features, 8, 8))
    for unit in (0, 7, 39):
        r, c = divmod(unit, cols)
        np.testing.assert_array_equal(sheet[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8], expected[unit])
    # ... but never scaled up: 13 px features travel as they are (the browser scales them, pixelated)
    grid = NeuronGrid(idx, "conv2", thumb_size=32)
    sheet = _png(grid.thumbs)
    assert grid.layer_payload()["thumb_size"] == 13 and sheet.shape == (13, 40 * 13, 3)
    np.testing.assert_array_equal(sheet[:, 7 * 13:8 * 13], _data.to_uint8(L.neuron_features[7]))
    # a big layer's sheet stays square-ish (browser image size limits)
    assert _data.sprite_columns(40) == 40 and _data.sprite_columns(4096) == 64 and _data.sprite_columns(50_000) == 224


def _binary_and_json(state) -> tuple[int, int]:
    """Bytes of the binary buffers and of the JSON rest of a widget state, as ipywidgets sends it."""
    from ipywidgets.widgets.widget import _remove_buffers

    plain, _paths, buffers = _remove_buffers({k: v for k, v in state.items()})
    return sum(len(memoryview(b).cast("B")) for b in buffers), len(json.dumps(plain))


def test_bytes_sent_per_neuron_at_most_4kb():
    # incompressible (random) features are the worst case for the PNG sprite
    idx = NeuronIndex({"conv": make_layer("conv", 256, 40, rng=np.random.default_rng(3))})
    idx["conv"].neuron_features[:] = np.random.default_rng(4).uniform(size=idx["conv"].neuron_features.shape)
    grid = NeuronGrid(idx)
    binary, json_part = _binary_and_json(grid.get_state())
    per_unit = (binary + json_part) / grid.n_units
    assert per_unit <= 4096, per_unit
    # and the arrays travel as binary (dtype + shape + bytes), not JSON lists
    payload = grid.layer_payload()
    assert binary > len(payload["thumbs"]) + 4 * 256 * 4
    assert payload["scores"]["__array__"] == "float32" and payload["scores"]["shape"] == [4, 256]
    assert payload["top_labels"]["__array__"] == "int16" and payload["top_labels"]["shape"] == [256, 20]


def test_grid_sort_values_round_trip_float32(idx):
    grid = NeuronGrid(idx, "conv2")
    table = np.frombuffer(grid.scores, "<f4").reshape(len(grid.score_names), grid.n_units)
    for k, name in enumerate(grid.score_names):
        ref = idx["conv2"].top_activations[:, 0] if name == "top_activation" else idx["conv2"].scores[name]
        np.testing.assert_array_equal(table[k], ref)


# ---------------------------------------------------------------------------------------------
# card, store, class frequencies
# ---------------------------------------------------------------------------------------------
def _brute_force_frequencies(labels, acts, n_classes):
    out = np.zeros(n_classes)
    a1 = max(float(acts[0]), 0.0)
    for lab, a in zip(labels, acts):
        w = max(float(a), 0.0) / a1 if a1 > 0 else 0.0
        if lab >= 0:
            out[lab] += w
    total = out.sum()
    return out / total if total > 0 else out


def test_class_frequencies_match_definition_and_library(idx):
    L = idx["conv2"]
    ours = _data._class_frequencies(L.top_labels, L.top_activations, 6)
    for unit in range(L.n_units):
        np.testing.assert_allclose(ours[unit], _brute_force_frequencies(L.top_labels[unit], L.top_activations[unit], 6),
                                   atol=1e-12)
    try:
        from nsi_widgets.index.selectivity import class_frequencies
    except ImportError:
        return  # the library twin is not there; the definition above is the reference
    np.testing.assert_allclose(ours, class_frequencies(L.top_labels, L.top_activations, 6), atol=1e-12)


def test_card_content(idx, store):
    L = idx["conv2"]
    unit = 5
    card = NeuronCard(idx, "conv2", unit, annotations=store)
    views_of_unit = card.unit_payload()
    summary, top = views_of_unit["summary"], views_of_unit["top_images"]
    np.testing.assert_array_equal(_png(summary["nf"]), _data.to_uint8(L.neuron_features[unit]))  # 13 px: no resize
    assert summary["nf_size"] == [13, 13]
    assert top["n_crops"] == 4 and top["crop_size"] == [12, 12]
    np.testing.assert_array_equal(_png(top["crops"]), np.concatenate(list(L.top_crops[unit]), axis=1))
    np.testing.assert_array_equal(top["gray"], L.details["gray_activations"][unit])
    assert top["images"] == L.top_indices[unit, :4].tolist()
    names = idx.class_names
    assert top["classes"] == [names[c] if c >= 0 else "" for c in L.top_labels[unit, :4]]
    # the activations, labels and indexes the card draws from are the layer's arrays, sent once
    payload = card.layer_payload("conv2")
    acts = np.frombuffer(payload["top_activations"]["data"], "<f4").reshape(payload["top_activations"]["shape"])
    np.testing.assert_array_equal(acts, L.top_activations)
    labels = np.frombuffer(payload["top_labels"]["data"], "<i2").reshape(payload["top_labels"]["shape"])
    np.testing.assert_array_equal(labels, L.top_labels)
    table = np.frombuffer(payload["scores"]["data"], "<f4").reshape(payload["scores"]["shape"])
    assert table[payload["score_names"].index("color_selectivity"), unit] == np.float32(L.scores["color_selectivity"][unit])
    # class bars (Python's, which js/src/classes.js equals): top classes, grouped by parent with sums
    freq = _brute_force_frequencies(L.top_labels[unit], L.top_activations[unit], 6)
    bars = _data.class_bars(idx, "conv2", unit)
    assert [c["name"] for c in bars["classes"]] == [names[c] for c in np.argsort(-freq, kind="stable") if freq[c] > 0][:8]
    for c in bars["classes"]:
        assert c["value"] == pytest.approx(freq[names.index(c["name"])])
    for group in bars["groups"]:
        members = [k for k, n in enumerate(names) if idx.class_parents.get(n) == group["name"]]
        assert group["value"] == pytest.approx(freq[members].sum())
        assert group["path"] == ["shape"]
    assert bars["selectivity"] == pytest.approx(float(L.scores["class_selectivity"][unit]))
    assert bars["population"] == int((freq >= 0.1).sum())
    # dead unit
    card.unit = 1
    assert card.dead and _data.class_bars(idx, "conv2", 1)["dead"]
    assert [v["key"] for v in card.card_views] == ["summary", "classes", "top_images"]
    assert [v["key"] for v in NeuronCard(idx, "conv2", 1, show_classes=False).card_views] == ["summary", "top_images"]


def test_card_editor_writes_to_the_store(idx, store):
    card = NeuronCard(idx, "conv2", 5, annotations=store)
    assert card.editable and card.author == "ada" and card.annotation == {}
    sent, saved = [], []
    card.send = lambda content, buffers=None: sent.append(content)
    card.on_annotate(lambda layer, unit, annotation: saved.append((layer, unit, annotation.get("label"))))
    # the editor's Save button sends this message (with the unit it was typed for)
    card._on_message(card, {"type": "annotate", "request_id": "q1", "layer": "conv2", "unit": 5,
                            "label": "  red edge ", "note": "n1", "tags": ["edge", " colour ", ""]}, [])
    stored = store.get("conv2", 5)
    assert (stored.label, stored.note, stored.tags, stored.author) == ("red edge", "n1", ("edge", "colour"), "ada")
    assert card.annotation["label"] == "red edge" and card.annotation["author"] == "ada" and card.annotation["time"]
    assert sent[-1]["type"] == "saved" and sent[-1]["reply_to"] == "q1" and saved == [("conv2", 5, "red edge")]
    assert sent[-1]["annotation"]["label"] == "red edge" and card.annotations["conv2"]["5"]["label"] == "red edge"
    # switching units shows that unit's annotation; coming back shows the saved one
    card.unit = 6
    assert card.annotation == {}
    card.show("conv2", 5)
    assert card.annotation["tags"] == ["edge", "colour"]
    # emptying the editor removes the annotation
    card._on_message(card, {"type": "annotate", "label": " ", "note": "", "tags": []}, [])
    assert store.get("conv2", 5) is None and card.annotation == {} and sent[-1]["type"] == "saved"
    # a note without a label is refused by the store and reported to the editor
    card._on_message(card, {"type": "annotate", "label": "", "note": "only a note", "tags": []}, [])
    assert sent[-1]["type"] == "error" or store.get("conv2", 5).note == "only a note"
    # without a store: the editor is read-only and a save reports an error
    plain = NeuronCard(idx, "conv2", 5)
    plain.send = lambda content, buffers=None: sent.append(content)
    plain._on_message(plain, {"type": "annotate", "label": "x"}, [])
    assert not plain.editable and sent[-1]["type"] == "error" and "AnnotationStore" in sent[-1]["message"]


def test_class_chart_unit_and_layer_modes(idx):
    chart = ClassSelectivityChart(idx, "conv2", unit=7)
    L = idx["conv2"]
    freq = _brute_force_frequencies(L.top_labels[7], L.top_activations[7], 6)
    assert chart.data["mode"] == "unit"
    assert sum(c["value"] for c in chart.data["bars"]["classes"]) == pytest.approx(freq.sum())
    chart.unit = None
    hist = chart.data["hist"]
    gamma = L.scores["class_selectivity"]
    ok = np.isfinite(gamma) & ~L.dead
    # the axis fits the data (the class index often lives in [0.9, 1]), not a fixed [0, 1]
    lo, hi = float(gamma[ok].min()), float(gamma[ok].max())
    assert hist["counts"] == np.histogram(gamma[ok], bins=20, range=(lo, hi))[0].tolist()
    assert hist["n_dead"] == 1 and hist["edges"][0] == lo and hist["edges"][-1] == hi
    chart.layer = "conv1"
    assert chart.data["layer"] == "conv1" and chart.data["mode"] == "layer" and chart.unit is None


# ---------------------------------------------------------------------------------------------
# histogram
# ---------------------------------------------------------------------------------------------
def test_histogram_click_box_select_threshold(idx):
    from plotly.callbacks import BoxSelector, Points

    hist = ColorSelectivityHistogram(idx, bins=10)
    edges = hist.edges
    values = np.concatenate([idx[n].scores["color_selectivity"][~idx[n].dead] for n in idx.layers]).astype(np.float64)
    np.testing.assert_allclose(edges, np.histogram_bin_edges(values, bins=10))
    for trace, name in zip(hist.figure.data, idx.layers):
        L = idx[name]
        counts = np.histogram(L.scores["color_selectivity"][~L.dead], bins=edges)[0]
        np.testing.assert_allclose(trace.y, 100 * counts / (~L.dead).sum())
    events = []
    hist.on_select(lambda rng, units: events.append((rng, units)))
    # a click on bar 3 of the second trace (what plotly's click callback delivers)
    trace = hist.figure.data[1]
    trace._dispatch_on_click(Points(point_inds=[3], xs=[0], ys=[0], trace_name="conv2", trace_index=1), None)
    assert hist.selected_range == (edges[3], edges[4])
    for name in idx.layers:
        v = idx[name].scores["color_selectivity"].astype(np.float64)
        assert hist.selected_units[name] == [u for u in range(len(v))
                                             if not idx[name].dead[u] and edges[3] <= v[u] <= edges[4]]
    assert events[-1][0] == hist.selected_range
    assert hist.figure.layout.shapes[1].visible and hist.figure.layout.shapes[1].x0 == edges[3]
    # a box selection: its x range
    hist.figure.data[0]._dispatch_on_selection(Points(), BoxSelector(xrange=[0.5, 0.1], yrange=[0, 1]))
    assert hist.selected_range == (0.1, 0.5)
    hist.clear_selection()
    assert hist.selected_range is None and hist.selected_units == {} and events[-1] == (None, {})
    # threshold line and counts (text in a Label, never HTML)
    hist.threshold = 0.3
    assert hist.figure.layout.shapes[0].visible and hist.figure.layout.shapes[0].x0 == 0.3
    n1 = int(((idx["conv1"].scores["color_selectivity"] >= 0.3) & ~idx["conv1"].dead).sum())
    assert f"conv1 {n1}/11" in hist._counts.value
    assert type(hist._counts).__name__ == "Label"


def test_histogram_escapes_layer_names_for_plotly():
    idx = make_fake_index(layers=((XSS, 8, 3), ("<b>bold</b>", 8, 3)))
    hist = ColorSelectivityHistogram(idx)
    names = [trace.name for trace in hist.figure.data]
    assert all("<" not in name for name in names)
    assert names[0].startswith("&lt;img src=x onerror=alert(1)&gt;")


# ---------------------------------------------------------------------------------------------
# explorer and export
# ---------------------------------------------------------------------------------------------
def test_explorer_links_in_python(idx, store):
    """The linking rules, read and set from Python: one state, nothing left stale."""
    ex = Explorer(idx, annotations=store, layer="conv2")
    L = idx["conv2"]
    assert ex.unit == ex.order[0] and ex.selection == []
    # a filter (what a histogram brush sets) hides the unit shown: the first listed one is shown
    shown = ex.unit
    ex.filters = {"color_selectivity": [0.2, 0.5]}
    color = L.scores["color_selectivity"].astype(np.float64)
    assert set(ex.order) == {u for u in range(40) if np.isfinite(color[u]) and 0.2 <= color[u] <= 0.5}
    assert shown not in ex.order and ex.unit == ex.order[0]
    # the selection keeps only listed units; a unit the grid does not list cannot be shown
    ex.selection = [ex.order[1], shown]
    assert ex.selection == [ex.order[1]]
    with pytest.raises(WidgetArgumentError, match=rf"unit {shown} of layer 'conv2' is not listed"):
        ex.unit = shown
    # a browser update with layer and unit together keeps that unit (a histogram bar of another layer)
    conv1 = idx["conv1"].scores["color_selectivity"].astype(np.float64)
    in_bin = [u for u in range(12) if np.isfinite(conv1[u]) and 0.0 <= conv1[u] <= 0.5]
    ex.set_state({"layer": "conv1", "filters": {"color_selectivity": [0.0, 0.5]}, "unit": in_bin[-1]})
    assert (ex.layer, ex.unit, ex.selection) == ("conv1", in_bin[-1], [])
    assert set(ex.order) == set(in_bin)
    # switching the layer alone: selection cleared, the first listed unit shown, filters kept
    ex.selection = [ex.order[0]]
    ex.layer = "conv2"
    assert ex.selection == [] and ex.unit == ex.order[0] and ex.filters == {"color_selectivity": [0.0, 0.5]}
    # removing the filter (the chip's x): the filter is gone for every view, and stays gone
    ex.filters = {}
    ex.layer = "conv1"
    ex.layer = "conv2"
    assert ex.filters == {} and len(ex.order) == 40
    # a column the other layer lacks: its filter is dropped and the sort falls back to unit order
    del idx["conv1"].scores["symmetry_selectivity"]
    ex2 = Explorer(idx, layer="conv2", sort_by="symmetry_selectivity", filters={"symmetry_selectivity": [0.1, 0.9]})
    ex2.layer = "conv1"
    assert (ex2.sort_by, ex2.descending, ex2.filters) == ("unit", False, {}) and ex2.order == list(range(12))
    # annotations: "unlabelled only" and the labelling written through the Explorer
    ex.unlabelled_only = True
    first = ex.unit
    ex.annotate("first one")
    assert first not in ex.order and ex.unit == ex.order[0] and len(ex.order) == 39
    assert ex.annotations["conv2"][str(first)]["label"] == "first one"
    ex.search = "first"
    assert ex.order == [] and ex.unit is None
    ex.clear_filters()
    assert ex.search == "" and not ex.unlabelled_only and len(ex.order) == 40 and ex.unit == ex.order[0]


def test_explorer_author_undo_redo_and_history(idx, tmp_path):
    from nsi_widgets.annotations import AnnotationStore

    store = AnnotationStore(tmp_path / "class.sqlite", index=idx, author="teacher")
    ex = Explorer(idx, annotations=store, layer="conv2")
    sent = []
    ex.send = lambda content, buffers=None: sent.append(content)
    unit = ex.unit

    def message(kind, **body):
        ex._on_message(ex, {"type": kind, "request_id": f"r{len(sent)}", "layer": "conv2", "unit": unit, **body}, [])
        return sent[-1]

    assert not message("state")["can_undo"]
    message("annotate", label="red", note="", tags=[])
    reply = message("annotate", label="red blob", note="round", tags=["colour"])
    assert reply["type"] == "saved" and reply["can_undo"] and not reply["can_redo"]
    assert [row["label"] for row in reply["history"]] == ["red blob", "red"]  # newest first
    reply = message("undo")
    assert reply["annotation"]["label"] == "red" and reply["can_redo"] and store.get("conv2", unit).label == "red"
    reply = message("redo")
    assert reply["annotation"]["label"] == "red blob" and not reply["can_redo"]
    assert store.get("conv2", unit).tags == ("colour",)
    message("undo")
    message("undo")
    assert store.get("conv2", unit) is None and ex.annotations["conv2"] == {}
    reply = message("redo")
    assert reply["annotation"]["label"] == "red" and reply["can_redo"]
    message("annotate", label="other", note="", tags=[])
    assert not sent[-1]["can_redo"]  # a new write forgets the redo steps
    assert message("redo")["type"] == "error"
    # the author is shown and selectable: writes and labels follow it; the store keeps both
    ex.author = "student"
    assert ex.annotations["conv2"] == {} and "student" in ex.authors and "teacher" in ex.authors
    message("annotate", label="blue", note="", tags=[], author="student")
    assert store.get("conv2", unit, author="student").label == "blue"
    assert store.get("conv2", unit).label == "other"
    assert [r["author"] for r in message("state")["history"]][:2] == ["student", "teacher"]
    with pytest.raises(WidgetArgumentError, match="author must be"):
        ex.author = "*"
    # agreement tab data: each author's label, the disagreement marked
    rows = ex.agreement["conv2"]["rows"]
    assert rows == [{"unit": unit, "labels": {"student": "blue", "teacher": "other"}, "n_authors": 2, "n_labels": 2,
                     "majority": "blue", "agree": False}]
    assert ex.agreement["conv2"]["n_disagree"] == 1
    # another process writes: a refresh (the Explorer sends one when focused) shows it
    with AnnotationStore(tmp_path / "class.sqlite", index=idx, author="student") as other:
        other.annotate("conv2", ex.order[1], "from elsewhere")
    ex._on_message(ex, {"type": "refresh"}, [])
    assert ex.annotations["conv2"][str(ex.order[1])]["label"] == "from elsewhere"


def test_kappa_matches_the_textbook_examples():
    # Cohen (1960) as in the usual worked example: 50 items, yes/no, 20 + 15 agreements -> 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa(["x", "x"], ["x", "x"]) is None  # one label for everything: undefined
    # Fleiss (1971) worked example (14 raters, 10 items, 5 categories): kappa = 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)
    # with two raters Fleiss' kappa is Scott's pi, computed here by its own definition
    pi_expected = 1 - (1 - 35 / 50) / (1 - ((45 / 100) ** 2 + (55 / 100) ** 2) / 1)
    counts = np.array([[2, 0]] * 20 + [[1, 1]] * 15 + [[0, 2]] * 15)
    assert fleiss_kappa(counts) == pytest.approx(pi_expected)
    # over the neurons every author labelled; two authors: Cohen's, more: Fleiss'
    two = kappa_of({"ana": ["red", "blue", None, "red"], "ben": ["red", "red", "blue", "red"]})
    assert two["kind"] == "cohen" and two["n_items"] == 3
    assert two["value"] == pytest.approx(cohen_kappa(["red", "blue", "red"], ["red", "red", "red"]))
    three = kappa_of({"a": ["x", "y"], "b": ["x", "y"], "c": ["x", None]})
    assert three["kind"] == "fleiss" and three["n_items"] == 1 and three["value"] is None
    assert kappa_of({"a": ["x"]})["kind"] is None


def test_export_html_is_standalone_and_escapes_user_text(idx, store, tmp_path):
    store.annotate("conv1", 2, XSS, note="</script><script>alert(2)</script>", tags=("<i>t</i>",))
    ex = Explorer(idx, annotations=store)
    path = export_html(ex, tmp_path / "out" / "explorer.html", title="a <title> & more")
    text = path.read_text(encoding="utf-8")
    bundle = ESM.read_text(encoding="utf-8")
    assert bundle in text or base64.b64encode(bundle.encode()).decode() in text
    assert not re.search(r"<script[^>]+src\s*=", text, re.I)       # nothing loaded from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", text, re.I)
    assert "<link" not in text
    # user text only inside JSON, with < > & escaped: never markup in the file
    assert XSS not in text and "<i>t</i>" not in text and "<b>cross</b>" not in text
    assert len(re.findall(r"</script", text, re.I)) == 3            # exactly our three elements
    assert "<title>a &lt;title&gt; &amp; more</title>" in text
    doc = json.loads(re.search(r'<script type="application/json" id="nsi-state">(.*?)</script>', text, re.S).group(1))
    state = doc["state"]
    assert state["annotations"]["conv1"]["2"]["label"] == XSS
    assert state["annotations"]["conv1"]["2"]["note"] == "</script><script>alert(2)</script>"
    assert state["editable"] is False and state["_views"] == list(ex._views)
    thumbs = base64.b64decode(state["layer_data"]["conv2"]["thumbs"]["__bytes__"])
    assert _png(thumbs).shape == (13, 40 * 13, 3)  # the 13 px features as they are
    # the page's state is the Explorer's: the same traits, the same layer, unit, sort and filters
    for name in ("layer", "unit", "sort_by", "descending", "filters", "selection", "author", "card_views"):
        assert state[name] == json.loads(json.dumps(getattr(ex, name))), name
    assert state["info"] == {**json.loads(json.dumps(ex.info)), "title": "a <title> & more"}
    # every unit's card payloads are in the page (there is no kernel to ask)
    nf = base64.b64decode(doc["units"]["conv2"]["7"]["summary"]["nf"]["__bytes__"])
    np.testing.assert_array_equal(_png(nf), _data.to_uint8(idx["conv2"].neuron_features[7]))
    assert set(doc["units"]["conv1"]) == {str(u) for u in range(12)}


def test_export_carries_the_explorer_state_and_accepts_an_index(idx, store, tmp_path):
    ex = Explorer(idx, annotations=store, layer="conv2", sort_by="class_selectivity")
    ex.filters = {"color_selectivity": [0.1, 0.7]}
    ex.unit = ex.order[2]
    path = export_html(ex, tmp_path / "ex.html")
    state = json.loads(re.search(r'id="nsi-state">(.*?)</script>', path.read_text(), re.S).group(1))["state"]
    assert (state["layer"], state["unit"], state["sort_by"], state["filters"]) == (
        "conv2", ex.unit, "class_selectivity", {"color_selectivity": [0.1, 0.7]})
    path = export_html(idx, tmp_path / "idx.html", crops=False, layer="conv1")
    doc = json.loads(re.search(r'id="nsi-state">(.*?)</script>', path.read_text(), re.S).group(1))
    assert doc["units"]["conv2"]["0"]["top_images"]["n_crops"] == 0 and doc["state"]["layer"] == "conv1"
    with pytest.raises(WidgetArgumentError, match="NeuronIndex or an Explorer"):
        export_html([1, 2], tmp_path / "x.html")


# ---------------------------------------------------------------------------------------------
# the browser's rules equal Python's (node runs js/src)
# ---------------------------------------------------------------------------------------------
def _run_node(script: str, payload) -> object:
    """Run an ES module script under node with ``payload`` as JSON in argv[1]; its printed JSON."""
    src = (REPO / "js" / "src").as_uri()
    result = subprocess.run([NODE, "--input-type=module", "-e", script.replace("SRC", src), json.dumps(payload)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_node
def test_js_order_rules_equal_python(idx):
    L = idx["conv2"]
    scores = _data.layer_scores(L)
    annotations = {"5": {"label": "Red edge", "note": "", "tags": ["x"]}, "9": {"label": "red", "note": "", "tags": []}}
    cases = []
    for key in ["unit", *scores]:
        for desc in (True, False):
            cases.append(dict(sortBy=key, descending=desc, filters={}, show="all", search="", unlabelledOnly=False))
    cases += [dict(sortBy="color_selectivity", descending=True, filters={"color_selectivity": [0.1, 0.5]}, show="alive",
                   search="", unlabelledOnly=False),
              dict(sortBy="symmetry_selectivity", descending=False, filters={"class_selectivity": [None, 0.8]}, show="all",
                   search="", unlabelledOnly=True),
              dict(sortBy="unit", descending=False, filters={}, show="dead", search="", unlabelledOnly=False),
              dict(sortBy="top_activation", descending=True, filters={}, show="all", search="RED", unlabelledOnly=False),
              dict(sortBy="color_selectivity", descending=False, filters={}, show="all", search="", unlabelledOnly=True)]
    script = """
import { computeOrder } from "SRC/order.js";
const input = JSON.parse(process.argv[1]);
const scores = {};
for (const [k, v] of Object.entries(input.scores)) scores[k] = Float32Array.from(v.map((x) => x === null ? NaN : x));
const out = input.cases.map((c) => Array.from(computeOrder({ n: input.n, scores, dead: Uint8Array.from(input.dead), annotations: input.annotations, ...c })));
console.log(JSON.stringify(out));
"""
    js_orders = _run_node(script, {"n": L.n_units, "dead": L.dead.astype(int).tolist(), "annotations": annotations,
                                   "cases": cases, "scores": {k: [None if not np.isfinite(x) else float(x) for x in v]
                                                              for k, v in scores.items()}})
    texts = {int(k): _data.annotation_text(v) for k, v in annotations.items()}
    for case, js_order in zip(cases, js_orders):
        py = _data.display_order(scores, L.dead, case["sortBy"], case["descending"], case["filters"], case["show"],
                                 case["search"], texts, case["unlabelledOnly"])
        assert js_order == py.tolist(), case


@needs_node
def test_js_class_bars_equal_python(idx):
    layers = {name: {"labels": idx[name].top_labels.tolist(), "acts": idx[name].top_activations.tolist(),
                     "class": [None if not np.isfinite(v) else float(v) for v in idx[name].scores["class_selectivity"]],
                     "dead": idx[name].dead.tolist()} for name in idx.layers}
    script = """
import { classBars } from "SRC/classes.js";
const input = JSON.parse(process.argv[1]);
const out = {};
for (const [name, L] of Object.entries(input.layers)) {
  out[name] = L.labels.map((labels, u) => classBars({ labels: Int16Array.from(labels), acts: Float32Array.from(L.acts[u]),
    names: input.names, parents: input.parents, topK: 5, selectivity: L.class[u] === null ? NaN : L.class[u], dead: L.dead[u] }));
}
console.log(JSON.stringify(out));
"""
    js = _run_node(script, {"layers": layers, "names": idx.class_names, "parents": idx.class_parents})
    for name in idx.layers:
        for unit in range(idx[name].n_units):
            py = json.loads(json.dumps(_data.class_bars(idx, name, unit, top_k=5)))
            got = js[name][unit]
            for key in ("n_classes_hit", "n_labelled", "n_top", "population", "dead"):
                assert got[key] == py[key], (name, unit, key)
            assert got["selectivity"] == pytest.approx(py["selectivity"]) if py["selectivity"] is not None \
                else got["selectivity"] is None
            assert [(c["name"], c["parent"]) for c in got["classes"]] == [(c["name"], c["parent"]) for c in py["classes"]]
            np.testing.assert_allclose([c["value"] for c in got["classes"]], [c["value"] for c in py["classes"]], atol=1e-12)
            assert [(g["name"], g["path"], g["n_classes"], [c["name"] for c in g["classes"]]) for g in got["groups"]] == \
                [(g["name"], g["path"], g["n_classes"], [c["name"] for c in g["classes"]]) for g in py["groups"]]


@needs_node
def test_js_store_applies_the_same_linking_rules_as_python(tmp_path):
    """The same sequence of changes, made in the browser's store and sent to Python as the browser
    sends them (one state update each), ends in the same state after every step."""
    from nsi_widgets.annotations import AnnotationStore

    idx = make_fake_index()
    del idx["conv1"].scores["symmetry_selectivity"]  # a column only conv2 has
    store = AnnotationStore(tmp_path / "a.sqlite", index=idx, author="ana")
    store.annotate("conv2", 5, "red edge")
    store.annotate("conv2", 9, "red blob")
    store.annotate("conv1", 3, "stripes")
    steps = [
        {"filters": {"color_selectivity": [0.2, 0.6]}},
        {"selection": [5, 6, 7, 8, 9, 10]},
        {"sort_by": "symmetry_selectivity", "descending": False},
        {"filters": {"color_selectivity": [0.2, 0.6], "symmetry_selectivity": [0.1, 0.9]}},
        {"layer": "conv1"},
        {"layer": "conv2", "filters": {"color_selectivity": [0.0, 0.3]}},
        {"search": "red"},
        {"search": "", "unlabelled_only": True},
        {"show": "dead"},
        {"show": "all", "unlabelled_only": False, "filters": {}, "unit": 9, "selection": [9, 4]},
        {"layer": "conv1", "unit": 7},
    ]
    ex = Explorer(idx, annotations=store, layer="conv2")
    doc = _wire.embed(ex.page_document(units=False)["state"])
    script = """
import { ModelShim, revive } from "SRC/shim.js";
import { createStore, STATE } from "SRC/store.js";
const input = JSON.parse(process.argv[1]);
const model = new ModelShim(revive(input.state));
const store = createStore(model, { followFirst: true });
const out = [];
for (const step of input.steps) {
  store.propose(step);
  const s = {};
  for (const k of STATE) s[k] = store.state[k];
  s.order = Array.from(store.order);
  // what the store wrote into the model is what Python receives
  for (const k of STATE) if (JSON.stringify(model.get(k)) !== JSON.stringify(store.state[k])) s.unsynced = k;
  out.push(s);
}
console.log(JSON.stringify(out));
"""
    js_states = _run_node(script, {"state": doc, "steps": steps})
    for step, js in zip(steps, js_states):
        ex.set_state(json.loads(json.dumps(step)))
        py = {name: getattr(ex, name) for name in js if name != "unsynced"}
        py["order"] = list(ex.order)
        assert "unsynced" not in js, js
        assert js == json.loads(json.dumps(py)), step


# ---------------------------------------------------------------------------------------------
# edge cases and static safety checks
# ---------------------------------------------------------------------------------------------
def test_grid_without_features_or_crops_sends_no_thumbnails():
    idx = make_fake_index(layers=(("conv1", 6, 3),), with_features=False, with_crops=False)
    grid = NeuronGrid(idx)
    assert grid.thumbs == b"" and grid.layer_payload()["thumb_size"] == 0 and len(grid.order) == 6
    card = NeuronCard(idx, "conv1", 0)
    payload = card.unit_payload()
    assert payload["summary"]["nf"] == b"" and payload["top_images"]["crops"] == b"" and payload["top_images"]["n_crops"] == 0
    assert len(payload["top_images"]["images"]) == 12 and payload["top_images"]["classes"][0] in idx.class_names + [""]
    # crops but no features: the grid shows each unit's best crop
    idx = make_fake_index(layers=(("conv1", 6, 3),), with_features=False)
    tile = _png(NeuronGrid(idx, thumb_size=12).thumbs)[:12, :12]
    np.testing.assert_array_equal(tile, idx["conv1"].top_crops[0, 0])


def test_explorer_without_the_colour_index_falls_back_to_unit_order():
    idx = make_fake_index(layers=(("conv1", 6, 3), ("conv2", 8, 5)))
    for name in idx.layers:
        del idx[name].scores["color_selectivity"]
    ex = Explorer(idx)
    # (the front end leaves out the histogram of an index no layer has)
    assert ex.sort_by == "unit" and ex.unit == 0 and "color_selectivity" not in ex.score_names


def test_widgets_import_no_torch_and_build_no_html_from_data():
    import ast

    for path in sorted((REPO / "nsi_widgets" / "widgets").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "torch" for n in names), f"{path.name} imports torch"
            # ipywidgets' HTML widgets would render layer/class names as markup
            if isinstance(node, ast.Attribute) and node.attr in ("HTML", "HTMLMath"):
                pytest.fail(f"{path.name} uses ipywidgets.{node.attr}")
    for path in sorted((REPO / "js" / "src").glob("*.js")):
        source = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in source, f"{path.name} uses {sink}"


def test_grid_and_card_see_changes_made_elsewhere_on_refresh(tmp_path):
    """Another notebook (here: a second connection to the same SQLite file) writes; the widgets,
    asked to refresh (the front end sends this message when it gets the focus), show it."""
    from nsi_widgets.annotations import AnnotationStore

    idx = make_fake_index()
    mine = AnnotationStore(tmp_path / "notes.sqlite", index=idx, author="ana")
    grid = NeuronGrid(idx, layer="conv2", annotations=mine)
    card = NeuronCard(idx, "conv2", 7, annotations=mine)
    assert "7" not in grid.annotation_table and card.annotation.get("label", "") == ""
    elsewhere = AnnotationStore(tmp_path / "notes.sqlite", index=idx, author="ana")
    elsewhere.annotate("conv2", 7, "red blob", note="from the other notebook")
    grid._on_message(grid, {"type": "refresh"}, [])
    card.refresh()
    assert grid.annotation_table["7"]["label"] == "red blob"
    assert card.annotation["label"] == "red blob" and card.annotation["note"] == "from the other notebook"
    grid.search = "red blob"
    assert grid.order == [7]


# ---------------------------------------------------------------------------------------------
# the card's view registry and on-demand computations
# ---------------------------------------------------------------------------------------------
def _stripes(values) -> np.ndarray:
    """A test picture: horizontal stripes whose brightness is the values (rows of 4 px)."""
    v = np.repeat(np.clip(np.asarray(values, dtype=np.float32), 0, 1), 4)
    return np.repeat(v[:, None, None], 8, axis=1).repeat(3, axis=2)


def _doubled(request):
    """The test-only computation: attaches 'doubled colour' per unit, with progress, extending the
    attachment of earlier requests (one unit at a time, as a costly method would)."""
    idx, layer, unit = request.index, request.layer, request.unit
    L = idx[layer]
    old = request.attachment
    values = (np.array(old.arrays[layer]["doubled"]) if old is not None and layer in old.arrays
              else np.full(L.n_units, np.nan, np.float32))
    for step in range(3):
        request.progress(step / 3, f"step {step + 1} of 3")
    values[unit] = 2 * L.scores["color_selectivity"][unit]
    arrays = dict(old.arrays) if old is not None else {}
    arrays[layer] = {"doubled": values.astype(np.float32)}
    return Attachment("test_doubling", meta={"computed_for": [layer, int(unit)]}, arrays=arrays,
                      columns={name: ["doubled"] for name in arrays})


def _doubled_payload(attachment, layer, unit):
    arrays = attachment.arrays.get(layer)
    if arrays is None or not np.isfinite(arrays["doubled"][unit]):
        return {"missing": True}
    value = float(arrays["doubled"][unit])
    return views.Panel(text=f"doubled colour index of unit {unit}", images=[(_stripes([value / 2, value]), "stripes")],
                       rows=[["doubled", value]]).to_payload()


@pytest.fixture
def test_view():
    view = views.register_card_view(views.CardView("doubling", "doubled", _doubled_payload, kind="test_doubling",
                                                   renderer="panel", compute_label="Double it"))
    yield view
    views.unregister_card_view("doubling")


def test_card_views_registry_and_attachment_views(idx, test_view):
    assert [v.name for v in views.registered_card_views()][:3] == ["summary", "classes", "top_images"]
    with pytest.raises(WidgetArgumentError, match="is registered"):
        views.register_card_view(views.CardView("doubling", "again", _doubled_payload))
    with pytest.raises(WidgetArgumentError, match="unknown placement"):
        views.CardView("x", "x", placement="sidebar")
    # without an attachment of its kind and without a compute handler the view is not shown
    assert "doubling" not in [v["key"] for v in Explorer(idx).card_views]
    # one view per attachment of the kind; per-unit columns join the grid's sort and filter choices
    values = np.arange(40, dtype=np.float32) / 32  # exact in float32
    idx.attach("run a", Attachment("test_doubling", arrays={"conv2": {"doubled": values}}, columns={"conv2": ["doubled"]}))
    idx.attach("run b", Attachment("test_doubling", arrays={"conv2": {"doubled": values[::-1].copy()}}))
    ex = Explorer(idx, layer="conv2")
    specs = {v["key"]: v for v in ex.card_views}
    assert specs["doubling:run a"]["title"] == "doubled · run a" and specs["doubling:run b"]["renderer"] == "panel"
    assert specs["doubling:run a"]["compute"] is None  # no handler: no button
    assert "run a.doubled" in ex.score_names and "run b.doubled" not in ex.score_names
    ex.sort_by = "run a.doubled"
    assert ex.order[:3] == [39, 38, 37]
    ex.filters = {"run a.doubled": [0.5, 0.625]}
    assert ex.order == [20, 19, 18, 17, 16]
    payload = ex.unit_payload("conv2", 16)
    assert payload["doubling:run a"]["rows"] == [["doubled", 0.5]]
    np.testing.assert_array_equal(_png(payload["doubling:run b"]["images"][0]["png"])[::4, 0, 0],
                                  _data.to_uint8(np.array([values[23] / 2, values[23]])))
    # the payload travels as binary buffers beside JSON
    body, buffers = _wire.pack({"views": payload})
    ref = body["views"]["doubling:run a"]["images"][0]["png"]["__buffer__"]
    assert buffers[ref] == payload["doubling:run a"]["images"][0]["png"]
    assert len(buffers) == 5  # two PNGs, the NF, the crop strip and the grey activations (float32)
    gray = body["views"]["top_images"]["gray"]
    assert gray["__array__"] == "float32" and np.frombuffer(buffers[gray["data"]["__buffer__"]], "<f4").shape == (20,)
    ex.layer = "conv1"
    assert ex.unit_payload()["doubling:run a"] == {"missing": True}


def test_compute_runs_in_the_background_and_attaches_the_result(idx, test_view, tmp_path):
    from nsi_widgets.index.results import load_index

    ex = Explorer(idx, layer="conv2", compute={"doubling": _doubled}, autosave=tmp_path / "idx.npz")
    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers))
    spec = next(v for v in ex.card_views if v["key"] == "doubling")
    assert spec["compute"] == "Double it" and spec["attachment"] == "doubling"
    unit = ex.unit
    assert ex.unit_payload()["doubling"] == {"missing": True}
    # the button's message: the handler runs on a worker thread, the message handler returns at once
    ex._on_message(ex, {"type": "compute", "view": "doubling", "layer": "conv2", "unit": unit}, [])
    ex.wait_for_computations(timeout=30)
    progress = [c for c, _ in sent if c["type"] == "progress"]
    assert progress[0]["state"] == "running" and progress[-1]["state"] == "done"
    assert any(c["text"] == "step 1 of 3" for c in progress)
    # stored into an attachment, saved with the index, shown as a column and as the view's payload
    assert idx.attachments["doubling"].kind == "test_doubling"
    assert load_index(tmp_path / "idx.npz").attachments["doubling"].meta == {"computed_for": ["conv2", unit]}
    assert "doubling.doubled" in ex.score_names and "doubling.doubled" in ex.layer_payload()["score_names"]
    pushed = [(c, b) for c, b in sent if c["type"] == "unit"]
    assert pushed and pushed[-1][0]["unit"] == unit
    view = pushed[-1][0]["views"]["doubling"]
    expected = 2 * float(idx["conv2"].scores["color_selectivity"][unit])
    assert view["rows"] == [["doubled", pytest.approx(expected)]]
    assert pushed[-1][1][view["images"][0]["png"]["__buffer__"]][:8] == b"\x89PNG\r\n\x1a\n"
    # a failing handler is reported to the view, and the kernel keeps serving
    ex._handlers["doubling"] = lambda request: 1 / 0
    ex.compute("doubling", unit=ex.order[1])
    ex.wait_for_computations(timeout=30)
    assert sent[-1][0]["state"] == "error" and "ZeroDivisionError" in sent[-1][0]["text"]
    with pytest.raises(WidgetArgumentError, match="unknown computable view 'summary'"):
        ex.compute("summary")
    # the exported page shows the attached result
    doc = json.loads(re.search(r'id="nsi-state">(.*?)</script>',
                               export_html(ex, tmp_path / "page.html").read_text(), re.S).group(1))
    assert doc["units"]["conv2"][str(unit)]["doubling"]["rows"] == [["doubled", pytest.approx(expected)]]
