"""More training data and split metrics: anomaly detection (tables and images; ROC-AUC and average precision over
the split), panoptic quality over the split, visual question answering, point-cloud augmentation, graph edge
features, speech JSONL.

Real data only: scikit-learn's breast-cancer table and handwritten digits (as images, MVTec-style folders, COCO
scenes, point clouds, graphs with edge features and question-answer pairs, tests/training_helpers.py and below),
Zachary's karate club with its tie strengths (networkx), and speech that espeak-ng says.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from conftest import load_module
from metagen_backends.pytorch.training import data, loop, split_metrics
from metagen_backends.pytorch.training import evaluate as evaluate_script
from metagen_backends.pytorch.training import train as train_script
from training_helpers import SENTENCES, TINY_WHISPER, model_folder, one_thread, records, write_csv, write_speech

_one_thread = pytest.fixture(autouse=True)(one_thread)


def _train(folder: Path, *args: str) -> int:
    return train_script.main(["--model", str(folder / "model.py"), *args])


def _form(folder: Path, name: str, *overrides: str) -> tuple[data.Form, Any]:
    mod = load_module(folder / "model.py", name)
    config = mod.Config(**loop.parse_overrides(mod.Config, [o for o in overrides if o != "--set"]))
    model = mod.build_model(config)
    return data.detect_form(model, mod), model


def _trained(folder: Path, run: Path, name: str, *overrides: str) -> tuple[data.Form, Any, dict[str, Any]]:
    """The model's data form, the model with the weights of the run's last checkpoint (eval mode), and the run's
    data.json."""
    form, model = _form(folder, name, *overrides)
    loop.load_checkpoint(run / "last", model)
    model.eval()
    return form, model, json.loads((run / "data.json").read_text())


PNG = b"<an 8 x 8 grey PNG>"  # a file's content in the tables below: _write_files writes a real PNG there


def _write_files(root: Path, files: Mapping[str, Any]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == PNG:
            from PIL import Image

            Image.new("L", (8, 8), 128).save(path, format="PNG")
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _error(form: data.Form, source: Path, run: Path, **options: Any) -> str:
    """The one-line DataError that preparing `source` for `form` raises."""
    with pytest.raises(data.DataError) as e:
        data.prepare(data.DataOptions(str(source), **options), form, run, None)
    text = str(e.value)
    assert "\n" not in text
    return text


def _check_error(form: data.Form, files: Mapping[str, Any], source: str, message: str, tmp_path: Path) -> str:
    """Write `files` under tmp_path, prepare `source` for `form`: its DataError is `message` (@ the folder), or starts
    with it where it ends in "(" (a parser's own words follow) or "of " (a measured count follows)."""
    _write_files(tmp_path, files)
    text, expected = _error(form, tmp_path / source, tmp_path / "run"), message.replace("@", str(tmp_path))
    assert text.startswith(expected) if expected.endswith(("(", "of ")) else text == expected, text
    return text


# ------------------------------------------------------------------------------------------ anomaly detection


def write_cancer_anomalies(path: Path) -> tuple[Path, Any]:
    """scikit-learn's breast-cancer table (569 rows, 30 features) as an anomaly set: `is_anomaly` 1 for the 212
    malignant tumours, 0 for the 357 benign ones; returns the path and the labels (numpy)."""
    from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]

    d = load_breast_cancer()
    anomaly = 1 - d.target  # sklearn: 0 malignant, 1 benign
    header: list[object] = [*(f"f{k}" for k in range(d.data.shape[1])), "is_anomaly"]
    write_csv(path, [header] +
              [[repr(float(v)) for v in row] + [int(a)] for row, a in zip(d.data, anomaly)])
    return path, anomaly


