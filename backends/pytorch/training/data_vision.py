"""Images for train.py and evaluate.py: classification lists, COCO boxes and masks, augmentations.

Copied verbatim next to a generated model.py, beside data.py, which calls it and whose DataError, split and image
reader it uses; depends on torch and Pillow.

Batches (the keys of the model's example_batch):

- classification {"image", "label"}: a folder with one subfolder of images per class (data.py), or a list of
  images and labels: a `.csv` with a header holding the columns `path` and `label`, or a `.jsonl` of
  {"path": ..., "label": ...} objects; paths relative to the list's folder. Integer labels are class ids, other
  labels class names in sorted order.
- object detection {"image", "boxes": (B, M, 4) x1 y1 x2 y2 in pixels of the resized image, "labels": (B, M),
  -1 padding}, semantic segmentation {"image", "mask": (B, H, W) class ids, 0 the background, COCO category k
  (in sorted id order) class k + 1}, instance segmentation {"image", "masks": (B, S, H, W) 0/1, "labels": (B, S),
  -1 padding}: a COCO-format JSON file (`images`, `annotations`, `categories`), `file_name`s relative to the
  JSON's folder (or its `images/`). Boxes are `bbox` [x, y, width, height]; masks are `segmentation` polygons or
  RLE (uncompressed `counts` lists or COCO's compressed strings), decoded here without pycocotools. Annotations
  with `iscrowd` 1 are left out (COCO's evaluation ignores them too) and counted in data.json.
- image-text pairs {"image", "text": (B, T) token ids} (captioners, CLIP-style retrieval): a `.jsonl` of
  {"image": path, "text": caption} objects, paths relative to the list. Captions are tokenised with a byte-level
  BPE trained on the train split's captions (or --tokenizer), <|endoftext|> its last, largest id (where CLIP's
  eot_pool looks for the end of the text), framed as caption <|endoftext|> (a captioner's, whose loss predicts
  every token after the first, also starts with <|endoftext|>) and padded with <|endoftext|> to the longest
  caption of the data, at most the model's `context`.
- image anomaly detection {"image", "is_anomaly": (B,) 0/1}: class folders or an image list as for classification
  (MVTec AD's layout: train/good, test/good, test/<defect>); a folder or label named good, normal, ok, 0 or false
  is normal, any other an anomaly. The autoencoder learns the normal images: the train split's anomalies are left
  out of training (counted in data.json).
- visual question answering {"image", "text": (B, context) question token ids, "answer_scores": (B, num_classes)}:
  a `.jsonl` of {"image": path, "question": ..., "answer": ...} or {..., "answers": [the annotators' answers]}
  objects, paths relative to the list. Answers are compared lower-cased and stripped. The answer vocabulary is the
  training split's `num_classes` most frequent answers (ties in name order; the rest counted in data.json); an
  item's target is VQA's soft score of each answer, min(annotators who gave it / 3, 1), or 1 for its one
  `answer`; an answer outside the vocabulary scores nowhere (counted per split in data.json). Questions are
  tokenised with a byte-level BPE trained on the train split's questions (or --tokenizer) and padded with
  <|pad|> to the model's `context`; a longer question is an error.

Images are resized to the model's image_size (no aspect ratio kept, as data.py), scaled to [-1, 1]; boxes and
masks follow the resize. Augmentations (--augment, training split only) draw from torch's global generator, so
a run is deterministic for --seed and a resumed run repeats an uninterrupted one (with --workers 0).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

if __package__:
    from . import data
else:  # beside data.py in the model's folder
    import data  # type: ignore[no-redef]

__all__ = [
    "AUGMENTATIONS",
    "PAD",
    "VisionItems",
    "augment_item",
    "check_augment",
    "decode_rle",
    "prepare_coco",
    "prepare_image_anomaly",
    "prepare_images",
    "prepare_pairs",
    "prepare_vqa",
    "read_coco",
    "read_image_list",
    "read_questions",
]

AUGMENTATIONS = ("horizontal_flip", "vertical_flip", "random_crop", "random_resized_crop", "color_jitter")
ALIASES = {"flip": "horizontal_flip", "hflip": "horizontal_flip", "random_horizontal_flip": "horizontal_flip",
           "vflip": "vertical_flip", "random_vertical_flip": "vertical_flip"}
LISTS = (".csv", ".jsonl")
PAD = "<|pad|>"  # the padding of a question (visual question answering)
NORMAL_NAMES = ("good", "normal", "ok", "0", "false")  # image anomaly detection: the labels of normal images


# ------------------------------------------------------------------------------------------ augmentations


def check_augment(names: list[str] | tuple[str, ...] | None, what: str, known: tuple[str, ...] = AUGMENTATIONS,
                  aliases: dict[str, str] = ALIASES, data_kind: str = "") -> list[str]:
    """The augmentation names, `aliases` resolved; one not `known` is a DataError naming those there are (image
    augmentations by default; data_points.py passes the point-cloud ones, `data_kind` " for point clouds")."""
    out = []
    for name in names or ():
        key = aliases.get(str(name).strip().lower(), str(name).strip().lower())
        if key not in known:
            raise data.DataError(f"{what}: augmentation `{name}` is not supported{data_kind}; expected some of "
                                 f"{', '.join(known)} (--augment)")
        out.append(key)
    return out


def _window(item: dict[str, torch.Tensor], top: int, left: int, h: int, w: int, pad: int = 0) -> None:
    """Cut the window (top, left, h, w) of the image padded by `pad` zeros and resize it back, with the targets."""
    x = item["image"]
    size = x.shape[-1]

    def cut(t: torch.Tensor, mode: str) -> torch.Tensor:
        t = F.pad(t, (pad, pad, pad, pad)) if pad else t
        t = t[..., top : top + h, left : left + w]
        if (h, w) == (size, size):
            return t
        kw = {"align_corners": False} if mode == "bilinear" else {}
        return F.interpolate(t[None].float(), size=(size, size), mode=mode, **kw)[0]

    item["image"] = cut(x, "bilinear")
    if "mask" in item:  # (H, W) class ids
        item["mask"] = cut(item["mask"][None], "nearest")[0].to(item["mask"].dtype)
    if "masks" in item:  # (S, H, W) 0/1
        masks = cut(item["masks"], "nearest").to(item["masks"].dtype)
        item["masks"] = masks
        item["labels"] = item["labels"].masked_fill(masks.flatten(1).sum(-1) == 0, -1)
    if "boxes" in item:  # (M, 4) x1 y1 x2 y2
        b = item["boxes"] + pad - torch.tensor([left, top, left, top], dtype=item["boxes"].dtype)
        b = torch.stack((b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)), -1)
        b = b * torch.tensor([size / w, size / h, size / w, size / h], dtype=b.dtype)
        gone = ((b[:, 2] - b[:, 0]) < 1) | ((b[:, 3] - b[:, 1]) < 1)  # less than a pixel of the box is left
        item["labels"] = item["labels"].masked_fill(gone, -1)
        item["boxes"] = b.masked_fill(gone[:, None], 0.0)


def _flip(item: dict[str, torch.Tensor], dim: int) -> None:
    item["image"] = item["image"].flip(dim)
    for k in ("mask", "masks"):
        if k in item:
            item[k] = item[k].flip(dim)
    if "boxes" in item:
        size, b = item["image"].shape[-1], item["boxes"]
        lo, hi = (0, 2) if dim == -1 else (1, 3)
        flipped = b.clone()
        flipped[:, lo], flipped[:, hi] = size - b[:, hi], size - b[:, lo]
        item["boxes"] = flipped.masked_fill((item["labels"] < 0)[:, None], 0.0)


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _color_jitter(x: torch.Tensor, strength: float = 0.4) -> torch.Tensor:
    """Brightness, contrast and (colour images) saturation each times a factor in [1 - s, 1 + s]."""
    v = x * 0.5 + 0.5
    v = v * _uniform(1 - strength, 1 + strength)
    v = (v - v.mean()) * _uniform(1 - strength, 1 + strength) + v.mean()
    if v.shape[0] == 3:
        gray = (0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2])[None]
        v = (v - gray) * _uniform(1 - strength, 1 + strength) + gray
    return (v.clamp(0, 1) - 0.5) / 0.5


def augment_item(item: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """A randomly changed copy of one item (image and its boxes or masks), in the order of `names`:
    horizontal_flip / vertical_flip (probability 0.5), random_crop (zero padding of size/8 each side, then a
    window of the image's size), random_resized_crop (a window of 8%..100% of the area and aspect 3/4..4/3,
    resized back; torchvision's defaults), color_jitter (brightness, contrast, saturation, 0.4)."""
    item = dict(item)
    size = item["image"].shape[-1]
    for name in names:
        if name == "horizontal_flip" and float(torch.rand(())) < 0.5:
            _flip(item, -1)
        elif name == "vertical_flip" and float(torch.rand(())) < 0.5:
            _flip(item, -2)
        elif name == "random_crop":
            pad = max(1, size // 8)
            top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
            _window(item, top, left, size, size, pad)
        elif name == "random_resized_crop":
            for _ in range(10):  # torchvision's rejection sampling; the whole image when no window fits
                area = size * size * _uniform(0.08, 1.0)
                aspect = math.exp(_uniform(math.log(3 / 4), math.log(4 / 3)))
                w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
                if 0 < w <= size and 0 < h <= size:
                    top, left = int(torch.randint(0, size - h + 1, ())), int(torch.randint(0, size - w + 1, ()))
                    _window(item, top, left, h, w)
                    break
        elif name == "color_jitter":
            item["image"] = _color_jitter(item["image"])
    return item


class VisionItems(Dataset):
    """Rows of in-memory tensors (images and their targets); masks kept small (bool, int16) and given out as the
    model's loss expects them; the training split's items augmented."""

    def __init__(self, tensors: dict[str, torch.Tensor], augment: list[str] | None = None):
        self.tensors, self.augment = tensors, list(augment or [])
        self.n = len(tensors["image"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {k: v[i] for k, v in self.tensors.items()}
        if "masks" in item:
            item["masks"] = item["masks"].float()
        if "mask" in item:
            item["mask"] = item["mask"].long()
        return augment_item(item, self.augment) if self.augment else item


# ------------------------------------------------------------------------------------------------- images


def _open_image(path: Path, size: int, channels: int, what: str = "") -> tuple[torch.Tensor, tuple[int, int]]:
    """The image resized to (channels, size, size) in [-1, 1] and its original (width, height)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise data.DataError(f"{what or path}: image file `{path}` not found")
    try:
        with Image.open(path) as opened:
            original = opened.size
    except (UnidentifiedImageError, OSError) as e:
        raise data.DataError(f"{path}: not a readable image ({e.__class__.__name__}); expected PNG/JPEG/...") from None
    return data._load_image(path, size, channels), original


def _listed(path: Path, line: int, name: str, noun: str) -> Path:
    file = path.parent / name
    if not file.is_file():
        raise data.DataError(f"{path}:{line}: {noun} file `{name}` not found (relative to {path.parent})")
    return file


def read_image_list(path: Path, noun: str = "image") -> list[tuple[str, Path, str]]:
    """(item id, file, label) of each row of a .csv (columns `path`, `label`) or .jsonl list of images (or of the
    `noun` files: data_points.py reads point-cloud lists with it)."""
    rows: list[tuple[str, Path, str]] = []
    if path.suffix.lower() == ".csv":
        header, body = data.read_csv(path, " of `path` and `label` columns")
        for col in ("path", "label"):
            if col not in header:
                raise data.DataError(f"{path}: no column `{col}`; expected the columns path and label (columns are "
                                     f"{', '.join(header)})")
        pc, lc = header.index("path"), header.index("label")
        for line, row in body:
            if not row[pc].strip() or not row[lc].strip():
                raise data.DataError(f"{path}:{line}: empty `path` or `label`; expected a file path and its label")
            rows.append((f"{path.name}:{line}", _listed(path, line, row[pc].strip(), noun), row[lc].strip()))
    else:
        for line, obj in data.jsonl_rows(path, data.read_utf8(path), '{"path": ..., "label": ...}'):
            if not (isinstance(obj, dict) and isinstance(obj.get("path"), str)
                    and isinstance(obj.get("label"), (str, int)) and not isinstance(obj.get("label"), bool)):
                raise data.DataError(f"{path}:{line}: expected an object with a string `path` and a `label` "
                                     "(class id or name)")
            rows.append((f"{path.name}:{line}", _listed(path, line, obj["path"], noun), str(obj["label"])))
        if not rows:
            raise data.DataError(f"{path}: no rows; expected one {{\"path\": ..., \"label\": ...}} per line")
    return rows


def _listing(root: Path) -> Path | None:
    """The image list that --data names: the file itself, or the one .csv/.jsonl of a folder without class folders."""
    if root.is_file():
        return root if root.suffix.lower() in LISTS else None
    found = [p for p in sorted(root.iterdir()) if p.is_file() and p.suffix.lower() in LISTS]
    if len(found) == 1 and not any(p.is_dir() for p in root.iterdir()):
        return found[0]
    return None


def _image_lists(root: Path, parts: dict[str, Path]) -> dict[str, Path]:
    """The image list of each explicit split, or {"all": the one list} --data names; {} for class folders."""
    files = {s: p for s, p in parts.items() if p.is_file()} if parts else {}
    if files and len(files) != len(parts):
        raise data.DataError(f"{root}: {', '.join(sorted(parts))} mix image lists and class folders; expected "
                             "one or the other for every split")
    single = None if parts else _listing(root)
    return {"all": single} if single is not None else files


def _class_names(labels: list[str]) -> list[str]:
    values = sorted(set(labels))
    if all(v.lstrip("-").isdigit() for v in values) and min(int(v) for v in values) >= 0:
        return [str(i) for i in range(max(int(v) for v in values) + 1)]
    return values


def prepare_images(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None, model: Any,
                   write: bool) -> data.Splits:
    """Image classification: class folders (data.py) or image lists; the training split augmented."""
    root = Path(opts.source)
    size, channels, num_classes = (int(form.config[k]) for k in ("image_size", "channels", "num_classes"))
    augment = check_augment(opts.augment, str(root))
    parts = data.explicit_parts(root)
    classes: list[str] | None = state.get("classes") if state else None
    files = _image_lists(root, parts)
    if files:
        read = {s: read_image_list(p) for s, p in files.items()}
        if classes is None:
            classes = _class_names([lab for rid, _, lab in read.get("train", read.get("all", []))])
        index = {c: i for i, c in enumerate(classes)}
        sources: dict[str, dict[str, Any]] = {}
        for s, rows in read.items():
            sources[s] = {}
            for rid, file, label in rows:
                if label not in index:
                    file_name, line = rid.rsplit(":", 1)
                    raise data.DataError(f"{files[s].parent / file_name}:{line}: label `{label}` is not one of the "
                                         f"{len(classes)} training classes")
                sources[s][rid] = (file, label)
    else:
        if parts:
            train_items, found = data._image_items(parts["train"], classes)
            classes = classes or found
            sources = {"train": train_items}
            for s in ("val", "test"):
                if s in parts:
                    sources[s] = data._image_items(parts[s], classes)[0]
        else:
            all_items, found = data._image_items(root, classes)
            classes = classes or found
            sources = {"all": all_items}
    if len(classes) > num_classes:
        what = "classes" if files else "class folders"
        raise data.DataError(f"{root}: {len(classes)} {what}, but the model has num_classes = {num_classes}")
    items, record = data.make_split(sources, opts.seed, str(root), state.get("split") if state else None)
    index = {c: i for i, c in enumerate(classes)}

    def tensors(part: dict[str, tuple[Path, str]]) -> dict[str, torch.Tensor]:
        images = [data._load_image(p, size, channels) for p, _ in part.values()]
        labels = [index[c] for _, c in part.values()]
        return {"image": torch.stack(images), "label": torch.tensor(labels, dtype=torch.long)}

    info = {"kind": form.kind, "split": record, "classes": classes, "image_size": size, "channels": channels,
            "normalize": {"mean": 0.5, "std": 0.5}, "augment": augment, "items": {s: len(items[s]) for s in data.SPLITS}}
    return data.Splits(VisionItems(tensors(items["train"]), augment), VisionItems(tensors(items["val"])),
                       VisionItems(tensors(items["test"])), info)


def prepare_image_anomaly(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None,
                          model: Any, write: bool) -> data.Splits:
    """Image anomaly detection: class folders or image lists, each label normal (NORMAL_NAMES) or an anomaly; the
    train split's anomalies left out, the training split augmented."""
    root = Path(opts.source)
    size, channels = (int(form.config[k]) for k in ("image_size", "channels"))
    augment = check_augment(opts.augment, str(root))
    parts = data.explicit_parts(root)
    files = _image_lists(root, parts)
    sources: dict[str, dict[str, Any]] = {}
    if files:
        for s, p in files.items():
            sources[s] = {rid: (file, label) for rid, file, label in read_image_list(p)}
    else:  # class folders; val and test may hold kinds of anomaly that training never sees
        for s, folder in (parts.items() if parts else [("all", root)]):
            sources[s] = data._image_items(folder, None)[0]
    items, record = data.make_split(sources, opts.seed, str(root), state.get("split") if state else None)
    anomaly = {s: {rid: int(label.strip().lower() not in NORMAL_NAMES) for rid, (_, label) in items[s].items()}
               for s in data.SPLITS}
    left_out = data.leave_out_anomalies(items, anomaly["train"], f"{root}: the train split has no normal image (a "
                                        f"class folder or label named {', '.join(NORMAL_NAMES)}); an autoencoder "
                                        "learns the normal ones")

    def tensors(s: str) -> dict[str, torch.Tensor]:
        images = [data._load_image(p, size, channels) for p, _ in items[s].values()]
        return {"image": torch.stack(images),
                "is_anomaly": torch.tensor([anomaly[s][rid] for rid in items[s]], dtype=torch.long)}

    sets = {s: tensors(s) for s in data.SPLITS}
    info = {"kind": form.kind, "split": record, "normal": list(NORMAL_NAMES), "image_size": size,
            "channels": channels, "normalize": {"mean": 0.5, "std": 0.5}, "augment": augment,
            "anomalies": {s: int(sets[s]["is_anomaly"].sum()) for s in data.SPLITS},
            "anomalies_left_out_of_train": left_out, "items": {s: len(items[s]) for s in data.SPLITS}}
    return data.Splits(VisionItems(sets["train"], augment), VisionItems(sets["val"]), VisionItems(sets["test"]), info)


# ---------------------------------------------------------------------------------------------------- COCO


def decode_rle(rle: Any, height: int, width: int, what: str) -> torch.Tensor:
    """A COCO run-length mask (`counts` a list, or COCO's compressed string) as a (height, width) bool tensor."""
    counts = rle.get("counts") if isinstance(rle, dict) else None
    if isinstance(counts, str):  # pycocotools' rleFrString: 5 bits a char, a continuation bit, deltas after two
        values: list[int] = []
        p = 0
        while p < len(counts):
            x, k, more = 0, 0, True
            while more:
                if p >= len(counts):
                    raise data.DataError(f"{what}: the RLE string ends inside a number; expected COCO's compressed RLE")
                c = ord(counts[p]) - 48
                x |= (c & 0x1F) << (5 * k)
                more = bool(c & 0x20)
                p, k = p + 1, k + 1
                if not more and c & 0x10:
                    x |= -1 << (5 * k)
            if len(values) > 2:
                x += values[-2]
            values.append(x)
        counts = values
    if not isinstance(counts, list) or not all(isinstance(v, int) and v >= 0 for v in counts):
        raise data.DataError(f"{what}: `counts` is not a list of run lengths or an RLE string")
    if sum(counts) != height * width:
        raise data.DataError(f"{what}: the RLE runs cover {sum(counts)} pixels; expected {height} x {width} = "
                             f"{height * width}")
    runs = torch.tensor(counts, dtype=torch.long)
    values_t = torch.arange(len(counts)) % 2 == 1  # runs alternate 0, 1, 0, ... starting with zeros
    flat = torch.repeat_interleave(values_t, runs)
    return flat.view(width, height).t()  # column-major (Fortran order), as COCO stores it


def _polygon_mask(polygons: list[Any], sx: float, sy: float, size: int, what: str) -> torch.Tensor:
    """The pixels of a size x size grid whose centres lie inside any of the polygons (even-odd rule), the
    polygons' x, y scaled by sx, sy: within 1.5% of pycocotools' rasterisation, at the boundary."""
    centre = torch.arange(size, dtype=torch.float64) + 0.5
    py, px = centre[:, None], centre[None, :]
    out = torch.zeros(size, size, dtype=torch.bool)
    for k, poly in enumerate(polygons):
        if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly)):
            raise data.DataError(f"{what}: polygon {k} is not a list of at least 3 x, y pairs")
        xs = torch.tensor(poly[0::2], dtype=torch.float64) * sx
        ys = torch.tensor(poly[1::2], dtype=torch.float64) * sy
        inside = torch.zeros(size, size, dtype=torch.bool)
        for x1, y1, x2, y2 in zip(xs.tolist(), ys.tolist(), xs.roll(-1).tolist(), ys.roll(-1).tolist()):
            if y1 == y2:
                continue
            crosses = (y1 > py) != (y2 > py)
            inside ^= crosses & (px < x1 + (py - y1) * (x2 - x1) / (y2 - y1))
        out |= inside
    return out


def _resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0].bool()


def read_coco(path: Path) -> dict[str, Any]:
    """The checked contents of a COCO JSON: images {id: entry}, annotations per image id, categories {id: name}."""
    try:
        doc = json.loads(data.read_utf8(path))
    except json.JSONDecodeError as e:
        raise data.DataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); expected a COCO annotation file"
                             ) from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations",
                                                                                      "categories")):
        raise data.DataError(f"{path}: expected a COCO object with the lists `images`, `annotations`, `categories`")
    images: dict[int, dict[str, Any]] = {}
    for k, im in enumerate(doc["images"]):
        if not (isinstance(im, dict) and isinstance(im.get("id"), int) and isinstance(im.get("file_name"), str)):
            raise data.DataError(f"{path}: images[{k}] has no integer `id` and string `file_name`")
        if im["id"] in images:
            raise data.DataError(f"{path}: images[{k}]: image id {im['id']} appears twice")
        images[im["id"]] = im
    if not images:
        raise data.DataError(f"{path}: `images` is empty; expected the annotated images")
    categories: dict[int, str] = {}
    for k, cat in enumerate(doc["categories"]):
        if not (isinstance(cat, dict) and isinstance(cat.get("id"), int)):
            raise data.DataError(f"{path}: categories[{k}] has no integer `id`")
        categories[cat["id"]] = str(cat.get("name", cat["id"]))
    if not categories:
        raise data.DataError(f"{path}: `categories` is empty; expected the object classes")
    per_image: dict[int, list[tuple[int, dict[str, Any]]]] = {i: [] for i in images}
    for k, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            raise data.DataError(f"{path}: annotations[{k}] is not an object")
        if ann.get("image_id") not in images:
            raise data.DataError(f"{path}: annotations[{k}]: image_id {json.dumps(ann.get('image_id'))} is not among "
                                 "the images")
        if ann.get("category_id") not in categories:
            raise data.DataError(f"{path}: annotations[{k}]: category_id {json.dumps(ann.get('category_id'))} is not "
                                 "among the categories")
        per_image[ann["image_id"]].append((k, ann))
    return {"path": path, "images": images, "annotations": per_image, "categories": categories}


