"""Reference checkpoints into compiled models and back (the output folder's weights.py): for each family with a
reference implementation, the reference built from a small config with random (perturbed) weights and saved as
it saves itself, loaded into the compiled model at the same size, the same outputs within 1e-4 in float32; the
export read back by the reference gives the same outputs again. The file formats (safetensors, .bin, .pth, shards
with their index) and the errors (a missing, an extra, a wrong-shaped tensor, each named). No network.

torchvision does not import beside the CPU build of torch 2.13 here: its layouts (ResNet, ConvNeXt, ViT) are
written from torchvision's state-dict keys and tested with checkpoints in those keys converted from transformers'
ResNet, ConvNeXt and ViT, whose outputs are compared; torchvision.models.video's R(2+1)D and R3D with the
torchvision-layout VideoResNet that tests/test_yaml_families.py rebuilds."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from conftest import ROOT, compile_path, load_module
from metagen_backends.pytorch import emit
from metagen_backends.pytorch.weights import FAMILY_LAYOUTS, PRESET_LAYOUTS, layout_for
from training_helpers import TINY_CLIP, tiny_clip_config

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile

_count = iter(range(10**6))


def _folder(comp: Any, tmp: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """model.py and weights.py of `comp`, written to `tmp` and imported."""
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.items]
    files = emit(comp)
    tmp.mkdir(parents=True, exist_ok=True)
    for name in ("model.py", "weights.py"):
        (tmp / name).write_text(files[name])
    n = next(_count)
    return load_module(tmp / "model.py", f"w_model_{n}"), load_module(tmp / "weights.py", f"w_weights_{n}")


def _preset(tmp: Path, imports: str, arch: str, modality: str = "text -> text", task: str = "generation") -> Any:
    src = f"import {imports}\nmodel p {{\n  modality {modality}\n  task {task}\n  architecture {arch}\n}}\n"
    return _folder(compile_source(SourceFile("preset.msl", src)), tmp)


def _example(tmp: Path, stem: str) -> Any:
    return _folder(compile_path(ROOT / "examples" / f"{stem}.msl"), tmp)


def _perturb(ref: Any, scale: float = 0.1) -> Any:
    """Off the init (no unit norms, no zero biases), so that every tensor shows in the outputs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, v in ref.state_dict().items():
            if "running_var" in k:
                v.copy_(0.5 + torch.rand(v.shape, generator=g))
            elif v.is_floating_point():
                v.add_(scale * torch.randn(v.shape, generator=g))
    return ref.eval()


def _close(a: Any, b: Any, tol: float = 1e-4) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert b.abs().max() > 0.1  # outputs of a size that shows a difference
    err = (a - b).abs().max().item()
    assert err <= tol, err
    return err


@dataclasses.dataclass
class Case:
    ours: Any  # the compiled model, fresh (random) weights
    w: types.ModuleType  # its weights.py
    ref: Any  # the reference, perturbed
    run_ours: Callable[[Any], Any]
    run_ref: Callable[[Any], Any]
    save: Callable[[Path], Path]  # writes the reference's checkpoint as its tools do, returns the path to load
    reload: Callable[[Path], Any] | None = None  # the reference model read back from an exported folder
    load: Callable[[Any, Path], Any] | None = None  # how to load, where not with layout auto


def _hf(ref: Any) -> tuple[Callable[[Path], Path], Callable[[Path], Any]]:
    def save(folder: Path) -> Path:
        ref.save_pretrained(folder)
        return folder

    def reload(folder: Path) -> Any:
        ref.config.save_pretrained(folder)
        return type(ref).from_pretrained(folder).eval()

    return save, reload


def _tokens(vocab: int, length: int = 24, batch: int = 2) -> Any:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------ the families
def _causal_lm(tmp: Path, imports: str, arch: str, reference: Any, cfg: Any, scale: float = 0.1) -> Case:
    """A language-model preset of vocabulary 97 against `reference(cfg)`: the logits of the same tokens."""
    model, w = _preset(tmp, imports, arch)
    torch.manual_seed(0)
    ours, ref = model.build_model().eval(), _perturb(reference(cfg), scale)
    x = _tokens(97)
    save, reload = _hf(ref)
    return Case(ours, w, ref, lambda m: m(x), lambda r: r(x).logits, save, reload)


