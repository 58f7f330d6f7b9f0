"""Graph IR + block definitions -> one readable model.py (nanoGPT style).

One class per block (specialised on its layer-valued parameters, e.g. the norm), a Config
dataclass with the solved dims, a straight-line forward with shape comments taken from the
graph's shape inference (the first instance of each class), and build_model / example_inputs /
example_batch entry points. The generated file imports torch only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from metagen_backends.decoding import RECURRENT

from metagen_compiler.compilation import Compilation
from metagen_compiler.escape import py_comment, py_doc, py_str
from metagen_compiler.ir.graph import GraphInput, GraphIR
from metagen_compiler.ir.spec import SlotIR, SpecIR
from metagen_compiler.primitives import PRIMITIVES, fmt_shape
from metagen_compiler.semantics.elaborate import Elaborator, ParamSpec, param_specs
from metagen_compiler.semantics.modalities import INPUT_FORMS, InputForm, input_forms
from metagen_compiler.semantics.program import Definition
from metagen_compiler.semantics.values import LayerRef, Sym, Value, evaluate
from metagen_compiler.syntax import ast as A

from .losses import LOSSES, TARGET_INPUT, TIMESTEP_INPUT, loss_helpers
from .lowering import (
    FUNCTIONAL,
    FUNCTIONAL_IN_PLACE,
    HELPERS,
    INPUT_NAMES,
    LEARNED_HELPERS,
    MODULE_CALL,
    MODULES,
    helper_deps,
    runtime_defs,
    runtime_method,
    runtime_source,
)
from .runtime import generates, model_decoding
from .writer import Namespace, Writer, attr_ident, camel, py_ident, state_dict_key

__all__ = ["emit_model_py"]

ClassKey = tuple[str, tuple[tuple[str, LayerRef], ...]]


def literal(v: Value) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if hasattr(v, "denominator"):
        return f"{v.numerator} / {v.denominator}"  # type: ignore[union-attr]
    if isinstance(v, str):
        return py_str(v)
    if isinstance(v, Sym):
        return py_str(v.name)
    if isinstance(v, tuple):
        return "(" + ", ".join(literal(i) for i in v) + ("," if len(v) == 1 else "") + ")"
    if v is None:
        return "None"
    raise TypeError(f"no Python literal for {v!r}")


_PY_OPS = {"and": "and", "or": "or"}
# build_model() returns channels-last weights where 2D convolutions are at least this share of the forward
# FLOPs. Measured on CPU (torch 2.13, oneDNN), NHWC / NCHW inference time: autoencoder_image 0.94, ResNet-50
# 0.91, conv VAE 0.86, YOLO 0.81, IMPALA 0.60, DQN 1.02 (2 ms, within noise; its training step 0.90);
# ConvNeXt and the hybrid ViT, below the share, 0.99-1.01 (benchmarks/models.py measures ResNet-50)
CHANNELS_LAST_SHARE = 0.5
# an activation with a FUNCTIONAL_IN_PLACE form, applied inline to the output of one of FRESH_OUTPUT (or of a
# tensor +, -, *), runs in place: those ops return a new tensor (never a view or their input) and autograd
# keeps their inputs, not their output, so overwriting it is safe in training too; it saves an allocation
FRESH_OUTPUT = frozenset({"conv1d", "conv2d", "conv3d", "conv_transpose2d", "linear", "batchnorm", "batchnorm1d",
                          "frozen_batchnorm", "layernorm", "layernorm2d", "groupnorm", "rmsnorm"})


def _derived_fields(spec: SpecIR, fields: list[ParamSpec], cfg: Callable[[str], str | None]) -> dict[str, tuple[str, str]]:
    """The Config fields whose value the spec computes from other fields (`heads = d_model / 64`, a family
    default `kv_heads = heads`), each as the Python expression over `self` that derives it and the same over
    the bare names (for the comment), in an order where every field comes after the ones it reads. A field
    given a number, solved (`?`) or set by a constraint, the task or `--set` is a plain field."""
    names = {f.name for f in fields}
    reads: dict[str, set[str]] = {}
    exprs: dict[str, A.Expr] = {}
    for f in fields:
        b = spec.bindings.get(f.name)
        if b is None or b.expr is None or isinstance(b.expr, A.Unknown):
            continue
        used = {n.dotted for n in A.subnodes(b.expr) if isinstance(n, A.Name)} & names
        if used:
            reads[f.name], exprs[f.name] = used, b.expr
    order: list[str] = []
    done: set[str] = set()

    def visit(n: str) -> None:
        if n in done:
            return
        done.add(n)
        for m in sorted(reads.get(n, ())):
            visit(m)
        if n in reads:
            order.append(n)

    for f in fields:
        visit(f.name)

    return {n: (py_expr(exprs[n], lambda m: f"self.{py_ident(m)}" if m in names else cfg(m)),
                py_expr(exprs[n], lambda m: m if m in names else cfg(m))) for n in order}


def py_expr(e: A.Expr, name: Callable[[str], str | None]) -> str:
    """An MSL compile-time expression as Python. `name` maps a variable to its Python spelling
    (None: not a variable, so an enum symbol, written as a string)."""

    true_div = False  # inside round/floor/ceil, `/` is the exact quotient, not the floor

    def go(x: A.Expr, parent: int = 0) -> str:
        nonlocal true_div
        if isinstance(x, A.Num):
            return repr(x.value)
        if isinstance(x, A.Quantity):
            from metagen_compiler.semantics.values import quantity_value

            return repr(quantity_value(x)[0])
        if isinstance(x, A.Str):
            return py_str(x.value)
        if isinstance(x, A.Bool):
            return "True" if x.value else "False"
        if isinstance(x, A.Name):
            n = name(x.dotted)
            return n if n is not None else py_str(x.parts[-1])
        if isinstance(x, A.BinOp):
            prec = {"+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "**": 8}[x.op]
            # dims are whole numbers (the checker has made sure); a float literal makes a true quotient
            floats = any(isinstance(i, A.Num) and isinstance(i.value, float) for i in (x.left, x.right))
            op = "//" if x.op == "/" and not (true_div or floats) else x.op
            s = f"{go(x.left, prec)} {op} {go(x.right, prec + 1)}"
            return f"({s})" if prec < parent else s
        if isinstance(x, A.Neg):
            return f"-{go(x.operand, 7)}"
        if isinstance(x, A.Compare):
            s = f"{go(x.left, 5)} {x.op} {go(x.right, 5)}"
            return f"({s})" if 4 < parent else s
        if isinstance(x, A.BoolOp):
            prec = 2 if x.op == "and" else 1
            s = f"{go(x.left, prec)} {x.op} {go(x.right, prec + 1)}"
            return f"({s})" if prec < parent else s
        if isinstance(x, A.Not):
            return f"not {go(x.operand, 3)}"
        if isinstance(x, A.Index):
            return f"{go(x.value, 10)}[{go(x.index)}]"
        if isinstance(x, A.TupleExpr | A.ListExpr):
            items = [go(i) for i in x.items]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if isinstance(x, A.Call):
            fn = {"round": "round", "floor": "math.floor", "ceil": "math.ceil", "min": "min", "max": "max",
                  "sqrt": "math.sqrt", "log2": "math.log2", "len": "len", "sum": "sum"}.get(x.func.dotted)
            if x.func.dotted == "round_up":
                a, m = (go(i.value) for i in x.args)
                return f"math.ceil({a} / {m}) * {m}"
            if fn is None:
                raise ValueError(f"cannot express `{x.func.dotted}` in Python")
            outer, true_div = true_div, true_div or fn in ("round", "math.floor", "math.ceil")
            args = ", ".join(go(i.value) for i in x.args)
            true_div = outer
            return f"{fn}({args})"
        raise ValueError(f"cannot express {type(x).__name__} in Python")

    return go(e)


def _uses_true_division(e: A.Expr) -> bool:
    return isinstance(e, A.BinOp) and e.op == "/"


@dataclass
class _Ctx:
    """What a block body's names mean while one class is generated."""

    key: ClassKey
    d: Definition
    layer_env: dict[str, LayerRef]
    values: set[str]  # params and lets (non-layer)
    self_attrs: set[str]  # names forward reads through self
    kv_cache: bool = False  # forward passes generate()'s key-value cache (self.kv_cache) to attention and rope


