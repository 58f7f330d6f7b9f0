"""What `metagenc search` writes in its output folder, besides the study database:

- `trials.jsonl`: every trial of the study, one JSON object a line, in trial order, failed and interrupted ones
  included with their reason;
- `pareto.json`: the objectives, the constraints and the Pareto-optimal feasible candidates;
- `pareto/trial_NNNN/`: each candidate compiled through the normal path from its own spec with the holes filled
  (`<model>.msl`, or `<model>.yaml` for a YAML spec; `report.json`, `model.py`, ...), written all or nothing
  (`outputs.commit`);
- `search.json`: the search in numbers (counts, hypervolume against trials, parameter importances, timings), which
  the paper's search section prints (backends/latex/sections_search.py);
- `pareto.png`, `hypervolume.png`, `importance.png`: the front, the hypervolume against trials (next to the random
  baseline when one ran) and the importance of each dimension per objective (optuna.importance), when matplotlib
  is installed; a candidate folder's paper (`--backend latex`) has them as figures.

Every file is rewritten from the study at the end of a run, so a resumed search rewrites them whole.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metagen_compiler.escape import json_text
from metagen_compiler.outputs import OutputError
from metagen_compiler.search.engine import (
    Normaliser,
    ObjectiveSpec,
    SearchConfig,
    hypervolume_curve,
    pareto_front,
    resolve_sampler,
    result,
    trial_status,
)
from metagen_compiler.search.space import FAMILY, active_dims, filled_text

__all__ = ["search_summary", "trial_record", "write_pareto", "write_plots", "write_summary", "write_trials"]

_FOLDER = re.compile(r"^trial_\d+$")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write `{path}`: {e.strerror or e}") from None


def trial_record(t: Any, objectives: Sequence[ObjectiveSpec]) -> dict[str, Any]:
    status = trial_status(t)
    rec: dict[str, Any] = {"trial": t.number, "status": status, "values": dict(t.params)}
    if t.values is not None and status in ("ok", "infeasible") and not result(t).get("untrained"):
        rec["objectives"] = {o.name: v for o, v in zip(objectives, t.values, strict=True)}
    res = result(t)
    if "metrics" in res:
        rec["metrics"] = res["metrics"]
    if "constraints" in res:
        rec["constraints"] = res["constraints"]
        rec["feasible"] = status == "ok"
    if status in ("failed", "pruned"):
        rec["reason"] = res.get("reason", "") or ("pruned" if status == "pruned" else "")
    if res.get("curve"):
        rec["curve"] = res["curve"]
    if res.get("untrained"):
        rec["untrained"] = True
    elif status == "interrupted":
        rec["reason"] = "interrupted (the worker was stopped or died); a resumed search runs its values again (retry_of)"
    for k in ("retry_of", "worker", "warm_start"):
        if k in t.user_attrs:
            rec[k] = t.user_attrs[k]
    if "compile_s" in res:
        rec["compile_s"] = res["compile_s"]
    if t.duration is not None:
        rec["seconds"] = round(t.duration.total_seconds(), 6)
    return rec


def write_trials(out_dir: Path, trials: Sequence[Any], objectives: Sequence[ObjectiveSpec]) -> Path:
    path = out_dir / "trials.jsonl"
    lines = [json_text(trial_record(t, objectives)) for t in sorted(trials, key=lambda t: t.number)]
    _atomic_write(path, "".join(line + "\n" for line in lines))
    return path


def write_pareto(cfg: SearchConfig, trials: Sequence[Any], backends: list[str],
                 summary: dict[str, Any] | None = None,
                 plots: Sequence[Path] = ()) -> tuple[Path, list[dict[str, Any]]]:
    """pareto.json and one compiled folder per Pareto-optimal candidate (its filled spec compiled anew). With the
    latex backend and a `summary` (search_summary), each candidate's paper has a search section and the plots."""
    from metagen_compiler.diagnostics import BackendError
    from metagen_compiler.driver import compile_model_set
    from metagen_compiler.outputs import commit, write_outputs
    from metagen_compiler.passes.parse import is_yaml
    from metagen_compiler.span import SourceFile

    front = pareto_front(trials, cfg.objectives)
    root = cfg.out_dir / "pareto"
    # the filled spec in the language of the user's file: <model>.msl, or <model>.yaml for a YAML spec
    spec_name = cfg.space.model + (Path(cfg.source.path).suffix if is_yaml(cfg.source.path) else ".msl")
    staged: dict[str, dict[str, str | bytes]] = {}
    cands = []
    for t in front:
        values = {d.key: t.params[d.key] if d.categorical else int(t.params[d.key])
                  for d in active_dims(cfg.space, t.params)}
        text = filled_text(cfg.source, cfg.space, values)
        folder = f"trial_{t.number:04d}"
        entry: dict[str, Any] = {"trial": t.number, "values": values,
                                 **({"family": values[FAMILY]} if cfg.space.families else {}),
                                 "objectives": {o.name: v for o, v in zip(cfg.objectives, t.values, strict=True)},
                                 "metrics": result(t).get("metrics", {}),
                                 "constraints": result(t).get("constraints", {}),
                                 "folder": f"pareto/{folder}"}
        comps = compile_model_set(SourceFile(cfg.source.path, text), cfg.options, overrides=cfg.fixed)
        comp = comps[0]
        if comp.bag.has_errors or comp.graph is None:
            entry["error"] = "; ".join(f"error[{d.code}]: {d.message}" for d in comp.bag.items
                                       if d.severity.value == "error")
            entry.pop("folder")
        else:
            entry["verified"] = comp.graph.g.graph["estimates"]["params"] == entry["metrics"].get("params")
            try:
                files = dict(write_outputs(comp, root, backends)[1])
            except BackendError as e:
                entry["error"] = "; ".join(getattr(d, "message", str(d)) for d in e.diagnostics)
                entry.pop("folder")
            else:
                files[spec_name] = text
                if "latex" in backends and summary is not None:
                    files.update(_paper_with_search(comp, files, summary, t.number, plots))
                staged[folder] = files
        cands.append(entry)
    if staged:
        commit(root, staged)
    if root.is_dir():  # folders of an earlier run's front that this front no longer holds
        for p in root.iterdir():
            if _FOLDER.match(p.name) and p.name not in staged and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
    n_ok = sum(1 for t in trials if trial_status(t) == "ok")
    doc = {
        "model": cfg.space.model,
        "study": cfg.study or cfg.space.model,
        "objectives": [{"name": o.name, "direction": o.direction} for o in cfg.objectives],
        "device": cfg.device,
        "space": {d.key: {**_describe(d), **({"families": list(d.families)} if d.families else {})}
                  for d in cfg.space.dims},
        "trials": len(trials),
        "feasible": n_ok,
        "failed": sum(1 for t in trials if trial_status(t) == "failed"),
        "infeasible": sum(1 for t in trials if trial_status(t) == "infeasible"),
        "candidates": cands,
    }
    path = cfg.out_dir / "pareto.json"
    _atomic_write(path, json_text(doc, indent=2) + "\n")
    return path, cands


