"""Does one-shot search work on the CPU-scale task? Ranking fidelity and an equal-wall-time comparison.

On a shipped space (default ``search_spaces/animal_mnist.yaml``, its data and proxy recipe; a
fraction of the training images and fewer proxy epochs to fit a 2-core machine, both stated in the
results) this script

1. **trains the supernet** of the space (``hvtnas.search.one_shot``, the project's trainer) and
   times it;
2. **ranking**: draws random sub-networks within the space's constraints (FLOPs measured as the
   search measures them), evaluates each with the weights it inherits (no training) and trains each
   stand-alone with the proxy recipe, and reports Kendall tau and Spearman rho between the two
   accuracies, beside the tau that FLOPs and parameters alone reach (a ranking that costs nothing);
3. **one-shot study**: a ``strategy: one_shot`` study (``SearchRun``, the space's sampler and warm
   start) of ``--trials`` trials on the trained supernet, its Pareto front (inherited accuracy
   against FLOPs) retrained stand-alone with the same proxy recipe;
4. **equal wall time**: the hypervolume of that retrained front (supernet training + study +
   retraining) against the front of the stand-alone trainings of step 2 (a per-trial random search)
   cut at the same wall time; ``--per-trial-study`` also runs a per-trial study of the space's own
   sampler (warm start, early stopping) for that wall time.

Hypervolume as in ``benchmarks/search_quality.py``: of (FLOPs / limit, error), reference point
(1, 1 - 1/classes), trained (or retrained) accuracies only.

    nice -n 10 python benchmarks/one_shot_ranking.py              # ~25 min on 2 busy CPU cores
    python benchmarks/one_shot_ranking.py --subnets 4 --trials 12 --supernet-epochs 1 \
        --proxy-epochs 1 --fraction 0.1 --work runs/osr-smoke --out smoke   # a smoke run, minutes
    python benchmarks/one_shot_ranking.py --fraction 1.0 --proxy-epochs 3 --supernet-epochs 12 \
        --rule sandwich --trials 0 --work runs/osr-sandwich --out cpu_sandwich_labels_12epochs \
        --standalone-from benchmarks/results/one_shot_cpu_constrained_60epochs.json
        # another supernet against the same stand-alone trainings (same space, data and recipe)

Results: ``benchmarks/results/one_shot_<out>.{json,md}``. The work folder holds the supernet
checkpoint, the studies and every finished measurement, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from scipy import stats

from hvtnas.config import ArchConfig
from hvtnas.costs import CostCache, measure_costs
from hvtnas.costs.latency import cpu_name
from hvtnas.models.build import build_model
from hvtnas.search.one_shot import OneShotConfig, inherited_accuracy
from hvtnas.search.one_shot.strategy import SUPERNET_ATTR, prepare_supernet
from hvtnas.search.one_shot.training import finetune
from hvtnas.search.outcome import evaluated_trials
from hvtnas.search.study import SearchRun, SearchSpec, arch_key, load_search_spec, open_study, search_recipe
from hvtnas.search.warm_start import warm_start_points
from hvtnas.space import iter_samples
from hvtnas.summary import describe
from hvtnas.train import ImageData, TrainConfig, load_dataset, train_proxy
from hvtnas.train.trainer import adapt_arch_to_data

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "animal_mnist.npz"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Cache:
    """A JSON file of finished measurements: a rerun skips them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put(self, key: str, value: Any) -> Any:
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=1))
        return value


def prepared_spec(args: argparse.Namespace) -> SearchSpec:
    """The space file with this run's data fraction and proxy recipe (and the data file found)."""
    spec = load_search_spec(args.space)
    exp = spec.experiment
    data = exp.data.model_copy(update={"fraction": args.fraction})
    if data.path is not None and not data.path.is_absolute():
        data = data.model_copy(update={"path": (Path(args.space).parent / data.path).resolve()})
    if data.name == "npz" and not data.path.exists() and DATA.exists():
        data = data.model_copy(update={"path": DATA})
    train = exp.train.model_copy(update={"epochs": args.proxy_epochs, "device": "cpu"})
    supernet_train = OneShotConfig().supernet_recipe(train)  # the library's default rate
    supernet_train = supernet_train.model_copy(
        update={"epochs": args.supernet_epochs, "lr": args.supernet_lr or supernet_train.lr}
    )
    one_shot = OneShotConfig(
        train=supernet_train,
        rule=args.rule,
        sandwich_random=args.sandwich_random,
        distill=args.distill,
        shared_ffn=not args.ffn_per_kind,
        shared_parts=args.shared_parts,
        cover_samples=8,
        finetune_steps=args.finetune_steps,
        finetune_lr=args.finetune_lr,
        finetune_scope=args.finetune_scope,
        constrained_sampling=not args.unconstrained_sampling,
    )
    spec.experiment = exp.model_copy(
        update={"data": data, "train": train, "strategy": "one_shot", "one_shot": one_shot}
    )
    return spec


