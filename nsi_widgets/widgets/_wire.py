"""How values travel to the browser: arrays as dtype + shape + raw bytes, images as PNG bytes.

Two transports carry the same structures:

* live (a kernel): synced traits keep ``bytes`` in place (ipywidgets moves them to binary
  buffers); custom messages go through :func:`pack`, which replaces every ``bytes`` by
  ``{"__buffer__": i}`` and returns the buffers to send beside the JSON;
* the exported page: :func:`embed` replaces every ``bytes`` by ``{"__bytes__": base64}`` inside
  the page's JSON (``js/src/shim.js:revive`` turns them back into ``DataView`` objects).

An array is ``{"__array__": dtype, "shape": [...], "data": bytes}`` (little-endian), what
``js/src/wire.js:typed`` turns into a typed array without copying.
"""
from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

#: dtypes the browser reads as typed arrays (js/src/wire.js)
_DTYPES = {"float32": "<f4", "float64": "<f8", "int32": "<i4", "int16": "<i2", "uint8": "u1", "int8": "i1",
           "uint16": "<u2", "uint32": "<u4"}


def array(values, dtype: str = "float32") -> dict:
    """An array as ``{"__array__": dtype, "shape", "data"}`` with little-endian bytes."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} cannot travel to the browser; use one of {sorted(_DTYPES)}")
    a = np.ascontiguousarray(values, dtype=_DTYPES[dtype])
    return {"__array__": dtype, "shape": [int(s) for s in a.shape], "data": a.tobytes()}


def label_dtype(n_classes: int) -> str:
    """The smallest signed dtype that holds class labels ``-1 .. n_classes - 1``."""
    return "int16" if n_classes < 2**15 else "int32"


def plain(value: Any) -> Any:
    """NumPy scalars and arrays to Python values (arrays as :func:`array`), NaN/inf to None, recursively.

    ``bytes`` stay ``bytes``; :func:`pack` or :func:`embed` decide how they travel.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        kind = {"f": "float32", "b": "uint8", "u": "uint8" if value.dtype.itemsize == 1 else "uint32"}.get(
            value.dtype.kind, "int32")
        return array(value, kind)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def pack(value: Any) -> tuple[Any, list[bytes]]:
    """``(json_value, buffers)`` for a custom message: every ``bytes`` becomes ``{"__buffer__": i}``."""
    buffers: list[bytes] = []

    def walk(v):
        if isinstance(v, bytes):
            buffers.append(v)
            return {"__buffer__": len(buffers) - 1}
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(plain(value)), buffers


def embed(value: Any) -> Any:
    """The value for the exported page's JSON: every ``bytes`` becomes ``{"__bytes__": base64}``."""
    v = plain(value)

    def walk(x):
        if isinstance(x, bytes):
            return {"__bytes__": base64.b64encode(x).decode("ascii")}
        if isinstance(x, dict):
            return {k: walk(y) for k, y in x.items()}
        if isinstance(x, list):
            return [walk(y) for y in x]
        return x

    return walk(v)
