"""PPGN seconds per sample on the embedded default, beside the plain passes each step needs.

Issue 20 asks for PPGN's seconds per sample to be reported. One run: class-conditional samples of
``--classes`` classes (one each, in one batch) with the shipped generator prior and the default
``cnn`` as the condition, ``--steps`` steps (``--generator shapes-structured --restarts 24 --steps 20``:
the class settings of the structured generator, ``ppgn.CLASS_OPTIONS``, 24 chains per sample). The
baseline, timed in the same process and interleaved with PPGN: for the same chains in the same batches
(``ppgn.DEFAULT_BATCH``), ``steps`` times a forward of ``G`` and of the model and one backward to the
latent (what the condition's gradient costs, nothing else). Prints each run, the median seconds per
sample and per chain-step, and the ratio to the baseline. Not a test: timings depend on the machine's
load. Usage::

    python benchmarks/bench_ppgn.py [--threads 1] [--repeats 3] [--classes 48] [--steps 50]
        [--generator shapes|shapes-structured] [--restarts 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def _plain_passes(model, generator, h, classes, steps, batch):
    import torch

    for lo in range(0, len(h), batch):
        for _ in range(steps):
            latent = h[lo:lo + batch].detach().requires_grad_(True)
            logp = torch.log_softmax(model(generator(latent)), 1).gather(1, classes[lo:lo + batch, None])
            torch.autograd.grad(logp.sum(), latent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs (median)")
    parser.add_argument("--classes", type=int, default=48, help="samples (one per class) in the batch")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--generator", default="shapes", help="a shipped generator prior (default shapes)")
    parser.add_argument("--restarts", type=int, default=1, help="chains per sample (default 1)")
    args = parser.parse_args()

    import torch

    import nsi_widgets as nsi
    from nsi_widgets.synthesis.ppgn import DEFAULT_BATCH

    torch.set_num_threads(args.threads)
    model, _ = nsi.zoo.load("shapes", n=1)
    gp = nsi.zoo.load_generator(args.generator)
    classes = list(range(args.classes))
    for p in list(model.parameters()) + list(gp.generator.parameters()):
        p.requires_grad_(False)
    h = gp.mean.expand(len(classes) * args.restarts, -1).clone()
    chain_classes = torch.tensor(classes).repeat_interleave(args.restarts)
    ppgn_times, plain_times = [], []
    for run in range(args.repeats):
        start = time.perf_counter()
        nsi.ppgn(model, gp, classes, steps=args.steps, restarts=args.restarts, progress=False)
        ppgn_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        _plain_passes(model, gp.generator, h, chain_classes, args.steps, DEFAULT_BATCH)
        plain_times.append(time.perf_counter() - start)
        print(f"run {run + 1}: ppgn {ppgn_times[-1]:.2f} s, plain passes {plain_times[-1]:.2f} s")
    t, base = statistics.median(ppgn_times), statistics.median(plain_times)
    samples = len(classes)
    print(f"PPGN ({args.generator}): {t / samples:.3f} s per sample ({args.restarts} chain(s) of {args.steps} steps, "
          f"batch of {samples} samples, {args.threads} thread(s)); "
          f"{1000 * t / samples / args.steps / args.restarts:.2f} ms per chain-step; {t / base:.2f}x the plain "
          f"forward and backward passes ({base / samples:.3f} s per sample)")


if __name__ == "__main__":
    main()
