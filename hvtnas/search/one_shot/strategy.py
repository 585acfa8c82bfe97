"""``strategy: one_shot`` in a study: the supernet is trained once (``prepare_supernet``) and every
trial's architecture is evaluated with the weights it inherits from it (``InheritedEvaluator``).
The rest of a trial (sampling, dedup, costs, constraints, records) is the study's, unchanged."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hvtnas.config import ArchConfig
from hvtnas.errors import HvtnasError
from hvtnas.search.one_shot.config import OneShotConfig
from hvtnas.search.one_shot.supernet import Supernet
from hvtnas.search.one_shot.training import (
    SUPERNET_FILE,
    build_supernet,
    inherited_accuracy,
    load_supernet_state,
    train_supernet,
)
from hvtnas.train import ImageData, TrainConfig
from hvtnas.train.trainer import TrialResult

if TYPE_CHECKING:
    from hvtnas.search.study import SearchSpec

SUPERNET_ATTR = "supernet"  # study user attribute: the trained supernet's checkpoint (absolute path)


def one_shot_settings(spec: SearchSpec) -> tuple[OneShotConfig, TrainConfig]:
    """The experiment's one-shot settings and the supernet's training recipe."""
    exp = spec.experiment
    cfg = exp.one_shot or OneShotConfig()
    return cfg, cfg.train or exp.train


def prepare_supernet(
    spec: SearchSpec, data: ImageData, out_dir: Path, *, progress: bool = False
) -> tuple[Supernet, TrialResult]:
    """Train the space's supernet into ``out_dir`` (resumed from a checkpoint there; a finished
    one is loaded, not trained again)."""
    cfg, train = one_shot_settings(spec)
    supernet = build_supernet(spec.space, data, cfg, seed=train.seed)
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
                    "first trial (or `hvtnas supernet train SPACE`)"
                )
            supernet = build_supernet(self.spec.space, self.data, cfg, seed=train.seed)
            state = load_supernet_state(self.checkpoint, supernet)
            if int(state["epoch"]) < train.epochs:
                raise HvtnasError(
                    f"{self.checkpoint}: the supernet is trained to epoch {state['epoch']} of "
                    f"{train.epochs}; finish it first (rerun `hvtnas search` or `hvtnas supernet train`)"
                )
            supernet.load_state_dict(state["model"])
            from hvtnas.train.trainer import resolve_device

            self._supernet = supernet.to(resolve_device(train.device)).eval()
        return self._supernet

    def evaluate(self, arch: ArchConfig) -> dict[str, Any]:
        """``val_accuracy``, ``val_loss`` and the seconds it took, for the trial's records."""
        cfg, train = one_shot_settings(self.spec)
        started = time.perf_counter()
        loss, accuracy = inherited_accuracy(self.supernet(), arch, self.data, train, cfg.bn_batches)
        return {
            "val_accuracy": accuracy,
            "val_loss": loss,
            "seconds": time.perf_counter() - started,
            "supernet": str(self.checkpoint),
        }


def supernet_checkpoint(out_dir: Path) -> Path:
    return Path(out_dir).resolve() / SUPERNET_FILE
