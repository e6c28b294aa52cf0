// The grid: a virtualised list of thumbnails in display order.
//
// The cell pool is keyed by display position (position p lives in pool[p % poolSize]), so a
// scroll of one row redraws only the cells of the row that comes into view; the others keep
// their content and their place. Thumbnails come from the layer's one decoded ImageBitmap.
import { clear, h, prettyName, setStyle } from "./util.js";
import { BAR_COLORS, cellText, columnText, showThumb, thumbSheet } from "./layerdata.js";

const GAP = 6; // px between cells
const META_H = 28; // px under the thumbnail: unit id and value, label
const BAR_H = 4; // px per mini index bar
// rows drawn beyond the view: a few ahead, so a row is painted before it scrolls in
const BUFFER_ABOVE = 1;
const BUFFER_BELOW = 3;

export function mountGrid(store, el) {
  const spacer = h("div", { class: "nsi-spacer" });
  const scroller = h("div", { class: "nsi-scroll", tabindex: "0", role: "listbox", "aria-multiselectable": "true",
    "aria-label": "Neurons" }, spacer);
  const empty = h("div", { class: "nsi-empty", text: "No unit matches the filters." });
  const root = h("div", { class: "nsi-grid-widget" }, scroller, empty);
  el.append(root);

  let pool = [];
  let poolSize = 0;
  let columns = 1;
  let cellW = 0;
  let cellH = 0;
  let generation = 0; // bumps when every cell must redraw (order, data, labels, thumbnails)
  let anchor = null;
  let layer = null;
  let frame = 0;
  let destroyed = false;
  let lastWidth = 0;

  root.dataset.ready = "0";
  // test and benchmark hook (read only)
  root.__nsi = {
    get order() { return Array.from(store.order); },
    get columns() { return columns; },
    get poolSize() { return poolSize; },
    draws: 0,
    paints: 0,
    paintMs: 0,
  };

  function valueKey() {
    const sortBy = store.state.sort_by;
    return sortBy !== "unit" && layer && layer.scores[sortBy] ? sortBy : layer && layer.names[0];
  }

  function makeCell() {
    const canvas = h("div", { class: "nsi-thumb" });
    const unitText = h("span", { class: "nsi-unit" });
    const valueText = h("span", { class: "nsi-val" });
    const labelText = h("div", { class: "nsi-label" });
    const bars = h("div", { class: "nsi-ibars" });
    const cell = h("div", { class: "nsi-cell", role: "option" }, canvas, bars,
      h("div", { class: "nsi-meta" }, unitText, valueText), labelText);
    cell._parts = { canvas, unitText, valueText, labelText, bars };
    cell._pos = -1;
    cell._unit = -1;
    cell._gen = -1;
    cell.style.display = "none";
    spacer.append(cell);
    return cell;
  }

  function drawCell(cell, unit) {
    root.__nsi.draws++;
    const { canvas, unitText, valueText, labelText, bars } = cell._parts;
    const drawn = showThumb(canvas, layer, unit, store.data.cellSize || 64);
    canvas.classList.toggle("nsi-nothumb", !drawn);
    unitText.textContent = String(unit);
    const names = layer.barNames;
    while (bars.children.length < names.length) bars.append(h("span", { class: "nsi-ibar" }, h("span", { class: "nsi-ibar-fill" })));
    while (bars.children.length > names.length) bars.lastChild.remove();
    const sortBy = store.state.sort_by;
    names.forEach((name, i) => {
      const v = layer.scores[name][unit];
      const [lo, hi] = layer.ranges[name];
      const fill = bars.children[i].firstChild;
      // scaleX, not width: no layout work per cell
      fill.style.transform = `scaleX(${Number.isFinite(v) ? Math.max(0, Math.min(1, (v - lo) / (hi - lo))) : 0})`;
      if (!fill.style.background) fill.style.background = BAR_COLORS[i % BAR_COLORS.length];
      bars.children[i].classList.toggle("nsi-ibar-key", name === sortBy);
    });
    const key = valueKey();
    const dead = !!layer.dead[unit];
    valueText.textContent = dead ? "dead" : key ? cellText(layer, key, unit) : "";
    const annotation = store.annotation(unit);
    labelText.textContent = annotation && annotation.label ? annotation.label : "";
    cell._titled = false; // the tooltip is written when the pointer comes (see "pointerover")
    cell.classList.toggle("nsi-dead", dead);
    cell.classList.toggle("nsi-annotated", !!(annotation && annotation.label));
    cell.dataset.unit = String(unit);
  }

  let selected = new Set(store.state.selection);
  function mark(cell, unit) {
    const isSelected = selected.has(unit);
    cell.classList.toggle("nsi-selected", isSelected);
    cell.classList.toggle("nsi-active", unit === store.state.unit);
    cell.setAttribute("aria-selected", isSelected ? "true" : "false");
  }

  function layout() {
    const size = store.data.cellSize || 64;
    const width = scroller.clientWidth || el.clientWidth || 600;
    const newW = size + GAP;
    const newH = size + META_H + BAR_H * (layer ? layer.barNames.length : 0) + GAP;
    const newColumns = Math.max(1, Math.floor((width - GAP) / newW));
    const n = store.order.length;
    const rows = Math.ceil(n / newColumns);
    const maxHeight = store.data.gridHeight || 420;
    const height = Math.max(newH + 2 * GAP, Math.min(maxHeight, rows * newH + GAP + 2));
    if (scroller.style.height !== `${height}px`) scroller.style.height = `${height}px`;
    setStyle(spacer, "height", `${rows * newH + GAP}px`);
    if (root.style.getPropertyValue("--nsi-cell") !== `${size}px`) root.style.setProperty("--nsi-cell", `${size}px`);
    const visibleRows = Math.ceil(height / newH) + 1;
    const newPool = (visibleRows + BUFFER_ABOVE + BUFFER_BELOW + 1) * newColumns;
    if (newColumns !== columns || newW !== cellW || newH !== cellH || newPool !== poolSize) {
      columns = newColumns;
      cellW = newW;
      cellH = newH;
      poolSize = newPool;
      while (pool.length < poolSize) pool.push(makeCell());
      for (const cell of pool) { cell._pos = -1; cell.style.display = "none"; }
    }
  }

  /** Draw the window; `visibleOnly` (after a re-sort, new data) leaves the rows beyond the view
   * to the next frame, so the change shows after drawing only what is seen. */
  function paint(visibleOnly = false) {
    if (destroyed || !layer) return;
    const t0 = performance.now();
    paintCells(visibleOnly);
    root.__nsi.paintMs += performance.now() - t0;
    root.__nsi.paints++;
    if (visibleOnly) schedule();
  }

  function paintCells(visibleOnly) {
    layout();
    const order = store.order;
    const top = scroller.scrollTop;
    const height = scroller.clientHeight || 420;
    const rows = Math.ceil(order.length / columns);
    const r0 = Math.max(0, Math.floor(top / cellH) - (visibleOnly ? 0 : BUFFER_ABOVE));
    const r1 = Math.min(rows, Math.ceil((top + height) / cellH) + (visibleOnly ? 0 : BUFFER_BELOW));
    const p0 = r0 * columns;
    const p1 = Math.min(order.length, r1 * columns, p0 + poolSize);
    for (let p = p0; p < p1; p++) {
      const cell = pool[p % poolSize];
      const unit = order[p];
      let touched = false;
      if (cell._pos !== p) {
        cell.style.transform = `translate(${GAP + (p % columns) * cellW}px, ${GAP + Math.floor(p / columns) * cellH}px)`;
        cell.dataset.pos = String(p);
        cell._pos = p;
        if (cell.style.display) cell.style.display = "";
        touched = true;
      }
      if (cell._unit !== unit || cell._gen !== generation) {
        drawCell(cell, unit);
        cell._unit = unit;
        cell._gen = generation;
        touched = true;
      }
      if (touched) mark(cell, unit);
    }
    // slots left without a position in the window (near the end of the order)
    for (const cell of pool) {
      if (cell._pos >= 0 && (cell._pos < p0 || cell._pos >= p1)) {
        cell.style.display = "none";
        cell._pos = -1;
      }
    }
    setStyle(empty, "display", order.length || !layer.n ? "none" : "block");
  }

  function remark() {
    selected = new Set(store.state.selection);
    for (const cell of pool) if (cell._pos >= 0) mark(cell, cell._unit);
  }

  function schedule() {
    if (frame) return;
    frame = requestAnimationFrame(() => { frame = 0; paint(); });
  }

  function scrollToPos(p) {
    if (p < 0 || !cellH) return;
    const y = GAP + Math.floor(p / columns) * cellH;
    if (y < scroller.scrollTop) scroller.scrollTop = y - GAP;
    else if (y + cellH > scroller.scrollTop + scroller.clientHeight) scroller.scrollTop = y + cellH - scroller.clientHeight + GAP;
  }

  function loadLayer() {
    const next = store.layer();
    if (next === layer) return;
    layer = next;
    generation++;
    root.dataset.ready = "0";
    root.dataset.layer = layer ? layer.name : "";
    // tiles sent smaller than the receptive field are scaled smoothly; small fields stay crisp
    root.classList.toggle("nsi-smooth", !!(layer && layer.rf.size && layer.rf.size[0] > layer.T));
    scroller.scrollTop = 0;
    const wanted = layer;
    thumbSheet(layer).then(() => {
      if (destroyed || layer !== wanted) return;
      generation++;
      paint();
      root.dataset.ready = "1";
      root.dispatchEvent(new CustomEvent("nsi-rendered", { bubbles: true }));
    });
  }

  // ---- input ----------------------------------------------------------------------------------
  function rangeBetween(a, b) {
    const pa = store.posOf[a];
    const pb = store.posOf[b];
    if (pa < 0 || pb < 0) return [b];
    const [lo, hi] = pa <= pb ? [pa, pb] : [pb, pa];
    return Array.from(store.order.subarray(lo, hi + 1));
  }

  function tooltip(cell) {
    const unit = cell._unit;
    const annotation = store.annotation(unit);
    const lines = [`unit ${unit}${layer.dead[unit] ? " (dead)" : ""}`];
    for (const name of layer.names) lines.push(`${prettyName(name)}: ${columnText(layer, name, unit, 4)}`);
    if (annotation && annotation.label) lines.push(`label: ${annotation.label}`);
    if (annotation && annotation.tags && annotation.tags.length) lines.push(`tags: ${annotation.tags.join(", ")}`);
    if (annotation && annotation.note) lines.push(`note: ${annotation.note}`);
    return lines.join("\n"); // attribute text, not HTML
  }
  spacer.addEventListener("pointerover", (e) => {
    const cell = e.target.closest(".nsi-cell");
    if (cell && cell._pos >= 0 && !cell._titled) { cell.title = tooltip(cell); cell._titled = true; }
  });

  spacer.addEventListener("click", (e) => {
    const cell = e.target.closest(".nsi-cell");
    if (!cell || cell._pos < 0) return;
    const unit = cell._unit;
    const { selection } = store.state;
    if (e.shiftKey && anchor !== null && store.posOf[anchor] >= 0) {
      store.propose({ unit, selection: rangeBetween(anchor, unit) });
    } else if (e.ctrlKey || e.metaKey) {
      const next = selection.includes(unit) ? selection.filter((u) => u !== unit) : [...selection, unit];
      store.propose({ unit, selection: next });
      anchor = unit;
    } else {
      anchor = unit;
      store.go(unit);
    }
    scroller.focus({ preventScroll: true });
  });

  scroller.addEventListener("keydown", (e) => {
    if (e.target !== scroller) return;
    const visibleRows = Math.max(1, Math.floor(scroller.clientHeight / (cellH || 1)));
    const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns,
      PageDown: columns * visibleRows, PageUp: -columns * visibleRows };
    const order = store.order;
    const unit0 = store.state.unit;
    const current = unit0 !== null && unit0 !== undefined && store.posOf[unit0] >= 0 ? store.posOf[unit0] : -1;
    let target = null;
    if (e.key in moves && !e.altKey) target = current < 0 ? 0 : Math.min(order.length - 1, Math.max(0, current + moves[e.key]));
    else if (e.key === "Home") target = 0;
    else if (e.key === "End") target = order.length - 1;
    if (target !== null && order.length) {
      const unit = order[target];
      if (e.shiftKey) {
        if (anchor === null || store.posOf[anchor] < 0) anchor = current >= 0 ? order[current] : unit;
        store.propose({ unit, selection: rangeBetween(anchor, unit) });
      } else {
        anchor = unit;
        store.go(unit);
      }
      scrollToPos(store.posOf[store.state.unit]);
    } else if (e.key === " " && current >= 0) {
      const unit = order[current];
      const { selection } = store.state;
      store.propose({ selection: selection.includes(unit) ? selection.filter((u) => u !== unit) : [...selection, unit] });
    } else if (e.key === "Escape") {
      store.propose({ selection: [] });
    } else if ((e.key === "a" || e.key === "A") && (e.ctrlKey || e.metaKey)) {
      store.propose({ selection: Array.from(order) });
    } else if ((e.key === "l" || e.key === "L" || e.key === "Enter") && !e.ctrlKey && !e.metaKey && !e.altKey) {
      store.fire("focus-label");
    } else {
      return; // not ours: let JupyterLab see it
    }
    e.preventDefault();
    e.stopPropagation();
  });

  scroller.addEventListener("scroll", schedule, { passive: true });
  const resizeObserver = new ResizeObserver(() => {
    const w = scroller.clientWidth;
    if (w !== lastWidth) { lastWidth = w; schedule(); }
  });
  resizeObserver.observe(scroller);

  const unsubscribe = store.subscribe((changed) => {
    if (changed.has("selection")) selected = new Set(store.state.selection);
    // a range (shift) starts from the unit shown, however it was chosen (card arrows, Python...)
    if (changed.has("unit") && store.state.selection.length <= 1) anchor = store.state.unit;
    if (changed.has("layers") || changed.has("layer")) loadLayer();
    const redraw = ["order", "annotations", "layers", "sort_by", "cell_size", "grid_height", "ui.zoom"].some((k) => changed.has(k));
    if (redraw) {
      generation++;
      paint(true);
    }
    if (changed.has("unit") || changed.has("selection") || changed.has("order")) {
      remark();
      const p = store.state.unit !== null ? store.posOf[store.state.unit] : -1;
      if (p >= 0 && (changed.has("unit") || changed.has("order"))) scrollToPos(p);
      schedule();
    }
  });

  loadLayer();
  paint();

  return {
    focus: () => scroller.focus({ preventScroll: true }),
    scroller,
    destroy() {
      destroyed = true;
      unsubscribe();
      resizeObserver.disconnect();
      if (frame) cancelAnimationFrame(frame);
      clear(root);
    },
  };
}

/** A line under the toolbar that says what the mini bars under each thumbnail are. */
export function barLegend(layer) {
  if (!layer || !layer.barNames.length) return null;
  return h("span", { class: "nsi-bar-legend", title: "bars under each thumbnail: the unit's indexes (full bar = 1, or the layer's maximum)" },
    h("span", { class: "nsi-field-name", text: "bars" }),
    ...layer.barNames.map((name, i) => h("span", { class: "nsi-legend-item" },
      h("span", { class: "nsi-swatch", style: { background: BAR_COLORS[i % BAR_COLORS.length] } }),
      h("span", { text: prettyName(name) }))));
}
