"""Completion: what may come at the cursor, read from the text before it and from the compiler's tables.

The document is usually incomplete while the user types, so the context comes from the text, not
from a parse: the unclosed `{` and `(` before the cursor (with what precedes each) and the start of
the current statement. The names come from the symbol tables (`program_for`), the catalog, the
primitives and the grammar's keywords.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from metagen_compiler.semantics.catalog import (
    CONSTRAINTS,
    INPUT_MODALITIES,
    LATENCY_CLASSES,
    OBJECTIVES,
    OUTPUT_MODALITIES,
    TASK_FIELDS,
    TASKS,
)
from metagen_compiler.semantics.program import Definition, Program, stdlib_modules
from metagen_compiler.semantics.training_section import KEYS as TRAINING_KEYS
from metagen_compiler.semantics.values import UNIT_SCALE
from metagen_compiler.syntax import ast as A

from ..primitives import PRIMITIVES
from .analysis import DocState, blank_strings, defs_with_params, doc_comment, family_of, program_for, signature
from .vocabulary import KEYWORDS, UNITS

__all__ = ["Completion", "complete"]

TOP_KEYWORDS = ("msl", "import", "block", "family", "preset", "device", "model")
MODEL_KEYWORDS = ("modality", "task", "objective", "constraints", "architecture", "training", "metadata")
BLOCK_KEYWORDS = ("input", "let", "return", "require", "if", "else")
FAMILY_KEYWORDS = ("require", "encoder", "backbone", "head", "tie", "prefer")
_UNIT_WORDS = {"count": "count", "bytes": "bytes", "time": "seconds", "frequency": "Hz", "rate": "per second",
               "pixels": "pixels"}


@dataclass(frozen=True)
class Completion:
    label: str
    kind: str  # keyword | block | family | preset | device | primitive | module | enum | unit | field | value | variable
    detail: str = ""
    documentation: str = ""
    insert: str | None = None  # text to insert, if not the label; a snippet when `snippet`
    snippet: bool = False
    replace: tuple[int, int] | None = None  # offsets of the text the item replaces


@dataclass(frozen=True)
class _Frame:
    bracket: str  # { or (
    pos: int
    head: str  # the text before the bracket, back to the previous statement boundary


def _frames(text: str) -> list[_Frame]:
    """The unclosed brackets before the end of `text`, outermost first."""
    clean = blank_strings(text)
    stack: list[_Frame] = []
    for m in re.finditer(r"[{}()\[\]]", clean):
        c = m.group()
        if c in "{([":
            start = max(clean.rfind(ch, 0, m.start()) for ch in "{};")
            if c == "(":
                start = max(start, clean.rfind("\n", 0, m.start()))
            stack.append(_Frame(c, m.start(), _head(clean[start + 1:m.start()])))
        elif stack:
            stack.pop()
    return stack


def _head(text: str) -> str:
    """The statement a bracket belongs to: from the last line that starts a construct, else the last line."""
    lines = text.split("\n")
    for i in range(len(lines) - 1, -1, -1):
        if _construct(lines[i].strip()) is not None:
            return " ".join(ln.strip() for ln in lines[i:]).strip()
    return lines[-1].strip()


def _statement_prefix(text: str, frame: _Frame | None) -> str:
    """The text of the current statement up to the cursor."""
    clean = blank_strings(text)
    start = max(clean.rfind("\n"), clean.rfind(";"), frame.pos if frame else -1)
    return clean[start + 1:]


def complete(doc: DocState, offset: int) -> list[Completion]:
    text = doc.text[:offset]
    word = re.search(r"[A-Za-z0-9_.]*\Z", text)
    start = offset - len(word.group()) if word else offset
    span = (start, offset)
    frames = _frames(text)
    frame = frames[-1] if frames else None
    prefix = _statement_prefix(text, frame)
    prog = program_for(doc)

    unit = re.search(r"(?<![A-Za-z0-9_.])[0-9]+(?:\.[0-9]+)?([A-Za-z]*)\Z", text)
    if unit is not None:
        kind_m = re.match(r"\s*(\w+)", prefix)
        constraint = CONSTRAINTS.get(kind_m.group(1)) if kind_m and _construct(_head_of(frame)) == "constraints" else None
        units = _units((offset - len(unit.group(1)), offset), constraint.dimension if constraint else None)
        return units or _units((offset - len(unit.group(1)), offset))
    imp = re.match(r"\s*import\s+([\w.]*)$", prefix)
    if imp is not None:
        return _modules(doc.path, span)
    heads = [f.head for f in frames if f.bracket == "{"]
    head = frame.head if frame is not None else ""
    if frame is not None and frame.bracket == "(":
        return _in_call(prog, doc, head, prefix, span) + _values(prog, span)
    if frame is not None and frame.bracket == "[" and len(frames) > 1 and _construct(frames[-2].head) == "training":
        return _training(_statement_prefix(text, frames[-2]), False, span)  # `augment = [random_crop, |`
    kind = _construct(head)
    at_start = re.fullmatch(r"\s*[A-Za-z_]*", prefix) is not None

    if kind is None and frame is None:
        if re.match(r"\s*preset\s+\w+\s*:\s*[\w.]*$", prefix):
            return _defs(prog, ("family", "preset"), span)
        return _keywords(TOP_KEYWORDS if at_start else KEYWORDS, span)
    if kind == "model":
        return _model_statement(prog, prefix, at_start, span)
    if kind == "constraints":
        return _constraint(prog, prefix, at_start, span)
    if kind == "training":
        return _training(prefix, at_start, span)
    if kind in ("architecture", "preset"):
        return _architecture_field(prog, _arch_name(head), prefix, at_start, span)
    if kind == "task":
        return [Completion(f, "field", TASK_FIELDS[f], insert=f"{f} = ", replace=span) for f in TASK_FIELDS] \
            if at_start else _values(prog, span)
    if kind == "family":
        return _family_statement(prog, prefix, at_start, span)
    if kind == "block" or (kind == "if" and any(_construct(h) == "block" for h in heads)):
        return _block_statement(prog, doc, frames, prefix, at_start, span)
    if kind == "device" and not at_start:
        return _values(prog, span)
    return _keywords(KEYWORDS, span) + _layers(prog, span) + _values(prog, span)


def _head_of(frame: _Frame | None) -> str:
    return frame.head if frame is not None else ""


def _construct(head: str) -> str | None:
    m = re.match(r"(block|family|model|preset|device|constraints|architecture|task|metadata|training|if|else)\b", head)
    if m is not None:
        return m.group(1) if m.group(1) != "else" else "if"
    if head.startswith("}") and "else" in head:
        return "if"
    return None


def _arch_name(head: str) -> str:
    m = re.search(r"(?:architecture\s+|:\s*)([\w.]+)\s*$", head)
    return m.group(1) if m else ""


# ---------------------------------------------------------------- item lists
def _keywords(words: tuple[str, ...], span: tuple[int, int]) -> list[Completion]:
    return [Completion(w, "keyword", "keyword", replace=span) for w in words]


def _names(names: tuple[str, ...], kind: str, detail: str, span: tuple[int, int]) -> list[Completion]:
    return [Completion(n, kind, detail, replace=span) for n in names]


def _scale(x: float) -> str:
    """1e6 -> `10^6`, 2**30 -> `2^30`."""
    for base in (10, 2):
        n = round(math.log(x, base))
        if n and math.isclose(base ** n, x):
            return f"{base}^{n}"
    return f"{x:g}"


def _units(span: tuple[int, int], dimension: str | None = None) -> list[Completion]:
    """The unit suffixes (only those of `dimension` when the constraint being written says which)."""
    out = []
    for u in UNITS:
        scale, dim = UNIT_SCALE[u]
        if dimension is None or dim == dimension:
            detail = _UNIT_WORDS.get(dim, dim) + ("" if scale == 1 else f" ×{_scale(scale)}")
            out.append(Completion(u, "unit", detail, replace=span))
    return out


def _modules(path: str, span: tuple[int, int]) -> list[Completion]:
    out = [Completion(m, "module", "stdlib module", replace=span) for m in stdlib_modules()]
    here = Path(path).parent
    if here.is_dir():
        out += [Completion(p.stem, "module", "module beside this file", replace=span)
                for p in sorted(here.glob("*.msl")) if p.resolve() != Path(path).resolve()]
    return out


def _def_item(name: str, d: Definition, span: tuple[int, int], call: bool) -> Completion:
    node = d.node
    insert, snippet = None, False
    if call and isinstance(node, (A.Block, A.Family)):
        required = [p.name.name for p in node.params if p.default is None]
        insert = f"{name}(" + ", ".join(f"${{{i}:{p}}}" for i, p in enumerate(required, 1)) + ")$0"
        snippet = True
    sig = signature(d)
    head = sig.split("\n")[0].removesuffix("{").strip()
    docs = doc_comment(node) + (f"\n\n```msl\n{sig}\n```" if "\n" in sig else "")
    return Completion(name, d.kind, head, docs.strip(), insert, snippet, span)


def _defs(prog: Program, kinds: tuple[str, ...], span: tuple[int, int], call: bool = False) -> list[Completion]:
    """Every name the document sees: bare names first, then those qualified by an import of the file
    (`transformer.decoder`); the always-imported `std.devices` is offered by bare names only."""
    namespaces = {(i.alias.name if i.alias else i.path.parts[-1]) for i in prog.root.imports}
    names = prog.visible(prog.root_name)
    out = []
    for name in sorted(names, key=lambda n: ("." in n, n)):
        d = prog.lookup(prog.root_name, name)
        if d is not None and d.kind in kinds and ("." not in name or name.split(".")[0] in namespaces):
            out.append(_def_item(name, d, span, call))
    return out


def _layers(prog: Program, span: tuple[int, int]) -> list[Completion]:
    """What can follow `>>`: the visible blocks, with their parameters, and the primitive layers."""
    out = _defs(prog, ("block",), span, call=True)
    for p in PRIMITIVES.values():
        if p.name in ("add", "sub", "mul"):
            continue
        required = [q.name for q in p.params if q.default is ...]
        insert = f"{p.name}(" + ", ".join(f"${{{i}:{q}}}" for i, q in enumerate(required, 1)) + ")$0" \
            if p.params else None
        out.append(Completion(p.name, "primitive", signature(p), p.doc, insert, insert is not None, span))
    return out


def _values(prog: Program, span: tuple[int, int]) -> list[Completion]:
    return _keywords(("true", "false", "not"), span) + [Completion("?", "value", "solve this dimension", replace=span)]


# ---------------------------------------------------------------- contexts
def _model_statement(prog: Program, prefix: str, at_start: bool, span: tuple[int, int]) -> list[Completion]:
    if at_start:
        return _keywords(MODEL_KEYWORDS, span)
    m = re.match(r"\s*(modality|task|objective|architecture)\b(.*)$", prefix)
    if m is None:
        return _values(prog, span)
    stmt, rest = m.groups()
    if stmt == "modality":
        return _names(OUTPUT_MODALITIES if "->" in rest else INPUT_MODALITIES, "enum",
                      "output modality" if "->" in rest else "input modality", span)
    if stmt == "task":
        return _names(TASKS, "enum", "task", span)
    if stmt == "objective":
        return _names(OBJECTIVES, "enum", "objective", span)
    return _defs(prog, ("family", "preset"), span)


def _constraint(prog: Program, prefix: str, at_start: bool, span: tuple[int, int]) -> list[Completion]:
    if at_start:
        return [Completion(c.name, "field", c.doc, f"a {c.dimension}; {', '.join(c.ops)}", replace=span)
                for c in CONSTRAINTS.values()]
    if re.search(r"\bon\s+\w*$", prefix) or re.match(r"\s*device\s*=\s*\w*$", prefix):
        return _defs(prog, ("device",), span)
    if re.match(r"\s*latency\s*(<=|<|=)\s*\w*$", prefix):
        return _names(tuple(LATENCY_CLASSES), "enum", "latency class", span) + _keywords(("on",), span)
    return _keywords(("on",), span)


def _training(prefix: str, at_start: bool, span: tuple[int, int]) -> list[Completion]:
    """In `training { ... }`: the settings, and after `key =` the names it takes (optimizers, augmentations...)."""
    if at_start:
        return [Completion(k, "field", t.doc, insert=f"{k} = ", replace=span) for k, t in TRAINING_KEYS.items()]
    m = re.match(r"\s*(\w+)\s*=", prefix)
    key = TRAINING_KEYS.get(m.group(1)) if m else None
    if key is not None and key.choices:
        return _names(key.choices, "enum", key.doc, span)
    return []


def _architecture_field(prog: Program, arch: str, prefix: str, at_start: bool,
                        span: tuple[int, int]) -> list[Completion]:
    fam = family_of(prog, arch)
    params = {p.name.name: p for p in fam.params} if fam is not None else {}
    if at_start:
        return [Completion(n, "field", _param_text(p), insert=f"{n} = ", replace=span) for n, p in params.items()]
    m = re.match(r"\s*(\w+)\s*=\s*[\w.]*$", prefix)
    p = params.get(m.group(1)) if m else None
    if p is not None:
        return _param_values(prog, p, span)
    return _values(prog, span)


def _param_text(p: A.Param) -> str:
    f = p.span.file
    return re.sub(r"\s+", " ", f.text[p.span.start:p.span.end]) if f else p.name.name


def _param_values(prog: Program, p: A.Param, span: tuple[int, int]) -> list[Completion]:
    """The values a parameter takes: an enum's values, true/false, layers, or `?` for a dimension."""
    if isinstance(p.type, A.EnumType):
        return _names(p.type.values, "enum", f"value of `{p.name.name}`", span)
    t = p.type.name if isinstance(p.type, A.NamedType) else "any"
    if t == "bool":
        return _keywords(("true", "false"), span)
    if t == "layer":
        return _layers(prog, span)
    return [Completion("?", "value", "solve this dimension", replace=span)] if t == "int" else []


