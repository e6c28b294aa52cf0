"""Feature visualisation by optimisation (docs/methods.md section 9).

* :func:`visualize` -- activation maximisation (:class:`Visualization`);
* :func:`facets` -- multifaceted visualisation of one unit (:class:`Facets`);
* :func:`invert` -- network inversion (:class:`Inversion`), :func:`inversion_figure` to show it;
* :func:`synthesise_unit` -- one unit's synthesis as an on-demand handler for the Explorer's card,
  returning the index's ``"synthesis"`` attachment (:mod:`.attachment`, :func:`merge`);
* :func:`image_statistics` -- the colour and spectrum priors from your images.
"""
from .attachment import ATTACHMENT_NAME, merge
from .facets import FacetOptions, Facets, facets
from .figures import inversion_figure
from .inversion import Inversion, invert
from .on_demand import OnDemandOptions, synthesise_unit
from .statistics import ImageStatistics, default_statistics, image_statistics
from .transforms import TransformSpec, standard_transforms
from .visualize import Visualization, visualize

__all__ = ["visualize", "Visualization", "facets", "Facets", "FacetOptions", "invert", "Inversion",
           "inversion_figure", "synthesise_unit", "OnDemandOptions", "ImageStatistics", "image_statistics",
           "default_statistics", "TransformSpec", "standard_transforms", "ATTACHMENT_NAME", "merge"]
