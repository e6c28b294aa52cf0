"""Write the notebooks in ``notebooks/`` from the cell lists in this file.

The notebooks are kept here as Python lists of markdown and code cells so they are easy to review
and edit; the ``.ipynb`` files are generated from them, without outputs, with stable cell ids.

    python scripts/make_notebooks.py            # (re)write every notebook
    python scripts/make_notebooks.py --check    # exit 1 if a notebook differs from its cell list

``tests/test_notebooks.py`` checks that the committed notebooks match this file and executes them.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def md(text: str) -> tuple[str, str]:
    """A markdown cell."""
    return ("markdown", textwrap.dedent(text).strip("\n"))


def code(*parts: str) -> tuple[str, str]:
    """A code cell; several parts (e.g. a shared helper) are dedented apart and joined."""
    return ("code", "\n\n\n".join(textwrap.dedent(part).strip("\n") for part in parts))


# A helper several notebooks define in their first code cell: a row of images with titles.
SHOW_IMAGES = '''
def show_images(images, titles, height=190, wrap=None):
    """Show RGB images (each H x W x 3, values in [0, 1], all the same size) side by side."""
    stack = np.stack([np.asarray(image, dtype=np.float64) for image in images])
    fig = px.imshow(np.round(stack * 255).astype(np.uint8), facet_col=0, facet_col_wrap=wrap,
                    facet_col_spacing=0.01, facet_row_spacing=0.08)
    for annotation in fig.layout.annotations:  # facet labels read "facet_col=<i>"
        annotation.text = titles[int(annotation.text.split("=")[1])]
        annotation.font.size = 11
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    return fig.update_layout(height=height, margin=dict(l=0, r=0, t=30, b=0))
'''.strip("\n")


# =============================================================================================
# 1. Quickstart
# =============================================================================================
QUICKSTART = [
    md(r"""
    # Quickstart: index the neurons of a CNN and explore them

    This notebook runs **nsi-widgets** end to end on the embedded default: a small convolutional
    network (`ShapesCNN`, five conv layers) trained on synthetic images of coloured shapes. For every
    neuron (channel) of its conv layers we find the images that excite it most, build its
    **Neuron Feature** (the activation-weighted mean of what those images show inside the neuron's
    receptive field), and compute a **colour selectivity index** and a **class selectivity index**
    (Rafegas et al., *Understanding trained CNNs by indexing neuron selectivity*, 2019).

    Steps: load the model and images, index, read the result as a table, save and load it,
    write a hand annotation, and open the linked **Explorer**. Everything runs offline on a CPU.
    """),
    code(r"""
    from collections import Counter
    from pathlib import Path

    import numpy as np
    import plotly.express as px

    import nsi_widgets as nsi
    """, SHOW_IMAGES),
    md(r"""
    ## 1. Load the model and the images

    `nsi.zoo.load("shapes")` returns the trained model and a labelled image set generated on the
    spot (2,000 images by default, none of them seen in training). We take 1,000 images to keep
    this notebook quick; the results hardly change with more. (`print(model)` shows every module.)
    """),
    code(r"""
    model, data = nsi.zoo.load("shapes", n=1000)
    print(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"conv layers {nsi.zoo.conv_layers(model)}")
    print(data)
    print("classes:", data.classes)
    """),
    code(r"""
    shown = range(8)
    show_images([data[i][0].permute(1, 2, 0) for i in shown], [data.classes[data[i][1]] for i in shown])
    """),
    md(r"""
    Six classes are defined by colour *and* shape (`red circle`, `blue square`, ...), four by shape
    alone (`triangle`, `star`, `cross`, `ring`, drawn in any colour). A network that tells them apart
    needs both colour-selective and colour-blind neurons, which is what the indexes will show.

    ## 2. Index the conv layers

    `nsi.zoo.conv_layers(model)` names the layers worth indexing (`conv1` ... `conv5`, each the
    rectified output of a convolution block). `top_n` is how many top images are kept per neuron;
    the paper uses 100, we use 50 here to keep the run short (about 20 s on two CPU cores).
    """),
    code(r"""
    layers = nsi.zoo.conv_layers(model)
    idx = nsi.index_neurons(model, data, layers=layers, top_n=50)
    idx
    """),
    md(r"""
    The summary lists, per layer, the number of units, how many are *dead* (never positive on
    these images: their indexes are NaN), the receptive-field size in pixels and the mean of each
    index. `idx["conv3"]` holds one layer's arrays:
    """),
    code(r"""
    L = idx["conv3"]
    print(L)
    print("top_indices      ", L.top_indices.shape, "dataset index of each unit's top images, best first")
    print("top_activations  ", L.top_activations.shape, "their activations, descending")
    print("top_positions    ", L.top_positions.shape, "(y, x) of the maximum in the feature map")
    print("neuron_features  ", L.neuron_features.shape, "RGB in [0, 1] at the receptive field's size")
    print("color_selectivity", L.color_selectivity.shape, " class_selectivity", L.class_selectivity.shape)
    print("receptive field  ", L.receptive_field)
    """),
    md(r"""
    ## 3. The most colour- and class-selective neurons

    `idx.to_pandas()` gives one row per neuron. Colour selectivity is near 1 for a neuron that loses
    its response when its input is turned grey, near 0 for one that does not care about colour.
    Class selectivity is 1 when all of a neuron's top images belong to one class.
    """),
    code(r"""
    table = idx.to_pandas()
    columns = ["layer", "unit", "color_selectivity", "class_selectivity", "class_population", "top_activation"]
    table.sort_values("color_selectivity", ascending=False)[columns].head(8)
    """),
    code(r"""
    # Ties at 1.0 are common (all top images of one class): the stronger response first.
    table.sort_values(["class_selectivity", "top_activation"], ascending=False)[columns].head(8)
    """),
    code(r"""
    table.groupby("layer", sort=False)[["color_selectivity", "class_selectivity"]].mean().round(3)
    """),
    md(r"""
    The Neuron Features of the most and the least colour-selective units of `conv3` (receptive
    field 18 x 18 pixels). The first are saturated blobs of one hue: greyed, their top images no
    longer excite them. The second are mostly edges between a shape and its background; some look
    coloured because the images that excite them happen to be, but their grey versions excite
    them just as much. A colourful Neuron Feature alone does not make a colour-selective neuron.
    """),
    code(r"""
    alpha = L.color_selectivity
    order = np.argsort(-np.nan_to_num(alpha, nan=-np.inf))  # most colour-selective first, dead units last
    most, least = order[:8], order[~np.isnan(alpha[order])][-8:]
    show_images(L.neuron_features[most], [f"unit {u}: α={alpha[u]:.2f}" for u in most])
    """),
    code(r"""
    show_images(L.neuron_features[least], [f"unit {u}: α={alpha[u]:.2f}" for u in least])
    """),
    md(r"""
    ## 4. Save and load

    An index is one `.npz` file (arrays and a JSON manifest, no pickles: loading someone else's
    file runs no code). This notebook keeps its files in the folder `nsi-quickstart/` next to it;
    delete the folder when you no longer need them.
    """),
    code(r"""
    workdir = Path("nsi-quickstart")
    workdir.mkdir(exist_ok=True)
    path = workdir / "shapes-index.npz"
    idx.save(path)
    loaded = nsi.load_index(path)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")
    same = all(np.array_equal(loaded[name].top_indices, idx[name].top_indices)
               and np.allclose(loaded[name].color_selectivity, idx[name].color_selectivity, equal_nan=True)
               for name in idx.layers)
    print("the loaded index equals the computed one:", same)
    """),
    md(r"""
    ## 5. Name a neuron by hand

    An `AnnotationStore` keeps hand annotations (label, note, tags) in one SQLite file, with the
    full history of changes. Bound to the index (`index=idx`), it checks layers and units. Here we
    name the most colour-selective unit of `conv3` after the colour most of its top images show;
    the data set knows how each image was drawn (`data.ground_truth`).
    """),
    code(r"""
    store = nsi.AnnotationStore(workdir / "annotations.sqlite", index=idx, author="quickstart")
    unit = int(most[0])
    colours = data.ground_truth["color"][L.top_indices[unit]]
    colour, count = Counter(colours).most_common(1)[0]
    store.annotate("conv3", unit, f"{colour} detector", tags=["colour"],
                   note=f"{count} of its {L.top_n} top images show a {colour} shape")
    store.to_pandas()[["layer", "unit", "author", "label", "note", "tags"]]
    """),
    md(r"""
    ## 6. Explore

    The **Explorer** links the views: the colour-index histogram (drag a range to filter the grid),
    the grid of Neuron Features (click to select, sort by any index, switch layers, search the
    labels), the card of the selected neuron (its top crops, indexes and an annotation editor that
    saves into `store`) and its class-frequency bars.

    `nsi.export_html` writes the same views into one HTML file that opens offline in any browser,
    for sharing without a Python kernel.
    """),
    code(r"""
    report = nsi.export_html(idx, workdir / "report.html", annotations=store)
    print(f"wrote {report} ({report.stat().st_size / 1e6:.1f} MB)")
    """),
    code(r"""
    nsi.Explorer(idx, annotations=store, layer="conv3")
    """),
]


# =============================================================================================
# 2. Colour selectivity
# =============================================================================================
COLOUR = [
    md(r"""
    # Colour selectivity: what the index measures, and how to check it

    The lesson: the definition, shown on real crops of a trained network and recomputed by hand;
    neurons planted by hand whose index we know in advance; the index layer by layer, checked
    against how the images were made; and exercises with answers.

    **The colour selectivity index** of a neuron (Rafegas et al. 2019; the thesis definition used
    in the authors' code) compares its response to its top images with its response to grey
    versions of them:

    $$\alpha = 1 - \frac{\sum_j a'_j}{\sum_j a_j}$$

    * $a_j$ is the neuron's activation on its $j$-th top image (the maximum of its feature map,
      at location $(y_j, x_j)$);
    * $a'_j$ is its activation **at the same location** after the receptive-field crop there
      (and only that crop) is replaced by a grey version.

    So $\alpha \approx 1$: without colour the neuron goes silent; $\alpha \approx 0$: colour does not
    matter to it; $\alpha < 0$: the grey version drives it *harder* (the index is not clipped).
    """),
    code(r"""
    from collections import OrderedDict

    import numpy as np
    import pandas as pd
    import plotly.express as px
    import torch
    from torch import nn

    import nsi_widgets as nsi
    from nsi_widgets.index.selectivity import gray_luminance, gray_pca
    """, SHOW_IMAGES),
    md(r"""
    ## 1. Index the trained network

    The embedded default (`ShapesCNN`) on 1,000 of its images, all five conv layers, with
    `top_n=50` top images per neuron instead of the paper's 100 to keep the lesson quick.
    """),
    code(r"""
    model, data = nsi.zoo.load("shapes", n=1000)
    idx = nsi.index_neurons(model, data, layers=nsi.zoo.conv_layers(model), top_n=50)
    idx
    """),
    md(r"""
    ## 2. Two grey versions

    How do you turn a crop grey? The index has two answers (`gray=` in `index_neurons`):

    * **`pca`** (the default; the thesis): convert the crop's pixels to an opponent colour space,
      project them on their first principal component, stretch the result to $[0, 1]$. It keeps the
      crop's strongest contrast, whatever colours it was made of, and normalises its range.
    * **`luminance`**: $0.299R + 0.587G + 0.114B$ per pixel, the grey a black-and-white photo shows.

    Below: the four top crops of the most colour-selective unit of `conv3`, each with its two grey
    versions. The titles give the activation $a$ on the crop and $a'$ on the grey one (PCA, as the
    index was computed). The crop is the unit's receptive field, 18 x 18 pixels, cut from the image
    where the unit's feature map peaks.
    """),
    code(r"""
    def rf_crop(image, receptive_field, y, x):
        # The input window seen by unit (y, x): image pixels, zeros outside the image (the padding).
        y0, x0, y1, x1 = receptive_field.window(y, x)
        height, width = image.shape[-2:]
        crop = torch.zeros(3, y1 - y0, x1 - x0)
        inside = torch.zeros(1, y1 - y0, x1 - x0, dtype=torch.bool)
        top, left, bottom, right = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
        crop[:, top - y0:bottom - y0, left - x0:right - x0] = image[:, top:bottom, left:right]
        inside[:, top - y0:bottom - y0, left - x0:right - x0] = True
        return crop, inside


    def crops_of(L, unit, ranks):
        # The receptive-field crops of a unit's top images (ranks 0, 1, ...), with their in-image masks.
        pairs = [rf_crop(data[int(L.top_indices[unit, r])][0], L.receptive_field, *L.top_positions[unit, r])
                 for r in ranks]
        return torch.stack([c for c, _ in pairs]), torch.stack([m for _, m in pairs])


    L3 = idx["conv3"]
    alpha3 = L3.color_selectivity
    red_unit = int(np.nanargmax(alpha3))
    crops, inside = crops_of(L3, red_unit, range(4))
    greys = {"pca": gray_pca(crops, inside), "luminance": gray_luminance(crops, inside)}
    images, titles = [], []
    for r in range(4):
        a, a_grey = L3.top_activations[red_unit, r], L3.gray_activations[red_unit, r]
        images += [crops[r].permute(1, 2, 0), greys["pca"][r].permute(1, 2, 0), greys["luminance"][r].permute(1, 2, 0)]
        titles += [f"#{r}: a={a:.2f}", f"pca grey: a'={a_grey:.2f}", "luminance grey"]
    print(f"conv3 unit {red_unit}: alpha = {alpha3[red_unit]:.3f}")
    show_images(images, titles, height=330, wrap=6)
    """),
    md(r"""
    The same for the unit of `conv3` with the *lowest* index: its grey crops drive it about as
    much as the coloured ones, or more.
    """),
    code(r"""
    grey_unit = int(np.nanargmin(alpha3))
    crops_g, inside_g = crops_of(L3, grey_unit, range(4))
    pca_g = gray_pca(crops_g, inside_g)
    images, titles = [], []
    for r in range(4):
        images += [crops_g[r].permute(1, 2, 0), pca_g[r].permute(1, 2, 0)]
        titles += [f"#{r}: a={L3.top_activations[grey_unit, r]:.2f}", f"grey: a'={L3.gray_activations[grey_unit, r]:.2f}"]
    print(f"conv3 unit {grey_unit}: alpha = {alpha3[grey_unit]:.3f}")
    show_images(images, titles, height=200)
    """),
    md(r"""
    ### Check the definition by hand

    $a'_j$ is not re-maximised over the feature map, and only the crop is greyed. We can recompute
    one value with nothing but the model: paste the grey crop into the image, run the network,
    read the unit's activation at the stored location, and compare with what the index stored in
    `L.gray_activations`.
    """),
    code(r"""
    def activation_at(model, layer_name, image, unit, y, x):
        # Run the model on one image and read one unit of one layer at (y, x).
        recorded = []

        def keep_output(module, inputs, output):
            recorded.append(output)

        handle = dict(model.named_modules())[layer_name].register_forward_hook(keep_output)
        try:
            with torch.no_grad():
                model(image[None])
        finally:
            handle.remove()
        return float(recorded[0][0, unit, y, x])


    def grey_activation_by_hand(L, unit, rank):
        # Paste the PCA grey crop into the image (only its in-image part) and read the unit at (y, x).
        image = data[int(L.top_indices[unit, rank])][0].clone()
        y, x = (int(v) for v in L.top_positions[unit, rank])
        crop, inside = rf_crop(image, L.receptive_field, y, x)
        grey = gray_pca(crop[None], inside[None])[0]
        y0, x0, y1, x1 = L.receptive_field.window(y, x)
        top, left = max(y0, 0), max(x0, 0)
        bottom, right = min(y1, image.shape[1]), min(x1, image.shape[2])
        image[:, top:bottom, left:right] = grey[:, top - y0:bottom - y0, left - x0:right - x0]
        return activation_at(model, L.name, image, unit, y, x)


    for unit in (red_unit, grey_unit):
        for rank in (0, 1):
            by_hand = grey_activation_by_hand(L3, unit, rank)
            stored = float(L3.gray_activations[unit, rank])
            print(f"conv3 unit {unit}, top image #{rank}: a = {L3.top_activations[unit, rank]:.4f}, "
                  f"a' by hand = {by_hand:.4f}, stored by the index = {stored:.4f}")
            assert np.isclose(by_hand, stored, rtol=1e-4, atol=1e-4)
    """),
    md(r"""
    ## 3. Planted neurons: an index we know in advance

    To trust a measurement, try it where the answer is known. We build a tiny network by hand
    (no training): a 1x1 convolution computes per-pixel features, a ReLU, then a 5x5 convolution
    averages them over a 5 x 5 window, and a ReLU. Three output units:

    | unit | computes (mean over 5 x 5 pixels) | on a grey crop ($R=G=B$) | expected $\alpha$ |
    |---|---|---|---|
    | 0 `red` | $R - (G+B)/2$ | exactly 0 | **1** (both grey versions) |
    | 1 `bright` | luminance $0.299R + 0.587G + 0.114B$ | unchanged by *luminance* grey | **0** with `luminance` |
    | 2 `grey-lover` | luminance $- 2\,|R - G|$ | luminance grey removes the penalty | **$\le 0$** with `luminance` |

    The PCA grey is different: it stretches each crop to the full $[0, 1]$ range, so a unit that
    measures brightness also reacts to that stretch. We index the planted network on the same
    images with both grey versions.
    """),
    code(r"""
    LUMA = [0.299, 0.587, 0.114]
    planted = nn.Sequential(OrderedDict(
        pixel=nn.Conv2d(3, 4, kernel_size=1, bias=False),
        rectify=nn.ReLU(),
        area=nn.Conv2d(4, 3, kernel_size=5, padding=2, bias=False),
        out=nn.ReLU(),
    )).eval()
    with torch.no_grad():
        planted.pixel.weight[:, :, 0, 0] = torch.tensor([
            [1.0, -0.5, -0.5],  # feature 0: redness, zero on any grey pixel
            LUMA,               # feature 1: luminance
            [1.0, -1.0, 0.0],   # features 2 and 3 after the ReLU: max(R - G, 0) and max(G - R, 0),
            [-1.0, 1.0, 0.0],   # their sum is |R - G|
        ])
        planted.area.weight.zero_()
        planted.area.weight[0, 0] = 1 / 25                 # unit 0 "red"
        planted.area.weight[1, 1] = 1 / 25                 # unit 1 "bright"
        planted.area.weight[2, 1] = 1 / 25                 # unit 2 "grey-lover": luminance ...
        planted.area.weight[2, 2] = planted.area.weight[2, 3] = -2 / 25  # ... minus 2 |R - G|

    planted_alpha = {}
    for gray in ("pca", "luminance"):
        planted_index = nsi.index_neurons(planted, data, layers=["out"], top_n=50, gray=gray,
                                          indexes=("color",), progress=False)
        planted_alpha[gray] = planted_index["out"].color_selectivity
    pd.DataFrame(planted_alpha, index=["0 red", "1 bright", "2 grey-lover"]).round(4)
    """),
    code(r"""
    # The checks of the table above, as code: they hold for any images.
    assert np.allclose(planted_alpha["pca"][0], 1) and np.allclose(planted_alpha["luminance"][0], 1)
    assert abs(planted_alpha["luminance"][1]) < 1e-5
    assert planted_alpha["luminance"][2] <= 1e-6
    print("red: alpha = 1; bright: alpha = 0 under luminance; grey-lover: alpha <= 0 under luminance")
    """),
    md(r"""
    Under the PCA grey, `bright` and `grey-lover` get a *positive* index: their top crops are bright,
    nearly flat backgrounds, and the PCA grey stretches them to span black to white, which lowers
    their mean brightness. The choice of grey version is part of what the index measures; compare
    the two on the trained network:
    """),
    code(r"""
    luminance_idx = nsi.index_neurons(model, data, layers=idx.layers, top_n=50, gray="luminance",
                                      indexes=("color",), neuron_features=None, progress=False)
    both = pd.concat([
        pd.DataFrame({"layer": name, "unit": np.arange(idx[name].n_units),
                      "alpha_pca": idx[name].color_selectivity,
                      "alpha_luminance": luminance_idx[name].color_selectivity})
        for name in idx.layers])
    fig = px.scatter(both, x="alpha_pca", y="alpha_luminance", color="layer", hover_data=["unit"],
                     title="Colour index with the two grey versions, one point per neuron")
    fig.add_shape(type="line", x0=-0.6, y0=-0.6, x1=1, y1=1, line=dict(dash="dot", color="grey"))
    fig.update_layout(height=420)
    """),
    md(r"""
    Points above the dotted diagonal are units for which the luminance grey removes more of what
    drives them than the PCA grey does (the PCA grey keeps each crop's strongest contrast, even
    one between two colours of equal brightness). The two versions agree on which units are the
    most colour-selective, near $\alpha = 1$, and differ most in between.
    """),
    md(r"""
    ## 4. Layer by layer

    The distribution of $\alpha$ in each layer. `nsi.ColorSelectivityHistogram` is the interactive
    version (drag a range to select units, set a threshold to count them); the box plot below is
    a static picture of the same numbers.
    """),
    code(r"""
    nsi.ColorSelectivityHistogram(idx, threshold=0.5)
    """),
    code(r"""
    table = idx.to_pandas()
    fig = px.box(table, x="layer", y="color_selectivity", points="all", hover_data=["unit"],
                 title="Colour selectivity (PCA grey) per layer")
    fig.update_layout(height=380)
    """),
    code(r"""
    summary = table.groupby("layer", sort=False)["color_selectivity"].agg(
        mean="mean", share_above_half=lambda a: (a >= 0.5).mean(), negative=lambda a: (a < 0).sum())
    summary.round(3)
    """),
    md(r"""
    ### Does the index agree with how the images were made?

    The shapes data set records, for every image, the colour its shape was drawn in
    (`data.ground_truth["color"]`; `data.to_pandas()` has the whole table). So for every neuron we
    can count what its top images show, without looking at the network at all:

    * the **dominant-colour share**: the fraction of its top images whose shape has the most
      common colour among them (1: all red, say);
    * the **achromatic share**: the fraction whose shape is white, grey or black.

    If the index measures colour, neurons with high $\alpha$ should have a high dominant-colour
    share and a low achromatic share.
    """),
    code(r"""
    data.to_pandas().head()
    """),
    code(r"""
    colour_of = data.ground_truth["color"]
    rows = []
    for name in idx.layers:
        L = idx[name]
        for unit in range(L.n_units):
            colours = colour_of[L.top_indices[unit]]
            _, counts = np.unique(colours, return_counts=True)
            rows.append({"layer": name, "unit": unit, "alpha": L.color_selectivity[unit],
                         "dominant_colour_share": counts.max() / len(colours),
                         "achromatic_share": np.isin(colours, ["white", "grey", "black"]).mean()})
    truth = pd.DataFrame(rows)
    correlations = truth.groupby("layer", sort=False)[["alpha", "dominant_colour_share", "achromatic_share"]].corr()
    correlations.xs("alpha", level=1)[["dominant_colour_share", "achromatic_share"]].round(2)
    """),
    code(r"""
    fig = px.scatter(truth, x="achromatic_share", y="alpha", color="layer", hover_data=["unit"],
                     title="Colour index against the share of white/grey/black shapes among the top images")
    fig.update_layout(height=420)
    """),
    md(r"""
    In every layer the index rises with the dominant-colour share and falls with the achromatic
    share (the correlations above): the index and the recipe of the images tell the same story.
    The agreement is closest in `conv5`, whose receptive field (78 pixels) sees the whole shape;
    a `conv1` unit sees 3 x 3 pixels, which may be background or an edge, not the shape's colour.

    ## 5. Exercises

    Each exercise has an empty cell for your answer and an answer cell to check it against.

    **Exercise 1.** Find the most colour-selective unit of `conv1` and look at its Neuron Feature.
    Which colour is it? Do its top images agree (use `data.ground_truth["color"]`)?
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer
    L1 = idx["conv1"]
    best = int(np.nanargmax(L1.color_selectivity))
    values, counts = np.unique(colour_of[L1.top_indices[best]], return_counts=True)
    print(f"conv1 unit {best}: alpha = {L1.color_selectivity[best]:.3f}")
    print("colours of its top images:", dict(zip(values.tolist(), counts.tolist())))
    print("mean RGB of its Neuron Feature:", L1.neuron_features[best].reshape(-1, 3).mean(axis=0).round(2))
    show_images([L1.neuron_features[best]], [f"conv1 unit {best}"], height=200)
    """),
    md(r"""
    **Exercise 2.** Predict the sign of $\alpha$ for a unit that *prefers grey*, that is, one that
    responds more to a grey input than to a coloured one. Check your prediction on the planted
    `grey-lover` unit. Then look at the unit with the lowest $\alpha$ of `conv5`: are its top images
    mostly of one colour?
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer: alpha <= 0. Greying its crops does not lower its response (a'_j >= a_j), so
    # sum a' >= sum a and 1 - sum a' / sum a <= 0. With the luminance grey this is exact for the
    # planted unit; with the PCA grey the contrast stretch also plays a part.
    print("planted grey-lover, luminance grey:", round(float(planted_alpha["luminance"][2]), 4))
    L5 = idx["conv5"]
    lowest = int(np.nanargmin(L5.color_selectivity))
    values, counts = np.unique(colour_of[L5.top_indices[lowest]], return_counts=True)
    print(f"conv5 unit {lowest}: alpha = {L5.color_selectivity[lowest]:.3f}")
    print("colours of its top images:", dict(zip(values.tolist(), counts.tolist())))
    # Many colours, white, grey and black among them: it responds to a shape whatever its colour,
    # and the grey versions of its crops drive it slightly harder than the originals.
    """),
    md(r"""
    **Exercise 3.** How many units of each layer have $\alpha \ge 0.8$ under the PCA grey, and how
    many under the luminance grey? Which layer has the largest share of strongly colour-selective
    units?
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer
    counts = both.groupby("layer", sort=False).agg(
        units=("unit", "size"),
        pca=("alpha_pca", lambda a: int((a >= 0.8).sum())),
        luminance=("alpha_luminance", lambda a: int((a >= 0.8).sum())))
    counts["share_pca"] = (counts["pca"] / counts["units"]).round(2)
    print("largest share (PCA grey):", counts["share_pca"].idxmax())
    counts
    """),
    md(r"""
    **Exercise 4.** A unit has $a = (4, 3, 2, 1)$ on its four top images and $a' = (1, 0, 2, 1)$
    after greying. Compute $\alpha$ by hand, then with `nsi.color_selectivity`.
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer: 1 - (1 + 0 + 2 + 1) / (4 + 3 + 2 + 1) = 1 - 4/10 = 0.6
    value = nsi.color_selectivity(np.array([[4.0, 3, 2, 1]]), np.array([[1.0, 0, 2, 1]]))[0]
    print(value)
    assert np.isclose(value, 0.6)
    """),
]


# =============================================================================================
# 3. Class selectivity
# =============================================================================================
CLASS = [
    md(r"""
    # Class selectivity: how many classes does a neuron respond to?

    A neuron deep in a network tends to respond to the images of a few classes; an early one to
    images of many. The **class selectivity index** (Rafegas et al. 2019) puts a number on
    this from the labels of a neuron's top-$N$ images, weighted by how strongly each excites it:

    1. weights $w_j = a_j / a_1$ (the strongest image weighs 1; images with activation $\le 0$ weigh 0);
    2. class frequencies $f_c = \sum_{j:\,c(j)=c} w_j \,/\, \sum_j w_j$;
    3. $M$ = the smallest number of classes, taken from the most frequent down, whose
       frequencies add up to at least a threshold $\nu$;
    4. $\gamma = \dfrac{N - M}{N - 1}$.

    $\gamma = 1$ when one class covers the threshold; it falls as more classes are needed, down to 0
    when every top image is of another class.

    **About $\nu$.** The paper's value of the threshold could not be confirmed. nsi-widgets uses
    $\nu = 1.0$ by default, as in the authors' group code: then $M$ is simply the number of
    distinct classes (with positive weight) among the top images. Any other threshold is one call
    away: `nsi.class_selectivity(L.top_labels, L.top_activations, nu=...)`.
    """),
    code(r"""
    import numpy as np
    import pandas as pd
    import plotly.express as px

    import nsi_widgets as nsi
    """),
    md(r"""
    ## 1. Small cases by hand

    One neuron, $N = 5$ top images with labels and activations. Each case is computed step by step
    with numpy, then with `nsi.class_selectivity`; both must agree. (The functions take arrays of
    shape (units, N): here one row.)
    """),
    code(r"""
    def gamma_by_hand(labels, activations, nu):
        # The four steps of the definition, written out.
        a = np.clip(np.asarray(activations, dtype=float), 0, None)
        w = a / a[0]
        classes = sorted(set(labels))
        f = {c: sum(wj for wj, cj in zip(w, labels) if cj == c) / w.sum() for c in classes}
        ranked = sorted((v for v in f.values() if v > 0), reverse=True)  # zero-weight classes never count
        M = 1
        while sum(ranked[:M]) < nu - 1e-9 and M < len(ranked):  # 1e-9: float sums of fractions
            M += 1
        N = len(labels)
        return f, M, (N - M) / (N - 1)


    cases = [
        ("one class", [0, 0, 0, 0, 0], [9, 8, 7, 6, 5]),
        ("five classes", [0, 1, 2, 3, 4], [9, 8, 7, 6, 5]),
        ("a dominant class", [0, 0, 1, 2, 0], [10, 8, 5, 2, 1]),
        ("zero activations weigh nothing", [0, 0, 1, 1, 2], [4, 2, 1, 0, 0]),
    ]
    rows = []
    for name, labels, activations in cases:
        for nu in (1.0, 0.9, 0.7):
            f, M, gamma = gamma_by_hand(labels, activations, nu)
            library = nsi.class_selectivity(np.array([labels]), np.array([activations], dtype=float), nu=nu)[0]
            assert np.isclose(gamma, library), (name, nu)
            rows.append({"case": name, "nu": nu, "f_c": {c: round(v, 3) for c, v in f.items()},
                         "M": M, "gamma by hand": round(gamma, 3), "nsi.class_selectivity": round(float(library), 3)})
    pd.DataFrame(rows)
    """),
    md(r"""
    Read the third case: weights $1, 0.8, 0.5, 0.2, 0.1$ (sum 2.6), so $f_0 = 1.9/2.6 = 0.731$,
    $f_1 = 0.192$, $f_2 = 0.077$. With $\nu = 1$ all three classes are needed ($M = 3$,
    $\gamma = 2/4 = 0.5$); with $\nu = 0.9$ two ($0.731 + 0.192 \ge 0.9$, $\gamma = 0.75$); with
    $\nu = 0.7$ one ($\gamma = 1$). In the fourth case the images with activation 0 weigh nothing, so
    class 2 is never counted.

    Note the range: with $\nu = 1$, $M$ is at most the number of classes $K$, so
    $\gamma \ge (N - K)/(N - 1)$. With $K = 10$ classes and $N = 100$ images that is $0.909$: on a
    data set with few classes the index lives in a narrow band near 1. The embedded default has
    $K = 240$ classes (each colour x shape x background texture), so at $N = 100$ the index can use
    its whole range.

    ## 2. The index on a trained network

    The embedded default on 3,000 of its images (12 or 13 per class), with the paper's $N = 100$
    top images per neuron. We only need the class index here (`indexes=("class",)`), which is fast:
    it is computed from the labels of the top images, without running the network again.
    """),
    code(r"""
    model, data = nsi.zoo.load("shapes", n=3000)
    print(len(data.classes), "classes, e.g.", data.classes[:3], "...")
    idx = nsi.index_neurons(model, data, layers=nsi.zoo.conv_layers(model), top_n=100, indexes=("class",))
    idx
    """),
    md(r"""
    ## 3. Layer by layer: the spread and the mean

    Every neuron's index, one box per layer. The index spreads over a wide range in every layer:
    some units see a few classes among their 100 top images, others dozens. The mean grows with
    depth: early units respond to a colour or an edge found in images of many classes; deeper units
    combine them into what a few classes share.
    """),
    code(r"""
    table = idx.to_pandas()
    fig = px.box(table, x="layer", y="class_selectivity", points="all", hover_data=["unit"],
                 title="Class selectivity of every neuron (N = 100, nu = 1)")
    fig.update_layout(height=380)
    """),
    code(r"""
    summary = table.groupby("layer", sort=False)["class_selectivity"].agg(
        mean="mean", p5=lambda g: np.percentile(g, 5), p95=lambda g: np.percentile(g, 95),
        distinct=lambda g: g.nunique())
    summary["spread (p95 - p5)"] = summary["p95"] - summary["p5"]
    means = summary["mean"].to_numpy()
    print("the mean grows with every layer:", bool(np.all(np.diff(means) > 0)))
    summary.round(3)
    """),
    md(r"""
    What the number means, read from the ground truth: $M$ classes among the top images, and how
    many distinct colours, shapes and textures those images have. A unit with a low index mixes
    many classes, often because it cares about one attribute only (a colour, a texture) and
    ignores the rest; a unit with a high index sees few.
    """),
    code(r"""
    gt = data.ground_truth
    L5 = idx["conv5"]
    rows = []
    for unit in range(L5.n_units):
        top = L5.top_indices[unit]
        rows.append({"unit": unit, "gamma": float(L5.class_selectivity[unit]),
                     "M": len(np.unique(L5.top_labels[unit])),
                     "colours": len(np.unique(gt["color"][top])), "shapes": len(np.unique(gt["shape"][top])),
                     "textures": len(np.unique(gt["background"][top]))})
    units = pd.DataFrame(rows).sort_values("gamma")
    pd.concat([units.head(4), units.tail(4)])
    """),
    md(r"""
    ## 4. The threshold $\nu$

    The same top images, the index at several thresholds. A lower $\nu$ ignores the classes that
    carry little weight, so the index rises and its spread narrows: at small $\nu$ nearly every
    neuron gets $\gamma$ close to 1 and the index no longer tells neurons apart. Where to set it is a
    choice to report.
    """),
    code(r"""
    nus = np.round(np.arange(0.2, 1.01, 0.1), 2)
    rows = []
    for name in idx.layers:
        L = idx[name]
        for nu in nus:
            gamma = nsi.class_selectivity(L.top_labels, L.top_activations, nu=nu)
            rows.append({"layer": name, "nu": nu, "mean_gamma": np.nanmean(gamma),
                         "spread": np.percentile(gamma, 95) - np.percentile(gamma, 5)})
    by_nu = pd.DataFrame(rows)
    # at the default threshold the function gives what index_neurons stored
    L = idx["conv5"]
    assert np.allclose(nsi.class_selectivity(L.top_labels, L.top_activations, nu=1.0), L.class_selectivity, equal_nan=True)
    fig = px.line(by_nu, x="nu", y="mean_gamma", color="layer", markers=True,
                  title="Mean class selectivity against the threshold nu")
    fig.update_layout(height=360)
    """),
    code(r"""
    fig = px.line(by_nu, x="nu", y="spread", color="layer", markers=True,
                  title="Spread of the index (95th - 5th percentile) against nu")
    fig.update_layout(height=360)
    """),
    code(r"""
    # conv5 at nu = 1 and at nu = 0.5, side by side
    both = pd.DataFrame({nu: nsi.class_selectivity(L.top_labels, L.top_activations, nu=nu) for nu in (1.0, 0.5)})
    fig = px.histogram(both.melt(var_name="nu", value_name="gamma"), x="gamma", color="nu", barmode="overlay",
                       nbins=40, title="conv5: the index at nu = 1 and nu = 0.5")
    fig.update_layout(height=330)
    """),
    md(r"""
    ## 5. One neuron's classes

    The class frequencies $f_c$ of a single neuron, here the most class-selective unit of `conv5`
    (ties broken by the strength of its response) and, for contrast, the least selective unit of
    `conv1`. `nsi.ClassSelectivityChart` draws them interactively; below the 15 largest with plotly.
    """),
    code(r"""
    L5, L1 = idx["conv5"], idx["conv1"]
    score5 = np.nan_to_num(L5.class_selectivity, nan=-1)
    selective = int(np.lexsort((-L5.top_activations[:, 0], -score5))[0])
    broad = int(np.nanargmin(L1.class_selectivity))
    nsi.ClassSelectivityChart(idx, layer="conv5", unit=selective)
    """),
    code(r"""
    def frequency_bars(L, unit, title, top=15):
        f = nsi.class_frequencies(L.top_labels[unit:unit + 1], L.top_activations[unit:unit + 1],
                                  n_classes=len(idx.class_names))[0]
        order = np.argsort(-f, kind="stable")[:top]
        names = [idx.class_names[c] for c in order]
        fig = px.bar(x=names, y=f[order], color=[idx.class_parents[n] for n in names],
                     labels={"x": "class", "y": "f_c", "color": "shape"},
                     title=f"{title}: gamma = {L.class_selectivity[unit]:.3f}, "
                           f"{int((f > 0).sum())} classes, population code = {int(L.class_population[unit])}")
        return fig.update_layout(height=360, xaxis={"categoryorder": "array", "categoryarray": names})


    frequency_bars(L5, selective, f"conv5 unit {selective}")
    """),
    code(r"""
    frequency_bars(L1, broad, f"conv1 unit {broad}")
    """),
    md(r"""
    ## 6. Population code

    The index summarises a neuron by one number. The **population code** (from the same authors'
    code) counts the classes a neuron takes part in: the number of classes with $f_c \ge 0.1$.
    A population code of 1 means one class dominates; in a distributed representation a class is
    coded by many neurons that each respond to several classes.
    """),
    code(r"""
    shares = (table.groupby("layer", sort=False)["class_population"].value_counts(normalize=True)
              .rename("share of units").reset_index())
    fig = px.bar(shares, x="class_population", y="share of units", color="layer", barmode="group",
                 category_orders={"layer": idx.layers},
                 title="Number of classes with f_c >= 0.1 per neuron: share of each layer's units")
    fig.update_layout(height=360)
    """),
    code(r"""
    # The threshold 0.1 is a parameter: nsi.population_code(labels, activations, threshold=...)
    rows = {}
    for name in idx.layers:
        L = idx[name]
        rows[name] = {f"threshold {t}": np.mean(nsi.population_code(L.top_labels, L.top_activations, threshold=t))
                      for t in (0.05, 0.1, 0.2, 0.3)}
    pd.DataFrame(rows).T.round(2)
    """),
    md(r"""
    ## 7. Class hierarchies

    Classes often have parents (WordNet for ImageNet: *dalmatian* is a *dog*). The index can be
    computed over parents instead of classes. The shapes data set has three hierarchies, each two
    levels deep (child -> parent): by shape, by colour and by texture.
    """),
    code(r"""
    for name, parents in data.class_hierarchies.items():
        first = parents["red star on grain"]
        print(f"{name:8s} red star on grain -> {first} -> {parents[first]}")
    """),
    md(r"""
    `index_neurons` stores the index over the first level of `data.class_parents` (the shape
    kinds) as `superclass_selectivity`; `nsi.class_selectivity(..., parents=...)` computes it for
    any level. With 6 shape kinds (or 10 colours, 4 textures) and $N = 100$, the index over one
    level is again confined near 1 at $\nu = 1$; at $\nu = 0.5$ it asks whether one parent carries
    half of the weight. Which hierarchy a unit is selective for tells what it codes: a colour unit is
    pure in the colour hierarchy, a texture unit in the texture hierarchy.
    """),
    code(r"""
    def parent_mapping(parents):
        names = sorted({parents[c] for c in idx.class_names})
        return names, np.array([names.index(parents[c]) for c in idx.class_names])


    L = idx["conv5"]
    shape_names, shape_of_class = parent_mapping(data.class_parents)
    assert np.allclose(nsi.class_selectivity(L.top_labels, L.top_activations, parents=shape_of_class),
                       L.superclass_selectivity, equal_nan=True)
    rows = []
    for hierarchy, parents in data.class_hierarchies.items():
        _, mapping = parent_mapping(parents)
        for nu in (1.0, 0.5):
            gamma = nsi.class_selectivity(L.top_labels, L.top_activations, nu=nu, parents=mapping)
            rows.append({"hierarchy": hierarchy, "nu": nu, "units with gamma = 1": int((gamma == 1).sum()),
                         "mean gamma": float(np.nanmean(gamma))})
    pd.DataFrame(rows).pivot(index="hierarchy", columns="nu")
    """),
    md(r"""
    ## 8. Exercises

    **Exercise 1.** Compute $\gamma$ by hand for a neuron with $N = 4$ top images of classes
    $(3, 3, 5, 3)$ and activations $(2, 2, 2, 2)$, at $\nu = 1$ and at $\nu = 0.7$. Check with
    `nsi.class_selectivity`.
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer: all weights are 1, f_3 = 3/4, f_5 = 1/4.
    # nu = 1: M = 2, gamma = (4 - 2) / 3 = 2/3.   nu = 0.7: f_3 = 0.75 >= 0.7, M = 1, gamma = 1.
    labels, activations = np.array([[3, 3, 5, 3]]), np.array([[2.0, 2, 2, 2]])
    for nu, expected in ((1.0, 2 / 3), (0.7, 1.0)):
        value = nsi.class_selectivity(labels, activations, nu=nu)[0]
        print(f"nu={nu}: gamma = {value:.4f}")
        assert np.isclose(value, expected)
    """),
    md(r"""
    **Exercise 2.** Which classes does the most class-selective unit of `conv5` prefer? What do
    its top images have in common: a colour, a shape, a texture? Use `data.ground_truth`.
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer
    top = L5.top_indices[selective]
    names = np.array(idx.class_names)[L5.top_labels[selective]]
    values, counts = np.unique(names, return_counts=True)
    print(f"conv5 unit {selective}: its top {L5.top_n} images come from {len(values)} classes, most often:")
    print(pd.Series(counts, index=values).sort_values(ascending=False).head(5).to_string())
    for key in ("color", "shape", "background"):
        share = pd.Series(gt[key][top]).value_counts(normalize=True)
        print(f"{key:10s}: {share.index[0]} in {share.iloc[0]:.0%} of the top images")
    """),
    md(r"""
    **Exercise 3.** At $\nu = 0.5$, what share of each layer's units has $\gamma = 1$ (one class
    carries at least half of the weight)? Which layer has the largest share?
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer
    shares = {name: float(np.mean(nsi.class_selectivity(idx[name].top_labels, idx[name].top_activations, nu=0.5) == 1))
              for name in idx.layers}
    print({name: round(share, 3) for name, share in shares.items()})
    print("largest share:", max(shares, key=shares.get))
    """),
]


# =============================================================================================
# 4. Annotating neurons
# =============================================================================================
ANNOTATING = [
    md(r"""
    # Annotating neurons by hand

    Indexes sort neurons; naming them is still a human job ("red blob", "star corner"). This
    notebook walks through the annotation workflow of a class:

    1. one annotator: a store bound to an index, annotate, read, history, undo;
    2. the neuron grid showing and searching the labels;
    3. labelling in the Explorer with the keyboard, into a store in your working folder;
    4. three students, each writing their own file, merged into one store;
    5. the agreement a teacher reads (per neuron each student's label, and a kappa);
    6. export to CSV and JSON, and import back with a conflict report.

    The files of sections 1-2 and 4-6 go to a temporary folder that the last cell deletes; the
    store you label in by hand (section 3) stays in the notebook's folder.
    """),
    code(r"""
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np
    import pandas as pd
    import plotly.express as px

    import nsi_widgets as nsi

    workdir = Path(tempfile.mkdtemp(prefix="nsi-annotating-"))
    print("working folder:", workdir)
    """),
    md(r"""
    ## 1. An index to annotate

    Two layers of the embedded default, indexed on 1,000 images with 50 top images per neuron
    (a few seconds).
    """),
    code(r"""
    model, data = nsi.zoo.load("shapes", n=1000)
    idx = nsi.index_neurons(model, data, layers=["conv3", "conv4"], top_n=50)
    idx
    """),
    md(r"""
    ## 2. One annotator

    `AnnotationStore(path, index=idx, author=...)` opens (or creates) a SQLite file. Bound to the
    index, it refuses layers and units the index does not have, and it files the annotations under
    the model's fingerprint, so annotations of different models never mix. Every change is kept:
    nothing is overwritten or deleted, and `undo` steps back.
    """),
    code(r"""
    store = nsi.AnnotationStore(workdir / "teacher.sqlite", index=idx, author="teacher")
    store.annotate("conv3", 5, "red blob")
    store.annotate("conv3", 5, "red disc", note="round, any size", tags=["colour", "shape"])
    store.get("conv3", 5)
    """),
    code(r"""
    pd.DataFrame([{"revision": a.revision, "action": a.action, "label": a.label, "note": a.note, "tags": a.tags}
                  for a in store.history("conv3", 5)])
    """),
    code(r"""
    store.undo("conv3", 5)          # back to "red blob"
    print("after one undo: ", store.get("conv3", 5).label)
    store.undo("conv3", 5)          # back to no annotation
    print("after two undos:", store.get("conv3", 5))
    print("history rows kept:", len(store.history("conv3", 5)))
    """),
    code(r"""
    try:
        store.annotate("conv3", 999, "no such unit")
    except ValueError as error:
        print("refused:", error)
    """),
    md(r"""
    ## 3. The grid with annotations

    `nsi.NeuronGrid` shows a layer's Neuron Features with their labels. Sort by any index, filter by
    ranges, type in the search box to find labels; clicking selects. Let us label the five most
    colour-selective units of `conv3` after the colour of their Neuron Feature, then show the grid.
    """),
    code(r"""
    HUES = {"red": 0, "orange": 30, "yellow": 60, "green": 120, "cyan": 180, "blue": 230, "magenta": 300}


    def colour_name(rgb):
        # A plain colour word for an RGB triple: grey if unsaturated, else the nearest named hue.
        r, g, b = rgb
        high, low = max(rgb), min(rgb)
        if high - low < 0.15:
            return "grey"
        if high == r:
            hue = (60 * (g - b) / (high - low)) % 360
        elif high == g:
            hue = 60 * (b - r) / (high - low) + 120
        else:
            hue = 60 * (r - g) / (high - low) + 240
        return min(HUES, key=lambda name: min(abs(hue - HUES[name]), 360 - abs(hue - HUES[name])))


    def nf_colour(L, unit):
        # Colour word for the centre of a unit's Neuron Feature (its edges often show background).
        nf = L.neuron_features[unit]
        h, w = nf.shape[:2]
        return colour_name(nf[h // 4:h - h // 4, w // 4:w - w // 4].reshape(-1, 3).mean(axis=0))


    L3 = idx["conv3"]
    top_colour_units = [int(u) for u in np.argsort(-np.nan_to_num(L3.color_selectivity, nan=-np.inf))[:5]]
    for unit in top_colour_units:
        store.annotate("conv3", unit, f"{nf_colour(L3, unit)} blob", tags=["colour"])
    store.to_pandas()[["layer", "unit", "author", "label", "tags"]]
    """),
    code(r"""
    grid = nsi.NeuronGrid(idx, layer="conv3", sort_by="color_selectivity", annotations=store)
    grid
    """),
    md(r"""
    The grid is also driven from Python: its `order` is the list of units as displayed, after the
    sort, the filters and the search; `selected` the units clicked.
    """),
    code(r"""
    print("first ten shown:", grid.order[:10])
    grid.search = "blob"
    print("units whose label contains 'blob':", grid.order)
    grid.search = ""
    """),
    md(r"""
    ## 4. Label in the Explorer, with the keyboard

    The store below lives in the notebook's folder (`my-annotations.sqlite`), so what you label
    survives closing the notebook, restarting the kernel and running this notebook again. The
    Explorer shows only the units you have not labelled yet ("unlabelled only", in its toolbar)
    and counts your progress ("0 of 64 labelled"). Click a unit in the grid, then:

    | key | what it does |
    |---|---|
    | `L` (or Enter in the grid) | type a label: the label box gets the focus |
    | Enter | save, and show the next unit in the grid's order, ready for typing |
    | Shift+Enter | save, and show the previous unit |
    | Page Down / Page Up (or Alt+Down / Alt+Up) | move without saving |
    | Esc | leave the label box, back to the grid (arrow keys move there) |

    Moving away from text you have not saved asks first (save, discard or keep editing). The card
    has undo and redo and the neuron's history; "as" sets who you are (each author's labels are kept
    apart). If the kernel restarts, the card says so and saving is off: run this cell again.
    """),
    code(r"""
    my_store = nsi.AnnotationStore("my-annotations.sqlite", index=idx, author="me")
    explorer = nsi.Explorer(idx, annotations=my_store, layer="conv3", unlabelled_only=True)
    explorer
    """),
    md(r"""
    The Explorer's state is mirrored in Python: read it, or set it and the views follow. Saving
    from Python is the same as typing in the card (here one label, so that a fresh run has one).
    """),
    code(r"""
    print("unit shown:", explorer.unit, "| unlabelled units left:", len(explorer.order))
    if not my_store.all(layer="conv3"):
        explorer.annotate(f"{nf_colour(L3, explorer.unit)} blob")
    print("labelled in conv3 so far:", {unit: a.label for (_, unit), a in my_store.all(layer="conv3").items()})
    """),
    md(r"""
    ## 5. Three students

    In a class every student labels the same neurons in their own file (no one can overwrite
    anyone). Here three "students" label the eight most colour-selective units of `conv3`. To keep
    the notebook reproducible they are simulated, each with a habit:

    * **ana** names the colour of the Neuron Feature's centre;
    * **ben** does the same but capitalises, and calls every blue one "purple";
    * **chloe** labels only the first five and writes a note on each.
    """),
    code(r"""
    units = [int(u) for u in np.argsort(-np.nan_to_num(L3.color_selectivity, nan=-np.inf))[:8]]
    files = {name: workdir / f"{name}.sqlite" for name in ("ana", "ben", "chloe")}

    with nsi.AnnotationStore(files["ana"], index=idx, author="ana") as ana:
        for unit in units:
            ana.annotate("conv3", unit, f"{nf_colour(L3, unit)} blob")

    with nsi.AnnotationStore(files["ben"], index=idx, author="ben") as ben:
        for unit in units:
            colour = nf_colour(L3, unit)
            ben.annotate("conv3", unit, ("purple" if colour == "blue" else colour).capitalize() + " Blob")

    with nsi.AnnotationStore(files["chloe"], index=idx, author="chloe") as chloe:
        for unit in units[:5]:
            chloe.annotate("conv3", unit, f"{nf_colour(L3, unit)} blob", note="looked at the top crops too")

    print("one file per student:", {name: path.name for name, path in files.items()})
    """),
    md(r"""
    ## 6. Merge and compare

    `nsi.merge_stores` copies the current annotations of every file into one store (here a new
    file, `class.sqlite`). Annotations are kept per author, so the three students' labels sit side
    by side; a merge report says what was added. The **agreement table** has one row per neuron:
    how many students labelled it, how many different labels they gave (case and spacing do not
    count), whether they agree, the majority label, and each student's label.
    """),
    code(r"""
    merged = nsi.merge_stores(files.values(), workdir / "class.sqlite", index=idx, author="teacher")
    for report in merged.merge_reports:
        print(report.summary())
    """),
    code(r"""
    agreement = merged.agreement(layer="conv3")
    agreement
    """),
    code(r"""
    fig = px.bar(agreement, x=agreement["unit"].astype(str), y="majority_count", color="agree",
                 hover_data=["majority", "n_labels"],
                 labels={"x": "conv3 unit", "majority_count": "students with the majority label"},
                 title="How many students gave the majority label, per neuron")
    fig.update_layout(height=330)
    """),
    md(r"""
    `Red Blob` (ben) and `red blob` (ana) count as the same label; ben's `Purple Blob` does not.
    The teacher opens the Explorer on the merged store: its **agreement** tab lists, per neuron,
    each student's label with the disagreements marked, and a chance-corrected agreement
    (Cohen's kappa for two authors, Fleiss' kappa for more, over the neurons everyone labelled).
    Clicking a row shows that neuron in the card.
    """),
    code(r"""
    disagreements = agreement.loc[~agreement["agree"], "unit"].tolist()
    print("conv3 units the students disagree on:", disagreements)
    teacher = nsi.Explorer(idx, annotations=merged, layer="conv3", unit=disagreements[0])
    kappa = teacher.agreement["conv3"]["kappa"]
    print(f"{kappa['kind']} kappa over the {kappa['n_items']} neurons every student labelled:", kappa["value"])
    teacher
    """),
    md(r"""
    ## 7. Export and import

    `export_csv` and `export_json` write the current annotations (all authors) to files anyone can
    open; `import_csv` / `import_json` read them back. An import never overwrites silently: when a
    file's annotation differs from the store's current one for the same neuron and author, it is a
    **conflict**. The report lists conflicts; `on_conflict="report"` (the default) keeps ours,
    `"theirs"` takes the file's version (ours stays in the history), `"ours"` keeps ours quietly.
    """),
    code(r"""
    n_csv = merged.export_csv(workdir / "class.csv")
    n_json = merged.export_json(workdir / "class.json")
    print(f"{n_csv} annotations to CSV, {n_json} to JSON")
    pd.read_csv(workdir / "class.csv").head()
    """),
    md(r"""
    Suppose ben changes his mind in the CSV file (a spreadsheet edit): his "Purple Blob" labels
    become "blue blob". Importing that file into the merged store reports the changed rows as
    conflicts; everything else is unchanged.
    """),
    code(r"""
    edited = pd.read_csv(workdir / "class.csv", dtype=str, keep_default_na=False)
    changed = (edited["author"] == "ben") & (edited["label"] == "Purple Blob")
    edited.loc[changed, "label"] = "blue blob"
    edited.to_csv(workdir / "class-edited.csv", index=False)

    report = merged.import_csv(workdir / "class-edited.csv")
    print(report.summary())
    """),
    code(r"""
    report = merged.import_csv(workdir / "class-edited.csv", on_conflict="theirs")
    print(report.summary())
    merged.agreement(layer="conv3")[["unit", "n_labels", "agree", "majority", "ana", "ben", "chloe"]]
    """),
    md(r"""
    A JSON export imports the same way; into an empty store every record is simply added:
    """),
    code(r"""
    with nsi.AnnotationStore(workdir / "copy.sqlite", index=idx, author="teacher") as copy:
        print(copy.import_json(workdir / "class.json").summary())
        print("authors in the copy:", copy.authors())
    """),
    md(r"""
    ## Clean up

    Close the stores and delete the temporary folder (your own `my-annotations.sqlite` stays).
    (Skip this cell to keep the files; the grid above stops saving once its store is closed.)
    """),
    code(r"""
    store.close()
    merged.close()
    shutil.rmtree(workdir)
    print("deleted", workdir)
    """),
]


# =============================================================================================
# 5. Your own model and images
# =============================================================================================
OWN = [
    md(r"""
    # Your own model and your own images

    Everything in nsi-widgets works on any `torch.nn.Module` and any labelled image set. This
    notebook shows the pieces:

    1. a folder of images, one subfolder per class, read with `nsi.zoo.ImageFolderDataset`;
    2. a model from your own code: a `.py` file loaded with `nsi.zoo.load_factory`, or a module
       object you pass directly;
    3. `preprocess`: the model's input normalisation;
    4. layers by name (`nsi.list_layers`) or as module objects;
    5. torchvision models, when torchvision is installed (nothing is ever downloaded: weights come
       from a local file).

    The notebook writes its example images and model file into a temporary folder and deletes it
    at the end. To use your own, point the paths at your files.
    """),
    code(r"""
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np
    import plotly.express as px
    import torch
    from PIL import Image
    from torch import nn

    import nsi_widgets as nsi
    """, SHOW_IMAGES, r"""
    workdir = Path(tempfile.mkdtemp(prefix="nsi-own-model-"))
    print("working folder:", workdir)
    """),
    md(r"""
    ## 1. A folder of images

    `ImageFolderDataset(root, size=...)` expects `root/<class name>/<image file>`: each subfolder is
    a class (in sorted order), every image is read with Pillow, converted to RGB and resized to
    one common size. To have something to read, we first write 60 PNG files from the synthetic
    shapes generator, six per class, into such a folder.
    """),
    code(r"""
    shapes = nsi.zoo.make_shapes(60, seed=11, size=64)
    root = workdir / "images"
    for i in range(len(shapes)):
        image, label = shapes[i]
        folder = root / shapes.classes[label].replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{i:03d}.png")
    print(sorted(p.name for p in root.iterdir()))
    print(len(list(root.rglob("*.png"))), "files")
    """),
    code(r"""
    # class_parents (optional) adds a hierarchy: here the one of the shapes classes, by folder name.
    parents = {name.replace(" ", "_"): parent for name, parent in shapes.class_parents.items()}
    folder_data = nsi.zoo.ImageFolderDataset(root, size=64, class_parents=parents)
    print(folder_data)
    print("classes:", folder_data.classes)
    image, label = folder_data[0]
    print("one item:", tuple(image.shape), image.dtype, f"values in [{image.min():.2f}, {image.max():.2f}], label {label}")
    """),
    md(r"""
    Any other data works too: a `torch.utils.data.Dataset` (or a plain list) of `(image, label)`
    pairs or of images alone, an image being a float tensor `3 x H x W` in $[0, 1]$, a uint8 array
    or a PIL image. A `classes` attribute names the labels; `class_parents` (child -> parent)
    adds a hierarchy.

    ## 2. A model from your own code

    Say your model is built by a function `build()` in a file `my_model.py`. We write such a file:
    a small CNN with named blocks, its weights saved to and read back from a local file, as you
    would with a trained model.
    """),
    code(r"""
    model_file = workdir / "my_model.py"
    model_file.write_text('''
    from collections import OrderedDict

    import torch
    from torch import nn


    def build(n_classes=10, weights=None):
        # A small CNN; weights: a state dict saved with torch.save(model.state_dict(), path).
        torch.manual_seed(0)
        model = nn.Sequential(OrderedDict(
            features=nn.Sequential(OrderedDict(
                conv1=nn.Conv2d(3, 16, kernel_size=5, padding=2), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(16, 32, kernel_size=3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
                conv3=nn.Conv2d(32, 32, kernel_size=3, padding=1), relu3=nn.ReLU(),
            )),
            head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, n_classes)),
        ))
        if weights is not None:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.eval()
    '''.lstrip())

    # Pretend training happened: save the weights to a local file.
    weights_file = workdir / "my_model_weights.pt"
    torch.save(nsi.zoo.load_factory(f"{model_file}:build", n_classes=len(folder_data.classes)).state_dict(), weights_file)
    """),
    md(r"""
    `nsi.zoo.load_factory("path/to/file.py:function")` imports the file and calls the function;
    extra arguments are passed on. `"package.module:function"` works for an installed package.
    The same string is what the command line takes (`nsi-widgets index my_model.py:build images/ ...`).
    If the file sits in the current folder, `"my_model.py:build"` is enough.
    """),
    code(r"""
    my_model = nsi.zoo.load_factory(f"{model_file}:build", n_classes=len(folder_data.classes), weights=weights_file)
    print(type(my_model).__name__, sum(p.numel() for p in my_model.parameters()), "parameters")
    """),
    md(r"""
    ## 3. Which layers? Names, or the modules themselves

    `nsi.list_layers(model)` lists every module's dotted name; `kind="conv"` keeps convolutions and
    the blocks around them. The index records a module's *output*: a bare `Conv2d` gives the
    pre-activation, so for the paper's rectified activations name the ReLU after it.
    """),
    code(r"""
    print("all:  ", nsi.list_layers(my_model))
    print("conv: ", nsi.list_layers(my_model, kind="conv"))
    """),
    code(r"""
    # A wrong name is an error that lists the valid ones.
    try:
        nsi.index_neurons(my_model, folder_data, layers=["features.conv9"], progress=False)
    except ValueError as error:
        print(str(error)[:300])
    """),
    md(r"""
    ## 4. Preprocessing

    The index works on images in RGB $[0, 1]$: crops, Neuron Features and thumbnails are always
    shown in pixel space. If your model expects normalised input (ImageNet statistics, say), pass
    a `preprocess` that maps a batch `(B, 3, H, W)` in $[0, 1]$ to the model's input. A per-pixel
    transform like this one keeps the fast computation of the colour index exact. We index the
    three ReLU outputs on the 60 images, with 10 top images per neuron.
    """),
    code(r"""
    MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


    def normalise(batch):
        return (batch - MEAN) / STD


    own_idx = nsi.index_neurons(my_model, folder_data, layers=["features.relu1", "features.relu2", "features.relu3"],
                                top_n=10, preprocess=normalise)
    own_idx
    """),
    code(r"""
    L = own_idx["features.relu2"]
    order = np.argsort(-np.nan_to_num(L.color_selectivity, nan=-np.inf))[:8]
    show_images(L.neuron_features[order], [f"unit {u}: α={L.color_selectivity[u]:.2f}" for u in order])
    """),
    md(r"""
    These weights are untrained (random, seeded), which makes a useful baseline: random
    convolutions already respond to colours and edges, so an index is best read against the same
    network before training.

    ## 5. Passing a module directly

    No file is needed when the model is already in your session: pass the `nn.Module` itself, and
    layers either by name or as the module objects.
    """),
    code(r"""
    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
            self.act = nn.ReLU()
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(8, 8, kernel_size=3, padding=1)
            self.act2 = nn.ReLU()

        def forward(self, x):
            return self.act2(self.conv2(self.pool(self.act(self.conv(x)))))


    tiny = TinyNet().eval()
    tiny_idx = nsi.index_neurons(tiny, folder_data, layers=[tiny.act, tiny.act2], top_n=10, progress=False)
    print(tiny_idx.layers)   # module objects are reported by their names
    tiny_idx.to_pandas().head()
    """),
    md(r"""
    ## 6. torchvision models (optional)

    With torchvision installed, `nsi.zoo.torchvision_model(name, weights_path=...)` builds a model
    by name and loads a **local** state dict (for example one you saved once with
    `torch.save(model.state_dict(), "vgg16.pt")` on a machine with internet access). Without
    `weights_path` the weights are random. Nothing is downloaded. The cells below skip cleanly
    when torchvision is missing.
    """),
    code(r"""
    try:
        import torchvision
        print("torchvision", torchvision.__version__)
    except ImportError:
        torchvision = None
        print("torchvision is not installed: the torchvision cells below are skipped "
              "(install the torchvision build that matches your torch to run them)")
    except RuntimeError as error:  # e.g. a CUDA build of torchvision next to a CPU build of torch
        torchvision = None
        print(f"torchvision is installed but does not load with torch {torch.__version__} ({error}); "
              "the torchvision cells below are skipped (install the matching torchvision build)")
    """),
    code(r"""
    # Point this at a state dict on your disk to index trained weights; random weights otherwise.
    ALEXNET_WEIGHTS = Path("~/models/alexnet.pt").expanduser()

    if torchvision is None:
        print("skipped: needs torchvision")
    else:
        weights = ALEXNET_WEIGHTS if ALEXNET_WEIGHTS.is_file() else None
        print("weights:", weights or "random (no local weights file found)")
        alexnet = nsi.zoo.torchvision_model("alexnet", weights_path=weights)
        print([name for name in nsi.list_layers(alexnet) if name.startswith("features.")])
        # The ReLUs after conv1 and conv2 are features.1 and features.4; 64 x 64 images are enough here.
        alexnet_idx = nsi.index_neurons(alexnet, folder_data, layers=["features.1", "features.4"],
                                        top_n=10, preprocess=normalise, progress=False)
        print(alexnet_idx)
    """),
    code(r"""
    # Receptive fields follow from the architecture: AlexNet's pool5 (features.12) sees 195 x 195
    # pixels with a stride of 32, the published value.
    if torchvision is None:
        print("skipped: needs torchvision")
    else:
        print(nsi.receptive_field(alexnet, "features.12", input_size=(224, 224)))
    """),
    md(r"""
    ## Clean up
    """),
    code(r"""
    shutil.rmtree(workdir)
    print("deleted", workdir)
    """),
]


# =============================================================================================
# 6. Projections to pixels (DeconvNet, guided backpropagation)
# =============================================================================================
PROJECTIONS = [
    md(r"""
    # Which pixels made a neuron fire? Projections back to the image

    The Neuron Feature of a unit shows the *average* of what its top images contain inside its
    receptive field. It does not say which pixels *inside* the crop mattered. A **projection**
    answers that, one image at a time: start from the unit's activation at one place of its
    feature map, keep that one value and zero every other, and go backwards through the network to
    the pixels.

    Three ways to go backwards, which differ only at the ReLUs (for a ReLU with forward input $x$
    and backward signal $g$ arriving from above):

    | method | at each ReLU | |
    |---|---|---|
    | `nsi.gradient` | $g \cdot [x > 0]$ | the plain gradient: how a small change of each pixel changes the activation |
    | `nsi.deconvnet` | $\mathrm{relu}(g)$ | Zeiler & Fergus 2014: rectify the backward signal, ignore where the forward was on |
    | `nsi.guided_backprop` | $\mathrm{relu}(g) \cdot [x > 0]$ | Springenberg et al. 2015: both conditions at once |

    Everything else goes back the same way for all three: a convolution as the transposed
    convolution with the same filters, a max pool by *unpooling with the forward switches* (the
    signal of each window goes back to the pixel that won the max), batch norm (eval mode) as its
    per-channel scale. Details: `docs/methods.md`, section 10.
    """),
    code(r"""
    import numpy as np
    import plotly.express as px
    import torch
    import torch.nn.functional as F
    from torch import nn

    import nsi_widgets as nsi
    from nsi_widgets.synthesis import projection_to_rgb, top_projections, projection_handler
    """, SHOW_IMAGES),
    md(r"""
    ## 1. Index the network

    The embedded default on 600 of its images, its two deepest conv layers, 20 top images per unit
    (the paper uses 100; fewer keeps the lesson quick), with the class selectivity index only. We
    look at the second deepest layer: its receptive field is smaller than the image, so we can see
    where it ends.
    """),
    code(r"""
    model, data = nsi.zoo.load("shapes", n=600)
    layers = nsi.zoo.conv_layers(model)[-2:]
    idx = nsi.index_neurons(model, data, layers=layers, top_n=20, indexes=("class",), progress=False)
    layer = layers[0]
    L = idx[layer]
    unit = int(np.nanargmax(L.class_selectivity))  # a unit with a clear preference
    print(L)
    print(f"unit {unit} of {layer}: receptive field {L.receptive_field.size}, class selectivity "
          f"{L.class_selectivity[unit]:.2f}, top class {data.classes[np.bincount(L.top_labels[unit]).argmax()]}")
    """),
    md(r"""
    ## 2. One image, three projections

    `nsi.guided_backprop(model, layer, unit, images)` takes a batch of RGB images in $[0, 1]$ and
    returns signed projections, `(B, H, W, 3)`. By default it starts where the unit's map is largest
    in each image (as the index does); `position=(y, x)` picks another place.

    **Colour mapping** (`projection_to_rgb`): each projection is divided by its largest absolute
    value, then `0.5 + 0.5 * p`: grey is 0, brighter than grey in a channel means "more of this
    colour here would raise the activation", darker means less. This is how Zeiler & Fergus show them.
    The white frame is the unit's receptive field at that position: every non-zero pixel lies inside it.
    """),
    code(r"""
    def framed(image, window):
        # An (H, W, 3) image with the receptive-field window drawn as a white frame (clipped to the image).
        image = np.array(image, dtype=np.float32)
        height, width = image.shape[:2]
        y0, x0, y1, x1 = window
        top, left, bottom, right = max(y0, 0), max(x0, 0), min(y1, height) - 1, min(x1, width) - 1
        image[top, left:right + 1] = image[bottom, left:right + 1] = 1.0
        image[top:bottom + 1, left] = image[top:bottom + 1, right] = 1.0
        return image


    first = int(L.top_indices[unit, 0])
    image = data[first][0]
    y, x = (int(v) for v in L.top_positions[unit, 0])
    window = L.receptive_field.window(y, x)
    projections = {name: fn(model, layer, unit, image[None])[0]
                   for name, fn in (("gradient", nsi.gradient), ("deconvnet", nsi.deconvnet),
                                    ("guided backprop", nsi.guided_backprop))}
    for name, p in projections.items():
        rows, cols = np.nonzero(np.abs(p).sum(-1))
        print(f"{name:>15}: non-zero pixels in rows {rows.min()}..{rows.max()}, columns {cols.min()}..{cols.max()}; "
              f"window {window}")
    show_images([framed(image.permute(1, 2, 0).numpy(), window)] + [framed(projection_to_rgb(p), window) for p in projections.values()],
                ["top image #0"] + list(projections), height=230)
    """),
    md(r"""
    The plain gradient is noisy: it also says where *less* of something would help. DeconvNet keeps
    only what the network's upper layers pass back as positive, and shows edges of everything the
    lower layers respond to, even where this unit was off. Guided backpropagation combines both
    conditions and gives the sharpest picture of what this unit used.

    ## 3. Top images, crops and projections, beside the Neuron Feature

    `top_projections(idx, model, layer, units)` projects each unit's top images from the place the
    index stored and cuts every projection to the receptive field there, the same window as the crop
    the index shows. It also averages them with the Neuron Feature's weights ($w_j = a_j / a_1$), so
    the **mean projection** can sit beside the **Neuron Feature**.
    """),
    code(r"""
    def rf_crop(image, receptive_field, y, x):
        # The input window seen by unit (y, x) as an (h, w, 3) array, zeros outside the image.
        y0, x0, y1, x1 = receptive_field.window(y, x)
        height, width = image.shape[-2:]
        crop = torch.zeros(3, y1 - y0, x1 - x0)
        top, left, bottom, right = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
        crop[:, top - y0:bottom - y0, left - x0:right - x0] = image[:, top:bottom, left:right]
        return crop.permute(1, 2, 0).numpy()


    units = [unit] + [int(u) for u in np.argsort(-L.top_activations[:, 0])[:2] if u != unit][:2]
    guided = top_projections(idx, model, layer, units, method="guided_backprop", n_images=16, progress=False)
    crops_rgb, mean_rgb = guided.rgb()
    images, titles = [], []
    for s, u in enumerate(units):
        images += [L.neuron_features[u], mean_rgb[s]]
        titles += [f"unit {u}: Neuron Feature", "mean projection"]
        for r in range(3):
            images += [rf_crop(data[int(L.top_indices[u, r])][0], L.receptive_field, *L.top_positions[u, r]),
                       crops_rgb[s, r]]
            titles += [f"crop #{r}", f"projection #{r}"]
    show_images(images, titles, height=600, wrap=8)
    """),
    md(r"""
    Read each row as: what the unit sees on average (Neuron Feature), which pixels drive it on
    average (mean projection), then pairs of a top crop and its projection. Where the Neuron Feature
    is a blurred blob, the projections often show the edge or corner of a shape that did the work.

    ## 4. Why not hook `nn.ReLU` modules?

    Libraries such as captum implement these rules by hooking `nn.ReLU` *modules*. A network that
    calls `F.relu` in its forward, does its ReLUs in place, or uses one ReLU module several times
    then silently gets the plain gradient or a wrong rule. nsi-widgets instead intercepts every ReLU
    *call* while the forward runs (a `TorchFunctionMode`), whatever its spelling. A check: the same
    weights with every `nn.ReLU` module replaced by a module that calls the in-place functional
    `F.relu_` give exactly the same projections.
    """),
    code(r"""
    class FunctionalReLU(nn.Module):
        def forward(self, x):
            return F.relu_(x)  # in place, functional: invisible to module hooks


    def with_functional_relus(network):
        # A copy of the network whose nn.ReLU modules are replaced by FunctionalReLU.
        import copy

        twin = copy.deepcopy(network)
        for parent in twin.modules():
            for name, child in parent.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(parent, name, FunctionalReLU())
        return twin.eval()


    twin = with_functional_relus(model)
    batch = torch.stack([data[int(i)][0] for i in L.top_indices[unit, :4]])
    for fn in (nsi.deconvnet, nsi.guided_backprop):
        same = np.array_equal(fn(model, layer, unit, batch), fn(twin, layer, unit, batch))
        print(f"{fn.__name__:>16}: nn.ReLU modules and in-place F.relu_ give identical projections: {same}")
    """),
    md(r"""
    ## 5. For the Explorer: an attachment, computed on demand

    The Explorer's neuron card can show these projections beside the crops. `to_attachment()` turns
    a result into an `Attachment` that `idx.attach` saves with the index (colour-mapped uint8 images
    plus each image's scale, so the signed values can be recovered). `projection_handler(index,
    model, data, layer, unit, progress_callback)` computes one unit on demand and returns such an
    attachment for that unit; `merge_projection_attachments` adds it to what is already attached.
    """),
    code(r"""
    from nsi_widgets.synthesis import merge_projection_attachments

    idx.attach("projections", guided.to_attachment(thumbnail_size=48))
    update = projection_handler(idx, model, None, layer, 0, lambda done, total: None)
    idx.attach("projections", merge_projection_attachments(idx.attachments["projections"], update))
    arrays = idx.attachments["projections"].arrays[layer]
    print("units with projections:", arrays["units"].tolist())
    print({name: (value.shape, str(value.dtype)) for name, value in arrays.items()})
    """),
    md(r"""
    In the Explorer, the card's top images get a toggle between the crops and their projections (grey
    is zero), and the mean projection stands beside the Neuron Feature. `nsi.default_compute(model,
    data)` gives the card its buttons: "Project top images" computes a unit that has none yet, in
    the background, and attaches it (`autosave=` saves the index after each computation).
    """),
    code(r"""
    nsi.Explorer(idx, layer=layer, unit=unit, compute=nsi.default_compute(model, data))
    """),
    md(r"""
    ## Exercises

    1. Project a unit of the deepest layer (`layers[1]`): how does the projection's support compare
       with its receptive field and with the image?
    2. Pick a position where the unit is off (`position=(0, 0)` in an image where the map is zero
       there). Which of the three methods still shows something, and why? (Answer: DeconvNet; its
       rule ignores the forward mask, so nothing stops the signal at the unit's own ReLU.)
    """),
]


# =============================================================================================
# 7. Feature visualisation by optimisation (docs/methods.md section 9)
# =============================================================================================
SYNTHESIS = [
    md(r"""
    # Feature visualisation: what a neuron wants, its facets, and what a layer keeps

    The index shows what *real* images excite a neuron: its top images and their average, the
    **Neuron Feature**. Feature visualisation asks the network directly, by optimising an image:

    1. **Activation maximisation**: the image that drives one unit as high as possible;
    2. **Multifaceted visualisation** (Nguyen, Yosinski, Clune 2016): the unit's top images fall into
       groups (facets); one synthesised image per facet, started from the facet's mean image;
    3. **Network inversion** (Mahendran & Vedaldi 2015): an image whose features at a layer match
       those of a given image: what the layer keeps, and what it throws away.

    The priors of the optimisation (colour decorrelation, amplitude spectrum) are computed from the
    images you give, here the embedded default's, not taken from ImageNet. Everything runs on a CPU
    in well under a minute.
    """),
    code(r"""
    import numpy as np
    import plotly.express as px
    import torch

    import nsi_widgets as nsi
    from nsi_widgets.synthesis import ATTACHMENT_NAME, image_statistics, inversion_figure, synthesise_unit

    torch.set_num_threads(1)
    model, data = nsi.zoo.load("shapes")
    layers = nsi.zoo.conv_layers(model)
    deepest = layers[-1]
    idx = nsi.index_neurons(model, data, layers=[deepest], top_n=30, indexes=(), progress=False)
    L = idx[deepest]
    print(deepest, L.n_units, "units,", int(L.dead.sum()), "dead; image size", data.image_size)
    """, SHOW_IMAGES),
    md(r"""
    ## 1. The priors come from your images

    `image_statistics(data)` measures the colour covariance of the pixels (its square root decorrelates
    the colours the optimiser changes) and the mean amplitude spectrum (it scales the Fourier
    coefficients the optimiser changes). lucid ships both for ImageNet; here they are the shapes'.
    """),
    code(r"""
    stats = image_statistics(data)
    print("mean colour", np.round(stats.mean, 3))
    print("colour matrix M (x - mean = M z)\n", np.round(stats.color_matrix, 3))
    f = np.fft.rfftfreq(stats.image_size[1])[1:]
    px.line(x=f, y=stats.spectrum[0, 1:], log_x=True, log_y=True, labels={"x": "cycles per pixel", "y": "amplitude"},
            title="Amplitude spectrum of the shapes (horizontal frequencies)").update_layout(height=300)
    """),
    md(r"""
    ## 2. Activation maximisation beside the Neuron Feature and the top image

    `nsi.visualize` optimises one image per unit, all units of a call in one batch. By default it
    maximises the unit at the **centre of the map** (the synthetic counterpart of the index's top
    activation, which is one position), with the Fourier parameterisation and lucid's random
    jitter, scale and rotation at each step. `.activations` is the objective on the final image;
    compare it with the best dataset image's activation.
    """),
    code(r"""
    units = [int(u) for u in np.flatnonzero(~L.dead)[:5]]
    v = nsi.visualize(model, deepest, units, decorrelate=stats, progress=False)
    for u, a in zip(units, v.activations):
        print(f"unit {u:2d}: synthesised {a:7.2f}   best dataset image {L.top_activations[u, 0]:6.2f}")
    images, titles = [], []
    for row, u in enumerate(units):
        top = data[int(L.top_indices[u, 0])][0].permute(1, 2, 0).numpy()
        images += [v.images[row], top]
        titles += [f"unit {u}: synthesised", f"unit {u}: top image"]
    show_images(images, titles, height=420, wrap=4)
    """),
    code(r"""
    nf = [np.clip(L.neuron_features[u], 0, 1) for u in units]
    show_images(nf, [f"unit {u}: Neuron Feature" for u in units], height=200)
    """),
    md(r"""
    The Neuron Feature is an **average of real crops**: blurry where the top images differ, sharp
    where they agree. The synthesised image shows what the unit **wants**, exaggerated: at this
    depth the receptive field is larger than the image, so the whole image is the unit's input.

    ## 3. How the settings change the picture

    One unit, the same seed and steps, six recipes: the Fourier parameterisation against pixels,
    without the random transformations, without the data's priors (lucid's 1/f spectrum, no colour
    decorrelation), and with total variation or a centre bias as an image prior.
    """),
    code(r"""
    unit = units[0]
    recipes = {
        "default (fft)": {},
        "pixels": {"param": "pixel"},
        "no transforms": {"transforms": "none"},
        "no data priors": {"decorrelate": None, "image_size": data.image_size},
        "total variation 2": {"regularizers": {"tv": 2.0}},
        "centre bias 20": {"regularizers": {"center": 20.0}},
    }
    # the data's priors unless a recipe says otherwise
    grid = {name: nsi.visualize(model, deepest, [unit], progress=False, **({"decorrelate": stats} | kw))
            for name, kw in recipes.items()}
    show_images([g.images[0] for g in grid.values()],
                [f"{name}: {g.activations[0]:.1f}" for name, g in grid.items()], height=230)
    """),
    md(r"""
    Pixels reach high activations with high-frequency patterns; the Fourier parameterisation and the
    transformations trade some activation for images with structure at the scale of the shapes.
    Each result keeps its **recipe** (every setting and the seed), so that it can be reproduced:
    """),
    code(r"""
    {k: grid["default (fft)"].recipe[k] for k in ("objective", "steps", "param", "transforms", "seed", "lr")}
    """),
    md(r"""
    ## 4. Facets: a unit that fires for more than one thing

    `nsi.facets` embeds the unit's top images in a code space (the deepest conv layer's averaged
    output), reduces it with PCA and clusters it with k-means; `k` is chosen by the silhouette when
    not given. Each facet gets its mean image (its members moved so that the unit's maximum is at
    the centre) and a visualisation started from it, with the paper's regularisers (normalised
    gradient steps, total-variation denoising between steps, a centre region that grows).
    """),
    code(r"""
    f = nsi.facets(model, data, idx, deepest, unit, progress=False)
    print(f, "silhouettes:", {k: round(s, 2) for k, s in f.silhouettes.items()})
    images, titles = [], []
    for j, members in enumerate(f.members):
        images += [f.mean_images[j], f.images[j]] + [data[int(i)][0].permute(1, 2, 0).numpy() for i in members[:2]]
        titles += [f"facet {j}: mean of {len(members)}", f"facet {j}: visualisation", "member", "member"]
    show_images(images, titles, height=230 * f.k, wrap=4)
    """),
    md(r"""
    ## 5. Network inversion: what each layer keeps

    `nsi.invert` looks for an image whose features at a layer equal those of the original
    (relative feature error), with Mahendran & Vedaldi's priors (an alpha-norm with a = 6 and total
    variation with b = 2). The first layer keeps nearly everything (high PSNR); the deepest keeps
    what the classifier needs: the reconstruction is still classified like the original, though it
    looks little like it.
    """),
    code(r"""
    originals = data.images([0, 1, 2, 3])
    inversions = {layer: nsi.invert(model, layer, originals, steps=150, progress=False)
                  for layer in (layers[0], layers[2], deepest)}
    with torch.no_grad():
        same = (model(torch.from_numpy(inversions[deepest].images).permute(0, 3, 1, 2)).argmax(1)
                == model(originals).argmax(1)).float().mean()
    print(f"reconstructions from {deepest} classified like the originals: {same:.0%}")
    inversion_figure(inversions, max_images=4)
    """),
    md(r"""
    ## 6. In the Explorer

    The neuron card shows a unit's synthesised image and facets. `synthesise_unit` computes both
    for one unit (the card calls it from a button) and returns the index's `"synthesis"`
    attachment, which is saved with the index file and exported with the page:
    """),
    code(r"""
    update = synthesise_unit(idx, model, data, deepest, unit, lambda fraction, message: None)
    idx.attach(ATTACHMENT_NAME, update)
    idx.to_pandas().query("unit == @unit")[["layer", "unit", "top_activation", "synthesis.am_activation",
                                             "synthesis.n_facets"]]
    """),
    md(r"""
    The card's "synthesised" section shows that image and the facets (mean image, visualisation,
    members: a click on a member shows it among the unit's top images). With
    `compute=nsi.default_compute(model, data)` its "Synthesise" button computes any other unit in the
    background, with progress, while the Explorer keeps answering.
    """),
    code(r"""
    nsi.Explorer(idx, layer=deepest, unit=unit, compute=nsi.default_compute(model, data))
    """),
]


# =============================================================================================
# 8. Reproduce the paper
# =============================================================================================
PAPER = [
    md(r"""
    # Reproduce the paper: how colour and classes are represented through the layers

    Rafegas, Vanrell, Alexandre and Arias (*Understanding trained CNNs by indexing neuron
    selectivity*, 2019) index every neuron of a network and then read the network layer by layer:
    how many neurons are **colour selective** and how many are **class selective** at each depth,
    and what their Neuron Features look like. Their findings on ImageNet networks: colour-selective
    neurons are found in every layer, not only the first; class selectivity grows with depth.

    Here we redo that analysis on the embedded default and, because it is synthetic, check each
    finding against what the images are known to contain (every image's colour, shape and
    background texture). Steps: index, the layer statistics table and its charts, the galleries of
    the most selective Neuron Features, the findings checked against ground truth, and the
    statistics as an HTML fragment for a report.
    """),
    code(r"""
    import numpy as np
    import pandas as pd
    import plotly.express as px
    from IPython.display import HTML

    import nsi_widgets as nsi
    from nsi_widgets.widgets.statistics import gallery_figure, means_figure, selectivity_figure, statistics_html
    """),
    md(r"""
    ## 1. Index every conv layer

    The default ShapesCNN on 2,400 images (10 per class), the paper's $N = 100$ top images per
    neuron, colour index with the PCA grey and class index with $\nu = 1$ (the engine's defaults).
    """),
    code(r"""
    model, data = nsi.zoo.load("shapes", n=2400)
    idx = nsi.index_neurons(model, data, layers=nsi.zoo.conv_layers(model), top_n=100)
    idx
    """),
    md(r"""
    ## 2. The layer statistics

    `nsi.layer_statistics(idx, thresholds=...)` gives one row per layer: units, dead units, the
    mean, median and spread of each index over the alive units, and the share of alive units whose
    index is at or above each threshold (`color>=0.25` is the share of units with
    $\alpha \ge 0.25$). The thresholds are choices to report; here three per index.
    """),
    code(r"""
    stats = nsi.layer_statistics(idx, thresholds={"color_selectivity": [0.1, 0.25, 0.5],
                                                  "class_selectivity": [0.5, 0.65, 0.8]})
    stats.round(3)
    """),
    code(r"""
    selectivity_figure(stats, "color_selectivity")
    """),
    code(r"""
    selectivity_figure(stats, "class_selectivity")
    """),
    code(r"""
    means_figure(stats)
    """),
    md(r"""
    ## 3. The most selective Neuron Features

    Per layer, the eight units with the highest index (ties: the stronger response first), their
    Neuron Features (the activation-weighted mean of the top crops) and the index value. The
    colour-selective ones are coloured blobs and edges; the class-selective ones in deep layers show
    a shape on a background.
    """),
    code(r"""
    gallery_figure(idx, "color_selectivity", per_layer=8)
    """),
    code(r"""
    gallery_figure(idx, "class_selectivity", per_layer=8)
    """),
    md(r"""
    ## 4. Finding 1: colour-selective neurons in every layer, checked against ground truth

    The paper's reading: a sizeable share of neurons is colour selective at every depth. On the
    default we can check what "colour selective" means from the images themselves. For each unit,
    from the ground truth of its top images: the **hue purity** (share of the most common of the
    seven chromatic colours) and the **achromatic share** (white, grey or black shapes, which
    greying leaves as they are). A colour-selective unit ($\alpha \ge 0.5$) should see one hue and
    few achromatic shapes; a colour-blind one ($|\alpha| < 0.15$) mixed hues and many achromatic
    shapes.
    """),
    code(r"""
    gt = data.ground_truth
    achromatic = np.isin(gt["color"], ["white", "grey", "black"])
    chromatic = [nsi.zoo.COLORS.index(c) for c in ("red", "orange", "yellow", "green", "cyan", "blue", "magenta")]
    rows = []
    for name in idx.layers:
        L = idx[name]
        purity = np.array([np.bincount(row, minlength=10)[chromatic].max() / len(row)
                           for row in gt["color_id"][L.top_indices]])
        achro = achromatic[L.top_indices].mean(axis=1)
        for unit in range(L.n_units):
            rows.append({"layer": name, "unit": unit, "alpha": float(L.color_selectivity[unit]),
                         "gamma": float(L.class_selectivity[unit]), "hue purity": purity[unit],
                         "achromatic share": achro[unit]})
    units = pd.DataFrame(rows)
    units["kind"] = np.select([units["alpha"] >= 0.5, units["alpha"].abs() < 0.15],
                              ["colour selective", "colour blind"], "between")
    check = (units[units["kind"] != "between"].groupby(["layer", "kind"], sort=False)
             [["hue purity", "achromatic share"]].mean().unstack("kind"))
    check.round(2)
    """),
    code(r"""
    assert (stats["color>=0.25"] > 0).all(), "a layer without colour-selective units"
    for name in idx.layers:
        row = check.loc[name]
        assert row[("hue purity", "colour selective")] > row[("hue purity", "colour blind")], name
        assert row[("achromatic share", "colour selective")] < row[("achromatic share", "colour blind")], name
    print("in every layer, colour-selective units see purer hues and fewer achromatic shapes")
    px.scatter(units, x="alpha", y="achromatic share", color="layer", hover_data=["unit"], opacity=0.7,
               title="Colour index against the share of achromatic shapes among the top images").update_layout(height=380)
    """),
    md(r"""
    ## 5. Finding 2: class selectivity grows with depth, checked against ground truth

    The mean class index per layer rises. In ground-truth terms: the deeper the layer, the fewer
    distinct (colour, shape, texture) combinations a unit's top images have, and the more of them
    share the unit's favourite shape.
    """),
    code(r"""
    means = stats["class_mean"].to_numpy()
    assert np.all(np.diff(means) > 0), means
    rows = []
    for name in idx.layers:
        L = idx[name]
        combos = [len(set(zip(gt["color"][t], gt["shape"][t], gt["background"][t]))) for t in L.top_indices]
        shape_purity = [np.bincount(gt["shape_id"][t], minlength=6).max() / len(t) for t in L.top_indices]
        rows.append({"layer": name, "mean class index": L.class_selectivity.mean(),
                     "distinct classes (M at nu = 1)": np.mean([len(np.unique(l)) for l in L.top_labels]),
                     "distinct colour x shape x texture": np.mean(combos), "shape purity": np.mean(shape_purity)})
    depth = pd.DataFrame(rows).set_index("layer")
    assert (depth["distinct classes (M at nu = 1)"] == depth["distinct colour x shape x texture"]).all()
    assert depth["shape purity"].iloc[-1] > depth["shape purity"].iloc[0]
    depth.round(3)
    """),
    md(r"""
    (The two "distinct" columns agree because a class *is* a colour x shape x texture combination:
    the check confirms that the labels match the images.)

    ## 6. The two indexes together

    Are class-selective units also colour selective? The paper looked at the joint distribution.
    Each point is a unit, one panel per layer.
    """),
    code(r"""
    fig = px.scatter(units, x="alpha", y="gamma", facet_col="layer", hover_data=["unit"], opacity=0.7,
                     labels={"alpha": "colour index", "gamma": "class index"},
                     title="Colour against class selectivity per layer")
    fig.update_layout(height=330)
    """),
    code(r"""
    print("correlation of the colour and class indexes per layer:")
    print(units.groupby("layer", sort=False)[["alpha", "gamma"]].corr().xs("alpha", level=1)["gamma"].round(2).to_string())
    """),
    md(r"""
    ## 7. For the report

    `statistics_html(idx)` gives the table, the charts (inline SVG) and the galleries (inline PNG)
    as one self-contained HTML fragment: no script, nothing to download, so it can go into an
    exported report or any page.
    """),
    code(r"""
    fragment = statistics_html(idx, per_layer=6)
    external = fragment.count('src="http') + fragment.count('href="http')
    print(f"{len(fragment) / 1024:.0f} KB, scripts: {fragment.count('<script')}, external files: {external}")
    HTML(fragment)
    """),
    md(r"""
    ## Exercises

    **Exercise 1.** Recompute the statistics with a stricter colour threshold (0.75). In which
    layer is the share of strongly colour-selective units largest?
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer
    strict = nsi.layer_statistics(idx, thresholds={"color_selectivity": 0.75})
    print(strict["color>=0.75"].round(3).to_string())
    print("largest share:", strict["color>=0.75"].idxmax())
    """),
    md(r"""
    **Exercise 2.** Take the most colour-selective unit of `conv5`. Which colour dominates its top
    images, and in how many of them?
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer
    L5 = idx["conv5"]
    unit = int(np.nanargmax(L5.color_selectivity))
    colours = pd.Series(gt["color"][L5.top_indices[unit]]).value_counts()
    print(f"conv5 unit {unit} (alpha = {L5.color_selectivity[unit]:.2f}): {colours.index[0]} in {colours.iloc[0]} "
          f"of {L5.top_n} top images")
    """),
]

# =============================================================================================
# Generator priors (PPGN) and learned inversion: the three ways of synthesis side by side
# =============================================================================================
GENERATOR = [
    md(r"""
    # Three ways to synthesise what a neuron wants: pixels, facets, a generator prior

    Feature visualisation optimises an image. *Where* it optimises decides what comes out:

    1. **Pixel-space activation maximisation** (`nsi.visualize`): every pixel is free; hand-made priors
       (colour decorrelation, spectrum, jitter) keep it from becoming noise. Images are exaggerated,
       often unlike any real image.
    2. **Facets** (`nsi.facets`): start from the mean of one group of the unit's top images, so each
       kind of image the unit likes gets its own picture.
    3. **A generator prior** (Plug & Play Generative Networks, Nguyen et al. 2017; `nsi.ppgn`): optimise
       the *latent code* `h` of a generator `G` trained on real images. Each step moves `h` by
       $\epsilon_1 (R(h) - h) + \epsilon_2 \nabla_h \log p(y \mid G(h)) + \epsilon_3\, n$:
       a denoising autoencoder `R` on the codes pulls `h` towards codes of real images, the model's
       gradient through `G` pulls towards the class (or unit), the noise explores. The result looks
       like data, because `G` can only draw what it has learned.

    The embedded default ships a small `G`, an encoder `E` (image -> code) and `R`, trained on its
    images (`nsi.zoo.load_generator("shapes")`; docs/zoo.md, "Generator prior"), and a second one,
    `"shapes-structured"`, whose codes are the default's generative factors (used for classes below).
    `G(E(x))` is also a **learned inversion**: a one-shot reconstruction, next to the optimisation-based
    one.
    """),
    code(r"""
    import numpy as np
    import pandas as pd
    import plotly.express as px
    import torch

    import nsi_widgets as nsi
    from nsi_widgets.synthesis import FacetOptions, gallery_figure, inversion_figure, learned_inversion

    torch.set_num_threads(1)
    model, data = nsi.zoo.load("shapes", n=600)
    gp = nsi.zoo.load_generator("shapes")
    print(gp, "| training:", gp.report["seconds"], "s on one thread")
    deepest = nsi.zoo.conv_layers(model)[-1]
    idx = nsi.index_neurons(model, data, layers=[deepest], top_n=20, indexes=(), progress=False)
    L = idx[deepest]
    """, SHOW_IMAGES),
    md(r"""
    ## 1. Learned inversion beside optimisation-based inversion

    `nsi.invert(model, "conv3", x)` searches for an image whose conv3 features match those of `x`
    (hundreds of gradient steps per image). `learned_inversion(gp, x)` is one pass, `G(E(x))`: what
    the generator's 64 numbers keep of the image. PSNR (dB) under each image; the feature error of
    `G(E(x))` at conv3 tells how close it is for the model.
    """),
    code(r"""
    originals = data.images([0, 1, 2, 3, 4, 5])
    optimised = nsi.invert(model, "conv3", originals, steps=60, progress=False)
    learned = learned_inversion(gp, originals, model=model, layer="conv3")
    print(f"conv3 feature error: optimised {np.median(optimised.feature_error):.3f}, "
          f"G(E(x)) {np.median(learned.feature_error):.3f}")
    inversion_figure({"conv3 (optimised, 60 steps)": optimised, "G(E(x)) (one pass)": learned}, max_images=6,
                     title="Inversion: optimised from conv3 features vs learned (generator and encoder)")
    """),
    md(r"""
    ## 2. One unit, three ways

    A unit of the deepest layer: its top image, its pixel-space visualisation, the visualisation of
    its largest facet, and PPGN samples. The number under each image is the unit's activation (its
    map maximum for PPGN, the map centre for the others). For units PPGN takes a weaker prior and
    larger steps than for classes (`eps1=0.1, lr=0.2, steps=200`, docs/methods.md section 10).
    """),
    code(r"""
    unit = int(np.flatnonzero(~L.dead)[3])
    pixel = nsi.visualize(model, deepest, [unit], steps=48, decorrelate=data, progress=False)
    facet = nsi.facets(model, data, idx, deepest, unit, k=2, options=FacetOptions(steps=24), progress=False)
    samples = nsi.ppgn(model, gp, (deepest, unit), n=3, steps=200, lr=0.2, eps1=0.1, progress=False)
    top = data[int(L.top_indices[unit, 0])][0].permute(1, 2, 0).numpy()
    images = [top, pixel.images[0], facet.images[0], *samples.images]
    titles = [f"top image {L.top_activations[unit, 0]:.1f}", f"pixel AM {pixel.activations[0]:.1f}",
              f"facet 1 {facet.activations[0]:.1f}"] + [f"PPGN {a:.1f}" for a in samples.values]
    show_images(images, titles, height=220)
    """),
    md(r"""
    ## 3. A class gallery

    The condition can be a class: `nsi.ppgn(model, generator, target=c)` with $\log p(c \mid G(h))$ as
    the condition. For classes we use the second shipped generator, `"shapes-structured"`: its 64
    numbers are the default's generative factors (shape kind, pose, colours, texture kind...), so every
    image it draws is an image of the default's kind, never an adversarial pattern. Its shape and
    texture kinds are discrete, which a gradient seldom finds from one start, so each sample runs 24
    chains of 20 steps and keeps the one the condition likes best (`CLASS_OPTIONS`, docs/methods.md
    section 10b, "Restarts"). The second shipped model (`resnet`, trained independently, not used for
    the choice) reads each sample: a sample that only fools the condition model would not convince it.
    """),
    code(r"""
    from nsi_widgets.synthesis.ppgn import CLASS_OPTIONS

    structured = nsi.zoo.load_generator("shapes-structured")
    classes = list(range(3, 240, 30))
    gallery = nsi.ppgn(model, structured, classes, progress=False, **CLASS_OPTIONS)
    resnet = nsi.zoo.load_model("resnet")
    with torch.no_grad():
        read = resnet(torch.from_numpy(gallery.images).permute(0, 3, 1, 2)).argmax(1).numpy()
    labels = [f"{data.classes[c]}<br>resnet: {'yes' if r == c else data.classes[r]}" for c, r in zip(classes, read)]
    print(f"the second model agrees for {np.mean(read == classes):.0%}")
    gallery_figure(gallery.images, labels, columns=4, tile=150, title="PPGN samples of eight classes")
    """),
    md(r"""
    Each sample's 24 chains end at different values of $\log p(c \mid G(h))$ (`chain_values`): most
    starts settle on another shape or texture kind, a few find the class. The kept chain's history:
    """),
    code(r"""
    chains = pd.DataFrame(gallery.chain_values.astype(float), index=[data.classes[c] for c in classes])
    print(chains.iloc[:, :8].round(1).to_string())
    px.line(gallery.history, labels={"index": "step", "value": "log p(class | G(h))", "variable": "sample"},
            title="The condition during sampling (the kept chains)").update_layout(height=280)
    """),
    md(r"""
    ## 4. What the prior does

    With $\epsilon_1 = 0$ the prior term is off (DGN-AM, the method PPGN extends). The codes then drift
    away from those of real images: $\|R(h) - h\|$, how far the denoiser would move them, grows.
    """),
    code(r"""
    def prior_gap(generator, latents):
        h = torch.from_numpy(latents)
        with torch.no_grad():
            return float((generator.prior(h) - h).norm(dim=1).median())

    with_prior = nsi.ppgn(model, gp, classes, steps=60, progress=False)
    without = nsi.ppgn(model, gp, classes, steps=60, eps1=0.0, progress=False)
    print(f"median ||R(h) - h||: with the prior {prior_gap(gp, with_prior.latents):.3f}, "
          f"without {prior_gap(gp, without.latents):.3f}")
    show_images(list(without.images[:4]) + list(with_prior.images[:4]),
                [f"eps1 = 0: {data.classes[c]}" for c in classes[:4]] + [f"prior: {data.classes[c]}" for c in classes[:4]],
                height=380, wrap=4)
    """),
    md(r"""
    These are samples of the convolutional generator `gp`, which can draw more than the default's
    images: with the prior its class samples satisfy the condition model, but the second model reads
    few of them (5 % over all classes, docs/methods.md section 10b): that is why the gallery above uses
    the structured generator.

    ## Exercise

    Sample one class with the structured generator and noise in the steps (`eps3=1.0`), four samples
    (`n=4`): do the samples differ more from each other than without noise? Which attribute (colour,
    shape, texture) varies most?
    """),
    code(r"""
    # Answer
    noisy = nsi.ppgn(model, structured, classes[0], n=4, eps3=1.0, progress=False, **CLASS_OPTIONS)
    quiet = nsi.ppgn(model, structured, classes[0], n=4, progress=False, **CLASS_OPTIONS)
    spread = lambda s: float(np.std(s.images, axis=0).mean())
    print(f"{data.classes[classes[0]]}: mean pixel std across 4 samples {spread(noisy):.3f} with noise, "
          f"{spread(quiet):.3f} without")
    show_images(list(noisy.images), [f"sample {i}" for i in range(4)])
    """),
]


# =============================================================================================
# 9. Network Dissection
# =============================================================================================
DISSECTION = [
    md(r"""
    # Network Dissection: a concept label for every unit

    The Neuron Feature shows *what* a unit's top images look like; Network Dissection (Bau, Zhou,
    Khosla, Oliva, Torralba 2017) answers "what is this unit about?" with a number. It needs images
    where concepts are marked pixel by pixel: the embedded default has exact masks for 21 concepts in
    4 categories (6 shape kinds, 10 colours, 4 background textures, and the background).

    For every unit $k$ of a layer:

    1. its threshold $T_k$ is the top 0.5 % of its activations over all positions of all images;
    2. its map, upsampled to the mask size (aligned with its receptive fields), is cut at $T_k$:
       $M_k = \mathrm{up}(A_k) > T_k$;
    3. its IoU with concept $c$ is $\sum |M_k \cap L_c| \,/\, \sum |M_k \cup L_c|$ over the dataset;
    4. it is a *detector* of its best concept when that IoU exceeds 0.04.

    Details (the quantile rule, the alignment, the two counting conventions): `docs/methods.md`, section 7.
    """),
    code(r"""
    import numpy as np
    import pandas as pd
    import plotly.express as px
    import torch

    import nsi_widgets as nsi
    from nsi_widgets.concepts.dissection_views import add_pictures, dissection_pictures
    from nsi_widgets.widgets import dissection as dv

    torch.set_num_threads(1)
    """, SHOW_IMAGES),
    md(r"""
    ## 1. Dissect every conv layer of the default

    `zoo.load_concepts("shapes", n=...)` gives items `(image, masks)`, the masks bool `(21, 64, 64)`,
    with `.concepts` and `.concept_categories`. Two passes over it (one for the thresholds, one for
    the IoUs); only the first runs the network: it keeps, with each unit's largest values, where they
    are and the map values around them, which is all the IoU pass needs besides the masks.
    """),
    code(r"""
    model = nsi.zoo.load_model("cnn")
    layers = nsi.zoo.conv_layers(model)
    concepts = nsi.zoo.load_concepts("shapes", n=500)
    print(concepts)
    result = nsi.dissect(model, concepts, layers, progress=False)
    summary = result.summary()
    summary.pivot(index="layer", columns="category", values="detectors").loc[layers, list(dict.fromkeys(concepts.concept_categories))]
    """),
    md(r"""
    Detector units per layer and category (rows: layers; a unit counts for the category of its best
    concept). The chart stacks them; `count="unique_concepts"` counts distinct concepts instead, as
    NetDissect's papers do.
    """),
    code(r"""
    dv.detector_chart(result, count="detectors")
    """),
    md(r"""
    Colours are detected from the first layer on: conv1 sees 3x3 pixels, exactly the scale at which
    a colour is visible and a shape is not. Shape detectors appear only in the deepest layers, whose
    receptive fields cover whole shapes. No unit detects a background texture: a unit firing on the
    background of grainy images would have to cover a fifth of all pixels, far more than its 0.5 %.

    ## 2. Checked against what we know

    The images are generated, so the colour of each shape is known. A colour detector's top images
    (those where its map is largest) should show shapes of its colour; the colour index of the paper
    (alpha: how much the unit loses when its top images turn grey) should be high for it.
    """),
    code(r"""
    data = nsi.zoo.make_shapes(600, seed=nsi.zoo.INDEX_SEED)
    idx = nsi.index_neurons(model, data, layers, top_n=20, indexes=("color",), progress=False)
    rows = []
    for layer in layers[:3]:
        for unit, name in enumerate(result[layer].best_concept_names):
            if name in nsi.zoo.COLORS:
                top_colours = data.ground_truth["color"][idx[layer].top_indices[unit]]
                rows.append({"layer": layer, "unit": unit, "concept": name,
                             "IoU": round(float(result[layer].best_iou[unit]), 3),
                             "top 20 images of that colour": int((top_colours == name).sum()),
                             "colour index": round(float(idx[layer].color_selectivity[unit]), 2)})
    colour_detectors = pd.DataFrame(rows)
    everyone = np.concatenate([idx[layer].color_selectivity for layer in layers[:3]])
    print(f"{len(colour_detectors)} colour detectors in {layers[:3]}; median share of their top images in their "
          f"colour: {colour_detectors['top 20 images of that colour'].median() / 20:.0%}; median colour index "
          f"{colour_detectors['colour index'].median():.2f} (all units of these layers: {np.nanmedian(everyone):.2f})")
    colour_detectors.head(10)
    """),
    md(r"""
    The top images here are the index's (other images than the concept set's): most show a shape of
    the detector's colour, and colour detectors have a higher colour index than the layers'
    units overall. Where they disagree, look at the unit: a "black" detector may fire on any dark
    pixel, of a black shape or of a dark background.

    ## 3. NetDissect's picture: the thresholded map over the image, beside the mask

    For a unit's top images, the image dimmed outside $M_k$ (what the unit marks) beside the image
    dimmed outside the mask of its best concept. Summed over all images, the overlap of the two is
    exactly what the IoU counted.
    """),
    code(r"""
    def dimmed(rgb, region, dim=0.25):
        return rgb / 255.0 * np.where(region, 1.0, dim)[..., None]


    layer = "conv1"
    L = result[layer]
    detectors = [u for u, name in enumerate(L.best_concept_names) if name is not None]
    pictures = dissection_pictures(model, concepts, result, layer, detectors, n_images=3)
    unit = int(np.argmax(L.best_iou))
    row = detectors.index(unit)
    concept = L.concepts[int(pictures.concepts[row])]
    images, titles = [], []
    for col in range(3):
        images += [dimmed(pictures.rgb[row, col], pictures.maps[row, col]),
                   dimmed(pictures.rgb[row, col], pictures.masks[row, col])]
        titles += [f"image {pictures.images[row, col]}: unit", f"'{concept}' mask"]
    print(f"{layer} unit {unit}: best concept {concept!r} ({L.categories[L.concepts.index(concept)]}), IoU {L.best_iou[unit]:.3f}")
    show_images(images, titles, height=200)
    """),
    md(r"""
    ## 4. In the Explorer

    Attached to an index, the dissection appears in the Explorer: the grid can show, filter and sort
    by each unit's best concept and its IoU; the card lists the unit's top concepts with IoU bars,
    the pictures above (once computed; here for the detectors of conv1), and the best concept
    as a *suggested* label in the annotation editor (accepting it writes an ordinary annotation whose
    note says it came from dissection).
    """),
    code(r"""
    attachment = add_pictures(result.to_attachment(), pictures)
    idx.attach("dissection", attachment)
    print(idx.to_pandas()[["layer", "unit", "dissection.best_concept", "dissection.best_iou"]].head())
    nsi.Explorer(idx, layer="conv1")
    """),
]


# =============================================================================================
# Concept vectors (Net2Vec, TCAV) and the comparison of layers and models (docs/methods.md section 8)
# =============================================================================================
CONCEPT_VECTORS = [
    md(r"""
    # Concept vectors: Net2Vec and TCAV on the embedded default

    A *concept vector* is a direction in a layer's space of units that stands for a human concept
    ("circle", "red", "grainy background"). Two classic ways to find one:

    - **Net2Vec** (Fong & Vedaldi 2018): a linear *segmentation* probe per concept, a weight per unit,
      trained so that the weighted sum of the layer's maps marks the concept's pixels. Its finding:
      a concept is usually spread over several units, so the combination segments it better than
      the best single unit (the unit Network Dissection would name).
    - **TCAV** (Kim et al. 2018): a linear *classifier* of concept images against random images; its
      normal is the concept activation vector (CAV). The TCAV score of a class is the share of the
      class's images whose logit rises along the CAV, tested against CAVs of random images.

    The embedded default knows the truth: every image comes with exact masks of its shape, colour
    and background texture (`nsi.zoo.load_concepts`), and every class is a colour x shape x texture.
    Definitions and choices: `docs/methods.md` section 8.
    """),
    code(r"""
    import numpy as np
    import pandas as pd
    import plotly.express as px
    import torch

    import nsi_widgets as nsi
    from nsi_widgets import zoo

    model = zoo.load_model("cnn")                           # the trained ShapesCNN
    concepts = zoo.load_concepts("shapes", n=600, seed=4)   # images with 21 concept masks each
    print(len(concepts), "images;", len(concepts.concepts), "concepts:", dict(zip(concepts.concepts,
                                                                                   concepts.concept_categories)))
    """),
    md(r"""
    ## 1. Net2Vec in the deepest conv layer

    `nsi.concept_vectors(model, concepts, "conv5")` fits one probe per concept on 75 % of the images
    and measures its set IoU on the other 25 %; beside it, each concept's **best single unit**: every
    unit's map thresholded at Network Dissection's rule (the top 0.5 % of its activations), its IoU
    on the same held-out images.
    """),
    code(r"""
    cv = nsi.concept_vectors(model, concepts, "conv5", progress=False)
    table = cv.to_pandas()[["concept", "category", "quality", "best_unit", "best_unit_iou", "beats_best_unit",
                            "top_units"]]
    table.round(3)
    """),
    code(r"""
    long = table.melt(id_vars=["concept", "category"], value_vars=["quality", "best_unit_iou"],
                      var_name="probe", value_name="held-out IoU")
    long["probe"] = long["probe"].map({"quality": "Net2Vec combination", "best_unit_iou": "best single unit"})
    fig = px.bar(long, x="concept", y="held-out IoU", color="probe", barmode="group", height=360,
                 title="conv5: Net2Vec's combination of units against the best single unit")
    fig
    """),
    code(r"""
    shapes = table[table["category"] == "shape"]
    print(f"the combination beats the best unit for {shapes['beats_best_unit'].sum()} of {len(shapes)} shape "
          f"concepts and {table['beats_best_unit'].sum()} of {len(table)} concepts")
    """),
    md(r"""
    A concept's vector is a weight per unit: its largest weights are the units that carry it most
    (attached to an index with `idx.attach("net2vec", cv.to_attachment())`, they show on the units'
    cards in the Explorer and as columns of `idx.to_pandas()`).
    """),
    code(r"""
    print("units weighing most in 'circle':", cv.top_units("circle", 5))
    print("units weighing most in 'grain':", cv.top_units("grain", 5))
    """),
    md(r"""
    ## 2. TCAV: does "red" matter to the red classes?

    **Which layer.** The ShapesCNN ends with global average pooling and one linear layer, so the
    gradient of a class logit with respect to `conv5`'s maps is `fc.weight[c] / (h w)` at every
    position of *every* image: the directional derivative along any CAV has the same sign for all
    images and every run scores 0 or 1. Checked here by autograd:
    """),
    code(r"""
    images = torch.stack([concepts[i][0] for i in range(3)])
    for layer in ("conv5", "conv4"):
        kept = []
        module = dict(model.named_modules())[layer]
        handle = module.register_forward_hook(lambda m, i, o: kept.append(o) or o.retain_grad())
        model(images.clone().requires_grad_(True))[:, 17].sum().backward()
        handle.remove()
        g = kept[0].grad.sum(dim=(2, 3))                   # (3 images, channels)
        print(f"{layer}: largest difference between the images' gradients {float((g - g[0]).abs().max()):.4f}")
    """),
    md(r"""
    So we test at `conv4`, whose gradient passes through `conv5`'s ReLUs and `pool4`'s maxima and
    differs from image to image. The concept "red": the concept images with a red shape; the
    random images: any concept images. 10 concept runs against 10 random-versus-random runs, a
    two-sided t-test per class, every class of the model with 4 images each.
    """),
    code(r"""
    _, labelled = zoo.load("shapes", n=960, seed=3)                 # 4 images per class
    red = nsi.tcav(model, "conv4", "red", data=labelled, concept_data=concepts, n_runs=10,
                   max_target_images=4, progress=False)
    result = red.to_pandas()
    result["colour"] = [labelled.class_hierarchies["colour"][name] for name in result["class_name"]]
    result["verdict"] = np.select([result["significant"] & (result["direction"] > 0),
                                   result["significant"] & (result["direction"] < 0)],
                                  ["raises", "lowers"], "not significant")
    print(f"CAV held-out accuracy {result['cav_accuracy'].iloc[0]:.3f}")
    pd.crosstab(result["colour"], result["verdict"]).loc[list(zoo.COLORS)]
    """),
    code(r"""
    fig = px.strip(result, x="colour", y="score", color="verdict", hover_name="class_name", height=380,
                   category_orders={"colour": list(zoo.COLORS)},
                   title="TCAV score of 'red' at conv4 for each of the 240 classes")
    fig.add_hline(y=float(result["random_score"].mean()), line_dash="dot",
                  annotation_text="mean score of random CAVs")
    fig
    """),
    md(r"""
    Read it as TCAV means it: "red" raises every red class (score near 1). The test is two-sided,
    so most classes of other colours come out *significant with a score near 0*: red **lowers**
    them, which is right for a model that must tell a red star from a blue one. Red's hue
    neighbour magenta is raised for part of its classes (the red direction is partly its), and some
    classes of other colours show positive sensitivities of the model itself: significance says
    "not zero", the score says how much. `tests/test_concepts_on_default.py` checks this with 8
    images per class (all 24 red classes raised; of the 168 classes of the colours that are not
    red's hue neighbours, 3 % raised).

    ## 3. A random "concept" and the accuracy floor

    100 images picked at random, called a concept: the layer cannot tell them from other random
    images, so the CAV is noise. Yet the t-test alone would find many "significant" classes: a
    noise CAV is a fixed direction, and its scores vary less between runs than the null's. A
    concept counts as significant only when its classifiers reach a held-out accuracy of 0.7
    (`accuracy_floor`):
    """),
    code(r"""
    chosen = np.random.default_rng(9).choice(len(concepts), 100, replace=False)
    noise = nsi.tcav(model, "conv4", [concepts[int(i)][0] for i in chosen], data=labelled,
                     random_data=concepts, n_runs=10, max_target_images=4, progress=False)
    print(f"classifier accuracy {np.mean(noise.accuracies):.3f} (random: 0.5)")
    print(f"p < 0.05 for {(noise.p_values < 0.05).mean():.0%} of the classes; significant with the floor: "
          f"{noise.significant.mean():.0%}")
    """),
    md(r"""
    ## Exercises

    **Exercise 1.** Run TCAV of "red" at `conv5` for the 24 red classes and look at the single
    runs' scores (`.scores`, one per class and run, and `.random_scores`). What values do they
    take, and why?
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer
    red_classes = [name for name in labelled.classes if labelled.class_hierarchies["colour"][name] == "red"]
    deepest = nsi.tcav(model, "conv5", "red", red_classes, data=labelled, concept_data=concepts, n_runs=10,
                       max_target_images=4, progress=False)
    print("values of the concept runs' scores:", np.unique(deepest.scores))
    print("values of the random runs' scores:", np.unique(deepest.random_scores))
    # every image of a class has the same gradient at conv5 (global average pooling + linear head),
    # so a run's score is 0 or 1: the share of 4 images that all agree
    """),
]


COMPARING = [
    md(r"""
    # Comparing layers and models: do two architectures learn the same concepts at the same depth?

    Mikriukov, Schwalbe, Hellert and Bade (2023, *Revealing similar semantics inside CNNs*) compare
    the layers of different networks through their concept vectors and find that similar concepts
    are learned whatever the architecture, at similar **relative depth**. Here we ask the same of
    the embedded default's two independently trained models, the VGG-like `ShapesCNN` (five conv
    layers) and the `ShapesResNet` (a stem and four residual blocks), with three measures
    (`nsi.layer_similarity`, `docs/methods.md` section 8):

    - **CKA** (Kornblith et al. 2019, debiased, over minibatches): concept-free, how alike the two
      layers' representations of the same images are;
    - **TCAV**: per concept, the correlation over held-out images of the two layers' concept scores
      (each image's features projected on the concept's CAV), averaged over concepts both layers
      can separate;
    - **Net2Vec**: per concept, the IoU of the two layers' concept masks on held-out images.
    """),
    code(r"""
    import numpy as np
    import pandas as pd

    import nsi_widgets as nsi
    from nsi_widgets import zoo
    from nsi_widgets.widgets.similarity import SimilarityExplorer, concept_quality_chart, similarity_heatmap

    cnn, resnet = zoo.load_model("cnn"), zoo.load_model("resnet")
    layers_cnn, layers_resnet = zoo.conv_layers(cnn), zoo.conv_layers(resnet)
    concepts = zoo.load_concepts("shapes", n=600, seed=4)
    print(layers_cnn, layers_resnet)
    """),
    md(r"""
    ## 1. CKA within one model

    One model against itself: a layer is most like its neighbours, and the similarity falls off
    with the distance in depth. The matrix is symmetric with ones on its diagonal.
    """),
    code(r"""
    within = nsi.layer_similarity(cnn, concepts, layers_cnn, method="cka", progress=False)
    similarity_heatmap(within, labels=("ShapesCNN", "ShapesCNN"), title="CKA between the ShapesCNN's layers")
    """),
    md(r"""
    ## 2. CKA across the two models, by relative depth

    With `relative_depth=True` each layer sits at `(i + 1) / n`; the paper's finding says the high
    values should lie along the dotted diagonal.
    """),
    code(r"""
    across = nsi.layer_similarity(cnn, concepts, layers_cnn, resnet, layers_resnet, method="cka", progress=False)
    similarity_heatmap(across, relative_depth=True, labels=("ShapesCNN", "ShapesResNet"),
                       title="CKA: ShapesCNN x ShapesResNet")
    """),
    code(r"""
    def depth_gaps(similarity):
        best = similarity.best_matches()
        best["gap"] = (best["depth_a"] - best["depth_b"]).abs()
        chance = np.abs(similarity.depth_a[:, None] - similarity.depth_b[None, :]).mean()
        print(f"{similarity.method}: mean relative-depth gap of the best matches {best['gap'].mean():.2f} "
              f"(a random match: {chance:.2f})")
        return best.round(3)


    depth_gaps(across)
    """),
    md(r"""
    ## 3. Concept by concept: TCAV, in the SimilarityExplorer

    The concept measure fits a CAV per concept in every layer of each model on 75 % of the images,
    then compares the layers' concept scores on the other 25 %. Click a cell to see which concepts
    agree in that pair of layers (grey bars: concepts one of the two layers cannot separate,
    left out of the mean).
    """),
    code(r"""
    by_concepts = nsi.layer_similarity(cnn, concepts, layers_cnn, resnet, layers_resnet, method="tcav",
                                       progress=False)
    explorer = SimilarityExplorer(by_concepts, relative_depth=True, labels=("ShapesCNN", "ShapesResNet"))
    explorer.select("conv4", "block3")          # what a click on that cell does
    explorer
    """),
    code(r"""
    depth_gaps(by_concepts)
    """),
    md(r"""
    ## 4. Where each concept emerges

    Each concept's CAV accuracy through relative depth, per model (the mean of each category):
    colours are separable from the first layers, shapes only deeper, in both architectures.
    """),
    code(r"""
    concept_quality_chart(by_concepts, by="category", labels=("ShapesCNN", "ShapesResNet"))
    """),
    md(r"""
    ## What we found

    For every measure each ShapesCNN layer's most similar ShapesResNet layer lies at a similar
    relative depth: the first layers match each other, the deepest the deepest, in depth order
    (measured on 600 images: mean gap CKA 0.08, TCAV 0.04, Net2Vec 0.04, against 0.32 for a random
    match; `tests/test_concepts_on_default.py`). So the paper's finding holds on the default. The
    Net2Vec measure (`method="net2vec"`) fits a segmentation probe per concept and layer and takes
    longer, so the exercise runs it on fewer images.

    ## Exercises

    **Exercise 1.** Compare every other layer of the two models (`conv1, conv3, conv5` against
    `stem, block2, block4`) with the Net2Vec measure on 200 images. Do its best matches lie at
    similar relative depths too?
    """),
    code(r"""
    # your answer here
    """),
    code(r"""
    # Answer
    few = zoo.load_concepts("shapes", n=200, seed=4)
    maps = nsi.layer_similarity(cnn, few, layers_cnn[::2], resnet, layers_resnet[::2], method="net2vec",
                                progress=False)
    depth_gaps(maps)
    """),
]


NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "quickstart": QUICKSTART,
    "colour_selectivity": COLOUR,
    "class_selectivity": CLASS,
    "annotating_neurons": ANNOTATING,
    "own_model_and_images": OWN,
    "projections": PROJECTIONS,
    "feature_visualisation": SYNTHESIS,
    "generator_priors": GENERATOR,
    "reproduce_the_paper": PAPER,
    "network_dissection": DISSECTION,
    "concept_vectors": CONCEPT_VECTORS,
    "comparing_layers": COMPARING,
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (a key of :data:`NOTEBOOKS`), without outputs, with stable cell ids.

    Parameters
    ----------
    name : str

    Returns
    -------
    nbformat.NotebookNode
    """
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = {"name": "python"}
    for number, (kind, source) in enumerate(NOTEBOOKS[name]):
        cell = (nbformat.v4.new_markdown_cell(source) if kind == "markdown"
                else nbformat.v4.new_code_cell(source))
        cell["id"] = f"{name.replace('_', '-')}-{number:02d}"
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def render(name: str) -> str:
    """The ``.ipynb`` text of notebook ``name``, as written to disk."""
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a notebook file differs from its cell list")
    parser.add_argument("--out", type=Path, default=NOTEBOOK_DIR, help="folder to write (default: notebooks/)")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = args.out / f"{name}.ipynb"
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print("wrote", path)
    if stale:
        print("out of date (run python scripts/make_notebooks.py):", *map(str, stale), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