def _coco_file(root: Path) -> Path:
    if root.is_file():
        return root
    found = sorted(root.glob("*.json"))
    if len(found) != 1:
        raise data.DataError(f"{root}: expected one COCO .json file in the folder (or train.json, val.json, "
                             f"test.json), found {len(found)}")
    return found[0]


def _image_path(coco: Path, name: str) -> Path:
    for base in (coco.parent, coco.parent / "images"):
        if (base / name).is_file():
            return base / name
    return coco.parent / name


def _targets(coco: dict[str, Any], image_id: int, kind: str, size: int, original: tuple[int, int],
             index: dict[int, int], out_size: int) -> tuple[dict[str, Any], int]:
    """One image's targets (boxes and labels, a class-id mask, or masks and labels) and its crowd count."""
    path, entry = coco["path"], coco["images"][image_id]
    w, h = original
    if (entry.get("width"), entry.get("height")) not in ((None, None), (w, h)):
        raise data.DataError(f"{path}: image {image_id} (`{entry['file_name']}`) is {w}x{h}, but its entry says "
                             f"{entry.get('width')}x{entry.get('height')}")
    sx, sy = size / w, size / h
    boxes, labels, masks, crowd = [], [], [], 0
    for k, ann in coco["annotations"][image_id]:
        what = f"{path}: annotations[{k}] (image {image_id})"
        if ann.get("iscrowd"):
            crowd += 1
            continue
        if kind == "object_detection":
            b = ann.get("bbox")
            if not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                                 for v in b)):
                raise data.DataError(f"{what}: `bbox` is {json.dumps(b)}; expected [x, y, width, height] numbers")
            x, y, bw, bh = b
            if bw <= 0 or bh <= 0 or x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
                raise data.DataError(f"{what}: bbox {json.dumps(b)} is empty or outside the {w}x{h} image; expected a "
                                     "box inside it")
            boxes.append([max(0.0, x) * sx, max(0.0, y) * sy, min(w, x + bw) * sx, min(h, y + bh) * sy])
        else:
            seg = ann.get("segmentation")
            if isinstance(seg, list):
                m = _polygon_mask(seg, out_size / w, out_size / h, out_size, what)
            elif isinstance(seg, dict):
                rle_size = seg.get("size", [h, w])
                if rle_size != [h, w]:
                    raise data.DataError(f"{what}: RLE size {json.dumps(rle_size)}; expected the image's [{h}, {w}]")
                m = _resize_mask(decode_rle(seg, h, w, what), out_size)
            else:
                raise data.DataError(f"{what}: `segmentation` is {type(seg).__name__}; expected polygons or RLE")
            masks.append(m)
        labels.append(index[ann["category_id"]])
    if kind == "object_detection":
        return {"boxes": boxes, "labels": labels}, crowd
    if kind == "semantic_segmentation":
        mask = torch.zeros(out_size, out_size, dtype=torch.int16)
        for m, lab in zip(masks, labels):  # later annotations paint over earlier ones
            mask[m] = lab + 1
        return {"mask": mask}, crowd
    return {"masks": masks, "labels": labels}, crowd


