"""generate() for a compiled model that decodes token by token, as transformers' generate() does.

    import torch
    from model import build_model
    model = build_model().eval()
    out = model.generate(torch.tensor([[464, 2068]]), max_new_tokens=20)                 # greedy
    out = model.generate(ids, max_new_tokens=20, do_sample=True, top_p=0.9, generator=torch.Generator().manual_seed(0))
    out = model.generate(ids, max_new_tokens=20, num_beams=4, length_penalty=1.0, eos_token_id=1)   # beam search

Decoders (GPT-2, LLaMA, MoE, Mamba, S4D) return the prompt and the new tokens; encoder-decoders (T5, Whisper)
take the source (token ids, or a waveform for Whisper) and return the decoder's tokens: the start token
(`decoder_start_token_id`, default 0) or `decoder_input_ids`, then the new ones. A decoder after a prefix (a
vision-language model: `vlm.generate(ids, image=images, max_new_tokens=20)`) takes its other inputs by name and
returns the prompt and the new tokens, as a decoder.

The prompt is run once (prefill), then one token per step. Attention reads the keys and values of the positions
before it from a cache: it reaches model.py's attention through each attention module's `kv_cache` attribute
(None outside generate()), `attention(..., cache=self.kv_cache)` hands the new keys and values to
`LayerCache.update`, which returns all of them so far and the mask; `apply_rope`, learned positions and T5's
relative position bias read the positions of the current tokens. State-space layers carry their state instead
(a causal convolution's last inputs, a selective scan's or S4D's state), of fixed size. In an encoder-decoder,
the modules that read the source only (model.py's `decoding["once"]`: the encoder, the cross-attention key and
value projections) run in the first forward and return the same outputs afterwards. In a decoder after a prefix
(model.py's `decoding["kind"]` "prefix_decoder"), the modules that compute the prefix (`decoding["once"]`: a VLM's
vision tower and projector) run in the first forward, whose pass holds the prefix's positions and the prompt's;
later ones give an empty prefix, so the model's join of the prefix and the tokens passes the new token alone, and
the prefix's keys and values stay in the cache. Prompts of different lengths are left-padded, with `attention_mask` (1 for a token, 0 for padding): a padded position is never attended to
and positions count tokens only, so each prompt decodes as it would alone; an encoder-decoder's source may be
padded on either side.

This file is copied, as it is, next to model.py; it needs torch only, never MetaGen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "DecodeState",
    "LayerCache",
    "SourceKeys",
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


# ---------------------------------------------------------------- the decoder's positions and masks
class DecodeState:
    """What every layer of one forward pass shares: the mask of the keys so far (B, S: True for a token, False
    for padding), the positions of the current tokens (B, T), and the attention mask of this pass."""

    def __init__(self, key_mask: torch.Tensor, capacity: int) -> None:
        self.capacity = capacity  # the most positions the cache will hold (prompt + new tokens)
        self.key_mask = key_mask.bool()  # (B, S) of every position so far, the current tokens included
        self.positions = torch.zeros(0)
        self.mask: torch.Tensor | None = None
        self.prefix = 0  # the positions before the tokens (add_prefix)
        self.memo: dict[Any, Any] = {}  # what every layer of this pass computes alike (shared)
        self.step(key_mask.shape[1])

    def step(self, new: int) -> None:
        """Makes the last `new` positions of key_mask the current tokens: their positions (the count of tokens
        before them, as transformers' position_ids) and the (B, 1, T, S) mask: causal, no padding key, and each
        query sees itself (so a padding query's row is never empty). None where every key may be seen."""
        km = self.key_mask
        S = km.shape[1]
        self.memo.clear()
        self.positions = (km.long().cumsum(-1) - 1).clamp(min=0)[:, S - new:]  # (B, T)
        if new == 1 and bool(km.all()):
            self.mask = None
            return
        q = torch.arange(S - new, S, device=km.device)[:, None]  # (T, 1) absolute positions of the queries
        j = torch.arange(S, device=km.device)[None, :]  # (1, S)
        self.mask = (((j <= q) & km[:, None, :]) | (j == q))[:, None]  # (B, 1, T, S)

    def add_prefix(self, n: int) -> None:
        """Puts `n` positions that every row attends to (a VLM's image tokens) before the keys so far, and makes
        them current with the current tokens: the first pass of a decoder after a prefix."""
        km = self.key_mask
        current = self.positions.shape[1]
        self.key_mask = torch.cat((km.new_ones(km.shape[0], n), km), dim=1)
        self.capacity += n
        self.prefix += n
        self.step(current + n)

    def extend(self, new_mask: torch.Tensor) -> None:
        """Adds the positions of the next tokens (B, T_new) and makes them current."""
        self.key_mask = torch.cat((self.key_mask, new_mask.bool()), dim=1)
        self.step(new_mask.shape[1])

    def shared(self, key: Any, make: Callable[[], Any]) -> Any:
        """`make()` once per forward pass for every layer that asks with the same `key` (model.py's apply_rope: the
        cosines and sines of the current positions, the same in every layer)."""
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def current(self) -> torch.Tensor:
        """(B, T) True where a current token is a token, False where it is padding."""
        return self.key_mask[:, self.key_mask.shape[1] - self.positions.shape[1]:]

    def reorder(self, index: torch.Tensor) -> None:
        """Keeps rows `index` (beam search): row i becomes the old row index[i]."""
        self.key_mask, self.positions = self.key_mask[index], self.positions[index]
        self.memo.clear()
        if self.mask is not None:
            self.mask = self.mask[index]


# ---------------------------------------------------------------- what each layer keeps between steps
class LayerCache:
    """One attention layer's keys and values so far, (B, kv_heads, S, head_size) after the head split (the layout
    of the ONNX model_with_past's past.<i>.key), in buffers of the state's capacity (written in place, no copy of
    the past per step): each head's positions are contiguous, the layout the attention kernel reads fastest."""

    def __init__(self, state: DecodeState) -> None:
        self.state = state
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Appends this pass's keys and values (B, kv_heads, T, head_size); returns all of them (B, kv_heads, S,
        head_size) and the mask (B, 1, T, S) (None: every key may be seen), for model.py's attention()."""
        T = k.shape[2]
        if self.k is None:
            cap = max(self.state.capacity, T)
            self.k = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            self.v = v.new_empty(v.shape[0], v.shape[1], cap, v.shape[3])
        assert self.v is not None
        end = self.length + T
        if end > self.k.shape[2]:
            raise RuntimeError(f"key-value cache full: {end} positions, capacity {self.k.shape[2]}")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end], self.state.mask

    def reorder(self, index: torch.Tensor) -> None:
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k[index], self.v[index]


