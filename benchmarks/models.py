"""Generated-model speed on CPU, against reference implementations, in one run.

- GPT-2 small training step (forward, backward, AdamW step): generated vs transformers' GPT2LMHeadModel.
- ResNet-50 and ViT-B/16 inference: generated (ResNet-50 channels-last, as build_model() gives it) vs
  torchvision's resnet50 (as it comes, NCHW, and converted to channels-last) and VisionTransformer where
  torchvision imports beside the installed torch (a separate environment: see README), and always vs
  transformers' ResNetForImageClassification and ViTForImageClassification (same architectures and
  parameter counts as torchvision's).
- onnxruntime vs torch eager for the same generated models (the ONNX backend's model.onnx).
Prints a table and writes benchmarks/results/models.json. Ratios < 1 mean the generated model is faster.
Usage: python benchmarks/models.py [--quick]   (--quick: small sizes, one measured iteration; CI smoke)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def timeit(fn: Callable[[], Any], warmup: int, iters: int) -> float:
    return timepair(fn, None, warmup, iters)[0]


def timepair(fa: Callable[[], Any], fb: Callable[[], Any] | None, warmup: int,
             iters: int) -> tuple[float, float]:
    """Median seconds of `fa` and of `fb`, run alternately (a, b, a, b, ...) so that a change in the
    machine's load during the run falls on both alike."""
    fns = [fa] if fb is None else [fa, fb]
    for _ in range(warmup):
        for f in fns:
            f()
    ts: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for f, acc in zip(fns, ts):
            t = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t)
    meds = [statistics.median(acc) for acc in ts]
    return meds[0], (meds[1] if fb is not None else 0.0)


