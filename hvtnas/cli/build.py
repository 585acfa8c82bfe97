"""``hvtnas build``: build one architecture and describe it: shapes, parameters, FLOPs, memory, latency."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hvtnas.cli._common import console, user_errors
from hvtnas.errors import HvtnasError

if TYPE_CHECKING:  # torch: imported by the command, not by `hvtnas --help`
    from hvtnas.costs import Costs, Resolution


def _resolution(text: str) -> Resolution | None:
    from pydantic import ValidationError

    from hvtnas.costs import Resolution

    if text.lower() == "none":
        return None
    try:
        return Resolution.model_validate(text)
    except ValidationError:
        raise HvtnasError(
            f"--dense-resolution: expected WIDTHxHEIGHT (e.g. 1280x800) or 'none', got {text!r}"
        ) from None


def report(costs: Costs, summary_dict: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` object: structure (params, stages) plus every measured cost."""
    out = dict(summary_dict)
    out.update(
        flops=costs.flops,
        flops_attention=costs.flops_attention,
        flops_per_part=costs.flops_per_part,
        flops_dense=costs.flops_dense,
        dense_resolution=costs.dense_resolution.model_dump() if costs.dense_resolution else None,
    )
    if costs.memory is not None:
        out["memory"] = costs.memory.model_dump()
    if costs.latency is not None:
        out["latency_ms"] = costs.latency.median_ms
        out["latency"] = costs.latency.model_dump(mode="json")
    return out


