"""The search history: what earlier searches found, for `metagenc search --warm-start` (docs/search.md).

A SQLite file (default `$XDG_CACHE_HOME/metagen/history.db`, else `~/.cache/metagen/history.db`; `--history PATH`)
records every finished search: the spec's features (modalities, task, family, constraints, dimensions and their
domains, data size), the objectives and device, and each feasible configuration with its measured objective values
and whether it was on the search's Pareto front.

`--warm-start` looks up the earlier searches nearest the new spec (`distance`: family, task, modalities,
constraints, the dimensions they share) and enqueues their Pareto-optimal configurations, each fitted into the new
domain (clipped to its range, rounded to its step), as the first trials of the new study. Searches of the same
study are not their own warm start: the study already holds them.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from metagen_compiler.search.engine import ObjectiveSpec, SearchConfig, pareto_front, trial_status

__all__ = ["HistoryError", "default_path", "distance", "nearest_configurations", "record_search", "spec_features"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS searches (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  finished REAL NOT NULL,
  model TEXT NOT NULL,
  study TEXT NOT NULL,
  spec_sha256 TEXT NOT NULL,
  features TEXT NOT NULL,
  objectives TEXT NOT NULL,
  device TEXT NOT NULL,
  trials INTEGER NOT NULL,
  feasible INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS configurations (
  search_id INTEGER NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
  trial INTEGER NOT NULL,
  dims TEXT NOT NULL,
  objectives TEXT NOT NULL,
  metrics TEXT NOT NULL,
  pareto INTEGER NOT NULL,
  PRIMARY KEY (search_id, trial)
);
"""


class HistoryError(Exception):
    """The history file cannot be opened or written (one line for the user)."""


def default_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "metagen" / "history.db"


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=60)
        con.executescript(SCHEMA)
        return con
    except (OSError, sqlite3.Error) as e:
        raise HistoryError(f"cannot open the search history `{path}`: {e}") from None


def spec_features(cfg: SearchConfig, data_size: dict[str, int] | None = None) -> dict[str, Any]:
    """What makes two specs alike: modalities, task, family, constraints (kind, op, bound as a number, device),
    the open dimensions and their domains, and the size of the training data (files, bytes) when there is one."""
    spec = cfg.space.comp.spec
    assert spec is not None
    cons = []
    for c in spec.constraints:
        v = c.value
        bound = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
        cons.append({"kind": c.kind, "op": c.op, "bound": bound, "device": c.device})
    return {"inputs": [m for m, _ in spec.inputs], "outputs": [m for m, _ in spec.outputs], "task": spec.task,
            "family": spec.family.qualname, "constraints": cons,
            "dims": {d.key: list(d.choices) if getattr(d, "categorical", False) else
                     [d.domain.start, d.domain[-1], d.domain.step] for d in cfg.space.dims},
            "data": data_size or {}}


def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """0 for the same kind of spec, larger for less alike ones: a different family counts 4, task 2, each
    differing modality 1 (over the union), each dimension of one but not the other 1 (over the union), each
    constraint kind their log bounds differ by (base 10, at most 2; a kind only one has: 1), and where both searches
    trained on data, the log10 ratio of the data's sizes in bytes (at most 1)."""
    d = 4.0 * (a["family"] != b["family"]) + 2.0 * (a["task"] != b["task"])
    for key in ("inputs", "outputs"):
        sa, sb = set(a[key]), set(b[key])
        d += len(sa ^ sb) / max(1, len(sa | sb))
    da, db = set(a["dims"]), set(b["dims"])
    d += len(da ^ db) / max(1, len(da | db))
    ca = {(c["kind"], c.get("device")): c["bound"] for c in a["constraints"]}
    cb = {(c["kind"], c.get("device")): c["bound"] for c in b["constraints"]}
    for k in set(ca) | set(cb):
        x, y = ca.get(k), cb.get(k)
        if isinstance(x, float) and isinstance(y, float) and x > 0 and y > 0:
            d += min(2.0, abs(math.log10(x) - math.log10(y)))
        elif x != y:
            d += 1.0
    sa, sb = a.get("data", {}).get("bytes"), b.get("data", {}).get("bytes")
    if isinstance(sa, int) and isinstance(sb, int) and sa > 0 and sb > 0:
        d += min(1.0, abs(math.log10(sa) - math.log10(sb)))
    return d


