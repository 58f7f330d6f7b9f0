"""The PyTorch runtime modules (backends/pytorch/runtime/) called directly on small inputs with known answers, and the
mechanism that pastes their definitions into model.py: what a definition reads comes with it, in the runtime's order,
the pasted source is self-contained, and every runtime name is reserved, so a user block never takes one."""

from __future__ import annotations

import ast
import builtins
import inspect
import itertools
import math
import symtable
import sys
import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from metagen_backends.pytorch.losses import LOSSES, loss_helpers
from metagen_backends.pytorch.lowering import (
    FUNCTIONAL,
    MODULES,
    RUNTIME_MODULES,
    helper_deps,
    reserved_names,
    runtime_defs,
    runtime_method,
    runtime_source,
)
from metagen_backends.pytorch.runtime import (
    boxes,
    codec,
    detection,
    diffusion,
    helpers,
    masks,
    matching,
    recsys,
    rl,
)
from metagen_backends.pytorch.writer import Namespace, camel, py_ident

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile

F = torch.nn.functional
MODULES_BY_NAME = {"helpers": helpers, "boxes": boxes, "detection": detection, "matching": matching,
                   "diffusion": diffusion, "codec": codec, "masks": masks, "rl": rl, "recsys": recsys}
RUNTIME_DIR = Path(helpers.__file__).resolve().parent


def _t(rows: Any) -> Any:
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------ boxes
def test_box_iou_and_giou_of_known_boxes() -> None:
    a, b = _t([0, 0, 2, 2]), _t([1, 1, 3, 3])  # overlap 1, union 4 + 4 - 1 = 7, hull 3 x 3 = 9
    iou, union = boxes.box_iou(a, b)
    assert iou.item() == pytest.approx(1 / 7) and union.item() == pytest.approx(7)
    assert boxes.box_giou(a, b).item() == pytest.approx(1 / 7 - (9 - 7) / 9)
    far = _t([10, 10, 11, 11])  # disjoint: IoU 0, GIoU 0 - (hull 121 - union 5) / 121
    assert boxes.box_iou(a, far)[0].item() == 0.0
    assert boxes.box_giou(a, far).item() == pytest.approx(-(121 - 5) / 121)
    pairs = boxes.box_iou(torch.stack((a, b))[:, None], torch.stack((a, b, far))[None])[0]  # all pairs: (2, 3)
    torch.testing.assert_close(pairs, _t([[1, 1 / 7, 0], [1 / 7, 1, 0]]))
    assert boxes.box_area(_t([[0, 0, 2, 3], [2, 2, 1, 1]])).tolist() == [6.0, 0.0]  # an inverted box has area 0


def test_box_formats_round_trip() -> None:
    xyxy = _t([[1, 2, 5, 8], [0, 0, 1, 1]])
    cxcywh = boxes.box_xyxy_to_cxcywh(xyxy)
    torch.testing.assert_close(cxcywh, _t([[3, 5, 4, 6], [0.5, 0.5, 1, 1]]))
    torch.testing.assert_close(boxes.box_cxcywh_to_xyxy(cxcywh), xyxy)


def test_nms_keeps_the_best_of_each_overlapping_group() -> None:
    b = _t([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])  # 0, 1, 3 overlap (IoU > 0.6)
    s = _t([0.8, 0.9, 0.7, 0.6])
    assert boxes.nms(b, s, 0.5).tolist() == [1, 2]  # by decreasing score; 0 and 3 suppressed by 1
    assert boxes.nms(b, s, 0.95).tolist() == [1, 0, 2, 3]  # nothing overlaps that much
    labels = torch.tensor([0, 1, 0, 0])  # 1 alone in its class: suppresses nothing, and 0 then suppresses 3
    assert boxes.batched_nms(b, s, labels, 0.5).tolist() == [1, 0, 2]
    assert boxes.batched_nms(b[:0], s[:0], labels[:0], 0.5).tolist() == []


