"""structure: the module-level IR (ir/structure.py) the backends read instead of the block ASTs.

Walks each block a model uses once per specialisation (its layer-valued arguments), both branches of every
`if`, resolving names, callees and submodule attributes, and pins the graph's shapes on the statements of each
class's first instance: a node of the instance (or the last node of a submodule it applies) belongs to the
statement whose expression holds the node's layer application or operator (matched by span, once, here: the
backends never compare source positions). Sizes that come from a Config field are written as the field's name
(`_SymbolicShapes`), so a shape comment stays true for another Config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from metagen_compiler.ir import structure as S
from metagen_compiler.ir.graph import GraphIR, Node
from metagen_compiler.ir.spec import Bound, SlotIR
from metagen_compiler.semantics.elaborate import Elaborator, ParamSpec, param_specs
from metagen_compiler.semantics.modalities import INPUT_FORMS, input_forms
from metagen_compiler.semantics.program import Program
from metagen_compiler.semantics.unused import unused_params
from metagen_compiler.semantics.values import EvalError, LayerRef, Value, evaluate, quantity_value
from metagen_compiler.syntax import ast as A

from ..compilation import Compilation
from ..primitives import PRIMITIVES, ShapeError, subst_dim
from ..span import Span

__all__ = ["StructurePass", "build_structure"]

ClassKey = tuple[str, tuple[tuple[str, LayerRef], ...]]
SpanKey = tuple[str, int, int]
Resolve = Callable[[str], S.Name]


@dataclass(frozen=True)
class StructurePass:
    name: ClassVar[str] = "structure"
    doc: ClassVar[str] = ("Build the module structure: one class per specialised block with its parameters, "
                          "submodules and forward statements (resolved callees, the graph's shapes).")

    def run(self, comp: Compilation) -> None:
        try:
            comp.structure = build_structure(comp)
            assert comp.spec is not None
            comp.unused_params = unused_params(comp.spec, comp.spec.dims)
        except EvalError as e:
            comp.bag.error(e.code, e.message, e.span, hint=e.hint)

    def dump(self, comp: Compilation) -> str:
        return S.dump_structure(comp.structure) if comp.structure is not None else ""


def build_structure(comp: Compilation) -> S.StructureIR:
    assert comp.spec is not None and comp.program is not None and comp.graph is not None
    return _Builder(comp.program, comp.graph).build()


def _span_key(sp: Span | None) -> SpanKey | None:
    return None if sp is None else (sp.path, sp.start, sp.end)


class _Scope(NamedTuple):
    """What the names of one block body mean while its class is built."""

    key: ClassKey
    module: str
    layer_env: dict[str, LayerRef]
    params: set[str]  # value parameters
    lets: set[str]
    labels: dict[int, str | None]
    # the first instance's nodes by span: (topological position, node, whether only its first output counts)
    nodes: dict[SpanKey, tuple[int, str, bool]] | None


class _Builder:
    def __init__(self, prog: Program, graph: GraphIR) -> None:
        self.prog = prog
        self.graph = graph
        self.spec = graph.spec
        self.elab = Elaborator(prog)
        self.ids: dict[ClassKey, str] = {}
        self.classes: dict[ClassKey, S.ClassIR] = {}
        self.order: list[ClassKey] = []
        self.applies: dict[ClassKey, dict[SpanKey, S.Apply]] = {}  # each class's layer applications by span
        self._stmt_nodes: dict[int, tuple[str, bool]] = {}  # id of an Assign or Return -> its node (shapes)
        self._spans: list[Span] = []  # the spans of the applications and operators converted since the last reset
        self._layer_params: dict[str, tuple[str, ...]] = {}  # a block's layer parameters, by qualname
        self._by_scope: dict[str, list[tuple[int, str, bool, SpanKey | None]]] | None = None  # _index_nodes
        self._last_under: dict[str, int] = {}
        self._children: dict[str, list[str]] = {}
        self._topo = graph.topo()
        self._topo_pos = {n: i for i, n in enumerate(self._topo)}
        self.instances: dict[ClassKey, str] = {}
        for path, info in graph.modules.items():
            if info.kind == "block":
                self.instances.setdefault(self._key_of(info.target, info.args), path)

    # ------------------------------------------------------------ classes
    def _key_of(self, qualname: str, args: dict[str, Value]) -> ClassKey:
        names = self._layer_params.get(qualname)
        if names is None:
            d = self.prog.defs[qualname]
            assert isinstance(d.node, A.Block)
            names = self._layer_params[qualname] = tuple(s.name for s in param_specs(d.node) if s.type == "layer")
        return (qualname, tuple((n, v) for n in names if isinstance(v := args.get(n), LayerRef)))

    def class_id(self, key: ClassKey) -> str:
        if key in self.ids:
            return self.ids[key]
        qual, layers = key
        base = qual + ("[" + ", ".join(f"{k}={v}" for k, v in layers) + "]" if layers else "")
        cid, k = base, 2
        taken = set(self.ids.values())
        while cid in taken:  # two keys that print alike (layer values with kwargs)
            cid, k = f"{base}#{k}", k + 1
        self.ids[key] = cid
        self.order.append(key)
        self.classes[key] = self._build_class(key, cid)
        return cid

    def _build_class(self, key: ClassKey, cid: str) -> S.ClassIR:
        qual, layer_items = key
        d = self.prog.defs[qual]
        block = d.node
        assert isinstance(block, A.Block)
        specs = param_specs(block)
        inst = self.instances.get(key)
        scope = _Scope(key, d.module, dict(layer_items), {s.name for s in specs if s.type != "layer"},
                       {s.name.name for s in _walk(block.body) if isinstance(s, A.Let)}, self.elab.labels(block),
                       self._node_index(inst) if inst else None)
        self.applies[key] = {}
        init = self._init_resolver(scope)
        params = tuple(S.ParamIR(s.name, s.type, None if s.default is ... else self._expr(s.default, init, scope))
                       for s in specs if s.type != "layer")
        body = self._body(block.body, scope, set())
        return S.ClassIR(cid, d.qualname, layer_items, params, body, inst, block.span)

    # ------------------------------------------------------------ names
    @staticmethod
    def _init_resolver(scope: _Scope) -> Resolve:
        """Names as __init__ sees them: the class's values, else symbols."""

        def res(n: str) -> S.Name:
            return S.Name(n, "param" if n in scope.params else "let" if n in scope.lets else "symbol")

        return res

    @staticmethod
    def _forward_resolver(scope: _Scope, tensors: set[str]) -> Resolve:
        """Names as forward sees them: the tensors assigned so far, then the class's values, else symbols."""

        def res(n: str) -> S.Name:
            if n in tensors:
                return S.Name(n, "tensor")
            return S.Name(n, "param" if n in scope.params else "let" if n in scope.lets else "symbol")

        return res

    def _config_resolver(self, fields: set[str]) -> Resolve:
        """Names at the model level: Config fields, task fields (constants), else symbols."""
        task = self.spec.task_fields

        def res(n: str) -> S.Name:
            if n in fields:
                return S.Name(n, "config")
            if n in task:
                return S.Name(n, "task", task[n])
            return S.Name(n, "symbol")

        return res

    # ------------------------------------------------------------ expressions
    def _expr(self, e: A.Expr, res: Resolve, scope: _Scope | None, tensors: set[str] | None = None) -> S.Expr:
        def go(x: A.Expr) -> S.Expr:
            t = type(x)
            if t is A.Name:
                return res(x.dotted)  # type: ignore[union-attr]
            if t is A.Num or t is A.Str or t is A.Bool:
                return S.Const(x.value)  # type: ignore[union-attr, arg-type]
            if isinstance(x, A.Quantity):
                return S.Const(quantity_value(x)[0], literal=False)
            if isinstance(x, A.BinOp):
                self._spans.append(x.span)  # an operator on tensors is a node of this span
                return S.BinOp(x.op, go(x.left), go(x.right))
            if isinstance(x, A.Compare):
                return S.Compare(x.op, go(x.left), go(x.right))
            if isinstance(x, A.BoolOp):
                return S.BoolOp(x.op, go(x.left), go(x.right))
            if isinstance(x, A.Neg):
                return S.Neg(go(x.operand))
            if isinstance(x, A.Not):
                return S.Not(go(x.operand))
            if isinstance(x, A.Index):
                return S.Index(go(x.value), go(x.index))
            if isinstance(x, A.TupleExpr | A.ListExpr):
                return S.TupleExpr(tuple(go(i) for i in x.items), isinstance(x, A.ListExpr))
            if isinstance(x, A.Call):
                return S.Builtin(x.func.dotted, tuple(go(a.value) for a in x.args))
            if isinstance(x, A.Apply) and scope is not None:
                self._spans.append(x.layer.span)  # a layer application's nodes carry its layer's span
                return self._apply(x, scope, tensors if tensors is not None else set(), go(x.input))
            raise EvalError("E201", f"`{type(x).__name__}` has no value here", x.span)

        return go(e)

    def _apply(self, x: A.Apply, scope: _Scope, tensors: set[str], inp: S.Expr) -> S.Apply:
        ly = x.layer
        ref = self.elab.layer_ref(scope.module, ly.callee, scope.layer_env)
        if ref is None:
            raise EvalError("E105", f"unknown layer `{ly.callee.dotted}`", ly.callee.span)
        label = scope.labels.get(id(ly))
        module = label is not None and _is_module(ref, ly)
        # a submodule's arguments are __init__'s (the class's values); a functional call's are forward's
        res = self._init_resolver(scope) if module else self._forward_resolver(scope, tensors)
        callee, args = self._call(ref, ly.args, res, scope.layer_env, scope.module, scope, tensors)
        repeat = self._expr(ly.repeat, self._init_resolver(scope), scope) if ly.repeat is not None else None
        out = S.Apply(callee, args, inp, label if module else None, repeat, ly.span)
        self.applies[scope.key][(ly.span.path, ly.span.start, ly.span.end)] = out
        return out

    def _layer_value(self, e: A.Expr, env: dict[str, LayerRef], module: str) -> LayerRef:
        v = evaluate(e, env, self.elab.resolver(module, env))
        if not isinstance(v, LayerRef):
            raise EvalError("E201", f"expected a layer, found `{v}`", e.span)
        return v

    def _call(self, ref: LayerRef, args: Sequence[A.Arg] | None, res: Resolve, layer_env: dict[str, LayerRef],
              module: str, scope: _Scope | None, tensors: set[str] | None,
              ) -> tuple[S.Callee, tuple[tuple[str, S.Expr | None], ...]]:
        """A call site: the callee (a class specialised on the values of its layer parameters) and each of its
        value parameters with the argument given (None: its default)."""
        specs: list[ParamSpec]
        if ref.kind == "primitive":
            specs = param_specs(PRIMITIVES[ref.target])
        else:
            node = self.prog.defs[ref.target].node
            assert isinstance(node, A.Block)
            specs = param_specs(node)
        given: dict[str, A.Expr | Value] = {}
        for s, a in zip(specs, [a for a in args or () if a.name is None]):
            given[s.name] = a.value
        for a in args or ():
            if a.name is not None:
                given[a.name.name] = a.value
        for k, v in ref.kwargs:
            given[k] = v  # concrete values bound in a layer value
        layers: dict[str, LayerRef] = {}
        out: list[tuple[str, S.Expr | None]] = []
        for s in specs:
            g = given.get(s.name)
            if s.type == "layer":
                if g is None:
                    callee_mod = self.prog.defs[ref.target].module if ref.kind == "block" else module
                    layers[s.name] = self._layer_value(s.default, {}, callee_mod)
                elif isinstance(g, LayerRef):
                    layers[s.name] = g
                else:
                    assert isinstance(g, A.Node)
                    layers[s.name] = self._layer_value(g, layer_env, module)
                continue
            if g is None:
                out.append((s.name, None))
            elif isinstance(g, A.Node):
                out.append((s.name, self._expr(g, res, scope, tensors)))
            else:
                out.append((s.name, S.Const(g, literal=False)))
        if ref.kind == "primitive":
            return S.Callee("primitive", ref.target), tuple(out)
        layer_key = tuple((s.name, layers[s.name]) for s in specs if s.type == "layer")
        return S.Callee("class", self.class_id((ref.target, layer_key))), tuple(out)

    # ------------------------------------------------------------ statements
    def _body(self, stmts: Sequence[A.Stmt], scope: _Scope, tensors: set[str]) -> tuple[S.Stmt, ...]:
        out: list[S.Stmt] = []
        init = self._init_resolver(scope)
        for st in stmts:
            if isinstance(st, A.Input):
                names = tuple(n.name for n in st.names)
                tensors.update(names)
                out.append(S.Input(names, st.span))
            elif isinstance(st, A.Let):
                out.append(S.Let(st.name.name, self._expr(st.value, init, scope), st.span))
            elif isinstance(st, A.Require):
                out.append(S.Require(self._expr(st.cond, init, scope), st.message, st.span))
            elif isinstance(st, A.If):
                cond = self._expr(st.cond, self._forward_resolver(scope, tensors), scope, tensors)
                then = self._body(st.then, scope, tensors)
                orelse = self._body(st.orelse, scope, tensors)
                out.append(S.If(cond, then, orelse, st.span))
            elif isinstance(st, A.Assign):
                outer, self._spans = self._spans, []  # a class built on the way collects its own
                value = self._expr(st.value, self._forward_resolver(scope, tensors), scope, tensors)
                spans, self._spans = self._spans, outer
                assign = S.Assign(tuple(t.name for t in st.targets), value, None, st.span)
                self._pin(assign, spans, scope)
                out.append(assign)
                tensors.update(t.name for t in st.targets)
            elif isinstance(st, A.Return):
                fwd = self._forward_resolver(scope, tensors)
                outer, self._spans = self._spans, []
                values = tuple(self._expr(v, fwd, scope, tensors) for v in st.values)
                spans, self._spans = self._spans, outer
                ret = S.Return(values, None, st.span)
                self._pin(ret, spans, scope)
                out.append(ret)
        return tuple(out)

    # ------------------------------------------------------------ shapes
    def _node_index(self, path: str) -> dict[SpanKey, tuple[int, str, bool]]:
        """What instance `path` computes, by the span of the application or operator that computes it: its own
        nodes (every output), and each block or repeat it applies (the first output of that submodule's last
        node). Where a span computes several, the last in topological order."""
        if self._by_scope is None:
            self._index_nodes()
        assert self._by_scope is not None
        modules = self.graph.modules
        items = list(self._by_scope.get(path, ()))
        for child_path in self._children.get(path, ()):
            pos = self._last_under.get(child_path)
            if pos is not None:
                items.append((pos, self._topo[pos], True, _span_key(modules[child_path].span)))
        out: dict[SpanKey, tuple[int, str, bool]] = {}
        for pos, node, first, key in items:
            if key is not None and (key not in out or pos > out[key][0]):
                out[key] = (pos, node, first)
        return out

    def _index_nodes(self) -> None:
        """One walk of the graph for every instance's `_node_index`: the nodes by scope, the last node (in
        topological order) under each block or repeat, and each block's block and repeat children."""
        modules = self.graph.modules
        by_scope: dict[str, list[tuple[int, str, bool, SpanKey | None]]] = {}
        last_under: dict[str, int] = {}
        for n, d in self.graph.nodes.items():
            pos = self._topo_pos[n]
            if d.op != "input":
                by_scope.setdefault(d.scope, []).append((pos, n, False, _span_key(d.span)))
            q = n
            while "." in q:
                q = q.rsplit(".", 1)[0]
                info = modules.get(q)
                if info is not None and info.kind in ("block", "list") and pos > last_under.get(q, -1):
                    last_under[q] = pos
        children: dict[str, list[str]] = {}
        for q, info in modules.items():
            if info.kind in ("block", "list") and "." in q:
                children.setdefault(q.rsplit(".", 1)[0], []).append(q)
        self._by_scope, self._last_under, self._children = by_scope, last_under, children

    def _pin(self, ir: S.Assign | S.Return, spans: list[Span], scope: _Scope) -> None:
        """Note the node whose shapes `ir` carries: of the nodes the first instance made from the statement's
        applications and operators (their spans, collected as it was converted), the last."""
        if scope.nodes is None:
            return
        best: tuple[int, str, bool] | None = None
        for sp in spans:
            hit = scope.nodes.get((sp.path, sp.start, sp.end))
            if hit is not None and (best is None or hit[0] > best[0]):
                best = hit
        if best is not None:
            self._stmt_nodes[id(ir)] = best[1:]

    def _shaped(self, stmts: tuple[S.Stmt, ...], shapes: dict[str, list[S.Shape]]) -> tuple[S.Stmt, ...]:
        """`stmts` with each Assign's and Return's shapes filled in from `shapes` (node -> output shapes)."""
        out: list[S.Stmt] = []
        for st in stmts:
            if isinstance(st, S.Assign | S.Return):
                ref = self._stmt_nodes.get(id(st))
                if ref is not None:
                    node, first = ref
                    st = st._replace(shapes=tuple(shapes[node][:1] if first else shapes[node]))
            elif isinstance(st, S.If):
                st = st._replace(then=self._shaped(st.then, shapes), orelse=self._shaped(st.orelse, shapes))
            out.append(st)
        return tuple(out)

    def _slot_shapes(self, role: str, shapes: dict[str, list[S.Shape]]) -> tuple[S.Shape, ...] | None:
        ir = self.graph
        if role == "head" and len(ir.outputs) > 1:  # a head of several outputs: each one's shape
            return tuple(shapes[t.node_id][t.port] for _, t in ir.outputs)
        last = None
        for n in self._topo:
            if n == role or n.startswith(role + "."):
                last = n
        if last is None:  # a slot with no nodes (a backbone of zero layers)
            return None
        return tuple(shapes[last])

    # ------------------------------------------------------------ the model
    def build(self) -> S.StructureIR:
        spec = self.spec
        fam = spec.family.node
        assert isinstance(fam, A.Family)
        fields = [s for s in param_specs(fam) if s.type != "layer"]
        names = {s.name for s in fields}
        cfg = self._config_resolver(names)
        derived = _derived(spec.bindings, fields)
        config = tuple(S.ConfigField(s.name, s.type, spec.dims[s.name],
                                     self._expr(derived[s.name], cfg, None) if s.name in derived else None)
                       for s in fields)
        layer_env = {k: v for k, v in spec.dims.items() if isinstance(v, LayerRef)}
        calls: list[tuple[SlotIR, S.Apply, int]] = []
        for slot in [*spec.encoders, spec.backbone, spec.head]:
            assert slot is not None
            ref = self.elab.layer_ref(spec.family.module, slot.layer.callee, layer_env)
            assert ref is not None
            callee, args = self._call(ref, slot.layer.args, cfg, layer_env, spec.family.module, None, None)
            n_out = 1
            if ref.kind == "block":
                node = self.prog.defs[ref.target].node
                assert isinstance(node, A.Block)
                rets = [st for st in _walk(node.body) if isinstance(st, A.Return)]
                n_out = len(rets[-1].values) if rets else 1
            calls.append((slot, S.Apply(callee, args, S.TupleExpr(()), slot.role, None, slot.layer.span), n_out))
        shapes = _SymbolicShapes(self, {slot.role: call for slot, call, _ in calls}, fields).run()
        for key, cls in self.classes.items():
            self.classes[key] = cls._replace(body=self._shaped(cls.body, shapes))
        slots = tuple(S.SlotIR(slot.role, slot.key, slot.modality, call, n_out, self._slot_shapes(slot.role, shapes))
                      for slot, call, n_out in calls)
        ties = tuple(S.TieIR(t.target.dotted, t.source.dotted, None if t.cond is None else self._expr(t.cond, cfg, None))
                     for t in fam.ties)
        return S.StructureIR(spec.name, {self.ids[k]: self.classes[k] for k in self.order}, config, tuple(derived),
                             slots, ties)


