"""What `metagenc search` writes in its output folder, besides the study database:

- `trials.jsonl`: every trial of the study, one JSON object a line, in trial order, failed and interrupted ones
  included with their reason;
- `pareto.json`: the objectives, the constraints and the Pareto-optimal feasible candidates;
- `pareto/trial_NNNN/`: each candidate compiled through the normal path from its own spec with the holes filled
  (`<model>.msl`, or `<model>.yaml` for a YAML spec; `report.json`, `model.py`, ...), written all or nothing
  (`outputs.commit`);
- `pareto.png`, `hypervolume.png`: the front and the hypervolume against trials (next to the random baseline
  when one ran), when matplotlib is installed.

Every file is rewritten from the study at the end of a run, so a resumed search rewrites them whole.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .escape import json_text
from .outputs import OutputError
from .search_engine import (
    Normaliser,
    ObjectiveSpec,
    SearchConfig,
    hypervolume_curve,
    pareto_front,
    result,
    trial_status,
)
from .search_space import filled_text

__all__ = ["trial_record", "write_pareto", "write_plots", "write_trials"]

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
    if t.values is not None and status in ("ok", "infeasible"):
        rec["objectives"] = {o.name: v for o, v in zip(objectives, t.values, strict=True)}
    res = result(t)
    if "metrics" in res:
        rec["metrics"] = res["metrics"]
    if "constraints" in res:
        rec["constraints"] = res["constraints"]
        rec["feasible"] = status == "ok"
    if status == "failed":
        rec["reason"] = res.get("reason", "")
    elif status == "interrupted":
        rec["reason"] = "interrupted (the worker was stopped or died); a resumed search runs its values again (retry_of)"
    for k in ("retry_of", "worker"):
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


def write_pareto(cfg: SearchConfig, trials: Sequence[Any], backends: list[str]) -> tuple[Path, list[dict[str, Any]]]:
    """pareto.json and one compiled folder per Pareto-optimal candidate (its filled spec compiled anew)."""
    from .diagnostics import BackendError
    from .driver import compile_model_set
    from .outputs import commit, write_outputs
    from .passes.parse import is_yaml
    from .span import SourceFile

    front = pareto_front(trials, cfg.objectives)
    root = cfg.out_dir / "pareto"
    # the filled spec in the language of the user's file: <model>.msl, or <model>.yaml for a YAML spec
    spec_name = cfg.space.model + (Path(cfg.source.path).suffix if is_yaml(cfg.source.path) else ".msl")
    staged: dict[str, dict[str, str | bytes]] = {}
    cands = []
    for t in front:
        values = {d.name: int(t.params[d.name]) for d in cfg.space.dims}
        text = filled_text(cfg.source, cfg.space, values)
        folder = f"trial_{t.number:04d}"
        entry: dict[str, Any] = {"trial": t.number, "values": values,
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
        "space": {d.name: {"from": d.domain.start, "to": d.domain[-1], "step": d.domain.step}
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


def write_plots(cfg: SearchConfig, trials: Sequence[Any], baseline: Sequence[Any] | None = None) -> list[Path]:
    """pareto.png (the first two objectives) and hypervolume.png; nothing when matplotlib is not installed."""
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
    bad = [t for t in trials if trial_status(t) == "infeasible"]
    if len(objs) >= 2:
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
        for group, style, label in ((bad, {"marker": "x", "color": "tab:red", "alpha": 0.5}, "breaks a constraint"),
                                    (ok, {"marker": "o", "color": "tab:gray", "alpha": 0.5}, "feasible"),
                                    (front, {"marker": "o", "color": "tab:blue"}, "Pareto-optimal")):
            if group:
                ax.scatter([t.values[0] for t in group], [t.values[1] for t in group], label=label, s=18,
                           **style)  # type: ignore[arg-type]
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
    return out


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise OutputError(f"cannot write `{path}`: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return path
