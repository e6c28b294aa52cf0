"""Acceptance: the Explorer in a real JupyterLab in headless Chromium, and its exported page.

One notebook page serves every JupyterLab test of this module (a page load costs ~20 s); the
tests run in file order and each leaves the Explorer in a state the next can start from. The
kernel's side is read back (and set) by running one cell that executes a snippet written by the
test and prints ``result`` as JSON (:func:`py`). Nothing here assumes the embedded default's
classes or unit counts: they are read from the index.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=alert(1)>"
LAYERS = ["conv1", "conv3", "conv5"]

INDEX_CELL = (
    # The embedded default (600 of its images, luminance grey: keeps the kernel work to seconds).
    "import nsi_widgets as nsi\n"
    "model, data = nsi.zoo.load('shapes', n=600)\n"
    f"idx = nsi.index_neurons(model, data, layers={LAYERS!r}, top_n=50, gray='luminance', progress=False)"
)
SETUP_CELL = """\
import json, math
import numpy as np
from nsi_widgets.index.results import Attachment
from nsi_widgets.widgets import views, export_html

# a test-only card view and its computation (a real method's view comes with that method)
def _doubled_payload(attachment, layer, unit):
    values = attachment.arrays.get(layer, {}).get("doubled")
    if values is None or not np.isfinite(values[unit]):
        return {"missing": True}
    return views.Panel(text=f"doubled colour index of unit {unit}", rows=[["doubled", float(values[unit])]]).to_payload()

def _double(request):
    L = request.index[request.layer]
    for step in range(5):
        request.progress(step / 5, f"step {step + 1} of 5")
    values = np.full(L.n_units, np.nan, np.float32)
    values[request.unit] = 2 * L.scores["color_selectivity"][request.unit]
    return Attachment("test_doubling", arrays={request.layer: {"doubled": values}}, columns={request.layer: ["doubled"]})

views.register_card_view(views.CardView("doubling", "doubled", _doubled_payload, kind="test_doubling",
                                        renderer="panel", compute_label="Double it"), replace=True)
store = nsi.AnnotationStore("annotations.sqlite", index=idx, author="ana")
ex = nsi.Explorer(idx, annotations=store, compute={"doubling": _double})

def state():
    L = idx[ex.layer]
    return {"layers": list(idx.layers), "layer": ex.layer, "unit": ex.unit, "selection": ex.selection,
            "order": ex.order, "sort_by": ex.sort_by, "descending": ex.descending, "filters": ex.filters,
            "unlabelled_only": ex.unlabelled_only, "author": ex.author, "n_units": L.n_units,
            "score_names": ex.score_names,
            "color": [None if math.isnan(v) else float(v) for v in L.scores["color_selectivity"]],
            "store": {f"{k[0]}/{k[1]}/{k[2]}": [a.label, a.note, list(a.tags)] for k, a in store.all(author="*").items()}}
