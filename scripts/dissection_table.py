"""Network Dissection of the embedded default's two models: the tables of docs/zoo.md.

    python scripts/dissection_table.py [--models cnn resnet] [--concept-images 2000] [--index-images 6000]

For each model: ``nsi.dissect(model, zoo.load_concepts("shapes"), zoo.conv_layers(model))`` at the
defaults (quantile 0.005, IoU > 0.04, union "labelled"), printed as a Markdown table of detectors
(and unique concepts) per layer and category; then the colour index of the same layers
(``nsi.index_neurons`` on the default index images, ``indexes=("color",)``) and, for the units with
alpha > 0.9, the share whose best concept is a colour. Deterministic (seeded data, shipped weights);
runs on one thread in about a minute per model.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLOUR_SELECTIVE = 0.9


def dissection_table(result) -> str:
    """Markdown: one row per layer, detectors (unique concepts) per category."""
    first = next(iter(result.values()))
    categories = list(dict.fromkeys(first.categories))
    lines = ["| layer | units | detectors | " + " | ".join(categories) + " | best IoU, median of detectors |",
             "| --- | --- | --- | " + " | ".join("---" for _ in categories) + " | --- |"]
    for name, L in result.items():
        counts = L.detectors()
        detectors = L.best_concept >= 0
        median = f"{float(_median(L.best_iou[detectors])):.3f}" if detectors.any() else "-"
        cells = [f"{counts[c]['detectors']} ({counts[c]['unique_concepts']})" for c in categories]
        lines.append(f"| {name} | {L.n_units} | {int(detectors.sum())} | " + " | ".join(cells) + f" | {median} |")
    return "\n".join(lines)


def _median(values):
    import numpy as np

    return np.median(values)


def colour_check(model, layers, result, index_images: int) -> tuple[str, list]:
    """The units with colour index > 0.9 in ``layers`` and their best concepts."""
    import numpy as np

    import nsi_widgets as nsi
    from nsi_widgets import zoo

    data = zoo.make_shapes(index_images, seed=zoo.INDEX_SEED)
    idx = nsi.index_neurons(model, data, layers, indexes=("color",), neuron_features=None, progress=False)
    found = []
    for layer in layers:
        alpha = idx[layer].color_selectivity
        names = result[layer].best_concept_names
        found += [(layer, int(u), round(float(alpha[u]), 2), names[u]) for u in np.flatnonzero(alpha > COLOUR_SELECTIVE)]
    colours = sum(name in zoo.COLORS for *_, name in found)
    return f"{colours} of {len(found)} units with colour index > {COLOUR_SELECTIVE} in {layers} have a colour concept", found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet"])
    parser.add_argument("--concept-images", type=int, default=None, help="default: zoo.CONCEPT_SIZE (2,000)")
    parser.add_argument("--index-images", type=int, default=None, help="default: zoo.INDEX_SIZE (6,000)")
    args = parser.parse_args()
    import torch

    import nsi_widgets as nsi
    from nsi_widgets import zoo

    torch.set_num_threads(1)
    concepts = zoo.load_concepts("shapes", n=args.concept_images or zoo.CONCEPT_SIZE)
    for arch in args.models:
        model = zoo.load_model(arch)
        layers = zoo.conv_layers(model)
        start = time.perf_counter()
        result = nsi.dissect(model, concepts, layers, progress=False)
        seconds = time.perf_counter() - start
        print(f"\n**{type(model).__name__}** (`model=\"{arch}\"`; {len(concepts)} concept images, "
              f"dissection {seconds:.0f} s on one thread)\n")
        print(dissection_table(result))
        summary, found = colour_check(model, layers[:3], result, args.index_images or zoo.INDEX_SIZE)
        print(f"\n{summary}: " + ", ".join(f"{l} {u} (alpha {a}): {n}" for l, u, a, n in found))


if __name__ == "__main__":
    main()
