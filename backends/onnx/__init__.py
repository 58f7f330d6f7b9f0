"""The ONNX backend: model.onnx written from the graph IR with onnx-ir (no tracing), plus the name map
from PyTorch state_dict keys to initializers. Opt-in: `metagenc SPEC --backend pytorch,onnx`.

Files (relative to OUT/<model>/):
- model.onnx: the forward model; weights inline, or in model.onnx.data above EXTERNAL_DATA_THRESHOLD, above
  SHARED_DATA_THRESHOLD when a decoder step is written too, or with --weights external; with --weights none
  every weight is a graph input (graph only, nothing allocated).
- model_with_past.onnx: for causal decoders (attention or state-space), the decoder step with a cache (same
  initializers; with external data it reads model.onnx.data, so the weights are stored once).
- onnx_names.json: state_dict key -> initializer name, for `metagenc import-weights`.

See docs/onnx.md for the opset policy and what is exported per family.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from metagen_compiler.compilation import Compilation

__all__ = ["MAX_RANDOM_BYTES", "SHARED_DATA_THRESHOLD", "build_model", "emit", "graph_text"]

# Random weights above this are refused (E514): they would only be noise, and the files are built in memory.
MAX_RANDOM_BYTES = 8 * 1024**3
# With a decoder step beside the forward model, weights above this go to model.onnx.data, which both read:
# stored once instead of inline in each file (Mamba-130M: one 517 MB file, not two).
SHARED_DATA_THRESHOLD = 64 * 1024**2


def build_model(comp: Compilation, *, with_cache: bool = False, weights: str | None = None) -> Any:
    """The onnx-ir model for a compiled spec (export.Built), before serialisation; for tests and tools."""
    from .export import build
    from .opsets import DEFAULT_OPSET

    assert comp.graph is not None
    o = comp.options
    return build(comp.graph, opset=o.opset or DEFAULT_OPSET, weights=weights or o.weights, seed=o.seed,
                 with_cache=with_cache)


def graph_text(model: Any) -> str:
    """Deterministic text of a model without weight values (the golden-test form): the onnx printer's text,
    with the weights' names and shapes one per line."""
    import onnx_ir as ir

    lines = ir.to_onnx_text(model, exclude_initializers=True).splitlines()
    out: list[str] = []
    for line in lines:
        if line.startswith("   <") and line.endswith(">") and not out[-1].startswith("<"):
            items = line.strip()[1:-1].split(", ")
            out += ["   <"] + [f"      {item}," for item in items[:-1]] + [f"      {items[-1]}", "   >"]
        else:
            out.append(line.rstrip())
    return "\n".join(out) + "\n"


def emit(comp: Compilation) -> dict[str, str | bytes]:
    from . import weights as W
    from .export import build, supports_cache
    from .opsets import DEFAULT_OPSET, OnnxDiagnostic, OnnxExportError
    from .weights import weight_specs

    assert comp.graph is not None and comp.spec is not None
    graph = comp.graph  # narrowed, for the closure below
    o = comp.options
    opset = o.opset or DEFAULT_OPSET
    mode = o.weights
    specs, names = weight_specs(comp.graph)
    total = sum(s.nbytes for s in specs)
    if mode != "none" and total > MAX_RANDOM_BYTES:
        raise OnnxExportError([OnnxDiagnostic(
            "E514", f"the weights of `{comp.spec.name}` take {total / 1024**3:.1f} GiB; random weights above "
            f"{MAX_RANDOM_BYTES // 1024**3} GiB are not materialised", comp.spec.span,
            hint="use --weights none for the graph alone, then `metagenc import-weights` for trained weights")])
    step = supports_cache(comp.graph)
    external = mode == "external" or (mode != "none" and (total > W.EXTERNAL_DATA_THRESHOLD
                                                          or (step and total > SHARED_DATA_THRESHOLD)))

    def model(with_cache: bool, shared: Any = None) -> Any:
        return build(graph, opset=opset, weights=mode, seed=o.seed, with_cache=with_cache, arrays=shared).model

    files: dict[str, str | bytes] = {}
    if not external:
        forward = model(False)
        files[MODEL] = _checked_bytes(forward)
        if step:  # the same tensors, not a second draw
            files[STEP] = _checked_bytes(model(True, _tensors(forward)))
    else:
        files.update(_external(model, step))
    files["onnx_names.json"] = json.dumps({
        "model": comp.spec.name,
        "opset": opset,
        "weights": "inputs" if mode == "none" else "initializers",
        "layout": "initializers keep the PyTorch layout and dtype (float32); Linear weights are (out, in)",
        "files": sorted(files),
        "state_dict": names,
    }, indent=1) + "\n"
    return files


MODEL, STEP = "model.onnx", "model_with_past.onnx"


def _tensors(model: Any) -> dict[str, Any]:
    return {name: v.const_value for name, v in model.graph.initializers.items()}


def _checked_bytes(model: Any) -> bytes:
    """Serialise in memory and run the checker once, with full shape inference."""
    import onnx
    import onnx_ir as ir

    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return bytes(proto.SerializeToString())


def _external(model: Any, step: bool) -> dict[str, str | bytes]:
    """model.onnx with its weights in model.onnx.data; the decoder step reads the same data file."""
    import onnx
    import onnx_ir as ir

    from .weights import DATA_SUFFIX

    data = MODEL + DATA_SUFFIX
    out: dict[str, str | bytes] = {}
    with tempfile.TemporaryDirectory(prefix="metagenc-onnx-") as tmp:
        path = Path(tmp) / MODEL
        ir.save(model(False), path, external_data=data)
        onnx.checker.check_model(str(path), full_check=True)
        if step:
            shared = _tensors(ir.load(path))  # external tensors: the step model points into the same file
            step_path = Path(tmp) / STEP
            step_path.write_bytes(ir.to_proto(model(True, shared)).SerializeToString())
            onnx.checker.check_model(str(step_path), full_check=True)
            out[STEP] = step_path.read_bytes()
        out[MODEL] = path.read_bytes()
        out[data] = (Path(tmp) / data).read_bytes()
    return out
