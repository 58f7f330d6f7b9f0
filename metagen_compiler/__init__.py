"""metagenc: the MetaGen Spec Language compiler.

The public entry point from Python is `compile_file`; the command line is `metagenc` (metagen_compiler.cli).
The package's layout follows the phases: syntax (parser.py, ast.py, the grammar in grammar/), semantics
(program.py, elaborate.py, family.py, values.py), the IRs (ir.py: the spec IR; graph.py: the graph IR), the
pipeline (passes/, run by driver.py), and tools around it (tools/, editor/, lsp.py, search*.py). Backends live in
the metagen_backends package.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from .compilation import Compilation, Options

__all__ = ["__version__", "compile_file"]


def compile_file(path: str | Path, options: Options | None = None, **fields: Any) -> list[Compilation]:
    """Compile every model of an MSL or YAML spec file: one Compilation per model, its diagnostics in
    `comp.bag` (bad input never raises), its spec IR in `comp.spec` and graph IR in `comp.graph` when it compiled.
    `fields` set Options' fields (`seed=1`, `overrides=(("layers", "2"),)`, `model="name"`); an unreadable file
    raises OSError. Writing the outputs is metagen_compiler.outputs.write_outputs's job."""
    from dataclasses import replace

    from metagen_compiler.semantics.program import read_source

    from .compilation import Options
    from .driver import compile_model_set

    return compile_model_set(read_source(path), replace(options or Options(), **fields))
