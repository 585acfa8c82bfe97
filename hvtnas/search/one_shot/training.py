"""Training a supernet with the project's trainer, checkpointed after every epoch and resumable,
and evaluating its sub-networks with the weights they inherit."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_args

import torch

from hvtnas.config import ArchConfig, InputConfig
from hvtnas.costs import CostSettings, measure_costs
from hvtnas.errors import HvtnasError
from hvtnas.models.metaformer import MetaFormer
from hvtnas.search.one_shot.config import FinetuneScope, OneShotConfig
from hvtnas.search.one_shot.supernet import Supernet, recalibrate_batchnorm
from hvtnas.space import SearchSpace
from hvtnas.train import ImageData, TrainConfig
from hvtnas.train.trainer import EpochReport, TrialResult, evaluate_model, train_model, training_batches

SUPERNET_FORMAT = 1
SUPERNET_FILE = "supernet.pt"


SAMPLED_LIMITS = ("flops", "flops_dense", "params")  # counted on the meta device: no real compute


def within_limits(
    constraints: Mapping[str, float], costs: CostSettings | None = None
) -> Callable[[MetaFormer], bool] | None:
    """Whether a model (one built by ``build_model``, on the meta device or not) is within the
    FLOPs and parameter ``constraints`` (None when there are none of those); ``costs``: the
    experiment's settings (its resolutions)."""
    limits = {name: limit for name, limit in constraints.items() if name in SAMPLED_LIMITS}
    if not limits:
        return None
    dense = costs.dense_resolution if costs is not None and "flops_dense" in limits else None
    settings = CostSettings(resolution=costs.resolution if costs else None, dense_resolution=dense)

    def accept(model: MetaFormer) -> bool:
        measured = measure_costs(model, settings)
        return all(measured.metric(name) <= limit for name, limit in limits.items())

    return accept


def build_supernet(
    space: SearchSpace,
    data: ImageData,
    cfg: OneShotConfig,
    seed: int = 0,
    constraints: Mapping[str, float] | None = None,
    costs: CostSettings | None = None,
) -> Supernet:
    """The supernet of ``space`` for ``data`` (its channels, resolution and classes); with
    ``cfg.constrained_sampling``, training draws its random paths within ``constraints``."""
    data_input = InputConfig(channels=data.channels, resolution=data.resolution, num_classes=data.num_classes)
    accept = within_limits(constraints or {}, costs) if cfg.constrained_sampling else None
    return Supernet(
        space,
        data_input,
        rule=cfg.rule,
        sandwich_random=cfg.sandwich_random,
        distill=cfg.distill,
        ffn_per_kind=not cfg.shared_ffn,
        shared_parts=cfg.shared_parts,
        cover_samples=cfg.cover_samples,
        seed=seed,
        accept=accept,
    )


def _fingerprint(supernet: Supernet) -> str:
    """The supernet's slots and shapes: a checkpoint only resumes into the same supernet."""
    return hashlib.sha256(json.dumps(supernet.slot_index(), sort_keys=True).encode()).hexdigest()[:16]


def save_supernet(path: Path, supernet: Supernet, state: dict[str, Any]) -> None:
    """Write the trainer's state (weights, optimizer, RNG, history) atomically, with the slots."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **state,
        "format": SUPERNET_FORMAT,
        "fingerprint": _fingerprint(supernet),
        "slots_json": json.dumps(supernet.slot_index()),
        "input_json": json.dumps(supernet.input.model_dump() if supernet.input is not None else None),
    }
    partial = path.with_name(path.name + ".part")
    torch.save(payload, partial)
    os.replace(partial, path)


def load_supernet_state(path: Path, supernet: Supernet) -> dict[str, Any]:
    """A checkpoint of this supernet (``weights_only`` load); refuses another space's."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise HvtnasError(
            f"{path}: not a readable supernet checkpoint ({str(err).splitlines()[0][:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != SUPERNET_FORMAT:
        raise HvtnasError(f"{path}: not a supernet checkpoint of format {SUPERNET_FORMAT}")
    if payload.get("fingerprint") != _fingerprint(supernet):
        raise HvtnasError(
            f"{path}: a supernet of other slots (another space, data or one_shot settings); "
            "delete it or use another output folder"
        )
    return payload


