"""Elaboration: running block bodies with concrete arguments.

One engine serves two masters. With a GraphBuilder it lowers blocks into the graph IR (one node
per primitive application, edges for data flow, a module tree for the backends). Without one it
only counts parameters, memoised per (block, arguments), which is what the dimension solver
calls thousands of times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from metagen_compiler.diagnostics import did_you_mean
from metagen_compiler.ir.digraph import DiGraph
from metagen_compiler.ir.graph import ModuleInfo, Node, Tensor  # the records of the graph IR this module builds
from metagen_compiler.primitives import OPERATOR_PRIMITIVES, PRIMITIVES, Primitive
from metagen_compiler.semantics.limits import (
    LIMIT_CODE,
    LIMITS_HINT,
    MAX_GRAPH_NODES,
    MAX_REPEAT,
    PAST_MAX_FLOAT,
    short_int,
)
from metagen_compiler.semantics.program import Definition, Program
from metagen_compiler.semantics.values import (
    EvalError,
    LayerRef,
    Sym,
    UnknownValue,
    Value,
    as_int,
    describe,
    evaluate,
    format_value,
)
from metagen_compiler.span import Span
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.visit import statements, walk

__all__ = ["Elaborator", "GraphBuilder", "ModuleInfo", "ParamSpec", "Tensor", "applied_layers", "bind_args",
           "layer_labels", "param_specs"]


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str  # int | float | bool | str | layer | list | enum | any | int_or_tuple
    default: Any  # A.Expr (blocks) or a Python value (primitives) or ... when required
    enum: tuple[str, ...] = ()
    span: Span | None = None


def _type_of(p: A.Param) -> tuple[str, tuple[str, ...]]:
    if isinstance(p.type, A.EnumType):
        return "enum", p.type.values
    if isinstance(p.type, A.NamedType):
        return p.type.name, ()
    return "any", ()


def param_specs(callee: Primitive | A.Block | A.Family) -> list[ParamSpec]:
    if isinstance(callee, Primitive):
        return [ParamSpec(p.name, p.type, p.default) for p in callee.params]
    out = []
    for p in callee.params:
        t, enum = _type_of(p)
        out.append(ParamSpec(p.name.name, t, p.default if p.default is not None else ..., enum, p.name.span))
    return out


class _BodyState(TypedDict):
    """What running a block body accumulates (Elaborator._run_body)."""

    params: int  # parameters counted (count-only elaboration)
    inputs: list[Tensor]  # the tensors the block's `input` statement binds
    returned: list[Tensor] | None  # the tensors of `return`, once it has run


MAX_BLOCK_DEPTH = 64  # nested block applications; deeper is taken for runaway recursion

KNOWN_TYPES = ("int", "float", "bool", "str", "layer", "list", "any")


class GraphBuilder:
    """Collects nodes, edges and the module tree while blocks are elaborated."""

    def __init__(self) -> None:
        self.g: DiGraph[str] = DiGraph()
        self.nodes: dict[str, Node] = {}
        self.modules: dict[str, ModuleInfo] = {}
        self._counter: dict[str, int] = {}

    def fresh(self, base: str) -> str:
        n = self._counter.get(base, 0)
        self._counter[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def add_op(self, node_id: str, op: str, args: Mapping[str, Value], inputs: Sequence[Tensor], span: Span,
               scope: str, n_outputs: int, module: str | None) -> list[Tensor]:
        if node_id in self.g:  # the checker refuses a label used twice; a second route here must not crash
            raise EvalError("E104", f"`{node_id.rsplit('.', 1)[-1]}` names two layers of `{scope or node_id}`", span,
                            "give each layer its own label")
        if len(self.g) >= MAX_GRAPH_NODES:  # a limit of the language (limits.py): time and memory stay bounded
            raise EvalError(LIMIT_CODE, f"the model's graph passes {MAX_GRAPH_NODES:,} nodes, the most the language "
                            "allows", span, f"{LIMITS_HINT}; lower the repeat counts")
        self.add_node(node_id, Node(op, dict(args), span, scope, module, n_outputs))
        for port, t in enumerate(inputs):
            assert t.node is not None
            if self.g.has_edge(t.node, node_id):
                self.g.edges[t.node, node_id]["ports"].append((t.port, port))
            else:
                self.g.add_edge(t.node, node_id, ports=[(t.port, port)])
        return [Tensor(node_id, i) for i in range(n_outputs)]

    def add_node(self, node_id: str, node: Node) -> None:
        """A node without inputs (a graph input), or the record of one add_op connects."""
        self.g.add_node(node_id)
        self.nodes[node_id] = node


def applied_layers(body: Sequence[A.Stmt]) -> list[A.Layer]:
    """The layers a block body applies to tensors (`x >> layer`), in the order elaboration applies them: those of
    assignments and returns, through operators, tuples and both branches of an `if`. What else holds an
    expression holds a value, not tensors (a `let`, a `require`, an `if`'s condition, a call's or an index's
    operands, a layer's own arguments): an application there is an error of elaboration (E201), not a layer.

    A visitor's walk (by class name, as `Visitor` dispatches: a layer is kept and not entered, an `if` enters its
    branches only, a value node or a leaf is skipped, any other node enters its children) in one loop, as it runs per
    block of every compile."""
    layers: list[A.Layer] = []
    stack: list[A.Node] = list(body)
    stack.reverse()
    kinds = _APPLIED_KIND
    while stack:
        node = stack.pop()
        kind = kinds.get(type(node))
        if kind is None:
            kind = kinds[type(node)] = _APPLIED_BY_NAME.get(type(node).__name__,
                                                            _ENTER if A.child_fields(type(node)) else _VALUE)
        if kind == _ENTER:
            stack += node.children()[::-1]
        elif kind == _LAYER:
            layers.append(node)  # type: ignore[arg-type]
        elif kind == _IF:
            stack += (*node.then, *node.orelse)[::-1]  # type: ignore[attr-defined]
    return layers


_ENTER, _LAYER, _IF, _VALUE = range(4)
_APPLIED_BY_NAME = {"Layer": _LAYER, "If": _IF, "Let": _VALUE, "Require": _VALUE, "Input": _VALUE, "Call": _VALUE,
                    "Index": _VALUE}
_APPLIED_KIND: dict[type[A.Node], int] = {}  # per node class, what applied_layers does with it


def layer_labels(block: A.Block) -> dict[int, str | None]:
    """The attribute name of every layer application in a block, deterministic and unique.

    Explicit labels are kept; a block or a primitive with weights (or tagged `module`) gets its callee's name,
    suffixed _2, _3 ... when taken. Weightless primitives stay functional (None)."""
    layers = applied_layers(block.body)
    taken = {ly.label.name for ly in layers if ly.label is not None}
    out: dict[int, str | None] = {}
    for ly in layers:
        if ly.label is not None:
            out[id(ly)] = ly.label.name
            continue
        name = ly.callee.parts[-1]
        prim = PRIMITIVES.get(name) if len(ly.callee.parts) == 1 else None
        if prim is not None and not prim.has_weights and "module" not in prim.tags and ly.repeat is None:
            out[id(ly)] = None
            continue
        cand, k = name, 2
        while cand in taken:
            cand, k = f"{name}_{k}", k + 1
        taken.add(cand)
        out[id(ly)] = cand
    return out


def coerce(value: Value, spec: ParamSpec, span: Span | None, owner: str) -> Value:
    """Check and convert an argument to the parameter's declared type."""
    t = spec.type
    if isinstance(value, UnknownValue):
        raise EvalError("E402", f"`{spec.name}` of `{owner}` is still unknown here", span)
    if isinstance(value, Sym) and t == "layer":
        raise EvalError("E105", f"unknown layer `{value.name}` for `{spec.name}` of `{owner}`", span,
                        did_you_mean(value.name, PRIMITIVES), name=value.name)
    if isinstance(value, Sym) and t in ("int", "int_or_tuple", "float", "bool", "list"):
        raise EvalError("E103", f"undefined name `{value.name}`", span, name=value.name)
    if t == "int":
        v = as_int(value, span, f"`{spec.name}`")
        return v
    if t == "int_or_tuple":
        if isinstance(value, tuple):
            return tuple(as_int(x, span, f"`{spec.name}`") for x in value)
        return as_int(value, span, f"`{spec.name}`")
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "denominator"):
            raise EvalError("E201", f"`{spec.name}` of `{owner}` takes a number, not {describe(value)}", span)
        try:
            f = float(value)  # type: ignore[arg-type]
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):  # generated code has no literal for inf (it would read as a name)
            raise EvalError(LIMIT_CODE, f"`{spec.name}` of `{owner}` is {PAST_MAX_FLOAT}", span, LIMITS_HINT)
        return f
    if t == "bool":
        if not isinstance(value, bool):
            raise EvalError("E201", f"`{spec.name}` of `{owner}` takes true or false, not {describe(value)}", span)
        return value
    if t == "str":
        if isinstance(value, Sym):
            return value.name
        if isinstance(value, LayerRef) and not value.kwargs:
            return value.target.rsplit(".", 1)[-1]
        if not isinstance(value, str):
            raise EvalError("E201", f"`{spec.name}` of `{owner}` takes a string, not {describe(value)}", span)
        return value
    if t == "enum":
        name = value.name if isinstance(value, Sym) else (
            value.target.rsplit(".", 1)[-1] if isinstance(value, LayerRef) and not value.kwargs else None)
        if name is None or name not in spec.enum:
            shown = name if name is not None else format_value(value)
            raise EvalError("E203", f"`{shown}` is not a choice for `{spec.name}` of `{owner}`", span,
                            did_you_mean(shown, spec.enum) or f"choices: {', '.join(spec.enum)}")
        return Sym(name)
    if t == "layer":
        if not isinstance(value, LayerRef):
            raise EvalError("E201", f"`{spec.name}` of `{owner}` takes a layer, not {describe(value)}", span)
        return value
    if t == "list":
        if not isinstance(value, tuple):
            raise EvalError("E201", f"`{spec.name}` of `{owner}` takes a list, not {describe(value)}", span)
        return value
    return value


