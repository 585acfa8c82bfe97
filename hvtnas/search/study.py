"""``run_search``: an Optuna multi-objective study over a search space, with what NAS needs on top.

Per trial: sample an architecture; reuse the result of an identical architecture evaluated
before; measure its costs (cached); check the constraints *before* training (an architecture over
budget is never trained; its infeasibility goes to the sampler through ``trial.set_constraint``);
proxy-train it with multi-objective early stopping; record everything in user attributes
(architecture, costs, accuracy curve, failure reason, wall time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError

from hvtnas.config import ArchConfig, canonical_config, format_validation_error, load_yaml_with_lines
from hvtnas.costs import CostCache, measure_costs
from hvtnas.errors import ConfigError, HvtnasError
from hvtnas.io import read_text
from hvtnas.models import build_model
from hvtnas.search.dashboard import save_trial_note
from hvtnas.search.display import format_value
from hvtnas.search.experiment import PROXY_PREFIX, ExperimentConfig
from hvtnas.search.outcome import (
    DUPLICATE,
    FAILED,
    INHERITED,
    OUTCOME_ATTR,
    OVER_BUDGET,
    SCORED,
    STOPPED_EARLY,
    TRAINED,
    WARM_START_ATTR,
    count_outcomes,
    describe_counts,
    trial_outcome,
)
from hvtnas.search.outcome import TIMEOUT as TIMED_OUT
from hvtnas.search.resilience import (
    WORKER_ATTR,
    DeviceLock,
    Heartbeat,
    count_finished,
    fail_own_running,
    fail_stale,
    fault_point,
    worker_id,
)
from hvtnas.search.sampling import is_generational
from hvtnas.search.warm_start import WarmStartPoint, enqueue_warm_start, warm_start_points
from hvtnas.space import SearchSpace
from hvtnas.train import ImageData, load_dataset, train_proxy
from hvtnas.train.proxies import score_model
from hvtnas.train.trainer import EpochReport, adapt_arch_to_data

log = logging.getLogger(__name__)
T = TypeVar("T")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
TIMEOUT = "timeout"  # the reason of a trial failed for taking longer than experiment.trial_timeout
HARD_TIMEOUT_EXIT = 75  # exit status of a worker that abandoned a trial hung past 2 x trial_timeout
EVALUATING_ATTR = "evaluating"  # set once a trial has passed the in-flight duplicate check
POLL_SECONDS = 1.0  # how often a trial waiting for a running twin looks at the study
SAMPLING_POLL_SECONDS = 0.2  # ... and while a lower-numbered trial is still sampling (a short wait)
SAMPLING_WAIT = 120.0  # longest wait for a lower-numbered trial that has not published its architecture
DUPLICATE_WAIT = 3600.0  # longest wait for a running twin when the experiment sets no trial_hard_timeout


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


class SearchError(HvtnasError):
    """The search cannot start or go on (bad storage, a study created from another space, ...)."""


@dataclass
class SearchSpec:
    """A search-space file: the architecture space, the experiment, and the file's text."""

    space: SearchSpace
    experiment: ExperimentConfig
    text: str
    path: Path


def load_search_spec(path: str | Path) -> SearchSpec:
    path = Path(path)
    return parse_search_spec(read_text(path, "search space"), path)


