// The neuron card and the card views' slots (a section of the card, or a tab beside it).
// The card follows the store's unit and steps through the grid's order; its sections are the
// registered views (cardviews.js) with placement "card"; the annotation editor closes it.
import { clear, fillSelect, h, setStyle, setText } from "./util.js";
import { cardView } from "./cardviews.js";
import { mountEditor } from "./editor.js";

const PREFETCH = [1, 2, 3, -1];

/** One view's slot: its heading (with the compute button) and its body, redrawn per unit. */
export function mountViewSlot(store, kernel, units, spec, el, { heading = true } = {}) {
  const body = h("div", { class: "nsi-view-body" });
  const progress = h("span", { class: "nsi-view-progress", role: "status" });
  const button = spec.compute && kernel.status !== "static"
    ? h("button", { class: "nsi-btn nsi-view-compute", type: "button", text: spec.compute }) : null;
  const head = heading ? h("div", { class: "nsi-section-title" }, h("span", { text: spec.title }), button, progress) : null;
  const root = h("section", { class: "nsi-view", dataset: { view: spec.key, renderer: spec.renderer } }, head, body);
  if (!heading && button) root.prepend(h("div", { class: "nsi-view-actions" }, button, progress));
  el.append(root);
  let cleanup = null;
  let shown = null;

  function render() {
    const { layer, unit } = store.state;
    const data = store.layer();
    if (typeof cleanup === "function") cleanup();
    cleanup = null;
    clear(body);
    shown = { layer, unit };
    if (unit === null || unit === undefined || !data) return;
    const renderer = cardView(spec.renderer);
    if (!renderer) {
      body.append(h("div", { class: "nsi-muted", text: `no front end for the view ${spec.renderer}` }));
      return;
    }
    const views = units.get(layer, unit);
    const payload = spec.has_payload ? (views ? views[spec.key] : undefined) : null;
    const layerPayload = spec.has_layer_payload ? data.views[spec.key] : undefined;
    try {
      cleanup = renderer.render({ el: body, store, layer, unit, data, payload, layerPayload, views, spec, info: store.data.info });
    } catch (err) {
      console.error(`nsi-widgets: the view ${spec.key} failed`, err);
      body.append(h("div", { class: "nsi-muted", text: `the view ${spec.key} failed: ${err.message}` }));
    }
    root.dataset.unit = String(unit);
  }

  if (button) {
    button.addEventListener("click", () => {
      const { layer, unit } = store.state;
      progress.textContent = "starting…";
      progress.dataset.state = "running";
      kernel.request("compute", { view: spec.key, layer, unit }, { reply: false }).catch((err) => {
        progress.textContent = err.message;
        progress.dataset.state = "error";
      });
    });
  }
  // the last progress of each unit's computation, shown again when the card comes back to the unit
  const lastProgress = new Map();
  const showProgress = (msg) => {
    const pct = Number.isFinite(msg && msg.fraction) ? ` ${Math.round(100 * msg.fraction)}%` : "";
    progress.textContent = !msg ? "" : msg.state === "done" ? "done" : msg.state === "error" ? `failed: ${msg.text}` : `${msg.text || "running"}${pct}`;
    progress.dataset.state = msg ? msg.state : "";
    if (button) button.disabled = !!msg && msg.state === "running";
  };
  const offProgress = kernel.on("progress", (msg) => {
    if (msg.view !== spec.key) return;
    lastProgress.set(`${msg.layer}\u0000${msg.unit}`, msg);
    if (msg.layer === store.state.layer && msg.unit === store.state.unit) showProgress(msg);
  });
  // a view may read the other views' payloads of the unit (ctx.views): redraw when they arrive
  const offUnits = units.onUpdate((layer, unit) => {
    if (shown && layer === shown.layer && unit === shown.unit && (spec.has_payload || (cardView(spec.renderer) || {}).usesViews)) render();
  });

  return {
    render,
    update(changed) {
      const { layer, unit } = store.state;
      if (!shown || shown.layer !== layer || shown.unit !== unit || changed.has("layers")) {
        const last = lastProgress.get(`${layer}\u0000${unit}`);
        showProgress(last && last.state === "running" ? last : null);
        render();
      }
    },
    destroy() {
      if (typeof cleanup === "function") cleanup();
      offProgress();
      offUnits();
      root.remove();
    },
  };
}

