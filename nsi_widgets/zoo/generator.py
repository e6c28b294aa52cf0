"""The generator prior of the embedded default: a generator, an encoder and a latent denoising autoencoder.

PPGN (Nguyen et al. 2017; docs/methods.md section 10) samples in the latent space of a generator
instead of in pixel space. For ``"shapes"`` three small networks are trained together on the default's
images (:func:`nsi_widgets.zoo.train.train_generator`) and shipped:

* :class:`ShapesGenerator` ``G``: latent ``h`` (``(B, 64)``) -> RGB image ``(B, 3, 64, 64)`` in ``[0, 1]``
  (a linear layer to 4x4, four transposed convolutions doubling the size, a 3x3 convolution, sigmoid);
  :class:`LayeredShapesGenerator` is an alternative (``generator="layered"`` in the training settings;
  tried, not shipped, docs/zoo.md "Generator prior"): a background and a sprite (a mask drawn by a
  small convolutional decoder, one colour) placed by a spatial transformer, with structured first
  latent dimensions (the sprite's centre and radius, :data:`POSE_DIMS`; logits of the shape kind,
  :data:`SHAPE_DIMS`; its rotation, :data:`ROTATION_DIMS`) that the encoder is trained to fill with the
  images' ground truth;
* :class:`ShapesEncoder` ``E``: image -> latent (four strided convolutions, a linear layer), trained
  with ``G`` as an autoencoder, so ``G(E(x))`` is the learned one-shot inversion of ``x``;
* :class:`LatentDenoiser` ``R``: a denoising autoencoder on the latents ``E(x)`` (a residual MLP);
  ``R(h) - h`` points towards the latents of real images (the PPGN prior term).

:func:`nsi_widgets.zoo.load_generator` returns them as a :class:`GeneratorPrior` with the latents'
training range (``low``, ``high``: per-dimension minimum and maximum of ``E(x)`` over the training
images), which :func:`nsi_widgets.ppgn` clips the latent to.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

LATENT_DIM = 64
"""Size of the latent code ``h`` of the shipped generator."""
GENERATOR_WIDTHS = (64, 64, 48, 32, 16)
"""Channels of the generator at 4x4, 8x8, 16x16, 32x32 and 64x64."""
LAYERED_WIDTHS = (64, 64, 48, 32)
"""Channels of the sprite decoder of :class:`LayeredShapesGenerator` at 4x4, 8x8, 16x16 and 32x32."""
ENCODER_WIDTHS = (16, 32, 64, 64)
"""Channels of the encoder at 32x32, 16x16, 8x8 and 4x4."""
PRIOR_HIDDEN = 128
"""Hidden width of the latent denoiser."""


class ShapesGenerator(nn.Module):
    """``G``: latent ``(B, latent_dim)`` -> RGB ``(B, 3, 4 * 2**4, ...)`` in ``[0, 1]`` (64x64 by default)."""

    def __init__(self, latent_dim: int = LATENT_DIM, widths: tuple[int, ...] = GENERATOR_WIDTHS):
        super().__init__()
        self.latent_dim = latent_dim
        self.widths = tuple(widths)
        self.fc = nn.Linear(latent_dim, widths[0] * 16)
        self.fc_norm = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU()]
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc_norm(self.fc(h).view(len(h), self.widths[0], 4, 4)))
        return torch.sigmoid(self.out(self.up(x)))


GRAIN_SEED = 20
"""Seed of the fixed grain pattern of :class:`LayeredShapesGenerator`."""

POSE_DIMS = 3
"""The first latent dimensions of :class:`LayeredShapesGenerator` are the sprite's pose: ``(y, x)`` of its centre in
``[-1, 1]`` image coordinates and its radius, ``(radius / size - 0.21) / 0.05``."""
SHAPE_DIMS = (3, 9)
"""Latent dimensions trained as logits of the shape kind (one per :data:`~nsi_widgets.zoo.render.SHAPE_KINDS`)."""
ROTATION_DIMS = (9, 11)
"""Latent dimensions trained as ``(cos, sin)`` of ``2 pi rotation / symmetry`` (zero for the circle and ring)."""
WINDOW = 1.4
"""Half-width of the sprite's window, in radii (every shape fits a disc of 1.25 radii)."""