class PyTorchEmitter:
    def __init__(self, comp: Compilation) -> None:
        assert comp.graph is not None and comp.program is not None and comp.spec is not None
        self.comp = comp
        self.ir: GraphIR = comp.graph
        self.prog = comp.program
        self.spec = comp.spec
        self.elab = Elaborator(self.prog)
        self.ns = Namespace()
        self.class_names: dict[ClassKey, str] = {}
        self.class_src: list[str] = []
        self.helpers: set[str] = set()
        self.module_prims: set[str] = set()  # primitives instantiated as nn.Modules
        self.generates = generates(comp)  # a decoder-only LM: generate(), a key-value cache in its attention
        self.instances = self._first_instances()
        self._topo_pos = {n: i for i, n in enumerate(self.ir.topo())}

    # ------------------------------------------------------------ instances and shapes
    def _key_of(self, qualname: str, args: dict[str, Value]) -> ClassKey:
        d = self.prog.defs[qualname]
        assert isinstance(d.node, A.Block)
        layers = tuple((s.name, args[s.name]) for s in param_specs(d.node) if s.type == "layer"
                       and isinstance(args.get(s.name), LayerRef))
        return (qualname, layers)  # type: ignore[return-value]

    def _first_instances(self) -> dict[ClassKey, str]:
        out: dict[ClassKey, str] = {}
        for path, info in self.ir.modules.items():
            if info.kind == "block":
                out.setdefault(self._key_of(info.target, info.args), path)
        return out

    def _stmt_shapes(self, path: str) -> list[tuple[int, str, Any]]:
        """(topological position, shape text, span) of everything directly inside instance `path`."""
        items = []
        g = self.ir.g
        prefix = path + "."
        last_under: dict[str, int] = {}
        for n in g.nodes:
            if n.startswith(prefix):
                rest = n[len(prefix):]
                child = rest.split(".")[0]
                child_path = prefix + child
                if child_path in self.ir.modules and self.ir.modules[child_path].kind in ("block", "list"):
                    pos = self._topo_pos[n]
                    if pos > last_under.get(child_path, -1):
                        last_under[child_path] = pos
            d = g.nodes[n]
            if d.get("scope") == path and d["op"] != "input":
                shapes = d.get("shapes", [])
                items.append((self._topo_pos[n], ", ".join(fmt_shape(s) for s in shapes), d["span"]))
        order = self.ir.topo()
        for child_path, pos in last_under.items():
            node = order[pos]
            shapes = g.nodes[node].get("shapes", [])
            items.append((pos, ", ".join(fmt_shape(s) for s in shapes[:1]), self.ir.modules[child_path].span))
        return items

    @staticmethod
    def _shape_for(items: list[tuple[int, str, Any]], span: Any) -> str | None:
        best = None
        for pos, text, s in items:
            if s is None or s.file is None or span.file is None or s.file.path != span.file.path:
                continue
            if span.start <= s.start and s.end <= span.end and (best is None or pos > best[0]):
                best = (pos, text)
        return best[1] if best else None

    # ------------------------------------------------------------ classes
    def class_for(self, key: ClassKey) -> str:
        if key in self.class_names:
            return self.class_names[key]
        qual = key[0]
        base = camel(qual.rsplit(".", 1)[-1])
        name = self.ns.name(key, base)
        self.class_names[key] = name
        self.class_src.append(self._gen_class(key, name))
        return name

    def _layer_value(self, e: A.Expr | None, ctx_env: dict[str, LayerRef], module: str) -> LayerRef:
        assert e is not None
        v = evaluate(e, ctx_env, self.elab.resolver(module, ctx_env))
        assert isinstance(v, LayerRef), v
        return v

    def _call_parts(self, ref: LayerRef, args: Sequence[A.Arg] | None, ctx: _Ctx | None, value_name: Callable[[str], str | None],
                    layer_env: dict[str, LayerRef], module: str) -> tuple[list[tuple[ParamSpec, str | None]], dict[str, LayerRef]]:
        """For a call site: each non-layer parameter with its Python argument (None = default),
        and the callee's layer parameters' values."""
        callee = PRIMITIVES[ref.target] if ref.kind == "primitive" else self.prog.defs[ref.target].node
        specs = param_specs(callee)  # type: ignore[arg-type]
        given: dict[str, A.Expr | Value] = {}
        pos = [a for a in args or () if a.name is None]
        for s, a in zip(specs, pos):
            given[s.name] = a.value
        for a in args or ():
            if a.name is not None:
                given[a.name.name] = a.value
        for k, v in ref.kwargs:
            given[k] = v  # concrete values bound in a layer value
        layers: dict[str, LayerRef] = {}
        out: list[tuple[ParamSpec, str | None]] = []
        for s in specs:
            g = given.get(s.name)
            if s.type == "layer":
                if g is None:
                    callee_mod = self.prog.defs[ref.target].module if ref.kind == "block" else module
                    layers[s.name] = self._layer_value(s.default, {}, callee_mod)
                elif isinstance(g, LayerRef):
                    layers[s.name] = g
                else:
                    layers[s.name] = self._layer_value(g, layer_env, module)  # type: ignore[arg-type]
                continue
            if g is None:
                out.append((s, None))
            elif isinstance(g, A.Node):
                out.append((s, py_expr(g, value_name)))
            else:
                out.append((s, literal(g)))
        return out, layers

    def _ctor(self, ref: LayerRef, parts: list[tuple[ParamSpec, str | None]], layers: dict[str, LayerRef]) -> str:
        if ref.kind == "primitive":
            self.module_prims.add(ref.target)
            tmpl = MODULES[ref.target]
            for h in helper_deps(ref.target):
                self.helpers.add(h)
            return _fill(tmpl, {s.name: (a, s.default) for s, a in parts})
        d = self.prog.defs[ref.target]
        key = (ref.target, tuple(sorted(layers.items())))
        assert isinstance(d.node, A.Block)
        # keep the callee's parameter order for the layer tuple, as _key_of does
        key = (ref.target, tuple((s.name, layers[s.name]) for s in param_specs(d.node) if s.type == "layer"))
        cls = self.class_for(key)
        args: list[str] = []
        kw = False
        for s, a in parts:
            if a is None:
                kw = True
                continue
            args.append(f"{py_ident(s.name)}={a}" if kw else a)
        return f"{cls}({', '.join(args)})"

    def _gen_class(self, key: ClassKey, name: str) -> str:
        qual, layer_items = key
        d = self.prog.defs[qual]
        block = d.node
        assert isinstance(block, A.Block)
        layer_env = dict(layer_items)
        specs = param_specs(block)
        values = {s.name for s in specs if s.type != "layer"}
        lets = {s.name.name for s in _walk(block.body) if isinstance(s, A.Let)}
        ctx = _Ctx(key, d, layer_env, values | lets, set())
        labels = self.elab.labels(block)
        inst = self.instances.get(key)
        shape_items = self._stmt_shapes(inst) if inst else []

        # forward first: it decides which values __init__ must keep on self
        fw = Writer()
        inputs: list[str] = []
        with fw.indent(), fw.indent():
            self._gen_forward(block.body, fw, ctx, labels, shape_items, inputs)
        init = Writer()
        with init.indent(), init.indent():
            init.line("super().__init__()")
            for s in specs:
                if s.type != "layer" and s.name in ctx.self_attrs:
                    init.line(f"self.{py_ident(s.name)} = {py_ident(s.name)}")
            if ctx.kv_cache:
                init.line("self.kv_cache = None  # generate()'s key-value cache of this layer (generation.py)")
            self._gen_init(block.body, init, ctx, labels)

        w = Writer()
        w.line(f"class {name}(nn.Module):")
        with w.indent():
            spec_txt = ", ".join(f"{k}={v}" for k, v in layer_items)
            w.line(f'"""MSL block `{py_doc(d.qualname)}`{(" with " + py_doc(spec_txt)) if spec_txt else ""}; '
                   f'{py_doc(block.span.path)}:{block.span.line}.')
            if inst:
                w.line("")
                w.line(f"Shapes in comments are those of `{py_doc(inst)}`.")
            w.line('"""')
            w.line("")
            sig = []
            for s in specs:
                if s.type == "layer":
                    continue
                ann = {"int": "int", "float": "float", "bool": "bool", "str": "str", "enum": "str", "list": "tuple"}.get(s.type)
                default = ""
                if s.default is not ...:
                    dv = self._default_literal(s)
                    default = f" = {dv}"
                    if dv == "None" and ann:
                        ann = f"{ann} | None"
                sig.append(f"{py_ident(s.name)}" + (f": {ann}" if ann else "") + default)
            w.line(f"def __init__(self{''.join(', ' + a for a in sig)}):")
            w.lines.extend(init.lines)
            w.line("")
            w.line(f"def forward(self, {', '.join(inputs)}):")
            w.lines.extend(fw.lines)
        return w.text()

    def _default_literal(self, s: ParamSpec) -> str:
        if isinstance(s.default, (A.Num, A.Str, A.Bool)):
            return py_expr(s.default, lambda n: None)
        if isinstance(s.default, A.Name):
            return "None" if s.type not in ("enum", "str") else py_str(s.default.dotted)
        if isinstance(s.default, A.Neg) and isinstance(s.default.operand, A.Num):
            return py_expr(s.default, lambda n: None)
        if isinstance(s.default, A.ListExpr) and all(isinstance(i, A.Num) for i in s.default.items):
            return py_expr(s.default, lambda n: None)
        return "None"

    # ------------------------------------------------------------ __init__
    def _gen_init(self, body: Sequence[A.Stmt], w: Writer, ctx: _Ctx, labels: dict[int, str | None]) -> None:
        # parameters whose default is an expression over other parameters
        if ctx.d.node.body is body:  # type: ignore[union-attr]
            block = ctx.d.node
            assert isinstance(block, A.Block)
            for s in param_specs(block):
                if s.type != "layer" and s.default is not ... and self._default_literal(s) == "None" and not (
                        isinstance(s.default, A.Name) and s.default.dotted == "None"):
                    n = py_ident(s.name)
                    w.line(f"if {n} is None:")
                    with w.indent():
                        w.line(f"{n} = {py_expr(s.default, self._init_name(ctx))}")
                    if s.name in ctx.self_attrs:
                        with w.indent():
                            w.line(f"self.{n} = {n}")
        for st in body:
            if isinstance(st, A.Let):
                w.line(f"{py_ident(st.name.name)} = {py_expr(st.value, self._init_name(ctx))}")
                if st.name.name in ctx.self_attrs:
                    w.line(f"self.{py_ident(st.name.name)} = {py_ident(st.name.name)}")
            elif isinstance(st, A.Require):
                msg = st.message or "requirement does not hold"
                w.line(f"assert {py_expr(st.cond, self._init_name(ctx))}, {py_str(msg)}")
            elif isinstance(st, A.If):
                sub_then, sub_else = Writer(), Writer()
                sub_then.level = sub_else.level = w.level + 1
                self._gen_init(st.then, sub_then, ctx, labels)
                self._gen_init(st.orelse, sub_else, ctx, labels)
                if sub_then.lines or sub_else.lines:
                    w.line(f"if {py_expr(st.cond, self._init_name(ctx))}:")
                    w.lines.extend(sub_then.lines or ["    " * (w.level + 1) + "pass"])
                    if sub_else.lines:
                        w.line("else:")
                        w.lines.extend(sub_else.lines)
            elif isinstance(st, (A.Assign, A.Return)):
                vals = [st.value] if isinstance(st, A.Assign) else list(st.values)
                for v in vals:
                    for ly in _layers_in(v):
                        self._init_layer(ly, w, ctx, labels)

    def _init_name(self, ctx: _Ctx) -> Callable[[str], str | None]:
        return lambda n: py_ident(n) if n in ctx.values else None

    def _init_layer(self, ly: A.Layer, w: Writer, ctx: _Ctx, labels: dict[int, str | None]) -> None:
        label = labels.get(id(ly))
        ref = self.elab.layer_ref(ctx.d.module, ly.callee, ctx.layer_env)
        assert ref is not None, ly.callee.dotted
        if label is None or not _is_module(ref, ly):
            return
        parts, layers = self._call_parts(ref, ly.args, ctx, self._init_name(ctx), ctx.layer_env, ctx.d.module)
        ctor = self._ctor(ref, parts, layers)
        attr = attr_ident(label)
        if ly.repeat is not None:
            n = py_expr(ly.repeat, self._init_name(ctx))
            w.line(f"self.{attr} = nn.ModuleList([{ctor} for _ in range({n})])")
        else:
            w.line(f"self.{attr} = {ctor}")

    # ------------------------------------------------------------ forward
    def _fwd_name(self, ctx: _Ctx, tensors: set[str]) -> Callable[[str], str | None]:
        def name(n: str) -> str | None:
            if n in tensors:
                return py_ident(n)
            if n in ctx.values:
                ctx.self_attrs.add(n)
                return f"self.{py_ident(n)}"
            return None

        return name

    def _gen_forward(self, body: Sequence[A.Stmt], w: Writer, ctx: _Ctx, labels: dict[int, str | None],
                     shapes: list[tuple[int, str, Any]], inputs: list[str], tensors: set[str] | None = None) -> None:
        tensors = set() if tensors is None else tensors
        for st in body:
            if isinstance(st, A.Input):
                for n in st.names:
                    inputs.append(py_ident(n.name))
                    tensors.add(n.name)
            elif isinstance(st, A.If):
                cond = py_expr(st.cond, self._fwd_name(ctx, tensors))
                then_w = Writer()
                then_w.level = w.level + 1
                self._gen_forward(st.then, then_w, ctx, labels, shapes, inputs, tensors)
                else_w = Writer()
                else_w.level = w.level + 1
                self._gen_forward(st.orelse, else_w, ctx, labels, shapes, inputs, tensors)
                if then_w.lines or else_w.lines:
                    w.line(f"if {cond}:")
                    w.lines.extend(then_w.lines or ["    " * (w.level + 1) + "pass"])
                    if else_w.lines:
                        w.line("else:")
                        w.lines.extend(else_w.lines)
            elif isinstance(st, A.Assign):
                target = ", ".join(py_ident(t.name) for t in st.targets)  # a repeat's loop variables
                pre, expr = self._texpr(st.value, ctx, labels, tensors, target)
                for p in pre:
                    w.line(p)
                names = ", ".join(py_ident(t.name) for t in st.targets)
                shape = self._shape_for(shapes, st.span)
                line = f"{names} = {expr}"
                if line == f"{names} = {names}":
                    line = ""
                if line:
                    w.line(line + (f"  # {py_comment(shape)}" if shape else ""))
                elif shape and w.lines:
                    w.lines[-1] += f"  # {py_comment(shape)}"
                for t in st.targets:
                    tensors.add(t.name)
            elif isinstance(st, A.Return):
                first = st.values[0]
                hint = py_ident(first.input.parts[0]) if isinstance(first, A.Apply) and isinstance(
                    first.input, A.Name) else "h"
                outs = []
                for v in st.values:
                    pre, expr = self._texpr(v, ctx, labels, tensors, hint)
                    for p in pre:
                        w.line(p)
                    outs.append(expr)
                shape = self._shape_for(shapes, st.span)
                w.line(f"return {', '.join(outs)}" + (f"  # {py_comment(shape)}" if shape else ""))

    def _texpr(self, e: A.Expr, ctx: _Ctx, labels: dict[int, str | None], tensors: set[str],
               target: str | None) -> tuple[list[str], str]:
        pre: list[str] = []

        def go(x: A.Expr, parent: int = 0) -> str:
            if isinstance(x, A.Name) and x.dotted in tensors:
                return py_ident(x.dotted)
            if isinstance(x, A.BinOp) and x.op in ("+", "-", "*"):
                prec = 5 if x.op in "+-" else 6
                s = f"{go(x.left, prec)} {x.op} {go(x.right, prec + 1)}"
                return f"({s})" if prec < parent else s
            if isinstance(x, A.TupleExpr):
                return ", ".join(go(i) for i in x.items)
            if isinstance(x, A.Apply):
                ins = [go(i) for i in x.input.items] if isinstance(x.input, A.TupleExpr) else [go(x.input)]
                return self._apply(x.layer, ins, ctx, labels, tensors, pre, target, self._in_place_ok(x, ctx))
            return py_expr(x, self._fwd_name(ctx, tensors))

        return pre, go(e)

    def _in_place_ok(self, x: A.Apply, ctx: _Ctx) -> bool:
        """Whether an activation may overwrite its input: it has a FUNCTIONAL_IN_PLACE form, its input is a
        temporary of this expression (an application written inline, so nothing else reads it) made by an
        op in FRESH_OUTPUT (a new tensor, not a view or an alias, which autograd does not keep for backward)."""
        ref = self.elab.layer_ref(ctx.d.module, x.layer.callee, ctx.layer_env)
        if ref is None or ref.kind != "primitive" or ref.target not in FUNCTIONAL_IN_PLACE or x.layer.repeat:
            return False
        inner = x.input
        if isinstance(inner, A.BinOp):
            return inner.op in ("+", "-", "*")
        if not isinstance(inner, A.Apply) or inner.layer.repeat is not None:
            return False
        src = self.elab.layer_ref(ctx.d.module, inner.layer.callee, ctx.layer_env)
        return src is not None and src.kind == "primitive" and src.target in FRESH_OUTPUT

    def _apply(self, ly: A.Layer, ins: list[str], ctx: _Ctx, labels: dict[int, str | None], tensors: set[str],
               pre: list[str], target: str | None, in_place: bool = False) -> str:
        label = labels.get(id(ly))
        ref0 = self.elab.layer_ref(ctx.d.module, ly.callee, ctx.layer_env)
        assert ref0 is not None
        if label is not None and _is_module(ref0, ly):
            attr = attr_ident(label)
            if ly.repeat is not None:
                var = target or "h"
                if ", ".join(ins) != var:
                    pre.append(f"{var} = {', '.join(ins)}")
                pre.append(f"for layer in self.{attr}:")
                # several tensors: unpacked into names (`x, e = layer(x, e)`), or one tuple `h` (`h = layer(*h)`)
                star = "*" if len(ins) > 1 and "," not in var else ""
                pre.append(f"    {var} = layer({star}{var})")
                return var
            call = f"self.{attr}({', '.join(ins)})"
            if ref0.kind == "primitive" and ref0.target in MODULE_CALL:
                return MODULE_CALL[ref0.target].format(call=call)
            return call
        ref = self.elab.layer_ref(ctx.d.module, ly.callee, ctx.layer_env)
        assert ref is not None and ref.kind == "primitive", ly.callee.dotted
        parts, _ = self._call_parts(ref, ly.args, ctx, self._fwd_name(ctx, tensors), ctx.layer_env, ctx.d.module)
        for h in helper_deps(ref.target):
            self.helpers.add(h)
        argmap: dict[str, tuple[str | None, Any]] = {s.name: (a, s.default) for s, a in parts}
        names = INPUT_NAMES.get(ref.target, ("x",))
        tmpl = (FUNCTIONAL_IN_PLACE if in_place else FUNCTIONAL)[ref.target]
        for n, v in zip(names, ins):
            # parenthesise an operand only where the template puts it next to an operator or a `.`
            bare = f"({{{n}}}" in tmpl or f", {{{n}}}" in tmpl or tmpl == f"{{{n}}}"
            argmap[n] = (v if bare else _paren(v), ...)
        if ref.target == "dropout" and argmap["p"][0] in (None, "0.0", "0"):
            return ins[0]
        if ref.target == "sdpa" and argmap["kv_heads"][0] is None:
            argmap["kv_heads"] = argmap["heads"]
        if self.generates and "{cache}" in tmpl:  # the cache of generate() (runtime/generation.py)
            ctx.kv_cache = True
            argmap["cache"] = ("self.kv_cache", ...)
        if ref.target == "resize" and argmap["mode"][0] in ("'nearest'", '"nearest"'):
            # F.interpolate rejects align_corners in nearest mode
            return _fill(FUNCTIONAL[ref.target].replace(", align_corners=False", ""), argmap)
        return _fill(tmpl, argmap)

    # ------------------------------------------------------------ the model
    def emit(self) -> str:
        spec, ir = self.spec, self.ir
        fam = spec.family.node
        assert isinstance(fam, A.Family)
        fam_specs = param_specs(fam)
        layer_env = {k: v for k, v in spec.dims.items() if isinstance(v, LayerRef)}
        cfg_fields = [s for s in fam_specs if s.type != "layer"]
        cfg_names = {s.name for s in cfg_fields}
        model_cls = self.ns.name("model", camel(spec.name))

        def cfg(n: str) -> str | None:
            if n in cfg_names:
                return f"config.{py_ident(n)}"
            if n in spec.task_fields:
                return literal(spec.task_fields[n])
            return None

        slots = [*spec.encoders, spec.backbone, spec.head]
        ctors = []
        for slot in slots:
            assert slot is not None
            ref = self.elab.layer_ref(spec.family.module, slot.layer.callee, layer_env)
            assert ref is not None
            parts, layers = self._call_parts(ref, slot.layer.args, None, cfg, layer_env, spec.family.module)
            ctors.append((slot, self._ctor(ref, parts, layers)))

        w = Writer()
        w.line(f"class {model_cls}(nn.Module):")
        with w.indent():
            w.line(f'"""`{py_doc(spec.name)}`: {py_doc(", ".join(n for n, _ in spec.inputs))} -> {py_doc(spec.task)}, '
                   f'family `{py_doc(spec.family.qualname)}`, {ir.param_count():,} parameters."""')
            w.line("")
            w.line("def __init__(self, config: Config):")
            with w.indent():
                w.line("super().__init__()")
                w.line("self.config = config")
                for slot, ctor in ctors:
                    w.line(f"self.{slot.role} = {ctor}")
                for t in fam.ties:
                    cond = py_expr(t.cond, cfg) if t.cond is not None else "True"
                    w.line(f"if {cond}:  # tied weights: one tensor, counted once")
                    with w.indent():
                        w.line(f"self.{_path(t.target.dotted)} = self.{_path(t.source.dotted)}")
                w.line("self.apply(init_weights)")
                fields = self._loss_fields([py_ident(i.name) for i in ir.inputs])
                for ln in LOSSES[spec.loss].init:
                    w.line(ln.format(**fields))
            w.line("")
            in_names = [py_ident(i.name) for i in ir.inputs]
            w.line(f"def forward(self, {', '.join(in_names)}):")
            with w.indent():
                for i in ir.inputs:
                    w.line(f"# {py_comment(f'{i.name}: {i.dtype} {fmt_shape(i.shape)}')}")
                feats: list[str] = []
                k = 0
                for slot, _ctor in ctors[:-2]:
                    n_in = len(INPUT_FORMS[slot.modality or slot.key])
                    args, k = in_names[k:k + n_in], k + n_in
                    outs = self._slot_vars(slot, "x" if len(ctors) == 3 else f"{py_ident(slot.key)}_x")
                    w.line(f"{', '.join(outs)} = self.{slot.role}({', '.join(args)}){self._slot_shape(slot.role)}")
                    feats += outs
                assert spec.backbone is not None
                outs = self._slot_vars(spec.backbone, "x")
                w.line(f"{', '.join(outs)} = self.backbone({', '.join(feats)}){self._slot_shape('backbone')}")
                w.line(f"return self.head({', '.join(outs)}){self._slot_shape('head')}")
            w.line("")
            if self.generates:
                self._gen_generate(w)
            self._gen_loss(w, in_names)
        model_src = w.text()

        out = Writer()
        display = spec.metadata.get("display_name")
        out.line('"""' + f"{py_doc(spec.name)}: generated by metagenc from {py_doc(spec.span.path)}."
                 + (f" Display name: {py_doc(str(display))}." if display else ""))
        out.line("")
        out.line(f"Family `{py_doc(spec.family.qualname)}`"
                 + (f" (preset `{py_doc(spec.preset)}`)" if spec.preset else "")
                 + f"; task `{py_doc(spec.task)}`; loss `{py_doc(spec.loss)}`.")
        out.line(f"Parameters: {ir.param_count():,} (exact; equals report.json).")
        out.line("Regenerate with metagenc rather than editing by hand. Depends on torch only.")
        out.line('"""')
        out.line("")
        for mod in sorted({"math", *LOSSES[spec.loss].imports}):
            out.line(f"import {mod}")
        out.line("from dataclasses import dataclass")
        out.line("")
        out.line("import torch")
        out.line("import torch.nn as nn")
        out.line("import torch.nn.functional as F")
        out.line("")
        out.line("")
        out.line("@dataclass")
        out.line("class Config:")
        with out.indent():
            out.line('"""The solved dimensions. Override fields to build the same architecture at another size."""')
            out.line("")
            derived = _derived_fields(spec, cfg_fields, cfg)
            for s in cfg_fields:
                v = spec.dims[s.name]
                ann = {"int": "int", "float": "float", "bool": "bool", "str": "str", "enum": "str", "list": "tuple"}.get(
                    s.type, type(v).__name__)
                if s.name in derived:  # None: derived in __post_init__ from the fields it depends on
                    out.line(f"{py_ident(s.name)}: {ann} | None = None  # {literal(v)}: {derived[s.name][1]}")
                else:
                    out.line(f"{py_ident(s.name)}: {ann} = {literal(v)}")
            if derived:
                out.line("")
                out.line("def __post_init__(self):")
                with out.indent():
                    out.line('"""Fields the spec derives from others follow them unless given: '
                             'Config(d_model=128) rescales them."""')
                    for n, (expr, _) in derived.items():
                        out.line(f"if self.{py_ident(n)} is None:")
                        with out.indent():
                            out.line(f"self.{py_ident(n)} = {expr}")
        # the runtime definitions the layers and the task's code call, with those they call, in the runtime's order
        for text in runtime_source(self.helpers | loss_helpers(spec.loss)):
            out.line("")
            out.line("")
            out.lines.extend(text.split("\n"))
        for src in self.class_src:
            out.line("")
            out.line("")
            out.lines.extend(src.rstrip("\n").split("\n"))
        out.line("")
        out.line("")
        out.lines.extend(model_src.rstrip("\n").split("\n"))
        out.line("")
        out.line("")
        learned = [h for h in LEARNED_HELPERS if h in self.helpers]
        init_src = runtime_defs()[0]["init_weights"].text  # runtime/helpers.py's, with this model's convolutions
        convs = ["nn.Conv2d"] + [cls for prim, cls in _OTHER_CONVS.items() if prim in self.module_prims]
        if len(convs) > 1:  # every convolution starts with Kaiming normal weights
            init_src = init_src.replace("isinstance(module, nn.Conv2d)", f"isinstance(module, ({', '.join(convs)}))")
        if learned:
            kinds = learned[0] if len(learned) == 1 else "(" + ", ".join(learned) + ")"
            init_src += (f"\n    elif isinstance(module, {kinds}):\n"
                         "        nn.init.normal_(module.weight, mean=0.0, std=0.02)\n")
        out.lines.extend(init_src.strip("\n").split("\n"))
        self._gen_examples(out, model_cls)
        return _without_unused_imports(out.text())

    def _slot_vars(self, slot: SlotIR, base: str) -> list[str]:
        """Names for a slot's output tensors: `base`, or base0, base1, ... when it returns several."""
        ref = self.elab.layer_ref(self.spec.family.module, slot.layer.callee,
                                  {k: v for k, v in self.spec.dims.items() if isinstance(v, LayerRef)})
        assert ref is not None
        if ref.kind == "primitive":
            n = 1
        else:
            d = self.comp.program.defs[ref.target]  # type: ignore[union-attr]
            rets = [st for st in _walk(d.node.body) if isinstance(st, A.Return)]  # type: ignore[union-attr]
            n = len(rets[-1].values) if rets else 1
        return [base] if n == 1 else [f"{base}{i}" for i in range(n)]

    def _slot_shape(self, role: str) -> str:
        if role == "head" and len(self.ir.outputs) > 1:  # a head of several outputs: each one's shape
            return "  # " + py_comment(", ".join(fmt_shape(self.ir.shape_of(t)) for _, t in self.ir.outputs))
        last = None
        for n in self.ir.topo():
            if n == role or n.startswith(role + "."):
                last = n
        if last is None:  # a slot with no nodes (a backbone of zero layers)
            return ""
        return "  # " + py_comment(", ".join(fmt_shape(s) for s in self.ir.g.nodes[last]["shapes"]))

    def _loss_fields(self, in_names: list[str]) -> dict[str, str]:
        """What the loss templates (backends/pytorch/losses.py) fill in, from forward's input names."""
        x = in_names[0]
        args = ", ".join(f'batch["{n}"]' for n in in_names)
        # the token input a next-token head predicts: the decoder's `target` if the model has one, else the first;
        # `shifted` is every input with that one cut before its last token (teacher forcing)
        y = TARGET_INPUT if TARGET_INPUT in in_names else "text" if "text" in in_names else x
        shifted = ", ".join("tokens[:, :-1]" if n == y else f'batch["{n}"]' for n in in_names)
        # a diffusion model: the noised first input x_t at timesteps t, conditioned on the other inputs
        t = TIMESTEP_INPUT if TIMESTEP_INPUT in in_names else ""
        cond = [n for n in in_names[1:] if n != t]
        noisy = ", ".join("x_t" if n == x else "t" if n == t else f'batch["{n}"]' for n in in_names)
        step = ", ".join("x" if n == x else "t" if n == t else n for n in in_names)
        guided = ", ".join("torch.cat((x, x))" if n == x else "torch.cat((t, t))" if n == t
                           else f"torch.cat((uncond[{cond.index(n)}], {n}))" for n in in_names)
        form = _form_of(self.ir.inputs[0])
        shape = ", ".join(f"c.{py_ident(str(form.symbols.get(str(d), d)))}" if isinstance(d, str) else str(d)
                          for d in form.shape[1:])
        return {"x": x, "args": args, "y": y, "shifted": shifted, "t": t, "noisy": noisy, "cond": ", ".join(cond),
                "first": cond[0] if cond else x, "step": step, "guided": guided, "shape": shape}

    def _gen_loss(self, w: Writer, in_names: list[str]) -> None:
        code = LOSSES[self.spec.loss]
        fields = self._loss_fields(in_names)

        def lines(body: tuple[str, ...]) -> None:
            for ln in body:
                w.line(ln.format(**fields))

        w.line("def loss(self, batch):")
        with w.indent():
            doc = code.doc.format(**fields).split("\n")
            w.line('"""' + doc[0] + ("" if len(doc) > 1 else '"""'))
            for d in doc[1:]:
                w.line(d + ('"""' if d is doc[-1] else ""))
            aux = sorted({d["op"] for _, d in self.ir.g.nodes(data=True)
                          if d["op"] in PRIMITIVES and "aux_loss" in PRIMITIVES[d["op"]].tags})
            if not aux:
                lines(code.loss)
            else:  # modules that add a term of their own (the VAE's KL divergence): the task's loss plus those
                *body, last = code.loss
                assert last.startswith("return "), last
                lines((*body, "task_loss = " + last.removeprefix("return ")))
                w.line(f"return task_loss + auxiliary_loss(self)  # + the terms of {', '.join(aux)}")
                self.helpers.add("auxiliary_loss")
        w.line("")
        w.line("@torch.no_grad()")
        w.line("def metrics(self, batch):")
        with w.indent():
            w.line(f'"""The task\'s metrics on one batch: {py_doc(", ".join(self.spec.metrics))}."""')
            lines(code.metrics)
        if code.methods:
            w.line("")
            lines(code.methods)
        for key in code.source_methods:  # runtime model methods, as they are (detection's detect()); "": a blank line
            w.line("")
            if key:
                for ln in runtime_method(key).text.split("\n"):
                    w.line(ln)


    def _conv2d_share(self) -> float:
        """The share of the forward matmul FLOPs (at the nominal sizes) spent in 2D convolutions."""
        conv = total = 0
        for _, d in self.ir.g.nodes(data=True):
            f = int(d.get("flops", 0))
            total += f
            if d["op"] in ("conv2d", "conv_transpose2d"):
                conv += f
        return conv / total if total else 0.0

    def _gen_generate(self, w: Writer) -> None:
        """generate() of a model that decodes token by token (metagen_backends.decoding): the decode loop is the
        runtime's generation.py, copied beside model.py; an encoder-decoder's `decoding` tells it which inputs are
        the source, which modules read the source only (computed once) and which attentions are cross-attention."""
        plan = model_decoding(self.comp)
        assert plan is not None
        if plan.kind == "encoder_decoder":
            w.line("# generate()'s plan (generation.py): the inputs in forward's order, the decoder's, the modules that read")
            w.line("# the source only (run once per generate()), the attentions over the source (cross-attention)")
            w.line("decoding = {")
            with w.indent():
                w.line('"kind": "encoder_decoder",')
                names = ", ".join(py_str(py_ident(i.name), quote='"') for i in self.ir.inputs)
                w.line(f'"inputs": ({names}),')  # two or more: a source and the target
                target = py_str(py_ident(plan.target), quote='"')
                w.line(f'"target": {target},')
                for key, paths in (("once", plan.once), ("cross", plan.cross)):
                    w.line(f'"{key}": (')
                    with w.indent():
                        for p in paths:
                            w.line(py_str(state_dict_key(p), quote='"') + ",")
                    w.line("),")
            w.line("}")
            w.line("")
            w.line("def generate(self, input_ids, **kwargs):")
            with w.indent():
                w.line('"""The decoder\'s tokens for the source `input_ids`, as transformers\' generate(): the start token')
                w.line("(decoder_start_token_id) or decoder_input_ids, then up to max_new_tokens new ones; greedy, sampled")
                w.line("(do_sample, temperature, top_k, top_p, repetition_penalty) or beam search (num_beams, length_penalty,")
                w.line("early_stopping), stopping at eos_token_id; a padded source with attention_mask. The source is encoded")
                w.line("once, then one token per step with a key-value cache (generation.py).\"\"\"")
                w.line('return runtime_module("generation").generate(self, input_ids, **kwargs)')
            w.line("")
            return
        w.line("def generate(self, input_ids, **kwargs):")
        with w.indent():
            w.line('"""The prompt (B, T) and up to max_new_tokens new tokens, as transformers\' generate(): greedy, sampled')
            w.line("(do_sample, temperature, top_k, top_p, repetition_penalty, generator) or beam search (num_beams),")
            w.line("stopping at eos_token_id, left-padded prompts with attention_mask; one token per step with a")
            cache = " and ".join(x for x, has in (("key-value cache", "sdpa" in plan.ops),
                                                   ("recurrent state", bool(plan.ops & RECURRENT))) if has)
            w.line(f"{cache} (generation.py).\"\"\"")
            w.line('return runtime_module("generation").generate(self, input_ids, **kwargs)')
        w.line("")

    def _gen_examples(self, out: Writer, model_cls: str) -> None:
        spec, ir = self.spec, self.ir
        out.line("")
        out.line("")
        out.line(f"def build_model(config: Config | None = None, seed: int = {self.comp.options.seed}) -> {model_cls}:")
        with out.indent():
            out.line('"""The model with its initial weights (deterministic for a given seed)."""')
            out.line("torch.manual_seed(seed)")
            share = self._conv2d_share()
            if share >= CHANNELS_LAST_SHARE:
                out.line(f"model = {model_cls}(config or Config())")
                out.line(f"# channels-last (NHWC) weights: 2D convolutions are {share:.0%} of the forward FLOPs and run")
                out.line("# faster in NHWC (oneDNN, cuDNN); the activations follow the weights' memory format")
                out.line("return model.to(memory_format=torch.channels_last)")
            else:
                out.line(f"return {model_cls}(config or Config())")
        out.line("")
        out.line("")
        out.line(f"def example_inputs(model: {model_cls}, batch_size: int = 1, seed: int = 0):")
        with out.indent():
            out.line('"""The nominal inputs of the spec, as a tuple for model(*inputs)."""')
            out.line("c = model.config")
            out.line("g = torch.Generator().manual_seed(seed)")
            out.line("device = next(model.parameters()).device")
            items = [_example_input(_form_of(i), spec.dims) for i in ir.inputs]
            out.line(f"return ({', '.join(items)},)")
        out.line("")
        out.line("")
        out.line(f"def example_batch(model: {model_cls}, batch_size: int = 2, seed: int = 0) -> dict:")
        with out.indent():
            out.line('"""A batch for model.loss(batch): inputs and random targets of the right form."""')
            out.line("inputs = example_inputs(model, batch_size, seed)")
            keys = ", ".join(py_str(i.name, quote='"') + f": inputs[{k}]" for k, i in enumerate(ir.inputs))
            out.line(f"batch = {{{keys}}}")
            fields = self._loss_fields([py_ident(i.name) for i in ir.inputs])
            targets = [ln.format(**fields) for ln in LOSSES[spec.loss].batch]
            if any(_G.search(ln) for ln in targets):  # the targets' random numbers, seeded apart from the inputs'
                out.line("g = torch.Generator().manual_seed(seed + 1)")
            for ln in targets:
                out.line(ln)
            out.line("return batch")
        if self.generates:  # generate() loads generation.py with it
            out.line("")
            out.lines.extend(HELPERS["runtime_module"].rstrip("\n").split("\n"))


