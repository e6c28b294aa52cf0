// The card's views of other methods' results (Python side: nsi_widgets/widgets/{dissection, synthesised,
// generated, projected, concept_vectors}.py): Network Dissection's concepts and picture, the synthesised images and
// facets, the projections' legend, concept weights and the concept -> units tab. Text from data
// (concept names, categories, recipes) only ever goes in as text.
import { clear, decodeBitmap, fmt, h, prettyName, toU8 } from "./util.js";
import { pngImage, registerCardView } from "./cardviews.js";
import { renderSparkline } from "./bars.js";
import { typed, shapeOf } from "./wire.js";

const muted = (el, text) => el.append(h("div", { class: "nsi-muted", text }));
const waiting = (el) => muted(el, "loading…");

/** A bar row: name (with an optional category tag), a bar of |value| / max, and the value's text. */
function barRow({ name, category, value, max, text, title, extra = "", onclick = null }) {
  const width = max > 0 ? Math.max(0, Math.min(100, (100 * Math.abs(value)) / max)) : 0;
  const props = { class: `nsi-bar-row ${extra}`, title: title || `${name}: ${text}` };
  if (onclick) Object.assign(props, { role: "button", tabindex: "0", onclick, onkeydown: (e) => { if (e.key === "Enter") onclick(e); } });
  return h("div", props,
    h("span", { class: "nsi-bar-name" }, h("span", { text: name }), category ? h("span", { class: "nsi-tag nsi-cat", text: category }) : null),
    h("span", { class: "nsi-bar-track" }, h("span", { class: `nsi-bar-fill${value < 0 ? " nsi-bar-neg" : ""}`, style: { width: `${width}%` } })),
    h("span", { class: "nsi-bar-value", text }));
}

/** Draw tile i of a horizontal PNG strip of [h, w] tiles into each canvas (in order). */
function drawStrip(bytes, canvases, [th, tw], alive) {
  if (!canvases.length || !toU8(bytes).byteLength) return;
  decodeBitmap(bytes).then((bm) => {
    if (!bm) return;
    if (alive()) canvases.forEach((c, i) => c.getContext("2d").drawImage(bm, i * tw, 0, tw, th, 0, 0, c.width, c.height));
    bm.close();
  }).catch((err) => console.error("nsi-widgets: could not decode an image strip", err));
}

// ---- Network Dissection ---------------------------------------------------------------------------------
registerCardView("dissection", {
  render({ el, payload, spec }) {
    if (!payload) { waiting(el); return null; }
    if (payload.missing) {
      muted(el, spec.compute ? "This layer is not dissected yet: the button dissects it and shows the unit's top images."
        : "This layer is not dissected.");
      return null;
    }
    const cleanups = [];
    const concepts = payload.concepts || [];
    const max = Math.max(1e-9, ...concepts.map((c) => c.iou));
    const list = h("div", { class: "nsi-bars nsi-concepts" });
    concepts.forEach((c, i) => list.append(barRow({ name: c.name, category: c.category, value: c.iou, max, text: fmt(c.iou),
      title: `${c.name} (${c.category}): IoU ${fmt(c.iou, 4)}`, extra: i === 0 && payload.detector ? "nsi-concept-best" : "" })));
    const best = concepts[0];
    const threshold = payload.iou_threshold;
    const caption = payload.detector
      ? `detector of “${best.name}” (${best.category}): IoU ${fmt(best.iou, 4)} > ${fmt(threshold, 3)}`
      : `no concept above the IoU threshold${threshold === null || threshold === undefined ? "" : ` ${fmt(threshold, 3)}`}`;
    el.append(h("div", { class: "nsi-caption nsi-concept-caption", text: caption + (Number.isFinite(payload.threshold) ? ` · threshold T = ${fmt(payload.threshold, 4)}` : "") }), list);
    if (!payload.pictures) {
      muted(el, spec.compute ? "Its top images: not computed yet (the button)." : "Its top images were not computed.");
      return null;
    }
    const concept = payload.picture_concept;
    el.append(h("div", { class: "nsi-caption nsi-picture-caption",
      text: `its top images: the thresholded map (left) beside the mask of “${concept ? concept.name : "?"}”${concept ? ` (${concept.category})` : ""} (right)` }));
    const row = h("div", { class: "nsi-pictures" });
    for (const p of payload.pictures) {
      const [map, doneMap] = pngImage(p.map, { class: "nsi-picture-img nsi-picture-map", alt: `unit's map over image ${p.image}` });
      const [mask, doneMask] = pngImage(p.mask, { class: "nsi-picture-img nsi-picture-mask", alt: `concept mask on image ${p.image}` });
      cleanups.push(doneMap, doneMask);
      row.append(h("figure", { class: "nsi-picture", dataset: { image: String(p.image) },
        title: `image ${p.image} · map maximum ${fmt(p.activation, 4)} · map covers ${fmt(100 * p.map_share, 3)}%, ` +
          `concept ${fmt(100 * p.mask_share, 3)}% · IoU ${fmt(p.iou, 4)}` },
      h("div", { class: "nsi-picture-pair" }, map, mask),
      h("figcaption", { class: "nsi-caption", text: `image ${p.image} · IoU ${fmt(p.iou)}` })));
    }
    if (!payload.pictures.length) row.append(h("div", { class: "nsi-muted", text: "no top images" }));
    el.append(row);
    return () => cleanups.forEach((f) => f());
  },
});

