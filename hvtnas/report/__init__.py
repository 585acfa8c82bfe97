"""``write_report``: a self-contained HTML report of a study, and a CSV of all its trials.

Sections: what became of the trials (counts per outcome: trained, stopped early, over budget,
duplicate, failed, timeout), 2-D projections of the Pareto front (every pair of objectives; where
both axes are costs, the zoo's models at the study's input size are drawn for reference: their
accuracies are ImageNet figures and do not belong on this task's accuracy axis), the hypervolume
history, parameter importances per objective (Optuna's fANOVA), and the table of Pareto-optimal
trials. Figures, hypervolume and importances use trained, distinct, feasible trials only
(``hvtnas.search.outcome.evaluated_trials``) and say how many; the CSV has every trial, with its
outcome, and no accuracy where none was measured.
"""

from __future__ import annotations

import html
import itertools
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from hvtnas.config import ArchConfig
from hvtnas.costs import CostCache, CostSettings, measure_costs
from hvtnas.io import atomic_write_text
from hvtnas.models import zoo
from hvtnas.search.experiment import metric_direction
from hvtnas.search.outcome import (
    WARM_START_ATTR,
    count_outcomes,
    describe_counts,
    evaluated_trials,
    has_accuracy,
    trial_outcome,
)
from hvtnas.search.study import metric_value


