"""Python side of the widgets (no browser): traits, order, filters, payloads, store writes, export."""
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
from nsi_widgets.index.results import NeuronIndex
from nsi_widgets.widgets import (ClassSelectivityChart, ColorSelectivityHistogram, Explorer, NeuronCard,
                                 NeuronGrid, WidgetArgumentError, export_html)
from nsi_widgets.widgets import _data
from nsi_widgets.widgets._model import ESM, _MissingBundle

XSS = "<img src=x onerror=alert(1)>"
REPO = Path(__file__).resolve().parents[1]


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
    grid.observe(lambda change: seen.append(change["new"]), "selected")
    picked = []
    grid.on_select(lambda layer, units: picked.append((layer, units)))
    # what a click in the browser does: a state update over the comm
    grid.set_state({"selected": [7, 3, 7], "active": 3})
    assert grid.selected == [7, 3] and grid.active == 3
    assert seen == [[7, 3]] and picked == [("conv2", [7, 3])]
    with pytest.raises(WidgetArgumentError, match=r"unit 40 is out of range for layer 'conv2': valid units are 0\.\.39"):
        grid.selected = [40]
    assert grid.selected == [7, 3]


def test_grid_layer_switch_reloads_payload_and_clears_selection(idx):
    grid = NeuronGrid(idx, "conv2", filters={"color_selectivity": (0.0, 1.0)})
    grid.selected = [5, 6]
    grid.layer = "conv1"
    assert grid.n_units == 12 and grid.selected == [] and grid.active is None
    assert grid.filters == {"color_selectivity": [0.0, 1.0]}
    scores = np.frombuffer(grid.scores, dtype="<f4").reshape(len(grid.score_names), 12)
    np.testing.assert_array_equal(scores[0], idx["conv1"].scores["color_selectivity"])
    assert np.frombuffer(grid.dead, np.uint8).tolist() == idx["conv1"].dead.astype(int).tolist()
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
    grid = NeuronGrid(idx, "conv2", thumb_size=16)
    L = idx["conv2"]
    sheet = _png(grid.thumbs)
    cols = grid.sprite_cols
    assert cols == 40 and sheet.shape == (16, 40 * 16, 3)
    expected = _data.to_uint8(_data.box_resize(L.neuron_features, 16, 16))
    for unit in (0, 7, 39):
        r, c = divmod(unit, cols)
        np.testing.assert_array_equal(sheet[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16], expected[unit])


def test_bytes_sent_per_neuron_at_most_4kb():
    # incompressible (random) features are the worst case for the PNG sprite
    idx = NeuronIndex({"conv": make_layer("conv", 256, 40, rng=np.random.default_rng(3))})
    idx["conv"].neuron_features[:] = np.random.default_rng(4).uniform(size=idx["conv"].neuron_features.shape)
    grid = NeuronGrid(idx)
    binary = sum(len(getattr(grid, name)) for name in ("thumbs", "scores", "dead"))
    state = grid.get_state()
    json_part = len(json.dumps({k: v for k, v in state.items() if not isinstance(v, (bytes, memoryview))}))
    per_unit = (binary + json_part) / grid.n_units
    assert per_unit <= 4096, per_unit
    # and the index arrays travel as float32 bytes, not JSON lists
    assert isinstance(state["scores"], (bytes, memoryview)) and isinstance(state["thumbs"], (bytes, memoryview))


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
    nf = _png(card.nf)
    np.testing.assert_array_equal(nf, _data.to_uint8(L.neuron_features[unit]))  # 13 px: no resize
    assert card.nf_size == [13, 13]
    strip = _png(card.crops)
    assert card.n_crops == 4 and card.crop_size == [12, 12]
    np.testing.assert_array_equal(strip, np.concatenate(list(L.top_crops[unit]), axis=1))
    np.testing.assert_array_equal(np.frombuffer(card.activations, "<f4"), L.top_activations[unit])
    np.testing.assert_array_equal(np.frombuffer(card.gray_activations, "<f4"), L.details["gray_activations"][unit])
    assert card.top_images == L.top_indices[unit, :4].tolist()
    names = idx.class_names
    assert card.top_classes == [names[c] if c >= 0 else "" for c in L.top_labels[unit, :4]]
    assert card.scores["color_selectivity"] == pytest.approx(float(L.scores["color_selectivity"][unit]))
    assert card.scores["top_activation"] == pytest.approx(float(L.top_activations[unit, 0]))
    # class bars: top classes by weighted frequency, grouped by parent with group sums
    freq = _brute_force_frequencies(L.top_labels[unit], L.top_activations[unit], 6)
    bars = card.class_bars
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
    assert card.dead and card.class_bars["dead"] and card.scores["color_selectivity"] is None


