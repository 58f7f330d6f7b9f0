"""Generate docs/diagnostics.md from the registry of codes (metagen_compiler/errorcodes.py), with an example
per code from the broken-spec corpus (tests/broken/). A tool, not part of the compiler: it compiles the corpus
through the driver, so it lives outside the registry, which every pass imports.

    python -m metagen_compiler.tools.diagnostics_doc > docs/diagnostics.md
"""

from __future__ import annotations

import re
from pathlib import Path

from metagen_compiler.semantics.program import read_source

from ..driver import compile_source
from ..errorcodes import CODES

__all__ = ["CORPUS", "examples", "markdown"]

# code prefix -> section heading of docs/diagnostics.md
_GROUPS = (
    ("E0", "Syntax and files"),
    ("E1", "Names and imports"),
    ("E2", "Types, units and values"),
    ("E3", "Modality, task and architecture"),
    ("E4", "Solving and constraints"),
    ("E5", "Backends"),
    ("W", "Warnings"),
    ("I", "Internal errors"),
)
_REPO = Path(__file__).resolve().parents[2]
CORPUS = Path("tests") / "broken"  # relative to the repository root
_SPEC_SUFFIXES = (".msl", ".yaml", ".yml")


def _corpus(root: Path) -> list[Path]:
    corpus = root / CORPUS
    if not corpus.is_dir():
        return []
    return sorted(p for p in corpus.rglob("*")
                  if p.suffix in _SPEC_SUFFIXES and "lib" not in p.relative_to(corpus).parts)


def examples(root: Path = _REPO) -> dict[str, str]:
    """For each code, an example from the broken-spec corpus (path relative to `root`, posix): the first
    file whose opening comment names the code, else the first file that reports it when compiled.
    Helper modules under `lib/` are not examples."""
    out: dict[str, str] = {}
    files = _corpus(root)
    for f in files:
        first = f.read_text(encoding="utf-8").split("\n", 1)[0]
        for c in re.findall(r"\b[EWI][0-9]{3}\b", first):
            if c in CODES:
                out.setdefault(c, f.relative_to(root).as_posix())
    if files and set(CODES) - set(out):
        for f in files:
            for d in compile_source(read_source(f, display=str(f))).bag.items:
                out.setdefault(d.code, f.relative_to(root).as_posix())
    return out


def markdown(root: Path = _REPO) -> str:
    """docs/diagnostics.md: every code with its title, explanation and an example from the corpus."""
    ex = examples(root)
    out = [
        "# Diagnostics",
        "",
        "<!-- Generated from metagen_compiler/errorcodes.py by `python -m metagen_compiler.tools.diagnostics_doc > docs/diagnostics.md`;",
        "     tests/test_broken_specs.py checks that this file is current. Do not edit by hand. -->",
        "",
        "Every diagnostic metagenc prints has a stable code: `E` for errors, `W` for warnings, `I` for",
        "internal compiler errors (bugs). It is printed as `file:line:col: error[E203]: message`, followed",
        "by the source line, carets under the offending text, notes and a hint. Each example below is a",
        "broken spec from the test corpus; its expected output is in tests/__snapshots__/test_broken_specs.ambr.",
    ]
    for prefix, heading in _GROUPS:
        codes = [c for c in CODES.values() if c.code.startswith(prefix)]
        if not codes:
            continue
        out += ["", f"## {heading}", "", "| code | title | explanation | example |", "|---|---|---|---|"]
        for c in codes:
            example = f"[{Path(ex[c.code]).name}](../{ex[c.code]})" if c.code in ex else "—"
            out.append(f"| {c.code} | `{c.title}` | {c.explanation} | {example} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
