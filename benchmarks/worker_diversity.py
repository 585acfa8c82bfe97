"""Do parallel workers of one study repeat each other? Distinct architectures per trial.

Runs the quick-start search (or ``--space``) with 4 independent ``hvtnas search`` processes on one
PostgreSQL study (the README's scale-out recipe: every worker started with the same command, so
with the space's seed) and with ``--n-jobs 4`` on a journal file, and counts per study: trials,
distinct architectures (``arch_key``), trials that trained, and architectures trained more than
once (work done twice). ``--source NAME=DIR`` runs the ``hvtnas`` found in DIR (a checkout of
another commit, e.g. ``git archive <commit> hvtnas pyproject.toml | tar -x -C DIR``) to compare
before and after.

    python benchmarks/worker_diversity.py --source before=/tmp/old --source after=. \\
        --out benchmarks/results/worker_diversity
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("HVTNAS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _run(source: Path, args: list[str], workers: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(source)}
    command = [sys.executable, "-m", "hvtnas", "search", *args]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            command, cwd=source, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(workers)
    ]
    for p in processes:
        out, _ = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{out[-2000:]}")
    return time.perf_counter() - started


def _count(study: optuna.Study, seconds: float) -> dict:
    trials = [t for t in study.get_trials(deepcopy=False) if "arch_key" in t.user_attrs]
    trained = Counter(t.user_attrs["arch_key"] for t in trials if "training" in t.user_attrs)
    distinct = len({t.user_attrs["arch_key"] for t in trials})
    return {
        "trials": len(trials),
        "distinct": distinct,
        "distinct_per_trial": round(distinct / max(len(trials), 1), 3),
        "trainings": sum(trained.values()),
        "trained_twice_or_more": sum(1 for n in trained.values() if n > 1),
        "wasted_trainings": sum(n - 1 for n in trained.values()),
        "epochs_trained": sum(
            len(t.user_attrs.get("accuracy_curve") or []) for t in trials if "training" in t.user_attrs
        ),
        "workers": len({t.user_attrs.get("worker") for t in trials}),
        "load_average": round(os.getloadavg()[0], 1),
        "seconds": round(seconds, 1),
    }


def measure(source: Path, space: Path, trials: int, workers: int) -> dict:
    results = {}
    name = f"diversity-{uuid.uuid4().hex[:8]}"
    common = [str(space), "--trials", str(trials), "--no-cache", "--study", name]
    with tempfile.TemporaryDirectory() as tmp:
        seconds = _run(source, [*common, "--storage", PG_URL, "--runs-dir", tmp], workers)
        try:
            results["postgresql"] = _count(optuna.load_study(study_name=name, storage=PG_URL), seconds)
        finally:
            optuna.delete_study(study_name=name, storage=PG_URL)
        seconds = _run(source, [*common, "--n-jobs", str(workers), "--runs-dir", tmp], 1)
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(Path(tmp) / name / "journal.log")))
        results["n_jobs"] = _count(optuna.load_study(study_name=name, storage=storage), seconds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", default=[], help="NAME=DIR (default: this checkout)")
    parser.add_argument("--space", type=Path, default=ROOT / "search_spaces" / "quickstart.yaml")
    parser.add_argument("--trials", type=int, default=16, help="trials the study should hold")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "worker_diversity")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sources = dict(s.split("=", 1) for s in args.source) or {"this": str(ROOT)}
    space = args.space.resolve()
    results = {}
    for label, folder in sources.items():
        results[label] = measure(Path(folder).resolve(), space, args.trials, args.workers)
        print(label, json.dumps(results[label]), flush=True)
    setup = {
        "space": str(space.relative_to(ROOT)) if space.is_relative_to(ROOT) else str(space),
        "trials": args.trials,
        "workers": args.workers,
        "optuna": optuna.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.with_suffix(".json").write_text(json.dumps({"setup": setup, "results": results}, indent=1))
    lines = [
        "# Distinct architectures per trial with parallel workers",
        "",
        f"`python benchmarks/worker_diversity.py` ({setup['date']}, optuna {setup['optuna']}): "
        f"{setup['space']}, studies of {args.trials} trials, {args.workers} independent "
        f"`hvtnas search` processes on one PostgreSQL study, or `--n-jobs {args.workers}` on a journal file.",
        "",
        "| code | workers | trials | distinct architectures | per trial | trainings | "
        "architectures trained twice+ | wasted trainings | epochs trained | wall s | load avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, by_mode in results.items():
        for mode, r in by_mode.items():
            how = (
                f"{args.workers} processes, PostgreSQL"
                if mode == "postgresql"
                else f"--n-jobs {args.workers}"
            )
            lines.append(
                f"| {label} | {how} | {r['trials']} | {r['distinct']} | {r['distinct_per_trial']} | "
                f"{r['trainings']} | {r['trained_twice_or_more']} | {r['wasted_trainings']} | "
                f"{r['epochs_trained']} | {r['seconds']} | {r['load_average']} |"
            )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
