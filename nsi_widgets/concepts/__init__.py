"""Concepts: Network Dissection, concept vectors (Net2Vec, TCAV), and the comparison of layers and models.

:func:`dissect` labels units with concepts (docs/methods.md section 7); :func:`concept_vectors`
gives per concept a vector over a layer's units (Net2Vec, TCAV), :func:`tcav` tests a concept's
influence on classes, :func:`layer_similarity` compares layers within a model or across models
(CKA, Net2Vec, TCAV), :func:`cka` is linear CKA on arrays (docs/methods.md section 8).
"""
from .cka import BiasedCKAWarning, MinibatchCKA, cka
from .data import ConceptSet, describe
from .dissection import dissect
from .dissection_results import DissectionResult, LayerDissection, load_dissection
from .net2vec import Net2VecOptions
from .similarity import layer_similarity
from .similarity_results import LayerSimilarity, load_similarity
from .tcav import CAVOptions, tcav
from .tcav_results import TCAVResult, load_tcav
from .vector_results import ConceptVectors, ConceptVectorSet, load_concept_vectors
from .vectors import concept_vectors

__all__ = ["dissect", "DissectionResult", "LayerDissection", "load_dissection", "ConceptSet", "describe",
           "cka", "MinibatchCKA", "BiasedCKAWarning", "concept_vectors", "ConceptVectors", "ConceptVectorSet",
           "load_concept_vectors", "Net2VecOptions", "CAVOptions", "tcav", "TCAVResult", "load_tcav",
           "layer_similarity", "LayerSimilarity", "load_similarity"]
