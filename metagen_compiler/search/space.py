"""The search space of `metagenc search`: every open dimension (`?`) of one model, with its domain.

The space is read the way the solver reads it: the check pass builds the spec's bindings, and each binding
whose expression is `?` is a dimension whose values are the solver's own domain (`in lo..hi`, stepped by
`multiple_of`; `passes.solve._domain`), or, for an enumerated choice `? in {layernorm, rmsnorm}` (any kind of
value, numbers included), a categorical dimension over the values listed (`Dimension.choices`; sampled with
Optuna's `suggest_categorical` by `Dimension.suggest`, written back as MSL text by `Dimension.text`). A trial
fixes every dimension with the `--set NAME=VALUE` path (the `overrides` pass), in process, so the compile that
follows is the one `metagenc --set` runs.

`filled_text` writes the spec with the holes filled: each `? ...` in the user's file is replaced by its
value (its constraints go with it); a hole that a family declares elsewhere (a stdlib default) is set in
the model's architecture block instead (in the `architecture:` mapping of a YAML spec).

A family left open among candidates (`architecture ? in {transformer.decoder, ssm.s4d} { ... }`) is one more
categorical dimension, `architecture`, sampled first; each candidate family has its own space (`families`:
the spec with that family written in, and without the holes that family does not take), whose dimensions are
conditional on it (Optuna's define-by-run: a trial suggests the family, then that family's dimensions only).
A hole that several candidates take with the same domain is one dimension (its `families` name them); where
their domains differ, each candidate's is a dimension of its own, keyed `family.name` (`Dimension.key`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from metagen_compiler.compilation import Compilation, Options
from metagen_compiler.diagnostics import Diagnostic
from metagen_compiler.semantics.values import EvalError, format_value
from metagen_compiler.span import SourceFile, Span
from metagen_compiler.syntax import ast as A

__all__ = ["FAMILY", "Choice", "Dimension", "SearchSpace", "SpaceError", "active_dims", "compile_candidate",
           "filled_text", "read_space", "suggest_values"]

Choice = int | float | str | bool  # a value of a categorical dimension, as Optuna stores it
FAMILY = "architecture"  # the dimension of a family left open (`architecture ? in {...}`)


@dataclass(frozen=True)
class Dimension:
    """One open dimension: `name` takes a value of `domain` (a range: start, stop, step), or, where `choices` is
    not empty (an enumerated choice `? in {...}`), one of `choices`; `domain` is then the range of their indices.
    `texts` are the choices as the spec writes them (`layernorm`, `64`, `"a"`)."""

    name: str
    domain: range
    span: Span | None  # the `?` and its constraints, where the user's file declares it; None elsewhere
    choices: tuple[Choice, ...] = ()
    texts: tuple[str, ...] = ()
    # with the family left open: the candidate families that take this dimension (empty: every candidate, or the
    # family is not open), and the name Optuna stores it under where it is not `name` (`family.name`)
    families: tuple[str, ...] = ()
    param: str = ""

    @property
    def categorical(self) -> bool:
        return bool(self.choices)

    @property
    def key(self) -> str:
        """The name of the dimension in a trial's values (Optuna's parameter name)."""
        return self.param or self.name

    def suggest(self, trial: Any) -> Choice:
        """The value an Optuna trial samples: a categorical choice, or an integer of the range (with its step)."""
        if self.categorical:
            return trial.suggest_categorical(self.key, list(self.choices))
        return trial.suggest_int(self.key, self.domain.start, self.domain[-1], step=self.domain.step)

    def text(self, value: Any) -> str:
        """`value` as MSL text, for `--set` and the filled spec."""
        if not self.categorical:
            return format_value(value)
        for c, t in zip(self.choices, self.texts):
            if type(c) is type(value) and c == value:
                return t
        raise ValueError(f"`{value!r}` is not one of the choices of `{self.name}`: {', '.join(self.texts)}")

    def describe(self) -> dict[str, Any]:
        """The domain as JSON data: `{"choices": [...]}` or `{"from": lo, "to": hi, "step": s}`."""
        if self.categorical:
            return {"choices": list(self.choices)}
        return {"from": self.domain.start, "to": self.domain[-1], "step": self.domain.step}


def suggest_values(trial: Any, space: SearchSpace) -> dict[str, Choice]:
    """One value per dimension of `space`, sampled by an Optuna trial (`Dimension.suggest`), keyed by
    `Dimension.key`: with the family open, the family first, then the dimensions of that family only."""
    values: dict[str, Choice] = {}
    for d in space.dims:
        if d.families and values.get(FAMILY) not in d.families:
            continue
        values[d.key] = d.suggest(trial)
    return values


def active_dims(space: SearchSpace, values: dict[str, Any]) -> list[Dimension]:
    """The dimensions a trial with `values` sampled (all of them, unless the family is open)."""
    return [d for d in space.dims if not d.families or values.get(FAMILY) in d.families]


@dataclass
class SearchSpace:
    model: str  # the model's name
    dims: list[Dimension]
    comp: Compilation  # the compilation after `check` and `--set` (for its spec: constraints, family)
    # the family left open: each candidate's own space, whose `source` is the spec with that family written in
    families: dict[str, SearchSpace] = field(default_factory=dict)
    source: SourceFile | None = None


class SpaceError(Exception):
    """The spec cannot be searched; `diagnostics` say why (rendered like the compiler's), or `message` does."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics or []


def _hole_span(b: object) -> Span | None:
    """The `? multiple_of m in lo..hi` text of a binding: from the `?` to the end of its last constraint."""
    expr = getattr(b, "expr", None)
    if not isinstance(expr, A.Unknown) or expr.span is None:
        return None
    end = expr.span.end
    for c in getattr(b, "constraints", ()):
        for part in (c, *(getattr(c, f) for f in ("value", "lo", "hi") if hasattr(c, f)), *getattr(c, "items", ())):
            sp = getattr(part, "span", None)
            if sp is not None and sp.file is expr.span.file:
                end = max(end, sp.end)
    return Span.of(expr.span.file, expr.span.start, end) if expr.span.file is not None else None


def read_space(source: SourceFile, options: Options, overrides: tuple[tuple[str, str], ...] = ()) -> SearchSpace:
    """The open dimensions of the model that `options.model` names (or the file's only model). Raises
    SpaceError with the compiler's diagnostics when the spec does not get through `check`, and when it has
    no open dimension left (after `overrides`) or several models and no `--model`."""
    from metagen_compiler.driver import collect_diagnostics, compile_model_set
    from metagen_compiler.passes.solve import _domain
    from metagen_compiler.semantics.choices import choice_set, choice_values, plain_choice
    from metagen_compiler.syntax.format_expr import expr_text

    comps = compile_model_set(source, options, stop_after="overrides", overrides=overrides)  # --set applied
    if len(comps) == 1 and comps[0].candidates and all(d.code == "E215" for d in comps[0].bag.errors):
        return _open_family_space(source, options, overrides, comps[0])
    if any(c.bag.has_errors for c in comps):
        raise SpaceError("the spec has errors", collect_diagnostics(comps))
    if len(comps) != 1:
        names = ", ".join(c.spec.name for c in comps if c.spec is not None)
        raise SpaceError(f"the file has {len(comps)} models ({names}); choose one with --model NAME")
    comp = comps[0]
    spec = comp.spec
    assert spec is not None
    dims = []
    for name, b in spec.bindings.items():
        if not isinstance(b.expr, A.Unknown):
            continue
        span = _hole_span(b)
        in_user_file = span is not None and span.file is not None and span.file.path == source.path \
            and span.file.text == source.text
        choice = choice_set(b.constraints)
        if choice is not None:  # the check pass accepted it: not empty, no duplicate, one kind of value
            choices = tuple(plain_choice(v) for v in choice_values(choice))
            dims.append(Dimension(name, range(len(choices)), span if in_user_file else None, choices,
                                  tuple(expr_text(i) for i in choice.items)))
            continue
        try:
            dom = _domain(name, b.constraints, {})
            if not dom:  # the solver's E401 (passes/solve.py), where the hole is
                raise EvalError("E401", f"`{name}` has no admissible value (its range and multiple_of exclude all)",
                                b.span)
        except EvalError as e:
            comp.bag.error(e.code, e.message, e.span, hint=e.hint)
            raise SpaceError("the spec has errors", collect_diagnostics([comp])) from None
        assert isinstance(dom, range)
        dims.append(Dimension(name, dom, span if in_user_file else None))
    if not dims:
        raise SpaceError(f"model `{spec.name}` has no open dimension (`?`) to search: every dimension has a value")
    return SearchSpace(spec.name, dims, comp)


def _open_family_space(source: SourceFile, options: Options, overrides: tuple[tuple[str, str], ...],
                       comp: Compilation) -> SearchSpace:
    """The space of a spec whose family is left open: `FAMILY` first, then each candidate's dimensions."""
    model = comp.model
    assert model is not None and model.architecture is not None
    arch = model.architecture
    subs: dict[str, SearchSpace] = {}
    for fam, params in comp.candidates.items():
        text = _family_text(source.text, arch, fam, params)
        sub_source = SourceFile(source.path, text)
        try:
            sub = read_space(sub_source, options, overrides)
        except SpaceError as e:
            if e.diagnostics or "no open dimension" not in str(e):
                raise SpaceError(f"candidate family `{fam}`: {e}", e.diagnostics) from None
            sub = SearchSpace(model.name.name, [], _checked(sub_source, options, overrides))
        sub.source = sub_source
        subs[fam] = sub
    assert arch.choice_span is not None
    names = tuple(subs)
    dims = [Dimension(FAMILY, range(len(names)), arch.choice_span, names, names)]
    by_name: dict[str, list[tuple[str, Dimension]]] = {}
    for fam, sub in subs.items():
        for d in sub.dims:
            by_name.setdefault(d.name, []).append((fam, d))
    for name, owners in by_name.items():
        same = all((d.domain, d.choices) == (owners[0][1].domain, owners[0][1].choices) for _, d in owners)
        if same:
            dims.append(replace(owners[0][1], span=None, families=tuple(f for f, _ in owners)))
        else:  # the candidates give it different domains: one dimension each
            dims.extend(replace(d, span=None, families=(f,), param=f"{f}.{name}") for f, d in owners)
    return SearchSpace(model.name.name, dims, next(iter(subs.values())).comp, subs, None)


def _checked(source: SourceFile, options: Options, overrides: tuple[tuple[str, str], ...]) -> Compilation:
    from metagen_compiler.driver import compile_model_set

    return compile_model_set(source, options, stop_after="overrides", overrides=overrides)[0]


def _family_text(text: str, arch: A.Architecture, family: str, params: frozenset[str]) -> str:
    """The spec's text with `family` in place of `? in {...}`, and without the fields (holes) it does not take."""
    assert arch.choice_span is not None
    edits = [(arch.choice_span.start, arch.choice_span.end, family)]
    for f in arch.fields:
        if f.name.name in params or f.span is None:
            continue
        start, end = f.span.start, f.span.end
        while end < len(text) and text[end] in " \t;,":  # `,`: in a YAML flow mapping
            end += 1
        line_start = text.rfind("\n", 0, start) + 1
        if not text[line_start:start].strip() and (end >= len(text) or text[end] == "\n"):
            start, end = line_start, min(end + 1, len(text))  # the field's own line
        edits.append((start, end, ""))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def filled_text(source: SourceFile, space: SearchSpace, values: dict[str, Any]) -> str:
    """The spec's text with every hole of `space` given its value from `values` (keyed by `Dimension.key`); with
    the family open, the text of the candidate family `values` names."""
    from metagen_compiler.passes.parse import is_yaml

    if space.families:
        sub = space.families[values[FAMILY]]
        assert sub.source is not None
        return filled_text(sub.source, sub, {d.name: values[d.key] for d in active_dims(space, values)
                                             if d.name != FAMILY})
    text = source.text
    edits: list[tuple[int, int, str]] = []
    elsewhere = []
    for d in space.dims:
        if d.span is not None:
            edits.append((d.span.start, d.span.end, d.text(values[d.name])))
        else:
            elsewhere.append((d.name, d.text(values[d.name])))
    if elsewhere:  # holes of the family: the model names it, so it has an `architecture` to set them in
        arch = space.comp.model.architecture if space.comp.model is not None else None
        assert arch is not None and arch.span is not None
        insert = _yaml_architecture_insert if is_yaml(source.path) else _architecture_insert
        edits.append(insert(text, arch, elsewhere))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _architecture_insert(text: str, arch: A.Architecture, values: list[tuple[str, str]]) -> tuple[int, int, str]:
    """Where and what to insert so that the model's architecture block sets `values` (MSL)."""
    assert arch.span is not None
    fields = [f"{name} = {value}" for name, value in values]
    start, end = arch.span.start, arch.span.end
    block = text[start:end].rstrip()
    if not block.endswith("}"):  # `architecture family.name` without a block
        return start + len(block), start + len(block), " { " + "; ".join(fields) + " }"
    close = start + len(block) - 1
    before = text[start:close]
    last_line = before[before.rfind("\n") + 1:]
    if "\n" in before and not last_line.strip():  # `}` on its own line: one field per line, indented like the rest
        at = close - len(last_line)
        indent = _indent_of_fields(text, arch) or last_line + "  "
        return at, at, "".join(f"{indent}{f}\n" for f in fields)
    stripped = before.rstrip()
    at = start + len(stripped)
    sep = " " if stripped.endswith(("{", ";")) else "; "
    return at, at, sep + "; ".join(fields)


def _yaml_architecture_insert(text: str, arch: A.Architecture, values: list[tuple[str, str]]) -> tuple[int, int, str]:
    """The same for a YAML spec, whose `architecture:` (the span: from the key to the end of its value) is a flow
    mapping (`{family: transformer}`) or a block mapping (a key a line: one more line, indented like its keys)."""
    assert arch.span is not None
    start = arch.span.start
    block = text[start:arch.span.end].rstrip()
    at = start + len(block)
    if block.endswith("}"):
        return at - 1, at - 1, "".join(f", {name}: {value}" for name, value in values)
    body = block.split("\n", 1)[1]
    indent = body[:len(body) - len(body.lstrip(" "))]
    return at, at, "".join(f"\n{indent}{name}: {value}" for name, value in values)


def _indent_of_fields(text: str, arch: A.Architecture) -> str:
    if not arch.fields or arch.fields[0].span is None:
        return ""
    s = arch.fields[0].span.start
    head = text[text.rfind("\n", 0, s) + 1:s]
    return head if not head.strip() else ""


def compile_candidate(source: SourceFile, options: Options, space: SearchSpace, values: dict[str, Any],
                      fixed: tuple[tuple[str, str], ...] = ()) -> Compilation:
    """Compile the model with the open dimensions set to `values` (and the user's `--set` overrides `fixed`),
    in process, through the same path as `metagenc --set`."""
    from metagen_compiler.driver import compile_model_set

    if space.families:  # the candidate family's own text, with its dimensions
        sub = space.families[values[FAMILY]]
        assert sub.source is not None
        source = sub.source
    dims = [d for d in active_dims(space, values) if not (space.families and d.name == FAMILY)]
    overrides = fixed + tuple((d.name, d.text(values[d.key])) for d in dims)
    comps = compile_model_set(source, options, overrides=overrides)
    return comps[0]
