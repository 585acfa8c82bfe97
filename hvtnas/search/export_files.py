"""What ``hvtnas export --card --onnx --safetensors`` writes beside a trial's config: the model card
with the search's evidence (costs measured in the study, the proxy accuracy and the recipe that
produced it, the study and trial), and the architecture's ONNX graph and initial weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import FrozenTrial

from hvtnas.card import ModelCard
from hvtnas.config import ArchConfig
from hvtnas.costs import CostCache, CostSettings, LatencySettings


def search_recipe(study: optuna.Study, t: FrozenTrial) -> dict[str, Any] | None:
    """The data and training settings of the study's trials (its space file's experiment, with
    defaults filled in): the recipe behind a trial's accuracy."""
    from hvtnas.search.experiment import ExperimentConfig

    text = study.user_attrs.get("space_yaml")
    if not text:
        return None
    raw = (yaml.safe_load(text) or {}).get("experiment") or {}
    try:
        exp = ExperimentConfig.model_validate(raw)
    except ValueError:
        return None
    recipe: dict[str, Any] = {
        "data": exp.data.model_dump(mode="json", exclude_none=True),
        "train": exp.train.model_dump(mode="json", exclude_none=True),
    }
    if t.user_attrs.get("proxy_resolution"):
        recipe["data"]["resolution"] = t.user_attrs["proxy_resolution"]
    return recipe


def trial_card(study: optuna.Study, t: FrozenTrial, cfg: ArchConfig, config_file: str) -> ModelCard:
    costs: dict[str, Any] = t.user_attrs.get("costs") or {}
    metadata = cfg.metadata or {}
    objectives = metadata.get("objectives") or {}
    dense = costs.get("dense_resolution")
    return ModelCard(
        arch=cfg,
        params=costs.get("params"),
        flops=costs.get("flops"),
        flops_dense=costs.get("flops_dense"),
        dense_resolution=f"{dense['width']}x{dense['height']}" if dense else None,
        latency=costs.get("latency"),
        accuracy=objectives.get("accuracy"),
        accuracy_note=(
            "validation accuracy with the weights inherited from the one-shot study's supernet "
            "(untrained on their own), a ranking signal; train it with `hvtnas train`"
            if t.user_attrs.get("inherited")
            else "validation accuracy of the search's short proxy training (recipe below), "
            "a ranking signal, not a full training; train it with `hvtnas train`"
        ),
        recipe=search_recipe(study, t),
        study={
            "study": study.study_name,
            "trial": t.number,
            "objectives": objectives,
            "constraints": t.user_attrs.get("constraints") or None,
            "Pareto-optimal": any(b.number == t.number for b in study.best_trials),
            "completed trials in the study": len(
                study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            ),
        },
        files={"config": config_file},
    )


def export_trial_files(
    study: optuna.Study,
    t: FrozenTrial,
    config_path: Path,
    which: set[str],
    seed: int = 0,
    cache: CostCache | None = None,
) -> dict[str, Path]:
    """Write ``which`` of ``hvtnas.artifacts.ARTIFACTS`` beside an exported config. The weights and
    the ONNX graph are the architecture's initialisation (seeded): the search does not keep trained
    weights; ``hvtnas train`` writes trained ones."""
    from hvtnas.artifacts import fill_costs, write_artifacts
    from hvtnas.models import build_model
    from hvtnas.search.one_shot.strategy import study_model

    cfg = ArchConfig.from_yaml(config_path)
    inherited = study_model(study.user_attrs, study.user_attrs.get("space_yaml", ""), cfg)
    if inherited is not None:  # a one-shot study: the weights it evaluated, inherited from its supernet
        model = inherited
    else:
        torch.manual_seed(seed)
        model = build_model(cfg).eval()
    card = None
    if "card" in which:
        card = trial_card(study, t, cfg, config_path.name)
        # what the study did not measure: dense FLOPs, latency (on this machine's CPU)
        settings = CostSettings(latency=LatencySettings(warmup=3, repeats=10))
        card = fill_costs(card, model, settings, cache)
        if which & {"safetensors", "onnx"} and inherited is not None:
            card.notes.append(
                "The weights and ONNX graph beside this card are the ones the one-shot study measured: "
                "inherited from its supernet (after the head re-fit or fine-tuning steps its trials took), "
                "not trained on their own: "
                "`hvtnas train` this config with `--weights` to fine-tune from them."
            )
        elif which & {"safetensors", "onnx"}:
            card.notes.append(
                f"The weights and ONNX graph beside this card are the untrained initialisation (seed {seed}):"
                " a search keeps no trained weights."
            )
    return write_artifacts(model, config_path.parent, config_path.stem, which, card)
