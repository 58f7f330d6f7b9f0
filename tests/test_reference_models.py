"""Families against their reference implementations: ConvNeXt against torchvision (parameter counts of the
preset and of user-written configurations, on the meta device; the same outputs from the same weights), and
PointNet against the common PyTorch implementation (fxia22/pointnet.pytorch's PointNetCls, transcribed below)."""

from __future__ import annotations

import sys
import types

import pytest

torch = pytest.importorskip("torch")

from metagen_backends.pytorch import emit
from metagen_backends.pytorch.weights.runtime import load_checkpoint
from training_helpers import TINY_CLIP, tiny_clip_config

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile


def _torchvision():  # type: ignore[no-untyped-def]
    """torchvision.models, where installed (not in the `test` extra: PyPI's wheel for torch 2.13 needs the CUDA
    build of torch, and pip would replace the CPU build with it; the published counts are checked without it). A CUDA build of torchvision beside a CPU build of torch
    cannot load its compiled operators (nms, roi_align) and fails registering their fake kernels; the model
    definitions use none of them, so that registration is skipped while importing."""
    try:
        import torchvision
    except ImportError:
        pytest.skip("torchvision is not installed")
    except RuntimeError:
        sys.modules.pop("torchvision", None)
        for k in [k for k in sys.modules if k.startswith("torchvision.")]:
            sys.modules.pop(k)
        real = torch.library.register_fake

        def skip_torchvision_ops(name, *a, **k):  # type: ignore[no-untyped-def]
            if isinstance(name, str) and name.startswith("torchvision::"):
                return lambda fn: fn
            return real(name, *a, **k)

        torch.library.register_fake = skip_torchvision_ops
        try:
            import torchvision
        finally:
            torch.library.register_fake = real
    return torchvision.models


def build(src: str):  # type: ignore[no-untyped-def]
    comp = compile_source(SourceFile("tv.msl", src))
    assert not comp.bag.has_errors, [d.message for d in comp.bag.items]
    mod = types.ModuleType("tv_model")
    sys.modules["tv_model"] = mod  # dataclasses look their module up while the class is made
    exec(compile(emit(comp)["model.py"], "tv_model.py", "exec"), mod.__dict__)  # noqa: S102 - our own code
    return comp, mod


def _convnext(width: int, depths: list[int], image: int = 224, classes: int = 1000) -> str:
    return f"""import std.vision
model c {{
  modality image -> label
  task classification {{ num_classes = {classes} }}
  constraints {{ image_size = {image} }}
  architecture vision.convnext {{ width = {width}; depths = {depths} }}
}}"""


def _count(model) -> int:  # type: ignore[no-untyped-def]
    return sum(p.numel() for p in model.parameters())


# published counts: torchvision's model documentation (convnext_tiny, convnext_small)
CONVNEXT_TINY, CONVNEXT_SMALL = 28_589_128, 50_223_688
_TINY_PRESET = """import std.presets
model t {
  modality image -> label
  task classification { num_classes = 1000 }
  architecture convnext_tiny
}"""


def test_convnext_counts_equal_the_published_ones() -> None:
    """The preset and ConvNeXt-Small as a user writes it (width 96, depths [3, 3, 27, 3]): the compiler's
    count and the generated module's, without torchvision."""
    for src, published in ((_TINY_PRESET, CONVNEXT_TINY), (_convnext(96, [3, 3, 27, 3]), CONVNEXT_SMALL)):
        comp, mod = build(src)
        with torch.device("meta"):
            ours = _count(mod.build_model())
        assert comp.graph.param_count() == ours == published


@pytest.mark.parametrize("src,reference,published", [
    (_TINY_PRESET, "convnext_tiny", CONVNEXT_TINY),  # the preset
    (_convnext(96, [3, 3, 27, 3]), "convnext_small", CONVNEXT_SMALL),  # ConvNeXt-Small as a user writes it
])
def test_convnext_equals_torchvision(src: str, reference: str, published: int) -> None:
    tv = _torchvision()
    comp, mod = build(src)
    with torch.device("meta"):
        ref = _count(getattr(tv, reference)())
        ours = _count(mod.build_model())
    assert comp.graph.param_count() == ours == ref == published


