"""Mask classification (MaskFormer): pairwise mask costs, Hungarian matching of queries to segments, the set
loss, mask IoU and mask AP, instance and panoptic inference, panoptic quality (PQ, SQ, RQ), and the model's
instance_inference() and panoptic_inference().

Each top-level definition is pasted into the model.py that needs it, as it is here (backends/pytorch/lowering.py's
runtime_source: a definition with the ones it calls); a function whose first parameter is `self` is a method of
the generated model class, pasted into it. Imports here are model.py's (torch, nn, F, math) or other runtime
modules', whose definitions model.py holds beside these.
"""

# the set losses rebind their lists of tensors to the tensors they concatenate (model.py's code, kept as it is)
# mypy: disable-error-code="assignment, attr-defined"
import torch
import torch.nn.functional as F

from .detection import average_precision, greedy_hits, sigmoid_focal_loss
from .matching import linear_sum_assignment


def mask_pair_costs(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """Pairwise mask costs of predicted mask logits (Q, P) against binary targets (G, P): the sigmoid focal loss
    averaged over the pixels and 1 - Dice (smoothed by 1), each (Q, G) (MaskFormer's matcher)."""
    p = logits.sigmoid()
    pos = alpha * (1 - p) ** gamma * F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = (1 - alpha) * p ** gamma * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    focal = (pos @ targets.t() + neg @ (1 - targets).t()) / logits.shape[-1]
    dice = 1 - (2 * p @ targets.t() + 1) / (p.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)
    return focal, dice


def match_masks(logits, masks, gt_masks, gt_labels, w_class: float = 1.0, w_focal: float = 20.0, w_dice: float = 1.0):
    """Per image, the Hungarian matching of queries to ground-truth segments on the cost
    w_class * -p(class) + w_focal * focal + w_dice * dice, the predicted masks upsampled (bilinear) to the ground
    truth's size. A list per image of (queries, segments, predicted mask logits (Q, H*W), target masks (G, H*W),
    labels (G,)); queries[i] is matched to segment segments[i]."""
    size = gt_masks.shape[-2:]
    prob = logits.detach().softmax(-1)
    out = []
    for b in range(logits.shape[0]):
        keep = gt_labels[b] >= 0
        labels, truth = gt_labels[b][keep], gt_masks[b][keep].flatten(1).to(masks.dtype)
        pred = F.interpolate(masks[b][None], size=size, mode="bilinear", align_corners=False)[0].flatten(1)
        rows, cols = [], []
        if len(labels):
            with torch.no_grad():
                focal, dice = mask_pair_costs(pred.detach(), truth)
                cost = -w_class * prob[b][:, labels] + w_focal * focal + w_dice * dice
            rows, cols = linear_sum_assignment(cost)
        out.append((rows, cols, pred, truth, labels))
    return out


def mask_set_loss(logits, masks, gt_masks, gt_labels, eos_coef: float = 0.1, w_class: float = 1.0,
                  w_focal: float = 20.0, w_dice: float = 1.0):
    """MaskFormer's set criterion: Hungarian matching (match_masks), then cross-entropy over every query (unmatched:
    the no-object class, weighted eos_coef) plus, over the matched masks, w_focal times the sigmoid focal loss
    (mean over pixels) and w_dice times 1 - Dice, summed and divided by the number of ground-truth segments."""
    B, Q, classes = logits.shape
    target = torch.full((B, Q), classes - 1, dtype=torch.long, device=logits.device)
    src, tgt = [], []
    for b, (rows, cols, pred, truth, labels) in enumerate(match_masks(logits, masks, gt_masks, gt_labels,
                                                                      w_class, w_focal, w_dice)):
        target[b, rows] = labels[cols]
        src.append(pred[rows])
        tgt.append(truth[cols])
    weight = torch.ones(classes, device=logits.device)
    weight[-1] = eos_coef
    loss_class = F.cross_entropy(logits.transpose(1, 2), target, weight)
    src, tgt = torch.cat(src), torch.cat(tgt)
    n = max(len(tgt), 1)
    loss_focal = sigmoid_focal_loss(src, tgt).mean(-1).sum() / n
    p = src.sigmoid()
    loss_dice = (1 - (2 * (p * tgt).sum(-1) + 1) / (p.sum(-1) + tgt.sum(-1) + 1)).sum() / n
    return w_class * loss_class + w_focal * loss_focal + w_dice * loss_dice


def mask_iou(a, b):
    """IoU of every binary mask (N, P) with every other (M, P): (N, M)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.t()
    return inter / (a.sum(-1)[:, None] + b.sum(-1)[None, :] - inter).clamp(min=1e-9)


def mean_matched_iou(matches):
    """The mean IoU of the matched (Hungarian) predicted masks, thresholded at logit 0, with their segments."""
    ious = [mask_iou(pred[rows] > 0, truth[cols]).diagonal() for rows, cols, pred, truth, _ in matches if len(rows)]
    return torch.cat(ious).mean() if ious else torch.tensor(float("nan"))


def instance_inference_fn(logits, masks, top_k: int, size):
    """MaskFormer's instance inference: per image, the top_k (query, class) pairs by class probability (softmax
    without no object), each with its query's mask upsampled (bilinear) to `size` and binarised at probability 0.5;
    score = class probability times the mean mask probability inside the binary mask. A list per image of
    {"scores": (K,), "labels": (K,), "masks": (K, H, W) bool}."""
    prob = logits.softmax(-1)[..., :-1]  # (B, Q, classes)
    classes = prob.shape[-1]
    out = []
    for b in range(prob.shape[0]):
        s, idx = prob[b].flatten().topk(min(top_k, prob[b].numel()))
        query, labels = idx // classes, idx % classes
        m = F.interpolate(masks[b][None], size=size, mode="bilinear", align_corners=False)[0][query].sigmoid()
        binary = m > 0.5
        inside = (m * binary).flatten(1).sum(-1) / binary.flatten(1).sum(-1).clamp(min=1)
        out.append({"scores": s * inside, "labels": labels, "masks": binary})
    return out


def mask_map_50(instances, gt_masks, gt_labels):
    """Mask AP at IoU 0.5 over a batch: as map_50 for boxes, with mask IoU. In each image, by decreasing score, a
    prediction is a true positive when its mask overlaps a still-unmatched ground-truth mask of its class by
    IoU >= 0.5 (the best such); AP per class with ground truth: the area under the precision-recall curve with
    precision made monotone (all-point interpolation); the mean over those classes."""
    scores, hits, classes, truth = [], [], [], []
    for det, gm, labels in zip(instances, gt_masks, gt_labels):
        gm, labels = gm[labels >= 0], labels[labels >= 0]
        order = det["scores"].argsort(descending=True)
        dm, ds, dl = det["masks"][order], det["scores"][order], det["labels"][order]
        tp = greedy_hits(mask_iou(dm, gm > 0.5), dl, labels)
        for acc, t in ((scores, ds), (hits, tp), (classes, dl), (truth, labels)):
            acc.append(t)
    scores, hits, classes, truth = (torch.cat(t) for t in (scores, hits, classes, truth))
    return average_precision(scores, hits, classes, truth)


def panoptic_inference_fn(logits, masks, size, object_threshold: float = 0.8, overlap_threshold: float = 0.8):
    """MaskFormer's panoptic inference: per image, the queries whose most likely class is not no-object and whose
    probability exceeds object_threshold are kept; each pixel takes the kept query maximising class probability
    times mask probability (masks upsampled bilinearly to `size`); a query becomes a segment when it wins pixels
    and at least overlap_threshold of the pixels where its own mask probability is >= 0.5. Returns the segment-id
    map (B, H, W), 0 void and segments 1, 2, ..., and per image the class of each segment (S,) (segment s: [s - 1])."""
    scores, labels = logits.softmax(-1).max(-1)  # (B, Q)
    no_object = logits.shape[-1] - 1
    ids = torch.zeros(logits.shape[0], *size, dtype=torch.long, device=logits.device)
    classes = []
    for b in range(logits.shape[0]):
        keep = (labels[b] != no_object) & (scores[b] > object_threshold)
        m = F.interpolate(masks[b][None], size=size, mode="bilinear", align_corners=False)[0][keep].sigmoid()
        s, cls = scores[b][keep], labels[b][keep]
        seg = []
        if len(s):
            winner = (s[:, None, None] * m).argmax(0)  # (H, W)
            for k in range(len(s)):
                area, own = (winner == k).sum(), (m[k] >= 0.5).sum()
                if area > 0 and own > 0 and area / own >= overlap_threshold:
                    seg.append(cls[k])
                    ids[b][(winner == k) & (m[k] >= 0.5)] = len(seg)
        classes.append(torch.stack(seg) if seg else labels.new_zeros(0))
    return ids, classes


def segments_from_masks(gt_masks, gt_labels):
    """Ground-truth segments (B, M, H, W) binary, disjoint, with labels (B, M) (-1 padding) -> the segment-id map
    (B, H, W) (0 void; segment m + 1 is mask m) and per image the class of each segment slot (M,)."""
    slot = torch.arange(1, gt_masks.shape[1] + 1, device=gt_masks.device)[None, :, None, None]
    valid = (gt_labels >= 0)[:, :, None, None]
    ids = ((gt_masks > 0.5) & valid).long().mul(slot).amax(1)
    return ids, list(gt_labels)


def panoptic_quality(pred_ids, pred_classes, gt_ids, gt_classes, num_classes: int):
    """PQ, SQ and RQ (Kirillov et al. 2019) over a batch of segment-id maps (B, H, W) (0 void) with the class of each
    segment ([s - 1]). A predicted and a ground-truth segment of the same class match when their IoU > 0.5 (unique);
    the union leaves out the predicted pixels that are void in the ground truth. Unmatched predicted segments are
    false positives unless more than half of them is void; unmatched ground-truth segments false negatives. Per
    class: PQ = sum IoU / (TP + FP / 2 + FN / 2), SQ = sum IoU / TP (0 without TP), RQ = TP / (TP + FP / 2 + FN / 2);
    each averaged over the classes with any TP, FP or FN in the batch (PQ = SQ * RQ per class)."""
    iou_sum, tp, fp, fn = (torch.zeros(num_classes, dtype=torch.float64) for _ in range(4))
    for b in range(pred_ids.shape[0]):
        p_ids = [s for s in range(1, len(pred_classes[b]) + 1) if (pred_ids[b] == s).any()]
        g_ids = [s for s in range(1, len(gt_classes[b]) + 1) if gt_classes[b][s - 1] >= 0 and (gt_ids[b] == s).any()]
        void = gt_ids[b] == 0
        matched_p, matched_g = set(), set()
        for g in g_ids:
            gm, gc = gt_ids[b] == g, int(gt_classes[b][g - 1])
            for p in p_ids:
                if int(pred_classes[b][p - 1]) != gc or p in matched_p:
                    continue
                pm = pred_ids[b] == p
                inter = (pm & gm).sum().item()
                union = pm.sum().item() + gm.sum().item() - inter - (pm & void).sum().item()
                if union > 0 and inter / union > 0.5:
                    iou_sum[gc] += inter / union
                    tp[gc] += 1
                    matched_p.add(p)
                    matched_g.add(g)
                    break
        for g in g_ids:
            if g not in matched_g:
                fn[int(gt_classes[b][g - 1])] += 1
        for p in p_ids:
            pm = pred_ids[b] == p
            if p not in matched_p and (pm & void).sum() <= 0.5 * pm.sum():
                fp[int(pred_classes[b][p - 1])] += 1
    seen = (tp + fp + fn) > 0
    if not seen.any():
        nan = torch.tensor(float("nan"))
        return nan, nan, nan
    denom = (tp + fp / 2 + fn / 2)[seen]
    pq = (iou_sum[seen] / denom).mean()
    sq = torch.where(tp[seen] > 0, iou_sum[seen] / tp[seen].clamp(min=1), 0.0).mean()
    rq = (tp[seen] / denom).mean()
    return pq.float(), sq.float(), rq.float()


@torch.no_grad()
def instance_inference(self, outputs, top_k: int = 100):
    """Instances from forward's (logits, masks): per image {"scores": (K,), "labels": (K,), "masks": (K, H, W) bool}
    at the input's size, the top_k (query, class) pairs (MaskFormer's instance inference)."""
    logits, masks = outputs
    size = (self.config.image_size, self.config.image_size)
    return instance_inference_fn(logits, masks, top_k, size)


@torch.no_grad()
def panoptic_inference(self, outputs, object_threshold: float = 0.8, overlap_threshold: float = 0.8):
    """Panoptic segmentation from forward's (logits, masks): the segment-id map (B, H, W) at the input's size (0 void,
    segments from 1) and per image the class of each segment (MaskFormer's panoptic inference)."""
    logits, masks = outputs
    size = (self.config.image_size, self.config.image_size)
    return panoptic_inference_fn(logits, masks, size, object_threshold, overlap_threshold)
