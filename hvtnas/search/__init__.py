"""The search: experiment settings, the study loop, export of the winners."""

from hvtnas.search.experiment import METRICS, ExperimentConfig, SamplerConfig
from hvtnas.search.export import export_trials, select_trials, trial_config
from hvtnas.search.study import (
    SearchError,
    SearchRun,
    SearchSpec,
    TrialOutcome,
    arch_key,
    load_search_spec,
    open_study,
)

__all__ = [
    "METRICS",
    "ExperimentConfig",
    "SamplerConfig",
    "SearchError",
    "SearchRun",
    "SearchSpec",
    "TrialOutcome",
    "arch_key",
    "export_trials",
    "load_search_spec",
    "open_study",
    "select_trials",
    "trial_config",
]
