"""Evaluate a checkpoint of this folder's model on one split of the data it was trained with.

    python evaluate.py --checkpoint runs/<run>/last --data corpus/ --split test

Prints the metrics as one JSON object on stdout and writes the same to runs/<run>/eval_<split>.json.
The split, tokenizer and statistics are those the run recorded (data.json), so `test` is the run's test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

if __package__:
    from . import data, loop, rl, split_metrics
else:  # run as a script from the model's folder
    import data  # type: ignore[no-redef]
    import loop  # type: ignore[no-redef]
    import rl  # type: ignore[no-redef]
    import split_metrics  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a checkpoint on a data split; prints one JSON object.")
    p.add_argument("--checkpoint", required=True, help="runs/<run>/last")
    p.add_argument("--data", default=None, help="the data the run trained on (default: the path it recorded)")
    p.add_argument("--split", default="test", choices=list(data.SPLITS))
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch (default: the run's micro-batch)")
    p.add_argument("--model", default=None, help="the generated model.py (default: the one beside this script)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--weights", choices=["ema", "raw"], default="ema",
                   help="ema: the averaged weights where the run kept an EMA (--ema-decay); raw: the trained ones")
    p.add_argument("--episodes", type=int, default=None, help="RL: greedy episodes (default: the run's --eval-episodes)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result, out = evaluate(args)
    except (data.DataError, rl.RLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result)
    out.write_text(text + "\n")
    loop.write_measurements(out.parent, result, 1, torch.device(result["device"]))
    print(text)
    return 0


def evaluate(args: argparse.Namespace) -> tuple[dict, Path]:
    ckpt = loop.find_checkpoint(Path(args.checkpoint))
    if ckpt is None:
        raise data.DataError(f"{args.checkpoint}: no checkpoint (expected trainer.json and model.safetensors)")
    run_dir = ckpt.parent
    try:
        resolved = json.loads((run_dir / "config.json").read_text())
        state = json.loads((run_dir / "data.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise data.DataError(f"{run_dir}: not a run folder ({e.__class__.__name__}: config.json, data.json)") from None
    settings = resolved["train"]
    d = loop.Dist(device=torch.device(loop.pick_device(args.device)))
    beside = HERE / "model.py"  # the output folder's own model.py, wherever the folder has moved
    module = loop.load_model_module(Path(args.model) if args.model else beside if beside.is_file() else
                                    Path(settings["model"]))
    fields = {f.name: f for f in dataclasses.fields(module.Config)}
    values = {k: tuple(v) if isinstance(fields[k].default, tuple) else v
              for k, v in resolved["model"].items() if k in fields}
    model = module.build_model(module.Config(**values)).to(d.device)
    trainer = loop.load_checkpoint(ckpt, model)
    weights = "ema" if args.weights == "ema" and loop.load_ema_weights(ckpt, model) else "raw"
    form = data.detect_form(model, module)
    source = args.data or settings["data"]
    kind = rl.rl_kind(form.keys)
    if kind and source != "synthetic":  # an RL agent: greedy episodes of its environment
        started = time.perf_counter()
        env = rl.make_env(source, vars(model.config))
        episodes = args.episodes or settings.get("eval_episodes", 10)
        metrics = rl.evaluate_policy(model.cpu(), kind, env, episodes, settings["seed"], args.split)
        result = {"split": args.split, "metrics": metrics, "predictions": episodes, "step": trainer["step"],
                  "seen": trainer["seen"], "unit": "env steps", "checkpoint": str(ckpt), "data": source,
                  "synthetic": False, "wall_s": round(time.perf_counter() - started, 3), "device": "cpu"}
        return result, run_dir / f"eval_{args.split}.json"
    opts = data.DataOptions(source, settings["seed"], settings["block_size"], settings["text_field"],
                            settings["tokenizer"], settings["target"], settings["features"])
    splits = data.prepare(opts, form, run_dir, state, model, module, write=False)
    started = time.perf_counter()
    batch = args.batch_size or resolved.get("micro_batch", 32)
    autocast = loop.autocast(d.device.type, settings.get("precision", "fp32"))
    metrics, count = split_metrics.evaluate(model, splits.get(args.split), batch, d, autocast, data.target_count)
    lm = form.kind == "lm" or (source == "synthetic" and "text" in form.keys)
    result = {
        "split": args.split,
        "metrics": metrics,
        "predictions": count,
        "step": trainer["step"],
        "seen": trainer["seen"] * (settings["block_size"] if lm else 1),  # text: windows of block_size tokens
        "unit": "tokens" if lm else "samples",
        "checkpoint": str(ckpt),
        "data": source,
        "synthetic": source == "synthetic",
        "wall_s": round(time.perf_counter() - started, 3),
        "device": str(d.device),
        "weights": weights,
    }
    return result, run_dir / f"eval_{args.split}.json"


if __name__ == "__main__":
    sys.exit(main())