// ---- synthesised: activation maximisation and facets ------------------------------------------------------
registerCardView("synthesis", {
  render({ el, store, data, unit, payload, spec }) {
    if (!payload) { waiting(el); return null; }
    if (payload.missing || !payload.computed) {
      muted(el, spec.compute ? "Not synthesised yet: the button computes the unit's image and facets." : "Not synthesised.");
      return null;
    }
    const cleanups = [];
    let alive = true;
    const top1 = data.unitActs(unit)[0];
    if (payload.am) {
      const [img, done] = pngImage(payload.am.png, { class: "nsi-synth-img nsi-pixelated", alt: `activation maximisation of unit ${unit}` });
      cleanups.push(done);
      const spark = h("div", { class: "nsi-synth-spark", title: "the objective per optimisation step" });
      const history = payload.am.history ? typed(payload.am.history) : new Float32Array(0);
      el.append(h("div", { class: "nsi-synth-am" },
        h("figure", { class: "nsi-nf-box" }, img,
          h("figcaption", { class: "nsi-caption", text: `activation maximisation · ${payload.am.size[0]}×${payload.am.size[1]} px` })),
        h("div", { class: "nsi-card-side" },
          h("div", { class: "nsi-synth-act", text: `reached ${fmt(payload.am.activation, 4)}` + (Number.isFinite(top1) ? ` (top image: ${fmt(top1, 4)})` : "") }),
          spark, h("div", { class: "nsi-caption", text: payload.am.recipe || "" }))));
      renderSparkline(spark, history, null, { width: 160, height: 26 });
    }
    const facets = payload.facets || [];
    if (facets.length) {
      el.append(h("div", { class: "nsi-caption nsi-facets-caption",
        text: `${facets.length} facet${facets.length > 1 ? "s" : ""}: mean image, its visualisation, members (click: show it among the top images)` +
          (payload.facet_recipe ? ` · ${payload.facet_recipe}` : "") }));
    }
    const preview = h("div", { class: "nsi-member-preview", hidden: true });
    for (const facet of facets) {
      const [mean, doneMean] = pngImage(facet.mean, { class: "nsi-facet-img nsi-pixelated", alt: `mean image of facet ${facet.number + 1}` });
      const [image, doneImage] = pngImage(facet.image, { class: "nsi-facet-img nsi-pixelated", alt: `visualisation of facet ${facet.number + 1}` });
      cleanups.push(doneMean, doneImage);
      const members = h("div", { class: "nsi-members" });
      const thumbRanks = facet.thumb_ranks || [];
      const canvases = [];
      const [th, tw] = facet.thumb_size && facet.thumb_size.length ? facet.thumb_size : [0, 0];
      facet.ranks.forEach((rank, i) => {
        const k = thumbRanks.indexOf(rank);
        const canvas = k >= 0 ? h("canvas", { class: "nsi-member-thumb", width: String(tw), height: String(th) }) : null;
        if (canvas) canvases[k] = canvas;
        const button = h("button", { class: "nsi-member", type: "button", dataset: { rank: String(rank), image: String(facet.images[i]) },
          title: `rank ${rank + 1} · image ${facet.images[i]}` }, canvas || h("span", { class: "nsi-member-rank", text: `#${rank + 1}` }));
        button.addEventListener("click", () => {
          for (const b of el.querySelectorAll(".nsi-member")) b.classList.toggle("nsi-member-on", b === button);
          showPreview(preview, canvas, rank, facet.images[i], data.unitActs(unit)[rank]);
          store.fire("show-top-image", { layer: data.name, unit, rank });
        });
        members.append(button);
      });
      drawStrip(facet.thumbs, canvases.filter(Boolean), [th, tw], () => alive);
      el.append(h("div", { class: "nsi-facet", dataset: { facet: String(facet.number) } },
        h("figure", { class: "nsi-facet-fig" }, mean, h("figcaption", { class: "nsi-caption", text: "mean" })),
        h("figure", { class: "nsi-facet-fig" }, image, h("figcaption", { class: "nsi-caption", text: `a = ${fmt(facet.activation)}` })),
        h("div", { class: "nsi-facet-side" },
          h("div", { class: "nsi-facet-title", text: `facet ${facet.number + 1} · ${facet.size} image${facet.size === 1 ? "" : "s"}` }),
          members)));
    }
    el.append(preview);
    return () => { alive = false; cleanups.forEach((f) => f()); };
  },
});

