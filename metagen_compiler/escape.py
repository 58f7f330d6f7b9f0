"""Escaping text for the languages the compiler writes: one function per target language.

Every text that reaches a generated file and did not come from the compiler's own constants (input
paths, model, block, parameter and input names, metadata, descriptions, device names, diagnostics that
quote the spec) goes through one of these before it is written. Each returns text that the target
language reads back as data, character for character, and that cannot end the construct it sits in:

| target | function | where |
|---|---|---|
| Python string literal | `py_str` | model.py: dict keys, assert messages, enum values |
| Python docstring text | `py_doc` | model.py: module, class and method docstrings |
| Python comment text | `py_comment` | model.py: shape and input comments after `#` |
| LaTeX | `latex_tt`, `latex_rm` (`latex_tt_body`, `latex_value`) | paper/*.tex |
| Markdown | `md_text`, `md_code` | MODEL_CARD.md body |
| YAML | `yaml_str` | MODEL_CARD.md front matter |
| JSON | `json_value`, `json_text` | report.json, graph.json, provenance.json |
| DOT (Graphviz) | `dot_str` | graph.dot ids and labels |
| ONNX (protobuf strings) | `onnx_str` | model.onnx doc strings and metadata |

Odd input the functions all survive: quotes of every kind, backslashes (Windows paths: `C:\\Users`),
newlines and carriage returns, NUL and other control characters, bidirectional controls, and lone
surrogates (a file name that is not UTF-8 decodes to them; they cannot be written as UTF-8 at all).
tests/test_escaping.py compiles hostile names and paths through the CLI and scans the emitters for any
other route from spec text to output.
"""

from __future__ import annotations

import html
import json
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

__all__ = [
    "dot_str",
    "json_text",
    "json_value",
    "latex_rm",
    "latex_tt",
    "latex_tt_body",
    "latex_value",
    "md_code",
    "md_text",
    "onnx_str",
    "py_comment",
    "py_doc",
    "py_str",
    "yaml_str",
]


_SURROGATE = re.compile("[\ud800-\udfff]")


def _visible(c: str) -> str:
    """A character that is not printable, as the Python escape that names it (`\\n`, `\\x00`, `\\u202e`)."""
    return c if c.isprintable() else repr(c)[1:-1]


# ------------------------------------------------------------------ Python
def _py_body(s: str, every_quote: bool = True) -> str:
    """The body of a double-quoted Python literal whose value is `s`: one line, backslashes escaped,
    every non-printable character (newlines, NUL, bidi controls, lone surrogates) as its escape, and `"`
    escaped: every one, or (not `every_quote`, for triple quotes) each one that a `"` follows or that ends
    the text, so no two unescaped quotes ever touch and `\"\"\"` cannot form."""
    body = repr(s)[1:-1]
    # repr quotes with ' unless s holds ' and no ", so its body never escapes "; every " in it is a character
    if every_quote:
        return body.replace('"', '\\"')
    return re.sub(r'"(?="|$)', '\\\\"', body)


def py_str(s: object, quote: str | None = None) -> str:
    """A Python string literal whose value is `s`: repr's (the canonical spelling), or in `quote`="\"" ."""
    if quote is None:
        return repr(str(s))
    if quote != '"':
        raise ValueError(f"unsupported quote {quote!r}")
    return f'"{_py_body(str(s))}"'