def _output_size(model: Any, channels: int, size: int) -> int:
    """The height (= width) of a segmenter's per-pixel output for a size x size image."""
    if model is None:
        return size
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, channels, size, size, device=next(model.parameters()).device))
    model.train(was)
    return int((out[0] if isinstance(out, tuple) else out).shape[-1])


def prepare_coco(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None, model: Any,
                 write: bool) -> data.Splits:
    """Detection, semantic or instance segmentation from COCO JSON: the three splits and data.json's record."""
    root, kind = Path(opts.source), form.kind
    size, channels, num_classes = (int(form.config[k]) for k in ("image_size", "channels", "num_classes"))
    augment = check_augment(opts.augment, str(root))
    parts = data.explicit_parts(root)
    files = {s: _coco_file(p) for s, p in parts.items()} if parts else {"all": _coco_file(root)}
    cocos = {s: read_coco(f) for s, f in files.items()}
    first = cocos.get("train", cocos.get("all"))
    cat_ids = state["category_ids"] if state else sorted(first["categories"])  # type: ignore[index]
    names = [first["categories"].get(c, str(c)) for c in cat_ids]  # type: ignore[index]
    index = {c: i for i, c in enumerate(cat_ids)}
    for s, c in cocos.items():
        extra = sorted(set(c["categories"]) - set(index))
        if extra:
            raise data.DataError(f"{c['path']}: category {extra[0]} is not among the training categories {cat_ids}")
    needed = len(cat_ids) + (1 if kind == "semantic_segmentation" else 0)
    if needed > num_classes:
        extra_note = " and the background" if kind == "semantic_segmentation" else ""
        raise data.DataError(f"{files.get('train', files.get('all'))}: {len(cat_ids)} categories{extra_note}, but the "
                             f"model has num_classes = {num_classes}")
    out_size = _output_size(model, channels, size) if kind == "semantic_segmentation" else size
    crowd_total = 0
    sources: dict[str, dict[str, Any]] = {}
    for s, coco in cocos.items():  # every image read once, in the files' order (so the first bad one is named)
        sources[s] = {}
        for image_id, entry in coco["images"].items():
            image, original = _open_image(_image_path(coco["path"], entry["file_name"]), size, channels,
                                          f"{coco['path']}: image {image_id}")
            t, crowd = _targets(coco, image_id, kind, size, original, index, out_size)
            crowd_total += crowd
            sources[s][f"{files[s].name}:{image_id}"] = (image, t)
    items, record = data.make_split(sources, opts.seed, str(root), state.get("split") if state else None)

    def tensors(part: dict[str, tuple[torch.Tensor, dict[str, Any]]]) -> dict[str, torch.Tensor]:
        targets = [t for _, t in part.values()]
        out = {"image": torch.stack([image for image, _ in part.values()])}
        if kind == "semantic_segmentation":
            out["mask"] = torch.stack([t["mask"] for t in targets])
            return out
        most = max(1, max(len(t["labels"]) for t in targets))
        labels = torch.full((len(targets), most), -1, dtype=torch.long)
        for i, t in enumerate(targets):
            labels[i, : len(t["labels"])] = torch.tensor(t["labels"], dtype=torch.long)
        out["labels"] = labels
        if kind == "object_detection":
            boxes = torch.zeros(len(targets), most, 4)
            for i, t in enumerate(targets):
                if t["boxes"]:
                    boxes[i, : len(t["boxes"])] = torch.tensor(t["boxes"], dtype=torch.float32)
            out["boxes"] = boxes
        else:
            masks = torch.zeros(len(targets), most, out_size, out_size, dtype=torch.bool)
            for i, t in enumerate(targets):
                for j, m in enumerate(t["masks"]):
                    masks[i, j] = m
            out["masks"] = masks
        return out

    sets = {s: tensors(items[s]) for s in data.SPLITS}
    info = {"kind": kind, "split": record, "files": {s: str(f) for s, f in files.items()}, "category_ids": cat_ids,
            "classes": (["background"] if kind == "semantic_segmentation" else []) + names, "image_size": size,
            "channels": channels, "normalize": {"mean": 0.5, "std": 0.5}, "augment": augment,
            "crowd_annotations_left_out": crowd_total, "items": {s: len(items[s]) for s in data.SPLITS}}
    return data.Splits(VisionItems(sets["train"], augment), VisionItems(sets["val"]), VisionItems(sets["test"]), info)


