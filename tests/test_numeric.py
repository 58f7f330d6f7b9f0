"""Numeric checks that run the generated code: parameter counts, FLOPs, forward/loss/backward,
causality, and the presets against the reference implementations' published counts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from conftest import EXAMPLES, ROOT, load_module
from metagen_backends.pytorch.weights.runtime import load_checkpoint
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from metagen_compiler.cli import main

# Small sizes per family, so every example also runs forward and backward on CPU.
SMALL = {
    "std.transformer.decoder": {"vocab": 97, "context": 16, "layers": 2, "d_model": 64, "heads": 2, "kv_heads": 2},
    "std.vision.vit": {"image_size": 32, "patch_size": 8, "layers": 2, "d_model": 64, "heads": 2, "mlp_dim": 128},
    "std.vision.resnet": {"image_size": 64, "width": 8},
    "std.vision.convnext": {"image_size": 64, "width": 8},
    "std.pointcloud.pointnet": {"points": 64, "width": 16},
    "std.autoencoder.vae": {"features": 12, "hidden": 16, "latent": 4},
    "std.autoencoder.conv_autoencoder": {"image_size": 16, "width": 8, "latent": 16},
    "std.vision.hybrid": {"image_size": 32, "patch_size": 8, "stem_width": 8, "layers": 2, "d_model": 64, "heads": 2,
                          "mlp_dim": 128},
    "parallel_decoder": {"vocab": 97, "context": 16, "layers": 2, "d_model": 128, "heads": 1},
    "std.transformer.encoder": {"vocab": 97, "context": 16, "layers": 2, "d_model": 64, "heads": 2, "mlp_dim": 128},
    "std.tabular.mlp": {"hidden": 32, "layers": 1},
    "std.multimodal.clip": {"image_size": 32, "patch_size": 8, "vision_layers": 2, "vision_width": 64,
                            "vision_heads": 2, "vision_mlp": 128, "vocab": 97, "context": 16, "text_layers": 2,
                            "text_width": 64, "text_heads": 2, "text_mlp": 128, "embed_dim": 32},
    # hidden 64 and 32 steps: below that, oneDNN's LSTM workspace is rounded to pages (docs/estimates.md)
    "std.rnn.rnn": {"vocab": 97, "context": 32, "lookback": 32, "d_model": 64, "hidden": 64, "layers": 2},
    "std.ssm.mamba": {"vocab": 97, "context": 16, "layers": 2, "d_model": 64, "d_state": 8, "dt_rank": 4},
    "std.ssm.s4d": {"vocab": 97, "context": 16, "layers": 2, "d_model": 64, "d_state": 8},
    "std.moe.decoder": {"vocab": 97, "context": 16, "layers": 2, "d_model": 64, "heads": 2, "kv_heads": 2, "hidden": 96,
                        "experts": 4},
    "std.graph.gcn": {"nodes": 40, "edges": 120, "features": 12, "hidden": 16, "layers": 1},
    "std.graph.gcn_graph": {"nodes": 40, "edges": 120, "features": 7, "hidden": 16, "layers": 1, "graphs": 4},
    "std.graph.gat_graph": {"nodes": 40, "edges": 120, "features": 7, "hidden": 8, "heads": 2, "layers": 1,
                            "graphs": 4},
    "std.graph.gat": {"nodes": 40, "edges": 120, "features": 12, "hidden": 8, "heads": 2, "layers": 1},
    "std.graph.gat_edge": {"nodes": 40, "edges": 120, "features": 12, "edge_features": 3, "hidden": 8, "heads": 2,
                           "layers": 1},
    "std.graph.gat_graph_edge": {"nodes": 40, "edges": 120, "features": 7, "edge_features": 3, "hidden": 8,
                                 "heads": 2, "layers": 1, "graphs": 4},
    "std.rl.mlp_agent": {"hidden": 16, "layers": 1},
    "std.rl.gaussian_agent": {"hidden": 16, "layers": 1},
    "std.rl.nature_cnn": {"image_size": 36, "hidden": 32, "num_actions": 6},
    "std.rl.impala_cnn": {"image_size": 24, "width": 4, "hidden": 32, "num_actions": 6},
    "std.document.layoutlm": {"vocab": 97, "context": 16, "coords": 64, "layers": 2, "d_model": 64, "heads": 2,
                              "mlp_dim": 128},
    "std.threed.text_to_points": {"vocab": 97, "context": 16, "points": 32, "text_layers": 1, "layers": 2,
                                  "d_model": 64, "heads": 2, "mlp_dim": 128},
    "std.videodiffusion.latte": {"frames": 4, "image_size": 8, "patch_size": 2, "layers": 2, "d_model": 64, "heads": 2,
                                 "mlp_dim": 128, "vocab": 97, "context": 16, "text_layers": 1},
    "std.rl.world_model": {"hidden": 16, "layers": 1},
    "std.recsys.two_tower": {"num_users": 50, "num_items": 40, "embedding_dim": 16, "hidden": 16, "layers": 1,
                             "output_dim": 8, "ranking_hidden": 16},
    "std.seq2seq.t5": {"vocab": 97, "context": 16, "layers": 2, "decoder_layers": 2, "d_model": 64, "heads": 2,
                       "d_kv": 32, "d_ff": 96, "buckets": 8, "max_distance": 12},
    "std.diffusion.unet": {"image_size": 16, "base": 32, "layers_per_block": 1, "heads": 2, "vocab": 97,
                           "text_layers": 1, "text_width": 32, "text_heads": 2, "text_mlp": 64},
    "std.seq2seq.whisper": {"vocab": 97, "samples": 12800, "context": 16, "source_positions": 40, "layers": 2,
                            "decoder_layers": 2, "d_model": 64, "heads": 2, "ffn": 96},
    "std.vlm.vlm": {"image_size": 32, "patch_size": 8, "vision_layers": 1, "vision_width": 64, "vision_heads": 2,
                    "vision_mlp": 128, "vocab": 97, "context": 16, "layers": 2, "d_model": 128, "heads": 2,
                    "kv_heads": 1},
    "std.fusion.early": {"image_size": 32, "patch_size": 8, "vocab": 97, "context": 16, "layers": 2, "d_model": 64,
                         "heads": 2, "mlp_dim": 128},
    "std.fusion.cross": {"image_size": 32, "patch_size": 8, "vocab": 97, "context": 16, "image_layers": 1, "layers": 2,
                         "d_model": 64, "heads": 2, "mlp_dim": 128},
    "std.fusion.late": {"image_size": 32, "patch_size": 8, "vocab": 97, "context": 16, "image_layers": 1,
                        "text_layers": 2, "d_model": 64, "heads": 2, "mlp_dim": 128, "hidden": 32},
    "std.video.divided": {"frames": 4, "image_size": 32, "tubelet": 2, "patch_size": 8, "layers": 2, "d_model": 64,
                          "heads": 2, "mlp_dim": 128},
    "std.detection.yolo": {"image_size": 64, "width": 8, "depth": 1},
    "std.detection.detr": {"image_size": 64, "width": 8, "depths": (1, 1, 1, 1), "d_model": 64, "heads": 2, "ffn": 128,
                           "layers": 2, "decoder_layers": 2, "num_queries": 10},
    "std.audiolm.musicgen": {"codebooks": 3, "codebook_size": 50, "context": 12, "layers": 2, "d_model": 64, "heads": 2,
                             "ffn_dim": 96},
    "std.rag.fid_rag": {"vocab": 97, "context": 8, "passage_length": 12, "num_passages": 5, "top_k": 3,
                        "retriever_context": 16, "retriever_layers": 1, "retriever_d_model": 32, "retriever_heads": 2,
                        "retriever_mlp": 64, "layers": 2, "decoder_layers": 2, "d_model": 64, "heads": 2, "d_kv": 32,
                        "d_ff": 96, "buckets": 8, "max_distance": 12},
    "std.forecast.tft": {"features": 3, "lookback": 12, "horizon": 5, "d_model": 64, "heads": 4},
    "std.segmentation.maskformer": {"image_size": 64, "width": 8, "depths": (1, 1, 1, 1), "features": 32,
                                    "mask_dim": 32, "d_model": 64, "heads": 2, "ffn": 128, "decoder_layers": 2,
                                    "num_queries": 10},
    "std.autoencoder.autoencoder": {"features": 12, "hidden": 16, "latent": 4},
    "std.autoencoder.conv_vae": {"image_size": 16, "width": 8, "latent": 16},
    # the YAML tool's family/modality pairs (tests/test_yaml_families.py)
    "std.videocnn.resnet3d": {"frames": 4, "image_size": 32, "width": 8, "depths": (1, 1, 1, 1)},
    "std.hybrid.conv_decoder": {"vocab": 97, "context": 16, "layers": 2, "d_model": 64, "heads": 2, "kv_heads": 2},
    "std.hybrid.audio": {"samples": 3200, "n_mels": 16, "source_positions": 11, "layers": 2, "d_model": 64, "heads": 2,
                         "mlp_dim": 128},
    **{f"std.hybrid.{f}": {"image_size": 32, "patch_size": 8, "stem_width": 8, "vocab": 97, "context": 16,
                           "samples": 3200, "n_mels": 16, "source_positions": 11, "frames": 4, "layers": 2,
                           "d_model": 64, "heads": 2, "mlp_dim": 128} for f in ("fusion", "fusion3")},
    "std.graphtransformer.gps": {"nodes": 40, "edges": 120, "features": 12, "layers": 2, "d_model": 32, "heads": 2,
                                 "mlp_dim": 64},
    "std.graphtransformer.gps_graph": {"nodes": 40, "edges": 120, "features": 7, "layers": 2, "d_model": 32,
                                       "heads": 2, "mlp_dim": 64, "graphs": 4},
    "std.pointtransformer.pct": {"points": 64, "layers": 2, "d_model": 32, "heads": 2, "mlp_dim": 64},
    "std.tabtransformer.ft_transformer": {"layers": 2, "d_model": 32, "heads": 2, "mlp_dim": 42},
}

REFERENCE_PARAMS = {  # published counts of the reference implementations
    "gpt2": 124_439_808,  # transformers GPT2LMHeadModel (tied head)
    "vit_b_16": 86_567_656,  # torchvision vit_b_16
    "resnet50": 25_557_032,  # torchvision resnet50
    "bert_base": 109_482_240,  # transformers BertModel (with its pooler)
    "bert_squad": 108_893_186,  # transformers BertForQuestionAnswering (no pooler; qa_outputs)
    "clip_vit_b_32": 151_277_313,  # transformers CLIPModel (openai/clip-vit-base-patch32)
    "convnext_tiny": 28_589_128,  # torchvision convnext_tiny
    "mamba_lm": 129_135_360,  # transformers MambaForCausalLM, state-spaces/mamba-130m (tied head)
    "t5_small": 60_506_624,  # transformers T5Model / T5ForConditionalGeneration, t5-small (tied head)
    # diffusers UNet2DConditionModel of SD 1.5 (859,520,964) + CLIPTextModel ViT-L/14 (123,060,480)
    "latent_diffusion": 982_581_444,
    "whisper_tiny": 37_760_640,  # transformers WhisperModel, openai/whisper-tiny (its frozen sinusoidal table counted)
    "musicgen_small": 318_871_552,  # transformers MusicgenForCausalLM (musicgen-small decoder) less its cross-attention
    # transformers DPRQuestionEncoder + DPRContextEncoder (4 layers, d 256, vocab 32128: 11,515,904 each) +
    # T5ForConditionalGeneration t5-small (60,506,624)
    "rag_fid": 83_538_432,
    # transformers MaskFormerForInstanceSegmentation, ResNet-50 ResNetConfig backbone, 133 and 80 labels
    "maskformer_panoptic": 41_303_494,
    "maskformer_instance": 41_289_873,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("out")
    result = {}
    for path in EXAMPLES:
        assert main([str(path), "-o", str(out)]) == 0
    for d in sorted(out.iterdir()):
        report = json.loads((d / "report.json").read_text())
        result[d.name] = (load_module(d / "model.py", f"gen_{d.name}"), report)
    return result


def _small(mod, report):  # type: ignore[no-untyped-def]
    over = SMALL[report["family"]]
    cfg = dataclasses.replace(mod.Config(), **{k: v for k, v in over.items() if hasattr(mod.Config(), k)})
    if hasattr(cfg, "kv_heads") and cfg.kv_heads > cfg.heads:
        cfg = dataclasses.replace(cfg, kv_heads=cfg.heads)
    return mod.build_model(cfg)


def test_every_example_was_built(built) -> None:  # type: ignore[no-untyped-def]
    assert len(built) == len(EXAMPLES)


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_param_count_equals_report(built, name) -> None:  # type: ignore[no-untyped-def]
    mod, report = _by_file(built, name)
    with torch.device("meta"):
        model = mod.build_model()
    assert sum(p.numel() for p in model.parameters()) == report["params"]


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_flops_equal_flop_counter(built, name) -> None:  # type: ignore[no-untyped-def]
    mod, report = _by_file(built, name)
    with torch.device("meta"):
        model = mod.build_model().eval()  # inference at batch 1: BatchNorm over (1, C) trains on no statistics
        inputs = mod.example_inputs(model)
        with FlopCounterMode(display=False) as fc:
            model(*inputs)
    assert fc.get_total_flops() == report["flops_forward"]


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_forward_loss_backward_small(built, name) -> None:  # type: ignore[no-untyped-def]
    check_small(*_by_file(built, name))


def check_small(mod, report) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """At the family's SMALL size: a finite scalar loss, a gradient for every trainable parameter, the task's
    metrics (finite scalars) and outputs of the task's shapes. Returns what it measured."""
    model = _small(mod, report)
    batch = mod.example_batch(model, batch_size=2)
    loss = model.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    metrics = model.metrics(batch)
    assert sorted(metrics) == sorted(report["task"]["metrics"])
    assert all(v.ndim == 0 and torch.isfinite(v) for v in metrics.values()), metrics
    out = model(*mod.example_inputs(model, batch_size=2))
    c, task = model.config, report["task"]["name"]
    expected = {
        "generation": lambda: ((2, c.codebooks, c.context, c.codebook_size) if hasattr(c, "codebooks")  # codec LM
                               else (2, c.context, c.vocab)),
        "speech_recognition": lambda: (2, c.context, c.vocab),
        "classification": lambda: (2, c.num_classes),
        "sequence_labeling": lambda: (2, c.context, c.num_classes),
        "embedding": lambda: (2, c.d_model),
        "time_series_forecast": lambda: (2, c.horizon, c.features),
        "semantic_segmentation": lambda: (2, c.num_classes, *(2 * [getattr(c, "mask_size", c.image_size)])),
        "node_classification": lambda: (c.nodes, c.num_classes),  # one graph: a row per node, no batch
        "link_prediction": lambda: (c.nodes, c.embedding_dim),
        "graph_classification": lambda: (c.graphs, c.num_classes),
        "value_based": lambda: (2, c.num_actions),
        "ranking": lambda: (2,),
        "question_answering": lambda: (2, c.context, 2),
        "document_qa": lambda: (2, c.context, 2),
        "shape_generation": lambda: (2, c.points, 3),
        "multimodal_classification": lambda: (2, c.num_classes),
        "multimodal_question_answering": lambda: (2, c.num_classes),
        "multimodal_generation": lambda: (2, c.context, c.vocab),
        "multimodal_retrieval": lambda: (2, 2),  # every image against every text of the batch
        "regression": lambda: (2, getattr(c, "outputs", 1)),
    }
    gaussian = hasattr(c, "action_dim")  # continuous actions: a Gaussian policy's mean and log std
    several = {  # heads of several tensors
        "policy_gradient": lambda: [(2, c.action_dim)] * 2 if gaussian else (2, c.num_actions),
        "actor_critic": lambda: ([(2, c.action_dim), (2, c.action_dim), (2, 1)] if gaussian
                                 else [(2, c.num_actions), (2, 1)]),
        "model_based": lambda: [(2, c.features), (2, 1), (2, 1)],
        "recommendation": lambda: [(2, c.output_dim), (2, c.output_dim)],
        "retrieval_generation": lambda: [(2, c.context, c.vocab), (2, c.num_passages)],
        "instance_segmentation": lambda: [(2, c.num_queries, c.num_classes + 1),
                                          (2, c.num_queries, c.image_size // 4, c.image_size // 4)],
        "panoptic_segmentation": lambda: [(2, c.num_queries, c.num_classes + 1),
                                          (2, c.num_queries, c.image_size // 4, c.image_size // 4)],
    }
    if task == "object_detection":  # class logits and boxes per candidate: YOLO's cells of 3 levels, DETR's queries
        logits, boxes = out
        detr = report["family"] == "std.detection.detr"
        n = c.num_queries if detr else sum((c.image_size // s) ** 2 for s in (8, 16, 32))
        assert tuple(logits.shape) == (2, n, c.num_classes + detr) and tuple(boxes.shape) == (2, n, 4)
    elif task in expected:
        assert tuple(out.shape) == expected[task]()
    elif task in several:
        got = [tuple(t.shape) for t in out] if isinstance(out, tuple) else tuple(out.shape)
        assert got == several[task]()
    elif task in ("anomaly_detection", "denoising"):  # the reconstruction, the predicted noise: the input's shape
        assert out.shape == mod.example_inputs(model, batch_size=2)[0].shape
    else:
        raise AssertionError(f"no expected output shape for task {task}")
    outs = out if isinstance(out, tuple) else (out,)
    return {"params_small": sum(p.numel() for p in model.parameters()), "loss": float(loss.detach()),
            "metrics": {k: float(v.detach()) for k, v in metrics.items()}, "outputs": [list(t.shape) for t in outs]}


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_decoders_are_causal(built, name) -> None:  # type: ignore[no-untyped-def]
    mod, report = _by_file(built, name)
    if report["task"]["name"] not in ("generation", "speech_recognition"):
        pytest.skip("not a decoder")
    model = _small(mod, report).eval()
    xs = mod.example_inputs(model, batch_size=1)
    names = [i["name"] for i in report["nominal_input"]["inputs"]]
    # an encoder-decoder is causal in its target, a vision-language model in its text
    k = names.index("target") if "target" in names else names.index("text") if "text" in names else 0
    x = xs[k]
    codec = hasattr(model.config, "codebooks")  # codec tokens (B, K, T), logits (B, K, T, V): time is axis 2
    t = x.shape[-1] // 2
    y = x.clone()
    y[0, ..., t:] = (y[0, ..., t:] + 1) % (model.config.codebook_size if codec else model.config.vocab)
    with torch.no_grad():
        a, b = model(*xs), model(*xs[:k], y, *xs[k + 1:])
    if codec:
        a, b = a.transpose(1, 2), b.transpose(1, 2)
    # equal up to float rounding: a mixture of experts without a capacity limit runs each expert on the rows routed
    # to it, and a matmul's rounding may depend on its number of rows, which the later tokens change
    torch.testing.assert_close(a[0, :t], b[0, :t], rtol=0, atol=1e-5)
    assert not torch.allclose(a[0, t:], b[0, t:], rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_presets_equal_reference_counts(built, name) -> None:  # type: ignore[no-untyped-def]
    _mod, report = _by_file(built, name)
    assert report["params"] == REFERENCE_PARAMS[name]


def test_vae_loss_is_reconstruction_plus_beta_kl(built) -> None:  # type: ignore[no-untyped-def]
    """The generated loss() adds the reparameterize module's term: beta * KL(q(z|x) || N(0, I)) per input element
    (summed over the latent dims, averaged over the batch); the same noise reproduces the reconstruction."""
    mod, report = _by_file(built, "vae_tabular")
    model = _small(mod, report).train()
    batch = mod.example_batch(model, batch_size=4)
    x = batch["tabular"]
    torch.manual_seed(5)
    loss = model.loss(batch)
    torch.manual_seed(5)
    recon = model(x)
    with torch.no_grad():
        mean, logvar = model.backbone.to_latent(model.encoder(x)).chunk(2, dim=-1)
    kl = (-0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(-1)).mean()
    cfg = model.config
    assert torch.allclose(loss, torch.nn.functional.mse_loss(recon, x) + cfg.beta * kl / cfg.features, atol=1e-6)
    assert model.backbone.sample.aux_loss > 0
    model.eval()  # inference decodes the mean: deterministic
    assert torch.equal(model(x), model(x)) and torch.allclose(model(x), model.head(mean), atol=1e-6)


def test_tied_head_shares_one_tensor(built) -> None:  # type: ignore[no-untyped-def]
    mod, report = _by_file(built, "gpt2")
    model = _small(mod, report)
    assert model.head.proj.weight is model.encoder.wte.weight


def test_seed_makes_weights_deterministic(built) -> None:  # type: ignore[no-untyped-def]
    mod, report = _by_file(built, "tiny_story")
    a, b = _small(mod, report), _small(mod, report)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


IN_PLACE = ["resnet50", "autoencoder_image", "dqn_atari", "impala_atari", "pointnet", "conv_vae_images",
            "house_prices", "world_model"]


@pytest.mark.parametrize("name", IN_PLACE)
def test_in_place_relu_changes_nothing(built, name, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The generated F.relu(..., inplace=True) against the same file with every relu out of place: the same loss
    and the same gradients, bit for bit (train mode, so autograd's saved tensors are exercised)."""
    mod, report = _by_file(built, name)
    text = Path(mod.__file__).read_text()
    assert "inplace=True" in text
    (tmp_path / "model.py").write_text(text.replace(", inplace=True)", ")"))
    plain = load_module(tmp_path / "model.py", f"plain_{name}")
    results = []
    for m in (mod, plain):
        model = _small(m, report)
        batch = m.example_batch(model, batch_size=2)
        torch.manual_seed(1)  # dropout draws the same masks in both
        loss = model.loss(batch)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]))
    (la, ga), (lb, gb) = results
    assert torch.equal(la, lb) and len(ga) == len(gb) and all(torch.equal(a, b) for a, b in zip(ga, gb))


IN_PLACE_RULES = """msl 1
import std.tabular

block mixed(d: int) {
  input x
  a = x >> relu
  b = x >> linear(d, d) >> relu
  c = x >> dropout(0.1) >> relu
  e = (a + b) >> relu
  return e + c + x
}

family fam(features: int = 8, hidden: int = 32, num_classes: int = 3) {
  encoder tabular = mlp_input(features, hidden)
  backbone = mixed(hidden)
  head classification = linear_head(hidden, num_classes)
}

model inplace_rules {
  modality tabular -> label
  task classification { num_classes = 3 }
  architecture fam
}
"""


def test_relu_in_place_only_on_a_fresh_temporary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """In place: a linear's output, a sum. Out of place: a named tensor read again, and dropout's output (in
    eval mode it is its input itself)."""
    (tmp_path / "m.msl").write_text(IN_PLACE_RULES)
    assert main([str(tmp_path / "m.msl"), "-o", str(tmp_path / "out"), "--backend", "pytorch"]) == 0
    text = (tmp_path / "out" / "inplace_rules" / "model.py").read_text()
    for line in ("a = F.relu(x)  #", "b = F.relu(self.linear(x), inplace=True)  #",
                 "c = F.relu(F.dropout(x, 0.1, self.training))  #", "e = F.relu(a + b, inplace=True)  #"):
        assert line in text, line
    mod = load_module(tmp_path / "out" / "inplace_rules" / "model.py", "gen_inplace_rules")
    model = mod.build_model().eval()
    (x,) = mod.example_inputs(model, batch_size=3)
    h = model.encoder(x)
    before = h.clone()
    with torch.no_grad():
        model.backbone(h)
    assert torch.equal(h, before)  # the block's input is not overwritten


@pytest.mark.parametrize("stem,conv", [("resnet50", True), ("tiny_diffusion", True), ("yolo_detector", True),
                                       ("vit_b_16", False), ("gpt2", False), ("convnext_tiny", False)])
def test_channels_last_where_convolutions_dominate(built, stem, conv) -> None:  # type: ignore[no-untyped-def]
    """build_model() gives channels-last 4-D weights where 2D convolutions are most of the FLOPs, and the
    model computes what the same weights compute in NCHW."""
    mod, report = _by_file(built, stem)
    model = _small(mod, report).eval()
    four_d = [p for p in model.parameters() if p.ndim == 4 and p.shape[2] * p.shape[3] > 1]
    assert four_d or not conv
    cl = [p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in four_d]
    assert all(cl) if conv else not any(cl)
    if conv:
        x = mod.example_inputs(model, batch_size=2)
        with torch.no_grad():
            a = model(*x)
            b = model.to(memory_format=torch.contiguous_format)(*x)
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.allclose(u, v, rtol=1e-4, atol=1e-5)


def _by_file(built, stem):  # type: ignore[no-untyped-def]
    text = (ROOT / "examples" / f"{stem}.msl").read_text()
    import re

    name = re.search(r"^model\s+(\w+)", text, re.MULTILINE).group(1)
    return built[name]


def _shapes(model):  # type: ignore[no-untyped-def]
    return sorted(tuple(p.shape) for p in model.parameters())


def test_mamba_130m_equals_transformers(built) -> None:  # type: ignore[no-untyped-def]
    """The preset against transformers' MambaForCausalLM built from the state-spaces/mamba-130m config (no
    download): the same count and the same multiset of parameter shapes."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.MambaConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2,
                                   conv_kernel=4, time_step_rank=48, use_conv_bias=True, use_bias=False,
                                   tie_word_embeddings=True)
    mod, report = _by_file(built, "mamba_lm")
    with torch.device("meta"):
        ref = transformers.MambaForCausalLM(cfg)
        ours = mod.build_model()
    assert sum(p.numel() for p in ref.parameters()) == report["params"] == REFERENCE_PARAMS["mamba_lm"]
    assert _shapes(ours) == _shapes(ref)


def test_t5_computes_transformers_t5(built) -> None:  # type: ignore[no-untyped-def]
    """A small T5 with transformers' weights gives transformers' logits, source and target of different lengths,
    distances past max_distance (log-spaced and clamped buckets); the preset has T5Model's parameter shapes."""
    transformers = pytest.importorskip("transformers")
    mod, report = _by_file(built, "t5_small")
    cfg = dataclasses.replace(mod.Config(), vocab=97, layers=2, decoder_layers=3, d_model=64, heads=4, d_kv=16, d_ff=96,
                              buckets=8, max_distance=12)
    ours = mod.build_model(cfg).eval()
    ref = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=97, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=3, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0,
        feed_forward_proj="relu", tie_word_embeddings=True)).eval()
    load_checkpoint(ours, ref.state_dict(), layout="t5")  # every tensor of ours given, every one of theirs used
    assert ours.encoder_target.shared.weight is ours.encoder_text.shared.weight is ours.head.lm_head.weight  # tied
    g = torch.Generator().manual_seed(0)
    for t, s in ((7, 5), (30, 41)):
        src, tgt = torch.randint(0, 97, (2, t), generator=g), torch.randint(0, 97, (2, s), generator=g)
        with torch.no_grad():
            assert torch.allclose(ours(src, tgt), ref(input_ids=src, decoder_input_ids=tgt).logits, atol=1e-5)
    with torch.device("meta"):
        full = transformers.T5Model(transformers.T5Config())  # the defaults are t5-small's
        preset = mod.build_model()
    assert sum(p.numel() for p in full.parameters()) == report["params"] == REFERENCE_PARAMS["t5_small"]
    assert _shapes(preset) == _shapes(full)


def test_whisper_computes_transformers_whisper(built) -> None:  # type: ignore[no-untyped-def]
    """A small Whisper with transformers' weights, fed the waveform, gives the logits transformers gives for the
    log-mel features of WhisperFeatureExtractor: the in-model frontend is Whisper's."""
    transformers = pytest.importorskip("transformers")
    mod, _report = _by_file(built, "whisper_tiny")
    cfg = dataclasses.replace(mod.Config(), vocab=97, samples=12800, context=16, source_positions=40, layers=2,
                              decoder_layers=3, d_model=64, heads=2, ffn=96)
    ours = mod.build_model(cfg).eval()
    ref = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
        vocab_size=97, d_model=64, encoder_layers=2, decoder_layers=3, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=96, decoder_ffn_dim=96, num_mel_bins=80, max_source_positions=40,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)).eval()
    load_checkpoint(ours, ref.state_dict(), layout="whisper")  # every tensor of ours given, every one of theirs used
    assert ours.head.proj.weight is ours.encoder_target.embed_tokens.weight  # tied
    g = torch.Generator().manual_seed(0)
    wave, tokens = torch.randn(2, 12800, generator=g), torch.randint(0, 97, (2, 9), generator=g)
    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    feats = extractor(list(wave.numpy()), sampling_rate=16000, return_tensors="pt", padding=False).input_features
    with torch.no_grad():
        assert torch.allclose(ours(wave, tokens), ref(input_features=feats, decoder_input_ids=tokens).logits, atol=1e-5)


def test_whisper_tiny_equals_transformers(built) -> None:  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    _mod, report = _by_file(built, "whisper_tiny")
    cfg = transformers.WhisperConfig(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                                     decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536,
                                     vocab_size=51865, num_mel_bins=80, max_source_positions=1500,
                                     max_target_positions=448)
    with torch.device("meta"):
        ref = transformers.WhisperModel(cfg)
    assert sum(p.numel() for p in ref.parameters()) == report["params"] == REFERENCE_PARAMS["whisper_tiny"]


def test_question_answering_metrics_score_the_best_span(built) -> None:  # type: ignore[no-untyped-def]
    """exact_match and span_f1 of the best span with start <= end, on logits made to pick known spans."""
    mod, report = _by_file(built, "bert_squad")
    model = _small(mod, report).eval()
    t = 10
    logits = torch.zeros(3, t, 2)
    for i, (s, e) in enumerate([(2, 4), (5, 5)]):
        logits[i, s, 0] = logits[i, e, 1] = 5.0
    # the third: the best end (3) lies before the best start (7); the best valid span is (7, 7), scoring 5 + 1
    logits[2, 7, 0], logits[2, 3, 1], logits[2, 7, 1] = 5.0, 4.0, 1.0
    model.forward = lambda *a: logits  # type: ignore[method-assign]
    batch = {"text": torch.zeros(3, t, dtype=torch.long), "start": torch.tensor([2, 4, 7]),
             "end": torch.tensor([4, 6, 8])}
    m = model.metrics(batch)
    # span 1 exact; span 2 (5, 5) vs gold (4, 6): overlap 1, precision 1, recall 1/3, F1 0.5
    assert float(m["exact_match"]) == pytest.approx(1 / 3)
    f1_third = 2 * 1 * 0.5 / 1.5  # predicted (7, 7) vs gold (7, 8)
    assert float(m["span_f1"]) == pytest.approx((1 + 0.5 + f1_third) / 3)


def test_vqa_soft_score_loss_and_metrics(built) -> None:  # type: ignore[no-untyped-def]
    """VQA's soft-score loss (BCE per answer, summed over answers, averaged over questions), vqa_score (the
    predicted answer's soft score) and exact_match, on logits made to pick known answers; and example_batch's
    scores are min(votes / 3, 1) of ten annotators."""
    mod, report = _by_file(built, "vqa_cross")
    model = _small(mod, report).eval()
    scores = torch.tensor([[0.0, 1.0, 1 / 3, 0.0], [2 / 3, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1 / 3]])
    logits = torch.tensor([[0.0, 3.0, 0.0, 0.0], [4.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    model.forward = lambda *a: logits  # type: ignore[method-assign]
    batch = {"image": torch.zeros(3), "text": torch.zeros(3), "answer_scores": scores}
    m = model.metrics(batch)
    assert float(m["vqa_score"]) == pytest.approx((1 + 2 / 3 + 0) / 3)  # picks answers 1, 0, 0
    assert float(m["exact_match"]) == pytest.approx(1 / 3)
    bce = -(scores * F.logsigmoid(logits) + (1 - scores) * F.logsigmoid(-logits))
    assert float(model.loss(batch)) == pytest.approx(float(bce.sum() / 3), rel=1e-6)
    real = mod.example_batch(_small(mod, report), batch_size=4)["answer_scores"]
    assert real.shape == (4, model.config.num_classes)
    assert torch.allclose(real * 3, (real * 3).round(), atol=1e-5) and float(real.max()) <= 1.0
    assert float((real * 3).clamp(max=3).sum(-1).max()) <= 10 + 1e-5  # ten votes at most per question


def test_chamfer_loss_and_f_score(built) -> None:  # type: ignore[no-untyped-def]
    """The generated Chamfer loss and F-score on clouds with known distances."""
    mod, report = _by_file(built, "text_to_points")
    model = _small(mod, report).eval()
    target = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    for pred, chamfer, f in ((target.clone(), 0.0, 1.0),
                             # each predicted point 0.5 from its nearest target point: 0.25 + 0.25, none within 0.1
                             (target + torch.tensor([0.0, 0.5, 0]), 0.5, 0.0),
                             # both predictions on the first target: predictions -> 0; targets -> (0 + 1) / 2;
                             # precision 1, recall 1/2
                             (torch.tensor([[[0.0, 0, 0], [0, 0, 0]]]), 0.5, 2 * 1.0 * 0.5 / 1.5)):
        model.forward = lambda *a, p=pred: p  # type: ignore[method-assign, misc]
        batch = {"text": torch.zeros(1, 4, dtype=torch.long), "points": target}
        assert float(model.loss(batch)) == pytest.approx(chamfer)
        m = model.metrics(batch)
        assert float(m["chamfer_distance"]) == pytest.approx(chamfer) and float(m["f_score"]) == pytest.approx(f)
