// The card's annotation editor, keyboard-first:
//   L (or Enter in the grid)     type a label (the label box gets the focus, its text selected)
//   Enter / Shift+Enter          save and show the next / previous unit in grid order
//   Ctrl+Enter in the note       save and next
//   Page Down / Page Up,         show the next / previous unit without saving
//   Alt+Down / Alt+Up
//   Esc                          leave the box (back to the grid)
// Moving away from unsaved text (by any view, or from Python) asks first: save, discard or keep
// editing. Undo takes back the unsaved text, else the last stored change; redo re-applies it.
// Writes go to the kernel; when it is gone or silent, saving is off and the text is kept.
// A card view's payload may carry a `suggestion` ({label, note, source, score, score_name, category},
// e.g. a dissection's best concept): the editor offers it; accepting it saves that label with that
// note, as any other annotation.
import { clear, fmt, h } from "./util.js";
import { STATUS_TEXT } from "./kernel.js";

const STATE_DELAY_MS = 120;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

const tagsText = (tags) => (tags || []).join(", ");
const splitTags = (text) => text.split(",").map((t) => t.trim()).filter(Boolean);

export function mountEditor(store, kernel, el, { focusGrid = () => {}, units = null } = {}) {
  const label = h("input", { class: "nsi-input nsi-ann-label", type: "text", placeholder: "label (L)", "aria-label": "Label",
    spellcheck: "false", autocomplete: "off" });
  const tags = h("input", { class: "nsi-input nsi-ann-tags", type: "text", placeholder: "tags, comma separated",
    "aria-label": "Tags", spellcheck: "false", autocomplete: "off" });
  const note = h("textarea", { class: "nsi-input nsi-ann-note", rows: "1", placeholder: "note", "aria-label": "Note" });
  const saveButton = h("button", { class: "nsi-btn nsi-btn-primary nsi-ann-save", type: "button", text: "Save",
    title: "Save (Enter saves and shows the next unit)" });
  const undoButton = h("button", { class: "nsi-btn nsi-ann-undo", type: "button", text: "↶ undo",
    title: "Undo: the unsaved text, else the last saved change" });
  const redoButton = h("button", { class: "nsi-btn nsi-ann-redo", type: "button", text: "↷ redo", title: "Redo what undo took back" });
  const status = h("span", { class: "nsi-ann-status", role: "status", "aria-live": "polite" });
  const kernelNote = h("div", { class: "nsi-ann-kernel", role: "alert" });
  const authorInput = h("input", { class: "nsi-input nsi-ann-author", type: "text", "aria-label": "Author",
    spellcheck: "false", autocomplete: "off", title: "Who is annotating (Enter to switch)" });
  const authorList = h("datalist", { id: `nsi-authors-${Math.random().toString(36).slice(2)}` });
  authorInput.setAttribute("list", authorList.id);
  const current = h("div", { class: "nsi-ann-current" });
  const suggestBox = h("div", { class: "nsi-suggestions" });
  const guardText = h("span", { class: "nsi-guard-text" });
  const guardSave = h("button", { class: "nsi-btn nsi-btn-primary nsi-guard-save", type: "button", text: "Save and go" });
  const guardDiscard = h("button", { class: "nsi-btn nsi-guard-discard", type: "button", text: "Discard" });
  const guardKeep = h("button", { class: "nsi-btn nsi-guard-keep", type: "button", text: "Keep editing" });
  const guard = h("div", { class: "nsi-guard", role: "alertdialog", "aria-label": "Unsaved changes" },
    guardText, guardSave, guardDiscard, guardKeep);
  const historyList = h("ol", { class: "nsi-history-list" });
  const historySummary = h("summary", { text: "history" });
  const history = h("details", { class: "nsi-history" }, historySummary, historyList);
  const hint = h("span", { class: "nsi-caption nsi-ann-keys", title: "L: type a label · Enter: save and next · " +
    "Shift+Enter: save and previous · Page Down / Page Up (Alt+Down / Alt+Up): move without saving · Esc: leave the box",
  text: "L label · ⏎ save+next · PgDn/PgUp move · Esc" });
  const root = h("div", { class: "nsi-editor" },
    h("div", { class: "nsi-section-title nsi-ann-head" }, h("span", { text: "annotation" }),
      h("span", { class: "nsi-ann-as", text: "as" }), authorInput, authorList, hint),
    current, suggestBox,
    h("div", { class: "nsi-ann" }, label, tags, note,
      h("div", { class: "nsi-ann-actions" }, saveButton, undoButton, redoButton, status)),
    guard, kernelNote, history);
  el.append(root);
  guard.hidden = true;

  let target = { layer: store.state.layer, unit: store.state.unit };
  let baseline = { label: "", tags: "", note: "" };
  let pendingMove = null;
  let stateTimer = 0;
  const drafts = new Map(); // "layer\u0000unit\u0000author" -> unsaved fields kept after a failed save
  const states = new Map(); // same key -> {history, can_undo, can_redo} from the kernel
  const keyOf = (t = target, author = store.state.author) => `${t.layer}\u0000${t.unit}\u0000${author}`;

  const editable = () => !!store.data.editable && target.unit !== null && target.unit !== undefined;
  const fields = () => ({ label: label.value.trim(), tags: tagsText(splitTags(tags.value)), note: note.value });
  const dirty = () => {
    if (!editable()) return false;
    const f = fields();
    return f.label !== baseline.label || f.tags !== baseline.tags || f.note !== baseline.note;
  };

  let statusTime = 0;
  function setStatus(text, kind = "") {
    status.textContent = text;
    status.dataset.kind = kind;
    statusTime = performance.now();
  }

  function showSaved(annotation) {
    clear(current);
    if (!annotation) return;
    current.append(h("span", { class: "nsi-ann-label-text", text: annotation.label || "(no label)" }));
    for (const tag of annotation.tags || []) current.append(h("span", { class: "nsi-tag", text: tag }));
    if (annotation.note) current.append(h("div", { class: "nsi-ann-note-text", text: annotation.note }));
    const who = [annotation.author, annotation.time].filter(Boolean).join(", ");
    if (who) current.append(h("div", { class: "nsi-caption", text: `saved by ${who}` }));
  }

  function fill({ keepFields = false } = {}) {
    const annotation = store.annotation(target.unit, target.layer);
    baseline = annotation
      ? { label: annotation.label || "", tags: tagsText(annotation.tags), note: annotation.note || "" }
      : { label: "", tags: "", note: "" };
    showSaved(annotation);
    showSuggestions();
    if (!keepFields) {
      const draft = drafts.get(keyOf());
      const shown = draft || baseline;
      label.value = shown.label;
      tags.value = shown.tags;
      note.value = shown.note;
      if (draft) setStatus("unsaved text kept from a failed save", "dirty");
    }
    updateControls();
  }

  function updateControls() {
    const can = editable();
    const live = kernel.canWrite;
    for (const input of [label, tags, note]) input.disabled = !can;
    authorInput.disabled = !store.data.editable;
    const st = states.get(keyOf()) || {};
    const isDirty = dirty();
    saveButton.disabled = !can || !live;
    undoButton.disabled = !can || !(isDirty || (live && st.can_undo));
    redoButton.disabled = !can || !live || isDirty || !st.can_redo;
    root.dataset.dirty = isDirty ? "1" : "0";
    for (const b of suggestBox.querySelectorAll(".nsi-suggest-accept")) b.disabled = !can || !live;
    if (isDirty && !status.dataset.kind) setStatus("unsaved", "dirty");
    if (!isDirty && status.dataset.kind === "dirty") setStatus("");
    const items = st.history || [];
    historySummary.textContent = store.data.editable ? `history (${items.length})` : "history";
    clear(historyList);
    for (const row of items) {
      const what = row.removed ? "removed" : `“${row.label}”${row.tags.length ? ` [${row.tags.join(", ")}]` : ""}`;
      historyList.append(h("li", { class: "nsi-history-row", dataset: { action: row.action } },
        h("span", { class: "nsi-history-what", text: `${row.action}: ${what}` }),
        h("span", { class: "nsi-caption", text: ` · ${row.author}, ${row.time}` })));
    }
    history.style.display = store.data.editable ? "" : "none";
  }

  function showKernel(st) {
    const text = STATUS_TEXT[st] || "";
    kernelNote.textContent = store.data.editable ? text : "";
    kernelNote.style.display = kernelNote.textContent ? "block" : "none";
    root.dataset.kernel = st;
    updateControls();
  }

  function askState() {
    clearTimeout(stateTimer);
    if (!editable() || !kernel.canWrite) return;
    const t = { ...target };
    const author = store.state.author;
    stateTimer = setTimeout(() => {
      kernel.request("state", { layer: t.layer, unit: t.unit, author }).then((reply) => {
        states.set(keyOf(t, author), reply);
        if (keyOf() === keyOf(t, author)) updateControls();
      }, () => {});
    }, STATE_DELAY_MS);
  }

  function retarget() {
    const next = { layer: store.state.layer, unit: store.state.unit };
    if (next.layer === target.layer && next.unit === target.unit) return false;
    target = next;
    hideGuard();
    // the last save's result stays while labelling on (Enter), not when coming back later
    if (status.dataset.kind === "dirty" || (status.dataset.kind === "ok" && performance.now() - statusTime > 4000)) setStatus("");
    fill();
    askState();
    return true;
  }

  // ---- writes --------------------------------------------------------------------------------------
  function write(kind, body, t, author) {
    const key = keyOf(t, author);
    return kernel.request(kind, { layer: t.layer, unit: t.unit, author, ...body }).then((reply) => {
      states.set(key, reply);
      drafts.delete(key);
      if (keyOf() === key && !dirty()) fill();
      updateControls();
      return reply;
    });
  }

  /** Save the fields; then optionally show the unit `move` places away in grid order. */
  function save({ move = 0, then = null } = {}) {
    if (!editable()) return false;
    if (!kernel.canWrite) {
      setStatus("not saved: " + (STATUS_TEXT[kernel.status] || "the kernel is not there"), "error");
      kernelNote.animate?.([{ opacity: 0.3 }, { opacity: 1 }], { duration: 300 });
      return false;
    }
    const t = { ...target };
    const author = store.state.author;
    const f = fields();
    const nextUnit = move ? store.neighbour(move, t.unit) : null;
    if (dirty()) {
      if (f.label === "" && (f.note.trim() || f.tags)) {
        setStatus("a label is needed to save a note or tags", "error");
        return false;
      }
      baseline = { ...f }; // the move below must not ask about text that is being saved
      setStatus(`saving ${t.layer} · unit ${t.unit}…`, "busy");
      write("annotate", { label: f.label, note: f.note, tags: splitTags(f.tags) }, t, author).then(() => {
        const text = f.label ? `saved ${t.layer} · unit ${t.unit}: “${f.label}”` : `removed the annotation of ${t.layer} · unit ${t.unit}`;
        setStatus(text, "ok");
      }, (err) => {
        drafts.set(keyOf(t, author), f);
        if (keyOf() === keyOf(t, author)) fill();
        setStatus(`not saved (${t.layer} · unit ${t.unit}): ${err.message}`, "error");
      });
    }
    if (then) then();
    else if (nextUnit !== null && nextUnit !== t.unit) store.go(nextUnit);
    return true;
  }

  function restoreFields() {
    drafts.delete(keyOf());
    label.value = baseline.label;
    tags.value = baseline.tags;
    note.value = baseline.note;
    updateControls();
  }

  function undo() {
    if (dirty()) {
      restoreFields();
      setStatus("unsaved text taken back");
      return;
    }
    const t = { ...target };
    write("undo", {}, t, store.state.author).then(() => setStatus(`undone · ${t.layer} unit ${t.unit}`, "ok"),
      (err) => setStatus(`could not undo: ${err.message}`, "error"));
  }

  function redo() {
    const t = { ...target };
    write("redo", {}, t, store.state.author).then(() => setStatus(`redone · ${t.layer} unit ${t.unit}`, "ok"),
      (err) => setStatus(`could not redo: ${err.message}`, "error"));
  }

  // ---- suggested labels (from the card views' payloads) ------------------------------------------
  function suggestions() {
    if (!units || target.unit === null || target.unit === undefined) return [];
    const views = units.get(target.layer, target.unit) || {};
    return Object.values(views).map((v) => v && v.suggestion).filter((sg) => sg && sg.label);
  }

  function showSuggestions() {
    clear(suggestBox);
    const annotation = store.annotation(target.unit, target.layer);
    for (const sg of suggestions()) {
      if (annotation && annotation.label === sg.label) continue; // already this unit's label
      const accept = h("button", { class: "nsi-btn nsi-suggest-accept", type: "button", text: "accept",
        title: `Save the label “${sg.label}”; its note records: ${sg.note}` });
      accept.disabled = !editable() || !kernel.canWrite;
      accept.addEventListener("click", () => acceptSuggestion(sg));
      const score = Number.isFinite(sg.score) ? ` · ${sg.score_name || "score"} ${fmt(sg.score)}` : "";
      suggestBox.append(h("div", { class: "nsi-suggestion", dataset: { source: sg.source || "" } },
        h("span", { class: "nsi-caption", text: "suggested" }),
        h("span", { class: "nsi-suggest-label", text: sg.label }),
        h("span", { class: "nsi-caption", text: `${sg.category ? `(${sg.category}) ` : ""}${sg.source || ""}${score}` }),
        accept));
    }
  }

  function acceptSuggestion(sg) {
    if (!editable()) return;
    label.value = sg.label;
    const text = note.value.replace(/\s+$/, "");
    if (!text.includes(sg.note)) note.value = text ? `${text}\n${sg.note}` : sg.note;
    updateControls();
    save();
  }
  const offUnits = units ? units.onUpdate((layer, unit) => {
    if (layer === target.layer && unit === target.unit) showSuggestions();
  }) : () => {};

  // ---- the unsaved-change guard ---------------------------------------------------------------
  function hideGuard() {
    guard.hidden = true;
    pendingMove = null;
  }

  store.setGuard(({ to, proceed, cancel }) => {
    if (!dirty()) return false;
    if (pendingMove) pendingMove.cancel();
    pendingMove = { to, proceed, cancel };
    guardText.textContent = `Unsaved changes to ${target.layer} · unit ${target.unit}.`;
    guard.hidden = false;
    guardSave.disabled = !kernel.canWrite;
    return true;
  });

  // after the guard, the keyboard stays in the label box (of the unit now shown)
  guardSave.addEventListener("click", () => {
    const p = pendingMove;
    if (!p) return;
    hideGuard();
    save({ then: p.proceed });
    if (dirty()) { guard.hidden = false; pendingMove = p; } else focusLabel();
  });
  guardDiscard.addEventListener("click", () => {
    const p = pendingMove;
    restoreFields();
    hideGuard();
    if (p) p.proceed();
    focusLabel();
  });
  guardKeep.addEventListener("click", () => {
    const p = pendingMove;
    hideGuard();
    if (p) p.cancel();
    label.focus();
  });

  // ---- keys -------------------------------------------------------------------------------------
  function moveWithoutSaving(delta) {
    const next = store.neighbour(delta, target.unit);
    if (next !== null && next !== target.unit) store.go(next);
  }

  function onFieldKey(e) {
    const inNote = e.target === note;
    if (e.key === "Escape") {
      e.preventDefault();
      if (!guard.hidden) { guardKeep.click(); return; }
      e.target.blur();
      focusGrid();
    } else if (e.key === "Enter" && !guard.hidden && !e.altKey) {
      e.preventDefault();
      guardSave.click();
    } else if (e.key === "Enter" && (inNote ? e.ctrlKey || e.metaKey : !e.ctrlKey && !e.metaKey && !e.altKey)) {
      e.preventDefault();
      save({ move: e.shiftKey ? -1 : 1 });
    } else if ((e.key === "PageDown" || (e.altKey && e.key === "ArrowDown")) && !inNote) {
      e.preventDefault();
      moveWithoutSaving(1);
    } else if ((e.key === "PageUp" || (e.altKey && e.key === "ArrowUp")) && !inNote) {
      e.preventDefault();
      moveWithoutSaving(-1);
    } else {
      return;
    }
    e.stopPropagation();
  }
  for (const input of [label, tags, note]) {
    input.addEventListener("keydown", onFieldKey);
    input.addEventListener("input", () => {
      if (status.dataset.kind !== "busy") setStatus("");
      updateControls();
    });
  }
  saveButton.addEventListener("click", () => save());
  undoButton.addEventListener("click", undo);
  redoButton.addEventListener("click", redo);

  function commitAuthor() {
    const name = authorInput.value.trim();
    if (name === store.state.author) return;
    if (!name || name === "*" || CONTROL.test(name)) {
      setStatus("an author is one line of text other than “*”", "error");
      authorInput.value = store.state.author;
      return;
    }
    store.propose({ author: name });
  }
  authorInput.addEventListener("change", commitAuthor);
  authorInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); commitAuthor(); label.focus(); }
    e.stopPropagation();
  });

  function focusLabel() {
    if (!editable()) return;
    label.focus();
    label.select();
  }
  const offFocus = store.on("focus-label", focusLabel);

  function syncAuthors() {
    clear(authorList);
    for (const name of store.data.authors || []) authorList.append(h("option", { value: name }));
    if (document.activeElement !== authorInput) authorInput.value = store.state.author || "";
  }

  const unsubscribe = store.subscribe((changed) => {
    const moved = (changed.has("unit") || changed.has("layer")) && retarget();
    if (changed.has("author")) { syncAuthors(); fill(); askState(); return; }
    if (changed.has("authors")) syncAuthors();
    if (changed.has("editable")) { fill(); showKernel(kernel.status); }
    if (!moved && changed.has("annotations")) fill({ keepFields: dirty() });
    if (moved && root.contains(document.activeElement) && document.activeElement === label) label.select();
  });
  const offStatus = kernel.onStatus(showKernel);

  syncAuthors();
  fill();
  showKernel(kernel.status);
  if (!store.data.editable) setStatus(store.data.readonlyNote || "read-only", "muted");
  askState();

  return {
    focusLabel,
    isDirty: dirty,
    destroy() {
      unsubscribe();
      offStatus();
      offFocus();
      offUnits();
      clearTimeout(stateTimer);
      store.setGuard(null);
      root.remove();
    },
  };
}
