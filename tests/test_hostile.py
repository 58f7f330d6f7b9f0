"""Hostile input (issues 15 and 21): what a fuzzer found, each as a spec that once crashed the compiler
(an internal error, exit 3, or a traceback) or compiled into a model.py that could not be built, and
now gets a diagnostic with a position.

The broken-spec corpus (tests/broken/msl/120_* ... 132_*) holds the readable cases with their
rendered diagnostics; these tests hold the ones the corpus format does not fit (5,000-digit
literals, files that are not UTF-8, expressions 500 deep) and check each fix more precisely.
tests/test_fuzz.py runs the mutator that found them.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from metagen_compiler.compilation import Compilation, Options
from metagen_compiler.diagnostics import Diagnostic, render_text
from metagen_compiler.driver import collect_diagnostics, compile_model_set
from metagen_compiler.semantics.limits import MAX_INT as LARGEST  # the largest integer of the language
from metagen_compiler.span import SourceFile

ROOT = Path(__file__).resolve().parent.parent
LARGEST_TEXT = f"{LARGEST:,}"

DECODER = """msl 1
import std.transformer
model m {{
  modality text -> text
  task generation
  constraints {{ {constraints} }}
  architecture transformer.decoder {{
    vocab = {vocab}; layers = {layers}; d_model = {d_model}; heads = 2; context = 64
    {extra}
  }}
}}
"""


def _decoder(vocab: str = "100", layers: str = "2", d_model: str = "64", constraints: str = "", extra: str = "") -> str:
    return DECODER.format(vocab=vocab, layers=layers, d_model=d_model, constraints=constraints, extra=extra)


def _compile(text: str, path: str = "m.msl", search: tuple[Path, ...] = ()) -> list[Compilation]:
    return compile_model_set(SourceFile(path, text), Options(search_paths=search))


def _diags(text: str, path: str = "m.msl", search: tuple[Path, ...] = ()) -> list[Diagnostic]:
    """The diagnostics of a compile that must have refused the input cleanly: no internal error, and every
    diagnostic with a position."""
    diags = collect_diagnostics(_compile(text, path, search))
    assert diags, "the input compiled"
    assert not [d for d in diags if d.code == "I001"], render_text(diags)
    assert all(d.span is not None and d.span.file is not None for d in diags), render_text(diags)
    return diags


def _one(text: str, code: str, path: str = "m.msl", search: tuple[Path, ...] = ()) -> Diagnostic:
    diags = _diags(text, path, search)
    found = [d for d in diags if d.code == code]
    assert found, render_text(diags)
    return found[0]


def _emit(text: str, backends: tuple[str, ...] = ("pytorch", "latex")) -> dict[str, str | bytes]:
    """Compile without errors and run the backends in memory."""
    from metagen_compiler.cli import write_outputs

    comps = _compile(text)
    diags = collect_diagnostics(comps)
    assert not any(c.bag.has_errors for c in comps), render_text(diags)
    _target, files = write_outputs(comps[0], Path("unused"), list(backends))
    return files


def _import_model(source: str) -> types.ModuleType:
    """Execute a generated model.py as a module (classes and Config defined, nothing built)."""
    mod = types.ModuleType("hostile_model")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    try:
        exec(compile(source, "model.py", "exec"), mod.__dict__)  # noqa: S102 - our own generated code
    finally:
        del sys.modules[mod.__name__]
    return mod


# ---------------------------------------------------------------- huge numbers (OverflowError, ValueError)
@pytest.mark.parametrize("literal", ["9" * 5000, "1" + "0" * 400, "9" * 30, str(LARGEST + 1)])
@pytest.mark.parametrize("where", ["vocab", "d_model", "layers", "budget"])
def test_huge_integer_literals_are_diagnosed_at_the_literal(literal: str, where: str) -> None:
    # was: ValueError in parser.number (past 4,300 digits), OverflowError in estimate (400 digits),
    # OverflowError in constraints.run (a budget past the float range)
    kw = {"constraints": f"params <= {literal}"} if where == "budget" else {where: literal}
    d = _one(_decoder(**kw), "E009")
    assert LARGEST_TEXT in d.message and "2**53" in d.message
    assert d.span is not None and d.span.end - d.span.start == len(literal)  # the caret spans the literal


def test_the_largest_integer_itself_is_accepted() -> None:
    comps = _compile(_decoder(constraints=f"params <= {LARGEST}"))
    assert not any(c.bag.has_errors for c in comps), render_text(collect_diagnostics(comps))


@pytest.mark.parametrize("expr, where", [
    ("1e30", "vocab"), ("2**62", "vocab"), ("2**63", "vocab"), ("2**64", "d_model"), ("10**400", "vocab"),
    ("2**2**2**2**2", "vocab"), ("1e30", "d_model"), ("2**53 + 1", "vocab"), ("9007199254740992 * 2", "vocab"),
])
def test_dims_past_the_largest_integer_are_diagnosed(expr: str, where: str) -> None:
    # issue 21: 1e30, 2**62 and 2**63 passed as integer dims and example_inputs overflowed int64;
    # 2**2**2**2**2 (2**65536) took seconds to compute before anything looked at it
    t0 = time.perf_counter()
    d = _one(_decoder(**{where: expr}), "E009")
    assert time.perf_counter() - t0 < 30
    assert LARGEST_TEXT in d.message
    assert d.span is not None and d.span.line == 8


def test_float_dimension_at_the_limit_reads_the_value() -> None:
    d = _one(_decoder(vocab="1e30"), "E009")
    assert "`vocab` is 1e+30" in d.message


@pytest.mark.parametrize("expr, code", [
    ("1e999", "E009"), ("1e308 * 10", "E009"), ("1e300 ** 2", "E009"), ("-1e999", "E009"),
    ("(-8) ** 0.5", "E201"), ("0 ** -1", "E210"), ("round(1e300 * 1e300)", "E009"), ("sqrt(-1)", "E204"),
    ("round_up(5, 0)", "E204"), ("(1/3) ** 100000", "E009"),
])
def test_float_arithmetic_past_the_float_range_is_diagnosed(expr: str, code: str) -> None:
    # was: `inf` written into model.py (NameError at import), complex numbers, OverflowError, ZeroDivisionError
    d = _one(_decoder(extra=f"rope_theta = {expr}"), code)
    assert d.span is not None and d.span.line == 9


@pytest.mark.parametrize("value, code", [(".inf", "E009"), ("-.inf", "E009"), ("1e999", "E009"), (".nan", "E201")])
def test_non_finite_floats_in_yaml_are_diagnosed(value: str, code: str) -> None:
    text = (ROOT / "tests" / "seeds_yaml" / "text_llm.yaml").read_text(encoding="utf-8")
    d = _one(text.rstrip("\n") + f"\n  rope_theta: {value}\n", code, "s.yaml")
    assert d.span is not None and d.span.line == 15


def test_quantities_past_the_limit_are_diagnosed() -> None:
    d = _one(_decoder(constraints="params <= 99999999999T"), "E009")
    assert LARGEST_TEXT in d.message
    d = _one(_decoder(constraints="memory <= " + "9" * 400 + "GB"), "E009")
    assert "1.8e308" in d.message


def test_estimates_and_constraints_take_any_integer() -> None:
    """The passes past the solver hold even where a count passes the float range (a budget or a count
    from a library caller that bypassed the parser)."""
    from metagen_compiler.passes.constraints import _fmt, _real

    assert _real(10**400) == math.inf and _real(-(10**400)) == -math.inf
    assert _fmt("params", 10**400) == "more than 1.8e308"
    assert _fmt("params", 124_439_808) == "124,439,808"


# ---------------------------------------------------------------- non-finite floats (NameError in model.py)
def test_inf_never_reaches_model_py() -> None:
    # `rope_theta = 1e999` compiled, and model.py failed at import: NameError: name 'inf' is not defined
    d = _one(_decoder(extra="rope_theta = 1e999"), "E009")
    assert "1.8e308" in d.message
    # a finite float of any size is written so that it reads back
    files = _emit(_decoder(extra="rope_theta = 1e300"))
    source = files["model.py"]
    assert isinstance(source, str) and "1e+300" in source
    pytest.importorskip("torch")
    assert _import_model(source).Config().rope_theta == 1e300


def test_inf_as_a_name_is_undefined() -> None:
    d = _one(_decoder(extra="rope_theta = inf"), "E103")
    assert "inf" in d.message


# ---------------------------------------------------------------- nesting (RecursionError)
@pytest.mark.parametrize("deep", [
    "-" * 500 + "1", "[" * 500 + "1" + "]" * 500, "max(" * 500 + "1" + ")" * 500, "1" + " + 1" * 3000,
    "not " * 500 + "true", "(-(" * 500 + "1" + "))" * 500,
])
def test_expressions_nested_500_deep_are_diagnosed(deep: str) -> None:
    # was: RecursionError out of the parser's transformer, a traceback
    t0 = time.perf_counter()
    d = _one(_decoder(extra=f"rope_theta = {deep}"), "E009")
    assert time.perf_counter() - t0 < 30
    assert "100 levels" in d.message


def test_nesting_within_the_limit_compiles() -> None:
    comps = _compile(_decoder(extra="rope_theta = " + "-" * 40 + "10000.0"))
    assert not any(c.bag.has_errors for c in comps), render_text(collect_diagnostics(comps))


def test_syntax_errors_in_a_deep_nest_take_linear_time() -> None:
    # the error recovery looked up tokens by scanning the whole file for every error: 2,000 unbalanced
    # parentheses in a version header took minutes
    text = "msl " + "(-(" * 2000 + "1" + "))" * 2000 + "\nimport std.transformer\n"
    t0 = time.perf_counter()
    d = _one(text, "E001")
    assert time.perf_counter() - t0 < 20
    assert d.span is not None and d.span.line == 1


# ---------------------------------------------------------------- imports (UnicodeDecodeError, IndexError)
def test_an_import_that_is_not_utf8_is_diagnosed(tmp_path: Path) -> None:
    (tmp_path / "latin.msl").write_bytes("msl 1\n# caf\xe9\nblock b() { input x; return x }\n".encode("latin-1"))
    text = "msl 1\nimport std.presets\nimport latin\nmodel m { modality text -> text\n task generation\n architecture gpt2 }\n"
    d = _one(text, "E004", path=str(tmp_path / "m.msl"))
    assert "not UTF-8" in d.message and "latin" in d.message
    assert d.span is not None and d.span.line == 3


def test_import_std_alone_is_diagnosed() -> None:
    d = _one("msl 1\nimport std\nmodel m { modality text -> text\n task generation\n architecture gpt2 }\n", "E101")
    assert d.hint is not None and "std.transformer" in d.hint


def test_checks_run_on_imported_modules(tmp_path: Path) -> None:
    # unknown parameter types, duplicate labels, ... were checked in the root file only
    (tmp_path / "helpers.msl").write_text(
        "msl 1\nblock widen(d: integer) {\n  input x\n  return x >> a: linear(d, d) >> a: linear(d, d)\n}\n",
        encoding="utf-8")
    text = "msl 1\nimport std.presets\nimport helpers\nmodel m { modality text -> text\n task generation\n architecture gpt2 }\n"
    diags = _diags(text, path=str(tmp_path / "m.msl"))
    found = {(d.code, Path(d.span.path).name) for d in diags if d.span is not None}
    assert ("E201", "helpers.msl") in found and ("E104", "helpers.msl") in found, render_text(diags)


# ---------------------------------------------------------------- labels (AssertionError in add_op)
TINY = """msl 1
block embed(vocab: int, d_model: int) {{
  input tokens
  return tokens >> wte: embedding(vocab, d_model)
}}
{blocks}
block lm_out(d_model: int, vocab: int) {{
  input x
  return x >> out: linear(d_model, vocab)
}}
family tiny(vocab: int = 100, d_model: int = 16) {{
  encoder text = embed(vocab, d_model)
  backbone = {backbone}
  head generation = lm_out(d_model, vocab)
}}
model m {{
  modality text -> text
  task generation
  architecture tiny
}}
"""


def _tiny(blocks: str = "", backbone: str = "body(d_model)") -> str:
    return TINY.format(blocks=blocks, backbone=backbone)


@pytest.mark.parametrize("body", [
    "return x >> a: linear(d_model, d_model) >> a: linear(d_model, d_model)",
    "return x >> a: gelu >> a: gelu",
    "y = x >> a: linear(d_model, d_model)\n  return y >> a: layernorm(d_model)",
])
def test_a_label_used_twice_is_diagnosed(body: str) -> None:
    d = _one(_tiny(f"block body(d_model: int) {{\n  input x\n  {body}\n}}"), "E104")
    assert "label `a`" in d.message and d.notes and d.notes[0].span is not None


def test_a_label_in_both_branches_of_an_if_is_fine() -> None:
    block = ("block body(d_model: int) {\n  input x\n  if d_model > 8 { y = x >> a: linear(d_model, d_model) }"
             " else { y = x >> a: layernorm(d_model) }\n  return y\n}")
    assert "model.py" in _emit(_tiny(block), ("pytorch",))


def test_the_graph_builder_refuses_a_node_twice_with_a_diagnostic() -> None:
    from metagen_compiler.semantics.elaborate import GraphBuilder
    from metagen_compiler.semantics.values import EvalError
    from metagen_compiler.span import NO_SPAN

    b = GraphBuilder()
    b.add_op("backbone.a", "gelu", {}, [], NO_SPAN, "backbone", 1, None)
    with pytest.raises(EvalError) as e:
        b.add_op("backbone.a", "gelu", {}, [], NO_SPAN, "backbone", 1, None)
    assert e.value.code == "E104"


# ---------------------------------------------------------------- the PyTorch backend (KeyError, AssertionError)
@pytest.mark.parametrize("backbone", ["gelu", "dropout(0.1)", "identity", "relu()"])
def test_a_function_as_a_family_slot_is_diagnosed(backbone: str) -> None:
    # was: KeyError in pytorch/codegen.py _ctor, exit 3
    d = _one(_tiny(backbone=backbone), "E201")
    assert "family slot" in d.message and d.span is not None and d.span.line == 13


def test_a_primitive_with_weights_as_a_slot_still_compiles() -> None:
    files = _emit(_tiny(backbone="layernorm(d_model)"), ("pytorch",))
    assert "nn.LayerNorm" in str(files["model.py"])


def test_a_layer_parameter_named_like_a_primitive_is_diagnosed() -> None:
    # was: AssertionError in pytorch/codegen.py _apply (`x >> gelu` with `gelu` a block passed in)
    blocks = ("block inner(d: int) {\n  input x\n  return x >> l: linear(d, d)\n}\n"
              "block mid(d: int, gelu: layer) {\n  input x\n  return x >> gelu\n}\n"
              "block body(d_model: int) {\n  input x\n  return x >> m: mid(d_model, inner(d = 16))\n}")
    d = _one(_tiny(blocks), "E104")
    assert "`gelu` has the name of a primitive" in d.message


def test_a_block_named_like_a_primitive_is_diagnosed() -> None:
    blocks = "block relu(d: int) {\n  input x\n  return x >> l: linear(d, d)\n}\nblock body(d_model: int) {\n  input x\n  return x\n}"
    assert "block `relu`" in _one(_tiny(blocks), "E104").message


@pytest.mark.parametrize("where", ["block", "family"])
def test_a_layer_value_that_reads_a_parameter_is_diagnosed(where: str) -> None:
    # was: model.py built nn.Linear('d_model', ...) and failed in build_model()
    mix = "block mix(d_model: int, act: layer = gelu) {\n  input x\n  return x >> fc: linear(d_model, d_model) >> a: act\n}\n"
    value = "linear(in_features = d_model, out_features = d_model)"
    if where == "block":
        text = _tiny(mix + f"block body(d_model: int) {{\n  input x\n  return x >> m: mix(d_model, act = {value})\n}}")
    else:
        text = _tiny(mix, backbone=f"mix(d_model, act = {value})")
    d = _one(text, "E201")
    assert "reads `d_model`" in d.message


def test_a_layer_value_with_constant_arguments_builds() -> None:
    mix = "block mix(d_model: int, act: layer = gelu) {\n  input x\n  return x >> fc: linear(d_model, d_model) >> a: act\n}\n"
    files = _emit(_tiny(mix, backbone="mix(d_model, act = linear(in_features = 16, out_features = 16))"), ("pytorch",))
    pytest.importorskip("torch")
    mod = _import_model(str(files["model.py"]))
    model = mod.build_model()
    model(*mod.example_inputs(model, batch_size=1))


def test_a_model_name_starting_with_a_digit_after_underscore_makes_a_class() -> None:
    # `_430ff` is a legal model name; its class was `430ff`, a SyntaxError in model.py
    files = _emit(_decoder().replace("model m ", "model _430ff "), ("pytorch",))
    compile(str(files["model.py"]), "model.py", "exec")


# ---------------------------------------------------------------- the LaTeX backend (IndexError)
def test_a_model_whose_outputs_are_all_unknown_gets_a_paper() -> None:
    # was: IndexError in latex/sections_core.py _words (no output modality left after W001)
    from metagen_backends.latex.sections_core import _words

    assert _words([]) == "none" and _words(["a"]) == "a" and _words(["a", "b", "c"]) == "a, b and c"
    text = _decoder().replace("modality text -> text", "modality text -> taste")
    files = _emit(text, ("latex",))
    assert any("to none for the task" in str(v) for v in files.values())


# ---------------------------------------------------------------- issue 21: what the backends cannot build
def test_a_count_with_a_time_unit_is_diagnosed() -> None:
    d = _one(_decoder(vocab="0ms"), "E202")
    assert "`vocab` takes a whole number, not a time (`0ms`)" in d.message


def test_counts_with_count_units_still_compile() -> None:
    comps = _compile(_decoder(vocab="2k"))
    assert not any(c.bag.has_errors for c in comps), render_text(collect_diagnostics(comps))


def test_an_empty_id_range_is_diagnosed() -> None:
    # `nodes = 0` compiled, and example_inputs failed: random_ expects 'from' to be less than 'to'
    text = (ROOT / "examples" / "gcn_cora.msl").read_text(encoding="utf-8")
    d = _one(text.replace("nodes = ", "nodes = 0 * "), "E205")
    assert "`nodes` is 0" in d.message and "graph_edges" in d.message and "1 or more" in d.message
    d = _one(text.replace("nodes = ", "nodes = -1 * "), "E205")
    assert "`nodes` is -2708" in d.message and "0 or more" in d.message


def test_an_empty_edge_list_is_a_graph() -> None:
    text = (ROOT / "examples" / "gcn_cora.msl").read_text(encoding="utf-8")
    files = _emit(text.replace("edges = ", "edges = 0 * "), ("pytorch",))
    pytest.importorskip("torch")
    mod = _import_model(str(files["model.py"]))
    model = mod.build_model()
    model(*mod.example_inputs(model, batch_size=1))


@pytest.mark.parametrize("extra, what", [("rope_theta = ?", "type float"), ("bias = ?", "type bool"),
                                         ("kv_heads = heads * ?", "`?` stands for a whole value")])
def test_open_dims_are_whole_integer_values(extra: str, what: str) -> None:
    # `rope_theta = ?` was solved as an integer; `bias = ?` failed with "takes true or false, not number `1`"
    d = _one(_decoder(layers="?", constraints="params <= 1M", extra=extra), "E201")
    assert what in d.message


def test_seed_is_validated_by_the_command_line(tmp_path: Path) -> None:
    # `--seed 2**64` reached torch.manual_seed in build_model() and overflowed
    spec = ROOT / "examples" / "gpt2.msl"
    for seed, rc in (("18446744073709551616", 2), ("-1", 2), ("abc", 2), (str(2**63 - 1), 0)):
        r = subprocess.run([sys.executable, "-m", "metagen_compiler.cli", str(spec), "--check", "--seed", seed],
                           check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert r.returncode == rc, (seed, r.stderr)
        if rc == 2:
            assert "--seed" in r.stderr and "Traceback" not in r.stderr


def test_a_tie_to_a_slot_that_does_not_exist_has_a_position() -> None:
    # found by the fuzzer (seed 1): E303 "`identity.proj.weight` names no parameter" had no position
    text = (ROOT / "tests" / "broken" / "msl" / "047_bad_tie.msl").read_text(encoding="utf-8")
    tie = next(line for line in text.splitlines() if line.strip().startswith("tie "))
    target = tie.split()[1]
    d = _one(text.replace(tie, tie.replace(target, "identity." + target.split(".", 1)[1])), "E303")
    assert d.span is not None and d.span.file is not None
