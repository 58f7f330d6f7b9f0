"""Training data beyond text, class folders and tables: image lists, COCO boxes and masks, augmentations, point
clouds, sets of graphs, Parquet/Arrow text, and metrics over a whole split (mAP, mean IoU, macro F1).

Real data only: scikit-learn's handwritten digits, drawn into larger canvases with their boxes and masks (COCO
JSON), lifted to 3-D point clouds (.npy and .ply) and turned into pixel graphs (tests/training_helpers.py).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from conftest import load_module
from metagen_backends.pytorch.training import data, data_points, data_vision, loop, split_metrics
from metagen_backends.pytorch.training import evaluate as evaluate_script
from metagen_backends.pytorch.training import train as train_script
from training_helpers import (
    model_folder,
    one_thread,
    records,
    rle_encode,
    write_digit_captions,
    write_digit_clouds,
    write_digit_graphs,
    write_digit_scenes,
    write_digits,
    write_ply,
)

TINY_YOLO = ["--set", "image_size=64", "--set", "channels=1", "--set", "width=8", "--set", "num_classes=4"]
TINY_POINTNET = ["--set", "points=64", "--set", "width=16", "--set", "num_classes=10"]
TINY_SEG = ["--set", "image_size=128", "--set", "channels=1", "--set", "width=8", "--set", "depths=1,1,1,1",
            "--set", "expansion=2", "--set", "num_classes=5"]
TINY_MASKFORMER = ["--set", "image_size=64", "--set", "channels=1", "--set", "width=8", "--set", "depths=1,1,1,1",
                   "--set", "expansion=2", "--set", "features=32", "--set", "mask_dim=32", "--set", "d_model=32",
                   "--set", "heads=2", "--set", "ffn=64", "--set", "decoder_layers=1", "--set", "num_queries=8",
                   "--set", "num_classes=4"]


_one_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    names = ("yolo_detector", "pointnet", "graph_classifier", "resnet_segmentation", "maskformer_instance",
             "vlm_captioner", "clip_vit_b_32", "resnet50")
    return {name: model_folder(root, name) for name in names}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 canvases of 48 x 48 with 1 to 3 handwritten digits 0..3 each, their boxes and RLE masks (COCO)."""
    pytest.importorskip("sklearn.datasets")
    return write_digit_scenes(tmp_path_factory.mktemp("scenes"), n=300, size=48)


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 digits per class as 3-D point clouds (.npy, ASCII .ply, binary .ply) in class folders."""
    pytest.importorskip("sklearn.datasets")
    return write_digit_clouds(tmp_path_factory.mktemp("clouds") / "clouds")


def _train(folder: Path, *args: str) -> int:
    return train_script.main(["--model", str(folder / "model.py"), *args])


def _form(folder: Path, name: str, *overrides: str) -> tuple[data.Form, torch.nn.Module]:
    mod = load_module(folder / "model.py", name)
    config = mod.Config(**loop.parse_overrides(mod.Config, [o for o in overrides if o != "--set"]))
    model = mod.build_model(config)
    return data.detect_form(model, mod), model


# ----------------------------------------------------------------------------------------------- images


def test_image_lists_csv_and_jsonl_match_class_folders(tmp_path: Path) -> None:
    pytest.importorskip("sklearn.datasets")
    root = write_digits(tmp_path / "digits")
    files = sorted(root.glob("*/*.png"))[::10]
    rows = [(f.relative_to(root).as_posix(), f.parent.name) for f in files]
    (root / "list.csv").write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    (root / "list.jsonl").write_text("".join(json.dumps({"path": p, "label": int(lab)}) + "\n" for p, lab in rows))
    form = data.Form("image_classification", ("image", "label"), {"image_size": 8, "channels": 1, "num_classes": 10})
    a = data.prepare(data.DataOptions(str(root / "list.csv")), form, tmp_path / "run", None)
    b = data.prepare(data.DataOptions(str(root / "list.jsonl")), form, tmp_path / "run", None)
    assert a.state["classes"] == [str(k) for k in range(10)] == b.state["classes"]
    assert sum(a.state["items"].values()) == len(rows)
    for s in data.SPLITS:
        x, y = a.get(s), b.get(s)
        assert torch.equal(x.tensors["label"], y.tensors["label"]) and torch.equal(x.tensors["image"], y.tensors["image"])
    item = a.train[0]  # the label is the class folder the list names
    index = a.state["split"]["train"][0]
    assert a.state["classes"][int(item["label"])] == rows[int(index.split(":")[1]) - 2][1]


def test_augmentations_are_seeded_and_move_boxes_and_masks_with_the_image() -> None:
    image = torch.full((1, 32, 32), -1.0)
    image[0, 4:12, 20:30] = 1.0  # a bright box at x 20..30, y 4..12
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[4:12, 20:30] = 1
    item = {"image": image, "boxes": torch.tensor([[20.0, 4.0, 30.0, 12.0], [0.0, 0.0, 0.0, 0.0]]),
            "labels": torch.tensor([0, -1]), "mask": mask, "masks": (mask[None] == 1).float()}
    names = data_vision.check_augment(["flip", "vertical_flip", "random_crop", "random_resized_crop", "color_jitter"],
                                      "x")
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append([data_vision.augment_item(item, names) for _ in range(20)])
    assert all(torch.equal(p["image"], q["image"]) for p, q in zip(outs[0], outs[1]))  # same seed, same items
    assert not all(torch.equal(p["image"], q["image"]) for p, q in zip(outs[0], outs[2]))
    kept = 0
    for out in outs[0]:
        assert out["labels"][1] == -1 and out["image"].shape == (1, 32, 32)
        if out["labels"][0] < 0:
            assert out["masks"][0].sum() == 0 or out["boxes"][0].tolist() == [0.0] * 4
            continue
        kept += 1
        ys, xs = torch.nonzero(out["mask"] == 1, as_tuple=True)
        x1, y1, x2, y2 = out["boxes"][0].tolist()
        assert abs(xs.min() - x1) <= 2.5 and abs(xs.max() + 1 - x2) <= 2.5, (xs.min(), xs.max(), x1, x2)
        assert abs(ys.min() - y1) <= 2.5 and abs(ys.max() + 1 - y2) <= 2.5, (ys.min(), ys.max(), y1, y2)
        assert torch.equal(out["masks"][0].bool(), out["mask"] == 1)
    assert kept >= 10
    with pytest.raises(data.DataError, match="^x: augmentation `mixup` is not supported; expected some of "):
        data_vision.check_augment(["mixup"], "x")


def test_rle_and_polygons_decode_as_pycocotools() -> None:
    """Strings and pixel counts that pycocotools 2.0 gives for the same masks (its encode, frPyObjects)."""
    pytest.importorskip("sklearn.datasets")
    from sklearn.datasets import load_digits

    digit = torch.tensor(load_digits().images[0]).repeat_interleave(2, 0).repeat_interleave(2, 1) > 4
    assert rle_encode(digit.numpy()) == "X12>0HR12TO00000LJ8200N20n0"
    decoded = data_vision.decode_rle({"counts": "X12>0HR12TO00000LJ8200N20n0", "size": [16, 16]}, 16, 16, "x")
    assert torch.equal(decoded, digit) and int(decoded.sum()) == 112
    two = torch.zeros(20, 30, dtype=torch.bool)
    two[3:9, 5:25], two[12:18, 2:4] = True, True
    rle = "d16>0;0E0000000000000000000000000000000000000Q3"
    assert torch.equal(data_vision.decode_rle({"counts": rle}, 20, 30, "x"), two)
    assert not data_vision.decode_rle({"counts": [600]}, 20, 30, "x").any()
    polygon = data_vision._polygon_mask([[3.0, 2.0, 17.5, 4.0, 12.0, 15.0, 2.5, 11.0]], 1, 1, 20, "x")
    assert abs(int(polygon.sum()) - 126) <= 3  # pycocotools: 126 pixels; the centre rule differs at the boundary


def test_coco_detection_and_mask_batches(models: dict[str, Path], scenes: Path) -> None:
    doc = json.loads(scenes.read_text())
    form, _ = _form(models["yolo_detector"], "yolo_boxes", *TINY_YOLO)
    assert form.kind == "object_detection"
    splits = data.prepare(data.DataOptions(str(scenes.parent)), form, scenes.parent / "run", None)
    assert splits.state["classes"] == ["0", "1", "2", "3"] and sum(splits.state["items"].values()) == 300
    rid = splits.state["split"]["train"][0]
    image_id = int(rid.split(":")[1])
    anns = [a for a in doc["annotations"] if a["image_id"] == image_id]
    item = splits.train[0]
    scale = 64 / 48
    assert item["image"].shape == (1, 64, 64)
    assert int((item["labels"] >= 0).sum()) == len(anns)
    for a, box, label in zip(anns, item["boxes"], item["labels"]):
        x, y, w, h = a["bbox"]
        assert box.tolist() == pytest.approx([x * scale, y * scale, (x + w) * scale, (y + h) * scale])
        assert int(label) == a["category_id"] - 1

    seg_form, seg_model = _form(models["resnet_segmentation"], "seg_masks", *TINY_SEG)
    assert seg_form.kind == "semantic_segmentation"
    seg = data.prepare(data.DataOptions(str(scenes)), seg_form, scenes.parent / "run", None, seg_model)
    assert seg.state["classes"] == ["background", "0", "1", "2", "3"]
    mask = seg.get("train")[0]["mask"]
    assert mask.shape == (128, 128) and set(mask.unique().tolist()) <= {0, 1, 2, 3, 4}
    assert {int(v) - 1 for v in mask.unique() if v} == {a["category_id"] - 1 for a in anns}

    inst_form, _ = _form(models["maskformer_instance"], "inst_masks", *TINY_MASKFORMER)
    assert inst_form.kind == "instance_segmentation"
    inst = data.prepare(data.DataOptions(str(scenes)), inst_form, scenes.parent / "run", None)
    item = inst.train[0]
    n = int((item["labels"] >= 0).sum())
    assert n == len(anns) and item["masks"].shape[1:] == (64, 64)
    for a, m in zip(anns, item["masks"][:n]):  # each mask lies in its (scaled) box
        ys, xs = torch.nonzero(m, as_tuple=True)
        x, y, w, h = a["bbox"]
        assert xs.min() >= math.floor(x * scale) - 1 and xs.max() <= math.ceil((x + w) * scale)
        assert ys.min() >= math.floor(y * scale) - 1 and ys.max() <= math.ceil((y + h) * scale)


@pytest.mark.slow
def test_detector_learns_digit_scenes(models: dict[str, Path], scenes: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = models["yolo_detector"]
    assert _train(folder, "--data", str(scenes), "--steps", "100", "--batch-size", "16", "--lr", "3e-3",
                  "--eval-every", "50", "--augment", "horizontal_flip", "--run-name", "scenes", *TINY_YOLO) == 0
    run = folder / "runs" / "scenes"
    val = records(run, "val")
    assert val[0]["map_50"] < 0.02 and val[-1]["map_50"] > 0.1, val  # measured 0.0014 -> 0.252
    capsys.readouterr()
    assert evaluate_script.main(["--checkpoint", str(run / "last"), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["predictions"] == 30 and result["metrics"]["map_50"] > 0.1, result  # measured 0.316


def test_augmented_runs_repeat_and_resume_exactly(models: dict[str, Path], scenes: Path) -> None:
    """Augmentation draws from torch's generator, which checkpoints keep: a run stopped at step 2 and resumed to 4
    takes the same steps, loss for loss, as one run of 4 (constant schedule, so --steps may change on resume)."""
    doc = json.loads(scenes.read_text())  # how many digits each canvas shows, from 1 to 3
    count = {im["id"]: 0 for im in doc["images"]}
    for a in doc["annotations"]:
        count[a["image_id"]] += 1
    listing = scenes.parent / "counts.csv"
    listing.write_text("path,label\n" + "".join(f"images/{i:04d}.png,{n}\n" for i, n in count.items()))
    folder = models["resnet50"]
    tiny = ["--set", "image_size=32", "--set", "channels=1", "--set", "width=8", "--set", "depths=1,1,1,1",
            "--set", "expansion=2", "--set", "num_classes=4"]
    common = ["--data", str(listing), "--batch-size", "8", "--schedule", "constant", "--warmup", "0",
              "--eval-every", "100", "--augment", "horizontal_flip,vertical_flip,random_crop,random_resized_crop,"
              "color_jitter", *tiny]
    assert _train(folder, *common, "--steps", "4", "--run-name", "aug_a") == 0
    assert _train(folder, *common, "--steps", "2", "--run-name", "aug_b") == 0
    assert _train(folder, *common, "--steps", "4", "--run-name", "aug_b", "--resume") == 0
    runs = folder / "runs"
    losses = [[r["loss"] for r in records(runs / name, "train")] for name in ("aug_a", "aug_b")]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
    plain = ["--data", str(listing), "--batch-size", "8", "--schedule", "constant", "--warmup", "0", "--eval-every",
             "100", "--steps", "2", "--run-name", "aug_none", *tiny]
    assert _train(folder, *plain) == 0
    assert [r["loss"] for r in records(runs / "aug_none", "train")] != losses[0][:2]  # the augmentation did something


@pytest.mark.slow
def test_segmenter_beats_all_background(models: dict[str, Path], scenes: Path) -> None:
    folder = models["resnet_segmentation"]
    assert _train(folder, "--data", str(scenes), "--steps", "100", "--batch-size", "16", "--lr", "1e-2",
                  "--eval-every", "50", "--run-name", "scenes", *TINY_SEG) == 0
    last = records(folder / "runs" / "scenes", "val")[-1]
    # predicting the background everywhere: IoU = its share of the pixels for it, 0 for the 4 digit classes
    assert last["mean_iou"] > last["pixel_accuracy"] / 5 + 0.02, last  # measured 0.231 against 0.181


def test_instance_segmenter_trains_and_evaluates_over_the_split(models: dict[str, Path], scenes: Path) -> None:
    folder = models["maskformer_instance"]
    assert _train(folder, "--data", str(scenes), "--steps", "4", "--batch-size", "8", "--eval-every", "4",
                  "--run-name", "scenes", *TINY_MASKFORMER) == 0
    last = records(folder / "runs" / "scenes", "val")[-1]
    assert {"mask_map_50", "mean_matched_iou"} <= set(last) and last["predictions"] == 30


TINY_CAPTIONER = ["--set", "image_size=8", "--set", "patch_size=4", "--set", "channels=1", "--set", "vision_layers=1",
                  "--set", "vision_width=32", "--set", "vision_heads=2", "--set", "vocab=300", "--set", "context=16",
                  "--set", "layers=1", "--set", "d_model=32", "--set", "heads=2"]


def test_image_text_pairs_frame_captions_for_captioners_and_clip(models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("sklearn.datasets")
    pytest.importorskip("tokenizers")
    captions = write_digit_captions(tmp_path / "caps", per_class=4)
    form, model = _form(models["vlm_captioner"], "captioner_pairs", *TINY_CAPTIONER)
    assert form.kind == "image_text"
    splits = data.prepare(data.DataOptions(str(captions)), form, tmp_path / "run", None, model)
    eos = splits.state["eos_id"]
    assert eos == splits.state["vocab_size"] - 1 and splits.state["starts_with_eos"]  # the largest id
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "run" / "tokenizer.json"))
    rows = {f"captions.jsonl:{k}": json.loads(line) for k, line in enumerate(captions.read_text().splitlines(), 1)}
    item, rid = splits.train[0], splits.state["split"]["train"][0]
    ids = item["text"].tolist()
    assert ids[0] == eos and tok.decode(ids[1 : ids.index(eos, 1)]) == rows[rid]["text"]
    assert set(ids[ids.index(eos, 1) :]) == {eos} and item["image"].shape == (1, 8, 8)
    clip_form, clip = _form(models["clip_vit_b_32"], "clip_pairs", *TINY_CAPTIONER[:6], "--set", "vocab=300",
                            "--set", "context=16")
    assert clip_form.kind == "image_text"
    pairs = data.prepare(data.DataOptions(str(captions)), clip_form, tmp_path / "clip", None, clip)
    first = pairs.train[0]["text"].tolist()
    assert not pairs.state["starts_with_eos"] and first.index(pairs.state["eos_id"]) == first.index(max(first))


def test_captioner_trains_on_digit_captions(models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("sklearn.datasets")
    captions = write_digit_captions(tmp_path / "caps")
    folder = models["vlm_captioner"]
    assert _train(folder, "--data", str(captions), "--steps", "30", "--batch-size", "32", "--lr", "3e-3",
                  "--eval-every", "30", "--run-name", "caps", *TINY_CAPTIONER) == 0
    val = records(folder / "runs" / "caps", "val")
    assert val[-1]["perplexity"] < val[0]["perplexity"] / 10, val  # measured 310 -> 9.2


# ----------------------------------------------------------------------------------- point clouds, graphs


def test_point_cloud_readers_agree(tmp_path: Path) -> None:
    import numpy as np

    pts = np.array([[0.0, 1.0, 2.0], [3.5, -4.0, 0.25], [1e-3, 2.0, -7.0]], dtype=np.float32)
    np.save(tmp_path / "a.npy", pts)
    np.save(tmp_path / "b.npy", pts.astype(np.float64))
    write_ply(tmp_path / "c.ply", pts, binary=False)
    write_ply(tmp_path / "d.ply", pts, binary=True)
    for name in ("a.npy", "b.npy", "c.ply", "d.ply"):
        assert torch.allclose(data_points.read_points(tmp_path / name, 3), torch.from_numpy(pts)), name
    fitted = data_points._fit(torch.from_numpy(pts), 8, 0, "x")
    assert fitted.shape == (8, 3) and fitted.norm(dim=-1).max() == pytest.approx(1.0)


def test_pointnet_learns_digit_clouds(models: dict[str, Path], clouds: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = models["pointnet"]
    assert _train(folder, "--data", str(clouds), "--steps", "60", "--batch-size", "32", "--lr", "3e-3",
                  "--eval-every", "60", "--run-name", "clouds", *TINY_POINTNET) == 0
    run = folder / "runs" / "clouds"
    state = json.loads((run / "data.json").read_text())
    assert state["items"] == {"train": 480, "val": 60, "test": 60} and state["filled_up"] == 600
    assert records(run, "val")[-1]["accuracy"] > 0.5  # 10 classes: chance 0.1; measured 0.82
    capsys.readouterr()
    assert evaluate_script.main(["--checkpoint", str(run / "last"), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] > 0.5  # measured 0.767


def test_graph_batches_join_graphs_and_pad_the_labels(tmp_path: Path) -> None:
    path = write_digit_graphs(tmp_path / "g.jsonl", per_class=4, classes=(0, 1, 2))
    form = data.Form("graph_classification", (), {"features": 3, "graphs": 8, "num_classes": 3})
    splits = data.prepare(data.DataOptions(str(path)), form, tmp_path / "run", None)
    ds = splits.train
    batch = ds.collate([ds[0], ds[1], ds[2]])
    sizes = [len(ds[i]["graph_nodes"]) for i in range(3)]
    assert batch["graph_nodes"].shape == (sum(sizes), 3) and batch["label"][3:].eq(-100).all()
    assert batch["graph_batch"].bincount().tolist() == sizes
    assert int(batch["graph_edges"][:, batch["graph_batch"][batch["graph_edges"][0]] == 1].min()) == sizes[0]
    assert data.target_count(batch) == 3
    with pytest.raises(data.DataError, match="a batch of 9 graphs, but the model classifies graphs = 8 per batch"):
        ds.collate([ds[0]] * 9)


@pytest.mark.slow
def test_graph_classifier_learns_digit_graphs(models: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("sklearn.datasets")
    path = write_digit_graphs(tmp_path / "digits.jsonl")
    folder = models["graph_classifier"]
    assert _train(folder, "--data", str(path), "--steps", "300", "--batch-size", "32", "--lr", "1e-2",
                  "--weight-decay", "0", "--eval-every", "150", "--run-name", "graphs", "--set", "features=3",
                  "--set", "num_classes=10") == 0
    assert records(folder / "runs" / "graphs", "val")[-1]["accuracy"] > 0.3  # chance 0.1; measured 0.47


# ------------------------------------------------------------------------------------------------- text


def test_parquet_and_arrow_text_read_as_jsonl(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from training_helpers import GPL

    if not GPL.is_file():
        pytest.skip("base-files GPL-3 text is not here")
    paras = [p for p in GPL.read_text().split("\n\n") if p.strip()][:60]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"body": p}) + "\n" for p in paras))
    table = datasets.Dataset.from_dict({"body": paras, "n": list(range(len(paras)))})
    table.to_parquet(str(tmp_path / "c.parquet"))
    table.save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    form = data.Form("lm", ("text",), {"vocab": 300})
    streams = []
    for k, path in enumerate((tmp_path / "c.jsonl", tmp_path / "c.parquet", arrow)):
        s = data.prepare(data.DataOptions(str(path), block_size=16, text_field="body"), form, tmp_path / f"run{k}", None)
        streams.append(s)
        assert sum(len(s.state["split"][k]) for k in data.SPLITS) == len(paras)
    assert torch.equal(streams[1].train.stream, streams[2].train.stream)
    assert len(streams[0].train.stream) == len(streams[1].train.stream)  # same items (ids differ: lines vs rows)


# ----------------------------------------------------------------------------------- split-level metrics


_MOD: dict[str, object] = {}


def map_50(detections, gt_boxes, gt_labels):  # type: ignore[no-untyped-def]
    """The generated model's map_50 (bound in the module of the stub's metrics(), as in model.py)."""
    return _MOD["map_50"](detections, gt_boxes, gt_labels)  # type: ignore[operator]


class _Detector(torch.nn.Module):
    """A stand-in detector: one detection per image, read from the batch (`found`: box, score, class)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def loss(self, batch):  # type: ignore[no-untyped-def]
        return self.w * 0

    def metrics(self, batch):  # type: ignore[no-untyped-def]
        found = batch["found"]
        detections = [{"boxes": f[None, :4], "scores": f[4:5], "labels": f[5:6].long()} for f in found]
        mean_ap, recall = map_50(detections, batch["boxes"], batch["labels"])
        return {"map_50": mean_ap, "recall_50": recall}


