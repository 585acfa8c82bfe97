"""Does a few-epoch proxy rank architectures as longer training does, and do zero-cost proxies?

For every architecture of a small family of tiny MetaFormers (below) this script

1. scores the untrained network with every zero-cost proxy (one batch of training images),
2. trains low-fidelity proxies (few epochs, optionally a fraction of the training data; each is a
   separate run with its own warm-up + cosine schedule, as a search trial would be),
3. trains the same architecture longer (more epochs, all training data),

and reports Kendall tau between each proxy's accuracy and the long training's (the proxy-ranking
study; also for the long run's own early epochs, which is what early stopping sees) and Spearman
rho / Kendall tau of every zero-cost proxy against both accuracies (the zero-cost study).

Architectures: the search spaces of issue 6 do not exist yet, so they are sampled here from a
documented family of tiny configs (``sample_family``); switch to ``search_spaces/quickstart.yaml``
once it exists. Data: ``../shared/data/animal_mnist.npz`` (10 animal classes, 28x28 gray) when
present, else scikit-learn's digits.

    nice -n 10 python benchmarks/proxy_studies.py            # ~10-15 min on 2 shared CPU cores
    nice -n 10 python benchmarks/proxy_studies.py --archs 4 --long-epochs 2 --out smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from hvtnas.config import ArchConfig
from hvtnas.models import build_model
from hvtnas.train.data import DataConfig, load_dataset
from hvtnas.train.proxies import ZERO_COST_PROXIES, score_model
from hvtnas.train.trainer import TrainConfig, adapt_arch_to_data, train_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ANIMAL_MNIST = ROOT.parent / "shared" / "data" / "animal_mnist.npz"

# The family: 4 stages of widths (w, 2w, 3w, 4w); stages 1-2 use one mixer and stages 3-4 another
# (the CAFormer pattern: local mixing early, global late); head_dim 8.
EARLY_MIXERS = ["pooling", "sepconv", "identity", "shift", "mbconv", {"kind": "window", "window_size": 2}]
LATE_MIXERS = [
    "attention",
    "pooling",
    "identity",
    "sepconv",
    {"kind": "spatial_reduction", "sr_ratio": 1},
    {"kind": "window", "window_size": 2},
]
DEPTHS = [[1, 1, 1, 1], [1, 1, 2, 1], [2, 2, 2, 2], [1, 2, 3, 1], [2, 2, 4, 2]]
BASE_WIDTHS = [8, 16, 24, 32]
STEMS = [
    {"kind": "patch", "norm": "layernorm"},
    {"kind": "overlap", "norm": "layernorm"},
    {"kind": "conv", "norm": "batchnorm"},
]
POS_EMBEDS = ["none", "absolute", "peg"]


def sample_family(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct architectures from the family above, as ``ArchConfig`` dicts."""
    rng = random.Random(seed)
    archs: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(archs) < n:
        early, late = rng.choice(EARLY_MIXERS), rng.choice(LATE_MIXERS)
        depths, w = rng.choice(DEPTHS), rng.choice(BASE_WIDTHS)
        stages = []
        for i, depth in enumerate(depths):
            mixer = early if i < 2 else late
            stage: dict[str, Any] = {"depth": depth, "width": w * (i + 1), "head_dim": 8, "mixers": [mixer]}
            if isinstance(mixer, str) and mixer == "mbconv":
                stage["ffn"] = "none"
            stages.append(stage)
        cfg = {
            "name": f"a{len(archs):02d}",
            "input": {"channels": 1, "resolution": 16, "num_classes": 10},
            "stem": rng.choice(STEMS),
            "pos_embed": rng.choice(POS_EMBEDS),
            "downsample": {"kind": "conv", "kernel_size": 2, "norm": "layernorm"},
            "stages": stages,
        }
        key = json.dumps({k: v for k, v in cfg.items() if k != "name"}, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        ArchConfig.from_dict(cfg)  # fail here, not mid-study, on an invalid family member
        archs.append(cfg)
    return archs


def describe(cfg: dict[str, Any]) -> str:
    def name(m: Any) -> str:
        return m if isinstance(m, str) else m["kind"]

    s = cfg["stages"]
    depths = "-".join(str(st["depth"]) for st in s)
    pe = cfg["pos_embed"]
    mixers = f"{name(s[0]['mixers'][0])}/{name(s[2]['mixers'][0])}"
    return f"{mixers} d{depths} w{s[0]['width']} {cfg['stem']['kind']} {pe}"


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
    parser.add_argument("--archs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument(
        "--proxies", default="2x0.5,3x1,5x1", help="proxy fidelities: EPOCHSxDATA_FRACTION, comma-separated"
    )
    parser.add_argument("--long-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--zc-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: best on a shared CPU)")
    parser.add_argument("--out", default="proxy_studies")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fidelities = parse_proxies(args.proxies)

    if ANIMAL_MNIST.is_file():
        base = DataConfig(name="npz", path=ANIMAL_MNIST, resolution=args.resolution, channels=1)
        dataset = "animal_mnist"
    else:
        base = DataConfig(name="digits", resolution=args.resolution, channels=1)
        dataset = "digits"
    long_data = load_dataset(base)
    proxy_data = {f: load_dataset(base.model_copy(update={"fraction": f})) for _, f in fidelities}
    no_flip = {"hflip": False}
    proxy_cfgs = {
        (e, f): TrainConfig(epochs=e, batch_size=args.batch_size, augment=no_flip, warmup_epochs=0.5)
        for e, f in fidelities
    }
    long_cfg = TrainConfig(epochs=args.long_epochs, batch_size=args.batch_size, augment=no_flip)
    zc_x, zc_y = long_data.sample_batch(args.zc_batch, seed=args.seed)

    rows = []
    study_start = time.perf_counter()
    for cfg in sample_family(args.archs, args.seed):
        arch = adapt_arch_to_data(ArchConfig.from_dict(cfg), long_data)
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
                "name": cfg["name"],
                "arch": describe(cfg),
                "config": cfg,
                "params": long.params,
                "zero_cost": zc,
                "zero_cost_seconds": zc_seconds,
                "proxies": proxies,
                "long": long.to_dict(),
            }
        )
        shown = "  ".join(f"{k} {_acc(v):.3f} ({v['train_seconds']:.1f}s)" for k, v in proxies.items())
        print(
            f"{cfg['name']} {describe(cfg):52s} {long.params:>8,d}  {shown}"
            f"  long {_acc(long.to_dict()):.3f} ({long.train_seconds:.1f}s)  zc {zc_seconds:.1f}s",
            flush=True,
        )
    total = time.perf_counter() - study_start

    long_acc = [_acc(r["long"]) for r in rows]
    first = next(iter(rows[0]["proxies"]))
    ranking = {k: correlations([_acc(r["proxies"][k]) for r in rows], long_acc) for k in rows[0]["proxies"]}
    early_epochs = {
        f"long run, epoch {k}": correlations([_acc_at(r["long"], k) for r in rows], long_acc)
        for k in (1, 2, 3, args.long_epochs // 2)
        if k < args.long_epochs
    }
    summary = {
        "dataset": dataset,
        "settings": {
            **vars(args),
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
        f"{len(s['rows'])} architectures from `benchmarks/proxy_studies.py`'s tiny family "
        f"(seed {st['seed']}), {st['resolution']}x{st['resolution']} gray input, batch {st['batch_size']}, "
        "AdamW (lr 2e-3, wd 0.05) + warm-up + cosine, label smoothing 0.1, random crop (no flip).",
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
        "| name | early/late mixer, depths, base width, stem, pos-embed | params | "
        + " | ".join(f"{k}" for k in keys)
        + " | long |",
        "|---|---|---:|" + "---:|" * (len(keys) + 1),
    ]
    for r in s["rows"]:
        cells = [f"{_acc(r['proxies'][k]):.3f} ({r['proxies'][k]['train_seconds']:.0f}s)" for k in keys]
        cells.append(f"{_acc(r['long']):.3f} ({r['long']['train_seconds']:.0f}s)")
        lines.append(f"| {r['name']} | {r['arch']} | {r['params']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
