"""``hvtnas search`` and ``hvtnas export``: run a study over a search space, export its winners."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hvtnas.cli._common import console, note_storage, print_error, user_errors
from hvtnas.errors import HvtnasError
from hvtnas.io import atomic_write_text, check_name, safe_file_name

if TYPE_CHECKING:  # optuna and torch load when a command runs, not for `hvtnas --help`
    import optuna

    from hvtnas.search import TrialOutcome

DEFAULT_TRIALS = 20


@user_errors
def search_command(
    space: Annotated[Path, typer.Argument(help="A search-space YAML file (see search_spaces/).")],
    trials: Annotated[
        int | None,
        typer.Option(
            min=1, help=f"Total trials the study should hold (resumes toward it; default {DEFAULT_TRIALS})."
        ),
    ] = None,
    more: Annotated[
        int | None,
        typer.Option(
            "--more", min=1, help="Add this many trials to what the study holds now (instead of --trials)."
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds of wall time after which no new trial starts; the running trial finishes, "
            "the command ends (exit 0) and the same command resumes the study.",
        ),
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the space file's name).")] = None,
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage URL (default: SQLite in runs/<study>/).")
    ] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs/<study>/ lives.")] = Path("runs"),
    sampler: Annotated[
        str | None,
        typer.Option(help="nsga2, nsga3, tpe, gp or random (default: the space's, else nsga2/tpe)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler seed (default: the space's).")] = None,
    use_cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Reuse measured costs.")] = True,
    n_jobs: Annotated[
        int, typer.Option(min=1, help="Worker processes on this machine (one per GPU where there are GPUs).")
    ] = 1,
    devices: Annotated[
        str | None,
        typer.Option(
            help="GPUs for the workers, one worker each: '0,1,2,3' (sets --n-jobs to their number)."
        ),
    ] = None,
    heartbeat: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds between heartbeats of a running trial on a database storage (PostgreSQL); "
            "a trial silent for twice that is failed and retried.",
        ),
    ] = 60,
    max_retry: Annotated[
        int, typer.Option(min=0, help="Retries of a trial whose worker died (same parameters).")
    ] = 3,
) -> None:
    """Run (or resume) a multi-objective architecture search; every trial is stored in the study."""
    started = time.time()
    deadline = None if timeout is None else started + timeout
    import optuna
    import yaml

    from hvtnas.costs import CostCache
    from hvtnas.search import SearchRun, load_search_spec, open_study
    from hvtnas.search.dashboard import save_study_figures
    from hvtnas.search.resilience import DeviceLock, count_finished
    from hvtnas.search.storage import check_data, failure_summary
    from hvtnas.search.study import outcome_summary
    from hvtnas.search.warm_start import warm_start_points
    from hvtnas.search.workers import device_key, open_storage, run_storage, run_workers

    if trials is not None and more is not None:
        raise HvtnasError(
            f"--trials {trials} and --more {more}: give one (--trials: the total the study should hold; "
            "--more: trials to add to what it holds)"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_search_spec(space)
    if sampler is not None or seed is not None:
        update = {k: v for k, v in {"name": sampler, "seed": seed}.items() if v is not None}
        try:
            new_sampler = spec.experiment.sampler.model_validate(
                {**spec.experiment.sampler.model_dump(), **update}
            )
        except ValueError as err:
            raise HvtnasError(f"--sampler: {err.errors()[0]['msg']}") from None
        spec.experiment = spec.experiment.model_copy(update={"sampler": new_sampler})
    name = check_name(
        study or space.stem, "study name" if study else f"study name (from {space.name}; use --study)"
    )
    run_dir = runs_dir / name
    check_data(spec)  # a missing data file fails every trial: say so before anything is written
    # a new study's warm-start designs, checked to be points of the space before anything is
    # written (a run folder that holds its study already has them)
    resumed = storage is None and ((run_dir / "study.db").exists() or (run_dir / "journal.log").exists())
    warm_start = [] if resumed else warm_start_points(spec)
    device_list = None
    if devices is not None:
        device_list = [d.strip() for d in devices.split(",")]
        if not all(d.isdigit() for d in device_list):
            raise HvtnasError(f"--devices: expected GPU indices like '0,1,2,3', got {devices!r}")
        if n_jobs not in (1, len(device_list)):
            raise HvtnasError(
                f"--n-jobs {n_jobs} and --devices {devices} disagree: one worker runs per device"
            )
        n_jobs = len(device_list)
        if n_jobs == 1:  # one device: this process is the worker
            os.environ["CUDA_VISIBLE_DEVICES"] = device_list[0]
    storage_url = storage or run_storage(run_dir, n_jobs)
    note_storage(storage_url)
    study_obj = open_study(spec, name, open_storage(storage_url, heartbeat, max_retry), warm_start)
    lock_dir = run_dir / "locks"  # this host's workers: latency is never timed while one trains
    if storage is None:  # the run folder: the space as given and the experiment with its defaults
        atomic_write_text(run_dir / "space.yaml", spec.text)
        atomic_write_text(
            run_dir / "experiment.yaml",
            yaml.safe_dump(spec.experiment.model_dump(mode="json"), sort_keys=False, default_flow_style=None),
        )
    exp = spec.experiment
    objectives = ", ".join(f"{o} ({d})" for o, d in zip(exp.objectives, exp.directions, strict=True))
    before = count_finished(study_obj)  # a crashed trial that was retried counts once
    target = before + more if more is not None else trials if trials is not None else DEFAULT_TRIALS
    where = f"storage {storage}" if storage else str(run_dir)
    earlier = {t.number for t in study_obj.get_trials(deepcopy=False)}
    if target <= before:  # the run still fails the trials of dead workers, as any resume does
        console.print(
            f"study {name!r} already holds {before} trials, --trials {target}: nothing to do "
            "(--more N adds N trials)",
            highlight=False,
        )
    else:
        console.print(
            f"study {name!r}: {before} trials done, running to {target}; objectives {objectives}"
            + (f"; no trial starts after {timeout:g} s" if timeout is not None else ""),
            highlight=False,
        )
    log_file = (run_dir / "search.log").open("a") if storage is None else None

    acc_index = exp.objectives.index("accuracy") if "accuracy" in exp.objectives else None

    def status() -> str:
        front = {t.user_attrs.get("arch_key") for t in study_obj.best_trials}
        text = f"Pareto front {len(front)}"
        if acc_index is not None and study_obj.best_trials:
            text += f", best accuracy {max(t.values[acc_index] for t in study_obj.best_trials):.4f}"
        return text

    def line(outcome: TrialOutcome) -> str:
        text = outcome.describe(exp.objectives)
        if log_file is not None:  # runs/<study>/search.log keeps every trial's line
            log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
            log_file.flush()
        return text

    if n_jobs > 1:
        sampler_override = {k: v for k, v in {"name": sampler, "seed": seed}.items() if v is not None}
        run_workers(
            n_jobs,
            {
                "space": str(space),
                "study": name,
                "storage": storage_url,
                "trials": target,
                "use_cache": use_cache,
                "sampler": sampler_override,
                "heartbeat": heartbeat,
                "max_retry": max_retry,
                "lock_dir": str(lock_dir),
                "deadline": deadline,
            },
            devices=device_list,
        )
    else:
        cache = CostCache() if use_cache else None
        resilience = {"max_retry": max_retry, "device_lock": DeviceLock(lock_dir, device_key())}
        if console.is_terminal:  # a live bar on a terminal, one plain line per trial in logs
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = [
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),  # from this run's pace (trials resumed from before do not count)
            ]
            with Progress(*columns, console=console) as progress:
                task = progress.add_task(status(), total=target, completed=before)

                def on_trial(outcome: TrialOutcome) -> None:
                    progress.console.print(line(outcome), highlight=False)
                    progress.update(task, completed=run.finished(), description=status())

                def on_start(number: int) -> None:
                    progress.update(task, description=f"trial {number} running | {status()}")

                run = SearchRun(
                    spec, study_obj, cache=cache, on_trial=on_trial, on_trial_start=on_start, **resilience
                )
                run.run(target, deadline=deadline)
        else:

            def on_trial(outcome: TrialOutcome) -> None:
                console.print(f"{line(outcome)}  [dim]{status()}[/]", highlight=False)
                sys.stdout.flush()

            run = SearchRun(spec, study_obj, cache=cache, on_trial=on_trial, **resilience)
            run.run(target, deadline=deadline)
    if log_file is not None:
        log_file.close()
    save_study_figures(study_obj)  # what `hvtnas dashboard` shows beside Optuna's own plots
    held = count_finished(study_obj)
    if deadline is not None and held < target and time.time() >= deadline:
        console.print(
            f"stopped at --timeout {timeout:g} s with {held} of {target} trials (no trial is cut short); "
            "rerun to go on: the study resumes where it stopped",
            highlight=False,
        )
    console.print(f"done: study {name!r} ({where}) holds {outcome_summary(study_obj)}", highlight=False)
    this_run = [t for t in study_obj.get_trials(deepcopy=False) if t.number not in earlier]
    summary = failure_summary(study_obj, this_run)
    if summary is not None:  # nothing to show for it: not a success
        print_error(summary)
        raise typer.Exit(code=1)


def _load_study(run: Path | None, storage: str | None, study: str | None) -> optuna.Study:
    return _load_study_and_storage(run, storage, study)[0]


def _load_study_and_storage(
    run: Path | None, storage: str | None, study: str | None
) -> tuple[optuna.Study, str | optuna.storages.BaseStorage]:
    """The study of a run folder (its study.db) or of a storage URL; the only one unless named."""
    import optuna

    from hvtnas.search.workers import open_storage, run_storage

    if storage is None:
        if run is None or not ((run / "study.db").is_file() or (run / "journal.log").is_file()):
            raise HvtnasError(
                f"{run}: not a run folder (no study.db or journal.log); give runs/<study> or --storage"
            )
        storage = run_storage(run)
    storage = open_storage(storage)
    try:
        names = optuna.get_all_study_names(storage)
    except Exception as err:  # driver / connection errors
        raise HvtnasError(f"cannot open storage {storage!r}: {type(err).__name__}: {err}") from None
    if study is None:
        if len(names) != 1:
            raise HvtnasError(f"the storage holds studies {names}; choose one with --study")
        study = names[0]
    elif study not in names:
        raise HvtnasError(f"no study {study!r} in the storage; studies: {', '.join(names)}")
    return optuna.load_study(study_name=study, storage=storage), storage


@user_errors
def report_command(
    run: Annotated[Path | None, typer.Argument(help="A run folder runs/<study> (or use --storage).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL instead of a run folder.")] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name (default: the only one in the storage).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="HTML file (default: <run>/report.html).")] = None,
    use_cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse measured costs (zoo points).")
    ] = True,
) -> None:
    """Write a self-contained HTML report (Pareto fronts, hypervolume, importances, best trials) and a CSV."""
    from hvtnas.costs import CostCache
    from hvtnas.report import write_report  # plotly and pandas only when a report is asked for

    study_obj = _load_study(run, storage, study)
    default = Path(f"{safe_file_name(study_obj.study_name)}_report.html")
    target = out or (run / "report.html" if run is not None else default)
    html_path, csv_path = write_report(study_obj, target, cache=CostCache() if use_cache else None)
    console.print(f"{html_path}\n{csv_path}", highlight=False)


@user_errors
def export_command(
    run: Annotated[Path | None, typer.Argument(help="A run folder runs/<study> (or use --storage).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL instead of a run folder.")] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name (default: the only one in the storage).")
    ] = None,
    pareto: Annotated[
        bool, typer.Option("--pareto", help="The Pareto-optimal trials (the default).")
    ] = False,
    trial: Annotated[int | None, typer.Option(help="One trial by number.")] = None,
    top: Annotated[int | None, typer.Option(min=1, help="The best K trials by --by.")] = None,
    by: Annotated[str, typer.Option(help="Objective that ranks --top.")] = "accuracy",
    out: Annotated[Path | None, typer.Option(help="Folder for the configs (default: <run>/exports).")] = None,
    card: Annotated[
        bool, typer.Option("--card", help="Also a model card (<name>.md): costs, accuracy, recipe, study.")
    ] = False,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Also <name>.onnx, checked with onnxruntime (extra 'export').")
    ] = False,
    safetensors: Annotated[
        bool, typer.Option("--safetensors", help="Also the initial (untrained, seeded) weights.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights (--onnx, --safetensors).")] = 0,
) -> None:
    """Write trials as architecture configs (with their costs and metrics as metadata)."""
    from hvtnas.costs import CostCache
    from hvtnas.search import export_trials, select_trials

    study_obj = _load_study(run, storage, study)
    chosen = select_trials(study_obj, pareto=pareto, trial=trial, top=top, by=by)
    if not chosen:
        raise HvtnasError(f"study {study_obj.study_name!r} has no completed trial to export")
    target = out or (
        run / "exports" if run is not None else Path("exports") / safe_file_name(study_obj.study_name)
    )
    which = {k for k, on in {"card": card, "onnx": onnx, "safetensors": safetensors}.items() if on}
    for t, path in zip(chosen, export_trials(study_obj, chosen, target), strict=True):
        console.print(str(path), highlight=False)
        if which:
            from hvtnas.search.export_files import export_trial_files

            for extra in export_trial_files(study_obj, t, path, which, seed=seed, cache=CostCache()).values():
                console.print(str(extra), highlight=False)


@user_errors
def dashboard_command(
    run: Annotated[Path | None, typer.Argument(help="A run folder runs/<study> (or use --storage).")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL instead of a run folder.")] = None,
    study: Annotated[
        str | None, typer.Option(help="Study whose figures to refresh (default: the only one).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to serve on (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8080,
) -> None:
    """Serve optuna-dashboard for the study: Pareto fronts, per-trial architecture notes, hvtnas figures."""
    from optuna_dashboard import run_server

    from hvtnas.search.dashboard import save_study_figures

    study_obj, opened = _load_study_and_storage(run, storage, study)
    save_study_figures(study_obj)
    console.print(
        f"dashboard of study {study_obj.study_name!r}: http://{host}:{port}/dashboard (Ctrl+C stops)"
    )
    sys.stdout.flush()
    run_server(opened, host=host, port=port)  # the run folder's own storage (SQLite or journal)
