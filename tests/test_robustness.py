"""Bad input and faults, through the command line: every case ends with one clear line per problem
(``error: file:line: field: problem``) and a non-zero exit, writes nothing, and loses nothing.

Bad input exits 2; a fault of the machine (a full disk) exits 1; Ctrl-C exits 130. Kill -9 tests
run ``hvtnas search`` in a process of its own and kill it at a moment named by ``HVTNAS_FAULT``
(``hvtnas.search.resilience.fault_point``), then resume and check every completed trial."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from hvtnas.cli import app
from hvtnas.search import resilience
from hvtnas.search.storage import repair_journal
from tests.conftest import tiny_config, tiny_search_space

runner = CliRunner()
BAD_INPUT = 2


def _errors(result) -> list[str]:
    """The non-empty lines a failed command wrote to stderr: each must be one ``error: ...`` line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.output, result.output
    assert lines and all(line.startswith("error: ") for line in lines), result.output
    return lines


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _search(tmp_path: Path, space: Path, *args: str):
    return runner.invoke(
        app, ["search", str(space), "--runs-dir", str(tmp_path / "runs"), "--no-cache", *args]
    )


def _nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "runs").exists()


def _space(tmp_path: Path, name: str = "space.yaml", **experiment: object) -> Path:
    data = tiny_search_space(**experiment)
    return _write(tmp_path / name, data)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["stages"][0].update(depth="two"),
            ":13: stages[0].depth: Input should be a valid integer",
        ),
        (lambda d: d["stages"][1].update(bogus=1), ":28: stages[1].bogus: unknown key"),
        (lambda d: d.pop("stages"), ":1: stages: required field is missing"),
    ],
)
def test_a_structurally_invalid_space_is_refused_before_anything_is_written(
    tmp_path: Path, change, expected: str
) -> None:
    data = tiny_search_space()
    change(data)
    space = _write(tmp_path / "space.yaml", data)
    result = _search(tmp_path, space, "--trials", "1")
    assert result.exit_code == BAD_INPUT
    [line] = _errors(result)
    assert f"{space}{expected}" in line, line
    _nothing_written(tmp_path)


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, 10):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n"
    bomb += "stages: *j\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    started = time.monotonic()
    for command in (["build", str(path)], ["search", str(path), "--runs-dir", str(tmp_path / "runs")]):
        result = runner.invoke(app, command)
        assert result.exit_code == BAD_INPUT
        [line] = _errors(result)
        assert "alias bomb" in line and f"{path}:" in line
    assert time.monotonic() - started < 30
    _nothing_written(tmp_path)


def _unreadable_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    files = {
        "latin1": (b"name: caf\xe9\nstages: []\n", "not UTF-8 text"),
        "utf16": ("stages: []\n".encode("utf-16"), "UTF-16"),
        "binary": (bytes(range(256)) * 4, "binary data"),
        "deep": (b"stages: " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested more than 64 deep"),
        "duplicate": (
            yaml.safe_dump(tiny_config(["pooling"])).encode() + b"name: again\n",
            "name: key given twice",
        ),
        "nonscalar_key": (b"? [a, b]\n: 1\nstages: []\n", "a key must be a plain value"),
    }
    out = {}
    for name, (content, message) in files.items():
        path = tmp_path / f"{name}.yaml"
        path.write_bytes(content)
        out[name] = (path, message)
    return out


@pytest.mark.parametrize("command", ["build", "search", "space show", "train"])
def test_unreadable_files_give_one_line_in_every_command(tmp_path: Path, command: str) -> None:
    for path, message in _unreadable_files(tmp_path).values():
        args = [*command.split(), str(path)]
        if command == "search":
            args += ["--runs-dir", str(tmp_path / "runs")]
        if command == "train":
            args += ["--out", str(tmp_path / "train")]
        result = runner.invoke(app, args)
        assert result.exit_code == BAD_INPUT, (path, result.output)
        [line] = _errors(result)
        assert message in line and str(path) in line, line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "train").exists()