def record_search(path: Path, cfg: SearchConfig, trials: Sequence[Any],
                  data_size: dict[str, int] | None = None) -> int:
    """Add a finished search to the history (its feasible configurations, the Pareto-optimal ones marked);
    a search of the same study recorded before is replaced. Returns the search's id."""
    study = cfg.study or cfg.space.model
    ok = [t for t in trials if trial_status(t) == "ok" and t.values is not None]
    front = {t.number for t in pareto_front(trials, cfg.objectives)}
    feats = spec_features(cfg, data_size)
    from metagen_compiler.search.engine import study_identity

    sha = study_identity(cfg)["spec_sha256"]
    try:
        with closing(_connect(path)) as con, con:
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("DELETE FROM searches WHERE study = ? AND spec_sha256 = ?", (study, sha))
            cur = con.execute(
                "INSERT INTO searches (finished, model, study, spec_sha256, features, objectives, device, trials, "
                "feasible) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), cfg.space.model, study, sha, json.dumps(feats, sort_keys=True),
                 json.dumps([o.text for o in cfg.objectives]), cfg.device, len(trials), len(ok)))
            sid = int(cur.lastrowid or 0)
            con.executemany(
                "INSERT INTO configurations (search_id, trial, dims, objectives, metrics, pareto) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(sid, t.number, json.dumps(dict(t.params), sort_keys=True),
                  json.dumps({o.name: v for o, v in zip(cfg.objectives, t.values, strict=True)}),
                  json.dumps(_finite(t.user_attrs.get("result", {}).get("metrics", {}))), int(t.number in front))
                 for t in ok])
    except sqlite3.Error as e:
        raise HistoryError(f"cannot write the search history `{path}`: {e}") from None
    return sid


def _finite(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def _fit(value: Any, dim: Any) -> Any:
    """`value` in the domain of `dim`: an enumerated choice as it is where the dimension has it (else None); a
    number clipped to the range, rounded to its nearest step."""
    if getattr(dim, "categorical", False):
        return value if any(type(c) is type(value) and c == value for c in dim.choices) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    domain = dim.domain
    lo, hi, step = domain.start, domain[-1], domain.step
    v = min(max(value, lo), hi)
    return int(lo + round((v - lo) / step) * step if v < hi else hi)


def nearest_configurations(path: Path, cfg: SearchConfig, limit: int, neighbours: int = 3,
                           data_size: dict[str, int] | None = None) -> list[tuple[dict[str, Any], str]]:
    """Up to `limit` distinct configurations of the new space, from the Pareto fronts of the `neighbours` earlier
    searches nearest this spec (sharing at least one dimension; another study than this one), nearest first and
    taken in turn from each, ordered within a front by its first objective. Each comes with its origin
    (`model/study trial N, distance D`) for trials.jsonl."""
    if not path.is_file():
        return []
    feats = spec_features(cfg, data_size)
    study = cfg.study or cfg.space.model
    try:
        with closing(_connect(path)) as con:
            rows = con.execute("SELECT id, model, study, features, objectives FROM searches ORDER BY id").fetchall()
            ranked = []
            for sid, model, st, f, objs in rows:
                other = json.loads(f)
                if st == study and other == feats:
                    continue  # this very search, recorded by an earlier run of it
                if not set(other["dims"]) & set(feats["dims"]):
                    continue
                ranked.append((distance(feats, other), sid, model, st, json.loads(objs)))
            ranked.sort(key=lambda r: (r[0], -r[1]))  # nearest first; of two as near, the latest
            fronts = []
            for dist, sid, model, st, objs in ranked[:neighbours]:
                rows2 = con.execute("SELECT trial, dims, objectives FROM configurations WHERE search_id = ? AND "
                                    "pareto = 1 ORDER BY trial", (sid,)).fetchall()
                first = ObjectiveSpec(*_objective(objs[0])) if objs else None
                entries = [(int(tr), json.loads(dims), json.loads(vals)) for tr, dims, vals in rows2]
                if first is not None:
                    sign = 1.0 if first.direction == "minimize" else -1.0
                    entries.sort(key=lambda e: sign * float(e[2].get(first.name, 0.0)))
                fronts.append([(dims, f"{model}/{st} trial {tr}, distance {dist:.2f}") for tr, dims, _ in entries])
    except (sqlite3.Error, ValueError, KeyError) as e:
        raise HistoryError(f"cannot read the search history `{path}`: {e}") from None
    out: list[tuple[dict[str, Any], str]] = []
    seen: set[tuple[tuple[str, Any], ...]] = set()
    domains = {d.key: d for d in cfg.space.dims}
    fixed = {k for k, _ in cfg.fixed}
    for i in range(max((len(f) for f in fronts), default=0)):
        for f in fronts:
            if i >= len(f) or len(out) >= limit:
                continue
            dims, origin = f[i]
            values = {}
            for name, dom in domains.items():
                fitted = _fit(dims[name], dom) if name in dims and name not in fixed else None
                if fitted is not None:
                    values[name] = fitted
            # a dimension the earlier spec did not have is left out: the sampler draws it
            key = tuple(sorted(values.items()))
            if values and key not in seen:
                seen.add(key)
                out.append((values, origin))
    return out


def _objective(text: str) -> tuple[str, str]:
    name, _, d = text.partition(":")
    return name, "minimize" if d.startswith("min") else "maximize"
