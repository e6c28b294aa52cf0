"""Finding layers in a model, listing them, fingerprinting a model, and recording layer outputs.

The tensor recorded for a layer is **the output of its module's forward** (what a forward hook sees).
For a ``nn.Sequential(Conv2d, ReLU)`` block that is the rectified activation; for a bare ``Conv2d`` it
is the pre-activation. The paper indexes rectified activations, so prefer the ReLU (or the block).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .errors import InputError, InputTypeError

class _StopForward(Exception):
    """Raised from a hook once every requested layer has produced its output."""


def list_layers(model: nn.Module, kind: str = "all") -> list[str]:
    """List the dotted names of a model's modules that can be indexed.

    Parameters
    ----------
    model : torch.nn.Module
    kind : {"all", "conv", "leaf"}
        ``"conv"``: convolution modules and the blocks (containers) that end in one's activation;
        ``"leaf"``: modules without children; ``"all"``: every named module except the root.

    Returns
    -------
    list of str
        Names usable as ``layers=`` in :func:`nsi_widgets.index_neurons`.
    """
    if kind not in ("all", "conv", "leaf"):
        raise InputError(f"kind must be 'all', 'conv' or 'leaf', not {kind!r}")
    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        is_leaf = not any(True for _ in module.children())
        if kind == "leaf" and not is_leaf:
            continue
        if kind == "conv":
            if isinstance(module, nn.Conv2d):
                pass
            elif not is_leaf and any(isinstance(m, nn.Conv2d) for m in module.modules()):
                pass
            else:
                continue
        names.append(name)
    return names


def resolve_layers(model: nn.Module, layers: str | nn.Module | Sequence[str | nn.Module]) -> dict[str, nn.Module]:
    """Map each requested layer (dotted name or module) to ``(name, module)``, in the given order.

    Raises
    ------
    ValueError
        For an unknown name or a module that is not part of ``model``, listing valid names.
    """
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise InputError("layers is empty: pass at least one layer name, e.g. "
                         f"{list_layers(model, 'conv')[:4]}")
    by_name = dict(model.named_modules())
    by_id = {id(m): n for n, m in by_name.items()}
    resolved: dict[str, nn.Module] = {}
    for layer in layers:
        if isinstance(layer, nn.Module):
            name = by_id.get(id(layer))
            if name is None or name == "":
                raise InputError(f"the module {type(layer).__name__} given in layers is not a submodule "
                                 "of the model (or is the model itself); pass a submodule or its name")
            module = layer
        elif isinstance(layer, str):
            if layer not in by_name or layer == "":
                raise InputError(_unknown_layer_message(model, layer))
            name, module = layer, by_name[layer]
        else:
            raise InputTypeError(f"layers must hold names (str) or modules, not {type(layer).__name__}")
        if name in resolved:
            raise InputError(f"layer {name!r} is listed twice")
        resolved[name] = module
    return resolved


def _unknown_layer_message(model: nn.Module, layer: str) -> str:
    names = list_layers(model)
    close = [n for n in names if layer.lower() in n.lower()][:8]
    shown = close or names[:20]
    more = "" if len(names) <= len(shown) else f" ... ({len(names)} in all; see nsi_widgets.list_layers(model))"
    return f"unknown layer {layer!r}; valid names include: {', '.join(shown)}{more}"


class LayerRecorder:
    """Forward hooks that hand each requested layer's output to a callback.

    Used as a context manager. ``stop_early=True`` aborts the forward pass once every layer
    has fired (the rest of the network is not needed), which the caller catches via :meth:`run`.
    """

    def __init__(self, modules: dict[str, nn.Module], callback, stop_early: bool = True):
        self.modules = modules
        self.callback = callback
        self.stop_early = stop_early
        self._handles: list = []
        self._fired: set[str] = set()

    def __enter__(self) -> "LayerRecorder":
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, name: str):
        def hook(module, inputs, output):
            if name in self._fired:
                raise RuntimeError(f"layer {name!r} ran twice in one forward pass (a shared module); "
                                   "index a module that runs once per forward")
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returned {type(output).__name__}, not a tensor; "
                                "pick a module whose output is a feature map")
            self._fired.add(name)
            self.callback(name, output)
            if self.stop_early and len(self._fired) == len(self.modules):
                raise _StopForward
        return hook

    def run(self, model: nn.Module, inputs: torch.Tensor) -> None:
        """Run ``model(inputs)``; every hooked layer must fire once."""
        self._fired = set()
        try:
            model(inputs)
        except _StopForward:
            pass
        missing = [n for n in self.modules if n not in self._fired]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the model's forward pass; "
                               "they may be unused (check the model's forward)")


def modules_run_before(model: nn.Module, layer_module: nn.Module, inputs: torch.Tensor) -> list[nn.Module]:
    """Leaf modules executed before (and including) ``layer_module`` in one forward of ``inputs``."""
    order: list[nn.Module] = []
    handles = []
    done = {"flag": False}

    def leaf_hook(module, inp, out):
        if not done["flag"]:
            order.append(module)

    def stop_hook(module, inp, out):
        done["flag"] = True
        raise _StopForward

    for module in model.modules():
        if not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(leaf_hook))
    handles.append(layer_module.register_forward_hook(stop_hook))
    try:
        with torch.inference_mode():
            model(inputs)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return order
