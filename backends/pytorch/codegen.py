"""Structure IR + graph IR -> one readable model.py (nanoGPT style).

One class per class of the structure IR (a block specialised on its layer-valued parameters, e.g. the norm),
a Config dataclass with the solved dims, a straight-line forward with shape comments taken from the graph's
shape inference (the first instance of each class, as the structure pass pinned them on the statements), and
build_model / example_inputs / example_batch entry points. The backend reads the structure, spec and graph IRs
only: it never sees the AST or runs the elaborator. The generated file imports torch only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from metagen_backends.decoding import RECURRENT

from metagen_compiler.compilation import Compilation
from metagen_compiler.escape import py_comment, py_doc, py_str
from metagen_compiler.ir import structure as S
from metagen_compiler.ir.graph import GraphInput, GraphIR
from metagen_compiler.primitives import PRIMITIVES, fmt_shape
from metagen_compiler.semantics.modalities import INPUT_FORMS, InputForm, input_forms
from metagen_compiler.semantics.values import Sym, Value

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

NameFn = Callable[[S.Name], str | None]


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
_BUILTINS = {"round": "round", "floor": "math.floor", "ceil": "math.ceil", "min": "min", "max": "max",
             "sqrt": "math.sqrt", "log2": "math.log2", "len": "len", "sum": "sum"}
_ANNOTATIONS = {"int": "int", "float": "float", "bool": "bool", "str": "str", "enum": "str", "list": "tuple"}


def _is_num(x: S.Expr) -> bool:
    """A number written as such in the source."""
    return isinstance(x, S.Const) and x.literal and isinstance(x.value, int | float) and not isinstance(x.value, bool)


def py_expr(e: S.Expr, name: NameFn) -> str:
    """A compile-time expression of the structure IR as Python. `name` spells a name in Python (None: not a
    variable there, so a symbol, written as a string of its last part)."""

    true_div = False  # inside round/floor/ceil, `/` is the exact quotient, not the floor

    def go(x: S.Expr, parent: int = 0) -> str:
        nonlocal true_div
        if isinstance(x, S.Const):
            return literal(x.value)
        if isinstance(x, S.Name):
            n = name(x)
            return n if n is not None else py_str(x.last)
        if isinstance(x, S.BinOp):
            prec = {"+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "**": 8}[x.op]
            # dims are whole numbers (the checker has made sure); a float literal makes a true quotient
            floats = any(_is_num(i) and isinstance(i.value, float) for i in (x.left, x.right))  # type: ignore[union-attr]
            op = "//" if x.op == "/" and not (true_div or floats) else x.op
            s = f"{go(x.left, prec)} {op} {go(x.right, prec + 1)}"
            return f"({s})" if prec < parent else s
        if isinstance(x, S.Neg):
            return f"-{go(x.operand, 7)}"
        if isinstance(x, S.Compare):
            s = f"{go(x.left, 5)} {x.op} {go(x.right, 5)}"
            return f"({s})" if 4 < parent else s
        if isinstance(x, S.BoolOp):
            prec = 2 if x.op == "and" else 1
            s = f"{go(x.left, prec)} {x.op} {go(x.right, prec + 1)}"
            return f"({s})" if prec < parent else s
        if isinstance(x, S.Not):
            return f"not {go(x.operand, 3)}"
        if isinstance(x, S.Index):
            return f"{go(x.base, 10)}[{go(x.key)}]"
        if isinstance(x, S.TupleExpr):
            items = [go(i) for i in x.items]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if isinstance(x, S.Builtin):
            fn = _BUILTINS.get(x.func)
            if x.func == "round_up":
                a, m = (go(i) for i in x.args)
                return f"math.ceil({a} / {m}) * {m}"
            if fn is None:
                raise ValueError(f"cannot express `{x.func}` in Python")
            outer, true_div = true_div, true_div or fn in ("round", "math.floor", "math.ceil")
            args = ", ".join(go(i) for i in x.args)
            true_div = outer
            return f"{fn}({args})"
        raise ValueError(f"cannot express {type(x).__name__} in Python")

    return go(e)


def _init_name(n: S.Name) -> str | None:
    """__init__'s spelling: the class's parameters and lets are its arguments and locals."""
    return py_ident(n.name) if n.kind in ("param", "let") else None


def _config_name(n: S.Name) -> str | None:
    """The top model's spelling: Config fields through `config`, task fields as their values."""
    if n.kind == "config":
        return f"config.{py_ident(n.name)}"
    if n.kind == "task":
        return literal(n.value)
    return None


