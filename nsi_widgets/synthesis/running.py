"""Running a model on synthesised images: eval mode, frozen weights, stop at the layer, redirected ReLU.

:class:`PreparedModel` is a context manager around the user's model for the time of one optimisation.
It puts the model in eval mode (batch norm then uses its running statistics, so the images of a
batch never influence one another; :meth:`PreparedModel.check_independent` verifies it on the actual
model), stops gradients into the weights (only the image is optimised), stores 4-D weights
channels-last on the CPU (faster convolutions and pooling), and restores all of it on exit. Its call
returns the layer's output and stops the forward pass there.

Redirected ReLU (lucid's ``redirected_relu_grad``): in the first steps of an optimisation, a ReLU
whose input is negative everywhere passes no gradient, and a unit that starts at zero activation
stays there. While :meth:`PreparedModel.redirect` is on, every ``nn.ReLU`` module computes the same
forward value, but for an image whose ReLU gradient is zero everywhere the backward passes the
incoming gradient through, except where it would push an already negative input further down.
ReLUs called as functions inside a module's ``forward`` are not redirected.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..core.errors import InputError


class _Stop(Exception):
    """Raised by the layer's hook: the rest of the network is not needed."""


class RedirectedReLU(torch.autograd.Function):
    """``relu(x)`` forward; lucid's redirected gradient backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        relu_grad = torch.ops.aten.threshold_backward(grad, x, 0)  # grad where x > 0, else 0
        passes = relu_grad.flatten(1).abs().amax(dim=1) > 0
        if bool(passes.all()):
            return relu_grad
        redirected = grad.masked_fill((x < 0) & (grad > 0), 0)
        return torch.where(passes.view(-1, *([1] * (x.ndim - 1))), relu_grad, redirected)


def _redirected_forward(x: torch.Tensor) -> torch.Tensor:
    return RedirectedReLU.apply(x)


class PreparedModel:
    """The model set up for optimising its input (see the module docstring).

    Parameters
    ----------
    model : nn.Module
    layer : nn.Module or None
        The module whose output is returned; None for the model's output.
    also : nn.Module, optional
        A second module whose output :meth:`outputs` returns as well (from the same forward pass).
    preprocess : callable or None
        Maps RGB in ``[0, 1]`` to the model's input.
    device : torch.device
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None, preprocess, device: torch.device,
                 also: nn.Module | None = None):
        self.model = model
        self.layer = layer
        self.preprocess = preprocess
        self.device = torch.device(device)
        self._saved: dict = {}
        self.also = also
        self._watched = [m for m in dict.fromkeys([layer, also]) if m is not None]
        self._outputs: dict = {}
        self._relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        self._channels_last = self.device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())

    def __enter__(self) -> "PreparedModel":
        params = list(self.model.parameters())
        self._saved = {"training": self.model.training, "grad": [p.requires_grad for p in params],
                       "formats": []}
        self.model.eval()
        for p in params:
            p.requires_grad_(False)
        if self._channels_last:
            for p in params:
                if p.ndim == 4 and not p.is_contiguous(memory_format=torch.channels_last):
                    self._saved["formats"].append(p)
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
        self._handles = [m.register_forward_hook(self._keep) for m in self._watched]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        for p in self._saved["formats"]:
            p.data = p.data.contiguous()
        for p, flag in zip(self.model.parameters(), self._saved["grad"]):
            p.requires_grad_(flag)
        self.model.train(self._saved["training"])

    def _keep(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise InputError(f"the layer returned {type(output).__name__}, not a tensor; pick a module whose "
                             "output is a feature map")
        self._outputs[id(module)] = output
        if len(self._outputs) == len(self._watched):
            raise _Stop

    def outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs of ``layer`` and of ``also`` (when given) for RGB images in ``[0, 1]``."""
        x = self.preprocess(images) if self.preprocess is not None else images
        if self._channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self._outputs = {}
        try:
            out = self.model(x)
        except _Stop:
            out = None
        kept, self._outputs = self._outputs, {}
        found = [out if m is None else kept.get(id(m)) for m in [self.layer] + ([self.also] if self.also is not None else [])]
        if any(t is None for t in found):
            raise InputError("the layer did not run in the model's forward pass; it may be unused")
        return tuple(found)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The layer's output for RGB images ``(B, 3, H, W)`` in ``[0, 1]``."""
        return self.outputs(images)[0]

    @contextmanager
    def redirect(self, enabled: bool = True):
        """Within the block, ``nn.ReLU`` modules use the redirected gradient (when ``enabled``)."""
        if not enabled or not self._relus:
            yield
            return
        try:
            for r in self._relus:
                r.forward = _redirected_forward  # an instance attribute: hooks still run around it
            yield
        finally:
            for r in self._relus:
                r.__dict__.pop("forward", None)

    @torch.no_grad()
    def check_independent(self, size: tuple[int, int], seed: int = 0) -> None:
        """Raise InputError if an image's output depends on the other images of its batch."""
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(3, 3, *size, generator=g).to(self.device)
        together = self(x)[:1]
        alone = self(x[:1])
        scale = float(alone.abs().max()) + 1e-6
        if not torch.allclose(together, alone, rtol=1e-3, atol=1e-4 * scale):
            raise InputError("the model's output for one image depends on the other images of the batch (a "
                             "layer that mixes the batch even in eval mode); pass batch=False to optimise "
                             "one unit at a time")
