"""The search, end to end through the CLI: studies, resume, constraints, duplicates, failures,
early stopping, export, and the errors for bad spaces and command lines."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from hvtnas import build_model
from hvtnas.cli import app
from hvtnas.config import ArchConfig
from hvtnas.train.trainer import TrialResult
from tests.conftest import tiny_search_space

runner = CliRunner()

SPACE = tiny_search_space()


def _write(tmp_path: Path, **experiment: object) -> Path:
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    space["experiment"].update(experiment)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def _search(tmp_path: Path, path: Path, *args: str):
    return runner.invoke(
        app, ["search", str(path), "--runs-dir", str(tmp_path / "runs"), "--no-cache", *args]
    )


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(
        study_name="space", storage=f"sqlite:///{tmp_path / 'runs' / 'space' / 'study.db'}"
    )


def test_search_runs_resumes_and_exports(tmp_path: Path) -> None:
    path = _write(tmp_path)
    result = _search(tmp_path, path, "--trials", "3")
    assert result.exit_code == 0, result.output
    study = _study(tmp_path)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    first = {t.number: t.values for t in study.trials}
    assert len(first) == 3
    # each trial's line gives its objectives in their units
    line = r"trial \d+: trained accuracy 0\.\d{4}, params \d+(\.\d)?K"
    assert re.search(line, result.output), result.output
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for t in complete:
        assert t.values[0] > 0.15  # well above chance (0.1) after one epoch on digits
        assert {"arch", "arch_key", "costs", "wall_seconds"} <= set(t.user_attrs)
        assert t.values[1] == t.user_attrs["costs"]["params"]

    resumed = _search(tmp_path, path, "--trials", "5")
    assert resumed.exit_code == 0, resumed.output
    study = _study(tmp_path)
    assert len(study.trials) == 5
    assert {t.number: t.values for t in study.trials if t.number in first} == first  # nothing lost or changed

    exported = runner.invoke(
        app, ["export", str(tmp_path / "runs" / "space"), "--out", str(tmp_path / "out")]
    )
    assert exported.exit_code == 0, exported.output
    files = sorted((tmp_path / "out").glob("*.yaml"))
    assert files
    for file in files:
        model = build_model(file)
        assert model.arch_config.metadata["study"] == "space"
        built = runner.invoke(app, ["build", str(file), "--json", "--no-cache"])
        assert built.exit_code == 0, built.output
    trained = runner.invoke(
        app, ["train", str(files[0]), "--epochs", "1", "--out", str(tmp_path / "trained"), "--json"]
    )
    assert trained.exit_code == 0, trained.output  # hvtnas train takes an exported config unchanged
    run = tmp_path / "runs" / "space"
    assert (run / "space.yaml").read_text() == path.read_text()
    assert yaml.safe_load((run / "experiment.yaml").read_text())["objectives"] == ["accuracy", "params"]
    assert len((run / "search.log").read_text().splitlines()) == 5


def test_over_budget_architectures_are_never_trained_nor_shown_as_accuracy_0(tmp_path: Path) -> None:
    """Over budget: never trained, COMPLETE with its constraints for the sampler, but labelled
    `over_budget` everywhere, with no accuracy in the terminal, CSV, report, importances or export."""
    space = tiny_search_space(stage2_depth={"int": [1, 3]}, constraints={"params": 6000})  # 4 of 12 fit
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    result = _search(tmp_path, path, "--trials", "8")
    assert result.exit_code == 0, result.output
    study = _study(tmp_path)
    trials = study.trials
    over = [t for t in trials if t.user_attrs.get("constraint_violations")]
    trained = [t for t in trials if t.user_attrs.get("outcome") == "trained"]
    assert over and len(trained) >= 2, "the space should produce over-budget and trained samples"
    for t in over:
        assert "training" not in t.user_attrs and t.state == TrialState.COMPLETE
        assert t.user_attrs["outcome"] in ("over_budget", "duplicate")
        assert (
            t.user_attrs["constraints"]["params"] > 0 and t.constraints["params"] > 0
        )  # the sampler sees it
        assert t.user_attrs["costs"]["params"] > 6000
        line = next(x for x in result.output.splitlines() if x.startswith(f"trial {t.number}:"))
        assert "over budget" in line or "duplicate" in line, line
        assert " 0," not in line and "complete" not in line, line  # no placeholder accuracy
    assert all(t.user_attrs["constraints"]["params"] <= 0 for t in trials if "training" in t.user_attrs)
    assert "over budget" in result.output.splitlines()[-1]  # the summary counts them

    run = tmp_path / "runs" / "space"
    assert runner.invoke(app, ["report", str(run), "--no-cache"]).exit_code == 0
    import pandas as pd

    frame = pd.read_csv(run / "report.csv")
    rows = frame.set_index("trial")
    for t in over:
        assert rows.loc[t.number, "outcome"] in ("over_budget", "duplicate")
        assert pd.isna(rows.loc[t.number, "accuracy"])  # empty, not 0
    assert (frame["accuracy"].dropna() > 0.05).all()
    page = (run / "report.html").read_text()
    n = sum(1 for t in trials if t.user_attrs.get("outcome") == "trained")
    assert f"from {n} trained, distinct, feasible trials (of 8)" in page
    assert f"{sum(t.user_attrs['outcome'] == 'over_budget' for t in trials)} over budget" in page
    assert "params from 6.0K (the constraint limit) to 0" in page  # the hypervolume's reference
    from hvtnas.report import _evaluated_study

    assert sorted(t.values[0] for t in _evaluated_study(study).trials) == sorted(t.values[0] for t in trained)

    assert (
        runner.invoke(app, ["export", str(run), "--top", "20", "--out", str(tmp_path / "x")]).exit_code == 0
    )
    exported = [ArchConfig.from_yaml(f).metadata for f in (tmp_path / "x").glob("*.yaml")]
    assert exported and {m["outcome"] for m in exported} == {"trained"}


def test_duplicates_are_not_trained_again(tmp_path: Path) -> None:
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    space["stages"][0] = {"depth": 1, "width": 8, "heads": 2, "mixers": ["pooling"]}  # one architecture
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    assert _search(tmp_path, path, "--trials", "3").exit_code == 0
    trials = _study(tmp_path).trials
    assert "training" in trials[0].user_attrs
    for t in trials[1:]:
        assert t.user_attrs["duplicate_of"] == 0 and "training" not in t.user_attrs
        assert t.values == trials[0].values


def test_a_failing_trial_does_not_stop_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hvtnas.search import study as study_module

    real = study_module.train_proxy
    calls = {"n": 0}

    def flaky(arch, data, cfg, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            return TrialResult(status="failed", reason="out of memory: simulated")
        return real(arch, data, cfg, **kwargs)

    monkeypatch.setattr(study_module, "train_proxy", flaky)
    path = _write(tmp_path, sampler={"name": "random", "seed": 3})
    assert _search(tmp_path, path, "--trials", "3").exit_code == 0
    trials = _study(tmp_path).trials
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["reason"] == "out of memory: simulated"
    assert len(trials) == 3 and any(t.state == TrialState.COMPLETE for t in trials[1:])


def _digits_val_images() -> int:
    from hvtnas.train import DataConfig, load_dataset

    return load_dataset(DataConfig(name="digits", resolution=16)).num_val


def test_dominated_trials_stop_early_only_beyond_the_noise(tmp_path: Path) -> None:
    """Stopped only when a trial of no more cost was better at that epoch by more than the
    validation accuracy's sampling noise, 1.96 * sqrt(p (1 - p) / n_val)."""
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    space["experiment"]["train"]["epochs"] = 2
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    assert _search(tmp_path, path, "--trials", "8").exit_code == 0
    trials = {t.number: t for t in _study(tmp_path).trials}
    pruned = [
        t for t in trials.values() if t.state == TrialState.PRUNED and "duplicate_of" not in t.user_attrs
    ]
    assert pruned, "no trial was stopped: the test space no longer exercises early stopping"
    n_val = _digits_val_images()
    for t in pruned:
        assert t.user_attrs["reason"].startswith("stopped at epoch 1 of 2: trial"), t.user_attrs["reason"]
        assert t.user_attrs["epochs_done"] == 1 and t.user_attrs["outcome"] == "stopped_early"
        other = trials[int(t.user_attrs["reason"].split("trial ")[1].split()[0])]
        p = other.user_attrs["accuracy_curve"][0]
        assert p - t.user_attrs["accuracy_curve"][0] > 1.96 * (p * (1 - p) / n_val) ** 0.5
        assert f"(noise on {n_val} images)" in t.user_attrs["reason"]
    for t in trials.values():  # a duplicate of a stopped trial is stopped too, nothing trained
        if t.state == TrialState.PRUNED and t not in pruned:
            assert trials[t.user_attrs["duplicate_of"]].state == TrialState.PRUNED
            assert "training" not in t.user_attrs and t.user_attrs["outcome"] == "duplicate"


