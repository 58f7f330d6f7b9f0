"""The AST visitor (metagen_compiler.syntax.visit): children come from the dataclass fields, so every node type is
reached, in source order, and a field added to a node class is walked without a change to the visitor."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from metagen_compiler.diagnostics import DiagnosticBag
from metagen_compiler.driver import compile_source
from metagen_compiler.semantics.elaborate import applied_layers, layer_labels
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.parser import parse_msl
from metagen_compiler.syntax.visit import Visitor, statements, walk

ROOT = Path(__file__).resolve().parent.parent

# Every construct of the language once (the spec only has to parse): each AST node type appears in it.
EVERY_CONSTRUCT = """msl 1
import std.transformer as tr

block b(d: int = 64 multiple_of 8 in 8..512, kind: {a, c} = a, m: int = ? in {1, 2}, act: layer = gelu) {
  input x
  let w = -d * 2
  require not (d < 0 or d > 100000) and true "too big"
  if d >= [1, 2][0] {
    y = x >> lbl: repeat(2) linear(d, out_features = max(d, 1))
  } else {
    y = (x, x) >> concat
  }
  return y
}

family f(d: int = 64) {
  encoder text = b(d = d)
  encoder tgt: text = b
  backbone = b
  head generation = b
  tie a.b = c.d if d > 1
  prefer d = 2
  require d > 0
}

preset p : f { d = 128 }

device dev { memory = 12GB }

model m {
  modality text -> text
  task generation { classes = 3 }
  objective autoregressive
  constraints { params <= 30M on dev }
  architecture f { d = ? }
  metadata { name = "x"; grp { k = 1 } }
  training { lr = 3e-4 }
}
"""


def _parse(text: str, path: str = "<test>") -> A.Module:
    bag = DiagnosticBag()
    module = parse_msl(SourceFile(path, text), bag)
    assert module is not None and not bag.has_errors, [str(d) for d in bag.items]
    return module


def _node_classes() -> set[type[A.Node]]:
    """Every concrete AST node class (the subclasses of Node, found by Python, not listed here)."""
    out: set[type[A.Node]] = set()
    todo = [A.Node]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__ == A.__name__:
                out.add(sub)
                todo.append(sub)
    return out


def _reference(x: object) -> Iterator[A.Node]:
    """An independent walk, recursive over dataclasses.fields, in pre-order: what `walk` must yield."""
    if isinstance(x, A.Node):
        yield x
        for f in dataclasses.fields(x):
            if f.name != "span":
                yield from _reference(getattr(x, f.name))
    elif isinstance(x, tuple):
        for i in x:
            yield from _reference(i)


def test_every_node_type_is_reached() -> None:
    module = _parse(EVERY_CONSTRUCT)
    classes = _node_classes()
    assert len(classes) > 40
    assert {type(n) for n in walk(module)} == classes

    class Seen(Visitor):
        def __init__(self) -> None:
            self.types: set[type[A.Node]] = set()

        def generic_visit(self, node: A.Node) -> None:
            self.types.add(type(node))
            super().generic_visit(node)

    v = Seen()
    v.visit(module)
    assert v.types == classes


def _sources() -> list[tuple[str, str]]:
    stdlib = resources.files("metagen_stdlib")
    out = [(f"<stdlib>/{p.name}", p.read_text(encoding="utf-8")) for p in stdlib.iterdir() if p.name.endswith(".msl")]
    out += [(str(p), p.read_text(encoding="utf-8")) for p in sorted((ROOT / "examples").glob("*.msl"))]
    return sorted(out)


def test_walk_is_the_field_order_preorder_of_every_stdlib_and_example_module() -> None:
    sources = _sources()
    assert len(sources) > 20
    for path, text in sources:
        module = _parse(text, path)
        assert [id(n) for n in walk(module)] == [id(n) for n in _reference(module)], path
        assert sorted(map(id, A.subnodes(module))) == sorted(id(n) for n in _reference(module)), path


def test_a_new_field_is_walked_without_changing_the_visitor() -> None:
    """A node class with fields the visitor has never seen: a node, an optional node and a tuple of them."""
    sp = _parse(EVERY_CONSTRUCT).span

    @dataclasses.dataclass(frozen=True)
    class Annotated(A.Assign):
        note: A.Expr
        extra: A.Expr | None = None
        more: tuple[A.Expr, ...] = ()

    def name(n: str) -> A.Name:
        return A.Name(sp, (n,))

    layer = A.Layer(sp, None, None, name("linear"), None)
    node = Annotated(sp, (A.Ident(sp, "y"),), A.Apply(sp, name("x"), layer), name("n1"), None,
                     (name("n2"), A.Apply(sp, name("n3"), A.Layer(sp, None, None, name("gelu"), None))))
    assert [n.dotted for n in walk(node) if isinstance(n, A.Name)] == ["x", "linear", "n1", "n2", "n3", "gelu"]
    body = (A.If(sp, A.Bool(sp, True), (node,), ()),)
    assert statements(body) == [body[0], node]
    # the new fields are expressions of an assignment: a layer applied in one is applied by the block
    assert [ly.callee.dotted for ly in applied_layers(body)] == ["linear", "gelu"]

    class Names(Visitor):
        def __init__(self) -> None:
            self.names: list[str] = []

        def visit_Name(self, node: A.Name) -> None:
            self.names.append(node.dotted)

    v = Names()
    v.visit(node)
    assert v.names == ["x", "linear", "n1", "n2", "n3", "gelu"]


def test_visitor_dispatches_by_class_and_prunes_where_a_method_stops() -> None:
    module = _parse(EVERY_CONSTRUCT)

    class Counts(Visitor):
        def __init__(self) -> None:
            self.calls = 0
            self.names: list[str] = []

        def visit_Call(self, node: A.Call) -> None:  # no generic_visit: the call's arguments are not walked
            self.calls += 1

        def visit_Name(self, node: A.Name) -> None:
            self.names.append(node.dotted)

    v = Counts()
    v.visit(module.blocks[0])
    assert v.calls == 1
    assert v.names[:2] == ["a", "gelu"]  # parameter defaults, in source order
    assert "max" in [n.dotted for n in walk(module.blocks[0]) if isinstance(n, A.Name)] and "max" not in v.names


def test_walk_prunes_where_descend_says_no() -> None:
    module = _parse(EVERY_CONSTRUCT)
    top = list(walk(module, descend=lambda n: isinstance(n, A.Module)))
    assert top[0] is module and all(not isinstance(n, (A.Ident, A.Name)) for n in top[1:])
    assert len(top) == 1 + len(module.imports) + len(module.blocks) + len(module.families) + len(module.presets) \
        + len(module.devices) + len(module.models)
    assert list(walk(())) == []


def test_statements_are_in_source_order_into_both_branches() -> None:
    module = _parse("""msl 1