class _SymbolicShapes:
    """Every node's output shapes with each size that comes from a Config field written as the field's name:
    `(B, T, d_model)` rather than `(B, T, 768)`, true for any Config. A field's name reaches a node through the
    arguments: a slot's argument `config.d_model`, then each block parameter bound to one (a parameter defaulting
    to another follows it). The node's primitive computes its shapes again from those symbolic arguments and its
    inputs' symbolic shapes; a size it cannot compute so (a convolution's spatial size, a product) keeps its number,
    and every symbolic size must evaluate, at the Config's values, to the number shape inference found."""

    def __init__(self, b: _Builder, slot_calls: dict[str, S.Apply], fields: list[ParamSpec]) -> None:
        self.b = b
        self.graph = b.graph
        self.slot_calls = slot_calls
        dims = b.spec.dims
        self.fields = {f.name: int(v) for f in fields if f.type == "int" and isinstance(v := dims.get(f.name), int)
                       and not isinstance(v, bool) and f.name != "B" and f.name not in b.graph.symbols}
        self.env = {**self.fields, **b.graph.symbols}
        self.bound: dict[str, dict[str, str]] = {}  # block instance -> its parameters bound to a Config field
        self._applies: dict[str, dict[SpanKey, S.Apply]] = {}  # block instance -> its class's applications

    def _symbol(self, e: S.Expr | None, outer: dict[str, str] | None, value: object) -> str | None:
        """The Config field an argument is, if it is one and holds `value`."""
        if not isinstance(e, S.Name) or isinstance(value, bool) or not isinstance(value, int):
            return None
        sym = e.name if e.kind == "config" else (outer or {}).get(e.name) if e.kind == "param" else None
        return sym if sym is not None and self.fields.get(sym) == value else None

    def _owner(self, path: str) -> str | None:
        """The block instance whose body applies the layer at `path` (None: the top model)."""
        modules = self.graph.modules
        while "." in path:
            path = path.rsplit(".", 1)[0]
            if modules[path].kind == "block":
                return path
        return None

    def _call_site(self, path: str, span: Span) -> tuple[S.Apply | None, dict[str, str] | None]:
        """The application that made `path` (a module or a node of span `span`) and the bindings it reads."""
        owner = self._owner(path) if path not in self.slot_calls else None
        if owner is None:
            return self.slot_calls.get(path), None
        applies = self._applies.get(owner)
        if applies is None:
            info = self.graph.modules[owner]
            applies = self._applies[owner] = self.b.applies.get(self.b._key_of(info.target, info.args), {})
        return applies.get((span.path, span.start, span.end)), self.bound.get(owner, {})

    def _bind(self) -> None:
        for path, info in self.graph.modules.items():  # a parent before its children
            if info.kind != "block":
                continue
            cls = self.b.classes.get(self.b._key_of(info.target, info.args))
            call, outer = self._call_site(path, info.span)
            if cls is None or call is None:
                continue
            given = {n: a for n, a in call.args if a is not None}
            bound: dict[str, str] = {}
            for p in cls.params:  # in order: a default reads the parameters before it
                sym = (self._symbol(given[p.name], outer, info.args.get(p.name)) if p.name in given
                       else self._symbol(p.default, bound, info.args.get(p.name)) if isinstance(p.default, S.Name)
                       else None)
                if sym is not None:
                    bound[p.name] = sym
            self.bound[path] = bound

    def _args(self, n: str, d: Node) -> dict[str, Any]:
        args: dict[str, Any] = d.args
        call, outer = self._call_site(d.module or n, d.span) if d.span is not None else (None, None)
        if call is None:
            return args
        if d.module is None and d.scope:  # a functional node: its scope is the instance that applies it
            outer = self.bound.get(d.scope, {})
        out = dict(args)
        for name, a in call.args:
            sym = self._symbol(a, outer, args.get(name))
            if sym is not None:
                out[name] = sym
        return out

    def _input(self, n: str, concrete: S.Shape) -> S.Shape:
        """An input's shape with the sizes its tensor form names after a Config field (an image's size)."""
        i = next((i for i in self.graph.inputs if i.node == n), None)
        if i is None:
            return concrete
        forms = input_forms(i.name.rsplit("_", 1)[0] if len(INPUT_FORMS[i.modality]) > 1 else i.name, i.modality)
        if forms is None:
            return concrete
        form = forms[0] if len(forms) == 1 else next((f for f in forms if i.name.endswith(f"_{f.suffix}")), None)
        if form is None or len(form.shape) != len(concrete):
            return concrete
        return tuple(f if isinstance(f, str) and f not in form.symbols and self.fields.get(f) == c else c
                     for f, c in zip(form.shape, concrete))

    def _value(self, d: S.Dim) -> int:
        """A size at the nominal values (a lone name without parsing it)."""
        if isinstance(d, int):
            return d
        return self.env[d] if d.isidentifier() else subst_dim(d, self.env)

    def _agree(self, sym: S.Shape, concrete: S.Shape) -> S.Shape:
        """Each size of `sym` that evaluates to `concrete`'s at the nominal values, else the concrete one."""
        if len(sym) != len(concrete):
            return concrete
        out: list[S.Dim] = []
        for s, c in zip(sym, concrete):
            ok = s == c
            if not ok and isinstance(s, str) and not any(ch.isdigit() for ch in s):
                # a size written with a number beside a field (`448+d_model`, `(B*num_passages)//20`) may hold a
                # number that is itself a field's: only sizes of symbols alone are claimed for every Config
                try:
                    ok = self._value(s) == self._value(c)
                except (KeyError, ValueError, SyntaxError, TypeError, ZeroDivisionError):
                    ok = False
            out.append(s if ok else c)
        return tuple(out)

    def run(self) -> dict[str, list[S.Shape]]:
        ir = self.graph
        self._bind()
        out: dict[str, list[S.Shape]] = {}
        for n in self.b._topo:
            d = ir.nodes[n]
            concrete: list[S.Shape] = list(d.shapes or [])
            if d.op == "input":
                out[n] = [self._input(n, s) for s in concrete]
                continue
            ts = ir.in_tensors(n)
            ins = [ir.shape_of(t) for t in ts]
            sym_ins = [out[t.node_id][t.port] for t in ts]
            args = self._args(n, d)
            if args is d.args and sym_ins == ins:
                out[n] = concrete
                continue
            result = None
            for a, i in ((args, sym_ins), (args, ins), (d.args, sym_ins)):
                result = _try_shape(d.op, a, i)
                if result is not None:
                    break
            if result is None or len(result) != len(concrete):
                out[n] = concrete
            else:
                out[n] = [c if tuple(s) == c else self._agree(tuple(s), c) for s, c in zip(result, concrete)]
        return out


