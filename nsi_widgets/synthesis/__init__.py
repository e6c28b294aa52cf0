"""Feature visualisation by optimisation (docs/methods.md section 9)."""
from .attachment import ATTACHMENT_NAME, merge
from .statistics import ImageStatistics, default_statistics, image_statistics
from .transforms import TransformSpec, standard_transforms
from .visualize import Visualization, visualize

__all__ = ["visualize", "Visualization", "ImageStatistics", "image_statistics", "default_statistics",
           "TransformSpec", "standard_transforms", "ATTACHMENT_NAME", "merge"]
