"""Network inversion (Mahendran & Vedaldi 2015; docs/methods.md section 9): the images a layer cannot tell apart.

For each original image ``x0`` with features ``Phi0 = Phi(x0)`` at the layer, find::

    x* = argmin_x ||Phi(x) - Phi0||^2 / ||Phi0||^2 + alpha * R_alpha(x) + tv * R_V(x)

with ``R_alpha = mean(|(x - m) / B|^a)`` (``a = 6``; ``m`` the mean colour, ``B = 0.5`` half the pixel
range) and ``R_V = mean((dx^2 + dy^2)^(b/2)) / V^b`` (``b = 2``, ``V = B / 6.5`` as the paper's
normalisation) over pixels. The pixels are optimised directly with Adam from the mean colour plus
seeded noise, and kept in ``[0, 1]``. ``feature_error`` is the relative feature error at the end;
``psnr`` compares the reconstruction with the original: ``10 log10(1 / MSE)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core.data import to_image_tensor
from ..core.errors import InputError
from ..core.layers import resolve_layers
from ..index.results import Attachment
from .parameterisations import RawImage
from .regularizers import alpha_norm, total_variation
from .running import PreparedModel
from .visualize import _device, _progress_bar

DEFAULT_STEPS = 300
DEFAULT_TV = 0.002
"""Weight of the total-variation prior: small, so that shallow layers reconstruct sharp edges (conv1 of the
embedded default: >= 25 dB); the paper raises it for deeper layers."""
PIXEL_RANGE = 0.5
"""``B``: the largest distance of a pixel from the middle grey."""
TV_SCALE = PIXEL_RANGE / 6.5
"""``V``: the typical size of a pixel difference (Mahendran & Vedaldi: ``B / 6.5``)."""


@dataclass
class Inversion:
    """Reconstructions of images from one layer's features.

    Attributes
    ----------
    layer : str
    images : ndarray, (B, H, W, 3) float32
        The reconstructions, RGB in ``[0, 1]``.
    originals : ndarray, (B, H, W, 3) float32
    feature_error : ndarray, (B,) float32
        ``||Phi(x*) - Phi0||^2 / ||Phi0||^2`` at the end.
    history : ndarray, (steps, B) float32
        The whole objective per step.
    recipe : dict
    """

    layer: str
    images: np.ndarray
    originals: np.ndarray
    feature_error: np.ndarray
    history: np.ndarray
    recipe: dict

    @property
    def psnr(self) -> np.ndarray:
        """(B,) peak signal-to-noise ratio in dB against the originals (peak 1)."""
        mse = ((self.images.astype(np.float64) - self.originals) ** 2).reshape(len(self.images), -1).mean(1)
        return (10 * np.log10(1.0 / np.maximum(mse, 1e-12))).astype(np.float32)

    def __repr__(self) -> str:
        return (f"Inversion({self.layer!r}, images={len(self.images)}, median PSNR={np.median(self.psnr):.1f} dB, "
                f"median feature error={np.median(self.feature_error):.3g})")

    def to_attachment(self) -> Attachment:
        """As an attachment of kind ``"inversion"``: per layer uint8 ``images`` and ``originals``, float32
        ``feature_error`` and ``psnr`` (one per image, not per unit: no columns); meta holds the recipe."""
        from .attachment import to_uint8

        arrays = {"images": to_uint8(self.images), "originals": to_uint8(self.originals),
                  "feature_error": self.feature_error.astype(np.float32), "psnr": self.psnr,
                  "history": self.history.astype(np.float32)}
        return Attachment("inversion", {"version": 1, "recipe": self.recipe}, {self.layer: arrays}, {})

    @classmethod
    def from_attachment(cls, attachment: Attachment) -> "Inversion":
        """Read it back (images quantised to 1/255)."""
        from .attachment import from_uint8

        if attachment.kind != "inversion" or len(attachment.arrays) != 1:
            raise InputError(f"expected an 'inversion' attachment of one layer, got kind {attachment.kind!r}")
        ((layer, arrays),) = attachment.arrays.items()
        return cls(layer, from_uint8(arrays["images"]), from_uint8(arrays["originals"]),
                   np.asarray(arrays["feature_error"], np.float32), np.asarray(arrays["history"], np.float32),
                   dict(attachment.meta.get("recipe", {})))


def _as_batch(images: Any) -> torch.Tensor:
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        batch = images.float()
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        batch = torch.stack([to_image_tensor(im, i) for i, im in enumerate(images)])
    else:
        try:
            items = list(images)
        except TypeError:
            raise InputError(f"images must be a batch (B, 3, H, W) or a sequence of images, got "
                             f"{type(images).__name__}") from None
        batch = torch.stack([to_image_tensor(im[0] if isinstance(im, (tuple, list)) else im, i)
                             for i, im in enumerate(items)])
    if batch.ndim != 4 or batch.shape[1] != 3 or len(batch) == 0:
        raise InputError(f"images must be (B, 3, H, W) RGB in [0, 1], got shape {tuple(batch.shape)}")
    return batch


def invert(model: nn.Module, layer, images: Any, *, steps: int = DEFAULT_STEPS, tv: float = DEFAULT_TV,
           alpha: float = 1e-3, alpha_exponent: float = 6.0, tv_exponent: float = 2.0, lr: float = 0.05,
           seed: int = 0, preprocess: Callable | None = None, device=None,
           progress: bool | Callable = True) -> Inversion:
    """Reconstruct images from a layer's features (docs/methods.md section 9).

    Parameters
    ----------
    model : torch.nn.Module
    layer : str or module
    images : tensor (B, 3, H, W), array, or a sequence of images / (image, label) items
        RGB in ``[0, 1]``.
    steps : int
        Adam steps.
    tv, alpha : float
        Weights ``lambda_V`` of the total-variation prior and ``lambda_alpha`` of the alpha-norm prior.
    alpha_exponent, tv_exponent : float
        ``a`` (6) and ``b`` (2) of the priors.
    lr : float
        Adam's learning rate on the pixels.
    seed : int
        Seeds the noise of the start: the same seed gives identical reconstructions on the CPU.
    preprocess, device, progress : as for :func:`nsi_widgets.visualize`.

    Returns
    -------
    Inversion
        ``.images``, ``.feature_error``, ``.psnr``.
    """
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if tv < 0 or alpha < 0:
        raise InputError(f"tv and alpha are weights >= 0, got tv={tv}, alpha={alpha}")
    try:
        ((name, module),) = resolve_layers(model, layer).items()
    except ValueError as err:
        raise InputError(str(err)) from None
    device = _device(model, device)
    originals = _as_batch(images).to(device)
    mean = originals.mean(dim=(0, 2, 3))
    recipe = {"layer": name, "steps": int(steps), "tv": float(tv), "alpha": float(alpha),
              "alpha_exponent": float(alpha_exponent), "tv_exponent": float(tv_exponent), "lr": float(lr),
              "seed": int(seed), "n_images": len(originals), "image_size": list(originals.shape[-2:])}
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(originals.shape, generator=g).to(device) * 0.01
    image = RawImage(mean.view(1, 3, 1, 1).expand_as(originals) + noise).to(device)
    optimizer = torch.optim.Adam(image.parameters(), lr=lr)
    history = np.empty((steps, len(originals)), dtype=np.float32)
    advance, close = _progress_bar(progress, steps, f"invert {name}")
    try:
        with PreparedModel(model, module, preprocess, device) as run:
            with torch.no_grad():
                target = run(originals).detach()
            norm = target.flatten(1).pow(2).sum(1).clamp(min=1e-12)

            def objective(x):
                error = (run(x) - target).flatten(1).pow(2).sum(1) / norm
                prior = alpha * alpha_norm(x, alpha_exponent, mean, PIXEL_RANGE)
                prior = prior + tv * total_variation(x, tv_exponent) / TV_SCALE ** tv_exponent
                return error, error + prior

            for step in range(steps):
                _, loss = objective(image())
                optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
                optimizer.step()
                image.project()
                history[step] = loss.detach().cpu().numpy()
                advance(1)
            with torch.no_grad():
                error, _ = objective(image())
    finally:
        close()
    hwc = lambda t: t.detach().permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)  # noqa: E731
    return Inversion(name, hwc(image()), hwc(originals), error.cpu().numpy().astype(np.float32), history, recipe)
