// The exported page: the same front end as the live Explorer (app.js), over a ModelShim whose
// "kernel" answers from the data embedded in the page. Annotations are read-only here.
import { h } from "./util.js";
import { ModelShim, revive } from "./shim.js";
import { mountApp } from "./app.js";

/**
 * Mount an exported document (nsi_widgets/widgets/export.py:page_document) into `root`.
 * Returns the model and a destroy function, for tests and for scripting the page.
 */
export function mountStatic(root, doc) {
  const revived = new Map();
  const payloadOf = (layer, unit) => {
    const key = `${layer}\u0000${unit}`;
    if (!revived.has(key)) revived.set(key, revive(((doc.units || {})[layer] || {})[String(unit)] || {}));
    return revived.get(key);
  };
  const model = new ModelShim(revive(doc.state), {
    onSend: (content, _buffers, shim) => {
      const reply = (body) => setTimeout(() => shim.receive({ reply_to: content.request_id, ...body }, []), 0);
      if (content.type === "unit") {
        for (const unit of content.units || []) reply({ type: "unit", layer: content.layer, unit, views: payloadOf(content.layer, unit) });
      } else if (content.type === "ping") {
        reply({ type: "pong" });
      } else if (content.type !== "refresh") {
        reply({ type: "error", message: "this exported page is read-only" });
      }
    },
  });
  const info = doc.state.info || {};
  const meta = info.meta || {};
  const facts = [];
  if (meta.model_name) facts.push(`model ${meta.model_name}`);
  if (meta.n_images) facts.push(`${meta.n_images} images`);
  if (meta.top_n) facts.push(`top-${meta.top_n}`);
  const app = h("div", { class: "nsi-page-app" });
  const page = h("div", { class: "nsi-root nsi-page" },
    h("header", { class: "nsi-page-header" },
      h("h1", { class: "nsi-page-title", text: info.title || "Neuron explorer" }),
      h("span", { class: "nsi-caption", text: facts.join(" · ") })),
    app,
    h("footer", { class: "nsi-caption nsi-page-footer",
      text: "Exported page of nsi-widgets: the same views as the live Explorer, offline; annotations are read-only." }));
  root.append(page);
  const destroy = mountApp(model, app, { isStatic: true });
  return { model, destroy };
}
