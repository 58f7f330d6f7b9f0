"""The engine of `metagenc search`: an Optuna study over a spec's open dimensions.

A trial samples every dimension in its domain (`suggest_int` with the domain's step, so `multiple_of` always
holds), compiles the model in process with those values (`search.space.compile_candidate`), and hands the
compilation to an *evaluator*: a function of the compiled candidate that returns metric values, or raises
`CandidateFailed` (recorded with its reason) or `CandidatePruned` (recorded with its reason, then Optuna's
TrialPruned). The estimate-only evaluator reads the compiler's own numbers; the prototype-training evaluator
(search/training.py) trains the candidate and adds its validation metrics, which `--objective` can then name. An
evaluator that trains (`trains = True`) is not run on a candidate that breaks a constraint: its training objectives
get the worst value there is (+inf or -inf), and the samplers rank it by its violations.

The spec's hard constraints (params, memory, latency on a device class, context: every constraint the
`constraints` pass checks) are Optuna constraints: each trial stores one violation per constraint (<= 0 holds),
and NSGA-II and TPE read them (`Trial.set_constraint`); a candidate that breaks one is never on the front.
The family's requirements (heads must divide d_model) are constraints of the samplers too: a candidate whose
values break one does not compile, and is a complete trial, `failed` with the compiler's diagnostic as its reason,
that breaks the constraint `compiles`, so the samplers learn to avoid such values.

Resumption: every finished trial is in the storage the moment it finishes. A run that starts on an existing study
marks the trials that a dead worker of this machine left RUNNING (or that Ctrl-C failed) as interrupted, queues
their values again, and runs until the study holds `trials` finished trials (interrupted ones do not count).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, Self

from metagen_compiler.compilation import Compilation, Options
from metagen_compiler.search.space import SearchSpace, compile_candidate, suggest_values
from metagen_compiler.span import SourceFile

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ESTIMATE_METRICS",
    "NSGA2_FROM_TRIALS",
    "Candidate",
    "CandidateFailed",
    "CandidatePruned",
    "EstimateEvaluator",
    "Evaluator",
    "ObjectiveSpec",
    "SearchConfig",
    "SearchOutcome",
    "auto_sampler",
    "constraint_violations",
    "default_objectives",
    "estimate_metrics",
    "finished",
    "open_storage",
    "pareto_front",
    "parse_objective",
    "resolve_sampler",
    "run_search",
    "solver_breaks_a_constraint",
    "trial_status",
]

# metric name -> what it is; every one comes from the `estimate` pass
ESTIMATE_METRICS = {
    "params": "parameters (exact)",
    "flops": "forward FLOPs at the nominal input (exact count)",
    "flops_training": "training FLOPs per step (3 x forward)",
    "latency": "estimated latency, batch 1, fp32, on the device (--device or the spec's latency constraint)",
    "memory": "estimated inference memory in bytes (weights + activations)",
    "training_memory": "estimated training memory in bytes (weights, gradients, AdamW state, activations)",
}
DEFAULT_DEVICE = "consumer_gpu"
# the constraint a candidate that does not compile breaks (a family requirement: heads must divide d_model)
COMPILES = "compiles (the family's requirements)"
WORKER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    direction: str  # "minimize" | "maximize"

    @property
    def text(self) -> str:
        return f"{self.name}:{'min' if self.direction == 'minimize' else 'max'}"


def parse_objective(text: str, known: Sequence[str]) -> ObjectiveSpec:
    """`params:min`, `latency:max`, `params` (min). Raises ValueError with a message for the user."""
    name, _, d = text.partition(":")
    name, d = name.strip(), (d.strip().lower() or "min")
    if name not in known:
        raise ValueError(f"unknown objective `{name}` (known: {', '.join(known)})")
    if d not in ("min", "max", "minimize", "maximize"):
        raise ValueError(f"objective `{text}`: the direction is min or max, not `{d}`")
    return ObjectiveSpec(name, "minimize" if d.startswith("min") else "maximize")


def default_objectives(space: SearchSpace) -> list[ObjectiveSpec]:
    """Estimate-only defaults: capacity (params, maximised: the solver's own proxy for quality, which fills the
    budget) against cost (latency on the spec's device, minimised), plus memory when the spec bounds it."""
    spec = space.comp.spec
    assert spec is not None
    out = [ObjectiveSpec("params", "maximize"), ObjectiveSpec("latency", "minimize")]
    if any(c.kind == "memory" for c in spec.constraints):
        out.append(ObjectiveSpec("memory", "minimize"))
    return out


def spec_device(space: SearchSpace) -> str:
    spec = space.comp.spec
    assert spec is not None
    for c in spec.constraints:
        if c.kind in ("latency", "throughput") and c.device:
            return c.device
    return DEFAULT_DEVICE


# ---------------------------------------------------------------- candidates and evaluators
class CandidateFailed(Exception):
    """A candidate that cannot be evaluated: it does not compile (a family requirement fails), or its
    training diverged. `reason` is one line for trials.jsonl."""

    def __init__(self, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class CandidatePruned(Exception):
    """A candidate whose training a pruner stopped as hopeless: `reason` says where and why, `metrics` what it
    measured so far, `curve` the [step, value] pairs the pruner read."""

    def __init__(self, reason: str, metrics: dict[str, float] | None = None,
                 curve: list[list[float]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metrics = metrics or {}
        self.curve = curve or []


@dataclass
class Candidate:
    """One trial's model: the values of the open dimensions and the compilation they give."""

    number: int
    values: dict[str, Any]  # a range's integer, or an enumerated choice's value
    comp: Compilation
    source: SourceFile
    device: str
    trial: Any = None  # the optuna trial, for an evaluator that reports intermediate values (pruning)


class Evaluator(Protocol):
    """A function of a compiled candidate returning metric values (higher or lower is better as the objectives
    say), or raising CandidateFailed / optuna.TrialPruned. `metrics` names what it returns."""

    @property
    def metrics(self) -> tuple[str, ...]: ...

    def __call__(self, candidate: Candidate) -> dict[str, float]: ...


def estimate_metrics(comp: Compilation, device: str) -> dict[str, float]:
    assert comp.graph is not None
    est = comp.graph.g.graph["estimates"]
    lat = est["latency_s"].get(device, {}).get("fp32")
    out = {"params": float(est["params"]), "flops": float(est["flops_forward"]),
           "flops_training": float(est["flops_training"]),
           "memory": float(est["memory"]["inference_total_bytes"]),
           "training_memory": float(est["memory"]["training_total_bytes"])}
    if lat is not None:
        out["latency"] = float(lat)
    return out


@dataclass(frozen=True)
class EstimateEvaluator:
    """No training: the compiler's exact counts and estimates are the metrics."""

    metrics: tuple[str, ...] = tuple(ESTIMATE_METRICS)
    trains: bool = False  # an evaluator that trains is not run on a candidate that breaks a constraint

    def __call__(self, candidate: Candidate) -> dict[str, float]:
        return {}  # the engine always records estimate_metrics; this evaluator adds nothing


def constraint_violations(comp: Compilation) -> list[tuple[str, float]]:
    """One (label, violation) per checked constraint of the spec: <= 0 where it holds (how far inside, relative to
    the bound), > 0 where it is broken (how far outside). Agrees with the `constraints` pass on which hold."""
    from metagen_compiler.semantics.catalog import LATENCY_CLASSES
    from metagen_compiler.semantics.values import Sym

    spec = comp.spec
    assert spec is not None and comp.graph is not None
    results = comp.graph.g.graph.get("constraints", [])
    out = []
    for c, r in zip(spec.constraints, results, strict=False):
        if r.get("status") not in ("ok", "violated") or "actual" not in r:
            continue
        if isinstance(c.value, Sym):
            bound = LATENCY_CLASSES.get(c.value.name)
        elif isinstance(c.value, (int, float)):
            bound = float(c.value)
        else:
            continue
        if bound is None or not math.isfinite(bound):
            continue
        actual = float(r["actual"])
        scale = abs(bound) or 1.0
        op = "<=" if c.kind == "latency" and (isinstance(c.value, Sym) or c.op == "=") else c.op
        if op in ("<=", "<"):
            v = (actual - bound) / scale
        elif op in (">=", ">"):
            v = (bound - actual) / scale
        else:
            v = abs(actual - bound) / scale
        if r["status"] == "violated":
            v = max(v, 1e-9)
        else:
            v = min(v, 0.0)
        label = f"{c.kind} {c.op} {c.text}" + (f" on {c.device}" if c.device else "")
        out.append((label, v))
    return out


# ---------------------------------------------------------------- storage
def open_storage(url: str | None, out_dir: Path) -> Any:
    """None: SQLite in `out_dir`/study.db. `memory`: in this process only (not resumable). `journal:PATH`:
    Optuna's journal file (several processes on one file). Anything else: an Optuna RDB URL (sqlite:///...,
    postgresql://..., mysql://...)."""
    import optuna

    if url is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(out_dir / 'study.db').resolve()}"
    if url == "memory":
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if not url.startswith("sqlite"):
        return _rdb_storage(url, heartbeat_interval=30, grace_period=120)
    # a local file: the workers' lock (_WorkerLock) finds dead workers, at no cost a trial
    storage = _rdb_storage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    _sqlite_wal(storage)
    return storage


def _rdb_storage(url: str, **kwargs: Any) -> Any:
    """An Optuna RDB storage; on a database server with heartbeats (a dead worker's trial is failed after 120 s).
    Optuna creates the schema on first use; two workers that start at once on a new database server can race there
    (`table studies already exists`): the loser retries, and then finds the schema made. (On a file, the first
    worker holds the workers' lock exclusively while it opens the storage.)"""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    def connect() -> Any:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, **kwargs)

    for wait in (0.2, 0.4, 0.6, 0.8):
        try:
            return connect()
        except SQLAlchemyError:
            time.sleep(wait)
    return connect()


def _sqlite_wal(storage: Any) -> None:
    """Write-ahead log, synced at checkpoints: a commit costs no fsync, and a finished trial still survives the
    process being killed (only a power loss can take the last commits). Several processes may share the file."""
    from sqlalchemy import event

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # connections made before the listener get the pragmas when reopened


# ---------------------------------------------------------------- the search
@dataclass
class SearchConfig:
    source: SourceFile
    options: Options
    space: SearchSpace
    objectives: list[ObjectiveSpec]
    trials: int
    out_dir: Path
    sampler: str = "auto"  # auto | nsga2 | tpe | random
    seed: int = 0
    storage: str | None = None
    study: str | None = None
    timeout: float | None = None
    device: str = DEFAULT_DEVICE
    fixed: tuple[tuple[str, str], ...] = ()
    evaluator: Evaluator = field(default_factory=EstimateEvaluator)
    progress: Callable[[Any, SearchConfig, float], None] | None = None
    # configurations to run first on a new study (--warm-start): ({dimension: value}, where it comes from)
    warm_start: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    tight: bool = False  # the solver's answer breaks a constraint (solver_breaks_a_constraint): auto keeps TPE


@dataclass
class SearchOutcome:
    study: Any
    ran: int  # trials this process finished
    seconds: float
    interrupted: bool = False


def trial_status(t: Any) -> str:
    """ok | infeasible | failed | pruned | interrupted | running. A candidate that does not compile is a complete
    trial (the samplers read its broken constraint) whose result says `failed`; a failed training run is FAIL."""
    from optuna.trial import TrialState

    if t.state == TrialState.COMPLETE:
        return result(t).get("status", "ok")
    if t.state == TrialState.PRUNED:
        return "pruned"
    if t.state == TrialState.FAIL:
        return "failed" if result(t).get("status") == "failed" else "interrupted"
    return "running"


def finished(trials: Sequence[Any]) -> int:
    """Trials that count towards the budget: every finished one except the interrupted (they are run again)."""
    return sum(1 for t in trials if trial_status(t) in ("ok", "infeasible", "failed", "pruned"))


# `--sampler auto` takes NSGA-II for several objectives only from this budget (--trials) on; below it TPE, which
# measured ahead of NSGA-II at every budget up to 300 trials (docs/search.md, Samplers; benchmarks/results/search.json)
NSGA2_FROM_TRIALS = 500


def auto_sampler(n_objectives: int, trials: int, tight: bool = False) -> str:
    """`--sampler auto`'s choice, by what was measured: TPE for one objective; for several, NSGA-II from
    NSGA2_FROM_TRIALS trials on, unless the constraints are `tight` (the solver's own answer breaks one: few
    candidates are feasible, where TPE stayed ahead), else TPE."""
    return "nsga2" if n_objectives > 1 and trials >= NSGA2_FROM_TRIALS and not tight else "tpe"


def resolve_sampler(name: str, n_objectives: int, trials: int, tight: bool = False) -> str:
    """The sampler a search runs: `name`, or auto's choice."""
    return auto_sampler(n_objectives, trials, tight) if name == "auto" else name


def solver_breaks_a_constraint(source: SourceFile, options: Options, fixed: tuple[tuple[str, str], ...] = ()) -> bool:
    """Whether the solver's answer for the spec (every `?` filled as `metagenc FILE` fills it) breaks one of its
    constraints (W002): then few candidates are feasible, and `--sampler auto` keeps TPE."""
    from metagen_compiler.driver import compile_model_set

    comps = compile_model_set(source, options, overrides=fixed)
    comp = comps[0] if comps else None
    if comp is None or comp.spec is None or comp.graph is None or "constraints" not in comp.graph.g.graph:
        return False
    return any(v > 0 for _, v in constraint_violations(comp))


def make_sampler(name: str, n_objectives: int, seed: int, trials: int, tight: bool = False) -> Any:
    import optuna

    name = resolve_sampler(name, n_objectives, trials, tight)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(5, min(10, trials // 5)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, trials // 5)))
    raise ValueError(f"unknown sampler `{name}` (auto, nsga2, tpe, random)")


def study_identity(cfg: SearchConfig) -> dict[str, Any]:
    """What a study is a search of: a resumed run must match it."""
    return {"model": cfg.space.model,
            "spec_sha256": hashlib.sha256(cfg.source.text.encode("utf-8")).hexdigest(),
            "fixed": [list(f) for f in cfg.fixed],
            "space": {d.key: [d.domain.start, d.domain[-1], d.domain.step, *d.families] for d in cfg.space.dims},
            "objectives": [o.text for o in cfg.objectives], "device": cfg.device}


class StudyMismatch(Exception):
    """The study of that name in that storage searches something else (another spec, space or objectives)."""


def load_study(cfg: SearchConfig) -> Any:
    import optuna

    storage = open_storage(cfg.storage, cfg.out_dir)
    name = cfg.study or cfg.space.model
    directions: list[Any] = [o.direction for o in cfg.objectives]
    ident = study_identity(cfg)
    study = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=cfg.seed))
    have = study.user_attrs.get("identity")
    if have is None:
        study.set_user_attr("identity", ident)
        study.set_user_attr("sampler", cfg.sampler)
    elif have != ident:
        words = {"model": "model", "spec_sha256": "spec text", "fixed": "--set values", "space": "search space",
                 "objectives": "objectives", "device": "device"}
        diff = [words.get(k, k) for k in ident if have.get(k) != ident[k]]
        raise StudyMismatch(f"study `{name}` in {_display(cfg.storage, cfg.out_dir)} is a search of another "
                            f"{' and '.join(diff)}; give this one another --study NAME or output folder")
    # a resumed search reseeds with the number of trials already held: it does not draw the first values again
    study.sampler = make_sampler(cfg.sampler, len(cfg.objectives), cfg.seed + len(study.trials), cfg.trials,
                                 cfg.tight)
    return study


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and is another user's
        pass
    return True


def requeue_interrupted(study: Any, alone: bool = False) -> list[int]:
    """Mark the RUNNING trials of dead workers as failed (interrupted), and queue the values of every interrupted
    trial not yet queued again. Returns the numbers queued. Dead: `alone` (no other worker holds this storage
    file: every RUNNING trial is a dead worker's), or a worker of this machine whose process is gone, or one
    whose heartbeat stopped (Optuna's RDB heartbeat, for workers elsewhere)."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():  # a no-op where the storage keeps no heartbeats (files, memory)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        h, _, pid = t.user_attrs.get("worker", "").rpartition(":")
        if alone or (h == host and pid.isdigit() and not _pid_alive(int(pid))):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = []
    for t in trials:
        if trial_status(t) == "interrupted" and t.number not in retried and t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number}, skip_if_exists=False)
            queued.append(t.number)
    return queued


def _fail_dead_companions(study: Any, alone: bool) -> None:
    """The pruning study's trials (search/training.py) that a dead worker left RUNNING: failed, as their trials."""
    import optuna
    from optuna.trial import TrialState

    try:
        companion = optuna.load_study(study_name=f"{study.study_name}:pruning", storage=study._storage)
    except KeyError:  # no pruning study (estimate-only, or no trial trained yet)
        return
    host = socket.gethostname()
    for t in companion.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        h, _, pid = t.user_attrs.get("worker", "").rpartition(":")
        if alone or (h == host and pid.isdigit() and not _pid_alive(int(pid))):
            companion._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _fail(trial: Any, reason: str, code: str | None, compile_s: float) -> NoReturn:
    trial.set_user_attr("result", {"status": "failed", "reason": reason, "code": code, "compile_s": compile_s})
    raise CandidateFailed(reason, code)


def result(t: Any) -> dict[str, Any]:
    """What the objective recorded on a trial: status, reason, metrics, constraints ({label: violation})."""
    return t.user_attrs.get("result", {})


def run_search(cfg: SearchConfig) -> SearchOutcome:
    """Run (or continue) the study until it holds cfg.trials finished trials, or cfg.timeout passes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with _WorkerLock(cfg) as lock:
        return _run_search(cfg, lock)


def _storage_file(cfg: SearchConfig) -> Path | None:
    """The local file of a SQLite or journal storage (None for a server)."""
    url = cfg.storage
    if url is None:
        return cfg.out_dir / "study.db"
    if url.startswith("journal:"):
        return Path(url[len("journal:"):])
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        return Path(url.split(":///", 1)[1])
    return None


class _WorkerLock:
    """Every worker on a file storage holds a lock on `FILE.workers` while it runs. On entry a worker tries the
    lock exclusively: if it gets it, it is `alone` (no other worker is alive, so every RUNNING trial is a dead
    worker's; a RUNNING trial may not name its worker yet, Optuna creates it before the objective runs) and keeps
    it exclusive while it opens the storage (and makes its schema) and marks them, until `shared()`; otherwise it
    waits for a shared lock (while another worker sets up alone) and finds dead workers by their process ids. A
    server storage has no such lock."""

    def __init__(self, cfg: SearchConfig) -> None:
        self.cfg = cfg
        self.file: Any = None
        self.alone = False

    def __enter__(self) -> Self:
        path = _storage_file(self.cfg)
        try:
            import fcntl
        except ImportError:  # not POSIX: dead workers are found by process id and heartbeat only
            return self
        if path is None:
            return self
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(f"{path}.workers", "a")
        except OSError as e:
            raise StorageError(f"cannot open the storage {_display(self.cfg.storage, self.cfg.out_dir)}: "
                               f"{e.strerror or e}: {e.filename or path}") from e
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.alone = True
        except OSError:
            fcntl.flock(self.file, fcntl.LOCK_SH)
        return self

    def shared(self) -> None:
        """Set up: let other workers in."""
        if self.file is not None and self.alone:
            import fcntl

            fcntl.flock(self.file, fcntl.LOCK_SH)

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()  # releases the lock


class StorageError(Exception):
    """The storage cannot be opened (a bad URL, a server that does not answer, a missing driver)."""


def _display(url: str | None, out_dir: Path) -> str:
    """The storage for a message: a URL's password masked."""
    return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", url) if url else str(out_dir / "study.db")


def _run_search(cfg: SearchConfig, lock: _WorkerLock) -> SearchOutcome:
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        study = load_study(cfg)
    except (ImportError, SQLAlchemyError, OSError, ValueError, optuna.exceptions.OptunaError) as e:
        lines = str(e).strip().splitlines() or [""]
        raise StorageError(f"cannot open the storage {_display(cfg.storage, cfg.out_dir)}: {type(e).__name__}: "
                           f"{lines[0]}") from e
    requeue_interrupted(study, lock.alone)
    _fail_dead_companions(study, lock.alone)
    if cfg.warm_start and not study.trials:  # a new study: the configurations of earlier searches first
        for values, origin in cfg.warm_start:
            study.enqueue_trial(values, user_attrs={"warm_start": origin}, skip_if_exists=True)
    lock.shared()
    t0 = time.perf_counter()
    ran = 0
    obj_names = [o.name for o in cfg.objectives]

    def objective(trial: optuna.trial.Trial) -> tuple[float, ...]:
        trial.set_user_attr("worker", WORKER)
        values = suggest_values(trial, cfg.space)  # suggest_int over a range, suggest_categorical over a choice
        t1 = time.perf_counter()
        comp = compile_candidate(cfg.source, cfg.options, cfg.space, values, cfg.fixed)
        compile_s = round(time.perf_counter() - t1, 6)
        errors = [d for d in comp.bag.items if d.severity.value == "error"]
        has_estimates = comp.graph is not None and "constraints" in comp.graph.g.graph
        if errors and (not has_estimates or any(d.code != "E403" for d in errors)):
            # a family requirement the values break (heads must divide d_model): failed, with the diagnostic as its
            # reason, and a broken constraint of the samplers, which learn from it as from any other violation
            d = errors[0]
            where = f"{d.span.path}:{d.span.line}:{d.span.col}: " if d.span is not None else ""
            trial.set_constraint(COMPILES, 1.0)
            trial.set_user_attr("result", {"status": "failed", "reason": f"{where}error[{d.code}]: {d.message}",
                                           "code": d.code, "compile_s": compile_s})
            return tuple(math.inf if o.direction == "minimize" else -math.inf for o in cfg.objectives)
        metrics = estimate_metrics(comp, cfg.device)
        viol = constraint_violations(comp)
        feasible = all(v <= 0 for _, v in viol)
        for i, (label, v) in enumerate(viol):  # the samplers read these (Optuna's constraints)
            trial.set_constraint(f"{i}: {label}", v)
        record: dict[str, Any] = {"status": "ok" if feasible else "infeasible", "metrics": metrics,
                                  "constraints": {label: v for label, v in viol}, "compile_s": compile_s}
        trains = getattr(cfg.evaluator, "trains", False)
        if feasible or not trains:  # training a candidate that breaks a constraint would only cost time
            try:
                metrics.update(cfg.evaluator(Candidate(trial.number, values, comp, cfg.source, cfg.device, trial)))
            except CandidateFailed as e:
                _fail(trial, e.reason, e.code, compile_s)
            except CandidatePruned as e:
                trial.set_user_attr("result", {**record, "status": "pruned", "reason": e.reason,
                                               "metrics": {**metrics, **e.metrics}, "curve": e.curve})
                raise optuna.TrialPruned(e.reason) from None
        else:  # the samplers rank it by its violations; its untrained objectives get the worst value there is
            record["untrained"] = True
        worst = {o.name: math.inf if o.direction == "minimize" else -math.inf for o in cfg.objectives} \
            if record.get("untrained") else {}
        missing = [n for n in obj_names if n not in metrics and n not in worst]
        if missing:
            _fail(trial, f"no value for objective {', '.join(missing)} (does device `{cfg.device}` have a "
                  "latency estimate?)", None, compile_s)
        # one attribute (each costs the storage a commit): status, metrics, constraints
        trial.set_user_attr("result", record)
        return tuple(metrics[n] if n in metrics else worst[n] for n in obj_names)

    done_at_start = finished(study.get_trials(deepcopy=False))

    def stop_when_done(study: optuna.Study, _t: optuna.trial.FrozenTrial) -> None:
        nonlocal ran
        ran += 1
        if cfg.progress is not None:
            cfg.progress(study, cfg, time.perf_counter() - t0)
        # the trials of every worker count; the cached storage reads only what changed, so this costs little
        # (measured: the same trials per second as checking every 16th trial)
        if finished(study.get_trials(deepcopy=False)) >= cfg.trials:
            study.stop()

    interrupted = False
    if done_at_start < cfg.trials:
        try:
            study.optimize(objective, n_trials=None, timeout=cfg.timeout, catch=(CandidateFailed,),
                           callbacks=[stop_when_done], gc_after_trial=False, show_progress_bar=False)
        except KeyboardInterrupt:
            interrupted = True
        except Exception as e:  # Ctrl-C inside Optuna's tell: its `finally` then fails on a variable never set
            if not _from_interrupt(e):
                raise
            interrupted = True
    return SearchOutcome(study, ran, time.perf_counter() - t0, interrupted)


def _from_interrupt(e: BaseException) -> bool:
    """Whether `e` was raised while a KeyboardInterrupt was being handled (its context chain holds one)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__context__
    return False


# ---------------------------------------------------------------- results
def pareto_front(trials: Sequence[Any], objectives: Sequence[ObjectiveSpec]) -> list[Any]:
    """The feasible trials no other feasible trial dominates (one per distinct set of values), ordered by the
    first objective. With one objective: the best trial(s)."""
    ok = [t for t in trials if trial_status(t) == "ok" and t.values is not None]
    signs = [1.0 if o.direction == "minimize" else -1.0 for o in objectives]
    pts: dict[tuple[tuple[str, Any], ...], Any] = {}
    for t in sorted(ok, key=lambda t: t.number):
        key = tuple(sorted(t.params.items()))
        pts.setdefault(key, t)
    cands = list(pts.values())
    vec = {t.number: tuple(s * v for s, v in zip(signs, t.values, strict=True)) for t in cands}

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    front = [t for t in cands if not any(dominates(vec[o.number], vec[t.number]) for o in cands)]
    return sorted(front, key=lambda t: (vec[t.number], t.number))


def hypervolume(points: Sequence[Sequence[float]], ref: Sequence[float]) -> float:
    """Hypervolume dominated by `points` (all objectives minimised) up to `ref`: exact for 2 objectives (a sweep),
    Optuna's algorithm for more."""
    pts = [tuple(p) for p in points if all(x < r for x, r in zip(p, ref, strict=True))]
    if not pts:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    if len(ref) == 2:
        hv, best_y = 0.0, ref[1]
        for x, y in sorted(pts):
            if y < best_y:
                hv += (ref[0] - x) * (best_y - y)
                best_y = y
        return hv
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(np.asarray(pts, dtype=float), np.asarray(ref, dtype=float)))


@dataclass(frozen=True)
class Normaliser:
    """Maps objective vectors to minimised, [0, 1]-scaled ones (ideal 0, nadir 1); the reference point is 1.1."""

    signs: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @staticmethod
    def over(values: Sequence[Sequence[float]], objectives: Sequence[ObjectiveSpec]) -> Normaliser:
        signs = tuple(1.0 if o.direction == "minimize" else -1.0 for o in objectives)
        m = [tuple(s * v for s, v in zip(signs, p, strict=True)) for p in values] or [tuple(0.0 for _ in signs)]
        lo = tuple(min(p[i] for p in m) for i in range(len(signs)))
        hi = tuple(max(p[i] for p in m) for i in range(len(signs)))
        return Normaliser(signs, lo, hi)

    def __call__(self, p: Sequence[float]) -> tuple[float, ...]:
        return tuple((s * v - lo) / ((hi - lo) or 1.0) for s, v, lo, hi in zip(self.signs, p, self.lo, self.hi,
                                                                                strict=True))


def hypervolume_curve(trials: Sequence[Any], norm: Normaliser) -> list[float]:
    """Normalised hypervolume of the feasible trials among the first k, for k = 1..len(trials) (trial order)."""
    out, pts = [], []
    ref = tuple(1.1 for _ in norm.signs)
    for t in sorted(trials, key=lambda t: t.number):
        if trial_status(t) == "ok" and t.values is not None:
            pts.append(norm(t.values))
        out.append(hypervolume(pts, ref) if pts else 0.0)
    return out

