"""The MSL abstract syntax tree: frozen dataclasses named after grammar rules.

Both front ends (MSL text and the seeds' YAML) build these. Every node has a `span`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from operator import attrgetter

from metagen_compiler.span import Span

__all__ = [
    "Apply", "Architecture", "Arg", "Assign", "BinOp", "Block", "Bool", "BoolOp", "Call", "Compare", "Constraint",
    "Device", "DimConstraint", "EncoderSlot", "EnumType", "Expr", "Family", "Field", "HeadSlot", "Ident", "If",
    "Import", "InRange", "InSet", "Index", "Input", "Layer", "Let", "ListExpr", "MetaEntry", "MetaGroup", "Model",
    "Module", "MultipleOf", "Name", "NamedType", "Neg", "Node", "Not", "Num", "Param", "Prefer", "Preset", "Quantity",
    "Require", "Return", "Stmt", "Str", "Task", "Tie", "Training", "TupleExpr", "TypeExpr", "Unknown", "child_fields",
    "dump", "subnodes",
]


@dataclass(frozen=True, repr=False, eq=False)
class Node:
    """The base of every AST class. `repr`, `==` and `hash` are the dataclass ones (a class's fields in order, the
    span left out of `==` and `hash`), written once here instead of generated for each of the 49 node classes:
    generating them was a tenth of a compile's CPU time, spent importing this module."""

    span: Span = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in _repr_names(type(self)))})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        get = _compared(type(self))
        return get(self) == get(other)

    def __hash__(self) -> int:
        return hash(_compared(type(self))(self))

    def children(self) -> list[Node]:
        """The nodes directly inside this one, in field order (which is source order), found from the dataclass
        fields (a node, or a tuple of nodes), so a field added to a node class is walked with no other change
        (unless its annotation says it holds plain values only: `child_fields`). Spans are not nodes. The walkers
        (`metagen_compiler.syntax.visit`) are built on this."""
        get = _CHILD_FIELDS.get(type(self))
        if get is None:
            get = _child_fields(type(self))
        out: list[Node] = []
        for v in get(self):
            if isinstance(v, Node):
                out.append(v)
            elif isinstance(v, tuple) and v:
                out += [i for i in v if isinstance(i, Node)]
        return out


_REPR_NAMES: dict[type, tuple[str, ...]] = {}
_COMPARED: dict[type, Callable[[Node], tuple[object, ...]]] = {}


def _repr_names(cls: type[Node]) -> tuple[str, ...]:
    names = _REPR_NAMES.get(cls)
    if names is None:
        names = _REPR_NAMES[cls] = tuple(f.name for f in fields(cls) if f.repr)
    return names


def _compared(cls: type[Node]) -> Callable[[Node], tuple[object, ...]]:
    """The values `==` and `hash` compare, as a tuple (a dataclass's `compare` fields, in order)."""
    get = _COMPARED.get(cls)
    if get is None:
        names = tuple(f.name for f in fields(cls) if f.compare)
        get = (attrgetter(*names) if len(names) >= 2 else _one_field(attrgetter(names[0])) if names
               else _no_fields)
        _COMPARED[cls] = get
    return get


# per node class, a function giving the values of its fields that may hold nodes as a tuple, in field order: one
# attrgetter call instead of a getattr per field
_CHILD_FIELDS: dict[type[Node], Callable[[Node], tuple[object, ...]]] = {}
_PLAIN = {"str", "int", "float", "bool", "None", "tuple", "Span"}  # what an annotation of a node-less field names


def child_fields(cls: type[Node]) -> tuple[str, ...]:
    """The fields of a node class that may hold nodes, in order: all but those annotated with plain values only
    (`str`, `int | float`, `tuple[str, ...]`, `Span | None`: no node inside), the span included. A class without
    one is a leaf: `children()` is always empty."""
    names = _CHILD_NAMES.get(cls)
    if names is None:
        names = _CHILD_NAMES[cls] = tuple(
            f.name for f in fields(cls) if not (f.type in (str, int, float, bool, Span) or isinstance(f.type, str)
                                                and set(re.findall(r"\w+", f.type)) <= _PLAIN))
    return names


