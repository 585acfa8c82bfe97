"""Does a few-epoch proxy rank architectures as longer training does, and do zero-cost proxies?

For a random sample of architectures from a shipped search space (default
``search_spaces/animal_mnist.yaml``, on its own data and training recipe) this script

1. scores the untrained network with every zero-cost proxy (one batch of training images),
2. trains low-fidelity proxies (few epochs, optionally a fraction of the training data; each is a
   separate run with its own warm-up + cosine schedule, as a search trial would be),
3. trains the same architecture longer (more epochs, all training data),

and reports Kendall tau between each proxy's accuracy and the long training's (the proxy-ranking
study; also for the long run's own early epochs, which is what early stopping sees) and Spearman
rho / Kendall tau of every zero-cost proxy against both accuracies (the zero-cost study).

    nice -n 10 python benchmarks/proxy_studies.py            # ~20 min on 2 CPU cores (animal_mnist, 28x28)
    nice -n 10 python benchmarks/proxy_studies.py --archs 4 --long-epochs 2 --out smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from hvtnas.config import ArchConfig
from hvtnas.models import build_model
from hvtnas.search.study import arch_key, load_search_spec
from hvtnas.space import iter_samples
from hvtnas.summary import describe
from hvtnas.train.data import load_dataset
from hvtnas.train.proxies import ZERO_COST_PROXIES, score_model
from hvtnas.train.trainer import adapt_arch_to_data, train_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_SPACE = ROOT / "search_spaces" / "animal_mnist.yaml"


def sample_space(space_file: Path, n: int, seed: int) -> list[ArchConfig]:
    """``n`` distinct architectures drawn uniformly from the space (Optuna's random sampler)."""
    space = load_search_spec(space_file).space
    archs: dict[str, ArchConfig] = {}
    for cfg in iter_samples(space, 50 * n, seed=seed):
        archs.setdefault(arch_key(cfg), cfg.model_copy(update={"name": f"a{len(archs):02d}"}))
        if len(archs) == n:
            break
    return list(archs.values())


def correlations(a: list[float], b: list[float]) -> dict[str, float | None]:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x == x and y == y]  # drop NaNs
    if len(pairs) < 3:
        return {"kendall_tau": None, "spearman_rho": None, "n": len(pairs)}
    xs, ys = zip(*pairs, strict=True)
    return {
        "kendall_tau": float(stats.kendalltau(xs, ys).statistic),
        "spearman_rho": float(stats.spearmanr(xs, ys).statistic),
        "n": len(pairs),
    }


