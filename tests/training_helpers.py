"""Helpers shared by tests/test_training.py, tests/test_training_more.py and benchmarks/train.py.

Compiling a spec into a model folder, running a copied script with MetaGen unimportable and one thread,
reading a run's metrics.jsonl, and writing the real data sets (scikit-learn's digits and breast-cancer table,
Debian's GPL-3 text) those runs train on. Imports nothing heavy at import time: sklearn, Pillow and
tokenizers are imported by the function that needs them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GPL = Path("/usr/share/common-licenses/GPL-3")
TINY_LM = ["--set", "vocab=384", "--set", "d_model=32", "--set", "heads=2", "--set", "layers=1"]
# Runs a copied script with every MetaGen package made unimportable: the output folder must stand alone.
NO_METAGEN = (
    "import sys, runpy; "
    "sys.modules.update(dict.fromkeys(['metagen_compiler', 'metagen_backends', 'metagen_grammar', 'metagen_stdlib'])); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def model_folder(root: Path, name: str, source: Path | None = None) -> Path:
    """The PyTorch backend's files for `source` (default examples/<name>.msl), written to root/<name>/."""
    from metagen_backends.pytorch import emit

    from metagen_compiler.driver import compile_source
    from metagen_compiler.program import read_source

    source = source or ROOT / "examples" / f"{name}.msl"
    display = source.relative_to(ROOT).as_posix() if source.is_relative_to(ROOT) else source.name
    comp = compile_source(read_source(source, display=display))
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in emit(comp).items():
        (folder / file).write_text(text)
    return folder


def run_script(folder: Path, script: str, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    """`python script args` in `folder`, MetaGen unimportable, one thread; output captured as text."""
    return subprocess.run([sys.executable, "-c", NO_METAGEN, script, *args], cwd=folder, capture_output=True,
                          text=True, timeout=600, env=ONE_THREAD, check=False, **kw)


def records(run: Path, split: str) -> list[dict[str, Any]]:
    """The metrics.jsonl records of one split (`train` steps or `val` evaluations) of a run folder."""
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def write_csv(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def write_digits(root: Path) -> Path:
    """scikit-learn's 1,797 handwritten digits (8x8, 0..16) as PNGs in one folder per class under `root`."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (pixels, label) in enumerate(zip(d.images, d.target)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels * 255 / 16).astype("uint8"), mode="L").save(root / str(label) / f"{i:04d}.png")
    return root


def write_cancer(path: Path) -> tuple[Path, Any, Any]:
    """scikit-learn's breast-cancer table (569 rows, 30 numeric features, 2 classes) as a CSV with the target
    column `diagnosis`; returns the path and the table's features and labels (numpy arrays)."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    write_csv(path, [[n.replace(" ", "_") for n in d.feature_names] + ["diagnosis"]] +
              [[repr(float(v)) for v in row] + [int(label)] for row, label in zip(d.data, d.target)])
    return path, d.data, d.target


def unigram_perplexity(run: Path, corpus: Path = GPL) -> float:
    """Validation perplexity of the add-one unigram model of the training tokens of a run on the .txt `corpus`
    (same tokenizer and split): the baseline a language model has to beat."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(run / "tokenizer.json"))
    split = json.loads((run / "data.json").read_text())["split"]
    paras = [p for p in corpus.read_text().split("\n\n") if p.strip()]
    text = {f"{corpus.name}:{k}": p for k, p in enumerate(paras)}
    counts = Counter(t for i in split["train"] for t in tok.encode(text[i]).ids)
    val = [t for i in split["val"] for t in tok.encode(text[i]).ids]
    total, vocab = sum(counts.values()), tok.get_vocab_size()
    return math.exp(-sum(math.log((counts[t] + 1) / (total + vocab)) for t in val) / len(val))
