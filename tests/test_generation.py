"""generate() of the compiled models that decode token by token (backends/pytorch/runtime/generation.py, copied
beside model.py; which models: metagen_backends.decoding, the rule the ONNX backend's model_with_past.onnx follows
too): the key-value cache and the recurrent states give the tokens of re-running the whole sequence, for every
generating example; greedy and beam-search generation equal transformers' generate() token for token with the same
weights (GPT-2, LLaMA with grouped-query attention, Mixtral, Mamba; T5 and Whisper with the source encoded once);
padded batches give each prompt's tokens alone; seeded sampling repeats; the ONNX decoder step agrees with the
PyTorch cache and states; and the logits filters (top-k, top-p, repetition penalty) and eos stopping on the runtime
module itself. No network."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import EXAMPLES, ROOT, compile_path, load_module
from metagen_backends.pytorch import emit
from metagen_backends.pytorch.runtime import generation as G

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile

_count = iter(range(10**6))

GPT2 = ("std.presets", "gpt2 { vocab = 97; context = 64; layers = 2; d_model = 64; heads = 2 }")
LLAMA = ("std.presets", "llama_small { vocab = 97; context = 64; layers = 2; d_model = 64; heads = 4; kv_heads = 2 }")
MIXTRAL = ("std.moe", ("moe.mixtral_tiny { vocab = 97; context = 64; layers = 2; d_model = 64; heads = 4; "
                       "kv_heads = 2; hidden = 96 }"))
MAMBA = ("std.ssm", "ssm.mamba_130m { vocab = 97; context = 64; layers = 2; d_model = 64; dt_rank = 4 }")
S4D = ("std.ssm", "ssm.s4d { vocab = 97; context = 64; layers = 2; d_model = 64; d_state = 8 }")


def _folder(comp: Any, tmp: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """The output folder of `comp` (every file the PyTorch backend writes) in `tmp`; model.py and weights.py
    imported by path, as a user's script would (generation.py is found beside model.py)."""
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.items]
    tmp.mkdir(parents=True, exist_ok=True)
    for name, text in emit(comp).items():
        (tmp / name).write_text(text)
    n = next(_count)
    return load_module(tmp / "model.py", f"g_model_{n}"), load_module(tmp / "weights.py", f"g_weights_{n}")


def _preset(tmp: Path, imports: str, arch: str) -> tuple[types.ModuleType, types.ModuleType]:
    src = f"import {imports}\nmodel p {{\n  modality text -> text\n  task generation\n  architecture {arch}\n}}\n"
    return _folder(compile_source(SourceFile("preset.msl", src)), tmp)


def _model(tmp: Path, which: tuple[str, str]) -> Any:
    model, _ = _preset(tmp, *which)
    return model.build_model().eval()


