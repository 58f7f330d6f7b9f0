"""Evaluating a family: its parameters (dims) from the bindings, and its slots as layers.

Shared by the solver (which calls `count_params` for every candidate) and by lowering.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from metagen_compiler.ir.graph import Node
from metagen_compiler.ir.spec import Bound, SlotIR, SpecIR
from metagen_compiler.semantics.elaborate import Elaborator, ParamSpec, coerce, param_specs
from metagen_compiler.semantics.program import Program
from metagen_compiler.semantics.tasks import TASK_SPECS
from metagen_compiler.semantics.values import EvalError, LayerRef, Sym, UnknownValue, Value, evaluate
from metagen_compiler.span import NO_SPAN as _NO
from metagen_compiler.syntax import ast as A

__all__ = ["UNKNOWN", "count_params", "evaluate_dims", "slot_call", "tie_pairs"]

UNKNOWN = UnknownValue()


class _LazyDims(Mapping[str, Value]):
    """Family parameters evaluated on first use, in dependency order, with cycle detection."""

    def __init__(self, spec: SpecIR, prog: Program, elab: Elaborator, fixed: Mapping[str, Value]) -> None:
        self.spec, self.prog, self.elab = spec, prog, elab
        self.fixed = fixed
        fam = spec.family.node
        assert isinstance(fam, A.Family)
        self.specs: dict[str, ParamSpec] = {s.name: s for s in param_specs(fam)}
        self._values: dict[str, Value] = {}
        self.active: list[str] = []

    def __getitem__(self, k: str) -> Value:
        if k in self._values:
            return self._values[k]
        if k not in self.specs:
            if k in self.spec.task_fields:
                return self.spec.task_fields[k]
            raise KeyError(k)
        if k in self.fixed:
            v = coerce(self.fixed[k], self.specs[k], self.spec.bindings[k].span, "the model")
            self._values[k] = v
            return v
        if k in self.active:
            chain = " -> ".join(self.active[self.active.index(k):] + [k])
            raise EvalError("E103", f"dimensions depend on each other in a cycle: {chain}", self.spec.bindings[k].span)
        b: Bound = self.spec.bindings[k]
        self.active.append(k)
        try:
            if b.expr is None:
                raw = b.value
            elif isinstance(b.expr, A.Unknown):
                raise EvalError("E402", f"`{k}` is left open (`?`)", b.span)
            else:
                raw = evaluate(b.expr, self, self._resolver(b.module))
            v = coerce(raw, self.specs[k], b.expr.span if b.expr is not None else b.span,
                       f"family {self.spec.family.qualname.rsplit('.', 1)[-1]}")
        finally:
            self.active.pop()
        self._values[k] = v
        return v

    def _resolver(self, module: str) -> Callable[[A.Name], Value]:
        fam_module = self.spec.family.module

        def resolve(name: A.Name) -> Value:
            for mod in (module, fam_module):
                ref = self.elab.layer_ref(mod, name, {})
                if ref is not None:
                    return ref
            if len(name.parts) == 1:
                return Sym(name.parts[0])
            raise EvalError("E103", f"undefined name `{name.dotted}`", name.span)

        return resolve

    def __contains__(self, k: object) -> bool:
        return k in self.specs or k in self.spec.task_fields

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


def evaluate_dims(spec: SpecIR, prog: Program, elab: Elaborator, fixed: Mapping[str, Value]) -> dict[str, Value]:
    """Every family parameter's value, given values for the unknowns in `fixed`."""
    lazy = _LazyDims(spec, prog, elab, fixed)
    out = {k: lazy[k] for k in lazy.specs}
    fam = spec.family.node
    assert isinstance(fam, A.Family)
    for r in fam.requires:
        ok = evaluate(r.cond, out, lazy._resolver(spec.family.module))
        if ok is not True:
            raise EvalError("E206", f"family `{spec.family.qualname.rsplit('.', 1)[-1]}`: {r.message or 'requirement fails'}",
                            r.span)
    task = TASK_SPECS.get(spec.task)
    context = out.get("context")
    if task is not None and isinstance(context, int) and context < task.min_context:
        raise EvalError("E206", f"task `{spec.task}` needs context >= {task.min_context}, got {context}: its "
                        "next-token loss predicts each token from the ones before it", spec.task_span)
    return out


