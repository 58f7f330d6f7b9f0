"""A tiny code writer: lines and an indentation context manager."""

from __future__ import annotations

import contextlib
import keyword
from collections.abc import Iterator

__all__ = ["Writer", "Namespace", "py_ident", "camel"]


class Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.level = 0

    def line(self, text: str = "") -> None:
        self.lines.append(("    " * self.level + text) if text else "")

    def lines_(self, texts: list[str]) -> None:
        for t in texts:
            self.line(t)

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


_RESERVED = set(keyword.kwlist) | set(keyword.softkwlist) | {
    "self", "torch", "nn", "F", "math", "dataclass", "field", "Config", "config", "super", "range", "len", "print",
    "list", "tuple", "dict", "int", "float", "bool", "str", "type", "object", "None", "True", "False", "batch",
    "build_model", "example_inputs", "example_batch", "attention", "apply_rope", "PositionEmbedding", "ClassToken",
    "init_weights", "Model", "_",
}


def py_ident(name: str) -> str:
    """A legal, non-reserved Python identifier for an MSL name (MSL names are already identifiers)."""
    out = "".join(c if (c.isalnum() or c == "_") and c.isascii() else "_" for c in name)
    if not out or out[0].isdigit():
        out = "x" + out
    if out in _RESERVED:
        out = out + "_"
    return out


def camel(name: str) -> str:
    parts = [p for p in py_ident(name).split("_") if p]
    s = "".join(p[:1].upper() + p[1:] for p in parts) or "Block"
    return s if s not in _RESERVED else s + "Block"


class Namespace:
    """Hands out unique names; asking twice for one key gives the same name."""

    def __init__(self) -> None:
        self.taken: set[str] = set(_RESERVED)
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
