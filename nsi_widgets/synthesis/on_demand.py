"""One unit's synthesis for the Explorer's card, computed on demand (docs/methods.md section 9).

:func:`synthesise_unit` has the signature of a card's on-demand handler,
``(index, model, data, layer, unit, progress_callback) -> Attachment``: it computes the unit's
activation-maximisation image (:func:`~nsi_widgets.synthesis.visualize`, with the colour and spectrum
statistics of ``data``, the index's own images) and its facets (:func:`~nsi_widgets.synthesis.facets`),
and returns the index's ``"synthesis"`` attachment with this unit merged in. It does not change the
index: the caller attaches the result, which is then saved with the index and exported::

    update = synthesise_unit(idx, model, data, "conv5", 7, callback)
    idx.attach(ATTACHMENT_NAME, update)

``progress_callback(fraction, message)`` (or None) is called with ``fraction`` rising from 0 to 1.
The model is used in eval mode with frozen weights during the call (restored afterwards), so the
caller should not run it at the same time from another thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..core.errors import InputError
from ..index.results import Attachment
from .attachment import ATTACHMENT_NAME, merge
from .facets import FacetOptions, facets
from .statistics import image_statistics
from .visualize import DEFAULT_STEPS, visualize


@dataclass(frozen=True)
class OnDemandOptions:
    """Settings of :func:`synthesise_unit` (defaults: those of ``visualize`` and ``facets``)."""

    steps: int = DEFAULT_STEPS
    k: int | None = None
    seed: int = 0
    facet_options: FacetOptions = FacetOptions()
    with_facets: bool = True


def synthesise_unit(index, model, data, layer: str, unit: int,
                    progress_callback: Callable[[float, str], None] | None = None, *,
                    options: OnDemandOptions | None = None, preprocess=None, device=None) -> Attachment:
    """Compute one unit's activation-maximisation image and facets; return the merged attachment.

    Parameters
    ----------
    index : NeuronIndex
        The unit's top images come from it; its current ``"synthesis"`` attachment (if any) is kept.
    model : torch.nn.Module
    data : Dataset or sequence
        The dataset the index was computed on (also the source of the image statistics).
    layer : str
    unit : int
    progress_callback : callable, optional
        ``(fraction in [0, 1], message)``.
    options : OnDemandOptions, optional
    preprocess, device : as for :func:`nsi_widgets.index_neurons`.

    Returns
    -------
    Attachment
        The index's ``"synthesis"`` attachment (:data:`ATTACHMENT_NAME`) with this unit added or replaced.
    """
    options = options or OnDemandOptions()
    if layer not in index:
        raise InputError(f"layer {layer!r} is not in the index (indexed: {list(index)})")
    if data is None:
        raise InputError("the synthesis needs the dataset the index was computed on (pass data=)")
    report = progress_callback or (lambda fraction, message: None)
    am_share = 0.5 if options.with_facets else 1.0
    report(0.0, "image statistics")
    statistics = image_statistics(data)
    visual = visualize(model, layer, [int(unit)], steps=options.steps, decorrelate=statistics, seed=options.seed,
                       preprocess=preprocess, device=device,
                       progress=lambda done, total: report(am_share * done / total, "activation maximisation"))
    parts = [index.attachments.get(ATTACHMENT_NAME), visual.to_attachment()]
    if options.with_facets:
        result = facets(model, data, index, layer, int(unit), k=options.k, options=options.facet_options,
                        preprocess=preprocess, device=device, seed=options.seed,
                        progress=lambda done, total: report(am_share + (1 - am_share) * done / total, "facets"))
        parts.append(result.to_attachment())
    merged = merge(*parts)
    report(1.0, "done")
    return merged
