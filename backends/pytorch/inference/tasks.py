"""The task runners of pipelines.py: one function per task of the compiler (TASKS), each taking the pipeline, the
user's inputs, the batch size and the options, and returning one JSON-shaped result per input (masks and images as
PIL images, which predict.py writes as PNG).

Copied verbatim next to a generated model.py with pipelines.py; depends on torch. No MetaGen import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING or (__package__ or "").rsplit(".", 1)[-1] == "inference":  # the compiler's package
    from ..training import data
    from . import audio_out, inputs, ocr
    from .inputs import BOS_NAMES, EOS_NAMES, INTERNAL_INPUTS, PredictError, batches, integer, short
else:  # beside model.py in the output folder
    import audio_out  # type: ignore[no-redef]
    import data  # type: ignore[no-redef]
    import inputs  # type: ignore[no-redef]
    import ocr  # type: ignore[no-redef]
    from inputs import (  # type: ignore[no-redef]
        BOS_NAMES,
        EOS_NAMES,
        INTERNAL_INPUTS,
        PredictError,
        batches,
        integer,
        short,
    )

if TYPE_CHECKING:  # pipelines.py imports this module; the runners take its Pipeline
    from .pipelines import Pipeline

__all__ = ["TASKS", "decode_loop"]



def _threshold(options: dict[str, Any], default: float) -> float:
    """--threshold, where 0 is a threshold (not the default)."""
    value = options.get("threshold")
    return float(value) if value is not None else default


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def top_labels(pipe: Pipeline, probs: torch.Tensor, top: int) -> list[dict[str, Any]]:
    p, idx = probs.float().topk(min(max(1, top), probs.shape[-1]))
    return [{"label": pipe.label(int(i)), "id": int(i), "score": round(float(s), 6)} for s, i in zip(p, idx)]


# ------------------------------------------------------------------------------------------ generation


def _choose(logits: torch.Tensor, options: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """The next token per row: argmax, or sampled at temperature with top-k / top-p."""
    if not options.get("do_sample"):
        return logits.argmax(-1)
    logits = logits.float() / max(float(options.get("temperature") or 1.0), 1e-6)
    k = options.get("top_k")
    if k:
        kth = logits.topk(min(int(k), logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    p = options.get("top_p")
    if p is not None and p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def decode_loop(step: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, max_new: int, eos: int | None,
                options: dict[str, Any], generator: torch.Generator | None) -> torch.Tensor:
    """Token by token without a cache, for models without generate(): `step(ids)` gives the logits (B, T, vocab) of
    the sequences so far. Returns the new tokens (B, n); a row stops at eos (then padded with it)."""
    ids, new = start, []
    done = torch.zeros(start.shape[0], dtype=torch.bool, device=start.device)
    for _ in range(max_new):
        nxt = _choose(step(ids)[:, -1], options, generator)
        if eos is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            done |= nxt == eos
        new.append(nxt)
        ids = torch.cat([ids, nxt[:, None]], 1)
        if eos is not None and bool(done.all()):
            break
    return torch.stack(new, 1) if new else start[:, :0]


def _strip(ids: list[int], eos: int | None) -> list[int]:
    return ids[: ids.index(eos)] if eos is not None and eos in ids else ids


def _generator(options: dict[str, Any]) -> torch.Generator | None:
    return torch.Generator().manual_seed(int(options["seed"])) if options.get("seed") is not None else None


def run_generation(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Text in, text out (decoder LMs; an encoder-decoder writes the target from the text; the VLMs from an image
    and a prompt). model.generate() where the model has it, else decode_loop."""
    user = [n for n in pipe.inputs if n not in INTERNAL_INPUTS]
    if user == ["audio"] and not pipe.inputs["audio"].is_floating_point():
        return run_codec_generation(pipe, args, size, options)
    max_new = int(options.get("max_new_tokens") or 32)
    eos = options.get("eos_token_id", pipe.token_id(EOS_NAMES))
    context = int(pipe.config.get("context", 0)) or None
    gen = _generator(options)
    results = []
    if user == ["text"] and "target" not in pipe.inputs:  # a decoder-only language model
        prompts = [pipe.encode(a) for a in args]
        for text, ids in zip(args, prompts):
            if context is not None and len(ids) + max_new > context:
                raise PredictError(f"the prompt `{short(text)}` is {len(ids)} tokens; with --max-new-tokens {max_new} "
                                   f"that passes the model's context of {context}")
            if not ids:
                raise PredictError("an empty prompt: give at least one token of text")
        for start in range(0, len(prompts), size):
            chunk = prompts[start : start + size]
            new = _decoder_generate(pipe, chunk, max_new, eos, options, gen)
            for k, ids in enumerate(chunk):
                out = _strip(new[k], eos)
                results.append({"input": args[start + k], "generated_text": pipe.decode(ids + out),
                                "completion": pipe.decode(out), "tokens": out})
        return results
    # the prompt goes to the encoder (T5) or beside an image (VLM); the decoder starts from a start token
    items = pipe.items(args)
    bos = pipe.token_id(("<pad>",) + BOS_NAMES) if "target" in pipe.inputs else pipe.token_id(BOS_NAMES)
    for group, batch in batches(items, size):
        before: list[list[int]]  # the tokens the generated text continues
        if "target" in pipe.inputs:
            new = _seq2seq(pipe, batch, bos or 0, max_new, eos, options, gen)
            before = [[] for _ in group]
        else:  # image + text prompt: the text continues
            first = batch["text"] if batch["text"].shape[1] else torch.full((len(group), 1), bos or 0, dtype=torch.long)
            new = _after_image(pipe, first.to(pipe.device), batch["image"].to(pipe.device), max_new, eos, context,
                               options, gen)
            before = [it.meta.get("ids", []) for it in group]
        for k, it in enumerate(group):
            out = _strip(new[k], eos)
            results.append({"input": it.where, "generated_text": pipe.decode(before[k] + out),
                            "completion": pipe.decode(out), "tokens": out})
    return results


