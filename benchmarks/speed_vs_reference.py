"""Are the generated zoo models at least as fast as the reference implementations?

For each model, hvtnas's generated backbone and timm's implementation of the same architecture
(same weights, see ``_reference.py``; same stochastic-depth rate) are timed side by side in one
process, interleaved round by round so that a slow spell of a shared machine hits both alike:

- ``infer b1``: inference latency at batch 1 (``inference_mode``), ms;
- ``infer b64``: inference throughput at batch 64, img/s;
- ``train``: a training step (forward, cross-entropy, backward, AdamW step), img/s.

CPU runs in float32 (NCHW input); CUDA in bf16 autocast with channels_last input and weights,
eager and with ``torch.compile`` (both models compiled alike). The ratio is generated time /
reference time: below 1 the generated model is faster. Targets (issues 8, 17): <= 0.95 for CPU inference,
<= 0.9 for CUDA bf16 training.

    python benchmarks/speed_vs_reference.py                   # CPU: ~15 min on 2 cores, machine idle
    python benchmarks/speed_vs_reference.py --device cuda     # eager + compile, bf16
    python benchmarks/speed_vs_reference.py --models swin_t --settings infer_b1 --rounds 3 --out /tmp/s
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _reference import MODELS as REFERENCE_MODELS
from _reference import NATIVE_RESOLUTION, import_timm, load_pair

from hvtnas.costs.latency import device_name
from hvtnas.models import resolve_config

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODELS = [
    "swin_t",
    "pvt_v2_b0",
    "pvt_v2_b2",
    "poolformer_s12",
    "convformer_s18",
    "caformer_s18",
    "twins_svt_s",
    "deit_s",
    "mixer_b16",
    "crossvit_s",
]
CPU_TARGET, CUDA_TRAIN_TARGET = 0.95, 0.9


@dataclass(frozen=True)
class Setting:
    name: str
    batch: int
    train: bool
    unit: str  # how the table reports it: "ms" (latency) or "img/s" (throughput)


def settings_for(device: str, train_batch: int | None, infer_batch: int | None) -> dict[str, Setting]:
    big = infer_batch or 64
    train = train_batch or (16 if device == "cpu" else 128)
    return {
        "infer_b1": Setting("infer b1", 1, False, "ms"),
        f"infer_b{big}": Setting(f"infer b{big}", big, False, "img/s"),
        "train": Setting(f"train b{train}", train, True, "img/s"),
    }


def target_for(device: str, setting: Setting) -> float | None:
    if device == "cpu":
        return None if setting.train else CPU_TARGET
    return CUDA_TRAIN_TARGET if setting.train else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(
    model: torch.nn.Module, setting: Setting, device: torch.device, resolution: int, channels_last: bool
) -> Callable[[], None]:
    """One iteration of ``setting`` on ``model`` as a closure (its inputs made once)."""
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(setting.batch, 3, resolution, resolution, device=device).contiguous(memory_format=fmt)
    if not setting.train:
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), autocast:
                model(x)

        return infer
    model.train()
    y = torch.randint(0, 1000, (setting.batch,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        with autocast:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train_step


def interleaved(
    steps: dict[str, Callable[[], None]], device: torch.device, warmup: int, rounds: int, iters: int
) -> dict[str, list[float]]:
    """Seconds per iteration of each step, ``rounds`` measurements each, taken alternately (the
    order flips every round so neither side always runs right after the other)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    order = list(steps)
    for r in range(rounds):
        for key in order if r % 2 == 0 else reversed(order):
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                steps[key]()
            _sync(device)
            times[key].append((time.perf_counter() - start) / iters)
    return times


@contextlib.contextmanager
def _on_device(*models: torch.nn.Module, device: torch.device) -> Iterator[None]:
    try:
        yield
    finally:
        for m in models:
            m.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()


def compile_modes(device: torch.device, compile_arg: str) -> list[bool]:
    """Whether each measurement compiles the models: ``torch.compile`` is measured on CUDA only."""
    if device.type != "cuda":
        return [False]
    return {"both": [False, True], "off": [False], "only": [True]}[compile_arg]


def default_iters(device: torch.device, setting: Setting) -> int:
    """Iterations per timed round: enough for a round to outlast timer and launch noise."""
    if device.type == "cuda":
        return 50 if setting.batch == 1 else 15
    return 5 if setting.batch == 1 else 1


