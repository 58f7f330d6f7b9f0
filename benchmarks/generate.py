"""Generation speed on CPU: the compiled model's cached greedy generate() against transformers' generate(), in one run.

Same weights (the compiled model's, exported with the output folder's weights.py into the reference's layout and
loaded by the reference), same prompt (random token ids), same settings (greedy, a fixed number of new tokens, no
eos): GPT-2 small (examples/gpt2.msl, 124M), a LLaMA-layout decoder (the llama_small preset: 12 layers, d_model 768,
grouped-query attention with 4 key-value heads), Mamba-130M (examples/mamba_lm.msl: recurrent state, against
transformers' MambaForCausalLM, whose CPU path is its reference PyTorch scan without the mamba_ssm kernels) and
T5-small (examples/t5_small.msl, an encoder-decoder: a source of `prompt` tokens encoded once, `new` decoder tokens
after the start token), at batch 1 and batch 8. Per row: new tokens per second of each (batch x new tokens / median
seconds of one generate() call, the two run alternately), the ratio (ours / transformers: > 1 means the compiled
model is faster), the time to first token (prefill, or the encoder, and one token: generate() with
max_new_tokens=1) of each, and whether the tokens are identical.
Peak memory of generation (the `memory` list): for each model and batch, a fresh process (this script with
--measure-memory) imports torch and model.py, builds the model, resets the kernel's peak resident set size
(VmHWM, by writing 5 to /proc/self/clear_refs; without it, resource.getrusage's ru_maxrss, the peak since the
process began), runs the same cached greedy generate() once, and reads the peak. Measured: the peak minus the
resident size before the model was built (the model's weights and what generation adds to them: the key-value
cache or state, the activations, the allocator's slack); the process's own peak and the part above the built
model besides. Against the report's estimate (report.json's memory.inference_total_bytes: fp32 weights and the
peak of live activations of one forward) for the same batch and sequence (prompt + new tokens; T5: the source of
`prompt` tokens, a target of 1 + new), computed with the compiler's estimator at those sizes.
Prints tables and writes benchmarks/results/generate.json; each row records its run (time, load average,
iterations). With --models, only those run; --merge then keeps the other models' rows of the existing file.
Usage: python benchmarks/generate.py [--quick] [--models gpt2,llama,mamba,t5] [--iterations 5] [--merge]
(--quick: 2 layers, d_model 128, few tokens; CI smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from models import load, timepair  # the sibling benchmark's helpers (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent

MODELS = ["gpt2", "llama", "mamba", "t5"]
MEMORY_METHOD = (
    "per model and batch, a fresh process imports torch and model.py, builds the model (random weights), resets "
    "the kernel's peak resident set size (writes 5 to /proc/self/clear_refs; VmHWM then restarts from the current "
    "size), runs one cached greedy generate() of the row's prompt and new tokens, and reads VmHWM (where clear_refs "
    "is refused: resource.getrusage ru_maxrss, the peak since the process began). measured_bytes = that peak minus "
    "VmRSS before the model was built (torch's own import excluded): weights plus what generation adds "
    "(measured_generation_bytes = the peak minus VmRSS after the build: key-value cache or state, activations, the "
    "allocator's slack). estimate_bytes = the compiler's memory.inference_total_bytes (fp32 weights + the peak of "
    "live activations of one forward pass) at estimate_symbols: the row's batch and sequence (prompt + new; T5: "
    "the source, and 1 + new target tokens)")
LLAMA_MSL = """msl 1
import std.presets