def _try_shape(op: str, args: dict[str, Any], ins: list[S.Shape]) -> list[S.Shape] | None:
    """The primitive's output shapes for symbolic arguments or inputs; None where it computes with numbers only."""
    try:
        return PRIMITIVES[op].shape(args, ins)
    except (ShapeError, TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, AttributeError):
        return None


def _derived(bindings: Mapping[str, Bound], fields: list[ParamSpec]) -> dict[str, A.Expr]:
    """The Config fields whose value the spec computes from other fields (`heads = d_model / 64`, a family
    default `kv_heads = heads`), in an order where every field comes after the ones it reads. A field given a
    number, solved (`?`) or set by a constraint, the task or `--set` is a plain field."""
    names = {f.name for f in fields}
    reads: dict[str, set[str]] = {}
    exprs: dict[str, A.Expr] = {}
    for f in fields:
        b = bindings.get(f.name)
        expr = b.expr if b is not None else None
        if expr is None or isinstance(expr, A.Unknown):
            continue
        used = {n.dotted for n in A.subnodes(expr) if isinstance(n, A.Name)} & names
        if used:
            reads[f.name], exprs[f.name] = used, expr
    order: dict[str, A.Expr] = {}
    done: set[str] = set()

    def visit(n: str) -> None:
        if n in done:
            return
        done.add(n)
        for m in sorted(reads.get(n, ())):
            visit(m)
        if n in reads:
            order[n] = exprs[n]

    for f in fields:
        visit(f.name)
    return order


def _is_module(ref: LayerRef, ly: A.Layer) -> bool:
    """Whether a layer application owns a submodule (blocks, weighted or stateful primitives, repeats)."""
    prim = PRIMITIVES.get(ref.target) if ref.kind == "primitive" else None
    return prim is None or ly.repeat is not None or prim.has_weights or "module" in prim.tags


def _walk(stmts: Sequence[A.Stmt]) -> list[A.Stmt]:
    out: list[A.Stmt] = []
    for s in stmts:
        out.append(s)
        if isinstance(s, A.If):
            out += _walk(s.then) + _walk(s.orelse)
    return out
