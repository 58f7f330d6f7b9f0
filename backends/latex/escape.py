"""Escaping strings from a spec for LaTeX.

Every string that comes from a spec (names, metadata, constraint texts, diagnostics that quote the
spec) goes through `tt` or `rm` before it reaches a .tex file. Both return ASCII-only LaTeX in which
no character of the input can act as a TeX control character: backslashes, braces, `%`, `#`, `$`,
`&`, `^`, `~` and `_` become glyph references, so `\\input{/etc/passwd}` in a spec prints as those
19 characters and reads no file. Control characters become spaces; non-ASCII letters become
accent commands where plain Computer Modern has them, otherwise a visible `[U+XXXX]`.

`tt` prints in typewriter, where every ASCII glyph exists at its ASCII position (OT1 `cmtt`), so
the output is literal character for character. `rm` is for free text (descriptions, references):
the usual escapes in roman, with the few characters roman OT1 lacks taken from typewriter.
"""

from __future__ import annotations

import unicodedata

__all__ = ["tt", "tt_body", "rm", "spec_str"]

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


def tt_body(s: str, breakable: bool = True) -> str:
    """The typewriter text of `s` without the surrounding macro. With `breakable`, a line may
    break after `_`, `.`, `/` and `\\` (long identifiers and paths)."""
    parts = []
    for c in _squash(str(s)):
        parts.append(_tt_char(c))
        if breakable and c in "_./\\":
            parts.append("\\allowbreak{}")
    return "".join(parts)


def tt(s: object, breakable: bool = True) -> str:
    """`s` printed literally in typewriter: `\\mgstr{...}` (defined in metagen.sty)."""
    return f"\\mgstr{{{tt_body(str(s), breakable)}}}"


def rm(s: object) -> str:
    """`s` as roman running text, every character printed as itself."""
    return "".join(_rm_char(c) for c in _squash(str(s)))


def spec_str(v: object) -> str:
    """A value from the spec or report of any JSON type, as literal typewriter text."""
    if isinstance(v, bool):
        return tt("true" if v else "false")
    if v is None:
        return tt("none")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(spec_str(x) for x in v) + "]"
    if isinstance(v, dict):
        return "\\{" + ", ".join(f"{tt(k)}: {spec_str(x)}" for k, x in v.items()) + "\\}"
    return tt(v)
