"""Primitive -> PyTorch. Weighted primitives become nn.Module constructors; the others become
functional expressions in `forward`. Templates take Python expression strings for the arguments."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["FUNCTIONAL", "FUNCTIONAL_IN_PLACE", "HELPERS", "LEARNED_HELPERS", "MODULES", "MODULE_CALL", "RUNTIME_MODULES",
           "RuntimeDef", "helper_deps", "reserved_names", "runtime_defs", "runtime_method", "runtime_names_in",
           "runtime_source"]

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
    "gat_conv_edge": "GATEdgeConv({in_features}, {out_features}, {edge_dim}?, heads={heads}?, negative_slope="
                     "{negative_slope}?, bias={bias})",
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
# generate()'s cache of the layer (`self.kv_cache`, runtime/generation.py), given in a model that generates only.
FUNCTIONAL: dict[str, str] = {
    "relu": "F.relu({x})",
    "relu6": "F.relu6({x})",
    "quick_gelu": "quick_gelu({x})",
    "l2_normalize": "F.normalize({x}, dim={dim}?, eps={eps})",
    "eot_pool": "eot_pool({a}, {b})",
    "graph_mean_pool": "graph_mean_pool({a}, {b}, {graphs})",
    "same_graph_bias": "same_graph_bias({x}, {heads})",
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
    "sdpa_bias": "biased_attention({q}, {k}, {v}, {bias}, {heads}, {causal}, {scaled}?, cache={cache})",
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

# The runtime modules (backends/pytorch/runtime/): real Python, imported and tested as such, whose top-level
# definitions model.py gets by source. Compiling reads their text, never imports them (so never imports torch).
# model.py holds what it needs in this order: the modules in this order, each definition where its file has it.
RUNTIME_MODULES = ("helpers", "boxes", "detection", "matching", "diffusion", "codec", "masks", "rl", "recsys")
_RUNTIME = Path(__file__).resolve().parent / "runtime"


@dataclass(frozen=True)
class RuntimeDef:
    """A top-level definition (function, class or constant) of a runtime module, as model.py gets it."""

    name: str
    module: str
    text: str  # from its first decorator up to the next definition (a comment between two goes with the first)
    method: bool  # a function whose first parameter is `self`: a method of the model class, pasted into it
    order: int  # its place in model.py: RUNTIME_MODULES' order, then its file's

    @functools.cached_property
    def uses(self) -> frozenset[str]:
        """The runtime definitions it reads (calls, bases, defaults), its own name left out: its code's identifiers
        not after a `.`, strings and comments left out (found when asked: most definitions never are)."""
        return frozenset(runtime_names_in(self.text) - {self.name})


# a top-level definition's first line: a decorator, `def`/`class`, or a constant `NAME = `
_TOP_LEVEL = re.compile(r"^(?:@|(?:def|class) (\w+)|(?!__)(\w+) = )", re.MULTILINE)
_METHOD = re.compile(r"def \w+\(self\b")
_STRINGS_AND_COMMENTS = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*')
_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*")


def _definitions(module: str, base: int) -> list[RuntimeDef]:
    """A runtime module's definitions, found in its text (faster than parsing it: a compile reads every runtime
    module; the test suite checks the result against the module's syntax tree)."""
    source = (_RUNTIME / f"{module}.py").read_text(encoding="utf-8")
    body = source.index('"""', 3) + 3 if source.startswith('"""') else 0  # after the module's docstring
    found: list[tuple[int, str, bool]] = []  # (offset of its first line, name, method)
    decorated = None
    for m in _TOP_LEVEL.finditer(source, body):
        if m.group(1) is None and m.group(2) is None:  # a decorator: the definition starts here
            decorated = m.start() if decorated is None else decorated
            continue
        line = source[m.start() : source.find("\n", m.start())]
        found.append((m.start() if decorated is None else decorated, m.group(1) or m.group(2),
                      bool(_METHOD.match(line))))
        decorated = None
    ends = [start for start, _, _ in found[1:]] + [len(source)]
    return [RuntimeDef(name, module, source[start:end].rstrip("\n"), method, base + i)
            for i, ((start, name, method), end) in enumerate(zip(found, ends, strict=True))]


@functools.cache
def runtime_defs() -> tuple[dict[str, RuntimeDef], dict[str, RuntimeDef]]:
    """The runtime modules' definitions: the module-level ones by name (one namespace, as in model.py), and the
    model methods by `module.name`."""
    defs: dict[str, RuntimeDef] = {}
    methods: dict[str, RuntimeDef] = {}
    for i, module in enumerate(RUNTIME_MODULES):
        for d in _definitions(module, 1000 * i):
            if d.method:
                methods[f"{module}.{d.name}"] = d
            elif d.name in defs:
                raise ValueError(f"runtime/{module}.py defines {d.name}, as runtime/{defs[d.name].module}.py does")
            else:
                defs[d.name] = d
    return defs, methods


def runtime_source(names: Iterable[str]) -> list[str]:
    """The source of each named runtime definition and of every one it reads, transitively, in model.py's order."""
    defs = runtime_defs()[0]
    need: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in need:
            if name not in defs:
                raise KeyError(f"{name!r} is not a definition of the runtime modules ({', '.join(RUNTIME_MODULES)})")
            need.add(name)
            todo.extend(defs[name].uses)
    return [defs[n].text for n in sorted(need, key=lambda n: defs[n].order)]


def runtime_method(key: str) -> RuntimeDef:
    """A model method of the runtime modules by `module.name` (`detection.detect`), or by `module.name as method`,
    renamed (`rl.policy_act as act`: the class's `act`)."""
    key, _, rename = key.partition(" as ")
    d = runtime_defs()[1][key]
    if not rename:
        return d
    head = f"def {d.name}("
    assert head in d.text, key
    return replace(d, name=rename, text=d.text.replace(head, f"def {rename}(", 1))


# runtime/helpers.py's definitions by name, each as pasted (a blank line before and after)
HELPERS: dict[str, str] = {n: "\n" + d.text + "\n" for n, d in runtime_defs()[0].items() if d.module == "helpers"}


_CALLED = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(")


def runtime_names_in(code: str) -> set[str]:
    """The runtime definitions that (template) code reads: its identifiers not after a `.`, strings and comments
    left out."""
    return set(_NAME.findall(_STRINGS_AND_COMMENTS.sub(" ", code))) & runtime_defs()[0].keys()


def reserved_names() -> frozenset[str]:
    """Every name model.py may define at module level from the runtime, and every class the lowering tables name:
    generated classes and variables never take them (writer.py)."""
    tables = "\n".join([*MODULES.values(), *FUNCTIONAL.values()])
    return frozenset(runtime_defs()[0].keys() | set(_CALLED.findall(tables)) - {"F", "torch", "nn"})


# helper modules with a learned `weight` that init_weights draws from N(0, 0.02)
LEARNED_HELPERS = ("PositionEmbedding", "ClassToken", "TokenTypeEmbedding", "RelativePositionBias",
                   "CodebookEmbedding", "CodebookHeads")


def helper_deps(prim: str) -> list[str]:
    """The runtime definitions a primitive's lowering calls (runtime_source adds what those call)."""
    return sorted(runtime_names_in(MODULES.get(prim, "") + "\n" + FUNCTIONAL.get(prim, "")))
