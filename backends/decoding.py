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
- kind "prefix_decoder": one input of token ids (not named `target`) and other inputs whose encoding, computed
  once, is joined before the tokens' features (a `concat` on the sequence axis) and read by the decoder like
  earlier tokens: a vision-language model's image patches (std.vlm). The modules that compute the prefix run in
  the first forward only; the prefix's keys and values stay in the cache; the head may drop the prefix's
  positions (`drop_prefix` of exactly the prefix's length, in the model's `head`). generate() only.

A graph that fails the rule (a classifier that pools positions, a mixture of experts with a capacity, which
depends on the other tokens in the batch, a prefix read anywhere but at the start of the sequence) gets none.
Pure Python on the graph IR: no torch, no onnx.
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

    kind: str  # "decoder", "encoder_decoder" or "prefix_decoder"
    target: str  # the input name of the decoded tokens
    source: tuple[str, ...] = ()
    once: tuple[str, ...] = ()  # (a prefix_decoder's: the modules that compute the prefix)
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
    elif len(gir.inputs) > 1 and len(ints) == 1 and not named:
        target, kind = ints[0], "prefix_decoder"
    else:
        return None
    tainted = _reads(gir, target.node)
    cross: list[str] = []
    step_ops: set[str] = set()
    stateful = False
    prefix: int | str | None = None  # a prefix_decoder's: the prefix's length, once its concat is seen
    for n in gir.topo():
        d = gir.nodes[n]
        op, args = d.op, d.args
        if op == "input" or n not in tainted:
            continue
        if op in _ENCODER_DECODER_ONLY and kind != "encoder_decoder":
            return None
        step_ops.add(op)
        if kind == "prefix_decoder" and op in ("concat", "drop_prefix"):
            prefix = _prefix_step(gir, n, tainted, prefix)
            if prefix is None:
                return None
        elif op in ("sdpa", "sdpa_bias"):
            k, v = (t.node in tainted for t in gir.in_tensors(n)[1:3])  # (q always reads the target)
            if k and v:  # self-attention over the target: causal, with a cache of keys and values
                if not args.get("causal"):
                    return None
                stateful = True
            elif not (k or v):  # cross-attention: queries from the target, keys and values from the source
                cross.append(d.scope)
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
    if kind == "prefix_decoder":
        if prefix is None or cross or not _only_into_prefix(gir, tainted):
            return None
        return Decoding(kind, target.name, source, _computed_once(gir, tainted), (), frozenset(step_ops))
    return Decoding(kind, target.name, source, _computed_once(gir, tainted), tuple(cross), frozenset(step_ops))


def _prefix_step(gir: GraphIR, n: str, tainted: set[str], prefix: int | str | None) -> int | str | None:
    """A prefix_decoder's join of the prefix and the tokens (the first `concat`: the source's features, then the
    tokens', on the sequence axis) and the head's `drop_prefix` of the prefix's length after it: the prefix's
    length (a number or a symbol), or None where the op breaks the rule (a second join, a drop before the join, of
    another length, or outside the head)."""
    d = gir.nodes[n]
    ins = gir.in_tensors(n)
    if d.op == "concat":
        if prefix is not None or len(ins) != 2 or d.args.get("dim") not in (1, -2):
            return None
        first, second = ins
        shape = gir.shape_of(first)
        if first.node in tainted or second.node not in tainted or len(shape) != 3 or len(gir.shape_of(second)) != 3:
            return None
        return shape[1]
    scope = d.scope
    if prefix is None or d.args.get("count") != prefix or not (scope == "head" or scope.startswith("head.")):
        return None
    return prefix


def _only_into_prefix(gir: GraphIR, tainted: set[str]) -> bool:
    """Whether the source reaches the tokens' computation only through the prefix's join (the first input of
    the one concat that joins them): then the prefix's modules can give an empty sequence after the first
    forward."""
    for src, dst in gir.g.edges:
        if src in tainted or dst not in tainted:
            continue
        if gir.nodes[dst].op != "concat":
            return False
    return True


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
