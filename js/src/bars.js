// Small charts drawn with plain DOM/SVG: class-frequency bars and a sparkline.
import { clear, h, pct, s } from "./util.js";

function barRow(name, value, max, extraClass, title) {
  const width = max > 0 ? Math.max(0, Math.min(100, (100 * value) / max)) : 0;
  return h("div", { class: `nsi-bar-row ${extraClass || ""}`, title: title || `${name}: ${pct(value)}` },
    h("span", { class: "nsi-bar-name", text: name }),
    h("span", { class: "nsi-bar-track" }, h("span", { class: "nsi-bar-fill", style: { width: `${width}%` } })),
    h("span", { class: "nsi-bar-value", text: pct(value) }));
}

/**
 * Class-frequency bars of one unit (js/src/classes.js:classBars, as _data.py:class_bars).
 * Grouped by parent class when `bars.groups` is present and `grouped` is true.
 */
export function renderClassBars(container, bars, { grouped = true, limit = Infinity } = {}) {
  clear(container);
  container.classList.add("nsi-bars");
  if (!bars || bars.dead) {
    container.append(h("div", { class: "nsi-muted", text: "Dead unit: no class frequencies." }));
    return;
  }
  if (!bars.n_labelled) {
    container.append(h("div", { class: "nsi-muted", text: "No labelled top images." }));
    return;
  }
  const classes = (bars.classes || []).slice(0, limit);
  if (!classes.length) {
    container.append(h("div", { class: "nsi-muted", text: "All labelled top images have zero weight." }));
    return;
  }
  if (grouped && bars.groups && bars.groups.length) {
    const max = Math.max(...bars.groups.map((g) => g.value), 1e-12);
    for (const group of bars.groups) {
      const path = group.path && group.path.length ? ` ‹ ${group.path.join(" ‹ ")}` : "";
      container.append(barRow(`${group.name}${path}`, group.value, max, "nsi-bar-group",
        `${group.name}: ${pct(group.value)} over ${group.n_classes} classes`));
      for (const c of group.classes) container.append(barRow(c.name, c.value, max, "nsi-bar-child"));
      if (group.n_classes > group.classes.length) {
        container.append(h("div", { class: "nsi-bar-more", text: `+ ${group.n_classes - group.classes.length} more` }));
      }
    }
  } else {
    const max = Math.max(...classes.map((c) => c.value), 1e-12);
    for (const c of classes) container.append(barRow(c.name, c.value, max, ""));
  }
  const hidden = (bars.n_classes_hit || 0) - classes.length;
  if (!grouped && hidden > 0) container.append(h("div", { class: "nsi-bar-more", text: `+ ${hidden} more classes` }));
}

/** Top-N activation profile; grey activations dashed when given. */
export function renderSparkline(container, activations, gray, { width = 260, height = 56 } = {}) {
  clear(container);
  const n = activations.length;
  if (!n) return;
  const all = [...activations, ...(gray || [])].filter(Number.isFinite);
  const ymax = Math.max(1e-9, ...all);
  const ymin = Math.min(0, ...all);
  const px = (i) => 4 + (i / Math.max(1, n - 1)) * (width - 8);
  const py = (v) => 4 + (1 - (v - ymin) / (ymax - ymin || 1)) * (height - 8);
  const path = (arr) => Array.from(arr).map((v, i) => `${i ? "L" : "M"}${px(i).toFixed(1)},${py(Number.isFinite(v) ? v : 0).toFixed(1)}`).join("");
  const svg = s("svg", { class: "nsi-spark", viewBox: `0 0 ${width} ${height}`, width: "100%", height: String(height),
    role: "img", "aria-label": "top activations by rank" });
  svg.append(s("line", { class: "nsi-axis", x1: 4, x2: width - 4, y1: py(0), y2: py(0) }));
  svg.append(s("path", { class: "nsi-spark-a", d: path(activations) }, s("title", { text: "activation by rank" })));
  if (gray && gray.length === n) svg.append(s("path", { class: "nsi-spark-g", d: path(gray) }, s("title", { text: "grey-crop activation by rank" })));
  container.append(svg);
}
