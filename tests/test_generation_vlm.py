"""generate() of the vision-language model (std.vlm, LLaVA layout): the image's patches, projected, are a prefix
before the prompt's tokens; the rule (metagen_backends.decoding) calls it a "prefix_decoder", generation.py computes
the prefix once (the vision tower runs in the first forward only) and keeps its keys and values in the cache. The
cache gives the tokens and the logits of re-running the whole model each step, padded prompts give each prompt's
tokens alone, sampling and beam search work as for the decoders, and the predict pipeline's VLM runner goes through
generate(). No network."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT, compile_path, load_module
from metagen_backends.decoding import decoding
from metagen_backends.pytorch import emit
from metagen_backends.pytorch.runtime import generation as G

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile

DIMS = ("image_size = 32; patch_size = 8; vision_layers = 1; vision_width = 64; vision_heads = 2; vision_mlp = 128; "
        "vocab = 97; context = 24; layers = 2; d_model = 128; heads = 2; kv_heads = 1")
SRC = f"""msl 1
import std.vlm

model tiny_vlm {{
  modality image, text -> text
  task multimodal_generation
  objective autoregressive
  architecture vlm.vlm {{ {DIMS} }}
}}
"""
PREFIX = (32 // 8) ** 2  # the image's tokens before the prompt


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    comp = compile_source(SourceFile("tiny_vlm.msl", SRC))
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.items]
    out = tmp_path_factory.mktemp("vlm")
    for name, text in emit(comp).items():
        (out / name).write_text(text)
    return out


_count = iter(range(10**6))


@pytest.fixture
def vlm(folder: Path) -> Any:
    """The compiled VLM with weights moved off their init (decisive logits: no near-ties for the cache's float
    differences to flip)."""
    module: types.ModuleType = load_module(folder / "model.py", f"vlm_model_{next(_count)}")
    model = module.build_model()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _inputs(batch: int = 2, length: int = 5, seed: int = 2) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 32, 32, generator=g), torch.randint(1, 97, (batch, length), generator=g)


def _greedy_by_forward(model: Any, image: Any, ids: Any, n: int) -> Any:
    """Greedy decoding by the model's own forward over the whole sequence, no generation.py."""
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat((ids, model(image, ids)[:, -1].argmax(-1, keepdim=True)), dim=1)
    return ids


def test_the_rule_finds_a_decoder_after_a_prefix(folder: Path) -> None:
    """The VLM decodes after the prefix of its image (computed by `encoder_image`), and only PyTorch steps it: the
    ONNX backend writes model_with_past.onnx for plain decoders only. Models that join an image and a text but
    pool or cross-attend (the fusion classifiers) still do not decode."""
    comp = compile_source(SourceFile("tiny_vlm.msl", SRC))
    assert comp.graph is not None
    d = decoding(comp.graph)
    assert d is not None
    assert (d.kind, d.target, d.source, d.once, d.cross) == ("prefix_decoder", "text", ("image",), ("encoder_image",),
                                                             ())
    module = load_module(folder / "model.py", f"vlm_model_{next(_count)}")
    plan = next(c for c in vars(module).values() if isinstance(c, type) and hasattr(c, "decoding")).decoding
    assert plan == {"kind": "prefix_decoder", "inputs": ("image", "text"), "target": "text", "once": ("encoder_image",)}
    for stem in ("fusion_early", "vqa_cross"):
        other = compile_path(ROOT / "examples" / f"{stem}.msl")
        assert other.graph is not None and decoding(other.graph) is None
    pytest.importorskip("onnx_ir")
    from metagen_backends.onnx import export

    assert not export.supports_cache(comp.graph)


def test_cached_greedy_equals_uncached_and_the_forward(vlm: Any) -> None:
    """The prompt after the image, then one token per step from the cache: the tokens of re-running the whole
    model each step (use_cache=False) and of greedy decoding with the model's own forward; the vision tower runs
    once with the cache and in every step without; nothing stays attached afterwards."""
    image, ids = _inputs()
    calls = []
    hook = vlm.encoder_image.patch_embedding.register_forward_hook(lambda *a: calls.append(1))
    cached = vlm.generate(ids, image=image, max_new_tokens=8)
    assert len(calls) == 1
    calls.clear()
    full = vlm.generate(ids, image=image, max_new_tokens=8, use_cache=False)
    assert len(calls) == 8
    hook.remove()
    assert cached.shape == (2, 5 + 8) and torch.equal(cached[:, :5], ids)
    assert torch.equal(cached, full)
    assert torch.equal(cached, _greedy_by_forward(vlm, image, ids, 8))
    assert all(m.kv_cache is None for m in vlm.modules() if hasattr(m, "kv_cache"))
    assert "forward" not in vars(vlm.encoder_image) and not vlm.head._forward_pre_hooks


