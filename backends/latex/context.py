"""What the paper knows about one compiled model, gathered once for every section writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metagen_compiler.compilation import Compilation
from metagen_compiler.ir.graph import GraphIR
from metagen_compiler.ir.spec import SpecIR

from .blocks import Tree
from .escape import rm, tt
from .ledger import Ledger

__all__ = ["KNOWN_FAMILIES", "Paper"]

# Families of the stdlib, described in words (a user family is described by what its graph contains).
KNOWN_FAMILIES = {
    "std.transformer.decoder": "decoder-only transformer",
    "std.vision.vit": "Vision Transformer",
    "std.vision.resnet": "residual convolutional network",
}

_RECURRENT = frozenset({"lstm", "gru", "rnn"})
_FEED_FORWARD = frozenset({
    "linear", "layernorm", "rmsnorm", "batchnorm", "embedding", "pos_embedding", "gelu", "relu", "silu", "tanh",
    "sigmoid", "softmax", "dropout", "identity", "flatten", "transpose", "select", "mean", "add", "sub", "mul", "split",
})


def _tags(op: str) -> frozenset[str]:
    from metagen_compiler.primitives import PRIMITIVES

    prim = PRIMITIVES.get(op)
    return prim.tags if prim is not None else frozenset()


_TASK_WORDS = {
    "generation": "generation", "classification": "classification", "regression": "regression",
    "embedding": "embedding", "object_detection": "object detection", "time_series_forecast": "forecasting",
}


@dataclass
class Paper:
    comp: Compilation
    report: dict[str, Any]
    devices: dict[str, dict[str, Any]]
    ledger: Ledger = field(init=False)
    tree: Tree = field(init=False)
    ops: dict[str, list[dict[str, Any]]] = field(init=False)
    cited: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.report)
        self.tree = Tree(self.ir)
        self.ops = self.tree.ops()

    # ------------------------------------------------------------ shortcuts
    @property
    def spec(self) -> SpecIR:
        assert self.comp.spec is not None
        return self.comp.spec

    @property
    def ir(self) -> GraphIR:
        assert self.comp.graph is not None
        return self.comp.graph

    @property
    def name(self) -> str:
        """The model as the paper names it: the spec's display name (YAML `name:` text) where it has one, in
        roman type; else its identifier, in typewriter."""
        display = self.spec.metadata.get("display_name")
        return rm(str(display)) if display else tt(self.spec.name)

    def cite(self, *keys: str) -> str:
        for k in keys:
            if k not in self.cited:
                self.cited.append(k)
        return "\\citep{" + ",".join(keys) + "}" if keys else ""

    # ------------------------------------------------------------ words
    def family_words(self) -> str:
        """`decoder-only transformer` for a stdlib family; for a user family, what its graph holds."""
        fam = self.report["family"]
        if fam in KNOWN_FAMILIES:
            return KNOWN_FAMILIES[fam]
        kinds = []
        if any("attention" in _tags(op) or "attention" in op or op == "sdpa" for op in self.ops):
            kinds.append("attention-based")
        if any(op.startswith("conv") for op in self.ops):
            kinds.append("convolutional")
        if any(op in _RECURRENT for op in self.ops):
            kinds.append("recurrent")
        if not kinds:  # "feed-forward" only when every op is one known to be feed-forward
            return ("feed-forward" if set(self.ops) <= _FEED_FORWARD else "neural") + " network"
        return " and ".join(kinds) + " network"

    def mm_words(self) -> str:
        """What the exact FLOP count of this model consists of: `matrix products and convolutions`."""
        kinds = [w for w, c in (
            ("matrix products", any(op == "linear" or ("mm" in _tags(op) and not op.startswith("conv")
                                                        and "attention" not in _tags(op)) for op in self.ops)),
            ("convolutions", any(op.startswith("conv") for op in self.ops)),
            ("attention", any(op == "sdpa" or "attention" in _tags(op) for op in self.ops)),
        ) if c]
        if not kinds:
            return "matrix products, convolutions and attention (this model has none)"
        return kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]

    def a_family(self) -> str:
        """`a decoder-only transformer`, `an attention-based network`."""
        words = self.family_words()
        return ("an " if words[:1].lower() in "aeiou" else "a ") + words

    def family_ref(self) -> str:
        fam = tt(self.report["family"])
        preset = self.report.get("preset")
        return fam + (f" (preset {tt(preset)})" if preset else "")

    def modality_words(self) -> str:
        ins = ", ".join(rm(m) for m in self.report["modality"]["inputs"]) or "no"
        outs = ", ".join(rm(m) for m in self.report["modality"]["outputs"]) or "no"
        return f"{ins}-to-{outs}"

    def task_words(self) -> str:
        t = self.report["task"]["name"]
        return rm(_TASK_WORDS.get(t, t.replace("_", " ")))

    def objectives(self) -> list[str]:
        return list(self.spec.objectives)

    def tied(self) -> bool:
        return bool(self.ir.ties)

    def data_names(self) -> list[str]:
        meta = self.report.get("metadata") or {}
        data = meta.get("data")
        if data is None and isinstance(meta.get("training"), dict):
            data = meta["training"].get("data")
        if data is None:
            return []
        if isinstance(data, (list, tuple)):
            return [str(d) if not isinstance(d, dict) else ", ".join(f"{k}: {v}" for k, v in d.items()) for d in data]
        if isinstance(data, dict):
            return [f"{k}: {v}" for k, v in data.items()]
        return [str(data)]

    def unused_dims(self) -> dict[str, list[str]]:
        """Family parameters this model does not read (named only by heads of other tasks) -> those tasks: the
        compiler's analysis (metagen_compiler/semantics/unused.py)."""
        return self.comp.unused_params

    def constraint_rows(self) -> list[tuple[int, dict[str, Any]]]:
        return list(enumerate(self.report["constraints"]))
