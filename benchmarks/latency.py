"""The compiler's latency estimate against onnxruntime on this CPU, for many generated models.

1. Calibrate this machine (`metagenc calibrate`: matmul throughput, bandwidth, per-op overhead) into a
   device profile, unless --profile names one.
2. Generate models of varied family and size: transformer.decoder (norm, mlp, position varied),
   vision.vit, vision.resnet (basic and bottleneck units), a user-defined family (parallel blocks),
   transformer.encoder, vision.convnext, tabular.mlp, rnn.rnn (LSTM, bidirectional GRU), seq2seq.t5 and
   ssm.mamba, each at batch 1 and a larger batch.
3. Export each to ONNX (our backend), time onnxruntime CPU inference (median of several runs, fixed
   thread count; three rounds over all the models, each model's best round kept, since the machine is shared),
   and compare with the estimate for the calibrated profile at the same batch.
4. Report MAPE, the share within +-20% and the Spearman rank correlation, next to a FLOPs-only proxy
   (latency = FLOPs / one throughput fitted to these measurements: the proxy gets the benefit of the fit,
   the estimate does not).
Prints a table and writes benchmarks/results/latency.json.
Usage: python benchmarks/latency.py [--quick] [--threads N] [--profile FILE]   (--quick: 5 models; CI smoke)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

USER_BLOCKS = """
block parallel_block(d_model: int, heads: int) {
  input x
  h = x >> ln: layernorm(d_model)
  attn = h >> attn: self_attention(d_model, heads, causal = true)
  ff = h >> mlp: gelu_mlp(d_model)
  return x + attn + ff
}

block parallel_stack(layers: int, d_model: int, heads: int) {
  input x
  return x >> blocks: repeat(layers) parallel_block(d_model, heads) >> ln_f: layernorm(d_model)
}

family parallel_decoder(vocab: int = 2000, context: int = 64, layers: int = 2, d_model: int = 128, heads: int = 2) {
  encoder text = token_embedding(vocab, d_model, context, learned)
  backbone = parallel_stack(layers, d_model, heads)
  head generation = lm_head(d_model, vocab)
}
"""


def model(name: str, *, module: str, modality: str, task: str, family: str, args: str, constraints: str = "",
          objective: str = "") -> str:
    """A model of any stdlib family: `args` are the family's dims, written out."""
    lines = [f"modality {modality}", f"task {task}", f"objective {objective}" if objective else "",
             f"constraints {{ {constraints} }}" if constraints else "", f"architecture {module}.{family} {{ {args} }}"]
    body = "".join(f"  {line}\n" for line in lines if line)
    return f"msl 1\nimport std.{module}\nmodel {name} {{\n{body}}}\n"


def decoder(name: str, *, layers: int, d_model: int, context: int, norm: str, mlp: str, position: str,
            vocab: int = 2000) -> str:
    return model(name, module="transformer", modality="text -> text", task="generation", objective="autoregressive",
                 family="decoder", args=f"vocab = {vocab}; context = {context}; layers = {layers}; "
                 f"d_model = {d_model}; heads = {d_model // 64}; norm = {norm}; mlp = {mlp}; position = {position}")


def vit(name: str, *, image: int, patch: int, layers: int, d_model: int) -> str:
    return model(name, module="vision", modality="image -> label", task="classification { num_classes = 100 }",
                 objective="classification", family="vit", args=f"image_size = {image}; patch_size = {patch}; "
                 f"layers = {layers}; d_model = {d_model}; heads = {d_model // 64}; mlp_dim = {4 * d_model}")


def resnet(name: str, *, image: int, width: int, depths: list[int], unit: str) -> str:
    expansion = 4 if unit == "bottleneck" else 1
    return model(name, module="vision", modality="image -> label", task="classification { num_classes = 100 }",
                 objective="classification", family="resnet", args=f"image_size = {image}; width = {width}; "
                 f"depths = {depths}; unit = {unit}; expansion = {expansion}")


