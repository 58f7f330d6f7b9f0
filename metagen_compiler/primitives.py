"""The primitive layers: their signatures, weights, output shapes and FLOPs.

This table is the one place that says what a primitive is. Backends map each primitive name to
code (backends/pytorch/lowering.py); a test checks both tables name the same primitives.

Shapes are tuples of dims; a dim is an int or a symbol name ("B", "T") or a small expression over
symbols ("T+1"). FLOPs follow torch.utils.flop_counter: 2 per multiply-add, counted for matmuls,
convolutions and attention (`mm`); everything else (norms, activations, softmax, adds) is estimated
in a separate total (`other`), documented per primitive below.
"""

from __future__ import annotations

import ast as pyast
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Param", "Primitive", "PRIMITIVES", "ShapeError", "Shape", "Dim", "numel", "dim_add", "subst_dim",
           "moe_capacity", "moe_rows"]

Dim = int | str
Shape = tuple[Dim, ...]


class ShapeError(Exception):
    pass


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # int | float | bool | str | int_or_tuple
    default: Any = ...  # ... = required


@dataclass(frozen=True)
class Primitive:
    name: str
    params: tuple[Param, ...]
    doc: str
    n_inputs: int = 1
    weights: Callable[[Mapping[str, Any]], dict[str, tuple[int, ...]]] = lambda a: {}
    shape: Callable[[Mapping[str, Any], list[Shape]], list[Shape]] = lambda a, s: [s[0]]
    flops: Callable[[Mapping[str, Any], list[tuple[int, ...]], list[tuple[int, ...]]], tuple[int, int]] = (
        lambda a, i, o: (0, 0))
    n_outputs: Callable[[Mapping[str, Any]], int] = lambda a: 1
    check: Callable[[Mapping[str, Any]], str | None] = lambda a: None
    buffers: Callable[[Mapping[str, Any]], dict[str, tuple[int, ...]]] = lambda a: {}
    saves: str = "input"  # what autograd keeps for backward: input | first (input) | output | both | none
    # mm: counted in flops_forward; norm; attention; module: a submodule even without weights (it keeps
    # state); aux_loss: the module adds a term to the model's loss (the VAE's KL divergence)
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def has_weights(self) -> bool:
        return bool(self.weights({p.name: (p.default if p.default is not ... else 1) for p in self.params}))


# ------------------------------------------------------------------ symbolic dims
def subst_dim(d: Dim, env: Mapping[str, int]) -> int:
    if isinstance(d, int):
        return d
    return _dim_eval(_dim_expr(d), env, d)


@functools.lru_cache(maxsize=None)
def _dim_expr(d: str) -> Any:
    """The parsed expression of a symbolic dim (`B`, `T+1`, `B*T`): parsed once per distinct text."""
    return pyast.parse(d, mode="eval").body


def _dim_eval(n: Any, env: Mapping[str, int], d: str) -> int:
    if isinstance(n, pyast.Constant) and isinstance(n.value, int):
        return n.value
    if isinstance(n, pyast.Name):
        return env[n.id]
    if isinstance(n, pyast.BinOp):
        a, b = _dim_eval(n.left, env, d), _dim_eval(n.right, env, d)
        if isinstance(n.op, pyast.Add):
            return a + b
        if isinstance(n.op, pyast.Sub):
            return a - b
        if isinstance(n.op, pyast.Mult):
            return a * b
        if isinstance(n.op, pyast.FloorDiv):
            return a // b
    raise ValueError(d)


def dim_add(d: Dim, k: int) -> Dim:
    if isinstance(d, int):
        return d + k
    if k == 0:
        return d
    return f"{d}+{k}" if k > 0 else f"{d}-{-k}"


def dim_sum(a: Dim, b: Dim) -> Dim:
    """The size of two extents side by side (a concatenation): a number where both are, else `a+b`."""
    return a + b if isinstance(a, int) and isinstance(b, int) else f"{a}+{b}"


def dim_mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 1 or b == 1:  # B*1 is B
        return b if a == 1 else a

    def factor(d: Dim) -> str:  # a sum is one factor: 10*(T+Tp), not 10*T+Tp
        return f"({d})" if isinstance(d, str) and ("+" in d or "-" in d) else str(d)

    return f"{factor(a)}*{factor(b)}"


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _same(a: Dim, b: Dim) -> bool:
    return a == b or not isinstance(a, int) or not isinstance(b, int)


def _last(expected: int, what: str) -> Callable[[Mapping[str, Any], list[Shape]], None]:
    def chk(a: Mapping[str, Any], s: list[Shape]) -> None:
        if not s[0]:
            raise ShapeError("expects a tensor with a feature dimension, got a scalar")
        if not _same(s[0][-1], a[what]):
            raise ShapeError(f"expects last dimension {a[what]}, got {s[0][-1]} (shape {fmt_shape(s[0])})")

    return chk


def fmt_shape(s: Shape) -> str:
    return "(" + ", ".join(str(d) for d in s) + ")"


def _norm_dim(a: Mapping[str, Any], s: list[Shape]) -> int:
    return -1


# ------------------------------------------------------------------ shape helpers
def _linear_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["in_features"], "in_features")(a, s)
    return [s[0][:-1] + (a["out_features"],)]


def _linear_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    rows = numel(i[0][:-1])
    other = rows * a["out_features"] if a["bias"] else 0
    return 2 * rows * a["in_features"] * a["out_features"], other


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, tuple):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _conv_out(n: Dim, k: int, s: int, p: int, d: int = 1) -> Dim:
    if not isinstance(n, int):
        raise ShapeError("convolution needs concrete spatial sizes")
    out = (n + 2 * p - d * (k - 1) - 1) // s + 1
    if out <= 0:
        raise ShapeError(f"input of size {n} is too small for kernel {k}, stride {s}, padding {p}")
    return out


def _conv2d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 4:
        raise ShapeError(f"expects (B, C, H, W), got {fmt_shape(x)}")
    if not _same(x[1], a["in_channels"]):
        raise ShapeError(f"expects {a['in_channels']} input channels, got {x[1]}")
    kh, kw = _pair(a["kernel"])
    sh, sw = _pair(a["stride"])
    ph, pw = _pair(a["padding"])
    return [(x[0], a["out_channels"], _conv_out(x[2], kh, sh, ph), _conv_out(x[3], kw, sw, pw))]


