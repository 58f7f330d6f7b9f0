"""resolve: imports (stdlib, beside the file, -I paths, cycles) and the model's names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metagen_compiler.semantics.program import load_program
from metagen_compiler.syntax import ast as A

from ..compilation import Compilation
from ..diagnostics import Note


@dataclass(frozen=True)
class ResolvePass:
    name: ClassVar[str] = "resolve"
    doc: ClassVar[str] = "Load imported modules, detect cycles, build symbol tables, pick the model."

    def run(self, comp: Compilation) -> None:
        assert comp.module is not None
        try:
            here = Path(comp.source.path).resolve().parent
        except (OSError, ValueError):  # a path no file system can hold (a lone surrogate): its folder as written
            here = Path(comp.source.path).parent
        search = [here, *comp.options.search_paths]
        comp.program = load_program(comp.module, comp.bag, search, device_profiles=comp.options.device_profiles)
        models = comp.module.models
        if not models:
            comp.bag.error("E107", "this file defines no model", comp.module.span,
                           hint="add `model my_model { ... }`, or compile a file that has one")
            return
        seen: dict[str, A.Model] = {}
        for m in models:
            for dup, span, first in getattr(m, "_duplicates", ()):
                comp.bag.error("E104", f"`{dup}` is given twice in model `{m.name.name}`", span,
                               notes=[Note("first given here", first)])
            if m.name.name in seen:
                comp.bag.error("E104", f"model `{m.name.name}` is defined twice", m.name.span,
                               notes=[Note("first defined here", seen[m.name.name].name.span)])
            seen[m.name.name] = m
        if comp.model is None:
            comp.model = models[0]

    def dump(self, comp: Compilation) -> str:
        prog = comp.program
        if prog is None:
            return ""
        out = ["modules:"]
        for name, m in prog.modules.items():
            out.append(f"  {name}  ({m.path})")
        out.append("definitions:")
        for q, d in sorted(prog.defs.items()):
            out.append(f"  {d.kind} {q}")
        out.append(f"scope of {prog.root_name}:")
        for n, q in sorted(prog.scopes.get(prog.root_name, {}).items()):
            if "." not in n:
                out.append(f"  {n} -> {q}")
        return "\n".join(out) + "\n"