# ------------------------------------------------------------------ detection
def test_average_precision_and_map_50_of_a_known_case() -> None:
    gt_boxes = _t([[[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]]])  # one image, two objects and padding
    gt_labels = torch.tensor([[0, 1, -1]])
    det = {"boxes": _t([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 30, 30]]), "scores": _t([0.9, 0.8, 0.7]),
           "labels": torch.tensor([0, 1, 1])}
    # class 0: one hit first, AP 1; class 1: a miss (0.8) then a hit (0.7): precision 1/2 at recall 1, AP 0.5
    mean_ap, recall = detection.map_50([det], gt_boxes, gt_labels)
    assert mean_ap.item() == pytest.approx(0.75) and recall.item() == pytest.approx(1.0)
    # greedy matching: two predictions of one object, the second is a false positive
    iou = _t([[0.9], [0.8]])
    assert detection.greedy_hits(iou, torch.tensor([3, 3]), torch.tensor([3])).tolist() == [True, False]
    # AP with a false positive between two hits: precision 1, 1/2, 2/3 made monotone (1, 2/3, 2/3); hits at 1 and 3
    ap = detection.average_precision(_t([0.9, 0.8, 0.7]), torch.tensor([True, False, True]), torch.tensor([0, 0, 0]),
                                     torch.tensor([0, 0]))
    assert ap.item() == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(detection.average_precision(*(torch.zeros(0),) * 4).item())  # no ground truth: nan


def test_anchors_decoding_and_focal_loss() -> None:
    centres, strides = detection.detection_anchors(64)  # 8 x 8 + 4 x 4 + 2 x 2 cells
    assert centres.shape == (84, 2) and strides.tolist() == [8.0] * 64 + [16.0] * 16 + [32.0] * 4
    assert centres[0].tolist() == [4.0, 4.0] and centres[1].tolist() == [12.0, 4.0] and centres[64].tolist() == [8.0, 8.0]
    raw = torch.full((1, 84, 4), math.log(math.e - 1))  # softplus(raw) = 1: every side one stride away
    decoded = detection.decode_ltrb(raw, centres, strides)
    torch.testing.assert_close(decoded[0, 0], _t([-4, -4, 12, 12]))
    torch.testing.assert_close(decoded[0, 64], _t([-8, -8, 24, 24]))
    logits, targets = _t([2.0, -1.0]), _t([1.0, 0.0])
    p = torch.sigmoid(logits)
    # FL = -alpha_t (1 - p_t)^gamma log p_t, alpha_t = 0.25 for positives, 0.75 for negatives
    want = torch.stack((-0.25 * (1 - p[0]) ** 2 * torch.log(p[0]), -0.75 * p[1] ** 2 * torch.log(1 - p[1])))
    torch.testing.assert_close(detection.sigmoid_focal_loss(logits, targets), want)


def test_center_prior_assignment() -> None:
    centres, strides = detection.detection_anchors(64)
    gt_boxes = _t([[[8, 8, 40, 40], [0, 0, 0, 0]]])  # a 32-pixel box (its cells reach at most 32: stride 8 only)
    target_cls, target_box, positive = detection.assign_center_prior(centres, strides, gt_boxes, torch.tensor([[2, -1]]),
                                                                     num_classes=3)
    inside = ((centres > 8) & (centres < 40)).all(-1) & (strides == 8)  # within 2.5 strides (20 px) of the centre 24
    near = ((centres - 24).abs() < 20).all(-1)
    assert torch.equal(positive[0], inside & near) and positive.sum() > 0
    assert target_cls[0, positive[0]].tolist() == [[0.0, 0.0, 1.0]] * int(positive.sum())
    assert target_cls[0, ~positive[0]].sum() == 0
    assert (target_box[0, positive[0]] == gt_boxes[0, 0]).all()


class _FakeModel:
    """A model for the runtime's methods: `self(images)` gives fixed outputs; config has image_size."""

    def __init__(self, outputs: Any, **config: Any) -> None:
        self.outputs, self.config = outputs, types.SimpleNamespace(**config)

    def __call__(self, *args: Any) -> Any:
        return self.outputs(*args) if callable(self.outputs) else self.outputs


