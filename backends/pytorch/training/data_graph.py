"""Graphs for train.py and evaluate.py: one graph in a JSON file -> node-classification or link-prediction batches.

Copied verbatim next to a generated model.py, beside data.py, which calls it and whose DataError and split
it uses; depends on torch only.

The file (docs/training.md, "Graphs"):

    {"x": [[0.0, 1.0, ...], ...],           node features, one list of `features` numbers per node
     "edges": [[0, 1], [1, 2], ...],        node index pairs
     "undirected": true,                    each edge is listed once and passes messages both ways (default true)
     "edge_attr": [[0.5, ...], ...],        edge features, one list of `edge_features` numbers per edge of "edges"
                                            (models reading edge features: gat_edge; an undirected edge's features
                                            go both ways)
     "y": [0, 1, null, ...],                node classification: a class id (or name) per node, null if unknown
     "split": {"train": [..], "val": [..], "test": [..]}}   optional: node ids (node classification)

The whole graph is one batch (full-batch training, one process). Node classification: every split sees all
nodes and edges, and `train_mask` selects the split's labelled nodes (the key the model's loss reads); without
"split", the labelled nodes are split 80/10/10, seeded. Link prediction: the edges are split 80/10/10, seeded;
only the train edges pass messages; each split's positives are its own edges, and as many negatives
(node pairs that are not edges of the graph) are drawn, seeded, once per split.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

if __package__:
    from . import data
else:  # beside data.py in the model's folder
    import data  # type: ignore[no-redef]

__all__ = ["WholeGraph", "check_rows", "edge_batch", "edge_features", "prepare_graph", "read_graph"]


class WholeGraph(Dataset):
    """A dataset of one item, the whole graph as a batch; `collate` passes it through unbatched."""

    whole = True

    def __init__(self, batch: dict[str, torch.Tensor]):
        self.batch = batch

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch

    @staticmethod
    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return items[0]


def check_rows(where: str, name: str, rows: list[Any], width: int, field: str) -> None:
    """Each of `rows` a list of `width` finite numbers (the model's Config `field`); else a DataError naming `where`
    and the row (`name`[k])."""
    for k, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == width
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row)):
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise data.DataError(f"{where}: {name}[{k}] has {got}; expected {width} finite numbers (the model's "
                                 f"{field})")


def edge_features(where: str, doc: dict[str, Any], edges: int, width: int | None) -> torch.Tensor | None:
    """The checked `edge_attr` of a graph object: (edges, width) float32, one row per edge of `edges`; None where
    the model reads no edge features (width None); a missing or bad one is a DataError naming `where`."""
    if width is None:
        return None
    attr = doc.get("edge_attr")
    if attr is None:
        raise data.DataError(f"{where}: no `edge_attr`; the model reads edge features: expected one list of "
                             f"{width} numbers per edge (edge_features = {width})")
    if not isinstance(attr, list) or len(attr) != edges:
        got = f"{len(attr)} rows" if isinstance(attr, list) else type(attr).__name__
        raise data.DataError(f"{where}: `edge_attr` has {got}; expected one row per edge ({edges})")
    check_rows(where, "edge_attr", attr, width, "edge_features")
    return torch.tensor(attr, dtype=torch.float32).view(edges, width)


def read_graph(path: Path, features: int, edge_width: int | None = None) -> dict[str, Any]:
    """The checked contents of a graph JSON file: x (N, F), edges (2, E), labels (list), split, undirected, and the
    edge features (E, edge_width) where the model reads them."""
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        if len(found) != 1:
            raise data.DataError(f"{path}: expected one graph .json file in the folder, found {len(found)}")
        path = found[0]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise data.DataError(f"{path}: not a JSON graph ({e.__class__.__name__}); expected {{\"x\", \"edges\", ...}}") from None
    if not isinstance(doc, dict) or "x" not in doc or "edges" not in doc:
        raise data.DataError(f"{path}: expected an object with `x` (node features) and `edges` (node index pairs)")
    x = doc["x"]
    if not isinstance(x, list) or not x:
        raise data.DataError(f"{path}: `x` is not a non-empty list of feature rows")
    for i, row in enumerate(x):
        if not isinstance(row, list) or len(row) != features or not all(isinstance(v, (int, float)) for v in row):
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise data.DataError(f"{path}: x[{i}] has {got}; expected {features} numbers (the model's features)")
    n = len(x)
    edges = doc["edges"]
    if not isinstance(edges, list) or not edges:
        raise data.DataError(f"{path}: `edges` is not a non-empty list of [source, target] pairs")
    for k, pair in enumerate(edges):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) and 0 <= v < n for v in pair)):
            raise data.DataError(f"{path}: edges[{k}] is {json.dumps(pair)}; expected [source, target] node ids in 0..{n - 1}")
    return {"path": path, "x": torch.tensor(x, dtype=torch.float32), "edges": edges, "y": doc.get("y"),
            "split": doc.get("split"), "undirected": bool(doc.get("undirected", True)),
            "edge_attr": edge_features(str(path), doc, len(edges), edge_width)}


def edge_batch(g: dict[str, Any], keep: list[int] | None = None) -> dict[str, torch.Tensor]:
    """{"graph_edges"} of graph `g`'s kept edges (all without `keep`), and their "edge_attr" where the model reads
    them (g["edge_attr"] not None), in the same order (an undirected edge's features twice, for both directions);
    also those of each graph of a set (data_points.py) and of a graph to predict on (inference/inputs.py)."""
    pairs = g["edges"] if keep is None else [g["edges"][k] for k in keep]
    e = torch.tensor(pairs, dtype=torch.long).view(-1, 2).t()  # (2, E); E may be 0 (a graph of a set)
    out = {"graph_edges": torch.cat((e, e.flip(0)), 1) if g["undirected"] else e}
    if g["edge_attr"] is not None:
        attr = g["edge_attr"] if keep is None else g["edge_attr"][keep]
        out["edge_attr"] = torch.cat((attr, attr)) if g["undirected"] else attr
    return out


def _nodes(g: dict[str, Any], form: Any, opts: Any, state: dict[str, Any] | None) -> tuple[dict, dict]:
    path, n = g["path"], len(g["x"])
    y = g["y"]
    if not isinstance(y, list) or len(y) != n:
        raise data.DataError(f"{path}: `y` has {len(y) if isinstance(y, list) else 'no'} labels; expected one per node ({n})")
    known = [i for i, v in enumerate(y) if v is not None]
    if not known:
        raise data.DataError(f"{path}: every entry of `y` is null; node classification needs labelled nodes")
    classes = state["classes"] if state else None
    if classes is None:
        values = sorted({y[i] for i in known}, key=lambda v: (isinstance(v, str), v))
        classes = list(range(max(values) + 1)) if all(isinstance(v, int) for v in values) else [str(v) for v in values]
    index = {c: i for i, c in enumerate(classes)}
    num_classes = int(form.config["num_classes"])
    if len(classes) > num_classes:
        raise data.DataError(f"{path}: {len(classes)} classes in `y`, but the model has num_classes = {num_classes}")
    labels = torch.zeros(n, dtype=torch.long)
    for i in known:
        key = y[i] if isinstance(y[i], int) and isinstance(classes[0], int) else str(y[i])
        if key not in index or index[key] >= num_classes:
            raise data.DataError(f"{path}: y[{i}] is {json.dumps(y[i])}; expected a class among {len(classes)} "
                        f"(0..{num_classes - 1}, num_classes = {num_classes})")
        labels[i] = index[key]
    split = state["split"] if state else g["split"] or data.split_ids(known, opts.seed, what=str(path))
    for s in data.SPLITS:
        bad = [i for i in split.get(s, []) if not (isinstance(i, int) and 0 <= i < n and y[i] is not None)]
        if bad or not split.get(s):
            raise data.DataError(f"{path}: split `{s}` " + (f"lists node {json.dumps(bad[0])}, which is not a labelled node id"
                                                     if bad else "is empty; expected labelled node ids"))
    edges = edge_batch(g)
    sets = {}
    for s in data.SPLITS:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[split[s]] = True
        sets[s] = {"graph_nodes": g["x"], **edges, "label": labels, "train_mask": mask}
    return sets, {"split": split, "classes": classes}


def _links(g: dict[str, Any], opts: Any, state: dict[str, Any] | None) -> tuple[dict, dict]:
    n, pairs = len(g["x"]), g["edges"]
    split = state["split"] if state else data.split_ids(list(range(len(pairs))), opts.seed, what=str(g["path"]))
    present = {tuple(p) for p in pairs} | ({(b, a) for a, b in pairs} if g["undirected"] else set())
    message = edge_batch(g, list(split["train"]))
    sets = {}
    for i, s in enumerate(data.SPLITS):
        pos = torch.tensor([pairs[k] for k in split[s]], dtype=torch.long).t()
        rng, neg = random.Random(opts.seed * 10 + i), list[list[int]]()
        if len(present) + len(split[s]) > n * (n - 1):
            raise data.DataError(f"{g['path']}: too dense to draw {len(split[s])} non-edges")
        while len(neg) < len(split[s]):
            a, b = rng.randrange(n), rng.randrange(n)
            if a != b and (a, b) not in present:
                neg.append([a, b])
        sets[s] = {"graph_nodes": g["x"], **message, "pos_edges": pos,
                   "neg_edges": torch.tensor(neg, dtype=torch.long).t()}
    return sets, {"split": split}


def prepare_graph(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None, model: Any,
                  write: bool) -> data.Splits:
    """A WholeGraph per split, and data.json's record."""
    width = int(form.config["edge_features"]) if "edge_attr" in form.keys else None
    g = read_graph(Path(opts.source), int(form.config["features"]), width)
    sets, record = _nodes(g, form, opts, state) if form.kind == "node_classification" else _links(g, opts, state)
    info = {"kind": form.kind, "file": str(g["path"]), "nodes": len(g["x"]), "edges": len(g["edges"]),
            "undirected": g["undirected"], "edge_features": width, **record,
            "items": {s: int(b["train_mask"].sum()) if "train_mask" in b else b["pos_edges"].shape[1]
                      for s, b in sets.items()}}
    train, val, test = (WholeGraph(sets[s]) for s in data.SPLITS)
    return data.Splits(train, val, test, info)