def bind_args(specs: Sequence[ParamSpec], positional: Sequence[tuple[Value, Span]], named: Sequence[tuple[str, Value, Span]],
              owner: str, call_span: Span, default_env: Mapping[str, Value], resolve: Any) -> dict[str, Value]:
    """Bind call arguments to parameters: positional first, then named, then defaults in order."""
    if len(positional) > len(specs):
        raise EvalError("E204", f"`{owner}` takes {len(specs)} arguments, {len(positional)} given", positional[len(specs)][1])
    bound: dict[str, Value] = {}
    spans: dict[str, Span] = {}
    for spec, (v, sp) in zip(specs, positional):
        bound[spec.name] = v
        spans[spec.name] = sp
    names = [s.name for s in specs]
    for n, v, sp in named:
        if n not in names:
            raise EvalError("E204", f"`{owner}` has no parameter `{n}`", sp,
                            did_you_mean(n, names) or f"parameters: {', '.join(names) or 'none'}")
        if n in bound:
            raise EvalError("E204", f"`{n}` is given twice in the call to `{owner}`", sp)
        bound[n] = v
        spans[n] = sp
    out: dict[str, Value] = {}
    env: dict[str, Value] = dict(default_env)
    for spec in specs:
        if spec.name in bound:
            val = coerce(bound[spec.name], spec, spans[spec.name], owner)
        elif spec.default is ...:
            raise EvalError("E204", f"`{owner}` needs `{spec.name}`", call_span,
                            f"pass it as `{spec.name} = ...`")
        elif isinstance(spec.default, A.Unknown):
            raise EvalError("E402", f"`{spec.name}` of `{owner}` is left open (`?`) and nothing solved it", call_span)
        elif isinstance(spec.default, A.Node):
            default = cast(A.Expr, spec.default)  # a block parameter's default is an expression (ParamSpec.default)
            val = coerce(evaluate(default, {**env, **out}, resolve), spec, default.span, owner)
        else:
            val = spec.default
            if spec.name == "kv_heads" and val == 0 and "heads" in out:
                val = out["heads"]
        out[spec.name] = val
    return out