block b(d: int) {
  input x
  if d > 1 { y = x; if d > 2 { y = x } else { return x } } else { let k = 1; y = x }
  return y
}
""")
    kinds = [type(s).__name__ for s in statements(module.blocks[0].body)]
    assert kinds == ["Input", "If", "Assign", "If", "Assign", "Return", "Let", "Assign", "Return"]


def test_applied_layers_are_those_of_tensor_flow_in_source_order() -> None:
    """Layers of `>>` in assignments and returns, through operators, tuples and both `if` branches; not those
    inside a call, an index, a layer's arguments, a `let`, a `require` or an `if`'s condition (values, E201)."""
    module = _parse("""msl 1
block b(d: int) {
  input x
  let k = (x >> in_let)
  require (x >> in_require) "r"
  if (x >> in_cond) {
    y = (x >> a) + (x >> b) >> c
  } else {
    y = max(x >> in_call) >> e(act = (x >> in_args))
  }
  z = ((x >> f)[0], [x >> g])
  return -(y >> h), not (z >> i)
}
""")
    block = module.blocks[0]
    assert [ly.callee.dotted for ly in applied_layers(block.body)] == ["a", "b", "c", "e", "g", "h", "i"]
    assert list(layer_labels(block)) == [id(ly) for ly in applied_layers(block.body)]


@pytest.mark.parametrize("condition", ["max(d_model, groups) % groups == 0", "(d_model, groups)[0] % groups == 0"])
def test_failed_require_shows_the_values_it_reads_inside_calls_and_tuples(condition: str) -> None:
    """E206 shows the block's arguments its condition reads: also those read inside a call or a tuple (the
    hand-written walker this replaced looked only through operators and indices)."""
    src = f"""msl 1
