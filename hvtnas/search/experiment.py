"""The ``experiment`` section of a search-space file: objectives, constraints, data, fidelity, sampler."""

from __future__ import annotations

import math
from typing import Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hvtnas.costs import CostSettings, LatencySettings
from hvtnas.train import DataConfig, TrainConfig
from hvtnas.train.proxies import ZERO_COST_PROXIES

# metric -> (optimisation direction, unit of a constraint's limit)
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("maximize", "fraction of the validation set"),
    "flops": ("minimize", "multiply-accumulates at the input resolution"),
    "flops_dense": ("minimize", "multiply-accumulates of the backbone at costs.dense_resolution"),
    "latency": ("minimize", "milliseconds (median, costs.latency settings)"),
    "params": ("minimize", "parameters"),
    "memory": ("minimize", "bytes of training activations per image"),
}
PROXY_PREFIX = "proxy:"  # proxy:synflow, proxy:naswot, ...: zero-cost scores, maximised


def metric_direction(metric: str) -> str:
    return "maximize" if metric.startswith(PROXY_PREFIX) else METRICS[metric][0]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplerConfig(_Strict):
    name: Literal["nsga2", "nsga3", "tpe", "gp", "random", "auto"] = "auto"  # auto: nsga2 / tpe
    seed: int | None = 0
    # NSGA-II/III generation size; none: the warm-start designs are the first generation
    # (at least 10), or 20 without a warm start
    population_size: int | None = Field(None, ge=2)

    def generation_size(self, warm_start_trials: int = 0) -> int:
        """NSGA-II/III's population: a first generation of warm-start designs plus a few random
        points would spend the budget of a short study on random samples before any breeding."""
        if self.population_size is not None:
            return self.population_size
        return max(10, warm_start_trials) if warm_start_trials else 20

    def build(self, n_objectives: int, warm_start_trials: int = 0) -> optuna.samplers.BaseSampler:
        """The sampler; with a seed, seeded per trial from (seed, trial number), so workers of one
        study sample differently and one worker alone is reproducible (``hvtnas.search.sampling``)."""
        from hvtnas.search.sampling import PerTrialSeedSampler

        population = self.generation_size(warm_start_trials)
        if self.seed is None:
            return self._build(n_objectives, population, None)
        return PerTrialSeedSampler(lambda seed: self._build(n_objectives, population, seed), self.seed)

    def _build(self, n_objectives: int, population: int, seed: int | None) -> optuna.samplers.BaseSampler:
        name = self.name
        if name == "auto":
            name = "nsga2" if n_objectives > 1 else "tpe"
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
        if name == "nsga3":
            return optuna.samplers.NSGAIIISampler(population_size=population, seed=seed)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)


class WarmStartConfig(_Strict):
    """The first trials of a new study: published designs from the zoo, scaled to each ``flops``
    budget (``hvtnas.models.scale_to_flops``: width to meet the budget, depth times ``depth_mult``,
    attention heads ``head_dim`` wide when given) or, without budgets, at their own width; and
    architecture files of one's own (``configs``, relative to the space file). Each must be a
    point of the space; the search then samples around designs known to work instead of
    starting from random points."""

    zoo: list[str] = Field(default_factory=list)
    flops: list[float] = Field(default_factory=list)  # MACs at the space's input; none: own width
    depth_mult: float = Field(1.0, gt=0)
    head_dim: int | None = Field(None, ge=1)
    width_multiple: int = Field(8, ge=1)
    configs: list[str] = Field(default_factory=list)

    @field_validator("zoo")
    @classmethod
    def _known_models(cls, names: list[str]) -> list[str]:
        from hvtnas.models import zoo

        unknown = [n for n in names if n not in zoo.names()]
        if unknown:
            raise ValueError(f"not in the zoo: {', '.join(unknown)}; known: {', '.join(zoo.names())}")
        return names

    @field_validator("flops")
    @classmethod
    def _positive_budgets(cls, budgets: list[float]) -> list[float]:
        if any(b <= 0 for b in budgets):
            raise ValueError(f"budgets must be positive MACs, got {budgets}")
        return budgets


