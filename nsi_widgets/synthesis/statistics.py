"""Image statistics of a dataset that the image parameterisations use as priors (docs/methods.md section 9).

Two statistics, both computed from images the user gives (or from the embedded default), never
ImageNet constants:

* the **colour decorrelation matrix** ``M``: with ``Sigma = U S U^T`` the covariance of the data's RGB
  pixels, ``M = U S^(1/2) / max_j ||(U S^(1/2))_{:, j}||`` (lucid's construction; lucid ships it for
  ImageNet). A parameterised image lives in the decorrelated space ``z`` and is shown as
  ``x = sigmoid(M z + logit(mean))``: at ``z = 0`` it is the data's mean colour.
* the **amplitude spectrum** ``A(f)``: the mean modulus of ``rfft2(z_c, norm="ortho")`` over images and
  the three channels of the decorrelated, mean-free images ``z = M^-1 (x - mean)``, rescaled to a
  root-mean-square of 1 over the full spectrum. The Fourier parameterisation multiplies its
  parameters by it (lucid uses ``1 / max(f, 1/max(H, W))``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.data import check_dataset, iterate_batches
from ..core.errors import InputError

DEFAULT_MAX_IMAGES = 512
"""Images read (evenly spaced over the dataset) to estimate the statistics."""


@dataclass(frozen=True, eq=False)
class ImageStatistics:
    """Colour and spectral statistics of a set of RGB images in ``[0, 1]``.

    Attributes
    ----------
    mean : ndarray, (3,) float64
        Mean RGB of all pixels.
    color_matrix : ndarray, (3, 3) float64
        ``M``: maps the decorrelated colour space to mean-free RGB (``x - mean = M z``).
    spectrum : ndarray, (H, W // 2 + 1) float64
        Mean amplitude of the decorrelated images' 2-D spectrum (``rfft2`` layout, ``norm="ortho"``),
        root-mean-square 1 over the full spectrum.
    image_size : (int, int)
        ``(H, W)`` of the spectrum (the images were resized to it when they differed).
    n_images : int
        Images used.
    source : str
        Where they came from (``"shapes"`` for the embedded default, else ``"dataset"``).
    """

    mean: np.ndarray
    color_matrix: np.ndarray
    spectrum: np.ndarray
    image_size: tuple[int, int]
    n_images: int
    source: str = "dataset"

    @property
    def digest(self) -> str:
        """A short hex digest of the values (recorded in recipes)."""
        h = hashlib.sha256()
        for array in (self.mean, self.color_matrix, self.spectrum):
            h.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """JSON-able summary for a recipe: source, number of images, size and digest."""
        return {"source": self.source, "n_images": int(self.n_images), "image_size": list(self.image_size),
                "digest": self.digest, "mean": [float(v) for v in self.mean],
                "color_matrix": [[float(v) for v in row] for row in self.color_matrix]}

    def spectrum_at(self, size: tuple[int, int]) -> np.ndarray:
        """The amplitude spectrum on the ``rfft2`` grid of another image size.

        The full (two-sided, centred) spectrum is interpolated bilinearly at the new grid's
        frequencies (in cycles per pixel), then rescaled to a root-mean-square of 1.
        """
        size = (int(size[0]), int(size[1]))
        if size == tuple(self.image_size):
            return self.spectrum
        h, w = self.image_size
        full = _full_spectrum(self.spectrum, w)                       # (h, w), unshifted
        shifted = torch.from_numpy(np.fft.fftshift(full)).float()[None, None]
        fy = np.fft.fftfreq(size[0])[:, None]
        fx = np.fft.rfftfreq(size[1])[None, :]
        # grid_sample's normalised coordinate of frequency f on the old centred grid (align_corners=False)
        gy = (fy * h + h // 2 + 0.5) / h * 2 - 1
        gx = (fx * w + w // 2 + 0.5) / w * 2 - 1
        grid = torch.from_numpy(np.stack(np.broadcast_arrays(gx, gy), axis=-1)).float()[None]
        out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
        return _unit_rms(out.double().numpy(), size[1])


def _full_spectrum(half: np.ndarray, width: int) -> np.ndarray:
    """The two-sided amplitude spectrum (H, W) of a real image from its ``rfft2`` half (H, W//2+1)."""
    h = half.shape[0]
    full = np.empty((h, width), dtype=np.float64)
    full[:, : half.shape[1]] = half
    for x in range(half.shape[1], width):                     # |F(-fy, -fx)| = |F(fy, fx)|
        full[:, x] = half[(-np.arange(h)) % h, width - x]
    return full


def _rfft_weights(height: int, width: int) -> np.ndarray:
    """How many entries of the full spectrum each ``rfft2`` entry stands for (1 or 2)."""
    weights = np.full((height, width // 2 + 1), 2.0)
    weights[:, 0] = 1.0
    if width % 2 == 0:
        weights[:, -1] = 1.0
    return weights


def _unit_rms(half: np.ndarray, width: int) -> np.ndarray:
    weights = _rfft_weights(half.shape[0], width)
    rms = np.sqrt((weights * half ** 2).sum() / (half.shape[0] * width))
    if not np.isfinite(rms) or rms <= 0:
        raise InputError("the images have no contrast at all (a zero amplitude spectrum); give images "
                         "with some content to estimate the statistics from")
    return half / rms


def color_matrix(covariance: np.ndarray) -> np.ndarray:
    """``M = U S^(1/2)`` of a colour covariance, normalised to a largest column norm of 1 (lucid)."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, dtype=np.float64))
    values = np.clip(values, max(values.max(), 0.0) * 1e-6 + 1e-12, None)
    sqrt = vectors * np.sqrt(values)[None, :]
    return sqrt / np.linalg.norm(sqrt, axis=0).max()


def image_statistics(data: Any, *, image_size: Sequence[int] | None = None,
                     max_images: int = DEFAULT_MAX_IMAGES, source: str = "dataset") -> ImageStatistics:
    """Estimate the colour decorrelation matrix and amplitude spectrum of a dataset.

    Parameters
    ----------
    data : Dataset, sequence, or tensor (n, 3, H, W)
        Items ``(image, label)`` or images, RGB in ``[0, 1]`` (as for :func:`nsi_widgets.index_neurons`).
    image_size : (int, int), optional
        Size of the spectrum; images of another size are resized (bilinear). Default: the data's.
    max_images : int
        Images read, evenly spaced over the dataset.
    source : str
        Label recorded in recipes.

    Returns
    -------
    ImageStatistics
        See docs/methods.md section 9.
    """
    images = _read_images(data, max_images)
    if image_size is not None:
        size = (int(image_size[0]), int(image_size[1]))
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    x = images.double()
    n, _, h, w = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 3)
    mean = pixels.mean(0)
    centred = pixels - mean
    covariance = (centred.T @ centred) / max(len(pixels) - 1, 1)
    m = torch.from_numpy(color_matrix(covariance.numpy()))
    z = (centred @ torch.linalg.inv(m).T).reshape(n, h, w, 3).permute(0, 3, 1, 2)
    amplitude = torch.fft.rfft2(z, norm="ortho").abs().mean(dim=(0, 1))
    spectrum = _unit_rms(amplitude.numpy(), w)
    return ImageStatistics(mean=mean.numpy(), color_matrix=m.numpy(), spectrum=spectrum, image_size=(h, w),
                           n_images=n, source=source)


def _read_images(data: Any, max_images: int) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        if data.ndim != 4 or data.shape[1] != 3:
            raise InputError(f"a tensor of images must be (n, 3, H, W), got {tuple(data.shape)}")
        chosen = np.unique(np.linspace(0, len(data) - 1, min(len(data), max_images)).round().astype(int))
        return data[torch.from_numpy(chosen)].float()
    n = check_dataset(data)
    chosen = np.unique(np.linspace(0, n - 1, min(n, int(max_images))).round().astype(int))
    return torch.cat([images for _, images, _ in iterate_batches(data, chosen, batch_size=128)])


@lru_cache(maxsize=8)
def default_statistics(image_size: tuple[int, int] | None = None) -> ImageStatistics:
    """Statistics of the embedded default's images (``nsi_widgets.zoo.load("shapes")``), cached."""
    from .. import zoo

    _, data = zoo.load("shapes")
    return image_statistics(data, image_size=image_size, source="shapes")


def resolve_statistics(decorrelate: Any, image_size: tuple[int, int] | None) -> ImageStatistics | None:
    """The statistics a ``decorrelate=`` argument asks for (None: no decorrelation, lucid's 1/f spectrum)."""
    if decorrelate is None or decorrelate is False:
        return None
    if isinstance(decorrelate, ImageStatistics):
        return decorrelate
    if decorrelate is True or (isinstance(decorrelate, str) and decorrelate == "shapes"):
        return default_statistics(None if image_size is None else tuple(image_size))
    if isinstance(decorrelate, str):
        raise InputError(f"decorrelate={decorrelate!r}: pass 'shapes' (the embedded default's statistics), a "
                         "dataset of your images, an ImageStatistics, or None")
    return image_statistics(decorrelate, image_size=image_size)