def _beaten_at_no_more_cost(trials: list) -> bool:
    """Some trained trial had a lower first-epoch accuracy than a trial of no more cost: the
    situation in which the old rule stopped trials."""
    trained = [t for t in trials if t.user_attrs.get("outcome") == "trained"]
    return any(
        a.user_attrs["cost_objectives"]["params"] <= b.user_attrs["cost_objectives"]["params"]
        and a.user_attrs["accuracy_curve"][0] > b.user_attrs["accuracy_curve"][0]
        for a in trained
        for b in trained
        if a.number < b.number
    )


@pytest.mark.parametrize(
    ("epochs", "rule"),
    [(1, {"min_epoch": 1, "margin": 0.0}), (2, {"min_epoch": 1, "margin": 0.95})],
    ids=["never-at-the-last-epoch", "configured-margin"],
)
def test_no_trial_is_stopped_at_its_last_epoch_or_within_the_margin(
    tmp_path: Path, epochs: int, rule: dict
) -> None:
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    space["experiment"]["train"]["epochs"] = epochs
    space["experiment"]["early_stopping"] = rule
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    assert _search(tmp_path, path, "--trials", "8").exit_code == 0
    trials = _study(tmp_path).trials
    assert _beaten_at_no_more_cost(trials), "no trial was beaten: the test cannot tell the rules apart"
    assert not [t for t in trials if t.state == TrialState.PRUNED or t.user_attrs.get("stopped_early")]
    for t in trials:
        if t.user_attrs["outcome"] == "trained":
            assert len(t.user_attrs["accuracy_curve"]) == epochs


