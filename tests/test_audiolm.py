"""The codec language model (std.audiolm, MusicGen layout): the preset's parameters and a small model's logits
against transformers' MusicgenForCausalLM (the decoder without encoder states skips its cross-attention), the delay
pattern, the loss and metrics against a computation written here, and generate()."""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from conftest import ROOT, compile_path, load_module
from metagen_backends.pytorch import emit
from metagen_backends.pytorch.weights.runtime import load_checkpoint

SMALL = {"codebooks": 3, "codebook_size": 50, "context": 12, "layers": 2, "d_model": 64, "heads": 2, "ffn_dim": 96}


@cache
def _module(tmp: str) -> Any:
    comp = compile_path(ROOT / "examples" / "musicgen_small.msl")
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    folder = Path(tmp) / "metagen-test-audiolm"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(emit(comp)["model.py"])
    return load_module(folder / "model.py", "audiolm_musicgen_small")


@pytest.fixture
def mod(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _module(str(tmp_path_factory.getbasetemp()))


def _small(mod: Any, **over: Any) -> Any:
    torch.manual_seed(0)
    return mod.build_model(dataclasses.replace(mod.Config(), **{**SMALL, **over}))


def _hf_config(**kw: Any) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.MusicgenDecoderConfig(**kw)


def test_musicgen_small_equals_transformers_without_cross_attention(mod: Any) -> None:
    """transformers' MusicgenForCausalLM of musicgen-small's decoder config, on the meta device: all its parameters
    less those of its cross-attention blocks (encoder_attn, encoder_attn_layer_norm) are the preset's."""
    from transformers import MusicgenForCausalLM

    cfg = _hf_config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096, num_codebooks=4,
                     vocab_size=2048)  # musicgen-small's decoder (the other fields: MusicgenDecoderConfig's defaults)
    with torch.device("meta"):
        ref = MusicgenForCausalLM(cfg)
        ours = mod.build_model()
    total = sum(p.numel() for p in ref.parameters())
    cross = sum(p.numel() for n, p in ref.named_parameters() if ".encoder_attn" in n)
    assert (total, cross) == (419_584_000, 100_712_448)
    assert sum(p.numel() for p in ours.parameters()) == total - cross == 318_871_552


def test_small_musicgen_computes_transformers_musicgen(mod: Any) -> None:
    """A small model with the weights of a transformers MusicgenForCausalLM (no encoder states: no cross-attention;
    read through the `musicgen` layout, which ignores the cross-attention's weights) gives its logits (B, K, T, V),
    on tokens that include the special id (the delay pattern's gaps)."""
    from transformers import MusicgenForCausalLM

    c = SMALL
    torch.manual_seed(0)
    ref = MusicgenForCausalLM(_hf_config(hidden_size=c["d_model"], num_hidden_layers=c["layers"],
                                         num_attention_heads=c["heads"], ffn_dim=c["ffn_dim"],
                                         num_codebooks=c["codebooks"], vocab_size=c["codebook_size"],
                                         pad_token_id=c["codebook_size"], bos_token_id=c["codebook_size"])).eval()
    ours = _small(mod).eval()
    load_checkpoint(ours, ref.state_dict(), layout="musicgen")  # every tensor of ours given, every one of theirs used
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, c["codebook_size"], (2, c["codebooks"], 9), generator=g)
    seq = mod.delay_pattern(codes, c["codebook_size"])  # (2, K, 12), special ids in it
    with torch.no_grad():
        want = ref(input_ids=seq.reshape(-1, seq.shape[-1])).logits.view(2, c["codebooks"], 12, -1)  # (B * K, T, V)
        got = ours(seq)
    assert got.shape == want.shape == (2, c["codebooks"], 12, c["codebook_size"])
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_delay_pattern_layout_and_inverse(mod: Any) -> None:
    codes = torch.arange(2 * 3 * 4).view(2, 3, 4)
    seq = mod.delay_pattern(codes, 99)
    assert seq.shape == (2, 3, 7)
    assert seq[0].tolist() == [[99, 0, 1, 2, 3, 99, 99], [99, 99, 4, 5, 6, 7, 99], [99, 99, 99, 8, 9, 10, 11]]
    assert torch.equal(mod.undelay_pattern(seq, 4), codes)


def test_loss_and_metrics_are_per_codebook_cross_entropy(mod: Any) -> None:
    """loss = the mean over codebooks of each codebook's cross-entropy over its T real next tokens (the gaps of the
    delay pattern not counted); perplexity = exp(loss); token accuracy over the K * T real tokens."""
    model = _small(mod).eval()
    batch = mod.example_batch(model, batch_size=2)
    codes = batch["audio"]
    B, K, T = codes.shape
    V = model.config.codebook_size
    seq = mod.delay_pattern(codes, V)
    with torch.no_grad():
        logits = model(seq[:, :, :-1])  # (B, K, T + K - 1, V)
        per, hits = [], 0
        for k in range(K):
            lk = logits[:, k, k: k + T]  # column 1 + k + t predicts frame t of codebook k
            per.append(F.cross_entropy(lk.reshape(-1, V), codes[:, k].reshape(-1)))
            hits += int((lk.argmax(-1) == codes[:, k]).sum())
        want = torch.stack(per).mean()
        loss = model.loss(batch)
        metrics = model.metrics(batch)
    assert torch.allclose(loss, want, atol=1e-6)
    assert torch.allclose(metrics["perplexity"], want.exp(), atol=1e-5)
    assert math.isclose(float(metrics["token_accuracy"]), hits / (B * K * T), abs_tol=1e-6)
    assert math.isclose(float(want), math.log(V), rel_tol=0.1)  # an untrained model: about uniform


def test_generate_keeps_the_prompt_and_samples_every_codebook(mod: Any) -> None:
    model = _small(mod).eval()
    V = model.config.codebook_size
    prompt = torch.randint(0, V, (2, 3, 4), generator=torch.Generator().manual_seed(2))
    out = model.generate(prompt, 5, generator=torch.Generator().manual_seed(3))
    assert out.shape == (2, 3, 9) and torch.equal(out[:, :, :4], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < V  # never the special id
    again = model.generate(prompt, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    assert model.generate(prompt[:, :, :0], 3, temperature=0).shape == (2, 3, 3)  # no prompt


def test_greedy_generate_takes_each_column_argmax(mod: Any) -> None:
    """With temperature 0 each new frame's token of codebook k is the argmax of the logits at the column before it,
    given everything generated so far: re-running the model on the result's delay layout picks the same tokens."""
    model = _small(mod).eval()
    V = model.config.codebook_size
    prompt = torch.randint(0, V, (1, 3, 3), generator=torch.Generator().manual_seed(4))
    out = model.generate(prompt, 4, temperature=0)
    seq = mod.delay_pattern(out, V)
    with torch.no_grad():
        pred = model(seq[:, :, :-1]).argmax(-1)  # (1, K, T + K - 1): column c + 1 predicted at c
    for k in range(3):
        assert torch.equal(pred[0, k, k + 3: k + 7], out[0, k, 3:])