def _prompts(vocab: int = 97, batch: int = 2, length: int = 7, seed: int = 1) -> Any:
    return torch.randint(1, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ the cache
@pytest.mark.parametrize("which", [GPT2, LLAMA, MIXTRAL], ids=["gpt2", "llama", "mixtral"])
def test_cached_greedy_equals_uncached(which: tuple[str, str], tmp_path: Path) -> None:
    """Prefill then one token per step from the cache gives the tokens of running the whole sequence each step
    (learned positions, rotary positions with grouped-query attention, MoE layers)."""
    model = _model(tmp_path, which)
    x = _prompts()
    cached = model.generate(x, max_new_tokens=12)
    full = model.generate(x, max_new_tokens=12, use_cache=False)
    assert cached.shape == (2, 7 + 12)
    assert torch.equal(cached[:, :7], x)  # the prompt, then the new tokens
    assert torch.equal(cached, full)
    assert all(m.kv_cache is None for m in model.modules() if hasattr(m, "kv_cache"))  # detached afterwards
    # the cached logits equal the full forward's at every generated position
    with torch.no_grad():
        ref = model(cached)[:, -13:-1]
        state = G.DecodeState(torch.ones_like(cached, dtype=torch.bool)[:, :7], cached.shape[1])
        with G.cached(model, state):
            steps = [model(cached[:, :7])[:, -1]]
            for t in range(7, cached.shape[1] - 1):
                state.extend(torch.ones(2, 1, dtype=torch.bool))
                steps.append(model(cached[:, t:t + 1])[:, -1])
    assert (torch.stack(steps, 1) - ref).abs().max().item() < 1e-4
    with torch.no_grad(), G.cached(model, G.DecodeState(torch.ones(2, 7), 7), last_only=True):
        last = model(cached[:, :7])  # the head sees the last position only
    assert last.shape == (2, 1, 97) and (last[:, 0] - steps[0]).abs().max().item() < 1e-4


@pytest.mark.parametrize("which", [GPT2, LLAMA, MIXTRAL, MAMBA, S4D], ids=["gpt2", "llama", "mixtral", "mamba", "s4d"])
def test_left_padded_batch_equals_each_prompt_alone(which: tuple[str, str], tmp_path: Path) -> None:
    model = _model(tmp_path, which)
    a, b = _prompts(batch=1, length=9, seed=2)[0], _prompts(batch=1, length=4, seed=3)[0]
    pad = 0
    x = torch.stack((a, torch.cat((torch.full((5,), pad), b))))
    mask = torch.stack((torch.ones(9), torch.cat((torch.zeros(5), torch.ones(4))))).long()
    both = model.generate(x, max_new_tokens=10, attention_mask=mask)
    assert torch.equal(both[0], model.generate(a[None], max_new_tokens=10)[0])
    assert torch.equal(both[1, 5:], model.generate(b[None], max_new_tokens=10)[0])
    assert torch.equal(both, model.generate(x, max_new_tokens=10, attention_mask=mask, use_cache=False))
    # the mask inferred from pad_token_id where none is given
    assert torch.equal(both, model.generate(x, max_new_tokens=10, pad_token_id=pad))


def test_seeded_sampling_repeats(tmp_path: Path) -> None:
    model = _model(tmp_path, GPT2)
    x = _prompts()
    kw = {"max_new_tokens": 16, "do_sample": True, "temperature": 1.5, "top_k": 40, "top_p": 0.95}
    one = model.generate(x, generator=torch.Generator().manual_seed(7), **kw)
    two = model.generate(x, generator=torch.Generator().manual_seed(7), **kw)
    other = model.generate(x, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(one, two) and not torch.equal(one, other)
    torch.manual_seed(3)
    three = model.generate(x, **kw)
    torch.manual_seed(3)
    assert torch.equal(three, model.generate(x, **kw))  # the global seed, where no generator is given


def test_generation_py_beside_model_py(tmp_path: Path) -> None:
    """Decoder LMs get generation.py and generate(); other models neither. model.py imports without it."""
    comp = compile_path(ROOT / "examples" / "gpt2.msl")
    files = emit(comp)
    assert "generation.py" in files and "def generate(self, input_ids" in files["model.py"]
    assert "cache=self.kv_cache" in files["model.py"]
    assert files["generation.py"] == Path(G.__file__).read_text(encoding="utf-8")
    for stem in ("tiny_story", "moe_lm", "mamba_lm", "s4d_lm", "parallel_decoder", "t5_small", "whisper_tiny"):
        assert "generation.py" in emit(compile_path(ROOT / "examples" / f"{stem}.msl"))
    # a mixture of experts with a capacity: a token's experts depend on the other tokens, so no step is exact
    assert "generation.py" not in emit(compile_path(ROOT / "examples" / "switch_lm.msl"))
    bert = compile_source(SourceFile("b.msl", "import std.presets\nmodel b {\n  modality text -> label\n"
                                              "  task classification\n  architecture bert_base\n}\n"))
    files = emit(bert)
    assert "generation.py" not in files and "kv_cache" not in files["model.py"]
    (tmp_path / "model.py").write_text(emit(comp)["model.py"])  # alone: imports, and generate() says what is missing
    m = load_module(tmp_path / "model.py", f"g_alone_{next(_count)}")
    model = m.build_model(m.Config(layers=1, d_model=64, heads=1, vocab=11, context=16))
    with pytest.raises(FileNotFoundError, match="generation.py is missing"):
        model.generate(torch.tensor([[1, 2]]), max_new_tokens=2)


def test_prompt_past_the_context_is_refused(tmp_path: Path) -> None:
    model = _model(tmp_path, GPT2)
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        model.generate(_prompts(length=60), max_new_tokens=5)


# ------------------------------------------------------------------ against transformers
def _hf_case(which: str, tmp: Path) -> tuple[Any, Any]:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    t = transformers
    if which == "gpt2":
        model, w = _preset(tmp / "ours", *GPT2)
        ref = t.GPT2LMHeadModel(t.GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=2, n_positions=64,
                                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    elif which == "llama":
        model, w = _preset(tmp / "ours", *LLAMA)
        ref = t.LlamaForCausalLM(t.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=192,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               max_position_embeddings=64, tie_word_embeddings=False))
    elif which == "mamba":
        model, w = _preset(tmp / "ours", *MAMBA)
        ref = t.MambaForCausalLM(t.MambaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, state_size=16,
                                               expand=2, conv_kernel=4, time_step_rank=4, use_conv_bias=True,
                                               use_bias=False, layer_norm_epsilon=1e-5, tie_word_embeddings=True))
    else:
        model, w = _preset(tmp / "ours", *MIXTRAL)
        ref = t.MixtralForCausalLM(t.MixtralConfig(vocab_size=97, hidden_size=64, intermediate_size=96,
                                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                   max_position_embeddings=64, tie_word_embeddings=False,
                                                   num_local_experts=8, num_experts_per_tok=2))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # off the init, so that every tensor shows in the outputs
        for v in ref.state_dict().values():
            if v.is_floating_point():
                v.add_(0.2 * torch.randn(v.shape, generator=g))
    ref.eval()
    ref.save_pretrained(tmp / "ref")
    torch.manual_seed(0)
    ours = w.load_checkpoint(model.build_model().eval(), tmp / "ref")
    return ours, ref


def _hf_generate(ref: Any, x: Any, mask: Any, n: int) -> Any:
    return ref.generate(x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                        eos_token_id=None)


@pytest.mark.parametrize("which", ["gpt2", "llama", "mixtral", "mamba"])
def test_greedy_equals_transformers_generate(which: str, tmp_path: Path) -> None:
    """Weights saved by transformers' save_pretrained, loaded with the output folder's weights.py: the same
    greedy tokens as transformers' generate(), for one prompt and for a left-padded batch (Mamba: its recurrent
    state, one step per token, with padded positions kept out of the state as transformers' Mamba does)."""
    ours, ref = _hf_case(which, tmp_path)
    x = _prompts(batch=3, length=8, seed=4)
    mask = torch.ones_like(x)
    n = 16
    want = _hf_generate(ref, x, mask, n)
    assert want.shape == (3, 8 + n)
    assert torch.equal(ours.generate(x, max_new_tokens=n), want)
    x[1, :3], mask[1, :3] = 0, 0  # left padding
    x[2, :5], mask[2, :5] = 0, 0
    assert torch.equal(ours.generate(x, max_new_tokens=n, attention_mask=mask), _hf_generate(ref, x, mask, n))


@pytest.mark.parametrize("which", ["gpt2", "mamba"])
def test_beam_search_equals_transformers_generate(which: str, tmp_path: Path) -> None:
    """num_beams with length_penalty and early_stopping, with and without eos (rows finishing at different steps,
    padded after), on a left-padded batch: transformers' beam search, token for token; the cache reordered
    between beams (keys and values, recurrent states) gives the tokens of re-running each beam's sequence."""
    ours, ref = _hf_case(which, tmp_path)
    x = _prompts(batch=3, length=6, seed=9)
    mask = torch.ones_like(x)
    x[2, :2], mask[2, :2] = 0, 0
    greedy = ours.generate(x, max_new_tokens=8, attention_mask=mask)
    eos = [int(greedy[0, 8]), int(greedy[1, 10])]  # tokens the model does produce
    for kw in ({"num_beams": 3}, {"num_beams": 3, "eos_token_id": eos[0]},
               {"num_beams": 4, "eos_token_id": eos, "length_penalty": 0.5, "early_stopping": True},
               {"num_beams": 2, "eos_token_id": eos[1], "length_penalty": 2.0, "early_stopping": "never"}):
        want = ref.generate(x, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
                            **{"eos_token_id": None, **kw})
        got = ours.generate(x, attention_mask=mask, max_new_tokens=10, pad_token_id=0, **kw)
        assert torch.equal(got, want), kw
        assert torch.equal(got, ours.generate(x, attention_mask=mask, max_new_tokens=10, pad_token_id=0,
                                              use_cache=False, **kw)), kw


# ------------------------------------------------------------------ encoder-decoders
def _perturbed(ref: Any, scale: float, skip: str = "") -> Any:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # off the init, so that every tensor shows in the outputs
        for k, v in ref.state_dict().items():
            if v.is_floating_point() and not (skip and skip in k):
                v.add_(scale * torch.randn(v.shape, generator=g))
    return ref.eval()


def _t5_case(tmp: Path) -> tuple[Any, Any]:
    transformers = pytest.importorskip("transformers")
    model, w = _folder(compile_path(ROOT / "examples" / "t5_small.msl"), tmp)
    cfg = model.Config(vocab=97, layers=3, decoder_layers=3, d_model=64, heads=4, d_kv=16, d_ff=96, buckets=8,
                       max_distance=12)
    ref = _perturbed(transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=97, d_model=64, d_kv=16, d_ff=96, num_layers=3, num_decoder_layers=3, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0,
        feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0)), 0.5)
    return w.load_checkpoint(model.build_model(cfg).eval(), ref.state_dict(), layout="t5"), ref


