"""Backends: each turns the compiled graph IR into files. Imported lazily by the CLI."""

__all__ = ["BACKENDS", "REQUIRES"]

# name -> "module:function"; the function takes a Compilation and returns {relative path: text}.
BACKENDS = {
    "pytorch": "metagen_backends.pytorch:emit",
    "latex": "metagen_backends.latex:emit",
    "onnx": "metagen_backends.onnx:emit",
}

# What a backend imports beyond metagen's own dependencies: name -> (the pip extra that installs it, the
# modules by import name). The CLI checks them before it compiles: a missing one is a usage error (exit 2)
# that names the extra, `pip install "metagen[onnx]"`. A backend without an entry needs nothing more.
REQUIRES: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnx": ("onnx", ("numpy", "onnx", "onnx_ir")),
}