class _Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w

    def loss(self, batch):  # type: ignore[no-untyped-def]
        return torch.nn.functional.cross_entropy(self(batch["x"]), batch["label"])

    def metrics(self, batch):  # type: ignore[no-untyped-def]
        pred, label = self(batch["x"]).argmax(-1), batch["label"]
        classes = torch.arange(3)[:, None]
        tp = ((pred == classes) & (label == classes)).sum(-1).float()
        fp = ((pred == classes) & (label != classes)).sum(-1).float()
        fn = ((pred != classes) & (label == classes)).sum(-1).float()
        present = (label == classes).any(-1) | (pred == classes).any(-1)
        return {"accuracy": (pred == label).float().mean(),
                "macro_f1": (2 * tp / (2 * tp + fp + fn).clamp(min=1))[present].mean()}


def test_map_is_over_the_split_not_a_mean_of_batches(models: dict[str, Path]) -> None:
    _MOD["map_50"] = load_module(models["yolo_detector"] / "model.py", "yolo_map").map_50
    box = [10.0, 10.0, 20.0, 20.0]
    # image 0: its object found (score 0.9); image 1: a miss elsewhere, scored higher (0.95); one class
    ds = data.TensorItems({"boxes": torch.tensor([[box], [box]]), "labels": torch.tensor([[0], [0]]),
                           "found": torch.tensor([[*box, 0.9, 0], [30.0, 30.0, 40.0, 40.0, 0.95, 0]])})
    per_batch, _ = loop.evaluate(_Detector(), ds, 1, loop.Dist())
    split, count = split_metrics.evaluate(_Detector(), ds, 1, loop.Dist())
    assert per_batch["map_50"] == pytest.approx(0.5)  # AP 1 and AP 0
    # over both images: the miss ranks first (precision 0, then 1/2 at recall 1/2): AP = 1/2 x 1/2
    assert split["map_50"] == pytest.approx(0.25) and split["recall_50"] == pytest.approx(0.5) and count == 2