def _objectives(study: optuna.Study) -> list[str]:
    return list(
        study.user_attrs.get("objectives")
        or study.metric_names
        or [f"objective{i}" for i in range(len(study.directions))]
    )


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, outcome, objectives, parameters, costs, reason. Accuracy is
    empty where none was measured (over budget, failed, a duplicate of an untrained trial)."""
    names = _objectives(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower(), "outcome": trial_outcome(t)}
        for name, value in zip(names, t.values or [None] * len(names), strict=True):
            row[name] = None if name == "accuracy" and not has_accuracy(t) else value
        costs = t.user_attrs.get("costs") or {}
        row.update({"params_count": costs.get("params"), "gmacs": (costs.get("flops") or 0) / 1e9 or None})
        row.update({f"param:{k}": v for k, v in t.params.items()})
        row["duplicate_of"] = t.user_attrs.get("duplicate_of")
        row["warm_start"] = t.user_attrs.get(WARM_START_ATTR)
        row["over_budget"] = "; ".join(t.user_attrs.get("constraint_violations") or []) or None
        row["reason"] = t.user_attrs.get("reason")
        row["seconds"] = t.user_attrs.get("wall_seconds")
        rows.append(row)
    return pd.DataFrame(rows)


def _feasible(study: optuna.Study) -> list[FrozenTrial]:
    """Trained (or scored), distinct, feasible trials: what every figure is drawn from."""
    return evaluated_trials(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _evaluated_study(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of the study holding only its trained, distinct, feasible trials, for
    Optuna's importance and hypervolume functions (which take a study)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created in memory"
    try:
        copy = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials(_feasible(study))
    return copy


def basis_note(study: optuna.Study) -> str:
    """``from 14 trained, distinct, feasible trials (of 20)``."""
    return f"from {len(_feasible(study))} trained, distinct, feasible trials (of {len(study.trials)})"


ZOO_AXES = {"flops", "params"}


def _zoo_points(
    study: optuna.Study, x: str, y: str, cache: CostCache | None
) -> list[tuple[str, float, float]]:
    """The zoo's models measured at the study's input (channels, size, classes), where both axes
    are costs that need no device or measurement settings: FLOPs and parameters."""
    feasible = _feasible(study)
    if not feasible or not {x, y} <= ZOO_AXES:
        return []
    arch = ArchConfig.from_dict(feasible[0].user_attrs["arch"])
    points = []
    for name in zoo.names():
        cfg = zoo.get_config(name)
        cfg = cfg.model_copy(update={"input": arch.input})
        costs = measure_costs(cfg, CostSettings(dense_resolution=None), cache=cache)
        points.append((name, metric_value(x, costs), metric_value(y, costs)))
    return points


def pareto_figures(study: optuna.Study, cache: CostCache | None = None) -> list[go.Figure]:
    names = _objectives(study)
    feasible = _feasible(study)
    front = {t.number for t in study.best_trials}
    figures = []
    for i, j in itertools.combinations(range(len(names)), 2):
        x_name, y_name = names[j], names[i]  # accuracy (first objective, usually) on the y axis
        fig = go.Figure()
        searched = [t for t in feasible if not t.user_attrs.get("warm_start")]
        for on_front, label, color in ((False, "trials", "#9aa5b1"), (True, "Pareto front", "#d62728")):
            chosen = [t for t in searched if (t.number in front) == on_front]
            fig.add_trace(
                go.Scatter(
                    x=[t.values[j] for t in chosen],
                    y=[t.values[i] for t in chosen],
                    mode="markers",
                    name=label,
                    marker={"color": color, "size": 9 if on_front else 6},
                    text=[f"trial {t.number}" for t in chosen],
                    hovertemplate="%{text}<br>%{x:.4g}, %{y:.4g}",
                )
            )
        warm = [t for t in feasible if t.user_attrs.get("warm_start")]
        if warm:  # the published designs the study started from, on this task's axes
            fig.add_trace(
                go.Scatter(
                    x=[t.values[j] for t in warm],
                    y=[t.values[i] for t in warm],
                    mode="markers+text",
                    name="warm start (published designs)",
                    marker={"symbol": "diamond-open", "size": 10, "color": "#1f77b4"},
                    text=[t.user_attrs["warm_start"] for t in warm],
                    textposition="bottom center",
                    textfont={"size": 9},
                    hovertemplate="%{text}<br>%{x:.4g}, %{y:.4g}",
                )
            )
        zoo_points = _zoo_points(study, x_name, y_name, cache)
        if zoo_points:
            fig.add_trace(
                go.Scatter(
                    x=[p[1] for p in zoo_points],
                    y=[p[2] for p in zoo_points],
                    mode="markers+text",
                    name="zoo",
                    text=[p[0] for p in zoo_points],
                    textposition="top center",
                    marker={"symbol": "diamond"},
                )
            )
        log_x = x_name in ("flops", "flops_dense", "params", "memory")
        fig.update_layout(
            title=f"{y_name} ({metric_direction(y_name)}) vs {x_name} ({metric_direction(x_name)})",
            xaxis_title=x_name,
            yaxis_title=y_name,
            xaxis_type="log" if log_x else "linear",
            template="plotly_white",
            height=480,
        )
        figures.append(fig)
    return figures


def hypervolume_figure(study: optuna.Study) -> go.Figure | None:
    feasible = _feasible(study)
    if len(study.directions) < 2 or not feasible:
        return None
    reference = []
    for k, direction in enumerate(study.directions):
        values = [t.values[k] for t in feasible]
        if direction == optuna.study.StudyDirection.MAXIMIZE:
            reference.append(min(values) - 0.1 * (abs(min(values)) + 1e-9))
        else:
            reference.append(max(values) * 1.1 + 1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fig = optuna.visualization.plot_hypervolume_history(
            _evaluated_study(study), reference_point=reference
        )
    fig.update_layout(title=f"hypervolume history, {basis_note(study)}", template="plotly_white", height=420)
    return fig


def importance_figures(study: optuna.Study) -> tuple[list[go.Figure], list[str]]:
    names = _objectives(study)
    figures, notes = [], []
    evaluated = _evaluated_study(study)
    for k, name in enumerate(names):
        try:
            importances = optuna.importance.get_param_importances(
                evaluated,
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                target=lambda t, k=k: t.values[k],
            )
        except (RuntimeError, ValueError, ZeroDivisionError) as err:
            notes.append(f"no parameter importances for {name} ({basis_note(study)}): {err}")
            continue
        fig = go.Figure(go.Bar(x=list(importances.values()), y=list(importances.keys()), orientation="h"))
        fig.update_layout(
            title=f"parameter importance for {name} (fANOVA, {basis_note(study)})",
            template="plotly_white",
            height=120 + 24 * len(importances),
            yaxis={"autorange": "reversed"},
        )
        figures.append(fig)
    return figures, notes


def write_report(study: optuna.Study, out: Path, cache: CostCache | None = None) -> tuple[Path, Path]:
    """Write ``out`` (HTML, plotly inlined: opens offline) and ``out`` with ``.csv`` (all trials)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    csv_path = out.with_suffix(".csv")
    atomic_write_text(csv_path, frame.to_csv(index=False))  # a crash leaves the old file, never a torn one
    front = frame[frame["trial"].isin({t.number for t in study.best_trials})]
    sections: list[str] = []
    figures = pareto_figures(study, cache)
    hv = hypervolume_figure(study)
    importances, notes = importance_figures(study)
    first = True
    for title, figs in (
        ("Pareto front", figures),
        ("Hypervolume", [hv] if hv else []),
        ("Parameter importances", importances),
    ):
        parts = []
        for fig in figs:
            parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if first else False))
            first = False
        sections.append(f"<h2>{title}</h2>" + "".join(parts))
    summary = describe_counts(count_outcomes(study.get_trials(deepcopy=False)))
    objectives = ", ".join(
        f"{n} ({d.name.lower()})" for n, d in zip(_objectives(study), study.directions, strict=True)
    )
    body = (
        f"<h1>hvtnas study {html.escape(study.study_name)}</h1>"
        f"<p>{len(frame)} trials: {html.escape(summary)}. Objectives: {html.escape(objectives)}. "
        f"Figures, hypervolume and importances are computed {html.escape(basis_note(study))}; "
        "over-budget trials were never trained and have no accuracy.</p>"
        + "".join(sections)
        + "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes)
        + "<h2>Pareto-optimal trials</h2>"
        + front.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}")
        + f"<p>All trials: {html.escape(csv_path.name)}</p>"
    )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto} "
        "table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 6px} "
        ".note{color:#777}"
    )
    atomic_write_text(
        out,
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(study.study_name)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>",
    )
    return out, csv_path
