"""Export trials of a study as architecture configs that ``hvtnas build`` and ``hvtnas train`` take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hvtnas.config import ArchConfig
from hvtnas.errors import HvtnasError
from hvtnas.io import safe_file_name


def select_trials(
    study: optuna.Study,
    pareto: bool = False,
    trial: int | None = None,
    top: int | None = None,
    by: str = "accuracy",
) -> list[FrozenTrial]:
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "arch" in t.user_attrs
    ]
    if trial is not None:
        chosen = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not chosen or chosen[0].state != TrialState.COMPLETE:
            raise HvtnasError(f"trial {trial} is not a completed trial of study {study.study_name!r}")
        return chosen
    if top is not None:
        objectives = study.user_attrs.get("objectives") or study.metric_names or []
        if by not in objectives:
            raise HvtnasError(
                f"--by {by!r} is not an objective of this study; objectives: {', '.join(objectives)}"
            )
        index = objectives.index(by)
        maximize = study.directions[index] == optuna.study.StudyDirection.MAXIMIZE
        feasible = [t for t in complete if not t.user_attrs.get("constraint_violations")]
        ranked = sorted(feasible, key=lambda t: t.values[index], reverse=maximize)
        return _one_per_architecture(ranked)[:top]
    # default and --pareto: the Pareto front of feasible trials
    front = [t for t in study.best_trials if not t.user_attrs.get("constraint_violations")]
    return _one_per_architecture(sorted(front, key=lambda t: t.number))


def _one_per_architecture(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Keep the first trial of each architecture (duplicates share its result)."""
    seen: set[str] = set()
    out = []
    for t in trials:
        key = t.user_attrs.get("arch_key")
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def trial_config(study: optuna.Study, t: FrozenTrial) -> ArchConfig:
    """The trial's architecture, named after the study and trial, with its results as metadata."""
    objectives = study.user_attrs.get("objectives") or study.metric_names or []
    costs: dict[str, Any] = t.user_attrs.get("costs") or {}
    metadata = {
        "study": study.study_name,
        "trial": t.number,
        "objectives": dict(zip(objectives, t.values, strict=False)),
        "params": costs.get("params"),
        "flops": costs.get("flops"),
        "flops_dense": costs.get("flops_dense"),
        "latency_ms": (costs.get("latency") or {}).get("median_ms"),
        "accuracy_curve": t.user_attrs.get("accuracy_curve"),
    }
    arch = ArchConfig.from_dict(t.user_attrs["arch"])
    return arch.model_copy(update={"name": f"{study.study_name}_trial{t.number}", "metadata": metadata})


def export_trials(study: optuna.Study, trials: list[FrozenTrial], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in trials:
        cfg = trial_config(study, t)
        cfg = cfg.model_copy(update={"name": safe_file_name(cfg.name)})  # a study name may hold '/'
        path = out / f"{cfg.name}.yaml"
        cfg.to_yaml(path)
        paths.append(path)
    return paths
