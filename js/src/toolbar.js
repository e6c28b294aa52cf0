// The toolbar: the one layer control, sort, dead/alive, "unlabelled only", search, zoom, counts and
// labelling progress; below it the range filters as chips (a histogram's brush is one of them).
import { clear, fillSelect, fmt, h, prettyName, setStyle, setText } from "./util.js";
import { barLegend } from "./grid.js";
import { categoryName } from "./layerdata.js";

export function mountToolbar(store, el) {
  const layerSelect = h("select", { class: "nsi-select nsi-layer", title: "Layer", "aria-label": "Layer" });
  const sortSelect = h("select", { class: "nsi-select nsi-sort", title: "Sort by", "aria-label": "Sort by" });
  const dirButton = h("button", { class: "nsi-btn nsi-dir", type: "button", title: "Toggle sort direction" });
  const showSelect = h("select", { class: "nsi-select nsi-show", title: "Dead or alive units", "aria-label": "Show" },
    h("option", { value: "all", text: "all units" }), h("option", { value: "alive", text: "alive only" }),
    h("option", { value: "dead", text: "dead only" }));
  const unlabelled = h("input", { type: "checkbox", class: "nsi-unlabelled", "aria-label": "Unlabelled only" });
  const searchInput = h("input", { class: "nsi-input nsi-search", type: "search", placeholder: "search annotations",
    "aria-label": "Search annotations", spellcheck: "false" });
  const zoomInput = h("input", { class: "nsi-zoom", type: "range", min: "48", max: "160", step: "8", title: "Thumbnail size",
    "aria-label": "Thumbnail size" });
  const countLabel = h("span", { class: "nsi-count" });
  const progressText = h("span", { class: "nsi-progress-text" });
  const progressFill = h("span", { class: "nsi-progress-fill" });
  const progress = h("span", { class: "nsi-progress", title: "units of this layer with a label by the author shown" },
    h("span", { class: "nsi-progress-track" }, progressFill), progressText);
  const filterKey = h("select", { class: "nsi-select nsi-filter-key", "aria-label": "Filter column" });
  const filterMin = h("input", { class: "nsi-input nsi-num nsi-filter-min", type: "number", step: "any", placeholder: "min", "aria-label": "Minimum" });
  const filterMax = h("input", { class: "nsi-input nsi-num nsi-filter-max", type: "number", step: "any", placeholder: "max", "aria-label": "Maximum" });
  // a categorical column (e.g. a dissection's best concept) is filtered by one of its names
  const filterName = h("select", { class: "nsi-select nsi-filter-name", "aria-label": "Value" });
  const rangeInputs = h("span", { class: "nsi-range-inputs" }, filterMin, h("span", { class: "nsi-dash", text: "–" }), filterMax);
  const filterAdd = h("button", { class: "nsi-btn nsi-filter-add", type: "button", text: "filter" });
  const chips = h("span", { class: "nsi-chips" });
  const legendBox = h("span", { class: "nsi-legend-box" });
  const root = h("div", { class: "nsi-toolbars" },
    h("div", { class: "nsi-toolbar" },
      h("label", { class: "nsi-field" }, h("span", { class: "nsi-field-name", text: "layer" }), layerSelect),
      h("label", { class: "nsi-field" }, h("span", { class: "nsi-field-name", text: "sort" }), sortSelect, dirButton),
      showSelect,
      h("label", { class: "nsi-field nsi-unlabelled-field" }, unlabelled, h("span", { text: "unlabelled only" })),
      searchInput, zoomInput, progress, countLabel),
    h("div", { class: "nsi-toolbar nsi-filterbar" },
      h("span", { class: "nsi-field-name", text: "range" }), filterKey, rangeInputs, filterName, filterAdd, chips, legendBox));
  el.append(root);

  const setFilter = (key, lo, hi) => {
    const filters = { ...store.state.filters };
    delete filters[key];
    if (lo !== null || hi !== null) filters[key] = [lo, hi];
    store.propose({ filters });
  };

  function render() {
    const { state } = store;
    const layer = store.layer();
    fillSelect(layerSelect, store.data.info.layers || []);
    layerSelect.value = state.layer;
    const names = layer ? layer.names : [];
    fillSelect(sortSelect, ["unit", ...names], ["unit", ...names].map(prettyName));
    sortSelect.value = state.sort_by;
    setText(dirButton, state.descending ? "↓ desc" : "↑ asc");
    dirButton.setAttribute("aria-label", state.descending ? "descending" : "ascending");
    showSelect.value = state.show_units;
    unlabelled.checked = !!state.unlabelled_only;
    if (document.activeElement !== searchInput) searchInput.value = state.search || "";
    zoomInput.value = String(store.data.cellSize);
    fillSelect(filterKey, names, names.map(prettyName));
    const spec = layer && layer.columnLabels[filterKey.value];
    setStyle(rangeInputs, "display", spec ? "none" : "");
    setStyle(filterName, "display", spec ? "" : "none");
    if (spec) fillSelect(filterName, spec.names.map((_, k) => String(k)),
      spec.names.map((name, k) => (spec.groups[k] ? `${name} (${spec.groups[k]})` : name)));
    const n = layer ? layer.n : 0;
    const nSel = state.selection.length;
    setText(countLabel, `${store.order.length} of ${n} units` + (layer && layer.nDead ? ` · ${layer.nDead} dead` : "") +
      (nSel ? ` · ${nSel} selected` : ""));
    const labelled = Object.keys(store.annotations()).length;
    setStyle(progress, "display", store.data.editable || labelled ? "" : "none");
    setText(progressText, `${labelled} of ${n} labelled`);
    setStyle(progressFill, "width", `${n ? (100 * labelled) / n : 0}%`);
    const signature = JSON.stringify(state.filters);
    if (chips._nsiFilters !== signature + (layer ? layer.name : "")) {
      chips._nsiFilters = signature + (layer ? layer.name : "");
      clear(chips);
      for (const [key, [lo, hi]] of Object.entries(state.filters)) {
        const name = lo !== null && lo === hi ? categoryName(layer, key, lo) : null;
        const text = name !== null ? `${prettyName(key)} = ${name}`
          : `${prettyName(key)} ${lo === null ? "−∞" : fmt(lo, 4)} – ${hi === null ? "∞" : fmt(hi, 4)}`;
        chips.append(h("span", { class: "nsi-chip", dataset: { key } }, h("span", { text }),
          h("button", { class: "nsi-chip-x", type: "button", title: "Remove this filter", "aria-label": "Remove filter",
            text: "×", onclick: () => setFilter(key, null, null) })));
      }
    }
    if (legendBox._nsiLayer !== layer) {
      legendBox._nsiLayer = layer;
      legendBox.replaceChildren(...[barLegend(layer)].filter(Boolean));
    }
  }

  layerSelect.addEventListener("change", () => store.propose({ layer: layerSelect.value }));
  sortSelect.addEventListener("change", () => store.propose({ sort_by: sortSelect.value }));
  dirButton.addEventListener("click", () => store.propose({ descending: !store.state.descending }));
  showSelect.addEventListener("change", () => store.propose({ show_units: showSelect.value }));
  unlabelled.addEventListener("change", () => store.propose({ unlabelled_only: unlabelled.checked }));
  let searchTimer = 0;
  searchInput.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => store.propose({ search: searchInput.value }), 120);
  });
  zoomInput.addEventListener("input", () => {
    store.data.cellSize = Number(zoomInput.value);
    store.setUi({ zoom: store.data.cellSize });
  });
  const numberOrNull = (input) => (input.value.trim() === "" || Number.isNaN(Number(input.value)) ? null : Number(input.value));
  filterKey.addEventListener("change", render);
  filterAdd.addEventListener("click", () => {
    if (!filterKey.value) return;
    const layer = store.layer();
    if (layer && layer.columnLabels[filterKey.value]) {
      const code = Number(filterName.value);
      if (Number.isFinite(code)) setFilter(filterKey.value, code, code);
      return;
    }
    let lo = numberOrNull(filterMin);
    let hi = numberOrNull(filterMax);
    if (lo !== null && hi !== null && lo > hi) [lo, hi] = [hi, lo];
    setFilter(filterKey.value, lo, hi);
  });
  for (const input of [filterMin, filterMax]) input.addEventListener("keydown", (e) => { if (e.key === "Enter") filterAdd.click(); });
  // typing in the toolbar must not trigger notebook shortcuts
  root.addEventListener("keydown", (e) => e.stopPropagation());

  const unsubscribe = store.subscribe(() => render());
  render();
  return { destroy() { unsubscribe(); clearTimeout(searchTimer); root.remove(); } };
}
