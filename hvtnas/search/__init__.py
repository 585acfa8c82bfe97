"""The search: experiment settings, the study loop, export of the winners.

Names are imported on first use (PEP 562): ``hvtnas.search.outcome`` and ``hvtnas.search.workers``
load without torch, so commands that only read a study (``hvtnas studies``, ``hvtnas show``) start
in a fraction of a second."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hvtnas._lazy import lazy_getattr

if TYPE_CHECKING:
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

_LAZY = {
    "METRICS": "hvtnas.search.experiment",
    "ExperimentConfig": "hvtnas.search.experiment",
    "SamplerConfig": "hvtnas.search.experiment",
    "export_trials": "hvtnas.search.export",
    "select_trials": "hvtnas.search.export",
    "study_recipe": "hvtnas.search.export",
    "trial_config": "hvtnas.search.export",
    "OUTCOMES": "hvtnas.search.outcome",
    "count_outcomes": "hvtnas.search.outcome",
    "evaluated_trials": "hvtnas.search.outcome",
    "trial_outcome": "hvtnas.search.outcome",
    "PerTrialSeedSampler": "hvtnas.search.sampling",
    "SearchError": "hvtnas.search.study",
    "SearchRun": "hvtnas.search.study",
    "SearchSpec": "hvtnas.search.study",
    "TrialOutcome": "hvtnas.search.study",
    "arch_key": "hvtnas.search.study",
    "load_search_spec": "hvtnas.search.study",
    "open_study": "hvtnas.search.study",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


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