@pytest.mark.parametrize("name, overrides, keys", [
    ("yolo_detector", TINY_YOLO, ("map_50", "recall_50")),
    ("maskformer_instance", TINY_MASKFORMER, ("mask_map_50", "mean_matched_iou")),
])
def test_generated_models_metrics_do_not_depend_on_the_batching(models: dict[str, Path], scenes: Path, name: str,
                                                                 overrides: list[str], keys: tuple[str, ...]) -> None:
    """The generated metrics() (under @torch.no_grad) feed the split's accumulator: batches of 1 and of 7 give the
    same values, which for boxes are the module's map_50 over every image at once."""
    form, model = _form(models[name], f"{name}_batching", *overrides)
    model.eval()
    full = data.prepare(data.DataOptions(str(scenes)), form, scenes.parent / "run", None, model).val
    val = data_vision.VisionItems({k: v[:12] for k, v in full.tensors.items()})  # type: ignore[attr-defined]
    one, _ = split_metrics.evaluate(model, val, 1, loop.Dist())
    seven, _ = split_metrics.evaluate(model, val, 7, loop.Dist())
    per_batch, _ = loop.evaluate(model, val, 1, loop.Dist())
    assert all(one[k] == pytest.approx(seven[k], abs=1e-6) for k in keys), (one, seven)
    assert any(one[k] != pytest.approx(per_batch[k], abs=1e-6) for k in keys), (one, per_batch)
    if name == "yolo_detector":
        mod = sys.modules[type(model).__module__]
        images = torch.stack([val[i]["image"] for i in range(len(val))])
        with torch.no_grad():
            found = model.detect(images, score_threshold=0.001, iou_threshold=0.6)
        ap, recall = mod.map_50(found, val.tensors["boxes"], val.tensors["labels"])
        assert one["map_50"] == pytest.approx(float(ap)) and one["recall_50"] == pytest.approx(float(recall))


