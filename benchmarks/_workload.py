"""The benchmark's workload: a VGG-like CNN and a dataset of images generated on the fly.

Standalone on purpose (torch only, no ``nsi_widgets`` import): the zennit-crp worker imports it
from a separate virtual environment, so both sides run the very same network and images.

* :class:`VGGLike`: 8 convolutions with ReLU in 4 blocks, max pooling after each block, then global
  average pooling and a linear classifier (zennit-crp attributes relevance from a class output).
  He-initialised with a small positive bias so that few ReLU units are dead at random init.
* :class:`SyntheticImages`: image ``i`` is generated from a generator seeded with ``(seed, i)`` every
  time it is read, so nothing is held in memory and memory measures the tool, not the data.
"""
from __future__ import annotations

import resource
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Channel widths of the 8 convolutions of the full benchmark (2 per block).
FULL_WIDTHS = (24, 24, 48, 48, 96, 96, 192, 192)
#: A tiny network for ``--quick`` runs and the smoke test.
QUICK_WIDTHS = (4, 4, 8, 8, 8, 8, 8, 8)
N_CLASSES = 10


class VGGLike(nn.Module):
    """A VGG-style feature extractor: ``(conv3x3-ReLU) x 2, maxpool`` in 4 blocks, then a classifier.

    Parameters
    ----------
    widths : sequence of 8 ints
        Output channels of the 8 convolutions.
    n_classes : int
        Outputs of the linear classifier.
    seed : int
        Seed of the (He) initialisation.
    bias : float
        Initial value of every convolution bias (positive: keeps units alive at random init).
    """

    def __init__(self, widths: Sequence[int] = FULL_WIDTHS, n_classes: int = N_CLASSES, seed: int = 0,
                 bias: float = 0.05):
        super().__init__()
        if len(widths) != 8:
            raise ValueError(f"widths must list 8 convolution widths, got {len(widths)}")
        layers: list[nn.Module] = []
        in_channels = 3
        for block in range(4):
            for width in widths[2 * block: 2 * block + 2]:
                layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU()]
                in_channels = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, n_classes)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                    module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                    module.bias.fill_(bias)
                elif isinstance(module, nn.Linear):
                    module.weight.normal_(0.0, (1.0 / module.in_features) ** 0.5, generator=generator)
                    module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def relu_layer_names(model: VGGLike) -> list[str]:
    """Dotted names of the 8 ReLU modules (the rectified outputs of the convolutions)."""
    return [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.ReLU)]


class SyntheticImages(torch.utils.data.Dataset):
    """Deterministic labelled RGB images in ``[0, 1]``, generated per index (never stored).

    Each image mixes smooth colour fields at two scales, a class tint and fine noise; the label is
    ``i % n_classes``. The same ``(seed, i)`` always gives the same image, in any process.

    Parameters
    ----------
    n_images : int
    size : int
        Height and width.
    seed : int
    n_classes : int
    """

    def __init__(self, n_images: int, size: int = 64, seed: int = 0, n_classes: int = N_CLASSES):
        self.n_images, self.size, self.seed, self.n_classes = int(n_images), int(size), int(seed), int(n_classes)
        self.classes = [f"class{c}" for c in range(self.n_classes)]
        tint = torch.Generator().manual_seed(10_000 + self.seed)
        self._tints = torch.rand(self.n_classes, 3, 1, 1, generator=tint)

    def __len__(self) -> int:
        return self.n_images

    def __getitem__(self, index) -> tuple[torch.Tensor, int]:
        index = int(index)
        if not 0 <= index < self.n_images:
            raise IndexError(f"index {index} out of range for {self.n_images} images")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        label = index % self.n_classes
        coarse = torch.rand(1, 3, 4, 4, generator=generator)
        medium = torch.rand(1, 3, 16, 16, generator=generator)
        fine = torch.rand(3, self.size, self.size, generator=generator)
        size = (self.size, self.size)
        image = (0.45 * F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0]
                 + 0.3 * F.interpolate(medium, size=size, mode="bilinear", align_corners=False)[0]
                 + 0.15 * self._tints[label] + 0.1 * fine)
        return image.clamp_(0.0, 1.0), label


def make_workload(quick: bool = False, seed: int = 0) -> tuple[VGGLike, list[str], int]:
    """The model (eval mode), its 8 indexed layer names, and the image size."""
    model = VGGLike(QUICK_WIDTHS if quick else FULL_WIDTHS, seed=seed).eval()
    return model, relu_layer_names(model), (32 if quick else 64)


def load_model(state_path: str, widths: Sequence[int]) -> VGGLike:
    """Rebuild the benchmark model from a ``torch.save``-d state_dict (loaded with weights_only)."""
    model = VGGLike(widths)
    model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True))
    return model.eval()


def stack_batches(data, batch_size: int):
    """Yield ``(images, labels)`` batches in index order: the plain loading loop of the workers."""
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        yield torch.stack([im for im, _ in items]), torch.tensor([lb for _, lb in items])


def time_forward_only(model: nn.Module, data, batch_size: int) -> float:
    """Seconds for plain ``model(x)`` over ``data`` (with :func:`stack_batches` loading)."""
    started = time.perf_counter()
    with torch.inference_mode():
        for images, _ in stack_batches(data, batch_size):
            model(images)
    return time.perf_counter() - started


def prepare_process(state_path: str, quick: bool, n_images: int, image_size: int, batch_size: int,
                    threads: int | None) -> tuple[VGGLike, list[str], SyntheticImages]:
    """Set up a measured process: torch threads, the model, its layers, the data, and a one-batch
    warm-up (so the first timed run does not pay one-off kernel set-up)."""
    if threads:
        torch.set_num_threads(threads)
    model = load_model(state_path, QUICK_WIDTHS if quick else FULL_WIDTHS)
    data = SyntheticImages(n_images, image_size)
    with torch.inference_mode():
        model(torch.stack([data[i][0] for i in range(min(batch_size, len(data)))]))
    return model, relu_layer_names(model), data


def maxrss_mb() -> float:
    """Peak resident set size of this process in MB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
