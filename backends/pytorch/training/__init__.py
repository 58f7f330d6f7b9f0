"""Training and evaluation runtime that the PyTorch backend copies, verbatim, next to each model.py.

`train.py` and `evaluate.py` are scripts; `data.py` (with its data_*.py loaders), `loop.py` and
`split_metrics.py` are their helpers. None imports MetaGen,
so the output folder trains with torch (plus safetensors, and tokenizers, Pillow, soundfile or gymnasium for
text, images, audio or RL).
Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RUNTIME_FILES", "runtime_files"]

RUNTIME_FILES = (
    "train.py", "evaluate.py", "data.py", "data_audio.py", "data_graph.py", "data_points.py", "data_series.py",
    "data_vision.py", "loop.py", "rl.py", "split_metrics.py",
)


def runtime_files() -> dict[str, str]:
    """{file name: source} of the runtime modules, as they are in this package."""
    here = Path(__file__).resolve().parent
    return {name: (here / name).read_text(encoding="utf-8") for name in RUNTIME_FILES}