_CHILD_NAMES: dict[type[Node], tuple[str, ...]] = {}


def _child_fields(cls: type[Node]) -> Callable[[Node], tuple[object, ...]]:
    names = child_fields(cls)
    if len(names) >= 2:
        get: Callable[[Node], tuple[object, ...]] = attrgetter(*names)
    elif names:
        get = _one_field(attrgetter(names[0]))
    else:
        get = _no_fields
    _CHILD_FIELDS[cls] = get
    return get


def _one_field(one: Callable[[Node], object]) -> Callable[[Node], tuple[object, ...]]:
    return lambda node: (one(node),)


def _no_fields(node: Node) -> tuple[object, ...]:
    return ()


@dataclass(frozen=True, repr=False, eq=False)
class Ident(Node):
    name: str


# ---------------------------------------------------------------- expressions
@dataclass(frozen=True, repr=False, eq=False)
class Num(Node):
    value: int | float


@dataclass(frozen=True, repr=False, eq=False)
class Quantity(Node):
    """A number with a unit suffix: 86M, 20ms, 12GB, 256k, 16kHz."""

    value: float
    unit: str
    text: str


@dataclass(frozen=True, repr=False, eq=False)
class Str(Node):
    value: str


@dataclass(frozen=True, repr=False, eq=False)
class Unknown(Node):
    """`?`: a dimension the compiler solves for."""


@dataclass(frozen=True, repr=False, eq=False)
class Bool(Node):
    value: bool


@dataclass(frozen=True, repr=False, eq=False)
class Name(Node):
    parts: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True, repr=False, eq=False)
class Arg(Node):
    name: Ident | None
    value: Expr


@dataclass(frozen=True, repr=False, eq=False)
class Call(Node):
    func: Name
    args: tuple[Arg, ...]


@dataclass(frozen=True, repr=False, eq=False)
class BinOp(Node):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, repr=False, eq=False)
class Index(Node):
    value: Expr
    index: Expr


@dataclass(frozen=True, repr=False, eq=False)
class Neg(Node):
    operand: Expr


@dataclass(frozen=True, repr=False, eq=False)
class Compare(Node):
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, repr=False, eq=False)
class BoolOp(Node):
    op: str  # "and" | "or"
    left: Expr
    right: Expr


@dataclass(frozen=True, repr=False, eq=False)
class Not(Node):
    operand: Expr


@dataclass(frozen=True, repr=False, eq=False)
class TupleExpr(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True, repr=False, eq=False)
class ListExpr(Node):
    items: tuple[Expr, ...]


@dataclass(frozen=True, repr=False, eq=False)
class Layer(Node):
    """`label: repeat(n) callee(args)`: a layer applied with `>>`, or a slot's layer."""

    label: Ident | None
    repeat: Expr | None
    callee: Name
    args: tuple[Arg, ...] | None


@dataclass(frozen=True, repr=False, eq=False)
class Apply(Node):
    """`input >> layer`."""

    input: Expr
    layer: Layer


Expr = (Num | Quantity | Str | Unknown | Bool | Name | Call | BinOp | Index | Neg | Compare | BoolOp | Not | TupleExpr
        | ListExpr | Apply)


# ---------------------------------------------------------------- parameters
@dataclass(frozen=True, repr=False, eq=False)
class NamedType(Node):
    name: str


@dataclass(frozen=True, repr=False, eq=False)
class EnumType(Node):
    values: tuple[str, ...]


TypeExpr = NamedType | EnumType


@dataclass(frozen=True, repr=False, eq=False)
class MultipleOf(Node):
    value: Expr


