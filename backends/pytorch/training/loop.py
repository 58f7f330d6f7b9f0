"""The pieces of train.py's loop: model loading, AdamW groups, the schedule, batches, evaluation, checkpoints.

Copied verbatim next to a generated model.py; depends on torch and safetensors only. No MetaGen import.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

__all__ = [
    "EMA",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "BatchStream",
    "Dist",
    "LossOf",
    "MetricsLog",
    "aggregate",
    "autocast",
    "condition_keys",
    "drop_condition",
    "eval_batches",
    "evaluate",
    "find_checkpoint",
    "grad_scaler",
    "is_sharded",
    "load_checkpoint",
    "load_ema_weights",
    "load_extra",
    "load_model_module",
    "lr_factor",
    "make_optimizer",
    "param_groups",
    "parse_overrides",
    "pick_device",
    "progress_line",
    "save_checkpoint",
    "scalar",
    "setup_distributed",
    "shard",
    "tensorboard_writer",
    "to_device",
    "write_measurements",
]

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


# ---------------------------------------------------------------------------------------- the model


def load_model_module(path: Path) -> types.ModuleType:
    """Import a generated model.py by path (it needs torch only)."""
    spec = importlib.util.spec_from_file_location("model", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["model"] = mod
    spec.loader.exec_module(mod)
    return mod


def _field_kind(f: dataclasses.Field) -> type:
    """The value type of a Config field: its default's type, else its annotation without None."""
    if f.default is not None and f.default is not dataclasses.MISSING:
        return type(f.default)
    names = str(f.type).replace("typing.", "").replace("Optional[", "").replace("]", "")
    for part in names.split("|"):
        kind = {"int": int, "float": float, "bool": bool, "str": str, "tuple": tuple}.get(part.strip().split("[")[0])
        if kind is not None:
            return kind
    for arg in getattr(f.type, "__args__", ()):
        if arg is not type(None):
            return arg
    return str


def parse_overrides(config_cls: type, items: list[str]) -> dict[str, Any]:
    """`NAME=VALUE` strings -> Config field values, parsed by the field's type (`none` for an optional field)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or name not in fields:
            raise ValueError(f"--set {item}: expected NAME=VALUE with NAME one of {', '.join(fields)}")
        kind = _field_kind(fields[name])
        try:
            if text.lower() == "none" and fields[name].default is None:
                out[name] = None
            elif kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                out[name] = text.lower() in ("true", "1")
            elif kind is tuple:
                out[name] = tuple(int(v) for v in text.split(",") if v.strip())
            elif kind in (int, float):
                out[name] = kind(text)
            else:
                out[name] = text
        except ValueError:
            raise ValueError(f"--set {item}: `{text}` is not a valid {kind.__name__} for {name}") from None
    return out


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices and kernels; none on biases, norms, embeddings, 1-D tensors."""
    skip: set[int] = set()
    for module in model.modules():
        if isinstance(module, (*NORMS, nn.Embedding)) or "Embedding" in type(module).__name__:
            skip.update(id(p) for p in module.parameters(recurse=False))
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():  # shared (tied) tensors appear once
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or id(p) in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float, betas: tuple[float, float],
                   momentum: float) -> torch.optim.Optimizer:
    """`adamw`: decoupled weight decay; `adam`: Adam with the groups' decay as L2 in the gradient; `sgd`: SGD with
    heavy-ball `momentum` and L2 decay. The groups (param_groups) decide which tensors decay in each case."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=1e-8)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, warmup: int, total: int, min_ratio: float, schedule: str = "cosine") -> float:
    """Linear warmup to 1 over `warmup` steps, then down to `min_ratio` at `total`: cosine, linear, or
    `constant` (stays at 1)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if total <= warmup or schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def autocast(device_type: str, precision: str) -> Any:
    """The autocast context of --precision: bf16 or fp16 mixed precision, or none for fp32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    return torch.autocast(device_type, dtype=dtype, enabled=precision != "fp32")


def grad_scaler(device_type: str, precision: str) -> torch.amp.GradScaler:
    """fp16 needs loss scaling (torch.amp.GradScaler); disabled, it passes losses and steps through unchanged."""
    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")


def scalar(t: torch.Tensor) -> float:
    """A float from a tensor, or from a DTensor (an FSDP gradient norm) after gathering it."""
    full = getattr(t, "full_tensor", None)
    return float(full() if full is not None else t)


# ------------------------------------------------------------------------------- classifier-free guidance

DENOISED = ("image", "video", "latent", "latents", "audio")  # what a diffusion model's loss noises


def condition_keys(model: nn.Module, keys: tuple[str, ...]) -> list[str]:
    """The inputs that condition a diffusion model (its batch keys but the denoised input and the timestep);
    [] for a model that is not a diffusion model (no `alphas_cumprod` buffer) or has no condition."""
    if not hasattr(model, "alphas_cumprod"):
        return []
    return [k for k in keys if k not in DENOISED and k != "timestep"]


def drop_condition(batch: dict[str, torch.Tensor], keys: list[str], p: float) -> dict[str, torch.Tensor]:
    """Classifier-free guidance dropout: each sample's condition inputs are, with probability `p`, replaced by
    zeros, the unconditional input that the model's generate() pairs them with (its default `uncond`). The draw
    uses torch's global generator, seeded by --seed and saved in the checkpoint."""
    if not keys or p <= 0:
        return batch
    drop = torch.rand(batch[keys[0]].shape[0]) < p
    out = dict(batch)
    for k in keys:
        t = batch[k]
        mask = drop.to(t.device).view(-1, *([1] * (t.dim() - 1)))
        out[k] = torch.where(mask, torch.zeros_like(t), t)
    return out


