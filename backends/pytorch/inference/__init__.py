"""Inference runtime that the PyTorch backend copies, verbatim, next to each model.py: `predict.py` (the command
line), `pipelines.py` (load_pipeline), `tasks.py` (one runner per task) and `inputs.py` (preprocessing). They
import the training runtime's data modules (the same readers as training), loop.py and weights.py, never MetaGen.

Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["INFERENCE_FILES", "inference_files", "load_pipeline"]

INFERENCE_FILES = ("predict.py", "pipelines.py", "tasks.py", "inputs.py", "ocr.py", "audio_out.py")


def inference_files() -> dict[str, str]:
    """{file name: source} of the inference modules, as they are in this package."""
    here = Path(__file__).resolve().parent
    return {name: (here / name).read_text(encoding="utf-8") for name in INFERENCE_FILES}


def load_pipeline(folder: str | Path, **kw: Any) -> Any:
    """pipelines.load_pipeline (imports torch): the task pipeline of an output folder."""
    from .pipelines import load_pipeline as load

    return load(folder, **kw)