@dataclass(frozen=True, repr=False, eq=False)
class InRange(Node):
    lo: Expr
    hi: Expr


@dataclass(frozen=True, repr=False, eq=False)
class InSet(Node):
    """`in {a, b, c}`: the values an open `?` may take, in the order written (an enumerated choice)."""

    items: tuple[Expr, ...]


DimConstraint = MultipleOf | InRange | InSet


@dataclass(frozen=True, repr=False, eq=False)
class Param(Node):
    name: Ident
    type: TypeExpr | None
    default: Expr | None
    constraints: tuple[DimConstraint, ...] = ()


# ---------------------------------------------------------------- block bodies
@dataclass(frozen=True, repr=False, eq=False)
class Input(Node):
    names: tuple[Ident, ...]


@dataclass(frozen=True, repr=False, eq=False)
class Assign(Node):
    targets: tuple[Ident, ...]
    value: Expr


@dataclass(frozen=True, repr=False, eq=False)
class Let(Node):
    name: Ident
    value: Expr


@dataclass(frozen=True, repr=False, eq=False)
class Return(Node):
    values: tuple[Expr, ...]


@dataclass(frozen=True, repr=False, eq=False)
class If(Node):
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]


@dataclass(frozen=True, repr=False, eq=False)
class Require(Node):
    cond: Expr
    message: str | None


Stmt = Input | Assign | Let | Return | If | Require


@dataclass(frozen=True, repr=False, eq=False)
class Block(Node):
    name: Ident
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]


# ---------------------------------------------------------------- families, presets, devices
@dataclass(frozen=True, repr=False, eq=False)
class EncoderSlot(Node):
    modality: Ident
    layer: Layer
    input: Ident | None = None  # `encoder NAME: MODALITY = ...`: an input the family declares, named NAME

    @property
    def input_name(self) -> str:
        return self.input.name if self.input is not None else self.modality.name


@dataclass(frozen=True, repr=False, eq=False)
class HeadSlot(Node):
    task: Ident
    layer: Layer


@dataclass(frozen=True, repr=False, eq=False)
class Tie(Node):
    target: Name
    source: Name
    cond: Expr | None


@dataclass(frozen=True, repr=False, eq=False)
class Prefer(Node):
    lhs: Expr
    rhs: Expr


@dataclass(frozen=True, repr=False, eq=False)
class Family(Node):
    name: Ident
    params: tuple[Param, ...]
    encoders: tuple[EncoderSlot, ...]
    backbone: Layer | None
    heads: tuple[HeadSlot, ...]
    ties: tuple[Tie, ...]
    prefers: tuple[Prefer, ...]
    requires: tuple[Require, ...]


@dataclass(frozen=True, repr=False, eq=False)
class Field(Node):
    name: Ident
    value: Expr
    constraints: tuple[DimConstraint, ...] = ()


@dataclass(frozen=True, repr=False, eq=False)
class MetaGroup(Node):
    name: Ident
    entries: tuple[MetaEntry, ...]


MetaEntry = Field | MetaGroup


@dataclass(frozen=True, repr=False, eq=False)
class Preset(Node):
    name: Ident
    family: Name
    fields: tuple[Field, ...]


@dataclass(frozen=True, repr=False, eq=False)
class Device(Node):
    name: Ident
    fields: tuple[Field, ...]


# ---------------------------------------------------------------- models
@dataclass(frozen=True, repr=False, eq=False)
class Task(Node):
    name: Ident
    fields: tuple[Field, ...]


@dataclass(frozen=True, repr=False, eq=False)
class Constraint(Node):
    name: Ident
    op: str
    value: Expr
    device: Ident | None


