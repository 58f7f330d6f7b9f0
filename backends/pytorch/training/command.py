"""`metagenc train FILE --data PATH [-o OUT] [training flags]`: compile with the PyTorch backend, then train.

Compiles FILE like `metagenc FILE -o OUT` (default backends), then runs the generated OUT/<model>/train.py in
a fresh Python with every other flag, so the run is exactly what `python OUT/<model>/train.py ...` does; then
compiles again, so report.json, the model card and the paper show the run's measurements.
Not copied into output folders (it needs MetaGen); the entry for cli.py's SUBCOMMANDS is `main`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metagenc train",
        description="Compile a spec with the PyTorch backend and train it; other flags go to train.py "
        "(python OUT/<model>/train.py --help lists them).",
    )
    p.add_argument("file", help="the .msl or .yaml spec")
    p.add_argument("-o", "--out", default="out", help="output root (default: out/)")
    p.add_argument("-I", dest="include", action="append", default=[], metavar="DIR", help="import search path")
    p.add_argument("--model", default=None, help="the model to build when the file defines several")
    p.add_argument("--backend", default="pytorch,latex", help="backends to run (pytorch is always added)")
    p.add_argument("--device-profile", default=None, help="device classes measured by `metagenc calibrate`")
    return p


def main(argv: list[str]) -> int:
    args, rest = _parser().parse_known_args(argv)
    if "--data" not in rest and not any(a.startswith("--data=") for a in rest):
        _parser().error("--data PATH is required (a file or folder, or `synthetic`)")
    from metagen_compiler.cli import main as compile_main

    out = Path(args.out)
    backends = args.backend if "pytorch" in args.backend.split(",") else f"pytorch,{args.backend}"
    compile_argv = [args.file, "-o", str(out), "--backend", backends]
    for d in args.include:
        compile_argv += ["-I", d]
    for flag, value in (("--model", args.model), ("--device-profile", args.device_profile)):
        if value is not None:
            compile_argv += [flag, value]
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/train.py")} if out.is_dir() else {}
    code = compile_main(compile_argv)
    if code != 0:
        return code
    written = [p for p in out.glob("*/train.py") if before.get(p) != p.stat().st_mtime_ns]
    if len(written) != 1:  # one model per compile: the folder whose train.py is new
        print(f"metagenc train: error: cannot tell which model folder in {out} was written", file=sys.stderr)
        return 3
    code = subprocess.call([sys.executable, str(written[0]), *rest])
    if code != 0:
        return code
    # compile again: report.json, the model card and the paper now show what the run measured (the compile
    # reads OUT/<model>/runs/*/measurements.json and keeps the runs)
    return compile_main(compile_argv)