def write_plots(cfg: SearchConfig, trials: Sequence[Any], baseline: Sequence[Any] | None = None,
                summary: dict[str, Any] | None = None) -> list[Path]:
    """pareto.png (the first two objectives), hypervolume.png and importance.png; nothing when matplotlib is not
    installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out = []
    objs = cfg.objectives
    front = pareto_front(trials, objs)
    ok = [t for t in trials if trial_status(t) == "ok"]
    bad = [t for t in trials if trial_status(t) == "infeasible" and all(math.isfinite(v) for v in t.values[:2])]
    if len(objs) >= 2:
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
        for group, style, label in ((bad, {"marker": "x", "color": "tab:red", "alpha": 0.5}, "breaks a constraint"),
                                    (ok, {"marker": "o", "color": "tab:gray", "alpha": 0.5}, "feasible"),
                                    (front, {"marker": "o", "color": "tab:blue"}, "Pareto-optimal")):
            if group:
                ax.scatter([t.values[0] for t in group], [t.values[1] for t in group], label=label, s=18,
                           **style)
        if front:
            ax.plot([t.values[0] for t in front], [t.values[1] for t in front], color="tab:blue", lw=1)
        if ok:  # frame the feasible region; candidates far outside it would squash it to a corner
            for i, setlim in ((0, ax.set_xlim), (1, ax.set_ylim)):
                lo, hi = min(t.values[i] for t in ok), max(t.values[i] for t in ok)
                pad = (hi - lo) * 0.15 or abs(hi) * 0.1 or 1.0
                setlim(lo - pad, hi + pad)
        ax.set_xlabel(f"{objs[0].name} ({objs[0].direction})")
        ax.set_ylabel(f"{objs[1].name} ({objs[1].direction})")
        ax.set_title(f"{cfg.space.model}: {len(trials)} trials")
        ax.legend(fontsize=8)
        out.append(_save(plt, fig, cfg.out_dir / "pareto.png"))
    every = [t for t in [*trials, *(baseline or [])] if trial_status(t) == "ok"]
    if every:
        norm = Normaliser.over([t.values for t in every], objs)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for run, label in ((trials, cfg.sampler if cfg.sampler != "auto" else "search"), (baseline, "random")):
            if run:
                curve = hypervolume_curve(run, norm)
                ax.plot(range(1, len(curve) + 1), curve, label=label)
        ax.set_xlabel("trial")
        ax.set_ylabel("hypervolume (normalised)")
        ax.legend(fontsize=8)
        out.append(_save(plt, fig, cfg.out_dir / "hypervolume.png"))
    imp = summary["importance"] if summary is not None else importances(cfg, trials)
    if imp:
        dims = [d.key for d in cfg.space.dims]
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(dims) * max(1, len(imp)) ** 0.5), dpi=100)
        height = 0.8 / len(imp)
        for k, (name, vals) in enumerate(imp.items()):
            ax.barh([i + k * height for i in range(len(dims))], [vals.get(d, 0.0) for d in dims], height=height,
                    label=name)
        ax.set_yticks([i + height * (len(imp) - 1) / 2 for i in range(len(dims))], dims)
        ax.invert_yaxis()
        ax.set_xlabel("importance (PED-ANOVA)")
        ax.legend(fontsize=8)
        out.append(_save(plt, fig, cfg.out_dir / "importance.png"))
    return out


def _paper_with_search(comp: Any, files: dict[str, str | bytes], summary: dict[str, Any], trial: int,
                       plots: Sequence[Path]) -> dict[str, str | bytes]:
    """The candidate's report.json with the search (`search`: the summary and which trial this is) and its paper
    built again from it: the paper's search section and its figures (the PNGs, under paper/figures/)."""
    import json

    from metagen_backends.latex import build_paper

    raw = files["report.json"]
    report = json.loads(raw if isinstance(raw, str) else raw.decode("utf-8"))
    figures = [path.stem for path in plots if path.is_file()]
    report["search"] = {**summary, "this_trial": trial, "figures": figures}
    out: dict[str, str | bytes] = {"report.json": json_text(report, indent=2) + "\n"}
    report = json.loads(str(out["report.json"]))  # as the file holds it: the ledger checks it
    out.update(build_paper(comp, report))
    for path in plots:
        if path.is_file():
            out[f"paper/figures/search_{path.name}"] = path.read_bytes()
    return out


