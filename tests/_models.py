"""Tiny CNNs and datasets for the unit tests (imported by conftest.py and the tests)."""
from collections import OrderedDict

import torch
from torch import nn


class ListDataset(torch.utils.data.Dataset):
    """Images (3xHxW float in [0, 1]) with integer labels."""

    def __init__(self, images, labels=None, classes=None, class_parents=None):
        self.images = images
        self.labels = labels
        if classes is not None:
            self.classes = classes
        if class_parents is not None:
            self.class_parents = class_parents

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if self.labels is None:
            return self.images[i]
        return self.images[i], int(self.labels[i])


def make_cnn(seed=0, dead_unit=True):
    """A small CNN with padding, stride, dilation and pooling; unit 0 of conv2 is dead."""
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(6, 8, 3, stride=2, padding=2, dilation=2), relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2),
        conv3=nn.Conv2d(8, 5, 3, padding=1), relu3=nn.ReLU(),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)),
    ))
    if dead_unit:
        with torch.no_grad():
            model.conv2.bias[0] = -1e3
    return model.eval()


def make_images(n, height=20, width=24, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, height, width, generator=generator) for _ in range(n)]


class ColourConcepts(torch.utils.data.Dataset):
    """Concept data over given images (items ``(image, masks)``): where a pixel is red (R > G + B),
    green (G > R + B), bright (mean > 0.6), and the left third of the image."""

    concepts = ["red", "green", "bright", "left"]
    concept_categories = ["colour", "colour", "tone", "place"]

    def __init__(self, images, mask_scale=1):
        self.images, self.scale = images, mask_scale

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        small = torch.nn.functional.avg_pool2d(image[None], self.scale)[0] if self.scale > 1 else image
        r, g, b = small
        left = torch.zeros(small.shape[1:], dtype=torch.bool)
        left[:, : small.shape[2] // 3] = True
        return image, torch.stack([r > g + b, g > r + b, small.mean(0) > 0.6, left])


def plant_red_unit(model, layer="conv1", unit=0):
    """Make ``unit`` of a 3x3 padded conv layer compute R - G - B at each pixel (a red detector:
    positive exactly where ColourConcepts' "red" mask is)."""
    conv = dict(model.named_modules())[layer]
    with torch.no_grad():
        conv.weight[unit] = 0.0
        centre = conv.weight.shape[-1] // 2
        conv.weight[unit, :, centre, centre] = torch.tensor([1.0, -1.0, -1.0])
        conv.bias[unit] = 0.0
    return model
