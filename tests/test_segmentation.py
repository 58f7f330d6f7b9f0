"""Mask classification (std.segmentation, MaskFormer): the generated model's Hungarian matching on mask costs, set
loss, mask AP, panoptic quality and inference on hand-built cases; the preset's parameter count and, at small dims
with the same weights, its class and mask logits against transformers' MaskFormerForInstanceSegmentation."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT, generated_module
from test_numeric import SMALL

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile

INSTANCE = ROOT / "examples" / "maskformer_instance.msl"
PANOPTIC = ROOT / "examples" / "maskformer_panoptic.msl"
F = torch.nn.functional


def _module(path: Path, tmp: Path) -> Any:
    return generated_module(path, tmp, f"seg_{path.stem}")


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _module(INSTANCE, tmp_path_factory.mktemp("inst"))


@pytest.fixture(scope="module")
def pan(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _module(PANOPTIC, tmp_path_factory.mktemp("pan"))


def _small(mod: Any) -> Any:
    return mod.build_model(dataclasses.replace(mod.Config(), **SMALL["std.segmentation.maskformer"]))


# ------------------------------------------------------------------ panoptic quality
def _ids(rows: list[str]) -> Any:
    return torch.tensor([[int(c) for c in r] for r in rows])[None]


def test_pq_perfect_empty_and_by_hand(pan: Any) -> None:
    gt = _ids(["1122", "1122", "1122", "1122"])  # two 8-pixel segments: class 0 left, class 1 right
    classes = [torch.tensor([0, 1])]
    assert [float(v) for v in pan.panoptic_quality(gt, classes, gt, classes, 3)] == [1.0, 1.0, 1.0]
    empty = torch.zeros_like(gt)
    assert [float(v) for v in pan.panoptic_quality(empty, [torch.zeros(0, dtype=torch.long)], gt, classes, 3)] == [0, 0, 0]
    # class 0 predicted on 3 columns: IoU 8 / 12 (TP); class 1 on one column: IoU 4 / 8 = 0.5, not > 0.5 (FP and FN).
    # class 0: PQ = SQ = 2/3, RQ = 1; class 1: 0, 0, 0 -> means PQ 1/3, SQ 1/3, RQ 1/2
    pred = _ids(["1112", "1112", "1112", "1112"])
    pq, sq, rq = (float(v) for v in pan.panoptic_quality(pred, classes, gt, classes, 3))
    assert pq == pytest.approx(1 / 3) and sq == pytest.approx(1 / 3) and rq == pytest.approx(0.5)


def test_pq_void(pan: Any) -> None:
    gt = _ids(["1100", "1100", "1100", "1100"])  # the right half is void
    classes = [torch.tensor([0])]
    # a prediction of class 0 on three columns: the void column leaves the union (IoU 8 / 8); a class-1 segment in the
    # void is no false positive
    pred = _ids(["1112", "1112", "1112", "1112"])
    pq, sq, rq = (float(v) for v in pan.panoptic_quality(pred, [torch.tensor([0, 1])], gt, classes, 2))
    assert (pq, sq, rq) == (1.0, 1.0, 1.0)


def test_segments_from_masks(pan: Any) -> None:
    masks = torch.zeros(1, 3, 2, 2)
    masks[0, 0, 0] = 1
    masks[0, 1, 1, 1] = 1
    ids, classes = pan.segments_from_masks(masks, torch.tensor([[4, 2, -1]]))
    assert ids.tolist() == [[[1, 1], [0, 2]]] and classes[0].tolist() == [4, 2, -1]


def test_panoptic_inference_by_hand(pan: Any) -> None:
    big = 10.0
    logits = torch.tensor([[[big, 0, 0], [0, big, 0], [0, 0, big]]])  # query 2 predicts no object
    masks = torch.full((1, 3, 4, 4), -big)
    masks[0, 0, :, :2] = big  # query 0: the left half
    masks[0, 1, :, 2:] = big  # query 1: the right half
    masks[0, 2] = big  # dropped: no object
    ids, classes = pan.panoptic_inference_fn(logits, masks, (4, 4))
    assert ids[0].tolist() == [[1, 1, 2, 2]] * 4 and classes[0].tolist() == [0, 1]
    # a confident query whose mask the other one outbids on most of its pixels is no segment (overlap 0.8)
    masks[0, 1] = big
    masks[0, 0, :, :] = -big
    masks[0, 0, 0, 0] = big
    logits[0, 0] = torch.tensor([big, 0, 0])
    ids, classes = pan.panoptic_inference_fn(logits, masks, (4, 4))
    assert classes[0].tolist() in ([1], [0, 1])
    assert (ids[0] == len(classes[0])).sum() >= 15
    # every query below the object threshold: all void
    ids, classes = pan.panoptic_inference_fn(torch.zeros(1, 3, 3), masks, (4, 4))
    assert ids.sum() == 0 and classes[0].numel() == 0


# ------------------------------------------------------------------ instances and mask AP
def test_mask_map_50_by_hand(inst: Any) -> None:
    gt = torch.zeros(1, 2, 4, 4)
    gt[0, 0, :2] = 1
    gt[0, 1, 2:] = 1
    labels = torch.tensor([[0, 0]])
    perfect = [{"scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0]), "masks": gt[0] > 0}]
    assert float(inst.mask_map_50(perfect, gt, labels)) == 1.0
    # by score: a hit, a miss (IoU 0), a hit -> precision 1, 1/2, 2/3, made monotone 1, 2/3, 2/3; AP = (1 + 2/3) / 2
    miss = torch.zeros(4, 4, dtype=torch.bool)
    miss[0, 0] = True
    dets = [{"scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 0]),
             "masks": torch.stack([gt[0, 0] > 0, miss, gt[0, 1] > 0])}]
    assert float(inst.mask_map_50(dets, gt, labels)) == pytest.approx(5 / 6)
    wrong_class = [{"scores": torch.tensor([0.9]), "labels": torch.tensor([1]), "masks": (gt[0, :1] > 0)}]
    assert float(inst.mask_map_50(wrong_class, gt, labels)) == 0.0


def test_instance_inference_by_hand(inst: Any) -> None:
    logits = torch.tensor([[[0.0, 3.0, 0.0], [2.0, 0.0, 0.0]]])  # query 0: class 1, query 1: class 0
    masks = torch.full((1, 2, 2, 2), -5.0)
    masks[0, 0, 0] = 5.0
    masks[0, 1, :, 0] = 5.0
    out = inst.instance_inference_fn(logits, masks, 2, (2, 2))[0]
    prob = logits[0].softmax(-1)
    inside = torch.tensor(5.0).sigmoid()
    assert out["labels"].tolist() == [1, 0]
    assert torch.allclose(out["scores"], torch.stack([prob[0, 1], prob[1, 0]]) * inside)
    assert out["masks"].tolist() == [[[True, True], [False, False]], [[True, False], [True, False]]]


# ------------------------------------------------------------------ matching and loss
def test_matching_is_the_brute_force_minimum(inst: Any) -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        Q, G, K = 4, 3, 3
        logits, masks = torch.randn(1, Q, K + 1, generator=g), torch.randn(1, Q, 4, 4, generator=g)
        gt = (torch.rand(1, G, 8, 8, generator=g) > 0.5).float()
        labels = torch.randint(0, K, (1, G), generator=g)
        ((rows, cols, pred, truth, lab),) = inst.match_masks(logits, masks, gt, labels)
        focal, dice = inst.mask_pair_costs(pred, truth)
        cost = -logits[0].softmax(-1)[:, lab] + 20 * focal + dice
        best = min(sum(float(cost[q, j]) for j, q in enumerate(p)) for p in itertools.permutations(range(Q), G))
        assert sum(float(cost[r, c]) for r, c in zip(rows, cols)) == pytest.approx(best, rel=1e-6)
        assert sorted(cols) == list(range(G))


def test_mask_pair_costs_against_elementwise(inst: Any) -> None:
    g = torch.Generator().manual_seed(1)
    pred, truth = torch.randn(3, 10, generator=g), (torch.rand(2, 10, generator=g) > 0.5).float()
    focal, dice = inst.mask_pair_costs(pred, truth)
    for q in range(3):
        for j in range(2):
            p = pred[q].sigmoid()
            ce = F.binary_cross_entropy_with_logits(pred[q], truth[j], reduction="none")
            p_t = p * truth[j] + (1 - p) * (1 - truth[j])
            f = (ce * (1 - p_t) ** 2 * (0.25 * truth[j] + 0.75 * (1 - truth[j]))).mean()
            d = 1 - (2 * (p * truth[j]).sum() + 1) / (p.sum() + truth[j].sum() + 1)
            assert float(focal[q, j]) == pytest.approx(float(f), rel=1e-5)
            assert float(dice[q, j]) == pytest.approx(float(d), rel=1e-5)


def test_loss_by_hand_and_permutation_invariant(inst: Any) -> None:
    big = 20.0
    gt = torch.zeros(1, 2, 4, 4)
    gt[0, 0, :2] = 1
    gt[0, 1, 2:] = 1
    labels = torch.tensor([[1, 0]])
    # query 1 predicts segment 0 exactly, query 2 segment 1, query 0 nothing: matched masks cost ~0 (the dice's +1
    # smoothing leaves 1 - 17 / 17 = 0 for a perfect mask)
    logits = torch.tensor([[[0.0, 0.0, big], [0.0, big, 0.0], [big, 0.0, 0.0]]])
    masks = torch.stack([torch.full((4, 4), -big), gt[0, 0] * 2 * big - big, gt[0, 1] * 2 * big - big])[None]
    loss = inst.mask_set_loss(logits, masks, gt, labels)
    target = torch.tensor([[2, 1, 0]])
    expected = F.cross_entropy(logits.transpose(1, 2), target, torch.tensor([1.0, 1.0, 0.1]))
    assert float(loss) == pytest.approx(float(expected), abs=1e-5)
    assert float(loss) < 1e-3
    perm = torch.tensor([2, 0, 1])
    assert float(inst.mask_set_loss(logits[:, perm], masks[:, perm], gt, labels)) == pytest.approx(float(loss), abs=1e-7)
    # a wrong class on the matched query: the cross-entropy of that query over the weight sum (1 + 1 + 0.1)
    wrong = logits.clone()
    wrong[0, 1] = torch.tensor([big, 0.0, 0.0])
    ce = F.cross_entropy(wrong.transpose(1, 2), target, torch.tensor([1.0, 1.0, 0.1]))
    assert float(inst.mask_set_loss(wrong, masks, gt, labels)) == pytest.approx(float(ce), rel=1e-4)
    assert float(ce) == pytest.approx(big / 2.1, rel=1e-3)


def test_example_batch_and_training(inst: Any, pan: Any) -> None:
    for mod in (inst, pan):
        torch.manual_seed(0)
        model = _small(mod)
        batch = mod.example_batch(model, batch_size=4)
        m, lab = batch["masks"], batch["labels"]
        assert m.shape == (4, 4, 64, 64) and lab.shape == (4, 4)
        assert (m.sum(1) <= 1).all()  # disjoint segments
        assert ((m.sum((2, 3)) > 0) == (lab >= 0)).all()  # a label exactly where a segment has pixels
        assert ((lab >= 0).sum(1) <= torch.tensor([1, 2, 3, 4])).all()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        first = model.loss(batch).item()
        for _ in range(15):
            opt.zero_grad()
            model.loss(batch).backward()
            opt.step()
        assert model.loss(batch).item() < first


def test_preset_count_equals_transformers(inst: Any) -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.maskformer import modeling_maskformer as mm

    # the loss and matcher carry no parameters (and want scipy): left out
    patched = {n: getattr(mm, n) for n in ("MaskFormerLoss", "MaskFormerHungarianMatcher")}
    try:
        for n in patched:
            setattr(mm, n, lambda *a, **k: torch.nn.Module())
        for classes in (133, 80):
            bb = transformers.ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048],
                                           layer_type="bottleneck", out_features=["stage1", "stage2", "stage3", "stage4"])
            cfg = transformers.MaskFormerConfig(backbone_config=bb, num_labels=classes, fpn_feature_size=256,
                                                mask_feature_size=256, num_queries=100)
            with torch.device("meta"):
                ref = mm.MaskFormerForInstanceSegmentation(cfg)
                ours = inst.build_model(dataclasses.replace(inst.Config(), num_classes=classes))
            n_ref = sum(p.numel() for p in ref.parameters())
            assert sum(p.numel() for p in ours.parameters()) == n_ref
            assert n_ref == {133: 41_303_494, 80: 41_289_873}[classes]
            shapes = sorted(tuple(p.shape) for p in ours.parameters())
            assert shapes == sorted(tuple(p.shape) for p in ref.parameters())
    finally:
        for n, v in patched.items():
            setattr(mm, n, v)


# the small configuration both sides are built with: a ResNet of width 8 (two bottlenecks in the first stage, so
# that `rest` blocks are mapped too), an FPN and mask embeddings of 32, a 2-layer decoder of d_model 32, 6 queries
SMALL_MASKFORMER: dict[str, Any] = {"image_size": 64, "width": 8, "depths": (2, 1, 1, 1), "features": 32,
                                    "mask_dim": 32, "d_model": 32, "heads": 2, "ffn": 64, "decoder_layers": 2,
                                    "num_queries": 6, "num_classes": 5}


def transformers_maskformer() -> Any:
    """transformers' MaskFormerForInstanceSegmentation at SMALL_MASKFORMER's dims with its own ResNet backbone, the
    weights moved off the init (no unit norms, no zero biases: every tensor shows in the outputs), in eval mode. Its
    loss (built, not run) wants scipy, which the test extras bring with scikit-learn."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.maskformer import modeling_maskformer as mm

    d = SMALL_MASKFORMER
    width, expansion = d["width"], 4
    backbone = transformers.ResNetConfig(
        embedding_size=width, hidden_sizes=[width * expansion * 2**i for i in range(4)], depths=list(d["depths"]),
        layer_type="bottleneck", out_features=["stage1", "stage2", "stage3", "stage4"])
    decoder = transformers.DetrConfig(
        d_model=d["d_model"], decoder_layers=d["decoder_layers"], decoder_attention_heads=d["heads"],
        decoder_ffn_dim=d["ffn"], num_queries=d["num_queries"], auxiliary_loss=False, use_timm_backbone=False,
        use_pretrained_backbone=False, backbone=None)
    cfg = transformers.MaskFormerConfig(backbone_config=backbone, decoder_config=decoder, num_labels=d["num_classes"],
                                        fpn_feature_size=d["features"], mask_feature_size=d["mask_dim"],
                                        num_queries=d["num_queries"])
    torch.manual_seed(0)
    ref = mm.MaskFormerForInstanceSegmentation(cfg)
    with torch.no_grad():
        for k, t in ref.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in k else t + 0.05 * torch.randn_like(t))
    return ref.eval()