def _torchvision_order(model) -> list:  # type: ignore[no-untyped-def]
    """torchvision's parameters in the order of ours: a block's layer_scale is registered before its
    convolution and MLP; ours (LayerScale) comes last, where it is applied."""
    out, pending = [], None
    for name, p in model.named_parameters():
        if name.endswith("layer_scale"):
            pending = p
            continue
        out.append(p)
        if pending is not None and name.endswith("block.5.bias"):
            out.append(pending)
            pending = None
    return out


def test_convnext_computes_what_torchvision_computes() -> None:
    """torchvision's weights copied into ours tensor by tensor (same order, same numbers of elements): the
    same logits, at a small size (width 16, one or two blocks per stage, 64 x 64 images)."""
    _torchvision()
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    depths = [1, 2, 1, 1]
    dims = [16, 32, 64, 128]
    torch.manual_seed(0)
    cfg = [CNBlockConfig(d, dims[i + 1] if i < 3 else None, n) for i, (d, n) in enumerate(zip(dims, depths))]
    ref = ConvNeXt(cfg, stochastic_depth_prob=0.0, layer_scale=0.5, num_classes=10).eval()
    _, mod = build(_convnext(16, depths, image=64, classes=10))
    ours = mod.build_model().eval()
    theirs = _torchvision_order(ref)
    mine = list(ours.parameters())
    assert [p.numel() for p in mine] == [p.numel() for p in theirs]
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            a.copy_(b.reshape(a.shape) + 0.01 * torch.randn(a.shape))  # and off the init, so every tensor counts
            b.copy_(a.reshape(b.shape))
        x = torch.randn(2, 3, 64, 64)
        err = (ours(x) - ref(x)).abs().max().item()
    assert err < 5e-5, err  # fp32: summation orders differ (the layer scale is applied channels last)


# ------------------------------------------------------------------ PointNet
class _STN3d(torch.nn.Module):  # fxia22/pointnet.pytorch, pointnet/model.py: STN3d
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1, self.conv2, self.conv3 = nn.Conv1d(3, 64, 1), nn.Conv1d(64, 128, 1), nn.Conv1d(128, 1024, 1)
        self.fc1, self.fc2, self.fc3 = nn.Linear(1024, 512), nn.Linear(512, 256), nn.Linear(256, 9)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(64), nn.BatchNorm1d(128), nn.BatchNorm1d(1024)
        self.bn4, self.bn5 = nn.BatchNorm1d(512), nn.BatchNorm1d(256)

    def forward(self, x):  # type: ignore[no-untyped-def]
        F = torch.nn.functional
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = torch.max(x, 2, keepdim=True)[0].view(-1, 1024)
        x = F.relu(self.bn4(self.fc1(x)))
        x = F.relu(self.bn5(self.fc2(x)))
        x = self.fc3(x) + torch.eye(3).flatten()
        return x.view(-1, 3, 3)


class _PointNetfeat(torch.nn.Module):  # PointNetfeat(global_feat=True, feature_transform=False)
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stn = _STN3d()
        self.conv1, self.conv2, self.conv3 = nn.Conv1d(3, 64, 1), nn.Conv1d(64, 128, 1), nn.Conv1d(128, 1024, 1)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(64), nn.BatchNorm1d(128), nn.BatchNorm1d(1024)

    def forward(self, x):  # type: ignore[no-untyped-def]  # x: (B, 3, N)
        F = torch.nn.functional
        trans = self.stn(x)
        x = torch.bmm(x.transpose(2, 1), trans).transpose(2, 1)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return torch.max(x, 2, keepdim=True)[0].view(-1, 1024)


class _PointNetCls(torch.nn.Module):  # PointNetCls(k=40), returning logits (the original adds log_softmax)
    def __init__(self, k: int = 40) -> None:
        super().__init__()
        nn = torch.nn
        self.feat = _PointNetfeat()
        self.fc1, self.fc2, self.fc3 = nn.Linear(1024, 512), nn.Linear(512, 256), nn.Linear(256, k)
        self.dropout = nn.Dropout(p=0.3)
        self.bn1, self.bn2 = nn.BatchNorm1d(512), nn.BatchNorm1d(256)

    def forward(self, x):  # type: ignore[no-untyped-def]
        F = torch.nn.functional
        x = self.feat(x)
        x = F.relu(self.bn1(self.fc1(x)))
        x = F.relu(self.bn2(self.dropout(self.fc2(x))))
        return self.fc3(x)


