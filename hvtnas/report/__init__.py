"""``write_report``: a self-contained HTML report of a study, and a CSV of all its trials.

Sections: what became of the trials (counts per outcome, at the top: trained, stopped early, over
budget, duplicate, failed, timeout), 2-D projections of the Pareto front (every pair of objectives;
cost axes on a log scale; the warm-start designs, trained on this task, on every projection; the
zoo's models at the study's input size only where both axes are costs: their accuracies are
ImageNet figures and do not belong on this task's accuracy axis), the table of Pareto-optimal
trials (one row per architecture, readable units, a one-line architecture, a link to the CSV),
their accuracy curves, the normalised hypervolume history (a fraction of a box whose reference
point the page states), and parameter importances per objective (Optuna's fANOVA). Figures,
hypervolume and importances use trained, distinct, feasible trials only
(``hvtnas.search.outcome.evaluated_trials``) and say how many; the CSV has every trial, with its
outcome, and no accuracy where none was measured.
"""

from __future__ import annotations

import html
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import yaml
from optuna.trial import FrozenTrial, TrialState

from hvtnas.config import ArchConfig
from hvtnas.costs import CostCache, CostSettings, measure_costs
from hvtnas.io import atomic_write_text
from hvtnas.models import zoo
from hvtnas.search.display import describe_arch, format_value
from hvtnas.search.experiment import METRICS, metric_direction
from hvtnas.search.export import select_trials
from hvtnas.search.outcome import (
    WARM_START_ATTR,
    count_outcomes,
    describe_counts,
    evaluated_trials,
    has_accuracy,
    trial_outcome,
)


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
        points.append((name, costs.metric(x), costs.metric(y)))
    return points


LOG_AXES = {"flops", "flops_dense", "params", "memory"}  # spans of orders of magnitude
UNITS = {
    "flops": "MACs",
    "flops_dense": "MACs",
    "params": "parameters",
    "latency": "ms",
    "memory": "bytes of activations per image",
}


