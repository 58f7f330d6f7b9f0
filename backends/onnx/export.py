"""Graph IR -> onnx-ir model: inputs with named symbolic dims, weights, one lowering per graph node,
outputs named as in the spec, then the opset check. Serialisation and the checker run in __init__.emit.

Two models can be built from one graph:
- the forward model (model.onnx): the spec's inputs -> the spec's outputs, as the PyTorch forward;
- for causal decoders, the decoder step with a key/value cache (model_with_past.onnx): the same plus
  `past.<i>.key` / `past.<i>.value` inputs and `present.<i>.key` / `present.<i>.value` outputs, one pair per
  attention in graph order, so generation appends tokens without recomputing the prefix; for state-space
  decoders (Mamba), `past.<i>.conv_state` / `past.<i>.ssm_state` and their `present` outputs, one per causal
  convolution and per selective scan in graph order, which do not grow with the sequence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir
from metagen_backends.decoding import decoding
from metagen_backends.pytorch.writer import state_dict_key

from metagen_compiler import __version__
from metagen_compiler.escape import onnx_str
from metagen_compiler.ir.graph import GraphIR
from metagen_compiler.primitives import PRIMITIVES, Dim, Shape
from metagen_compiler.span import Span

from .lowering import LOWERINGS, KVState, NodeCtx, RecurrentState
from .opsets import OnnxDiagnostic, OnnxExportError, check_opset, ir_version_for, missing_ops, op_label
from .weights import WeightSpec, random_tensor, weight_specs
from .writer import GraphWriter

__all__ = ["DIM_NAMES", "Built", "build", "dim_param", "supports_cache"]

# the graph IR's symbols -> dim_param names in the ONNX model
DIM_NAMES = {"B": "batch", "T": "sequence", "N": "nodes", "E": "edges"}
PAST = "past_sequence"

_DTYPES = {"float32": ir.DataType.FLOAT, "float16": ir.DataType.FLOAT16, "bfloat16": ir.DataType.BFLOAT16,
           "int64": ir.DataType.INT64, "int32": ir.DataType.INT32, "bool": ir.DataType.BOOL}


def dim_param(d: Dim) -> int | str:
    """A graph dim as an ONNX dim: ints stay, symbols get readable names (T+1 -> sequence+1)."""
    if isinstance(d, int):
        return d
    return re.sub(r"[A-Za-z_]\w*", lambda m: _dim_name(m.group(0)), d)


def _dim_name(sym: str) -> str:
    """B -> batch, T -> sequence; an input's own symbol keeps its prefix: target_T -> target_sequence."""
    prefix, _, base = sym.rpartition("_")
    if prefix and base in DIM_NAMES:
        return f"{prefix}_{DIM_NAMES[base]}"
    return DIM_NAMES.get(sym, sym)


def _shape(s: Shape) -> ir.Shape:
    return ir.Shape([dim_param(d) for d in s])


@dataclass
class Built:
    model: ir.Model
    names: dict[str, str | None]  # state_dict key -> initializer (or weight input) name
    weights: list[WeightSpec]
    weight_bytes: int
    cache: list[str] = field(default_factory=list)  # sdpa node ids with a cache, in order


