"""benchmarks/search_overhead.py: it times the real search loop by step and leaves the library as it was."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import optuna
import pytest

import hvtnas.costs.measure as costs_measure
import hvtnas.search.study as search_study

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "search_overhead.py"


def _script():
    spec = importlib.util.spec_from_file_location("search_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_two_quickstart_trials_are_timed_by_step(tmp_path):
    so = _script()
    originals = (search_study.measure_costs, search_study.save_trial_note, costs_measure.count_flops)
    spec, notes = so.overhead_spec(so.SPACES / "quickstart.yaml")
    assert notes == ["objectives ['accuracy', 'flops'] -> ['params', 'flops']"]
    assert spec.experiment.costs.latency is None and spec.experiment.early_stopping is None
    url = f"sqlite:///{tmp_path}/study.db"
    result = so.measure(spec, url, 2, tmp_path / "costs.sqlite")

    rows = result["trials"]
    assert [r["number"] for r in rows] == [0, 1] and result["failed"] == []
    assert all(r["seconds"] > 0 and r["steps"]["ask"] > 0 and r["steps"]["suggest"] > 0 for r in rows)
    assert rows[0]["steps"]["flops"] > 0 and rows[0]["steps"]["build"] > 0  # the first is never a duplicate
    assert all(sum(r["steps"].values()) == pytest.approx(r["seconds"]) for r in rows)
    summary = so.summarize(result)
    assert summary["trials"] == 2 and summary["s_per_trial_mean"] > 0
    # nothing is left wrapped, and the study is gone
    assert (search_study.measure_costs, search_study.save_trial_note, costs_measure.count_flops) == originals
    assert optuna.get_all_study_names(url) == []