def slot_call(elab: Elaborator, spec: SpecIR, slot: SlotIR, dims: Mapping[str, Value]) -> tuple[LayerRef, dict[str, Value]]:
    env = {**spec.task_fields, **dims}
    ref = elab.layer_ref(spec.family.module, slot.layer.callee, env)
    if ref is None:
        raise EvalError("E105", f"unknown layer `{slot.layer.callee.dotted}`", slot.layer.callee.span)
    bound = elab.bind(ref, slot.layer.args, env, spec.family.module, slot.layer.span)
    return ref, bound


def _slots(spec: SpecIR) -> list[SlotIR]:
    return [*spec.encoders, *([spec.backbone] if spec.backbone else []), *([spec.head] if spec.head else [])]


def tie_pairs(spec: SpecIR, dims: Mapping[str, Value], elab: Elaborator) -> list[tuple[A.Tie, str, str]]:
    fam = spec.family.node
    assert isinstance(fam, A.Family)
    out = []
    for t in fam.ties:
        if t.cond is not None and evaluate(t.cond, dims, lambda n: Sym(n.dotted)) is not True:
            continue
        out.append((t, t.target.dotted, t.source.dotted))
    return out


def count_params(elab: Elaborator, spec: SpecIR, dims: Mapping[str, Value]) -> int:
    """Exact trainable parameter count of the whole model (tied weights counted once)."""
    total = 0
    roles: dict[str, tuple[LayerRef, dict[str, Value]]] = {}
    for slot in _slots(spec):
        ref, bound = slot_call(elab, spec, slot, dims)
        roles[slot.role] = (ref, bound)
        total += elab.count_layer(ref, bound)
    for t, target, _source in tie_pairs(spec, dims, elab):
        try:
            total -= _param_numel(elab, roles, target)
        except EvalError as e:  # `names no parameter` is found without a position: the tie has one
            if e.span is None:
                e.span = t.target.span
            raise
    return total


def _param_numel(elab: Elaborator, roles: Mapping[str, tuple[LayerRef, dict[str, Value]]], path: str) -> int:
    """Size of one parameter, found by following labels from a slot (`head.proj.weight`)."""
    import math

    from metagen_compiler.primitives import PRIMITIVES
    from metagen_compiler.semantics.elaborate import GraphBuilder, Tensor

    role, *rest = path.split(".")
    if role not in roles or not rest:
        raise EvalError("E303", f"`{path}` names no parameter", None)
    ref, bound = roles[role]
    b = GraphBuilder()
    saved = elab.builder
    elab.builder = b
    try:
        n_in = 1  # as many placeholder inputs as the slot takes (a backbone or head of several tensors)
        if ref.kind == "block":
            node = elab.prog.defs[ref.target].node
            assert isinstance(node, A.Block)  # a layer reference of kind "block" names a block
            n_in = sum(len(st.names) for st in node.body if isinstance(st, A.Input)) or 1
        elif ref.kind == "primitive":
            n_in = PRIMITIVES[ref.target].n_inputs
        ins = []
        for i in range(n_in):
            b.add_node(f"__in{i}", Node("input"))
            ins.append(Tensor(f"__in{i}", 0))
        elab.apply(ref, bound, ins, role, role, ref.span or _NO, "")
    finally:
        elab.builder = saved
    mod_path = ".".join([role, *rest[:-1]])
    info = b.modules.get(mod_path)
    if info is None or info.kind != "primitive":
        raise EvalError("E303", f"`{path}` names no parameter", None)
    w = PRIMITIVES[info.target].weights(info.args)
    if rest[-1] not in w:
        raise EvalError("E303", f"`{path}` names no parameter", None)
    return math.prod(w[rest[-1]])

