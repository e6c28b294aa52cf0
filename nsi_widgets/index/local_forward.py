"""A unit's activation after its receptive-field crop is transformed (METHODS.md sections 4 and 6).

The plain definition: replace the crop (its in-image part) of image ``j`` by ``T(crop)``, run the whole
image through the network, read unit ``k`` at the stored ``(y, x)``.

The shortcut: a unit only sees the pixels of its receptive field, so for a convolutional feature
extractor the same number comes out of a forward pass of a *sub-image*: the rows/columns from the
window's start (moved back to a multiple of the layer's stride, so that every layer's sampling grid
lines up with the full image's) to the window's end (both clipped to the image, so real image
borders keep the network's own padding). Sub-images of interior windows all share one shape and are
batched; the forward stops at the layer. Identical sub-images (same image and location, another unit
of the layer) are computed once.

Whether the shortcut holds is checked, not assumed: :func:`shortcut_matches_plain` compares it with
the plain definition on sample references (border ones included) before it is used for a layer.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from ..core.layers import LayerRecorder
from ..core.passes import Batch, Consumer
from .cone import ChainCone
from .features import LayerReferences, crop_chunk_size, gather_crops

CropTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sub_image_bounds(refs: LayerReferences, ids: np.ndarray, image_size: tuple[int, int], shortcut: bool):
    """Per reference: ``(top, bottom, left, right)`` of the image region to forward (ends exclusive)."""
    height, width = image_size
    rf = refs.receptive_field
    y0, x0 = refs.window_origin(ids)
    if not shortcut:
        n = len(y0)
        return np.zeros(n, np.int64), np.full(n, height), np.zeros(n, np.int64), np.full(n, width)
    sy, sx = rf.stride
    top = (np.maximum(y0, 0) // sy) * sy
    left = (np.maximum(x0, 0) // sx) * sx
    bottom = np.minimum(y0 + rf.size[0], height)
    right = np.minimum(x0 + rf.size[1], width)
    return top, bottom, left, right


class ReferenceValues:
    """One float per reference of a layer and per named transform, with the set of references done.

    The state of the consumers below: saving, loading and merging it is exact (each value is computed
    by exactly one process, from the same batches one process would run).
    """

    def __init__(self, refs: LayerReferences, names):
        self.refs = refs
        self.values = {name: np.full(len(refs.unit), np.nan, dtype=np.float32) for name in names}
        self.done = np.zeros(len(refs.unit), dtype=bool)

    def state(self, prefix: str = "") -> dict[str, np.ndarray]:
        out = {f"{prefix}value:{k}": v.copy() for k, v in self.values.items()}
        out[f"{prefix}done"] = self.done.copy()
        return out

    def load_state(self, state: dict[str, np.ndarray], prefix: str = "") -> None:
        self.values = {k: np.array(state[f"{prefix}value:{k}"], dtype=np.float32) for k in self.values}
        self.done = np.array(state[f"{prefix}done"], dtype=bool)

    def merge_state(self, state: dict[str, np.ndarray], prefix: str = "") -> None:
        theirs = np.asarray(state[f"{prefix}done"], dtype=bool)
        for k, v in self.values.items():
            v[theirs] = np.asarray(state[f"{prefix}value:{k}"])[theirs]
        self.done |= theirs

    def tables(self) -> dict[str, np.ndarray]:
        """Per name, a (C, N) array in rank order."""
        refs = self.refs
        out = {}
        for name, values in self.values.items():
            table = np.full((refs.n_units, refs.top_n), np.nan, dtype=np.float32)
            table[refs.unit, refs.rank] = values
            out[name] = table
        return out


class TransformedActivations(Consumer):
    """Compute ``a^T_j`` for every reference of one layer, as a consumer of the referenced-image pass.

    Parameters
    ----------
    model, module : the network and the layer's module (the forward stops there).
    refs : LayerReferences of the layer.
    transforms : dict of name -> crop transform ``T(crops (R,3,h,w), inside (R,1,h,w)) -> (R,3,h,w)``;
        pixels outside the image are zero in the input and are ignored in the output.
    preprocess : callable mapping RGB ``[0, 1]`` batches to the model's input, or None.
    image_size : (H, W) of the dataset's images.
    shortcut : bool, use sub-image forwards (else full-image forwards: the plain definition).
    cone : ChainCone or None
        With ``shortcut``, forward each unit's receptive cone instead of a sub-image (see
        :mod:`nsi_widgets.cone`; only for layers reached by a verified chain of local modules).
    """

    def __init__(self, model: nn.Module, module: nn.Module, refs: LayerReferences,
                 transforms: dict[str, CropTransform], preprocess, image_size: tuple[int, int],
                 device, shortcut: bool, batch_size: int = 64, cone: ChainCone | None = None):
        self.model = model
        self.module = module
        self.refs = refs
        self.transforms = transforms
        self.preprocess = preprocess
        self.image_size = image_size
        self.device = device
        self.shortcut = shortcut
        self.batch_size = batch_size
        self.cone = cone
        # Results in reference order (sorted by image), reshaped to (C, N) at the end.
        self.results = ReferenceValues(refs, transforms)

    def on_batch(self, batch: Batch) -> None:
        batch_indices, images = batch.indices.numpy(), batch.images
        sl = self.refs.in_batch(batch_indices)
        # Chunks bound the memory of the crops and sub-images built at once.
        for part in self.refs.chunks(sl, crop_chunk_size(self.refs.receptive_field)):
            ids = np.arange(part.start, part.stop)
            for name, transform in self.transforms.items():
                self.results.values[name][part] = self.compute(batch_indices, images, ids, transform)
        self.results.done[sl] = True

    def state(self) -> dict[str, np.ndarray]:
        return self.results.state()

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.results.load_state(state)

    def merge_state(self, state: dict[str, np.ndarray]) -> None:
        self.results.merge_state(state)

    def compute(self, batch_indices: np.ndarray, images: torch.Tensor, ids: np.ndarray,
                transform: CropTransform, shortcut: bool | None = None) -> np.ndarray:
        """``a^T`` for the references ``ids``, whose images are ``images`` (dataset ``batch_indices``)."""
        shortcut = self.shortcut if shortcut is None else shortcut
        refs = self.refs
        rf = refs.receptive_field
        # One sub-image per distinct (image, y, x): other units at the same place share it.
        keys = np.stack([refs.image[ids], refs.y[ids], refs.x[ids]], axis=1)
        unique_keys, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        key_refs = ids[first]
        y0, x0 = refs.window_origin(key_refs)
        batch_pos = np.searchsorted(batch_indices, unique_keys[:, 0])
        crops, inside = gather_crops(images, batch_pos, y0, x0, rf.size)
        changed = transform(crops, inside)

        if shortcut and self.cone is not None:
            bounds, groups, run = self._cone_plan(unique_keys)
        else:
            bounds, groups, run = self._window_plan(unique_keys, key_refs, shortcut)
        key_vectors = self._forward_windows(images, batch_pos, changed, inside, y0, x0, len(unique_keys),
                                            bounds, groups, run)
        return key_vectors[torch.from_numpy(inverse), torch.from_numpy(refs.unit[ids])].numpy().astype(np.float32)

    def _cone_plan(self, unique_keys: np.ndarray):
        """Cone forwards: each key's input window, groups of keys with equal cone geometry (shapes and
        pads per axis, so they batch together), and how a batch's unit vectors are computed."""
        rows = [self.cone.axis(0, y) for y in unique_keys[:, 1].tolist()]
        columns = [self.cone.axis(1, x) for x in unique_keys[:, 2].tolist()]
        groups: dict[tuple, list[int]] = {}
        for i, (r, c) in enumerate(zip(rows, columns)):
            groups.setdefault((r.key, c.key), []).append(i)
        bounds = ([r.start for r in rows], [r.stop for r in rows], [c.start for c in columns],
                  [c.stop for c in columns])

        def run(inputs: torch.Tensor, group: np.ndarray) -> torch.Tensor:
            with torch.inference_mode():
                return self.cone.run(inputs, rows[group[0]], columns[group[0]]).float().cpu()
        return bounds, list(groups.values()), run

    def _window_plan(self, unique_keys: np.ndarray, key_refs: np.ndarray, shortcut: bool):
        """Sub-image forwards (whole images without the shortcut): each key's window, groups of keys
        with one window shape, and how a batch's unit vectors are read from the layer's output."""
        rf = self.refs.receptive_field
        bounds = sub_image_bounds(self.refs, key_refs, self.image_size, shortcut)
        top, bottom, left, right = bounds
        # Where the unit sits in its sub-image's feature map (top/left are multiples of the stride).
        out_y = torch.from_numpy(unique_keys[:, 1] - top // rf.stride[0])
        out_x = torch.from_numpy(unique_keys[:, 2] - left // rf.stride[1])
        shapes = np.stack([bottom - top, right - left], axis=1)
        groups = [np.nonzero((shapes == shape).all(axis=1))[0] for shape in np.unique(shapes, axis=0)]

        def run(inputs: torch.Tensor, group: np.ndarray) -> torch.Tensor:
            output = self._forward(inputs)
            return output[torch.arange(len(group)), :, out_y[group], out_x[group]]
        return bounds, groups, run

    def _forward_windows(self, images, batch_pos, changed, inside, y0, x0, n_keys: int, bounds, groups,
                         run) -> torch.Tensor:
        """Every key's vector of the layer's units: its window of the image with the crop replaced,
        forwarded by ``run`` in batches of keys from one group."""
        top, bottom, left, right = bounds
        key_vectors = None
        for members in groups:
            for start in range(0, len(members), self.batch_size):
                group = np.asarray(members[start: start + self.batch_size])
                batch = torch.stack([self._paste(images[batch_pos[i]], changed[i], inside[i], int(y0[i]), int(x0[i]),
                                                 int(top[i]), int(bottom[i]), int(left[i]), int(right[i]))
                                     for i in group])
                vectors = run(self._model_inputs(batch), group)
                if key_vectors is None:
                    key_vectors = torch.empty(n_keys, vectors.shape[1])
                key_vectors[torch.from_numpy(group)] = vectors
        return key_vectors

    @staticmethod
    def _paste(image, crop, inside, y0, x0, top, bottom, left, right) -> torch.Tensor:
        """The sub-image ``image[:, top:bottom, left:right]`` with the crop's in-image part replaced."""
        sub = image[:, top:bottom, left:right].clone()
        h, w = crop.shape[-2:]
        # Overlap of the crop window [y0, y0+h) with the sub-image [top, bottom), in both frames.
        ys, ye = max(y0, top), min(y0 + h, bottom)
        xs, xe = max(x0, left), min(x0 + w, right)
        if ye > ys and xe > xs:
            region = crop[:, ys - y0: ye - y0, xs - x0: xe - x0]
            mask = inside[:, ys - y0: ye - y0, xs - x0: xe - x0]
            target = sub[:, ys - top: ye - top, xs - left: xe - left]
            sub[:, ys - top: ye - top, xs - left: xe - left] = torch.where(mask, region, target)
        return sub

    def _model_inputs(self, batch: torch.Tensor) -> torch.Tensor:
        inputs = batch.to(self.device)
        return self.preprocess(inputs) if self.preprocess is not None else inputs

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The layer's output for model ``inputs`` (the forward stops there)."""
        captured = {}

        def keep(name, output):
            captured["out"] = output

        with LayerRecorder({self.refs.name: self.module}, keep) as recorder, torch.inference_mode():
            recorder.run(self.model, inputs)
        return captured["out"].float().cpu()

    def result(self) -> dict[str, np.ndarray]:
        """Per transform, a (C, N) array of transformed activations (rank order)."""
        return self.results.tables()


class WholeImageTransforms(Consumer):
    """Pixel-wise transforms (luminance grey) applied to whole images: one forward per image and
    transform serves every reference of that image in every local layer (exact for them: a unit
    sees only its receptive field, and a pixel-wise transform of the whole image changes that
    field exactly as the transform of the crop does)."""

    def __init__(self, model, modules: dict[str, nn.Module], refs: dict[str, LayerReferences],
                 transforms: dict[str, Callable], preprocess, device):
        self.model, self.modules, self.refs = model, modules, refs
        self.transforms, self.preprocess, self.device = transforms, preprocess, device
        self.results = {layer: ReferenceValues(r, transforms) for layer, r in refs.items()}

    def on_batch(self, batch: Batch) -> None:
        batch_indices = batch.indices.numpy()
        for key, transform in self.transforms.items():
            outputs: dict[str, torch.Tensor] = {}
            inputs = transform(batch.images, None).to(self.device)
            if self.preprocess is not None:
                inputs = self.preprocess(inputs)
            with LayerRecorder(self.modules, lambda n, o: outputs.__setitem__(n, o.float().cpu())) as rec, \
                    torch.inference_mode():
                rec.run(self.model, inputs)
            for layer, refs in self.refs.items():
                sl = refs.in_batch(batch_indices)
                if sl.stop <= sl.start:
                    continue
                pos = torch.from_numpy(np.searchsorted(batch_indices, refs.image[sl]))
                self.results[layer].values[key][sl] = outputs[layer][
                    pos, torch.from_numpy(refs.unit[sl]), torch.from_numpy(refs.y[sl]),
                    torch.from_numpy(refs.x[sl])].numpy()
        for layer, refs in self.refs.items():
            self.results[layer].done[refs.in_batch(batch_indices)] = True

    def state(self) -> dict[str, np.ndarray]:
        return {k: v for layer, r in self.results.items() for k, v in r.state(f"{layer}|").items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for layer, r in self.results.items():
            r.load_state(state, f"{layer}|")

    def merge_state(self, state: dict[str, np.ndarray]) -> None:
        for layer, r in self.results.items():
            r.merge_state(state, f"{layer}|")

    def result(self, layer: str) -> dict[str, np.ndarray]:
        """Per transform, a (C, N) array of ``layer``'s transformed activations (rank order)."""
        return self.results[layer].tables()


def check_samples(refs: LayerReferences, image_size: tuple[int, int], n_samples: int = 6) -> np.ndarray:
    """Reference ids for the shortcut's self-check: the first few, plus windows at each image border."""
    y0, x0 = refs.window_origin(slice(0, len(refs.unit)))
    h, w = refs.receptive_field.size
    picks = list(range(min(2, len(refs.unit))))
    for cond in (y0 < 0, x0 < 0, y0 + h > image_size[0], x0 + w > image_size[1],
                 (y0 >= 0) & (x0 >= 0) & (y0 + h <= image_size[0]) & (x0 + w <= image_size[1])):
        hits = np.nonzero(cond)[0]
        if len(hits):
            picks.append(int(hits[0]))
    return np.unique(np.array(picks[:n_samples + 2], dtype=np.int64))