# ---------------------------------------------------------------------------------------------- EMA


def _float_state(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The tensors an EMA averages: every parameter (a tied one once) and every floating-point buffer; under FSDP
    the process's shards (a forward outside training, evaluation, can leave the root's weights gathered)."""
    reshard(model)
    out: list[tuple[str, torch.Tensor]] = list(model.named_parameters())
    out += [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    return out


class EMA:
    """Exponential moving average of the weights, updated after every optimizer step:
    shadow = d * shadow + (1 - d) * weight with d = min(decay, (1 + n) / (10 + n)) at the n-th update, so the
    first steps are not tied to the initial weights. Also averages float buffers (BatchNorm statistics).
    Under FSDP the shadows are the process's shards (DTensors), like the weights they follow."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        with torch.no_grad():
            self.shadow = {n: t.detach().clone() for n, t in _float_state(model)}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for n, t in _float_state(model):
            self.shadow[n].lerp_(t.detach(), 1.0 - d)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model with the averaged weights inside the block, its own weights restored (exactly) after it."""
        state = _float_state(model)
        with torch.no_grad():
            backup = [t.detach().clone() for _, t in state]
            for n, t in state:
                t.copy_(self.shadow[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, t), b in zip(state, backup):
                    t.copy_(b)

    def full_state(self) -> dict[str, torch.Tensor]:
        """{name: whole tensor on the CPU}; under FSDP every process must call it (it gathers the shards)."""
        out = {}
        for n, s in self.shadow.items():
            full = getattr(s, "full_tensor", None)
            out[n] = (full() if full is not None else s).detach().cpu().contiguous()
        return out

    @torch.no_grad()
    def load(self, path: Path, updates: int) -> None:
        from safetensors.torch import load_file

        saved = load_file(str(path))
        if set(saved) != set(self.shadow):
            raise ValueError(f"{path}: the averaged weights do not match the model's tensors")
        for n, s in self.shadow.items():
            t = saved[n]
            if hasattr(s, "device_mesh"):  # an FSDP shard: take this process's part of the whole tensor
                from torch.distributed.tensor import distribute_tensor

                t = distribute_tensor(t.to(s.device_mesh.device_type), s.device_mesh, s.placements)  # type: ignore[attr-defined]
            s.copy_(t)
        self.updates = updates


def load_ema_weights(folder: Path, model: nn.Module) -> bool:
    """Put a checkpoint's averaged weights (ema.safetensors) into `model`; False when it has none."""
    from safetensors.torch import load_file

    path = folder / "ema.safetensors"
    if not path.is_file():
        return False
    saved = load_file(str(path))
    with torch.no_grad():
        for n, t in _float_state(model):
            if n not in saved:
                raise ValueError(f"{path}: no averaged tensor `{n}`")
            t.copy_(saved[n])
    return True


# -------------------------------------------------------------------------------------------- FSDP