def user(name: str, *, layers: int, d_model: int, context: int) -> str:
    return f"""msl 1
import std.layers
import std.transformer
{USER_BLOCKS}
model {name} {{
  modality text -> text
  task generation
  objective autoregressive
  architecture parallel_decoder {{ layers = {layers}; d_model = {d_model}; heads = {d_model // 64}; context = {context} }}
}}
"""


# (name, family label, module, modality, task, family, dims, constraints): the other families' shapes of work:
# encoders, depthwise convolutions, small dense nets, recurrent scans, an encoder-decoder, a selective scan
OTHERS = [
    ("enc0", "encoder L2 d128 T128", "transformer", "text -> label", "classification { num_classes = 2 }", "encoder",
     "layers = 2; d_model = 128; vocab = 2000", "context = 128"),
    ("enc1", "encoder L4 d256 T64", "transformer", "text -> label", "classification { num_classes = 2 }", "encoder",
     "layers = 4; d_model = 256; vocab = 2000", "context = 64"),
    ("enc2", "encoder L2 d384 T256 (tagging)", "transformer", "text -> label", "sequence_labeling { num_classes = 9 }",
     "encoder", "layers = 2; d_model = 384; vocab = 2000", "context = 256"),
    ("convnext0", "convnext img64 w32 [1, 1, 2, 1]", "vision", "image -> label", "classification { num_classes = 100 }",
     "convnext", "image_size = 64; width = 32; depths = [1, 1, 2, 1]", ""),
    ("convnext1", "convnext img96 w48 [2, 2, 4, 2]", "vision", "image -> label", "classification { num_classes = 100 }",
     "convnext", "image_size = 96; width = 48; depths = [2, 2, 4, 2]", ""),
    ("convnext2", "convnext img128 w64 [1, 1, 3, 1]", "vision", "image -> label",
     "classification { num_classes = 100 }", "convnext", "image_size = 128; width = 64; depths = [1, 1, 3, 1]", ""),
    ("mlp0", "tabular mlp 64 features h256 L3", "tabular", "tabular -> label", "classification { num_classes = 10 }",
     "mlp", "features = 64; hidden = 256; layers = 3", ""),
    ("mlp1", "tabular mlp 200 features h1024 L4", "tabular", "tabular -> regression", "regression", "mlp",
     "features = 200; hidden = 1024; layers = 4", ""),
    ("lstm0", "lstm forecast d64 h128 L1 lookback 48", "rnn", "time_series -> time_series",
     "time_series_forecast { horizon = 12; lookback = 48 }", "rnn", "features = 4; d_model = 64; hidden = 128; layers = 1; "
     "cell = lstm", ""),
    ("lstm1", "lstm forecast d128 h256 L2 lookback 96", "rnn", "time_series -> time_series",
     "time_series_forecast { horizon = 24; lookback = 96 }", "rnn", "features = 7; d_model = 128; hidden = 256; "
     "layers = 2; cell = lstm", ""),
    ("gru0", "bidirectional gru tagger d128 L2 T64", "rnn", "text -> label", "sequence_labeling { num_classes = 17 }",
     "rnn", "vocab = 2000; d_model = 128; layers = 2; cell = gru; directions = 2", "context = 64"),
    ("t5_0", "t5 L2 d128 T64", "seq2seq", "text -> text", "generation", "t5",
     "vocab = 2000; layers = 2; d_model = 128; d_ff = 512", "context = 64"),
    ("t5_1", "t5 L3 d256 T128", "seq2seq", "text -> text", "generation", "t5",
     "vocab = 2000; layers = 3; d_model = 256; d_ff = 1024", "context = 128"),
    ("mamba0", "mamba L2 d128 T64", "ssm", "text -> text", "generation", "mamba",
     "vocab = 2000; layers = 2; d_model = 128", "context = 64"),
]


