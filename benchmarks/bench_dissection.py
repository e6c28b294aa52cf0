"""Cost of Network Dissection of every conv layer of the embedded default (docs/methods.md section 7).

    python benchmarks/bench_dissection.py [--images 1000] [--repeats 5] [--memory-images 500]

1. *Time*: ``nsi.dissect(model, concepts, zoo.conv_layers(model))`` (two passes over the concept
   set: the quantile pass, a forward, and the IoU pass, which in the default one-forward mode reads
   only the masks; docs/methods.md section 7) against one plain forward pass over
   the same images, loaded the same way (``iterate_batches`` over the concept set's images without
   their masks, ``concepts.shapes``; ``model(x)`` under inference mode). Runs alternate (forward, dissection, forward, dissection,
   ...) in one process; each dissection is divided by the mean of the forward runs next to it; the
   median ratio is printed. Target: <= 2.3x for the default model (``--model cnn``; the ResNet is
   printed too, for information).
2. *Memory* (measured first: a child's ``ru_maxrss`` starts from its parent's resident size at the
   fork, so the children are started while this process is small): peak RSS of fresh processes dissecting a concept set of ``N`` and of
   ``4 N`` images generated lazily, 256 at a time (:class:`LazyConcepts`: only the current chunk is
   held, so the peak is the tool's), in the sampled quantile mode (``max_quantile_bytes`` below what
   the exact quantiles of ``N`` images need: every image contributes a fixed number of positions, so
   the quantile state does not grow with the data); medians over ``--repeats`` processes each.
   Target: the 4x larger set grows the peak by < 10 %. The exact mode is printed too (its kept
   values grow with the data: ``4 q`` bytes per position).

Timings depend on the machine's load; the ratios are measured in one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

SPEED_TARGET = 2.3
MEMORY_TARGET = 0.10
SAMPLED_BYTES = 2**17          # 128 KiB for the quantiles of all layers: below the exact need of 250 images
CHUNK = 256


class LazyConcepts:
    """A shapes concept set whose images and masks are generated when read, one chunk of 256 at a time."""

    def __init__(self, n: int, seed: int = 40):
        from nsi_widgets import zoo

        self.n, self.seed = n, seed
        self.concepts, self.concept_categories = list(zoo.CONCEPTS), list(zoo.CONCEPT_CATEGORIES)
        self._chunk, self._data = None, None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from nsi_widgets import zoo

        chunk = int(i) // CHUNK
        if chunk != self._chunk:
            size = min(CHUNK, self.n - chunk * CHUNK)
            self._chunk, self._data = chunk, zoo.ConceptDataset(zoo.make_shapes(size, seed=self.seed + chunk, masks=True))
        return self._data[int(i) - chunk * CHUNK]


def _forward(model, data, batch_size: int) -> None:
    import torch

    from nsi_widgets.core.data import iterate_batches

    with torch.inference_mode():
        for _, images, _ in iterate_batches(data, range(len(data)), batch_size):
            model(images)


def _dissect(model, concepts, batch_size: int, **kwargs):
    import nsi_widgets as nsi
    from nsi_widgets import zoo

    return nsi.dissect(model, concepts, zoo.conv_layers(model), batch_size=batch_size, progress=False, **kwargs)


def speed(arch: str, images: int, repeats: int, batch_size: int) -> dict:
    import torch

    from nsi_widgets import zoo

    torch.set_num_threads(1)
    model = zoo.load_model(arch)
    concepts = zoo.load_concepts("shapes", n=images)
    plain = concepts.shapes                    # the same images as (image, label) items, without the masks
    _forward(model, [plain[i] for i in range(batch_size)], batch_size)       # warm-up

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    forwards, runs = [timed(lambda: _forward(model, plain, batch_size))], []
    for _ in range(repeats):
        runs.append(timed(lambda: _dissect(model, concepts, batch_size)))
        forwards.append(timed(lambda: _forward(model, plain, batch_size)))
    ratios = [run / ((forwards[k] + forwards[k + 1]) / 2) for k, run in enumerate(runs)]
    result = _dissect(model, concepts, batch_size)
    return {"model": arch, "layers": zoo.conv_layers(model), "images": images, "batch_size": batch_size,
            "forward_seconds": forwards, "dissection_seconds": runs, "ratios": ratios,
            "median_ratio": statistics.median(ratios),
            "quantile_modes": {name: L.quantile_mode for name, L in result.items()},
            "forward_passes": result.meta["forward_passes"],
            "detectors": {name: int((L.best_concept >= 0).sum()) for name, L in result.items()}}


def _child(images: int, batch_size: int, sampled: bool) -> None:
    """One fresh process of the memory measurement: prints its peak RSS in MiB after the dissection."""
    import torch

    from _workload import maxrss_mb
    from nsi_widgets import zoo

    torch.set_num_threads(1)
    model = zoo.load_model("cnn")
    kwargs = {"max_quantile_bytes": SAMPLED_BYTES} if sampled else {}
    concepts = LazyConcepts(images)
    concepts[0]                                               # the first chunk of images, before the tool runs
    before = maxrss_mb()
    result = _dissect(model, concepts, batch_size, **kwargs)
    print(json.dumps({"peak_rss_mb": maxrss_mb(), "peak_before_mb": before, "images": images,
                      "modes": sorted({L.quantile_mode for L in result.values()}),
                      "detectors": int(sum((L.best_concept >= 0).sum() for L in result.values()))}))


def memory(images: int, repeats: int, batch_size: int, sampled: bool) -> dict:
    out = {}
    for n in (images, 4 * images):
        peaks, befores, modes = [], [], None
        for _ in range(repeats):
            command = [sys.executable, __file__, "--child", str(n), "--batch-size", str(batch_size)]
            done = subprocess.run(command + (["--sampled"] if sampled else []), check=True, capture_output=True,
                                  text=True)
            report = json.loads(done.stdout.strip().splitlines()[-1])
            peaks.append(report["peak_rss_mb"])
            befores.append(report["peak_before_mb"])
            modes = report["modes"]
        out[n] = {"peaks_mb": peaks, "median_mb": statistics.median(peaks), "quantile_modes": modes,
                  "before_mb": statistics.median(befores)}
    small, large = out[images]["median_mb"], out[4 * images]["median_mb"]
    return {"runs": out, "growth": large / small - 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="concept images of the time measurement")
    parser.add_argument("--memory-images", type=int, default=500, help="N of the memory measurement (and 4 N)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet"])
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sampled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.batch_size, args.sampled)
        return
    results = {"speed": {}, "memory": {}}
    # Memory first: a child's ru_maxrss starts from its parent's resident size when it is forked, so the
    # children must be started while this process is small (before the speed runs load models and data).
    for sampled in (True, False):
        mode = "sampled" if sampled else "exact"
        m = results["memory"][mode] = memory(args.memory_images, args.repeats, args.batch_size, sampled)
        small, large = (m["runs"][n] for n in sorted(m["runs"]))
        target = f" (target < {100 * MEMORY_TARGET:.0f} %)" if sampled else " (for information)"
        print(f"memory, {mode} quantiles {small['quantile_modes']}, fresh processes: {args.memory_images} images "
              f"{small['median_mb']:.1f} MiB (peaks {small['peaks_mb']}), {4 * args.memory_images} images "
              f"{large['median_mb']:.1f} MiB (peaks {large['peaks_mb']}): growth {100 * m['growth']:+.1f} %{target}; "
              f"peak before the dissection {small['before_mb']:.1f} / {large['before_mb']:.1f} MiB")
    for arch in args.models:
        s = results["speed"][arch] = speed(arch, args.images, args.repeats, args.batch_size)
        target = f" (target <= {SPEED_TARGET:.1f}x)" if arch == "cnn" else " (for information)"
        print(f"time, dissection of {s['layers']} ({arch}) over {s['images']} concept images: median "
              f"{s['median_ratio']:.3f}x one plain forward{target}; ratios "
              + ", ".join(f"{x:.3f}" for x in s["ratios"])
              + f"; forward {statistics.median(s['forward_seconds']):.2f} s, dissection "
              f"{statistics.median(s['dissection_seconds']):.2f} s; quantiles {s['quantile_modes']}, "
              f"{s['forward_passes']} forward pass(es)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