def _shape_text(shapes: tuple[S.Shape, ...] | None) -> str:
    return ", ".join(fmt_shape(s) for s in shapes) if shapes is not None else ""


@dataclass
class _Ctx:
    """What one class's generation has found so far."""

    cls: S.ClassIR
    self_attrs: set[str] = field(default_factory=set)  # values forward reads through self
    kv_cache: bool = False  # forward passes generate()'s key-value cache (self.kv_cache) to attention and rope


class PyTorchEmitter:
    def __init__(self, comp: Compilation) -> None:
        assert comp.graph is not None and comp.structure is not None and comp.spec is not None
        self.comp = comp
        self.ir: GraphIR = comp.graph
        self.structure: S.StructureIR = comp.structure
        self.spec = comp.spec
        self.ns = Namespace()
        self.class_names: dict[str, str] = {}
        self.class_src: list[str] = []
        self.helpers: set[str] = set()
        self.module_prims: set[str] = set()  # primitives instantiated as nn.Modules
        self.generates = generates(comp)  # a decoder-only LM: generate(), a key-value cache in its attention

    # ------------------------------------------------------------ classes
    def class_for(self, cid: str) -> str:
        if cid in self.class_names:
            return self.class_names[cid]
        cls = self.structure.classes[cid]
        name = self.ns.name(("class", cid), camel(cls.name))
        self.class_names[cid] = name
        self.class_src.append(self._gen_class(cls, name))
        return name

    @staticmethod
    def _args(args: tuple[tuple[str, S.Expr | None], ...], name: NameFn) -> list[tuple[str, str | None]]:
        """A call's value arguments as Python (None: the parameter's default)."""
        return [(n, None if a is None else py_expr(a, name)) for n, a in args]

    @staticmethod
    def _prim_args(target: str, parts: list[tuple[str, str | None]]) -> dict[str, tuple[str | None, Any]]:
        defaults = {p.name: p.default for p in PRIMITIVES[target].params}
        return {n: (a, defaults[n]) for n, a in parts}

    def _ctor(self, callee: S.Callee, parts: list[tuple[str, str | None]]) -> str:
        if callee.kind == "primitive":
            self.module_prims.add(callee.target)
            tmpl = MODULES[callee.target]
            for h in helper_deps(callee.target):
                self.helpers.add(h)
            return _fill(tmpl, self._prim_args(callee.target, parts))
        cls = self.class_for(callee.target)
        args: list[str] = []
        kw = False
        for n, a in parts:
            if a is None:
                kw = True
                continue
            args.append(f"{py_ident(n)}={a}" if kw else a)
        return f"{cls}({', '.join(args)})"

    def _gen_class(self, cls: S.ClassIR, name: str) -> str:
        ctx = _Ctx(cls)
        inst = cls.instance

        # forward first: it decides which values __init__ must keep on self
        fw = Writer()
        inputs: list[str] = []
        with fw.indent(), fw.indent():
            self._gen_forward(cls.body, fw, ctx, inputs)
        init = Writer()
        with init.indent(), init.indent():
            init.line("super().__init__()")
            for p in cls.params:
                if p.name in ctx.self_attrs:
                    init.line(f"self.{py_ident(p.name)} = {py_ident(p.name)}")
            if ctx.kv_cache:
                init.line("self.kv_cache = None  # generate()'s key-value cache of this layer (generation.py)")
            self._gen_init(cls.body, init, ctx, top=True)

        w = Writer()
        w.line(f"class {name}(nn.Module):")
        with w.indent():
            spec_txt = ", ".join(f"{k}={v}" for k, v in cls.layers)
            w.line(f'"""MSL block `{py_doc(cls.qualname)}`{(" with " + py_doc(spec_txt)) if spec_txt else ""}; '
                   f'{py_doc(cls.span.path)}:{cls.span.line}.')
            if inst:
                w.line("")
                w.line(f"Shapes in comments are those of `{py_doc(inst)}`.")
            w.line('"""')
            w.line("")
            sig = []
            for p in cls.params:
                ann = _ANNOTATIONS.get(p.type)
                default = ""
                if p.default is not None:
                    dv = self._default_literal(p)
                    default = f" = {dv}"
                    if dv == "None" and ann:
                        ann = f"{ann} | None"
                sig.append(f"{py_ident(p.name)}" + (f": {ann}" if ann else "") + default)
            w.line(f"def __init__(self{''.join(', ' + a for a in sig)}):")
            w.lines.extend(init.lines)
            w.line("")
            w.line(f"def forward(self, {', '.join(inputs)}):")
            w.lines.extend(fw.lines)
        return w.text()

    @staticmethod
    def _default_literal(p: S.ParamIR) -> str:
        d = p.default
        if isinstance(d, S.Const) and d.literal:
            return py_expr(d, lambda n: None)
        if isinstance(d, S.Name):
            return "None" if p.type not in ("enum", "str") else py_str(d.name)
        if isinstance(d, S.Neg) and _is_num(d.operand):
            return py_expr(d, lambda n: None)
        if isinstance(d, S.TupleExpr) and d.is_list and all(_is_num(i) for i in d.items):
            return py_expr(d, lambda n: None)
        return "None"

    # ------------------------------------------------------------ __init__
    def _gen_init(self, body: tuple[S.Stmt, ...], w: Writer, ctx: _Ctx, top: bool = False) -> None:
        # parameters whose default is an expression over other parameters
        if top:
            for p in ctx.cls.params:
                if p.default is not None and self._default_literal(p) == "None" and not (
                        isinstance(p.default, S.Name) and p.default.name == "None"):
                    n = py_ident(p.name)
                    w.line(f"if {n} is None:")
                    with w.indent():
                        w.line(f"{n} = {py_expr(p.default, _init_name)}")
                    if p.name in ctx.self_attrs:
                        with w.indent():
                            w.line(f"self.{n} = {n}")
        for st in body:
            if isinstance(st, S.Let):
                w.line(f"{py_ident(st.name)} = {py_expr(st.value, _init_name)}")
                if st.name in ctx.self_attrs:
                    w.line(f"self.{py_ident(st.name)} = {py_ident(st.name)}")
            elif isinstance(st, S.Require):
                msg = st.message or "requirement does not hold"
                w.line(f"assert {py_expr(st.cond, _init_name)}, {py_str(msg)}")
            elif isinstance(st, S.If):
                sub_then, sub_else = Writer(), Writer()
                sub_then.level = sub_else.level = w.level + 1
                self._gen_init(st.then, sub_then, ctx)
                self._gen_init(st.orelse, sub_else, ctx)
                if sub_then.lines or sub_else.lines:
                    w.line(f"if {py_expr(st.cond, _init_name)}:")
                    w.lines.extend(sub_then.lines or ["    " * (w.level + 1) + "pass"])
                    if sub_else.lines:
                        w.line("else:")
                        w.lines.extend(sub_else.lines)
            elif isinstance(st, S.Assign | S.Return):
                vals = [st.value] if isinstance(st, S.Assign) else list(st.values)
                for v in vals:
                    for ap in _applies_in(v):
                        self._init_layer(ap, w)

    def _init_layer(self, ap: S.Apply, w: Writer) -> None:
        if ap.attr is None:
            return
        ctor = self._ctor(ap.callee, self._args(ap.args, _init_name))
        attr = attr_ident(ap.attr)
        if ap.repeat is not None:
            n = py_expr(ap.repeat, _init_name)
            w.line(f"self.{attr} = nn.ModuleList([{ctor} for _ in range({n})])")
        else:
            w.line(f"self.{attr} = {ctor}")

    # ------------------------------------------------------------ forward
    @staticmethod
    def _fwd_name(ctx: _Ctx) -> NameFn:
        def name(n: S.Name) -> str | None:
            if n.kind == "tensor":
                return py_ident(n.name)
            if n.kind in ("param", "let"):
                ctx.self_attrs.add(n.name)
                return f"self.{py_ident(n.name)}"
            return None

        return name

    def _gen_forward(self, body: tuple[S.Stmt, ...], w: Writer, ctx: _Ctx, inputs: list[str]) -> None:
        for st in body:
            if isinstance(st, S.Input):
                inputs.extend(py_ident(n) for n in st.names)
            elif isinstance(st, S.If):
                cond = py_expr(st.cond, self._fwd_name(ctx))
                then_w = Writer()
                then_w.level = w.level + 1
                self._gen_forward(st.then, then_w, ctx, inputs)
                else_w = Writer()
                else_w.level = w.level + 1
                self._gen_forward(st.orelse, else_w, ctx, inputs)
                if then_w.lines or else_w.lines:
                    w.line(f"if {cond}:")
                    w.lines.extend(then_w.lines or ["    " * (w.level + 1) + "pass"])
                    if else_w.lines:
                        w.line("else:")
                        w.lines.extend(else_w.lines)
            elif isinstance(st, S.Assign):
                names = ", ".join(py_ident(t) for t in st.targets)  # also a repeat's loop variables
                pre, expr = self._texpr(st.value, ctx, names)
                for p in pre:
                    w.line(p)
                shape = _shape_text(st.shapes)
                line = f"{names} = {expr}"
                if line == f"{names} = {names}":
                    line = ""
                if line:
                    w.line(line + (f"  # {py_comment(shape)}" if shape else ""))
                elif shape and w.lines:
                    w.lines[-1] += f"  # {py_comment(shape)}"
            elif isinstance(st, S.Return):
                first = st.values[0]
                hint = py_ident(first.input.name.split(".")[0]) if isinstance(first, S.Apply) and isinstance(
                    first.input, S.Name) else "h"
                outs = []
                for v in st.values:
                    pre, expr = self._texpr(v, ctx, hint)
                    for p in pre:
                        w.line(p)
                    outs.append(expr)
                shape = _shape_text(st.shapes)
                w.line(f"return {', '.join(outs)}" + (f"  # {py_comment(shape)}" if shape else ""))

    def _texpr(self, e: S.Expr, ctx: _Ctx, target: str | None) -> tuple[list[str], str]:
        pre: list[str] = []

        def go(x: S.Expr, parent: int = 0) -> str:
            if isinstance(x, S.Name) and x.kind == "tensor":
                return py_ident(x.name)
            if isinstance(x, S.BinOp) and x.op in ("+", "-", "*"):
                prec = 5 if x.op in "+-" else 6
                s = f"{go(x.left, prec)} {x.op} {go(x.right, prec + 1)}"
                return f"({s})" if prec < parent else s
            if isinstance(x, S.TupleExpr) and not x.is_list:
                return ", ".join(go(i) for i in x.items)
            if isinstance(x, S.Apply):
                several = isinstance(x.input, S.TupleExpr) and not x.input.is_list
                ins = [go(i) for i in x.input.items] if several else [go(x.input)]  # type: ignore[union-attr]
                return self._apply(x, ins, ctx, pre, target, _in_place_ok(x))
            return py_expr(x, self._fwd_name(ctx))

        return pre, go(e)

    def _apply(self, ap: S.Apply, ins: list[str], ctx: _Ctx, pre: list[str], target: str | None,
               in_place: bool = False) -> str:
        if ap.attr is not None:
            attr = attr_ident(ap.attr)
            if ap.repeat is not None:
                var = target or "h"
                if ", ".join(ins) != var:
                    pre.append(f"{var} = {', '.join(ins)}")
                pre.append(f"for layer in self.{attr}:")
                # several tensors: unpacked into names (`x, e = layer(x, e)`), or one tuple `h` (`h = layer(*h)`)
                star = "*" if len(ins) > 1 and "," not in var else ""
                pre.append(f"    {var} = layer({star}{var})")
                return var
            call = f"self.{attr}({', '.join(ins)})"
            if ap.callee.kind == "primitive" and ap.callee.target in MODULE_CALL:
                return MODULE_CALL[ap.callee.target].format(call=call)
            return call
        target_op = ap.callee.target
        assert ap.callee.kind == "primitive", target_op
        parts = self._args(ap.args, self._fwd_name(ctx))
        for h in helper_deps(target_op):
            self.helpers.add(h)
        argmap = self._prim_args(target_op, parts)
        names = INPUT_NAMES.get(target_op, ("x",))
        tmpl = (FUNCTIONAL_IN_PLACE if in_place else FUNCTIONAL)[target_op]
        for n, v in zip(names, ins):
            # parenthesise an operand only where the template puts it next to an operator or a `.`
            bare = f"({{{n}}}" in tmpl or f", {{{n}}}" in tmpl or tmpl == f"{{{n}}}"
            argmap[n] = (v if bare else _paren(v), ...)
        if target_op == "dropout" and argmap["p"][0] in (None, "0.0", "0"):
            return ins[0]
        if target_op == "sdpa" and argmap["kv_heads"][0] is None:
            argmap["kv_heads"] = argmap["heads"]
        if self.generates and "{cache}" in tmpl:  # the cache of generate() (runtime/generation.py)
            ctx.kv_cache = True
            argmap["cache"] = ("self.kv_cache", ...)
        if target_op == "resize" and argmap["mode"][0] in ("'nearest'", '"nearest"'):
            # F.interpolate rejects align_corners in nearest mode
            return _fill(FUNCTIONAL[target_op].replace(", align_corners=False", ""), argmap)
        return _fill(tmpl, argmap)

    # ------------------------------------------------------------ the model
    def emit(self) -> str:
        spec, ir, st = self.spec, self.ir, self.structure
        model_cls = self.ns.name("model", camel(spec.name))
        ctors = [(slot, self._ctor(slot.call.callee, self._args(slot.call.args, _config_name))) for slot in st.slots]

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
                for t in st.ties:
                    cond = py_expr(t.cond, _config_name) if t.cond is not None else "True"
                    w.line(f"if {cond}:  # tied weights: one tensor, counted once")
                    with w.indent():
                        w.line(f"self.{_path(t.target)} = self.{_path(t.source)}")
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
                    outs = _slot_vars(slot, "x" if len(ctors) == 3 else f"{py_ident(slot.key)}_x")
                    w.line(f"{', '.join(outs)} = self.{slot.role}({', '.join(args)}){_slot_shape(slot)}")
                    feats += outs
                backbone, head = st.slots[-2:]
                outs = _slot_vars(backbone, "x")
                w.line(f"{', '.join(outs)} = self.backbone({', '.join(feats)}){_slot_shape(backbone)}")
                w.line(f"return self.head({', '.join(outs)}){_slot_shape(head)}")
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
            derived = _derived_fields(st)
            for f in st.config:
                ann = _ANNOTATIONS.get(f.type, type(f.value).__name__)
                if f.name in derived:  # None: derived in __post_init__ from the fields it depends on
                    out.line(f"{py_ident(f.name)}: {ann} | None = None  # {literal(f.value)}: {derived[f.name][1]}")
                else:
                    out.line(f"{py_ident(f.name)}: {ann} = {literal(f.value)}")
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
            aux = sorted({d.op for d in self.ir.nodes.values()
                          if d.op in PRIMITIVES and "aux_loss" in PRIMITIVES[d.op].tags})
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
        for d in self.ir.nodes.values():
            f = d.flops or 0
            total += f
            if d.op in ("conv2d", "conv_transpose2d"):
                conv += f
        return conv / total if total else 0.0

    def _gen_generate(self, w: Writer) -> None:
        """generate() of a model that decodes token by token (metagen_backends.decoding): the decode loop is the
        runtime's generation.py, copied beside model.py; an encoder-decoder's `decoding` tells it which inputs are
        the source, which modules read the source only (computed once) and which attentions are cross-attention."""
        plan = model_decoding(self.comp)
        assert plan is not None
        if plan.kind == "prefix_decoder":  # a VLM: the image's prefix computed once, then the prompt's tokens
            names = ", ".join(py_str(py_ident(i.name), quote='"') for i in self.ir.inputs)
            once = "".join(py_str(state_dict_key(p), quote='"') + ", " for p in plan.once)
            target = py_str(py_ident(plan.target), quote='"')
            w.line("# generate()'s plan (generation.py): the inputs in forward's order, the prompt's, the modules that")
            w.line("# compute the prefix joined before the prompt (run once per generate(); their keys and values cached)")
            w.line(f'decoding = {{"kind": "prefix_decoder", "inputs": ({names}), "target": {target}, "once": ({once.strip()})}}')
            w.line("")
            w.line("def generate(self, input_ids, **kwargs):")
            with w.indent():
                w.line('"""The prompt (B, T) and up to max_new_tokens new tokens after the prefix of the other inputs, given by')
                w.line("name (e.g. image=...), as transformers' generate(): greedy, sampled (do_sample, temperature, top_k,")
                w.line("top_p, repetition_penalty, generator) or beam search (num_beams), stopping at eos_token_id, left-padded")
                w.line('prompts with attention_mask; the prefix is computed once, then one token per step with a key-value')
                w.line('cache (generation.py)."""')
                w.line('return runtime_module("generation").generate(self, input_ids, **kwargs)')
            w.line("")
            return
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