def test_nsga2_records_stopped_trials_as_complete_and_dominated(tmp_path: Path) -> None:
    """NSGA-II forms generations from complete trials only; a stopped trial is recorded complete
    (flagged, with the accuracy it had when stopped), dominated by the trial that stopped it."""
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    space["experiment"]["train"]["epochs"] = 2
    space["experiment"]["sampler"] = {"name": "nsga2", "population_size": 2, "seed": 0}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    assert _search(tmp_path, path, "--trials", "8").exit_code == 0
    study = _study(tmp_path)
    assert all(t.state != TrialState.PRUNED for t in study.trials)
    stopped = [t for t in study.trials if t.user_attrs.get("stopped_early")]
    assert stopped, "no trial was stopped: the test space no longer exercises early stopping"
    front = {t.number for t in study.best_trials}
    for t in stopped:
        assert t.state == TrialState.COMPLETE and t.number not in front
        assert t.user_attrs["reason"].startswith(("stopped at epoch 1 of 2: trial", "duplicate of"))
        assert t.values[0] == pytest.approx(t.user_attrs["accuracy_curve"][-1])
    generations = {v for t in study.trials for k, v in t.system_attrs.items() if k.endswith(":generation")}
    assert len(generations) > 1  # stopped trials count: evolution gets past generation 0


@pytest.mark.parametrize(
    ("experiment", "expected"),
    [
        ({"objectives": ["accuracy", "speed"]}, "experiment.objectives: unknown objective 'speed'"),
        ({"objectives": []}, "experiment.objectives: List should have at least 1 item"),
        ({"constraints": {"accuracy": 0.9}}, "unknown constraint 'accuracy'"),
        ({"data": {"name": "imagenet"}}, "experiment.data.name"),
        ({"sampler": {"name": "bayes"}}, "experiment.sampler.name"),
    ],
)
def test_bad_experiments_exit_2_and_name_the_field(tmp_path: Path, experiment: dict, expected: str) -> None:
    result = _search(tmp_path, _write(tmp_path, **experiment), "--trials", "1")
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert str(tmp_path / "space.yaml") + ":" in result.output


def test_bad_space_and_bad_command_lines_exit_2(tmp_path: Path) -> None:
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    space["stages"][1]["depth"] = {"int": [3, 1]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(space))
    result = _search(tmp_path, bad)
    assert result.exit_code == 2 and "low <= high must hold" in result.output
    assert _search(tmp_path, tmp_path / "nope.yaml").exit_code == 2
    path = _write(tmp_path)
    for url in ("sqlite:////proc/no/such/dir/study.db", "postgresql://nobody@127.0.0.1:1/none"):
        unreachable = _search(tmp_path, path, "--storage", url)
        assert unreachable.exit_code == 2 and "cannot open storage" in unreachable.output, unreachable.output
    assert _search(tmp_path, path, "--sampler", "bayes").exit_code == 2


