"""Projections of one unit's activation back to pixels (docs/methods.md section 10).

Three ways to ask "which pixels of this image made the unit fire", all as one backward pass from
the unit's activation at one position of its map to the input image:

* :func:`gradient`: the plain gradient (the baseline; Simonyan et al. 2014).
* :func:`deconvnet`: Zeiler & Fergus 2014. Every ReLU passes the *backward* signal through a ReLU
  (``relu(grad_out)``), ignoring where the forward input was positive.
* :func:`guided_backprop`: Springenberg et al. 2015. Every ReLU passes the gradient only where the
  forward input was positive *and* the backward signal is positive.

Everything else goes backwards as its gradient: a convolution as the transposed convolution with the
same filters, a max pool as unpooling with the forward switches (the gradient of a max pool routes
the signal to the argmax of each window, which is exactly ``F.max_unpool2d`` with the indices of
``F.max_pool2d(return_indices=True)`` for non-overlapping windows; for overlapping windows the
gradient sums what several windows route to one pixel), batch norm in eval mode as its per-channel
scale, average pooling as spreading the signal evenly over each window, a residual addition as
copying the signal to both branches (the rules then apply at every ReLU of each branch).

How the ReLU rules are applied: not by finding ``nn.ReLU`` modules (captum's way, which misses
functional ReLUs and trips over in-place and reused modules) but by a
:class:`torch.overrides.TorchFunctionMode` active during the forward pass. It sees every ReLU call,
whatever spelling: ``nn.ReLU`` (it calls ``F.relu``), ``F.relu``, ``torch.relu``, ``Tensor.relu``,
and the in-place ``nn.ReLU(inplace=True)``, ``F.relu(..., inplace=True)``, ``F.relu_``,
``torch.relu_``, ``Tensor.relu_``; a module used several times is seen at each call. Each call on a
tensor that needs a gradient is replaced by an autograd function with the same forward (in place
where the call was) and the rule's backward. Other activations (``LeakyReLU``, ``GELU``, ``clamp``,
``threshold``...) keep their plain gradient. TorchScript modules run outside Python, so the mode
cannot see inside them.

The colour mapping for showing signed projections is :func:`projection_to_rgb`. For the Explorer's
neuron card, :func:`top_projections` projects a unit's top images from a
:class:`~nsi_widgets.index.results.NeuronIndex` and cuts them to the receptive field, and
:func:`projection_handler` is the same as an on-demand handler returning an
:class:`~nsi_widgets.index.results.Attachment` update.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from ..core.data import iterate_batches, to_image_tensor
from ..core.errors import InputError, InputTypeError
from ..core.fingerprint import model_fingerprint
from ..core.layers import LayerRecorder, resolve_layers
from ..index.features import gather_crops
from ..index.results import Attachment, NeuronIndex

__all__ = ["METHODS", "project", "deconvnet", "guided_backprop", "gradient", "projection_to_rgb",
           "projection_scales", "TopProjections", "top_projections", "merge_projection_attachments",
           "make_projection_handler", "projection_handler", "ATTACHMENT_KIND"]

METHODS = ("deconvnet", "guided_backprop", "gradient")
"""Names of the backward rules accepted by :func:`project` (``method=``)."""

ATTACHMENT_KIND = "projections"
"""``Attachment.kind`` of projections attached to an index."""

COLOUR_MAPPING = ("per image: rgb = 0.5 + 0.5 * p / max|p| (max over the image's pixels and channels), "
                  "so 0 is grey 0.5, the largest positive value 1 and the largest negative value 0 in its "
                  "channel; an all-zero projection is uniform grey")
"""The documented colour mapping of :func:`projection_to_rgb`, also stored in attachments' meta."""


# ----------------------------------------------------------------------------------------------
# The ReLU rules


class _DeconvReLU(torch.autograd.Function):
    """ReLU forward; backward ``relu(grad_out)`` (DeconvNet: rectify the backward signal)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            return torch.relu_(x)
        return torch.relu(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return grad.clamp(min=0), None


class _GuidedReLU(torch.autograd.Function):
    """ReLU forward; backward ``grad_out`` where the forward input and ``grad_out`` are positive."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        if inplace:
            ctx.mark_dirty(x)
            out = torch.relu_(x)
        else:
            out = torch.relu(x)
        ctx.save_for_backward(out)  # out > 0 exactly where the input was > 0
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        # grad where out > 0 (ReLU's own fused backward), then only its positive part
        return torch.ops.aten.threshold_backward.default(grad, out, 0).clamp_(min=0), None


_RULES = {"deconvnet": _DeconvReLU, "guided_backprop": _GuidedReLU}
_RELU = (torch.relu, torch.Tensor.relu)
_RELU_INPLACE = (torch.relu_, torch.Tensor.relu_)


