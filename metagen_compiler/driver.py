"""The driver: runs the pipeline's passes in order, stopping at errors or at a requested stage."""

from __future__ import annotations

import traceback
from collections.abc import Callable

from .compilation import Compilation, Options
from .diagnostics import CompileError, Diagnostic
from .passes import PASSES, PIPELINE
from .span import SourceFile

__all__ = ["compile_source", "compile_model_set", "collect_diagnostics", "STAGES"]

STAGES = tuple(p.name for p in PIPELINE)
# --emit names that are friendlier than pass names
EMIT_ALIASES = {"ast": "parse", "ir": "check", "graph": "lower"}


def compile_source(source: SourceFile, options: Options | None = None, *, stop_after: str | None = None,
                   print_after: tuple[str, ...] = (), on_dump: Callable[[str, str], None] | None = None,
                   verify: bool = False) -> Compilation:
    """Run the pipeline on one source file. Diagnostics are in `comp.bag`; never raises for bad input."""
    comp = Compilation(source, options or Options())
    stop = EMIT_ALIASES.get(stop_after or "", stop_after)
    for p in PIPELINE:
        try:
            p.run(comp)
            if verify and comp.graph is not None:
                from .graph import verify_graph

                problems = verify_graph(comp.graph)
                assert not problems, f"IR verifier after {p.name}: {problems}"
        except CompileError:
            break
        except RecursionError:
            comp.bag.error("I001", "the compiler ran out of recursion depth (a block may call itself)",
                           None, hint="check for blocks that use themselves")
            break
        except Exception as e:  # an internal error is a bug: report it as one, with the trace
            if verify:
                raise
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-4))
            comp.bag.error("I001", f"internal compiler error in pass `{p.name}`: {type(e).__name__}: {e}", None,
                           hint="this is a bug in metagenc; please report it with the input file.\n" + tb)
            break
        if comp.bag.has_errors:
            break
        if on_dump is not None and p.name in print_after:
            on_dump(p.name, PASSES[p.name].dump(comp))
        if stop is not None and p.name == stop:
            break
    return comp


def compile_model_set(source: SourceFile, options: Options, *, stop_after: str | None = None,
                      print_after: tuple[str, ...] = (), on_dump: Callable[[str, str], None] | None = None,
                      overrides: tuple[tuple[str, str], ...] = ()) -> list[Compilation]:
    """Compile every model in a file (or the one `options.model` names). Front end runs once."""
    from .passes.check import CheckPass

    first = Compilation(source, options)
    front = [p for p in PIPELINE if p.name in ("parse", "resolve")]
    stop = EMIT_ALIASES.get(stop_after or "", stop_after)
    for p in front:
        try:
            p.run(first)
        except CompileError:
            return [first]
        if first.bag.has_errors:
            return [first]
        if on_dump is not None and p.name in print_after:
            on_dump(p.name, p.dump(first))
        if stop == p.name:
            return [first]
    assert first.module is not None
    models = list(first.module.models)
    if options.model is not None:
        models = [m for m in models if m.name.name == options.model]
        if not models:
            from .diagnostics import did_you_mean

            first.bag.error("E103", f"no model `{options.model}` in this file", None,
                            hint=did_you_mean(options.model, [m.name.name for m in first.module.models]))
            return [first]
    out = []
    for m in models:
        comp = Compilation(source, options, module=first.module, program=first.program, model=m)
        comp.bag.items.extend(first.bag.items)
        for p in PIPELINE[2:]:
            try:
                p.run(comp)
                if isinstance(p, CheckPass) and comp.spec is not None:
                    from .overrides import apply_overrides

                    apply_overrides(comp, overrides)
            except CompileError:
                break
            except RecursionError:
                comp.bag.error("I001", "the compiler ran out of recursion depth (a block may call itself)", None)
                break
            except Exception as e:
                tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-4))
                comp.bag.error("I001", f"internal compiler error in pass `{p.name}`: {type(e).__name__}: {e}", None,
                               hint="this is a bug in metagenc; please report it with the input file.\n" + tb)
                break
            if comp.bag.has_errors:
                break
            if on_dump is not None and p.name in print_after:
                on_dump(p.name, p.dump(comp))
            if stop is not None and p.name == stop:
                break
        out.append(comp)
    return out


def collect_diagnostics(comps: list[Compilation]) -> list[Diagnostic]:
    """All diagnostics of a compile, sorted per model and de-duplicated (the front end's are shared):
    what `metagenc` prints and what the language server publishes."""
    out: list[Diagnostic] = []
    seen: set[Diagnostic] = set()
    for d in (d for c in comps for d in c.bag.sorted()):
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out
