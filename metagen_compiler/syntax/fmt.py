"""`metagenc fmt`: the canonical MSL formatter.

The layout is computed from the parse tree, with every token kept (`keep_all_tokens`), so nothing the
user wrote is lost: comments are re-attached to the line their neighbouring token lands on, and the
AST of the output equals the AST of the input (a test checks this for every example and stdlib file).

What the formatter decides: two-space indentation, one space around operators and after commas, no
`;` at the end of a line (`; ` between statements that share one), no trailing commas, at most one
blank line (none after `{` or before `}`, always one around a top-level definition), `{ a; b }` on one
line only when it was written on one line and fits. What it keeps: the statements that share a line,
line breaks after a comma and before `>>` (continuation lines align after the `(` or under the first
`>>`), the user's parentheses and the spelling of numbers and strings. A header whose parameters do
not fit in `WIDTH` columns is wrapped after a comma; a pipe chain that does not fit, before a `>>`.
"""

from __future__ import annotations

import argparse
import bisect
import difflib
import functools
import itertools
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lark import Lark, Token, Tree

from metagen_compiler.diagnostics import Diagnostic, DiagnosticBag, render_text
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax.parser import grammar_text, parse_msl

__all__ = ["WIDTH", "FormatError", "format_text", "main"]

WIDTH = 120  # the line length the formatter aims for (as ruff's for the Python code)
INDENT = 2
EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2

_OPENERS = ("(", "[", "{")
_TIGHT_BEFORE = (")", "]", "}", ",", ":", ".", "..")
_TIGHT_AFTER = ("(", "[", "{", ".", "..")
# statements with a `{ ... }` part that may stay on one line when written so
_INLINE_OK = frozenset({"task_stmt", "constraints_stmt", "architecture_stmt", "metadata_stmt", "meta_group",
                        "training_stmt", "preset_def", "device_def", "if_stmt"})
_DEFINITIONS = frozenset({"block_def", "family_def", "preset_def", "device_def", "model_def"})
_BRACKETED_LISTS = frozenset({"params", "args", "list", "tuple", "enum_type", "choices", "family_names"})
_BARE_LISTS = frozenset({"name_list", "modality_list", "input_stmt", "assign_stmt", "return_stmt"})
_COMMENT = re.compile(r"#[^\n]*")
_GROUP_IDS = itertools.count(1)  # break-point groups (a list, a pipe chain): unique across flatteners


