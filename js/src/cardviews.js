// The registry of the card's views, by renderer name (the Python side: nsi_widgets/widgets/views.py).
//
//   registerCardView("my_view", { render(ctx) { ...; return () => cleanup; } })
//
// ctx = { el, store, layer (name), unit, data (the decoded layer), payload (this view's payload
// for the unit; undefined while it travels), spec ({key, title, placement, compute, ...}), info }.
// `render` is called again whenever the unit or its payload changes (into an emptied `el`).
import { clear, decodeBitmap, fmt, h, pngBlob, prettyName, toU8 } from "./util.js";
import { columnText, showThumb } from "./layerdata.js";
import { classBars } from "./classes.js";
import { renderClassBars, renderSparkline } from "./bars.js";
import { typed } from "./wire.js";

const VIEWS = new Map();

export function registerCardView(name, spec) {
  if (!spec || typeof spec.render !== "function") throw new Error(`card view ${name}: needs a render(ctx) function`);
  VIEWS.set(name, spec);
}

export function cardView(name) {
  return VIEWS.get(name) || null;
}

/** An <img> of PNG bytes; returns [img, cleanup]. */
export function pngImage(bytes, props = {}) {
  const blob = pngBlob(bytes);
  const img = h("img", props);
  if (!blob) return [img, () => {}];
  const url = URL.createObjectURL(blob);
  img.src = url;
  return [img, () => URL.revokeObjectURL(url)];
}

const loading = (el, text = "loading…") => el.append(h("div", { class: "nsi-muted nsi-loading", text }));

/** The payload of the first view drawn by `renderer` among the unit's views (e.g. its projections). */
export function viewPayload(store, views, renderer) {
  if (!views) return null;
  for (const spec of store.data.cardViews) {
    if (spec.renderer === renderer && views[spec.key] && !views[spec.key].missing) return views[spec.key];
  }
  return null;
}

// ---- summary: the Neuron Feature and the indexes ------------------------------------------------
registerCardView("summary", {
  usesViews: true, // the mean projection, when the unit has projections
  render({ el, store, data, unit, payload, views }) {
    const cleanups = [];
    const size = (payload && payload.nf_size) || [];
    let picture;
    if (payload && toU8(payload.nf).byteLength) {
      const [img, done] = pngImage(payload.nf, { class: "nsi-nf", alt: "Neuron Feature" });
      img.classList.toggle("nsi-pixelated", (size[0] || 0) < 64);
      picture = img;
      cleanups.push(done);
    } else {
      // the grid's thumbnail until the full-size feature arrives
      picture = h("div", { class: "nsi-nf nsi-pixelated nsi-nf-placeholder" });
      if (!showThumb(picture, data, unit, 96)) picture.classList.add("nsi-nothumb");
    }
    const caption = payload ? (size.length ? `Neuron Feature · ${size[0]}×${size[1]} px` : "no Neuron Feature stored") : "Neuron Feature";
    const table = h("table", { class: "nsi-scores" });
    for (const name of data.names) {
      const value = data.scores[name][unit];
      const inUnit = name !== "top_activation" && !name.includes(".") && Number.isFinite(value) && value >= -1 && value <= 1;
      table.append(h("tr", { dataset: { score: name } },
        h("th", { text: prettyName(name), title: name }),
        h("td", { class: "nsi-num-cell", text: columnText(data, name, unit) }),
        h("td", { class: "nsi-mini" }, inUnit ? h("span", { class: "nsi-mini-track" },
          h("span", { class: "nsi-mini-fill", style: { width: `${100 * Math.max(0, Math.min(1, value))}%` } })) : null)));
    }
    const rf = data.rf || {};
    if (rf.size) {
      table.append(h("tr", {}, h("th", { text: "receptive field" }),
        h("td", { class: "nsi-num-cell", colspan: "2", text: `${rf.size[0]}×${rf.size[1]} px / ${rf.stride[0]}` })));
    }
    // the mean projection of the top images beside the Neuron Feature (projected.py)
    const projections = viewPayload(store, views, "projections");
    let mean = null;
    if (projections && projections.computed && toU8(projections.mean).byteLength) {
      const [img, done] = pngImage(projections.mean, { class: "nsi-nf nsi-pixelated nsi-mean-projection",
        alt: "mean projection of the top images" });
      cleanups.push(done);
      mean = h("figure", { class: "nsi-nf-box", title: projections.colours },
        img, h("figcaption", { class: "nsi-caption", text: `mean projection · ${prettyName(projections.method)}` }));
    }
    el.append(h("div", { class: "nsi-summary" },
      h("figure", { class: "nsi-nf-box" }, picture, h("figcaption", { class: "nsi-caption", text: caption })),
      mean, h("div", { class: "nsi-card-side" }, table)));
    return () => cleanups.forEach((f) => f());
  },
});

