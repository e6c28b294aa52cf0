// One layer's data as the front end holds it (nsi_widgets/widgets/_data.py:layer_payload),
// decoded once per payload: typed arrays over the binary buffers, the thumbnail sheet as one
// ImageBitmap shared by every view.
import { decodeBitmap, toU8 } from "./util.js";
import { shapeOf, typed } from "./wire.js";

const decoded = new WeakMap();
const bitmaps = new Map(); // signature of the PNG bytes -> Promise<ImageBitmap|null>

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
    unitActs: (u) => (acts && topN ? acts.subarray(u * topN, (u + 1) * topN) : new Float32Array(0)),
    unitLabels: (u) => (labels && topN ? labels.subarray(u * topN, (u + 1) * topN) : new Int16Array(0)),
    bitmap: null,
  };
  decoded.set(raw, layer);
  return layer;
}

/** The layer's thumbnail sheet as an ImageBitmap, decoded once (null without thumbnails). */
export function thumbBitmap(layer) {
  if (!layer || !layer.T || !toU8(layer.thumbs).byteLength) return Promise.resolve(null);
  const key = signature(layer.name, layer.thumbs);
  if (!bitmaps.has(key)) {
    bitmaps.set(key, decodeBitmap(layer.thumbs).catch((err) => {
      console.error("nsi-widgets: could not decode the thumbnails", err);
      return null;
    }));
  }
  return bitmaps.get(key).then((bm) => { layer.bitmap = bm; return bm; });
}

/** Draw unit `u`'s thumbnail into a canvas (sized to the tile); false without a bitmap. */
export function drawThumb(canvas, layer, u) {
  const bm = layer && layer.bitmap;
  const T = layer ? layer.T : 0;
  if (!bm || !T) return false;
  if (canvas.width !== T) { canvas.width = T; canvas.height = T; }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, T, T);
  ctx.drawImage(bm, (u % layer.cols) * T, Math.floor(u / layer.cols) * T, T, T, 0, 0, T, T);
  return true;
}
