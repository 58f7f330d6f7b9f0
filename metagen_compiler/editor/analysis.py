"""What the language server knows about one document: the compiler's own results, and lookups on them.

Nothing here speaks LSP: positions are character offsets into the text, results are small
dataclasses. `metagen_compiler.editor.lsp` converts them. The document is compiled exactly as
`metagenc --check FILE` compiles it (`compile_model_set`, then the CLI's ordering and de-duplication),
so the server's diagnostics are the CLI's.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from metagen_compiler.semantics.catalog import CONSTRAINTS
from metagen_compiler.semantics.program import Definition, Program, load_program
from metagen_compiler.semantics.values import UNIT_SCALE, LayerRef, Sym, format_value
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.visit import statements

from ..compilation import Compilation, Options
from ..diagnostics import Diagnostic, DiagnosticBag
from ..driver import collect_diagnostics, compile_model_set
from ..primitives import PRIMITIVES, Primitive
from ..span import SourceFile, Span

__all__ = [
    "Analysis",
    "DocState",
    "Symbol",
    "Target",
    "analyze",
    "blank_strings",
    "cli_diagnostics",
    "definition",
    "defs_with_params",
    "doc_comment",
    "document_symbols",
    "family_of",
    "hover",
    "name_at",
    "program_for",
    "signature",
    "source_file_of",
]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]+)")


# ---------------------------------------------------------------- compiling
def cli_diagnostics(comps: Sequence[Compilation]) -> list[Diagnostic]:
    """The diagnostics of a compile, exactly as `metagenc` prints them (driver.collect_diagnostics)."""
    return collect_diagnostics(list(comps))


@dataclass
class Analysis:
    """One compile of one version of a document."""

    source: SourceFile
    comps: list[Compilation]
    diagnostics: list[Diagnostic]

    @property
    def module(self) -> A.Module | None:
        return self.comps[0].module if self.comps else None

    @property
    def program(self) -> Program | None:
        return self.comps[0].program if self.comps else None

    def model_comp(self, name: str) -> Compilation | None:
        for c in self.comps:
            if c.model is not None and c.model.name.name == name:
                return c
        return None


def analyze(text: str, path: str, search_paths: tuple[Path, ...] = ()) -> Analysis:
    source = SourceFile(path, text)
    comps = compile_model_set(source, Options(search_paths=search_paths))
    return Analysis(source, comps, cli_diagnostics(comps))


@dataclass
class DocState:
    """A document as the server holds it: its text, its latest analysis and the latest that parsed."""

    path: str
    text: str
    latest: Analysis | None = None
    parsed: Analysis | None = None  # the latest analysis whose module parsed (for a document being typed)

    def update(self, a: Analysis) -> None:
        self.latest = a
        if a.module is not None:
            self.parsed = a

    @property
    def module(self) -> A.Module | None:
        """The module of the current text if it parses, else of the last version that did."""
        return self.parsed.module if self.parsed else None

    def current_module(self) -> A.Module | None:
        """The module only if it belongs to the current text (offsets are valid)."""
        p = self.parsed
        return p.module if p is not None and p.source.text == self.text else None


def program_for(doc: DocState) -> Program:
    """The symbol tables for completion and lookups: the compiler's own when the document has been
    resolved, else built from the `import` lines alone (a document being typed may not parse)."""
    if doc.parsed is not None and doc.parsed.program is not None:
        return doc.parsed.program
    pattern = r"^\s*import\s+(" + _IDENT.pattern + r")(?:\s+as\s+([A-Za-z_]\w*))?"
    imports = tuple((m.group(1), m.group(2)) for m in re.finditer(pattern, doc.text, re.MULTILINE))
    return _imports_program(doc.path, imports)


@functools.lru_cache(maxsize=32)
def _imports_program(path: str, imports: tuple[tuple[str, str | None], ...]) -> Program:
    span = Span.of(SourceFile(path, ""), 0, 0)
    nodes = tuple(A.Import(span, A.Name(span, tuple(name.split("."))), A.Ident(span, alias) if alias else None)
                  for name, alias in imports)
    root = A.Module(span, path, None, nodes, (), (), (), (), ())
    return load_program(root, DiagnosticBag(), [Path(path).parent])


# ---------------------------------------------------------------- names and sources
def name_at(text: str, offset: int) -> tuple[int, int, str] | None:
    """The dotted name (or quantity) under `offset`, as (start, end, text)."""
    for m in re.finditer(r"[A-Za-z0-9_]+(?:\.[A-Za-z_][A-Za-z0-9_]*)*", text[max(0, offset - 200):offset + 200]):
        base = max(0, offset - 200)
        if m.start() + base <= offset <= m.end() + base:
            return m.start() + base, m.end() + base, m.group()
    return None


def source_file_of(span: Span, root_path: str) -> Path | None:
    """The file a span lies in: a stdlib module's installed file, the document itself, or a user module."""
    if span.file is None:
        return None
    p = span.path
    if p.startswith("<stdlib>/"):
        return Path(str(resources.files("metagen_stdlib").joinpath(p.removeprefix("<stdlib>/"))))
    if p.startswith("<"):
        return None
    return Path(root_path) if p == root_path else Path(p).resolve()


