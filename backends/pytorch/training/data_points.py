"""Point clouds and sets of graphs for train.py and evaluate.py: shape classification and graph classification.

Copied verbatim next to a generated model.py, beside data.py, which calls it and whose DataError and split it
uses (and data_vision.py's list reader and augmentation check, data_graph.py's edge features); depends on torch
only (.npy and .ply are parsed here, no numpy).

Point clouds, batch {"point_cloud": (B, points, coords), "label": (B,)}: a folder with one subfolder of `.npy` or
`.ply` files per class, or a list (`.csv` with columns `path`, `label`, or `.jsonl` of {"path", "label"}). A
`.npy` holds a (N, coords) array of floats or integers (little-endian, C order); a `.ply` (ASCII or
binary_little_endian) has its `vertex` element first, of scalar properties: x, y, z, then the others in order, the
first `coords` of them are the coordinates. Each cloud is centred on its mean and scaled into the unit sphere;
a cloud of more than the model's `points` is sampled down to `points` without replacement, one of fewer is
filled up by repeating its points drawn at random: both seeded per file, and counted in data.json.
Augmentations of the training split (--augment; a spec's `augment` list reaches train.py for image inputs only),
each time an item is drawn, in the order given: `random_rotation` (about the up axis, y, as PointNet rotates
ModelNet: an angle uniform in [0, 2 pi)), `random_scale` (x, y, z times one factor uniform in [0.8, 1.25], as
PointNet++), `jitter` (Gaussian noise of deviation 0.01 clipped to +-0.05 on x, y, z, as PointNet),
`point_dropout` (a fraction uniform in [0, 0.875) of the points replaced by the first point, as PointNet++). The
draws come from torch's generator, which --seed seeds and checkpoints keep, so runs repeat and a resume continues
them.

Sets of graphs, batch {"graph_nodes": (N, features), "graph_edges": (2, E), "graph_batch": (N,) the graph of
each node, "label": (graphs,)}: a `.jsonl` file with one graph per line, {"x": [[...], ...], "edges": [[0, 1],
...], "y": label, "undirected": true}, or a `.json` object {"graphs": [those objects]}; a model that reads edge
features (gat_graph_edge: batch key `edge_attr`, (E, edge_features)) needs "edge_attr": one list of `edge_features`
numbers per edge of "edges" (an undirected edge's features go both ways). A batch joins its graphs
into one disconnected graph; the model classifies a fixed `graphs` rows per batch, so a batch of fewer graphs
fills the rest with label -100 (ignored by cross-entropy and by the split's metrics).
"""

from __future__ import annotations

import ast
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

if __package__:
    from . import data, data_graph, data_vision
else:  # beside data.py in the model's folder
    import data  # type: ignore[no-redef]
    import data_graph  # type: ignore[no-redef]
    import data_vision  # type: ignore[no-redef]

__all__ = ["POINT_AUGMENTATIONS", "GraphSet", "PointItems", "augment_points", "check_point_augment",
           "prepare_graphs", "prepare_points", "read_npy", "read_ply", "read_points"]

POINT_SUFFIXES = (".npy", ".ply")
POINT_AUGMENTATIONS = ("random_rotation", "random_scale", "jitter", "point_dropout")
POINT_ALIASES = {"rotation": "random_rotation", "rotate": "random_rotation", "random_rotate": "random_rotation",
                 "scale": "random_scale", "scaling": "random_scale", "random_scaling": "random_scale",
                 "random_jitter": "jitter", "point_jitter": "jitter", "dropout": "point_dropout", "random_point_dropout": "point_dropout"}
IGNORE = -100  # cross_entropy's ignore_index: the label of a batch's unused graph rows
NPY_TYPES = {"f4": torch.float32, "f8": torch.float64, "f2": torch.float16, "i1": torch.int8, "u1": torch.uint8,
             "i2": torch.int16, "i4": torch.int32, "i8": torch.int64}
PLY_TYPES = {"char": "b", "int8": "b", "uchar": "B", "uint8": "B", "short": "h", "int16": "h", "ushort": "H",
             "uint16": "H", "int": "i", "int32": "i", "uint": "I", "uint32": "I", "float": "f", "float32": "f",
             "double": "d", "float64": "d"}


# ------------------------------------------------------------------------------------------------ reading


