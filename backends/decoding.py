"""Which compiled models decode token by token, and how: the one rule both backends follow.

The PyTorch backend gives a model `generate()` (runtime/generation.py beside model.py) and the ONNX backend writes
`model_with_past.onnx` from the same answer, `decoding(gir)`:

- kind "decoder": one input of token ids, and every op either works on each position alone, or sees the earlier
  positions through a cache (causal attention: keys and values) or a state of fixed size (a causal convolution, a
  selective scan, an S4D layer). Both backends step these: generate() and model_with_past.onnx.
- kind "encoder_decoder": an input named `target` (the decoder's token ids, declared by the family) and source
  inputs (tokens, waveforms, ...). What reads the source only is computed once per generate() (the encoder, the
  cross-attention keys and values); what reads the target follows the decoder rule, with cross-attention to the
  source and T5's relative position bias besides. generate() only: ONNX has no encoder-decoder step graph.

A graph that fails the rule (a classifier that pools positions, a mixture of experts with a capacity, which
depends on the other tokens in the batch, a prefix joined to the tokens) gets neither. Pure Python on the graph
IR: no torch, no onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metagen_compiler.ir.graph import GraphIR

__all__ = ["POSITIONWISE", "RECURRENT", "Decoding", "decoding"]

# ops whose output at a position depends on that position only (rope and learned positions read the position
# from the cache): a graph of these and causal attention gives the same logits step by step as in one pass
POSITIONWISE = frozenset({"linear", "layernorm", "rmsnorm", "embedding", "pos_embedding", "rope", "gelu", "relu",
                          "silu", "tanh", "sigmoid", "quick_gelu", "dropout", "identity", "add", "sub", "mul",
                          "scale"})
# ops that see earlier positions through a state of fixed size, carried from one step to the next
RECURRENT = frozenset({"causal_conv1d", "selective_scan", "s4d"})
# ops with a step only in generate()'s encoder-decoder path (T5's attention with a relative position bias)
_ENCODER_DECODER_ONLY = frozenset({"sdpa_bias", "relative_position_bias"})


@dataclass(frozen=True)
class Decoding:
    """How a model decodes: its kind, the input that carries the decoded tokens, the source inputs (read once),
    the graph paths of the modules computed once per generate() (maximal: the encoder, the cross-attention key
    and value projections) and of the attention blocks that attend to the source (cross-attention)."""

    kind: str  # "decoder" or "encoder_decoder"
    target: str  # the input name of the decoded tokens
    source: tuple[str, ...] = ()
    once: tuple[str, ...] = ()
    cross: tuple[str, ...] = ()
    ops: frozenset[str] = field(default_factory=frozenset)  # the ops of the decoder step (read by tests)


def decoding(gir: GraphIR) -> Decoding | None:
    """The decoding of the graph, or None where it does not decode token by token (see the module's doc)."""
    ints = [i for i in gir.inputs if i.dtype == "int64"]
    named = [i for i in ints if i.name == "target"]
    if len(gir.inputs) == 1 and len(ints) == 1:
        target, kind = ints[0], "decoder"
    elif len(gir.inputs) > 1 and len(named) == 1:
        target, kind = named[0], "encoder_decoder"
    else:
        return None
    g = gir.g
    tainted = _reads(gir, target.node)
    cross: list[str] = []
    step_ops: set[str] = set()
    stateful = False
    for n in gir.topo():
        d = g.nodes[n]
        op, args = d["op"], d["args"]
        if op == "input" or n not in tainted:
            continue
        if op in _ENCODER_DECODER_ONLY and kind != "encoder_decoder":
            return None
        step_ops.add(op)
        if op in ("sdpa", "sdpa_bias"):
            k, v = (t.node in tainted for t in gir.in_tensors(n)[1:3])  # (q always reads the target)
            if k and v:  # self-attention over the target: causal, with a cache of keys and values
                if not args.get("causal"):
                    return None
                stateful = True
            elif not (k or v):  # cross-attention: queries from the target, keys and values from the source
                cross.append(str(d.get("scope") or ""))
            else:
                return None
        elif op == "relative_position_bias":
            if not all(t.node in tainted for t in gir.in_tensors(n)):
                return None
        elif op in RECURRENT:
            stateful = True
        elif op == "moe":
            if float(args.get("capacity_factor", 0.0)) > 0:  # a token's experts depend on the batch's other tokens
                return None
        elif op in ("softmax", "split", "split_sizes"):
            if args.get("dim") != -1:
                return None
        elif op not in POSITIONWISE:
            return None
    if not stateful:
        return None
    if kind == "decoder":
        return Decoding(kind, target.name, ops=frozenset(step_ops))
    source = tuple(i.name for i in gir.inputs if i is not target)
    return Decoding(kind, target.name, source, _computed_once(gir, tainted), tuple(cross), frozenset(step_ops))


def _reads(gir: GraphIR, node: str) -> set[str]:
    """The nodes that read `node`, directly or through others (itself included)."""
    seen, todo = {node}, [node]
    while todo:
        for s in gir.g.successors(todo.pop()):
            if s not in seen:
                seen.add(s)
                todo.append(s)
    return seen


def _computed_once(gir: GraphIR, tainted: set[str]) -> tuple[str, ...]:
    """The outermost modules (no list) whose every node reads the source only, in graph order of paths."""
    under: dict[str, list[str]] = {}
    for n in gir.g.nodes:
        parts = n.split(".")
        for i in range(1, len(parts) + 1):
            under.setdefault(".".join(parts[:i]), []).append(n)
    once: set[str] = set()
    for path in sorted(gir.modules, key=lambda p: p.count(".")):  # outer modules first
        nodes = under.get(path, [])
        if gir.modules[path].kind == "list" or not nodes or any(n in tainted for n in nodes):
            continue
        if not any(path.startswith(p + ".") for p in once):
            once.add(path)
    return tuple(p for p in gir.modules if p in once)