def test_fcos_detect() -> None:
    logits = torch.full((1, 84, 2), -10.0)
    logits[0, 9, 1] = 3.0  # cell (1, 1) of stride 8, class 1
    logits[0, 10, 1] = 2.0  # its neighbour, the same box shifted by 8: suppressed at IoU 0.45 (IoU 0.6)
    logits[0, 70, 0] = 1.0  # a stride-16 cell, class 0
    raw = torch.full((1, 84, 4), math.log(math.e**2 - 1))  # sides 2 strides away
    model = _FakeModel((logits, raw), image_size=64)
    (out,) = detection.detect(model, torch.zeros(1, 3, 64, 64))
    assert out["labels"].tolist() == [1, 0]
    torch.testing.assert_close(out["scores"], torch.sigmoid(_t([3.0, 1.0])))
    torch.testing.assert_close(out["boxes"][0], _t([-4, -4, 28, 28]))  # centre (12, 12), 16 px each side
    (none,) = detection.detect(model, torch.zeros(1, 3, 64, 64), score_threshold=0.99)
    assert len(none["scores"]) == 0


# ------------------------------------------------------------------ matching (Hungarian, DETR)
@pytest.mark.parametrize("shape", [(3, 3), (2, 4), (4, 2), (1, 1)])
def test_linear_sum_assignment_is_the_brute_force_minimum(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    cost = torch.rand(shape, generator=g)
    rows, cols = matching.linear_sum_assignment(cost)
    n, m = shape
    best = min((sum(cost[r, c].item() for r, c in zip(rs, cs)), rs, cs)
               for rs in itertools.combinations(range(n), min(n, m)) for cs in itertools.permutations(range(m), min(n, m)))
    assert rows == sorted(rows) and len(set(cols)) == len(cols) == min(n, m)
    assert sum(cost[r, c].item() for r, c in zip(rows, cols)) == pytest.approx(best[0])


def test_set_prediction_loss_of_exact_boxes_is_the_class_term() -> None:
    classes = 4  # 3 classes and no object
    gt_boxes = _t([[[16, 16, 48, 48]]])
    boxes_ = _t([[[0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5], [0.9, 0.9, 0.1, 0.1]]])  # query 1 is the object exactly
    logits = torch.zeros(1, 3, classes)  # uniform: cross-entropy log(4) whatever the weights
    loss = matching.set_prediction_loss(logits, boxes_, gt_boxes, torch.tensor([[2]]), image_size=64)
    assert loss.item() == pytest.approx(math.log(classes), abs=1e-6)
    shifted = boxes_.clone()
    shifted[0, 1, 0] += 0.1  # cx off by 0.1: L1 0.1 (weight 5) and a GIoU below 1 (weight 2)
    more = matching.set_prediction_loss(logits, shifted, gt_boxes, torch.tensor([[2]]), image_size=64)
    giou = boxes.box_giou(boxes.box_cxcywh_to_xyxy(shifted[0, 1]), boxes.box_cxcywh_to_xyxy(boxes_[0, 1]))
    assert more.item() == pytest.approx(math.log(classes) + 5 * 0.1 + 2 * (1 - giou.item()), abs=1e-5)


def test_detr_detect() -> None:
    logits = _t([[[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]]])  # query 0: class 0; query 1: no object
    boxes_ = _t([[[0.5, 0.5, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5]]])
    (out,) = matching.detect(_FakeModel((logits, boxes_), image_size=100), None, score_threshold=0.5)
    assert out["labels"].tolist() == [0]
    torch.testing.assert_close(out["boxes"], _t([[25, 25, 75, 75]]))
    torch.testing.assert_close(out["scores"], torch.softmax(logits[0, 0], -1)[:1])


# ------------------------------------------------------------------ diffusion
def test_noise_schedules_against_their_formulas() -> None:
    lin = diffusion.noise_schedule("linear", 5, 0.1, 0.5)
    torch.testing.assert_close(lin, _t([0.1, 0.2, 0.3, 0.4, 0.5]))
    sl = diffusion.noise_schedule("scaled_linear", 3, 0.01, 0.09)  # sqrt: 0.1, 0.2, 0.3
    torch.testing.assert_close(sl, _t([0.01, 0.04, 0.09]))
    T = 10
    cos = diffusion.noise_schedule("cosine", T, 0, 0)
    abar = [math.cos((s / T + 0.008) / 1.008 * math.pi / 2) ** 2 for s in range(T + 1)]
    # prod(1 - beta) up to t is alpha_bar((t + 1) / T) / alpha_bar(0), where no beta is capped at 0.999
    capped = cos >= 0.999 - 1e-7
    cum = torch.cumprod(1 - cos.double(), 0)
    for t in range(T):
        if not capped[: t + 1].any():
            assert cum[t].item() == pytest.approx(abar[t + 1] / abar[0], rel=1e-5)
    assert capped[-1] and cos.max().item() == pytest.approx(0.999)
    with pytest.raises(ValueError, match="unknown beta schedule"):
        diffusion.noise_schedule("sigmoid", T, 0, 0)


# ------------------------------------------------------------------ codec language models
def test_delay_pattern_layout_and_inverse() -> None:
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6]]])  # (B=1, K=2, T=3)
    seq = codec.delay_pattern(codes, special=9)
    assert seq.tolist() == [[[9, 1, 2, 3, 9], [9, 9, 4, 5, 6]]]
    assert torch.equal(codec.undelay_pattern(seq, 3), codes)


