"""Acceptance: the card's views of other methods in a real JupyterLab, and in the exported page.

One notebook page (the JupyterLab server of conftest.py) serves every test of this module, in file
order: Network Dissection (the concept list, NetDissect's picture, the grid's concept column, the
suggested label accepted into the store), the "synthesised" view computed while the Explorer keeps
answering, the projections toggle, the "generated" view's PPGN samples, concept vectors linked to the cards, and the exported page
showing every cached result. A tiny CNN with a planted red detector (conv1 unit 0) and 40 random
images (tests/_models.py) keep the kernel's work to seconds; small settings (few steps) throughout.
"""
from __future__ import annotations

import pytest

from test_explorer import RUN_CELL  # runs command.py, prints RUN#<n> <json of result>

pytestmark = pytest.mark.browser

XSS_CONCEPT = "<b>stripes</b>"
SETUP_CELL = f"""\
import json, time
import numpy as np, torch
import nsi_widgets as nsi
from nsi_widgets.index.results import Attachment
from nsi_widgets.synthesis import FacetOptions, OnDemandOptions
from nsi_widgets.widgets import OnDemandSettings, export_html
from _models import ColourConcepts, ListDataset, make_cnn, make_images, plant_red_unit

torch.manual_seed(0)
model = plant_red_unit(make_cnn(0))          # conv1 unit 0 computes R - G - B: a red detector
images = make_images(40)
data = ListDataset(images, [i % 3 for i in range(40)], classes=["a", "b", "c"])
concepts = ColourConcepts(images)
idx = nsi.index_neurons(model, data, ["conv1", "conv2", "conv3"], top_n=10, progress=False)
# concept vectors of conv3 as the concepts branch attaches them: per layer weights (C, K)
names = ["red", "green", {XSS_CONCEPT!r}, "round"]
weights = np.random.default_rng(5).normal(size=(idx["conv3"].n_units, len(names))).astype(np.float32)
idx.attach("net2vec", Attachment("concept_vectors", {{"concepts": names, "categories": ["colour", "colour", "texture", "shape"],
                                                     "method": "net2vec"}}, {{"conv3": {{"weights": weights}}}}))
settings = OnDemandSettings(synthesis=OnDemandOptions(steps=8, k=2, facet_options=FacetOptions(steps=4)),
                            projections={{"n_images": 4}}, dissection={{"quantile": 0.15, "union": "all"}}, n_pictures=3,
                            generated={{"n": 3, "steps": 5}})
class TinyGenerator(torch.nn.Module):   # a generator for the "generated" view: latent (B, 4) -> RGB (B, 3, 20, 24)
    latent_dim = 4
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3 * 20 * 24)
    def forward(self, h):
        return torch.sigmoid(self.fc(h)).view(len(h), 3, 20, 24)
compute = nsi.default_compute(model, data, concept_data=concepts, generator=TinyGenerator(), settings=settings)
_synthesis = compute["synthesis"]
def held_synthesis(request):   # held for 5 s (with progress) first: the test works the Explorer meanwhile
    for step in range(50):
        request.progress(step / 100, "held by the test")
        time.sleep(0.1)
    return _synthesis(request)
compute["synthesis"] = held_synthesis
store = nsi.AnnotationStore("views.sqlite", index=idx, author="ana")
ex = nsi.Explorer(idx, annotations=store, layer="conv1", unit=0, compute=compute)

def state():
    return {{"layer": ex.layer, "unit": ex.unit, "order": ex.order, "filters": ex.filters, "sort_by": ex.sort_by,
            "store": {{f"{{k[0]}}/{{k[1]}}": [a.label, a.note] for k, a in store.all().items()}}}}
ex"""
CELLS = [SETUP_CELL, RUN_CELL]
RUN = 1

APP = ".jp-NotebookPanel:visible .nsi-app"
GRID = f"{APP} .nsi-grid-widget"
CARD = f"{APP} .nsi-card"


@pytest.fixture(scope="module")
def lab(lab_session):
    lab = lab_session("views", viewport=(1400, 1000))
    lab.write_notebook("views.ipynb", CELLS)
    lab.open_notebook("views.ipynb")
    lab.run_cell(0)
    lab.page.locator(f"{GRID}[data-ready='1'] .nsi-cell").first.wait_for(timeout=120_000)
    lab.page.locator(f"{CARD}[data-unit='0'][data-layer='conv1']").wait_for()
    lab.lap("explorer with views rendered")
    yield lab
    print("console errors:", lab.unexpected_console_errors(), "dialogs:", lab.dialogs)


