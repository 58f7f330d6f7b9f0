"""`metagenc search FILE`: architecture search over the open dimensions (`?`) of a spec (docs/search.md).

    metagenc search examples/tiny_story.msl --trials 60 -o out/search/
    metagenc search spec.msl --trials 200 --storage postgresql://user@host/db --study s1   # on each of N machines
    metagenc search spec.msl --data corpus/ --trials 40 --train-steps 200   # prototype training, with pruning

Each trial fixes every open dimension (as `--set NAME=VALUE` would), compiles the model in process and reads
the compiler's exact counts and estimates; with `--data`, it also trains the candidate for a fixed budget on the
data (search/training.py) and reads its validation metrics. The spec's hard constraints are the search's
constraints. Running the same command again continues the study: no finished trial is lost, after Ctrl-C or
kill -9. A finished search is recorded in the history (search/history.py), which `--warm-start` reads.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _parser() -> argparse.ArgumentParser:
    from metagen_compiler.search.engine import ESTIMATE_METRICS
    from metagen_compiler.search.training import PRUNERS

    p = argparse.ArgumentParser(
        prog="metagenc search",
        description="Search the open dimensions (`?`) of a spec with Optuna: a Pareto front over the objectives, "
                    "under the spec's constraints. Resumable: run the same command again to continue.",
        epilog="objectives (estimate-only): " + "; ".join(f"{k}: {v}" for k, v in ESTIMATE_METRICS.items())
               + ".\nWith --data, also val_loss, val_<metric> for each metric of the task, train_seconds."
               + "\nDefault: the spec's `metadata { search { objectives = [...] } }`, else params:max latency:min "
               "(+ memory:min when the spec bounds memory), or with --data the task's validation metric and "
               "latency:min. docs/search.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="the spec (.msl or .yaml) whose `?` dimensions to search")
    p.add_argument("-o", "--output", default="out/search", help="output folder (default: out/search)")
    p.add_argument("--trials", type=int, default=50, help="finished trials the study should hold (default: 50)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop this run after SECONDS")
    p.add_argument("--objective", action="append", default=[], metavar="NAME:min|max",
                   help="an objective (repeatable), e.g. --objective params:max --objective latency:min")
    p.add_argument("--sampler", choices=("auto", "nsga2", "tpe", "random"), default="auto",
                   help="auto: TPE, but NSGA-II for several objectives from 500 --trials on where the solver's "
                        "own answer meets the spec's constraints (measured: docs/search.md, Samplers) (default: auto)")
    p.add_argument("--baseline", choices=("none", "random"), default="none",
                   help="also run random search with the same budget (study NAME-random) and plot both")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default: 0)")
    p.add_argument("--storage", metavar="URL",
                   help="an Optuna RDB URL (sqlite:///f.db, postgresql://user@host/db), journal:PATH (several "
                        "processes on one file), or memory (not resumable) (default: sqlite in the output folder)")
    p.add_argument("--study", metavar="NAME", help="the study's name in the storage (default: the model's name)")
    p.add_argument("--device", help="device class for the latency objective (default: the spec's latency "
                                    "constraint's device, else consumer_gpu)")
    p.add_argument("--estimate-only", action="store_true",
                   help="no prototype training: params, FLOPs, latency and memory only (the default without --data)")
    t = p.add_argument_group("prototype training (--data)")
    t.add_argument("--data", metavar="PATH", help="train each feasible candidate on this file or folder (train.py's "
                                                  "--data) and add its validation metrics to the objectives")
    t.add_argument("--train-steps", type=int, default=200, metavar="N", help="optimizer steps a trial (default 200)")
    t.add_argument("--train-seconds", type=float, metavar="S",
                   help="also stop a trial's training S seconds after it starts (its last evaluation counts)")
    t.add_argument("--eval-every", type=int, metavar="N", help="evaluate every N steps (default: steps / 5)")
    t.add_argument("--pruner", choices=("auto", *PRUNERS), default="auto",
                   help="stop hopeless trials at an evaluation: Optuna's MedianPruner or SuccessiveHalvingPruner "
                        "(on the first training objective), or pareto: only a run that two others dominate at that "
                        "step on the training objective and on every cost objective; auto: median with one "
                        "objective, pareto with several of which one is a training metric, else none (default: auto)")
    t.add_argument("--train-args", default="", metavar="'FLAGS'",
                   help="more train.py flags, quoted as one argument: --train-args '--lr 1e-3 --target label' "
                        "(one flag alone: --train-args=--compile)")
    t.add_argument("--train-device", default="cpu", help="train.py's --device: cpu, cuda or auto (default: cpu)")
    h = p.add_argument_group("history and warm start")
    h.add_argument("--history", metavar="FILE",
                   help="the search history, SQLite (default: $XDG_CACHE_HOME/metagen/history.db)")
    h.add_argument("--no-history", action="store_true", help="do not record this search in the history")
    h.add_argument("--warm-start", type=int, nargs="?", const=-1, metavar="N",
                   help="start a new study with up to N (default: a quarter of --trials) Pareto-optimal "
                        "configurations of the nearest earlier searches in the history")
    p.add_argument("--backend", default="pytorch",
                   help="backends for each Pareto candidate's folder (default: pytorch; 'none': report only)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress line and no summary")
    p.add_argument("-I", dest="include", action="append", default=[], metavar="DIR", help="add an import search path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="fix a parameter (repeatable); a fixed `?` leaves the search space")
    p.add_argument("--model", help="the model of the file to search (when it has several)")
    p.add_argument("--device-profile", dest="device_profiles", action="append", default=[], metavar="FILE",
                   help="add the device classes of an MSL file (e.g. from `metagenc calibrate`)")
    return p


def _usage(p: argparse.ArgumentParser, msg: str) -> int:
    p.print_usage(sys.stderr)
    print(f"metagenc search: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def _fmt(name: str, v: float) -> str:
    if name == "latency":
        return f"{v * 1e3:.3g} ms"
    if name in ("memory", "training_memory"):
        return f"{v / 1e9:.3g} GB"
    if name in ("params", "flops", "flops_training"):
        for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= div:
                return f"{v / div:.3g}{unit}"
        return f"{v:.0f}"
    return f"{v:.4g}"


class Progress:
    """The live progress display on stderr when it is a terminal: trial, best so far, time left. With `rich`
    installed, a live status line (redrawn in place by rich); else one plain line redrawn with a carriage return."""

    def __init__(self, enabled: bool, use_rich: bool = True) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.width = 0
        self.live: Any = None
        if enabled and use_rich:
            try:
                from rich.console import Console
                from rich.live import Live
                from rich.text import Text
            except ImportError:
                return
            self._text = Text
            self.live = Live(Text("search: starting"), console=Console(file=sys.stderr), transient=False,
                             refresh_per_second=4)
            self.live.start()

    def __call__(self, study: Any, cfg: Any, elapsed: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        from metagen_compiler.search.engine import finished, trial_status

        trials = study.get_trials(deepcopy=False)
        done = finished(trials)
        ok = [t for t in trials if trial_status(t) == "ok"]
        best = []
        for i, o in enumerate(cfg.objectives):
            if ok:
                pick = min if o.direction == "minimize" else max
                best.append(f"{o.name} {_fmt(o.name, pick(t.values[i] for t in ok))}")
        rate = done / elapsed if elapsed > 0 else 0.0
        left = []
        if cfg.timeout is not None:
            left.append(max(0.0, cfg.timeout - elapsed))
        if rate > 0:
            left.append(max(0, cfg.trials - done) / rate)
        eta = f"~{min(left):.0f}s left" if left else ""
        pruned = sum(1 for t in trials if trial_status(t) == "pruned")
        line = (f"trial {done}/{cfg.trials}  feasible {len(ok)}" + (f"  pruned {pruned}" if pruned else "")
                + f"  best: {', '.join(best) or '-'}  {eta}")
        if self.live is not None:
            self.live.update(self._text(line))
            return
        pad = max(0, self.width - len(line))
        self.width = len(line)
        sys.stderr.write("\r" + line + " " * pad)
        sys.stderr.flush()

    def close(self) -> None:
        """End the line (once)."""
        if self.live is not None:
            self.live.stop()
            self.live = None
            return
        if self.enabled and self.width:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.width = 0


def main(argv: list[str] | None = None) -> int:
    from metagen_compiler.compilation import Options
    from metagen_compiler.diagnostics import render_text
    from metagen_compiler.search.engine import (
        ESTIMATE_METRICS,
        NSGA2_FROM_TRIALS,
        EstimateEvaluator,
        SearchConfig,
        default_objectives,
        parse_objective,
        solver_breaks_a_constraint,
        spec_device,
    )
    from metagen_compiler.search.space import SpaceError, read_space
    from metagen_compiler.semantics.program import read_source

    p = _parser()
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.trials < 1:
        return _usage(p, f"--trials must be 1 or more, got {args.trials}")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        return _usage(p, f"--timeout must be a positive number of seconds, got {args.timeout}")
    training = args.data is not None
    if training and args.estimate_only:
        return _usage(p, "--estimate-only and --data exclude each other (--data trains each candidate)")
    if args.train_steps < 1:
        return _usage(p, f"--train-steps must be 1 or more, got {args.train_steps}")
    if args.train_seconds is not None and not (args.train_seconds > 0 and math.isfinite(args.train_seconds)):
        return _usage(p, f"--train-seconds must be a positive number of seconds, got {args.train_seconds}")
    if args.eval_every is not None and args.eval_every < 1:
        return _usage(p, f"--eval-every must be 1 or more, got {args.eval_every}")
    if args.warm_start is not None and args.warm_start < -1:
        return _usage(p, f"--warm-start takes a number of configurations, got {args.warm_start}")
    if training and not (args.data.startswith("gym:") or Path(args.data).exists()):
        return _usage(p, f"--data `{args.data}` does not exist")
    try:
        train_args = tuple(shlex.split(args.train_args))
    except ValueError as e:
        return _usage(p, f"--train-args: {e}")
    fixed = []
    for o in args.overrides:
        if "=" not in o:
            return _usage(p, f"--set takes NAME=VALUE, got `{o}`")
        k, v = o.split("=", 1)
        fixed.append((k.strip(), v.strip()))
    backends = [] if args.backend.strip() in ("", "none") else [b.strip() for b in args.backend.split(",")]
    from metagen_backends import BACKENDS

    for b in backends:
        if b not in BACKENDS:
            return _usage(p, f"unknown backend `{b}` (available: {', '.join(sorted(BACKENDS))}, none)")
    try:
        source = read_source(args.file)
    except (OSError, UnicodeDecodeError) as e:
        print(f"metagenc search: error: cannot read `{args.file}`: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        return EXIT_INPUT
    options = Options(search_paths=tuple(Path(x) for x in args.include), model=args.model,
                      device_profiles=tuple(Path(x) for x in args.device_profiles))
    try:
        space = read_space(source, options, tuple(fixed))
    except SpaceError as e:
        if e.diagnostics:
            sys.stderr.write(render_text(e.diagnostics))
            if any(d.code == "I001" for d in e.diagnostics):
                return EXIT_INTERNAL
        else:
            print(f"metagenc search: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    spec = space.comp.spec
    assert spec is not None
    out_dir = Path(args.output)
    evaluator: Any = EstimateEvaluator()
    known = list(ESTIMATE_METRICS)
    if training:
        from metagen_compiler.search.training import training_metrics

        known += training_metrics(spec.task)
    try:
        objectives = [parse_objective(o, known) for o in args.objective]
    except ValueError as e:
        return _usage(p, str(e))
    if not objectives:
        try:
            objectives = spec_objectives(space, known, training)
        except SpecObjectiveError as e:
            sys.stderr.write(render_text([e.diagnostic]))
            return EXIT_INPUT
    if len({o.name for o in objectives}) != len(objectives):
        return _usage(p, "an objective is given twice")
    if not objectives:
        objectives = (training_objectives(space) if training else default_objectives(space))
    if training:
        from metagen_compiler.search.training import TrainingEvaluator, auto_pruner, training_metrics

        names = training_metrics(spec.task)
        trained = [o.name for o in objectives if o.name in names]
        bad = _check_train_args(train_args)
        if bad:
            return _usage(p, f"--train-args: {bad}")
        # the pruner watches the first training objective, else the task's validation metric
        watch = trained[0] if trained else training_objectives(space)[0].name
        evaluator = TrainingEvaluator(
            data=args.data, out_dir=out_dir, task=spec.task, steps=args.train_steps, seconds=args.train_seconds,
            eval_every=args.eval_every, train_args=train_args, watch=watch, seed=args.seed, device=args.train_device,
            pruner=args.pruner if args.pruner != "auto" else auto_pruner([o.name for o in objectives], names),
            costs=tuple((o.name, o.direction) for o in objectives if o.name not in names))
    device = args.device or spec_device(space)
    if args.device is not None:
        from metagen_compiler.semantics.program import device_profiles

        assert space.comp.program is not None
        devices = device_profiles(space.comp.program)
        if device not in devices:
            return _usage(p, f"unknown device `{device}` (known: {', '.join(sorted(devices))})")
    cfg = SearchConfig(source=source, options=options, space=space, objectives=objectives,
                       trials=args.trials, out_dir=out_dir, sampler=args.sampler, seed=args.seed,
                       storage=args.storage, study=args.study, timeout=args.timeout, device=device,
                       fixed=tuple(fixed), evaluator=evaluator)
    if args.sampler == "auto" and len(objectives) > 1 and args.trials >= NSGA2_FROM_TRIALS:
        cfg.tight = solver_breaks_a_constraint(source, options, tuple(fixed))  # one compile, the solver's
    return _run(cfg, args, backends)


class SpecObjectiveError(Exception):
    def __init__(self, diagnostic: Any) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def spec_objectives(space: Any, known: list[str], training: bool) -> list[Any]:
    """The objectives the spec names: `metadata { search { objectives = ["val_loss:min", "latency:min"] } }`, or
    the same as a group, `objectives { val_loss = min; latency = min }`. Objectives of prototype training in a
    search without --data are left out (an estimate-only search of the same spec). [] when the spec names none.
    A name or direction that is not one is an E203 diagnostic at the entry."""
    from metagen_compiler.diagnostics import DiagnosticBag
    from metagen_compiler.search.engine import parse_objective
    from metagen_compiler.search.training import training_metrics

    spec = space.comp.spec
    group = spec.metadata.get("search") if isinstance(spec.metadata, dict) else None
    if not isinstance(group, dict) or "objectives" not in group:
        return []
    raw = group["objectives"]
    span = _metadata_span(space.comp.model, ("search", "objectives"))
    if isinstance(raw, dict):
        texts = [f"{k}:{v}" for k, v in raw.items()]
    elif isinstance(raw, list):
        texts = [str(x) for x in raw]
    else:
        texts = [str(raw)]
    trained = set(training_metrics(spec.task))
    out = []
    for text in texts:
        name = text.partition(":")[0].strip()
        if not training and name in trained:
            continue
        try:
            out.append(parse_objective(text, known))
        except ValueError as e:
            bag = DiagnosticBag()
            bag.error("E203", f"search objective: {e}", span,
                      hint="objectives are NAME:min or NAME:max (docs/search.md, Objectives)")
            raise SpecObjectiveError(bag.items[-1]) from None
    return out


def _metadata_span(model: Any, path: tuple[str, ...]) -> Any:
    """The span of the metadata entry at `path` (the group or field), or the model's where there is none."""
    from metagen_compiler.syntax import ast as A

    entries = getattr(model, "metadata", ()) or ()
    found = None
    for name in path:
        nxt = next((e for e in entries if e.name.name == name), None)
        if nxt is None:
            break
        found = nxt
        entries = nxt.entries if isinstance(nxt, A.MetaGroup) else ()
    if found is not None:
        return found.span
    return getattr(model, "span", None)


