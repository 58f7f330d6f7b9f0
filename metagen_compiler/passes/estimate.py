"""estimate: exact parameter count; FLOPs, memory and latency estimates.

Conventions (docs/estimates.md):
- flops_forward: 2 FLOPs per multiply-add in matmuls, convolutions and attention, at the nominal
  input (batch 1, the full context), as torch.utils.flop_counter counts them. `flops_other` holds
  a per-element estimate of everything else (norms, activations, softmax, adds).
- training FLOPs: 3x the forward matmul FLOPs (backward = 2x forward), the usual convention.
- memory: weights per dtype; inference activations = peak bytes of live tensors in topological
  order; training activations = bytes of the distinct storages autograd saves (per primitive: input,
  output, both or none, views sharing their input's storage, plus statistics; docs/estimates.md); AdamW state = 2 fp32 tensors per parameter, plus fp32 gradients.
- latency: per node, max(compute time, memory time) + a fixed per-kernel overhead, plus the profile's
  per-call `launch`; linear layers at the profile's measured rate for their rows (weights cached or from DRAM,
  by whether the model fits in the measured last-level cache, whose bandwidth a cached model's weight reads
  get); a recurrence (LSTM, GRU, selective scan) adds its steps at the profile's measured per-step cost, its
  recurrent product at the rate measured in the runtime's own recurrence for B rows; from the device profiles
  in stdlib/devices.msl or `--device-profile` files
  (peak x efficiency, bandwidth); batchnorm and relu after a conv are folded into it. An estimate.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ..compilation import Compilation
from ..diagnostics import Note
from ..graph import GraphIR, dump_graph
from ..limits import LIMIT_CODE, LIMITS_HINT
from ..primitives import PRIMITIVES, fmt_shape, moe_capacity, subst_dim
from ..program import Program, device_profiles

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


def concrete(shape: tuple[Any, ...], symbols: dict[str, int]) -> tuple[int, ...]:
    return tuple(subst_dim(d, symbols) for d in shape)


# Primitives whose outputs are views of their first input (no new storage): saving one of them keeps
# the whole input's storage alive, and saving both counts it once. Dropout with p = 0 returns its input.
VIEW_OPS = frozenset({"split", "split_sizes", "transpose", "flatten", "select", "identity", "permute", "unflatten",
                      "drop_prefix"})


def aliases_input(op: str, args: dict[str, Any]) -> bool:
    return op in VIEW_OPS or (op == "dropout" and not args.get("p"))


def saved_extra_bytes(op: str, args: dict[str, Any], ins: list[tuple[int, ...]], outs: list[tuple[int, ...]]) -> int:
    """Bytes autograd keeps for a primitive beyond its inputs and outputs (PyTorch's CPU kernels, fp32).

    layernorm: mean and rstd per row; layernorm2d: mean and rstd per position (B x H x W);
    groupnorm: mean and rstd per sample and group (B x groups);
    rmsnorm: rstd per row and the normalised tensor before the weight;
    grouped_layernorm: mean and rstd per row and group, and the normalised tensor before the weight;
    batchnorm, batchnorm1d: mean and invstd per channel; frozen_batchnorm: its scale per channel;
    reparameterize (training): exp(logvar) for the KL term, the standard deviation and the noise, 3 x (B, latent);
    sdpa: the log-sum-exp per query row (flash attention);
    maxpool2d: int64 indices of the output's size; rope: cos and sin tables (T, head size);
    dropout with p > 0: the scaled fp32 mask; causal_conv1d: its left-padded input (B, C, T + kernel - 1);
    selective_scan: exp(A_log) and A (d_inner x d_state each), softplus(dt) and dt * x (B, T, d_inner each),
    exp(dt A) (B, T, d_inner, d_state), the stacked states for C h (the same size) and each step's previous
    state (T of (B, d_inner, d_state), the first being the zero state); moe without a capacity limit: the
    router probabilities, the gathered rows and their outputs (N top_k, D), the four (N top_k, hidden) tensors,
    the int64 top-k ids, gather and ungather indices, the gates; moe (N tokens, capacity C): the
    expert buffer (E C + 1, D), both expert projections, their silu and product (E, C, hidden), the router
    probabilities (N, E), the int64 expert ids and destinations and the bool kept-mask (N top_k each), the
    gathered outputs (N top_k, D), the masked gates, with normalize the raw top-k gates and their sums, and
    the routed fractions (E,); s4d (H channels, M = d_state / 2 modes): the positions (T,), exp(log_dt) (H,),
    15 tensors of (H, M) on the way to the kernel, five of (H, M, T), the flipped kernel (H, T) and the padded
    input (B, H, 2T - 1)."""
    if op == "layernorm":
        return 2 * 4 * (math.prod(ins[0]) // ins[0][-1])
    if op == "layernorm2d":
        return 2 * 4 * (math.prod(ins[0]) // ins[0][1])
    if op == "groupnorm":
        return 2 * 4 * ins[0][0] * int(args["groups"])
    if op == "rmsnorm":
        return 4 * (math.prod(ins[0]) // ins[0][-1]) + 4 * math.prod(outs[0])
    if op == "grouped_layernorm":
        return 2 * 4 * (math.prod(ins[0]) // int(args["dim"])) + 4 * math.prod(outs[0])
    if op == "reparameterize":
        return 3 * 4 * math.prod(outs[0])
    if op in ("batchnorm", "batchnorm1d"):
        return 2 * 4 * int(args["channels"])
    if op == "frozen_batchnorm":  # the per-channel scale x is multiplied by
        return 4 * int(args["channels"])
    if op == "sdpa":
        b, t, _ = ins[0]
        return 4 * b * int(args["heads"]) * t
    if op == "maxpool2d":
        return 8 * math.prod(outs[0])
    if op == "rope":
        t, c = ins[0][1], ins[0][2]
        return 2 * 4 * t * (c // int(args["heads"]))
    if op == "causal_conv1d":
        b, t, c = ins[0]
        return 4 * b * c * (t + int(args["kernel"]) - 1)
    if op == "selective_scan":
        b, t, d = ins[0]
        n = int(args["d_state"])
        return 4 * (2 * d * n + 2 * b * t * d + 2 * b * t * d * n + t * b * d * n)
    if op == "s4d":
        b, t, h = ins[0]
        m = int(args["d_state"]) // 2
        return 4 * (t + h + 15 * h * m + 5 * h * m * t + h * t + b * h * (2 * t - 1))
    if op == "moe":
        n, k, e = math.prod(ins[0][:-1]), int(args["top_k"]), int(args["experts"])
        cap, d, h = moe_capacity(args, n), int(args["d_model"]), int(args["hidden"])
        gates = 4 * n * k + 4 * n if args["normalize"] else 0
        if cap is None:  # no capacity limit: the gathered rows, their outputs and three int64 indices (N top_k each)
            return 16 * n * k * h + 8 * n * k * d + 4 * n * e + 28 * n * k + gates + 4 * e
        return 16 * e * cap * h + 4 * (e * cap + 1) * d + 4 * n * e + 21 * n * k + 4 * n * k * d + gates + 4 * e
    if op == "dropout" and args.get("p"):
        return 4 * math.prod(outs[0])
    if op in ("lstm", "gru"):
        return _rnn_saved_bytes(op, args, ins[0])
    if op == "quick_gelu":  # sigmoid(1.702 x), kept beside x
        return 4 * math.prod(outs[0])
    if op == "l2_normalize":  # the norm and its clamp, one value per row each
        return 2 * 4 * (math.prod(ins[0]) // ins[0][int(args["dim"])])
    if op == "eot_pool":  # the int64 row and column indices
        return 2 * 8 * ins[0][0]
    if op == "contrastive_logits":  # the unscaled similarities and exp(logit_scale)
        return 4 * math.prod(outs[0]) + 4
    if op in ("gcn_conv", "gat_conv"):
        return _graph_conv_saved_bytes(op, args, ins)
    if op == "graph_mean_pool":  # the node count per graph, the divisor
        return 4 * int(args["graphs"])
    return 0


def _graph_conv_saved_bytes(op: str, args: dict[str, Any], ins: list[tuple[int, ...]]) -> int:
    """Beyond the node features: the int64 sources and targets with self loops (E' = E + N each, for the
    gathers and the scatter) and the scaled messages the scatter adds up (index_add keeps its source);
    gcn_conv: the normalisation per edge (E',); gat_conv (H heads of C): the projected features h (N, H C), per edge and head the LeakyReLU input, exp, the gathered
    softmax sums and alpha (E', H), the gathered features (E', H, C)."""
    n, e = ins[0][0], ins[1][1] + ins[0][0]
    if op == "gcn_conv":
        return 2 * 8 * e + 4 * e + 4 * e * int(args["out_features"])
    h, c = int(args["heads"]), int(args["out_features"])
    return 2 * 8 * e + 4 * n * h * c + 4 * 4 * e * h + 2 * 4 * e * h * c


def _rnn_saved_bytes(op: str, args: dict[str, Any], x: tuple[int, ...]) -> int:
    """What PyTorch 2.13's CPU kernels keep for an nn.LSTM / nn.GRU (none of it a graph tensor).

    GRU (the native cell): a time-major copy of each layer's input per direction, and per step, layer and
    direction 7 x B x hidden floats (gates and states). LSTM (oneDNN): a time-major copy of the input and
    of each layer's output, and a workspace measured at about 16 floats per hidden unit, step, layer and
    direction at hidden sizes of 64 and more (more at tiny sizes, where its allocations round up to 4 KiB
    pages): fitted, not derived."""
    b, t, n_in = x
    h, layers = int(args["hidden"]), int(args["layers"])
    dirs = 2 if args["bidirectional"] else 1
    per_step = layers * dirs * t * b * h
    if op == "gru":
        copies = dirs * b * t * n_in + (layers - 1) * dirs * b * t * h * dirs
        return 4 * (copies + 7 * per_step)
    return 4 * (b * t * n_in + layers * b * t * h * dirs + 16 * per_step)



def _saved_inputs(g: Any, prim: Any, in_ts: list[Any], in_roots: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The inputs autograd keeps. A product (mul, matmul) keeps each factor for the other's gradient, so the
    factor beside a graph input (which needs no gradient) is not kept."""
    if prim.n_inputs != 2 or prim.saves != "both":
        return in_roots
    return [r for k, r in enumerate(in_roots) if g.nodes[in_ts[1 - k].node]["op"] != "input"]


def _folded_nodes(ir: GraphIR) -> set[str]:
    """Nodes an inference runtime folds into the convolution before them, at no cost of their own: a
    batchnorm whose input is a conv2d used by nothing else (its scale and shift go into the conv weights),
    and a relu right after such a conv (or conv + batchnorm) (a fused activation)."""
    g = ir.g
    folded: set[str] = set()
    for n in ir.topo():
        d = g.nodes[n]
        if d["op"] not in ("batchnorm", "frozen_batchnorm", "relu"):
            continue
        (src,) = [t.node for t in ir.in_tensors(n)]
        if g.out_degree(src) != 1:
            continue
        s_op = g.nodes[src]["op"]
        if s_op == "conv2d" or (d["op"] == "relu" and s_op in ("batchnorm", "frozen_batchnorm") and src in folded):
            folded.add(n)
    return folded


def _by_rows(table: list[tuple[Any, Any]], rows: int) -> float:
    """Throughput at `rows`, interpolated in log(rows) between the measured points, constant past the ends."""
    pts = sorted((float(r), float(v)) for r, v in table)
    x = math.log(max(rows, 1))
    if x <= math.log(pts[0][0]):
        return pts[0][1]
    for (r0, v0), (r1, v1) in itertools.pairwise(pts):
        a, b = math.log(r0), math.log(r1)
        if x <= b:
            return v0 + (v1 - v0) * (x - a) / (b - a)
    return pts[-1][1]


def _matmul_calls(op: str, args: dict[str, Any], x: tuple[int, ...]) -> int:
    """How many independent matrix products a node's matmul FLOPs split into: attention runs one per
    (batch, head), whatever its total."""
    if op in ("sdpa", "sdpa_bias"):
        return max(1, x[0] * int(args.get("heads", 1)))
    return 1


def _recurrence(op: str, args: dict[str, Any], x: tuple[int, ...]) -> tuple[str, int, int, int] | None:
    """A node that runs step by step: (the profile's per-step cost, steps, matmul FLOPs of one step's
    recurrent product, state elements each step pays `scan_element` for); None for a node that runs at once."""
    if op in ("lstm", "gru"):
        b, t, _ = x
        h, dirs, gates = int(args["hidden"]), 2 if args["bidirectional"] else 1, 4 if op == "lstm" else 3
        return "rnn_step", t * int(args["layers"]) * dirs, 2 * b * gates * h * h, 0
    if op == "selective_scan":
        b, t, _ = x
        return "scan_step", t, 0, b * int(args["d_inner"]) * int(args["d_state"])
    return None


def estimate(ir: GraphIR, prog: Program, symbols: dict[str, int] | None = None) -> dict[str, Any]:
    syms = symbols or ir.symbols
    g = ir.g
    total_mm = total_other = 0
    per_node: dict[str, tuple[int, int]] = {}
    bytes_out: dict[str, int] = {}
    port_bytes: dict[tuple[str, int], int] = {}
    root: dict[tuple[str, int], tuple[str, int]] = {}  # tensor -> the tensor that owns its storage
    saved: set[tuple[str, int]] = set()  # storages autograd keeps, each once
    saved_extra = 0  # bytes autograd keeps that are no graph tensor (norm statistics, pool indices, ...)
    for n in ir.topo():
        d = g.nodes[n]
        outs = [concrete(s, syms) for s in d["shapes"]]
        elem = 8 if d.get("dtype") == "int64" else 4
        for i, s in enumerate(outs):
            port_bytes[(n, i)] = math.prod(s) * elem
        bytes_out[n] = sum(math.prod(s) * elem for s in outs)
        if d["op"] == "input":
            for i in range(len(outs)):
                root[(n, i)] = (n, i)
            continue
        prim = PRIMITIVES[d["op"]]
        in_ts = ir.in_tensors(n)
        ins = [concrete(ir.shape_of(t), syms) for t in in_ts]
        mm, other = prim.flops(d["args"], ins, outs)
        per_node[n] = (mm, other)
        total_mm += mm
        total_other += other
        in_roots = [root[(t.node, t.port)] for t in in_ts]
        for i in range(len(outs)):
            root[(n, i)] = in_roots[0] if aliases_input(d["op"], d["args"]) else (n, i)
        if prim.saves in ("input", "both"):
            saved.update(_saved_inputs(g, prim, in_ts, in_roots))
        if prim.saves == "first":
            saved.add(in_roots[0])
        if prim.saves in ("output", "both"):
            saved.update(root[(n, i)] for i in range(len(outs)))
        saved_extra += saved_extra_bytes(d["op"], d["args"], ins, outs)
    saved_bytes = sum(port_bytes[t] for t in saved) + saved_extra
    # peak of live activations (inference): a tensor lives until its last consumer has run
    order = ir.topo()
    pos = {n: i for i, n in enumerate(order)}
    last_use = {n: max((pos[s] for s in g.successors(n)), default=len(order)) for n in order}
    outputs = {t.node for _, t in ir.outputs}
    live = peak = 0
    frees: dict[int, list[str]] = {}
    for n in order:
        frees.setdefault(last_use[n], []).append(n)
    for i, n in enumerate(order):
        live += bytes_out[n]
        peak = max(peak, live)
        for m in frees.get(i, []):
            if m not in outputs:
                live -= bytes_out[m]
    params = ir.param_count()
    weights = {k: params * v for k, v in DTYPE_BYTES.items()}
    latency: dict[str, dict[str, float]] = {}
    folded = _folded_nodes(ir)
    # what each node's cost depends on, apart from the device: weight elements, activation bytes moved
    # (fp32), the first input's shape, the number of matmul calls, the recurrence
    costed: list[tuple[int, int, int, int, str, dict[str, Any], tuple[int, ...], int, Any]] = []
    for n, (mm, other) in per_node.items():
        if n in folded:
            continue
        d = g.nodes[n]
        wbytes = sum(math.prod(s) for s in PRIMITIVES[d["op"]].weights(d["args"]).values()) if d.get("module") else 0
        in_ts = ir.in_tensors(n)
        act_bytes = sum(bytes_out[x.node] for x in in_ts) + bytes_out[n]
        x0 = concrete(ir.shape_of(in_ts[0]), syms)
        calls = _matmul_calls(d["op"], d["args"], x0) if mm else 1
        costed.append((mm, other, wbytes, act_bytes, d["op"], d["args"], x0, calls, _recurrence(d["op"], d["args"], x0)))
    for dev, prof in device_profiles(prog).items():
        latency[dev] = {}
        for dtype in ("fp32", "bf16"):
            peak_flops = float(prof.get(dtype, prof.get("fp32", 1e12))) * float(prof.get("efficiency", 0.5))
            bw = float(prof.get("bandwidth", 1e11))
            # a model whose weights and live activations fit in the last-level cache keeps its weights there
            # from one call to the next: they are read at the cache's measured bandwidth, and its products
            # run at the rates measured with a cached weight; a larger model's at those measured from DRAM
            cache = float(prof.get("cache_bytes", 0.0))
            resident = not cache or (params * DTYPE_BYTES[dtype] + peak * DTYPE_BYTES[dtype] // 4) <= cache
            w_bw = max(bw, float(prof.get("cache_bandwidth", bw))) if cache and resident else bw
            overhead = float(prof.get("overhead", 1e-5))
            # non-matmul work (norms, activations, softmax) at the profile's measured vector rate, where it has one
            vector = float(prof["vector"]) if "vector" in prof and dtype == "fp32" else peak_flops
            t = float(prof.get("launch", 0.0))
            half = float(prof.get("matmul_half", 0.0))
            rows_cached = list(zip(prof.get("matmul_rows", ()), prof.get("matmul_rows_fp32", ())))
            rows_dram = list(zip(prof.get("matmul_rows", ()), prof.get("matmul_rows_dram_fp32", ())))
            rows_thr = rows_cached if resident or not rows_dram else rows_dram
            rnn_rows = list(zip(prof.get("rnn_rows", ()), prof.get("rnn_rows_fp32", ())))
            for mm, other, wbytes, act_bytes, op, args, x0, calls, rec in costed:
                t_mem = act_bytes * DTYPE_BYTES[dtype] // 4 / bw + wbytes * DTYPE_BYTES[dtype] / w_bw
                by_rows = rows_thr and dtype == "fp32"
                t_seq = 0.0
                if rec:  # the input products at once (rows B x T), the recurrent ones step by step (rows B)
                    step_cost, steps, step_mm, elems = rec
                    rate_all = _by_rows(rows_thr, x0[0] * x0[1]) if by_rows else peak_flops
                    # measured in the runtime's own recurrence where the profile has it; else a product of B
                    # rows whose weight, read again at every step, stays cached where it fits
                    step_w = step_mm // (2 * x0[0]) * DTYPE_BYTES[dtype]
                    rows_step = rows_cached if not cache or step_w <= cache or not rows_dram else rows_dram
                    rows_step = rnn_rows if rnn_rows and step_mm else rows_step
                    rate_step = _by_rows(rows_step, x0[0]) if by_rows else peak_flops
                    t_mm = (mm - steps * step_mm) / rate_all + steps * step_mm / rate_step
                    t_seq = steps * (float(prof.get(step_cost, 0.0)) + elems * float(prof.get("scan_element", 0.0)))
                elif by_rows and op == "linear":  # a product of M rows, at its measured rate
                    t_mm = mm / _by_rows(rows_thr, math.prod(x0) // max(1, int(args["in_features"])))
                elif calls > 1 and half:
                    v = mm / calls
                    t_mm = mm / (peak_flops * v / (v + half))
                else:
                    t_mm = mm / peak_flops
                t += max(t_mm + other / vector, t_mem) + t_seq + overhead
            latency[dev][dtype] = t
    return {
        "params": params,
        "flops_forward": total_mm,
        "macs_forward": total_mm // 2,
        "flops_other": total_other,
        "flops_training": 3 * total_mm,
        "per_node": per_node,
        "memory": {
            "weights_bytes": weights,
            "activations_inference_bytes": peak,
            "activations_training_bytes": saved_bytes,
            "gradients_bytes": params * 4,
            "adamw_state_bytes": params * 8,
            "training_total_bytes": params * 4 * 4 + saved_bytes,
            "inference_total_bytes": params * 4 + peak,
        },
        "latency_s": latency,
        "symbols": dict(syms),
    }


def check_inputs(comp: Compilation) -> bool:
    """Every dimension of every model input is 0 or more (an empty edge list is a graph), and the range of an
    id input (`nodes` for an edge index, `vocab` for tokens) is 1 or more: `example_inputs` draws ids from
    it, and `nodes = 0` compiled into a model whose example inputs failed. The primitives refuse zero
    widths; this covers the sizes only inputs use."""
    from ..modalities import INPUT_FORMS, input_forms

    spec, ir = comp.spec, comp.graph
    assert spec is not None and ir is not None
    shapes = {i.name: i.shape for i in ir.inputs}
    for slot in spec.encoders:
        modality = slot.modality or slot.key
        if modality not in INPUT_FORMS:
            continue
        for form in input_forms(slot.key, modality):
            name = f"{slot.key}_{form.suffix}" if form.suffix else slot.key
            if name not in shapes:
                continue
            uses = [(d, form.symbols.get(d, d)) for d in form.shape if isinstance(d, str) and d != "B"]
            uses += [("", form.high)] if form.high else []
            for sym, param in uses:
                value = ir.symbols.get(sym) if sym in form.symbols else spec.dims.get(param, form.defaults.get(param))
                least = 0 if sym else 1  # an empty edge list is a graph; ids drawn from 0..-1 are not
                if isinstance(value, int) and not isinstance(value, bool) and value < least:
                    b = spec.bindings.get(param)
                    role = (f"needs it for the shape {fmt_shape(shapes[name])}: it must be 0 or more" if sym else
                            f"draws its ids from 0 to `{param}` - 1: it must be 1 or more")
                    comp.bag.error("E205", f"`{param}` is {value}, but the model input `{name}` {role}",
                                   b.span if b is not None else spec.family_span,
                                   notes=[Note(f"in family `{spec.family.qualname}`, which the model's architecture "
                                               "names here", spec.family_span)] if b is None or b.source != "model" else [])
                    return False
    return True


@dataclass(frozen=True)
class EstimatePass:
    name: ClassVar[str] = "estimate"
    doc: ClassVar[str] = "Count parameters exactly; estimate FLOPs, memory and latency per device class."

    def run(self, comp: Compilation) -> None:
        ir, prog = comp.graph, comp.program
        assert ir is not None and prog is not None
        if not check_inputs(comp):
            return
        try:
            est = estimate(ir, prog)
        except OverflowError:  # every dim within the limits, yet a cost past the float range (a device profile's numbers)
            comp.bag.error(LIMIT_CODE, "the model's estimated costs pass the largest number the language allows "
                           "(about 1.8e308)", ir.spec.family_span, hint=LIMITS_HINT)
            return
        for n, (mm, other) in est.pop("per_node").items():
            ir.g.nodes[n]["flops"] = mm
            ir.g.nodes[n]["flops_other"] = other
        ir.g.graph["estimates"] = est

    def dump(self, comp: Compilation) -> str:
        if not comp.graph:
            return ""
        est = comp.graph.g.graph["estimates"]
        lines = [dump_graph(comp.graph).rstrip("\n"), "estimates:"]
        lines.append(f"  params = {est['params']}")
        lines.append(f"  flops_forward = {est['flops_forward']}  (at {est['symbols']})")
        lines.append(f"  flops_other = {est['flops_other']}")
        for k, v in est["memory"].items():
            lines.append(f"  memory.{k} = {v}")
        for dev, lat in est["latency_s"].items():
            lines.append(f"  latency.{dev} = " + ", ".join(f"{k} {v * 1e3:.4g} ms" for k, v in lat.items()))
        return "\n".join(lines) + "\n"