def doc_comment(node: A.Node) -> str:
    """The comment lines right above a definition, without their `#`."""
    f = node.span.file
    if f is None:
        return ""
    lines = f.text.split("\n")
    out: list[str] = []
    i = node.span.line - 2
    while i >= 0 and lines[i].lstrip().startswith("#"):
        out.append(lines[i].lstrip()[1:].strip())
        i -= 1
    while out and set(out[-1]) <= set("-= "):  # a section rule above the comment is no part of it
        out.pop()
    return " ".join(reversed(out)).strip()


def _src(node: A.Node) -> str:
    """A node's source text on one line, without a trailing `;`."""
    f = node.span.file
    return re.sub(r"\s*\n\s*", " ", f.text[node.span.start:node.span.end]).rstrip("; ") if f else ""


def _py_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "?"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v)


def signature(d: Definition | Primitive) -> str:
    """A definition's head as MSL text: `block self_attention(d_model: int, heads: int, ...)`."""
    if isinstance(d, Primitive):
        ps = [f"{p.name}: {p.type}" + ("" if p.default is ... else f" = {_py_value(p.default)}") for p in d.params]
        return f"{d.name}({', '.join(ps)})"
    node = d.node
    name = node.name.name
    if isinstance(node, (A.Block, A.Family)):
        return f"{d.kind} {name}({', '.join(_src(p) for p in node.params)})"
    body = "".join(f"\n  {_src(f)}" for f in node.fields)
    if isinstance(node, A.Preset):
        return f"preset {name} : {node.family.dotted} {{{body}\n}}"
    return f"device {name} {{{body}\n}}"


# ---------------------------------------------------------------- hover
@dataclass(frozen=True)
class Target:
    """What a name under the cursor stands for."""

    kind: str  # definition | primitive | model | param | field | constraint | quantity | local
    name: str
    definition: Definition | None = None
    node: A.Node | None = None  # the node that defines it (param, local, model)


def defs_with_params(module: A.Module) -> tuple[A.Block | A.Family, ...]:
    return (*module.blocks, *module.families)


def _enclosing_def(module: A.Module, offset: int) -> A.Block | A.Family | None:
    for d in defs_with_params(module):
        if d.span.start <= offset < d.span.end:
            return d
    return None


def family_of(prog: Program, name: str) -> A.Family | None:
    d = prog.lookup(prog.root_name, name)
    for _ in range(8):  # a preset names a family (or another preset)
        if d is None:
            return None
        if isinstance(d.node, A.Family):
            return d.node
        if not isinstance(d.node, A.Preset):
            return None
        d = prog.lookup(d.module, d.node.family)
    return None


def _architecture_at(text: str, offset: int) -> str | None:
    """The family or preset named by the `architecture X {` or `preset N : X {` the offset is inside."""
    depth = 0
    for m in reversed(list(re.finditer(r"[{}]", blank_strings(text[:offset])))):
        if m.group() == "}":
            depth += 1
        elif depth:
            depth -= 1
        else:
            head = re.search(r"(?:architecture\s+|preset\s+\w+\s*:\s*)(" + _IDENT.pattern + r")\s*$",
                             text[:m.start()])
            return head.group(1) if head else None
    return None


