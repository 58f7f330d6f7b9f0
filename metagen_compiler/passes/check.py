"""check: types, units and enums of the model; builds the spec IR.

Every field of the model is looked at: an unknown name gets "did you mean", a quantity with the
wrong unit gets its expected unit, a value outside an enum gets the choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from metagen_compiler.ir.spec import Bound, ConstraintIR, SpecIR, dump_spec
from metagen_compiler.semantics.catalog import (
    CONSTRAINTS,
    FAMILY_GROUPS,
    INPUT_MODALITIES,
    LATENCY_CLASSES,
    OBJECTIVES,
    OUTPUT_MODALITIES,
    TASK_FIELDS,
    TASK_FROM_OBJECTIVE,
    TASKS,
    group_fits,
)
from metagen_compiler.semantics.choices import check_choices
from metagen_compiler.semantics.elaborate import KNOWN_TYPES, applied_layers, param_specs
from metagen_compiler.semantics.limits import LIMIT_CODE, LIMITS_HINT, MAX_INT, PAST_MAX_FLOAT, PAST_MAX_INT
from metagen_compiler.semantics.modalities import INPUT_FORMS
from metagen_compiler.semantics.program import Definition, Program, import_hint
from metagen_compiler.semantics.training_section import check_training
from metagen_compiler.semantics.values import (
    FUNCTIONS,
    UNIT_SCALE,
    EvalError,
    Sym,
    Value,
    evaluate,
    format_value,
    quantity_value,
)
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.visit import statements, walk

from ..compilation import Compilation
from ..diagnostics import DiagnosticBag, Note, did_you_mean
from ..primitives import PRIMITIVES

_BINARY_CONTEXT = {"k": 1024, "K": 1024, "M": 1024**2}

_UNIT_WORDS = {"count": "a count such as 86M", "bytes": "a size such as 12GB", "time": "a time such as 20ms",
               "rate": "a rate such as 30fps", "pixels": "a size in pixels such as 224", "frequency": "a frequency such as 16kHz",
               "int": "a whole number", "device": "a device class"}

def _plain(v: Value) -> Any:
    if isinstance(v, Sym):
        return v.name
    if isinstance(v, tuple):
        return [_plain(i) for i in v]
    if hasattr(v, "denominator") and not isinstance(v, (int, bool)):
        return float(v)  # type: ignore[arg-type]
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def _literal(e: A.Expr, bag: DiagnosticBag) -> Value:
    """Evaluate an expression that may use bare words as symbols (metadata, task fields)."""
    try:
        return evaluate(e, {}, lambda n: Sym(n.dotted))
    except EvalError as ex:
        bag.error(ex.code, ex.message, ex.span, hint=ex.hint)
        return None


def metadata_dict(entries: tuple[A.MetaEntry, ...], bag: DiagnosticBag) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in entries:
        if e.name.name in out:
            bag.error("E104", f"metadata `{e.name.name}` is given twice", e.name.span)
        if isinstance(e, A.MetaGroup):
            out[e.name.name] = metadata_dict(e.entries, bag)
        else:
            out[e.name.name] = _plain(_literal(e.value, bag))
    return out


def check_open_family(prog: Program, model: A.Model, inputs: list[str], objectives: list[str],
                      bag: DiagnosticBag, yaml: bool = False) -> dict[str, frozenset[str]]:
    """The architecture leaves its family open among candidates (`architecture ? in {a, b} { ... }`). Each
    candidate must be a family (or preset) of this input, listed once; each field must be a parameter of some
    candidate, and a field with a value of every candidate (a hole `?` may belong to only some: it is then a
    dimension of those candidates' searches). With all that right, a plain compile still stops here (E215):
    only `metagenc search` chooses the family. Returns each candidate's parameters."""
    arch = model.architecture
    assert arch is not None and arch.choice_span is not None
    errors = len(bag.errors)
    if not arch.choices:
        bag.error("E213", "the choice of family lists no family", arch.choice_span,
                  hint="list the candidate families: `architecture ? in {transformer.decoder, ssm.s4d}`")
        return {}
    seen: dict[str, A.Name] = {}
    params: dict[str, frozenset[str]] = {}  # candidate -> its parameters
    for name in arch.choices:
        if name.dotted in seen:
            bag.error("E214", f"`{name.dotted}` is listed twice in the choice of family", name.span,
                      notes=[Note("first listed here", seen[name.dotted].span)])
            continue
        seen[name.dotted] = name
        fam, _ = resolve_family(prog, A.Architecture(arch.span, name, arch.fields), inputs, bag, objectives)
        if fam is not None:
            assert isinstance(fam.node, A.Family)
            params[name.dotted] = frozenset(p.name.name for p in fam.node.params)
    if len(bag.errors) > errors:
        return {}
    for f in arch.fields:
        n = f.name.name
        having = [c for c, ps in params.items() if n in ps]
        if not having:
            every = sorted(set().union(*params.values()))
            bag.error("E207", f"no candidate family has a parameter `{n}`", f.name.span,
                      hint=did_you_mean(n, every) or f"parameters: {', '.join(every)}")
        elif len(having) < len(params) and not isinstance(f.value, A.Unknown):
            lacking = [c for c in params if c not in having]
            bag.error("E207", f"`{n}` has a value, but candidate family `{lacking[0]}` has no parameter `{n}`",
                      f.name.span, hint=f"a field that only some candidates take must be open: `{n} = ?` (with its "
                      f"domain) is a dimension of the search for {', '.join(f'`{c}`' for c in having)} only")
    if len(bag.errors) > errors:
        return {}
    bag.error("E215", f"the family of model `{model.name.name}` is left open among "
              f"{', '.join(c.dotted for c in arch.choices)}; a compile needs one", arch.choice_span,
              hint="`metagenc search FILE` chooses it (a dimension of the search); to compile one candidate, "
              + (f"write it: `family: {arch.choices[0].dotted}`" if yaml else
                 f"write it: `architecture {arch.choices[0].dotted} {{ ... }}`"))
    return params


def resolve_family(prog: Program, arch: A.Architecture, inputs: list[str], bag: DiagnosticBag,
                   objectives: list[str] | None = None) -> tuple[Definition | None, Definition | None]:
    """The family (and preset, if the architecture names one) an architecture refers to."""
    objectives = objectives or []
    d = prog.lookup(prog.root_name, arch.family)
    group = FAMILY_GROUPS.get(arch.family.dotted, ())
    # a group name (`gat`) chooses among its families even where the plain name also resolves to one of them
    if arch.family.dotted in FAMILY_GROUPS and (d is None or d.qualname in {f"std.{t}" for _, t in group}):
        options = FAMILY_GROUPS[arch.family.dotted]
        if not any(group_fits(mod, inputs, objectives) for mod, _ in options):
            takes = sorted({mod.partition("@")[0] for mod, _ in options if mod is not None})
            bag.error("E106", f"`{arch.family.dotted}` names no family for {', '.join(inputs) or 'this'} input",
                      arch.family.span, hint=f"`{arch.family.dotted}` is for {', '.join(takes)} input; for "
                      f"{', '.join(inputs) or 'this input'} try "
                      + ", ".join(f"`{g}`" for g, opts in FAMILY_GROUPS.items()
                                  if any(group_fits(m, inputs, objectives) for m, _ in opts if m is not None)))
            return None, None
        for mod, target in options:
            if group_fits(mod, inputs, objectives):
                d = prog.defs.get(f"std.{target}")
                if d is None:
                    bag.error("E106", f"family `{arch.family.dotted}` for {', '.join(inputs) or 'this input'} means "
                              f"`{target}`, which is not imported", arch.family.span,
                              hint=f"add `import std.{target.split('.')[0]}`")
                    return None, None
                break
    if d is None or d.kind not in ("family", "preset"):
        cands = prog.visible(prog.root_name, "family") + prog.visible(prog.root_name, "preset") + list(FAMILY_GROUPS)
        hint = did_you_mean(arch.family.dotted, cands)
        if hint is None:
            hint = import_hint(arch.family.parts[-1], ("family", "preset"))
        if hint is None:
            hint = "families and presets live in the stdlib: `import std.transformer`, `import std.vision`, `import std.presets`"
        bag.error("E106", f"unknown architecture family `{arch.family.dotted}`", arch.family.span, hint=hint)
        return None, None
    if d.kind == "preset":
        assert isinstance(d.node, A.Preset)
        fam = prog.lookup(d.module, d.node.family)
        if fam is None or fam.kind != "family":
            bag.error("E106", f"preset `{d.qualname}` names unknown family `{d.node.family.dotted}`", d.node.family.span,
                      hint=did_you_mean(d.node.family.dotted, prog.visible(d.module, "family")))
            return None, None
        return fam, d
    return d, None


def _devices(prog: Program) -> list[str]:
    """The device classes a model can name (bare names; `devices.edge` is the same class as `edge`)."""
    return [n for n in prog.visible(prog.root_name, "device") if "." not in n]


def check_constraint(c: A.Constraint, prog: Program, bag: DiagnosticBag) -> ConstraintIR | None:
    kind = CONSTRAINTS.get(c.name.name)
    if kind is None:
        bag.error("E207", f"unknown constraint `{c.name.name}`", c.name.span,
                  hint=did_you_mean(c.name.name, CONSTRAINTS) or f"constraints: {', '.join(CONSTRAINTS)}")
        return None
    if c.op not in kind.ops:
        bag.error("E209", f"`{c.name.name}` cannot be constrained with `{c.op}`", c.span,
                  hint=f"use one of: {' '.join(kind.ops)}")
        return None
    device = None
    if c.device is not None:
        dd = prog.lookup(prog.root_name, c.device.name)
        if dd is None or dd.kind != "device":
            bag.error("E203", f"unknown device class `{c.device.name}`", c.device.span,
                      hint=did_you_mean(c.device.name, _devices(prog)) or f"device classes: {', '.join(_devices(prog))}")
            return None
        device = c.device.name
        if not kind.needs_device:
            bag.error("E209", f"`{c.name.name}` does not depend on a device; drop `on {c.device.name}`", c.device.span)
    v = c.value
    text = _src(c.value)
    if kind.dimension == "device":
        name = v.dotted if isinstance(v, A.Name) else None
        dd = prog.lookup(prog.root_name, name) if name else None
        if dd is None or dd.kind != "device":
            bag.error("E203", f"unknown device class `{text}`", v.span,
                      hint=(did_you_mean(name, _devices(prog)) if name else None)
                      or f"device classes: {', '.join(_devices(prog))}")
            return None
        return ConstraintIR(kind.name, c.op, Sym(name or ""), text, None, c.span)
    if kind.dimension == "time" and isinstance(v, A.Name):
        if v.dotted not in LATENCY_CLASSES:
            bag.error("E203", f"unknown latency class `{v.dotted}`", v.span,
                      hint=did_you_mean(v.dotted, LATENCY_CLASSES) or f"classes: {', '.join(LATENCY_CLASSES)}, or a time such as 20ms")
            return None
        return ConstraintIR(kind.name, c.op, Sym(v.dotted), text, device, c.span)
    if isinstance(v, A.Quantity):
        value, dim = quantity_value(v)
        if not math.isfinite(value) or (dim != "time" and value > MAX_INT):  # a YAML quantity: MSL's parser stops these
            bag.error(LIMIT_CODE, f"`{v.text}` is {PAST_MAX_FLOAT if dim == 'time' else PAST_MAX_INT}", v.span,
                      hint=LIMITS_HINT)
            return None
        if kind.name == "context" and v.unit in _BINARY_CONTEXT:
            # context windows are counted in powers of two: 2k = 2048 tokens, 256k = 262144
            value = round(v.value * _BINARY_CONTEXT[v.unit])
        ok = dim == kind.dimension or (kind.dimension == "int" and dim == "count") or (
            kind.dimension == "pixels" and dim == "count") or (kind.dimension == "rate" and dim == "frequency")
        if not ok:
            bag.error("E202", f"`{c.name.name}` takes {_UNIT_WORDS[kind.dimension]}, not `{v.text}` ({dim})", v.span)
            return None
        return ConstraintIR(kind.name, c.op, value, text, device, c.span)
    if isinstance(v, A.Num):
        if kind.dimension in ("bytes", "time"):
            bag.error("E202", f"`{c.name.name}` needs a unit: {_UNIT_WORDS[kind.dimension]}", v.span,
                      hint=f"units: {', '.join(u for u, (_, d) in UNIT_SCALE.items() if d == kind.dimension)}")
            return None
        if kind.dimension in ("int", "pixels", "count") and not isinstance(v.value, int):
            bag.error("E205", f"`{c.name.name}` must be a whole number, not {v.value}", v.span)
            return None
        return ConstraintIR(kind.name, c.op, v.value, text, device, c.span)
    bag.error("E201", f"`{c.name.name}` takes {_UNIT_WORDS[kind.dimension]}", v.span)
    return None


def _src(e: A.Expr) -> str:
    from metagen_compiler.syntax.format_expr import expr_text

    return expr_text(e)


def user_modules(prog: Program) -> list[str]:
    """The modules the user wrote: the root file and what it imports from beside it or from -I paths
    (and device profiles). The stdlib is checked by its own tests, not on every compile."""
    return [name for name, m in prog.modules.items() if not m.path.startswith(("<stdlib>/", "<prelude>"))]


def check_blocks(prog: Program, bag: DiagnosticBag) -> None:
    """Static checks of the user's own blocks and families, in the root file and in every module it
    imports that is not the stdlib: parameter types and names, callees, argument names, labels, the
    layers a family's slots take and the arguments of layer values."""
    for module in user_modules(prog):
        _check_module(prog, module, bag)


def _check_module(prog: Program, module: str, bag: DiagnosticBag) -> None:
    root = prog.modules[module]
    for b in root.blocks:
        if b.name.name in PRIMITIVES:  # the block would be called where the primitive is meant, or the other way
            bag.error("E104", f"block `{b.name.name}` has the name of a primitive", b.name.span,
                      hint=f"rename the block, e.g. `{b.name.name}_block`")
    for owner in list(root.blocks) + list(root.families):
        seen: dict[str, A.Param] = {}
        for p in owner.params:
            if p.name.name in seen:
                bag.error("E104", f"parameter `{p.name.name}` is declared twice", p.name.span,
                          notes=[Note("first declared here", seen[p.name.name].name.span)])
            seen[p.name.name] = p
            if isinstance(p.type, A.NamedType) and p.type.name not in KNOWN_TYPES:
                bag.error("E201", f"unknown type `{p.type.name}`", p.type.span,
                          hint=did_you_mean(p.type.name, KNOWN_TYPES) or f"types: {', '.join(KNOWN_TYPES)}, or {{a, b}}")
            if p.name.name in PRIMITIVES and p.name.name in _layer_params(owner):
                # `x >> gelu` must mean one thing: the layer passed in, or the primitive
                bag.error("E104", f"layer parameter `{p.name.name}` has the name of a primitive", p.name.span,
                          hint=f"rename it, e.g. `{p.name.name}_layer`")
            if p.default is not None:
                _check_value(p.name.name, _param_type(p), p.default, bag, choices=_has_set(p.constraints))
                check_choices(p.name.name, p, p.constraints, p.default, prog, (module,), bag)
    for f in root.families:
        layer_params = _layer_params(f)
        slots = [s.layer for s in f.encoders] + ([f.backbone] if f.backbone else []) + [s.layer for s in f.heads]
        names: dict[str, A.EncoderSlot] = {}
        for e in f.encoders:
            if e.modality.name not in INPUT_FORMS:
                bag.error("E203", f"no tensor form for `{e.modality.name}` inputs", e.modality.span,
                          hint=did_you_mean(e.modality.name, INPUT_FORMS) or f"modalities: {', '.join(INPUT_FORMS)}")
            if e.input_name in names:
                bag.error("E104", f"input `{e.input_name}` has two encoders", (e.input or e.modality).span,
                          notes=[Note("first here", names[e.input_name].span)])
            names[e.input_name] = e
        values = {p.name.name for p in f.params} - layer_params
        for ly in slots:
            _check_layer(ly, prog, module, layer_params, bag)
            _check_slot_layer(ly, prog, module, bag)
            for a in ly.args or ():
                _check_layer_values(a.value, values, prog, module, layer_params, bag)
    for b in root.blocks:
        layer_params = _layer_params(b)
        if not any(isinstance(s, A.Return) for s in statements(b.body)):
            bag.error("E208", f"block `{b.name.name}` has no `return`", b.name.span,
                      hint="end the block with `return <tensor>`")
        for ly in applied_layers(b.body):
            _check_layer(ly, prog, module, layer_params, bag)
        _check_labels(b.body, {}, b.name.name, bag)
        values = ({p.name.name for p in b.params} - layer_params) | {
            s.name.name for s in statements(b.body) if isinstance(s, A.Let)}
        for expr in _exprs(b.body):
            _check_layer_values(expr, values, prog, module, layer_params, bag)


def _param_type(p: A.Param) -> str | None:
    return p.type.name if isinstance(p.type, A.NamedType) else "enum" if p.type is not None else None


def _has_set(cons: tuple[A.DimConstraint, ...]) -> bool:
    return any(isinstance(c, A.InSet) for c in cons)


def _check_value(name: str, type_: str | None, e: A.Expr, bag: DiagnosticBag, *, choices: bool = False) -> None:
    """What a parameter's value may be, beyond what evaluating it shows: `?` (a dimension the solver
    chooses) stands alone, for an integer parameter, since the solver chooses whole numbers and an
    expression around `?` has no value to emit; a number takes no unit of time (`nodes = 0ms`)."""
    if type_ in ("int", "float", "int_or_tuple"):
        for q in walk(e):
            if isinstance(q, A.Quantity) and UNIT_SCALE[q.unit][1] == "time":
                what = "a whole number" if type_ != "float" else "a number"
                bag.error("E202", f"`{name}` takes {what}, not a time (`{q.text}`)", q.span,
                          hint="drop the unit" + (" (a count may take k, M, B, T)" if type_ != "float" else ""))
                return
    if isinstance(e, A.Unknown):
        if type_ not in ("int", None, "any") and not choices:  # a choice `? in {a, b}` may be of any type
            bag.error("E201", f"`{name}` is a parameter of type {type_}: only an integer dimension can be left open (`?`)",
                      e.span, hint=f"give `{name}` a value")
        return
    for sub in walk(e):
        if isinstance(sub, A.Unknown):
            bag.error("E201", "`?` stands for a whole value: it cannot be part of an expression", sub.span,
                      hint=f"write `{name} = ?` and derive other values from `{name}`")
            return


def _check_slot_layer(ly: A.Layer, prog: Program, module: str, bag: DiagnosticBag) -> None:
    """A family's slot (encoder, backbone, head) becomes a submodule of the model: it takes a block or a
    primitive with weights, not a function such as `gelu` or `dropout`."""
    name = ly.callee.dotted
    if len(ly.callee.parts) != 1 or name not in PRIMITIVES or prog.lookup(module, ly.callee) is not None:
        return
    prim = PRIMITIVES[name]
    if prim.has_weights or "module" in prim.tags:
        return
    bag.error("E201", f"a family slot takes a block or a primitive with weights; `{name}` is a function", ly.callee.span,
              hint=f"wrap it in a block: `block {name}_block() {{ input x; return x >> {name} }}`")


def _check_labels(stmts: tuple[A.Stmt, ...], seen: dict[str, A.Ident], owner: str, bag: DiagnosticBag) -> dict[str, A.Ident]:
    """Explicit labels name a block's submodules: one label, one layer, on every path through the block
    (the two branches of an `if` may reuse a label, since only one of them runs)."""
    for s in stmts:
        if isinstance(s, A.If):
            then = _check_labels(s.then, dict(seen), owner, bag)
            orelse = _check_labels(s.orelse, dict(seen), owner, bag)
            seen = {**then, **orelse}
            continue
        for ly in applied_layers((s,)):
            if ly.label is None:
                continue
            first = seen.get(ly.label.name)
            if first is not None:
                bag.error("E104", f"label `{ly.label.name}` is used twice in block `{owner}`", ly.label.span,
                          notes=[Note("first used here", first.span)], hint="give each layer its own label")
            else:
                seen[ly.label.name] = ly.label
    return seen


def _exprs(stmts: tuple[A.Stmt, ...]) -> list[A.Expr]:
    out: list[A.Expr] = []
    for s in statements(stmts):
        if isinstance(s, (A.Assign, A.Let)):
            out.append(s.value)
        elif isinstance(s, A.Return):
            out.extend(s.values)
    return out


def _check_layer_values(e: A.Expr, values: set[str], prog: Program, module: str, layer_params: set[str],
                        bag: DiagnosticBag) -> None:
    """A layer passed as a value (`act = linear(in_features = 64)`) carries constant arguments: the code
    generators build it once per distinct value, so it cannot read a parameter or a `let` of the block
    or family it is written in."""
    for sub in walk(e):
        args: tuple[A.Arg, ...] = ()
        callee = ""
        if isinstance(sub, A.Call) and sub.func.dotted not in FUNCTIONS and (
                sub.func.dotted in PRIMITIVES or sub.func.dotted in layer_params or prog.lookup(module, sub.func) is not None):
            args, callee = sub.args, sub.func.dotted
        elif isinstance(sub, A.Layer):
            continue  # an application's own arguments may read anything; its layer-value arguments are Calls
        for a in args:
            used = next((n for n in walk(a.value) if isinstance(n, A.Name) and n.dotted in values), None)
            if used is not None:
                assert isinstance(used, A.Name)
                bag.error("E201", f"the layer value `{callee}(...)` reads `{used.dotted}`: the arguments of a layer "
                          "passed as a value are constants", used.span,
                          hint=f"write the number, or pass `{used.dotted}` to the block that applies the layer")
                return


def _layer_params(b: A.Block | A.Family) -> set[str]:
    """Parameters that may hold a layer: typed `layer` or `any`, or untyped."""
    return {p.name.name for p in b.params
            if p.type is None or (isinstance(p.type, A.NamedType) and p.type.name in ("layer", "any"))}


def _check_layer(ly: A.Layer, prog: Program, module: str, layer_params: set[str], bag: DiagnosticBag) -> None:
    name = ly.callee.dotted
    if name in layer_params:
        return
    specs = None
    if len(ly.callee.parts) == 1 and name in PRIMITIVES:
        specs = param_specs(PRIMITIVES[name])
    else:
        d = prog.lookup(module, ly.callee)
        if d is not None and d.kind == "block":
            assert isinstance(d.node, A.Block)
            specs = param_specs(d.node)
        else:
            cands = list(PRIMITIVES) + prog.visible(module, "block") + sorted(layer_params)
            bag.error("E105", f"unknown layer `{name}`", ly.callee.span,
                      hint=did_you_mean(name, cands) or import_hint(ly.callee.parts[-1], ("block",))
                      or "a layer is a primitive (linear, conv2d, ...) or a block")
            return
    names = [s.name for s in specs]
    for a in ly.args or ():
        if a.name is not None and a.name.name not in names:
            bag.error("E204", f"`{name}` has no parameter `{a.name.name}`", a.name.span,
                      hint=did_you_mean(a.name.name, names) or f"parameters: {', '.join(names) or 'none'}")
    positional = [a for a in ly.args or () if a.name is None]
    if len(positional) > len(specs):
        extra = positional[len(specs)]
        bag.error("E204", f"`{name}` takes {len(specs)} arguments, {len(positional)} given", extra.span,
                  hint=f"parameters: {', '.join(names) or 'none'}")


@dataclass(frozen=True)
class CheckPass:
    name: ClassVar[str] = "check"
    doc: ClassVar[str] = "Check names, types, units and enums of the model; build the spec IR."

    def run(self, comp: Compilation) -> None:
        prog, model, bag = comp.program, comp.model, comp.bag
        assert prog is not None and model is not None
        check_blocks(prog, bag)

        # modalities
        inputs: list[tuple[str, Any]] = []
        outputs: list[tuple[str, Any]] = []
        if model.modality_span is None:
            bag.error("E208", f"model `{model.name.name}` declares no modality", model.name.span,
                      hint="add `modality text -> text` (inputs -> outputs)")
        for ident in model.inputs:
            if ident.name in INPUT_MODALITIES:
                inputs.append((ident.name, ident.span))
            else:
                bag.warning("W001", f"unknown input modality `{ident.name}`; it is ignored", ident.span,
                            hint=did_you_mean(ident.name, INPUT_MODALITIES) or f"input modalities: {', '.join(INPUT_MODALITIES)}")
        for ident in model.outputs:
            if ident.name in OUTPUT_MODALITIES:
                outputs.append((ident.name, ident.span))
            else:
                bag.warning("W001", f"unknown output modality `{ident.name}`; the task decides the output instead",
                            ident.span, hint=did_you_mean(ident.name, OUTPUT_MODALITIES)
                            or f"output modalities: {', '.join(OUTPUT_MODALITIES)}")
        if model.modality_span is not None and not inputs:
            bag.error("E301", "no supported input modality", model.modality_span,
                      hint=f"input modalities: {', '.join(INPUT_MODALITIES)}")

        # objectives
        objectives = []
        for o in model.objectives:
            if o.name in OBJECTIVES:
                objectives.append(o.name)
            else:
                bag.error("E203", f"unknown objective `{o.name}`", o.span,
                          hint=did_you_mean(o.name, OBJECTIVES) or f"objectives: {', '.join(OBJECTIVES)}")

        # task
        task_fields: dict[str, Value] = {}
        task_span = model.span
        if model.task is not None:
            task = model.task.name.name
            task_span = model.task.name.span
            if task not in TASKS:
                bag.error("E203", f"unknown task `{task}`", model.task.name.span,
                          hint=did_you_mean(task, TASKS) or f"tasks: {', '.join(TASKS)}")
            for f in model.task.fields:
                if f.name.name not in TASK_FIELDS:
                    bag.error("E207", f"unknown task field `{f.name.name}`", f.name.span,
                              hint=did_you_mean(f.name.name, TASK_FIELDS) or f"task fields: {', '.join(TASK_FIELDS)}")
                    continue
                if f.name.name in task_fields:
                    bag.error("E104", f"task field `{f.name.name}` is given twice", f.name.span)
                v = _literal(f.value, bag)
                want = TASK_FIELDS[f.name.name]
                if want == "int" and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                    bag.error("E201", f"`{f.name.name}` must be a positive whole number, not {format_value(v)}", f.value.span)
                    continue
                if f.name.name == "action_space" and _plain(v) not in ("discrete", "continuous"):
                    bag.error("E203", f"`action_space` is `discrete` or `continuous`, not {format_value(v)}", f.value.span)
                    continue
                task_fields[f.name.name] = v
        else:
            task = next((TASK_FROM_OBJECTIVE[o] for o in objectives if o in TASK_FROM_OBJECTIVE), "")
            if task == "embedding" and len(inputs) > 1:  # contrastive over two inputs: each retrieves the other
                task = "multimodal_retrieval"
            if not task and any(n == "label" for n, _ in outputs):
                task = "classification"
            if not task:
                bag.error("E208", f"model `{model.name.name}` names no task", model.name.span,
                          hint="add `task generation` (or classification, regression, ...)")

        # constraints
        constraints: list[ConstraintIR] = []
        seen_c: dict[tuple[str, str, str | None], A.Constraint] = {}
        for c in model.constraints:
            key = (c.name.name, c.op, c.device.name if c.device else None)
            if key in seen_c:
                bag.error("E104", f"constraint `{c.name.name} {c.op}` is given twice", c.span,
                          notes=[Note("first given here", seen_c[key].span)])
                continue
            seen_c[key] = c
            ci = check_constraint(c, prog, bag)
            if ci is not None:
                constraints.append(ci)
        device = next((c.value.name for c in constraints if c.kind == "device" and isinstance(c.value, Sym)), None)
        for ci in constraints:
            if CONSTRAINTS[ci.kind].needs_device and ci.device is None:
                if device is None:
                    bag.error("E209", f"`{ci.kind}` needs a device class", ci.span,
                              hint=f"write `{ci.kind} {ci.op} {ci.text} on consumer_gpu`, or add `device = edge`")
                ci.device = device

        metadata = metadata_dict(model.metadata, bag)

        # architecture
        if model.architecture is None:
            hint = ("add `architecture: {family: transformer}`" if comp.source.path.endswith((".yaml", ".yml"))
                    else "add `architecture transformer.decoder { ... }` or a preset such as `architecture gpt2`")
            bag.error("E208", f"model `{model.name.name}` has no architecture", model.name.span, hint=hint)
            return
        if model.architecture.open:  # `architecture ? in {a, b}`: `metagenc search` picks the family
            comp.candidates = check_open_family(prog, model, [n for n, _ in inputs],
                                                [*objectives, task, *(n for n, _ in outputs)], bag,
                                                yaml=comp.source.path.endswith((".yaml", ".yml")))
            return
        fam, preset = resolve_family(prog, model.architecture, [n for n, _ in inputs], bag,
                                     [*objectives, task, *(n for n, _ in outputs)])
        if fam is None:
            return
        assert isinstance(fam.node, A.Family)
        params = {p.name.name: p for p in fam.node.params}
        bindings: dict[str, Bound] = {}
        for p in fam.node.params:
            if p.default is None:
                bindings[p.name.name] = Bound(A.Unknown(p.name.span), None, fam.module, p.name.span, "family (no default)")
            else:
                bindings[p.name.name] = Bound(p.default, None, fam.module, p.span, "family default", p.constraints)
        if preset is not None:
            assert isinstance(preset.node, A.Preset)
            for f in preset.node.fields:
                if f.name.name not in params:
                    bag.error("E207", f"preset `{preset.qualname}` sets unknown parameter `{f.name.name}`", f.name.span,
                              hint=did_you_mean(f.name.name, params) or f"parameters: {', '.join(params)}")
                    continue
                old = bindings[f.name.name]
                _check_value(f.name.name, _param_type(params[f.name.name]), f.value, bag, choices=_has_set(f.constraints))
                check_choices(f.name.name, params[f.name.name], f.constraints, f.value, prog, (preset.module, fam.module), bag)
                bindings[f.name.name] = Bound(f.value, None, preset.module, f.span, f"preset {preset.node.name.name}",
                                              f.constraints or old.constraints)
        explicit: dict[str, A.Node] = {}
        for ci in constraints:
            kind = CONSTRAINTS[ci.kind]
            if kind.binds and kind.binds in params and ci.op == "=":
                bindings[kind.binds] = Bound(None, ci.value, prog.root_name, ci.span, "constraint")
                explicit[kind.binds] = ci  # type: ignore[assignment]
        for k, v in task_fields.items():
            if k in params:
                bindings[k] = Bound(None, v, prog.root_name, model.task.span if model.task else model.span, "task")
        for f in model.architecture.fields:
            n = f.name.name
            if n not in params:
                bag.error("E207", f"family `{fam.qualname.rsplit('.', 1)[-1]}` has no parameter `{n}`", f.name.span,
                          hint=did_you_mean(n, params) or f"parameters: {', '.join(params)}")
                continue
            if n in explicit and explicit[n] is not f:
                other = explicit[n]
                bag.error("E104", f"`{n}` is set twice", f.name.span, notes=[Note("also set here", other.span)])
                continue
            explicit[n] = f
            _check_value(n, _param_type(params[n]), f.value, bag, choices=_has_set(f.constraints))
            check_choices(n, params[n], f.constraints, f.value, prog, (prog.root_name, fam.module), bag)
            old = bindings[n]
            bindings[n] = Bound(f.value, None, prog.root_name, f.span, "model", f.constraints or old.constraints)

        comp.spec = SpecIR(
            name=model.name.name, span=model.name.span, inputs=inputs, outputs=outputs, task=task, task_span=task_span,
            task_fields=task_fields, objectives=objectives, constraints=constraints, family=fam,
            family_span=model.architecture.family.span, preset=preset.node.name.name if preset else None,
            bindings=bindings, metadata=metadata, device=device,
        )
        check_training(model, comp.spec, prog.root_name, bag)  # the `training { ... }` section

    def dump(self, comp: Compilation) -> str:
        return dump_spec(comp.spec) if comp.spec else ""
