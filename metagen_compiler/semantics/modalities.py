"""What each input modality is as a tensor: its shape in terms of the family's parameters, its dtype,
and (for ids) the range of its values. Data, read by lowering (the graph's inputs) and the backends
(example inputs, ONNX graph inputs with named symbolic dims).

A shape is a tuple of dims: an int, "B" (the batch, symbolic), a family parameter's name (its solved
value), or a symbol from `symbols` (symbolic in the graph and in ONNX; its nominal value is the named
family parameter's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["INPUT_FORMS", "InputForm", "input_forms", "input_shape"]


@dataclass(frozen=True)
class InputForm:
    shape: tuple[int | str, ...]
    dtype: str  # float32 | int64
    doc: str
    symbols: Mapping[str, str] = field(default_factory=dict)  # symbol -> family parameter (nominal value)
    high: str | None = None  # int64 inputs: values in [0, dims[high])
    defaults: Mapping[str, int] = field(default_factory=dict)  # a family parameter the family may lack
    suffix: str = ""  # modalities of several tensors: this one's input is named <input>_<suffix>
    # int64 boxes: the last dim sorted ascending, so (x0, y0, x1, y1) has x0 <= x1 and y0 <= y1 (example inputs)
    sorted_last: bool = False
    # symbols shared with the other inputs even when the input is family-declared (a token's box goes with its token)
    aligned: bool = False


INPUT_FORMS: dict[str, tuple[InputForm, ...]] = {
    "text": (InputForm(("B", "T"), "int64", "token ids", {"T": "context"}, high="vocab", defaults={"context": 1024}),),
    "image": (InputForm(("B", "channels", "image_size", "image_size"), "float32", "images, channels first",
                        defaults={"channels": 3, "image_size": 224}),),
    "tabular": (InputForm(("B", "features"), "float32", "one row of numeric features per sample"),),
    "time_series": (InputForm(("B", "T", "features"), "float32", "a window of past values, one row per step",
                              {"T": "lookback"}),),
    "point_cloud": (InputForm(("B", "points", "coords"), "float32", "a set of points, one (x, y, z, ...) row each",
                              defaults={"coords": 3}),),
    "audio": (InputForm(("B", "samples"), "float32", "mono waveforms at the family's sample rate"),),
    "video": (InputForm(("B", "channels", "frames", "image_size", "image_size"), "float32",
                        "clips, channels first, then frames", defaults={"channels": 3}),),
    # a graph as node features and an edge index (row 0 sources, row 1 targets), as PyTorch Geometric keeps it
    "graph": (InputForm(("N", "features"), "float32", "node features", {"N": "nodes"}, suffix="nodes"),
              InputForm((2, "E"), "int64", "edge index: source and target node of each edge", {"E": "edges"},
                        high="nodes", suffix="edges")),
    # a graph-level head's third tensor: the graph each node belongs to (a mini-batch of graphs as one
    # disconnected graph, PyTorch Geometric's `batch` vector)
    "graph_batch": (InputForm(("N",), "int64", "graph id of each node", {"N": "nodes"}, high="graphs"),),
    # a graph's per-edge features, one row per column of the edge index (the family-declared input `edge_attr`)
    "edge_attr": (InputForm(("E", "edge_features"), "float32", "edge features, one row per edge of the edge index",
                            {"E": "edges"}),),
    "layout": (InputForm(("B", "T", 4), "int64", "the box of each token on its page, (x0, y0, x1, y1) on a 0..1000 grid",
                         {"T": "context"}, high="coords", sorted_last=True, aligned=True),),
    "timestep": (InputForm(("B",), "int64", "diffusion timesteps", high="timesteps"),),
    # a recommender's users and items, as ids into their embedding tables
    "user": (InputForm(("B",), "int64", "user ids", high="num_users"),),
    "item": (InputForm(("B",), "int64", "item ids", high="num_items"),),
    # a world model's second input: the discrete action taken in each observed state
    "action": (InputForm(("B",), "int64", "discrete action ids", high="num_actions"),),
    # audio as the discrete tokens of a neural codec (EnCodec's residual codebooks), one row per codebook: a
    # codec language model's input (MusicGen); a family declares it as `encoder audio: audio_tokens = ...`
    "audio_tokens": (InputForm(("B", "codebooks", "T"), "int64", "audio codec tokens, one row per codebook",
                               {"T": "context"}, high="codebook_size"),),
    # retrieval-augmented generation: the candidate passages given with each question, token ids
    "passages": (InputForm(("B", "num_passages", "Tp"), "int64", "candidate passages' token ids",
                           {"Tp": "passage_length"}, high="vocab"),),
}


def input_forms(name: str, modality: str) -> tuple[InputForm, ...]:
    """The forms of input `name` of `modality`. A family-declared input named apart from its modality
    (`encoder target: text`) has symbols of its own, prefixed with its name (target_T), so that its
    lengths vary independently of the other inputs' (in ONNX: `target_sequence` beside `sequence`)."""
    forms = INPUT_FORMS[modality]
    if name == modality or all(f.aligned for f in forms):  # `aligned`: one length with the other inputs (layout)
        return forms
    return tuple(dataclasses.replace(f, shape=tuple(f"{name}_{d}" if d in f.symbols else d for d in f.shape),
                                     symbols={f"{name}_{s}": p for s, p in f.symbols.items()}) for f in forms)


def input_shape(form: InputForm, dims: Mapping[str, object]) -> tuple[tuple[int | str, ...], dict[str, int]]:
    """The graph shape of an input (symbols kept) and the nominal value of each symbol."""
    def value(name: str) -> int:
        v = dims.get(name, form.defaults.get(name))
        if v is None:
            raise KeyError(name)
        return int(v)  # type: ignore[call-overload]

    shape = tuple(d if isinstance(d, int) or d == "B" or d in form.symbols else value(d) for d in form.shape)
    return shape, {s: value(p) for s, p in form.symbols.items()}