def _front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal trained, distinct, feasible trials, one per architecture: what ``hvtnas
    show`` prints and ``hvtnas export`` writes."""
    return select_trials(study, pareto=True)


def _axis(metric: str) -> dict[str, Any]:
    log = metric in LOG_AXES
    unit = UNITS.get(metric)
    title = metric + (f" ({unit}{', log scale' if log else ''})" if unit else "")
    axis: dict[str, Any] = {"title": title, "type": "log" if log else "linear"}
    if metric == "accuracy":
        axis["tickformat"] = ".0%"
    return axis


def _hover(t: FrozenTrial, names: list[str]) -> str:
    values = ", ".join(
        f"{n} {format_value(n, v, percent=True)}" for n, v in zip(names, t.values, strict=True)
    )
    label = f" (warm start {t.user_attrs['warm_start']})" if t.user_attrs.get("warm_start") else ""
    arch = t.user_attrs.get("arch")
    text = f"trial {t.number}{label}\n{values}" + (f"\n{describe_arch(arch)}" if arch else "")
    return html.escape(text).replace("\n", "<br>")  # plotly reads hover text as HTML


def pareto_figures(study: optuna.Study, cache: CostCache | None = None) -> list[go.Figure]:
    names = _objectives(study)
    feasible = _feasible(study)
    front = {t.number for t in _front(study)}
    figures = []
    for i, j in itertools.combinations(range(len(names)), 2):
        x_name, y_name = names[j], names[i]  # accuracy (first objective, usually) on the y axis
        fig = go.Figure()
        for on_front, label, color in ((False, "trials", "#9aa5b1"), (True, "Pareto front", "#d62728")):
            # a warm-start design on the front is a red point inside its diamond (drawn below)
            chosen = [
                t
                for t in feasible
                if (t.number in front) == on_front and (on_front or not t.user_attrs.get("warm_start"))
            ]
            fig.add_trace(
                go.Scatter(
                    x=[t.values[j] for t in chosen],
                    y=[t.values[i] for t in chosen],
                    mode="markers",
                    name=label,
                    marker={"color": color, "size": 9 if on_front else 6},
                    text=[_hover(t, names) for t in chosen],
                    hovertemplate="%{text}<extra></extra>",
                )
            )
        warm = [t for t in feasible if t.user_attrs.get("warm_start")]
        if warm:  # the published designs the study started from, trained on this task: its axes
            fig.add_trace(
                go.Scatter(
                    x=[t.values[j] for t in warm],
                    y=[t.values[i] for t in warm],
                    mode="markers+text",
                    name="warm start (published designs)",
                    marker={"symbol": "diamond-open", "size": 14, "color": "#1f77b4", "line": {"width": 2}},
                    text=[t.user_attrs["warm_start"] for t in warm],
                    hovertext=[_hover(t, names) for t in warm],
                    textposition="bottom center",
                    textfont={"size": 9},
                    hovertemplate="%{hovertext}<extra></extra>",
                )
            )
        # the zoo only where both axes are costs: its accuracies are ImageNet figures, not this task's
        zoo_points = _zoo_points(study, x_name, y_name, cache)
        if zoo_points:
            fig.add_trace(
                go.Scatter(
                    x=[p[1] for p in zoo_points],
                    y=[p[2] for p in zoo_points],
                    mode="markers",  # names on hover: two dozen labels in one corner overlap
                    name="zoo (at this input size)",
                    hovertext=[
                        f"{p[0]}<br>{format_value(x_name, p[1])}, {format_value(y_name, p[2])}"
                        for p in zoo_points
                    ],
                    hovertemplate="%{hovertext}<extra></extra>",
                    marker={"symbol": "diamond", "color": "#2ca02c"},
                )
            )
        fig.update_layout(
            title=f"{y_name} ({metric_direction(y_name)}) vs {x_name} ({metric_direction(x_name)})",
            xaxis=_axis(x_name),
            yaxis=_axis(y_name),
            template="plotly_white",
            height=480,
        )
        figures.append(fig)
    return figures


def accuracy_curves_figure(study: optuna.Study) -> go.Figure | None:
    """Validation accuracy per epoch of each Pareto-optimal trial (``None`` when none has a curve)."""
    fig = go.Figure()
    for t in _front(study):
        curve = t.user_attrs.get("accuracy_curve") or []
        if not curve:
            continue
        label = f"trial {t.number}" + (
            f" ({t.user_attrs['warm_start']})" if t.user_attrs.get("warm_start") else ""
        )
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(curve) + 1)),
                y=curve,
                mode="lines+markers",
                name=label,
                hovertemplate=f"{html.escape(label)}<br>epoch %{{x}}: %{{y:.1%}}<extra></extra>",
            )
        )
    if not fig.data:
        return None
    fig.update_layout(
        title="validation accuracy per epoch of the Pareto-optimal trials",
        xaxis={"title": "epoch", "dtick": 1},
        yaxis={"title": "accuracy", "tickformat": ".0%"},
        template="plotly_white",
        height=360,
    )
    return fig


@dataclass(frozen=True)
class Bound:
    """One objective's side of the hypervolume box: ``reference`` (the worst end: a value there
    adds nothing), ``ideal`` (the best end) and why the reference is where it is."""

    objective: str
    reference: float
    ideal: float
    why: str

    def loss(self, value: float) -> float:
        """0 at the ideal, 1 at the reference; clipped to the box."""
        if self.reference == self.ideal:  # a box of no width: every value is as good
            return 0.0
        return min(max((value - self.ideal) / (self.reference - self.ideal), 0.0), 1.0)

    def describe(self) -> str:
        ref = format_value(self.objective, self.reference, percent=True)
        ideal = format_value(self.objective, self.ideal, percent=True) if self.ideal else "0"
        return f"{self.objective} from {ref} ({self.why}) to {ideal}"


def _constraint_limits(study: optuna.Study) -> dict[str, float]:
    """The study's constraint limits, from the space file it stores."""
    text = study.user_attrs.get("space_yaml")
    raw = ((yaml.safe_load(text) or {}).get("experiment") or {}).get("constraints") if text else None
    return {k: float(v) for k, v in (raw or {}).items() if isinstance(v, int | float)}


