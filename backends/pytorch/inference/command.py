"""`metagenc predict OUT/<model> INPUT... [options]`: the output folder's own predict.py, run in this process."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: metagenc predict OUT/<model> INPUT... [predict.py's options; OUT/<model>/predict.py --help]")
        return 0 if argv else 2
    folder = Path(argv[0])
    script = folder / "predict.py"
    if not script.is_file():
        print(f"metagenc: error: {folder}: no predict.py; expected an output folder of metagenc (OUT/<model>), "
              "compiled with the pytorch backend", file=sys.stderr)
        return 1
    sys.path.insert(0, str(folder.resolve()))  # predict.py imports its siblings (pipelines, data, ...)
    try:
        namespace = runpy.run_path(str(script), run_name="metagen_predict")
        return int(namespace["main"]([*argv[1:], "--model-dir", str(folder)]))
    finally:
        sys.path.remove(str(folder.resolve()))