def search_summary(cfg: SearchConfig, trials: Sequence[Any], baseline: Sequence[Any] | None = None,
                   seconds: float | None = None) -> dict[str, Any]:
    """The search in numbers, for search.json and the paper: what was searched, the counts by status, the
    normalised hypervolume after each trial (and the random baseline's), the importance of each dimension per
    objective, the front, and where the time went (compile, training, the rest)."""
    import statistics

    from metagen_compiler.search.engine import Normaliser

    by: dict[str, int] = {}
    for t in trials:
        st = trial_status(t)
        by[st] = by.get(st, 0) + 1
    front = pareto_front(trials, cfg.objectives)
    ok = [t for t in [*trials, *(baseline or [])] if trial_status(t) == "ok"]
    norm = Normaliser.over([t.values for t in ok], cfg.objectives)
    curve = hypervolume_curve(trials, norm)
    base_curve = hypervolume_curve(baseline, norm) if baseline else []
    timed = [t for t in trials if t.duration is not None and isinstance(result(t).get("compile_s"), float)]
    trained = [t for t in timed if isinstance(result(t).get("metrics", {}).get("train_seconds"), float)]
    total = [t.duration.total_seconds() for t in timed]
    compile_s = [result(t)["compile_s"] for t in timed]
    sampler = resolve_sampler(cfg.sampler, len(cfg.objectives), cfg.trials, cfg.tight)
    evaluator = cfg.evaluator
    training = {k: getattr(evaluator, k) for k in ("data", "steps", "seconds", "pruner", "watch")} \
        if getattr(evaluator, "trains", False) else None
    if training is not None:
        training["eval_every"] = getattr(evaluator, "every", None)
    doc: dict[str, Any] = {
        "model": cfg.space.model, "study": cfg.study or cfg.space.model, "sampler": sampler, "seed": cfg.seed,
        "device": cfg.device,
        "objectives": [{"name": o.name, "direction": o.direction} for o in cfg.objectives],
        "space": {d.key: {**_describe(d), "size": len(d.domain), **({"families": list(d.families)} if d.families
                                                                       else {})} for d in cfg.space.dims},
        "space_size": len(cfg.space.dims),
        "constraints": sorted({k for t in trials for k in result(t).get("constraints", {})}),
        "training": training,
        "trials": len(trials), "status": dict(sorted(by.items())),
        "warm_started": sum(1 for t in trials if "warm_start" in t.user_attrs),
        "hypervolume": {"final": curve[-1] if curve else 0.0, "curve": curve,
                        "random_final": base_curve[-1] if base_curve else None, "random_curve": base_curve,
                        "reference": "objectives scaled to [0, 1] over every feasible trial (ideal 0, nadir 1), "
                                     "reference point 1.1 each"},
        "importance": importances(cfg, trials),
        "front_size": len(front),
        "front": [{"trial": t.number, "values": dict(t.params),
                   "objectives": {o.name: v for o, v in zip(cfg.objectives, t.values, strict=True)}} for t in front],
        "timing": _timing(seconds, timed, trained, statistics.fmean(total) if total else None,
                          statistics.fmean(compile_s) if compile_s else None),
    }
    return doc