def py(lab, code: str = "result = state()"):
    """Run ``code`` in the kernel (it sets ``result``) and return ``result``."""
    (lab.root / "command.py").write_text(code)
    return lab.read_printed(RUN, "RUN")


def view(name: str) -> str:
    return f"{CARD} .nsi-view[data-view='{name}']"


def compute(lab, name: str, timeout: float = 60_000) -> None:
    lab.page.locator(f"{view(name)} .nsi-view-compute").click()
    lab.page.locator(f"{view(name)} .nsi-view-progress[data-state='done']").wait_for(timeout=timeout)


def test_dissection_concepts_picture_grid_column_and_suggested_label(lab):
    page = lab.page
    box = view("dissection")
    page.locator(box, has_text="not dissected yet").wait_for()
    compute(lab, "dissection")
    # the concept list with IoU bars and categories, and NetDissect's picture for the top images
    rows = page.locator(f"{box} .nsi-concepts .nsi-bar-row")
    rows.first.wait_for()
    s = py(lab, "d = idx.attachments['dissection']; a = d.arrays['conv1']\n"
                "order = np.argsort(-a['iou'][0], kind='stable')\n"
                "result = {'names': [d.meta['concepts'][k] for k in order], 'best_iou': float(a['best_iou'][0]),"
                " 'pictures': a['picture_images'][0].tolist(), 'best': a['best_concept'].tolist(),"
                " 'concepts': d.meta['concepts']}")
    assert rows.locator(".nsi-bar-name > span:first-child").all_inner_texts() == s["names"][:rows.count()]
    assert rows.first.locator(".nsi-cat").inner_text() == "colour" and s["names"][0] == "red"
    figures = page.locator(f"{box} .nsi-picture")
    assert figures.count() == len(s["pictures"]) == 3
    assert [int(f.get_attribute("data-image")) for f in figures.all()] == s["pictures"]
    page.wait_for_function("sel => [...document.querySelectorAll(sel)].every((i) => i.complete && i.naturalWidth > 0)",
                           arg=f"{box.replace(':visible', ':not(.lm-mod-hidden)')} .nsi-picture-img")
    assert page.locator(f"{box} .nsi-picture-map").count() == page.locator(f"{box} .nsi-picture-mask").count() == 3
    lab.screenshot("views-dissection", page.locator(CARD))

    # the grid: the best concept by name; filtered by it, sorted by the IoU (the cell shows IoU and name)
    page.select_option(f"{APP} .nsi-filter-key", "dissection.best_concept")
    page.select_option(f"{APP} .nsi-filter-name", label="red (colour)")
    page.click(f"{APP} .nsi-filter-add")
    page.locator(f"{APP} .nsi-chip", has_text="dissection.best concept = red").wait_for()
    st = py(lab)
    red = s["concepts"].index("red")
    assert st["filters"] == {"dissection.best_concept": [red, red]}
    assert sorted(st["order"]) == [u for u, k in enumerate(s["best"]) if k == red]
    page.click(f"{APP} .nsi-chip-x")
    page.select_option(f"{APP} .nsi-sort", "dissection.best_iou")
    page.locator(f"{GRID} .nsi-cell[data-pos='0'] .nsi-val", has_text="red").wait_for()
    assert page.locator(f"{GRID} .nsi-cell[data-unit='0'] .nsi-val").inner_text() == f"{s['best_iou']:.2f} red"

    # the suggested label in the editor; accepting it writes a normal annotation, its note says whence
    page.locator(f"{GRID} .nsi-cell[data-unit='0']").click()
    suggestion = page.locator(f"{CARD} .nsi-suggestion")
    suggestion.locator(".nsi-suggest-label", has_text="red").wait_for()
    suggestion.locator(".nsi-suggest-accept").click()
    page.locator(f"{CARD} .nsi-ann-status[data-kind='ok']", has_text="red").wait_for()
    note = f"suggested by Network Dissection: IoU {s['best_iou']:.2f} with 'red' (colour)"
    assert py(lab)["store"]["conv1/0"] == ["red", note]
    suggestion.wait_for(state="detached")   # the label is the suggestion now
    assert page.locator(f"{GRID} .nsi-cell[data-unit='0'] .nsi-label").inner_text() == "red"
    assert lab.unexpected_console_errors() == []


