"""generate() for a compiled decoder-only language model: the prompt and the new tokens, as transformers does.

    import torch
    from model import build_model
    model = build_model().eval()
    out = model.generate(torch.tensor([[464, 2068]]), max_new_tokens=20)                 # greedy
    out = model.generate(ids, max_new_tokens=20, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(0))

The prompt is run once (prefill), then one token per step, each step reading the keys and values of the
positions before it from a cache. The cache reaches the generated attention through each attention module's
`kv_cache` attribute (None outside generate()): model.py's `attention(..., cache=self.kv_cache)` hands the new
keys and values to `LayerCache.update`, which returns all of them so far and the attention mask; `apply_rope`
and the learned `PositionEmbedding` read the positions of the current tokens. Prompts of different lengths are
left-padded, with `attention_mask` (1 for a token, 0 for padding): a padded position is never attended to and
positions count tokens only, so each prompt decodes as it would alone.

This file is copied, as it is, next to model.py; it needs torch only, never MetaGen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

__all__ = [
    "DecodeState",
    "LayerCache",
    "apply_repetition_penalty",
    "cached",
    "generate",
    "select_next",
    "top_k_filter",
    "top_p_filter",
]


# ---------------------------------------------------------------- logits processing (transformers' order and rules)
def apply_repetition_penalty(logits: torch.Tensor, input_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019), as transformers: the score of every token already in
    `input_ids` (B, T) is divided by `penalty` where positive and multiplied by it where negative. (B, V)."""
    if penalty == 1.0:
        return logits
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    score = logits.gather(1, input_ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, input_ids, score)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keeps the k largest scores of each row (ties with the k-th kept too); the rest become -inf. (B, V)."""
    if k <= 0:
        raise ValueError(f"top_k must be a positive integer, got {k}")
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020), as transformers: keeps the smallest set of most likely tokens
    whose probability reaches `p` (at least one token); the rest become -inf. (B, V)."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p == 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1)  # ascending
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cum <= 1.0 - p
    drop[..., -1] = False  # the most likely token stays
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def select_next(logits: torch.Tensor, input_ids: torch.Tensor, *, do_sample: bool = False, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, repetition_penalty: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row from the last position's logits (B, V): the repetition penalty over
    `input_ids`, then greedy (argmax), or temperature, top-k and top-p before sampling. (B,) int64."""
    logits = apply_repetition_penalty(logits.float(), input_ids, repetition_penalty)
    if not do_sample:
        return logits.argmax(dim=-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


# ---------------------------------------------------------------- the key-value cache
class DecodeState:
    """What every layer of one forward pass shares: the mask of the keys so far (B, S: True for a token, False
    for padding), the positions of the current tokens (B, T), and the attention mask of this pass."""

    def __init__(self, key_mask: torch.Tensor, capacity: int) -> None:
        self.capacity = capacity  # the most positions the cache will hold (prompt + new tokens)
        self.key_mask = key_mask.bool()  # (B, S) of every position so far, the current tokens included
        self.positions = torch.zeros(0)
        self.mask: torch.Tensor | None = None
        self.step(key_mask.shape[1])

    def step(self, new: int) -> None:
        """Makes the last `new` positions of key_mask the current tokens: their positions (the count of tokens
        before them, as transformers' position_ids) and the (B, 1, T, S) mask: causal, no padding key, and each
        query sees itself (so a padding query's row is never empty). None where every key may be seen."""
        km = self.key_mask
        S = km.shape[1]
        self.positions = (km.long().cumsum(-1) - 1).clamp(min=0)[:, S - new:]  # (B, T)
        if new == 1 and bool(km.all()):
            self.mask = None
            return
        q = torch.arange(S - new, S, device=km.device)[:, None]  # (T, 1) absolute positions of the queries
        j = torch.arange(S, device=km.device)[None, :]  # (1, S)
        self.mask = (((j <= q) & km[:, None, :]) | (j == q))[:, None]  # (B, 1, T, S)

    def extend(self, new_mask: torch.Tensor) -> None:
        """Adds the positions of the next tokens (B, T_new) and makes them current."""
        self.key_mask = torch.cat((self.key_mask, new_mask.bool()), dim=1)
        self.step(new_mask.shape[1])


class LayerCache:
    """One attention layer's keys and values so far, (B, S, C) before the head split, in buffers of the
    state's capacity (written in place, no copy of the past per step)."""

    def __init__(self, state: DecodeState) -> None:
        self.state = state
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Appends this pass's keys and values (B, T, C); returns all of them (B, S, C) and the mask (B, 1, T, S)
        (None: every key may be seen), for model.py's attention()."""
        T = k.shape[1]
        if self.k is None:
            cap = max(self.state.capacity, T)
            self.k = k.new_empty(k.shape[0], cap, k.shape[2])
            self.v = v.new_empty(v.shape[0], cap, v.shape[2])
        assert self.v is not None
        end = self.length + T
        if end > self.k.shape[1]:
            raise RuntimeError(f"key-value cache full: {end} positions, capacity {self.k.shape[1]}")
        self.k[:, self.length:end] = k
        self.v[:, self.length:end] = v
        self.length = end
        return self.k[:, :end], self.v[:, :end], self.state.mask


class cached:  # a context manager, used as `with cached(model, state):`
    """Attaches a fresh LayerCache of `state` to every attention of `model` (its modules with a `kv_cache`
    attribute), and makes learned position embeddings add the state's positions; undone on exit. With
    `last_only`, the model's `head` sees the last position only (the logits generate() reads: the prompt's
    other positions are not projected onto the vocabulary)."""

    def __init__(self, model: torch.nn.Module, state: DecodeState, last_only: bool = False) -> None:
        self.model, self.state, self.last_only = model, state, last_only
        self.hooks: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> cached:  # noqa: PYI034
        for m in self.model.modules():
            if hasattr(m, "kv_cache"):
                m.kv_cache = LayerCache(self.state)
            elif type(m).__name__ == "PositionEmbedding":  # model.py's learned positions: x + weight[:, :T]
                self.hooks.append(m.register_forward_hook(self._positions))
        head = getattr(self.model, "head", None)
        if self.last_only and isinstance(head, torch.nn.Module):
            self.hooks.append(head.register_forward_pre_hook(_last_position))
        return self

    def _positions(self, module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return args[0] + module.weight[0][self.state.positions]  # (B, T, dim) at each token's position

    def __exit__(self, *exc: object) -> None:
        for m in self.model.modules():
            if hasattr(m, "kv_cache"):
                m.kv_cache = None
        for h in self.hooks:
            h.remove()


def _last_position(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0][:, -1:], *args[1:])  # (B, 1, D): the features of the last position


def _has_cache(model: torch.nn.Module) -> bool:
    return any(hasattr(m, "kv_cache") for m in model.modules())


def _logits(out: object) -> torch.Tensor:
    """The (B, T, V) logits of a forward's result (a tensor, or a tuple or dict holding them first)."""
    if isinstance(out, dict):
        out = out.get("logits", next(iter(out.values())))
    if isinstance(out, (tuple, list)):
        out = out[0]
    assert isinstance(out, torch.Tensor)
    return out


def _token_ids(value: int | Iterable[int] | None) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


# ---------------------------------------------------------------- the decode loop
@torch.no_grad()
def generate(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int = 20, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             repetition_penalty: float = 1.0, eos_token_id: int | list[int] | None = None,
             pad_token_id: int | None = None, attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The prompt (B, T) followed by up to `max_new_tokens` new tokens: (B, T + n), as transformers'
    generate(). Greedy unless do_sample (temperature, top_k, top_p; `generator` seeds it). A row that has
    produced an eos token is padded with pad_token_id (eos where none is given) until every row has, which ends
    generation early. Prompts of different lengths come left-padded with their attention_mask (default: ones,
    or the positions that are not pad_token_id where it is given and differs from eos). use_cache=False runs
    the whole sequence each step (the reference the cache is tested against)."""
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length) token ids, got shape {tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    eos = _token_ids(eos_token_id)
    if pad_token_id is None and eos:
        pad_token_id = eos[0]
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    B, T = ids.shape
    if attention_mask is None:
        if pad_token_id is not None and pad_token_id not in eos and bool((ids == pad_token_id).any()):
            attention_mask = ids != pad_token_id
        else:
            attention_mask = torch.ones_like(ids, dtype=torch.bool)
    attention_mask = attention_mask.to(device).bool()
    if attention_mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(ids.shape)}")
    context = getattr(getattr(model, "config", None), "context", None)
    if isinstance(context, int) and T + max_new_tokens > context:
        raise ValueError(f"prompt ({T}) + max_new_tokens ({max_new_tokens}) exceeds the model's context of {context}")
    if not _has_cache(model):
        raise TypeError("this model.py has no key-value cache in its attention: regenerate it with metagenc")
    was_training = model.training
    model.eval()
    choose = {"do_sample": do_sample, "temperature": temperature, "top_k": top_k, "top_p": top_p,
              "repetition_penalty": repetition_penalty, "generator": generator}
    unfinished = torch.ones(B, dtype=torch.bool, device=device)
    eos_t = torch.tensor(eos, device=device, dtype=ids.dtype)
    try:
        with contextlib.ExitStack() as stack:
            state = DecodeState(attention_mask, T + max_new_tokens)
            if use_cache:
                stack.enter_context(cached(model, state, last_only=True))
            for step in range(max_new_tokens):
                if use_cache:
                    logits = _logits(model(ids if step == 0 else ids[:, -1:]))[:, -1]
                else:  # the whole sequence, with a cache that starts empty
                    with cached(model, DecodeState(state.key_mask, ids.shape[1]), last_only=True):
                        logits = _logits(model(ids))[:, -1]
                nxt = select_next(logits, ids, **choose)  # type: ignore[arg-type]
                if eos:
                    if pad_token_id is not None:
                        nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad_token_id))
                    unfinished = unfinished & ~torch.isin(nxt, eos_t)
                ids = torch.cat((ids, nxt[:, None]), dim=1)
                if eos and not bool(unfinished.any()):
                    break
                state.extend(torch.ones(B, 1, dtype=torch.bool, device=device))
    finally:
        model.train(was_training)
    return ids