class FormatError(Exception):
    """The text has syntax errors; `diagnostics` says which. Such a file is never formatted."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__(render_text(diagnostics))
        self.diagnostics = diagnostics


@functools.lru_cache(maxsize=1)
def _tree_parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True,
                keep_all_tokens=True)


# ---------------------------------------------------------------- tokens and lines
@dataclass(frozen=True)
class _Break:
    """A place a line may break before a token: after a comma of a list, or before a `>>`."""

    group: int
    kind: str  # comma | pipe
    greedy: bool  # also break here when the line would be too long
    opener: int | None  # index of the list's `(`/`[`/`{`: continuation lines align after it


@dataclass
class _Tok:
    text: str
    pos: int
    line: int
    end_line: int
    type: str = ""
    space: bool = True  # a space before it, unless it starts a line
    brk: _Break | None = None
    forced: bool = False  # the source breaks the line here


@dataclass
class _Line:
    indent: int
    text: str
    toks: list[int] = field(default_factory=list)  # source offsets of the tokens on it
    first_src: int = 0  # first and last source line it comes from
    last_src: int = 0
    item: int = -1  # the top-level item it belongs to
    comment: bool = False

    @property
    def opens(self) -> bool:
        return not self.comment and self.text.endswith("{")

    @property
    def closes(self) -> bool:
        return not self.comment and self.text.startswith("}")

    def render(self) -> str:
        return (" " * self.indent + self.text).rstrip()


def _tokens(node: Tree[Token] | Token | None) -> Iterator[Token]:
    if isinstance(node, Token):
        yield node
    elif isinstance(node, Tree):
        for c in node.children:
            yield from _tokens(c)


# ---------------------------------------------------------------- flattening: tree -> tokens with spacing
class _Flattener:
    """Turns statement and header subtrees into a token list that knows its spacing and break points."""

    def __init__(self) -> None:
        self.toks: list[_Tok] = []
        self.space_next = False  # the next token gets a space before it whatever it is
        self._pending: _Break | None = None
        self._openers: list[int] = []
        self._unary = False

    @staticmethod
    def _group() -> int:
        return next(_GROUP_IDS)

    def emit(self, t: Token, *, attach: bool = False, spaced: bool = False, unary: bool = False) -> None:
        text = str(t)
        if text == ";":
            return
        prev = self.toks[-1] if self.toks else None
        # `f(`, `a[`, `repeat(`: a bracket sticks to the name or bracket it follows
        attach = attach or (prev is not None and text in ("(", "[")
                            and (prev.type == "NAME" or prev.text in (")", "]", "repeat")))
        space = spaced or self.space_next or not (attach or prev is None or self._unary
                                                  or prev.text in _TIGHT_AFTER or text in _TIGHT_BEFORE)
        self.space_next = False
        tok = _Tok(text, t.start_pos or 0, t.line or 0, t.end_line or t.line or 0, t.type, space)
        if self._pending is not None:
            tok.brk, self._pending = self._pending, None
            tok.forced = prev is not None and tok.line > prev.end_line
        self._unary = unary
        if text in _OPENERS:
            self._openers.append(len(self.toks))
        elif text in (")", "]", "}") and self._openers:
            self._openers.pop()
        self.toks.append(tok)

    def node(self, n: Tree[Token] | Token | None) -> None:
        if n is None:
            return
        if isinstance(n, Token):
            self.emit(n)
            return
        rule = n.data
        kids = n.children
        if rule == "neg":
            self.emit(kids[0], unary=True)  # type: ignore[arg-type]
            self.node(kids[1])
        elif rule == "apply":
            self._chain(n, self._group())
        elif rule in _BRACKETED_LISTS or rule in _BARE_LISTS:
            self._list(n)
        else:
            for k in kids:
                self.node(k)

    def _chain(self, n: Tree[Token], group: int) -> None:
        src, pipe, layer = n.children
        if isinstance(src, Tree) and src.data == "apply":
            self._chain(src, group)
        else:
            self.node(src)
        self._pending = _Break(group, "pipe", True, None)
        self.emit(pipe)  # type: ignore[arg-type]
        self.node(layer)

    def _list(self, n: Tree[Token]) -> None:
        kids = [k for k in n.children if k is not None]
        bracketed = n.data in _BRACKETED_LISTS
        group = self._group()
        for i, k in enumerate(kids):
            if isinstance(k, Token) and str(k) == ",":
                nxt = kids[i + 1] if i + 1 < len(kids) else None
                trailing = nxt is None or (isinstance(nxt, Token) and str(nxt) in (")", "]", "}"))
                if trailing and n.data != "tuple":  # `(a,)` needs its comma
                    continue
                self.emit(k)
                if not trailing:
                    opener = self._openers[-1] if bracketed and self._openers else None
                    self._pending = _Break(group, "comma", n.data == "params", opener)
            else:
                self.node(k)


def _flat(*nodes: Tree[Token] | Token | None) -> list[_Tok]:
    f = _Flattener()
    for n in nodes:
        f.node(n)
    return f.toks


# ---------------------------------------------------------------- layout: tokens -> lines
def _width(toks: list[_Tok], start: int, stop: int) -> int:
    return sum(len(t.text) + (1 if t.space and i > start else 0) for i, t in enumerate(toks[start:stop], start))


def _segment_end(toks: list[_Tok], i: int) -> int:
    """Where the piece starting at break point `i` ends: the next break of its group or a forced one."""
    brk = toks[i].brk
    group = brk.group if brk is not None else -1
    for j in range(i + 1, len(toks)):
        b = toks[j].brk
        if b is not None and (b.group == group or toks[j].forced):
            return j
    return len(toks)


def _layout(toks: list[_Tok], indent: int) -> list[_Line]:
    lines: list[_Line] = []
    text, col, start_col = "", indent, indent
    offsets: list[int] = []
    first_src = last_src = toks[0].line if toks else 0
    after: dict[int, int] = {}  # opener index -> column after it
    first_pipe: dict[int, int] = {}  # pipe group -> column of its first `>>`

    def flush(next_indent: int, next_src: int) -> None:
        nonlocal text, col, start_col, offsets, first_src, last_src
        lines.append(_Line(start_col, text, offsets, first_src, last_src))
        text, col, start_col, offsets = "", next_indent, next_indent, []
        first_src = last_src = next_src

    for i, t in enumerate(toks):
        space = t.space and bool(text)
        b = t.brk
        if b is not None and text:
            too_long = b.greedy and col + int(space) + _width(toks, i, _segment_end(toks, i)) > WIDTH
            if t.forced or too_long:
                if b.kind == "pipe":
                    cont = first_pipe.get(b.group, indent + 2 * INDENT)
                else:
                    cont = after.get(b.opener, indent + 2 * INDENT) if b.opener is not None else indent + 2 * INDENT
                if cont < col:  # a break that gains nothing is not taken
                    flush(cont, t.line)
                    space = False
        if space:
            text += " "
            col += 1
        if b is not None and b.kind == "pipe":
            first_pipe.setdefault(b.group, col)
        text += t.text
        col += len(t.text)
        offsets.append(t.pos)
        last_src = max(last_src, t.end_line)
        if t.text in _OPENERS:
            after[i] = col
    if text or not lines:
        flush(indent, last_src)
    return lines


# ---------------------------------------------------------------- items and groups
@dataclass
class _Braced:
    header: list[Tree[Token] | Token]
    groups: list[tuple[Token, list[Tree[Token]], Token]]  # ({, items, })
    middles: list[list[Token]]  # tokens between groups (`else`)


def _split_braced(node: Tree[Token]) -> _Braced | None:
    kids = [k for k in node.children if k is not None]
    if not any(isinstance(k, Token) and str(k) == "{" for k in kids):
        return None
    out = _Braced([], [], [])
    i = 0
    while i < len(kids) and not (isinstance(kids[i], Token) and str(kids[i]) == "{"):
        out.header.append(kids[i])
        i += 1
    while i < len(kids):
        k = kids[i]
        if isinstance(k, Token) and str(k) == "{":
            items: list[Tree[Token]] = []
            j = i + 1
            while not (isinstance(kids[j], Token) and str(kids[j]) == "}"):
                c = kids[j]
                if isinstance(c, Tree):
                    items.extend(x for x in c.children if isinstance(x, Tree)) if c.data == "block_body" \
                        else items.append(c)
                j += 1
            out.groups.append((k, items, kids[j]))  # type: ignore[arg-type]
            i = j + 1
        elif isinstance(k, Token) and str(k) != ";":
            if len(out.middles) < len(out.groups):
                out.middles.append([])
            out.middles[-1].append(k)
            i += 1
        else:
            i += 1
    return out


class _Printer:
    def __init__(self, text: str, comments: list[tuple[int, str]]) -> None:
        self.text = text
        self.comment_pos = [p for p, _ in comments]

    def _has_comment(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self.comment_pos, start)
        return i < len(self.comment_pos) and self.comment_pos[i] < end

    def item(self, node: Tree[Token], indent: int) -> list[_Line]:
        braced = _split_braced(node)
        if braced is None:
            return _layout(_flat(node), indent)
        if node.data in _INLINE_OK:
            inline = self._inline(node, indent)
            if inline is not None:
                return [inline]
        lines: list[_Line] = []
        f = _Flattener()
        self._header(node, braced, f)
        for g, (open_, items, close) in enumerate(braced.groups):
            if g:  # `} else {` continues the closing line
                f = _Flattener()
                for m in braced.middles[g - 1]:
                    f.emit(m)
            f.emit(open_)
            empty = not items and not self._has_comment(open_.start_pos or 0, close.start_pos or 0)
            if empty:
                f.emit(close, attach=True)
            head_lines = _layout(f.toks, indent)
            if g:
                lines[-1].text += " " + head_lines[0].text
                lines[-1].toks += head_lines[0].toks
                lines[-1].last_src = max(lines[-1].last_src, head_lines[0].last_src)
                head_lines = head_lines[1:]
            lines += head_lines
            if not empty:
                lines += self.rows(items, indent + INDENT)
                lines.append(_Line(indent, "}", [close.start_pos or 0], close.line or 0, close.line or 0))
        return lines

    @staticmethod
    def _header(node: Tree[Token], braced: _Braced, f: _Flattener) -> None:
        for h in braced.header:
            if node.data == "preset_def" and isinstance(h, Token) and str(h) == ":":
                f.emit(h, spaced=True)  # `preset gpt2 : transformer.decoder`
            else:
                f.node(h)

    def _inline(self, node: Tree[Token], indent: int) -> _Line | None:
        """The statement on one line, `header { a; b }`, if it was written on one and fits."""
        toks = list(_tokens(node))
        if toks[0].line != toks[-1].end_line or self._has_comment(toks[0].start_pos or 0, toks[-1].end_pos or 0):
            return None
        f = _Flattener()
        if not self._inline_into(node, f) or any(t.forced for t in f.toks):
            return None
        line = _layout(f.toks, indent)
        return line[0] if len(line) == 1 and indent + len(line[0].text) <= WIDTH else None

    def _inline_into(self, node: Tree[Token], f: _Flattener) -> bool:
        braced = _split_braced(node)
        if braced is None:
            f.node(node)
            return True
        if node.data not in _INLINE_OK:
            return False
        self._header(node, braced, f)
        for g, (open_, items, close) in enumerate(braced.groups):
            f.emit(open_)
            for k, it in enumerate(items):
                if k:
                    if _split_braced(items[k - 1]) is not None:  # nothing may separate `{ ... }` from what follows
                        return False
                    f.toks[-1].text += ";"
                f.space_next = True
                if not self._inline_into(it, f):
                    return False
            f.emit(close, attach=not items, spaced=bool(items))
            for m in braced.middles[g] if g < len(braced.middles) else []:
                f.emit(m)
        return True

    def rows(self, items: list[Tree[Token]], indent: int) -> list[_Line]:
        """Statements in a `{ ... }` body: those that shared a source line share one if they fit."""
        out: list[_Line] = []
        prev_last = -1
        prev_single = False
        prev_braced = False  # a statement with a `{ ... }` body ends its row (`x = ? in {a, b}` does not)
        for it in items:
            lines = self.item(it, indent)
            toks = list(_tokens(it))
            first = toks[0].line or 0
            single = len(lines) == 1
            if (out and single and prev_single and first == prev_last and not prev_braced
                    and indent + len(out[-1].text) + 2 + len(lines[0].text) <= WIDTH):
                row = out[-1]
                row.text += "; " + lines[0].text
                row.toks += lines[0].toks
                row.last_src = max(row.last_src, lines[0].last_src)
            else:
                out += lines
            prev_last = max(t.end_line or 0 for t in toks if str(t) != ";")
            prev_single = single
            prev_braced = _split_braced(it) is not None
        return out


# ---------------------------------------------------------------- comments and blank lines
def _comments(text: str, tree: Tree[Token]) -> list[tuple[int, str]]:
    """Every comment as (offset, text): the `#...` runs in the gaps between tokens."""
    out: list[tuple[int, str]] = []
    prev = 0
    for t in sorted(_tokens(tree), key=lambda t: t.start_pos or 0):
        out += [(prev + m.start(), m.group().rstrip()) for m in _COMMENT.finditer(text[prev:t.start_pos or 0])]
        prev = t.end_pos or 0
    out += [(prev + m.start(), m.group().rstrip()) for m in _COMMENT.finditer(text[prev:])]
    return out


def _place_comments(lines: list[_Line], comments: list[tuple[int, str]], text: str) -> list[_Line]:
    """Each comment goes where its neighbour token went: a trailing one after the token before it, one on
    its own line above the line of the token after it (indented as that line, inside a closing `}`)."""
    where = sorted((off, i) for i, ln in enumerate(lines) for off in ln.toks)
    offsets = [o for o, _ in where]
    before: dict[int, list[_Line]] = {}
    trailing: dict[int, list[str]] = {}
    at_end: list[_Line] = []
    for pos, body in comments:
        line_start = text.rfind("\n", 0, pos) + 1
        src_line = text.count("\n", 0, pos) + 1
        k = bisect.bisect_left(offsets, pos)
        if text[line_start:pos].strip() and k > 0:
            trailing.setdefault(where[k - 1][1], []).append(body)
        elif k < len(where):
            target = lines[where[k][1]]
            indent = target.indent + (INDENT if target.closes else 0)
            before.setdefault(where[k][1], []).append(_Line(indent, body, [], src_line, src_line, target.item, True))
        else:
            at_end.append(_Line(0, body, [], src_line, src_line, -1, True))
    out: list[_Line] = []
    for i, ln in enumerate(lines):
        out += before.get(i, [])
        extra = trailing.get(i, [])
        for body in extra[:-1]:  # several trailing comments joined onto one line: all but the last above it
            out.append(_Line(ln.indent + (INDENT if ln.closes else 0), body, [], ln.first_src, ln.first_src,
                             ln.item, True))
        if extra:
            ln.text += "  " + extra[-1]
        out.append(ln)
    return out + at_end


def _join(lines: list[_Line], text: str, defs: set[int]) -> str:
    blank = [not s.strip() for s in text.split("\n")]
    gap = [False] * len(lines)  # a blank line before line k, as in the source
    for k in range(1, len(lines)):
        prev, ln = lines[k - 1], lines[k]
        gap[k] = (not prev.opens and not ln.closes
                  and any(blank[i - 1] for i in range(prev.last_src + 1, ln.first_src) if 0 < i <= len(blank)))
    out: list[str] = []
    for k, ln in enumerate(lines):
        if k:
            prev = lines[k - 1]
            # a top-level definition stands apart, with the comments right above it
            sep = ln.indent == 0 and prev.indent == 0 and ln.item != prev.item and not prev.opens
            if gap[k] or (sep and (prev.item in defs or (ln.item in defs and _attached(lines, gap, k)))):
                out.append("")
        out.append(ln.render())
    return "\n".join(out) + "\n" if out else ""


def _attached(lines: list[_Line], gap: list[bool], k: int) -> bool:
    """Whether line k and the lines after it down to its item's first code line have no blank between."""
    j = k
    while j < len(lines) and lines[j].comment:
        j += 1
        if j < len(lines) and gap[j]:
            return False
    return True


