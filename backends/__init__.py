"""Backends: each turns the compiled graph IR into files. Imported lazily by the CLI."""

__all__ = ["BACKENDS"]

# name -> "module:function"; the function takes a Compilation and returns {relative path: text}.
BACKENDS = {
    "pytorch": "metagen_backends.pytorch:emit",
    "latex": "metagen_backends.latex:emit",
    "onnx": "metagen_backends.onnx:emit",
}
