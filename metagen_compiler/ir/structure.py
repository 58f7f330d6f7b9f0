"""The structure IR: the model as modules, built once by the `structure` pass for the backends.

One `ClassIR` per specialised block (a block's qualname with its layer-valued arguments: `decoder_block` with
`norm=rmsnorm` is one class, with `norm=layernorm` another), holding its value parameters with their defaults,
and its body as statements over IR expressions: layer applications carry their resolved callee (a primitive or
another class of the IR), the submodule attribute they own, their arguments, and every `Assign` and `Return`
the graph's shapes of the first instance of the class (the module tree's first path with that key). Both
branches of an `if` are kept: a class is the code for every configuration, not one elaboration of it.
`StructureIR` adds what the top model needs: the Config fields (and those the spec derives from others), the
slots (encoders, backbone, head) with their constructor calls and output shapes, and the ties.

Expressions are a small typed tree, not AST nodes: constants, names resolved to what they denote (a parameter,
a `let`, a tensor, a Config field, a task field, or a bare symbol such as an enum value), operators, calls of
the built-in functions and applications of resolved callees. `dump_structure` prints it canonically (the
`--emit=structure` output and golden hook).
"""

from __future__ import annotations

from operator import itemgetter
from types import FunctionType
from typing import TYPE_CHECKING, Any

from metagen_compiler.semantics.values import LayerRef, Value, format_value
from metagen_compiler.span import Span

if TYPE_CHECKING:
    from typing import NamedTuple
else:  # the records at run time: the same tuples as typing.NamedTuple's, built ~10x faster (see _RecordMeta)

    class _Record(tuple):
        """What every record shares with a namedtuple: its repr, `_replace`, `_make`, `_asdict`, pickling."""

        __slots__ = ()
        _fields: tuple[str, ...] = ()

        def __repr__(self) -> str:
            return type(self).__name__ + "(" + ", ".join(f"{f}={v!r}" for f, v in zip(self._fields, self)) + ")"

        @classmethod
        def _make(cls, iterable: Any) -> Any:
            result = tuple.__new__(cls, iterable)
            if len(result) != len(cls._fields):
                raise TypeError(f"Expected {len(cls._fields)} arguments, got {len(result)}")
            return result

        def _replace(self, **kwds: Any) -> Any:
            result = self._make(map(kwds.pop, self._fields, self))
            if kwds:
                raise ValueError(f"Got unexpected field names: {list(kwds)!r}")
            return result

        def _asdict(self) -> dict[str, Any]:
            return dict(zip(self._fields, self))

        def __getnewargs__(self) -> tuple[Any, ...]:
            return tuple(self)

    _tuple_new = tuple.__new__

    # A record's __new__ is one of these, its parameters renamed to the fields (what namedtuple gets by compiling
    # `lambda _cls, <fields>: _tuple_new(_cls, (<fields>))` per class, here from bytecode written once).
    def _new1(_cls, a):  # type: ignore[no-untyped-def]
        return _tuple_new(_cls, (a,))

    def _new2(_cls, a, b):  # type: ignore[no-untyped-def]
        return _tuple_new(_cls, (a, b))

    def _new3(_cls, a, b, c):  # type: ignore[no-untyped-def]
        return _tuple_new(_cls, (a, b, c))

    def _new4(_cls, a, b, c, d):  # type: ignore[no-untyped-def]
        return _tuple_new(_cls, (a, b, c, d))

    def _new5(_cls, a, b, c, d, e):  # type: ignore[no-untyped-def]
        return _tuple_new(_cls, (a, b, c, d, e))

    def _new6(_cls, a, b, c, d, e, f):  # type: ignore[no-untyped-def]
        return _tuple_new(_cls, (a, b, c, d, e, f))

    def _new7(_cls, a, b, c, d, e, f, g):  # type: ignore[no-untyped-def]
        return _tuple_new(_cls, (a, b, c, d, e, f, g))

    def _new8(_cls, a, b, c, d, e, f, g, h):  # type: ignore[no-untyped-def]
        return _tuple_new(_cls, (a, b, c, d, e, f, g, h))

    _NEW = {f.__code__.co_argcount - 1: f for f in (_new1, _new2, _new3, _new4, _new5, _new6, _new7, _new8)}

    def _record_new(name: str, fields: tuple[str, ...], defaults: tuple[Any, ...]) -> Any:
        """A record class's `__new__`, with the signature a namedtuple's has: `(_cls, <fields>)`, trailing
        defaults. (A record of more than 8 fields needs a _new9 above.)"""
        code = _NEW[len(fields)].__code__.replace(co_varnames=("_cls", *fields), co_name="__new__",
                                                  co_qualname=f"{name}.__new__")
        return FunctionType(code, globals(), "__new__", defaults or None)

    class _RecordMeta(type):
        """`class X(NamedTuple): a: int; b: str = ""` makes a tuple subclass with the fields' properties, as
        typing.NamedTuple does, without what makes that slow at import (a ForwardRef compiled per annotation and
        namedtuple's `eval` of a generated `__new__`): the structure IR is imported by every compile."""

        def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
            if not bases:  # NamedTuple itself
                return super().__new__(mcls, name, bases, ns)
            fields = tuple(ns.get("__annotations__", {}))
            defaults = tuple(ns[f] for f in fields if f in ns)
            if any(f not in ns for f in fields[len(fields) - len(defaults):]):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            body = {k: v for k, v in ns.items() if k not in fields}
            body.update({f: property(itemgetter(i), doc=f"Alias for field number {i}") for i, f in enumerate(fields)})
            body.update(__slots__=(), _fields=fields, __match_args__=fields,
                        _field_defaults=dict(zip(fields[len(fields) - len(defaults):], defaults)),
                        __new__=_record_new(name, fields, defaults))
            return type(name, (_Record,), body)

    class NamedTuple(metaclass=_RecordMeta):
        """Base of the records below at run time (typing.NamedTuple for the type checker)."""

