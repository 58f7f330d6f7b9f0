"""Expressions back to MSL text (for dumps, messages and the formatter)."""

from __future__ import annotations

from metagen_compiler.syntax import ast as A

__all__ = ["expr_text"]

_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "neg": 7, "**": 8}


def _args(args: tuple[A.Arg, ...] | None) -> str:
    if args is None:
        return ""
    return "(" + ", ".join((f"{a.name.name} = " if a.name else "") + expr_text(a.value) for a in args) + ")"


def layer_text(ly: A.Layer) -> str:
    label = f"{ly.label.name}: " if ly.label else ""
    rep = f"repeat({expr_text(ly.repeat)}) " if ly.repeat is not None else ""
    return f"{label}{rep}{ly.callee.dotted}{_args(ly.args)}"


def _wrap(e: A.Expr, parent: int) -> str:
    t = expr_text(e)
    p = _prec(e)
    return f"({t})" if p < parent else t


def _prec(e: A.Expr) -> int:
    if isinstance(e, A.BoolOp):
        return _PREC[e.op]
    if isinstance(e, A.Not):
        return _PREC["not"]
    if isinstance(e, A.Compare):
        return _PREC["cmp"]
    if isinstance(e, A.BinOp):
        return _PREC[e.op]
    if isinstance(e, A.Neg):
        return _PREC["neg"]
    if isinstance(e, A.Apply):
        return 0
    return 10


def expr_text(e: A.Expr) -> str:
    if isinstance(e, A.Num):
        return repr(e.value) if isinstance(e.value, float) else str(e.value)
    if isinstance(e, A.Quantity):
        return e.text
    if isinstance(e, A.Str):
        return '"' + e.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(e, A.Unknown):
        return "?"
    if isinstance(e, A.Bool):
        return "true" if e.value else "false"
    if isinstance(e, A.Name):
        return e.dotted
    if isinstance(e, A.Call):
        return f"{e.func.dotted}{_args(e.args)}"
    if isinstance(e, A.BinOp):
        p = _PREC[e.op]
        right_p = p + 1 if e.op != "**" else p
        left_p = p if e.op != "**" else p + 1
        return f"{_wrap(e.left, left_p)} {e.op} {_wrap(e.right, right_p)}"
    if isinstance(e, A.Index):
        return f"{_wrap(e.value, 10)}[{expr_text(e.index)}]"
    if isinstance(e, A.Neg):
        return f"-{_wrap(e.operand, _PREC['neg'])}"
    if isinstance(e, A.Compare):
        return f"{_wrap(e.left, 5)} {e.op} {_wrap(e.right, 5)}"
    if isinstance(e, A.BoolOp):
        p = _PREC[e.op]
        return f"{_wrap(e.left, p)} {e.op} {_wrap(e.right, p + 1)}"
    if isinstance(e, A.Not):
        return f"not {_wrap(e.operand, _PREC['not'])}"
    if isinstance(e, A.TupleExpr):
        inner = ", ".join(expr_text(i) for i in e.items)
        return f"({inner}{',' if len(e.items) == 1 else ''})"
    if isinstance(e, A.ListExpr):
        return "[" + ", ".join(expr_text(i) for i in e.items) + "]"
    if isinstance(e, A.Apply):
        return f"{_wrap(e.input, 0)} >> {layer_text(e.layer)}"
    raise AssertionError(type(e))
