"""Run one benchmark configuration in a fresh process: its peak memory, and its time against
forward-only runs interleaved in the same process.

Invoked by ``run_all.py`` (not meant to be run by hand)::

    python benchmarks/_child.py --config scan --images 2000 --state model.pt --repeats 3 --out r.json

Sequence: imports, model, dataset, a one-batch warm-up; then the configuration once (``peak_rss``
is ``ru_maxrss`` right after it, so it is the fresh-process peak of that configuration alone), then
``forward, config, forward, config, ...`` so that every configuration run has an adjacent
forward-only run (``--repeats`` configuration runs and as many forward runs in all).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _workload import maxrss_mb, prepare_process  # noqa: E402
from naive import naive_top_n  # noqa: E402
from plain_definition import PlainDefinitionActivations  # noqa: E402
from nsi_widgets.core.data import iterate_batches  # noqa: E402
from nsi_widgets.index.cone import chain_cone  # noqa: E402
from nsi_widgets.index.pipeline import index_neurons  # noqa: E402
from nsi_widgets.core.passes import Consumer, PassOptions, run_pass  # noqa: E402
from nsi_widgets.index.features import LayerReferences, referenced_images  # noqa: E402
from nsi_widgets.index.local_forward import TransformedActivations  # noqa: E402
from nsi_widgets.index.selectivity import gray_pca, top_weights  # noqa: E402

CONFIGS = ("forward", "scan", "full_luminance", "full_pca", "naive", "pca_colour")


def forward_only(model, data, batch_size: int) -> dict:
    """Row 1: plain ``model(x)`` over the dataset, loaded exactly as the scan loads it."""
    with torch.inference_mode():
        for _, images, _ in iterate_batches(data, range(len(data)), batch_size):
            model(images)
    return {}


def _index(model, data, layers, top_n, batch_size, **kwargs):
    return index_neurons(model, data, layers, top_n=top_n, batch_size=batch_size, progress=False, **kwargs)


def run_config(name: str, model, data, layers, top_n: int, batch_size: int, args) -> dict:
    """Run one configuration once; return what it reports besides its time."""
    if name == "forward":
        return forward_only(model, data, batch_size)
    if name == "scan":
        idx = _index(model, data, layers, top_n, batch_size, indexes=(), neuron_features=None)
        if args.save_top:
            arrays = {f"{k}:{layer}": getattr(idx[layer], f"top_{k}")
                      for layer in layers for k in ("indices", "activations", "positions")}
            arrays.update({f"map_size:{layer}": np.asarray(idx[layer].map_size) for layer in layers})
            np.savez(args.save_top, **arrays)
        return {"dead_units": int(sum(idx[layer].dead.sum() for layer in layers))}
    if name in ("full_luminance", "full_pca"):
        gray = "luminance" if name == "full_luminance" else "pca"
        idx = _index(model, data, layers, top_n, batch_size, indexes=("color", "class"), gray=gray,
                     neuron_features="weighted")
        return {"n_referenced_images": int(idx.meta["n_referenced_images"]), "n_images": len(data),
                "shortcut_layers": int(sum(idx.meta["shortcut"].values()))}
    if name == "naive":
        tops = naive_top_n(model, data, layers, top_n=top_n, batch_size=batch_size)
        return {"stored_mb": sum(t["stored_bytes"] for t in tops.values()) / 2**20}
    raise ValueError(f"unknown configuration {name!r}; expected one of {CONFIGS}")


def pca_colour(model, data, layers, top_n: int, batch_size: int, image_size) -> dict:
    """The pca colour index's grey activations ``a'`` of every reference of every layer, three ways,
    each timed next to a forward-only run of this process and checked equal:

    * ``shortcut``: the engine's way (forwards of each unit's receptive cone through a verified chain
      of local modules, else of the receptive-field sub-image; stopping at the layer; one per distinct
      image and place);
    * ``plain_at_layer``: the engine's plain mode (``shortcut='never'``): whole images, but still
      stopping at the layer and shared between units at the same image and place;
    * ``plain``: the plain definition as the issue words it (``plain_definition.py``): one whole-image
      forward through the whole network per reference, batched.

    All three read the referenced images once per run, as the engine's crop pass does (``run_pass``).
    """
    idx = _index(model, data, layers, top_n, batch_size, indexes=(), neuron_features=None)
    modules = dict(model.named_modules())
    refs = {layer: LayerReferences.from_top_lists(layer, idx[layer].receptive_field, idx[layer].top_indices,
                                                  idx[layer].top_positions, idx[layer].top_activations,
                                                  top_weights(idx[layer].top_activations)) for layer in layers}
    images = referenced_images([idx[layer].top_indices for layer in layers])
    # As the engine does: a cone forward where a verified chain of local modules reaches the layer.
    probe = data[0][0][None]
    cones = {layer: chain_cone(model, modules[layer], probe) for layer in layers}

    def consumers(way):
        if way == "plain":
            return {layer: PlainDefinitionActivations(model, modules[layer], refs[layer], gray_pca, batch_size)
                    for layer in layers}
        return {layer: TransformedActivations(model, modules[layer], refs[layer], {"pca": gray_pca}, None,
                                              image_size, torch.device("cpu"), shortcut=way == "shortcut",
                                              batch_size=batch_size, cone=cones[layer] if way == "shortcut" else None)
                for layer in layers}

    report = {"ways": {}, "layers": {layer: {"receptive_field": list(idx[layer].receptive_field.size),
                                             "shortcut_kind": "cone" if cones[layer] is not None else "sub-image",
                                             "units": int(idx[layer].n_units),
                                             "references": int(len(refs[layer].unit))} for layer in layers}}
    values = {}
    for way in ("shortcut", "plain_at_layer", "plain"):
        started = time.perf_counter()
        forward_only(model, data, batch_size)
        forward_seconds = time.perf_counter() - started
        timed = {layer: _Timed(c) for layer, c in consumers(way).items()}
        started = time.perf_counter()
        run_pass("crops", model, data, {}, list(timed.values()), PassOptions(batch_size=batch_size, progress=False),
                 indices=images, forward=False)
        seconds = time.perf_counter() - started
        values[way] = {layer: t.consumer.result()["pca"] for layer, t in timed.items()}
        report["ways"][way] = {"seconds": seconds, "forward_seconds": forward_seconds,
                               "ratio": seconds / forward_seconds}
        for layer, t in timed.items():
            report["layers"][layer][f"{way}_seconds"] = t.seconds
    for layer in layers:
        for way in ("plain_at_layer", "plain"):
            diff = np.abs(values["shortcut"][layer] - values[way][layer])
            report["layers"][layer][f"max_abs_difference_{way}"] = float(np.nanmax(diff))
            report["layers"][layer][f"missing_{way}"] = int(np.isnan(values[way][layer]).sum())
    report["n_referenced_images"] = int(len(images))
    report["references"] = int(sum(len(r.unit) for r in refs.values()))
    report["distinct_places"] = int(sum(len(np.unique(np.stack([r.image, r.y, r.x], axis=1), axis=0))
                                        for r in refs.values()))
    report["max_abs_difference"] = max(max(q["max_abs_difference_plain_at_layer"], q["max_abs_difference_plain"])
                                       for q in report["layers"].values())
    return report


class _Timed(Consumer):
    """Wraps a referenced-image consumer and adds up the seconds it spends."""

    def __init__(self, consumer):
        self.consumer, self.seconds = consumer, 0.0

    def on_batch(self, batch) -> None:
        started = time.perf_counter()
        self.consumer.on_batch(batch)
        self.seconds += time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, choices=CONFIGS)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--quick", action="store_true", help="the small network")
    parser.add_argument("--state", required=True, help="state_dict of the model (torch.save)")
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="configuration runs (>= 1)")
    parser.add_argument("--no-forward", action="store_true", help="no paired forward-only runs")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--save-top", default=None, help="scan: write the top-N lists to this .npz")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    model, layers, data = prepare_process(args.state, args.quick, args.images, args.image_size, args.batch_size,
                                          args.threads)
    top_n = min(args.top_n, args.images)
    baseline = maxrss_mb()

    result = {"config": args.config, "images": args.images, "top_n": top_n, "threads": torch.get_num_threads(),
              "baseline_rss_mb": baseline}
    if args.config == "pca_colour":
        result["extra"] = pca_colour(model, data, layers, top_n, args.batch_size, (args.image_size, args.image_size))
        ways = result["extra"]["ways"]
        result.update(times=[ways["shortcut"]["seconds"]], forward_times=[ways["shortcut"]["forward_seconds"]],
                      ratios=[ways["shortcut"]["ratio"]], peak_rss_mb=maxrss_mb())
    else:
        times, forward_times = [], []
        started = time.perf_counter()
        result["extra"] = run_config(args.config, model, data, layers, top_n, args.batch_size, args)
        times.append(time.perf_counter() - started)
        result["peak_rss_mb"] = maxrss_mb()
        args.save_top = None
        for repeat in range(args.repeats):
            if not args.no_forward:
                started = time.perf_counter()
                forward_only(model, data, args.batch_size)
                forward_times.append(time.perf_counter() - started)
            if repeat + 1 < args.repeats:
                started = time.perf_counter()
                run_config(args.config, model, data, layers, top_n, args.batch_size, args)
                times.append(time.perf_counter() - started)
        result.update(times=times, forward_times=forward_times,
                      ratios=[t / f for t, f in zip(times, forward_times)])
    result["final_rss_mb"] = maxrss_mb()
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
