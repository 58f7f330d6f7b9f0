"""Train the model of this folder's model.py on local data.

    python train.py --data corpus/ --steps 2000                      # one process
    torchrun --standalone --nproc_per_node=2 train.py --data corpus/  # DistributedDataParallel, same flags
    python train.py --data corpus/ --resume                          # continue the latest run after a kill

The defaults of the flags come from training.json beside model.py (the spec's `training { }` section) where it
has them; flags given on the command line override them.
Writes runs/<run>/: config.json (the resolved settings), data.json (the split and data statistics),
tokenizer.json (text), metrics.jsonl, last/ (the checkpoint) and eval_val.json. See docs/training.md.
Needs torch and safetensors, plus `tokenizers` for text and Pillow for images; not MetaGen.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

if __package__:
    from . import data, loop, rl, split_metrics
else:  # run as a script from the model's folder
    import data  # type: ignore[no-redef]
    import loop  # type: ignore[no-redef]
    import rl  # type: ignore[no-redef]
    import split_metrics  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent

RESUMABLE_CHANGES = {"steps", "epochs", "eval_every", "checkpoint_every", "log_every", "early_stop", "workers", "device", "data"}
LOCATIONS = {"model", "out", "run_name", "resume"}  # where things are now, never taken from the saved run
TRAINING_JSON = "training.json"  # beside model.py: the spec's training settings, as defaults of these flags
NOT_IN_TRAINING_JSON = LOCATIONS | {"help", "set"}
# lower bounds of numeric settings (inclusive unless the bound is in OPEN), for flags and training.json alike
AT_LEAST = {"steps": 1, "epochs": 1, "batch_size": 1, "grad_accum": 1, "lr": 0, "warmup": 0, "weight_decay": 0,
            "grad_clip": 0, "eval_every": 1, "log_every": 1, "early_stop": 0, "min_lr_ratio": 0, "momentum": 0,
            "ema_decay": 0, "beta1": 0, "beta2": 0, "workers": 0, "cfg_dropout": 0}
AT_MOST = {"ema_decay": 1, "beta1": 1, "beta2": 1, "min_lr_ratio": 1, "momentum": 1, "cfg_dropout": 1}
OPEN = {"ema_decay"}
NEW_TRAINER = {"step": 0, "epoch": 0, "position": 0, "seen": 0, "best_val_loss": None, "bad_evals": 0}  # trainer.json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the model of this folder on local data.")
    add = p.add_argument
    add("--data", help="a file or folder of training data, or `synthetic` (smoke tests only)")
    add("--model", default=str(HERE / "model.py"), help="the generated model.py (default: this folder's)")
    add("--steps", type=int, default=1000, help="optimizer steps")
    add("--epochs", type=int, default=None, help="train for N passes over the train split instead of --steps")
    add("--batch-size", type=int, default=32, help="global batch per optimizer step, all processes together")
    add("--grad-accum", type=int, default=1, help="micro-batches accumulated per step")
    add("--block-size", type=int, default=None, help="text: tokens per training window (default min(context, 256))")
    add("--optimizer", choices=loop.OPTIMIZERS, default="adamw", help="AdamW (decoupled decay), Adam or SGD")
    add("--lr", type=float, default=3e-4, help="peak learning rate")
    add("--schedule", choices=loop.SCHEDULES, default="cosine", help="after the warmup: cosine, linear or constant")
    add("--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of --lr")
    add("--warmup", type=int, default=None, help="linear warmup steps (default min(100, steps // 10))")
    add("--weight-decay", type=float, default=0.1, help="weight decay (not on norms, biases, embeddings)")
    add("--beta1", type=float, default=0.9, help="AdamW/Adam first moment decay")
    add("--beta2", type=float, default=0.95, help="AdamW/Adam second moment decay")
    add("--momentum", type=float, default=0.9, help="SGD momentum")
    add("--grad-clip", type=float, default=1.0, help="max global gradient norm; 0 turns clipping off")
    add("--precision", choices=loop.PRECISIONS, default="fp32",
        help="fp32, or bf16/fp16 autocast (fp16 with loss scaling)")
    add("--ema-decay", type=float, default=None, help="keep an EMA of the weights; evaluate and save it too")
    add("--cfg-dropout", type=float, default=0.0,
        help="diffusion: share of samples trained without their condition (classifier-free guidance)")
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
    add("--augment", type=_names, default=[], metavar="NAME[,NAME...]",
        help="images and point clouds: augmentations of the training split (images: horizontal_flip, "
             "vertical_flip, random_crop, random_resized_crop, color_jitter; point clouds: random_rotation, "
             "random_scale, jitter, point_dropout)")
    add("--device", default="auto", help="auto, cpu or cuda")
    add("--workers", type=int, default=0, help="DataLoader worker processes")
    add("--compile", action="store_true", help="torch.compile the model")
    add("--fsdp", action="store_true", help="under torchrun: shard the model with FSDP instead of DDP")
    add("--tensorboard", action="store_true", help="also write scalars to runs/<run>/tensorboard/")
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


def _names(text: str) -> list[str]:
    """A comma-separated flag value as a list of names (training.json gives a list, joined by commas)."""
    return [n.strip() for n in text.split(",") if n.strip()]


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


def _expected(action: argparse.Action) -> str:
    if action.choices is not None:
        return "one of " + ", ".join(map(str, action.choices))
    return "an integer" if action.type is int else "a number" if action.type is float else "a string"


def _spec_value(path: Path, key: str, value: Any, action: argparse.Action) -> Any:
    """A training.json value as the flag's own parser would take it, or a DataError naming the file and key."""
    shown = json.dumps(value)
    if action.nargs == 0:  # a store_true flag
        if not isinstance(value, bool):
            raise data.DataError(f"{path}: `{key}` is {shown}; expected true or false")
        return value
    if value is None and action.default is None:
        return None
    many = action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction)
    if isinstance(value, list) and not many:  # a list for a flag that takes one comma-separated value
        value = ",".join(map(str, value))
    out = []
    for item in value if many and isinstance(value, list) else [value]:
        if isinstance(item, bool) or not isinstance(item, (int, float, str)) or \
                (action.type in (int, float) and isinstance(item, str)) or (action.type is None and
                                                                         not isinstance(item, str)):
            raise data.DataError(f"{path}: `{key}` is {shown}; expected {_expected(action)}")
        try:
            v = action.type(str(item)) if callable(action.type) else item
        except (ValueError, TypeError, argparse.ArgumentTypeError):
            raise data.DataError(f"{path}: `{key}` is {shown}; expected {_expected(action)}") from None
        if action.choices is not None and v not in action.choices:
            raise data.DataError(f"{path}: `{key}` is {shown}; expected {_expected(action)}")
        out.append(v)
    return out if many else out[0]


