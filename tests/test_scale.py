"""Scale-out and survival: workers in separate processes on PostgreSQL and journal storages, a
worker killed mid-trial, heartbeats, and one test per kind of trial fault.

PostgreSQL tests use the server at 127.0.0.1:5432 (user postgres, database test) and skip when it
cannot be reached; each uses its own study name and deletes it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from hvtnas.cli import app
from hvtnas.errors import HvtnasError
from hvtnas.search.resilience import DeviceLock, Heartbeat, count_finished, fail_stale
from hvtnas.search.study import HARD_TIMEOUT_EXIT
from hvtnas.search.workers import open_storage
from tests.conftest import tiny_search_space

PG_URL = os.environ.get("HVTNAS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
runner = CliRunner()

# more distinct architectures than the search tests' space (fewer duplicates), 30% of the data
SPACE = tiny_search_space(
    stage2_depth={"int": [1, 3]}, data={"name": "digits", "fraction": 0.3}, early_stopping=None
)


def _space(tmp_path: Path, **experiment: object) -> Path:
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    for key, value in experiment.items():
        if isinstance(value, dict) and isinstance(space["experiment"].get(key), dict):
            space["experiment"][key].update(value)
        else:
            space["experiment"][key] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL.replace("+psycopg", ""), connect_timeout=3):
            return None
    except ImportError:
        return "psycopg not installed (pip install -e '.[postgres]')"
    except Exception as err:  # server down
        return f"PostgreSQL at {PG_URL} unreachable: {type(err).__name__}: {str(err).strip()[:100]}"


@pytest.fixture
def pg_study() -> Iterator[str]:
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    name = f"hvtnas-test-{uuid.uuid4().hex[:10]}"
    yield name
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=PG_URL)


HANG = (  # a worker whose trials train forever: the one to kill mid-trial
    "import sys, time; import hvtnas.search.study as s; "
    "s.train_proxy = lambda *a, **k: time.sleep(3600); "
    "from hvtnas.cli import main; sys.argv[0] = 'hvtnas'; main()"
)


def _worker(
    tmp_path: Path,
    space: Path,
    storage: str,
    study: str,
    trials: int,
    *args: str,
    hang: bool = False,
    code: str | None = None,
) -> subprocess.Popen:
    """``hvtnas search`` in a process of its own: what a user starts on each machine (``code``:
    Python that patches the search, then runs the command line)."""
    code = HANG if hang else code
    command = [sys.executable, *(["-c", code] if code else ["-m", "hvtnas"]), "search", str(space)]
    command += ["--storage", storage, "--study", study, "--trials", str(trials), "--no-cache"]
    command += ["--runs-dir", str(tmp_path / "runs"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _finish(processes: list[subprocess.Popen], timeout: float = 900) -> None:
    for p in processes:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out


def _check_whole(study: optuna.Study, trials: int, workers: int) -> None:
    numbers = [t.number for t in study.trials]
    assert len(set(numbers)) == len(numbers)  # distinct numbers, nothing duplicated
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert trials <= count_finished(study) <= trials + workers - 1  # at most the ones in flight extra


def _wait_for_running(study_name: str, storage: object, deadline: float = 600) -> optuna.trial.FrozenTrial:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
            running = study.get_trials(states=(TrialState.RUNNING,))
            if running and "arch" in running[0].user_attrs:  # sampled, now training
                return running[0]
        except KeyError:  # not created yet
            pass
        time.sleep(0.2)
    raise AssertionError("no trial started")


# ------------------------------------------------------------------------------- PostgreSQL
def test_postgres_workers_in_separate_processes_share_one_study(tmp_path: Path, pg_study: str) -> None:
    space = _space(tmp_path)
    workers = [_worker(tmp_path, space, PG_URL, pg_study, 6) for _ in range(3)]  # they race to create it
    _finish(workers)
    study = optuna.load_study(study_name=pg_study, storage=PG_URL)
    _check_whole(study, 6, 3)
    assert study.user_attrs["space_yaml"] == space.read_text()
    assert len({t.user_attrs["worker"] for t in study.trials}) >= 2  # the work was shared


def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(tmp_path: Path, pg_study: str) -> None:
    space = _space(tmp_path)
    victim = _worker(tmp_path, space, PG_URL, pg_study, 3, "--heartbeat", "1", hang=True)
    running = _wait_for_running(pg_study, PG_URL)
    time.sleep(1.5)  # heartbeats recorded while the trial runs
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    study = optuna.load_study(study_name=pg_study, storage=PG_URL)
    running = study.trials[running.number]
    assert running.state == TrialState.RUNNING and running.params  # a zombie until someone looks
    # as if the victim ran on another machine: its process id says nothing, only its heartbeat does
    study._storage.set_trial_user_attr(running._trial_id, "worker", "elsewhere:1")
    time.sleep(2.5)  # past the grace period (2 x heartbeat)
    _finish([_worker(tmp_path, space, PG_URL, pg_study, 3, "--heartbeat", "1")])
    study = optuna.load_study(study_name=pg_study, storage=PG_URL)
    assert study.trials[running.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == running.number]
    assert len(retries) == 1 and retries[0].params == running.params  # the same architecture again
    assert retries[0].state == TrialState.COMPLETE and retries[0].user_attrs["retry_of"] == running.number
    _check_whole(study, 3, 1)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # plain ask/tell, as SearchRun does
def test_heartbeat_keeps_a_running_trial_alive_and_a_silent_one_is_retried(pg_study: str) -> None:
    storage = open_storage(PG_URL, heartbeat=1, max_retry=1)
    study = optuna.create_study(study_name=pg_study, storage=storage)
    trial = study.ask()
    x = trial.suggest_int("x", 0, 100)
    trial.set_user_attr("worker", "elsewhere:1")  # another host: only the heartbeat speaks for it
    with Heartbeat(study, trial):
        time.sleep(3.2)  # longer than the grace period: only the heartbeats keep it running
        assert fail_stale(study, max_retry=1) == []
    time.sleep(3.2)
    assert fail_stale(study, max_retry=1) == [trial.number]
    assert study.trials[0].state == TrialState.FAIL
    retry = study.ask()  # the enqueued retry: same parameters
    assert retry.suggest_int("x", 0, 100) == x
    assert count_finished(study) == 0  # the crashed trial counts through its retry only


NO_WATCHDOG = (  # a worker without the hard limit's timer (its trials may take any time)
    "import sys; import hvtnas.search.study as s; "
    "s.SearchRun._watchdog = lambda self, trial: None; "
    "from hvtnas.cli import main; sys.argv[0] = 'hvtnas'; main()"
)


RACE = (  # one worker's start: open the storage (creating its tables) and create or load the study
    "import sys, warnings; warnings.simplefilter('ignore'); import optuna; "
    "from hvtnas.search.workers import open_storage; "
    "s = open_storage(sys.argv[1], heartbeat=5); "
    "print(optuna.create_study(study_name='race', storage=s, load_if_exists=True)._study_id)"
)


def test_workers_starting_together_on_a_fresh_database_race_safely() -> None:
    reason = _pg_available()
    if reason:
        pytest.skip(reason)
    import psycopg

    schema = f"hvtnas_test_{uuid.uuid4().hex[:8]}"  # an empty "database": no Optuna tables yet
    admin = PG_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        racers = [
            subprocess.Popen([sys.executable, "-c", RACE, url], stdout=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        ids = {p.communicate(timeout=900)[0].strip() for p in racers}
        assert all(p.returncode == 0 for p in racers) and len(ids) == 1  # one study, every worker in it
        with psycopg.connect(admin) as connection:
            assert connection.execute(f"SELECT count(*) FROM {schema}.studies").fetchone() == (1,)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


# ------------------------------------------------------------------------------- journal
def test_journal_workers_in_separate_processes_and_a_killed_one(tmp_path: Path) -> None:
    space = _space(tmp_path)
    url = f"journal:{tmp_path / 'journal.log'}"
    victim = _worker(tmp_path, space, url, "j", 5, hang=True)
    running = _wait_for_running("j", open_storage(url))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    running = optuna.load_study(study_name="j", storage=open_storage(url)).trials[running.number]
    assert running.state == TrialState.RUNNING and running.params
    # a journal has no heartbeat: the dead worker's trial is found by its process id on this host
    _finish([_worker(tmp_path, space, url, "j", 5) for _ in range(3)])
    study = optuna.load_study(study_name="j", storage=open_storage(url))
    assert study.trials[running.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == running.number]
    assert len(retries) == 1 and retries[0].params == running.params
    _check_whole(study, 5, 3)


# ------------------------------------------------------------------------------- faults
def _search(tmp_path: Path, path: Path, *args: str):
    return runner.invoke(
        app, ["search", str(path), "--runs-dir", str(tmp_path / "runs"), "--no-cache", *args]
    )


def _trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{tmp_path / 'runs' / 'space' / 'study.db'}"
    return optuna.load_study(study_name="space", storage=storage).trials


def test_any_exception_in_a_trial_is_recorded_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvtnas.search import study as study_module

    real, calls = study_module.train_proxy, {"n": 0}

    def broken_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("a bug deep inside")
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "train_proxy", broken_once)
    result = _search(tmp_path, _space(tmp_path), "--trials", "2")
    assert result.exit_code == 0, result.output
    first, second = _trials(tmp_path)
    assert first.state == TrialState.FAIL and first.user_attrs["reason"] == "KeyError: 'a bug deep inside'"
    assert second.state == TrialState.COMPLETE


def test_nan_loss_fails_the_trial_with_its_reason(tmp_path: Path) -> None:
    result = _search(tmp_path, _space(tmp_path, train={"lr": 1e30, "grad_clip": None}), "--trials", "1")
    assert result.exit_code == 1 and "all 1 trials of this run" in result.output, result.output  # none worked
    (trial,) = _trials(tmp_path)
    assert trial.state == TrialState.FAIL
    assert "nan" in trial.user_attrs["reason"].lower() or "inf" in trial.user_attrs["reason"].lower()


def test_out_of_memory_fails_the_trial_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvtnas.train import trainer

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(trainer, "_make_optimizer", no_memory)  # inside the trainer's own guard
    result = _search(tmp_path, _space(tmp_path), "--trials", "2")
    assert result.exit_code == 1 and "all 2 trials of this run" in result.output, result.output
    trials = _trials(tmp_path)
    assert len(trials) == 2 and all(t.state == TrialState.FAIL for t in trials)
    assert trials[0].user_attrs["reason"].startswith("out of memory: CUDA out of memory")


def test_a_trial_past_its_timeout_fails_and_the_worker_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvtnas.search import study as study_module

    real = study_module.train_proxy

    def slow_epochs(arch, data, cfg, on_epoch=None, **kwargs):
        def hanging(report):
            time.sleep(0.6)  # an epoch that takes far too long
            return on_epoch(report)

        return real(arch, data, cfg, on_epoch=hanging, **kwargs)

    monkeypatch.setattr(study_module, "train_proxy", slow_epochs)
    path = _space(tmp_path, trial_timeout=0.5, trial_hard_timeout=60, train={"epochs": 20})
    result = _search(tmp_path, path, "--trials", "2")
    assert result.exit_code == 1 and "failed; the reason: timeout: " in result.output, result.output
    trials = _trials(tmp_path)
    assert len(trials) == 2
    for t in trials:
        assert t.state == TrialState.FAIL and t.user_attrs["reason"].startswith("timeout: ")
        assert (
            t.user_attrs["training"]["epochs"][0]["epoch"] == 1 and len(t.user_attrs["accuracy_curve"]) == 1
        )


def test_a_trial_hung_inside_an_epoch_is_abandoned_at_the_hard_timeout(tmp_path: Path) -> None:
    # hard limit 6 s; the soft one far above what the next worker's trial takes on a busy machine
    space = _space(tmp_path, trial_timeout=120, trial_hard_timeout=6)
    url = f"journal:{tmp_path / 'journal.log'}"
    hung = _worker(tmp_path, space, url, "h", 2, hang=True)  # never reaches the end of an epoch
    out, _ = hung.communicate(timeout=900)
    assert hung.returncode == HARD_TIMEOUT_EXIT, out  # --n-jobs restarts a worker that ends so
    (trial,) = optuna.load_study(study_name="h", storage=open_storage(url)).trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["reason"].startswith("timeout: still running after 6 s")
    # the next worker goes on; no retry of a hang. Its own trial must not meet the 6 s limit on a
    # busy machine: the watchdog is what the hung worker above tested, so this one runs without it
    _finish([_worker(tmp_path, space, url, "h", 2, code=NO_WATCHDOG)])
    study = optuna.load_study(study_name="h", storage=open_storage(url))
    assert count_finished(study) == 2 and not any("failed_trial" in t.system_attrs for t in study.trials)


def test_bad_timeout_and_options_exit_2(tmp_path: Path) -> None:
    result = _search(tmp_path, _space(tmp_path, trial_timeout=-1), "--trials", "1")
    assert result.exit_code == 2 and "trial_timeout" in result.output
    assert _search(tmp_path, _space(tmp_path), "--heartbeat", "0").exit_code == 2


# ------------------------------------------------------------------------------- latency lock
def test_latency_is_never_timed_while_another_worker_trains(tmp_path: Path) -> None:
    import threading

    lock = DeviceLock(tmp_path / "locks", "cpu")
    events: list[str] = []
    training = threading.Event()

    def train() -> None:
        with lock.training():
            events.append("train start")
            training.set()
            time.sleep(0.5)
            events.append("train end")

    thread = threading.Thread(target=train)
    thread.start()
    training.wait()
    with lock.exclusive():  # separate open() handles: flock excludes them as it does processes
        events.append("latency")
    thread.join()
    assert events == ["train start", "train end", "latency"]


def test_sqlite_study_uses_write_ahead_logging_and_keeps_every_trial(tmp_path: Path) -> None:
    """The single-worker SQLite storage commits cheaply (WAL, synchronous=NORMAL) and a reopened
    study holds everything written, heartbeat-thread writes included."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s", directions=["minimize"])
    for i in range(3):
        trial = study.ask()
        trial.set_user_attr("i", i)
        study.tell(trial, float(i))
    del study
    with contextlib.closing(sqlite3.connect(tmp_path / "study.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened = optuna.load_study(study_name="s", storage=url)
    assert [t.user_attrs["i"] for t in reopened.trials] == [0, 1, 2]
    assert reopened.best_value == 0.0


def test_sqlite_storage_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "study.db"
    bad.write_text("not a database\n" * 100)
    with pytest.raises(HvtnasError, match=r"cannot open storage .*study\.db"):
        open_storage(f"sqlite:///{bad}")


# ------------------------------------------------------------------------------- workers never repeat
WAIT_FOR_TWIN = (  # a worker whose training starts only once a second trial has sampled its architecture
    "import sys, time, optuna; import hvtnas.search.study as s\n"
    "from hvtnas.search.workers import open_storage\n"
    "real = s.train_proxy\n"
    "def after_second_trial(*args, **kwargs):\n"
    "    arg = lambda name: sys.argv[sys.argv.index(name) + 1]\n"
    "    study = optuna.load_study(study_name=arg('--study'), storage=open_storage(arg('--storage')))\n"
    "    end = time.monotonic() + 300\n"
    "    sampled = lambda: [t for t in study.get_trials(deepcopy=False) if 'arch_key' in t.user_attrs]\n"
    "    while len(sampled()) < 2 and time.monotonic() < end:\n"
    "        time.sleep(0.1)\n"
    "    return real(*args, **kwargs)\n"
    "s.train_proxy = after_second_trial\n"
    "from hvtnas.cli import main; sys.argv[0] = 'hvtnas'; main()"
)


def _one_architecture_space(tmp_path: Path) -> Path:
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    space["stages"][0] = {"depth": 1, "width": 8, "heads": 2, "mixers": ["pooling"]}
    space["stages"][1]["depth"] = 1
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def _wait_for(condition, what: str, deadline: float = 300) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _many_architectures_space(tmp_path: Path, sampler: str) -> Path:
    space = yaml.safe_load(yaml.safe_dump(SPACE))  # 15 widths x 2 mixers x 3 depths = 90 architectures
    space["stages"][0]["width"] = {"int": [8, 64], "step": 4}
    space["experiment"]["sampler"] = {"name": sampler, "seed": 0, "population_size": 4}
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


@pytest.mark.parametrize("storage", ["journal", "postgresql"])
def test_independent_workers_with_one_seed_sample_different_architectures(
    tmp_path: Path, storage: str, request: pytest.FixtureRequest
) -> None:
    """Every worker is started with the space's seed (the README's scale-out recipe): samplers
    seeded per trial number draw differently, so no architecture is sampled twice. Seeded by the
    space's seed alone, both workers drew the same sequence."""
    if storage == "postgresql":
        study_name, url = request.getfixturevalue("pg_study"), PG_URL
    else:
        study_name, url = "w", f"journal:{tmp_path / 'journal.log'}"
    space = _many_architectures_space(tmp_path, "random")
    _finish([_worker(tmp_path, space, url, study_name, 6) for _ in range(2)], timeout=600)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both workers ran trials
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params), params
    assert len({t.user_attrs["arch_key"] for t in study.trials}) == len(study.trials)


def test_one_worker_alone_is_reproducible_and_nsga2_evolves_with_per_trial_seeds(tmp_path: Path) -> None:
    space = _many_architectures_space(tmp_path, "nsga2")
    runs = []
    for name in ("a", "b"):
        result = _search(tmp_path, space, "--trials", "6", "--study", name)
        assert result.exit_code == 0, result.output
        storage = f"sqlite:///{tmp_path / 'runs' / name / 'study.db'}"
        runs.append(optuna.load_study(study_name=name, storage=storage).trials)
    assert [t.params for t in runs[0]] == [t.params for t in runs[1]]  # same seed, same study
    generations = {v for t in runs[0] for k, v in t.system_attrs.items() if k.endswith(":generation")}
    assert len(generations) > 1  # generations still form from the study


def test_a_running_twin_is_waited_for_and_never_trained_twice(tmp_path: Path) -> None:
    """The second worker samples the architecture the first is training: it waits for that
    result and reuses it (`duplicate`), nothing is trained twice."""
    space = _one_architecture_space(tmp_path)
    url = f"journal:{tmp_path / 'journal.log'}"
    first = _worker(tmp_path, space, url, "t", 1, code=WAIT_FOR_TWIN)
    _wait_for_running("t", open_storage(url), deadline=300)
    second = _worker(tmp_path, space, url, "t", 1)
    _finish([first, second], timeout=600)
    trials = optuna.load_study(study_name="t", storage=open_storage(url)).trials
    trained = [t for t in trials if "training" in t.user_attrs]
    assert len(trained) == 1 and trained[0].number == 0
    twin = trials[1]
    assert twin.user_attrs["outcome"] == "duplicate" and twin.user_attrs["duplicate_of"] == 0
    assert twin.user_attrs["waited_seconds"] > 0 and "waited" in twin.user_attrs["reason"]
    assert twin.values == trained[0].values


def test_a_twin_whose_worker_dies_stops_blocking(tmp_path: Path) -> None:
    space = _one_architecture_space(tmp_path)
    url = f"journal:{tmp_path / 'journal.log'}"
    victim = _worker(tmp_path, space, url, "d", 1, hang=True)
    _wait_for_running("d", open_storage(url), deadline=300)
    waiting = _worker(tmp_path, space, url, "d", 1)

    def second_trial_waits() -> bool:
        trials = optuna.load_study(study_name="d", storage=open_storage(url)).trials
        return (
            len(trials) > 1 and trials[1].state == TrialState.RUNNING and "arch_key" in trials[1].user_attrs
        )

    _wait_for(second_trial_waits, "the second trial to wait for the first")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _finish([waiting], timeout=600)
    trials = optuna.load_study(study_name="d", storage=open_storage(url)).trials
    assert trials[0].state == TrialState.FAIL  # found dead by its process id
    assert trials[1].user_attrs["outcome"] == "trained" and trials[1].user_attrs["waited_seconds"] > 0