def _whisper_case(tmp: Path) -> tuple[Any, Any]:
    transformers = pytest.importorskip("transformers")
    model, w = _folder(compile_path(ROOT / "examples" / "whisper_tiny.msl"), tmp)
    cfg = model.Config(vocab=97, samples=12800, context=24, source_positions=40, layers=2, decoder_layers=2,
                       d_model=64, heads=2, ffn=96)
    ref = _perturbed(transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
        vocab_size=97, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=96, decoder_ffn_dim=96, num_mel_bins=80, max_source_positions=40,
        max_target_positions=24, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)),
        0.2, skip="embed_positions")
    return w.load_checkpoint(model.build_model(cfg).eval(), ref.state_dict(), layout="whisper"), ref


def _waves() -> Any:
    t = torch.arange(12800) / 16000
    tones = torch.stack([a * torch.sin(2 * torch.pi * f * t) for f, a in ((220, 0.5), (1500, 0.1), (4000, 0.9))])
    return tones + 0.05 * torch.randn(3, 12800, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("which", ["t5", "whisper"])
def test_encoder_decoder_equals_transformers_generate(which: str, tmp_path: Path) -> None:
    """T5 (a padded batch of token ids) and Whisper (waveforms; transformers reads their log-mel features) with
    transformers' weights through weights.py: greedy, with a repetition penalty, with eos, and beam search
    (num_beams, length_penalty, early_stopping) give transformers' generate() tokens: the decoder's start token
    and the new ones. The encoder and the cross-attention keys and values run once (counted), and the cache
    gives the tokens of re-running the whole model each step."""
    transformers = pytest.importorskip("transformers")
    if which == "t5":
        ours, ref = _t5_case(tmp_path)
        source = torch.randint(2, 97, (3, 9), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(source)
        source[1, 6:], mask[1, 6:] = 0, 0  # right padding, as T5's tokenizer pads
        source[2, :4], mask[2, :4] = 0, 0  # and left
        ours_kw: dict[str, Any] = {"attention_mask": mask}
        ref_kw: dict[str, Any] = {"input_ids": source, "attention_mask": mask}
        start, inner, cross_k = 0, ours.backbone.encoder[0].SelfAttention.q, "backbone.decoder.0.EncDecAttention.k"
    else:
        ours, ref = _whisper_case(tmp_path)
        source = _waves()
        feats = transformers.WhisperFeatureExtractor(feature_size=80)(
            list(source.numpy()), sampling_rate=16000, return_tensors="pt", padding=False).input_features
        ours_kw, ref_kw = {"decoder_start_token_id": 1}, {"input_features": feats, "decoder_start_token_id": 1}
        start, inner, cross_k = 1, ours.encoder_audio.conv1, "backbone.layers.0.encoder_attn.k_proj"
        ref.generate = types.MethodType(transformers.GenerationMixin.generate, ref)  # not Whisper's own pipeline
    n = 12

    def theirs(**kw: Any) -> Any:
        return ref.generate(**ref_kw, max_new_tokens=n, do_sample=False, pad_token_id=0, **{"eos_token_id": None, **kw})

    calls = []
    hook = inner.register_forward_hook(lambda *a: calls.append(1))  # a module inside the encoder
    greedy = ours.generate(source, max_new_tokens=n, repetition_penalty=1.3, **ours_kw)
    hook.remove()
    assert len(calls) == 1  # the encoder ran once for 12 decoder steps
    assert cross_k in ours.decoding["once"]  # and so do the cross-attention keys and values
    assert greedy.shape == (3, 1 + n) and bool((greedy[:, 0] == start).all())
    assert torch.equal(greedy, theirs(repetition_penalty=1.3))
    assert torch.equal(greedy, ours.generate(source, max_new_tokens=n, repetition_penalty=1.3, use_cache=False,
                                             **ours_kw))
    eos = [int(greedy[0, 4]), int(greedy[2, 6])]
    for kw in ({}, {"eos_token_id": eos[0]}, {"num_beams": 3}, {"num_beams": 3, "eos_token_id": eos[0]},
               {"num_beams": 4, "eos_token_id": eos, "length_penalty": 0.5, "early_stopping": True},
               {"num_beams": 3, "eos_token_id": eos[1], "length_penalty": 2.0, "early_stopping": "never"}):
        got = ours.generate(source, max_new_tokens=n, pad_token_id=0, **ours_kw, **kw)
        assert torch.equal(got, theirs(**kw)), kw
        if kw.get("num_beams"):
            assert torch.equal(got, ours.generate(source, max_new_tokens=n, pad_token_id=0, use_cache=False,
                                                  **ours_kw, **kw)), kw


def test_padded_source_equals_each_source_alone(tmp_path: Path) -> None:
    """An encoder-decoder's batch of sources of different lengths, padded on either side with attention_mask (or
    the mask inferred from pad_token_id), gives each source's tokens alone."""
    ours, _ = _t5_case(tmp_path)
    a, b = torch.randint(2, 97, (2, 8), generator=torch.Generator().manual_seed(3))
    x = torch.stack((a, torch.cat((b[:5], torch.zeros(3, dtype=torch.long)))))
    mask = (x != 0).long()
    both = ours.generate(x, max_new_tokens=10, attention_mask=mask)
    assert torch.equal(both[0], ours.generate(a[None], max_new_tokens=10)[0])
    assert torch.equal(both[1], ours.generate(b[None, :5], max_new_tokens=10)[0])
    assert torch.equal(both, ours.generate(x, max_new_tokens=10, pad_token_id=0))
    left = torch.stack((a, torch.cat((torch.zeros(3, dtype=torch.long), b[:5]))))
    assert torch.equal(ours.generate(left, max_new_tokens=10, pad_token_id=0), both)
    with pytest.raises(ValueError, match="attention_mask"):
        ours.generate(x, max_new_tokens=2, attention_mask=mask[:, :4])


# ------------------------------------------------------------------ the one rule, every example
# the decoding the rule finds for examples that once disagreed between the backends, and for the encoder-decoders
KNOWN = {"gpt2": "decoder", "parallel_decoder": "decoder", "moe_lm": "decoder", "mamba_lm": "decoder",
         "s4d_lm": "decoder", "switch_lm": None, "t5_small": "encoder_decoder", "whisper_tiny": "encoder_decoder",
         "bert_base": None, "vlm_small": "prefix_decoder"}
# sizes for a generating example whose family tests/test_numeric.py's SMALL does not list
_GENERIC_SMALL = {"vocab": 97, "context": 16, "layers": 2, "decoder_layers": 2, "d_model": 64, "heads": 2,
                  "kv_heads": 2}


def test_the_rule_and_the_onnx_step_agree_on_recurrent_ops() -> None:
    pytest.importorskip("onnx_ir")
    from metagen_backends.decoding import RECURRENT
    from metagen_backends.onnx import export

    assert set(export._RECURRENT) == RECURRENT  # each recurrent op of the rule has a state in model_with_past


@pytest.mark.parametrize("stem", [p.stem for p in EXAMPLES])
def test_every_example_follows_one_rule(stem: str, tmp_path: Path) -> None:
    """generates() (model.py gets generate() and generation.py) and the ONNX backend's supports_cache()
    (model_with_past.onnx) are one rule, metagen_backends.decoding: an example generates exactly where the rule
    finds a decoding, and the ONNX step is written exactly for the decoders among them (an encoder-decoder's step
    is PyTorch's only). Every example that generates, small, gives the same greedy tokens with the cache (keys
    and values, recurrent states, the source computed once) as re-running the whole model each step."""
    pytest.importorskip("onnx_ir")
    from metagen_backends.decoding import decoding
    from metagen_backends.onnx import export
    from metagen_backends.pytorch.runtime import generates
    from test_numeric import SMALL

    comp = compile_path(ROOT / "examples" / f"{stem}.msl")
    assert comp.graph is not None and comp.spec is not None
    d = decoding(comp.graph)
    assert generates(comp) == (d is not None)
    assert export.supports_cache(comp.graph) == (d is not None and d.kind == "decoder")
    if stem in KNOWN:
        assert (d and d.kind) == KNOWN[stem]
    files = emit(comp)
    # (MusicGen's own generate(), a loss method that samples the delay pattern without a cache, is not this one)
    assert ("generation.py" in files) == ('runtime_module("generation")' in files["model.py"]) == (d is not None)
    if d is None:
        return
    module, _ = _folder(comp, tmp_path)
    over = SMALL.get(comp.spec.family.qualname, _GENERIC_SMALL)
    torch.manual_seed(0)
    model = module.build_model(module.Config(**{k: v for k, v in over.items() if hasattr(module.Config(), k)}))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # decisive logits: no near-ties for float differences to flip
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    model.eval()
    kw: dict[str, Any] = {"max_new_tokens": 6}
    if d.kind == "decoder":
        x = _prompts(vocab=model.config.vocab, batch=2, length=5, seed=2)
    else:  # the example's own source inputs (a prefix decoder's: its prefix's, beside 5 tokens of its text)
        inputs = dict(zip(model.decoding["inputs"], module.example_inputs(model, batch_size=2, seed=2), strict=True))
        text = inputs.pop(model.decoding["target"])
        x = text[:, :5] if d.kind == "prefix_decoder" else inputs.pop(next(iter(inputs)))
        kw.update(inputs)
    cached = model.generate(x, **kw)
    assert torch.equal(cached, model.generate(x, use_cache=False, **kw))
    assert cached.shape == (2, (1 if d.kind == "encoder_decoder" else x.shape[1]) + 6)


# ------------------------------------------------------------------ against the ONNX decoder step
def _with_past(which: tuple[str, str], tmp_path: Path, perturb: bool = False) -> tuple[Any, Any, Any, Any, dict]:
    """The preset's model.py model (weights moved off their init by 0.1 * noise when `perturb`), an onnxruntime
    session of its model_with_past.onnx holding those weights, a (2, 6) prompt and the first feed (empty pasts)."""
    np = pytest.importorskip("numpy")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx_ir")
    from metagen_backends.onnx import emit as emit_onnx
    from metagen_backends.onnx.weights import import_weights

    imports, arch = which
    src = f"import {imports}\nmodel p {{\n  modality text -> text\n  task generation\n  architecture {arch}\n}}\n"
    comp = compile_source(SourceFile("preset.msl", src))
    assert not comp.bag.has_errors
    for name, data in emit_onnx(comp).items():
        (tmp_path / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    model = _folder(comp, tmp_path)[0].build_model().eval()
    if perturb:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    sess = ort.InferenceSession(str(import_weights(tmp_path, model.state_dict(), tmp_path / "step.onnx",
                                                   model_file="model_with_past.onnx")),
                                providers=["CPUExecutionProvider"])
    x = _prompts(batch=2, length=6, seed=5)
    feed = {"text": x.numpy()}
    for i in sess.get_inputs()[1:]:
        feed[i.name] = np.zeros([2 if d == "batch" else 0 if d == "past_sequence" else d for d in i.shape], np.float32)
    return np, model, sess, x, feed


@pytest.mark.parametrize("which", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_cache_agrees_with_onnx_model_with_past(which: tuple[str, str], tmp_path: Path) -> None:
    """The same weights in the ONNX backend's model_with_past.onnx: prefill, then one token per step feeding its
    `present` back as `past`, gives the logits and the keys and values of the PyTorch cache (1e-4), and so the
    greedy tokens of generate()."""
    np, model, sess, x, feed = _with_past(which, tmp_path)
    n = 5
    want = model.generate(x, max_new_tokens=n)
    names = [o.name for o in sess.get_outputs()]
    state = G.DecodeState(torch.ones_like(x, dtype=torch.bool), 6 + n)
    ids = x
    with torch.no_grad(), G.cached(model, state):
        attns = [m for m in model.modules() if hasattr(m, "kv_cache")]
        for step in range(n):
            out = sess.run(None, feed)
            ours = model(ids if step == 0 else ids[:, -1:])
            assert np.abs(out[0] - ours.numpy()).max() <= 1e-4
            for i, m in enumerate(attns):  # ours and ONNX's alike (B, kv_heads, S, head_size)
                kv = dict(zip(names, out, strict=True))
                S = m.kv_cache.length
                for ours_t, theirs in ((m.kv_cache.k, kv[f"present.{i}.key"]), (m.kv_cache.v, kv[f"present.{i}.value"])):
                    mine = ours_t[:, :, :S].numpy()
                    assert mine.shape == theirs.shape and np.abs(mine - theirs).max() <= 1e-4
            nxt = torch.from_numpy(out[0][:, -1]).argmax(-1)
            ids = torch.cat((ids, nxt[:, None]), dim=1)
            feed = {"text": nxt[:, None].numpy(), **{k.replace("present", "past"): v for k, v in zip(names[1:], out[1:])}}
            state.extend(torch.ones(2, 1, dtype=torch.bool))
    assert torch.equal(ids, want)


@pytest.mark.parametrize("which", [MAMBA, S4D, MIXTRAL], ids=["mamba", "s4d", "mixtral"])
def test_state_space_and_moe_steps_agree_with_onnx_model_with_past(which: tuple[str, str], tmp_path: Path) -> None:
    """model_with_past.onnx of the decoders the one rule now gives a step (recurrent states: Mamba's convolution
    and scan, S4D's complex state; Mixtral's experts, capacity 0): prefill, then one token per step feeding
    `present` back as `past`, gives the logits of the PyTorch forward over the whole sequence (1e-4) and the greedy
    tokens of generate()."""
    np, model, sess, x, feed = _with_past(which, tmp_path, perturb=True)
    n = 8
    want = model.generate(x, max_new_tokens=n)
    names = [o.name for o in sess.get_outputs()]
    ids = x
    for _ in range(n):
        out = sess.run(None, feed)
        with torch.no_grad():
            ref = model(ids)[:, -out[0].shape[1]:]
        assert np.abs(out[0] - ref.numpy()).max() <= 1e-4
        nxt = torch.from_numpy(out[0][:, -1]).argmax(-1)
        ids = torch.cat((ids, nxt[:, None]), dim=1)
        feed = {"text": nxt[:, None].numpy(), **{k.replace("present", "past"): v for k, v in zip(names[1:], out[1:])}}
    assert torch.equal(ids, want)


# ------------------------------------------------------------------ the runtime module
def test_helpers_are_a_real_module() -> None:
    """model.py's helpers are runtime/helpers.py's definitions (HELPERS holds their text): the module imports;
    its attention and apply_rope with generation.py's cache, over a prompt and then one token, give the causal
    attention and the rotary positions of the whole sequence; runtime_module loads generation.py beside it."""
    from metagen_backends.pytorch.lowering import HELPERS
    from metagen_backends.pytorch.runtime import helpers as H

    assert all(name in vars(H) for name in HELPERS) and "runtime_module" in HELPERS
    q, k, v = torch.randn(3, 2, 5, 8, generator=torch.Generator().manual_seed(0))
    full = H.attention(*H.apply_rope(q, k, 2), v, 2, 2, True)
    state = G.DecodeState(torch.ones(2, 4, dtype=torch.bool), capacity=5)
    cache = G.LayerCache(state)
    first = H.attention(*H.apply_rope(q[:, :4], k[:, :4], 2, cache=cache), v[:, :4], 2, 2, True, cache=cache)
    state.extend(torch.ones(2, 1))
    last = H.attention(*H.apply_rope(q[:, 4:], k[:, 4:], 2, cache=cache), v[:, 4:], 2, 2, True, cache=cache)
    torch.testing.assert_close(torch.cat((first, last), dim=1), full)
    assert H.runtime_module("generation").generate.__doc__ == G.generate.__doc__


def test_top_k_filter() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0], [0.0, 0.0, 5.0, -1.0]])
    out = G.top_k_filter(logits, 2)
    inf = float("-inf")
    assert torch.equal(out, torch.tensor([[inf, 4.0, 3.0, inf], [0.0, 0.0, 5.0, inf]]))  # ties with the k-th kept
    assert torch.equal(G.top_k_filter(logits, 10), logits)
    with pytest.raises(ValueError, match="top_k"):
        G.top_k_filter(logits, 0)


def test_top_p_filter() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(G.top_p_filter(logits, p))[0].tolist()
    assert kept(0.5) == [True, False, False, False]
    assert kept(0.6) == [True, True, False, False]
    assert kept(0.8) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True, True, True, True]
    assert kept(0.01) == [True, False, False, False]  # at least the most likely token
    with pytest.raises(ValueError, match="top_p"):
        G.top_p_filter(logits, 0.0)