def specs(quick: bool) -> list[tuple[str, str, str, int]]:
    """(name, family, source, batch) for every benchmark model."""
    out: list[tuple[str, str, str, int]] = []
    dec = [  # (layers, d_model, context, norm, mlp, position)
        (2, 128, 64, "layernorm", "gelu_mlp", "learned"),
        (2, 128, 128, "rmsnorm", "swiglu", "rope"),
        (4, 256, 64, "layernorm", "gelu_mlp", "rope"),
        (4, 256, 128, "rmsnorm", "swiglu", "learned"),
        (2, 256, 128, "layernorm", "swiglu", "rope"),
        (6, 384, 64, "rmsnorm", "gelu_mlp", "learned"),
        (3, 192, 256, "layernorm", "gelu_mlp", "learned"),
    ]
    for i, (layers, d, t, norm, mlp, pos) in enumerate(dec):
        src = decoder(f"dec{i}", layers=layers, d_model=d, context=t, norm=norm, mlp=mlp, position=pos)
        out.append((f"dec{i}", f"decoder {norm}/{mlp}/{pos} L{layers} d{d} T{t}", src, 1))
    vits = [(32, 8, 2, 128), (64, 8, 4, 192), (96, 16, 4, 256), (64, 16, 6, 384), (128, 16, 2, 128)]
    for i, (img, p, layers, d) in enumerate(vits):
        out.append((f"vit{i}", f"vit img{img} p{p} L{layers} d{d}", vit(f"vit{i}", image=img, patch=p, layers=layers,
                                                                          d_model=d), 1))
    nets = [(64, 8, [1, 1, 1, 1], "basic_block"), (64, 16, [2, 2, 2, 2], "basic_block"),
            (96, 8, [1, 1, 1, 1], "bottleneck"), (64, 16, [2, 2, 2, 2], "bottleneck"), (128, 8, [2, 2, 2, 2], "basic_block")]
    for i, (img, w, depths, unit) in enumerate(nets):
        out.append((f"resnet{i}", f"resnet {unit} img{img} w{w} {depths}",
                    resnet(f"resnet{i}", image=img, width=w, depths=depths, unit=unit), 1))
    users = [(2, 128, 64), (4, 256, 128)]
    for i, (layers, d, t) in enumerate(users):
        out.append((f"user{i}", f"user parallel_decoder L{layers} d{d} T{t}", user(f"user{i}", layers=layers,
                                                                                  d_model=d, context=t), 1))
    n_user = len(out)
    for name, label, module, modality, task, family, dims, constraints in OTHERS:
        out.append((name, label, model(name, module=module, modality=modality, task=task, family=family, args=dims,
                                       constraints=constraints), 1))
    if quick:
        out = [out[0], out[len(dec)], out[len(dec) + len(vits)], out[n_user - 1], out[n_user + 3]]
        return out + [(n, f, s, 2) for n, f, s, _ in out[:1]]
    return out + [(n, f, s, 4) for n, f, s, _ in out]


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x: list[float]) -> list[float]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))


def scores(pred: list[float], meas: list[float]) -> dict[str, float]:
    errs = [(p - m) / m for p, m in zip(pred, meas)]
    return {"mape": statistics.fmean(abs(e) for e in errs), "within_20": sum(abs(e) <= 0.2 for e in errs) / len(errs),
            "spearman": spearman(pred, meas)}


