"""One base for results kept per layer: a read-only mapping ``result[layer]`` in layer order."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Iterator


class LayerMapping(Mapping):
    """``result[layer]``, ``iter(result)``, ``len(result)`` and ``result.layers`` over ``self._layers``.

    Subclasses set ``self._layers`` (a dict, layer name -> per-layer result, in layer order) and may
    set ``_what`` (how the error for an unknown layer names the result, e.g. ``"index"``).
    """

    _layers: dict
    _what = "result"

    def __getitem__(self, layer: str):
        try:
            return self._layers[layer]
        except KeyError:
            raise KeyError(f"no layer {layer!r} in this {self._what}; its layers: {list(self._layers)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    @property
    def layers(self) -> list[str]:
        """The layer names, in order."""
        return list(self._layers)
