"""The PyTorch backend: model.py from the graph IR and the block definitions."""

from __future__ import annotations

from metagen_compiler.compilation import Compilation

__all__ = ["emit"]


def emit(comp: Compilation) -> dict[str, str]:
    from .codegen import emit_model_py

    return {"model.py": emit_model_py(comp)}
