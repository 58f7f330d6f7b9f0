"""Architecture search (`metagenc search`): throughput, NSGA-II / TPE against random search (estimated objectives and
prototype training on real data), the warm start's gain, and the search machinery's cost per trial.

1. Throughput: one search of a fixed number of trials per spec, in this process, with the default storage
   (SQLite in a temporary folder) and with in-memory storage: trials per second, the compile's share of a trial,
   and the search machinery's cost per trial (a trial's wall time less its compile).
2. Quality: the hypervolume of the feasible front after N trials, for NSGA-II, TPE and random search with the same
   budget, over several seeds (mean and standard deviation), on specs of different families. The objectives are the
   defaults (params:max, latency:min on the spec's device); each spec's hypervolume is normalised over every
   feasible point any run found (ideal 0, nadir 1, reference point 1.1 per objective), so the runs of one spec
   compare directly.
3. Prototype training: the same comparison where each feasible candidate is trained on small real data by the
   generated train.py, in process (metagen_compiler/search/training.py), under each pruner (none, Optuna's median,
   the Pareto pruner; --pruner): a tabular MLP on scikit-learn's breast-cancer table (val_loss:min, latency:min) and
   a small decoder LM on the GPL-3 text that Debian ships (val_perplexity:min, latency:min); also the optimizer
   steps each search trained (deterministic, unlike its seconds on a shared machine). One torch thread (OMP_NUM_THREADS=1): on a shared 2-core machine two threads
   spin against each other's load (measured: a 100-step MLP run took 17 to 38 s with two threads, under 1 s with
   one). Also the search machinery's time per trained trial against its training time.
4. Warm start (estimated objectives): two earlier searches of specs like the new one go into a history; the new
   search runs cold, and warm-started with a quarter of its budget taken from the nearest earlier fronts, over
   several seeds; reported: after how many trials each reaches the cold search's final hypervolume.

Prints tables and writes benchmarks/results/search.json.
Usage: python benchmarks/search.py [--trials 100] [--seeds 5] [--train-trials 12] [--pruner none,median,pareto]
       [--samplers nsga2,tpe,random] [--specs WORD,...] [--skip PART] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported (see 3. above)
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from metagen_compiler.compilation import Options
from metagen_compiler.search.engine import (
    Normaliser,
    ObjectiveSpec,
    SearchConfig,
    default_objectives,
    hypervolume,
    hypervolume_curve,
    run_search,
    spec_device,
    trial_status,
)
from metagen_compiler.search.space import read_space
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


# prototype training: (spec path, text, data, train.py flags, objectives)
GPL = Path("/usr/share/common-licenses/GPL-3")
LM = """msl 1
import std.transformer

