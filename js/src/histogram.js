// Histograms of per-unit indexes, drawn in SVG: the Explorer's two charts (an index over every
// layer; the class index of the layer shown). Dragging selects a range, a click selects one bar,
// a double-click clears; the filter's range is drawn as a band and the unit shown as a marker.
// Axes fit the data (class selectivity often lives in [0.9, 1]).
import { clear, fmt, h, niceTicks, prettyName, s } from "./util.js";

export const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#F0E442"];

/** Bin edges over the finite values of several arrays: `bins` equal bins from min to max. */
export function fitEdges(arrays, bins) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const values of arrays) for (const v of values) if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (!(hi >= lo)) { lo = 0; hi = 1; }
  if (lo === hi) { lo -= 0.5; hi += 0.5; }
  const edges = new Float64Array(bins + 1);
  for (let i = 0; i <= bins; i++) edges[i] = lo + ((hi - lo) * i) / bins;
  edges[bins] = hi;
  return edges;
}

/** Counts of finite values per bin (half-open bins, the last one closed, as NumPy). */
export function binCounts(values, edges) {
  const nb = edges.length - 1;
  const counts = new Array(nb).fill(0);
  const lo = edges[0];
  const hi = edges[nb];
  for (const v of values) {
    if (!Number.isFinite(v) || v < lo || v > hi) continue;
    let b = Math.floor(((v - lo) / (hi - lo)) * nb);
    if (b >= nb) b = nb - 1;
    while (b > 0 && v < edges[b]) b--;
    while (b < nb - 1 && v >= edges[b + 1]) b++;
    counts[b]++;
  }
  return counts;
}

/** Alive units' finite values of one column of a decoded layer. */
export function aliveValues(layer, score) {
  const values = layer && layer.scores[score];
  if (!values) return null;
  const out = [];
  for (let u = 0; u < layer.n; u++) if (!layer.dead[u] && Number.isFinite(values[u])) out.push(values[u]);
  return out;
}

/**
 * Draw one histogram into `container`.
 * series: [{name, counts, color, total, faded}] sharing `edges`; y is the share of `total` in %.
 */
