"""Full-fidelity training of one architecture (``hvtnas train``): a run config, checkpoints after
every epoch, ``resume``, final metrics, and DistributedDataParallel under ``torchrun``.

A run config is YAML::

    arch: my_arch.yaml          # a file (relative to this config), a zoo name, or an inline mapping
    data: {name: cifar10, path: data/cifar-10-python.tar.gz}
    train: {epochs: 100, batch_size: 256}
    output_dir: runs/train/my_arch   # default: runs/train/<arch name>

A bare architecture config is accepted too. One that ``hvtnas export`` wrote carries the search's
recipe (``metadata.recipe``: its data and training settings), which ``apply_recipe`` fills in for
the sections the config does not give; otherwise, and with ``--no-recipe``, the defaults and the
command line decide. Relative paths in a config are relative to the config's folder.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from hvtnas.config import ArchConfig, format_validation_error, load_yaml_with_lines
from hvtnas.errors import ConfigError, HvtnasError
from hvtnas.io import atomic_write_text, read_text
from hvtnas.train.checkpoint import load_checkpoint, save_checkpoint
from hvtnas.train.data import DataConfig, load_dataset
from hvtnas.train.trainer import TrainConfig, TrialResult, adapt_arch_to_data, resolve_device, train_model

log = logging.getLogger("hvtnas.train")

CHECKPOINT_NAME = "checkpoint.pt"


class RunConfigError(HvtnasError):
    """A training run config is invalid; one line per problem with file, line and field."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        where = f"invalid training config {source}" if source else "invalid training config"
        super().__init__(where + ":\n" + "\n".join(f"  {p}" for p in problems))


class TrainRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arch: str | dict[str, Any]
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    output_dir: Path | None = None


def read_run_config(path: str | Path) -> tuple[TrainRunConfig, ArchConfig]:
    """A run config (or a bare architecture config) and its resolved architecture."""
    path = Path(path)
    try:
        text = read_text(path, "training config")
    except ConfigError as err:
        raise RunConfigError(err.problems) from None
    data, lines = load_yaml_with_lines(text, str(path))
    if not isinstance(data, dict):
        raise RunConfigError([f"{path}: expected a mapping at the top level, got {type(data).__name__}"])
    if "stages" in data and "arch" not in data:  # a bare architecture config
        data = {"arch": data}
        lines = {("arch", *k): v for k, v in lines.items()}
    try:
        run = TrainRunConfig.model_validate(data)
    except ValidationError as err:
        raise RunConfigError(format_validation_error(err, str(path), lines), str(path)) from None
    base = path.parent
    if isinstance(run.arch, dict):
        arch_lines = {k[1:]: v for k, v in lines.items() if k[:1] == ("arch",)}
        arch = ArchConfig.from_dict(run.arch, source=str(path), lines=arch_lines)
    else:
        candidate = base / run.arch
        if Path(run.arch).suffix in (".yaml", ".yml") or candidate.is_file():
            if not candidate.is_file():
                line = lines.get(("arch",))
                where = f"{path}:{line}" if line else str(path)
                raise RunConfigError(
                    [f"{where}: arch: {candidate}: no such file (relative to the config's folder)"]
                )
            arch = ArchConfig.from_yaml(candidate)
        else:
            from hvtnas.models import resolve_config

            arch = resolve_config(run.arch)  # a zoo name
    updates: dict[str, Any] = {}
    if run.data.path is not None and not run.data.path.is_absolute():
        updates["data"] = run.data.model_copy(update={"path": base / run.data.path})
    if run.output_dir is not None and not run.output_dir.is_absolute():
        updates["output_dir"] = base / run.output_dir
    return run.model_copy(update=updates), arch


