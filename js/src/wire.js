// Values from the kernel (or the exported page): arrays as {__array__: dtype, shape, data} with
// little-endian bytes (nsi_widgets/widgets/_wire.py), images as PNG bytes (DataView).
import { toU8 } from "./util.js";

const TYPES = {
  float32: Float32Array, float64: Float64Array, int32: Int32Array, int16: Int16Array, int8: Int8Array,
  uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array,
};

/** A typed array over an encoded array (copied only when the bytes are not aligned). */
export function typed(a) {
  if (!a || !a.__array__) return new Float32Array(0);
  const Type = TYPES[a.__array__];
  if (!Type) throw new Error(`nsi-widgets: unknown dtype ${a.__array__}`);
  const u8 = toU8(a.data);
  const n = u8.byteLength / Type.BYTES_PER_ELEMENT;
  if (u8.byteOffset % Type.BYTES_PER_ELEMENT === 0) return new Type(u8.buffer, u8.byteOffset, n);
  return new Type(u8.slice().buffer, 0, n);
}

/** Shape of an encoded array. */
export function shapeOf(a) {
  return (a && a.shape) || [0];
}

/** Put a custom message's binary buffers back where {__buffer__: i} stands. */
export function unpack(value, buffers) {
  if (Array.isArray(value)) return value.map((v) => unpack(v, buffers));
  if (value && typeof value === "object" && !ArrayBuffer.isView(value)) {
    if (typeof value.__buffer__ === "number") return buffers ? buffers[value.__buffer__] : null;
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = unpack(v, buffers);
    return out;
  }
  return value;
}
