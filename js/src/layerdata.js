// One layer's data as the front end holds it (nsi_widgets/widgets/_data.py:layer_payload),
// decoded once per payload: typed arrays over the binary buffers, the thumbnail sheet as one
// decoded image shared by every view.
import { fmt, pngBlob, toU8 } from "./util.js";
import { shapeOf, typed } from "./wire.js";

const decoded = new WeakMap();
const sheets = new Map(); // signature of the PNG bytes -> Promise<{url, img}|null>

export const BAR_COLORS = ["var(--nsi-accent)", "#E69F00", "#009E73", "#CC79A7"];

function signature(name, bytes) {
  const u8 = toU8(bytes);
  let hash = u8.byteLength;
  const step = Math.max(1, Math.floor(u8.byteLength / 64));
  for (let i = 0; i < u8.byteLength; i += step) hash = (hash * 31 + u8[i]) | 0;
  return `${name}\u0000${u8.byteLength}\u0000${hash}`;
}

export function decodeLayer(raw) {
  if (!raw) return null;
  if (decoded.has(raw)) return decoded.get(raw);
  const n = raw.n_units || 0;
  const names = raw.score_names || [];
  const table = typed(raw.scores);
  const scores = {};
  names.forEach((name, k) => {
    scores[name] = table.length >= (k + 1) * n ? table.subarray(k * n, (k + 1) * n) : new Float32Array(n).fill(NaN);
  });
  const dead = raw.dead ? typed(raw.dead) : new Uint8Array(n);
  let nDead = 0;
  for (let u = 0; u < n; u++) nDead += dead[u] ? 1 : 0;
  const acts = raw.top_activations ? typed(raw.top_activations) : null;
  const labels = raw.top_labels ? typed(raw.top_labels) : null;
  const topN = raw.top_activations ? shapeOf(raw.top_activations)[1] || 0 : raw.top_n || 0;
  const barNames = (raw.bar_names || []).filter((name) => scores[name]);
  const ranges = {};
  for (const name of barNames) {
    let lo = 0;
    let hi = 0;
    for (const v of scores[name]) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (hi <= 1 && lo >= -1) hi = 1; // an index in [0, 1] keeps its absolute scale
    ranges[name] = [lo, hi > lo ? hi : lo + 1];
  }
  const layer = {
    name: raw.name, n, names, scores, dead, nDead, acts, labels, topN, barNames, ranges,
    thumbs: raw.thumbs, T: raw.thumb_size || 0, cols: raw.sprite_cols || 0, rf: raw.receptive_field || {},
    // categorical columns ({column: {names, groups}}: codes into names) and the views' layer payloads
    columnLabels: raw.column_labels || {}, views: raw.views || {},
    unitActs: (u) => (acts && topN ? acts.subarray(u * topN, (u + 1) * topN) : new Float32Array(0)),
    unitLabels: (u) => (labels && topN ? labels.subarray(u * topN, (u + 1) * topN) : new Int16Array(0)),
    sheet: null,
  };
  decoded.set(raw, layer);
  return layer;
}

/**
 * The layer's thumbnail sheet, decoded once: a blob: URL that every thumbnail shows part of as
 * its CSS background (one decoded image for the whole grid; no canvas per cell). Resolves to the
 * URL once the image is decoded, or null without thumbnails.
 */
export function thumbSheet(layer) {
  if (!layer || !layer.T || !toU8(layer.thumbs).byteLength) return Promise.resolve(null);
  const key = signature(layer.name, layer.thumbs);
  if (!sheets.has(key)) {
    const blob = pngBlob(layer.thumbs);
    const url = URL.createObjectURL(blob);
    const img = new Image();
    img.src = url;
    sheets.set(key, img.decode().then(() => ({ url, img }), (err) => {
      console.error("nsi-widgets: could not decode the thumbnails", err);
      return null;
    }));
  }
  return sheets.get(key).then((sheet) => {
    layer.sheet = sheet;
    return sheet ? sheet.url : null;
  });
}

/** Show unit `u`'s thumbnail in `el` at `size` CSS pixels (false before the sheet is decoded). */
export function showThumb(el, layer, u, size) {
  const sheet = layer && layer.sheet;
  if (!sheet || !layer.T) {
    el.style.backgroundImage = "";
    return false;
  }
  const rows = Math.ceil(layer.n / layer.cols);
  el.style.backgroundImage = `url("${sheet.url}")`;
  el.style.backgroundSize = `${layer.cols * size}px ${rows * size}px`;
  el.style.backgroundPosition = `${-(u % layer.cols) * size}px ${-Math.floor(u / layer.cols) * size}px`;
  return true;
}

/** The name a categorical column's value stands for (null when the column is numeric or the value is none). */
export function categoryName(layer, column, value) {
  const spec = layer && layer.columnLabels[column];
  if (!spec || !Number.isFinite(value) || value < 0) return null;
  return spec.names[Math.round(value)] ?? null;
}

/** A column's value as text: the name for a categorical column ("—" for none), else the number. */
export function columnText(layer, column, unit, digits = 3) {
  const value = layer.scores[column] ? layer.scores[column][unit] : NaN;
  if (layer.columnLabels[column]) return categoryName(layer, column, value) ?? "—";
  return fmt(value, digits);
}

/**
 * What a grid cell shows for `column`: its text, followed, for a number of an attachment that has a
 * categorical column too ("dissection.best_iou" beside "dissection.best_concept"), by that name.
 */
export function cellText(layer, column, unit) {
  const text = columnText(layer, column, unit);
  if (layer.columnLabels[column] || !column.includes(".")) return text;
  const prefix = column.slice(0, column.lastIndexOf(".") + 1);
  const sibling = Object.keys(layer.columnLabels).find((name) => name.startsWith(prefix));
  const name = sibling ? categoryName(layer, sibling, layer.scores[sibling][unit]) : null;
  return name ? `${text} ${name}` : text;
}
