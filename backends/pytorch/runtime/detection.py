"""Detection metrics and the anchor-free (FCOS-style) detector's loss and inference: greedy matching and AP
(mAP at IoU 0.5), cell centres and strides, box decoding, centre-prior assignment, the sigmoid focal loss, and
the model's detect().

Each top-level definition is pasted into the model.py that needs it, as it is here (backends/pytorch/lowering.py's
runtime_source: a definition with the ones it calls); a function whose first parameter is `self` is a method of
the generated model class, pasted into it. Imports here are model.py's (torch, nn, F, math) or other runtime
modules', whose definitions model.py holds beside these.
"""

import torch
import torch.nn.functional as F

from .boxes import batched_nms, box_iou


def greedy_hits(iou, pred_labels, labels):
    """Which predictions (K, in decreasing score) are true positives against one image's ground truth (G):
    each takes the best still-unmatched ground truth of its class with IoU >= 0.5 (COCO's greedy rule); iou (K, G)."""
    free = torch.ones(len(labels), dtype=torch.bool, device=labels.device)
    tp = torch.zeros(len(pred_labels), dtype=torch.bool, device=labels.device)
    for k in range(len(pred_labels)):
        ok = (labels == pred_labels[k]) & free & (iou[k] >= 0.5)
        if ok.any():
            free[torch.where(ok, iou[k], -1.0).argmax()] = False
            tp[k] = True
    return tp


def average_precision(scores, hits, classes, truth):
    """The mean over the classes with ground truth (truth: every ground-truth label) of AP: the area under the
    precision-recall curve of the predictions (scores, hits, classes), precision made monotone (all-point
    interpolation, as VOC)."""
    aps = []
    for c in truth.unique():
        h = hits[classes == c][scores[classes == c].argsort(descending=True)].float()
        precision = h.cumsum(0) / torch.arange(1, len(h) + 1, device=h.device)
        precision = precision.flip(0).cummax(0).values.flip(0)  # the best precision at this recall or beyond
        aps.append((precision * h).sum() / (truth == c).sum())  # each true positive adds 1 / n to the recall
    return torch.stack(aps).mean() if aps else torch.tensor(float("nan"))


def map_50(detections, gt_boxes, gt_labels):
    """mAP at IoU 0.5 and recall over a batch. detections: per image {"boxes", "scores", "labels"}; ground truth
    (B, max_objects, 4) and (B, max_objects), labels -1 for padding. In each image, by decreasing score, a detection
    is a true positive when it overlaps a still-unmatched ground-truth box of its class by IoU >= 0.5 (it takes the
    best such box, COCO's greedy rule). AP per class with ground truth: the area under the precision-recall curve,
    precision made monotone (VOC's all-point interpolation); mAP their mean; recall: matched / ground-truth boxes."""
    scores, hits, classes, truth = [], [], [], []
    for det, boxes, labels in zip(detections, gt_boxes, gt_labels):
        boxes, labels = boxes[labels >= 0], labels[labels >= 0]
        order = det["scores"].argsort(descending=True)
        db, ds, dl = det["boxes"][order], det["scores"][order], det["labels"][order]
        tp = greedy_hits(box_iou(db[:, None], boxes[None])[0], dl, labels)
        for acc, t in ((scores, ds), (hits, tp), (classes, dl), (truth, labels)):
            acc.append(t)
    scores, hits, classes, truth = (torch.cat(t) for t in (scores, hits, classes, truth))
    return average_precision(scores, hits, classes, truth), hits.sum() / max(len(truth), 1)


DETECTION_STRIDES = (8, 16, 32)


def detection_anchors(image_size: int, device=None, strides=DETECTION_STRIDES):
    """Cell centres (cells, 2) as (x, y) in pixels and each cell's stride (cells,): the levels in order, each row-major."""
    centres, per_cell = [], []
    for s in strides:
        n = image_size // s
        ys, xs = torch.meshgrid(torch.arange(n, device=device), torch.arange(n, device=device), indexing="ij")
        centres.append(torch.stack((xs, ys), -1).reshape(-1, 2).float() * s + s / 2)
        per_cell.append(torch.full((n * n,), float(s), device=device))
    return torch.cat(centres), torch.cat(per_cell)


