"""Codec language models (MusicGen): the delay pattern of the codebooks, its inverse, the per-codebook
next-token loss, and the model's generate() (sampling in the delay pattern, no key-value cache).

Each top-level definition is pasted into the model.py that needs it, as it is here (backends/pytorch/lowering.py's
runtime_source: a definition with the ones it calls); a function whose first parameter is `self` is a method of
the generated model class, pasted into it. Imports here are model.py's (torch, nn, F, math) or other runtime
modules', whose definitions model.py holds beside these.
"""

import torch
import torch.nn.functional as F


def delay_pattern(codes, special: int):
    """MusicGen's delay interleaving: aligned codec tokens (B, K, T) -> (B, K, T + K), a first column of `special`
    (the start token), codebook k moved k steps right, the gaps `special`: column c holds frame c - 1 - k of codebook
    k, so one step predicts frame t of codebook 0 with frames t - k of codebooks k > 0 seen up to t - 1."""
    B, K, T = codes.shape
    out = codes.new_full((B, K, T + K), special)
    for k in range(K):
        out[:, k, 1 + k : 1 + k + T] = codes[:, k]
    return out


def undelay_pattern(seq, frames: int):
    """The inverse of delay_pattern: (B, K, S) in the delay layout -> the first `frames` aligned frames (B, K, frames)."""
    return torch.stack([seq[:, k, 1 + k : 1 + k + frames] for k in range(seq.size(1))], dim=1)


def codebook_nll(logits, targets, special: int):
    """Next-token cross-entropy of each codebook over the positions whose target is a token (the delay pattern's
    `special` gaps are ignored), averaged over the codebooks; and the accuracy of the argmax over those positions.
    logits (B, K, S, V), targets (B, K, S)."""
    nll = torch.stack([F.cross_entropy(logits[:, k].flatten(0, 1), targets[:, k].flatten(), ignore_index=special)
                       for k in range(logits.size(1))]).mean()
    valid = targets != special
    accuracy = ((logits.argmax(-1) == targets) & valid).sum().float() / valid.sum().clamp(min=1)
    return nll, accuracy


@torch.no_grad()
def generate(self, prompt_tokens, steps: int, temperature: float = 1.0, top_k: int = 250, generator=None):
    """Autoregressive sampling over all codebooks in the delay pattern: prompt_tokens (B, K, P) aligned codec tokens
    (P may be 0) -> (B, K, P + steps): the prompt, then `steps` new frames. Column c of the delay layout takes one
    token of every codebook from the model's logits at the last position (no key/value cache: each step runs the
    model on the sequence so far); top-k sampling at `temperature` (MusicGen: k = 250, temperature 1), the argmax
    with temperature 0. Columns that hold a prompt frame or a gap keep it."""
    special = self.config.codebook_size
    B, K, P = prompt_tokens.shape
    frames = P + steps
    seq = delay_pattern(prompt_tokens, special)
    seq = torch.cat([seq, seq.new_full((B, K, steps), special)], dim=2)  # (B, K, frames + K)
    codebook = torch.arange(K, device=seq.device)
    for c in range(1 + P, frames + K):
        logits = self(seq[:, :, :c])[:, :, -1].float()  # (B, K, codebook_size): the next column's logits
        if temperature > 0:
            logits = logits / temperature
            if top_k:
                kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            token = torch.multinomial(F.softmax(logits, dim=-1).flatten(0, 1), 1, generator=generator).view(B, K)
        else:
            token = logits.argmax(-1)
        frame = c - 1 - codebook  # the frame column c holds in each codebook
        seq[:, :, c] = torch.where((frame >= P) & (frame < frames), token, seq[:, :, c])
    return undelay_pattern(seq, frames)
