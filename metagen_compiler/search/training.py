"""Prototype training as an objective of `metagenc search spec.msl --data DIR` (docs/search.md).

Each feasible candidate is trained for a fixed budget on the user's data by the training package the PyTorch
backend copies beside every model.py (`metagen_backends.pytorch.training`), in this process: the candidate's
model.py goes to OUT/trials/trial_NNNN/, and `train.main([...])` runs with its run folder inside (runs/proto/),
so the run is the one `python train.py` would make. Its validation metrics (every `val` record of metrics.jsonl,
and eval_val.json at the end) become the trial's metrics `val_loss`, `val_<metric>` for each metric of the task
(`val_perplexity`, `val_accuracy`, ...), with `train_seconds` beside them.

Pruning: at each evaluation the metric the pruner watches (the first training objective) is reported to a
companion trial of a single-objective *pruning study* in the same storage (`<study>:pruning`), whose pruner says
whether the candidate is hopeless: Optuna's median or successive-halving pruner (one value), or the Pareto pruner
(search/pruning.py), which also reads the candidate's cost objectives (stored on the companion trial as `costs`)
and stops a run only when enough others dominate it at that step. That works across workers and resumed runs (the
pruning study is in the storage). A pruned trial keeps its reason (`pruned at step S: val_loss 2.31
(MedianPruner)`) and the curve so far. `auto_pruner` is `--pruner auto`'s choice.

Stopping a run: train.main() has no callback, so it runs in a thread while this one reads metrics.jsonl; a pruned
candidate, or one past its time budget (`--train-seconds`), is stopped by raising `_Stop` in the training thread
(CPython's PyThreadState_SetAsyncExc: it arrives between two Python operations, so between two torch calls).
A run that fails (a crash, the loss going to nan or inf: train.py's `the loss is nan` error) is a failed trial
with that reason, never dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import math
import re
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metagen_compiler.search.engine import WORKER, Candidate, CandidateFailed, CandidatePruned

__all__ = ["LOWER_IS_BETTER", "PRUNERS", "TrainingEvaluator", "auto_pruner", "metric_direction", "training_metrics"]

PRUNERS = ("median", "halving", "pareto", "none")

# validation metrics where lower is better; every other metric of a task is maximised
LOWER_IS_BETTER = frozenset({
    "loss", "perplexity", "mae", "rmse", "mape", "chamfer_distance", "token_error_rate", "noise_mse", "x0_mse",
    "next_observation_mse", "reward_mse", "td_error", "approx_kl",
})


def training_metrics(task: str) -> list[str]:
    """The metrics a prototype training run of a model of `task` reports: val_loss, then val_<metric> for each
    metric of the task (tasks.py), the first one being the task's validation metric; train_seconds."""
    from metagen_compiler.semantics.tasks import TASK_SPECS

    t = TASK_SPECS.get(task)
    return ["val_loss", *(f"val_{m}" for m in (t.metrics if t else ())), "train_seconds"]


def metric_direction(name: str) -> Literal["minimize", "maximize"]:
    base = name.removeprefix("val_")
    return "minimize" if base in LOWER_IS_BETTER or name == "train_seconds" else "maximize"


def auto_pruner(objectives: Sequence[str], trained: Sequence[str]) -> str:
    """`--pruner auto`: `median` for one objective; `pareto` for several of which one is a training metric (the
    others are cost objectives, known exactly before training: the Pareto pruner compares them); `none` where
    several training metrics are objectives (a pruner watches one of them, and would stop runs the others favour).
    `none` too where no objective is a training metric (pruning would change nothing on the front).
    The choice is measured: docs/search.md, Prototype training."""
    n = sum(1 for o in objectives if o in trained)
    if n != 1:
        return "none"
    return "median" if len(objectives) == 1 else "pareto"


class _Stop(BaseException):
    """Raised in the training thread to stop a run (pruned, or out of time). A BaseException: train.py's own
    handlers (`except DataError`) do not catch it."""


def _raise_in(thread: threading.Thread) -> None:
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Stop))


@dataclass
class _Run:
    rc: int | None = None
    error: str | None = None
    stopped: bool = False
    done: bool = False


