"""Static export: one self-contained HTML file that shows an index offline, without a kernel."""
from __future__ import annotations

import base64
import html
import json
import re
import warnings
from pathlib import Path

from . import _data, _wire
from ._model import CSS, ESM
from ..core.storage import atomic_write

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
    text = json.dumps(_wire.embed(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _read_bundle() -> tuple[str, str]:
    if not ESM.is_file() or not CSS.is_file():
        raise FileNotFoundError(
            f"the nsi-widgets front end is not built ({ESM} or {CSS} is missing): run "
            f"`cd js && npm install && npm run build`")
    return ESM.read_text(encoding="utf-8"), CSS.read_text(encoding="utf-8")


def page_document(idx_or_explorer, annotations=None, *, title: str | None = None, crops: bool | None = None,
                  layer: str | None = None) -> dict:
    """The document the exported page mounts (js/src/static.js): the Explorer's traits as they are
    now and, per unit, its card views' payloads (the page has no kernel to ask)."""
    from ._linked import LinkedWidget
    from .explorer import Explorer

    state: dict = {}
    if isinstance(idx_or_explorer, LinkedWidget):
        source = idx_or_explorer
        idx = source.index
        store = _data.open_store(annotations, idx) if annotations is not None else source.store
        title = title if title is not None else source.info.get("title")
        state = dict(sort_by=source.sort_by, descending=source.descending, filters=dict(source.filters),
                     show=source.show_units, search=source.search, unlabelled_only=source.unlabelled_only)
        if store is source.store and store is not None:
            state["author"] = source.author
        if layer is None or layer == source.layer:
            state.update(layer=source.layer, unit=source.unit)
        else:
            state["layer"] = layer
    else:
        idx = idx_or_explorer
        if not (hasattr(idx, "layers") and hasattr(idx, "__getitem__")):
            raise _data.WidgetArgumentError(
                f"export_html needs a NeuronIndex or an Explorer, got {type(idx).__name__}")
        store = _data.open_store(annotations, idx)
        state["layer"] = layer
    if crops is None:
        crops = idx.n_units <= 2048
    page = Explorer(idx, store, title=title, **state)
    try:
        doc = page.page_document(units=True, n_crops=8 if crops else 0, crop_px=48, nf_px=96)
    finally:
        page.close()
    return doc


def export_html(idx_or_explorer, path, annotations=None, *, title: str | None = None,
                crops: bool | None = None, layer: str | None = None) -> Path:
    """Write one standalone HTML file that shows the index in the Explorer, offline.

    The page mounts the same front end as the live Explorer on data embedded in the page (the
    bundle, its CSS, thumbnails and every unit's card payload inlined), so the same clicks give
    the same views; it loads nothing from the network and runs from disk (``file://``).
    Annotations are shown read-only. Sorting, filtering, selection, the histograms and the
    linked card work without a kernel.

    Parameters
    ----------
    idx_or_explorer : NeuronIndex or Explorer
        An Explorer's current layer, unit, sort order, filters and author carry over.
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
    doc = page_document(idx_or_explorer, annotations, title=title, crops=crops, layer=layer)
    title = doc["state"]["info"]["title"]
    bundle, css = _read_bundle()
    encoding = "plain"
    if _UNSAFE_IN_SCRIPT.search(bundle):
        # never let the bundle's text end the <script> element early
        bundle, encoding = base64.b64encode(bundle.encode("utf-8")).decode("ascii"), "base64"
    page = _PAGE.format(title=html.escape(title), css=css.replace("</", "<\\/"),
                        state=_json_for_script(doc), bundle=bundle, encoding=encoding)
    path = atomic_write(Path(path), lambda f: f.write(page.encode("utf-8")), what="report page")
    size = path.stat().st_size
    if size > 100 * 2**20:
        warnings.warn(f"{path} is {size / 2**20:.0f} MB; pass crops=False for a smaller file",
                      stacklevel=2)
    return path