def test_macro_f1_and_accuracy_are_over_the_split() -> None:
    eye = torch.eye(3) * 5
    # batch 1: two items of class 0, both right; batch 2: class 1 predicted as 2, class 2 right
    ds = data.TensorItems({"x": torch.stack([eye[0], eye[0], eye[2], eye[2]]), "label": torch.tensor([0, 0, 1, 2])})
    per_batch, _ = loop.evaluate(_Classifier(), ds, 2, loop.Dist(), count_of=data.target_count)
    split, _ = split_metrics.evaluate(_Classifier(), ds, 2, loop.Dist(), count_of=data.target_count)
    assert split["accuracy"] == pytest.approx(0.75) == per_batch["accuracy"]
    # per class over the split: F1(0) = 1, F1(1) = 0, F1(2) = 2/3 -> 5/9; batch means: (1 + (0 + 2/3) / 2) / 2
    assert split["macro_f1"] == pytest.approx(5 / 9) and per_batch["macro_f1"] == pytest.approx(2 / 3)


def test_mean_iou_is_over_the_split(models: dict[str, Path]) -> None:
    mod = load_module(models["resnet_segmentation"] / "model.py", "seg_iou")
    model = mod.build_model(mod.Config(image_size=32, channels=1, width=8, depths=(1, 1, 1, 1), expansion=2,
                                       num_classes=3)).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(6, 1, 32, 32, generator=g)
    masks = torch.randint(0, 3, (6, 32, 32), generator=g)
    ds = data.TensorItems({"image": images, "mask": masks})
    split, _ = split_metrics.evaluate(model, ds, 2, loop.Dist(), count_of=data.target_count)
    with torch.no_grad():
        pred = model(images).argmax(1)
    ious = [((pred == c) & (masks == c)).sum() / ((pred == c) | (masks == c)).sum() for c in range(3)
            if ((pred == c) | (masks == c)).any()]
    assert split["mean_iou"] == pytest.approx(float(torch.stack(ious).mean()))
    assert split["pixel_accuracy"] == pytest.approx(float((pred == masks).float().mean()))