def reuse_standalone(path: Path, spec: SearchSpec, cache: Cache) -> int:
    """Take the stand-alone accuracies (and training times) of an earlier result of this script into
    the cache, keyed by architecture as this run's own; refused unless that run used the same space,
    data and proxy recipe. Returns how many were taken."""
    earlier = json.loads(Path(path).read_text())
    recipe, theirs = search_recipe(spec), earlier["settings"]["recipe"]
    for part in ("data", "train"):
        if json.loads(json.dumps(recipe[part], default=str)) != theirs[part]:
            raise SystemExit(f"{path}: its {part} recipe differs from this run's; train the references again")
    if Path(theirs["space"]).name != Path(recipe["space"]).name:
        raise SystemExit(f"{path}: a run on {theirs['space']}, not {recipe['space']}")
    for row in earlier["ranking"]:
        cache.put(
            "standalone:" + row["key"], {"accuracy": row["standalone"], "seconds": row["standalone_seconds"]}
        )
    return len(earlier["ranking"])


def space_data(spec: SearchSpec) -> ImageData:
    """The experiment's dataset, at the space's input channels and resolution."""
    inp = spec.space.tree.get("input", {})
    return load_dataset(spec.experiment.data.for_arch(inp.get("channels", 3), inp.get("resolution", 224)))


def feasible_samples(
    spec: SearchSpec, data: ImageData, n: int, seed: int, costs: CostCache
) -> Iterator[tuple[ArchConfig, Any]]:
    """Up to ``n`` random points of the space (adapted to ``data``) within the experiment's FLOPs
    and parameter constraints, with their costs: the same points for the same seed."""
    exp, limits, found = spec.experiment, spec.experiment.constraints, 0
    for arch in iter_samples(spec.space, 40 * n, seed=seed):
        if found == n:
            return
        arch = adapt_arch_to_data(arch, data, keep_resolution=True)
        c = measure_costs(arch, exp.costs, cache=costs)
        if ("flops" in limits and c.flops > limits["flops"]) or (
            "params" in limits and c.params > limits["params"]
        ):
            continue
        found += 1
        yield arch, c


def flops_of(arch: ArchConfig, spec: SearchSpec, costs: CostCache) -> float:
    return float(measure_costs(arch, spec.experiment.costs, cache=costs).flops)


def standalone(arch: ArchConfig, data: ImageData, train: TrainConfig, cache: Cache) -> dict[str, Any]:
    """Proxy accuracy of ``arch`` trained on its own with the recipe (cached by architecture)."""
    key = "standalone:" + arch_key(arch)
    if cache.get(key) is None:
        started = time.perf_counter()
        result = train_proxy(arch, data, train)
        cache.put(key, {"accuracy": result.val_accuracy, "seconds": time.perf_counter() - started})
    return cache.get(key)


# ------------------------------------------------------------------------------------------- steps
def train_the_supernet(spec: SearchSpec, data: ImageData, work: Path, cache: Cache) -> tuple[Any, float]:
    started = time.perf_counter()
    supernet, result = prepare_supernet(spec, data, work / "supernet")  # what `hvtnas search` runs
    if cache.get("supernet") is None or result.train_seconds > cache.get("supernet")["train_seconds"]:
        cache.put(
            "supernet",
            {
                "seconds": time.perf_counter() - started,
                "train_seconds": result.train_seconds,
                "epochs": [e.val_accuracy for e in result.epochs],
                "slots": len(supernet.slots),
                "parameters": sum(p.numel() for p in supernet.parameters()),
            },
        )
    return supernet.eval(), cache.get("supernet")["train_seconds"]


