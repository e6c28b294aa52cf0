"""The Explorer's views of other methods, on the Python side: Network Dissection (the picture against a
brute force, the card's concepts, the grid's concept column, the suggested label, the detector chart),
the synthesised view, the projections, concept vectors, the layer payloads, default_compute's handlers,
and the exported page's cached results. Tiny models and data built here (tests/_models.py)."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import nsi_widgets as nsi
from _models import ColourConcepts, ListDataset, make_cnn, make_images, plant_red_unit
from test_dissection import _upsample
from test_widgets import NODE, _run_node
from nsi_widgets.concepts.dissection_views import add_pictures, dissection_pictures, merge_dissection_attachments
from nsi_widgets.core.errors import InputError
from nsi_widgets.index.results import Attachment
from nsi_widgets.synthesis import FacetOptions, OnDemandOptions
from nsi_widgets.widgets import Explorer, OnDemandSettings, WidgetArgumentError, default_compute, export_html
from nsi_widgets.widgets import concept_vectors as cv_view
from nsi_widgets.widgets import dissection as dv
from nsi_widgets.widgets._model import ESM

LAYERS = ["conv1", "conv2", "conv3"]
N_IMAGES = 40
QUANTILE = 0.15   # about the share of red pixels (1/6 of uniform RGB): the planted unit detects "red"
FAST = OnDemandSettings(synthesis=OnDemandOptions(steps=6, k=2, facet_options=FacetOptions(steps=3)),
                        projections={"n_images": 4}, dissection={"quantile": QUANTILE, "union": "all"}, n_pictures=3)


@pytest.fixture(autouse=True)
def _bundle_built():
    if not ESM.is_file():
        pytest.fail(f"{ESM} is missing: build the front end first (cd js && npm install && npm run build)")


@pytest.fixture(scope="module")
def world():
    """A tiny CNN whose conv1 unit 0 computes R - G - B, 40 random images (3 classes) and their colour concepts."""
    torch.manual_seed(0)
    model = plant_red_unit(make_cnn(0))
    images = make_images(N_IMAGES)
    data = ListDataset(images, [i % 3 for i in range(N_IMAGES)], classes=["a", "b", "c"])
    return model, data, ColourConcepts(images)


@pytest.fixture
def idx(world):
    model, data, _ = world
    return nsi.index_neurons(model, data, LAYERS, top_n=10, progress=False)


@pytest.fixture(scope="module")
def dissection(world):
    model, _, concepts = world
    return nsi.dissect(model, concepts, ["conv1", "conv3"], quantile=QUANTILE, union="all", progress=False)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _layer_maps(model, data, layer) -> np.ndarray:
    """Every map of the layer, brute force: one forward of all images, float64."""
    out = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.append(o.double().numpy()))
    with torch.no_grad():
        model(torch.stack([data[i][0] for i in range(len(data))]))
    handle.remove()
    return out[0]


# ---------------------------------------------------------------------------------------------
# Network Dissection
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer, mask_scale", [("conv1", 1), ("conv3", 1), ("conv3", 2)])
def test_pictures_show_exactly_what_the_dissection_counted(world, layer, mask_scale):
    model, _, _ = world
    concepts = ColourConcepts(world[2].images, mask_scale=mask_scale)
    result = nsi.dissect(model, concepts, [layer], quantile=QUANTILE, union="all", progress=False)
    L = result[layer]
    pictures = dissection_pictures(model, concepts, result, layer, n_images=N_IMAGES)   # every image: the whole tally
    assert pictures.units.tolist() == list(range(L.n_units))
    # the concept pictured is the unit's best (argmax of its IoUs), and the maps summed over all images are the tallies
    best = L.iou.argmax(axis=1)
    np.testing.assert_array_equal(pictures.concepts, best)
    both = (pictures.maps & pictures.masks).sum(axis=(1, 2, 3))
    np.testing.assert_array_equal(both, L.intersection[np.arange(L.n_units), best])
    np.testing.assert_array_equal(pictures.maps.sum(axis=(1, 2, 3)), L.unit_pixels[np.arange(L.n_units), best])
    # against a brute force: top images by map maximum (ties: smaller index), maps upsampled at the
    # receptive-field centres and thresholded at the dissection's T_k, masks and images as in the data
    maps = _layer_maps(model, concepts, layer)
    image_size = tuple(concepts[0][0].shape[1:])
    masks = np.stack([concepts[i][1].numpy() for i in range(N_IMAGES)])
    rf = nsi.receptive_field(model, layer, input_size=image_size)
    peaks = maps.max(axis=(2, 3))
    for unit in range(L.n_units):
        order = sorted(range(N_IMAGES), key=lambda i: (-np.float32(peaks[i, unit]), i))
        assert pictures.images[unit].tolist() == order
        up = _upsample(maps[order, unit], rf, image_size, masks.shape[-2:])
        np.testing.assert_array_equal(pictures.maps[unit], up > L.thresholds[unit])
        np.testing.assert_array_equal(pictures.masks[unit], masks[order, best[unit]])
    rgb = np.stack([concepts[i][0].permute(1, 2, 0).numpy() for i in pictures.images[0]])
    np.testing.assert_array_equal(pictures.rgb[0], np.round(rgb * 255).astype(np.uint8))


def test_pictures_reuse_the_top_images_and_merge_into_the_attachment(world, dissection):
    model, _, concepts = world
    first = dissection_pictures(model, concepts, dissection, "conv1", [0, 2], n_images=3)
    again = dissection_pictures(model, concepts, dissection.to_attachment(), "conv1", [4, 2], n_images=3,
                                candidates=first.candidates)
    np.testing.assert_array_equal(again.images, first.candidates[[2, 4], :3])
    np.testing.assert_array_equal(again.maps[0], first.maps[1])               # unit 2, computed twice
    attachment = add_pictures(add_pictures(dissection.to_attachment(), first), again)
    arrays = attachment.arrays["conv1"]
    assert arrays["picture_units"].tolist() == [0, 2, 4] and arrays["picture_maps"].shape[:2] == (3, 3)
    assert "picture_units" not in dissection.to_attachment().arrays["conv1"]  # a copy: the input is unchanged
    # pictures survive saving the index
    with pytest.raises(InputError, match="another number of images"):
        add_pictures(attachment, dissection_pictures(model, concepts, dissection, "conv1", [1], n_images=2))
    with pytest.raises(InputError, match="not the one that was dissected"):
        dissection_pictures(make_cnn(1), concepts, dissection, "conv1", [0])
    with pytest.raises(InputError, match="was not dissected"):
        dissection_pictures(model, concepts, dissection, "conv2", [0])
    with pytest.raises(InputError, match="out of range"):
        dissection_pictures(model, concepts, dissection, "conv1", [99])
    # dissections of two layers merge into one attachment; different settings are refused
    merged = merge_dissection_attachments(None, dissection.to_attachment())
    other = nsi.dissect(model, concepts, ["conv2"], quantile=QUANTILE, union="all", progress=False).to_attachment()
    assert sorted(merge_dissection_attachments(merged, other).arrays) == ["conv1", "conv2", "conv3"]
    with pytest.raises(InputError, match="differ in quantile"):
        merge_dissection_attachments(merged, nsi.dissect(model, concepts, ["conv2"], progress=False).to_attachment())


def test_card_lists_top_concepts_pictures_and_suggests_the_best(world, idx, dissection, tmp_path):
    model, _, concepts = world
    pictures = dissection_pictures(model, concepts, dissection, "conv1", [0], n_images=3)
    idx.attach("dissection", add_pictures(dissection.to_attachment(), pictures))
    idx = nsi.load_index(idx.save(tmp_path / "idx"))                           # pictures survive the index file
    ex = Explorer(idx, layer="conv1")
    payload = ex.unit_payload("conv1", 0)["dissection"]
    L = dissection["conv1"]
    order = np.argsort(-L.iou[0], kind="stable")[:dv.N_CONCEPTS]
    assert [c["name"] for c in payload["concepts"]] == [L.concepts[k] for k in order]
    assert [c["category"] for c in payload["concepts"]] == [L.categories[k] for k in order]
    assert [c["iou"] for c in payload["concepts"]] == pytest.approx(L.iou[0, order].tolist())
    assert payload["concepts"][0]["name"] == "red" and payload["detector"]
    iou = float(L.best_iou[0])
    assert iou >= 0.8
    assert payload["suggestion"]["label"] == "red"
    assert payload["suggestion"]["note"] == f"suggested by Network Dissection: IoU {iou:.2f} with 'red' (colour)"
    # NetDissect's picture: the image dimmed outside the thresholded map, beside it dimmed outside the mask
    assert payload["picture_concept"] == {"name": "red", "category": "colour"}
    assert [p["image"] for p in payload["pictures"]] == pictures.images[0].tolist()
    for col, picture in enumerate(payload["pictures"]):
        rgb = pictures.rgb[0, col].astype(np.float64)
        for png, region in ((picture["map"], pictures.maps[0, col]), (picture["mask"], pictures.masks[0, col])):
            expected = np.round(rgb * np.where(region, 1.0, dv.DIM)[..., None])
            assert np.abs(_png(png).astype(np.float64) - expected).max() <= 1
        m, k = pictures.maps[0, col], pictures.masks[0, col]
        assert picture["iou"] == pytest.approx((m & k).sum() / (m | k).sum())
    # a unit with no concept above the threshold: concepts listed, no suggestion, no pictures yet
    none = int(np.flatnonzero(L.best_concept < 0)[0]) if (L.best_concept < 0).any() else None
    other = ex.unit_payload("conv1", none if none is not None else 1)["dissection"]
    assert "pictures" not in other and len(other["concepts"]) == len(L.concepts)
    if none is not None:
        assert "suggestion" not in other and not other["detector"]
    assert ex.unit_payload("conv2", 0)["dissection"] == {"missing": True}


def test_grid_shows_the_best_concept_by_name_filters_and_sorts_by_it(idx, dissection):
    idx.attach("dissection", dissection.to_attachment())
    ex = Explorer(idx, layer="conv3")
    L = dissection["conv3"]
    data = ex.layer_payload()
    assert data["column_labels"]["dissection.best_concept"] == {"names": L.concepts, "groups": L.categories}
    assert "dissection.best_iou" in data["score_names"]
    column = np.frombuffer(data["scores"]["data"], "<f4").reshape(len(data["score_names"]), -1)[
        data["score_names"].index("dissection.best_concept")]
    np.testing.assert_array_equal(column, np.where(L.best_concept >= 0, L.best_concept, np.nan).astype(np.float32))
    for name in {L.concepts[k] for k in L.best_concept if k >= 0}:
        ex.set_filter("dissection.best_concept", name)
        assert ex.filters == {"dissection.best_concept": [float(L.concepts.index(name))] * 2}
        assert sorted(ex.order) == [u for u in range(L.n_units) if L.best_concept[u] == L.concepts.index(name)]
    with pytest.raises(WidgetArgumentError, match="Valid name of column"):
        ex.set_filter("dissection.best_concept", "purple")
    ex.clear_filters()
    ex.sort_by, ex.descending = "dissection.best_iou", True
    alive = [u for u in range(L.n_units) if not idx["conv3"].dead[u]]
    expected = sorted(alive, key=lambda u: (-L.best_iou[u], u)) + [u for u in range(L.n_units) if idx["conv3"].dead[u]]
    assert ex.order == expected


@pytest.mark.skipif(NODE is None, reason="node is not installed (needed to run js/src under test)")
def test_js_shows_category_names_in_cells_and_tooltips(idx, dissection):
    """The grid's text of a cell (js/src/layerdata.js) for the Explorer's own layer payload."""
    idx.attach("dissection", dissection.to_attachment())
    ex = Explorer(idx, layer="conv1")
    data = ex.layer_payload()
    names, table = data["score_names"], np.frombuffer(data["scores"]["data"], "<f4").reshape(len(data["score_names"]), -1)
    script = """
