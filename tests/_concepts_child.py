"""Child process of the distributed concept tests (tests/test_similarity.py).

    python _concepts_child.py RANK WORLD PORT OUT

One gloo rank (WORLD > 1) or a single process (WORLD = 1): minibatch CKA between two models, the
Net2Vec vectors, the TCAV similarity and the dissection (one forward) of one model, saved to OUT.rank<RANK>.npz (plain arrays).
Model and data are built from fixed seeds, so every process builds the same.
"""
import datetime
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)

import nsi_widgets as nsi  # noqa: E402
from nsi_widgets.concepts import CAVOptions, Net2VecOptions  # noqa: E402
from _concept_data import Squares, make_bn_cnn  # noqa: E402

LAYERS = ["relu1", "relu2", "relu3"]


class WithReaders(Squares):
    """Squares that also read their masks in batches and offer their images alone (the dissection reads
    these instead of the items, as with zoo concept sets)."""

    def masks(self, indices):
        return np.stack([Squares.__getitem__(self, i)[1].numpy() for i in indices])

    @property
    def image_data(self):
        return [Squares.__getitem__(self, i)[0] for i in range(len(self))]


def run() -> dict:
    data = Squares(75, seed=8)
    a, b = make_bn_cnn(0), make_bn_cnn(5)
    cka = nsi.layer_similarity(a, data, LAYERS, b, LAYERS, batch_size=8, progress=False)
    vectors = nsi.concept_vectors(a, data, LAYERS, options=Net2VecOptions(epochs=3), batch_size=8, progress=False)
    tcav = nsi.layer_similarity(a, data, LAYERS, method="tcav", options=CAVOptions(n_images=20), batch_size=8,
                                progress=False)
    dissection = nsi.dissect(a, data, LAYERS, quantile=0.02, batch_size=8, progress=False)
    readers = nsi.dissect(a, WithReaders(75, seed=8), LAYERS, quantile=0.02, batch_size=8, progress=False)
    out = {"cka": cka.matrix, "tcav": tcav.per_concept}
    for layer in LAYERS:
        out[f"dissect_iou_{layer}"] = dissection[layer].iou
        out[f"dissect_thresholds_{layer}"] = dissection[layer].thresholds
        out[f"dissect_both_{layer}"] = dissection[layer].intersection
        out[f"dissect_readers_both_{layer}"] = readers[layer].intersection
    for layer in LAYERS:
        out[f"net2vec_{layer}"] = vectors[layer].vectors
        out[f"net2vec_iou_{layer}"] = vectors[layer].iou
    return out


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if world > 1:
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    np.savez(f"{out}.rank{rank}.npz", **run())
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