__all__ = [
    "Apply",
    "Assign",
    "BinOp",
    "BoolOp",
    "Builtin",
    "Callee",
    "ClassIR",
    "Compare",
    "ConfigField",
    "Const",
    "Expr",
    "If",
    "Index",
    "Input",
    "Let",
    "Name",
    "Neg",
    "Not",
    "ParamIR",
    "Require",
    "Return",
    "Shape",
    "SlotIR",
    "Stmt",
    "StructureIR",
    "TieIR",
    "TupleExpr",
    "dump_structure",
    "expr_text",
]

Dim = int | str  # a size: a number, or a symbol (B, T, or a Config field where the size comes from one)
Shape = tuple[Dim, ...]


# ------------------------------------------------------------------ expressions
class Const(NamedTuple):
    """A constant. `literal`: written as a number, string or boolean in the source (a float literal makes `/`
    a true quotient); False for a quantity's value, a task field's value or a value bound in a layer value."""

    value: Value
    literal: bool = True


NAME_KINDS = ("param", "let", "tensor", "config", "task", "symbol")


class Name(NamedTuple):
    """A name, resolved: `param` and `let` (a value of the enclosing class), `tensor` (a tensor of its forward),
    `config` (a field of the model's Config), `task` (a task field, `value` holding it), `symbol` (nothing by
    that name: an enum symbol, which code spells as its last part, a string)."""

    name: str  # as written, dotted for a qualified name
    kind: str
    value: Value = None  # a task field's value

    @property
    def last(self) -> str:
        return self.name.rsplit(".", 1)[-1]


class BinOp(NamedTuple):
    op: str  # + - * / // % **
    left: Expr
    right: Expr


class Neg(NamedTuple):
    operand: Expr


class Compare(NamedTuple):
    op: str
    left: Expr
    right: Expr


class BoolOp(NamedTuple):
    op: str  # and | or
    left: Expr
    right: Expr


class Not(NamedTuple):
    operand: Expr


class Index(NamedTuple):
    base: Expr
    key: Expr


class TupleExpr(NamedTuple):
    items: tuple[Expr, ...]
    is_list: bool = False  # written [a, b] rather than (a, b)


class Builtin(NamedTuple):
    """A call of a built-in function (round, floor, ceil, min, max, sqrt, log2, len, sum, round_up)."""

    func: str
    args: tuple[Expr, ...]


