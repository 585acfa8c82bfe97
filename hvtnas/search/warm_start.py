"""Warm start: a new study's first trials are designs known to work.

The ``warm_start`` section of an experiment names zoo families (scaled to budgets) and architecture
files; each becomes the Optuna parameters under which the space samples it
(``SearchSpace.params_for``), enqueued with ``study.enqueue_trial`` and labelled with the user
attribute ``warm_start`` (``convformer_s18@2M``, or the file's name). The sampler then learns from
them like from any trial, so the front starts at least as good as hand design.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hvtnas.config import ArchConfig
from hvtnas.errors import HvtnasError
from hvtnas.search.outcome import WARM_START_ATTR
from hvtnas.space import NotInSpaceError, SearchSpace


@dataclass(frozen=True)
class WarmStartPoint:
    label: str  # convformer_s18@2M, or an architecture file's name
    arch: ArchConfig
    params: dict[str, Any]  # the space's parameters that sample ``arch``


def budget_label(macs: float) -> str:
    return f"{macs / 1e6:.3g}M" if macs >= 1e5 else f"{macs / 1e3:.3g}K"


def warm_start_points(spec: Any) -> list[WarmStartPoint]:
    """The warm-start designs of a search spec (``hvtnas.search.SearchSpec``), each checked to be a
    point of its space; ``HvtnasError`` names the first that is not, and why."""
    from hvtnas.models import scale_architecture, scale_to_flops, zoo  # torch: only when warm-starting

    settings = spec.experiment.warm_start
    if settings is None:
        return []
    space: SearchSpace = spec.space
    shape = {  # how every design is fitted to the space, at its own width or to a budget
        "depth_mult": settings.depth_mult,
        "input": space.tree.get("input", {}),
        "width_multiple": settings.width_multiple,
        "head_dim": settings.head_dim,
    }
    candidates: list[tuple[str, ArchConfig]] = []
    for budget in settings.flops or [None]:
        for family in settings.zoo:
            if budget is None:
                own = scale_architecture(zoo.get_config(family), name=family, **shape)
                candidates.append((family, own))
            else:
                label = f"{family}@{budget_label(budget)}"
                scaled = scale_to_flops(zoo.get_config(family), budget, name=label, **shape)
                candidates.append((label, scaled))
    for file in settings.configs:
        path = Path(file) if Path(file).is_absolute() else spec.path.parent / file
        arch = ArchConfig.from_yaml(path)
        candidates.append((arch.name or path.stem, arch))
    points = []
    for label, arch in candidates:
        try:
            params = space.params_for(arch)
        except NotInSpaceError as err:
            raise HvtnasError(f"{spec.path}: experiment.warm_start: {err}") from None
        points.append(WarmStartPoint(label, arch, params))
    return points


def distinct_points(points: list[WarmStartPoint]) -> list[WarmStartPoint]:
    """The points without repeats: two designs that are one point of the space (say, two
    budgets that scale a design to the same width) are one trial."""
    first_by_params: dict[str, WarmStartPoint] = {}
    for point in points:
        first_by_params.setdefault(repr(sorted(point.params.items())), point)
    return list(first_by_params.values())


def enqueue_warm_start(study: optuna.Study, points: list[WarmStartPoint]) -> None:
    """Queue the points as the study's next trials (``hvtnas search`` does this once, when it
    creates the study); two points that are one architecture are queued once."""
    for point in distinct_points(points):
        study.enqueue_trial(point.params, user_attrs={WARM_START_ATTR: point.label})
