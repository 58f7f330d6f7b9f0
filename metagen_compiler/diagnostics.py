"""Diagnostics are data: a code from the registry, a message, a primary span, notes.

One renderer prints them as `file:line:col: error[code]: message`, the source line and a caret;
another as JSON. A DiagnosticBag collects them so one run reports many.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from metagen_compiler.semantics.limits import MAX_DIAGNOSTICS_SHOWN

from .errorcodes import CODES
from .span import Span

__all__ = [
    "BackendError",
    "CompileError",
    "Diagnostic",
    "DiagnosticBag",
    "Note",
    "Severity",
    "did_you_mean",
    "render_json",
    "render_text",
]


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True)
class Note:
    message: str
    span: Span | None = None


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    span: Span | None
    notes: tuple[Note, ...] = ()
    hint: str | None = None

    def __post_init__(self) -> None:
        assert self.code in CODES, f"unregistered diagnostic code {self.code}"

    def sort_key(self) -> tuple[str, int, int, str, str]:
        s = self.span
        return (s.path if s else "", s.start if s else 0, 0 if self.severity == Severity.ERROR else 1, self.code, self.message)


class CompileError(Exception):
    """Raised to stop a pass early; the diagnostics it carries are already in the bag."""


class BackendError(Exception):
    """Raised by a backend that cannot emit for a reason in the input (an opset that lacks an op,
    weights too large): it carries diagnostics, which the CLI renders like any other (exit 1)."""

    def __init__(self, diagnostics: Iterable[object]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("; ".join(getattr(d, "message", str(d)) for d in self.diagnostics))


@dataclass
class DiagnosticBag:
    items: list[Diagnostic] = field(default_factory=list)
    # the diagnostics already in `items`, for a constant-time duplicate check; `items` stays the public
    # list (callers extend it), so the set catches up with whatever was appended since the last add
    _seen: set[Diagnostic] = field(default_factory=set, init=False, repr=False, compare=False)
    _synced: int = field(default=0, init=False, repr=False, compare=False)

    def error(self, code: str, message: str, span: Span | None, *, notes: Iterable[Note] = (), hint: str | None = None) -> Diagnostic:
        d = Diagnostic(Severity.ERROR, code, message, span, tuple(notes), hint)
        self.add(d)
        return d

    def warning(self, code: str, message: str, span: Span | None, *, notes: Iterable[Note] = (), hint: str | None = None) -> Diagnostic:
        d = Diagnostic(Severity.WARNING, code, message, span, tuple(notes), hint)
        self.add(d)
        return d

    def add(self, d: Diagnostic) -> None:
        if self._synced > len(self.items):  # the list was replaced or shortened: start over
            self._seen, self._synced = set(), 0
        if self._synced < len(self.items):
            self._seen.update(self.items[self._synced:])
        if d not in self._seen:  # the same fact found twice is reported once
            self.items.append(d)
            self._seen.add(d)
        self._synced = len(self.items)

    @property
    def has_errors(self) -> bool:
        return any(d.severity == Severity.ERROR for d in self.items)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == Severity.WARNING]

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=Diagnostic.sort_key)

    def check(self) -> None:
        """Stop the pipeline if errors were reported."""
        if self.has_errors:
            raise CompileError()


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A hint naming the closest candidate, or None."""
    cands = sorted(set(candidates))
    match = difflib.get_close_matches(name, cands, n=1, cutoff=0.6)
    if not match:
        lowered = {c.lower(): c for c in cands}
        if name.lower() in lowered:
            match = [lowered[name.lower()]]
    return f"did you mean `{match[0]}`?" if match else None


SNIPPET_WIDTH = 160  # a longer source line is cut to this many characters around the caret
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # one character for one: the caret stays aligned


def _snippet(span: Span) -> list[str]:
    if span.file is None or span.line <= 0:
        return []
    text = span.file.line_text(span.line).replace("\t", " ")
    if not text.isprintable():  # control characters (an escape sequence, say) never reach the terminal raw
        text = _CONTROL.sub("\ufffd", text)
    width = len(str(span.line))
    if span.end_line == span.line:
        n = max(1, span.end_col - span.col)
    else:
        n = max(1, len(text) - span.col + 1)
    col = span.col
    if len(text) > SNIPPET_WIDTH:  # a megabyte-long line: show a window around the caret, marked with ...
        left = max(0, min(col - 1 - SNIPPET_WIDTH // 4, len(text) - SNIPPET_WIDTH))
        cut = text[left:left + SNIPPET_WIDTH]
        text = ("..." if left else "") + cut + ("..." if left + SNIPPET_WIDTH < len(text) else "")
        col = col - left + (3 if left else 0)
        n = max(1, min(n, SNIPPET_WIDTH - (col - 1) + (3 if left else 0)))
    gutter = " " * width
    return [f"{gutter} |", f"{span.line} | {text}", f"{gutter} | {' ' * (col - 1)}{'^' * n}"]


def render_text(diags: Iterable[Diagnostic], limit: int | None = MAX_DIAGNOSTICS_SHOWN) -> str:
    """The diagnostics as text, the first `limit` of them in full (None: all) and a count of the rest,
    as compilers do: past a hundred errors, more text helps no one and costs time."""
    out: list[str] = []
    rest: list[Diagnostic] = []
    for i, d in enumerate(diags):
        if limit is not None and i >= limit:
            rest.append(d)
            continue
        where = f"{d.span}: " if d.span and d.span.file else ""
        out.append(f"{where}{d.severity.value}[{d.code}]: {d.message}")
        if d.span:
            out.extend(_snippet(d.span))
        for n in d.notes:
            nwhere = f"{n.span}: " if n.span and n.span.file else ""
            out.append(f"  = note: {nwhere}{n.message}")
            if n.span:
                out.extend("    " + line for line in _snippet(n.span))
        if d.hint:
            out.append(f"  = help: {d.hint}")
    if rest:
        errors = sum(1 for d in rest if d.severity == Severity.ERROR)
        parts = [f"{n} more {what}{'' if n == 1 else 's'}"
                 for n, what in ((errors, "error"), (len(rest) - errors, "warning")) if n]
        out.append(f"{' and '.join(parts)} not shown (the first {limit} diagnostics are above)")
    return "\n".join(out) + ("\n" if out else "")


def _span_json(s: Span | None) -> dict[str, object] | None:
    if s is None or s.file is None:
        return None
    return {"file": s.path, "line": s.line, "col": s.col, "end_line": s.end_line, "end_col": s.end_col}


def render_json(diags: Iterable[Diagnostic]) -> str:
    data = [
        {
            "severity": d.severity.value,
            "code": d.code,
            "title": CODES[d.code].title,
            "message": d.message,
            "span": _span_json(d.span),
            "notes": [{"message": n.message, "span": _span_json(n.span)} for n in d.notes],
            "hint": d.hint,
        }
        for d in diags
    ]
    return json.dumps(data, indent=2) + "\n"
