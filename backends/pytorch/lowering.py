"""Primitive -> PyTorch. Weighted primitives become nn.Module constructors; the others become
functional expressions in `forward`. Templates take Python expression strings for the arguments."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["FUNCTIONAL", "FUNCTIONAL_IN_PLACE", "HELPERS", "LEARNED_HELPERS", "MODULES", "MODULE_CALL", "helper_deps"]

# weighted primitives: constructor text. {name} are argument expressions; `?name` marks an
# argument left out when it equals the primitive's default.
MODULES: dict[str, str] = {
    "linear": "nn.Linear({in_features}, {out_features}?, bias={bias})",
    "conv2d": "nn.Conv2d({in_channels}, {out_channels}, {kernel}?, stride={stride}?, padding={padding}?, groups={groups}?, bias={bias})",
    "conv3d": "nn.Conv3d({in_channels}, {out_channels}, {kernel}?, stride={stride}?, padding={padding}?, groups={groups}?, bias={bias})",
    "batchnorm": "nn.BatchNorm2d({channels}?, eps={eps}?, momentum={momentum})",
    "layernorm": "nn.LayerNorm({dim}?, eps={eps}?, bias={bias})",
    "rmsnorm": "nn.RMSNorm({dim}, eps={eps})",
    "embedding": "nn.Embedding({num}, {dim})",
    "pos_embedding": "PositionEmbedding({length}, {dim})",
    "cls_token": "ClassToken({dim})",
    "type_embedding": "TokenTypeEmbedding({num}, {dim})",
    "contrastive_logits": "ContrastiveLogits({init})",
    "lstm": "nn.LSTM({in_features}, {hidden}?, num_layers={layers}, batch_first=True?, bidirectional={bidirectional})",
    "gru": "nn.GRU({in_features}, {hidden}?, num_layers={layers}, batch_first=True?, bidirectional={bidirectional})",
    "layernorm2d": "LayerNorm2d({channels}?, eps={eps})",
    "groupnorm": "nn.GroupNorm({groups}, {channels}?, eps={eps})",
    "conv1d": "nn.Conv1d({in_channels}, {out_channels}, {kernel}?, stride={stride}?, padding={padding}?, groups={groups}"
              "?, bias={bias})",
    "conv_transpose2d": "nn.ConvTranspose2d({in_channels}, {out_channels}, {kernel}?, stride={stride}?, padding="
                        "{padding}?, output_padding={output_padding}?, groups={groups}?, bias={bias})",
    "batchnorm1d": "nn.BatchNorm1d({channels}?, eps={eps}?, momentum={momentum})",
    "reparameterize": "Reparameterize({latent}?, beta={beta}?, elements={elements})",
    "layer_scale": "LayerScale({dim}?, init={init})",
    "learned_log_std": "LearnedLogStd({actions}?, init={init})",
    "causal_conv1d": "CausalConv1d({channels}, {kernel}?, bias={bias})",
    "selective_scan": "SelectiveScan({d_inner}, {d_state})",
    "s4d": "S4D({d_model}?, d_state={d_state})",
    "gcn_conv": "GCNConv({in_features}, {out_features}?, bias={bias})",
    "gat_conv": "GATConv({in_features}, {out_features}?, heads={heads}?, negative_slope={negative_slope}?, bias={bias})",
    "relative_position_bias": "RelativePositionBias({heads}?, buckets={buckets}?, max_distance={max_distance}?, "
                              "bidirectional={bidirectional})",
    "sinusoid_embedding": "SinusoidEmbedding({length}, {dim})",
    "moe": "MoE({d_model}, {hidden}, {experts}?, top_k={top_k}?, capacity_factor={capacity_factor}?, normalize={normalize}?, aux_coef={aux_coef})",
    "object_queries": "ObjectQueries({num}, {dim})",
    "frozen_batchnorm": "FrozenBatchNorm2d({channels}?, eps={eps})",
    "codebook_embedding": "CodebookEmbedding({codebooks}, {num}, {dim})",
    "codebook_heads": "CodebookHeads({dim}, {codebooks}, {num})",
    "grouped_layernorm": "GroupedLayerNorm({groups}, {dim}?, eps={eps})",
}

# weighted primitives whose module returns more than the output tensor: the expression that takes it
MODULE_CALL: dict[str, str] = {"lstm": "{call}[0]", "gru": "{call}[0]"}

# weightless primitives: an expression over the inputs {x} ({q}, {k}, {v}; {a}, {b}) and arguments; {cache} is
# generate()'s key-value cache of the layer (`self.kv_cache`, runtime/generation.py), given in a decoder LM only.
FUNCTIONAL: dict[str, str] = {
    "relu": "F.relu({x})",
    "relu6": "F.relu6({x})",
    "quick_gelu": "quick_gelu({x})",
    "l2_normalize": "F.normalize({x}, dim={dim}?, eps={eps})",
    "eot_pool": "eot_pool({a}, {b})",
    "graph_mean_pool": "graph_mean_pool({a}, {b}, {graphs})",
    "gelu": "F.gelu({x}?, approximate={approximate})",
    "silu": "F.silu({x})",
    "elu": "F.elu({x}?, alpha={alpha})",
    "tanh": "torch.tanh({x})",
    "sigmoid": "torch.sigmoid({x})",
    "softmax": "F.softmax({x}, dim={dim})",
    "dropout": "F.dropout({x}, {p}, self.training)",
    "identity": "{x}",
    "maxpool2d": "F.max_pool2d({x}, {kernel}, {stride}, {padding})",
    "avgpool2d": "F.avg_pool2d({x}, {kernel}, {stride}, {padding})",
    "global_avgpool": "{x}.mean(dim=(2, 3))",
    "resize": "F.interpolate({x}, size=({size}, {size}), mode={mode}?, align_corners=False)",
    "flatten": "{x}.flatten({start}, {end})",
    "transpose": "{x}.transpose({dim0}, {dim1})",
    "permute": "{x}.permute{dims}",
    "unflatten": "{x}.unflatten({dim}, {sizes})",
    "max": "{x}.amax(dim={dim})",
    "matmul": "{a} @ {b}",
    "add_identity": "add_identity({x})",
    "select": "{x}.select({dim}, {index})",
    "mean": "{x}.mean(dim={dim})",
    "split": "{x}.chunk({parts}, dim={dim})",
    "split_sizes": "{x}.split({sizes}, dim={dim})",
    "sdpa": "attention({q}, {k}, {v}, {heads}, {kv_heads}, {causal}?, cache={cache})",
    "sdpa_bias": "biased_attention({q}, {k}, {v}, {bias}, {heads}, {causal}, {scaled})",
    "scale": "{x} * {factor}",
    "log_mel": "log_mel({x}, {n_mels}, {n_fft}, {hop}, {sample_rate})",
    "rope": "apply_rope({q}, {k}, {heads}, {base}?, scaling={scaling}?, cache={cache})",
    "concat": "torch.cat(({a}, {b}), dim={dim})",
    "timestep_embedding": "timestep_embedding({x}, {dim}?, flip_sin_to_cos={flip_sin_to_cos}?, shift={shift}?, max_period={max_period})",
    "add": "{a} + {b}",
    "sub": "{a} - {b}",
    "drop_prefix": "{x}[:, {count}:]",
    "mul": "{a} * {b}",
    "upsample": "F.interpolate({x}, scale_factor={factor}, mode='nearest')",
    "sine_position_2d": "sine_position_2d({x}, {height}, {width}?, temperature={temperature})",
    "sinusoid_positions": "sinusoid_positions({x})",
    "top_k_pairs": "top_k_pairs({s}, {q}, {p}, {k})",
    "tile": "torch.cat([{x}] * {times}, dim={dim})",
}

# the same, overwriting the input: the codegen takes these only where the input is a fresh temporary
# nothing else reads (codegen.py `_in_place_ok`). relu_ keeps its output for backward; silu_ would need
# its input, so it is not here
FUNCTIONAL_IN_PLACE: dict[str, str] = {"relu": "F.relu({x}, inplace=True)"}

INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "sdpa": ("q", "k", "v"), "sdpa_bias": ("q", "k", "v", "bias"), "relative_position_bias": ("a", "b"),
    "rope": ("q", "k"), "eot_pool": ("a", "b"), "graph_mean_pool": ("a", "b"), "add": ("a", "b"), "sub": ("a", "b"),
    "mul": ("a", "b"), "matmul": ("a", "b"), "concat": ("a", "b"), "top_k_pairs": ("s", "q", "p"),
}

# helper functions and modules pasted into model.py where called: runtime/helpers.py's top-level definitions, by
# name, in its order, each as its text there up to the next one (read, not imported: compiling does not import torch)
_WITH_NEXT = frozenset({"mel_filters"})  # pasted with the definition after it, which calls it
_TOP_LEVEL_DEF = re.compile(r"^(?:def|class) (\w+)", re.MULTILINE)


def _helpers() -> dict[str, str]:
    source = (Path(__file__).resolve().parent / "runtime" / "helpers.py").read_text(encoding="utf-8")
    starts = [(m.start(), m.group(1)) for m in _TOP_LEVEL_DEF.finditer(source)]
    out: dict[str, str] = {}
    pending = ""
    for (start, name), (end, _) in zip(starts, [*starts[1:], (len(source), "")], strict=True):
        text = source[start:end].rstrip("\n")
        if name in _WITH_NEXT:
            pending += text + "\n\n\n"
        else:
            out[name], pending = "\n" + pending + text + "\n", ""
    return out


HELPERS: dict[str, str] = _helpers()

# helper modules with a learned `weight` that init_weights draws from N(0, 0.02)
LEARNED_HELPERS = ("PositionEmbedding", "ClassToken", "TokenTypeEmbedding", "RelativePositionBias",
                   "CodebookEmbedding", "CodebookHeads")


def helper_deps(prim: str) -> list[str]:
    return {"sdpa": ["attention"], "sdpa_bias": ["biased_attention"], "relative_position_bias": ["RelativePositionBias"], "log_mel": ["log_mel"], "sinusoid_embedding": ["SinusoidEmbedding"], "rope": ["apply_rope"], "pos_embedding": ["PositionEmbedding"],
            "cls_token": ["ClassToken"], "type_embedding": ["TokenTypeEmbedding"],
            "contrastive_logits": ["ContrastiveLogits"], "eot_pool": ["eot_pool"], "quick_gelu": ["quick_gelu"],
            "layernorm2d": ["LayerNorm2d"], "layer_scale": ["LayerScale"], "learned_log_std": ["LearnedLogStd"],
            "add_identity": ["add_identity"], "reparameterize": ["Reparameterize", "auxiliary_loss"],
            "causal_conv1d": ["CausalConv1d"], "selective_scan": ["SelectiveScan"], "s4d": ["S4D"],
            "moe": ["MoE", "auxiliary_loss"], "gcn_conv": ["with_self_loops", "GCNConv"],
            "gat_conv": ["with_self_loops", "GATConv"], "graph_mean_pool": ["graph_mean_pool"],
            "timestep_embedding": ["timestep_embedding"], "sine_position_2d": ["sine_position_2d"],
            "object_queries": ["ObjectQueries"], "frozen_batchnorm": ["FrozenBatchNorm2d"],
            "codebook_embedding": ["CodebookEmbedding"], "codebook_heads": ["CodebookHeads"],
            "sinusoid_positions": ["sinusoid_positions"],
            "top_k_pairs": ["top_k_pairs"],
            "grouped_layernorm": ["GroupedLayerNorm"]}.get(prim, [])
