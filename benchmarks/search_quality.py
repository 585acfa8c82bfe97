"""Does the search find better architectures than hand design and than random search?

On one proxy task (a shipped search space and its training recipe) this script runs

1. **searches**: ``hvtnas search`` over the space with NSGA-II, TPE and random sampling, the same
   number of trials each, for several sampler seeds (objectives: accuracy and FLOPs, as the space
   says); each study is an ordinary run folder that ``hvtnas report``/``dashboard`` open;
2. **baselines**: published families from the zoo (Swin, PVTv2, Twins, PoolFormer, ConvFormer,
   CAFormer, ShiftViT, IdentityFormer) scaled to the task by width and depth only
   (``hvtnas.models.scale_to_flops``: their mixers, stems, positional encodings and FFNs kept) at two
   FLOP budgets, each trained with the space's own recipe on several training seeds;
3. **challengers**: for each baseline, the found architecture (NSGA-II and TPE studies) with the best
   search accuracy at no more FLOPs, retrained on the same training seeds as the baselines. The
   seeds differ from the search's own, so the retrained accuracy carries no selection bias;
4. **latency** of baselines and challengers at batch 1 on this machine's CPU (or GPU), measured once
   the training is over so no two measurements share the machine.

It writes ``benchmarks/results/search_quality_<scale>.{json,md,html}`` and the exact space file used:
hypervolume against trials for each sampler (mean and spread over seeds), the fronts with the
baselines on the same axes, each baseline against its challenger (mean and standard deviation over
training seeds, Welch's t-test), and what the fronts are made of.

    python benchmarks/search_quality.py --scale cpu    # animal_mnist at 28x28; about 45 min on 2 cores
    python benchmarks/search_quality.py --scale gpu    # CIFAR-10 at 32x32 (search_spaces/cifar.yaml)
    python benchmarks/search_quality.py --scale cpu --trials 6 --seeds 0 --train-seeds 1 \
        --families swin_t poolformer_s12 --work runs/sq-smoke --out smoke   # a smoke run, minutes

The work folder (``runs/search_quality_<scale>`` by default) holds the studies, every finished
training and a cost cache (``costs.sqlite``: FLOPs, parameters and latency per architecture), so an
interrupted run continues where it stopped and a rerun only re-analyses. ``--space`` runs a scale on
another space file (the same space with another recipe, say).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from scipy import stats

from hvtnas.config import ArchConfig
from hvtnas.costs import CostCache, Costs, CostSettings, LatencySettings, measure_costs
from hvtnas.costs.latency import cpu_name
from hvtnas.models import scale_to_flops, zoo
from hvtnas.search.resilience import count_finished
from hvtnas.search.study import arch_key, load_search_spec, open_study
from hvtnas.search.warm_start import warm_start_points
from hvtnas.search.workers import open_storage, run_storage
from hvtnas.summary import describe
from hvtnas.train import ImageData, load_dataset
from hvtnas.train.trainer import adapt_arch_to_data, train_proxy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SAMPLERS = ("nsga2", "tpe", "random")
GUIDED = ("nsga2", "tpe")  # challengers come from these; random search is the control
FAMILIES = (
    "swin_t",
    "pvt_v2_b0",
    "twins_svt_s",
    "poolformer_s12",
    "convformer_s18",
    "caformer_s18",
    "shiftvit_t",
    "identityformer_s12",
)
# the zoo's -T/-S depths are 2-4x what a 28x28 or 32x32 task needs: depth is scaled by a third and
# width is then chosen to meet the FLOP budget
DEPTH_MULT = 1 / 3
CHALLENGER_CANDIDATES = 5  # most accurate found architectures whose latency is compared


@dataclass(frozen=True)
class Scale:
    space: str
    trials: int
    jobs: int
    device: str
    note: str
    budgets: tuple[float, ...] | None = None  # baseline MACs; None: the quartiles of the searched FLOPs


SCALES = {
    "cpu": Scale(
        "search_spaces/animal_mnist.yaml",
        trials=40,
        jobs=2,
        device="cpu",
        note="animal_mnist (10 classes, 28x28 gray) from ../shared/data/, 2 CPU worker processes",
        budgets=(2e6, 5e6),
    ),
    "gpu": Scale(
        "search_spaces/cifar.yaml",
        trials=100,
        jobs=1,
        device="cuda",
        note="CIFAR-10 at 32x32 (search_spaces/cifar.yaml; the archive is read from data/ or downloaded)",
    ),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------- searches
def run_searches(
    space_file: Path, work: Path, samplers: list[str], seeds: list[int], trials: int, jobs: int
) -> float:
    """Every (sampler, seed) study through the CLI, ``jobs`` studies at a time; returns seconds
    (0 when every study was already finished)."""
    started = time.perf_counter()
    pending = [(s, seed) for seed in seeds for s in samplers if not _finished(work, f"{s}-s{seed}", trials)]
    if not pending:
        return 0.0
    share_warm_start(space_file, work, [f"{s}-s{seed}" for s, seed in pending], jobs)
    running: list[tuple[subprocess.Popen, Path]] = []
    while pending or running:
        while pending and len(running) < jobs:
            sampler, seed = pending.pop(0)
            name = f"{sampler}-s{seed}"
            cmd = [
                sys.executable, "-m", "hvtnas", "search", str(space_file), "--trials", str(trials),
                "--sampler", sampler, "--seed", str(seed), "--study", name, "--runs-dir", str(work / "runs"),
            ]  # fmt: skip
            out = (work / "logs" / f"{name}.log").open("a")
            running.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT), out))
            log(f"search {name}: started")
        time.sleep(2)
        for proc, out in list(running):
            if proc.poll() is not None:
                out.close()
                running.remove((proc, out))
                if proc.returncode != 0:
                    raise SystemExit(f"search failed (exit {proc.returncode}); see {out.name}")
                log(f"search {Path(out.name).stem}: done")
    return time.perf_counter() - started


WARM_STUDY = "warm-start"


def share_warm_start(space_file: Path, work: Path, names: list[str], jobs: int) -> None:
    """Every study starts with the same warm-start trials (one training each, seed-fixed and never
    stopped early): they are evaluated once, in a study of their own, and copied into each new
    study, which is what ``hvtnas search`` would have computed again in each."""
    spec = load_search_spec(space_file)
    points = warm_start_points(spec)
    if not points or all((work / "runs" / name).exists() for name in names):
        return
    distinct = len({repr(sorted(p.params.items())) for p in points})
    if not _finished(work, WARM_STUDY, distinct):
        log(f"warm start: evaluating {distinct} published designs once for all studies")
        cmd = [
            sys.executable, "-m", "hvtnas", "search", str(space_file), "--trials", str(distinct),
            "--sampler", "random", "--study", WARM_STUDY, "--runs-dir", str(work / "runs"),
            "--n-jobs", str(jobs),
        ]  # fmt: skip
        with (work / "logs" / f"{WARM_STUDY}.log").open("a") as out:
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, check=True)
    warm = [t for t in _load(work, WARM_STUDY).get_trials(deepcopy=False) if t.user_attrs.get("warm_start")]
    for name in names:
        run = work / "runs" / name
        if run.exists():
            continue
        study = open_study(spec, name, run_storage(run), warm_start=[])
        study.add_trials(sorted(warm, key=lambda t: t.number))
        log(f"search {name}: starts from the {len(warm)} warm-start trials")


def _load(work: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(run_storage(work / "runs" / name)))


def _finished(work: Path, name: str, trials: int) -> bool:
    run = work / "runs" / name
    if not (run / "study.db").exists() and not (run / "journal.log").exists():
        return False
    return count_finished(_load(work, name)) >= trials


def load_studies(work: Path, samplers: list[str], seeds: list[int]) -> dict[tuple[str, int], optuna.Study]:
    return {(sampler, seed): _load(work, f"{sampler}-s{seed}") for sampler in samplers for seed in seeds}


def trained(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials trained to the end (over-budget samples are recorded but never trained;
    under NSGA-II/III a trial stopped early is recorded complete, flagged ``stopped_early``)."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "constraint_violations" not in t.user_attrs and not t.user_attrs.get("stopped_early")
    ]


def stopped_early(study: optuna.Study) -> int:
    """Trials early stopping ended: pruned, or (NSGA-II/III) complete and flagged."""
    return sum(
        t.state == TrialState.PRUNED or bool(t.user_attrs.get("stopped_early"))
        for t in study.get_trials(deepcopy=False)
    )


# ----------------------------------------------------------------------------------- hypervolume
def hypervolume_history(study: optuna.Study, trials: int, flops_ref: float, error_ref: float) -> list[float]:
    """Hypervolume of (FLOPs / flops_ref, error) after each of the first ``trials`` trials.

    The reference point is the FLOP limit and chance-level error: a model worse than guessing or
    over budget adds nothing."""
    from optuna._hypervolume import compute_hypervolume  # Optuna's exact 2-D/WFG hypervolume

    by_number = {t.number: t for t in trained(study)}
    points: list[tuple[float, float]] = []
    history = []
    for n in range(trials):
        t = by_number.get(n)
        if t is not None:
            accuracy, flops = t.values
            point = (flops / flops_ref, 1.0 - accuracy)
            if point[0] < 1.0 and point[1] < error_ref:
                points.append(point)
        if points:
            history.append(float(compute_hypervolume(np.array(points), np.array([1.0, error_ref]))))
        else:
            history.append(0.0)
    return history


def pareto(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated points (max accuracy, min flops), sorted by FLOPs."""
    front = []
    for p in sorted(points, key=lambda p: (p["flops"], -p["accuracy"])):
        if not front or p["accuracy"] > front[-1]["accuracy"]:
            front.append(p)
    return front


