"""Cost of comparing every conv layer of two models (layer similarity, docs/methods.md section 8).

    python benchmarks/bench_similarity.py [--images 1024] [--repeats 5] [--memory-images 512]

1. *Time*: ``nsi.layer_similarity(A, data, conv layers of A, B, conv layers of B, method="cka")``
   (minibatch CKA: both models run once per batch, all their conv layers recorded in the same pass;
   the conv layers are ``zoo.conv_layers`` (the rectified outputs the index uses: 5 + 5) and,
   second, every ``Conv2d`` module (5 + 13, the ResNet's inner and shortcut convolutions too))
   against the two models' plain forward passes over the same images, loaded the same way
   (``iterate_batches``, ``model_a(x); model_b(x)`` under inference mode). Runs alternate
   (forward, similarity, forward, similarity, ...) in one process; each similarity run is divided
   by the mean of the forward runs next to it; the median ratio is printed. Target: <= 1.15x, for
   the default pooled features (``features="flatten"`` is printed too, for information).
2. *Memory*: peak RSS (``ru_maxrss``) of fresh processes running the same CKA comparison on images
   generated per index (``benchmarks/_workload.py: SyntheticImages``: nothing held in memory, so the
   peak is the tool's), for ``N`` and ``4 N`` images; medians over ``--repeats`` processes each.
   Target: the 4x larger set grows the peak by < 10 %. Printed beside it: how far the comparison
   raises the peak above the models' own forward of one batch (what the tool itself adds).

Models: the embedded default's two trained models (``zoo.load("shapes")`` and
``zoo.load("shapes", model="resnet")``) when the installed default has the second; else the
ShapesCNN against a second, randomly initialised ShapesCNN (printed). Timings depend on the
machine's load; the ratios are measured in one run.
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

SPEED_TARGET = 1.15
MEMORY_TARGET = 0.10


def two_models():
    """The two models to compare, their conv layers, and a description."""
    import torch

    from nsi_widgets import zoo

    model_a = zoo.load("shapes", n=1)[0]
    try:
        model_b = zoo.load("shapes", model="resnet", n=1)[0]
        what = "ShapesCNN vs ShapesResNet (the embedded default's two trained models)"
    except (TypeError, ValueError, FileNotFoundError):
        torch.manual_seed(1)
        model_b = type(model_a)(n_classes=model_a.fc.out_features,
                                widths=tuple(m[0].out_channels for m in (getattr(model_a, n) for n in model_a.conv_names)))
        model_b.eval()
        what = "ShapesCNN vs a randomly initialised ShapesCNN (this default has no second model)"
    return model_a, zoo.conv_layers(model_a), model_b, zoo.conv_layers(model_b), what


def every_conv(model) -> list[str]:
    """The names of all of a model's ``Conv2d`` modules (the ResNet's inside its blocks and shortcuts too)."""
    from torch import nn

    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def _forward(model_a, model_b, data, batch_size: int) -> None:
    import torch

    from nsi_widgets.core.data import iterate_batches

    with torch.inference_mode():
        for _, images, _ in iterate_batches(data, range(len(data)), batch_size):
            model_a(images)
            model_b(images)


def _similarity(model_a, layers_a, model_b, layers_b, data, batch_size: int, features: str = "pooled"):
    import nsi_widgets as nsi

    return nsi.layer_similarity(model_a, data, layers_a, model_b, layers_b, method="cka", features=features,
                                batch_size=batch_size, progress=False)


def speed(images: int, repeats: int, batch_size: int) -> dict:
    import torch

    from nsi_widgets import zoo

    torch.set_num_threads(1)
    model_a, layers_a, model_b, layers_b, what = two_models()
    data = zoo.make_shapes(images, seed=5)
    _forward(model_a, model_b, [data[i] for i in range(batch_size)], batch_size)       # warm-up
    convs_a, convs_b = every_conv(model_a), every_conv(model_b)
    out = {"models": what, "layers_a": layers_a, "layers_b": layers_b, "every_conv_a": convs_a,
           "every_conv_b": convs_b, "images": images, "batch_size": batch_size}
    variants = {"pooled": (layers_a, layers_b, "pooled"), "every_conv": (convs_a, convs_b, "pooled"),
                "flatten": (layers_a, layers_b, "flatten")}
    for variant, (la, lb, features) in variants.items():
        forwards, runs = [], []

        def timed(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        forwards.append(timed(lambda: _forward(model_a, model_b, data, batch_size)))
        for _ in range(repeats):
            runs.append(timed(lambda: _similarity(model_a, la, model_b, lb, data, batch_size, features)))
            forwards.append(timed(lambda: _forward(model_a, model_b, data, batch_size)))
        ratios = [run / ((forwards[k] + forwards[k + 1]) / 2) for k, run in enumerate(runs)]
        out[variant] = {"forward_seconds": forwards, "similarity_seconds": runs, "ratios": ratios,
                         "median_ratio": statistics.median(ratios)}
    return out


def _child(images: int, batch_size: int) -> None:
    """One fresh process of the memory measurement: prints its peak RSS in MiB after the comparison."""
    import torch

    from _workload import SyntheticImages, maxrss_mb

    torch.set_num_threads(1)
    model_a, layers_a, model_b, layers_b, _ = two_models()
    data = SyntheticImages(images, size=64)
    _forward(model_a, model_b, [data[i] for i in range(batch_size)], batch_size)     # the models' own peak
    before = maxrss_mb()
    result = _similarity(model_a, layers_a, model_b, layers_b, data, batch_size)
    print(json.dumps({"peak_rss_mb": maxrss_mb(), "before_mb": before, "images": images,
                      "cka_0_0": float(result.matrix[0, 0])}))


def memory(images: int, repeats: int, batch_size: int) -> dict:
    out = {}
    for n in (images, 4 * images):
        peaks, added = [], []
        for _ in range(repeats):
            done = subprocess.run([sys.executable, __file__, "--child", str(n), "--batch-size", str(batch_size)],
                                  check=True, capture_output=True, text=True)
            child = json.loads(done.stdout.strip().splitlines()[-1])
            peaks.append(child["peak_rss_mb"])
            added.append(child["peak_rss_mb"] - child["before_mb"])
        out[n] = {"peaks_mb": peaks, "median_mb": statistics.median(peaks), "added_mb": added,
                  "median_added_mb": statistics.median(added)}
    small, large = out[images]["median_mb"], out[4 * images]["median_mb"]
    return {"runs": out, "growth": large / small - 1.0,
            "added_growth_mb": out[4 * images]["median_added_mb"] - out[images]["median_added_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="images of the time measurement")
    parser.add_argument("--memory-images", type=int, default=512, help="N of the memory measurement (and 4 N)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.batch_size)
        return
    s = speed(args.images, args.repeats, args.batch_size)
    print(f"models: {s['models']}\n  A: {s['layers_a']}\n  B: {s['layers_b']}")
    print(f"  every Conv2d: {len(s['every_conv_a'])} + {len(s['every_conv_b'])} modules")
    for variant, what in (("pooled", "the indexed conv layers (zoo.conv_layers), features='pooled'"),
                          ("every_conv", "every Conv2d module, features='pooled'"),
                          ("flatten", "the indexed conv layers, features='flatten'")):
        r = s[variant]
        target = f" (target <= {SPEED_TARGET:.2f}x)" if variant != "flatten" else " (for information)"
        print(f"time, CKA of {what}: median "
              f"{r['median_ratio']:.3f}x the two plain forwards{target}; ratios "
              + ", ".join(f"{x:.3f}" for x in r["ratios"])
              + f"; forward {statistics.median(r['forward_seconds']):.2f} s, similarity "
              f"{statistics.median(r['similarity_seconds']):.2f} s over {s['images']} images")
    m = memory(args.memory_images, args.repeats, args.batch_size)
    small, large = (m["runs"][n] for n in sorted(m["runs"]))
    print(f"memory, minibatch CKA, fresh processes: {args.memory_images} images {small['median_mb']:.1f} MiB "
          f"(peaks {small['peaks_mb']}), {4 * args.memory_images} images {large['median_mb']:.1f} MiB "
          f"(peaks {large['peaks_mb']}): growth {100 * m['growth']:+.1f} % (target < {100 * MEMORY_TARGET:.0f} %)")
    print(f"  above the peak of the models' own forward of one batch: {small['median_added_mb']:.1f} MiB at "
          f"{args.memory_images} images, {large['median_added_mb']:.1f} MiB at {4 * args.memory_images}")
    if args.out:
        args.out.write_text(json.dumps({"speed": s, "memory": m}, indent=2, default=str))


if __name__ == "__main__":
    main()
