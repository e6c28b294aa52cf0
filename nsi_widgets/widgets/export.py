"""Static export: one self-contained HTML file that shows an index offline, without a kernel."""
from __future__ import annotations

import base64
import html
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

from . import _data
from ._model import CSS, ESM
from .card import card_payload
from .charts import PALETTE, chart_payload
from ..core.storage import default_file_mode

#: sequences that would end or confuse an inline <script> element
_UNSAFE_IN_SCRIPT = re.compile(r"</script|<!--|<script", re.IGNORECASE)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="nsi-widgets">
<title>{title}</title>
<style>{css}</style>
</head>
<body class="nsi-export-body">
<div id="nsi-app"><noscript>This page needs JavaScript to show the neuron explorer.</noscript></div>
<script type="application/json" id="nsi-state">{state}</script>
<script type="text/plain" id="nsi-bundle" data-encoding="{encoding}">{bundle}</script>
<script type="module">
// The widget bundle is an ES module; import it from a blob so the page needs no other file.
const node = document.getElementById("nsi-bundle");
let source = node.textContent;
if (node.dataset.encoding === "base64") {{
  source = new TextDecoder().decode(Uint8Array.from(atob(source), (c) => c.charCodeAt(0)));
}}
const url = URL.createObjectURL(new Blob([source], {{ type: "text/javascript" }}));
const bundle = await import(url);
URL.revokeObjectURL(url);
const state = JSON.parse(document.getElementById("nsi-state").textContent);
bundle.mountStatic(document.getElementById("nsi-app"), state);
</script>
</body>
</html>
"""


def _json_for_script(value) -> str:
    """JSON safe inside a <script> element: ``<``, ``>`` and ``&`` become ``\\u`` escapes."""
    text = json.dumps(_data.jsonable(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _read_bundle() -> tuple[str, str]:
    if not ESM.is_file() or not CSS.is_file():
        raise FileNotFoundError(
            f"the nsi-widgets front end is not built ({ESM} or {CSS} is missing): run "
            f"`cd js && npm install && npm run build`")
    return ESM.read_text(encoding="utf-8"), CSS.read_text(encoding="utf-8")


def build_state(idx, store=None, *, layer: str | None = None, grid_state: dict | None = None,
                crops: bool | None = None, histogram_score: str = "color_selectivity",
                title: str = "") -> dict:
    """The document the static page mounts: grid, card, chart and histogram data for every layer.

    Every (layer, unit) gets its card and chart payload so the page needs no kernel; ``crops``
    (default: only when the index has at most 2,048 units) decides whether card mosaics are kept.
    """
    layer = _data.check_layer(idx, layer)
    if crops is None:
        crops = idx.n_units <= 2048
    grid_state = dict(grid_state or {})
    sort_by = grid_state.pop("sort_by", "color_selectivity")
    grid_table, card_table, chart_table = {}, {}, {}
    for name in idx.layers:
        L = idx[name]
        payload = _data.grid_layer_payload(L)
        payload["annotation_table"] = _data.layer_annotations(store, name)
        grid_table[name] = payload
        for unit in range(L.n_units):
            card = card_payload(idx, name, unit, n_crops=8 if crops else 0, crop_px=48, nf_px=96)
            card["annotation"] = _data.annotation_dict(store.get(name, unit), full=True) if store else {}
            card_table[f"{name}\u0000{unit}"] = card
            chart_table[f"{name}\u0000{unit}"] = {"data": chart_payload(idx, name, unit)}
        chart_table[f"{name}\u0000"] = {"data": chart_payload(idx, name, None)}
    names = grid_table[layer]["score_names"]
    if sort_by not in _data.sort_keys(names):
        sort_by = _data.SORT_UNIT
    grid = {"layers": list(idx.layers), "layer": layer, "sort_by": sort_by, "descending": True,
            "filters": {}, "show": "all", "search": "", "selected": [], "active": None,
            "cell_size": 64, "height": 460}
    grid.update({k: v for k, v in grid_state.items() if k in grid})
    grid["filters"] = _data.normalize_filters(grid["filters"], names)
    texts = {int(u): _data.annotation_text(a) for u, a in grid_table[layer]["annotation_table"].items()}
    order = _data.display_order(_data.layer_scores(idx[layer]), idx[layer].dead, sort_by,
                                grid["descending"], grid["filters"], grid["show"], grid["search"], texts)
    first = int(order[0]) if len(order) else 0
    grid["active"] = first
    histogram = None
    with_score = [n for n in idx.layers if histogram_score in idx[n].scores]
    if with_score:
        import numpy as np

        values = {n: np.asarray(idx[n].scores[histogram_score], dtype=np.float64) for n in with_score}
        alive = {n: ~np.asarray(idx[n].dead, dtype=bool) for n in with_score}
        edges = _data.shared_edges([values[n][alive[n]] for n in with_score], 20)
        histogram = {"score": histogram_score, "edges": [float(e) for e in edges], "series": [
            {"name": n, "color": PALETTE[k % len(PALETTE)],
             "counts": _data.histogram(values[n][alive[n]], edges),
             "n_alive": int(np.isfinite(values[n][alive[n]]).sum()), "n_dead": int((~alive[n]).sum())}
            for k, n in enumerate(with_score)]}
    meta = {k: v for k, v in (idx.meta or {}).items() if isinstance(v, (str, int, float, bool))}
    return {
        "version": 1, "kind": "explorer", "title": title, "meta": meta,
        "grid": {"state": grid, "keyed": {"traits": ["layer"], "table": grid_table}},
        "card": {"state": {"layers": list(idx.layers), "layer": layer, "unit": first, "editable": False,
                           "show_classes": False,
                           "author": "", "readonly_note": "static export: annotations are read-only"},
                 "keyed": {"traits": ["layer", "unit"], "table": card_table}},
        "chart": {"state": {"layers": list(idx.layers), "layer": layer, "unit": first},
                  "keyed": {"traits": ["layer", "unit"], "table": chart_table}},
        "histogram": histogram,
    }


def export_html(idx_or_explorer, path, annotations=None, *, title: str | None = None,
                crops: bool | None = None, layer: str | None = None) -> Path:
    """Write one standalone HTML file that shows the index like the Explorer, offline.

    The widget bundle, its CSS and all data (thumbnails as base64 PNG) are inlined; the page
    loads nothing from the network and runs from disk (``file://``). Annotations are shown
    read-only. Sorting, filtering, selection and the linked card work without a kernel.

    Parameters
    ----------
    idx_or_explorer : NeuronIndex or Explorer
        An Explorer's current layer, sort order and filters carry over.
    path : str or path-like
        Output file (``.html``); written atomically.
    annotations : AnnotationStore or path, optional
        Labels to include (default: the Explorer's store, if any).
    title : str, optional
        Page title (shown as text).
    crops : bool, optional
        Include the top-crop mosaics in the cards (default: when the index has <= 2,048 units).
    layer : str, optional
        Layer shown first.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from .explorer import Explorer

    grid_state = None
    if isinstance(idx_or_explorer, Explorer):
        explorer = idx_or_explorer
        idx = explorer.index
        store = _data.open_store(annotations, idx) if annotations is not None else explorer.store
        g = explorer.grid
        grid_state = {"sort_by": g.sort_by, "descending": g.descending, "filters": dict(g.filters),
                      "show": g.show, "search": g.search, "cell_size": g.cell_size}
        layer = layer or g.layer
    else:
        idx = idx_or_explorer
        if not (hasattr(idx, "layers") and hasattr(idx, "__getitem__")):
            raise _data.WidgetArgumentError(
                f"export_html needs a NeuronIndex or an Explorer, got {type(idx).__name__}")
        store = _data.open_store(annotations, idx)
    bundle, css = _read_bundle()
    title = title if title is not None else f"Neuron explorer: {idx.meta.get('model_name', 'model')}"
    state = build_state(idx, store, layer=layer, grid_state=grid_state, crops=crops, title=title)
    encoding = "plain"
    if _UNSAFE_IN_SCRIPT.search(bundle):
        # never let the bundle's text end the <script> element early
        bundle, encoding = base64.b64encode(bundle.encode("utf-8")).decode("ascii"), "base64"
    page = _PAGE.format(title=html.escape(title), css=css.replace("</", "<\\/"),
                        state=_json_for_script(state), bundle=bundle, encoding=encoding)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, default_file_mode())  # not mkstemp's 0600: the page is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    size = path.stat().st_size
    if size > 100 * 2**20:
        warnings.warn(f"{path} is {size / 2**20:.0f} MB; pass crops=False for a smaller file",
                      stacklevel=2)
    return path