def ranking(
    spec: SearchSpec,
    data: ImageData,
    supernet: Any,
    n: int,
    costs: CostCache,
    cache: Cache,
    seed: int,
    finetune_steps: int = 0,
) -> list[dict[str, Any]]:
    """``n`` random feasible sub-networks: inherited and stand-alone accuracy, FLOPs, params; with
    ``finetune_steps``, also the accuracy after that many steps from the inherited weights and
    after the same steps from a fresh initialisation (what inheriting is worth at that cost)."""
    exp = spec.experiment
    rows: list[dict[str, Any]] = []
    for arch, c in feasible_samples(spec, data, n, seed, costs):
        key = arch_key(arch)
        inherited = cache.get("inherited:" + key)
        if inherited is None or "loss" not in inherited:
            started = time.perf_counter()
            loss, accuracy = inherited_accuracy(supernet, arch, data, exp.train, exp.one_shot.bn_batches)
            inherited = cache.put(
                "inherited:" + key,
                {"accuracy": accuracy, "loss": loss, "seconds": time.perf_counter() - started},
            )
        alone = standalone(arch, data, exp.train, cache)
        tuned: dict[str, Any] = {}
        if finetune_steps:
            lr, scope = exp.one_shot.finetune_rate(exp.train), exp.one_shot.finetune_scope
            for kind in ("finetuned", "scratch"):
                tag = f"{kind}{finetune_steps}@{lr:g}" + ("" if scope == "all" else f"/{scope}") + f":{key}"
                if cache.get(tag) is None:
                    started = time.perf_counter()
                    model = supernet.extract(arch) if kind == "finetuned" else build_model(arch)
                    _, accuracy = finetune(model, data, exp.train, finetune_steps, lr, scope)
                    cache.put(tag, {"accuracy": accuracy, "seconds": time.perf_counter() - started})
                tuned[kind] = cache.get(tag)["accuracy"]
                tuned[f"{kind}_seconds"] = cache.get(tag)["seconds"]
        rows.append(
            {
                "arch": describe(arch),
                "key": key,
                "flops": c.flops,
                "params": c.params,
                "inherited": inherited["accuracy"],
                "inherited_loss": inherited["loss"],
                "inherited_seconds": inherited["seconds"],
                "standalone": alone["accuracy"],
                "standalone_seconds": alone["seconds"],
                **tuned,
            }
        )
        log(
            f"subnet {len(rows)}/{n}: inherited {inherited['accuracy']:.4f}, stand-alone "
            f"{alone['accuracy']:.4f}, {c.flops / 1e6:.2f} MMACs ({describe(arch)})"
        )
    return rows