# ------------------------------------------------------------------------------------------ image-text pairs


def _jsonl_list(path: Path, what: str, row: str) -> Path:
    """The one .jsonl of `what` (each line a `row`) that --data names: the file, or the only one in a folder."""
    if path.is_dir():
        found = sorted(path.glob("*.jsonl"))
        if len(found) != 1:
            raise data.DataError(f"{path}: expected one .jsonl of {what} in the folder, found {len(found)}")
        path = found[0]
    if path.suffix != ".jsonl":
        raise data.DataError(f"{path}: not a .jsonl file; expected one {row} per line")
    return path


def read_pairs(path: Path) -> dict[str, tuple[Path, str]]:
    """{item id: (image file, caption)} of a .jsonl of {"image": path, "text": caption}."""
    row = '{"image": ..., "text": ...}'
    path = _jsonl_list(path, "image-text pairs", row)
    items: dict[str, tuple[Path, str]] = {}
    for line, obj in data.jsonl_rows(path, data.read_utf8(path), row):
        if not (isinstance(obj, dict) and isinstance(obj.get("image"), str) and isinstance(obj.get("text"), str)):
            raise data.DataError(f"{path}:{line}: expected an object with string fields `image` and `text`")
        if not obj["text"].strip():
            raise data.DataError(f"{path}:{line}: empty `text`; expected a caption")
        items[f"{path.name}:{line}"] = (_listed(path, line, obj["image"], "image"), obj["text"])
    if not items:
        raise data.DataError(f"{path}: no rows; expected one {row} per line")
    return items