# ops that see earlier positions through a state of fixed size, carried between steps: the state's name and shape
# (the ops of metagen_backends.decoding.RECURRENT; a test checks that the two agree)
_RECURRENT: dict[str, tuple[str, Callable[[Mapping[str, Any]], list[int | str]]]] = {
    "causal_conv1d": ("conv_state", lambda a: ["batch", int(a["channels"]), int(a["kernel"]) - 1]),
    "selective_scan": ("ssm_state", lambda a: ["batch", int(a["d_inner"]), int(a["d_state"])]),
    "s4d": ("s4d_state", lambda a: ["batch", int(a["d_model"]), int(a["d_state"]) // 2, 2]),
}


def supports_cache(gir: GraphIR) -> bool:
    """Whether model_with_past.onnx (the decoder step with a cache) is written: the graph decodes token by token
    as a decoder, by the rule that gives the PyTorch model generate() (metagen_backends.decoding): one token
    input, causal attention or recurrent ops, every other op position-wise (not a classifier head that selects or
    averages positions, nor a mixture of experts with a capacity, which depends on the other tokens)."""
    d = decoding(gir)
    return d is not None and d.kind == "decoder"


def build(gir: GraphIR, *, opset: int, weights: str, seed: int, with_cache: bool = False,
          arrays: Mapping[str, np.ndarray | ir.TensorProtocol] | None = None) -> Built:
    """Lower the graph IR to an onnx-ir model. weights: "random" / "external" (initializers with random initial
    values, or `arrays` when given) or "none" (each weight a graph input with its shape; nothing allocated)."""
    check_opset(opset)
    b = _Builder(gir, GraphWriter(opset), weights)
    if with_cache:
        b.declare_cache()
    b.lower_nodes()
    outputs = b.outputs()
    problems = missing_ops(opset, b.used)
    if problems:
        raise OnnxExportError(problems)
    by_name = {s.name: s for s in b.specs}
    for v in b.initializers:  # the values come last, once the graph has passed its checks
        assert v.name is not None
        data = arrays[v.name] if arrays is not None else random_tensor(by_name[v.name], seed)
        v.const_value = data if isinstance(data, ir.TensorProtocol) else ir.tensor(data, name=v.name)
    spec = gir.spec
    graph = ir.Graph(b.inputs + b.cache_inputs + b.weight_inputs, outputs, nodes=b.w.nodes,
                     initializers=b.initializers, opset_imports={"": opset}, name=onnx_str(spec.name))
    graph.doc_string = onnx_str(f"{spec.name}: {', '.join(n for n, _ in spec.inputs)} -> {spec.task}, family "
                                f"{spec.family.qualname}; generated by metagenc {__version__}")
    model = ir.Model(graph, ir_version=ir_version_for(opset), producer_name="metagenc", producer_version=__version__)
    model.metadata_props.update({
        "metagen.model": onnx_str(spec.name),
        "metagen.family": onnx_str(spec.family.qualname),
        "metagen.weights": "inputs" if weights == "none" else "initializers",
        "metagen.step": ("decoder step with " + " and ".join(what for what, has in (("key/value cache", b.kv),
                                                                           ("recurrent state", b.states)) if has)
                         if with_cache else "forward"),
    })
    return Built(model, b.names, b.specs, sum(s.nbytes for s in b.specs), list(b.kv))


class _Builder:
    """The state of one lowering: the writer, the value of every graph tensor, the weights and the cache."""

    def __init__(self, gir: GraphIR, w: GraphWriter, weights: str) -> None:
        self.gir, self.w = gir, w
        self.env: dict[tuple[str | None, int], ir.Value] = {}
        self.used: list[tuple[str, str, Span | None]] = []  # (ONNX op, primitive, span) per emitted node
        self.inputs: list[ir.Value] = []
        for gi in gir.inputs:  # the spec's inputs, with named symbolic dims
            v = ir.val(gi.name, _DTYPES[gi.dtype], _shape(gi.shape))
            w.reserve(gi.name)
            self.inputs.append(v)
            self.env[(gi.node, 0)] = v
        for name, _ in gir.outputs:
            w.reserve(name)
        # weights, named as the state_dict keys: initializers (values attached later) or graph inputs
        self.specs, self.names = weight_specs(gir)
        self.values: dict[str, ir.Value] = {}
        self.initializers: list[ir.Value] = []
        self.weight_inputs: list[ir.Value] = []
        for s in self.specs:
            w.reserve(s.name)
            if weights == "none":
                v = ir.val(s.name, ir.DataType.FLOAT, ir.Shape(list(s.shape)))
                self.weight_inputs.append(v)
            else:
                v = ir.Value(name=s.name, shape=ir.Shape(list(s.shape)), type=ir.TensorType(ir.DataType.FLOAT))
                self.initializers.append(v)
            self.values[s.name] = v
        self.kv: dict[str, KVState] = {}
        self.states: dict[str, tuple[str, RecurrentState]] = {}  # node -> ("<i>.conv_state", its state)
        self.cache_inputs: list[ir.Value] = []
        self.past_len: ir.Value | None = None

    def declare_cache(self) -> None:
        """past.<i>.key / past.<i>.value per attention, in graph order, and the number of cached positions;
        past.<i>.conv_state per causal convolution and past.<i>.ssm_state per selective scan."""
        nodes, w = self.gir.nodes, self.w
        for i, n in enumerate(x for x in self.gir.topo() if nodes[x].op == "sdpa"):
            args = nodes[n].args
            heads = int(args["heads"])
            kvh = int(args.get("kv_heads") or heads)
            qs, _, vs = [self.gir.shape_of(t) for t in self.gir.in_tensors(n)]
            hs, hv = int(qs[-1]) // heads, int(vs[-1]) // kvh
            pk = ir.val(f"past.{i}.key", ir.DataType.FLOAT, ir.Shape(["batch", kvh, PAST, hs]))
            pv = ir.val(f"past.{i}.value", ir.DataType.FLOAT, ir.Shape(["batch", kvh, PAST, hv]))
            for v in (pk, pv):
                w.reserve(v.name or "")
                self.cache_inputs.append(v)
            self.kv[n] = KVState(pk, pv)
        for op, (kind, shape) in _RECURRENT.items():  # conv states, then scan states, each in graph order
            for i, n in enumerate(x for x in self.gir.topo() if nodes[x].op == op):
                v = ir.val(f"past.{i}.{kind}", ir.DataType.FLOAT, ir.Shape(shape(nodes[n].args)))
                w.reserve(v.name or "")
                self.cache_inputs.append(v)
                self.states[n] = (f"{i}.{kind}", RecurrentState(v))
        if self.kv:
            w.scope = PAST
            self.past_len = w.dim(next(iter(self.kv.values())).past_key, 2)  # (1,) int64
            w.rename(self.past_len, PAST)
            w.scope = ""

    def lower_nodes(self) -> None:
        """One lowering per graph node, in topological order; every unlowerable primitive is reported."""
        w = self.w
        problems: list[OnnxDiagnostic] = []
        for n in self.gir.topo():
            d = self.gir.nodes[n]
            if d.op == "input":
                continue
            lower = LOWERINGS.get(d.op)
            if lower is None:
                problems.append(OnnxDiagnostic("E513", f"primitive `{d.op}` has no ONNX lowering", d.span))
                continue
            ins = self.gir.in_tensors(n)
            if any((t.node, t.port) not in self.env for t in ins):
                continue  # downstream of a node that could not be lowered (already reported)
            ctx = NodeCtx(n, d.op, d.args, [self.env[(t.node, t.port)] for t in ins],
                          [self.gir.shape_of(t) for t in ins], list(d.shapes or []), self._weights_of(n),
                          past_len=self.past_len, kv=self.kv.get(n), state=self.states.get(n, ("", None))[1])
            first = len(w.nodes)
            w.scope = n
            outs = lower(w, ctx)
            w.scope = ""
            made = {id(node) for node in w.nodes[first:]}
            for port, v in enumerate(outs):
                if v.producer() is not None and id(v.producer()) in made:  # not a pass-through
                    w.rename(v, n if port == 0 else f"{n}#{port}")
                self.env[(n, port)] = v
            self.used += [(op_label(node.op_type, {a.name: a.value for a in node.attributes.values()}), d.op,
                           d.span) for node in w.nodes[first:]]
        if problems:
            raise OnnxExportError(problems)

    def _weights_of(self, n: str) -> dict[str, ir.Value]:
        """The node's weights and buffers by their local names (weight, bias, running_mean, ...)."""
        module = self.gir.nodes[n].module
        if module is None:
            return {}
        info = self.gir.modules[module]
        prim = PRIMITIVES[info.target]
        local: dict[str, ir.Value] = {}
        for wname in {**prim.weights(info.args), **prim.buffers(info.args)}:
            target = self.names.get(state_dict_key(f"{module}.{wname}"))
            if target is not None:
                local[wname] = self.values[target]
        return local

    def outputs(self) -> list[ir.Value]:
        """The spec's outputs by their names, then present.<i>.key / .value of the cache."""
        w = self.w
        outputs: list[ir.Value] = []
        for name, t in self.gir.outputs:
            v = self.env[(t.node, t.port)]
            if v.producer() is None or v in outputs:  # an input or a weight passed through: give it a node
                w.scope = t.node or ""
                v = w.op("Identity", [v])
                w.scope = ""
            v.name = name
            assert t.node is not None  # an output is made by a node (an input is a node of the graph too)
            made = self.gir.nodes[t.node]
            v.dtype = _DTYPES[made.dtypes[t.port] if made.op != "input" and made.dtypes else "float32"]
            v.shape = _shape(self.gir.shape_of(t))
            outputs.append(v)
        for i, st in enumerate(self.kv.values()):
            pairs = (("key", st.past_key, st.present_key), ("value", st.past_value, st.present_value))
            for kind, past, present in pairs:
                assert present is not None
                present.name = f"present.{i}.{kind}"
                present.dtype = ir.DataType.FLOAT
                dims = list(past.shape or [])
                present.shape = ir.Shape([dims[0], dims[1], f"{PAST}+sequence", dims[3]])
                outputs.append(present)
        for name, rs in self.states.values():  # a state of fixed size: present has the shape of past
            assert rs.present is not None
            rs.present.name = f"present.{name}"
            rs.present.dtype = ir.DataType.FLOAT
            rs.present.shape = rs.past.shape
            outputs.append(rs.present)
        return outputs
