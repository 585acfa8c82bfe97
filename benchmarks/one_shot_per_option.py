"""Which options of a space does its supernet fit worst? Inherited accuracy per categorical option.

Loads the supernet a ``one_shot_ranking.py`` run trained (its ``--work`` folder; the same space,
``--fraction`` and recipe), evaluates ``--subnets`` random sub-networks within the constraints with
the weights they inherit (no training, no stand-alone reference: minutes), and writes the mean
inherited accuracy per option of each top-level choice (stem, positional encoding, downsampling,
head). An option far below the others is one the shared weights do not serve; options all alike
point at the combination instead.

    python benchmarks/one_shot_per_option.py --space benchmarks/spaces/animal_mnist_parts.yaml \
        --work runs/osr-parts --fraction 1.0 --proxy-epochs 3 --out one_shot_parts_space_per_option
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from one_shot_ranking import RESULTS, feasible_samples, log, prepared_spec, ranking_settings, space_data

from hvtnas.costs import CostCache
from hvtnas.costs.latency import cpu_name
from hvtnas.search.one_shot import inherited_accuracy
from hvtnas.search.one_shot.strategy import prepare_supernet
from hvtnas.summary import describe

CHOICES = ("stem", "pos_embed", "downsample", "head")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space", default="search_spaces/animal_mnist.yaml")
    parser.add_argument(
        "--work", type=Path, required=True, help="the one_shot_ranking.py run's --work folder"
    )
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--proxy-epochs", type=int, default=2)
    parser.add_argument(
        "--supernet-epochs", type=int, default=60, help="as the run's (a finished supernet loads)"
    )
    parser.add_argument("--shared-parts", action="store_true", help="as the run's")
    parser.add_argument("--subnets", type=int, default=80)
    parser.add_argument("--seed", type=int, default=777, help="of the sub-networks (not the ranking's 123)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="one_shot_per_option")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = ranking_settings(
        space=args.space,
        fraction=args.fraction,
        proxy_epochs=args.proxy_epochs,
        supernet_epochs=args.supernet_epochs,
        shared_parts=args.shared_parts,
    )
    spec = prepared_spec(run)
    exp = spec.experiment
    data = space_data(spec)
    if not (args.work / "supernet" / "supernet.pt").exists():
        raise SystemExit(
            f"{args.work}: no trained supernet; run one_shot_ranking.py with --work {args.work} first"
        )
    supernet, _ = prepare_supernet(spec, data, args.work / "supernet")
    supernet.eval()
    rows: list[dict[str, Any]] = []
    for arch, _ in feasible_samples(
        spec, data, args.subnets, args.seed, CostCache(args.work / "costs.sqlite")
    ):
        _, accuracy = inherited_accuracy(supernet, arch, data, exp.train, exp.one_shot.bn_batches)
        dumped = arch.model_dump(mode="json", exclude_defaults=True)
        rows.append({"accuracy": accuracy, **{k: json.dumps(dumped.get(k), sort_keys=True) for k in CHOICES}})
        log(f"{len(rows)}/{args.subnets}: {accuracy:.4f} ({describe(arch)})")

    lines = [
        f"# Inherited accuracy per option: `{args.space}`",
        "",
        f"{len(rows)} random sub-networks within the constraints (seed {args.seed}), the supernet of "
        f"`{args.work}`; {cpu_name()}, {time.strftime('%Y-%m-%d')}. Mean inherited validation accuracy "
        f"of the sub-networks with each option (all: {100 * np.mean([r['accuracy'] for r in rows]):.1f}%).",
        "Options are shown by their fields that differ from the defaults (a stem without `kind` is the "
        "4x4 patch stem, a downsampling without it the conv one, `{}` a LayerNorm).",
    ]
    result: dict[str, Any] = {"space": args.space, "work": str(args.work), "rows": rows, "per_option": {}}
    for choice in CHOICES:
        groups: dict[str, list[float]] = collections.defaultdict(list)
        for row in rows:
            groups[row[choice]].append(row["accuracy"])
        if len(groups) < 2:
            continue
        ordered = sorted(groups.items(), key=lambda item: float(np.mean(item[1])))
        result["per_option"][choice] = {option: float(np.mean(a)) for option, a in ordered}
        lines += ["", f"| {choice} option | sub-networks | mean inherited |", "|---|---:|---:|"]
        lines += [f"| `{option}` | {len(a)} | {100 * np.mean(a):.1f}% |" for option, a in ordered]
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    log(f"wrote {RESULTS / args.out}.md")


if __name__ == "__main__":
    main()