def read_npy(path: Path) -> torch.Tensor:
    """A 2-D array from a .npy file (format 1.0 to 3.0, little-endian numbers, C order) as float32."""
    raw = path.read_bytes()
    if raw[:6] != b"\x93NUMPY" or len(raw) < 10:
        raise data.DataError(f"{path}: not a .npy file (no \\x93NUMPY magic); expected numpy.save's format")
    major = raw[6]
    start = 12 if major >= 2 else 10
    length = int.from_bytes(raw[8:start], "little")
    try:
        header = ast.literal_eval(raw[start : start + length].decode("latin-1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError):
        raise data.DataError(f"{path}: unreadable .npy header; expected numpy.save's format") from None
    kind = descr[1:] if isinstance(descr, str) and descr[:1] in "<|" else None
    if kind not in NPY_TYPES:
        raise data.DataError(f"{path}: dtype {descr!r}; expected little-endian float or integer numbers")
    if fortran or len(shape) != 2:
        raise data.DataError(f"{path}: an array of shape {shape}{' in Fortran order' if fortran else ''}; expected "
                             "(points, coords) in C order")
    body = raw[start + length :]
    dtype = NPY_TYPES[kind]
    need = shape[0] * shape[1] * torch.empty((), dtype=dtype).element_size()
    if len(body) < need:
        raise data.DataError(f"{path}: {len(body)} bytes of data; the header's shape {shape} needs {need}")
    return torch.frombuffer(bytearray(body[:need]), dtype=dtype).view(shape).float() if need else \
        torch.zeros(shape)


def read_ply(path: Path, coords: int) -> torch.Tensor:
    """The first `coords` vertex properties (x, y, z first) of an ASCII or binary little-endian .ply as (N, coords)."""
    raw = path.read_bytes()
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise data.DataError(f"{path}: not a PLY file (no `ply` ... `end_header`)")
    lines = raw[:end].decode("latin-1").splitlines()
    body = raw[raw.index(b"\n", end) + 1 :] if b"\n" in raw[end:] else b""
    fmt: str | None = None
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else None
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1][2].append(("list", words[-1]))
            elif len(words) == 3 and words[1] in PLY_TYPES:
                elements[-1][2].append((words[1], words[2]))
            else:
                raise data.DataError(f"{path}: header line `{line}`; expected `property TYPE NAME`")
    if fmt not in ("ascii", "binary_little_endian"):
        raise data.DataError(f"{path}: PLY format `{fmt}`; expected ascii or binary_little_endian")
    if not elements or elements[0][0] != "vertex":
        raise data.DataError(f"{path}: the first element is not `vertex`; expected the points first")
    _, n, props = elements[0]
    if any(t == "list" for t, _ in props):
        raise data.DataError(f"{path}: the vertex element has a list property; expected scalar properties")
    names = [name for _, name in props]
    order = [names.index(a) for a in ("x", "y", "z") if a in names]
    order += [i for i in range(len(names)) if i not in order]
    if len(order) < coords:
        raise data.DataError(f"{path}: {len(names)} vertex properties ({', '.join(names)}); expected at least "
                             f"{coords} (the model's coords)")
    if fmt == "ascii":
        rows = body.decode("latin-1").split("\n")
        values = []
        for k in range(n):
            cells = rows[k].split() if k < len(rows) else []
            try:
                if len(cells) != len(props):
                    raise ValueError
                values.append([float(c) for c in cells])
            except ValueError:
                raise data.DataError(f"{path}: vertex {k} is `{' '.join(cells)}`; expected {len(props)} numbers"
                                     ) from None
        table = torch.tensor(values, dtype=torch.float64).view(n, len(props))
    else:
        row = struct.Struct("<" + "".join(PLY_TYPES[t] for t, _ in props))
        if len(body) < n * row.size:
            raise data.DataError(f"{path}: {len(body)} bytes of vertex data; {n} vertices need {n * row.size}")
        table = torch.tensor(list(row.iter_unpack(body[: n * row.size])), dtype=torch.float64).view(n, len(props))
    return table[:, order[:coords]].float()


def read_points(path: Path, coords: int) -> torch.Tensor:
    """A (N, coords) cloud from a .npy or .ply file, checked: N >= 1, the right coords, finite values."""
    if path.suffix.lower() == ".npy":
        pts = read_npy(path)
        if pts.shape[1] != coords:
            raise data.DataError(f"{path}: {pts.shape[1]} values per point; expected {coords} (the model's coords)")
    elif path.suffix.lower() == ".ply":
        pts = read_ply(path, coords)
    else:
        raise data.DataError(f"{path}: not a .npy or .ply file; expected a point cloud")
    if len(pts) == 0:
        raise data.DataError(f"{path}: no points; expected at least one")
    bad = (~torch.isfinite(pts)).any(-1).nonzero()
    if len(bad):
        raise data.DataError(f"{path}: point {int(bad[0])} is {pts[int(bad[0])].tolist()}; expected finite numbers")
    return pts


def _fit(pts: torch.Tensor, points: int, seed: int, name: str) -> torch.Tensor:
    """Centred, in the unit sphere, and exactly `points` rows (sampled, or filled by repeats), seeded per file."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    n = len(pts)
    if n > points:
        pts = pts[torch.randperm(n, generator=g)[:points]]
    elif n < points:
        pts = torch.cat((pts, pts[torch.randint(0, n, (points - n,), generator=g)]))
    xyz = pts[:, :3] - pts[:, :3].mean(0)
    scale = xyz.norm(dim=-1).max().clamp(min=1e-8)
    return torch.cat((xyz / scale, pts[:, 3:]), 1)


# ------------------------------------------------------------------------------------------- point clouds


def check_point_augment(names: list[str] | tuple[str, ...] | None, what: str) -> list[str]:
    """The point-cloud augmentation names, aliases resolved; an unknown one is a DataError naming those there are."""
    return data_vision.check_augment(names, what, POINT_AUGMENTATIONS, POINT_ALIASES, " for point clouds")


def augment_points(cloud: torch.Tensor, names: list[str]) -> torch.Tensor:
    """A randomly changed copy of one (points, coords) cloud, x y z its first three columns (see the module's
    docstring); the draws from torch's global generator."""
    xyz, rest = cloud[:, :3], cloud[:, 3:]
    for name in names:
        if name == "random_rotation":
            angle = float(torch.rand(())) * 2 * math.pi
            c, s = math.cos(angle), math.sin(angle)
            rotation = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=cloud.dtype)
            xyz = xyz @ rotation.T
        elif name == "random_scale":
            xyz = xyz * (0.8 + 0.45 * float(torch.rand(())))
        elif name == "jitter":
            xyz = xyz + (0.01 * torch.randn(xyz.shape, dtype=cloud.dtype)).clamp(-0.05, 0.05)
        elif name == "point_dropout":
            drop = (torch.rand(len(xyz)) < 0.875 * float(torch.rand(())))[:, None]
            xyz, rest = torch.where(drop, xyz[0], xyz), torch.where(drop, rest[0], rest)
    return torch.cat((xyz, rest), 1)


