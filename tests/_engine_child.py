"""Child process of the engine's fault and distributed tests (tests/test_engine_processes.py).

    python _engine_child.py index OUT CHECKPOINT [SLOW_FROM]   one index_neurons run, saved to OUT
    python _engine_child.py dist RANK WORLD PORT OUT BATCH [N] [DIE_AT]   one rank of a gloo run

The model and data are built from fixed seeds, so every process (and the test) builds the same.
"""
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)

import nsi_widgets as nsi  # noqa: E402
from _models import ListDataset, make_cnn, make_images  # noqa: E402

LAYERS = ["relu1", "relu2", "pool", "relu3"]
KWARGS = dict(top_n=6, progress=False, indexes=("color", "class", "symmetry"))


class SlowDataset(ListDataset):
    """Sleeps on each read (from item ``slow_from`` on), so that a parent can kill the run mid-pass."""

    slow_from = None
    die_at = None

    def __getitem__(self, i):
        if self.die_at is not None and i == self.die_at:
            os._exit(17)                      # a rank that dies abruptly
        if self.slow_from is not None and i >= self.slow_from:
            time.sleep(0.01)
        return super().__getitem__(i)


def dataset(n=120):
    labels = np.random.default_rng(5).integers(0, 4, size=n)
    return SlowDataset(make_images(n, seed=5), labels, classes=["a", "b", "c", "d"],
                       class_parents={"a": "ab", "b": "ab", "c": "cd", "d": "cd"})


def main():
    mode = sys.argv[1]
    if mode == "index":
        out, checkpoint = sys.argv[2], sys.argv[3]
        data = dataset()
        data.slow_from = int(sys.argv[4]) if len(sys.argv) > 4 else None
        idx = nsi.index_neurons(make_cnn(0), data, LAYERS, batch_size=4, checkpoint=checkpoint,
                                checkpoint_every=1, **KWARGS)
        idx.save(out)
    elif mode == "dist":
        rank, world, port, out, batch = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
        n = int(sys.argv[7]) if len(sys.argv) > 7 else 37
        import datetime
        import torch.distributed as dist
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        dist.init_process_group("gloo", rank=int(rank), world_size=world, timeout=datetime.timedelta(seconds=20))
        data = dataset(n)
        if len(sys.argv) > 8 and int(rank) == 1:
            data.die_at = int(sys.argv[8])
        if len(sys.argv) > 8 and int(rank) == 0:
            data.slow_from = 0
        idx = nsi.index_neurons(make_cnn(0), data, LAYERS, batch_size=batch, **KWARGS)
        idx.save(f"{out}.rank{rank}.npz")          # every rank's result, to compare them all
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
