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

from metagen_compiler.ir.graph import GraphIR, Node, dump_graph
from metagen_compiler.semantics.limits import LIMIT_CODE, LIMITS_HINT
from metagen_compiler.semantics.program import Program, device_profiles

from ..compilation import Compilation
from ..diagnostics import Note
from ..primitives import PRIMITIVES, fmt_shape, subst_dim

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


def concrete(shape: tuple[Any, ...], symbols: dict[str, int]) -> tuple[int, ...]:
    return tuple(subst_dim(d, symbols) for d in shape)


def _saved_inputs(nodes: dict[str, Node], prim: Any, in_ts: list[Any], in_roots: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The inputs autograd keeps. A product (mul, matmul) keeps each factor for the other's gradient, so the
    factor beside a graph input (which needs no gradient) is not kept."""
    if prim.n_inputs != 2 or prim.saves != "both":
        return in_roots
    return [r for k, r in enumerate(in_roots) if nodes[in_ts[1 - k].node_id].op != "input"]


def _folded_nodes(ir: GraphIR) -> set[str]:
    """Nodes an inference runtime folds into the convolution before them, at no cost of their own: a
    batchnorm whose input is a conv2d used by nothing else (its scale and shift go into the conv weights),
    and a relu right after such a conv (or conv + batchnorm) (a fused activation)."""
    g = ir.g
    folded: set[str] = set()
    for n in ir.topo():
        d = ir.nodes[n]
        if d.op not in ("batchnorm", "frozen_batchnorm", "relu"):
            continue
        (src,) = [t.node_id for t in ir.in_tensors(n)]
        if g.out_degree(src) != 1:
            continue
        s_op = ir.nodes[src].op
        if s_op == "conv2d" or (d.op == "relu" and s_op in ("batchnorm", "frozen_batchnorm") and src in folded):
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
        d = ir.nodes[n]
        assert d.shapes is not None, "estimate runs after shape inference"
        outs = [concrete(s, syms) for s in d.shapes]
        elem = 8 if d.op == "input" and d.dtypes == ["int64"] else 4
        for i, s in enumerate(outs):
            port_bytes[(n, i)] = math.prod(s) * elem
        bytes_out[n] = sum(math.prod(s) * elem for s in outs)
        if d.op == "input":
            for i in range(len(outs)):
                root[(n, i)] = (n, i)
            continue
        prim = PRIMITIVES[d.op]
        in_ts = ir.in_tensors(n)
        ins = [concrete(ir.shape_of(t), syms) for t in in_ts]
        mm, other = prim.flops(d.args, ins, outs)
        per_node[n] = (mm, other)
        total_mm += mm
        total_other += other
        in_roots = [root[(t.node_id, t.port)] for t in in_ts]
        for i in range(len(outs)):
            root[(n, i)] = in_roots[0] if prim.aliases(d.args) else (n, i)
        if prim.saves in ("input", "both"):
            saved.update(_saved_inputs(ir.nodes, prim, in_ts, in_roots))
        if prim.saves == "first":
            saved.add(in_roots[0])
        if prim.saves in ("output", "both"):
            saved.update(root[(n, i)] for i in range(len(outs)))
        saved_extra += prim.saved(d.args, ins, outs)
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
        d = ir.nodes[n]
        prim = PRIMITIVES[d.op]
        wbytes = sum(math.prod(s) for s in prim.weights(d.args).values()) if d.module else 0
        in_ts = ir.in_tensors(n)
        act_bytes = sum(bytes_out[x.node_id] for x in in_ts) + bytes_out[n]
        x0 = concrete(ir.shape_of(in_ts[0]), syms)
        calls = prim.matmul_calls(d.args, x0) if mm else 1
        costed.append((mm, other, wbytes, act_bytes, d.op, d.args, x0, calls, prim.recurrence(d.args, x0)))
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
    from metagen_compiler.semantics.modalities import INPUT_FORMS, input_forms

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
            ir.nodes[n].flops = mm
            ir.nodes[n].flops_other = other
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