@dataclass(frozen=True, repr=False, eq=False)
class Architecture(Node):
    """`architecture transformer.decoder { ... }`, or with the family left open among candidates,
    `architecture ? in {transformer.decoder, ssm.s4d} { ... }`: then `choices` lists them in the order written,
    `family` is the first of them (for tools that want one name), `choice_span` covers `? in {...}`, and only
    `metagenc search` compiles it (a family at a time; docs/search.md)."""

    family: Name
    fields: tuple[Field, ...]
    choices: tuple[Name, ...] = ()
    choice_span: Span | None = field(default=None, repr=False, compare=False)

    @property
    def open(self) -> bool:
        """Whether the family is left open (`? in {...}`)."""
        return self.choice_span is not None


@dataclass(frozen=True, repr=False, eq=False)
class Training(Node):
    """`training { optimizer = adamw; lr = 3e-4; ... }`: the defaults of the generated train.py."""

    fields: tuple[Field, ...]


@dataclass(frozen=True, repr=False, eq=False)
class Model(Node):
    name: Ident
    inputs: tuple[Ident, ...]
    outputs: tuple[Ident, ...]
    task: Task | None
    objectives: tuple[Ident, ...]
    constraints: tuple[Constraint, ...]
    architecture: Architecture | None
    metadata: tuple[MetaEntry, ...]
    modality_span: Span | None = field(default=None, repr=False, compare=False)
    # `training { ... }` sections, in source order: one is allowed (a second is E104); a tuple, so that a model
    # without one dumps as before
    training: tuple[Training, ...] = ()


@dataclass(frozen=True, repr=False, eq=False)
class Import(Node):
    path: Name
    alias: Ident | None


@dataclass(frozen=True, repr=False, eq=False)
class Module(Node):
    """One source file."""

    path: str
    version: str | None
    imports: tuple[Import, ...]
    blocks: tuple[Block, ...]
    families: tuple[Family, ...]
    presets: tuple[Preset, ...]
    devices: tuple[Device, ...]
    models: tuple[Model, ...]


# ---------------------------------------------------------------- canonical dump
def subnodes(e: Node | tuple[Node, ...]) -> list[Node]:
    """Every node inside `e` (itself included, in no particular order), found without recursion, so a deeply
    nested expression is fine. `metagen_compiler.syntax.visit.walk` is the ordered form, with pruning."""
    out: list[Node] = []
    stack: list[Node] = [e] if isinstance(e, Node) else list(e)
    while stack:
        x = stack.pop()
        out.append(x)
        stack.extend(x.children())
    return out


def _dump(x: object, indent: int, out: list[str], prefix: str) -> None:
    pad = "  " * indent
    if is_dataclass(x) and not isinstance(x, type):
        span = getattr(x, "span", None)
        loc = f" @{span.line}:{span.col}" if span is not None and span.file is not None else ""
        simple = [f for f in fields(x) if f.name != "span" and f.repr]
        scalars = [(f.name, getattr(x, f.name)) for f in simple if not _is_compound(getattr(x, f.name))]
        compounds = [(f.name, getattr(x, f.name)) for f in simple if _is_compound(getattr(x, f.name))]
        head = " ".join(f"{k}={_scalar(v)}" for k, v in scalars)
        out.append(f"{pad}{prefix}{type(x).__name__}{loc}" + (f" {head}" if head else ""))
        for k, v in compounds:
            if isinstance(v, tuple):
                if not v:
                    continue
                out.append(f"{pad}  {k}:")
                for item in v:
                    _dump(item, indent + 2, out, "- ")
            else:
                _dump(v, indent + 1, out, f"{k}: ")
    else:
        out.append(f"{pad}{prefix}{_scalar(x)}")


def _is_compound(v: object) -> bool:
    if isinstance(v, tuple):
        return any(is_dataclass(i) for i in v) or not v
    return is_dataclass(v)


def _scalar(v: object) -> str:
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_scalar(i) for i in v) + ")"
    return repr(v)


def dump(node: object) -> str:
    """Canonical, deterministic text of an AST (the `--emit=ast` output)."""
    out: list[str] = []
    _dump(node, 0, out, "")
    return "\n".join(out) + "\n"