# ------------------------------------------------------------------------------------ one-line data errors


IMAGES = {"image_size": 8, "channels": 1, "num_classes": 2}
BOXES = {"image_size": 8, "channels": 1, "num_classes": 2}
POINTS = {"points": 4, "coords": 3, "num_classes": 2}
GRAPHS = {"features": 2, "graphs": 4, "num_classes": 2}
TEXT = {"vocab": 300}
PNG = "png"  # a file written as a real 8 x 8 PNG (below)
COCO_IMAGES = [{"id": 1, "file_name": "a.png", "width": 8, "height": 8},
               {"id": 2, "file_name": "b.png", "width": 8, "height": 8},
               {"id": 3, "file_name": "c.png", "width": 8, "height": 8}]
CATS = [{"id": 7, "name": "seven"}]


def _coco(*annotations: dict, images: list | None = None, categories: list | None = None) -> str:
    return json.dumps({"images": COCO_IMAGES if images is None else images, "annotations": list(annotations),
                       "categories": CATS if categories is None else categories})


def _ann(**kw: object) -> dict:
    return {"image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 4], "iscrowd": 0, **kw}


SCENE = {"a.png": PNG, "b.png": PNG, "c.png": PNG}
NPY_HEADER = b"\x93NUMPY\x01\x00" + struct.pack("<H", 70) + b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }".ljust(69) + b"\n"
PLY_HEAD = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
G1 = {"x": [[0.0, 1.0], [1.0, 0.0]], "edges": [[0, 1]], "y": 0}
PAIRS = {"image_size": 8, "channels": 1, "vocab": 300, "context": 5}