class PointItems(data.TensorItems):
    """Rows of in-memory clouds and labels; the training split's clouds augmented each time they are drawn."""

    def __init__(self, tensors: dict[str, torch.Tensor], augment: list[str] | None = None):
        super().__init__(tensors)
        self.augment = list(augment or [])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(i)
        if self.augment:
            item["point_cloud"] = augment_points(item["point_cloud"], self.augment)
        return item


def _point_items(root: Path, classes: list[str] | None) -> tuple[dict[str, tuple[Path, str]], list[str]]:
    """{id: (file, class)} from a folder with one subfolder of .npy/.ply files per class."""
    if not root.is_dir():
        raise data.DataError(f"{root}: not a folder or a .csv/.jsonl list; expected one subfolder of point clouds "
                             "per class")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not found:
        raise data.DataError(f"{root}: no class subfolders; expected one subfolder of .npy/.ply files per class")
    items: dict[str, tuple[Path, str]] = {}
    for name in found:
        if classes is not None and name not in classes:
            raise data.DataError(f"{root / name}: class `{name}` is not among the training classes {classes}")
        for f in sorted((root / name).iterdir()):
            if f.is_file() and f.suffix.lower() in POINT_SUFFIXES:
                items[f"{root.name}/{name}/{f.name}"] = (f, name)
    if not items:
        raise data.DataError(f"{root}: no .npy or .ply files in the class subfolders")
    return items, found