export function drawHistogram(container, { edges, series, xLabel = "", width = 520, height = 150, band = null,
  marker = null, onBrush = null, onBar = null, onClear = null }) {
  clear(container);
  const margin = { l: 38, r: 10, t: 8, b: 30 };
  const W = Math.max(160, width);
  const H = height;
  const iw = W - margin.l - margin.r;
  const ih = H - margin.t - margin.b;
  const nb = edges.length - 1;
  const lo = edges[0];
  const hi = edges[nb];
  const x = (v) => margin.l + ((v - lo) / (hi - lo || 1)) * iw;
  const inv = (px) => lo + ((px - margin.l) / iw) * (hi - lo);
  const values = series.map((sr) => sr.counts.map((c) => (100 * c) / Math.max(sr.total || 1, 1)));
  const ymax = Math.max(1e-9, ...values.flat());
  const y = (v) => margin.t + ih - (v / ymax) * ih;
  const svg = s("svg", { class: "nsi-hist", viewBox: `0 0 ${W} ${H}`, width: String(W), height: String(H), role: "img",
    "aria-label": xLabel ? `histogram of ${xLabel}` : "histogram" });
  const bandRect = s("rect", { class: "nsi-hist-sel", x: 0, y: margin.t, width: 0, height: ih, visibility: "hidden" });
  svg.append(bandRect);
  svg.append(s("line", { class: "nsi-axis", x1: margin.l, x2: margin.l + iw, y1: margin.t + ih, y2: margin.t + ih }));
  const { ticks, decimals } = niceTicks(lo, hi, Math.max(2, Math.floor(iw / 70)));
  for (const v of ticks) {
    svg.append(s("line", { class: "nsi-axis", x1: x(v), x2: x(v), y1: margin.t + ih, y2: margin.t + ih + 3 }));
    svg.append(s("text", { class: "nsi-tick", x: x(v), y: margin.t + ih + 13, "text-anchor": "middle", text: v.toFixed(decimals) }));
  }
  const yt = niceTicks(0, ymax, 2);
  for (const v of yt.ticks) {
    svg.append(s("line", { class: "nsi-gridline", x1: margin.l, x2: margin.l + iw, y1: y(v), y2: y(v) }));
    svg.append(s("text", { class: "nsi-tick", x: margin.l - 4, y: y(v) + 3, "text-anchor": "end", text: `${v.toFixed(yt.decimals)}%` }));
  }
  if (xLabel) svg.append(s("text", { class: "nsi-axis-label", x: margin.l + iw / 2, y: H - 3, "text-anchor": "middle", text: xLabel }));
  const k = series.length;
  for (let b = 0; b < nb; b++) {
    const x0 = x(edges[b]);
    const x1 = x(edges[b + 1]);
    const bw = Math.max(1, (x1 - x0 - 1) / k);
    series.forEach((sr, j) => {
      const v = values[j][b];
      svg.append(s("rect", {
        class: `nsi-hist-bar${sr.faded ? " nsi-faded" : ""}`, x: x0 + 0.5 + j * bw, y: y(v), width: bw,
        height: Math.max(0, margin.t + ih - y(v)), style: { fill: sr.color || "currentColor" },
        dataset: { bin: String(b), series: String(j), layer: sr.name || "" },
      }, s("title", { text: `${sr.name ? `${sr.name}: ` : ""}[${fmt(edges[b], 4)}, ${fmt(edges[b + 1], 4)}] ${sr.counts[b]} units (${v.toFixed(1)}%)` })));
    });
  }
  if (marker && Number.isFinite(marker.value)) {
    const mx = x(Math.max(lo, Math.min(hi, marker.value)));
    svg.append(s("line", { class: "nsi-hist-marker", x1: mx, x2: mx, y1: margin.t, y2: margin.t + ih },
      s("title", { text: marker.label })));
    svg.append(s("path", { class: "nsi-hist-marker-head", d: `M${mx - 4},${margin.t - 1}L${mx + 4},${margin.t - 1}L${mx},${margin.t + 5}Z` },
      s("title", { text: marker.label })));
  }
  container.append(svg);

  function showBand(range) {
    if (!range) { bandRect.setAttribute("visibility", "hidden"); return; }
    const a = range[0] === null || range[0] === undefined ? lo : Math.max(lo, range[0]);
    const bnd = range[1] === null || range[1] === undefined ? hi : Math.min(hi, range[1]);
    bandRect.setAttribute("x", String(x(a)));
    bandRect.setAttribute("width", String(Math.max(1.5, x(bnd) - x(a))));
    bandRect.setAttribute("visibility", "visible");
  }
  showBand(band);
  if (!onBrush && !onBar) return;

  svg.classList.add("nsi-hist-selectable");
  const toLocal = (e) => {
    const r = svg.getBoundingClientRect();
    return ((e.clientX - r.left) / r.width) * W;
  };
  let start = null;
  svg.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    start = toLocal(e);
    svg.setPointerCapture(e.pointerId);
  });
  svg.addEventListener("pointermove", (e) => {
    if (start === null) return;
    const now = toLocal(e);
    if (Math.abs(now - start) >= 3) showBand([inv(Math.min(start, now)), inv(Math.max(start, now))]);
  });
  svg.addEventListener("pointerup", (e) => {
    if (start === null) return;
    const end = toLocal(e);
    const a = Math.min(start, end);
    const b = Math.max(start, end);
    start = null;
    if (b - a < 3) {
      const v = inv(a);
      if (v < lo || v > hi) return;
      const bin = Math.min(nb - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * nb)));
      const within = (a - x(edges[bin])) / Math.max(1e-9, x(edges[bin + 1]) - x(edges[bin]));
      const j = Math.min(k - 1, Math.max(0, Math.floor(within * k)));
      if (onBar) onBar({ bin, series: j, range: [edges[bin], edges[bin + 1]] });
    } else if (onBrush) {
      onBrush([Math.max(lo, inv(a)), Math.min(hi, inv(b))]);
    }
  });
  svg.addEventListener("dblclick", () => { if (onClear) onClear(); });
}

/** A legend of the series (layer names, dead counts). */
export function legend(series, current) {
  return h("div", { class: "nsi-legend" }, ...series.map((sr) => h("span", {
    class: `nsi-legend-item${sr.name === current ? " nsi-current" : ""}`, dataset: { layer: sr.name },
  }, h("span", { class: "nsi-swatch", style: { background: sr.color } }),
  h("span", { text: sr.name + (sr.nDead ? ` (${sr.nDead} dead)` : "") }))));
}

export { prettyName };