def test_codebook_nll_ignores_the_gaps() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 3, 10, generator=g)
    targets = torch.tensor([[[1, 2, 9], [9, 4, 5]]])  # 9: the special gap id
    nll, accuracy = codec.codebook_nll(logits, targets, special=9)
    per_book = [F.cross_entropy(logits[0, 0, :2], targets[0, 0, :2]), F.cross_entropy(logits[0, 1, 1:], targets[0, 1, 1:])]
    torch.testing.assert_close(nll, torch.stack(per_book).mean())
    valid = targets != 9
    assert accuracy.item() == pytest.approx(((logits.argmax(-1) == targets) & valid).sum().item() / 4)


def test_codec_generate_keeps_the_prompt_and_fills_frames() -> None:
    K, V = 2, 5

    def next_logits(seq: Any) -> Any:  # always prefers token (codebook index + 1)
        out = torch.zeros(*seq.shape, V)
        for k in range(K):
            out[:, k, :, k + 1] = 10.0
        return out

    model = _FakeModel(next_logits, codebook_size=V)
    prompt = torch.tensor([[[3], [4]]])  # (1, 2, 1)
    out = codec.generate(model, prompt, steps=2, temperature=0.0)
    assert out.tolist() == [[[3, 1, 1], [4, 2, 2]]]


# ------------------------------------------------------------------ masks
def _ids(rows: list[str]) -> Any:
    return torch.tensor([[int(c) for c in r] for r in rows])


def test_mask_iou_and_pair_costs() -> None:
    a = _ids(["1100", "1100"]).flatten()[None].bool()
    b = _ids(["1000", "1000"]).flatten()[None].bool()
    assert masks.mask_iou(a, b).tolist() == [[0.5]] and masks.mask_iou(a, a).tolist() == [[1.0]]
    logits = torch.where(a, 20.0, -20.0).float()  # a confident prediction of a
    focal, dice = masks.mask_pair_costs(logits, torch.cat((a, b)).float())
    assert dice[0, 0].item() == pytest.approx(0.0, abs=1e-6)  # 1 - (2 * 4 + 1) / (4 + 4 + 1)
    assert dice[0, 1].item() == pytest.approx(1 - (2 * 2 + 1) / (4 + 2 + 1), abs=1e-6)
    assert focal[0, 0].item() < 1e-6 < focal[0, 1].item()


