"""Measure, on the embedded default, the effect of each difference from the authors' code (nefesi).

The authors' variants are written out here, as crop transforms registered for this run only; they
are not part of the package. Prints the table of docs/methods.md, "Differences from the authors'
code". About 1 to 3 minutes on one CPU thread.

    python scripts/authors_differences.py [--model cnn|resnet] [--n 6000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import nsi_widgets as nsi
from nsi_widgets import zoo
from nsi_widgets.index.selectivity import class_frequencies, shuffle_pixels

OPPONENT = np.array([[1 / 1.5, 1 / 1.5, 1 / 1.5], [1.0, -1.0, 0.0], [0.5, 0.5, -1.0]])
COUNTS: dict[str, list[int]] = {"crops": [0], "inverted": [0], "not_top": [0], "flat": [0]}


def _pca_grey(crops: torch.Tensor, inside: torch.Tensor, *, orient: bool, eig: str, truncate: bool,
              flat_zero: bool) -> torch.Tensor:
    """The thesis' PCA grey with the authors' choices switchable (NumPy, float64)."""
    x = crops.double().numpy()
    mask = inside.numpy()[:, 0] if inside is not None else np.ones(x.shape[:1] + x.shape[2:], bool)
    n, _, h, w = x.shape
    pixels = x.reshape(n, 3, h * w).transpose(0, 2, 1)              # (n, P, 3) RGB
    m = mask.reshape(n, h * w)
    count = np.maximum(m.sum(1), 1)[:, None]
    mean = (pixels * m[:, :, None]).sum(1) / count
    centred = (pixels - mean[:, None, :]) * m[:, :, None]
    opp = centred @ OPPONENT.T                                      # centred opponent coordinates
    cov = opp.transpose(0, 2, 1) @ opp / count[:, :, None]
    values, vectors = np.linalg.eigh(cov)
    top = vectors[:, :, -1]
    if eig == "eig":                                                 # nefesi 1.0.4: unsorted, first column
        values_u, vectors_u = np.linalg.eig(cov)
        first = np.real(vectors_u[:, :, 0])
        COUNTS["not_top"][0] += int((np.real(values_u[:, 0]) < values[:, -1] - 1e-12).sum())
        top = first
    projection = opp @ top[:, :, None]                               # (n, P, 1)
    correlation = (projection[:, :, 0] * opp[:, :, 0] * m).sum(1)
    inverted = correlation < 0
    COUNTS["crops"][0] += n
    COUNTS["inverted"][0] += int(inverted.sum())
    if orient:
        projection = np.where(inverted[:, None, None], -projection, projection)
    p = projection[:, :, 0]
    low = np.where(m, p, np.inf).min(1, keepdims=True)
    high = np.where(m, p, -np.inf).max(1, keepdims=True)
    spread = high - low
    flat = spread[:, 0] <= 1e-12
    COUNTS["flat"][0] += int(flat.sum())
    scaled = (p - low) / np.where(flat[:, None], 1.0, spread)
    luminance = pixels @ np.array([0.299, 0.587, 0.114])
    scaled = np.where(flat[:, None], 0.0 if flat_zero else luminance, scaled)
    if truncate:                                                     # nefesi 1.0.4: uint8 by truncation
        scaled = np.floor(scaled * 255) / 255
    grey = (scaled * m).reshape(n, 1, h, w)
    return torch.from_numpy(np.repeat(grey, 3, axis=1)).to(crops.dtype)


VARIANTS = {
    "library_sign": dict(orient=False, eig="eigh", truncate=False, flat_zero=False),
    "flat_zero": dict(orient=True, eig="eigh", truncate=False, flat_zero=True),
    "unsorted_eig": dict(orient=True, eig="eig", truncate=False, flat_zero=False),
    "uint8_truncation": dict(orient=True, eig="eigh", truncate=True, flat_zero=False),
    "nefesi_1_0_4": dict(orient=False, eig="eig", truncate=True, flat_zero=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cnn", choices=sorted(zoo.MODELS))
    parser.add_argument("--n", type=int, default=zoo.INDEX_SIZE)
    parser.add_argument("--top-n", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, data = zoo.load("shapes", model=args.model, n=args.n)
    layers = zoo.conv_layers(model)
    for name, options in VARIANTS.items():
        nsi.register_index(f"v_{name}", transform=lambda c, i, o=options: _pca_grey(c, i, **o), replace=True)
    seeds = (0, 1, 2)
    for seed in seeds:      # the authors' shuffle is unseeded: how much does the permutation matter?
        nsi.register_index(f"v_shuffle_{seed}", transform=shuffle_pixels(seed), replace=True)
    started = time.perf_counter()
    idx = nsi.index_neurons(model, data, layers, top_n=args.top_n, progress=False,
                            indexes=("color", "class", *[f"v_{name}" for name in VARIANTS],
                                     *[f"v_shuffle_{seed}" for seed in seeds]))
    print(f"indexed {args.model} on {len(data)} images in {time.perf_counter() - started:.0f} s")
    crops_per_variant = COUNTS["crops"][0] // len(VARIANTS)
    print(f"crops: {crops_per_variant}; contrast inverted by the library's sign: "
          f"{COUNTS['inverted'][0] / len(VARIANTS) / crops_per_variant:.1%}; unsorted first eigenvector not the "
          f"principal one: {COUNTS['not_top'][0] / 2 / crops_per_variant:.1%}; flat crops: "
          f"{COUNTS['flat'][0] // len(VARIANTS)}")
    print("\n| variant | " + " | ".join(layers) + " |")
    print("|---|" + "---|" * len(layers))
    for name in VARIANTS:
        cells = []
        for layer in layers:
            ours = idx[layer].color_selectivity.astype(np.float64)
            theirs = idx[layer].scores[f"v_{name}_selectivity"].astype(np.float64)
            diff = np.abs(theirs - ours)
            cells.append(f"mean {np.nanmean(diff):.3f}, max {np.nanmax(diff):.3f}, "
                         f"{int((diff > 0.05).sum())} > 0.05")
        print(f"| colour, {name} | " + " | ".join(cells) + " |")
    cells = []
    for layer in layers:
        L = idx[layer]
        f = class_frequencies(L.top_labels, L.top_activations, len(data.classes))
        variant = np.where(f >= 0.1, f, 0).sum(1)
        ours = L.class_selectivity.astype(np.float64)
        rank = np.corrcoef(np.argsort(np.argsort(ours)), np.argsort(np.argsort(variant)))[0, 1]
        cells.append(f"ours mean {np.nanmean(ours):.3f}, type 2 mean {variant.mean():.3f} "
                     f"({np.mean(variant == 0):.0%} zero), rank corr. {rank:.2f}")
    print("| class, type=2 threshold .1 | " + " | ".join(cells) + " |")
    cells = []
    for layer in layers:
        L = idx[layer]
        dead = int(L.dead.sum())
        ours = np.nanmean(L.class_selectivity)
        zeros = np.nan_to_num(L.class_selectivity.astype(np.float64), nan=0.0).mean()
        colour = np.nanmean(L.color_selectivity)
        colour0 = np.nan_to_num(L.color_selectivity.astype(np.float64), nan=0.0).mean()
        cells.append(f"{dead} dead; class mean {ours:.3f} vs {zeros:.3f}, colour {colour:.3f} vs {colour0:.3f}")
    print("| dead units as 0 | " + " | ".join(cells) + " |")
    cells = []
    for layer in layers:
        table = np.stack([idx[layer].scores[f"v_shuffle_{seed}_selectivity"] for seed in seeds]).astype(np.float64)
        spread = table.max(axis=0) - table.min(axis=0)
        cells.append(f"shape index mean {np.nanmean(table):.3f}; range over seeds mean {np.nanmean(spread):.3f}, "
                     f"max {np.nanmax(spread):.3f}")
    print("| shape index, seeds 0, 1, 2 | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
