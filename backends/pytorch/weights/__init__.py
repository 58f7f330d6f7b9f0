"""Reference checkpoints for compiled models: the layout tables and loader (`runtime.py`, copied next to model.py
as `weights.py`) and the compile-time choice of the layout a spec's family or preset names.

Importing this package does not import torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["FAMILY_LAYOUTS", "PRESET_LAYOUTS", "layout_for", "weights_py"]

# preset -> the layout of the reference implementation whose checkpoints it loads
PRESET_LAYOUTS: dict[str, str] = {
    "gpt2": "gpt2",
    "llama_small": "llama",
    "mixtral_8x7b": "mixtral",
    "mixtral_tiny": "mixtral",
    "bert_base": "bert",
    "layoutlm_base": "layoutlm",
    "clip_vit_b_32": "clip",
    "mamba_130m": "mamba",
    "t5_small": "t5",
    "whisper_tiny": "whisper",
    "musicgen_small": "musicgen",
    "detr_r50": "detr",
    "maskformer_r50": "maskformer",
    "resnet18": "torchvision_resnet",
    "resnet50": "torchvision_resnet",
    "convnext_tiny": "torchvision_convnext",
    "vit_b_16": "torchvision_vit",
    "r2plus1d_18": "torchvision_video_resnet",
    "r3d_18": "torchvision_video_resnet",
    "sd15": "sd15",
}

# family (qualified name) -> its layout, for specs written with the family and their own dims
FAMILY_LAYOUTS: dict[str, str] = {
    "std.transformer.decoder": "llama",  # learned positions: gpt2 (see layout_for)
    "std.transformer.encoder": "bert",
    "std.document.layoutlm": "layoutlm",
    "std.multimodal.clip": "clip",
    "std.moe.decoder": "mixtral",
    "std.ssm.mamba": "mamba",
    "std.seq2seq.t5": "t5",
    "std.seq2seq.whisper": "whisper",
    "std.audiolm.musicgen": "musicgen",
    "std.detection.detr": "detr",
    "std.segmentation.maskformer": "maskformer",
    "std.vision.resnet": "torchvision_resnet",
    "std.vision.convnext": "torchvision_convnext",
    "std.vision.vit": "torchvision_vit",
    "std.videocnn.resnet3d": "torchvision_video_resnet",
    "std.diffusion.unet": "sd15",  # diffusers' UNet2DConditionModel at the spec's dims, with a CLIP text encoder
}

_LAYOUT_LINE = "LAYOUT: str | None = None\n"


def _bound_name(spec: Any, field: str) -> str | None:
    bound = getattr(spec, "bindings", {}).get(field)
    parts = getattr(getattr(bound, "expr", None), "parts", None)
    return parts[-1] if parts else None


def layout_for(comp: Any) -> str | None:
    """The reference layout of the compiled spec: its preset's, else its family's; None where it names none."""
    spec = comp.spec
    if spec is None:
        return None
    preset = getattr(spec, "preset", None)
    if preset in PRESET_LAYOUTS:
        return PRESET_LAYOUTS[preset]
    family = getattr(getattr(spec, "family", None), "qualname", None)
    layout = FAMILY_LAYOUTS.get(family or "")
    if layout == "llama" and _bound_name(spec, "position") == "learned":
        return "gpt2"
    return layout


def weights_py(layout: str | None) -> str:
    """The source of the output folder's weights.py: runtime.py with LAYOUT set to `layout`."""
    source = (Path(__file__).resolve().parent / "runtime.py").read_text(encoding="utf-8")
    assert source.count(_LAYOUT_LINE) == 1, "runtime.py must set LAYOUT once"
    if layout is not None:
        assert re.fullmatch(r"[a-z0-9_]+", layout), layout
    return source.replace(_LAYOUT_LINE, f"LAYOUT: str | None = {layout!r}\n")
