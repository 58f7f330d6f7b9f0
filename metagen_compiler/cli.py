"""The `metagenc` command line."""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from metagen_backends import BACKENDS, REQUIRES

from .outputs import SAFE_NAME, OutputError, commit, write_outputs
from .version import __version__

# The compiler itself is imported inside main(), so that `command` turns the collector off before the
# imports' allocations, and subcommands load only what they use. `outputs` and `metagen_backends` (the
# backends' table) import only the standard library.

__all__ = ["SUBCOMMANDS", "Needs", "Subcommand", "command", "main", "write_outputs"]

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
DEFAULT_BACKENDS = ("pytorch", "latex")


def _seed(text: str) -> int:
    """--seed: a whole number torch.manual_seed takes (a usage error otherwise, exit 2)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= v <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..2**63-1")
    return v


def _parser() -> argparse.ArgumentParser:
    from .driver import EMIT_ALIASES, STAGES

    p = argparse.ArgumentParser(
        prog="metagenc",
        description="Compile a MetaGen spec (.msl, or the seeds' .yaml) into a model: PyTorch code, graph IR, report.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.add_argument("--seed", type=_seed, default=0, help="seed baked into build_model() for the initial weights "
                   "(0 to 2**63-1: torch.manual_seed takes an int64)")
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
    p.add_argument("--fsync", action="store_true",
                   help="flush every output file to disk before it replaces the old one (to survive a power loss; "
                        "slower). Without it the outputs are still all or nothing when a run fails or is killed")
    p.add_argument("--version", action="version", version=f"metagenc {__version__}")
    return p


@dataclass(frozen=True)
class Needs:
    """Modules (import names) that a backend or subcommand imports beyond metagen's own dependencies, and the
    pip extra that installs them: `pip install "metagen[EXTRA]"`. `when`, if given, says for which arguments."""

    extra: str
    modules: tuple[str, ...]
    when: Callable[[Sequence[str]], bool] | None = None


@dataclass(frozen=True)
class Subcommand:
    """`metagenc NAME ...`: `entry` ("module:function", imported only when used) gets the rest of the
    arguments; `summary` is its line in `metagenc --help`; `needs` is checked before it is imported."""

    entry: str
    summary: str
    needs: tuple[Needs, ...] = ()


_ONNX = Needs(*REQUIRES["onnx"])  # the onnx backend's modules: import-weights and calibrate use it too


def _reads_a_torch_file(args: Sequence[str]) -> bool:
    """import-weights MODEL_DIR WEIGHTS: a WEIGHTS that is not .npz is loaded with torch."""
    positional, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-o", "--output", "--model"):
            skip = True
        elif not a.startswith("-"):
            positional.append(a)
    return len(positional) >= 2 and not positional[1].endswith(".npz")


# Subcommands live in their own modules, imported only when used: `metagenc fmt ...`, `metagenc lsp`.
# `metagenc --help` lists them from this table, in this order.
SUBCOMMANDS: dict[str, Subcommand] = {
    "fmt": Subcommand("metagen_compiler.syntax.fmt:main", "format MSL files in the canonical style (--check: report only)"),
    "lsp": Subcommand("metagen_compiler.editor.lsp:main", "the MSL language server, on stdio (docs/editors.md)",
                      (Needs("editor", ("pygls", "lsprotocol")),)),
    "calibrate": Subcommand("metagen_compiler.tools.calibrate:main",
                            "measure this machine with onnxruntime and write an MSL device profile",
                            (Needs(_ONNX.extra, (*_ONNX.modules, "onnxruntime")),)),
    "import-weights": Subcommand("metagen_backends.onnx.weights:main",
                                 "put trained weights (a state_dict .pt or .npz) into a compiled model's ONNX file",
                                 (_ONNX, Needs("torch", ("torch",), _reads_a_torch_file))),
    "train": Subcommand("metagen_backends.pytorch.training.command:main",
                        "compile a spec, then train it on local data with the generated train.py (docs/training.md)",
                        (Needs("train", ("torch", "safetensors")),)),
    "predict": Subcommand("metagen_backends.pytorch.inference.command:main",
                          "run a compiled model on raw inputs with its predict.py (docs/inference.md)",
                          (Needs("train", ("torch", "safetensors")),)),
    "search": Subcommand("metagen_compiler.search.command:main", "search the open dimensions of a spec (docs/search.md)",
                         (Needs("search", ("optuna",)),)),
}

# pip's names for the modules whose import name differs
_DISTRIBUTIONS = {"onnx_ir": "onnx-ir"}


def _epilog() -> str:
    width = max(len(n) for n in SUBCOMMANDS) + 2
    lines = ["subcommands (metagenc COMMAND --help for each):"]
    lines += [f"  {name:<{width}}{sub.summary}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", "exit codes: 0 ok, 1 errors in the input or outputs that cannot be written, 2 usage (a missing",
              "optional dependency included), 3 internal compiler error. The outputs of a run are written all or",
              "nothing: a run that fails or is killed leaves OUT as it was."]
    return "\n".join(lines)


def _missing(needs: Sequence[Needs], args: Sequence[str], what: str) -> str | None:
    """The usage error for the first unmet need, or None when everything is installed."""
    for n in needs:
        if n.when is not None and not n.when(args):
            continue
        absent = [m for m in n.modules if not _installed(m)]
        if absent:
            names = ", ".join(_DISTRIBUTIONS.get(m, m) for m in absent)
            return f"{what} needs {names}, which {'is' if len(absent) == 1 else 'are'} not installed: " \
                   f'pip install "metagen[{n.extra}]"'
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: in sys.modules without a spec (present)
        return module in sys.modules and sys.modules[module] is not None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        from importlib import import_module

        name, sub = argv[0], SUBCOMMANDS[argv[0]]
        if "-h" not in argv[1:] and "--help" not in argv[1:]:
            problem = _missing(sub.needs, argv[1:], f"`metagenc {name}`")
            if problem:
                print(f"metagenc: error: {problem}", file=sys.stderr)
                return EXIT_USAGE
        mod, fn = sub.entry.split(":")
        try:
            entry = getattr(import_module(mod), fn)
        except ModuleNotFoundError as e:
            extras = " or ".join(f'"metagen[{n.extra}]"' for n in sub.needs) or '"metagen"'
            print(f"metagenc: error: `metagenc {name}` needs {e.name}, which is not installed: pip install {extras}",
                  file=sys.stderr)
            return EXIT_USAGE
        return int(entry(argv[1:]))
    return _compile(argv)


def _compile(argv: list[str]) -> int:
    from metagen_compiler.semantics.program import read_source

    from .compilation import Options
    from .diagnostics import BackendError, DiagnosticBag, render_json, render_text

    args = _parser().parse_args(argv)
    fmt = args.diagnostics_format
    backends = [] if args.backend.strip() in ("", "none") else [b.strip() for b in args.backend.split(",")]
    for b in backends:
        if b not in BACKENDS:
            print(f"metagenc: error: unknown backend `{b}` (available: {', '.join(sorted(BACKENDS))})", file=sys.stderr)
            return EXIT_USAGE
    for b in backends:
        problem = _missing([Needs(*REQUIRES[b])] if b in REQUIRES else [], argv, f"the {b} backend")
        if problem:
            print(f"metagenc: error: {problem}", file=sys.stderr)
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
    staged: dict[str, dict[str, str | bytes]] = {}
    for c in comps:
        assert c.spec is not None
        if not SAFE_NAME.match(c.spec.name):
            print(f"metagenc: error: model name `{c.spec.name}` is not a safe folder name", file=sys.stderr)
            return EXIT_INPUT
        try:
            staged[c.spec.name] = write_outputs(c, out_root, backends)[1]
        except BackendError as e:  # the input asks for something a backend cannot write
            diags = list(e.diagnostics)
            sys.stderr.write(render_json(diags) if fmt == "json" else render_text(diags))  # type: ignore[arg-type]
            return EXIT_INPUT
        except Exception as e:  # noqa: BLE001 - a backend failure is a compiler bug
            print(f"metagenc: internal error in a backend: {type(e).__name__}: {e}", file=sys.stderr)
            return EXIT_INTERNAL
    try:  # every model's folder, all or nothing
        targets = commit(out_root, staged, durable=args.fsync)
    except OutputError as e:
        print(f"metagenc: error: {e}", file=sys.stderr)
        return EXIT_INPUT
    for target, files in zip(targets, staged.values(), strict=True):
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
