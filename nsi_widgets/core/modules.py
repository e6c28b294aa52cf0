"""The one table of module kinds: which modules are local, and their spatial geometry.

Receptive fields (:mod:`.receptive_field`), the receptive-cone shortcut (:mod:`nsi_widgets.index.cone`)
and the engine's check that a layer's units depend only on their receptive field all read this table,
so they cannot disagree.

Kinds (in eval mode):

* ``pointwise``: acts on each spatial position separately and keeps the map's geometry
  (activations, dropout, batch norm with running statistics, channel-wise normalisation, channel
  shuffles). Batch norm in training mode is not (it normalises with statistics of the whole batch):
  :func:`is_local` says so through ``needs_eval``.
* ``window``: a sliding window, convolution or pooling, with a :class:`Window` geometry.
* ``pad``: explicit padding of the spatial axes.
* ``local``: depends on a window of its input but has no geometry rule here (transposed and 3-d
  convolutions): local for the engine's shortcut check, unknown for receptive fields.

Anything else (adaptive pooling, linear layers, instance/group/layer norm, attention, unknown
custom modules) is *not local*: its output at a position may depend on the whole input.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def _classes(*names: str) -> tuple[type, ...]:
    return tuple(getattr(nn, n) for n in names if hasattr(nn, n))


_POINTWISE = _classes(
    "Identity", "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU",
    "Mish", "Sigmoid", "Hardsigmoid", "Tanh", "Hardtanh", "Hardswish", "Hardshrink", "Softshrink",
    "Tanhshrink", "Softplus", "Softsign", "LogSigmoid", "Threshold", "Dropout", "Dropout1d",
    "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout", "BatchNorm1d", "BatchNorm2d",
    "SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d", "LocalResponseNorm", "CrossMapLRN2d",
    "ChannelShuffle", "Softmax2d")
#: Pointwise only when they act along the channel axis (``dim == 1``).
_CHANNEL_DIM = _classes("Softmax", "LogSoftmax", "Softmin", "GLU")
_NEEDS_EVAL = _classes("BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d")
_CONV = _classes("Conv1d", "Conv2d")
_MAX_POOL = _classes("MaxPool1d", "MaxPool2d")
_AVG_POOL = _classes("AvgPool1d", "AvgPool2d")
_LP_POOL = _classes("LPPool1d", "LPPool2d")
_PAD = _classes("ZeroPad1d", "ZeroPad2d", "ConstantPad1d", "ConstantPad2d", "ReflectionPad1d",
                "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d", "CircularPad1d", "CircularPad2d")
_LOCAL_WITHOUT_GEOMETRY = _classes("Conv3d", "ConvTranspose1d", "ConvTranspose2d", "MaxPool3d", "AvgPool3d")


@dataclass(frozen=True)
class Window:
    """Geometry of a sliding window over the last ``ndim`` axes.

    ``op`` is ``"conv"``, ``"max"``, ``"avg"`` or ``"lp"``; ``kernel``, ``stride``, ``dilation`` per
    axis; ``padding`` per axis, or ``"same"``/``"valid"`` for string-padded convolutions.
    """

    op: str
    ndim: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]

    @property
    def extent(self) -> tuple[int, ...]:
        """Effective kernel extent per axis: ``dilation * (kernel - 1) + 1``."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))


def ntuple(value, n: int) -> tuple[int, ...]:
    """``value`` (an int or a sequence of 1 or ``n`` ints) as an ``n``-tuple of ints."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(f"expected {n} values, got {value}")
    return value


def kind(module: nn.Module) -> str | None:
    """``"pointwise"``, ``"window"``, ``"pad"``, ``"local"`` or None (not local / unknown)."""
    if isinstance(module, _POINTWISE):
        return "pointwise"
    if isinstance(module, _CHANNEL_DIM):
        return "pointwise" if getattr(module, "dim", None) == 1 else None
    if isinstance(module, _CONV + _MAX_POOL + _AVG_POOL + _LP_POOL):
        return "window"
    if isinstance(module, _PAD):
        return "pad"
    if isinstance(module, _LOCAL_WITHOUT_GEOMETRY):
        return "local"
    return None


def needs_eval(module: nn.Module) -> bool:
    """Whether the module is pointwise only in eval mode (batch norm with running statistics)."""
    return isinstance(module, _NEEDS_EVAL)


def is_local(module: nn.Module) -> bool:
    """Whether the module's output at a position depends only on a window of its input, as it is now
    (a batch norm in training mode is not)."""
    return kind(module) is not None and not (needs_eval(module) and module.training)


def window(module: nn.Module) -> Window | None:
    """The :class:`Window` of a convolution or pooling module, or None for other kinds.

    Raises ValueError for a pool that returns indices (not a single tensor).
    """
    if isinstance(module, _CONV):
        n = len(module.kernel_size)
        padding = module.padding if isinstance(module.padding, str) else ntuple(module.padding, n)
        return Window("conv", n, ntuple(module.kernel_size, n), ntuple(module.stride, n), padding,
                      ntuple(module.dilation, n))
    for classes, op in ((_MAX_POOL, "max"), (_AVG_POOL, "avg"), (_LP_POOL, "lp")):
        if isinstance(module, classes):
            n = 1 if type(module).__name__.endswith("1d") else 2
            if getattr(module, "return_indices", False):
                raise ValueError(f"{type(module).__name__} returns (values, indices), not a single tensor")
            kernel = ntuple(module.kernel_size, n)
            stride = kernel if module.stride is None or module.stride == () else ntuple(module.stride, n)
            return Window(op, n, kernel, stride, ntuple(getattr(module, "padding", 0), n),
                          ntuple(getattr(module, "dilation", 1), n))
    return None


def padding(module: nn.Module) -> tuple[int, ...] | None:
    """The ``(left, right[, top, bottom])`` padding of a padding module, or None for other kinds."""
    return tuple(module.padding) if isinstance(module, _PAD) else None
