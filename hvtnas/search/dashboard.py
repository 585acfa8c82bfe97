"""What the Optuna dashboard shows of an hvtnas study: a note per trial with its architecture and
costs, and the study's figures (Pareto projections, hypervolume) saved into the study."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from hvtnas.config import ArchConfig

OUTCOME_NOTES = {  # what the dashboard's note says first, so that no value is read for more than it is
    "over_budget": "over budget: never trained; the accuracy Optuna shows for it (0) is a placeholder "
    "that tells the sampler the architecture is infeasible",
    "inherited": "inherited: evaluated with the weights it inherits from the study's supernet, not trained",
    "duplicate": "duplicate: the result of an identical architecture, reused (nothing trained)",
    "stopped_early": "stopped early: its accuracy is that of the epoch it was stopped at",
    "failed": "failed: no result",
    "timeout": "timed out: no result",
}


def trial_note(arch: ArchConfig, attrs: dict[str, Any]) -> str:
    """Markdown: the trial's outcome, the architecture stage by stage, its costs, accuracy curve
    and any reason."""
    lines = ["| stage | depth | width | heads | mixers | mlp | ffn |", "|---|---|---|---|---|---|---|"]
    for i, s in enumerate(arch.stages):
        mixers = " + ".join(
            m.kind
            + "".join(
                f" {k}={v}"
                for k, v in m.model_dump(exclude={"kind"}).items()
                if k in ("window_size", "sr_ratio", "pool_size", "kernel_size")
            )
            for m in s.mixers
        )
        lines.append(
            f"| {i + 1} | {s.depth} | {s.width} | {s.num_heads or '-'} | {mixers} | {s.mlp_ratio:g} | "
            f"{s.ffn.kind} |"
        )
    head = []
    outcome = attrs.get("outcome")
    if outcome:
        head.append(f"outcome **{outcome.replace('_', ' ')}**")
        if outcome in OUTCOME_NOTES:
            head[-1] += f" ({OUTCOME_NOTES[outcome]})"
    if attrs.get("warm_start"):
        head.append(f"warm start from **{attrs['warm_start']}**")
    text = [
        *(["; ".join(head), ""] if head else []),
        f"stem **{arch.stem.kind}**, positional encoding **{arch.pos_embed.kind}**, "
        f"downsampling **{arch.downsample.kind}**",
        "",
        *lines,
        "",
    ]
    costs = attrs.get("costs") or {}
    if costs:
        text.append(
            f"params **{costs['params']:,}**, **{costs['flops'] / 1e6:.2f} MMACs** at "
            f"{costs['resolution']['width']}x{costs['resolution']['height']}"
        )
        if costs.get("flops_dense"):
            dense = costs["dense_resolution"]
            text.append(
                f", backbone {costs['flops_dense'] / 1e9:.2f} GMACs at {dense['width']}x{dense['height']}"
            )
        if costs.get("latency"):
            lat = costs["latency"]
            text.append(
                f", latency {lat['median_ms']:.2f} ms ({lat['device_name']}, {lat['threads']} threads)"
            )
        text.append("")
    if attrs.get("accuracy_curve"):
        text.append("accuracy by epoch: " + ", ".join(f"{a:.4f}" for a in attrs["accuracy_curve"]))
    if attrs.get("reason"):
        text.append(f"\n**{attrs['reason']}**")
    return "\n".join(text)


def save_trial_note(trial: optuna.Trial, arch: ArchConfig, attrs: dict[str, Any]) -> None:
    from optuna_dashboard import save_note

    save_note(trial, trial_note(arch, attrs))


def save_study_figures(study: optuna.Study) -> int:
    """Store the report's Pareto projections and hypervolume history in the study (replacing
    earlier versions); returns how many figures were saved."""
    from optuna_dashboard import save_plotly_graph_object

    from hvtnas.report import hypervolume_figure, pareto_figures

    figures = [(f"pareto_{i}", fig) for i, fig in enumerate(pareto_figures(study))]
    hv = hypervolume_figure(study)
    if hv is not None:
        figures.append(("hypervolume", hv))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for graph_id, fig in figures:
            save_plotly_graph_object(study, fig, graph_object_id=graph_id)
    return len(figures)