def prepare_points(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None, model: Any,
                   write: bool) -> data.Splits:
    """Point-cloud classification: the three splits of (points, coords) clouds and data.json's record."""
    root = Path(opts.source)
    points, coords, num_classes = (int(form.config[k]) for k in ("points", "coords", "num_classes"))
    augment = check_point_augment(opts.augment, str(root))
    parts = data.explicit_parts(root)
    classes: list[str] | None = state.get("classes") if state else None
    lists = {s: p for s, p in parts.items() if p.is_file()} if parts else {}
    if not parts and root.is_file() and root.suffix.lower() in data_vision.LISTS:
        lists = {"all": root}
    if lists:
        read = {s: data_vision.read_image_list(p, "point cloud") for s, p in lists.items()}
        classes = classes or data_vision._class_names([lab for _, _, lab in read.get("train", read.get("all", []))])
        sources: dict[str, dict[str, Any]] = {}
        for s, rows in read.items():
            sources[s] = {}
            for rid, file, label in rows:
                if label not in classes:
                    raise data.DataError(f"{lists[s].parent / rid.rsplit(':', 1)[0]}:{rid.rsplit(':', 1)[1]}: label "
                                         f"`{label}` is not one of the {len(classes)} training classes")
                sources[s][rid] = (file, label)
    elif parts:
        train_items, found = _point_items(parts["train"], classes)
        classes = classes or found
        sources = {"train": train_items}
        for s in ("val", "test"):
            if s in parts:
                sources[s] = _point_items(parts[s], classes)[0]
    else:
        all_items, found = _point_items(root, classes)
        classes = classes or found
        sources = {"all": all_items}
    if len(classes) > num_classes:
        raise data.DataError(f"{root}: {len(classes)} classes, but the model has num_classes = {num_classes}")
    index = {c: i for i, c in enumerate(classes)}
    counts = {"sampled_down": 0, "filled_up": 0}
    for part in sources.values():  # every file read once, in order (so the first bad one is named)
        for rid, (file, label) in part.items():
            pts = read_points(file, coords)
            counts["sampled_down"] += len(pts) > points
            counts["filled_up"] += len(pts) < points
            part[rid] = (_fit(pts, points, opts.seed, rid), index[label])
    items, record = data.make_split(sources, opts.seed, str(root), state.get("split") if state else None)

    def tensors(part: dict[str, tuple[torch.Tensor, int]]) -> dict[str, torch.Tensor]:
        return {"point_cloud": torch.stack([c for c, _ in part.values()]),
                "label": torch.tensor([k for _, k in part.values()], dtype=torch.long)}

    sets = {s: tensors(items[s]) for s in data.SPLITS}
    info = {"kind": form.kind, "split": record, "classes": classes, "points": points, "coords": coords,
            "normalize": "centred, unit sphere", **counts, "augment": augment,
            "items": {s: len(items[s]) for s in data.SPLITS}}
    return data.Splits(PointItems(sets["train"], augment), PointItems(sets["val"]), PointItems(sets["test"]), info)


# ------------------------------------------------------------------------------------------------- graphs


class GraphSet(Dataset):
    """Graphs, each {"graph_nodes", "graph_edges", "label"} (and "edge_attr"); `collate` joins a batch into one
    disconnected graph with `graph_batch` ids and pads the labels to the model's `graphs` rows with -100."""

    def __init__(self, graphs: list[dict[str, torch.Tensor]], rows: int):
        self.graphs, self.rows = graphs, rows

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.graphs[i]

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if len(items) > self.rows:
            raise data.DataError(f"a batch of {len(items)} graphs, but the model classifies graphs = {self.rows} per "
                                 f"batch; use a per-process batch of at most {self.rows} or --set graphs=N")
        nodes, edges, ids, offset = [], [], [], 0
        for k, g in enumerate(items):
            nodes.append(g["graph_nodes"])
            edges.append(g["graph_edges"] + offset)
            ids.append(torch.full((len(g["graph_nodes"]),), k, dtype=torch.long))
            offset += len(g["graph_nodes"])
        label = torch.full((self.rows,), IGNORE, dtype=torch.long)
        label[: len(items)] = torch.stack([g["label"] for g in items])
        out = {"graph_nodes": torch.cat(nodes), "graph_edges": torch.cat(edges, 1), "graph_batch": torch.cat(ids),
               "label": label}
        if "edge_attr" in items[0]:
            out["edge_attr"] = torch.cat([g["edge_attr"] for g in items])
        return out