def load_supernet(path: Path, space: SearchSpace, cfg: OneShotConfig, seed: int = 0) -> tuple[Supernet, int]:
    """The supernet a checkpoint holds (built for the input it was trained on) and the epochs
    it was trained for."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        stored_input = json.loads(payload["input_json"])
    except Exception as err:
        raise HvtnasError(
            f"{path}: not a readable supernet checkpoint ({str(err).splitlines()[0][:200]})"
        ) from None
    supernet = Supernet(
        space,
        InputConfig(**stored_input) if stored_input is not None else None,
        rule=cfg.rule,
        sandwich_random=cfg.sandwich_random,
        distill=cfg.distill,
        ffn_per_kind=not cfg.shared_ffn,
        shared_parts=cfg.shared_parts,
        cover_samples=cfg.cover_samples,
        seed=seed,
    )
    state = load_supernet_state(path, supernet)
    supernet.load_state_dict(state["model"])
    return supernet, int(state["epoch"])


def train_supernet(
    supernet: Supernet,
    data: ImageData,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    progress: bool = False,
) -> TrialResult:
    """Train ``supernet`` with the trainer (its ``training_loss`` samples the paths of each step),
    checkpointing ``out_dir/supernet.pt`` after every epoch. A checkpoint there is resumed from
    (weights, optimizer, step, RNG: the same result as an uninterrupted run); a finished one is
    loaded and not trained again."""
    path = Path(out_dir) / SUPERNET_FILE
    resume_state = load_supernet_state(path, supernet) if path.is_file() else None
    if resume_state is not None and int(resume_state["epoch"]) >= cfg.epochs:
        supernet.load_state_dict(resume_state["model"])
        result = TrialResult(status="completed", params=sum(p.numel() for p in supernet.parameters()))
        result.train_seconds = float(resume_state.get("train_seconds", 0.0))
        result.images_seen = int(resume_state.get("images_seen", 0))
        result.epochs = [EpochReport(**e) for e in resume_state.get("history", [])]
        return result
    torch.manual_seed(cfg.seed)
    return train_model(
        supernet,
        data,
        cfg,
        progress=progress,
        resume_state=resume_state,
        on_checkpoint=lambda state: save_supernet(path, supernet, state),
    )


def inherited_model(
    supernet: Supernet,
    arch: ArchConfig,
    data: ImageData,
    cfg: TrainConfig,
    bn_batches: int = 4,
    *,
    finetune_steps: int = 0,
    finetune_lr: float | None = None,
    finetune_scope: FinetuneScope = "all",
) -> tuple[MetaFormer, tuple[float, float] | None]:
    """``arch`` as a standalone model (eval mode) with the weights it inherits from ``supernet``,
    as a one-shot trial evaluates it: with ``finetune_steps``, after that many training steps of
    the sub-network alone (see ``OneShotConfig``), else with its BatchNorm statistics re-estimated
    on ``bn_batches`` training batches. Beside it, the validation (loss, accuracy) the fine-tuning
    measured at its end (None without fine-tuning): no second pass over the validation set."""
    model = supernet.extract(arch).to(supernet._device())
    measured = None
    if finetune_steps > 0:
        measured = finetune(model, data, cfg, finetune_steps, finetune_lr, finetune_scope)
    else:
        recalibrate_batchnorm(model, training_batches(data, cfg, bn_batches))
    return model.eval(), measured


def inherited_accuracy(
    supernet: Supernet,
    arch: ArchConfig,
    data: ImageData,
    cfg: TrainConfig,
    bn_batches: int = 4,
    *,
    finetune_steps: int = 0,
    finetune_lr: float | None = None,
    finetune_scope: FinetuneScope = "all",
) -> tuple[float, float]:
    """Validation (loss, accuracy) of ``inherited_model`` (same arguments)."""
    model, measured = inherited_model(
        supernet,
        arch,
        data,
        cfg,
        bn_batches,
        finetune_steps=finetune_steps,
        finetune_lr=finetune_lr,
        finetune_scope=finetune_scope,
    )
    return measured if measured is not None else evaluate_model(model, data, cfg)


def finetune(
    model: MetaFormer,
    data: ImageData,
    cfg: TrainConfig,
    steps: int,
    lr: float | None = None,
    scope: FinetuneScope = "all",
) -> tuple[float, float]:
    """Train ``model`` (every weight, or with ``scope="head"`` its classifier head alone) for
    ``steps`` steps of ``cfg``'s batch size on a fixed subset of the training images (the same for
    every sub-network: their fine-tunings compare), at a constant ``lr`` (default ``cfg.lr``);
    then its validation (loss, accuracy). BatchNorm statistics follow the training batches, as in
    any training. Which parameters train is restored afterwards."""
    if scope not in get_args(FinetuneScope):
        raise HvtnasError(f"fine-tuning scope {scope!r}: expected one of {get_args(FinetuneScope)}")
    learns = {param: param.requires_grad for param in model.parameters()}
    if scope == "head":  # the backbone as inherited; only the head learns (a linear probe of it)
        model.requires_grad_(False)
        model.head.requires_grad_(True)
    try:
        return _train_briefly(model, data, cfg, steps, lr)
    finally:
        for param, flag in learns.items():
            param.requires_grad_(flag)


def _train_briefly(
    model: MetaFormer, data: ImageData, cfg: TrainConfig, steps: int, lr: float | None
) -> tuple[float, float]:
    subset = data.training_subset(steps * cfg.batch_size, seed=cfg.seed)
    # steps beyond one pass over the training split: more passes, rounded to whole ones
    passes = max(1, round(steps * cfg.batch_size / subset.num_train))
    recipe = cfg.model_copy(
        update={"epochs": passes, "warmup_epochs": 0.0, "min_lr_ratio": 1.0, "lr": lr or cfg.lr}
    )
    with torch.random.fork_rng(devices=[]):  # the same draws (drop path, crops) for every trial
        torch.manual_seed(cfg.seed)
        result = train_model(model, subset, recipe)
    if result.status != "completed" or not result.epochs:
        raise HvtnasError(f"fine-tuning an inherited sub-network failed: {result.reason}")
    last = result.epochs[-1]
    return last.val_loss, last.val_accuracy