model gpl_lm {
  modality text -> text
  task generation
  objective autoregressive
  constraints { params <= 400k; context = 64; latency < 0.7ms on cpu }
  architecture transformer.decoder {
    vocab = 384
    layers = ? in 1..4
    d_model = ? multiple_of 16 in 16..128
    heads = d_model / 16
    norm = rmsnorm
    position = rope
    mlp = swiglu
    bias = false
    tied = true
  }
}
"""
CREDIT = (ROOT / "examples" / "tabular_classifier.msl").read_text().replace(
    "hidden = ? multiple_of 32 in 64..1024", "hidden = ? multiple_of 32 in 32..512").replace(
    "layers = ? in 1..6", "layers = ? in 1..4")
TRAIN_SPECS = {
    "credit_default on breast cancer (tabular.mlp)": ("credit.msl", CREDIT, "cancer", ("--target", "diagnosis"),
                                                      ("val_loss", "latency")),
    "gpl_lm on GPL-3 text (transformer.decoder)": ("gpl_lm.msl", LM, "gpl", ("--batch-size", "16", "--lr", "3e-3"),
                                                   ("val_perplexity", "latency")),
}
# warm start: (earlier specs, the new one), estimated objectives
WARM = {
    "tiny_story, latency 2.5 and 3.5 ms before, 3 ms now": (
        [FAST_STORY.replace("latency < 3ms", "latency < 2.5ms"), FAST_STORY.replace("latency < 3ms", "latency < 3.5ms")],
        FAST_STORY),
    "credit_default, params 300k and 800k before, 500k now": (
        [SPECS["credit_default (tabular.mlp)"][1].replace("params <= 500k", "params <= 300k"),
         SPECS["credit_default (tabular.mlp)"][1].replace("params <= 500k", "params <= 800k")],
        SPECS["credit_default (tabular.mlp)"][1]),
}


def _config(name: str, sampler: str, seed: int, trials: int, storage: str | None, out: Path) -> SearchConfig:
    path, text = SPECS[name]
    return _config_of(path, text, sampler, seed, trials, storage, out)


def _config_of(path: str, text: str, sampler: str, seed: int, trials: int, storage: str | None,
               out: Path) -> SearchConfig:
    src = SourceFile(path, text)
    space = read_space(src, Options())
    return SearchConfig(source=src, options=Options(), space=space, objectives=default_objectives(space),
                        trials=trials, out_dir=out, sampler=sampler, seed=seed, storage=storage,
                        study=f"{sampler}-{seed}", device=spec_device(space))


def throughput(name: str, trials: int) -> list[dict[str, Any]]:
    rows = []
    for storage in ("sqlite", "memory"):
        with tempfile.TemporaryDirectory() as d:
            # NSGA-II, the sampler these throughputs were measured with (auto's choice for several objectives then)
            cfg = _config(name, "nsga2", 0, trials, "memory" if storage == "memory" else None, Path(d))
            outcome = run_search(cfg)
            ts = outcome.study.get_trials(deepcopy=False)
            compile_s = [t.user_attrs.get("result", {}).get("compile_s", 0.0) for t in ts]
            per_trial = outcome.seconds / max(1, outcome.ran)
            rows.append({"spec": name, "storage": storage, "trials": outcome.ran, "seconds": outcome.seconds,
                         "trials_per_s": outcome.ran / outcome.seconds,
                         "compile_s_mean": statistics.fmean(compile_s),
                         "overhead_s_per_trial": per_trial - statistics.fmean(compile_s)})
    return rows


def quality(name: str, samplers: list[str], seeds: int, trials: int,
            checkpoints: list[int] | None = None) -> list[dict[str, Any]]:
    runs: dict[tuple[str, int], list[Any]] = {}
    seconds: dict[str, list[float]] = {s: [] for s in samplers}
    with tempfile.TemporaryDirectory() as d:
        for sampler in samplers:
            for seed in range(seeds):
                cfg = _config(name, sampler, seed, trials, "memory", Path(d))
                t0 = time.perf_counter()
                runs[sampler, seed] = run_search(cfg).study.get_trials(deepcopy=False)
                seconds[sampler].append(time.perf_counter() - t0)
    objs = cfg.objectives  # the defaults: the same for every run of the spec
    feasible = [t.values for ts in runs.values() for t in ts if trial_status(t) == "ok"]
    norm = Normaliser.over(feasible, objs)
    ref = tuple(1.1 for _ in objs)
    checkpoints = sorted({*(k for k in checkpoints or () if k < trials), trials}) if checkpoints \
        else sorted({max(1, trials // 4), max(1, trials // 2), trials})
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
                     "failed_share": statistics.fmean(failed), "seconds_per_search": statistics.fmean(seconds[sampler])})
    return rows


def _data(kind: str, folder: Path) -> str:
    if kind == "gpl":
        return str(GPL)
    sys.path.insert(0, str(ROOT / "tests"))
    from training_helpers import write_cancer

    return str(write_cancer(folder / "cancer.csv")[0])


def training_quality(name: str, samplers: list[str], seeds: int, trials: int, steps: int,
                     pruners: list[str] | str = "median") -> dict[str, Any]:
    """NSGA-II / TPE / random with prototype training, under each pruner (`pareto:K`: the Pareto pruner stopping a
    run that K others dominate; `pareto` is K = 2), and the machinery's cost per trial. Every run of the spec is
    normalised together (pruners and samplers alike), so the rows compare directly."""
    from metagen_compiler.search.training import TrainingEvaluator, metric_direction

    path, text, data_kind, train_args, objective_names = TRAIN_SPECS[name]
    pruners = [pruners] if isinstance(pruners, str) else pruners
    runs: dict[tuple[str, str, int], list[Any]] = {}
    with tempfile.TemporaryDirectory() as d:
        data = _data(data_kind, Path(d))
        for pruner in pruners:
            kind, _, k = pruner.partition(":")
            for sampler in samplers:
                for seed in range(seeds):
                    cfg = _config_of(path, text, sampler, seed, trials, "memory", Path(d) / "out")
                    assert cfg.space.comp.spec is not None
                    cfg.objectives = [ObjectiveSpec(n, metric_direction(n) if n.startswith("val_") else "minimize")
                                      for n in objective_names]
                    cfg.evaluator = TrainingEvaluator(
                        data=data, out_dir=Path(d) / "out", task=cfg.space.comp.spec.task, steps=steps,
                        eval_every=max(1, steps // 4), train_args=train_args, watch=objective_names[0], pruner=kind,
                        seed=0, costs=tuple((o.name, o.direction) for o in cfg.objectives[1:]),
                        dominators=int(k or 2))
                    runs[pruner, sampler, seed] = run_search(cfg).study.get_trials(deepcopy=False)
    objs = cfg.objectives
    feasible = [t.values for ts in runs.values() for t in ts if trial_status(t) == "ok"]
    norm = Normaliser.over(feasible, objs)
    ref = tuple(1.1 for _ in objs)
    rows = []
    every = [t for ts in runs.values() for t in ts]
    for pruner in pruners:
        for sampler in samplers:
            hv, counts, train_s, steps_run = [], {"ok": 0, "infeasible": 0, "pruned": 0, "failed": 0}, [], []
            for seed in range(seeds):
                ts = runs[pruner, sampler, seed]
                hv.append(hypervolume([norm(t.values) for t in ts if trial_status(t) == "ok"], ref))
                metrics = [t.user_attrs.get("result", {}).get("metrics", {}) for t in ts]
                train_s.append(sum(m.get("train_seconds", 0.0) for m in metrics))
                # steps trained up to the last evaluation (a pruned run's: where it was stopped): deterministic
                steps_run.append(sum(m.get("train_steps", 0.0) for m in metrics))
                for t in ts:
                    counts[trial_status(t)] = counts.get(trial_status(t), 0) + 1
            rows.append({"spec": name, "sampler": sampler, "trials": trials, "seeds": seeds, "steps": steps,
                         "pruner": pruner, "hv": hv, "hv_mean": statistics.fmean(hv), "hv_std": statistics.pstdev(hv),
                         "status": counts, "train_s_per_search": statistics.fmean(train_s),
                         "train_steps_per_search": statistics.fmean(steps_run)})
    trained = [t for t in every if isinstance(t.user_attrs.get("result", {}).get("metrics", {}).get("train_seconds"),
                                              float) and t.duration is not None]
    train_s = [t.user_attrs["result"]["metrics"]["train_seconds"] for t in trained]
    wall = [t.duration.total_seconds() for t in trained]
    comp = [t.user_attrs["result"]["compile_s"] for t in trained]
    overhead = [w - c - s for w, c, s in zip(wall, comp, train_s, strict=True)]
    cost = {"spec": name, "trained_trials": len(trained), "train_s_mean": statistics.fmean(train_s) if train_s else None,
            "compile_s_mean": statistics.fmean(comp) if comp else None,
            "overhead_s_mean": statistics.fmean(overhead) if overhead else None,
            "overhead_share": (sum(overhead) / sum(wall)) if wall else None,
            "pruned_share": sum(1 for t in every if trial_status(t) == "pruned") / max(1, len(every))}
    return {"rows": rows, "cost": cost}


def _reach(curve: list[float], target: float) -> int | None:
    """The first trial (1-based) after which `curve` is at `target` or above; None if never."""
    return next((k + 1 for k, v in enumerate(curve) if v >= target - 1e-12), None)


def warm_start(name: str, seeds: int, trials: int) -> dict[str, Any]:
    """Trials the warm-started search needs to reach the cold search's final hypervolume (TPE, estimated objectives;
    the warm start: a quarter of the budget from the nearest earlier fronts)."""
    from metagen_compiler.search.history import nearest_configurations, record_search

    earlier, new = WARM[name]
    per_seed = []
    with tempfile.TemporaryDirectory() as d:
        history = Path(d) / "history.db"
        for i, text in enumerate(earlier):  # the earlier searches: one each, their own budget
            cfg = _config_of(f"earlier_{i}.msl", text, "tpe", 100 + i, trials, "memory", Path(d))
            cfg.study = f"earlier-{i}"
            record_search(history, cfg, run_search(cfg).study.get_trials(deepcopy=False))
        for seed in range(seeds):
            cold = _config_of("new.msl", new, "tpe", seed, trials, "memory", Path(d))
            cold.study = f"cold-{seed}"
            warm = _config_of("new.msl", new, "tpe", seed, trials, "memory", Path(d))
            warm.study = f"warm-{seed}"
            warm.warm_start = nearest_configurations(history, warm, max(1, trials // 4))
            ct = run_search(cold).study.get_trials(deepcopy=False)
            wt = run_search(warm).study.get_trials(deepcopy=False)
            norm = Normaliser.over([t.values for t in [*ct, *wt] if trial_status(t) == "ok"], cold.objectives)
            cc, wc = hypervolume_curve(ct, norm), hypervolume_curve(wt, norm)
            target = cc[-1]
            per_seed.append({"seed": seed, "cold_final_hv": target, "warm_final_hv": wc[-1],
                             "cold_trials_to_target": _reach(cc, target), "warm_trials_to_target": _reach(wc, target),
                             "enqueued": len(warm.warm_start)})
    reached = [r["warm_trials_to_target"] for r in per_seed if r["warm_trials_to_target"] is not None]
    cold_k = [r["cold_trials_to_target"] for r in per_seed]
    return {"case": name, "trials": trials, "seeds": seeds, "per_seed": per_seed,
            "cold_trials_mean": statistics.fmean(cold_k), "cold_trials_std": statistics.pstdev(cold_k),
            "warm_reached": len(reached),
            "warm_trials_mean": statistics.fmean(reached) if reached else None,
            "warm_trials_std": statistics.pstdev(reached) if reached else None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100, help="trials per search in the comparison (default 100)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per sampler (default 5)")
    ap.add_argument("--throughput-trials", type=int, default=100)
    ap.add_argument("--train-trials", type=int, default=12, help="trials per search with prototype training")
    ap.add_argument("--train-steps", type=int, default=40, help="optimizer steps per prototype")
    ap.add_argument("--pruner", default="none,median,pareto",
                    help="the pruners of the prototype-training searches, comma-separated: median, halving, none, "
                         "pareto (pareto:K: stop a run K others dominate) (default: none,median,pareto)")
    ap.add_argument("--warm-trials", type=int, default=100, help="trials per search in the warm-start measurement")
    ap.add_argument("--skip", action="append", default=[], choices=["throughput", "quality", "training", "warm"],
                    help="leave a part out (repeatable)")
    ap.add_argument("--quick", action="store_true", help="small sizes (CI smoke): 10 trials, 2 seeds, 2 specs")
    ap.add_argument("--samplers", default="nsga2,tpe,random", help="samplers to compare (comma-separated)")
    ap.add_argument("--checkpoints", default="", help="trial counts at which to report the hypervolume "
                                                      "(comma-separated; default: N/4, N/2, N)")
    ap.add_argument("--specs", default="", help="only the specs whose names contain one of these words (comma-separated)")
    ap.add_argument("--out", default=str(RESULTS / "search.json"))
    args = ap.parse_args()
    words = [w for w in args.specs.split(",") if w]
    specs = [s for s in SPECS if not words or any(w in s for w in words)]
    samplers = [s for s in args.samplers.split(",") if s]
    train_specs = [s for s in TRAIN_SPECS if not words or any(w in s for w in words)]
    warm_cases = list(WARM)
    if args.quick:
        args.trials, args.seeds, args.throughput_trials, specs = 10, 2, 10, specs[:2]
        args.train_trials, args.train_steps, args.warm_trials = 3, 8, 10
        train_specs, warm_cases = train_specs[:1], warm_cases[1:]
    previous = json.loads(Path(args.out).read_text()) if args.skip and Path(args.out).is_file() else {}
    t0 = time.perf_counter()
    tput = [r for s in specs for r in throughput(s, args.throughput_trials)] if "throughput" not in args.skip \
        else previous.get("throughput", [])
    marks = [int(k) for k in args.checkpoints.split(",") if k] or None
    qual = [r for s in specs for r in quality(s, samplers, args.seeds, args.trials, marks)] \
        if "quality" not in args.skip else previous.get("quality", [])
    train = [training_quality(s, samplers, 1 if args.quick else args.seeds, args.train_trials, args.train_steps,
                              args.pruner.split(",")) for s in train_specs] if "training" not in args.skip else previous.get("training", [])
    warm = [warm_start(c, 2 if args.quick else args.seeds, args.warm_trials) for c in warm_cases] \
        if "warm" not in args.skip else previous.get("warm_start", [])
    print(f"{'spec':40} {'storage':8} {'trials':>6} {'trials/s':>9} {'compile ms':>11} {'overhead ms':>12}")
    for r in tput:
        print(f"{r['spec']:40} {r['storage']:8} {r['trials']:6d} {r['trials_per_s']:9.1f} "
              f"{r['compile_s_mean'] * 1e3:11.1f} {r['overhead_s_per_trial'] * 1e3:12.1f}")
    print()
    print(f"{'spec':40} {'sampler':8} {'hv@N/4':>14} {'hv@N/2':>14} {'hv@N':>14} {'feasible':>9} {'failed':>7}  (N={args.trials}, "
          f"{args.seeds} seeds, mean ± sd)")
    for r in qual:
        cells = [f"{r['hv_mean'][k]:.3f} ± {r['hv_std'][k]:.3f}" for k in sorted(r["hv_mean"], key=int)][-3:]
        cells = ([""] * (3 - len(cells))) + cells
        print(f"{r['spec']:40} {r['sampler']:8} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14} "
              f"{r['feasible_share']:9.0%} {r['failed_share']:7.0%}")
    print()
    print(f"{'prototype training':48} {'sampler':8} {'pruner':9} {'hv@N (mean ± sd)':>18} {'ok':>4} {'infeas.':>8} "
          f"{'pruned':>7} {'failed':>7} {'train s':>8} {'steps':>7}")
    for block in train:
        for r in block["rows"]:
            c = r["status"]
            print(f"{r['spec']:48} {r['sampler']:8} {r.get('pruner', ''):9} {r['hv_mean']:9.3f} ± {r['hv_std']:.3f} "
                  f"{c.get('ok', 0):4d} {c.get('infeasible', 0):8d} {c.get('pruned', 0):7d} {c.get('failed', 0):7d} "
                  f"{r.get('train_s_per_search', 0.0):8.1f} {r.get('train_steps_per_search', 0.0):7.0f}")
        c = block["cost"]
        if c["train_s_mean"] is not None:
            print(f"  per trained trial: training {c['train_s_mean']:.2f} s, compile {c['compile_s_mean'] * 1e3:.1f} ms, "
                  f"search machinery {c['overhead_s_mean'] * 1e3:.1f} ms ({c['overhead_share']:.1%} of the wall time); "
                  f"pruned {c['pruned_share']:.0%} of trials")
    print()
    for w in warm:
        print(f"warm start, {w['case']}: cold reaches its final hypervolume after {w['cold_trials_mean']:.1f} ± "
              f"{w['cold_trials_std']:.1f} trials; warm after "
              + (f"{w['warm_trials_mean']:.1f} ± {w['warm_trials_std']:.1f}" if w["warm_trials_mean"] is not None
                 else "-") + f" (reached in {w['warm_reached']}/{w['seeds']} seeds, N={w['trials']})")
    result = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "note": "a 2-core development machine shared with other jobs (load average 10 to 15 while "
                                  "this ran): times vary between runs; hypervolumes do not",
                          "torch_threads": os.environ.get("OMP_NUM_THREADS")},
              "quick": args.quick, "seconds": time.perf_counter() - t0,
              "objectives": "quality, warm_start: defaults (params:max, latency:min on the spec's device); "
                            "training: the spec's val metric:min, latency:min",
              "throughput": tput, "quality": qual, "training": train, "warm_start": warm}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
