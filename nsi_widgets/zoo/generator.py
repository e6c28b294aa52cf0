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
  images' ground truth; :class:`StructuredShapesGenerator` (``generator="structured"``; shipped as
  ``load_generator("shapes-structured")``, the generator for class targets)
  renders the default's generative factors held in its latent (:data:`STRUCTURED_LAYOUT`) with learned
  sprite templates, so that every output is an image of the default's kind;
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


STRUCTURED_LAYOUT: dict[str, tuple[int, int]] = {
    "shape": (0, 6),       # logits of the shape kind, one per SHAPE_KINDS (trained to +1 / -1)
    "pose": (6, 9),        # centre (y, x) in [-1, 1] image coordinates, radius code (radius / size - 0.21) / 0.05
    "rotation": (9, 11),   # (cos, sin) of 2 pi rotation / symmetry (ignored for the circle and the ring)
    "colour": (11, 14),    # the shape's RGB in [0, 1]
    "background": (14, 17),  # the background's grey level (its luminance) and tint (2 coordinates, luminance 0)
    "texture": (17, 21),   # logits of the background texture, one per BACKGROUND_KINDS (trained to +1 / -1)
    "amplitude": (21, 22),  # the texture's relative strength (the renderer's texture_amp, 0.7 to 1)
    "direction": (22, 24),  # (cos, sin) of the gradient texture's direction
    "clouds": (24, 60),    # the clouds texture's 6 x 6 coarse field (row-major), N(0, 1) in the renderer
    "spare": (60, 64),     # unused by G (the encoder is trained to leave them at 0)
}
"""Latent layout of :class:`StructuredShapesGenerator`: name -> ``(start, stop)`` dimensions, 64 in all; each
block is one generative factor of the default's images (:mod:`nsi_widgets.zoo.render`), in units of
:data:`LATENT_SCALES`."""
LATENT_SCALES: dict[str, float] = {"shape": 5.0, "pose": 0.1, "rotation": 0.1, "colour": 1.0, "background": 0.3,
                                   "texture": 10.0, "amplitude": 1.0, "direction": 1.0, "clouds": 1.0, "spare": 1.0}
"""Each block's factor is ``scale * h`` (the latent is the factor divided by the scale). The scales set how far one
PPGN step moves each factor (a step moves each latent dimension in proportion to its gradient, which
``scale`` multiplies, so the factor moves in proportion to ``scale**2``): the discrete choices (shape, texture)
and the colours move, the pose, the rotation and the background level are nearly held (the condition's gradient
on an edge's position is large and says little about the class; docs/methods.md section 10)."""
CLOUD_CELLS = 6
"""Side of the clouds texture's coarse field (as the renderer's)."""
TEMPLATE_SIZE = 64
"""Side of each learned sprite template of :class:`StructuredShapesGenerator` (covering ``WINDOW`` radii each side)."""
CHOICE_TEMPERATURE = 0.5
"""Temperature of the softmax over the shape and texture logits of :class:`StructuredShapesGenerator`."""
EDGE_SHARPNESS = 4.0
"""Mask ``sigmoid(EDGE_SHARPNESS * radius_px * F)`` of a template field ``F``: a field that is minus the signed
distance in radii gives an edge about one pixel wide at every size, as the renderer's anti-aliasing."""
_TEXTURE_INIT = (0.05, 0.05, 0.1)
"""Initial strengths of the grain, clouds and gradient textures (learned)."""


def choose(logits: torch.Tensor, temperature: float = CHOICE_TEMPERATURE, hard: bool = True) -> torch.Tensor:
    """Weights of a discrete choice from logits ``(B, K)``: ``softmax(logits / temperature)``, or (``hard``) the
    straight-through choice: forward the one-hot of the argmax, backward the softmax's gradient (a surrogate)."""
    soft = torch.softmax(logits / temperature, dim=1)
    if not hard:
        return soft
    one_hot = nn.functional.one_hot(soft.argmax(1), soft.shape[1]).to(soft.dtype)
    return one_hot + (soft - soft.detach())  # exactly the one-hot forward (soft - soft is 0)


