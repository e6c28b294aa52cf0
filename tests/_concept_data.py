"""Concept data and tiny models for the concept-vector and similarity tests.

``Squares``: a coloured square (red, green or blue) on a grey-noise background; masks per colour
(where the square is, when it has that colour) and the background. Labels: the square's colour
(``.labels``), so ``Squares`` also serves as labelled data for TCAV.
``make_bn_cnn``: conv/BN/ReLU blocks; ``permuted``: the same function with a hidden layer's channels
permuted (its conv's outputs, its batch norm, and the next conv's inputs).
"""
import copy
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

COLOURS = {"red": (0.9, 0.15, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.2, 0.9)}


class Squares(torch.utils.data.Dataset):
    concepts = ["red", "green", "blue", "background"]
    concept_categories = ["colour", "colour", "colour", "place"]
    classes = ["red", "green", "blue"]

    def __init__(self, n, size=16, seed=0):
        rng = np.random.default_rng(seed)
        self.size = size
        self.labels = rng.integers(0, 3, size=n)
        self.corners = rng.integers(0, size - 6, size=(n, 2))
        self.sides = rng.integers(4, 7, size=n)
        self.noise = rng.uniform(0.3, 0.6, size=(n, 1, size, size)).astype(np.float32)

    def __len__(self):
        return len(self.labels)

    def square(self, i):
        mask = np.zeros((self.size, self.size), bool)
        (y, x), s = self.corners[i], self.sides[i]
        mask[y:y + s, x:x + s] = True
        return mask

    def __getitem__(self, i):
        mask = self.square(i)
        image = np.repeat(self.noise[i], 3, axis=0)
        image[:, mask] = np.asarray(list(COLOURS.values())[self.labels[i]], np.float32)[:, None]
        masks = np.zeros((4, self.size, self.size), bool)
        masks[self.labels[i]] = mask
        masks[3] = ~mask
        return torch.from_numpy(image), torch.from_numpy(masks)


class Labelled(torch.utils.data.Dataset):
    """The images of a concept dataset with its labels: items ``(image, label)``."""

    def __init__(self, concept_data):
        self.concept_data = concept_data
        self.classes = list(concept_data.classes)
        self.targets = list(concept_data.labels)

    def __len__(self):
        return len(self.concept_data)

    def __getitem__(self, i):
        return self.concept_data[i][0], int(self.targets[i])


def make_bn_cnn(seed=0, n_classes=3):
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 6, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(6, 8, 3, padding=1), bn2=nn.BatchNorm2d(8), relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2),
        conv3=nn.Conv2d(8, 7, 3, padding=1), relu3=nn.ReLU(),
        head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, n_classes)),
    ))
    with torch.no_grad():   # batch-norm statistics that are not the identity
        model.bn2.running_mean.uniform_(-0.2, 0.2)
        model.bn2.running_var.uniform_(0.5, 1.5)
        model.bn2.weight.uniform_(0.5, 1.5)
        model.bn2.bias.uniform_(-0.1, 0.1)
    return model.eval()


def permuted(model, seed=1):
    """``model`` with conv2's output channels permuted (with bn2, and conv3's input channels)."""
    out = copy.deepcopy(model)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(out.conv2.out_channels))
    with torch.no_grad():
        out.conv2.weight.copy_(model.conv2.weight[order])
        out.conv2.bias.copy_(model.conv2.bias[order])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(out.bn2, name).copy_(getattr(model.bn2, name)[order])
        out.conv3.weight.copy_(model.conv3.weight[:, order])
    return out.eval(), order
