// A stand-in for the anywidget `model` over embedded state, so the same front end runs in the
// exported page (no kernel) and in the benchmark page: get/set/on/off/send like anywidget's model,
// `receive` plays a message from the kernel.

/** Turn {"__bytes__": base64} markers into DataViews (what anywidget gives for bytes traits). */
export function revive(value) {
  if (Array.isArray(value)) return value.map(revive);
  if (value && typeof value === "object") {
    if (typeof value.__bytes__ === "string") {
      const bin = atob(value.__bytes__);
      const u8 = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
      return new DataView(u8.buffer);
    }
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = revive(v);
    return out;
  }
  return value;
}

export class ModelShim {
  constructor(state = {}, { onSend = null } = {}) {
    this._state = { ...state };
    this._listeners = new Map();
    this._onSend = onSend;
  }

  get(name) {
    return this._state[name];
  }

  /** set(name, value) or set({name: value, ...}); "change:<name>" per trait, then one "change". */
  set(name, value) {
    const changes = typeof name === "object" && name !== null ? name : { [name]: value };
    const changed = [];
    for (const [key, v] of Object.entries(changes)) {
      if (this._state[key] === v) continue;
      this._state[key] = v;
      changed.push(key);
    }
    for (const key of changed) this._emit(`change:${key}`, this, this._state[key]);
    if (changed.length) this._emit("change", this);
  }

  save_changes() {}

  send(content, callbacks, buffers) {
    if (this._onSend) this._onSend(content, buffers, this);
  }

  on(events, callback) {
    for (const event of String(events).split(/\s+/).filter(Boolean)) {
      if (!this._listeners.has(event)) this._listeners.set(event, new Set());
      this._listeners.get(event).add(callback);
    }
  }

  off(events, callback) {
    if (!events) { this._listeners.clear(); return; }
    for (const event of String(events).split(/\s+/).filter(Boolean)) {
      const set = this._listeners.get(event);
      if (!set) continue;
      if (callback) set.delete(callback); else set.clear();
    }
  }

  /** Deliver a custom message to the views (like the kernel's widget.send). */
  receive(content, buffers = []) {
    this._emit("msg:custom", content, buffers);
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const callback of Array.from(set)) {
      try { callback(...args); } catch (err) { console.error(`nsi-widgets: error in ${event} handler`, err); }
    }
  }
}