def training_objectives(space: Any) -> list[Any]:
    """Defaults with prototype training: the task's validation metric (the first metric of the task; the loss
    where the task has none) and the latency on the spec's device."""
    from metagen_compiler.search.engine import ObjectiveSpec
    from metagen_compiler.search.training import metric_direction, training_metrics

    names = training_metrics(space.comp.spec.task)
    quality = names[1] if len(names) > 2 else names[0]
    return [ObjectiveSpec(quality, metric_direction(quality)), ObjectiveSpec("latency", "minimize")]


def _check_train_args(train_args: tuple[str, ...]) -> str | None:
    """What train.py's parser says of the extra flags (None: they parse). The search's own flags are refused."""
    from metagen_backends.pytorch.training import train

    ours = {"--model", "--data", "--out", "--run-name", "--steps", "--eval-every", "--resume"}
    taken = [a.split("=", 1)[0] for a in train_args if a.split("=", 1)[0] in ours]
    if taken:
        return f"{taken[0]} is set by the search (use its own flag)"
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            train.parser().parse_args(["--data", "x", *train_args])
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if "error:" in ln]
        return lines[-1].split("error:", 1)[1].strip() if lines else "train.py does not take these flags"
    return None


def _run(cfg: Any, args: argparse.Namespace, backends: list[str]) -> int:
    from metagen_compiler.outputs import OutputError
    from metagen_compiler.search.engine import StorageError, StudyMismatch

    progress = Progress(sys.stderr.isatty() and not args.quiet)
    cfg.progress = progress
    try:
        return _search_and_write(cfg, args, backends, progress)
    except (StudyMismatch, StorageError, OutputError) as e:
        print(f"metagenc search: error: {e}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, StudyMismatch) else EXIT_INPUT
    finally:
        progress.close()


def _search_and_write(cfg: Any, args: argparse.Namespace, backends: list[str], progress: Progress) -> int:
    from dataclasses import replace

    from metagen_compiler.outputs import OutputError
    from metagen_compiler.search.engine import finished, run_search, trial_status
    from metagen_compiler.search.history import HistoryError, default_path, nearest_configurations, record_search
    from metagen_compiler.search.outputs import search_summary, write_pareto, write_plots, write_summary, write_trials

    try:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder `{cfg.out_dir}`: {e.strerror or e}") from None
    history = Path(args.history) if args.history else default_path()
    data_size = _data_size(args.data) if args.data else None
    if args.warm_start is not None:
        limit = args.warm_start if args.warm_start >= 0 else max(1, cfg.trials // 4)
        try:
            cfg.warm_start = nearest_configurations(history, cfg, limit, data_size=data_size)
        except HistoryError as e:
            print(f"metagenc search: warning: {e}; starting cold", file=sys.stderr)
        if not args.quiet:
            origins = sorted({o.split(" trial ")[0] for _, o in cfg.warm_start})
            print(f"warm start: {len(cfg.warm_start)} configurations from {', '.join(origins) or 'no earlier search'}"
                  f" ({history}); a study that has trials already is not seeded again", file=sys.stderr)
    try:
        outcome = run_search(cfg)
    finally:
        progress.close()
    trials = outcome.study.get_trials(deepcopy=False)
    write_trials(cfg.out_dir, trials, cfg.objectives)
    if outcome.interrupted:
        print(f"metagenc search: interrupted after {finished(trials)} finished trials (all kept in the study); "
              "run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    baseline = None
    if args.baseline == "random":
        base_cfg = replace(cfg, sampler="random", study=f"{cfg.study or cfg.space.model}-random", progress=None,
                           warm_start=[])
        baseline = run_search(base_cfg).study.get_trials(deepcopy=False)
    summary = search_summary(cfg, trials, baseline, outcome.seconds)
    plots = [] if args.no_plots else write_plots(cfg, trials, baseline, summary)
    summary_path = write_summary(cfg.out_dir, summary)
    pareto_path, cands = write_pareto(cfg, trials, backends, summary, plots)
    if not args.no_history and finished(trials) >= cfg.trials:
        try:
            record_search(history, cfg, trials, data_size)
        except HistoryError as e:
            print(f"metagenc search: warning: {e}", file=sys.stderr)
    if not args.quiet:
        ok = sum(1 for t in trials if trial_status(t) == "ok")
        failed = sum(1 for t in trials if trial_status(t) == "failed")
        bad = sum(1 for t in trials if trial_status(t) == "infeasible")
        pruned = sum(1 for t in trials if trial_status(t) == "pruned")
        rate = outcome.ran / outcome.seconds if outcome.seconds > 0 else 0.0
        short = "" if finished(trials) >= cfg.trials else f" of {cfg.trials} (--timeout; run again to continue)"
        print(f"search {cfg.space.model}: {finished(trials)} trials{short} ({outcome.ran} in this run, {rate:.1f}/s): "
              f"{ok} feasible, {bad} break a constraint, {failed} failed"
              + (f", {pruned} pruned" if pruned else "") + f"; {len(cands)} Pareto-optimal "
              f"({', '.join(o.text for o in cfg.objectives)} on {cfg.device})", file=sys.stderr)
        for c in cands:
            vals = ", ".join(f"{k}={v}" for k, v in c["values"].items())
            objs = ", ".join(f"{k} {_fmt(k, v)}" for k, v in c["objectives"].items())
            print(f"  trial {c['trial']}: {vals}  ->  {objs}", file=sys.stderr)
        print(f"wrote {pareto_path}, {cfg.out_dir / 'trials.jsonl'}, {summary_path}"
              + "".join(f", {x}" for x in plots), file=sys.stderr)
    return EXIT_OK


def _data_size(data: str) -> dict[str, int]:
    """Files and bytes of the training data (a file, or a folder walked), for the history's spec features."""
    path = Path(data)
    if path.is_file():
        return {"files": 1, "bytes": path.stat().st_size}
    files = size = 0
    for f in path.rglob("*") if path.is_dir() else ():
        if f.is_file():
            files += 1
            size += f.stat().st_size
    return {"files": files, "bytes": size}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