class LayeredShapesGenerator(nn.Module):
    """``G``: latent ``(B, latent_dim)`` -> RGB ``(B, 3, size, size)`` in ``[0, 1]`` (64x64 by default).

    A layered generator (a background and a sprite composited with a mask, placed by a spatial
    transformer; as LR-GAN, Yang et al. 2017): from the same latent ``h``

    * the **sprite**: a convolutional decoder (a linear layer to ``widths[0] x 4 x 4``, per size doubling a
      bilinear upsampling and a 3x3 convolution with batch norm and ReLU, a 3x3 convolution,
      sigmoid) draws a mask ``m`` at ``4 * 2**(len(widths) - 1)`` pixels in the sprite's own frame; its
      colour ``c`` (3 numbers) is a linear layer and a sigmoid;
    * the **pose**: ``h[:, :3]`` (:data:`POSE_DIMS`) are the centre and the radius; an affine grid
      places the mask's window (``WINDOW`` radii each side) there (``grid_sample``, zero outside);
    * the **background**: a linear layer to ``3 x 16 x 16`` (sigmoid), bilinearly upsampled, plus ``a n``:
      a fixed, seeded luminance grain pattern ``n`` (a buffer, like StyleGAN's noise inputs) with an
      amplitude ``a >= 0`` (a linear layer and a softplus): ``G`` decides how grainy the background is,
      the grain itself cannot be known from a latent.

    ``x = clip(m c + (1 - m) (b + a n), 0, 1)``.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, widths: tuple[int, ...] = LAYERED_WIDTHS, size: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        self.widths = tuple(widths)
        self.size = size
        self.fc = nn.Linear(latent_dim, widths[0] * 16)
        self.fc_norm = nn.BatchNorm2d(widths[0])
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU()]
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv2d(widths[-1], 1, 3, padding=1)
        self.colour = nn.Linear(latent_dim, 3)
        self.background = nn.Linear(latent_dim, 3 * 16 * 16)
        self.amplitude = nn.Linear(latent_dim, 1)
        nn.init.constant_(self.amplitude.bias, -3.0)  # start nearly without grain
        nn.init.constant_(self.out.bias, -2.0)  # and with a faint sprite
        self.register_buffer("grain", torch.randn((1, 1, size, size), generator=torch.Generator().manual_seed(GRAIN_SEED)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b = len(h)
        x = torch.relu(self.fc_norm(self.fc(h).view(b, self.widths[0], 4, 4)))
        mask = torch.sigmoid(self.out(self.up(x)))
        cy, cx = h[:, 0], h[:, 1]
        half = WINDOW * (0.21 + 0.05 * h[:, 2]).clamp(min=0.02) * 2  # the window's half-width in [-1, 1] units
        zero = torch.zeros_like(cx)
        theta = torch.stack([torch.stack([1 / half, zero, -cx / half], 1),
                             torch.stack([zero, 1 / half, -cy / half], 1)], 1)
        grid = nn.functional.affine_grid(theta, (b, 1, self.size, self.size), align_corners=False)
        mask = nn.functional.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        colour = torch.sigmoid(self.colour(h))[:, :, None, None]
        background = torch.sigmoid(self.background(h).view(b, 3, 16, 16))
        background = nn.functional.interpolate(background, size=(self.size, self.size), mode="bilinear",
                                               align_corners=False)
        background = background + nn.functional.softplus(self.amplitude(h))[:, :, None, None] * self.grain
        return (mask * colour + (1 - mask) * background).clamp(0, 1)


class ShapesEncoder(nn.Module):
    """``E``: RGB ``(B, 3, 64, 64)`` in ``[0, 1]`` -> latent ``(B, latent_dim)``."""

    def __init__(self, latent_dim: int = LATENT_DIM, widths: tuple[int, ...] = ENCODER_WIDTHS):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in widths:
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.down = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * 16, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.down(x), 1))


class LatentDenoiser(nn.Module):
    """``R``: a denoising autoencoder on latents, ``R(h) = h + MLP(h)`` (trained on ``E(x) + noise -> E(x)``)."""

    def __init__(self, latent_dim: int = LATENT_DIM, hidden: int = PRIOR_HIDDEN):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, latent_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.net(h)


@dataclass
class GeneratorPrior:
    """A generator with its encoder and latent prior, as :func:`nsi_widgets.zoo.load_generator` returns it.

    Attributes
    ----------
    generator : nn.Module
        ``G``: latent ``(B, D)`` -> RGB image ``(B, 3, H, W)`` in ``[0, 1]``, eval mode.
    encoder : nn.Module
        ``E``: image -> latent, eval mode.
    prior : nn.Module
        ``R``: the latent denoising autoencoder, eval mode.
    low, high : Tensor, (D,)
        The latents' training range (per-dimension minimum and maximum of ``E(x)`` over the training
        images); :func:`nsi_widgets.ppgn` clips ``h`` to it.
    mean, std : Tensor, (D,)
        Per-dimension mean and standard deviation of the training latents (where PPGN starts).
    report : dict
        The training report (settings, PSNR, seconds).
    """

    generator: nn.Module
    encoder: nn.Module
    prior: nn.Module
    low: torch.Tensor
    high: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    report: dict = field(default_factory=dict)

    # short names, as in the paper
    @property
    def G(self) -> nn.Module:  # noqa: N802
        return self.generator

    @property
    def E(self) -> nn.Module:  # noqa: N802
        return self.encoder

    @property
    def R(self) -> nn.Module:  # noqa: N802
        return self.prior

    @property
    def latent_dim(self) -> int:
        return int(self.low.numel())

    def __repr__(self) -> str:
        psnr = self.report.get("held_out_psnr")
        extra = f", held-out PSNR {psnr:.1f} dB" if psnr is not None else ""
        return f"GeneratorPrior(latent_dim={self.latent_dim}{extra})"


GENERATORS = {"conv": ShapesGenerator, "layered": LayeredShapesGenerator}
"""The generator architectures, by the ``generator`` setting of a training report (``"conv"`` if absent)."""


def build(report: dict) -> tuple[nn.Module, ShapesEncoder, LatentDenoiser]:
    """The three networks with the architecture and sizes a training report names (untrained)."""
    d = int(report.get("latent_dim", LATENT_DIM))
    kind = report.get("generator", "conv")
    widths = report.get("generator_widths", GENERATOR_WIDTHS if kind == "conv" else LAYERED_WIDTHS)
    return (GENERATORS[kind](d, tuple(widths)),
            ShapesEncoder(d, tuple(report.get("encoder_widths", ENCODER_WIDTHS))),
            LatentDenoiser(d, int(report.get("prior_hidden", PRIOR_HIDDEN))))


LATENT_STATISTICS = ("low", "high", "mean", "std")
"""The per-dimension latent statistics stored beside the networks (as ``latent_<name>``)."""


def state_dict(bundle: GeneratorPrior) -> dict[str, torch.Tensor]:
    """One flat float32 state dict of the three networks and the latent statistics (the shipped file's layout)."""
    state = {}
    for prefix in ("generator", "encoder", "prior"):
        for key, value in getattr(bundle, prefix).state_dict().items():
            state[f"{prefix}.{key}"] = (value.float() if value.is_floating_point() else value).contiguous()
    for name in LATENT_STATISTICS:
        state[f"latent_{name}"] = getattr(bundle, name).float().contiguous()
    return state


def from_state_dict(state: dict[str, torch.Tensor], report: dict) -> GeneratorPrior:
    """The inverse of :func:`state_dict`: a :class:`GeneratorPrior` in eval mode."""
    generator, encoder, prior = build(report)
    for prefix, module in (("generator", generator), ("encoder", encoder), ("prior", prior)):
        part = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        module.load_state_dict(part)
        module.eval()
    stats = [state[f"latent_{name}"].clone() for name in LATENT_STATISTICS]
    return GeneratorPrior(generator, encoder, prior, *stats, report=dict(report))
