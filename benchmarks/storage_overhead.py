"""Storage overhead per trial: SQLite, journal file and PostgreSQL, with 1 and 4 workers.

Each "trial" does nothing but the storage work of a real search trial (``SearchRun.run_one`` and the
loop around it): fail stale trials, count finished ones, ask, suggest 6 parameters, record the
worker, heartbeat (PostgreSQL), store the architecture, costs, training record and curve as user
attributes (the sizes of a real trial's), look for an identical architecture among completed
trials, tell. Workers are separate processes on one study, as ``--n-jobs`` / several ``hvtnas
search`` runs are. Reported: milliseconds per trial as one worker sees it (median and p90 over its
trials) and the study's throughput.

    python benchmarks/storage_overhead.py                       # all backends, 1 and 4 workers
    python benchmarks/storage_overhead.py --trials 100 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

Results: ``benchmarks/results/storage_overhead.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna

from hvtnas.search.resilience import WORKER_ATTR, Heartbeat, count_finished, fail_stale, worker_id
from hvtnas.search.workers import open_storage

RESULTS = Path(__file__).parent / "results"


def payload() -> dict[str, Any]:
    """User attributes of the size a real trial stores (architecture, costs, training record)."""
    from hvtnas.costs import CostSettings, measure_costs
    from hvtnas.models import resolve_config

    arch = resolve_config("pvt_v2_b0")
    costs = measure_costs(arch, CostSettings(dense_resolution=None))
    epochs = [
        {
            "epoch": e,
            "train_loss": 1.0,
            "val_loss": 1.0,
            "val_accuracy": 0.5,
            "lr": 1e-3,
            "images_per_second": 1e3,
        }
        for e in range(1, 6)
    ]
    return {
        "arch": arch.to_dict(),
        "arch_key": "0123456789abcdef",
        "costs": costs.model_dump(mode="json"),
        "training": {"status": "completed", "epochs": epochs, "params": costs.params},
        "accuracy_curve": [0.5] * 5,
        "wall_seconds": 1.0,
    }


def worker(storage_url: str, study_name: str, total: int, attrs: dict[str, Any], out: Any) -> None:
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(storage_url, heartbeat=60 if storage_url.startswith("postgresql") else None)
    study = optuna.load_study(study_name=study_name, storage=storage)
    times, errors = [], 0
    while True:
        start = time.perf_counter()
        try:
            fail_stale(study, max_retry=3)
            if count_finished(study) >= total:
                break
            trial = study.ask()
            with Heartbeat(study, trial):
                trial.set_user_attr(WORKER_ATTR, worker_id())
                values = [float(trial.suggest_int(f"p{i}", 0, 9)) for i in range(6)]
                for key, value in attrs.items():
                    trial.set_user_attr(key, value)
                for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                    if t.user_attrs.get("arch_key") == "never":  # the duplicate check's scan
                        break
                study.tell(trial, [sum(values), values[0]])
        except Exception:  # SQLite under concurrent writers: "database is locked"
            errors += 1
            if errors > 50:
                break
            continue
        times.append((time.perf_counter() - start) * 1000)
    out.put({"times_ms": times, "errors": errors})


def run(backend: str, url: str, workers: int, trials: int, attrs: dict[str, Any]) -> dict[str, Any]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=open_storage(url), directions=["maximize", "minimize"])
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [
        context.Process(target=worker, args=(url, name, trials, attrs, queue)) for _ in range(workers)
    ]
    started = time.perf_counter()
    for p in processes:
        p.start()
    results = [queue.get() for _ in processes]
    for p in processes:
        p.join()
    wall = time.perf_counter() - started
    times = sorted(t for r in results for t in r["times_ms"])
    n_trials = len(optuna.load_study(study_name=name, storage=open_storage(url)).trials)
    if backend == "postgresql":
        optuna.delete_study(study_name=name, storage=url)
    return {
        "backend": backend,
        "workers": workers,
        "trials": n_trials,
        "ms_per_trial_median": round(statistics.median(times), 2) if times else None,
        "ms_per_trial_p90": round(times[int(0.9 * (len(times) - 1))], 2) if times else None,
        "study_trials_per_s": round(len(times) / wall, 1),  # process start-up included
        "errors": sum(r["errors"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=100, help="trials per study")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", type=Path, default=RESULTS / "storage_overhead")
    args = parser.parse_args()
    attrs = payload()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            backends = {
                "sqlite": f"sqlite:///{tmp}/study-{workers}.db",
                "journal": f"journal:{tmp}/journal-{workers}.log",
                "postgresql": args.postgres,
            }
            for backend, url in backends.items():
                row = run(backend, url, workers, args.trials, attrs)
                print(json.dumps(row), flush=True)
                rows.append(row)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "cpus": multiprocessing.cpu_count(),
        "optuna": optuna.__version__,
        "trials_per_study": args.trials,
        "payload_bytes": len(json.dumps(attrs)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"# Storage overhead per trial ({meta['date']}, {meta['cpus']} CPUs, optuna {meta['optuna']}, "
        f"{args.trials} trials per study, {meta['payload_bytes']} bytes of user attributes per trial)",
        "",
        "| storage | workers | ms/trial median | ms/trial p90 | study trials/s | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['workers']} | {r['ms_per_trial_median']} | {r['ms_per_trial_p90']} | "
            f"{r['study_trials_per_s']} | {r['errors']} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
