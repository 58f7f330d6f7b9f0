"""shapes: infer every tensor's shape, with symbolic batch and sequence dims."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from metagen_compiler.ir.graph import dump_graph

from ..compilation import Compilation
from ..diagnostics import Note
from ..primitives import PRIMITIVES, ShapeError
from ..span import Span


def _instantiated_here(comp: Compilation, span: Span | None) -> list[Note]:
    """A note at the spec's architecture for an error inside a family defined in another file (the stdlib):
    the user's dims reach the failing node from there."""
    spec = comp.spec
    if spec is None or span is None or span.file is None or spec.family_span.file is span.file:
        return []
    return [Note(f"in family `{spec.family.qualname}`, which the model's architecture names here", spec.family_span)]


@dataclass(frozen=True)
class ShapesPass:
    name: ClassVar[str] = "shapes"
    doc: ClassVar[str] = "Infer output shapes node by node (symbolic B, T; concrete image sizes)."

    def run(self, comp: Compilation) -> None:
        ir = comp.graph
        assert ir is not None
        for n in ir.topo():
            d = ir.nodes[n]
            if d.op == "input":
                continue
            ins = [ir.shape_of(t) for t in ir.in_tensors(n)]
            try:
                d.shapes = PRIMITIVES[d.op].shape(d.args, ins)
                # embeddings turn ids into float32 features; everything else computes in float32
                d.dtypes = ["float32"] * len(d.shapes)
            except ShapeError as e:
                comp.bag.error("E304", f"`{d.op}` at `{d.module or d.scope or n}`: {e}", d.span,
                               notes=_instantiated_here(comp, d.span))
                return
            except (KeyError, IndexError, TypeError, ValueError) as e:
                comp.bag.error("E304", f"`{d.op}` at `{d.module or n}` cannot take inputs of shape "
                               f"{', '.join(map(str, ins))} ({type(e).__name__})", d.span,
                               notes=_instantiated_here(comp, d.span))
                return

    def dump(self, comp: Compilation) -> str:
        return dump_graph(comp.graph) if comp.graph else ""
