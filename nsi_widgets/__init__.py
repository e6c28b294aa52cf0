"""nsi-widgets: index neuron selectivity in trained CNNs and explore it in JupyterLab.

Implements Rafegas, Vanrell, Alexandre, Arias, "Understanding trained CNNs by indexing neuron
selectivity" (2019): per neuron, the top-N dataset images, the Neuron Feature, and colour and class
selectivity indexes (plus orientation, symmetry, shape and user-registered ones).
"""
__version__ = "0.1.0"

from .annotations import Annotation, AnnotationStore, merge_stores
from .core.errors import IndexFileError, InputError, NsiError
from .concepts import dissect, load_dissection
from .concepts import cka, concept_vectors, layer_similarity, tcav
from .core.fingerprint import model_fingerprint
from .core.layers import list_layers
from .core.receptive_field import ReceptiveField, receptive_field
from .index import LayerIndex, NeuronIndex, index_neurons, load_index
from .index.statistics import layer_statistics
from .index.selectivity import (available_indexes, class_frequencies, class_selectivity, color_selectivity,
                                population_code, register_index, unregister_index)
from .synthesis import deconvnet, gradient, guided_backprop, ppgn
from . import zoo

_WIDGETS = ("NeuronGrid", "NeuronCard", "ColorSelectivityHistogram", "ClassSelectivityChart", "Explorer",
            "export_html", "default_compute")
_SYNTHESIS = ("visualize", "facets", "invert")  # feature visualisation (docs/methods.md section 9)


def __getattr__(name):
    # The widgets import anywidget/plotly: load them on first use, so compute-only use stays light.
    if name in _WIDGETS or name == "widgets":
        import importlib

        widgets = importlib.import_module(f"{__name__}.widgets")
        return widgets if name == "widgets" else getattr(widgets, name)
    if name in _SYNTHESIS:
        from . import synthesis

        return getattr(synthesis, name)
    raise AttributeError(f"module 'nsi_widgets' has no attribute {name!r}")

__all__ = [
    "__version__", "index_neurons", "AnnotationStore", "Annotation", "merge_stores", "list_layers", "model_fingerprint", "receptive_field", "ReceptiveField",
    "LayerIndex", "NeuronIndex", "load_index", "register_index", "unregister_index", "available_indexes",
    "class_selectivity", "class_frequencies", "color_selectivity", "population_code", "layer_statistics", "zoo",
    "deconvnet", "guided_backprop", "gradient", "ppgn",
    "NsiError", "InputError", "IndexFileError", "dissect", "load_dissection",
    "cka", "concept_vectors", "tcav", "layer_similarity", *_WIDGETS, *_SYNTHESIS,
]
