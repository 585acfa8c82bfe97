"""One-shot search: a weight-sharing supernet over a search space, trained once, whose
sub-networks are evaluated with inherited weights instead of being trained one by one."""

from hvtnas.search.one_shot.config import OneShotConfig
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
    inherited_accuracy,
    load_supernet_state,
    save_supernet,
    train_supernet,
)

__all__ = [
    "OneShotConfig",
    "PathChooser",
    "Slot",
    "Supernet",
    "SupernetError",
    "build_supernet",
    "covering_points",
    "inherited_accuracy",
    "load_supernet_state",
    "recalibrate_batchnorm",
    "save_supernet",
    "slot_of",
    "train_supernet",
]
