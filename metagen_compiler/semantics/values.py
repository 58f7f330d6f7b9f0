"""Compile-time values and the evaluation of MSL expressions over them.

Dimension arithmetic is exact: `/` gives a Fraction, and a dimension must come out a whole number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from metagen_compiler.diagnostics import did_you_mean
from metagen_compiler.semantics.limits import LIMIT_CODE, LIMITS_HINT, MAX_INT, PAST_MAX_FLOAT, PAST_MAX_INT, short_int
from metagen_compiler.span import Span
from metagen_compiler.syntax import ast as A

__all__ = [
    "UNIT_SCALE",
    "EvalError",
    "LayerRef",
    "Sym",
    "UnknownValue",
    "Value",
    "as_int",
    "as_number",
    "evaluate",
    "format_value",
    "quantity_value",
]


@dataclass(frozen=True)
class Sym:
    """An enum symbol such as `rope` or `real_time`."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class LayerRef:
    """A layer as a value: a primitive or block, with some arguments bound (`swiglu(hidden = 2048)`)."""

    kind: str  # "primitive" | "block"
    target: str  # primitive name or block qualname
    kwargs: tuple[tuple[str, Any], ...] = ()
    span: Span | None = None

    def __str__(self) -> str:
        if not self.kwargs:
            return self.target
        return f"{self.target}(" + ", ".join(f"{k}={format_value(v)}" for k, v in self.kwargs) + ")"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerRef) and (self.kind, self.target, self.kwargs) == (
            other.kind, other.target, other.kwargs)

    def __hash__(self) -> int:
        return hash((self.kind, self.target, self.kwargs))


@dataclass(frozen=True)
class UnknownValue:
    span: Span | None = None


Value = int | float | Fraction | bool | str | Sym | LayerRef | tuple | UnknownValue | None


class EvalError(Exception):
    """A problem found while evaluating; `name` is the undefined name, for E103, so that a caller that
    knows more names in scope can add a "did you mean"."""

    def __init__(self, code: str, message: str, span: Span | None, hint: str | None = None, *,
                 name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.span = span
        self.hint = hint
        self.name = name


# Unit suffixes: scale and the dimension they measure.
UNIT_SCALE: dict[str, tuple[float, str]] = {
    "k": (1e3, "count"), "K": (1e3, "count"), "M": (1e6, "count"), "B": (1e9, "count"), "G": (1e9, "count"),
    "T": (1e12, "count"),
    "KB": (1e3, "bytes"), "MB": (1e6, "bytes"), "GB": (1e9, "bytes"), "TB": (1e12, "bytes"),
    "KiB": (2.0**10, "bytes"), "MiB": (2.0**20, "bytes"), "GiB": (2.0**30, "bytes"), "TiB": (2.0**40, "bytes"),
    "ns": (1e-9, "time"), "us": (1e-6, "time"), "ms": (1e-3, "time"), "s": (1.0, "time"),
    "Hz": (1.0, "frequency"), "kHz": (1e3, "frequency"), "fps": (1.0, "rate"), "px": (1.0, "pixels"),
}


def quantity_value(q: A.Quantity) -> tuple[float | int, str]:
    scale, dim = UNIT_SCALE[q.unit]
    v = q.value * scale
    if not math.isfinite(v):  # the parser reports it; YAML's quantities come here unchecked
        return v, dim
    if dim in ("count", "bytes", "pixels", "frequency") and abs(v - round(v)) < 1e-6:
        return round(v), dim
    return v, dim


def as_number(v: Value, span: Span | None) -> int | float | Fraction:
    if isinstance(v, bool) or not isinstance(v, (int, float, Fraction)):
        raise EvalError("E201", f"expected a number, found {describe(v)}", span)
    return v


def _past_max_int(what: str, v: float | Fraction, span: Span | None) -> EvalError:
    shown = short_int(int(v)) if not isinstance(v, float) else f"{v:.6g}"
    return EvalError(LIMIT_CODE, f"{what} is {shown}, {PAST_MAX_INT}", span, LIMITS_HINT)


def as_int(v: Value, span: Span | None, what: str = "dimension") -> int:
    """An integer value, within the language's largest integer (limits.MAX_INT): a dimension past it
    would overflow the int64 of generated code (example_inputs, ONNX initialisers)."""
    if isinstance(v, bool):
        raise EvalError("E201", f"expected an integer {what}, found a boolean", span)
    if isinstance(v, float) and not math.isfinite(v):
        raise EvalError(LIMIT_CODE, f"{what} is {format_value(v)}, {PAST_MAX_FLOAT}", span, LIMITS_HINT)
    if isinstance(v, int) or (isinstance(v, Fraction) and v.denominator == 1) or (
            isinstance(v, float) and v.is_integer()):
        n = int(v)
        if abs(n) > MAX_INT:
            raise _past_max_int(what, v, span)
        return n
    if isinstance(v, (Fraction, float)):
        return_hint = "round it with round(x), floor(x), ceil(x) or round_up(x, m)"
        raise EvalError("E205", f"{what} evaluates to {format_value(v)}, which is not an integer", span, return_hint)
    raise EvalError("E201", f"expected an integer {what}, found {describe(v)}", span)


def describe(v: Value) -> str:
    if isinstance(v, bool):
        return f"boolean `{str(v).lower()}`"
    if isinstance(v, (int, float, Fraction)):
        return f"number `{format_value(v)}`"
    if isinstance(v, str):
        return f"string {v!r}"
    if isinstance(v, Sym):
        return f"name `{v.name}`"
    if isinstance(v, LayerRef):
        return f"layer `{v}`"
    if isinstance(v, tuple):
        return "a list"
    if isinstance(v, UnknownValue):
        return "an unknown `?`"
    return "nothing"


def format_value(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Fraction):
        if v.denominator == 1:
            return str(v.numerator)
        return f"{float(v):.6g}"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, tuple):
        return "[" + ", ".join(format_value(i) for i in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, UnknownValue):
        return "?"
    return str(v)