# (kind, Config, files under tmp_path (text, bytes, PNG), --data, DataOptions, message); @ is tmp_path, and a
# message ending in "(" is a prefix
DATA_ERRORS = {
    "list-no-label-column": ("image_classification", IMAGES, {"l.csv": "path,y\na.png,0\n", "a.png": PNG}, "l.csv", {},
                             "@/l.csv: no column `label`; expected the columns path and label (columns are path, y)"),
    "list-missing-image": ("image_classification", IMAGES, {"l.csv": "path,label\nnone.png,0\n"}, "l.csv", {},
                           "@/l.csv:2: image file `none.png` not found (relative to @)"),
    "list-empty-cell": ("image_classification", IMAGES, {"l.csv": "path,label\na.png, \n", "a.png": PNG}, "l.csv", {},
                        "@/l.csv:2: empty `path` or `label`; expected a file path and its label"),
    "list-jsonl-not-json": ("image_classification", IMAGES, {"l.jsonl": "{oops\n"}, "l.jsonl", {},
                            "@/l.jsonl:1: not valid JSON ("),
    "list-jsonl-no-path": ("image_classification", IMAGES, {"l.jsonl": '{"label": 1}\n'}, "l.jsonl", {},
                           "@/l.jsonl:1: expected an object with a string `path` and a `label` (class id or name)"),
    "list-jsonl-empty": ("image_classification", IMAGES, {"l.jsonl": "\n"}, "l.jsonl", {},
                         '@/l.jsonl: no rows; expected one {"path": ..., "label": ...} per line'),
    "list-unseen-label": ("image_classification", IMAGES,
                          {"d/train.csv": "path,label\na.png,cat\nb.png,dog\nc.png,cat\na.png,dog\n",
                           "d/test.csv": "path,label\na.png,cow\n", "d/a.png": PNG, "d/b.png": PNG, "d/c.png": PNG},
                          "d", {}, "@/d/test.csv:2: label `cow` is not one of the 2 training classes"),
    "list-too-many-classes": ("image_classification", IMAGES,
                              {"l.csv": "path,label\na.png,0\nb.png,1\nc.png,2\n", **SCENE}, "l.csv", {},
                              "@/l.csv: 3 classes, but the model has num_classes = 2"),
    "list-and-folders": ("image_classification", IMAGES, {"d/train.csv": "path,label\n", "d/val/a/0.png": PNG}, "d",
                         {}, "@/d: train, val mix image lists and class folders; expected one or the other for every "
                         "split"),
    "augment-unknown": ("image_classification", IMAGES, {"l.csv": "path,label\na.png,0\n", "a.png": PNG}, "l.csv",
                        {"augment": ["cutmix"]},
                        "@/l.csv: augmentation `cutmix` is not supported; expected some of horizontal_flip, "
                        "vertical_flip, random_crop, random_resized_crop, color_jitter (--augment)"),
    "augment-not-images": ("lm", TEXT, {"c.txt": "a\n\nb\n\nc"}, "c.txt", {"augment": ["horizontal_flip"]},
                           "@/c.txt: --augment horizontal_flip applies to images and point clouds; this model's "
                           "batches are {text}"),
    "coco-not-json": ("object_detection", BOXES, {"c.json": "{"}, "c.json", {}, "@/c.json: not valid JSON ("),
    "coco-no-lists": ("object_detection", BOXES, {"c.json": '{"images": []}'}, "c.json", {},
                      "@/c.json: expected a COCO object with the lists `images`, `annotations`, `categories`"),
    "coco-no-images": ("object_detection", BOXES, {"c.json": _coco(images=[])}, "c.json", {},
                       "@/c.json: `images` is empty; expected the annotated images"),
    "coco-image-entry": ("object_detection", BOXES, {"c.json": _coco(images=[{"id": "x"}])}, "c.json", {},
                         "@/c.json: images[0] has no integer `id` and string `file_name`"),
    "coco-duplicate-image": ("object_detection", BOXES, {"c.json": _coco(images=COCO_IMAGES + COCO_IMAGES[:1])},
                             "c.json", {}, "@/c.json: images[3]: image id 1 appears twice"),
    "coco-no-categories": ("object_detection", BOXES, {"c.json": _coco(categories=[])}, "c.json", {},
                           "@/c.json: `categories` is empty; expected the object classes"),
    "coco-category-entry": ("object_detection", BOXES, {"c.json": _coco(categories=[{"name": "x"}])}, "c.json", {},
                            "@/c.json: categories[0] has no integer `id`"),
    "coco-unknown-image": ("object_detection", BOXES, {"c.json": _coco(_ann(image_id=9))}, "c.json", {},
                           "@/c.json: annotations[0]: image_id 9 is not among the images"),
    "coco-unknown-category": ("object_detection", BOXES, {"c.json": _coco(_ann(category_id=3))}, "c.json", {},
                              "@/c.json: annotations[0]: category_id 3 is not among the categories"),
    "coco-annotation-not-object": ("object_detection", BOXES, {"c.json": _coco([])}, "c.json", {},  # type: ignore[arg-type]
                                   "@/c.json: annotations[0] is not an object"),
    "coco-bad-bbox": ("object_detection", BOXES, {"c.json": _coco(_ann(bbox=[1, 2, 3])), **SCENE}, "c.json", {},
                      "@/c.json: annotations[0] (image 1): `bbox` is [1, 2, 3]; expected [x, y, width, height] numbers"),
    "coco-bbox-outside": ("object_detection", BOXES, {"c.json": _coco(_ann(bbox=[4, 4, 9, 2])), **SCENE}, "c.json", {},
                          "@/c.json: annotations[0] (image 1): bbox [4, 4, 9, 2] is empty or outside the 8x8 image; "
                          "expected a box inside it"),
    "coco-image-missing": ("object_detection", BOXES, {"c.json": _coco(_ann())}, "c.json", {},
                           "@/c.json: image 1: image file `@/a.png` not found"),
    "coco-image-size": ("object_detection", BOXES,
                        {"c.json": _coco(images=[{**i, "width": 10} for i in COCO_IMAGES]), **SCENE}, "c.json", {},
                        "@/c.json: image 1 (`a.png`) is 8x8, but its entry says 10x8"),
    "coco-too-many-categories": ("object_detection", BOXES,
                                 {"c.json": _coco(categories=[{"id": k} for k in range(3)]), **SCENE}, "c.json", {},
                                 "@/c.json: 3 categories, but the model has num_classes = 2"),
    "coco-semantic-background": ("semantic_segmentation", BOXES,
                                 {"c.json": _coco(categories=[{"id": k} for k in range(2)]), **SCENE}, "c.json", {},
                                 "@/c.json: 2 categories and the background, but the model has num_classes = 2"),
    "coco-two-files": ("object_detection", BOXES, {"d/a.json": "{}", "d/b.json": "{}"}, "d", {},
                       "@/d: expected one COCO .json file in the folder (or train.json, val.json, test.json), found 2"),
    "coco-no-segmentation": ("instance_segmentation", BOXES, {"c.json": _coco(_ann()), **SCENE}, "c.json", {},
                             "@/c.json: annotations[0] (image 1): `segmentation` is NoneType; expected polygons or RLE"),
    "coco-bad-polygon": ("instance_segmentation", BOXES, {"c.json": _coco(_ann(segmentation=[[1, 2, 3]])), **SCENE},
                         "c.json", {},
                         "@/c.json: annotations[0] (image 1): polygon 0 is not a list of at least 3 x, y pairs"),
    "coco-rle-sum": ("instance_segmentation", BOXES,
                     {"c.json": _coco(_ann(segmentation={"size": [8, 8], "counts": [3, 4]})), **SCENE}, "c.json", {},
                     "@/c.json: annotations[0] (image 1): the RLE runs cover 7 pixels; expected 8 x 8 = 64"),
    "coco-rle-size": ("instance_segmentation", BOXES,
                      {"c.json": _coco(_ann(segmentation={"size": [4, 4], "counts": [16]})), **SCENE}, "c.json", {},
                      "@/c.json: annotations[0] (image 1): RLE size [4, 4]; expected the image's [8, 8]"),
    "coco-rle-counts": ("instance_segmentation", BOXES,
                        {"c.json": _coco(_ann(segmentation={"size": [8, 8], "counts": [1.5]})), **SCENE}, "c.json", {},
                        "@/c.json: annotations[0] (image 1): `counts` is not a list of run lengths or an RLE string"),
    "coco-rle-string-cut": ("instance_segmentation", BOXES,
                            {"c.json": _coco(_ann(segmentation={"size": [8, 8], "counts": "0P"})), **SCENE},
                            "c.json", {}, "@/c.json: annotations[0] (image 1): the RLE string ends inside a number; "
                            "expected COCO's compressed RLE"),
    "coco-unreadable-image": ("object_detection", BOXES, {"c.json": _coco(_ann()), "a.png": b"not a png",
                                                         "b.png": PNG, "c.png": PNG}, "c.json", {},
                              "@/a.png: not a readable image (UnidentifiedImageError); expected PNG/JPEG/..."),
    "coco-category-not-in-train": ("object_detection", BOXES,
                                   {"d/train.json": _coco(), "d/val.json": _coco(categories=[*CATS, {"id": 8}]),
                                    "d/a.png": PNG, "d/b.png": PNG, "d/c.png": PNG}, "d", {},
                                   "@/d/val.json: category 8 is not among the training categories [7]"),
    "pairs-two-lists": ("image_text", PAIRS, {"d/a.jsonl": "", "d/b.jsonl": ""}, "d", {},
                        "@/d: expected one .jsonl of image-text pairs in the folder, found 2"),
    "points-npy-header": ("point_cloud_classification", POINTS,
                          {"p/a/0.npy": b"\x93NUMPY\x01\x00\x04\x00{'a'", "p/a/1.npy": b"", "p/b/2.npy": b""}, "p",
                          {}, "@/p/a/0.npy: unreadable .npy header; expected numpy.save's format"),
    "points-npy-1d": ("point_cloud_classification", POINTS,
                      {"p/a/0.npy": NPY_HEADER.replace(b"(2, 2)", b"(4,)  ") + bytes(16), "p/a/1.npy": b"",
                       "p/b/2.npy": b""}, "p", {},
                      "@/p/a/0.npy: an array of shape (4,); expected (points, coords) in C order"),
    "points-ply-bad-property": ("point_cloud_classification", POINTS,
                                {"p/a/0.ply": PLY_HEAD.replace("property float z", "property quad z"),
                                 "p/a/1.ply": "", "p/b/2.ply": ""}, "p", {},
                                "@/p/a/0.ply: header line `property quad z`; expected `property TYPE NAME`"),
    "points-ply-list-property": ("point_cloud_classification", POINTS,
                                 {"p/a/0.ply": PLY_HEAD.replace("property float z", "property list uchar int z"),
                                  "p/a/1.ply": "", "p/b/2.ply": ""}, "p", {},
                                 "@/p/a/0.ply: the vertex element has a list property; expected scalar properties"),
    "points-list-other-file": ("point_cloud_classification", POINTS,
                               {"l.csv": "path,label\na.txt,0\nb.txt,1\nc.txt,1\n", "a.txt": "x", "b.txt": "x",
                                "c.txt": "x"}, "l.csv", {}, "@/a.txt: not a .npy or .ply file; expected a point cloud"),
    "points-not-a-folder": ("point_cloud_classification", POINTS, {"p.ply": PLY_HEAD}, "p.ply", {},
                            "@/p.ply: not a folder or a .csv/.jsonl list; expected one subfolder of point clouds per "
                            "class"),
    "points-unknown-test-class": ("point_cloud_classification", POINTS,
                                  {"p/train/a/0.npy": b"", "p/train/b/1.npy": b"", "p/test/c/2.npy": b""}, "p", {},
                                  "@/p/test/c: class `c` is not among the training classes ['a', 'b']"),
    "points-list-unseen-label": ("point_cloud_classification", POINTS,
                                 {"d/train.csv": "path,label\nx.npy,a\nx.npy,b\n", "d/test.csv": "path,label\nx.npy,c\n",
                                  "d/x.npy": b""}, "d", {},
                                 "@/d/test.csv:2: label `c` is not one of the 2 training classes"),
    "graphs-json-invalid": ("graph_classification", GRAPHS, {"g.json": "{"}, "g.json", {},
                            "@/g.json: not valid JSON ("),
    "graphs-unseen-label": ("graph_classification", GRAPHS,
                            {"d/train.jsonl": "".join(json.dumps({**G1, "y": y}) + "\n" for y in ("a", "b", "a")),
                             "d/test.jsonl": json.dumps({**G1, "y": "c"}) + "\n"}, "d", {},
                            '@/d/test.jsonl:1: `y` is "c"; expected a class among 2 (0..1, num_classes = 2)'),
    "points-not-npy": ("point_cloud_classification", POINTS,
                       {"p/a/0.npy": b"nope", "p/a/1.npy": b"nope", "p/b/2.npy": b"nope"}, "p", {},
                       "@/p/a/0.npy: not a .npy file (no \\x93NUMPY magic); expected numpy.save's format"),
    "points-npy-dtype": ("point_cloud_classification", POINTS,
                         {"p/a/0.npy": NPY_HEADER.replace(b"<f4", b">f4") + bytes(16), "p/a/1.npy": b"",
                          "p/b/2.npy": b""}, "p", {},
                         "@/p/a/0.npy: dtype '>f4'; expected little-endian float or integer numbers"),
    "points-npy-coords": ("point_cloud_classification", POINTS,
                          {"p/a/0.npy": NPY_HEADER + bytes(16), "p/a/1.npy": b"", "p/b/2.npy": b""}, "p", {},
                          "@/p/a/0.npy: 2 values per point; expected 3 (the model's coords)"),
    "points-npy-short": ("point_cloud_classification", POINTS,
                         {"p/a/0.npy": NPY_HEADER + bytes(8), "p/a/1.npy": b"", "p/b/2.npy": b""}, "p", {},
                         "@/p/a/0.npy: 8 bytes of data; the header's shape (2, 2) needs 16"),
    "points-ply-format": ("point_cloud_classification", POINTS,
                          {"p/a/0.ply": PLY_HEAD.replace("ascii", "binary_big_endian"), "p/a/1.ply": "", "p/b/2.ply": ""},
                          "p", {}, "@/p/a/0.ply: PLY format `binary_big_endian`; expected ascii or binary_little_endian"),
    "points-ply-not-ply": ("point_cloud_classification", POINTS, {"p/a/0.ply": "x", "p/a/1.ply": "", "p/b/2.ply": ""},
                           "p", {}, "@/p/a/0.ply: not a PLY file (no `ply` ... `end_header`)"),
    "points-ply-row": ("point_cloud_classification", POINTS,
                       {"p/a/0.ply": PLY_HEAD + "1 2 3\n4 5\n", "p/a/1.ply": "", "p/b/2.ply": ""}, "p", {},
                       "@/p/a/0.ply: vertex 1 is `4 5`; expected 3 numbers"),
    "points-ply-faces-first": ("point_cloud_classification", POINTS,
                               {"p/a/0.ply": PLY_HEAD.replace("element vertex 2", "element face 1\nproperty list uchar "
                                                              "int vertex_indices\nelement vertex 2"),
                                "p/a/1.ply": "", "p/b/2.ply": ""}, "p", {},
                               "@/p/a/0.ply: the first element is not `vertex`; expected the points first"),
    "points-ply-two-coords": ("point_cloud_classification", POINTS,
                              {"p/a/0.ply": PLY_HEAD.replace("property float z\n", "") + "1 2\n3 4\n",
                               "p/a/1.ply": "", "p/b/2.ply": ""}, "p", {},
                              "@/p/a/0.ply: 2 vertex properties (x, y); expected at least 3 (the model's coords)"),
    "points-ply-binary-short": ("point_cloud_classification", POINTS,
                                {"p/a/0.ply": PLY_HEAD.replace("ascii", "binary_little_endian").encode() + bytes(12),
                                 "p/a/1.ply": "", "p/b/2.ply": ""}, "p", {},
                                "@/p/a/0.ply: 12 bytes of vertex data; 2 vertices need 24"),
    "points-not-finite": ("point_cloud_classification", POINTS,
                          {"p/a/0.ply": PLY_HEAD + "1 2 3\nnan 0 1\n", "p/a/1.ply": "", "p/b/2.ply": ""}, "p", {},
                          "@/p/a/0.ply: point 1 is [nan, 0.0, 1.0]; expected finite numbers"),
    "points-empty": ("point_cloud_classification", POINTS,
                     {"p/a/0.ply": PLY_HEAD.replace("vertex 2", "vertex 0"), "p/a/1.ply": "", "p/b/2.ply": ""}, "p", {},
                     "@/p/a/0.ply: no points; expected at least one"),
    "points-no-class-folders": ("point_cloud_classification", POINTS, {"p/0.npy": b""}, "p", {},
                                "@/p: no class subfolders; expected one subfolder of .npy/.ply files per class"),
    "points-no-files": ("point_cloud_classification", POINTS, {"p/a/0.txt": "x"}, "p", {},
                        "@/p: no .npy or .ply files in the class subfolders"),
    "points-too-many-classes": ("point_cloud_classification", POINTS,
                                {"p/a/0.npy": b"", "p/b/1.npy": b"", "p/c/2.npy": b""}, "p", {},
                                "@/p: 3 classes, but the model has num_classes = 2"),
    "points-list-missing": ("point_cloud_classification", POINTS, {"l.csv": "path,label\nx.ply,0\n"}, "l.csv", {},
                            "@/l.csv:2: point cloud file `x.ply` not found (relative to @)"),
    "graphs-not-json": ("graph_classification", GRAPHS, {"g.jsonl": "{\n"}, "g.jsonl", {}, "@/g.jsonl:1: not valid JSON ("),
    "graphs-no-y": ("graph_classification", GRAPHS, {"g.jsonl": '{"x": [[0, 1]]}\n'}, "g.jsonl", {},
                    "@/g.jsonl:1: expected a graph object with `x` (node features), `edges` and `y` (its label)"),
    "graphs-feature-row": ("graph_classification", GRAPHS, {"g.jsonl": json.dumps({**G1, "x": [[0.0], [1.0, 2.0]]})},
                           "g.jsonl", {}, "@/g.jsonl:1: x[0] has 1 values; expected 2 finite numbers (the model's features)"),
    "graphs-empty-x": ("graph_classification", GRAPHS, {"g.jsonl": json.dumps({**G1, "x": []})}, "g.jsonl", {},
                       "@/g.jsonl:1: `x` is not a non-empty list of feature rows"),
    "graphs-edge": ("graph_classification", GRAPHS, {"g.jsonl": json.dumps({**G1, "edges": [[0, 2]]})}, "g.jsonl", {},
                    "@/g.jsonl:1: edges[0] is [0, 2]; expected [source, target] node ids in 0..1"),
    "graphs-edges-not-list": ("graph_classification", GRAPHS, {"g.jsonl": json.dumps({**G1, "edges": 3})}, "g.jsonl",
                              {}, "@/g.jsonl:1: `edges` is not a list of [source, target] pairs"),
    "graphs-y-type": ("graph_classification", GRAPHS, {"g.jsonl": json.dumps({**G1, "y": [1]})}, "g.jsonl", {},
                      "@/g.jsonl:1: `y` is [1]; expected a class id or name"),
    "graphs-too-many-classes": ("graph_classification", GRAPHS,
                                {"g.jsonl": "".join(json.dumps({**G1, "y": k}) + "\n" for k in range(3))}, "g.jsonl",
                                {}, "@/g.jsonl: 3 graph classes, but the model has num_classes = 2"),
    "graphs-json-no-list": ("graph_classification", GRAPHS, {"g.json": '{"x": []}'}, "g.json", {},
                            "@/g.json: expected an object with a list `graphs` (or a .jsonl of one graph per line)"),
    "graphs-json-item": ("graph_classification", GRAPHS, {"g.json": '{"graphs": [3]}'}, "g.json", {},
                         "@/g.json: graphs[0]: expected a graph object with `x` (node features), `edges` and `y` "
                         "(its label)"),
    "graphs-two-files": ("graph_classification", GRAPHS, {"d/a.jsonl": "", "d/b.jsonl": ""}, "d", {},
                         "@/d: expected one graphs .jsonl or .json file in the folder, found 2"),
    "text-parquet-unreadable": ("lm", TEXT, {"c.parquet": b"not parquet"}, "c.parquet", {},
                                "@/c.parquet: not a readable Parquet file ("),
    "pairs-not-json": ("image_text", PAIRS, {"p.jsonl": "{x\n"}, "p.jsonl", {}, "@/p.jsonl:1: not valid JSON ("),
    "pairs-fields": ("image_text", PAIRS, {"p.jsonl": '{"image": "a.png"}\n'}, "p.jsonl", {},
                     "@/p.jsonl:1: expected an object with string fields `image` and `text`"),
    "pairs-empty-text": ("image_text", PAIRS, {"p.jsonl": '{"image": "a.png", "text": " "}\n'}, "p.jsonl", {},
                         "@/p.jsonl:1: empty `text`; expected a caption"),
    "pairs-missing-image": ("image_text", PAIRS, {"p.jsonl": '{"image": "a.png", "text": "x"}\n'}, "p.jsonl", {},
                            "@/p.jsonl:1: image file `a.png` not found (relative to @)"),
    "pairs-no-rows": ("image_text", PAIRS, {"p.jsonl": "\n"}, "p.jsonl", {},
                      '@/p.jsonl: no rows; expected one {"image": ..., "text": ...} per line'),
    "pairs-not-jsonl": ("image_text", PAIRS, {"p.csv": "x"}, "p.csv", {},
                        '@/p.csv: not a .jsonl file; expected one {"image": ..., "text": ...} per line'),
    "pairs-caption-too-long": ("image_text", PAIRS,
                               {"p.jsonl": "".join(json.dumps({"image": f"{c}.png", "text": t}) + "\n" for c, t in
                                                   (("a", "one"), ("b", "two"), ("c", "three four five six"))),
                                **SCENE}, "p.jsonl", {},
                               # 19 bytes and 2 <|endoftext|>: one training caption's BPE merges none of them
                               "@/p.jsonl:3: a caption of 21 tokens (framed), longer than the model's context 5"),
}


