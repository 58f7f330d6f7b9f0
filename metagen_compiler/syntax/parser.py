"""MSL text -> AST. The grammar is grammar/msl.lark; this file holds no language rules of its own,
only the tree-to-dataclass mapping. Lark's errors become diagnostics in syntax_errors.py."""

from __future__ import annotations

import functools
import math
import re
from importlib import resources
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, VisitError

from metagen_compiler.diagnostics import DiagnosticBag
from metagen_compiler.semantics.limits import (
    LIMIT_CODE,
    LIMITS_HINT,
    MAX_INT,
    MAX_NESTING,
    PAST_MAX_FLOAT,
    PAST_MAX_INT,
    source_too_large,
)
from metagen_compiler.span import SourceFile, Span
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.errors import SyntaxErrors

__all__ = ["KEYWORDS", "SUPPORTED_VERSIONS", "grammar_text", "parse_msl"]

SUPPORTED_VERSIONS = ("1", "1.0")


def grammar_text() -> str:
    return resources.files("metagen_grammar").joinpath("msl.lark").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
    )


def _keywords() -> tuple[str, ...]:
    words = set(re.findall(r'"([a-z_]+)"', grammar_text()))
    return tuple(sorted(words))


KEYWORDS = _keywords()


class _ToAst(Transformer[Any, Any]):
    def __init__(self, file: SourceFile, bag: DiagnosticBag) -> None:
        super().__init__()
        self.file = file
        self.bag = bag  # numbers past the limits: diagnosed at the literal

    def _span(self, meta: Any) -> Span:
        if getattr(meta, "empty", True):
            return Span.of(self.file, 0, 0)
        return Span.of(self.file, meta.start_pos, meta.end_pos)

    def _tok_span(self, tok: Token) -> Span:
        return Span.of(self.file, tok.start_pos or 0, tok.end_pos or 0)

    def _ident(self, tok: Token) -> A.Ident:
        return A.Ident(self._tok_span(tok), str(tok))

    # -------------------------------------------------------- top level
    @v_args(meta=True)
    def start(self, meta: Any, items: list[Any]) -> A.Module:
        version = None
        rest = []
        for it in items:
            if isinstance(it, tuple) and it and it[0] == "header":
                version = it
            else:
                rest.append(it)
        return A.Module(
            self._span(meta),
            self.file.path,
            version[1] if version else None,
            tuple(i for i in rest if isinstance(i, A.Import)),
            tuple(i for i in rest if isinstance(i, A.Block)),
            tuple(i for i in rest if isinstance(i, A.Family)),
            tuple(i for i in rest if isinstance(i, A.Preset)),
            tuple(i for i in rest if isinstance(i, A.Device)),
            tuple(i for i in rest if isinstance(i, A.Model)),
        )

    def header(self, items: list[Token]) -> tuple[str, str, Span]:
        return ("header", str(items[0]), self._tok_span(items[0]))

    @v_args(meta=True)
    def import_stmt(self, meta: Any, items: list[Any]) -> A.Import:
        return A.Import(self._span(meta), items[0], self._ident(items[1]) if items[1] is not None else None)

    @v_args(meta=True)
    def dotted_name(self, meta: Any, items: list[Token]) -> A.Name:
        return A.Name(self._span(meta), tuple(str(t) for t in items))

    # -------------------------------------------------------- blocks
    @v_args(meta=True)
    def block_def(self, meta: Any, items: list[Any]) -> A.Block:
        name, params, body = items
        return A.Block(self._span(meta), self._ident(name), tuple(params or ()), tuple(body))

    def params(self, items: list[A.Param]) -> list[A.Param]:
        return items

    @v_args(meta=True)
    def param(self, meta: Any, items: list[Any]) -> A.Param:
        name, type_, default, *cons = items
        return A.Param(self._span(meta), self._ident(name), type_, default, tuple(c for c in cons if c is not None))

    @v_args(meta=True)
    def named_type(self, meta: Any, items: list[Token]) -> A.NamedType:
        return A.NamedType(self._span(meta), str(items[0]))

    @v_args(meta=True)
    def enum_type(self, meta: Any, items: list[Token]) -> A.EnumType:
        return A.EnumType(self._span(meta), tuple(str(t) for t in items))

    def block_body(self, items: list[Any]) -> list[Any]:
        return items

    @v_args(meta=True)
    def input_stmt(self, meta: Any, items: list[Token]) -> A.Input:
        return A.Input(self._span(meta), tuple(self._ident(t) for t in items))

    @v_args(meta=True)
    def assign_stmt(self, meta: Any, items: list[Any]) -> A.Assign:
        *names, value = items
        return A.Assign(self._span(meta), tuple(self._ident(t) for t in names), value)

    @v_args(meta=True)
    def let_stmt(self, meta: Any, items: list[Any]) -> A.Let:
        return A.Let(self._span(meta), self._ident(items[0]), items[1])

    @v_args(meta=True)
    def return_stmt(self, meta: Any, items: list[Any]) -> A.Return:
        return A.Return(self._span(meta), tuple(items))

    @v_args(meta=True)
    def if_stmt(self, meta: Any, items: list[Any]) -> A.If:
        cond, then, orelse = items
        return A.If(self._span(meta), cond, tuple(then), tuple(orelse or ()))

    @v_args(meta=True)
    def require_stmt(self, meta: Any, items: list[Any]) -> A.Require:
        msg = _unquote(str(items[1])) if items[1] is not None else None
        return A.Require(self._span(meta), items[0], msg)

    # -------------------------------------------------------- families etc.
    @v_args(meta=True)
    def family_def(self, meta: Any, items: list[Any]) -> A.Family:
        name, params, *stmts = items
        backbones = [s for s in stmts if isinstance(s, tuple) and s[0] == "backbone"]
        return A.Family(
            self._span(meta),
            self._ident(name),
            tuple(params or ()),
            tuple(s for s in stmts if isinstance(s, A.EncoderSlot)),
            backbones[0][1] if backbones else None,
            tuple(s for s in stmts if isinstance(s, A.HeadSlot)),
            tuple(s for s in stmts if isinstance(s, A.Tie)),
            tuple(s for s in stmts if isinstance(s, A.Prefer)),
            tuple(s for s in stmts if isinstance(s, A.Require)),
        )

    @v_args(meta=True)
    def encoder_slot(self, meta: Any, items: list[Any]) -> A.EncoderSlot:
        name, modality, layer = items
        if modality is None:
            return A.EncoderSlot(self._span(meta), self._ident(name), layer)
        return A.EncoderSlot(self._span(meta), self._ident(modality), layer, self._ident(name))

    def backbone_slot(self, items: list[Any]) -> tuple[str, A.Layer]:
        return ("backbone", items[0])

    @v_args(meta=True)
    def head_slot(self, meta: Any, items: list[Any]) -> A.HeadSlot:
        return A.HeadSlot(self._span(meta), self._ident(items[0]), items[1])

    @v_args(meta=True)
    def tie_stmt(self, meta: Any, items: list[Any]) -> A.Tie:
        return A.Tie(self._span(meta), items[0], items[1], items[2])

    @v_args(meta=True)
    def prefer_stmt(self, meta: Any, items: list[Any]) -> A.Prefer:
        return A.Prefer(self._span(meta), items[0], items[1])

    @v_args(meta=True)
    def preset_def(self, meta: Any, items: list[Any]) -> A.Preset:
        name, family, *fields = items
        return A.Preset(self._span(meta), self._ident(name), family, tuple(fields))

    @v_args(meta=True)
    def device_def(self, meta: Any, items: list[Any]) -> A.Device:
        name, *fields = items
        return A.Device(self._span(meta), self._ident(name), tuple(fields))

    # -------------------------------------------------------- models
    @v_args(meta=True)
    def model_def(self, meta: Any, items: list[Any]) -> A.Model:
        name, *stmts = items
        inputs: tuple[A.Ident, ...] = ()
        outputs: tuple[A.Ident, ...] = ()
        modality_span = None
        task = None
        objectives: list[A.Ident] = []
        constraints: list[A.Constraint] = []
        arch = None
        metadata: list[A.MetaEntry] = []
        training: list[A.Training] = []
        extra: list[tuple[str, Span, Span]] = []  # (statement, repeated at, first given at)
        for s in stmts:
            kind = s[0]
            if kind == "modality":
                if modality_span is not None:
                    extra.append(("modality", s[3], modality_span))
                inputs, outputs, modality_span = s[1], s[2], s[3]
            elif kind == "task":
                if task is not None:
                    extra.append(("task", s[1].span, task.span))
                task = s[1]
            elif kind == "objective":
                objectives.extend(s[1])
            elif kind == "constraints":
                constraints.extend(s[1])
            elif kind == "architecture":
                if arch is not None:
                    extra.append(("architecture", s[1].span, arch.span))
                arch = s[1]
            elif kind == "metadata":
                metadata.extend(s[1])
            elif kind == "training":
                if training:
                    extra.append(("training", s[1].span, training[0].span))
                training.append(s[1])
        model = A.Model(
            self._span(meta), self._ident(name), inputs, outputs, task, tuple(objectives),
            tuple(constraints), arch, tuple(metadata), modality_span, tuple(training),
        )
        if extra:
            # duplicates are reported by the resolver; keep them visible on the node
            object.__setattr__(model, "_duplicates", tuple(extra))
        return model

    @v_args(meta=True)
    def modality_stmt(self, meta: Any, items: list[Any]) -> tuple[str, Any, Any, Span]:
        return ("modality", items[0], items[2], self._span(meta))

    def name_list(self, items: list[Token]) -> tuple[A.Ident, ...]:
        return tuple(self._ident(t) for t in items)

    modality_list = name_list  # names and `3d`

    @v_args(meta=True)
    def task_stmt(self, meta: Any, items: list[Any]) -> tuple[str, A.Task]:
        name, *fields = items
        return ("task", A.Task(self._span(meta), self._ident(name), tuple(f for f in fields if f is not None)))

    def objective_stmt(self, items: list[Any]) -> tuple[str, tuple[A.Ident, ...]]:
        return ("objective", items[0])

    def constraints_stmt(self, items: list[Any]) -> tuple[str, list[A.Constraint]]:
        return ("constraints", items)

    @v_args(meta=True)
    def constraint(self, meta: Any, items: list[Any]) -> A.Constraint:
        name, op, value, device = items
        return A.Constraint(
            self._span(meta), self._ident(name), str(op), value, self._ident(device) if device is not None else None
        )

    @v_args(meta=True)
    def architecture_stmt(self, meta: Any, items: list[Any]) -> tuple[str, A.Architecture]:
        family, *fields = items
        fields_ = tuple(f for f in fields if f is not None)
        if isinstance(family, tuple):  # `? in {a, b}`: the family left open among candidates
            span, choices = family
            first = choices[0] if choices else A.Name(span, ("?",))
            return ("architecture", A.Architecture(self._span(meta), first, fields_, choices, span))
        return ("architecture", A.Architecture(self._span(meta), family, fields_))

    @v_args(meta=True)
    def family_choice(self, meta: Any, items: list[Any]) -> tuple[Span, tuple[A.Name, ...]]:
        return self._span(meta), tuple(items[0] or ())

    def family_names(self, items: list[A.Name]) -> list[A.Name]:
        return items

    def metadata_stmt(self, items: list[Any]) -> tuple[str, list[Any]]:
        return ("metadata", items)

    @v_args(meta=True)
    def training_stmt(self, meta: Any, items: list[Any]) -> tuple[str, A.Training]:
        return ("training", A.Training(self._span(meta), tuple(f for f in items if f is not None)))

    @v_args(meta=True)
    def meta_group(self, meta: Any, items: list[Any]) -> A.MetaGroup:
        name, *entries = items
        return A.MetaGroup(self._span(meta), self._ident(name), tuple(entries))

    @v_args(meta=True)
    def field(self, meta: Any, items: list[Any]) -> A.Field:
        name, value, *cons = items
        return A.Field(self._span(meta), self._ident(name), value, tuple(cons))

    @v_args(meta=True)
    def multiple_of(self, meta: Any, items: list[Any]) -> A.MultipleOf:
        return A.MultipleOf(self._span(meta), items[0])

    @v_args(meta=True)
    def in_range(self, meta: Any, items: list[Any]) -> A.InRange:
        return A.InRange(self._span(meta), items[0], items[1])

    @v_args(meta=True)
    def in_set(self, meta: Any, items: list[Any]) -> A.InSet:
        return A.InSet(self._span(meta), tuple(items[0] or ()))

    def choices(self, items: list[Any]) -> list[Any]:
        return items

    # -------------------------------------------------------- expressions
    @v_args(meta=True)
    def apply(self, meta: Any, items: list[Any]) -> A.Apply:
        return A.Apply(self._span(meta), items[0], items[2])

    @v_args(meta=True)
    def layer(self, meta: Any, items: list[Any]) -> A.Layer:
        label, rep, callee, args = items
        return A.Layer(
            self._span(meta), self._ident(label) if label is not None else None, rep, callee,
            tuple(args) if args is not None else None,
        )

    def repeat(self, items: list[Any]) -> Any:
        return items[0]

    def args(self, items: list[Any]) -> list[A.Arg]:
        return [a if isinstance(a, A.Arg) else A.Arg(a.span, None, a) for a in items]

    @v_args(meta=True)
    def kwarg(self, meta: Any, items: list[Any]) -> A.Arg:
        return A.Arg(self._span(meta), self._ident(items[0]), items[1])

    @v_args(meta=True)
    def or_op(self, meta: Any, items: list[Any]) -> A.BoolOp:
        return A.BoolOp(self._span(meta), "or", items[0], items[1])

    @v_args(meta=True)
    def and_op(self, meta: Any, items: list[Any]) -> A.BoolOp:
        return A.BoolOp(self._span(meta), "and", items[0], items[1])

    @v_args(meta=True)
    def not_op(self, meta: Any, items: list[Any]) -> A.Not:
        return A.Not(self._span(meta), items[0])

    @v_args(meta=True)
    def compare_op(self, meta: Any, items: list[Any]) -> A.Compare:
        return A.Compare(self._span(meta), str(items[1]), items[0], items[2])

    @v_args(meta=True)
    def binop(self, meta: Any, items: list[Any]) -> A.BinOp:
        return A.BinOp(self._span(meta), str(items[1]), items[0], items[2])

    @v_args(meta=True)
    def index(self, meta: Any, items: list[Any]) -> A.Index:
        return A.Index(self._span(meta), items[0], items[1])

    @v_args(meta=True)
    def neg(self, meta: Any, items: list[Any]) -> A.Neg:
        return A.Neg(self._span(meta), items[0])

    @v_args(meta=True)
    def pow_op(self, meta: Any, items: list[Any]) -> A.BinOp:
        return A.BinOp(self._span(meta), "**", items[0], items[2])

    def number(self, items: list[Token]) -> A.Num:
        t = items[0]
        s = str(t)
        span = self._tok_span(t)
        if s.isdigit():
            return A.Num(span, _int_literal(s, span, self.bag))
        val = float(s)
        if not math.isfinite(val):  # 1e999: Python reads it as inf, which no model can use
            self.bag.error(LIMIT_CODE, f"`{s}` is {PAST_MAX_FLOAT}", span, hint=LIMITS_HINT)
        return A.Num(span, val)

    def quantity(self, items: list[Token]) -> A.Quantity:
        from metagen_compiler.semantics.values import UNIT_SCALE

        t = items[0]
        m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]+)", str(t))
        assert m is not None
        span = self._tok_span(t)
        value = float(m.group(1))
        scale, dim = UNIT_SCALE[m.group(2)]
        if not math.isfinite(value * scale):
            self.bag.error(LIMIT_CODE, f"`{t}` is {PAST_MAX_FLOAT}", span, hint=LIMITS_HINT)
        elif dim != "time" and value * scale > MAX_INT:  # counts, sizes and rates become integers
            self.bag.error(LIMIT_CODE, f"`{t}` is {value * scale:.3g}, {PAST_MAX_INT}", span, hint=LIMITS_HINT)
        return A.Quantity(span, value, m.group(2), str(t))

    def string(self, items: list[Token]) -> A.Str:
        return A.Str(self._tok_span(items[0]), _unquote(str(items[0])))

    @v_args(meta=True)
    def unknown(self, meta: Any, items: list[Any]) -> A.Unknown:
        return A.Unknown(self._span(meta))

    @v_args(meta=True)
    def true(self, meta: Any, items: list[Any]) -> A.Bool:
        return A.Bool(self._span(meta), True)

    @v_args(meta=True)
    def false(self, meta: Any, items: list[Any]) -> A.Bool:
        return A.Bool(self._span(meta), False)

    def name_ref(self, items: list[A.Name]) -> A.Name:
        return items[0]

    @v_args(meta=True)
    def call(self, meta: Any, items: list[Any]) -> A.Call:
        return A.Call(self._span(meta), items[0], tuple(items[1] or ()))

    @v_args(meta=True)
    def tuple(self, meta: Any, items: list[Any]) -> A.TupleExpr:
        return A.TupleExpr(self._span(meta), tuple(i for i in items if i is not None))

    @v_args(meta=True)
    def list(self, meta: Any, items: list[Any]) -> A.ListExpr:
        return A.ListExpr(self._span(meta), tuple(i for i in items if i is not None))


