"""``hvtnas studies`` and ``hvtnas show``: what the stored studies hold, without loading torch.

Both read the study only (Optuna and the trials' user attributes): they start in a fraction of a
second, also while a search is writing to the same storage.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hvtnas.cli._common import console, print_table, user_errors
from hvtnas.errors import HvtnasError
from hvtnas.search.display import describe_arch, format_value

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def _objectives(study: optuna.Study) -> list[str]:
    return list(study.user_attrs.get("objectives") or study.metric_names or [])


def _run_folders(runs_dir: Path) -> list[Path]:
    """``runs_dir`` itself when it is a run folder, else its subfolders that hold a study."""

    def holds(folder: Path) -> bool:
        return (folder / "study.db").is_file() or (folder / "journal.log").is_file()

    if holds(runs_dir):
        return [runs_dir]
    if not runs_dir.is_dir():
        raise HvtnasError(f"{runs_dir}: no such folder (give a runs folder, or --storage URL)")
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and holds(p))


def _study_row(study: optuna.Study, where: str) -> dict[str, Any]:
    from hvtnas.search.outcome import count_outcomes, has_accuracy

    trials = study.get_trials(deepcopy=False)
    objectives = _objectives(study)
    best = None
    if "accuracy" in objectives:
        index = objectives.index("accuracy")
        accuracies = [t.values[index] for t in trials if has_accuracy(t) and t.values]
        best = max(accuracies, default=None)
    times = [t.datetime_complete or t.datetime_start for t in trials]
    updated = max((x for x in times if x is not None), default=None)
    return {
        "study": study.study_name,
        "where": where,
        "trials": len(trials),
        "outcomes": count_outcomes(trials),
        "objectives": objectives,
        "best_accuracy": best,
        "updated": updated.isoformat(sep=" ", timespec="seconds") if updated else None,
    }


@user_errors
def studies_command(
    runs_dir: Annotated[
        Path, typer.Argument(help="A folder of run folders (runs/<study>/), or one run folder.")
    ] = Path("runs"),
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage URL to list instead of a runs folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list instead of a table.")] = False,
) -> None:
    """List the studies of a runs folder (or of a storage) with their trials counted by outcome."""
    import optuna

    from hvtnas.search.outcome import describe_counts
    from hvtnas.search.workers import open_storage, run_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", storage) if storage else None  # no password
    sources = [(storage, shown)] if storage else [(run_storage(d), str(d)) for d in _run_folders(runs_dir)]
    rows: list[dict[str, Any]] = []
    for url, where in sources:
        try:
            opened = open_storage(url)
            names = optuna.get_all_study_names(opened)
            rows += [_study_row(optuna.load_study(study_name=n, storage=opened), where) for n in names]
        except Exception as err:  # one unreadable run folder must not hide the others
            if storage:
                raise HvtnasError(f"cannot open storage {shown!r}: {type(err).__name__}: {err}") from None
            rows.append({"study": None, "where": where, "error": f"{type(err).__name__}: {err}"})
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        console.print(f"no studies in {shown or runs_dir}", highlight=False)
        return
    from rich.table import Table

    table = Table(title=f"studies in {shown or runs_dir}")
    for col in ("study", "where", "trials", "outcomes", "best accuracy", "last update"):
        table.add_column(col, justify="right" if col in ("trials", "best accuracy") else "left")
    for r in rows:
        if "error" in r:
            table.add_row("?", r["where"], "", f"[red]cannot read: {r['error']}[/]", "", "")
            continue
        best = r["best_accuracy"]
        table.add_row(
            r["study"],
            r["where"],
            str(r["trials"]),
            describe_counts(r["outcomes"]),
            "-" if best is None else f"{best:.4f}",
            r["updated"] or "-",
        )
    print_table(table)


def _trial_row(t: FrozenTrial, objectives: list[str]) -> dict[str, Any]:
    from optuna.trial import TrialState

    from hvtnas.search.outcome import has_accuracy, trial_outcome

    values: dict[str, float] = {}
    if t.state == TrialState.COMPLETE and t.values:
        for metric, value in zip(objectives, t.values, strict=False):
            if metric != "accuracy" or has_accuracy(t):  # never an untrained trial's placeholder 0
                values[metric] = value
    arch = t.user_attrs.get("arch")
    return {
        "trial": t.number,
        "values": values,
        "outcome": trial_outcome(t),
        "warm_start": t.user_attrs.get("warm_start"),
        "architecture": describe_arch(arch) if arch else None,
        "reason": t.user_attrs.get("reason"),
    }


@user_errors
def show_command(
    run: Annotated[Path | None, typer.Argument(help="A run folder runs/<study> (or use --storage).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL instead of a run folder.")] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name (default: the only one in the storage).")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Every trial, not only the Pareto front.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON list instead of a table.")] = False,
) -> None:
    """Print the study's Pareto front: objectives in readable units, outcome, architecture.

    The front holds trained, distinct, feasible trials, as `hvtnas export` selects them."""
    import optuna

    from hvtnas.cli.search import _load_study
    from hvtnas.search.export import select_trials
    from hvtnas.search.outcome import describe_counts

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_obj = _load_study(run, storage, study)
    objectives = _objectives(study_obj)
    trials = study_obj.get_trials(deepcopy=False) if show_all else select_trials(study_obj, pareto=True)
    rows = [_trial_row(t, objectives) for t in trials]
    if as_json:
        print(json.dumps(rows))
        return
    from rich.table import Table

    from hvtnas.search.outcome import count_outcomes

    what = "all trials" if show_all else "Pareto front"
    counts = describe_counts(count_outcomes(study_obj.get_trials(deepcopy=False)))
    table = Table(title=f"study {study_obj.study_name!r}: {what} ({len(rows)}); the study holds {counts}")
    table.add_column("trial", justify="right")
    for metric in objectives:
        table.add_column(metric, justify="right", no_wrap=True)
    table.add_column("outcome")
    table.add_column("architecture")
    for r in rows:
        label = r["outcome"].replace("_", " ")
        if r["warm_start"]:
            label += f" (warm start {r['warm_start']})"
        table.add_row(
            str(r["trial"]),
            *[format_value(m, r["values"][m]) if m in r["values"] else "-" for m in objectives],
            label,
            r["architecture"] or "-",
        )
    if not rows:
        console.print(
            f"study {study_obj.study_name!r} has no trained trial yet (it holds {counts})", highlight=False
        )
        return
    print_table(table)