def blank_strings(text: str) -> str:
    """`text` with comments and string contents blanked out (same length), for bracket scanning."""
    return re.sub(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*', lambda m: " " * len(m.group()), text)


def resolve(doc: DocState, offset: int) -> tuple[int, int, Target] | None:
    """What the name at `offset` refers to, with the name's extent."""
    found = name_at(doc.text, offset)
    if found is None:
        return None
    start, end, word = found
    q = _QUANTITY.fullmatch(word)
    if q is not None and q.group(2) in UNIT_SCALE:
        return start, end, Target("quantity", word)
    if not word[0].isalpha() and word[0] != "_":
        return None
    module = doc.current_module()
    prog = program_for(doc)
    imp = re.match(r"\s*import\s+(" + _IDENT.pattern + ")", _line_of(doc.text, offset))
    if imp is not None and imp.group(1) == word and word in prog.modules:
        return start, end, Target("module", word)
    after = doc.text[end:end + 40]
    before = doc.text[max(0, start - 40):start]
    if module is not None:
        for m in module.models:
            if m.name.span.start == start:
                return start, end, Target("model", word, node=m)
        scope = _enclosing_def(module, offset)
        local = _local(scope, word) if scope is not None and "." not in word else None
        # in a call or after `>>` a name is a layer: a local only if it is a `layer` parameter
        as_layer = re.match(r"\s*\(", after) or re.search(r">>\s*(?:\w+\s*:\s*)?$|\w\s*:\s*$", before)
        if local is not None and (not as_layer or _is_layer_param(local)):
            return start, end, Target("param" if isinstance(local, A.Param) else "local", word, node=local)
    arch = _architecture_at(doc.text, offset)
    if arch is not None and re.match(r"\s*=(?!=)", after):
        fam = family_of(prog, arch)
        if fam is not None:
            for p in fam.params:
                if p.name.name == word:
                    return start, end, Target("field", word, node=p)
    d = prog.lookup(prog.root_name, word)
    if d is not None:
        return start, end, Target("definition", word, definition=d)
    if word in PRIMITIVES:
        return start, end, Target("primitive", word)
    if word in CONSTRAINTS and re.match(r"\s*(<=|>=|==|!=|<|>|=)", after):
        return start, end, Target("constraint", word)
    return None


def _is_layer_param(node: A.Node) -> bool:
    return isinstance(node, A.Param) and isinstance(node.type, A.NamedType) and node.type.name == "layer"


def _local(scope: A.Block | A.Family, word: str) -> A.Node | None:
    for p in scope.params:
        if p.name.name == word:
            return p
    if isinstance(scope, A.Block):
        for s in statements(scope.body):
            if isinstance(s, A.Input) and any(n.name == word for n in s.names):
                return s
            if isinstance(s, A.Assign) and any(n.name == word for n in s.targets):
                return s
            if isinstance(s, A.Let) and s.name.name == word:
                return s
    return None


def hover(doc: DocState, offset: int) -> tuple[int, int, str] | None:
    """Markdown for the name at `offset`, with the name's extent."""
    r = resolve(doc, offset)
    if r is None:
        return None
    start, end, t = r
    text = _hover_text(doc, t)
    return (start, end, text) if text else None


def _code(s: str) -> str:
    return f"```msl\n{s}\n```"


def _hover_text(doc: DocState, t: Target) -> str:
    if t.kind == "quantity":
        m = _QUANTITY.fullmatch(t.name)
        assert m is not None
        scale, dim = UNIT_SCALE[m.group(2)]
        v = float(m.group(1)) * scale
        shown = f"{int(v):,}" if v == int(v) and v >= 1 else f"{v:g}"
        unit = {"bytes": " bytes", "time": " s", "frequency": " Hz", "rate": " per second", "pixels": " px"}.get(dim, "")
        return f"`{t.name}` = {shown}{unit} ({dim})"
    if t.kind == "definition" and t.definition is not None:
        d = t.definition
        where = f"`{d.module}`" if d.module != "__main__" else "this file"
        docs = doc_comment(d.node)
        return "\n\n".join(x for x in (_code(signature(d)), docs, f"{d.kind} `{d.qualname}`, defined in {where}") if x)
    if t.kind == "module":
        prog = program_for(doc)
        mod = prog.modules[t.name]
        first = mod.span.file.text.split("\n") if mod.span.file else []
        about = next((ln.lstrip("# ").strip() for ln in first if ln.startswith("#")), "")
        defs = ", ".join(f"`{q.rsplit('.', 1)[-1]}`" for q, d in prog.defs.items() if d.module == t.name)
        return f"module `{t.name}`: {about}\n\ndefines {defs}"
    if t.kind == "primitive":
        p = PRIMITIVES[t.name]
        return f"{_code(signature(p))}\n\n{p.doc}\n\nprimitive layer"
    if t.kind in ("param", "field") and isinstance(t.node, A.Param):
        text = _code(_src(t.node))
        if t.kind == "field":
            text += "\n\nparameter of the architecture's family" + _solved(doc, t.name)
        return text
    if t.kind == "local" and t.node is not None:
        return _code(_src(t.node))
    if t.kind == "constraint":
        c = CONSTRAINTS[t.name]
        ops = ", ".join(f"`{o}`" for o in c.ops)
        return f"constraint `{c.name}`: {c.doc}\n\nmeasured as a {c.dimension}; operators {ops}"
    if t.kind == "model" and isinstance(t.node, A.Model):
        return model_summary(doc, t.node)
    return ""


def _solved(doc: DocState, name: str) -> str:
    a = doc.latest
    if a is None:
        return ""
    vals = {format_dim(c.spec.dims[name]) for c in a.comps if c.spec is not None and name in c.spec.dims}
    return f"; compiled value: `{', '.join(sorted(vals))}`" if vals else ""


def format_dim(v: object) -> str:
    if isinstance(v, LayerRef):
        target = v.target.rsplit(".", 1)[-1]
        args = ", ".join(f"{k} = {format_dim(x)}" for k, x in v.kwargs)
        return f"{target}({args})" if args else target
    if isinstance(v, Sym):
        return v.name
    return format_value(v)  # type: ignore[arg-type]


def _si(v: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.4g}{unit}"
    return f"{v:.4g}"


def model_summary(doc: DocState, model: A.Model) -> str:
    """A model's compiled numbers: parameters, FLOPs, memory, constraint status, the dims."""
    head = _code(f"model {model.name.name}")
    a = doc.latest
    comp = a.model_comp(model.name.name) if a is not None else None
    if comp is None or comp.graph is None or comp.spec is None:
        errors = [d for d in (comp.bag.errors if comp is not None else ())]
        if errors:
            first = errors[0]
            return f"{head}\n\ndoes not compile: {len(errors)} error(s); first: `error[{first.code}]` {first.message}"
        return f"{head}\n\nnot compiled yet"
    spec, est = comp.spec, comp.graph.g.graph["estimates"]
    arch = f"preset `{spec.preset}` of family `{spec.family.qualname}`" if spec.preset else f"family `{spec.family.qualname}`"
    sym = ", ".join(f"{k}={v}" for k, v in est["symbols"].items())
    mem = est["memory"]["inference_total_bytes"]
    lines = [
        head,
        f"{arch}; task `{spec.task}`",
        f"- parameters: **{est['params']:,}** ({_si(est['params'])}, exact)",
        f"- FLOPs per forward pass: **{_si(est['flops_forward'])}** ({est['flops_forward']:,}; {sym})",
        f"- inference memory: {mem / 1e9:.3g} GB (estimate)",
    ]
    cons = comp.graph.g.graph.get("constraints", [])
    if cons:
        lines.append("\nconstraints:")
        mark = {"ok": "✓", "violated": "✗", "applied": "·", "not-checked": "?"}
        for c in cons:
            text = f"{c['kind']} {c['op']} {c['value']}" + (f" on {c['device']}" if c.get("device") else "")
            status = c["status"] + (" (estimate)" if c.get("basis") == "estimate" else "")
            actual = f": {_actual(c['kind'], c['actual'])}" if "actual" in c else ""
            lines.append(f"- {mark.get(c['status'], '?')} `{text}` {status}{actual}")
    dims = ", ".join(f"{k} = {format_dim(v)}" for k, v in spec.dims.items())
    lines.append(f"\ndims: {dims}")
    return "\n".join(lines)


def _actual(kind: str, v: float) -> str:
    if kind in ("memory", "training_memory"):
        return f"{v / 1e9:.3g} GB"
    if kind == "latency":
        return f"{v * 1e3:.3g} ms"
    if kind == "throughput":
        return f"{v:.3g}/s"
    return f"{int(v):,}" if float(v).is_integer() else f"{v:g}"


# ---------------------------------------------------------------- go to definition
def definition(doc: DocState, offset: int) -> Span | None:
    """Where the name at `offset` is defined (the defining name's span), in this file or another."""
    r = resolve(doc, offset)
    if r is None:
        return None
    t = r[2]
    if t.kind == "module":
        return _module_span(program_for(doc), t.name)
    if t.definition is not None:
        return t.definition.node.name.span
    if isinstance(t.node, (A.Param, A.Model)):
        return t.node.name.span
    if isinstance(t.node, (A.Input, A.Assign)):
        names = t.node.names if isinstance(t.node, A.Input) else t.node.targets
        return next(n.span for n in names if n.name == t.name)
    if isinstance(t.node, A.Let):
        return t.node.name.span
    return None


def _line_of(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start:end if end >= 0 else len(text)]


def _module_span(prog: Program, modname: str) -> Span | None:
    m = prog.modules.get(modname)
    if m is None or m.span.file is None:
        return None
    return Span.of(m.span.file, 0, 0)


# ---------------------------------------------------------------- document symbols
@dataclass
class Symbol:
    name: str
    kind: str  # block | family | preset | device | model | import | param | field | constraint | slot
    detail: str
    span: Span
    name_span: Span
    children: list[Symbol] = field(default_factory=list)


def document_symbols(module: A.Module) -> list[Symbol]:
    out: list[Symbol] = []
    for imp in module.imports:
        out.append(Symbol(imp.path.dotted, "import", "", imp.span, imp.path.span))
    for b in module.blocks:
        out.append(Symbol(b.name.name, "block", _params_detail(b.params), b.span, b.name.span, _param_symbols(b.params)))
    for f in module.families:
        kids = _param_symbols(f.params)
        kids += [Symbol(f"encoder {e.modality.name}", "slot", e.layer.callee.dotted, e.span, e.modality.span)
                 for e in f.encoders]
        kids += [Symbol(f"head {h.task.name}", "slot", h.layer.callee.dotted, h.span, h.task.span) for h in f.heads]
        out.append(Symbol(f.name.name, "family", _params_detail(f.params), f.span, f.name.span, kids))
    for p in module.presets:
        out.append(Symbol(p.name.name, "preset", p.family.dotted, p.span, p.name.span, _field_symbols(p.fields)))
    for d in module.devices:
        out.append(Symbol(d.name.name, "device", "", d.span, d.name.span, _field_symbols(d.fields)))
    for m in module.models:
        kids = [Symbol(c.name.name, "constraint", _src(c), c.span, c.name.span) for c in m.constraints]
        if m.architecture is not None:
            a = m.architecture
            kids.append(Symbol(f"architecture {a.family.dotted}", "slot", "", a.span, a.family.span,
                               _field_symbols(a.fields)))
        for t in m.training:  # the section's keyword is where it starts
            kids.append(Symbol("training", "slot", "", t.span, Span.of(t.span.file, t.span.start, t.span.start + 8)
                               if t.span.file is not None else t.span, _field_symbols(t.fields)))
        task = m.task.name.name if m.task else ""
        out.append(Symbol(m.name.name, "model", task, m.span, m.name.span, kids))
    return sorted(out, key=lambda s: s.span.start)


def _params_detail(params: Sequence[A.Param]) -> str:
    return "(" + ", ".join(p.name.name for p in params) + ")"


def _param_symbols(params: Sequence[A.Param]) -> list[Symbol]:
    return [Symbol(p.name.name, "param", _src(p.type) if p.type else "", p.span, p.name.span) for p in params]


def _field_symbols(fields: Sequence[A.Field]) -> list[Symbol]:
    return [Symbol(f.name.name, "field", _src(f.value), f.span, f.name.span) for f in fields]
