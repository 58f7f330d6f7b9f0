"""Set prediction: object queries and pair selection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .core import Param, Primitive, Shape, ShapeError, _check_positive, _last, _same, dim_sum, fmt_shape


def _queries_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["dim"], "dim")(a, s)
    return [(s[0][0], a["num"], a["dim"])]


# retrieval-augmented generation
def _top_k_pairs_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    scores, question, passages = s
    if (len(scores) != 2 or len(question) != 2 or len(passages) != 3 or not _same(scores[0], question[0])
            or not _same(scores[0], passages[0]) or not _same(scores[1], passages[1])):
        raise ShapeError(f"expects scores (B, P), question tokens (B, Tq) and passage tokens (B, P, Tp), got "
                         f"{fmt_shape(scores)}, {fmt_shape(question)}, {fmt_shape(passages)}")
    if isinstance(passages[1], int) and a["k"] > passages[1]:
        raise ShapeError(f"cannot take the top {a['k']} of {passages[1]} passages")
    return [(scores[0], a["k"], dim_sum(question[1], passages[2]))]


_P = Param

PRIMS: list[Primitive] = [
    Primitive(
        "object_queries", (_P("num", "int"), _P("dim", "int")),
        "DETR's learned object queries: a (num, dim) table, expanded over the batch of its input (B, S, dim) -> "
        "(B, num, dim).",
        weights=lambda a: {"weight": (a["num"], a["dim"])}, shape=_queries_shape, check=_check_positive("num", "dim"),
        saves="none",
    ),
    Primitive(
        "top_k_pairs", (_P("k", "int"),),
        "Fusion-in-Decoder's reader inputs: the k passages of the highest retrieval score (B, P) (in decreasing "
        "order), each prefixed with the question's tokens: question (B, Tq) and passages (B, P, Tp) token ids -> "
        "(B, k, Tq + Tp) token ids. An index choice: no gradient flows to the scores.",
        n_inputs=3, shape=_top_k_pairs_shape, check=_check_positive("k"), saves="none",
    ),
]
