"""Syntax errors: Lark's exceptions turned into diagnostics, with repairs so that one run reports
each real mistake once.

The parser calls `SyntaxErrors.on_error` for every error Lark meets. Where one token fixes the text
(a misspelled keyword, a missing value, `)`, `}` or `->`, a stray token) the repair is checked by
parsing a few tokens further and then applied, so the parse goes on in step. Where none does, the
token is dropped, and errors right after it are taken as echoes of the first and stay quiet.
Parser internals (`RBRACE`, `__ANON_0`, `$END`) never reach a message: every terminal is described
in words.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_left, bisect_right
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_interactive_parser import InteractiveParser

from metagen_compiler.diagnostics import DiagnosticBag, Note, did_you_mean
from metagen_compiler.span import SourceFile, Span

__all__ = ["SyntaxErrors", "describe_token"]

# What a user calls each terminal. Raw terminal names never reach a diagnostic.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "QUANTITY": "a quantity (such as 86M, 20ms, 12GB)",
    "STRING": "a string",
    "COMPARE": "a comparison (<=, <, >=, >, ==, !=)",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/', '//' or '%'",
    "PIPE": "'>>'",
    "ARROW": "'->'",
    "EQUAL": "'='",
    "$END": "the end of the file",
}

MAX_EXPECTED_SHOWN = 10  # words of an `expected ...` list: every statement a model body takes fits


def describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    if tok.type in ("NAME", "NUMBER", "QUANTITY", "STRING"):
        return f"{_TERMINAL_WORDS[tok.type].split(' (')[0].removeprefix('a ')} `{tok.value}`"
    return f"'{tok.value}'"


class _Grammar:
    """What error handling needs to know about the grammar's terminals."""

    def __init__(self, lark: Lark) -> None:
        self.lark = lark
        self.literals = {t.name: str(t.pattern.value) for t in lark.terminals if t.pattern.type == "str"}
        self.keyword_terminals = [n for n, v in self.literals.items() if v.isidentifier()]
        self.keywords = frozenset(self.literals[n] for n in self.keyword_terminals)

    def is_literal(self, terminal: str) -> bool:
        return terminal in self.literals

    def keyword_of(self, terminal: str) -> str | None:
        """The keyword a terminal stands for (`MODEL` -> `model`), or None."""
        word = self.literals.get(terminal)
        return word if word is not None and word.isidentifier() else None

    def describe(self, terminal: str) -> str:
        if terminal in _TERMINAL_WORDS:
            return _TERMINAL_WORDS[terminal]
        if terminal in self.literals:
            return f"'{self.literals[terminal]}'"
        return terminal.lower()

    def expected_list(self, expected: set[str]) -> str:
        """`expected` in words: values first, then keywords, then punctuation; `;` only when alone."""
        shown = {e for e in expected if e != "SEMICOLON"} or set(expected)
        words = sorted({self.describe(e) for e in shown if e != "$END"},
                       key=lambda w: (w.startswith("'") and not w[1:2].isalpha(), w.startswith("'"), w))
        if len(words) > MAX_EXPECTED_SHOWN:
            words = words[:MAX_EXPECTED_SHOWN] + ["..."]
        if "$END" in shown:
            words.append(_TERMINAL_WORDS["$END"])
        if len(words) <= 1:
            return words[0] if words else "nothing"
        return ", ".join(words[:-1]) + " or " + words[-1]

    def lex_all(self, text: str) -> list[Token]:
        """Every token of `text`, best effort: characters no token starts with are blanked out."""
        chars = list(text)
        for _ in range(_MAX_SYNTAX_ERRORS * 4):
            try:
                return list(self.lark.lex("".join(chars)))
            except UnexpectedCharacters as e:
                p = e.pos_in_stream or 0
                end = p + 1
                if chars[p] == '"':
                    eol = text.find("\n", p)
                    end = len(text) if eol < 0 else eol
                chars[p:end] = [" "] * (end - p)
        return []


@functools.lru_cache(maxsize=4)
def _grammar(lark: Lark) -> _Grammar:
    return _Grammar(lark)


