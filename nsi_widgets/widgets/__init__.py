"""Views of a :class:`~nsi_widgets.results.NeuronIndex` for JupyterLab (anywidget + plotly).

Views never run a model: they read the arrays of an index and send thumbnails and per-unit
values to the browser as binary (PNG sprite sheets, float32 arrays), never as JSON lists.

* :class:`NeuronGrid`: sortable, filterable, selectable grid of Neuron Feature thumbnails.
* :class:`NeuronCard`: one neuron in detail, with an annotation editor.
* :class:`ColorSelectivityHistogram`: colour index per layer (plotly), threshold, range selection.
* :class:`ClassSelectivityChart`: class-frequency bars of a unit, or a layer's class index.
* :class:`Explorer`: all of them, linked in one front end (js/src), mirrored in traits.
* :func:`export_html`: the same front end in one standalone HTML file that works offline from disk.
* :mod:`.views`: the registry of the card's views (other methods' results) and their computations;
  the views of other methods: :mod:`.dissection` (with :func:`detector_chart`), :mod:`.synthesised`,
  :mod:`.projected`, :mod:`.generated`, :mod:`.concept_vectors`; :func:`default_compute` gives every on-demand view's
  computation from one call (:mod:`.on_demand`).
"""
from .card import NeuronCard
from .charts import ClassSelectivityChart, ColorSelectivityHistogram
from .explorer import Explorer
from .export import export_html
from .grid import NeuronGrid
from ._data import WidgetArgumentError
from .views import CardView, CategoryColumn, Panel, register_card_view, register_category_column, register_compute
from . import concept_vectors, dissection, generated, projected, synthesised  # noqa: F401  (register their card views)
from .dissection import detector_chart
from .on_demand import OnDemandSettings, default_compute

__all__ = ["NeuronGrid", "NeuronCard", "ColorSelectivityHistogram", "ClassSelectivityChart", "Explorer",
           "export_html", "WidgetArgumentError", "CardView", "CategoryColumn", "Panel", "register_card_view",
           "register_category_column", "register_compute", "default_compute", "OnDemandSettings", "detector_chart"]
