"""Data for train.py and evaluate.py: local files -> train/val/test datasets of model.loss() batches.

Copied verbatim next to a generated model.py; depends on torch, and on `tokenizers` (text), `datasets`
(Parquet/Arrow text) and Pillow (images) only when those loaders are used. No MetaGen import. Images (lists,
COCO boxes and masks, augmentations), point clouds and sets of graphs, audio, single graphs and time series have
their loaders in the sibling modules data_vision.py, data_points.py, data_audio.py, data_graph.py and
data_series.py (RL: rl.py).

The form of a batch comes from the model itself: `example_batch(model)` names its keys
(`text`; `image` + `label`; `tabular` + `label` or `target`), and the model's Config gives the sizes
the data must match (vocab, features, num_classes, image_size, channels, outputs).

Bad data raises DataError with one line: the file, the row or item, and what was expected.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = [
    "DataError",
    "DataOptions",
    "Form",
    "Splits",
    "SyntheticItems",
    "TensorItems",
    "TokenWindows",
    "detect_form",
    "explicit_parts",
    "leave_out_anomalies",
    "make_split",
    "prepare",
    "read_csv",
    "read_utf8",
    "split_ids",
    "target_count",
    "train_tokenizer",
]

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
FRACTIONS = (0.8, 0.1, 0.1)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
EOS = "<|endoftext|>"


class DataError(Exception):
    """Bad input data. The message is one line: file, row or item, and what was expected."""


@dataclass
class DataOptions:
    """What the command line says about the data (see train.py --help)."""

    source: str
    seed: int = 0
    block_size: int = 256
    text_field: str = "text"
    tokenizer: str | None = None
    target: str | None = None
    features: str | None = None
    synthetic_items: int = 1024
    augment: list[str] = field(default_factory=list)  # of the training split (data_vision, data_points)


@dataclass
class Form:
    """What the model's loss() expects: the kind of data and the sizes from its Config."""

    kind: str  # a value of FORMS, or synthetic, or unsupported
    keys: tuple[str, ...]
    config: dict[str, Any]


