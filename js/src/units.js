// Per-unit payloads of the card's views (nsi_widgets/widgets/views.py), asked for once and kept:
// the kernel answers {type: "unit", layer, unit, views}; the exported page answers from its table.
const MAX_ENTRIES = 600;
const RETRY_MS = 8000;

export function createUnitCache(kernel) {
  const cache = new Map(); // "layer\u0000unit" -> views (insertion order = age)
  const asked = new Map(); // key -> time asked
  const listeners = new Set();
  const key = (layer, unit) => `${layer}\u0000${unit}`;

  const off = kernel.on("unit", (msg) => {
    const k = key(msg.layer, msg.unit);
    cache.delete(k);
    cache.set(k, msg.views || {});
    asked.delete(k);
    while (cache.size > MAX_ENTRIES) cache.delete(cache.keys().next().value);
    for (const fn of listeners) fn(msg.layer, msg.unit);
  });

  return {
    get(layer, unit) {
      return cache.get(key(layer, unit));
    },
    /** Ask for the units not held yet (at most once per RETRY_MS each). */
    ensure(layer, units) {
      const now = performance.now();
      const missing = [];
      for (const unit of units) {
        if (unit === null || unit === undefined) continue;
        const k = key(layer, unit);
        if (cache.has(k) || (asked.has(k) && now - asked.get(k) < RETRY_MS)) continue;
        asked.set(k, now);
        missing.push(unit);
      }
      if (missing.length) kernel.request("unit", { layer, units: missing }, { reply: false }).catch(() => {});
    },
    onUpdate(fn) { listeners.add(fn); return () => listeners.delete(fn); },
    destroy() { off(); listeners.clear(); cache.clear(); },
  };
}
