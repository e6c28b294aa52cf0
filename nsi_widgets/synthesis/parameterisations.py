"""Image parameterisations: what the optimiser changes, and how it becomes an RGB image (docs/methods.md section 9).

Each parameterisation is an ``nn.Module`` whose parameters are the optimised variables and whose
``forward()`` returns a batch ``(B, 3, H, W)`` of RGB images in ``[0, 1]``:

* :class:`PixelImage` ``x = sigmoid(M z + logit(mean))``, ``z`` the parameters ``(B, 3, H, W)``;
* :class:`FourierImage` ``z = irfft2(A * s, norm="ortho")`` of parameters ``s`` (the complex spectrum
  ``(B, 3, H, W//2+1)`` as real and imaginary parts), ``A`` the amplitude spectrum, then as above;
* :class:`RawImage` the pixels themselves, kept in ``[0, 1]`` by :meth:`RawImage.project` after each
  step (used by the facet visualisation and by inversion).

``M``, ``mean`` and ``A`` come from :class:`~nsi_widgets.synthesis.statistics.ImageStatistics`; without
statistics ``M`` is the identity, ``mean`` 0.5, and ``A`` lucid's ``1 / max(f, 1/max(H, W))`` at
root-mean-square 1. Initial values are drawn per image from its own seed, so an image's start does not
depend on the other images of the batch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from .statistics import ImageStatistics, _unit_rms

PARAMETERISATIONS = ("fft", "pixel")
"""Values of ``param=`` in :func:`nsi_widgets.visualize`."""

_MEAN_CLIP = 0.02  # the mean colour is kept inside (0.02, 0.98) so that its logit is finite


def lucid_spectrum(size: tuple[int, int]) -> np.ndarray:
    """lucid's amplitude scale ``1 / max(f, 1/max(H, W))`` on the ``rfft2`` grid, at root-mean-square 1."""
    h, w = size
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    return _unit_rms(1.0 / np.maximum(f, 1.0 / max(h, w)), w)


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


class _DecorrelatedImage(nn.Module):
    """Shared colour step: ``sigmoid(M z + logit(mean))`` with the statistics' ``M`` and mean."""

    def __init__(self, statistics: ImageStatistics | None):
        super().__init__()
        matrix = (torch.as_tensor(statistics.color_matrix, dtype=torch.float32) if statistics is not None
                  else torch.eye(3))
        mean = (torch.as_tensor(statistics.mean, dtype=torch.float32) if statistics is not None
                else torch.full((3,), 0.5))
        mean = mean.clamp(_MEAN_CLIP, 1 - _MEAN_CLIP)
        self.register_buffer("color_matrix", matrix)
        self.register_buffer("offset", torch.log(mean / (1 - mean)))

    def to_rgb(self, z: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("ij,bjhw->bihw", self.color_matrix, z)
        return torch.sigmoid(rgb + self.offset[None, :, None, None])


class PixelImage(_DecorrelatedImage):
    """Pixels in the decorrelated colour space: parameters ``z`` of shape ``(B, 3, H, W)``.

    Parameters
    ----------
    size : (int, int)
    seeds : sequence of int
        One seed per image; ``z`` starts as ``sd * N(0, 1)`` drawn from it.
    statistics : ImageStatistics or None
    sd : float
        Standard deviation of the start (lucid: 0.01).
    """

    def __init__(self, size: tuple[int, int], seeds: Sequence[int], statistics: ImageStatistics | None,
                 sd: float = 0.01):
        super().__init__(statistics)
        h, w = size
        start = [torch.randn(3, h, w, generator=g) for g in _generators(seeds)]
        self.z = nn.Parameter(torch.stack(start) * sd)

    def forward(self) -> torch.Tensor:
        return self.to_rgb(self.z)


class FourierImage(_DecorrelatedImage):
    """A spectrum in the decorrelated colour space: parameters ``(B, 3, H, W//2+1, 2)`` (real, imaginary).

    ``z = irfft2(A * (s_re + i s_im), s=(H, W), norm="ortho")``, then ``sigmoid(M z + logit(mean))``.
    ``A`` is ``statistics.spectrum_at((H, W))``, or lucid's 1/f scale without statistics.
    """

    def __init__(self, size: tuple[int, int], seeds: Sequence[int], statistics: ImageStatistics | None,
                 sd: float = 0.01):
        super().__init__(statistics)
        h, w = size
        self.size = (int(h), int(w))
        amplitude = statistics.spectrum_at(self.size) if statistics is not None else lucid_spectrum(self.size)
        self.register_buffer("amplitude", torch.as_tensor(amplitude, dtype=torch.float32))
        start = [torch.randn(3, h, w // 2 + 1, 2, generator=g) for g in _generators(seeds)]
        self.spectrum = nn.Parameter(torch.stack(start) * sd)

    def forward(self) -> torch.Tensor:
        coefficients = torch.view_as_complex(self.spectrum) * self.amplitude
        z = torch.fft.irfft2(coefficients, s=self.size, norm="ortho")
        return self.to_rgb(z)


class RawImage(nn.Module):
    """The RGB pixels themselves, ``(B, 3, H, W)``, started from given images (or noise) and kept in ``[0, 1]``.

    Parameters
    ----------
    start : tensor (B, 3, H, W)
        Initial images in ``[0, 1]``.
    """

    def __init__(self, start: torch.Tensor):
        super().__init__()
        self.x = nn.Parameter(start.detach().clone().float().clamp_(0, 1))

    def forward(self) -> torch.Tensor:
        return self.x

    @torch.no_grad()
    def project(self) -> None:
        """Clip the pixels back into ``[0, 1]`` (call after each optimiser step)."""
        self.x.clamp_(0, 1)


def make_image(param: str, size: tuple[int, int], seeds: Sequence[int], statistics: ImageStatistics | None,
               sd: float = 0.01) -> nn.Module:
    """The parameterisation ``param`` (``"fft"`` or ``"pixel"``) for ``len(seeds)`` images of ``size``."""
    if param == "fft":
        return FourierImage(size, seeds, statistics, sd)
    if param == "pixel":
        return PixelImage(size, seeds, statistics, sd)
    raise ValueError(f"param must be one of {PARAMETERISATIONS}, not {param!r}")
