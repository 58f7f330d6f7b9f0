"""Keeps the VS Code grammar's primitive list in step with the compiler's table.

    python -m metagen_compiler.editor.textmate [--check]

rewrites the alternation of `support.function.primitive.msl` in editors/vscode/syntaxes/msl.tmLanguage.json
from metagen_compiler.primitives.PRIMITIVES (in the table's order); `--check` only reports whether it is
current (exit 1 if not). tests/test_editor.py checks the same.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from ..primitives import PRIMITIVES

GRAMMAR = Path(__file__).resolve().parents[2] / "editors" / "vscode" / "syntaxes" / "msl.tmLanguage.json"
SCOPE = "support.function.primitive.msl"


def primitive_match() -> str:
    alt = "|".join(PRIMITIVES)
    return rf"(?:(?<=>>)|(?<=>>\s)|(?<=:)|(?<=:\s))\b({alt})\b|\b({alt})\b(?=\s*\()"


def updated(text: str) -> str:
    data = json.loads(text)

    def visit(node: object) -> None:
        if isinstance(node, dict):
            if node.get("name") == SCOPE and "match" in node:
                node["match"] = primitive_match()
            for v in node.values():
                visit(v)
        elif isinstance(node, list):
            for v in node:
                visit(v)

    visit(data)
    m = re.match(r"\{\n( *)", text)
    indent = len(m.group(1)) if m else 2
    return json.dumps(data, indent=indent, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = GRAMMAR.read_text(encoding="utf-8")
    new = updated(text)
    if "--check" in args:
        if new != text:
            print(f"{GRAMMAR}: the primitive list is out of date; run python -m metagen_compiler.editor.textmate")
            return 1
        return 0
    GRAMMAR.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