def test_top_p_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    for p in (0.3, 0.7, 0.9):
        want = transformers.TopPLogitsWarper(p)(None, logits.clone())
        assert torch.equal(G.top_p_filter(logits, p), want)
        want_k = transformers.TopKLogitsWarper(5)(None, logits.clone())
        assert torch.equal(G.top_k_filter(logits, 5), want_k)


def test_repetition_penalty() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    seen = torch.tensor([[0, 1, 1]])
    out = G.apply_repetition_penalty(logits, seen, 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 1.0, 0.5]]))  # positive divided, negative multiplied
    assert torch.equal(G.apply_repetition_penalty(logits, seen, 1.0), logits)
    transformers = pytest.importorskip("transformers")
    assert torch.equal(out, transformers.RepetitionPenaltyLogitsProcessor(2.0)(seen, logits.clone()))
    # greedy picks the unseen token once the seen one is penalised
    assert G.select_next(logits, seen).item() == 0
    assert G.select_next(logits, seen, repetition_penalty=3.0).item() == 2


class _Scripted(torch.nn.Module):
    """A stand-in LM that emits a fixed token per row and step (its logits peak there), with one attention
    module carrying a kv_cache attribute, as model.py's do."""

    def __init__(self, script: list[list[int]], vocab: int = 10) -> None:
        super().__init__()
        self.attn = torch.nn.Linear(1, 1)
        self.attn.kv_cache = None
        self.script, self.vocab, self.calls = torch.tensor(script), vocab, 0

    def forward(self, ids: Any) -> Any:
        assert self.attn.kv_cache is not None
        step = self.calls
        self.calls += 1
        out = torch.zeros(ids.shape[0], ids.shape[1], self.vocab)
        out[torch.arange(ids.shape[0]), -1, self.script[:, step]] = 1.0
        return out


