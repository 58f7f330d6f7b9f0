"""overrides: `--set name=value` (Options.overrides) replaces family parameters of the spec IR, after `check` built it
and before anything is derived from them (highest precedence)."""

from __future__ import annotations

from typing import ClassVar

from metagen_compiler.ir.spec import Bound
from metagen_compiler.syntax.parser import _parser  # the same grammar parses the value

from ..compilation import Compilation
from ..span import SourceFile, Span
from .check import CheckPass

__all__ = ["OverridesPass", "apply_overrides"]


class OverridesPass:
    name: ClassVar[str] = "overrides"
    doc: ClassVar[str] = "Apply the command line's --set name=value to the family parameters."

    def run(self, comp: Compilation) -> None:
        apply_overrides(comp, comp.options.overrides)

    def dump(self, comp: Compilation) -> str:
        return CheckPass().dump(comp)  # the spec IR, with the overridden values


def apply_overrides(comp: Compilation, overrides: tuple[tuple[str, str], ...]) -> None:
    spec = comp.spec
    if spec is None or not overrides:
        return
    from lark.exceptions import UnexpectedInput

    from metagen_compiler.semantics.limits import LIMIT_CODE, LIMITS_HINT, MAX_NESTING
    from metagen_compiler.syntax.parser import _first_span, _ToAst, _too_deep

    from ..diagnostics import did_you_mean

    for name, text in overrides:
        src = SourceFile(f"<--set {name}>", f"model _ {{ architecture _ {{ {name} = {text} }} }}")
        try:
            tree = _parser().parse(src.text)
        except UnexpectedInput:
            comp.bag.error("E001", f"cannot parse `--set {name}={text}`", None, hint="write --set name=value, e.g. --set layers=2")
            continue
        deep = _too_deep(tree)
        if deep is not None:  # as parse_msl does: the recursive transformer stays within Python's stack
            comp.bag.error(LIMIT_CODE, f"`--set {name}`: the value nests more than {MAX_NESTING} levels deep, the most "
                           "the language allows", _first_span(src, deep), hint=LIMITS_HINT)
            continue
        reported = len(comp.bag.items)
        module = _ToAst(src, comp.bag).transform(tree)
        if len(comp.bag.items) > reported:  # a number past the limits, diagnosed at the literal as in a file
            continue
        field = module.models[0].architecture.fields[0]
        if name not in spec.bindings:
            comp.bag.error("E207", f"`--set {name}`: family `{spec.family.qualname.rsplit('.', 1)[-1]}` has no parameter `{name}`",
                           None, hint=did_you_mean(name, spec.bindings) or f"parameters: {', '.join(spec.bindings)}")
            continue
        old = spec.bindings[name]
        spec.bindings[name] = Bound(field.value, None, comp.program.root_name if comp.program else "", Span.of(src, 0, 0),
                                    "command line", field.constraints or old.constraints)
