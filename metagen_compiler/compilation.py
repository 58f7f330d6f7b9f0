"""The state one compilation carries from pass to pass, and the pass contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from metagen_compiler.ir.spec import SpecIR
from metagen_compiler.semantics.program import Program
from metagen_compiler.syntax import ast as A

from .diagnostics import DiagnosticBag
from .span import SourceFile

if TYPE_CHECKING:  # the graph IR is built by `lower`; this module stays below it
    from metagen_compiler.ir.graph import GraphIR
    from metagen_compiler.ir.structure import StructureIR

__all__ = ["Compilation", "Options", "Pass"]


@dataclass(frozen=True)
class Options:
    search_paths: tuple[Path, ...] = ()
    seed: int = 0
    model: str | None = None
    opset: int | None = None  # ONNX opset; None: the backend's pinned default
    weights: str = "random"  # ONNX weights: random | none | external
    device_profiles: tuple[Path, ...] = ()  # extra MSL files of `device` blocks (e.g. from `metagenc calibrate`)
    overrides: tuple[tuple[str, str], ...] = ()  # --set name=value, in order (the `overrides` pass)


@dataclass
class Compilation:
    source: SourceFile
    options: Options
    bag: DiagnosticBag = field(default_factory=DiagnosticBag)
    module: A.Module | None = None
    program: Program | None = None
    model: A.Model | None = None
    spec: SpecIR | None = None
    graph: GraphIR | None = None  # from `lower` on
    structure: StructureIR | None = None  # from `structure` on: the module-level IR the backends read
    # from `structure` on: family parameters only other tasks' heads read -> those tasks (semantics/unused.py)
    unused_params: dict[str, list[str]] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    # measured results of earlier training runs in the output folder (outputs.collect_measurements), which
    # report.json, the model card and the paper show as measurements; empty for a model never trained
    measurements: list[dict[str, Any]] = field(default_factory=list)
    # `architecture ? in {a, b}`: each candidate family's parameters, in the order listed (check pass; for
    # `metagenc search`, which compiles a candidate at a time)
    candidates: dict[str, frozenset[str]] = field(default_factory=dict)


class Pass(Protocol):
    """A stage of the pipeline: a small named object. `run` reads and extends the compilation and
    reports problems to `comp.bag`; `dump` prints the stage's product canonically."""

    name: ClassVar[str]
    doc: ClassVar[str]

    def run(self, comp: Compilation) -> None: ...

    def dump(self, comp: Compilation) -> str: ...
