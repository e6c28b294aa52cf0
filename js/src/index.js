// nsi-widgets front end: one anywidget module; the model's `_views` says which views to lay out
// (the Explorer: all of them; NeuronGrid, NeuronCard, ClassSelectivityChart: one each).
import { mountApp } from "./app.js";
import "./methodviews.js"; // registers the card views of other methods (dissection, synthesis, ...)

function render({ model, el }) {
  return mountApp(model, el);
}

export default { render };
// for the exported page, the benchmark and other front-end code (anywidget uses the default export)
export { mountStatic } from "./static.js";
export { ModelShim, revive } from "./shim.js";
export { computeOrder } from "./order.js";
export { classBars, classFrequencies } from "./classes.js";
export { registerCardView } from "./cardviews.js";
export { mountApp };
