"""Fingerprints of what a run depends on: model weights, data, preprocess (checkpoint keys).

* :func:`model_fingerprint`: the model's class, parameter and buffer names, shapes, dtypes and values.
* :func:`data_fingerprint`: the dataset's length, the shape of its first image, and a SHA-256 of
  :data:`DATA_SAMPLES` items spread evenly over the dataset (first and last included): their image
  values and labels as read by the engine. Cheap (16 items are read) but real: two folders of the same
  size differ in the sampled items almost surely. Limit: datasets that differ only in items that are
  not sampled are not told apart.
* :func:`callable_fingerprint`: a preprocess function's module and qualified name, its code (byte
  code, constants, names), default arguments and closure values; an ``nn.Module`` by its class and
  weights; a ``functools.partial`` by its function and arguments. Limit: values captured by a closure
  or given as arguments are identified by their contents only when they are numbers, strings, tensors,
  arrays, or tuples/lists/dicts of them; other objects by their type's name.
"""
from __future__ import annotations

import functools
import hashlib
import types
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

DATA_SAMPLES = 16


def model_fingerprint(model: nn.Module) -> str:
    """A stable hex digest of a model's class, parameter/buffer names, shapes and values."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(str(tensor.dtype).encode())
            digest.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                          if tensor.numel() else b"")
    return digest.hexdigest()[:32]


def data_fingerprint(data, read_item: Callable[[int], tuple[torch.Tensor, int]]) -> dict:
    """``{"length", "item_shape", "sample_sha256"}`` of a dataset; ``read_item(index)`` returns the
    image tensor and label the engine would use."""
    n = len(data)
    picks = sample_indices(n)
    digest = hashlib.sha256()
    shape = None
    for i in picks:
        image, label = read_item(i)
        shape = shape or list(image.shape)
        digest.update(f"{i}:{tuple(image.shape)}:{label}:".encode())
        digest.update(image.contiguous().numpy().tobytes())
    return {"length": n, "item_shape": shape, "sample_sha256": digest.hexdigest()[:32]}


def sample_indices(n: int) -> list[int]:
    """The items :func:`data_fingerprint` reads: :data:`DATA_SAMPLES` spread evenly, first and last included."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, DATA_SAMPLES))})


def callable_fingerprint(fn) -> str:
    """A digest of a preprocess (or any callable) that changes when its behaviour may change."""
    if fn is None:
        return "none"
    digest = hashlib.sha256()
    _feed(digest, fn, depth=0)
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    return f"{name}:{digest.hexdigest()[:24]}"


def _feed(digest, value, depth: int) -> None:
    """Add ``value``'s identifying content to ``digest`` (bounded depth: cycles and huge graphs stop)."""
    if depth > 6:
        digest.update(b"<deep>")
        return
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        digest.update(f"{type(value).__name__}:{value!r}".encode())
    elif isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        digest.update(f"tensor{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, np.ndarray) and not value.dtype.hasobject:
        digest.update(f"array{value.shape}{value.dtype}".encode() + np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (tuple, list)):
        digest.update(f"{type(value).__name__}[{len(value)}]".encode())
        for v in value:
            _feed(digest, v, depth + 1)
    elif isinstance(value, dict):
        digest.update(f"dict[{len(value)}]".encode())
        for k in sorted(value, key=repr):
            _feed(digest, k, depth + 1)
            _feed(digest, value[k], depth + 1)
    elif isinstance(value, nn.Module):
        digest.update(f"module:{type(value).__module__}.{type(value).__qualname__}:{model_fingerprint(value)}".encode())
    elif isinstance(value, functools.partial):
        digest.update(b"partial")
        for part in (value.func, value.args, value.keywords):
            _feed(digest, part, depth + 1)
    elif isinstance(value, types.MethodType):
        _feed(digest, value.__func__, depth + 1)
        _feed(digest, value.__self__, depth + 1)
    elif isinstance(value, types.FunctionType):
        digest.update(f"function:{value.__module__}.{value.__qualname__}".encode())
        _feed_code(digest, value.__code__)
        _feed(digest, value.__defaults__, depth + 1)
        _feed(digest, value.__kwdefaults__, depth + 1)
        for cell in value.__closure__ or ():
            try:
                _feed(digest, cell.cell_contents, depth + 1)
            except ValueError:  # an empty cell
                digest.update(b"<empty>")
    elif callable(value) and hasattr(value, "__dict__") and not isinstance(value, type):
        digest.update(f"object:{type(value).__module__}.{type(value).__qualname__}".encode())
        _feed(digest, {k: v for k, v in vars(value).items() if not k.startswith("__")}, depth + 1)
    else:
        digest.update(f"<{type(value).__module__}.{type(value).__qualname__}>".encode())


def _feed_code(digest, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        else:
            digest.update(repr(const).encode())