def _reference_key(key: str) -> str:
    for ours, theirs in (("encoder.stn.", "feat.stn."), ("backbone.", "feat."), ("head.", "")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise KeyError(key)


def test_pointnet_equals_the_reference_implementation() -> None:
    """examples/pointnet.msl against PointNetCls: the same state_dict keys (up to the module prefixes) and
    shapes, 1,614,129 parameters, and the same logits from the same (perturbed) weights and statistics."""
    from conftest import ROOT, compile_path

    comp = compile_path(ROOT / "examples" / "pointnet.msl")
    assert not comp.bag.has_errors
    mod = types.ModuleType("pointnet_ref")
    sys.modules["pointnet_ref"] = mod
    exec(compile(emit(comp)["model.py"], "pointnet_ref.py", "exec"), mod.__dict__)  # noqa: S102
    ours = mod.build_model().eval()
    torch.manual_seed(0)
    ref = _PointNetCls(40).eval()
    assert comp.graph.param_count() == _count(ours) == _count(ref) == 1_614_129
    theirs = ref.state_dict()
    mapped = {_reference_key(k): v for k, v in ours.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, v in theirs.items():
            if v.is_floating_point():
                v.copy_((1.0 + 0.2 * torch.rand(v.shape, generator=g)) if k.endswith("running_var")
                        else v + 0.05 * torch.randn(v.shape, generator=g))
        ours.load_state_dict({k: theirs[_reference_key(k)] for k in ours.state_dict()})
        points = torch.randn(4, 1024, 3, generator=g)
        expect = ref(points.transpose(1, 2))
        got = ours(points)
    assert expect.abs().max() > 0.1  # logits of a size that shows a difference
    assert (got - expect).abs().max().item() < 1e-4


# ------------------------------------------------------------------ presets compute their reference's function
# Every preset that names a reference implementation computes its function: the preset with its dims reduced
# (everything else, rotary base, norm eps, activation, routing, as the preset sets it) against the reference
# built from a config with the same reduced dims and the reference's own values for the rest; the reference's
# random weights, perturbed off their init so that every tensor counts, mapped into ours (by weights.py's layout
# where the preset has one); the same outputs within 1e-4 in float32.
def _preset_module(imports: str, arch: str, modality: str = "text -> text",  # type: ignore[no-untyped-def]
                   task: str = "generation"):
    src = f"import {imports}\nmodel p {{\n  modality {modality}\n  task {task}\n  architecture {arch}\n}}\n"
    comp = compile_source(SourceFile("preset.msl", src))
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.items]
    mod = types.ModuleType("preset_model")
    sys.modules["preset_model"] = mod
    exec(compile(emit(comp)["model.py"], "preset_model.py", "exec"), mod.__dict__)  # noqa: S102 - our own code
    return mod.build_model().eval()


def _perturb(ref, scale: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for v in ref.parameters():
            v.add_(scale * torch.randn(v.shape, generator=g))


def _load_reference(ours, ref, layout: str, scale: float = 0.1, saved=None) -> None:  # type: ignore[no-untyped-def]
    """Perturb the reference's weights, then load them into ours through weights.py's `layout` (every tensor of
    ours given, every one of theirs used): as the reference holds them, or as its save_pretrained writes them to
    the folder `saved`."""
    _perturb(ref, scale)
    if saved is not None:
        ref.save_pretrained(saved)
    load_checkpoint(ours, ref.state_dict() if saved is None else saved, layout=layout)


def _tokens(vocab: int, length: int = 40, batch: int = 2):  # type: ignore[no-untyped-def]
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def _close(ours, theirs) -> float:  # type: ignore[no-untyped-def]
    assert ours.shape == theirs.shape
    assert theirs.abs().max() > 0.1  # outputs of a size that shows a difference
    err = (ours - theirs).abs().max().item()
    assert err < 1e-4, err
    return err


# the published configs' values beside the dims (mistralai/Mixtral-8x7B-v0.1 config.json; MixtralConfig's defaults
# for mixtral_tiny, whose comment names MixtralForCausalLM with its dims)
_MIXTRAL_FUNCTION: dict[str, dict[str, float]] = {
    "mixtral_8x7b": {"rope_theta": 1e6, "rms_norm_eps": 1e-5, "num_local_experts": 8, "num_experts_per_tok": 2},
    "mixtral_tiny": {"num_local_experts": 8, "num_experts_per_tok": 2},
}


@pytest.mark.parametrize("preset", sorted(_MIXTRAL_FUNCTION))
def test_mixtral_presets_compute_transformers_mixtral(preset: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Rotary base 1e6, RMSNorm eps 1e-5 and no token dropped, as MixtralForCausalLM; and a token's logits do
    not depend on the rest of the batch. The weights as saved (one w1, w2, w3 per expert), which the `mixtral`
    layout reads."""
    transformers = pytest.importorskip("transformers")
    ours = _preset_module("std.moe", f"moe.{preset} {{ vocab = 97; context = 64; layers = 2; d_model = 64; "
                                     "heads = 4; kv_heads = 2; hidden = 96 }")
    cfg = transformers.MixtralConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                     tie_word_embeddings=False, **_MIXTRAL_FUNCTION[preset])
    torch.manual_seed(0)
    ref = transformers.MixtralForCausalLM(cfg).eval()
    _load_reference(ours, ref, "mixtral", scale=0.2, saved=tmp_path)
    tokens = _tokens(97)
    with torch.no_grad():
        logits = ours(tokens)
        _close(logits, ref(tokens).logits)
        assert (ours(tokens[:1]) - logits[:1]).abs().max().item() < 1e-4  # no capacity: batch-independent


def test_llama_small_computes_transformers_llama() -> None:
    """LlamaConfig's defaults beside the dims: rotary base 10000, RMSNorm eps 1e-6, SiLU-gated MLP."""
    transformers = pytest.importorskip("transformers")
    ours = _preset_module("std.presets", "llama_small { vocab = 97; context = 64; layers = 2; d_model = 64; "
                                         "heads = 4; kv_heads = 2 }")
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(cfg).eval()
    _load_reference(ours, ref, "llama")
    tokens = _tokens(97)
    with torch.no_grad():
        _close(ours(tokens), ref(tokens).logits)


def test_gpt2_computes_transformers_gpt2() -> None:
    """GPT2Config's defaults beside the dims: LayerNorm eps 1e-5, tanh-approximated GELU, tied head."""
    transformers = pytest.importorskip("transformers")
    ours = _preset_module("std.presets", "gpt2 { vocab = 97; context = 64; layers = 2; d_model = 64; heads = 2 }")
    cfg = transformers.GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=2, n_positions=64, bos_token_id=0,
                                  eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    _load_reference(ours, ref, "gpt2")
    assert ours.head.proj.weight is ours.encoder.wte.weight
    tokens = _tokens(97)
    with torch.no_grad():
        _close(ours(tokens), ref(tokens).logits)


def test_bert_base_computes_transformers_bert() -> None:
    """BertConfig's defaults beside the dims: LayerNorm eps 1e-12, exact GELU, post-norm; the pooled output."""
    transformers = pytest.importorskip("transformers")
    ours = _preset_module("std.presets", "bert_base { vocab = 97; context = 64; layers = 2; d_model = 64; heads = 2; "
                                         "mlp_dim = 96 }", "text -> embedding", "embedding")
    cfg = transformers.BertConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=96, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ref = transformers.BertModel(cfg).eval()
    _load_reference(ours, ref, "bert")
    tokens = _tokens(97)
    with torch.no_grad():
        _close(ours(tokens), ref(tokens).pooler_output)


def test_layoutlm_base_computes_transformers_layoutlm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """LayoutLMConfig's defaults beside the dims (BERT's post-norm encoder, LayerNorm eps 1e-12; x, y, height and
    width tables of 1024 coordinates, the x and y tables shared by both edges of a box): the pooled output. The
    weights as saved, read through the `layoutlm` layout."""
    transformers = pytest.importorskip("transformers")
    ours = _preset_module("std.document", "document.layoutlm_base { vocab = 97; context = 32; layers = 2; "
                          "d_model = 64; heads = 2; mlp_dim = 96 }", "text -> embedding", "embedding")
    cfg = transformers.LayoutLMConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=96, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ref = transformers.LayoutLMModel(cfg).eval()
    _load_reference(ours, ref, "layoutlm", saved=tmp_path)
    g = torch.Generator().manual_seed(1)
    tokens = _tokens(97, length=20)
    corner = torch.randint(0, 500, (2, 20, 2), generator=g)
    boxes = torch.cat([corner, corner + torch.randint(0, 500, (2, 20, 2), generator=g)], dim=-1)  # x0, y0, x1, y1
    with torch.no_grad():
        _close(ours(tokens, boxes), ref(input_ids=tokens, bbox=boxes).pooler_output)


def test_mamba_130m_computes_transformers_mamba() -> None:
    """The state-spaces/mamba-130m config beside the dims (RMSNorm eps 1e-5, state 16, convolution 4, expand 2),
    against MambaForCausalLM's sequential path."""
    transformers = pytest.importorskip("transformers")
    ours = _preset_module("std.ssm", "ssm.mamba_130m { vocab = 97; layers = 2; d_model = 64; dt_rank = 4 }")
    cfg = transformers.MambaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, state_size=16, expand=2,
                                   conv_kernel=4, time_step_rank=4, use_conv_bias=True, use_bias=False,
                                   layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    torch.manual_seed(0)
    ref = transformers.MambaForCausalLM(cfg).eval()
    _load_reference(ours, ref, "mamba")
    tokens = _tokens(97, length=24)
    with torch.no_grad():
        _close(ours(tokens), ref(tokens).logits)


def test_clip_vit_b_32_computes_transformers_clip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """CLIPConfig's defaults beside the dims (quick GELU, LayerNorm eps 1e-5, pre-LayerNorm of the image tower,
    the text pooled at the highest token id, as transformers does with eos_token_id 2): logits_per_image."""
    transformers = pytest.importorskip("transformers")
    ours = _preset_module(*TINY_CLIP)
    cfg = tiny_clip_config()
    torch.manual_seed(0)
    ref = transformers.CLIPModel(cfg).eval()
    _load_reference(ours, ref, "clip", saved=tmp_path)
    g = torch.Generator().manual_seed(1)
    image, tokens = torch.randn(3, 3, 32, 32, generator=g), _tokens(97, length=12, batch=3)
    with torch.no_grad():
        _close(ours(image, tokens), ref(input_ids=tokens, pixel_values=image).logits_per_image)


# preset -> the test (module::function) that compares its function with the reference implementation it names
FUNCTION_TESTS = {
    "gpt2": "test_reference_models::test_gpt2_computes_transformers_gpt2",
    "llama_small": "test_reference_models::test_llama_small_computes_transformers_llama",
    "bert_base": "test_reference_models::test_bert_base_computes_transformers_bert",
    "clip_vit_b_32": "test_reference_models::test_clip_vit_b_32_computes_transformers_clip",
    "layoutlm_base": "test_reference_models::test_layoutlm_base_computes_transformers_layoutlm",
    "mixtral_8x7b": "test_reference_models::test_mixtral_presets_compute_transformers_mixtral",
    "mixtral_tiny": "test_reference_models::test_mixtral_presets_compute_transformers_mixtral",
    "mamba_130m": "test_reference_models::test_mamba_130m_computes_transformers_mamba",
    "convnext_tiny": "test_reference_models::test_convnext_computes_what_torchvision_computes",  # torchvision
    "resnet18": "test_reference_models::test_resnet_computes_what_torchvision_computes",  # torchvision
    "resnet50": "test_reference_models::test_resnet_computes_what_torchvision_computes",  # torchvision
    "t5_small": "test_numeric::test_t5_computes_transformers_t5",
    "whisper_tiny": "test_numeric::test_whisper_computes_transformers_whisper",
    "musicgen_small": "test_audiolm::test_small_musicgen_computes_transformers_musicgen",
    "detr_r50": "test_detection::test_detr_computes_transformers_detr",
    "maskformer_r50": "test_segmentation::test_maskformer_r50_computes_transformers_maskformer",
    "sd15": "test_diffusion::test_unet_computes_diffusers_unet",  # diffusers, where installed
    # the preset sets only dims: the family at small dims, with torchvision-layout weights (from transformers' ViT,
    # eps 1e-6 as torchvision's), gives the reference outputs within 1e-4
    "vit_b_16": "test_weights::test_reference_checkpoint_gives_the_reference_outputs",
    # torchvision.models.video's layout, rebuilt in the test (torchvision does not import here): the same logits
    "r2plus1d_18": "test_yaml_families::test_video_resnet_computes_the_reference",
    "r3d_18": "test_yaml_families::test_video_resnet_computes_the_reference",
}
# presets that name a reference whose function is not compared yet (their parameter counts are): the open list
COUNT_ONLY: set[str] = set()
# presets that name no reference implementation (paper dims, or a small configuration)
NO_REFERENCE = {"yolo_s", "yolo_n", "ldm_tiny", "tft_electricity", "rag_small", "divided_base", "latte_xl",
                "vlm_small"}


def test_every_preset_is_classified_and_its_function_test_exists() -> None:
    """A new preset must say whether it names a reference, and a preset that does names its function test."""
    import importlib

    from test_presets import stdlib_presets

    presets = set(stdlib_presets())
    assert not FUNCTION_TESTS.keys() & COUNT_ONLY and not (FUNCTION_TESTS.keys() | COUNT_ONLY) & NO_REFERENCE
    assert presets == FUNCTION_TESTS.keys() | COUNT_ONLY | NO_REFERENCE
    for target in FUNCTION_TESTS.values():
        module, function = target.split("::")
        assert callable(getattr(importlib.import_module(module), function)), target


# ------------------------------------------------------------------ ResNet: torchvision's function, wide members
WIDE_RESNET50_2 = 68_883_240  # torchvision's model documentation (wide_resnet50_2)


def _resnet(width: int, depths: list[int], unit: str, expansion: int, stem: int | None = None, image: int = 224,
            classes: int = 1000) -> str:
    stem_field = f"; stem_width = {stem}" if stem is not None else ""
    return f"""import std.vision
model r {{
  modality image -> label
  task classification {{ num_classes = {classes} }}
  constraints {{ image_size = {image} }}
  architecture vision.resnet {{
    width = {width}; depths = {depths}; unit = {unit}; expansion = {expansion}{stem_field}
  }}
}}"""


def test_wide_resnet_has_its_own_stem_width() -> None:
    """Wide ResNet-50-2 (torchvision wide_resnet50_2): a 64-channel stem beside bottlenecks twice as wide as
    ResNet-50's (width 128, expansion 2: the same outputs, 256 to 2048 channels). Without torchvision: the
    published count, from the compiler and from the generated module; with it, torchvision's too."""
    comp, mod = build(_resnet(128, [3, 4, 6, 3], "bottleneck", 2, stem=64))
    with torch.device("meta"):
        ours = mod.build_model()
    assert comp.graph.param_count() == _count(ours) == WIDE_RESNET50_2
    assert tuple(ours.encoder.conv1.weight.shape) == (64, 3, 7, 7)
    tv = _torchvision()
    with torch.device("meta"):
        assert _count(tv.wide_resnet50_2()) == WIDE_RESNET50_2


@pytest.mark.parametrize("preset,unit,expansion,stem", [("resnet18", "basic_block", 1, None),
                                                        ("resnet50", "bottleneck", 4, None),
                                                        ("wide_resnet50_2", "bottleneck", 2, 8)])
def test_resnet_computes_what_torchvision_computes(preset: str, unit: str, expansion: int, stem: int | None) -> None:
    """torchvision's ResNet at width 8 (16 for the wide one, its stem 8), one block per stage, 64 x 64 images: its
    state (weights and running statistics, perturbed) copied tensor by tensor in order, the same logits in eval
    mode. Skipped where torchvision does not import (beside the CPU build of torch 2.13 it does not)."""
    _torchvision()
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    block = BasicBlock if unit == "basic_block" else Bottleneck
    wide = stem is not None
    torch.manual_seed(0)
    ref = ResNet(block, [1, 1, 1, 1], num_classes=10, width_per_group=128 if wide else 64).eval()
    # scale torchvision's 64-channel design down by 8: rebuild with inplanes 8 (torchvision fixes the stem at 64)
    ref.inplanes = 8
    ref.conv1 = torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False)
    ref.bn1 = torch.nn.BatchNorm2d(8)
    ref.layer1, ref.layer2 = ref._make_layer(block, 8, 1), ref._make_layer(block, 16, 1, stride=2)
    ref.layer3, ref.layer4 = ref._make_layer(block, 32, 1, stride=2), ref._make_layer(block, 64, 1, stride=2)
    ref.fc = torch.nn.Linear(64 * block.expansion, 10)
    ref.eval()
    _, mod = build(_resnet(16 if wide else 8, [1, 1, 1, 1], unit, expansion, stem=stem, image=64, classes=10))
    ours = mod.build_model().eval()
    mine, theirs = list(ours.state_dict().values()), list(ref.state_dict().items())
    assert [tuple(t.shape) for t in mine] == [tuple(t.shape) for _, t in theirs]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for a, (key, b) in zip(mine, theirs):
            if key.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif b.is_floating_point():
                b.add_(0.05 * torch.randn(b.shape, generator=g))
            a.copy_(b)
        x = torch.randn(2, 3, 64, 64, generator=g)
        err = (ours(x) - ref(x)).abs().max().item()
    assert err < 1e-4, err


# ------------------------------------------------------------------ family parameters in the ONNX backend
def _onnx_logits(comp, model, tmp_path, tokens):  # type: ignore[no-untyped-def]
    """The ONNX model of `comp` with `model`'s weights, run by onnxruntime on `tokens`."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx_ir")
    from metagen_backends.onnx import emit as emit_onnx
    from metagen_backends.onnx.weights import import_weights

    for name, data in emit_onnx(comp).items():
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    path = import_weights(tmp_path, model.state_dict(), tmp_path / "trained.onnx")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"text": tokens.numpy()})[0]


def _decoder(fields: str):  # type: ignore[no-untyped-def]
    src = ("import std.transformer\nmodel p {\n  modality text -> text\n  task generation\n  architecture "
           f"transformer.decoder {{ vocab = 97; context = 64; layers = 1; d_model = 64; heads = 2; {fields} }}\n}}\n")
    comp = compile_source(SourceFile("fields.msl", src))
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.items]
    return comp


def test_relu6_activation_in_pytorch_and_onnx(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`relu6` (MobileNet's min(max(0, x), 6)) as a family's activation (here an MLP's `act`): the generated
    module clips at 0 and 6, and the ONNX model (Clip) gives the same logits with the same weights."""
    from conftest import load_module

    comp = _decoder("mlp = gelu_mlp(act = relu6)")
    code = emit(comp)["model.py"]
    assert "F.relu6(" in code
    (tmp_path / "model.py").write_text(code)
    model = load_module(tmp_path / "model.py", "relu6_model").build_model().eval()
    mlp = model.backbone.h[0].mlp
    with torch.no_grad():
        mlp.c_fc.weight.mul_(400.0)  # pre-activations well past 6 and below 0
        pre, post = [], []
        mlp.c_fc.register_forward_hook(lambda m, i, o: pre.append(o))
        mlp.c_proj.register_forward_hook(lambda m, i, o: post.append(i[0]))
        tokens = _tokens(97, length=16)
        logits = model(tokens)
    assert (pre[0] > 6).any() and (pre[0] < 0).any()
    assert torch.equal(post[0], pre[0].clamp(0.0, 6.0))
    assert float(abs(_onnx_logits(comp, model, tmp_path, tokens) - logits.numpy()).max()) < 1e-4


def test_rope_theta_and_scaling_in_onnx(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The rotary base and linear scaling reach the ONNX model: its logits equal the PyTorch module's, and differ
    from a model with the defaults (so the test sees them)."""
    from conftest import load_module

    tokens = _tokens(97, length=48)
    out = {}
    for fields in ("rope_theta = 500000.0; rope_scaling = 4.0", ""):
        comp = _decoder(fields)
        folder = tmp_path / str(len(out))
        folder.mkdir()
        (folder / "model.py").write_text(emit(comp)["model.py"])
        torch.manual_seed(0)
        model = load_module(folder / "model.py", f"rope_model_{len(out)}").build_model().eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn(p.shape))
            logits = model(tokens).numpy()
        assert float(abs(_onnx_logits(comp, model, folder, tokens) - logits).max()) < 1e-4
        out[fields] = logits
    assert float(abs(out[""] - out["rope_theta = 500000.0; rope_scaling = 4.0"]).max()) > 1e-2


def test_linear_rope_scaling_computes_transformers_llama() -> None:
    """`rope_scaling` (positions divided by it) against LlamaForCausalLM with rope_type `linear`, rotary base 5e5
    (LLaMA 3's), past the trained context; the ONNX lowering divides the same float32 frequencies."""
    transformers = pytest.importorskip("transformers")
    ours = _preset_module("std.transformer", "transformer.decoder { vocab = 97; context = 64; layers = 2; "
                          "d_model = 64; heads = 4; kv_heads = 2; rope_theta = 500000.0; rope_scaling = 4.0 }")
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=False,
                                   rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 500000.0})
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(cfg).eval()
    _load_reference(ours, ref, "llama")
    tokens = _tokens(97, length=48)
    with torch.no_grad():
        _close(ours(tokens), ref(tokens).logits)
