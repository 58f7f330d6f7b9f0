"""The seeds' YAML spec format -> the same AST the MSL parser builds.

The text is composed with PyYAML's SafeLoader into a tree of nodes (never constructed into Python
objects), and every node is lowered to an AST node whose span points at the YAML text. One YAML
document is one model. This front end reports only what the YAML form can get wrong: malformed
YAML (E005), a value of the wrong shape (E006), a key the format does not define (E007, with
"did you mean"), an unsupported version (E008). What the values mean (enums, units of a
constraint, family parameters) is left to the checker, which sees the same AST as for MSL.

The format is the earlier YAML tool's whole schema (docs/yaml.md lists every key with its MSL
equivalent): `metagen_version`, `name` (a display name: the identifier is derived from it),
`modality {inputs, outputs}`, `task {type, ...}`, `constraints {...}`, `training {objective, data,
compute, alignment, config}`, `architecture {family, variant, components, dims...}`; the other keys of
METADATA_KEYS are kept as model metadata. The sections are lowered by yaml_schema.SchemaLowering, which
also holds the schema's tables. No key is dropped: each one becomes AST, metadata or a diagnostic.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from importlib import resources

import yaml
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from metagen_compiler.diagnostics import DiagnosticBag, Note, did_you_mean
from metagen_compiler.semantics.catalog import CONSTRAINTS, FAMILY_GROUPS, TASK_FROM_OBJECTIVE
from metagen_compiler.semantics.limits import (
    LIMIT_CODE,
    LIMITS_HINT,
    MAX_INT,
    MAX_NESTING,
    MAX_YAML_NODES,
    PAST_MAX_INT,
    short_int,
    source_too_large,
)
from metagen_compiler.semantics.program import parse_stdlib_cached
from metagen_compiler.semantics.values import UNIT_SCALE
from metagen_compiler.span import SourceFile, Span
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.parser import SUPPORTED_VERSIONS
from metagen_compiler.syntax.yaml_schema import (
    ARCH_KEYS,
    BOOL,
    CONSTRAINT_KEYS,
    DESCRIPTIVE_TASK_FIELDS,
    EVALUATION_KEYS,
    FLOAT,
    GENERATION_TASKS,
    INT,
    METADATA_KEYS,
    MODEL_KEYS,
    NULL,
    OBJECTIVE_TASKS,
    OUTPUT_TASKS,
    OUTPUTS_KEYS,
    STR,
    TAG,
    TASK_ALIASES,
    SchemaLowering,
    Sections,
    describe,
    fallback_note,
    identifier,
    is_ident,
    meta_key,
    resolve_target,
)

__all__ = ["CONSTRAINT_KEYS", "METADATA_KEYS", "MODEL_KEYS", "parse_yaml", "stdlib_presets"]

_RL_TASKS = ("policy_gradient", "value_based", "actor_critic", "model_based")
_PARAM_ALIASES = {"embedding_dim": "embed_dim"}  # a task field -> the parameter a family takes it as (CLIP)
# the recorded top-level sections -> their known keys (a typo of one is an error; any other key is recorded)
_RECORDED: dict[str, tuple[str, ...]] = {"outputs": OUTPUTS_KEYS, "evaluation": EVALUATION_KEYS, "reproducibility": ()}
_EXAMPLES = {"count": "86M", "bytes": "12GB", "time": "20ms", "rate": "30fps", "pixels": "224",
             "frequency": "16kHz", "int": "16", "device": "consumer_gpu"}

_CORE_TAGS = {TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp", "merge")}
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]+)")
_MAX_NODES = MAX_YAML_NODES  # aliases can make a small text a huge tree (the loader stops it first)


@functools.lru_cache(maxsize=1)
def _stdlib_index() -> tuple[dict[str, tuple[str, str]], dict[str, frozenset[str]]]:
    """Every stdlib preset: name -> (the stdlib module that defines it, the family it configures, qualified:
    `gpt2` -> (`presets`, `transformer.decoder`), `mixtral_tiny` -> (`moe`, `moe.decoder`)); and every stdlib
    family's parameters (`vision.vit` -> {image_size, ...})."""
    presets: dict[str, tuple[str, str]] = {}
    families: dict[str, frozenset[str]] = {}
    for f in sorted(resources.files("metagen_stdlib").iterdir(), key=lambda f: f.name):
        if not f.name.endswith(".msl"):
            continue
        mod = f.name.removesuffix(".msl")
        # the program loader's parse (and cache, in memory and on disk) of the same text
        module = parse_stdlib_cached(SourceFile(f"<stdlib>/{f.name}", f.read_text(encoding="utf-8")), DiagnosticBag())
        for p in module.presets if module else ():
            fam = p.family.dotted
            presets.setdefault(p.name.name, (mod, fam if "." in fam else f"{mod}.{fam}"))
        for fm in module.families if module else ():
            families[f"{mod}.{fm.name.name}"] = frozenset(q.name.name for q in fm.params)
    return presets, families