// ---- classes: the unit's class frequencies, from the layer data ----------------------------------
registerCardView("classes", {
  render({ el, store, data, unit, info }) {
    const box = h("div", { class: "nsi-class-chart" });
    el.append(box);
    const names = info.class_names || [];
    const selectivity = data.scores[info.class_score || "class_selectivity"];
    const bars = classBars({ labels: data.unitLabels(unit), acts: data.unitActs(unit), names, parents: info.class_parents,
      topK: info.top_k || 8, selectivity: selectivity ? selectivity[unit] : NaN, dead: !!data.dead[unit] });
    const caption = h("div", { class: "nsi-caption nsi-class-caption" });
    if (bars.n_labelled) {
      caption.textContent = `activation-weighted share of the top-${bars.n_top} (${bars.n_labelled} labelled)` +
        (bars.selectivity !== null ? ` · class selectivity ${fmt(bars.selectivity, 4)}` : "") +
        ` · ${bars.population} classes ≥ 10%`;
    }
    const list = h("div", { class: "nsi-class-list", tabindex: "0", "aria-label": "class frequencies" });
    box.append(list, caption);
    renderClassBars(list, bars, { grouped: true });
    box.dataset.unit = String(unit);
    return null;
  },
});

// ---- top images: the top-N activation profile and the crops -------------------------------------
registerCardView("top_images", {
  usesViews: true, // the projections toggle
  render({ el, store, data, unit, payload, views }) {
    const acts = data.unitActs(unit);
    const gray = payload && payload.gray ? typed(payload.gray) : new Float32Array(0);
    const spark = h("div", { class: "nsi-spark-box" });
    const legendText = acts.length ? `top-${acts.length} activations by rank` + (gray.length ? " · dashed: grey crops" : "") : "";
    el.append(h("div", { class: "nsi-spark-row" }, spark, h("div", { class: "nsi-caption", text: legendText })));
    renderSparkline(spark, acts, gray.length === acts.length ? gray : null, { width: 240, height: 30 });
    if (!payload) { loading(el, "loading the top images…"); return null; }
    const projections = viewPayload(store, views, "projections");
    const k = payload.n_crops || 0;
    const images = payload.images || [];
    const classes = payload.classes || [];
    const [ch, cw] = payload.crop_size || [0, 0];
    const count = k || Math.min(images.length, 8);
    // projections of the same top images (same ranks, same windows): a toggle shows them instead
    const nProj = projections && projections.computed && projections.strip ? Math.min(projections.n || 0, count) : 0;
    const mosaic = h("div", { class: "nsi-mosaic", dataset: { mode: nProj && store.ui.topMode === "projections" ? "projections" : "crops" } });
    if (nProj) {
      const toggle = h("div", { class: "nsi-toggle", role: "group", "aria-label": "Show crops or projections" },
        ...["crops", "projections"].map((mode) => h("button", { class: "nsi-btn nsi-toggle-btn", type: "button", dataset: { mode },
          text: mode, "aria-pressed": String(mosaic.dataset.mode === mode),
          onclick: () => store.setUi({ topMode: mode }) })),
        h("span", { class: "nsi-caption", text: `${prettyName(projections.method)} of the first ${nProj} · grey = 0`, title: projections.colours }));
      el.append(toggle);
    }
    el.append(mosaic);
    const canvases = [];
    const projCanvases = [];
    const tiles = [];
    for (let i = 0; i < count; i++) {
      const canvas = h("canvas", { class: "nsi-crop", width: String(cw || 1), height: String(ch || 1) });
      canvases.push(canvas);
      const lines = [`rank ${i + 1}`, `image ${images[i] ?? "?"}`, `activation ${fmt(acts[i], 4)}`];
      if (gray.length) lines.push(`grey activation ${fmt(gray[i], 4)}`);
      if (classes[i]) lines.push(`class ${classes[i]}`);
      let proj = null;
      if (i < nProj) {
        const [ph, pw] = projections.tile;
        proj = h("canvas", { class: "nsi-crop nsi-projection", width: String(pw), height: String(ph) });
        projCanvases.push(proj);
        if (projections.images[i] !== images[i]) lines.push(`(projection of image ${projections.images[i]})`);
      }
      const tile = h("div", { class: `nsi-tile${i >= k ? " nsi-tile-nocrop" : ""}${proj ? " nsi-has-proj" : ""}`,
        title: lines.join("\n"), dataset: { rank: String(i) } },
        canvas, proj,
        h("div", { class: "nsi-crop-cap" }, h("span", { class: "nsi-crop-a", text: fmt(acts[i]) })),
        classes[i] ? h("div", { class: "nsi-crop-class", text: classes[i] }) : null);
      tiles.push(tile);
      mosaic.append(tile);
    }
    if (!count) mosaic.append(h("div", { class: "nsi-muted", text: "no top images stored" }));
    else if (!k) mosaic.append(h("div", { class: "nsi-muted nsi-nocrops", text: "no crops stored in this index" }));
    let live = true;
    const draw = (bytes, targets, w, hh) => decodeBitmap(bytes).then((bm) => {
      if (!bm) return;
      if (live) targets.forEach((c, i) => c.getContext("2d").drawImage(bm, i * w, 0, w, hh, 0, 0, c.width, c.height));
      bm.close();
    }).catch((err) => console.error("nsi-widgets: could not decode the top images", err));
    if (k) draw(payload.crops, canvases.slice(0, k), cw, ch);
    if (nProj) draw(projections.strip, projCanvases, projections.tile[1], projections.tile[0]);
    const off = store.subscribe((changed) => {
      if (!changed.has("ui.topMode") || !nProj) return;
      mosaic.dataset.mode = store.ui.topMode === "projections" ? "projections" : "crops";
      for (const b of el.querySelectorAll(".nsi-toggle-btn")) b.setAttribute("aria-pressed", String(b.dataset.mode === mosaic.dataset.mode));
    });
    // another view (e.g. a facet's member) points at one of the top images
    const offShow = store.on("show-top-image", ({ layer, unit: u, rank }) => {
      if (layer !== data.name || u !== unit) return;
      tiles.forEach((tile, i) => tile.classList.toggle("nsi-tile-marked", i === rank));
      if (tiles[rank]) tiles[rank].scrollIntoView({ block: "nearest" });
    });
    return () => { live = false; off(); offShow(); };
  },
});

