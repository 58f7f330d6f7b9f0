"""Lines of Python source held in string literals (issue 20's "lines of code in strings"), per file and in all.

Every str constant that is not a docstring (an f-string: its literal parts, `x` for each field) is normalised as a
format template ({{ -> {, }} -> }, {name} -> name, the lowering tables' `?` markers dropped), dedented, and counted
when it parses as Python (alone, as a block header followed by an indented `pass`, or as lines of an indented body)
into a statement or an expression with an operation (a call, an operator, a subscript, ...), not a bare name,
dotted name, keyword alone (a dict key such as "return") or constant. Its non-blank lines count. A heuristic: it
also counts one-line emitter text such as `w.line("return batch")`, so compare like with like (the same script on
two trees).

Usage: python benchmarks/code_in_strings.py [FOLDER (default backends)]
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from pathlib import Path

CODE = (ast.Call, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.FunctionDef, ast.ClassDef, ast.For,
        ast.While, ast.If, ast.With, ast.BinOp, ast.Compare, ast.Subscript, ast.Lambda, ast.Import, ast.ImportFrom,
        ast.Raise, ast.Try, ast.comprehension, ast.BoolOp, ast.UnaryOp, ast.IfExp)


def _normalise(s: str) -> str:
    s = s.replace("{{", "\0").replace("}}", "\1")
    s = re.sub(r"\{(\w+)(![rs])?\}", r"\1", s)
    return s.replace("\0", "{").replace("\1", "}").replace("?", "")


def is_code(s: str) -> bool:
    t = textwrap.dedent(_normalise(s)).strip("\n")
    if not t.strip() or t.strip().isidentifier():  # a name or a keyword alone (a dict key "return") is no code
        return False
    block = "if 1:\n" + textwrap.indent(t, " ")
    for cand in (t, t + "\n    pass", block, block + "\n     pass"):
        try:
            tree = ast.parse(cand)
        except (SyntaxError, ValueError):
            continue
        wrapper = tree.body[0] if cand.startswith("if 1:") else None
        return any(isinstance(n, CODE) and n is not wrapper for n in ast.walk(tree))
    return False


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body:
            b = n.body[0]
            if isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                out.add(id(b.value))
    return out


def lines_in_strings(path: Path) -> int:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs, parts, texts = _docstrings(tree), set(), []
    for n in ast.walk(tree):
        if isinstance(n, ast.JoinedStr):
            parts |= {id(v) for v in n.values}
            texts.append("".join(str(v.value) if isinstance(v, ast.Constant) else "x" for v in n.values))
    texts += [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
              and id(n) not in docs and id(n) not in parts]
    return sum(sum(1 for ln in t.split("\n") if ln.strip()) for t in texts if is_code(t))


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "backends")
    counts = {f: lines_in_strings(f) for f in sorted(root.rglob("*.py"))}
    for f, k in sorted(counts.items(), key=lambda x: -x[1]):
        if k:
            print(f"{k:6d}  {f}")
    print(f"{sum(counts.values()):6d}  total")


if __name__ == "__main__":
    main()