def _generates(model: Any, channels: int, size: int) -> bool:
    """Whether the model predicts the text's tokens (B, T, vocab), as a captioner, rather than scores pairs."""
    if model is None:
        return True
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(torch.zeros(1, channels, size, size, device=device), torch.zeros(1, 2, dtype=torch.long,
                                                                                      device=device))
    model.train(was)
    return (out[0] if isinstance(out, tuple) else out).dim() == 3


def prepare_pairs(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None, model: Any,
                  write: bool) -> data.Splits:
    """Image-text pairs: images, the captions' tokenizer (saved with the run) and token ids."""
    root = Path(opts.source)
    cfg = form.config
    size, channels, vocab = (int(cfg[k]) for k in ("image_size", "channels", "vocab"))
    context = int(cfg.get("context", 0)) or None
    augment = check_augment(opts.augment, str(root))
    parts = data.explicit_parts(root)
    sources = {s: read_pairs(p) for s, p in parts.items()} if parts else {"all": read_pairs(root)}
    items, record = data.make_split(sources, opts.seed, str(root), state.get("split") if state else None)
    recorded = state is not None
    saved = run_dir / "tokenizer.json"
    tok = data.train_tokenizer([t for _, t in items["train"].values()], vocab if recorded or opts.tokenizer else
                               vocab - 1, opts.tokenizer, saved, recorded, False, str(root), specials=())
    tok.add_special_tokens([data.EOS])  # the last id, unless a given tokenizer has it already
    eos = tok.token_to_id(data.EOS)
    if tok.get_vocab_size() > vocab:
        raise data.DataError(f"{opts.tokenizer or root}: {tok.get_vocab_size()} tokens with {data.EOS}, but the "
                             f"model's vocab is {vocab}")
    if write and not recorded:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tok.save(str(saved))
    prefix = [eos] if _generates(model, channels, size) else []
    framed = {s: {rid: prefix + tok.encode(text).ids + [eos] for rid, (_, text) in items[s].items()}
              for s in data.SPLITS}
    longest = max(len(ids) for part in framed.values() for ids in part.values())
    if context is not None and longest > context:
        rid, ids = next((r, i) for part in framed.values() for r, i in part.items() if len(i) == longest)
        file, line = rid.rsplit(":", 1)
        raise data.DataError(f"{root if root.is_file() else root / file}:{line}: a caption of {len(ids)} tokens "
                             f"(framed), longer than the model's context {context}")

    def tensors(s: str) -> dict[str, torch.Tensor]:
        images = torch.stack([data._load_image(p, size, channels) for p, _ in items[s].values()])
        text = torch.full((len(items[s]), longest), eos, dtype=torch.long)
        for i, ids in enumerate(framed[s].values()):
            text[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return {"image": images, "text": text}

    sets = {s: tensors(s) for s in data.SPLITS}
    info = {"kind": form.kind, "split": record, "tokenizer": "tokenizer.json", "vocab_size": tok.get_vocab_size(),
            "eos_id": eos, "text_length": longest, "starts_with_eos": bool(prefix), "image_size": size,
            "channels": channels, "normalize": {"mean": 0.5, "std": 0.5}, "augment": augment,
            "items": {s: len(items[s]) for s in data.SPLITS}}
    return data.Splits(VisionItems(sets["train"], augment), VisionItems(sets["val"]), VisionItems(sets["test"]), info)


# -------------------------------------------------------------------------------- visual question answering


def read_questions(path: Path) -> dict[str, tuple[Path, str, list[str]]]:
    """{item id: (image file, question, the annotators' answers)} of a .jsonl of {"image", "question", "answer"}
    (or "answers": a list), answers lower-cased and stripped."""
    path = _jsonl_list(path, "questions", '{"image": ..., "question": ..., "answer": ...}')
    expected = '{"image": ..., "question": ..., "answer": ... or "answers": [...]}'
    items: dict[str, tuple[Path, str, list[str]]] = {}
    for line, obj in data.jsonl_rows(path, data.read_utf8(path), expected):
        if not (isinstance(obj, dict) and isinstance(obj.get("image"), str) and isinstance(obj.get("question"), str)):
            raise data.DataError(f"{path}:{line}: expected an object with string fields `image` and `question`")
        if not obj["question"].strip():
            raise data.DataError(f"{path}:{line}: empty `question`")
        given = obj.get("answers", [obj["answer"]] if "answer" in obj else None)
        if not (isinstance(given, list) and given and all(isinstance(a, str) and a.strip() for a in given)):
            raise data.DataError(f"{path}:{line}: expected `answer` (a non-empty string) or `answers` (a non-empty list "
                                 "of them)")
        answers = [a.strip().lower() for a in given]
        items[f"{path.name}:{line}"] = (_listed(path, line, obj["image"], "image"), obj["question"].strip(), answers)
    if not items:
        raise data.DataError(f"{path}: no rows; expected one {expected} per line")
    return items


def _soft_scores(answers: list[str], index: dict[str, int], classes: int) -> torch.Tensor:
    """VQA's target of one question: min(annotators who gave each answer / 3, 1); a lone answer scores 1."""
    row = torch.zeros(classes)
    for a in set(answers):
        if a in index:
            row[index[a]] = 1.0 if len(answers) == 1 else min(answers.count(a) / 3, 1.0)
    return row


def prepare_vqa(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None, model: Any,
                write: bool) -> data.Splits:
    """Visual question answering: images, question token ids, soft answer scores, and data.json's record (the
    answer vocabulary, the tokenizer)."""
    root, cfg = Path(opts.source), form.config
    size, channels, vocab, context, num_classes = (int(cfg[k]) for k in ("image_size", "channels", "vocab", "context",
                                                                         "num_classes"))
    augment = check_augment(opts.augment, str(root))
    parts = data.explicit_parts(root)
    sources = {s: read_questions(p) for s, p in parts.items()} if parts else {"all": read_questions(root)}
    items, record = data.make_split(sources, opts.seed, str(root), state.get("split") if state else None)
    if state and "answers" in state:
        answers = list(state["answers"])
        dropped = int(state.get("answers_left_out", 0))
    else:
        counts = Counter(a for _, _, given in items["train"].values() for a in given)
        ranked = sorted(counts, key=lambda a: (-counts[a], a))
        answers, dropped = ranked[:num_classes], max(0, len(ranked) - num_classes)
    index = {a: i for i, a in enumerate(answers)}
    tok = data.train_tokenizer([q for _, q, _ in items["train"].values()], vocab, opts.tokenizer,
                               run_dir / "tokenizer.json", state is not None, write, str(root), specials=(PAD,))
    pad = tok.token_to_id(PAD)
    if pad is None:  # a given tokenizer without it
        raise data.DataError(f"{opts.tokenizer}: no {PAD} token; expected a tokenizer with {PAD} for the padding")

    def tensors(s: str) -> dict[str, torch.Tensor]:
        text = torch.full((len(items[s]), context), pad, dtype=torch.long)
        for i, (rid, (_, question, _)) in enumerate(items[s].items()):
            ids = tok.encode(question).ids
            if len(ids) > context:
                file, line = rid.rsplit(":", 1)
                raise data.DataError(f"{root if root.is_file() else root / file}:{line}: a question of {len(ids)} "
                                     f"tokens, longer than the model's context {context}")
            text[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        images = torch.stack([data._load_image(p, size, channels) for p, _, _ in items[s].values()])
        scores = torch.stack([_soft_scores(given, index, num_classes) for _, _, given in items[s].values()])
        return {"image": images, "text": text, "answer_scores": scores}

    sets = {s: tensors(s) for s in data.SPLITS}
    unanswerable = {s: int((sets[s]["answer_scores"].sum(-1) == 0).sum()) for s in data.SPLITS}
    info = {"kind": form.kind, "split": record, "tokenizer": "tokenizer.json", "vocab_size": tok.get_vocab_size(),
            "pad_id": pad, "question_length": context, "answers": answers, "answers_left_out": dropped,
            "questions_without_a_known_answer": unanswerable, "image_size": size, "channels": channels,
            "normalize": {"mean": 0.5, "std": 0.5}, "augment": augment,
            "items": {s: len(items[s]) for s in data.SPLITS}}
    return data.Splits(VisionItems(sets["train"], augment), VisionItems(sets["val"]), VisionItems(sets["test"]), info)
