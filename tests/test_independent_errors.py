"""Independent errors are all reported, each with notes that concern it (issue 15, diagnostics)."""

from __future__ import annotations

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile

_SPEC = """msl 1
import std.transformer

model m {{
  modality text -> text
  task generation
  objective autoregressive
  {constraints}
  architecture transformer.decoder {{
    layers = {layers}
    d_model = 256
    mlp = swiglu(hiden = 512)
  }}
}}
"""


def _diags(text: str) -> list:  # type: ignore[type-arg]
    comp = compile_source(SourceFile("m.msl", text))
    return list(comp.bag.items)


def test_typo_in_keyword_argument_has_no_unrelated_note() -> None:
    """`std.layers.swiglu` mentions `layers` only as part of a dotted name: no "`layers` is set here" note."""
    (d,) = [d for d in _diags(_SPEC.format(constraints="constraints { params <= 30M }", layers="4"))
            if d.severity == "error"]
    assert d.code == "E204" and "hiden" in d.message
    assert not any("`layers` is set here" in n.message for n in d.notes)
    assert d.hint is not None and "hidden" in d.hint


def test_open_dim_without_budget_does_not_hide_a_typo() -> None:
    """E402 (`layers` open, no budget) and the E204 typo elsewhere are both reported."""
    codes = [d.code for d in _diags(_SPEC.format(constraints="", layers="?")) if d.severity == "error"]
    assert sorted(codes) == ["E204", "E402"]


def test_open_dim_without_budget_alone_is_one_error() -> None:
    """The probe behind the E402 adds nothing when the rest of the spec is sound."""
    text = _SPEC.format(constraints="", layers="?").replace("mlp = swiglu(hiden = 512)", "mlp = swiglu(hidden = 512)")
    codes = [d.code for d in _diags(text) if d.severity == "error"]
    assert codes == ["E402"]