def apply_recipe(run: TrainRunConfig, arch: ArchConfig, source: str) -> tuple[TrainRunConfig, str | None]:
    """Fill the ``data`` and ``train`` sections the run config leaves out (all of them, for a bare
    exported architecture) from the search recipe in ``arch.metadata``; returns the run and a
    sentence saying what was taken (``None``: no recipe, or nothing left to fill)."""
    recipe = (arch.metadata or {}).get("recipe")
    if not isinstance(recipe, dict):
        return run, None
    missing = [k for k in ("data", "train") if k not in run.model_fields_set and k in recipe]
    if not missing:
        return run, None
    updates: dict[str, Any] = {}
    problems: list[str] = []
    for section, model in (("data", DataConfig), ("train", TrainConfig)):
        if section in missing:
            try:
                updates[section] = model.model_validate(recipe[section])
            except ValidationError as err:
                problems += prefixed_validation_errors(err, prefix=f"metadata.recipe.{section}")
    if problems:
        raise RunConfigError([*problems, "(train it without the recipe: --no-recipe)"], source)
    run = run.model_copy(update=updates)
    parts = []
    if "data" in updates:
        d = run.data
        where = f" {d.path}" if d.path is not None else ""
        size = f" at {d.resolution}x{d.resolution}" if d.resolution else ""
        parts.append(f"data {d.name}{where}{size}, fraction {d.fraction:g}, split seed {d.split_seed}")
    if "train" in updates:
        t = run.train
        parts.append(f"{t.epochs} epochs, batch {t.batch_size}, lr {t.lr:g}, seed {t.seed}")
    study = recipe.get("study", "?")
    return run, f"training with the recipe of study {study!r}: " + "; ".join(parts)


def prefixed_validation_errors(err: ValidationError, prefix: str) -> list[str]:
    """pydantic errors as ``prefix.field: message (got value)`` lines (for command-line overrides)."""
    return [f"{prefix}.{line}" for line in format_validation_error(err)]


def default_output_dir(arch: ArchConfig) -> Path:
    return Path("runs") / "train" / (arch.name or "arch")


def run_training(
    run: TrainRunConfig,
    arch: ArchConfig,
    output_dir: Path,
    *,
    resume: bool = False,
    progress: bool = False,
    weights: Path | None = None,
    artifacts: set[str] | frozenset[str] = frozenset(),
) -> TrialResult:
    """Train ``arch`` as ``run`` says; checkpoint to ``output_dir`` after every epoch and write
    ``metrics.json``, ``arch.yaml`` and ``run.yaml`` there. Under ``torchrun`` with several
    processes, trains with DDP (NCCL on GPUs, Gloo on CPUs); only rank 0 writes files.

    ``weights``: start from a weights file (hvtnas's, timm's or an official checkpoint; see
    ``hvtnas.models.weights``) instead of a random initialisation; a classifier for another
    number of classes than the data's stays freshly initialised. Ignored on ``resume``.
    ``artifacts``: also write the trained model as ``model.safetensors``, ``model.onnx`` (checked
    with onnxruntime) and a ``model_card.md`` (``hvtnas.artifacts.ARTIFACTS``)."""
    resolve_device(run.train.device)  # refuse a bad device before anything is written
    checkpoint_path = output_dir / CHECKPOINT_NAME
    resume_state = None
    if resume:
        if not checkpoint_path.is_file():
            raise HvtnasError(f"--resume: {checkpoint_path} does not exist (nothing to resume)")
        resume_state = load_checkpoint(checkpoint_path)
        if resume_state["arch"].to_dict() != adapt_arch_to_data_dict(arch, resume_state["arch"]):
            raise HvtnasError(
                f"--resume: {checkpoint_path} holds a different architecture than the config; "
                "use another --out to train this one"
            )
    elif checkpoint_path.exists():
        raise HvtnasError(
            f"{checkpoint_path} already exists: pass --resume to continue it, or choose another --out"
        )
    data = load_dataset(run.data.for_arch(arch.input.channels, arch.input.resolution))
    arch = adapt_arch_to_data(arch, data)
    from hvtnas.models import build_model

    # join torchrun's process group only once the inputs are known to be good
    distributed = _init_distributed(run.train)
    rank = dist.get_rank() if distributed else 0
    train_cfg = run.train
    if distributed and _uses_cuda(train_cfg):  # one GPU per process
        train_cfg = train_cfg.model_copy(update={"device": f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"})
    torch.manual_seed(train_cfg.seed)
    model = build_model(arch)
    init_layout = None
    if weights is not None and resume_state is None:
        from hvtnas.models.weights import load_weights

        init_layout, _ = load_weights(model, weights)

    def checkpoint(state: dict[str, Any]) -> None:
        save_checkpoint(checkpoint_path, state, arch)

    try:
        if rank == 0:
            output_dir.mkdir(parents=True, exist_ok=True)
            arch.to_yaml(output_dir / "arch.yaml")
            resolved = run.model_copy(update={"arch": arch.to_dict(), "output_dir": output_dir})
            atomic_write_text(
                output_dir / "run.yaml",
                yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False, default_flow_style=None),
            )
        result = train_model(
            model, data, train_cfg, progress=progress, resume_state=resume_state, on_checkpoint=checkpoint
        )
        if distributed:  # no rank tears the group down while another is still in a collective
            dist.barrier()
    finally:
        if distributed:
            dist.destroy_process_group()
    if rank == 0:
        metrics = {
            **result.to_dict(),
            "arch": arch.name,
            "dataset": data.name,
            "checkpoint": str(checkpoint_path),
        }
        if init_layout is not None:
            metrics["init_weights"] = {"path": str(weights), "layout": init_layout}
        if artifacts and result.status != "failed":
            files = _write_artifacts(model, run, arch, result, output_dir, set(artifacts), metrics)
            metrics["files"] = {what: str(path) for what, path in files.items()}
        atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=1))
    return result


