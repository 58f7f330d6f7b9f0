"""The `metagenc` command line."""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .compilation import Compilation

# The compiler itself is imported inside main(), so that `command` turns the collector off before the
# imports' allocations, and subcommands load only what they use.

__all__ = ["command", "main", "write_outputs"]

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
DEFAULT_BACKENDS = ("pytorch", "latex")


def _parser() -> argparse.ArgumentParser:
    from .driver import EMIT_ALIASES, STAGES

    p = argparse.ArgumentParser(
        prog="metagenc",
        description="Compile a MetaGen spec (.msl, or the seeds' .yaml) into a model: PyTorch code, graph IR, report.",
        epilog="Exit codes: 0 ok, 1 errors in the input, 2 usage, 3 internal compiler error.",
    )
    p.add_argument("file", help="the spec to compile (.msl or .yaml)")
    p.add_argument("-o", "--output", default="out", help="output folder; the model goes to OUT/<model name>/ (default: out)")
    p.add_argument("--emit", choices=sorted(set(STAGES) | set(EMIT_ALIASES)),
                   help="stop after this stage and print its canonical dump (ast, ir, graph or any pass name)")
    p.add_argument("--print-after", action="append", default=[], choices=STAGES, metavar="PASS",
                   help=f"print a pass's dump after it runs (repeatable): {', '.join(STAGES)}")
    p.add_argument("--backend", default=",".join(DEFAULT_BACKENDS),
                   help="comma-separated backends to run: pytorch, latex, onnx (default: pytorch,latex; 'none' for the IR "
                        "and report only)")
    p.add_argument("--seed", type=int, default=0, help="seed baked into build_model() for the initial weights")
    p.add_argument("--check", action="store_true", help="only diagnose: run every pass, write nothing")
    p.add_argument("--diagnostics-format", choices=("text", "json"), default="text")
    p.add_argument("-I", dest="include", action="append", default=[], metavar="DIR", help="add an import search path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override a family parameter, e.g. --set layers=2 (repeatable)")
    p.add_argument("--model", help="compile only this model of the file")
    p.add_argument("--opset", type=int, help="ONNX opset for the onnx backend (default: the backend's pinned opset)")
    p.add_argument("--weights", choices=("random", "none", "external"), default="random",
                   help="ONNX weights: random initial weights (external data above 2 GiB), none (graph only), external")
    p.add_argument("--device-profile", dest="device_profiles", action="append", default=[], metavar="FILE",
                   help="add the device classes of an MSL file (e.g. from `metagenc calibrate`) for latency estimates")
    p.add_argument("--version", action="version", version=f"metagenc {__version__}")
    return p


def write_outputs(comp: Compilation, out_root: Path, backends: list[str]) -> tuple[Path, dict[str, str | bytes]]:
    """All files for one model, as {relative path: text or bytes}; written by `_commit` atomically.

    A backend is `emit(comp) -> {relative path: str | bytes}`; paths are relative to OUT/<name>/."""
    from .graph import graph_dot, graph_json
    from .ir import dump_spec
    from .report import build_report, jsonable

    assert comp.spec is not None and comp.graph is not None
    files: dict[str, str | bytes] = {}
    files["spec.txt"] = dump_spec(comp.spec)
    files["graph.json"] = json.dumps(graph_json(comp.graph), indent=1, sort_keys=False) + "\n"
    files["graph.dot"] = graph_dot(comp.graph)
    files["report.json"] = json.dumps(jsonable(build_report(comp, backends)), indent=2) + "\n"
    for b in backends:
        from importlib import import_module

        from metagen_backends import BACKENDS

        mod, fn = BACKENDS[b].split(":")
        for rel, text in getattr(import_module(mod), fn)(comp).items():
            files[rel] = text
    return out_root / comp.spec.name, files


