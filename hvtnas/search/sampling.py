"""A sampler seeded per trial, so that independent workers of one study never repeat each other.

Optuna's samplers draw from one random state seeded once. Several processes that open the same
study with the same seed (the workers of a PostgreSQL study, ``--n-jobs``, a SLURM array) therefore
make the same draws in the same order: 3 workers x 6 trials gave 3 distinct architectures. Here the
wrapped sampler is rebuilt for every trial with the seed ``derive_seed(seed, trial.number)``.
Trial numbers are assigned by the storage, so concurrent workers get different seeds, while one
worker alone draws exactly what it drew before (and a resumed study what an uninterrupted one
would have). What the samplers learn lives in the study, not in the sampler object: TPE and GP fit
the finished trials, NSGA-II/III keep their generations and parents in the study's system
attributes, and constraints are read from each trial's ``constraints`` system attribute, so a fresh
sampler per trial loses no information (GP's cached kernel fit, only a starting point for its next
fit, is recomputed). Without a seed the samplers are not wrapped: each draws from fresh entropy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


def derive_seed(seed: int, trial_number: int) -> int:
    """A 32-bit seed for one trial, from the study's seed and the trial's number."""
    digest = hashlib.sha256(f"hvtnas:{seed}:{trial_number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class PerTrialSeedSampler(BaseSampler):
    """Delegates to ``build(derive_seed(seed, trial.number))``, built afresh in ``before_trial``."""

    def __init__(self, build: Callable[[int], BaseSampler], seed: int) -> None:
        self._build = build
        self._seed = seed
        self._number: int | None = None
        self.inner = build(seed)  # until the first trial: what Optuna may ask before one exists

    def _for(self, trial: FrozenTrial) -> BaseSampler:
        if trial.number != self._number:
            self.inner = self._build(derive_seed(self._seed, trial.number))
            self._number = trial.number
        return self.inner

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def __repr__(self) -> str:
        return f"PerTrialSeedSampler({type(self.inner).__name__}, seed={self._seed})"


def is_generational(sampler: BaseSampler) -> bool:
    """NSGA-II/III: generations are formed from complete trials only."""
    inner = sampler.inner if isinstance(sampler, PerTrialSeedSampler) else sampler
    return isinstance(inner, optuna.samplers.NSGAIISampler | optuna.samplers.NSGAIIISampler)
