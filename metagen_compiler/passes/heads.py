"""heads: insert the task head, its loss and its metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from metagen_compiler.ir.spec import SlotIR, dump_spec
from metagen_compiler.semantics.tasks import TASK_SPECS
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.visit import statements

from ..compilation import Compilation
from .modality import family_of


@dataclass(frozen=True)
class HeadsPass:
    name: ClassVar[str] = "heads"
    doc: ClassVar[str] = "Insert the task head from the family's head slots, with its loss and metrics."

    def run(self, comp: Compilation) -> None:
        spec = comp.spec
        assert spec is not None
        fam, famname = family_of(spec)
        slots = {s.task.name: s for s in fam.heads}
        slot = slots.get(spec.task)
        if slot is None or spec.task not in TASK_SPECS:
            have = sorted(t for t in slots if t in TASK_SPECS)
            comp.bag.error("E301", f"family `{famname}` has no head for task `{spec.task}`", spec.task_span,
                           hint=f"`{famname}` supports: {', '.join(have) or 'no task'}")
            return
        task = TASK_SPECS[spec.task]
        for out, span in spec.outputs:
            if out not in task.fits:
                comp.bag.warning("W003", f"output `{out}` does not fit task `{spec.task}`; the model outputs "
                                 f"{task.describes.split(' (')[0]}", span,
                                 hint=f"task `{spec.task}` outputs: {', '.join(task.fits)}")
        spec.head = SlotIR("head", spec.task, slot.layer, slot.span)
        block = slot.layer.callee.dotted.rsplit(".", 1)[-1]
        loss, _ = task.form(_returns(comp, spec.family.module, slot.layer.callee))
        spec.loss = dict(task.head_losses).get(block, loss)  # a head block with its own loss (DETR's set matching)
        spec.metrics = list(task.metrics)

    def dump(self, comp: Compilation) -> str:
        return dump_spec(comp.spec) if comp.spec else ""


def _returns(comp: Compilation, module: str, callee: A.Name) -> int:
    """How many tensors a head block returns (its last `return`); a primitive or a layer parameter: one."""
    d = comp.program.lookup(module, callee) if comp.program is not None else None
    if d is None or not isinstance(d.node, A.Block):
        return 1
    rets = [st for st in statements(d.node.body) if isinstance(st, A.Return)]  # source order, both `if` branches
    return len(rets[-1].values) if rets else 1
