"""`metagenc calibrate`: measure this machine with onnxruntime on CPU and write a device profile.

Three measurements, each the median of several timed runs after a warm-up:
- fp32 matmul throughput: one MatMul at a few shapes, skinny to square; the profile's `fp32` is their median;
- memory bandwidth: a large elementwise Add (two inputs read, one output written), and the same within the
  last-level cache (`cache_bandwidth`; its size, `cache_bytes`, as the OS reports it);
- per-op overhead: a chain of tiny Add nodes on a 16-element tensor, time per node; `launch`: one run of a
  one-node graph less that, the fixed cost of a call.

The result is an MSL file with one `device` block (efficiency = 1.0: the numbers are measured, not
published peaks). Use it with `metagenc FILE --device-profile calibrated.msl`; constraints may then say
`latency < 20ms on <name>`. onnxruntime is imported here only, so compiling never needs it.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

__all__ = ["cache_size", "main", "measure", "profile_text"]

# (M, K, N): square and skinny (few rows, as in small-batch inference) shapes
MATMUL_SHAPES = ((16, 256, 256), (64, 256, 256), (64, 512, 512), (256, 256, 256), (256, 512, 512), (512, 512, 512),
                 (1024, 1024, 1024))


def _session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _runner(sess: Any, feed: dict[str, Any]) -> Callable[[], Any]:
    """One inference call of `sess` on `feed`, the call `_time` times."""
    return lambda: sess.run(None, feed)


def _time(fn: Callable[[], Any], runs: int, min_s: float = 0.02) -> float:
    """Median seconds per call; each sample repeats the call until it lasts at least `min_s`."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(min_s / once))
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        samples.append((time.perf_counter() - t) / reps)
    return statistics.median(samples)


def _model(nodes: list[Any], inputs: list[Any], output: Any) -> Any:
    from onnx import helper

    graph = helper.make_graph(nodes, "calibrate", inputs, [output])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


# non-matmul primitives timed for the `vector` rate (weightless, so they lower without initializers)
VECTOR_OPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("softmax", {}), ("gelu", {"approximate": "none"}), ("gelu", {"approximate": "tanh"}), ("silu", {}),
    ("sigmoid", {}), ("tanh", {}),
)


def _lowered(op: str, args: dict[str, Any], shape: tuple[int, ...] | list[tuple[int, ...]],
             constant: bool = False) -> Any:
    """A one-primitive ONNX model through the ONNX backend's own lowering of `op`: inputs x (or x0, x1, ...
    for several shapes), its weights as further inputs named as the primitive names them, one output y. With
    `constant`, the weights are initializers instead (random, 0.1 x normal, seeded), as in a compiled model:
    onnxruntime folds what depends on them alone and packs them for its products once, at load time."""
    import onnx_ir as ir
    from metagen_backends.onnx.lowering import LOWERINGS, NodeCtx
    from metagen_backends.onnx.writer import GraphWriter

    from ..primitives import PRIMITIVES

    shapes = shape if isinstance(shape, list) else [shape]
    names = ["x"] if len(shapes) == 1 else [f"x{i}" for i in range(len(shapes))]
    f32 = ir.TensorType(ir.DataType.FLOAT)
    xs = [ir.Value(name=nm, shape=ir.Shape(list(s)), type=f32) for nm, s in zip(names, shapes)]
    ws = {k: ir.Value(name=k, shape=ir.Shape(list(s)), type=f32) for k, s in PRIMITIVES[op].weights(args).items()}
    out_shapes = PRIMITIVES[op].shape(args, list(shapes))
    w = GraphWriter(17)
    (y,) = LOWERINGS[op](w, NodeCtx("n", op, args, xs, list(shapes), out_shapes, ws))
    y.name = "y"
    graph = ir.Graph([*xs, *ws.values()], [y], nodes=w.nodes, opset_imports={"": 17}, name="calibrate")
    model = ir.serde.serialize_model(ir.Model(graph, ir_version=8))
    if constant:
        import numpy as np
        from onnx import numpy_helper

        rng = np.random.default_rng(0)
        kept = [i for i in model.graph.input if i.name not in ws]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        for k, s in PRIMITIVES[op].weights(args).items():
            model.graph.initializer.append(numpy_helper.from_array(0.1 * rng.standard_normal(s, dtype=np.float32), k))
    return model


def _feed(sess: Any, rng: Any) -> dict[str, Any]:
    """Random float32 inputs of a session's (fixed) input shapes, small enough for exp and softplus."""
    import numpy as np

    return {i.name: 0.1 * rng.standard_normal(i.shape, dtype=np.float32) for i in sess.get_inputs()}