def test_resuming_with_another_space_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert _search(tmp_path, path, "--trials", "2").exit_code == 0
    before = [(t.number, t.values) for t in _study(tmp_path).trials]
    changed = _write(tmp_path, objectives=["accuracy", "flops"])
    result = _search(tmp_path, changed, "--trials", "4")
    assert result.exit_code == 2 and "created from another version" in result.output
    assert [(t.number, t.values) for t in _study(tmp_path).trials] == before


def test_report_writes_html_and_csv(tmp_path: Path) -> None:
    path = _write(tmp_path, objectives=["accuracy", "params", "flops"])
    assert _search(tmp_path, path, "--trials", "4").exit_code == 0
    # a duplicate of a trained trial, recorded COMPLETE with its twin's values and attributes:
    # the front table shows the architecture once
    study = _study(tmp_path)
    twin = next(t for t in study.trials if t.user_attrs.get("outcome") == "trained")
    attrs = {**twin.user_attrs, "outcome": "duplicate", "duplicate_of": twin.number}
    study.add_trial(
        optuna.trial.create_trial(
            params=twin.params, distributions=twin.distributions, values=twin.values, user_attrs=attrs
        )
    )
    run = tmp_path / "runs" / "space"
    result = runner.invoke(app, ["report", str(run), "--no-cache"])
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    assert "Pareto front" in page and "Hypervolume" in page and "Pareto-optimal trials" in page
    assert "swin_t" in page  # zoo reference points on the params-vs-flops projection
    assert len(page) > 1_000_000 and "<script src=" not in page  # plotly.js inlined: opens offline
    counts = re.search(r"<p class=counts>(.*?)</p>", page)  # counts by outcome, on top
    assert counts and counts.group(1).startswith("5 trials: ") and "duplicate" in counts.group(1)
    assert page.index("class=counts") < page.index("<h2>")
    assert '"type":"log"' in page  # MACs and parameters on log axes

    # the front table: one row per architecture, readable units, the architecture, a link to the CSV
    table = re.search(r"<table class=front>.*?</table>", page, re.S)
    assert table, "no front table"
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", table.group(0))]
    rows = [r for r in rows if r]  # the header row has <th> cells
    assert rows and len({r[0] for r in rows}) == len(rows) and len({r[-1] for r in rows}) == len(rows)
    assert "4" not in {r[0] for r in rows}  # never the duplicate (trial 4)
    for r in rows:
        assert r[1].endswith("%") and r[2].endswith("K") and r[3].endswith(("MMACs", "GMACs")), r
        assert not any(re.search(r"\de[-+]\d", cell) for cell in r[:4]), r  # no 9.459e-05
        assert "stem," in r[-1] and "PE:" in r[-1]  # patch stem, none PE: 1x8 pooling | 1x16 pooling
    assert '<a href="report.csv">report.csv</a>' in page

    # the hypervolume is a fraction of a box whose reference point the page states
    assert "Normalised hypervolume: " in page and "reference point" in page
    assert "accuracy from 10.0% (chance level, 1/10 classes) to 100.0%" in page
    assert "1.1 x the largest among the trained trials" in page
    # the accuracy curves of the front
    assert "validation accuracy per epoch of the Pareto-optimal trials" in page

    lines = (run / "report.csv").read_text().splitlines()
    assert len(lines) == 1 + 5 and lines[0].startswith("trial,state,outcome,accuracy,params,flops")
    missing = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not a run folder" in missing.output


def test_hypervolume_is_a_fraction_of_the_stated_box() -> None:
    """Accuracy from chance (1/2 classes) to 1, FLOPs from the constraint limit (1 MMAC) to 0."""
    from hvtnas.report import describe_box, hypervolume_box, hypervolume_history

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "flops"])
    study.set_user_attr("space_yaml", "experiment: {constraints: {flops: 1000000}}")
    arch = {"input": {"num_classes": 2}}
    for values, outcome in (
        ((0.75, 5e5), "trained"),  # (0.5, 0.5) of the box from the ideal: 0.25
        ((0.9, 1e5), "over_budget"),  # never counted
        ((1.0, 1e6), "trained"),  # on the reference's flops: adds nothing
        ((0.875, 2.5e5), "trained"),  # (0.25, 0.25): 0.75 x 0.75
    ):
        attrs = {"outcome": outcome, "arch": arch}
        study.add_trial(optuna.trial.create_trial(values=list(values), user_attrs=attrs))
    numbers, volumes = hypervolume_history(study)
    assert numbers == [0, 2, 3] and volumes == pytest.approx([0.25, 0.25, 0.5625])
    assert describe_box(hypervolume_box(study)) == (
        "accuracy from 50.0% (chance level, 1/2 classes) to 100.0%; "
        "flops from 1.00 MMACs (the constraint limit) to 0"
    )