class _ReluRuleMode(TorchFunctionMode):
    """Replaces every ReLU call made while active by ``rule`` (an autograd function)."""

    def __init__(self, rule: type[torch.autograd.Function]):
        super().__init__()
        self.rule = rule
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inplace = None
        if func is F.relu:
            inplace = bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
        elif any(func is f for f in _RELU):
            inplace = False
        elif any(func is f for f in _RELU_INPLACE):
            inplace = True
        if inplace is not None:
            x = args[0] if args else kwargs.get("input")
            if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled():
                self.calls += 1
                return self.rule.apply(x, inplace)
        return func(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# Public projections


def project(model: nn.Module, layer: str | nn.Module, unit: int, images, *, method: str = "guided_backprop",
            position=None, preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """Project one unit's activation back to the pixels of each image (docs/methods.md section 10).

    The backward pass starts from the unit's activation at ``position`` of its feature map with a
    gradient of 1 there and 0 everywhere else ("keep one activation, zero the rest"), and goes back
    to the input with the rule of ``method`` at every ReLU. The model is put in eval mode for the
    call and every module's mode is restored afterwards; no hook or mode is left behind, also when
    the forward raises.

    Parameters
    ----------
    model : torch.nn.Module
    layer : str or torch.nn.Module
        A dotted name from ``model.named_modules()`` or the module; its output (a ``(B, C, h, w)``
        tensor) holds the unit. The forward stops once it has run.
    unit : int
        The channel of the layer's output.
    images : Tensor, ndarray or sequence of images
        ``(B, 3, H, W)`` or one ``(3, H, W)`` RGB image (channels last also works), float in
        ``[0, 1]`` or uint8 0-255; or a list of images in any form ``nsi_widgets`` reads (PIL...).
    method : {"guided_backprop", "deconvnet", "gradient"}
        The rule at each ReLU (module docstring). ``"gradient"`` is the plain gradient.
    position : None, (y, x), or array-like (B, 2)
        Where in the unit's map: ``None`` (default) its maximum in each image (first in row-major
        order on ties, as in the index); one ``(y, x)`` for every image; or one per image.
    preprocess : callable, optional
        Maps the ``(B, 3, H, W)`` batch in ``[0, 1]`` to the model's input (e.g. normalisation); the
        projection is taken with respect to the RGB image, through ``preprocess``.

    Returns
    -------
    ndarray, (B, H, W, 3) float32
        Signed projections in RGB channel order. To scale them like Zeiler & Fergus (who start from
        the activation's value ``a``, not from 1), multiply each by ``a``: for ``a > 0`` that is the
        same, every rule being positively homogeneous (``relu(a g) = a relu(g)``). Show them with
        :func:`projection_to_rgb`.

    Raises
    ------
    InputError
        Unknown layer (the message lists valid ones), a layer whose output is not a 4-d map, ``unit``
        out of range, a position outside the map, images of the wrong shape or outside ``[0, 1]``,
        or an unknown ``method``; all before the batch's forward pass.
    """
    name, module = _resolve_layer(model, layer)
    _check_method(method)
    batch = _image_batch(images)
    with _eval_mode(model):
        device, dtype = _model_device(model)
        batch = batch.to(device=device, dtype=dtype)
        channels, map_size = _layer_shape(model, name, module, batch[:1], preprocess)
        unit = _check_unit(unit, channels, name)
        positions = _check_positions(position, len(batch), map_size, name)
        units = torch.full((len(batch),), unit, dtype=torch.int64, device=device)
        grads = _backward_projections(model, name, module, batch, units, positions, method, preprocess)
    return grads.permute(0, 2, 3, 1).detach().cpu().float().numpy()


def deconvnet(model: nn.Module, layer: str | nn.Module, unit: int, images, *, position=None,
              preprocess: Callable | None = None) -> np.ndarray:
    """DeconvNet projection (Zeiler & Fergus 2014): ``project(..., method="deconvnet")``.

    At every ReLU the backward signal is rectified (``relu(grad_out)``); max pools unpool with the
    forward switches, convolutions go back as transposed convolutions with the same filters
    (docs/methods.md section 10). Parameters, return value and errors: :func:`project`.
    """
    return project(model, layer, unit, images, method="deconvnet", position=position, preprocess=preprocess)


def guided_backprop(model: nn.Module, layer: str | nn.Module, unit: int, images, *, position=None,
                    preprocess: Callable | None = None) -> np.ndarray:
    """Guided backpropagation (Springenberg et al. 2015): ``project(..., method="guided_backprop")``.

    At every ReLU the gradient passes only where the forward input and the backward signal are both
    positive (docs/methods.md section 10). Parameters, return value and errors: :func:`project`.
    """
    return project(model, layer, unit, images, method="guided_backprop", position=position,
                   preprocess=preprocess)


def gradient(model: nn.Module, layer: str | nn.Module, unit: int, images, *, position=None,
             preprocess: Callable | None = None) -> np.ndarray:
    """The plain gradient of the unit's activation at ``position`` with respect to the image.

    The baseline for :func:`deconvnet` and :func:`guided_backprop` (``project(..., method="gradient")``;
    docs/methods.md section 10). Parameters, return value and errors: :func:`project`.
    """
    return project(model, layer, unit, images, method="gradient", position=position, preprocess=preprocess)


def projection_scales(projections) -> np.ndarray:
    """Largest absolute value of each projection: ``(..., H, W, 3) -> (...)`` float32."""
    p = np.asarray(projections, dtype=np.float32)
    if p.ndim < 3 or p.shape[-1] != 3:
        raise InputError(f"projections must have shape (..., H, W, 3), got {p.shape}")
    return np.abs(p).max(axis=(-3, -2, -1)) if p.size else np.zeros(p.shape[:-3], dtype=np.float32)


def projection_to_rgb(projections, scale=None) -> np.ndarray:
    """Colour mapping of signed projections to RGB images in ``[0, 1]`` (docs/methods.md section 10).

    Per image, ``rgb = 0.5 + 0.5 * p / s`` with ``s`` the largest absolute value over the image's
    pixels and channels (as Zeiler & Fergus show them): 0 is grey 0.5, a positive value brightens
    its channel, a negative one darkens it, and the strongest value reaches 0 or 1. An all-zero
    projection is uniform grey.

    Parameters
    ----------
    projections : array-like, (..., H, W, 3)
        Signed projections, e.g. from :func:`guided_backprop`.
    scale : float or array-like (...), optional
        Use this ``s`` (one per image, or one for all) instead of each image's own maximum, e.g. to
        compare images on one scale. Values beyond it are clipped.

    Returns
    -------
    ndarray, (..., H, W, 3) float32 in [0, 1]
    """
    p = np.asarray(projections, dtype=np.float32)
    s = projection_scales(p) if scale is None else np.broadcast_to(np.asarray(scale, dtype=np.float32),
                                                                  p.shape[:-3])
    s = np.where(s > 0, s, 1.0).astype(np.float32)[..., None, None, None]
    return np.clip(0.5 + 0.5 * p / s, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The batched backward pass and its checks


def _backward_projections(model: nn.Module, name: str, module: nn.Module, batch: torch.Tensor,
                          units: torch.Tensor, positions: torch.Tensor | None, method: str,
                          preprocess: Callable | None) -> torch.Tensor:
    """``(B, 3, H, W)``: d(activation of ``units[b]`` at ``positions[b]``)/d(image b) under ``method``.

    The samples of a batch are independent (eval mode), so the sum of the seeded activations has, in
    one backward pass, each image's own projection as its gradient.
    """
    captured: dict[str, torch.Tensor] = {}
    mode = _ReluRuleMode(_RULES[method]) if method in _RULES else contextlib.nullcontext()
    with torch.inference_mode(False), torch.enable_grad():
        x = batch.detach().clone().requires_grad_(True)  # clones: tensors made under inference_mode
        units = units.clone()  # cannot enter autograd
        positions = positions.clone() if positions is not None else None
        with mode, LayerRecorder({name: module}, lambda _n, out: captured.__setitem__("out", out)) as recorder:
            recorder.run(model, preprocess(x) if preprocess is not None else x)
        out = captured.pop("out")
        if not out.requires_grad:
            raise InputError(f"the output of layer {name!r} does not depend on the input image; "
                             "nothing can be projected")
        rows = torch.arange(len(batch), device=out.device)
        maps = out[rows, units].flatten(1)  # (B, h * w)
        if positions is None:
            flat = maps.detach().max(dim=1).indices  # first maximum in row-major order, as the scan
        else:
            flat = positions[:, 0] * out.shape[-1] + positions[:, 1]
        (grad,) = torch.autograd.grad(maps[rows, flat].sum(), x)
    return grad


def _resolve_layer(model: nn.Module, layer) -> tuple[str, nn.Module]:
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise InputError("a TorchScript model runs outside Python, so its ReLUs cannot be given the "
                         "projection rules; pass the original nn.Module")
    if isinstance(layer, (list, tuple)):
        raise InputError("project one layer at a time: pass a single layer name or module")
    try:
        ((name, module),) = resolve_layers(model, layer).items()
    except (ValueError, TypeError) as err:
        raise InputError(str(err)) from None
    return name, module


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _image_batch(images) -> torch.Tensor:
    """The images as a float32 ``(B, 3, H, W)`` tensor in [0, 1], or an InputError saying what is wrong."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("images is empty: pass at least one image")
        try:
            tensors = [to_image_tensor(image, i) for i, image in enumerate(images)]
        except (TypeError, ValueError) as err:
            raise InputError(str(err)) from None
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise InputError(f"the images differ in size {sorted(shapes)}; resize them to one size first")
        batch = torch.stack(tensors)
    elif isinstance(images, (torch.Tensor, np.ndarray)):
        batch = torch.as_tensor(images)
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.ndim == 4 and batch.shape[1] != 3 and batch.shape[-1] == 3:
            batch = batch.permute(0, 3, 1, 2)  # channels last, as NumPy images usually are
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise InputError(f"images must be a (B, 3, H, W) batch or one (3, H, W) image (RGB; channels "
                             f"last also works), got shape {tuple(torch.as_tensor(images).shape)}")
        if batch.shape[0] == 0:
            raise InputError("images is empty: pass at least one image")
        if batch.dtype == torch.uint8:
            batch = batch.float() / 255.0
        elif not batch.is_floating_point():
            raise InputError(f"images must be float in [0, 1] or uint8, got {batch.dtype}")
    else:
        raise InputError(f"images must be a tensor, an array or a list of images, got {type(images).__name__}")
    batch = batch.detach()
    if not torch.isfinite(batch).all():
        raise InputError("images contain NaN or infinite values")
    low, high = float(batch.min()), float(batch.max())
    if low < 0.0 or high > 1.0:
        raise InputError(f"images must be RGB in [0, 1], got values in [{low:.3g}, {high:.3g}]; pass the "
                         "model's normalisation as preprocess= instead of normalised images")
    return batch


def _model_device(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def _layer_shape(model: nn.Module, name: str, module: nn.Module, probe: torch.Tensor,
                 preprocess: Callable | None) -> tuple[int, tuple[int, int]]:
    """``(channels, (h, w))`` of the layer's output for one image (a forward without gradients)."""
    captured = {}
    try:
        with torch.no_grad(), LayerRecorder({name: module}, lambda _n, out: captured.__setitem__("out", out)) as rec:
            rec.run(model, preprocess(probe) if preprocess is not None else probe)
    except (TypeError, RuntimeError) as err:  # the recorder's complaints name the layer; the model's own errors pass
        if "out" not in captured and repr(name) in str(err):
            raise InputError(str(err)) from err
        raise
    out = captured["out"]
    if out.ndim != 4:
        raise InputError(f"layer {name!r} returns shape {tuple(out.shape)}; projections need a (B, C, h, w) "
                         "feature map (pick a convolutional layer or block)")
    return int(out.shape[1]), (int(out.shape[2]), int(out.shape[3]))


def _check_unit(unit, channels: int, name: str) -> int:
    if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)):
        raise InputError(f"unit must be an integer channel index, got {unit!r}")
    if not 0 <= int(unit) < channels:
        raise InputError(f"unit {int(unit)} is out of range: layer {name!r} has {channels} units (0..{channels - 1})")
    return int(unit)


def _check_positions(position, batch_size: int, map_size: tuple[int, int], name: str) -> torch.Tensor | None:
    """``None`` (map maxima) or a ``(B, 2)`` int64 tensor of (y, x) inside the map."""
    if position is None:
        return None
    values = np.asarray(position)
    if values.dtype.kind not in "iu" and not (values.dtype.kind == "f" and np.all(values == np.round(values))):
        raise InputError(f"position must be integer (y, x) pairs, got {position!r}")
    values = values.astype(np.int64)
    if values.shape == (2,):
        values = np.broadcast_to(values, (batch_size, 2))
    if values.shape != (batch_size, 2):
        raise InputError(f"position must be one (y, x) or one per image, shape ({batch_size}, 2); "
                         f"got shape {values.shape}")
    h, w = map_size
    outside = ~((values[:, 0] >= 0) & (values[:, 0] < h) & (values[:, 1] >= 0) & (values[:, 1] < w))
    if outside.any():
        b = int(np.nonzero(outside)[0][0])
        raise InputError(f"position (y, x) = {tuple(int(v) for v in values[b])} of image {b} lies outside the "
                         f"feature map of layer {name!r}, which is {h} x {w} for these images")
    return torch.from_numpy(np.array(values))  # a writable copy


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode inside; afterwards every module's own train/eval flag as it was."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


# ----------------------------------------------------------------------------------------------
# Projections of a unit's top images, cut to the receptive field, for the neuron card


@dataclass
class TopProjections:
    """Projections of the top images of some units of one layer, cut to each receptive field window.

    ``U`` units, ``K`` kept images per unit, ``(h, w)`` the receptive field's size; pixels of a
    window outside the image are 0 (as in the crops of the index).

    Attributes
    ----------
    layer : str
    method : str
        ``"guided_backprop"``, ``"deconvnet"`` or ``"gradient"``.
    units : ndarray, (U,) int64
    image_indices : ndarray, (U, K) int64
        Dataset index of each kept projection (the unit's top images, best first); -1 where a unit has
        fewer top images.
    positions : ndarray, (U, K, 2) int64
        ``(y, x)`` in the layer's map the projection starts from (the index's ``top_positions``).
    crops : ndarray, (U, K, h, w, 3) float32
        Signed projections of the first ``K`` top images, in the receptive field window.
    mean : ndarray, (U, h, w, 3) float32
        Mean of the projections of the first ``n_mean`` top images (weighted as said by ``weighting``).
    n_mean : int
        How many top images the mean is over.
    weighting : str
        ``"weighted"``: ``sum_j w_j P_j / sum_j w_j`` with the Neuron Feature's weights
        ``w_j = a_j / a_1`` (so the mean sits beside the Neuron Feature); ``"mean"``: plain mean.
    """

    layer: str
    method: str
    units: np.ndarray
    image_indices: np.ndarray
    positions: np.ndarray
    crops: np.ndarray
    mean: np.ndarray
    n_mean: int
    weighting: str

    def rgb(self) -> tuple[np.ndarray, np.ndarray]:
        """``(crops, mean)`` through :func:`projection_to_rgb` (float32 in [0, 1])."""
        return projection_to_rgb(self.crops), projection_to_rgb(self.mean)

    def to_attachment(self, thumbnail_size: int | None = None) -> Attachment:
        """These projections as an index attachment (kind ``"projections"``) for the Explorer.

        Parameters
        ----------
        thumbnail_size : int, optional
            Reduce the images so that their longest side is at most this (by the smallest integer
            factor ``k`` that fits, each pixel the mean of a ``k x k`` block of the signed projection,
            as the index's thumbnails); default: full receptive-field size.

        Returns
        -------
        Attachment
            ``meta``: ``method``, ``weighting``, ``n_mean``, ``n_images`` (K), ``factor`` (k),
            ``colour_mapping`` (text of :data:`COLOUR_MAPPING`), ``format`` (1). ``arrays[layer]``:
            ``units`` (U,) int64, ``image_indices`` (U, K) int64, ``positions`` (U, K, 2) int64,
            ``images`` (U, K, h', w', 3) uint8 (the colour-mapped crops), ``scales`` (U, K) float32
            (each image's ``max|p|``: the signed value is ``(images / 255 - 0.5) * 2 * scale``),
            ``mean_image`` (U, h', w', 3) uint8 and ``mean_scale`` (U,) float32 likewise for the
            mean. No per-unit columns (``U`` may be a subset of the layer's units).
        """
        factor = 1
        h, w = self.crops.shape[2:4] if self.crops.ndim == 5 else self.mean.shape[1:3]
        if thumbnail_size is not None:
            factor = max(1, -(-max(h, w) // max(1, int(thumbnail_size))))
        crops, mean = _reduce(self.crops, factor), _reduce(self.mean, factor)
        scales, mean_scale = projection_scales(crops), projection_scales(mean)
        meta = {"method": self.method, "weighting": self.weighting, "n_mean": int(self.n_mean),
                "n_images": int(self.image_indices.shape[1]), "factor": int(factor),
                "colour_mapping": COLOUR_MAPPING, "format": 1}
        arrays = {"units": self.units.astype(np.int64), "image_indices": self.image_indices.astype(np.int64),
                  "positions": self.positions.astype(np.int64), "images": _to_uint8(crops, scales),
                  "scales": scales.astype(np.float32), "mean_image": _to_uint8(mean, mean_scale),
                  "mean_scale": mean_scale.astype(np.float32)}
        return Attachment(ATTACHMENT_KIND, meta, {self.layer: arrays}, {})

    @classmethod
    def from_attachment(cls, attachment: Attachment, layer: str) -> "TopProjections":
        """Read back one layer of an attachment made by :meth:`to_attachment`.

        The signed values are recovered from the uint8 images and their scales (8-bit precision),
        at the attachment's (possibly reduced) size.
        """
        if attachment.kind != ATTACHMENT_KIND:
            raise InputError(f"not a projections attachment (kind {attachment.kind!r})")
        if layer not in attachment.arrays:
            raise InputError(f"the attachment has no layer {layer!r}; it has {sorted(attachment.arrays)}")
        a, meta = attachment.arrays[layer], attachment.meta

        def signed(images, scales):
            return ((images.astype(np.float32) / 255.0 - 0.5) * 2.0 * scales[..., None, None, None]).astype(np.float32)

        return cls(layer=layer, method=meta["method"], units=a["units"], image_indices=a["image_indices"],
                   positions=a["positions"], crops=signed(a["images"], a["scales"]),
                   mean=signed(a["mean_image"], a["mean_scale"]), n_mean=int(meta["n_mean"]),
                   weighting=meta["weighting"])


def _reduce(projections: np.ndarray, factor: int) -> np.ndarray:
    """Block means of ``factor x factor`` pixels of ``(..., h, w, 3)`` (partial edge blocks average what they have)."""
    if factor == 1:
        return projections
    lead, (h, w) = projections.shape[:-3], projections.shape[-3:-1]
    t = torch.from_numpy(np.ascontiguousarray(projections)).reshape(-1, h, w, 3).permute(0, 3, 1, 2)
    reduced = F.avg_pool2d(t, factor, ceil_mode=True).permute(0, 2, 3, 1)
    return reduced.reshape(*lead, *reduced.shape[1:]).numpy()


def _to_uint8(projections: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return np.round(projection_to_rgb(projections, scales) * 255).astype(np.uint8)


def top_projections(index: NeuronIndex, model: nn.Module, layer: str, units=None, *, data=None,
                    method: str = "guided_backprop", n_images: int = 16, n_mean: int | None = None,
                    weighting: str = "weighted", preprocess: Callable | None = None, batch_size: int = 64,
                    num_workers: int = 0, progress: bool = True,
                    progress_callback: Callable[[int, int], Any] | None = None) -> TopProjections:
    """Project the top images of units of an indexed layer, cut to their receptive fields.

    For every unit and each of its first ``max(n_images, n_mean)`` top images, the projection
    (:func:`project`) of the unit's activation at the index's ``top_positions``, cut to the receptive
    field window there (the crop the index shows); the first ``n_images`` are kept and the first
    ``n_mean`` averaged (docs/methods.md section 10). Each referenced image is read once per batch;
    items are batched ``batch_size`` at a time for the forward and backward passes.

    Parameters
    ----------
    index : NeuronIndex
        Computed on ``model`` (checked with the model's fingerprint when the index has one).
    model : torch.nn.Module
    layer : str
        An indexed layer.
    units : int, sequence of int, or None
        The units to project (default: all of the layer's).
    data : dataset, optional
        The dataset the index was computed on; default ``index.data``.
    method : {"guided_backprop", "deconvnet", "gradient"}
    n_images : int
        Projections kept per unit (the card shows 16 top crops by default).
    n_mean : int, optional
        Top images in the mean (default: all ``N`` of the index).
    weighting : {"weighted", "mean"}
        The mean's weights: the Neuron Feature's ``w_j = a_j / a_1`` (default) or equal.
    preprocess : callable, optional
        The model's normalisation, as given to ``index_neurons``.
    batch_size, num_workers : int
        Projections per forward/backward pass; DataLoader workers reading the images.
    progress : bool
        Show a progress bar.
    progress_callback : callable, optional
        Called as ``progress_callback(done, total)`` (projections) after each batch.

    Returns
    -------
    TopProjections
        ``.to_attachment()`` gives what ``index.attach`` takes.

    Raises
    ------
    InputError
        Before any work: not an index, a layer it lacks or the model lacks, a model other than the
        index's, no data, units out of range, bad counts or ``method``/``weighting``, or a feature map
        of another size than the index's.
    """
    plan = _plan(index, model, layer, units, data, method, n_images, n_mean, weighting, batch_size)
    name, module, L, items = plan.name, plan.module, plan.layer_index, plan.items
    rf = L.receptive_field
    store = _CropStore(len(plan.units), plan.n_images, plan.n_mean, rf.size)
    bar = _progress_bar(progress, len(items["image"]))
    with _eval_mode(model):
        device, dtype = _model_device(model)
        _check_map_size(model, name, module, plan.data, L, preprocess, device, dtype)
        for sl, images in _item_batches(plan.data, items["image"], batch_size, num_workers):
            units_t = torch.from_numpy(items["unit"][sl]).to(device)
            pos = torch.from_numpy(np.stack([items["y"][sl], items["x"][sl]], axis=1)).to(device)
            grads = _backward_projections(model, name, module, images.to(device=device, dtype=dtype),
                                          units_t, pos, method, preprocess).detach().float().cpu()
            y0 = items["y"][sl] * rf.stride[0] - rf.padding[0]
            x0 = items["x"][sl] * rf.stride[1] - rf.padding[1]
            cut, _ = gather_crops(grads, np.arange(len(grads)), y0, x0, rf.size)
            store.add(cut.permute(0, 2, 3, 1), items["slot"][sl], items["rank"][sl], items["weight"][sl])
            if bar is not None:
                bar.update(len(units_t))
            if progress_callback is not None:
                progress_callback(sl.stop, len(items["image"]))
    if bar is not None:
        bar.close()
    return TopProjections(layer=name, method=method, units=plan.units, image_indices=plan.kept_indices,
                          positions=plan.kept_positions, crops=store.crops, mean=store.mean(),
                          n_mean=plan.n_mean, weighting=weighting)


class _CropStore:
    """The first ``n_keep`` projection windows of each unit, and weighted sums of the first ``n_mean``."""

    def __init__(self, n_units: int, n_keep: int, n_mean: int, size: tuple[int, int]):
        self.n_keep, self.n_mean = n_keep, n_mean
        self.crops = np.zeros((n_units, n_keep, *size, 3), dtype=np.float32)
        self.sums = torch.zeros((n_units, *size, 3), dtype=torch.float32)
        self.totals = np.zeros(n_units, dtype=np.float64)

    def add(self, cut: torch.Tensor, slot: np.ndarray, rank: np.ndarray, weight: np.ndarray) -> None:
        """``cut`` (b, h, w, 3): windows of the items ``slot`` (row of the unit), ``rank``, ``weight``."""
        keep = rank < self.n_keep
        if keep.any():
            self.crops[slot[keep], rank[keep]] = cut[torch.from_numpy(keep)].numpy()
        averaged = (rank < self.n_mean) & (weight > 0)
        if averaged.any():
            weights = torch.from_numpy(weight[averaged]).float()[:, None, None, None]
            self.sums.index_add_(0, torch.from_numpy(slot[averaged]), cut[torch.from_numpy(averaged)] * weights)
            np.add.at(self.totals, slot[averaged], weight[averaged])

    def mean(self) -> np.ndarray:
        """(U, h, w, 3): ``sum_j w_j P_j / sum_j w_j``; zero for a unit without positive weight."""
        safe = torch.from_numpy(np.where(self.totals > 0, self.totals, 1.0)).float()
        return (self.sums / safe[:, None, None, None]).numpy()


@dataclass
class _Plan:
    name: str
    module: nn.Module
    layer_index: Any
    data: Any
    units: np.ndarray
    n_images: int
    n_mean: int
    items: dict[str, np.ndarray]  # per projection: image, unit, slot (row in the result), rank, y, x, weight
    kept_indices: np.ndarray
    kept_positions: np.ndarray


def _plan(index, model, layer, units, data, method, n_images, n_mean, weighting, batch_size) -> _Plan:
    """Check every argument of :func:`top_projections` and list the projections to compute."""
    if not isinstance(index, NeuronIndex):
        raise InputError(f"index must be a NeuronIndex (from nsi.index_neurons or nsi.load_index), "
                         f"got {type(index).__name__}")
    if layer not in index.layers:
        raise InputError(f"layer {layer!r} is not in this index; indexed layers: {index.layers}")
    name, module = _resolve_layer(model, layer)
    _check_method(method)
    if weighting not in ("weighted", "mean"):
        raise InputError(f"weighting must be 'weighted' or 'mean', not {weighting!r}")
    _check_count("n_images", n_images, minimum=0)
    _check_count("batch_size", batch_size, minimum=1)
    if n_mean is not None:
        _check_count("n_mean", n_mean, minimum=1)
    fingerprint = index.meta.get("model_fingerprint")
    if fingerprint is not None and fingerprint != model_fingerprint(model):
        raise InputError("the model is not the one this index was computed on (its fingerprint differs); "
                         "pass the indexed model")
    data = data if data is not None else index.data
    if data is None:
        raise InputError("the index has no dataset attached (a loaded index): pass data=, the dataset it "
                         "was computed on")
    L = index[layer]
    units = np.arange(L.n_units) if units is None else np.atleast_1d(np.asarray(units))
    if units.ndim != 1 or units.dtype.kind not in "iu" or len(units) == 0:
        raise InputError(f"units must be a unit index or a non-empty list of them, got {units!r}")
    bad = units[(units < 0) | (units >= L.n_units)]
    if len(bad):
        raise InputError(f"unit {int(bad[0])} is out of range: layer {layer!r} has {L.n_units} units "
                         f"(0..{L.n_units - 1})")
    n_top = L.top_n
    n_keep = min(int(n_images), n_top)
    n_avg = n_top if n_mean is None else min(int(n_mean), n_top)
    needed = max(n_keep, n_avg)
    weights = L.weights[units, :needed] if weighting == "weighted" else np.ones((len(units), needed))
    indices = L.top_indices[units, :needed]
    if indices.size and int(indices.max()) >= len(data):
        raise InputError(f"the index refers to image {int(indices.max())}, but the dataset has {len(data)} "
                         "images: pass the dataset the index was computed on")
    slot, rank = np.meshgrid(np.arange(len(units)), np.arange(needed), indexing="ij")
    valid = indices >= 0
    order = np.argsort(indices[valid], kind="stable")
    items = {"image": indices[valid][order], "unit": units[slot[valid]][order], "slot": slot[valid][order],
             "rank": rank[valid][order], "y": L.top_positions[units, :needed, 0][valid][order],
             "x": L.top_positions[units, :needed, 1][valid][order],
             "weight": weights[valid][order].astype(np.float64)}
    items = {k: np.ascontiguousarray(v) for k, v in items.items()}
    kept = np.where(valid[:, :n_keep], indices[:, :n_keep], -1)
    return _Plan(name, module, L, data, units.astype(np.int64), n_keep, n_avg, items, kept.astype(np.int64),
                 L.top_positions[units, :n_keep].astype(np.int64))


def _check_count(label: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{label} must be an integer >= {minimum}, got {value!r}")


def _check_map_size(model, name, module, data, L, preprocess, device, dtype) -> None:
    """Check that the layer gives the index's number and size of maps for the dataset's images."""
    _, probe, _ = next(iter(iterate_batches(data, [0], 1)))
    channels, map_size = _layer_shape(model, name, module, probe.to(device=device, dtype=dtype), preprocess)
    if channels != L.n_units or tuple(map_size) != tuple(L.map_size):
        raise InputError(f"layer {name!r} gives {channels} maps of {map_size[0]} x {map_size[1]} for this "
                         f"data, the index {L.n_units} of {L.map_size[0]} x {L.map_size[1]}: pass the model "
                         "and dataset (and preprocess) the index was computed with")


def _item_batches(data, image_per_item: np.ndarray, batch_size: int, num_workers: int):
    """Yield ``(slice of items, images (b, 3, H, W))`` in chunks of ``batch_size`` items.

    ``image_per_item`` is sorted; each distinct image is read once (an image referenced by several
    units is repeated in the batch, not read again)."""
    distinct, counts = np.unique(image_per_item, return_counts=True)
    start, pending = 0, []  # pending: one image per item, for the items from ``start`` on
    read = max(1, min(batch_size, len(distinct)))
    for _, images, _ in iterate_batches(data, distinct, read, num_workers):
        for image, count in zip(images, counts[:len(images)].tolist()):
            pending.extend([image] * count)
        counts = counts[len(images):]
        while len(pending) >= batch_size:
            yield slice(start, start + batch_size), torch.stack(pending[:batch_size])
            del pending[:batch_size]
            start += batch_size
    if pending:
        yield slice(start, start + len(pending)), torch.stack(pending)


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="projections", unit="proj", leave=True)


# ----------------------------------------------------------------------------------------------
# Attachments: merging on-demand updates, and the on-demand handler


def merge_projection_attachments(current: Attachment | None, update: Attachment) -> Attachment:
    """Merge an update (e.g. one unit from :func:`projection_handler`) into a projections attachment.

    Units of the update replace the same units of ``current``; other units and layers are kept.
    Use as ``idx.attach("projections", merge_projection_attachments(idx.attachments.get("projections"),
    update))``.

    Raises
    ------
    InputError
        Either is not a projections attachment, or they differ in method, weighting, counts or size.
    """
    for attachment in (current, update):
        if attachment is not None and attachment.kind != ATTACHMENT_KIND:
            raise InputError(f"not a projections attachment (kind {attachment.kind!r})")
    if current is None:
        return update
    settings = ("method", "weighting", "n_mean", "n_images", "factor")
    if any(current.meta.get(k) != update.meta.get(k) for k in settings):
        raise InputError("the update was computed with other settings "
                         f"({ {k: update.meta.get(k) for k in settings} } vs "
                         f"{ {k: current.meta.get(k) for k in settings} }); recompute it or replace the attachment")
    arrays = {layer: dict(named) for layer, named in current.arrays.items()}
    for layer, new in update.arrays.items():
        old = arrays.get(layer)
        if old is None:
            arrays[layer] = dict(new)
            continue
        kept = ~np.isin(old["units"], new["units"])
        merged = {key: np.concatenate([old[key][kept], new[key]]) for key in new}
        order = np.argsort(merged["units"], kind="stable")
        arrays[layer] = {key: value[order] for key, value in merged.items()}
    return Attachment(ATTACHMENT_KIND, dict(current.meta), arrays, {})


def make_projection_handler(method: str = "guided_backprop", *, n_images: int = 16, n_mean: int | None = None,
                            weighting: str = "weighted", thumbnail_size: int | None = 48,
                            preprocess: Callable | None = None, batch_size: int = 64):
    """An on-demand handler ``(index, model, data, layer, unit, progress_callback) -> Attachment``.

    The returned callable computes :func:`top_projections` for one unit with these settings and
    returns the update :meth:`TopProjections.to_attachment` makes (that unit only; merge it with
    :func:`merge_projection_attachments`). ``data`` may be None to use ``index.data``;
    ``progress_callback(done, total)`` may be None. Errors are :class:`InputError`, raised before work.
    """
    _check_method(method)

    def handler(index, model, data, layer, unit, progress_callback=None) -> Attachment:
        result = top_projections(index, model, layer, [unit], data=data, method=method, n_images=n_images,
                                 n_mean=n_mean, weighting=weighting, preprocess=preprocess,
                                 batch_size=batch_size, progress=False, progress_callback=progress_callback)
        return result.to_attachment(thumbnail_size=thumbnail_size)

    handler.__doc__ = (f"Projections ({method}) of one unit's top images as an Attachment update "
                       f"(nsi_widgets.synthesis.projections.make_projection_handler).")
    return handler


projection_handler = make_projection_handler()
"""The default on-demand handler: guided backpropagation, 16 images, the weighted mean over all top
images, 48-pixel thumbnails. ``projection_handler(index, model, data, layer, unit, progress_callback)``
returns an :class:`Attachment` update for one unit (see :func:`make_projection_handler`)."""
