"""The structure IR (issue 20, section 1): the module-level IR the `structure` pass builds once, which the
PyTorch backend reads instead of walking block ASTs with an elaborator of its own.

The golden dumps of every example are in test_golden.py (stage `structure`); model.py's goldens there are the
test that the backend's output did not move when it changed over to this IR.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from conftest import ROOT, compile_path

from metagen_compiler.compilation import Compilation
from metagen_compiler.driver import compile_source
from metagen_compiler.ir import structure as S
from metagen_compiler.span import SourceFile, Span

GPT2 = ROOT / "examples" / "gpt2.msl"

# a block with an `if` whose second branch this model never takes, a `let`, a `require`, an enum parameter and a
# block used twice with different layer arguments (two classes)
SPEC = """msl 1
block mix(d: int, act: layer = gelu, wide: bool = false, kind: {plain, gated} = plain) {
  require d > 0 "d must be positive"
  input x
  let h = 2 * d
  if wide {
    y = x >> up: linear(d, h) >> act >> down: linear(h, d)
  } else {
    y = x >> fc: linear(d, d) >> act
  }
  if kind == gated {
    y = y * (x >> gate: linear(d, d) >> sigmoid)
  }
  return x + y
}
block embed(vocab: int, d_model: int) {
  input tokens
  return tokens >> wte: embedding(vocab, d_model)
}
block body(d_model: int) {
  input x
  x = x >> a: mix(d_model)
  return x >> b: mix(d_model, act = relu, wide = true)
}
block lm_out(d_model: int, vocab: int) {
  input x
  return x >> out: linear(d_model, vocab)
}
family tiny(vocab: int = 100, d_model: int = 16, wide_model: int = d_model * 2) {
  encoder text = embed(vocab, d_model)
  backbone = body(d_model)
  head generation = lm_out(d_model, vocab)
}
model m {
  modality text -> text
  task generation
  constraints { context = 8 }
  architecture tiny
}
"""


def _compile(text: str = SPEC) -> Compilation:
    comp = compile_source(SourceFile("m.msl", text))
    assert not comp.bag.has_errors, comp.bag.items
    assert comp.structure is not None
    return comp


def _walk(stmts: tuple[S.Stmt, ...]) -> list[S.Stmt]:
    out: list[S.Stmt] = []
    for s in stmts:
        out.append(s)
        if isinstance(s, S.If):
            out += _walk(s.then) + _walk(s.orelse)
    return out


def test_one_class_per_block_and_layer_arguments() -> None:
    st = _compile().structure
    assert st is not None
    assert list(st.classes) == ["embed", "body", "mix[act=gelu]", "mix[act=relu]", "lm_out"]
    a, b = st.classes["mix[act=gelu]"], st.classes["mix[act=relu]"]
    assert a.qualname == b.qualname == "mix" and a.name == "mix"
    assert [p.name for p in a.params] == ["d", "wide", "kind"]  # the layer parameter `act` is the class's key
    assert a.instance == "backbone.a" and b.instance == "backbone.b"
    # the body's applications call the classes by id, with their value arguments (None: the default)
    body = st.classes["body"].body
    first = body[1]
    assert isinstance(first, S.Assign) and isinstance(first.value, S.Apply)
    assert first.value.callee == S.Callee("class", "mix[act=gelu]") and first.value.attr == "a"
    assert first.value.args == (("d", S.Name("d_model", "param")), ("wide", None), ("kind", None))


def test_both_branches_of_an_if_are_kept_and_names_resolved() -> None:
    st = _compile().structure
    assert st is not None
    mix = st.classes["mix[act=gelu]"]
    kinds = [type(s).__name__ for s in mix.body]
    assert kinds == ["Require", "Input", "Let", "If", "If", "Return"]
    wide = mix.body[3]
    assert isinstance(wide, S.If) and wide.cond == S.Name("wide", "param")
    assert [s.targets for s in wide.then if isinstance(s, S.Assign)] == [("y",)]
    assert [s.targets for s in wide.orelse if isinstance(s, S.Assign)] == [("y",)]
    gated = mix.body[4]
    assert isinstance(gated, S.If)
    assert gated.cond == S.Compare("==", S.Name("kind", "param"), S.Name("gated", "symbol"))
    up = wide.then[0]
    assert isinstance(up, S.Assign) and isinstance(up.value, S.Apply)
    # y = x >> up >> act >> down: down(act(up(x))), act resolved to the class's layer argument (gelu)
    down = up.value
    act = down.input
    assert isinstance(act, S.Apply) and act.callee == S.Callee("primitive", "gelu") and act.attr is None
    inner = act.input
    assert isinstance(inner, S.Apply) and inner.attr == "up" and inner.input == S.Name("x", "tensor")
    assert inner.args[1] == ("out_features", S.Name("h", "let"))
    let = mix.body[2]
    assert isinstance(let, S.Let) and let.value == S.BinOp("*", S.Const(2), S.Name("d", "param"))


def test_shapes_come_from_the_first_instance() -> None:
    st = _compile().structure
    assert st is not None
    a = st.classes["mix[act=gelu]"]  # wide = false: the `else` branch ran, the `then` branch did not
    wide = a.body[3]
    assert isinstance(wide, S.If)
    ran, skipped = wide.orelse[0], wide.then[0]
    assert isinstance(ran, S.Assign) and isinstance(skipped, S.Assign)
    # sizes that come from a Config field are written as its name (true for any Config), others as numbers
    assert ran.shapes == (("B", "T", "d_model"),) and skipped.shapes is None
    ret = a.body[-1]
    assert isinstance(ret, S.Return) and ret.shapes == (("B", "T", "d_model"),)
    slots = {s.role: s for s in st.slots}
    assert slots["head"].shapes == (("B", "T", "vocab"),) and slots["head"].n_outputs == 1


def test_config_fields_derived_fields_and_slots() -> None:
    st = _compile().structure
    assert st is not None
    fields = {f.name: f for f in st.config}
    assert fields["d_model"].value == 16 and fields["d_model"].derived is None
    assert fields["wide_model"].derived == S.BinOp("*", S.Name("d_model", "config"), S.Const(2))
    assert st.derived == ("wide_model",)
    assert [s.role for s in st.slots] == ["encoder", "backbone", "head"]
    assert st.slots[1].call.args == (("d_model", S.Name("d_model", "config")),)


def test_the_dump_is_canonical_and_deterministic() -> None:
    from metagen_compiler.passes import PASSES

    one, two = _compile(), _compile()
    text = PASSES["structure"].dump(one)
    assert text == PASSES["structure"].dump(two)
    assert "class mix[act=gelu]    # m.msl:2; shapes of backbone.a" in text
    assert "    y = fc: linear(in_features=d, out_features=d)(%x)" not in text  # act wraps it
    assert "    y = gelu()(fc: linear(in_features=d, out_features=d)(%x))    # (B, T, d_model)" in text
    assert "  require d > 0    # d must be positive" in text


def test_emit_structure_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from metagen_compiler.cli import command

    assert command([str(GPT2), "--emit", "structure"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model gpt2\n")
    assert "class std.layers.self_attention    # <stdlib>/layers.msl:" in out


def test_the_pytorch_backend_reads_only_the_irs() -> None:
    """model.py from a compilation without its AST and program (only the spec, graph and structure IRs) is
    the same file: the backend never walks a block body or runs the elaborator itself."""
    from metagen_backends.pytorch import emit

    comp = compile_path(GPT2)
    full = emit(comp)["model.py"]
    bare = dataclasses.replace(comp, module=None, program=None, model=None)
    assert emit(bare)["model.py"] == full


# ------------------------------------------------------------------ symbolic shapes (issue 20, section 5)
def _shaped(st: S.StructureIR) -> list[tuple[str, tuple[S.Shape, ...]]]:
    """Every shape the IR carries, labelled by where it is (class id and statement index, or slot role)."""
    out = [(f"slot {s.role}", s.shapes) for s in st.slots if s.shapes is not None]
    for c in st.classes.values():
        for i, s in enumerate(_walk(c.body)):
            if isinstance(s, S.Assign | S.Return) and s.shapes is not None:
                out.append((f"{c.id} #{i}", s.shapes))
    return out


def _env(comp: Compilation) -> dict[str, int]:
    assert comp.spec is not None and comp.graph is not None
    ints = {k: v for k, v in comp.spec.dims.items() if isinstance(v, int) and not isinstance(v, bool)}
    return {**ints, **comp.graph.symbols}


@pytest.mark.parametrize("name", ["gpt2", "resnet50", "vit_b_16", "detr_r50", "whisper_tiny", "pointnet",
                                  "conv_vae_images", "rag_fid", "maskformer_instance", "t5_small"])
def test_symbolic_shapes_stay_true_for_another_config(name: str) -> None:
    """Compiled again with every Config field that a shape names doubled (the derived ones follow), each size
    the first compile wrote as a symbol evaluates, at the second's values, to the size the second inferred."""
    from metagen_compiler.compilation import Options
    from metagen_compiler.primitives import subst_dim

    path = ROOT / "examples" / f"{name}.msl"
    base = compile_path(path)
    assert base.structure is not None and base.graph is not None
    derived = {f.name for f in base.structure.config if f.derived is not None}
    env = _env(base)
    named = {d for _, shapes in _shaped(base.structure) for s in shapes for d in s if isinstance(d, str)}
    fields = sorted(f for f in env if f not in derived and f not in base.graph.symbols
                    and any(f in str(d) for d in named))
    assert fields, "no Config field named in a shape"
    other = compile_path(path, options=Options(overrides=tuple((f, str(2 * env[f])) for f in fields)))
    assert other.structure is not None, other.bag.items
    env2 = _env(other)
    assert any(env2[f] != env[f] for f in fields)
    pairs = dict(_shaped(other.structure))
    checked = 0
    for where, shapes in _shaped(base.structure):
        for s, s2 in zip(shapes, pairs[where]):
            for d, d2 in zip(s, s2):
                if isinstance(d, str) and any(f in d for f in fields):  # B, T alone: the graph's own symbols
                    assert subst_dim(d, env2) == subst_dim(d2, env2), (where, s, s2)
                    checked += 1
    assert checked