def gpt2(tmp: Path) -> Case:
    return _causal_lm(tmp, "std.presets", "gpt2 { vocab = 97; context = 64; layers = 2; d_model = 64; heads = 2 }",
                      transformers.GPT2LMHeadModel, transformers.GPT2Config(
                          vocab_size=97, n_embd=64, n_layer=2, n_head=2, n_positions=64, bos_token_id=0,
                          eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def _llama_config(kv_heads: int, tied: bool) -> Any:
    return transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                                    tie_word_embeddings=tied)


def llama(tmp: Path) -> Case:
    """Grouped-query attention: separate q, k, v projections."""
    return _causal_lm(tmp, "std.presets", "llama_small { vocab = 97; context = 64; layers = 2; d_model = 64; "
                                          "heads = 4; kv_heads = 2 }", transformers.LlamaForCausalLM, _llama_config(2, False))


def llama_fused(tmp: Path) -> Case:
    """A decoder written with the family, as many heads for keys as for queries: one fused c_attn, tied head."""
    return _causal_lm(tmp, "std.transformer", "transformer.decoder { vocab = 97; context = 64; layers = 2; "
                                              "d_model = 64; heads = 4; tied = true }", transformers.LlamaForCausalLM,
                      _llama_config(4, True))


def mixtral(tmp: Path) -> Case:
    """Experts saved one w1, w2, w3 each (the published layout), stacked into ours."""
    return _causal_lm(tmp, "std.moe", "moe.mixtral_tiny { vocab = 97; context = 64; layers = 2; d_model = 64; "
                                      "heads = 4; kv_heads = 2; hidden = 96 }", transformers.MixtralForCausalLM,
                      transformers.MixtralConfig(
                          vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          tie_word_embeddings=False, num_local_experts=8, num_experts_per_tok=2), 0.2)


def bert(tmp: Path) -> Case:
    model, w = _preset(tmp, "std.presets", "bert_base { vocab = 97; context = 64; layers = 2; d_model = 64; "
                                           "heads = 2; mlp_dim = 96 }", "text -> embedding", "embedding")
    cfg = transformers.BertConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=96, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ref = _perturb(transformers.BertModel(cfg))
    x = _tokens(97)
    save, reload = _hf(ref)
    return Case(model.build_model().eval(), w, ref, lambda m: m(x), lambda r: r(x).pooler_output, save, reload)


def _layoutlm(tmp: Path, head: str, modality: str, task: str, reference: Any) -> Case:
    model, w = _preset(tmp, "std.document", "document.layoutlm_base { vocab = 97; context = 32; layers = 2; "
                                            f"d_model = 64; heads = 2; mlp_dim = 96{head} }}", modality, task)
    cfg = transformers.LayoutLMConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=96, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0, num_labels=5)
    torch.manual_seed(0)
    ref = _perturb(reference(cfg))
    g = torch.Generator().manual_seed(1)
    x = _tokens(97, 20)
    corner = torch.randint(0, 500, (2, 20, 2), generator=g)
    boxes = torch.cat([corner, corner + torch.randint(0, 500, (2, 20, 2), generator=g)], dim=-1)  # x0, y0, x1, y1
    out = "pooler_output" if reference is transformers.LayoutLMModel else "logits"
    save, reload = _hf(ref)
    return Case(model.build_model().eval(), w, ref, lambda m: m(x, boxes),
                lambda r: getattr(r(input_ids=x, bbox=boxes), out), save, reload)


def layoutlm(tmp: Path) -> Case:
    """The box tables: x and y shared by both edges of a box (tied in ours), saved once. The pooled output."""
    return _layoutlm(tmp, "", "text -> embedding", "embedding", transformers.LayoutLMModel)


def layoutlm_tokens(tmp: Path) -> Case:
    """The sequence_labeling task against LayoutLMForTokenClassification (its layoutlm. prefix dropped, the pooler
    it carries but does not use ignored): the per-token logits."""
    return _layoutlm(tmp, "; num_classes = 5", "text -> label", "sequence_labeling { num_classes = 5 }",
                     transformers.LayoutLMForTokenClassification)


def clip(tmp: Path) -> Case:
    """Both towers (q, k, v fused into ours), their projections and logit_scale: logits_per_image."""
    model, w = _preset(tmp, *TINY_CLIP)
    cfg = tiny_clip_config()
    torch.manual_seed(0)
    ref = _perturb(transformers.CLIPModel(cfg))
    g = torch.Generator().manual_seed(1)
    image, x = torch.randn(3, 3, 32, 32, generator=g), _tokens(97, 12, 3)
    save, reload = _hf(ref)
    return Case(model.build_model().eval(), w, ref, lambda m: m(image, x),
                lambda r: r(input_ids=x, pixel_values=image).logits_per_image, save, reload)


def mamba(tmp: Path) -> Case:
    return _causal_lm(tmp, "std.ssm", "ssm.mamba_130m { vocab = 97; layers = 2; d_model = 64; dt_rank = 4 }",
                      transformers.MambaForCausalLM, transformers.MambaConfig(
                          vocab_size=97, hidden_size=64, num_hidden_layers=2, state_size=16, expand=2, conv_kernel=4,
                          time_step_rank=4, use_conv_bias=True, use_bias=False, layer_norm_epsilon=1e-5,
                          tie_word_embeddings=True))


def t5(tmp: Path) -> Case:
    model, w = _example(tmp, "t5_small")
    cfg = dataclasses.replace(model.Config(), vocab=97, layers=2, decoder_layers=3, d_model=64, heads=4, d_kv=16,
                              d_ff=96, buckets=8, max_distance=12)
    torch.manual_seed(0)
    ref = _perturb(transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=97, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=3, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0,
        feed_forward_proj="relu", tie_word_embeddings=True)), 0.05)
    src, tgt = _tokens(97, 30), _tokens(97, 17)
    save, reload = _hf(ref)
    return Case(model.build_model(cfg).eval(), w, ref, lambda m: m(src, tgt),
                lambda r: r(input_ids=src, decoder_input_ids=tgt).logits, save, reload)


def whisper(tmp: Path) -> Case:
    """The waveform into ours, WhisperFeatureExtractor's log-mel features into transformers'."""
    model, w = _example(tmp, "whisper_tiny")
    cfg = dataclasses.replace(model.Config(), vocab=97, samples=12800, context=16, source_positions=40, layers=2,
                              decoder_layers=2, d_model=64, heads=2, ffn=96)
    torch.manual_seed(0)
    ref = _perturb(transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
        vocab_size=97, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=96, decoder_ffn_dim=96, num_mel_bins=80, max_source_positions=40,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)), 0.05)
    g = torch.Generator().manual_seed(0)
    wave, tokens = torch.randn(2, 12800, generator=g), torch.randint(0, 97, (2, 9), generator=g)
    feats = transformers.WhisperFeatureExtractor(feature_size=80)(
        list(wave.numpy()), sampling_rate=16000, return_tensors="pt", padding=False).input_features
    save, reload = _hf(ref)
    return Case(model.build_model(cfg).eval(), w, ref, lambda m: m(wave, tokens),
                lambda r: r(input_features=feats, decoder_input_ids=tokens).logits, save, reload)


