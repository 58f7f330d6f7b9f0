"""Object detection (std.detection): the generated model's box algebra, NMS, Hungarian matching, assignment and
mAP against brute-force references; DETR against transformers' DETR; both detectors learn a fixed batch."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT, generated_module
from metagen_backends.pytorch.weights.runtime import load_checkpoint
from test_numeric import SMALL

YOLO = ROOT / "examples" / "yolo_detector.msl"
DETR = ROOT / "examples" / "detr_r50.msl"


def _module(path: Path, tmp: Path) -> Any:
    return generated_module(path, tmp, f"det_{path.stem}")


@pytest.fixture(scope="module")
def yolo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _module(YOLO, tmp_path_factory.mktemp("yolo"))


@pytest.fixture(scope="module")
def detr(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _module(DETR, tmp_path_factory.mktemp("detr"))


def _small(mod: Any, family: str) -> Any:
    return mod.build_model(dataclasses.replace(mod.Config(), **SMALL[family]))


def _random_boxes(g: torch.Generator, n: int, size: float = 100.0) -> Any:
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat((xy, xy + wh), -1)


# ------------------------------------------------------------------ Hungarian matching
def _brute_force(cost: list[list[float]]) -> float:
    n, m = len(cost), len(cost[0])
    if n <= m:
        return min(sum(cost[i][j] for i, j in enumerate(p)) for p in itertools.permutations(range(m), n))
    return min(sum(cost[i][j] for j, i in enumerate(p)) for p in itertools.permutations(range(n), m))


@pytest.mark.parametrize("seed", range(40))
def test_linear_sum_assignment_equals_brute_force(detr: Any, seed: int) -> None:
    rnd = random.Random(seed)
    n, m = rnd.randint(1, 6), rnd.randint(1, 6)
    ties = seed % 3 == 0  # small integer costs: many optimal assignments
    cost = [[float(rnd.randint(0, 3)) if ties else rnd.uniform(-5, 5) for _ in range(m)] for _ in range(n)]
    rows, cols = detr.linear_sum_assignment(torch.tensor(cost, dtype=torch.float64))
    assert len(rows) == min(n, m) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
    assert rows == sorted(rows)
    assert math.isclose(sum(cost[i][j] for i, j in zip(rows, cols)), _brute_force(cost), abs_tol=1e-9)


def test_linear_sum_assignment_of_a_detr_sized_matrix(detr: Any) -> None:
    # 100 queries x 7 objects: every object gets the query of least cost when the costs are separable
    cost = torch.rand(100, 7, generator=torch.Generator().manual_seed(0)) + 1
    best = torch.randperm(100, generator=torch.Generator().manual_seed(1))[:7]
    cost[best, torch.arange(7)] = 0.0
    rows, cols = detr.linear_sum_assignment(cost)
    assert sorted(zip(cols, rows)) == sorted(zip(range(7), best.tolist()))


# ------------------------------------------------------------------ boxes and NMS
def test_box_iou_and_giou(yolo: Any) -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [4.0, 0.0, 6.0, 2.0]])
    iou, _ = yolo.box_iou(a[:, None], b[None])
    assert torch.allclose(iou, torch.tensor([[1 / 7, 1.0, 0.0]]))
    giou = yolo.box_giou(a[:, None], b[None])
    # hulls: 9 (union 7), 4, 12 (union 8)
    assert torch.allclose(giou, torch.tensor([[1 / 7 - 2 / 9, 1.0, -4 / 12]]))
    c = torch.tensor([[0.5, 0.25, 0.2, 0.1]])
    assert torch.allclose(yolo.box_xyxy_to_cxcywh(yolo.box_cxcywh_to_xyxy(c)), c)


def _nms_reference(boxes: Any, scores: Any, labels: Any, thr: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep: list[int] = []
    for i in order:
        if all(int(labels[i]) != int(labels[k]) or _iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def _iou(a: Any, b: Any) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = float(w * h)
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union


@pytest.mark.parametrize("seed", range(10))
def test_batched_nms_equals_reference(yolo: Any, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 40
    boxes, scores = _random_boxes(g, n), torch.rand(n, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    keep = yolo.batched_nms(boxes, scores, labels, 0.4).tolist()
    assert keep == _nms_reference(boxes.tolist(), scores, labels, 0.4)


# ------------------------------------------------------------------ mAP
def _ap_reference(dets: list[tuple[int, float, list[float], int]],
                  gts: list[tuple[int, list[float], int]]) -> tuple[float, float]:
    """Written out independently: COCO's greedy matching per image, VOC's all-point interpolated AP per class."""
    aps, matched = [], 0
    for c in sorted({lab for _, _, lab in gts}):
        d = sorted([x for x in dets if x[3] == c], key=lambda x: -x[1])
        free = {i: True for i, (_, _, lab) in enumerate(gts) if lab == c}
        tps = []
        for img, _score, box, _lab in d:
            hits = [(_iou(box, gts[i][1]), i) for i in free if free[i] and gts[i][0] == img]
            hits = [(v, i) for v, i in hits if v >= 0.5]
            if hits:
                free[max(hits, key=lambda h: h[0])[1]] = False
            tps.append(1 if hits else 0)
        n = len(free)
        matched += sum(tps)
        prec = [sum(tps[:k + 1]) / (k + 1) for k in range(len(tps))]
        ap = sum(max(prec[k:]) for k in range(len(tps)) if tps[k]) / n
        aps.append(ap)
    return sum(aps) / len(aps), matched / len(gts)


def test_map_of_perfect_detections_is_one(yolo: Any) -> None:
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 50.0]], [[5.0, 5.0, 15.0, 25.0], [0, 0, 0, 0]]])
    labels = torch.tensor([[1, 2], [1, -1]])
    dets = [{"boxes": gt[0], "scores": torch.tensor([0.9, 0.8]), "labels": labels[0]},
            {"boxes": gt[1, :1], "scores": torch.tensor([0.7]), "labels": labels[1, :1]}]
    mean_ap, recall = yolo.map_50(dets, gt, labels)
    assert mean_ap.item() == 1.0 and recall.item() == 1.0
    dets[1]["labels"] = torch.tensor([0])  # the wrong class: class 1 finds one of its two boxes, first in rank
    mean_ap, recall = yolo.map_50(dets, gt, labels)
    assert math.isclose(mean_ap.item(), (0.5 + 1.0) / 2) and math.isclose(recall.item(), 2 / 3, rel_tol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_map_equals_reference(yolo: Any, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    images, classes = 3, 3
    gt_boxes = torch.zeros(images, 5, 4)
    gt_labels = torch.full((images, 5), -1)
    dets, ref_d, ref_g = [], [], []
    for b in range(images):
        k = 1 + b % 5
        gt_boxes[b, :k] = _random_boxes(g, k)
        gt_labels[b, :k] = torch.randint(0, classes, (k,), generator=g)
        # detections: jittered copies of the ground truth (some hit, some miss) and random boxes
        jitter = gt_boxes[b, :k] + torch.randn(k, 4, generator=g) * 6
        boxes = torch.cat((jitter, _random_boxes(g, 4)))
        scores = torch.rand(len(boxes), generator=g)
        labels = torch.cat((gt_labels[b, :k], torch.randint(0, classes, (4,), generator=g)))
        dets.append({"boxes": boxes, "scores": scores, "labels": labels})
        ref_d += [(b, float(s), x.tolist(), int(c)) for x, s, c in zip(boxes, scores, labels)]
        ref_g += [(b, gt_boxes[b, i].tolist(), int(gt_labels[b, i])) for i in range(k)]
    mean_ap, recall = yolo.map_50(dets, gt_boxes, gt_labels)
    want_ap, want_recall = _ap_reference(ref_d, ref_g)
    assert math.isclose(mean_ap.item(), want_ap, rel_tol=1e-5)
    assert math.isclose(recall.item(), want_recall, rel_tol=1e-6)


# ------------------------------------------------------------------ YOLO's assignment and decoding
def test_anchors_and_decoding(yolo: Any) -> None:
    centres, strides = yolo.detection_anchors(64)
    assert centres.shape == (64 + 16 + 4, 2) and strides.tolist() == [8.0] * 64 + [16.0] * 16 + [32.0] * 4
    assert centres[:2].tolist() == [[4.0, 4.0], [12.0, 4.0]] and centres[64].tolist() == [8.0, 8.0]
    raw = torch.full((1, 84, 4), math.log(math.e - 1))  # softplus = 1: one stride each way
    boxes = yolo.decode_ltrb(raw, centres, strides)
    assert boxes[0, 0].tolist() == [-4.0, -4.0, 12.0, 12.0] and boxes[0, 64].tolist() == [-8.0, -8.0, 24.0, 24.0]


def test_center_prior_assignment(yolo: Any) -> None:
    centres, strides = yolo.detection_anchors(256)
    gt = torch.tensor([[[10.0, 10.0, 50.0, 50.0], [0.0, 0.0, 250.0, 250.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[3, 1, -1]])
    cls, box, pos = yolo.assign_center_prior(centres, strides, gt, labels, 5)
    assert pos.any()
    x, y = centres[:, 0], centres[:, 1]
    for k in range(2):
        mine = pos[0] & (box[0] == gt[0, k]).all(-1)
        assert mine.any(), f"box {k} has no positive cell"
        b = gt[0, k]
        assert ((x[mine] > b[0]) & (x[mine] < b[2]) & (y[mine] > b[1]) & (y[mine] < b[3])).all()
        reach = torch.stack((x - b[0], y - b[1], b[2] - x, b[3] - y), -1).amax(-1)[mine]
        s = strides[mine]
        assert ((reach >= torch.where(s == 8, 0.0, 4 * s)) & (reach <= torch.where(s == 32, math.inf, 8 * s))).all()
        assert (((x[mine] - (b[0] + b[2]) / 2).abs() < 2.5 * s) & ((y[mine] - (b[1] + b[3]) / 2).abs() < 2.5 * s)).all()
        assert (cls[0, mine].argmax(-1) == labels[0, k]).all()
    # the small box sits on stride 8 (its reach is at most 40), the large one on stride 32
    assert set(strides[pos[0] & (box[0] == gt[0, 0]).all(-1)].tolist()) == {8.0}
    assert set(strides[pos[0] & (box[0] == gt[0, 1]).all(-1)].tolist()) == {32.0}
    assert cls[0, ~pos[0]].sum() == 0 and cls[0, pos[0]].sum(-1).eq(1).all()


def test_focal_loss_values(yolo: Any) -> None:
    logits, targets = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    p = torch.sigmoid(logits)
    want = torch.stack([-0.25 * (1 - p[0]) ** 2 * p[0].log(), -0.75 * p[1] ** 2 * (1 - p[1]).log(),
                        -0.25 * (1 - p[2]) ** 2 * p[2].log()])
    assert torch.allclose(yolo.sigmoid_focal_loss(logits, targets), want)


# ------------------------------------------------------------------ training and detect()
@pytest.mark.parametrize("which", ["yolo", "detr"])
def test_detector_learns_a_fixed_batch(which: str, yolo: Any, detr: Any) -> None:
    mod = yolo if which == "yolo" else detr
    model = _small(mod, f"std.detection.{which}")
    batch = mod.example_batch(model, batch_size=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = model.loss(batch).item()
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first, (first, loss.item())


def test_detect_gives_boxes_per_image(yolo: Any, detr: Any) -> None:
    for mod, family in ((yolo, "std.detection.yolo"), (detr, "std.detection.detr")):
        model = _small(mod, family).eval()
        images = mod.example_inputs(model, batch_size=3)[0]
        out = model.detect(images, score_threshold=0.0)
        assert len(out) == 3
        for d in out:
            k = len(d["scores"])
            assert d["boxes"].shape == (k, 4) and d["labels"].shape == (k,) and k > 0
            assert (d["boxes"][:, 2:] >= d["boxes"][:, :2]).all()
            assert (d["scores"][:-1] >= d["scores"][1:]).all() or family.endswith("detr")
    model = _small(detr, "std.detection.detr").eval()
    assert len(model.detect(images, score_threshold=0.0)[0]["scores"]) == model.config.num_queries


# ------------------------------------------------------------------ DETR against transformers
def _transformers_detr(num_labels: int = 91) -> Any:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone=None,
                                  backbone_config=transformers.ResNetConfig(out_features=["stage4"]),
                                  num_labels=num_labels)
    with torch.device("meta"):
        return transformers.DetrForObjectDetection(cfg)


def test_detr_r50_equals_transformers_count(detr: Any) -> None:
    """transformers' DetrForObjectDetection (DETR-R50, 91 classes): 41,524,768 parameters, the backbone's frozen
    BatchNorms as buffers; ours has the same parameter and buffer shapes. DETR's published 41,302,368 counts what
    it trains: the stem's and layer1's convolutions (222,400) stay frozen."""
    theirs = _transformers_detr()
    with torch.device("meta"):
        ours = detr.build_model()
    n = sum(p.numel() for p in ours.parameters())
    assert n == sum(p.numel() for p in theirs.parameters()) == 41_524_768
    frozen = sum(p.numel() for k, p in ours.named_parameters() if k.startswith("encoder.") or ".layer1." in k)
    assert n - frozen == 41_302_368
    assert sorted(tuple(p.shape) for p in ours.parameters()) == sorted(tuple(p.shape) for p in theirs.parameters())
    assert sorted(tuple(b.shape) for b in ours.buffers()) == sorted(tuple(b.shape) for b in theirs.buffers())


def test_detr_computes_transformers_detr(detr: Any, tmp_path: Path) -> None:
    """A reduced DETR with transformers' weights as saved (two bottlenecks in the first stage, 3 x 3 feature map;
    read through the `detr` layout) gives transformers' logits and boxes."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone=None, num_labels=5, d_model=32,
        backbone_config=transformers.ResNetConfig(out_features=["stage4"], depths=[2, 1, 1, 1], embedding_size=8,
                                                  hidden_sizes=[32, 64, 128, 256]),
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_queries=4, auxiliary_loss=False)
    torch.manual_seed(0)
    theirs = transformers.DetrForObjectDetection(cfg).eval()
    with torch.no_grad():
        for k, t in theirs.state_dict().items():  # no unit norms, no zero biases: every tensor is exercised
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in k else t + 0.05 * torch.randn_like(t))
    ours = detr.build_model(dataclasses.replace(
        detr.Config(), image_size=96, width=8, depths=(2, 1, 1, 1), d_model=32, heads=2, ffn=64, layers=2,
        decoder_layers=2, num_queries=4, num_classes=5)).eval()
    theirs.save_pretrained(tmp_path)
    load_checkpoint(ours, tmp_path, layout="detr")
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, boxes = ours(images)
        ref = theirs(pixel_values=images, pixel_mask=torch.ones(2, 96, 96, dtype=torch.long))
    assert torch.allclose(logits, ref.logits, atol=1e-4), (logits - ref.logits).abs().max()
    assert torch.allclose(boxes, ref.pred_boxes, atol=1e-5), (boxes - ref.pred_boxes).abs().max()


def test_sine_positions_equal_transformers(detr: Any) -> None:
    modeling = pytest.importorskip("transformers.models.detr.modeling_detr")
    h, w, d = 5, 7, 64
    emb = modeling.DetrSinePositionEmbedding(d // 2, normalize=True)
    pixel_mask = torch.ones(2, h, w, dtype=torch.long)
    ref = emb(torch.Size((2, 3, h, w)), "cpu", torch.float32, mask=pixel_mask)  # (B, d, H, W)
    ref = ref.flatten(2).transpose(1, 2)  # (B, H*W, d)
    ours = detr.sine_position_2d(torch.zeros(2, h * w, d), h, w)
    assert torch.allclose(ours, ref, atol=1e-6)