def test_a_file_without_read_permission_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "arch.yaml", tiny_config(["pooling"]))
    path.chmod(0)
    if os.geteuid() == 0:  # root reads files whatever their permissions: deny it as the kernel would
        real = Path.read_bytes

        def denied(self: Path) -> bytes:
            if self == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", denied)
    for command in ("build", "space show"):
        result = runner.invoke(app, [*command.split(), str(path)])
        assert result.exit_code == BAD_INPUT
        [line] = _errors(result)
        assert f"{path}: cannot read: Permission denied" in line


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ({"depth": 1_000_000_000}, "stages[0].depth: 1000000000 is larger than any size"),
        ({"width": 10**12}, "stages[0].width: 1000000000000 is larger than any size"),
        ({"depth": 300}, "1200 blocks in all is more than the limit of 512"),
        ({"width": 16384, "heads": 4, "depth": 100}, "parameters is more than the limit"),
    ],
)
def test_absurd_sizes_are_refused_with_why(tmp_path: Path, stage: dict, expected: str) -> None:
    path = _write(tmp_path / "arch.yaml", tiny_config(["pooling"], stage=stage))
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == BAD_INPUT
    assert any(expected in line for line in _errors(result)), result.output


def test_absurd_resolutions_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "arch.yaml", tiny_config(["pooling"], input={"resolution": 10_000}))
    result = runner.invoke(app, ["build", str(path)])
    assert result.exit_code == BAD_INPUT
    [line] = _errors(result)
    assert f"{path}:3: input.resolution: Input should be less than or equal to 8192" in line
    assert runner.invoke(app, ["build", "swin_t", "--resolution", "1000000"]).exit_code == BAD_INPUT
    result = runner.invoke(app, ["build", "swin_t", "--dense-resolution", "100000x100000"])
    assert result.exit_code == BAD_INPUT and "Traceback" not in result.output


def test_an_absurd_range_in_a_space_is_refused_before_any_trial(tmp_path: Path) -> None:
    data = tiny_search_space()
    data["stages"][0]["depth"] = {"int": [1, 1_000_000_000]}
    result = _search(tmp_path, _write(tmp_path / "space.yaml", data), "--trials", "1")
    assert result.exit_code == BAD_INPUT
    [line] = _errors(result)
    assert ":13: with stage1.depth = 1000000000: stages[0].depth: 1000000000 is larger" in line
    _nothing_written(tmp_path)


def test_a_float_range_for_an_integer_field_is_refused(tmp_path: Path) -> None:
    data = tiny_search_space()
    data["stages"][0]["depth"] = {"float": [1, 3]}
    result = _search(tmp_path, _write(tmp_path / "space.yaml", data), "--trials", "1")
    assert result.exit_code == BAD_INPUT
    [line] = _errors(result)
    assert (
        "space.yaml:13: stages[0].depth: stage1.depth is a float range but the field takes integers" in line
    )
    _nothing_written(tmp_path)


def test_a_space_error_is_reported_once_on_its_line_in_line_order(tmp_path: Path) -> None:
    data = tiny_search_space()
    data["stages"][0]["head_dim"] = 7  # wrong whatever the other dimensions choose
    del data["stages"][0]["heads"]
    data["stages"][1]["width"] = {"choice": [16, 17]}  # wrong for one option only
    space = _write(tmp_path / "space.yaml", data)
    result = runner.invoke(app, ["space", "show", str(space)])
    assert result.exit_code == BAD_INPUT
    assert _errors(result) == [
        f"error: {space}:22: stages[0].head_dim: 7 does not divide width 8",
        f"error: {space}:28: with stage2.width = 17: stages[1].heads: 2 does not divide width 17",
    ]


def test_two_bad_options_of_one_field_are_two_lines(tmp_path: Path) -> None:
    data = tiny_search_space()
    data["stages"][0]["mixers"] = {"choice": [["pooling"], ["windw"], ["foo"]]}
    space = _write(tmp_path / "space.yaml", data)
    result = runner.invoke(app, ["space", "show", str(space)])
    assert result.exit_code == BAD_INPUT
    lines = _errors(result)
    assert len(lines) == 2  # each on its option's line
    assert (
        f"{space}:22: with stage1.mixer = windw: stages[0].mixers[0]: unknown token mixer 'windw'" in lines[0]
    )
    assert f"{space}:23: with stage1.mixer = foo: stages[0].mixers[0]: unknown token mixer 'foo'" in lines[1]


