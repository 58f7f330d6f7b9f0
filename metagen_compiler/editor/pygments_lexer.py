"""A Pygments lexer for MSL, registered as `msl` (`pygmentize -l msl file.msl`).

The keywords and units come from the grammar (see vocabulary.py); the lexer only decides colours.
Units are coloured as Pygments' CSS lexer colours them (`Keyword.Type` after a number).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pygments.lexer import RegexLexer, bygroups, default, include, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

from .vocabulary import KEYWORD_KINDS, TYPE_NAMES, UNITS

__all__ = ["MSLLexer"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_NAME}(?:\.{_NAME})*"
_NUM = r"[0-9]+(?:\.[0-9]+)?"
_END = r"(?![A-Za-z0-9_])"
_TOKEN_OF_KIND: dict[str, Any] = {
    "declaration": Keyword.Declaration,
    "namespace": Keyword.Namespace,
    "constant": Keyword.Constant,
    "operator": Operator.Word,
    "control": Keyword,
    "other": Keyword,
}


def _keywords(kind: str) -> tuple[str, ...]:
    return tuple(sorted(k for k, v in KEYWORD_KINDS.items() if v == kind))


def _keyword_rules() -> list[tuple[Any, Any]]:
    return [(words(_keywords(kind), prefix=r"\b", suffix=r"\b"), tok) for kind, tok in _TOKEN_OF_KIND.items()
            if _keywords(kind)]


class MSLLexer(RegexLexer):
    """The MetaGen Spec Language."""

    name = "MSL"
    aliases: ClassVar[list[str]] = ["msl"]
    filenames: ClassVar[list[str]] = ["*.msl"]
    mimetypes: ClassVar[list[str]] = ["text/x-msl"]

    tokens: ClassVar[dict[str, list[Any]]] = {
        "root": [
            include("whitespace"),
            (r"(block|family)(\s+)(" + _NAME + ")", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (r"(model|device)(\s+)(" + _NAME + ")", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (r"(preset)(\s+)(" + _NAME + r")(\s*)(:)(\s*)(" + _DOTTED + ")",
             bygroups(Keyword.Declaration, Whitespace, Name.Class, Whitespace, Punctuation, Whitespace, Name.Class)),
            (r"(import)(\s+)(" + _DOTTED + ")", bygroups(Keyword.Namespace, Whitespace, Name.Namespace)),
            (r"(task|on)(\s+)(" + _NAME + ")", bygroups(Keyword, Whitespace, Name.Constant)),
            (r"(architecture)(\s+)(" + _DOTTED + ")", bygroups(Keyword, Whitespace, Name.Class)),
            (r"(modality|objective)\b", Keyword, "names"),
            (r"(:)(\s*)(\{)", bygroups(Punctuation, Whitespace, Punctuation), "enum"),
            (r"(:)(\s*)(" + "|".join(TYPE_NAMES) + ")" + _END, bygroups(Punctuation, Whitespace, Keyword.Type)),
            *_keyword_rules(),
            include("values"),
            (r"(" + _NAME + r")(\s*)(\()", bygroups(Name.Function, Whitespace, Punctuation)),
            (_NAME, Name),
            (r">>|->|\*\*|<=|>=|==|!=|//|\.\.|[-+*/%<>=]", Operator),
            (r"[(){}\[\],;:.]", Punctuation),
        ],
        "whitespace": [
            (r"\s+", Whitespace),
            (r"#.*?$", Comment.Single),
        ],
        "values": [
            (r'"', String.Double, "string"),
            (r"(" + _NUM + r")(" + "|".join(UNITS) + r")" + _END, bygroups(Number, Keyword.Type)),
            (r"[0-9]+\.[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+", Number.Float),
            (r"[0-9]+", Number.Integer),
            (r"\?", Keyword.Constant),
        ],
        "string": [
            (r'[^"\\\n]+', String.Double),
            (r"\\.", String.Escape),
            (r'"', String.Double, "#pop"),
            (r"\n", Text, "#pop"),  # an unterminated string ends at the line's end, as in the parser
        ],
        # the names after `modality` and `objective`, up to the end of the statement
        "names": [
            (r"[ \t]+", Whitespace),
            (r"->", Operator),
            (r",", Punctuation),
            (_NAME, Name.Constant),
            default("#pop"),
        ],
        "enum": [
            include("whitespace"),
            (_NAME, Name.Constant),
            (r",", Punctuation),
            (r"\}", Punctuation, "#pop"),
        ],
    }