def torchvision_or_none() -> ModuleType | None:
    """torchvision where it imports beside this torch (PyPI's wheel needs a matching torch build)."""
    try:
        import torchvision

        return torchvision
    except Exception:  # noqa: BLE001 - an ImportError, or a RuntimeError from a mismatched build
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "models.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from metagen_compiler.cli import main as metagenc

    q = args.quick
    warm, iters = (1, 1) if q else (2, 9)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        small = {"gpt2": ["--set", "layers=2", "--set", "d_model=128", "--set", "heads=2"],
                 "resnet50": ["--set", "width=16"],
                 "vit_b_16": ["--set", "layers=2", "--set", "d_model=128", "--set", "heads=2", "--set", "mlp_dim=256"]}
        for name in ("gpt2", "resnet50", "vit_b_16"):
            extra = small[name] if q else []
            assert metagenc([str(ROOT / "examples" / f"{name}.msl"), "-o", str(out), "--backend", "pytorch,onnx",
                             *extra]) == 0
        import transformers as hf

        # ---------------------------------------------------------------- GPT-2 training step
        gen = load(out / "gpt2" / "model.py", "bench_gpt2")
        model = gen.build_model()
        c = model.config
        ref = hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=c.vocab, n_positions=c.context, n_embd=c.d_model,
                                               n_layer=c.layers, n_head=c.heads))
        n_gen = sum(p.numel() for p in model.parameters())
        n_ref = sum(p.numel() for p in ref.parameters())
        batch, seq = (2, 32) if q else (4, 256)
        tokens = torch.randint(0, c.vocab, (batch, seq))

        def step(m: Any, loss_fn: Callable[[], Any], opt: Any) -> Callable[[], None]:
            def run() -> None:
                opt.zero_grad(set_to_none=True)
                loss_fn().backward()
                opt.step()
            return run

        opt_g = torch.optim.AdamW(model.parameters(), lr=1e-4)
        opt_r = torch.optim.AdamW(ref.parameters(), lr=1e-4)
        model.train()
        ref.train()
        t_gen, t_ref = timepair(step(model, lambda: model.loss({"text": tokens}), opt_g),
                                step(ref, lambda: ref(tokens, labels=tokens).loss, opt_r), warm, iters)
        rows.append({"model": "gpt2", "what": f"training step, batch {batch} x {seq}", "params_generated": n_gen,
                     "params_reference": n_ref, "reference": "transformers GPT2LMHeadModel",
                     "generated_s": t_gen, "reference_s": t_ref, "ratio": t_gen / t_ref})

        # ---------------------------------------------------------------- vision inference
        refs: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {
            "resnet50": [("transformers ResNetForImageClassification", lambda m: hf.ResNetForImageClassification(
                hf.ResNetConfig(embedding_size=m.config.width, hidden_sizes=[m.config.width * 4 * 2**i for i in range(4)],
                                depths=list(m.config.depths), layer_type="bottleneck", num_labels=m.config.num_classes)))],
            "vit_b_16": [("transformers ViTForImageClassification", lambda m: hf.ViTForImageClassification(hf.ViTConfig(
                hidden_size=m.config.d_model, num_hidden_layers=m.config.layers, num_attention_heads=m.config.heads,
                intermediate_size=m.config.mlp_dim, image_size=m.config.image_size, patch_size=m.config.patch_size,
                num_labels=m.config.num_classes)))],
        }
        tv = torchvision_or_none()
        if tv is not None:
            if not q:  # torchvision's ResNet has a fixed stem width (64): the full-size model only
                refs["resnet50"].insert(0, ("torchvision resnet50", lambda m: tv.models.resnet50(
                    num_classes=m.config.num_classes)))
                # the generated ResNet runs channels-last (build_model); torchvision converted the same way too
                refs["resnet50"].insert(1, ("torchvision resnet50, channels-last", lambda m: tv.models.resnet50(
                    num_classes=m.config.num_classes).to(memory_format=torch.channels_last)))
            refs["vit_b_16"].insert(0, ("torchvision VisionTransformer", lambda m: tv.models.VisionTransformer(
                image_size=m.config.image_size, patch_size=m.config.patch_size, num_layers=m.config.layers,
                num_heads=m.config.heads, hidden_dim=m.config.d_model, mlp_dim=m.config.mlp_dim,
                num_classes=m.config.num_classes)))
        vb = 2 if q else 8
        for name in ("resnet50", "vit_b_16"):
            gen = load(out / name / "model.py", f"bench_{name}")
            model = gen.build_model().eval()
            (x,) = gen.example_inputs(model, batch_size=vb)
            for label, make in refs[name]:
                ref = make(model).eval()
                kw = {} if label.startswith("torchvision") else {"pixel_values": x}  # transformers' models take keywords

                def call(ref=ref, x=x, kw=kw):  # type: ignore[no-untyped-def]
                    return ref(**kw) if kw else ref(x)

                with torch.inference_mode():
                    t_gen, t_ref = timepair(lambda model=model, x=x: model(x), call, warm, iters)
                rows.append({"model": name, "what": f"inference, batch {vb}", "reference": label,
                             "params_generated": sum(p.numel() for p in model.parameters()),
                             "params_reference": sum(p.numel() for p in ref.parameters()),
                             "generated_s": t_gen, "reference_s": t_ref, "ratio": t_gen / t_ref})

        # ---------------------------------------------------------------- onnxruntime vs torch eager
        import onnxruntime as ort

        for name in ("gpt2", "resnet50", "vit_b_16"):
            gen = sys.modules[f"bench_{name}"]
            model = gen.build_model().eval()
            b = 1 if name == "gpt2" else vb
            inputs = gen.example_inputs(model, batch_size=b)
            sess = ort.InferenceSession(str(out / name / "model.onnx"), providers=["CPUExecutionProvider"])
            feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
            with torch.inference_mode():
                t_ort, t_torch = timepair(lambda sess=sess, feed=feed: sess.run(None, feed),
                                          lambda model=model, inputs=inputs: model(*inputs), warm, iters)
            rows.append({"model": name, "what": f"onnxruntime vs torch eager, batch {b}", "reference": "torch eager",
                         "generated_s": t_ort, "reference_s": t_torch, "ratio": t_ort / t_torch})

    print(f"{'model':10} {'what':38} {'generated s':>12} {'reference s':>12} {'ratio':>7}  reference")
    for r in rows:
        print(f"{r['model']:10} {r['what']:38} {r['generated_s']:12.4f} {r['reference_s']:12.4f} {r['ratio']:7.3f}  "
              f"{r['reference']}")
    result = {"benchmark": "models", "quick": q, "torch": torch.__version__, "transformers": hf.__version__,
              "torchvision": getattr(tv, "__version__", None), "load_average": list(os.getloadavg()),
              "threads": torch.get_num_threads(), "python": platform.python_version(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