def hypervolume_box(study: optuna.Study) -> list[Bound] | None:
    """The box the hypervolume is a fraction of (``None`` for a single objective or no trained
    trial). Accuracy: from chance level (1/classes; 0 when the classes are unknown) to 1. A cost:
    from its constraint limit where the study has one, else 1.1 x the largest value among the
    trained trials, to 0. Anything else (zero-cost proxies): the trained trials' range."""
    feasible = _feasible(study)
    if len(study.directions) < 2 or not feasible:
        return None
    limits = _constraint_limits(study)
    bounds = []
    for k, (name, direction) in enumerate(zip(_objectives(study), study.directions, strict=True)):
        values = [t.values[k] for t in feasible]
        if name == "accuracy":
            classes = ((feasible[0].user_attrs.get("arch") or {}).get("input") or {}).get("num_classes")
            if classes and classes > 1:
                bounds.append(Bound(name, 1 / classes, 1.0, f"chance level, 1/{classes} classes"))
            else:
                bounds.append(Bound(name, 0.0, 1.0, "0: the number of classes is unknown"))
        elif name in METRICS and name in limits:
            bounds.append(Bound(name, limits[name], 0.0, "the constraint limit"))
        elif name in METRICS:
            bounds.append(Bound(name, 1.1 * max(values), 0.0, "1.1 x the largest among the trained trials"))
        else:
            worst, best = (min(values), max(values))
            if direction == optuna.study.StudyDirection.MINIMIZE:
                worst, best = best, worst
            if worst == best:
                worst -= 1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
            bounds.append(Bound(name, worst, best, "the worst trained trial; ideal: the best"))
    return bounds


def hypervolume_history(study: optuna.Study) -> tuple[list[int], list[float]] | None:
    """Trial numbers and the hypervolume of the trained, distinct, feasible trials up to each, as
    a fraction of the ``hypervolume_box`` (0: nothing better than the reference point; 1: the ideal)."""
    box = hypervolume_box(study)
    if box is None:
        return None
    # optuna._hypervolume is private (Optuna 5 has no public hypervolume of a point set:
    # plot_hypervolume_history renumbers the trials of the copy it would need)
    from optuna._hypervolume import compute_hypervolume

    numbers: list[int] = []
    volumes: list[float] = []
    front = np.empty((0, len(box)))  # the non-dominated points so far: all the volume depends on
    volume = 0.0
    for t in sorted(_feasible(study), key=lambda t: t.number):
        point = np.asarray([b.loss(v) for b, v in zip(box, t.values, strict=True)])
        if not (front <= point).all(axis=1).any():  # not dominated: the volume grows
            front = np.vstack([front[~(point <= front).all(axis=1)], point])
            volume = float(compute_hypervolume(front, np.ones(len(box)), assume_pareto=True))
        numbers.append(t.number)
        volumes.append(volume)
    return numbers, volumes


def describe_box(box: list[Bound]) -> str:
    """``accuracy from 10.0% (chance level, 1/10 classes) to 100.0%; flops from ... to 0``."""
    return "; ".join(b.describe() for b in box)


def hypervolume_figure(study: optuna.Study) -> go.Figure | None:
    history = hypervolume_history(study)
    box = hypervolume_box(study)
    if history is None or box is None:
        return None
    numbers, volumes = history
    fig = go.Figure(
        go.Scatter(
            x=numbers,
            y=volumes,
            mode="lines+markers",
            line={"shape": "hv"},
            hovertemplate="trial %{x}: %{y:.3f} of the box<extra></extra>",
        )
    )
    fig.update_layout(
        title={
            "text": f"normalised hypervolume (fraction of the box), {basis_note(study)}",
            "subtitle": {"text": "reference point to ideal: " + describe_box(box), "font": {"size": 11}},
        },
        xaxis={"title": "trial"},
        yaxis={"title": "hypervolume", "rangemode": "tozero"},
        margin={"t": 90},
        template="plotly_white",
        height=420,
    )
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