_OTHER_CONVS = {"conv1d": "nn.Conv1d", "conv3d": "nn.Conv3d", "conv_transpose2d": "nn.ConvTranspose2d"}


def _form_of(i: GraphInput) -> InputForm:
    forms = input_forms(i.name.rsplit("_", 1)[0] if len(INPUT_FORMS[i.modality]) > 1 else i.name, i.modality)
    return forms[0] if len(forms) == 1 else next(f for f in forms if i.name.endswith(f"_{f.suffix}"))


def _example_input(form: InputForm, dims: dict[str, Value]) -> str:
    """A random input of the form (metagen_compiler/semantics/modalities.py), sized from config `c` (a dim the
    family has no parameter for is the form's default, a literal)."""

    def dim(d: int | str) -> str:
        if d == "B":
            return "batch_size"
        if isinstance(d, int):
            return str(d)
        name = form.symbols.get(d, d)
        return f"c.{py_ident(name)}" if name in dims else str(form.defaults[name])

    dims_ = [dim(d) for d in form.shape]
    size = "(" + ", ".join(dims_) + ("," if len(dims_) == 1 else "") + ")"
    if form.dtype == "int64" and form.sorted_last:  # boxes: x0 <= x1, y0 <= y1
        return f"torch.randint(0, c.{py_ident(form.high or 'vocab')}, {size}, generator=g).sort(-1).values.to(device)"
    if form.dtype == "int64":
        return f"torch.randint(0, c.{py_ident(form.high or 'vocab')}, {size}, generator=g).to(device)"
    return f"torch.randn({size}, generator=g).to(device)"


