"""The search-quality study's bookkeeping: hypervolume history and Pareto fronts on known points."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "search_quality.py"


@pytest.fixture(scope="module")
def sq():
    spec = importlib.util.spec_from_file_location("search_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _study(points: list[tuple[float, float] | None]) -> optuna.Study:
    """Trials in order: (accuracy, flops), or None for a pruned trial."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, p in enumerate(points):
        state = optuna.trial.TrialState.PRUNED if p is None else optuna.trial.TrialState.COMPLETE
        study.add_trial(
            optuna.trial.create_trial(
                params={"i": i},
                distributions={"i": IntDistribution(0, 100)},
                values=None if p is None else list(p),
                state=state,
            )
        )
    return study


def test_hypervolume_history_matches_hand_computed_areas(sq):
    # reference point (flops 1.0, error 0.9) with flops_ref 10: points as (flops/10, error)
    study = _study([(0.5, 5.0), None, (0.7, 8.0), (0.05, 2.0), (0.6, 20.0)])
    history = sq.hypervolume_history(study, 5, flops_ref=10.0, error_ref=0.9)
    first = (1.0 - 0.5) * (0.9 - 0.5)  # the box of (0.5, 0.5)
    second = first + (1.0 - 0.8) * (0.5 - 0.3)  # (0.8, 0.3) adds the strip below it
    assert history[0] == pytest.approx(first)
    assert history[1] == pytest.approx(first)  # a pruned trial adds nothing
    assert history[2] == pytest.approx(second)
    assert history[3] == pytest.approx(second)  # worse than chance: outside the reference box
    assert history[4] == pytest.approx(second)  # over the FLOP reference: outside too


def test_pareto_keeps_only_non_dominated_points(sq):
    points = [
        {"accuracy": 0.5, "flops": 1.0},
        {"accuracy": 0.4, "flops": 2.0},  # dominated by the first
        {"accuracy": 0.7, "flops": 3.0},
        {"accuracy": 0.7, "flops": 4.0},  # as accurate, more costly
        {"accuracy": 0.6, "flops": 1.0},  # dominates the first
    ]
    front = sq.pareto(points)
    assert [(p["accuracy"], p["flops"]) for p in front] == [(0.6, 1.0), (0.7, 3.0)]


def test_trials_stopped_early_under_nsga2_count_as_stopped_not_trained(sq):
    """NSGA-II records a stopped trial complete and flagged: it adds nothing to the hypervolume and
    is counted with the pruned ones."""
    study = _study([(0.5, 5.0), None])
    study.add_trial(
        optuna.trial.create_trial(
            params={"i": 2},
            distributions={"i": IntDistribution(0, 100)},
            values=[0.9, 1.0],  # would dominate everything if it counted
            user_attrs={"stopped_early": True},
        )
    )
    history = sq.hypervolume_history(study, 3, flops_ref=10.0, error_ref=0.9)
    assert history[2] == pytest.approx(history[0])
    assert [t.number for t in sq.trained(study)] == [0]
    assert sq.stopped_early(study) == 2
