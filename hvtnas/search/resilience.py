"""What keeps a study whole when workers crash, hang or share a device.

- **Heartbeats** (RDB storages: PostgreSQL, MySQL): the search uses ask/tell, so Optuna's own
  heartbeat thread (started only by ``study.optimize``) never runs; ``Heartbeat`` records one every
  interval while a trial runs. A trial whose heartbeat is older than the grace period belonged to a
  dead worker: ``fail_stale`` fails it and ``RetryFailedTrialCallback`` enqueues its parameters again.
- **Dead local workers** (any storage, journal and SQLite included, which have no heartbeats):
  every running trial records ``worker`` = ``host:pid``; a RUNNING trial whose process on this host
  no longer exists is failed and retried the same way.
- **Orphans**: a worker killed between creating a trial and recording itself leaves a RUNNING
  trial without a ``worker``; one older than ``ORPHAN_GRACE_S`` is failed and retried the same way.
- **Reasons**: every trial failed this way records why (``reason``), and a worker stopped by
  Ctrl-C or SIGTERM fails its running trial at once ("interrupted") and enqueues its retry.
- **Counting**: a failed trial that was retried is not counted towards ``--trials`` (its retry is).
- **Device lock**: latency is never timed while another worker on the same host trains (see
  ``DeviceLock``).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fcntl
import os
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Optuna 4.9 renamed RetryFailedTrialCallback (deprecated, removed in 6.0)
_RetryBase = (
    getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    or optuna.storages.RetryFailedTrialCallback
)
WORKER_ATTR = "worker"  # user attribute: host:pid of the process running the trial
# seconds after which a RUNNING trial that never recorded its worker is taken for an orphan (its
# worker recorded itself within milliseconds of creating it, or died); tests set it lower
ORPHAN_GRACE_S = float(os.environ.get("HVTNAS_ORPHAN_GRACE_S", "60"))
FAULT_ENV = "HVTNAS_FAULT"


def fault_point(name: str) -> None:
    """Test hook: with ``HVTNAS_FAULT=name`` in the environment this process kills itself with
    SIGKILL here, as a crash or ``kill -9`` at that moment would (tests/test_robustness.py).
    Points: ``after_ask`` (a trial just created, nothing recorded yet), ``after_trial`` (a
    trial just told)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), 9)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_enabled(study: optuna.Study) -> bool:
    return optuna.storages._heartbeat.is_heartbeat_enabled(study._storage)


class Heartbeat:
    """Records the trial's heartbeat every ``interval`` seconds in a daemon thread (RDB storages)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self.storage = study._storage
        self.trial_id = trial._trial_id
        self.enabled = heartbeat_enabled(study)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while not self.stop.wait(interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a lost connection: the next beat retries; never kill the trial
                continue

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            self.storage.record_heartbeat(self.trial_id)  # at once: trials without one are never stale
            self.thread = threading.Thread(target=self._beat, name="hvtnas-heartbeat", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


class Retry(_RetryBase):
    """Optuna's retry (same parameters, ``failed_trial`` / ``retry_history`` system attributes),
    without the dead trial's user attributes: a retry starts clean (no stale worker, costs, curve)."""

    def __init__(self, max_retry: int | None) -> None:
        with warnings.catch_warnings():  # "experimental" in Optuna since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        clean = copy.deepcopy(trial)
        clean.user_attrs = {}
        super().__call__(study, clean)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fail_stale(study: optuna.Study, max_retry: int | None, running: int | None = None) -> list[int]:
    """Fail the trials of dead workers (stale heartbeat, or a local process that is gone) and
    enqueue their parameters again (at most ``max_retry`` times). Returns the failed numbers.
    ``running``: the number of the trial this process is running now (never failed)."""
    failed: list[int] = []
    if heartbeat_enabled(study):
        storage = study._storage
        try:  # record why before Optuna fails them (a finished trial takes no attributes)
            for trial_id in storage._get_stale_trial_ids(study._study_id):
                grace = storage.grace_period
                _set_reason(
                    study, trial_id, f"no heartbeat for over {grace} s: its worker died or lost the storage"
                )
        except Exception:  # a private Optuna API: without it only the reason is missing
            pass
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # runs the storage's Retry callback
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        now_failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        failed += sorted((before - after) & now_failed)
    host = socket.gethostname()
    retry = Retry(max_retry=max_retry)
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get(WORKER_ATTR, ""))
        owner_host, _, pid = owner.rpartition(":")
        if trial.number == running:  # this process's own trial (waiting on a twin)
            continue
        if not owner:  # its worker died before recording itself (or is recording itself right now)
            started = trial.datetime_start
            if started is None or (now - started).total_seconds() < ORPHAN_GRACE_S:
                continue
            reason = "its worker died before recording itself (found on resume); retried"
        # called between trials, so a trial "of this process" is a previous one's (a reused pid)
        elif owner_host != host or not pid.isdigit() or (int(pid) != os.getpid() and _pid_alive(int(pid))):
            continue
        else:
            reason = f"its worker {owner} died during the trial (found on resume); retried"
        if not _set_reason(study, trial._trial_id, reason):
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # another worker got there first
        retry(study, study._storage.get_trial(trial._trial_id))
        failed.append(trial.number)
    return failed


def _set_reason(study: optuna.Study, trial_id: int, reason: str) -> bool:
    """Record why a trial is failed; False when it finished meanwhile."""
    try:
        study._storage.set_trial_user_attr(trial_id, "reason", reason)
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        return False
    return True


def fail_own_running(study: optuna.Study, reason: str, max_retry: int | None) -> list[int]:
    """Fail this process's running trials with ``reason`` and enqueue their retries (Ctrl-C, SIGTERM)."""
    me, failed = worker_id(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) != me or not _set_reason(study, trial._trial_id, reason):
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue
        Retry(max_retry=max_retry)(study, study._storage.get_trial(trial._trial_id))
        failed.append(trial.number)
    return failed


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that have a retry (enqueued or run)."""
    numbers: set[int] = set()
    for t in trials:
        numbers.update(t.system_attrs.get("retry_history", []))
    return numbers


def count_finished(study: optuna.Study) -> int:
    """Finished trials that count towards ``--trials``: a crashed trial counts through its retry."""
    trials = study.get_trials(deepcopy=False)
    superseded = retried_numbers(trials)
    return sum(1 for t in trials if t.state in FINISHED and t.number not in superseded)


class DeviceLock:
    """A host-wide readers-writer lock per device, on files (``fcntl.flock``).

    Training holds it shared, latency timing exclusive: a latency figure is never taken while another
    worker of this host trains on the same device. A turnstile file keeps a waiting measurement from
    starving (new training waits behind it). ``None`` folder: no locking.
    """

    def __init__(self, folder: Path | None, device: str = "cpu") -> None:
        self.folder = folder
        # the host in the name: a run folder on a shared file system must not couple machines
        self.device = f"{socket.gethostname()}-{device}".replace("/", "_").replace(":", "_")

    @contextlib.contextmanager
    def _flock(self, name: str, mode: int) -> Iterator[None]:
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / name, "a") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        if self.folder is None:
            yield
            return
        with self._flock(f"{self.device}.turnstile", fcntl.LOCK_EX):
            pass  # waits while a latency measurement is queued or running
        with self._flock(f"{self.device}.lock", fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        if self.folder is None:
            yield
            return
        with (
            self._flock(f"{self.device}.turnstile", fcntl.LOCK_EX),
            self._flock(f"{self.device}.lock", fcntl.LOCK_EX),
        ):
            yield