def test_panoptic_quality_perfect_and_by_hand() -> None:
    gt = _ids(["1122", "1122"])[None]
    pq, sq, rq = masks.panoptic_quality(gt, [torch.tensor([0, 1])], gt, [torch.tensor([0, 1])], num_classes=2)
    assert (pq.item(), sq.item(), rq.item()) == (1.0, 1.0, 1.0)
    # segment 2 predicted as one pixel wider (IoU 4/6 > 0.5): TP with IoU 2/3 in class 1; class 0 perfect
    pred = _ids(["1222", "1222"])[None]
    pq, sq, rq = masks.panoptic_quality(pred, [torch.tensor([0, 1])], gt, [torch.tensor([0, 1])], num_classes=2)
    # class 0: predicted 2 px vs 4 px (IoU 1/2, not > 0.5): FP + FN, PQ 0; class 1: PQ = SQ = 2/3, RQ 1
    assert pq.item() == pytest.approx((0 + 2 / 3) / 2) and rq.item() == pytest.approx((0 + 1) / 2)
    assert sq.item() == pytest.approx((0 + 2 / 3) / 2)


def test_segments_and_mask_map() -> None:
    gt_masks = torch.stack((_ids(["1100", "1100"]), _ids(["0011", "0011"]), torch.zeros(2, 4, dtype=torch.long)))[None]
    labels = torch.tensor([[1, 0, -1]])
    ids, classes = masks.segments_from_masks(gt_masks.float(), labels)
    assert ids.tolist() == [[[1, 1, 2, 2], [1, 1, 2, 2]]] and classes[0].tolist() == [1, 0, -1]
    inst = [{"scores": _t([0.9, 0.8]), "labels": torch.tensor([1, 1]), "masks": gt_masks[0, :2].bool()}]
    # class 1: a hit (0.9) then a miss (0.8): AP 1; class 0: no prediction, AP 0 -> mAP 0.5
    assert masks.mask_map_50(inst, gt_masks.float(), labels).item() == pytest.approx(0.5)


def test_mask_set_loss_and_inference() -> None:
    gt_masks = torch.stack((_ids(["1100"] * 4), _ids(["0011"] * 4)))[None].float()  # (1, 2, 4, 4)
    labels = torch.tensor([[0, 1]])
    logits = torch.full((1, 3, 3), -5.0)  # queries 0, 1 predict classes 0, 1 with masks exact; query 2 no object
    logits[0, 0, 0] = logits[0, 1, 1] = logits[0, 2, 2] = 5.0
    pred_masks = torch.stack((gt_masks[0, 0], gt_masks[0, 1], torch.zeros(4, 4)))[None] * 40 - 20
    matches = masks.match_masks(logits, pred_masks, gt_masks, labels)
    assert (matches[0][0], matches[0][1]) == ([0, 1], [0, 1])
    assert masks.mean_matched_iou(matches).item() == 1.0
    loss = masks.mask_set_loss(logits, pred_masks, gt_masks, labels)
    worse = masks.mask_set_loss(logits, pred_masks.flip(1), gt_masks, labels)
    assert torch.isfinite(loss) and loss < worse
    model = _FakeModel(None, image_size=4)
    ids, classes = masks.panoptic_inference(model, (logits, pred_masks), object_threshold=0.5)
    assert torch.equal(ids[0], masks.segments_from_masks(gt_masks, labels)[0][0]) and classes[0].tolist() == [0, 1]
    (inst,) = masks.instance_inference(model, (logits, pred_masks), top_k=2)
    assert inst["labels"].tolist() == [0, 1] and torch.equal(inst["masks"], gt_masks[0].bool())


