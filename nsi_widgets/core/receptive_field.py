"""Receptive fields of units in a CNN layer (METHODS.md section 2).

Two ways to get the geometry of the input window seen by one unit of a layer:

* analytic: trace the model with ``torch.fx`` and propagate, per spatial axis, the size ``r``,
  stride ``S`` and padding ``P`` of the field along the graph (the chain formulas of Araujo et al.,
  Distill 2019). Branches that meet (``x + y``, ``torch.cat``, ``x * gate``) take the hull of their
  windows, which is the largest field over the paths. A module or operation whose geometry is not
  known exactly (adaptive pooling, linear layers, attention, anything fx cannot trace, a custom
  module that is not elementwise) makes the field underivable: the analytic method never guesses.
* empirical: measure which input pixels have a non-zero gradient for a few output units of a
  prepared copy of the model, and solve for ``(r, S, P)``.

``receptive_field(..., method="auto")`` uses the analytic method and falls back to the empirical one
with a warning.
"""
from __future__ import annotations

import builtins
import copy
import difflib
import inspect
import math
import operator
import re
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from . import modules

__all__ = ["ReceptiveField", "receptive_field"]


@dataclass(frozen=True)
class ReceptiveField:
    """Geometry of the input window seen by one unit of a layer, per axis ``(h, w)``.

    Output unit ``(y, x)`` covers input rows ``[y*stride[0] - padding[0], ... + size[0])``
    and the analogous columns; rows or columns outside the image are the network's padding.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    method: str = "analytic"

    def window(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Return ``(y0, x0, y1, x1)``: the input window of unit ``(y, x)``, end exclusive."""
        y0 = y * self.stride[0] - self.padding[0]
        x0 = x * self.stride[1] - self.padding[1]
        return y0, x0, y0 + self.size[0], x0 + self.size[1]

    def to_dict(self) -> dict:
        return {"size": list(self.size), "stride": list(self.stride),
                "padding": list(self.padding), "method": self.method}

    @classmethod
    def from_dict(cls, d: dict) -> "ReceptiveField":
        return cls(tuple(d["size"]), tuple(d["stride"]), tuple(d["padding"]), d.get("method", "analytic"))


_METHODS = ("auto", "analytic", "empirical")
# Random inputs whose gradient supports the empirical method unites (see `receptive_field`, Notes).
_EMPIRICAL_SAMPLES = 4


