"""Pruners of prototype training (`metagenc search --data --pruner ...`, docs/search.md).

Optuna's pruners (median, successive halving) read one value: in a search of several objectives they stop the
small, fast candidates whose validation metric trails the others, the cheap end of the Pareto front. The *Pareto
pruner* reads the cost objectives too, which the compiler knows exactly before a candidate trains (parameters,
FLOPs, estimated latency and memory): at an evaluation step it stops a run only when at least `min_dominators`
other runs dominate it there, that is, each has a better-or-equal value of the watched metric at that same step
and a better-or-equal value of every cost objective, and is better in at least one of them. A run that is cheaper
than every run ahead of it on the metric is never stopped: it may still be on the front.

The runs compared are the companion trials of the pruning study (`<study>:pruning`, search/training.py), complete
or still running (another worker's, at the same step); each carries its cost vector (`costs`, every cost
objective's value signed so that lower is better) and the main trial's number (`trial`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

__all__ = ["ParetoPruner", "dominators"]


def _dominates(value: float, costs: Sequence[float], other_value: float, other_costs: Sequence[float]) -> bool:
    """Whether (other_value, other_costs) dominates (value, costs); everything minimised."""
    if len(costs) != len(other_costs) or not math.isfinite(other_value):
        return False
    if other_value > value or any(o > c for o, c in zip(other_costs, costs, strict=True)):
        return False
    return other_value < value or any(o < c for o, c in zip(other_costs, costs, strict=True))


def dominators(trial: FrozenTrial, others: Sequence[FrozenTrial], step: int, sign: float) -> list[FrozenTrial]:
    """The trials of `others` that dominate `trial` at `step`: their value at `step` (times `sign`, 1 for a
    minimised metric, -1 for a maximised one) is better or equal, and so is each of their `costs`, one of them
    strictly. A trial without a value at `step` or without costs dominates nothing."""
    costs = trial.user_attrs.get("costs")
    value = trial.intermediate_values.get(step)
    if costs is None or value is None:
        return []
    if not math.isfinite(value):  # nan or inf: every run with a finite value is better
        value = math.inf
    out = []
    for o in others:
        if o.number == trial.number:
            continue
        ov, oc = o.intermediate_values.get(step), o.user_attrs.get("costs")
        if ov is None or oc is None:
            continue
        if _dominates(sign * value, costs, sign * ov, oc):
            out.append(o)
    return out


class ParetoPruner(BasePruner):
    """Stop a run that at least `min_dominators` complete or running runs dominate at its current step (on the
    watched metric and on every cost objective). Not before `n_startup_trials` runs completed, nor at a step up
    to `n_warmup_steps` (the first evaluation: every run is still at its start). `last` holds the numbers (the
    main study's, `trial`) of the runs that dominated the last run pruned, for the reason in trials.jsonl."""

    def __init__(self, min_dominators: int = 2, n_startup_trials: int = 3, n_warmup_steps: int = 0) -> None:
        if min_dominators < 1:
            raise ValueError(f"min_dominators must be 1 or more, got {min_dominators}")
        self.min_dominators = min_dominators
        self.n_startup_trials = n_startup_trials
        self.n_warmup_steps = n_warmup_steps
        self.last: list[int] = []

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step <= self.n_warmup_steps:
            return False
        others = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if sum(1 for t in others if t.state == TrialState.COMPLETE) < self.n_startup_trials:
            return False
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
        found = dominators(trial, others, step, sign)
        if len(found) < self.min_dominators:
            return False
        self.last = sorted(int(_main_number(t)) for t in found)
        return True


def _main_number(t: FrozenTrial) -> Any:
    return t.user_attrs.get("trial", t.number)
