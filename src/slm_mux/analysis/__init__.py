"""Offline analysis of stored samples: evaluation, adaptive replay, model-selection search,
scaling, reports."""

from slm_mux.analysis.adaptive_replay import PolicyScore, Replayed, replay_policies
from slm_mux.analysis.arrays import (
    NOT_RECORDED,
    SampleArrays,
    fewest_samples,
    validation_accuracy,
)
from slm_mux.analysis.evaluate import (
    AGENT_FOREST,
    ORACLE,
    SLM_MUX,
    Evaluation,
    Method,
    Outcome,
    Score,
    evaluate,
    self_consistency,
    single,
)
from slm_mux.analysis.report import write_report
from slm_mux.analysis.scaling import ModelsPoint, SamplesPoint, Scaling, scale, write_plots
from slm_mux.analysis.search import SearchResult, SubsetScore, search, with_test_accuracy

__all__ = [
    "AGENT_FOREST",
    "NOT_RECORDED",
    "ORACLE",
    "SLM_MUX",
    "Evaluation",
    "Method",
    "ModelsPoint",
    "Outcome",
    "PolicyScore",
    "Replayed",
    "SampleArrays",
    "SamplesPoint",
    "Scaling",
    "Score",
    "SearchResult",
    "SubsetScore",
    "evaluate",
    "fewest_samples",
    "replay_policies",
    "scale",
    "search",
    "self_consistency",
    "single",
    "validation_accuracy",
    "with_test_accuracy",
    "write_plots",
    "write_report",
]