def musicgen(tmp: Path) -> Case:
    model, w = _example(tmp, "musicgen_small")
    k, v = 3, 50
    cfg = dataclasses.replace(model.Config(), codebooks=k, codebook_size=v, context=12, layers=2, d_model=64,
                              heads=2, ffn_dim=96)
    torch.manual_seed(0)
    ref = _perturb(transformers.MusicgenForCausalLM(transformers.MusicgenDecoderConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, ffn_dim=96, num_codebooks=k, vocab_size=v,
        pad_token_id=v, bos_token_id=v)))
    codes = torch.randint(0, v, (2, k, 9), generator=torch.Generator().manual_seed(1))
    seq = model.delay_pattern(codes, v)  # (2, K, 12), the special id in the gaps
    save, reload = _hf(ref)
    return Case(model.build_model(cfg).eval(), w, ref, lambda m: m(seq),
                lambda r: r(input_ids=seq.reshape(-1, seq.shape[-1])).logits.view(2, k, 12, -1), save, reload)


def detr(tmp: Path) -> Case:
    model, w = _example(tmp, "detr_r50")
    cfg = dataclasses.replace(model.Config(), image_size=96, width=8, depths=(2, 1, 1, 1), d_model=32, heads=2,
                              ffn=64, layers=2, decoder_layers=2, num_queries=4, num_classes=5)
    torch.manual_seed(0)
    ref = _perturb(transformers.DetrForObjectDetection(transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone=None, num_labels=5, d_model=32,
        backbone_config=transformers.ResNetConfig(out_features=["stage4"], depths=[2, 1, 1, 1], embedding_size=8,
                                                  hidden_sizes=[32, 64, 128, 256]),
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_queries=4, auxiliary_loss=False)), 0.05)
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 96, 96, dtype=torch.long)

    def run_ref(r: Any) -> Any:
        out = r(pixel_values=images, pixel_mask=mask)
        return torch.cat([out.logits.flatten(1), out.pred_boxes.flatten(1)], 1)

    save, reload = _hf(ref)
    return Case(model.build_model(cfg).eval(), w, ref, lambda m: torch.cat([t.flatten(1) for t in m(images)], 1),
                run_ref, save, reload)


def detr_timm(tmp: Path) -> Case:
    """facebook/detr-resnet-50's main revision: a timm ResNet backbone, whose keys are torchvision's (conv1, bn1,
    layer1.0.conv1, downsample.0): the checkpoint of `detr` with its backbone keys renamed so."""
    case = detr(tmp)
    prefix = "model.backbone.conv_encoder.model."

    def save(folder: Path) -> Path:
        state = case.w.read_checkpoint(case.save(folder / "no_timm"))
        renamed = {(prefix + _hf_resnet_to_torchvision("resnet." + k.removeprefix(prefix)) if k.startswith(prefix)
                    else k): v for k, v in state.items()}
        assert any(".layer1.0.downsample.0." in k for k in renamed)
        from safetensors.torch import save_file

        save_file(renamed, str(folder / "timm.safetensors"))
        return folder / "timm.safetensors"

    def load(model: Any, path: Path) -> Any:
        return case.w.load_checkpoint(model, path, layout="detr_timm")

    return dataclasses.replace(case, save=save, reload=None, load=load)


# torchvision's keys, from transformers' equivalent models (torchvision does not import here)
def maskformer(tmp: Path) -> Case:
    """The maskformer_r50 preset at small dims against transformers' MaskFormerForInstanceSegmentation with its own
    ResNet backbone (tests/test_segmentation.py builds both): class logits and mask logits."""
    from test_segmentation import SMALL_MASKFORMER, transformers_maskformer

    model, w = _example(tmp, "maskformer_instance")
    ref = transformers_maskformer()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    def run_ref(r: Any) -> Any:
        out = r(pixel_values=images)
        return torch.cat([out.class_queries_logits.flatten(1), out.masks_queries_logits.flatten(1)], 1)

    save, reload = _hf(ref)
    return Case(model.build_model(dataclasses.replace(model.Config(), **SMALL_MASKFORMER)).eval(), w, ref,
                lambda m: torch.cat([t.flatten(1) for t in m(images)], 1), run_ref, save, reload)


# transformers' ResNet key -> torchvision's: the mapping benchmarks/predict.py writes its checkpoint with
_hf_resnet_to_torchvision = load_module(ROOT / "benchmarks" / "predict.py", "predict_benchmark").hf_to_torchvision


def _hf_convnext_to_torchvision(key: str, v: Any) -> tuple[str, Any]:
    fixed = {"convnext.embeddings.patch_embeddings": "features.0.0", "convnext.embeddings.layernorm": "features.0.1",
             "convnext.layernorm": "classifier.0", "classifier": "classifier.2"}  # transformers 5's names
    mod, leaf = key.rsplit(".", 1)
    if mod in fixed:
        return f"{fixed[mod]}.{leaf}", v
    m = re.fullmatch(r"convnext\.encoder\.stages\.(\d)\.(.+)", key)
    assert m, key
    s, rest = int(m.group(1)), m.group(2)
    if rest.startswith("downsampling_layer."):
        return f"features.{2 * s}.{rest.removeprefix('downsampling_layer.')}", v
    b, part = re.fullmatch(r"layers\.(\d+)\.(.+)", rest).groups()  # type: ignore[union-attr]
    if part == "layer_scale_parameter":
        return f"features.{2 * s + 1}.{b}.layer_scale", v[:, None, None]
    mod, leaf = part.rsplit(".", 1)
    n = {"dwconv": 0, "layernorm": 2, "pwconv1": 3, "pwconv2": 5}[mod]
    return f"features.{2 * s + 1}.{b}.block.{n}.{leaf}", v


