"""digraph.DiGraph against networkx.DiGraph: the same operations give the same answers, orders included."""

from __future__ import annotations

import networkx as nx
import pytest
from conftest import ROOT, compile_path
from hypothesis import given, settings
from hypothesis import strategies as st

from metagen_compiler.ir.digraph import CycleError, DiGraph

NODES = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("node"), NODES, st.integers(0, 3)),
        st.tuples(st.just("edge"), NODES, NODES, st.integers(0, 3)),
    ),
    max_size=30,
)


def build(ops: list[tuple]) -> tuple[DiGraph, nx.DiGraph]:
    ours, theirs = DiGraph(), nx.DiGraph()
    for op in ops:
        for g in (ours, theirs):
            if op[0] == "node":
                g.add_node(op[1], w=op[2])
            else:
                g.add_edge(op[1], op[2], ports=[op[3]])
    return ours, theirs


def acyclic(ops: list[tuple]) -> list[tuple]:
    """Edges only from a smaller to a larger name: a DAG whatever the draw."""
    return [op for op in ops if op[0] == "node" or op[1] < op[2]]


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_views_match_networkx(ops: list[tuple]) -> None:
    ours, theirs = build(ops)
    assert list(ours) == list(theirs) and len(ours) == len(theirs)
    assert list(ours.nodes) == list(theirs.nodes)
    assert list(ours.nodes(data=True)) == list(theirs.nodes(data=True))
    assert list(ours.edges) == list(theirs.edges)
    for n in "abcdefghz":
        assert (n in ours) == (n in theirs)
        for m in "abcdefgh":
            assert ours.has_edge(n, m) == theirs.has_edge(n, m)
        if n in theirs:
            assert ours.nodes[n] == theirs.nodes[n]
            assert list(ours.successors(n)) == list(theirs.successors(n))
            assert list(ours.predecessors(n)) == list(theirs.predecessors(n))
            assert ours.out_degree(n) == theirs.out_degree(n)
    for u, v in theirs.edges:
        assert ours.edges[u, v] == theirs.edges[u, v]
        assert ours.edges[u, v] is ours._pred[v][u]  # one dict for both directions, as in networkx


@settings(max_examples=200, deadline=None)
@given(OPS, st.dictionaries(NODES, st.integers(0, 2)))
def test_topological_order_matches_networkx(ops: list[tuple], keys: dict[str, int]) -> None:
    ours, theirs = build(acyclic(ops))
    key = lambda n: keys.get(n, 1)  # ties on purpose: broken by insertion order in both
    assert ours.lexicographical_topological_sort(key=key) == list(nx.lexicographical_topological_sort(theirs, key=key))
    index = {n: i for i, n in enumerate(theirs)}  # no key: the node added first among the ready ones
    assert ours.lexicographical_topological_sort() == list(nx.lexicographical_topological_sort(theirs, key=index.get))


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_cycles_agree_with_networkx(ops: list[tuple]) -> None:
    ours, theirs = build(ops)
    if nx.is_directed_acyclic_graph(theirs):
        assert len(ours.lexicographical_topological_sort()) == len(theirs)
    else:
        with pytest.raises(CycleError):
            ours.lexicographical_topological_sort()


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_to_networkx_is_the_same_graph(ops: list[tuple]) -> None:
    ours, theirs = build(ops)
    ours.graph["name"] = theirs.graph["name"] = "m"
    conv = ours.to_networkx()
    assert isinstance(conv, nx.DiGraph)
    assert list(conv.nodes(data=True)) == list(theirs.nodes(data=True))
    assert list(conv.edges(data=True)) == list(theirs.edges(data=True))
    assert conv.graph == theirs.graph


def test_compiled_graph_converts_to_networkx() -> None:
    comp = compile_path(ROOT / "examples" / "gpt2.msl")
    assert not comp.bag.has_errors
    g = comp.graph.to_networkx()
    assert nx.is_directed_acyclic_graph(g)
    assert list(g.nodes) == list(comp.graph.g.nodes) and list(g.edges) == list(comp.graph.g.edges)
    assert list(nx.lexicographical_topological_sort(g, key=list(g.nodes).index)) == comp.graph.topo()
    assert g.graph["estimates"]["params"] == comp.graph.g.graph["estimates"]["params"]