def test_maskformer_r50_computes_transformers_maskformer(inst: Any, tmp_path: Path) -> None:
    """The preset (ResNet stages, FPN pixel decoder, DETR decoder over sine positions, mask embeddings) at small dims,
    with transformers' weights as saved (read through the `maskformer` layout), gives transformers' class logits
    (B, Q, classes + 1) and mask logits (B, Q, H/4, W/4) within 1e-4 in float32."""
    from metagen_backends.pytorch.weights.runtime import load_checkpoint

    ref = transformers_maskformer()
    ref.save_pretrained(tmp_path / "ref")
    ours = inst.build_model(dataclasses.replace(inst.Config(), **SMALL_MASKFORMER)).eval()
    load_checkpoint(ours, tmp_path / "ref", layout="maskformer")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, masks = ours(images)
        out = ref(pixel_values=images)
    assert logits.shape == out.class_queries_logits.shape == (2, 6, 6)
    assert masks.shape == out.masks_queries_logits.shape == (2, 6, 16, 16)
    assert out.class_queries_logits.abs().max() > 0.1 and out.masks_queries_logits.abs().max() > 0.1
    assert torch.allclose(logits, out.class_queries_logits, atol=1e-4), (logits - out.class_queries_logits).abs().max()
    assert torch.allclose(masks, out.masks_queries_logits, atol=1e-4), (masks - out.masks_queries_logits).abs().max()