def _conv2d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    kh, kw = _pair(a["kernel"])
    per_out = (a["in_channels"] // a["groups"]) * kh * kw
    mm = 2 * numel(o[0]) * per_out
    return mm, numel(o[0]) if a["bias"] else 0


def _triple(v: Any) -> tuple[int, int, int]:
    if isinstance(v, tuple):
        if len(v) != 3:
            raise ShapeError(f"expects one size or three (time, height, width), got {v}")
        return (int(v[0]), int(v[1]), int(v[2]))
    return (int(v), int(v), int(v))


def _conv3d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 5:
        raise ShapeError(f"expects (B, C, T, H, W), got {fmt_shape(x)}")
    if not _same(x[1], a["in_channels"]):
        raise ShapeError(f"expects {a['in_channels']} input channels, got {x[1]}")
    k, st, p = _triple(a["kernel"]), _triple(a["stride"]), _triple(a["padding"])
    return [(x[0], a["out_channels"], *(_conv_out(x[2 + i], k[i], st[i], p[i]) for i in range(3)))]


def _conv3d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    per_out = (a["in_channels"] // a["groups"]) * math.prod(_triple(a["kernel"]))
    return 2 * numel(o[0]) * per_out, numel(o[0]) if a["bias"] else 0


def _pool_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 4:
        raise ShapeError(f"expects (B, C, H, W), got {fmt_shape(x)}")
    k = int(a["kernel"])
    st = int(a["stride"]) if a["stride"] is not None else k
    p = int(a["padding"])
    return [(x[0], x[1], _conv_out(x[2], k, st, p), _conv_out(x[3], k, st, p))]


def _sdpa_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    q, k, v = s
    if len(q) != 3 or len(k) != 3 or len(v) != 3:
        raise ShapeError(f"expects q, k, v of shape (B, T, C), got {fmt_shape(q)}, {fmt_shape(k)}, {fmt_shape(v)}")
    h, kvh = a["heads"], a["kv_heads"]
    for name, t, n in (("q", q, h), ("k", k, kvh), ("v", v, kvh)):
        if isinstance(t[-1], int) and t[-1] % n:
            raise ShapeError(f"{name} has {t[-1]} features, not divisible into {n} heads")
    if isinstance(q[-1], int) and isinstance(k[-1], int) and q[-1] // h != k[-1] // kvh:
        raise ShapeError(f"q and k head sizes differ: {q[-1] // h} and {k[-1] // kvh}")
    return [q[:-1] + (v[-1] * h // kvh if isinstance(v[-1], int) else v[-1],)]


def _sdpa_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    (b, t, c), (_, s_len, _) = i[0], i[1]
    h = a["heads"]
    d = c // h
    mm = 2 * b * h * t * s_len * d * 2  # q @ k^T and attn @ v, as flop_counter counts them
    other = 5 * b * h * t * s_len  # scale, mask, softmax (exp, sum, divide)
    return mm, other


def _rel_bias_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    q, k = s
    if len(q) != 3 or len(k) != 3:
        raise ShapeError(f"expects queries and keys of shape (B, T, C), got {fmt_shape(q)}, {fmt_shape(k)}")
    return [(1, a["heads"], q[1], k[1])]


def _sdpa_bias_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    q, k, v, bias = s
    out = _sdpa_shape(a | {"kv_heads": a["heads"]}, [q, k, v])
    if len(bias) != 4 or (isinstance(bias[1], int) and bias[1] != a["heads"]):
        raise ShapeError(f"expects a bias of shape (1, {a['heads']}, T, S), got {fmt_shape(bias)}")
    return out


def _rel_bias_check(a: Mapping[str, Any]) -> str | None:
    err = _check_positive("heads", "buckets", "max_distance")(a)
    if err:
        return err
    least = 4 if a["bidirectional"] else 2  # half the buckets per direction, half of those exact
    if a["buckets"] < least:
        return f"buckets must be at least {least}, got {a['buckets']}"
    exact = a["buckets"] // (least // 2) // 2
    if a["max_distance"] <= exact:
        return f"max_distance ({a['max_distance']}) must exceed the {exact} exactly bucketed distances"
    return None


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


def _sinusoid_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3 or (isinstance(x[2], int) and x[2] != a["dim"]):
        raise ShapeError(f"expects (B, T, {a['dim']}), got {fmt_shape(x)}")
    if isinstance(x[1], int) and x[1] > a["length"]:
        raise ShapeError(f"{x[1]} positions exceed the table's {a['length']}")
    return [x]


def _codebook_embedding_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3 or (isinstance(x[1], int) and x[1] != a["codebooks"]):
        raise ShapeError(f"expects codec tokens (B, {a['codebooks']}, T), got {fmt_shape(x)}")
    return [(x[0], x[2], a["dim"])]


def _codebook_heads_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3 or (isinstance(x[2], int) and x[2] != a["dim"]):
        raise ShapeError(f"expects (B, T, {a['dim']}), got {fmt_shape(x)}")
    return [(x[0], a["codebooks"], x[1], a["num"])]


def _sinusoid_positions_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3 or (isinstance(x[2], int) and x[2] != a["dim"]):
        raise ShapeError(f"expects (B, T, {a['dim']}), got {fmt_shape(x)}")
    return [x]


def _even_dim(a: Mapping[str, Any]) -> str | None:
    return _check_positive("dim")(a) or (None if a["dim"] % 2 == 0 and a["dim"] >= 4 else
                                         f"dim must be even and at least 4, got {a['dim']}")


def _elementwise(per: int) -> Callable[[Mapping[str, Any], list[tuple[int, ...]], list[tuple[int, ...]]], tuple[int, int]]:
    return lambda a, i, o: (0, per * numel(o[0]))


def _split_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    n = a["parts"]
    dim = a["dim"] if a["dim"] >= 0 else len(x) + a["dim"]
    if not 0 <= dim < len(x):
        raise ShapeError(f"cannot split dimension {a['dim']} of {fmt_shape(x)}")
    if isinstance(x[dim], int):
        if x[dim] % n:
            raise ShapeError(f"cannot split {x[dim]} into {n} equal parts")
        part: Dim = x[dim] // n
    else:
        part = f"{x[dim]}//{n}"
    return [x[:dim] + (part,) + x[dim + 1:] for _ in range(n)]


def _flatten_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    st = a["start"] if a["start"] >= 0 else len(x) + a["start"]
    en = a["end"] if a["end"] >= 0 else len(x) + a["end"]
    if not 0 <= st <= en < len(x):
        raise ShapeError(f"cannot flatten dims {a['start']}..{a['end']} of {fmt_shape(x)}")
    merged: Dim = 1
    for d in x[st:en + 1]:
        merged = dim_mul(merged, d) if merged != 1 else d
    return [x[:st] + (merged,) + x[en + 1:]]


def _transpose_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = list(s[0])
    d0 = a["dim0"] if a["dim0"] >= 0 else len(x) + a["dim0"]
    d1 = a["dim1"] if a["dim1"] >= 0 else len(x) + a["dim1"]
    if not (0 <= d0 < len(x) and 0 <= d1 < len(x)):
        raise ShapeError(f"cannot transpose dims {a['dim0']}, {a['dim1']} of {fmt_shape(s[0])}")
    x[d0], x[d1] = x[d1], x[d0]
    return [tuple(x)]


def _select_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    dim = a["dim"] if a["dim"] >= 0 else len(x) + a["dim"]
    if not 0 <= dim < len(x):
        raise ShapeError(f"cannot select along dim {a['dim']} of {fmt_shape(x)}")
    return [x[:dim] + x[dim + 1:]]


def _mean_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    return _select_shape(a, s)


def _cls_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["dim"], "dim")(a, s)
    x = s[0]
    return [(x[0], dim_add(x[1], 1), x[2])]


def _pos_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["dim"], "dim")(a, s)
    x = s[0]
    if isinstance(x[1], int) and x[1] > a["length"]:
        raise ShapeError(f"sequence of {x[1]} positions exceeds the {a['length']} learned positions")
    return [x]


def _embedding_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    return [s[0] + (a["dim"],)]


def _resize_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 4:
        raise ShapeError(f"expects (B, C, H, W), got {fmt_shape(x)}")
    return [(x[0], x[1], a["size"], a["size"])]


def _resize_check(a: Mapping[str, Any]) -> str | None:
    if a["mode"] not in ("bilinear", "nearest"):
        return f"mode is \"bilinear\" or \"nearest\", not {a['mode']!r}"
    return _check_positive("size")(a)


def _gap_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 4:
        raise ShapeError(f"expects (B, C, H, W), got {fmt_shape(x)}")
    return [(x[0], x[1])]


def _rope_check(a: Mapping[str, Any]) -> str | None:
    if float(a["scaling"]) <= 0:
        return f"scaling must be positive, got {a['scaling']}"
    return _check_positive("heads")(a)


def _rope_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    return [s[0], s[1]]


def _binary_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    """Equal shapes, or broadcasting over dims of size 1 (a per-channel (B, C, 1, 1) added to (B, C, H, W))."""
    x, y = s
    if len(x) != len(y) or any(not _same(p, q) and 1 not in (p, q) for p, q in zip(x, y)):
        raise ShapeError(f"operands have shapes {fmt_shape(x)} and {fmt_shape(y)}")
    return [tuple(q if p == 1 else p if q == 1 or isinstance(p, int) else q for p, q in zip(x, y))]


def _groupnorm_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) < 2 or not _same(x[1], a["channels"]):
        raise ShapeError(f"expects (B, {a['channels']}, ...), got {fmt_shape(x)}")
    return [x]


def _groupnorm_check(a: Mapping[str, Any]) -> str | None:
    msg = _check_positive("groups", "channels")(a)
    if msg:
        return msg
    if a["channels"] % a["groups"]:
        return f"groups must divide channels, got {a['groups']} groups of {a['channels']} channels"
    return None


def _timestep_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 1:
        raise ShapeError(f"expects one timestep per sample (B,), got {fmt_shape(x)}")
    return [(x[0], a["dim"])]


def _drop_prefix_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    n = int(a["count"])
    if len(x) < 2:
        raise ShapeError(f"expects (B, T, ...), got {fmt_shape(x)}")
    t = x[1]
    if isinstance(t, int):
        if t <= n:
            raise ShapeError(f"cannot drop {n} of {t} positions")
        rest: Dim = t - n
    elif t.startswith(f"{n}+"):  # the length a concat after an n-position prefix made
        rest = t[len(f"{n}+"):]
    else:
        rest = f"{t}-{n}"
    return [(x[0], rest, *x[2:])]


def _rnn_weights(a: Mapping[str, Any], gates: int) -> dict[str, tuple[int, ...]]:
    """nn.LSTM / nn.GRU parameters: per layer and direction, input and hidden weights and two biases."""
    h, dirs = a["hidden"], 2 if a["bidirectional"] else 1
    out: dict[str, tuple[int, ...]] = {}
    for layer in range(a["layers"]):
        n_in = a["in_features"] if layer == 0 else h * dirs
        for sfx in ("", "_reverse")[:dirs]:
            out[f"weight_ih_l{layer}{sfx}"] = (gates * h, n_in)
            out[f"weight_hh_l{layer}{sfx}"] = (gates * h, h)
            out[f"bias_ih_l{layer}{sfx}"] = (gates * h,)
            out[f"bias_hh_l{layer}{sfx}"] = (gates * h,)
    return out


def _rnn_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3:
        raise ShapeError(f"expects (B, T, features), got {fmt_shape(x)}")
    _last(a["in_features"], "in_features")(a, s)
    return [(x[0], x[1], a["hidden"] * (2 if a["bidirectional"] else 1))]


def _rnn_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], gates: int) -> tuple[int, int]:
    """Per step, layer and direction: x @ W_ih^T and h @ W_hh^T (as flop_counter counts the cell's addmm),
    plus the gate nonlinearities and state updates (about 10 per hidden unit, estimated)."""
    b, t, _ = i[0]
    h, dirs = a["hidden"], 2 if a["bidirectional"] else 1
    mm = other = 0
    for layer in range(a["layers"]):
        n_in = a["in_features"] if layer == 0 else h * dirs
        mm += dirs * 2 * b * t * gates * h * (n_in + h)
        other += dirs * b * t * h * 10
    return mm, other


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
def _permute_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, dims = s[0], a["dims"]
    if sorted(dims) != list(range(len(x))):
        raise ShapeError(f"permutation {fmt_shape(dims)} does not order the {len(x)} dims of {fmt_shape(x)}")
    return [tuple(x[i] for i in dims)]


