"""The PyTorch backend: model.py from the graph IR and the block definitions."""

from __future__ import annotations

import json

from metagen_compiler.compilation import Compilation

__all__ = ["emit"]


def emit(comp: Compilation) -> dict[str, str]:
    from .codegen import emit_model_py
    from .inference import inference_files
    from .runtime import generates, generation_py
    from .training import runtime_files
    from .weights import layout_for, weights_py

    files = {"model.py": emit_model_py(comp), **runtime_files(), "weights.py": weights_py(layout_for(comp)),
             **inference_files()}  # predict.py, pipelines.py, inputs.py: raw inputs to answers (docs/inference.md)
    if generates(comp):  # decodes token by token (metagen_backends.decoding): generate() runs generation.py
        files["generation.py"] = generation_py()
    if comp.spec is not None:  # the spec's `training { ... }`: train.py's defaults, keyed by its flags' dest names
        from metagen_compiler.semantics.training_section import training_json

        settings = training_json(comp.spec)
        if settings is not None:
            files["training.json"] = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    return files