# recurrences as the backend lowers them, with constant weights as in a compiled model, timed at two lengths
# and the difference taken per step (the fixed costs of the node and of the call cancel): an ONNX LSTM / GRU
# step at a tiny width, its fixed cost (`rnn_step`); the same at a working width (hidden 256, a tiny input so
# the input product is negligible) and batch B = 1, 4, 16, the recurrent product's rate (`rnn_rows`, its
# FLOPs over the step's time less `rnn_step`, the mean of LSTM and GRU); and a Scan iteration of the
# selective scan at two state sizes (`scan_step` + `scan_element` per element of the (B, d_inner, d_state) state)
RNN_STEP_OPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("lstm", {"in_features": 8, "hidden": 8, "layers": 1, "bidirectional": False}),
    ("gru", {"in_features": 8, "hidden": 8, "layers": 1, "bidirectional": False}),
)
SCAN_WIDTHS = ((8, 4), (256, 16))  # (d_inner, d_state)
RNN_ROWS = (1, 4, 16)  # batch rows of the recurrent product
RNN_WIDTH = 256


def _rnn_shapes(rows: int, in_features: int) -> Callable[[int], list[tuple[int, ...]]]:
    """The input shape of a recurrence over `t` steps: (rows, t, in_features)."""
    return lambda t: [(rows, t, in_features)]


def _scan_shapes(d_inner: int, d_state: int) -> Callable[[int], list[tuple[int, ...]]]:
    """The input shapes of the selective scan over `t` steps: x, delta (1, t, d_inner); B, C (1, t, d_state)."""
    return lambda t: [(1, t, d_inner), (1, t, d_inner), (1, t, d_state), (1, t, d_state)]


def _per_step(op: str, args: dict[str, Any], shapes: Callable[[int], list[tuple[int, ...]]], threads: int, runs: int,
              quick: bool) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    short, long = (16, 80) if quick else (16, 272)
    secs = []
    for t in (short, long):
        sess = _session(_lowered(op, args, shapes(t), constant=True), threads)
        feed = _feed(sess, rng)
        secs.append(_time(_runner(sess, feed), runs))
    return max(0.0, (secs[1] - secs[0]) / (long - short))


class _Steps(TypedDict):
    """The recurrence costs `_steps` measures (seconds; rnn_rows in FLOP/s by rows B)."""

    rnn_step: float
    scan_step: float
    scan_element: float
    rnn_rows: dict[int, float]


def _steps(threads: int, runs: int, quick: bool) -> _Steps:
    rnn = [_per_step(op, args, _rnn_shapes(1, args["in_features"]), threads, runs, quick) for op, args in RNN_STEP_OPS]
    scan = []
    for d, n in SCAN_WIDTHS:
        scan.append(_per_step("selective_scan", {"d_inner": d, "d_state": n}, _scan_shapes(d, n), threads, runs, quick))
    (d0, n0), (d1, n1) = SCAN_WIDTHS
    per_elem = max(0.0, (scan[1] - scan[0]) / (d1 * n1 - d0 * n0))
    rnn_step = statistics.median(rnn)
    rows = {}
    for b in RNN_ROWS[:2] if quick else RNN_ROWS:
        rates = []
        for op, small in RNN_STEP_OPS:
            args = {**small, "hidden": RNN_WIDTH}
            step = _per_step(op, args, _rnn_shapes(b, args["in_features"]), threads, runs, quick)
            gates = 4 if op == "lstm" else 3
            rates.append(2.0 * b * gates * RNN_WIDTH**2 / max(step - rnn_step, 1e-9))
        rows[b] = statistics.fmean(rates)
    return {"rnn_step": rnn_step, "scan_step": max(0.0, scan[0] - per_elem * d0 * n0), "scan_element": per_elem,
            "rnn_rows": rows}