def test_parallel_workers_share_one_study(tmp_path: Path) -> None:
    path = _write(tmp_path)
    result = _search(tmp_path, path, "--trials", "4", "--n-jobs", "2")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "space"
    assert (run / "journal.log").is_file() and not (run / "study.db").exists()  # SQLite is not shared
    from hvtnas.search.workers import open_storage

    study = optuna.load_study(study_name="space", storage=open_storage(f"journal:{run / 'journal.log'}"))
    numbers = [t.number for t in study.trials]
    assert 4 <= len(numbers) <= 5 and len(set(numbers)) == len(numbers)  # at most one trial in flight extra
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in study.trials)
    exported = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output


def test_sqlite_runs_refuse_several_workers(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert _search(tmp_path, path, "--trials", "1").exit_code == 0
    result = _search(tmp_path, path, "--trials", "3", "--n-jobs", "2")
    assert result.exit_code == 2 and "cannot share safely" in result.output


def test_devices_give_each_worker_one_gpu(tmp_path: Path) -> None:
    from hvtnas.search.workers import device_for

    assert [device_for(i, ["2", "3"], 4) for i in range(2)] == ["2", "3"]
    assert [device_for(i, None, 2) for i in range(3)] == ["0", "1", "0"]
    assert device_for(0, None, 0) is None  # CPU
    path = _write(tmp_path)
    assert _search(tmp_path, path, "--devices", "0,1", "--n-jobs", "3").exit_code == 2
    assert _search(tmp_path, path, "--devices", "gpu0").exit_code == 2
    result = _search(tmp_path, path, "--trials", "2", "--devices", "0,1")  # two workers (on CPU here)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "space" / "journal.log").is_file()


def test_costs_and_exports_are_at_the_space_resolution_while_training_uses_the_proxy_resolution(
    tmp_path: Path,
) -> None:
    """A space declared at 32x32 that proxy-trains at 16x16: FLOPs, the recorded architecture and
    the exported config are the 32x32 model's; only the training saw 16x16 images."""
    from hvtnas.costs import measure_costs

    space = yaml.safe_load(yaml.safe_dump(SPACE))
    space["input"]["resolution"] = 32
    space["experiment"]["objectives"] = ["accuracy", "flops"]
    space["experiment"]["data"]["resolution"] = 16
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    assert _search(tmp_path, path, "--trials", "2").exit_code == 0
    trials = [t for t in _study(tmp_path).trials if t.state == TrialState.COMPLETE]
    assert trials
    for t in trials:
        arch = ArchConfig.model_validate(t.user_attrs["arch"])
        assert arch.input.resolution == 32 and t.user_attrs["proxy_resolution"] == 16
        assert t.values[1] == measure_costs(arch).flops  # the 32x32 model's MACs
        assert t.user_attrs["training"]["status"] == "completed" and t.user_attrs["accuracy_curve"]
    result = runner.invoke(app, ["export", str(tmp_path / "runs" / "space"), "--out", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    exported = [ArchConfig.from_yaml(f) for f in sorted((tmp_path / "exp").glob("*.yaml"))]
    assert exported and all(cfg.input.resolution == 32 for cfg in exported)


def test_an_export_retrains_with_its_search_recipe_unless_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search trained on an npz file (a path relative to where it ran), 2 epochs on 60% of the
    data; `hvtnas train EXPORT.yaml` from another directory uses exactly that, and says so."""
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    images = rng.integers(0, 255, size=(80, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "data" / "d.npz", images=images, labels=np.arange(80) % 10)
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    space["experiment"]["data"] = {"name": "npz", "path": "data/d.npz", "fraction": 0.6}
    space["experiment"]["train"]["epochs"] = 2
    space["experiment"]["train"]["lr"] = 0.004
    space["experiment"]["early_stopping"] = None
    (tmp_path / "spaces").mkdir()
    path = tmp_path / "spaces" / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    monkeypatch.chdir(tmp_path)  # the search reads data/d.npz relative to where it runs
    assert _search(tmp_path, path, "--trials", "2").exit_code == 0
    out = tmp_path / "exports"
    assert runner.invoke(app, ["export", str(tmp_path / "runs" / "space"), "--out", str(out)]).exit_code == 0
    export = sorted(out.glob("*.yaml"))[0]
    recipe = ArchConfig.from_yaml(export).metadata["recipe"]
    assert recipe["study"] == "space" and recipe["data"]["path"] == str(tmp_path / "data" / "d.npz")

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = runner.invoke(app, ["train", str(export), "--out", "a"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    assert "training with the recipe of study 'space'" in said and "2 epochs" in said
    run = yaml.safe_load(Path("a/run.yaml").read_text())
    assert run["data"]["name"] == "npz" and run["data"]["fraction"] == 0.6
    assert run["data"]["path"] == str(tmp_path / "data" / "d.npz")
    assert run["train"]["epochs"] == 2 and run["train"]["lr"] == 0.004
    assert len(json.loads(Path("a/metrics.json").read_text())["epochs"]) == 2

    overridden = runner.invoke(app, ["train", str(export), "--out", "b", "--epochs", "1"])
    assert overridden.exit_code == 0, overridden.output
    assert "overridden: train.epochs=1" in " ".join(overridden.output.split())
    run = yaml.safe_load(Path("b/run.yaml").read_text())
    assert run["train"]["epochs"] == 1 and run["data"]["name"] == "npz" and run["train"]["lr"] == 0.004

    bare = runner.invoke(app, ["train", str(export), "--out", "c", "--epochs", "1", "--no-recipe"])
    assert bare.exit_code == 0, bare.output
    assert "recipe of study" not in bare.output
    run = yaml.safe_load(Path("c/run.yaml").read_text())
    assert run["data"]["name"] == "digits" and run["train"]["lr"] != 0.004  # the defaults


def test_more_adds_exactly_n_trials_and_trials_below_the_count_is_a_clear_no_op(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert _search(tmp_path, path, "--trials", "2").exit_code == 0
    more = _search(tmp_path, path, "--more", "2")
    assert more.exit_code == 0, more.output
    assert "2 trials done, running to 4" in more.output
    assert len(_study(tmp_path).trials) == 4
    # never wrapped at 80 columns outside a terminal: the long last line stays one line
    done = [line for line in more.output.splitlines() if line.startswith("done: ")]
    assert len(done) == 1 and len(done[0]) > 80, more.output
    assert str(tmp_path / "runs" / "space") in done[0] and "holds 4 trials:" in done[0]
    nothing = _search(tmp_path, path, "--trials", "3")
    assert nothing.exit_code == 0 and "already holds 4 trials" in nothing.output
    assert "nothing to do (--more N adds N trials)" in nothing.output
    assert len(_study(tmp_path).trials) == 4
    both = _search(tmp_path, path, "--trials", "6", "--more", "1")
    assert both.exit_code == 2 and "give one" in both.output


def test_timeout_stops_starting_trials_and_the_study_resumes(tmp_path: Path) -> None:
    path = _write(tmp_path)
    result = _search(tmp_path, path, "--trials", "5", "--timeout", "0.001")
    assert result.exit_code == 0, result.output
    assert "stopped at --timeout 0.001 s with 0 of 5 trials" in result.output
    assert len(_study(tmp_path).trials) == 0
    resumed = _search(tmp_path, path, "--more", "1", "--timeout", "600")
    assert resumed.exit_code == 0 and "stopped" not in resumed.output
    assert len(_study(tmp_path).trials) == 1


def test_a_deadline_lets_the_running_trial_finish_and_starts_no_other(tmp_path: Path) -> None:
    import time

    from hvtnas.search import SearchRun, load_search_spec, open_study

    spec = load_search_spec(_write(tmp_path))
    study = open_study(spec, "space", f"sqlite:///{tmp_path / 'study.db'}", warm_start=[])
    deadline = time.time() + 2.0

    def past_the_deadline(number: int) -> None:  # the first trial starts in time and runs past it
        time.sleep(max(0.0, deadline - time.time()) + 0.1)

    outcomes = SearchRun(spec, study, on_trial_start=past_the_deadline).run(5, deadline=deadline)
    assert [o.number for o in outcomes] == [0]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]  # recorded, not cut short


def test_workers_stop_at_the_timeout_too(tmp_path: Path) -> None:
    path = _write(tmp_path)
    result = _search(tmp_path, path, "--trials", "4", "--n-jobs", "2", "--timeout", "0.001")
    assert result.exit_code == 0, result.output
    assert "stopped at --timeout" in result.output
