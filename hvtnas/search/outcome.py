"""What became of a trial: one word every display (terminal, report, CSV, dashboard, export) uses.

Optuna's states say too little: an over-budget architecture is COMPLETE (so the sampler learns its
infeasibility through its constraints) with a placeholder accuracy of 0 it never earned, a
duplicate is COMPLETE with another trial's result, and under NSGA-II a trial stopped early is
COMPLETE with the accuracy of the epoch it stopped at. The search records ``outcome`` as a user
attribute; studies from before it get it derived from the other attributes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

OUTCOME_ATTR = "outcome"
TRAINED = "trained"  # proxy-trained to its last epoch
INHERITED = "inherited"  # a one-shot study: evaluated with weights inherited from its supernet, untrained
SCORED = "scored"  # a study without an accuracy objective: costs (and zero-cost proxies) only
STOPPED_EARLY = "stopped_early"  # beaten at an epoch by a trial of no more cost (early stopping)
OVER_BUDGET = "over_budget"  # a constraint violated: never trained, no accuracy
DUPLICATE = "duplicate"  # an architecture evaluated before: its result reused, nothing trained
FAILED = "failed"  # NaN loss, out of memory, an exception, a dead worker
TIMEOUT = "timeout"  # past experiment.trial_timeout / trial_hard_timeout
RUNNING = "running"
WAITING = "waiting"  # enqueued (a retry, a warm start), not started
OUTCOMES = (
    TRAINED,
    INHERITED,
    SCORED,
    STOPPED_EARLY,
    OVER_BUDGET,
    DUPLICATE,
    FAILED,
    TIMEOUT,
    RUNNING,
    WAITING,
)
EVALUATED = (TRAINED, INHERITED, SCORED)  # trials whose values are their own, final and feasible
WARM_START_ATTR = "warm_start"  # on warm-start trials: the design they evaluate (convformer_s18@2M)


def trial_outcome(t: FrozenTrial) -> str:
    attrs = t.user_attrs
    if t.state == TrialState.RUNNING:
        return RUNNING
    if t.state == TrialState.WAITING:
        return WAITING
    if attrs.get(OUTCOME_ATTR) in OUTCOMES:
        return attrs[OUTCOME_ATTR]
    reason = str(attrs.get("reason") or "")
    if t.state == TrialState.FAIL:
        return TIMEOUT if reason.startswith("timeout") else FAILED
    if attrs.get("duplicate_of") is not None:
        return DUPLICATE
    if t.state == TrialState.PRUNED or attrs.get("stopped_early"):
        return STOPPED_EARLY
    if attrs.get("constraint_violations"):
        return OVER_BUDGET
    if "inherited" in attrs:
        return INHERITED
    return TRAINED if "training" in attrs else SCORED


def has_accuracy(t: FrozenTrial) -> bool:
    """Whether the trial's accuracy value was measured (by it, or by the trial it duplicates)."""
    outcome = trial_outcome(t)
    if outcome == DUPLICATE:
        return not t.user_attrs.get("constraint_violations") and t.state == TrialState.COMPLETE
    return outcome in (TRAINED, INHERITED, STOPPED_EARLY) and t.state == TrialState.COMPLETE


def evaluated_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Trained (or, without an accuracy objective, scored), distinct, feasible trials: what
    importances, hypervolume and the report's figures are computed from."""
    return [t for t in trials if t.state == TrialState.COMPLETE and trial_outcome(t) in EVALUATED]


def count_outcomes(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    counts = Counter(trial_outcome(t) for t in trials)
    return {o: counts[o] for o in OUTCOMES if counts[o]}


def describe_counts(counts: dict[str, int]) -> str:
    """``12 trained, 3 stopped early, 4 over budget, 1 duplicate``."""
    return ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in counts.items()) or "no trials"
