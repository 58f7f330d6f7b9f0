"""The `training { ... }` section of a model: how the generated train.py trains it by default.

Each key is the `dest` name of one of train.py's command-line flags (`lr` is `--lr`, `batch_size` is
`--batch-size`), so the compiled `training.json` reads as the flags' defaults and a flag given on the
command line overrides it. The check here is the section's whole meaning: the key table, the type and
range of every value, the pairs that exclude each other, and the family-specific keys. Diffusion's
`noise_schedule` and `timesteps` are the family's own parameters (`beta_schedule`, `timesteps` of
std.diffusion's U-Net and std.videodiffusion's Latte): the section sets them as the model's `Config`
defaults instead of writing them to training.json. Both front ends build the same `A.Training` node
(the YAML front end from `training.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from metagen_compiler.diagnostics import DiagnosticBag, Note, did_you_mean
from metagen_compiler.ir.spec import Bound, SpecIR
from metagen_compiler.semantics.values import UNIT_SCALE, EvalError, Sym, Value, describe, evaluate, format_value
from metagen_compiler.syntax import ast as A

__all__ = [
    "AUGMENTATIONS", "BUILT_AUGMENTATIONS", "FAMILY_PARAMS", "KEYS", "NOISE_SCHEDULES", "OPTIMIZERS", "PRECISIONS", "SCHEDULES",
    "TrainingKey", "check_training", "training_json",
]

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
NOISE_SCHEDULES = ("linear", "scaled_linear", "cosine")  # std.diffusion's `beta_schedule` choices

_PIXELS = ("image", "video", "multimodal", "3d")
_SIGNALS = ("audio", "time_series")
# an augmentation -> the input modalities it applies to: the language's vocabulary
AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "random_crop": _PIXELS, "random_resized_crop": _PIXELS, "horizontal_flip": _PIXELS, "vertical_flip": _PIXELS,
    "rotation": (*_PIXELS, "point_cloud"), "color_jitter": _PIXELS, "gaussian_blur": _PIXELS, "random_erasing": _PIXELS,
    "randaugment": _PIXELS, "mixup": (*_PIXELS, *_SIGNALS, "tabular"), "cutmix": _PIXELS,
    "time_shift": _SIGNALS, "time_mask": _SIGNALS, "freq_mask": ("audio",), "speed": ("audio",),
    "noise": (*_PIXELS, *_SIGNALS, "tabular", "point_cloud"), "point_jitter": ("point_cloud",),
    "scale": ("point_cloud",), "point_dropout": ("point_cloud",),
    "token_dropout": ("text",),
}
# those the generated train.py applies, by input (images: backends/pytorch/training/data_vision.py's AUGMENTATIONS;
# point clouds: data_points.py's POINT_AUGMENTATIONS under the names POINT_ALIASES gives them; tests keep them
# equal): only these reach training.json; another known name is W003 and left out, so that the compiled train.py
# always runs with the file it is given
BUILT_AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "image": ("horizontal_flip", "vertical_flip", "random_crop", "random_resized_crop", "color_jitter"),
    "point_cloud": ("rotation", "scale", "point_jitter", "point_dropout"),
}

# a training key -> the family parameter it sets where the family has one (the model's Config default)
FAMILY_PARAMS = {"noise_schedule": "beta_schedule", "timesteps": "timesteps"}
# keys that only a diffusion family uses: recognised by its `timesteps` parameter
_DIFFUSION_ONLY = ("noise_schedule", "timesteps", "cfg_dropout")


@dataclass(frozen=True)
class TrainingKey:
    """What a key takes: `choice` (one of `choices`), `names` (a list of `choices`), `int` or `number`, within
    lo..hi (`open_lo`/`open_hi`: the bound itself excluded)."""

    kind: str
    doc: str
    choices: tuple[str, ...] = ()
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    def range_words(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'greater than' if self.open_lo else 'at least'} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'less than' if self.open_hi else 'at most'} {_num(self.hi)}")
        return " and ".join(parts)

    def fits(self, v: float) -> bool:
        lo_ok = self.lo is None or (v > self.lo if self.open_lo else v >= self.lo)
        hi_ok = self.hi is None or (v < self.hi if self.open_hi else v <= self.hi)
        return lo_ok and hi_ok


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


KEYS: dict[str, TrainingKey] = {
    "optimizer": TrainingKey("choice", "the optimizer", OPTIMIZERS),
    "lr": TrainingKey("number", "the peak learning rate", lo=0, open_lo=True),
    "schedule": TrainingKey("choice", "the learning-rate schedule after warmup", SCHEDULES),
    "warmup": TrainingKey("int", "linear warmup, in optimizer steps", lo=0),
    "weight_decay": TrainingKey("number", "decoupled weight decay (not on norms, biases, embeddings)", lo=0),
    "batch_size": TrainingKey("int", "the global batch per optimizer step", lo=1),
    "steps": TrainingKey("int", "optimizer steps (or `epochs`)", lo=1),
    "epochs": TrainingKey("int", "passes over the training split (or `steps`)", lo=1),
    "grad_clip": TrainingKey("number", "the largest global gradient norm; 0 turns clipping off", lo=0),
    "grad_accum": TrainingKey("int", "micro-batches accumulated per optimizer step", lo=1),
    "precision": TrainingKey("choice", "fp32, or bf16/fp16 autocast", PRECISIONS),
    "augment": TrainingKey("names", "data augmentations of the training split", tuple(AUGMENTATIONS)),
    "ema_decay": TrainingKey("number", "the decay of an exponential moving average of the weights",
                             lo=0, hi=1, open_lo=True, open_hi=True),
    "noise_schedule": TrainingKey("choice", "diffusion: the forward process's beta schedule", NOISE_SCHEDULES),
    "timesteps": TrainingKey("int", "diffusion: the number of noise levels", lo=2),
    "cfg_dropout": TrainingKey("number", "diffusion: how often the condition is dropped (classifier-free guidance)",
                               lo=0, hi=1, open_hi=True),
}

# names people reach for -> the key (a hint, not an alias: the section has one spelling per setting)
_SYNONYMS = {
    "learning_rate": "lr", "warmup_steps": "warmup", "data_augmentation": "augment", "augmentation": "augment",
    "augmentations": "augment", "gradient_clipping": "grad_clip", "clip_grad_norm": "grad_clip",
    "max_grad_norm": "grad_clip", "gradient_accumulation": "grad_accum", "accumulation": "grad_accum",
    "dtype": "precision", "mixed_precision": "precision", "amp": "precision", "ema": "ema_decay",
    "beta_schedule": "noise_schedule", "unconditional_probability": "cfg_dropout", "uncond_prob": "cfg_dropout",
    "iterations": "steps", "max_steps": "steps", "lr_schedule": "schedule", "scheduler": "schedule",
    "warmup_epochs": "warmup",
}
# pairs that exclude each other: a run is as long as its steps or its epochs
_EXCLUSIVE = (("steps", "epochs"),)


def _key_hint(name: str) -> str:
    if name in _SYNONYMS:
        return f"did you mean `{_SYNONYMS[name]}`?"
    return did_you_mean(name, KEYS) or f"training settings: {', '.join(KEYS)}"


def _evaluate(e: A.Expr, bag: DiagnosticBag) -> tuple[Value, bool]:
    try:
        return evaluate(e, {}, lambda n: Sym(n.dotted)), True
    except EvalError as ex:
        bag.error(ex.code, ex.message, ex.span, hint=ex.hint)
        return None, False


def _word(v: Value) -> str | None:
    if isinstance(v, Sym):
        return v.name
    if isinstance(v, str):  # a YAML string, or `"adamw"` in quotes
        return v
    return None


def _value(name: str, key: TrainingKey, e: A.Expr, bag: DiagnosticBag) -> Any:
    """The plain JSON value of one setting, or None after a diagnostic."""
    for q in A.subnodes(e):  # a unit: counts (k, M) are numbers; anything else is the wrong kind
        if isinstance(q, A.Quantity) and UNIT_SCALE[q.unit][1] != "count":
            bag.error("E202", f"`{name}` takes a plain number, not {UNIT_SCALE[q.unit][1]} (`{q.text}`)", q.span,
                      hint="drop the unit" + (" (a count may take k or M: `10k`)" if key.kind == "int" else ""))
            return None
    v, ok = _evaluate(e, bag)
    if not ok:
        return None
    if key.kind == "choice":
        word = _word(v)
        if word is None:
            bag.error("E201", f"`{name}` takes one of {', '.join(key.choices)}, not {describe(v)}", e.span)
            return None
        if word not in key.choices:
            bag.error("E203", f"`{word}` is not a choice for `{name}`", e.span,
                      hint=did_you_mean(word, key.choices) or f"choices: {', '.join(key.choices)}")
            return None
        return word
    if key.kind == "names":
        return _names(name, key, e, v, bag)
    if isinstance(v, bool) or not isinstance(v, (int, float, Fraction)):
        what = "a whole number" if key.kind == "int" else "a number"
        bag.error("E201", f"`{name}` takes {what}, not {describe(v)}", e.span)
        return None
    if key.kind == "int" and not float(v).is_integer():
        bag.error("E201", f"`{name}` takes a whole number, not {format_value(v)}", e.span)
        return None
    if not key.fits(float(v)):
        bag.error("E211", f"`{name}` must be {key.range_words()}, not {format_value(v)}", e.span,
                  hint=f"`{name}` is {key.doc}")
        return None
    return int(v) if key.kind == "int" else float(v)


def _names(name: str, key: TrainingKey, e: A.Expr, v: Value, bag: DiagnosticBag) -> list[str] | None:
    items = list(e.items) if isinstance(e, A.ListExpr) else [e]
    values = list(v) if isinstance(v, tuple) else [v]
    out: list[str] = []
    seen: dict[str, A.Expr] = {}
    for item, iv in zip(items, values):
        word = _word(iv)
        if word is None:
            bag.error("E201", f"`{name}` takes a list of names such as [random_crop, horizontal_flip], not "
                      f"{describe(iv)}", item.span)
            return None
        if word not in key.choices:
            bag.error("E203", f"unknown augmentation `{word}`", item.span,
                      hint=did_you_mean(word, key.choices) or f"augmentations: {', '.join(key.choices)}")
            return None
        if word in seen:
            bag.error("E104", f"augmentation `{word}` is listed twice", item.span,
                      notes=[Note("first listed here", seen[word].span)])
            return None
        seen[word] = item
        out.append(word)
    return out


def check_training(model: A.Model, spec: SpecIR, root: str, bag: DiagnosticBag) -> None:
    """Check the model's training section and record it in `spec` (`spec.training`, and the family parameters
    it sets in `spec.bindings`, noted in `spec.training_family`); `root` is the module the model is written in."""
    if not model.training:
        return
    section = model.training[0]  # a second section is the resolver's E104
    fields: dict[str, A.Field] = {}
    for f in section.fields:
        n = f.name.name
        if n not in KEYS:
            bag.error("E207", f"unknown training setting `{n}`", f.name.span, hint=_key_hint(n))
            continue
        if n in fields:
            bag.error("E104", f"training setting `{n}` is given twice", f.name.span,
                      notes=[Note("first given here", fields[n].name.span)])
            continue
        if f.constraints:
            bag.error("E201", f"a training setting takes a value, not a range or a choice (`{n} = ... in ...`)",
                      f.constraints[0].span, hint="`?` and its domain belong in the architecture")
            continue
        fields[n] = f
    values: dict[str, Any] = {}
    for n, f in fields.items():
        v = _value(n, KEYS[n], f.value, bag)
        if v is not None:
            values[n] = v
    for a, b in _EXCLUSIVE:
        if a in fields and b in fields:
            bag.error("E212", f"`{a}` and `{b}` are both given; a training run takes one of them", fields[b].name.span,
                      notes=[Note(f"`{a}` is given here", fields[a].name.span)],
                      hint=f"keep `{a}` or `{b}`")
            values.pop(b, None)
    if "warmup" in values and "steps" in values and values["warmup"] > values["steps"]:
        bag.error("E211", f"`warmup` ({values['warmup']:,} steps) is longer than the run (`steps` = "
                  f"{values['steps']:,})", fields["warmup"].value.span, hint="warm up for fewer steps than the run")
        values.pop("warmup")
    _augmentations_fit(spec, values, fields, bag)
    _family_settings(spec, values, fields, root, bag)
    spec.training = dict(sorted(values.items()))


def _augmentations_fit(spec: SpecIR, values: dict[str, Any], fields: Mapping[str, A.Field], bag: DiagnosticBag) -> None:
    inputs = [n for n, _ in spec.inputs]
    if "augment" not in values or not inputs:
        return
    e = fields["augment"].value
    items = list(e.items) if isinstance(e, A.ListExpr) else [e]
    for item, name in zip(items, values["augment"]):
        takes = AUGMENTATIONS[name]
        if not any(i in takes for i in inputs):
            bag.error("E203", f"augmentation `{name}` is for {', '.join(takes)} input; model `{spec.name}` takes "
                      f"{', '.join(inputs)}", item.span,
                      hint="augmentations for this input: " + (", ".join(
                          a for a, t in AUGMENTATIONS.items() if any(i in t for i in inputs)) or "none"))
            values.pop("augment")
            return
    built = []
    for item, name in zip(items, values["augment"]):
        if not any(name in BUILT_AUGMENTATIONS.get(i, ()) for i in inputs):
            bag.warning("W003", f"augmentation `{name}` is not built by the generated train.py; it is ignored", item.span,
                        hint="train.py augments " + "; ".join(
                            f"{i} inputs with {', '.join(names)}" for i, names in BUILT_AUGMENTATIONS.items()
                            if i in inputs or not any(m in inputs for m in BUILT_AUGMENTATIONS)))
            continue
        built.append(name)
    values["augment"] = built


def _family_settings(spec: SpecIR, values: dict[str, Any], fields: Mapping[str, A.Field], root: str,
                     bag: DiagnosticBag) -> None:
    """Diffusion's keys: set the family's own parameters where it has them; elsewhere they do nothing (W003)."""
    fam = spec.family.node
    assert isinstance(fam, A.Family)
    params = {p.name.name for p in fam.params}
    family = spec.family.qualname.rsplit(".", 1)[-1]
    for key in _DIFFUSION_ONLY:
        if key not in values:
            continue
        if "timesteps" not in params:
            bag.warning("W003", f"`{key}` is a setting of diffusion models; family `{family}` has no noise process, "
                        "so it is ignored", fields[key].name.span, hint="remove it")
            values.pop(key)
            continue
        param = FAMILY_PARAMS.get(key)
        if param is None or param not in params:
            continue
        old = spec.bindings.get(param)
        if old is not None and old.source in ("model", "constraint", "task"):
            bag.error("E104", f"`{param}` is set twice: in the architecture and by training `{key}`",
                      fields[key].name.span, notes=[Note("also set here", old.span)],
                      hint=f"keep one of them (the training section's `{key}` sets the family's `{param}`)")
            values.pop(key)
            continue
        f = fields[key]
        spec.bindings[param] = Bound(f.value, None, root, f.span, "training", old.constraints if old is not None else ())
        spec.training_family[key] = param


def training_json(spec: SpecIR) -> dict[str, Any] | None:
    """training.json's object: the settings the section gives, keyed by train.py's flag names, less those set as
    the model's Config defaults; None for a model without a training section."""
    if not spec.training and not spec.training_family:
        return None
    return {k: v for k, v in sorted(spec.training.items()) if k not in spec.training_family}
