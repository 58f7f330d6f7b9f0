"""Generated-model speed on CPU, against reference implementations, in one run.

- GPT-2 small training step (forward, backward, AdamW step): generated vs transformers' GPT2LMHeadModel.
- ResNet-50 and ViT-B/16 inference: generated vs transformers' ResNetForImageClassification and
  ViTForImageClassification (same architectures and parameter counts as torchvision's).
- onnxruntime vs torch eager for the same generated models (the ONNX backend's model.onnx).
Prints a table and writes benchmarks/results/models.json. Ratios < 1 mean the generated model is faster.
Usage: python benchmarks/models.py [--quick]   (--quick: small sizes, one measured iteration; CI smoke)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def timeit(fn: Callable[[], Any], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "models.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from metagen_compiler.cli import main as metagenc

    q = args.quick
    warm, iters = (1, 1) if q else (2, 5)
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
        t_gen = timeit(step(model, lambda: model.loss({"text": tokens}), opt_g), warm, iters)
        t_ref = timeit(step(ref, lambda: ref(tokens, labels=tokens).loss, opt_r), warm, iters)
        rows.append({"model": "gpt2", "what": f"training step, batch {batch} x {seq}", "params_generated": n_gen,
                     "params_reference": n_ref, "reference": "transformers GPT2LMHeadModel",
                     "generated_s": t_gen, "reference_s": t_ref, "ratio": t_gen / t_ref})

        # ---------------------------------------------------------------- vision inference
        refs = {
            "resnet50": lambda m: hf.ResNetForImageClassification(hf.ResNetConfig(
                embedding_size=m.config.width, hidden_sizes=[m.config.width * 4 * 2**i for i in range(4)],
                depths=list(m.config.depths), layer_type="bottleneck", num_labels=m.config.num_classes)),
            "vit_b_16": lambda m: hf.ViTForImageClassification(hf.ViTConfig(
                hidden_size=m.config.d_model, num_hidden_layers=m.config.layers, num_attention_heads=m.config.heads,
                intermediate_size=m.config.mlp_dim, image_size=m.config.image_size, patch_size=m.config.patch_size,
                num_labels=m.config.num_classes)),
        }
        vb = 2 if q else 8
        for name in ("resnet50", "vit_b_16"):
            gen = load(out / name / "model.py", f"bench_{name}")
            model = gen.build_model().eval()
            ref = refs[name](model).eval()
            (x,) = gen.example_inputs(model, batch_size=vb)
            with torch.inference_mode():
                t_gen = timeit(lambda: model(x), warm, iters)
                t_ref = timeit(lambda: ref(pixel_values=x), warm, iters)
            rows.append({"model": name, "what": f"inference, batch {vb}", "reference": f"transformers {type(ref).__name__}",
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
                t_torch = timeit(lambda: model(*inputs), warm, iters)
            t_ort = timeit(lambda: sess.run(None, feed), warm, iters)
            rows.append({"model": name, "what": f"onnxruntime vs torch eager, batch {b}", "reference": "torch eager",
                         "generated_s": t_ort, "reference_s": t_torch, "ratio": t_ort / t_torch})

    print(f"{'model':10} {'what':38} {'generated s':>12} {'reference s':>12} {'ratio':>7}  reference")
    for r in rows:
        print(f"{r['model']:10} {r['what']:38} {r['generated_s']:12.4f} {r['reference_s']:12.4f} {r['ratio']:7.3f}  "
              f"{r['reference']}")
    result = {"benchmark": "models", "quick": q, "torch": torch.__version__, "transformers": hf.__version__,
              "threads": torch.get_num_threads(), "python": platform.python_version(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