model llama_bench {
  modality text -> text
  task generation
  objective autoregressive
  architecture llama_small
}
"""


def reference(hf: Any, layout: str, state: dict[str, Any], config: Any) -> Any:
    """transformers' model of `layout` at the compiled model's size, holding the compiled model's weights."""
    import torch

    tied = bool(getattr(config, "tied", True))
    if layout == "gpt2":
        cfg = hf.GPT2Config(vocab_size=config.vocab, n_positions=config.context, n_embd=config.d_model,
                            n_layer=config.layers, n_head=config.heads, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, tie_word_embeddings=tied)
        ref = hf.GPT2LMHeadModel(cfg)
    elif layout == "llama":
        hidden = state["model.layers.0.mlp.gate_proj.weight"].shape[0]
        cfg = hf.LlamaConfig(vocab_size=config.vocab, hidden_size=config.d_model, intermediate_size=hidden,
                             num_hidden_layers=config.layers, num_attention_heads=config.heads,
                             num_key_value_heads=config.kv_heads, max_position_embeddings=config.context,
                             rope_theta=config.rope_theta, tie_word_embeddings=tied)
        ref = hf.LlamaForCausalLM(cfg)
    elif layout == "mamba":
        cfg = hf.MambaConfig(vocab_size=config.vocab, hidden_size=config.d_model, num_hidden_layers=config.layers,
                             state_size=config.d_state, expand=config.expand, conv_kernel=config.d_conv,
                             time_step_rank=config.dt_rank, use_conv_bias=True, use_bias=False,
                             layer_norm_epsilon=1e-5, tie_word_embeddings=tied)
        ref = hf.MambaForCausalLM(cfg)
    else:
        cfg = hf.T5Config(vocab_size=config.vocab, d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
                          num_layers=config.layers, num_decoder_layers=config.decoder_layers, num_heads=config.heads,
                          relative_attention_num_buckets=config.buckets,
                          relative_attention_max_distance=config.max_distance, dropout_rate=0.0,
                          feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0)
        ref = hf.T5ForConditionalGeneration(cfg)
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all("lm_head" in k or "attn.bias" in k or "masked_bias" in k or "embed_tokens" in k for k in missing), missing
    if cfg.tie_word_embeddings:
        ref.tie_weights()
    with torch.no_grad():
        embedding = ref.get_input_embeddings().weight
        assert any(embedding.equal(v) for v in state.values() if v.shape == embedding.shape)
    return ref.eval()


def _cases(out: Path, quick: bool) -> list[tuple[str, str, Path, list[str]]]:
    """(name, weights layout, spec, metagenc --set flags) of each model."""
    (out / "llama_bench.msl").write_text(LLAMA_MSL)
    small = ["--set", "layers=2", "--set", "d_model=128"] if quick else []
    heads = ["--set", "heads=2"] if quick else []
    return [("gpt2", "gpt2", ROOT / "examples" / "gpt2.msl", small + heads),
            ("llama", "llama", out / "llama_bench.msl", small + heads + (["--set", "kv_heads=1"] if quick else [])),
            ("mamba", "mamba", ROOT / "examples" / "mamba_lm.msl", small + (["--set", "dt_rank=8"] if quick else [])),
            ("t5", "t5", ROOT / "examples" / "t5_small.msl",
             small + heads + (["--set", "decoder_layers=2", "--set", "d_ff=256"] if quick else []))]