def test_roc_auc_and_average_precision_equal_sklearns() -> None:
    """On a real feature (breast-cancer `mean radius`, many ties) as the score of malignancy, and on rounded scores
    with more ties still, and on the perfect and the reversed ranking."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.metrics import average_precision_score, roc_auc_score  # type: ignore[import-untyped]

    d = load_breast_cancer()
    labels = 1 - d.target
    for score in (d.data[:, 0], d.data[:, 0].round(0), d.data[:, 20], labels * 1.0, -labels * 1.0):
        s, y = torch.tensor(score), torch.tensor(labels)
        assert split_metrics.roc_auc(s, y) == pytest.approx(roc_auc_score(labels, score), abs=1e-12)
        assert split_metrics.average_precision(s, y) == pytest.approx(average_precision_score(labels, score),
                                                                     abs=1e-12)
    assert math.isnan(split_metrics.roc_auc(torch.tensor([0.3, 0.1]), torch.tensor([1, 1])))  # no negatives
    assert math.isnan(split_metrics.average_precision(torch.tensor([0.3]), torch.tensor([0])))


SMALL_AE = ["--set", "features=30", "--set", "hidden=16", "--set", "latent=4"]


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_folder(tmp_path_factory.mktemp("models"), "sensor_autoencoder")


def test_tabular_anomaly_data_trains_on_normal_rows(sensor: Path, tmp_path: Path) -> None:
    pytest.importorskip("sklearn.datasets")
    path, anomaly = write_cancer_anomalies(tmp_path / "cancer.csv")
    form, _ = _form(sensor, "anomaly_form", *SMALL_AE)
    assert form.kind == "tabular_anomaly" and form.keys == ("is_anomaly", "tabular")
    splits = data.prepare(data.DataOptions(str(path), target="is_anomaly"), form, tmp_path / "run", None)
    state = splits.state
    # 569 rows split 455 / 57 / 57; the train split's malignant rows are left out of training
    assert len(state["split"]["train"]) == 455 and state["items"]["val"] == state["items"]["test"] == 57
    assert state["anomalies"]["train"] == 0 and state["items"]["train"] == 455 - state["anomalies_left_out_of_train"]
    assert state["anomalies_left_out_of_train"] + state["anomalies"]["val"] + state["anomalies"]["test"] == 212
    assert int(splits.val.tensors["is_anomaly"].sum()) == state["anomalies"]["val"]  # type: ignore[attr-defined]
    rows = {f"cancer.csv:{k + 2}": int(a) for k, a in enumerate(anomaly)}  # line 1 is the header
    assert [rows[r] for r in state["split"]["val"]] == splits.val.tensors["is_anomaly"].tolist()  # type: ignore[attr-defined]


def test_anomaly_metrics_are_over_the_split_and_match_sklearn(sensor: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An autoencoder of the benign tumours scores the malignant ones as anomalies; the validation ROC-AUC is that of
    every item's reconstruction error at once (sklearn's on the same scores), whatever the batch size."""
    pytest.importorskip("sklearn.datasets")
    from sklearn.metrics import average_precision_score, roc_auc_score

    path, _ = write_cancer_anomalies(tmp_path / "cancer.csv")
    assert _train(sensor, "--data", str(path), "--target", "is_anomaly", "--steps", "150", "--batch-size", "32",
                  "--lr", "3e-3", "--weight-decay", "0", "--eval-every", "150", "--run-name", "cancer",
                  *SMALL_AE) == 0
    run = sensor / "runs" / "cancer"
    val = records(run, "val")
    # measured: 1.0 at step 0 (malignant rows lie far from the benign mean even for untrained weights), 0.998 at 150
    assert val[-1]["roc_auc"] > 0.9, val
    capsys.readouterr()
    assert evaluate_script.main(["--checkpoint", str(run / "last"), "--split", "test", "--batch-size", "5"]) == 0
    result = json.loads(capsys.readouterr().out)

    form, model, state = _trained(sensor, run, "anomaly_check", *SMALL_AE)
    splits = data.prepare(data.DataOptions(str(path), target="is_anomaly"), form, run, state)
    test = splits.test
    x, y = test.tensors["tabular"], test.tensors["is_anomaly"]  # type: ignore[attr-defined]
    with torch.no_grad():
        scores = (model(x) - x).pow(2).mean(-1)
    assert result["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(y.numpy(), scores.numpy()), abs=1e-9)
    assert result["metrics"]["average_precision"] == pytest.approx(
        average_precision_score(y.numpy(), scores.numpy()), abs=1e-9)
    one, _ = split_metrics.evaluate(model, test, 1, loop.Dist())
    per_batch, _ = loop.evaluate(model, test, 5, loop.Dist())
    assert one["roc_auc"] == pytest.approx(result["metrics"]["roc_auc"], abs=1e-9)
    assert result["metrics"]["roc_auc"] > 0.9  # measured 0.990 (average precision 0.985)
    assert per_batch["roc_auc"] != pytest.approx(one["roc_auc"], abs=1e-6)  # a mean of batch values is not it (1.0)


def test_anomaly_data_errors_name_the_row(sensor: Path, tmp_path: Path) -> None:
    form = data.Form("tabular_anomaly", ("is_anomaly", "tabular"), {"features": 2})
    _write_files(tmp_path, {"a.csv": "x,y,bad\n1,2,0\n3,4,2\n5,6,0\n7,8,1\n",
                            "b.csv": "x,y,bad\n1,2,1\n3,4,1\n5,6,1\n7,8,1\n"})
    assert _error(form, tmp_path / "a.csv", tmp_path / "run", target="bad") == \
        "a.csv:3: `bad` is `2`; expected 0 (normal) or 1 (anomaly)"
    assert _error(form, tmp_path / "b.csv", tmp_path / "run", target="bad") == \
        f"{tmp_path / 'b.csv'}: every row of the train split has `bad` = 1; expected normal rows (0)"
    one_feature = data.Form("tabular_anomaly", ("is_anomaly", "tabular"), {"features": 1})
    assert _error(one_feature, tmp_path / "a.csv", tmp_path / "run", target="bad,y") == \
        f"{tmp_path / 'a.csv'}: anomaly detection takes one --target column (0 normal, 1 anomaly), got 2"


# ------------------------------------------------------------------------------------- panoptic segmentation


def _segments(*rects: tuple[int, int, int, int, int], size: int = 10) -> tuple[Any, list[int]]:
    """A (size, size) segment-id map painted with rectangles (x, y, w, h, class) in order, and the classes."""
    ids = torch.zeros(size, size, dtype=torch.long)
    for k, (x, y, w, h, _) in enumerate(rects, 1):
        ids[y : y + h, x : x + w] = k
    return ids, [c for *_, c in rects]


def test_panoptic_quality_of_a_hand_computed_case(panoptic: Path) -> None:
    """Two images, classes 0 and 1. Image 1: ground truth A (class 0, 5x4 = 20 px) and B (class 1, 3x3 = 9 px);
    predicted A' (class 0, 20 px) covers 16 px of A and 4 void ones, which the union leaves out (IoU 16/20 = 0.8: a
    match), B' (class 1) 2 px of B (a miss: B' a false positive, B a false negative). Image 2: ground truth C (class
    1, 4x4); predicted C' equal to C (IoU 1) and D' (class 0) on void pixels only (neither TP nor FP: more than half
    of it is void). Class 0: TP 1 (IoU 0.8), FP 0, FN 0 -> PQ 0.8, SQ 0.8, RQ 1. Class 1: TP 1 (IoU 1), FP 1, FN 1
    -> PQ 1/2, SQ 1, RQ 1/2. Means: PQ 0.65, SQ 0.9, RQ 0.75. The generated panoptic_quality(), which split_metrics
    runs once over a split's images, sums per class over its images before it divides."""
    quality = load_module(panoptic / "model.py", "panoptic_hand").panoptic_quality

    def pq_sq_rq(*args: Any) -> list[float]:
        return [float(v) for v in quality(*args, 2)]

    gt1, gc1 = _segments((0, 0, 5, 4, 0), (6, 6, 3, 3, 1))
    pred1, pc1 = _segments((1, 0, 5, 4, 0), (6, 6, 1, 2, 1))  # A' overlaps A in 4 x 4, void 4 px; B' 2 px of B
    gt2, gc2 = _segments((0, 0, 4, 4, 1))
    pred2, pc2 = _segments((0, 0, 4, 4, 1), (6, 6, 3, 3, 0))
    both = pq_sq_rq(torch.stack((pred1, pred2)), [pc1, pc2], torch.stack((gt1, gt2)), [gc1, gc2])
    assert both == pytest.approx([0.65, 0.9, 0.75])
    # image by image (a split's PQ is not the mean of its images' PQ): image 1's class 1 has no TP (PQ = SQ = RQ = 0)
    assert pq_sq_rq(pred1[None], [pc1], gt1[None], [gc1]) == pytest.approx([(0.8 + 0) / 2, (0.8 + 0) / 2, (1 + 0) / 2])
    assert pq_sq_rq(pred2[None], [pc2], gt2[None], [gc2]) == pytest.approx([1.0, 1.0, 1.0])  # class 1 only: perfect
    void = torch.zeros(1, 10, 10, dtype=torch.long)
    assert all(math.isnan(v) for v in pq_sq_rq(void, [[]], void, [[]]))  # no segment at all


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 canvases of 48 x 48 with 1 to 3 handwritten digits 0..3 each, their boxes and RLE masks (COCO)."""
    pytest.importorskip("sklearn.datasets")
    from training_helpers import write_digit_scenes

    return write_digit_scenes(tmp_path_factory.mktemp("scenes"), n=120, size=48)


def test_a_perfect_panoptic_prediction_scores_one(panoptic: Path, scenes: Path, tmp_path: Path) -> None:
    """The digit scenes' own segments as the prediction: PQ = SQ = RQ = 1; one digit given the wrong class in every
    image with two or more: that class loses a TP and gains an FP, the true class an FN."""
    mod = load_module(panoptic / "model.py", "panoptic_perfect")  # the generated segments and panoptic quality
    form = data.Form("instance_segmentation", ("image", "labels", "masks"),
                     {"image_size": 48, "channels": 1, "num_classes": 4})
    splits = data.prepare(data.DataOptions(str(scenes)), form, tmp_path / "run", None)
    masks, labels = splits.train.tensors["masks"], splits.train.tensors["labels"]  # type: ignore[attr-defined]
    ids, rows = mod.segments_from_masks(masks.float(), labels)
    classes = [row.tolist() for row in rows]
    assert [float(v) for v in mod.panoptic_quality(ids, classes, ids, classes, 4)] == [1.0, 1.0, 1.0]
    wrong = [[(c + 1) % 4 if k == 0 and (torch.tensor(row) >= 0).sum() > 1 else c for k, c in enumerate(row)]
             for row in classes]
    changed = sum(w != c for w_row, c_row in zip(wrong, classes) for w, c in zip(w_row, c_row))
    assert changed > 10
    pairs = [(c, w) for w_row, c_row in zip(wrong, classes) for w, c in zip(w_row, c_row) if c >= 0]
    tp, fp, fn = ([sum(test(c, w, k) for c, w in pairs) for k in range(4)] for test in (
        lambda c, w, k: c == w == k, lambda c, w, k: w == k != c, lambda c, w, k: c == k != w))
    expected = [t / (t + f / 2 + n / 2) for t, f, n in zip(tp, fp, fn) if t + f + n]  # RQ per class seen
    pq, sq, rq = (float(v) for v in mod.panoptic_quality(ids, wrong, ids, classes, 4))
    assert sq == 1.0 and pq == rq == pytest.approx(sum(expected) / len(expected)) and rq < 1.0


TINY_MASKFORMER = ["--set", "image_size=64", "--set", "channels=1", "--set", "width=8", "--set", "depths=1,1,1,1",
                   "--set", "expansion=2", "--set", "features=32", "--set", "mask_dim=32", "--set", "d_model=32",
                   "--set", "heads=2", "--set", "ffn=64", "--set", "decoder_layers=1", "--set", "num_queries=8",
                   "--set", "num_classes=4"]


@pytest.fixture(scope="module")
def panoptic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_folder(tmp_path_factory.mktemp("models"), "maskformer_panoptic")


def test_panoptic_segmenter_trains_and_its_pq_is_over_the_split(panoptic: Path, scenes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """maskformer_panoptic trains on the digit scenes (COCO masks as its segments); evaluation's PQ is the
    module's panoptic_quality() over every image of the split at once, for batches of 1 or of 7."""
    assert _train(panoptic, "--data", str(scenes), "--steps", "4", "--batch-size", "8", "--eval-every", "4",
                  "--run-name", "scenes", *TINY_MASKFORMER) == 0
    run = panoptic / "runs" / "scenes"
    last = records(run, "val")[-1]
    assert {"pq", "sq", "rq"} <= set(last) and last["predictions"] == 12  # measured after 4 steps: pq 0.0
    capsys.readouterr()
    assert evaluate_script.main(["--checkpoint", str(run / "last"), "--split", "val", "--batch-size", "5"]) == 0
    result = json.loads(capsys.readouterr().out)["metrics"]

    form, model, state = _trained(panoptic, run, "panoptic_check", *TINY_MASKFORMER)
    val: Any = data.prepare(data.DataOptions(str(scenes)), form, run, state, model).val
    mod = load_module(panoptic / "model.py", "panoptic_check")  # the model's own module: its panoptic_quality
    batch = {k: torch.stack([val[i][k] for i in range(len(val))]) for k in ("image", "masks", "labels")}
    with torch.no_grad():
        pred_ids, pred_classes = model.panoptic_inference(model(batch["image"]))
    gt_ids, gt_classes = mod.segments_from_masks(batch["masks"], batch["labels"])
    whole = [float(v) for v in mod.panoptic_quality(pred_ids, pred_classes, gt_ids, gt_classes, 4)]
    one, _ = split_metrics.evaluate(model, val, 1, loop.Dist())
    seven, _ = split_metrics.evaluate(model, val, 7, loop.Dist())
    for k, v in zip(("pq", "sq", "rq"), whole):
        assert one[k] == pytest.approx(v, abs=1e-6, nan_ok=True) and seven[k] == pytest.approx(v, abs=1e-6, nan_ok=True)
        assert result[k] == pytest.approx(v, abs=1e-6, nan_ok=True)



_PANOPTIC: dict[str, Any] = {}


def panoptic_quality(pred_ids, pred_classes, gt_ids, gt_classes, num_classes):
    """The generated model's panoptic_quality (bound in the module of the stub's metrics(), as in model.py)."""
    return _PANOPTIC["panoptic_quality"](pred_ids, pred_classes, gt_ids, gt_classes, num_classes)


_Module: Any = torch.nn.Module


class _Panoptic(_Module):
    """A stand-in panoptic segmenter whose prediction is in the batch: the ground truth shifted right by `shift`
    pixels (a small digit then falls below IoU 0.5), the first segment's class changed where `relabel` is 1."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def loss(self, batch):
        return self.w * 0

    def metrics(self, batch):
        gt_ids, gt_classes = _PANOPTIC["segments_from_masks"](batch["masks"], batch["labels"])
        pred_ids = torch.stack([ids.roll(int(s), -1) for ids, s in zip(gt_ids, batch["shift"])])
        pred_classes = [torch.cat(((c[:1] + r) % 4, c[1:])) for c, r in zip(gt_classes, batch["relabel"])]
        pq, sq, rq = panoptic_quality(pred_ids, pred_classes, gt_ids, gt_classes, 4)
        return {"pq": pq, "sq": sq, "rq": rq}


def test_panoptic_quality_does_not_depend_on_the_batching(panoptic: Path, scenes: Path, tmp_path: Path) -> None:
    mod = load_module(panoptic / "model.py", "panoptic_stub")
    _PANOPTIC.update(panoptic_quality=mod.panoptic_quality, segments_from_masks=mod.segments_from_masks)
    form = data.Form("instance_segmentation", ("image", "labels", "masks"),
                     {"image_size": 48, "channels": 1, "num_classes": 4})
    train = data.prepare(data.DataOptions(str(scenes)), form, tmp_path / "run", None).train
    n = 40
    ds = data.TensorItems({"image": train.tensors["image"][:n], "masks": train.tensors["masks"][:n].float(),  # type: ignore[attr-defined]
                           "labels": train.tensors["labels"][:n], "shift": torch.arange(n) % 4,  # type: ignore[attr-defined]
                           "relabel": (torch.arange(n) % 5 == 0).long()})
    whole = _Panoptic().metrics({k: ds.tensors[k] for k in ds.tensors})  # one call over every image
    one, _ = split_metrics.evaluate(_Panoptic(), ds, 1, loop.Dist())
    seven, _ = split_metrics.evaluate(_Panoptic(), ds, 7, loop.Dist())
    per_batch, _ = loop.evaluate(_Panoptic(), ds, 7, loop.Dist())
    for k in ("pq", "sq", "rq"):
        assert one[k] == pytest.approx(float(whole[k]), abs=1e-6) == seven[k]
    # measured: pq 0.6165, sq 0.7918, rq 0.7806 over the split; the mean of batches of 7: 0.6134, 0.7626, 0.7694
    assert 0.2 < one["pq"] < 0.9 and one["pq"] != pytest.approx(per_batch["pq"], abs=1e-4), (one, per_batch)


# ------------------------------------------------------------------------------- visual question answering

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TINY_VQA = ["--set", "image_size=8", "--set", "patch_size=4", "--set", "channels=1", "--set", "image_layers=1",
            "--set", "layers=1", "--set", "d_model=32", "--set", "heads=2", "--set", "vocab=300", "--set", "context=8",
            "--set", "num_classes=12"]


def write_digit_questions(root: Path, per_class: int = 30) -> Path:
    """scikit-learn's digits as visual questions: PNGs under root/ and root/questions.jsonl with two questions per
    image: "which digit is this?" with ten annotators' answers (eight the digit's word, two the next digit's, so
    soft scores 1 and 2/3) and "is the digit even?" with one answer, yes or no."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    seen = [0] * 10
    lines = []
    for i, (pixels, label) in enumerate(zip(d.images, d.target)):
        k = int(label)
        if seen[k] >= per_class:
            continue
        seen[k] += 1
        Image.fromarray((pixels * 255 / 16).astype("uint8"), mode="L").save(root / f"{i:04d}.png")
        word, other = NUMBER_WORDS[k], NUMBER_WORDS[(k + 1) % 10]
        lines.append(json.dumps({"image": f"{i:04d}.png", "question": "which digit is this?",
                                 "answers": [word] * 8 + [other] * 2}))
        lines.append(json.dumps({"image": f"{i:04d}.png", "question": "is the digit even?",
                                 "answer": "yes" if k % 2 == 0 else "no"}))
    (root / "questions.jsonl").write_text("\n".join(lines) + "\n")
    return root / "questions.jsonl"


