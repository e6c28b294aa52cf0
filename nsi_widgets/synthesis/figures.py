"""A plotly figure of network inversions for notebooks (docs/methods.md section 9).

Kept apart from the computations: plotly is imported only when a figure is made.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .inversion import Inversion


TITLE = "Network inversion (Mahendran & Vedaldi 2015): what each layer keeps"


def inversion_figure(inversions: Inversion | Mapping[str, Inversion], *, max_images: int = 8, height_per_row: int = 130,
                     title: str = TITLE):
    """Originals in the first row, one row of reconstructions per layer, PSNR under each image.

    Parameters
    ----------
    inversions : Inversion or {row name: Inversion}
        Results of :func:`nsi_widgets.invert` of the same images (e.g. one per layer), and of
        :func:`nsi_widgets.synthesis.learned_inversion` (``G(E(x))``, docs/methods.md section 10) to
        show the one-shot reconstruction beside the optimised ones.
    max_images : int
        Columns shown.
    title : str

    Returns
    -------
    plotly.graph_objects.Figure
    """
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    if isinstance(inversions, Inversion):
        inversions = {inversions.layer: inversions}
    results = list(inversions.items())
    originals = results[0][1].originals[:max_images]
    n = len(originals)
    rows = [("original", originals, None)] + [
        (layer, r.images[:n], r.psnr[:n]) for layer, r in results]
    titles = []
    for name, _, psnr in rows:
        titles += [f"{name}" if psnr is None else f"{name}: {psnr[j]:.1f} dB" for j in range(n)]
    fig = make_subplots(rows=len(rows), cols=n, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.06)
    for i, (_, images, _) in enumerate(rows, start=1):
        for j in range(n):
            pixels = np.round(np.clip(images[j], 0, 1) * 255).astype(np.uint8)
            fig.add_trace(go.Image(z=pixels), row=i, col=j + 1)
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    for annotation in fig.layout.annotations:
        annotation.font.size = 10
    return fig.update_layout(height=height_per_row * len(rows) + 40, margin=dict(l=0, r=0, t=30, b=0),
                             title_text=title)


def gallery_figure(images, labels, *, columns: int = 8, tile: int = 110, title: str = ""):
    """A grid of images with a caption each (e.g. PPGN samples of several classes).

    Parameters
    ----------
    images : array (S, H, W, 3)
        RGB in ``[0, 1]``.
    labels : sequence of str
        One caption per image.
    columns : int
    tile : int
        Pixels per grid cell (height).

    Returns
    -------
    plotly.graph_objects.Figure
    """
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    n = len(images)
    rows = max(1, -(-n // columns))
    cols = min(columns, max(n, 1))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[str(t) for t in labels],
                        horizontal_spacing=0.01, vertical_spacing=0.3 / rows)
    for k in range(n):
        pixels = np.round(np.clip(images[k], 0, 1) * 255).astype(np.uint8)
        fig.add_trace(go.Image(z=pixels), row=k // cols + 1, col=k % cols + 1)
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    for annotation in fig.layout.annotations:
        annotation.font.size = 9
    return fig.update_layout(height=tile * rows + 50, margin=dict(l=0, r=0, t=40, b=0), title_text=title)