def _graph_docs(path: Path) -> list[tuple[str, Any]]:
    """(where, object) for each graph of a .jsonl (one per line) or a .json {"graphs": [...]}."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
        if len(found) != 1:
            raise data.DataError(f"{path}: expected one graphs .jsonl or .json file in the folder, found {len(found)}")
        path = found[0]
    text = data.read_utf8(path)
    if path.suffix == ".jsonl":
        return [(f"{path}:{line}", obj) for line, obj in data.jsonl_rows(path, text, "one graph object per line")]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise data.DataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); expected {{\"graphs\": [...]}}"
                             ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("graphs"), list):
        raise data.DataError(f"{path}: expected an object with a list `graphs` (or a .jsonl of one graph per line)")
    return [(f"{path}: graphs[{k}]", g) for k, g in enumerate(doc["graphs"])]


def _graph(where: str, g: Any, features: int, edge_width: int | None = None
           ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
    """A checked graph object: its node features, its edge batch keys (data_graph.edge_batch) and its label."""
    if not isinstance(g, dict) or "x" not in g or "y" not in g:
        raise data.DataError(f"{where}: expected a graph object with `x` (node features), `edges` and `y` (its label)")
    x = g["x"]
    if not isinstance(x, list) or not x:
        raise data.DataError(f"{where}: `x` is not a non-empty list of feature rows")
    data_graph.check_rows(where, "x", x, features, "features")
    edges = g.get("edges", [])
    n = len(x)
    if not isinstance(edges, list):
        raise data.DataError(f"{where}: `edges` is not a list of [source, target] pairs")
    for k, pair in enumerate(edges):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) and 0 <= v < n for v in pair)):
            raise data.DataError(f"{where}: edges[{k}] is {json.dumps(pair)}; expected [source, target] node ids in "
                                 f"0..{n - 1}")
    y = g["y"]
    if isinstance(y, bool) or not isinstance(y, (int, str)):
        raise data.DataError(f"{where}: `y` is {json.dumps(y)}; expected a class id or name")
    attr = data_graph.edge_features(where, g, len(edges), edge_width)
    keys = data_graph.edge_batch({"edges": edges, "undirected": bool(g.get("undirected", True)), "edge_attr": attr})
    return torch.tensor(x, dtype=torch.float32), keys, y


def prepare_graphs(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None, model: Any,
                   write: bool) -> data.Splits:
    """Graph classification: the three splits of graphs (GraphSet) and data.json's record."""
    root = Path(opts.source)
    features, rows, num_classes = (int(form.config[k]) for k in ("features", "graphs", "num_classes"))
    parts = data.explicit_parts(root)
    docs = {s: _graph_docs(p) for s, p in parts.items()} if parts else {"all": _graph_docs(root)}
    width = int(form.config["edge_features"]) if "edge_attr" in form.keys else None
    read = {s: {where: _graph(where, g, features, width) for where, g in d} for s, d in docs.items()}
    classes = state.get("classes") if state else None
    if classes is None:
        values = sorted({y for _, _, y in read.get("train", read.get("all", {})).values()},
                        key=lambda v: (isinstance(v, str), v))
        classes = list(range(max(values) + 1)) if all(isinstance(v, int) for v in values) else \
            [str(v) for v in values]
    if len(classes) > num_classes:
        raise data.DataError(f"{root}: {len(classes)} graph classes, but the model has num_classes = {num_classes}")
    index = {c: i for i, c in enumerate(classes)}
    sources: dict[str, dict[str, Any]] = {}
    for s, graphs in read.items():
        sources[s] = {}
        for where, (x, edges, y) in graphs.items():
            key = y if isinstance(y, int) and isinstance(classes[0], int) else str(y)
            if key not in index:
                raise data.DataError(f"{where}: `y` is {json.dumps(y)}; expected a class among {len(classes)} "
                                     f"(0..{num_classes - 1}, num_classes = {num_classes})")
            sources[s][where.replace(f"{root}", root.name, 1) if where.startswith(str(root)) else where] = \
                {"graph_nodes": x, **edges, "label": torch.tensor(index[key])}
    items, record = data.make_split(sources, opts.seed, str(root), state.get("split") if state else None)
    sets = {s: GraphSet(list(items[s].values()), rows) for s in data.SPLITS}
    info = {"kind": form.kind, "split": record, "classes": classes, "graphs_per_batch": rows, "edge_features": width,
            "items": {s: len(items[s]) for s in data.SPLITS}}
    return data.Splits(sets["train"], sets["val"], sets["test"], info)
