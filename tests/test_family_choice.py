"""A family left open among candidates, `architecture ? in {transformer.decoder, ssm.s4d} { ... }` (issue 19):
parsing and formatting, the diagnostics of a plain compile, the search space (the family a categorical dimension,
each family's own holes conditional on it), an estimate-only search whose candidates cover both families, and the
filled specs, which compile. The YAML spelling is `family: [transformer, ssm]`."""

from __future__ import annotations

import json
from pathlib import Path

import optuna  # the test extra installs it (pip install -e ".[test]")
import pytest

from metagen_compiler.cli import main as cli_main
from metagen_compiler.compilation import Options
from metagen_compiler.diagnostics import DiagnosticBag
from metagen_compiler.driver import compile_source
from metagen_compiler.search.command import main as search_main
from metagen_compiler.search.space import (
    FAMILY,
    active_dims,
    compile_candidate,
    filled_text,
    read_space,
    suggest_values,
)
from metagen_compiler.semantics.program import read_source
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.fmt import format_text
from metagen_compiler.syntax.parser import parse_msl

SPEC = """msl 1
import std.transformer
import std.ssm

model story {{
  modality text -> text
  task generation
  objective autoregressive
  constraints {{ params <= {budget}; context = 256 }}
  architecture ? in {{{families}}} {{
    vocab = 4000
{fields}
  }}
}}
"""
FIELDS = "    layers = ? in 2..6\n    d_model = ? in 64..512 multiple_of 64"


def _spec(families: str = "transformer.decoder, ssm.s4d", fields: str = FIELDS, budget: str = "10M") -> str:
    return SPEC.format(families=families, fields=fields, budget=budget)


def _diagnostics(text: str) -> list[tuple[str, str]]:
    return [(d.code, d.message) for d in compile_source(SourceFile("m.msl", text)).bag.sorted()]


def _write(tmp_path: Path, text: str, name: str = "story.msl") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- parse and format
def test_parse_keeps_the_candidates_in_order() -> None:
    bag = DiagnosticBag()
    module = parse_msl(SourceFile("m.msl", _spec()), bag)
    assert module is not None and not bag.items
    arch = module.models[0].architecture
    assert arch is not None and arch.open
    assert [n.dotted for n in arch.choices] == ["transformer.decoder", "ssm.s4d"]
    assert arch.family.dotted == "transformer.decoder"  # the first candidate, for tools that want one name
    assert arch.choice_span is not None and _spec()[arch.choice_span.start:arch.choice_span.end] == \
        "? in {transformer.decoder, ssm.s4d}"
    assert "choices:" in A.dump(module)
    closed = parse_msl(SourceFile("m.msl", _spec().replace("? in {transformer.decoder, ssm.s4d}",
                                                           "ssm.s4d")), bag)
    assert closed is not None and not closed.models[0].architecture.open  # type: ignore[union-attr]


def test_format_round_trip() -> None:
    messy = _spec().replace("? in {transformer.decoder, ssm.s4d}", "?   in{ transformer.decoder ,ssm.s4d,}")
    out = format_text(messy, "m.msl")
    assert "architecture ? in {transformer.decoder, ssm.s4d} {" in out
    assert format_text(out, "m.msl") == out
    bag = DiagnosticBag()
    a, b = parse_msl(SourceFile("m.msl", messy), bag), parse_msl(SourceFile("m.msl", out), bag)
    assert a is not None and b is not None and not bag.items
    assert A.dump(a).count("Name @") == A.dump(b).count("Name @")
    assert [n.dotted for n in b.models[0].architecture.choices] == ["transformer.decoder", "ssm.s4d"]  # type: ignore[union-attr]