def measure(threads: int = 1, runs: int = 7, quick: bool = False) -> dict[str, Any]:
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    f32 = TensorProto.FLOAT
    out: dict[str, Any] = {"matmul": {}}
    shapes = MATMUL_SHAPES[:4] if quick else MATMUL_SHAPES
    for mkn in shapes:
        mm, k, n = mkn
        m = _model([helper.make_node("MatMul", ["a", "b"], ["y"])],
                   [helper.make_tensor_value_info("a", f32, [mm, k]), helper.make_tensor_value_info("b", f32, [k, n])],
                   helper.make_tensor_value_info("y", f32, [mm, n]))
        sess = _session(m, threads)
        feed = {"a": rng.standard_normal((mm, k), dtype=np.float32), "b": rng.standard_normal((k, n), dtype=np.float32)}
        out["matmul"]["x".join(map(str, mkn))] = 2 * mm * k * n / _time(_runner(sess, feed), runs)
    out["bandwidth"] = _add_bandwidth(threads, runs, (4 if quick else 16) * 2**20)  # 64 MB per tensor: beyond the caches
    cache = cache_size()
    if cache:
        # three tensors filling a quarter of the last-level cache: larger than the per-core caches below it, small
        # enough to stay resident between calls, as a small model's weights do when it runs again and again
        out["cache_bytes"] = cache
        out["cache_bandwidth"] = _add_bandwidth(threads, runs, max(1024, cache // 4 // (3 * 4)))
    chain = 200
    nodes = [helper.make_node("Add", [f"x{i}", "one"], [f"x{i + 1}"]) for i in range(chain)]
    m = _model(nodes, [helper.make_tensor_value_info("x0", f32, [16]), helper.make_tensor_value_info("one", f32, [16])],
               helper.make_tensor_value_info(f"x{chain}", f32, [16]))
    sess = _session(m, threads)
    feed = {"x0": np.zeros(16, np.float32), "one": np.ones(16, np.float32)}
    chain_s = _time(_runner(sess, feed), runs)
    out["overhead"] = chain_s / chain
    m = _model([helper.make_node("Add", ["x0", "one"], ["x1"])],
               [helper.make_tensor_value_info("x0", f32, [16]), helper.make_tensor_value_info("one", f32, [16])],
               helper.make_tensor_value_info("x1", f32, [16]))
    sess = _session(m, threads)
    out["launch"] = max(0.0, _time(_runner(sess, feed), runs) - out["overhead"])
    out["vector_ops"] = _vector(threads, runs, quick)
    out["vector"] = statistics.median(out["vector_ops"].values())
    out["steps"] = _steps(threads, runs, quick)
    # typical, not best: models run skinny and square matmuls alike, and the median resists noise
    out["fp32"] = statistics.median(out["matmul"].values())
    out["attention"] = _attention(threads, runs, quick, out["launch"] + out["overhead"])
    out["rows"] = _rows(threads, runs, quick, out["launch"] + out["overhead"])
    if "cache_bytes" in out:
        out["rows_dram"] = _rows_streamed(threads, runs, quick, out["launch"], out["overhead"], out["cache_bytes"])
    # per-product FLOPs at which a small product reaches half the peak: thr = fp32 * v / (v + half)
    out["matmul_half"] = statistics.median(max(0.0, v * (out["fp32"] / thr - 1))
                                           for v, thr in out["attention"].values())
    return out


# rows M of an (M x 512) @ (512 x 512) product: a linear layer on few tokens (batch 1, short sequences) to many
ROWS = (1, 4, 16, 64, 256, 1024)


def _rows(threads: int, runs: int, quick: bool, fixed_s: float) -> dict[int, float]:
    """MatMul throughput by the number of rows, the fixed cost of a call taken off: {M: FLOP/s}. The
    (512 x 512) factor is a constant initializer, as a linear layer's weight is in the ONNX backend's
    graphs: onnxruntime packs a constant factor once when the session is created, a graph input on
    every call (at 4 to 16 rows that packing costs as much as the product). Its 1 MB stays in the caches
    from one call to the next, as the weights of a model that fits in them do."""
    return _rows_chain(1, threads, runs, quick, fixed_s)


def _rows_streamed(threads: int, runs: int, quick: bool, launch: float, overhead: float,
                   cache: int) -> dict[int, float]:
    """The same products with their weights read from DRAM, as in a model larger than the last-level cache:
    a chain of (M x 512) @ (512 x 512) products, each with its own 1 MB constant, three times the cache's
    size in all (twice with --quick), so that each call finds none of them cached: {M: FLOP/s}."""
    count = max(2, (2 if quick else 3) * cache // 2**20)
    return _rows_chain(count, threads, runs, quick, launch + count * overhead)


def _rows_chain(count: int, threads: int, runs: int, quick: bool, fixed_s: float) -> dict[int, float]:
    """FLOP/s by rows M of a chain of `count` (M x 512) @ (512 x 512) products with constant weights (rows
    symbolic, one session for every M); the fixed cost of a call, `fixed_s`, taken off."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    f32, k = TensorProto.FLOAT, 512
    nodes = [helper.make_node("MatMul", [f"x{i}", f"w{i}"], [f"x{i + 1}"]) for i in range(count)]
    model = _model(nodes, [helper.make_tensor_value_info("x0", f32, ["M", k])],
                   helper.make_tensor_value_info(f"x{count}", f32, ["M", k]))
    scale = np.float32(1 / np.sqrt(k))  # keeps the chain's values of order one
    for i in range(count):
        w = scale * rng.standard_normal((k, k), dtype=np.float32)
        model.graph.initializer.append(numpy_helper.from_array(w, f"w{i}"))
    sess = _session(model, threads)
    out = {}
    for m in ROWS[::2] if quick else ROWS:
        feed = {"x0": rng.standard_normal((m, k), dtype=np.float32)}
        secs = _time(_runner(sess, feed), runs) - fixed_s
        out[m] = 2.0 * m * k * k * count / max(secs, 1e-9)
    return out


def cache_size(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """Bytes of the last-level data cache of CPU 0 as the OS reports it (Linux sysfs: `index*/level`, `type`,
    `size` such as `32768K`), None where it reports none."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    best: tuple[int, int] | None = None
    for d in sorted(root.glob("index*")):
        try:
            level, kind, size = ((d / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        digits, unit = (size[:-1], units.get(size[-1])) if size[-1:] in units else (size, 1)
        if kind == "Instruction" or not digits.isdigit() or not level.isdigit() or unit is None:
            continue
        if best is None or int(level) > best[0]:
            best = (int(level), int(digits) * unit)
    return best[1] if best else None


def _add_bandwidth(threads: int, runs: int, numel: int) -> float:
    """Bytes read + written per second by an elementwise Add of two `numel`-float tensors (three tensors moved)."""
    import numpy as np
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    m = _model([helper.make_node("Add", ["a", "b"], ["y"])],
               [helper.make_tensor_value_info("a", f32, [numel]), helper.make_tensor_value_info("b", f32, [numel])],
               helper.make_tensor_value_info("y", f32, [numel]))
    sess = _session(m, threads)
    feed = {"a": np.ones(numel, np.float32), "b": np.ones(numel, np.float32)}
    return 3 * 4 * numel / _time(_runner(sess, feed), runs)


# (T, head dim): the per-(batch, head) products of attention, Q K^T (T x d x T), 16 of them in one batched MatMul
ATTENTION_SHAPES = ((32, 64), (64, 64), (128, 64), (256, 64))


def _attention(threads: int, runs: int, quick: bool, fixed_s: float) -> dict[str, tuple[float, float]]:
    """Batched small products as attention runs them: {shape: (FLOPs per product, FLOP/s)}, the fixed
    cost of a call taken off."""
    import numpy as np
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    f32 = TensorProto.FLOAT
    g = 16
    out = {}
    for t, dh in ATTENTION_SHAPES[:2] if quick else ATTENTION_SHAPES:
        m = _model([helper.make_node("MatMul", ["q", "k"], ["s"])],
                   [helper.make_tensor_value_info("q", f32, [g, t, dh]), helper.make_tensor_value_info("k", f32, [g, dh, t])],
                   helper.make_tensor_value_info("s", f32, [g, t, t]))
        sess = _session(m, threads)
        feed = {"q": rng.standard_normal((g, t, dh), dtype=np.float32),
                "k": rng.standard_normal((g, dh, t), dtype=np.float32)}
        v = 2.0 * t * dh * t
        secs = max(_time(_runner(sess, feed), runs) - fixed_s, 1e-9)
        out[f"{g}x{t}x{dh}x{t}"] = (v, g * v / secs)
    return out


def _vector(threads: int, runs: int, quick: bool) -> dict[str, float]:
    """Non-matmul throughput: each primitive below, lowered by the ONNX backend as the models are, on a
    (512, 1024) tensor; rate = the estimator's own `flops_other` for that primitive (metagen_compiler/primitives/) per
    second measured, so that estimate and measurement count alike."""
    import numpy as np

    from metagen_compiler.primitives import PRIMITIVES

    shape = (128, 1024) if quick else (512, 1024)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    out = {}
    for op, args in VECTOR_OPS:
        prim = PRIMITIVES[op]
        full = {p.name: p.default for p in prim.params} | args
        _, other = prim.flops(full, [shape], [shape])
        model = _lowered(op, full, shape)
        sess = _session(model, threads)
        out[op + ("" if not args else "(" + ",".join(f"{k}={v}" for k, v in args.items()) + ")")] = \
            other / _time(_runner(sess, {"x": x}), runs)
    return out


def profile_text(name: str, m: dict[str, Any], threads: int) -> str:
    import onnxruntime as ort

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mm = ", ".join(f"{n} {v / 1e9:.1f}" for n, v in m["matmul"].items())
    vec = ", ".join(f"{n} {v / 1e9:.2f}" for n, v in m["vector_ops"].items())
    att = ", ".join(f"{n} {thr / 1e9:.1f} GFLOP/s" for n, (_, thr) in m["attention"].items())
    dram = cache = ""
    if "rows_dram" in m:
        dram = f"  matmul_rows_dram_fp32 = [{', '.join(f'{v:.4g}' for v in m['rows_dram'].values())}]\n"
    if "cache_bytes" in m:
        cache = f"  cache_bytes = {m['cache_bytes']}; cache_bandwidth = {m['cache_bandwidth']:.4g}\n"
    return (
        "msl 1\n"
        f"# Measured by `metagenc calibrate` on {when}, host {platform.node() or 'unknown'} "
        f"({platform.machine()}, {platform.processor() or 'cpu'}),\n"
        f"# onnxruntime {ort.__version__} CPUExecutionProvider, {threads} intra-op thread(s), fp32, medians of timed runs.\n"
        f"# fp32: median MatMul throughput over these shapes, GFLOP/s by M x K x N: {mm};\n"
        "# bandwidth: large elementwise Add, bytes read + written per second;\n"
        "# overhead: per node in a chain of 200 tiny Adds; launch: one run of a one-node graph, less overhead.\n"
        "# cache_bytes: the last-level cache as the OS reports it; cache_bandwidth: an Add filling a quarter of it.\n"
        f"# vector: non-matmul primitives as lowered to ONNX, the estimator's FLOPs per second, median of: {vec};\n"
        "# rnn_rows, rnn_rows_fp32: the recurrent product's rate in ONNX LSTM and GRU steps (hidden 256), by rows B;\n"
        "# matmul_rows, matmul_rows_fp32: MatMul throughput of (M x 512) @ (512 x 512), a constant weight, by rows M;\n"
        "# matmul_rows_dram_fp32: the same, a chain of products whose weights add up to 3x cache_bytes (from DRAM).\n"
        f"# matmul_half: FLOPs per product at which attention's batched small products reach half of fp32: {att}.\n"
        "# efficiency = 1.0: measured, not published peaks.\n"
        f"device {name} {{\n"
        f'  name = "this machine (calibrated, {threads} thread{"s" if threads != 1 else ""})"\n'
        f"  fp32 = {m['fp32']:.4g}; bf16 = {m['fp32']:.4g}; fp16 = {m['fp32']:.4g}\n"
        f"  bandwidth = {m['bandwidth']:.4g}; overhead = {m['overhead'] * 1e6:.3g}us; launch = {m['launch'] * 1e6:.3g}us\n"
        f"{cache}"
        f"  vector = {m['vector']:.4g}; matmul_half = {m['matmul_half']:.4g}\n"
        f"  rnn_step = {m['steps']['rnn_step'] * 1e6:.3g}us; scan_step = {m['steps']['scan_step'] * 1e6:.3g}us; "
        f"scan_element = {m['steps']['scan_element'] * 1e9:.3g}ns\n"
        f"  rnn_rows = [{', '.join(str(r) for r in m['steps']['rnn_rows'])}]\n"
        f"  rnn_rows_fp32 = [{', '.join(f'{v:.4g}' for v in m['steps']['rnn_rows'].values())}]\n"
        f"  matmul_rows = [{', '.join(str(r) for r in m['rows'])}]\n"
        f"  matmul_rows_fp32 = [{', '.join(f'{v:.4g}' for v in m['rows'].values())}]\n"
        f"{dram}"
        "  efficiency = 1.0\n"
        "}\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="metagenc calibrate",
                                 description="Measure this machine with onnxruntime (CPU) and write an MSL device profile.")
    ap.add_argument("-o", "--output", default="calibrated.msl", help="where to write the profile (default: calibrated.msl)")
    ap.add_argument("--name", default="calibrated", help="the device class name (default: calibrated)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default: 1)")
    ap.add_argument("--runs", type=int, default=7, help="timed samples per measurement (default: 7)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for smoke tests")
    args = ap.parse_args(argv)
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        print(f"metagenc calibrate: needs onnxruntime ({e})")
        return 2
    m = measure(args.threads, args.runs, args.quick)
    text = profile_text(args.name, m, args.threads)
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"wrote {args.output}: fp32 {m['fp32'] / 1e9:.1f} GFLOP/s, bandwidth {m['bandwidth'] / 1e9:.1f} GB/s, "
          f"overhead {m['overhead'] * 1e6:.2f} us")
    return 0
