"""Train the model of this folder's model.py on local data.

    python train.py --data corpus/ --steps 2000                      # one process
    torchrun --standalone --nproc_per_node=2 train.py --data corpus/  # DistributedDataParallel, same flags
    python train.py --data corpus/ --resume                          # continue the latest run after a kill

Writes runs/<run>/: config.json (the resolved settings), data.json (the split and data statistics),
tokenizer.json (text), metrics.jsonl, last/ (the checkpoint) and eval_val.json. See docs/training.md.
Needs torch and safetensors, plus `tokenizers` for text and Pillow for images; not MetaGen.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

if __package__:
    from . import data, loop, rl
else:  # run as a script from the model's folder
    import data  # type: ignore[no-redef]
    import loop  # type: ignore[no-redef]
    import rl  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent

RESUMABLE_CHANGES = {"steps", "eval_every", "checkpoint_every", "log_every", "early_stop", "workers", "device", "data"}
LOCATIONS = {"model", "out", "run_name", "resume"}  # where things are now, never taken from the saved run
NEW_TRAINER = {"step": 0, "epoch": 0, "position": 0, "seen": 0, "best_val_loss": None, "bad_evals": 0}  # trainer.json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the model of this folder on local data.")
    add = p.add_argument
    add("--data", help="a file or folder of training data, or `synthetic` (smoke tests only)")
    add("--model", default=str(HERE / "model.py"), help="the generated model.py (default: this folder's)")
    add("--steps", type=int, default=1000, help="optimizer steps")
    add("--batch-size", type=int, default=32, help="global batch per optimizer step, all processes together")
    add("--grad-accum", type=int, default=1, help="micro-batches accumulated per step")
    add("--block-size", type=int, default=None, help="text: tokens per training window (default min(context, 256))")
    add("--lr", type=float, default=3e-4, help="peak learning rate")
    add("--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of --lr")
    add("--warmup", type=int, default=None, help="linear warmup steps (default min(100, steps // 10))")
    add("--weight-decay", type=float, default=0.1, help="AdamW decoupled decay (not on norms, biases, embeddings)")
    add("--beta1", type=float, default=0.9)
    add("--beta2", type=float, default=0.95)
    add("--grad-clip", type=float, default=1.0, help="max global gradient norm; 0 turns clipping off")
    add("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 autocast or plain fp32")
    add("--seed", type=int, default=0, help="seeds the weights, the data split and order, dropout")
    add("--eval-every", type=int, default=100, help="evaluate on the validation split every N steps")
    add("--eval-batch-size", type=int, default=None, help="per-process evaluation batch (default: training's)")
    add("--checkpoint-every", type=int, default=None, help="save runs/<run>/last every N steps (default: --eval-every)")
    add("--early-stop", type=int, default=0, help="stop after N evaluations without a lower validation loss")
    add("--log-every", type=int, default=10, help="print a progress line every N steps")
    add("--out", default=None, help="the folder of runs (default: runs/ beside model.py)")
    # not `--run`: torchrun reads an abbreviation of its own --run-path in it, even after the script's name
    add("--run-name", default=None, help="run name (default: the start time; with --resume: the latest run)")
    add("--resume", action="store_true", help="continue the run from its last checkpoint")
    add("--set", action="append", default=[], metavar="NAME=VALUE", help="override a model Config field")
    add("--text-field", default="text", help="text: the field of each .jsonl object")
    add("--tokenizer", default=None, help="text: a tokenizer.json to use instead of training a BPE")
    add("--target", default=None, help="tabular: the column(s) to predict, comma-separated")
    add("--features", default=None, help="tabular: feature columns (default: every other column)")
    add("--device", default="auto", help="auto, cpu or cuda")
    add("--workers", type=int, default=0, help="DataLoader worker processes")
    add("--compile", action="store_true", help="torch.compile the model")
    g = p.add_argument_group("reinforcement learning (--data gym:ENV_ID; see rl.py)").add_argument
    g("--eval-episodes", type=int, default=10, help="RL: greedy episodes per evaluation")
    g("--ppo-epochs", type=int, default=4, help="PPO: passes over each rollout")
    g("--ppo-minibatches", type=int, default=4, help="PPO: minibatches per pass")
    g("--gae-lambda", type=float, default=0.95, help="PPO: GAE lambda")
    g("--reward-scale", type=float, default=0.1, help="PPO: rewards times this for the value head and advantages")
    g("--replay-size", type=int, default=50_000, help="DQN: replay buffer capacity")
    g("--train-every", type=int, default=1, help="DQN: environment steps per gradient step")
    g("--target-every", type=int, default=100, help="DQN: steps between update_target() calls")
    g("--explore-fraction", type=float, default=0.5, help="DQN: share of the steps over which epsilon falls")
    g("--final-epsilon", type=float, default=0.05, help="DQN: epsilon after the fall")
    return p


def choose_run(args: argparse.Namespace) -> Path:
    runs = Path(args.out) if args.out else Path(args.model).resolve().parent / "runs"
    if args.run_name:
        return runs / args.run_name
    if args.resume:
        found = sorted((p for p in runs.glob("*") if loop.find_checkpoint(p / "last")), key=lambda p: p.stat().st_mtime)
        if not found:
            raise data.DataError(f"{runs}: no run with a checkpoint to resume")
        return found[-1]
    return runs / time.strftime("%Y%m%d-%H%M%S")


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.data is None and not args.resume:
        p.error("--data is required (a file or folder, or `synthetic`)")
    q = parser()  # the same flags without defaults: which ones this command line gives
    q.set_defaults(**dict.fromkeys(vars(args)))
    given = {k for k, v in vars(q.parse_args(argv)).items() if v is not None}
    try:
        return train(args, given)
    except (data.DataError, rl.RLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def train(args: argparse.Namespace, given: set[str]) -> int:
    d = loop.setup_distributed(args.device)
    run_dir = choose_run(args)
    if d.enabled:  # every process uses rank 0's run name
        names = [str(run_dir)]
        torch.distributed.broadcast_object_list(names, src=0)
        run_dir = Path(names[0])
    ckpt = None
    if args.resume:
        ckpt = loop.find_checkpoint(run_dir / "last")
        if ckpt is None:
            raise data.DataError(f"{run_dir}: no checkpoint to resume (expected {run_dir / 'last'})")
        saved = json.loads((run_dir / "config.json").read_text())["train"]
        for k, v in saved.items():  # the run's own settings, except flags given now that may change
            if k not in LOCATIONS and (k not in given or k not in RESUMABLE_CHANGES):
                setattr(args, k, v)
    elif (run_dir / "last").exists() or (run_dir / "metrics.jsonl").exists():
        raise data.DataError(f"{run_dir}: the run exists; pass --resume to continue it, or --run-name NAME")

    # the model, as model.py builds it, with --set overrides
    module = loop.load_model_module(Path(args.model))
    try:
        overrides = loop.parse_overrides(module.Config, args.set)
    except ValueError as e:
        raise data.DataError(str(e)) from None
    config = module.Config(**overrides)
    model = module.build_model(config, seed=args.seed).to(d.device)
    torch.manual_seed(args.seed + d.rank)  # dropout differs per process; a resume restores it below
    form = data.detect_form(model, module)
    synthetic = args.data == "synthetic"
    rl_kind = rl.rl_kind(form.keys)
    if rl_kind and not synthetic:
        return train_rl(args, d, run_dir, ckpt, model, config, rl_kind)
    args.block_size = args.block_size or min(int(getattr(config, "context", 256)), 256)
    args.warmup = args.warmup if args.warmup is not None else min(100, args.steps // 10)
    args.checkpoint_every = args.checkpoint_every or args.eval_every

    # the data: a seeded split, recorded in data.json so resume and evaluate.py see the same items
    state = json.loads((run_dir / "data.json").read_text()) if ckpt else None
    opts = data.DataOptions(args.data, args.seed, args.block_size, args.text_field, args.tokenizer, args.target,
                            args.features)
    splits = data.prepare(opts, form, run_dir, state, model, module, write=d.main)
    if getattr(splits.train, "whole", False):  # a whole graph per step (data_graph.py)
        if d.enabled or args.grad_accum != 1 or ("batch_size" in given and args.batch_size != 1):
            raise data.DataError(f"{args.data}: the whole graph is one batch; train in one process with "
                                 "--batch-size 1 and no --grad-accum")
        args.batch_size = 1
    micro, rest = divmod(args.batch_size, d.world * args.grad_accum)
    if rest or micro == 0:
        raise data.DataError(f"--batch-size {args.batch_size} is not a multiple of processes x --grad-accum "
                             f"({d.world} x {args.grad_accum})")
    if len(splits.train) // d.world < micro:  # type: ignore[arg-type]
        raise data.DataError(f"{args.data}: the train split has {len(splits.train)} items, fewer than one batch of "  # type: ignore[arg-type]
                             f"{args.batch_size}")
    eval_micro = args.eval_batch_size or micro
    lm = form.kind == "lm" or (synthetic and "text" in form.keys)
    unit, per_step = ("tokens", args.batch_size * args.block_size) if lm else ("samples", args.batch_size)

    # the optimizer, the schedule and, under torchrun, DistributedDataParallel
    optimizer, scheduler, trainer = _optimizer(args, model, ckpt, d)
    runner: torch.nn.Module = loop.LossOf(model)
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(runner, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    if args.compile:
        runner = torch.compile(runner)  # type: ignore[assignment]
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    # the run folder
    log = loop.MetricsLog(run_dir / "metrics.jsonl", d.main, {"synthetic": True} if synthetic else {})
    if d.main:
        _open_run(run_dir, _resolved(args, config, model, d.world, micro, str(d.device), synthetic), splits.state,
                  log, ckpt, trainer["step"], f"{d.world} x {d.device}{' with SYNTHETIC data' if synthetic else ''}")

    def run_eval(step: int) -> dict[str, float]:
        metrics, count = loop.evaluate(model, splits.val, eval_micro, d, autocast, data.target_count)
        log.write({"step": step, "split": "val", **metrics, "predictions": count})
        if d.main:
            shown = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"{'[synthetic data] ' if synthetic else ''}eval step {step} | {shown}", flush=True)
        return metrics

    step = trainer["step"]
    metrics = run_eval(0) if step == 0 else {}
    stream = loop.BatchStream(splits.train, micro, args.seed, d, args.workers, trainer["epoch"], trainer["position"])
    started, done_here, stop = time.perf_counter(), 0, False
    shown_at, shown_step = started, step
    while step < args.steps and not stop:
        lr = optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=d.device)
        for i in range(args.grad_accum):
            batch = loop.to_device(next(stream), d.device)
            last = i == args.grad_accum - 1
            with runner.no_sync() if d.enabled and not last else nullcontext():  # type: ignore[operator]
                with autocast:
                    loss = runner(batch)
                (loss / args.grad_accum).backward()
            loss_sum += loss.detach().float() / args.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip) if args.grad_clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step, done_here = step + 1, done_here + 1
        trainer["seen"] += args.batch_size
        loss_value = float(d.all_reduce_sum(loss_sum) / d.world)
        if not math.isfinite(loss_value):
            raise data.DataError(f"step {step}: the loss is {loss_value}; lower --lr or check the data")
        record = {"step": step, "split": "train", "loss": loss_value, "lr": lr, "seen": trainer["seen"]}
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        log.write(record)
        if d.main and (step % args.log_every == 0 or step == args.steps):
            now = time.perf_counter()
            rate = per_step * (step - shown_step) / max(now - shown_at, 1e-9)
            shown_at, shown_step = now, step
            print(loop.progress_line(step, args.steps, loss_value, lr, rate, unit, started, done_here, synthetic),
                  flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            metrics = run_eval(step)
            best = trainer["best_val_loss"]
            if best is None or metrics["loss"] < best:
                trainer["best_val_loss"], trainer["bad_evals"] = metrics["loss"], 0
            else:
                trainer["bad_evals"] += 1
            if args.early_stop and trainer["bad_evals"] >= args.early_stop:
                stop = True
                if d.main:
                    print(f"early stop at step {step}: {args.early_stop} evaluations without a lower loss", flush=True)
        if step % args.checkpoint_every == 0 or step == args.steps or stop:
            trainer.update(step=step, **stream.state())
            loop.save_checkpoint(run_dir / "last", model, optimizer, scheduler, dict(trainer), d)
    if d.main and metrics:
        seen = trainer["seen"] * (args.block_size if lm else 1)  # trainer counts samples (windows for text)
        _finish(run_dir, step, metrics, seen, unit, args.data, synthetic, started, d.world, d.device)
    if d.enabled:
        torch.distributed.destroy_process_group()
    return 0


def train_rl(args: argparse.Namespace, d: loop.Dist, run_dir: Path, ckpt: Path | None, model: torch.nn.Module,
             config: Any, kind: str) -> int:
    """A reinforcement-learning run (rl.py): rollouts of a Gymnasium environment, on the CPU, in one process."""
    if d.enabled:
        raise rl.RLError(f"{args.data}: RL trains in one process; run train.py without torchrun")
    rl.make_env(args.data, vars(model.config)).env.close()  # a bad environment fails before the run folder exists
    model.cpu()
    args.warmup = args.warmup if args.warmup is not None else 0
    args.checkpoint_every = args.checkpoint_every or args.eval_every
    optimizer, scheduler, trainer = _optimizer(args, model, ckpt, d)
    extra = loop.load_extra(ckpt) if ckpt is not None else None
    log = loop.MetricsLog(run_dir / "metrics.jsonl", True, {})
    _open_run(run_dir, _resolved(args, config, model, 1, args.batch_size, "cpu", False, rl=kind),
              {"kind": kind, "environment": args.data}, log, ckpt, trainer["step"], f"{args.data} ({kind[3:]})")

    def save(state: dict[str, Any], saved: dict[str, Any]) -> None:
        loop.save_checkpoint(run_dir / "last", model, optimizer, scheduler, state, d, extra=saved)

    started = time.perf_counter()
    metrics = rl.train(args, model, kind, trainer, optimizer, scheduler, log, extra, save)
    if metrics:
        _finish(run_dir, args.steps, metrics, trainer["seen"], "env steps", args.data, False, started, 1,
                torch.device("cpu"))
    return 0


def _optimizer(args: argparse.Namespace, model: torch.nn.Module, ckpt: Path | None,
               d: loop.Dist) -> tuple[torch.optim.Optimizer, Any, dict[str, Any]]:
    """AdamW, its warmup + cosine schedule and trainer.json's state: new, or restored from the checkpoint."""
    optimizer = torch.optim.AdamW(loop.param_groups(model, args.weight_decay), lr=args.lr,
                                  betas=(args.beta1, args.beta2), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: loop.lr_factor(s, args.warmup, args.steps, args.min_lr_ratio))
    trainer = loop.load_checkpoint(ckpt, model, optimizer, scheduler, d) if ckpt is not None else dict(NEW_TRAINER)
    return optimizer, scheduler, trainer