def time_session(sess: Any, feed: dict[str, Any], runs: int) -> float:
    for _ in range(2):
        sess.run(None, feed)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds over all models; each keeps its best")
    ap.add_argument("--profile", help="a device profile from `metagenc calibrate` (default: calibrate now)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latency.json"))
    args = ap.parse_args()
    import numpy as np
    import onnxruntime as ort

    from metagen_compiler.cli import write_outputs
    from metagen_compiler.compilation import Options
    from metagen_compiler.driver import compile_model_set
    from metagen_compiler.passes.estimate import estimate
    from metagen_compiler.span import SourceFile
    from metagen_compiler.tools.calibrate import measure, profile_text

    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.profile:
            profile = Path(args.profile)
            calibration = None
        else:
            calibration = measure(args.threads, quick=args.quick)
            profile = tmp / "calibrated.msl"
            profile.write_text(profile_text("calibrated", calibration, args.threads))
        profile_source = profile.read_text()
        options = Options(device_profiles=(profile,))
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        rng = np.random.default_rng(0)
        sessions: list[tuple[Any, dict[str, Any]]] = []
        for name, family, src, batch in specs(args.quick):
            (comp,) = compile_model_set(SourceFile(f"{name}.msl", src), options)
            assert not comp.bag.has_errors, [d.message for d in comp.bag.items]
            ir = comp.graph
            est = estimate(ir, comp.program, {**ir.symbols, "B": batch})
            _, files = write_outputs(comp, tmp, ["onnx"])
            sess = ort.InferenceSession(files["model.onnx"], so, providers=["CPUExecutionProvider"])
            feed = {}
            for i in ir.inputs:  # the graph IR's shapes, its symbols at their compiled sizes
                shape = [batch if s == "B" else ir.symbols[s] if isinstance(s, str) else s for s in i.shape]
                if i.dtype == "int64":
                    feed[i.name] = rng.integers(0, 100, shape, dtype=np.int64)
                else:
                    feed[i.name] = rng.standard_normal(shape, dtype=np.float32)
            sessions.append((sess, feed))
            rows.append({"model": name, "family": family, "batch": batch, "params": est["params"],
                         "flops": est["flops_forward"] + est["flops_other"],
                         "onnx_nodes": _onnx_nodes(files["model.onnx"]),
                         "estimate_s": est["latency_s"]["calibrated"]["fp32"]})
        # rounds over all the models: a burst of load from other tenants of this shared machine falls on one
        # round of a few models; each model's latency is its best round's median
        rounds = 1 if args.quick else args.rounds
        per_round = [[time_session(sess, feed, 3 if args.quick else args.runs) for sess, feed in sessions]
                     for _ in range(rounds)]
        for i, r in enumerate(rows):
            r["measured_rounds_s"] = [pr[i] for pr in per_round]
            r["measured_s"] = min(r["measured_rounds_s"])
    meas = [r["measured_s"] for r in rows]
    # FLOPs-only proxy: one throughput, fitted (geometric mean of flops / measured) to these very measurements
    thr = math.exp(statistics.fmean(math.log(r["flops"] / r["measured_s"]) for r in rows))
    for r in rows:
        r["proxy_s"] = r["flops"] / thr
    ours = scores([r["estimate_s"] for r in rows], meas)
    proxy = scores([r["proxy_s"] for r in rows], meas)
    print(f"{'model':9} {'family':48} {'B':>2} {'MFLOP':>8} {'nodes':>5} {'measured ms':>11} {'estimate ms':>11} "
          f"{'err':>6} {'proxy ms':>9} {'err':>6}")
    for r in rows:
        print(f"{r['model']:9} {r['family']:48} {r['batch']:2d} {r['flops'] / 1e6:8.1f} {r['onnx_nodes']:5d} "
              f"{r['measured_s'] * 1e3:11.3f} {r['estimate_s'] * 1e3:11.3f} "
              f"{(r['estimate_s'] / r['measured_s'] - 1) * 100:+5.0f}% {r['proxy_s'] * 1e3:9.3f} "
              f"{(r['proxy_s'] / r['measured_s'] - 1) * 100:+5.0f}%")
    print(f"\n{len(rows)} models, onnxruntime {ort.__version__}, {args.threads} thread(s), "
          f"{time.perf_counter() - t_start:.0f} s")
    for label, s in (("estimate (calibrated roofline)", ours), (f"FLOPs proxy ({thr / 1e9:.1f} GFLOP/s fitted)", proxy)):
        print(f"{label:40} MAPE {s['mape'] * 100:5.1f}%  within +-20% {s['within_20'] * 100:5.1f}%  "
              f"Spearman {s['spearman']:.3f}")
    result = {"benchmark": "latency", "quick": args.quick, "threads": args.threads, "rounds": rounds,
              "load_average": list(os.getloadavg()), "onnxruntime": ort.__version__,
              "python": platform.python_version(), "profile": profile_source, "calibration": calibration,
              "proxy_throughput_flops": thr, "estimate": ours, "proxy": proxy, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


def _onnx_nodes(model_bytes: bytes | str) -> int:
    import onnx

    m = onnx.load_from_string(model_bytes if isinstance(model_bytes, bytes) else model_bytes.encode())
    return len(m.graph.node)


if __name__ == "__main__":
    raise SystemExit(main())
