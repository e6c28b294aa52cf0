"""What activation maximisation maximises, per image of a batch (docs/methods.md section 9).

Each objective reads the recorded tensor ``t`` of the layer (``(B, C, ...)``) and the unit ``u_b`` of
each image ``b``, and returns ``(B,)``:

* ``"channel"``: the spatial mean of channel ``u_b``, ``mean_{y,x} t[b, u_b, y, x]``;
* ``"neuron"``: channel ``u_b`` at the centre of the map, ``t[b, u_b, H // 2, W // 2]``;
* ``"class"``: the model's output ``t[b, u_b]`` (a class logit; ``layer`` is then the model output).

:func:`diversity` is lucid's diversity term for several images of one unit in a call (repeat the
unit in ``units``): the mean cosine similarity of each image's Gram matrix with those of the other
images of the same unit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import InputError

OBJECTIVES = ("channel", "neuron", "class")
"""Values of ``objective=`` in :func:`nsi_widgets.visualize`."""


def _select(t: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """``t[b, units[b], ...]`` for every ``b``; ``(B, ...)``."""
    index = units.to(t.device).view(-1, *([1] * (t.ndim - 1))).expand(-1, 1, *t.shape[2:])
    return t.gather(1, index)[:, 0]


def evaluate(objective: str, t: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """The objective's value per image, ``(B,)``; see the module docstring."""
    if t.ndim < 2 or t.shape[0] != units.shape[0]:
        raise InputError(f"the layer's output has shape {tuple(t.shape)}; expected (batch={units.shape[0]}, units, ...)")
    chosen = _select(t, units)
    if objective == "channel":
        return chosen.flatten(1).mean(1) if chosen.ndim > 1 else chosen
    if objective == "neuron":
        if chosen.ndim == 1:
            return chosen
        centre = tuple(s // 2 for s in chosen.shape[1:])
        return chosen[(slice(None),) + centre]
    if objective == "class":
        if chosen.ndim != 1:
            raise InputError(f"objective='class' reads the model's output (B, classes); this one has shape "
                             f"{tuple(t.shape)}")
        return chosen
    raise InputError(f"objective must be one of {OBJECTIVES}, not {objective!r}")


def diversity(t: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of each image's Gram matrix to the other images of the same unit; ``(B,)``.

    ``G_b = T_b T_b^T`` with ``T_b`` the ``(C, positions)`` activations of image ``b``; 0 for an image
    whose unit occurs once. Subtracting ``weight * diversity`` from the objective pushes the images of
    one unit apart (lucid's ``diversity`` objective).
    """
    flat = t.flatten(2) if t.ndim > 2 else t[:, :, None]
    grams = F.normalize(torch.bmm(flat, flat.transpose(1, 2)).flatten(1), dim=1)
    similarity = grams @ grams.T
    same = (units[:, None] == units[None, :]).to(t.device) & ~torch.eye(len(units), dtype=torch.bool, device=t.device)
    count = same.sum(1).clamp(min=1)
    return (similarity * same).sum(1) / count
