"""Opset policy and the ONNX backend's diagnostics.

One pinned default opset (DEFAULT_OPSET); `--opset N` picks another between MIN_OPSET and the newest
opset the installed `onnx` package knows. Every emitted node is checked against the chosen opset
(`missing_ops`), so an op the opset lacks becomes a coded diagnostic that names the op and the lowest
opset that has it, at the span of the primitive that needed it.

The backend cannot add codes to metagen_compiler/errorcodes.py (the compiler's registry), so its
codes live here (E51x, "backend: onnx") until they are registered there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import cast

from metagen_compiler.diagnostics import BackendError, Diagnostic, Note, Severity, render_text
from metagen_compiler.errorcodes import CODES
from metagen_compiler.span import Span

__all__ = [
    "DEFAULT_OPSET",
    "MIN_OPSET",
    "OnnxDiagnostic",
    "OnnxExportError",
    "first_opset",
    "has_op",
    "ir_version_for",
    "max_opset",
]

# 18: the newest opset every mainstream runtime reads (onnxruntime >= 1.14, TensorRT >= 8.6, OpenVINO),
# and the one torch.onnx's dynamo exporter defaults to. Fused ops come with newer opsets: Gelu (20),
# Attention and RMSNormalization (23).
DEFAULT_OPSET = 18
# The structural ops' signatures this backend writes (Squeeze/Unsqueeze/Split with tensor inputs) start at 13.
MIN_OPSET = 13


@dataclass(frozen=True)
class OnnxDiagnostic:
    """A diagnostic of the ONNX backend, shaped like metagen_compiler.diagnostics.Diagnostic so the one
    renderer prints it (`file:line:col: error[E512]: message`, the line, carets, help)."""

    code: str
    message: str
    span: Span | None
    notes: tuple[Note, ...] = ()
    hint: str | None = None
    severity: Severity = Severity.ERROR

    def __post_init__(self) -> None:
        assert self.code in CODES, f"unregistered ONNX backend code {self.code}"  # metagen_compiler/errorcodes.py


class OnnxExportError(BackendError):
    """Raised by the backend with its diagnostics; str() is the rendered text."""

    def __init__(self, diagnostics: Iterable[OnnxDiagnostic]) -> None:
        super().__init__(diagnostics)
        self.args = (self.render(),)

    def render(self) -> str:
        return render_text(cast(list[Diagnostic], self.diagnostics)).rstrip("\n")

    @property
    def codes(self) -> list[str]:
        return [cast(OnnxDiagnostic, d).code for d in self.diagnostics]


# attribute values that came with a later opset than their op: (op, attribute, value) -> the first opset
ATTR_OPSETS: dict[tuple[str, str, str], int] = {
    ("ScatterElements", "reduction", "add"): 16,
    ("ScatterElements", "reduction", "max"): 18,
}


def op_label(op_type: str, attrs: dict[str, object]) -> str:
    """What a node needs of the opset: its op, or `op(attribute="value")` where that value came later."""
    for op, name, value in ATTR_OPSETS:
        if op == op_type and attrs.get(name) == value:
            return f'{op}({name}="{value}")'
    return op_type


_LABEL_OPSETS = {f'{op}({name}="{value}")': v for (op, name, value), v in ATTR_OPSETS.items()}


@cache
def _first_versions() -> dict[str, int]:
    import onnx.defs

    first: dict[str, int] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain in ("", "ai.onnx"):
            first[s.name] = min(first.get(s.name, s.since_version), s.since_version)
    return first


def max_opset() -> int:
    import onnx.defs

    return int(onnx.defs.onnx_opset_version())


def first_opset(op_type: str) -> int | None:
    """The lowest opset of the default domain that has `op_type` (or an `op_label`; None: no such op)."""
    return _LABEL_OPSETS.get(op_type, _first_versions().get(op_type))


def has_op(op_type: str, opset: int) -> bool:
    import onnx.defs

    if op_type in _LABEL_OPSETS:
        return opset >= _LABEL_OPSETS[op_type]
    return bool(onnx.defs.has(op_type, opset, ""))


def ir_version_for(opset: int) -> int:
    """The lowest ONNX IR version whose release introduced `opset` (what runtimes expect with it)."""
    import onnx.helper

    return int(onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)], True))


def check_opset(opset: int) -> None:
    """Raise E511 unless this backend can write `opset`."""
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise OnnxExportError([OnnxDiagnostic(
            "E511", f"ONNX opset {opset} is outside the range this backend writes ({MIN_OPSET}..{top})", None,
            hint=f"leave --opset out for the pinned default ({DEFAULT_OPSET}), or pick one in {MIN_OPSET}..{top}")])


def missing_ops(opset: int, used: Iterable[tuple[str, str, Span | None]]) -> list[OnnxDiagnostic]:
    """E512 for each ONNX op (with the primitive and span that needed it first) that `opset` lacks."""
    out: list[OnnxDiagnostic] = []
    seen: dict[str, int] = {}
    firsts: dict[str, tuple[str, Span | None]] = {}
    for op_type, prim, span in used:
        if has_op(op_type, opset):
            continue
        seen[op_type] = seen.get(op_type, 0) + 1
        firsts.setdefault(op_type, (prim, span))
    for op_type, (prim, span) in firsts.items():
        lowest = first_opset(op_type)
        where = f"the lowest opset that has it is {lowest}" if lowest else "no opset of the default domain has it"
        more = seen[op_type] - 1
        notes = (Note(f"{more} more node{'s' if more != 1 else ''} need{'s' if more == 1 else ''} it"),) if more else ()
        out.append(OnnxDiagnostic(
            "E512", f"ONNX opset {opset} has no `{op_type}`, which primitive `{prim}` lowers to; {where}", span,
            notes=notes, hint=f"use --opset {lowest} or newer" if lowest else None))
    return out
