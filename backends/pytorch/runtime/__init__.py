"""Inference runtime that the PyTorch backend copies, verbatim, next to a model.py that uses it.

`generation.py` is the decode loop of a decoder-only language model's `generate()` (key-value cache, greedy and
sampled decoding, batched prompts with left padding). It imports torch only, never MetaGen.
`helpers.py` holds the helper functions and modules of model.py; it is not copied: lowering.py's HELPERS pastes
each of its definitions into the model.py that calls it.
Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metagen_compiler.compilation import Compilation

__all__ = ["GENERATION_FAMILIES", "generates", "generation_py"]

# decoder-only families whose compiled model gets generate(): one causal self-attention per layer
GENERATION_FAMILIES = frozenset({"std.transformer.decoder", "std.moe.decoder"})


def generates(comp: Compilation) -> bool:
    """Whether the compiled spec is a decoder-only language model: model.py gets generate() and a key-value
    cache in its attention, and generation.py is copied beside it."""
    spec = comp.spec
    return spec is not None and spec.family.qualname in GENERATION_FAMILIES and spec.task == "generation"


def generation_py() -> str:
    """The source of the output folder's generation.py, as it is in this package."""
    return (Path(__file__).resolve().parent / "generation.py").read_text(encoding="utf-8")