def stdlib_presets() -> dict[str, str]:
    """The stdlib's presets: name -> the family it configures (`gpt2` -> `transformer.decoder`)."""
    return {name: fam for name, (_, fam) in _stdlib_index()[0].items()}


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class _Lowering(SchemaLowering):
    """Lowers the composed YAML nodes of one file; diagnostics go to `bag`."""

    def __init__(self, file: SourceFile, bag: DiagnosticBag) -> None:
        self.file = file
        self.bag = bag
        self.imports: dict[str, Span] = {}
        self.nodes_left = _MAX_NODES
        self._scalars = SafeConstructor()
        self.names: dict[str, tuple[str, Span]] = {}  # identifier -> the display name that gave it, and where

    # ------------------------------------------------------------ spans
    def _end(self, node: Node) -> int:
        # a block collection's end mark is the next token, past trailing comments: use its last child
        if isinstance(node, (MappingNode, SequenceNode)) and not node.flow_style and node.value:
            last = node.value[-1]
            return self._end(last[1] if isinstance(node, MappingNode) else last)
        return int(node.end_mark.index)

    def span(self, node: Node, upto: Node | None = None) -> Span:
        start, end = int(node.start_mark.index), self._end(upto or node)
        while end > start and self.file.text[end - 1].isspace():
            end -= 1
        return Span.of(self.file, start, end)

    def inner(self, node: Node) -> Span:
        """A scalar's span without its quotes."""
        s = self.span(node)
        if isinstance(node, ScalarNode) and node.style in ("'", '"') and s.end - s.start >= 2:
            return Span.of(self.file, s.start + 1, s.end - 1)
        return s

    # ------------------------------------------------------------ shapes
    def shape(self, node: Node, message: str, hint: str | None = None) -> None:
        self.bag.error("E006", message, self.span(node), hint=hint)

    def mapping(self, node: Node, where: str, hint: str | None = None) -> list[tuple[str, ScalarNode, Node]]:
        """The (key, key node, value node) pairs of a mapping; [] and an E006 if it is none."""
        if not isinstance(node, MappingNode):
            what = f"`{where}`" if where else "a spec"
            self.shape(node, f"{what} must be a mapping of keys to values, not {describe(node)}", hint)
            return []
        out: list[tuple[str, ScalarNode, Node]] = []
        seen: dict[str, ScalarNode] = {}
        for k, v in node.value:
            merge = k.tag == TAG + "merge"
            if not isinstance(k, ScalarNode) or k.tag == NULL or merge or not k.value.strip():
                self.shape(k, f"a key {self._in(where)} must be a name, not {describe(k)}",
                           hint="YAML merge keys (`<<`) are not supported" if merge else None)
                continue
            if k.value in seen:
                self.bag.error("E104", f"`{_join(where, k.value)}` is given twice", self.inner(k),
                               notes=[Note("first given here", self.inner(seen[k.value]))])
                continue
            seen[k.value] = k
            out.append((k.value, k, v))
        return out

    @staticmethod
    def _in(where: str) -> str:
        return f"in `{where}`" if where else "at the top level"

    def unknown(self, key: ScalarNode, where: str, known: Iterable[str]) -> None:
        known = list(known)
        self.bag.error("E007", f"unknown key `{key.value}` {self._in(where)}", self.inner(key),
                       hint=did_you_mean(key.value, known) or f"keys {self._in(where)}: {', '.join(known)}")

    def text(self, node: Node, where: str, example: str) -> str | None:
        """A scalar's text (a name, a family, a version...): YAML 1.1's `yes`, `off` are words here."""
        if isinstance(node, ScalarNode) and node.tag != NULL and node.value.strip():
            return str(node.value).strip()
        self.shape(node, f"`{where}` takes a string such as {example}, not {describe(node)}")
        return None

    def ident(self, node: Node, where: str, example: str) -> A.Ident | None:
        t = self.text(node, where, example)
        return A.Ident(self.inner(node), t) if t is not None else None

    def name_list(self, node: Node, where: str, example: str, *, single: bool = False) -> tuple[A.Ident, ...]:
        """A list of names; `single` also takes one name alone."""
        if isinstance(node, ScalarNode) and single:
            one = self.ident(node, where, example)
            return (one,) if one else ()
        if not isinstance(node, SequenceNode):
            hint = f"write `{where.rsplit('.', 1)[-1]}: [{node.value}]`" if isinstance(node, ScalarNode) else None
            self.shape(node, f"`{where}` must be a list such as [{example}], not {describe(node)}", hint)
            return ()
        items = [self.ident(item, f"{where} item", example) for item in node.value]
        return tuple(i for i in items if i is not None)

    def tick(self, node: Node, where: str) -> bool:
        """Count a visited node; False (and one E006) once aliases have expanded the tree too far."""
        self.nodes_left -= 1
        if self.nodes_left == 0:
            self.shape(node, f"`{where or 'the spec'}` is too large "
                       f"(over {_MAX_NODES} values once YAML aliases are expanded)")
        return self.nodes_left > 0

    # ------------------------------------------------------------ values
    def scalar(self, node: ScalarNode, where: str, *, words: bool) -> A.Expr | None:
        """A scalar as an expression. With `words`, a bare word is a name (`rope`, `image`) and `?`
        an unknown; otherwise (metadata) every string is a string."""
        span = self.inner(node)
        tag = node.tag
        if tag == NULL:
            self.shape(node, f"`{where}` has no value")
            return None
        if tag == BOOL:
            return A.Bool(span, bool(self._scalars.construct_yaml_bool(node)))
        if tag == INT:
            return self.integer(node.value, span, lambda: int(self._scalars.construct_yaml_int(node)))
        if tag == FLOAT:
            return A.Num(span, float(self._scalars.construct_yaml_float(node)))
        text = str(node.value)
        if words:
            t = text.strip()
            if t == "?":
                return A.Unknown(span)
            if all(is_ident(p) for p in t.split(".")):
                return A.Name(span, tuple(t.split(".")))
            if _NUMBER.fullmatch(t):
                return self.integer(t, span, lambda: int(t)) if t.isdigit() else A.Num(span, float(t))
            m = _QUANTITY.fullmatch(t)
            if m and m.group(2) in UNIT_SCALE:
                return A.Quantity(span, float(m.group(1)), m.group(2), m.group(1) + m.group(2))
        return A.Str(span, text)

    def integer(self, text: str, span: Span, construct: Callable[[], int]) -> A.Num | None:
        """An integer scalar, or an error (E009) past MAX_INT: Python will not even read a decimal of more
        than 4,300 digits (ValueError), and an int64 in generated code holds no more than MAX_INT."""
        try:
            v: int | None = construct()
        except ValueError:
            v = None
        if v is None or abs(v) > MAX_INT:
            size = short_int(v) if v is not None else f"an integer of {sum(c.isdigit() for c in text):,} digits"
            self.bag.error(LIMIT_CODE, f"{size} is {PAST_MAX_INT}", span, hint=LIMITS_HINT)
            return None
        return A.Num(span, v)

    def value(self, node: Node, where: str) -> A.Expr | None:
        """A task or architecture field's value: a scalar, or a list of them."""
        if not self.tick(node, where):
            return None
        if isinstance(node, SequenceNode):
            items = [self.value(i, f"{where} item") for i in node.value]
            return A.ListExpr(self.span(node), tuple(i for i in items if i is not None)) if None not in items else None
        if isinstance(node, MappingNode):
            self.shape(node, f"`{where}` takes a value or a list of values, not a mapping")
            return None
        assert isinstance(node, ScalarNode)
        return self.scalar(node, where, words=True)

    def quantity(self, node: Node, where: str, kind: str) -> A.Expr | None:
        """A constraint's amount: a number, or a quantity string such as "86M"."""
        dim = CONSTRAINTS[kind].dimension
        example = _EXAMPLES[dim]
        if not isinstance(node, ScalarNode) or node.tag not in (STR, INT, FLOAT):
            self.shape(node, f"`{where}` takes a quantity such as {example}, not {describe(node)}")
            return None
        if node.tag != STR:
            return self.scalar(node, where, words=False)
        text, span = str(node.value).strip(), self.inner(node)
        if _NUMBER.fullmatch(text):
            return self.integer(text, span, lambda: int(text)) if text.isdigit() else A.Num(span, float(text))
        m = _QUANTITY.fullmatch(text)
        if m is None:
            self.bag.error("E201", f"`{where}` takes a quantity such as {example}, not `{text}`", span)
            return None
        number, unit = m.groups()
        if unit not in UNIT_SCALE:
            units = [u for u, (_, d) in UNIT_SCALE.items() if d == dim] or list(UNIT_SCALE)
            self.bag.error("E202", f"`{text}` has an unknown unit `{unit}`", span,
                           hint=did_you_mean(unit, units) or f"units here: {', '.join(units)}")
            return None
        return A.Quantity(span, float(number), unit, number + unit)

    def word(self, node: Node, where: str, example: str) -> A.Name | None:
        """An enum word such as a device class; `real-time` is `real_time`."""
        t = self.text(node, where, example)
        if t is None:
            return None
        w = t.replace("-", "_").replace(" ", "_")
        if not is_ident(w):
            self.bag.error("E201", f"`{where}` takes a name such as {example}, not `{t}`", self.inner(node))
            return None
        return A.Name(self.inner(node), (w,))

    # ------------------------------------------------------------ metadata
    def meta_entry(self, key: Node, node: Node, where: str, name: str | None = None) -> A.MetaEntry | None:
        if not self.tick(node, where):
            return None
        label = meta_key(name if name is not None else str(key.value))  # `GPU hours`: `gpu_hours`
        ident = A.Ident(self.inner(key), label)
        span = self.span(key, node)
        here = _join(where, label)
        if isinstance(node, MappingNode):
            entries = [self.meta_entry(k, v, here) for _, k, v in self.mapping(node, here)]
            return A.MetaGroup(span, ident, tuple(e for e in entries if e is not None))
        if isinstance(node, SequenceNode) and any(isinstance(i, MappingNode) for i in node.value):
            # a list of records: a group with one entry per item, item_1, item_2, ...
            items = [self.meta_entry(i, i, here, f"item_{n}") for n, i in enumerate(node.value, 1)]
            return A.MetaGroup(span, ident, tuple(e for e in items if e is not None))
        value = self.meta_value(node, here)
        return A.Field(span, ident, value) if value is not None else None

    def meta_value(self, node: Node, where: str) -> A.Expr | None:
        if not self.tick(node, where):
            return None
        if isinstance(node, SequenceNode):
            items = [self.meta_value(i, f"{where} item") for i in node.value]
            return A.ListExpr(self.span(node), tuple(i for i in items if i is not None))
        if isinstance(node, MappingNode):
            self.shape(node, f"`{where}` is a mapping inside a list of lists, which metadata cannot hold")
            return None
        assert isinstance(node, ScalarNode)
        return self.scalar(node, where, words=False)

    # ------------------------------------------------------------ sections
    def architecture(self, key: ScalarNode, node: Node) -> tuple[A.Architecture | None, list[A.MetaEntry]]:
        family: tuple[Node, str] | None = None
        variant: tuple[ScalarNode, Node, str] | None = None
        fields: list[A.Field] = []
        meta: list[A.MetaEntry] = []
        pairs = self.mapping(node, "architecture", hint="write `architecture: {family: transformer}`")
        choices: list[tuple[Node, str]] = []  # `family: [transformer, cnn]`: left open among candidates
        for k_text, k, v in pairs:
            if k_text == "family" and isinstance(v, SequenceNode):
                for item in v.value:
                    t = self.text(item, "architecture.family", "transformer")
                    if t is not None and not all(is_ident(p) for p in t.split(".")):
                        self.shape(item, f"`architecture.family` must be a name, not `{t}`",
                                   hint=f"use `{identifier(t)}`")
                    elif t is not None:
                        choices.append((item, t))
                family = (v, choices[0][1]) if choices else None
                if not v.value:
                    family = (v, "?")
            elif k_text == "family":
                t = self.text(v, "architecture.family", "transformer")
                if t is not None and not all(is_ident(p) for p in t.split(".")):
                    self.shape(v, f"`architecture.family` must be a name, not `{t}`", hint=f"use `{identifier(t)}`")
                elif t is not None:
                    family = (v, t)
            elif k_text == "variant":
                t = self.text(v, "architecture.variant", "vit")
                if t is not None:
                    variant = (k, v, t)
            elif k_text in ARCH_KEYS:
                entry = self.components(k, v)
                if entry is not None:
                    meta.append(entry)
            elif did_you_mean(k_text, ARCH_KEYS) is not None:  # `famly`, `varient`: not a dim
                self.unknown(k, "architecture", ARCH_KEYS)
            elif not is_ident(k_text):
                self.shape(k, f"`architecture.{k_text}` is not a parameter name", hint=f"use `{identifier(k_text)}`")
            else:
                val = self.value(v, f"architecture.{k_text}")
                if val is not None:
                    fields.append(A.Field(self.span(k, v), A.Ident(self.inner(k), k_text), val))
        if family is None:
            if isinstance(node, MappingNode) and not any(p[0] == "family" for p in pairs):
                self.bag.error("E208", "`architecture` names no `family`", self.inner(key),
                               hint="add `family: transformer` (or cnn)")
            return None, meta
        fam_node, fam = family
        name = A.Name(self.inner(fam_node), tuple(fam.split(".")))
        if isinstance(fam_node, SequenceNode):  # the family left open: `metagenc search` chooses it
            presets = _stdlib_index()[0]
            for _, t in choices:
                if t in presets:
                    self.imports.setdefault(f"std.{presets[t][0]}", self.span(key, node))
            names = tuple(A.Name(self.inner(n), tuple(t.split("."))) for n, t in choices)
            return A.Architecture(self.span(key, node), names[0] if names else name, tuple(fields), names,
                                  self.span(fam_node)), meta
        if fam in ("lstm", "gru") and not any(f.name.name == "cell" for f in fields):  # std.rnn's cell
            fields.append(A.Field(self.inner(fam_node), A.Ident(self.inner(fam_node), "cell"),
                                  A.Name(self.inner(fam_node), (fam,))))
        presets = _stdlib_index()[0]
        if fam in presets:
            self.imports.setdefault(f"std.{presets[fam][0]}", self.span(key, node))
        if variant is not None:
            vk, vnode, var = variant
            chosen = self.variant(fam, var, vnode)
            if chosen is not None:
                name = chosen
            else:
                self.bag.warning("W003", f"variant `{var}` is not built yet; family `{fam}`'s default is used",
                                 self.inner(vnode), hint="the variant is kept in the metadata as `variant`")
                meta.insert(0, A.Field(self.span(vk, vnode), A.Ident(self.inner(vk), "variant"),
                                       A.Str(self.inner(vnode), var)))
        return A.Architecture(self.span(key, node), name, tuple(fields)), meta

    def variant(self, family: str, variant: str, node: Node) -> A.Name | None:
        """The family or preset a variant selects: a stdlib preset (gpt2, vit_b_16, ...) or a family
        group (vit, resnet, ...). None: the variant is not built."""
        presets = _stdlib_index()[0]
        if variant in presets:
            targets = {presets[variant][1]}
            self.imports.setdefault(f"std.{presets[variant][0]}", self.span(node))
        elif variant in FAMILY_GROUPS:
            targets = {t for _, t in FAMILY_GROUPS[variant]}
        else:
            return None
        if family in FAMILY_GROUPS and not targets & {t for _, t in FAMILY_GROUPS[family]}:
            covering = [g for g, opts in FAMILY_GROUPS.items() if targets & {t for _, t in opts}]
            self.bag.error("E106", f"variant `{variant}` builds `{', '.join(sorted(targets))}`, which family "
                           f"`{family}` does not cover", self.inner(node),
                           hint=f"use `family: {covering[0]}`" if covering else None)
        return A.Name(self.inner(node), (variant,))

    # ------------------------------------------------------------ a document
    def check_tags(self, doc: Node) -> None:
        """Explicit tags (`!!python/object`, `!foo`) mean nothing in a spec: report each node once."""
        seen: set[int] = set()
        todo = [doc]
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.tag not in _CORE_TAGS:
                self.shape(node, f"the YAML tag `{node.tag.removeprefix(TAG)}` is not part of the spec format",
                           hint="remove the tag; a spec holds only strings, numbers, lists and mappings")
            if isinstance(node, MappingNode):
                todo += [n for pair in reversed(node.value) for n in reversed(pair)]
            elif isinstance(node, SequenceNode):
                todo += reversed(node.value)

    def model(self, doc: Node) -> tuple[A.Model | None, str | None]:
        self.check_tags(doc)
        pairs = self.mapping(doc, "", hint="a spec starts with `metagen_version: \"1.0\"` and `name: ...`")
        if not isinstance(doc, MappingNode):
            return None, None
        at = {key: (k, v) for key, k, v in pairs}
        for key, k, _ in pairs:
            if key not in MODEL_KEYS + METADATA_KEYS:
                self.unknown(k, "", MODEL_KEYS + METADATA_KEYS)
        # the sections in the order their meanings need: the task and the constraints read the family
        sec = Sections({}, {})
        version = self.version(at["metagen_version"][1]) if "metagen_version" in at else None
        name = self.model_name(at["name"][1], sec) if "name" in at else None
        inputs: tuple[A.Ident, ...] = ()
        outputs: tuple[A.Ident, ...] = ()
        modality_span: Span | None = None
        if "modality" in at:
            inputs, outputs = self.modality(at["modality"][1])
            modality_span = self.span(*at["modality"])
        objectives: tuple[A.Ident, ...] = ()
        if "training" in at:
            objectives, group = self.training(*at["training"], sec)
            sec.meta["training"] = [group] if group else []
        arch: A.Architecture | None = None
        if "architecture" in at:
            k, v = at["architecture"]
            arch, sec.meta["architecture"] = self.architecture(k, v)
            self.imports.setdefault("std.transformer", self.span(k, v))
            self.imports.setdefault("std.vision", self.span(k, v))
            for fam in (arch.choices or (arch.family,)) if arch is not None else ():  # each candidate of an open one
                for _, member in FAMILY_GROUPS.get(fam.dotted, ()):
                    self.imports.setdefault(f"std.{member.split('.')[0]}", self.span(k, v))  # std.ssm, std.moe
        task = self.whole_task(at, sec, inputs, outputs, objectives, modality_span or self.span(doc))
        for key in METADATA_KEYS:
            if key in at:
                entry = self.metadata_entry(key, *at[key])
                sec.meta[key] = [entry] if entry is not None else []
        target: str | None = None
        if arch is not None:
            arch, task, target = self.family_target(arch, task, inputs, outputs, objectives)
            arch, target = self.edge_target(arch, sec, target)
            self.task_notes(sec, target)
            if task is not None and task.name.name == "generation" and target in GENERATION_TASKS:
                task = A.Task(task.span, A.Ident(task.name.span, GENERATION_TASKS[target]), task.fields)
            if target == "diffusion.unet" and "image" not in [i.name for i in inputs]:
                # text -> image: the U-Net denoises the output's (noisy) latent, an input of the family
                inputs += tuple(A.Ident(o.span, "image") for o in outputs if o.name == "image")[:1]
        constraints: list[A.Constraint] = []
        fields: list[A.Field] = []
        if "constraints" in at:
            k, v = at["constraints"]
            latent = isinstance(v, MappingNode) and any(kk.value == "latent_size" for kk, _ in v.value)
            constraints, fields, cmeta = self.constraints(v, target, latent)
            if cmeta:
                sec.meta["constraints"] = [A.MetaGroup(self.span(k, v), A.Ident(self.inner(k), "constraints"), tuple(cmeta))]
        if arch is not None:
            fields += self.config_fields(sec, target, arch)
            given = {f.name.name for f in arch.fields}
            arch = replace(arch, fields=arch.fields + tuple(f for f in fields if f.name.name not in given))
        if name is None:
            if "name" not in at:
                self.bag.error("E208", "the spec has no `name`", Span.of(self.file, doc.start_mark.index,
                               doc.start_mark.index), hint='add `name: "my_model"`')
            name = A.Ident(self.span(doc), "model")
        metadata = [e for key, _, _ in pairs for e in sec.meta.get(key, ())]
        model = A.Model(self.span(doc), name, inputs, outputs, task, objectives, tuple(constraints), arch,
                        tuple(metadata), modality_span, training=self.training_section(sec, target))
        return model, version

    def metadata_entry(self, key: str, k: ScalarNode, v: Node) -> A.MetaEntry | None:
        if key == "version":  # the spec's own version, as written (`1.10` is not the number 1.1)
            t = self.text(v, "version", '"1.2.0"')
            return A.Field(self.span(k, v), A.Ident(self.inner(k), "version"), A.Str(self.inner(v), t)) if t else None
        if key in _RECORDED:
            return self.recorded(k, v, "", _RECORDED[key])
        return self.meta_entry(k, v, "")

    def whole_task(self, at: dict[str, tuple[ScalarNode, Node]], sec: Sections, inputs: tuple[A.Ident, ...],
                   outputs: tuple[A.Ident, ...], objectives: tuple[A.Ident, ...], where: Span) -> A.Task | None:
        """The task: its `type`, or where none is given what the outputs, then the objectives, say, else
        `generation`. A spec without `task` whose objectives or `label` output name one is left to the checker,
        as an MSL model without `task` is."""
        outs, objs = [o.name for o in outputs], [o.name for o in objectives]
        default = next((OUTPUT_TASKS[o] for o in outs if o in OUTPUT_TASKS), None) \
            or next((OBJECTIVE_TASKS[o] for o in objs if o in OBJECTIVE_TASKS), None) or "generation"
        if "task" not in at:
            if "modality" not in at or any(o in TASK_FROM_OBJECTIVE for o in objs) or "label" in outs:
                return None
            return A.Task(where, A.Ident(where, default), ())
        k, v = at["task"]
        name, fields, meta = self.task(v, sec.task_recorded)
        if meta:
            sec.meta["task"] = [A.MetaGroup(self.span(k, v), A.Ident(self.inner(k), "task"), tuple(meta))]
        if name is None:
            if not isinstance(v, MappingNode):
                return None
            name = A.Ident(self.inner(k), default)
        t = name.name
        t = ("multimodal_retrieval" if len(inputs) > 1 else "embedding") if t == "retrieval" else TASK_ALIASES.get(t, t)
        return A.Task(self.span(k, v), A.Ident(name.span, t), tuple(fields))

    def family_target(self, arch: A.Architecture, task: A.Task | None, inputs: tuple[A.Ident, ...],
                      outputs: tuple[A.Ident, ...], objectives: tuple[A.Ident, ...]
                      ) -> tuple[A.Architecture, A.Task | None, str | None]:
        """The stdlib family the architecture builds (as the checker will pick it), and a warning where that is a
        neighbour of what the family names (a CNN on video). `mlp` with continuous actions is the Gaussian agent.
        A task key that the family takes under another name (CLIP's `embed_dim`) moves to the architecture; one
        that sets nothing of the family is warned (W003)."""
        fam = arch.family.dotted
        fields = {f.name.name: f.value for f in task.fields} if task is not None else {}
        space = fields.get("action_space")
        continuous = "action_dim" in fields or (isinstance(space, A.Name) and space.dotted == "continuous")
        if fam == "mlp" and continuous and task is not None and task.name.name in _RL_TASKS and not arch.open:
            arch = A.Architecture(arch.span, A.Name(arch.family.span, ("gaussian_agent",)), arch.fields)
            fam = "gaussian_agent"
        selectors = [o.name for o in objectives] + ([task.name.name] if task else []) + [o.name for o in outputs]
        presets, families = _stdlib_index()
        target = presets[fam][1] if fam in presets else resolve_target(fam, [i.name for i in inputs], selectors)
        params = families.get(target or "", frozenset())
        if task is not None and target in families:
            moved = {f.name.name: f for f in task.fields if f.name.name not in params
                     and _PARAM_ALIASES.get(f.name.name, "") in params
                     and not any(a.name.name == _PARAM_ALIASES[f.name.name] for a in arch.fields)}
            task = A.Task(task.span, task.name, tuple(f for f in task.fields if f.name.name not in moved))
            arch = replace(arch, fields=arch.fields + tuple(
                A.Field(f.span, A.Ident(f.name.span, _PARAM_ALIASES[n]), f.value) for n, f in moved.items()))
            for f in task.fields:
                if f.name.name in params or f.name.name in DESCRIPTIVE_TASK_FIELDS:
                    continue
                key = self.file.text[f.name.span.start:f.name.span.end] if f.name.span else f.name.name
                takers = sorted(n for n, ps in families.items() if f.name.name in ps)[:6]
                self.bag.warning("W003", f"`task.{key}` sets no parameter of `{target}`; it is recorded, not built",
                                 f.name.span, hint="families that take it: " + ", ".join(takers) if takers
                                 else "no stdlib family takes it")
        note = fallback_note(fam, target) if target else None
        if note is not None:
            self.bag.warning("W003", f"`{fam}` for {', '.join(i.name for i in inputs)} input: {note}",
                             arch.family.span)
        return arch, task, target

    def version(self, node: Node) -> str | None:
        v = self.text(node, "metagen_version", '"1.0"')
        if v is not None and v not in SUPPORTED_VERSIONS:
            self.bag.error("E008", f"unsupported metagen_version `{v}`", self.inner(node),
                           hint='this compiler reads `metagen_version: "1.0"`')
        return v

    def model_name(self, node: Node, sec: Sections) -> A.Ident | None:
        """`name` is a display name, any text: the model's identifier (output folder, Python class) is derived
        from it (yaml_schema.identifier), and the text is kept as `display_name` in the metadata for the paper,
        the model card and the docstrings. Two display names of one file that give one identifier: an error."""
        t = self.text(node, "name", '"my_model"')
        if t is None:
            return None
        ident = identifier(t)
        first = self.names.get(ident)
        if first is not None and first[0] != t:
            self.bag.error("E104", f"the display names `{first[0]}` and `{t}` both give the model identifier "
                           f"`{ident}`", self.inner(node), notes=[Note("the first is here", first[1])],
                           hint="make the names differ in a letter or digit, not only in case or punctuation")
            n = 2
            while f"{ident}_{n}" in self.names:
                n += 1
            ident = f"{ident}_{n}"
        self.names.setdefault(ident, (t, self.inner(node)))
        if ident != t:
            sec.meta["name"] = [A.Field(self.span(node), A.Ident(self.inner(node), "display_name"),
                                        A.Str(self.inner(node), t))]
        return A.Ident(self.inner(node), ident)


