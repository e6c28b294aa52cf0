"""Image priors: penalties on the synthesised images, one value per image (docs/methods.md section 9).

Every penalty maps a batch ``(B, 3, H, W)`` in ``[0, 1]`` to ``(B,)``, so that the images of a batch stay
independent. The optimisation minimises ``-objective + sum_k weight_k * penalty_k``.

=========  ==================================================================================
``l2``     ``mean((x - m)^2)``, ``m`` the data's mean colour
``tv``     ``mean(sqrt(dx^2 + dy^2 + eps))`` (total variation, forward differences summed over
           colour channels per pixel: ``beta = 1``); :func:`total_variation` takes any ``beta``
``blur``   ``mean((x - blur(x))^2)`` with ``blur(x)`` a 3x3 binomial blur held constant (lucid's
           ``blur_input_each_step``, as a penalty)
``center`` ``mean(r^2 * (x - m)^2)``, ``r`` the distance from the image centre (1 at the corners):
           content away from the centre costs more
=========  ==================================================================================

Also :func:`alpha_norm` and :func:`total_variation` with Mahendran & Vedaldi's exponents (inversion),
and :func:`tv_denoise`, Chambolle's total-variation denoising (the facets' step between updates).
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from ..core.errors import InputError

_EPS = 1e-8


def _differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x and y, zero at the last column / row (shape of ``x``)."""
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def total_variation(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """``mean over pixels of (sum_c dx^2 + dy^2)^(beta / 2)`` per image; ``(B,)``.

    ``beta = 2`` is Mahendran & Vedaldi's ``R_V`` (divided by the number of pixels), ``beta = 1`` the
    isotropic total variation (with ``eps = 1e-8`` inside the root).
    """
    dx, dy = _differences(x)
    energy = (dx ** 2 + dy ** 2).sum(dim=1)
    if beta == 2:
        per_pixel = energy
    else:
        per_pixel = (energy + _EPS) ** (beta / 2)
    return per_pixel.flatten(1).mean(1)


def alpha_norm(x: torch.Tensor, alpha: float, center: torch.Tensor, scale: float) -> torch.Tensor:
    """``mean(|(x - center) / scale|^alpha)`` per image (Mahendran & Vedaldi's ``R_alpha``, normalised); ``(B,)``."""
    centred = (x - center.to(x)[None, :, None, None]) / scale
    return centred.abs().pow(alpha).flatten(1).mean(1)


def l2(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``mean((x - mean)^2)`` per image; ``(B,)``."""
    return (x - mean.to(x)[None, :, None, None]).pow(2).flatten(1).mean(1)


_BINOMIAL = torch.tensor([1.0, 2.0, 1.0]) / 4.0


def blur3(x: torch.Tensor) -> torch.Tensor:
    """3x3 binomial blur per channel, edges replicated."""
    kernel = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x)[None, None].expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])


def blur(x: torch.Tensor) -> torch.Tensor:
    """``mean((x - blur3(x))^2)`` per image, the blurred image held constant; ``(B,)``."""
    return (x - blur3(x).detach()).pow(2).flatten(1).mean(1)


def center_weights(size: tuple[int, int]) -> torch.Tensor:
    """``r^2`` per pixel: squared distance from the centre, 1 at the corners; ``(H, W)``."""
    h, w = size
    y = (torch.arange(h, dtype=torch.float32) + 0.5) / h * 2 - 1
    x = (torch.arange(w, dtype=torch.float32) + 0.5) / w * 2 - 1
    corner = ((1 - 1 / h) ** 2 + (1 - 1 / w) ** 2)
    return (y[:, None] ** 2 + x[None, :] ** 2) / corner


def center(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``mean(r^2 (x - mean)^2)`` per image; ``(B,)``."""
    weights = center_weights((x.shape[-2], x.shape[-1])).to(x)
    return (weights * (x - mean.to(x)[None, :, None, None]).pow(2)).flatten(1).mean(1)


REGULARIZERS: dict[str, Callable] = {
    "l2": lambda x, mean: l2(x, mean),
    "tv": lambda x, mean: total_variation(x, 1.0),
    "blur": lambda x, mean: blur(x),
    "center": lambda x, mean: center(x, mean),
}
"""The named penalties accepted in ``regularizers={name: weight}``."""


def check_regularizers(regularizers: Mapping[str, float] | None) -> dict[str, float]:
    """Validate ``{name: weight}``; returns a plain dict (empty for None)."""
    if regularizers is None:
        return {}
    if not isinstance(regularizers, Mapping):
        raise InputError(f"regularizers must be a mapping {{name: weight}} with names from {sorted(REGULARIZERS)}, "
                         f"got {type(regularizers).__name__}")
    out = {}
    for name, weight in regularizers.items():
        if name not in REGULARIZERS:
            raise InputError(f"unknown regularizer {name!r}; choose from {sorted(REGULARIZERS)}")
        weight = float(weight)
        if not weight >= 0:
            raise InputError(f"regularizer weights must be >= 0, got {name}={weight}")
        out[str(name)] = weight
    return out


def penalty(x: torch.Tensor, weights: Mapping[str, float], mean: torch.Tensor) -> torch.Tensor:
    """``sum_k weight_k * penalty_k(x)``; ``(B,)``."""
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for name, weight in weights.items():
        if weight:
            total = total + weight * REGULARIZERS[name](x, mean)
    return total


@torch.no_grad()
def tv_denoise(x: torch.Tensor, weight: float, iterations: int = 10) -> torch.Tensor:
    """Chambolle's total-variation denoising of each channel of each image (as ``skimage``'s
    ``denoise_tv_chambolle`` with ``channel_axis``, run for exactly ``iterations`` iterations).

    Minimises ``||y - x||^2 / 2 + weight * TV(y)`` by its dual projection algorithm (step ``1/4``).
    """
    if weight <= 0 or iterations < 1:
        return x
    tau = 0.25
    p = torch.zeros((2,) + tuple(x.shape), dtype=x.dtype, device=x.device)
    out = x
    for i in range(iterations):
        if i > 0:
            d = -p[0] - p[1]
            d[..., 1:, :] += p[0][..., :-1, :]
            d[..., :, 1:] += p[1][..., :, :-1]
            out = x + d
        g = torch.zeros_like(p)
        g[0][..., :-1, :] = out[..., 1:, :] - out[..., :-1, :]
        g[1][..., :, :-1] = out[..., :, 1:] - out[..., :, :-1]
        norm = torch.sqrt((g ** 2).sum(0, keepdim=True)) * (tau / weight) + 1.0
        p = (p - tau * g) / norm
    return out