# ---------------------------------------------------------------- diagnostics
def test_a_plain_compile_says_to_search() -> None:
    (diag,) = compile_source(SourceFile("m.msl", _spec())).bag.sorted()
    assert diag.code == "E215" and "left open among transformer.decoder, ssm.s4d" in diag.message
    assert diag.hint is not None and "metagenc search" in diag.hint and "architecture transformer.decoder" in diag.hint
    assert diag.span is not None and (diag.span.line, diag.span.col) == (10, 16)


def test_the_command_line_reports_it_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _spec())
    assert cli_main([str(path), "-o", str(tmp_path / "out"), "--backend", "none"]) == 1
    err = capsys.readouterr().err
    assert "error[E215]" in err and "Traceback" not in err and "metagenc search" in err


@pytest.mark.parametrize(("families", "fields", "want"), [
    ("transformer.decoder, ssm.s4x", FIELDS, [("E106", "unknown architecture family `ssm.s4x`")]),
    ("transformer.decoder, ssm.s4d, transformer.decoder", FIELDS,
     [("E214", "`transformer.decoder` is listed twice in the choice of family")]),
    ("", FIELDS, [("E213", "the choice of family lists no family")]),
    ("transformer.decoder, ssm.s4d", FIELDS + "\n    wibble = 3", [("E207", "no candidate family has a parameter `wibble`")]),
    ("transformer.decoder, ssm.s4d", FIELDS + "\n    heads = 4",
     [("E207", "`heads` has a value, but candidate family `ssm.s4d` has no parameter `heads`")]),
])
def test_bad_choices_of_family(families: str, fields: str, want: list[tuple[str, str]]) -> None:
    assert _diagnostics(_spec(families, fields)) == want


def test_a_hole_only_some_candidates_take_is_allowed() -> None:
    codes = [c for c, _ in _diagnostics(_spec(fields=FIELDS + "\n    heads = ? in {2, 4}\n    d_state = ? in {16, 32}"))]
    assert codes == ["E215"]


def test_a_bad_candidate_stops_the_search_with_the_diagnostic(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, _spec("transformer.decoder, ssm.s4x"))
    assert search_main([str(path), "-o", str(tmp_path / "out"), "--estimate-only", "--trials", "2"]) == 1
    err = capsys.readouterr().err
    assert "error[E106]" in err and "E215" not in err and "Traceback" not in err


# ---------------------------------------------------------------- the search space
def test_the_family_is_a_dimension_and_each_family_has_its_own(tmp_path: Path) -> None:
    fields = FIELDS + "\n    heads = ? in {2, 4}\n    d_state = ? in {16, 32}"
    path = _write(tmp_path, _spec(fields=fields, budget="100M"))
    source = read_source(path, display=str(path))
    space = read_space(source, Options())
    dims = {d.key: d for d in space.dims}
    assert space.dims[0].name == FAMILY and space.dims[0].choices == ("transformer.decoder", "ssm.s4d")
    assert dims["layers"].families == ("transformer.decoder", "ssm.s4d")  # the same domain: one dimension
    assert dims["heads"].families == ("transformer.decoder",) and dims["d_state"].families == ("ssm.s4d",)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(16):
        trial = study.ask()
        values = suggest_values(trial, space)
        fam = values[FAMILY]
        seen.add(fam)
        assert ("heads" in values) == (fam == "transformer.decoder") and ("d_state" in values) == (fam == "ssm.s4d")
        comp = compile_candidate(source, Options(), space, values)
        assert not comp.bag.has_errors, comp.bag.items
        assert comp.spec is not None and comp.spec.family.qualname == f"std.{fam}"
        study.tell(trial, 0.0)
    assert seen == {"transformer.decoder", "ssm.s4d"}

    text = filled_text(source, space, {FAMILY: "ssm.s4d", "layers": 3, "d_model": 128, "d_state": 16})
    assert "architecture ssm.s4d {" in text and "heads" not in text and "d_state = 16" in text
    comp = compile_source(SourceFile("f.msl", text))
    assert not comp.bag.has_errors and comp.spec is not None and comp.spec.dims["d_state"] == 16


