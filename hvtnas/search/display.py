"""How a stored trial reads to people, without torch: objectives in their units and the
architecture in one line. ``hvtnas show``, the report and anything else that prints trials use
these (one copy of the units)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def describe_arch(arch: Mapping[str, Any]) -> str:
    """``hvtnas.summary.describe`` from a trial's stored architecture (``ArchConfig.to_dict()``,
    every field present), without building the config (that would load torch); a test keeps the
    two equal."""

    def mixers(stage: Mapping[str, Any]) -> str:
        return "+".join(dict.fromkeys(m["kind"] for m in stage["mixers"]))

    def stage_text(s: Mapping[str, Any]) -> str:  # .get: trials stored before these fields existed
        inner = s.get("inner")
        return (
            f"{s['depth']}x{s['width']} "
            + ("bottleneck " if s.get("bottleneck") is not None else "")
            + mixers(s)
            + (f" in {inner['width']} {mixers(inner)}" if inner else "")
        )

    stages = " | ".join(stage_text(s) for s in arch["stages"])
    return f"{arch['stem']['kind']} stem, {arch['pos_embed']['kind']} PE: {stages}"


def format_value(metric: str, value: float, *, percent: bool = False) -> str:
    """An objective in the unit people read it in: accuracy 0.8123 (``percent``: 81.2%),
    12.30 MMACs (0.023 under one), 1.23M params, 4.5 ms, 3.2 MiB."""
    if metric in ("flops", "flops_dense"):
        if value >= 1e9:
            return f"{value / 1e9:.2f} GMACs"
        return f"{value / 1e6:.2f} MMACs" if value >= 1e6 else f"{value / 1e6:.3f} MMACs"  # 0.023
    if metric == "params":
        return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.1f}K"
    if metric == "latency":
        return f"{value:.2f} ms"
    if metric == "memory":
        return f"{value / 2**20:.1f} MiB"
    if metric == "accuracy":
        return f"{value:.1%}" if percent else f"{value:.4f}"
    return f"{value:.4g}"  # zero-cost proxies