export function mountCard(store, kernel, units, el, { layerControl = false, focusGrid = () => {} } = {}) {
  const layerSelect = h("select", { class: "nsi-select nsi-card-layer", "aria-label": "Layer" });
  const prev = h("button", { class: "nsi-btn nsi-prev", type: "button", title: "Previous unit in the grid's order", text: "‹" });
  const next = h("button", { class: "nsi-btn nsi-next", type: "button", title: "Next unit in the grid's order", text: "›" });
  const unitInput = h("input", { class: "nsi-input nsi-num nsi-card-unit-input", type: "number", min: "0", step: "1",
    "aria-label": "Unit" });
  const layerName = h("span", { class: "nsi-card-layer-name" });
  const unitName = h("span", { class: "nsi-card-unit" });
  const badge = h("span", { class: "nsi-badge", text: "dead" });
  const position = h("span", { class: "nsi-caption nsi-card-pos" });
  const title = h("div", { class: "nsi-card-title" },
    h("span", { class: "nsi-card-heading" }, layerName, h("span", { class: "nsi-sep", text: "·" }), h("span", { text: "unit " }), unitName),
    badge, position,
    h("span", { class: "nsi-card-nav" }, layerControl ? layerSelect : null, prev, unitInput, next));
  const sectionsBox = h("div", { class: "nsi-card-sections" });
  const editorBox = h("div", { class: "nsi-card-editor" });
  const emptyNote = h("div", { class: "nsi-muted nsi-card-empty", text: "No unit to show: the grid lists none." });
  const root = h("div", { class: "nsi-card" }, title, emptyNote, sectionsBox, editorBox);
  el.append(root);

  let slots = [];
  function buildSections() {
    for (const slot of slots) slot.destroy();
    slots = store.data.cardViews.filter((spec) => spec.placement === "card")
      .map((spec) => mountViewSlot(store, kernel, units, spec, sectionsBox));
    for (const slot of slots) slot.render();
  }

  function renderHeader() {
    const { layer, unit } = store.state;
    const data = store.layer();
    const has = unit !== null && unit !== undefined && data;
    if (root.dataset.layer !== layer) root.dataset.layer = layer;
    if (root.dataset.unit !== (has ? String(unit) : "")) root.dataset.unit = has ? String(unit) : "";
    setText(layerName, layer);
    setText(unitName, has ? String(unit) : "—");
    setStyle(badge, "display", has && data.dead[unit] ? "" : "none");
    const at = has ? store.posOf[unit] : -1;
    setText(position, has && at >= 0 ? `${at + 1} of ${store.order.length} in the grid` : "");
    fillSelect(layerSelect, store.data.info.layers || []);
    if (layerSelect.value !== layer) layerSelect.value = layer;
    if (unitInput.value !== (has ? String(unit) : "")) unitInput.value = has ? String(unit) : "";
    unitInput.max = String(Math.max(0, (data ? data.n : 1) - 1));
    prev.disabled = !has || at <= 0;
    next.disabled = !has || at < 0 || at >= store.order.length - 1;
    setStyle(emptyNote, "display", has ? "none" : "");
    setStyle(sectionsBox, "display", has ? "" : "none");
    if (has) units.ensure(layer, [unit, ...PREFETCH.map((d) => store.neighbour(d, unit))]);
  }

  prev.addEventListener("click", () => store.go(store.neighbour(-1)));
  next.addEventListener("click", () => store.go(store.neighbour(1)));
  unitInput.addEventListener("change", () => {
    const unit = Math.round(Number(unitInput.value));
    if (Number.isFinite(unit) && unit >= 0 && unit < store.posOf.length && store.posOf[unit] >= 0) store.go(unit);
    else unitInput.value = String(store.state.unit ?? "");
  });
  unitInput.addEventListener("keydown", (e) => e.stopPropagation());
  layerSelect.addEventListener("change", () => store.propose({ layer: layerSelect.value }));

  const editor = mountEditor(store, kernel, editorBox, { focusGrid, units });
  // a wide card (stacked layout, full column) puts its sections side by side
  const observer = new ResizeObserver(() => { root.dataset.wide = root.clientWidth >= 520 ? "1" : "0"; });
  observer.observe(root);
  const unsubscribe = store.subscribe((changed) => {
    if (changed.has("card_views")) buildSections();
    if (["unit", "layer", "order", "layers", "info"].some((k) => changed.has(k))) renderHeader();
    for (const slot of slots) slot.update(changed);
  });
  buildSections();
  renderHeader();

  return {
    editor,
    destroy() {
      unsubscribe();
      observer.disconnect();
      for (const slot of slots) slot.destroy();
      editor.destroy();
      root.remove();
    },
  };
}
