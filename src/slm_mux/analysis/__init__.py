"""Offline analysis of stored samples: evaluation, model-selection search, scaling, reports."""

from slm_mux.analysis.arrays import (
    NOT_RECORDED,
    SampleArrays,
    fewest_samples,
    validation_accuracy,
)
from slm_mux.analysis.evaluate import Evaluation, Outcome, Score, evaluate
from slm_mux.analysis.report import write_report
from slm_mux.analysis.scaling import ModelsPoint, SamplesPoint, Scaling, scale, write_plots
from slm_mux.analysis.search import SearchResult, SubsetScore, search, with_test_accuracy

__all__ = [
    "NOT_RECORDED",
    "Evaluation",
    "ModelsPoint",
    "Outcome",
    "SampleArrays",
    "SamplesPoint",
    "Scaling",
    "Score",
    "SearchResult",
    "SubsetScore",
    "evaluate",
    "fewest_samples",
    "scale",
    "search",
    "validation_accuracy",
    "with_test_accuracy",
    "write_plots",
    "write_report",
]