@dataclass
class Splits:
    """The three datasets and what evaluation needs to rebuild them (recorded in the run folder as data.json)."""

    train: Dataset
    val: Dataset
    test: Dataset
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_tensors(cls, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Splits:
        """TensorItems of {split: {batch key: tensor}}."""
        train, val, test = (TensorItems(tensors[s]) for s in SPLITS)
        return cls(train, val, test, state)

    def get(self, name: str) -> Dataset:
        if name not in SPLITS:
            raise DataError(f"unknown split `{name}`: expected one of {', '.join(SPLITS)}")
        return getattr(self, name)


FORMS = {  # the sorted keys of a model's example_batch -> the kind of data it trains on
    ("text",): "lm",
    ("image", "label"): "image_classification",
    ("label", "tabular"): "tabular_classification",
    ("tabular", "target"): "tabular_regression",
    ("audio", "target"): "speech_recognition",
    ("graph_edges", "graph_nodes", "label", "train_mask"): "node_classification",
    ("edge_attr", "graph_edges", "graph_nodes", "label", "train_mask"): "node_classification",  # edge features
    ("graph_edges", "graph_nodes", "neg_edges", "pos_edges"): "link_prediction",
    ("edge_attr", "graph_edges", "graph_nodes", "neg_edges", "pos_edges"): "link_prediction",
    ("target", "time_series"): "forecast",
    ("image", "text"): "image_text",
    ("boxes", "image", "labels"): "object_detection",
    ("image", "mask"): "semantic_segmentation",
    ("image", "labels", "masks"): "instance_segmentation",
    ("label", "point_cloud"): "point_cloud_classification",
    ("graph_batch", "graph_edges", "graph_nodes", "label"): "graph_classification",
    ("edge_attr", "graph_batch", "graph_edges", "graph_nodes", "label"): "graph_classification",
    ("answer_scores", "image", "text"): "visual_question_answering",
    ("is_anomaly", "tabular"): "tabular_anomaly",
    ("image", "is_anomaly"): "image_anomaly",
}
TOKEN_KEYS = {"lm": "text", "speech_recognition": "target", "image_text": "text", "visual_question_answering": "text"}
# the kinds whose batch key holds token ids: with floats there (embeddings, signals) the model is of no kind above


def detect_form(model: torch.nn.Module, module: Any) -> Form:
    """The data kind from the keys of `example_batch(model)` (FORMS), and the model's Config as a dict."""
    batch = module.example_batch(model, batch_size=2)
    keys = tuple(sorted(batch))
    kind = FORMS.get(keys, "unsupported")
    if kind in TOKEN_KEYS and batch[TOKEN_KEYS[kind]].is_floating_point():
        kind = "unsupported"
    return Form(kind, keys, dict(vars(model.config)))


def target_count(batch: dict[str, torch.Tensor]) -> int:
    """How many predictions a batch's mean loss and metrics average over (tokens, samples or values)."""
    if "answer_scores" in batch:  # visual question answering: one answer per question
        return int(batch["answer_scores"].shape[0])
    if "train_mask" in batch:  # node classification: the split's labelled nodes
        return int(batch["train_mask"].sum())
    if "label" in batch:  # graph classification pads its fixed rows with label -100
        label = batch["label"]
        return int((label >= 0).sum()) if not label.is_floating_point() else int(label.shape[0])
    if "target" in batch and not batch["target"].is_floating_point():  # transcripts: next-token predictions
        t = batch["target"]
        return int(t.shape[0] * (t.shape[1] - 1))
    if "target" in batch:
        return int(batch["target"].numel())
    if "text" in batch:
        t = batch["text"]
        return int(t.shape[0] * (t.shape[1] - 1))
    return int(next(iter(batch.values())).shape[0])


# ----------------------------------------------------------------------------------------- datasets


class TokenWindows(Dataset):
    """Consecutive windows of block_size + 1 tokens from one token stream; the last may be shorter (eval)."""

    def __init__(self, stream: torch.Tensor, block_size: int, tail: bool):
        self.stream = stream
        self.block_size = block_size
        self.full = max(0, (len(stream) - 1) // block_size)
        rest = len(stream) - 1 - self.full * block_size
        self.tail = tail and rest >= 1

    def __len__(self) -> int:
        return self.full + int(self.tail)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start = i * self.block_size
        return {"text": self.stream[start : start + self.block_size + 1]}


class TensorItems(Dataset):
    """Rows of in-memory tensors under the batch's keys."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class SyntheticItems(Dataset):
    """Random items from the model's own example_batch (smoke tests only; every output says synthetic)."""

    def __init__(self, model: torch.nn.Module, module: Any, n: int, offset: int, block_size: int):
        self.model, self.module, self.n, self.offset, self.block_size = model, module, n, offset, block_size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.module.example_batch(self.model, batch_size=1, seed=self.offset + i)
        item = {k: v[0].cpu() for k, v in batch.items()}
        if "text" in item and not item["text"].is_floating_point():
            item["text"] = item["text"][: self.block_size + 1]
        return item


# ------------------------------------------------------------------------------------------ splitting


def split_ids(ids: list[Any], seed: int, fractions: tuple[float, ...] = FRACTIONS, what: str = "") -> dict[str, list[Any]]:
    """A seeded split of item ids into train/val/test; each split gets at least one item (3 items or more leave
    train at least one: val and test take max(1, round(10%)) each)."""
    if len(ids) < 3:
        raise DataError(f"{what}: {len(ids)} item(s), but a train/val/test split needs at least 3")
    order = list(ids)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(fractions[1] * len(order)))
    n_test = max(1, round(fractions[2] * len(order)))
    n_train = len(order) - n_val - n_test
    return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}


def explicit_parts(root: Path) -> dict[str, Path]:
    """train/val/test children of a folder (subfolders, or files named train.*, val.*, test.*)."""
    if not root.is_dir():
        return {}
    parts: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        stem = child.name if child.is_dir() else child.stem
        for split, names in SPLIT_ALIASES.items():
            if stem.lower() in names and split not in parts:
                parts[split] = child
    return parts if "train" in parts else {}


