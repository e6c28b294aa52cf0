"""PPGN seconds per sample on the embedded default, beside the plain passes each step needs.

Issue 20 asks for PPGN's seconds per sample to be reported. One run: class-conditional samples of
``--classes`` classes (one each, in one batch) with the shipped generator prior and the default
``cnn`` as the condition, ``--steps`` steps. The baseline, timed in the same process and interleaved
with PPGN: for the same batch, ``steps`` times a forward of ``G`` and of the model and one backward to
the latent (what the condition's gradient costs, nothing else). Prints each run, the median seconds
per sample and per sample-step, and the ratio to the baseline. Not a test: timings depend on the
machine's load. Usage::

    python benchmarks/bench_ppgn.py [--threads 1] [--repeats 3] [--classes 48] [--steps 50]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def _plain_passes(model, generator, h, classes, steps):
    import torch

    for _ in range(steps):
        latent = h.detach().requires_grad_(True)
        logp = torch.log_softmax(model(generator(latent)), 1).gather(1, classes[:, None])
        torch.autograd.grad(logp.sum(), latent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs (median)")
    parser.add_argument("--classes", type=int, default=48, help="samples (one per class) in the batch")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()

    import torch

    import nsi_widgets as nsi

    torch.set_num_threads(args.threads)
    model, _ = nsi.zoo.load("shapes", n=1)
    gp = nsi.zoo.load_generator("shapes")
    classes = list(range(args.classes))
    for p in list(model.parameters()) + list(gp.generator.parameters()):
        p.requires_grad_(False)
    h = gp.mean.expand(len(classes), -1).clone()
    ppgn_times, plain_times = [], []
    for run in range(args.repeats):
        start = time.perf_counter()
        nsi.ppgn(model, gp, classes, steps=args.steps, progress=False)
        ppgn_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        _plain_passes(model, gp.generator, h, torch.tensor(classes), args.steps)
        plain_times.append(time.perf_counter() - start)
        print(f"run {run + 1}: ppgn {ppgn_times[-1]:.2f} s, plain passes {plain_times[-1]:.2f} s")
    t, base = statistics.median(ppgn_times), statistics.median(plain_times)
    samples = len(classes)
    print(f"PPGN: {t / samples:.3f} s per sample ({args.steps} steps, batch of {samples}, {args.threads} thread(s)); "
          f"{1000 * t / samples / args.steps:.2f} ms per sample-step; {t / base:.2f}x the plain forward and backward "
          f"passes ({base / samples:.3f} s per sample)")


if __name__ == "__main__":
    main()