def _check_dims(a: Mapping[str, Any]) -> str | None:
    d = a["dims"]
    if not isinstance(d, tuple) or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in d):
        return f"dims must be a tuple of dim indices such as (0, 2, 3, 1), got {d}"
    return None


def _channels_first(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 4:
        raise ShapeError(f"expects (B, C, H, W), got {fmt_shape(x)}")
    if not _same(x[1], a["channels"]):
        raise ShapeError(f"expects {a['channels']} channels, got {x[1]} (shape {fmt_shape(x)})")
    return [x]


def _conv1d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 3:
        raise ShapeError(f"expects (B, C, L), got {fmt_shape(x)}")
    if not _same(x[1], a["in_channels"]):
        raise ShapeError(f"expects {a['in_channels']} input channels, got {x[1]}")
    length: Dim = x[2]
    if isinstance(length, int) or a["kernel"] != 1 or a["stride"] != 1 or a["padding"] != 0:
        length = _conv_out(x[2], a["kernel"], a["stride"], a["padding"])
    return [(x[0], a["out_channels"], length)]


def _conv1d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    mm = 2 * numel(o[0]) * (a["in_channels"] // a["groups"]) * a["kernel"]
    return mm, numel(o[0]) if a["bias"] else 0


def _tconv_out(n: Dim, k: int, s: int, p: int, op: int) -> Dim:
    if not isinstance(n, int):
        raise ShapeError("transposed convolution needs concrete spatial sizes")
    out = (n - 1) * s - 2 * p + k + op
    if out <= 0:
        raise ShapeError(f"input of size {n} gives no output for kernel {k}, stride {s}, padding {p}")
    return out


def _conv_transpose2d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 4:
        raise ShapeError(f"expects (B, C, H, W), got {fmt_shape(x)}")
    if not _same(x[1], a["in_channels"]):
        raise ShapeError(f"expects {a['in_channels']} input channels, got {x[1]}")
    (kh, kw), (sh, sw), (ph, pw) = _pair(a["kernel"]), _pair(a["stride"]), _pair(a["padding"])
    oh, ow = _pair(a["output_padding"])
    return [(x[0], a["out_channels"], _tconv_out(x[2], kh, sh, ph, oh), _tconv_out(x[3], kw, sw, pw, ow))]


def _conv_transpose2d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]],
                            o: list[tuple[int, ...]]) -> tuple[int, int]:
    # as flop_counter counts a transposed convolution: every input pixel times the whole filter
    kh, kw = _pair(a["kernel"])
    mm = 2 * numel(i[0]) * (a["out_channels"] // a["groups"]) * kh * kw
    return mm, numel(o[0]) if a["bias"] else 0


def _tconv_check(a: Mapping[str, Any]) -> str | None:
    msg = _conv_check(a)
    if msg:
        return msg
    if any(p >= s for p, s in zip(_pair(a["output_padding"]), _pair(a["stride"]))):
        return f"output_padding {a['output_padding']} must be smaller than the stride {a['stride']}"
    return None


def _bn1d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) not in (2, 3):
        raise ShapeError(f"expects (B, C) or (B, C, L), got {fmt_shape(x)}")
    if not _same(x[1], a["channels"]):
        raise ShapeError(f"expects {a['channels']} channels, got {x[1]} (shape {fmt_shape(x)})")
    return [x]


def _matmul_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, y = s
    if len(x) != 3 or len(y) != 3 or not _same(x[0], y[0]) or not _same(x[2], y[1]):
        raise ShapeError(f"expects (B, N, K) @ (B, K, M), got {fmt_shape(x)} and {fmt_shape(y)}")
    return [(x[0], x[1], y[2])]


def _identity_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, n = s[0], a["size"]
    if len(x) != 3 or not _same(x[1], n) or not _same(x[2], n):
        raise ShapeError(f"expects (B, {n}, {n}), got {fmt_shape(x)}")
    return [x]


def _unflatten_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    sizes = a["sizes"] if isinstance(a["sizes"], tuple) else (a["sizes"],)
    dim = a["dim"] if a["dim"] >= 0 else len(x) + a["dim"]
    if not 0 <= dim < len(x):
        raise ShapeError(f"cannot unflatten dim {a['dim']} of {fmt_shape(x)}")
    if -1 in sizes:  # one size inferred: the dim over the product of the others
        known = math.prod(v for v in sizes if v != -1)
        d = x[dim]
        if isinstance(d, int):
            if d % known:
                raise ShapeError(f"cannot unflatten {d} into {fmt_shape(sizes)}: {known} does not divide it")
            rest: Dim = d // known
        elif d.endswith(f"*{known}"):  # (B*s) -> (B, s): the symbol a flatten made
            rest = d[: -len(f"*{known}")]
        else:
            rest = f"({d})//{known}"
        sizes = tuple(rest if v == -1 else v for v in sizes)
    elif isinstance(x[dim], int) and x[dim] != math.prod(sizes):
        raise ShapeError(f"cannot unflatten {x[dim]} into {fmt_shape(sizes)} ({math.prod(sizes)} elements)")
    return [x[:dim] + tuple(sizes) + x[dim + 1:]]


def _reparameterize_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if not x or not _same(x[-1], 2 * a["latent"]):
        raise ShapeError(f"expects last dimension 2 * latent = {2 * a['latent']} (mean, log-variance), "
                         f"got {fmt_shape(x)}")
    return [x[:-1] + (a["latent"],)]


def _check_sizes(a: Mapping[str, Any]) -> str | None:
    if not isinstance(a["sizes"], tuple):
        return f"sizes must be a tuple such as (4, 4), got {a['sizes']}"
    if list(a["sizes"]).count(-1) > 1:
        return f"at most one size may be -1 (inferred), got {a['sizes']}"
    return _check_positive("sizes")({**a, "sizes": tuple(v for v in a["sizes"] if v != -1)})


def _check_heads(a: Mapping[str, Any]) -> str | None:
    if a["heads"] <= 0 or a["kv_heads"] <= 0:
        return "heads must be positive"
    if a["heads"] % a["kv_heads"]:
        return f"kv_heads ({a['kv_heads']}) must divide heads ({a['heads']})"
    return None


def _check_positive(*names: str) -> Callable[[Mapping[str, Any]], str | None]:
    def chk(a: Mapping[str, Any]) -> str | None:
        for n in names:
            v = a[n]
            vals = v if isinstance(v, tuple) else (v,)
            if any(not isinstance(x, int) or x <= 0 for x in vals):
                return f"{n} must be a positive integer, got {v}"
        return None

    return chk


def _conv_check(a: Mapping[str, Any]) -> str | None:
    msg = _check_positive("in_channels", "out_channels", "kernel", "stride", "groups")(a)
    if msg:
        return msg
    if a["in_channels"] % a["groups"] or a["out_channels"] % a["groups"]:
        return f"groups ({a['groups']}) must divide in_channels and out_channels"
    return None