class SourceKeys:
    """The cache of an attention over the source (an encoder's self-attention, a decoder's cross-attention):
    nothing to append; the keys are the source's positions, masked where the source is padding."""

    def __init__(self, key_mask: torch.Tensor | None) -> None:
        self.key_mask = key_mask  # (B, S) True for a token, or None: every position

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """k, v: (B, heads, S, head_size), returned as they are with the (B, 1, 1, S) mask of the source's keys."""
        km = self.key_mask
        if km is None:
            return k, v, None
        if km.shape != (k.shape[0], k.shape[2]):
            raise ValueError(f"attention_mask has shape {tuple(km.shape)} but this model's encoder attends over "
                             f"{(k.shape[0], k.shape[2])} positions: give the source unpadded")
        return k, v, km[:, None, None, :]  # (B, 1, 1, S)

    def reorder(self, index: torch.Tensor) -> None:
        if self.key_mask is not None:
            self.key_mask = self.key_mask[index]


class _Once:
    """A module computed once per generate(): its outputs of the first forward, returned in later ones (the
    modules that read the source only). Installed as the module's `forward`."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.calls = module, 0
        self.outputs: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        i, self.calls = self.calls, self.calls + 1
        if i == len(self.outputs):
            self.outputs.append(type(self.module).forward(self.module, *args, **kwargs))
        return self.outputs[i]

    def reorder(self, index: torch.Tensor) -> None:
        """Beam search keeps each beam within its example, whose source (so outputs) every beam shares."""


class _Prefix:
    """A module that computes the prefix of a decoder after a prefix (a VLM's vision tower): its output (B, P, D),
    whose P positions the decode state puts before the tokens, in the first forward; afterwards (with `once`) the
    same with no position, (B, 0, D), so that the model's join passes the new token only. Without `once` (the
    uncached reference) it runs in every forward. Installed as the module's `forward`."""

    def __init__(self, module: torch.nn.Module, state: DecodeState, once: bool) -> None:
        self.module, self.state, self.once = module, state, once
        self.empty: torch.Tensor | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.empty is not None:
            return self.empty
        out = type(self.module).forward(self.module, *args, **kwargs)
        self.state.add_prefix(out.shape[1])
        if self.once:
            self.empty = out[:, :0]
        return out

    def reorder(self, index: torch.Tensor) -> None:
        if self.empty is not None:
            self.empty = self.empty[index]


