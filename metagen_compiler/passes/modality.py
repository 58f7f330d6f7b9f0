"""modality: pick the input encoder for each input modality from the family's encoder slots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from metagen_compiler.ir.spec import SlotIR, SpecIR, dump_spec
from metagen_compiler.semantics.catalog import INPUT_MODALITIES
from metagen_compiler.syntax import ast as A

from ..compilation import Compilation


def family_of(spec: SpecIR) -> tuple[A.Family, str]:
    """The family the model names (resolve checked that it is one) and its short name, for messages."""
    fam = spec.family.node
    assert isinstance(fam, A.Family)
    return fam, spec.family.qualname.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class ModalityPass:
    name: ClassVar[str] = "modality"
    doc: ClassVar[str] = "Resolve input modalities to the family's encoders; insert the backbone."

    def run(self, comp: Compilation) -> None:
        spec = comp.spec
        assert spec is not None
        fam, famname = family_of(spec)
        # an input the family declares under a modality's name stands for that modality in another tensor form
        # (`encoder audio: audio_tokens = ...`: the model's audio, as codec tokens)
        by_modality = {s.input_name: s for s in fam.encoders if s.input is None or s.input.name in INPUT_MODALITIES}
        wanted = {name for name, _ in spec.inputs}
        for name, span in spec.inputs:
            if name not in by_modality:
                comp.bag.error("E301", f"family `{famname}` has no encoder for `{name}` input", span,
                               hint=f"`{famname}` takes: {', '.join(sorted(by_modality)) or 'nothing'}")
        # in the family's order: the backbone takes the encoders' outputs in this order
        used = [s for s in fam.encoders if s.input is not None or s.modality.name in wanted]
        for s in used:
            role = "encoder" if len(used) == 1 else f"encoder_{s.input_name}"
            spec.encoders.append(SlotIR(role, s.input_name, s.layer, s.span, modality=s.modality.name))
        if fam.backbone is None:
            comp.bag.error("E208", f"family `{famname}` has no backbone", fam.name.span)
            return
        spec.backbone = SlotIR("backbone", "backbone", fam.backbone, fam.backbone.span)

    def dump(self, comp: Compilation) -> str:
        return dump_spec(comp.spec) if comp.spec else ""
