"""Primitive -> ONNX nodes: the lowering table, one function per primitive.

Each function gets the writer and the node being lowered (its inputs as onnx-ir values, its arguments,
the graph's shapes and its weights) and returns one value per output of the primitive. What each
primitive computes is defined by backends/pytorch/lowering.py; these functions compute the same, in
standard ONNX ops. Where a newer opset has a fused op (Gelu 20, Attention and RMSNormalization 23) it is
used from that opset on; below it the op is decomposed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from metagen_compiler.primitives import Shape

from .writer import AttrValue, GraphWriter

__all__ = ["LOWERINGS", "KVState", "NodeCtx", "RecurrentState"]


@dataclass
class KVState:
    """Past keys and values of one attention, for the decoder step with a cache (see export.py)."""

    past_key: ir.Value  # (batch, kv_heads, past_sequence, head_size)
    past_value: ir.Value  # (batch, kv_heads, past_sequence, head_size_v)
    present_key: ir.Value | None = None
    present_value: ir.Value | None = None


@dataclass
class RecurrentState:
    """What a recurrent primitive carries from one decoder step to the next (see export.py): the causal
    convolution's last kernel - 1 inputs (batch, channels, kernel - 1), the selective scan's state
    (batch, d_inner, d_state), or S4D's complex state (batch, d_model, d_state / 2, 2)."""

    past: ir.Value
    present: ir.Value | None = None


@dataclass
class NodeCtx:
    id: str
    op: str
    args: Mapping[str, Any]
    inputs: list[ir.Value]
    in_shapes: list[Shape]
    out_shapes: list[Shape]
    weights: Mapping[str, ir.Value]
    # with a key/value cache: the number of past positions (int64, shape (1,)) and this node's cache
    past_len: ir.Value | None = None
    kv: KVState | None = None
    state: RecurrentState | None = None  # causal_conv1d, selective_scan and s4d in the decoder step
    extra: dict[str, Any] = field(default_factory=dict)


Lowering = Callable[[GraphWriter, NodeCtx], list[ir.Value]]