def _rss(field: str) -> int | None:
    """VmRSS or VmHWM (the peak) of this process from /proc/self/status, in bytes; None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measure_memory(folder: Path, batch: int, prompt: int, new: int) -> dict[str, Any]:
    """In this (fresh) process: the resident memory of model.py's model and of one cached greedy generate()."""
    import resource

    import torch

    torch.manual_seed(0)
    gen = load(folder / "model.py", "bench_mem_model")
    before = _rss("VmRSS")
    model = gen.build_model().eval()
    x = torch.randint(2, model.config.vocab, (batch, prompt), generator=torch.Generator().manual_seed(batch))
    built = _rss("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current size
        method = "VmHWM after /proc/self/clear_refs"
    except OSError:
        method = "ru_maxrss"
    maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.inference_mode():
        out = model.generate(x, max_new_tokens=new)
    peak = _rss("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert out.shape[0] == batch
    return {"before_model_rss_bytes": before, "model_rss_bytes": built, "peak_rss_bytes": peak,
            "ru_maxrss_before_generate_bytes": maxrss0, "method": method}


def memory_row(name: str, folder: Path, msl: Path, flags: list[str], batch: int, prompt: int, new: int,
               seq2seq: bool) -> dict[str, Any]:
    """One model and batch: the measured peak (a subprocess of this script) against the compiler's estimate."""
    from metagen_compiler.compilation import Options
    from metagen_compiler.driver import compile_source
    from metagen_compiler.passes.estimate import estimate
    from metagen_compiler.semantics.program import read_source

    cmd = [sys.executable, __file__, "--measure-memory", json.dumps([str(folder), batch, prompt, new])]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{r.stderr[-3000:]}")
    m = json.loads(r.stdout.strip().splitlines()[-1])
    sets = tuple(tuple(v.split("=", 1)) for f, v in zip(flags[::2], flags[1::2]) if f == "--set")
    comp = compile_source(read_source(msl, display=msl.name), Options(overrides=sets))  # type: ignore[arg-type]
    assert comp.graph is not None and comp.program is not None
    syms = dict(comp.graph.symbols)
    syms["B"] = batch
    if seq2seq:
        syms["T"], syms["target_T"] = prompt, 1 + new
    else:
        syms["T"] = prompt + new
    est = estimate(comp.graph, comp.program, syms)["memory"]
    measured = m["peak_rss_bytes"] - m["before_model_rss_bytes"]
    return {"model": name, "batch": batch, "prompt": 0 if seq2seq else prompt, "source": prompt if seq2seq else 0,
            "new_tokens": new, "measured_bytes": measured,
            "measured_model_bytes": m["model_rss_bytes"] - m["before_model_rss_bytes"],
            "measured_generation_bytes": m["peak_rss_bytes"] - m["model_rss_bytes"],
            "process_peak_rss_bytes": m["peak_rss_bytes"],
            "estimate_bytes": est["inference_total_bytes"], "estimate_weights_bytes": est["weights_bytes"]["fp32"],
            "estimate_activations_bytes": est["activations_inference_bytes"], "estimate_symbols": syms,
            "measured_over_estimate": measured / est["inference_total_bytes"], "peak_method": m["method"],
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average": list(os.getloadavg())}


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--measure-memory":  # the subprocess of memory_row
        folder, batch, prompt, new = json.loads(sys.argv[2])
        print(json.dumps(measure_memory(Path(folder), batch, prompt, new)))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generate.json"))
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS))
    ap.add_argument("--iterations", type=int, default=5, help="timed runs of each (median); one warm-up before")
    ap.add_argument("--merge", action="store_true", help="keep the rows of models not run from the existing --out")
    ap.add_argument("--no-memory", action="store_true", help="leave out the peak-memory measurements")
    ap.add_argument("--memory-only", action="store_true",
                    help="measure the peak memory only; the speed rows stay those of the existing --out")
    args = ap.parse_args()
    chosen = args.models.split(",")
    import torch
    import transformers as hf

    from metagen_compiler.cli import main as metagenc

    q = args.quick
    warm, iters = (0, 1) if q else (1, args.iterations)
    prompt_len, new = (8, 8) if q else (32, 32)
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        for name, layout, msl, flags in [c for c in _cases(out, q) if c[0] in chosen]:
            assert metagenc([str(msl), "-o", str(out), "--backend", "pytorch", *flags]) == 0
            folder = out / msl.stem
            gen = load(folder / "model.py", f"bench_gen_{name}")
            w = load(folder / "weights.py", f"bench_gen_weights_{name}")
            ours = gen.build_model().eval()
            assert w.LAYOUT == layout, w.LAYOUT
            seq2seq = getattr(ours, "decoding", {}).get("kind") == "encoder_decoder"
            ref = None if args.memory_only else reference(hf, layout, w.to_reference(ours, layout), ours.config)
            params = sum(p.numel() for p in ours.parameters())
            for batch in () if args.memory_only else (1, 8):
                g = torch.Generator().manual_seed(batch)
                x = torch.randint(2, ours.config.vocab, (batch, prompt_len), generator=g)
                mask = torch.ones_like(x)

                def run_ours(n: int = new, ours: Any = ours, x: Any = x) -> Any:
                    return ours.generate(x, max_new_tokens=n)

                def run_ref(n: int = new, ref: Any = ref, x: Any = x, mask: Any = mask) -> Any:
                    return ref.generate(x, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                        eos_token_id=None, pad_token_id=0)

                with torch.inference_mode():
                    same = bool(torch.equal(run_ours(), run_ref()))
                    t_ours, t_ref = timepair(run_ours, run_ref, warm, iters)
                    f_ours, f_ref = timepair(lambda: run_ours(1), lambda: run_ref(1), warm, iters)
                rows.append({"model": name, "params": params, "batch": batch,
                             "prompt": prompt_len if not seq2seq else 0, "source": prompt_len if seq2seq else 0,
                             "new_tokens": new,
                             "ours_tokens_per_s": batch * new / t_ours, "reference_tokens_per_s": batch * new / t_ref,
                             "ratio": t_ref / t_ours, "ours_first_token_s": f_ours, "reference_first_token_s": f_ref,
                             "ours_s": t_ours, "reference_s": t_ref, "same_tokens": same,
                             "reference": f"transformers {type(ref).__name__}.generate",
                             "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             "load_average": list(os.getloadavg()), "iterations": iters})
                print(name, batch, f"{t_ref / t_ours:.2f}x", "same" if same else "DIFFERENT", flush=True)
            if not args.no_memory:
                for batch in (1, 8):
                    memory.append(memory_row(name, folder, msl, flags, batch, prompt_len, new, seq2seq))
                    print(name, batch, f"peak {memory[-1]['measured_bytes'] / 2**20:.0f} MiB, estimate "
                          f"{memory[-1]['estimate_bytes'] / 2**20:.0f} MiB", flush=True)

    print(f"{'model':6} {'params':>11} {'batch':>5} {'ours tok/s':>11} {'ref tok/s':>10} {'ratio':>6} "
          f"{'ours TTFT s':>11} {'ref TTFT s':>10}  same tokens")
    for r in rows:
        print(f"{r['model']:6} {r['params']:11,} {r['batch']:5} {r['ours_tokens_per_s']:11.1f} "
              f"{r['reference_tokens_per_s']:10.1f} {r['ratio']:6.2f} {r['ours_first_token_s']:11.4f} "
              f"{r['reference_first_token_s']:10.4f}  {r['same_tokens']}")
    print(f"{'model':6} {'batch':>5} {'measured MiB':>12} {'model MiB':>9} {'generation MiB':>14} {'estimate MiB':>12} "
          f"{'measured/estimate':>17}")
    for r in memory:
        print(f"{r['model']:6} {r['batch']:5} {r['measured_bytes'] / 2**20:12.1f} {r['measured_model_bytes'] / 2**20:9.1f} "
              f"{r['measured_generation_bytes'] / 2**20:14.1f} {r['estimate_bytes'] / 2**20:12.1f} "
              f"{r['measured_over_estimate']:17.2f}")
    if args.merge and Path(args.out).exists():  # the other models' rows, as their run measured them
        before = json.loads(Path(args.out).read_text())
        kept = [{"load_average": before.get("load_average"), "iterations": before.get("iterations"), **r}
                for r in before["rows"] if r["model"] not in chosen or args.memory_only]
        rows = sorted(kept + rows, key=lambda r: (MODELS.index(r["model"]), r["batch"]))
        memory = sorted([r for r in before.get("memory", []) if r["model"] not in chosen or args.no_memory] + memory,
                        key=lambda r: (MODELS.index(r["model"]), r["batch"]))
    result = {"benchmark": "generate", "quick": q, "torch": torch.__version__, "transformers": hf.__version__,
              "device": "cpu", "threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
              "python": platform.python_version(), "warmup": warm, "iterations": iters, "rows": rows,
              "note": "each row's two sides ran alternately in one run (its `measured`, `load_average`); with --merge "
                      "the rows of models not run come from an earlier run",
              "memory": memory, "memory_method": MEMORY_METHOD}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
