"""Audio front ends and joint embeddings: log-mel spectrograms, pooled text features, contrastive logits."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .core import Param, Primitive, Shape, ShapeError, _check_positive, _same, fmt_shape, numel


def _log_mel_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 2:
        raise ShapeError(f"expects waveforms of shape (B, samples), got {fmt_shape(x)}")
    if not isinstance(x[1], int):
        raise ShapeError("the number of samples must be static (a family parameter)")
    if x[1] <= a["n_fft"] // 2:  # torch.stft(center=True) reflect-pads n_fft / 2 each side: it needs more samples
        raise ShapeError(f"{x[1]} samples are too few for the centred STFT: its reflect padding of n_fft / 2 = "
                         f"{a['n_fft'] // 2} needs more than {a['n_fft'] // 2} samples")
    return [(x[0], a["n_mels"], x[1] // a["hop"])]


def _log_mel_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    b, mels, frames = o[0]
    bins = a["n_fft"] // 2 + 1
    return 2 * b * mels * bins * frames, 5 * b * bins * frames + 6 * numel(o[0])  # the filterbank matmul; FFT uncounted


def _log_mel_check(a: Mapping[str, Any]) -> str | None:
    err = _check_positive("n_mels", "n_fft", "hop", "sample_rate")(a)
    if err is None and a["hop"] > a["n_fft"]:
        return f"hop ({a['hop']}) must not exceed n_fft ({a['n_fft']})"
    return err


def _eot_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, ids = s
    if len(x) != 3 or len(ids) != 2:
        raise ShapeError(f"expects states (B, T, D) and ids (B, T), got {fmt_shape(x)} and {fmt_shape(ids)}")
    return [(x[0], x[2])]


def _contrastive_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, y = s
    if len(x) != 2 or len(y) != 2 or not _same(x[1], y[1]):
        raise ShapeError(f"expects (B, D) and (B', D), got {fmt_shape(x)} and {fmt_shape(y)}")
    return [(x[0], y[0])]


def _contrastive_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    return 2 * i[0][0] * i[1][0] * i[0][1], numel(o[0])


_P = Param

PRIMS: list[Primitive] = [
    Primitive(
        "eot_pool", (), "Takes each sequence's state at its end-of-text token, the position of the largest id "
        "(CLIP's text pooling): (B, T, D) and ids (B, T) -> (B, D).",
        n_inputs=2, shape=_eot_shape, saves="none",
        saved=lambda a, i, o: 2 * 8 * i[0][0],  # the int64 row and column indices
    ),
    Primitive(
        "contrastive_logits", (_P("init", "float", 2.6592),),
        "Similarity logits of two batches of unit vectors, exp(logit_scale) a @ b^T: (B, D), (B', D) -> (B, B'); "
        "the learned temperature starts at exp(init) (CLIP: 1 / 0.07).",
        n_inputs=2, weights=lambda a: {"logit_scale": ()}, shape=_contrastive_shape, flops=_contrastive_flops,
        tags=frozenset({"mm"}),
        saved=lambda a, i, o: 4 * math.prod(o[0]) + 4,  # the unscaled similarities and exp(logit_scale)
    ),
    Primitive(
        "log_mel", (_P("n_mels", "int", 80), _P("n_fft", "int", 400), _P("hop", "int", 160),
                    _P("sample_rate", "int", 16000)),
        "Whisper's log-mel spectrogram of waveforms (B, samples) -> (B, n_mels, samples // hop): power of a centred "
        "Hann-window STFT (last frame dropped), a Slaney mel filterbank, log10, clamped to its per-example maximum "
        "- 8, then (x + 4) / 4.",
        shape=_log_mel_shape, flops=_log_mel_flops, check=_log_mel_check, saves="none", tags=frozenset({"mm"}),
    ),
]
