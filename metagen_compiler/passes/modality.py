"""modality: pick the input encoder for each input modality from the family's encoder slots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .. import ast as A
from ..compilation import Compilation
from ..ir import SlotIR, dump_spec


@dataclass(frozen=True)
class ModalityPass:
    name: ClassVar[str] = "modality"
    doc: ClassVar[str] = "Resolve input modalities to the family's encoders; insert the backbone."

    def run(self, comp: Compilation) -> None:
        spec = comp.spec
        assert spec is not None
        fam = spec.family.node
        assert isinstance(fam, A.Family)
        famname = spec.family.qualname.rsplit(".", 1)[-1]
        slots = {s.modality.name: s for s in fam.encoders}
        for name, span in spec.inputs:
            slot = slots.get(name)
            if slot is None:
                comp.bag.error("E301", f"family `{famname}` has no encoder for `{name}` input", span,
                               hint=f"`{famname}` takes: {', '.join(sorted(slots)) or 'nothing'}")
                continue
            spec.encoders.append(SlotIR("encoder", name, slot.layer, slot.span))
        if len(spec.encoders) > 1:
            comp.bag.error("E301", f"family `{famname}` takes one input; this model has {len(spec.encoders)}",
                           spec.encoders[1].span if spec.encoders[1].span else spec.span,
                           hint="multi-input models need a family with a fusion stage")
        if fam.backbone is None:
            comp.bag.error("E208", f"family `{famname}` has no backbone", fam.name.span)
            return
        spec.backbone = SlotIR("backbone", "backbone", fam.backbone, fam.backbone.span)

    def dump(self, comp: Compilation) -> str:
        return dump_spec(comp.spec) if comp.spec else ""
