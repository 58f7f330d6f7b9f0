"""Message passing over an edge index."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .core import Param, Primitive, Shape, ShapeError, _check_positive, _last, _same, fmt_shape, numel


def _graph_shape(width: Callable[[Mapping[str, Any]], int]) -> Callable[[Mapping[str, Any], list[Shape]], list[Shape]]:
    """(N, in_features) node features and a (2, E) edge index -> (N, width) node states."""

    def shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
        x, edges = s
        if len(x) != 2:
            raise ShapeError(f"expects node features (N, {a['in_features']}), got {fmt_shape(x)}")
        _last(a["in_features"], "in_features")(a, s)
        if len(edges) != 2 or not _same(edges[0], 2):
            raise ShapeError(f"expects an edge index (2, E) as its second input, got {fmt_shape(edges)}")
        return [(x[0], width(a))]

    return shape


def _gcn_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    # the linear map (N x in x out) is a matmul; per edge (self loops included): the degree count, the
    # normalisation (two gathers and a product) and the scattered, scaled message (out each); the bias
    n, e = i[0][0], i[1][1] + i[0][0]
    return 2 * n * a["in_features"] * a["out_features"], e * (4 + 2 * a["out_features"]) + 2 * n + n * a["out_features"]


def _gat_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    # the linear map is a matmul; per node and head the two attention scores (2 x 2 out); per edge and head
    # the score sum, LeakyReLU, the scatter max, exp, the scatter sum and the division (~7), and the
    # weighted message (2 out per head); the bias
    n, e, h, c = i[0][0], i[1][1] + i[0][0], a["heads"], a["out_features"]
    return 2 * n * a["in_features"] * h * c, 4 * n * h * c + e * h * (7 + 2 * c) + n * h * c


def _gat_edge_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    # gat_conv's, plus the edge projection (E' x edge_dim x H C, a matmul, self loops included), the self loops'
    # mean edge features (a scatter sum of E x edge_dim, a count and a division) and per edge and head the
    # edge score (2 C) and its sum into e (1)
    mm, other = _gat_flops(a, i[:2], o)
    n, e, h, c, d = i[0][0], i[1][1] + i[0][0], a["heads"], a["out_features"], a["edge_dim"]
    return mm + 2 * e * d * h * c, other + 2 * i[1][1] * d + n * d + e * h * (2 * c + 1)


def _gat_edge_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, edges, attr = s
    out = _graph_shape(lambda a: a["heads"] * a["out_features"])(a, [x, edges])
    if len(attr) != 2 or not _same(attr[0], edges[1]) or not _same(attr[1], a["edge_dim"]):
        raise ShapeError(f"expects edge features (E, {a['edge_dim']}) with E the edge index's, got {fmt_shape(attr)}")
    return out


def _gat_check(a: Mapping[str, Any]) -> str | None:
    msg = _check_positive("in_features", "out_features", "heads")(a)
    if msg:
        return msg
    if not 0 <= float(a["negative_slope"]) < 1:
        return f"negative_slope must be in [0, 1), got {a['negative_slope']}"
    return None


def _graph_pool_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, index = s
    if len(x) != 2 or len(index) != 1 or not _same(index[0], x[0]):
        raise ShapeError(f"expects node states (N, D) and a graph id per node (N,), got {fmt_shape(x)}, {fmt_shape(index)}")
    return [(a["graphs"], x[1])]


def _same_graph_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    (ids,) = s
    if len(ids) != 1:
        raise ShapeError(f"expects the graph id of each node (N,), got {fmt_shape(ids)}")
    return [(1, a["heads"], ids[0], ids[0])]


def _graph_conv_saved(op: str) -> Callable[[Mapping[str, Any], list[tuple[int, ...]], list[tuple[int, ...]]], int]:
    """Beyond the node features: the int64 sources and targets with self loops (E' = E + N each, for the
    gathers and the scatter) and the scaled messages the scatter adds up (index_add keeps its source);
    gcn_conv: the normalisation per edge (E',); gat_conv (H heads of C): the projected features h (N, H C), per
    edge and head the LeakyReLU input, exp, the gathered softmax sums and alpha (E', H), the gathered features
    (E', H, C)."""

    def saved(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> int:
        n, e = i[0][0], i[1][1] + i[0][0]
        if op == "gcn_conv":
            return 2 * 8 * e + 4 * e + 4 * e * int(a["out_features"])
        h, c = int(a["heads"]), int(a["out_features"])
        base = 2 * 8 * e + 4 * n * h * c + 4 * 4 * e * h + 2 * 4 * e * h * c
        if op == "gat_conv_edge":  # the edge features with the self loops' (E', edge_dim), their projection (E', H C)
            base += 4 * e * int(a["edge_dim"]) + 4 * e * h * c
        return base

    return saved


_P = Param

PRIMS: list[Primitive] = [
    # graphs: node features (N, F) and an edge index (2, E), row 0 sources, row 1 targets
    Primitive(
        "gcn_conv", (_P("in_features", "int"), _P("out_features", "int"), _P("bias", "bool", True)),
        "Graph convolution (Kipf and Welling 2017) of node features (N, in) over an edge index (2, E): with a self "
        "loop per node and deg the in-degree, out_i = sum_{j -> i} (x_j W^T) / sqrt(deg_i deg_j) + b.",
        n_inputs=2, weights=lambda a: {"weight": (a["out_features"], a["in_features"])}
        | ({"bias": (a["out_features"],)} if a["bias"] else {}),
        shape=_graph_shape(lambda a: a["out_features"]), flops=_gcn_flops,
        check=_check_positive("in_features", "out_features"), saves="first", tags=frozenset({"mm"}),
        saved=_graph_conv_saved("gcn_conv"),
    ),
    Primitive(
        "gat_conv", (_P("in_features", "int"), _P("out_features", "int"), _P("heads", "int", 1),
                     _P("negative_slope", "float", 0.2), _P("bias", "bool", True)),
        "Graph attention (Velickovic et al. 2018) of node features (N, in) over an edge index (2, E), self loops "
        "added: per head h = x W^T, e_ij = LeakyReLU(a_src . h_j + a_dst . h_i), softmax over each node's incoming "
        "edges, out_i = sum_j alpha_ij h_j; the heads concatenated: (N, heads * out).",
        n_inputs=2, weights=lambda a: {"weight": (a["heads"] * a["out_features"], a["in_features"]),
                                       "att_src": (1, a["heads"], a["out_features"]),
                                       "att_dst": (1, a["heads"], a["out_features"])}
        | ({"bias": (a["heads"] * a["out_features"],)} if a["bias"] else {}),
        shape=_graph_shape(lambda a: a["heads"] * a["out_features"]), flops=_gat_flops, check=_gat_check,
        saves="first", tags=frozenset({"mm"}),
        saved=_graph_conv_saved("gat_conv"),
    ),
    Primitive(
        "gat_conv_edge", (_P("in_features", "int"), _P("out_features", "int"), _P("edge_dim", "int"),
                          _P("heads", "int", 1), _P("negative_slope", "float", 0.2), _P("bias", "bool", True)),
        "Graph attention with edge features, as PyTorch Geometric's GATConv(edge_dim=...): node features (N, in), "
        "an edge index (2, E) and edge features (E, edge_dim); self loops added, each with the mean features of its "
        "node's incoming edges (fill_value='mean'); per head h = x W^T, e_ij = LeakyReLU(a_src . h_j + a_dst . h_i "
        "+ a_edge . (W_e f_ji)), softmax over each node's incoming edges, out_i = sum_j alpha_ij h_j; the heads "
        "concatenated: (N, heads * out).",
        n_inputs=3, weights=lambda a: {"weight": (a["heads"] * a["out_features"], a["in_features"]),
                                       "att_src": (1, a["heads"], a["out_features"]),
                                       "att_dst": (1, a["heads"], a["out_features"]),
                                       "lin_edge": (a["heads"] * a["out_features"], a["edge_dim"]),
                                       "att_edge": (1, a["heads"], a["out_features"])}
        | ({"bias": (a["heads"] * a["out_features"],)} if a["bias"] else {}),
        shape=_gat_edge_shape, flops=_gat_edge_flops,
        check=lambda a: _check_positive("edge_dim")(a) or _gat_check(a),
        saves="first", tags=frozenset({"mm"}),
        saved=_graph_conv_saved("gat_conv_edge"),
    ),
    Primitive(
        "same_graph_bias", (_P("heads", "int"),),
        "The additive attention bias that keeps attention within each graph of a mini-batch given as one "
        "disconnected graph: the graph id of each node (N,) -> (1, heads, N, N), 0 where both nodes belong to one "
        "graph and -inf elsewhere (sdpa_bias's bias input).",
        shape=lambda a, s: _same_graph_shape(a, s), flops=lambda a, i, o: (0, i[0][0] * i[0][0]),
        check=_check_positive("heads"), saves="none",
    ),
    Primitive(
        "graph_mean_pool", (_P("graphs", "int"),),
        "Mean of each graph's node states: (N, D) and the graph id of each node (N,), in [0, graphs) -> (graphs, D); "
        "a graph without nodes gives zeros.",
        n_inputs=2, shape=_graph_pool_shape, flops=lambda a, i, o: (0, numel(i[0]) + i[1][0] + numel(o[0])),
        check=_check_positive("graphs"),
        saved=lambda a, i, o: 4 * int(a["graphs"]),  # the node count per graph, the divisor
    ),
]