def _symbolic(v: Any) -> Any:
    """For `==`: a bare layer name is also a symbol, so `position == rope` compares names even
    though `rope` is a primitive too."""
    if isinstance(v, LayerRef) and not v.kwargs:
        return Sym(v.target.rsplit(".", 1)[-1])
    return v


def _norm(v: Any) -> Any:
    if isinstance(v, Fraction) and v.denominator == 1:
        return int(v)
    return v


def _checked(v: Any, span: Span | None) -> Any:
    """The result of arithmetic, within the limits of the language: an integer no larger than MAX_INT, a
    finite real float. A fraction too fine for MAX_INT becomes the nearest float."""
    if isinstance(v, bool):
        return v
    if isinstance(v, complex):  # (-8) ** 0.5
        raise EvalError("E201", "the value of this expression is not a real number", span)
    if isinstance(v, float):
        if math.isnan(v):  # YAML's .nan, inf - inf
            raise EvalError("E201", "the value of this expression is not a number (nan)", span)
        if not math.isfinite(v):
            raise EvalError(LIMIT_CODE, f"the value of this expression is {PAST_MAX_FLOAT}", span, LIMITS_HINT)
        return v
    if isinstance(v, int):
        if abs(v) > MAX_INT:
            raise _past_max_int("the value of this expression", v, span)
        return v
    if isinstance(v, Fraction):
        if v.denominator == 1 or (abs(v.numerator) <= MAX_INT and v.denominator <= MAX_INT):
            return _checked(_norm(v), span) if v.denominator == 1 else v
        if abs(v) > MAX_INT:
            raise _past_max_int("the value of this expression", math.floor(v), span)
        return float(v)
    return v


# the most bits a power may produce before it is computed: past the float range there is no
# number to give, and an exact integer power of that size would take seconds and gigabytes
_POW_BITS = 1100


def _power(x: float | Fraction, y: float | Fraction, span: Span | None) -> Any:
    if isinstance(x, (int, Fraction)) and isinstance(y, (int, Fraction)) and y.denominator == 1 and x not in (0, 1, -1):
        xf = Fraction(x)
        size = max(abs(xf.numerator).bit_length(), xf.denominator.bit_length())
        if isinstance(x, int) and y > 0 and y * (size - 1) > 64:  # an integer past MAX_INT, not computed
            raise EvalError(LIMIT_CODE, f"the value of this expression is {PAST_MAX_INT}", span, LIMITS_HINT)
        if abs(y) * size > _POW_BITS:
            raise EvalError(LIMIT_CODE, f"the value of this expression is {PAST_MAX_FLOAT}", span, LIMITS_HINT)
    return x**y


def _round_up(x: Value, m: Value) -> int:
    xi = as_number(x, None)
    mi = as_int(m, None, "multiple")
    return math.ceil(Fraction(xi) / mi) * mi if not isinstance(xi, float) else math.ceil(xi / mi) * mi


FUNCTIONS: dict[str, Callable[..., Value]] = {
    "round": lambda x: round(x),
    "floor": lambda x: math.floor(x),
    "ceil": lambda x: math.ceil(x),
    "round_up": _round_up,
    "min": lambda *a: min(a),
    "max": lambda *a: max(a),
    "sqrt": lambda x: math.sqrt(x),
    "log2": lambda x: math.log2(x),
    "len": lambda x: len(x),
    "sum": lambda x: sum(x),
}


Resolver = Callable[[A.Name], Value]


def _operand(v: Value, e: A.Expr, env: Mapping[str, Value]) -> int | float | Fraction:
    """A number for arithmetic; a bare word that nothing defines is an undefined name, not a symbol."""
    if isinstance(v, Sym) and isinstance(e, A.Name) and e.dotted == v.name and v.name not in env:
        raise EvalError("E103", f"undefined name `{v.name}`", e.span, did_you_mean(v.name, list(env)), name=v.name)
    return as_number(v, e.span)


