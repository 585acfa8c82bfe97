"""One-shot search: a weight-sharing supernet over a search space, trained once, whose
sub-networks are evaluated with inherited weights instead of being trained one by one."""

from hvtnas.search.one_shot.supernet import (
    PathChooser,
    Slot,
    Supernet,
    SupernetError,
    covering_points,
    recalibrate_batchnorm,
    slot_of,
)

__all__ = [
    "PathChooser",
    "Slot",
    "Supernet",
    "SupernetError",
    "covering_points",
    "recalibrate_batchnorm",
    "slot_of",
]
