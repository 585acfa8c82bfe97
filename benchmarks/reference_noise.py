"""How far can any ranking agree with the one-shot benchmark's stand-alone reference?

``one_shot_ranking.py`` compares a supernet's inherited accuracies with the accuracies the same
sub-networks reach trained stand-alone, once each, with one training seed. That reference is itself
a noisy measurement: trained again with another seed, a network lands a point or two elsewhere. This
script retrains the sub-networks of an earlier ``one_shot_ranking.py`` result with other training
seeds (the same architectures, drawn again with the same sub-network seed and checked against the
result's architecture keys; the same data and proxy recipe, checked against the result's) and
reports

- the **reference's own agreement**: Kendall tau between the accuracies of two seeds (the ceiling a
  perfect predictor of one seed's accuracy can expect to reach against another's);
- the earlier result's **inherited accuracies (and FLOPs) against the mean over seeds**, a reference
  with less noise.

    python benchmarks/reference_noise.py benchmarks/results/one_shot_cpu_constrained_60epochs.json \
        --fraction 1.0 --proxy-epochs 3 --seeds 1 --out reference_noise_constrained   # ~30 min, 1 core

Results: ``benchmarks/results/<out>.{json,md}``; trainings are cached in ``--work`` (resumable).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from one_shot_ranking import (
    RESULTS,
    Cache,
    feasible_samples,
    log,
    prepared_spec,
    ranking_settings,
    space_data,
)
from scipy import stats

from hvtnas.costs import CostCache
from hvtnas.costs.latency import cpu_name
from hvtnas.search.study import arch_key, search_recipe
from hvtnas.train import train_proxy


def tau(a: list[float], b: list[float]) -> float:
    return float(stats.kendalltau(a, b).statistic)


def same_architectures(
    spec: Any, data: Any, earlier: dict[str, Any], seed: int, costs: CostCache
) -> list[Any]:
    """The earlier result's sub-networks, drawn again as ``one_shot_ranking.ranking`` drew them."""
    wanted = [row["key"] for row in earlier["ranking"]]
    archs = [arch for arch, _ in feasible_samples(spec, data, len(wanted), seed, costs)]
    if [arch_key(arch) for arch in archs] != wanted:
        raise SystemExit("the sub-networks drawn differ from the result's: another space or seed?")
    return archs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("result", type=Path, help="a one_shot_ranking.py results JSON")
    parser.add_argument("--fraction", type=float, default=0.5, help="as the result's run")
    parser.add_argument("--proxy-epochs", type=int, default=2, help="as the result's run")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[1], help="training seeds besides the result's"
    )
    parser.add_argument("--subnet-seed", type=int, default=123, help="the result's --seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("runs/reference_noise"))
    parser.add_argument("--out", default="reference_noise")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    earlier = json.loads(args.result.read_text())
    space = earlier["settings"]["space"]
    spec = prepared_spec(
        ranking_settings(
            space=space, fraction=args.fraction, proxy_epochs=args.proxy_epochs, seed=args.subnet_seed
        )
    )
    recipe = search_recipe(spec)
    for part in ("data", "train"):
        if json.loads(json.dumps(recipe[part], default=str)) != earlier["settings"]["recipe"][part]:
            raise SystemExit(
                f"{args.result}: its {part} recipe differs from this run's (--fraction, --proxy-epochs?)"
            )
    exp = spec.experiment
    data = space_data(spec)
    args.work.mkdir(parents=True, exist_ok=True)
    cache = Cache(args.work / "measurements.json")
    archs = same_architectures(spec, data, earlier, args.subnet_seed, CostCache(args.work / "costs.sqlite"))

    first_seed = exp.train.seed
    accuracies = {first_seed: [row["standalone"] for row in earlier["ranking"]]}
    for seed in args.seeds:
        train = exp.train.model_copy(update={"seed": seed})
        accuracies[seed] = []
        for i, arch in enumerate(archs):
            tag = f"seed{seed}:{arch_key(arch)}"
            if cache.get(tag) is None:
                started = time.perf_counter()
                result = train_proxy(arch, data, train)
                cache.put(tag, {"accuracy": result.val_accuracy, "seconds": time.perf_counter() - started})
            accuracies[seed].append(cache.get(tag)["accuracy"])
            log(f"seed {seed}, sub-network {i + 1}/{len(archs)}: {accuracies[seed][-1]:.4f}")

    seeds = list(accuracies)
    mean = np.mean([accuracies[s] for s in seeds], axis=0).tolist()
    rows = earlier["ranking"]
    between = {f"{a} vs {b}": tau(accuracies[a], accuracies[b]) for a, b in itertools.combinations(seeds, 2)}
    gaps = np.abs(np.subtract(accuracies[seeds[0]], accuracies[seeds[1]]))
    result = {
        "settings": {
            "result": str(args.result),
            "space": space,
            "seeds": seeds,
            "machine": f"{cpu_name()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
            "date": time.strftime("%Y-%m-%d"),
            "recipe": recipe,
        },
        "accuracies": {str(s): accuracies[s] for s in seeds},
        "tau_between_seeds": between,
        "mean_abs_seed_difference": float(gaps.mean()),
        "inherited_vs_seed": {str(s): tau([r["inherited"] for r in rows], accuracies[s]) for s in seeds},
        "inherited_vs_mean": tau([r["inherited"] for r in rows], mean),
        "flops_vs_mean": tau([r["flops"] for r in rows], mean),
    }
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2, default=str))
    lines = [
        f"# Stand-alone reference noise: {args.result.name}",
        "",
        f"{len(rows)} sub-networks of `{space}`, trained stand-alone with training seeds {seeds} "
        f"({result['settings']['machine']}, {result['settings']['date']}).",
        "",
        "| comparison | Kendall tau |",
        "|---|---:|",
        *(f"| stand-alone seed {pair} | {value:.3f} |" for pair, value in between.items()),
        *(f"| inherited vs stand-alone seed {s} | {v:.3f} |" for s, v in result["inherited_vs_seed"].items()),
        f"| inherited vs the mean over seeds | {result['inherited_vs_mean']:.3f} |",
        f"| FLOPs vs the mean over seeds | {result['flops_vs_mean']:.3f} |",
        "",
        f"Mean |difference| between seeds {seeds[0]} and {seeds[1]}: "
        f"{100 * result['mean_abs_seed_difference']:.2f} points of accuracy.",
        "",
        "| sub-network | inherited | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---:|" + "---:|" * len(seeds),
        *(
            f"| {row['arch']} | {row['inherited']:.4f} | "
            + " | ".join(f"{accuracies[s][i]:.4f}" for s in seeds)
            + " |"
            for i, row in enumerate(rows)
        ),
    ]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    log(f"wrote {RESULTS / args.out}.md; tau between seeds {between}")


if __name__ == "__main__":
    main()