def test_cached_logits_equal_the_forward(vlm: Any) -> None:
    """Each step's logits from the cache (the prefix's keys and values kept, the head fed the last position)
    equal the full forward's at that position."""
    image, ids = _inputs(length=12, seed=4)
    with torch.no_grad():
        ref = vlm(image, ids)[:, 3:]  # the logits after 4, 5, ... 12 tokens
        state = G.DecodeState(torch.ones(2, 4, dtype=torch.bool), 12)
        with G.cached(vlm, state, True):
            steps = [vlm(image, ids[:, :4])[:, -1]]
            assert state.prefix == PREFIX and state.key_mask.shape == (2, PREFIX + 4)
            for t in range(4, 12):
                state.extend(torch.ones(2, 1, dtype=torch.bool))
                steps.append(vlm(image, ids[:, t:t + 1])[:, -1])
    assert torch.allclose(torch.stack(steps, 1), ref, atol=1e-5)


def test_padded_prompts_equal_each_prompt_alone(vlm: Any) -> None:
    """Prompts of different lengths, left-padded with attention_mask between the image's tokens and the text:
    each row's new tokens are those of its prompt alone (padding is never attended to, positions count tokens)."""
    image, ids = _inputs(length=6, seed=5)
    short = ids[1, 2:]
    padded = torch.stack((ids[0], torch.cat((torch.zeros(2, dtype=torch.long), short))))
    mask = (torch.arange(6)[None] >= torch.tensor([[0], [2]])).long()
    both = vlm.generate(padded, image=image, attention_mask=mask, max_new_tokens=6)
    assert torch.equal(both[0], vlm.generate(ids[:1], image=image[:1], max_new_tokens=6)[0])
    assert torch.equal(both[1, 2:], vlm.generate(short[None], image=image[1:], max_new_tokens=6)[0])
    assert torch.equal(both, vlm.generate(padded, image=image, attention_mask=mask, max_new_tokens=6, use_cache=False))


def test_sampling_and_beam_search(vlm: Any) -> None:
    """Seeded sampling repeats and equals the uncached run's; beam search with the cache equals it without; one
    image serves every row of the prompt."""
    image, ids = _inputs(seed=6)
    kw: dict[str, Any] = {"max_new_tokens": 6, "do_sample": True, "temperature": 0.9, "top_k": 20, "top_p": 0.9}
    a = vlm.generate(ids, image=image, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a, vlm.generate(ids, image=image, generator=torch.Generator().manual_seed(0), **kw))
    assert torch.equal(a, vlm.generate(ids, image=image, generator=torch.Generator().manual_seed(0), use_cache=False,
                                       **kw))
    beams = vlm.generate(ids, image=image, max_new_tokens=5, num_beams=3)
    assert beams.shape == (2, 10)
    assert torch.equal(beams, vlm.generate(ids, image=image, max_new_tokens=5, num_beams=3, use_cache=False))
    one = vlm.generate(ids, image=image[:1], max_new_tokens=4)
    assert torch.equal(one, vlm.generate(ids, image=image[:1].expand(2, -1, -1, -1), max_new_tokens=4))


def test_bad_calls_say_what_is_wrong(vlm: Any) -> None:
    image, ids = _inputs()
    with pytest.raises(TypeError, match="needs the input"):
        vlm.generate(ids, max_new_tokens=2)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        vlm.generate(ids, image=image, pixel_values=image, max_new_tokens=2)
    with pytest.raises(ValueError, match="at least one token"):
        vlm.generate(ids[:, :0], image=image, max_new_tokens=2)
    with pytest.raises(ValueError, match="3 rows"):
        vlm.generate(ids, image=torch.cat((image, image[:1])), max_new_tokens=2)
    with pytest.raises(ValueError, match="context of 24"):
        vlm.generate(ids, image=image, max_new_tokens=20)


def test_predict_pipeline_generates_text_after_the_image(folder: Path, tmp_path: Path) -> None:
    """The VLM's task runner (multimodal_generation) returns text through model.generate(): the same tokens with and
    without the cache, and beam search, which the loop without generate() cannot do."""
    pytest.importorskip("PIL")
    tokenizers = pytest.importorskip("tokenizers")
    from metagen_backends.pytorch.inference import load_pipeline
    from PIL import Image

    words = ["[UNK]", "<s>", "</s>"] + [f"w{i}" for i in range(94)] + ["a", "photo", "of"]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words[:97])}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (40, 48, 3), generator=g, dtype=torch.uint8)
    Image.frombytes("RGB", (48, 40), bytes(pixels.flatten().tolist())).save(tmp_path / "cat.png")
    pipe = load_pipeline(folder, random_init=True, tokenizer=tmp_path / "tokenizer.json")
    args = [str(tmp_path / "cat.png"), "w3 w7 w11"]
    (out,) = pipe(args, max_new_tokens=5)
    assert set(out) >= {"generated_text", "completion", "tokens"} and out["generated_text"].startswith("w3 w7 w11")
    assert 0 < len(out["tokens"]) <= 5
    assert pipe(args, max_new_tokens=5, use_cache=False)[0]["tokens"] == out["tokens"]
    assert len(pipe(args, max_new_tokens=5, num_beams=2)[0]["tokens"]) <= 5