def parse_search_spec(text: str, path: Path) -> SearchSpec:
    """A search-space file's text (``path`` names it in messages), e.g. the one a study stores."""
    data, lines = load_yaml_with_lines(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level"])
    raw_experiment = data.pop("experiment", {}) or {}
    try:
        experiment = ExperimentConfig.model_validate(raw_experiment)
    except ValidationError as err:
        problems = format_validation_error(err, str(path), lines, loc_prefix=("experiment",))
        raise ConfigError(problems, str(path), what="search space") from None
    lines = {k: v for k, v in lines.items() if k[:1] != ("experiment",)}
    return SearchSpec(SearchSpace(data, str(path), lines), experiment, text, path)


def arch_key(cfg: ArchConfig) -> str:
    """Identity of an architecture for duplicate detection (name and regularisation ignored)."""
    return hashlib.sha256(json.dumps(canonical_config(cfg), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrialOutcome:
    number: int
    state: TrialState
    values: list[float] | None = None
    reason: str | None = None
    outcome: str = TRAINED  # hvtnas.search.outcome: trained, over_budget, duplicate, ...
    measured: bool = True  # False: the values hold a placeholder accuracy (over budget)
    warm_start: str | None = None  # the zoo family an enqueued warm-start trial came from

    def describe(self, objectives: Sequence[str] = ()) -> str:
        """One line for the terminal and search.log: what became of the trial, values only
        where they were measured (never the placeholder accuracy of an untrained trial), in
        their units when the ``objectives`` are given (``accuracy 0.8123, flops 3.61 MMACs``)."""
        label = f" (warm start {self.warm_start})" if self.warm_start else ""
        text = f"trial {self.number}{label}: {self.outcome.replace('_', ' ')}"
        if self.values and self.measured and self.state == TrialState.COMPLETE:
            if len(objectives) == len(self.values):
                text += " " + ", ".join(
                    f"{m} {format_value(m, v)}" for m, v in zip(objectives, self.values, strict=True)
                )
            else:
                text += " " + ", ".join(f"{v:.4g}" for v in self.values)
        return text + (f" ({self.reason})" if self.reason else "")


def outcome_summary(study: optuna.Study) -> str:
    """``20 trials: 12 trained, 3 stopped early, 4 over budget, 1 duplicate``."""
    trials = study.get_trials(deepcopy=False)
    return f"{len(trials)} trials: {describe_counts(count_outcomes(trials))}"


def space_dataset(spec: SearchSpec) -> ImageData:
    """The experiment's dataset at the space's input channels and resolution."""
    inp = spec.space.tree.get("input", {})
    channels, resolution = inp.get("channels", 3), inp.get("resolution", 224)
    if not (isinstance(channels, int) and isinstance(resolution, int)):
        raise SearchError("input.channels and input.resolution must be fixed values in a search space")
    return load_dataset(spec.experiment.data.for_arch(channels, resolution))


@dataclass
class SearchRun:
    """One worker's loop over a study. ``run`` evaluates trials until the study holds ``trials``
    finished ones (complete, pruned or failed), so rerunning the same command resumes."""

    spec: SearchSpec
    study: optuna.Study
    cache: CostCache | None = None
    on_trial: Callable[[TrialOutcome], None] | None = None
    on_trial_start: Callable[[int], None] | None = None  # receives the trial number
    max_retry: int | None = 3  # retries of a trial whose worker died (stale heartbeat, dead process)
    device_lock: DeviceLock = field(default_factory=lambda: DeviceLock(None))
    data: ImageData | None = field(default=None, init=False)
    # strategy one_shot: the trained supernet (default: the checkpoint the study records)
    supernet_checkpoint: Path | None = None
    _inherited: Any = field(default=None, init=False)  # InheritedEvaluator, loaded on first use

    def finished(self) -> int:
        """Trials that count towards the total (a crashed trial that was retried counts once)."""
        return count_finished(self.study)

    def run(self, trials: int, deadline: float | None = None) -> list[TrialOutcome]:
        """Evaluate trials until the study holds ``trials`` finished ones or, with ``deadline``
        (a ``time.time()``), until it has passed: no trial starts after it; the running one
        finishes and is recorded, so the study resumes where it stopped."""
        outcomes = []
        while True:
            stale = fail_stale(self.study, self.max_retry)  # at start and between trials
            if stale:
                log.warning("failed trials of dead workers (retried): %s", stale)
            if self.finished() >= trials or (deadline is not None and time.time() >= deadline):
                break
            try:
                outcomes.append(self.run_one())
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the running trial fails now, with why
                fail_own_running(self.study, "interrupted (Ctrl-C or SIGTERM); retried", self.max_retry)
                raise
            fault_point("after_trial")
            if self.on_trial is not None:
                self.on_trial(outcomes[-1])
        return outcomes

    # ------------------------------------------------------------------------- one trial
    def _dataset(self) -> ImageData:
        if self.data is None:
            self.data = space_dataset(self.spec)
        return self.data

    def run_one(self) -> TrialOutcome:
        exp = self.spec.experiment
        with warnings.catch_warnings():  # "heartbeat is meant for optimize": ours is in Heartbeat
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask()
        fault_point("after_ask")
        if self.on_trial_start is not None:
            self.on_trial_start(trial.number)
        started = time.perf_counter()
        watchdog = self._watchdog(trial)
        with Heartbeat(self.study, trial):
            trial.set_user_attr(WORKER_ATTR, worker_id())  # lets a rerun on this host see it died
            retry_of = self.study._storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
            if retry_of is not None:  # a dead worker's trial, run again with its parameters
                trial.set_user_attr("retry_of", retry_of)
            try:
                outcome = self._evaluate(trial, exp, started)
            except HvtnasError as err:  # a bad sample: recorded, the study goes on
                outcome = TrialOutcome(trial.number, TrialState.FAIL, reason=str(err), outcome=FAILED)
            except Exception as err:  # a bug or a broken library inside one trial: fail it, go on
                log.exception("trial %d raised", trial.number)
                outcome = TrialOutcome(
                    trial.number,
                    TrialState.FAIL,
                    reason=f"{type(err).__name__}: {_first_line(err)}",
                    outcome=FAILED,
                )
            trial.set_user_attr("wall_seconds", time.perf_counter() - started)
            trial.set_user_attr(OUTCOME_ATTR, outcome.outcome)
            outcome.warm_start = trial.user_attrs.get(WARM_START_ATTR)
            if outcome.reason:
                trial.set_user_attr("reason", outcome.reason)
            if "arch" in trial.user_attrs:  # the dashboard's note: architecture, costs, curve, reason
                try:
                    arch = ArchConfig.model_validate(trial.user_attrs["arch"])
                    save_trial_note(trial, arch, trial.user_attrs)
                except Exception as err:  # a note is a nicety: never lose the trial for it
                    log.warning("trial %d: no dashboard note (%s)", trial.number, err)
            if watchdog is not None:
                watchdog.cancel()
            self.study.tell(trial, outcome.values, state=outcome.state)
        return outcome

    def _watchdog(self, trial: optuna.Trial) -> threading.Timer | None:
        """The hard limit: a trial still running at ``trial_hard_timeout`` (default 2 x
        ``trial_timeout``) is stuck inside an epoch (the soft limit is checked between epochs). A
        thread cannot be stopped safely, so the trial is failed with its reason and this process
        ends (exit 75); ``--n-jobs`` restarts it."""
        limit = self.spec.experiment.hard_timeout
        if limit is None:
            return None
        timer = threading.Timer(limit, self._abandon, args=(trial, limit))
        timer.daemon = True
        timer.start()
        return timer

    def _abandon(self, trial: optuna.Trial, limit: float) -> None:
        reason = f"{TIMEOUT}: still running after {limit:g} s (trial_hard_timeout); its worker process ended"
        storage = self.study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, "reason", reason)
            storage.set_trial_user_attr(trial._trial_id, OUTCOME_ATTR, TIMED_OUT)
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # it finished meanwhile (or the storage is gone): nothing to abandon
            return
        print(f"trial {trial.number}: {reason}", file=sys.stderr, flush=True)
        os._exit(HARD_TIMEOUT_EXIT)

    def _evaluate(self, trial: optuna.Trial, exp: ExperimentConfig, started: float) -> TrialOutcome:
        data = self._dataset()
        # The architecture keeps the space's input resolution: its costs are measured and it is
        # exported at that size. Only training sees the data's (proxy) resolution (train_proxy
        # adapts it), which may be lower to make trials cheap.
        arch = adapt_arch_to_data(self.spec.space.sample(trial), data, keep_resolution=True)
        if data.resolution != arch.input.resolution:
            trial.set_user_attr("proxy_resolution", data.resolution)
        key = arch_key(arch)
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_key", key)

        waited = self._await_running_twin(trial, key)
        if waited:
            trial.set_user_attr("waited_seconds", waited)
        earlier = self._same_architecture(key, trial.number)
        if earlier is not None:  # identical architecture: same result, not trained again
            return self._reuse(trial, earlier, waited)
        trial.set_user_attr(EVALUATING_ATTR, True)  # twins sampled from now on wait for this trial

        if exp.costs.latency is not None:  # never timed while this host's other workers train
            with self.device_lock.exclusive():
                costs = measure_costs(arch, exp.costs, cache=self.cache)
        else:
            costs = measure_costs(arch, exp.costs, cache=self.cache)
        trial.set_user_attr("costs", costs.model_dump(mode="json"))
        constraints, violations = {}, []
        for name, limit in exp.constraints.items():
            value = costs.metric(name)
            constraints[name] = (value - limit) / limit  # <= 0 feasible; scale-free for the sampler
            trial.set_constraint(name, constraints[name])
            if value > limit:
                violations.append(f"{name} {value:.4g} > {limit:.4g}")
        trial.set_user_attr("constraints", constraints)
        cost_values = {m: costs.metric(m) for m in exp.cost_objectives}
        trial.set_user_attr("cost_objectives", cost_values)

        proxy_scores: dict[str, float] = {}
        proxies = [m.removeprefix(PROXY_PREFIX) for m in exp.objectives if m.startswith(PROXY_PREFIX)]
        if proxies:  # one batch, no training: cheap enough to score over-budget samples too
            x, y = data.sample_batch(exp.proxy_batch_size, seed=exp.train.seed)
            proxy_scores = score_model(
                build_model(adapt_arch_to_data(arch, data)), x, y, proxies, seed=exp.train.seed
            )
            trial.set_user_attr("proxies", proxy_scores)

        if violations:  # over budget: never trained; worst accuracy, true costs
            # Recorded COMPLETE so that the sampler sees its constraints and learns where the
            # budget ends; the accuracy 0 is a placeholder for the sampler only: the outcome
            # `over_budget` keeps it out of every display, the importances and the hypervolume.
            trial.set_user_attr("constraint_violations", violations)
            values = [self._value(m, 0.0, cost_values, proxy_scores) for m in exp.objectives]
            return TrialOutcome(
                trial.number,
                TrialState.COMPLETE,
                values,
                reason="not trained: " + "; ".join(violations),
                outcome=OVER_BUDGET,
                measured=False,
            )

        accuracy, stopped = None, None
        if exp.strategy == "one_shot":  # inherited weights: no training, no early stopping
            with self.device_lock.training():  # never timed against: it computes as training does
                evaluation = self._inherited_evaluator().evaluate(arch)
            trial.set_user_attr("inherited", evaluation)
            accuracy = evaluation["val_accuracy"]
            values = [self._value(m, accuracy, cost_values, proxy_scores) for m in exp.objectives]
            return TrialOutcome(trial.number, TrialState.COMPLETE, values, outcome=INHERITED)
        if "accuracy" in exp.objectives:
            on_epoch = self._with_timeout(self._early_stopping(trial, cost_values), started)
            with self.device_lock.training():
                result = train_proxy(arch, data, exp.train, on_epoch=on_epoch)
            trial.set_user_attr("training", result.to_dict())
            trial.set_user_attr("accuracy_curve", result.accuracy_curve)
            if result.status == "failed" or (result.reason or "").startswith(TIMEOUT):
                what = TIMED_OUT if (result.reason or "").startswith(TIMEOUT) else FAILED
                return TrialOutcome(trial.number, TrialState.FAIL, reason=result.reason, outcome=what)
            if result.status == "stopped":
                if not self._generational:
                    return TrialOutcome(
                        trial.number, TrialState.PRUNED, reason=result.reason, outcome=STOPPED_EARLY
                    )
                # NSGA-II/III build generations from complete trials only: with many trials
                # stopped, generation 0 (random) would never fill. Recorded complete with the
                # accuracy it had when stopped, it is dominated by the trial that stopped it
                # (no more cost, higher accuracy at that epoch), so it never reaches the front.
                trial.set_user_attr("stopped_early", True)
                stopped = result.reason
            accuracy = result.val_accuracy
        values = [self._value(m, accuracy, cost_values, proxy_scores) for m in exp.objectives]
        if any(not math.isfinite(v) for v in values):
            return TrialOutcome(
                trial.number, TrialState.FAIL, reason=f"non-finite objective values {values}", outcome=FAILED
            )
        done = STOPPED_EARLY if stopped else TRAINED if "accuracy" in exp.objectives else SCORED
        return TrialOutcome(trial.number, TrialState.COMPLETE, values, reason=stopped, outcome=done)

    def _inherited_evaluator(self) -> Any:
        if self._inherited is None:
            from hvtnas.search.one_shot.strategy import SUPERNET_ATTR, InheritedEvaluator

            checkpoint = self.supernet_checkpoint or self.study.user_attrs.get(SUPERNET_ATTR)
            if checkpoint is None:
                raise SearchError(
                    f"study {self.study.study_name!r} is one-shot but records no trained supernet; "
                    "`hvtnas search` trains it before the first trial"
                )
            self._inherited = InheritedEvaluator(self.spec, self._dataset(), Path(checkpoint))
        return self._inherited

    @property
    def _generational(self) -> bool:
        return is_generational(self.study.sampler)

    def _reuse(self, trial: optuna.Trial, earlier: optuna.trial.FrozenTrial, waited: float) -> TrialOutcome:
        """The result of ``earlier``, an identical architecture evaluated before (or meanwhile)."""
        trial.set_user_attr("duplicate_of", earlier.number)
        copied = ("costs", "cost_objectives", "accuracy_curve", "constraint_violations", "stopped_early")
        for name in copied:
            if name in earlier.user_attrs:
                trial.set_user_attr(name, earlier.user_attrs[name])
        for name, value in earlier.user_attrs.get("constraints", {}).items():
            trial.set_constraint(name, value)
        trial.set_user_attr("constraints", earlier.user_attrs.get("constraints", {}))
        reason = f"duplicate of trial {earlier.number}"
        if waited:
            reason += f", waited {waited:.0f} s for it to finish"
        what = trial_outcome(earlier)
        if what not in (TRAINED, INHERITED, SCORED, DUPLICATE):
            reason += f" ({what.replace('_', ' ')})"
        reason += ": result reused"
        if earlier.state == TrialState.PRUNED:  # stopped early: stopped again, nothing to tell
            return TrialOutcome(trial.number, TrialState.PRUNED, reason=reason, outcome=DUPLICATE)
        measured = not earlier.user_attrs.get("constraint_violations")
        return TrialOutcome(
            trial.number, TrialState.COMPLETE, list(earlier.values), reason, DUPLICATE, measured=measured
        )

    def _await_running_twin(self, trial: optuna.Trial, key: str) -> float:
        """Wait while another worker evaluates the same architecture; returns the seconds waited.

        The rule (Lamport's bakery, with trial numbers as tickets): among running trials of one
        architecture the lowest-numbered is evaluated and the others wait for its result. A trial
        therefore first waits for lower-numbered running trials that have not yet published their
        architecture (``arch_key``; they are sampling, at most ``SAMPLING_WAIT`` s), then for every
        running twin that has a lower number or already started evaluating (a retried trial keeps
        its old, lower number). A twin whose worker dies is failed by ``fail_stale`` (heartbeat or
        dead local process) and stops blocking; the wait ends at ``trial_hard_timeout`` (else
        ``DUPLICATE_WAIT``) in any case. When the twin ends complete or stopped its result is
        reused; when it failed, this trial evaluates the architecture itself."""
        started = time.monotonic()
        exp = self.spec.experiment
        limit = exp.hard_timeout or DUPLICATE_WAIT
        waited = 0.0
        while True:
            running = [
                t
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.number != trial.number
            ]
            sampling = [t for t in running if t.number < trial.number and "arch_key" not in t.user_attrs]
            twins = [
                t
                for t in running
                if t.user_attrs.get("arch_key") == key
                and (t.number < trial.number or t.user_attrs.get(EVALUATING_ATTR))
            ]
            elapsed = time.monotonic() - started
            if twins:
                waited = elapsed
                if elapsed > limit:
                    log.warning("trial %d: stopped waiting for trial %d", trial.number, twins[0].number)
                    return waited
            elif not sampling or elapsed > SAMPLING_WAIT:
                return waited
            time.sleep(POLL_SECONDS if twins else SAMPLING_POLL_SECONDS)
            if twins:  # a dead twin must not block: fail it (stale heartbeat, dead local process)
                fail_stale(self.study, self.max_retry, running=trial.number)

    @staticmethod
    def _value(
        metric: str, accuracy: float | None, costs: dict[str, float], proxies: dict[str, float]
    ) -> float:
        if metric == "accuracy":
            return float(accuracy)
        if metric.startswith(PROXY_PREFIX):
            return float(proxies[metric.removeprefix(PROXY_PREFIX)])
        return costs[metric]

    def _same_architecture(self, key: str, number: int) -> optuna.trial.FrozenTrial | None:
        """A finished trial of the same architecture: complete, else stopped early (pruned)."""
        states = (TrialState.COMPLETE, TrialState.PRUNED)
        twins = [
            t
            for t in self.study.get_trials(deepcopy=False, states=states)
            if t.number != number and t.user_attrs.get("arch_key") == key
        ]
        twins.sort(key=lambda t: (t.state != TrialState.COMPLETE, t.number))
        return twins[0] if twins else None

    def _with_timeout(
        self, on_epoch: Callable[[EpochReport], str | None], started: float
    ) -> Callable[[EpochReport], str | None]:
        """Stop (and so fail) the trial after the first epoch that ends past ``trial_timeout``."""
        limit = self.spec.experiment.trial_timeout

        def check(report: EpochReport) -> str | None:
            elapsed = time.perf_counter() - started
            if limit is not None and elapsed > limit:
                return f"{TIMEOUT}: {elapsed:.1f} s > trial_timeout {limit:g} s after epoch {report.epoch}"
            return on_epoch(report)

        return check

    def _early_stopping(
        self, trial: optuna.Trial, costs: dict[str, float]
    ) -> Callable[[EpochReport], str | None]:
        """Optuna cannot prune multi-objective studies (optuna/optuna#3450): stop a trial whose
        accuracy at an epoch is beaten, at that epoch, by a completed trial that costs no more, by
        more than the margin (default: the validation accuracy's sampling noise); never after the
        trial's last epoch, when stopping would save nothing."""
        rule = self.spec.experiment.early_stopping
        if trial.user_attrs.get(WARM_START_ATTR):  # a published design is what the search is
            rule = None  # measured against: always trained to the end
        last_epoch = self.spec.experiment.train.epochs
        n_val = self._dataset().num_val

        def on_epoch(report: EpochReport) -> str | None:
            trial.set_user_attr("epochs_done", report.epoch)
            if rule is None or report.epoch < rule.min_epoch or report.epoch >= last_epoch:
                return None
            for other in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                curve = other.user_attrs.get("accuracy_curve") or []
                other_costs = other.user_attrs.get("cost_objectives")
                if (
                    len(curve) < report.epoch
                    or other_costs is None
                    or other.user_attrs.get("constraint_violations")
                ):
                    continue
                cheaper = all(other_costs[m] <= value for m, value in costs.items())
                better = curve[report.epoch - 1]
                margin = rule.margin_for(better, n_val)
                if cheaper and better - report.val_accuracy > margin:
                    kind = "set" if rule.margin is not None else f"noise on {n_val} images"
                    return (
                        f"stopped at epoch {report.epoch} of {last_epoch}: trial {other.number} had accuracy "
                        f"{better:.4f} > {report.val_accuracy:.4f} + margin {margin:.4f} ({kind}) "
                        "at no more cost"
                    )
            return None

        return on_epoch


RECIPE_ATTR = "recipe"  # study user attribute: the data and training recipe, what exports retrain with


def search_recipe(spec: SearchSpec) -> dict[str, Any]:
    """The data and training settings of the search, as ``hvtnas train`` takes them. A relative
    data path is made absolute: the search read it relative to its working directory."""
    exp = spec.experiment
    data = exp.data
    if data.path is not None and not data.path.is_absolute():
        data = data.model_copy(update={"path": data.path.resolve()})
    return {
        "space": str(spec.path.resolve()),
        "data": data.model_dump(mode="json"),
        "train": exp.train.model_dump(mode="json"),
    }


def _on_storage(storage: str | optuna.storages.BaseStorage, call: Callable[[], T]) -> T:
    """``call()``, with the storage's failures (driver missing, server unreachable, bad path or
    URL) turned into one ``SearchError`` line."""
    try:
        return call()
    except ImportError as err:
        raise SearchError(
            f"cannot open storage {storage!r}: {err} (for PostgreSQL: pip install 'hvtnas[postgres]' "
            "and a postgresql+psycopg:// URL)"
        ) from None
    except Exception as err:  # sqlalchemy / driver errors
        if isinstance(err, HvtnasError):
            raise
        raise SearchError(
            f"cannot open storage {storage!r}: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from None


def open_study(
    spec: SearchSpec,
    study_name: str,
    storage: str | optuna.storages.BaseStorage,
    warm_start: list[WarmStartPoint] | None = None,
) -> optuna.Study:
    """Create the study, or load it if it exists and was created from the same space file. A new
    study starts with its warm-start designs (``warm_start_points(spec)`` unless given: worked
    out, and checked to be points of the space, before the storage is touched)."""
    exp = spec.experiment
    warm = warm_start_points(spec) if warm_start is None else warm_start
    study = _on_storage(
        storage,
        lambda: optuna.create_study(
            study_name=study_name,
            storage=storage,
            directions=exp.directions,
            sampler=exp.sampler.build(len(exp.objectives)),
            load_if_exists=True,
        ),
    )
    stored_text = study.user_attrs.get("space_yaml")
    if stored_text is None:
        study.set_user_attr("space_yaml", spec.text)
        study.set_user_attr("objectives", exp.objectives)
        study.set_user_attr(RECIPE_ATTR, search_recipe(spec))
        with warnings.catch_warnings():  # experimental in Optuna, but what the dashboard labels axes with
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(exp.objectives)
        # workers creating the study at the same time from different files: the last write wins,
        # and every other worker sees another text here and is refused below
        stored_text = study._storage.get_study_user_attrs(study._study_id)["space_yaml"]
        if stored_text == spec.text:
            enqueue_warm_start(study, warm)
    if stored_text != spec.text:
        raise SearchError(
            f"study {study_name!r} was created from another version of {spec.path.name}; "
            "use a new --study name, or the file the study was created with "
            "(it is stored in the study: `hvtnas export` reads it back)"
        )
    if [d.name.lower() for d in study.directions] != exp.directions:
        raise SearchError(
            f"study {study_name!r} has directions {study.directions}, the space asks {exp.directions}"
        )
    # counted from the study, so that every worker (and a resumed run) builds the same sampler
    warm_trials = sum(WARM_START_ATTR in t.user_attrs for t in study.get_trials(deepcopy=False))
    if warm_trials:
        study.sampler = exp.sampler.build(len(exp.objectives), warm_trials)
    return study
