"""The earlier YAML tool's schema: tables of which keys each section takes and what the compiler does with
each, the few small translations (display names to identifiers, rates of any unit noun, family groups to
stdlib families) as pure functions, and SchemaLowering, the lowering of the schema's sections, a mixin of
yaml_frontend._Lowering (which holds the YAML node helpers).
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from metagen_compiler.diagnostics import DiagnosticBag, did_you_mean
from metagen_compiler.semantics.catalog import (
    CONSTRAINTS,
    FAMILY_GROUPS,
    LATENCY_CLASSES,
    TASK_FIELDS,
    TASK_FROM_OBJECTIVE,
    group_fits,
)
from metagen_compiler.semantics.values import UNIT_SCALE
from metagen_compiler.span import Span
from metagen_compiler.syntax import ast as A

__all__ = [
    "ALIGNMENT_KEYS",
    "ARCH_KEYS",
    "BOOL",
    "COMPONENT_TYPES",
    "COMPUTE_KEYS",
    "CONFIG_KEYS",
    "CONFIG_NUMBERS",
    "CONSTRAINT_KEYS",
    "DATA_KEYS",
    "DESCRIPTIVE_TASK_FIELDS",
    "EVALUATION_KEYS",
    "FAMILY_FALLBACKS",
    "FLOAT",
    "GENERATION_TASKS",
    "INPUT_ALIASES",
    "INT",
    "MAX_IDENT",
    "METADATA_KEYS",
    "MODEL_KEYS",
    "NOISE_SCHEDULES",
    "NULL",
    "OBJECTIVE_TASKS",
    "OUTPUTS_KEYS",
    "OUTPUT_ALIASES",
    "OUTPUT_TASKS",
    "SECTION_KEYS",
    "STR",
    "TAG",
    "TASK_ALIASES",
    "TASK_KEYS",
    "TRAINING_KEYS",
    "UNBOUNDED_CONTEXT",
    "UNBOUNDED_LATENCIES",
    "UNBOUNDED_WORDS",
    "Rate",
    "SchemaLowering",
    "Sections",
    "component_target",
    "describe",
    "fallback_note",
    "identifier",
    "is_ident",
    "meta_key",
    "parse_rate",
    "resolve_target",
    "schema_keys",
]

MAX_IDENT = 64  # the longest identifier derived from a display name (a folder and a Python class name)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# the YAML core schema's tags
TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (TAG + t for t in ("str", "int", "float", "bool", "null"))


def is_ident(text: str) -> bool:
    return IDENT.fullmatch(text) is not None


def identifier(display: str) -> str:
    """The identifier the compiler needs (output folder, Python class) for a display name. A name that is
    already an identifier (and no Python keyword) is kept as written; any other is lower-cased, each run of
    characters other than ASCII letters and digits becomes one `_`, the ends are stripped, `m_` is put before
    a leading digit, and the result is cut at MAX_IDENT characters. Empty: `model`."""
    if is_ident(display) and not keyword.iskeyword(display) and len(display) <= MAX_IDENT:
        return display
    out = re.sub(r"[^a-z0-9]+", "_", display.lower()).strip("_") or "model"
    if out[0].isdigit() or keyword.iskeyword(out):
        out = "m_" + out
    return out[:MAX_IDENT].rstrip("_")


# ------------------------------------------------------------------ modality
INPUT_ALIASES = {"3d": ("point_cloud",), "multimodal": ("image", "text")}  # an input modality -> the inputs built
OUTPUT_ALIASES = {"classification": "label", "labels": "label", "class": "label", "boxes": "bounding_boxes",
                  "mask": "segmentation_mask", "masks": "segmentation_mask", "actions": "action"}
# the task an output decides when `task.type` is absent (before the objectives' and `generation`)
OUTPUT_TASKS = {"label": "classification", "bounding_boxes": "object_detection",
                "segmentation_mask": "semantic_segmentation", "embedding": "embedding", "regression": "regression",
                "3d": "shape_generation"}
# the task the objectives decide next: the checker's (which infers a task where a spec names none) but
# `generation`, which is the default anyway, and two more
OBJECTIVE_TASKS = {**{o: t for o, t in TASK_FROM_OBJECTIVE.items() if t != "generation"},
                   "segmentation": "semantic_segmentation", "ranking": "ranking"}

# ------------------------------------------------------------------ task
TASK_ALIASES = {"retrieval": "embedding", "forecasting": "time_series_forecast", "detection": "object_detection"}
# task key -> the task field it becomes (a family parameter of that name takes its value); None: metadata only
TASK_KEYS: dict[str, str | None] = {
    "domain": "domain", "algorithm": "algorithm", "num_classes": "num_classes", "num_labels": "num_labels",
    "num_outputs": "outputs", "horizon": "horizon", "lookback": "lookback", "action_space": "action_space",
    "num_actions": "num_actions", "action_dim": "action_dim", "num_anchors": "num_queries",
    "num_queries": "num_queries", "mask_resolution": "mask_size", "node_features": "features", "edge_features": None,
    "embedding_dim": "embedding_dim", "vocab": "vocab", "num_items": "num_items", "num_users": "num_users",
    "output_dim": "output_dim",
}
assert all(field is None or field in TASK_FIELDS for field in TASK_KEYS.values())
# task fields that describe the task (text, an enum word) rather than size a family: never a family parameter
DESCRIPTIVE_TASK_FIELDS = tuple(f for f, kind in TASK_FIELDS.items() if kind in ("str", "enum"))
# latency classes that bound no forward pass (`batch`, `offline`): without a device they are only recorded
UNBOUNDED_LATENCIES = tuple(c for c, bound in LATENCY_CLASSES.items() if math.isinf(bound))

# ------------------------------------------------------------------ constraints
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
assert all(kind in CONSTRAINTS for kind, _ in CONSTRAINT_KEYS.values())
UNBOUNDED_WORDS = {"∞", "inf", "infinite", "infinity", "unbounded", "unlimited"}
# families whose context is not bounded by a position table (a recurrence or a state-space scan)
UNBOUNDED_CONTEXT = ("ssm.mamba", "ssm.s4d", "rnn.rnn")

# the time a rate is per: its words, in seconds
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*(?P<k>[kKM](?=\s|[a-zA-Z]*\s*/))?"
                   r"(?P<sec>\s?s(?:ec(?:ond)?s?)?\s+(?=[A-Za-z]))?\s*(?P<noun>[A-Za-z][A-Za-z_\- ]*?)?\s*"
                   r"(?:/|\bper\s+)\s*(?P<per>[A-Za-z]+)")
_PER_UNIT = re.compile(r"(?P<n>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z]+)")  # `30fps`: a rate unit of UNIT_SCALE


@dataclass(frozen=True)
class Rate:
    per_second: float  # items (or seconds of media) per second
    noun: str  # what is counted: `tok`, `img`, `clip`, `frame`...
    media_seconds: bool  # True: seconds of media per second (`30s clip/min`), not a count of items


def parse_rate(text: str) -> Rate | None:
    """A throughput written as a rate of any unit noun: "120 tok/s", "2 img/s", "1 sample/s", "30fps",
    "1.5k tokens per second", "30s clip/min". None if the text is not such a rate."""
    t = text.strip()
    m = _PER_UNIT.fullmatch(t)
    if m is not None and m.group("unit") in UNIT_SCALE:
        scale, dim = UNIT_SCALE[m.group("unit")]
        return Rate(float(m.group("n")) * scale, "frame", False) if dim == "rate" else None
    m = _RATE.fullmatch(t)
    per = m.group("per").lower() if m is not None else ""
    seconds = _PER.get(per) or _PER.get(per.rstrip("s"))
    if m is None or seconds is None:
        return None
    n = float(m.group("n")) * (UNIT_SCALE[m.group("k")][0] if m.group("k") else 1.0)
    return Rate(n / seconds, (m.group("noun") or "item").strip(), m.group("sec") is not None)


# ------------------------------------------------------------------ training
TRAINING_KEYS = ("objective", "data", "compute", "alignment", "config")
DATA_KEYS = ("sources", "size", "governance")
COMPUTE_KEYS = ("hardware", "duration")
ALIGNMENT_KEYS = ("method", "policy")
# config key -> what its value must be: `text`, `list` (of names), or a kind of number of CONFIG_NUMBERS
CONFIG_KEYS: dict[str, str] = {
    "optimizer": "text", "learning_rate": "rate", "weight_decay": "nonneg", "batch_size": "int", "epochs": "int",
    "warmup_epochs": "count", "warmup_steps": "count", "data_augmentation": "list", "ema_decay": "prob",
    "noise_schedule": "text", "timesteps": "int", "unconditional_probability": "prob",
}
# a kind of number -> (whether a number is one, what it must be)
CONFIG_NUMBERS: dict[str, tuple[Callable[[float], bool], str]] = {
    "int": (lambda n: n > 0 and n == int(n), "a positive whole number"),
    "count": (lambda n: n >= 0 and n == int(n), "a whole number, 0 or more"),
    "rate": (lambda n: n > 0, "a positive number"),
    "nonneg": (lambda n: n >= 0, "a number, 0 or more"),
    "prob": (lambda n: 0 <= n <= 1, "a number from 0 to 1"),
}
assert set(CONFIG_KEYS.values()) <= {"text", "list", *CONFIG_NUMBERS}
# training.config key -> the `training` section's key (train.py's flag), training_section.py; None: recorded as
# metadata only, with W003 (train.py counts warmup in steps: an epoch's steps are known only once the data is)
YAML_TRAINING_KEYS: dict[str, str | None] = {
    "optimizer": "optimizer", "learning_rate": "lr", "weight_decay": "weight_decay", "batch_size": "batch_size",
    "epochs": "epochs", "warmup_epochs": None, "warmup_steps": "warmup", "data_augmentation": "augment",
    "ema_decay": "ema_decay", "noise_schedule": "noise_schedule", "timesteps": "timesteps",
    "unconditional_probability": "cfg_dropout",
}
assert set(YAML_TRAINING_KEYS) == set(CONFIG_KEYS)
NOISE_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "cosine",
                   "squaredcos_cap_v2": "cosine"}  # the seeds' names -> std.diffusion's beta_schedule

EVALUATION_KEYS = ("benchmarks", "metrics", "baselines")
OUTPUTS_KEYS = ("artifacts",)
ARCH_KEYS = ("family", "variant", "components")  # `components` is metadata; any other key is a family parameter

# ------------------------------------------------------------------ every key
# Top-level keys that build the model, and those kept as metadata (the MetaGen spec schema's).
MODEL_KEYS = ("metagen_version", "name", "modality", "task", "constraints", "training", "architecture")
METADATA_KEYS = ("description", "version", "outputs", "evaluation", "reproducibility")
_BUDGET_OPS = {"max": "<=", "min": ">="}
# a section (its dotted path) -> the keys the lowering knows in it: what docs/yaml.md lists and the corpus covers
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "modality": ("inputs", "outputs"),
    "task": ("type", *TASK_KEYS),
    "constraints": ("parameter_budget", *CONSTRAINT_KEYS, "latent_size"),
    "constraints.parameter_budget": tuple(_BUDGET_OPS),
    "training": TRAINING_KEYS,
    "training.data": DATA_KEYS,
    "training.compute": COMPUTE_KEYS,
    "training.alignment": ALIGNMENT_KEYS,
    "training.config": tuple(CONFIG_KEYS),
    "architecture": ARCH_KEYS,
    "evaluation": EVALUATION_KEYS,
    "outputs": OUTPUTS_KEYS,
}


def schema_keys() -> list[str]:
    """Every key path of the format (`constraints.parameter_budget.max`), from the tables above."""
    return [*MODEL_KEYS, *METADATA_KEYS, *(f"{sec}.{k}" for sec, keys in SECTION_KEYS.items() for k in keys)]

# ------------------------------------------------------------------ families
# (group, stdlib family) pairs that build a neighbour of what the group names, not the thing itself: the
# front end says so with a warning (W003) and the note
FAMILY_FALLBACKS: dict[tuple[str, str], str] = {
    ("hybrid", "vlm.vlm"): "no convolutional front end for image and text to text is built yet; the vision-language "
                           "model (std.vlm.vlm, a ViT feeding a decoder) is used",
    ("hybrid", "multimodal.clip"): "no convolutional front end for contrastive image-text training is built yet; CLIP "
                                   "(std.multimodal.clip, two transformer towers) is used",
}


def fallback_note(group: str, target: str) -> str | None:
    return FAMILY_FALLBACKS.get((group, target))


def resolve_target(group: str, inputs: list[str], selectors: list[str]) -> str | None:
    """The stdlib family (`ssm.mamba`) a family group picks for these inputs and selectors (objectives, task,
    outputs), as the checker picks it (passes/check.py `_fits`), or the name itself when it is a dotted stdlib
    family; None when neither."""
    for key, target in FAMILY_GROUPS.get(group, ()):
        if group_fits(key, inputs, selectors):
            return target
    return group if "." in group else None


# ------------------------------------------------------------------ components
# a component's `type` -> what the compiler builds for it (a family group or a part of the stdlib's families)
COMPONENT_TYPES: dict[str, str] = {
    "transformer": "transformer", "transformer_encoder": "transformer.encoder",
    "transformer_decoder": "transformer.decoder", "encoder": "an encoder slot", "decoder": "a decoder",
    "text_encoder": "a text encoder", "vision_encoder": "a vision encoder", "image_encoder": "a vision encoder",
    "audio_encoder": "an audio encoder", "video_encoder": "a video encoder", "tokenizer": "the input embedding",
    "embedding": "the input embedding", "patch_embedding": "vision.vit's patch embedding", "attention": "attention",
    "self_attention": "attention", "cross_attention": "cross-attention", "mlp": "mlp", "ffn": "mlp",
    "head": "the task head", "classifier": "the task head", "classification_head": "the task head",
    "detection_head": "the task head", "projection": "a linear projection", "projector": "a linear projection",
    "backbone": "the backbone", "neck": "the backbone", "cnn": "cnn", "conv": "a convolution",
    "convolution": "a convolution", "vae": "vae", "autoencoder": "autoencoder", "unet": "unet", "rnn": "rnn",
    "lstm": "rnn", "gru": "rnn", "moe": "moe", "router": "moe's router", "pooling": "a pooling layer",
    "gnn": "gnn", "message_passing": "gnn", "diffusion": "diffusion", "denoiser": "diffusion",
}


def component_target(kind: str) -> str | None:
    """What a component type (`Text Encoder`, `text-encoder`) maps to, or None when the compiler knows no such part."""
    k = identifier(kind.lower())
    if k in COMPONENT_TYPES:
        return COMPONENT_TYPES[k]
    if k in FAMILY_GROUPS:
        return k
    return None


# ------------------------------------------------------------------ the sections
_LATENT_FAMILIES = ("diffusion.unet", "videodiffusion.latte")  # their `image_size` is the latent's side
# the task a family trains for where the spec says `generation` (the earlier tool's default)
GENERATION_TASKS = {"diffusion.unet": "denoising", "videodiffusion.latte": "denoising",
                    "threed.text_to_points": "shape_generation", "seq2seq.whisper": "speech_recognition",
                    "rag.fid_rag": "retrieval_generation"}
_GRAPH_MODULES = ("graph.", "graphtransformer.")
# the family that builds a graph family's model reading edge features (`task.edge_features` above 0)
_EDGE_FAMILIES = {"graph.gat": "graph.gat_edge", "graph.gat_graph": "graph.gat_graph_edge",
                  "graph.gcn": "graph.gat_edge", "graph.gcn_graph": "graph.gat_graph_edge"}
_CODE_FAMILIES = ("autoencoder.autoencoder", "autoencoder.vae", "autoencoder.conv_autoencoder", "autoencoder.conv_vae")
_SIZE = re.compile(r"\s*([0-9]+)\s*[xX×]\s*([0-9]+)\s*")


def _number(node: Node) -> float | None:
    """A scalar's finite number (YAML 1.1 reads `3e-4` as a string: it is a number here too), or None."""
    if not isinstance(node, ScalarNode) or node.tag not in (INT, FLOAT, STR):
        return None
    try:
        n = float(str(node.value).replace("_", ""))
    except ValueError:
        return None
    return n if math.isfinite(n) else None