class _TooLarge(Exception):
    """The YAML nests too deep or expands (through aliases) to too many nodes: a limit of the language."""

    def __init__(self, message: str, mark: Mark | None) -> None:
        super().__init__(message)
        self.message, self.mark = message, mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, composing nodes only (never objects), that stops at the limits of the
    language while it composes: nesting deeper than MAX_NESTING (counted through aliases, so an alias of
    a deep anchor inside another deep one is as deep as the two together), and a tree that would expand
    to more than MAX_YAML_NODES nodes once every alias is replaced by its anchor ("billion laughs").
    Each node's height and expanded size are kept when it is composed, so the checks cost O(1) per node
    and an alias costs O(1) however large its anchor is. PyYAML's composer recurses once per level;
    the depth bound keeps it far from Python's recursion limit."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._height: dict[int, int] = {}  # id(node) -> levels below and including it, aliases expanded
        self._size: dict[int, int] = {}  # id(node) -> nodes in it, aliases expanded

    def compose_node(self, parent: Node | None, index: object) -> Node:
        if self.check_event(AliasEvent):
            mark = self.peek_event().start_mark
            node: Node = super().compose_node(parent, index)
            if id(node) not in self._height:  # its anchor is still being composed: the alias is inside it
                raise _TooLarge("a YAML alias refers to a collection that contains it (a recursive alias)", mark)
            if self._depth + self._height[id(node)] > MAX_NESTING:
                raise _TooLarge(f"YAML nests more than {MAX_NESTING} levels deep once this alias is expanded, "
                                "the most the language allows", mark)
            return node
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise _TooLarge(f"YAML nests more than {MAX_NESTING} levels deep, the most the language allows",
                            self.peek_event().start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        size = 1 + sum(self._size[id(c)] for c in children)
        if size > MAX_YAML_NODES:
            raise _TooLarge(f"the YAML has {short_int(size)} nodes (an alias counts as a copy of its anchor), "
                            f"more than the {MAX_YAML_NODES:,} the language allows", node.start_mark)
        self._size[id(node)] = size
        self._height[id(node)] = 1 + max((self._height[id(c)] for c in children), default=0)
        return node


def _yaml_error(e: yaml.YAMLError, file: SourceFile, bag: DiagnosticBag) -> None:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    at = int(mark.index) if mark is not None else 0
    if isinstance(e, ReaderError):  # a character YAML does not allow: no mark, a position
        at = max(0, min(len(file.text), int(e.position)))
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        problem = f"unacceptable character {char}: {e.reason}"
    span = Span.of(file, at, min(len(file.text), at + 1))
    notes: list[Note] = []
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and cmark is not None:
        notes.append(Note(str(context), Span.of(file, int(cmark.index), min(len(file.text), int(cmark.index) + 1))))
    hint = "indent with spaces, not tabs" if "\t" in problem or "'\\t'" in problem else None
    bag.error("E005", f"malformed YAML: {problem}", span, notes=notes, hint=hint)


def parse_yaml(source: SourceFile, bag: DiagnosticBag) -> A.Module | None:
    """Lower a YAML spec (one model per YAML document) to an AST module that imports the stdlib
    modules it needs. Returns None if the text is not well-formed YAML; other problems go to
    `bag` and the module is still returned."""
    if source_too_large(source, bag):
        return None
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(source.text)  # its reader checks the characters of the whole text first
        docs = []
        while loader.check_node():
            docs.append(loader.get_node())
    except yaml.YAMLError as e:
        _yaml_error(e, source, bag)
        return None
    except _TooLarge as e:
        at = int(e.mark.index) if e.mark is not None else 0
        bag.error(LIMIT_CODE, e.message, Span.of(source, at, min(len(source.text), at + 1)), hint=LIMITS_HINT)
        return None
    finally:
        if loader is not None:
            loader.dispose()
    low = _Lowering(source, bag)
    models: list[A.Model] = []
    version: str | None = None
    for doc in docs:
        model, v = low.model(doc)
        if model is not None:
            models.append(model)
        version = version or v
    imports = tuple(A.Import(span, A.Name(span, tuple(mod.split("."))), None) for mod, span in low.imports.items())
    return A.Module(Span.of(source, 0, len(source.text)), source.path, version, imports, (), (), (), (), tuple(models))
