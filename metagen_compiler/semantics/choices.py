"""Enumerated choices for open values: `norm = ? in {layernorm, rmsnorm}`, `d_model = ? in {256, 512, 768}`.

A set is the whole domain of its `?`: the values in the order written. Without a search (a plain compile), the
solver (passes/solve.py) decides as follows:

- whole numbers for an integer parameter are a domain like `in lo..hi`: the budget rule picks among them (the
  largest model within the parameter budget, nearest the family's `prefer` ratios), so they need a budget as a
  range does (E402 without one);
- anything else (names of layers or enum choices, reals, booleans, strings) takes the FIRST value listed: the
  parameter count says nothing about which norm or activation is better, so the writer's order decides.

`metagenc search` makes every set a categorical dimension (search_space.py). The check here runs in the check
pass: an empty set (E213), a value listed twice (E214), values of mixed kinds or of the wrong kind for the
parameter (E201), a name that is not one of an enum parameter's choices (E203) or not a layer (E105), and a
set combined with `multiple_of` or `in lo..hi` (E201).
"""

from __future__ import annotations

from fractions import Fraction

from metagen_compiler.diagnostics import DiagnosticBag, Note, did_you_mean
from metagen_compiler.primitives import PRIMITIVES
from metagen_compiler.semantics.program import Program
from metagen_compiler.semantics.values import EvalError, Sym, Value, describe, evaluate
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.format_expr import expr_text

__all__ = ["check_choices", "choice_set", "choice_values", "is_integer_set", "plain_choice"]


def choice_set(cons: tuple[A.DimConstraint, ...]) -> A.InSet | None:
    """The `in {...}` among a binding's constraints, if it has one."""
    return next((c for c in cons if isinstance(c, A.InSet)), None)


def choice_values(s: A.InSet) -> list[Value]:
    """The values of a set, in the order written: numbers as numbers, bare words as symbols, strings as strings.
    Assumes the check pass accepted the set (its items evaluate)."""
    return [evaluate(i, {}, lambda n: Sym(n.dotted)) for i in s.items]


def is_integer_set(values: list[Value]) -> bool:
    return bool(values) and all(not isinstance(v, bool) and isinstance(v, int) for v in values)


def plain_choice(v: Value) -> int | float | str | bool:
    """A value as Optuna's categorical distributions take it (None, bool, int, float or str)."""
    if isinstance(v, Sym):
        return v.name
    if isinstance(v, Fraction):
        return int(v) if v.denominator == 1 else float(v)
    assert isinstance(v, (int, float, str, bool)), v
    return v


def _kind(v: Value) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float, Fraction)):
        return "number"
    if isinstance(v, Sym):
        return "name"
    if isinstance(v, str):
        return "string"
    return "other"


def check_choices(name: str, param: A.Param | None, cons: tuple[A.DimConstraint, ...], value: A.Expr, prog: Program,
                  modules: tuple[str, ...], bag: DiagnosticBag) -> None:
    """Diagnose the `in {...}` of one field or parameter (`param`: the family's declaration, for its type); a layer
    name is looked up in `modules` in turn (where the field is written, then the family's module), as the solver
    reads it."""
    s = choice_set(cons)
    if s is None:
        return
    if not isinstance(value, A.Unknown):
        bag.error("E201", f"`{name}` has a value; a choice `in {{...}}` belongs to an open `?`", s.span,
                  hint=f"write `{name} = ? in {{...}}`, or drop the choice")
        return
    other = next((c for c in cons if not isinstance(c, A.InSet)), None)
    if other is not None:
        bag.error("E201", f"the choice `in {{...}}` is the whole domain of `{name}`; it takes no `multiple_of` or "
                  "range beside it", other.span, hint="list the values the range would allow")
        return
    if not s.items:
        bag.error("E213", f"the choice for `{name}` lists no value", s.span,
                  hint=f"list the values `{name}` may take: `? in {{a, b}}`")
        return
    values: list[Value] = []
    for item in s.items:
        try:
            values.append(evaluate(item, {}, lambda n: Sym(n.dotted)))
        except EvalError as e:
            bag.error(e.code, e.message, e.span, hint=e.hint)
            return
    seen: dict[object, A.Expr] = {}
    for item, v in zip(s.items, values):
        key = (_kind(v), float(v) if _kind(v) == "number" else v)  # type: ignore[arg-type]
        if key in seen:
            bag.error("E214", f"`{expr_text(item)}` is listed twice in the choice for `{name}`", item.span,
                      notes=[Note("first listed here", seen[key].span)])
            return
        seen[key] = item
    kinds = {_kind(v) for v in values}
    if len(kinds) > 1:
        first = values[0]
        odd = next(i for i, v in zip(s.items, values) if _kind(v) != _kind(first))
        bag.error("E201", f"the choice for `{name}` mixes {_kind(first)}s and {_kind(values[s.items.index(odd)])}s",
                  odd.span, hint="list values of one kind")
        return
    _check_kind(name, param, s, values, prog, modules, bag)


def _check_kind(name: str, param: A.Param | None, s: A.InSet, values: list[Value], prog: Program,
                modules: tuple[str, ...], bag: DiagnosticBag) -> None:
    t = param.type if param is not None else None
    type_ = t.name if isinstance(t, A.NamedType) else "enum" if isinstance(t, A.EnumType) else None
    for item, v in zip(s.items, values):
        wrong = None
        if type_ == "int" and (isinstance(v, bool) or not isinstance(v, int)):
            wrong = "a whole number"
        elif type_ == "float" and (isinstance(v, bool) or not isinstance(v, (int, float, Fraction))):
            wrong = "a number"
        elif type_ == "bool" and not isinstance(v, bool):
            wrong = "true or false"
        elif type_ in ("layer", "enum") and not isinstance(v, Sym):
            wrong = "a layer" if type_ == "layer" else "one of " + ", ".join(t.values)  # type: ignore[union-attr]
        elif type_ == "str" and not isinstance(v, (str, Sym)):
            wrong = "a string or a name"
        if wrong is not None:
            bag.error("E201", f"`{name}` takes {wrong}; the choice lists {describe(v)}", item.span)
            return
        if type_ == "enum" and isinstance(t, A.EnumType) and isinstance(v, Sym) and v.name not in t.values:
            bag.error("E203", f"`{v.name}` is not a choice for `{name}`", item.span,
                      hint=did_you_mean(v.name, t.values) or f"choices: {', '.join(t.values)}")
            return
        if type_ == "layer" and isinstance(v, Sym) and isinstance(item, A.Name):
            blocks = [d for d in (prog.lookup(m, item) for m in modules) if d is not None and d.kind == "block"]
            if not blocks and not (len(item.parts) == 1 and v.name in PRIMITIVES):
                visible = [b for m in modules for b in prog.visible(m, "block")]
                bag.error("E105", f"unknown layer `{v.name}` in the choice for `{name}`", item.span,
                          hint=did_you_mean(v.name, list(PRIMITIVES) + visible)
                          or "a layer is a primitive (layernorm, rmsnorm, gelu, ...) or a block")
                return