def test_records_behave_as_typing_namedtuples() -> None:
    """The records are built without typing.NamedTuple at run time (it compiles a ForwardRef per annotation and a
    __new__ per class: ~2 ms of every compile's import); they must be the same tuples: fields, defaults, keywords,
    errors, repr, equality, _replace, _asdict, _make, pickling and pattern matching."""
    import pickle
    from typing import NamedTuple

    class Name(NamedTuple):  # the reference: S.Name as typing.NamedTuple builds it
        name: str
        kind: str
        value: object = None

    for make in (Name, S.Name):
        _behaves_as_a_namedtuple(make)
    c = S.ClassIR("b", "std.b", (), (), (), None, Span(None, 0, 0, 1, 1, 1, 1))
    assert c.name == "b" and pickle.loads(pickle.dumps(c)) == c and type(pickle.loads(pickle.dumps(c))) is S.ClassIR
    assert S.Expr == S.Const | S.Name | S.BinOp | S.Neg | S.Compare | S.BoolOp | S.Not | S.Index | S.TupleExpr \
        | S.Builtin | S.Apply
    # built from this module's code, not from source compiled at import (namedtuple's __new__ is "<string>"'s)
    assert {cls.__new__.__code__.co_filename for cls in (S.Const, S.Assign, S.ClassIR, S.StructureIR)} == {S.__file__}


def _behaves_as_a_namedtuple(make: Any) -> None:
    n = make("a.b", kind="config")
    assert n == ("a.b", "config", None) and hash(n) == hash(("a.b", "config", None)) and issubclass(make, tuple)
    assert repr(n).endswith("Name(name='a.b', kind='config', value=None)")
    assert make._fields == ("name", "kind", "value") and make._field_defaults == {"value": None}
    assert n._replace(value=3) == ("a.b", "config", 3) and n._asdict() == {"name": "a.b", "kind": "config",
                                                                            "value": None}
    assert make._make(["x", "y", 1]).value == 1 and make.__match_args__ == ("name", "kind", "value")
    for args, kwargs in ((("x",), {}), (("x", "y", 1, 2), {}), (("x", "y"), {"kind": "z"}),
                         (("x", "y"), {"other": 1})):
        with pytest.raises(TypeError):
            make(*args, **kwargs)
    with pytest.raises(ValueError):
        n._replace(other=1)
    with pytest.raises(AttributeError):
        n.name = "c"
    match n:
        case make(name, kind="config"):
            assert name == "a.b"
        case _:
            raise AssertionError(n)