def run_training(argv: list[str], metrics_path: Path, log_path: Path,
                 on_eval: Callable[[int, dict[str, float]], str | None], seconds: float | None) -> tuple[_Run, str]:
    """train.main(argv) in a thread, its output to `log_path`; `on_eval(step, metrics)` is called for each
    validation record as it appears and returns a reason to stop (or None); a run still going `seconds` after its
    first record (the evaluation before step 1: the data and model are ready) is stopped. Returns the run and why
    it was stopped (`pruned ...`, `time`) or ''."""
    from metagen_backends.pytorch.training import train

    run = _Run()

    def target() -> None:
        try:
            try:
                run.rc = train.main(argv)
            finally:
                run.done = True
        except _Stop:
            run.stopped = True
        except BaseException as e:  # noqa: BLE001 - the candidate's crash is its trial's failure, recorded
            run.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"

    thread = threading.Thread(target=target, name="metagen-search-train", daemon=True)
    seen = 0
    why = ""
    deadline: float | None = None

    def poll() -> str | None:
        nonlocal seen, deadline
        try:
            with open(metrics_path, "rb") as f:
                f.seek(seen)
                chunk = f.read()
        except OSError:
            return None
        end = chunk.rfind(b"\n") + 1
        seen += end
        if end and deadline is None and seconds is not None:  # training starts: its clock too
            deadline = time.perf_counter() + seconds
        for line in chunk[:end].decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("split") == "val" and rec.get("step", 0) > 0:
                vals = {f"val_{k}": float(v) for k, v in rec.items()
                        if k not in ("step", "split", "predictions") and isinstance(v, (int, float))}
                reason = on_eval(int(rec["step"]), vals)
                if reason:
                    return reason
        return None

    def stop() -> None:
        # _Stop lands between any two Python operations, also inside a `with` that has opened a resource but not
        # entered it yet (an os.scandir of a checkpoint's rmtree, seen in a test): the thread then drops it unclosed
        # as it unwinds. That ResourceWarning is the interruption's, not the candidate's: ignored until the thread
        # has ended and what it dropped is collected.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            while thread.is_alive():
                if not run.done:
                    _raise_in(thread)
                thread.join(0.2)
            gc.collect()

    with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        thread.start()
        try:
            while thread.is_alive():
                thread.join(0.05)
                reason = poll()
                if reason is None and deadline is not None and time.perf_counter() > deadline and not run.done:
                    reason = "time"
                if reason:
                    why = reason
                    stop()
                    break
            if not why:
                poll()  # the records of the last evaluation
        except BaseException:  # Ctrl-C: stop the training thread too, then let the interrupt through
            stop()
            raise
    return run, why


