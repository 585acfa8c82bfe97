"""Export trials of a study as architecture configs that ``hvtnas build`` and ``hvtnas train`` take.

Every exported config carries, in its metadata, the study's results for it and the study's
``recipe``: the data and training settings of the search (``hvtnas train`` retrains with them by
default). Only trained, distinct, feasible trials are selected (never an over-budget, stopped or
duplicate one), unless one is asked for by number.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from hvtnas.errors import HvtnasError
from hvtnas.io import safe_file_name
from hvtnas.search.outcome import evaluated_trials, trial_outcome

if TYPE_CHECKING:  # the config imports the models (torch): not needed to select trials
    from hvtnas.config import ArchConfig


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
        ranked = sorted(evaluated_trials(complete), key=lambda t: t.values[index], reverse=maximize)
        return _one_per_architecture(ranked)[:top]
    # default and --pareto: the Pareto front of trained, distinct, feasible trials
    front = evaluated_trials(study.best_trials)
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
        "outcome": trial_outcome(t),
    }
    if t.user_attrs.get("warm_start"):
        metadata["warm_start"] = t.user_attrs["warm_start"]
    recipe = study_recipe(study)
    if recipe is not None:
        metadata["recipe"] = recipe
    from hvtnas.config import ArchConfig

    arch = ArchConfig.from_dict(t.user_attrs["arch"])
    return arch.model_copy(update={"name": f"{study.study_name}_trial{t.number}", "metadata": metadata})


def study_recipe(study: optuna.Study) -> dict[str, Any] | None:
    """The data and training settings the study's trials were trained with (``None`` when the
    study has neither a stored recipe nor a space file to read it from)."""
    from hvtnas.search.study import RECIPE_ATTR

    recipe = study.user_attrs.get(RECIPE_ATTR)
    if recipe is not None:
        return {"study": study.study_name, **recipe}
    text = study.user_attrs.get("space_yaml")
    if text is None:
        return None
    # a study from before recipes were stored: the space file's experiment section (a relative
    # data path was read relative to the directory the search ran in, which is not known)
    from hvtnas.search.experiment import ExperimentConfig

    experiment = ExperimentConfig.model_validate((yaml.safe_load(text) or {}).get("experiment") or {})
    return {
        "study": study.study_name,
        "data": experiment.data.model_dump(mode="json"),
        "train": experiment.train.model_dump(mode="json"),
    }


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
