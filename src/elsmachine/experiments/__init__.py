"""The paper's experiments as functions: one seeded sampling run, calibrating a patch schedule
against a network, comparing machines with a network seed by seed, novelty, and the metrics
they report."""

from .calibrate import calibrate
from .compare import compare
from .metrics import image_metrics, pearson
from .novelty import Novelty, novelty
from .runs import SampleRun, SampleSpec, run_samples
from .single import SingleImageDenoiser, SingleRun, copy_statistic, load_source, sample_single

__all__ = ["calibrate", "compare", "image_metrics", "pearson", "Novelty", "novelty", "SampleSpec", "SampleRun",
           "run_samples", "SingleImageDenoiser", "SingleRun", "sample_single", "copy_statistic", "load_source"]