SEG_YAML = """metagen_version: "1.0"
name: "seg"
modality: {{inputs: [image], outputs: [segmentation_mask]}}
task: {{type: {task}, num_classes: 21}}
constraints: {{parameter_budget: {{max: "60M"}}, image_size: 128}}
architecture: {{family: "{family}"}}
"""


@pytest.mark.parametrize("family,task", [("transformer", "instance_segmentation"),
                                         ("transformer", "panoptic_segmentation"), ("cnn", "instance_segmentation"),
                                         ("maskformer", "panoptic_segmentation")])
def test_seed_family_groups_route_segmentation_to_maskformer(family: str, task: str) -> None:
    """The seeds' task table: instance segmentation by a transformer or a CNN, panoptic by a transformer."""
    comp = compile_source(SourceFile("seg.yaml", SEG_YAML.format(family=family, task=task)))
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    assert comp.spec.family.qualname == "std.segmentation.maskformer" and comp.spec.task == task
    assert 0 < comp.graph.g.graph["estimates"]["params"] <= 60_000_000


def test_other_image_tasks_keep_their_families() -> None:
    """The new routes only take the segmentation tasks: a transformer classifier is still a ViT."""
    text = SEG_YAML.format(family="transformer", task="classification").replace("segmentation_mask", "label")
    comp = compile_source(SourceFile("cls.yaml", text))
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    assert comp.spec.family.qualname == "std.vision.vit"
