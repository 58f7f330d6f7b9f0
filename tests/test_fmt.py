"""`metagenc fmt`: canonical layout, comments kept, idempotent, meaning preserved, --check/--diff, errors refused."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT

from metagen_compiler import cli
from metagen_compiler.diagnostics import DiagnosticBag
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax.ast import dump
from metagen_compiler.syntax.fmt import WIDTH, FormatError, format_text, main
from metagen_compiler.syntax.parser import parse_msl

STDLIB = sorted((ROOT / "stdlib").glob("*.msl"))
FILES = EXAMPLES + STDLIB
IDS = [f"{p.parent.name}-{p.stem}" for p in FILES]

UGLY = """\
# header comment


msl 1
import std.layers;import std.transformer as tr   # trailing on imports
block   b ( a : int=3 multiple_of 2 in 1 .. 4 , c:{x,y}=x, ) {   # after brace
    input x ; let z = - a**2
  # own line before assign
  q,k=(x)>>l:repeat(2)f(1,k=2)>>g   # trailing
  if a { return x } else {
     return -(x)  # in else
  }
  y = x >> foo(1,
               2)   # after args
       >> bar
  # before close
}
preset p:tr.decoder{a=1;b=2}
model m {
  modality text->text ; task t { a = 1 }
  constraints { params<=3M on d ; latency < 20ms on edge}
  metadata { g { a = [1,2,] }    data = "x\\\\y" }


  architecture tr.decoder   # arch
}
# end comment
"""

CANONICAL = """\
# header comment

msl 1
import std.layers
import std.transformer as tr  # trailing on imports

block b(a: int = 3 multiple_of 2 in 1..4, c: {x, y} = x) {  # after brace
  input x; let z = -a ** 2
  # own line before assign
  q, k = (x) >> l: repeat(2) f(1, k = 2) >> g  # trailing
  if a {
    return x
  } else {
    return -(x)  # in else
  }
  y = x >> foo(1,
               2)  # after args
        >> bar
  # before close
}

preset p : tr.decoder { a = 1; b = 2 }

model m {
  modality text -> text; task t { a = 1 }
  constraints { params <= 3M on d; latency < 20ms on edge }
  metadata {
    g { a = [1, 2] }
    data = "x\\\\y"
  }

  architecture tr.decoder  # arch
}

# end comment
"""


def ast_text(text: str) -> str:
    """The AST dump with source positions left out: what the program means."""
    module = parse_msl(SourceFile("f.msl", text), DiagnosticBag())
    assert module is not None
    return re.sub(r" @\d+:\d+", "", dump(module))


def comments(text: str) -> list[str]:
    return [c.rstrip() for c in re.findall(r"#[^\n]*", re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', text))]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_example_and_stdlib_file_is_formatted(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert format_text(text, str(path)) == text, f"run: metagenc fmt {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_formatting_keeps_meaning_and_comments_and_is_idempotent(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    once = format_text(text, str(path))
    assert format_text(once, str(path)) == once
    assert ast_text(once) == ast_text(text)
    assert comments(once) == comments(text)


def test_canonical_layout_of_a_messy_file() -> None:
    assert format_text(UGLY) == CANONICAL
    assert format_text(CANONICAL) == CANONICAL
    assert ast_text(CANONICAL) == ast_text(UGLY)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_layout_does_not_depend_on_spacing_or_semicolons(path: Path) -> None:
    """Re-indented, re-spaced, with `;` at line ends: the same canonical text comes out."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    messy = []
    for i, ln in enumerate(lines):
        code = ln.strip()
        if "#" in code or '"' in code:
            messy.append(code)
            continue
        code = code.replace(", ", " ,  ").replace(" = ", "=").replace("(", " ( ")
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        semi = code and not code.endswith(("{", ",", "}")) and not nxt.startswith(">>") and not code.startswith("msl")
        messy.append("    " + code + ("   ;" if semi else ""))
    assert format_text("\n".join(messy)) == format_text(text)


def test_comments_in_every_place_survive() -> None:
    text = """\
# file
family f(a: int,  # first
  # own
  b: int = 2) {  # brace
  # only a comment
}
model m { constraints {
  # none yet
}
task t {} }  # after
# eof"""
    out = format_text(text)
    assert comments(out) == comments(text)
    assert out == """\
# file
family f(a: int,  # first
         # own
         b: int = 2) {  # brace
  # only a comment
}

model m {
  constraints {
    # none yet
  }
  task t {}
}  # after

# eof
"""
    assert format_text(out) == out


def test_long_headers_and_pipes_are_wrapped() -> None:
    text = (
        "block very_long_block_name(d_model: int, heads: int, kv_heads: int = heads, causal: bool = false, "
        "rope: bool = false, bias: bool = true, extra_parameter: int = 4) {\n  input x\n"
        "  y = x >> c_attn: linear(d_model, 3 * d_model, bias) >> split(3) >> something_long: some_block(d_model, "
        "heads, kv_heads) >> another_block(d_model) >> final_projection: linear(d_model, d_model)\n  return y\n}\n"
    )
    out = format_text(text)
    assert all(len(line) <= WIDTH for line in out.split("\n")), out
    assert "\n                           bias: bool = true" in out  # aligned after `(`
    assert "\n        >> " in out  # aligned under the first `>>`
    assert format_text(out) == out
    assert ast_text(out) == ast_text(text)


def test_numbers_and_strings_keep_their_spelling() -> None:
    text = 'device d {\n  fp32 = 82.6e12; eps = 0.000001; memory = 24GB; name = "a\\tb"\n}\n'
    assert format_text(text) == text


def test_syntax_errors_are_never_formatted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = "model m {\n  task = generation\n"
    with pytest.raises(FormatError) as e:
        format_text(bad, "bad.msl")
    assert e.value.diagnostics and all(d.code.startswith("E0") for d in e.value.diagnostics)
    f = tmp_path / "bad.msl"
    f.write_text(bad)
    assert main([str(f)]) == 1
    assert f.read_text() == bad
    err = capsys.readouterr().err
    assert "bad.msl:2:8: error[E001]" in err and "has syntax errors" in err


def test_check_reports_files_that_would_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, ugly = tmp_path / "good.msl", tmp_path / "ugly.msl"
    good.write_text(CANONICAL)
    ugly.write_text(UGLY)
    assert main(["--check", str(good)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["--check", str(good), str(ugly)]) == 1
    assert capsys.readouterr().out == f"would reformat {ugly}\n"
    assert ugly.read_text() == UGLY


def test_diff_prints_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ugly = tmp_path / "ugly.msl"
    ugly.write_text(UGLY)
    assert main(["--diff", str(ugly)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"--- {ugly}\n+++ {ugly} (formatted)\n")
    assert "+preset p : tr.decoder { a = 1; b = 2 }" in out
    assert ugly.read_text() == UGLY


def test_writes_in_place_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sub").mkdir()
    ugly = tmp_path / "sub" / "ugly.msl"
    ugly.write_text(UGLY)
    assert cli.main(["fmt", str(tmp_path)]) == 0  # a folder: every .msl file below it
    assert ugly.read_text() == CANONICAL
    assert capsys.readouterr().out == f"reformatted {ugly}\n"
    assert cli.main(["fmt", "--check", str(ugly)]) == 0


def test_stdin_to_stdout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(UGLY))
    assert main(["-"]) == 0
    assert capsys.readouterr().out == CANONICAL


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: metagenc fmt" in capsys.readouterr().err
