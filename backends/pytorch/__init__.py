"""The PyTorch backend: model.py from the graph IR and the block definitions."""

from __future__ import annotations

from metagen_compiler.compilation import Compilation

__all__ = ["emit"]


def emit(comp: Compilation) -> dict[str, str]:
    from .codegen import emit_model_py
    from .runtime import generates, generation_py
    from .training import runtime_files
    from .weights import layout_for, weights_py

    files = {"model.py": emit_model_py(comp), **runtime_files(), "weights.py": weights_py(layout_for(comp))}
    if generates(comp):  # a decoder-only LM: model.generate() runs generation.py, copied beside model.py
        files["generation.py"] = generation_py()
    return files