class Callee(NamedTuple):
    """What a layer application calls: a primitive (`target` its name) or a class of the IR (its id)."""

    kind: str  # primitive | class
    target: str


class Apply(NamedTuple):
    """A layer applied to tensors. `args`: the callee's value parameters in its order, each with the argument
    given (None: the parameter's default); its layer parameters are part of the class. `attr`: the submodule
    attribute the application owns (a block, a primitive with weights or state, a repeat), None for a
    functional primitive; `repeat`: the count of a `repeat(n)` stack of submodules."""

    callee: Callee
    args: tuple[tuple[str, Expr | None], ...]
    input: Expr  # a TupleExpr for several input tensors
    attr: str | None
    repeat: Expr | None
    span: Span


Expr = Const | Name | BinOp | Neg | Compare | BoolOp | Not | Index | TupleExpr | Builtin | Apply


# ------------------------------------------------------------------ statements
class Input(NamedTuple):
    names: tuple[str, ...]
    span: Span


class Let(NamedTuple):
    name: str
    value: Expr
    span: Span


class Require(NamedTuple):
    cond: Expr
    message: str | None
    span: Span


class Assign(NamedTuple):
    """`targets = value`; `shapes`: the graph's shapes of what it computes in the class's first instance (every
    output of the statement's last node, or the first output of a block it applies last), None without one."""

    targets: tuple[str, ...]
    value: Expr
    shapes: tuple[Shape, ...] | None
    span: Span


class Return(NamedTuple):
    values: tuple[Expr, ...]
    shapes: tuple[Shape, ...] | None
    span: Span


class If(NamedTuple):
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]
    span: Span


Stmt = Input | Let | Require | Assign | Return | If


# ------------------------------------------------------------------ modules
class ParamIR(NamedTuple):
    """A value parameter of a class: its type (int, float, bool, str, enum, list, any) and default (None: required)."""

    name: str
    type: str
    default: Expr | None


class ClassIR(NamedTuple):
    """One specialised block: the code of one generated module class."""

    id: str  # qualname, with [name=layer, ...] for the layer arguments it is specialised on
    qualname: str
    layers: tuple[tuple[str, LayerRef], ...]  # the layer parameters' values, in the block's parameter order
    params: tuple[ParamIR, ...]
    body: tuple[Stmt, ...]
    instance: str | None  # the module path whose shapes the statements carry (None: no instance in this model)
    span: Span  # the block's definition

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]


class ConfigField(NamedTuple):
    """A field of the model's Config: a family value parameter, its solved value and, for a field the spec
    computes from other fields, that expression (over `config` names)."""

    name: str
    type: str
    value: Value
    derived: Expr | None = None


class SlotIR(NamedTuple):
    """An encoder, the backbone or the head: the top model's submodule `role`, constructed by `call` (an Apply
    of no input whose arguments are over Config fields), returning `n_outputs` tensors of `shapes`."""

    role: str
    key: str
    modality: str
    call: Apply
    n_outputs: int
    shapes: tuple[Shape, ...] | None


class TieIR(NamedTuple):
    target: str  # dotted module path of the weight that becomes the source's
    source: str
    cond: Expr | None  # over Config fields; None: always


class StructureIR(NamedTuple):
    model: str
    classes: dict[str, ClassIR]  # by id, in the order they are first used (a class before those it uses)
    config: tuple[ConfigField, ...]  # in the family's parameter order
    derived: tuple[str, ...]  # the derived fields, each after the fields it reads
    slots: tuple[SlotIR, ...]  # encoders, backbone, head
    ties: tuple[TieIR, ...]


# ------------------------------------------------------------------ the canonical dump
_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "neg": 7, "**": 8}