def test_a_missing_data_file_is_refused_before_the_first_trial(tmp_path: Path) -> None:
    space = _space(tmp_path, data={"name": "npz", "path": "nowhere/animal_mnist.npz"})
    result = _search(tmp_path, space, "--trials", "2")
    assert result.exit_code == BAD_INPUT
    [line] = _errors(result)
    assert "experiment.data.path: nowhere/animal_mnist.npz: no such file or folder" in line
    assert line.startswith(f"error: {space}:")
    _nothing_written(tmp_path)


def test_a_run_in_which_every_trial_failed_exits_1_with_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvtnas.search import study as study_module

    def broken(*args, **kwargs):
        raise RuntimeError("the data is corrupt")

    monkeypatch.setattr(study_module, "train_proxy", broken)
    result = _search(tmp_path, _space(tmp_path), "--trials", "2")
    assert result.exit_code == 1, result.output
    assert (
        "error: all 2 trials of this run of study 'space' failed; the reason: RuntimeError: the data is"
        in (result.output)
    )


@pytest.mark.parametrize(
    ("file_name", "args", "message"),
    [
        ("...yaml", [], "study name (from ...yaml; use --study) '..' cannot name"),
        ("space.yaml", ["--study", "../escape"], "study name '../escape' cannot name"),
        ("space.yaml", ["--study", ".hidden"], "study name '.hidden' cannot name"),
    ],
)
def test_names_cannot_climb_out_of_their_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file_name: str, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    space = _space(tmp_path, name=file_name)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(app, ["search", file_name, "--runs-dir", "runs", "--no-cache", *args])
    assert result.exit_code == BAD_INPUT
    [line] = _errors(result)
    assert message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before and space.exists()


def test_an_architecture_name_cannot_name_a_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "arch.yaml", tiny_config(["pooling"], name="../../escape"))
    for command in (["build", str(path)], ["train", str(path), "--epochs", "1"]):
        result = runner.invoke(app, command)
        assert result.exit_code == BAD_INPUT
        [line] = _errors(result)
        assert f"{path}:1: name: a name may not contain '/'" in line


