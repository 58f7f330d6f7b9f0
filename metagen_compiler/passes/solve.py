"""solve: give every open dimension (`?`) a value.

The search is deterministic. Each open dimension has a finite domain (its `in lo..hi` range,
stepped by `multiple_of`, or the whole numbers of its choice `in {64, 128, 256}`). A choice of anything
else (`norm = ? in {layernorm, rmsnorm}`, reals, booleans) takes its first value before the search
(choices.py says why); `metagenc search` explores every value. The widest domain is searched by
bisection (the parameter count grows with it); the others are enumerated. Among solutions that use at least 98% of the parameter
budget, the one closest to the family's `prefer` ratios wins; without such solutions, the one
with the most parameters. Counting is exact (the same elaboration that lowering uses).
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from metagen_compiler.ir.spec import Bound, SolveReport, SpecIR, dump_spec
from metagen_compiler.semantics.choices import choice_set, choice_values, is_integer_set
from metagen_compiler.semantics.elaborate import Elaborator
from metagen_compiler.semantics.family import count_params, evaluate_dims
from metagen_compiler.semantics.limits import LIMIT_CODE
from metagen_compiler.semantics.program import Program
from metagen_compiler.semantics.values import EvalError, Sym, Value, as_int, evaluate
from metagen_compiler.syntax import ast as A

from ..compilation import Compilation
from ..diagnostics import DiagnosticBag, Note
from ..span import Span

MIN_FILL = 0.98
MAX_OUTER = 4096
DEFAULT_RANGE = (1, 4096)


@dataclass
class Unknown:
    name: str
    # a range is lazy: indexing and len() are O(1), so the search costs the same for 2..10 and 2..2**53; a choice
    # of whole numbers is their sorted tuple
    domain: Sequence[int]
    span: Span | None


def _domain(name: str, cons: tuple[A.DimConstraint, ...], dims_env: dict[str, Value]) -> Sequence[int]:
    choice = choice_set(cons)
    if choice is not None:  # whole numbers (the check pass made sure); ascending, as a range is
        return tuple(sorted(as_int(v, choice.span, "choice") for v in choice_values(choice)))
    step, lo, hi = 1, None, None
    for c in cons:
        if isinstance(c, A.MultipleOf):
            step = as_int(evaluate(c.value, dims_env), c.value.span, "multiple_of")  # within MAX_INT
            if step < 1:
                raise EvalError("E205", f"`{name}` is a multiple_of {step}; it must be 1 or more", c.value.span)
        elif isinstance(c, A.InRange):
            lo = as_int(evaluate(c.lo, dims_env), c.lo.span, "range bound")
            hi = as_int(evaluate(c.hi, dims_env), c.hi.span, "range bound")
    lo = lo if lo is not None else DEFAULT_RANGE[0]
    hi = hi if hi is not None else DEFAULT_RANGE[1] * step
    first = -(-lo // step) * step  # the least multiple of step at or above lo
    return range(max(first, step), hi + 1, step)


def _budget(spec: SpecIR) -> tuple[int | None, int, object | None]:
    hi, lo, span = None, 0, None
    for c in spec.constraint("params"):
        v = int(c.value)  # type: ignore[arg-type]
        if c.op in ("<=", "="):
            hi, span = v, c.span
        elif c.op == "<":
            hi, span = v - 1, c.span
        if c.op in (">=", "="):
            lo = v
        elif c.op == ">":
            lo = v + 1
    return hi, lo, span


def _prefer_distance(spec: SpecIR, dims: dict[str, Value]) -> float:
    fam = spec.family.node
    assert isinstance(fam, A.Family)
    d = 0.0
    for p in fam.prefers:
        try:
            a = float(evaluate(p.lhs, dims, lambda n: Sym(n.dotted)))  # type: ignore[arg-type]
            b = float(evaluate(p.rhs, dims, lambda n: Sym(n.dotted)))  # type: ignore[arg-type]
        except (EvalError, TypeError):
            continue
        if a > 0 and b > 0:
            d += abs(math.log(a / b))
    return d


@dataclass(frozen=True)
class SolvePass:
    name: ClassVar[str] = "solve"
    doc: ClassVar[str] = "Solve open dimensions under the parameter budget; evaluate every dimension."

    def run(self, comp: Compilation) -> None:
        spec, prog, bag = comp.spec, comp.program, comp.bag
        assert spec is not None and prog is not None
        t0 = time.perf_counter()
        elab = Elaborator(prog)
        report = SolveReport()
        spec.solve = report
        unknown_names = [k for k, b in spec.bindings.items() if isinstance(b.expr, A.Unknown)]
        report.first_choices = [k for k in unknown_names if _take_first_choice(spec, k)]
        unknown_names = [k for k in unknown_names if k not in report.first_choices]
        report.unknowns = unknown_names
        if not unknown_names:
            try:
                spec.dims = evaluate_dims(spec, prog, elab, {})
                count_params(elab, spec, spec.dims)  # surfaces requirement failures with their spans
            except EvalError as e:
                bag.error(e.code, e.message, e.span, hint=e.hint, notes=_where_set(spec, e))
            report.seconds = time.perf_counter() - t0
            return

        hi, lo, budget_span = _budget(spec)
        if hi is None:
            # the user's architecture line is where the fix goes; the open declarations are notes
            notes = [Note(f"`{n}` is left open (`?`) here", spec.bindings[n].span) for n in unknown_names]
            bag.error("E402", f"{', '.join(f'`{n}`' for n in unknown_names)} left open, but no parameter budget "
                      "says how large the model should be", spec.family_span, notes=notes,
                      hint="add `constraints { params <= 100M }`, or give the dimensions values "
                      f"(`{unknown_names[0]} = ...` in the architecture)")
            _probe_structure(spec, prog, elab, bag, unknown_names)
            return
        try:
            unknowns = [Unknown(n, _domain(n, spec.bindings[n].constraints, {}), spec.bindings[n].span) for n in unknown_names]
        except EvalError as e:
            bag.error(e.code, e.message, e.span, hint=e.hint)
            return
        for u in unknowns:
            if not u.domain:
                bag.error("E401", f"`{u.name}` has no admissible value (its range and multiple_of exclude all)", u.span)
                return
        inner = max(range(len(unknowns)), key=lambda i: (len(unknowns[i].domain), i))
        outer = [u for i, u in enumerate(unknowns) if i != inner]
        inner_u = unknowns[inner]
        n_combos = math.prod(len(u.domain) for u in outer)  # counted before any is built
        if n_combos > MAX_OUTER:
            bag.error("E402", f"too many combinations of open dimensions ({n_combos:,}) to search",
                      outer[0].span, hint="narrow their ranges with `in lo..hi`, or fix some of them")
            return
        combos = list(itertools.product(*[u.domain for u in outer]))

        cache: dict[tuple[int, ...], float | None] = {}
        failures: list[tuple[dict[str, int], EvalError]] = []  # the first candidate that failed, and why

        def count(assign: dict[str, int]) -> float | None:
            """The parameter count at `assign`; None where the family's requirements fail, and infinity
            where the model passes a limit of the language (a repeat count, say): too large, like a count
            over the budget, so the bisection goes below it in one step instead of scanning past it."""
            key = tuple(assign[u.name] for u in unknowns)
            if key in cache:
                return cache[key]
            report.candidates += 1
            try:
                dims = evaluate_dims(spec, prog, elab, assign)
                n: float | None = count_params(elab, spec, dims)
            except EvalError as e:
                n = math.inf if e.code == LIMIT_CODE else None
                if not failures:
                    failures.append((dict(assign), e))
            cache[key] = n
            return n

        best: tuple[tuple[float, ...], dict[str, int], int] | None = None
        smallest: tuple[int, dict[str, int]] | None = None  # the smallest model that counts (within the limits)
        dom = inner_u.domain

        def valid_at_or_below(base: dict[str, int], i: int, floor: int) -> tuple[int, float] | None:
            for j in range(i, max(floor, i - 64) - 1, -1):
                n = count({**base, inner_u.name: dom[j]})
                if n is not None:
                    return j, n
            return None

        for combo in combos:
            base = {u.name: v for u, v in zip(outer, combo)}
            probe = None
            for j in range(min(len(dom), 65)):
                n = count({**base, inner_u.name: dom[j]})
                if n is not None:
                    probe = (j, n)
                    break
            if probe is None:
                continue
            if probe[1] != math.inf and (smallest is None or probe[1] < smallest[0]):
                smallest = (int(probe[1]), {**base, inner_u.name: dom[probe[0]]})
            if probe[1] > hi:
                continue
            # bisection for the largest valid index whose count fits; invalid points are skipped by
            # scanning down to the nearest valid one (at most 64 steps)
            lo_i, hi_i, found = probe[0], len(dom) - 1, probe
            while lo_i < hi_i:
                mid = (lo_i + hi_i + 1) // 2
                r = valid_at_or_below(base, mid, lo_i + 1)
                if r is None:
                    hi_i = mid - 1
                elif r[1] <= hi:
                    lo_i, found = mid, r
                else:
                    hi_i = r[0] - 1
            assert found is not None
            assign = {**base, inner_u.name: dom[found[0]]}
            n = int(found[1])
            if n < lo:
                continue
            fill = n / hi
            dims = evaluate_dims(spec, prog, elab, assign)
            dist = _prefer_distance(spec, dims)
            score = (0.0 if fill >= MIN_FILL else 1.0, dist if fill >= MIN_FILL else -fill, -fill,
                     *[float(assign[u.name]) for u in unknowns])
            if best is None or score < best[0]:
                best = (score, assign, n)
        report.seconds = time.perf_counter() - t0
        if best is None:
            assert budget_span is not None
            what = ", ".join(f"`{u.name}`" for u in unknowns)
            if smallest is not None and smallest[0] > hi:
                at = ", ".join(f"{k} = {v}" for k, v in smallest[1].items())
                bag.error("E401", f"no choice of {what} fits the parameter budget: the smallest model ({at}) has "
                          f"{smallest[0]:,} parameters", budget_span,  # type: ignore[arg-type]
                          notes=[Note(f"the binding constraint is `params`; the budget allows {hi:,}")],
                          hint="raise the budget, or lower fixed dimensions such as vocab or context")
            else:
                ranges = [Note(f"`{u.name}` ranges over {u.domain[0]}..{u.domain[-1]}", u.span)
                          for u in unknowns]
                if smallest is None and failures and failures[0][1].code != "E206":
                    # every candidate fails the same way, whatever the open dims: that is the mistake to show
                    err = failures[0][1]
                    bag.error(err.code, err.message, err.span, hint=err.hint,
                              notes=[Note(f"this fails for every choice of {what}; the search stopped")])
                    return
                example = []
                if failures:
                    at = ", ".join(f"{k} = {v}" for k, v in failures[0][0].items())
                    example = [Note(f"with {at}: {failures[0][1].message}", failures[0][1].span)]
                bag.error("E401", f"no choice of {what} satisfies the family's requirements within the budget",
                          budget_span, notes=ranges + example)  # type: ignore[arg-type]
            return
        _score, assign, n = best
        spec.dims = evaluate_dims(spec, prog, elab, assign)
        fill = n / hi
        report.fill = fill
        at_max = [u.name for u in unknowns if assign[u.name] == u.domain[-1]]
        if fill >= MIN_FILL:
            report.binding = f"params <= {hi:,} ({fill:.2%} used)"
        elif at_max:
            report.binding = f"range of {', '.join(at_max)} (at its upper bound; params {fill:.2%} of budget)"
        else:
            report.binding = f"granularity of {', '.join(u.name for u in unknowns)} (params {fill:.2%} of budget)"

    def dump(self, comp: Compilation) -> str:
        return dump_spec(comp.spec) if comp.spec else ""


def _take_first_choice(spec: SpecIR, name: str) -> bool:
    """A choice that is not of whole numbers takes its first value (the binding becomes that value's expression,
    read in the binding's module, so a layer name resolves as if written there); True if `name` was such a one."""
    b = spec.bindings[name]
    choice = choice_set(b.constraints)
    if choice is None or not choice.items or is_integer_set(choice_values(choice)):
        return False
    spec.bindings[name] = Bound(choice.items[0], None, b.module, b.span, b.source, b.constraints)
    return True


# errors that do not depend on the values of the dims: a name, a layer or an argument that does not exist
_STRUCTURAL = frozenset({"E103", "E105", "E204", "E207"})


def _probe_structure(spec: SpecIR, prog: Program, elab: Elaborator, bag: DiagnosticBag,
                     unknown_names: list[str]) -> None:
    """With dims left open and nothing to solve them against, still elaborate the model once, each open dim at
    the first value its range admits, so that an error elsewhere that no value could fix (a misspelt argument,
    an unknown layer) is reported beside the E402 instead of hidden behind it. Value-dependent failures of this
    probe (a requirement, a shape) say nothing about the user's model and are dropped."""
    try:
        fixed = {n: _domain(n, spec.bindings[n].constraints, {})[0] for n in unknown_names}
    except (EvalError, IndexError):  # a bound that does not evaluate, or a range that admits no value
        return
    try:
        count_params(elab, spec, evaluate_dims(spec, prog, elab, fixed))
    except EvalError as e:
        if e.code in _STRUCTURAL:
            bag.error(e.code, e.message, e.span, hint=e.hint, notes=_where_set(spec, e))


def _mentions(message: str, name: str) -> bool:
    """Whether a diagnostic's message names `name` as a whole name (`layers`, not `std.layers.swiglu`)."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", message) is not None


def _where_set(spec: SpecIR, e: EvalError) -> list[Note]:
    notes = []
    for k, b in spec.bindings.items():
        if b.source == "model" and _mentions(e.message, k) and not _within(e.span, b.span):
            notes.append(Note(f"`{k}` is set here", b.span))
    return notes


def _within(inner: Span | None, outer: Span | None) -> bool:
    """Whether span `inner` lies inside span `outer` (a note there would only repeat the error)."""
    return (inner is not None and outer is not None and inner.file is outer.file
            and outer.start <= inner.start and inner.end <= outer.end)