function showPreview(preview, canvas, rank, image, activation) {
  clear(preview);
  preview.hidden = false;
  if (canvas) {
    const big = h("canvas", { class: "nsi-member-big", width: String(canvas.width), height: String(canvas.height) });
    big.getContext("2d").drawImage(canvas, 0, 0);
    preview.append(big);
  }
  preview.append(h("div", { class: "nsi-caption",
    text: `top image of rank ${rank + 1} · image ${image}` + (Number.isFinite(activation) ? ` · activation ${fmt(activation, 4)}` : "") }));
}

// ---- generated: PPGN samples of the unit in a generator's latent space -----------------------------------
registerCardView("generated", {
  render({ el, data, unit, payload, spec }) {
    if (!payload) { waiting(el); return null; }
    if (payload.missing || !payload.computed) {
      muted(el, spec.compute ? "Not generated yet: the button samples images the unit wants with the generator prior (PPGN)." : "Not generated.");
      return null;
    }
    let alive = true;
    const values = payload.values ? typed(payload.values) : new Float32Array(0);
    const top1 = data.unitActs(unit)[0];
    const [th, tw] = payload.tile || [0, 0];
    const canvases = [];
    const row = h("div", { class: "nsi-generated" });
    for (let i = 0; i < payload.n; i++) {
      const canvas = h("canvas", { class: "nsi-generated-img nsi-pixelated", width: String(tw), height: String(th) });
      canvases.push(canvas);
      const beats = Number.isFinite(top1) && values[i] > top1;
      row.append(h("figure", { class: "nsi-facet-fig", dataset: { sample: String(i) } }, canvas,
        h("figcaption", { class: `nsi-caption${beats ? " nsi-generated-beats" : ""}`, text: `a = ${fmt(values[i])}` })));
    }
    drawStrip(payload.strip, canvases, [th, tw], () => alive);
    const spark = h("div", { class: "nsi-synth-spark", title: "the objective per PPGN step (best sample)" });
    el.append(h("div", { class: "nsi-caption",
      text: `${payload.n} PPGN samples (generator prior)` + (Number.isFinite(top1) ? ` · top image: ${fmt(top1, 4)}` : "") }),
    row, spark, h("div", { class: "nsi-caption", text: payload.recipe || "" }));
    renderSparkline(spark, payload.history ? typed(payload.history) : new Float32Array(0), null, { width: 160, height: 26 });
    return () => { alive = false; };
  },
});

// ---- projections: how they were made and coloured (drawn in the top images and the summary) ----------------
registerCardView("projections", {
  render({ el, store, payload, spec }) {
    if (!payload) { waiting(el); return null; }
    if (payload.missing || !payload.computed) {
      muted(el, spec.compute ? "Not computed yet: the button projects the unit's top images back to pixels." : "Not computed for this unit.");
      return null;
    }
    const legend = h("div", { class: "nsi-proj-legend" },
      ...[["0", "negative"], ["0.5", "zero"], ["1", "positive"]].map(([v, label]) => h("span", { class: "nsi-legend-item" },
        h("span", { class: "nsi-swatch", style: { background: `rgb(${[v, v, v].map((x) => Math.round(255 * Number(x))).join(",")})` } }),
        h("span", { text: label }))));
    el.append(h("div", { class: "nsi-caption",
      text: `${prettyName(payload.method)} of the top ${payload.n} images (mean over ${payload.n_mean ?? "all"}, ${payload.weighting}): ` +
        "the top images' toggle shows them, the mean stands beside the Neuron Feature" }), legend,
    h("div", { class: "nsi-caption", text: payload.colours }),
    h("button", { class: "nsi-btn nsi-show-projections", type: "button", text: "show the projections",
      onclick: () => store.setUi({ topMode: store.ui.topMode === "projections" ? "crops" : "projections" }) }));
    return null;
  },
});

