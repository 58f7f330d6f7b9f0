"""The spec IR: what the model must do, checked and typed, before any architecture is built.

Passes fill it in stage by stage: check builds it, modality and heads add slots, solve adds dims.
`dump_spec` prints it canonically (the `--emit=ir` output and golden hook).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from metagen_compiler.semantics.program import Definition
from metagen_compiler.semantics.values import Value, format_value
from metagen_compiler.span import Span
from metagen_compiler.syntax import ast as A

__all__ = ["Bound", "ConstraintIR", "SlotIR", "SolveReport", "SpecIR", "dump_spec"]


@dataclass
class Bound:
    """A value for a family parameter: an expression to evaluate in `module`, or a value."""

    expr: A.Expr | None
    value: Value
    module: str
    span: Span
    source: str  # family default | preset NAME | model | task | constraint
    constraints: tuple[A.DimConstraint, ...] = ()


@dataclass
class ConstraintIR:
    kind: str
    op: str
    value: Value
    text: str
    device: str | None
    span: Span


@dataclass
class SlotIR:
    role: str  # encoder (encoder_<input> when a family has several) | backbone | head: the module path
    key: str  # input name (for encoders), "backbone", or task
    layer: A.Layer
    span: Span
    note: str = ""
    modality: str = ""  # encoders: the input's modality (its tensor form)


@dataclass
class SolveReport:
    unknowns: list[str] = field(default_factory=list)
    binding: str = ""
    fill: float | None = None
    candidates: int = 0
    seconds: float = 0.0
    first_choices: list[str] = field(default_factory=list)  # open choices `? in {a, b}` given their first value


@dataclass
class SpecIR:
    name: str
    span: Span
    inputs: list[tuple[str, Span]]
    outputs: list[tuple[str, Span]]
    task: str
    task_span: Span
    task_fields: dict[str, Value]
    objectives: list[str]
    constraints: list[ConstraintIR]
    family: Definition
    family_span: Span
    preset: str | None
    bindings: dict[str, Bound]
    metadata: dict[str, Any]
    device: str | None = None
    encoders: list[SlotIR] = field(default_factory=list)
    backbone: SlotIR | None = None
    head: SlotIR | None = None
    loss: str = ""
    metrics: list[str] = field(default_factory=list)
    dims: dict[str, Value] = field(default_factory=dict)
    solve: SolveReport | None = None
    # the `training { ... }` section (training_section.py): plain JSON values keyed by train.py's flag names, and
    # the keys among them that set a family parameter instead (key -> parameter; not written to training.json)
    training: dict[str, Any] = field(default_factory=dict)
    training_family: dict[str, str] = field(default_factory=dict)

    def constraint(self, kind: str) -> list[ConstraintIR]:
        return [c for c in self.constraints if c.kind == kind]


def _layer_text(ly: A.Layer) -> str:
    from metagen_compiler.syntax.format_expr import expr_text

    args = "" if ly.args is None else "(" + ", ".join(
        (f"{a.name.name} = " if a.name else "") + expr_text(a.value) for a in ly.args) + ")"
    rep = f"repeat({expr_text(ly.repeat)}) " if ly.repeat is not None else ""
    return f"{rep}{ly.callee.dotted}{args}"


def _constraint_text(c: A.DimConstraint) -> str:
    from metagen_compiler.syntax.format_expr import expr_text

    if isinstance(c, A.MultipleOf):
        return f" multiple_of {expr_text(c.value)}"
    if isinstance(c, A.InSet):
        return " in {" + ", ".join(expr_text(i) for i in c.items) + "}"
    return f" in {expr_text(c.lo)}..{expr_text(c.hi)}"


def dump_spec(spec: SpecIR) -> str:
    from metagen_compiler.syntax.format_expr import expr_text

    out = [f"model {spec.name}"]
    out.append(f"  inputs: {', '.join(n for n, _ in spec.inputs)}")
    out.append(f"  outputs: {', '.join(n for n, _ in spec.outputs)}")
    out.append(f"  task: {spec.task}" + "".join(f" {k}={format_value(v)}" for k, v in sorted(spec.task_fields.items())))
    out.append(f"  objectives: {', '.join(spec.objectives) or '-'}")
    out.append(f"  family: {spec.family.qualname}" + (f" (preset {spec.preset})" if spec.preset else ""))
    if spec.device:
        out.append(f"  device: {spec.device}")
    out.append("  constraints:")
    for c in spec.constraints:
        dev = f" on {c.device}" if c.device else ""
        out.append(f"    {c.kind} {c.op} {format_value(c.value)}{dev}    # {c.text}")
    out.append("  bindings:")
    for k, b in spec.bindings.items():
        val = expr_text(b.expr) if b.expr is not None else format_value(b.value)
        cons = "".join(_constraint_text(c) for c in b.constraints)
        out.append(f"    {k} = {val}{cons}    # {b.source}")
    for s in spec.encoders:
        out.append(f"  encoder {s.key}: {_layer_text(s.layer)}" + (f"    # {s.note}" if s.note else ""))
    if spec.backbone:
        out.append(f"  backbone: {_layer_text(spec.backbone.layer)}")
    if spec.head:
        out.append(f"  head {spec.head.key}: {_layer_text(spec.head.layer)}")
        out.append(f"  loss: {spec.loss}")
        out.append(f"  metrics: {', '.join(spec.metrics)}")
    if spec.dims:
        out.append("  dims:")
        for k, v in spec.dims.items():
            out.append(f"    {k} = {format_value(v)}")
    if spec.solve and spec.solve.unknowns:
        fill = f", fill {spec.solve.fill:.4f}" if spec.solve.fill is not None else ""
        out.append(f"  solved: {', '.join(spec.solve.unknowns)}; binding: {spec.solve.binding}{fill}")
    if spec.solve and spec.solve.first_choices:
        out.append(f"  first choice: {', '.join(spec.solve.first_choices)}")
    if spec.training:
        out.append("  training: " + json.dumps(spec.training, sort_keys=True))
    if spec.metadata:
        out.append("  metadata: " + json.dumps(spec.metadata, sort_keys=True))
    return "\n".join(out) + "\n"
