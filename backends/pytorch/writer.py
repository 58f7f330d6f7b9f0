"""A tiny code writer: lines and an indentation context manager."""

from __future__ import annotations

import contextlib
import functools
import keyword
from collections.abc import Iterator

__all__ = ["Namespace", "Writer", "camel", "py_ident", "reserved"]


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.level = 0

    def line(self, text: str = "") -> None:
        self.lines.append(("    " * self.level + text) if text else "")

    @contextlib.contextmanager
    def indent(self) -> Iterator[None]:
        self.level += 1
        try:
            yield
        finally:
            self.level -= 1

    def text(self) -> str:
        out = "\n".join(self.lines).rstrip("\n") + "\n"
        return out


# what model.py defines or imports besides the runtime's definitions
_MODEL_PY_NAMES = frozenset({
    "self", "torch", "nn", "F", "math", "copy", "dataclass", "field", "Config", "config", "super", "range", "len",
    "print", "list", "tuple", "dict", "int", "float", "bool", "str", "type", "object", "None", "True", "False",
    "batch", "build_model", "example_inputs", "example_batch", "init_weights", "Model", "_",
})


@functools.cache
def reserved() -> frozenset[str]:
    """Names a generated class or variable never takes: keywords, what model.py defines and imports, and every
    definition of the runtime modules and class of the lowering tables (lowering.reserved_names), which model.py
    may hold at module level."""
    from .lowering import reserved_names

    return frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | _MODEL_PY_NAMES | reserved_names()


def py_ident(name: str) -> str:
    """A legal, non-reserved Python identifier for an MSL name (MSL names are already identifiers)."""
    out = "".join(c if (c.isalnum() or c == "_") and c.isascii() else "_" for c in name)
    if not out or out[0].isdigit():
        out = "x" + out
    if out in reserved():
        out = out + "_"
    return out


# nn.Module members that a submodule attribute must not shadow
_MODULE_MEMBERS = {
    "forward", "training", "config", "loss", "metrics", "detect", "apply", "to", "train", "eval", "parameters", "buffers",
    "modules", "children", "state_dict", "load_state_dict", "cuda", "cpu", "type", "float", "double", "half",
    "bfloat16", "zero_grad", "register_buffer", "register_parameter", "register_module", "add_module",
    "named_parameters", "named_modules", "named_children", "named_buffers", "requires_grad_", "extra_repr",
    "get_submodule", "get_parameter", "get_buffer", "share_memory", "compile", "self", "generate", "kv_cache",
}


def attr_ident(name: str) -> str:
    """The attribute a labelled layer gets on its nn.Module: the label itself unless it is not an
    identifier, a keyword, or an nn.Module member. State-dict keys follow (`state_dict_key`)."""
    out = "".join(c if (c.isalnum() or c == "_") and c.isascii() else "_" for c in name)
    if not out or out[0].isdigit():
        out = "x" + out
    if keyword.iskeyword(out) or keyword.issoftkeyword(out) or out in _MODULE_MEMBERS:
        out += "_"
    return out


def state_dict_key(path: str) -> str:
    """The generated module's state_dict key for a graph path (`backbone.h.0.attn.c_attn.weight`)."""
    return ".".join(p if p.isdigit() else attr_ident(p) for p in path.split("."))


def camel(name: str) -> str:
    parts = [p for p in py_ident(name).split("_") if p]
    s = "".join(p[:1].upper() + p[1:] for p in parts) or "Block"
    if s[0].isdigit():  # `_430ff` (a legal MSL name) would make the class `430ff`
        s = "M" + s
    return s if s not in reserved() else s + "Block"


class Namespace:
    """Hands out unique names; asking twice for one key gives the same name."""

    def __init__(self) -> None:
        self.taken: set[str] = set(reserved())
        self.by_key: dict[object, str] = {}

    def name(self, key: object, base: str) -> str:
        if key in self.by_key:
            return self.by_key[key]
        cand, k = base, 2
        while cand in self.taken:
            cand, k = f"{base}{k}", k + 1
        self.taken.add(cand)
        self.by_key[key] = cand
        return cand
