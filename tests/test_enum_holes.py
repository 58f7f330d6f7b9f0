"""Enumerated choices for open values, `? in {a, b}`: parsing, formatting, the solver's default, the search space
(a categorical dimension) and the diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest

from metagen_compiler.compilation import Options
from metagen_compiler.diagnostics import DiagnosticBag
from metagen_compiler.driver import compile_source
from metagen_compiler.ir.spec import dump_spec
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.fmt import format_text
from metagen_compiler.syntax.parser import parse_msl

SPEC = """msl 1
import std.transformer

model tiny {{
  modality text -> text
  task generation
  {constraints}
  architecture transformer.decoder {{
    vocab = 1000; context = 128
    {fields}
  }}
}}
"""
BUDGET = "constraints { params <= 5M }"


def _spec(fields: str, constraints: str = BUDGET) -> str:
    return SPEC.format(fields=fields, constraints=constraints)


def _compile(text: str):  # type: ignore[no-untyped-def]
    return compile_source(SourceFile("m.msl", text))


def _codes(text: str) -> list[str]:
    return [d.code for d in _compile(text).bag.sorted()]


# ---------------------------------------------------------------- parse and format
def test_parse_words_and_numbers() -> None:
    bag = DiagnosticBag()
    text = _spec("norm = ? in {layernorm, rmsnorm}; layers = ? in {2, 4, 8,}; d_model = 64")
    module = parse_msl(SourceFile("m.msl", text), bag)
    assert module is not None and not bag.items
    arch = module.models[0].architecture
    assert arch is not None
    fields = {f.name.name: f for f in arch.fields}
    (norm,) = fields["norm"].constraints
    assert isinstance(norm, A.InSet) and [i.parts for i in norm.items] == [("layernorm",), ("rmsnorm",)]  # type: ignore[union-attr]
    (layers,) = fields["layers"].constraints
    assert isinstance(layers, A.InSet) and [i.value for i in layers.items] == [2, 4, 8]  # type: ignore[union-attr]
    assert "InSet @" in A.dump(module)


def test_an_empty_choice_parses_and_the_checker_reports_it() -> None:
    bag = DiagnosticBag()
    module = parse_msl(SourceFile("m.msl", _spec("norm = ? in {}")), bag)
    assert module is not None and not bag.items
    assert _codes(_spec("norm = ? in {}; layers = 2; d_model = 64")) == ["E213"]


def test_format_round_trip() -> None:
    messy = _spec("layers = ? in { 2,4 , 8, }; norm = ? in {layernorm,rmsnorm}; d_model = ? in {-1}")
    out = format_text(messy)
    assert "    layers = ? in {2, 4, 8}; norm = ? in {layernorm, rmsnorm}; d_model = ? in {-1}\n" in out
    assert format_text(out) == out
    bag = DiagnosticBag()
    a, b = parse_msl(SourceFile("a.msl", messy), bag), parse_msl(SourceFile("b.msl", out), bag)
    assert a is not None and b is not None and a.models == b.models


def test_a_block_parameter_may_declare_a_choice() -> None:
    text = """msl 1