def tint_basis() -> torch.Tensor:
    """``(2, 3)``: an orthonormal basis of the RGB vectors of luminance 0 (``0.299 R + 0.587 G + 0.114 B = 0``),
    the plane of the background's tint."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    e1 = torch.linalg.cross(w, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(w, e1)
    return torch.stack([e1, e2 / e2.norm()]).float()


def latent_scales() -> torch.Tensor:
    """``(64,)``: :data:`LATENT_SCALES` per latent dimension."""
    scales = torch.empty(LATENT_DIM)
    for name, (start, stop) in STRUCTURED_LAYOUT.items():
        scales[start:stop] = LATENT_SCALES[name]
    return scales


FACTOR_RANGES: dict[str, tuple[float, float]] = {"colour": (0.0, 1.0), "background": (0.0, 1.0), "amplitude": (0.0, 2.0)}
"""Where ``G`` depends on a factor (the shape's RGB and the background's level are clamped to [0, 1]; only the
first background dimension, the level, is limited): the latents' clip range is the training range intersected
with these (a clamped factor has no gradient, and PPGN could not bring it back)."""


def clip_to_factor_ranges(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The latent range ``(low, high)`` (``(64,)`` each) intersected with :data:`FACTOR_RANGES` (in latent units)."""
    low, high = low.clone(), high.clone()
    for name, (lo, hi) in FACTOR_RANGES.items():
        start, stop = STRUCTURED_LAYOUT[name]
        stop = start + 1 if name == "background" else stop
        scale = LATENT_SCALES[name]
        low[start:stop] = low[start:stop].clamp(lo / scale, hi / scale)
        high[start:stop] = high[start:stop].clamp(lo / scale, hi / scale)
    return low, high


def _block(h: torch.Tensor, name: str) -> torch.Tensor:
    start, stop = STRUCTURED_LAYOUT[name]
    return h[:, start:stop]


