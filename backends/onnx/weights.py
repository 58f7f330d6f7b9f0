"""Weights for the ONNX model: random initial values, the state_dict name map, and importing trained
weights (`metagenc import-weights MODEL_DIR WEIGHTS.pt`).

Initializers are named as the PyTorch state_dict keys and keep the PyTorch layout (Linear weights are
(out, in)), so a trained state_dict copies over tensor by tensor. Tied weights are one initializer that
two keys map to. BatchNorm's running statistics are initializers too; `num_batches_tracked` is training
state only and maps to null.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from metagen_backends.pytorch.writer import state_dict_key

from metagen_compiler.ir.graph import GraphIR
from metagen_compiler.primitives import PRIMITIVES

__all__ = [
    "EXTERNAL_DATA_THRESHOLD",
    "WeightImportError",
    "WeightSpec",
    "import_weights",
    "main",
    "name_map",
    "random_tensor",
    "save_model",
    "weight_specs",
]

# Above this many bytes of weights the model is written with an external data file: protobuf cannot
# serialise a message of 2 GiB or more, and the graph itself needs room beside the weights.
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2
DATA_SUFFIX = ".data"  # model.onnx -> model.onnx.data


@dataclass(frozen=True)
class WeightSpec:
    """One initializer: its name (a state_dict key), shape and how it starts."""

    name: str
    shape: tuple[int, ...]
    init: str  # normal | kaiming_fan_out | uniform | constant | log_arange | s4d_* | ones | zeros
    std: float = 0.0  # normal, kaiming_fan_out: the standard deviation; uniform: the bound; constant: the value

    @property
    def nbytes(self) -> int:
        return 4 * math.prod(self.shape)


def _init_of(prim: str, args: Mapping[str, Any], local: str, shape: tuple[int, ...]) -> tuple[str, float]:
    """The PyTorch backend's init_weights, per primitive and tensor (see backends/pytorch/codegen.py)."""
    if prim in ("layer_scale", "learned_log_std"):  # LayerScale and a policy's log std start at `init`
        return "constant", float(args["init"])
    if prim == "causal_conv1d":  # nn.Conv1d's own init: kaiming_uniform(a=sqrt(5)), bias U(+-1/sqrt(fan_in))
        return "uniform", 1.0 / math.sqrt(int(args["kernel"]))  # fan_in = 1 channel x kernel
    if prim == "selective_scan":  # S4D-real: A_log[:, n] = log(n + 1); D = 1
        return ("log_arange", 0.0) if local == "A_log" else ("ones", 0.0)
    if prim == "s4d":  # the S4 repository's S4D init: dt log-uniform in [1e-3, 1e-1], S4D-Lin A, complex normal C
        return {"log_dt": ("s4d_log_dt", 0.0), "C": ("normal", math.sqrt(0.5)), "log_A_real": ("s4d_log_a_real", 0.0),
                "A_imag": ("s4d_a_imag", 0.0), "D": ("normal", 1.0)}[local]
    if prim == "moe":
        return "normal", 0.02
    if prim == "object_queries":  # DETR's nn.Embedding: N(0, 1)
        return "normal", 1.0
    if prim in ("gcn_conv", "gat_conv"):  # Glorot uniform (nn.init.xavier_uniform_), bias zeros
        return ("zeros", 0.0) if local == "bias" else ("uniform", math.sqrt(6.0 / (shape[-2] + shape[-1])))
    if prim in ("linear", "conv2d", "conv1d", "conv3d", "conv_transpose2d") and local == "bias":
        return "zeros", 0.0
    if prim in ("conv2d", "conv1d", "conv3d", "conv_transpose2d"):  # nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu")
        fan_out = shape[0] * math.prod(shape[2:])
        return "kaiming_fan_out", math.sqrt(2.0) / math.sqrt(fan_out)
    if prim in ("linear", "embedding", "pos_embedding", "cls_token", "type_embedding", "codebook_embedding",
                "codebook_heads"):
        return "normal", 0.02
    if prim == "contrastive_logits":  # the learned temperature starts at its `init`
        return "constant", float(args["init"])
    if prim in ("lstm", "gru"):  # nn.LSTM / nn.GRU reset_parameters: U(-1/sqrt(hidden), 1/sqrt(hidden))
        return "uniform", 1.0 / math.sqrt(args["hidden"])
    if local in ("bias", "running_mean"):
        return "zeros", 0.0
    return "ones", 0.0  # norm weights, running_var