def _conv3d_check(a: Mapping[str, Any]) -> str | None:
    for key in ("kernel", "stride", "padding"):
        v = a[key]
        if isinstance(v, tuple) and len(v) != 3:
            return f"{key} must be one size or three (time, height, width), got {v}"
    msg = _conv_check({**a, "kernel": 1, "stride": 1})
    if msg:
        return msg
    if min(_triple(a["kernel"]) + _triple(a["stride"])) <= 0 or min(_triple(a["padding"])) < 0:
        return f"kernel and stride must be positive and padding non-negative, got {a['kernel']}, {a['stride']}, {a['padding']}"
    return None


# ------------------------------------------------------------------ state-space and mixture-of-experts shapes
def _split_sizes_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    sizes = a["sizes"] if isinstance(a["sizes"], tuple) else (a["sizes"],)
    dim = a["dim"] if a["dim"] >= 0 else len(x) + a["dim"]
    if not 0 <= dim < len(x):
        raise ShapeError(f"cannot split dimension {a['dim']} of {fmt_shape(x)}")
    if isinstance(x[dim], int) and x[dim] != sum(sizes):
        raise ShapeError(f"sizes {'+'.join(str(n) for n in sizes)} = {sum(sizes)} do not add up to {x[dim]}")
    return [x[:dim] + (n,) + x[dim + 1:] for n in sizes]


def _seq_shape(x: Shape, channels: int, what: str) -> None:
    if len(x) != 3:
        raise ShapeError(f"expects (B, T, C), got {fmt_shape(x)}")
    if not _same(x[-1], channels):
        raise ShapeError(f"expects {channels} {what}, got {x[-1]} (shape {fmt_shape(x)})")


def _causal_conv1d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _seq_shape(s[0], a["channels"], "channels")
    return [s[0]]


def _causal_conv1d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    # depthwise: each output element is a kernel-long dot product over its own channel
    return 2 * numel(o[0]) * a["kernel"], numel(o[0]) if a["bias"] else 0


def _scan_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, dt, b, c = s
    _seq_shape(x, a["d_inner"], "features in x")
    _seq_shape(dt, a["d_inner"], "features in dt")
    _seq_shape(b, a["d_state"], "features in B")
    _seq_shape(c, a["d_state"], "features in C")
    return [x]


def _scan_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    # no matmul (FlopCounterMode counts 0); per (token, channel, state): exp(dt A), dt B x (2), the
    # update h = dA h + dBx (2), C h and its sum (2); per (token, channel): softplus (4), dt x, + D x (2)
    b, t, d = i[0]
    n = a["d_state"]
    return 0, 7 * b * t * d * n + 7 * b * t * d


def _s4d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _seq_shape(s[0], a["d_model"], "features")
    return [s[0]]


