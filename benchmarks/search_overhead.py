"""The search's own overhead per trial: everything a trial costs except training and latency timing.

Each shipped space is searched with its own architecture space, sampler, constraints and cost
settings, but with an experiment that trains nothing and times nothing: objectives ``params`` and
``flops`` (plus ``flops_dense`` where the space measures it at ``costs.dense_resolution``), no
latency, no zero-cost proxies. Trials go through ``SearchRun.run`` exactly as ``hvtnas search``
runs them, on a fresh study and a fresh (cold) cost cache, so a trial's time is the search's
overhead: fail stale trials and count finished ones, Optuna ask (sampler), suggest every parameter
(``SearchSpace.sample``), look for an identical earlier architecture, build the model and count its
parameters and FLOPs on the meta device (``measure_costs``, through the cost cache), the constraints, the
user attributes, the dashboard note and tell. The CLI's progress line is not included.

The steps are timed in place by wrapping, for the duration of a run, ``Study.ask``,
``SearchSpace.sample``, ``measure_costs``, ``save_trial_note`` and, inside ``measure_costs``,
``build_model`` and ``count_flops``; "rest" is the remainder of the trial (storage writes of user
attributes and constraints, the duplicate scan, tell, and the loop's stale/finished checks). A
trial's total is the time between consecutive ends of trials in ``SearchRun.run``. The dataset is
loaded once before the first trial (the search needs its channels, classes and resolution) and
reported apart.

Data: ``cifar.yaml`` and ``metaformer.yaml`` read data this machine may lack (the CIFAR-10 archive,
an ImageNet-100 folder); a space whose data file or folder is missing gets synthetic data with the
same channels, classes and resolution, which is all the search takes from it (``adapt_arch_to_data``).
Costs are measured at the space's ``input.resolution`` (the size architectures are exported at),
not at the data's proxy resolution: ``metaformer.yaml``'s ``flops`` are at 224x224 although it
proxy-trains at 112, and its ``flops_dense`` at 1280x800.

    python benchmarks/search_overhead.py        # 4 spaces, 30 trials (metaformer 10), SQLite and PostgreSQL
    python benchmarks/search_overhead.py --spaces quickstart --trials 10 --storage sqlite journal
    python benchmarks/search_overhead.py --postgres postgresql+psycopg://user@host:5432/db

A PostgreSQL server that cannot be reached is skipped (noted in the results); its study is deleted
afterwards. ``metaformer`` runs 10 trials by default (``metaformer:10``): its models are ImageNet-sized
and each trial counts FLOPs at 1280x800 too (~2.7 s a trial with fvcore; ~0.1-0.3 s since FLOPs are
counted on meta tensors). Run time with the defaults: about 3
minutes on 2 CPU cores. Results:
``benchmarks/results/search_overhead.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import tempfile
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import torch

import hvtnas.costs.measure as costs_measure
import hvtnas.search.study as search_study
from hvtnas.costs import CostCache
from hvtnas.costs.latency import cpu_name
from hvtnas.errors import HvtnasError
from hvtnas.search import SearchRun, SearchSpec, TrialOutcome, load_search_spec, open_study
from hvtnas.search.experiment import ExperimentConfig
from hvtnas.search.workers import open_storage
from hvtnas.train import DataConfig

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results"
SPACES = ROOT / "search_spaces"
TARGET_S = 1.5  # issue 8: the search's own overhead per trial, on a 2-core CPU
# metaformer (ImageNet-sized models, FLOPs at 1280x800 too): 10 trials
DEFAULT_SPACES = ["quickstart", "animal_mnist", "cifar", "metaformer:10"]
HEARTBEAT_S = 60  # hvtnas search's default: PostgreSQL trials run with a heartbeat thread
# steps of a trial, in the order of the table (ms, mean over the trials)
STEPS = ["ask", "suggest", "build", "flops", "flops_dense", "params_cache", "note", "rest"]


def overhead_spec(path: Path) -> tuple[SearchSpec, list[str]]:
    """The space of ``path`` with an experiment that trains and times nothing, and what was changed."""
    spec = load_search_spec(path)
    exp = spec.experiment
    notes = []
    objectives = ["params", "flops"] + (["flops_dense"] if exp.costs.dense_resolution is not None else [])
    if objectives != exp.objectives:
        notes.append(f"objectives {exp.objectives} -> {objectives}")
    if exp.costs.latency is not None:
        notes.append("latency not measured")
    data = exp.data
    if data.path is not None and not Path(data.path).exists():
        inp = spec.space.tree.get("input", {})
        data = DataConfig(
            name="synthetic",
            num_samples=64,
            image_size=8,  # resized to the resolution below, as every source is
            num_classes=inp.get("num_classes", 10),
            channels=data.channels or inp.get("channels", 3),
            resolution=data.resolution or inp.get("resolution", 224),
            normalize=False,
        )
        notes.append(
            f"data {exp.data.name} ({exp.data.path}: missing) -> synthetic {data.channels}x"
            f"{data.resolution}x{data.resolution}, {data.num_classes} classes"
        )
    experiment = ExperimentConfig.model_validate(
        {
            **exp.model_dump(),
            "objectives": objectives,
            "costs": {**exp.costs.model_dump(), "latency": None},
            "data": data.model_dump(),
            "early_stopping": None,
            "trial_timeout": None,
            "trial_hard_timeout": None,
        }
    )
    return dataclasses.replace(spec, experiment=experiment), notes


class StepTimer:
    """Seconds spent in each wrapped function during the trial under way."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)

    def wrap(self, name: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                key = name(*args, **kwargs) if callable(name) else name
                self.current[key] += time.perf_counter() - start

        return timed

    @contextlib.contextmanager
    def patched(self, run: SearchRun) -> Iterator[None]:
        """The steps of ``run``'s trials wrapped (the library is left as it was afterwards)."""

        def flops_kind(*args: Any, backbone_only: bool = False, **kwargs: Any) -> str:
            return "flops_dense" if backbone_only else "flops"

        targets = [
            (run.study, "ask", "ask"),
            (run.spec.space, "sample", "suggest"),
            (search_study, "measure_costs", "measure_costs"),
            (search_study, "save_trial_note", "note"),
            (costs_measure, "build_model", "build"),
            (costs_measure, "count_flops", flops_kind),
        ]
        with contextlib.ExitStack() as stack:
            for owner, attr, name in targets:
                stack.enter_context(mock.patch.object(owner, attr, self.wrap(name, getattr(owner, attr))))
            yield

    def take(self) -> dict[str, float]:
        steps, self.current = dict(self.current), defaultdict(float)
        return steps


def measure(spec: SearchSpec, storage_url: str, trials: int, cache_path: Path) -> dict[str, Any]:
    """Run ``trials`` trials of ``spec`` on a new study in ``storage_url`` with a new cost cache at
    ``cache_path``; per-trial seconds, in total and by step. The study is deleted afterwards."""
    name = f"search-overhead-{spec.path.stem}-{uuid.uuid4().hex[:8]}"
    storage = open_storage(storage_url, heartbeat=HEARTBEAT_S)
    study = open_study(spec, name, storage)
    try:
        run = SearchRun(spec, study, cache=CostCache(cache_path))
        start = time.perf_counter()
        run._dataset()  # loaded once per worker, before its first trial
        data_s = time.perf_counter() - start
        timer = StepTimer()
        rows: list[dict[str, Any]] = []
        last = time.perf_counter()

        def on_trial(outcome: TrialOutcome) -> None:
            nonlocal last
            now = time.perf_counter()
            steps = timer.take()
            total = now - last
            costs = steps.pop("measure_costs", 0.0)
            measured = sum(steps.get(k, 0.0) for k in ("build", "flops", "flops_dense"))
            steps["params_cache"] = costs - measured  # parameter counts, cache lookups and writes
            steps["rest"] = total - costs - sum(steps.get(k, 0.0) for k in ("ask", "suggest", "note"))
            reason = outcome.reason or ""
            rows.append(
                {
                    "number": outcome.number,
                    "state": outcome.state.name,
                    "duplicate": reason.startswith("duplicate"),
                    "over_budget": reason.startswith("over budget"),
                    "seconds": total,
                    "steps": {k: steps.get(k, 0.0) for k in STEPS},
                }
            )
            last = now

        run.on_trial = on_trial
        with warnings.catch_warnings(), timer.patched(run):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            last = time.perf_counter()
            run.run(trials)
        failed = [t.number for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL"]
    finally:
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=name, storage=storage)
    return {"data_seconds": data_s, "failed": failed, "trials": rows}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    rows = result["trials"]
    times = sorted(r["seconds"] for r in rows)
    mean = statistics.fmean(times)
    return {
        "trials": len(rows),
        "duplicates": sum(r["duplicate"] for r in rows),
        "over_budget": sum(r["over_budget"] for r in rows),
        "failed": len(result["failed"]),
        "s_per_trial_median": round(statistics.median(times), 3),
        "s_per_trial_p90": round(times[math.ceil(0.9 * len(times)) - 1], 3),  # nearest rank
        "s_per_trial_mean": round(mean, 3),
        "s_per_trial_max": round(times[-1], 3),
        "s_first_trial": round(rows[0]["seconds"], 3),
        "ms_per_step_mean": {
            k: round(1000 * statistics.fmean(r["steps"][k] for r in rows), 1) for k in STEPS
        },
        "data_load_seconds": round(result["data_seconds"], 3),
        "target_s": TARGET_S,
        "target_met": mean <= TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--spaces",
        nargs="+",
        default=DEFAULT_SPACES,
        help="names in search_spaces/ or YAML paths; NAME:N runs N trials of that space instead of --trials",
    )
    parser.add_argument("--trials", type=int, default=30, help="trials per space and storage")
    parser.add_argument(
        "--storage", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "journal", "postgresql"]
    )
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_overhead")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_before = os.getloadavg()
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in args.spaces:
            space, _, count = entry.partition(":")
            trials = int(count) if count else args.trials
            path = Path(space) if space.endswith((".yaml", ".yml")) else SPACES / f"{space}.yaml"
            spec, notes = overhead_spec(path)
            for backend in args.storage:
                url = {
                    "sqlite": f"sqlite:///{tmp}/{path.stem}.db",
                    "journal": f"journal:{tmp}/{path.stem}.log",
                    "postgresql": args.postgres,
                }[backend]
                try:
                    cache = Path(tmp) / f"costs-{path.stem}-{backend}.sqlite"
                    result = measure(spec, url, trials, cache)
                except HvtnasError as err:  # a server that is not there: noted, the others go on
                    skipped.append({"space": path.stem, "storage": backend, "reason": str(err)})
                    print(f"skipped {path.stem} on {backend}: {err}", flush=True)
                    continue
                row = {"space": path.stem, "storage": backend, **summarize(result), "changes": notes}
                print(json.dumps({k: v for k, v in row.items() if k != "changes"}), flush=True)
                per_trial = [
                    {**t, "seconds": round(t["seconds"], 4), "steps": {k: round(v, 4) for k, v in s.items()}}
                    for t in result["trials"]
                    for s in [t["steps"]]
                ]
                rows.append({**row, "per_trial": per_trial})
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "python": platform.python_version(),
        "spaces": args.spaces,
        "default_trials": args.trials,
        "target_s_per_trial": TARGET_S,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "skipped": skipped,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"# Search overhead per trial, training and latency excluded ({meta['date']}, {meta['cpu']}, "
        f"{meta['cpus']} CPUs, torch {meta['torch']}, optuna {meta['optuna']}, target <= {TARGET_S} s "
        "a trial on average)",
        "",
        "| space | storage | trials | s/trial median | p90 | mean | first | target | dup | "
        + " | ".join(f"{s} ms" for s in STEPS)
        + " |",
        "|---|---|" + "---:|" * (7 + len(STEPS)),
    ]
    for r in rows:
        steps = " | ".join(str(r["ms_per_step_mean"][s]) for s in STEPS)
        lines.append(
            f"| {r['space']} | {r['storage']} | {r['trials']} | {r['s_per_trial_median']} | "
            f"{r['s_per_trial_p90']} | "
            f"{r['s_per_trial_mean']} | {r['s_first_trial']} | {'yes' if r['target_met'] else 'NO'} | "
            f"{r['duplicates']} | {steps} |"
        )
    lines += [
        "",
        "Steps are means over all trials (duplicates measure nothing), so they add up to the mean. "
        "ask: Optuna's sampler and the new trial row; suggest: every parameter (SearchSpace.sample); "
        "build, flops, flops_dense: inside measure_costs (meta-device build, FLOPs on meta tensors); "
        "params_cache: parameter counts and the cost cache; note: the dashboard note; rest: user "
        "attributes, duplicate scan, tell and the loop's stale/finished checks.",
        "",
        f"Load average (1 min) before / after: {meta['load_average_before_after']}.",
    ]
    changes = {r["space"]: r["changes"] for r in rows}
    lines += [f"- {space}: {'; '.join(c) or 'unchanged'}" for space, c in changes.items()]
    lines += [f"- skipped {s['space']} on {s['storage']}: {s['reason']}" for s in skipped]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