def expr_text(e: Expr | None, parent: int = 0) -> str:
    """An IR expression as text: tensors `%x`, Config fields `config.x`, task fields `task.x`, symbols `'x'`,
    classes by id, primitives by name, submodule attributes before the callee (`attn: SelfAttention(...)`)."""
    if e is None:
        return "default"
    if isinstance(e, Const):
        return format_value(e.value)
    if isinstance(e, Name):
        return {"tensor": f"%{e.name}", "config": f"config.{e.name}", "task": f"task.{e.name}",
                "symbol": f"'{e.name}'"}.get(e.kind, e.name)
    if isinstance(e, BinOp | Compare | BoolOp):
        p = _PREC["cmp" if isinstance(e, Compare) else e.op]
        s = f"{expr_text(e.left, p)} {e.op} {expr_text(e.right, p + 1)}"
        return f"({s})" if p < parent else s
    if isinstance(e, Neg):
        return f"-{expr_text(e.operand, _PREC['neg'])}"
    if isinstance(e, Not):
        return f"not {expr_text(e.operand, _PREC['not'])}"
    if isinstance(e, Index):
        return f"{expr_text(e.base, 10)}[{expr_text(e.key)}]"
    if isinstance(e, TupleExpr):
        inner = ", ".join(expr_text(i) for i in e.items)
        return f"[{inner}]" if e.is_list else f"({inner}{',' if len(e.items) == 1 else ''})"
    if isinstance(e, Builtin):
        return f"{e.func}({', '.join(expr_text(a) for a in e.args)})"
    return f"{_call_text(e)}({expr_text(e.input)})"


def _call_text(e: Apply) -> str:
    args = ", ".join(f"{n}={expr_text(a)}" for n, a in e.args if a is not None)
    rep = f"repeat({expr_text(e.repeat)}) " if e.repeat is not None else ""
    attr = f"{e.attr}: " if e.attr is not None else ""
    return f"{attr}{rep}{e.callee.target}({args})"


def _shapes_text(shapes: tuple[Shape, ...] | None) -> str:
    if not shapes:
        return ""
    return "    # " + ", ".join("(" + ", ".join(str(d) for d in s) + ")" for s in shapes)


def _dump_body(stmts: tuple[Stmt, ...], indent: str, out: list[str]) -> None:
    for s in stmts:
        if isinstance(s, Input):
            out.append(f"{indent}input {', '.join(s.names)}")
        elif isinstance(s, Let):
            out.append(f"{indent}let {s.name} = {expr_text(s.value)}")
        elif isinstance(s, Require):
            out.append(f"{indent}require {expr_text(s.cond)}" + (f"    # {s.message}" if s.message else ""))
        elif isinstance(s, Assign):
            out.append(f"{indent}{', '.join(s.targets)} = {expr_text(s.value)}{_shapes_text(s.shapes)}")
        elif isinstance(s, Return):
            out.append(f"{indent}return {', '.join(expr_text(v) for v in s.values)}{_shapes_text(s.shapes)}")
        else:
            out.append(f"{indent}if {expr_text(s.cond)}:")
            _dump_body(s.then, indent + "  ", out)
            if s.orelse:
                out.append(f"{indent}else:")
                _dump_body(s.orelse, indent + "  ", out)


def dump_structure(st: StructureIR) -> str:
    """Canonical, deterministic text of the structure IR (the `--emit=structure` output)."""
    out = [f"model {st.model}"]
    out.append("  config:")
    for f in st.config:
        derived = f" = {expr_text(f.derived)}" if f.derived is not None else ""
        out.append(f"    {f.name}: {f.type} {format_value(f.value)}{derived}")
    if st.derived:
        out.append(f"  derived order: {', '.join(st.derived)}")
    for s in st.slots:
        out.append(f"  slot {s.role} ({s.key}{', ' + s.modality if s.modality else ''}): {_call_text(s.call)}"
                   f" -> {s.n_outputs}{_shapes_text(s.shapes)}")
    for t in st.ties:
        out.append(f"  tie {t.target} = {t.source}" + (f" if {expr_text(t.cond)}" if t.cond is not None else ""))
    for c in st.classes.values():
        out.append("")
        out.append(f"class {c.id}    # {c.span.path}:{c.span.line}"
                   + (f"; shapes of {c.instance}" if c.instance else "; no instance"))
        for p in c.params:
            out.append(f"  param {p.name}: {p.type}" + (f" = {expr_text(p.default)}" if p.default is not None else ""))
        _dump_body(c.body, "  ", out)
    return "\n".join(out) + "\n"
