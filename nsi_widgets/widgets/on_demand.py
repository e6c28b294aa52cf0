"""Every on-demand view of the card from one argument: ``Explorer(idx, compute=default_compute(model, data, ...))``.

:func:`default_compute` returns the compute handlers (``{view name: handler(request) -> Attachment}``,
see :mod:`._compute`) of the card's computed views, each a thin adapter from a
:class:`~nsi_widgets.widgets._compute.ComputeRequest` to a compute package's on-demand function, so
nothing here runs a model itself:

==============  ==============================================================  ======================
view            computes (for the unit shown)                                   attachment
==============  ==============================================================  ======================
``synthesis``   :func:`nsi_widgets.synthesis.synthesise_unit` (activation        ``"synthesis"``
                maximisation and facets)
``projections`` :func:`nsi_widgets.synthesis.make_projection_handler` (its top   ``"projections"``
                images projected back to pixels), merged with the unit's layer
``generated``   with ``generator``: :func:`nsi_widgets.ppgn` samples of the unit    ``"generated"``
                (:func:`nsi_widgets.synthesis.generated.make_generated_handler`)
``dissection``  with ``concept_data``: :func:`nsi_widgets.dissect` of the layer  ``"dissection"``
                if not dissected yet, then its NetDissect picture
                (:func:`nsi_widgets.concepts.dissection_views.dissection_pictures`)
==============  ==============================================================  ======================

Each result extends the index's attachment of that name (``idx.save`` keeps it; the exported page
shows it). The handlers run one at a time on the Explorer's worker thread; do not run the model
from the notebook while one runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class OnDemandSettings:
    """Settings of :func:`default_compute`'s handlers.

    Attributes
    ----------
    synthesis : nsi_widgets.synthesis.OnDemandOptions or None
        Steps, facets, seed of the "synthesised" view (None: that module's defaults).
    projections : dict
        Keyword arguments of :func:`nsi_widgets.synthesis.make_projection_handler` (``method``,
        ``n_images``, ``n_mean``, ``weighting``, ``thumbnail_size``, ``batch_size``).
    dissection : dict
        Keyword arguments of :func:`nsi_widgets.dissect` (``quantile``, ``iou_threshold``, ``union``,
        ``batch_size``).
    n_pictures : int
        Top images in a unit's NetDissect picture.
    generated : dict
        Keyword arguments of :func:`nsi_widgets.synthesis.generated.make_generated_handler` (``n``,
        ``steps``, ``seed`` and :func:`nsi_widgets.ppgn`'s ``prior``, ``eps1``, ``lr``, ...).
    """

    synthesis: Any = None
    projections: dict = field(default_factory=dict)
    dissection: dict = field(default_factory=dict)
    n_pictures: int = 4
    generated: dict = field(default_factory=dict)


def default_compute(model, data=None, *, concept_data=None, generator=None, preprocess=None, device=None,
                    settings: OnDemandSettings | None = None) -> dict[str, Callable]:
    """The compute handlers of every on-demand view of the card, for ``Explorer(idx, compute=...)``.

    Parameters
    ----------
    model : torch.nn.Module
        The indexed model.
    data : dataset, optional
        The dataset the index was computed on (default: ``idx.data``, set by ``index_neurons``).
    concept_data : dataset of ``(image, masks)``, optional
        Concept data (``nsi.dissect``'s): adds the dissection view's handler.
    generator : GeneratorPrior or nn.Module, optional
        ``nsi.zoo.load_generator("shapes")`` or your generator (latent -> image): adds the "generated"
        view's handler (PPGN samples of the unit).
    preprocess, device
        As for :func:`nsi_widgets.index_neurons`.
    settings : OnDemandSettings, optional
        Steps, counts and method settings of the handlers.

    Returns
    -------
    dict
        ``{"synthesis": ..., "projections": ..., "dissection": ..., "generated": ...}`` (dissection with
        ``concept_data``, generated with ``generator``).

    Examples
    --------
    >>> ex = nsi.Explorer(idx, compute=nsi.widgets.default_compute(model, data, concept_data=concepts),
    ...                   autosave="index.npz")                                     # doctest: +SKIP
    """
    from ..core.errors import InputError

    settings = settings or OnDemandSettings()
    if not isinstance(settings, OnDemandSettings):
        raise InputError(f"settings must be an OnDemandSettings, got {type(settings).__name__}")
    handlers = {"synthesis": _synthesis_handler(model, data, preprocess, device, settings.synthesis),
                "projections": _projection_handler(model, data, preprocess, settings.projections)}
    if concept_data is not None:
        handlers["dissection"] = _dissection_handler(model, concept_data, preprocess, device, settings)
    if generator is not None:
        handlers["generated"] = _generated_handler(model, generator, preprocess, settings.generated)
    return handlers


def _data_of(data, request):
    return data if data is not None else getattr(request.index, "data", None)


def _synthesis_handler(model, data, preprocess, device, options):
    from ..synthesis.on_demand import synthesise_unit

    def synthesis(request):
        return synthesise_unit(request.index, model, _data_of(data, request), request.layer, request.unit,
                               request.progress, options=options, preprocess=preprocess, device=device)
    return synthesis


def _projection_handler(model, data, preprocess, options: dict):
    from ..synthesis.projections import make_projection_handler, merge_projection_attachments

    project = make_projection_handler(**{"preprocess": preprocess, **options})

    def projections(request):
        update = project(request.index, model, _data_of(data, request), request.layer, request.unit,
                         lambda done, total: request.progress(done / max(total, 1), "projections"))
        return merge_projection_attachments(request.attachment, update)
    return projections


def _generated_handler(model, generator, preprocess, options: dict):
    from ..synthesis.generated import make_generated_handler, merge_generated_attachments

    sample = make_generated_handler(generator, **{"preprocess": preprocess, **options})

    def generated(request):
        update = sample(request.index, model, None, request.layer, request.unit,
                        lambda done, total: request.progress(done / max(total, 1), "PPGN steps"))
        return merge_generated_attachments(request.attachment, update)
    return generated


def _dissection_handler(model, concept_data, preprocess, device, settings: OnDemandSettings):
    from ..concepts import dissect
    from ..concepts.dissection_views import add_pictures, dissection_pictures, merge_dissection_attachments

    def dissection(request):
        attachment, layer = request.attachment, request.layer
        start = 0.0
        if attachment is None or layer not in attachment.arrays:
            request.progress(0.0, f"dissecting {layer}")
            start = 0.5
            result = dissect(model, concept_data, [layer], preprocess=preprocess, device=device, progress=False,
                             **settings.dissection)
            attachment = merge_dissection_attachments(attachment, result.to_attachment())
        pictures = dissection_pictures(model, concept_data, attachment, layer, [request.unit], settings.n_pictures,
                                       preprocess=preprocess, device=device,
                                       batch_size=settings.dissection.get("batch_size", 64),
                                       candidates=attachment.arrays[layer].get("picture_candidates"),
                                       progress_callback=lambda fraction, text: request.progress(
                                           start + (1 - start) * fraction, f"pictures: {text}"))
        return add_pictures(attachment, pictures)
    return dissection