block mixer(d_model: int, groups: int) {{
  require {condition} "groups must divide d_model"
  input x
  return x >> fc: linear(d_model, d_model)
}}
block embed(vocab: int, d_model: int) {{
  input tokens
  return tokens >> wte: embedding(vocab, d_model)
}}
family tiny(vocab: int = 1000, d_model: int = 64, groups: int = 5) {{
  encoder text = embed(vocab, d_model)
  backbone = mixer(d_model, groups)
  head generation = embed(vocab, d_model)
}}
model m {{
  modality text -> text
  task generation
  architecture tiny
}}
"""
    comp = compile_source(SourceFile("<test>", src))
    assert [(d.code, d.message) for d in comp.bag.errors] == [
        ("E206", "`mixer`: groups must divide d_model (d_model = 64, groups = 5)")]


class _AppliedLayersVisitor(Visitor):
    """applied_layers as the Visitor it was written as (before it became one loop): the reference it must equal."""

    def __init__(self) -> None:
        self.layers: list[A.Layer] = []

    def visit_Layer(self, node: A.Layer) -> None:
        self.layers.append(node)

    def visit_If(self, node: A.If) -> None:
        self.visit_all((*node.then, *node.orelse))

    def _value(self, node: A.Node) -> None:
        pass

    visit_Let = visit_Require = visit_Input = visit_Call = visit_Index = _value


def test_applied_layers_and_statements_equal_their_walker_forms_on_every_stdlib_and_example_block() -> None:
    blocks = [b for path, text in _sources() for b in _parse(text, path).blocks]
    assert len(blocks) > 200
    for b in blocks:
        v = _AppliedLayersVisitor()
        v.visit_all(b.body)
        assert [id(n) for n in applied_layers(b.body)] == [id(n) for n in v.layers], b.name.name
        assert statements(b.body) == [n for n in walk(b.body, descend=lambda n: isinstance(n, A.If))
                                      if isinstance(n, A.Stmt)], b.name.name


def test_fields_annotated_with_plain_values_are_not_walked_and_a_class_without_others_is_a_leaf() -> None:
    assert A.child_fields(A.Name) == () and A.child_fields(A.Ident) == () and A.child_fields(A.Num) == ()
    assert A.child_fields(A.Apply) == ("input", "layer")
    assert A.child_fields(A.Layer) == ("label", "repeat", "callee", "args")
    # every field a node can be found in is kept: the plain-valued ones never hold one
    for cls in _node_classes():
        for f in dataclasses.fields(cls):
            if f.name not in A.child_fields(cls):
                assert not any(isinstance(n, A.Node) for n in _reference(tuple(
                    getattr(x, f.name) for x in walk(_parse(EVERY_CONSTRUCT)) if type(x) is cls))), (cls, f.name)


def test_visitor_dispatch_is_per_visitor_class() -> None:
    """The method found for a node class is cached per visitor class: a sibling class's methods are its own."""
    module = _parse(EVERY_CONSTRUCT)

    class Layers(Visitor):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def visit_Layer(self, node: A.Layer) -> None:
            self.seen.append(node.callee.dotted)

    class Everything(Layers):
        def visit_Layer(self, node: A.Layer) -> None:
            self.seen.append("L")
            self.generic_visit(node)

        def generic_visit(self, node: A.Node) -> None:
            self.seen.append(type(node).__name__)
            super().generic_visit(node)

    a, b = Layers(), Everything()
    a.visit(module)
    b.visit(module)
    a2 = Layers()
    a2.visit(module)
    assert a.seen == a2.seen and a.seen[:2] == ["linear", "concat"]
    assert b.seen.count("L") == len(a.seen) and "Module" in b.seen and "linear" not in b.seen


def test_nodes_compare_hash_and_print_as_dataclasses_do() -> None:
    """The base class's `==`, `hash` and `repr` (written once instead of generated per class) behave as the
    dataclass ones: fields in order, the span left out of `==` and `hash` and out of the repr."""
    from metagen_compiler.span import NO_SPAN, Span

    other = Span(None, 1, 1, 1, 1, 1, 1)
    a = A.Name(NO_SPAN, ("std", "layers"))
    b = A.Name(other, ("std", "layers"))
    assert a == b and hash(a) == hash(b) and a != A.Name(NO_SPAN, ("std",))
    assert repr(a) == "Name(parts=('std', 'layers'))"
    assert A.Num(NO_SPAN, 1) != A.Str(NO_SPAN, "1") and (A.Num(NO_SPAN, 1) == 1) is False
    for cls in (A.Name, A.Num, A.Unknown):
        assert "__eq__" not in cls.__dict__ and "__repr__" not in cls.__dict__ and cls.__hash__ is A.Node.__hash__
    assert A.Unknown(NO_SPAN) == A.Unknown(other) and {A.Unknown(NO_SPAN), A.Unknown(other)} == {A.Unknown(NO_SPAN)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.parts = ()  # type: ignore[misc]
