// Messages to and from the kernel, and whether it is there at all.
//
// Every request carries a request_id; the kernel's reply carries reply_to. A request that cannot
// be sent (the comm is closed: the kernel restarted) or is not answered within REPLY_MS marks
// the kernel "dead" or "silent"; pings then probe it every PROBE_MS until it answers ("live").
// Nothing here throws into the page: every failure becomes a status that the views show.
import { unpack } from "./wire.js";

export const REPLY_MS = 1500;
const PROBE_MS = 2500;

export const STATUS_TEXT = {
  live: "",
  static: "",
  silent: "The kernel does not answer (busy, or restarted?): saving is off until it does. Your text is kept.",
  dead: "The kernel is gone (restarted or shut down): saving is off. Run the cell that made this view again; your text is kept.",
};

export function createKernel(model, { isStatic = false } = {}) {
  let seq = 0;
  let status = isStatic ? "static" : "live";
  const pending = new Map();
  const handlers = new Map();
  const statusListeners = new Set();
  let probeTimer = 0;
  let destroyed = false;

  function setStatus(next) {
    if (next === status || status === "static") return;
    status = next;
    for (const fn of statusListeners) fn(status);
    if (status !== "live") scheduleProbe(PROBE_MS);
  }

  function rawSend(content) {
    try {
      const result = model.send(content);
      if (result && typeof result.then === "function") result.then(null, () => setStatus("dead"));
      return true;
    } catch (err) {
      setStatus("dead");
      return false;
    }
  }

  /** Send {type, ...body}; resolves with the reply (or at once when `reply` is false). */
  function request(type, body = {}, { reply = true, timeout = REPLY_MS } = {}) {
    const id = `q${++seq}`;
    if (status === "dead" && type !== "ping") {
      return Promise.reject(Object.assign(new Error(STATUS_TEXT.dead), { status: "dead" }));
    }
    if (!rawSend({ type, request_id: id, ...body })) {
      return Promise.reject(Object.assign(new Error(STATUS_TEXT.dead), { status: "dead" }));
    }
    if (!reply) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(id);
        if (status === "live") setStatus("silent");
        reject(Object.assign(new Error(STATUS_TEXT[status] || STATUS_TEXT.silent), { status }));
      }, timeout);
      pending.set(id, { resolve, reject, timer });
    });
  }

  function probe() {
    probeTimer = 0;
    if (destroyed || status === "static") return;
    request("ping", {}, { timeout: REPLY_MS }).then(() => setStatus("live"), () => {
      if (status === "live") setStatus("silent");
      scheduleProbe(PROBE_MS);
    });
  }

  function scheduleProbe(ms) {
    if (probeTimer || destroyed || status === "static") return;
    probeTimer = setTimeout(probe, ms);
  }

  function onMessage(msg, buffers) {
    if (!msg || typeof msg !== "object") return;
    const content = unpack(msg, buffers);
    if (content.reply_to && pending.has(content.reply_to)) {
      const entry = pending.get(content.reply_to);
      pending.delete(content.reply_to);
      clearTimeout(entry.timer);
      if (content.type === "error") entry.reject(Object.assign(new Error(content.message || "error"), { status: "error", content }));
      else entry.resolve(content);
    }
    if (status !== "live" && status !== "static") setStatus("live");
    const set = handlers.get(content.type);
    if (set) for (const fn of Array.from(set)) fn(content);
  }

  const onCommLive = () => { if (!isStatic) { clearTimeout(probeTimer); probeTimer = 0; probe(); } };
  model.on("msg:custom", onMessage);
  model.on("comm_live_update", onCommLive);

  return {
    request,
    get status() { return status; },
    get canWrite() { return status === "live"; },
    on(type, fn) {
      if (!handlers.has(type)) handlers.set(type, new Set());
      handlers.get(type).add(fn);
      return () => handlers.get(type).delete(fn);
    },
    onStatus(fn) { statusListeners.add(fn); return () => statusListeners.delete(fn); },
    probe: () => { clearTimeout(probeTimer); probeTimer = 0; probe(); },
    destroy() {
      destroyed = true;
      clearTimeout(probeTimer);
      for (const entry of pending.values()) clearTimeout(entry.timer);
      pending.clear();
      model.off("msg:custom", onMessage);
      model.off("comm_live_update", onCommLive);
    },
  };
}