# ------------------------------------------------------------------ weighted layers
def _linear(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # nn.Linear keeps weight as (out, in): y = x @ W^T + b. The initializer keeps the PyTorch layout
    # (so a state_dict copies over unchanged); runtimes fold the Transpose of a constant at load time.
    wt = w.op("Transpose", [n.weights["weight"]], {"perm": [1, 0]})
    y = w.op("MatMul", [n.inputs[0], wt])
    if "bias" in n.weights:
        y = w.op("Add", [y, n.weights["bias"]])
    return [y]


def _pair(v: Any) -> list[int]:
    return [int(v[0]), int(v[1])] if isinstance(v, tuple) else [int(v), int(v)]


def _conv2d(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    a = n.args
    ph, pw = _pair(a["padding"])
    ins = [n.inputs[0], n.weights["weight"]] + ([n.weights["bias"]] if "bias" in n.weights else [])
    return [w.op("Conv", ins, {"kernel_shape": _pair(a["kernel"]), "strides": _pair(a["stride"]),
                               "pads": [ph, pw, ph, pw], "dilations": [1, 1], "group": int(a["groups"])})]


def _triple(v: Any) -> list[int]:
    return [int(x) for x in v] if isinstance(v, tuple) else [int(v)] * 3


def _conv3d(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    a = n.args
    p = _triple(a["padding"])
    ins = [n.inputs[0], n.weights["weight"]] + ([n.weights["bias"]] if "bias" in n.weights else [])
    return [w.op("Conv", ins, {"kernel_shape": _triple(a["kernel"]), "strides": _triple(a["stride"]),
                               "pads": p + p, "dilations": [1, 1, 1], "group": int(a["groups"])})]


def _conv1d(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    a = n.args
    ins = [n.inputs[0], n.weights["weight"]] + ([n.weights["bias"]] if "bias" in n.weights else [])
    return [w.op("Conv", ins, {"kernel_shape": [int(a["kernel"])], "strides": [int(a["stride"])],
                               "pads": [int(a["padding"])] * 2, "dilations": [1], "group": int(a["groups"])})]


def _conv_transpose2d(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    a = n.args
    ph, pw = _pair(a["padding"])
    ins = [n.inputs[0], n.weights["weight"]] + ([n.weights["bias"]] if "bias" in n.weights else [])
    return [w.op("ConvTranspose", ins, {"kernel_shape": _pair(a["kernel"]), "strides": _pair(a["stride"]),
                                        "pads": [ph, pw, ph, pw], "output_padding": _pair(a["output_padding"]),
                                        "dilations": [1, 1], "group": int(a["groups"])})]


def _batchnorm(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # inference form: the running statistics are initializers (named as in the state_dict)
    ws = n.weights
    return [w.op("BatchNormalization", [n.inputs[0], ws["weight"], ws["bias"], ws["running_mean"], ws["running_var"]],
                 {"epsilon": float(n.args["eps"]), "momentum": 1.0 - float(n.args["momentum"])})]


def _layernorm(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    ins = [n.inputs[0], n.weights["weight"]] + ([n.weights["bias"]] if "bias" in n.weights else [])
    return [w.op("LayerNormalization", ins, {"axis": -1, "epsilon": float(n.args["eps"])})]


def _layernorm2d(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # LayerNormalization normalises the trailing axes: channels last, normalise, channels first again
    x = w.op("Transpose", [n.inputs[0]], {"perm": [0, 2, 3, 1]})  # (B, H, W, C)
    y = w.op("LayerNormalization", [x, n.weights["weight"], n.weights["bias"]],
             {"axis": -1, "epsilon": float(n.args["eps"])})
    return [w.op("Transpose", [y], {"perm": [0, 3, 1, 2]})]  # (B, C, H, W)


def _groupnorm(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # nn.GroupNorm: statistics over each group of channels and every position (biased variance), then a
    # per-channel scale and shift. Decomposed: GroupNormalization's scale is per group before opset 21.
    x, groups, eps = n.inputs[0], int(n.args["groups"]), float(n.args["eps"])
    g = w.reshape(x, [0, groups, -1])  # (B, groups, C / groups * positions)
    centred = w.op("Sub", [g, w.reduce_mean(g, [2], keepdims=True)])
    var = w.reduce_mean(w.op("Mul", [centred, centred]), [2], keepdims=True)
    y = w.op("Div", [centred, w.op("Sqrt", [w.op("Add", [var, w.scalar(eps)])])])
    y = w.op("Reshape", [y, w.shape(x)])
    per_channel = [int(n.args["channels"])] + [1] * (len(n.in_shapes[0]) - 2)  # (C, 1, 1) against (B, C, H, W)
    scale, shift = w.reshape(n.weights["weight"], per_channel), w.reshape(n.weights["bias"], per_channel)
    return [w.op("Add", [w.op("Mul", [y, scale]), shift])]


def _layer_scale(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.op("Mul", [n.inputs[0], n.weights["weight"]])]


def _learned_log_std(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    shape = w.op("Concat", [w.dim(n.inputs[0], 0), w.i64(int(n.args["actions"]))], {"axis": 0})  # (B, actions)
    return [w.op("Expand", [n.weights["log_std"], shape])]


def _rmsnorm(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x, eps = n.inputs[0], float(n.args["eps"])
    if w.opset >= 23:
        return [w.op("RMSNormalization", [x, n.weights["weight"]], {"axis": -1, "epsilon": eps})]
    # nn.RMSNorm: x * rsqrt(mean(x^2, -1) + eps) * weight
    ms = w.reduce_mean(w.op("Mul", [x, x]), [-1], keepdims=True)
    inv = w.op("Reciprocal", [w.op("Sqrt", [w.op("Add", [ms, w.scalar(eps)])])])
    return [w.op("Mul", [w.op("Mul", [x, inv]), n.weights["weight"]])]


def _embedding(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.op("Gather", [n.weights["weight"], n.inputs[0]], {"axis": 0})]


def _pos_embedding(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # x + weight[:, start : start + T]; start is 0, or the number of past positions with a cache
    x = n.inputs[0]
    t = w.dim(x, 1)
    start = n.past_len if n.past_len is not None else w.i64(0)
    end = t if n.past_len is None else w.op("Add", [start, t])
    pos = w.op("Slice", [n.weights["weight"], start, end, w.i64(1)])
    return [w.op("Add", [x, pos])]


def _type_embedding(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    row = w.op("Gather", [n.weights["weight"], w.scalar(0, np.int64)], {"axis": 0})  # (D,): type 0
    return [w.op("Add", [n.inputs[0], row])]


def _cls_token(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x = n.inputs[0]
    shape = w.op("Concat", [w.dim(x, 0), w.i64(1, 1)], {"axis": 0})
    tok = w.op("Expand", [n.weights["weight"], shape])  # (B, 1, D)
    return [w.op("Concat", [tok, x], {"axis": 1})]


# ------------------------------------------------------------------ recurrent layers
# ONNX orders the gates i, o, f, c (LSTM) and z, r, h (GRU); PyTorch i, f, g, o and r, z, n. The initializers
# keep PyTorch's layout (so a state_dict copies over); the graph reorders them, a constant fold at load time.
_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}


def _rnn(op_type: str) -> Lowering:
    def lower(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
        kind = op_type.lower()
        order = _GATE_ORDER[kind]
        h, layers = int(n.args["hidden"]), int(n.args["layers"])
        dirs = 2 if n.args["bidirectional"] else 1
        sfx = ("", "_reverse")[:dirs]

        def stacked(local: str) -> ir.Value:  # (dirs, gates * h, ...) in ONNX's gate order
            per_dir = []
            for d in sfx:
                parts = w.split(n.weights[f"{local}{d}"], len(order), 0, [h] * len(order))
                per_dir.append(w.unsqueeze(w.op("Concat", [parts[i] for i in order], {"axis": 0}), [0]))
            return per_dir[0] if dirs == 1 else w.op("Concat", per_dir, {"axis": 0})

        x = w.op("Transpose", [n.inputs[0]], {"perm": [1, 0, 2]})  # (T, B, in)
        attrs: dict[str, Any] = {"hidden_size": h, "direction": "bidirectional" if dirs == 2 else "forward"}
        if kind == "gru":
            attrs["linear_before_reset"] = 1  # PyTorch applies the reset gate after the hidden projection
        for layer in range(layers):
            wi, wh = stacked(f"weight_ih_l{layer}"), stacked(f"weight_hh_l{layer}")
            bias = w.op("Concat", [stacked(f"bias_ih_l{layer}"), stacked(f"bias_hh_l{layer}")], {"axis": 1})
            y = w.op(op_type, [x, wi, wh, bias], attrs, outputs=3 if kind == "lstm" else 2)  # (T, dirs, B, h)
            y = w.op("Transpose", [y], {"perm": [0, 2, 1, 3]})  # (T, B, dirs, h)
            x = w.reshape(y, [0, 0, dirs * h])  # (T, B, dirs * h)
        return [w.op("Transpose", [x], {"perm": [1, 0, 2]})]  # (B, T, dirs * h)

    return lower


# ------------------------------------------------------------------ attention
def _int_dim(shape: Shape, i: int, what: str) -> int:
    d = shape[i]
    if not isinstance(d, int):
        raise TypeError(f"{what} must have a static size, got {d}")
    return d


def _sdpa(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    q, k, v = n.inputs
    heads = int(n.args["heads"])
    kv_heads = int(n.args.get("kv_heads") or heads)
    causal = bool(n.args["causal"])
    hs = _int_dim(n.in_shapes[0], -1, "q's features") // heads
    hv = _int_dim(n.in_shapes[2], -1, "v's features") // kv_heads
    if w.opset >= 23 and n.kv is None:
        attrs: dict[str, AttrValue] = {"q_num_heads": heads, "kv_num_heads": kv_heads, "is_causal": int(causal)}
        return [w.op("Attention", [q, k, v], attrs)]
    rep = heads // kv_heads
    # heads: (B, T, C) -> (B, kv_heads, rep, T, hs), query head h = kv_head * rep + r (as repeat_interleave)
    kh = w.op("Transpose", [w.reshape(k, [0, 0, kv_heads, hs])], {"perm": [0, 2, 1, 3]})  # (B, kv, S, hs)
    vh = w.op("Transpose", [w.reshape(v, [0, 0, kv_heads, hv])], {"perm": [0, 2, 1, 3]})  # (B, kv, S, hv)
    if n.kv is not None:
        kh = w.op("Concat", [n.kv.past_key, kh], {"axis": 2}, tag="present_key")
        vh = w.op("Concat", [n.kv.past_value, vh], {"axis": 2}, tag="present_value")
        n.kv.present_key, n.kv.present_value = kh, vh
    if rep == 1:
        qh = w.op("Transpose", [w.reshape(q, [0, 0, heads, hs])], {"perm": [0, 2, 1, 3]})  # (B, H, T, hs)
        kt = w.op("Transpose", [kh], {"perm": [0, 1, 3, 2]})  # (B, H, hs, S)
        vv = vh
    else:
        qh = w.op("Transpose", [w.reshape(q, [0, 0, kv_heads, rep, hs])], {"perm": [0, 2, 3, 1, 4]})
        kt = w.unsqueeze(w.op("Transpose", [kh], {"perm": [0, 1, 3, 2]}), [2])  # (B, kv, 1, hs, S)
        vv = w.unsqueeze(vh, [2])  # (B, kv, 1, S, hv): MatMul broadcasts over the rep axis
    scores = w.op("MatMul", [w.op("Mul", [qh, w.scalar(1.0 / math.sqrt(hs))]), kt])  # (..., T, S)
    if causal:
        scores = _causal_mask(w, scores, q, kh, n.past_len)
    probs = w.op("Softmax", [scores], {"axis": -1})
    y = w.op("MatMul", [probs, vv])  # (B, H, T, hv) or (B, kv, rep, T, hv)
    perm = [0, 2, 1, 3] if rep == 1 else [0, 3, 1, 2, 4]
    return [w.reshape(w.op("Transpose", [y], {"perm": perm}), [0, 0, -1])]  # (B, T, heads * hv)


def _causal_mask(w: GraphWriter, scores: ir.Value, q: ir.Value, kh: ir.Value, past_len: ir.Value | None) -> ir.Value:
    """Query i (at absolute position past + i) sees keys 0..past + i, built from the run-time sizes."""
    zero, one = w.scalar(0, np.int64), w.scalar(1, np.int64)
    rows = w.op("Range", [zero, w.dim(q, 1, scalar=True), one])  # (T,)
    if past_len is not None:
        rows = w.op("Add", [rows, past_len])
    cols = w.op("Range", [zero, w.dim(kh, 2, scalar=True), one])  # (S,)
    allowed = w.op("GreaterOrEqual", [w.unsqueeze(rows, [1]), cols])  # (T, S)
    return w.op("Where", [allowed, scores, w.scalar(float("-inf"))])


def _sdpa_bias(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    """As biased_attention: scores (unscaled if not `scaled`) plus the bias (1, heads, T, S), then softmax."""
    q, k, v, bias = n.inputs
    heads = int(n.args["heads"])
    hs = _int_dim(n.in_shapes[0], -1, "q's features") // heads
    hv = _int_dim(n.in_shapes[2], -1, "v's features") // heads
    qh = w.op("Transpose", [w.reshape(q, [0, 0, heads, hs])], {"perm": [0, 2, 1, 3]})  # (B, H, T, hs)
    kh = w.op("Transpose", [w.reshape(k, [0, 0, heads, hs])], {"perm": [0, 2, 3, 1]})  # (B, H, hs, S)
    vh = w.op("Transpose", [w.reshape(v, [0, 0, heads, hv])], {"perm": [0, 2, 1, 3]})  # (B, H, S, hv)
    if n.args["scaled"]:
        qh = w.op("Mul", [qh, w.scalar(1.0 / math.sqrt(hs))])
    scores = w.op("Add", [w.op("MatMul", [qh, kh]), bias])  # (B, H, T, S)
    if n.args["causal"]:
        scores = _causal_mask(w, scores, q, vh, None)
    y = w.op("MatMul", [w.op("Softmax", [scores], {"axis": -1}), vh])  # (B, H, T, hv)
    return [w.reshape(w.op("Transpose", [y], {"perm": [0, 2, 1, 3]}), [0, 0, -1])]


def _relative_position_bias(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    """As RelativePositionBias: the bucket of each key - query distance, from the run-time lengths."""
    q, k = n.inputs
    i64 = lambda v: w.scalar(v, np.int64)
    zero, one = i64(0), i64(1)
    rows = w.op("Range", [zero, w.dim(q, 1, scalar=True), one])  # (T,)
    cols = w.op("Range", [zero, w.dim(k, 1, scalar=True), one])  # (S,)
    rel = w.op("Sub", [w.unsqueeze(cols, [0]), w.unsqueeze(rows, [1])])  # (T, S): key - query
    buckets = int(n.args["buckets"])
    if n.args["bidirectional"]:
        buckets //= 2
        base = w.op("Mul", [w.op("Cast", [w.op("Greater", [rel, zero])], {"to": ir.DataType.INT64}), i64(buckets)])
        rel = w.op("Abs", [rel])
    else:
        base = zero
        rel = w.op("Neg", [w.op("Min", [rel, zero])])
    exact = buckets // 2
    ratio = w.op("Div", [w.op("Cast", [rel], {"to": ir.DataType.FLOAT}), w.scalar(float(exact))])
    log = w.op("Div", [w.op("Log", [ratio]), w.scalar(math.log(int(n.args["max_distance"]) / exact))])
    far = w.op("Cast", [w.op("Mul", [log, w.scalar(float(buckets - exact))])], {"to": ir.DataType.INT64})
    far = w.op("Min", [w.op("Add", [i64(exact), far]), i64(buckets - 1)])
    bucket = w.op("Add", [base, w.op("Where", [w.op("Less", [rel, i64(exact)]), rel, far])])
    bias = w.op("Gather", [n.weights["weight"], bucket], {"axis": 0})  # (T, S, heads)
    return [w.unsqueeze(w.op("Transpose", [bias], {"perm": [2, 0, 1]}), [0])]  # (1, heads, T, S)


# ------------------------------------------------------------------ audio
def _mel_filters(n_mels: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """As mel_filters in the PyTorch backend: Slaney-scale, Slaney-normalised (n_mels, n_fft // 2 + 1)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    top = sample_rate / 2
    top_mel = math.log(top / min_log_hz) / logstep + min_log_mel if top >= min_log_hz else top / f_sp
    mels = np.linspace(0, top_mel, n_mels + 2)
    edges = np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    ramps = edges[:, None] - np.linspace(0, top, n_fft // 2 + 1)[None, :]
    width = np.diff(edges)
    lower, upper = -ramps[:-2] / width[:-1, None], ramps[2:] / width[1:, None]
    return (np.maximum(np.minimum(lower, upper), 0) * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def _log_mel(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    """The STFT as a strided convolution with the Hann-windowed DFT basis (real rows, then imaginary), on the
    reflect-padded waveform; then the filterbank, log10 and Whisper's clamp and rescale."""
    n_fft, hop = int(n.args["n_fft"]), int(n.args["hop"])
    frames = _int_dim(n.out_shapes[0], 2, "frames")
    bins = n_fft // 2 + 1
    t = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * t / n_fft)  # periodic Hann, as torch.hann_window
    angle = 2 * np.pi * np.arange(bins)[:, None] * t[None, :] / n_fft
    basis = np.concatenate([window * np.cos(angle), -window * np.sin(angle)])[:, None, :]  # (2 bins, 1, n_fft)
    pad = n_fft // 2
    x = w.op("Pad", [w.unsqueeze(n.inputs[0], [1]), w.i64(0, 0, pad, 0, 0, pad)], {"mode": "reflect"})
    spec = w.op("Conv", [x, w.const(basis.astype(np.float32))], {"strides": [hop]})  # (B, 2 bins, frames + 1)
    spec = w.op("Slice", [spec, w.i64(0), w.i64(frames), w.i64(2)])
    re, im = w.split(spec, 2, 1, None)
    power = w.op("Add", [w.op("Mul", [re, re]), w.op("Mul", [im, im])])  # (B, bins, frames)
    mel = w.op("MatMul", [w.const(_mel_filters(int(n.args["n_mels"]), n_fft, int(n.args["sample_rate"]))), power])
    logs = w.op("Div", [w.op("Log", [w.op("Max", [mel, w.scalar(1e-10)])]), w.scalar(math.log(10.0))])
    floor = w.op("Sub", [w.reduce("ReduceMax", logs, [1, 2], True), w.scalar(8.0)])
    return [w.op("Div", [w.op("Add", [w.op("Max", [logs, floor]), w.scalar(4.0)]), w.scalar(4.0)])]


def _sinusoid_embedding(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x = n.inputs[0]
    pos = w.op("Slice", [n.weights["weight"], w.i64(0), w.dim(x, 1), w.i64(0)])  # (T, D)
    return [w.op("Add", [x, pos])]


def _timestep_embedding(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # the frequency table as the PyTorch helper computes it (float64, rounded once), then sin and cos of t f
    dim, shift, period = int(n.args["dim"]), float(n.args["shift"]), float(n.args["max_period"])
    half = dim // 2
    freqs = np.exp(-math.log(period) * np.arange(half, dtype=np.float64) / (half - shift)).astype(np.float32)
    t = w.unsqueeze(w.op("Cast", [n.inputs[0]], {"to": int(ir.DataType.FLOAT)}), [1])  # (B, 1)
    arg = w.op("Mul", [t, w.const(freqs[None, :])])  # (B, half)
    sin, cos = w.op("Sin", [arg]), w.op("Cos", [arg])
    return [w.op("Concat", [cos, sin] if n.args["flip_sin_to_cos"] else [sin, cos], {"axis": -1})]


def _concat(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.op("Concat", list(n.inputs), {"axis": int(n.args["dim"])})]


def _scale(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.op("Mul", [n.inputs[0], w.scalar(float(n.args["factor"]))])]


def _rope(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # rotate-half layout, as apply_rope in the PyTorch backend
    q, k = n.inputs
    heads, base = int(n.args["heads"]), float(n.args["base"])
    hs = _int_dim(n.in_shapes[0], -1, "q's features") // heads
    # in float64, then rounded once: float32 pow differs in the last bit between numpy builds
    inv_freq = (1.0 / (float(base) ** (np.arange(0, hs, 2, dtype=np.float64) / hs))).astype(np.float32)
    if float(n.args.get("scaling", 1.0)) != 1.0:  # as the PyTorch backend: the float32 frequencies, divided
        inv_freq = inv_freq / np.float32(n.args["scaling"])
    zero, one = w.scalar(0, np.int64), w.scalar(1, np.int64)
    pos = w.op("Range", [zero, w.dim(q, 1, scalar=True), one])  # (T,)
    if n.past_len is not None:
        pos = w.op("Add", [pos, n.past_len])
    pos = w.op("Cast", [pos], {"to": int(ir.DataType.FLOAT)})
    freqs = w.op("Mul", [w.unsqueeze(pos, [1]), w.const(inv_freq)])  # (T, hs/2)
    emb = w.op("Concat", [freqs, freqs], {"axis": -1})  # (T, hs)
    cos = w.reshape(w.op("Cos", [emb]), [1, -1, 1, hs])
    sin = w.reshape(w.op("Sin", [emb]), [1, -1, 1, hs])

    def rotate(x: ir.Value) -> ir.Value:
        xh = w.reshape(x, [0, 0, -1, hs])  # (B, T, h, hs)
        x1, x2 = w.split(xh, 2, -1, [hs // 2, hs // 2])
        rot = w.op("Concat", [w.op("Neg", [x2]), x1], {"axis": -1})
        out = w.op("Add", [w.op("Mul", [xh, cos]), w.op("Mul", [rot, sin])])
        return w.reshape(out, [0, 0, -1])

    return [rotate(q), rotate(k)]


# ------------------------------------------------------------------ state-space models
def _split_sizes(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    sizes = n.args["sizes"] if isinstance(n.args["sizes"], tuple) else (n.args["sizes"],)
    return list(w.op_multi("Split", [n.inputs[0], w.i64(*sizes)], {"axis": int(n.args["dim"])}, outputs=len(sizes)))


def _causal_conv1d(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # (B, T, C) -> (B, C, T), a depthwise Conv padded kernel-1 on the left only, back to (B, T, C)
    # in the decoder step the left padding is the previous step's last kernel - 1 inputs instead of zeros
    k, c = int(n.args["kernel"]), int(n.args["channels"])
    x = w.op("Transpose", [n.inputs[0]], {"perm": [0, 2, 1]})
    pad = k - 1
    if n.state is not None:
        x = w.op("Concat", [n.state.past, x], {"axis": 2})  # (B, C, kernel - 1 + T)
        start = w.op("Sub", [w.dim(x, 2), w.i64(k - 1)])
        n.state.present = w.op("Slice", [x, start, w.i64(2**62), w.i64(2)], tag="present_conv_state")
        pad = 0
    ins = [x, n.weights["weight"]] + ([n.weights["bias"]] if "bias" in n.weights else [])
    y = w.op("Conv", ins, {"kernel_shape": [k], "strides": [1], "pads": [pad, 0], "dilations": [1], "group": c})
    return [w.op("Transpose", [y], {"perm": [0, 2, 1]})]


def _scan_body(w: GraphWriter, d_inner: int, d_state: int) -> ir.Graph:
    """One step of the recurrence, h_t = dA_t * h_{t-1} + dBx_t, on (batch, d_inner, d_state) slices; the
    new state is both the carried state and the scan output."""
    def val(tag: str) -> ir.Value:
        return ir.Value(name=w.fresh(f"{w.scope}/scan/{tag}"), type=ir.TensorType(ir.DataType.FLOAT),
                        shape=ir.Shape(["batch", d_inner, d_state]))

    h_prev, da, dbx = val("h_prev"), val("dA_t"), val("dBx_t")
    mul = ir.Node("", "Mul", [da, h_prev], name=w.fresh(f"{w.scope}/scan/Mul"))
    add = ir.Node("", "Add", [mul.outputs[0], dbx], name=w.fresh(f"{w.scope}/scan/Add"))
    out = ir.Node("", "Identity", [add.outputs[0]], name=w.fresh(f"{w.scope}/scan/Identity"))
    for node, tag in ((mul, "dA_h"), (add, "h"), (out, "h_out")):
        v = node.outputs[0]
        v.name, v.type, v.shape = w.fresh(f"{w.scope}/scan/{tag}"), ir.TensorType(ir.DataType.FLOAT), val("x").shape
    return ir.Graph([h_prev, da, dbx], [add.outputs[0], out.outputs[0]], nodes=[mul, add, out],
                    name=w.fresh(f"{w.scope}/scan_body"))


def _selective_scan(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # as SelectiveScan in the PyTorch backend: the discretised A and B x for every position at once,
    # the recurrence over the run-time sequence length as one Scan, then C h + D x
    x, dt, b, c = n.inputs
    d_inner, d_state = int(n.args["d_inner"]), int(n.args["d_state"])
    a = w.op("Neg", [w.op("Exp", [n.weights["A_log"]])])  # (d_inner, d_state)
    dt = w.op("Softplus", [dt])
    da = w.op("Exp", [w.op("Mul", [w.unsqueeze(dt, [-1]), a])])  # (B, T, d_inner, d_state)
    dbx = w.op("Mul", [w.unsqueeze(w.op("Mul", [dt, x]), [-1]), w.unsqueeze(b, [2])])  # (B, T, d_inner, d_state)
    if n.state is not None:  # the decoder step starts from the previous step's state
        h0 = n.state.past
    else:
        shape = w.op("Concat", [w.dim(x, 0), w.i64(d_inner, d_state)], {"axis": 0})
        h0 = w.op("ConstantOfShape", [shape], {"value": ir.tensor(np.zeros(1, np.float32))})  # (B, d_inner, d_state)
    h_last, hs = w.op_multi("Scan", [h0, da, dbx], {"body": _scan_body(w, d_inner, d_state), "num_scan_inputs": 2,
                                                     "scan_input_axes": [1, 1], "scan_output_axes": [1]}, outputs=2)
    if n.state is not None:
        n.state.present = h_last
    y = w.op("ReduceSum", [w.op("Mul", [hs, w.unsqueeze(c, [2])]), w.i64(-1)], {"keepdims": 0})  # (B, T, d_inner)
    return [w.op("Add", [y, w.op("Mul", [x, n.weights["D"]])])]


def _s4d(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # as S4D in the PyTorch backend: the kernel for the run-time length, written for reversed positions
    # (T-1 .. 0) so it needs no flip, then a depthwise Conv over the input padded T-1 on the left
    x, ws, h = n.inputs[0], n.weights, int(n.args["d_model"])

    def mul(a: ir.Value, b: ir.Value) -> ir.Value:
        return w.op("Mul", [a, b])

    dt = w.unsqueeze(w.op("Exp", [ws["log_dt"]]), [1])  # (H, 1)
    a_re, a_im = w.op("Neg", [w.op("Exp", [ws["log_A_real"]])]), ws["A_imag"]  # (H, modes)
    decay, turn = w.op("Exp", [mul(dt, a_re)]), mul(dt, a_im)
    e_re = w.op("Sub", [mul(decay, w.op("Cos", [turn])), w.scalar(1.0)])
    e_im = mul(decay, w.op("Sin", [turn]))
    norm = w.op("Add", [mul(a_re, a_re), mul(a_im, a_im)])
    q_re = w.op("Div", [w.op("Add", [mul(e_re, a_re), mul(e_im, a_im)]), norm])
    q_im = w.op("Div", [w.op("Sub", [mul(e_im, a_re), mul(e_re, a_im)]), norm])
    cr, ci = (w.op("Gather", [ws["C"], w.scalar(i, np.int64)], {"axis": 2}) for i in (0, 1))
    c_re = w.op("Sub", [mul(cr, q_re), mul(ci, q_im)])
    c_im = w.op("Add", [mul(cr, q_im), mul(ci, q_re)])
    t = w.dim(x, 1, scalar=True)
    last = w.op("Sub", [t, w.scalar(1, np.int64)])
    pos = w.op("Cast", [w.op("Range", [last, w.scalar(-1, np.int64), w.scalar(-1, np.int64)])],
               {"to": int(ir.DataType.FLOAT)})  # (T,) reversed
    mag = w.op("Exp", [mul(w.unsqueeze(mul(dt, a_re), [-1]), pos)])  # (H, modes, T)
    phase = mul(w.unsqueeze(turn, [-1]), pos)
    waves = w.op("Sub", [mul(w.unsqueeze(c_re, [-1]), w.op("Cos", [phase])),
                         mul(w.unsqueeze(c_im, [-1]), w.op("Sin", [phase]))])
    k = w.op("ReduceSum", [mul(mag, waves), w.i64(1)], {"keepdims": 1})  # (H, 1, T)
    k = mul(k, w.scalar(2.0))
    pads = w.op("Concat", [w.i64(0, 0), w.unsqueeze(last, [0]), w.i64(0, 0, 0)], {"axis": 0})
    xt = w.op("Transpose", [x], {"perm": [0, 2, 1]})  # (B, H, T)
    xp = w.op("Pad", [xt, pads])  # (B, H, 2T-1)
    y = w.op("Conv", [xp, k], {"strides": [1], "pads": [0, 0], "dilations": [1], "group": h})  # (B, H, T)
    if n.state is not None:  # the decoder step: the state h (B, H, modes, 2) of the tokens before these T
        # with Ab = exp(dt A), Bb = (exp(dt A) - 1) / A: y_t += 2 Re(sum_n C_n Ab^(t+1) h_n), and the new state is
        # Ab^T h + sum_j Ab^(T-1-j) Bb x_j (complex arithmetic as (real, imaginary) pairs)
        def cmul(ar: ir.Value, ai: ir.Value, br: ir.Value, bi: ir.Value) -> tuple[ir.Value, ir.Value]:
            return w.op("Sub", [mul(ar, br), mul(ai, bi)]), w.op("Add", [mul(ar, bi), mul(ai, br)])

        h_re, h_im = (w.op("Gather", [n.state.past, w.scalar(i, np.int64)], {"axis": 3}) for i in (0, 1))
        ch_re, ch_im = cmul(cr, ci, h_re, h_im)  # (B, H, modes)
        fwd = w.op("Cast", [w.op("Range", [w.scalar(1, np.int64), w.op("Add", [t, w.scalar(1, np.int64)]),
                                           w.scalar(1, np.int64)])], {"to": int(ir.DataType.FLOAT)})  # (T,) 1..T
        mag_f = w.op("Exp", [mul(w.unsqueeze(mul(dt, a_re), [-1]), fwd)])  # (H, modes, T)
        ph_f = mul(w.unsqueeze(turn, [-1]), fwd)
        p_re, p_im = mul(mag_f, w.op("Cos", [ph_f])), mul(mag_f, w.op("Sin", [ph_f]))
        past = w.op("Sub", [mul(w.unsqueeze(ch_re, [-1]), p_re), mul(w.unsqueeze(ch_im, [-1]), p_im)])
        y = w.op("Add", [y, mul(w.op("ReduceSum", [past, w.i64(2)], {"keepdims": 0}), w.scalar(2.0))])
        wr, wi = cmul(w.unsqueeze(q_re, [-1]), w.unsqueeze(q_im, [-1]), mul(mag, w.op("Cos", [phase])),
                      mul(mag, w.op("Sin", [phase])))  # Bb Ab^(T-1-j): (H, modes, T)
        x4 = w.unsqueeze(xt, [2])  # (B, H, 1, T)
        s_re, s_im = (w.op("ReduceSum", [mul(x4, wv), w.i64(-1)], {"keepdims": 0}) for wv in (wr, wi))
        tf = w.op("Cast", [t], {"to": int(ir.DataType.FLOAT)})
        mag_t, ph_t = w.op("Exp", [mul(mul(dt, a_re), tf)]), mul(turn, tf)  # Ab^T: (H, modes)
        n_re, n_im = cmul(mul(mag_t, w.op("Cos", [ph_t])), mul(mag_t, w.op("Sin", [ph_t])), h_re, h_im)
        n_re, n_im = w.op("Add", [n_re, s_re]), w.op("Add", [n_im, s_im])
        n.state.present = w.op("Concat", [w.unsqueeze(n_re, [-1]), w.unsqueeze(n_im, [-1])], {"axis": -1},
                               tag="present_s4d_state")
    return [w.op("Add", [mul(x, ws["D"]), w.op("Transpose", [y], {"perm": [0, 2, 1]})])]


# ------------------------------------------------------------------ mixture of experts
def _moe(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    """As MoE in the PyTorch backend, computed densely: every expert on every token, each output weighted by
    the token's gate for that expert, which is zero unless the router chose it and (with a capacity factor)
    the expert had room. The routing (top-k, each expert's queue in token order, the capacity from the
    run-time token count) is the PyTorch backend's, so the output is the same; the cost is experts / top_k
    times the routed compute."""
    a, ws = n.args, n.weights
    d, e, k = int(a["d_model"]), int(a["experts"]), int(a["top_k"])
    x = w.reshape(n.inputs[0], [-1, d])  # (N, D)
    probs = w.op("Softmax", [w.op("MatMul", [x, w.op("Transpose", [ws["router"]], {"perm": [1, 0]})])], {"axis": -1})
    gate, expert = w.op_multi("TopK", [probs, w.i64(k)], {"axis": -1, "largest": 1, "sorted": 1}, outputs=2)  # (N, k)
    if a["normalize"]:
        gate = w.op("Div", [gate, w.op("ReduceSum", [gate, w.i64(-1)], {"keepdims": 1})])
    ids = w.reshape(expert, [-1, 1])  # (N k, 1), token order
    experts = w.op("Range", [w.scalar(0, np.int64), w.scalar(e, np.int64), w.scalar(1, np.int64)])
    chosen = w.op("Cast", [w.op("Equal", [ids, experts])], {"to": int(ir.DataType.INT64)})  # (N k, E)
    kept: ir.Value | None = None
    if float(a["capacity_factor"]) > 0:  # 0: no capacity limit, every pair kept
        queued = w.op("Mul", [w.op("Sub", [w.op("CumSum", [chosen, w.scalar(0, np.int64)]), w.scalar(1, np.int64)]),
                              chosen])
        slot = w.op("ReduceSum", [queued, w.i64(-1)], {"keepdims": 0})  # (N k,) place in its expert's queue

        # capacity = ceil(capacity_factor * N * top_k / experts), in float64 as Python computes it
        def f64(v: float) -> ir.Value:  # (w.const keeps constants float32)
            return w.op("Constant", [], {"value": ir.tensor(np.array(v, np.float64))}, tag=f"f64({v:g})")

        tokens = w.op("Cast", [w.op("Mul", [w.dim(n.inputs[0], 0), w.dim(n.inputs[0], 1)])],
                      {"to": int(ir.DataType.DOUBLE)})
        cap = w.op("Mul", [w.op("Mul", [f64(float(a["capacity_factor"])), tokens]), f64(float(k))])
        cap = w.op("Cast", [w.op("Ceil", [w.op("Div", [cap, f64(float(e))])])], {"to": int(ir.DataType.INT64)})
        kept = w.op("Cast", [w.op("Less", [slot, cap])], {"to": int(ir.DataType.FLOAT)})  # (N k,)
    chosen_f = w.op("Cast", [chosen], {"to": int(ir.DataType.FLOAT)})
    gates_flat = w.reshape(gate, [-1])  # (N k,)
    if kept is not None:
        gates_flat = w.op("Mul", [gates_flat, kept])
    weights = w.op("Mul", [chosen_f, w.unsqueeze(gates_flat, [1])])  # (N k, E)
    combine = w.op("ReduceSum", [w.reshape(weights, [-1, k, e]), w.i64(1)], {"keepdims": 0})  # (N, E)

    def proj(name: str) -> ir.Value:  # x (N, D) against every expert: (E, N, out)
        return w.op("MatMul", [x, w.op("Transpose", [ws[name]], {"perm": [0, 2, 1]})])

    h1 = proj("w1")
    h = w.op("Mul", [w.op("Mul", [h1, w.op("Sigmoid", [h1])]), proj("w3")])  # (E, N, hidden)
    out = w.op("MatMul", [h, w.op("Transpose", [ws["w2"]], {"perm": [0, 2, 1]})])  # (E, N, D)
    gates = w.unsqueeze(w.op("Transpose", [combine], {"perm": [1, 0]}), [2])  # (E, N, 1)
    y = w.op("ReduceSum", [w.op("Mul", [out, gates]), w.i64(0)], {"keepdims": 0})  # (N, D)
    return [w.op("Reshape", [y, w.shape(n.inputs[0])])]


# ------------------------------------------------------------------ shape ops
def _split(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    parts, shape = int(n.args["parts"]), n.in_shapes[0]
    dim = int(n.args["dim"])
    size = shape[dim]
    sizes = [size // parts] * parts if isinstance(size, int) else None
    return list(w.split(n.inputs[0], parts, dim, sizes))


def _reshape_to(w: GraphWriter, x: ir.Value, in_shape: Shape, out_shape: Shape) -> ir.Value:
    """Reshape to a shape of the graph: static dims as numbers, symbolic ones copied (0) or inferred (-1)."""
    dims: list[int] = []
    for i, d in enumerate(out_shape):
        if isinstance(d, int):
            dims.append(d)
        elif i < len(in_shape) and in_shape[i] == d:
            dims.append(0)
        else:
            dims.append(-1)
    if dims.count(-1) > 1:  # a symbolic dim that moved (flattening (B, P, Tp) to (B*P, Tp)): its run-time size
        parts: list[ir.Value] = []
        inferred = 0
        for i, d in enumerate(out_shape):
            if dims[i] != -1:
                parts.append(w.i64(d) if isinstance(d, int) else w.dim(x, i))
            elif d in in_shape:
                parts.append(w.dim(x, in_shape.index(d)))
            else:
                parts.append(w.i64(-1))
                inferred += 1
        if inferred > 1:
            raise ValueError(f"cannot reshape {in_shape} to {out_shape} with one inferred dim")
        return w.op("Reshape", [x, w.op("Concat", parts, {"axis": 0})])
    return w.reshape(x, dims)


def _flatten(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [_reshape_to(w, n.inputs[0], n.in_shapes[0], n.out_shapes[0])]


def _unflatten(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [_reshape_to(w, n.inputs[0], n.in_shapes[0], n.out_shapes[0])]


def _transpose(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    rank = len(n.in_shapes[0])
    perm = list(range(rank))
    d0, d1 = int(n.args["dim0"]) % rank, int(n.args["dim1"]) % rank
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return [w.op("Transpose", [n.inputs[0]], {"perm": perm})]


def _permute(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.op("Transpose", [n.inputs[0]], {"perm": [int(d) for d in n.args["dims"]]})]


def _max(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x, axis = n.inputs[0], int(n.args["dim"])
    if w.opset >= 18:
        return [w.op("ReduceMax", [x, w.i64(axis)], {"keepdims": 0})]
    return [w.op("ReduceMax", [x], {"axes": [axis], "keepdims": 0})]


def _add_identity(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.op("Add", [n.inputs[0], w.const(np.eye(int(n.args["size"]), dtype=np.float32))])]


def _reparameterize(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # inference: the mean, the first half of the last dim (the sampling noise is for training)
    latent = int(n.args["latent"])
    return [w.op("Slice", [n.inputs[0], w.i64(0), w.i64(latent), w.i64(-1)])]


def _select(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    index = w.scalar(int(n.args["index"]), np.int64)
    return [w.op("Gather", [n.inputs[0], index], {"axis": int(n.args["dim"])})]


def _drop_prefix(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    end = np.iinfo(np.int64).max
    return [w.op("Slice", [n.inputs[0], w.i64(int(n.args["count"])), w.i64(end), w.i64(1)])]


def _mean(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.reduce_mean(n.inputs[0], [int(n.args["dim"])], keepdims=False)]


def _resize(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # F.interpolate(align_corners=False): half-pixel centres; nearest rounds down, as PyTorch's "nearest"
    x, size = n.inputs[0], int(n.args["size"])
    sizes = w.op("Concat", [w.op("Slice", [w.shape(x), w.i64(0), w.i64(2)]), w.i64(size, size)], {"axis": 0})
    if n.args["mode"] == "bilinear":
        attrs: dict[str, Any] = {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}
    else:
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    return [w.op("Resize", [x, None, None, sizes], attrs)]


def _global_avgpool(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.reduce_mean(n.inputs[0], [2, 3], keepdims=False)]


def _pool(op_type: str) -> Lowering:
    def lower(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
        k, p = int(n.args["kernel"]), int(n.args["padding"])
        s = int(n.args["stride"]) if n.args["stride"] is not None else k
        attrs: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p, p, p, p]}
        if op_type == "AveragePool":
            attrs["count_include_pad"] = 1  # F.avg_pool2d's default
        return [w.op(op_type, [n.inputs[0]], attrs)]

    return lower


# ------------------------------------------------------------------ pointwise
def _gelu(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x, approx = n.inputs[0], str(n.args["approximate"])
    if w.opset >= 20:
        return [w.op("Gelu", [x], {"approximate": approx})]
    if approx == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = w.op("Mul", [w.op("Mul", [x, x]), x])
        poly = w.op("Add", [x, w.op("Mul", [cube, w.scalar(0.044715)])])
        inner = w.op("Mul", [poly, w.scalar(math.sqrt(2 / math.pi))])
        gate = w.op("Add", [w.op("Tanh", [inner]), w.scalar(1.0)])
    else:  # 0.5 x (1 + erf(x / sqrt(2)))
        gate = w.op("Add", [w.op("Erf", [w.op("Mul", [x, w.scalar(1 / math.sqrt(2))])]), w.scalar(1.0)])
    return [w.op("Mul", [w.op("Mul", [x, gate]), w.scalar(0.5)])]


def _quick_gelu(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x = n.inputs[0]
    return [w.op("Mul", [x, w.op("Sigmoid", [w.op("Mul", [x, w.scalar(1.702)])])])]


def _l2_normalize(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # x / max(||x||, eps), as F.normalize
    x, dim = n.inputs[0], int(n.args["dim"])
    norm = w.reduce("ReduceL2", x, [dim], keepdims=True)
    return [w.op("Div", [x, w.op("Max", [norm, w.scalar(float(n.args["eps"]))])])]


def _eot_pool(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x, ids = n.inputs
    pos = w.op("ArgMax", [ids], {"axis": -1, "keepdims": 1})  # (B, 1)
    idx = w.op("Expand", [w.unsqueeze(pos, [2]), w.op("Concat", [w.dim(x, 0), w.i64(1), w.dim(x, 2)], {"axis": 0})])
    return [w.op("Squeeze", [w.op("GatherElements", [x, idx], {"axis": 1}), w.i64(1)])]  # (B, D)


def _contrastive_logits(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    a, b = n.inputs
    sim = w.op("MatMul", [a, w.op("Transpose", [b], {"perm": [1, 0]})])
    return [w.op("Mul", [w.op("Exp", [n.weights["logit_scale"]]), sim])]


def _silu(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x = n.inputs[0]
    return [w.op("Mul", [x, w.op("Sigmoid", [x])])]


def _unary(op_type: str) -> Lowering:
    return lambda w, n: [w.op(op_type, [n.inputs[0]])]


def _binary(op_type: str) -> Lowering:
    return lambda w, n: [w.op(op_type, [n.inputs[0], n.inputs[1]])]


def _softmax(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.op("Softmax", [n.inputs[0]], {"axis": int(n.args["dim"])})]


def _passthrough(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [n.inputs[0]]  # inference: dropout is the identity; no node is written


# ------------------------------------------------------------------ graphs: gathers and scatter-adds over edges
def _self_loops(w: GraphWriter, x: ir.Value, edges: ir.Value) -> tuple[ir.Value, ir.Value]:
    """Sources and targets (E + N,) of the edge index with a self loop per node appended."""
    loop = w.op("Range", [w.scalar(0, np.int64), w.dim(x, 0, scalar=True), w.scalar(1, np.int64)])
    row = [w.op("Gather", [edges, w.scalar(i, np.int64)], {"axis": 0}) for i in (0, 1)]
    return w.op("Concat", [row[0], loop], {"axis": 0}), w.op("Concat", [row[1], loop], {"axis": 0})


def _scatter(w: GraphWriter, data: ir.Value, index: ir.Value, updates: ir.Value, reduction: str,
             rank: int = 1) -> ir.Value:
    """data with each row of `updates` (of rank `rank`) combined into row index[k] (PyTorch's index_add /
    scatter_reduce along dim 0); ScatterElements takes an index of the updates' shape. Reduction `add` needs
    opset 16, `max` 18."""
    if rank > 1:
        index = w.op("Expand", [w.unsqueeze(index, list(range(1, rank))), w.shape(updates)])
    return w.op("ScatterElements", [data, index, updates], {"axis": 0, "reduction": reduction})


def _gcn_conv(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x, edges = n.inputs
    src, dst = _self_loops(w, x, edges)
    deg = _scatter(w, w.op("ConstantOfShape", [w.dim(x, 0)]), dst,
                   w.op("ConstantOfShape", [w.shape(dst)], {"value": ir.tensor(np.ones(1, np.float32))}), "add")
    inv_sqrt = w.op("Reciprocal", [w.op("Sqrt", [deg])])
    norm = w.op("Mul", [w.op("Gather", [inv_sqrt, src], {"axis": 0}), w.op("Gather", [inv_sqrt, dst], {"axis": 0})])
    h = w.op("MatMul", [x, w.op("Transpose", [n.weights["weight"]], {"perm": [1, 0]})])
    msg = w.op("Mul", [w.op("Gather", [h, src], {"axis": 0}), w.unsqueeze(norm, [1])])
    y = _scatter(w, w.op("ConstantOfShape", [w.shape(h)]), dst, msg, "add", 2)
    return [w.op("Add", [y, n.weights["bias"]]) if "bias" in n.weights else y]


def _gat_conv(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    """gat_conv, and gat_conv_edge (a third input, the edge features (E, edge_dim): the self loops' features the
    mean of their node's incoming edges', each edge's score a_edge . (f W_e^T) added to e)."""
    x, edges = n.inputs[:2]
    heads, c = int(n.args["heads"]), int(n.args["out_features"])
    src, dst = _self_loops(w, x, edges)
    h = w.op("MatMul", [x, w.op("Transpose", [n.weights["weight"]], {"perm": [1, 0]})])
    h = w.reshape(h, [0, heads, c])  # (N, H, C)
    score = [w.reduce("ReduceSum", w.op("Mul", [h, n.weights[k]]), [-1], keepdims=False) for k in ("att_src", "att_dst")]
    e = w.op("Add", [w.op("Gather", [score[0], src], {"axis": 0}), w.op("Gather", [score[1], dst], {"axis": 0})])
    if len(n.inputs) == 3:
        attr, d = n.inputs[2], int(n.args["edge_dim"])
        target = w.op("Gather", [edges, w.scalar(1, np.int64)], {"axis": 0})  # (E,)
        ones = w.op("ConstantOfShape", [w.shape(target)], {"value": ir.tensor(np.ones(1, np.float32))})
        count = w.op("Max", [_scatter(w, w.op("ConstantOfShape", [w.dim(x, 0)]), target, ones, "add"), w.scalar(1.0)])
        per_node_d = w.op("Concat", [w.dim(x, 0), w.i64(d)], {"axis": 0})
        loop_attr = w.op("Div", [_scatter(w, w.op("ConstantOfShape", [per_node_d]), target, attr, "add", 2),
                                 w.unsqueeze(count, [1])])
        attr = w.op("Concat", [attr, loop_attr], {"axis": 0})  # (E + N, edge_dim)
        he = w.op("MatMul", [attr, w.op("Transpose", [n.weights["lin_edge"]], {"perm": [1, 0]})])
        he = w.reshape(he, [0, heads, c])  # (E + N, H, C)
        e = w.op("Add", [e, w.reduce("ReduceSum", w.op("Mul", [he, n.weights["att_edge"]]), [-1], keepdims=False)])
    e = w.op("LeakyRelu", [e], {"alpha": float(n.args["negative_slope"])})  # (E + N, H)
    per_node = w.op("Concat", [w.dim(x, 0), w.i64(heads)], {"axis": 0})
    floor = w.op("ConstantOfShape", [per_node], {"value": ir.tensor(np.array([-np.inf], np.float32))})
    top = _scatter(w, floor, dst, e, "max", 2)
    p = w.op("Exp", [w.op("Sub", [e, w.op("Gather", [top, dst], {"axis": 0})])])
    total = _scatter(w, w.op("ConstantOfShape", [per_node]), dst, p, "add", 2)
    alpha = w.op("Div", [p, w.op("Gather", [total, dst], {"axis": 0})])
    msg = w.op("Mul", [w.op("Gather", [h, src], {"axis": 0}), w.unsqueeze(alpha, [2])])  # (E + N, H, C)
    y = _scatter(w, w.op("ConstantOfShape", [w.shape(h)]), dst, msg, "add", 3)
    y = w.reshape(y, [0, heads * c])
    return [w.op("Add", [y, n.weights["bias"]]) if "bias" in n.weights else y]


def _graph_mean_pool(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x, index = n.inputs
    graphs, d = int(n.args["graphs"]), int(n.in_shapes[0][1])
    total = _scatter(w, w.op("ConstantOfShape", [w.i64(graphs, d)]), index, x, "add", 2)
    ones = w.op("ConstantOfShape", [w.shape(index)], {"value": ir.tensor(np.ones(1, np.float32))})
    count = w.op("Max", [_scatter(w, w.op("ConstantOfShape", [w.i64(graphs)]), index, ones, "add"), w.scalar(1.0)])
    return [w.op("Div", [total, w.unsqueeze(count, [1])])]


def _same_graph_bias(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    ids = n.inputs[0]
    same = w.op("Equal", [w.unsqueeze(ids, [1]), w.unsqueeze(ids, [0])])  # (N, N)
    bias = w.op("Where", [same, w.scalar(0.0), w.scalar(float("-inf"))])
    size = w.dim(ids, 0)
    shape = w.op("Concat", [w.i64(1, int(n.args["heads"])), size, size], {"axis": 0})
    return [w.op("Expand", [w.unsqueeze(bias, [0, 1]), shape])]


# ------------------------------------------------------------------ detection
def _upsample(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # F.interpolate(scale_factor, "nearest"): source pixel floor(dst / factor)
    f = float(n.args["factor"])
    attrs: dict[str, AttrValue] = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                   "nearest_mode": "floor"}
    return [w.op("Resize", [n.inputs[0], None, w.const(np.array([1.0, 1.0, f, f], np.float32))], attrs)]


def _frozen_batchnorm(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    ws = n.weights  # the buffers, initializers named as in the state_dict
    return [w.op("BatchNormalization", [n.inputs[0], ws["weight"], ws["bias"], ws["running_mean"], ws["running_var"]],
                 {"epsilon": float(n.args["eps"])})]


def _sine_table(height: int, width: int, dim: int, temperature: float) -> np.ndarray:
    """The table of sine_position_2d in the PyTorch backend: (1, H*W, dim), y features first, sin/cos interleaved."""
    half = dim // 2
    scale = 2 * math.pi
    y = np.arange(1, height + 1, dtype=np.float32) / np.float32(height + 1e-6) * np.float32(scale)
    x = np.arange(1, width + 1, dtype=np.float32) / np.float32(width + 1e-6) * np.float32(scale)
    dim_t = (temperature ** (2 * (np.arange(half) // 2) / half)).astype(np.float32)
    py, px = y[:, None] / dim_t, x[:, None] / dim_t
    py = np.stack((np.sin(py[:, 0::2]), np.cos(py[:, 1::2])), axis=2).reshape(height, half)
    px = np.stack((np.sin(px[:, 0::2]), np.cos(px[:, 1::2])), axis=2).reshape(width, half)
    pos = np.concatenate((np.broadcast_to(py[:, None], (height, width, half)),
                          np.broadcast_to(px[None], (height, width, half))), axis=2)
    return pos.reshape(1, height * width, dim).astype(np.float32)


def _sine_position_2d(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # the positions depend on the (fixed) map size only: a constant, expanded over the batch
    x = n.inputs[0]
    table = _sine_table(int(n.args["height"]), int(n.args["width"]), _int_dim(n.in_shapes[0], -1, "features"),
                        float(n.args["temperature"]))
    return [w.op("Expand", [w.const(table), w.shape(x)])]


def _grouped_layernorm(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # as GroupedLayerNorm: (..., groups * dim) -> (..., groups, dim), normalised over dim, then the
    # per-feature scale and shift over the flattened last dim
    x, groups, dim = n.inputs[0], int(n.args["groups"]), int(n.args["dim"])
    rank = len(n.in_shapes[0])
    g = w.reshape(x, [0] * (rank - 1) + [groups, dim])
    ones, zeros = w.const(np.ones(dim, np.float32)), w.const(np.zeros(dim, np.float32))
    y = w.op("LayerNormalization", [g, ones, zeros], {"axis": -1, "epsilon": float(n.args["eps"])})
    y = w.reshape(y, [0] * (rank - 1) + [groups * dim])
    return [w.op("Add", [w.op("Mul", [y, n.weights["weight"]]), n.weights["bias"]])]


def _tile(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.op("Concat", [n.inputs[0]] * int(n.args["times"]), {"axis": int(n.args["dim"])})]


def _object_queries(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    x = n.inputs[0]
    table = w.unsqueeze(n.weights["weight"], [0])  # (1, num, dim)
    shape = w.op("Concat", [w.dim(x, 0), w.i64(int(n.args["num"]), int(n.args["dim"]))], {"axis": 0})
    return [w.op("Expand", [table, shape])]


def _codebook_embedding(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # codebook k's table is rows k * num .. (k + 1) * num - 1 of the flattened (codebooks * num, dim) weight
    k, num, dim = int(n.args["codebooks"]), int(n.args["num"]), int(n.args["dim"])
    table = w.reshape(n.weights["weight"], [k * num, dim])
    ids = w.op("Add", [n.inputs[0], w.const((np.arange(k, dtype=np.int64) * num)[:, None])])  # (B, K, T)
    return [w.reduce("ReduceSum", w.op("Gather", [table, ids], {"axis": 0}), [1], False)]  # (B, T, dim)


def _codebook_heads(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # one MatMul with the heads side by side, (B, T, dim) @ (dim, K * num), then (B, T, K, num) -> (B, K, T, num)
    k, num, dim = int(n.args["codebooks"]), int(n.args["num"]), int(n.args["dim"])
    wt = w.op("Transpose", [w.reshape(n.weights["weight"], [k * num, dim])], {"perm": [1, 0]})
    y = w.reshape(w.op("MatMul", [n.inputs[0], wt]), [0, 0, k, num])
    return [w.op("Transpose", [y], {"perm": [0, 2, 1, 3]})]


def _sinusoid_positions(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # the PyTorch helper's float32 frequencies; positions 0 .. T-1 from the input's length
    x = n.inputs[0]
    half = int(n.args["dim"]) // 2
    freqs = np.exp(np.arange(half, dtype=np.float32) * np.float32(-(math.log(10000) / (half - 1))))
    t = w.op("Range", [w.scalar(0, np.int64), w.dim(x, 1, scalar=True), w.scalar(1, np.int64)])
    arg = w.op("Mul", [w.unsqueeze(w.op("Cast", [t], {"to": int(ir.DataType.FLOAT)}), [1]),
                       w.const(freqs[None, :].astype(np.float32))])  # (T, half)
    pos = w.op("Concat", [w.op("Cos", [arg]), w.op("Sin", [arg])], {"axis": -1})
    return [w.op("Add", [x, pos])]


# ------------------------------------------------------------------ retrieval-augmented generation
def _top_k_pairs(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # as top_k_pairs in the PyTorch backend: TopK of the scores (largest first), the chosen passages gathered,
    # the question expanded over them and prefixed
    scores, question, passages = n.inputs
    k = int(n.args["k"])
    _values, index = w.op_multi("TopK", [scores, w.i64(k)], {"axis": -1, "largest": 1, "sorted": 1}, outputs=2)
    index = w.op("Expand", [w.unsqueeze(index, [2]),
                            w.op("Concat", [w.dim(index, 0), w.i64(k), w.dim(passages, 2)], {"axis": 0})])
    top = w.op("GatherElements", [passages, index], {"axis": 1})  # (B, k, Tp)
    q = w.op("Expand", [w.unsqueeze(question, [1]),
                        w.op("Concat", [w.dim(question, 0), w.i64(k), w.dim(question, 1)], {"axis": 0})])
    return [w.op("Concat", [q, top], {"axis": 2})]


LOWERINGS: dict[str, Lowering] = {
    "linear": _linear,
    "conv2d": _conv2d,
    "conv3d": _conv3d,
    "conv1d": _conv1d,
    "conv_transpose2d": _conv_transpose2d,
    "batchnorm": _batchnorm,
    "batchnorm1d": _batchnorm,
    "layernorm": _layernorm,
    "layernorm2d": _layernorm2d,
    "groupnorm": _groupnorm,
    "timestep_embedding": _timestep_embedding,
    "concat": _concat,
    "layer_scale": _layer_scale,
    "learned_log_std": _learned_log_std,
    "rmsnorm": _rmsnorm,
    "embedding": _embedding,
    "pos_embedding": _pos_embedding,
    "cls_token": _cls_token,
    "type_embedding": _type_embedding,
    "lstm": _rnn("LSTM"),
    "quick_gelu": _quick_gelu,
    "l2_normalize": _l2_normalize,
    "eot_pool": _eot_pool,
    "contrastive_logits": _contrastive_logits,
    "gru": _rnn("GRU"),
    "sdpa": _sdpa,
    "sdpa_bias": _sdpa_bias,
    "relative_position_bias": _relative_position_bias,
    "scale": _scale,
    "log_mel": _log_mel,
    "sinusoid_embedding": _sinusoid_embedding,
    "rope": _rope,
    "split": _split,
    "gelu": _gelu,
    "relu": _unary("Relu"),
    "relu6": lambda w, n: [w.op("Clip", [n.inputs[0], w.scalar(0.0), w.scalar(6.0)])],
    "silu": _silu,
    "elu": lambda w, n: [w.op("Elu", [n.inputs[0]], {"alpha": float(n.args["alpha"])})],
    "tanh": _unary("Tanh"),
    "sigmoid": _unary("Sigmoid"),
    "softmax": _softmax,
    "dropout": _passthrough,
    "identity": _passthrough,
    "maxpool2d": _pool("MaxPool"),
    "avgpool2d": _pool("AveragePool"),
    "global_avgpool": _global_avgpool,
    "resize": _resize,
    "flatten": _flatten,
    "transpose": _transpose,
    "permute": _permute,
    "unflatten": _unflatten,
    "max": _max,
    "matmul": _binary("MatMul"),
    "add_identity": _add_identity,
    "reparameterize": _reparameterize,
    "select": _select,
    "drop_prefix": _drop_prefix,
    "mean": _mean,
    "add": _binary("Add"),
    "sub": _binary("Sub"),
    "mul": _binary("Mul"),
    "split_sizes": _split_sizes,
    "causal_conv1d": _causal_conv1d,
    "selective_scan": _selective_scan,
    "s4d": _s4d,
    "moe": _moe,
    "gcn_conv": _gcn_conv,
    "gat_conv": _gat_conv,
    "gat_conv_edge": _gat_conv,
    "graph_mean_pool": _graph_mean_pool,
    "same_graph_bias": _same_graph_bias,
    "upsample": _upsample,
    "sine_position_2d": _sine_position_2d,
    "object_queries": _object_queries,
    "frozen_batchnorm": _frozen_batchnorm,
    "codebook_embedding": _codebook_embedding,
    "codebook_heads": _codebook_heads,
    "sinusoid_positions": _sinusoid_positions,
    "top_k_pairs": _top_k_pairs,
    "grouped_layernorm": _grouped_layernorm,
    "tile": _tile,
}
