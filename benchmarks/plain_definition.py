"""The colour index's grey activations by the plain definition, as the issue words it.

For every reference (unit ``k``, top image ``j``, stored location ``(y, x)``) of a layer: take the
whole image ``j``, replace its receptive-field crop (the in-image part) by the grey crop, run the
image through the **whole network** (full-image forwards, batched ``batch_size`` references at a
time), and read unit ``k`` at ``(y, x)``. No reference shares work with another, even when two units
of a layer sit at the same image and place, and the forward does not stop at the layer.

This is the baseline the pca shortcut is measured against (``_child.py --config pca_colour``); it
reuses the engine's crop cutting (:func:`nsi_widgets.index.features.gather_crops`) and grey transform so
that the two compute the same numbers, which the benchmark checks.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nsi_widgets.core.passes import Consumer
from nsi_widgets.index.features import LayerReferences, gather_crops


class PlainDefinitionActivations(Consumer):
    """A consumer of the pass over the referenced images (:func:`nsi_widgets.core.passes.run_pass`)
    for one layer.

    Parameters
    ----------
    model : nn.Module
    module : nn.Module
        The layer whose output is read (a forward hook; the forward runs to the model's end).
    refs : LayerReferences
    transform : callable ``T(crops (R,3,h,w), inside (R,1,h,w)) -> (R,3,h,w)``
    batch_size : int
        References (full images) per forward.
    """

    def __init__(self, model: nn.Module, module: nn.Module, refs: LayerReferences, transform,
                 batch_size: int = 64):
        self.model, self.module, self.refs, self.transform = model, module, refs, transform
        self.batch_size = batch_size
        self.values = np.full(len(refs.unit), np.nan, dtype=np.float32)
        self.forwards = 0

    def on_batch(self, batch) -> None:
        batch_indices, images = batch.indices.numpy(), batch.images
        refs = self.refs
        sl = refs.in_batch(batch_indices)
        height, width = images.shape[-2:]
        captured = {}
        hook = self.module.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
        try:
            for start in range(sl.start, sl.stop, self.batch_size):
                ids = np.arange(start, min(start + self.batch_size, sl.stop))
                batch_pos = np.searchsorted(batch_indices, refs.image[ids])
                y0, x0 = refs.window_origin(ids)
                crops, inside = gather_crops(images, batch_pos, y0, x0, refs.receptive_field.size)
                grey = self.transform(crops, inside)
                full = images[torch.from_numpy(batch_pos)].clone()
                h, w = refs.receptive_field.size
                for i in range(len(ids)):
                    y, x = int(y0[i]), int(x0[i])
                    ys, ye, xs, xe = max(y, 0), min(y + h, height), max(x, 0), min(x + w, width)
                    full[i, :, ys:ye, xs:xe] = grey[i, :, ys - y: ye - y, xs - x: xe - x]
                with torch.inference_mode():
                    self.model(full)
                self.forwards += 1
                out = captured["out"]
                self.values[ids] = out[torch.arange(len(ids)), torch.from_numpy(refs.unit[ids]),
                                       torch.from_numpy(refs.y[ids]), torch.from_numpy(refs.x[ids])].float().numpy()
        finally:
            hook.remove()

    def result(self) -> dict[str, np.ndarray]:
        """``{"pca": (C, N) grey activations in rank order}``, as the engine's consumer returns them."""
        table = np.full((self.refs.n_units, self.refs.top_n), np.nan, dtype=np.float32)
        table[self.refs.unit, self.refs.rank] = self.values
        return {"pca": table}
