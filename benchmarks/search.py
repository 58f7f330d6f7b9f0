"""Estimate-only architecture search (`metagenc search`): throughput, and NSGA-II / TPE against random search.

1. Throughput: one search of a fixed number of trials per spec, in this process, with the default storage
   (SQLite in a temporary folder) and with in-memory storage: trials per second, the compile's share of a trial,
   and the search machinery's cost per trial (a trial's wall time less its compile).
2. Quality: the hypervolume of the feasible front after N trials, for NSGA-II, TPE and random search with the same
   budget, over several seeds (mean and standard deviation), on specs of different families. The objectives are the
   defaults (params:max, latency:min on the spec's device); each spec's hypervolume is normalised over every
   feasible point any run found (ideal 0, nadir 1, reference point 1.1 per objective), so the runs of one spec
   compare directly.

Prints a table and writes benchmarks/results/search.json.
Usage: python benchmarks/search.py [--trials 100] [--seeds 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from metagen_compiler.compilation import Options
from metagen_compiler.search_engine import (
    Normaliser,
    SearchConfig,
    default_objectives,
    hypervolume,
    run_search,
    spec_device,
    trial_status,
)
from metagen_compiler.search_space import read_space
from metagen_compiler.span import SourceFile

# tiny_story with a latency bound that the solver's answer (30M parameters, 5.75 ms) breaks: W002 after solving
FAST_STORY = (ROOT / "examples" / "tiny_story.msl").read_text().replace("latency < 20ms on consumer_gpu",
                                                                       "latency < 3ms on consumer_gpu")
SPECS = {  # name -> (path for diagnostics, text); three families
    "tiny_story_3ms (transformer.decoder)": ("tiny_story_3ms.msl", FAST_STORY),
    "credit_default (tabular.mlp)": ("examples/tabular_classifier.msl",
                                     (ROOT / "examples" / "tabular_classifier.msl").read_text()),
    "s4d_lm (ssm)": ("examples/s4d_lm.msl", (ROOT / "examples" / "s4d_lm.msl").read_text()),
}


def _config(name: str, sampler: str, seed: int, trials: int, storage: str | None, out: Path) -> SearchConfig:
    path, text = SPECS[name]
    src = SourceFile(path, text)
    space = read_space(src, Options())
    return SearchConfig(source=src, options=Options(), space=space, objectives=default_objectives(space),
                        trials=trials, out_dir=out, sampler=sampler, seed=seed, storage=storage,
                        study=f"{sampler}-{seed}", device=spec_device(space))


def throughput(name: str, trials: int) -> list[dict[str, Any]]:
    rows = []
    for storage in ("sqlite", "memory"):
        with tempfile.TemporaryDirectory() as d:
            cfg = _config(name, "auto", 0, trials, "memory" if storage == "memory" else None, Path(d))
            outcome = run_search(cfg)
            ts = outcome.study.get_trials(deepcopy=False)
            compile_s = [t.user_attrs.get("result", {}).get("compile_s", 0.0) for t in ts]
            per_trial = outcome.seconds / max(1, outcome.ran)
            rows.append({"spec": name, "storage": storage, "trials": outcome.ran, "seconds": outcome.seconds,
                         "trials_per_s": outcome.ran / outcome.seconds,
                         "compile_s_mean": statistics.fmean(compile_s),
                         "overhead_s_per_trial": per_trial - statistics.fmean(compile_s)})
    return rows


def quality(name: str, samplers: list[str], seeds: int, trials: int) -> list[dict[str, Any]]:
    runs: dict[tuple[str, int], list[Any]] = {}
    with tempfile.TemporaryDirectory() as d:
        for sampler in samplers:
            for seed in range(seeds):
                cfg = _config(name, sampler, seed, trials, "memory", Path(d))
                runs[sampler, seed] = run_search(cfg).study.get_trials(deepcopy=False)
    objs = cfg.objectives  # the defaults: the same for every run of the spec
    feasible = [t.values for ts in runs.values() for t in ts if trial_status(t) == "ok"]
    norm = Normaliser.over(feasible, objs)
    ref = tuple(1.1 for _ in objs)
    checkpoints = sorted({max(1, trials // 4), max(1, trials // 2), trials})
    rows = []
    for sampler in samplers:
        hv: dict[int, list[float]] = {k: [] for k in checkpoints}
        feas: list[float] = []
        failed: list[float] = []
        for seed in range(seeds):
            ts = sorted(runs[sampler, seed], key=lambda t: t.number)
            for k in checkpoints:
                hv[k].append(hypervolume([norm(t.values) for t in ts[:k] if trial_status(t) == "ok"], ref))
            feas.append(sum(1 for t in ts if trial_status(t) == "ok") / len(ts))
            failed.append(sum(1 for t in ts if trial_status(t) == "failed") / len(ts))
        rows.append({"spec": name, "sampler": sampler, "trials": trials, "seeds": seeds,
                     "hv_mean": {k: statistics.fmean(v) for k, v in hv.items()},
                     "hv_std": {k: statistics.pstdev(v) for k, v in hv.items()},
                     "hv": hv[trials], "feasible_share": statistics.fmean(feas),
                     "failed_share": statistics.fmean(failed)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100, help="trials per search in the comparison (default 100)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per sampler (default 5)")
    ap.add_argument("--throughput-trials", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="small sizes (CI smoke): 10 trials, 2 seeds, 2 specs")
    ap.add_argument("--out", default=str(RESULTS / "search.json"))
    args = ap.parse_args()
    specs = list(SPECS)
    samplers = ["nsga2", "tpe", "random"]
    if args.quick:
        args.trials, args.seeds, args.throughput_trials, specs = 10, 2, 10, specs[:2]
    t0 = time.perf_counter()
    tput = [r for s in specs for r in throughput(s, args.throughput_trials)]
    qual = [r for s in specs for r in quality(s, samplers, args.seeds, args.trials)]
    print(f"{'spec':40} {'storage':8} {'trials':>6} {'trials/s':>9} {'compile ms':>11} {'overhead ms':>12}")
    for r in tput:
        print(f"{r['spec']:40} {r['storage']:8} {r['trials']:6d} {r['trials_per_s']:9.1f} "
              f"{r['compile_s_mean'] * 1e3:11.1f} {r['overhead_s_per_trial'] * 1e3:12.1f}")
    print()
    print(f"{'spec':40} {'sampler':8} {'hv@N/4':>14} {'hv@N/2':>14} {'hv@N':>14} {'feasible':>9} {'failed':>7}  (N={args.trials}, "
          f"{args.seeds} seeds, mean ± sd)")
    for r in qual:
        cells = [f"{r['hv_mean'][k]:.3f} ± {r['hv_std'][k]:.3f}" for k in sorted(r["hv_mean"])]
        cells = ([""] * (3 - len(cells))) + cells
        print(f"{r['spec']:40} {r['sampler']:8} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14} "
              f"{r['feasible_share']:9.0%} {r['failed_share']:7.0%}")
    result = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "processor": platform.processor() or platform.machine()},
              "quick": args.quick, "seconds": time.perf_counter() - t0,
              "objectives": "defaults: params:max, latency:min on the spec's device",
              "throughput": tput, "quality": qual}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