def weight_specs(ir: GraphIR) -> tuple[list[WeightSpec], dict[str, str | None]]:
    """The model's initializers (ties resolved to their source) and the state_dict name map."""
    ties = dict(ir.ties)
    specs: dict[str, WeightSpec] = {}
    names: dict[str, str | None] = {}
    for path, info in sorted(ir.modules.items()):
        if info.kind != "primitive":
            continue
        prim = PRIMITIVES[info.target]
        tensors = {**prim.weights(info.args), **prim.buffers(info.args)}
        for local, shape in tensors.items():
            graph_key = f"{path}.{local}"
            key = state_dict_key(graph_key)
            if local == "num_batches_tracked":
                names[key] = None  # training state; inference does not read it
                continue
            source = state_dict_key(ties.get(graph_key, graph_key))
            names[key] = source
            if source == key:
                init, std = _init_of(info.target, info.args, local, tuple(shape))
                specs[key] = WeightSpec(key, tuple(shape), init, std)
    return list(specs.values()), names


def name_map(ir: GraphIR) -> dict[str, str | None]:
    return weight_specs(ir)[1]


def random_tensor(spec: WeightSpec, seed: int) -> np.ndarray:
    """Initial values with the PyTorch backend's distributions; one stream per tensor, from (seed, name)."""
    if spec.init == "zeros":
        return np.zeros(spec.shape, np.float32)
    if spec.init == "ones":
        return np.ones(spec.shape, np.float32)
    if spec.init == "constant":
        return np.full(spec.shape, spec.std, np.float32)
    if spec.init == "s4d_log_a_real":  # A's real part -1/2
        return np.full(spec.shape, np.log(0.5), np.float32)
    if spec.init == "s4d_a_imag":  # A's imaginary part pi n, per channel
        return np.broadcast_to(np.pi * np.arange(spec.shape[-1], dtype=np.float32), spec.shape).astype(np.float32)
    if spec.init == "log_arange":  # one row log(1), log(2), ..., log(n) per channel
        return np.broadcast_to(np.log(np.arange(1, spec.shape[-1] + 1, dtype=np.float32)), spec.shape).copy()
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode("utf-8"))])
    if spec.init == "uniform":
        return rng.uniform(-spec.std, spec.std, spec.shape).astype(np.float32)
    if spec.init == "s4d_log_dt":
        return rng.uniform(np.log(1e-3), np.log(1e-1), spec.shape).astype(np.float32)
    out = rng.standard_normal(spec.shape, dtype=np.float32)
    out *= np.float32(spec.std)
    return out


# ------------------------------------------------------------------ import trained weights
class WeightImportError(Exception):
    """Trained weights that do not fit the model (missing keys, wrong shapes)."""


def _as_array(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):  # a torch tensor: any float dtype (bf16 too) -> float32
        return t.detach().to("cpu").float().numpy()
    return np.asarray(t, dtype=np.float32)