def make_split(
    sources: dict[str, dict[str, Any]], seed: int, what: str, recorded: dict[str, Any] | None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Items per split. `sources` maps an explicit split (or "all") to {item id: item}.

    With a recorded split (resume, evaluate) the same ids are used again; a missing id is an error."""
    everything = {k: v for src in sources.values() for k, v in src.items()}
    if recorded is not None:
        out = {}
        for s in SPLITS:
            missing = [i for i in recorded[s] if i not in everything]
            if missing:
                raise DataError(f"{what}: item `{missing[0]}` of the recorded {s} split is missing from the data")
            out[s] = {i: everything[i] for i in recorded[s]}
        return out, recorded
    record: dict[str, Any]
    if "all" in sources:
        ids = split_ids(list(sources["all"]), seed, what=what)
        record = {"explicit": False, "seed": seed, "fractions": list(FRACTIONS), **ids}
    else:
        train_ids = list(sources["train"])
        carve = [s for s in ("val", "test") if s not in sources]
        record = {"explicit": True, "seed": seed, "fractions": list(FRACTIONS) if carve else None}
        if carve:
            sub = split_ids(train_ids, seed, what=f"{what} (train)")
            train_ids = sub["train"] + [i for s in ("val", "test") if s not in carve for i in sub[s]]
            for s in carve:
                record[s] = sub[s]
        record["train"] = train_ids
        for s in ("val", "test"):
            if s in sources:
                record[s] = list(sources[s])
    return {s: {i: everything[i] for i in record[s]} for s in SPLITS}, record


def leave_out_anomalies(items: dict[str, dict[str, Any]], is_anomaly: dict[str, int], no_normal: str) -> int:
    """Drop the train split's anomalies (`is_anomaly[id]` 1) from `items`: an autoencoder learns the normal items
    (tables here, images in data_vision.py). How many were left out; a train split of anomalies only is a DataError
    `no_normal`."""
    left_out = sum(is_anomaly[i] for i in items["train"])
    if left_out == len(items["train"]):
        raise DataError(no_normal)
    items["train"] = {i: v for i, v in items["train"].items() if not is_anomaly[i]}
    return left_out


# ------------------------------------------------------------------------------------------ reading


def read_utf8(path: Path, newline: str | None = None) -> str:
    """The text of a file; bytes that are not UTF-8 are a DataError naming the first one."""
    try:
        with path.open(encoding="utf-8", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: byte {e.start} is not UTF-8; expected UTF-8 text") from None


def jsonl_rows(path: Path, text: str, expected: str) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of the .jsonl `path` whose text is `text`; a line that is not
    JSON is a DataError ending in "expected `expected`"."""
    rows = []
    for line, row in enumerate(text.splitlines(), 1):
        if row.strip():
            try:
                rows.append((line, json.loads(row)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line}: not valid JSON ({e.msg}); expected {expected}") from None
    return rows


def read_csv(path: Path, order: str = "", comments: bool = False) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The stripped header of a .csv and its data rows as (line number, cells), each with one cell per column;
    blank rows, and with `comments` rows whose first cell starts with #, are skipped. `order` adds to what
    the not-a-CSV error says is expected."""
    if not path.is_file() or path.suffix.lower() != ".csv":
        raise DataError(f"{path}: not a .csv file; expected a CSV with a header row{order}")
    reader = csv.reader(io.StringIO(read_utf8(path, newline=""), newline=""))
    rows = [(reader.line_num, r) for r in reader
            if any(c.strip() for c in r) and not (comments and r[0].startswith("#"))]
    if not rows:
        raise DataError(f"{path}: empty file; expected a header row")
    header, body = [h.strip() for h in rows[0][1]], rows[1:]
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    for line, row in body:
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} values; expected {len(header)} (one per header column)")
    return header, body


# ----------------------------------------------------------------------------------------------- text


TABLE_SUFFIXES = (".parquet", ".arrow")
TEXT_SUFFIXES = (".txt", ".jsonl", *TABLE_SUFFIXES)


def _read_table(path: Path, name: str, text_field: str) -> dict[str, str]:
    """{item id: text}: the rows of a Parquet file or an Arrow file (as `datasets` saves them), read with the
    `datasets` library from the local file (offline; its cache in a temporary folder that is removed)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: reading Parquet or Arrow needs the `datasets` library (pip install datasets)") from None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        with tempfile.TemporaryDirectory() as cache:
            if path.suffix == ".parquet":
                table = datasets.Dataset.from_parquet(str(path), cache_dir=cache, keep_in_memory=True)
            else:
                table = datasets.Dataset.from_file(str(path), in_memory=True)
            columns = list(table.column_names)
            values = table[text_field] if text_field in columns else None
    except Exception as e:  # noqa: BLE001 (pyarrow and datasets raise many kinds)
        kind = "Parquet" if path.suffix == ".parquet" else "Arrow"
        raise DataError(f"{path}: not a readable {kind} file ({e.__class__.__name__}); expected a table with a "
                        f"`{text_field}` column") from None
    if values is None:
        raise DataError(f"{path}: no column `{text_field}` (--text-field); columns are {', '.join(columns)}")
    items: dict[str, str] = {}
    for k, value in enumerate(values):
        if not isinstance(value, str):
            raise DataError(f"{path}: row {k}: column `{text_field}` is {type(value).__name__}; expected a string")
        items[f"{name}:{k}"] = value
    return items


def _read_text_file(path: Path, name: str, text_field: str) -> dict[str, str]:
    """{item id: text}: paragraphs (blank-line separated) of a .txt, rows of a .jsonl, .parquet or .arrow."""
    if path.suffix in TABLE_SUFFIXES:
        return _read_table(path, name, text_field)
    raw = read_utf8(path)
    items: dict[str, str] = {}
    if path.suffix == ".jsonl":
        for lineno, row in jsonl_rows(path, raw, "one object per line"):
            if not isinstance(row, dict) or text_field not in row:
                raise DataError(f"{path}:{lineno}: no field `{text_field}`; expected an object with it (--text-field)")
            if not isinstance(row[text_field], str):
                kind = type(row[text_field]).__name__
                raise DataError(f"{path}:{lineno}: field `{text_field}` is {kind}; expected a string")
            items[f"{name}:{lineno}"] = row[text_field]
    else:
        for k, para in enumerate(p for p in raw.split("\n\n") if p.strip()):
            items[f"{name}:{k}"] = para
    return items


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no .txt, .jsonl, .parquet or .arrow files; expected text files")
    return files


def _read_text(path: Path, text_field: str) -> dict[str, str]:
    items: dict[str, str] = {}
    for f in _text_files(path):
        name = f.name if path.is_file() else f"{path.name}/{f.relative_to(path).as_posix()}"
        items.update(_read_text_file(f, name, text_field))
    if not items:
        raise DataError(f"{path}: no text found; expected non-empty .txt, .jsonl, .parquet or .arrow")
    return items


def train_tokenizer(texts: list[str], vocab: int, given: str | None, saved: Path, recorded: bool, write: bool,
                    what: str, specials: tuple[str, ...] = (EOS,), prefix_space: bool = False) -> Any:
    """The run's own tokenizer.json `saved` when the run is `recorded` (resume, evaluate), else a given one
    (--tokenizer), else a byte-level BPE with the model's vocab trained on `texts` (the train split). Either
    way at most `vocab` tokens. A new run saves it to `saved` only with `write` (one process of several
    writes it), replacing what a run of the same name that failed earlier may have left."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if recorded or given:
        path = saved if recorded else Path(given or "")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 (the tokenizers library raises plain Exception)
            raise DataError(f"{path}: not a tokenizer.json ({str(e).splitlines()[0]})") from None
        where = str(path)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=list(specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        where = f"{what}: the byte-level BPE of the train split (256 bytes and {len(specials)} special token(s) at least)"
    if tok.get_vocab_size() > vocab:
        raise DataError(f"{where}: {tok.get_vocab_size()} tokens, but the model's vocab is {vocab}")
    if write and not recorded:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tok.save(str(saved))
    return tok


def _stream(tok: Any, texts: list[str]) -> torch.Tensor:
    eos = tok.token_to_id(EOS)
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def _prepare_text(opts: DataOptions, form: Form, run_dir: Path, state: dict[str, Any] | None, write: bool) -> Splits:
    root = Path(opts.source)
    parts = explicit_parts(root)
    if parts:
        sources = {s: _read_text(p, opts.text_field) for s, p in parts.items()}
    else:
        sources = {"all": _read_text(root, opts.text_field)}
    recorded = state.get("split") if state else None
    items, record = make_split(sources, opts.seed, str(root), recorded)
    tok = train_tokenizer(list(items["train"].values()), int(form.config["vocab"]), opts.tokenizer,
                          run_dir / "tokenizer.json", state is not None, write, str(root))
    streams = {s: _stream(tok, list(items[s].values())) for s in SPLITS}
    for s in SPLITS:
        if len(streams[s]) < 2:
            raise DataError(f"{root}: the {s} split has {len(streams[s])} token(s); expected at least 2")
    if len(streams["train"]) < opts.block_size + 1:
        raise DataError(
            f"{root}: the train split has {len(streams['train'])} tokens, fewer than one window of "
            f"--block-size {opts.block_size} + 1"
        )
    info = {
        "kind": form.kind,
        "split": record,
        "tokenizer": "tokenizer.json",
        "vocab_size": tok.get_vocab_size(),
        "block_size": opts.block_size,
        "tokens": {s: len(streams[s]) for s in SPLITS},
    }
    return Splits(
        TokenWindows(streams["train"], opts.block_size, tail=False),
        TokenWindows(streams["val"], opts.block_size, tail=True),
        TokenWindows(streams["test"], opts.block_size, tail=True),
        info,
    )


# --------------------------------------------------------------------------------------------- images


def _image_items(root: Path, classes: list[str] | None) -> tuple[dict[str, tuple[Path, str]], list[str]]:
    """{id: (file, class name)} from a folder with one subfolder per class."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected one subfolder of images per class")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not found:
        raise DataError(f"{root}: no class subfolders; expected one subfolder of images per class")
    items: dict[str, tuple[Path, str]] = {}
    for name in found:
        if classes is not None and name not in classes:
            raise DataError(f"{root / name}: class `{name}` is not among the training classes {classes}")
        for f in sorted((root / name).iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                items[f"{root.name}/{name}/{f.name}"] = (f, name)
    if not items:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class subfolders")
    return items, found


def _load_image(path: Path, size: int, channels: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            im = opened.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__}); expected PNG/JPEG/...") from None
    x = data.view(size, size, channels).permute(2, 0, 1).float() / 255.0  # (C, H, W) in [0, 1]
    return (x - 0.5) / 0.5


# -------------------------------------------------------------------------------------------- tabular


def _read_csv(path: Path, target: list[str], features: list[str] | None) -> tuple[dict[str, tuple[list[float], list[str]]], list[str]]:
    """{row id: (feature values, target strings)} and the feature column names."""
    header, body = read_csv(path)
    for t in target:
        if t not in header:
            raise DataError(f"{path}: no column `{t}` (--target); columns are {', '.join(header)}")
    names = features if features is not None else [h for h in header if h not in target]
    for n in names:
        if n not in header:
            raise DataError(f"{path}: no feature column `{n}` (--features); columns are {', '.join(header)}")
    cols = [header.index(n) for n in names]
    tcols = [header.index(t) for t in target]
    rows: dict[str, tuple[list[float], list[str]]] = {}
    for line, row in body:
        values = []
        for c, n in zip(cols, names):
            try:
                v = float(row[c])
            except ValueError:
                raise DataError(f"{path}:{line}: column `{n}` is `{row[c]}`; expected a number") from None
            if not math.isfinite(v):
                raise DataError(f"{path}:{line}: column `{n}` is `{row[c]}`; expected a finite number")
            values.append(v)
        rows[f"{path.name}:{line}"] = (values, [row[c].strip() for c in tcols])
    return rows, names


def _labels(rows: dict[str, tuple[list[float], list[str]]], classes: list[str] | None) -> list[str]:
    """Class names: integer labels keep their value as id, other labels are sorted names."""
    if classes is not None:
        return classes
    values = sorted({t[0] for _, t in rows.values()})
    if all(v.lstrip("-").isdigit() for v in values):
        return [str(i) for i in range(max(int(v) for v in values) + 1)]
    return values


def _anomaly_labels(items: dict[str, dict[str, tuple[list[float], list[str]]]], target: list[str], root: Path
                    ) -> dict[str, dict[str, int]]:
    """{split: {row id: 0 normal / 1 anomaly}} from the one --target column (0/1, or false/true)."""
    if len(target) != 1:
        raise DataError(f"{root}: anomaly detection takes one --target column (0 normal, 1 anomaly), got "
                        f"{len(target)}")
    values = {"0": 0, "1": 1, "false": 0, "true": 1, "0.0": 0, "1.0": 1}
    out: dict[str, dict[str, int]] = {}
    for s in SPLITS:
        out[s] = {}
        for rid, (_, t) in items[s].items():
            if t[0].lower() not in values:
                file, line = rid.rsplit(":", 1)
                raise DataError(f"{file}:{line}: `{target[0]}` is `{t[0]}`; expected 0 (normal) or 1 (anomaly)")
            out[s][rid] = values[t[0].lower()]
    return out


def _prepare_tabular(opts: DataOptions, form: Form, state: dict[str, Any] | None) -> Splits:
    root = Path(opts.source)
    if not opts.target:
        raise DataError(f"{root}: tabular data needs --target COLUMN (the column to predict)")
    target = [t.strip() for t in opts.target.split(",")]
    features = [f.strip() for f in opts.features.split(",")] if opts.features else None
    parts = explicit_parts(root)
    if parts:
        read = {s: _read_csv(p, target, features) for s, p in parts.items()}
    else:
        read = {"all": _read_csv(root, target, features)}
    names = next(iter(read.values()))[1]
    expected = int(form.config.get("features", len(names)))
    if len(names) != expected:
        raise DataError(
            f"{root}: {len(names)} feature columns, but the model expects features = {expected} "
            "(name them with --features, or build the model with --set features=N)"
        )
    sources = {s: r[0] for s, r in read.items()}
    items, record = make_split(sources, opts.seed, str(root), state.get("split") if state else None)
    anomalies = _anomaly_labels(items, target, root) if form.kind == "tabular_anomaly" else None
    if anomalies is not None:
        left_out = leave_out_anomalies(items, anomalies["train"], f"{root}: every row of the train split has "
                                       f"`{target[0]}` = 1; expected normal rows (0)")
    x = {s: torch.tensor([v for v, _ in items[s].values()], dtype=torch.float32) for s in SPLITS}
    if state and "standardize" in state:
        mean = torch.tensor(state["standardize"]["mean"])
        std = torch.tensor(state["standardize"]["std"])
    else:
        mean, std = x["train"].mean(0), x["train"].std(0, unbiased=False).clamp_min(1e-8)
    info: dict[str, Any] = {
        "kind": form.kind,
        "split": record,
        "features": names,
        "target": target,
        "standardize": {"mean": mean.tolist(), "std": std.tolist()},
        "items": {s: len(items[s]) for s in SPLITS},
    }
    tensors: dict[str, dict[str, torch.Tensor]] = {s: {"tabular": (x[s] - mean) / std} for s in SPLITS}
    if form.kind == "tabular_classification":
        if len(target) != 1:
            raise DataError(f"{root}: classification takes one --target column, got {len(target)}")
        classes = _labels(items["train"], state.get("classes") if state else None)
        num_classes = int(form.config["num_classes"])
        if len(classes) > num_classes:
            raise DataError(
                f"{root}: {len(classes)} classes in `{target[0]}`, but the model has num_classes = {num_classes}"
            )
        index = {c: i for i, c in enumerate(classes)}
        for s in SPLITS:
            ids = []
            for rid, (_, t) in items[s].items():
                if t[0] not in index:
                    file, line = rid.rsplit(":", 1)
                    raise DataError(
                        f"{file}:{line}: label `{t[0]}` in `{target[0]}` is not one of the {len(classes)} classes "
                        f"0..{len(classes) - 1} (num_classes = {num_classes})"
                    )
                ids.append(index[t[0]])
            tensors[s]["label"] = torch.tensor(ids, dtype=torch.long)
        info["classes"] = classes
    elif anomalies is not None:
        for s in SPLITS:
            tensors[s]["is_anomaly"] = torch.tensor([anomalies[s][rid] for rid in items[s]], dtype=torch.long)
        info["anomalies"] = {s: sum(anomalies[s][rid] for rid in items[s]) for s in SPLITS}
        info["anomalies_left_out_of_train"] = left_out
    else:
        outputs = int(form.config.get("outputs", len(target)))
        if len(target) != outputs:
            raise DataError(f"{root}: {len(target)} --target column(s), but the model predicts outputs = {outputs}")
        for s in SPLITS:
            values = []
            for rid, (_, t) in items[s].items():
                try:
                    values.append([float(v) for v in t])
                except ValueError:
                    file, line = rid.rsplit(":", 1)
                    raise DataError(f"{file}:{line}: target `{','.join(t)}` is not a number; expected numbers") from None
            tensors[s]["target"] = torch.tensor(values, dtype=torch.float32)
    return Splits.of_tensors(tensors, info)


# ------------------------------------------------------------------------------------------------ entry


SIBLING_LOADERS = {  # form kind -> (module beside this one, its loader: (opts, form, run_dir, state, model, write))
    "image_classification": ("data_vision", "prepare_images"),
    "object_detection": ("data_vision", "prepare_coco"),
    "semantic_segmentation": ("data_vision", "prepare_coco"),
    "instance_segmentation": ("data_vision", "prepare_coco"),
    "image_text": ("data_vision", "prepare_pairs"),
    "visual_question_answering": ("data_vision", "prepare_vqa"),
    "image_anomaly": ("data_vision", "prepare_image_anomaly"),
    "point_cloud_classification": ("data_points", "prepare_points"),
    "graph_classification": ("data_points", "prepare_graphs"),
    "speech_recognition": ("data_audio", "prepare_audio"),
    "node_classification": ("data_graph", "prepare_graph"),
    "link_prediction": ("data_graph", "prepare_graph"),
    "forecast": ("data_series", "prepare_series"),
}


AUGMENTED = ("image_classification", "object_detection", "semantic_segmentation", "instance_segmentation", "image_text",
             "visual_question_answering", "image_anomaly", "point_cloud_classification")


def _sibling(name: str) -> Any:
    """A loader module beside this one (data_vision, data_points, data_audio, ...), in the package or the model
    folder."""
    return importlib.import_module(f"{__package__}.{name}" if __package__ else name)


def prepare(
    opts: DataOptions,
    form: Form,
    run_dir: Path,
    state: dict[str, Any] | None,
    model: Any = None,
    module: Any = None,
    write: bool = True,
) -> Splits:
    """The train/val/test datasets for `form` from opts.source; `state` (data.json of a run) reuses its split,
    tokenizer, classes and statistics, so resume and evaluation see exactly the data training saw. Only
    with `write` does it save the trained tokenizer (one process of several writes it)."""
    if opts.source == "synthetic":
        n = opts.synthetic_items
        info = {"kind": "synthetic", "synthetic": True, "items": {"train": n, "val": n // 8, "test": n // 8}}
        return Splits(
            SyntheticItems(model, module, n, 0, opts.block_size),
            SyntheticItems(model, module, n // 8, 1_000_000, opts.block_size),
            SyntheticItems(model, module, n // 8, 2_000_000, opts.block_size),
            info,
        )
    if not Path(opts.source).exists():
        raise DataError(f"{opts.source}: no such file or folder")
    if opts.augment and form.kind not in AUGMENTED:
        raise DataError(f"{opts.source}: --augment {','.join(opts.augment)} applies to images and point clouds; this "
                        f"model's batches are {{{', '.join(form.keys)}}}")
    if form.kind == "lm":
        return _prepare_text(opts, form, run_dir, state, write)
    if form.kind in ("tabular_classification", "tabular_regression", "tabular_anomaly"):
        return _prepare_tabular(opts, form, state)
    if form.kind in SIBLING_LOADERS:
        sibling, loader = SIBLING_LOADERS[form.kind]
        return getattr(_sibling(sibling), loader)(opts, form, run_dir, state, model, write)
    raise DataError(
        f"{opts.source}: no loader yet for a model whose batches are {{{', '.join(form.keys)}}}; "
        "use --data synthetic for a smoke test"
    )
