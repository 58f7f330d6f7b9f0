"""The driver: runs the pipeline's passes in order, stopping at errors or at a requested stage."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import replace

from .compilation import Compilation, Options, Pass
from .diagnostics import CompileError, Diagnostic
from .passes import PIPELINE
from .span import SourceFile

__all__ = ["STAGES", "collect_diagnostics", "compile_model_set", "compile_source"]

STAGES = tuple(p.name for p in PIPELINE)
# --emit names that are friendlier than pass names
EMIT_ALIASES = {"ast": "parse", "ir": "overrides", "graph": "shapes"}  # the IR as --set left it; the graph with shapes


def _run_passes(comp: Compilation, passes: tuple[Pass, ...], *, stop: str | None, print_after: tuple[str, ...],
                on_dump: Callable[[str, str], None] | None, verify: bool = False) -> bool:
    """Run `passes` on `comp` in order; False once one reported an error (or raised), or `stop` ran. An
    exception other than CompileError is a bug in the compiler: reported as I001 with its trace (raised with
    `verify`)."""
    for p in passes:
        try:
            p.run(comp)
            if verify and comp.graph is not None:
                from metagen_compiler.ir.graph import verify_graph

                problems = verify_graph(comp.graph)
                assert not problems, f"IR verifier after {p.name}: {problems}"
        except CompileError:
            return False
        except RecursionError:
            comp.bag.error("I001", "the compiler ran out of recursion depth (a block may call itself)",
                           None, hint="check for blocks that use themselves")
            return False
        except Exception as e:  # an internal error is a bug: report it as one, with the trace
            if verify:
                raise
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-4))
            comp.bag.error("I001", f"internal compiler error in pass `{p.name}`: {type(e).__name__}: {e}", None,
                           hint="this is a bug in metagenc; please report it with the input file.\n" + tb)
            return False
        if comp.bag.has_errors:
            return False
        if on_dump is not None and p.name in print_after:
            on_dump(p.name, p.dump(comp))
        if stop is not None and p.name == stop:
            return False
    return True


def compile_source(source: SourceFile, options: Options | None = None, *, stop_after: str | None = None,
                   print_after: tuple[str, ...] = (), on_dump: Callable[[str, str], None] | None = None,
                   verify: bool = False) -> Compilation:
    """Run the pipeline on one source file (its first model). Diagnostics are in `comp.bag`; never raises for
    bad input."""
    comp = Compilation(source, options or Options())
    _run_passes(comp, PIPELINE, stop=EMIT_ALIASES.get(stop_after or "", stop_after), print_after=print_after,
                on_dump=on_dump, verify=verify)
    return comp


FRONT_END = 2  # parse and resolve: run once per file, shared by its models


def compile_model_set(source: SourceFile, options: Options, *, stop_after: str | None = None,
                      print_after: tuple[str, ...] = (), on_dump: Callable[[str, str], None] | None = None,
                      overrides: tuple[tuple[str, str], ...] = ()) -> list[Compilation]:
    """Compile every model in a file (or the one `options.model` names). The front end runs once.
    `overrides` (--set) are added to `options.overrides`, which the `overrides` pass applies."""
    if overrides:
        options = replace(options, overrides=options.overrides + tuple(overrides))
    stop = EMIT_ALIASES.get(stop_after or "", stop_after)
    first = Compilation(source, options)
    if not _run_passes(first, PIPELINE[:FRONT_END], stop=stop, print_after=print_after, on_dump=on_dump):
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
        _run_passes(comp, PIPELINE[FRONT_END:], stop=stop, print_after=print_after, on_dump=on_dump)
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