def receptive_field(model: nn.Module, layer: str | nn.Module, input_size=(224, 224),
                    method: str = "auto") -> ReceptiveField:
    """Receptive field of the units of one layer's output.

    Parameters
    ----------
    model : torch.nn.Module
        The network. It is not modified (the empirical method works on a deep copy).
    layer : str or torch.nn.Module
        A dotted name from ``model.named_modules()`` (``""`` is the whole model) or the module
        itself. The field is that of the tensor the module returns.
    input_size : int or tuple of int, default (224, 224)
        ``(H, W)``, ``(C, H, W)`` or a single int for a square input. Only the empirical method
        uses it: it feeds inputs of this size (``C`` defaults to the ``in_channels`` of the model's
        first convolution). For a model whose first convolution is a ``Conv1d``, the input is a
        signal of length ``input_size[-1]`` and the ``h`` axis is reported as size 1, stride 1,
        padding 0.
    method : {"auto", "analytic", "empirical"}, default "auto"
        ``"analytic"`` derives the field from the modules' geometry and raises ``ValueError`` when
        some operation between the input and the layer has no exactly known geometry.
        ``"empirical"`` measures it from input gradients. ``"auto"`` is analytic when possible,
        else empirical with a ``UserWarning``.

    Returns
    -------
    ReceptiveField
        ``size``, ``stride`` and ``padding`` per axis ``(h, w)``: output unit ``y`` covers input
        pixels ``[y*stride - padding, y*stride - padding + size)``. Where branches meet (residual
        additions, concatenations) the field is the hull of the branches' windows, i.e. the largest
        field over the paths. ``method`` says which method produced it.

    Raises
    ------
    ValueError
        Unknown layer name, bad ``input_size`` or ``method``, an underivable geometry with
        ``method="analytic"``, or a field that cannot be measured with ``method="empirical"``
        (the message says why, e.g. the input is too small to see a window edge).

    Notes
    -----
    The analytic method traces ``model.forward`` with ``torch.fx`` (forward arguments after the
    input are fixed to their defaults). Submodules that fx cannot trace are opaque, so layers
    before them still resolve. Rules: ``Conv1d``/``Conv2d`` and their functional forms (a weight
    computed from parameters is evaluated for its shape), max/avg/LP pools (functional too, any
    ``ceil_mode``), padding modules and ``F.pad``, and operations that keep the geometry:
    elementwise activations, batch norm (inference), dropout, channel-only operations, arithmetic,
    ``torch.cat`` along channels. Anything else on the path from the input to the layer
    (adaptive pools, ``Linear``, upsampling, group/layer norm, attention, slicing, ...) makes the
    field underivable. A 1-d convolution acts on the ``w`` axis.

    The empirical method works on a deep copy in eval mode, in float64 (float32 on devices
    without it; the copy costs memory of that size), and makes every pixel of a window visible in
    the gradient: all parameters are replaced by positive values (so activations stay positive,
    ReLUs stay on and contributions cannot cancel), batch-norm statistics are reset to 0 / 1, max
    pools are replaced by the mean over the same windows and adaptive max pools by adaptive
    average pools (a max passes gradient to one pixel only). The support of ``|grad|`` summed over
    channels and over 4 random positive inputs is taken for units at the start, centre and end of
    each axis. Edges are measured against the pixels that some unit of the layer sees (strided
    layers can drop the last rows of an input, which then bound the windows instead of the image
    edge). From the last units' window starts and the first units' window ends that lie strictly
    inside those pixels it solves ``stride``, ``padding`` and ``size``, then checks every probed
    unit against the prediction. It therefore needs, on each axis, two units whose window starts
    inside the image (or two whose window ends inside it) and at least one of each kind: the field
    may exceed the input as long as the first units see its end and the last units its start. A
    dilated kernel is reported by the hull of its support, as in the analytic formula; holes at
    the image edges (dilation, stride larger than kernel) can hide an edge, and then the method
    asks for a larger input rather than guessing. Operations that mix the samples of a batch are
    not supported. The layer must be called once per forward pass (analytic: several calls must
    have the same field).

    Where strided layers drop the last rows or columns of an input, no unit sees them, so near
    that border a unit's window covers pixels that do not affect it.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name, module = _resolve_layer(model, layer)
    channels, spatial = _parse_input_size(input_size)

    if method == "analytic":
        try:
            return _analytic(model, name, module)
        except _AnalyticUnavailable as err:
            raise _AnalyticUnavailable(f"receptive field of layer {name!r} cannot be derived analytically: "
                                       f"{err}; method='empirical' (or 'auto') measures it instead") from None
    if method == "empirical":
        return _empirical(model, name, channels, spatial)
    try:
        return _analytic(model, name, module)
    except _AnalyticUnavailable as analytic_error:
        warnings.warn(
            f"receptive field of layer {name!r} cannot be derived analytically ({analytic_error}); "
            f"measuring it empirically from input gradients on input size {input_size}",
            UserWarning, stacklevel=2)
        try:
            return _empirical(model, name, channels, spatial)
        except ValueError as empirical_error:
            raise ValueError(
                f"receptive field of layer {name!r}: analytic derivation failed ({analytic_error}) and "
                f"so did the empirical measurement ({empirical_error})") from empirical_error


# --------------------------------------------------------------------------------------------
# Arguments


def _resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Return ``(dotted name, module)`` for a layer given by name or as a module object."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(f"the {type(layer).__name__} passed as layer is not a submodule of the model; "
                         f"pass one of the model's modules or its name (see nsi_widgets.list_layers(model))")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module name (str) or a torch.nn.Module, got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer in modules:
        return layer, modules[layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(layer, names, n=5)
    shown = close or names[:8]
    more = f" ({len(names)} in all)" if len(names) > len(shown) else ""
    raise ValueError(f"unknown layer {layer!r}; valid names include {', '.join(map(repr, shown))}{more}; "
                     f"see nsi_widgets.list_layers(model)")


def _parse_input_size(input_size) -> tuple[int | None, tuple[int, int]]:
    """Return ``(channels or None, (H, W))`` from an int, ``(L,)``, ``(H, W)`` or ``(C, H, W)``."""
    if isinstance(input_size, bool):
        raise TypeError("input_size must be an int or a tuple of ints")
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    try:
        values = tuple(input_size)
    except TypeError:
        raise TypeError(f"input_size must be an int or a tuple of ints, got {input_size!r}") from None
    if not values or len(values) > 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                for v in values):
        raise ValueError(f"input_size must be (H, W), (C, H, W) or a positive int, got {input_size!r}")
    if len(values) == 1:
        return None, (1, values[0])
    if len(values) == 2:
        return None, (values[0], values[1])
    return values[0], (values[1], values[2])


# --------------------------------------------------------------------------------------------
# Analytic: torch.fx trace + propagation of (r, S, P) per axis


class _AnalyticUnavailable(ValueError):
    """The geometry of the requested layer cannot be derived exactly."""


class _Unknown:
    """Propagation state of a value whose geometry is not known; carries the reason."""

    def __init__(self, reason: str):
        self.reason = reason


# A value that does not depend on the input image (parameters, shapes, constants).
_CONST = "const"
# Per axis (h, w): (size r, stride S, padding P); the input image itself.
_IDENTITY = ((1, 1, 0), (1, 1, 0))


def _is_geometry(state) -> bool:
    return isinstance(state, tuple)


class _RecordingTracer(fx.Tracer):
    """fx tracer that records each module call's output and makes untraceable submodules opaque."""

    def __init__(self):
        super().__init__()
        self.module_outputs: dict[int, list[Any]] = {}
        self.untraceable: dict[str, str] = {}

    def call_module(self, m, forward, args, kwargs):
        name = self.path_of_module(m)
        if self.is_leaf_module(m, name):
            result = super().call_module(m, forward, args, kwargs)
        else:
            depth = len(self.module_stack)
            try:
                result = super().call_module(m, forward, args, kwargs)
            except Exception as err:  # noqa: BLE001 - any tracing failure makes the module opaque
                while len(self.module_stack) > depth:
                    self.module_stack.popitem(last=True)
                self.untraceable[name] = f"{type(err).__name__}: {err}".splitlines()[0]
                result = self.create_proxy("call_module", name, args, kwargs)
        self.module_outputs.setdefault(id(m), []).append(result)
        return result