def measure_model(name: str, timm: Any, args: argparse.Namespace, settings: dict[str, Setting]) -> list[dict]:
    device = torch.device(args.device)
    drop_path = resolve_config(name).drop_path_rate  # the paper's rate, in both models
    channels_last = device.type == "cuda"
    resolution = NATIVE_RESOLUTION.get(name, args.resolution)  # halonet_h1 runs at 256 only
    rows = []
    for key in args.settings:
        setting = settings[key]
        for compiled in compile_modes(device, args.compile):
            # a fresh pair for every measurement: the same weights and no optimizer state or
            # compiled graphs carried over from the previous setting
            torch.manual_seed(0)
            reference, generated = load_pair(name, timm, drop_path_rate=drop_path)
            models = {"reference": reference, "generated": generated}
            with _on_device(*models.values(), device=device):
                for k, m in models.items():
                    m.to(device)
                    if channels_last:
                        m.to(memory_format=torch.channels_last)
                    if compiled:
                        models[k] = torch.compile(m)
                steps = {
                    k: make_step(m, setting, device, resolution, channels_last) for k, m in models.items()
                }
                warmup = args.warmup + (5 if compiled else 0)
                iters = args.iters or default_iters(device, setting)
                times = interleaved(steps, device, warmup, args.rounds, iters)
            ref_s, gen_s = statistics.median(times["reference"]), statistics.median(times["generated"])
            target = target_for(device.type, setting)
            row = {
                "model": name,
                "reference": f"timm {timm.__version__}: {REFERENCE_MODELS[name]}",
                "device": device.type,
                "setting": setting.name,
                "batch": setting.batch,
                "train": setting.train,
                "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32",
                "channels_last": channels_last,
                "compile": compiled,
                "reference_ms": 1000 * ref_s,
                "generated_ms": 1000 * gen_s,
                "reference_img_s": setting.batch / ref_s,
                "generated_img_s": setting.batch / gen_s,
                "ratio": gen_s / ref_s,
                "spread": {
                    k: (max(v) - min(v)) / statistics.median(v) for k, v in times.items()
                },  # (max - min) / median of the rounds: how steady the machine was
                "target": target,
                "meets_target": None if target is None else gen_s / ref_s <= target,
            }
            rows.append(row)
            print(
                f"{name:15s} {setting.name:12s} {'compile' if compiled else 'eager':7s} "
                f"ref {row['reference_ms']:9.2f} ms  gen {row['generated_ms']:9.2f} ms  "
                f"ratio {row['ratio']:.3f}",
                flush=True,
            )
    return rows


def environment(device: torch.device, threads: int) -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
        "threads": threads,
        "gpu" if device.type == "cuda" else "cpu": device_name(device),
    }


def to_markdown(env: dict[str, Any], rows: list[dict]) -> str:
    lines = [
        f"Environment: {json.dumps(env)}",
        "",
        "Ratio = generated time / reference time (below 1: the generated model is faster); "
        "b1 in ms per image, batched settings in img/s.",
        "",
        "| model | setting | compile | reference | generated | ratio | target |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["batch"] == 1:
            ref, gen = f"{r['reference_ms']:.2f} ms", f"{r['generated_ms']:.2f} ms"
        else:
            ref, gen = f"{r['reference_img_s']:.1f} img/s", f"{r['generated_img_s']:.1f} img/s"
        target = (
            "" if r["target"] is None else f"<= {r['target']:g} " + ("yes" if r["meets_target"] else "NO")
        )
        compiled = "yes" if r["compile"] else "no"
        lines.append(
            f"| {r['model']} | {r['setting']} | {compiled} | {ref} | {gen} | {r['ratio']:.2f} | {target} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS, choices=sorted(REFERENCE_MODELS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--settings", nargs="*", help="infer_b1, infer_b<N>, train (default: all three)")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--infer-batch", type=int, help="batch of the throughput setting (default 64)")
    parser.add_argument("--train-batch", type=int, help="default: 16 on CPU, 128 on CUDA")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    parser.add_argument("--compile", choices=["both", "off", "only"], default="both", help="CUDA only")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurements per side")
    parser.add_argument("--iters", type=int, help="iterations per measurement (default: by device/batch)")
    parser.add_argument(
        "--out", type=Path, help="results file stem (default: results/speed_vs_reference_<device>)"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    settings = settings_for(device.type, args.train_batch, args.infer_batch)
    args.settings = args.settings or list(settings)
    unknown = [s for s in args.settings if s not in settings]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(settings)}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    timm = import_timm()
    rows = [row for name in args.models for row in measure_model(name, timm, args, settings)]

    env = environment(device, args.threads)
    env["timm"] = timm.__version__
    out = args.out or RESULTS / f"speed_vs_reference_{device.type}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"environment": env, "results": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(env, rows))
    missed = [f"{r['model']} {r['setting']}" for r in rows if r["meets_target"] is False]
    print(f"wrote {out.with_suffix('.md')}; " + (f"over target: {missed}" if missed else "all targets met"))


if __name__ == "__main__":
    main()