def _hf_vit_to_torchvision(sd: dict[str, Any]) -> dict[str, Any]:
    out = {"class_token": sd["vit.embeddings.cls_token"],
           "encoder.pos_embedding": sd["vit.embeddings.position_embeddings"],
           "conv_proj.weight": sd["vit.embeddings.patch_embeddings.projection.weight"],
           "conv_proj.bias": sd["vit.embeddings.patch_embeddings.projection.bias"],
           "encoder.ln.weight": sd["vit.layernorm.weight"], "encoder.ln.bias": sd["vit.layernorm.bias"],
           "heads.head.weight": sd["classifier.weight"], "heads.head.bias": sd["classifier.bias"]}
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("vit.layers.")}  # transformers 5's names
    for i in layers:
        p, q = f"vit.layers.{i}.", f"encoder.layers.encoder_layer_{i}."
        for leaf in ("weight", "bias"):
            out[q + f"self_attention.in_proj_{leaf}"] = torch.cat([sd[p + f"attention.{n}_proj.{leaf}"] for n in "qkv"])
            for a, b in (("attention.o_proj", "self_attention.out_proj"), ("layernorm_before", "ln_1"),
                         ("layernorm_after", "ln_2"), ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.3")):
                out[q + f"{b}.{leaf}"] = sd[p + f"{a}.{leaf}"]
    assert len(out) == len(sd) - 4 * len(layers)  # q, k, v (weights and biases) -> in_proj
    return out


def _torchvision_case(model: Any, w: Any, ref: Any, state: dict[str, Any], image: int) -> Case:
    x = torch.randn(2, 3, image, image, generator=torch.Generator().manual_seed(1))

    def save(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(state, folder / "model.pth")
        return folder / "model.pth"

    return Case(model.build_model().eval(), w, ref, lambda m: m(x), lambda r: r(x).logits, save)


def _resnet(tmp: Path, unit: str, expansion: int, hf_type: str) -> Case:
    src = ("import std.vision\nmodel r {\n  modality image -> label\n  task classification { num_classes = 10 }\n"
           "  constraints { image_size = 64 }\n  architecture vision.resnet { width = 8; depths = [1, 1, 1, 1]; "
           f"unit = {unit}; expansion = {expansion} }}\n}}\n")
    model, w = _folder(compile_source(SourceFile("r.msl", src)), tmp)
    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8 * expansion * 2**i for i in range(4)],
                                    depths=[1, 1, 1, 1], layer_type=hf_type, num_labels=10)
    torch.manual_seed(0)
    ref = _perturb(transformers.ResNetForImageClassification(cfg), 0.05)
    state = {_hf_resnet_to_torchvision(k): v for k, v in ref.state_dict().items()}
    return _torchvision_case(model, w, ref, state, 64)


def resnet50(tmp: Path) -> Case:
    return _resnet(tmp, "bottleneck", 4, "bottleneck")


def resnet18(tmp: Path) -> Case:
    return _resnet(tmp, "basic_block", 1, "basic")


