"""MSL's words as an editor sees them, read from the grammar so that no list is kept twice.

The keywords are the quoted words of grammar/msl.lark (`metagen_compiler.syntax.parser.KEYWORDS`) and the
units the alternatives of its QUANTITY terminal. tests/test_editor.py checks that the Pygments lexer
and the TextMate grammar cover both.
"""

from __future__ import annotations

import re

from metagen_compiler.syntax.parser import KEYWORDS, grammar_text

__all__ = ["KEYWORDS", "KEYWORD_KINDS", "TYPE_NAMES", "UNITS", "keyword_kind"]

# How an editor colours a keyword; a keyword not named here is an ordinary keyword (`other`).
_KINDS = {
    "declaration": ("block", "family", "preset", "device", "model"),
    "namespace": ("msl", "import", "as"),
    "constant": ("true", "false"),
    "operator": ("and", "or", "not", "in"),
    "control": ("if", "else", "return", "require", "repeat"),
}

# Parameter types (`d_model: int`); equal to elaborate.KNOWN_TYPES, which a test checks.
TYPE_NAMES = ("int", "float", "bool", "str", "layer", "list", "any")


def keyword_kind(word: str) -> str:
    for kind, words in _KINDS.items():
        if word in words:
            return kind
    return "other"


KEYWORD_KINDS: dict[str, str] = {k: keyword_kind(k) for k in KEYWORDS}


def _units() -> tuple[str, ...]:
    m = re.search(r"^QUANTITY\S*:\s*/(.*)/\s*$", grammar_text(), re.MULTILINE)
    assert m is not None, "grammar/msl.lark has no QUANTITY terminal"
    groups = re.findall(r"\(((?:[A-Za-z]+\|)+[A-Za-z]+)\)", m.group(1))
    assert len(groups) == 1, "QUANTITY should have one group of unit alternatives"
    return tuple(groups[0].split("|"))


UNITS = _units()