def _is_module(ref: LayerRef, ly: A.Layer) -> bool:
    """Whether a layer application owns a submodule (blocks, weighted primitives, repeats)."""
    prim = PRIMITIVES.get(ref.target) if ref.kind == "primitive" else None
    return prim is None or ly.repeat is not None or prim.has_weights or "module" in prim.tags


def _paren(v: str) -> str:
    return f"({v})" if any(op in v for op in (" + ", " - ", " * ", " @ ")) else v


def _fill(tmpl: str, args: dict[str, tuple[str | None, Any]]) -> str:
    """Fill a template. `?` before a segment drops it when its argument is the default."""
    import re

    out = []
    segments = tmpl.split("?")
    for i, seg in enumerate(segments):
        names = re.findall(r"\{(\w+)\}", seg)
        optional = i > 0
        if optional and names:
            val, default = args.get(names[0], (None, ...))
            if val is None or (default is not ... and val == literal(default)):
                m = re.match(r"^(.*?\{\w+\})(.*)$", seg, re.DOTALL)
                assert m is not None
                seg = m.group(2)
                names = names[1:]
                out.append(_fill_plain(seg, args))
                continue
        out.append(_fill_plain(seg, args))
    return "".join(out)


def _fill_plain(seg: str, args: dict[str, tuple[str | None, Any]]) -> str:
    import re

    def rep(m: re.Match[str]) -> str:
        val, default = args.get(m.group(1), (None, ...))
        if val is None:
            return literal(default) if default is not ... else "None"
        return val

    return re.sub(r"\{(\w+)\}", rep, seg)