def _write_artifacts(
    model: torch.nn.Module,
    run: TrainRunConfig,
    arch: ArchConfig,
    result: TrialResult,
    output_dir: Path,
    which: set[str],
    metrics: dict[str, Any],
) -> dict[str, Path]:
    """The trained model's safetensors, ONNX graph and model card (accuracy with this run's recipe;
    latency measured on the training device)."""
    from hvtnas.artifacts import fill_costs, write_artifacts
    from hvtnas.card import ModelCard
    from hvtnas.costs import CostSettings, LatencySettings

    model = getattr(model, "module", model)  # DDP's wrapper
    card = None
    if "card" in which:
        device = str(next(model.parameters()).device)
        epochs = len(result.epochs)
        card = ModelCard(
            arch=arch,
            accuracy=result.val_accuracy,
            accuracy_note=f"after {epochs} epoch(s) of `hvtnas train` on {metrics['dataset']}"
            + (f", starting from {metrics['init_weights']['path']}" if "init_weights" in metrics else ""),
            recipe={
                "data": run.data.model_dump(mode="json", exclude_none=True),
                "train": run.train.model_dump(mode="json", exclude_none=True),
            },
            study=arch.metadata or None,
            files={"config": "arch.yaml"},
        )
        latency = LatencySettings(device=device, warmup=3, repeats=10)
        card = fill_costs(card, model, CostSettings(latency=latency), cache=None)
    return write_artifacts(model.eval(), output_dir, "model", which, card, card_name="model_card.md")


def adapt_arch_to_data_dict(arch: ArchConfig, stored: ArchConfig) -> dict[str, Any]:
    """``arch`` with the stored checkpoint's input section, for comparing the rest."""
    return arch.model_copy(update={"input": stored.input}).to_dict()


def _uses_cuda(cfg: TrainConfig) -> bool:
    return torch.cuda.is_available() and not cfg.device.startswith("cpu")


def _init_distributed(cfg: TrainConfig) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    cuda = _uses_cuda(cfg)
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True