def decode_ltrb(raw, centres, strides):
    """Raw box regressions (B, cells, 4) -> (x1, y1, x2, y2) in pixels: distances softplus(raw) * stride."""
    d = F.softplus(raw) * strides[:, None]
    return torch.cat((centres - d[..., :2], centres + d[..., 2:]), -1)


def assign_center_prior(centres, strides, gt_boxes, gt_labels, num_classes: int, radius: float = 2.5):
    """FCOS's assignment with centre sampling: a cell is positive for a ground-truth box when its centre lies inside
    the box, within radius * stride of the box's centre, and its largest distance to the box's sides is in its
    level's range ([0, 64], [64, 128], [128, inf) at strides 8, 16, 32: 4 and 8 strides); a cell several boxes
    claim takes the smallest. Returns one-hot class targets (B, cells, classes), box targets (B, cells, 4) and
    the positives (B, cells)."""
    x, y = centres[None, :, 0, None], centres[None, :, 1, None]  # (1, cells, 1)
    x1, y1, x2, y2 = (v[:, None, :] for v in gt_boxes.unbind(-1))  # (B, 1, M)
    ltrb = torch.stack((x - x1, y - y1, x2 - x, y2 - y), -1)  # (B, cells, M, 4)
    s = strides[None, :, None]
    near = ((x - (x1 + x2) / 2).abs() < radius * s) & ((y - (y1 + y2) / 2).abs() < radius * s)
    lo = torch.where(s == strides.min(), 0.0, 4 * s)
    hi = torch.where(s == strides.max(), float("inf"), 8 * s)
    reach = ltrb.amax(-1)
    claim = (ltrb.amin(-1) > 0) & near & (reach >= lo) & (reach <= hi) & (gt_labels[:, None, :] >= 0)
    area = torch.where(claim, ((x2 - x1) * (y2 - y1)).expand_as(claim), float("inf"))
    smallest, best = area.min(-1)  # (B, cells)
    positive = torch.isfinite(smallest)
    labels = gt_labels.gather(1, best).clamp(min=0)
    target_cls = F.one_hot(labels, num_classes).float() * positive[..., None]
    target_box = gt_boxes.gather(1, best[..., None].expand(-1, -1, 4))
    return target_cls, target_box, positive


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """Focal loss (Lin et al. 2017) per element of multi-label logits and 0/1 targets."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    return ce * (1 - p_t) ** gamma * (alpha * targets + (1 - alpha) * (1 - targets))


@torch.no_grad()
def detect(self, images, score_threshold: float = 0.25, iou_threshold: float = 0.45, max_detections: int = 100,
           candidates: int = 1000):
    """Detections per image: the `candidates` best (cell, class) scores above score_threshold (sigmoid of the
    logits), their boxes decoded, class-wise NMS at iou_threshold, at most max_detections. A list of
    {"boxes": (K, 4) x1 y1 x2 y2 in pixels, "scores": (K,), "labels": (K,)}, one per image."""
    logits, raw = self(images)
    centres, strides = detection_anchors(self.config.image_size, logits.device)
    boxes, scores = decode_ltrb(raw, centres, strides), logits.sigmoid()
    classes = scores.shape[-1]
    out = []
    for b in range(scores.shape[0]):
        s, idx = scores[b].flatten().topk(min(candidates, scores[b].numel()))
        s, idx = s[s > score_threshold], idx[s > score_threshold]
        cells, labels = idx // classes, idx % classes
        keep = batched_nms(boxes[b, cells], s, labels, iou_threshold)[:max_detections]
        out.append({"boxes": boxes[b, cells[keep]], "scores": s[keep], "labels": labels[keep]})
    return out
