"""Latency and throughput, measured the way careful benchmarks do.

CPU: a fixed thread count, ``inference_mode``, warm-up iterations, then the median and 90th
percentile of per-iteration wall times (``time.perf_counter``).
CUDA: the same statistics from CUDA events around each iteration (no host timing of async work),
optional bf16/fp16 autocast, channels_last, ``torch.compile``.
Every result carries the settings and the environment (device name, torch version, threads, dtype)
it was taken with.
"""

from __future__ import annotations

import platform
import statistics
import time
from functools import cache
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LatencySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    batch_size: int = Field(1, ge=1)
    throughput_batch_size: int | None = Field(None, ge=1)  # also measure img/s at this batch size
    threads: int | None = Field(None, ge=1)  # CPU threads; None: torch's current setting, recorded
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # autocast dtype when not float32
    channels_last: bool = False
    compile: bool = False
    warmup: int = Field(10, ge=0)
    repeats: int = Field(30, ge=3)


class LatencyResult(BaseModel):
    median_ms: float
    p90_ms: float
    mean_ms: float
    stdev_ms: float
    throughput_img_s: float | None  # at settings.throughput_batch_size
    settings: LatencySettings
    device_name: str
    torch_version: str
    threads: int
    input_size: tuple[int, int]


@cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def _timings_ms(model: nn.Module, x: torch.Tensor, settings: LatencySettings) -> list[float]:
    device = x.device
    autocast = torch.autocast(device.type, dtype=DTYPES[settings.dtype], enabled=settings.dtype != "float32")
    with torch.inference_mode(), autocast:
        for _ in range(settings.warmup):
            model(x)
        times = []
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            pairs = [
                (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                for _ in range(settings.repeats)
            ]
            for start, end in pairs:
                start.record()
                model(x)
                end.record()
            torch.cuda.synchronize(device)
            times = [start.elapsed_time(end) for start, end in pairs]
        else:
            for _ in range(settings.repeats):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
    return times


def measure_latency(
    model: nn.Module,
    input_size: tuple[int, int],
    settings: LatencySettings | None = None,
    in_channels: int = 3,
) -> LatencyResult:
    """Median / p90 latency of ``model`` on ``settings.device`` at ``input_size`` = (height, width)."""
    settings = settings or LatencySettings()
    device = torch.device(settings.device)
    previous_threads = torch.get_num_threads()
    threads = settings.threads or previous_threads
    torch.set_num_threads(threads)
    was_training = model.training
    try:
        model = model.to(device).eval()
        memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        runner = torch.compile(model) if settings.compile else model

        def batch(n: int) -> torch.Tensor:
            return torch.randn(n, in_channels, *input_size, device=device).to(memory_format=memory_format)

        times = _timings_ms(runner, batch(settings.batch_size), settings)
        throughput = None
        if settings.throughput_batch_size:
            n = settings.throughput_batch_size
            throughput = n / (statistics.median(_timings_ms(runner, batch(n), settings)) / 1e3)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    ordered = sorted(times)
    return LatencyResult(
        median_ms=statistics.median(ordered),
        p90_ms=ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        mean_ms=statistics.fmean(ordered),
        stdev_ms=statistics.stdev(ordered),
        throughput_img_s=throughput,
        settings=settings,
        device_name=device_name(device),
        torch_version=torch.__version__,
        threads=threads,
        input_size=tuple(input_size),
    )
