"""The VS Code grammar, run by the real TextMate engine (vscode-textmate + vscode-oniguruma under node):
every example and stdlib file is tokenised and its scopes are snapshotted (`pytest --snapshot-update`
after a deliberate change). Needs node and `npm ci --prefix editors/vscode`: skipped without them,
except in CI (the CI environment variable set), where their absence is a failure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, ROOT, rel

from metagen_compiler.editor.vocabulary import KEYWORD_KINDS, UNITS

VSCODE = ROOT / "editors" / "vscode"
TOKENIZE = VSCODE / "test" / "tokenize.js"
FILES = EXAMPLES + sorted((ROOT / "stdlib").glob("*.msl"))
IDS = [f"{p.parent.name}-{p.stem}" for p in FILES]

Tokens = list[list[tuple[str, list[str]]]]  # per line: (text, scopes)


def _engine_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    for pkg in ("vscode-textmate", "vscode-oniguruma"):
        if not (VSCODE / "node_modules" / pkg).is_dir():
            return f"{pkg} is not installed (run: npm ci --prefix editors/vscode)"
    return None


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    why = _engine_missing()
    if why is not None:  # conftest turns this skip into a failure naming the install command, unless --allow-missing
        pytest.skip(f"the TextMate engine is missing: {why}")


def tokenize(paths: list[str], cwd: Path = ROOT) -> dict[str, Any]:
    r = subprocess.run(["node", str(TOKENIZE), *paths], check=False, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def scopes() -> dict[str, Any]:
    return tokenize([rel(p) for p in FILES])


def render(text: str, lines: Tokens) -> str:
    """Each source line, then a caret line per token under it with the token's scopes (as the
    vscode-tmgrammar-test format does); whitespace-only tokens are left out."""
    out: list[str] = []
    for src, toks in zip(text.split("\n"), lines):
        out.append(f">{src}")
        col = 0
        for tok, sc in toks:
            if tok.strip():
                out.append(f"#{' ' * col}{'^' * len(tok)} {' '.join(sc) or '(none)'}")
            col += len(tok)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_scopes(path: Path, scopes: dict[str, Any], text_snapshot: Any) -> None:
    lines = scopes[rel(path)]
    assert render(path.read_text(), lines) == text_snapshot


def test_every_keyword_and_unit_gets_its_scope(tmp_path: Path) -> None:
    kinds = {"declaration": "storage.type", "namespace": "keyword.control.import", "constant": "constant.language",
             "operator": "keyword.operator.word", "control": "keyword.control", "other": "keyword.other"}
    words = sorted(KEYWORD_KINDS)
    (tmp_path / "kw.msl").write_text("\n".join(words) + "\n")
    (tmp_path / "units.msl").write_text("\n".join(f"x = 12{u}" for u in UNITS) + "\n")
    result = tokenize(["kw.msl", "units.msl"], cwd=tmp_path)
    for word, line in zip(words, result["kw.msl"]):
        assert line[0][0] == word and line[0][1][-1].startswith(kinds[KEYWORD_KINDS[word]]), (word, line)
    for unit, line in zip(UNITS, result["units.msl"]):
        assert [t for t, s in line if s and s[-1] == "keyword.other.unit.msl"] == [unit], line


def test_errors_do_not_leak_past_the_line(tmp_path: Path) -> None:
    """An unterminated string or an unclosed parameter list stays where it is."""
    (tmp_path / "bad.msl").write_text('model m {\n  metadata { a = "open\n  b = 1 }\n}\n')
    lines = tokenize(["bad.msl"], cwd=tmp_path)["bad.msl"]
    assert all("string.quoted.double.msl" not in s for _, s in lines[2])


def test_the_extension_script_loads_its_client() -> None:
    """extension.js parses, and the language client it requires is installed where VS Code looks."""
    check = subprocess.run(["node", "--check", "extension.js"], cwd=VSCODE, capture_output=True, text=True,
                           timeout=60, check=False)
    assert check.returncode == 0, check.stderr
    script = "console.log(require.resolve('vscode-languageclient/node'))"
    found = subprocess.run(["node", "-e", script], cwd=VSCODE, capture_output=True, text=True, timeout=60, check=False)
    assert found.returncode == 0 and "vscode-languageclient" in found.stdout, found.stderr
