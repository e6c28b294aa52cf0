"""Activation maximisation: nsi-widgets' batched ``visualize`` against torch-lucent's ``render_vis``.

Same model (the embedded default), units (the first 64 of its deepest conv layer), image size (the
model's own, 64 px), number of steps and objective (the unit at the map centre, our default;
``--objective channel`` for lucent's default), one thread each. Ours optimises all units in one
batch with its defaults (Fourier parameterisation and colour decorrelation from the default's images);
lucent runs one ``render_vis`` per unit, in its own venv (``setup_lucent.sh``; the model reaches it as a
state dict plus the path of its class's source file). Both are timed after one untimed warm-up call,
in wall-clock and CPU time, both processes with run_all.py's glibc malloc settings (without them,
allocating the batch's full-resolution maps costs ours ~17 % more time in page faults).
The activation of every final image (the objective without transformations) is computed here, the
same way for both. Prints seconds per unit, the speed ratio, median activations and how many images
beat the unit's best dataset image; writes ``benchmarks/results/synthesis.json``. Targets (issue 19):
ours >= 5x faster per unit and a median activation at least lucent's.

    bash benchmarks/setup_lucent.sh                 # once
    python benchmarks/bench_synthesis.py            # 64 units, 128 steps (~2 minutes)
    python benchmarks/bench_synthesis.py --units 8 --steps 16 --out /tmp/s.json   # a quick look
"""
from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import nsi_widgets as nsi  # noqa: E402
from nsi_widgets.synthesis.visualize import DEFAULT_OBJECTIVE, DEFAULT_STEPS  # noqa: E402
from run_all import MALLOC_ENV  # noqa: E402  (glibc keeps large tensors in the heap: see run_all.py)

LUCENT_PYTHON = Path(os.environ.get("LUCENT_VENV", HERE / ".lucent-venv")) / "bin" / "python"
SPEED_TARGET = 5.0


def _layer_output(model, layer, images: np.ndarray) -> torch.Tensor:
    out = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: out.__setitem__("t", o))
    with torch.no_grad():
        model(torch.from_numpy(np.ascontiguousarray(images)).float().permute(0, 3, 1, 2))
    handle.remove()
    return out["t"]