def py_doc(s: object) -> str:
    """`s` as the text of a docstring (`\"\"\"...\"\"\"`): one line that can neither end the docstring nor
    start a new line, whose value is `s`, except that a lone surrogate (from a file name that is not
    UTF-8) reads as its escape, `\\udcff`: CPython cannot build a class whose docstring holds one."""
    return _py_body(_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", str(s)), every_quote=False)


def py_comment(s: object) -> str:
    """`s` as the text of a `#` comment: printable characters as themselves, every other one
    (newlines, carriage returns, form feeds, line separators, controls) as its Python escape, so the
    comment stays on its line."""
    return "".join(_visible(c) for c in str(s))


# ------------------------------------------------------------------ LaTeX
# Every string that comes from a spec goes through `latex_tt` or `latex_rm` before it reaches a .tex
# file. Both return ASCII-only LaTeX in which no character of the input can act as a TeX control
# character: backslashes, braces, `%`, `#`, `$`, `&`, `^`, `~` and `_` become glyph references, so
# `\\input{/etc/passwd}` in a spec prints as those 19 characters and reads no file. Control characters
# become spaces; non-ASCII letters become accent commands where plain Computer Modern has them,
# otherwise a visible `[U+XXXX]`.
#
# `latex_tt` prints in typewriter, where every ASCII glyph exists at its ASCII position (OT1 `cmtt`),
# so the output is literal character for character. `latex_rm` is for free text (descriptions,
# references): the usual escapes in roman, with the few characters roman OT1 lacks taken from typewriter.

# ASCII characters that are safe as themselves in both roman and typewriter text.
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;!?()/*+=@")

# typewriter: character -> glyph slot in OT1 cmtt (ASCII, except the straight quote at 13 and the grave at 18)
_TT_SLOT = {c: ord(c) for c in "\\{}_^~$#%&<>|\"-[]"} | {"'": 13, "`": 18}

# roman: character -> LaTeX
_RM = {
    "_": "\\_", "%": "\\%", "#": "\\#", "&": "\\&", "$": "\\$", "{": "\\{", "}": "\\}",
    "-": "-{}", "[": "{[}", "]": "{]}",
}

# combining mark -> accent command available in OT1 (roman and typewriter)
_ACCENTS = {
    "\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=", "\u0306": "u", "\u0307": ".",
    "\u0308": '"', "\u030a": "r", "\u030b": "H", "\u030c": "v", "\u0327": "c",
}
_LETTERS = {
    "\u00df": "\\ss{}", "\u00e6": "\\ae{}", "\u00c6": "\\AE{}", "\u00f8": "\\o{}", "\u00d8": "\\O{}",
    "\u0153": "\\oe{}", "\u0152": "\\OE{}", "\u00e5": "\\aa{}", "\u00c5": "\\AA{}", "\u0142": "\\l{}",
    "\u0141": "\\L{}", "\u0131": "\\i{}",
}
# typographic punctuation -> ASCII, then escaped as ASCII
_PUNCT = {
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-", "\u2026": "...",
    "\u00a0": " ", "\u2212": "-",
}


def _non_ascii(c: str, typewriter: bool) -> str:
    if c in _PUNCT:
        return "".join(_tt_char(x) if typewriter else _rm_char(x) for x in _PUNCT[c])
    if c in _LETTERS:
        return _LETTERS[c]
    d = unicodedata.normalize("NFD", c)
    if len(d) == 2 and d[0].isascii() and d[0].isalpha() and d[1] in _ACCENTS:
        base = "\\i{}" if d[0] == "i" else d[0]
        return f"\\{_ACCENTS[d[1]]}{{{base}}}"
    return f"{{[}}U+{ord(c):04X}{{]}}" if not typewriter else f"{{\\char91}}U+{ord(c):04X}{{\\char93}}"


def _tt_char(c: str) -> str:
    if c in _PLAIN:
        return c
    if c in _TT_SLOT:
        return f"{{\\char{_TT_SLOT[c]}}}"
    if c.isascii():  # control characters, tabs, newlines
        return " "
    return _non_ascii(c, True)


def _rm_char(c: str) -> str:
    if c in _PLAIN:
        return c
    if c in _RM:
        return _RM[c]
    if c in _TT_SLOT:  # \ ^ ~ < > | " ' ` have no literal glyph in roman OT1
        return f"\\mgstr{{{{\\char{_TT_SLOT[c]}}}}}"
    if c.isascii():
        return " "
    return _non_ascii(c, False)


def _squash(s: str) -> str:
    """Runs of whitespace and control characters -> one space (TeX would do the same for spaces;
    a blank line would end a paragraph, which a string from a spec must not do)."""
    out = []
    space = False
    for c in s:
        blank = c.isspace() or (c.isascii() and not c.isprintable())
        if blank:
            if not space:
                out.append(" ")
            space = True
        else:
            out.append(c)
            space = False
    return "".join(out)


def latex_tt_body(s: object, breakable: bool = True) -> str:
    """The typewriter text of `s` without the surrounding macro. With `breakable`, a line may
    break after `_`, `.`, `/` and `\\` (long identifiers and paths)."""
    parts = []
    for c in _squash(str(s)):
        parts.append(_tt_char(c))
        if breakable and c in "_./\\":
            parts.append("\\allowbreak{}")
    return "".join(parts)


def latex_tt(s: object, breakable: bool = True) -> str:
    """`s` printed literally in typewriter: `\\mgstr{...}` (defined in backends/latex/metagen.sty)."""
    return f"\\mgstr{{{latex_tt_body(str(s), breakable)}}}"


def latex_rm(s: object) -> str:
    """`s` as roman running text, every character printed as itself."""
    return "".join(_rm_char(c) for c in _squash(str(s)))


def latex_value(v: object) -> str:
    """A value from the spec or report of any JSON type, as literal typewriter text."""
    if isinstance(v, bool):
        return latex_tt("true" if v else "false")
    if v is None:
        return latex_tt("none")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(latex_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "\\{" + ", ".join(f"{latex_tt(k)}: {latex_value(x)}" for k, x in v.items()) + "\\}"
    return latex_tt(v)


# ------------------------------------------------------------------ Markdown and YAML
def _md_line(s: object) -> str:
    """One line: runs of whitespace (newlines included) -> one space; other invisible characters
    (NUL, bidi controls, lone surrogates) -> their visible escape."""
    return "".join(c if c.isprintable() else _visible(c) for c in " ".join(str(s).split()))


def md_code(s: object, in_table: bool = False) -> str:
    """`s` as a Markdown code span (literal), one line; in a table, `|` escaped as GFM requires."""
    text = _md_line(s)
    if in_table:
        text = text.replace("|", "\\|")
    run = longest = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_text(s: object) -> str:
    """Free text as Markdown that renders as itself: one line, HTML (`<script>`, `&amp;`) neutralised,
    every character that can open inline markup (emphasis, code, links, images, tables, headings)
    backslash-escaped."""
    text = html.escape(_md_line(s), quote=False)
    return "".join("\\" + c if c in "\\`*_[]#|~!{}" else c for c in text)


def yaml_str(s: object) -> str:
    """A YAML double-quoted scalar (ASCII): printable ASCII as itself, `\\` and `"` escaped, the rest as
    `\\xXX`, `\\uXXXX` or `\\UXXXXXXXX`; a lone surrogate (no Unicode character) as U+FFFD."""
    out = ['"']
    for c in str(s):
        o = ord(c)
        if c in '\\"':
            out.append("\\" + c)
        elif 0x20 <= o < 0x7F:
            out.append(c)
        elif 0xD800 <= o < 0xE000:
            out.append("\\ufffd")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


# ------------------------------------------------------------------ JSON
def json_value(v: Any, other: Callable[[Any], Any] = str) -> Any:
    """`v` as plain JSON data: dicts with string keys, lists, strings, finite numbers, booleans and
    None; a non-finite float as its text (`"inf"`, `"nan"`: JSON has no such number), anything else
    through `other`."""
    if isinstance(v, dict):
        return {str(k): json_value(x, other) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_value(x, other) for x in v]
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return other(v)


def json_text(v: Any, indent: int | None = None, other: Callable[[Any], Any] = str) -> str:
    """`v` as JSON text (ASCII: lone surrogates and control characters as `\\uXXXX`; no NaN)."""
    return json.dumps(json_value(v, other), indent=indent, ensure_ascii=True, allow_nan=False)


# ------------------------------------------------------------------ DOT
def _dot_char(c: str) -> str:
    if c == "\\":
        return "\\\\"
    if c == '"':
        return '\\"'
    if c == "\n":
        return c  # a quoted string may span lines; a label shows a centred line break
    if not c.isprintable():
        return "\\" + _visible(c)  # `\\x00`: a backslash glyph and the escape's name, never a control byte
    return c


def dot_str(s: object) -> str:
    """`s` as a quoted DOT id (node name, graph name, label): `\\` and `"` escaped (Graphviz reads `\\\\`
    in a label as one backslash, so `\\N`, `\\G`, `\\l` from a spec print as written); control
    characters and lone surrogates as visible escapes."""
    return '"' + "".join(_dot_char(c) for c in str(s)) + '"'


# ------------------------------------------------------------------ ONNX
def onnx_str(s: object) -> str:
    """`s` for an ONNX string field (graph name, doc_string, metadata_props): protobuf needs valid
    UTF-8, so lone surrogates and control characters (other than newline and tab) become their Python
    escapes as text."""
    return "".join(c if c.isprintable() or c in "\n\t" else _visible(c) for c in str(s))