def _paren(v: str) -> str:
    return f"({v})" if any(op in v for op in (" + ", " - ", " * ", " @ ")) else v


def _fill(tmpl: str, args: dict[str, tuple[str | None, Any]]) -> str:
    """Fill a template. `?` before a segment drops it when its argument is the default."""
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
    def rep(m: re.Match[str]) -> str:
        val, default = args.get(m.group(1), (None, ...))
        if val is None:
            return literal(default) if default is not ... else "None"
        return val

    return re.sub(r"\{(\w+)\}", rep, seg)


def _path(dotted: str) -> str:
    return ".".join(f"{p}" if not p.isdigit() else f"[{p}]" for p in dotted.split(".")).replace(".[", "[")


def _applies_in(e: S.Expr) -> list[S.Apply]:
    """The layer applications of a tensor expression, inner ones first (the order __init__ builds them in)."""
    out: list[S.Apply] = []

    def go(x: S.Expr) -> None:
        if isinstance(x, S.Apply):
            go(x.input)
            out.append(x)
        elif isinstance(x, S.BinOp | S.Compare | S.BoolOp):
            go(x.left)
            go(x.right)
        elif isinstance(x, S.TupleExpr):
            for i in x.items:
                go(i)

    go(e)
    return out


def _in_place_ok(x: S.Apply) -> bool:
    """Whether an activation may overwrite its input: it has a FUNCTIONAL_IN_PLACE form, its input is a
    temporary of this expression (an application written inline, so nothing else reads it) made by an
    op in FRESH_OUTPUT (a new tensor, not a view or an alias, which autograd does not keep for backward)."""
    if x.callee.kind != "primitive" or x.callee.target not in FUNCTIONAL_IN_PLACE or x.repeat is not None:
        return False
    inner = x.input
    if isinstance(inner, S.BinOp):
        return inner.op in ("+", "-", "*")
    if not isinstance(inner, S.Apply) or inner.repeat is not None:
        return False
    return inner.callee.kind == "primitive" and inner.callee.target in FRESH_OUTPUT


def _slot_vars(slot: S.SlotIR, base: str) -> list[str]:
    """Names for a slot's output tensors: `base`, or base0, base1, ... when it returns several."""
    return [base] if slot.n_outputs == 1 else [f"{base}{i}" for i in range(slot.n_outputs)]


def _slot_shape(slot: S.SlotIR) -> str:
    return "" if slot.shapes is None else "  # " + py_comment(_shape_text(slot.shapes))


def _derived_fields(st: S.StructureIR) -> dict[str, tuple[str, str]]:
    """The Config fields the spec derives from others (`heads = d_model / 64`, a family default `kv_heads =
    heads`), in the order __post_init__ computes them: each as the Python expression over `self` that derives
    it and the same over the bare names (for the comment)."""
    fields = {f.name: f for f in st.config}

    def on_self(n: S.Name) -> str | None:
        return f"self.{py_ident(n.name)}" if n.kind == "config" else _config_name(n)

    def bare(n: S.Name) -> str | None:
        return n.name if n.kind == "config" else _config_name(n)

    out = {}
    for name in st.derived:
        e = fields[name].derived
        assert e is not None
        out[name] = (py_expr(e, on_self), py_expr(e, bare))
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