def test_synthesised_view_computes_while_the_explorer_answers(lab):
    page = lab.page
    s = py(lab, "ex.layer = 'conv3'\nex.unit = 2\nresult = state()")
    page.locator(f"{CARD}[data-layer='conv3'][data-unit='2']").wait_for()
    box = view("synthesis")
    page.locator(f"{box} .nsi-view-compute").click()
    page.locator(f"{box} .nsi-view-progress[data-state='running']", has_text="held by the test").wait_for()
    # meanwhile: another layer, its card and top images come from the kernel; a cell runs
    page.select_option(f"{APP} .nsi-layer", "conv2")
    page.locator(f"{CARD}[data-layer='conv2'] .nsi-view[data-view='top_images'] .nsi-mosaic .nsi-crop").first.wait_for()
    assert py(lab, "result = ex._runner.running(('synthesis', 'conv3', 2))") is True
    page.select_option(f"{APP} .nsi-layer", "conv3")
    page.locator(f"{GRID} .nsi-cell[data-unit='2']").click()
    page.locator(f"{CARD}[data-layer='conv3'][data-unit='2']").wait_for()
    page.locator(f"{box} .nsi-synth-img").wait_for(timeout=60_000)
    s = py(lab, "a = idx.attachments['synthesis'].arrays['conv3']\n"
                "rows = np.flatnonzero(a['facet_units'] == 2)\n"
                "result = {'facets': len(rows), 'ranks': [a['facet_member_ranks'][r, :a['facet_sizes'][r]].tolist() for r in rows],"
                " 'saved': 'synthesis' in idx.attachments}")
    assert page.locator(f"{box} .nsi-facet").count() == s["facets"] == 2
    assert page.locator(f"{box} .nsi-facet").first.locator(".nsi-facet-img").count() == 2   # mean, visualisation
    members = page.locator(f"{box} .nsi-member")
    assert members.count() == sum(len(r) for r in s["ranks"])
    # a member opens its top image: shown in the view, marked among the card's crops
    first = s["ranks"][0][0]
    members.first.click()
    page.locator(f"{box} .nsi-member-preview", has_text=f"rank {first + 1}").wait_for()
    if first < 8:
        page.locator(f"{view('top_images')} .nsi-tile-marked[data-rank='{first}']").wait_for()
    lab.screenshot("views-synthesised", page.locator(CARD))
    assert lab.unexpected_console_errors() == []


def test_projections_toggle_in_the_top_images(lab):
    page = lab.page
    compute(lab, "projections")
    tops = view("top_images")
    page.locator(f"{tops} .nsi-toggle").wait_for()
    mosaic = page.locator(f"{tops} .nsi-mosaic")
    assert mosaic.get_attribute("data-mode") == "crops"
    assert page.locator(f"{tops} .nsi-projection").count() == 4 and not page.locator(f"{tops} .nsi-projection").first.is_visible()
    page.click(f"{tops} .nsi-toggle-btn[data-mode='projections']")
    page.locator(f"{tops} .nsi-mosaic[data-mode='projections']").wait_for()
    assert page.locator(f"{tops} .nsi-projection").first.is_visible()
    assert not page.locator(f"{tops} .nsi-has-proj canvas:not(.nsi-projection)").first.is_visible()
    # the mean projection beside the Neuron Feature
    page.locator(f"{view('summary')} img.nsi-mean-projection").wait_for()
    lab.screenshot("views-projections", page.locator(CARD))
    page.click(f"{tops} .nsi-toggle-btn[data-mode='crops']")
    page.locator(f"{tops} .nsi-mosaic[data-mode='crops']").wait_for()
    assert lab.unexpected_console_errors() == []


