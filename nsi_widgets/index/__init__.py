"""The paper (Rafegas et al. 2019): top-N scan, crops and Neuron Features, selectivity indexes.

:func:`index_neurons` composes them (:mod:`.pipeline`); results live in :mod:`.results`.
"""
from .pipeline import index_neurons
from .results import LayerIndex, NeuronIndex, load_index

__all__ = ["index_neurons", "LayerIndex", "NeuronIndex", "load_index"]
