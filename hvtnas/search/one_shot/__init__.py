"""One-shot search: a weight-sharing supernet over a search space, trained once, whose
sub-networks are evaluated with the weights they inherit instead of being trained one by one.

- ``supernet``: the ``Supernet`` (slots, paths, extraction) and BatchNorm recalibration;
- ``training``: training it with the project's trainer, checkpointed and resumable;
- ``strategy``: what a study with ``strategy: one_shot`` uses (``prepare_supernet``,
  ``InheritedEvaluator``);
- ``config``: the experiment's ``one_shot`` section.

Names are imported on first use (PEP 562), as in ``hvtnas.search``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hvtnas._lazy import lazy_getattr

if TYPE_CHECKING:
    from hvtnas.search.one_shot.config import OneShotConfig
    from hvtnas.search.one_shot.strategy import InheritedEvaluator, prepare_supernet
    from hvtnas.search.one_shot.supernet import (
        PathChooser,
        Slot,
        Supernet,
        SupernetError,
        covering_points,
        recalibrate_batchnorm,
        slot_of,
    )
    from hvtnas.search.one_shot.training import (
        build_supernet,
        finetune,
        inherited_accuracy,
        load_supernet_state,
        save_supernet,
        train_supernet,
    )

_LAZY = {
    "OneShotConfig": "hvtnas.search.one_shot.config",
    "InheritedEvaluator": "hvtnas.search.one_shot.strategy",
    "prepare_supernet": "hvtnas.search.one_shot.strategy",
    "PathChooser": "hvtnas.search.one_shot.supernet",
    "Slot": "hvtnas.search.one_shot.supernet",
    "Supernet": "hvtnas.search.one_shot.supernet",
    "SupernetError": "hvtnas.search.one_shot.supernet",
    "covering_points": "hvtnas.search.one_shot.supernet",
    "recalibrate_batchnorm": "hvtnas.search.one_shot.supernet",
    "slot_of": "hvtnas.search.one_shot.supernet",
    "build_supernet": "hvtnas.search.one_shot.training",
    "finetune": "hvtnas.search.one_shot.training",
    "inherited_accuracy": "hvtnas.search.one_shot.training",
    "load_supernet_state": "hvtnas.search.one_shot.training",
    "save_supernet": "hvtnas.search.one_shot.training",
    "train_supernet": "hvtnas.search.one_shot.training",
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "InheritedEvaluator",
    "OneShotConfig",
    "PathChooser",
    "Slot",
    "Supernet",
    "SupernetError",
    "build_supernet",
    "covering_points",
    "finetune",
    "inherited_accuracy",
    "load_supernet_state",
    "prepare_supernet",
    "recalibrate_batchnorm",
    "save_supernet",
    "slot_of",
    "train_supernet",
]
