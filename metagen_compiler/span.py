"""Source files and spans: every AST, IR and graph node points back into the text it came from."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property

__all__ = ["NO_SPAN", "SourceFile", "Span"]


@dataclass(frozen=True)
class SourceFile:
    """A named text. `path` is what diagnostics print, as the user gave it."""

    path: str
    text: str

    # Both indexes are built once per file, on first use (a frozen dataclass still has a __dict__ for
    # cached_property), so a position costs O(log n) and a source line O(1) however many spans a file has.
    @cached_property
    def _lines(self) -> list[str]:
        # split at "\n" only, as positions count lines (str.splitlines also splits at \x0b, \x0c, \u2028, ...,
        # which would show the wrong source line under a caret); a CRLF line loses its "\r"
        return [ln.removesuffix("\r") for ln in self.text.split("\n")]

    @cached_property
    def _line_starts(self) -> list[int]:
        """Offsets at which each line starts (after each newline), for bisection."""
        starts = [0]
        find = self.text.find
        i = find("\n")
        while i >= 0:
            starts.append(i + 1)
            i = find("\n", i + 1)
        return starts

    def line_text(self, line: int) -> str:
        lines = self._lines
        if 1 <= line <= len(lines):
            return lines[line - 1]
        return ""

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        starts = self._line_starts
        line = bisect_right(starts, offset)  # the number of line starts at or before offset
        return line, offset - starts[line - 1] + 1


@dataclass(frozen=True)
class Span:
    """A half-open range [start, end) of character offsets in one file, with 1-based line/col."""

    file: SourceFile | None
    start: int
    end: int
    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def of(file: SourceFile, start: int, end: int) -> Span:
        line, col = file.position(start)
        end_line, end_col = file.position(max(start, end))
        return Span(file, start, max(start, end), line, col, end_line, end_col)

    @property
    def path(self) -> str:
        return self.file.path if self.file else "<builtin>"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    def __repr__(self) -> str:  # keeps dumps short and stable
        return f"Span({self})"

    def merge(self, other: Span) -> Span:
        if self.file is None or other.file is not self.file:
            return self
        return Span.of(self.file, min(self.start, other.start), max(self.end, other.end))


NO_SPAN = Span(None, 0, 0, 0, 0, 0, 0)
