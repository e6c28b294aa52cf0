"""Synthesis and projections: images made from what a unit responds to (docs/methods.md sections 9-10).

* :func:`visualize` -- activation maximisation (:class:`Visualization`);
* :func:`facets` -- multifaceted visualisation of one unit (:class:`Facets`);
* :func:`invert` -- network inversion (:class:`Inversion`), :func:`inversion_figure` to show it;
* :func:`synthesise_unit` -- one unit's synthesis as an on-demand handler for the Explorer's card,
  returning the index's ``"synthesis"`` attachment (:mod:`.attachment`, :func:`merge`);
* :func:`image_statistics` -- the colour and spectrum priors from your images;
* :func:`deconvnet`, :func:`guided_backprop`, :func:`gradient` -- projections back to pixels
  (:mod:`.projections`), :func:`top_projections` for a unit's top images;
* :func:`learned_inversion` -- the one-shot reconstruction ``G(E(x))`` beside :func:`invert`;
* :func:`ppgn` -- Plug & Play Generative Networks: samples in a generator's latent space (:class:`PPGNSamples`).
"""
from .attachment import ATTACHMENT_NAME, merge
from .facets import FacetOptions, Facets, facets
from .figures import gallery_figure, inversion_figure
from .inversion import Inversion, invert
from .on_demand import OnDemandOptions, synthesise_unit
from .learned_inversion import learned_inversion
from .ppgn import PPGNSamples, ppgn
from .projections import (deconvnet, gradient, guided_backprop, make_projection_handler,
                          merge_projection_attachments, project, projection_handler, projection_to_rgb,
                          top_projections, TopProjections)
from .statistics import ImageStatistics, default_statistics, image_statistics
from .transforms import TransformSpec, standard_transforms
from .visualize import Visualization, visualize

__all__ = ["visualize", "Visualization", "facets", "Facets", "FacetOptions", "invert", "Inversion",
           "inversion_figure", "synthesise_unit", "OnDemandOptions", "ImageStatistics", "image_statistics",
           "default_statistics", "TransformSpec", "standard_transforms", "ATTACHMENT_NAME", "merge",
           "deconvnet", "guided_backprop", "gradient", "project", "projection_to_rgb", "top_projections",
           "TopProjections", "merge_projection_attachments", "make_projection_handler", "projection_handler",
           "ppgn", "PPGNSamples", "learned_inversion", "gallery_figure"]