@pytest.fixture(scope="module")
def vqa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_folder(tmp_path_factory.mktemp("models"), "vqa_cross")


def test_vqa_items_have_question_ids_and_soft_answer_scores(vqa: Path, tmp_path: Path) -> None:
    pytest.importorskip("sklearn.datasets")
    pytest.importorskip("tokenizers")
    questions = write_digit_questions(tmp_path / "vqa", per_class=6)
    form, model = _form(vqa, "vqa_form", *TINY_VQA)
    assert form.kind == "visual_question_answering"
    splits = data.prepare(data.DataOptions(str(questions)), form, tmp_path / "run", None, model)
    state = splits.state
    assert sum(state["items"].values()) == 120 and sorted(state["answers"]) == sorted([*NUMBER_WORDS, "yes", "no"])
    assert state["answers_left_out"] == 0
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "run" / "tokenizer.json"))
    rows = {f"questions.jsonl:{k}": json.loads(line) for k, line in enumerate(questions.read_text().splitlines(), 1)}
    for i in range(6):
        item, rid = splits.train[i], state["split"]["train"][i]
        ids = item["text"].tolist()
        assert item["text"].shape == (8,) and item["image"].shape == (1, 8, 8)
        assert tok.decode([t for t in ids if t != state["pad_id"]]) == rows[rid]["question"]
        given = rows[rid].get("answers", [rows[rid].get("answer")])
        expected = {a: (1.0 if len(given) == 1 else min(given.count(a) / 3, 1.0)) for a in given}
        scores = {state["answers"][k]: float(v) for k, v in enumerate(item["answer_scores"]) if v > 0}
        assert scores == pytest.approx(expected)