def activations(model, layer, units: np.ndarray, images: np.ndarray, objective: str) -> np.ndarray:
    """The objective on each final image (no transformations), the same code for both sides."""
    t = _layer_output(model, layer, images)[torch.arange(len(units)), torch.from_numpy(units)]
    if objective == "neuron":
        return t[:, t.shape[1] // 2, t.shape[2] // 2].numpy()
    return t.mean((1, 2)).numpy()


def top1(model, data, layer, units) -> np.ndarray:
    """Each unit's best dataset activation (map maximum over the default's images)."""
    best = None
    for start in range(0, len(data), 250):
        batch = data.images(slice(start, start + 250)).permute(0, 2, 3, 1).numpy()
        m = _layer_output(model, layer, batch)[:, torch.from_numpy(units)].amax((2, 3)).numpy().max(0)
        best = m if best is None else np.maximum(best, m)
    return best


def run_lucent(model, layer, units, steps, size, objective, threads, workdir: Path) -> dict:
    state = workdir / "model.pt"
    torch.save(model.state_dict(), state)
    kwargs = {"n_classes": model.fc.out_features,
              "widths": [getattr(model, n)[0].out_channels for n in model.conv_names]}
    out = workdir / "lucent.npz"
    cmd = [str(LUCENT_PYTHON), str(HERE / "lucent_worker.py"), "--state", str(state),
           "--model-file", inspect.getsourcefile(type(model)), "--model-class", type(model).__name__,
           "--model-kwargs", json.dumps(kwargs), "--layer", layer, "--units", ",".join(map(str, units)),
           "--steps", str(steps), "--size", str(size), "--objective", objective, "--threads", str(threads),
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"lucent worker failed:\n{done.stderr[-3000:]}")
    with np.load(out) as f:
        return {"images": f["images"], "seconds": float(f["seconds"]), "cpu_seconds": float(f["cpu_seconds"]),
                "info": json.loads(str(f["info"]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--objective", choices=("neuron", "channel"), default=DEFAULT_OBJECTIVE)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-lucent", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "synthesis.json")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's malloc settings")
    args = parser.parse_args(argv)
    if not args.default_malloc and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        # the settings of run_all.py, for both processes: re-run this script with them
        os.execve(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)],
                  {**os.environ, **MALLOC_ENV})
    torch.set_num_threads(args.threads)

    model, data = nsi.zoo.load("shapes")
    layer = nsi.zoo.conv_layers(model)[-1]
    size = data.image_size[0]
    n_channels = _layer_output(model, layer, np.zeros((1, size, size, 3), np.float32)).shape[1]
    units = np.arange(min(args.units, n_channels))
    best = top1(model, data, layer, units)
    print(f"{len(units)} units of {layer}, {size} px, {args.steps} steps, objective {args.objective!r}, "
          f"{args.threads} thread(s)")

    def time_ours():
        started, cpu_started = time.perf_counter(), time.process_time()
        result = nsi.visualize(model, layer, units, steps=args.steps, objective=args.objective, progress=False)
        return (time.perf_counter() - started, time.process_time() - cpu_started), result

    # The machine may be shared: ours runs before and after lucent, and its time is the mean of the two.
    nsi.visualize(model, layer, units[:2], steps=1, objective=args.objective, progress=False)  # warm-up
    load = [os.getloadavg()[0]]
    ours_times = [time_ours()[0]]
    lucent_info = None
    lucent = None
    if args.skip_lucent or not LUCENT_PYTHON.exists():
        print(f"torch-lucent skipped ({'--skip-lucent' if args.skip_lucent else 'run benchmarks/setup_lucent.sh'})")
    else:
        load.append(os.getloadavg()[0])
        with tempfile.TemporaryDirectory() as tmp:
            lucent = run_lucent(model, layer, units, args.steps, size, args.objective, args.threads, Path(tmp))
        lucent_info = lucent["info"]
    load.append(os.getloadavg()[0])
    seconds, ours = time_ours()
    ours_times.append(seconds)
    load.append(os.getloadavg()[0])
    rows = {"nsi-widgets visualize (one batch)": (float(np.mean([t[0] for t in ours_times])),
                                                  float(np.mean([t[1] for t in ours_times])), ours.images)}
    if lucent is not None:
        rows["torch-lucent render_vis (one call per unit)"] = (lucent["seconds"], lucent["cpu_seconds"], lucent["images"])
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "date": dt.datetime.now().isoformat(timespec="minutes"),
               "load_average_1min": load, "ours_times": ours_times}
    print(f"ours: {', '.join(f'{t[0]:.1f} s ({t[1]:.1f} s CPU)' for t in ours_times)} (before, after lucent); "
          f"1-min load average {', '.join(f'{v:.1f}' for v in load)}")

    results = {}
    print("\n| method | seconds | s per unit | CPU s per unit | median activation | above best dataset image |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (seconds, cpu, images) in rows.items():
        acts = activations(model, layer, units, images, args.objective)
        results[name] = {"seconds": seconds, "seconds_per_unit": seconds / len(units), "cpu_seconds": cpu,
                         "cpu_seconds_per_unit": cpu / len(units), "median_activation": float(np.median(acts)),
                         "above_top1": int((acts > best).sum()), "activations": acts.tolist()}
        r = results[name]
        print(f"| {name} | {seconds:.1f} | {r['seconds_per_unit']:.3f} | {r['cpu_seconds_per_unit']:.3f} | "
              f"{r['median_activation']:.3f} | {r['above_top1']} of {len(units)} |")
    summary = {}
    if len(results) == 2:
        (o, ours_r), (_, luc_r) = list(results.items())
        speed = luc_r["seconds_per_unit"] / ours_r["seconds_per_unit"]
        cpu_speed = luc_r["cpu_seconds_per_unit"] / ours_r["cpu_seconds_per_unit"]
        summary = {"speedup_per_unit": speed, "cpu_speedup_per_unit": cpu_speed, "speed_target": SPEED_TARGET,
                   "speed_pass": speed >= SPEED_TARGET,
                   "activation_pass": ours_r["median_activation"] >= luc_r["median_activation"]}
        print(f"\nspeed-up per unit: {speed:.2f}x wall-clock, {cpu_speed:.2f}x CPU time (target >= {SPEED_TARGET:.0f}x: "
              f"{'PASS' if summary['speed_pass'] else 'FAIL'}); median activation "
              f"{ours_r['median_activation']:.3f} vs {luc_r['median_activation']:.3f} "
              f"({'PASS' if summary['activation_pass'] else 'FAIL'})")
    report = {"workload": {"layer": layer, "units": len(units), "size": size, "steps": args.steps,
                           "objective": args.objective, "threads": args.threads, "top1": best.tolist()},
              "machine": machine, "lucent": lucent_info, "rows": results, "summary": summary,
              "ours_recipe": ours.recipe}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
