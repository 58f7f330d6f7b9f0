"""Checkpoints in and out of a compiled model: the reference implementation's layout (transformers, torchvision,
diffusers) or the model's own state_dict, read from safetensors, torch pickles (.bin, .pth, .pt; weights_only), a
sharded checkpoint with its `*.index.json`, or a diffusers pipeline folder (unet/, text_encoder/).

    from weights import load_checkpoint, export_checkpoint
    model = load_checkpoint(build_model(), "gpt2/model.safetensors")   # the reference layout or our own
    export_checkpoint(model, "out/model.safetensors")                 # back to the reference layout

This file is copied, as it is, next to model.py; the compiler sets LAYOUT below to the layout the spec's
family or preset names. It needs torch (and safetensors for .safetensors files), never MetaGen.

A layout is data: rules (our state_dict key as a regular expression -> the reference's key(s) as a template,
plus a transform), the reference keys to ignore (buffers such as attention masks and rotary caches) and the
reference keys a tied tensor may be found under. Loading walks our keys: every one of ours must be given, every
tensor of the checkpoint must be used or ignored, and the first key or shape that does not fit is named.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LAYOUT",
    "LAYOUTS",
    "WeightLayoutError",
    "export_checkpoint",
    "from_reference",
    "load_checkpoint",
    "read_checkpoint",
    "to_reference",
]

# The reference layout this model's checkpoints come in (a key of LAYOUTS), or None: set by the compiler.
LAYOUT: str | None = None

OWN = "own"  # the compiled model's own state_dict keys


_Rule = tuple[str, str | tuple[str, ...] | None, str]  # (ours, reference, transform): see Layout


class WeightLayoutError(ValueError):
    """A checkpoint that does not fit the model: the message names the first key or shape at fault."""


@dataclass(frozen=True)
class Layout:
    """How one reference implementation names the tensors of the compiled model.

    rules: (ours, reference, transform). `ours` is a regular expression matched against our key (after
    renumbering `first`/`rest.k` blocks to 0/k+1 where `first_rest`, and naming a recursive U-Net's blocks as
    diffusers' flat down_blocks/mid_block/up_blocks where `unet`); `reference` a template, or a tuple of
    templates for fused tensors, formatted with the match's groups ({0}, {1}, ...), each numeric group minus one
    ({m0}), and {e} for the stacked index. A reference of None: ours has no counterpart
    (a training counter such as num_batches_tracked) and keeps its value. transform:
      ""          the same tensor
      "T"         transposed (GPT-2's Conv1D keeps weights as (in, out))
      "unsqueeze" ours has a leading 1 (learned positions stored as (1, T, D))
      "cat"       ours is the reference tensors concatenated along dim 0 (fused q, k, v)
      "stack"     ours is the reference tensors {e} = 0, 1, ... stacked along a new dim 0 (experts, codebooks)
      "c11"       ours is (C,), the reference (C, 1, 1) (torchvision's ConvNeXt layer scale)
      "11c"       ours is (1, 1, C), the reference (C,) (CLIP's class embedding)
    """

    reference: str
    rules: tuple[_Rule, ...]
    ignore: tuple[str, ...] = ()  # reference keys that are buffers or copies of tied tensors
    tied: Mapping[str, str] = field(default_factory=dict)  # reference key -> the key it is tied to
    prefixes: tuple[str, ...] = ()  # optional leading parts of reference keys (bert. of BertFor* checkpoints)
    first_rest: bool = False
    unet: bool = False
    # checkpoint keys written another way by other versions of the reference: (regular expression, replacement)
    renames: tuple[tuple[str, str], ...] = ()
    # a pipeline of several models in subfolders (diffusers): key prefix -> the weights file of its subfolder
    components: Mapping[str, str] = field(default_factory=dict)


_LAYER = r"(\d+)"


def _layers(ours: str, theirs: str, parts: Mapping[str, str], rest: bool = True) -> tuple[_Rule, ...]:
    """The rules of one stack of layers: our `{ours}.N.{part}.x` -> `{theirs}.{their part}.x`, `theirs` naming the
    layer N as {0}, for each renamed part (a regular expression -> its name); with `rest`, then every other key of
    a layer under the same name."""
    rules = tuple((rf"{ours}\.{_LAYER}\.{a}\.(.+)", f"{theirs}.{b}.{{1}}", "") for a, b in parts.items())
    return rules + ((rf"{ours}\.{_LAYER}\.(.+)", f"{theirs}.{{1}}", ""),) if rest else rules


GPT2 = Layout(
    reference="transformers GPT2LMHeadModel (the openai-community/gpt2 checkpoints)",
    rules=(
        (r"encoder\.wte\.weight", "transformer.wte.weight", ""),
        (r"encoder\.wpe\.weight", "transformer.wpe.weight", "unsqueeze"),
        (rf"backbone\.h\.{_LAYER}\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight",
         "transformer.h.{0}.{1}.weight", "T"),
        (rf"backbone\.h\.{_LAYER}\.(.+)", "transformer.h.{0}.{1}", ""),
        (r"backbone\.ln_f\.(weight|bias)", "transformer.ln_f.{0}", ""),
        (r"head\.proj\.weight", "lm_head.weight", ""),
    ),
    ignore=(r"transformer\.h\.\d+\.attn\.(bias|masked_bias)",),
    tied={"lm_head.weight": "transformer.wte.weight"},
)

_LLAMA_ATTENTION: tuple[_Rule, ...] = (
    (r"encoder\.wte\.weight", "model.embed_tokens.weight", ""),
    (rf"backbone\.h\.{_LAYER}\.attn\.c_attn\.(weight|bias)",
     tuple(f"model.layers.{{0}}.self_attn.{n}_proj.{{1}}" for n in "qkv"), "cat"),
    *_layers(r"backbone\.h", "model.layers.{0}", {
        **{rf"attn\.{n}_proj": f"self_attn.{n}_proj" for n in "qkv"}, r"attn\.c_proj": "self_attn.o_proj",
        "ln_1": "input_layernorm", "ln_2": "post_attention_layernorm"}, rest=False),
    (r"backbone\.ln_f\.weight", "model.norm.weight", ""),
    (r"head\.proj\.weight", "lm_head.weight", ""),
)

LLAMA = Layout(
    reference="transformers LlamaForCausalLM (meta-llama checkpoints)",
    rules=_LLAMA_ATTENTION + _layers(r"backbone\.h", "model.layers.{0}", {
        r"mlp\.w1": "mlp.gate_proj", r"mlp\.w3": "mlp.up_proj", r"mlp\.w2": "mlp.down_proj"}, rest=False),
    ignore=(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"model\.rotary_emb\.inv_freq"),
    tied={"lm_head.weight": "model.embed_tokens.weight"},
)

MIXTRAL = Layout(
    reference="transformers MixtralForCausalLM, as saved (mistralai/Mixtral-8x7B-v0.1: one w1, w2, w3 per expert)",
    rules=_LLAMA_ATTENTION + (
        (rf"backbone\.h\.{_LAYER}\.moe\.router", "model.layers.{0}.block_sparse_moe.gate.weight", ""),
        (rf"backbone\.h\.{_LAYER}\.moe\.(w[123])", "model.layers.{0}.block_sparse_moe.experts.{e}.{1}.weight",
         "stack"),
    ),
    ignore=LLAMA.ignore,
    tied=LLAMA.tied,
)

def _bert_encoder(ours: str) -> tuple[_Rule, ...]:
    """BertModel's encoder layers and pooler (also LayoutLM's), from ours under `ours` (a regular expression)."""
    return (
        (rf"{ours}\.{_LAYER}\.attention\.c_attn\.(weight|bias)",
         tuple(f"encoder.layer.{{0}}.attention.self.{n}.{{1}}" for n in ("query", "key", "value")), "cat"),
        *_layers(ours, "encoder.layer.{0}", {
            r"attention\.c_proj": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
            r"mlp\.c_fc": "intermediate.dense", r"mlp\.c_proj": "output.dense", "output_norm": "output.LayerNorm"},
            rest=False),
        (r"head\.dense\.(weight|bias)", "pooler.dense.{0}", ""),
    )


BERT = Layout(
    reference="transformers BertModel (google-bert checkpoints; a BertFor* checkpoint's bert. prefix is dropped)",
    rules=(
        (r"encoder\.position_embeddings\.weight", "embeddings.position_embeddings.weight", "unsqueeze"),
        (r"encoder\.(.+)", "embeddings.{0}", ""),
        *_bert_encoder(r"backbone\.layer"),
    ),
    ignore=(r"embeddings\.position_ids", r"cls\..+"),  # BertForPreTraining's heads: not part of BertModel
    prefixes=("bert.",),
)

LAYOUTLM = Layout(
    reference="transformers LayoutLMModel and LayoutLMFor* (microsoft/layoutlm-* checkpoints; the layoutlm. prefix "
              "is dropped, the heads the spec's task does not use ignored)",
    rules=(
        (r"encoder_text\.word_embeddings\.weight", "embeddings.word_embeddings.weight", ""),
        (r"encoder_text\.position_embeddings\.weight", "embeddings.position_embeddings.weight", "unsqueeze"),
        (r"encoder_boxes\.([xyhw])_position_embeddings\.weight", "embeddings.{0}_position_embeddings.weight", ""),
        # the right and lower edges of a box read the x and y tables (tied in ours)
        (r"encoder_boxes\.x_right\.weight", "embeddings.x_position_embeddings.weight", ""),
        (r"encoder_boxes\.y_lower\.weight", "embeddings.y_position_embeddings.weight", ""),
        (r"backbone\.(token_type_embeddings|LayerNorm)\.(weight|bias)", "embeddings.{0}.{1}", ""),
        *_bert_encoder(r"backbone\.encoder\.layer"),
        # the task heads of LayoutLMForSequenceClassification, ForTokenClassification, ForQuestionAnswering
        (r"head\.pooler\.dense\.(weight|bias)", "pooler.dense.{0}", ""),
        (r"head\.(classifier|qa_outputs)\.(weight|bias)", "{0}.{1}", ""),
    ),
    # buffers, and the parts of a LayoutLMFor* checkpoint the spec's task does not use (heads, an unused pooler)
    ignore=(r"embeddings\.(position|token_type)_ids", r"cls\..+", r"classifier\..+", r"qa_outputs\..+",
            r"pooler\..+"),
    prefixes=("layoutlm.",),
)


def _clip_tower(ours: str, theirs: str) -> tuple[_Rule, ...]:
    """One tower of CLIPModel: `ours` (encoder_image, encoder_text) -> `theirs` (vision_model, text_model)."""
    return (
        (rf"{ours}\.layers\.{_LAYER}\.self_attn\.c_attn\.(weight|bias)",
         tuple(f"{theirs}.encoder.layers.{{0}}.self_attn.{n}_proj.{{1}}" for n in "qkv"), "cat"),
        *_layers(rf"{ours}\.layers", f"{theirs}.encoder.layers.{{0}}", {
            r"self_attn\.c_proj": "self_attn.out_proj", r"mlp\.c_fc": "mlp.fc1", r"mlp\.c_proj": "mlp.fc2"}),
        (rf"{ours}\.position_embedding\.weight", f"{theirs}.embeddings.position_embedding.weight", "unsqueeze"),
        (rf"{ours}\.(patch_embedding|token_embedding)\.weight", f"{theirs}.embeddings.{{0}}.weight", ""),
        (rf"{ours}\.(pre_layrnorm|post_layernorm|final_layer_norm)\.(weight|bias)", f"{theirs}.{{0}}.{{1}}", ""),
    )


CLIP = Layout(
    reference="transformers CLIPModel (openai/clip-vit-* checkpoints: both towers, their projections, logit_scale)",
    rules=(
        (r"encoder_image\.class_embedding\.weight", "vision_model.embeddings.class_embedding", "11c"),
        *_clip_tower(r"encoder_image", "vision_model"),
        *_clip_tower(r"encoder_text", "text_model"),
        (r"encoder_image\.visual_projection\.weight", "visual_projection.weight", ""),
        (r"encoder_text\.text_projection\.weight", "text_projection.weight", ""),
        (r"head\.logits\.logit_scale", "logit_scale", ""),
    ),
    ignore=(r"(vision|text)_model\.embeddings\.position_ids",),
)

MAMBA = Layout(
    reference="transformers MambaForCausalLM (state-spaces/mamba-*-hf checkpoints)",
    rules=(
        (r"encoder\.wte\.weight", "backbone.embeddings.weight", ""),
        (rf"backbone\.layers\.{_LAYER}\.mixer\.ssm\.(A_log|D)", "backbone.layers.{0}.mixer.{1}", ""),
        (r"backbone\.(.+)", "backbone.{0}", ""),
        (r"head\.proj\.weight", "lm_head.weight", ""),
    ),
    tied={"lm_head.weight": "backbone.embeddings.weight"},
)


def _t5_feed_forward(layer: int) -> dict[str, str]:
    return {"ff_norm": f"layer.{layer}.layer_norm", r"DenseReluDense\.c_fc": f"layer.{layer}.DenseReluDense.wi",
            r"DenseReluDense\.c_proj": f"layer.{layer}.DenseReluDense.wo"}


_T5_SELF = {"layer_norm": "layer.0.layer_norm", "SelfAttention": "layer.0.SelfAttention"}
_T5_STACK = r"(encoder|decoder)"
T5 = Layout(
    reference="transformers T5ForConditionalGeneration (google-t5 checkpoints, ReLU feed-forward)",
    rules=(
        (r"encoder_text\.shared\.weight", "shared.weight", ""),
        (r"encoder_target\.shared\.weight", "decoder.embed_tokens.weight", ""),
        (r"head\.lm_head\.weight", "lm_head.weight", ""),
        (rf"backbone\.{_T5_STACK}_norm\.weight", "{0}.final_layer_norm.weight", ""),
        (rf"backbone\.{_T5_STACK}_bias\.weight", "{0}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
         ""),
        *_layers(r"backbone\.encoder", "encoder.block.{0}", {**_T5_SELF, **_t5_feed_forward(1)}, rest=False),
        *_layers(r"backbone\.decoder", "decoder.block.{0}", {
            **_T5_SELF, "cross_norm": "layer.1.layer_norm", "EncDecAttention": "layer.1.EncDecAttention",
            **_t5_feed_forward(2)}, rest=False),
    ),
    ignore=(r"encoder\.embed_tokens\.weight",),  # the encoder's copy of the shared table
    tied={"decoder.embed_tokens.weight": "shared.weight", "lm_head.weight": "shared.weight"},
)

_FC12 = {r"mlp\.c_fc": "fc1", r"mlp\.c_proj": "fc2"}  # the MLP's linears as BART-style layers name them
WHISPER = Layout(
    reference="transformers WhisperForConditionalGeneration (openai/whisper-* checkpoints)",
    rules=(
        (r"encoder_audio\.(conv[12]\.(?:weight|bias)|embed_positions\.weight|layer_norm\.(?:weight|bias))",
         "model.encoder.{0}", ""),
        *_layers(r"encoder_audio\.layers", "model.encoder.layers.{0}", _FC12),
        (r"encoder_target\.embed_tokens\.weight", "model.decoder.embed_tokens.weight", ""),
        (r"encoder_target\.embed_positions\.weight", "model.decoder.embed_positions.weight", "unsqueeze"),
        (r"backbone\.layer_norm\.(weight|bias)", "model.decoder.layer_norm.{0}", ""),
        *_layers(r"backbone\.layers", "model.decoder.layers.{0}", _FC12),
        (r"head\.proj\.weight", "proj_out.weight", ""),
    ),
    tied={"proj_out.weight": "model.decoder.embed_tokens.weight"},
)

MUSICGEN = Layout(
    reference="transformers MusicgenForCausalLM (the decoder of facebook/musicgen-*; its text cross-attention, "
              "which the preset leaves out, is ignored)",
    rules=(
        (r"encoder\.embed_tokens\.weight", "model.decoder.embed_tokens.{e}.weight", "stack"),
        (r"head\.lm_heads\.weight", "lm_heads.{e}.weight", "stack"),
        (r"backbone\.layer_norm\.(weight|bias)", "model.decoder.layer_norm.{0}", ""),
        (rf"backbone\.layers\.{_LAYER}\.self_attn\.c_attn\.weight",
         tuple(f"model.decoder.layers.{{0}}.self_attn.{n}_proj.weight" for n in "qkv"), "cat"),
        *_layers(r"backbone\.layers", "model.decoder.layers.{0}", {r"self_attn\.c_proj": "self_attn.out_proj", **_FC12}),
    ),
    ignore=(r"model\.decoder\.layers\.\d+\.encoder_attn(_layer_norm)?\..+", r"model\.decoder\.embed_positions\..+"),
)


def _hf_resnet(theirs: str) -> tuple[_Rule, ...]:
    """transformers' own ResNet (embedder, stages of layers, shortcuts), as DETR and MaskFormer save it under
    `theirs`, from ours in torchvision's names (conv1, bn1, layerS.B.convN / bnN / downsample)."""
    stage = theirs + "encoder.stages.{m0}.layers.{1}"
    return (
        (r"encoder\.conv1\.(.+)", theirs + "embedder.embedder.convolution.{0}", ""),
        (r"encoder\.bn1\.(.+)", theirs + "embedder.embedder.normalization.{0}", ""),
        (r"backbone\.body\.layer(\d)\.(\d+)\.conv(\d)\.(.+)", stage + ".layer.{m2}.convolution.{3}", ""),
        (r"backbone\.body\.layer(\d)\.(\d+)\.bn(\d)\.(.+)", stage + ".layer.{m2}.normalization.{3}", ""),
        (r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.conv\.(.+)", stage + ".shortcut.convolution.{2}", ""),
        (r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.bn\.(.+)", stage + ".shortcut.normalization.{2}", ""),
    )


# DETR's transformer layers, ours (torch.nn.Transformer*Layer's names) -> transformers' (DETR's and MaskFormer's)
_DETR_ENCODER = {"linear1": "fc1", "linear2": "fc2", "norm1": "self_attn_layer_norm", "norm2": "final_layer_norm"}
_DETR_DECODER = {"multihead_attn": "encoder_attn", "linear1": "fc1", "linear2": "fc2", "norm1": "self_attn_layer_norm",
                 "norm2": "encoder_attn_layer_norm", "norm3": "final_layer_norm"}
_DETR_BACKBONE = "model.backbone.conv_encoder.model."
_DETR_TRANSFORMER: tuple[_Rule, ...] = (
    (r"backbone\.tokens\.input_proj\.(.+)", "model.input_projection.{0}", ""),
    (r"backbone\.query_embed\.(.+)", "model.query_position_embeddings.{0}", ""),
    (r"backbone\.decoder_norm\.(.+)", "model.decoder.layernorm.{0}", ""),
    (r"head\.class_embed\.(.+)", "class_labels_classifier.{0}", ""),
    (r"head\.bbox(\d)\.(.+)", "bbox_predictor.layers.{m0}.{1}", ""),
    *_layers(r"backbone\.encoder", "model.encoder.layers.{0}", _DETR_ENCODER),
    *_layers(r"backbone\.decoder", "model.decoder.layers.{0}", _DETR_DECODER),
)
DETR = Layout(
    reference="transformers DetrForObjectDetection with its own ResNet backbone, as saved (facebook/detr-resnet-50, "
              "revision no_timm)",
    rules=_hf_resnet(_DETR_BACKBONE) + _DETR_TRANSFORMER,
    first_rest=True,
)

DETR_TIMM = Layout(
    reference="transformers DetrForObjectDetection with a timm ResNet backbone, as saved (facebook/detr-resnet-50)",
    rules=(
        (r"encoder\.(conv1|bn1)\.(.+)", _DETR_BACKBONE + "{0}.{1}", ""),
        (r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.conv\.(.+)", _DETR_BACKBONE + "layer{0}.{1}.downsample.0.{2}",
         ""),
        (r"backbone\.body\.layer(\d)\.(\d+)\.downsample\.bn\.(.+)", _DETR_BACKBONE + "layer{0}.{1}.downsample.1.{2}",
         ""),
        (r"backbone\.body\.layer(\d)\.(\d+)\.((?:conv|bn)\d\..+)", _DETR_BACKBONE + "layer{0}.{1}.{2}", ""),
    ) + _DETR_TRANSFORMER,
    first_rest=True,
)

_MF_FPN = "model.pixel_level_module.decoder.fpn."
_MF_DECODER = "model.transformer_module.decoder."
_MF_LEVELS = {4: 0, 3: 1, 2: 2}  # our FPN steps (by the backbone stage they take) -> transformers' fpn.layers.{i}
MASKFORMER = Layout(
    reference="transformers MaskFormerForInstanceSegmentation with its own ResNet backbone, as saved "
              "(facebook/maskformer-resnet* checkpoints; the criterion's class weights are ignored)",
    rules=_hf_resnet("model.pixel_level_module.encoder.") + (
        (r"backbone\.pixel_decoder\.stem\.conv\.(.+)", _MF_FPN + "stem.0.{0}", ""),
        (r"backbone\.pixel_decoder\.stem\.norm\.(.+)", _MF_FPN + "stem.1.{0}", ""),
        *((rf"backbone\.pixel_decoder\.level{n}\.{ours}\.(.+)", _MF_FPN + f"layers.{i}.{theirs}.{{0}}", "")
          for n, i in _MF_LEVELS.items()
          for ours, theirs in (("proj", "proj.0"), ("proj_norm", "proj.1"), ("block\\.conv", "block.0"),
                               ("block\\.norm", "block.1"))),
        (r"backbone\.pixel_decoder\.mask_projection\.(.+)", "model.pixel_level_module.decoder.mask_projection.{0}", ""),
        (r"backbone\.tokens\.input_proj\.(.+)", "model.transformer_module.input_projection.{0}", ""),
        (r"backbone\.query_embed\.(.+)", "model.transformer_module.queries_embedder.{0}", ""),
        (r"backbone\.decoder_norm\.(.+)", _MF_DECODER + "layernorm.{0}", ""),
        *_layers(r"backbone\.decoder", _MF_DECODER + "layers.{0}", _DETR_DECODER),
        (r"head\.class_embed\.(.+)", "class_predictor.{0}", ""),
        (r"head\.mask_embed(\d)\.(.+)", "mask_embedder.{m0}.0.{1}", ""),
    ),
    ignore=(r"criterion\.empty_weight",),  # the loss's no-object weight (eos_coef): a buffer, not a weight
    first_rest=True,
)

TORCHVISION_RESNET = Layout(
    reference="torchvision.models.resnet (resnet18, resnet50, wide_resnet50_2 .pth files)",
    rules=(
        (r".*\.num_batches_tracked", None, ""),  # a training counter; torchvision's checkpoints have it or not
        (r"encoder\.(conv1|bn1)\.(.+)", "{0}.{1}", ""),
        (r"backbone\.layer(\d)\.(\d+)\.downsample\.conv\.(.+)", "layer{0}.{1}.downsample.0.{2}", ""),
        (r"backbone\.layer(\d)\.(\d+)\.downsample\.bn\.(.+)", "layer{0}.{1}.downsample.1.{2}", ""),
        (r"backbone\.layer(\d)\.(\d+)\.(.+)", "layer{0}.{1}.{2}", ""),
        (r"head\.fc\.(weight|bias)", "fc.{0}", ""),
    ),
    ignore=(r".*\.num_batches_tracked",),
    first_rest=True,
)

_STAGES = {1: 1, 2: 3, 3: 5, 4: 7}
TORCHVISION_CONVNEXT = Layout(
    reference="torchvision.models.convnext (convnext_tiny .pth files)",
    rules=(
        (r"encoder\.conv\.(weight|bias)", "features.0.0.{0}", ""),
        (r"encoder\.norm\.(weight|bias)", "features.0.1.{0}", ""),
        *((rf"backbone\.down{s}\.norm\.(weight|bias)", f"features.{i - 1}.0.{{0}}", "") for s, i in _STAGES.items()
          if s > 1),
        *((rf"backbone\.down{s}\.conv\.(weight|bias)", f"features.{i - 1}.1.{{0}}", "") for s, i in _STAGES.items()
          if s > 1),
        *((rf"backbone\.stage{s}\.{_LAYER}\.gamma\.weight", f"features.{i}.{{0}}.layer_scale", "c11")
          for s, i in _STAGES.items()),
        *((rf"backbone\.stage{s}\.{_LAYER}\.{part}\.(weight|bias)", f"features.{i}.{{0}}.block.{n}.{{1}}", "")
          for s, i in _STAGES.items() for part, n in (("dwconv", 0), ("norm", 2), ("pwconv1", 3), ("pwconv2", 5))),
        (r"head\.norm\.(weight|bias)", "classifier.0.{0}", ""),
        (r"head\.fc\.(weight|bias)", "classifier.2.{0}", ""),
    ),
)

TORCHVISION_VIT = Layout(
    reference="torchvision.models.vision_transformer (vit_b_16 .pth files)",
    rules=(
        (r"encoder\.conv_proj\.(weight|bias)", "conv_proj.{0}", ""),
        (r"encoder\.class_token\.weight", "class_token", ""),
        (r"encoder\.pos_embedding\.weight", "encoder.pos_embedding", ""),
        (rf"backbone\.blocks\.{_LAYER}\.self_attention\.c_attn\.(weight|bias)",
         "encoder.layers.encoder_layer_{0}.self_attention.in_proj_{1}", ""),
        *_layers(r"backbone\.blocks", "encoder.layers.encoder_layer_{0}", {
            r"self_attention\.c_proj": "self_attention.out_proj", r"mlp\.c_fc": "mlp.0", r"mlp\.c_proj": "mlp.3"}),
        (r"backbone\.ln\.(weight|bias)", "encoder.ln.{0}", ""),
        (r"head\.head\.(weight|bias)", "heads.head.{0}", ""),
    ),
)

_VIDEO_BLOCK = r"backbone\.layer(\d)\.(\d+)\."
TORCHVISION_VIDEO_RESNET = Layout(
    reference="torchvision.models.video.resnet (r2plus1d_18, r3d_18 .pth files)",
    rules=(
        (r".*\.num_batches_tracked", None, ""),  # a training counter, as in torchvision_resnet
        # the stem: conv, bn, relu (R3D), then conv, bn, relu again (R(2+1)D)
        *((rf"encoder\.{ours}\.(.+)", f"stem.{i}.{{0}}", "") for ours, i in (
            ("conv1", 0), (r"bn1\.bn", 1), ("conv2", 3), (r"bn2\.bn", 4))),
        (_VIDEO_BLOCK + r"conv(\d)\.spatial\.(.+)", "layer{0}.{1}.conv{2}.0.0.{3}", ""),  # Conv2Plus1D
        (_VIDEO_BLOCK + r"conv(\d)\.bn\.bn\.(.+)", "layer{0}.{1}.conv{2}.0.1.{3}", ""),
        (_VIDEO_BLOCK + r"conv(\d)\.temporal\.(.+)", "layer{0}.{1}.conv{2}.0.3.{3}", ""),
        (_VIDEO_BLOCK + r"conv(\d)\.conv\.(.+)", "layer{0}.{1}.conv{2}.0.{3}", ""),  # Conv3DSimple
        (_VIDEO_BLOCK + r"bn(\d)\.bn\.(.+)", "layer{0}.{1}.conv{2}.1.{3}", ""),
        (_VIDEO_BLOCK + r"downsample\.(.+)", "layer{0}.{1}.downsample.0.{2}", ""),
        (_VIDEO_BLOCK + r"downsample_bn\.bn\.(.+)", "layer{0}.{1}.downsample.1.{2}", ""),
        (r"head\.fc\.(weight|bias)", "fc.{0}", ""),
    ),
    ignore=(r".*\.num_batches_tracked",),
    first_rest=True,
)

_DIFFUSERS_ATTENTION = r"unet\.(.+\.transformer_blocks\.\d+)\."
SD15 = Layout(
    reference="diffusers StableDiffusionPipeline's unet (UNet2DConditionModel) and text_encoder (CLIPTextModel), "
              "as saved in its unet/ and text_encoder/ folders (runwayml/stable-diffusion-v1-5; the VAE is not part "
              "of the model)",
    rules=(
        (r"encoder_image\.conv_in\.(weight|bias)", "unet.conv_in.{0}", ""),
        (r"encoder_timestep\.(linear_[12])\.(weight|bias)", "unet.time_embedding.{0}.{1}", ""),
        (r"head\.(conv_norm_out|conv_out)\.(weight|bias)", "unet.{0}.{1}", ""),
        (_DIFFUSERS_ATTENTION + r"(attn[12])\.to_out\.(weight|bias)", "unet.{0}.{1}.to_out.0.{2}", ""),
        (_DIFFUSERS_ATTENTION + r"ff\.proj\.(weight|bias)", "unet.{0}.ff.net.0.proj.{1}", ""),
        (_DIFFUSERS_ATTENTION + r"ff\.out\.(weight|bias)", "unet.{0}.ff.net.2.{1}", ""),
        (r"unet\.((?:down_blocks|up_blocks|mid_block)\..+)", "unet.{0}", ""),  # named by _unet_names
        *_clip_tower(r"encoder_text", "text_encoder.text_model"),
    ),
    ignore=(r"text_encoder\.text_model\.embeddings\.position_ids",),
    # transformers 5 saves CLIPTextModel without the text_model. of the published checkpoints (and reads both)
    renames=((r"^text_encoder\.(?!text_model\.)", "text_encoder.text_model."),),
    unet=True,
    components={"unet": "diffusion_pytorch_model.safetensors", "text_encoder": "model.safetensors"},
)

LAYOUTS: dict[str, Layout] = {
    "gpt2": GPT2, "llama": LLAMA, "mixtral": MIXTRAL, "bert": BERT, "layoutlm": LAYOUTLM, "clip": CLIP, "mamba": MAMBA,
    "t5": T5, "whisper": WHISPER,
    "musicgen": MUSICGEN, "detr": DETR, "detr_timm": DETR_TIMM, "maskformer": MASKFORMER,
    "torchvision_resnet": TORCHVISION_RESNET,
    "torchvision_convnext": TORCHVISION_CONVNEXT, "torchvision_vit": TORCHVISION_VIT,
    "torchvision_video_resnet": TORCHVISION_VIDEO_RESNET, "sd15": SD15,
}


# ------------------------------------------------------------------ reading and writing files
_SINGLE = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt", "diffusion_pytorch_model.safetensors",
           "diffusion_pytorch_model.bin")
_INDEX = ("model.safetensors.index.json", "pytorch_model.bin.index.json",
          "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin.index.json")
# the parts of a diffusers pipeline folder that a compiled model holds: the subfolders of the layouts' components
_PIPELINE = tuple(dict.fromkeys(part for spec in LAYOUTS.values() for part in spec.components))


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
            raise WeightLayoutError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a pickle torch refuses (not a state dict) or a damaged file
        raise WeightLayoutError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightLayoutError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    return dict(obj)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """{key: tensor} of a checkpoint: a .safetensors file, a torch pickle (.bin, .pth, .pt), a sharded
    checkpoint's *.index.json, or a folder holding one of them (model.safetensors, pytorch_model.bin, ...). A
    diffusers pipeline folder (unet/ beside no checkpoint file of its own) gives its unet/ and text_encoder/ weights,
    their keys prefixed `unet.` and `text_encoder.`."""
    path = Path(path)
    if path.is_dir() and (path / "unet").is_dir() and not any((path / n).exists() for n in _INDEX + _SINGLE):
        return {f"{part}.{k}": v for part in _PIPELINE if (path / part).is_dir()
                for k, v in read_checkpoint(path / part).items()}
    if path.is_dir():
        for name in _INDEX + _SINGLE:
            if (path / name).exists():
                return read_checkpoint(path / name)
        found = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))
        if len(found) != 1:
            raise WeightLayoutError(f"{path}: no checkpoint file (model.safetensors, pytorch_model.bin, "
                                    f"*.index.json) {'but several: ' + ', '.join(found) if found else 'in it'}")
        return read_checkpoint(path / found[0])
    if not path.exists():
        raise WeightLayoutError(f"{path} does not exist")
    if path.name.endswith(".json"):
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightLayoutError(f"{path}: not a JSON index ({e})") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise WeightLayoutError(f"{path}: an index file needs a weight_map")
        for shard in weight_map.values():
            if not isinstance(shard, str) or Path(shard).name != shard:
                raise WeightLayoutError(f"{path}: a shard must be a file name beside the index, not {shard!r}")
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            out.update(_read_file(path.parent / shard))
        missing = sorted(set(weight_map) - set(out))
        if missing:
            raise WeightLayoutError(f"{path}: {missing[0]} is in the index but not in its shard {weight_map[missing[0]]}")
        return out
    return _read_file(path)


def _write(state: dict[str, torch.Tensor], path: Path, max_shard_bytes: int | None) -> None:
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}  # no shared storage: safetensors
    safetensors = path.suffix == ".safetensors" or path.is_dir() or not path.suffix
    if path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        path = path / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not safetensors:
        torch.save(state, path)
        return
    from safetensors.torch import save_file

    total = sum(v.numel() * v.element_size() for v in state.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(state, str(path), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    stem = path.name.removesuffix(".safetensors")
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"{stem}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path.parent / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path.parent / f"{path.name}.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------ the mapping
def _renumber(key: str) -> str:
    """`first` -> 0 and `rest.k` -> k + 1: the block numbering of the references."""
    key = re.sub(r"\.first\.", ".0.", key)
    return re.sub(r"\.rest\.(\d+)\.", lambda m: f".{int(m.group(1)) + 1}.", key)


_UNET_PART = re.compile(r"backbone\.down((?:\.inner|\.next)*)\.(down_res|down_attn|downsample|up_res|up_attn|upsample|mid)"
                        r"\.(.+)")


def _unet_names(keys: list[str]) -> dict[str, str]:
    """Our keys of a recursive U-Net (each level's `inner` blocks, then `next` for the level below, the middle at
    the bottom) -> diffusers' flat names: `unet.down_blocks.{level}.resnets.{j}`, `.attentions.{j}`,
    `.downsamplers.0.conv`, `unet.mid_block.resnets.{0,1}` and `.attentions.0`, `unet.up_blocks.{levels - 1 -
    level}.resnets.{n - j}` (n = layers_per_block: the up path has one block more per level) and `.upsamplers.0.conv`.
    Keys elsewhere keep their names."""
    parts = {}
    for key in keys:
        m = _UNET_PART.fullmatch(key)
        if m is not None:
            path = m.group(1)  # level L's block j is L `next`s down, then j `inner`s
            parts[key] = (path.count(".next"), path.rsplit(".next", 1)[-1].count(".inner"), m.group(2), m.group(3))
    if not parts:
        return {}
    levels = 1 + max(p[0] for p in parts.values())
    n = max(p[1] for p in parts.values())
    out = {}
    for key, (level, j, block, rest) in parts.items():
        down, up = f"unet.down_blocks.{level}", f"unet.up_blocks.{levels - 1 - level}"
        out[key] = {"down_res": f"{down}.resnets.{j}", "down_attn": f"{down}.attentions.{j}",
                    "downsample": f"{down}.downsamplers.0.conv", "up_res": f"{up}.resnets.{n - j}",
                    "up_attn": f"{up}.attentions.{n - j}", "upsample": f"{up}.upsamplers.0.conv",
                    "mid": "unet.mid_block"}[block] + "." + re.sub(r"^(resnet|attention)_(\d+)\.",
                                                                   lambda g: f"{g.group(1)}s.{g.group(2)}.", rest)
    return out


def _match_names(layout: Layout, keys: list[str]) -> dict[str, str]:
    """Our key -> the name the layout's rules match: `first`/`rest.k` renumbered, a U-Net's blocks flattened."""
    names = _unet_names(keys) if layout.unet else {}
    return {k: _renumber(names.get(k, k)) if layout.first_rest else names.get(k, k) for k in keys}


def _rule_for(layout: Layout, key: str, name: str) -> tuple[tuple[str, ...] | None, str]:
    """The reference key(s) our `key` (matched as `name`, _match_names' for it) comes from ({e} left in for stacks)
    and the transform."""
    for pattern, reference, transform in layout.rules:
        m = re.fullmatch(pattern, name)
        if m is None:
            continue
        if reference is None:
            return None, transform
        groups = m.groups()
        extra: dict[str, Any] = {"e": "{e}"}
        for i, g in enumerate(groups):
            if g is not None and g.isdigit():
                extra[f"m{i}"] = int(g) - 1
        templates = reference if isinstance(reference, tuple) else (reference,)
        return tuple(t.format(*groups, **extra) for t in templates), transform
    raise WeightLayoutError(f"no rule of the {layout.reference} layout maps the model's `{key}`")


def _rules(layout: Layout,
           state: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor, tuple[str, ...], str]]:
    """(our key, its tensor, the reference key(s) it comes from, the transform) for each tensor of our `state`
    that has a counterpart in `layout`."""
    matched = _match_names(layout, list(state))
    for key, v in state.items():
        refs, transform = _rule_for(layout, key, matched[key])
        if refs is not None:
            yield key, v, refs, transform


def _names(refs: tuple[str, ...], transform: str, target: torch.Tensor) -> list[str]:
    """The reference keys of one of our tensors: a stack's template once per entry of its dim 0."""
    return [refs[0].format(e=e) for e in range(target.shape[0])] if transform == "stack" else list(refs)


def _ties(model: torch.nn.Module) -> dict[str, str]:
    """Our key -> the first key holding the same tensor (tied weights: one Parameter under two names), for every
    key after the first."""
    first: dict[int, str] = {}
    out = {}
    for k, v in model.state_dict(keep_vars=True).items():
        if id(v) in first:
            out[k] = first[id(v)]
        else:
            first[id(v)] = k
    return out


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def from_reference(model: torch.nn.Module, state: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Our state dict from a checkpoint in `layout`: every one of our tensors given (tied ones once), every
    checkpoint tensor used or ignored, each shape as ours expects; else WeightLayoutError naming the key."""
    spec = _layout(layout)
    ours = model.state_dict()
    tied = _ties(model)
    available = dict(state)
    for prefix in spec.prefixes:  # BertForSequenceClassification's bert.embeddings... -> embeddings...
        if any(k.startswith(prefix) for k in available):
            available = {k.removeprefix(prefix): v for k, v in available.items()}
    available = {_renamed(spec, k): v for k, v in available.items()}
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def fetch(ref: str) -> torch.Tensor | None:
        for candidate in (ref, spec.tied.get(ref)):
            if candidate is not None and candidate in available:
                used.add(candidate)
                return available[candidate]
        return None

    lacking: dict[str, list[str]] = {}
    for key, target, refs, transform in _rules(spec, ours):
        names = _names(refs, transform, target)
        parts = [fetch(n) for n in names]
        if any(p is None for p in parts):
            lacking[key] = [n for n, p in zip(names, parts) if p is None]
            continue
        out[key] = _apply(transform, [p for p in parts if p is not None], key, refs, target)
    groups: dict[str, list[str]] = {}
    for key, source in tied.items():
        groups.setdefault(source, [source]).append(key)
    for members in groups.values():  # a tied tensor is given once, under any of its keys
        given = next((out[k] for k in members if k in out), None)
        if given is not None:
            for k in members:
                out[k] = given
                lacking.pop(k, None)
    if lacking:
        missing = [f"{n} (for {k})" for k, names in lacking.items() for n in names]
        raise WeightLayoutError(f"the checkpoint misses {len(missing)} tensor(s) of the {spec.reference} layout: "
                                + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    unused = sorted(k for k in available if k not in used and not any(re.fullmatch(p, k) for p in spec.ignore))
    if unused:
        raise WeightLayoutError(f"{len(unused)} tensor(s) of the checkpoint fit no part of the model ({spec.reference}"
                                f" layout): " + ", ".join(unused[:20]) + (" ..." if len(unused) > 20 else ""))
    return out


def _apply(transform: str, parts: list[torch.Tensor], key: str, refs: tuple[str, ...],
           target: torch.Tensor) -> torch.Tensor:
    def wrong(ref: str, got: tuple[int, ...], want: tuple[int, ...]) -> WeightLayoutError:
        return WeightLayoutError(f"{ref} has shape {got}; the model's {key} needs {want}")

    if transform == "cat":
        for r, p in zip(refs, parts):
            if p.dim() != target.dim() or _shape(p)[1:] != _shape(target)[1:]:
                raise wrong(r, _shape(p), (p.shape[0],) + _shape(target)[1:])
        value = torch.cat(parts)
    elif transform == "stack":
        for i, p in enumerate(parts):
            if _shape(p) != _shape(target)[1:]:
                raise wrong(refs[0].format(e=i), _shape(p), _shape(target)[1:])
        value = torch.stack(parts)
    else:
        (value,) = parts
        want = {"T": _shape(target)[::-1], "unsqueeze": _shape(target)[1:], "c11": _shape(target) + (1, 1),
                "11c": _shape(target)[2:]}.get(transform, _shape(target))
        if _shape(value) != want:
            raise wrong(refs[0], _shape(value), want)
        value = {"T": lambda t: t.t(), "unsqueeze": lambda t: t[None], "c11": lambda t: t.reshape(target.shape),
                 "11c": lambda t: t[None, None]}.get(transform, lambda t: t)(value)
    if _shape(value) != _shape(target):
        raise wrong(" + ".join(refs), _shape(value), _shape(target))
    return value


def to_reference(model: torch.nn.Module, layout: str) -> dict[str, torch.Tensor]:
    """The model's weights in `layout`'s keys and shapes (a tied tensor once, under its first key)."""
    spec = _layout(layout)
    tied = _ties(model)
    out: dict[str, torch.Tensor] = {}
    for key, v, refs, transform in _rules(spec, model.state_dict()):
        if key in tied:
            continue
        if transform == "cat":
            out.update(zip(refs, v.chunk(len(refs))))
        elif transform == "stack":
            out.update(zip(_names(refs, transform, v), v.unbind()))
        else:
            out[refs[0]] = {"T": lambda t: t.t(), "unsqueeze": lambda t: t[0], "c11": lambda t: t[:, None, None],
                            "11c": lambda t: t[0, 0]}.get(transform, lambda t: t)(v)
    return out


def _reference_names(model: torch.nn.Module, layout: str) -> set[str]:
    """The reference keys `layout` gives the model's tensors, without their values."""
    return {n for _, v, refs, transform in _rules(_layout(layout), model.state_dict())
            for n in _names(refs, transform, v)}


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise WeightLayoutError(f"unknown layout `{name}`; known: {', '.join(sorted(LAYOUTS))} and `{OWN}`")
    return LAYOUTS[name]


def _own(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ours = model.state_dict()
    tied = _ties(model)
    missing = [k for k in ours if k not in state and not (k in tied and tied[k] in state)]
    if missing:
        raise WeightLayoutError(f"the checkpoint misses {len(missing)} tensor(s) of the model: "
                                + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    unused = [k for k in state if k not in ours]
    if unused:
        raise WeightLayoutError(f"{len(unused)} tensor(s) of the checkpoint fit no part of the model: "
                                + ", ".join(unused[:20]) + (" ..." if len(unused) > 20 else ""))
    for k, v in state.items():
        if _shape(v) != _shape(ours[k]):
            raise WeightLayoutError(f"{k} has shape {_shape(v)}; the model needs {_shape(ours[k])}")
    out = dict(state)
    for k, source in tied.items():
        out.setdefault(k, out[source])
    return out


def _renamed(spec: Layout, key: str) -> str:
    for pattern, replacement in spec.renames:
        key = re.sub(pattern, replacement, key)
    return key


def _guess(model: torch.nn.Module, state: Mapping[str, torch.Tensor], layout: str) -> str:
    """OWN or `layout`: the one that names more of the checkpoint's keys (OWN on a tie)."""
    ours = model.state_dict()
    spec = _layout(layout)
    names, prefixes = _reference_names(model, layout), spec.prefixes
    ref_hits = sum(_renamed(spec, k) in names or any(k.removeprefix(p) in names for p in prefixes) for k in state)
    return OWN if sum(k in ours for k in state) >= ref_hits else layout


def load_checkpoint(model: torch.nn.Module, path: str | Path | Mapping[str, torch.Tensor],
                    layout: str = "auto") -> torch.nn.Module:
    """Load a checkpoint (a path, or a state dict already read) into `model` and return it. layout: "auto"
    (the model's own keys if the checkpoint has them, else LAYOUT), "own", or a key of LAYOUTS."""
    state = dict(path) if isinstance(path, Mapping) else read_checkpoint(path)
    if layout == "auto" and LAYOUT is not None:  # the layout that names more of the checkpoint's tensors
        layout = _guess(model, state, LAYOUT)
    elif layout == "auto":
        if state and state.keys().isdisjoint(model.state_dict()):
            raise WeightLayoutError("the checkpoint's keys are not the model's own, and this model names no "
                                    f"reference layout; pass layout= one of {', '.join(sorted(LAYOUTS))}")
        layout = OWN
    mapped = _own(model, state) if layout == OWN else from_reference(model, state, layout)
    with torch.no_grad():
        for k, v in model.state_dict(keep_vars=True).items():
            if k in mapped:
                v.copy_(mapped[k])  # in the model's dtype and device
    return model


def export_checkpoint(model: torch.nn.Module, path: str | Path, layout: str | None = None,
                      max_shard_bytes: int | None = None) -> Path:
    """Write the model's weights in `layout` (default LAYOUT, else "own") to `path`: a .safetensors file, a torch
    pickle (.bin, .pth, .pt) or a folder (model.safetensors in it); with max_shard_bytes, safetensors shards
    and their index. "own" writes every key of the state_dict (a tied tensor under each of its keys, as
    load_state_dict wants them); a reference layout writes a tied tensor once, as the reference saves it. A
    pipeline layout (sd15) written to a folder gives one subfolder per part, as diffusers saves a pipeline
    (unet/diffusion_pytorch_model.safetensors, text_encoder/model.safetensors). Returns the path."""
    layout = layout or LAYOUT or OWN
    state = dict(model.state_dict()) if layout == OWN else to_reference(model, layout)  # own: as load_state_dict
    path = Path(path)
    parts = _layout(layout).components if layout != OWN else {}
    if parts and (path.is_dir() or not path.suffix):
        for part, file in parts.items():
            _write({k.removeprefix(f"{part}."): v for k, v in state.items() if k.startswith(f"{part}.")},
                   path / part / file, max_shard_bytes)
        return path
    _write(state, path, max_shard_bytes)
    return path