def _analytic(model: nn.Module, name: str, module: nn.Module) -> ReceptiveField:
    tracer = _RecordingTracer()
    try:
        graph = tracer.trace(model, concrete_args=_default_arguments(model) or None)
    except Exception as err:  # noqa: BLE001 - report any tracing failure as underivable
        raise _AnalyticUnavailable(
            f"torch.fx cannot trace {type(model).__name__}.forward "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err

    if name == "":
        output = next(n for n in graph.nodes if n.op == "output")
        results = [output.args[0]]
    else:
        results = tracer.module_outputs.get(id(module), [])
    if not results:
        opaque = (f"; submodules torch.fx could not trace: {', '.join(sorted(tracer.untraceable))}"
                  if tracer.untraceable else "")
        raise _AnalyticUnavailable(f"layer {name!r} is not reached when tracing model.forward{opaque}")

    states = _propagate(model, graph, tracer)
    geometries = []
    for result in results:
        node = result.node if isinstance(result, fx.Proxy) else result
        if not isinstance(node, fx.Node):
            raise _AnalyticUnavailable(f"layer {name!r} returns a {type(result).__name__}, not a single tensor")
        state = states.get(node, _CONST)
        if isinstance(state, _Unknown):
            raise _AnalyticUnavailable(state.reason)
        if not _is_geometry(state):
            raise _AnalyticUnavailable(f"the output of layer {name!r} does not depend on the model's input")
        geometries.append(state)
    if any(g != geometries[0] for g in geometries):
        raise _AnalyticUnavailable(f"layer {name!r} is called {len(geometries)} times in forward with "
                                   f"different receptive fields")
    (rh, sh, ph), (rw, sw, pw) = geometries[0]
    return ReceptiveField((rh, rw), (sh, sw), (ph, pw), "analytic")


def _default_arguments(model: nn.Module) -> dict[str, Any]:
    """Forward arguments after the input that have defaults: traced as those constants."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters[1:]
            if p.default is not p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _propagate(model: nn.Module, graph: fx.Graph, tracer: _RecordingTracer) -> dict:
    """State of every node: geometry ``((r, S, P), (r, S, P))``, ``_CONST`` or ``_Unknown``."""
    states: dict[fx.Node, Any] = {}
    seen_input = False
    for node in graph.nodes:
        if node.op == "placeholder":
            if not seen_input:
                states[node] = _IDENTITY
                seen_input = True
            else:
                states[node] = _Unknown(f"forward input {node.target!r} besides the image")
        elif node.op == "get_attr":
            states[node] = _CONST
        elif node.op in ("call_module", "call_function", "call_method"):
            inputs = [states.get(n, _CONST) for n in node.all_input_nodes]
            if all(s is _CONST for s in inputs):
                states[node] = _CONST  # computed from parameters and constants only
            else:
                try:
                    if node.op == "call_module":
                        states[node] = _module_rule(model, node, states, tracer)
                    elif node.op == "call_function":
                        states[node] = _function_rule(model, node, states)
                    else:
                        states[node] = _method_rule(node, states)
                except (ValueError, TypeError, AttributeError, KeyError) as err:
                    states[node] = _Unknown(f"cannot read the geometry of {node.op} {node.target!r} ({err})")
    return states


# --- geometry of single operations




def _window_op(state, kernel, stride, padding, dilation, what: str):
    """Apply a sliding window (conv or pool) acting on the last ``len(kernel)`` axes."""
    if not _is_geometry(state):
        return state
    n = len(kernel)
    if n not in (1, 2):
        return _Unknown(f"{what}: {n}-d windows are not supported")
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * n
        elif padding == "same":
            # PyTorch pads total d*(k-1), the smaller half before: left = total // 2.
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        else:
            return _Unknown(f"{what}: unknown padding {padding!r}")
    axes = list(state)
    for i in range(n):
        axis = len(axes) - n + i
        r, S, P = axes[axis]
        k_eff = dilation[i] * (kernel[i] - 1) + 1
        axes[axis] = (r + (k_eff - 1) * S, S * stride[i], P + padding[i] * S)
    return tuple(axes)


def _pad_op(state, pad, what: str):
    """Explicit padding ``(left, right[, top, bottom])``: shifts the window start by ``left * S``."""
    if not _is_geometry(state):
        return state
    pad = tuple(pad)
    if len(pad) not in (2, 4) or not all(isinstance(p, int) for p in pad):
        return _Unknown(f"{what}: padding {pad} of spatial axes other than the last two")
    axes = list(state)
    befores = [pad[0]] if len(pad) == 2 else [pad[2], pad[0]]  # pad lists the last axis first
    for i, before in enumerate(befores):
        axis = len(axes) - len(befores) + i
        r, S, P = axes[axis]
        axes[axis] = (r, S, P + before * S)
    return tuple(axes)


def _merge(states, what: str):
    """Hull of the windows of tensors combined elementwise or concatenated along channels."""
    geometries = []
    for state in states:
        if isinstance(state, _Unknown):
            return state
        if _is_geometry(state):
            geometries.append(state)
    if not geometries:
        return _CONST
    axes = []
    for axis in range(2):
        strides = {g[axis][1] for g in geometries}
        if len(strides) > 1:
            return _Unknown(f"{what} combines feature maps with different strides {sorted(strides)}")
        padding = max(g[axis][2] for g in geometries)
        end = max(g[axis][0] - g[axis][2] for g in geometries)  # window end relative to y*S
        axes.append((end + padding, strides.pop(), padding))
    return tuple(axes)


def _names(*names: str, namespace=nn) -> tuple:
    return tuple(getattr(namespace, n) for n in names if hasattr(namespace, n))


_ELEMENTWISE_FUNCTIONS = frozenset(
    _names("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "iadd", "isub",
           "imul", "itruediv", namespace=operator)
    + _names("add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "neg", "abs",
             "exp", "log", "sqrt", "rsqrt", "pow", "square", "maximum", "minimum", "clamp", "clip", "relu",
             "relu_", "sigmoid", "tanh", "where", "batch_norm", namespace=torch)
    + _names("relu", "relu_", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
             "hardswish", "hardsigmoid", "hardtanh", "softplus", "softsign", "tanh", "sigmoid",
             "logsigmoid", "prelu", "rrelu", "threshold", "dropout", "dropout1d", "dropout2d",
             "alpha_dropout", "feature_alpha_dropout", "batch_norm", "local_response_norm", namespace=F))
_CONCAT_FUNCTIONS = frozenset(_names("cat", "concat", "concatenate", namespace=torch))
_ELEMENTWISE_METHODS = frozenset({
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "abs", "exp", "log", "pow", "sqrt",
    "rsqrt", "square", "clamp", "clamp_", "clamp_min", "clamp_max", "clip", "relu", "relu_", "sigmoid",
    "sigmoid_", "tanh", "tanh_", "maximum", "minimum"})
# Methods whose result has the geometry of ``self`` alone (other arguments give dtype or device).
_SELF_METHODS = frozenset({"to", "type", "type_as", "float", "double", "half", "bfloat16", "contiguous",
                           "clone", "detach", "cpu", "cuda", "requires_grad_"})
_CONST_METHODS = frozenset({"size", "dim"})

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAX_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                  "divisor_override")
_FUNCTIONAL_WINDOWS = {
    torch.conv1d: (1, _CONV_ARGS), torch.conv2d: (2, _CONV_ARGS),
    F.max_pool1d: (1, _MAX_POOL_ARGS), F.max_pool2d: (2, _MAX_POOL_ARGS),
    torch.max_pool1d: (1, _MAX_POOL_ARGS), torch.max_pool2d: (2, _MAX_POOL_ARGS),
    F.avg_pool1d: (1, _AVG_POOL_ARGS), F.avg_pool2d: (2, _AVG_POOL_ARGS),
}


def _bind(node: fx.Node, names: tuple[str, ...]) -> dict[str, Any]:
    bound = dict(zip(names, node.args))
    bound.update(node.kwargs)
    return bound


def _fetch_attribute(model: nn.Module, target: str):
    value = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _constant_value(model: nn.Module, value, states: dict):
    """Evaluate a value that depends on parameters and constants only (e.g. a standardised conv
    weight); ``None`` if it depends on the input or cannot be evaluated."""
    if not isinstance(value, fx.Node):
        return value
    if states.get(value) is not _CONST:
        return None

    def evaluate(node):
        return fx.node.map_arg(node, lambda n: _constant_value(model, n, states))

    try:
        with torch.no_grad():
            if value.op == "get_attr":
                return _fetch_attribute(model, value.target)
            args, kwargs = evaluate(value.args), evaluate(value.kwargs)
            if value.op == "call_function":
                return value.target(*args, **kwargs)
            if value.op == "call_method":
                return getattr(args[0], value.target)(*args[1:], **kwargs)
            if value.op == "call_module":
                return model.get_submodule(value.target)(*args, **kwargs)
    except Exception:  # noqa: BLE001 - an unevaluable constant only makes the geometry unknown
        return None
    return None


def _module_rule(model: nn.Module, node: fx.Node, states: dict, tracer: _RecordingTracer):
    name = node.target
    module = model.get_submodule(name)
    what = f"module {name!r} ({type(module).__name__})"
    if name in tracer.untraceable:
        return _Unknown(f"{what} cannot be traced by torch.fx ({tracer.untraceable[name]})")
    if len(node.all_input_nodes) != 1 or not node.args:
        return _Unknown(f"{what} takes several tensor inputs")
    state = states[node.args[0]]
    if not _is_geometry(state):
        return state
    try:
        geometry = modules.window(module)
    except ValueError as err:
        return _Unknown(f"{what}: {err}")
    if geometry is not None:
        return _window_op(state, geometry.kernel, geometry.stride, geometry.padding, geometry.dilation, what)
    if modules.padding(module) is not None:
        return _pad_op(state, modules.padding(module), what)
    if modules.kind(module) == "pointwise":
        return state
    return _Unknown(f"no receptive-field rule for {what}: its spatial geometry is not known "
                    f"(only convolutions, pools, padding and elementwise modules are)")


def _function_rule(model: nn.Module, node: fx.Node, states: dict):
    target = node.target
    what = f"function {re.sub(r'_[0-9]+$', '', node.name)}"  # fx names nodes after the function
    if target in _FUNCTIONAL_WINDOWS:
        n, names = _FUNCTIONAL_WINDOWS[target]
        bound = _bind(node, names)
        state = states.get(bound.get("input"), _CONST) if isinstance(bound.get("input"), fx.Node) else _CONST
        if not _is_geometry(state):
            return state
        if "weight" in names:  # functional convolution: the kernel size comes from the weight
            weight = _constant_value(model, bound.get("weight"), states)
            if not isinstance(weight, torch.Tensor) or weight.dim() != n + 2:
                return _Unknown(f"{what} with a weight whose shape cannot be evaluated from the parameters")
            kernel = tuple(weight.shape[2:])
            stride = modules.ntuple(bound.get("stride", 1), n)
            padding = bound.get("padding", 0)
            padding = padding if isinstance(padding, str) else modules.ntuple(padding, n)
            dilation = modules.ntuple(bound.get("dilation", 1), n)
        else:
            if bound.get("return_indices"):
                return _Unknown(f"{what} returns (values, indices), not a single tensor")
            kernel = modules.ntuple(bound["kernel_size"], n)
            stride = bound.get("stride")
            stride = kernel if stride is None or stride == () or stride == [] else modules.ntuple(stride, n)
            padding = modules.ntuple(bound.get("padding", 0), n)
            dilation = modules.ntuple(bound.get("dilation", 1), n)
        if any(isinstance(v, fx.Node) for v in (*kernel, *stride, *dilation)) or (
                not isinstance(padding, str) and any(isinstance(v, fx.Node) for v in padding)):
            return _Unknown(f"{what} with window parameters computed at run time")
        return _window_op(state, kernel, stride, padding, dilation, what)
    if target is F.pad:
        bound = _bind(node, ("input", "pad", "mode", "value"))
        state = states.get(bound["input"], _CONST)
        pad = bound["pad"]
        if any(isinstance(p, fx.Node) for p in pad):
            return _Unknown(f"{what} with padding computed at run time")
        return _pad_op(state, pad, what)
    if target in _CONCAT_FUNCTIONS:
        bound = _bind(node, ("tensors", "dim"))
        if bound.get("dim", 0) != 1:
            return _Unknown(f"{what} along dim {bound.get('dim', 0)!r}: only channel (dim=1) "
                            f"concatenation keeps the spatial geometry")
        return _merge([states.get(n, _CONST) for n in node.all_input_nodes], what)
    if target in _ELEMENTWISE_FUNCTIONS:
        return _merge([states.get(n, _CONST) for n in node.all_input_nodes], what)
    if target is operator.getitem:
        return _Unknown(f"indexing or slicing a feature map (node {node.name!r})")
    if target is builtins.getattr and len(node.args) > 1 and node.args[1] in ("shape", "dtype", "device", "ndim"):
        return _CONST
    return _Unknown(f"no receptive-field rule for {what}")


def _method_rule(node: fx.Node, states: dict):
    method = node.target
    what = f"method .{method}()"
    self_state = states.get(node.args[0], _CONST) if node.args and isinstance(node.args[0], fx.Node) else _CONST
    if method in _CONST_METHODS:
        return _CONST
    if method in _SELF_METHODS:
        return self_state
    if method in _ELEMENTWISE_METHODS:
        return _merge([states.get(n, _CONST) for n in node.all_input_nodes], what)
    return _Unknown(f"no receptive-field rule for {what}")


# --------------------------------------------------------------------------------------------
# Empirical: support of input gradients on a prepared copy


class _WindowMean(nn.Module):
    """Mean over the windows of a max pool (same output shape and windows).

    Stand-in for a max pool in the empirical probe: a max passes gradient to one pixel of its
    window only, the mean to all of them.
    """

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool
        self.n = 1 if isinstance(pool, nn.MaxPool1d) else 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.n + 2:  # unbatched input: leave it to the pool itself
            return self.pool(x)
        n, pool = self.n, self.pool
        kernel = modules.ntuple(pool.kernel_size, n)
        stride = modules.ntuple(pool.stride if pool.stride is not None else pool.kernel_size, n)
        padding = modules.ntuple(pool.padding, n)
        dilation = modules.ntuple(pool.dilation, n)
        out_size = pool(x).shape[2:]  # PyTorch's own output size, ceil_mode included
        if n == 1:
            x = x.unsqueeze(2)
            kernel, stride, padding, dilation = (1, *kernel), (1, *stride), (0, *padding), (1, *dilation)
            out_size = (1, *out_size)
        pads = []
        for axis in (1, 0):  # F.pad lists the last axis first
            needed = (out_size[axis] - 1) * stride[axis] + dilation[axis] * (kernel[axis] - 1) + 1
            pads += [padding[axis], needed - x.shape[2 + axis] - padding[axis]]
        columns = F.unfold(F.pad(x, pads), kernel, dilation=dilation, stride=stride)
        out = columns.view(x.shape[0], x.shape[1], kernel[0] * kernel[1], *out_size).mean(2)
        return out.squeeze(2) if n == 1 else out


def _support_stand_in(module: nn.Module) -> nn.Module | None:
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)) and not module.return_indices:
        return _WindowMean(module)
    if isinstance(module, nn.AdaptiveMaxPool2d) and not module.return_indices:
        return nn.AdaptiveAvgPool2d(module.output_size)  # same windows as the max version
    if isinstance(module, nn.AdaptiveMaxPool1d) and not module.return_indices:
        return nn.AdaptiveAvgPool1d(module.output_size)
    return None


def _prepare_probe(probe: nn.Module) -> None:
    """Make every pixel of a window reach the gradient (see `receptive_field`, Notes)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in probe.parameters():
            parameter.requires_grad_(False)
            if not parameter.is_floating_point():
                continue
            values = torch.rand(parameter.shape, generator=generator, dtype=torch.float64) * 0.5 + 0.5
            if parameter.dim() >= 2:  # keep activations of order one: divide by the fan-in
                values /= math.prod(parameter.shape[1:])
            parameter.copy_(values)
        for module in probe.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    stand_ins: dict[int, nn.Module] = {}
    for parent in list(probe.modules()):
        for key, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) not in stand_ins:
                stand_ins[id(child)] = _support_stand_in(child) or child
            parent._modules[key] = stand_ins[id(child)]


