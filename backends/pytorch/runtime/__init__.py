"""Inference runtime that the PyTorch backend copies, verbatim, next to a model.py that uses it.

`generation.py` is the decode loop of a decoder-only language model's `generate()` (key-value cache, greedy and
sampled decoding, batched prompts with left padding). It imports torch only, never MetaGen.
Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["GENERATION_FAMILIES", "generates", "generation_py"]

# decoder-only families whose compiled model gets generate(): one causal self-attention per layer
GENERATION_FAMILIES = frozenset({"std.transformer.decoder", "std.moe.decoder"})


def generates(comp: object) -> bool:
    """Whether the compiled spec is a decoder-only language model: model.py gets generate() and a key-value
    cache in its attention, and generation.py is copied beside it."""
    spec = getattr(comp, "spec", None)
    family = getattr(getattr(spec, "family", None), "qualname", None)
    return family in GENERATION_FAMILIES and getattr(spec, "task", None) == "generation"


def generation_py() -> str:
    """The source of the output folder's generation.py, as it is in this package."""
    return (Path(__file__).resolve().parent / "generation.py").read_text(encoding="utf-8")
