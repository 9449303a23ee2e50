"""The paper's experiments as functions: calibrating a patch schedule against a network,
comparing machines with a network seed by seed, novelty, and the metrics they report."""

from .calibrate import calibrate
from .compare import compare
from .metrics import image_metrics, pearson
from .novelty import Novelty, novelty

__all__ = ["calibrate", "compare", "image_metrics", "pearson", "Novelty", "novelty"]
