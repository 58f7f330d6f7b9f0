"""lower: elaborate encoder, backbone and head into the graph IR."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from metagen_compiler.ir.graph import GraphInput, GraphIR, ModuleInfo, Node, dump_graph
from metagen_compiler.semantics.elaborate import Elaborator, GraphBuilder, Tensor
from metagen_compiler.semantics.family import slot_call, tie_pairs
from metagen_compiler.semantics.modalities import INPUT_FORMS, input_forms, input_shape
from metagen_compiler.semantics.program import Program
from metagen_compiler.semantics.tasks import TASK_SPECS
from metagen_compiler.semantics.values import EvalError, LayerRef, Value
from metagen_compiler.syntax import ast as A

from ..compilation import Compilation
from ..primitives import PRIMITIVES
from ..span import Span


@dataclass(frozen=True)
class LowerPass:
    name: ClassVar[str] = "lower"
    doc: ClassVar[str] = "Lower the model into the networkx graph IR (one node per primitive application)."

    def run(self, comp: Compilation) -> None:
        spec, prog, bag = comp.spec, comp.program, comp.bag
        assert spec is not None and prog is not None
        b = GraphBuilder()
        elab = Elaborator(prog, b)
        inputs: list[GraphInput] = []
        symbols = {"B": 1}
        try:
            feats: list[Tensor] = []
            for slot in spec.encoders:
                modality = slot.modality or slot.key
                forms = input_forms(slot.key, modality) if modality in INPUT_FORMS else None
                if forms is None:
                    bag.error("E301", f"no tensor form is defined for `{slot.modality or slot.key}` inputs yet",
                              slot.span, hint=f"inputs with a tensor form: {', '.join(INPUT_FORMS)}")
                    return
                ins: list[Tensor] = []
                for form in forms:
                    try:
                        shape, syms = input_shape(form, spec.dims)
                    except KeyError as e:
                        bag.error("E301", f"`{slot.key}` inputs need the family parameter `{e.args[0]}`", slot.span)
                        return
                    symbols.update(syms)
                    name = f"{slot.key}_{form.suffix}" if form.suffix else slot.key
                    node = f"input.{name}"
                    b.add_node(node, Node("input", span=spec.span, shapes=[shape], dtypes=[form.dtype]))
                    inputs.append(GraphInput(name, slot.modality or slot.key, shape, form.dtype, node))
                    ins.append(Tensor(node, 0))
                ref, bound = slot_call(elab, spec, slot, spec.dims)
                b.modules[slot.role] = _info(ref, bound, slot.role, slot.span)
                feats += elab.apply(ref, bound, ins, slot.role, slot.role, slot.layer.span, "")
            assert spec.backbone is not None and spec.head is not None
            ref, bound = slot_call(elab, spec, spec.backbone, spec.dims)
            wants = _input_count(prog, ref)
            if wants is not None and wants != len(feats):
                fam = spec.family.node
                assert isinstance(fam, A.Family)  # the family a model names is a family (resolve checks it)
                takes = ", ".join(e.modality.name for e in fam.encoders if e.input is None)
                bag.error("E301", f"the backbone of family `{spec.family.qualname.rsplit('.', 1)[-1]}` takes {wants} "
                          f"input tensor(s); the encoders of this model's inputs give {len(feats)}", spec.span,
                          hint=f"the family's input modalities: {takes}")
                return
            feats = elab.apply(ref, bound, feats, "backbone", "backbone", spec.backbone.layer.span, "")
            ref, bound = slot_call(elab, spec, spec.head, spec.dims)
            outs = elab.apply(ref, bound, feats, "head", "head", spec.head.layer.span, "")
        except EvalError as e:
            bag.error(e.code, e.message, e.span, hint=e.hint)
            return
        _loss, names = TASK_SPECS[spec.task].form(len(outs))  # the output names of the head's form
        outputs = list(zip(names, outs))
        for d in b.nodes.values():  # the parameter tensors each node owns, by name
            d.weights = PRIMITIVES[d.op].weights(d.args) if d.module else {}
        ir = GraphIR(b.g, b.nodes, b.modules, inputs, outputs, [], symbols, spec)
        ws = ir.weights()
        for tie, target, source in tie_pairs(spec, spec.dims, elab):
            if target not in ws or source not in ws:
                missing = target if target not in ws else source
                bag.error("E303", f"tie names `{missing}`, which is not a parameter of this model", tie.span)
                continue
            if ws[target] != ws[source]:
                bag.error("E303", f"cannot tie `{target}` {ws[target]} to `{source}` {ws[source]}: shapes differ", tie.span)
                continue
            ir.ties.append((target, source))
        comp.graph = ir

    def dump(self, comp: Compilation) -> str:
        return dump_graph(comp.graph) if comp.graph else ""


def _input_count(prog: Program, ref: LayerRef) -> int | None:
    """How many tensors a block slot takes (its `input` statement), None for primitives."""
    if ref.kind != "block":
        return None
    d = prog.defs[ref.target]
    assert isinstance(d.node, A.Block)
    return sum(len(st.names) for st in d.node.body if isinstance(st, A.Input))


def _info(ref: LayerRef, bound: Mapping[str, Value], path: str, span: Span) -> ModuleInfo:
    return ModuleInfo(path, ref.kind, ref.target, dict(bound), span)