# -------------------------------------------------------------------------------- trainings
@functools.cache
def _dataset(space_file: str, channels: int, resolution: int) -> ImageData:
    """One copy per worker process (and per GPU, which the data lives on)."""
    exp = load_search_spec(space_file).experiment
    return load_dataset(exp.data.for_arch(channels, resolution))


def _train_one(job: dict[str, Any]) -> dict[str, Any]:
    """One training with the space's recipe (runs in a worker process)."""
    exp = load_search_spec(job["space_file"]).experiment
    arch = ArchConfig.model_validate(job["arch"])
    data = _dataset(job["space_file"], arch.input.channels, arch.input.resolution)
    cfg = exp.train.model_copy(update={"seed": job["seed"]})
    started = time.perf_counter()
    result = train_proxy(arch, data, cfg)
    return {
        **{k: job[k] for k in ("key", "seed", "role")},
        "status": result.status,
        "reason": result.reason,
        "accuracy": result.val_accuracy,
        "seconds": time.perf_counter() - started,
    }


def run_trainings(
    jobs: list[dict[str, Any]], done_file: Path, workers: int
) -> tuple[dict[tuple[str, int], dict], int]:
    """Train every job not already in ``done_file`` (one JSON line each); returns all results and
    how many were trained now."""
    done = {}
    if done_file.exists():
        for line in done_file.read_text().splitlines():
            r = json.loads(line)
            done[r["key"], r["seed"]] = r
    todo = [j for j in jobs if (j["key"], j["seed"]) not in done]
    if todo:
        log(f"training {len(todo)} models ({len(jobs) - len(todo)} already done)")
        # spawn: a forked child of a process that already ran torch's thread pools can deadlock
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool, done_file.open("a") as out:
            for r in pool.map(_train_one, todo):
                done[r["key"], r["seed"]] = r
                out.write(json.dumps(r) + "\n")
                out.flush()
                log(f"  {r['role']} {r['key']} seed {r['seed']}: {r['accuracy']:.4f} ({r['seconds']:.0f} s)")
    return done, len(todo)