def _commit(target: Path, files: dict[str, str | bytes]) -> None:
    """Write into a temporary folder beside `target`, then swap it in with renames."""
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        for rel, text in sorted(files.items()):
            p = (tmp / rel).resolve()
            if tmp.resolve() not in p.parents:
                raise ValueError(f"refusing to write outside the output folder: {rel}")
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(text, bytes):
                p.write_bytes(text)
            else:
                p.write_text(text, encoding="utf-8")
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=root))
            os.rmdir(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# Subcommands live in their own modules, imported only when used: `metagenc fmt ...`, `metagenc lsp`.
SUBCOMMANDS = {
    "fmt": "metagen_compiler.fmt:main",
    "lsp": "metagen_compiler.lsp:main",
    "calibrate": "metagen_compiler.calibrate:main",
    "import-weights": "metagen_backends.onnx.weights:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        from importlib import import_module

        mod, fn = SUBCOMMANDS[argv[0]].split(":")
        try:
            entry = getattr(import_module(mod), fn)
        except ImportError as e:
            print(f"metagenc {argv[0]}: not available ({e})", file=sys.stderr)
            return EXIT_USAGE
        return int(entry(argv[1:]))
    return _compile(argv)


def _compile(argv: list[str]) -> int:
    from .compilation import Options
    from .diagnostics import BackendError, DiagnosticBag, render_json, render_text
    from .program import read_source

    args = _parser().parse_args(argv)
    fmt = args.diagnostics_format
    backends = [] if args.backend.strip() in ("", "none") else [b.strip() for b in args.backend.split(",")]
    from metagen_backends import BACKENDS

    for b in backends:
        if b not in BACKENDS:
            print(f"metagenc: error: unknown backend `{b}` (available: {', '.join(sorted(BACKENDS))})", file=sys.stderr)
            return EXIT_USAGE
    overrides = []
    for o in args.overrides:
        if "=" not in o:
            print(f"metagenc: error: --set takes NAME=VALUE, got `{o}`", file=sys.stderr)
            return EXIT_USAGE
        k, v = o.split("=", 1)
        overrides.append((k.strip(), v.strip()))
    try:
        source = read_source(args.file)
    except (OSError, UnicodeDecodeError) as e:
        bag = DiagnosticBag()
        bag.error("E004", f"cannot read `{args.file}`: {getattr(e, 'strerror', None) or e}", None)
        sys.stderr.write(render_json(bag.items) if fmt == "json" else render_text(bag.items))
        return EXIT_INPUT
    options = Options(search_paths=tuple(Path(p) for p in args.include), seed=args.seed, model=args.model,
                      opset=args.opset, weights=args.weights,
                      device_profiles=tuple(Path(p) for p in args.device_profiles))

    def on_dump(name: str, text: str) -> None:
        sys.stdout.write(f"// ----- after {name}\n{text}")

    from .driver import EMIT_ALIASES, collect_diagnostics, compile_model_set

    comps = compile_model_set(source, options, stop_after=args.emit, print_after=tuple(args.print_after),
                              on_dump=on_dump, overrides=tuple(overrides))
    uniq = collect_diagnostics(comps)
    if uniq:
        sys.stderr.write(render_json(uniq) if fmt == "json" else render_text(uniq))
    elif fmt == "json":
        sys.stderr.write("[]\n")
    if any(d.code == "I001" for d in uniq):
        return EXIT_INTERNAL
    if any(c.bag.has_errors for c in comps):
        return EXIT_INPUT
    if args.emit:
        from .passes import PASSES

        stage = EMIT_ALIASES.get(args.emit, args.emit)
        for c in comps:
            sys.stdout.write(PASSES[stage].dump(c))
        return EXIT_OK
    if args.check:
        return EXIT_OK
    out_root = Path(args.output)
    staged = []
    for c in comps:
        assert c.spec is not None
        if not _SAFE_NAME.match(c.spec.name):
            print(f"metagenc: error: model name `{c.spec.name}` is not a safe folder name", file=sys.stderr)
            return EXIT_INPUT
        try:
            staged.append(write_outputs(c, out_root, backends))
        except BackendError as e:  # the input asks for something a backend cannot write
            diags = list(e.diagnostics)
            sys.stderr.write(render_json(diags) if fmt == "json" else render_text(diags))  # type: ignore[arg-type]
            return EXIT_INPUT
        except Exception as e:  # a backend failure is a compiler bug
            print(f"metagenc: internal error in a backend: {type(e).__name__}: {e}", file=sys.stderr)
            return EXIT_INTERNAL
    for target, files in staged:
        _commit(target, files)
        print(f"wrote {target}/ ({', '.join(sorted(files))})")
    return EXIT_OK


def command(argv: list[str] | None = None) -> int:
    """The `metagenc` command (console script and `python -m metagen_compiler.cli`). A compile is the
    whole process: it ends right after, and the OS takes its memory back. So the cyclic collector stays
    off for it: otherwise its one late pass over everything the compile made (and the pass at
    interpreter exit) cost about a tenth of a typical compile, and a compile makes little cyclic garbage.
    Subcommands (the language server runs for hours) keep the collector. `main` is for callers in a
    long-lived process and leaves the collector as it found it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not (argv and argv[0] in SUBCOMMANDS):
        gc.disable()
    return main(argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(command())