def _after_image(pipe: Pipeline, first: torch.Tensor, image: torch.Tensor, max_new: int, eos: int | None,
                 context: int | None, options: dict[str, Any], gen: torch.Generator | None) -> list[list[int]]:
    """The new tokens of each row of a VLM after its image and prompt `first`: model.generate(), which computes the
    image's tokens once and decodes with the key-value cache (greedy, sampled or beam search); a model.py without
    generate() decodes by decode_loop, re-running the whole model each step."""
    if hasattr(pipe.model, "generate") and (getattr(pipe.model, "decoding", None) or {}).get("kind") == "prefix_decoder":
        if context is not None and first.shape[1] + max_new > context:
            raise PredictError(f"the prompt is {first.shape[1]} tokens; with --max-new-tokens {max_new} that passes "
                               f"the model's context of {context}")
        generated = pipe.model.generate(first, image=image, max_new_tokens=max_new, eos_token_id=eos, generator=gen,
                                        **_generate_options(options))
        return [[t for t in row[first.shape[1]:] if t >= 0] for row in generated.tolist()]
    _no_beams(pipe, options)

    def step(t: torch.Tensor) -> torch.Tensor:
        return _first(pipe.model(image, t))

    return decode_loop(step, first, max_new, eos, options, gen).tolist()


def _decoder_generate(pipe: Pipeline, prompts: list[list[int]], max_new: int, eos: int | None,
                      options: dict[str, Any], gen: torch.Generator | None) -> list[list[int]]:
    """New tokens per prompt, left-padded batch through model.generate() (or decode_loop per length)."""
    if hasattr(pipe.model, "generate"):
        longest = max(len(p) for p in prompts)
        pad = eos if eos is not None else 0
        ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], dtype=torch.long)
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
        generated = pipe.model.generate(ids.to(pipe.device), max_new_tokens=max_new, eos_token_id=eos,
                                        pad_token_id=pad, attention_mask=mask.to(pipe.device), generator=gen,
                                        **_generate_options(options))
        return [[t for t in row[longest:] if t >= 0] for row in generated.tolist()]
    _no_beams(pipe, options)
    out: list[list[int]] = []
    for p in prompts:
        start = torch.tensor([p], dtype=torch.long, device=pipe.device)
        out.append(decode_loop(lambda t: _first(pipe.model(t)), start, max_new, eos, options, gen)[0].tolist())
    return out


def _beams(options: dict[str, Any]) -> int:
    """--num-beams, checked: 1 (greedy or sampled) or more (beam search, which samples nothing)."""
    beams = int(options["num_beams"]) if options.get("num_beams") is not None else 1
    if beams < 1:
        raise PredictError(f"--num-beams must be 1 or more, got {beams}")
    if beams > 1 and options.get("do_sample"):
        raise PredictError(f"--num-beams {beams} searches for the likeliest text and --do-sample samples one: "
                           "give one of them")
    return beams


def _generate_options(options: dict[str, Any]) -> dict[str, Any]:
    """The decoding options as model.generate()'s keywords: sampling, repetition penalty, beam search
    (num_beams, length_penalty) and use_cache=False (decoding without the cache, the reference it is checked
    against)."""
    kw = {k: options[k] for k in ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "length_penalty")
          if options.get(k) is not None}
    beams = _beams(options)
    if beams > 1:
        kw["num_beams"] = beams
    if options.get("use_cache") is False:
        kw["use_cache"] = False
    return kw


def _no_beams(pipe: Pipeline, options: dict[str, Any]) -> None:
    """A model without generate() decodes by decode_loop: greedy or sampled, no beam search."""
    if _beams(options) > 1:
        raise PredictError(f"--num-beams: {pipe.family or 'this model'} has no generate() in model.py (it decodes "
                           "token by token, re-running the model), so beam search is not available; leave "
                           "--num-beams out")


def _seq2seq(pipe: Pipeline, sources: dict[str, torch.Tensor], start: int, max_new: int, eos: int | None,
             options: dict[str, Any], gen: torch.Generator | None) -> list[list[int]]:
    """The new tokens of each row of an encoder-decoder (T5, Whisper, FiD's reader) for its batched `sources`
    (forward's inputs but the target), from the decoder's `start` token: model.generate(), which encodes the
    source once and decodes with the decoder's key-value cache (greedy, sampled, or beam search with
    num_beams); a model.py without generate() decodes by decode_loop, re-running the whole model each step."""
    plan = getattr(pipe.model, "decoding", None) or {}
    order = [n for n in plan.get("inputs", pipe.inputs) if n != plan.get("target", "target")]
    src = {n: sources[n].to(pipe.device) for n in order}
    if hasattr(pipe.model, "generate") and plan.get("kind") == "encoder_decoder":
        first, *rest = order
        generated = pipe.model.generate(src[first], max_new_tokens=max_new, eos_token_id=eos,
                                        decoder_start_token_id=start, generator=gen, **_generate_options(options),
                                        **{n: src[n] for n in rest})
        return [[t for t in row[1:] if t >= 0] for row in generated.tolist()]  # after the start token
    _no_beams(pipe, options)
    rows = len(src[order[0]])
    begin = torch.full((rows, 1), start, dtype=torch.long, device=pipe.device)

    def step(t: torch.Tensor) -> torch.Tensor:
        return _first(pipe.model(*(t if n == "target" else src[n] for n in pipe.inputs)))

    return decode_loop(step, begin, max_new, eos, options, gen).tolist()


