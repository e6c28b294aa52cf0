"""Scaling of the scan over processes: K processes of 1 thread each against 1 process of 1 thread.

    python benchmarks/bench_distributed.py [--images 2000] [--processes 2] [--repeats 2] [--quick]

Each run is a set of fresh processes (``torch.distributed`` with ``gloo`` on CPU, ``nccl`` with
``--device cuda``, one GPU per process) running ``index_neurons(..., indexes=(), neuron_features=None)``
(the scan alone) on the benchmark workload (``_workload.py``: the VGG-like network, 8 layers).
Every process is timed from a barrier after its set-up (imports, model, data, a one-batch warm-up)
to the end of the scan, including the merge of the states; a run's wall time is the slowest
process's. The single-process run uses the same code path (no process group). The top-N lists of
every run are checked equal to the single process's. Prints the median wall times and their ratio.
Target (issue 13): 2 processes <= 0.65x the wall time of 1 process on this 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def _worker(argv) -> None:
    """One process of a run (called as ``bench_distributed.py --worker ...``)."""
    import datetime
    import time

    import numpy as np
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(ROOT))
    from _workload import prepare_process
    from nsi_widgets.index.pipeline import index_neurons

    rank, world, port, state, images, size, quick, out, device = argv
    rank, world, images, size = int(rank), int(world), int(images), int(size)
    model, layers, data = prepare_process(state, quick == "1", images, size, 64, 1)
    if device.startswith("cuda"):
        device = f"cuda:{rank}"
        model = model.to(device)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=600))
        dist.barrier()
    started = time.perf_counter()
    idx = index_neurons(model, data, layers, top_n=100, batch_size=64, progress=False, indexes=(),
                        neuron_features=None, device=device)
    seconds = time.perf_counter() - started
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        np.savez(out + ".npz", **{f"{layer}:{k}": getattr(idx[layer], f"top_{k}") for layer in layers
                                  for k in ("indices", "activations", "positions")})
    Path(f"{out}.rank{rank}.json").write_text(json.dumps({"seconds": seconds}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(world: int, state: str, images: int, size: int, quick: bool, device: str, out: str) -> float:
    """Wall time of one run with ``world`` processes (the slowest process)."""
    port = str(_free_port())
    env = {**os.environ, **MALLOC_ENV, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, __file__, "--worker", str(r), str(world), port, state,
                                   str(images), str(size), "1" if quick else "0", out, device],
                                  env=env, cwd=str(ROOT)) for r in range(world)]
    for p in processes:
        if p.wait() != 0:
            raise RuntimeError(f"a worker of the {world}-process run failed (exit {p.returncode})")
    return max(json.loads(Path(f"{out}.rank{r}.json").read_text())["seconds"] for r in range(world))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the small network (smoke test)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for one GPU per process")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from _workload import make_workload

    model, _, size = make_workload(args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        state = str(Path(tmp) / "model.pt")
        torch.save(model.state_dict(), state)
        times = {1: [], args.processes: []}
        for repeat in range(args.repeats):           # alternate, so drifts hit both alike
            for world in (1, args.processes):
                out = str(Path(tmp) / f"run{world}-{repeat}")
                times[world].append(run(world, state, args.images, size, args.quick, args.device, out))
                print(f"{world} process(es), run {repeat + 1}: {times[world][-1]:.2f} s", flush=True)
        reference = np.load(str(Path(tmp) / "run1-0.npz"))
        for repeat in range(args.repeats):
            other = np.load(str(Path(tmp) / f"run{args.processes}-{repeat}.npz"))
            equal = all(np.array_equal(reference[k], other[k]) for k in reference.files)
            if not equal:
                raise AssertionError("the distributed top-N lists differ from the single process's")
    one, many = statistics.median(times[1]), statistics.median(times[args.processes])
    result = {"images": args.images, "processes": args.processes, "device": args.device,
              "threads_per_process": 1, "single_seconds": times[1], "distributed_seconds": times[args.processes],
              "median_single": one, "median_distributed": many, "ratio": many / one,
              "speedup": one / many, "cpu_count": os.cpu_count(), "results_equal": True}
    print(json.dumps(result, indent=2))
    print(f"scan, {args.processes} processes x 1 thread: {many:.2f} s vs 1 process x 1 thread: {one:.2f} s "
          f"-> {many / one:.3f}x the wall time (target <= 0.65x); top-N lists identical")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2:])
    else:
        main()
