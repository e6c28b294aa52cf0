"""Retrain a shipped shapes model with the settings of its report and compare (run once, report).

    python scripts/check_retraining.py --model cnn      # or resnet; both: --model cnn resnet

Each run is the full training of the shipped weights (several minutes on one CPU thread, more on a
busy machine), so this is a script and not a test. It prints the retrained held-out accuracy next
to the shipped one (they must agree within one point), whether the weights are bit-identical, and
the time it took; it exits with status 1 if the accuracy is off by more than one point.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from nsi_widgets import zoo
from nsi_widgets.zoo.train import DEFAULTS, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", default=["cnn"], choices=sorted(zoo.MODELS))
    args = parser.parse_args(argv)
    failed = False
    for name in args.model:
        report = zoo.shapes_report(name)
        settings = {key: report[key] for key in DEFAULTS}
        settings["widths"] = tuple(settings["widths"])
        started = time.perf_counter()
        model, new = train(**settings, log=lambda line: print(f"  {name}: {line}", flush=True))
        shipped = zoo.load_model(name).state_dict()
        identical = all(torch.equal(shipped[k], v) for k, v in model.state_dict().items())
        gap = abs(new["held_out_accuracy"] - report["held_out_accuracy"])
        failed |= gap > 0.01
        print(f"{name}: retrained held-out accuracy {new['held_out_accuracy']:.4f}, shipped "
              f"{report['held_out_accuracy']:.4f} (difference {gap:.4f}, limit 0.01); weights "
              f"{'bit-identical' if identical else 'differ'}; {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