def _path(dotted: str) -> str:
    return ".".join(f"{p}" if not p.isdigit() else f"[{p}]" for p in dotted.split(".")).replace(".[", "[")


def _walk(stmts: Sequence[A.Stmt]) -> list[A.Stmt]:
    out: list[A.Stmt] = []
    for s in stmts:
        out.append(s)
        if isinstance(s, A.If):
            out += _walk(s.then) + _walk(s.orelse)
    return out


def _layers_in(e: A.Expr) -> list[A.Layer]:
    out: list[A.Layer] = []

    def go(x: object) -> None:
        if isinstance(x, A.Apply):
            go(x.input)
            out.append(x.layer)
        elif isinstance(x, (A.BinOp, A.Compare, A.BoolOp)):
            go(x.left)
            go(x.right)
        elif isinstance(x, (A.TupleExpr, A.ListExpr)):
            for i in x.items:
                go(i)

    go(e)
    return out


_G = re.compile(r"(?<![\w.])g\b")
# modules model.py's header imports for most models, with the name a use of each starts with
_OPTIONAL_IMPORTS = {"import math\n": re.compile(r"(?<![\w.])math\."),
                     "import torch.nn.functional as F\n": re.compile(r"(?<![\w.])F\.")}


def _without_unused_imports(text: str) -> str:
    """model.py without the header's `import math` or `F` where no line uses them (pyflakes-clean output)."""
    for line, use in _OPTIONAL_IMPORTS.items():
        head, found, rest = text.partition(line)
        if found and not use.search(rest) and not use.search(head):
            text = head + rest
    return text


def emit_model_py(comp: Compilation) -> str:
    return PyTorchEmitter(comp).emit()


_ = (math, _uses_true_division)
