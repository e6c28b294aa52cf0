// DOM and data helpers shared by the views.
//
// Safety rule of this code base: text that comes from data (layer and class names, annotation
// labels, notes, tags) only ever reaches the page through textContent, text nodes or
// setAttribute on inert attributes; no HTML string is ever parsed (tests/test_widgets.py checks).

const SVG_NS = "http://www.w3.org/2000/svg";

function applyProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "style") Object.assign(el.style, value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key.startsWith("on")) throw new Error(`refusing inline handler attribute ${key}`);
    else if (key === "value" || key === "checked" || key === "disabled") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Create an HTML element: h("div", {class: "x", text: "hi"}, child, ...). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  appendChildren(el, children);
  return el;
}

/** Create an SVG element. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  applyProps(el, props);
  appendChildren(el, children);
  return el;
}

/** Set an element's text only when it changes (an equal assignment still relayouts). */
export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** Set one inline style property only when it changes. */
export function setStyle(el, name, value) {
  if (el.style[name] !== value) el.style[name] = value;
}

/** Remove every child of el. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Bytes from an anywidget bytes trait (DataView), an ArrayBuffer or a typed array. */
export function toU8(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(0);
}

/** Little-endian float32 values from a bytes trait (copied when the view is unaligned). */
export function toF32(value) {
  const u8 = toU8(value);
  const n = u8.byteLength >> 2;
  if (u8.byteOffset % 4 === 0) return new Float32Array(u8.buffer, u8.byteOffset, n);
  return new Float32Array(u8.slice(0, n * 4).buffer);
}

/** A PNG blob from a bytes trait, or null when empty. */
export function pngBlob(value) {
  const u8 = toU8(value);
  return u8.byteLength ? new Blob([u8], { type: "image/png" }) : null;
}

/** Decode a PNG bytes trait to an ImageBitmap (null when empty). */
export async function decodeBitmap(value) {
  const blob = pngBlob(value);
  return blob ? createImageBitmap(blob) : null;
}

/** Compact, readable number: 3 significant digits, "—" for NaN/null. */
export function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const a = Math.abs(value);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return value.toExponential(1);
  if (a >= 100) return value.toFixed(0);
  if (a >= 10) return value.toFixed(1);
  return value.toFixed(Math.max(0, digits - 1));
}

/**
 * About `count` round tick values covering [lo, hi], and the decimals that tell them apart:
 * an axis over [0.9, 1] reads 0.90 0.92 ... 1.00, never 0.9 0.9 0.9.
 */
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return { ticks: [lo], decimals: 2 };
  const raw = (hi - lo) / Math.max(1, count);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || 10 * power;
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9) + (step / power === 2.5 ? 1 : 0)));
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toFixed(decimals + 2)));
  return { ticks, decimals };
}

/** Percentage with one decimal. */
export function pct(value) {
  return `${(100 * value).toFixed(value >= 0.995 || value === 0 ? 0 : 1)}%`;
}

/** "color_selectivity" -> "color selectivity". */
export function prettyName(name) {
  return String(name).replace(/_/g, " ");
}

/** Listen to model events; returns a function removing every listener added. */
export function listen(model, table) {
  const added = [];
  for (const [events, callback] of table) {
    for (const event of events.split(/\s+/).filter(Boolean)) {
      model.on(event, callback);
      added.push([event, callback]);
    }
  }
  return () => {
    for (const [event, callback] of added) model.off(event, callback);
  };
}

/** Coalesce many synchronous model changes into one update per microtask. */
export function scheduler(fn) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    queueMicrotask(() => {
      pending = false;
      fn();
    });
  };
}

/** A <select> whose options are plain text. */
export function fillSelect(select, values, labels) {
  const signature = JSON.stringify([values, labels || null]);
  if (select._nsiOptions === signature) return; // unchanged: keep the DOM as is
  select._nsiOptions = signature;
  const current = select.value;
  clear(select);
  values.forEach((value, i) => {
    select.append(h("option", { value: String(value), text: labels ? labels[i] : String(value) }));
  });
  if (values.map(String).includes(current)) select.value = current;
}