class Elaborator:
    """Runs blocks. With `builder` it lowers into the graph; without, it counts parameters."""

    def __init__(self, prog: Program, builder: GraphBuilder | None = None) -> None:
        self.prog = prog
        self.builder = builder
        self._count_memo: dict[tuple[str, tuple[tuple[str, Any], ...]], int] = {}
        self._labels: dict[int, dict[int, str | None]] = {}
        self._active: list[tuple[str, tuple[tuple[str, Any], ...]]] = []  # blocks being run, innermost last

    # ------------------------------------------------------------ name resolution
    def resolver(self, module: str, env: Mapping[str, Value]) -> Any:
        def resolve(name: A.Name) -> Value:
            ref = self.layer_ref(module, name, env)
            if ref is not None:
                return ref
            if len(name.parts) == 1:
                return Sym(name.parts[0])
            raise EvalError("E103", f"undefined name `{name.dotted}`", name.span,
                            did_you_mean(name.dotted, list(env) + self.prog.visible(module)))

        return resolve

    def layer_ref(self, module: str, name: A.Name, env: Mapping[str, Value]) -> LayerRef | None:
        if len(name.parts) == 1 and name.parts[0] in env:
            v = env[name.parts[0]]
            if isinstance(v, LayerRef):
                return v
        d = self.prog.lookup(module, name)
        if d is not None and d.kind == "block":
            return LayerRef("block", d.qualname, (), name.span)
        if len(name.parts) == 1 and name.parts[0] in PRIMITIVES:
            return LayerRef("primitive", name.parts[0], (), name.span)
        return None

    def labels(self, block: A.Block) -> dict[int, str | None]:
        key = id(block)
        if key not in self._labels:
            self._labels[key] = layer_labels(block)
        return self._labels[key]

    # ------------------------------------------------------------ calls
    def callee_specs(self, ref: LayerRef) -> tuple[list[ParamSpec], str]:
        if ref.kind == "primitive":
            return param_specs(PRIMITIVES[ref.target]), ref.target
        d = self.prog.defs[ref.target]
        assert isinstance(d.node, A.Block)
        return param_specs(d.node), d.qualname

    def bind(self, ref: LayerRef, args: Sequence[A.Arg] | None, env: Mapping[str, Value], module: str,
             span: Span) -> dict[str, Value]:
        specs, owner = self.callee_specs(ref)
        resolve = self.resolver(module, env)
        positional: list[tuple[Value, Span]] = []
        named: list[tuple[str, Value, Span]] = []
        for a in args or ():
            v = evaluate(a.value, env, resolve)
            if a.name is None:
                if named:
                    raise EvalError("E204", "a positional argument follows a named one", a.span)
                positional.append((v, a.span))
            else:
                named.append((a.name.name, v, a.span))
        given = {n for n, _, _ in named} | {s.name for s, _ in zip(specs, positional)}
        for k, v in ref.kwargs:
            if k in given:
                raise EvalError("E204", f"`{k}` is bound by the layer value `{ref}` and given again here", span)
            named.append((k, v, ref.span or span))
        try:
            if ref.kind == "primitive":
                return bind_args(specs, positional, named, owner, span, {}, resolve)
            d = self.prog.defs[ref.target]
            return bind_args(specs, positional, named, owner, span, {}, self.resolver(d.module, {}))
        except EvalError as e:
            if e.code == "E103" and e.name is not None and e.hint is None:
                e.hint = did_you_mean(e.name, [*env, *self.prog.visible(module)])
            raise

    def apply(self, ref: LayerRef, bound: dict[str, Value], inputs: list[Tensor], path: str, label: str | None,
              span: Span, scope: str) -> list[Tensor]:
        if ref.kind == "primitive":
            prim = PRIMITIVES[ref.target]
            msg = prim.check(bound)
            if msg:
                raise EvalError("E206", f"`{ref.target}`: {msg}", span)
            if len(inputs) != prim.n_inputs:
                raise EvalError("E304", f"`{ref.target}` takes {prim.n_inputs} input tensor(s), {len(inputs)} given", span)
            n_out = prim.n_outputs(bound)
            if self.builder is None:
                return [Tensor(None, i) for i in range(n_out)]
            node_id = path if label is not None else self.builder.fresh(f"{scope}.{ref.target}" if scope else ref.target)
            if label is not None:
                self.builder.modules[path] = ModuleInfo(path, "primitive", ref.target, dict(bound), span)
            return self.builder.add_op(node_id, ref.target, bound, inputs, span, scope, n_out,
                                       path if label is not None else None)
        d = self.prog.defs[ref.target]
        assert isinstance(d.node, A.Block)
        if self.builder is not None:
            self.builder.modules[path] = ModuleInfo(path, "block", d.qualname, dict(bound), span)
        return self.run_block(d, bound, inputs, path)

    # ------------------------------------------------------------ counting
    def count_block(self, d: Definition, args: Mapping[str, Value]) -> int:
        key = (d.qualname, tuple(sorted(args.items())))
        if key in self._count_memo:
            return self._count_memo[key]
        saved = self.builder
        self.builder = None
        try:
            total = self._run_body(d, dict(args), [], "", count=True)[1]
        finally:
            self.builder = saved
        self._count_memo[key] = total
        return total

    def count_layer(self, ref: LayerRef, bound: Mapping[str, Value]) -> int:
        if ref.kind == "primitive":
            prim = PRIMITIVES[ref.target]
            msg = prim.check(bound)
            if msg:
                raise EvalError("E206", f"`{ref.target}`: {msg}", ref.span)
            return sum(math.prod(s) for s in prim.weights(bound).values())
        return self.count_block(self.prog.defs[ref.target], bound)

    # ------------------------------------------------------------ bodies
    def run_block(self, d: Definition, args: dict[str, Value], inputs: list[Tensor], path: str) -> list[Tensor]:
        return self._run_body(d, args, inputs, path, count=False)[0]

    def _run_body(self, d: Definition, args: dict[str, Value], inputs: list[Tensor], path: str,
                  count: bool) -> tuple[list[Tensor], int]:
        block = d.node
        assert isinstance(block, A.Block)
        env: dict[str, Any] = dict(args)
        labels = self.labels(block)
        state: _BodyState = {"params": 0, "inputs": list(inputs), "returned": None}
        owner = d.qualname.rsplit(".", 1)[-1]

        def tensor_of(v: Any, e: A.Expr) -> list[Tensor]:
            if isinstance(v, Tensor):
                return [v]
            if isinstance(v, tuple) and v and all(isinstance(t, Tensor) for t in v):
                return list(v)
            if isinstance(v, Sym) and isinstance(e, A.Name) and e.dotted == v.name:
                raise EvalError("E103", f"undefined name `{v.name}`", e.span,
                                did_you_mean(v.name, sorted(tensor_names) + sorted(_assigned(block.body))), name=v.name)
            raise EvalError("E201", f"expected a tensor, found {describe(v)}", e.span)

        def eval_t(e: A.Expr) -> Any:
            if isinstance(e, A.Apply):
                ins = tensor_of(eval_t(e.input), e.input)
                return apply_layer(e.layer, ins)
            if isinstance(e, A.Name) and len(e.parts) == 1 and e.parts[0] in env:
                return env[e.parts[0]]
            if isinstance(e, A.TupleExpr):
                items = [eval_t(i) for i in e.items]
                if any(isinstance(i, Tensor) for i in items):
                    return tuple(t for i, it in zip(e.items, items) for t in tensor_of(it, i))
                return tuple(items)
            if isinstance(e, A.BinOp) and e.op in OPERATOR_PRIMITIVES:
                a, b = eval_t(e.left), eval_t(e.right)
                if isinstance(a, Tensor) or isinstance(b, Tensor):
                    ta, tb = tensor_of(a, e.left), tensor_of(b, e.right)
                    if len(ta) != 1 or len(tb) != 1:
                        raise EvalError("E304", f"`{e.op}` takes single tensors", e.span)
                    ref = LayerRef("primitive", OPERATOR_PRIMITIVES[e.op])
                    return self.apply(ref, {}, [ta[0], tb[0]], "", None, e.span, path)[0]
                return evaluate(e, env, self.resolver(d.module, env))
            if isinstance(e, A.Name) and len(e.parts) == 1 and e.parts[0] in _assigned(block.body):
                later = _assigned(block.body)[e.parts[0]]
                raise EvalError("E108", f"tensor `{e.parts[0]}` is used before it is assigned", e.span,
                                f"`{e.parts[0]}` is first assigned on line {later.line}; assign it before this use")
            return evaluate(e, env, self.resolver(d.module, env))

        def apply_layer(layer: A.Layer, ins: list[Tensor]) -> Any:
            ref = self.layer_ref(d.module, layer.callee, env)
            if ref is None:
                cands = list(PRIMITIVES) + self.prog.visible(d.module, "block") + [
                    k for k, v in env.items() if isinstance(v, LayerRef)]
                raise EvalError("E105", f"unknown layer `{layer.callee.dotted}`", layer.callee.span,
                                did_you_mean(layer.callee.dotted, cands))
            bound = self.bind(ref, layer.args, env, d.module, layer.span)
            if ref.kind == "block":
                self._check_recursion(ref.target, bound, layer.callee.span)
            label = labels.get(id(layer))
            n = 1
            if layer.repeat is not None:
                n = as_int(evaluate(layer.repeat, env, self.resolver(d.module, env)), layer.repeat.span, "repeat count")
                if n < 0:
                    raise EvalError("E205", f"repeat count is {n}; it must be 0 or more", layer.repeat.span)
                if n > MAX_REPEAT:  # a limit of the language (limits.py), checked before any copy is made
                    what = f"`repeat({layer.repeat.dotted})`" if isinstance(layer.repeat, A.Name) else "a `repeat`"
                    raise EvalError(LIMIT_CODE, f"the count of {what} is {short_int(n)}, past the most the language "
                                    f"allows ({MAX_REPEAT:,})", layer.repeat.span, LIMITS_HINT)
            if count:
                state["params"] += n * self.count_layer(ref, bound)
                prim = PRIMITIVES.get(ref.target) if ref.kind == "primitive" else None
                if prim is not None:
                    outs = prim.n_outputs(bound)
                else:
                    outs = self._n_returns(self.prog.defs[ref.target].node)
                r = [Tensor(None, i) for i in range(outs)]
                return r[0] if len(r) == 1 else tuple(r)
            sub = f"{path}.{label}" if (path and label) else (label or path)
            if layer.repeat is not None:
                assert self.builder is not None and label is not None
                self.builder.modules[sub] = ModuleInfo(sub, "list", "list", {"n": n}, layer.span)
                cur = ins
                for i in range(n):
                    cur = self.apply(ref, bound, cur, f"{sub}.{i}", str(i), layer.span, f"{sub}.{i}")
                outs_t = cur
            else:
                outs_t = self.apply(ref, bound, ins, sub, label, layer.span, path)
            return outs_t[0] if len(outs_t) == 1 else tuple(outs_t)

        tensor_names: set[str] = set()

        def run(stmts: Sequence[A.Stmt]) -> None:
            for s in stmts:
                if state["returned"] is not None:
                    return
                if isinstance(s, A.Input):
                    ins = state["inputs"]
                    if not count and len(ins) != len(s.names):
                        raise EvalError("E304", f"`{owner}` takes {len(s.names)} input(s), {len(ins)} given", s.span)
                    for i, n in enumerate(s.names):
                        env[n.name] = ins[i] if i < len(ins) else Tensor(None, i)
                        tensor_names.add(n.name)
                elif isinstance(s, A.Let):
                    env[s.name.name] = evaluate(s.value, env, self.resolver(d.module, env))
                elif isinstance(s, A.Require):
                    ok = evaluate(s.cond, env, self.resolver(d.module, env))
                    if ok is not True:
                        msg = s.message or "requirement does not hold"
                        shown = ", ".join(f"{k} = {format_value(v)}" for k, v in args.items()
                                          if isinstance(v, (int, bool)) and k in _names_in(s.cond))
                        raise EvalError("E206", f"`{owner}`: {msg}" + (f" ({shown})" if shown else ""), s.span)
                elif isinstance(s, A.Assign):
                    v = eval_t(s.value)
                    if len(s.targets) == 1:
                        env[s.targets[0].name] = v
                        if isinstance(v, Tensor):
                            tensor_names.add(s.targets[0].name)
                    else:
                        vals = tensor_of(v, s.value)
                        if len(vals) != len(s.targets):
                            raise EvalError("E304", f"{len(s.targets)} names for {len(vals)} tensor(s)", s.span)
                        for t, val in zip(s.targets, vals):
                            env[t.name] = val
                            tensor_names.add(t.name)
                elif isinstance(s, A.If):
                    cond = evaluate(s.cond, env, self.resolver(d.module, env))
                    if not isinstance(cond, bool):
                        raise EvalError("E201", f"`if` needs a boolean, found {describe(cond)}", s.cond.span)
                    run(s.then if cond else s.orelse)
                elif isinstance(s, A.Return):
                    outs: list[Tensor] = []
                    for v in s.values:
                        outs.extend(tensor_of(eval_t(v), v))
                    state["returned"] = outs

        self._active.append((d.qualname, tuple(sorted(args.items()))))
        try:
            run(block.body)
        finally:
            self._active.pop()
        if state["returned"] is None:
            raise EvalError("E208", f"block `{owner}` ends without `return`", block.name.span)
        return state["returned"], state["params"]

    def _check_recursion(self, target: str, bound: Mapping[str, Value], span: Span) -> None:
        """A block that applies itself with the same arguments, or blocks nested past any sensible depth,
        would never finish elaborating: report it where the application is written."""
        key = (target, tuple(sorted(bound.items())))
        short = [q.rsplit(".", 1)[-1] for q, _ in self._active]
        name = target.rsplit(".", 1)[-1]
        if key in self._active:
            first = self._active.index(key)
            chain = " -> ".join(short[first:] + [name])
            raise EvalError("E109", f"block `{name}` applies itself with the same arguments ({chain})", span,
                            "a block may use itself only under an `if` that ends the recursion")
        if len(self._active) >= MAX_BLOCK_DEPTH:
            raise EvalError("E109", f"blocks nest more than {MAX_BLOCK_DEPTH} deep ({' -> '.join(short[:3])} -> ... -> {name})",
                            span, "a block that uses itself needs an `if` that ends the recursion")

    @staticmethod
    def _n_returns(block: object) -> int:
        """How many tensors a block returns, as its first `return` in source order says (1 without one)."""
        assert isinstance(block, A.Block)
        return next((len(s.values) for s in statements(block.body) if isinstance(s, A.Return) and s.values), 1)


def _assigned(body: tuple[A.Stmt, ...]) -> dict[str, Span]:
    """Every tensor name a block body assigns or declares as input, with its first span."""
    out: dict[str, Span] = {}
    for s in statements(body):
        for n in s.names if isinstance(s, A.Input) else s.targets if isinstance(s, A.Assign) else ():
            out.setdefault(n.name, n.span)
    return out


def _names_in(e: A.Expr) -> set[str]:
    """The names an expression reads (their first part), inside calls, tuples and indices too; the name of a
    called function or layer is not read."""
    nodes = list(walk(e))
    callees = {id(n.func) for n in nodes if isinstance(n, A.Call)} | {id(n.callee) for n in nodes
                                                                       if isinstance(n, A.Layer)}
    return {n.parts[0] for n in nodes if isinstance(n, A.Name) and id(n) not in callees}