class _ConvState:
    """model.py's CausalConv1d step by step: the last kernel - 1 inputs of each row instead of zero padding."""

    def __init__(self, module: Any, state: DecodeState) -> None:
        self.module, self.state = module, state
        self.past: torch.Tensor | None = None  # (B, C, kernel - 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        x = x * self.state.current()[..., None].to(x.dtype)  # padding contributes nothing to later tokens
        xt = x.transpose(1, 2)  # (B, C, T)
        k = m.kernel_size[0]
        if self.past is None:
            self.past = xt.new_zeros(xt.shape[0], xt.shape[1], k - 1)
        full = torch.cat((self.past, xt), dim=2)  # (B, C, kernel - 1 + T)
        self.past = full[:, :, full.shape[2] - (k - 1):]
        if xt.shape[2] == 1:  # one token: a dot product per channel (a depthwise convolution call costs more)
            y = (full * m.weight[:, 0]).sum(-1, keepdim=True)  # (B, C, 1)
            return (y if m.bias is None else y + m.bias[:, None]).transpose(1, 2)
        return m._conv_forward(full, m.weight, m.bias).transpose(1, 2).contiguous()  # (B, T, C)

    def reorder(self, index: torch.Tensor) -> None:
        if self.past is not None:
            self.past = self.past[index]


class _ScanState:
    """model.py's SelectiveScan step by step: the same recurrence (the same operations, in the same order) from
    the state the previous tokens left, h (B, d_inner, d_state)."""

    def __init__(self, module: Any, state: DecodeState) -> None:
        self.module, self.state = module, state
        self.h: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, dt: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        m = self.module
        x = x * self.state.current()[..., None].to(x.dtype)  # a padded position leaves the state at zero
        A = -torch.exp(m.A_log)  # (d_inner, d_state)
        dt = F.softplus(dt)
        dA = torch.exp(dt.unsqueeze(-1) * A)  # (B, T, d_inner, d_state)
        dBx = (dt * x).unsqueeze(-1) * b.unsqueeze(2)
        h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1]) if self.h is None else self.h
        hs = []
        for dA_t, dBx_t in zip(dA.unbind(1), dBx.unbind(1)):
            h = torch.addcmul(dBx_t, dA_t, h)  # h_t = dA_t * h_{t-1} + dBx_t
            hs.append(h)
        self.h = h
        y = (torch.stack(hs, dim=1) * c.unsqueeze(2)).sum(-1)  # (B, T, d_inner)
        return y + x * m.D

    def reorder(self, index: torch.Tensor) -> None:
        if self.h is not None:
            self.h = self.h[index]


