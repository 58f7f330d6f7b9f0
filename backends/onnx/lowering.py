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

from .writer import GraphWriter

__all__ = ["LOWERINGS", "KVState", "NodeCtx"]


@dataclass
class KVState:
    """Past keys and values of one attention, for the decoder step with a cache (see export.py)."""

    past_key: ir.Value  # (batch, kv_heads, past_sequence, head_size)
    past_value: ir.Value  # (batch, kv_heads, past_sequence, head_size_v)
    present_key: ir.Value | None = None
    present_value: ir.Value | None = None


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


def _layer_scale(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.op("Mul", [n.inputs[0], n.weights["weight"]])]


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
        attrs = {"q_num_heads": heads, "kv_num_heads": kv_heads, "is_causal": int(causal)}
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


def _rope(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    # rotate-half layout, as apply_rope in the PyTorch backend
    q, k = n.inputs
    heads, base = int(n.args["heads"]), float(n.args["base"])
    hs = _int_dim(n.in_shapes[0], -1, "q's features") // heads
    # in float64, then rounded once: float32 pow differs in the last bit between numpy builds
    inv_freq = (1.0 / (float(base) ** (np.arange(0, hs, 2, dtype=np.float64) / hs))).astype(np.float32)
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
    if dims.count(-1) > 1:
        raise ValueError(f"cannot reshape {in_shape} to {out_shape} with one inferred dim")
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


def _unflatten(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [_reshape_to(w, n.inputs[0], n.in_shapes[0], n.out_shapes[0])]


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


def _mean(w: GraphWriter, n: NodeCtx) -> list[ir.Value]:
    return [w.reduce_mean(n.inputs[0], [int(n.args["dim"])], keepdims=False)]


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


LOWERINGS: dict[str, Lowering] = {
    "linear": _linear,
    "conv2d": _conv2d,
    "conv1d": _conv1d,
    "conv_transpose2d": _conv_transpose2d,
    "batchnorm": _batchnorm,
    "batchnorm1d": _batchnorm,
    "layernorm": _layernorm,
    "layernorm2d": _layernorm2d,
    "layer_scale": _layer_scale,
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
    "rope": _rope,
    "split": _split,
    "gelu": _gelu,
    "relu": _unary("Relu"),
    "silu": _silu,
    "tanh": _unary("Tanh"),
    "sigmoid": _unary("Sigmoid"),
    "softmax": _softmax,
    "dropout": _passthrough,
    "identity": _passthrough,
    "maxpool2d": _pool("MaxPool"),
    "avgpool2d": _pool("AveragePool"),
    "global_avgpool": _global_avgpool,
    "flatten": _flatten,
    "transpose": _transpose,
    "permute": _permute,
    "unflatten": _unflatten,
    "max": _max,
    "matmul": _binary("MatMul"),
    "add_identity": _add_identity,
    "reparameterize": _reparameterize,
    "select": _select,
    "mean": _mean,
    "add": _binary("Add"),
    "sub": _binary("Sub"),
    "mul": _binary("Mul"),
}