def convnext(tmp: Path) -> Case:
    src = ("import std.vision\nmodel c {\n  modality image -> label\n  task classification { num_classes = 10 }\n"
           "  constraints { image_size = 64 }\n  architecture vision.convnext { width = 32; depths = [1, 2, 1, 1] }\n}\n")
    model, w = _folder(compile_source(SourceFile("c.msl", src)), tmp)
    cfg = transformers.ConvNextConfig(hidden_sizes=[32, 64, 128, 256], depths=[1, 2, 1, 1], num_labels=10,
                                      layer_scale_init_value=0.5, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    ref = _perturb(transformers.ConvNextForImageClassification(cfg), 0.05)
    state = dict(_hf_convnext_to_torchvision(k, v) for k, v in ref.state_dict().items())
    return _torchvision_case(model, w, ref, state, 64)


def vit(tmp: Path) -> Case:
    src = ("import std.vision\nmodel v {\n  modality image -> label\n  task classification { num_classes = 10 }\n"
           "  architecture vision.vit { image_size = 32; patch_size = 8; layers = 2; d_model = 64; heads = 4; "
           "mlp_dim = 96 }\n}\n")
    model, w = _folder(compile_source(SourceFile("v.msl", src)), tmp)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=96, num_labels=10, layer_norm_eps=1e-6,
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ref = _perturb(transformers.ViTForImageClassification(cfg))
    return _torchvision_case(model, w, ref, _hf_vit_to_torchvision(ref.state_dict()), 32)


def _video_resnet(tmp: Path, full3d: bool) -> Case:
    """torchvision.models.video's VideoResNet in its module order (test_yaml_families' reference, its `layers.i`
    renamed to torchvision's `layer{i + 1}`), saved as a .pth of torchvision's keys: the same logits."""
    from test_yaml_families import _VideoResNet

    conv = "conv = conv_3d; stem = stem_3d;" if full3d else ""
    src = ("import std.videocnn\nmodel r {\n  modality video -> label\n  task classification { num_classes = 5 }\n"
           f"  architecture videocnn.resnet3d {{ width = 8; depths = [1, 2, 1, 1]; frames = 4; image_size = 32; "
           f"{conv} }}\n}}\n")
    model, w = _folder(compile_source(SourceFile("r.msl", src)), tmp)
    torch.manual_seed(0)
    ref = _perturb(_VideoResNet(8, [1, 2, 1, 1], 5, full3d), 0.05)
    state = {re.sub(r"^layers\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.", k): v
             for k, v in ref.state_dict().items()}
    assert "layer2.0.downsample.1.running_var" in state and ("stem.4.weight" in state) != full3d
    x = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    case = _torchvision_case(model, w, ref, state, 32)
    return dataclasses.replace(case, run_ours=lambda m: m(x), run_ref=lambda r: r(x))


def r2plus1d(tmp: Path) -> Case:
    return _video_resnet(tmp, False)


def r3d(tmp: Path) -> Case:
    return _video_resnet(tmp, True)


FAMILIES: dict[str, tuple[Callable[[Path], Case], str]] = {
    "gpt2": (gpt2, "gpt2"), "llama": (llama, "llama"), "llama_fused": (llama_fused, "llama"),
    "mixtral": (mixtral, "mixtral"), "bert": (bert, "bert"), "layoutlm": (layoutlm, "layoutlm"),
    "layoutlm_tokens": (layoutlm_tokens, "layoutlm"), "clip": (clip, "clip"),
    "mamba": (mamba, "mamba"), "t5": (t5, "t5"),
    "whisper": (whisper, "whisper"), "musicgen": (musicgen, "musicgen"), "detr": (detr, "detr"),
    "detr_timm": (detr_timm, "detr_timm"), "maskformer": (maskformer, "maskformer"),
    "resnet50": (resnet50, "torchvision_resnet"), "resnet18": (resnet18, "torchvision_resnet"),
    "convnext": (convnext, "torchvision_convnext"), "vit": (vit, "torchvision_vit"),
    "r2plus1d": (r2plus1d, "torchvision_video_resnet"), "r3d": (r3d, "torchvision_video_resnet"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_reference_checkpoint_gives_the_reference_outputs(family: str, tmp_path: Path) -> None:
    """Saved by the reference's tools, loaded by weights.load_checkpoint (layout auto: the compiled LAYOUT), the
    same outputs; exported back and read by the reference, the same outputs again."""
    make, layout = FAMILIES[family]
    case = make(tmp_path / "model")
    assert case.w.LAYOUT == (layout if family != "detr_timm" else "detr")
    path = case.save(tmp_path / "reference")
    ours = case.load(case.ours, path) if case.load else case.w.load_checkpoint(case.ours, path)
    with torch.no_grad():
        want = case.run_ref(case.ref)
        _close(case.run_ours(ours), want)
    if case.reload is not None:
        exported = tmp_path / "exported"
        case.w.export_checkpoint(ours, exported)
        with torch.no_grad():
            _close(case.run_ref(case.reload(exported)), want)
    else:  # torchvision's layout: the export has the checkpoint's keys, shapes and values
        back = case.w.to_reference(ours, layout)
        given = case.w.read_checkpoint(case.save(tmp_path / "again"))
        given = {k: v for k, v in given.items() if k in back or not k.startswith("model.")} if family == "detr_timm" \
            else given
        expected = {k: v for k, v in given.items() if not k.endswith("num_batches_tracked")}
        assert sorted(back) == sorted(expected)
        assert all(torch.equal(back[k], expected[k]) for k in expected)


# ------------------------------------------------------------------ formats
@pytest.fixture
def gpt2_case(tmp_path: Path) -> Case:
    return gpt2(tmp_path / "model")


def _check(case: Case, path: Path, layout: str = "auto") -> None:
    fresh = case.w.load_checkpoint(case.ours, path, layout=layout)
    with torch.no_grad():
        _close(case.run_ours(fresh), case.run_ref(case.ref))


def test_bin_pth_and_sharded_checkpoints(gpt2_case: Case, tmp_path: Path) -> None:
    """A torch pickle (.bin, and .pth wrapped in {"state_dict": ...}, read with weights_only), shards of
    safetensors and of .bin with their index files, and a folder holding any of them."""
    c = gpt2_case
    torch.save(c.ref.state_dict(), tmp_path / "pytorch_model.bin")
    _check(c, tmp_path / "pytorch_model.bin")
    _check(c, tmp_path)  # the folder
    torch.save({"state_dict": c.ref.state_dict()}, tmp_path / "wrapped.pth")
    _check(c, tmp_path / "wrapped.pth")
    c.ref.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    index = tmp_path / "shards" / "model.safetensors.index.json"
    assert index.exists() and len(list((tmp_path / "shards").glob("model-*.safetensors"))) > 2
    _check(c, index)
    _check(c, tmp_path / "shards")
    # shards of .bin (transformers 5 writes safetensors only): the same tensors, split by hand, with their index
    state, names = c.ref.state_dict(), {}
    for i, part in enumerate((list(state)[:8], list(state)[8:])):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        (tmp_path / "bin_shards").mkdir(exist_ok=True)
        torch.save({k: state[k] for k in part}, tmp_path / "bin_shards" / name)
        names.update(dict.fromkeys(part, name))
    (tmp_path / "bin_shards" / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": names}))
    _check(c, tmp_path / "bin_shards")


def test_own_layout_and_sharded_export(gpt2_case: Case, tmp_path: Path) -> None:
    """The compiled model's own state_dict (every key, as load_state_dict wants it) loads with layout auto; an
    export in shards reads back, ours and the reference's."""
    c = gpt2_case
    c.w.load_checkpoint(c.ours, c.save(tmp_path / "ref"))
    c.w.export_checkpoint(c.ours, tmp_path / "own.safetensors", layout="own")
    from safetensors.torch import load_file

    own = load_file(str(tmp_path / "own.safetensors"))
    assert sorted(own) == sorted(c.ours.state_dict())
    c.ours.load_state_dict(own)
    fresh = gpt2(tmp_path / "again")
    _check(dataclasses.replace(fresh, ref=c.ref), tmp_path / "own.safetensors")
    c.w.export_checkpoint(c.ours, tmp_path / "sharded" / "model.safetensors", max_shard_bytes=20_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    _check(c, tmp_path / "sharded")
    c.ref.config.save_pretrained(tmp_path / "sharded")
    reread = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "sharded").eval()
    with torch.no_grad():
        _close(c.run_ref(reread), c.run_ref(c.ref))


# ------------------------------------------------------------------ errors
def _state(case: Case) -> dict[str, Any]:
    return {k: v.clone() for k, v in case.ref.state_dict().items()}


def _refused(case: Case, state: dict[str, Any], match: str, **kw: Any) -> None:
    """Loading `state` into the case's model (load_checkpoint's keywords `kw`) raises WeightLayoutError with a message
    that `match` finds."""
    with pytest.raises(case.w.WeightLayoutError, match=match):
        case.w.load_checkpoint(case.ours, state, **kw)


def test_missing_tensor_is_named(gpt2_case: Case) -> None:
    state = _state(gpt2_case)
    del state["transformer.h.1.mlp.c_fc.bias"]
    _refused(gpt2_case, state, r"misses 1 tensor.*transformer\.h\.1\.mlp\.c_fc\.bias "
                               r"\(for backbone\.h\.1\.mlp\.c_fc\.bias\)")


def test_extra_tensor_is_named(gpt2_case: Case) -> None:
    state = _state(gpt2_case)
    state["transformer.h.2.ln_1.weight"] = torch.ones(64)  # a third layer the model does not have
    _refused(gpt2_case, state, r"1 tensor\(s\) of the checkpoint fit no part of the "
                               r"model .*: transformer\.h\.2\.ln_1\.weight")


def test_wrong_shape_is_named(gpt2_case: Case) -> None:
    state = _state(gpt2_case)
    state["transformer.h.0.attn.c_attn.weight"] = torch.zeros(64, 96)
    _refused(gpt2_case, state, re.escape(
            "transformer.h.0.attn.c_attn.weight has shape (64, 96); the model's backbone.h.0.attn.c_attn.weight "
            "needs (64, 192)"))


def test_wrong_shape_in_a_fused_or_stacked_tensor(tmp_path: Path) -> None:
    case = mixtral(tmp_path)
    state = case.w.to_reference(case.ours, "mixtral")
    state["model.layers.1.block_sparse_moe.experts.3.w2.weight"] = torch.zeros(64, 95)
    _refused(case, state, re.escape(
            "model.layers.1.block_sparse_moe.experts.3.w2.weight has shape (64, 95); the model's "
            "backbone.h.1.moe.w2 needs (64, 96)"))


def test_wrong_shape_in_a_fused_tensor(tmp_path: Path) -> None:
    """A part of a fused q, k, v of the wrong width is named; parts that do not add up to ours are named together."""
    case = llama_fused(tmp_path)
    state = case.w.to_reference(case.ours, "llama")
    state["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(64, 32)
    _refused(case, state, re.escape(
            "model.layers.0.self_attn.k_proj.weight has shape (64, 32); the model's backbone.h.0.attn.c_attn.weight "
            "needs (64, 64)"))
    state["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 64)
    _refused(case, state, re.escape(
            "model.layers.0.self_attn.q_proj.weight + model.layers.0.self_attn.k_proj.weight + "
            "model.layers.0.self_attn.v_proj.weight has shape (160, 64); the model's backbone.h.0.attn.c_attn.weight "
            "needs (192, 64)"))


def test_wrong_shape_of_clips_class_embedding(tmp_path: Path) -> None:
    """CLIP's class embedding is (C,) in the checkpoint, (1, 1, C) in ours: the checkpoint's shape is checked against
    (C,), and the export gives (C,) back."""
    case = clip(tmp_path)
    state = case.w.to_reference(case.ours, "clip")
    assert tuple(state["vision_model.embeddings.class_embedding"].shape) == (64,)
    state["vision_model.embeddings.class_embedding"] = torch.zeros(1, 64)
    _refused(case, state, re.escape(
            "vision_model.embeddings.class_embedding has shape (1, 64); the model's "
            "encoder_image.class_embedding.weight needs (64,)"))


def test_a_key_no_rule_maps_is_named(gpt2_case: Case) -> None:
    _refused(gpt2_case, {}, r"no rule of the transformers BertModel .* layout maps the "
                            r"model's `backbone\.h\.0\.ln_1\.weight`", layout="bert")


def test_own_layout_errors_name_the_key(gpt2_case: Case) -> None:
    own = {k: v.clone() for k, v in gpt2_case.ours.state_dict().items()}
    own["backbone.ln_f.bias"] = torch.zeros(3)
    _refused(gpt2_case, own, re.escape("backbone.ln_f.bias has shape (3,); the "
                                       "model needs (64,)"))
    own["backbone.ln_f.bias"] = torch.zeros(64)
    own["backbone.ln_g.bias"] = torch.zeros(64)
    _refused(gpt2_case, own, re.escape("1 tensor(s) of the checkpoint fit no part of the "
                                       "model: backbone.ln_g.bias"))
    del own["backbone.ln_f.bias"]
    _refused(gpt2_case, own, r"misses 1 tensor\(s\) of the model: backbone\.ln_f\.bias", layout="own")


def test_known_buffers_and_prefixes_are_accepted(gpt2_case: Case, tmp_path: Path) -> None:
    """Old GPT-2 files carry the causal mask buffers (attn.bias, attn.masked_bias); a BertForPreTraining file
    prefixes bert. and adds the cls. heads: both load, nothing else unused is let through."""
    state = _state(gpt2_case)
    state.update({f"transformer.h.{i}.attn.{n}": torch.ones(1, 1, 64, 64) for i in range(2) for n in ("bias",
                                                                                                     "masked_bias")})
    _check(gpt2_case, _save(state, tmp_path / "x.pth"))
    case = bert(tmp_path / "bert")
    prefixed = {f"bert.{k}": v for k, v in case.ref.state_dict().items()}
    prefixed["cls.predictions.bias"] = torch.zeros(97)
    _check(case, _save(prefixed, tmp_path / "bert.bin"))
    prefixed["bert.encoder.layer.2.output.dense.bias"] = torch.zeros(64)
    _refused(case, prefixed, r"fit no part .*: encoder\.layer\.2\.output\.dense\.bias")


def _save(state: dict[str, Any], path: Path) -> Path:
    torch.save(state, path)
    return path


def test_unreadable_files(gpt2_case: Case, tmp_path: Path) -> None:
    w = gpt2_case.w
    with pytest.raises(w.WeightLayoutError, match="does not exist"):
        w.read_checkpoint(tmp_path / "nothing.safetensors")
    torch.save({"model": types.SimpleNamespace(a=1)}, tmp_path / "object.pth")  # not loadable with weights_only
    with pytest.raises(w.WeightLayoutError, match="not a readable torch checkpoint"):
        w.read_checkpoint(tmp_path / "object.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(w.WeightLayoutError, match="list.pt holds a list, not a state dict of tensors"):
        w.read_checkpoint(tmp_path / "list.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(w.WeightLayoutError, match="bad.safetensors: not a readable safetensors file"):
        w.read_checkpoint(tmp_path / "bad.safetensors")
    (tmp_path / "a.index.json").write_text('{"weight_map": {"x": "../elsewhere.safetensors"}}')
    with pytest.raises(w.WeightLayoutError, match="a shard must be a file name beside the index"):
        w.read_checkpoint(tmp_path / "a.index.json")
    (tmp_path / "b.index.json").write_text("{")
    with pytest.raises(w.WeightLayoutError, match="not a JSON index"):
        w.read_checkpoint(tmp_path / "b.index.json")
    (tmp_path / "c.index.json").write_text('{"metadata": {}}')
    with pytest.raises(w.WeightLayoutError, match="c.index.json: an index file needs a weight_map"):
        w.read_checkpoint(tmp_path / "c.index.json")
    (tmp_path / "d.index.json").write_text('{"weight_map": {"x": "shard.pt", "y": "shard.pt"}}')
    torch.save({"x": torch.zeros(1)}, tmp_path / "shard.pt")
    with pytest.raises(w.WeightLayoutError, match="d.index.json: y is in the index but not in its shard shard.pt"):
        w.read_checkpoint(tmp_path / "d.index.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(w.WeightLayoutError, match=r"empty: no checkpoint file \(.*\) in it"):
        w.read_checkpoint(tmp_path / "empty")
    with pytest.raises(w.WeightLayoutError, match=r"no checkpoint file \(.*\) but several: bad.safetensors, list.pt, "
                                                  r"object.pth, shard.pt"):
        w.read_checkpoint(tmp_path)
    with pytest.raises(w.WeightLayoutError, match="unknown layout `nope`"):
        w.load_checkpoint(gpt2_case.ours, {"a": torch.zeros(1)}, layout="nope")


# ------------------------------------------------------------------ the compiled LAYOUT and the standalone file
def test_weights_py_imports_torch_and_safetensors_only(gpt2_case: Case) -> None:
    text = Path(gpt2_case.w.__file__).read_text()
    roots = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "json", "re", "collections", "dataclasses", "pathlib", "typing", "torch",
                     "safetensors"}, roots
    assert "LAYOUT: str | None = 'gpt2'\n" in text


def test_every_preset_with_a_reference_names_its_layout() -> None:
    """The presets whose function is compared with a reference (test_reference_models.FUNCTION_TESTS) load its
    checkpoints; each layout is tested above, but for sd15 (a pipeline of two models, diffusers' U-Net and CLIP's text
    encoder), which tests/test_inference_more.py tests."""
    from test_reference_models import COUNT_ONLY, FUNCTION_TESTS

    assert set(FUNCTION_TESTS) | COUNT_ONLY == set(PRESET_LAYOUTS)
    from metagen_backends.pytorch.weights.runtime import LAYOUTS

    elsewhere = {"sd15"}
    assert set(PRESET_LAYOUTS.values()) <= set(LAYOUTS) == {layout for _, layout in FAMILIES.values()} | elsewhere


def test_every_family_with_a_layout_is_a_stdlib_family() -> None:
    """A misspelt family name in FAMILY_LAYOUTS would silently give its specs no layout."""
    from test_presets import stdlib_program

    assert set(FAMILY_LAYOUTS) <= {d.qualname for d in stdlib_program().defs_of("family")}


@pytest.mark.parametrize("stem,layout", [("gpt2", "gpt2"), ("tiny_story", "llama"), ("moe_lm", "mixtral"),
                                         ("pointnet", None)])
def test_layout_is_chosen_at_compile_time(stem: str, layout: str | None) -> None:
    comp = compile_path(ROOT / "examples" / f"{stem}.msl")
    assert layout_for(comp) == layout


def test_onnx_import_weights_reads_the_same_formats(tmp_path: Path) -> None:
    """`metagenc import-weights` with the model's state_dict as safetensors shards (their index) and as a folder:
    onnxruntime gives the PyTorch module's logits."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx_ir")
    import numpy as np
    from metagen_backends.onnx import emit as emit_onnx

    from metagen_compiler.cli import main

    src = ("import std.presets\nmodel p {\n  modality text -> text\n  task generation\n  architecture gpt2 { vocab = 97; "
           "context = 64; layers = 2; d_model = 64; heads = 2 }\n}\n")
    comp = compile_source(SourceFile("p.msl", src))
    model_mod, w = _folder(comp, tmp_path / "torch")
    for name, data in emit_onnx(comp).items():
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    torch.manual_seed(3)
    model = _perturb(model_mod.build_model())
    w.export_checkpoint(model, tmp_path / "ckpt" / "model.safetensors", layout="own", max_shard_bytes=40_000)
    x = _tokens(97)
    with torch.no_grad():
        want = model(x).numpy()
    for given in (tmp_path / "ckpt" / "model.safetensors.index.json", tmp_path / "ckpt"):
        out = tmp_path / "trained.onnx"
        assert main(["import-weights", str(tmp_path), str(given), "-o", str(out)]) == 0
        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"text": x.numpy()})[0]
        assert float(np.abs(got - want).max()) < 1e-4
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    assert main(["import-weights", str(tmp_path), str(tmp_path / "bad.safetensors"), "-o", str(out)]) == 1


def test_a_model_without_a_reference_reads_its_own_layout_only(tmp_path: Path) -> None:
    model_mod, w = _example(tmp_path, "pointnet")
    assert w.LAYOUT is None
    model = model_mod.build_model()
    w.export_checkpoint(model, tmp_path / "own.pt")  # LAYOUT None: its own keys
    w.load_checkpoint(model, tmp_path / "own.pt")
    with pytest.raises(w.WeightLayoutError, match="names no reference layout; pass layout= one of bert, clip, detr, "):
        w.load_checkpoint(model, {"feat.conv1.weight": torch.zeros(64, 3, 1)})


def _torchvision_r2plus1d_18() -> Any:
    """torchvision's r2plus1d_18 (400 classes) as test_yaml_families rebuilds it, its state dict in torchvision's
    keys (layer1..layer4)."""
    from test_yaml_families import _VideoResNet

    class Renamed(_VideoResNet):  # type: ignore[misc]
        def state_dict(self, *a: Any, **k: Any) -> Any:
            return {re.sub(r"^layers\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key): v
                    for key, v in super().state_dict(*a, **k).items()}

    return Renamed(64, [2, 2, 2, 2], 400, False)


def _full_size_references() -> dict[str, tuple[str, Callable[[], Any]]]:
    """example -> its preset's reference at the published size (configs as tests/test_numeric.py builds them)."""
    t = transformers
    return {
        "gpt2": ("gpt2", lambda: t.GPT2LMHeadModel(t.GPT2Config())),
        "bert_base": ("bert", lambda: t.BertModel(t.BertConfig())),
        "mamba_lm": ("mamba", lambda: t.MambaForCausalLM(t.MambaConfig(
            vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2, conv_kernel=4,
            time_step_rank=48, use_conv_bias=True, use_bias=False, tie_word_embeddings=True))),
        "t5_small": ("t5", lambda: t.T5ForConditionalGeneration(t.T5Config(tie_word_embeddings=True))),
        "clip_vit_b_32": ("clip", lambda: t.CLIPModel(t.CLIPConfig())),  # CLIPConfig's defaults: ViT-B/32
        "layoutlm_docvqa": ("layoutlm", lambda: t.LayoutLMForQuestionAnswering(t.LayoutLMConfig())),
        "r2plus1d_kinetics": ("torchvision_video_resnet", _torchvision_r2plus1d_18),
        "musicgen_small": ("musicgen", lambda: t.MusicgenForCausalLM(t.MusicgenDecoderConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096, num_codebooks=4,
            vocab_size=2048))),
        "whisper_tiny": ("whisper", lambda: t.WhisperForConditionalGeneration(t.WhisperConfig(
            d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6,
            encoder_ffn_dim=1536, decoder_ffn_dim=1536, vocab_size=51865, num_mel_bins=80,
            max_source_positions=1500, max_target_positions=448))),
    }


@pytest.mark.parametrize("stem", sorted(_full_size_references()))
def test_full_size_presets_map_onto_the_reference_keys_and_shapes(stem: str, tmp_path: Path) -> None:
    """At the published size, on the meta device: the export of the example's preset has exactly the reference's
    keys (less the tied copies it does not save) with its shapes."""
    layout, make = _full_size_references()[stem]
    model_mod, w = _example(tmp_path, stem)
    assert w.LAYOUT == layout
    with torch.device("meta"):
        ours, ref = model_mod.build_model(), make()
    spec = w.LAYOUTS[layout]
    exported = {k: tuple(v.shape) for k, v in w.to_reference(ours, layout).items()}
    saved = {}
    for k, v in ref.state_dict().items():  # a LayoutLMFor* checkpoint's layoutlm. prefix dropped, as loading does
        for prefix in spec.prefixes:
            k = k.removeprefix(prefix)
        saved[k] = tuple(v.shape)
    theirs = {k: v for k, v in saved.items()  # what the layout ignores where the model has no use for it
              if k not in spec.tied and (k in exported or not any(re.fullmatch(p, k) for p in spec.ignore))}
    assert exported == theirs


def test_maskformer_r50_maps_onto_the_saved_reference_keys_at_full_size(tmp_path: Path) -> None:
    """maskformer_r50 (ResNet-50, 6 decoder layers, 100 queries, 80 classes), on the meta device: the export has
    exactly the keys and shapes transformers saves for MaskFormerForInstanceSegmentation with a ResNet-50 (its
    in-memory o_proj and mlp.fc1 are saved as out_proj and fc1, as transformers' conversion mapping writes them)."""
    model_mod, w = _example(tmp_path, "maskformer_instance")
    assert w.LAYOUT == "maskformer"
    cfg = transformers.MaskFormerConfig(
        backbone_config=transformers.ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                                                  layer_type="bottleneck",
                                                  out_features=["stage1", "stage2", "stage3", "stage4"]),
        num_labels=80, fpn_feature_size=256, mask_feature_size=256, num_queries=100)
    with torch.device("meta"):
        ours, ref = model_mod.build_model(), transformers.MaskFormerForInstanceSegmentation(cfg)

    def saved(key: str) -> str:
        return re.sub(r"\.mlp\.fc(\d)\.", r".fc\1.", key.replace(".o_proj.", ".out_proj."))

    spec = w.LAYOUTS["maskformer"]
    theirs = {saved(k): tuple(v.shape) for k, v in ref.state_dict().items()
              if not any(re.fullmatch(p, k) for p in spec.ignore)}
    assert any(".layers.5.fc1." in k for k in theirs) and any("stages.2.layers.5." in k for k in theirs)
    assert {k: tuple(v.shape) for k, v in w.to_reference(ours, "maskformer").items()} == theirs