def _family_statement(prog: Program, prefix: str, at_start: bool, span: tuple[int, int]) -> list[Completion]:
    if at_start:
        return _keywords(FAMILY_KEYWORDS, span)
    if re.match(r"\s*encoder\s+\w*$", prefix):
        return _names(INPUT_MODALITIES, "enum", "input modality", span)
    if re.match(r"\s*head\s+\w*$", prefix):
        return _names(TASKS, "enum", "task", span)
    if re.search(r"=\s*(\w+\s*:\s*)?[\w.]*$", prefix):
        return _layers(prog, span)
    return _values(prog, span)


def _block_statement(prog: Program, doc: DocState, frames: list[_Frame], prefix: str, at_start: bool,
                     span: tuple[int, int]) -> list[Completion]:
    local = _locals(doc, frames, span)
    if at_start:
        return _keywords(BLOCK_KEYWORDS, span) + local
    if re.search(r">>\s*(\w+\s*:\s*)?(repeat\s*\([^)]*\)\s*)?[\w.]*$", prefix):
        return _layers(prog, span) + [c for c in local if c.detail.endswith(": layer")]
    cmp = re.search(r"\b(\w+)\s*(==|!=)\s*\w*$", prefix)
    params = _def_params(doc, frames)
    if cmp is not None:
        for p in params:
            if p.name.name == cmp.group(1) and isinstance(p.type, A.EnumType):
                return _names(p.type.values, "enum", f"value of `{p.name.name}`", span)
    return local + _values(prog, span)