# ------------------------------------------------------------------ reinforcement learning and recommendation
def test_policy_acts() -> None:
    logits = _t([[0.0, 5.0, 1.0], [9.0, 0.0, 0.0]])
    policy = _FakeModel(lambda obs: logits)
    assert rl.policy_act(policy, None, greedy=True).tolist() == [1, 0]
    assert rl.actor_critic_act(_FakeModel(lambda obs: (logits, None)), None, greedy=True).tolist() == [1, 0]
    torch.manual_seed(0)  # sampled: the frequencies of softmax(logits)
    draws = torch.stack([rl.policy_act(_FakeModel(lambda obs: _t([[0.0, math.log(3.0)]])), None) for _ in range(4000)])
    assert draws.float().mean().item() == pytest.approx(0.75, abs=0.03)
    mean, log_std = _t([[1.0, -2.0]]), _t([[math.log(0.5), math.log(0.5)]])
    assert torch.equal(rl.gaussian_act(_FakeModel(lambda obs: (mean, log_std)), None, greedy=True), mean)
    samples = torch.cat([rl.gaussian_actor_critic_act(_FakeModel(lambda obs: (mean, log_std, None)), None)
                         for _ in range(4000)])
    torch.testing.assert_close(samples.mean(0), mean[0], atol=0.05, rtol=0)
    torch.testing.assert_close(samples.std(0), _t([0.5, 0.5]), atol=0.03, rtol=0)


def test_q_act_and_update_target() -> None:
    class QNet(torch.nn.Linear):  # type: ignore[name-defined,misc]
        act = rl.q_act
        update_target = rl.update_target

    torch.manual_seed(0)
    q = QNet(3, 4)
    q.config = types.SimpleNamespace(num_actions=4)
    obs = torch.randn(500, 3)
    greedy = q.act(obs, greedy=True)
    assert torch.equal(greedy, q(obs).argmax(-1)) and torch.equal(q.act(obs, epsilon=0.0), greedy)
    explored = q.act(obs, epsilon=1.0)  # uniform actions: about a quarter agree with the greedy ones
    assert 0.15 < (explored == greedy).float().mean().item() < 0.35
    target = q.update_target()
    assert q.__dict__["target_network"] is target and "target_network" not in dict(q.named_modules())
    assert not any(p.requires_grad for p in target.parameters()) and not target.training
    with torch.no_grad():
        q.weight.add_(1.0)
    assert not torch.equal(target.weight, q.weight)
    assert q.update_target() is target and torch.equal(target.weight, q.weight)  # copied into the same network