def _write_png(path: Path) -> None:
    from PIL import Image

    Image.new("L", (8, 8), 128).save(path, format="PNG")


@pytest.mark.parametrize("case", list(DATA_ERRORS))
def test_data_error_is_one_line(case: str, tmp_path: Path) -> None:
    kind, config, files, source, options, message = DATA_ERRORS[case]
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == PNG:
            _write_png(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    form = data.Form(kind, ("text",) if kind == "lm" else (), config)
    with pytest.raises(data.DataError) as e:
        data.prepare(data.DataOptions(str(tmp_path / source), **options), form, tmp_path / "run", None)
    text, expected = str(e.value), message.replace("@", str(tmp_path))
    assert "\n" not in text
    assert text.startswith(expected) if expected.endswith("(") else text == expected, text


def test_parquet_errors_name_the_column_and_row(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"body": ["a", "b", "c"]}).to_parquet(str(tmp_path / "c.parquet"))
    datasets.Dataset.from_dict({"text": ["a", None, "c"]}).to_parquet(str(tmp_path / "d.parquet"))
    form = data.Form("lm", ("text",), TEXT)
    with pytest.raises(data.DataError, match=r"c\.parquet: no column `text` \(--text-field\); columns are body$"):
        data.prepare(data.DataOptions(str(tmp_path / "c.parquet")), form, tmp_path / "run", None)
    with pytest.raises(data.DataError, match=r"d\.parquet: row 1: column `text` is NoneType; expected a string$"):
        data.prepare(data.DataOptions(str(tmp_path / "d.parquet")), form, tmp_path / "run", None)


def test_augment_flag_takes_a_list_of_names(tmp_path: Path) -> None:
    assert train_script.parser().parse_args(["--augment", "flip,color_jitter"]).augment == ["flip", "color_jitter"]
    assert train_script.parser().parse_args([]).augment == []
    spec = tmp_path / "training.json"  # the compiler writes the spec's list under `augment`
    spec.write_text(json.dumps({"augment": ["random_resized_crop", "horizontal_flip"]}))
    assert train_script.spec_defaults(train_script.parser(), spec) == {
        "augment": ["random_resized_crop", "horizontal_flip"]}


def test_bad_data_from_train_py_is_one_line(models: dict[str, Path], scenes: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert _train(models["yolo_detector"], "--data", str(scenes), "--augment", "mixup", "--steps", "1",
                  *TINY_YOLO) == 1
    err = capsys.readouterr().err
    assert err == f"error: {scenes}: augmentation `mixup` is not supported; expected some of horizontal_flip, " \
                  "vertical_flip, random_crop, random_resized_crop, color_jitter (--augment)\n"