# ---------------------------------------------------------------- entry points
def format_text(text: str, path: str = "<input>") -> str:
    """The canonical form of an MSL text. Raises FormatError if it has syntax errors."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    bag = DiagnosticBag()
    if parse_msl(SourceFile(path, text), bag) is None:
        raise FormatError(bag.sorted())
    tree = _tree_parser().parse(text)
    comments = _comments(text, tree)
    printer = _Printer(text, comments)
    lines: list[_Line] = []
    defs: set[int] = set()
    for i, node in enumerate(k for k in tree.children if isinstance(k, Tree)):
        item_lines = printer.item(node, 0)
        for ln in item_lines:
            ln.item = i
        if node.data in _DEFINITIONS:
            defs.add(i)
        lines += item_lines
    return _join(_place_comments(lines, comments, text), text, defs)


def _expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(p.rglob("*.msl")) if p.is_dir() else [p]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="metagenc fmt", description="Format MSL files in place, canonically.")
    ap.add_argument("files", nargs="+", metavar="FILE", help="files or folders of .msl files; `-` reads stdin")
    ap.add_argument("--check", action="store_true", help="write nothing; list files that would change, exit 1 if any")
    ap.add_argument("--diff", action="store_true", help="write nothing; print a unified diff of the changes")
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return EXIT_USAGE if e.code else EXIT_OK
    status = EXIT_OK
    if args.files == ["-"]:
        src = sys.stdin.read()
        try:
            sys.stdout.write(format_text(src, "<stdin>"))
        except FormatError as e:
            sys.stderr.write(str(e))
            return EXIT_INPUT
        return EXIT_OK
    for path in _expand(args.files):
        try:
            original = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            print(f"metagenc fmt: cannot read `{path}`: {getattr(e, 'strerror', None) or e}", file=sys.stderr)
            status = EXIT_INPUT
            continue
        try:
            formatted = format_text(original, str(path))
        except FormatError as e:
            sys.stderr.write(str(e))
            print(f"metagenc fmt: not formatting `{path}`: it has syntax errors", file=sys.stderr)
            status = EXIT_INPUT
            continue
        if formatted == original:
            continue
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(original.splitlines(True), formatted.splitlines(True),
                                                       f"{path}", f"{path} (formatted)"))
        if args.check:
            print(f"would reformat {path}")
            status = EXIT_INPUT
        elif not args.diff:
            path.write_text(formatted, encoding="utf-8")
            print(f"reformatted {path}")
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