def test_export_and_report_of_a_study_named_like_a_path_stay_in_their_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    result = runner.invoke(
        app,
        ["search", str(_space(tmp_path)), "--storage", url, "--study", "ok", "--trials", "1", "--no-cache"],
    )
    assert result.exit_code == 0, result.output
    optuna.copy_study(from_study_name="ok", from_storage=url, to_storage=url, to_study_name="../../x")
    result = runner.invoke(app, ["export", "--storage", url, "--study", "../../x"])
    assert result.exit_code == 0, result.output
    [exported] = (tmp_path / "exports").rglob("*.yaml")
    assert exported.resolve().is_relative_to(tmp_path / "exports")
    result = runner.invoke(app, ["report", "--storage", url, "--study", "../../x", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "_.._x_report.html").exists()
    assert not (tmp_path.parent / "x_report.html").exists()


# ------------------------------------------------------------------------------- faults
def _study(tmp_path: Path, name: str = "space", read_only: bool = False) -> optuna.Study:
    path = tmp_path / "runs" / name / "study.db"
    # sqlite's URI form opens an existing file read-only, never creating it or its tables
    url = f"sqlite:///file:{path}?mode=ro&uri=true" if read_only else f"sqlite:///{path}"
    return optuna.load_study(study_name=name, storage=url)


def _as_in_a_terminal() -> None:
    """A child gets Ctrl-C as a terminal gives it: a shell starts background jobs (CI runners, `cmd
    &`) with SIGINT ignored, which Python and so the child would keep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn_search(tmp_path: Path, space: Path, trials: int, fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if fault is not None:
        env["HVTNAS_FAULT"] = fault
    command = [sys.executable, "-m", "hvtnas", "search", str(space), "--trials", str(trials)]
    command += ["--runs-dir", str(tmp_path / "runs"), "--no-cache"]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_as_in_a_terminal,
    )


def _completed(study: optuna.Study) -> dict[int, tuple]:
    return {
        t.number: (t.values, t.params, t.user_attrs.get("arch_key"))
        for t in study.get_trials(states=(TrialState.COMPLETE,))
    }


def test_kill_9_right_after_ask_is_failed_with_a_reason_and_retried_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = _space(tmp_path)
    assert _search(tmp_path, space, "--trials", "1").exit_code == 0
    done = _completed(_study(tmp_path))
    killed = _spawn_search(tmp_path, space, 3, fault="after_ask")  # trial 1 asked, then kill -9
    _, err = killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL, err
    [orphan] = _study(tmp_path).get_trials(states=(TrialState.RUNNING,))
    assert "worker" not in orphan.user_attrs  # what made it invisible to the stale check before
    monkeypatch.setattr(resilience, "ORPHAN_GRACE_S", 0.0)  # else it waits a minute to be sure
    result = _search(tmp_path, space, "--trials", "3")
    assert result.exit_code == 0, result.output
    study = _study(tmp_path)
    assert {n: v for n, v in _completed(study).items() if n in done} == done  # nothing completed lost
    failed = study.trials[orphan.number]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["reason"].startswith("its worker died before recording itself")
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert resilience.count_finished(study) == 3


def test_a_torn_journal_record_is_cut_off_and_kept_aside(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    url = f"journal:{journal}"
    space = _space(tmp_path)
    args = ["search", str(space), "--storage", url, "--study", "j", "--no-cache", "--runs-dir", str(tmp_path)]
    assert runner.invoke(app, [*args, "--trials", "2"]).exit_code == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    done = _completed(optuna.load_study(study_name="j", storage=storage))
    torn = b'{"op_code":5,"worker_id":"w","trial_id":1,"us'  # kill -9 or power loss mid-append
    with open(journal, "ab") as f:
        f.write(torn)
    result = runner.invoke(app, [*args, "--trials", "3"])
    assert result.exit_code == 0, result.output
    [backup] = tmp_path.glob("journal.log.torn-*")
    assert backup.read_bytes() == torn
    from hvtnas.search.workers import open_storage

    study = optuna.load_study(study_name="j", storage=open_storage(url))
    assert {n: v for n, v in _completed(study).items() if n in done} == done and len(study.trials) == 3
    for command in ("report", "export"):
        out = str(tmp_path / ("r.html" if command == "report" else "exports"))
        assert runner.invoke(app, [command, "--storage", url, "--study", "j", "--out", out]).exit_code == 0


def test_a_journal_torn_by_an_older_version_keeps_the_record_appended_after_the_tear(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    whole = b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}\n'
    after = b'{"op_code":1,"worker_id":"w","study_id":0}\n'
    journal.write_bytes(whole + b'{"op_code":5,"wor' + after)
    backup = repair_journal(journal)
    assert backup is not None and backup.read_bytes() == b'{"op_code":5,"wor'
    assert journal.read_bytes() == whole + after
    assert repair_journal(journal) is None  # whole now


def test_the_report_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = _space(tmp_path)
    assert _search(tmp_path, space, "--trials", "1").exit_code == 0
    run = tmp_path / "runs" / "space"
    assert runner.invoke(app, ["report", str(run), "--no-cache"]).exit_code == 0
    old = (run / "report.html").read_bytes()
    import hvtnas.io

    real = os.replace

    def killed(src, dst):  # the moment before the rename: a crash here must leave the old report
        if str(dst).endswith(".html"):
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(hvtnas.io.os, "replace", killed)
    result = runner.invoke(app, ["report", str(run), "--no-cache"])
    assert result.exit_code == 130 and result.output.strip() == "interrupted"
    assert (run / "report.html").read_bytes() == old
    assert not list(run.glob(".report.html.*"))  # no temporary file left behind


def test_a_full_disk_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    space = _space(tmp_path)
    assert _search(tmp_path, space, "--trials", "1").exit_code == 0
    run = tmp_path / "runs" / "space"
    import hvtnas.io

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hvtnas.io.os, "fsync", full)
    result = runner.invoke(app, ["report", str(run), "--no-cache"])
    assert result.exit_code == 1
    [line] = _errors(result)
    assert f"cannot write {run / 'report.csv'}: No space left on device" in line


def test_an_empty_study_file_is_refused_not_replaced(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "space"
    run.mkdir(parents=True)
    (run / "study.db").write_bytes(b"")
    for command in (
        ["search", str(_space(tmp_path)), "--runs-dir", str(tmp_path / "runs"), "--trials", "1"],
        ["report", str(run)],
        ["export", str(run)],
        ["dashboard", str(run)],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == BAD_INPUT
        [line] = _errors(result)
        assert f"{run / 'study.db'}: empty (0 bytes" in line
    assert (run / "study.db").stat().st_size == 0 and sorted(p.name for p in run.iterdir()) == ["study.db"]


def test_a_corrupt_cost_cache_is_rebuilt_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HVTNAS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "costs.sqlite").write_bytes(b"garbage" * 1000)
    path = _write(tmp_path / "arch.yaml", tiny_config(["pooling"]))
    result = subprocess.run(
        [sys.executable, "-m", "hvtnas", "build", str(path), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "warning: cost cache" in result.stderr and "Traceback" not in result.stderr
    assert list((tmp_path / "cache").glob("costs.sqlite.corrupt-*"))
    from hvtnas.costs import CostCache

    assert len(CostCache(tmp_path / "cache" / "costs.sqlite")) > 0  # rebuilt and in use


def _wait_until(condition, deadline: float = 300, what: str = "the condition") -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_ctrl_c_during_start_up_prints_no_traceback(tmp_path: Path) -> None:
    process = _spawn_search(tmp_path, _space(tmp_path), 1)

    def importing_torch() -> bool:
        try:
            return "torch" in Path(f"/proc/{process.pid}/maps").read_text()
        except OSError:
            return process.poll() is not None

    _wait_until(importing_torch, what="torch to load")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode != 0 and "Traceback" not in err, err
    assert "interrupted" in err


class _InterruptedWhileCollected:
    def __del__(self) -> None:  # Ctrl-C while Python runs a finalizer (a GC or weakref callback)
        signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("once", [False, True])  # the command; a worker process
def test_ctrl_c_that_lands_in_a_finalizer_is_not_lost(
    once: bool, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hvtnas import interrupts

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's own: prints and drops
    # Python drops the KeyboardInterrupt raised in __del__; it is raised again in the sleep
    with interrupts.interrupts_raised(once=once), pytest.raises(KeyboardInterrupt):
        _InterruptedWhileCollected()  # collected at once
        end = time.monotonic() + 120  # a trial training, until the signal sent again stops it
        while time.monotonic() < end:
            time.sleep(0.1)
    assert "Exception ignored" not in capfd.readouterr().err


CLEAN_UP_ERRORS = """
import logging, sqlite3
from hvtnas import interrupts

pool_log = logging.getLogger("sqlalchemy.pool.impl.QueuePool")  # where SQLAlchemy logs it

def closing_cursor_after_ctrl_c(message):
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
    except sqlite3.ProgrammingError:
        pool_log.error(message, exc_info=True)

replaced = interrupts.install()
closing_cursor_after_ctrl_c("Error closing cursor")
try:
    raise sqlite3.OperationalError("disk I/O error")
except sqlite3.OperationalError:
    pool_log.error("Exception during reset", exc_info=True)
interrupts.restore(replaced)
closing_cursor_after_ctrl_c("after the command")
"""


def test_a_clean_up_error_that_an_interrupt_caused_is_not_printed() -> None:
    """Ctrl-C inside a query: SQLAlchemy's clean-up fails on the closed connection and logs
    "Error closing cursor" with a traceback (seen in a search); other errors still print, and
    after the command Python prints every record again. In a process of its own: pytest routes
    log records through its own handlers, not Python's last-resort one."""
    result = subprocess.run(
        [sys.executable, "-c", CLEAN_UP_ERRORS], capture_output=True, text=True, timeout=600, check=True
    )
    assert "Error closing cursor" not in result.stderr, result.stderr
    assert "Exception during reset" in result.stderr and "disk I/O error" in result.stderr
    assert "after the command" in result.stderr


HANG = (  # hvtnas search whose trials train until interrupted
    "import sys, time; import hvtnas.search.study as s; "
    "s.train_proxy = lambda *a, **k: time.sleep(3600); "
    "from hvtnas.cli import main; sys.argv[0] = 'hvtnas'; main()"
)


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; preemption
def test_ctrl_c_during_a_trial_fails_it_with_its_reason_and_resume_retries_it(
    tmp_path: Path, sent: int
) -> None:
    space = _space(tmp_path)
    command = [sys.executable, "-c", HANG, "search", str(space), "--trials", "2"]
    command += ["--runs-dir", str(tmp_path / "runs"), "--no-cache"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal
    )

    def training() -> bool:
        if process.poll() is not None:  # it ended before training: say why, not time out
            raise AssertionError(process.communicate()[1])
        try:  # read-only: opening the file read-write would create it under the search (a race)
            study = _study(tmp_path, read_only=True)
            return any("arch" in t.user_attrs for t in study.get_trials(states=(TrialState.RUNNING,)))
        except Exception:  # not created yet, or its schema half-written
            return False

    _wait_until(training, what="a trial to start training")
    process.send_signal(sent)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130 and "Traceback" not in err and err.strip() == "interrupted", err
    study = _study(tmp_path)
    [trial] = study.get_trials(states=(TrialState.FAIL,))
    assert trial.user_attrs["reason"].startswith("interrupted")
    [retry] = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == trial.number
    result = _search(tmp_path, space, "--trials", "2")
    assert result.exit_code == 0, result.output
    study = _study(tmp_path)
    assert study.trials[retry.number].params == trial.params
    assert resilience.count_finished(study) == 2


def test_a_full_database_during_a_search_is_one_line_and_keeps_what_was_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import sqlalchemy.exc

    from hvtnas.search.study import SearchRun

    space = _space(tmp_path)
    assert _search(tmp_path, space, "--trials", "1").exit_code == 0
    done = _completed(_study(tmp_path))

    def full(self):  # what Optuna raises when SQLite cannot commit
        driver = sqlite3.OperationalError("database or disk is full")
        try:
            raise sqlalchemy.exc.OperationalError("INSERT ...", {}, driver)
        except sqlalchemy.exc.OperationalError as err:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from err

    monkeypatch.setattr(SearchRun, "run_one", full)
    result = _search(tmp_path, space, "--trials", "2")
    assert result.exit_code == 1
    [line] = _errors(result)
    db = tmp_path / "runs" / "space" / "study.db"
    assert line == f"error: storage sqlite:///{db}: OperationalError: database or disk is full"
    assert _completed(_study(tmp_path)) == done


def test_ctrl_c_stops_n_jobs_workers_without_tracebacks_and_the_study_resumes(tmp_path: Path) -> None:
    space = _space(tmp_path, train={"epochs": 30})  # trials long enough to be caught mid-way
    command = [sys.executable, "-m", "hvtnas", "search", str(space), "--trials", "20", "--n-jobs", "2"]
    command += ["--runs-dir", str(tmp_path / "runs"), "--no-cache"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a session of its own: Ctrl-C in a terminal reaches the whole process group, workers included
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=_as_in_a_terminal,
    )
    journal = tmp_path / "runs" / "space" / "journal.log"
    _wait_until(lambda: journal.exists() and b'"arch"' in journal.read_bytes(), what="a trial to train")
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130 and "Traceback" not in err, err
    from hvtnas.search.workers import open_storage

    study = optuna.load_study(study_name="space", storage=open_storage(f"journal:{journal}"))
    assert not study.get_trials(states=(TrialState.RUNNING,))  # each worker failed its own trial
    interrupted = [t for t in study.get_trials(states=(TrialState.FAIL,))]
    assert interrupted and all(t.user_attrs["reason"].startswith("interrupted") for t in interrupted)