def test_card_editor_writes_to_the_store(idx, store):
    card = NeuronCard(idx, "conv2", 5, annotations=store)
    assert card.editable and card.author == "ada" and card.annotation == {}
    sent, saved = [], []
    card.send = lambda content, buffers=None: sent.append(content)
    card.on_annotate(lambda layer, unit, annotation: saved.append((layer, unit, annotation.get("label"))))
    # the editor's Save button sends this message
    card._handle_message(card, {"type": "annotate", "label": "  red edge ", "note": "n1",
                                "tags": ["edge", " colour ", ""]}, [])
    stored = store.get("conv2", 5)
    assert (stored.label, stored.note, stored.tags, stored.author) == ("red edge", "n1", ("edge", "colour"), "ada")
    assert card.annotation["label"] == "red edge" and card.annotation["author"] == "ada" and card.annotation["time"]
    assert sent[-1]["type"] == "saved" and saved == [("conv2", 5, "red edge")]
    # switching units shows that unit's annotation; coming back shows the saved one
    card.unit = 6
    assert card.annotation == {}
    card.show("conv2", 5)
    assert card.annotation["tags"] == ["edge", "colour"]
    # without a store: the editor is read-only and a save reports an error
    # emptying the editor removes the annotation
    card._handle_message(card, {"type": "annotate", "label": " ", "note": "", "tags": []}, [])
    assert store.get("conv2", 5) is None and card.annotation == {} and sent[-1]["type"] == "saved"
    # a note without a label is refused by the store and reported to the editor
    card._handle_message(card, {"type": "annotate", "label": "", "note": "only a note", "tags": []}, [])
    assert sent[-1]["type"] == "error" or store.get("conv2", 5).note == "only a note"
    plain = NeuronCard(idx, "conv2", 5)
    plain.send = lambda content, buffers=None: sent.append(content)
    plain._handle_message(plain, {"type": "annotate", "label": "x"}, [])
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
    assert hist["counts"] == np.histogram(gamma[ok], bins=20, range=(0, 1))[0].tolist()
    assert hist["n_dead"] == 1 and hist["edges"][0] == 0 and hist["edges"][-1] == 1
    chart.layer = "conv1"
    assert chart.data["layer"] == "conv1" and chart.data["mode"] == "layer"


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
def test_explorer_links(idx, store):
    ex = Explorer(idx, annotations=store, layer="conv2")
    assert ex.card.unit == ex.grid.order[0] == ex.grid.active
    ex.histogram.select_range(0.2, 0.5)
    assert ex.grid.filters == {"color_selectivity": [0.2, 0.5]}
    assert set(ex.grid.order) == set(ex.histogram.selected_units["conv2"])
    ex.grid.set_state({"selected": [9], "active": 9})
    assert (ex.card.layer, ex.card.unit) == ("conv2", 9) and ex.class_chart.unit == 9
    ex.card._handle_message(ex.card, {"type": "annotate", "label": "stripes", "note": "", "tags": []}, [])
    assert ex.grid.annotation_table["9"]["label"] == "stripes"
    ex.card.unit = 10  # the card's own arrows move the grid cursor
    assert ex.grid.active == 10
    ex.layer = "conv1"
    assert ex.card.layer == "conv1" and ex.class_chart.layer == "conv1" and ex.class_chart.unit is None
    assert ex.grid.filters == {"color_selectivity": [0.2, 0.5]}  # the histogram range still applies
    ex.histogram.clear_selection()
    assert ex.grid.filters == {}


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
    state = json.loads(re.search(r'<script type="application/json" id="nsi-state">(.*?)</script>', text, re.S).group(1))
    assert state["grid"]["keyed"]["table"]["conv1"]["annotation_table"]["2"]["label"] == XSS
    card = state["card"]["keyed"]["table"]["conv1\u00002"]
    assert card["annotation"]["note"] == "</script><script>alert(2)</script>"
    thumbs = base64.b64decode(state["grid"]["keyed"]["table"]["conv2"]["thumbs"]["__bytes__"])
    assert _png(thumbs).shape == (32, 40 * 32, 3)


def test_export_accepts_an_index_and_rejects_other_things(idx, tmp_path):
    path = export_html(idx, tmp_path / "idx.html", crops=False)
    state = json.loads(re.search(r'id="nsi-state">(.*?)</script>', path.read_text(), re.S).group(1))
    assert state["card"]["keyed"]["table"]["conv2\u00000"]["n_crops"] == 0
    with pytest.raises(WidgetArgumentError, match="NeuronIndex or an Explorer"):
        export_html([1, 2], tmp_path / "x.html")