def _s4d_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    # the causal convolution with a kernel as long as the sequence (depthwise, computed directly: 2 B H T^2);
    # the kernel, per (channel, mode, position): exp, cos, sin, 4 products and the sum (~8), and + D x
    b, t, h = i[0]
    return 2 * b * h * t * t, 8 * h * (a["d_state"] // 2) * t + 2 * b * t * h


def _s4d_check(a: Mapping[str, Any]) -> str | None:
    msg = _check_positive("d_model", "d_state")(a)
    if msg:
        return msg
    if a["d_state"] % 2:
        return f"d_state must be even (d_state / 2 complex modes), got {a['d_state']}"
    return None


def _moe_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _seq_shape(s[0], a["d_model"], "features")
    return [s[0]]


def moe_capacity(a: Mapping[str, Any], tokens: int) -> int | None:
    """Tokens each expert takes: ceil(capacity_factor * tokens * top_k / experts), as the generated MoE computes it;
    None for capacity_factor 0 (no limit: every token reaches its top_k experts, as in Mixtral)."""
    if float(a["capacity_factor"]) == 0:
        return None
    return math.ceil(float(a["capacity_factor"]) * tokens * a["top_k"] / a["experts"])


def moe_rows(a: Mapping[str, Any], tokens: int) -> int:
    """Rows the experts compute for `tokens` tokens: experts x capacity (the capacity buffers), or, without a
    capacity limit, tokens x top_k (each token once per chosen expert, whatever the routing)."""
    cap = moe_capacity(a, tokens)
    return tokens * a["top_k"] if cap is None else a["experts"] * cap


def _moe_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    # router (tokens x d_model x experts) and three expert matmuls over the rows the experts compute
    tokens = numel(i[0][:-1])
    e, d, h = a["experts"], a["d_model"], a["hidden"]
    rows = moe_rows(a, tokens)
    mm = 2 * tokens * d * e + 3 * 2 * rows * d * h
    other = 5 * tokens * e + rows * (4 * h + h) + tokens * a["top_k"] * d * 2  # softmax, silu * up, combine
    return mm, other


def _moe_check(a: Mapping[str, Any]) -> str | None:
    msg = _check_positive("d_model", "hidden", "experts", "top_k")(a)
    if msg:
        return msg
    if a["top_k"] > a["experts"]:
        return f"top_k ({a['top_k']}) must not exceed experts ({a['experts']})"
    if float(a["capacity_factor"]) < 0:
        return f"capacity_factor must be positive, or 0 for no capacity limit, got {a['capacity_factor']}"
    return None


# ------------------------------------------------------------------ graphs: message passing over an edge index
def _graph_shape(width: Callable[[Mapping[str, Any]], int]) -> Callable[[Mapping[str, Any], list[Shape]], list[Shape]]:
    """(N, in_features) node features and a (2, E) edge index -> (N, width) node states."""

    def shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
        x, edges = s
        if len(x) != 2:
            raise ShapeError(f"expects node features (N, {a['in_features']}), got {fmt_shape(x)}")
        _last(a["in_features"], "in_features")(a, s)
        if len(edges) != 2 or not _same(edges[0], 2):
            raise ShapeError(f"expects an edge index (2, E) as its second input, got {fmt_shape(edges)}")
        return [(x[0], width(a))]

    return shape


def _gcn_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    # the linear map (N x in x out) is a matmul; per edge (self loops included): the degree count, the
    # normalisation (two gathers and a product) and the scattered, scaled message (out each); the bias
    n, e = i[0][0], i[1][1] + i[0][0]
    return 2 * n * a["in_features"] * a["out_features"], e * (4 + 2 * a["out_features"]) + 2 * n + n * a["out_features"]


def _gat_flops(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> tuple[int, int]:
    # the linear map is a matmul; per node and head the two attention scores (2 x 2 out); per edge and head
    # the score sum, LeakyReLU, the scatter max, exp, the scatter sum and the division (~7), and the
    # weighted message (2 out per head); the bias
    n, e, h, c = i[0][0], i[1][1] + i[0][0], a["heads"], a["out_features"]
    return 2 * n * a["in_features"] * h * c, 4 * n * h * c + e * h * (7 + 2 * c) + n * h * c


def _gat_check(a: Mapping[str, Any]) -> str | None:
    msg = _check_positive("in_features", "out_features", "heads")(a)
    if msg:
        return msg
    if not 0 <= float(a["negative_slope"]) < 1:
        return f"negative_slope must be in [0, 1), got {a['negative_slope']}"
    return None


def _graph_pool_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, index = s
    if len(x) != 2 or len(index) != 1 or not _same(index[0], x[0]):
        raise ShapeError(f"expects node states (N, D) and a graph id per node (N,), got {fmt_shape(x)}, {fmt_shape(index)}")
    return [(a["graphs"], x[1])]


# ------------------------------------------------------------------ detection
def _concat_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x, y = s
    dim = a["dim"] if a["dim"] >= 0 else len(x) + a["dim"]
    if len(x) != len(y) or not 0 <= dim < len(x) or any(
            not _same(p, q) for i, (p, q) in enumerate(zip(x, y)) if i != dim):
        raise ShapeError(f"cannot concatenate {fmt_shape(x)} and {fmt_shape(y)} along dimension {a['dim']}")
    both = dim_sum(x[dim], y[dim])
    return [tuple(both if i == dim else (p if isinstance(p, int) else q) for i, (p, q) in enumerate(zip(x, y)))]


def _upsample_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 4:
        raise ShapeError(f"expects (B, C, H, W), got {fmt_shape(x)}")
    return [(x[0], x[1], *(dim_mul(d, a["factor"]) for d in x[2:]))]


def _sine_2d_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["dim"], "dim")(a, s)
    x = s[0]
    if len(x) != 3 or (isinstance(x[1], int) and x[1] != a["height"] * a["width"]):
        raise ShapeError(f"expects (B, height * width = {a['height'] * a['width']}, dim), got {fmt_shape(x)}")
    return [x]


def _sine_2d_check(a: Mapping[str, Any]) -> str | None:
    return _check_positive("height", "width", "dim")(a) or (
        None if a["dim"] % 4 == 0 else f"dim must be a multiple of 4 (sin and cos of y and x), got {a['dim']}")


def _queries_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    _last(a["dim"], "dim")(a, s)
    return [(s[0][0], a["num"], a["dim"])]


# temporal fusion transformer
def _grouped_ln_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    width = a["groups"] * a["dim"]
    if not s[0] or not _same(s[0][-1], width):
        raise ShapeError(f"expects last dimension groups x dim = {width}, got shape {fmt_shape(s[0])}")
    return [s[0]]


def _tile_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if not x:
        raise ShapeError("tile needs a tensor with at least one dim")
    d = int(a["dim"]) % len(x)
    return [x[:d] + (dim_mul(x[d], int(a["times"])),) + x[d + 1:]]


# retrieval-augmented generation
def _top_k_pairs_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    scores, question, passages = s
    if (len(scores) != 2 or len(question) != 2 or len(passages) != 3 or not _same(scores[0], question[0])
            or not _same(scores[0], passages[0]) or not _same(scores[1], passages[1])):
        raise ShapeError(f"expects scores (B, P), question tokens (B, Tq) and passage tokens (B, P, Tp), got "
                         f"{fmt_shape(scores)}, {fmt_shape(question)}, {fmt_shape(passages)}")
    if isinstance(passages[1], int) and a["k"] > passages[1]:
        raise ShapeError(f"cannot take the top {a['k']} of {passages[1]} passages")
    return [(scores[0], a["k"], dim_sum(question[1], passages[2]))]


# ------------------------------------------------------------------ the table
_P = Param

_PRIMS = [
    Primitive(
        "linear", (_P("in_features", "int"), _P("out_features", "int"), _P("bias", "bool", True)),
        "y = x W^T + b over the last dimension.",
        weights=lambda a: {"weight": (a["out_features"], a["in_features"])} | ({"bias": (a["out_features"],)} if a["bias"] else {}),
        shape=_linear_shape, flops=_linear_flops, check=_check_positive("in_features", "out_features"),
        tags=frozenset({"mm"}),
    ),
    Primitive(
        "conv2d",
        (_P("in_channels", "int"), _P("out_channels", "int"), _P("kernel", "int_or_tuple"), _P("stride", "int_or_tuple", 1),
         _P("padding", "int_or_tuple", 0), _P("groups", "int", 1), _P("bias", "bool", True)),
        "2-D convolution over (B, C, H, W).",
        weights=lambda a: {"weight": (a["out_channels"], a["in_channels"] // max(1, a["groups"]), *_pair(a["kernel"]))}
        | ({"bias": (a["out_channels"],)} if a["bias"] else {}),
        shape=_conv2d_shape, flops=_conv2d_flops, check=_conv_check, tags=frozenset({"mm"}),
    ),
    Primitive(
        "conv3d",
        (_P("in_channels", "int"), _P("out_channels", "int"), _P("kernel", "int_or_tuple"), _P("stride", "int_or_tuple", 1),
         _P("padding", "int_or_tuple", 0), _P("groups", "int", 1), _P("bias", "bool", True)),
        "3-D convolution over (B, C, T, H, W): video tubelets, kernel and stride as (time, height, width).",
        weights=lambda a: {"weight": (a["out_channels"], a["in_channels"] // max(1, a["groups"]), *_triple(a["kernel"]))}
        | ({"bias": (a["out_channels"],)} if a["bias"] else {}),
        shape=_conv3d_shape, flops=_conv3d_flops, check=_conv3d_check, tags=frozenset({"mm"}),
    ),
    Primitive(
        "conv1d",
        (_P("in_channels", "int"), _P("out_channels", "int"), _P("kernel", "int", 1), _P("stride", "int", 1),
         _P("padding", "int", 0), _P("groups", "int", 1), _P("bias", "bool", True)),
        "1-D convolution over (B, C, L); with kernel 1, a linear map shared by every position (PointNet).",
        weights=lambda a: {"weight": (a["out_channels"], a["in_channels"] // max(1, a["groups"]), a["kernel"])}
        | ({"bias": (a["out_channels"],)} if a["bias"] else {}),
        shape=_conv1d_shape, flops=_conv1d_flops, check=_conv_check, tags=frozenset({"mm"}),
    ),
    Primitive(
        "conv_transpose2d",
        (_P("in_channels", "int"), _P("out_channels", "int"), _P("kernel", "int_or_tuple"), _P("stride", "int_or_tuple", 1),
         _P("padding", "int_or_tuple", 0), _P("output_padding", "int_or_tuple", 0), _P("groups", "int", 1),
         _P("bias", "bool", True)),
        "Transposed 2-D convolution (learned upsampling) over (B, C, H, W).",
        weights=lambda a: {"weight": (a["in_channels"], a["out_channels"] // max(1, a["groups"]), *_pair(a["kernel"]))}
        | ({"bias": (a["out_channels"],)} if a["bias"] else {}),
        shape=_conv_transpose2d_shape, flops=_conv_transpose2d_flops, check=_tconv_check, tags=frozenset({"mm"}),
    ),
    Primitive(
        "batchnorm1d", (_P("channels", "int"), _P("eps", "float", 1e-5), _P("momentum", "float", 0.1)),
        "Batch normalisation over the channel dimension of (B, C) or (B, C, L).",
        weights=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],)},
        buffers=lambda a: {"running_mean": (a["channels"],), "running_var": (a["channels"],), "num_batches_tracked": ()},
        shape=_bn1d_shape, flops=_elementwise(4), check=_check_positive("channels"),
    ),
    Primitive(
        "batchnorm", (_P("channels", "int"), _P("eps", "float", 1e-5), _P("momentum", "float", 0.1)),
        "Batch normalisation over the channel dimension of (B, C, H, W).",
        weights=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],)},
        buffers=lambda a: {"running_mean": (a["channels"],), "running_var": (a["channels"],), "num_batches_tracked": ()},
        shape=lambda a, s: [s[0]], flops=_elementwise(4), check=_check_positive("channels"),
    ),
    Primitive(
        "layernorm", (_P("dim", "int"), _P("eps", "float", 1e-5), _P("bias", "bool", True)),
        "Layer normalisation over the last dimension.",
        weights=lambda a: {"weight": (a["dim"],)} | ({"bias": (a["dim"],)} if a["bias"] else {}),
        shape=lambda a, s: (_last(a["dim"], "dim")(a, s), [s[0]])[1], flops=_elementwise(5),
        check=_check_positive("dim"), tags=frozenset({"norm"}),
    ),
    Primitive(
        "layernorm2d", (_P("channels", "int"), _P("eps", "float", 1e-6)),
        "Layer normalisation over the channels of (B, C, H, W) at each position (ConvNeXt's channels-first norm).",
        weights=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],)},
        shape=_channels_first, flops=_elementwise(5), check=_check_positive("channels"), tags=frozenset({"norm"}),
    ),
    Primitive(
        "learned_log_std", (_P("actions", "int"), _P("init", "float", 0.0)),
        "A learned log standard deviation per action dimension, the same in every state: (B, ...) -> (B, actions) "
        "(a Gaussian policy's, beside its state-dependent mean).",
        weights=lambda a: {"log_std": (a["actions"],)},
        shape=lambda a, s: [(s[0][0], a["actions"])], saves="none", check=_check_positive("actions"),
    ),
    Primitive(
        "groupnorm", (_P("groups", "int"), _P("channels", "int"), _P("eps", "float", 1e-5)),
        "Group normalisation of (B, C, ...): mean and variance over each group of C / groups channels and all "
        "positions, then a learned scale and shift per channel (U-Nets, diffusion models).",
        weights=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],)},
        shape=_groupnorm_shape, flops=_elementwise(5), check=_groupnorm_check, tags=frozenset({"norm"}),
    ),
    Primitive(
        "timestep_embedding", (_P("dim", "int"), _P("flip_sin_to_cos", "bool", True), _P("shift", "float", 0.0),
                               _P("max_period", "float", 10000.0)),
        "Sinusoidal embedding of integer timesteps (B,) -> (B, dim) (DDPM, diffusers' Timesteps): with half = dim / 2, "
        "frequencies exp(-ln(max_period) i / (half - shift)) for i < half, sin and cos of t times each (cos first "
        "if flip_sin_to_cos). No weights.",
        shape=_timestep_shape, flops=_elementwise(3),
        check=lambda a: _check_positive("dim")(a) or (
            None if a["dim"] % 2 == 0 else f"dim must be even, got {a['dim']}"),
        saves="none",
    ),
    Primitive(
        "concat", (_P("dim", "int", 1),),
        "Concatenates two tensors along a dim (the channels of (B, C, H, W) by default: a U-Net's skip joined to its "
        "upsampling path, CSP blocks, PAN necks; dim 1 of tokens: an image prefix before text).",
        n_inputs=2, shape=_concat_shape, saves="none",
    ),
    Primitive(
        "layer_scale", (_P("dim", "int"), _P("init", "float", 1e-6)),
        "A learned scale per feature of the last dimension, starting at `init` (CaiT, ConvNeXt).",
        weights=lambda a: {"weight": (a["dim"],)},
        shape=lambda a, s: (_last(a["dim"], "dim")(a, s), [s[0]])[1], flops=_elementwise(1),
        check=_check_positive("dim"),
    ),
    Primitive(
        "rmsnorm", (_P("dim", "int"), _P("eps", "float", 1e-6)),
        "Root-mean-square normalisation over the last dimension.",
        weights=lambda a: {"weight": (a["dim"],)},
        shape=lambda a, s: (_last(a["dim"], "dim")(a, s), [s[0]])[1], flops=_elementwise(4),
        check=_check_positive("dim"), tags=frozenset({"norm"}),
    ),
    Primitive(
        "embedding", (_P("num", "int"), _P("dim", "int")),
        "Lookup table from integer ids to vectors.",
        weights=lambda a: {"weight": (a["num"], a["dim"])},
        shape=_embedding_shape, check=_check_positive("num", "dim"), saves="input",
    ),
    Primitive(
        "pos_embedding", (_P("length", "int"), _P("dim", "int")),
        "Adds a learned vector per position to (B, T, D), T <= length.",
        weights=lambda a: {"weight": (1, a["length"], a["dim"])},
        shape=_pos_shape, flops=_elementwise(1), check=_check_positive("length", "dim"), saves="none",
    ),
    Primitive(
        "type_embedding", (_P("num", "int"), _P("dim", "int")),
        "Adds the segment (token type) embedding of type 0 to (B, T, D): BERT's token types for single-segment input.",
        weights=lambda a: {"weight": (a["num"], a["dim"])},
        shape=lambda a, s: (_last(a["dim"], "dim")(a, s), [s[0]])[1], flops=_elementwise(1),
        check=_check_positive("num", "dim"), saves="none",
    ),
    Primitive(
        "lstm", (_P("in_features", "int"), _P("hidden", "int"), _P("layers", "int", 1), _P("bidirectional", "bool", False)),
        "LSTM over (B, T, in) -> (B, T, hidden x directions), batch first, zero initial state.",
        weights=lambda a: _rnn_weights(a, 4), shape=_rnn_shape, flops=lambda a, i, o: _rnn_flops(a, i, 4),
        check=_check_positive("in_features", "hidden", "layers"), saves="none", tags=frozenset({"mm"}),
    ),
    Primitive(
        "gru", (_P("in_features", "int"), _P("hidden", "int"), _P("layers", "int", 1), _P("bidirectional", "bool", False)),
        "GRU over (B, T, in) -> (B, T, hidden x directions), batch first, zero initial state.",
        weights=lambda a: _rnn_weights(a, 3), shape=_rnn_shape, flops=lambda a, i, o: _rnn_flops(a, i, 3),
        check=_check_positive("in_features", "hidden", "layers"), saves="none", tags=frozenset({"mm"}),
    ),
    Primitive(
        "eot_pool", (), "Takes each sequence's state at its end-of-text token, the position of the largest id "
        "(CLIP's text pooling): (B, T, D) and ids (B, T) -> (B, D).",
        n_inputs=2, shape=_eot_shape, saves="none",
    ),
    Primitive(
        "l2_normalize", (_P("dim", "int", -1), _P("eps", "float", 1e-12)), "Scales to unit L2 norm along a dim.",
        flops=_elementwise(3),
    ),
    Primitive(
        "contrastive_logits", (_P("init", "float", 2.6592),),
        "Similarity logits of two batches of unit vectors, exp(logit_scale) a @ b^T: (B, D), (B', D) -> (B, B'); "
        "the learned temperature starts at exp(init) (CLIP: 1 / 0.07).",
        n_inputs=2, weights=lambda a: {"logit_scale": ()}, shape=_contrastive_shape, flops=_contrastive_flops,
        tags=frozenset({"mm"}),
    ),
    Primitive(
        "cls_token", (_P("dim", "int"),),
        "Prepends a learned token: (B, T, D) -> (B, T+1, D).",
        weights=lambda a: {"weight": (1, 1, a["dim"])}, shape=_cls_shape, check=_check_positive("dim"), saves="none",
    ),
    Primitive(
        "sdpa", (_P("heads", "int"), _P("kv_heads", "int", 0), _P("causal", "bool", False)),
        "Scaled dot-product attention of q, k, v given as (B, T, C); splits and merges heads.",
        n_inputs=3, shape=_sdpa_shape, flops=_sdpa_flops, check=_check_heads, saves="both",
        tags=frozenset({"mm", "attention"}),
    ),
    Primitive(
        "sdpa_bias", (_P("heads", "int"), _P("causal", "bool", False), _P("scaled", "bool", True)),
        "Dot-product attention of q, k, v given as (B, T, C) with an additive bias (1, heads, T, S) on the scores "
        "(T5's relative positions); scores scaled by 1/sqrt(head size) unless `scaled` is false (T5).",
        n_inputs=4, shape=_sdpa_bias_shape, flops=_sdpa_flops, check=_check_positive("heads"), saves="both",
        tags=frozenset({"mm", "attention"}),
    ),
    Primitive(
        "relative_position_bias", (_P("heads", "int"), _P("buckets", "int", 32), _P("max_distance", "int", 128),
                                   _P("bidirectional", "bool", True)),
        "T5's relative position bias: a learned scalar per head for each bucket of key position - query position "
        "(exact below buckets / 2, log-spaced up to max_distance; signed if bidirectional, else only the past): "
        "queries (B, T, C), keys (B, S, C) -> (1, heads, T, S).",
        n_inputs=2, weights=lambda a: {"weight": (a["buckets"], a["heads"])}, shape=_rel_bias_shape,
        check=_rel_bias_check, saves="none",
    ),
    Primitive(
        "log_mel", (_P("n_mels", "int", 80), _P("n_fft", "int", 400), _P("hop", "int", 160),
                    _P("sample_rate", "int", 16000)),
        "Whisper's log-mel spectrogram of waveforms (B, samples) -> (B, n_mels, samples // hop): power of a centred "
        "Hann-window STFT (last frame dropped), a Slaney mel filterbank, log10, clamped to its per-example maximum "
        "- 8, then (x + 4) / 4.",
        shape=_log_mel_shape, flops=_log_mel_flops, check=_log_mel_check, saves="none", tags=frozenset({"mm"}),
    ),
    Primitive(
        "sinusoid_embedding", (_P("length", "int"), _P("dim", "int")),
        "Adds fixed sinusoidal positions (Whisper's encoder: sin then cos, timescales up to 10000) to (B, T, D), "
        "T <= length; the table is a frozen parameter (counted, not trained).",
        weights=lambda a: {"weight": (a["length"], a["dim"])}, shape=_sinusoid_shape, flops=_elementwise(1),
        check=lambda a: _check_positive("length", "dim")(a) or (None if a["dim"] % 2 == 0 else
                                                               f"dim must be even, got {a['dim']}"),
        saves="none",
    ),
    Primitive("scale", (_P("factor", "float"),), "Multiplies by a constant (T5's d_model ** -0.5 before its tied head).",
              flops=_elementwise(1), saves="none"),
    Primitive(
        "rope", (_P("heads", "int"), _P("base", "float", 10000.0), _P("scaling", "float", 1.0)),
        "Rotary position embedding applied to q and k, given as (B, T, C); positions divided by `scaling` (linear "
        "rope scaling, transformers' rope_type `linear`).",
        n_inputs=2, n_outputs=lambda a: 2, shape=_rope_shape, flops=lambda a, i, o: (0, 3 * (numel(i[0]) + numel(i[1]))),
        check=_rope_check, saves="none",
    ),
    Primitive(
        "split", (_P("parts", "int"), _P("dim", "int", -1)),
        "Splits a tensor into equal parts.", n_outputs=lambda a: a["parts"], shape=_split_shape,
        check=_check_positive("parts"), saves="none",
    ),
    Primitive("gelu", (_P("approximate", "str", "none"),), "GELU activation.", flops=_elementwise(8)),
    Primitive("quick_gelu", (), "x * sigmoid(1.702 x), CLIP's GELU approximation.", flops=_elementwise(4)),
    Primitive("relu", (), "ReLU activation.", flops=_elementwise(1), saves="output"),
    Primitive("relu6", (), "ReLU6 activation: min(max(0, x), 6) (MobileNet).", flops=_elementwise(2)),
    Primitive("silu", (), "SiLU (swish) activation.", flops=_elementwise(4)),
    Primitive("elu", (_P("alpha", "float", 1.0),), "ELU activation: x, or alpha (exp(x) - 1) below 0 (GAT).",
              flops=_elementwise(4)),
    Primitive("tanh", (), "tanh activation.", flops=_elementwise(4), saves="output"),
    Primitive("sigmoid", (), "Logistic sigmoid.", flops=_elementwise(4), saves="output"),
    Primitive("softmax", (_P("dim", "int", -1),), "Softmax.", flops=_elementwise(5), saves="output"),
    Primitive("dropout", (_P("p", "float", 0.0),), "Dropout (identity at inference).", saves="none"),
    Primitive("identity", (), "Returns its input.", saves="none"),
    Primitive(
        "maxpool2d", (_P("kernel", "int"), _P("stride", "int", None), _P("padding", "int", 0)),
        "2-D max pooling.", shape=_pool_shape, flops=lambda a, i, o: (0, numel(o[0]) * int(a["kernel"]) ** 2),
        check=_check_positive("kernel"),
    ),
    Primitive(
        "avgpool2d", (_P("kernel", "int"), _P("stride", "int", None), _P("padding", "int", 0)),
        "2-D average pooling.", shape=_pool_shape, flops=lambda a, i, o: (0, numel(o[0]) * int(a["kernel"]) ** 2),
        check=_check_positive("kernel"),
    ),
    Primitive(
        "resize", (_P("size", "int"), _P("mode", "str", "bilinear")),
        "Resizes (B, C, H, W) to (B, C, size, size): bilinear (half-pixel centres, as F.interpolate with "
        "align_corners=False) or nearest.", shape=_resize_shape, flops=_elementwise(4), check=_resize_check,
        saves="none",
    ),
    Primitive(
        "global_avgpool", (), "Mean over H and W: (B, C, H, W) -> (B, C).", shape=_gap_shape,
        flops=lambda a, i, o: (0, numel(i[0])), saves="none",
    ),
    Primitive("flatten", (_P("start", "int", 1), _P("end", "int", -1)), "Merges dims start..end.", shape=_flatten_shape,
              saves="none"),
    Primitive("transpose", (_P("dim0", "int"), _P("dim1", "int")), "Swaps two dims.", shape=_transpose_shape,
              saves="none"),
    Primitive("permute", (_P("dims", "int_or_tuple"),),
              "Reorders the dims, e.g. (0, 2, 3, 1): (B, C, H, W) -> (B, H, W, C).",
              shape=_permute_shape, check=_check_dims, saves="none"),
    Primitive("select", (_P("index", "int"), _P("dim", "int", 1)), "Takes one index along a dim (e.g. the CLS token).",
              shape=_select_shape, saves="none"),
    Primitive("mean", (_P("dim", "int", 1),), "Mean over one dim.", shape=_mean_shape,
              flops=lambda a, i, o: (0, numel(i[0])), saves="none"),
    Primitive("max", (_P("dim", "int", 1),), "Maximum over one dim (PointNet's symmetric pooling over points).",
              shape=_select_shape, flops=lambda a, i, o: (0, numel(i[0])), saves="both"),
    Primitive("matmul", (), "Batched matrix product (B, N, K) @ (B, K, M) (PointNet's learned transforms).", n_inputs=2,
              shape=_matmul_shape, flops=lambda a, i, o: (2 * numel(o[0]) * i[0][2], 0), saves="both",
              tags=frozenset({"mm"})),
    Primitive("add_identity", (_P("size", "int"),), "Adds the size x size identity matrix to (B, size, size).",
              shape=_identity_shape, flops=_elementwise(1), check=_check_positive("size"), saves="none"),
    Primitive("unflatten", (_P("dim", "int"), _P("sizes", "int_or_tuple")), "Splits one dim into several, e.g. "
              "(B, C*H*W) -> (B, C, H, W).", shape=_unflatten_shape, check=_check_sizes, saves="none"),
    Primitive(
        "reparameterize", (_P("latent", "int"), _P("beta", "float", 1.0), _P("elements", "int", 1)),
        "VAE sampling: splits (B, 2*latent) into mean and log-variance; z = mean + exp(logvar / 2) * noise in "
        "training, the mean at inference. Adds beta * KL(q(z|x) || N(0, I)) / elements to the model's loss (KL "
        "summed over the latent dims, averaged over the batch; `elements` per input puts it on the scale of a "
        "mean squared reconstruction error).",
        shape=_reparameterize_shape, flops=lambda a, i, o: (0, 4 * numel(o[0])),
        check=lambda a: _check_positive("latent", "elements")(a) or (
            None if a["beta"] >= 0 else f"beta must not be negative, got {a['beta']}"),
        tags=frozenset({"module", "aux_loss"}),
    ),
    # tensor arithmetic written with operators: a + b, a * b, a - b
    Primitive("add", (), "Elementwise sum (residual connections).", n_inputs=2, shape=_binary_shape,
              flops=_elementwise(1), saves="none"),
    Primitive("drop_prefix", (_P("count", "int"),), "Drops the first `count` positions of (B, T, ...): (B, T - count, ...).",
              shape=_drop_prefix_shape, check=_check_positive("count"), saves="none"),
    Primitive("sub", (), "Elementwise difference.", n_inputs=2, shape=_binary_shape, flops=_elementwise(1), saves="none"),
    Primitive("mul", (), "Elementwise product (gating).", n_inputs=2, shape=_binary_shape, flops=_elementwise(1),
              saves="input"),  # both operands, not the product
    # state-space models (Mamba) and mixtures of experts
    Primitive(
        "split_sizes", (_P("sizes", "int_or_tuple"), _P("dim", "int", -1)),
        "Splits a tensor into parts of the given sizes.",
        n_outputs=lambda a: len(a["sizes"]) if isinstance(a["sizes"], tuple) else 1, shape=_split_sizes_shape,
        check=_check_positive("sizes"), saves="none",
    ),
    Primitive(
        "causal_conv1d", (_P("channels", "int"), _P("kernel", "int"), _P("bias", "bool", True)),
        "Depthwise causal convolution over time on (B, T, C): output t sees inputs t - kernel + 1 .. t.",
        weights=lambda a: {"weight": (a["channels"], 1, a["kernel"])} | ({"bias": (a["channels"],)} if a["bias"] else {}),
        shape=_causal_conv1d_shape, flops=_causal_conv1d_flops, check=_check_positive("channels", "kernel"),
        saves="none", tags=frozenset({"mm"}),
    ),
    Primitive(
        "selective_scan", (_P("d_inner", "int"), _P("d_state", "int")),
        "Selective state-space scan (Mamba's S6) of x, dt, B, C given as (B, T, .): with dt = softplus(dt) and "
        "A = -exp(A_log), h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t.",
        n_inputs=4, weights=lambda a: {"A_log": (a["d_inner"], a["d_state"]), "D": (a["d_inner"],)},
        shape=_scan_shape, flops=_scan_flops, check=_check_positive("d_inner", "d_state"), saves="input",
        tags=frozenset({"scan"}),
    ),
    Primitive(
        "s4d", (_P("d_model", "int"), _P("d_state", "int", 64)),
        "Diagonal state space (S4D) on (B, T, H): per channel d_state / 2 complex modes A = -exp(log_A_real) + "
        "i A_imag and a step exp(log_dt) give the kernel K[l] = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n exp(l dt A_n)) "
        "for the run-time length; y = causal_conv(x, K) + D x.",
        weights=lambda a: {"log_dt": (a["d_model"],), "C": (a["d_model"], a["d_state"] // 2, 2),
                           "log_A_real": (a["d_model"], a["d_state"] // 2), "A_imag": (a["d_model"], a["d_state"] // 2),
                           "D": (a["d_model"],)},
        shape=_s4d_shape, flops=_s4d_flops, check=_s4d_check, saves="input", tags=frozenset({"mm", "scan"}),
    ),
    Primitive(
        "moe", (_P("d_model", "int"), _P("hidden", "int"), _P("experts", "int"), _P("top_k", "int", 2),
                _P("capacity_factor", "float", 0.0), _P("normalize", "bool", True), _P("aux_coef", "float", 0.01)),
        "Mixture of SwiGLU experts on (B, T, D): a linear router sends each token to its top_k experts; with "
        "capacity_factor 0 (the default, Mixtral) every expert takes every token sent to it, otherwise each "
        "expert takes up to capacity = ceil(capacity_factor * tokens * top_k / experts) tokens in token order, "
        "outputs are summed weighted by the (renormalised, if normalize) router probabilities; records the "
        "load-balancing loss.",
        weights=lambda a: {"router": (a["experts"], a["d_model"]), "w1": (a["experts"], a["hidden"], a["d_model"]),
                           "w2": (a["experts"], a["d_model"], a["hidden"]), "w3": (a["experts"], a["hidden"], a["d_model"])},
        shape=_moe_shape, flops=_moe_flops, check=_moe_check, saves="input", tags=frozenset({"mm", "aux_loss"}),
    ),
    # graphs: node features (N, F) and an edge index (2, E), row 0 sources, row 1 targets
    Primitive(
        "gcn_conv", (_P("in_features", "int"), _P("out_features", "int"), _P("bias", "bool", True)),
        "Graph convolution (Kipf and Welling 2017) of node features (N, in) over an edge index (2, E): with a self "
        "loop per node and deg the in-degree, out_i = sum_{j -> i} (x_j W^T) / sqrt(deg_i deg_j) + b.",
        n_inputs=2, weights=lambda a: {"weight": (a["out_features"], a["in_features"])}
        | ({"bias": (a["out_features"],)} if a["bias"] else {}),
        shape=_graph_shape(lambda a: a["out_features"]), flops=_gcn_flops,
        check=_check_positive("in_features", "out_features"), saves="first", tags=frozenset({"mm"}),
    ),
    Primitive(
        "gat_conv", (_P("in_features", "int"), _P("out_features", "int"), _P("heads", "int", 1),
                     _P("negative_slope", "float", 0.2), _P("bias", "bool", True)),
        "Graph attention (Velickovic et al. 2018) of node features (N, in) over an edge index (2, E), self loops "
        "added: per head h = x W^T, e_ij = LeakyReLU(a_src . h_j + a_dst . h_i), softmax over each node's incoming "
        "edges, out_i = sum_j alpha_ij h_j; the heads concatenated: (N, heads * out).",
        n_inputs=2, weights=lambda a: {"weight": (a["heads"] * a["out_features"], a["in_features"]),
                                       "att_src": (1, a["heads"], a["out_features"]),
                                       "att_dst": (1, a["heads"], a["out_features"])}
        | ({"bias": (a["heads"] * a["out_features"],)} if a["bias"] else {}),
        shape=_graph_shape(lambda a: a["heads"] * a["out_features"]), flops=_gat_flops, check=_gat_check,
        saves="first", tags=frozenset({"mm"}),
    ),
    Primitive(
        "graph_mean_pool", (_P("graphs", "int"),),
        "Mean of each graph's node states: (N, D) and the graph id of each node (N,), in [0, graphs) -> (graphs, D); "
        "a graph without nodes gives zeros.",
        n_inputs=2, shape=_graph_pool_shape, flops=lambda a, i, o: (0, numel(i[0]) + i[1][0] + numel(o[0])),
        check=_check_positive("graphs"),
    ),
    # detection: feature pyramids (YOLO's CSP and PAN) and DETR's transformer
    Primitive(
        "upsample", (_P("factor", "int", 2),),
        "Nearest-neighbour upsampling of (B, C, H, W) by an integer factor (YOLO's nn.Upsample(scale_factor=2)).",
        shape=_upsample_shape, check=_check_positive("factor"), saves="none",
    ),
    Primitive(
        "sine_position_2d", (_P("height", "int"), _P("width", "int"), _P("dim", "int"),
                             _P("temperature", "float", 10000.0)),
        "DETR's fixed 2-D sine positions of a height x width feature map flattened row-major to (B, H*W, dim): "
        "normalised cumulative y and x in (0, 2 pi], the first dim / 2 features sin/cos of y (interleaved), the "
        "rest of x; returns the positions (not added to the input), of its shape.",
        shape=_sine_2d_shape, check=_sine_2d_check, saves="none",
    ),
    Primitive(
        "frozen_batchnorm", (_P("channels", "int"), _P("eps", "float", 1e-5)),
        "Batch normalisation of (B, C, H, W) with fixed statistics and affine (DETR's FrozenBatchNorm2d): "
        "weight, bias, running mean and variance are buffers, not parameters; x * scale + shift in training too.",
        buffers=lambda a: {"weight": (a["channels"],), "bias": (a["channels"],), "running_mean": (a["channels"],),
                           "running_var": (a["channels"],)},
        flops=_elementwise(2), check=_check_positive("channels"), saves="none", tags=frozenset({"module"}),
    ),
    Primitive(
        "object_queries", (_P("num", "int"), _P("dim", "int")),
        "DETR's learned object queries: a (num, dim) table, expanded over the batch of its input (B, S, dim) -> "
        "(B, num, dim).",
        weights=lambda a: {"weight": (a["num"], a["dim"])}, shape=_queries_shape, check=_check_positive("num", "dim"),
        saves="none",
    ),
    Primitive(
        "codebook_embedding", (_P("codebooks", "int"), _P("num", "int"), _P("dim", "int")),
        "MusicGen's input embedding of audio codec tokens: one (num, dim) table per codebook, the codebooks' "
        "embeddings summed: (B, codebooks, T) ids -> (B, T, dim).",
        weights=lambda a: {"weight": (a["codebooks"], a["num"], a["dim"])}, shape=_codebook_embedding_shape,
        flops=lambda a, i, o: (0, (a["codebooks"] - 1) * numel(o[0])),
        check=_check_positive("codebooks", "num", "dim"), saves="input",
    ),
    Primitive(
        "sinusoid_positions", (_P("dim", "int"),),
        "Adds fixed sinusoidal positions to (B, T, D), computed for any T (MusicGen's decoder: cos then sin, "
        "timescales exp(-log(10000) i / (dim / 2 - 1))); no table, nothing counted.",
        shape=_sinusoid_positions_shape, flops=_elementwise(1), check=_even_dim, saves="none",
    ),
    Primitive(
        "codebook_heads", (_P("dim", "int"), _P("codebooks", "int"), _P("num", "int")),
        "MusicGen's output heads: one bias-free linear map to `num` logits per codebook: (B, T, dim) -> "
        "(B, codebooks, T, num).",
        weights=lambda a: {"weight": (a["codebooks"], a["num"], a["dim"])}, shape=_codebook_heads_shape,
        flops=lambda a, i, o: (2 * numel(o[0]) * a["dim"], 0),
        check=_check_positive("dim", "codebooks", "num"), tags=frozenset({"mm"}),
    ),
    Primitive(
        "top_k_pairs", (_P("k", "int"),),
        "Fusion-in-Decoder's reader inputs: the k passages of the highest retrieval score (B, P) (in decreasing "
        "order), each prefixed with the question's tokens: question (B, Tq) and passages (B, P, Tp) token ids -> "
        "(B, k, Tq + Tp) token ids. An index choice: no gradient flows to the scores.",
        n_inputs=3, shape=_top_k_pairs_shape, check=_check_positive("k"), saves="none",
    ),
    # temporal fusion transformer: per-variable norms and the shared value of interpretable attention
    Primitive(
        "grouped_layernorm", (_P("groups", "int"), _P("dim", "int"), _P("eps", "float", 1e-5)),
        "Layer normalisation of each of `groups` consecutive blocks of `dim` features of the last dimension "
        "(..., groups * dim), with a learned scale and shift per feature: one LayerNorm(dim) per group (the "
        "temporal fusion transformer's per-variable GRNs).",
        weights=lambda a: {"weight": (a["groups"] * a["dim"],), "bias": (a["groups"] * a["dim"],)},
        shape=_grouped_ln_shape, flops=_elementwise(5), check=_check_positive("groups", "dim"),
        tags=frozenset({"norm"}),
    ),
    Primitive(
        "tile", (_P("times", "int"), _P("dim", "int", -1)),
        "Repeats a tensor `times` times along a dim, copies side by side (the value shared by every head of "
        "interpretable multi-head attention).",
        shape=_tile_shape, check=_check_positive("times"), saves="none",
    ),
]

PRIMITIVES: dict[str, Primitive] = {p.name: p for p in _PRIMS}
OPERATOR_PRIMITIVES = {"+": "add", "-": "sub", "*": "mul"}
