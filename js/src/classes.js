// A unit's class frequencies from the layer's top-N labels and activations, the same definition as
// nsi_widgets/index/selectivity.py:class_frequencies and the same bars as
// nsi_widgets/widgets/_data.py:class_bars (tests/test_widgets.py compares them under node).

/** f_c = sum_{c(j)=c} w_j / sum_j w_j with w_j = max(a_j, 0) / a_1 (unlabelled: -1, in neither sum). */
export function classFrequencies(labels, acts, nClasses) {
  const out = new Float64Array(nClasses);
  const first = Math.max(acts.length ? acts[0] : 0, 0);
  if (!(first > 0)) return out;
  for (let j = 0; j < labels.length; j++) {
    const c = labels[j];
    if (c < 0 || c >= nClasses) continue;
    out[c] += Math.max(acts[j], 0) / first;
  }
  let total = 0;
  for (let c = 0; c < nClasses; c++) total += out[c];
  if (total > 0) for (let c = 0; c < nClasses; c++) out[c] /= total;
  return out;
}

/** Parents of `name` from nearest to root (cycles cut). */
export function ancestry(name, parents) {
  const chain = [];
  const seen = new Set([name]);
  while (parents && Object.prototype.hasOwnProperty.call(parents, name) && !seen.has(parents[name])) {
    name = parents[name];
    chain.push(name);
    seen.add(name);
  }
  return chain;
}

/**
 * The class-frequency bars of one unit: {classes, n_classes_hit, groups, n_labelled, n_top,
 * selectivity, population, dead}, as _data.class_bars builds them.
 */
export function classBars({ labels, acts, names, parents, topK = 8, selectivity = NaN, dead = false }) {
  const n = names.length;
  const freq = classFrequencies(labels, acts, n);
  let nLabelled = 0;
  for (const c of labels) if (c >= 0) nLabelled++;
  const ranked = [];
  for (let c = 0; c < n; c++) if (freq[c] > 0) ranked.push(c);
  ranked.sort((a, b) => freq[b] - freq[a] || a - b);
  const hasParents = parents && Object.keys(parents).length > 0;
  const classes = ranked.map((c) => ({ name: names[c], value: freq[c], parent: (ancestry(names[c], parents)[0] ?? null) }));
  let groups = null;
  if (hasParents) {
    const byGroup = new Map();
    for (const c of ranked) {
      const chain = ancestry(names[c], parents);
      const groupName = chain.length ? chain[0] : "(no parent)";
      if (!byGroup.has(groupName)) byGroup.set(groupName, { name: groupName, path: chain.slice(1), value: 0, classes: [] });
      const g = byGroup.get(groupName);
      g.value += freq[c];
      g.classes.push({ name: names[c], value: freq[c] });
    }
    groups = [...byGroup.values()];
    groups.sort((a, b) => b.value - a.value); // stable: ties keep first appearance
    let shown = 0;
    for (const g of groups) {
      g.n_classes = g.classes.length;
      g.classes = g.classes.slice(0, Math.max(0, topK - shown));
      shown += g.classes.length;
    }
  }
  let population = 0;
  for (let c = 0; c < n; c++) if (freq[c] >= 0.1) population++;
  return {
    classes: classes.slice(0, topK), n_classes_hit: ranked.length, groups, n_labelled: nLabelled, n_top: labels.length,
    selectivity: Number.isFinite(selectivity) ? selectivity : null, population, dead: !!dead,
  };
}