def test_eos_stops_each_row_and_then_all() -> None:
    model = _Scripted([[3, 9, 4, 4, 4], [5, 6, 7, 9, 4]])
    x = torch.tensor([[1, 2], [1, 2]])
    out = G.generate(model, x, max_new_tokens=5, eos_token_id=9, pad_token_id=0)
    # row 0 ends at its eos and is padded after it; generation stops once row 1 has its eos too (4 steps, not 5)
    assert out.tolist() == [[1, 2, 3, 9, 0, 0], [1, 2, 5, 6, 7, 9]]
    model = _Scripted([[3, 9, 4], [5, 6, 7]])
    out = G.generate(model, x, max_new_tokens=3, eos_token_id=[8, 9])  # pad: the first eos
    assert out.tolist() == [[1, 2, 3, 9, 8], [1, 2, 5, 6, 7]]
    assert G.generate(_Scripted([[3]]), x[:1], max_new_tokens=0).tolist() == [[1, 2]]


def test_bad_arguments() -> None:
    model = _Scripted([[3]])
    with pytest.raises(ValueError, match="input_ids"):
        G.generate(model, torch.zeros(1, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        G.generate(model, torch.ones(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="temperature"):
        G.select_next(torch.zeros(1, 3), torch.zeros(1, 1, dtype=torch.long), do_sample=True, temperature=0.0)
    with pytest.raises(TypeError, match="no key-value cache"):
        G.generate(torch.nn.Linear(1, 1), torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="beam search samples nothing"):
        G.generate(model, torch.ones(1, 2, dtype=torch.long), num_beams=2, do_sample=True)
    with pytest.raises(ValueError, match="num_beams"):
        G.generate(model, torch.ones(1, 2, dtype=torch.long), num_beams=0)
    with pytest.raises(TypeError, match="a decoder takes no decoder_input_ids"):
        G.generate(model, torch.ones(1, 2, dtype=torch.long), decoder_input_ids=torch.ones(1, 1, dtype=torch.long))
    with pytest.raises(TypeError, match="a decoder takes no passages"):
        G.generate(model, torch.ones(1, 2, dtype=torch.long), passages=torch.ones(1, 2, 3, dtype=torch.long))
    model.decoding = {"kind": "encoder_decoder", "inputs": ("text", "passages", "target"), "target": "target"}
    with pytest.raises(TypeError, match="needs the source input.s. passages"):
        G.generate(model, torch.ones(1, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="unexpected keyword argument.s. images"):
        G.generate(model, torch.ones(1, 2, dtype=torch.long), images=torch.ones(1))


def test_decode_state_mask_and_positions() -> None:
    """Positions count tokens only; a query sees the tokens up to itself and, padding, only itself."""
    state = G.DecodeState(torch.tensor([[1, 1, 1], [0, 1, 1]]), capacity=5)
    assert state.positions.tolist() == [[0, 1, 2], [0, 0, 1]]
    assert state.mask is not None and state.mask.shape == (2, 1, 3, 3)
    assert state.mask[1, 0].tolist() == [[True, False, False], [False, True, False], [False, True, True]]
    state.extend(torch.ones(2, 1))
    assert state.positions.tolist() == [[3], [2]]
    assert state.mask is not None and state.mask[:, 0, 0].tolist() == [[True] * 4, [False, True, True, True]]
    full = G.DecodeState(torch.ones(1, 2), capacity=3)
    full.extend(torch.ones(1, 1))
    assert full.mask is None  # one new token, no padding: every key
