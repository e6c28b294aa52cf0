// Filter and sort rules of the grid. The Python side (nsi_widgets/widgets/_data.py,
// display_order) applies the same rules and mirrors the order; the browser computes it so that
// sorting and filtering respond without a kernel round trip.

/** Lower-cased text searched for one unit: label, note and tags joined by spaces. */
export function annotationText(annotation) {
  if (!annotation) return "";
  const parts = [annotation.label || "", annotation.note || "", ...(annotation.tags || [])];
  return parts.map(String).join(" ").toLowerCase();
}

/**
 * Unit ids in display order.
 *
 * - show: "all" | "alive" | "dead"
 * - filters: {score: [lo|null, hi|null]} keeps finite values with lo <= v <= hi
 * - search: every whitespace-separated term must occur in the unit's annotation text
 * - unlabelledOnly: keeps the units without an annotation (no key in `annotations`)
 * - sortBy "unit": by id (reversed when descending); any score: alive units with a finite
 *   value sorted by it (ties: smaller id first), then the rest (NaN or dead) by id.
 */
export function computeOrder({ n, scores, dead, sortBy, descending, filters, show, search, annotations,
  unlabelledOnly = false }) {
  const keep = new Uint8Array(n).fill(1);
  if (unlabelledOnly && annotations) {
    for (const key of Object.keys(annotations)) {
      const u = Number(key);
      if (u >= 0 && u < n) keep[u] = 0;
    }
  }
  if (show === "alive" || show === "dead") {
    const want = show === "dead" ? 1 : 0;
    for (let u = 0; u < n; u++) if ((dead[u] ? 1 : 0) !== want) keep[u] = 0;
  }
  for (const [key, bounds] of Object.entries(filters || {})) {
    const values = scores[key];
    if (!values || !bounds) continue;
    const [lo, hi] = bounds;
    for (let u = 0; u < n; u++) {
      if (!keep[u]) continue;
      const v = values[u];
      if (!Number.isFinite(v) || (lo !== null && lo !== undefined && v < lo) ||
          (hi !== null && hi !== undefined && v > hi)) keep[u] = 0;
    }
  }
  const terms = String(search || "").toLowerCase().split(/\s+/).filter(Boolean);
  if (terms.length) {
    for (let u = 0; u < n; u++) {
      if (!keep[u]) continue;
      const text = annotationText(annotations && annotations[String(u)]);
      if (!terms.every((t) => text.includes(t))) keep[u] = 0;
    }
  }
  let count = 0;
  for (let u = 0; u < n; u++) count += keep[u];
  const units = new Int32Array(count);
  for (let u = 0, k = 0; u < n; u++) if (keep[u]) units[k++] = u;

  if (sortBy === "unit" || !scores[sortBy]) return descending ? units.reverse() : units;
  const values = scores[sortBy];
  const ranked = [];
  const rest = [];
  for (const u of units) {
    if (Number.isFinite(values[u]) && !dead[u]) ranked.push(u);
    else rest.push(u);
  }
  const sign = descending ? -1 : 1;
  ranked.sort((a, b) => sign * (values[a] - values[b]) || a - b);
  const out = new Int32Array(count);
  out.set(ranked, 0);
  out.set(rest, ranked.length);
  return out;
}
