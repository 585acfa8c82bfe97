"""``strategy: one_shot`` in a study: the supernet is trained once (``prepare_supernet``) and every
trial's architecture is evaluated with the weights it inherits from it (``InheritedEvaluator``).
The rest of a trial (sampling, dedup, costs, constraints, records) is the study's, unchanged."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvtnas.config import ArchConfig
from hvtnas.errors import HvtnasError
from hvtnas.models.metaformer import MetaFormer
from hvtnas.search.one_shot.config import OneShotConfig
from hvtnas.search.one_shot.supernet import Supernet
from hvtnas.search.one_shot.training import (
    SUPERNET_FILE,
    build_supernet,
    inherited_accuracy,
    inherited_model,
    load_supernet,
    train_supernet,
)
from hvtnas.train import ImageData, TrainConfig
from hvtnas.train.trainer import TrialResult, resolve_device

if TYPE_CHECKING:
    from hvtnas.search.study import SearchSpec

SUPERNET_ATTR = "supernet"  # study user attribute: the trained supernet's checkpoint (absolute path)


def one_shot_settings(spec: SearchSpec) -> tuple[OneShotConfig, TrainConfig]:
    """The experiment's one-shot settings and the supernet's training recipe."""
    exp = spec.experiment
    cfg = exp.one_shot or OneShotConfig()
    return cfg, cfg.supernet_recipe(exp.train)


def prepare_supernet(
    spec: SearchSpec, data: ImageData, out_dir: Path, *, progress: bool = False
) -> tuple[Supernet, TrialResult]:
    """Train the space's supernet into ``out_dir`` (resumed from a checkpoint there; a finished
    one is loaded, not trained again)."""
    cfg, train = one_shot_settings(spec)
    exp = spec.experiment
    supernet = build_supernet(
        spec.space, data, cfg, seed=train.seed, constraints=exp.constraints, costs=exp.costs
    )
    result = train_supernet(supernet, data, train, out_dir, progress=progress)
    if result.status != "completed":
        raise HvtnasError(f"supernet training failed: {result.reason}")
    return supernet, result


@dataclass
class InheritedEvaluator:
    """Loads the trained supernet once (per worker) and evaluates architectures with the
    weights they inherit: no training, BatchNorm statistics re-estimated where there is any."""

    spec: SearchSpec
    data: ImageData
    checkpoint: Path
    _supernet: Supernet | None = field(default=None, init=False)

    def supernet(self) -> Supernet:
        if self._supernet is None:
            cfg, train = one_shot_settings(self.spec)
            if not self.checkpoint.is_file():
                raise HvtnasError(
                    f"{self.checkpoint}: no trained supernet; `hvtnas search` trains it before the "
                    "first trial"
                )
            supernet, epochs = load_supernet(self.checkpoint, self.spec.space, cfg, seed=train.seed)
            if epochs < train.epochs:
                raise HvtnasError(
                    f"{self.checkpoint}: the supernet is trained to epoch {epochs} of {train.epochs}; "
                    "rerun `hvtnas search`, which resumes its training"
                )
            self._supernet = supernet.to(resolve_device(train.device)).eval()
        return self._supernet

    def _evaluation(self) -> dict[str, Any]:
        """How a trial's sub-network is readied for evaluation (the one place that reads it)."""
        cfg, _ = one_shot_settings(self.spec)
        return {
            "bn_batches": cfg.bn_batches,
            "finetune_steps": cfg.finetune_steps,
            "finetune_lr": cfg.finetune_rate(self.spec.experiment.train),
            "finetune_scope": cfg.finetune_scope,
        }

    def model(self, arch: ArchConfig) -> MetaFormer:
        """``arch`` with the weights a trial evaluates it with (what an export writes)."""
        _, train = one_shot_settings(self.spec)
        return inherited_model(self.supernet(), arch, self.data, train, **self._evaluation())[0]

    def evaluate(self, arch: ArchConfig) -> dict[str, Any]:
        """``val_accuracy``, ``val_loss`` and the seconds it took, for the trial's records."""
        _, train = one_shot_settings(self.spec)
        started = time.perf_counter()
        loss, accuracy = inherited_accuracy(self.supernet(), arch, self.data, train, **self._evaluation())
        return {
            "val_accuracy": accuracy,
            "val_loss": loss,
            "seconds": time.perf_counter() - started,
            "supernet": str(self.checkpoint),
        }


def supernet_checkpoint(out_dir: Path) -> Path:
    return Path(out_dir).resolve() / SUPERNET_FILE


def study_model(study_attrs: dict[str, Any], space_text: str, arch: ArchConfig) -> MetaFormer | None:
    """``arch`` with the weights a one-shot study evaluated it with (inherited from its supernet,
    readied as its trials were, on its data), or None for a study of another strategy. What an
    export writes."""
    checkpoint = study_attrs.get(SUPERNET_ATTR)
    if checkpoint is None:
        return None
    if not Path(checkpoint).is_file():
        raise HvtnasError(
            f"the study's supernet {checkpoint} is gone: its inherited weights cannot be exported"
        )
    space_path = study_attrs.get("recipe", {}).get("space", "space.yaml")
    return _study_evaluator(str(checkpoint), space_text, space_path).model(arch)


@functools.lru_cache(maxsize=1)  # an export writes several trials of one study: load it once
def _study_evaluator(checkpoint: str, space_text: str, space_path: str) -> InheritedEvaluator:
    from hvtnas.search.study import parse_search_spec, space_dataset

    spec = parse_search_spec(space_text, Path(space_path))
    return InheritedEvaluator(spec, space_dataset(spec), Path(checkpoint))
