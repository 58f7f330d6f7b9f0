"""The architecture block by block: the module tree of the graph IR, with parameters, FLOPs and
output shapes summed per block instance.

A node belongs to the deepest module path that owns it: its `module` (a primitive with weights) or
else its `scope` (the block instance that applied it). A block's parameters are the weights of the
nodes under it, less the tensors tied to a weight elsewhere (counted once, where they are owned);
its FLOPs are the `flops` (exact matmul/conv/attention count) and `flops_other` (estimate) of the
same nodes. Repeat lists (`repeat(12) decoder_block`) are summarised as one row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from metagen_compiler.ir.graph import GraphIR

__all__ = ["BlockRow", "Tree", "short_target"]


def short_target(target: str) -> str:
    """`std.transformer.decoder_block` -> `decoder_block`."""
    return target.rsplit(".", 1)[-1]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def _prefixes(path: str) -> list[str]:
    """Every `prefix` with `_under(path, prefix)`: the path cut before each dot, then the path itself."""
    return [path[:i] for i, c in enumerate(path) if c == "."] + [path]


@dataclass
class BlockRow:
    path: str
    kind: str  # block | primitive | list | slot | own (a block's operations outside its children)
    target: str  # block qualname, primitive name, or the repeated block's qualname
    depth: int
    count: int  # instances (repeat lists), else 1
    params: int
    flops: int
    flops_other: int
    out_node: str | None  # the node whose first output is the block's output
    tied: list[str] = field(default_factory=list)  # parameters of this block tied to another tensor
    first: str | None = None  # for a list: the path of its first instance


class Tree:
    """Aggregates over the module tree of one compiled graph."""

    def __init__(self, ir: GraphIR) -> None:
        self.ir = ir
        self.order = [n for n in ir.topo() if ir.nodes[n].op != "input"]
        self.pos = {n: i for i, n in enumerate(self.order)}
        self.owner = {n: (ir.nodes[n].module or ir.nodes[n].scope) for n in self.order}
        self.tie_targets = {t: s for t, s in ir.ties}
        # path -> the nodes under it, in data-flow order: each node is listed under its owner and under
        # every dotted prefix of it (`a.b.c` under `a`, `a.b` and `a.b.c`), so one pass builds them all
        self._under: dict[str, list[str]] = {}
        for n in self.order:
            for prefix in _prefixes(self.owner[n]):
                self._under.setdefault(prefix, []).append(n)

    # ------------------------------------------------------------ membership
    def nodes_under(self, path: str) -> list[str]:
        return self._under.get(path, [])

    def params(self, path: str) -> int:
        total = 0
        for n in self.nodes_under(path):
            d = self.ir.nodes[n]
            for w, shape in d.weights.items():
                if f"{d.module}.{w}" not in self.tie_targets:
                    total += math.prod(shape)
        return total

    def tied(self, path: str) -> list[str]:
        return sorted(t for t in self.tie_targets if _under(t.rsplit(".", 1)[0], path))

    def flops(self, path: str) -> tuple[int, int]:
        mm = other = 0
        for n in self.nodes_under(path):
            d = self.ir.nodes[n]
            mm += d.flops or 0
            other += d.flops_other or 0
        return mm, other

    def out_node(self, path: str) -> str | None:
        nodes = self.nodes_under(path)
        return nodes[-1] if nodes else None

    # ------------------------------------------------------------ structure
    def top(self) -> list[str]:
        """The top-level slots (encoder, backbone, head), in data-flow order."""
        seen: list[str] = []
        for n in self.order:
            head = self.owner[n].split(".")[0]
            if head and head not in seen:
                seen.append(head)
        return seen

    def children(self, path: str) -> list[str]:
        """Direct children in the module tree, in data-flow order (not name order: h.2 before h.10)."""
        depth = path.count(".") + 1
        kids = [p for p in self.ir.modules if p.startswith(path + ".") and p.count(".") == depth]
        first = {}
        for k in kids:
            nodes = self.nodes_under(k)
            first[k] = self.pos[nodes[0]] if nodes else len(self.order)
        return sorted(kids, key=lambda k: (first[k], k))

    def row(self, path: str, depth: int) -> BlockRow:
        info = self.ir.modules.get(path)
        mm, other = self.flops(path)
        if info is None:
            return BlockRow(path, "slot", "", depth, 1, self.params(path), mm, other, self.out_node(path),
                            self.tied(path))
        if info.kind == "list":
            kids = self.children(path)
            target = self.ir.modules[kids[0]].target if kids else "list"
            return BlockRow(path, "list", target, depth, len(kids), self.params(path), mm, other,
                            self.out_node(path), self.tied(path), kids[0] if kids else None)
        return BlockRow(path, info.kind, info.target, depth, 1, self.params(path), mm, other, self.out_node(path),
                        self.tied(path))

    def own_nodes(self, path: str) -> list[str]:
        """The nodes a block applies itself, outside any child module (residual adds, activations, pooling)."""
        return [n for n in self.nodes_under(path) if self.owner[n] == path]

    def own_row(self, path: str, depth: int) -> BlockRow | None:
        """A row for the nodes of `path` outside its children (kind `own`, target: their ops), so that a
        block's rows add up to the block; None when there are none or they cost nothing."""
        nodes = self.own_nodes(path)
        mm = sum(self.ir.nodes[n].flops or 0 for n in nodes)
        other = sum(self.ir.nodes[n].flops_other or 0 for n in nodes)
        params = sum(math.prod(s) for n in nodes for s in self.ir.nodes[n].weights.values())
        if not nodes or not (mm or other or params) or not self.children(path):
            return None
        ops = list(dict.fromkeys(self.ir.nodes[n].op for n in nodes))
        return BlockRow(path, "own", ", ".join(ops), depth, len(nodes), params, mm, other, None)

    def overview(self) -> list[BlockRow]:
        """Each top-level slot, then its direct children (repeat lists as one row) and the slot's own
        operations."""
        rows = []
        for slot in self.top():
            rows.append(self.row(slot, 0))
            for kid in self.children(slot):
                rows.append(self.row(kid, 1))
            own = self.own_row(slot, 1)
            if own is not None:
                rows.append(own)
        return rows

    def repeated(self) -> list[BlockRow]:
        """One repeat list per repeated block type (the first occurrence), for the "inside" tables."""
        out: list[BlockRow] = []
        seen: set[str] = set()
        for path in sorted(self.ir.modules, key=self._first_pos):
            info = self.ir.modules[path]
            if info.kind != "list":
                continue
            r = self.row(path, 0)
            if r.first is None or r.target in seen:
                continue
            seen.add(r.target)
            out.append(r)
        return out

    def inside(self, path: str) -> list[BlockRow]:
        """The direct children of one block instance."""
        return [self.row(k, 1) for k in self.children(path)]

    def _first_pos(self, path: str) -> tuple[int, str]:
        nodes = self.nodes_under(path)
        return (self.pos[nodes[0]] if nodes else len(self.order), path)

    # ------------------------------------------------------------ what the model uses
    def ops(self) -> dict[str, list[dict[str, Any]]]:
        """Primitive name -> the args of every node applying it."""
        out: dict[str, list[dict[str, Any]]] = {}
        for n in self.order:
            d = self.ir.nodes[n]
            out.setdefault(d.op, []).append(d.args)
        return out

    def block_targets(self) -> set[str]:
        return {m.target for m in self.ir.modules.values() if m.kind == "block"}
