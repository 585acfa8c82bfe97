"""Storages for runs, and parallel worker processes on one machine.

A run folder holds its study in one of two storages: ``study.db`` (SQLite, the default for one
worker) or ``journal.log`` (Optuna's JournalStorage, a file that several processes append to
safely; chosen when a run starts with ``--n-jobs`` > 1, since SQLite under concurrent writers
fails with "database is locked", optuna/optuna#820). ``--storage`` accepts any Optuna URL, or
``journal:PATH`` for a journal file elsewhere.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import optuna

from hvtnas.errors import HvtnasError

JOURNAL_PREFIX = "journal:"


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


def open_storage(storage: str) -> str | optuna.storages.BaseStorage:
    """A storage URL as Optuna takes it, with ``journal:PATH`` opened as a JournalStorage."""
    if storage.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage.removeprefix(JOURNAL_PREFIX))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return storage


def run_workers(n_jobs: int, worker_args: dict[str, Any]) -> None:
    """Run ``n_jobs`` worker processes on the same study and wait for all of them.

    CPU threads are divided between the workers; with GPUs, worker i uses GPU i mod count.
    """
    import torch

    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked CUDA or thread pools
    processes = []
    for i in range(n_jobs):
        args = dict(worker_args, threads=threads, gpu=(i % gpus) if gpus else None, index=i)
        process = context.Process(target=worker_main, kwargs=args, name=f"hvtnas-worker-{i}")
        process.start()
        processes.append(process)
    for process in processes:
        process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise HvtnasError(f"worker processes failed: {', '.join(failed)} (their trials are in the study)")


def worker_main(
    space: str,
    study: str,
    storage: str,
    trials: int,
    use_cache: bool,
    sampler: dict[str, Any],
    threads: int,
    gpu: int | None,
    index: int = 0,
) -> None:
    """One worker: the search loop against the shared study until it holds ``trials`` trials."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    import torch

    from hvtnas.costs import CostCache
    from hvtnas.search.study import SearchRun, load_search_spec, open_study

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_search_spec(space)
    exp = spec.experiment
    train = exp.train if exp.train.threads is not None else exp.train.model_copy(update={"threads": threads})
    sampler_cfg = exp.sampler.model_copy(update=sampler)
    if sampler_cfg.seed is not None:  # the same seed in every worker would propose the same architectures
        sampler_cfg = sampler_cfg.model_copy(update={"seed": sampler_cfg.seed + index})
    spec.experiment = exp.model_copy(update={"train": train, "sampler": sampler_cfg})
    study_obj = open_study(spec, study, open_storage(storage))
    name = multiprocessing.current_process().name

    def report(outcome: Any) -> None:
        values = ", ".join(f"{v:.4g}" for v in outcome.values) if outcome.values else ""
        reason = f" ({outcome.reason})" if outcome.reason else ""
        print(f"[{name}] trial {outcome.number}: {outcome.state.name.lower()} {values}{reason}", flush=True)

    SearchRun(spec, study_obj, cache=CostCache() if use_cache else None, on_trial=report).run(trials)
