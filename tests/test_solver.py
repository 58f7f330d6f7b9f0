"""Dimension solving: fills the budget, respects declared constraints, names what binds."""

from __future__ import annotations

from pathlib import Path

import pytest

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile

TEMPLATE = """msl 1
import std.transformer
model m {{
  modality text -> text
  task generation
  constraints {{ params <= {budget}; context = 1024 }}
  architecture transformer.decoder {{
    layers = ?
    d_model = ? multiple_of 64
    heads = d_model / 64
    {extra}
  }}
}}
"""


def solve(budget: str, extra: str = ""):  # type: ignore[no-untyped-def]
    comp = compile_source(SourceFile("m.msl", TEMPLATE.format(budget=budget, extra=extra)))
    return comp


@pytest.mark.parametrize("budget,limit", [("1M", 1e6), ("10M", 1e7), ("124M", 124e6), ("1B", 1e9), ("8B", 8e9)])
def test_budget_is_filled_to_98_percent(budget: str, limit: float) -> None:
    extra = "vocab = 256" if budget == "1M" else ""
    comp = solve(budget, extra)
    assert not comp.bag.has_errors, comp.bag.items
    params = comp.graph.g.graph["estimates"]["params"]
    assert 0.98 * limit <= params <= limit
    dims = comp.spec.dims
    assert dims["d_model"] % 64 == 0 and dims["d_model"] % dims["heads"] == 0
    assert "params" in comp.spec.solve.binding


def test_solution_is_deterministic() -> None:
    a = solve("50M").spec.dims
    b = solve("50M").spec.dims
    assert a == b


def test_declared_range_binds() -> None:
    src = TEMPLATE.format(budget="1B", extra="").replace("layers = ?", "layers = ? in 1..4")
    comp = compile_source(SourceFile("m.msl", src))
    assert not comp.bag.has_errors
    assert comp.spec.dims["layers"] <= 4


def test_infeasible_budget_names_the_binding_constraint() -> None:
    comp = solve("100k")
    errs = [d for d in comp.bag.errors if d.code == "E401"]
    assert errs and "params" in " ".join(n.message for n in errs[0].notes)
    assert errs[0].span.line == 6


def test_open_dims_without_budget_is_an_error() -> None:
    src = TEMPLATE.format(budget="1M", extra="").replace("params <= 1M; ", "")
    comp = compile_source(SourceFile("m.msl", src))
    assert [d.code for d in comp.bag.errors] == ["E402"]


def test_minimum_budget_is_respected() -> None:
    src = TEMPLATE.format(budget="200M", extra="").replace("params <= 200M;", "params <= 200M; params >= 150M;")
    comp = compile_source(SourceFile("m.msl", src))
    assert not comp.bag.has_errors
    assert comp.graph.g.graph["estimates"]["params"] >= 150e6


def test_examples_dir_exists() -> None:
    assert (Path(__file__).parent.parent / "examples").is_dir()
