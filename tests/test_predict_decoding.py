"""predict.py's decoding of the encoder-decoders (T5, Whisper, FiD's reader): through model.generate(), the source
encoded once and the decoder's keys and values cached (not the whole model re-run each step), and beam search
with --num-beams. Tiny examples with random weights (seeded), a tokenizer trained on the GPL-3 text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import GPL, gpl_tokenizer, model_folder, one_thread

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

_one_thread = pytest.fixture(autouse=True)(one_thread)

TINY = {
    "t5_small": ["vocab=400", "layers=1", "decoder_layers=1", "d_model=64", "heads=2", "d_kv=32", "d_ff=128"],
    "whisper_tiny": ["samples=16000", "source_positions=50", "vocab=400", "context=32", "layers=1",
                     "decoder_layers=1", "d_model=64", "heads=2", "ffn=128"],
    "rag_fid": ["vocab=400", "passage_length=16", "num_passages=4", "top_k=2", "retriever_layers=1",
                "retriever_d_model=32", "retriever_heads=2", "retriever_mlp=64", "layers=1", "decoder_layers=1",
                "d_model=32", "heads=2", "d_kv=16", "d_ff=64"],
    "gpt2": ["vocab=400", "layers=2", "d_model=64", "heads=2", "context=64"],
}
PROMPT = "This License applies to any program"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("decoding")


tokenizer = pytest.fixture(scope="module")(gpl_tokenizer)


@pytest.fixture(scope="module")
def pipes(root: Path, tokenizer: Path) -> Any:
    from metagen_backends.pytorch.inference import load_pipeline

    made: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in made:
            torch.manual_seed(0)
            made[name] = load_pipeline(model_folder(root / "models", name), random_init=True, overrides=TINY[name],
                                       tokenizer=tokenizer)
        return made[name]

    return get


@pytest.fixture(scope="module")
def inputs(root: Path) -> dict[str, Any]:
    """What each example reads: a prompt, a WAV file (a chirp), a question and a folder of documents."""
    soundfile = pytest.importorskip("soundfile")
    import numpy as np

    t = np.arange(16000) / 16000.0
    wav = root / "chirp.wav"
    soundfile.write(str(wav), (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)).astype("float32"), 16000)
    docs = root / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "gpl.txt").write_text(GPL.read_text()[:1500] if GPL.is_file() else "free software")
    return {"t5_small": ([PROMPT, "the program"], {}), "whisper_tiny": ([str(wav)], {}),
            "rag_fid": (["what is free software?"], {"docs": str(docs)})}


def _decoder_lengths(pipe: Any) -> tuple[list[int], Any]:
    """The target length of each forward of the model (a pre-hook on it): 1 per pass with the cache."""
    plan = pipe.model.decoding
    where = list(plan["inputs"]).index(plan["target"])
    lengths: list[int] = []
    handle = pipe.model.register_forward_pre_hook(lambda m, args: lengths.append(int(args[where].shape[1])))
    return lengths, handle


@pytest.mark.parametrize("name", ["t5_small", "whisper_tiny", "rag_fid"])
def test_encoder_decoders_decode_with_the_cache(pipes: Any, inputs: dict[str, Any], name: str) -> None:
    """Greedy decoding runs model.generate(): every pass after the first feeds the decoder one new token (the
    cache holds the rest; the old loop re-ran the whole target, 1, 2, 3, ... tokens), and gives the tokens of
    decoding without the cache (use_cache=False, --no-cache)."""
    pipe = pipes(name)
    args, options = inputs[name]
    lengths, handle = _decoder_lengths(pipe)
    try:
        cached = pipe(args, max_new_tokens=6, eos_token_id=None, **options)  # no stop: 6 steps
        with_cache = list(lengths)
        lengths.clear()
        uncached = pipe(args, max_new_tokens=6, eos_token_id=None, use_cache=False, **options)
        without = list(lengths)
    finally:
        handle.remove()
    key = "answer" if name == "rag_fid" else "tokens"
    assert [r[key] for r in cached] == [r[key] for r in uncached]
    assert max(without) >= 3, without  # several steps decoded; without the cache the whole target each time
    assert set(with_cache) == {1}, with_cache  # with it, the start token, then one new token per pass


def _log_prob(pipe: Any, source: torch.Tensor, tokens: list[int], start: int) -> float:
    """Sum of log p(token | source, tokens before) under the model, one full forward."""
    target = torch.tensor([[start, *tokens[:-1]]])
    with torch.no_grad():
        logits = pipe.model(source, target).float().log_softmax(-1)[0]
    return float(logits[torch.arange(len(tokens)), torch.tensor(tokens)].sum())


def test_beam_search_from_the_pipeline(pipes: Any) -> None:
    """num_beams=1 is greedy decoding; 4 beams find a continuation at least as likely under the model as greedy's
    (no stop token: both are max_new_tokens long, so their sums compare)."""
    pipe = pipes("t5_small")
    greedy = pipe(PROMPT, max_new_tokens=5, eos_token_id=None)
    assert pipe(PROMPT, max_new_tokens=5, eos_token_id=None, num_beams=1)["tokens"] == greedy["tokens"]
    beam = pipe(PROMPT, max_new_tokens=5, eos_token_id=None, num_beams=4)
    assert len(beam["tokens"]) == len(greedy["tokens"]) == 5
    source = torch.tensor([pipe.tokenizer.encode(PROMPT).ids])
    start = pipe.token_id(("<pad>", "<|endoftext|>")) or 0
    assert _log_prob(pipe, source, beam["tokens"], start) >= _log_prob(pipe, source, greedy["tokens"], start) - 1e-5


def test_beam_search_equals_generate_and_reaches_decoders(pipes: Any) -> None:
    """The pipeline's beams are model.generate(num_beams=...)'s, for an encoder-decoder and a decoder alike."""
    t5 = pipes("t5_small")
    source = torch.tensor([t5.tokenizer.encode(PROMPT).ids])
    start = t5.token_id(("<pad>", "<|endoftext|>")) or 0
    want = t5.model.generate(source, max_new_tokens=5, num_beams=3, decoder_start_token_id=start)[0, 1:].tolist()
    assert t5(PROMPT, max_new_tokens=5, eos_token_id=None, num_beams=3)["tokens"] == want
    gpt2 = pipes("gpt2")
    ids = torch.tensor([gpt2.tokenizer.encode(PROMPT).ids])
    eos = gpt2.token_id(("<|endoftext|>",))
    want = gpt2.model.generate(ids, max_new_tokens=5, num_beams=3, eos_token_id=eos)[0, ids.shape[1]:].tolist()
    got = gpt2(PROMPT, max_new_tokens=5, num_beams=3)["tokens"]
    assert got == want[: want.index(eos)] if eos in want else got == want


def test_predict_cli_takes_num_beams_and_no_cache(pipes: Any, root: Path, tokenizer: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`metagenc predict` with --num-beams and --no-cache: the same answers as load_pipeline's."""
    from metagen_backends.pytorch.inference.command import main

    pipe = pipes("t5_small")
    folder = root / "models" / "t5_small"
    sets = [a for s in TINY["t5_small"] for a in ("--set", s)]
    weights = root / "t5.pt"
    torch.save(pipe.model.state_dict(), weights)
    rows = []
    for extra in ([], ["--no-cache"], ["--num-beams", "3"]):
        capsys.readouterr()
        rc = main([str(folder), "--weights", str(weights), *sets, "--tokenizer", str(tokenizer), "--json",
                   "--max-new-tokens", "4", *extra, PROMPT])
        out = capsys.readouterr()
        assert rc == 0, out.err
        rows.append(json.loads(out.out.strip().splitlines()[-1]))
    assert rows[0]["tokens"] == rows[1]["tokens"] == pipe(PROMPT, max_new_tokens=4)["tokens"]
    assert rows[2]["tokens"] == pipe(PROMPT, max_new_tokens=4, num_beams=3)["tokens"]


def test_predict_cli_takes_zero_as_a_value(pipes: Any, root: Path, tokenizer: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--seed 0` seeds sampling as seed=0 does from Python (an option of value 0 is given, not dropped as unset),
    and sampling with another seed draws other tokens."""
    from metagen_backends.pytorch.inference.command import main

    pipe = pipes("gpt2")
    weights = root / "gpt2.pt"
    torch.save(pipe.model.state_dict(), weights)
    sets = [a for s in TINY["gpt2"] for a in ("--set", s)]
    rows = []
    for seed in ("0", "0", "1"):
        capsys.readouterr()
        rc = main([str(root / "models" / "gpt2"), "--weights", str(weights), *sets, "--tokenizer", str(tokenizer),
                   "--json", "--max-new-tokens", "8", "--do-sample", "--seed", seed, PROMPT])
        out = capsys.readouterr()
        assert rc == 0, out.err
        rows.append(json.loads(out.out.strip().splitlines()[-1])["tokens"])
    assert rows[0] == rows[1] == pipe(PROMPT, max_new_tokens=8, do_sample=True, seed=0)["tokens"]
    assert rows[2] != rows[0]
