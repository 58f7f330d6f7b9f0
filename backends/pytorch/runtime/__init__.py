"""Inference runtime that the PyTorch backend copies, verbatim, next to a model.py that uses it.

`generation.py` is the decode loop of `generate()`: a key-value cache for attention, recurrent states for
state-space layers, the source computed once for encoder-decoders; greedy, sampled and beam-search decoding,
batched prompts with padding. It imports torch only, never MetaGen.
`helpers.py` (the layers' helper functions and modules, init_weights), `boxes.py`, `detection.py`, `matching.py`,
`diffusion.py`, `codec.py`, `masks.py` (the tasks' losses, metrics and inference), `rl.py` and `recsys.py` (model
methods) are not copied: lowering.py's runtime_source pastes each definition a model.py needs into it, with the
definitions it reads (lowering.RUNTIME_MODULES lists them, in model.py's order).
`objectives/` holds each task's loss, metrics, example targets and sampler as a class (backends/pytorch/losses.py
derives model.py's lines from its text, with the spec's input names filled in).
Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from metagen_backends.decoding import Decoding, decoding

if TYPE_CHECKING:
    from metagen_compiler.compilation import Compilation

__all__ = ["generates", "generation_py", "model_decoding"]


def model_decoding(comp: Compilation) -> Decoding | None:
    """How the compiled model decodes token by token (metagen_backends.decoding, the rule the ONNX backend's
    model_with_past.onnx follows too), or None."""
    return None if comp.graph is None or comp.spec is None else decoding(comp.graph)


def generates(comp: Compilation) -> bool:
    """Whether model.py gets generate() (and a cache in its attention and state-space layers), and generation.py
    is copied beside it: the model decodes token by token (a decoder or an encoder-decoder)."""
    return model_decoding(comp) is not None


def generation_py() -> str:
    """The source of the output folder's generation.py, as it is in this package."""
    return (Path(__file__).resolve().parent / "generation.py").read_text(encoding="utf-8")