def _resolved(args: argparse.Namespace, config: Any, model: torch.nn.Module, world: int, micro: int, device: str,
              synthetic: bool, **extra: Any) -> dict[str, Any]:
    """config.json: every flag, the model's Config after --set, and what ran it."""
    return {"train": dict(vars(args)), "model": dataclasses.asdict(config), "model_class": type(model).__name__,
            "params": sum(p.numel() for p in model.parameters()), "world_size": world, "micro_batch": micro,
            "device": device, "torch": torch.__version__, "synthetic": synthetic, **extra}


def _open_run(run_dir: Path, resolved: dict[str, Any], data_state: dict[str, Any], log: loop.MetricsLog,
              ckpt: Path | None, step: int, on: str) -> None:
    """Write config.json and data.json, drop metrics.jsonl's lines after the checkpoint, say what starts."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(resolved, indent=1) + "\n")
    (run_dir / "data.json").write_text(json.dumps(data_state, indent=1) + "\n")
    log.truncate_after(step)
    print(f"{'resuming' if ckpt else 'training'} {resolved['model_class']} ({resolved['params']:,} parameters) "
          f"in {run_dir} on {on}", flush=True)


def _finish(run_dir: Path, step: int, metrics: dict[str, float], seen: int, unit: str, source: str, synthetic: bool,
            started: float, world: int, device: torch.device) -> None:
    """The last validation metrics: eval_val.json, and their entries in measurements.json."""
    final = {"split": "val", "step": step, "metrics": metrics, "seen": seen, "unit": unit, "data": source,
             "synthetic": synthetic, "wall_s": round(time.perf_counter() - started, 3)}
    (run_dir / "eval_val.json").write_text(json.dumps(final, indent=1) + "\n")
    loop.write_measurements(run_dir, final, world, device)


if __name__ == "__main__":
    sys.exit(main())
