"""The seeds' YAML spec format -> the same AST the MSL parser builds.

The text is composed with PyYAML's SafeLoader into a tree of nodes (never constructed into Python
objects), and every node is lowered to an AST node whose span points at the YAML text. One YAML
document is one model. This front end reports only what the YAML form can get wrong: malformed
YAML (E005), a value of the wrong shape (E006), a key the format does not define (E007, with
"did you mean"), an unsupported version (E008). What the values mean (enums, units of a
constraint, family parameters) is left to the checker, which sees the same AST as for MSL.

The format: `metagen_version`, `name`, `modality {inputs, outputs}`, `task {type, ...}`,
`constraints {...}`, `training {objective, ...}`, `architecture {family, variant, dims...}`; the
other keys of METADATA_KEYS (and training.data/compute/alignment, architecture.components) are
kept as model metadata. No key is dropped: each one becomes AST or a diagnostic.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from importlib import resources

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from . import ast as A
from .catalog import CONSTRAINTS, FAMILY_GROUPS, TASK_FIELDS
from .diagnostics import DiagnosticBag, Note, did_you_mean
from .parser import SUPPORTED_VERSIONS, parse_msl
from .span import SourceFile, Span
from .values import UNIT_SCALE

__all__ = ["CONSTRAINT_KEYS", "METADATA_KEYS", "MODEL_KEYS", "parse_yaml", "stdlib_presets"]

# Top-level keys that build the model, and those kept as metadata (the MetaGen spec schema's).
MODEL_KEYS = ("metagen_version", "name", "modality", "task", "constraints", "training", "architecture")
METADATA_KEYS = ("description", "outputs", "evaluation", "reproducibility")
_MODALITY_KEYS = ("inputs", "outputs")
_TRAINING_KEYS = ("objective", "data", "compute", "alignment")  # all but `objective` are metadata
_ARCH_KEYS = ("family", "variant", "components")  # `components` is metadata; other keys are dims

# constraints: YAML key -> (constraint kind of catalog.CONSTRAINTS, comparison)
CONSTRAINT_KEYS: dict[str, tuple[str, str]] = {
    "context_window": ("context", "="),
    "latency": ("latency", "<="),  # a latency class such as `real-time` gives `latency = real_time`
    "device": ("device", "="),
    "memory": ("memory", "<="),
    "memory_budget": ("memory", "<="),
    "training_memory": ("training_memory", "<="),
    "throughput": ("throughput", ">="),
    "flops": ("flops", "<="),
    "image_size": ("image_size", "="),
    "patch_size": ("patch_size", "="),
    "channels": ("channels", "="),
    "sample_rate": ("sample_rate", "="),
    "frames": ("frames", "="),
    "batch_size": ("batch_size", "="),
}
_BUDGET_OPS = {"max": "<=", "min": ">="}
_EXAMPLES = {"count": "86M", "bytes": "12GB", "time": "20ms", "rate": "30fps", "pixels": "224",
             "frequency": "16kHz", "int": "16", "device": "consumer_gpu"}

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_CORE_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp", "merge")}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]+)")
_MAX_NODES = 100_000  # aliases can make a small text a huge tree


@functools.lru_cache(maxsize=1)
def stdlib_presets() -> dict[str, str]:
    """The stdlib's presets: name -> the family it configures (`gpt2` -> `transformer.decoder`)."""
    text = resources.files("metagen_stdlib").joinpath("presets.msl").read_text(encoding="utf-8")
    module = parse_msl(SourceFile("<stdlib>/presets.msl", text), DiagnosticBag())
    return {p.name.name: p.family.dotted for p in module.presets} if module else {}


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing"
    if node.tag == _STR:
        return f"the string `{node.value}`"
    if node.tag in (_INT, _FLOAT):
        return f"the number `{node.value}`"
    return f"`{node.value}`"


def _sanitize(name: str) -> str:
    out = re.sub(r"[^A-Za-z0-9_]+", "_", name.strip()).strip("_") or "model"
    return f"m_{out}" if out[0].isdigit() else out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _is_ident(text: str) -> bool:
    return _IDENT.fullmatch(text) is not None


