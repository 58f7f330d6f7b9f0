"""The family parameters a model does not read: those named only by the heads of other tasks (a decoder's
`num_classes` in a generation model). The paper lists them, so a reader does not look for them in the model.

Conservative: a name that appears anywhere in the instantiated slots, the family's ties, preferences,
requirements, backbone and encoders, any parameter's default, or the input tensors' sizes counts as used.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from metagen_compiler.ir.spec import SpecIR
from metagen_compiler.semantics.modalities import INPUT_FORMS
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.visit import walk

__all__ = ["unused_params"]


def _names(parts: A.Node | Iterable[A.Node] | None, idents: bool = True) -> set[str]:
    """The one-part names the nodes refer to; with `idents`, every identifier (labels and argument names too: more
    names count as used)."""
    if parts is None:
        return set()
    out: set[str] = set()
    for n in walk(parts):
        if isinstance(n, A.Name):
            out.add(n.parts[0])
        elif idents and isinstance(n, A.Ident):
            out.add(n.name)
    return out


def unused_params(spec: SpecIR, dims: Collection[str]) -> dict[str, list[str]]:
    """Each parameter of `dims` that only other tasks' heads read -> the tasks of those heads, in the family's
    order of heads; empty for a family that is not a family node (a preset resolves to one before this runs)."""
    fam = spec.family.node
    if not isinstance(fam, A.Family):
        return {}
    used: set[str] = set()
    for slot in [*spec.encoders, spec.backbone, spec.head]:
        if slot is not None:
            used |= _names(slot.layer)
    for part in (fam.ties, fam.prefers, fam.requires, fam.backbone, fam.encoders):
        used |= _names(part)
    for prm in fam.params:
        used |= _names(prm.default)
    for enc in spec.encoders:  # the input tensors' sizes (an image's `image_size`, text's `context`)
        for form in INPUT_FORMS.get(enc.modality or enc.key, ()):
            used |= {d for d in form.shape if isinstance(d, str)} | set(form.symbols.values())
            used |= {form.high} if form.high else set()
    chosen = spec.head.key if spec.head is not None else None
    out: dict[str, list[str]] = {}
    for head in fam.heads:
        if head.task.name == chosen:
            continue
        for n in sorted(_names(head.layer, idents=False)):
            if n in dims and n not in used:
                out.setdefault(n, []).append(head.task.name)
    return out
