"""Speed of the embedded default: loading it, and generating images.

Targets (issue acceptance): ``nsi_widgets.zoo.load("shapes")`` < 3 s; ``make_shapes(10_000)`` < 15 s.
Prints each time and its ratio to the target (< 1 is within it). Not a test: timings depend on the
machine's load. Usage::

    python benchmarks/bench_zoo.py [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

LOAD_TARGET_S = 3.0
GENERATE_TARGET_S = 15.0

_COLD_LOAD = """
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
from nsi_widgets import zoo
t2 = time.perf_counter()
model, data = zoo.load("shapes")
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from nsi_widgets import zoo

    # A fresh interpreter: what a user's first notebook cell pays.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", _COLD_LOAD], check=True, capture_output=True, text=True, env=env)
    import_torch, import_zoo, cold_load = (float(x) for x in out.stdout.split())
    print(f"fresh process: import torch {import_torch:.2f} s, import nsi_widgets.zoo {import_zoo:.2f} s, "
          f"zoo.load('shapes') {cold_load:.2f} s (ratio to {LOAD_TARGET_S:.0f} s target: "
          f"{cold_load / LOAD_TARGET_S:.2f})")

    loads, generates = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        zoo.load("shapes")
        loads.append(time.perf_counter() - t)
        t = time.perf_counter()
        zoo.make_shapes(10_000, seed=0)
        generates.append(time.perf_counter() - t)
    load_s, generate_s = min(loads), min(generates)
    print(f"zoo.load('shapes') ({zoo.INDEX_SIZE:,} images + weights): {load_s:.2f} s, "
          f"ratio to {LOAD_TARGET_S:.0f} s target: {load_s / LOAD_TARGET_S:.2f}")
    print(f"make_shapes(10_000): {generate_s:.2f} s ({10_000 / generate_s:.0f} images/s), "
          f"ratio to {GENERATE_TARGET_S:.0f} s target: {generate_s / GENERATE_TARGET_S:.2f}")

    model, data = zoo.load("shapes")
    with torch.no_grad():
        t = time.perf_counter()
        for start in range(0, len(data), 250):
            model(data.images(slice(start, start + 250)))
        forward_s = time.perf_counter() - t
    print(f"forward pass over the {len(data):,} default images: {forward_s:.2f} s ({args.threads} thread(s))")


if __name__ == "__main__":
    main()