block mixer(width: int = ? in {64, 128}, act: layer = ? in {gelu, relu}) {
  input x
  return x >> linear(width, width) >> act
}
"""
    bag = DiagnosticBag()
    module = parse_msl(SourceFile("m.msl", text), bag)
    assert module is not None and not bag.items
    assert [type(c) for p in module.blocks[0].params for c in p.constraints] == [A.InSet, A.InSet]
    assert format_text(text) == text


# ---------------------------------------------------------------- the solver's default
def test_words_take_the_first_value_and_need_no_budget() -> None:
    comp = _compile(_spec("layers = 2; d_model = 64; norm = ? in {layernorm, rmsnorm}; position = ? in {rope, learned}",
                          constraints=""))
    assert not comp.bag.items, comp.bag.items
    assert comp.spec is not None
    assert str(comp.spec.dims["norm"]).endswith("layernorm") and str(comp.spec.dims["position"]) == "rope"
    assert comp.spec.solve is not None and comp.spec.solve.unknowns == []
    assert comp.spec.solve.first_choices == ["norm", "position"]
    dump = dump_spec(comp.spec)
    assert "norm = layernorm in {layernorm, rmsnorm}    # model" in dump and "  first choice: norm, position\n" in dump


def test_report_and_paper_say_the_first_value_was_taken(tmp_path: Path) -> None:
    import json

    from metagen_compiler.cli import main as metagenc

    src = tmp_path / "m.msl"
    src.write_text(_spec("layers = ? in {2, 4}; d_model = 64; norm = ? in {layernorm, rmsnorm}"), encoding="utf-8")
    assert metagenc([str(src), "-o", str(tmp_path / "out"), "--backend", "latex"]) == 0
    report = json.loads((tmp_path / "out" / "tiny" / "report.json").read_text(encoding="utf-8"))
    assert report["solve"]["unknowns"] == ["layers"] and report["solve"]["first_choices"] == ["norm"]
    tex = (tmp_path / "out" / "tiny" / "paper" / "sections" / "limitations.tex").read_text(encoding="utf-8")
    assert "the compiler took the first value listed" in tex
    swapped = _compile(_spec("layers = 2; d_model = 64; norm = ? in {rmsnorm, layernorm}", constraints=""))
    assert swapped.spec is not None and str(swapped.spec.dims["norm"]).endswith("rmsnorm")


def test_reals_and_booleans_take_the_first_value() -> None:
    comp = _compile(_spec("layers = 2; d_model = 64; bias = ? in {true, false}; rope_theta = ? in {500000.0, 10000.0}",
                          constraints=""))
    assert not comp.bag.items, comp.bag.items
    assert comp.spec is not None and comp.spec.dims["bias"] is True and comp.spec.dims["rope_theta"] == 500000.0


def test_whole_numbers_are_searched_under_the_budget_like_a_range() -> None:
    """A choice of whole numbers gives what the same values as a range give: the budget rule decides, and the
    order written does not matter."""
    as_set = _compile(_spec("layers = ? in {8, 2, 4}; d_model = ? in {256, 64, 128, 192}"))
    as_range = _compile(_spec("layers = ? in 2..8; d_model = ? multiple_of 64 in 64..256"))
    assert not as_set.bag.has_errors and not as_range.bag.has_errors, (as_set.bag.items, as_range.bag.items)
    assert as_set.spec is not None and as_range.spec is not None
    params_set = as_set.graph.g.graph["estimates"]["params"]
    assert params_set <= 5_000_000
    assert as_set.spec.dims["layers"] in (2, 4, 8) and as_set.spec.dims["d_model"] in (64, 128, 192, 256)
    # the range has more points (layers 3, 5, 6, 7): it fills the budget at least as well
    assert as_range.graph.g.graph["estimates"]["params"] >= params_set
    one = _compile(_spec("layers = 2; d_model = ? in {64, 128, 256, 512}"))
    assert one.spec is not None and one.spec.dims["d_model"] == 256  # the largest that fits 5M with vocab 1000


def test_whole_numbers_without_a_budget_are_unsolvable() -> None:
    assert _codes(_spec("layers = ? in {2, 4}; d_model = 64", constraints="")) == ["E402"]


def test_set_overrides_a_choice() -> None:
    comp = compile_source(SourceFile("m.msl", _spec("layers = 2; d_model = 64; norm = ? in {layernorm, rmsnorm}",
                                                    constraints="")),
                          Options(overrides=(("norm", "rmsnorm"),)))
    assert not comp.bag.has_errors, comp.bag.items
    assert comp.spec is not None and str(comp.spec.dims["norm"]).endswith("rmsnorm")


# ---------------------------------------------------------------- diagnostics
@pytest.mark.parametrize("fields,codes", [
    ("layers = 2; d_model = 64; norm = ? in {}", ["E213"]),
    ("layers = 2; d_model = ? in {64, 128, 64}", ["E214"]),
    ("layers = 2; d_model = ? in {64, 64.0}", ["E214"]),
    ("layers = 2; d_model = 64; norm = ? in {layernorm, rmsnorm, layernorm}", ["E214"]),
    ("layers = 2; d_model = ? in {64, wide}", ["E201"]),  # mixed kinds
    ("layers = 2; d_model = ? in {64.5, 128.5}", ["E201"]),  # not whole numbers for an int
    ("layers = 2; d_model = 64; bias = ? in {0, 1}", ["E201"]),
    ("layers = 2; d_model = 64; norm = ? in {1, 2}", ["E201"]),  # a number for a layer
    ("layers = 2; d_model = 64; position = ? in {learned, rotary}", ["E203"]),
    ("layers = 2; d_model = 64; mlp = ? in {swiglu, gelux}", ["E105"]),
    ("layers = 2; d_model = 64; kv_heads = 1 in {1, 2}", ["E201"]),  # a value with a choice
    ("layers = 2; d_model = ? in {64, 128} multiple_of 64", ["E201"]),  # a choice is the whole domain
    ("layers = 2; d_model = 64; rope_theta = ? in {a, b}", ["E201"]),
])
def test_bad_choices_get_diagnostics(fields: str, codes: list[str]) -> None:
    assert _codes(_spec(fields)) == codes


def test_messages_point_at_the_value() -> None:
    text = _spec("layers = 2; d_model = ? in {64, 128, 64}")
    (d,) = _compile(text).bag.sorted()
    assert d.message == "`64` is listed twice in the choice for `d_model`"
    assert d.span is not None and text[d.span.start:d.span.end] == "64" and d.span.start > text.index("128")
    assert d.notes and d.notes[0].message == "first listed here"


# ---------------------------------------------------------------- the search space
def test_search_space_makes_a_categorical_dimension_and_compiles_each_choice(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from metagen_compiler.search.space import compile_candidate, filled_text, read_space, suggest_values
    from metagen_compiler.semantics.program import read_source

    path = tmp_path / "m.msl"
    path.write_text(_spec("layers = ? in {2, 4}; d_model = ? multiple_of 64 in 64..256\n"
                          "    norm = ? in {layernorm, rmsnorm}; bias = ? in {true, false}"), encoding="utf-8")
    source = read_source(path, display=str(path))
    space = read_space(source, Options())
    dims = {d.name: d for d in space.dims}
    assert dims["norm"].categorical and dims["norm"].choices == ("layernorm", "rmsnorm")
    assert dims["layers"].choices == (2, 4) and dims["bias"].choices == (True, False)
    assert not dims["d_model"].categorical and dims["d_model"].domain == range(64, 257, 64)
    assert dims["norm"].describe() == {"choices": ["layernorm", "rmsnorm"]}
    assert dims["d_model"].describe() == {"from": 64, "to": 256, "step": 64}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        values = suggest_values(trial, space)
        assert isinstance(trial.distributions["norm"], optuna.distributions.CategoricalDistribution)
        assert isinstance(trial.distributions["d_model"], optuna.distributions.IntDistribution)
        seen.add(values["norm"])
        study.tell(trial, 0.0)
    assert seen == {"layernorm", "rmsnorm"}

    values = {"layers": 4, "d_model": 128, "norm": "rmsnorm", "bias": False}
    text = filled_text(source, space, values)
    assert "layers = 4; d_model = 128\n    norm = rmsnorm; bias = false\n" in text
    comp = compile_candidate(source, Options(), space, values)
    assert not comp.bag.has_errors, comp.bag.items
    assert comp.spec is not None and str(comp.spec.dims["norm"]).endswith("rmsnorm")
    assert comp.spec.dims["bias"] is False and comp.spec.dims["layers"] == 4
    with pytest.raises(ValueError, match="not one of the choices"):
        dims["norm"].text("groupnorm")