def _timing(seconds: float | None, timed: Sequence[Any], trained: Sequence[Any], trial_s: float | None,
            compile_s: float | None) -> dict[str, Any]:
    """Where a trial's time went: its compile, its training (trials that trained), and the rest (the search
    machinery: sampling, storage, writing the candidate's model.py; per trial, over trained trials where any)."""
    import statistics

    out: dict[str, Any] = {"seconds": seconds, "trial_s_mean": trial_s, "compile_s_mean": compile_s,
                           "train_s_mean": None, "trained_trial_s_mean": None, "overhead_s_mean": None}
    base = trained or timed
    if not base:
        return out
    wall = statistics.fmean(t.duration.total_seconds() for t in base)
    comp = statistics.fmean(result(t)["compile_s"] for t in base)
    train = statistics.fmean(result(t)["metrics"]["train_seconds"] for t in trained) if trained else 0.0
    if trained:
        out["train_s_mean"], out["trained_trial_s_mean"] = train, wall
    out["overhead_s_mean"] = max(0.0, wall - comp - train)
    return out


def _describe(d: Any) -> dict[str, Any]:
    """A dimension's domain as JSON data (an enumerated choice's values, or a range's bounds and step)."""
    if hasattr(d, "describe"):
        return dict(d.describe())
    return {"from": d.domain.start, "to": d.domain[-1], "step": d.domain.step}


def importances(cfg: SearchConfig, trials: Sequence[Any]) -> dict[str, dict[str, float]]:
    """{objective: {dimension: importance}} over the trials with objective values, feasible or not (an estimate
    is as informative where a constraint breaks; untrained ones have none): Optuna's default evaluator, PED-ANOVA,
    which ranks what leads to low values, so a maximised objective is negated. {} where there are too few trials."""
    import warnings

    import optuna

    ok = [t for t in trials if trial_status(t) in ("ok", "infeasible") and t.values is not None and t.params
          and all(math.isfinite(v) for v in t.values)]
    if len(ok) < 4 or len(cfg.space.dims) < 1:
        return {}
    out: dict[str, dict[str, float]] = {}
    directions: list[Any] = [o.direction for o in cfg.objectives]
    study = optuna.create_study(directions=directions)
    study.add_trials([optuna.trial.create_trial(params=t.params, distributions=t.distributions, values=t.values)
                      for t in ok])
    for i, o in enumerate(cfg.objectives):
        sign = 1.0 if o.direction == "minimize" else -1.0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(
                    study, target=lambda t, i=i, sign=sign: sign * t.values[i])  # type: ignore[misc]
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue
        out[o.name] = {k: float(v) for k, v in sorted(imp.items())}
    return out


def write_summary(out_dir: Path, summary: dict[str, Any]) -> Path:
    path = out_dir / "search.json"
    _atomic_write(path, json_text(summary, indent=2) + "\n")
    return path


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise OutputError(f"cannot write `{path}`: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path