class EarlyStoppingConfig(_Strict):
    """Stop a trial after an epoch ``e`` with ``min_epoch <= e < train.epochs`` (never after its
    last epoch) when a completed trial of equal or lower cost (on every cost objective) had, at
    that same epoch, an accuracy higher by more than ``margin``.

    ``margin`` (a fraction of the validation set, e.g. 0.02) defaults to the sampling noise of a
    validation accuracy: ``1.96 * sqrt(p * (1 - p) / n_val)`` with ``p`` the better trial's
    accuracy and ``n_val`` the validation images, the half-width of its 95% binomial interval
    (0.05 at p = 0.5 on 360 images, 0.02 on 2,000)."""

    min_epoch: int = Field(1, ge=1)
    margin: float | None = Field(None, ge=0, lt=1)

    def margin_for(self, accuracy: float, n_val: int) -> float:
        """The accuracy difference a stopping trial must exceed (see the class docstring)."""
        if self.margin is not None:
            return self.margin
        p = min(max(accuracy, 0.0), 1.0)
        return 1.96 * math.sqrt(p * (1 - p) / max(n_val, 1))


class ExperimentConfig(_Strict):
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "flops"], min_length=1)
    # metric -> largest allowed value (units in METRICS); checked before training
    constraints: dict[str, float] = Field(default_factory=dict)
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig(epochs=5)
    costs: CostSettings = CostSettings(dense_resolution=None)
    sampler: SamplerConfig = SamplerConfig()
    early_stopping: EarlyStoppingConfig | None = EarlyStoppingConfig()
    warm_start: WarmStartConfig | None = None
    proxy_batch_size: int = Field(64, ge=2)  # images for zero-cost proxy objectives
    # seconds a trial may take; checked after every epoch, a trial past it fails with reason "timeout"
    trial_timeout: float | None = Field(None, gt=0)
    # seconds after which a trial stuck inside an epoch is abandoned and its worker process ends
    # (default 2 x trial_timeout; see README, "Scaling out")
    trial_hard_timeout: float | None = Field(None, gt=0)

    @property
    def hard_timeout(self) -> float | None:
        if self.trial_hard_timeout is not None:
            return self.trial_hard_timeout
        return 2 * self.trial_timeout if self.trial_timeout is not None else None

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, objectives: list[str]) -> list[str]:
        for name in objectives:
            if name.startswith(PROXY_PREFIX):
                proxy = name.removeprefix(PROXY_PREFIX)
                if proxy not in ZERO_COST_PROXIES:
                    raise ValueError(
                        f"unknown zero-cost proxy {proxy!r}; known: {', '.join(sorted(ZERO_COST_PROXIES))}"
                    )
            elif name not in METRICS:
                known = ", ".join([*METRICS, *(PROXY_PREFIX + p for p in sorted(ZERO_COST_PROXIES))])
                raise ValueError(f"unknown objective {name!r}; known: {known}")
        if len(set(objectives)) < len(objectives):
            raise ValueError("an objective is listed twice")
        return objectives

    @field_validator("constraints")
    @classmethod
    def _known_constraints(cls, constraints: dict[str, float]) -> dict[str, float]:
        for name, limit in constraints.items():
            if name not in METRICS or name == "accuracy":
                known = ", ".join(m for m in METRICS if m != "accuracy")
                raise ValueError(f"unknown constraint {name!r}; a constraint bounds one of: {known}")
            if limit <= 0:
                raise ValueError(f"constraint {name} must be positive, got {limit}")
        return constraints

    @model_validator(mode="after")
    def _costs_that_are_needed(self) -> ExperimentConfig:
        wanted = set(self.objectives) | set(self.constraints)
        if "flops_dense" in wanted and self.costs.dense_resolution is None:
            raise ValueError("flops_dense needs costs.dense_resolution (e.g. 1280x800)")
        updates: dict[str, Any] = {}
        if "latency" in wanted and self.costs.latency is None:
            updates["latency"] = LatencySettings()
        if "memory" in wanted and not self.costs.memory:
            updates["memory"] = True
        if updates:
            self.costs = self.costs.model_copy(update=updates)
        return self

    @property
    def directions(self) -> list[str]:
        return [metric_direction(m) for m in self.objectives]

    @property
    def cost_objectives(self) -> list[str]:
        return [m for m in self.objectives if m != "accuracy" and not m.startswith(PROXY_PREFIX)]
