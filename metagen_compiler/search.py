"""`metagenc search FILE`: architecture search over the open dimensions (`?`) of a spec (docs/search.md).

    metagenc search examples/tiny_story.msl --trials 60 -o out/search/
    metagenc search spec.msl --trials 200 --storage postgresql://user@host/db --study s1   # on each of N machines

Each trial fixes every open dimension (as `--set NAME=VALUE` would), compiles the model in process and reads
the compiler's exact counts and estimates; the spec's hard constraints are the search's constraints. Running the
same command again continues the study: no finished trial is lost, after Ctrl-C or kill -9.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _parser() -> argparse.ArgumentParser:
    from .search_engine import ESTIMATE_METRICS

    p = argparse.ArgumentParser(
        prog="metagenc search",
        description="Search the open dimensions (`?`) of a spec with Optuna: a Pareto front over the objectives, "
                    "under the spec's constraints. Resumable: run the same command again to continue.",
        epilog="objectives (estimate-only): " + "; ".join(f"{k}: {v}" for k, v in ESTIMATE_METRICS.items())
               + ".\nDefault: params:max latency:min (+ memory:min when the spec bounds memory). docs/search.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="the spec (.msl or .yaml) whose `?` dimensions to search")
    p.add_argument("-o", "--output", default="out/search", help="output folder (default: out/search)")
    p.add_argument("--trials", type=int, default=50, help="finished trials the study should hold (default: 50)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop this run after SECONDS")
    p.add_argument("--objective", action="append", default=[], metavar="NAME:min|max",
                   help="an objective (repeatable), e.g. --objective params:max --objective latency:min")
    p.add_argument("--sampler", choices=("auto", "nsga2", "tpe", "random"), default="auto",
                   help="auto: NSGA-II for several objectives, TPE for one (default: auto)")
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
                   help="no prototype training: params, FLOPs, latency and memory only (the only mode for now)")
    p.add_argument("--data", metavar="DIR", help="data for prototype training (not available yet)")
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
    """One line on stderr, redrawn after each trial when stderr is a terminal: trial, best so far, time left."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.width = 0

    def __call__(self, study: Any, cfg: Any, elapsed: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        from .search_engine import finished, trial_status

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
        line = (f"trial {done}/{cfg.trials}  feasible {len(ok)}  best: {', '.join(best) or '-'}  {eta}")
        pad = max(0, self.width - len(line))
        self.width = len(line)
        sys.stderr.write("\r" + line + " " * pad)
        sys.stderr.flush()

    def close(self) -> None:
        """End the line (once)."""
        if self.enabled and self.width:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.width = 0


def main(argv: list[str] | None = None) -> int:
    from .compilation import Options
    from .diagnostics import render_text
    from .program import read_source
    from .search_engine import (
        ESTIMATE_METRICS,
        EstimateEvaluator,
        SearchConfig,
        default_objectives,
        parse_objective,
        spec_device,
    )
    from .search_space import SpaceError, read_space

    p = _parser()
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.trials < 1:
        return _usage(p, f"--trials must be 1 or more, got {args.trials}")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        return _usage(p, f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.data is not None:
        return _usage(p, "prototype training (--data) is not available yet: it needs the training loop of the "
                         "training issue; use --estimate-only")
    fixed = []
    for o in args.overrides:
        if "=" not in o:
            return _usage(p, f"--set takes NAME=VALUE, got `{o}`")
        k, v = o.split("=", 1)
        fixed.append((k.strip(), v.strip()))
    evaluator = EstimateEvaluator()
    known = list(dict.fromkeys([*ESTIMATE_METRICS, *evaluator.metrics]))
    try:
        objectives = [parse_objective(o, known) for o in args.objective]
    except ValueError as e:
        return _usage(p, str(e))
    if len({o.name for o in objectives}) != len(objectives):
        return _usage(p, "an objective is given twice")
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
    device = args.device or spec_device(space)
    if args.device is not None:
        from .program import device_profiles

        assert space.comp.program is not None
        devices = device_profiles(space.comp.program)
        if device not in devices:
            return _usage(p, f"unknown device `{device}` (known: {', '.join(sorted(devices))})")
    out_dir = Path(args.output)
    cfg = SearchConfig(source=source, options=options, space=space, objectives=objectives or default_objectives(space),
                       trials=args.trials, out_dir=out_dir, sampler=args.sampler, seed=args.seed,
                       storage=args.storage, study=args.study, timeout=args.timeout, device=device,
                       fixed=tuple(fixed), evaluator=evaluator)
    return _run(cfg, args, backends)


def _run(cfg: Any, args: argparse.Namespace, backends: list[str]) -> int:
    from .outputs import OutputError
    from .search_engine import StorageError, StudyMismatch

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

    from .outputs import OutputError
    from .search_engine import finished, run_search, trial_status
    from .search_outputs import write_pareto, write_plots, write_trials

    try:
        cfg.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder `{cfg.out_dir}`: {e.strerror or e}") from None
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
        base_cfg = replace(cfg, sampler="random", study=f"{cfg.study or cfg.space.model}-random", progress=None)
        baseline = run_search(base_cfg).study.get_trials(deepcopy=False)
    pareto_path, cands = write_pareto(cfg, trials, backends)
    plots = [] if args.no_plots else write_plots(cfg, trials, baseline)
    if not args.quiet:
        ok = sum(1 for t in trials if trial_status(t) == "ok")
        failed = sum(1 for t in trials if trial_status(t) == "failed")
        bad = sum(1 for t in trials if trial_status(t) == "infeasible")
        rate = outcome.ran / outcome.seconds if outcome.seconds > 0 else 0.0
        short = "" if finished(trials) >= cfg.trials else f" of {cfg.trials} (--timeout; run again to continue)"
        print(f"search {cfg.space.model}: {finished(trials)} trials{short} ({outcome.ran} in this run, {rate:.1f}/s): "
              f"{ok} feasible, {bad} break a constraint, {failed} failed; {len(cands)} Pareto-optimal "
              f"({', '.join(o.text for o in cfg.objectives)} on {cfg.device})", file=sys.stderr)
        for c in cands:
            vals = ", ".join(f"{k}={v}" for k, v in c["values"].items())
            objs = ", ".join(f"{k} {_fmt(k, v)}" for k, v in c["objectives"].items())
            print(f"  trial {c['trial']}: {vals}  ->  {objs}", file=sys.stderr)
        print(f"wrote {pareto_path}, {cfg.out_dir / 'trials.jsonl'}"
              + "".join(f", {x}" for x in plots), file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