def evaluate(e: A.Expr, env: Mapping[str, Value], resolve: Resolver | None = None) -> Value:
    """Evaluate a compile-time expression. Names look up `env`, then `resolve` (symbols, layers)."""
    if isinstance(e, A.Num):
        return _checked(e.value, e.span)  # a YAML `.inf` or a huge integer reaches here unchecked
    if isinstance(e, A.Quantity):
        return _checked(quantity_value(e)[0], e.span)
    if isinstance(e, A.Str):
        return e.value
    if isinstance(e, A.Bool):
        return e.value
    if isinstance(e, A.Unknown):
        return UnknownValue(e.span)
    if isinstance(e, A.Name):
        if len(e.parts) == 1 and e.parts[0] in env:
            return env[e.parts[0]]
        if resolve is not None:
            return resolve(e)
        raise EvalError("E103", f"undefined name `{e.dotted}`", e.span)
    if isinstance(e, A.TupleExpr | A.ListExpr):
        return tuple(evaluate(i, env, resolve) for i in e.items)
    if isinstance(e, A.Neg):
        return _checked(_norm(-_operand(evaluate(e.operand, env, resolve), e.operand, env)), e.span)
    if isinstance(e, A.Not):
        return not _truth(evaluate(e.operand, env, resolve), e.operand.span)
    if isinstance(e, A.BoolOp):
        left = _truth(evaluate(e.left, env, resolve), e.left.span)
        if e.op == "and":
            return left and _truth(evaluate(e.right, env, resolve), e.right.span)
        return left or _truth(evaluate(e.right, env, resolve), e.right.span)
    if isinstance(e, A.Compare):
        a = evaluate(e.left, env, resolve)
        b = evaluate(e.right, env, resolve)
        if e.op in ("==", "!="):
            eq = _symbolic(_norm(a)) == _symbolic(_norm(b))
            return eq if e.op == "==" else not eq
        x = _operand(a, e.left, env)
        y = _operand(b, e.right, env)
        return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[e.op]
    if isinstance(e, A.BinOp):
        a = evaluate(e.left, env, resolve)
        b = evaluate(e.right, env, resolve)
        if isinstance(a, UnknownValue) or isinstance(b, UnknownValue):
            return UnknownValue(e.span)
        x = _operand(a, e.left, env)
        y = _operand(b, e.right, env)
        if e.op in ("/", "//", "%") and y == 0:
            raise EvalError("E210", "division by zero", e.span)
        try:
            return _checked(_norm(_arith(e.op, x, y, e.span)), e.span)
        except ZeroDivisionError:  # 0 ** -1
            raise EvalError("E210", "division by zero", e.span) from None
        except OverflowError:  # float arithmetic past the float range
            raise EvalError(LIMIT_CODE, f"the value of this expression is {PAST_MAX_FLOAT}", e.span,
                            LIMITS_HINT) from None
    if isinstance(e, A.Index):
        seq = evaluate(e.value, env, resolve)
        idx = as_int(evaluate(e.index, env, resolve), e.index.span, "index")
        if not isinstance(seq, tuple):
            raise EvalError("E201", f"cannot index {describe(seq)}", e.value.span)
        if not -len(seq) <= idx < len(seq):
            raise EvalError("E201", f"index {idx} is out of range for a list of {len(seq)}", e.index.span)
        return seq[idx]
    if isinstance(e, A.Call):
        fname = e.func.dotted
        if fname in FUNCTIONS and all(a.name is None for a in e.args):
            vals = [evaluate(a.value, env, resolve) for a in e.args]
            try:
                return _checked(_norm(FUNCTIONS[fname](*vals)), e.span)
            except EvalError:
                raise
            except (TypeError, ValueError, ArithmeticError) as ex:  # round(inf), round_up(x, 0), sqrt(-1)
                raise EvalError("E204", f"bad arguments to `{fname}`: {ex}", e.span) from None
        if resolve is not None:
            base = resolve(e.func)
            if isinstance(base, LayerRef):
                kw = dict(base.kwargs)
                for arg in e.args:
                    if arg.name is None:
                        raise EvalError("E204", "a layer used as a value takes only named arguments", arg.span,
                                        "write `name = value`")
                    kw[arg.name.name] = evaluate(arg.value, env, resolve)
                return LayerRef(base.kind, base.target, tuple(sorted(kw.items())), e.span)
        raise EvalError("E103", f"undefined function `{fname}`", e.func.span,
                        did_you_mean(fname, FUNCTIONS)
                        or f"functions are {', '.join(FUNCTIONS)}; a layer value names a primitive or a block", name=fname)
    raise EvalError("E201", "a tensor expression is not allowed here", e.span)


def _arith(op: str, x: float | Fraction, y: float | Fraction, span: Span | None) -> Any:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        if isinstance(x, float) or isinstance(y, float):
            return x / y
        return Fraction(x) / Fraction(y)
    if op == "//":
        return x // y
    if op == "%":
        return x % y
    if op == "**":
        return _power(x, y, span)
    raise AssertionError(op)


def _truth(v: Value, span: Span | None) -> bool:
    if isinstance(v, bool):
        return v
    raise EvalError("E201", f"expected a boolean, found {describe(v)}", span)
