"""Synthesis and projections: images made from what a unit responds to (docs/methods.md sections 9-10)."""
from .projections import (deconvnet, gradient, guided_backprop, make_projection_handler,
                          merge_projection_attachments, project, projection_handler, projection_to_rgb,
                          top_projections, TopProjections)

__all__ = ["deconvnet", "guided_backprop", "gradient", "project", "projection_to_rgb", "top_projections",
           "TopProjections", "merge_projection_attachments", "make_projection_handler", "projection_handler"]
