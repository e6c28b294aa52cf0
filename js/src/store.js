// The linked state of the Explorer, in one place. Every view renders from it and changes it only
// through `propose`; it mirrors itself into the model's traits (so Python sees it) and takes
// changes made in Python the same way. After any change it applies the linking rules
// (`reconcile`, the same as nsi_widgets/widgets/_linked.py:LinkedWidget._reconcile), so no view
// can be left showing a layer, filter, unit or selection that no longer holds.
import { computeOrder } from "./order.js";
import { decodeLayer } from "./layerdata.js";

export const STATE = ["layer", "unit", "selection", "sort_by", "descending", "filters", "show_units", "search",
  "unlabelled_only", "author"];
const DATA = ["info", "layer_data", "card_views", "annotations", "agreement", "authors", "editable", "readonly_note",
  "cell_size", "grid_height", "_views"];

const same = (a, b) => a === b || JSON.stringify(a) === JSON.stringify(b);

function clone(value) {
  if (Array.isArray(value)) return value.slice();
  if (value && typeof value === "object") return JSON.parse(JSON.stringify(value));
  return value;
}

export function createStore(model, { followFirst = true } = {}) {
  const subscribers = new Set();
  const events = new Map();
  let state = {};
  let data = {};
  let raw = {};
  let order = new Int32Array(0);
  let posOf = new Int32Array(0);
  let guard = null;
  let writing = false;
  const ui = { tab: "neuron", histScore: null };

  for (const name of STATE) state[name] = clone(model.get(name));
  if (!Array.isArray(state.selection)) state.selection = [];
  if (!state.filters) state.filters = {};
  readData(true);

  // -- data -------------------------------------------------------------------------------------
  function readData(force) {
    const changed = new Set();
    for (const name of DATA) {
      const value = model.get(name);
      if (force || value !== raw[name]) {
        raw[name] = value;
        changed.add(name);
      }
    }
    if (changed.has("layer_data")) {
      const layers = {};
      for (const [name, payload] of Object.entries(raw.layer_data || {})) layers[name] = decodeLayer(payload);
      data.layers = layers;
    }
    data.info = raw.info || {};
    data.cardViews = raw.card_views || [];
    data.annotations = raw.annotations || {};
    data.agreement = raw.agreement || {};
    data.authors = raw.authors || [];
    data.editable = !!raw.editable;
    data.readonlyNote = raw.readonly_note || "";
    data.cellSize = raw.cell_size || 64;
    data.gridHeight = raw.grid_height || 420;
    data.views = raw._views || [];
    return changed;
  }

  const layerOf = (name = state.layer) => (data.layers || {})[name] || null;
  const columnsOf = (name) => (layerOf(name) ? layerOf(name).names : []);
  const annotationsOf = (name = state.layer) => data.annotations[name] || {};

  function orderFor(s) {
    const layer = layerOf(s.layer);
    if (!layer) return new Int32Array(0);
    return computeOrder({
      n: layer.n, scores: layer.scores, dead: layer.dead, sortBy: s.sort_by, descending: s.descending,
      filters: s.filters, show: s.show_units, search: s.search, annotations: annotationsOf(s.layer),
      unlabelledOnly: s.unlabelled_only,
    });
  }

  /** The linking rules: what follows from a change of `keys` (see _linked.py). */
  function reconcile(next, keys) {
    const s = { ...next, selection: (next.selection || []).slice(), filters: { ...(next.filters || {}) } };
    if (keys.has("layer")) {
      const names = columnsOf(s.layer);
      if (s.sort_by !== "unit" && !names.includes(s.sort_by)) { s.sort_by = "unit"; s.descending = false; }
      for (const key of Object.keys(s.filters)) if (!names.includes(key)) delete s.filters[key];
      if (!keys.has("selection")) s.selection = [];
      if (!keys.has("unit")) s.unit = null;
    }
    const o = orderFor(s);
    const layer = layerOf(s.layer);
    const pos = new Int32Array(layer ? layer.n : 0).fill(-1);
    for (let i = 0; i < o.length; i++) pos[o[i]] = i;
    s.selection = s.selection.filter((u) => u >= 0 && u < pos.length && pos[u] >= 0);
    if (s.unit === null || s.unit === undefined || !(s.unit >= 0 && s.unit < pos.length) || pos[s.unit] < 0) {
      s.unit = followFirst && o.length ? o[0] : null;
    }
    return { state: s, order: o, posOf: pos };
  }

  // -- changes ----------------------------------------------------------------------------------
  function emit(changed) {
    if (!changed.size) return;
    for (const fn of Array.from(subscribers)) {
      try { fn(changed); } catch (err) { console.error("nsi-widgets: a view failed to update", err); }
    }
  }

  function writeModel() {
    const out = {};
    for (const name of STATE) if (!same(model.get(name), state[name])) out[name] = clone(state[name]);
    if (!Object.keys(out).length) return;
    writing = true;
    try {
      model.set(out);
      model.save_changes();
    } catch (err) {
      // a closed comm (dead kernel): the browser keeps working, kernel.js reports it
    } finally {
      writing = false;
    }
  }

  function commit(result, extra = new Set(), { write = true } = {}) {
    const changed = new Set(extra);
    for (const name of STATE) if (!same(state[name], result.state[name])) changed.add(name);
    const orderChanged = result.order.length !== order.length || result.order.some((u, i) => u !== order[i]);
    state = result.state;
    order = result.order;
    posOf = result.posOf;
    if (orderChanged) changed.add("order");
    if (write) writeModel();
    emit(changed);
  }

  /**
   * Ask for a change. The result of the linking rules is committed at once, unless it moves to
   * another unit while the guard (the editor's unsaved-change check) holds it back.
   */
  function propose(partial, { source = "ui", extra = new Set() } = {}) {
    const keys = new Set(Object.keys(partial));
    const result = reconcile({ ...state, ...partial }, keys);
    const moves = result.state.layer !== state.layer || result.state.unit !== state.unit;
    // Python sends consistent states: a change from the model is taken, not written back (writing
    // back a step of a sequence Python is still making would undo the rest of it)
    const write = source !== "model";
    if (moves && guard) {
      const held = guard({
        to: { layer: result.state.layer, unit: result.state.unit },
        proceed: () => { const again = reconcile({ ...state, ...partial }, keys); commit(again, extra, { write }); },
        cancel: () => { if (source === "model") writeModel(); }, // keep editing: Python follows back
      });
      if (held) {
        if (extra.size) emit(extra);
        return false;
      }
    }
    commit(result, extra, { write });
    return true;
  }

  function onModelChange() {
    if (writing) return;
    const changedData = readData(false);
    const partial = {};
    for (const name of STATE) {
      const value = model.get(name);
      if (!same(value, state[name])) partial[name] = clone(value);
    }
    if (!Object.keys(partial).length && !changedData.size) return;
    const extra = new Set();
    if (changedData.has("layer_data")) extra.add("layers");
    if (changedData.has("annotations")) extra.add("annotations");
    for (const name of ["agreement", "authors", "card_views", "editable", "info", "cell_size", "grid_height"]) {
      if (changedData.has(name)) extra.add(name);
    }
    propose(partial, { source: "model", extra });
  }
  model.on("change", onModelChange);

  // first reconcile: the model's values are Python's, already consistent; this computes the order
  commit(reconcile(state, new Set()));

  return {
    get state() { return state; },
    get order() { return order; },
    get posOf() { return posOf; },
    data,
    ui,
    layer: layerOf,
    annotations: annotationsOf,
    annotation(unit, layer = state.layer) {
      return unit === null || unit === undefined ? null : annotationsOf(layer)[String(unit)] || null;
    },
    propose,
    /** The unit `delta` places away from the one shown in display order (clamped), or null. */
    neighbour(delta, from = state.unit) {
      if (!order.length) return null;
      const at = from !== null && from !== undefined && from >= 0 && from < posOf.length ? posOf[from] : -1;
      const p = at < 0 ? 0 : Math.max(0, Math.min(order.length - 1, at + delta));
      return order[p];
    },
    /** Show `unit` (selected alone), e.g. a click or the card's arrows. */
    go(unit) {
      return propose({ unit, selection: unit === null ? [] : [unit] });
    },
    setGuard(fn) { guard = fn; },
    subscribe(fn) { subscribers.add(fn); return () => subscribers.delete(fn); },
    setUi(changes) {
      Object.assign(ui, changes);
      emit(new Set(Object.keys(changes).map((k) => `ui.${k}`)));
    },
    /** One-off events between views (e.g. "focus-label"). */
    on(name, fn) {
      if (!events.has(name)) events.set(name, new Set());
      events.get(name).add(fn);
      return () => events.get(name).delete(fn);
    },
    fire(name, detail) {
      for (const fn of Array.from(events.get(name) || [])) fn(detail);
    },
    destroy() {
      model.off("change", onModelChange);
      subscribers.clear();
      events.clear();
    },
  };
}