def test_generated_view_shows_the_ppgn_samples(lab):
    page = lab.page
    py(lab, "ex.layer = 'conv3'\nex.unit = 2\nresult = state()")
    page.locator(f"{CARD}[data-layer='conv3'][data-unit='2']").wait_for()
    box = view("generated")
    page.locator(box, has_text="Not generated yet").wait_for()
    compute(lab, "generated")
    page.locator(f"{box} .nsi-generated-img").first.wait_for()
    s = py(lab, "a = idx.attachments['generated'].arrays['conv3']\n"
                "result = {'units': a['units'].tolist(), 'values': a['values'][0].tolist(), 'top1': float(idx['conv3'].top_activations[2, 0])}")
    assert s["units"] == [2]
    assert page.locator(f"{box} .nsi-generated-img").count() == 3
    captions = page.locator(f"{box} .nsi-generated figcaption").all_inner_texts()
    assert len(captions) == 3 and all(c.startswith("a = ") for c in captions)
    # the canvases were drawn from the strip (not blank)
    page.wait_for_function("sel => [...document.querySelectorAll(sel)].every((c) => { const d = c.getContext('2d')"
                           ".getImageData(0, 0, c.width, c.height).data; return d.some((v, i) => i % 4 !== 3 && v > 0); })",
                           arg=f"{box.replace(':visible', ':not(.lm-mod-hidden)')} .nsi-generated-img")
    lab.screenshot("views-generated", page.locator(CARD))
    assert lab.unexpected_console_errors() == []


def test_concept_vectors_link_a_units_concepts_and_a_concepts_units(lab):
    page = lab.page
    s = py(lab, "order = np.argsort(-weights[:, 2], kind='stable')\nresult = {'units': order.tolist()}")
    weights = page.locator(f"{view('concept_vectors:net2vec')} .nsi-concept-link")
    assert weights.count() == 4
    # a concept of the unit opens the tab with that concept's units, largest weight first
    weights.filter(has_text=XSS_CONCEPT).click()
    tab = f"{APP} .nsi-tab-panel[data-tab='concept_units:net2vec']"
    page.locator(f"{tab} .nsi-unit-link").first.wait_for()
    units = [int(e.get_attribute("data-unit")) for e in page.locator(f"{tab} .nsi-unit-link").all()]
    assert units == s["units"]
    assert page.locator(f"{tab} .nsi-concept-select").input_value() == "2"
    page.locator(f"{tab} .nsi-unit-link[data-unit='{units[0]}']").click()
    page.locator(f"{CARD}[data-unit='{units[0]}']").wait_for()
    assert py(lab)["unit"] == units[0]
    page.wait_for_timeout(200)
    assert page.locator(".nsi-root b").count() == 0 and lab.dialogs == []   # the concept's name stayed text
    assert lab.unexpected_console_errors() == []


def test_exported_page_shows_every_cached_result(lab, lab_session):
    py(lab, "ex.clear_filters()\nex.layer = 'conv1'\nex.unit = 0\nexport_html(ex, 'views.html')\nresult = 1")
    static = lab_session("views-export", viewport=(1400, 1400))
    page = static.page
    page.goto((lab.root / "views.html").as_uri())
    card = ".nsi-page .nsi-card"
    page.locator(f"{card}[data-layer='conv1'][data-unit='0']").wait_for(timeout=20_000)
    dissection = f"{card} .nsi-view[data-view='dissection']"
    assert page.locator(f"{dissection} .nsi-picture").count() == 3
    assert page.locator(f"{card} .nsi-view-compute").count() == 0
    assert page.locator(f"{card} .nsi-suggestion").count() == 0          # accepted in the lab: "red" is the label
    page.select_option(".nsi-page .nsi-layer", "conv3")
    page.locator(f".nsi-page .nsi-grid-widget .nsi-cell[data-unit='2']").click()
    page.locator(f"{card}[data-layer='conv3'][data-unit='2'] .nsi-synth-img").wait_for()
    assert page.locator(f"{card} .nsi-facet").count() == 2
    page.click(f"{card} .nsi-toggle-btn[data-mode='projections']")
    page.locator(f"{card} .nsi-mosaic[data-mode='projections'] .nsi-projection").first.wait_for()
    page.locator(f"{card} img.nsi-mean-projection").wait_for()
    assert page.locator(f"{card} .nsi-view[data-view='generated'] .nsi-generated-img").count() == 3
    assert page.locator(f"{card} .nsi-view[data-view='concept_vectors:net2vec'] .nsi-concept-link").count() == 4
    static.screenshot("views-export")
    assert static.unexpected_console_errors() == []
