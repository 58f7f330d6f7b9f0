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
from collections.abc import Iterator
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


def one_thread() -> Iterator[None]:
    """Tiny models on a shared CPU: one intra-op thread is 20x faster than two that wait on each other. A generator
    for `pytest.fixture(autouse=True)(one_thread)`, so that this module need not import pytest or torch."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model_folder(root: Path, name: str, source: Path | None = None) -> Path:
    """The PyTorch backend's files for `source` (default examples/<name>.msl), written to root/<name>/."""
    from metagen_backends.pytorch import emit

    from metagen_compiler.driver import compile_source
    from metagen_compiler.semantics.program import read_source

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


def gpl_tokenizer(root: Path, chars: int | None = 20000) -> Path:
    """root/tokenizer.json: a byte-level BPE of 400 tokens trained on the first `chars` characters of the GPL-3
    text (all of it for None) with data.py's tokenizer function; skips the test where the text is not installed.
    For `pytest.fixture(scope="module")(gpl_tokenizer)` in a module with a `root` fixture."""
    import pytest
    from metagen_backends.pytorch.training import data

    if not GPL.is_file():
        pytest.skip("base-files GPL-3 text is not here")
    path = root / "tokenizer.json"
    data.train_tokenizer([GPL.read_text()[:chars]], 400, None, path, False, True, "GPL-3")
    return path


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


# ------------------------------------------------------------------ scenes, point clouds, graphs from real digits


def rle_encode(mask: Any) -> str:
    """COCO's compressed RLE string of a (H, W) 0/1 array (column-major runs, the deltas after the first two
    counts, 5 bits a character with a continuation bit): pycocotools' rleToString, for writing test data."""
    flat = mask.T.reshape(-1).astype(bool)
    counts, value, run = [], False, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = not (x == 0 and not c & 0x10) and not (x == -1 and c & 0x10)
            out.append(chr(c + 48 + (0x20 if more else 0)))
    return "".join(out)


def write_digit_scenes(root: Path, n: int = 300, size: int = 48, classes: tuple[int, ...] = (0, 1, 2, 3),
                       seed: int = 0) -> Path:
    """`n` grey canvases of size x size, each with 1 to 3 of scikit-learn's handwritten digits (8x8, drawn at 2x,
    without overlap) of `classes`, as PNGs under root/images and a COCO JSON root/scenes.json: a category per digit
    class, each digit's bounding box and its mask (strokes above a quarter of the range) as RLE, alternately COCO's
    compressed string and a list of counts."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    pool = [i for i, t in enumerate(d.target) if int(t) in classes]
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k in range(n):
        canvas = np.zeros((size, size), dtype=np.float64)
        taken: list[tuple[int, int]] = []
        for _ in range(int(rng.integers(1, 4))):
            for _try in range(20):
                x, y = (int(v) for v in rng.integers(0, size - 16, 2))
                if all(abs(x - a) >= 16 or abs(y - b) >= 16 for a, b in taken):
                    break
            else:
                continue
            taken.append((x, y))
            i = int(rng.choice(pool))
            digit = np.kron(d.images[i], np.ones((2, 2))) / 16.0  # 16 x 16 in [0, 1]
            canvas[y : y + 16, x : x + 16] = np.maximum(canvas[y : y + 16, x : x + 16], digit)
            full = np.zeros((size, size), dtype=np.uint8)
            full[y : y + 16, x : x + 16] = digit > 0.25
            ys, xs = np.nonzero(full)
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            counts_form = len(annotations) % 2
            seg: Any = {"size": [size, size], "counts": rle_encode(full)}
            if counts_form:
                flat, runs, value, run = full.T.reshape(-1), [], 0, 0
                for v in flat:
                    if v != value:
                        runs.append(run)
                        value, run = v, 0
                    run += 1
                seg = {"size": [size, size], "counts": [*runs, run]}
            annotations.append({"id": len(annotations) + 1, "image_id": k, "category_id": int(d.target[i]) + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(full.sum()), "iscrowd": 0,
                                "segmentation": seg})
        Image.fromarray((canvas * 255).astype("uint8"), mode="L").save(root / "images" / f"{k:04d}.png")
        images.append({"id": k, "file_name": f"{k:04d}.png", "width": size, "height": size})
    categories = [{"id": c + 1, "name": str(c)} for c in classes]
    (root / "scenes.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                  "categories": categories}))
    return root / "scenes.json"


def digit_points(image: Any) -> Any:
    """A digit's strokes as a 3-D point cloud: each lit pixel (x, y) with z its intensity (0..1), (N, 3)."""
    import numpy as np

    ys, xs = np.nonzero(image)
    return np.stack((xs / 7.0, ys / 7.0, image[ys, xs] / 16.0), 1).astype("float32")


def write_ply(path: Path, points: Any, binary: bool) -> Path:
    """A .ply of (N, 3) float points, ASCII or binary little-endian."""
    import struct

    header = (f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\ncomment digits\n"
              f"element vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\nend_header\n")
    with path.open("wb") as f:
        f.write(header.encode())
        for p in points:
            f.write(struct.pack("<3f", *map(float, p)) if binary else f"{p[0]} {p[1]} {p[2]}\n".encode())
    return path


