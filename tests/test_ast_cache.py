"""The on-disk cache of parsed stdlib modules: a hit gives the same AST as a parse, a damaged entry
is parsed anew, an unwritable cache folder is no error, and entries are written whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from metagen_compiler.diagnostics import DiagnosticBag
from metagen_compiler.semantics import program
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax.ast import dump
from metagen_compiler.syntax.parser import parse_msl


def _fresh(monkeypatch: pytest.MonkeyPatch, cache_home: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("METAGENC_NO_CACHE", raising=False)
    monkeypatch.setattr(program, "_AST_CACHE", {})


def _source() -> SourceFile:
    src = program._stdlib_source("std.transformer")
    assert src is not None
    return src


def test_cache_hit_equals_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh(monkeypatch, tmp_path)
    src = _source()
    first = program.parse_stdlib_cached(src, DiagnosticBag())
    entries = sorted((tmp_path / "metagenc").iterdir())
    assert [p.suffix for p in entries] == [".pickle"]  # no temporary file left behind
    monkeypatch.setattr(program, "_AST_CACHE", {})
    again = program.parse_stdlib_cached(src, DiagnosticBag())
    parsed = parse_msl(src, DiagnosticBag())
    assert first is not None and again is not None and parsed is not None
    assert dump(again) == dump(parsed) == dump(first)


def test_damaged_entry_is_parsed_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh(monkeypatch, tmp_path)
    src = _source()
    program.parse_stdlib_cached(src, DiagnosticBag())
    for p in (tmp_path / "metagenc").iterdir():
        p.write_bytes(b"not a pickle")
    monkeypatch.setattr(program, "_AST_CACHE", {})
    module = program.parse_stdlib_cached(src, DiagnosticBag())
    parsed = parse_msl(src, DiagnosticBag())
    assert module is not None and parsed is not None and dump(module) == dump(parsed)


def test_unwritable_cache_folder_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    _fresh(monkeypatch, blocker)
    assert program.parse_stdlib_cached(_source(), DiagnosticBag()) is not None
    assert blocker.read_text() == "a file where the cache folder would be"


def test_key_follows_the_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh(monkeypatch, tmp_path)
    src = _source()
    program.parse_stdlib_cached(src, DiagnosticBag())
    edited = SourceFile(src.path, src.text + "\nblock extra_identity(x) { return x }\n")
    module = program.parse_stdlib_cached(edited, DiagnosticBag())
    assert module is not None and any(b.name.name == "extra_identity" for b in module.blocks)
    assert len(list((tmp_path / "metagenc").iterdir())) == 2