def test_family_holes_with_different_domains_are_dimensions_of_their_own(tmp_path: Path) -> None:
    path = _write(tmp_path, _spec(fields="    d_model = ? in 64..256 multiple_of 64"))  # `layers`: each family's own
    space = read_space(read_source(path, display=str(path)), Options())
    keys = {d.key: d for d in space.dims}
    assert keys["transformer.decoder.layers"].domain == range(1, 257)
    assert keys["ssm.s4d.layers"].domain == range(1, 65)
    assert keys["transformer.decoder.layers"].name == "layers" and "layers" not in keys


# ---------------------------------------------------------------- an estimate-only search
def test_estimate_only_search_over_two_families(tmp_path: Path) -> None:
    """Two families of the same task; the trials cover both, the front holds only feasible candidates (params under
    the budget), each reports its family, and each candidate's filled spec compiles as written."""
    path = _write(tmp_path, _spec(budget="5M"))
    out = tmp_path / "out"
    assert search_main([str(path), "-o", str(out), "--estimate-only", "--trials", "24", "--seed", "0",
                        "--backend", "none", "--no-plots", "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["values"][FAMILY] for r in rows if r["status"] == "ok"} == {"transformer.decoder", "ssm.s4d"}
    assert any(r["status"] == "infeasible" for r in rows)  # 6 layers of 512 wide break 5M
    pareto = json.loads((out / "pareto.json").read_text(encoding="utf-8"))
    assert pareto["space"][FAMILY] == {"choices": ["transformer.decoder", "ssm.s4d"]}
    assert pareto["candidates"]
    for c in pareto["candidates"]:
        assert c["family"] == c["values"][FAMILY] and c["metrics"]["params"] <= 5e6
        assert all(v <= 0 for v in c["constraints"].values())
        spec = out / c["folder"] / "story.msl"
        text = spec.read_text(encoding="utf-8")
        assert f"architecture {c['family']} {{" in text and "?" not in text
        assert cli_main([str(spec), "--check"]) == 0


def test_yaml_lists_the_candidate_families(tmp_path: Path) -> None:
    yaml_text = """metagen_version: "1.0"
name: story
modality:
  inputs: [text]
  outputs: [text]
task:
  type: generation
constraints:
  parameter_budget:
    max: "30M"
architecture:
  family: [transformer, ssm]
  vocab: 8000
  d_model: "?"
  heads: "?"
"""
    path = _write(tmp_path, yaml_text, "story.yaml")
    comp = compile_source(read_source(path, display=str(path)))
    (diag,) = comp.bag.sorted()
    assert diag.code == "E215" and diag.hint is not None and "`family: transformer`" in diag.hint
    source = read_source(path, display=str(path))
    space = read_space(source, Options())
    assert space.dims[0].choices == ("transformer", "ssm")
    values: dict[str, object] = {FAMILY: "ssm"}
    for d in active_dims(space, values)[1:]:
        values[d.key] = d.choices[0] if d.categorical else d.domain[1]
    assert not any(d.name == "heads" for d in active_dims(space, values))  # the transformer's only
    text = filled_text(source, space, values)
    assert "family: ssm" in text and "heads" not in text
    comp = compile_source(SourceFile(str(path), text))
    assert not comp.bag.has_errors, comp.bag.items


def test_the_family_alone_is_a_space(tmp_path: Path) -> None:
    """Every field has a value: the family is the only dimension, and each candidate compiles."""
    path = _write(tmp_path, _spec(fields="    layers = 2\n    d_model = 128"))
    source = read_source(path, display=str(path))
    space = read_space(source, Options())
    assert [d.key for d in space.dims] == [FAMILY]
    for fam in ("transformer.decoder", "ssm.s4d"):
        comp = compile_candidate(source, Options(), space, {FAMILY: fam})
        assert not comp.bag.has_errors and comp.spec is not None and comp.spec.family.qualname == f"std.{fam}"
