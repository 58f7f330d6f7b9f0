"""Time series for train.py and evaluate.py: a CSV of rows in time order -> windows of lookback and horizon.

Copied verbatim next to a generated model.py, beside data.py, which calls it and whose DataError and split
it uses; depends on torch only.

A forecaster's batch is {"time_series": (B, lookback, features), "target": (B, horizon, outputs)}. The CSV has a
header; rows are in time order. Input columns: --features, else every column whose values are numbers (a
date or other text column is left out). Predicted columns: --target, else the input columns. The split is by
time, never shuffled: the first 80% of the rows train, the next 10% validate, the last 10% test (or the files
train.csv / val.csv / test.csv of a folder). Each split yields every window of lookback + horizon consecutive
rows inside it; values are standardised with the train split's mean and std per column.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

if __package__:
    from . import data
else:  # beside data.py in the model's folder
    import data  # type: ignore[no-redef]

__all__ = ["SeriesWindows", "prepare_series"]


class SeriesWindows(Dataset):
    """Every window of one (T, columns) tensor: inputs `lookback` rows, targets the next `horizon` rows."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, lookback: int, horizon: int):
        self.x, self.y, self.lookback, self.horizon = x, y, lookback, horizon

    def __len__(self) -> int:
        return max(0, len(self.x) - self.lookback - self.horizon + 1)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = i + self.lookback
        return {"time_series": self.x[i:j], "target": self.y[j : j + self.horizon]}


def _number(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v


def _read(path: Path, features: list[str] | None, target: list[str] | None) -> tuple[list[str], list[str], torch.Tensor, torch.Tensor]:
    """(input names, target names, inputs (T, F), targets (T, O)) of one CSV."""
    header, body = data.read_csv(path, ", rows in time order", comments=True)
    for name in (features or []) + (target or []):
        if name not in header:
            raise data.DataError(f"{path}: no column `{name}`; columns are {', '.join(header)}")
    if features is None:  # the numeric columns, judged by the first data row
        features = [h for h, v in zip(header, body[0][1]) if _number(v) is not None and h not in (target or [])]
        features += [t for t in target or [] if t not in features]
    target = target or features
    cols = [header.index(n) for n in features]
    tcols = [header.index(n) for n in target]
    values: list[list[float]] = []
    for k, row in body:
        out = []
        for c in sorted(set(cols + tcols)):
            v = _number(row[c])
            if v is None or not math.isfinite(v):
                shown = row[c] or "(empty)"
                raise data.DataError(f"{path}:{k}: column `{header[c]}` is `{shown}`; expected a finite number")
            out.append(v)
        values.append(out)
    order = sorted(set(cols + tcols))
    table = torch.tensor(values, dtype=torch.float32)
    return features, target, table[:, [order.index(c) for c in cols]], table[:, [order.index(c) for c in tcols]]


def prepare_series(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None, model: Any,
                   write: bool) -> data.Splits:
    """The three window datasets and data.json's record (columns, split rows, standardisation)."""
    root, parts, cfg = Path(opts.source), data.explicit_parts(Path(opts.source)), form.config
    lookback, horizon = int(cfg["lookback"]), int(cfg["horizon"])
    features = [f.strip() for f in opts.features.split(",")] if opts.features else None
    target = [t.strip() for t in opts.target.split(",")] if opts.target else None
    if state:
        features, target = state["features"], state["target"]
    if parts:
        read = {s: _read(p, features, target) for s, p in parts.items()}
        if set(read) != set(data.SPLITS):
            raise data.DataError(f"{root}: a folder of series needs train.csv, val.csv and test.csv (a split by time)")
        names, tnames = read["train"][0], read["train"][1]
        xs = {s: r[2] for s, r in read.items()}
        ys = {s: r[3] for s, r in read.items()}
        record: dict[str, Any] = {"explicit": True}
    else:
        names, tnames, x, y = _read(root, features, target)
        n = len(x)
        n_train, n_val = round(data.FRACTIONS[0] * n), round(data.FRACTIONS[1] * n)
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        xs = {s: x[a:b] for s, (a, b) in bounds.items()}
        ys = {s: y[a:b] for s, (a, b) in bounds.items()}
        record = {"explicit": False, "by": "time", "rows": {s: list(b) for s, b in bounds.items()}}
    if len(names) != int(cfg["features"]):
        raise data.DataError(f"{root}: {len(names)} input columns ({', '.join(names)}), but the model expects features = "
                    f"{cfg['features']} (name them with --features)")
    with torch.no_grad():
        shape = tuple(model(torch.zeros(1, lookback, len(names), device=next(model.parameters()).device)).shape)
    if shape[1:] != (horizon, len(tnames)):
        raise data.DataError(f"{root}: {len(tnames)} target column(s) ({', '.join(tnames)}), but the model forecasts "
                    f"{shape[1:]} (horizon, outputs); name them with --target")
    for s in data.SPLITS:
        if len(xs[s]) < lookback + horizon:
            raise data.DataError(f"{root}: the {s} split has {len(xs[s])} rows, fewer than one window of lookback {lookback} + "
                        f"horizon {horizon}")
    if state and "standardize" in state:
        st = state["standardize"]
        mx, sx, my, sy = (torch.tensor(st[k]) for k in ("x_mean", "x_std", "y_mean", "y_std"))
    else:
        mx, sx = xs["train"].mean(0), xs["train"].std(0, unbiased=False).clamp_min(1e-8)
        my, sy = ys["train"].mean(0), ys["train"].std(0, unbiased=False).clamp_min(1e-8)
    sets = {s: SeriesWindows((xs[s] - mx) / sx, (ys[s] - my) / sy, lookback, horizon) for s in data.SPLITS}
    info = {
        "kind": form.kind,
        "split": record,
        "features": names,
        "target": tnames,
        "lookback": lookback,
        "horizon": horizon,
        "standardize": {"x_mean": mx.tolist(), "x_std": sx.tolist(), "y_mean": my.tolist(), "y_std": sy.tolist()},
        "items": {s: len(d) for s, d in sets.items()},
    }
    return data.Splits(sets["train"], sets["val"], sets["test"], info)