def _input_layout(model: nn.Module) -> tuple[int | None, int]:
    """``(in_channels, spatial dims)`` of the model's first convolution, ``(None, 2)`` if none."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels, len(module.kernel_size)
    return None, 2


def _probe_indices(n: int) -> list[int]:
    """Units at the start, centre and end of an axis of length ``n``."""
    c = n // 2
    return sorted({i for i in (0, 1, 2, c - 1, c, c + 1, n - 3, n - 2, n - 1) if 0 <= i < n})


def _empirical(model: nn.Module, name: str, channels: int | None, spatial: tuple[int, int]) -> ReceptiveField:
    # Gradients are needed even if the caller runs under torch.inference_mode or no_grad.
    with torch.inference_mode(False), torch.enable_grad():
        return _measure(model, name, channels, spatial)


def _measure(model: nn.Module, name: str, channels: int | None, spatial: tuple[int, int]) -> ReceptiveField:
    first_channels, dims = _input_layout(model)
    hint = "" if channels else (f" (the input was given {first_channels} channels, the in_channels of the "
                                f"model's first convolution module; pass input_size=(C, H, W) to change that)")
    channels = channels or first_channels
    if channels is None:
        raise ValueError("cannot infer the number of input channels (the model has no convolution); "
                         "pass input_size=(C, H, W)")
    if dims not in (1, 2):
        raise ValueError(f"the model's first convolution is {dims}-d; only 1-d and 2-d inputs are supported")
    in_shape = (spatial[-1],) if dims == 1 else spatial
    try:
        probe = copy.deepcopy(model)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"the empirical method needs a deep copy of the model, which failed: {err}") from err
    _prepare_probe(probe)
    target = probe.get_submodule(name) if name else probe
    reference = next(iter(probe.parameters()), None)
    if reference is None:
        reference = next(iter(probe.buffers()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
    probe.to(dtype).eval()

    captured: list[Any] = []
    handle = target.register_forward_hook(lambda _m, _inputs, output: captured.append(output))
    generator = torch.Generator().manual_seed(0)
    image = (torch.rand((_EMPIRICAL_SAMPLES, channels, *in_shape), generator=generator, dtype=dtype) * 0.9
             + 0.1).to(device).requires_grad_(True)
    try:
        probe(image)
    except Exception as err:  # noqa: BLE001 - layers after the target may reject this input size
        if not captured:
            raise ValueError(f"forward pass on an input of shape {tuple(image.shape)} failed before reaching "
                             f"layer {name!r}: {type(err).__name__}: {err}{hint}") from err
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"layer {name!r} is not called by model.forward")
    if len(captured) > 1:
        raise ValueError(f"layer {name!r} is called {len(captured)} times in one forward pass; "
                         f"its receptive field is ambiguous")
    output = captured[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"layer {name!r} returns a {type(output).__name__}, not a single tensor")
    if output.dim() != dims + 2 or output.shape[0] != _EMPIRICAL_SAMPLES:
        raise ValueError(f"layer {name!r} returns shape {tuple(output.shape)} for an input of shape "
                         f"{tuple(image.shape)}; expected (N, C, {'L' if dims == 1 else 'H, W'})")
    if not output.requires_grad:
        raise ValueError(f"the output of layer {name!r} does not depend on the input")
    if dims == 1:
        output = output.unsqueeze(2)
    out_h, out_w = output.shape[2:]

    def support_of(objective: torch.Tensor) -> torch.Tensor:
        (grad,) = torch.autograd.grad(objective, image, retain_graph=True)
        support = grad.abs().sum(dim=(0, 1)) > 0
        return (support.unsqueeze(0) if dims == 1 else support).cpu()

    def extent(mask: torch.Tensor) -> tuple[int, int] | None:
        hits = mask.nonzero().flatten()
        return (int(hits[0]), int(hits[-1])) if hits.numel() else None

    # Pixels seen by some unit of the layer: strided layers may leave the last rows unseen, so the
    # image edges that clip the windows are these bounds, not the input's.
    seen = support_of(output.sum())
    if not seen.any():
        raise ValueError(f"the output of layer {name!r} has zero gradient for every input pixel")
    bounds = extent(seen.any(1)), extent(seen.any(0))

    rows_ids, cols_ids = _probe_indices(out_h), _probe_indices(out_w)
    count = max(len(rows_ids), len(cols_ids))
    rows_ids += [out_h // 2] * (count - len(rows_ids))
    cols_ids += [out_w // 2] * (count - len(cols_ids))
    rows: dict[int, tuple[int, int]] = {}
    cols: dict[int, tuple[int, int]] = {}
    for y, x in zip(rows_ids, cols_ids):
        support = support_of(output[:, :, y, x].sum())
        if not support.any():
            raise ValueError(f"unit ({y}, {x}) of layer {name!r} has zero gradient for every input pixel")
        for store, index, interval, axis in ((rows, y, extent(support.any(1)), "h"),
                                             (cols, x, extent(support.any(0)), "w")):
            if store.setdefault(index, interval) != interval:
                raise ValueError(f"the input support of layer {name!r} along axis {axis} is not separable "
                                 f"across axes; it has no single receptive-field geometry")
    h_axis = (1, 1, 0) if dims == 1 else _solve_axis(rows, bounds[0], "h", name)
    w_axis = _solve_axis(cols, bounds[1], "w", name)
    return ReceptiveField((h_axis[0], w_axis[0]), (h_axis[1], w_axis[1]), (h_axis[2], w_axis[2]), "empirical")


def _solve_axis(measured: dict[int, tuple[int, int]], bounds: tuple[int, int], axis: str,
                name: str) -> tuple[int, int, int]:
    """``(size, stride, padding)`` from the input extents ``[a, b]`` of probed units along one axis.

    ``bounds`` are the first and last pixels seen by any unit. A window edge is measured exactly
    where it lies strictly inside them; where a window crosses a bound the extent is clipped, and
    holes in the support (dilation, stride larger than kernel) may clip it further. Window starts
    grow with the unit index, so the last units have the most reliable starts and the first units
    the most reliable ends; the solution is then checked against every probed unit.
    """
    lo, hi = bounds
    units = sorted(measured)
    starts = [u for u in units if measured[u][0] > lo]  # reliable ones last
    ends = [u for u in units if measured[u][1] < hi]  # reliable ones first
    advice = (f"use a larger input_size, so that along axis {axis} the windows of some units start and "
              f"others end inside the image")
    strides = set()
    if len(starts) >= 2:
        u0, u1 = starts[-2:]
        strides.add((measured[u1][0] - measured[u0][0]) / (u1 - u0))
    if len(ends) >= 2:
        u0, u1 = ends[:2]
        strides.add((measured[u1][1] - measured[u0][1]) / (u1 - u0))
    if all(extent == (lo, hi) for extent in measured.values()):
        raise ValueError(f"every probed unit of layer {name!r} sees all input pixels {lo}..{hi} along axis "
                         f"{axis}: its units depend on the whole input (global pooling, normalisation over "
                         f"space, attention, ...) or on a field larger than the input, which a larger "
                         f"input_size would show")
    if not strides:
        raise ValueError(f"cannot measure the stride of layer {name!r} along axis {axis} "
                         f"({len(units)} units probed, pixels {lo}..{hi} seen): {advice}")
    if not starts or not ends:
        raise ValueError(f"cannot measure the {'padding' if not starts else 'size'} of layer {name!r} along "
                         f"axis {axis}: {advice}")
    inconsistent = ("the layer has no single receptive-field geometry (e.g. adaptive pooling with uneven "
                    "windows), or the input is too small for the windows to clear the image edges "
                    "(then use a larger input_size)")
    stride = strides.pop()
    if strides or stride < 1 or stride != int(stride):
        raise ValueError(f"the windows of layer {name!r} along axis {axis} are not evenly spaced: {inconsistent}")
    stride = int(stride)
    padding = starts[-1] * stride - measured[starts[-1]][0]
    size = measured[ends[0]][1] - (ends[0] * stride - padding) + 1
    for u, (a, b) in measured.items():
        start, end = u * stride - padding, u * stride - padding + size - 1
        exact_start, exact_end = start > lo, end < hi
        if (size < 1 or (exact_start and a != start) or (exact_end and b != end)
                or a < max(start, lo) or b > min(end, hi)):
            raise ValueError(f"unit {u} of layer {name!r} sees input {axis} in [{a}, {b}], but size {size}, "
                             f"stride {stride}, padding {padding} predict [{start}, {end}] within the seen "
                             f"pixels [{lo}, {hi}]: {inconsistent}")
    return size, stride, padding
