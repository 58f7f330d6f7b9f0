"""The graph IR: a directed graph of primitive applications plus the module tree.

The graph (`GraphIR.g`) is a digraph.DiGraph: networkx's storage layout and API, without networkx's
0.12 s import on the compile path; `GraphIR.to_networkx()` gives the same graph as a networkx.DiGraph.

`GraphIR.nodes` holds each node's typed record (`Node`): `op`, `args`, `span`, `scope` (the enclosing block
instance), `module` (the path of the layer that owns the node's weights, if any), and what the passes add:
`weights` (lower), `shapes` and `dtypes` (shape inference), `flops` (estimate). The digraph holds the topology:
edges carry `ports`, (output index of the source, input index of the destination) pairs.
The module tree (`modules`) records every block instance and weighted primitive by path; the
backends use it to emit one class per block.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

from metagen_compiler.escape import dot_str, json_value
from metagen_compiler.ir.digraph import DiGraph
from metagen_compiler.ir.spec import SpecIR
from metagen_compiler.primitives import PRIMITIVES, Shape, fmt_shape
from metagen_compiler.semantics.values import Value, format_value
from metagen_compiler.span import Span

__all__ = ["GraphIR", "GraphInput", "ModuleInfo", "Node", "Tensor", "dump_graph", "graph_dot", "graph_json", "verify_graph"]


@dataclass(frozen=True)
class Tensor:
    """An output of a graph node: its name and the port (a node with several outputs, such as split, has one
    port each); `node` None for a value no node made."""

    node: str | None
    port: int = 0

    @property
    def node_id(self) -> str:
        """`node`, for a tensor of a built graph: only count-only elaboration (no GraphBuilder) makes tensors
        without a node, and those never reach a GraphIR."""
        assert self.node is not None, "a tensor of count-only elaboration used as a graph tensor"
        return self.node


@dataclass
class Node:
    """A node of the graph IR: one primitive application, or an input of the graph (`op` "input").

    Elaboration fills the first six fields; the passes fill the others, each once: `weights` (lower: the
    parameter shapes the node owns, by name, for a node with a `module`), `shapes` and `dtypes` (shape
    inference: one per output; None before it runs), `flops` and `flops_other` (estimate)."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)  # the values the primitive's declaration checked
    span: Span | None = None
    scope: str = ""
    module: str | None = None
    n_outputs: int = 1
    weights: dict[str, tuple[int, ...]] = field(default_factory=dict)
    shapes: list[Shape] | None = None
    dtypes: list[str] = field(default_factory=list)
    flops: int | None = None
    flops_other: int | None = None

    def attrs(self) -> dict[str, Any]:
        """The fields as a dict (shallow: spans and shapes stay objects), e.g. networkx's node attributes."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ModuleInfo:
    """A node of the module tree: a block instance, a primitive with weights, or a repeat list."""

    path: str
    kind: str  # block | primitive | list
    target: str  # block qualname / primitive name / "list"
    args: dict[str, Value]
    span: Span
    children: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GraphInput:
    name: str
    modality: str
    shape: Shape
    dtype: str
    node: str


@dataclass
class GraphIR:
    g: DiGraph[str]  # the topology (node ids, edges with their ports)
    nodes: dict[str, Node]  # each node's record, by id
    modules: dict[str, ModuleInfo]
    inputs: list[GraphInput]
    outputs: list[tuple[str, Tensor]]
    ties: list[tuple[str, str]]
    symbols: dict[str, int]  # nominal values of symbolic dims, for estimates and example_inputs
    spec: SpecIR
    order: list[str] = field(default_factory=list)

    def topo(self) -> list[str]:
        if not self.order:  # among the ready nodes, the one added first
            self.order = self.g.lexicographical_topological_sort()
        return self.order

    def to_networkx(self) -> Any:
        """The graph as a networkx.DiGraph: the edges with their ports, each node's fields as its attributes
        (imports networkx)."""
        ng = self.g.to_networkx()
        for n, node in self.nodes.items():
            ng.nodes[n].update(node.attrs())
        return ng

    def in_tensors(self, node: str) -> list[Tensor]:
        ins: list[tuple[int, Tensor]] = []
        for src in self.g.predecessors(node):
            for out_port, in_port in self.g.edges[src, node]["ports"]:
                ins.append((in_port, Tensor(src, out_port)))
        return [t for _, t in sorted(ins, key=lambda p: p[0])]

    def shape_of(self, t: Tensor) -> Shape:
        shapes = self.nodes[t.node_id].shapes
        assert shapes is not None, "shape_of before shape inference"
        return shapes[t.port]

    def weights(self) -> dict[str, tuple[int, ...]]:
        """Every parameter tensor by its full path (module path + weight name), ties included."""
        out: dict[str, tuple[int, ...]] = {}
        for path, info in sorted(self.modules.items()):
            if info.kind == "primitive":
                for w, shape in PRIMITIVES[info.target].weights(info.args).items():
                    out[f"{path}.{w}"] = shape
        return out

    def param_count(self) -> int:
        ws = self.weights()
        return sum(math.prod(s) for s in ws.values()) - sum(math.prod(ws[t]) for t, _ in self.ties if t in ws)


def verify_graph(ir: GraphIR) -> list[str]:
    """The IR's invariants, as an executable check (run between passes in tests). The graph's acyclicity
    and topological order are checked by networkx itself, on the converted graph."""
    import networkx as nx

    problems = []
    g = ir.g
    ng = ir.to_networkx()
    if not nx.is_directed_acyclic_graph(ng):
        problems.append("graph has a cycle")
    else:
        index = {n: i for i, n in enumerate(g.nodes)}
        if list(nx.lexicographical_topological_sort(ng, key=index.__getitem__)) != g.lexicographical_topological_sort():
            problems.append("topological order differs from networkx's")
    if set(g.nodes) != set(ir.nodes):
        problems.append(f"nodes without a record or records without a node: {sorted(set(g.nodes) ^ set(ir.nodes))}")
    for n in g.nodes:
        d = ir.nodes.get(n)
        if d is None:
            continue
        if d.span is None:
            problems.append(f"{n}: no span")
        if d.op == "input":
            continue
        prim = PRIMITIVES.get(d.op)
        if prim is None:
            problems.append(f"{n}: unknown op {d.op}")
            continue
        ins = ir.in_tensors(n)
        if len(ins) != prim.n_inputs:
            problems.append(f"{n}: {len(ins)} inputs for {d.op} (expects {prim.n_inputs})")
        if d.shapes is not None and len(d.shapes) != d.n_outputs:
            problems.append(f"{n}: {len(d.shapes)} shapes for {d.n_outputs} outputs")
        if d.module is not None and d.module not in ir.modules:
            problems.append(f"{n}: module {d.module} missing from module tree")
    for target, source in ir.ties:
        ws = ir.weights()
        if target not in ws or source not in ws:
            problems.append(f"tie {target} = {source}: unknown parameter")
        elif ws[target] != ws[source]:
            problems.append(f"tie {target} = {source}: shapes differ")
    for name, t in ir.outputs:
        if t.node not in g:
            problems.append(f"output {name}: node {t.node} missing")
    return problems


def _args_text(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in args.items())


def dump_graph(ir: GraphIR) -> str:
    """Canonical text of the graph: one line per node in topological order."""
    out = [f"graph {ir.spec.name}"]
    for i in ir.inputs:
        out.append(f"  input {i.name}: {i.dtype}{fmt_shape(i.shape)}")
    for n in ir.topo():
        d = ir.nodes[n]
        if d.op == "input":
            continue
        ins = ", ".join(f"%{t.node}" + (f"#{t.port}" if t.port else "") for t in ir.in_tensors(n))
        shapes = " ".join(fmt_shape(s) for s in d.shapes or [])
        extra = ""
        if d.flops is not None:
            extra = f"  flops={d.flops}"
        w = ""
        nparams = sum(math.prod(s) for s in d.weights.values())
        if nparams:
            w = f"  params={nparams}"
        loc = f"  @{d.span.path}:{d.span.line}" if d.span is not None and d.span.file else ""
        out.append(f"  %{n} = {d.op}({_args_text(d.args)})({ins}) -> {shapes}{w}{extra}{loc}")
    for name, t in ir.outputs:
        out.append(f"  output {name} = %{t.node}" + (f"#{t.port}" if t.port else ""))
    for target, source in ir.ties:
        out.append(f"  tie {target} = {source}")
    return "\n".join(out) + "\n"


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(i) for i in v]
    if isinstance(v, (int, float, str, bool)) or v is None:
        return json_value(v)  # a non-finite float (`inf`) as its text: JSON has no such number
    return format_value(v)


def graph_json(ir: GraphIR) -> dict[str, Any]:
    nodes = []
    for n in ir.topo():
        d = ir.nodes[n]
        span = d.span
        nodes.append({
            "id": n,
            "op": d.op,
            "args": {k: _jsonable(v) for k, v in d.args.items()},
            "inputs": [[t.node, t.port] for t in ir.in_tensors(n)],
            "shapes": [[_jsonable(x) for x in s] for s in d.shapes or []],
            "dtypes": d.dtypes,
            "weights": {k: list(v) for k, v in d.weights.items()},
            "module": d.module,
            "scope": d.scope,
            "span": f"{span.path}:{span.line}:{span.col}" if span is not None and span.file else None,
            **({"flops": d.flops, "flops_other": d.flops_other} if d.flops is not None else {}),
        })
    modules = [
        {"path": p, "kind": m.kind, "target": m.target, "args": {k: _jsonable(v) for k, v in m.args.items()}}
        for p, m in sorted(ir.modules.items())
    ]
    return {
        "name": ir.spec.name,
        "inputs": [{"name": i.name, "modality": i.modality, "dtype": i.dtype, "shape": list(i.shape), "node": i.node}
                   for i in ir.inputs],
        "outputs": [{"name": name, "node": t.node, "port": t.port} for name, t in ir.outputs],
        "ties": [{"target": t, "source": s} for t, s in ir.ties],
        "symbols": ir.symbols,
        "nodes": nodes,
        "modules": modules,
    }


def graph_dot(ir: GraphIR) -> str:
    """Graphviz text; every id and label is a quoted string through `dot_str`, so names from a spec stay data."""
    q = dot_str
    lines = [f"digraph {q(ir.spec.name)} {{", "  rankdir=TB;", "  node [shape=box, fontname=monospace];"]
    for n in ir.topo():
        d = ir.nodes[n]
        shapes = " ".join(fmt_shape(s) for s in d.shapes or [])
        lines.append(f"  {q(n)} [label={q(d.op + ' ' + n + chr(10) + shapes)}];")
    pos = {n: i for i, n in enumerate(ir.topo())}
    for a, b in sorted(ir.g.edges, key=lambda e: (pos[e[0]], pos[e[1]])):
        lines.append(f"  {q(a)} -> {q(b)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_ = json
