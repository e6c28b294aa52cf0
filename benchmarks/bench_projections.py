"""Cost of projecting every top image of a layer back to pixels, next to the passes it needs.

Target (issue 20): ``top_projections`` of all top images of a layer (N = 100 for every unit of the
embedded default's deepest conv layer) costs <= 2x the plain forward and backward passes it needs.

The baseline, timed in the same process and interleaved with the projections: for the same items in
the same batches (images already in memory), a plain forward up to the layer and one backward of the
seeded activations to the input (``torch.autograd.grad``), nothing else. The projections' time
includes everything ``top_projections`` does: reading the images from the dataset, the forward under
the ReLU rule, the backward, cutting the receptive-field windows, the mean. Prints each run and the
median ratio per method. Not a test: timings depend on the machine's load. Usage::

    python benchmarks/bench_projections.py [--threads 1] [--repeats 5] [--images 2000] [--top-n 100]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

TARGET_RATIO = 2.0


def _plain_passes(model, name, module, images, items, batch_size):
    """Forward to the layer and backward to the input for the same batches, images in memory."""
    import numpy as np
    import torch

    from nsi_widgets.core.layers import LayerRecorder

    distinct, position = np.unique(items["image"], return_inverse=True)
    for start in range(0, len(position), batch_size):
        sl = slice(start, start + batch_size)
        x = images.index_select(0, torch.from_numpy(position[sl])).requires_grad_(True)
        captured = {}
        with LayerRecorder({name: module}, lambda _n, out: captured.__setitem__("out", out)) as recorder:
            recorder.run(model, x)
        out = captured["out"]
        rows = torch.arange(len(x))
        seeds = out[rows, torch.from_numpy(items["unit"][sl]), torch.from_numpy(items["y"][sl]),
                    torch.from_numpy(items["x"][sl])]
        torch.autograd.grad(seeds.sum(), x)
    return len(position)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per method (median)")
    parser.add_argument("--images", type=int, default=2000, help="images indexed (default: the default's 2,000)")
    parser.add_argument("--top-n", type=int, default=100, help="top images per unit (default 100)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import nsi_widgets as nsi
    from nsi_widgets.synthesis import projections as P

    model, data = nsi.zoo.load("shapes", n=args.images)
    layer = nsi.zoo.conv_layers(model)[-1]
    t = time.perf_counter()
    idx = nsi.index_neurons(model, data, [layer], top_n=args.top_n, progress=False, indexes=(),
                            neuron_features=None)
    print(f"index of {layer!r} ({idx[layer].n_units} units, N = {idx[layer].top_n}, {len(data)} images): "
          f"{time.perf_counter() - t:.1f} s")
    plan = P._plan(idx, model, layer, None, data, "gradient", 16, None, "weighted", args.batch_size)
    distinct = np.unique(plan.items["image"])
    images = torch.stack([data[int(i)][0] for i in distinct])
    n_items = len(plan.items["image"])
    print(f"{n_items} projections of {len(distinct)} distinct images, batch size {args.batch_size}, "
          f"{args.threads} thread(s)")

    methods = ("guided_backprop", "deconvnet", "gradient")
    wall = {key: [] for key in ("plain", *methods)}
    cpu = {key: [] for key in ("plain", *methods)}
    ratios = {m: [] for m in methods}
    cpu_ratios = {m: [] for m in methods}

    def timed(key, fn):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall[key].append(time.perf_counter() - w)
        cpu[key].append(time.process_time() - c)

    for run in range(args.repeats):
        for method in methods:
            model.eval()
            timed("plain", lambda: _plain_passes(model, plan.name, plan.module, images, plan.items, args.batch_size))
            timed(method, lambda: P.top_projections(idx, model, layer, method=method, n_images=16,
                                                    batch_size=args.batch_size, progress=False))
            ratios[method].append(wall[method][-1] / wall["plain"][-1])
            cpu_ratios[method].append(cpu[method][-1] / cpu["plain"][-1])
            print(f"run {run + 1}: {method:>16} {wall[method][-1]:6.2f} s (cpu {cpu[method][-1]:6.2f} s), plain "
                  f"forward+backward {wall['plain'][-1]:6.2f} s (cpu {cpu['plain'][-1]:6.2f} s): ratio "
                  f"{ratios[method][-1]:.2f} (cpu {cpu_ratios[method][-1]:.2f})")
    print(f"\nplain forward+backward: median {statistics.median(wall['plain']):.2f} s, best {min(wall['plain']):.2f} s "
          f"({1e3 * min(wall['plain']) / n_items:.2f} ms per projection)")
    print("ratios to the plain passes: median of the interleaved pairs (wall clock, CPU time), and best vs best")
    for method in methods:
        ratio = statistics.median(ratios[method])
        cpu_ratio = statistics.median(cpu_ratios[method])
        best = min(wall[method]) / min(wall["plain"])
        verdict = "pass" if max(ratio, cpu_ratio) <= TARGET_RATIO else "FAIL"
        print(f"{method:>16}: best {min(wall[method]):.2f} s; ratio {ratio:.2f} wall, {cpu_ratio:.2f} cpu, "
              f"{best:.2f} best/best (target <= {TARGET_RATIO:.0f}: {verdict})")


if __name__ == "__main__":
    main()
