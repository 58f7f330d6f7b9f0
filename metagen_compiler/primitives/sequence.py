"""Recurrent and state-space layers and the mixture of experts."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .core import Param, Primitive, Shape, ShapeError, _check_positive, _expect_rank, _last, _same, fmt_shape, numel


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
    x = _expect_rank(s[0], "B, T, features")
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


def _seq_shape(x: Shape, channels: int, what: str) -> None:
    _expect_rank(x, "B, T, C")
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


def _rnn_saved(op: str) -> Callable[[Mapping[str, Any], list[tuple[int, ...]], list[tuple[int, ...]]], int]:
    """What PyTorch 2.13's CPU kernels keep for an nn.LSTM / nn.GRU (none of it a graph tensor).

    GRU (the native cell): a time-major copy of each layer's input per direction, and per step, layer and
    direction 7 x B x hidden floats (gates and states). LSTM (oneDNN): a time-major copy of the input and
    of each layer's output, and a workspace measured at about 16 floats per hidden unit, step, layer and
    direction at hidden sizes of 64 and more (more at tiny sizes, where its allocations round up to 4 KiB
    pages): fitted, not derived."""

    def saved(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> int:
        b, t, n_in = i[0]
        h, layers = int(a["hidden"]), int(a["layers"])
        dirs = 2 if a["bidirectional"] else 1
        per_step = layers * dirs * t * b * h
        if op == "gru":
            copies = dirs * b * t * n_in + (layers - 1) * dirs * b * t * h * dirs
            return 4 * (copies + 7 * per_step)
        return 4 * (b * t * n_in + layers * b * t * h * dirs + 16 * per_step)

    return saved


def _rnn_recurrence(gates: int) -> Callable[[Mapping[str, Any], tuple[int, ...]], tuple[str, int, int, int]]:
    """An LSTM (4 gates) or GRU (3) runs T steps per layer and direction, each a (B, hidden) x (hidden, gates
    hidden) product at the profile's per-step cost."""

    def recurrence(a: Mapping[str, Any], x: tuple[int, ...]) -> tuple[str, int, int, int]:
        b, t, _ = x
        h, dirs = int(a["hidden"]), 2 if a["bidirectional"] else 1
        return "rnn_step", t * int(a["layers"]) * dirs, 2 * b * gates * h * h, 0

    return recurrence


def _scan_saved(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> int:
    """exp(A_log) and A (d_inner x d_state each), softplus(dt) and dt * x (B, T, d_inner each), exp(dt A)
    (B, T, d_inner, d_state), the stacked states for C h (the same size) and each step's previous state (T of
    (B, d_inner, d_state), the first being the zero state)."""
    b, t, d = i[0]
    n = int(a["d_state"])
    return 4 * (2 * d * n + 2 * b * t * d + 2 * b * t * d * n + t * b * d * n)


def _scan_recurrence(a: Mapping[str, Any], x: tuple[int, ...]) -> tuple[str, int, int, int]:
    """T steps at the profile's per-step cost, each paying `scan_element` for the (B, d_inner, d_state) state."""
    b, t, _ = x
    return "scan_step", t, 0, b * int(a["d_inner"]) * int(a["d_state"])


def _s4d_saved(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> int:
    """H channels, M = d_state / 2 modes: the positions (T,), exp(log_dt) (H,), 15 tensors of (H, M) on the way
    to the kernel, five of (H, M, T), the flipped kernel (H, T) and the padded input (B, H, 2T - 1)."""
    b, t, h = i[0]
    m = int(a["d_state"]) // 2
    return 4 * (t + h + 15 * h * m + 5 * h * m * t + h * t + b * h * (2 * t - 1))


def _moe_saved(a: Mapping[str, Any], i: list[tuple[int, ...]], o: list[tuple[int, ...]]) -> int:
    """Without a capacity limit: the router probabilities, the gathered rows and their outputs (N top_k, D),
    the four (N top_k, hidden) tensors, the int64 top-k ids, gather and ungather indices, the gates. With N tokens
    and capacity C: the expert buffer (E C + 1, D), both expert projections, their silu and product (E, C,
    hidden), the router probabilities (N, E), the int64 expert ids and destinations and the bool kept-mask
    (N top_k each), the gathered outputs (N top_k, D), the masked gates, with normalize the raw top-k gates and
    their sums, and the routed fractions (E,)."""
    n, k, e = math.prod(i[0][:-1]), int(a["top_k"]), int(a["experts"])
    cap, d, h = moe_capacity(a, n), int(a["d_model"]), int(a["hidden"])
    gates = 4 * n * k + 4 * n if a["normalize"] else 0
    if cap is None:  # no capacity limit: the gathered rows, their outputs and three int64 indices (N top_k each)
        return 16 * n * k * h + 8 * n * k * d + 4 * n * e + 28 * n * k + gates + 4 * e
    return 16 * e * cap * h + 4 * (e * cap + 1) * d + 4 * n * e + 21 * n * k + 4 * n * k * d + gates + 4 * e


_P = Param


def _rnn(name: str, gates: int) -> Primitive:
    """lstm (4 gates) and gru (3): one declaration but for the name and the number of gates."""
    return Primitive(
        name, (_P("in_features", "int"), _P("hidden", "int"), _P("layers", "int", 1), _P("bidirectional", "bool", False)),
        f"{name.upper()} over (B, T, in) -> (B, T, hidden x directions), batch first, zero initial state.",
        weights=lambda a: _rnn_weights(a, gates), shape=_rnn_shape, flops=lambda a, i, o: _rnn_flops(a, i, gates),
        check=_check_positive("in_features", "hidden", "layers"), saves="none", tags=frozenset({"mm"}),
        saved=_rnn_saved(name), recurrence=_rnn_recurrence(gates),
    )


PRIMS: list[Primitive] = [
    _rnn("lstm", 4),
    _rnn("gru", 3),
    Primitive(
        "causal_conv1d", (_P("channels", "int"), _P("kernel", "int"), _P("bias", "bool", True)),
        "Depthwise causal convolution over time on (B, T, C): output t sees inputs t - kernel + 1 .. t.",
        weights=lambda a: {"weight": (a["channels"], 1, a["kernel"])} | ({"bias": (a["channels"],)} if a["bias"] else {}),
        shape=_causal_conv1d_shape, flops=_causal_conv1d_flops, check=_check_positive("channels", "kernel"),
        saves="none", tags=frozenset({"mm"}),
        saved=lambda a, i, o: 4 * i[0][0] * i[0][2] * (i[0][1] + int(a["kernel"]) - 1),  # its left-padded input
    ),
    Primitive(
        "selective_scan", (_P("d_inner", "int"), _P("d_state", "int")),
        "Selective state-space scan (Mamba's S6) of x, dt, B, C given as (B, T, .): with dt = softplus(dt) and "
        "A = -exp(A_log), h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t + D x_t.",
        n_inputs=4, weights=lambda a: {"A_log": (a["d_inner"], a["d_state"]), "D": (a["d_inner"],)},
        shape=_scan_shape, flops=_scan_flops, check=_check_positive("d_inner", "d_state"), saves="input",
        tags=frozenset({"scan"}),
        saved=_scan_saved, recurrence=_scan_recurrence,
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
        saved=_s4d_saved,
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
        saved=_moe_saved,
    ),
]