class StructuredShapesGenerator(nn.Module):
    """``G``: latent ``(B, 64)`` laid out as :data:`STRUCTURED_LAYOUT` -> RGB ``(B, 3, size, size)`` in ``[0, 1]``.

    Every output is an image of the default's kind (docs/zoo.md "Generator prior", docs/methods.md
    section 10): one shape of one kind on one textured background. The architecture encodes the
    default's generative factors (:mod:`nsi_widgets.zoo.render`); what is learned from the images:

    * a bank of sprite templates, one field ``F_k`` (``TEMPLATE_SIZE`` squared) per shape kind, in the
      shape's own frame (``WINDOW`` radii each side), symmetrised over the kind's rotational symmetry
      (the mean of its rotated copies: a rotation by one symmetry step renders the same mask, so the
      rendered image is continuous in the rotation latent); the mask is
      ``sigmoid(EDGE_SHARPNESS * radius_px * F)`` placed by a spatial transformer (bilinear
      ``grid_sample``) at the latent centre, radius and rotation ``2 pi`` -> ``symmetry`` degrees;
    * the strengths of the three textures: a fixed seeded grain pattern (:data:`GRAIN_SEED`; the grain of an
      image cannot be known from a latent), the clouds field bilinearly upsampled (the renderer's
      :func:`~nsi_widgets.zoo.render.upsample_matrix`), a ramp in the latent direction.

    The shape kind and the texture kind are discrete: their weights are :func:`choose` of the logits,
    by default the straight-through hard choice (``hard=True``: the image is always one kind, never a
    blend; the gradient reaching the logits is the softmax's, a surrogate). With the shape mask ``m``,
    colours ``c`` (shape) and ``b`` (background), texture ``t`` (luminance):
    ``x = clip(b + t + m (c - b - t), 0, 1)``, as the renderer composites (without its sensor noise); ``b`` is
    the grey level plus the tint (:func:`tint_basis`). ``forward(h)`` renders the factors ``h * scale``
    (:data:`LATENT_SCALES`, :meth:`render`).
    """

    def __init__(self, latent_dim: int = LATENT_DIM, size: int = 64, template_size: int = TEMPLATE_SIZE,
                 hard: bool = True, temperature: float = CHOICE_TEMPERATURE):
        super().__init__()
        from .render import ROTATIONAL_SYMMETRY, SHAPE_KINDS, upsample_matrix

        if latent_dim != LATENT_DIM:
            raise ValueError(f"the structured latent has {LATENT_DIM} dimensions (STRUCTURED_LAYOUT), not {latent_dim}")
        self.latent_dim, self.size, self.hard, self.temperature = latent_dim, size, bool(hard), float(temperature)
        self.symmetry = [ROTATIONAL_SYMMETRY[k] for k in SHAPE_KINDS]
        # zero fields to start: every mask is 0.5 in its window, where the gradient is largest
        self.templates = nn.Parameter(torch.zeros(len(SHAPE_KINDS), 1, template_size, template_size))
        grid = (torch.arange(template_size, dtype=torch.float32) + 0.5) / template_size * 2 - 1
        self.register_buffer("disc", grid[:, None] ** 2 + grid[None, :] ** 2 < 1, persistent=False)  # inscribed disc
        self.texture_strength = nn.Parameter(torch.tensor(_TEXTURE_INIT))
        self.register_buffer("grain", torch.randn((size, size), generator=torch.Generator().manual_seed(GRAIN_SEED)))
        self.register_buffer("upsample", torch.from_numpy(upsample_matrix(CLOUD_CELLS, size)))
        coords = torch.arange(size, dtype=torch.float32) + 0.5 - size / 2
        self.register_buffer("coords", coords / size)
        self.register_buffer("scales", latent_scales(), persistent=False)
        self.register_buffer("tint", tint_basis(), persistent=False)

    def symmetric_templates(self) -> torch.Tensor:
        """``(K, 1, T, T)``: each template field, background (-1) outside the window's inscribed disc (every shape
        fits 1.25 radii), averaged over the rotations of its kind's symmetry (eight for the circle and the ring)."""
        templates = torch.where(self.disc, self.templates, -torch.ones(()))
        fields = []
        for k, symmetry in enumerate(self.symmetry):
            copies = 8 if symmetry >= 360 else int(round(360 / symmetry))
            angles = torch.arange(copies, dtype=torch.float32) * (2 * torch.pi / copies)
            cos, sin, zero = torch.cos(angles), torch.sin(angles), torch.zeros(copies)
            theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
            field = templates[k:k + 1].expand(copies, -1, -1, -1)
            grid = nn.functional.affine_grid(theta.to(field), field.shape, align_corners=False)
            rotated = nn.functional.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=False)
            fields.append(rotated.mean(0, keepdim=True))
        return torch.cat(fields)

    def masks(self, f: torch.Tensor) -> torch.Tensor:
        """``(B, K, size, size)``: every kind's mask at the pose and rotation of factors ``f``."""
        b, kinds = len(f), len(self.symmetry)
        pose, turn = _block(f, "pose"), _block(f, "rotation")
        cy, cx = pose[:, 0], pose[:, 1]
        radius_px = (0.21 + 0.05 * pose[:, 2]).clamp(min=0.02) * self.size
        half = WINDOW * radius_px * 2 / self.size  # the window's half-width in [-1, 1] image units
        tiny = turn.pow(2).sum(1) < 1e-12
        angle = torch.atan2(turn[:, 1], torch.where(tiny, torch.ones_like(turn[:, 0]), turn[:, 0]))
        symmetry = torch.tensor(self.symmetry, dtype=f.dtype, device=f.device)
        phi = torch.where(symmetry < 360, angle[:, None] * torch.deg2rad(symmetry) / (2 * torch.pi),
                          torch.zeros(()))  # (B, K) the rotation in radians
        cos, sin = torch.cos(phi), torch.sin(phi)
        cy, cx, half = cy[:, None], cx[:, None], half[:, None]
        theta = torch.stack([torch.stack([cos / half, sin / half, -(cos * cx + sin * cy) / half], -1),
                             torch.stack([-sin / half, cos / half, (sin * cx - cos * cy) / half], -1)], -2)
        fields = self.symmetric_templates()  # (K, 1, T, T)
        grid = nn.functional.affine_grid(theta.reshape(b * kinds, 2, 3), (b * kinds, 1, self.size, self.size),
                                         align_corners=False)
        source = fields[None].expand(b, -1, -1, -1, -1).reshape(b * kinds, 1, *fields.shape[-2:])
        sampled = nn.functional.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        sampled = sampled.view(b, kinds, self.size, self.size)
        return torch.sigmoid(EDGE_SHARPNESS * radius_px[:, None, None, None] * sampled)

    def textures(self, f: torch.Tensor) -> torch.Tensor:
        """``(B, 4, size, size)``: the luminance of each texture kind (flat, grain, clouds, gradient) of factors ``f``."""
        b = len(f)
        amplitude = _block(f, "amplitude")[:, :, None]
        grain = self.grain.expand(b, -1, -1)
        clouds = self.upsample @ _block(f, "clouds").view(b, CLOUD_CELLS, CLOUD_CELLS) @ self.upsample.T
        direction = _block(f, "direction")
        direction = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-6)
        ramp = direction[:, 0, None, None] * self.coords[None, None, :] + direction[:, 1, None, None] * self.coords[None, :, None]
        strength = self.texture_strength
        return torch.stack([torch.zeros_like(grain), strength[0] * amplitude * grain, strength[1] * amplitude * clouds,
                            strength[2] * amplitude * ramp], 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.render(h * self.scales)

    def render(self, f: torch.Tensor) -> torch.Tensor:
        """The image of factors ``f = scale * h`` (``(B, 64)``, laid out as :data:`STRUCTURED_LAYOUT`)."""
        shape_w = choose(_block(f, "shape"), self.temperature, self.hard)[:, :, None, None]
        texture_w = choose(_block(f, "texture"), self.temperature, self.hard)[:, :, None, None]
        mask = (shape_w * self.masks(f)).sum(1, keepdim=True)
        texture = (texture_w * self.textures(f)).sum(1, keepdim=True)
        colour = _block(f, "colour").clamp(0, 1)[:, :, None, None]
        level_tint = _block(f, "background")
        base = (level_tint[:, :1] + level_tint[:, 1:] @ self.tint).clamp(0, 1)
        background = base[:, :, None, None] + texture
        return (background + mask * (colour - background)).clamp(0, 1)


class ShapesEncoder(nn.Module):
    """``E``: RGB ``(B, 3, 64, 64)`` in ``[0, 1]`` -> latent ``(B, latent_dim)``; ``coords=True`` appends the pixel
    coordinates as two input channels (for the structured generator's exact pose)."""

    def __init__(self, latent_dim: int = LATENT_DIM, widths: tuple[int, ...] = ENCODER_WIDTHS, coords: bool = False):
        super().__init__()
        self.coords = bool(coords)
        layers: list[nn.Module] = []
        cin = 5 if coords else 3
        for cout in widths:
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.down = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * 16, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coords:  # CoordConv (Liu et al. 2018): two channels of the pixel's y and x in [-1, 1]
            b, _, height, width = x.shape
            y = torch.linspace(-1, 1, height, dtype=x.dtype, device=x.device)[:, None].expand(height, width)
            xs = torch.linspace(-1, 1, width, dtype=x.dtype, device=x.device)[None, :].expand(height, width)
            x = torch.cat([x, torch.stack([y, xs])[None].expand(b, -1, -1, -1)], 1)
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


GENERATORS = {"conv": ShapesGenerator, "layered": LayeredShapesGenerator, "structured": StructuredShapesGenerator}
"""The generator architectures, by the ``generator`` setting of a training report (``"conv"`` if absent)."""
STRUCTURED_ENCODER_WIDTHS = (32, 64, 96, 128)
"""Channels of the encoder of the structured generator (with coordinate channels)."""


def build(report: dict) -> tuple[nn.Module, ShapesEncoder, LatentDenoiser]:
    """The three networks with the architecture and sizes a training report names (untrained)."""
    d = int(report.get("latent_dim", LATENT_DIM))
    kind = report.get("generator", "conv")
    if kind == "structured":
        generator = StructuredShapesGenerator(d, int(report.get("size", 64)),
                                              int(report.get("template_size", TEMPLATE_SIZE)),
                                              bool(report.get("hard_choice", True)),
                                              float(report.get("choice_temperature", CHOICE_TEMPERATURE)))
    else:
        widths = report.get("generator_widths", GENERATOR_WIDTHS if kind == "conv" else LAYERED_WIDTHS)
        generator = GENERATORS[kind](d, tuple(widths))
    encoder = ShapesEncoder(d, tuple(report.get("encoder_widths", ENCODER_WIDTHS)), bool(report.get("encoder_coords")))
    return generator, encoder, LatentDenoiser(d, int(report.get("prior_hidden", PRIOR_HIDDEN)))


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
