// The one front end: the store, the kernel link, and the views `_views` asks for, laid out to fit
// the notebook column (side by side from 1100 px, stacked below). The live widget (index.js) and
// the exported page (static.js) both mount this.
import { h } from "./util.js";
import { createStore } from "./store.js";
import { createKernel } from "./kernel.js";
import { createUnitCache } from "./units.js";
import { mountToolbar } from "./toolbar.js";
import { mountCharts, classHistogram } from "./charts.js";
import { mountGrid } from "./grid.js";
import { mountCard, mountViewSlot } from "./card.js";
import { mountAgreement } from "./agreement.js";

export const WIDE_PX = 1100;
const REFRESH_MS = 5000;

function mountTabs(store, kernel, units, el, { withCard, withAgreement, focusGrid }) {
  const bar = h("div", { class: "nsi-tabs", role: "tablist" });
  const panels = h("div", { class: "nsi-tab-panels" });
  el.append(bar, panels);
  const tabs = new Map();
  const parts = [];

  function add(key, title, mount) {
    const button = h("button", { class: "nsi-tab", type: "button", role: "tab", dataset: { tab: key }, text: title });
    const panel = h("div", { class: "nsi-tab-panel", role: "tabpanel", dataset: { tab: key } });
    bar.append(button);
    panels.append(panel);
    button.addEventListener("click", () => store.setUi({ tab: key }));
    tabs.set(key, { button, panel });
    parts.push(mount(panel));
  }

  if (withCard) add("neuron", "neuron", (panel) => mountCard(store, kernel, units, panel, { focusGrid }));
  if (withAgreement && Object.keys(store.data.agreement || {}).length) add("agreement", "agreement", (panel) => mountAgreement(store, panel));
  const tabViews = [];
  function syncTabViews() {
    for (const spec of store.data.cardViews.filter((s) => s.placement === "tab")) {
      if (tabs.has(spec.key)) continue;
      add(spec.key, spec.title, (panel) => {
        const slot = mountViewSlot(store, kernel, units, spec, panel, { heading: false });
        tabViews.push(slot);
        slot.render();
        return slot;
      });
    }
  }
  syncTabViews();

  function show() {
    let active = store.ui.tab;
    if (!tabs.has(active)) active = tabs.keys().next().value;
    for (const [key, { button, panel }] of tabs) {
      const on = key === active;
      button.classList.toggle("nsi-tab-active", on);
      button.setAttribute("aria-selected", on ? "true" : "false");
      panel.hidden = !on;
    }
    bar.style.display = tabs.size > 1 ? "" : "none";
  }
  const unsubscribe = store.subscribe((changed) => {
    if (changed.has("card_views")) syncTabViews();
    for (const slot of tabViews) slot.update(changed);
    if (changed.has("ui.tab") || changed.has("card_views")) show();
  });
  show();
  return {
    card: parts[0] && parts[0].editor ? parts[0] : null,
    destroy() { unsubscribe(); parts.forEach((p) => p && p.destroy && p.destroy()); bar.remove(); panels.remove(); },
  };
}

/** Mount the front end on `el` for `model` (anywidget's, or a ModelShim); returns the cleanup. */
export function mountApp(model, el, { isStatic = false } = {}) {
  const kernel = createKernel(model, { isStatic });
  const info = model.get("info") || {};
  const store = createStore(model, { followFirst: info.follow_first !== false });
  const units = createUnitCache(kernel);
  const views = new Set(store.data.views);
  const root = h("div", { class: "nsi-root nsi-app", "data-lm-suppress-shortcuts": "true", dataset: { views: [...views].join(" ") } });
  el.append(root);
  const parts = [];
  let grid = null;
  const focusGrid = () => { if (grid) grid.focus(); };

  if (views.has("toolbar")) parts.push(mountToolbar(store, root));
  const main = h("div", { class: "nsi-main" });
  const left = h("div", { class: "nsi-left" });
  const side = h("div", { class: "nsi-side" });
  root.append(main);
  if (views.has("charts") || views.has("grid")) main.append(left);
  if (views.has("charts")) parts.push(mountCharts(store, left));
  if (views.has("grid")) {
    const box = h("div", { class: "nsi-grid-box" });
    left.append(box);
    grid = mountGrid(store, box);
    parts.push(grid);
  }
  let tabs = null;
  if (views.has("card") || views.has("agreement")) {
    main.append(side);
    tabs = mountTabs(store, kernel, units, side, { withCard: views.has("card"), withAgreement: views.has("agreement"), focusGrid });
    parts.push(tabs);
  }
  if (views.has("class_chart")) {
    const box = h("div", { class: "nsi-class-chart-view" });
    main.append(box);
    const spec = { key: "classes", renderer: "classes", title: "class frequencies", has_payload: false };
    const slot = mountViewSlot(store, kernel, units, spec, box);
    slot.render();
    const off = store.subscribe((changed) => { slot.update(changed); box.dataset.mode = store.state.unit === null ? "layer" : "unit"; });
    parts.push({ destroy() { off(); slot.destroy(); } }, classHistogram(store, box));
    box.dataset.mode = store.state.unit === null ? "layer" : "unit";
  }

  // layout: side by side when wide enough, stacked otherwise
  const layout = () => {
    const wide = root.clientWidth >= WIDE_PX && left.isConnected && side.isConnected;
    root.dataset.layout = wide ? "wide" : "narrow";
  };
  const observer = new ResizeObserver(layout);
  observer.observe(root);
  layout();

  // "L" anywhere in the widget (outside a text field) types a label
  root.addEventListener("keydown", (e) => {
    const typing = e.target.closest("input, textarea, select");
    if (!typing && (e.key === "l" || e.key === "L") && !e.ctrlKey && !e.metaKey && !e.altKey) {
      e.preventDefault();
      store.fire("focus-label");
    }
    e.stopPropagation();
  });
  // labels written elsewhere (another notebook) show up when the user comes back
  let lastRefresh = 0;
  root.addEventListener("focusin", () => {
    if (isStatic || performance.now() - lastRefresh < REFRESH_MS) return;
    lastRefresh = performance.now();
    kernel.request("refresh", {}, { reply: false }).catch(() => {});
  });

  root.__nsi = { store, kernel, units };
  return () => {
    observer.disconnect();
    for (const part of parts.reverse()) if (part && part.destroy) part.destroy();
    units.destroy();
    kernel.destroy();
    store.destroy();
    root.remove();
  };
}
