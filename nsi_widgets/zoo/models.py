"""The two CNNs shipped with the shapes data set, with layer names made for indexing.

* :class:`ShapesCNN` (``"cnn"``): VGG-like, five blocks ``conv1 .. conv5``, each
  ``Sequential(Conv2d, [BatchNorm2d,] ReLU)``, max pooling ``pool1 .. pool4`` between them.
* :class:`ShapesResNet` (``"resnet"``): a stem ``Sequential(Conv2d, BatchNorm2d, ReLU)`` and four
  residual blocks ``block1 .. block4`` (two 3x3 convolutions with batch norm, a projection
  shortcut, the ReLU after the sum; each halves the resolution).

In both, the tensor recorded for an indexed layer is the rectified activation the paper indexes;
:func:`conv_layers` lists those layers, input to output. The head of both is global average
pooling (``gap``) and one ``Linear`` (``fc``).
"""
from __future__ import annotations

import torch
from torch import nn

from .shapes import CLASSES

N_CLASSES = len(CLASSES)

CONV_LAYERS: tuple[str, ...] = ("conv1", "conv2", "conv3", "conv4", "conv5")
"""Names of the rectified convolution blocks of :class:`ShapesCNN`, input to output."""
RESNET_LAYERS: tuple[str, ...] = ("stem", "block1", "block2", "block3", "block4")
"""Names of the rectified stages of :class:`ShapesResNet`, input to output."""


def _conv_block(in_channels: int, out_channels: int, batch_norm: bool = True) -> nn.Sequential:
    """3x3 convolution (padding 1), optional batch norm, ReLU: the block's output is rectified."""
    if not batch_norm:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU())
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class ShapesCNN(nn.Module):
    """A VGG-like CNN for :func:`~nsi_widgets.zoo.make_shapes` images (RGB in ``[0, 1]``, 64x64).

    Takes images in ``[0, 1]`` directly (no normalisation needed: ``preprocess=None``) and
    returns class logits. Any input size works (the head averages over space).

    Layers (for 64x64 input; RF = receptive field in pixels)::

        conv1  3->16   64x64  RF  3      pool1  32x32
        conv2 16->32   32x32  RF  8      pool2  16x16
        conv3 32->64   16x16  RF 18      pool3   8x8
        conv4 64->64    8x8   RF 38      pool4   4x4
        conv5 64->64    4x4   RF 78      head: global average pool, Linear(64, n_classes)

    Parameters
    ----------
    n_classes : int
        Number of output classes (240 for the shapes set).
    widths : sequence of int
        Output channels of ``conv1 .. convK`` (K = ``len(widths)``).
    """

    def __init__(self, n_classes: int = N_CLASSES, widths: tuple[int, ...] = (16, 32, 64, 64, 64)):
        super().__init__()
        self.conv_names = tuple(f"conv{k + 1}" for k in range(len(widths)))
        in_channels = 3
        for k, width in enumerate(widths, start=1):
            # No batch norm on conv1: at full resolution it would cost more than the convolution.
            self.add_module(f"conv{k}", _conv_block(in_channels, width, batch_norm=k > 1))
            if k < len(widths):
                self.add_module(f"pool{k}", nn.MaxPool2d(2))
            in_channels = width
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv block's rectified maps."""
        for k, name in enumerate(self.conv_names, start=1):
            x = getattr(self, name)(x)
            if k < len(self.conv_names):
                x = getattr(self, f"pool{k}")(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.gap(self.features(x)), 1))


class ResidualBlock(nn.Module):
    """``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))``: two 3x3 convolutions and a shortcut.

    The first convolution has the block's stride; the shortcut is the identity when shape and
    stride allow it, else a 1x1 convolution with batch norm. The block's output is rectified.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ShapesResNet(nn.Module):
    """A small residual network with batch norm for the shapes images (RGB in ``[0, 1]``).

    Deeper than :class:`ShapesCNN` (nine 3x3 convolutions on the main path, plus 1x1 projection
    shortcuts) and of another kind: residual blocks, strided convolutions instead of pooling.

    Layers (for 64x64 input)::

        stem    3->16   64x64   Conv 3x3, BN, ReLU
        block1 16->24   32x32   residual block, stride 2
        block2 24->32   16x16   residual block, stride 2
        block3 32->48    8x8    residual block, stride 2
        block4 48->48    4x4    residual block, stride 2
        head: global average pool, Linear(48, n_classes)

    Parameters
    ----------
    n_classes : int
        Number of output classes (240 for the shapes set).
    widths : sequence of int
        Channels of the stem and of each block (``len(widths) - 1`` blocks).
    """

    def __init__(self, n_classes: int = N_CLASSES, widths: tuple[int, ...] = (16, 24, 32, 48, 48)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.conv_names = ("stem",) + tuple(f"block{k}" for k in range(1, len(widths)))
        for k in range(1, len(widths)):
            self.add_module(f"block{k}", ResidualBlock(widths[k - 1], widths[k], stride=2))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's rectified maps."""
        for name in self.conv_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.gap(self.features(x)), 1))


ARCHITECTURES: dict[str, type[nn.Module]] = {"cnn": ShapesCNN, "resnet": ShapesResNet}
"""The shipped architectures by the name :func:`nsi_widgets.zoo.load` takes as ``model=``."""


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the layers worth indexing in ``model``, input to output.

    For :class:`ShapesCNN` these are its rectified blocks ``["conv1", ..., "conv5"]``, for
    :class:`ShapesResNet` its stem and residual blocks ``["stem", "block1", ..., "block4"]``. For
    any other model, the dotted names of its ``nn.Conv2d`` modules (pre-activation: index the ReLU
    after each instead if the model has them as modules).

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    list of str
        Names usable as ``layers=`` in ``nsi_widgets.index_neurons``.
    """
    if isinstance(model, (ShapesCNN, ShapesResNet)):
        return list(model.conv_names)
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