def parse_proxies(text: str) -> list[tuple[int, float]]:
    """``"2x0.5,3x1"`` -> [(2 epochs, fraction 0.5), (3 epochs, fraction 1.0)]."""
    out = []
    for part in text.split(","):
        epochs, fraction = part.split("x")
        out.append((int(epochs), float(fraction)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE, help="a search-space file")
    parser.add_argument("--archs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, help="proxy resolution (default: the space's)")
    parser.add_argument(
        "--proxies", default="2x0.5,3x0.5,3x1", help="proxy fidelities: EPOCHSxDATA_FRACTION, comma-separated"
    )
    parser.add_argument("--long-epochs", type=int, default=10)
    parser.add_argument("--zc-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: best on a shared CPU)")
    parser.add_argument("--out", default="proxy_studies")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fidelities = parse_proxies(args.proxies)

    spec = load_search_spec(args.space)  # data and training recipe: the space's experiment section
    inp = spec.space.tree["input"]
    base = spec.experiment.data.for_arch(inp["channels"], args.resolution or inp["resolution"])
    base = base.model_copy(update={"fraction": 1.0})
    dataset = base.path.stem if base.path else base.name
    long_data = load_dataset(base)
    proxy_data = {f: load_dataset(base.model_copy(update={"fraction": f})) for _, f in fidelities}
    recipe = spec.experiment.train.model_copy(update={"seed": args.seed})
    proxy_cfgs = {(e, f): recipe.model_copy(update={"epochs": e}) for e, f in fidelities}
    long_cfg = recipe.model_copy(update={"epochs": args.long_epochs})
    zc_x, zc_y = long_data.sample_batch(args.zc_batch, seed=args.seed)

    rows = []
    study_start = time.perf_counter()
    for cfg in sample_space(args.space, args.archs, args.seed):
        arch = adapt_arch_to_data(cfg, long_data)
        torch.manual_seed(args.seed)
        model = build_model(arch)
        t = time.perf_counter()
        zc = score_model(model, zc_x, zc_y, seed=args.seed)
        zc_seconds = time.perf_counter() - t
        proxies = {}
        for (e, f), pcfg in proxy_cfgs.items():
            torch.manual_seed(args.seed)
            proxies[f"{e}x{f:g}"] = train_model(build_model(arch), proxy_data[f], pcfg).to_dict()
        torch.manual_seed(args.seed)
        long = train_model(build_model(arch), long_data, long_cfg)
        rows.append(
            {
                "name": cfg.name,
                "arch": describe(cfg),
                "config": cfg.to_dict(),
                "params": long.params,
                "zero_cost": zc,
                "zero_cost_seconds": zc_seconds,
                "proxies": proxies,
                "long": long.to_dict(),
            }
        )
        shown = "  ".join(f"{k} {_acc(v):.3f} ({v['train_seconds']:.1f}s)" for k, v in proxies.items())
        print(
            f"{cfg.name} {describe(cfg)} {long.params:>8,d}  {shown}"
            f"  long {_acc(long.to_dict()):.3f} ({long.train_seconds:.1f}s)  zc {zc_seconds:.1f}s",
            flush=True,
        )
    total = time.perf_counter() - study_start

    long_acc = [_acc(r["long"]) for r in rows]
    first = next(iter(rows[0]["proxies"]))
    ranking = {k: correlations([_acc(r["proxies"][k]) for r in rows], long_acc) for k in rows[0]["proxies"]}
    early_epochs = {
        f"long run, epoch {k}": correlations([_acc_at(r["long"], k) for r in rows], long_acc)
        for k in sorted({1, 2, 3, args.long_epochs // 2})
        if 1 <= k < args.long_epochs
    }
    summary = {
        "dataset": dataset,
        "settings": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "resolution": long_data.resolution,
            "space": str(args.space.resolve().relative_to(ROOT))
            if args.space.resolve().is_relative_to(ROOT)
            else str(args.space),
            "proxy_train": {
                k: v.model_dump() for k, v in zip(rows[0]["proxies"], proxy_cfgs.values(), strict=True)
            },
            "long_train": long_cfg.model_dump(),
            "train_images": long_data.num_train,
            "proxy_train_images": {f"{f:g}": d.num_train for f, d in proxy_data.items()},
            "val_images": long_data.num_val,
        },
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
        "total_seconds": total,
        "ranking": ranking,
        "ranking_early_epochs_of_long_run": early_epochs,
        "zero_cost_reference_proxy": first,
        "zero_cost": {
            name: {
                "vs_proxy": correlations(
                    [r["zero_cost"][name] for r in rows], [_acc(r["proxies"][first]) for r in rows]
                ),
                "vs_long": correlations([r["zero_cost"][name] for r in rows], long_acc),
            }
            for name in ZERO_COST_PROXIES
        },
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(summary, indent=1))
    (RESULTS / f"{args.out}.md").write_text(to_markdown(summary))
    print(to_markdown(summary))


def _acc(result: dict) -> float:
    value = result["val_accuracy"]
    return float("nan") if value is None or result["status"] == "failed" else value


def _acc_at(result: dict, epoch: int) -> float:
    epochs = result["epochs"]
    return epochs[epoch - 1]["val_accuracy"] if len(epochs) >= epoch else float("nan")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}"


def to_markdown(s: dict[str, Any]) -> str:
    st = s["settings"]
    lines = [
        f"# Proxy-ranking and zero-cost-proxy study ({s['dataset']})",
        "",
        f"{len(s['rows'])} architectures drawn at random from `{st['space']}` (seed {st['seed']}), "
        f"{st['resolution']}x{st['resolution']} input, the space's training recipe: batch "
        f"{st['long_train']['batch_size']}, AdamW (lr {st['long_train']['lr']}, wd "
        f"{st['long_train']['weight_decay']}) + warm-up + cosine, label smoothing "
        f"{st['long_train']['label_smoothing']}, random crop (no flip).",
        f"Long training: {st['long_epochs']} epochs on {st['train_images']} training images. Proxies "
        "(EPOCHSxDATA_FRACTION): separate short runs with their own schedules. Every accuracy is on the same "
        f"{st['val_images']} held-out validation images. Zero-cost proxies: one batch of {st['zc_batch']} "
        "training images, untrained weights.",
        f"Machine: {s['machine']}; total {s['total_seconds'] / 60:.1f} min (shared, nice'd CPU).",
        "",
        "## Proxy ranking: Kendall tau with the long training's final accuracy",
        "",
        "| proxy | Kendall tau | Spearman rho | n |",
        "|---|---:|---:|---:|",
    ]
    for name, c in {**s["ranking"], **s["ranking_early_epochs_of_long_run"]}.items():
        lines.append(f"| {name} | **{_fmt(c['kendall_tau'])}** | {_fmt(c['spearman_rho'])} | {c['n']} |")
    ref = s["zero_cost_reference_proxy"]
    lines += [
        "",
        "## Zero-cost proxies",
        "",
        f"| score | Kendall vs proxy {ref} | Spearman vs proxy {ref} | Kendall vs long | Spearman vs long |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c in s["zero_cost"].items():
        p, lg = c["vs_proxy"], c["vs_long"]
        lines.append(
            f"| {name} | {_fmt(p['kendall_tau'])} | {_fmt(p['spearman_rho'])} | {_fmt(lg['kendall_tau'])} | "
            f"{_fmt(lg['spearman_rho'])} |"
        )
    keys = list(s["rows"][0]["proxies"])
    lines += [
        "",
        "## Architectures (validation accuracy; seconds of training)",
        "",
        "| name | architecture (stem, PE: depth x width mixers per stage) | params | "
        + " | ".join(f"{k}" for k in keys)
        + " | long |",
        "|---|---|---:|" + "---:|" * (len(keys) + 1),
    ]
    for r in s["rows"]:
        cells = [f"{_acc(r['proxies'][k]):.3f} ({r['proxies'][k]['train_seconds']:.0f}s)" for k in keys]
        cells.append(f"{_acc(r['long']):.3f} ({r['long']['train_seconds']:.0f}s)")
        arch = r["arch"].replace("|", "\\|")  # stage separators inside a table cell
        lines.append(f"| {r['name']} | {arch} | {r['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