# ---------------------------------------------------------------------------------------------
# the browser's sort/filter rules equal Python's (node runs js/src/order.js)
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (needed to run js/src/order.js)")
def test_js_order_rules_equal_python(idx):
    L = idx["conv2"]
    scores = _data.layer_scores(L)
    annotations = {"5": {"label": "Red edge", "note": "", "tags": ["x"]}, "9": {"label": "red", "note": "", "tags": []}}
    cases = []
    for key in ["unit", *scores]:
        for desc in (True, False):
            cases.append(dict(sortBy=key, descending=desc, filters={}, show="all", search=""))
    cases += [dict(sortBy="color_selectivity", descending=True, filters={"color_selectivity": [0.1, 0.5]}, show="alive", search=""),
              dict(sortBy="symmetry_selectivity", descending=False, filters={"class_selectivity": [None, 0.8]}, show="all", search=""),
              dict(sortBy="unit", descending=False, filters={}, show="dead", search=""),
              dict(sortBy="top_activation", descending=True, filters={}, show="all", search="RED")]
    script = """
import { computeOrder } from %s;
const input = JSON.parse(process.argv[1]);
const scores = {};
for (const [k, v] of Object.entries(input.scores)) scores[k] = Float32Array.from(v.map((x) => x === null ? NaN : x));
const out = input.cases.map((c) => Array.from(computeOrder({ n: input.n, scores, dead: Uint8Array.from(input.dead), annotations: input.annotations, ...c })));
console.log(JSON.stringify(out));
""" % json.dumps((REPO / "js" / "src" / "order.js").as_uri())
    payload = json.dumps({"n": L.n_units, "dead": L.dead.astype(int).tolist(), "annotations": annotations, "cases": cases,
                          "scores": {k: [None if not np.isfinite(x) else float(x) for x in v] for k, v in scores.items()}})
    result = subprocess.run(["node", "--input-type=module", "-e", script, payload], capture_output=True, text=True,
                            timeout=60, check=True)
    js_orders = json.loads(result.stdout)
    texts = {int(k): _data.annotation_text(v) for k, v in annotations.items()}
    for case, js_order in zip(cases, js_orders):
        py = _data.display_order(scores, L.dead, case["sortBy"], case["descending"], case["filters"], case["show"],
                                 case["search"], texts)
        assert js_order == py.tolist(), case


# ---------------------------------------------------------------------------------------------
# edge cases and static safety checks
# ---------------------------------------------------------------------------------------------
def test_grid_without_features_or_crops_sends_no_thumbnails():
    idx = make_fake_index(layers=(("conv1", 6, 3),), with_features=False, with_crops=False)
    grid = NeuronGrid(idx)
    assert grid.thumbs == b"" and grid.thumb_size == 0 and len(grid.order) == 6
    card = NeuronCard(idx, "conv1", 0)
    assert card.nf == b"" and card.crops == b"" and card.n_crops == 0
    assert len(card.top_images) == 12 and card.top_classes[0] in idx.class_names + [""]
    # crops but no features: the grid shows each unit's best crop
    idx = make_fake_index(layers=(("conv1", 6, 3),), with_features=False)
    tile = _png(NeuronGrid(idx, thumb_size=12).thumbs)[:12, :12]
    np.testing.assert_array_equal(tile, idx["conv1"].top_crops[0, 0])


def test_explorer_without_the_colour_index_has_no_histogram():
    idx = make_fake_index(layers=(("conv1", 6, 3), ("conv2", 8, 5)))
    for name in idx.layers:
        del idx[name].scores["color_selectivity"]
    ex = Explorer(idx)
    assert ex.histogram is None and ex.grid.sort_by == "unit" and ex.card.unit == 0


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
    asked to refresh (the grid's search box sends this message on focus), show it."""
    from nsi_widgets.annotations import AnnotationStore

    idx = make_fake_index()
    mine = AnnotationStore(tmp_path / "notes.sqlite", index=idx, author="ana")
    grid = NeuronGrid(idx, layer="conv2", annotations=mine)
    card = NeuronCard(idx, "conv2", 7, annotations=mine)
    assert "7" not in grid.annotation_table and card.annotation.get("label", "") == ""
    elsewhere = AnnotationStore(tmp_path / "notes.sqlite", index=idx, author="ana")
    elsewhere.annotate("conv2", 7, "red blob", note="from the other notebook")
    grid._handle_message(grid, {"type": "refresh"}, [])
    card.refresh()
    assert grid.annotation_table["7"]["label"] == "red blob"
    assert card.annotation["label"] == "red blob" and card.annotation["note"] == "from the other notebook"
    grid.search = "red blob"
    assert grid.order == [7]