def shard(model: nn.Module) -> nn.Module:
    """FSDP (torch.distributed.fsdp.fully_shard): each block of every nn.ModuleList is its own unit, innermost
    first, then the whole model; the parameters become the process's shards (DTensors). Needs a process group."""
    from torch.distributed.fsdp import fully_shard

    blocks = [b for m in model.modules() if isinstance(m, nn.ModuleList) for b in m
              if any(True for _ in b.parameters())]
    for block in reversed(blocks):  # modules() is outer-first: reversed shards inner units before their parents
        fully_shard(block)
    fully_shard(model)
    return model


def reshard(model: nn.Module) -> None:
    """Back to shards: FSDP's forward without a backward (evaluation) may leave a unit's weights gathered."""
    for m in model.modules():
        if is_sharded(m):
            m.reshard()  # type: ignore[operator]


def is_sharded(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return False
    return isinstance(model, FSDPModule)


def _full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A sharded model's whole weights on rank 0 (every process must call this), one name per tied tensor."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    keep = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {k: v.contiguous() for k, v in sd.items() if k in keep and isinstance(v, torch.Tensor)}


class LossOf(nn.Module):
    """forward(batch) = model.loss(batch), so DistributedDataParallel sees the loss as a forward call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model: Any = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch)


# -------------------------------------------------------------------------------------- distributed


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


def pick_device(device: str) -> str:
    """--device: `auto` is cuda when there is a GPU, else cpu; anything else as given."""
    return device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def setup_distributed(device: str) -> Dist:
    """One process, or one of torchrun's (RANK/WORLD_SIZE set): gloo on CPU, NCCL on CUDA."""
    want = pick_device(device)
    if "RANK" not in os.environ:
        return Dist(device=torch.device(want))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want.startswith("cuda"):
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return Dist(rank, world, local, torch.device("cuda", local))
    dist.init_process_group("gloo")
    return Dist(rank, world, local, torch.device("cpu"))


# ------------------------------------------------------------------------------------------ batches


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class BatchStream:
    """Training micro-batches forever, epoch after epoch, in a seeded order shared by all processes.

    Each epoch is DistributedSampler's permutation (seed + epoch), cut into micro-batches per process; with
    W processes of micro-batch b, process r gets items r, r+W, ... so the W batches of one step together
    are the same items one process would take with micro-batch W*b. `state()` is (epoch, micro-batches
    consumed), which a checkpoint stores so a resumed run continues at the same item."""

    def __init__(self, dataset: Dataset, micro: int, seed: int, d: Dist, workers: int = 0,
                 epoch: int = 0, position: int = 0):
        self.dataset, self.micro, self.seed, self.d, self.workers = dataset, micro, seed, d, workers
        self.epoch, self.position = epoch, position
        self._it: Iterator[dict[str, torch.Tensor]] | None = None

    def batches(self, epoch: int) -> list[list[int]]:
        sampler: DistributedSampler[int] = DistributedSampler(self.dataset, num_replicas=self.d.world, rank=self.d.rank, shuffle=True,
                                     seed=self.seed, drop_last=True)
        sampler.set_epoch(epoch)
        idx = list(sampler)
        return [idx[i : i + self.micro] for i in range(0, len(idx) - self.micro + 1, self.micro)]

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        while True:
            if self._it is None:
                plan = self.batches(self.epoch)
                if not plan:
                    raise ValueError(f"{len(self.dataset)} training items make no micro-batch of {self.micro}")  # type: ignore[arg-type]
                # its own generator: a DataLoader iterator otherwise draws its worker seed from the global RNG,
                # and a resumed run, which starts an iterator mid-epoch, would then see other dropout masks
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
                loader = DataLoader(self.dataset, batch_sampler=plan[self.position :], num_workers=self.workers,
                                    collate_fn=getattr(self.dataset, "collate", default_collate), generator=g)
                self._it = iter(loader)
            try:
                batch = next(self._it)
            except StopIteration:
                self.epoch, self.position, self._it = self.epoch + 1, 0, None
                continue
            self.position += 1
            return batch

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


def eval_batches(dataset: Dataset, micro: int) -> list[list[int]]:
    """Every item once, in order; a shorter last text window (TokenWindows.tail) gets a batch of its own."""
    n = len(dataset)  # type: ignore[arg-type]
    full = n - 1 if getattr(dataset, "tail", False) else n
    out = [list(range(i, min(i + micro, full))) for i in range(0, full, micro)]
    if full < n:
        out.append([n - 1])
    return out


# ------------------------------------------------------------------------------------------- metrics


def _to_sum(name: str, value: float) -> float:
    """Per-batch means become sums over predictions: perplexity via its log, rmse via its square."""
    if name == "perplexity":
        return math.log(value)
    if name == "rmse":
        return value * value
    return value


def _from_mean(name: str, value: float) -> float:
    if name == "perplexity":
        return math.exp(value)
    if name == "rmse":
        return math.sqrt(value)
    return value


def aggregate(sums: dict[str, float], count: float) -> dict[str, float]:
    """Split-level metrics from sums of per-batch means weighted by the batch's prediction count.

    The model's metrics are means over a batch's predictions (tokens, samples, values), so the weighted sum
    over all batches divided by all predictions is the split's mean: perplexity = exp(total NLL / tokens),
    accuracy = correct / samples, rmse = sqrt(total squared error / values)."""
    return {k: _from_mean(k, v / count) for k, v in sums.items()}


@torch.no_grad()
def evaluate(model: Any, dataset: Dataset, micro: int, d: Dist, autocast: Any = None,
             count_of: Any = None, lockstep: bool = False) -> tuple[dict[str, float], int]:
    """The task's metrics and the loss over a whole split, the batches shared out across processes.

    `lockstep` (FSDP, whose forward is a collective): every process runs the same number of batches, the
    ones short of a batch repeating their first with weight 0."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    plan = eval_batches(dataset, micro)
    mine = [(idx, True) for idx in plan[d.rank :: d.world]]
    if lockstep:
        mine += [(plan[0], False)] * (-(-len(plan) // d.world) - len(mine))
    for idx, counted in mine:
        batch = to_device(getattr(dataset, "collate", default_collate)([dataset[i] for i in idx]), d.device)
        n = (count_of(batch) if count_of else len(idx)) if counted else 0
        with autocast or nullcontext():
            values = {"loss": model.loss(batch), **model.metrics(batch)}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + _to_sum(k, float(v)) * n
        count += n
    if d.enabled:
        keys = sorted(sums) if sums else []
        t = torch.tensor([sums.get(k, 0.0) for k in keys] + [float(count)], dtype=torch.float64)
        d.all_reduce_sum(t)
        sums, count = dict(zip(keys, t[:-1].tolist())), int(t[-1].item())
    if lockstep:
        reshard(model)
    model.train(was_training)
    return aggregate(sums, max(count, 1)), count


# ---------------------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    trainer: dict[str, Any], d: Dist, extra: dict[str, Any] | None = None,
                    scaler: torch.amp.GradScaler | None = None, ema: EMA | None = None) -> None:
    """Write `folder` (runs/<run>/last) atomically: weights (safetensors), optimizer, scheduler, RNG of every
    process, `trainer.json` (step, data position, early-stopping state), `extra` (extra.pt: an RL replay buffer
    and generator) when given, the fp16 loss scale (scaler.pt) and the averaged weights (ema.safetensors) when
    used. A sharded (FSDP) model and its optimizer are gathered whole, so the files are those of one process.
    A kill at any moment leaves the previous checkpoint or the new one, never a mix."""
    from safetensors.torch import save_file, save_model

    sharded = is_sharded(model)
    weights = _full_model_state(model) if sharded else None  # collectives: every process takes part
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        opt_state = get_optimizer_state_dict(model, optimizer,
                                             options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        opt_state = optimizer.state_dict()
    averaged = ema.full_state() if ema is not None else None
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    if d.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    d.barrier()
    torch.save(_rng_state(), tmp / f"rng_rank{d.rank}.pt")
    d.barrier()
    if d.main:
        if weights is not None:
            save_file(weights, str(tmp / "model.safetensors"))
        else:
            save_model(model, str(tmp / "model.safetensors"))
        torch.save(opt_state, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if extra is not None:
            torch.save(extra, tmp / "extra.pt")
        if scaler is not None and scaler.is_enabled():
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        if averaged is not None:
            save_file(averaged, str(tmp / "ema.safetensors"))
        (tmp / "trainer.json").write_text(json.dumps(trainer, indent=1) + "\n")
        _fsync_dir(tmp)
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    d.barrier()


def _fsync_dir(folder: Path) -> None:
    for p in folder.iterdir():
        with p.open("rb") as f:
            os.fsync(f.fileno())


def find_checkpoint(folder: Path) -> Path | None:
    """`last`, or `last.old` when a kill came between the two renames of save_checkpoint."""
    for p in (folder, folder.with_name(folder.name + ".old")):
        if (p / "trainer.json").is_file():
            return p
    return None


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, d: Dist | None = None, scaler: torch.amp.GradScaler | None = None,
                    ema: EMA | None = None, weights: bool = True) -> dict[str, Any]:
    """Restore what save_checkpoint wrote; returns trainer.json. `weights=False` leaves the model as it is (an
    FSDP run loads the weights before sharding, the optimizer after). A sharded model's optimizer takes the
    whole state every process reads."""
    from safetensors.torch import load_model

    if weights:
        load_model(model, folder / "model.safetensors", device=str(next(model.parameters()).device))
    if optimizer is not None:
        state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False)
        if is_sharded(model):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state)
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    trainer = json.loads((folder / "trainer.json").read_text())
    if scaler is not None and scaler.is_enabled() and (folder / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=False))
    if ema is not None and (folder / "ema.safetensors").is_file():  # else it starts from the loaded weights
        ema.load(folder / "ema.safetensors", trainer["step"])
    if d is not None:
        rng = folder / f"rng_rank{d.rank}.pt"
        if rng.is_file():
            _set_rng_state(torch.load(rng, weights_only=False))
    return trainer


def load_extra(folder: Path) -> dict[str, Any] | None:
    """The `extra` that save_checkpoint stored (extra.pt), or None."""
    path = folder / "extra.pt"
    return torch.load(path, weights_only=False) if path.is_file() else None


# ---------------------------------------------------------------------------------------------- output


def tensorboard_writer(folder: Path, main: bool = True) -> Any:
    """torch.utils.tensorboard's SummaryWriter on `folder` (None on processes other than rank 0); ImportError
    with a one-line message, on every process, when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("--tensorboard needs the tensorboard package (pip install tensorboard); "
                          "metrics.jsonl has the same numbers") from None
    return SummaryWriter(log_dir=str(folder)) if main else None


class MetricsLog:
    """runs/<run>/metrics.jsonl: one JSON object per line (train steps and evaluations); with a TensorBoard
    `writer`, every number of a record also becomes a scalar `<split>/<name>` at its step."""

    def __init__(self, path: Path, enabled: bool, extra: dict[str, Any], writer: Any = None):
        self.path, self.enabled, self.extra, self.writer = path, enabled, extra, writer

    def truncate_after(self, step: int) -> None:
        """Drop records after `step` (those a killed run wrote past its last checkpoint) and torn lines."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("step", 0) <= step:
                keep.append(line)
        self.path.write_text("".join(k + "\n" for k in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps({**record, **self.extra}) + "\n")
            if self.writer is not None:
                split, step = record.get("split", "train"), int(record.get("step", 0))
                for k, v in record.items():
                    if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool):
                        self.writer.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _clock(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(step: int, steps: int, loss: float, lr: float, rate: float, unit: str, started: float,
                  done_here: int, synthetic: bool) -> str:
    """`step 120/2000 | loss 3.2145 | lr 6.00e-04 | 12,345 tokens/s | eta 0:01:05`."""
    elapsed = time.perf_counter() - started
    eta = elapsed / max(1, done_here) * (steps - step)
    tag = "[synthetic data] " if synthetic else ""
    w = len(str(steps))
    return (f"{tag}step {step:>{w}}/{steps} | loss {loss:.4f} | lr {lr:.2e} | {rate:,.0f} {unit}/s"
            f" | eta {_clock(eta)}")


def hardware(world: int, device: torch.device) -> dict[str, Any]:
    """What ran the measurement: device kind and name, process count, CPU, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out: dict[str, Any] = {"device": device.type, "processes": world, "cpu": cpu, "cpu_count": os.cpu_count(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def write_measurements(run_dir: Path, result: dict[str, Any], world: int, device: torch.device) -> None:
    """Add one evaluation to runs/<run>/measurements.json (docs/training.md): one entry per metric, replacing
    the entries of the same split and checkpoint step. `result` is what eval_<split>.json holds."""
    path = run_dir / "measurements.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        doc = {"format": 1, "measurements": []}
    split, step = result["split"], result["step"]
    kept = [m for m in doc["measurements"] if (m["split"], m["steps"]) != (split, step)]
    for metric, value in result["metrics"].items():
        kept.append({"metric": metric, "value": value, "split": split, "steps": step, "seen": result.get("seen"),
                     "unit": result.get("unit", "samples"), "wall_s": result.get("wall_s"), "data": result.get("data"),
                     "synthetic": bool(result.get("synthetic")), "hardware": hardware(world, device)})
    doc["measurements"] = kept
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
