"""Training on real data on CPU: the compiled models' own train.py and evaluate.py, each row measured in one run.

Rows (issue 17, "Benchmarks"), every number read from what the scripts wrote (metrics.jsonl, eval_*.json, their
progress lines) or timed here; nothing estimated:
- digits: scikit-learn's 1,797 handwritten digits (8x8) as PNG folders, resized by the loader to the model's
  32x32 input, in explicit train/ val/ test/ folders of 60/20/20 (1,079 / 359 / 359 items, seed 0; DIGITS_SPLIT:
  the loader's own 80/10/10 split leaves 180 test items, where one item is 0.56 points of accuracy), the same
  split for both models; a small ResNet (examples/resnet50.msl at width 16, depths 1,1,1,1) and a small ViT
  (examples/vit_b_16.msl at patch 8, 4 layers, d_model 64, with an EMA of its weights), both with random_crop.
  Per model: test accuracy of the last checkpoint (evaluate.py; the EMA's weights where the run kept them),
  validation accuracy at each evaluation with the wall time since the process started, the first wall time at
  which validation accuracy reached the 97% target (null if never), the whole run's wall. The ViT's settings were
  chosen on the validation split alone (VIT_TUNING below), the ResNet's likewise (RESNET_TUNING); the benchmark
  evaluates the test split.
- tabular: examples/tabular_classifier.msl on scikit-learn's breast-cancer table (CSV, --target diagnosis); the
  run's recorded split (data.json) is given to scikit-learn's LogisticRegression (standardised) and
  HistGradientBoostingClassifier, fitted on the same train rows and scored on the same test rows.
- text: a small GPT-2 (examples/gpt2.msl, 2 layers, d_model 128, vocab 512) on Debian's GPL-3 text: validation
  perplexity after a fixed number of steps against the add-one unigram model of the training tokens (same
  tokenizer, same split), with the validation curve: the corpus is small (GPL-3: about 35 kB of text) and longer
  runs overfit (400 steps: 60 at step 100, 408 at step 400);
  tokens/s of train.py (median of its progress lines after the first) against a plain
  nanoGPT-style loop (AdamW, clipping, fp32) over transformers' GPT2LMHeadModel of the same size, batch and block,
  timed in the same run (ratio = ours / reference: > 1 means the generated train.py is faster).
- torchrun: the same text model, one process against `torchrun --standalone --nproc_per_node=2` at the same
  global batch: the largest relative difference of the per-step training losses, and the throughput ratio.
All processes run with one intra-op thread (OMP_NUM_THREADS=1): two torchrun processes use the two cores.
Prints a table and writes benchmarks/results/train.json.
Usage: python benchmarks/train.py [--quick] [--out FILE] [--parts digits,tabular,text,torchrun]
(--quick: a few steps per row, CI smoke; --parts: measure those rows again and keep the others from FILE)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the data writers and run readers the training tests use

from training_helpers import GPL, model_folder, records, unigram_perplexity, write_cancer, write_digits

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TARGET = 0.97
DIGITS_SPLIT = (0.6, 0.2, 0.2)  # train, val, test: explicit folders, the same for both digits models

RESNET = ["image_size=32", "channels=1", "width=16", "depths=1,1,1,1", "expansion=2", "num_classes=10"]
RESNET_STEPS = 600
RESNET_FLAGS = ["--augment", "random_crop"]
# The ResNet settings tried on DIGITS_SPLIT (lr 3e-3, no weight decay, batch 64, seed 0, 1 thread), chosen as the
# ViT's: the highest validation accuracy of the last checkpoint, ties to the lower validation loss. The earlier
# benchmark's setting (300 steps, nothing else) was run first, with the ViT's choice, and scored 0.9694 on test
# (348 of 359): these runs came after that test figure was seen, so the ResNet's test row is its second look
RESNET_TUNING = [
    {"split": "60/20/20", "settings": "300 steps (the earlier setting)", "val_loss": 0.0847, "val_accuracy": 0.9861},
    {"split": "60/20/20", "settings": "300 steps, EMA 0.99", "val_loss": 0.0887, "val_accuracy": 0.9861},
    {"split": "60/20/20", "settings": "600 steps, random_crop (chosen)", "val_loss": 0.0319, "val_accuracy": 0.9889},
    {"split": "60/20/20", "settings": "600 steps, random_crop, EMA 0.99", "val_loss": 0.0372, "val_accuracy": 0.9861},
    {"split": "60/20/20", "settings": "1000 steps, random_crop, EMA 0.99", "val_loss": 0.0389, "val_accuracy": 0.9889},
]
# patch 8: 16 tokens of 2x2 of the digits' own 8x8 pixels (patch 4 made 64 one-pixel tokens: 4x the attention
# cost, and a lower validation accuracy after the same steps); chosen on the validation split, see VIT_TUNING
VIT = ["image_size=32", "patch_size=8", "channels=1", "layers=4", "d_model=64", "heads=4", "mlp_dim=128",
       "num_classes=10"]
VIT_STEPS = 3000
# evaluated (val, test) with the averaged weights; random_crop shifts each training image by up to 4 of its 32
# pixels (one pixel of the 8x8 original): without it the ViT overfits (on DIGITS_SPLIT, validation loss 0.104 at
# step 600, 0.153 at step 1000)
VIT_FLAGS = ["--ema-decay", "0.99", "--augment", "random_crop"]
# The ViT settings tried, each one train.py run (seed 0, batch 64, 1 thread; measured 2026-12-07 on the shared
# 2-core machine), with the validation loss and accuracy of the last checkpoint. The first ten ran on the loader's
# 80/10/10 split (180 validation items), where the chosen one (patch 8, 1000 steps, EMA) reached 0.9944 on
# validation and 0.9667 on test: one validation item is 0.56 points, too coarse to choose by. The rest ran on
# DIGITS_SPLIT's 359 validation items; the benchmark's row is the highest validation accuracy there (ties: the
# lower validation loss). Every 60/20/20 row: patch 8, 4 layers, d_model 64, lr 2e-3, warmup 100, cosine to 0.1.
VIT_TUNING = [
    {"split": "80/10/10", "settings": "patch 4, lr 1e-3, wd 0.05, 1000 steps, no EMA", "val_loss": None,
     "val_accuracy": 0.9889},
    {"split": "80/10/10", "settings": "patch 4, lr 1e-3, wd 0.05, 1000 steps, EMA 0.99", "val_loss": 0.0377,
     "val_accuracy": 0.9889},
    {"split": "80/10/10", "settings": "patch 8, lr 2e-3, wd 0.05, 1000 steps, EMA 0.99 (chosen then; test 0.9667)",
     "val_loss": 0.0143, "val_accuracy": 0.9944},
    {"split": "80/10/10", "settings": "patch 8, lr 3e-3, wd 0.1, 1000 steps, EMA 0.99", "val_loss": 0.0270,
     "val_accuracy": 0.9889},
    {"split": "80/10/10", "settings": "patch 8, lr 2e-3, wd 0.05, 1000 steps, EMA 0.99, --min-lr-ratio 0",
     "val_loss": 0.0328, "val_accuracy": 0.9889},
    {"split": "80/10/10", "settings": "patch 8, lr 2e-3, wd 0.05, 1000 steps, EMA 0.995", "val_loss": 0.0146,
     "val_accuracy": 0.9944},
    {"split": "80/10/10", "settings": "patch 8, lr 2e-3, wd 0.05, 2000 steps, EMA 0.995", "val_loss": 0.2094,
     "val_accuracy": 0.9778},
    {"split": "80/10/10", "settings": "patch 8, lr 2e-3, wd 0.05, 1500 steps, EMA 0.99, --augment random_crop",
     "val_loss": 0.0568, "val_accuracy": 0.9778},
    {"split": "80/10/10", "settings": "patch 8, 6 layers, d_model 96, mlp 192, lr 2e-3, 1500 steps, EMA 0.995",
     "val_loss": 0.0801, "val_accuracy": 0.9833},
    {"split": "80/10/10", "settings": "image_size 8, patch 2, lr 2e-3, wd 0.05, 1000 steps, EMA 0.99",
     "val_loss": 0.0691, "val_accuracy": 0.9889},
    {"split": "60/20/20", "settings": "wd 0.05, 1000 steps, EMA 0.99 (the 80/10/10 choice)", "val_loss": 0.1529,
     "val_accuracy": 0.9749},
    {"split": "60/20/20", "settings": "wd 0.05, 2000 steps, EMA 0.99, random_crop", "val_loss": 0.0646,
     "val_accuracy": 0.9861},
    {"split": "60/20/20", "settings": "wd 0.05, 3000 steps, EMA 0.99, random_crop (chosen)", "val_loss": 0.0649,
     "val_accuracy": 0.9916},
    {"split": "60/20/20", "settings": "wd 0.1, 2000 steps, EMA 0.99, random_crop", "val_loss": 0.0890,
     "val_accuracy": 0.9777},
    {"split": "60/20/20", "settings": "wd 0.05, 2000 steps, EMA 0.995, random_crop", "val_loss": 0.0631,
     "val_accuracy": 0.9861},
    {"split": "60/20/20", "settings": "wd 0.05, 2000 steps, EMA 0.99, random_crop and color_jitter", "val_loss": 0.0558,
     "val_accuracy": 0.9861},
    {"split": "60/20/20", "settings": "d_model 96, mlp 192, wd 0.05, 2000 steps, EMA 0.99, random_crop",
     "val_loss": 0.0717, "val_accuracy": 0.9777},
    {"split": "60/20/20", "settings": "wd 0.05, 4000 steps, EMA 0.99, random_crop", "val_loss": 0.0600,
     "val_accuracy": 0.9861},
]
MACHINE_NOTE = ("wall times were measured on a shared 2-core machine that other jobs used at the same time "
                "(load_average_1min of each row that has it: at their start and end); on an idle machine they are "
                "shorter, and the throughput ratios (text: ours / reference, torchrun: 2 / 1 processes) move with the "
                "load: two processes gain only where two cores are free")
GPT = {"vocab": 512, "context": 128, "layers": 2, "d_model": 128, "heads": 4}


def folder_of(root: Path, name: str) -> Path:
    """examples/<name>.msl compiled, less its training.json: each row trains with the settings it states here (the
    examples' training sections are recipes for their real data sets: ViT-B/16's is ImageNet's, 300 epochs)."""
    folder = model_folder(root, name)
    (folder / "training.json").unlink(missing_ok=True)
    return folder


def write_digits_split(root: Path, fractions: tuple[float, float, float]) -> Path:
    """scikit-learn's digits as explicit train/, val/ and test/ folders (a folder per class in each), split by
    write_digits's file names shuffled with seed 0 (the loaders' own seeded split takes 10% for val and for test;
    a larger test split makes the accuracy less noisy: 1 item of 180 is 0.56 points)."""
    import random

    every = write_digits(root / "all")
    files = sorted(every.glob("*/*.png"))
    random.Random(0).shuffle(files)
    n_val, n_test = round(fractions[1] * len(files)), round(fractions[2] * len(files))
    parts = {"val": files[:n_val], "test": files[n_val:n_val + n_test], "train": files[n_val + n_test:]}
    for split, chosen in parts.items():
        for f in chosen:
            (root / split / f.parent.name).mkdir(parents=True, exist_ok=True)
            f.rename(root / split / f.parent.name / f.name)
    shutil.rmtree(every)
    return root


def sets(pairs: list[str]) -> list[str]:
    return [a for p in pairs for a in ("--set", p)]


def run_timed(cmd: list[str], cwd: Path) -> tuple[list[tuple[float, str]], float]:
    """Runs `cmd`, time-stamping each stdout line (seconds since the start); returns the lines and the wall."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stderr is not None
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in p.stdout]
    err = p.stderr.read()
    rc = p.wait()
    wall = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}):\n" + "\n".join(t for _, t in lines[-20:]) + err)
    return lines, wall


def train(folder: Path, name: str, *args: str, procs: int = 1) -> tuple[Path, list[tuple[float, str]], float]:
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={procs}"]
    lines, wall = run_timed([*launcher, "train.py", *args, "--run-name", name], folder)
    return folder / "runs" / name, lines, wall


def evaluate(folder: Path, run: Path, split: str) -> dict[str, Any]:
    lines, _ = run_timed([sys.executable, "evaluate.py", "--checkpoint", str(run / "last"), "--split", split], folder)
    return json.loads("\n".join(t for _, t in lines))


def rates(lines: list[tuple[float, str]]) -> list[float]:
    """The throughput of each progress line (`... | 12,345 tokens/s | ...`)."""
    return [float(m.group(1).replace(",", "")) for _, t in lines if (m := re.search(r"\| ([\d,.]+) \w+/s \|", t))]


# ------------------------------------------------------------------------------------------------- rows


def digits_row(folder: Path, data: Path, model: str, overrides: list[str], steps: int, lr: float, wd: float,
               every: int, flags: list[str]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    run, lines, wall = train(folder, model, "--data", str(data), "--steps", str(steps), "--batch-size", "64",
                             "--lr", str(lr), "--weight-decay", str(wd), "--eval-every", str(every),
                             "--log-every", str(every), *flags, *sets(overrides))
    evals = [(t, int(m.group(1)), float(m.group(2))) for t, s in lines
             if (m := re.match(r"eval step (\d+) \|.*\| accuracy ([\d.]+)", s))]
    reached = next(((t, step) for t, step, acc in evals if acc >= TARGET), None)
    test = evaluate(folder, run, "test")
    cfg = json.loads((run / "config.json").read_text())
    items = json.loads((run / "data.json").read_text())["items"]
    return {"model": model, "params": cfg.get("params"), "items": items, "steps": steps, "batch": 64, "lr": lr,
            "config": overrides, "flags": flags, "weights_evaluated": test.get("weights", "raw"),
            "test_accuracy": test["metrics"]["accuracy"], "test_items": test["predictions"],
            "val_accuracy_final": evals[-1][2],
            "val_curve": [{"step": s, "wall_s": round(t, 2), "accuracy": a} for t, s, a in evals],
            "val_reached_target_s": round(reached[0], 2) if reached else None,
            "val_reached_target_step": reached[1] if reached else None,
            "wall_s": round(wall, 2), "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}


def tabular_row(folder: Path, table: Path, x: Any, y: Any, steps: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    run, _, wall = train(folder, "cancer", "--data", str(table), "--target", "diagnosis", "--steps", str(steps),
                         "--batch-size", "32", "--lr", "1e-3", "--eval-every", str(max(1, steps // 4)))
    test = evaluate(folder, run, "test")
    split = json.loads((run / "data.json").read_text())["split"]

    def rows(ids: list[str]) -> list[int]:  # ids are `cancer.csv:<line>`, line 1 the header
        return [int(i.rsplit(":", 1)[1]) - 2 for i in ids]

    train_rows, test_rows = rows(split["train"]), rows(split["test"])
    out = {"model": "tabular_classifier (MLP)", "data": "breast cancer (569 rows, 30 features)",
           "train_rows": len(train_rows), "test_rows": len(test_rows), "steps": steps,
           "mlp_test_accuracy": test["metrics"]["accuracy"], "mlp_wall_s": round(wall, 2)}
    for key, clf in (("logreg", make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))),
                     ("hist_gbdt", HistGradientBoostingClassifier(random_state=0))):
        t = time.perf_counter()
        clf.fit(x[train_rows], y[train_rows])
        out[f"{key}_test_accuracy"] = float((clf.predict(x[test_rows]) == y[test_rows]).mean())
        out[f"{key}_wall_s"] = round(time.perf_counter() - t, 3)
    return out


def reference_tokens_per_s(run: Path, batch: int, block: int, lr: float, steps: int) -> float:
    """A nanoGPT-style loop over transformers' GPT2LMHeadModel of the same size, batch and block."""
    import torch
    import transformers as hf
    from tokenizers import Tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = Tokenizer.from_file(str(run / "tokenizer.json"))
    ids = torch.tensor(tok.encode(GPL.read_text()).ids, dtype=torch.long)
    cfg = hf.GPT2Config(vocab_size=GPT["vocab"], n_positions=GPT["context"], n_embd=GPT["d_model"],
                        n_layer=GPT["layers"], n_head=GPT["heads"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    model = hf.GPT2LMHeadModel(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)

    def step() -> None:
        ix = torch.randint(len(ids) - block - 1, (batch,))
        x = torch.stack([ids[i:i + block] for i in ix])
        y = torch.stack([ids[i + 1:i + 1 + block] for i in ix])
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * block * steps / (time.perf_counter() - t)


def text_row(folder: Path, steps: int, batch: int, block: int, ref_steps: int) -> dict[str, Any]:
    lr = 3e-3
    load = os.getloadavg()[0]
    run, lines, wall = train(folder, "gpl", "--data", str(GPL), "--steps", str(steps), "--batch-size", str(batch),
                             "--block-size", str(block), "--lr", str(lr), "--eval-every", str(max(1, steps // 6)),
                             "--log-every", str(max(1, steps // 12)), *sets([f"{k}={v}" for k, v in GPT.items()]))
    val = records(run, "val")
    ours = statistics.median(rates(lines)[1:] or rates(lines))
    ref = reference_tokens_per_s(run, batch, block, lr, ref_steps)
    return {"model": "gpt2 (2 layers, d_model 128, vocab 512)", "data": str(GPL), "steps": steps, "batch": batch,
            "block": block, "val_perplexity_start": val[0]["perplexity"], "val_perplexity": val[-1]["perplexity"],
            "val_curve": [{"step": r["step"], "perplexity": r["perplexity"]} for r in val],
            "unigram_perplexity": unigram_perplexity(run), "wall_s": round(wall, 2),
            "ours_tokens_per_s": ours, "reference_tokens_per_s": ref, "ratio": ours / ref,
            "reference": "transformers GPT2LMHeadModel, nanoGPT-style loop",
            "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}


def torchrun_row(folder: Path, steps: int, batch: int, block: int) -> dict[str, Any]:
    common = ["--data", str(GPL), "--steps", str(steps), "--batch-size", str(batch), "--block-size", str(block),
              "--lr", "3e-3", "--eval-every", str(steps), "--log-every", str(max(1, steps // 5)),
              *sets([f"{k}={v}" for k, v in GPT.items()])]
    load = os.getloadavg()[0]
    one, lines1, wall1 = train(folder, "one", *common)
    two, lines2, wall2 = train(folder, "two", *common, procs=2)
    l1, l2 = [r["loss"] for r in records(one, "train")], [r["loss"] for r in records(two, "train")]
    assert len(l1) == len(l2) == steps, (len(l1), len(l2))
    r1 = statistics.median(rates(lines1)[1:] or rates(lines1))
    r2 = statistics.median(rates(lines2)[1:] or rates(lines2))
    return {"model": "gpt2 (2 layers, d_model 128, vocab 512)", "steps": steps, "global_batch": batch,
            "block": block, "max_rel_loss_diff": max(abs(a - b) / abs(a) for a, b in zip(l1, l2)),
            "final_loss_1": l1[-1], "final_loss_2": l2[-1], "tokens_per_s_1": r1, "tokens_per_s_2": r2,
            "throughput_ratio": r2 / r1, "wall_s_1": round(wall1, 2), "wall_s_2": round(wall2, 2),
            "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}


PARTS = ("digits", "tabular", "text", "torchrun")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated rows to measure; the others are kept from --out as they were")
    args = ap.parse_args()
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if not set(parts) <= set(PARTS):
        ap.error(f"--parts: expected some of {', '.join(PARTS)}")
    import torch

    q = args.quick
    settings: dict[str, Any] = {
        "threads_per_process": 1,
        "digits_resnet": {"steps": 4 if q else RESNET_STEPS, "lr": 3e-3, "weight_decay": 0.0,
                          "eval_every": 2 if q else RESNET_STEPS // 6, "flags": RESNET_FLAGS},
        "digits_vit": {"steps": 4 if q else VIT_STEPS, "lr": 2e-3, "weight_decay": 0.05,
                       "eval_every": 2 if q else VIT_STEPS // 10, "flags": VIT_FLAGS},
        "digits_split": dict(zip(("train", "val", "test"), DIGITS_SPLIT)),
        "tabular_steps": 8 if q else 300,
        "text": {"steps": 6 if q else 120, "batch": 16, "block": 64, "reference_steps": 3 if q else 30},
        "torchrun": {"steps": 4 if q else 40, "batch": 16, "block": 64},
    }
    out = Path(args.out)
    kept: dict[str, Any] = {}
    if set(parts) != set(PARTS):  # a partial rerun keeps the other rows, and says when each row was measured
        try:
            kept = json.loads(out.read_text())
        except (OSError, json.JSONDecodeError):
            ap.error(f"--parts {args.parts}: {out} has no earlier results to keep")
        if kept.get("quick") != q:
            ap.error(f"--parts: {out} holds {'quick' if kept.get('quick') else 'full'} results; rerun every part")
    result: dict[str, Any] = {"quick": q, "settings": {**kept.get("settings", {}), **settings},
                              "target_accuracy": TARGET,
                              "hardware": {"cpu": platform.processor() or platform.machine(),
                                           "cpu_count": os.cpu_count(), "torch": torch.__version__,
                                           "python": platform.python_version()},
                              "machine_note": MACHINE_NOTE, "vit_tuning": VIT_TUNING,
                              "resnet_tuning": RESNET_TUNING,
                              "measured": {k: kept.get("measured", {}).get(k, "an earlier run (git log of this file)")
                                           for k in PARTS if k not in parts}}
    for part in PARTS:
        if part not in parts:
            result[part] = kept[part]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        if "digits" in parts:
            digits = write_digits_split(root / "digits", DIGITS_SPLIT)
            resnet, vit = folder_of(root, "resnet50"), folder_of(root, "vit_b_16")
            result["digits"] = []
            for name, folder, config in (("resnet", resnet, RESNET), ("vit", vit, VIT)):
                s = settings[f"digits_{name}"]
                result["digits"].append(digits_row(folder, digits, name, config, s["steps"], s["lr"],
                                                   s["weight_decay"], s["eval_every"], s["flags"]))
        if "tabular" in parts:
            table, x, y = write_cancer(root / "cancer.csv")
            result["tabular"] = tabular_row(folder_of(root, "tabular_classifier"), table, x, y,
                                            settings["tabular_steps"])
        if "text" in parts or "torchrun" in parts:
            gpt = folder_of(root, "gpt2")
            if "text" in parts:
                t = settings["text"]
                result["text"] = text_row(gpt, t["steps"], t["batch"], t["block"], t["reference_steps"])
            if "torchrun" in parts:
                t = settings["torchrun"]
                result["torchrun"] = torchrun_row(gpt, t["steps"], t["batch"], t["block"])
    result["measured"].update(dict.fromkeys(parts, stamp))
    result["measured"] = {k: result["measured"][k] for k in PARTS if k in result["measured"]}

    print(f"{'digits model':<8} {'params':>9} {'steps':>6} {'test acc':>9} {'of':>5} {'val>=97% at':>12} {'wall s':>8}")
    for r in result["digits"]:
        at = f"{r['val_reached_target_s']:.1f} s" if r["val_reached_target_s"] is not None else "never"
        print(f"{r['model']:<8} {r['params'] or 0:>9,} {r['steps']:>6} {r['test_accuracy']:>9.4f} {r['test_items']:>5} "
              f"{at:>12} {r['wall_s']:>8.1f}")
    tb = result["tabular"]
    print(f"\ntabular (breast cancer, {tb['test_rows']} test rows): MLP {tb['mlp_test_accuracy']:.4f} | "
          f"LogisticRegression {tb['logreg_test_accuracy']:.4f} | HistGradientBoosting {tb['hist_gbdt_test_accuracy']:.4f}")
    tx = result["text"]
    print(f"\ntext (GPL-3, {tx['steps']} steps): val perplexity {tx['val_perplexity_start']:.1f} -> "
          f"{tx['val_perplexity']:.2f} | unigram {tx['unigram_perplexity']:.2f} | tokens/s train.py "
          f"{tx['ours_tokens_per_s']:,.0f} vs GPT2LMHeadModel loop {tx['reference_tokens_per_s']:,.0f} "
          f"(ratio {tx['ratio']:.2f})")
    tr = result["torchrun"]
    print(f"\ntorchrun 2 vs 1 ({tr['steps']} steps): max relative loss difference {tr['max_rel_loss_diff']:.2e} | "
          f"tokens/s {tr['tokens_per_s_1']:,.0f} -> {tr['tokens_per_s_2']:,.0f} (ratio {tr['throughput_ratio']:.2f})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