# --------------------------------------------------------------------------------------- report
def welch(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return None if math.isnan(p) else float(p)


SIGNIFICANCE = 0.05  # Welch's t-test over training seeds: a smaller difference counts as noise


def dominance(
    challenger: dict[str, Any] | None, accs: list[float], latency_ms: float, p: float | None
) -> str:
    """Whether the challenger (no more FLOPs by construction) dominates the baseline, noise included."""
    if challenger is None:
        return "no: nothing found at these FLOPs"
    better = challenger["mean"] > float(np.mean(accs))
    significant = p is not None and p < SIGNIFICANCE
    if not better:
        return "no: the baseline is more accurate" + (" (significant)" if significant else " (within noise)")
    if not significant:
        return "no: more accurate, but within seed noise"
    if challenger["latency_ms"] > latency_ms:
        return "on accuracy and FLOPs, not latency"
    return "yes"


def front_composition(front_archs: list[tuple[float, ArchConfig]], budgets: list[float]) -> dict[str, Any]:
    """Which mixers (per stage), stems and PEs the front uses, below each budget and above the last."""
    edges = [0.0, *budgets, math.inf]
    out = {}
    for lo, hi in itertools.pairwise(edges):
        members = [a for f, a in front_archs if lo < f <= hi]
        label = f"{lo / 1e6:.1f}-{hi / 1e6:.1f} MMACs" if math.isfinite(hi) else f"> {lo / 1e6:.1f} MMACs"
        out[label] = {
            "members": len(members),
            "stem": dict(Counter(a.stem.kind for a in members)),
            "pos_embed": dict(Counter(a.pos_embed.kind for a in members)),
            "ffn": dict(Counter(a.stages[0].ffn.kind for a in members)),
            "mixers": [
                dict(Counter("+".join(dict.fromkeys(m.kind for m in a.stages[i].mixers)) for a in members))
                for i in range(max((len(a.stages) for a in members), default=0))
            ],
        }
    return out


def importances(studies: dict[tuple[str, int], optuna.Study]) -> dict[str, float]:
    """fANOVA importance of each dimension for accuracy, over the random-search trials (an
    unbiased sample of the space)."""
    pooled = optuna.create_study(directions=["maximize", "minimize"])
    for (sampler, _), study in studies.items():
        if sampler == "random":
            pooled.add_trials(trained(study))
    if len(pooled.trials) < 8:
        return {}
    imp = optuna.importance.get_param_importances(
        pooled,
        target=lambda t: t.values[0],
        evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
    )
    return {k: round(float(v), 4) for k, v in imp.items()}


def write_figures(result: dict[str, Any], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    colours = {"nsga2": "#1f77b4", "tpe": "#2ca02c", "random": "#7f7f7f"}
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.42, 0.58],
        subplot_titles=("Hypervolume vs trials (mean ± sd over seeds)", "Pareto fronts and scaled baselines"),
    )
    for sampler, hv in result["hypervolume"].items():
        mean, sd = np.array(hv["mean"]), np.array(hv["sd"])
        x = list(range(1, len(mean) + 1))
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=list(mean + sd) + list((mean - sd)[::-1]),
                fill="toself",
                line={"width": 0},
                fillcolor=colours[sampler],
                opacity=0.15,
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(x=x, y=mean, name=f"{sampler} HV", line={"color": colours[sampler]}), row=1, col=1
        )
    for sampler, front in result["fronts"].items():
        fig.add_trace(
            go.Scatter(
                x=[p["flops"] / 1e6 for p in front],
                y=[p["accuracy"] for p in front],
                mode="lines+markers",
                line={"shape": "hv", "color": colours[sampler]},
                name=f"{sampler} front (all seeds)",
                text=[p["study"] + " #" + str(p["number"]) for p in front],
            ),
            row=1,
            col=2,
        )
    base = result["baselines"]
    fig.add_trace(
        go.Scatter(
            x=[b["flops"] / 1e6 for b in base],
            y=[b["mean"] for b in base],
            error_y={"type": "data", "array": [b["sd"] for b in base]},
            mode="markers+text",
            marker={"symbol": "diamond", "size": 9, "color": "#d62728"},
            text=[b["family"] for b in base],
            textposition="bottom center",
            textfont={"size": 9},
            name="scaled baselines (mean ± sd)",
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Scatter(
            x=[c["flops"] / 1e6 for c in result["challengers"]],
            y=[c["mean"] for c in result["challengers"]],
            error_y={"type": "data", "array": [c["sd"] for c in result["challengers"]]},
            mode="markers",
            marker={"symbol": "star", "size": 11, "color": "#ff7f0e"},
            name="found, retrained (mean ± sd)",
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="trials", row=1, col=1)
    fig.update_yaxes(title_text="hypervolume (FLOPs/limit × error)", row=1, col=1)
    fig.update_xaxes(title_text="MMACs", row=1, col=2)
    fig.update_yaxes(title_text="validation accuracy", row=1, col=2)
    fig.update_layout(height=560, width=1400, title=result["title"], template="plotly_white")
    fig.write_html(path.with_suffix(".html"), include_plotlyjs="cdn")
    try:  # a static image where kaleido and a browser are there
        fig.write_image(path.with_suffix(".png"), scale=1)
    except Exception as err:
        log(f"no PNG ({type(err).__name__}: {str(err).splitlines()[0][:120]})")


def fmt_pct(mean: float, sd: float) -> str:
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def write_markdown(result: dict[str, Any], path: Path) -> None:
    s = result["settings"]
    lines = [
        f"# {result['title']}",
        "",
        f"Data: {s['data']}. Space: `{s['space']}` (copied beside this file as it was used). Recipe: "
        f"{s['recipe']}. Objectives: {', '.join(s['objectives'])}; constraints: {s['constraints']}.",
        f"Searches: {', '.join(s['samplers'])} x seeds {s['seeds']}, {s['trials']} trials each, "
        f"{s['jobs']} at a time. Baselines and challengers: training seeds {s['train_seeds']} "
        f"(the searches train with seed {s['search_train_seed']}).",
        f"Machine: {s['machine']}; torch {s['torch']}, optuna {s['optuna']}; {s['date']}. Wall time: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in result["wall_seconds"].items())
        + ".",
        "",
        "## Hypervolume after N trials (mean ± sd over seeds)",
        "",
        f"Reference point: FLOPs = {s['flops_ref'] / 1e6:.1f} MMACs, error = {s['error_ref']:.2f} (chance)."
        + (
            f" Every study starts with the same {result['warm_start_trials']} warm-start trials (the "
            "baselines below, evaluated by the search itself): the hypervolume at "
            f"N={result['warm_start_trials']} is the hand designs', what follows is the sampler's."
            if result.get("warm_start_trials")
            else ""
        ),
        "",
        "| sampler | " + " | ".join(f"N={n}" for n in result["hv_checkpoints"]) + " |",
        "|---|" + "---:|" * len(result["hv_checkpoints"]),
    ]
    for sampler, hv in result["hypervolume"].items():
        cells = [f"{hv['mean'][n - 1]:.4f} ± {hv['sd'][n - 1]:.4f}" for n in result["hv_checkpoints"]]
        lines.append(f"| {sampler} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per seed: final hypervolume; trials trained to the end / stopped early by early stopping:",
        "",
    ]
    for sampler, hv in result["hypervolume"].items():
        lines.append(
            f"- {sampler}: "
            + ", ".join(f"{v:.4f}" for v in hv["final_per_seed"])
            + "; "
            + ", ".join(
                f"{a}/{b}" for a, b in zip(hv["trained_per_seed"], hv["stopped_early_per_seed"], strict=True)
            )
        )
    lines += [
        "",
        "## Baselines against the found architectures",
        "",
        "Accuracy: mean ± sd over the training seeds (%). Latency: median ms at batch 1. The "
        "challenger is the found architecture with the best search accuracy at no more FLOPs than "
        "the baseline (never a warm-start design; of the "
        f"{CHALLENGER_CANDIDATES} most accurate, the first no slower than the baseline, if any); "
        "*dominates* means higher mean accuracy (Welch's t-test over the seeds, "
        f"p < {SIGNIFICANCE}) at no more FLOPs and no more latency.",
        "",
        "| baseline | MMACs | params | acc | latency | challenger | MMACs | params | acc | latency "
        "| Δacc | p | dominates |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    challengers = {c["key"]: c for c in result["challengers"]}
    for b in result["baselines"]:
        c = challengers.get(b["challenger"])
        if c is None:
            lines.append(
                f"| {b['family']} | {b['flops'] / 1e6:.2f} | {b['params']:,} | {fmt_pct(b['mean'], b['sd'])} "
                f"| {b['latency_ms']:.2f} | none at these FLOPs | | | | | | | no |"
            )
            continue
        p = b["p_value"]
        lines.append(
            f"| {b['family']} | {b['flops'] / 1e6:.2f} | {b['params']:,} | {fmt_pct(b['mean'], b['sd'])} "
            f"| {b['latency_ms']:.2f} | {c['study']} #{c['number']} | {c['flops'] / 1e6:.2f} | "
            f"{c['params']:,} | {fmt_pct(c['mean'], c['sd'])} | {c['latency_ms']:.2f} | "
            f"{100 * (c['mean'] - b['mean']):+.1f} | {'-' if p is None else f'{p:.3f}'} | {b['verdict']} |"
        )
    lines += ["", "Challengers:", ""]
    for c in result["challengers"]:
        lines.append(f"- {c['study']} #{c['number']} ({c['flops'] / 1e6:.2f} MMACs): {c['description']}")
    lines += ["", "Baselines (scaled by width and depth only):", ""]
    for b in result["baselines"]:
        lines.append(f"- {b['family']} @ {b['budget'] / 1e6:.1f}M budget: {b['description']}")
    lines += ["", "## What the fronts are made of (union of all studies' Pareto fronts)", ""]
    for band, comp in result["front_composition"].items():
        lines.append(
            f"- **{band}** ({comp['members']} front members): stems {comp['stem']}; PEs {comp['pos_embed']}; "
            f"FFN {comp['ffn']}"
        )
        for i, mixers in enumerate(comp["mixers"]):
            lines.append(f"  - stage {i + 1}: {mixers}")
    if result["importances"]:
        lines += ["", "fANOVA importance for accuracy (random-search trials):", ""]
        lines += [f"- {k}: {v:.3f}" for k, v in list(result["importances"].items())[:10]]
    path.write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument(
        "--space",
        type=Path,
        help="another search-space file for this scale (e.g. the same space, another recipe)",
    )
    parser.add_argument("--trials", type=int, help="trials per study (default: the scale's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument(
        "--families",
        nargs="+",
        choices=zoo.names(),
        help="baseline families (default: the space's warm start, else the published set)",
    )
    parser.add_argument("--budgets", type=float, nargs="+", help="baseline MACs (default: the scale's)")
    parser.add_argument("--jobs", type=int, help="concurrent studies / trainings (default: the scale's)")
    parser.add_argument("--work", type=Path, help="work folder (default: runs/search_quality_<scale>)")
    parser.add_argument("--out", default=None, help="result name under benchmarks/results/")
    args = parser.parse_args()

    scale = SCALES[args.scale]
    args.families_given = args.families is not None
    args.families = args.families or list(FAMILIES)
    trials, jobs = args.trials or scale.trials, args.jobs or scale.jobs
    work = (args.work or ROOT / "runs" / f"search_quality_{args.scale}").resolve()
    out_name = args.out or f"search_quality_{args.scale}"
    (work / "logs").mkdir(parents=True, exist_ok=True)
    if scale.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--scale gpu needs a CUDA device (none is visible)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group

    source = args.space or ROOT / scale.space
    space_file = work / source.name  # the exact file every study and training reads
    if not space_file.exists():
        shutil.copy(source, space_file)
    spec = load_search_spec(space_file)
    exp = spec.experiment
    if exp.objectives[:2] != ["accuracy", "flops"]:
        raise SystemExit(f"{space_file}: the study needs objectives [accuracy, flops, ...]")
    os.chdir(ROOT)  # data paths in the space are relative to the repository root
    data = load_dataset(
        exp.data.for_arch(spec.space.tree["input"]["channels"], spec.space.tree["input"]["resolution"])
    )
    wall: dict[str, float] = {}
    cost_cache = CostCache(work / "costs.sqlite")  # FLOPs, parameters and latency, once per architecture

    def costs(arch: ArchConfig, latency: LatencySettings | None = None) -> Costs:
        return measure_costs(arch, CostSettings(dense_resolution=None, latency=latency), cache=cost_cache)

    # 1. searches
    wall["searches"] = run_searches(space_file, work, args.samplers, args.seeds, trials, jobs)
    studies = load_studies(work, args.samplers, args.seeds)

    # 2. baselines: the published families at the budgets. A space with a warm start evaluates
    # exactly these designs as its first trials (the same scaling); the baselines are then those
    # points, retrained here on other seeds
    flops_limit = exp.constraints.get("flops")
    all_flops = sorted(t.values[1] for s in studies.values() for t in trained(s))
    baseline_archs: dict[str, tuple[str, float, ArchConfig]] = {}
    if exp.warm_start is not None and exp.warm_start.zoo and not (args.budgets or args.families_given):
        budgets = list(exp.warm_start.flops)
        families = list(exp.warm_start.zoo)
        zoo_points = [p for p in warm_start_points(spec) if "@" in p.label]  # budget by budget
        for point, (budget, family) in zip(zoo_points, itertools.product(budgets, families), strict=True):
            scaled = adapt_arch_to_data(point.arch, data)
            baseline_archs[arch_key(scaled)] = (family, budget, scaled)
        depth_mult = exp.warm_start.depth_mult
    else:
        budgets = args.budgets or scale.budgets or [float(np.quantile(all_flops, q)) for q in (0.25, 0.75)]
        families = args.families
        depth_mult = DEPTH_MULT
        for budget in budgets:
            for family in families:
                scaled = scale_to_flops(
                    zoo.get_config(family),
                    budget,
                    depth_mult=DEPTH_MULT,
                    input=spec.space.tree["input"],
                    name=f"{family}_{budget / 1e6:.1f}M",
                )
                scaled = adapt_arch_to_data(scaled, data)
                baseline_archs[arch_key(scaled)] = (family, budget, scaled)

    # 3. challengers: among the guided studies' trials that are neither a warm-start design nor a
    # baseline, those at no more FLOPs; the best by search accuracy that is also no slower (of
    # the CHALLENGER_CANDIDATES most accurate), else the most accurate
    latency_settings = LatencySettings(
        device=scale.device, batch_size=1, threads=1 if scale.device == "cpu" else None
    )

    def latency_of(arch: ArchConfig) -> float:
        return costs(arch, latency_settings).latency.median_ms

    found = [
        (study_key, t)
        for study_key, study in studies.items()
        if study_key[0] in GUIDED
        for t in trained(study)
        if not t.user_attrs.get("warm_start") and t.user_attrs["arch_key"] not in baseline_archs
    ]
    challenger_of: dict[str, tuple[tuple[str, int], optuna.trial.FrozenTrial] | None] = {}
    for key, (_, _, arch) in baseline_archs.items():
        fits = sorted(
            ((sk, t) for sk, t in found if t.values[1] <= costs(arch).flops),
            key=lambda st: -st[1].values[0],
        )
        baseline_latency = latency_of(arch)
        no_slower = [
            (sk, t)
            for sk, t in fits[:CHALLENGER_CANDIDATES]
            if latency_of(ArchConfig.model_validate(t.user_attrs["arch"])) <= baseline_latency
        ]
        challenger_of[key] = (no_slower or fits or [None])[0]
    challenger_archs = {
        t.user_attrs["arch_key"]: (sk, t, ArchConfig.model_validate(t.user_attrs["arch"]))
        for v in challenger_of.values()
        if v is not None
        for sk, t in [v]
    }

    train_jobs = [
        {"space_file": str(space_file), "arch": arch.to_dict(), "key": key, "seed": seed, "role": role}
        for role, archs in (("baseline", baseline_archs), ("challenger", challenger_archs))
        for key, arch in ((k, v[-1]) for k, v in archs.items())
        for seed in args.train_seeds
    ]
    t0 = time.perf_counter()
    results, trained_now = run_trainings(train_jobs, work / "trainings.jsonl", jobs)
    wall["baseline and challenger training"] = time.perf_counter() - t0 if trained_now else 0.0

    # 4. latency, alone on the machine
    t0 = time.perf_counter()
    latency = {key: latency_of(v[-1]) for key, v in {**baseline_archs, **challenger_archs}.items()}
    wall["latency"] = time.perf_counter() - t0  # ~0 when every latency was in the cache
    # wall time spent on each phase over all runs of this work folder (a rerun that only
    # re-analyses adds nothing)
    wall_file = work / "wall_seconds.json"
    spent = json.loads(wall_file.read_text()) if wall_file.exists() else {}
    wall = {k: spent.get(k, 0.0) + v for k, v in wall.items()}
    wall_file.write_text(json.dumps(wall, indent=1))

    def measured(key: str, arch: ArchConfig) -> dict[str, Any]:
        """Accuracies over the training seeds (mean, sd), FLOPs, parameters and latency."""
        accs = [results[key, s]["accuracy"] or 0.0 for s in args.train_seeds]
        c = costs(arch)
        return {
            "key": key, "flops": c.flops, "params": c.params, "accuracies": accs,
            "mean": float(np.mean(accs)), "sd": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
            "latency_ms": latency[key],
            "description": describe(arch), "arch": arch.to_dict(),
        }  # fmt: skip

    challengers = [
        {
            "study": f"{sk[0]}-s{sk[1]}",
            "number": t.number,
            "search_accuracy": t.values[0],
            **measured(key, arch),
        }
        for key, (sk, t, arch) in challenger_archs.items()
    ]
    by_key = {c["key"]: c for c in challengers}
    baselines = []
    for key, (family, budget, arch) in baseline_archs.items():
        row = measured(key, arch)
        ch = challenger_of[key]
        ckey = ch[1].user_attrs["arch_key"] if ch else None
        c = by_key.get(ckey)
        p_value = welch(c["accuracies"], row["accuracies"]) if c else None
        verdict = dominance(c, row["accuracies"], row["latency_ms"], p_value)
        baselines.append(
            {
                "family": family,
                "budget": budget,
                **row,
                "challenger": ckey,
                "p_value": p_value,
                "verdict": verdict,
            }
        )

    # hypervolume and fronts
    error_ref = 1.0 - 1.0 / data.num_classes
    flops_ref = flops_limit or 1.1 * max(all_flops)
    hv: dict[str, Any] = {}
    fronts: dict[str, list[dict[str, Any]]] = {}
    union_points = []
    for sampler in args.samplers:
        curves = [
            hypervolume_history(studies[sampler, seed], trials, flops_ref, error_ref) for seed in args.seeds
        ]
        arr = np.array(curves)
        hv[sampler] = {
            "mean": arr.mean(0).tolist(),
            "sd": (arr.std(0, ddof=1) if len(curves) > 1 else np.zeros(arr.shape[1])).tolist(),
            "final_per_seed": arr[:, -1].tolist(),
            "trained_per_seed": [len(trained(studies[sampler, seed])) for seed in args.seeds],
            "stopped_early_per_seed": [stopped_early(studies[sampler, seed]) for seed in args.seeds],
            "per_seed": curves,
        }
        points = [
            {"study": f"{sampler}-s{seed}", "number": t.number, "accuracy": t.values[0], "flops": t.values[1],
             "arch_key": t.user_attrs["arch_key"]}
            for seed in args.seeds
            for t in trained(studies[sampler, seed])
        ]  # fmt: skip
        fronts[sampler] = pareto(points)
        union_points += points
    arch_of = {
        t.user_attrs["arch_key"]: ArchConfig.model_validate(t.user_attrs["arch"])
        for s in studies.values()
        for t in trained(s)
    }
    union_front = pareto(union_points)
    warm_trials = max(
        (sum(bool(t.user_attrs.get("warm_start")) for t in study.trials) for study in studies.values()),
        default=0,
    )
    checkpoints = sorted({n for n in (10, 20, 40, 60, 100, 200, trials, warm_trials) if 0 < n <= trials})
    result = {
        "title": f"Search quality, {args.scale} scale: {source.stem} space",
        "settings": {
            "scale": args.scale,
            "space": str(args.space) if args.space else scale.space,
            "data": scale.note,
            "recipe": (
                f"{exp.train.epochs} epochs, batch {exp.train.batch_size}, AdamW lr {exp.train.lr}, "
                f"{data.resolution}x{data.resolution}, {data.num_train} training / "
                f"{data.num_val} validation images, early stopping from epoch "
                f"{exp.early_stopping.min_epoch if exp.early_stopping else '-'}"
            ),
            "objectives": exp.objectives,
            "constraints": exp.constraints,
            "samplers": args.samplers,
            "seeds": args.seeds,
            "train_seeds": args.train_seeds,
            "search_train_seed": exp.train.seed,
            "trials": trials,
            "jobs": jobs,
            "budgets": budgets,
            "families": families,
            "depth_mult": depth_mult,
            "warm_start": bool(exp.warm_start and exp.warm_start.zoo),
            "flops_ref": flops_ref,
            "error_ref": error_ref,
            "machine": f"{cpu_name()}, {os.cpu_count()} CPUs"
            + (f", {torch.cuda.get_device_name()}" if scale.device == "cuda" else ""),
            "torch": torch.__version__,
            "optuna": optuna.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
        "wall_seconds": wall,
        "hv_checkpoints": checkpoints,
        "warm_start_trials": warm_trials,
        "hypervolume": hv,
        "fronts": fronts,
        "union_front": union_front,
        "baselines": baselines,
        "challengers": challengers,
        "front_composition": front_composition(
            [(p["flops"], arch_of[p["arch_key"]]) for p in union_front], sorted(budgets)
        ),
        "importances": importances(studies),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / out_name
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    shutil.copy(space_file, RESULTS / f"{out_name}.space.yaml")
    write_markdown(result, out.with_suffix(".md"))
    write_figures(result, out)
    log(f"wrote {out}.{{json,md,html}}")


if __name__ == "__main__":
    main()