ex"""
RUN_CELL = """\
_runs = globals().get("_runs", 0) + 1
result = None
exec(open("command.py").read())
print(f"RUN#{_runs} " + json.dumps(result))"""
CELLS = [INDEX_CELL, SETUP_CELL, RUN_CELL]
SETUP, RUN = 1, 2

APP = ".jp-NotebookPanel:visible .nsi-app"
GRID = f"{APP} .nsi-grid-widget"
CARD = f"{APP} .nsi-card"
# the same in plain CSS, for querySelector in the page
JS_APP = ".jp-NotebookPanel:not(.lm-mod-hidden) .nsi-app"
JS_GRID = f"{JS_APP} .nsi-grid-widget"
JS_CARD = f"{JS_APP} .nsi-card"
LAYOUT = """() => {
  const box = (e) => { if (!e) return null; const b = e.getBoundingClientRect();
    return {left: b.left, top: b.top, right: b.right, bottom: b.bottom, width: b.width, height: b.height}; };
  const app = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .nsi-app');
  const panel = app.closest('.jp-WindowedPanel-outer');
  const card = app.querySelector('.nsi-card');
  const clipped = [...card.querySelectorAll('table, .nsi-num-cell, .nsi-card-title, .nsi-ann, .nsi-bar-row')]
    .filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.className);
  return {viewport: {width: innerWidth, height: innerHeight}, layout: app.dataset.layout,
    pageScrollWidth: document.documentElement.scrollWidth, panelScrollWidth: panel.scrollWidth,
    panelClientWidth: panel.clientWidth, panel: box(panel), output: box(app.closest('.jp-OutputArea-output')),
    app: box(app), appScrollWidth: app.scrollWidth, appClientWidth: app.clientWidth, card: box(card),
    chart: box(card.querySelector('.nsi-class-chart')), clipped};
}"""


@pytest.fixture(scope="module")
def lab(lab_session):
    lab = lab_session("explorer", viewport=(1400, 900))
    lab.write_notebook("explorer.ipynb", CELLS)
    lab.open_notebook("explorer.ipynb")
    lab.lap("lab loaded, kernel idle")
    lab.run_cell(0)
    lab.run_cell(SETUP)
    lab.page.locator(f"{GRID}[data-ready='1'] .nsi-cell").first.wait_for(timeout=120_000)
    lab.lap("explorer rendered")
    yield lab
    print("console errors:", lab.unexpected_console_errors(), "dialogs:", lab.dialogs)


def fmt4(value: float) -> str:
    """A number as the card shows it (js/src/util.js fmt with 4 digits)."""
    a = abs(value)
    return f"{value:.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.3f}"


def py(lab, code: str = "result = state()"):
    """Run ``code`` in the kernel (it sets ``result``) and return ``result``."""
    (lab.root / "command.py").write_text(code)
    cells = lab.page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell .jp-InputArea-editor").all_text_contents()
    assert sum("command.py" in text for text in cells) == 1 and len(cells) == len(CELLS), cells  # keys went astray?
    return lab.read_printed(RUN, "RUN")


def dom_order(lab) -> list[int]:
    return lab.page.eval_on_selector(GRID, "el => el.__nsi.order")


def card_unit(lab) -> tuple[str, int]:
    card = lab.page.locator(CARD)
    return card.get_attribute("data-layer"), int(card.get_attribute("data-unit"))


def wait_card(lab, unit: int, layer: str | None = None) -> None:
    sel = f"{CARD}[data-unit='{unit}']" + (f"[data-layer='{layer}']" if layer else "")
    lab.page.locator(sel).wait_for()


def wait_order(lab, predicate_js: str) -> list[int]:
    lab.page.wait_for_function(f"() => {{ const o = document.querySelector({JS_GRID!r}).__nsi.order; return {predicate_js}; }}")
    return dom_order(lab)


def visible_units(lab) -> list[int]:
    pairs = lab.page.eval_on_selector_all(
        f"{GRID} .nsi-cell", "els => els.filter(e => e.style.display !== 'none')"
                             ".map(e => [Number(e.dataset.pos), Number(e.dataset.unit)])")
    return [unit for _, unit in sorted(pairs)]


def drag(lab, selector: str, start: float, end: float) -> None:
    """Drag across an element from ``start`` to ``end`` (fractions of its width), at mid height."""
    target = lab.page.locator(selector)
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    y = box["y"] + box["height"] * 0.5
    x0, x1 = box["x"] + box["width"] * start, box["x"] + box["width"] * end
    lab.page.mouse.move(x0, y)
    lab.page.mouse.down()
    for k in range(1, 7):
        lab.page.mouse.move(x0 + (x1 - x0) * k / 6, y)
    lab.page.mouse.up()


def check_layout(lab, name: str) -> dict:
    """No sideways scroll; the Explorer inside the notebook column; the card (and its class chart)
    fully visible once scrolled to, nothing in it cut."""
    page = lab.page
    page.eval_on_selector(CARD, "el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(200)
    m = page.evaluate(LAYOUT)
    lab.screenshot(f"layout-{name}")
    vw = m["viewport"]["width"]
    assert m["pageScrollWidth"] <= vw and m["panelScrollWidth"] <= m["panelClientWidth"], m
    assert m["appScrollWidth"] <= m["appClientWidth"], m
    assert m["output"]["left"] - 1 <= m["app"]["left"] and m["app"]["right"] <= m["output"]["right"] + 1, m
    panel, card, chart = m["panel"], m["card"], m["chart"]
    assert panel["left"] <= card["left"] and card["right"] <= panel["right"] and card["right"] <= vw, m
    assert panel["top"] - 1 <= card["top"] and card["bottom"] <= panel["bottom"] + 1, m  # the whole card in view
    assert card["top"] <= chart["top"] and chart["bottom"] <= card["bottom"] and chart["right"] <= card["right"], m
    assert m["clipped"] == [], m
    return m


def test_explorer_renders_matches_python_and_fits(lab):
    page = lab.page
    s = py(lab)
    order = dom_order(lab)
    assert order == s["order"] and len(order) == s["n_units"]
    shown = visible_units(lab)
    assert shown and shown == s["order"][:len(shown)]
    assert s["sort_by"] == "color_selectivity" and s["descending"]
    assert card_unit(lab) == (s["layer"], s["order"][0]) and s["unit"] == s["order"][0]
    # every view: both histograms (one series per layer in the first), the class chart, the editor
    assert page.locator(f"{APP} .nsi-chart-all .nsi-legend-item").count() == len(s["layers"])
    assert page.locator(f"{APP} .nsi-chart-layer .nsi-hist-bar").count() > 0
    assert page.locator(f"{CARD} .nsi-class-chart .nsi-bar-row").count() > 0
    assert page.locator(f"{APP} .nsi-count").inner_text().startswith(f"{s['n_units']} of {s['n_units']} units")
    # the mini bars under each thumbnail have a legend
    assert page.locator(f"{APP} .nsi-bar-legend .nsi-legend-item").count() >= 2
    # the class-selectivity axis fits the data: its ticks lie within the layer's values
    ticks = [float(t) for t in page.locator(f"{APP} .nsi-chart-layer .nsi-tick").all_text_contents() if "%" not in t]
    assert len(ticks) >= 2 and len({t for t in ticks}) == len(ticks)  # no tick label repeats ("0.9 0.9 0.9")
    # layout at 1400 x 900 with the file browser open, then at 1000 x 700
    m = check_layout(lab, "1400x900")
    assert m["layout"] == "narrow"  # the notebook column is under 1100 px: stacked
    page.set_viewport_size({"width": 1000, "height": 700})
    page.wait_for_timeout(500)
    check_layout(lab, "1000x700")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.wait_for_timeout(300)
    assert lab.unexpected_console_errors() == []


def test_linking_transitions_both_ways(lab):
    page = lab.page
    s = py(lab)
    layer = s["layer"]
    order = dom_order(lab)
    # grid click -> card, class chart, histogram marker; Python mirrors unit and selection
    unit = order[3]
    page.locator(f"{GRID} .nsi-cell[data-pos='3']").click()
    wait_card(lab, unit, layer)
    assert page.locator(f"{CARD} .nsi-class-chart").get_attribute("data-unit") == str(unit)
    assert f"unit {unit}:" in page.locator(f"{APP} .nsi-chart-all .nsi-hist-marker title").text_content()
    s = py(lab)
    assert (s["unit"], s["selection"]) == (unit, [unit])
    # the card's arrows step through the grid's order (not unit ids)
    page.locator(f"{CARD} .nsi-next").click()
    wait_card(lab, order[4])
    page.locator(f"{CARD} .nsi-prev").click()
    page.locator(f"{CARD} .nsi-prev").click()
    wait_card(lab, order[2])
    assert page.locator(f"{GRID} .nsi-cell.nsi-active").get_attribute("data-unit") == str(order[2])
    # shift-click extends the selection over the display order
    page.locator(f"{GRID} .nsi-cell[data-pos='5']").click(modifiers=["Shift"])
    page.locator(f"{GRID} .nsi-cell.nsi-selected").nth(3).wait_for()
    s = py(lab)
    assert s["selection"] == order[2:6] and s["unit"] == order[5]

    # a drag across the colour histogram filters the grid (a chip), and hides units: the card follows
    drag(lab, f"{APP} .nsi-chart-all svg", 0.55, 0.97)
    page.locator(f"{APP} .nsi-chip[data-key='color_selectivity']").wait_for()
    s = py(lab)
    lo, hi = s["filters"]["color_selectivity"]
    after = dom_order(lab)
    assert after == s["order"] and after and all(lo <= s["color"][u] <= hi for u in after)
    assert s["unit"] in after and card_unit(lab) == (layer, s["unit"])
    assert set(s["selection"]) <= set(after)
    assert page.locator(f"{APP} .nsi-chart-all .nsi-hist-sel").get_attribute("visibility") == "visible"
    assert page.locator(f"{APP} .nsi-count").inner_text().startswith(f"{len(after)} of {s['n_units']}")
    # removing the chip clears the histogram's band, the filter in Python, and nothing comes back
    page.locator(f"{APP} .nsi-chip[data-key='color_selectivity'] .nsi-chip-x").click()
    page.locator(f"{APP} .nsi-chip").wait_for(state="detached")
    assert page.locator(f"{APP} .nsi-chart-all .nsi-hist-sel").get_attribute("visibility") == "hidden"
    s = py(lab)
    assert s["filters"] == {} and len(dom_order(lab)) == s["n_units"]

    # a bar of another layer: switches the layer and filters by that bar's bin
    other = next(name for name in s["layers"] if name != layer)
    bars = page.locator(f"{APP} .nsi-chart-all rect.nsi-hist-bar[data-layer='{other}']")
    heights = [float(bars.nth(i).get_attribute("height")) for i in range(bars.count())]
    tallest = max(range(len(heights)), key=heights.__getitem__)
    bars.nth(tallest).click(force=True)
    page.locator(f"{CARD}[data-layer='{other}']").wait_for()
    page.locator(f"{GRID}[data-ready='1']").wait_for()
    s = py(lab)
    lo, hi = s["filters"]["color_selectivity"]
    assert s["layer"] == other and page.locator(f"{APP} .nsi-layer").input_value() == other
    assert s["order"] == dom_order(lab) and s["order"] and all(lo <= s["color"][u] <= hi for u in s["order"])
    assert s["unit"] == s["order"][0] and card_unit(lab) == (other, s["order"][0]) and s["selection"] == []
    # the one layer control: switching back keeps the filter (its band drawn), shows the first unit
    page.select_option(f"{APP} .nsi-layer", layer)
    page.locator(f"{CARD}[data-layer='{layer}']").wait_for()
    s = py(lab)
    assert s["layer"] == layer and s["unit"] == s["order"][0] == dom_order(lab)[0] and s["selection"] == []
    assert page.locator(f"{APP} .nsi-chart-all .nsi-hist-sel").get_attribute("visibility") == "visible"

    # the class histogram filters the layer shown by the class index
    drag(lab, f"{APP} .nsi-chart-layer svg", 0.3, 0.99)
    page.locator(f"{APP} .nsi-chip[data-key='class_selectivity']").wait_for()
    s = py(lab)
    assert set(s["filters"]) == {"color_selectivity", "class_selectivity"} and s["order"] == dom_order(lab)

    # Python sets the state: every view follows (layer, filters, sort, unit)
    s = py(lab, f"ex.layer = {other!r}\nex.clear_filters()\nex.sort_by = 'class_selectivity'\n"
                "ex.unit = ex.order[2]\nresult = state()")
    wait_card(lab, s["unit"], other)
    page.locator(f"{APP} .nsi-chip").wait_for(state="detached")
    assert dom_order(lab) == s["order"] and page.locator(f"{APP} .nsi-sort").input_value() == "class_selectivity"
    assert page.locator(f"{GRID} .nsi-cell.nsi-active").get_attribute("data-unit") == str(s["unit"])
    # sort in the browser: Python's order is the browser's
    page.select_option(f"{APP} .nsi-sort", "unit")
    page.click(f"{APP} .nsi-dir")
    after = wait_order(lab, "o.every((u, i) => i === 0 || o[i - 1] < u)")
    s = py(lab)
    assert (s["sort_by"], s["descending"], s["order"]) == ("unit", False, after)
    assert lab.unexpected_console_errors() == []


def test_keyboard_annotation_flow_guard_undo_and_reload(lab):
    page = lab.page
    s = py(lab, "ex.layer = 'conv3'\nex.clear_filters()\nex.sort_by = 'color_selectivity'\nex.descending = True\n"
                "result = state()")
    order = s["order"]
    wait_card(lab, s["unit"], "conv3")
    page.locator(f"{GRID} .nsi-cell[data-pos='0']").click()
    wait_card(lab, order[0], "conv3")
    # label 10 neurons with keys only: L, type, Enter (saves and shows the next unit in grid order)
    page.keyboard.press("l")
    for k in range(10):
        assert page.evaluate("() => document.activeElement.classList.contains('nsi-ann-label')")
        page.keyboard.type(f"blob {k}")
        page.keyboard.press("Enter")
        wait_card(lab, order[k + 1], "conv3")
    page.locator(f"{CARD} .nsi-ann-status[data-kind='ok']", has_text=f"unit {order[9]}").wait_for()
    s = py(lab)
    labels = {int(key.split("/")[1]): v[0] for key, v in s["store"].items() if key.startswith("conv3/")}
    assert labels == {order[k]: f"blob {k}" for k in range(10)}
    assert page.locator(f"{APP} .nsi-progress-text").inner_text() == f"10 of {s['n_units']} labelled"
    page.locator(f"{GRID} .nsi-cell[data-unit='{order[3]}'] .nsi-label", has_text="blob 3").wait_for()
    # Page Down moves without saving; Esc leaves the box (back to the grid)
    page.locator(f"{CARD} .nsi-ann-label").click()  # the kernel read above took the focus
    page.keyboard.type("not saved")
    page.keyboard.press("PageUp")  # unsaved text: the guard asks first
    guard = page.locator(f"{CARD} .nsi-guard")
    guard.wait_for()
    assert card_unit(lab) == ("conv3", order[10])
    page.locator(f"{CARD} .nsi-guard-discard").click()
    wait_card(lab, order[9])
    page.keyboard.press("PageDown")
    wait_card(lab, order[10])
    page.keyboard.press("Escape")
    assert page.evaluate("() => document.activeElement.classList.contains('nsi-scroll')")
    # the unsaved-change guard holds every way of moving: a grid click, and Python setting the unit
    page.keyboard.press("l")
    page.keyboard.type("half typed")
    page.locator(f"{GRID} .nsi-cell[data-pos='12']").click()
    guard.wait_for()
    assert card_unit(lab) == ("conv3", order[10])
    page.locator(f"{CARD} .nsi-guard-keep").click()
    assert page.locator(f"{CARD} .nsi-ann-label").input_value() == "half typed"
    s = py(lab, f"ex.unit = {order[20]}\nresult = state()")
    guard.wait_for()
    page.locator(f"{CARD} .nsi-guard-keep").click()
    page.wait_for_function(f"() => document.querySelector({JS_CARD!r}).dataset.unit === '{order[10]}'")
    assert py(lab)["unit"] == order[10]  # kept editing: Python follows the browser back
    page.locator(f"{GRID} .nsi-cell[data-pos='12']").click()
    page.locator(f"{CARD} .nsi-guard-save").click()  # save and go
    wait_card(lab, order[12])
    page.locator(f"{CARD} .nsi-ann-status[data-kind='ok']", has_text="half typed").wait_for()
    # undo and redo in the card, with the neuron's history
    page.locator(f"{GRID} .nsi-cell[data-pos='10']").click()
    wait_card(lab, order[10])
    page.locator(f"{CARD} .nsi-ann-undo:not([disabled])").wait_for()
    page.locator(f"{CARD} .nsi-history summary").click()
    assert "half typed" in page.locator(f"{CARD} .nsi-history-list").inner_text()
    page.locator(f"{CARD} .nsi-ann-undo").click()
    page.locator(f"{CARD} .nsi-ann-status", has_text="undone").wait_for()
    assert f"conv3/{order[10]}/ana" not in py(lab)["store"]
    page.locator(f"{CARD} .nsi-ann-redo:not([disabled])").click()
    page.locator(f"{CARD} .nsi-ann-status", has_text="redone").wait_for()
    assert py(lab)["store"][f"conv3/{order[10]}/ana"][0] == "half typed"
    # HTML typed as a label stays text, in the card and in the grid
    page.locator(f"{CARD} .nsi-ann-label").fill(XSS)
    page.locator(f"{CARD} .nsi-ann-note").fill("<script>alert(2)</script><b>bold</b>")
    page.locator(f"{CARD} .nsi-ann-save").click()
    page.locator(f"{CARD} .nsi-ann-label-text", has_text=XSS).wait_for()
    page.locator(f"{GRID} .nsi-cell[data-unit='{order[10]}'] .nsi-label", has_text=XSS).wait_for()
    page.wait_for_timeout(300)
    assert page.locator(".nsi-root img[src='x'], .nsi-root script, .nsi-root b").count() == 0 and lab.dialogs == []
    # "unlabelled only" and the progress
    page.locator(f"{APP} .nsi-unlabelled").check()
    s = py(lab)
    assert s["unlabelled_only"] and not set(labels) & set(s["order"]) and s["order"] == dom_order(lab)
    page.locator(f"{APP} .nsi-unlabelled").uncheck()
    # reload the page: the labels are there (the kernel still runs the Explorer)
    page.keyboard.press("Escape")
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_timeout(500)
    page.reload()
    page.locator(f"{GRID}[data-ready='1'] .nsi-cell").first.wait_for(timeout=60_000)
    page.locator(f"{GRID} .nsi-cell[data-unit='{order[3]}'] .nsi-label", has_text="blob 3").wait_for()
    assert page.locator(f"{APP} .nsi-progress-text").inner_text() == f"11 of {s['n_units']} labelled"
    assert lab.unexpected_console_errors() == []


def test_agreement_tab_compares_authors(lab):
    page = lab.page
    s = py(lab)
    order = s["order"]
    mine = {int(k.split("/")[1]): v[0] for k, v in s["store"].items() if k.startswith("conv3/") and k.endswith("/ana")}
    # a second author, chosen in the card, labels three of ana's neurons: two the same, one not
    author = page.locator(f"{CARD} .nsi-ann-author")
    author.fill("ben")
    author.press("Enter")
    page.wait_for_function(f"() => document.querySelector({JS_APP!r} + ' .nsi-progress-text').textContent.startsWith('0 of')")
    units = [u for u in order if u in mine][:3]
    for k, unit in enumerate(units):
        page.locator(f"{GRID} .nsi-cell[data-unit='{unit}']").click()
        wait_card(lab, unit)
        page.keyboard.press("l")
        page.keyboard.type(mine[unit].upper() if k < 2 else "something else")
        page.keyboard.press("Escape")
        page.locator(f"{CARD} .nsi-ann-save").click()
        page.locator(f"{CARD} .nsi-ann-status[data-kind='ok']", has_text=f"unit {unit}").wait_for()
    s = py(lab, "result = {'author': ex.author, 'agreement': ex.agreement['conv3']}")
    assert s["author"] == "ben"
    page.locator(f"{APP} .nsi-tab[data-tab='agreement']").click()
    table = page.locator(f"{APP} .nsi-agree-table")
    table.wait_for()
    assert page.locator(f"{APP} .nsi-agree-table th").all_inner_texts()[1:3] == ["ana", "ben"]
    assert page.locator(f"{APP} .nsi-agree-row.nsi-disagree").count() == s["agreement"]["n_disagree"] >= 1
    row = page.locator(f"{APP} .nsi-agree-row[data-unit='{units[2]}']")
    assert "nsi-disagree" in row.get_attribute("class") and "something else" in row.inner_text()
    kappa = s["agreement"]["kappa"]
    assert kappa["kind"] == "cohen" and kappa["n_items"] == 3
    assert page.locator(f"{APP} .nsi-agree-kappa").inner_text().startswith("Cohen's κ = ")
    # a row shows its neuron
    page.locator(f"{APP} .nsi-agree-row[data-unit='{units[1]}']").click()
    page.locator(f"{APP} .nsi-tab[data-tab='neuron']").click()
    wait_card(lab, units[1])
    author.fill("ana")
    author.press("Enter")
    page.wait_for_function(f"() => !document.querySelector({JS_APP!r} + ' .nsi-progress-text').textContent.startsWith('0 of')")
    lab.screenshot("agreement")
    assert lab.unexpected_console_errors() == []


def test_card_view_computes_on_demand(lab):
    page = lab.page
    s = py(lab)
    unit = s["unit"]
    tab = page.locator(f"{APP} .nsi-tab[data-tab='doubling']")
    tab.click()
    panel = page.locator(f"{APP} .nsi-tab-panel[data-tab='doubling']")
    panel.locator(".nsi-muted", has_text="not computed yet").wait_for()
    panel.locator(".nsi-view-compute").click()
    panel.locator(".nsi-view-progress[data-state='done']").wait_for(timeout=30_000)
    panel.locator(".nsi-panel-rows", has_text="doubled").wait_for()
    s = py(lab, "result = {'attached': sorted(idx.attachments), 'names': ex.score_names, "
                f"'value': float(idx.attachments['doubling'].arrays[ex.layer]['doubled'][{unit}])}}")
    assert s["attached"] == ["doubling"] and "doubling.doubled" in s["names"]
    assert fmt4(s["value"]) in panel.locator(".nsi-panel-rows").inner_text()
    # the result's column joins the sort and filter choices
    page.locator(f"{APP} .nsi-sort option[value='doubling.doubled']").wait_for(state="attached")
    page.locator(f"{APP} .nsi-tab[data-tab='neuron']").click()
    assert lab.unexpected_console_errors() == []


def test_exported_page_behaves_like_the_live_one(lab, lab_session):
    page = lab.page
    s = py(lab, "ex.clear_filters()\nex.sort_by = 'color_selectivity'\nex.descending = True\n"
                "export_html(ex, 'explorer.html')\n"
                "from nsi_widgets.cli import main as nsi_cli\nidx.save('explorer-index.npz')\n"
                "assert nsi_cli(['report', 'explorer-index.npz', '-o', 'report.html', '--annotations', "
                "'annotations.sqlite', '--author', 'ana']) == 0\nresult = state()")
    wait_order(lab, "o.length === %d" % s["n_units"])
    static = lab_session("export", viewport=(1400, 1000))
    spage = static.page
    requests = []
    spage.on("request", lambda r: requests.append(r.url))
    spage.goto((lab.root / "explorer.html").as_uri())
    sgrid = ".nsi-page .nsi-grid-widget"
    spage.locator(f"{sgrid}[data-ready='1'] .nsi-cell").first.wait_for(timeout=20_000)
    # no network: only the page itself and blob:/data: URLs (the inlined bundle and images)
    assert all(url.startswith(("file:", "blob:", "data:")) for url in requests), requests
    other = next(name for name in s["layers"] if name != s["layer"])

    def same_clicks(p, app: str) -> dict:
        p.select_option(f"{app} .nsi-sort", "class_selectivity")
        p.eval_on_selector(f"{app} .nsi-scroll", "e => { e.scrollTop = 0; }")
        p.locator(f"{app} .nsi-grid-widget .nsi-cell[data-pos='4']").click()
        p.wait_for_timeout(200)
        p.locator(f"{app} .nsi-card .nsi-next").click()
        p.wait_for_timeout(200)
        first = {"card": p.locator(f"{app} .nsi-card").get_attribute("data-unit"),
                 "order": p.eval_on_selector(f"{app} .nsi-grid-widget", "e => e.__nsi.order")}
        bars = p.locator(f"{app} .nsi-chart-all rect.nsi-hist-bar[data-layer='{other}']")
        heights = [float(bars.nth(i).get_attribute("height")) for i in range(bars.count())]
        bars.nth(max(range(len(heights)), key=heights.__getitem__)).click(force=True)
        p.locator(f"{app} .nsi-card[data-layer='{other}']").wait_for()
        p.locator(f"{app} .nsi-card .nsi-crop").first.wait_for()
        return {**first, "layer": p.locator(f"{app} .nsi-layer").input_value(),
                "card2": p.locator(f"{app} .nsi-card").get_attribute("data-unit"),
                "order2": p.eval_on_selector(f"{app} .nsi-grid-widget", "e => e.__nsi.order"),
                "chips": p.locator(f"{app} .nsi-chip").all_inner_texts(),
                "crops": p.locator(f"{app} .nsi-card .nsi-crop").count() > 0}

    live = same_clicks(page, APP)
    exported = same_clicks(spage, ".nsi-page")
    assert exported == live and live["order2"] and live["crops"]
    # the labels typed in the lab are there, searchable, as text; editing is off
    spage.select_option(".nsi-page .nsi-layer", "conv3")
    while spage.locator(".nsi-page .nsi-chip-x").count():
        spage.locator(".nsi-page .nsi-chip-x").first.click()
    spage.fill(".nsi-page .nsi-search", "onerror")
    spage.wait_for_function(f"() => document.querySelector({sgrid!r}).__nsi.order.length === 1")
    assert spage.locator(f"{sgrid} .nsi-cell .nsi-label").first.text_content() == XSS
    assert spage.locator(".nsi-page .nsi-ann-save").is_disabled()
    assert "read-only" in spage.locator(".nsi-page .nsi-ann-status").inner_text()
    assert spage.locator(".nsi-page .nsi-view-compute").count() == 0
    spage.wait_for_timeout(300)
    assert spage.locator("img[src='x'], .nsi-root b").count() == 0 and static.dialogs == []
    static.screenshot("export")
    # the command line's report is the same page
    spage.goto((lab.root / "report.html").as_uri())
    spage.locator(f"{sgrid}[data-ready='1'] .nsi-cell").first.wait_for(timeout=20_000)
    assert static.unexpected_console_errors() == []
    assert lab.unexpected_console_errors() == []


def test_docs_screenshot(lab):
    """docs/images/explorer.png (written there when NSI_UPDATE_DOCS_IMAGES is set)."""
    page = lab.page
    page.set_viewport_size({"width": 1600, "height": 1150})
    page.evaluate("() => { const app = window.jupyterapp; if (!app.shell.leftCollapsed) app.commands.execute('application:toggle-left-area'); }")
    # conv5, most class-selective first, its first units named after their top images' majority class
    s = py(lab, "ex.layer = 'conv5'\nex.clear_filters()\nex.sort_by = 'class_selectivity'\nex.descending = True\n"
                "L5 = idx['conv5']\n"
                "for u in ex.order[:6]:\n"
                "    labels = L5.top_labels[u][L5.top_labels[u] >= 0]\n"
                "    ex.annotate(idx.class_names[int(np.bincount(labels).argmax())] + ' detector', unit=u)\n"
                "ex.unit = ex.order[0]\nresult = state()")
    wait_card(lab, s["unit"], "conv5")
    page.wait_for_function(f"() => document.querySelector({JS_APP!r}).dataset.layout === 'wide'")
    page.locator(f"{CARD} .nsi-crop").first.wait_for()
    page.eval_on_selector(APP, "el => el.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    path = lab.screenshot("explorer", page.locator(APP))
    if os.environ.get("NSI_UPDATE_DOCS_IMAGES"):
        shutil.copy(path, REPO / "docs" / "images" / "explorer.png")
    page.evaluate("() => { const app = window.jupyterapp; if (app.shell.leftCollapsed) app.commands.execute('application:toggle-left-area'); }")
    page.set_viewport_size({"width": 1400, "height": 900})


def test_dead_kernel_is_detected(lab):
    """Restart the kernel under the Explorer: Save says so within 2 s, is disabled, nothing hangs."""
    page = lab.page
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
    lab.wait_kernel_idle()
    page.locator(f"{GRID} .nsi-cell[data-pos='1']").click()
    page.keyboard.press("l")
    page.keyboard.type("after the restart")
    start = page.evaluate("() => performance.now()")
    page.locator(f"{CARD} .nsi-ann-save").click(force=True)
    page.locator(f"{CARD} .nsi-ann-kernel", has_text="kernel").wait_for(timeout=2_000)
    waited = page.evaluate("() => performance.now()") - start
    assert waited < 2000
    assert page.locator(f"{CARD} .nsi-ann-save").is_disabled()
    assert page.locator(f"{CARD} .nsi-ann-label").input_value() == "after the restart"  # the text is kept
    # the views keep working without the kernel
    page.locator(f"{GRID} .nsi-cell[data-pos='0']").click()
    page.locator(f"{CARD} .nsi-guard").wait_for()
    page.locator(f"{CARD} .nsi-guard-discard").click()
    page.locator(f"{CARD}[data-unit]").wait_for()
    page.wait_for_timeout(500)
    lab.screenshot("dead-kernel", page.locator(CARD))
    assert lab.unexpected_console_errors() == []
