"""zennit-crp side of the benchmark; runs in the separate venv made by ``setup_crp.sh``.

Imports only torch, zennit, crp and the standalone workload module (never ``nsi_widgets``). Runs
``crp.visualization.FeatureVisualization.run`` with ``max_target="max"``, ``abs_norm=False`` (its
activation reference samples, fixed N = 40) over the benchmark's images and layers, reads the top-40
dataset indices per channel from its ActMax files, and times itself against forward-only runs in
this same process (interleaved), so that its ratio is comparable with nsi-widgets' ratios.

Invoked by ``run_all.py``::

    benchmarks/.crp-venv/bin/python benchmarks/crp_worker.py --state model.pt --images 2000 \
        --image-size 64 --workdir /tmp/crp --out crp.json --top-out crp_top.npz
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

if not hasattr(np, "int"):  # zennit-crp still uses the alias removed in numpy 1.24
    np.int = int  # type: ignore[attr-defined]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _workload import maxrss_mb, prepare_process, time_forward_only  # noqa: E402
from crp.attribution import CondAttribution  # noqa: E402
from crp.concepts import ChannelConcept  # noqa: E402
from crp.helper import load_maximization  # noqa: E402
from crp.visualization import FeatureVisualization  # noqa: E402
from zennit.composites import EpsilonPlusFlat  # noqa: E402


def run_crp(model, data, layers, batch_size: int, path: Path) -> tuple[float, dict[str, np.ndarray]]:
    """One ``FeatureVisualization.run`` over all of ``data``; returns its seconds and, per layer,
    the (C, 40) dataset indices, activations and flat argmax positions, best first."""
    if path.exists():
        shutil.rmtree(path)
    started = time.perf_counter()
    attribution = CondAttribution(model, no_param_grad=True)
    fv = FeatureVisualization(attribution, data, {name: ChannelConcept() for name in layers},
                              preprocess_fn=None, max_target="max", abs_norm=False, path=str(path),
                              device="cpu")
    # One checkpoint at the end (the default, 500 batches, is more than we have anyway).
    fv.run(EpsilonPlusFlat(), 0, len(data), batch_size=batch_size, checkpoint=10**9)
    seconds = time.perf_counter() - started
    tops = {}
    for name in layers:
        indices, values, positions = load_maximization(path / "ActMax_max_unnormed", name)
        # crp stores (40, C): sample rank x channel.
        tops[f"indices:{name}"] = np.asarray(indices).T.astype(np.int64)
        tops[f"activations:{name}"] = np.asarray(values).T.astype(np.float32)
        tops[f"positions:{name}"] = np.asarray(positions).T.astype(np.int64)
    return seconds, tops


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="zennit-crp activation reference samples, timed")
    parser.add_argument("--state", required=True)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", required=True, help="where crp writes its files (deleted at the end)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--top-out", required=True)
    args = parser.parse_args(argv)

    model, layers, data = prepare_process(args.state, args.quick, args.images, args.image_size, args.batch_size,
                                          args.threads)
    baseline = maxrss_mb()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        times, forward_times = [], []
        seconds, tops = run_crp(model, data, layers, args.batch_size, workdir / "fv")
        times.append(seconds)
        peak = maxrss_mb()
        np.savez(args.top_out, **tops)
        for repeat in range(args.repeats):
            forward_times.append(time_forward_only(model, data, args.batch_size))
            if repeat + 1 < args.repeats:
                times.append(run_crp(model, data, layers, args.batch_size, workdir / "fv")[0])
    finally:
        shutil.rmtree(workdir / "fv", ignore_errors=True)
    result = {"config": "crp", "images": args.images, "top_n": 40, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "numpy": np.__version__, "baseline_rss_mb": baseline,
              "peak_rss_mb": peak, "times": times, "forward_times": forward_times,
              "ratios": [t / f for t, f in zip(times, forward_times)], "final_rss_mb": maxrss_mb()}
    try:
        from importlib.metadata import version
        result["zennit_crp"] = version("zennit-crp")
        result["zennit"] = version("zennit")
    except Exception:  # metadata is informative only
        pass
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
