"""Concepts: Network Dissection, concept vectors (Net2Vec, TCAV), and the comparison of layers and models.

:func:`dissect` labels units with concepts (docs/methods.md section 7).
"""
from .data import ConceptSet, describe
from .dissection import dissect
from .dissection_results import DissectionResult, LayerDissection, load_dissection

__all__ = ["dissect", "DissectionResult", "LayerDissection", "load_dissection", "ConceptSet", "describe"]
