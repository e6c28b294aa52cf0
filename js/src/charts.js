// The Explorer's two histograms, linked through the store:
// - an index over every layer (colour selectivity by default): a drag filters the grid's layer by
//   that index, a bar of another layer switches to that layer with that bin as the filter;
// - the class index of the layer shown, its axis fitted to the data.
// Both draw the store's filter on their index as a band and mark the unit shown.
import { fmt, h, prettyName } from "./util.js";
import { PALETTE, aliveValues, binCounts, drawHistogram, fitEdges, legend } from "./histogram.js";

function layerSeries(store, score, layers, bins) {
  const arrays = layers.map((name) => aliveValues(store.layer(name), score) || []);
  const edges = fitEdges(arrays, bins);
  const series = layers.map((name, k) => ({
    name, color: PALETTE[k % PALETTE.length], counts: binCounts(arrays[k], edges), total: arrays[k].length,
    nDead: store.layer(name).nDead,
  }));
  return { edges, series };
}

function chartBox(title, caption) {
  const plot = h("div", { class: "nsi-chart-plot" });
  const head = h("div", { class: "nsi-chart-head" }, h("span", { class: "nsi-chart-title", text: title }),
    h("span", { class: "nsi-caption", text: caption }));
  const legendBox = h("div", { class: "nsi-chart-legend" });
  const box = h("div", { class: "nsi-chart" }, head, legendBox, plot);
  return { box, plot, head, legendBox, titleEl: head.firstChild };
}

export function mountCharts(store, el) {
  const info = store.data.info;
  const bins = info.bins || 20;
  const all = chartBox("", "drag to filter · click a bar · double-click clears");
  const cls = chartBox("", "drag to filter · double-click clears");
  all.box.classList.add("nsi-chart-all");
  cls.box.classList.add("nsi-chart-layer");
  const root = h("div", { class: "nsi-charts" }, all.box, cls.box);
  el.append(root);
  let cache = { key: null };
  let frame = 0;

  function scoreLayers(score) {
    return (info.layers || []).filter((name) => store.layer(name) && store.layer(name).scores[score]);
  }

  function setFilter(score, range) {
    const filters = { ...store.state.filters };
    delete filters[score];
    if (range) filters[score] = [range[0], range[1]];
    return filters;
  }

  function markerOf(score) {
    const { unit, layer } = store.state;
    const data = store.layer();
    if (unit === null || !data || !data.scores[score]) return null;
    const v = data.scores[score][unit];
    return Number.isFinite(v) ? { value: v, label: `${layer} unit ${unit}: ${fmt(v, 4)}` } : null;
  }

  function render() {
    frame = 0;
    const { layer, filters } = store.state;
    const score = store.ui.histScore || info.histogram_score || "color_selectivity";
    const layers = scoreLayers(score);
    if (cache.key !== `${score}\u0000${layers.join("\u0000")}` || cache.layersRef !== store.data.layers) {
      cache = { key: `${score}\u0000${layers.join("\u0000")}`, layersRef: store.data.layers,
        ...(layers.length ? layerSeries(store, score, layers, bins) : { edges: null, series: [] }) };
    }
    all.box.style.display = layers.length ? "" : "none";
    all.titleEl.textContent = `${prettyName(score)} · every layer`;
    const width = (w) => Math.max(200, Math.floor(w.clientWidth || 420));
    if (layers.length) {
      const series = cache.series.map((sr) => ({ ...sr, faded: sr.name !== layer }));
      all.legendBox.replaceChildren(legend(series, layer));
      drawHistogram(all.plot, {
        edges: cache.edges, series, xLabel: prettyName(score), width: width(all.box), height: 132,
        band: layers.includes(layer) ? filters[score] || null : null, marker: markerOf(score),
        onBrush: (range) => { if (layers.includes(layer)) store.propose({ filters: setFilter(score, range) }); },
        onBar: ({ series: j, range }) => {
          const target = layers[j];
          store.propose({ layer: target, filters: setFilter(score, range) });
        },
        onClear: () => store.propose({ filters: setFilter(score, null) }),
      });
    }
    const cscore = info.class_score || "class_selectivity";
    const data = store.layer();
    const values = aliveValues(data, cscore);
    cls.box.style.display = values ? "" : "none";
    cls.titleEl.textContent = `${prettyName(cscore)} · ${layer}`;
    if (values) {
      const edges = fitEdges([values], bins);
      const counts = binCounts(values, edges);
      cls.legendBox.replaceChildren(h("span", { class: "nsi-caption",
        text: `${values.length} units with a value${data.nDead ? ` · ${data.nDead} dead` : ""}` }));
      drawHistogram(cls.plot, {
        edges, series: [{ name: layer, counts, total: values.length, color: "var(--nsi-accent)" }],
        xLabel: prettyName(cscore), width: width(cls.box), height: 132, band: filters[cscore] || null,
        marker: markerOf(cscore),
        onBrush: (range) => store.propose({ filters: setFilter(cscore, range) }),
        onBar: ({ range }) => store.propose({ filters: setFilter(cscore, range) }),
        onClear: () => store.propose({ filters: setFilter(cscore, null) }),
      });
    }
  }

  const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };
  const unsubscribe = store.subscribe((changed) => {
    if (["layer", "unit", "filters", "layers", "ui.histScore"].some((k) => changed.has(k))) render();
  });
  let lastWidth = 0;
  const observer = new ResizeObserver(() => {
    const w = root.clientWidth;
    if (w !== lastWidth) { lastWidth = w; schedule(); }
  });
  observer.observe(root);
  render();
  return {
    destroy() {
      unsubscribe();
      observer.disconnect();
      if (frame) cancelAnimationFrame(frame);
      root.remove();
    },
  };
}

/** The single-view ClassSelectivityChart: a unit's class bars above the layer's class histogram. */
export function classHistogram(store, el, { height = 150 } = {}) {
  const info = store.data.info;
  const cscore = info.class_score || "class_selectivity";
  const plot = h("div", { class: "nsi-chart-plot" });
  const caption = h("div", { class: "nsi-caption" });
  const box = h("div", { class: "nsi-chart nsi-chart-layer" }, caption, plot);
  el.append(box);
  function render() {
    const data = store.layer();
    const values = aliveValues(data, cscore);
    if (!values) {
      caption.textContent = `This layer has no ${prettyName(cscore)} index.`;
      plot.replaceChildren();
      return;
    }
    const edges = fitEdges([values], info.bins || 20);
    let sum = 0;
    for (const v of values) sum += v;
    caption.textContent = `${data.n} units · mean ${fmt(values.length ? sum / values.length : NaN)}` +
      (data.nDead ? ` · ${data.nDead} dead` : "");
    const { unit, layer } = store.state;
    const v = unit !== null ? data.scores[cscore][unit] : NaN;
    drawHistogram(plot, {
      edges, series: [{ name: layer, counts: binCounts(values, edges), total: values.length, color: "var(--nsi-accent)" }],
      xLabel: prettyName(cscore), width: Math.max(240, box.clientWidth || 420), height,
      marker: Number.isFinite(v) ? { value: v, label: `unit ${unit}: ${fmt(v, 4)}` } : null,
    });
  }
  const unsubscribe = store.subscribe((changed) => { if (changed.has("layer") || changed.has("unit") || changed.has("layers")) render(); });
  render();
  return { destroy() { unsubscribe(); box.remove(); } };
}