def _def_params(doc: DocState, frames: list[_Frame]) -> list[A.Param]:
    """The parameters of the block or family the cursor is in, found by name in the last parse."""
    m = next((re.match(r"(block|family)\s+(\w+)", f.head) for f in frames if re.match(r"(block|family)\b", f.head)),
             None)
    module = doc.module
    if m is None or module is None:
        return []
    for d in defs_with_params(module):
        if d.name.name == m.group(2):
            return list(d.params)
    return []


def _locals(doc: DocState, frames: list[_Frame], span: tuple[int, int]) -> list[Completion]:
    """Parameters, inputs, `let`s and assigned tensors visible at the cursor."""
    out = [Completion(p.name.name, "variable", _param_text(p), replace=span) for p in _def_params(doc, frames)]
    body = next((f.pos for f in frames if re.match(r"block\b", f.head)), None)
    if body is not None:
        seen = {c.label for c in out}
        text = blank_strings(doc.text[body:span[0]])
        names = [n for m in re.finditer(r"^[ \t]*input[ \t]+([\w \t,]+)$", text, re.MULTILINE) for n in re.split(r"[\s,]+", m.group(1))]
        names += [n for m in re.finditer(r"^[ \t]*(?:let[ \t]+)?([\w \t,]+?)[ \t]*=(?!=)", text, re.MULTILINE)
                  for n in re.split(r"[\s,]+", m.group(1))]
        for n in names:
            if n and n not in seen and re.fullmatch(r"[A-Za-z_]\w*", n):
                seen.add(n)
                out.append(Completion(n, "variable", "tensor or value in this block", replace=span))
    return out


def _in_call(prog: Program, doc: DocState, head: str, prefix: str, span: tuple[int, int]) -> list[Completion]:
    """Inside `callee(...)`: the callee's parameters as `name = `, and the enum values of the one being set."""
    m = re.search(r"([A-Za-z_][\w.]*)\s*$", head)
    if m is None or re.match(r"\s*(block|family)\b", head):
        return []
    callee = m.group(1)
    params: list[tuple[str, str]] = []
    d = prog.lookup(prog.root_name, callee)
    if d is not None and isinstance(d.node, (A.Block, A.Family)):
        kw = re.search(r"\b(\w+)\s*=\s*\w*$", prefix)
        for p in d.node.params:
            if kw is not None and p.name.name == kw.group(1):
                return _param_values(prog, p, span)
        params = [(p.name.name, _param_text(p)) for p in d.node.params]
    elif callee in PRIMITIVES:
        params = [(q.name, f"{q.name}: {q.type}") for q in PRIMITIVES[callee].params]
    return [Completion(n, "field", detail, insert=f"{n} = ", replace=span) for n, detail in params]