class _S4DState:
    """model.py's S4D with a state: per channel and mode, h_t = Ab h_{t-1} + Bb x_t (Ab = exp(dt A), Bb = (Ab - 1)
    / A, complex, as (real, imaginary) pairs) and y_t = 2 Re(sum_n C_n h_t) + D x_t. A pass over T tokens is the
    module's own convolution over them plus the part of the state before them, 2 Re(sum_n C_n Ab^(t+1) h_n); the
    new state is Ab^T h + sum_j Ab^(T-1-j) Bb x_j. The prompt is one such pass from a zero state (so its outputs
    are the module's own); each new token another."""

    def __init__(self, module: Any, state: DecodeState) -> None:
        self.module, self.state = module, state
        self.h: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, H, modes) real and imaginary parts

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        x = x * self.state.current()[..., None].to(x.dtype)
        T = x.shape[1]
        y = type(m).forward(m, x)  # (B, T, H): the convolution over these tokens, + D x
        dt = torch.exp(m.log_dt)[:, None]  # (H, 1)
        a_re, a_im = -torch.exp(m.log_A_real), m.A_imag  # (H, modes)
        decay, turn = torch.exp(dt * a_re), dt * a_im
        e_re, e_im = decay * torch.cos(turn) - 1, decay * torch.sin(turn)  # Ab - 1
        norm = a_re * a_re + a_im * a_im
        q_re, q_im = (e_re * a_re + e_im * a_im) / norm, (e_im * a_re - e_re * a_im) / norm  # Bb
        pos = torch.arange(T, device=x.device, dtype=dt.dtype)

        def power(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # Ab^p: (H, modes, len(p))
            mag, phase = torch.exp((dt * a_re).unsqueeze(-1) * p), turn.unsqueeze(-1) * p
            return mag * torch.cos(phase), mag * torch.sin(phase)

        if self.h is not None:
            h_re, h_im = self.h
            c_re, c_im = m.C[..., 0], m.C[..., 1]
            ch_re, ch_im = c_re * h_re - c_im * h_im, c_re * h_im + c_im * h_re  # (B, H, modes)
            p_re, p_im = power(pos + 1)
            y = y + 2 * (torch.einsum("bhn,hnt->bth", ch_re, p_re) - torch.einsum("bhn,hnt->bth", ch_im, p_im))
        r_re, r_im = power(T - 1 - pos)  # Ab^(T-1-j)
        w_re, w_im = q_re[..., None] * r_re - q_im[..., None] * r_im, q_re[..., None] * r_im + q_im[..., None] * r_re
        s_re, s_im = torch.einsum("bth,hnt->bhn", x, w_re), torch.einsum("bth,hnt->bhn", x, w_im)
        if self.h is not None:
            t_re, t_im = (v[..., 0] for v in power(pos.new_tensor([T])))  # Ab^T
            s_re = s_re + t_re * h_re - t_im * h_im
            s_im = s_im + t_re * h_im + t_im * h_re
        self.h = (s_re, s_im)
        return y

    def reorder(self, index: torch.Tensor) -> None:
        if self.h is not None:
            self.h = (self.h[0][index], self.h[1][index])


_RECURRENT: dict[str, Callable[[Any, DecodeState], Any]] = {
    "CausalConv1d": _ConvState, "SelectiveScan": _ScanState, "S4D": _S4DState}


class cached:  # a context manager, used as `with cached(model, state):`
    """Attaches generate()'s caches to `model` for the decode that `state` describes, undone on exit: a
    LayerCache to every attention over the decoded tokens (its modules with a `kv_cache` attribute), SourceKeys to
    every attention over the source (an encoder-decoder's, with the source's padding `source_mask`), a state to
    every state-space layer; learned positions and T5's relative position bias read the state's positions; the
    modules model.py's `decoding["once"]` names run once (with `once`). With `last_only`, the model's `head` sees
    the last position only (the logits generate() reads: the prompt's other positions are not projected onto
    the vocabulary)."""

    def __init__(self, model: torch.nn.Module, state: DecodeState, last_only: bool = False,
                 source_mask: torch.Tensor | None = None, once: bool = True) -> None:
        self.model, self.state, self.last_only = model, state, last_only
        self.source_mask, self.with_once = source_mask, once
        self.hooks: list[torch.utils.hooks.RemovableHandle] = []
        self.kept: list[Any] = []  # what reorder() reorders
        self.replaced: list[torch.nn.Module] = []  # modules whose forward is replaced

    def __enter__(self) -> cached:  # noqa: PYI034
        plan = getattr(self.model, "decoding", None) or {}
        once, cross = set(plan.get("once", ())), set(plan.get("cross", ()))
        prefixed = plan.get("kind") == "prefix_decoder"
        inside: set[str] = set()  # the modules within one computed once
        for name, m in self.model.named_modules():
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            if name in once or parent in inside:
                inside.add(name)
            if name in once and prefixed:
                self._replace(m, _Prefix(m, self.state, self.with_once))
            elif name in once and self.with_once:
                self._replace(m, _Once(m))
            if hasattr(m, "kv_cache"):
                m.kv_cache = SourceKeys(self.source_mask) if name in cross or name in inside else LayerCache(self.state)
                self.kept.append(m.kv_cache)
            elif name in inside:
                continue
            elif type(m).__name__ == "PositionEmbedding":  # model.py's learned positions: x + weight[:, :T]
                self.hooks.append(m.register_forward_hook(self._positions))
            elif type(m).__name__ == "RelativePositionBias":  # T5's: (B, heads, T, S) of the current queries
                self.hooks.append(m.register_forward_hook(self._relative_bias))
            elif type(m).__name__ in _RECURRENT:
                self._replace(m, _RECURRENT[type(m).__name__](m, self.state))
        if self.with_once and once and not prefixed:
            self.hooks.append(self.model.register_forward_pre_hook(self._new_pass))
        head = getattr(self.model, "head", None)
        if self.last_only and isinstance(head, torch.nn.Module):
            self.hooks.append(head.register_forward_pre_hook(self._after_prefix if prefixed else _last_position))
        return self

    def _replace(self, module: torch.nn.Module, forward: Any) -> None:
        module.forward = forward  # an instance attribute: nn.Module.__call__ calls it
        self.replaced.append(module)
        self.kept.append(forward)

    def _new_pass(self, module: torch.nn.Module, args: tuple) -> None:
        for m in self.replaced:
            if isinstance(m.forward, _Once):
                m.forward.calls = 0

    def _after_prefix(self, module: torch.nn.Module, args: tuple) -> tuple:
        """The head of a decoder after a prefix drops the prefix's positions (the rule checks it drops exactly
        those): it gets the last position after as many of its copies (a view, no copy)."""
        x = args[0][:, -1:]  # (B, 1, D)
        return (x.expand(-1, self.state.prefix + 1, -1), *args[1:])  # (B, P + 1, D)

    def _positions(self, module: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return args[0] + module.weight[0][self.state.positions]  # (B, T, dim) at each token's position

    def _relative_bias(self, module: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
        keys = (self.state.key_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, S) positions of the keys
        rel = keys[:, None, :] - self.state.positions[:, :, None]  # (B, T, S)
        return module.weight[module.bucket(rel)].permute(0, 3, 1, 2)  # (B, heads, T, S)

    def reorder(self, index: torch.Tensor) -> None:
        """Keeps rows `index` of every cache and state (beam search)."""
        self.state.reorder(index)
        for k in self.kept:
            k.reorder(index)

    def __exit__(self, *exc: object) -> None:
        for m in self.model.modules():
            if hasattr(m, "kv_cache"):
                setattr(m, "kv_cache", None)  # noqa: B010 (an attribute of model.py's modules, not of nn.Module)
        for m in self.replaced:
            del m.forward
        for h in self.hooks:
            h.remove()


def _last_position(module: torch.nn.Module, args: tuple) -> tuple:
    return (args[0][:, -1:], *args[1:])  # (B, 1, D): the features of the last position


def _steps(model: torch.nn.Module) -> bool:
    return any(hasattr(m, "kv_cache") or type(m).__name__ in _RECURRENT for m in model.modules())


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


# ---------------------------------------------------------------- one decode: the model, its caches, its inputs
class _Decode:
    """The forward passes of one generate(): `logits(ids)` gives the last position's logits (B, V) of the tokens
    `ids` (all of them on the first pass, then the new one), with the caches (or, without, re-running the whole
    sequence each step: the reference the cache is tested against)."""

    def __init__(self, model: torch.nn.Module, call: Callable[[torch.Tensor], Any], key_mask: torch.Tensor,
                 capacity: int, use_cache: bool, source_mask: torch.Tensor | None) -> None:
        self.model, self.call, self.use_cache, self.source_mask = model, call, use_cache, source_mask
        self.state = DecodeState(key_mask, capacity)
        self.stack = contextlib.ExitStack()
        self.ctx: cached | None = None
        self.all_ids: torch.Tensor | None = None  # without the cache: the whole sequence so far

    def __enter__(self) -> _Decode:  # noqa: PYI034
        if self.use_cache:
            self.ctx = self.stack.enter_context(cached(self.model, self.state, True, self.source_mask))
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: the whole sequence so far (B, S); only its new tokens are run with the cache."""
        if self.use_cache:
            first = self.all_ids is None
            self.all_ids = ids
            return _logits(self.call(ids if first else ids[:, -1:]))[:, -1]
        state = DecodeState(self.state.key_mask, ids.shape[1])
        with cached(self.model, state, True, self.source_mask, once=False):
            return _logits(self.call(ids))[:, -1]

    def advance(self, index: torch.Tensor | None = None) -> None:
        """One more token per row; with `index`, rows reordered first (beam search)."""
        if index is not None:
            if self.ctx is not None:
                self.ctx.reorder(index)
            else:
                self.state.reorder(index)
            if self.source_mask is not None:
                self.source_mask = self.source_mask[index]
        self.state.extend(torch.ones(self.state.key_mask.shape[0], 1, dtype=torch.bool,
                                     device=self.state.key_mask.device))


# ---------------------------------------------------------------- generate()
@torch.no_grad()
def generate(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int = 20, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             repetition_penalty: float = 1.0, eos_token_id: int | list[int] | None = None,
             pad_token_id: int | None = None, attention_mask: torch.Tensor | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None, num_beams: int = 1, length_penalty: float = 1.0,
             early_stopping: bool | str = False, decoder_input_ids: torch.Tensor | None = None,
             decoder_start_token_id: int | None = None, **source: torch.Tensor) -> torch.Tensor:
    """New tokens after a prompt, as transformers' generate(). A decoder returns the prompt (B, T) and up to
    `max_new_tokens` new tokens; an encoder-decoder (model.py's `decoding["kind"]`) reads `input_ids` as its
    source (token ids; a waveform for Whisper; further source inputs by their names as keywords) and returns its
    decoder's tokens: `decoder_input_ids`, or one `decoder_start_token_id` (default: the model config's, or 0),
    then the new ones.

    Greedy unless do_sample (temperature, top_k, top_p; `generator` seeds it) or num_beams > 1 (beam search as
    transformers': length_penalty, early_stopping True, False or "never"; the best beam per row). A row that has
    produced an eos token is padded with pad_token_id (eos where none is given) until every row has, which ends
    generation early. Prompts of different lengths come padded with their attention_mask (default: ones, or the
    positions that are not pad_token_id where it is given, differs from eos, and occurs). use_cache=False runs
    the whole sequence each step (the reference the cache is tested against)."""
    plan = getattr(model, "decoding", None) or {"kind": "decoder"}
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if num_beams > 1 and do_sample:
        raise ValueError("beam search samples nothing: give do_sample=False with num_beams > 1")
    if not _steps(model):
        raise TypeError("this model.py has no key-value cache in its attention: regenerate it with metagenc")
    eos = _token_ids(eos_token_id)
    if pad_token_id is None and eos:
        pad_token_id = eos[0]
    device = next(model.parameters()).device
    if plan["kind"] in ("decoder", "prefix_decoder"):
        if decoder_input_ids is not None or (source and plan["kind"] == "decoder"):
            raise TypeError(f"a decoder takes no {', '.join(sorted(source)) or 'decoder_input_ids'}")
        ids = _token_matrix(input_ids, "input_ids").to(device)
        key_mask = _padding(ids, attention_mask, pad_token_id, eos)
        context = getattr(getattr(model, "config", None), "context", None)
        if isinstance(context, int) and ids.shape[1] + max_new_tokens > context:
            raise ValueError(f"prompt ({ids.shape[1]}) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                             f"context of {context}")
        if plan["kind"] == "prefix_decoder":
            call = _after_prefix(model, plan, ids, source, num_beams, device)
        else:
            def call(x: torch.Tensor) -> Any:
                return model(x)

        source_mask = None
    else:
        call, ids, key_mask, source_mask = _encoder_decoder(model, plan, input_ids, source, attention_mask,
                                                            pad_token_id, eos, decoder_input_ids,
                                                            decoder_start_token_id, num_beams, device)
    was_training = model.training
    model.eval()
    try:
        if num_beams > 1:
            ids, key_mask = ids.repeat_interleave(num_beams, 0), key_mask.repeat_interleave(num_beams, 0)
            with _Decode(model, call, key_mask, ids.shape[1] + max_new_tokens, use_cache, source_mask) as dec:
                return _beam_search(dec, ids, max_new_tokens, num_beams, length_penalty, early_stopping, eos,
                                    pad_token_id, repetition_penalty)
        choose = {"do_sample": do_sample, "temperature": temperature, "top_k": top_k, "top_p": top_p,
                  "repetition_penalty": repetition_penalty, "generator": generator}
        with _Decode(model, call, key_mask, ids.shape[1] + max_new_tokens, use_cache, source_mask) as dec:
            return _sample(dec, ids, max_new_tokens, eos, pad_token_id, choose)
    finally:
        model.train(was_training)


def _token_matrix(ids: torch.Tensor, name: str) -> torch.Tensor:
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2:
        raise ValueError(f"{name} must be (batch, length) token ids, got shape {tuple(ids.shape)}")
    return ids


def _padding(ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_token_id: int | None,
             eos: list[int]) -> torch.Tensor:
    """The (B, T) bool mask of the tokens: the given attention_mask, or where ids are not pad_token_id (when it
    is given, is not an eos token and occurs), or ones."""
    if attention_mask is None:
        if pad_token_id is not None and pad_token_id not in eos and bool((ids == pad_token_id).any()):
            return ids != pad_token_id
        return torch.ones_like(ids, dtype=torch.bool)
    mask = attention_mask.to(ids.device).bool()
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, input_ids {tuple(ids.shape)}")
    return mask


def _encoder_decoder(model: torch.nn.Module, plan: dict, input_ids: torch.Tensor, source: dict[str, torch.Tensor],
                     attention_mask: torch.Tensor | None, pad_token_id: int | None, eos: list[int],
                     decoder_input_ids: torch.Tensor | None, start: int | None, num_beams: int,
                     device: torch.device) -> tuple[Callable[[torch.Tensor], Any], torch.Tensor, torch.Tensor,
                                                    torch.Tensor | None]:
    """The forward of an encoder-decoder as a function of the decoder's tokens, its first tokens, their mask,
    and the source's padding mask (None: no padding)."""
    names, target = list(plan["inputs"]), plan["target"]
    sources = [n for n in names if n != target]
    unknown = sorted(set(source) - set(sources[1:]))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}: this model's inputs are "
                        f"{', '.join(names)}")
    missing = [n for n in sources[1:] if n not in source]
    if missing:
        raise TypeError(f"generate() needs the source input(s) {', '.join(missing)} as keyword arguments")
    inputs = {sources[0]: input_ids, **source}
    first = inputs[sources[0]].to(device)
    if first.dim() == 1:  # one example
        first = first[None]
    B = first.shape[0]
    source_mask = None
    if not first.is_floating_point():  # token ids: padding, given or inferred
        mask = _padding(first, attention_mask, pad_token_id, eos)
        source_mask = None if bool(mask.all()) else mask
    elif attention_mask is not None:
        raise ValueError("attention_mask is for token ids; this model's source is a signal")
    inputs[sources[0]] = first
    if num_beams > 1:
        inputs = {n: v.to(device).repeat_interleave(num_beams, 0) for n, v in inputs.items()}
        source_mask = None if source_mask is None else source_mask.repeat_interleave(num_beams, 0)
    inputs = {n: v.to(device) for n, v in inputs.items()}
    if decoder_input_ids is None:
        if start is None:
            start = getattr(getattr(model, "config", None), "decoder_start_token_id", 0)
        decoder_input_ids = torch.full((B, 1), int(start), dtype=torch.long)
    ids = _token_matrix(decoder_input_ids, "decoder_input_ids").to(device)
    if ids.shape[0] != B:
        raise ValueError(f"decoder_input_ids has {ids.shape[0]} rows, the source {B}")

    def call(tgt: torch.Tensor) -> Any:
        return model(*(tgt if n == target else inputs[n] for n in names))

    return call, ids, torch.ones_like(ids, dtype=torch.bool), source_mask


def _after_prefix(model: torch.nn.Module, plan: dict, ids: torch.Tensor, source: dict[str, torch.Tensor],
                  num_beams: int, device: torch.device) -> Callable[[torch.Tensor], Any]:
    """The forward of a decoder after a prefix as a function of its tokens: the other inputs (a VLM's images) by
    their names, one per row of the prompt (or one for every row)."""
    names, target = list(plan["inputs"]), plan["target"]
    others = [n for n in names if n != target]
    unknown, missing = sorted(set(source) - set(others)), [n for n in others if n not in source]
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}: this model's inputs are "
                        f"{', '.join(names)}")
    if missing:
        raise TypeError(f"generate() needs the input(s) {', '.join(missing)} as keyword arguments, beside the "
                        f"prompt's token ids")
    if ids.shape[1] == 0:
        raise ValueError("input_ids is empty: give at least one token (a start token) after the prefix")
    B = ids.shape[0]
    inputs = {}
    for n in others:
        v = source[n].to(device)
        if v.shape[0] != B:
            if v.shape[0] != 1:
                raise ValueError(f"{n} has {v.shape[0]} rows, input_ids {B}")
            v = v.expand(B, *v.shape[1:])
        inputs[n] = v.repeat_interleave(num_beams, 0) if num_beams > 1 else v

    def call(x: torch.Tensor) -> Any:
        return model(*(x if n == target else inputs[n] for n in names))

    return call


