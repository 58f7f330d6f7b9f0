"""Golden tests for diagnostics: every spec under tests/broken/ is wrong on purpose.

Each file starts with a comment line that says what is wrong and which code it must produce; the
rendered diagnostics are snapshots (tests/__snapshots__/test_broken_specs.ambr), reviewed like code.
Update them with `pytest tests/test_broken_specs.py --snapshot-update`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from metagen_compiler.compilation import Compilation
from metagen_compiler.diagnostics import Diagnostic, Severity, render_text
from metagen_compiler.driver import compile_source
from metagen_compiler.errorcodes import CODES
from metagen_compiler.semantics.program import read_source
from metagen_compiler.syntax.parser import _parser
from metagen_compiler.tools.diagnostics_doc import CORPUS, markdown

ROOT = Path(__file__).resolve().parent.parent
BROKEN = ROOT / CORPUS
SUFFIXES = (".msl", ".yaml", ".yml")
WARNING_ONLY = re.compile(r"warning[- ]only", re.IGNORECASE)

# Codes no file of the corpus triggers, each with the reason. Every other error code must be covered.
NOT_COVERED = {
    "E004": "file-not-found is reported by the command line when the input cannot be read; compile_source "
            "gets text already read, and a missing import is E101",
    **{c: "an ONNX backend code: tests/test_onnx.py triggers it through the backend" for c in
       ("E511", "E512", "E513", "E514")},
}


def _corpus() -> list[Path]:
    return sorted(p for p in BROKEN.rglob("*")
                  if p.suffix in SUFFIXES and "lib" not in p.relative_to(BROKEN).parts)


FILES = _corpus()


def _id(path: Path) -> str:
    return path.relative_to(BROKEN).as_posix()


@functools.cache
def _compile(path: Path) -> Compilation:
    # paths in diagnostics are relative to the repository root, so snapshots do not depend on the checkout
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return compile_source(read_source(path, display=path.relative_to(ROOT).as_posix()))
    finally:
        os.chdir(cwd)


def _header(path: Path) -> str:
    return path.read_text(encoding="utf-8").split("\n", 1)[0]


def _texts(d: Diagnostic) -> Iterator[str]:
    yield d.message
    if d.hint:
        yield d.hint
    for n in d.notes:
        yield n.message


def test_corpus_is_large_enough() -> None:
    assert len([p for p in FILES if p.suffix == ".msl"]) >= 40


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_broken_spec(path: Path, snapshot) -> None:  # type: ignore[no-untyped-def]
    header = _header(path)
    assert header.startswith("#"), f"{_id(path)}: the first line must be a comment saying what is wrong"
    comp = _compile(path)
    diags = comp.bag.sorted()
    assert not [d for d in diags if d.code == "I001"], render_text(diags)
    if WARNING_ONLY.search(header):
        assert not comp.bag.has_errors, render_text(diags)
        assert comp.bag.warnings, f"{_id(path)} is marked warning-only but reports nothing"
    else:
        assert comp.bag.has_errors, f"{_id(path)} compiles without errors"
    text = render_text(diags)
    assert text == snapshot


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_header_codes_are_reported(path: Path) -> None:
    """The codes the first comment line names are the codes the compiler reports (the docs rely on it)."""
    named = set(re.findall(r"\b[EWI][0-9]{3}\b", _header(path)))
    if path.suffix == ".msl":  # the YAML corpus names codes where it likes
        assert named, f"{_id(path)}: the first comment line names no diagnostic code"
    got = {d.code for d in _compile(path).bag.items}
    assert named <= got, f"{_id(path)}: header names {sorted(named - got)}, compiler reports {sorted(got)}"


def test_every_error_code_is_covered() -> None:
    triggered = {d.code for p in FILES for d in _compile(p).bag.items}
    wanted = {c for c in CODES if not c.startswith(("W", "I"))}
    missing = wanted - triggered - set(NOT_COVERED)
    assert not missing, f"no broken spec triggers {sorted(missing)}; add one to tests/broken/"
    assert set(NOT_COVERED) <= set(CODES), "NOT_COVERED names codes that are not registered"
    stale = set(NOT_COVERED) & triggered
    assert not stale, f"{sorted(stale)} are triggered now: drop them from NOT_COVERED"


def _terminal_names() -> set[str]:
    # `MSL` names both the `msl` header keyword's terminal and the language itself
    return {t.name for t in _parser().terminals if t.name != "MSL"} | {"$END"}


def test_no_parser_internals_in_diagnostics() -> None:
    """Lark's terminal names (`RBRACE`, `__ANON_0`, `$END`) never reach a user."""
    names = _terminal_names()
    pattern = re.compile(r"__ANON|\$END|(?<![A-Za-z0-9_])(" + "|".join(
        re.escape(n) for n in sorted(names) if n != "$END") + r")(?![A-Za-z0-9_])")
    leaks = []
    for p in FILES:
        for d in _compile(p).bag.items:
            for t in _texts(d):
                if pattern.search(t):
                    leaks.append(f"{_id(p)}: [{d.code}] {t}")
    assert not leaks, "\n".join(leaks)


def test_severities() -> None:
    for p in FILES:
        for d in _compile(p).bag.items:
            want = Severity.WARNING if d.code.startswith("W") else Severity.ERROR
            assert d.severity == want, f"{_id(p)}: {d.code} reported as {d.severity.value}"


def test_docs_are_current() -> None:
    doc = ROOT / "docs" / "diagnostics.md"
    assert doc.is_file() and doc.read_text(encoding="utf-8") == markdown(ROOT), (
        "docs/diagnostics.md is stale: run `python -m metagen_compiler.tools.diagnostics_doc > docs/diagnostics.md`")
