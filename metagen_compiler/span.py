"""Source files and spans: every AST, IR and graph node points back into the text it came from."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SourceFile", "Span", "NO_SPAN"]


@dataclass(frozen=True)
class SourceFile:
    """A named text. `path` is what diagnostics print, as the user gave it."""

    path: str
    text: str

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        if 1 <= line <= len(lines):
            return lines[line - 1]
        return ""

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        line = self.text.count("\n", 0, offset) + 1
        start = self.text.rfind("\n", 0, offset) + 1
        return line, offset - start + 1


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
