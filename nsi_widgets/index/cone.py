"""One unit's value from its receptive cone alone, for layers reached by a chain of local modules.

A unit at ``(y, x)`` of a layer depends on a window of the input and, at every layer before it, on a
window of that layer's map: its *cone*, which narrows layer by layer. When the modules up to the
layer form a plain chain (each consumes the previous one's output, as in VGG and AlexNet feature
stacks), the unit's value comes out of running the chain on the cone alone: cut the input window,
and before each convolution or pooling pad explicitly with what the module's own padding supplies
(zeros; ``-inf`` for max pooling) where the cone crosses the true border of that module's input map,
then apply the module without padding. A sub-image forward (:mod:`nsi_widgets.local_forward`)
computes whole sub-image maps at every layer instead, several times the work in deep layers.

Checked, not assumed: :func:`chain_cone` returns None unless every module is of a supported kind and
running the modules one after another reproduces the layer's output on a probe image; the engine's
sample self-check then compares the results with the plain definition, border windows included.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core import modules
from ..core.layers import modules_run_before

@dataclass(frozen=True)
class _Step:
    """One module of the chain and, for convolutions and pooling, its geometry per axis."""

    module: nn.Module
    kind: str                      # "pointwise", "conv", "max", "avg"
    kernel: tuple[int, int] = (1, 1)   # effective extent: dilation * (kernel - 1) + 1
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)


def _step(module: nn.Module) -> _Step | None:
    """The chain step of ``module``, or None when the cone forward does not support it.

    Kinds and geometry come from :mod:`nsi_widgets.core.modules`; the cone supports the pointwise
    modules, zero-padded 2-d convolutions (of exactly ``nn.Conv2d``), 2-d max pooling, and 2-d average
    pooling without ``ceil_mode`` or a divisor override.
    """
    if modules.kind(module) == "pointwise":
        return _Step(module, "pointwise") if modules.is_local(module) else None
    try:
        geometry = modules.window(module)
    except ValueError:
        return None
    if geometry is None or geometry.ndim != 2 or isinstance(geometry.padding, str):
        return None
    if geometry.op == "conv" and type(module) is nn.Conv2d and module.padding_mode == "zeros":
        return _Step(module, "conv", geometry.extent, geometry.stride, geometry.padding)
    if geometry.op == "max" and isinstance(module, nn.MaxPool2d):
        return _Step(module, "max", geometry.extent, geometry.stride, geometry.padding)
    if geometry.op == "avg" and isinstance(module, nn.AvgPool2d) and not module.ceil_mode \
            and module.divisor_override is None:
        if geometry.padding != (0, 0) and not module.count_include_pad:
            return None
        return _Step(module, "avg", geometry.kernel, geometry.stride, geometry.padding)
    return None


@dataclass(frozen=True)
class AxisCone:
    """The cone of one output row (or column) along one axis.

    ``start``/``stop``: the input rows to cut (inside the image); ``pads[i]``: rows added before and
    after the input of step ``i``; ``key``: equal keys mean the same shapes and pads (batchable).
    """

    start: int
    stop: int
    pads: tuple[tuple[int, int], ...]

    @property
    def key(self) -> tuple:
        return (self.stop - self.start, self.pads)


class ChainCone:
    """Runs a verified chain of local modules on cones. Build with :func:`chain_cone`."""

    def __init__(self, steps: list[_Step], sizes: list[tuple[int, int]]):
        self.steps = steps
        self.sizes = sizes          # sizes[i]: (H, W) of the input of step i; sizes[-1]: the layer's map
        self._cache: dict[tuple[int, int], AxisCone] = {}

    def axis(self, axis: int, position: int) -> AxisCone:
        """The cone of output row (``axis=0``) or column (``axis=1``) ``position``."""
        key = (axis, int(position))
        if key not in self._cache:
            start, stop = int(position), int(position) + 1
            pads = []
            for i in range(len(self.steps) - 1, -1, -1):
                step, size = self.steps[i], self.sizes[i][axis]
                if step.kind != "pointwise":
                    start, stop = (start * step.stride[axis] - step.padding[axis],
                                   (stop - 1) * step.stride[axis] - step.padding[axis] + step.kernel[axis])
                pads.append((max(0, -start), max(0, stop - size)))
                start, stop = max(start, 0), min(stop, size)
            self._cache[key] = AxisCone(start, stop, tuple(reversed(pads)))
        return self._cache[key]

    def run(self, inputs: torch.Tensor, rows: AxisCone, columns: AxisCone) -> torch.Tensor:
        """``inputs`` (B, C, h, w): the model inputs of the cone's window; returns the layer's (B, C')."""
        x = inputs
        for step, (top, bottom), (left, right) in zip(self.steps, rows.pads, columns.pads):
            if step.kind == "pointwise":
                x = step.module(x)
                continue
            # The part of the padding that is the same on both sides goes to the module's own padding
            # argument (no copy); only the rest is padded explicitly.
            both = (min(top, bottom), min(left, right))
            extra = (left - both[1], right - both[1], top - both[0], bottom - both[0])
            if any(extra):
                x = F.pad(x, extra, value=-torch.inf if step.kind == "max" else 0.0)
            m = step.module
            if step.kind == "conv":
                x = F.conv2d(x, m.weight, m.bias, m.stride, both, m.dilation, m.groups)
            elif step.kind == "max":
                x = F.max_pool2d(x, m.kernel_size, m.stride, both, m.dilation)
            else:
                x = F.avg_pool2d(x, m.kernel_size, m.stride, both, count_include_pad=True)
        if x.shape[-2:] != (1, 1):
            raise RuntimeError(f"cone forward produced a {tuple(x.shape[-2:])} map instead of 1x1")
        return x[:, :, 0, 0]


def chain_cone(model: nn.Module, layer_module: nn.Module, probe_input: torch.Tensor) -> ChainCone | None:
    """A :class:`ChainCone` for ``layer_module``, or None when the modules up to it are not a plain
    chain of supported local modules (then sub-image forwards are used).

    ``probe_input``: one model input (1, C, H, W) of the dataset's image size.
    """
    recorded = {}
    # Registered before modules_run_before's hooks, so it fires first in that same forward pass.
    handle = layer_module.register_forward_hook(lambda m, i, o: recorded.__setitem__("out", o))
    try:
        leaves = modules_run_before(model, layer_module, probe_input)
    finally:
        handle.remove()
    steps = [_step(m) for m in leaves]
    if not steps or any(s is None for s in steps):
        return None
    sizes = []
    with torch.inference_mode():
        x = probe_input
        try:
            for step in steps:
                if x.ndim != 4:
                    return None
                sizes.append(tuple(x.shape[-2:]))
                x = step.module(x)
        except Exception:                # noqa: BLE001
            return None
        out = recorded.get("out")
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            return None
        scale = max(1.0, float(out.abs().max()))
        if not torch.allclose(x, out, rtol=1e-5, atol=1e-6 * scale):
            return None
    sizes.append(tuple(x.shape[-2:]))
    return ChainCone(steps, sizes)
