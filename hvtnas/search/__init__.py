"""The search: experiment settings, the study loop, export of the winners."""

from hvtnas.search.experiment import METRICS, ExperimentConfig, SamplerConfig
from hvtnas.search.export import export_trials, select_trials, study_recipe, trial_config
from hvtnas.search.outcome import OUTCOMES, count_outcomes, evaluated_trials, trial_outcome
from hvtnas.search.sampling import PerTrialSeedSampler
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
    "OUTCOMES",
    "ExperimentConfig",
    "PerTrialSeedSampler",
    "SamplerConfig",
    "SearchError",
    "SearchRun",
    "SearchSpec",
    "TrialOutcome",
    "arch_key",
    "count_outcomes",
    "evaluated_trials",
    "export_trials",
    "load_search_spec",
    "open_study",
    "select_trials",
    "study_recipe",
    "trial_config",
    "trial_outcome",
]