_MAX_SYNTAX_ERRORS = 20
_MAX_HANDLED = 200  # errors (echoes included) looked at before the parse gives up
_MAX_POP = 64  # parser stack entries an abandoned statement may take back
_BLANK = re.compile(r"(?:\s|#[^\n]*)*")
_OPENERS = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE"}
_LOOKAHEAD = 3  # tokens a repair must carry the parse past
_LOOKAHEAD_POP = 8  # more for abandoning a statement, which is a bolder guess
_RESYNC = 3  # tokens the parser must take after an unrepaired error before the next one is reported
# tokens that can start an expression: a value is missing when none of these comes
_VALUE_START = frozenset({"NUMBER", "QUANTITY", "STRING", "NAME", "LPAR", "LSQB", "QMARK", "TRUE", "FALSE", "MINUS", "NOT"})


class SyntaxErrors:
    """Turns Lark's errors into diagnostics while the parse goes on.

    Each error is repaired where one token fixes it (a misspelled keyword, a missing value, a missing
    `)` or `}`, a stray token), checked by parsing a few tokens further. Where no repair works, the
    token is dropped, and errors that follow at once are echoes of the first and stay quiet."""

    def __init__(self, file: SourceFile, bag: DiagnosticBag, lark: Lark) -> None:
        self.g = _grammar(lark)
        self.file = file
        self.bag = bag
        self.reported = 0
        self.seen = 0  # errors Lark has met, echoes included
        self.handled: set[int] = set()
        self.quiet_from: int | None = None  # end of the last unrepaired error: errors right after it are echoes
        self.quiet_line = -1

    # ------------------------------------------------------------ helpers
    # The file's tokens, lexed on the first error. Tokens do not overlap, so their starts and ends are
    # both sorted: each lookup below is a bisection, and a file with thousands of errors costs n log n.
    @functools.cached_property
    def tokens(self) -> list[Token]:
        return self.g.lex_all(self.file.text)

    @functools.cached_property
    def _starts(self) -> list[int]:
        return [t.start_pos or 0 for t in self.tokens]

    @functools.cached_property
    def _ends(self) -> list[int]:
        return [t.end_pos or 0 for t in self.tokens]

    def _before(self, pos: int, k: int = 1) -> Token | None:
        n = bisect_right(self._ends, pos)  # tokens that end at or before pos
        return self.tokens[n - k] if n >= k else None

    def _after(self, pos: int, n: int = _LOOKAHEAD) -> list[Token]:
        i = bisect_left(self._starts, pos)
        return self.tokens[i:i + n]

    def _span(self, tok: Token) -> Span:
        start = tok.start_pos or 0
        return Span.of(self.file, start, tok.end_pos or start + 1)

    def _echo(self, start: int, line: int) -> bool:
        """An error is an echo of the last unrepaired one when it is on the same line, or when the
        parser has taken fewer than `_RESYNC` tokens since."""
        if self.quiet_from is None:
            return False
        if line == self.quiet_line or _BLANK.fullmatch(self.file.text, self.quiet_from, start) is not None:
            return True
        taken = bisect_left(self._starts, start) - bisect_left(self._starts, self.quiet_from)
        return taken < _RESYNC

    def _quiet(self, end: int) -> None:
        self.quiet_from = end
        self.quiet_line = self.file.position(end)[0]

    def _error(self, code: str, message: str, span: Span, *, notes: tuple[Note, ...] = (), hint: str | None = None) -> None:
        self.reported += 1
        self.bag.error(code, message, span, notes=notes, hint=hint)

    def _opener(self, closer: str, before: int) -> Token | None:
        """The unmatched `(`, `[` or `{` that `closer` would close at offset `before`."""
        opener, depth = _OPENERS[closer], 0
        n = bisect_right(self._ends, before)
        for t in reversed(self.tokens[:n]):
            if t.type == closer:
                depth += 1
            elif t.type == opener:
                if depth == 0:
                    return t
                depth -= 1
        return None

    def _fits(self, ip: InteractiveParser, feed: list[Token], after: int, lookahead: int = _LOOKAHEAD) -> bool:
        """Whether the parser takes `feed` and then the next `lookahead` tokens of the file."""
        trial = ip.copy(deepcopy_values=False)
        rest = self._after(after, lookahead)
        try:
            for t in feed + rest:
                trial.feed_token(t)
            if len(rest) < lookahead:
                trial.feed_eof(rest[-1] if rest else None)
        except UnexpectedInput:
            return False
        return True

    # ------------------------------------------------------------ lark's callback
    def on_error(self, e: UnexpectedInput) -> bool:
        self.handled.add(id(e))
        self.seen += 1
        if self.reported >= _MAX_SYNTAX_ERRORS or (self.seen > _MAX_HANDLED and self.reported):
            return False  # enough said: the rest would be echoes, and each costs a repair attempt
        if isinstance(e, UnexpectedCharacters):
            return self._characters(e)
        if isinstance(e, UnexpectedToken):
            return self._token(e)
        end = len(self.file.text.rstrip())
        self._error("E002", "unexpected end of file", Span.of(self.file, max(0, end - 1), end))
        return False

    def finish(self, e: UnexpectedInput) -> None:
        """The error that ended the parse, unless the callback saw it already."""
        if id(e) not in self.handled and self.reported < _MAX_SYNTAX_ERRORS:
            self.on_error(e)

    def _characters(self, e: UnexpectedCharacters) -> bool:
        text, p = self.file.text, e.pos_in_stream or 0
        ch = text[p] if p < len(text) else ""
        echo = self._echo(p, e.line)
        ip = getattr(e, "interactive_parser", None)
        if ch == '"':
            eol = text.find("\n", p)
            eol = len(text) if eol < 0 else eol
            if not echo:
                self._error("E002", "unterminated string", Span.of(self.file, p, eol),
                            hint='close the string with `"` on the same line')
            if ip is not None:
                # skip the rest of the line and go on as if the string had been closed
                _skip(ip, text[p:eol])
                if "STRING" in ip.accepts():
                    ip.feed_token(Token("STRING", '""', p, e.line, e.column, e.line, e.column + 1, eol))
                    self.quiet_from = None
                    return True
            self._quiet(eol)
            return ip is not None
        if not echo:
            shown = ch if ch.isprintable() else ascii(ch)
            plain = _LOOKALIKES.get(ch)
            self._error("E003", f"unexpected character `{shown}`", Span.of(self.file, p, p + 1),
                        hint=f"write `{plain}` instead" if plain else None)
        self._quiet(p + 1)
        return True

    def _token(self, e: UnexpectedToken) -> bool:
        tok = e.token
        ip = e.interactive_parser
        expected = set(ip.accepts()) if ip is not None else set(e.expected)
        if tok.type == "$END":
            end = len(self.file.text.rstrip())
            if self._echo(len(self.file.text), -1):
                return False
            span = Span.of(self.file, max(0, end - 1), end)
            if "RBRACE" in expected:
                opener = self._opener("RBRACE", len(self.file.text))
                if opener is None and self.reported:
                    return False  # the braces balance: an earlier repair guessed wrong, not the file
                notes = (Note("this `{` is not closed", self._span(opener)),) if opener is not None else ()
                self._error("E002", "unexpected end of file: a `{` is never closed", span, notes=notes,
                            hint="add the missing `}`")
            else:
                self._error("E001", f"unexpected end of file; expected {self.g.expected_list(expected)}", span)
            return False
        start, end = tok.start_pos or 0, tok.end_pos or 0
        echo = self._echo(start, tok.line or -1)
        prev, prev2 = self._before(start), self._before(start, 2)

        # `d_model =` at the end of a line: the name on the next line was taken as its value
        if (tok.type == "EQUAL" and prev is not None and prev2 is not None and prev.type == "NAME"
                and prev2.type in ("EQUAL", "COMPARE") and (prev.line or 0) > (prev2.line or 0)):
            if not echo:
                self._error("E001", f"expected a value after `{prev2}`", self._span(prev2),
                            hint=f"`{prev}` on the next line starts a new statement; give `{self._before(prev2.start_pos or 0)}` a value")
            eol = self.file.text.find("\n", end)
            eol = len(self.file.text) if eol < 0 else eol
            if ip is not None:
                _skip(ip, self.file.text[end:eol])
            self._quiet(eol)
            return True

        repaired = self._repair(tok, expected, ip, prev, echo)
        if repaired:
            self.quiet_from = None
            return True
        if not echo:
            self._error("E001", f"unexpected {describe_token(tok)}; expected {self.g.expected_list(expected)}",
                        self._span(tok), hint=self._keyword_hint(tok, expected))
        self._quiet(end)
        return True

    def _keyword_hint(self, tok: Token, expected: set[str]) -> str | None:
        if tok.type != "NAME" or str(tok) in self.g.keywords:
            return None
        return did_you_mean(str(tok), [w for w in (self.g.keyword_of(t) for t in expected) if w])

    def _repair(self, tok: Token, expected: set[str], ip: InteractiveParser | None, prev: Token | None,
                echo: bool) -> bool:
        """Try one-token repairs; report and apply the first that lets the parse go on."""
        if ip is None:
            return False
        end = tok.end_pos or 0

        def like(type_: str, value: str) -> Token:
            return Token(type_, value, tok.start_pos, tok.line, tok.column, tok.line, tok.column, tok.start_pos)

        if self._repair_previous(tok, ip, echo):
            return True
        # a misspelled keyword: `modle` -> `model`
        hint = self._keyword_hint(tok, expected)
        if hint is not None:
            word = hint.split("`")[1]
            kw = next(t for t in expected if self.g.keyword_of(t) == word)
            fix = Token(kw, word, tok.start_pos, tok.line, tok.column, tok.end_line, tok.end_column, tok.end_pos)
            if self._fits(ip, [fix], end):
                if not echo:
                    self._error("E001", f"unexpected {describe_token(tok)}; expected {self.g.expected_list(expected)}",
                                self._span(tok), hint=hint)
                ip.feed_token(fix)
                return True
        # a missing value: `params <= }`
        if "NUMBER" in expected and tok.type not in _VALUE_START:
            zero = like("NUMBER", "0")
            if self._fits(ip, [zero, tok], end):
                if not echo:
                    after = f" after `{prev}`" if prev is not None else ""
                    self._error("E001", f"expected a value{after}, found {describe_token(tok)}", self._span(tok))
                ip.feed_token(zero)
                ip.feed_token(tok)
                return True
        # a missing `)`, `]`, `}`, `->`, ..., or name: closers first
        punct = sorted((t for t in expected if t != "SEMICOLON" and self.g.keyword_of(t) is None and self.g.is_literal(t)),
                       key=lambda t: (t not in _OPENERS, t))
        if "NAME" in expected and tok.type != "NAME":
            punct.insert(sum(1 for t in punct if t in _OPENERS), "NAME")
        for t in punct:
            ins = like(t, "_" if t == "NAME" else self.g.describe(t).strip("'"))
            if not self._fits(ip, [ins, tok], end):
                continue
            if not echo:
                notes: tuple[Note, ...] = ()
                if t in _OPENERS:
                    opener = self._opener(t, tok.start_pos or 0)
                    if opener is not None:
                        notes = (Note(f"to close this `{opener}`", self._span(opener)),)
                self._error("E001", f"expected {self.g.describe(t)} before {describe_token(tok)}",
                            self._span(tok), notes=notes)
            ip.feed_token(ins)
            ip.feed_token(tok)
            return True
        # a stray token: `task generation )`
        if self._fits(ip, [], end):
            if not echo:
                self._error("E001", f"unexpected {describe_token(tok)}; expected {self.g.expected_list(expected)}",
                            self._span(tok), hint=self._keyword_hint(tok, expected) or self._equal_hint(tok, prev))
            return True
        # an unfinished statement before a `}` or a new line: abandon it and go on from there
        starts_line = prev is None or (prev.end_line or 0) < (tok.line or 0)
        if tok.type == "RBRACE" or starts_line:
            values = ip.parser_state.value_stack
            for k in range(1, min(len(values), _MAX_POP) + 1):
                popped = values[-k]
                if isinstance(popped, Token) and popped.type == "LBRACE":
                    break  # never leave the enclosing `{ ... }`
                trial = ip.copy(deepcopy_values=False)
                del trial.parser_state.state_stack[-k:]
                del trial.parser_state.value_stack[-k:]
                if not self._fits(trial, [tok], end, _LOOKAHEAD_POP):
                    continue
                if not echo:
                    unfinished: tuple[Note, ...] = ()
                    first = _first_position(ip.parser_state.value_stack[-k:])
                    if first is not None and self.file.position(first)[0] < (tok.line or 0):
                        unfinished = (Note("the unfinished part starts here", Span.of(self.file, first, first + 1)),)
                    self._error("E001", f"unexpected {describe_token(tok)}; expected {self.g.expected_list(expected)}",
                                self._span(tok), notes=unfinished)
                del ip.parser_state.state_stack[-k:]
                del ip.parser_state.value_stack[-k:]
                ip.feed_token(tok)
                return True
        return False

    def _repair_previous(self, tok: Token, ip: InteractiveParser, echo: bool) -> bool:
        """The name just before `tok` was the mistake: a misspelled keyword (`retrun x`), or a keyword
        taken as a name because a `}` is missing before it (`params <= 1M` then `architecture gpt2`)."""
        values = ip.parser_state.value_stack
        prev = values[-1] if values else None
        if not isinstance(prev, Token) or prev.type != "NAME" or (prev.line or 0) == 0:
            return False
        before = self._before(prev.start_pos or 0)
        if before is not None and (before.end_line or 0) >= (prev.line or 0):
            return False  # only a name that begins its line is taken for a statement keyword
        back = ip.copy(deepcopy_values=False)
        del back.parser_state.state_stack[-1:]
        del back.parser_state.value_stack[-1:]
        end = tok.end_pos or 0
        word = str(prev)
        keywords = {w: t for t in self.g.keyword_terminals if (w := self.g.keyword_of(t))}

        def kw(t: str) -> Token:
            return Token(t, self.g.keyword_of(t) or word, prev.start_pos, prev.line, prev.column,
                         prev.end_line, prev.end_column, prev.end_pos)

        if word in keywords:  # a keyword read as a name: something before it is not closed
            for closer in ("RBRACE", "RPAR", "RSQB"):
                fix = [Token(closer, "", prev.start_pos, prev.line, prev.column, prev.line, prev.column, prev.start_pos),
                       kw(keywords[word]), tok]
                if not self._fits(back, fix, end):
                    continue
                if not echo:
                    opener = self._opener(closer, prev.start_pos or 0)
                    notes = (Note(f"to close this `{opener}`", self._span(opener)),) if opener is not None else ()
                    self._error("E001", f"expected {self.g.describe(closer)} before '{word}'", self._span(prev),
                                notes=notes)
                self._apply(ip, 1, fix)
                return True
            return False
        hint = did_you_mean(word, [w for w in (self.g.keyword_of(t) for t in back.accepts()) if w])
        if hint is None:
            return False
        fix = [kw(keywords[hint.split("`")[1]]), tok]
        if not self._fits(back, fix, end):
            return False
        if not echo:
            self._error("E001", f"unexpected name `{word}`", self._span(prev), hint=hint)
        self._apply(ip, 1, fix)
        return True

    @staticmethod
    def _apply(ip: InteractiveParser, pop: int, feed: list[Token]) -> None:
        del ip.parser_state.state_stack[-pop:]
        del ip.parser_state.value_stack[-pop:]
        for t in feed:
            ip.feed_token(t)

    def _equal_hint(self, tok: Token, prev: Token | None) -> str | None:
        """`task = generation`: statements that take a name take no `=`."""
        if tok.type != "EQUAL" or prev is None or self.g.keyword_of(prev.type) is None:
            return None
        nxt = self._after(tok.end_pos or 0)
        return f"`{prev}` takes no `=`: write `{prev} {nxt[0] if nxt else '...'}`"


# characters pasted from documents, and what MSL spells them as
_LOOKALIKES = {"×": "*", "÷": "/", "−": "-", "–": "-", "→": "->", "≤": "<=", "≥": ">=", "≠": "!=",
               "“": '"', "”": '"', "‘": "'", "’": "'", "\u00a0": " "}


def _skip(ip: InteractiveParser, text: str) -> None:
    """Move the lexer past `text` (the rest of a line the parse gives up on)."""
    state = ip.lexer_thread.state
    if state is not None:
        state.line_ctr.feed(text)


def _first_position(values: list[Any]) -> int | None:
    """Where the first of some parsed values (tokens or trees) starts."""
    for v in values:
        if isinstance(v, Token) and v.start_pos is not None:
            return v.start_pos
        if isinstance(v, Tree) and not getattr(v.meta, "empty", True):
            return int(v.meta.start_pos)
    return None