import { cellText, columnText } from "SRC/layerdata.js";
const input = JSON.parse(process.argv[1]);
const scores = {};
input.names.forEach((n, k) => { scores[n] = Float32Array.from(input.table[k].map((x) => x === null ? NaN : x)); });
const layer = { scores, columnLabels: input.labels };
const units = [...Array(input.n).keys()];
console.log(JSON.stringify(input.names.map((n) => units.map((u) => [cellText(layer, n, u), columnText(layer, n, u)]))));
"""
    out = _run_node(script, {"names": names, "labels": data["column_labels"], "n": table.shape[1],
                             "table": [[None if not np.isfinite(x) else float(x) for x in row] for row in table]})
    L = dissection["conv1"]
    best = out[names.index("dissection.best_concept")]
    assert [t for t, _ in best] == [L.concepts[k] if k >= 0 else "—" for k in L.best_concept]
    iou = out[names.index("dissection.best_iou")]
    for u, (cell, text) in enumerate(iou):   # a number of the attachment, then its concept's name
        assert cell == (f"{text} {L.concepts[L.best_concept[u]]}" if L.best_concept[u] >= 0 else text)
    assert out[names.index("color_selectivity")][0][0] == out[names.index("color_selectivity")][0][1]


def test_detector_chart_counts_unique_detectors_per_layer_and_category(idx, dissection):
    table = dv.detector_table(dissection)
    for layer in dissection:
        L = dissection[layer]
        for category in set(L.categories):
            hits = [k for k in L.best_concept if k >= 0 and L.categories[k] == category]
            assert table[layer][category] == {"detectors": len(hits), "unique_concepts": len(set(hits))}
    idx.attach("dissection", dissection.to_attachment())
    assert dv.detector_table(idx) == table == dv.detector_table(dissection.to_attachment())
    figure = dv.detector_chart(idx)
    assert figure.layout.barmode == "stack"
    assert [t.name for t in figure.data] == list(dict.fromkeys(dissection["conv1"].categories))
    for trace in figure.data:
        assert list(trace.y) == [table[layer][trace.name]["unique_concepts"] for layer in dissection]
    assert list(dv.detector_chart(dissection, count="detectors").data[0].y) == [
        table[layer][figure.data[0].name]["detectors"] for layer in dissection]
    with pytest.raises(WidgetArgumentError, match="unknown count"):
        dv.detector_chart(dissection, count="units")


# ---------------------------------------------------------------------------------------------
# Concept vectors
# ---------------------------------------------------------------------------------------------
def _concept_vectors(idx, layer="conv3", form="vectors"):
    rng = np.random.default_rng(5)
    names, categories = ["red", "green", "<b>stripes</b>", "round"], ["colour", "colour", "texture", "shape"]
    C = idx[layer].n_units
    vectors = rng.normal(size=(len(names), C)).astype(np.float32)
    quality = np.array([0.5, 0.25, 0.125, 0.0], np.float32)
    arrays = {"vectors": vectors, "quality": quality} if form == "vectors" else {
        "weights": vectors.T.copy(), "quality": quality, "top_concept": np.zeros(C, np.int64),
        "top_weight": np.zeros(C, np.float32)}
    columns = {layer: ["top_concept", "top_weight"]} if form == "weights" else {}
    attachment = Attachment("concept_vectors", {"concepts": names, "categories": categories, "method": "net2vec"},
                            {layer: arrays}, columns)
    return attachment, vectors, names


@pytest.mark.parametrize("form", ["vectors", "weights"])
def test_concept_vectors_list_a_units_concepts_and_a_concepts_units(idx, form):
    attachment, vectors, names = _concept_vectors(idx, form=form)
    idx.attach("net2vec", attachment)
    ex = Explorer(idx, layer="conv3")
    keys = {v["key"]: v for v in ex.card_views}
    assert keys["concept_vectors:net2vec"]["placement"] == "card"
    assert keys["concept_units:net2vec"]["placement"] == "tab" and keys["concept_units:net2vec"]["has_layer_payload"]
    relative = vectors / np.abs(vectors).max(axis=1, keepdims=True)      # each weight over its concept's largest
    for unit in range(idx["conv3"].n_units):
        listed = ex.unit_payload("conv3", unit)["concept_vectors:net2vec"]["concepts"]
        order = sorted(range(len(names)), key=lambda k: (-relative[k, unit], k))
        assert [c["name"] for c in listed] == [names[k] for k in order]
        assert [c["weight"] for c in listed] == pytest.approx([float(vectors[k, unit]) for k in order])
    table = ex.layer_payload()["views"]["concept_units:net2vec"]
    units = np.frombuffer(table["top_units"]["data"], "<i4").reshape(table["top_units"]["shape"])
    weights = np.frombuffer(table["top_weights"]["data"], "<f4").reshape(table["top_weights"]["shape"])
    for k in range(len(names)):
        expected = sorted(range(vectors.shape[1]), key=lambda u: (-vectors[k, u], u))[:cv_view.N_UNITS]
        assert units[k].tolist() == expected and weights[k].tolist() == pytest.approx(vectors[k, expected].tolist())
    assert table["concepts"] == names and "views" in ex.layer_payload("conv1")
    assert "concept_units:net2vec" not in ex.layer_payload("conv1")["views"]   # no vectors for conv1
    assert ex.unit_payload("conv1", 0)["concept_vectors:net2vec"] == {"missing": True}
    if form == "weights":
        assert ex.layer_payload()["column_labels"]["net2vec.top_concept"]["names"] == names


# ---------------------------------------------------------------------------------------------
# On-demand handlers: synthesis, projections, dissection; the exported page
# ---------------------------------------------------------------------------------------------
def test_default_compute_gives_every_on_demand_view(world):
    model, data, concepts = world
    assert sorted(default_compute(model, data)) == ["projections", "synthesis"]
    assert sorted(nsi.default_compute(model, data, concept_data=concepts)) == ["dissection", "projections", "synthesis"]
    with pytest.raises(InputError, match="OnDemandSettings"):
        default_compute(model, data, settings={"n_pictures": 2})


def _computed(ex, view, layer, unit, sent):
    ex.compute(view, layer, unit)
    ex.wait_for_computations(timeout=120)
    errors = [c for c, _ in sent if c["type"] == "progress" and c["state"] == "error"]
    assert not errors, errors
    return ex.unit_payload(layer, unit)


def test_on_demand_views_compute_attach_and_show_in_the_exported_page(world, idx, tmp_path):
    model, data, concepts = world
    store = nsi.AnnotationStore(tmp_path / "notes.sqlite", index=idx, author="ana")
    ex = Explorer(idx, store, layer="conv1", compute=default_compute(model, data, concept_data=concepts, settings=FAST),
                  autosave=tmp_path / "index.npz")
    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers))
    specs = {v["key"]: v for v in ex.card_views}
    assert {specs[k]["compute"] for k in ("synthesis", "projections", "dissection")} == {
        "Synthesise", "Project top images", "Show top images"}
    # the dissection view dissects the layer first, then pictures the unit; a second unit reuses the top images
    payload = _computed(ex, "dissection", "conv1", 0, sent)["dissection"]
    assert payload["suggestion"]["label"] == "red" and len(payload["pictures"]) == FAST.n_pictures
    candidates = idx.attachments["dissection"].arrays["conv1"]["picture_candidates"].copy()
    _computed(ex, "dissection", "conv1", 3, sent)
    arrays = idx.attachments["dissection"].arrays["conv1"]
    assert arrays["picture_units"].tolist() == [0, 3]
    np.testing.assert_array_equal(arrays["picture_candidates"], candidates)
    assert "dissection.best_concept" in ex.layer_payload("conv1")["column_labels"]
    progress = [c for c, _ in sent if c["type"] == "progress" and c["view"] == "dissection"]
    assert progress[-1]["state"] == "done" and any("pictures" in c["text"] for c in progress)
    # accepting the suggestion is a normal annotation (what the editor sends)
    ex._on_message(ex, {"type": "annotate", "layer": "conv1", "unit": 0, "label": payload["suggestion"]["label"],
                        "note": payload["suggestion"]["note"], "tags": []}, [])
    assert store.get("conv1", 0).note == payload["suggestion"]["note"]

    # synthesised: the image and its facets, members with the index's crops
    unit = 2
    syn = _computed(ex, "synthesis", "conv3", unit, sent)["synthesis"]
    arrays = idx.attachments["synthesis"].arrays["conv3"]
    row = int(np.flatnonzero(arrays["am_units"] == unit)[0])
    np.testing.assert_array_equal(_png(syn["am"]["png"]), arrays["am_images"][row])  # small: sent at its own size
    assert syn["am"]["activation"] == pytest.approx(float(arrays["am_activations"][row]))
    facet_rows = np.flatnonzero(arrays["facet_units"] == unit)
    assert len(syn["facets"]) == len(facet_rows) == 2
    L = idx["conv3"]
    for facet, r in zip(syn["facets"], facet_rows):
        size = int(arrays["facet_sizes"][r])
        assert facet["ranks"] == arrays["facet_member_ranks"][r, :size].tolist()
        assert facet["images"] == [int(L.top_indices[unit, rank]) for rank in facet["ranks"]]
        np.testing.assert_array_equal(_png(facet["mean"]), arrays["facet_mean_images"][r])
        h, w = facet["thumb_size"]
        strip = _png(facet["thumbs"])
        for i, rank in enumerate(facet["thumb_ranks"]):
            crop = L.top_crops[unit, rank]
            if crop.shape[:2] == (h, w):
                np.testing.assert_array_equal(strip[:, i * w:(i + 1) * w], crop)
    assert "synthesis.am_activation" in ex.layer_payload("conv3")["score_names"]   # a grid column

    # projections: the strip of the first top images and the mean, in the documented colours
    proj = _computed(ex, "projections", "conv3", unit, sent)["projections"]
    arrays = idx.attachments["projections"].arrays["conv3"]
    assert proj["images"] == L.top_indices[unit, :proj["n"]].tolist() == arrays["image_indices"][0, :proj["n"]].tolist()
    th, tw = proj["tile"]
    strip = _png(proj["strip"])
    for i in range(proj["n"]):
        np.testing.assert_array_equal(strip[:, i * tw:(i + 1) * tw], arrays["images"][0, i])
    signed = nsi.synthesis.TopProjections.from_attachment(idx.attachments["projections"], "conv3").crops[0]
    expected = np.round(255 * nsi.synthesis.projection_to_rgb(signed))   # grey 0.5 = zero
    assert np.abs(strip[:, :tw].astype(float) - expected[0]).max() <= 1
    _computed(ex, "projections", "conv3", 4, sent)
    assert idx.attachments["projections"].arrays["conv3"]["units"].tolist() == [unit, 4]

    # saved after each computation; the exported page carries every cached result
    reloaded = nsi.load_index(tmp_path / "index.npz")
    assert sorted(reloaded.attachments) == ["dissection", "projections", "synthesis"]
    doc = json.loads(re.search(r'id="nsi-state">(.*?)</script>', export_html(ex, tmp_path / "page.html").read_text(),
                               re.S).group(1))
    page = doc["units"]
    assert len(page["conv1"]["0"]["dissection"]["pictures"]) == FAST.n_pictures
    assert page["conv3"][str(unit)]["synthesis"]["computed"] and page["conv3"][str(unit)]["projections"]["computed"]
    assert not page["conv3"]["0"]["synthesis"]["computed"]
    assert page["conv1"]["0"]["dissection"]["suggestion"]["label"] == "red"


def test_layer_payloads_refresh_when_a_computation_attaches(idx):
    attachment, _, names = _concept_vectors(idx, layer="conv2")

    def compute_vectors(request):
        return attachment

    ex = Explorer(idx, layer="conv2", compute={"concept_units": compute_vectors})
    ex.send = lambda content, buffers=None: None
    assert "concept_units" not in ex.layer_payload()["views"]
    ex.compute("concept_units")
    ex.wait_for_computations(timeout=30)
    assert ex.layer_payload()["views"]["concept_units"]["concepts"] == names


def test_the_concept_vectors_results_attachment_shows(idx):
    """The attachment that ConceptVectors.to_attachment() makes (branch concepts) shows as the views expect."""
    results = pytest.importorskip("nsi_widgets.concepts.vector_results",
                                  reason="concept vectors (nsi.concept_vectors, branch concepts) are not merged yet")
    _, vectors, names = _concept_vectors(idx)
    quality = np.array([0.5, 0.25, 0.125, 0.0])
    cv = results.ConceptVectors("conv3", "net2vec", names, ["colour", "colour", "texture", "shape"], vectors,
                                np.zeros(len(names)), quality)
    idx.attach("net2vec", cv.to_attachment())
    ex = Explorer(idx, layer="conv3")
    column = ex.layer_payload()["column_labels"]["net2vec.top_concept"]
    assert column["names"] == names
    top = idx.attachments["net2vec"].arrays["conv3"]["top_concept"]
    for unit in range(idx["conv3"].n_units):
        listed = ex.unit_payload("conv3", unit)["concept_vectors:net2vec"]["concepts"]
        assert listed[0]["name"] == names[int(top[unit])]          # the card's first concept is the grid's
    table = ex.layer_payload()["views"]["concept_units:net2vec"]
    units = np.frombuffer(table["top_units"]["data"], "<i4").reshape(table["top_units"]["shape"])
    for k, concept in enumerate(names):
        assert units[k, :3].tolist() == [u for u, _ in cv.top_units(concept, 3)]
    np.testing.assert_array_equal(np.frombuffer(table["quality"]["data"], "<f4"), quality.astype(np.float32))