def write_digit_clouds(root: Path, per_class: int = 60) -> Path:
    """scikit-learn's digits as point clouds in one folder per class: .npy, ASCII .ply and binary .ply in turn."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    seen: Counter[int] = Counter()
    for i, (image, label) in enumerate(zip(d.images, d.target)):
        if seen[int(label)] >= per_class:
            continue
        seen[int(label)] += 1
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pts = digit_points(image)
        if i % 3 == 0:
            np.save(folder / f"{i:04d}.npy", pts)
        else:
            write_ply(folder / f"{i:04d}.ply", pts, binary=i % 3 == 2)
    return root


def write_digit_graphs(path: Path, per_class: int = 60, classes: tuple[int, ...] = tuple(range(10))) -> Path:
    """scikit-learn's digits as graphs, one per line of a .jsonl: a node per lit pixel (features: intensity, x, y),
    an edge between pixels that touch (8-neighbourhood), the digit as the label."""
    from sklearn.datasets import load_digits

    d = load_digits()
    seen: Counter[int] = Counter()
    lines = []
    for image, label in zip(d.images, d.target):
        if int(label) not in classes or seen[int(label)] >= per_class:
            continue
        seen[int(label)] += 1
        lit = [(y, x) for y in range(8) for x in range(8) if image[y, x] > 0]
        index = {p: k for k, p in enumerate(lit)}
        edges = [[index[(y, x)], index[(y + dy, x + dx)]] for (y, x) in lit
                 for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)) if (y + dy, x + dx) in index]
        x = [[float(image[y, xx]) / 16.0, xx / 7.0, y / 7.0] for y, xx in lit]
        lines.append(json.dumps({"x": x, "edges": edges, "y": int(label)}))
    path.write_text("\n".join(lines) + "\n")
    return path


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digit_captions(root: Path, per_class: int = 40) -> Path:
    """scikit-learn's digits as image-text pairs: PNGs under root/ and root/captions.jsonl, each caption naming
    the digit in words ("a handwritten seven"); returns the list."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    seen: Counter[int] = Counter()
    lines = []
    for i, (pixels, label) in enumerate(zip(d.images, d.target)):
        if seen[int(label)] >= per_class:
            continue
        seen[int(label)] += 1
        Image.fromarray((pixels * 255 / 16).astype("uint8"), mode="L").save(root / f"{i:04d}.png")
        lines.append(json.dumps({"image": f"{i:04d}.png", "text": f"a handwritten {NUMBER_WORDS[int(label)]}"}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root / "captions.jsonl"


# ------------------------------------------------------------------------------------------------------ speech

SENTENCES = ("The quick brown fox jumps over the lazy dog.", "A stitch in time saves nine.",
             "All that glitters is not gold.", "The early bird catches the worm.", "Actions speak louder than words.",
             "Better late than never.", "Every cloud has a silver lining.", "Practice makes perfect.",
             "Time is money.", "Knowledge is power.")
# whisper_tiny.msl at a size that trains in seconds on 3 s clips
TINY_WHISPER = ["--set", "samples=48000", "--set", "source_positions=150", "--set", "vocab=320", "--set", "context=32",
                "--set", "layers=1", "--set", "decoder_layers=1", "--set", "d_model=64", "--set", "heads=2",
                "--set", "ffn=128"]


def write_speech(folder: Path, sentences: tuple[str, ...] | list[str] = SENTENCES) -> Path:
    """folder/s<i>.wav, each sentence spoken by espeak-ng (22,050 Hz WAV), and folder/transcripts.tsv listing them;
    skips the test where espeak-ng is not installed. Returns the folder."""
    import shutil

    import pytest

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (.ci/setup installs it)")
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, text in enumerate(sentences):
        subprocess.run(["espeak-ng", "-w", str(folder / f"s{i}.wav"), text], check=True, capture_output=True)
        lines.append(f"s{i}.wav\t{text}\n")
    (folder / "transcripts.tsv").write_text("".join(lines))
    return folder


# ------------------------------------------------------------------------------------------- reference models

# clip_vit_b_32 at a tiny size, as (import, architecture, modality, task) for a one-model spec
TINY_CLIP = ("std.presets", "clip_vit_b_32 { image_size = 32; patch_size = 8; vision_layers = 2; vision_width = 64; "
             "vision_heads = 2; vision_mlp = 128; vocab = 97; context = 16; text_layers = 2; text_width = 64; "
             "text_heads = 2; text_mlp = 128; embed_dim = 32 }", "image, text -> embedding", "multimodal_retrieval")


def tiny_clip_config() -> Any:
    """transformers' CLIPConfig of TINY_CLIP (its defaults beside the dims)."""
    import transformers

    return transformers.CLIPConfig(
        text_config={"vocab_size": 97, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "eos_token_id": 2, "bos_token_id": 0,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32)