def _int_literal(s: str, span: Span, bag: DiagnosticBag) -> int:
    """An integer literal's value; past MAX_INT an error at the literal (and a value just past the limit,
    so that nothing downstream takes it for a usable number). A literal of thousands of digits is
    measured, never converted: Python refuses to read more than 4,300 digits."""
    digits = s.lstrip("0") or "0"
    if len(digits) <= len(str(MAX_INT)) and int(digits) <= MAX_INT:
        return int(digits)
    shown = f"{int(digits):,}" if len(digits) <= 24 else f"an integer of {len(digits):,} digits"
    bag.error(LIMIT_CODE, f"{shown} is {PAST_MAX_INT}", span, hint=LIMITS_HINT)
    return MAX_INT + 1


def _too_deep(tree: Tree[Any]) -> Tree[Any] | None:
    """The first node (in source order) that nests deeper than MAX_NESTING, or None. Iterative: the
    tree that is too deep for the recursive transformer is not too deep for this."""
    stack: list[tuple[Tree[Any], int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            return node
        stack.extend((c, depth + 1) for c in reversed(node.children) if isinstance(c, Tree))
    return None


def _first_span(file: SourceFile, node: Tree[Any]) -> Span:
    """Where a parse-tree node starts: its own position, else its first token's."""
    stack: list[Any] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Token):
            return Span.of(file, n.start_pos or 0, n.end_pos or 0)
        if isinstance(n, Tree):
            if not getattr(n.meta, "empty", True):
                return Span.of(file, n.meta.start_pos, min(n.meta.end_pos, n.meta.start_pos + 1))
            stack.extend(reversed(n.children))
    return Span.of(file, 0, 0)


def _unquote(s: str) -> str:
    body = s[1:-1]
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_msl(file: SourceFile, bag: DiagnosticBag) -> A.Module | None:
    """Parse one MSL file. Syntax errors go to `bag` (several per file); returns None if any."""
    if source_too_large(file, bag):  # a limit of the language (limits.py): parsing time stays bounded
        return None
    errors = SyntaxErrors(file, bag, _parser())
    tree: Tree[Any] | None = None
    try:
        tree = _parser().parse(file.text, on_error=errors.on_error)
    except UnexpectedInput as e:
        errors.finish(e)
    if errors.handled or tree is None:
        if not errors.reported:  # every error was an echo of none: cannot happen, but never stay silent
            bag.error("E001", "syntax error", Span.of(file, 0, 0))
        return None
    deep = _too_deep(tree)
    if deep is not None:  # a limit of the language (limits.py): the recursive passes stay within Python's stack
        bag.error(LIMIT_CODE, f"this nests more than {MAX_NESTING} levels deep, the most the language allows",
                  _first_span(file, deep), hint=f"{LIMITS_HINT} (a chain of operators nests one level per operator)")
        return None
    try:
        module = _ToAst(file, bag).transform(tree)
    except VisitError as e:  # pragma: no cover - a transformer bug is an internal error
        raise e.orig_exc from e
    assert isinstance(module, A.Module)
    if module.version is not None and module.version not in SUPPORTED_VERSIONS:
        bag.error("E008", f"unsupported MSL version `{module.version}`", module.span, hint="this compiler reads `msl 1`")
    return module