def run_codec_generation(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """A codec language model (MusicGen): new codec frames from an empty prompt, the codec tokens (K codebooks x
    frames); with the `codec` option (an EnCodec checkpoint folder, audio_out.py) also their waveform, which
    predict.py writes as WAV."""
    steps = int(options.get("max_new_tokens") or 32)
    k = int(pipe.inputs["audio"].shape[0])
    codec = audio_out.load_codec(options["codec"], pipe.device) if options.get("codec") else None
    if codec is not None:
        codec.check(k, int(pipe.config["codebook_size"]) if "codebook_size" in pipe.config else None)
    out = []
    for i, arg in enumerate(args):
        gen = torch.Generator().manual_seed(int(options.get("seed") or 0) + i)
        prompt = torch.zeros(1, k, 0, dtype=torch.long, device=pipe.device)
        temperature = 0.0 if not options.get("do_sample") else float(options.get("temperature") or 1.0)
        codes = pipe.model.generate(prompt, steps, temperature=temperature, top_k=int(options.get("top_k") or 250),
                                    generator=gen)
        if codec is None:
            out.append({"input": arg, "codes": codes[0].tolist(), "note": "codec tokens (codebooks x frames), not "
                        "audio: pass --codec PATH (an EnCodec checkpoint) to decode them to a WAV file"})
            continue
        audio = codec.decode(codes[0])
        out.append({"input": arg, "codes": codes[0].tolist(), "audio": audio, "sample_rate": codec.sample_rate,
                    "seconds": round(audio.shape[-1] / codec.sample_rate, 6)})
    return out


def run_speech(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Audio files in, transcripts out: the decoder starts at <|startoftranscript|> and stops at <|endoftext|>."""
    if pipe.tokenizer is None:
        raise PredictError("transcripts need the tokenizer: pass --checkpoint runs/<run>/last (its tokenizer.json) "
                           "or --tokenizer tokenizer.json")
    max_new = min(int(options.get("max_new_tokens") or int(pipe.config.get("context", 448)) - 1),
                  int(pipe.config.get("context", 448)) - 1)
    bos, eos = pipe.token_id(BOS_NAMES), options.get("eos_token_id", pipe.token_id(EOS_NAMES))
    results = []
    for group, batch in batches(pipe.items(args), size):
        new = _seq2seq(pipe, batch, bos or 0, max_new, eos, options, _generator(options))
        for k, it in enumerate(group):
            out = _strip(new[k], eos)
            results.append({"input": it.where, "text": pipe.decode(out).strip(), "tokens": out})
    return results


# ------------------------------------------------------------------------------------- classification


def run_classification(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-k labels with their probabilities (softmax; sigmoid for the VQA answer scores)."""
    if "graph_batch" in pipe.inputs:
        return run_graph_classification(pipe, args, size, options)
    top = int(options.get("top") or 5)
    sigmoid = pipe.task == "multimodal_question_answering"
    results = []
    for group, batch in batches(pipe.items(args), size):
        logits = _first(pipe.forward(batch)).float()
        probs = logits.sigmoid() if sigmoid else logits.softmax(-1)
        results += [{"input": it.where, "labels": top_labels(pipe, probs[k], top)} for k, it in enumerate(group)]
    return results


def _read_graph(pipe: Pipeline, arg: str) -> dict[str, Any]:
    """A graph file as forward's graph_nodes, graph_edges and, where the model reads edge features, edge_attr."""
    width = int(pipe.inputs["edge_attr"].shape[-1]) if "edge_attr" in pipe.inputs else None
    return inputs.read_graph(Path(arg), int(pipe.inputs["graph_nodes"].shape[-1]), width)


def run_graph_classification(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict]:
    """Graph files in, joined per batch into one disconnected graph with each node's graph id (at most the model's
    `graphs` rows a batch); the top labels of each."""
    top = int(options.get("top") or 5)
    size = min(size, int(pipe.config.get("graphs") or size))
    results = []
    for start in range(0, len(args), size):
        chunk = args[start : start + size]
        graphs = [_read_graph(pipe, a) for a in chunk]
        offsets = [0, *torch.tensor([len(g["graph_nodes"]) for g in graphs]).cumsum(0).tolist()]
        batch: dict[str, torch.Tensor] = {k: torch.cat([g[k] for g in graphs]) for k in ("graph_nodes", "edge_attr")
                                          if k in graphs[0]}
        batch["graph_edges"] = torch.cat([g["graph_edges"] + offsets[k] for k, g in enumerate(graphs)], 1)
        batch["graph_batch"] = torch.cat([torch.full((len(g["graph_nodes"]),), k, dtype=torch.long)
                                          for k, g in enumerate(graphs)])
        probs = _first(pipe.forward(batch)).float().softmax(-1)
        results += [{"input": a, "labels": top_labels(pipe, probs[k], top)} for k, a in enumerate(chunk)]
    return results


def run_nodes(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """A graph file in; each node's most likely class."""
    results = []
    for a in args:
        probs = _first(pipe.forward(_read_graph(pipe, a))).float().softmax(-1)
        score, label = probs.max(-1)
        nodes = [{"node": i, "label": pipe.label(int(c)), "score": round(float(s), 6)}
                 for i, (s, c) in enumerate(zip(score, label))]
        results.append({"input": a, "nodes": nodes})
    return results


def run_links(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """A graph file in; the scores sigmoid(z_i . z_j) of the --pairs asked, else the top new links."""
    top = int(options.get("top") or 10)
    results = []
    for a in args:
        g = _read_graph(pipe, a)
        z = _first(pipe.forward(g)).float()
        n = len(z)
        scores = (z @ z.t()).sigmoid()
        if options.get("pairs"):
            pairs = _pairs(options["pairs"], n)
        else:
            known = scores.clone().fill_diagonal_(-1.0)
            known[g["graph_edges"][0], g["graph_edges"][1]] = -1.0
            if g["undirected"]:
                known = known.triu(1) - torch.ones_like(known).tril()
            flat = known.flatten().topk(min(top, n * n))
            pairs = [(int(i) // n, int(i) % n) for i, s in zip(flat.indices, flat.values) if float(s) >= 0]
        links = [{"source": i, "target": j, "score": round(float(scores[i, j]), 6)} for i, j in pairs]
        results.append({"input": a, "links": links})
    return results


def _pairs(text: str, n: int) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        a, dash, b = part.strip().partition("-")
        if not dash or not a.strip().isdigit() or not b.strip().isdigit() or max(int(a), int(b)) >= n:
            raise PredictError(f"--pairs `{part.strip()}`: expected SOURCE-TARGET node ids in 0..{n - 1}")
        out.append((int(a), int(b)))
    return out


# --------------------------------------------------------------------------------------- per-token tasks


def run_sequence_labeling(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict]:
    results = []
    for group, batch in batches(pipe.items(args), size):
        probs = _first(pipe.forward(batch)).float().softmax(-1)
        for k, it in enumerate(group):
            score, label = probs[k].max(-1)
            tokens = [{"token": pipe.tokenizer.id_to_token(t), "label": pipe.label(int(c)), "score": round(float(s), 6)}
                      for t, s, c in zip(it.meta["ids"], score, label)]
            results.append({"input": it.where, "tokens": tokens})
    return results


def run_question_answering(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict]:
    """The answer span: the best start <= end (at most --max-answer tokens) of the start and end logits."""
    context = options.get("context")
    if context:
        path = Path(context)
        context = data.read_utf8(path) if path.is_file() else context
    longest = inputs.max_answer(options)
    results = []
    for arg in args:
        if pipe.tokenizer is None:
            pipe.encode(arg)  # the one-line error
        enc = pipe.tokenizer.encode(arg, context) if context else pipe.tokenizer.encode(arg)
        ids = pipe.known_ids(list(enc.ids), arg)
        limit = int(pipe.config.get("context", len(ids)))
        if len(ids) > limit:
            raise PredictError(f"the question and context are {len(ids)} tokens, longer than the model's context of "
                               f"{limit}")
        logits = _first(pipe.forward({"text": torch.tensor([ids])}))[0].float()  # (T, 2)
        # with a context, the answer lies in it, never in the question or the special tokens
        inside = torch.tensor([s == 1 for s in enc.sequence_ids], device=logits.device) if context else None
        span = inputs.best_span(logits, inside, longest)
        if span is None:
            raise PredictError(f"the context `{short(str(context))}` gives the tokenizer no tokens to answer from")
        s, e, score = span
        results.append({"input": arg, "answer": pipe.decode(ids[s : e + 1]).strip(), "start": s, "end": e,
                        "score": round(score, 6)})
    return results


# ------------------------------------------------------------------------------- regression and friends


def _column_names(pipe: Pipeline, n: int) -> list[str]:
    names = pipe.state.get("target") if pipe.state else None
    return list(names) if names and len(names) == n else [f"output_{i}" for i in range(n)]


def run_regression(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for group, batch in batches(pipe.items(args), size):
        y = _first(pipe.forward(batch)).float().reshape(len(group), -1)
        names = _column_names(pipe, y.shape[1])
        results += [{"input": it.where, "prediction": {n: round(float(v), 6) for n, v in zip(names, y[k])}}
                    for k, it in enumerate(group)]
    return results


def run_forecast(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """A CSV's last lookback rows in; the next horizon rows out, in the data's units (the run's standardisation
    undone)."""
    results = []
    for group, batch in batches(pipe.items(args), size):
        y = _first(pipe.forward(batch)).float()  # (B, horizon, outputs)
        if pipe.state and "standardize" in pipe.state and "y_mean" in pipe.state["standardize"]:
            st = pipe.state["standardize"]
            y = y * torch.tensor(st["y_std"]) + torch.tensor(st["y_mean"])
        for k, it in enumerate(group):
            names = it.meta["targets"] if len(it.meta["targets"]) == y.shape[-1] else _column_names(pipe, y.shape[-1])
            rows = [{n: round(float(v), 6) for n, v in zip(names, step)} for step in y[k]]
            results.append({"input": it.where, "forecast": rows})
    return results


def run_anomaly(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The anomaly score: the mean squared reconstruction error of each input (above --threshold: an anomaly)."""
    threshold = options.get("threshold")
    results = []
    for group, batch in batches(pipe.items(args), size):
        name = next(iter(batch))
        recon = _first(pipe.forward(batch)).float()
        x = batch[name].to(recon.device).float()
        err = ((recon - x) ** 2).reshape(len(group), -1).mean(1)
        for k, it in enumerate(group):
            r: dict[str, Any] = {"input": it.where, "score": round(float(err[k]), 6)}
            if threshold is not None:
                r["anomaly"] = bool(float(err[k]) > float(threshold))
            results.append(r)
    return results


def run_embedding(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for group, batch in batches(pipe.items(args), size):
        z = _first(pipe.forward(batch)).float().reshape(len(group), -1)
        results += [{"input": it.where, "embedding": [round(float(v), 6) for v in z[k]]} for k, it in enumerate(group)]
    return results


def run_points(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """A prompt in; a point cloud (points x 3) out."""
    results = []
    for group, batch in batches(pipe.items(args), size):
        pts = _first(pipe.forward(batch)).float()
        results += [{"input": it.where, "points": [[round(float(v), 6) for v in p] for p in pts[k]]}
                    for k, it in enumerate(group)]
    return results


# ------------------------------------------------------------------------------------------ vision


def run_detection(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Boxes (x1, y1, x2, y2 in the input image's pixels, clipped to it), labels and scores, from the model's
    detect()."""
    threshold = _threshold(options, 0.5)
    results = []
    for group, batch in batches(pipe.items(args), size):
        found = pipe.model.detect(batch["image"].to(pipe.device), score_threshold=threshold)
        for k, it in enumerate(group):
            (w, h), s = it.meta["size"], it.meta["input_size"]
            scale = torch.tensor([w / s, h / s, w / s, h / s])
            boxes = found[k]["boxes"].float().cpu() * scale
            boxes = torch.minimum(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=boxes.dtype))  # in the image
            objects: list[dict[str, Any]] = [{"label": pipe.label(int(c)), "id": int(c), "score": round(float(p), 6),
                                              "box": [round(float(v), 2) for v in b]}
                       for b, p, c in zip(boxes, found[k]["scores"], found[k]["labels"])]
            objects.sort(key=lambda o: -o["score"])
            results.append({"input": it.where, "size": [w, h], "objects": objects})
    return results


def _to_size(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (H, W) integer map resized (nearest) to the image's (width, height)."""
    return F.interpolate(x[None, None].float(), size=(size[1], size[0]), mode="nearest")[0, 0].long()


def _png(x: torch.Tensor) -> Any:
    """An (H, W) integer map as an 8-bit (values < 256) or 16-bit greyscale PIL image."""
    from PIL import Image

    x = x.cpu()
    if int(x.max()) < 256:
        return Image.frombytes("L", (x.shape[1], x.shape[0]), bytes(x.to(torch.uint8).flatten().tolist()))
    return Image.frombytes("I;16", (x.shape[1], x.shape[0]), x.to(torch.int16).numpy().tobytes())


def run_semantic_segmentation(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict]:
    """A class map at the input image's size (PNG: pixel value = class id) and each class's share of the pixels."""
    results = []
    for group, batch in batches(pipe.items(args), size):
        classes = _first(pipe.forward(batch)).argmax(1)  # (B, H, W)
        for k, it in enumerate(group):
            m = _to_size(classes[k], it.meta["size"])
            ids, counts = m.unique(return_counts=True)
            shares = {pipe.label(int(i)): round(float(c) / m.numel(), 6) for i, c in zip(ids, counts)}
            results.append({"input": it.where, "mask": _png(m), "classes": shares})
    return results


def run_instance_segmentation(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict]:
    """Instances above --threshold: label, score and box in image pixels; `mask` (PNG) has instance k's pixels at k."""
    threshold = _threshold(options, 0.5)
    results = []
    for group, batch in batches(pipe.items(args), size):
        found = pipe.model.instance_inference(pipe.forward(batch), top_k=int(options.get("top") or 100))
        for k, it in enumerate(group):
            keep = found[k]["scores"] > threshold
            masks = found[k]["masks"][keep]
            label_map = torch.zeros(masks.shape[1:], dtype=torch.long)
            objects = []
            for j, (m, s, c) in enumerate(zip(masks, found[k]["scores"][keep], found[k]["labels"][keep]), start=1):
                label_map[m.cpu()] = j
                big = _to_size(m.long(), it.meta["size"]).bool()
                ys, xs = big.nonzero(as_tuple=True)
                box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
                objects.append({"instance": j, "label": pipe.label(int(c)), "id": int(c), "score": round(float(s), 6),
                                "box": box})
            results.append({"input": it.where, "mask": _png(_to_size(label_map, it.meta["size"])), "objects": objects})
    return results


def run_panoptic_segmentation(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict]:
    """The segment-id map (PNG: 0 void, segments from 1) and each segment's class."""
    results = []
    for group, batch in batches(pipe.items(args), size):
        ids, classes = pipe.model.panoptic_inference(pipe.forward(batch),
                                                     object_threshold=float(options.get("threshold") or 0.8))
        for k, it in enumerate(group):
            segments = [{"segment": s + 1, "label": pipe.label(int(c)), "id": int(c)} for s, c in enumerate(classes[k])]
            results.append({"input": it.where, "mask": _png(_to_size(ids[k], it.meta["size"])), "segments": segments})
    return results


def _to_image(x: torch.Tensor) -> Any:
    """A (C, H, W) sample in [-1, 1] as a PIL image: grey or RGB; other channel counts (latents of a model without
    its autoencoder) show their first three channels."""
    from PIL import Image

    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if x.shape[0] == 1:
        return Image.frombytes("L", (x.shape[2], x.shape[1]), bytes(x[0].flatten().tolist()))
    rgb = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
    return Image.frombytes("RGB", (x.shape[2], x.shape[1]), bytes(rgb.permute(1, 2, 0).flatten().tolist()))


def _init_sample(path: Path, shape: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, int]]:
    """--init-image as a (C, H, W) sample in [-1, 1] and the file's (width, height): a PNG/JPEG resized to the
    sample's size for a pixel model (1 or 3 channels), a .pt tensor of the sample's shape for a latent model (the
    compiled U-Net has no VAE encoder: e.g. the .pt a text-to-image run wrote)."""
    if len(shape) != 3:
        raise PredictError("image-to-image and inpainting are for image models; this model samples "
                           f"{tuple(shape)} (video)")
    if path.suffix.lower() == ".pt":
        if not path.is_file():
            raise PredictError(f"{path}: no such file")
        try:
            x = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable tensor file is one message
            raise PredictError(f"{path}: not a readable tensor file ({e.__class__.__name__})") from None
        x = x[0] if isinstance(x, torch.Tensor) and x.dim() == len(shape) + 1 and x.shape[0] == 1 else x
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(shape):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise PredictError(f"{path}: the init latent is {got}, the model samples {tuple(shape)}")
        return x.float(), (int(shape[2]), int(shape[1]))
    if shape[0] not in (1, 3):
        raise PredictError(f"{path}: this model samples {shape[0]}-channel latents (no VAE encoder compiled): give "
                           "--init-image as a .pt latent of shape " + str(tuple(shape)))
    im = inputs.read_image(path, int(shape[0]))  # the U-Net families sample square images (image_size)
    x = inputs.image_tensor(im, int(shape[1]), int(shape[0]), inputs.ImageMode("square", (0.5,), (0.5,)))
    return x, im.size


def _mask(path: Path, size: tuple[int, int], shape: tuple[int, ...]) -> torch.Tensor:
    """--mask as a (1, H, W) float 0/1 map at the sample's size: white (> 127) is repainted, black kept. Its size
    must be the init image's."""
    from PIL import Image

    im = inputs.read_image(path, 1)
    if im.size != size:
        raise PredictError(f"{path}: the mask is {im.size[0]}x{im.size[1]}, the init image {size[0]}x{size[1]}; "
                           "they must be the same size")
    im = im.resize((int(shape[2]), int(shape[1])), Image.Resampling.NEAREST)
    m = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(1, int(shape[1]), int(shape[2]))
    return (m > 127).float()


def _start(pipe: Pipeline, options: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any] | None:
    """--init-image, --strength and --mask checked and read: None for text-to-image."""
    if options.get("init_image") is None:
        if "strength" in options or options.get("mask") is not None:
            raise PredictError("--strength and --mask need --init-image (the image to start from)")
        return None
    masked = options.get("mask") is not None
    strength = float(options.get("strength", 1.0 if masked else 0.8))
    if not 0.0 <= strength <= 1.0:
        raise PredictError(f"--strength must be in [0, 1] (0: the init image, 1: from pure noise), got {strength}")
    x0, size = _init_sample(Path(options["init_image"]), shape)
    mask = _mask(Path(options["mask"]), size, shape) if masked else None
    return {"x0": x0.to(pipe.device), "strength": strength, "mask": None if mask is None else mask.to(pipe.device)}


def _from_image(pipe: Pipeline, start: dict[str, Any], n: int, steps: int, gen: torch.Generator) -> dict[str, Any]:
    """sample()'s x, t_start and callback for image-to-image (SDEdit: the init noised to the timestep the strength
    picks, then denoised from there) and inpainting (after each step the kept region is the init noised to that
    step's level, so after the last it is the init itself, exactly). Strength 1 starts from pure noise, the draw
    text-to-image makes; strength 0 runs no step."""
    c, abar = pipe.model.config, pipe.model.alphas_cumprod
    x0 = start["x0"].unsqueeze(0).expand(n, *start["x0"].shape)
    noise = torch.randn(x0.shape, generator=gen, device=pipe.device)  # sample()'s own first draw
    count = min(max(steps, 1), int(c.timesteps))
    ratio = int(c.timesteps) // count
    k = min(int(count * start["strength"]), count)  # the last k steps of the schedule run
    kw: dict[str, Any] = {"x": noise}
    if k == 0:
        kw = {"x": x0.clone(), "skip": True}
    elif k < count:
        t_start = (k - 1) * ratio
        a = abar[t_start]
        kw = {"x": a.sqrt() * x0 + (1 - a).sqrt() * noise, "t_start": t_start}
    mask = start["mask"]
    if mask is not None:
        def blend(x: torch.Tensor, a_prev: torch.Tensor) -> torch.Tensor:
            known = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * noise
            return torch.where(mask > 0.5, x, known)

        kw["callback"] = blend
    return kw


def run_denoising(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Prompts in (an empty prompt: unconditional), samples out: the model's sample() with --steps and classifier-free
    --guidance (the unconditional branch reads the tokenised empty prompt); with --init-image, image-to-image from
    it at --strength, and with --mask inpainting of the mask's white region (see _from_image)."""
    name = next(n for n in pipe.inputs if n not in ("timestep", "text"))
    start_from = _start(pipe, options, tuple(int(d) for d in pipe.inputs[name].shape))
    context = int(pipe.config.get("context", pipe.inputs["text"].shape[-1]))

    def ids(text: str) -> list[int]:
        if not text and pipe.tokenizer is None:
            return []
        return pipe.encode(text)[:context]

    prompts = [ids(a) for a in args]
    pad = pipe.token_id(EOS_NAMES) or 0
    latent = int(pipe.inputs[name].shape[0]) not in (1, 3)
    results = []
    for start in range(0, len(args), size):
        chunk = prompts[start : start + size]
        text = torch.tensor([p + [pad] * (context - len(p)) for p in chunk], dtype=torch.long, device=pipe.device)
        empty = ids("")
        uncond = torch.tensor([empty + [pad] * (context - len(empty))] * len(chunk), dtype=torch.long,
                              device=pipe.device)
        gen = torch.Generator(device=pipe.device).manual_seed(int(options.get("seed") or 0) + start)
        steps = int(options.get("steps") or 50)
        kw = _from_image(pipe, start_from, len(chunk), steps, gen) if start_from is not None else {}
        with torch.no_grad():
            if kw.pop("skip", False):  # strength 0: the init image itself
                x = kw["x"]
            else:
                x = pipe.model.sample(text, steps=steps, guidance_scale=float(options.get("guidance") or 1.0),
                                      uncond=(uncond,), generator=gen, **kw)
        for k in range(len(chunk)):
            r: dict[str, Any] = {"input": args[start + k], "latent": latent, "tensor": x[k].cpu()}
            if x.dim() == 5:  # video: (C, T, H, W)
                r["frames"] = [_to_image(x[k, :, t]) for t in range(x.shape[2])]
            else:
                r["image"] = _to_image(x[k])
            results.append(r)
    return results


def run_retrieval(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Images and texts in: for each image the texts ranked by similarity (softmax over the texts), and the reverse."""
    images = [a for a in args if Path(a).suffix.lower() in inputs.IMAGE_SUFFIXES]
    texts = [a for a in args if a not in images]
    if not images or not texts:
        raise PredictError("retrieval ranks texts for images: give image files and texts")
    pics = [pipe.image(a).tensors["image"] for a in images]
    ids = [pipe.encode(t) for t in texts]
    longest = max(len(i) for i in ids)
    pad = pipe.token_id(EOS_NAMES) or 0
    tokens = torch.tensor([i + [pad] * (longest - len(i)) for i in ids], dtype=torch.long)
    logits = _first(pipe.forward({"image": torch.stack(pics), "text": tokens})).float()  # (images, texts)
    results = []
    for k, a in enumerate(images):
        p, order = logits[k].softmax(-1).sort(descending=True)
        results.append({"input": a, "ranking": [{"text": texts[int(j)], "score": round(float(s), 6)}
                                                for s, j in zip(p, order)]})
    for k, t in enumerate(texts):
        p, order = logits[:, k].softmax(-1).sort(descending=True)
        results.append({"input": t, "ranking": [{"image": images[int(j)], "score": round(float(s), 6)}
                                                for s, j in zip(p, order)]})
    return results


# -------------------------------------------------------------------------------------------- agents


def run_actions(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Observations in (a CSV of rows, a raw row, or image frames); the greedy action and the policy out."""
    results = []
    for group, batch in batches(pipe.items(args), size):
        obs = next(iter(batch.values())).to(pipe.device)
        out = pipe.model(obs)
        outs = out if isinstance(out, tuple) else (out,)
        action = pipe.model.act(obs, greedy=True) if hasattr(pipe.model, "act") else outs[0].argmax(-1)
        for k, it in enumerate(group):
            r: dict[str, Any] = {"input": it.where}
            a = action[k]
            r["action"] = int(a) if a.dim() == 0 and not a.is_floating_point() else [round(float(v), 6)
                                                                                      for v in a.flatten()]
            if pipe.task == "value_based":
                r["q_values"] = [round(float(v), 6) for v in outs[0][k]]
            elif "action_dim" in pipe.config:
                r["mean"] = [round(float(v), 6) for v in outs[0][k]]
                r["std"] = [round(float(v), 6) for v in outs[1][k].exp()]
            else:
                r["probabilities"] = [round(float(v), 6) for v in outs[0][k].float().softmax(-1)]
            if pipe.task == "actor_critic":
                r["value"] = round(float(outs[-1][k].flatten()[0]), 6)
            results.append(r)
    return results


def run_world_model(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """An observation row and --action in; the predicted next observation, reward and episode-end probability."""
    action = integer(str(options.get("action") if options.get("action") is not None else 0), "action")
    _known(pipe, action, "num_actions", "action")
    results = []
    for a in args:
        for it in pipe._rows(a):
            nxt, reward, done = pipe.model(it.tensors["tabular"][None].to(pipe.device),
                                           torch.tensor([action], device=pipe.device))
            results.append({"input": it.where, "action": action,
                            "next_observation": [round(float(v), 6) for v in nxt[0]],
                            "reward": round(float(reward.flatten()[0]), 6),
                            "done_probability": round(float(done.flatten()[0].sigmoid()), 6)})
    return results


def _known(pipe: Pipeline, value: int, field: str, what: str) -> int:
    """An id the model has an embedding for: 0 <= value < the Config's `field` (where it has one)."""
    n = int(pipe.config.get(field, 0))
    if n and not 0 <= value < n:
        raise PredictError(f"{what} {value}: the model knows {what}s 0..{n - 1}")
    return value


def run_recommendation(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict]:
    """User ids in; the --top items of the highest score u . v over the catalogue."""
    top = int(options.get("top") or 10)
    users = torch.tensor([_known(pipe, integer(a, "user"), "num_users", "user") for a in args], device=pipe.device)
    items = pipe.model.recommend(users, k=top)
    u, v = pipe.model(users, items.flatten())
    scores = (u.repeat_interleave(items.shape[1], 0) * v).sum(-1).view_as(items)
    return [{"input": a, "items": [{"item": int(i), "score": round(float(s), 6)} for i, s in zip(items[k], scores[k])]}
            for k, a in enumerate(args)]


def run_ranking(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """`USER:ITEM` pairs in; one relevance score each, and the items of each user ranked."""
    pairs = []
    for a in args:
        u, colon, i = a.partition(":")
        if not colon:
            raise PredictError(f"input `{a}`: expected USER:ITEM ids")
        pairs.append((_known(pipe, integer(u, "user"), "num_users", "user"),
                      _known(pipe, integer(i, "item"), "num_items", "item")))
    user = torch.tensor([p[0] for p in pairs], device=pipe.device)
    item = torch.tensor([p[1] for p in pairs], device=pipe.device)
    scores = _first(pipe.model(user, item)).float().flatten()
    return [{"input": a, "user": u, "item": i, "score": round(float(s), 6)}
            for a, (u, i), s in zip(args, pairs, scores)]


def run_rag(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """A question and --docs FOLDER in: the documents' passages (passage_length tokens each) scored by the compiled
    retriever, exact search over all of them; the best num_passages feed the reader, which writes the answer."""
    docs = options.get("docs")
    if not docs:
        raise PredictError("retrieval-augmented generation needs --docs FOLDER (the .txt/.md files to answer from)")
    root = Path(docs)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in (".txt", ".md"))
    if not files:
        raise PredictError(f"{root}: no .txt or .md documents")
    plen, n = int(pipe.config["passage_length"]), int(pipe.config["num_passages"])
    passages: list[tuple[str, list[int]]] = []
    for f in files:
        text = data.read_utf8(f)
        ids = pipe.known_ids(list(pipe.tokenizer.encode(text).ids), text) if pipe.tokenizer is not None else \
            pipe.encode("")
        passages += [(f"{f.name}#{k // plen}", ids[k : k + plen]) for k in range(0, max(len(ids), 1), plen)]
    pad = pipe.token_id(("<pad>",)) or 0
    bos = pipe.token_id(("<pad>",) + BOS_NAMES) or 0
    eos = options.get("eos_token_id", pipe.token_id(EOS_NAMES))
    results = []
    for a in args:
        q = torch.tensor([pipe.encode(a)], device=pipe.device)
        start = torch.tensor([[bos]], device=pipe.device)
        scores = []
        for k in range(0, len(passages), n):  # the retriever's score of every passage, n at a time
            group = passages[k : k + n]
            p = torch.full((1, n, plen), pad, dtype=torch.long)
            for j, (_, ids) in enumerate(group):
                p[0, j, : len(ids)] = torch.tensor(ids)
            scores += pipe.model(q, p.to(pipe.device), start)[1][0, : len(group)].tolist()
        best = sorted(range(len(passages)), key=lambda j: -scores[j])[:n]
        p = torch.full((1, n, plen), pad, dtype=torch.long)
        for j, idx in enumerate(best):
            p[0, j, : len(passages[idx][1])] = torch.tensor(passages[idx][1])
        new = _seq2seq(pipe, {"text": q, "passages": p}, bos, int(options.get("max_new_tokens") or 32), eos, options,
                       _generator(options))
        out = _strip(new[0], eos)
        results.append({"input": a, "answer": pipe.decode(out).strip(),
                        "passages": [{"passage": passages[j][0], "score": round(scores[j], 6)} for j in best]})
    return results


Runner = Callable[["Pipeline", list[str], int, dict[str, Any]], list[dict[str, Any]]]

# task -> (runner, what it writes: json | png (a mask or image per input) | text)
TASKS: dict[str, tuple[Runner, str]] = {
    "generation": (run_generation, "text"),
    "multimodal_generation": (run_generation, "text"),
    "speech_recognition": (run_speech, "text"),
    "classification": (run_classification, "json"),
    "multimodal_classification": (run_classification, "json"),
    "multimodal_question_answering": (run_classification, "json"),
    "graph_classification": (run_classification, "json"),
    "regression": (run_regression, "json"),
    "sequence_labeling": (run_sequence_labeling, "json"),
    "question_answering": (run_question_answering, "json"),
    "document_qa": (ocr.run_document_qa, "json"),
    "shape_generation": (run_points, "json"),
    "embedding": (run_embedding, "json"),
    "time_series_forecast": (run_forecast, "json"),
    "anomaly_detection": (run_anomaly, "json"),
    "semantic_segmentation": (run_semantic_segmentation, "png"),
    "instance_segmentation": (run_instance_segmentation, "png"),
    "panoptic_segmentation": (run_panoptic_segmentation, "png"),
    "object_detection": (run_detection, "json"),
    "denoising": (run_denoising, "png"),
    "multimodal_retrieval": (run_retrieval, "json"),
    "node_classification": (run_nodes, "json"),
    "link_prediction": (run_links, "json"),
    "policy_gradient": (run_actions, "json"),
    "value_based": (run_actions, "json"),
    "actor_critic": (run_actions, "json"),
    "model_based": (run_world_model, "json"),
    "recommendation": (run_recommendation, "json"),
    "ranking": (run_ranking, "json"),
    "retrieval_generation": (run_rag, "text"),
}
