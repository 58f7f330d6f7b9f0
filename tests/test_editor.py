"""Editor support that needs no editor: the Pygments lexer, and the VS Code extension's files checked
against the grammar (one source of truth: the keywords and units of grammar/msl.lark)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT
from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
from pygments.token import Error, Keyword, Number, Operator

from metagen_compiler.editor.pygments_lexer import MSLLexer
from metagen_compiler.editor.vocabulary import KEYWORD_KINDS, TYPE_NAMES, UNITS
from metagen_compiler.primitives import PRIMITIVES
from metagen_compiler.semantics.elaborate import KNOWN_TYPES
from metagen_compiler.semantics.values import UNIT_SCALE
from metagen_compiler.syntax.parser import KEYWORDS

FILES = EXAMPLES + sorted((ROOT / "stdlib").glob("*.msl"))
IDS = [f"{p.parent.name}-{p.stem}" for p in FILES]
VSCODE = ROOT / "editors" / "vscode"
TM = json.loads((VSCODE / "syntaxes" / "msl.tmLanguage.json").read_text())
GRAMMAR = (ROOT / "grammar" / "msl.lark").read_text()

# the TextMate scope each kind of keyword gets
TM_SCOPE_OF_KIND = {
    "declaration": "storage.type.msl", "namespace": "keyword.control.import.msl",
    "constant": "constant.language.boolean.msl", "operator": "keyword.operator.word.msl",
    "control": "keyword.control.msl", "other": "keyword.other.msl",
}


def grammar_keywords() -> set[str]:
    """The quoted words of the grammar file, read here independently of the compiler."""
    return {w for w in re.findall(r'"([^"]+)"', GRAMMAR) if re.fullmatch(r"[A-Za-z_]\w*", w)}


def grammar_units() -> set[str]:
    m = re.search(r"^QUANTITY\S*:\s*/(.*)/\s*$", GRAMMAR, re.MULTILINE)
    assert m is not None
    return set(re.findall(r"\(((?:[A-Za-z]+\|)+[A-Za-z]+)\)", m.group(1))[0].split("|"))


# ---------------------------------------------------------------- one source of truth
def test_keyword_and_unit_lists_come_from_the_grammar() -> None:
    assert set(KEYWORDS) == grammar_keywords() == set(KEYWORD_KINDS)
    assert set(UNITS) == grammar_units() == set(UNIT_SCALE)
    assert set(TYPE_NAMES) == set(KNOWN_TYPES)


# ---------------------------------------------------------------- Pygments
def test_lexer_is_registered_through_the_entry_point() -> None:
    assert type(get_lexer_by_name("msl")) is MSLLexer
    assert type(get_lexer_for_filename("spec.msl")) is MSLLexer


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_pygments_lexes_every_file_without_errors(path: Path) -> None:
    text = path.read_text()
    tokens = list(MSLLexer().get_tokens(text))
    assert [v for t, v in tokens if t in Error] == []
    assert "".join(v for _, v in tokens) == text


@pytest.mark.parametrize("word", sorted(grammar_keywords()))
def test_pygments_covers_every_keyword(word: str) -> None:
    tokens = [(t, v) for t, v in MSLLexer().get_tokens(word) if v.strip()]
    assert len(tokens) == 1 and tokens[0][1] == word
    assert tokens[0][0] in Keyword or tokens[0][0] in Operator.Word, tokens


def test_pygments_units_and_contextual_names() -> None:
    for q in ("86M", "20ms", "12GB", "256k", "16kHz", "1.5GiB"):
        toks = [(t, v) for t, v in MSLLexer().get_tokens(q) if v.strip()]
        assert toks[0][0] in Number and toks[1][0] in Keyword.Type and toks[0][1] + toks[1][1] == q, toks
    raw = list(MSLLexer().get_tokens("model m {\n  modality text, image -> label\n}\n"))
    assert ("Token.Name.Constant", "image") in [(str(t), v) for t, v in raw]


def test_pygmentize_highlights_a_file() -> None:
    r = subprocess.run([sys.executable, "-m", "pygments", "-l", "msl", "-f", "html", str(EXAMPLES[0])],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert '<span class="kd">model</span>' in r.stdout


# ---------------------------------------------------------------- the TextMate grammar, statically
def _rules(node: object) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    if isinstance(node, dict):
        if "match" in node or "begin" in node:
            out.append(node)
        for v in node.values():
            out += _rules(v)
    elif isinstance(node, list):
        for v in node:
            out += _rules(v)
    return out


@pytest.mark.parametrize("word", sorted(grammar_keywords()))
def test_textmate_grammar_covers_every_keyword(word: str) -> None:
    """Each keyword is matched whole by the keyword rule of its kind (tests/test_textmate.py checks the
    same with the real engine)."""
    rules = TM["repository"]["keywords"]["patterns"]
    scopes = [r["name"] for r in rules if re.fullmatch(r["match"], word)]
    assert scopes == [TM_SCOPE_OF_KIND[KEYWORD_KINDS[word]]]


def test_textmate_grammar_units_primitives_and_types_match_the_compiler() -> None:
    quantity = next(r for r in _rules(TM) if r.get("name") == "constant.numeric.quantity.msl")
    units = re.search(r"\)\(([^)]*)\)", str(quantity["match"]))
    assert units is not None and set(units.group(1).split("|")) == set(UNITS)
    prim = next(r for r in _rules(TM) if r.get("name") == "support.function.primitive.msl")
    assert {w for w in re.findall(r"[a-z_0-9]+", str(prim["match"])) if w in PRIMITIVES} == set(PRIMITIVES)
    types = next(r for r in _rules(TM) if "support.type.msl" in json.dumps(r.get("captures", {})))
    assert set(re.search(r"\(([a-z|]+)\)", str(types["match"])).group(1).split("|")) == set(TYPE_NAMES)  # type: ignore[union-attr]


def test_vscode_extension_manifest() -> None:
    pkg = json.loads((VSCODE / "package.json").read_text())
    lang = pkg["contributes"]["languages"][0]
    assert lang["id"] == "msl" and lang["extensions"] == [".msl"]
    grammar = pkg["contributes"]["grammars"][0]
    assert grammar["scopeName"] == TM["scopeName"] == "source.msl" and grammar["language"] == "msl"
    for rel in (lang["configuration"], grammar["path"], pkg["main"], "test/tokenize.js"):
        assert (VSCODE / rel).is_file(), rel
    conf = json.loads((VSCODE / "language-configuration.json").read_text())
    assert conf["comments"] == {"lineComment": "#"}
    assert ["{", "}"] in conf["brackets"] and ["(", ")"] in conf["brackets"]
    assert {"open": "{", "close": "}"} in conf["autoClosingPairs"]
    # versions are pinned, and the lock file agrees, so that `npm ci` installs exactly these
    lock = json.loads((VSCODE / "package-lock.json").read_text())
    for section in ("dependencies", "devDependencies"):
        for name, version in pkg[section].items():
            assert re.fullmatch(r"\d+\.\d+\.\d+", version), (name, version)
            assert lock["packages"][f"node_modules/{name}"]["version"] == version


def test_textmate_primitive_list_is_generated_from_the_table() -> None:
    """The grammar's primitive alternation is what `python -m metagen_compiler.editor.textmate` writes from
    PRIMITIVES: a new primitive reaches the editor by regenerating, not by hand."""
    from metagen_compiler.editor.textmate import GRAMMAR, updated

    text = GRAMMAR.read_text(encoding="utf-8")
    assert updated(text) == text, "run python -m metagen_compiler.editor.textmate"
