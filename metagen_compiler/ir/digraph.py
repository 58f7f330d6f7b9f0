"""The graph IR's storage: networkx's DiGraph layout and the part of its API the compiler uses.

networkx is the graph IR's library: `DiGraph.to_networkx()` gives a `networkx.DiGraph` with the same
nodes, edges and attribute dicts, for analysis, drawing or export. The compile path itself works on
this class because `import networkx` costs about 0.12 s (its `__init__` loads every algorithm,
generator and reader), a third of a whole compile; the compiler needs a dozen methods of it.

The storage is networkx's: `_node` (node -> attribute dict), `_succ` and `_pred` (node -> neighbour
-> the one edge attribute dict both sides share), `graph` (graph attributes). Every method below
behaves as networkx's method of the same name, iteration orders included (insertion order); a
differential test (tests/test_digraph.py) runs both on random graphs.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["CycleError", "DiGraph"]

N = TypeVar("N", bound=Hashable)  # the node type: str in the graph IR (node ids), any hashable in general
AttrDict = dict[str, Any]


class CycleError(ValueError):
    """topological_sort found a cycle."""


class NodeView(Generic[N]):
    """`g.nodes`: iterate, `g.nodes[n]` (the attribute dict), `g.nodes(data=True)`."""

    __slots__ = ("_node",)

    def __init__(self, node: dict[N, AttrDict]) -> None:
        self._node = node

    def __iter__(self) -> Iterator[N]:
        return iter(self._node)

    def __getitem__(self, n: N) -> AttrDict:
        return self._node[n]

    def __call__(self, data: bool = False) -> Any:
        return iter(self._node.items()) if data else iter(self._node)


class EdgeView(Generic[N]):
    """`g.edges`: iterate (u, v) pairs in adjacency order; `g.edges[u, v]` (the attributes)."""

    __slots__ = ("_succ",)

    def __init__(self, succ: dict[N, dict[N, AttrDict]]) -> None:
        self._succ = succ

    def __iter__(self) -> Iterator[tuple[N, N]]:
        for u, nbrs in self._succ.items():
            for v in nbrs:
                yield u, v

    def __getitem__(self, e: tuple[N, N]) -> AttrDict:
        u, v = e
        return self._succ[u][v]


class DiGraph(Generic[N]):
    """A directed graph with node, edge and graph attributes (networkx's DiGraph, the part the compiler uses)."""

    def __init__(self) -> None:
        self.graph: AttrDict = {}
        self._node: dict[N, AttrDict] = {}
        self._succ: dict[N, dict[N, AttrDict]] = {}
        self._pred: dict[N, dict[N, AttrDict]] = {}
        self.nodes = NodeView(self._node)
        self.edges = EdgeView(self._succ)

    def __iter__(self) -> Iterator[N]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __contains__(self, n: object) -> bool:
        try:
            return n in self._node
        except TypeError:
            return False

    def add_node(self, n: N, **attr: Any) -> None:
        if n not in self._node:
            self._succ[n] = {}
            self._pred[n] = {}
            self._node[n] = attr
        else:
            self._node[n].update(attr)

    def add_edge(self, u: N, v: N, **attr: Any) -> None:
        for n in (u, v):
            if n not in self._node:
                self._succ[n] = {}
                self._pred[n] = {}
                self._node[n] = {}
        d = self._succ[u].get(v, {})
        d.update(attr)
        self._succ[u][v] = d
        self._pred[v][u] = d

    def has_edge(self, u: N, v: N) -> bool:
        return u in self._succ and v in self._succ[u]

    def successors(self, n: N) -> Iterator[N]:
        return iter(self._succ[n])

    def predecessors(self, n: N) -> Iterator[N]:
        return iter(self._pred[n])

    def out_degree(self, n: N) -> int:
        return len(self._succ[n])

    def lexicographical_topological_sort(self, key: Callable[[N], Any] | None = None) -> list[N]:
        """Kahn's algorithm taking the smallest `key` among the ready nodes at each step, ties (and no key)
        to the node added first: networkx's function of that name. Raises CycleError."""
        index = {n: i for i, n in enumerate(self._node)}
        key = key or index.__getitem__
        indegree = {n: len(p) for n, p in self._pred.items()}
        heap = [(key(n), index[n], n) for n in self._node if indegree[n] == 0]
        heapq.heapify(heap)
        order: list[N] = []
        while heap:
            _, _, n = heapq.heappop(heap)
            order.append(n)
            for s in self._succ[n]:
                indegree[s] -= 1
                if indegree[s] == 0:
                    heapq.heappush(heap, (key(s), index[s], s))
        if len(order) != len(self._node):
            raise CycleError("graph has a cycle")
        return order

    def to_networkx(self) -> Any:
        """A networkx.DiGraph with these nodes and edges, in this order; attribute dicts are shallow copies."""
        import networkx as nx

        g = nx.DiGraph()
        g.graph.update(self.graph)
        g.add_nodes_from(self._node.items())
        g.add_edges_from((u, v, d) for u, nbrs in self._succ.items() for v, d in nbrs.items())
        return g
