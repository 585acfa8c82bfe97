"""Storages for runs, and parallel worker processes on one machine.

A run folder holds its study in one of two storages: ``study.db`` (SQLite, the default for one
worker) or ``journal.log`` (Optuna's JournalStorage, a file that several processes append to
safely; chosen when a run starts with ``--n-jobs`` > 1, since SQLite under concurrent writers
fails with "database is locked", optuna/optuna#820). ``--storage`` accepts any Optuna URL, or
``journal:PATH`` for a journal file elsewhere.
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing
import os
import random
import signal
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna

from hvtnas import interrupts
from hvtnas.errors import HvtnasError

JOURNAL_PREFIX = "journal:"
INTERRUPTED_EXIT = 130  # a worker stopped by Ctrl-C / SIGTERM


def run_storage(run_dir: Path, n_jobs: int = 1) -> str:
    """The storage of a run folder: the one it already has, else SQLite (one worker) or a
    journal file (several)."""
    journal, sqlite = run_dir / "journal.log", run_dir / "study.db"
    if journal.exists():
        return f"{JOURNAL_PREFIX}{journal}"
    if sqlite.exists():
        if n_jobs > 1:
            raise HvtnasError(
                f"{run_dir} keeps its study in SQLite, which several worker processes cannot share safely; "
                "continue it with --n-jobs 1, or start a new --study (its run will use a journal file)"
            )
        return f"sqlite:///{sqlite}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return f"{JOURNAL_PREFIX}{journal}" if n_jobs > 1 else f"sqlite:///{sqlite}"


def open_storage(
    storage: str, heartbeat: int | None = None, max_retry: int | None = 3
) -> str | optuna.storages.BaseStorage:
    """A storage URL as Optuna takes it, with ``journal:PATH`` opened as a JournalStorage.

    With ``heartbeat`` (seconds), a server database (PostgreSQL, MySQL) is opened as an RDBStorage
    whose trials are failed when their heartbeat is older than twice that, and retried with the
    same parameters up to ``max_retry`` times. SQLite (one worker) and journal files have none:
    their dead trials are found by process id (``hvtnas.search.resilience``).
    """
    if storage.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend

        from hvtnas.search.storage import repair_journal

        path = Path(storage.removeprefix(JOURNAL_PREFIX))
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_journal(path)  # a record torn by a crash would make the whole file unreadable
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if storage.startswith("sqlite:///") and ":memory:" not in storage:
        from hvtnas.search.storage import check_sqlite_file

        check_sqlite_file(Path(storage.removeprefix("sqlite:///")))  # empty or not a database: say so
        return _sqlite_storage(storage)
    if heartbeat is None or storage.startswith("sqlite"):
        return storage
    from hvtnas.search.resilience import Retry

    # Optuna 4.9 renamed failed_trial_callback (still accepted, with a FutureWarning)
    parameters = inspect.signature(optuna.storages.RDBStorage).parameters
    callback = (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in parameters
        else "failed_trial_callback"
    )
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    storage,
                    engine_kwargs={"pool_pre_ping": True},  # long-lived workers outlive idle connections
                    heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    **{callback: Retry(max_retry=max_retry)},
                )
        except ImportError as err:
            raise HvtnasError(
                f"cannot open storage {storage!r}: {err} (for PostgreSQL: pip install 'hvtnas[postgres]' "
                "and a postgresql+psycopg:// URL)"
            ) from None
        except Exception as err:  # sqlalchemy / driver errors
            # workers starting together on a fresh database race to create its tables: try again
            if attempt < 4 and ("already exists" in str(err) or "duplicate key" in str(err)):
                time.sleep(0.2 + random.random())
                continue
            raise _cannot_open(storage, err) from None
    raise AssertionError("unreachable")


def _sqlite_connection(path: str) -> sqlite3.Connection:
    # Optuna commits every suggested parameter and user attribute in its own transaction; with the
    # default rollback journal each waits for the disk (0.3-0.6 s a trial). Write-ahead logging with
    # synchronous=NORMAL keeps the database consistent through crashes and power loss (at worst the
    # last commits are lost on power loss) at a fraction of that.
    conn = sqlite3.connect(path, timeout=60, check_same_thread=False)  # heartbeat threads write too
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _sqlite_storage(url: str) -> optuna.storages.RDBStorage:
    path = url.removeprefix("sqlite:///")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"creator": lambda: _sqlite_connection(path)})
    except Exception as err:  # sqlalchemy / sqlite errors: not a database, no permission, ...
        raise _cannot_open(url, err) from None


def _cannot_open(storage: str, err: Exception) -> HvtnasError:
    return HvtnasError(f"cannot open storage {storage!r}: {type(err).__name__}: {str(err).splitlines()[0]}")


def device_for(index: int, devices: list[str] | None, gpu_count: int) -> str | None:
    """The CUDA_VISIBLE_DEVICES of worker ``index``: the ``--devices`` entry it was given, else
    GPU index mod count where there are GPUs, else None (CPU)."""
    if devices:
        return devices[index % len(devices)]
    return str(index % gpu_count) if gpu_count else None


def run_workers(n_jobs: int, worker_args: dict[str, Any], devices: list[str] | None = None) -> None:
    """Run ``n_jobs`` worker processes on the same study and wait for all of them.

    CPU threads are divided between the workers; worker i sees one GPU (``device_for``).
    """
    import torch

    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked CUDA or thread pools
    from hvtnas.search.study import HARD_TIMEOUT_EXIT

    def start(i: int) -> multiprocessing.process.BaseProcess:
        args = dict(worker_args, threads=threads, gpu=device_for(i, devices, gpus), index=i)
        process = context.Process(target=worker_process, kwargs=args, name=f"hvtnas-worker-{i}")
        with _sigint_ignored():  # a worker starts deaf to Ctrl-C (no traceback from its start-up)
            process.start()
        return process

    processes = {i: start(i) for i in range(n_jobs)}
    done: list[multiprocessing.process.BaseProcess] = []
    try:
        while processes:
            for i, process in list(processes.items()):
                process.join(timeout=0.5)
                if process.exitcode is None:
                    continue
                if process.exitcode == HARD_TIMEOUT_EXIT:  # it abandoned a hung trial: a fresh one goes on
                    processes[i] = start(i)
                else:
                    done.append(processes.pop(i))
    except KeyboardInterrupt:  # each worker fails its running trial ("interrupted") and ends
        for process in processes.values():
            process.terminate()  # SIGTERM: the worker's KeyboardInterrupt
        for process in processes.values():
            process.join(timeout=30)
            if process.exitcode is None:
                process.kill()
        raise
    failed = [p.name for p in done if p.exitcode != 0]
    if failed:
        raise HvtnasError(f"worker processes failed: {', '.join(failed)} (their trials are in the study)")


def worker_process(**kwargs: Any) -> None:
    """The body of a ``--n-jobs`` worker process: ``worker_main``, where Ctrl-C or SIGTERM fail
    the running trial with the reason "interrupted" and end the process quietly (exit 130)."""
    # for the process's life (the parent's SIGTERM may come late); SIGINT although the parent
    # started this process with it ignored (``_sigint_ignored``)
    interrupts.install(once=True, sigint_even_if_ignored=True)
    try:
        worker_main(**kwargs)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED_EXIT)
    except HvtnasError as err:  # one line, as the command itself would print it
        print(f"[{multiprocessing.current_process().name}] error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while a worker process starts: it inherits that until it installs its own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def worker_main(
    space: str,
    study: str,
    storage: str,
    trials: int,
    use_cache: bool,
    sampler: dict[str, Any],
    threads: int,
    gpu: str | None,
    index: int = 0,
    heartbeat: int | None = None,
    max_retry: int | None = 3,
    lock_dir: str | None = None,
    deadline: float | None = None,
) -> None:
    """One worker: the search loop against the shared study until it holds ``trials`` trials
    (or, with ``deadline``, a ``time.time()``, until no trial may start any more)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    from hvtnas.costs import CostCache
    from hvtnas.search.resilience import DeviceLock
    from hvtnas.search.study import SearchRun, load_search_spec, open_study

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_search_spec(space)
    exp = spec.experiment
    train = exp.train if exp.train.threads is not None else exp.train.model_copy(update={"threads": threads})
    # one seed for all workers: the sampler is seeded per trial number (hvtnas.search.sampling),
    # which the storage hands out, so the workers draw differently and the study stays reproducible
    sampler_cfg = exp.sampler.model_copy(update=sampler)
    spec.experiment = exp.model_copy(update={"train": train, "sampler": sampler_cfg})
    # the parent process created the study (and queued its warm start): nothing to queue here
    study_obj = open_study(spec, study, open_storage(storage, heartbeat, max_retry), warm_start=[])
    name = multiprocessing.current_process().name

    def report(outcome: Any) -> None:
        print(f"[{name}] {outcome.describe(exp.objectives)}", flush=True)

    SearchRun(
        spec,
        study_obj,
        cache=CostCache() if use_cache else None,
        on_trial=report,
        max_retry=max_retry,
        device_lock=DeviceLock(Path(lock_dir) if lock_dir else None, device_key()),
    ).run(trials, deadline=deadline)


def device_key() -> str:
    """The device this process trains on, as a lock-file name: ``cpu`` or ``cuda<visible ids>``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return "cuda" + os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