def check_ranges(values: dict[str, Any], where: Any) -> None:
    """Numeric settings inside their bounds; `where(key)` names the flag or the training.json key."""
    for key, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        low, high = AT_LEAST.get(key), AT_MOST.get(key)
        bad = (not math.isfinite(v) or (low is not None and (v <= low if key in OPEN else v < low)) or
               (high is not None and (v >= high if key in OPEN else v > high)))
        if bad:
            lo = "" if low is None else f"{'>' if key in OPEN else '>='} {low}"
            hi = "" if high is None else f"{'<' if key in OPEN else '<='} {high}"
            raise data.DataError(f"{where(key)} is {v}; expected a number {' and '.join(x for x in (lo, hi) if x)}")


def spec_defaults(p: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """training.json (the compiled spec's training settings: {flag dest: value}) checked against the flags,
    or {} where there is none. Unknown keys and bad values are DataErrors naming the file."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise data.DataError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(doc, dict):
        raise data.DataError(f"{path}: expected a JSON object of train.py settings, got {type(doc).__name__}")
    actions = {a.dest: a for a in p._actions if a.option_strings and a.dest not in NOT_IN_TRAINING_JSON}
    out = {}
    for key, value in doc.items():
        action = actions.get(key)
        if action is None:
            near = difflib.get_close_matches(str(key), list(actions), n=1)
            hint = f"; did you mean `{near[0]}`?" if near else "; its keys are train.py's settings (train.py --help)"
            raise data.DataError(f"{path}: unknown key `{key}`{hint}")
        out[key] = _spec_value(path, key, value, action)
    if out.get("steps") is not None and out.get("epochs") is not None:
        raise data.DataError(f"{path}: both `steps` and `epochs`; expected one of them")
    check_ranges({k: doc[k] for k in out}, lambda k: f"{path}: `{k}`")  # the values as the file writes them
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser()
    try:
        spec = spec_defaults(p, Path(p.parse_known_args(argv)[0].model).resolve().parent / TRAINING_JSON)
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    p.set_defaults(**spec)
    args = p.parse_args(argv)
    if args.data is None and not args.resume:
        p.error("--data is required (a file or folder, or `synthetic`)")
    q = parser()  # the same flags without defaults: which ones this command line gives
    q.set_defaults(**dict.fromkeys(vars(args)))
    given = {k for k, v in vars(q.parse_args(argv)).items() if v is not None}
    try:
        check_ranges({k: getattr(args, k) for k in given}, lambda k: "--" + k.replace("_", "-"))
        return train(args, given, spec)
    except (data.DataError, rl.RLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def train(args: argparse.Namespace, given: set[str], spec: dict[str, Any] | None = None) -> int:
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
    if args.fsdp and not d.enabled:  # also a resumed FSDP run
        raise data.DataError("--fsdp shards the model across processes; run train.py under torchrun with "
                             "--nproc_per_node 2 or more")
    if {"steps", "epochs"} <= given:
        raise data.DataError("--steps and --epochs: give one of them")
    if "steps" in given:  # the command line's --steps wins over epochs from training.json or the saved run
        args.epochs = None

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
        return train_rl(args, d, run_dir, ckpt, model, config, rl_kind, spec)
    args.block_size = args.block_size or min(int(getattr(config, "context", 256)), 256)
    args.checkpoint_every = args.checkpoint_every or args.eval_every
    conditions = loop.condition_keys(model, form.keys)
    if args.cfg_dropout and not conditions:
        raise data.DataError(f"--cfg-dropout {args.cfg_dropout}: classifier-free guidance dropout is for a diffusion "
                             f"model with a condition input; this model's batches are {', '.join(form.keys)}")

    # the data: a seeded split, recorded in data.json so resume and evaluate.py see the same items
    state = json.loads((run_dir / "data.json").read_text()) if ckpt else None
    opts = data.DataOptions(args.data, args.seed, args.block_size, args.text_field, args.tokenizer, args.target,
                            args.features, augment=list(args.augment or []))
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
                             f"{args.batch_size}" + ("; a smaller --block-size makes more windows of the text" if form.kind == "lm" else "")
                             + "; lower --batch-size or give more data")
    eval_micro = args.eval_batch_size or micro
    lm = form.kind == "lm" or (synthetic and "text" in form.keys)
    unit, per_step = ("tokens", args.batch_size * args.block_size) if lm else ("samples", args.batch_size)
    stream = loop.BatchStream(splits.train, micro, args.seed, d, args.workers)
    if args.epochs is not None:  # --epochs: the steps of that many passes over the train split
        per_epoch = len(stream.batches(0)) // args.grad_accum
        if per_epoch == 0:
            raise data.DataError(f"{args.data}: the train split makes no step of --batch-size {args.batch_size}")
        args.steps = args.epochs * per_epoch
    args.warmup = args.warmup if args.warmup is not None else min(100, args.steps // 10)

    # the weights (a resumed run's), FSDP sharding, the EMA, the optimizer and schedule, and under torchrun DDP
    if ckpt is not None:
        loop.load_checkpoint(ckpt, model)  # the weights only: before sharding, and before the EMA copies them
    if args.fsdp:
        loop.shard(model)
    ema = loop.EMA(model, args.ema_decay) if args.ema_decay else None
    scaler = loop.grad_scaler(d.device.type, args.precision)
    optimizer, scheduler, trainer = _optimizer(args, model, ckpt, d, scaler, ema, weights=False)
    runner: torch.nn.Module = loop.LossOf(model)
    if d.enabled and not args.fsdp:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(runner, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    if args.compile:
        runner = torch.compile(runner)  # type: ignore[assignment]
    autocast = loop.autocast(d.device.type, args.precision)
    warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")  # fp16: a skipped first step

    # the run folder
    try:
        writer = loop.tensorboard_writer(run_dir / "tensorboard", d.main) if args.tensorboard else None
    except ImportError as e:
        raise data.DataError(str(e)) from None
    log = loop.MetricsLog(run_dir / "metrics.jsonl", d.main, {"synthetic": True} if synthetic else {}, writer)
    if d.main:
        _open_run(run_dir, _resolved(args, config, model, d.world, micro, str(d.device), synthetic, spec),
                  splits.state, log, ckpt, trainer["step"],
                  f"{d.world} x {d.device}{' with SYNTHETIC data' if synthetic else ''}")

    def run_eval(step: int) -> dict[str, float]:
        metrics, count = split_metrics.evaluate(model, splits.val, eval_micro, d, autocast, data.target_count,
                                                args.fsdp)
        record: dict[str, Any] = {"step": step, "split": "val", **metrics, "predictions": count}
        raw = ""
        if ema is not None:  # the averaged weights are the ones evaluated, early-stopped on and measured
            with ema.applied(model):
                averaged, count = split_metrics.evaluate(model, splits.val, eval_micro, d, autocast,
                                                         data.target_count, args.fsdp)
            raw = f" (EMA weights; raw weights: {', '.join(f'{k} {v:.4f}' for k, v in metrics.items())})"
            record = {"step": step, "split": "val", **averaged, "predictions": count, "weights": "ema",
                      **{f"raw_{k}": v for k, v in metrics.items()}}
            metrics = averaged
        log.write(record)
        if d.main:
            shown = " | ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            print(f"{'[synthetic data] ' if synthetic else ''}eval step {step} | {shown}{raw}", flush=True)
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
            batch = loop.drop_condition(loop.to_device(next(stream), d.device), conditions, args.cfg_dropout)
            last = i == args.grad_accum - 1
            if args.fsdp:  # reduce-scatter the gradients on the last micro-batch only, as DDP's no_sync
                model.set_requires_gradient_sync(last)
            with runner.no_sync() if d.enabled and not args.fsdp and not last else nullcontext():  # type: ignore[operator]
                with autocast:
                    loss = runner(batch)
                scaler.scale(loss / args.grad_accum).backward()
            loss_sum += loss.detach().float() / args.grad_accum
        grad_norm = None
        if args.grad_clip > 0:
            scaler.unscale_(optimizer)  # fp16: clip the true gradients, not the scaled ones
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        scaler.step(optimizer)  # fp16: skipped when a gradient overflowed; the scale then halves
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        step, done_here = step + 1, done_here + 1
        trainer["seen"] += args.batch_size
        loss_value = float(d.all_reduce_sum(loss_sum) / d.world)
        if not math.isfinite(loss_value):
            raise data.DataError(f"step {step}: the loss is {loss_value}; lower --lr or check the data")
        record = {"step": step, "split": "train", "loss": loss_value, "lr": lr, "seen": trainer["seen"]}
        if grad_norm is not None:
            norm = loop.scalar(grad_norm)
            record["grad_norm"] = norm if math.isfinite(norm) else None  # fp16 overflow: the step was skipped
        if scaler.is_enabled():
            record["loss_scale"] = scaler.get_scale()
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
            loop.save_checkpoint(run_dir / "last", model, optimizer, scheduler, dict(trainer), d, scaler=scaler,
                                 ema=ema)
    log.close()
    if d.main and metrics:
        seen = trainer["seen"] * (args.block_size if lm else 1)  # trainer counts samples (windows for text)
        _finish(run_dir, step, metrics, seen, unit, args.data, synthetic, started, d.world, d.device)
    if d.enabled:  # every process at the end before the group goes: a gloo process whose peer tore the group down
        d.barrier()  # first could abort ("terminate called without an active exception", seen under load)
        torch.distributed.destroy_process_group()
    return 0


def train_rl(args: argparse.Namespace, d: loop.Dist, run_dir: Path, ckpt: Path | None, model: torch.nn.Module,
             config: Any, kind: str, spec: dict[str, Any] | None = None) -> int:
    """A reinforcement-learning run (rl.py): rollouts of a Gymnasium environment, on the CPU, in one process."""
    if d.enabled:
        raise rl.RLError(f"{args.data}: RL trains in one process; run train.py without torchrun")
    for flag, used in (("--epochs", args.epochs is not None), ("--ema-decay", bool(args.ema_decay)),
                       ("--cfg-dropout", bool(args.cfg_dropout)),
                       (f"--precision {args.precision}", args.precision != "fp32"), ("--tensorboard", args.tensorboard)):
        if used:
            raise rl.RLError(f"{args.data}: {flag} is not supported for RL (rl.py trains in fp32 for --steps)")
    rl.make_env(args.data, vars(model.config)).env.close()  # a bad environment fails before the run folder exists
    model.cpu()
    args.warmup = args.warmup if args.warmup is not None else 0
    args.checkpoint_every = args.checkpoint_every or args.eval_every
    optimizer, scheduler, trainer = _optimizer(args, model, ckpt, d)
    extra = loop.load_extra(ckpt) if ckpt is not None else None
    log = loop.MetricsLog(run_dir / "metrics.jsonl", True, {})
    _open_run(run_dir, _resolved(args, config, model, 1, args.batch_size, "cpu", False, spec, rl=kind),
              {"kind": kind, "environment": args.data}, log, ckpt, trainer["step"], f"{args.data} ({kind[3:]})")

    def save(state: dict[str, Any], saved: dict[str, Any]) -> None:
        loop.save_checkpoint(run_dir / "last", model, optimizer, scheduler, state, d, extra=saved)

    started = time.perf_counter()
    metrics = rl.train(args, model, kind, trainer, optimizer, scheduler, log, extra, save)
    if metrics:
        _finish(run_dir, args.steps, metrics, trainer["seen"], "env steps", args.data, False, started, 1,
                torch.device("cpu"))
    return 0


def _optimizer(args: argparse.Namespace, model: torch.nn.Module, ckpt: Path | None, d: loop.Dist,
               scaler: torch.amp.GradScaler | None = None, ema: loop.EMA | None = None,
               weights: bool = True) -> tuple[torch.optim.Optimizer, Any, dict[str, Any]]:
    """--optimizer, its warmup + --schedule and trainer.json's state: new, or restored from the checkpoint (with
    the loss scale and the EMA; the weights too unless `weights=False`, where the caller loaded them)."""
    optimizer = loop.make_optimizer(args.optimizer, loop.param_groups(model, args.weight_decay), args.lr,
                                    (args.beta1, args.beta2), args.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: loop.lr_factor(s, args.warmup, args.steps, args.min_lr_ratio, args.schedule))
    if ckpt is None:
        return optimizer, scheduler, dict(NEW_TRAINER)
    trainer = loop.load_checkpoint(ckpt, model, optimizer, scheduler, d, scaler, ema, weights=weights)
    return optimizer, scheduler, trainer


def _resolved(args: argparse.Namespace, config: Any, model: torch.nn.Module, world: int, micro: int, device: str,
              synthetic: bool, spec: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """config.json: every flag, the model's Config after --set, what training.json set, and what ran it."""
    params = sum(p.numel() for p in model.parameters())  # whole counts, also of FSDP shards (DTensors)
    name = type(model).__name__.removeprefix("FSDP") if loop.is_sharded(model) else type(model).__name__
    return {"train": dict(vars(args)), "model": dataclasses.asdict(config), "model_class": name, "params": params, "world_size": world, "micro_batch": micro, "device": device,
            "torch": torch.__version__, "synthetic": synthetic, "training_json": spec or {}, **extra}


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