def front_table(study: optuna.Study, csv_name: str) -> str:
    """The Pareto-optimal trials as an HTML table: one row per architecture, objectives (and
    parameters, MACs) in readable units, warm-start label, the architecture in one line."""
    names = _objectives(study)
    costs = [m for m in ("params", "flops") if m not in names]  # always worth a column
    front = _front(study)
    warm = any(t.user_attrs.get(WARM_START_ATTR) for t in front)  # the column only when it says something
    head = ["trial", *names, *costs, *(["warm start"] if warm else []), "architecture"]
    rows = []
    for t in front:
        measured = t.user_attrs.get("costs") or {}
        cells = [f"<td class=num>{t.number}</td>"]
        cells += [
            f"<td class=num>{format_value(n, v, percent=True)}</td>"
            for n, v in zip(names, t.values, strict=True)
        ]
        cells += [
            f"<td class=num>{format_value(m, measured[m]) if measured.get(m) is not None else ''}</td>"
            for m in costs
        ]
        if warm:
            cells.append(f"<td>{html.escape(str(t.user_attrs.get(WARM_START_ATTR) or ''))}</td>")
        arch = t.user_attrs.get("arch")
        cells.append(f"<td class=arch>{html.escape(describe_arch(arch)) if arch else ''}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    link = f'<a href="{html.escape(quote(csv_name))}">{html.escape(csv_name)}</a>'
    if not rows:
        return f"<p>No trained, distinct, feasible trial yet. All trials: {link}</p>"
    return (
        "<table class=front><thead><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + f"</tbody></table><p>{len(rows)} architectures, one row each (duplicates share their "
        f"result), as <code>hvtnas show</code> prints and <code>hvtnas export</code> writes them. "
        f"All trials, with their outcome: {link}</p>"
    )


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:0 16px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.counts{font-size:1.05em;background:#f4f6f8;padding:6px 10px;border-radius:4px}
table.front{border-collapse:collapse;font-size:13px;width:100%}
table.front td,table.front th{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
table.front th{background:#f4f6f8;text-align:left}
td.num{text-align:right;white-space:nowrap} td.arch{overflow-wrap:anywhere}
.note{color:#777}
"""


def write_report(study: optuna.Study, out: Path, cache: CostCache | None = None) -> tuple[Path, Path]:
    """Write ``out`` (HTML, plotly inlined: opens offline) and ``out`` with ``.csv`` (all trials)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    csv_path = out.with_suffix(".csv")
    atomic_write_text(csv_path, frame.to_csv(index=False))  # a crash leaves the old file, never a torn one
    box = hypervolume_box(study)
    history = hypervolume_history(study)
    hv_text = ""
    if box is not None and history is not None:
        hv_text = (
            f"<p>Normalised hypervolume: {history[1][-1]:.3f} of the box (0: nothing better than "
            f"the reference point; 1: every objective at its ideal). Each objective is scaled to "
            f"[0, 1] from its reference point (the worst end of the box) to its ideal: "
            f"{html.escape(describe_box(box))}.</p>"
        )
    importances, notes = importance_figures(study)
    curves = accuracy_curves_figure(study)
    hv = hypervolume_figure(study)
    sections = [
        ("Pareto front", "", pareto_figures(study, cache)),
        ("Pareto-optimal trials", front_table(study, csv_path.name), []),
        ("Accuracy curves of the Pareto-optimal trials", "", [curves] if curves else []),
        ("Hypervolume", hv_text, [hv] if hv else []),
        ("Parameter importances", "", importances),
    ]
    parts: list[str] = []
    first = True
    for title, text, figs in sections:
        if not text and not figs:
            continue
        parts.append(f"<h2>{title}</h2>{text}")
        for fig in figs:
            parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if first else False))
            first = False
    summary = describe_counts(count_outcomes(study.get_trials(deepcopy=False)))
    objectives = ", ".join(
        f"{n} ({d.name.lower()})" for n, d in zip(_objectives(study), study.directions, strict=True)
    )
    body = (
        f"<h1>hvtnas study {html.escape(study.study_name)}</h1>"
        f"<p class=counts>{len(frame)} trials: {html.escape(summary)}.</p>"
        f"<p>Objectives: {html.escape(objectives)}. "
        f"Figures, hypervolume and importances are computed {html.escape(basis_note(study))}; "
        "over-budget trials were never trained and have no accuracy.</p>"
        + "".join(parts)
        + "".join(f"<p class=note>{html.escape(n)}</p>" for n in notes)
    )
    atomic_write_text(
        out,
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(study.study_name)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>",
    )
    return out, csv_path