class _Lowering:
    """Lowers the composed YAML nodes of one file; diagnostics go to `bag`."""

    def __init__(self, file: SourceFile, bag: DiagnosticBag) -> None:
        self.file = file
        self.bag = bag
        self.imports: dict[str, Span] = {}
        self.nodes_left = _MAX_NODES
        self._scalars = SafeConstructor()

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
            self.shape(node, f"{what} must be a mapping of keys to values, not {_describe(node)}", hint)
            return []
        out: list[tuple[str, ScalarNode, Node]] = []
        seen: dict[str, ScalarNode] = {}
        for k, v in node.value:
            merge = k.tag == _TAG + "merge"
            if not isinstance(k, ScalarNode) or k.tag == _NULL or merge or not k.value.strip():
                self.shape(k, f"a key {self._in(where)} must be a name, not {_describe(k)}",
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
        if isinstance(node, ScalarNode) and node.tag != _NULL and node.value.strip():
            return str(node.value).strip()
        self.shape(node, f"`{where}` takes a string such as {example}, not {_describe(node)}")
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
            self.shape(node, f"`{where}` must be a list such as [{example}], not {_describe(node)}", hint)
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
        if tag == _NULL:
            self.shape(node, f"`{where}` has no value")
            return None
        if tag == _BOOL:
            return A.Bool(span, bool(self._scalars.construct_yaml_bool(node)))
        if tag == _INT:
            return A.Num(span, int(self._scalars.construct_yaml_int(node)))
        if tag == _FLOAT:
            return A.Num(span, float(self._scalars.construct_yaml_float(node)))
        text = str(node.value)
        if words:
            t = text.strip()
            if t == "?":
                return A.Unknown(span)
            if all(_is_ident(p) for p in t.split(".")):
                return A.Name(span, tuple(t.split(".")))
            if _NUMBER.fullmatch(t):
                return A.Num(span, int(t) if t.isdigit() else float(t))
            m = _QUANTITY.fullmatch(t)
            if m and m.group(2) in UNIT_SCALE:
                return A.Quantity(span, float(m.group(1)), m.group(2), m.group(1) + m.group(2))
        return A.Str(span, text)

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
        if not isinstance(node, ScalarNode) or node.tag not in (_STR, _INT, _FLOAT):
            self.shape(node, f"`{where}` takes a quantity such as {example}, not {_describe(node)}")
            return None
        if node.tag != _STR:
            return self.scalar(node, where, words=False)
        text, span = str(node.value).strip(), self.inner(node)
        if _NUMBER.fullmatch(text):
            return A.Num(span, int(text) if text.isdigit() else float(text))
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
        if not _is_ident(w):
            self.bag.error("E201", f"`{where}` takes a name such as {example}, not `{t}`", self.inner(node))
            return None
        return A.Name(self.inner(node), (w,))

    # ------------------------------------------------------------ metadata
    def meta_entry(self, key: Node, node: Node, where: str, name: str | None = None) -> A.MetaEntry | None:
        if not self.tick(node, where):
            return None
        label = name if name is not None else str(key.value)
        if not _is_ident(label):
            self.shape(key, f"metadata key `{label}` in `{where}` is not a name", hint=f"use `{_sanitize(label)}`")
            return None
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
    def modality(self, node: Node) -> tuple[tuple[A.Ident, ...], tuple[A.Ident, ...]]:
        lists: dict[str, tuple[A.Ident, ...]] = {}
        for key, k, v in self.mapping(node, "modality", hint="write `modality: {inputs: [text], outputs: [text]}`"):
            if key in _MODALITY_KEYS:
                lists[key] = self.name_list(v, f"modality.{key}", "text, image")
            else:
                self.unknown(k, "modality", _MODALITY_KEYS)
        if isinstance(node, MappingNode):
            for key in _MODALITY_KEYS:
                if key not in lists:
                    self.bag.error("E208", f"`modality` names no `{key}`", self.span(node), hint=f"add `{key}: [text]`")
        return lists.get("inputs", ()), lists.get("outputs", ())

    def task(self, key: ScalarNode, node: Node) -> A.Task | None:
        name: A.Ident | None = None
        fields: list[A.Field] = []
        known = ("type", *TASK_FIELDS)
        for k_text, k, v in self.mapping(node, "task", hint="write `task: {type: classification}`"):
            if k_text == "type":
                name = self.ident(v, "task.type", "classification")
            elif k_text in TASK_FIELDS:
                val = self.value(v, f"task.{k_text}")
                if val is not None:
                    fields.append(A.Field(self.span(k, v), A.Ident(self.inner(k), k_text), val))
            else:
                self.unknown(k, "task", known)
        if name is None:
            if isinstance(node, MappingNode) and not any(k.value == "type" for k, _ in node.value):
                self.bag.error("E208", "`task` has no `type`", self.inner(key),
                               hint="add `type: classification` (or generation, regression, ...)")
            return None
        return A.Task(self.span(key, node), name, tuple(fields))

    def constraints(self, node: Node) -> list[A.Constraint]:
        out: list[A.Constraint] = []
        for key, k, v in self.mapping(node, "constraints"):
            where = f"constraints.{key}"
            if key == "parameter_budget":
                pairs = self.mapping(v, where, hint='write `parameter_budget: {max: "86M"}`')
                for bkey, bk, bv in pairs:
                    if bkey not in _BUDGET_OPS:
                        self.unknown(bk, where, _BUDGET_OPS)
                        continue
                    amount = self.quantity(bv, f"{where}.{bkey}", "params")
                    if amount is not None:
                        out.append(A.Constraint(self.span(bk, bv), A.Ident(self.inner(bk), "params"),
                                                _BUDGET_OPS[bkey], amount, None))
                continue
            if key not in CONSTRAINT_KEYS:
                self.unknown(k, "constraints", ["parameter_budget", *CONSTRAINT_KEYS])
                continue
            kind, op = CONSTRAINT_KEYS[key]
            value: A.Expr | None
            if kind == "device":
                value = self.word(v, where, "consumer_gpu")
            elif kind == "latency" and isinstance(v, ScalarNode) and v.tag == _STR and not v.value[:1].isdigit():
                value, op = self.word(v, where, "real-time or 20ms"), "="
            else:
                value = self.quantity(v, where, kind)
            if value is not None:
                out.append(A.Constraint(self.span(k, v), A.Ident(self.inner(k), kind), op, value, None))
        return out

    def training(self, key: ScalarNode, node: Node) -> tuple[tuple[A.Ident, ...], A.MetaGroup | None]:
        objectives: tuple[A.Ident, ...] = ()
        meta: list[A.MetaEntry] = []
        for k_text, k, v in self.mapping(node, "training", hint="write `training: {objective: [autoregressive]}`"):
            if k_text == "objective":
                objectives = self.name_list(v, "training.objective", "autoregressive", single=True)
            elif k_text in _TRAINING_KEYS:
                entry = self.meta_entry(k, v, "training")
                if entry is not None:
                    meta.append(entry)
            else:
                self.unknown(k, "training", _TRAINING_KEYS)
        group = A.MetaGroup(self.span(key, node), A.Ident(self.inner(key), "training"), tuple(meta)) if meta else None
        return objectives, group

    def architecture(self, key: ScalarNode, node: Node) -> tuple[A.Architecture | None, list[A.MetaEntry]]:
        family: tuple[Node, str] | None = None
        variant: tuple[ScalarNode, Node, str] | None = None
        fields: list[A.Field] = []
        meta: list[A.MetaEntry] = []
        pairs = self.mapping(node, "architecture", hint="write `architecture: {family: transformer}`")
        for k_text, k, v in pairs:
            if k_text == "family":
                t = self.text(v, "architecture.family", "transformer")
                if t is not None and not all(_is_ident(p) for p in t.split(".")):
                    self.shape(v, f"`architecture.family` must be a name, not `{t}`", hint=f"use `{_sanitize(t)}`")
                elif t is not None:
                    family = (v, t)
            elif k_text == "variant":
                t = self.text(v, "architecture.variant", "vit")
                if t is not None:
                    variant = (k, v, t)
            elif k_text in _ARCH_KEYS:
                entry = self.meta_entry(k, v, "architecture")
                if entry is not None:
                    meta.append(entry)
            elif did_you_mean(k_text, _ARCH_KEYS) is not None:  # `famly`, `varient`: not a dim
                self.unknown(k, "architecture", _ARCH_KEYS)
            elif not _is_ident(k_text):
                self.shape(k, f"`architecture.{k_text}` is not a parameter name", hint=f"use `{_sanitize(k_text)}`")
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
        if fam in stdlib_presets():
            self.imports.setdefault("std.presets", self.span(key, node))
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
        presets = stdlib_presets()
        if variant in presets:
            targets = {presets[variant]}
            self.imports.setdefault("std.presets", self.span(node))
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
                self.shape(node, f"the YAML tag `{node.tag.removeprefix(_TAG)}` is not part of the spec format",
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
        version: str | None = None
        name: A.Ident | None = None
        inputs: tuple[A.Ident, ...] = ()
        outputs: tuple[A.Ident, ...] = ()
        modality_span: Span | None = None
        task: A.Task | None = None
        objectives: tuple[A.Ident, ...] = ()
        constraints: list[A.Constraint] = []
        arch: A.Architecture | None = None
        metadata: list[A.MetaEntry] = []
        for key, k, v in pairs:
            if key == "metagen_version":
                version = self.version(v)
            elif key == "name":
                name = self.model_name(v)
            elif key == "modality":
                inputs, outputs = self.modality(v)
                modality_span = self.span(k, v)
            elif key == "task":
                task = self.task(k, v)
            elif key == "constraints":
                constraints = self.constraints(v)
            elif key == "training":
                objectives, group = self.training(k, v)
                metadata += [group] if group else []
            elif key == "architecture":
                arch, extra = self.architecture(k, v)
                metadata += extra
                self.imports.setdefault("std.transformer", self.span(k, v))
                self.imports.setdefault("std.vision", self.span(k, v))
                for _, target in FAMILY_GROUPS.get(arch.family.dotted, ()) if arch is not None else ():
                    self.imports.setdefault(f"std.{target.split('.')[0]}", self.span(k, v))  # std.ssm, std.moe
            elif key in METADATA_KEYS:
                entry = self.meta_entry(k, v, "")
                metadata += [entry] if entry else []
            else:
                self.unknown(k, "", MODEL_KEYS + METADATA_KEYS)
        if name is None:
            if not any(p[0] == "name" for p in pairs):
                self.bag.error("E208", "the spec has no `name`", Span.of(self.file, doc.start_mark.index,
                               doc.start_mark.index), hint='add `name: "my_model"`')
            name = A.Ident(self.span(doc), "model")
        model = A.Model(self.span(doc), name, inputs, outputs, task, objectives, tuple(constraints), arch,
                        tuple(metadata), modality_span)
        return model, version

    def version(self, node: Node) -> str | None:
        v = self.text(node, "metagen_version", '"1.0"')
        if v is not None and v not in SUPPORTED_VERSIONS:
            self.bag.error("E008", f"unsupported metagen_version `{v}`", self.inner(node),
                           hint='this compiler reads `metagen_version: "1.0"`')
        return v

    def model_name(self, node: Node) -> A.Ident | None:
        t = self.text(node, "name", '"my_model"')
        if t is None:
            return None
        if not _is_ident(t):
            fixed = _sanitize(t)
            self.shape(node, f"model name `{t}` is not a valid name: use letters, digits and `_`, "
                       "not starting with a digit", hint=f'use `name: "{fixed}"`')
            t = fixed
        return A.Ident(self.inner(node), t)


def _yaml_error(e: yaml.YAMLError, file: SourceFile, bag: DiagnosticBag) -> None:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    at = int(mark.index) if mark is not None else 0
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
    try:
        docs = list(yaml.compose_all(source.text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as e:
        _yaml_error(e, source, bag)
        return None
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