@user_errors
def build_command(
    model: Annotated[str, typer.Argument(help="A zoo name (see `hvtnas zoo`) or an architecture YAML file.")],
    resolution: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Input size for shapes, FLOPs and latency (default: the config's).",
        ),
    ] = None,
    dense_resolution: Annotated[
        str,
        typer.Option(
            help="Backbone (pyramid) cost at WIDTHxHEIGHT: 1280x800 detection, 512x512 segmentation."
        ),
    ] = "1280x800",
    memory: Annotated[bool, typer.Option("--memory", help="Also measure activation memory.")] = False,
    latency: Annotated[
        bool, typer.Option("--latency", help="Also measure latency (median of repeats).")
    ] = False,
    device: Annotated[
        str, typer.Option(help="Device for latency and memory: cpu, cuda, cuda:1, ...")
    ] = "cpu",
    batch_size: Annotated[int, typer.Option(min=1, help="Latency batch size.")] = 1,
    throughput_batch_size: Annotated[
        int | None, typer.Option(min=1, help="Also measure throughput (img/s) at this batch size.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads for latency (default: torch's).")
    ] = None,
    dtype: Annotated[str, typer.Option(help="float32, or an autocast dtype: bfloat16, float16.")] = "float32",
    channels_last: Annotated[
        bool, typer.Option("--channels-last", help="channels_last memory format.")
    ] = False,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile before timing.")] = False,
    repeats: Annotated[int, typer.Option(min=3, help="Timed iterations.")] = 30,
    use_cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse and store measured costs.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout.")] = False,
) -> None:
    """Build a model and print its pyramid's shapes, parameters and FLOPs (and memory, latency on request)."""
    from pydantic import ValidationError
    from rich.table import Table

    from hvtnas.config import MAX_RESOLUTION
    from hvtnas.costs import CostCache, CostSettings, LatencySettings, Resolution, measure_costs
    from hvtnas.models import build_model
    from hvtnas.summary import summarize

    if resolution is not None and resolution > MAX_RESOLUTION:
        raise HvtnasError(f"--resolution {resolution} is larger than the largest input, {MAX_RESOLUTION}")
    built = build_model(model, init_weights=False)  # weights do not change what is reported
    summary = summarize(built, resolution=resolution)
    latency_settings = None
    if latency:
        try:
            latency_settings = LatencySettings(
                device=device,
                batch_size=batch_size,
                throughput_batch_size=throughput_batch_size,
                threads=threads,
                dtype=dtype,
                channels_last=channels_last,
                compile=compile_model,
                repeats=repeats,
            )
        except ValidationError as err:
            raise HvtnasError(
                f"latency settings: {err.errors()[0]['loc'][0]}: {err.errors()[0]['msg']}"
            ) from None
    settings = CostSettings(
        resolution=Resolution(height=summary.resolution, width=summary.resolution),
        dense_resolution=_resolution(dense_resolution),
        memory=memory,
        latency=latency_settings,
    )
    costs = measure_costs(built, settings, cache=CostCache() if use_cache else None)
    if as_json:
        print(json.dumps(report(costs, summary.to_dict())))
        return
    table = Table(title=f"{summary.name or model} at {summary.resolution}x{summary.resolution}")
    for col in ("part", "output (C x H x W)", "stride", "params", "GMACs"):
        table.add_column(col, justify="left" if col == "part" else "right")
    table.add_row(
        "stem", "", "", f"{summary.params_per_part['stem']:,}", f"{costs.flops_per_part['stem'] / 1e9:.3f}"
    )
    strides = [f["reduction"] for f in built.feature_info]  # the stages', then other branches' (CrossViT)
    own = len(built.arch_config.stages)
    for i, stage in enumerate(summary.stages):
        part = f"stage{i + 1}" if i < own else f"branch{i - own + 1}"
        table.add_row(
            part,
            f"{stage['channels']} x {stage['height']} x {stage['width']}",
            str(strides[i]),
            f"{summary.params_per_part[part]:,}",
            f"{costs.flops_per_part[part] / 1e9:.3f}",
        )
    if "co_scale" in summary.params_per_part:  # CoaT's parallel blocks over the last stages
        co_scale = (summary.params_per_part["co_scale"], costs.flops_per_part.get("co_scale", 0))
        table.add_row("co-scale", "", "", f"{co_scale[0]:,}", f"{co_scale[1] / 1e9:.3f}")
    if "fusion" in summary.params_per_part:  # CrossViT's exchanges between the branches
        fusion = (summary.params_per_part["fusion"], costs.flops_per_part.get("fusion", 0))
        table.add_row("fusion", "", "", f"{fusion[0]:,}", f"{fusion[1] / 1e9:.3f}")
    table.add_row(
        "head", "", "", f"{summary.params_per_part['head']:,}", f"{costs.flops_per_part['head'] / 1e9:.3f}"
    )
    table.add_row(
        "[bold]total[/]",
        "",
        "",
        f"[bold]{summary.params:,}[/] ({summary.params / 1e6:.2f}M)",
        f"[bold]{costs.flops / 1e9:.3f}[/]",
    )
    console.print(table)
    lines = [f"attention products (Q K^T + A V): {costs.flops_attention / 1e9:.3f} GMACs of the total"]
    if costs.flops_dense is not None:
        lines.append(f"backbone at {costs.dense_resolution}: {costs.flops_dense / 1e9:.1f} GMACs")
    if costs.memory is not None:
        mem = costs.memory
        text = f"training activations ({mem.method}): {mem.train_activation_bytes / 2**20:.0f} MiB per image"
        if mem.train_activation_bytes_dense is not None:
            text += f", {mem.train_activation_bytes_dense / 2**20:.0f} MiB at {costs.dense_resolution}"
        lines.append(text)
    if costs.latency is not None:
        lat = costs.latency
        text = (
            f"latency: median {lat.median_ms:.2f} ms, p90 {lat.p90_ms:.2f} ms "
            f"(batch {lat.settings.batch_size}, "
            f"{lat.settings.dtype}, {lat.threads} threads, {lat.device_name}, torch {lat.torch_version})"
        )
        if lat.throughput_img_s is not None:
            text += (
                f"; throughput {lat.throughput_img_s:.0f} img/s at batch {lat.settings.throughput_batch_size}"
            )
        lines.append(text)
    console.print("\n".join(lines), highlight=False)