def _sample(dec: _Decode, ids: torch.Tensor, max_new_tokens: int, eos: list[int], pad_token_id: int | None,
            choose: dict[str, Any]) -> torch.Tensor:
    """Greedy or sampled decoding: one token per row and step."""
    B = ids.shape[0]
    unfinished = torch.ones(B, dtype=torch.bool, device=ids.device)
    eos_t = torch.tensor(eos, device=ids.device, dtype=ids.dtype)
    for step in range(max_new_tokens):
        if step:
            dec.advance()
        nxt = select_next(dec.logits(ids), ids, **choose)
        if eos:
            if pad_token_id is not None:
                nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad_token_id))
            unfinished = unfinished & ~torch.isin(nxt, eos_t)
        ids = torch.cat((ids, nxt[:, None]), dim=1)
        if eos and not bool(unfinished.any()):
            break
    return ids


def _beam_search(dec: _Decode, ids: torch.Tensor, max_new_tokens: int, num_beams: int, length_penalty: float,
                 early_stopping: bool | str, eos: list[int], pad_token_id: int | None,
                 repetition_penalty: float) -> torch.Tensor:
    """Beam search as transformers' (its vectorised _beam_search, greedy, one sequence per row): each step keeps
    the best (1 + eos count, at least 2) x num_beams continuations of the running beams by summed log-probability;
    those ending in eos (or at the length limit) among the top num_beams become finished hypotheses scored by
    sum / generated_length ** length_penalty, the best num_beams of the rest run on. Stops when no running beam
    can beat the worst finished one (early_stopping False: at the current length; "never": at the longest for
    a positive length_penalty), when every row has num_beams finished (early_stopping True), or at the limit.
    ids: (B * num_beams, T) with each row's beams adjacent. Returns each row's best finished sequence (B, T + n),
    cut to the longest; shorter ones padded with pad_token_id (or eos, or -1)."""
    BB, cur_len = ids.shape
    B, nb, dev = BB // num_beams, num_beams, ids.device
    prompt_len, max_length = cur_len, cur_len + max_new_tokens
    if max_new_tokens == 0:
        return ids[::nb]
    keep = max(2, 1 + len(eos)) * nb
    top_beams = torch.cat((torch.ones(nb, dtype=torch.bool), torch.zeros(keep - nb, dtype=torch.bool))).to(dev)
    fill = (pad_token_id or eos[0]) if eos else -1
    eos_t = torch.tensor(eos, dtype=torch.long, device=dev)
    running = torch.full((B, nb, max_length), fill, dtype=torch.long, device=dev)
    running[:, :, :cur_len] = ids.view(B, nb, -1)
    sequences = running.clone()
    running_scores = torch.zeros(B, nb, device=dev)
    running_scores[:, 1:] = -1e9  # the first step continues one beam only
    scores = torch.full((B, nb), -1e9, device=dev)
    finished = torch.zeros(B, nb, dtype=torch.bool, device=dev)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)
    running_origin = torch.full((B, nb, max_length - cur_len), -1, dtype=torch.long, device=dev)
    origin = running_origin.clone()
    offsets = torch.arange(B, device=dev)[:, None] * nb

    def gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # (B, beams, ...) rows index (B, k)
        while index.dim() < t.dim():
            index = index.unsqueeze(-1)
        return t.take_along_dim(index, dim=1)

    while True:
        flat = running[:, :, :cur_len].reshape(BB, cur_len)
        log_probs = F.log_softmax(dec.logits(flat).float(), dim=-1)
        log_probs = apply_repetition_penalty(log_probs, flat, repetition_penalty)
        V = log_probs.shape[-1]
        log_probs = (log_probs.view(B, nb, V) + running_scores[:, :, None]).reshape(B, nb * V)
        top_lp, top_i = log_probs.topk(keep)  # (B, keep)
        beam = top_i // V
        cand_origin = gather(running_origin, beam)
        cand = gather(running, beam)
        cand[:, :, cur_len] = top_i % V
        cand_origin[:, :, cur_len - prompt_len] = beam + offsets
        hits = torch.isin(cand[:, :, cur_len], eos_t) | (cur_len + 1 >= max_length)  # (B, keep)
        # the best num_beams that go on
        go_on = top_lp + hits.float() * -1e9
        best = go_on.topk(nb).indices
        running, running_scores, running_origin = gather(cand, best), gather(go_on, best), gather(cand_origin, best)
        # finished hypotheses: among the top num_beams, those that ended
        ended = hits & top_beams[None, :]
        s = top_lp / ((cur_len + 1 - prompt_len) ** length_penalty)
        s = s + (finished.all(-1, keepdim=True) & (early_stopping is True)).float() * -1e9
        s = s + (~improvable).float() * -1e9
        s = s + (~ended).float() * -1e9
        merged = torch.cat((scores, s), dim=1)
        pick = merged.topk(nb).indices
        sequences = gather(torch.cat((sequences, cand), dim=1), pick)
        scores = gather(merged, pick)
        origin = gather(torch.cat((origin, cand_origin), dim=1), pick)
        finished = gather(torch.cat((finished, ended), dim=1), pick)
        index = running_origin[..., cur_len - prompt_len].reshape(-1)  # the beam each running one continues
        cur_len += 1
        # can a running beam still beat the worst finished one?
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - prompt_len
        else:
            best_len = cur_len - prompt_len
        best_possible = running_scores[:, :1] / (best_len ** length_penalty)
        worst = torch.where(finished, scores.min(dim=1, keepdim=True).values, -1.0e9)
        improvable = improvable & (best_possible > worst).any(-1, keepdim=True)
        if not (bool(improvable.any()) and not (bool(finished.all()) and early_stopping is True)
                and not bool(hits.all())):
            break
        dec.advance(index)
    out_len = prompt_len + int((origin[:, 0] + 1).bool().sum(dim=1).max())
    return sequences[:, 0, :out_len]