@dataclass
class TrainingEvaluator:
    """Trains each candidate for `steps` optimizer steps (and at most `seconds`, when given) on `data`, evaluating
    every `eval_every` steps; the metrics are the last evaluation's. `watch` is the metric the pruner reads."""

    data: str
    out_dir: Path
    task: str
    steps: int = 200
    seconds: float | None = None
    eval_every: int | None = None
    train_args: tuple[str, ...] = ()
    watch: str = "val_loss"
    pruner: str = "median"
    # the search's objectives that are not training metrics, as (name, "minimize" | "maximize"): the Pareto pruner
    # compares candidates on them (their values are the compiler's, known before training)
    costs: tuple[tuple[str, str], ...] = ()
    dominators: int = 2  # the Pareto pruner stops a run that this many others dominate
    seed: int = 0
    device: str = "cpu"
    keep_checkpoints: bool = False
    trains: bool = True  # the engine skips an evaluator that trains for candidates that break a constraint
    _pruning: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(training_metrics(self.task))

    @property
    def every(self) -> int:
        return self.eval_every or max(1, self.steps // 5)

    def make_pruner(self) -> Any:
        import optuna

        if self.pruner == "median":  # not before the second evaluation, nor before 3 runs finished
            return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=self.every + 1)
        if self.pruner == "halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.every, reduction_factor=3)
        if self.pruner == "pareto":  # the same warm-up as the median pruner's
            from metagen_compiler.search.pruning import ParetoPruner

            return ParetoPruner(min_dominators=self.dominators, n_startup_trials=3, n_warmup_steps=self.every)
        return optuna.pruners.NopPruner()

    def cost_vector(self, candidate: Candidate) -> list[float]:
        """The candidate's cost objectives, each signed so that lower is better (the Pareto pruner's `costs`)."""
        from metagen_compiler.search.engine import estimate_metrics

        metrics = estimate_metrics(candidate.comp, candidate.device)
        return [(1.0 if d == "minimize" else -1.0) * metrics.get(n, math.inf) for n, d in self.costs]

    def pruning_study(self, study: Any) -> Any:
        """The companion single-objective study `<study>:pruning` in the search's storage."""
        import optuna

        key = id(study)
        if key not in self._pruning:
            name = f"{study.study_name}:pruning"
            for attempt in range(5):  # two workers creating it at once: the loser loads it
                try:
                    self._pruning[key] = optuna.create_study(
                        storage=study._storage, study_name=name, direction=metric_direction(self.watch),
                        pruner=self.make_pruner(), load_if_exists=True)
                    break
                except optuna.exceptions.DuplicatedStudyError:
                    if attempt == 4:
                        raise
                    time.sleep(0.2)
        return self._pruning[key]

    def __call__(self, candidate: Candidate) -> dict[str, float]:
        from metagen_backends.pytorch import emit

        study = candidate.trial.study.study_name if candidate.trial is not None else "study"
        folder = self.out_dir / "trials" / re.sub(r"[^A-Za-z0-9_.-]", "_", study) / f"trial_{candidate.number:04d}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        files = emit(candidate.comp)
        for name in ("model.py", "training.json"):
            if name in files:
                data = files[name]
                (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        run_dir = folder / "runs" / "proto"
        argv = ["--model", str(folder / "model.py"), "--data", self.data, "--out", str(folder / "runs"),
                "--run-name", "proto", "--steps", str(self.steps), "--eval-every", str(self.every),
                "--seed", str(self.seed), "--device", self.device, "--log-every", str(max(self.steps, 1)),
                *self.train_args]
        companion = None
        trial = candidate.trial
        if trial is not None and self.pruner != "none":
            companion = self.pruning_study(trial.study).ask()
            companion.set_user_attr("trial", candidate.number)
            companion.set_user_attr("worker", WORKER)
            if self.pruner == "pareto":
                companion.set_user_attr("costs", self.cost_vector(candidate))
            trial.set_user_attr("pruning_trial", companion.number)
        curve: list[list[float]] = []
        last: dict[str, float] = {}

        def on_eval(step: int, vals: dict[str, float]) -> str | None:
            last.clear()
            last.update(vals)
            last["train_steps"] = float(step)
            v = vals.get(self.watch)
            if v is None:
                return None
            curve.append([step, v])
            if not math.isfinite(v):
                return f"diverged: {self.watch} is {v} at step {step}"
            if companion is not None:
                companion.report(v, step)
                if companion.should_prune():
                    pruner = companion.study.pruner
                    by = ""
                    if getattr(pruner, "last", None):
                        by = f": dominated by trial{'s' if len(pruner.last) > 1 else ''} " \
                             f"{', '.join(map(str, pruner.last))}"
                    return f"pruned at step {step}: {self.watch} {v:.4g} ({type(pruner).__name__}{by})"
            return None

        started = time.perf_counter()
        try:
            run, why = run_training(argv, run_dir / "metrics.jsonl", folder / "train.log", on_eval, self.seconds)
        except BaseException:
            if companion is not None:
                companion.study.tell(companion, state=_state("FAIL"))
            raise
        seconds = round(time.perf_counter() - started, 3)
        if not self.keep_checkpoints:
            shutil.rmtree(run_dir / "last", ignore_errors=True)
        partial = {**last, "train_seconds": seconds}
        if why.startswith("pruned"):
            _tell(companion, "PRUNED")
            raise CandidatePruned(why, partial, curve)
        if why.startswith("diverged"):
            _tell(companion, "FAIL")
            raise CandidateFailed(why, "diverged")
        if run.error is not None or (run.rc not in (0, None) and why != "time"):
            _tell(companion, "FAIL")
            reason = _reason(run, folder / "train.log")
            raise CandidateFailed(reason, "diverged" if reason.startswith("diverged") else "training")
        final = run_dir / "eval_val.json"
        if why != "time" and final.is_file():
            doc = json.loads(final.read_text(encoding="utf-8"))
            last = {f"val_{k}": float(v) for k, v in doc.get("metrics", {}).items() if isinstance(v, (int, float))}
            last["train_steps"] = float(doc.get("step", self.steps))
        if not any(k.startswith("val_") for k in last):
            _tell(companion, "FAIL")
            raise CandidateFailed(f"no evaluation within the budget ({self.seconds} s); give --train-seconds more "
                                  "or --eval-every fewer steps", "training")
        bad = [k for k, v in last.items() if not math.isfinite(v)]
        if bad:
            _tell(companion, "FAIL")
            raise CandidateFailed(f"diverged: {bad[0]} is {last[bad[0]]}", "diverged")
        if companion is not None:
            value = last.get(self.watch)
            if value is not None:
                companion.study.tell(companion, value)
            else:
                _tell(companion, "FAIL")
        out = {**last, "train_seconds": seconds}
        if why == "time":
            out["stopped_by_time"] = 1.0
        return out


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return getattr(TrialState, name)


def _tell(companion: Any, state: str) -> None:
    if companion is not None:
        companion.study.tell(companion, state=_state(state))


_DIVERGED = re.compile(r"the loss is (nan|inf|-inf)", re.IGNORECASE)


def _reason(run: _Run, log: Path) -> str:
    """One line: the run's `error: ...` line (train.py's one-line data errors), or the exception."""
    text = ""
    with contextlib.suppress(OSError):
        text = log.read_text(encoding="utf-8", errors="replace")
    lines = [ln.strip() for ln in io.StringIO(text) if ln.strip().startswith("error:")]
    msg = lines[-1].removeprefix("error:").strip() if lines else (run.error or f"train.py exited with {run.rc}")
    return f"diverged: {msg}" if _DIVERGED.search(msg) else f"training failed: {msg}"