// ---- panel: a generic view of text, captioned images and a key/value table (views.Panel) ---------
registerCardView("panel", {
  render({ el, payload }) {
    if (!payload) { loading(el); return null; }
    if (payload.missing) { el.append(h("div", { class: "nsi-muted", text: "not computed yet" })); return null; }
    const cleanups = [];
    if (payload.text) el.append(h("div", { class: "nsi-panel-text", text: payload.text }));
    if (payload.images && payload.images.length) {
      const row = h("div", { class: "nsi-panel-images" });
      for (const image of payload.images) {
        const [img, done] = pngImage(image.png, { class: "nsi-panel-img", alt: image.caption || "" });
        cleanups.push(done);
        row.append(h("figure", { class: "nsi-panel-figure" }, img, h("figcaption", { class: "nsi-caption", text: image.caption || "" })));
      }
      el.append(row);
    }
    if (payload.rows && payload.rows.length) {
      const table = h("table", { class: "nsi-scores nsi-panel-rows" });
      for (const [key, value] of payload.rows) {
        table.append(h("tr", {}, h("th", { text: String(key) }),
          h("td", { class: "nsi-num-cell", text: typeof value === "number" ? fmt(value, 4) : String(value ?? "—") })));
      }
      el.append(table);
    }
    return () => cleanups.forEach((f) => f());
  },
});

export { clear };
