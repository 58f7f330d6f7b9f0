"""parse: source text (MSL, or the seeds' YAML) -> AST."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.parser import parse_msl

from ..compilation import Compilation


def is_yaml(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


@dataclass(frozen=True)
class ParsePass:
    name: ClassVar[str] = "parse"
    doc: ClassVar[str] = "Parse MSL (Lark, LALR) or a YAML spec into the AST."

    def run(self, comp: Compilation) -> None:
        if is_yaml(comp.source.path):
            from metagen_compiler.syntax.yaml_frontend import parse_yaml

            comp.module = parse_yaml(comp.source, comp.bag)
        else:
            comp.module = parse_msl(comp.source, comp.bag)

    def dump(self, comp: Compilation) -> str:
        return A.dump(comp.module) if comp.module else ""