@pytest.mark.slow
def test_vqa_model_trains_on_digit_questions(vqa: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn.datasets")
    questions = write_digit_questions(tmp_path / "vqa")
    assert _train(vqa, "--data", str(questions), "--steps", "300", "--batch-size", "32", "--lr", "3e-3",
                  "--eval-every", "100", "--run-name", "digits", *TINY_VQA) == 0
    run = vqa / "runs" / "digits"
    val = records(run, "val")
    # measured: vqa_score 0.072 -> 0.667, 0.783, 0.772 (steps 100, 200, 300); always "yes" would score 0.25
    assert val[0]["vqa_score"] < 0.2 and val[-1]["vqa_score"] > 0.6, val
    capsys.readouterr()
    assert evaluate_script.main(["--checkpoint", str(run / "last"), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["predictions"] == 60 and result["metrics"]["vqa_score"] > 0.5, result  # measured 0.900


VQA = {"image_size": 8, "channels": 1, "vocab": 300, "context": 6, "num_classes": 3}
PNG_ROWS = [{"image": "a.png", "question": "why?", "answer": "yes"},
            {"image": "a.png", "question": "who?", "answer": "no"},
            {"image": "a.png", "question": "how?", "answers": ["a square", "a square", "grey"]}]


def _rows(*rows: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


VQA_ERRORS = {
    "not-json": ({"q.jsonl": "{x\n"}, "q.jsonl", "@/q.jsonl:1: not valid JSON ("),
    "no-question": ({"q.jsonl": _rows({"image": "a.png", "answer": "x"})}, "q.jsonl",
                    "@/q.jsonl:1: expected an object with string fields `image` and `question`"),
    "empty-question": ({"q.jsonl": _rows(*PNG_ROWS, {"image": "a.png", "question": " ", "answer": "x"})}, "q.jsonl",
                       "@/q.jsonl:4: empty `question`"),
    "no-answer": ({"q.jsonl": _rows(PNG_ROWS[0], {"image": "a.png", "question": "why?"})}, "q.jsonl",
                  "@/q.jsonl:2: expected `answer` (a non-empty string) or `answers` (a non-empty list of them)"),
    "answers-not-strings": ({"q.jsonl": _rows({"image": "a.png", "question": "why?", "answers": ["a", 3]})}, "q.jsonl",
                            "@/q.jsonl:1: expected `answer` (a non-empty string) or `answers` (a non-empty list of "
                            "them)"),
    "missing-image": ({"q.jsonl": _rows(PNG_ROWS[0], {"image": "b.png", "question": "why?", "answer": "x"})},
                      "q.jsonl", "@/q.jsonl:2: image file `b.png` not found (relative to @)"),
    "no-rows": ({"q.jsonl": "\n"}, "q.jsonl",
                '@/q.jsonl: no rows; expected one {"image": ..., "question": ..., "answer": ... or "answers": [...]} '
                "per line"),
    "not-jsonl": ({"q.csv": "x"}, "q.csv",
                  '@/q.csv: not a .jsonl file; expected one {"image": ..., "question": ..., "answer": ...} per line'),
    "two-lists": ({"d/a.jsonl": "", "d/b.jsonl": ""}, "d", "@/d: expected one .jsonl of questions in the folder, found 2"),
    "question-too-long": ({"q.jsonl": _rows(*PNG_ROWS, {"image": "a.png", "question": "is it a very dark grey square?",
                                                       "answer": "no"})}, "q.jsonl",
                          "@/q.jsonl:4: a question of "),  # byte-level BPE of 3 short questions: ~30 tokens
}


VQA_FORM = data.Form("visual_question_answering", ("answer_scores", "image", "text"), VQA)


@pytest.mark.parametrize("case", list(VQA_ERRORS))
def test_vqa_data_errors_name_the_file_and_line(case: str, tmp_path: Path) -> None:
    files, source, message = VQA_ERRORS[case]
    text = _check_error(VQA_FORM, {"a.png": PNG, **files}, source, message, tmp_path)
    if case == "question-too-long":
        assert text.endswith("tokens, longer than the model's context 6"), text


def test_vqa_takes_a_given_tokenizer_only_with_a_pad_token(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    from metagen_backends.pytorch.training import data_vision
    from tokenizers import Tokenizer

    _write_files(tmp_path, {"a.png": PNG, "q.jsonl": _rows(*PNG_ROWS)})
    no_pad = tmp_path / "lm.json"  # a byte-level BPE with <|endoftext|> only, as a language model's run saves it
    data.train_tokenizer(["why?", "who?"], 300, None, no_pad, False, True, "lm")
    assert _error(VQA_FORM, tmp_path / "q.jsonl", tmp_path / "run", tokenizer=str(no_pad)) == \
        f"{no_pad}: no <|pad|> token; expected a tokenizer with <|pad|> for the padding"
    with_pad = tmp_path / "pad.json"
    data.train_tokenizer(["a question of other words"], 300, None, with_pad, False, True, "q", specials=(data_vision.PAD,))
    splits = data.prepare(data.DataOptions(str(tmp_path / "q.jsonl"), tokenizer=str(with_pad)), VQA_FORM,
                          tmp_path / "run", None)
    assert splits.state["pad_id"] == Tokenizer.from_file(str(with_pad)).token_to_id(data_vision.PAD)
    saved = Tokenizer.from_file(str(tmp_path / "run" / "tokenizer.json"))  # the given one, kept with the run
    assert saved.get_vocab() == Tokenizer.from_file(str(with_pad)).get_vocab()


# ------------------------------------------------------------------------------ point-cloud augmentation

TINY_POINTNET = ["--set", "points=64", "--set", "width=16", "--set", "num_classes=10"]
POINT_AUGMENT = "random_rotation,random_scale,jitter,point_dropout"


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 digits per class as 3-D point clouds (.npy, ASCII .ply, binary .ply) in class folders."""
    pytest.importorskip("sklearn.datasets")
    from training_helpers import write_digit_clouds

    return write_digit_clouds(tmp_path_factory.mktemp("clouds") / "clouds", per_class=30)


def test_point_augmentations_are_seeded_and_do_what_they_say(clouds: Path, tmp_path: Path) -> None:
    from metagen_backends.pytorch.training import data_points

    form = data.Form("point_cloud_classification", ("label", "point_cloud"), {"points": 64, "coords": 3,
                                                                              "num_classes": 10})
    names = data_points.check_point_augment(["rotate", "scale", "jitter", "dropout"], "x")
    assert names == list(data_points.POINT_AUGMENTATIONS)
    splits = data.prepare(data.DataOptions(str(clouds), augment=names), form, tmp_path / "run", None)
    assert splits.state["augment"] == names
    cloud = splits.train.tensors["point_cloud"][0]  # type: ignore[attr-defined]
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append([splits.train[k]["point_cloud"] for k in range(10)])
    assert all(torch.equal(a, b) for a, b in zip(draws[0], draws[1]))  # the same seed, the same clouds
    assert not any(torch.equal(a, b) for a, b in zip(draws[0], draws[2]))
    assert all(torch.equal(splits.val[k]["point_cloud"], splits.val.tensors["point_cloud"][k])  # type: ignore[attr-defined]
               for k in range(5))  # validation is never augmented

    torch.manual_seed(0)
    rotated = data_points.augment_points(cloud, ["random_rotation"])
    assert torch.allclose(rotated[:, 1], cloud[:, 1])  # the up axis stays
    assert torch.allclose(rotated[:, [0, 2]].norm(dim=-1), cloud[:, [0, 2]].norm(dim=-1), atol=1e-6)
    assert not torch.allclose(rotated, cloud)
    scaled = data_points.augment_points(cloud, ["random_scale"])
    factor = scaled.norm() / cloud.norm()
    assert 0.8 <= factor <= 1.25 and torch.allclose(scaled, cloud * factor, atol=1e-6)
    jittered = data_points.augment_points(cloud, ["jitter"])
    assert 0 < (jittered - cloud).abs().max() <= 0.05 + 1e-7
    dropped = [data_points.augment_points(cloud, ["point_dropout"]) for _ in range(20)]
    for d in dropped:  # a dropped point becomes the first; the others stay where they were
        same = (d == cloud).all(-1)
        assert ((d == cloud[0]).all(-1) | same).all()
    assert max(int((~(d == cloud).all(-1)).sum()) for d in dropped) > 10
    with pytest.raises(data.DataError, match="^x: augmentation `flip` is not supported for point clouds; expected "
                                             "some of random_rotation, random_scale, jitter, point_dropout"):
        data_points.check_point_augment(["flip"], "x")


def test_train_py_augment_help_names_every_augmentation() -> None:
    from metagen_backends.pytorch.training import data_points, data_vision

    words = set(re.findall(r"\w+", train_script.parser().format_help()))
    assert set(data_vision.AUGMENTATIONS) | set(data_points.POINT_AUGMENTATIONS) <= words


@pytest.fixture(scope="module")
def pointnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_folder(tmp_path_factory.mktemp("models"), "pointnet")


def test_augmented_point_cloud_runs_repeat_and_change_the_training(pointnet: Path, clouds: Path) -> None:
    common = ["--data", str(clouds), "--batch-size", "16", "--steps", "3", "--eval-every", "100", *TINY_POINTNET]
    assert _train(pointnet, *common, "--augment", POINT_AUGMENT, "--run-name", "aug_a") == 0
    assert _train(pointnet, *common, "--augment", POINT_AUGMENT, "--run-name", "aug_b") == 0
    assert _train(pointnet, *common, "--run-name", "plain") == 0
    losses = {name: [r["loss"] for r in records(pointnet / "runs" / name, "train")] for name in ("aug_a", "aug_b",
                                                                                                 "plain")}
    assert len(losses["aug_a"]) == 3 and losses["aug_a"] == losses["aug_b"]
    assert losses["aug_a"][1:] != losses["plain"][1:]  # the augmentation did something
    state = json.loads((pointnet / "runs" / "aug_a" / "data.json").read_text())
    assert state["augment"] == POINT_AUGMENT.split(",")


# ------------------------------------------------------------------------------------- graph edge features

EDGE_SPEC = """msl 1
import std.graph

model {name} {{
  modality graph -> label
  task {task} {{ num_classes = {classes} }}
  objective classification
  architecture graph.{family} {{ nodes = 64; edges = 256; features = {features}; edge_features = {edge}; hidden = 8;
                                heads = 2; layers = 1{extra} }}
}}
"""


def _edge_model(root: Path, family: str, features: int, edge: int, classes: int) -> Path:
    graph = family == "gat_graph_edge"
    source = root / f"{family}.msl"
    source.write_text(EDGE_SPEC.format(name=family, family=family, features=features, edge=edge, classes=classes,
                                       task="graph_classification" if graph else "node_classification",
                                       extra="; graphs = 32" if graph else ""))
    return model_folder(root, family, source)


def write_digit_edge_graphs(path: Path, per_class: int = 60) -> Path:
    """scikit-learn's digits as graphs with edge features: a node per lit pixel (features: intensity, x, y), an
    edge between pixels that touch (8-neighbourhood) with features (dx, dy, the smaller of the two intensities),
    the digit as the label; one graph per line."""
    from sklearn.datasets import load_digits

    d = load_digits()
    seen = [0] * 10
    lines = []
    for image, label in zip(d.images, d.target):
        if seen[int(label)] >= per_class:
            continue
        seen[int(label)] += 1
        lit = [(y, x) for y in range(8) for x in range(8) if image[y, x] > 0]
        index = {p: k for k, p in enumerate(lit)}
        edges, attr = [], []
        for y, x in lit:
            for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
                if (y + dy, x + dx) in index:
                    edges.append([index[(y, x)], index[(y + dy, x + dx)]])
                    attr.append([float(dx), float(dy), min(image[y, x], image[y + dy, x + dx]) / 16.0])
        nodes = [[float(image[y, xx]) / 16.0, xx / 7.0, y / 7.0] for y, xx in lit]
        lines.append(json.dumps({"x": nodes, "edges": edges, "edge_attr": attr, "y": int(label)}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_graph_sets_carry_edge_features_in_edge_order(tmp_path: Path) -> None:
    pytest.importorskip("sklearn.datasets")
    path = write_digit_edge_graphs(tmp_path / "g.jsonl", per_class=3)
    form = data.Form("graph_classification", ("edge_attr", "graph_batch", "graph_edges", "graph_nodes", "label"),
                     {"features": 3, "edge_features": 3, "graphs": 8, "num_classes": 10})
    splits = data.prepare(data.DataOptions(str(path)), form, tmp_path / "run", None)
    assert splits.state["edge_features"] == 3
    ds = splits.train
    rows = {f"g.jsonl:{k}": json.loads(line) for k, line in enumerate(path.read_text().splitlines(), 1)}
    batch = ds.collate([ds[0], ds[1]])  # type: ignore[attr-defined]
    assert batch["edge_attr"].shape == (batch["graph_edges"].shape[1], 3)
    first = rows[splits.state["split"]["train"][0].rsplit("/", 1)[-1]]
    e = len(first["edges"])
    # an undirected edge is listed both ways; its features follow it both times
    assert torch.allclose(batch["edge_attr"][:e], torch.tensor(first["edge_attr"]))
    assert torch.allclose(batch["edge_attr"][e : 2 * e], torch.tensor(first["edge_attr"]))
    assert batch["graph_edges"][:, :e].tolist() == torch.tensor(first["edges"]).t().tolist()
    no_edges = data.Form("graph_classification", ("graph_batch", "graph_edges", "graph_nodes", "label"),
                         {"features": 3, "graphs": 8, "num_classes": 10})  # a model without: the field is not read
    assert "edge_attr" not in data.prepare(data.DataOptions(str(path)), no_edges, tmp_path / "run", None).train[0]


@pytest.mark.slow
def test_gat_with_edge_features_learns_digit_graphs(tmp_path: Path) -> None:
    """gat_graph_edge (3 node and 3 edge features) on 600 digits as graphs whose edges carry their direction and
    stroke intensity."""
    pytest.importorskip("sklearn.datasets")
    folder = _edge_model(tmp_path, "gat_graph_edge", 3, 3, 10)
    path = write_digit_edge_graphs(tmp_path / "digits.jsonl")
    assert _train(folder, "--data", str(path), "--steps", "300", "--batch-size", "32", "--lr", "1e-2",
                  "--weight-decay", "0", "--eval-every", "150", "--run-name", "edges") == 0
    val = records(folder / "runs" / "edges", "val")
    # measured: accuracy 0.0 -> 0.317 -> 0.383 (steps 150, 300); top-5 0.467 -> 0.917
    assert val[0]["accuracy"] < 0.2 and val[-1]["accuracy"] > 0.25, val  # chance 0.1


def test_gat_edge_node_classification_reads_edge_weights(tmp_path: Path) -> None:
    """gat_edge on Zachary's karate club (networkx's copy), each tie's strength (networkx's `weight`, 1..7) scaled to
    0..1 as its one edge feature; the undirected edge's feature goes both ways; a few steps train."""
    nx = pytest.importorskip("networkx")
    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    edges = [list(e) for e in g.edges()]
    weights = [[g.edges[a, b]["weight"] / 7.0] for a, b in edges]
    doc = {"x": [[float(i == j) for j in range(n)] for i in range(n)], "edges": edges, "undirected": True,
           "edge_attr": weights, "y": [g.nodes[i]["club"] for i in range(n)]}
    path = tmp_path / "karate.json"
    path.write_text(json.dumps(doc))
    folder = _edge_model(tmp_path, "gat_edge", n, 1, 2)
    form, _ = _form(folder, "gat_edge_karate")
    assert form.kind == "node_classification" and "edge_attr" in form.keys
    splits = data.prepare(data.DataOptions(str(path)), form, tmp_path / "run", None)
    batch = splits.train[0]
    assert batch["edge_attr"].shape == (2 * len(edges), 1) and batch["graph_edges"].shape == (2, 2 * len(edges))
    assert batch["edge_attr"][len(edges) :].equal(batch["edge_attr"][: len(edges)])
    links = data.Form("link_prediction", ("edge_attr", "graph_edges", "graph_nodes", "neg_edges", "pos_edges"),
                      {"features": n, "edge_features": 1})
    link_splits = data.prepare(data.DataOptions(str(path)), links, tmp_path / "links", None)
    train_edges = link_splits.state["split"]["train"]  # the edges that pass messages, with their own weights
    message = link_splits.val[0]
    assert message["graph_edges"][:, : len(train_edges)].t().tolist() == [edges[k] for k in train_edges]
    assert message["edge_attr"][: len(train_edges), 0].tolist() == pytest.approx(
        [weights[k][0] for k in train_edges])
    assert _train(folder, "--data", str(path), "--steps", "30", "--lr", "1e-2", "--eval-every", "30",
                  "--run-name", "karate") == 0
    losses = [r["loss"] for r in records(folder / "runs" / "karate", "train")]
    assert losses[-1] < 0.7 * losses[0], losses


EDGE_FORM = ("graph_classification", ("edge_attr", "graph_batch", "graph_edges", "graph_nodes", "label"),
             {"features": 2, "edge_features": 2, "graphs": 4, "num_classes": 2})
NODE_EDGE_FORM = ("node_classification", ("edge_attr", "graph_edges", "graph_nodes", "label", "train_mask"),
                  {"features": 2, "edge_features": 2, "num_classes": 2})
G2 = {"x": [[0.0, 1.0], [1.0, 0.0]], "edges": [[0, 1]], "edge_attr": [[0.5, 1.0]], "y": 0}
KARATE2 = {"x": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], "edges": [[0, 1], [1, 2]], "edge_attr": [[0.5, 1.0], [1, 3]],
           "y": [0, 1, 0]}

EDGE_ERRORS = {
    "set-missing": (EDGE_FORM, {"g.jsonl": _rows(G2, {k: v for k, v in G2.items() if k != "edge_attr"})}, "g.jsonl",
                    "@/g.jsonl:2: no `edge_attr`; the model reads edge features: expected one list of 2 numbers per "
                    "edge (edge_features = 2)"),
    "set-rows": (EDGE_FORM, {"g.jsonl": _rows({**G2, "edge_attr": [[0.5, 1.0], [0.0, 0.0]]})}, "g.jsonl",
                 "@/g.jsonl:1: `edge_attr` has 2 rows; expected one row per edge (1)"),
    "set-width": (EDGE_FORM, {"g.jsonl": _rows({**G2, "edge_attr": [[0.5]]})}, "g.jsonl",
                  "@/g.jsonl:1: edge_attr[0] has 1 values; expected 2 finite numbers (the model's edge_features)"),
    "set-not-list": (EDGE_FORM, {"g.jsonl": _rows({**G2, "edge_attr": 3})}, "g.jsonl",
                     "@/g.jsonl:1: `edge_attr` has int; expected one row per edge (1)"),
    "set-json-item": (EDGE_FORM, {"g.json": json.dumps({"graphs": [G2, {**G2, "edge_attr": [[1, True]]}]})}, "g.json",
                      "@/g.json: graphs[1]: edge_attr[0] has 2 values; expected 2 finite numbers (the model's "
                      "edge_features)"),
    "graph-missing": (NODE_EDGE_FORM, {"k.json": json.dumps({k: v for k, v in KARATE2.items() if k != "edge_attr"})},
                      "k.json", "@/k.json: no `edge_attr`; the model reads edge features: expected one list of 2 "
                      "numbers per edge (edge_features = 2)"),
    "graph-not-finite": (NODE_EDGE_FORM, {"k.json": json.dumps(KARATE2).replace("[1, 3]]", "[1, NaN]]")}, "k.json",
                         "@/k.json: edge_attr[1] has 2 values; expected 2 finite numbers (the model's edge_features)"),
    "graph-rows": (NODE_EDGE_FORM, {"k.json": json.dumps({**KARATE2, "edge_attr": [[0, 1]]})}, "k.json",
                   "@/k.json: `edge_attr` has 1 rows; expected one row per edge (2)"),
}


@pytest.mark.parametrize("case", list(EDGE_ERRORS))
def test_edge_feature_errors_name_the_file_and_graph(case: str, tmp_path: Path) -> None:
    form, files, source, message = EDGE_ERRORS[case]
    _check_error(data.Form(*form), files, source, message, tmp_path)


def test_a_graph_without_edges_joins_a_batch(tmp_path: Path) -> None:
    """A graph of a set may have no edges (nor edge features): its (2, 0) edges and (0, edge_features) features join
    a batch with the others'."""
    lone = {"x": [[1.0, 1.0]], "edges": [], "edge_attr": [], "y": 1}
    _write_files(tmp_path, {"g.jsonl": _rows(G2, lone, G2, lone)})
    splits = data.prepare(data.DataOptions(str(tmp_path / "g.jsonl")), data.Form(*EDGE_FORM), tmp_path / "run", None)
    items = [ds[k] for ds in (splits.train, splits.val, splits.test) for k in range(len(ds))]  # type: ignore[arg-type]
    alone = [g for g in items if len(g["graph_nodes"]) == 1]
    assert len(alone) == 2 and all(g["graph_edges"].shape == (2, 0) and g["edge_attr"].shape == (0, 2) for g in alone)
    batch = splits.train.collate(items)  # type: ignore[attr-defined]
    assert batch["graph_edges"].shape == (2, 4) and batch["edge_attr"].shape == (4, 2)  # G2's edge, both ways, twice
    assert batch["graph_batch"].tolist() == [k for k, g in enumerate(items) for _ in g["graph_nodes"]]


# ------------------------------------------------------------------------------------------- speech JSONL



@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten English sentences spoken by espeak-ng (22,050 Hz WAV) listed in speech.jsonl as {"audio", "text"} and in
    transcripts.tsv (a second folder, the same files)."""
    root = tmp_path_factory.mktemp("spoken")
    write_speech(root / "tsv")
    (root / "jsonl").mkdir()
    for i in range(len(SENTENCES)):
        shutil.copy(root / "tsv" / f"s{i}.wav", root / "jsonl" / f"s{i}.wav")
    (root / "jsonl" / "speech.jsonl").write_text(_rows(*({"audio": f"s{i}.wav", "text": t}
                                                         for i, t in enumerate(SENTENCES))))
    return root


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_folder(tmp_path_factory.mktemp("models"), "whisper_tiny")


def test_speech_jsonl_reads_as_the_tsv(whisper: Path, spoken: Path, tmp_path: Path) -> None:
    pytest.importorskip("soundfile")
    form, _ = _form(whisper, "whisper_jsonl", *TINY_WHISPER)
    assert form.kind == "speech_recognition"
    a = data.prepare(data.DataOptions(str(spoken / "jsonl")), form, tmp_path / "a", None)
    b = data.prepare(data.DataOptions(str(spoken / "tsv")), form, tmp_path / "b", None)
    assert sum(a.state["items"].values()) == 10
    order = {rid.split(":", 1)[1]: k for k, rid in enumerate(a.state["split"]["train"])}
    b_order = [rid.split(":", 1)[1] for rid in b.state["split"]["train"]]
    assert sorted(order) == sorted(b_order)  # the same clips (ids differ: speech.jsonl vs transcripts.tsv)
    for k, name in enumerate(b_order):
        assert torch.equal(a.train[order[name]]["audio"], b.train[k]["audio"])
    single = data.prepare(data.DataOptions(str(spoken / "jsonl" / "speech.jsonl")), form, tmp_path / "c", None)
    assert single.state["split"] == a.state["split"]


def test_whisper_trains_on_a_speech_jsonl(whisper: Path, spoken: Path) -> None:
    pytest.importorskip("soundfile")
    assert _train(whisper, "--data", str(spoken / "jsonl" / "speech.jsonl"), *TINY_WHISPER, "--steps", "20",
                  "--batch-size", "4", "--lr", "3e-3", "--eval-every", "20", "--run-name", "jsonl") == 0
    losses = [r["loss"] for r in records(whisper / "runs" / "jsonl", "train")]
    assert losses[-1] < 0.7 * losses[0], losses


WAV_ROWS = {"sp/a.wav": b"", "sp/b.wav": b""}
AUDIO_ERRORS = {
    "not-json": ({**WAV_ROWS, "sp/speech.jsonl": _rows({"audio": "a.wav", "text": "x"}, "{bad")}, "sp",
                 "@/sp/speech.jsonl:2: not valid JSON ("),
    "no-audio": ({**WAV_ROWS, "sp/speech.jsonl": _rows({"text": "x"})}, "sp/speech.jsonl",
                 "@/sp/speech.jsonl:1: expected an object with string fields `audio` (or `path`) and `text`"),
    "text-not-string": ({**WAV_ROWS, "sp/speech.jsonl": _rows({"audio": "a.wav", "text": 3})}, "sp",
                        "@/sp/speech.jsonl:1: expected an object with string fields `audio` (or `path`) and `text`"),
    "not-an-object": ({**WAV_ROWS, "sp/speech.jsonl": _rows(["a.wav", "x"])}, "sp",
                      "@/sp/speech.jsonl:1: expected an object with string fields `audio` (or `path`) and `text`"),
    "missing-file": ({**WAV_ROWS, "sp/speech.jsonl": _rows({"audio": "a.wav", "text": "x"},
                                                           {"audio": "c.wav", "text": "y"})}, "sp",
                     "@/sp/speech.jsonl:2: audio file `c.wav` not found (relative to @/sp)"),
    "empty-text": ({**WAV_ROWS, "sp/speech.jsonl": _rows({"audio": "a.wav", "text": " "})}, "sp",
                   "@/sp/speech.jsonl:1: empty transcript for `a.wav`"),
    "twice": ({**WAV_ROWS, "sp/speech.jsonl": _rows({"audio": "a.wav", "text": "x"}, {"audio": "b.wav", "text": "y"},
                                                    {"audio": "a.wav", "text": "z"})}, "sp",
              "@/sp/speech.jsonl:3: audio file `a.wav` is listed twice (first on line 1); expected one transcript per "
              "file"),
    "tsv-twice": ({**WAV_ROWS, "sp/transcripts.tsv": "a.wav\tx\na.wav\ty\n"}, "sp",
                  "@/sp/transcripts.tsv:2: audio file `a.wav` is listed twice (first on line 1); expected one "
                  "transcript per file"),
    "no-rows": ({**WAV_ROWS, "sp/speech.jsonl": "\n\n"}, "sp",
                "@/sp/speech.jsonl: no rows; expected one audio file and transcript per line"),
}


@pytest.mark.parametrize("case", list(AUDIO_ERRORS))
def test_speech_jsonl_errors_name_the_file_and_line(case: str, tmp_path: Path) -> None:
    files, source, message = AUDIO_ERRORS[case]
    form = data.Form("speech_recognition", ("audio", "target"), {"samples": 16000, "context": 16, "vocab": 300})
    _check_error(form, files, source, message, tmp_path)


TINY_CONV_AE = ["--set", "image_size=16", "--set", "channels=1", "--set", "width=8", "--set", "latent=16"]


def test_image_anomaly_folders_as_mvtec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MVTec AD's layout made of scikit-learn's digits: train/good the zeros, test/good more zeros and test/seven the
    sevens; a small convolutional autoencoder of the zeros, its ROC-AUC over the test split that of sklearn."""
    pytest.importorskip("sklearn.datasets")
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.metrics import roc_auc_score

    d = load_digits()
    zeros = [im for im, t in zip(d.images, d.target) if t == 0]
    sevens = [im for im, t in zip(d.images, d.target) if t == 7][:30]
    root = tmp_path / "mvtec"
    for part, images in (("train/good", zeros[:140]), ("test/good", zeros[140:]), ("test/seven", sevens)):
        (root / part).mkdir(parents=True)
        for k, im in enumerate(images):
            Image.fromarray((im * 255 / 16).astype("uint8"), mode="L").save(root / part / f"{k:03d}.png")
    folder = model_folder(tmp_path / "models", "autoencoder_image")
    form, _ = _form(folder, "image_anomaly_form", *TINY_CONV_AE)
    assert form.kind == "image_anomaly"
    splits = data.prepare(data.DataOptions(str(root)), form, tmp_path / "run", None)
    # val carved from train (14 of 140); test as given: 38 zeros and 30 sevens
    assert splits.state["items"] == {"train": 126, "val": 14, "test": 68}
    assert splits.state["anomalies"] == {"train": 0, "val": 0, "test": 30}
    assert _train(folder, "--data", str(root), "--steps", "100", "--batch-size", "16", "--lr", "3e-3",
                  "--weight-decay", "0", "--eval-every", "100", "--run-name", "digits", *TINY_CONV_AE) == 0
    run = folder / "runs" / "digits"
    capsys.readouterr()
    assert evaluate_script.main(["--checkpoint", str(run / "last"), "--split", "test", "--batch-size", "7"]) == 0
    result = json.loads(capsys.readouterr().out)
    _, model, state = _trained(folder, run, "image_anomaly_check", *TINY_CONV_AE)
    test: Any = data.prepare(data.DataOptions(str(root)), form, run, state).test
    x, y = test.tensors["image"], test.tensors["is_anomaly"]
    with torch.no_grad():
        scores = (model(x) - x).pow(2).flatten(1).mean(-1)
    assert result["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(y.numpy(), scores.numpy()), abs=1e-9)
    assert result["metrics"]["roc_auc"] > 0.7, result  # measured 1.0 (average precision 1.0): sevens are no zeros
    shutil.copytree(root / "test" / "seven", tmp_path / "bad" / "seven")
    assert _error(form, tmp_path / "bad", tmp_path / "run2") == (
        f"{tmp_path / 'bad'}: the train split has no normal image (a class folder or label named good, normal, ok, 0, "
        "false); an autoencoder learns the normal ones")


def test_split_states_of_two_processes_merge_to_the_whole(sensor: Path, panoptic: Path, scenes: Path,
                                                          tmp_path: Path) -> None:
    """Under torchrun each process accumulates its own batches and the states are gathered: two halves merged give
    the values of the whole split (anomaly scores and panoptic sums)."""
    pytest.importorskip("sklearn.datasets")
    path, _ = write_cancer_anomalies(tmp_path / "cancer.csv")
    form, model = _form(sensor, "anomaly_merge", *SMALL_AE)
    model.eval()
    val: Any = data.prepare(data.DataOptions(str(path), target="is_anomaly"), form, tmp_path / "run", None).val
    mod = load_module(panoptic / "model.py", "panoptic_merge")
    _PANOPTIC.update(panoptic_quality=mod.panoptic_quality, segments_from_masks=mod.segments_from_masks)
    seg_form = data.Form("instance_segmentation", ("image", "labels", "masks"),
                         {"image_size": 48, "channels": 1, "num_classes": 4})
    train: Any = data.prepare(data.DataOptions(str(scenes)), seg_form, tmp_path / "seg", None).train
    n = 30
    seg = {"image": train.tensors["image"][:n], "masks": train.tensors["masks"][:n].float(),
           "labels": train.tensors["labels"][:n], "shift": torch.arange(n) % 4,
           "relabel": (torch.arange(n) % 5 == 0).long()}
    for stub, tensors in ((model, val.tensors), (_Panoptic(), seg)):
        whole = split_metrics.SplitAccumulator(stub, 1)
        halves = [split_metrics.SplitAccumulator(stub, 1), split_metrics.SplitAccumulator(stub, 1)]
        half = len(next(iter(tensors.values()))) // 2
        with torch.no_grad():
            whole.batch(dict(tensors))
            halves[0].batch({k: v[:half] for k, v in tensors.items()})
            halves[1].batch({k: v[half:] for k, v in tensors.items()})
        halves[0].merge(halves[1].state())
        expected, merged = whole.results(), halves[0].results()
        assert set(expected) in ({"roc_auc", "average_precision"}, {"pq", "sq", "rq"})
        assert merged == pytest.approx(expected, abs=1e-12), (merged, expected)
