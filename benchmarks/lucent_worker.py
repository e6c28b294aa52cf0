"""torch-lucent side of benchmarks/bench_synthesis.py; runs in the venv made by ``setup_lucent.sh``.

Imports only torch, numpy and lucent, and the model's class from its source file (never the
nsi_widgets package). Loads the weights (a state dict, ``weights_only=True``), runs
``lucent.optvis.render.render_vis`` once per unit, as lucent is used (one objective per call):
``param.image(size)`` (FFT, lucent's ImageNet colour decorrelation), its standard transforms, Adam
lr 0.05, ``preprocess=False`` (the model takes RGB in [0, 1]) and ``fixed_image_size=size`` (else it
upsamples to 224). Writes the final images and the wall-clock and CPU time of the loop (after one untimed warm-up call).

    .lucent-venv/bin/python benchmarks/lucent_worker.py --state model.pt --model-file nsi_widgets/zoo/models.py \
        --model-class ShapesCNN --model-kwargs '{"n_classes": 10}' --layer conv5 --units 0,1,2 --steps 128 \
        --size 64 --objective neuron --out lucent.npz
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch


def load_model(path: str, class_name: str, kwargs: dict, state: str) -> torch.nn.Module:
    """The model class from its source file, loaded as a module of a stand-in package for its folder, so
    its relative imports of sibling files (``from .shapes import CLASSES``) resolve without importing
    nsi_widgets (and its dependencies) into this venv."""
    import sys
    import types

    folder = str(Path(path).resolve().parent)
    package = types.ModuleType("_bench_pkg")
    package.__path__ = [folder]
    sys.modules["_bench_pkg"] = package
    spec = importlib.util.spec_from_file_location(f"_bench_pkg.{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    model = getattr(module, class_name)(**kwargs)
    model.load_state_dict(torch.load(state, map_location="cpu", weights_only=True))
    return model.eval()


def render(model, layer: str, unit: int, steps: int, size: int, objective: str) -> np.ndarray:
    from lucent.optvis import objectives, param, render as lucent_render

    name = layer.replace(".", "_")  # lucent's names of nested modules
    obj = objectives.neuron(name, unit) if objective == "neuron" else objectives.channel(name, unit)
    images = lucent_render.render_vis(model, obj, param_f=lambda: param.image(size), thresholds=(steps,),
                                      preprocess=False, fixed_image_size=size, show_image=False, progress=False)
    return images[-1][0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", required=True)
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--model-class", required=True)
    parser.add_argument("--model-kwargs", default="{}")
    parser.add_argument("--layer", required=True)
    parser.add_argument("--units", required=True, help="comma-separated")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--objective", choices=("neuron", "channel"), default="neuron")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)  # lucent's transforms draw from numpy's global generator
    model = load_model(args.model_file, args.model_class, json.loads(args.model_kwargs), args.state)
    units = [int(u) for u in args.units.split(",")]
    render(model, args.layer, units[0], 2, args.size, args.objective)  # warm-up, not timed
    started, cpu_started = time.perf_counter(), time.process_time()
    images = np.stack([render(model, args.layer, u, args.steps, args.size, args.objective) for u in units])
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    from importlib.metadata import version

    np.savez(args.out, images=images.astype(np.float32), seconds=np.float64(seconds), cpu_seconds=np.float64(cpu_seconds),
             info=np.array(json.dumps({"torch": torch.__version__, "torch_lucent": version("torch-lucent"),
                                       "kornia": version("kornia"), "threads": torch.get_num_threads()})))


if __name__ == "__main__":
    main()
