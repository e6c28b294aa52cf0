// The agreement tab: per neuron of the layer shown, each author's label; disagreements marked;
// Cohen's kappa (two authors) or Fleiss' kappa (more) over the neurons every author labelled
// (computed in Python from the store's agreement table: nsi_widgets/widgets/_agreement.py).
import { clear, fmt, h } from "./util.js";

function kappaText(kappa) {
  if (!kappa || !kappa.kind) return (kappa && kappa.reason) || "agreement needs labels by at least two authors";
  const name = kappa.kind === "cohen" ? "Cohen's κ" : "Fleiss' κ";
  const over = kappa.kind === "cohen" ? `labelled by both ${kappa.authors.join(" and ")}` : `labelled by all ${kappa.authors.length} authors`;
  if (kappa.value === null || kappa.value === undefined) return `${name}: ${kappa.reason || "undefined"} (${kappa.n_items} neurons ${over})`;
  return `${name} = ${fmt(kappa.value, 3)} over ${kappa.n_items} neurons ${over}`;
}

export function mountAgreement(store, el) {
  const heading = h("div", { class: "nsi-agree-head" });
  const kappaLine = h("div", { class: "nsi-agree-kappa" });
  const onlyBox = h("input", { type: "checkbox", class: "nsi-agree-only" });
  const table = h("table", { class: "nsi-agree-table" });
  const root = h("div", { class: "nsi-agreement" }, heading, kappaLine,
    h("label", { class: "nsi-field" }, onlyBox, h("span", { text: "disagreements only" })),
    h("div", { class: "nsi-agree-scroll" }, table));
  el.append(root);

  function render() {
    const { layer, unit } = store.state;
    const data = (store.data.agreement || {})[layer];
    clear(heading);
    clear(table);
    if (!data || !data.rows.length) {
      heading.textContent = `No labels in ${layer} yet.`;
      kappaLine.textContent = "";
      return;
    }
    heading.append(h("span", { class: "nsi-strong", text: `${layer}: ` }),
      h("span", { text: `${data.rows.length} neurons labelled by ${data.authors.length} author${data.authors.length === 1 ? "" : "s"}` +
        ` · ${data.n_disagree} disagreement${data.n_disagree === 1 ? "" : "s"}` }));
    kappaLine.textContent = kappaText(data.kappa);
    table.append(h("thead", {}, h("tr", {}, h("th", { text: "unit" }), ...data.authors.map((a) => h("th", { text: a })),
      h("th", { text: "" }))));
    const body = h("tbody");
    for (const row of data.rows) {
      if (onlyBox.checked && row.agree !== false) continue;
      const listed = store.posOf[row.unit] >= 0;
      const tr = h("tr", {
        class: `nsi-agree-row${row.agree === false ? " nsi-disagree" : ""}${row.unit === unit ? " nsi-current" : ""}${listed ? "" : " nsi-hidden-unit"}`,
        dataset: { unit: String(row.unit) }, title: listed ? `show unit ${row.unit}` : "hidden by the grid's filters",
      }, h("td", { class: "nsi-num-cell", text: String(row.unit) }),
      ...data.authors.map((a) => h("td", { class: row.labels[a] === null ? "nsi-muted" : "", text: row.labels[a] ?? "—" })),
      h("td", { class: "nsi-agree-mark", text: row.agree === false ? "≠" : row.agree ? "=" : "" }));
      if (listed) tr.addEventListener("click", () => store.go(row.unit));
      body.append(tr);
    }
    table.append(body);
  }
  onlyBox.addEventListener("change", render);
  const unsubscribe = store.subscribe((changed) => {
    if (["agreement", "layer", "unit", "order"].some((k) => changed.has(k))) render();
  });
  render();
  return { destroy() { unsubscribe(); root.remove(); } };
}