@dataclass
class Sections:
    """What the sections of one document gave, before the model is assembled."""

    meta: dict[str, list[A.MetaEntry]]  # top-level key -> its metadata entries, put in document order
    training_config: dict[str, tuple[ScalarNode, Node]]  # training.config key -> (key node, value node)
    # task keys kept as metadata (`edge_features`) -> (key node, value node), for task_notes
    task_recorded: dict[str, tuple[ScalarNode, Node]] = field(default_factory=dict)


class SchemaLowering:
    """The YAML schema's sections, lowered to AST. A mixin of yaml_frontend._Lowering, which provides the node
    helpers (mapping, text, value, quantity, word, meta_entry, span, inner, unknown, shape, bag)."""

    # provided by yaml_frontend._Lowering
    bag: DiagnosticBag
    imports: dict[str, Span]  # the stdlib modules the lowered module imports, with where each is asked for
    span: Callable[..., Span]
    inner: Callable[[Node], Span]
    mapping: Callable[..., list[tuple[str, ScalarNode, Node]]]
    unknown: Callable[[ScalarNode, str, Iterable[str]], None]
    shape: Callable[..., None]
    text: Callable[[Node, str, str], str | None]
    value: Callable[[Node, str], A.Expr | None]
    integer: Callable[[str, Span, Callable[[], int]], A.Num | None]
    quantity: Callable[[Node, str, str], A.Expr | None]
    word: Callable[[Node, str, str], A.Name | None]
    meta_entry: Callable[..., A.MetaEntry | None]
    name_list: Callable[..., tuple[A.Ident, ...]]

    # -------------------------------------------------------------- helpers
    def typo(self, key: ScalarNode, where: str, known: Iterable[str]) -> bool:
        """A key of a recorded section that is not one of `known`: an error (E007) only when it is close to one
        (a typo); any other key is recorded as written. True when it was a typo."""
        known = list(known)
        if did_you_mean(key.value, known) is None:
            return False
        self.unknown(key, where, known)
        return True

    def recorded(self, key: ScalarNode, node: Node, where: str, known: Iterable[str]) -> A.MetaEntry | None:
        """A metadata section with `known` keys: a typo of one is an error, everything else is recorded."""
        if not isinstance(node, MappingNode):
            return self.meta_entry(key, node, where)
        known = list(known)
        here = f"{where}.{key.value}" if where else str(key.value)
        entries: list[A.MetaEntry] = []
        for k_text, k, v in self.mapping(node, here):
            if k_text not in known and self.typo(k, here, known):
                continue
            e = self.meta_entry(k, v, here)
            entries += [e] if e is not None else []
        return A.MetaGroup(self.span(key, node), A.Ident(self.inner(key), meta_key(str(key.value))), tuple(entries))

    # -------------------------------------------------------------- modality
    def modality(self, node: Node) -> tuple[tuple[A.Ident, ...], tuple[A.Ident, ...]]:
        lists: dict[str, tuple[A.Ident, ...]] = {}
        for key, k, v in self.mapping(node, "modality", hint="write `modality: {inputs: [text], outputs: [text]}`"):
            if key in SECTION_KEYS["modality"]:
                lists[key] = self.name_list(v, f"modality.{key}", "text, image")
            else:
                self.unknown(k, "modality", SECTION_KEYS["modality"])
        if isinstance(node, MappingNode):
            for key in SECTION_KEYS["modality"]:
                if key not in lists:
                    self.bag.error("E208", f"`modality` names no `{key}`", self.span(node), hint=f"add `{key}: [text]`")
        inputs: list[A.Ident] = []
        for i in lists.get("inputs", ()):
            for name in INPUT_ALIASES.get(i.name, (i.name,)):
                if name not in [x.name for x in inputs]:
                    inputs.append(A.Ident(i.span, name))
        outputs = [A.Ident(o.span, OUTPUT_ALIASES.get(o.name, o.name)) for o in lists.get("outputs", ())]
        return tuple(inputs), tuple(outputs)

    # -------------------------------------------------------------- task
    def task(self, node: Node, recorded: dict[str, tuple[ScalarNode, Node]] | None = None
             ) -> tuple[A.Ident | None, list[A.Field], list[A.MetaEntry]]:
        """The task's type (None: not given), its fields (named as the family parameters they set) and the keys
        kept as metadata only (those also go to `recorded`, for task_notes)."""
        name: A.Ident | None = None
        fields: list[A.Field] = []
        meta: list[A.MetaEntry] = []
        for k_text, k, v in self.mapping(node, "task", hint="write `task: {type: classification}`"):
            if k_text == "type":
                t = self.text(v, "task.type", "classification")
                if t is not None:
                    name = A.Ident(self.inner(v), t)
            elif k_text == "mask_resolution":
                side = self.mask_side(v) if self.recorded_task_value_ok(k_text, v) else None
                if side is not None:
                    fields.append(A.Field(self.span(k, v), A.Ident(self.inner(k), "mask_size"), side))
            elif k_text in TASK_KEYS:
                target = TASK_KEYS[k_text]
                if target is None:
                    if not self.recorded_task_value_ok(k_text, v):
                        continue
                    e = self.meta_entry(k, v, "task")
                    meta += [e] if e is not None else []
                    if recorded is not None:
                        recorded[k_text] = (k, v)
                    continue
                val = self.value(v, f"task.{k_text}")
                if val is not None:
                    fields.append(A.Field(self.span(k, v), A.Ident(self.inner(k), target), val))
            else:
                self.unknown(k, "task", SECTION_KEYS["task"])
        return name, fields, meta

    def recorded_task_value_ok(self, key: str, v: Node) -> bool:
        """`edge_features`: a whole number, 0 or more; `mask_resolution`: a positive whole number or [height,
        width] of two. Anything else: E006."""
        sizes = [_number(i) for i in v.value] if isinstance(v, SequenceNode) else [_number(v)]
        counts = (1,) if key == "edge_features" else (1, 2)
        ok = (len(sizes) in counts and not (key == "edge_features" and isinstance(v, SequenceNode))
              and all(n is not None and n == int(n) and n >= (0 if key == "edge_features" else 1) for n in sizes))
        if not ok:
            what = "a whole number, 0 or more, such as 16" if key == "edge_features" else \
                "one size or [height, width] of two positive whole numbers, such as 28 or [56, 56]"
            self.shape(v, f"`task.{key}` takes {what}, not {describe(v)}")
        return ok

    def mask_side(self, v: Node) -> A.Num | None:
        """`mask_resolution` (validated) as the side of the square masks the family predicts: one size, or the
        larger of [height, width] with a warning where they differ (the families predict square masks)."""
        items = v.value if isinstance(v, SequenceNode) else [v]
        sides = [int(n) for n in (_number(i) for i in items) if n is not None]
        side = self.integer(str(max(sides)), self.inner(v), lambda: max(sides))  # past MAX_INT: E009
        if side is not None and len(set(sides)) > 1:
            self.bag.warning("W003", f"`task.mask_resolution` is {sides[0]}x{sides[1]}; the families predict square "
                             f"masks, so the model predicts {side.value}x{side.value}", self.inner(v))
        return side

    def edge_target(self, arch: A.Architecture, sections: Sections, target: str | None
                    ) -> tuple[A.Architecture, str | None]:
        """`task.edge_features` above 0 where the family builds a graph attention network (`gnn`, `gat`):
        the edge-feature GAT (graph.gat_edge, graph.gat_graph_edge, whose layers read them as PyTorch
        Geometric's GATConv(edge_dim=...)) with `edge_features` set. Otherwise the architecture as it is."""
        kv = sections.task_recorded.get("edge_features")
        count = _number(kv[1]) if kv is not None else None
        edge_target = _EDGE_FAMILIES.get(target or "")
        if (kv is None or not count or edge_target is None or arch.family.dotted not in ("gnn", "gat") or arch.open
                or any(f.name.name == "edge_features" for f in arch.fields)):
            return arch, target
        k, v = kv
        self.imports.setdefault("std.graph", self.span(k, v))
        family = A.Name(arch.family.span, tuple(edge_target.split(".")))
        value = A.Num(self.inner(v), int(count))
        field_ = A.Field(self.span(k, v), A.Ident(self.inner(k), "edge_features"), value)
        return A.Architecture(arch.span, family, arch.fields + (field_,)), edge_target

    def task_notes(self, sections: Sections, target: str | None) -> None:
        """What the recorded task keys mean for the family built: the edge-feature GATs read edge features
        (edge_target chose them where it could); any other graph family reads node features and the edge index
        only, so a count above 0 is a warning (W003)."""
        if target is None:
            return
        for key, (k, v) in sections.task_recorded.items():
            if key != "edge_features" or _number(v) == 0 or target in _EDGE_FAMILIES.values():
                continue
            if target.startswith(_GRAPH_MODULES):
                self.bag.warning("W003", f"`task.edge_features` is recorded, not built: `{target}` reads node features "
                                 "and the edge index only", self.inner(k),
                                 hint="the graph attention networks read edge features: `architecture.variant: gat`")
            else:
                self.bag.warning("W003", f"`task.{key}` sets no parameter of `{target}`; it is recorded, not built",
                                 self.inner(k))

    # -------------------------------------------------------------- constraints
    def constraints(self, node: Node, target: str | None, latent: bool) -> tuple[list[A.Constraint], list[A.Field],
                                                                                 list[A.MetaEntry]]:
        """Constraints, the family fields some of them set (`latent_size`), and those kept as metadata only.
        `target`: the stdlib family the architecture builds (None: unknown); `latent`: a `latent_size` is given."""
        out: list[A.Constraint] = []
        fields: list[A.Field] = []
        meta: list[A.MetaEntry] = []
        for key, k, v in self.mapping(node, "constraints"):
            where = f"constraints.{key}"
            if key == "parameter_budget":
                for bkey, bk, bv in self.mapping(v, where, hint='write `parameter_budget: {max: "86M"}`'):
                    if bkey not in _BUDGET_OPS:
                        self.unknown(bk, where, _BUDGET_OPS)
                        continue
                    amount = self.quantity(bv, f"{where}.{bkey}", "params")
                    if amount is not None:
                        out.append(A.Constraint(self.span(bk, bv), A.Ident(self.inner(bk), "params"),
                                                _BUDGET_OPS[bkey], amount, None))
                continue
            if key == "latent_size":
                val = self.value(v, where)
                if val is None:
                    continue
                param = "image_size" if target in _LATENT_FAMILIES else "latent" if target in _CODE_FAMILIES else None
                if param is None:
                    e = self.meta_entry(k, v, "constraints")
                    meta += [e] if e is not None else []
                else:
                    fields.append(A.Field(self.span(k, v), A.Ident(self.inner(k), param), val))
                continue
            if key not in CONSTRAINT_KEYS:
                self.unknown(k, "constraints", SECTION_KEYS["constraints"])
                continue
            kind, op = CONSTRAINT_KEYS[key]
            if key == "image_size" and latent and target in _LATENT_FAMILIES:
                e = self.meta_entry(k, v, "constraints")  # the decoded image's side; the family's is the latent's
                meta += [e] if e is not None else []
                continue
            value = self.constraint_value(k, v, where, kind, target, meta)
            if value is None:
                continue
            if isinstance(value, A.Name) and kind == "latency":
                op = "="
            out.append(A.Constraint(self.span(k, v), A.Ident(self.inner(k), kind), op, value, None))
        return self.device_default(out, meta), fields, meta

    def device_default(self, out: list[A.Constraint], meta: list[A.MetaEntry]) -> list[A.Constraint]:
        """The earlier tool takes a latency or a throughput without a device: a latency class that bounds nothing
        (`batch`, `offline`) is recorded only; any other is checked on DEFAULT_DEVICE, and a warning says so."""
        if any(c.name.name == "device" for c in out):
            return out
        kept: list[A.Constraint] = []
        for c in out:
            if c.name.name == "latency" and isinstance(c.value, A.Name) and c.value.dotted in UNBOUNDED_LATENCIES:
                meta.append(A.Field(c.span, A.Ident(c.name.span, "latency"), A.Str(c.value.span, c.value.dotted)))
            else:
                kept.append(c)
        timed = next((c for c in kept if CONSTRAINTS[c.name.name].needs_device), None)
        if timed is not None:
            self.bag.warning("W002", f"`{timed.name.name}` names no device: it is checked on {DEFAULT_DEVICE}, the "
                             "default device class", timed.value.span,
                             hint=f"add `device: {DEFAULT_DEVICE}` (or edge, cpu, datacenter_gpu)")
            kept.append(A.Constraint(timed.span, A.Ident(timed.name.span, "device"), "=",
                                     A.Name(timed.value.span, (DEFAULT_DEVICE,)), None))
        return kept

    def constraint_value(self, k: ScalarNode, v: Node, where: str, kind: str, target: str | None,
                         meta: list[A.MetaEntry]) -> A.Expr | None:
        text = str(v.value).strip() if isinstance(v, ScalarNode) and v.tag == STR else None
        if kind == "device":
            return self.word(v, where, "consumer_gpu")
        if kind == "latency" and text is not None and not text[:1].isdigit():
            return self.word(v, where, "real-time or 20ms")
        if kind == "context" and _unbounded(v):
            if target in UNBOUNDED_CONTEXT:
                meta.append(A.Field(self.span(k, v), A.Ident(self.inner(k), "context_window"),
                                    A.Str(self.inner(v), "unbounded")))
            elif target is not None:
                fits = sorted(g for g, opts in FAMILY_GROUPS.items() if {t for _, t in opts} <= set(UNBOUNDED_CONTEXT))
                self.bag.error("E209", f"`{where}` is unbounded, but `{target}` reads its context through a table "
                               "of positions of a fixed length", self.inner(v),
                               hint="give a length such as 128k, or use a family whose context is not bounded: "
                               + ", ".join(f"`{g}`" for g in fits))
            return None
        if kind == "throughput" and text is not None and not _QUANTITY_TEXT.fullmatch(text):
            rate = parse_rate(text)
            if rate is not None and rate.media_seconds:
                self.bag.warning("W003", f"`{where}` counts seconds of media (`{text}`), not forward passes; it is "
                                 "recorded, not checked", self.inner(v),
                                 hint="write the rate of inputs, such as `2 clip/s`, to have it checked")
                meta.append(A.Field(self.span(k, v), A.Ident(self.inner(k), "throughput"), A.Str(self.inner(v), text)))
                return None
            if rate is not None:
                return A.Quantity(self.inner(v), rate.per_second, "fps", text)
        if kind == "image_size" and (isinstance(v, SequenceNode) or (text is not None and _SIZE.fullmatch(text))):
            return self.image_size(v, where, text)
        return self.quantity(v, where, kind)

    def image_size(self, v: Node, where: str, text: str | None) -> A.Expr | None:
        """`image_size: [height, width]` (or "HxW"): the family's square side; a warning where they differ."""
        m = _SIZE.fullmatch(text) if text is not None else None
        nums = [int(m.group(1)), int(m.group(2))] if m is not None else \
            [_number(i) for i in v.value] if isinstance(v, SequenceNode) else []
        if len(nums) != 2 or any(n is None or n != int(n) or n <= 0 for n in nums):
            self.shape(v, f"`{where}` takes one size or [height, width] of two whole numbers, such as [224, 224]")
            return None
        sides = [int(n) for n in nums if n is not None]
        side = self.integer(str(max(sides)), self.inner(v), lambda: max(sides))  # past MAX_INT: E009
        if side is not None and sides[0] != sides[1]:
            self.bag.warning("W003", f"`{where}` is {sides[0]}x{sides[1]}; the families build square inputs, so the "
                             f"model takes {side.value}x{side.value}", self.inner(v))
        return side

    # -------------------------------------------------------------- training
    def training(self, key: ScalarNode, node: Node, sections: Sections) -> tuple[tuple[A.Ident, ...], A.MetaGroup | None]:
        objectives: tuple[A.Ident, ...] = ()
        meta: list[A.MetaEntry] = []
        for k_text, k, v in self.mapping(node, "training", hint="write `training: {objective: [autoregressive]}`"):
            if k_text == "objective":
                objectives = self.name_list(v, "training.objective", "autoregressive", single=True)
            elif k_text == "config":
                entry = self.config(k, v, sections)
                meta += [entry] if entry is not None else []
            elif f"training.{k_text}" in SECTION_KEYS:  # data, compute, alignment
                entry = self.recorded(k, v, "training", SECTION_KEYS[f"training.{k_text}"])
                meta += [entry] if entry is not None else []
            else:
                self.unknown(k, "training", TRAINING_KEYS)
        group = A.MetaGroup(self.span(key, node), A.Ident(self.inner(key), "training"), tuple(meta)) if meta else None
        return objectives, group

    def config(self, key: ScalarNode, node: Node, sections: Sections) -> A.MetaEntry | None:
        entries: list[A.MetaEntry] = []
        for k_text, k, v in self.mapping(node, "training.config", hint="write `config: {optimizer: adamw}`"):
            want = CONFIG_KEYS.get(k_text)
            if want is None and self.typo(k, "training.config", CONFIG_KEYS):
                continue
            where = f"training.config.{k_text}"
            if want is not None and not self.config_value_ok(v, where, want):
                continue
            n = _number(v) if want in CONFIG_NUMBERS else None
            e: A.MetaEntry | None
            if n is not None and isinstance(v, ScalarNode) and v.tag == STR:  # `3e-4`: YAML 1.1 reads a string
                e = A.Field(self.span(k, v), A.Ident(self.inner(k), meta_key(k_text)), A.Num(self.inner(v), n))
            else:
                e = self.meta_entry(k, v, "training.config")
            if e is not None:
                entries.append(e)
                sections.training_config[k_text] = (k, v)
        return A.MetaGroup(self.span(key, node), A.Ident(self.inner(key), "config"), tuple(entries))

    def config_value_ok(self, v: Node, where: str, want: str) -> bool:
        if want == "text":
            return self.text(v, where, "cosine" if where.endswith("noise_schedule") else "adamw") is not None
        if want == "list":
            if isinstance(v, MappingNode):
                self.shape(v, f"`{where}` takes a list such as [random_crop, horizontal_flip], not a mapping")
                return False
            return True
        n = _number(v)
        if n is None:
            self.shape(v, f"`{where}` takes a number, not {describe(v)}")
            return False
        fits, words = CONFIG_NUMBERS[want]
        if not fits(n):
            self.bag.error("E201", f"`{where}` must be {words}, not {v.value}", self.inner(v))
            return False
        return True

    # -------------------------------------------------------------- components
    def components(self, key: ScalarNode, node: Node) -> A.MetaEntry | None:
        """`architecture.components`: a list of named, typed parts, recorded with what each maps to; a warning
        for a type the compiler does not know."""
        if not isinstance(node, SequenceNode):
            return self.meta_entry(key, node, "architecture")
        entries: list[A.MetaEntry] = []
        for n, item in enumerate(node.value, 1):
            here = f"architecture.components item {n}"
            if not isinstance(item, MappingNode):
                t = self.text(item, here, "{name: encoder, type: transformer_encoder}")
                if t is not None:
                    entries.append(A.Field(self.span(item), A.Ident(self.inner(item), f"item_{n}"), A.Str(self.inner(item), t)))
                continue
            pairs = self.mapping(item, here)
            fields = [e for _, k, v in pairs for e in [self.meta_entry(k, v, here)] if e is not None]
            named = {k_text: v for k_text, _, v in pairs}
            kind = named.get("type")
            if isinstance(kind, ScalarNode) and kind.tag == STR:
                maps = component_target(str(kind.value))
                if maps is None:
                    self.bag.warning("W003", f"component type `{kind.value}` is not one the compiler builds; the "
                                     "component is recorded, and the family decides the model", self.inner(kind),
                                     hint="known types: " + ", ".join(sorted(COMPONENT_TYPES)))
                else:
                    fields.append(A.Field(self.span(kind), A.Ident(self.inner(kind), "maps_to"), A.Str(self.inner(kind), maps)))
            label = named.get("name")
            ident = identifier(str(label.value)) if isinstance(label, ScalarNode) and str(label.value).strip() else f"item_{n}"
            if ident in {e.name.name for e in entries}:
                ident = f"{ident}_{n}"
            entries.append(A.MetaGroup(self.span(item), A.Ident(self.inner(item), ident), tuple(fields)))
        return A.MetaGroup(self.span(key, node), A.Ident(self.inner(key), "components"), tuple(entries))

    # -------------------------------------------------------------- training.config -> the `training` section
    def training_section(self, sections: Sections, target: str | None) -> tuple[A.Training, ...]:
        """`training.config` as the model's `training { ... }` section (training_section.py checks it as for MSL),
        each key under the name of train.py's flag (YAML_TRAINING_KEYS). A latent diffusion family's `timesteps`
        and `noise_schedule` are its parameters already (config_fields), not repeated here."""
        fields: list[A.Field] = []
        nodes: list[Node] = []
        for key, (k, v) in sections.training_config.items():
            if key not in YAML_TRAINING_KEYS or (key in ("timesteps", "noise_schedule") and target in _LATENT_FAMILIES):
                continue
            name = YAML_TRAINING_KEYS[key]
            if name is None:
                self.bag.warning("W003", f"`training.config.{key}` is recorded, not built: the generated train.py counts "
                                 "warmup in optimizer steps", self.inner(k), hint="give `warmup_steps` instead")
                continue
            value = self.training_value(key, v)
            if value is not None:
                fields.append(A.Field(self.span(k, v), A.Ident(self.inner(k), name), value))
                nodes += [k, v]
        if not fields:
            return ()
        return (A.Training(self.span(nodes[0], nodes[-1]), tuple(fields)),)

    def training_value(self, key: str, v: Node) -> A.Expr | None:
        """One `training.config` value (config_value_ok accepted it) as MSL would write it: a number, a name, or a
        list of names (`data_augmentation`)."""
        if CONFIG_KEYS[key] == "list":
            items = list(v.value) if isinstance(v, SequenceNode) else [v]
            names: list[A.Expr] = []
            for i in items:
                if not isinstance(i, ScalarNode):
                    self.shape(i, f"`training.config.{key}` takes a list of names such as [random_crop, horizontal_flip]")
                    return None
                names.append(A.Name(self.inner(i), (identifier(str(i.value).lower()),)))
            return A.ListExpr(self.span(v), tuple(names)) if isinstance(v, SequenceNode) else names[0]
        if CONFIG_KEYS[key] == "text":
            word = str(v.value).strip().lower().replace("-", "_")
            if key == "noise_schedule":
                word = NOISE_SCHEDULES.get(word, word)
            return A.Name(self.inner(v), (word,)) if is_ident(word) else A.Str(self.inner(v), str(v.value))
        n = _number(v)
        assert n is not None  # config_value_ok checked it
        return A.Num(self.inner(v), int(n) if CONFIG_KEYS[key] in ("int", "count") else n)

    # -------------------------------------------------------------- the family's parameters from other sections
    def config_fields(self, sections: Sections, target: str | None, arch: A.Architecture) -> list[A.Field]:
        """training.config's `timesteps` and `noise_schedule` set a diffusion family's parameters."""
        if target not in _LATENT_FAMILIES:
            return []
        out: list[A.Field] = []
        given = {f.name.name for f in arch.fields}
        for key, param in (("timesteps", "timesteps"), ("noise_schedule", "beta_schedule")):
            if key not in sections.training_config or param in given:
                continue
            k, v = sections.training_config[key]
            if param == "beta_schedule":
                schedule = NOISE_SCHEDULES.get(str(v.value).strip().lower().replace("-", "_"))
                if schedule is None or target != "diffusion.unet":
                    if target == "diffusion.unet":
                        self.bag.warning("W003", f"noise schedule `{v.value}` is not built; it is recorded, and the "
                                         "family's schedule is used", self.inner(v),
                                         hint="built schedules: " + ", ".join(sorted(set(NOISE_SCHEDULES.values()))))
                    continue
                out.append(A.Field(self.span(k, v), A.Ident(self.inner(k), param), A.Name(self.inner(v), (schedule,))))
            else:
                val = self.value(v, f"training.config.{key}")
                if val is not None:
                    out.append(A.Field(self.span(k, v), A.Ident(self.inner(k), param), val))
        return out


DEFAULT_DEVICE = "consumer_gpu"  # the device class of a latency or throughput that names none
_QUANTITY_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)? ?[A-Za-z]*")


def _unbounded(v: Node) -> bool:
    if not isinstance(v, ScalarNode):
        return False
    t = str(v.value).strip().lower()
    return t in UNBOUNDED_WORDS or (v.tag == FLOAT and t.lstrip("+") in (".inf",))


def meta_key(key: str) -> str:
    """A metadata key: the YAML key as written where it is a name, else made one (`top-1` -> `top_1`)."""
    return key if is_ident(key) else identifier(key)


def describe(node: Node) -> str:
    """A YAML node, for a message: `a mapping`, `the string `x``..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == NULL:
        return "nothing"
    if node.tag == STR:
        return f"the string `{node.value}`"
    if node.tag in (INT, FLOAT):
        return f"the number `{node.value}`"
    return f"`{node.value}`"
