"""Preprocessing for predict.py and pipelines.py: raw inputs (prompts, image, audio, CSV, graph, point-cloud and
video files, raw values) -> the tensors the model's forward takes, one item at a time (no batch dimension).

Copied verbatim next to a generated model.py, beside data.py, data_audio.py, data_graph.py and data_series.py,
whose readers it reuses (the same decoding, resampling, CSV and graph checks as training); depends on torch, and
on Pillow (images), soundfile (audio) and tokenizers (text) only when those inputs are used. No MetaGen import.

Bad input raises PredictError (or the data modules' DataError) with one line: the input and what was expected.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING or (__package__ or "").rsplit(".", 1)[-1] == "inference":  # the compiler's package
    from ..training import data, data_audio, data_graph, data_series
else:  # beside model.py in the output folder
    import data  # type: ignore[no-redef]
    import data_audio  # type: ignore[no-redef]
    import data_graph  # type: ignore[no-redef]
    import data_series  # type: ignore[no-redef]

__all__ = [
    "AUDIO_SUFFIXES",
    "BOS_NAMES",
    "EOS_NAMES",
    "IMAGE_SUFFIXES",
    "INTERNAL_INPUTS",
    "MIN_SAMPLE_RATE",
    "ImageMode",
    "Item",
    "PredictError",
    "batches",
    "best_span",
    "image_mode",
    "image_tensor",
    "integer",
    "load_tokenizer",
    "max_answer",
    "read_audio",
    "read_graph",
    "read_image",
    "read_points",
    "read_rows",
    "read_video",
    "read_window",
    "short",
]

IMAGE_SUFFIXES = data.IMAGE_SUFFIXES
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
# Below this rate a file holds nothing above 4 kHz: resampling it up cannot make the band the model hears.
MIN_SAMPLE_RATE = 8000

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


class PredictError(Exception):
    """Bad input or settings for a prediction. The message is one line: the input and what was expected."""


INTERNAL_INPUTS = {"timestep", "target", "passages"}  # filled by the pipeline, never given by the user
BOS_NAMES = ("<|startoftranscript|>", "<s>", "<|startoftext|>", "[CLS]", "<|endoftext|>")
EOS_NAMES = ("<|endoftext|>", "</s>", "[SEP]", "<eos>")


@dataclasses.dataclass
class Item:
    """One input, preprocessed: `where` names it in the results, `tensors` are forward's inputs without the batch
    dimension, `meta` what postprocessing needs (the original image size, the prompt's token ids, ...)."""

    where: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def max_answer(options: dict[str, Any]) -> int:
    """--max-answer: the longest answer span of question answering in tokens (default 30), 1 or more."""
    longest = int(options["max_answer"]) if options.get("max_answer") is not None else 30
    if longest < 1:
        raise PredictError(f"--max-answer must be 1 or more, got {longest}")
    return longest


def best_span(logits: torch.Tensor, inside: torch.Tensor | None, longest: int) -> tuple[int, int, float] | None:
    """Extractive question answering's answer: the token span start <= end, at most `longest` tokens, of the
    highest start + end logit (`logits` (T, 2)), both ends where `inside` (T,) holds (the context's tokens) if given;
    returns (start, end, score), or None where no token is inside."""
    pair = logits[:, 0][:, None] + logits[:, 1][None, :]
    allowed = torch.ones_like(pair, dtype=torch.bool).triu().tril(longest - 1)
    if inside is not None:
        allowed &= inside[:, None] & inside[None, :]
    if not bool(allowed.any()):
        return None
    s, e = divmod(int(pair.masked_fill(~allowed, float("-inf")).flatten().argmax()), pair.shape[1])
    return s, e, float(pair[s, e])


def integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise PredictError(f"input `{text}`: expected an integer {what} id") from None


def batches(items: list[Item], size: int) -> Iterable[tuple[list[Item], dict[str, torch.Tensor]]]:
    """Consecutive runs of items whose tensors have the same shapes, at most `size` each, stacked."""
    group: list[Item] = []

    def shapes(it: Item) -> tuple:
        return tuple((k, tuple(v.shape)) for k, v in sorted(it.tensors.items()))

    for it in items:
        if group and (len(group) == size or shapes(group[0]) != shapes(it)):
            yield group, {k: torch.stack([g.tensors[k] for g in group]) for k in group[0].tensors}
            group = []
        group.append(it)
    if group:
        yield group, {k: torch.stack([g.tensors[k] for g in group]) for k in group[0].tensors}


# ------------------------------------------------------------------------------------------------ text


def load_tokenizer(path: Path) -> Any:
    """A tokenizers.Tokenizer from a tokenizer.json (the training run's, or --tokenizer)."""
    from tokenizers import Tokenizer

    if not path.is_file():
        raise PredictError(f"{path}: no such tokenizer file; expected a tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 (the tokenizers library raises plain Exception)
        raise PredictError(f"{path}: not a tokenizer.json ({str(e).splitlines()[0]})") from None


# ---------------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageMode:
    """How a family's images are prepared: `square` resizes to size x size (training's data.py, detection and
    segmentation: boxes and masks map back by the two scale factors); `crop` resizes the shorter side to
    size / crop_fraction and takes the centre (torchvision's and CLIP's evaluation transforms); then
    (x - mean) / std per channel on [0, 1] values."""

    resize: str  # square | crop
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_fraction: float = 0.875
    bicubic: bool = False


TRAINING = ImageMode("square", (0.5,), (0.5,))  # data.py's _load_image: what train.py fed the model


def image_mode(family: str, trained: bool) -> ImageMode:
    """The preprocessing a family expects: a trained run's own (data.py), else its reference's."""
    if trained:
        return TRAINING
    name = family.rsplit(".", 1)[-1]
    if family.startswith("std.multimodal.clip"):
        return ImageMode("crop", *CLIP, crop_fraction=1.0, bicubic=True)
    if family.startswith(("std.vision.", "std.video.")):
        return ImageMode("crop", *IMAGENET)
    if family.startswith(("std.detection.", "std.segmentation.")) or name in ("resnet", "convnext"):
        return ImageMode("square", *IMAGENET)
    if family.startswith("std.rl."):
        return ImageMode("square", (0.0,), (1.0,))  # Atari frames: [0, 1]
    return TRAINING


def read_image(path: Path, channels: int) -> Any:
    """The decoded image (a PIL image in L or RGB, EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise PredictError(f"{path}: no such image file")
    try:
        with Image.open(path) as opened:
            im = ImageOps.exif_transpose(opened)
            return im.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise PredictError(f"{path}: not a readable image ({e.__class__.__name__}); expected PNG, JPEG, ...") from None


def image_tensor(im: Any, size: int, channels: int, mode: ImageMode) -> torch.Tensor:
    """(channels, size, size) float32 from a decoded image."""
    from PIL import Image

    resample = Image.Resampling.BICUBIC if mode.bicubic else Image.Resampling.BILINEAR
    if mode.resize == "crop":  # torchvision's Resize(short) and CenterCrop(size) rules, to the pixel
        short = max(size, int(size / mode.crop_fraction))
        w, h = im.size
        im = im.resize((short, int(short * h / w)) if w <= h else (int(short * w / h), short), resample)
        w, h = im.size
        left, top = round((w - size) / 2.0), round((h - size) / 2.0)
        im = im.crop((left, top, left + size, top + size))
    else:
        im = im.resize((size, size), resample)
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, -1)
    x = x.permute(2, 0, 1).float() / 255.0  # (C, H, W) in [0, 1]
    if x.shape[0] != channels:  # read_image gives L or RGB: other channel counts (stacked frames) repeat the grey
        x = x.mean(0, keepdim=True).expand(channels, -1, -1)
    mean = torch.tensor(mode.mean * (channels if len(mode.mean) == 1 else 1))[:channels].view(-1, 1, 1)
    std = torch.tensor(mode.std * (channels if len(mode.std) == 1 else 1))[:channels].view(-1, 1, 1)
    return (x - mean) / std


def read_video(path: Path, frames: int, size: int, channels: int, mode: ImageMode) -> torch.Tensor:
    """(channels, frames, size, size) from a folder of frame images (sorted by name) or an animated GIF/WebP:
    `frames` frames taken evenly over the clip."""
    from PIL import Image, ImageSequence

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        pictures = [read_image(p, channels) for p in files]
    else:
        read_image(path, channels)  # the one-line error for an unreadable file
        with Image.open(path) as opened:
            pictures = [f.convert("L" if channels == 1 else "RGB") for f in ImageSequence.Iterator(opened)]
    if not pictures:
        raise PredictError(f"{path}: no frames; expected a folder of frame images or an animated GIF")
    picks = [pictures[min(len(pictures) - 1, math.floor(i * len(pictures) / frames))] for i in range(frames)]
    return torch.stack([image_tensor(p, size, channels, mode) for p in picks], 1)


# ----------------------------------------------------------------------------------------------- audio


def read_audio(path: Path, rate: int, samples: int) -> torch.Tensor:
    """(samples,) float32 at the model's rate: decoded by soundfile, mixed to mono, resampled (data_audio.py's
    band-limited resampler) and zero-padded, as training reads audio."""
    import soundfile

    if not path.is_file():
        raise PredictError(f"{path}: no such audio file")
    try:
        file_rate = int(soundfile.info(str(path)).samplerate)
    except (RuntimeError, soundfile.LibsndfileError) as e:
        first = str(e).splitlines()[0]
        raise PredictError(f"{path}: not a readable audio file ({first}); expected WAV or FLAC") from None
    if file_rate < min(MIN_SAMPLE_RATE, rate):
        raise PredictError(f"{path}: sampled at {file_rate} Hz, too low to resample to the model's {rate} Hz (it holds "
                           f"nothing above {file_rate // 2} Hz); expected {MIN_SAMPLE_RATE} Hz or more")
    return data_audio.load_audio(path, rate, samples)


# --------------------------------------------------------------------------------------------- tables


def _number_row(values: list[str], where: str) -> list[float]:
    out = []
    for v in values:
        try:
            x = float(v)
        except ValueError:
            raise PredictError(f"{where}: `{v}` is not a number; expected comma-separated numbers") from None
        if not math.isfinite(x):
            raise PredictError(f"{where}: `{v}` is not a finite number")
        out.append(x)
    return out


def read_rows(arg: str, features: int, names: list[str] | None) -> list[tuple[str, list[float]]]:
    """Rows of features: every data row of a .csv (the run's feature columns by name where it recorded them,
    else the first `features` numeric columns), or one raw row `1.5,2,0.3`. [(where, values)]."""
    path = Path(arg)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise PredictError(f"{path}: no such CSV file")
        header, body = data.read_csv(path)
        if names is not None:
            missing = [n for n in names if n not in header]
            if missing:
                raise PredictError(f"{path}: no column `{missing[0]}`; the model was trained on the columns "
                                   f"{', '.join(names)}")
            cols = [header.index(n) for n in names]
        else:
            cols = list(range(len(header)))[:features]
        rows = []
        for line, row in body:
            rows.append((f"{path.name}:{line}", _number_row([row[c] for c in cols], f"{path}:{line}")))
    else:
        rows = [(arg, _number_row([v.strip() for v in arg.split(",") if v.strip()], f"input `{arg}`"))]
    for where, values in rows:
        if len(values) != features:
            raise PredictError(f"{where}: {len(values)} values; the model expects features = {features}")
    return rows


def read_window(path: Path, lookback: int, state: dict[str, Any] | None,
                features: int) -> tuple[torch.Tensor, list[str]]:
    """The last `lookback` rows of a time-series CSV as (lookback, features), standardised as the run did, and the
    names of the columns the model forecasts."""
    if not path.is_file():
        raise PredictError(f"{path}: no such CSV file")
    names = state.get("features") if state else None
    target = state.get("target") if state else None
    names, tnames, x, _ = data_series._read(path, names, target)
    if len(names) != features:
        raise PredictError(f"{path}: {len(names)} input columns ({', '.join(names)}), but the model expects "
                           f"features = {features}")
    if len(x) < lookback:
        raise PredictError(f"{path}: {len(x)} rows, fewer than the model's lookback of {lookback}")
    x = x[-lookback:]
    if state and "standardize" in state:
        st = state["standardize"]
        x = (x - torch.tensor(st["x_mean"])) / torch.tensor(st["x_std"])
    return x, tnames


# ------------------------------------------------------------------------------------- graphs, points


def read_graph(path: Path, features: int, edge_width: int | None = None) -> dict[str, Any]:
    """A graph in the training data's JSON format (data_graph.py), as forward takes it: "graph_nodes" (N, F), the
    edge index "graph_edges" (2, E; an undirected edge both ways) and, for a model that reads edge features
    (`edge_width`), their rows "edge_attr" (E, edge_width) in the edge index's order, as training reads them; a
    missing or mis-shaped edge_attr is data_graph's one-line DataError. "undirected" says how the file lists edges."""
    if not path.exists():
        raise PredictError(f"{path}: no such graph file")
    g = data_graph.read_graph(path, features, edge_width)
    return {"graph_nodes": g["x"], **data_graph.edge_batch(g), "undirected": g["undirected"]}


def read_points(path: Path, points: int, coords: int, unit_sphere: bool = False) -> torch.Tensor:
    """(points, coords) from a .npy or .ply (data_points.py's readers, where the folder has them), a text file of one
    point per line (x y z, comma or space separated; .xyz/.csv/.txt) or a JSON list of points; sampled evenly down,
    or repeated cyclically up, to `points`. `unit_sphere`: centred and scaled into the unit sphere, as training's
    point clouds are."""
    if not path.is_file():
        raise PredictError(f"{path}: no such point-cloud file")
    if path.suffix.lower() in (".npy", ".ply"):
        try:
            reader = importlib.import_module(f"{data.__package__}.data_points" if data.__package__ else "data_points")
        except ImportError:
            raise PredictError(f"{path}: .npy and .ply need data_points.py beside model.py; compile again") from None
        return _resample(reader.read_points(path, coords), points, unit_sphere)
    text = data.read_utf8(path)
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise PredictError(f"{path}: not valid JSON ({e.msg}); expected a list of [x, y, z] points") from None
        rows = [[str(v) for v in r] if isinstance(r, list) else [str(r)] for r in rows]
    else:
        rows = [line.replace(",", " ").split() for line in text.splitlines()]
        rows = [r for r in rows if r and not r[0].startswith("#")]
        if rows and not _numeric(rows[0]):
            rows = rows[1:]  # a header
    values = [_number_row(r[:coords], f"{path}:{k + 1}") for k, r in enumerate(rows)]
    if not values or any(len(v) != coords for v in values):
        raise PredictError(f"{path}: expected one point of {coords} coordinates per line")
    return _resample(torch.tensor(values, dtype=torch.float32), points, unit_sphere)


def _resample(x: torch.Tensor, points: int, unit_sphere: bool) -> torch.Tensor:
    index = (torch.arange(points) * len(x) // points) if len(x) >= points else torch.arange(points) % len(x)
    x = x[index]
    if unit_sphere:
        xyz = x[:, :3] - x[:, :3].mean(0)
        x = torch.cat((xyz / xyz.norm(dim=-1).max().clamp(min=1e-8), x[:, 3:]), 1)
    return x


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True