def test_planning_act_and_recommend() -> None:
    def world(obs: Any, actions: Any) -> Any:  # predicted reward: action 2 in every state
        reward = (actions == 2).float()[:, None]
        return None, reward, None

    model = _FakeModel(world, num_actions=3)
    assert rl.planning_act(model, torch.zeros(4, 5), greedy=True).tolist() == [2, 2, 2, 2]
    users, items = _t([[1.0, 0.0], [0.0, 1.0]]), _t([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    towers = _FakeModel(lambda user, item: (users[user], items[item]), num_items=3)
    assert recsys.recommend(towers, torch.tensor([0, 1]), k=2).tolist() == [[0, 2], [1, 2]]


# ------------------------------------------------------------------ helpers
def test_init_weights() -> None:
    torch.manual_seed(0)
    lin, conv, emb = torch.nn.Linear(200, 300), torch.nn.Conv2d(8, 64, 3), torch.nn.Embedding(500, 40)
    for m in (lin, conv, emb):
        helpers.init_weights(m)
    assert lin.bias.abs().sum() == 0 and lin.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    # Kaiming normal, fan_out = 64 * 3 * 3: std sqrt(2 / 576)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.05) and conv.bias.abs().sum() == 0


# ------------------------------------------------------------------ the runtime as model.py gets it
def test_registry_is_the_modules_definitions() -> None:
    """Every definition the emitter knows is the real module's, with the same name; methods take `self`; the module
    names are unique across modules (model.py holds them in one namespace)."""
    defs, methods = runtime_defs()
    assert tuple(MODULES_BY_NAME) == RUNTIME_MODULES
    for name, d in defs.items():
        assert name in vars(MODULES_BY_NAME[d.module]) and not d.method
        first = d.text.split("\n")[0]
        assert first.startswith(("def ", "class ", "@", name)), first
    for key, m in methods.items():
        fn = vars(MODULES_BY_NAME[m.module])[m.name]
        assert key == f"{m.module}.{m.name}" and next(iter(inspect.signature(fn).parameters)) == "self"
    assert {"detection.detect", "matching.detect", "codec.generate", "masks.instance_inference"} <= methods.keys()


@pytest.mark.parametrize("module", RUNTIME_MODULES)
def test_registry_agrees_with_the_syntax_tree(module: str) -> None:
    """The emitter reads the runtime modules' text with regular expressions (a compile reads all of them); their
    syntax trees give the same definitions, in the same order, each from its first decorator to the next one, with
    the same runtime names read (ast.Name nodes), and only definitions after the imports."""
    defs, methods = runtime_defs()
    mine = sorted((d for d in [*defs.values(), *methods.values()] if d.module == module), key=lambda d: d.order)
    source = (RUNTIME_DIR / f"{module}.py").read_text()
    lines = source.split("\n")
    tree = ast.parse(source)
    nodes = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom))][1:]  # after the docstring
    assert isinstance(tree.body[0], ast.Expr) and all(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign))
                                                      for n in nodes)
    names = [n.targets[0].id if isinstance(n, ast.Assign) else n.name for n in nodes]  # type: ignore[attr-defined]
    assert names == [d.name for d in mine]
    starts = [min([n.lineno] + [d.lineno for d in getattr(n, "decorator_list", [])]) for n in nodes]
    for i, (node, d) in enumerate(zip(nodes, mine)):
        end = starts[i + 1] - 1 if i + 1 < len(nodes) else len(lines)
        assert d.text == "\n".join(lines[starts[i] - 1 : end]).rstrip("\n")
        assert d.uses == {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & defs.keys() - {d.name}
        args = node.args.args if isinstance(node, ast.FunctionDef) else []
        assert d.method == (bool(args) and args[0].arg == "self")


@pytest.mark.parametrize("module", RUNTIME_MODULES)
def test_module_imports_are_model_py_header_or_runtime(module: str) -> None:
    """A runtime module imports what model.py imports (math, torch, nn, F, a task's `imports`) or other runtime
    modules' definitions, which model.py holds beside its own."""
    defs = runtime_defs()[0]
    tree = ast.parse((RUNTIME_DIR / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Import):
            extra = {m for code in LOSSES.values() for m in code.imports}  # what a task's model.py imports besides
            assert all(a.name in {"math", "torch", "torch.nn", "torch.nn.functional", *extra} for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 1 and node.module in RUNTIME_MODULES
            assert all(a.name in defs and defs[a.name].module == node.module for a in node.names)


def _undefined(source: str) -> set[str]:
    """Global names the functions and classes of `source` read that it neither defines nor imports."""
    top = symtable.symtable(source, "model.py", "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    known = defined | set(dir(builtins)) | {"__file__"}
    out: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for s in table.get_symbols():
            if s.is_global() and s.is_referenced() and s.get_name() not in known:
                out.add(s.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    return out


HEADER = "import math\n\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\n"


@pytest.mark.parametrize("name", sorted(runtime_defs()[0]))
def test_each_definition_comes_with_what_it_reads(name: str) -> None:
    """model.py's header and runtime_source([name]) define every global name the pasted code reads, and run."""
    source = HEADER + "\n\n\n".join(runtime_source([name]))
    assert _undefined(source) == set()
    exec(compile(source, "model.py", "exec"), {})  # noqa: S102


@pytest.mark.parametrize("loss", sorted(k for k in LOSSES if LOSSES[k].source_methods or loss_helpers(k)))
def test_each_task_gets_what_its_code_calls(loss: str) -> None:
    """A task's runtime methods pasted into a class, with the runtime definitions loss_helpers finds and the task's
    imports, read nothing undefined; a renamed method is pasted under the class's name for it."""
    code = LOSSES[loss]
    methods = [runtime_method(k) for k in code.source_methods if k]
    for key, m in zip([k for k in code.source_methods if k], methods):
        assert m.text.split("def ", 1)[1].startswith(key.split(" as ")[-1].split(".")[-1] + "(")
    body = "\n\n".join("    " + m.text.replace("\n", "\n    ") for m in methods)
    imports = "".join(f"import {m}\n" for m in code.imports)
    source = imports + HEADER + "\n\n\n".join(runtime_source(loss_helpers(loss))) + "\n\n\nclass Model:\n    pass\n\n" + body + "\n"
    assert _undefined(source) == set()


def test_runtime_source_closure_and_order() -> None:
    defs = runtime_defs()[0]
    assert runtime_source(["log_mel"]) == [defs["mel_filters"].text, defs["log_mel"].text]  # log_mel calls it
    assert runtime_source(["GCNConv", "with_self_loops"]) == runtime_source(["GCNConv"])
    got = runtime_source(["mask_map_50"])  # masks.py's, then detection.py's and boxes.py's: the modules' order
    assert got == [defs[n].text for n in ("greedy_hits", "average_precision", "mask_iou", "mask_map_50")]
    assert defs["detection_anchors"].uses == {"DETECTION_STRIDES"}
    with pytest.raises(KeyError, match="not a definition of the runtime modules"):
        runtime_source(["no_such_helper"])


def test_every_name_a_lowering_template_calls_is_a_runtime_definition() -> None:
    """A primitive's lowering that calls a helper gets it in model.py (helper_deps reads the template)."""
    defs = runtime_defs()[0]
    for prim, tmpl in {**MODULES, **FUNCTIONAL}.items():
        bare = {n for n in __import__("re").findall(r"(?<![\w.{])([A-Za-z_]\w*)\(", tmpl)}
        assert bare <= defs.keys(), (prim, bare - defs.keys())
        assert set(helper_deps(prim)) == bare
    assert helper_deps("gcn_conv") == ["GCNConv"] and "with_self_loops" in defs["GCNConv"].uses


# ------------------------------------------------------------------ the namespace
def test_every_runtime_name_is_reserved() -> None:
    ns = Namespace()
    for name in runtime_defs()[0]:
        assert name in reserved_names() and py_ident(name) != name and ns.name(("k", name), name) != name
    assert camel("layerScale") == "LayerScaleBlock" and camel("mo_e") == "MoE" + "Block"


LAYER_SCALE_SPEC = """msl 1
import std.layers
import std.tabular

block layerScale(dim: int) {
  input x
  return x + (x >> gamma: layer_scale(dim))
}

block scaled_body(hidden: int) {
  input x
  return x >> ls: layerScale(hidden)
}

family scaled_mlp(features: int = 8, hidden: int = 16, num_classes: int = 3) {
  encoder tabular = mlp_input(features, hidden)
  backbone = scaled_body(hidden)
  head classification = linear_head(hidden, num_classes)
}

model scaled {
  modality tabular -> label
  task classification { num_classes = 3 }
  objective classification
  architecture scaled_mlp
}
"""


def test_user_block_named_like_a_runtime_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user block `layerScale` beside the `layer_scale` primitive: the primitive's runtime class keeps its name
    LayerScale and the block's class is LayerScaleBlock (it was a second `class LayerScale`, whose __init__ built
    itself: RecursionError at build time)."""
    from metagen_backends.pytorch import emit

    comp = compile_source(SourceFile("main.msl", LAYER_SCALE_SPEC))
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    source = emit(comp)["model.py"]
    classes = [ln.split("(")[0] for ln in source.split("\n") if ln.startswith("class ")]
    assert classes.count("class LayerScale") == 1 and "class LayerScaleBlock" in classes
    assert "self.gamma = LayerScale(dim)" in source and "self.ls = LayerScaleBlock(hidden)" in source
    mod = types.ModuleType("scaled_model")
    monkeypatch.setitem(sys.modules, mod.__name__, mod)  # its dataclass looks itself up there
    exec(compile(source, "model.py", "exec"), mod.__dict__)  # noqa: S102
    model = mod.build_model()
    assert torch.isfinite(model.loss(mod.example_batch(model)))