// ---- concept vectors: the unit's concepts, and a concept's units ----------------------------------------
function conceptTab(store, spec) {
  return store.data.cardViews.find((s) => s.renderer === "concept_units" && s.attachment === spec.attachment) || null;
}

registerCardView("concept_weights", {
  render({ el, store, payload, spec }) {
    if (!payload) { waiting(el); return null; }
    if (payload.missing) { muted(el, "No concept vectors for this layer."); return null; }
    const tab = conceptTab(store, spec);
    const list = h("div", { class: "nsi-bars nsi-concept-weights" });
    for (const c of payload.concepts) {
      const open = tab ? () => store.setUi({ tab: tab.key, [`concept:${tab.key}`]: c.index }) : null;
      list.append(barRow({ name: c.name, category: c.category, value: c.relative, max: 1, text: fmt(c.weight),
        title: `${c.name}${c.category ? ` (${c.category})` : ""}: weight ${fmt(c.weight, 4)}, ${fmt(100 * c.relative, 3)}% of the concept's largest` +
          (Number.isFinite(c.quality) ? ` · quality ${fmt(c.quality, 3)}` : "") + (tab ? " · click: the concept's units" : ""),
        extra: "nsi-concept-link", onclick: open }));
    }
    el.append(h("div", { class: "nsi-caption", text: `${prettyName(payload.method || "concept vectors")}: the unit's largest weights (bar: share of the concept's largest)` }), list);
    return null;
  },
});

registerCardView("concept_units", {
  render({ el, store, layerPayload, spec, unit }) {
    const table = layerPayload;
    if (!table) { muted(el, "No concept vectors for this layer."); return null; }
    const names = table.concepts || [];
    const categories = table.categories || [];
    const quality = table.quality ? typed(table.quality) : new Float32Array(0);
    const units = typed(table.top_units);
    const weights = typed(table.top_weights);
    const n = shapeOf(table.top_units)[1] || 0;
    const key = `concept:${spec.key}`;
    const select = h("select", { class: "nsi-select nsi-concept-select", "aria-label": "Concept" },
      ...names.map((name, k) => h("option", { value: String(k), text: categories[k] ? `${name} (${categories[k]})` : name })));
    const list = h("div", { class: "nsi-bars nsi-concept-units" });
    const note = h("div", { class: "nsi-caption" });
    el.append(h("div", { class: "nsi-view-actions" }, h("span", { class: "nsi-field-name", text: "concept" }), select, note), list);

    function draw() {
      const k = Math.max(0, Math.min(names.length - 1, Number(store.ui[key] ?? 0)));
      select.value = String(k);
      note.textContent = Number.isFinite(quality[k]) ? `quality ${fmt(quality[k], 3)}` : "";
      clear(list);
      const row = Array.from(weights.subarray(k * n, (k + 1) * n));
      const max = Math.max(1e-12, ...row.map(Math.abs));
      row.forEach((w, i) => {
        const u = units[k * n + i];
        const listed = store.posOf[u] >= 0;
        const go = listed ? () => { store.go(u); store.setUi({ tab: "neuron" }); } : null;
        list.append(barRow({ name: `unit ${u}`, value: w, max, text: fmt(w),
          title: listed ? `unit ${u}: weight ${fmt(w, 4)} · click: its card` : `unit ${u}: weight ${fmt(w, 4)} (hidden by the grid's filters)`,
          extra: `nsi-unit-link${u === store.state.unit ? " nsi-current" : ""}${listed ? "" : " nsi-unlisted"}`, onclick: go }));
        list.lastChild.dataset.unit = String(u);
      });
    }
    select.addEventListener("change", () => store.setUi({ [key]: Number(select.value) }));
    const off = store.subscribe((changed) => { if (changed.has(`ui.${key}`) || changed.has("order")) draw(); });
    draw();
    el.dataset.unit = String(unit);
    return off;
  },
});