def import_weights(model_dir: str | Path, state_dict: Mapping[str, Any], out: str | Path | None = None,
                   *, strict: bool = True, model_file: str = "model.onnx") -> Path:
    """Write an ONNX file with the model `model_file` of `model_dir` (beside onnx_names.json) and the weights
    of `state_dict` (PyTorch tensors or arrays). Works for models emitted with any --weights mode (weights as
    graph inputs become initializers). Returns the path written (default MODEL_DIR/<model>_trained.onnx)."""
    import onnx_ir as ir

    model_dir = Path(model_dir)
    names: dict[str, str | None] = json.loads((model_dir / "onnx_names.json").read_text())["state_dict"]
    model = ir.load(model_dir / model_file)
    graph = model.graph
    targets = {v.name: v for v in graph.initializers.values()}
    wanted = {n for n in names.values() if n is not None}
    weight_inputs = {v.name: v for v in graph.inputs if v.name in wanted}
    missing = sorted(k for k, n in names.items() if n is not None and k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in names)
    problems = [f"missing key {k}" for k in missing] + ([f"unexpected key {k}" for k in unexpected] if strict else [])
    done: dict[str, str] = {}
    for key, init_name in names.items():
        if init_name is None or key not in state_dict:
            continue
        arr = np.asarray(_as_array(state_dict[key]), order="C")  # (ascontiguousarray would make a 0-d tensor 1-d)
        value = targets.get(init_name) or weight_inputs.get(init_name)
        if value is None:
            problems.append(f"{key}: no initializer or input `{init_name}` in {model_file}")
            continue
        want = tuple(d if isinstance(d, int) else -1 for d in value.shape or ())
        if tuple(arr.shape) != want:
            problems.append(f"{key}: shape {tuple(arr.shape)} does not fit `{init_name}` {want}")
            continue
        if init_name in done:  # a tied weight: both keys must carry the same tensor
            if not np.array_equal(arr, _as_array(state_dict[done[init_name]])):
                problems.append(f"{key} and {done[init_name]} are tied in the model but differ in the state_dict")
            continue
        done[init_name] = key
        value.const_value = ir.tensor(arr, name=init_name)
        if init_name in weight_inputs:  # emitted with --weights none: the input becomes an initializer
            graph.inputs.remove(value)
            graph.register_initializer(value)
    if problems:
        more = f"; ... {len(problems) - 20} more" if len(problems) > 20 else ""
        raise WeightImportError("; ".join(problems[:20]) + more)
    target = Path(out) if out is not None else model_dir / model_file.replace(".onnx", "_trained.onnx")
    save_model(model, target)
    return target


def save_model(model: Any, path: Path, *, external: bool | None = None) -> None:
    """Save and check by path; weights go to `<name>.data` beside it when above the threshold."""
    import onnx
    import onnx_ir as ir

    total = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
    if external is None:
        external = total > EXTERNAL_DATA_THRESHOLD
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + DATA_SUFFIX)
    if external:
        ir.save(model, path, external_data=data.name)
    else:
        ir.save(model, path)
        data.unlink(missing_ok=True)
    onnx.checker.check_model(str(path), full_check=True)


def _load_state_dict(path: Path) -> Mapping[str, Any]:
    """A NumPy .npz, or what the PyTorch backend's weights.py reads: safetensors, a torch pickle (.pt, .bin, .pth;
    weights_only), a sharded checkpoint's *.index.json, or a folder holding one of them."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from metagen_backends.pytorch.weights.runtime import WeightLayoutError, read_checkpoint

    try:
        return read_checkpoint(path)
    except WeightLayoutError as e:
        raise WeightImportError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """`metagenc import-weights MODEL_DIR WEIGHTS [-o OUT]`: put trained PyTorch weights into the ONNX model."""
    p = argparse.ArgumentParser(
        prog="metagenc import-weights",
        description="Write an ONNX file with trained weights: MODEL_DIR is a folder written with --backend onnx "
                    "(model.onnx, onnx_names.json); WEIGHTS the model's state_dict: a PyTorch pickle (.pt, .bin, .pth, "
                    "torch.save(model.state_dict())), safetensors, a sharded checkpoint's *.index.json, a folder "
                    "holding one of them, or a NumPy .npz with the same keys.",
        epilog="Exit codes: 0 ok, 1 the weights do not fit the model, 2 usage.")
    p.add_argument("model_dir", type=Path)
    p.add_argument("weights", type=Path)
    p.add_argument("-o", "--output", type=Path, help="the ONNX file to write (default: MODEL_DIR/model_trained.onnx)")
    p.add_argument("--model", default="model.onnx",
                   help="which model of the folder: model.onnx (default) or model_with_past.onnx")
    p.add_argument("--non-strict", action="store_true", help="ignore state_dict keys the model does not have")
    args = p.parse_args(argv)
    for f in (args.model_dir / args.model, args.model_dir / "onnx_names.json", args.weights):
        if not f.exists():
            print(f"metagenc import-weights: error: {f} does not exist", file=sys.stderr)
            return 2
    try:
        target = import_weights(args.model_dir, _load_state_dict(args.weights), args.output,
                                strict=not args.non_strict, model_file=args.model)
    except WeightImportError as e:
        print(f"metagenc import-weights: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    return 0