def rank_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    alone = [r["standalone"] for r in rows]

    def against(values: list[float]) -> dict[str, float]:
        tau = stats.kendalltau(values, alone)
        rho = stats.spearmanr(values, alone)
        return {
            "kendall_tau": float(tau.statistic),
            "tau_p": float(tau.pvalue),
            "spearman": float(rho.statistic),
        }

    top = max(1, len(rows) // 4)
    best_alone = {r["key"] for r in sorted(rows, key=lambda r: -r["standalone"])[:top]}
    best_inherited = {r["key"] for r in sorted(rows, key=lambda r: -r["inherited"])[:top]}
    tuned = {k: against([r[k] for r in rows]) for k in ("finetuned", "scratch") if k in rows[0]}
    return {
        **tuned,
        "inherited": against([r["inherited"] for r in rows]),
        "inherited_loss": against([-r["inherited_loss"] for r in rows]),  # the lower, the better
        "flops": against([r["flops"] for r in rows]),
        "params": against([r["params"] for r in rows]),
        "top_quarter_overlap": f"{len(best_alone & best_inherited)} of {top}",
    }


def hypervolume(points: list[tuple[float, float]], flops_ref: float, error_ref: float) -> float:
    """Of (FLOPs / flops_ref, error) over the points (accuracy, FLOPs), reference (1, error_ref)."""
    from optuna._hypervolume import compute_hypervolume

    kept = [(f / flops_ref, 1.0 - a) for a, f in points if f < flops_ref and 1.0 - a < error_ref]
    if not kept:
        return 0.0
    return float(compute_hypervolume(np.array(kept), np.array([1.0, error_ref])))


def pareto(points: list[dict[str, Any]], acc: str) -> list[dict[str, Any]]:
    """Non-dominated points (max ``acc``, min flops), by FLOPs."""
    front: list[dict[str, Any]] = []
    for p in sorted(points, key=lambda p: (p["flops"], -p[acc])):
        if not front or p[acc] > front[-1][acc]:
            front.append(p)
    return front


def run_study(
    spec: SearchSpec,
    data: ImageData,
    work: Path,
    name: str,
    trials: int,
    deadline: float | None,
    **extra: Any,
) -> tuple[optuna.Study, float]:
    storage = f"sqlite:///{work / (name + '.db')}"
    study = open_study(spec, name, storage)
    for key, value in extra.items():
        study.set_user_attr(key, value)
    run = SearchRun(spec, study, cache=CostCache(work / "costs.sqlite"))
    run.data = data
    started = time.perf_counter()
    run.run(trials, deadline=deadline)
    return study, time.perf_counter() - started


def one_shot_study(
    spec: SearchSpec,
    data: ImageData,
    work: Path,
    trials: int,
    retrain_cap: int,
    cache: Cache,
    costs: CostCache,
) -> dict[str, Any]:
    checkpoint = str((work / "supernet" / "supernet.pt").resolve())
    study, seconds = run_study(spec, data, work, "one_shot", trials, None, **{SUPERNET_ATTR: checkpoint})
    if cache.get("one_shot_study_seconds") is None or seconds > 5:
        cache.put("one_shot_study_seconds", seconds)
    evaluated = [t for t in evaluated_trials(study.trials)]
    points = [
        {
            "trial": t.number,
            "key": t.user_attrs["arch_key"],
            "arch": describe(ArchConfig.model_validate(t.user_attrs["arch"])),
            "flops": t.user_attrs["costs"]["flops"],
            "inherited": t.values[0],
            "warm_start": t.user_attrs.get("warm_start"),
            "config": t.user_attrs["arch"],
        }
        for t in evaluated
    ]
    front = pareto(points, "inherited")
    if len(front) > retrain_cap:  # the most accurate ones
        front = sorted(sorted(front, key=lambda p: -p["inherited"])[:retrain_cap], key=lambda p: p["flops"])
    for p in front:
        alone = standalone(ArchConfig.model_validate(p.pop("config")), data, spec.experiment.train, cache)
        p["retrained"], p["retrain_seconds"] = alone["accuracy"], alone["seconds"]
        log(
            f"one-shot front: trial {p['trial']} inherited {p['inherited']:.4f} "
            f"-> retrained {p['retrained']:.4f}"
        )
    return {
        "trials": len(study.trials),
        "evaluated": len(points),
        "outcomes": dict(
            sorted(
                {
                    o: sum(t.user_attrs.get("outcome") == o for t in study.trials)
                    for o in {t.user_attrs.get("outcome") for t in study.trials}
                }.items()
            )
        ),
        "seconds": cache.get("one_shot_study_seconds"),
        "seconds_per_trial": cache.get("one_shot_study_seconds") / max(1, len(study.trials)),
        "front": front,
    }


def per_trial_study(spec: SearchSpec, data: ImageData, work: Path, seconds: float) -> dict[str, Any]:
    """The space's own per-trial study (sampler, warm start, early stopping) for ``seconds``."""
    exp = spec.experiment.model_copy(update={"strategy": "per_trial", "one_shot": None})
    per_trial = SearchSpec(spec.space, exp, spec.text, spec.path)
    # the wall time counts from the study's first trial: a rerun adds nothing once it has passed
    storage = f"sqlite:///{work / 'per_trial.db'}"
    # (the warm-start trials wait in the study from its creation on, without a start time)
    earlier = open_study(per_trial, "per_trial", storage).trials
    starts = [t.datetime_start for t in earlier if t.datetime_start is not None]
    begun = min(starts).timestamp() if starts else time.time()
    study, _ = run_study(per_trial, data, work, "per_trial", 10_000, begun + seconds)
    ends = [t.datetime_complete.timestamp() for t in study.trials if t.datetime_complete is not None]
    took = max(ends, default=begun) - begun
    points = [
        {"trial": t.number, "flops": t.user_attrs["costs"]["flops"], "accuracy": t.values[0]}
        for t in evaluated_trials(study.trials)
    ]
    warm = {  # the warm-start designs, trained by the study with the proxy recipe
        t.user_attrs["warm_start"]: {
            "accuracy": t.values[0],
            "seconds": t.user_attrs.get("wall_seconds", 0.0),
        }
        for t in evaluated_trials(study.trials)
        if t.user_attrs.get("warm_start")
    }
    return {"trials": len(study.trials), "seconds": took, "front": pareto(points, "accuracy"), "warm": warm}


def baselines(
    spec: SearchSpec,
    data: ImageData,
    cache: Cache,
    costs: CostCache,
    fronts: dict[str, list[dict[str, Any]]],
    trained: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """The space's warm-start designs (the published families scaled to the task) trained
    stand-alone with the proxy recipe, each beside the best member of each front at no more FLOPs
    (the search-quality study's baseline table, on this run's recipe)."""
    rows = []
    for point in warm_start_points(spec):
        arch = adapt_arch_to_data(point.arch, data, keep_resolution=True)
        # trained by the per-trial study already (same recipe and seed), else here
        alone = trained.get(point.label) or standalone(arch, data, spec.experiment.train, cache)
        flops = flops_of(arch, spec, costs)
        row: dict[str, Any] = {"baseline": point.label, "flops": flops, "accuracy": alone["accuracy"]}
        for name, front in fronts.items():
            cheaper = [p for p in front if p["flops"] <= flops]
            best = max(cheaper, key=lambda p: p["accuracy"], default=None)
            row[name] = None if best is None else {"flops": best["flops"], "accuracy": best["accuracy"]}
        rows.append(row)
        log(f"baseline {point.label}: {alone['accuracy']:.4f} at {flops / 1e6:.2f} MMACs")
    return rows


# ------------------------------------------------------------------------------------------- report
def write_results(result: dict[str, Any], out: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"one_shot_{out}.json").write_text(json.dumps(result, indent=1))
    r = result
    s = r["settings"]
    rs = r["ranking_stats"]
    sn = r["supernet"]
    lines = [
        f"# One-shot search on the CPU scale: {s['space']}",
        "",
        f"Data: {s['data']}. Proxy recipe (stand-alone trainings, retraining): {s['proxy']}. "
        f"Supernet: {s['supernet']}. Machine: {s['machine']}; {s['date']}.",
        "",
        "## Supernet",
        "",
        f"{sn['slots']} shared tensors, {sn['parameters'] / 1e6:.1f}M parameters; trained in "
        f"{sn['train_seconds'] / 60:.1f} min (wall). Validation accuracy of its largest path per epoch: "
        + ", ".join(f"{a:.3f}" for a in sn["epochs"])
        + ".",
        "",
        f"## Ranking: inherited-weight accuracy against stand-alone proxy accuracy ({len(r['ranking'])} "
        "random sub-networks within the constraints)",
        "",
        "| ranking by | Kendall tau | p | Spearman rho |",
        "|---|---:|---:|---:|",
    ]
    steps = s.get("finetune_steps", 0)
    scope = "the head alone" if s.get("finetune_scope", "all") == "head" else "every weight"
    for what, label in (
        ("inherited", "inherited-weight accuracy (no training)"),
        ("inherited_loss", "inherited-weight validation loss (no training; lower ranks higher)"),
        ("finetuned", f"inherited weights + {steps} fine-tuning steps ({scope})"),
        ("scratch", f"{steps} training steps ({scope}) from a fresh initialisation (no supernet)"),
        ("flops", "FLOPs alone"),
        ("params", "parameters alone"),
    ):
        if what not in rs:
            continue
        st = rs[what]
        lines.append(f"| {label} | {st['kendall_tau']:.3f} | {st['tau_p']:.3g} | {st['spearman']:.3f} |")
    mean_inh = np.mean([x["inherited_seconds"] for x in r["ranking"]])
    mean_alone = np.mean([x["standalone_seconds"] for x in r["ranking"]])
    lines += [
        "",
        f"Top quarter by stand-alone accuracy found in the top quarter by inherited accuracy: "
        f"{rs['top_quarter_overlap']}. Time per sub-network: {mean_inh:.1f} s inherited (extraction, "
        f"evaluation) against {mean_alone:.1f} s stand-alone training "
        f"({mean_alone / max(mean_inh, 1e-9):.0f}x).",
        "",
        "| # | MMACs | params | inherited | "
        + (f"+{steps} steps | {steps} steps from scratch | " if steps else "")
        + "stand-alone | architecture |",
        "|---:|---:|---:|---:|" + ("---:|---:|" if steps else "") + "---:|---|",
    ]
    for i, x in enumerate(sorted(r["ranking"], key=lambda x: -x["standalone"])):
        tuned = f"{100 * x['finetuned']:.1f} | {100 * x['scratch']:.1f} | " if steps else ""
        lines.append(
            f"| {i + 1} | {x['flops'] / 1e6:.2f} | {x['params']:,} | {100 * x['inherited']:.1f} | "
            f"{tuned}{100 * x['standalone']:.1f} | {x['arch']} |"
        )
    os_ = r.get("one_shot_study")
    if os_ is not None:
        eq = r["equal_wall_time"]
        lines += [
            "",
            "## One-shot study and equal wall time",
            "",
            f"`strategy: one_shot` study: {os_['trials']} trials ({os_['outcomes']}), "
            f"{os_['seconds'] / 60:.1f} min ({os_['seconds_per_trial']:.1f} s per trial: costs and inherited "
            "evaluation). Its Pareto front by inherited accuracy, retrained stand-alone with the "
            "proxy recipe:",
            "",
            "| trial | MMACs | inherited | retrained | architecture |",
            "|---:|---:|---:|---:|---|",
        ]
        for p in os_["front"]:
            ws = f" (warm start {p['warm_start']})" if p.get("warm_start") else ""
            lines.append(
                f"| {p['trial']} | {p['flops'] / 1e6:.2f} | {100 * p['inherited']:.1f} | "
                f"{100 * p['retrained']:.1f} | {p['arch']}{ws} |"
            )
        lines += [
            "",
            f"Hypervolume of (FLOPs / {eq['flops_ref'] / 1e6:g} M, error), "
            f"reference error {eq['error_ref']:.2f}:",
            "",
            "| search | wall time (min) | architectures trained | hypervolume |",
            "|---|---:|---:|---:|",
        ]
        for row in eq["rows"]:
            lines.append(
                f"| {row['search']} | {row['minutes']:.1f} | {row['trained']} | {row['hypervolume']:.4f} |"
            )
        lines += ["", eq["verdict"]]
    if r.get("baselines"):
        names = [k for k in r["baselines"][0] if k not in ("baseline", "flops", "accuracy")]
        lines += [
            "",
            "## The published families against the fronts",
            "",
            "Each warm-start design (a published family scaled to the task) trained stand-alone with "
            "the proxy recipe, beside the most accurate member of each front at no more FLOPs "
            "(accuracy %, MMACs in brackets; - where the front has none that cheap):",
            "",
            "| baseline | MMACs | accuracy | " + " | ".join(names) + " |",
            "|---|---:|---:|" + "---:|" * len(names),
        ]
        for b in r["baselines"]:
            cells = [
                "-" if b[n] is None else f"{100 * b[n]['accuracy']:.1f} ({b[n]['flops'] / 1e6:.2f})"
                for n in names
            ]
            lines.append(
                f"| {b['baseline']} | {b['flops'] / 1e6:.2f} | {100 * b['accuracy']:.1f} | "
                + " | ".join(cells)
                + " |"
            )
    lines += ["", "## What this says", "", *r["notes"]]
    (RESULTS / f"one_shot_{out}.md").write_text("\n".join(lines) + "\n")


def ranking_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space", default="search_spaces/animal_mnist.yaml")
    parser.add_argument("--fraction", type=float, default=0.5, help="of the training images")
    parser.add_argument("--proxy-epochs", type=int, default=2)
    parser.add_argument("--supernet-epochs", type=int, default=12)
    parser.add_argument(
        "--supernet-lr", type=float, default=None, help="default: the library's (a quarter of the proxy's)"
    )
    parser.add_argument("--rule", choices=["uniform", "sandwich"], default="uniform")
    parser.add_argument("--sandwich-random", type=int, default=2)
    parser.add_argument(
        "--distill", action="store_true", help="sandwich rule: inplace distillation (one_shot.distill)"
    )
    parser.add_argument(
        "--ffn-per-kind",
        action="store_true",
        help="FFN options do not share weights (one_shot.shared_ffn: false)",
    )
    parser.add_argument(
        "--shared-parts",
        action="store_true",
        help="stem and downsampling options differing only in norm, padding or bias share their convolutions "
        "(one_shot.shared_parts: true)",
    )
    parser.add_argument(
        "--standalone-from",
        type=Path,
        help="an earlier results JSON of the same space, data and proxy recipe: its stand-alone accuracies "
        "are taken instead of training those sub-networks again",
    )
    parser.add_argument(
        "--unconstrained-sampling",
        action="store_true",
        help="train the supernet on random paths of the whole space, not only within the constraints",
    )
    parser.add_argument("--subnets", type=int, default=20)
    parser.add_argument(
        "--finetune-steps", type=int, default=0, help="also rank after that many steps from inherited weights"
    )
    parser.add_argument(
        "--finetune-lr", type=float, default=None, help="their constant rate (default: the library's)"
    )
    parser.add_argument(
        "--finetune-scope", choices=["head", "all"], default="all", help="what they train (one_shot)"
    )
    parser.add_argument("--trials", type=int, default=100, help="of the one-shot study")
    parser.add_argument("--retrain", type=int, default=6, help="most of the one-shot front retrained")
    parser.add_argument("--per-trial-study", action="store_true")
    parser.add_argument("--baselines", action="store_true", help="train the warm-start designs too")
    parser.add_argument("--seed", type=int, default=123, help="of the random sub-networks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("runs/one_shot_ranking"))
    parser.add_argument("--out", default="cpu")
    return parser


def ranking_settings(**values: Any) -> argparse.Namespace:
    """This script's settings for another benchmark: its defaults, with ``values`` (by attribute
    name, ``proxy_epochs=3``), so that a run is described one way only."""
    settings = ranking_parser().parse_args([])
    unknown = set(values) - set(vars(settings))
    if unknown:
        raise ValueError(f"not settings of one_shot_ranking.py: {sorted(unknown)}")
    vars(settings).update(values)
    return settings


def main() -> None:
    args = ranking_parser().parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    cache = Cache(args.work / "measurements.json")
    costs = CostCache(args.work / "costs.sqlite")
    spec = prepared_spec(args)
    exp = spec.experiment
    data = space_data(spec)
    started = time.perf_counter()
    if args.standalone_from is not None:
        taken = reuse_standalone(args.standalone_from, spec, cache)
        log(f"{taken} stand-alone results from {args.standalone_from}")

    log(f"supernet: {args.supernet_epochs} epochs, rule {args.rule}, {data.num_train} training images")
    supernet, supernet_seconds = train_the_supernet(spec, data, args.work, cache)
    log(f"supernet trained in {supernet_seconds / 60:.1f} min")
    rows = ranking(spec, data, supernet, args.subnets, costs, cache, args.seed, args.finetune_steps)
    rs = rank_stats(rows)
    log(
        f"Kendall tau (inherited vs stand-alone) {rs['inherited']['kendall_tau']:.3f}; "
        f"FLOPs {rs['flops']['kendall_tau']:.3f}"
    )

    classes = data.num_classes
    flops_ref = exp.constraints.get("flops", max(r["flops"] for r in rows) * 1.1)
    error_ref = 1.0 - 1.0 / classes
    result: dict[str, Any] = {
        "settings": {
            "space": args.space,
            "data": f"{data.name}, {data.num_train} training images (fraction {args.fraction} of the "
            f"training split), {data.num_val} validation images, {data.resolution}x{data.resolution}",
            "proxy": f"{args.proxy_epochs} epochs, batch {exp.train.batch_size}, AdamW lr {exp.train.lr}",
            "supernet": f"{args.supernet_epochs} epochs, rule {args.rule}"
            + (
                f" (+{args.sandwich_random} random, "
                + ("inplace distillation)" if args.distill else "labels)")
                if args.rule == "sandwich"
                else ""
            )
            + f", lr {exp.one_shot.train.lr:g}"
            + (", paths of the whole space" if args.unconstrained_sampling else ", paths in the constraints")
            + (", FFN weights per FFN option" if args.ffn_per_kind else "")
            + (", stems and downsamplings sharing convolutions" if args.shared_parts else ""),
            "machine": f"{cpu_name()}, {torch.get_num_threads()} thread(s), "
            f"torch {torch.__version__}, optuna {optuna.__version__}",
            "date": time.strftime("%Y-%m-%d"),
            "finetune_steps": args.finetune_steps,
            "finetune_lr": exp.one_shot.finetune_rate(exp.train) if args.finetune_steps else None,
            "finetune_scope": args.finetune_scope,
            "standalone_from": str(args.standalone_from) if args.standalone_from else None,
            "recipe": search_recipe(spec),
        },
        "supernet": cache.get("supernet"),
        "ranking": rows,
        "ranking_stats": rs,
    }
    notes: list[str] = []
    if args.trials > 0:
        os_ = one_shot_study(spec, data, args.work, args.trials, args.retrain, cache, costs)
        result["one_shot_study"] = os_
        one_shot_seconds = supernet_seconds + os_["seconds"] + sum(p["retrain_seconds"] for p in os_["front"])
        hv_one_shot = hypervolume([(p["retrained"], p["flops"]) for p in os_["front"]], flops_ref, error_ref)
        # the stand-alone trainings of the ranking, in the order drawn: a per-trial random search
        spent, seen = 0.0, []
        for row in rows:
            if spent + row["standalone_seconds"] > one_shot_seconds:
                break
            spent += row["standalone_seconds"]
            seen.append((row["standalone"], row["flops"]))
        hv_random = hypervolume(seen, flops_ref, error_ref)
        eq_rows = [
            {
                "search": "one-shot (supernet + study + retraining its front)",
                "minutes": one_shot_seconds / 60,
                "trained": len(os_["front"]),
                "hypervolume": hv_one_shot,
            },
            {
                "search": "per-trial random search (stand-alone trainings above, cut at equal wall time)",
                "minutes": spent / 60,
                "trained": len(seen),
                "hypervolume": hv_random,
            },
        ]
        if args.per_trial_study:
            pt = per_trial_study(spec, data, args.work, one_shot_seconds)
            eq_rows.append(
                {
                    "search": f"per-trial study ({exp.sampler.name}, warm start, early stopping)",
                    "minutes": pt["seconds"] / 60,
                    "trained": pt["trials"],
                    "hypervolume": hypervolume(
                        [(p["accuracy"], p["flops"]) for p in pt["front"]], flops_ref, error_ref
                    ),
                }
            )
        fronts = {
            "one-shot": [{"flops": p["flops"], "accuracy": p["retrained"]} for p in os_["front"]],
            "per-trial random": [{"flops": f, "accuracy": a} for a, f in seen],
        }
        if args.per_trial_study:
            fronts["per-trial study"] = pt["front"]
        if args.baselines:
            warm = pt["warm"] if args.per_trial_study else {}
            result["baselines"] = baselines(spec, data, cache, costs, fronts, warm)
        others = ", ".join(f"{row['hypervolume']:.4f} for {row['search']}" for row in eq_rows[1:])
        result["equal_wall_time"] = {
            "flops_ref": flops_ref,
            "error_ref": error_ref,
            "rows": eq_rows,
            "verdict": (
                f"Hypervolume of the one-shot search's retrained front: {hv_one_shot:.4f}, against {others}. "
                "One sampler seed and one training seed: differences of a few points of accuracy are within "
                "seed noise (about 1-2 points on 2,000 validation images)."
            ),
        }
    tau = rs["inherited"]["kendall_tau"]
    notes.append(
        f"- Kendall tau between inherited-weight and stand-alone accuracy: {tau:.3f} over {len(rows)} "
        f"sub-networks (target 0.5: {'met' if tau >= 0.5 else 'not met'}); FLOPs alone reach "
        f"{rs['flops']['kendall_tau']:.3f}, parameters {rs['params']['kendall_tau']:.3f}."
    )
    if "finetuned" in rs:
        tuned = rs["finetuned"]["kendall_tau"]
        notes.append(
            f"- After {args.finetune_steps} steps ({args.finetune_scope}) from the inherited weights: "
            f"{tuned:.3f} (target 0.5: {'met' if tuned >= 0.5 else 'not met'}); the same steps from a fresh "
            f"initialisation: {rs['scratch']['kendall_tau']:.3f}."
        )
    notes.append(
        f"- Total wall time of this run: {(time.perf_counter() - started) / 60:.1f} min (measurements "
        "cached in the work folder are not counted again). The machine was shared with other jobs: "
        "wall times compare within this run only."
    )
    result["notes"] = notes
    write_results(result, args.out)
    log(f"wrote benchmarks/results/one_shot_{args.out}.md")


if __name__ == "__main__":
    main()
