"""Hungarian matching and DETR's set prediction: the minimum-cost assignment, the set criterion, and the
model's detect() (one box per query, no NMS).

Each top-level definition is pasted into the model.py that needs it, as it is here (backends/pytorch/lowering.py's
runtime_source: a definition with the ones it calls); a function whose first parameter is `self` is a method of
the generated model class, pasted into it. Imports here are model.py's (torch, nn, F, math) or other runtime
modules', whose definitions model.py holds beside these.
"""

# the set losses rebind their lists of tensors to the tensors they concatenate (model.py's code, kept as it is)
# mypy: disable-error-code="assignment, operator"
import torch
import torch.nn.functional as F

from .boxes import batched_nms, box_cxcywh_to_xyxy, box_giou, box_xyxy_to_cxcywh


def linear_sum_assignment(cost):
    """Minimum-cost assignment of a cost matrix (n, m): rows and columns (lists, rows increasing) of min(n, m) pairs,
    each row and each column used at most once (the Hungarian algorithm with shortest augmenting paths and
    potentials, Jonker-Volgenant style, O(n^2 m); plain Python over cost.tolist())."""
    c = cost.tolist() if hasattr(cost, "tolist") else [list(r) for r in cost]
    n, m = len(c), len(c[0]) if c else 0
    if n > m:  # more rows than columns: assign the columns instead
        cols, rows = linear_sum_assignment([list(r) for r in zip(*c)])
        pairs = sorted(zip(rows, cols))
        return [r for r, _ in pairs], [k for _, k in pairs]
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)  # potentials of rows and columns
    owner, way = [0] * (m + 1), [0] * (m + 1)  # owner[j]: the row (1-based) that column j is assigned to
    for i in range(1, n + 1):
        owner[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while True:  # grow a shortest augmenting path from row i
            used[j0] = True
            i0, delta, j1 = owner[j0], inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = c[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # flip the path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    pairs = sorted((owner[j] - 1, j - 1) for j in range(1, m + 1) if owner[j])
    return [r for r, _ in pairs], [k for _, k in pairs]


def set_prediction_loss(logits, boxes, gt_boxes, gt_labels, image_size: int, eos_coef: float = 0.1,
                        w_class: float = 1.0, w_l1: float = 5.0, w_giou: float = 2.0):
    """DETR's set criterion. Per image, queries are matched one-to-one to the ground-truth boxes by the Hungarian
    algorithm on the cost w_class * -p(class) + w_l1 * L1 + w_giou * -GIoU (boxes as normalised cx cy w h); then
    cross-entropy over every query (unmatched queries: the no-object class, weighted eos_coef), and the L1 and
    1 - GIoU of the matched boxes, summed and divided by the number of ground-truth boxes."""
    B, Q, classes = logits.shape
    target = torch.full((B, Q), classes - 1, dtype=torch.long, device=logits.device)
    prob = logits.detach().softmax(-1)
    src, tgt = [], []
    for b in range(B):
        labels = gt_labels[b][gt_labels[b] >= 0]
        truth = box_xyxy_to_cxcywh(gt_boxes[b][gt_labels[b] >= 0] / image_size)  # (G, 4) normalised
        if len(labels) == 0:
            continue
        with torch.no_grad():
            pred = boxes[b].detach()
            cost = (-w_class * prob[b][:, labels] + w_l1 * (pred[:, None] - truth[None]).abs().sum(-1)
                    - w_giou * box_giou(box_cxcywh_to_xyxy(pred)[:, None], box_cxcywh_to_xyxy(truth)[None]))
        rows, cols = linear_sum_assignment(cost)  # query rows[i] predicts object cols[i]
        target[b, rows] = labels[cols]
        src.append(boxes[b, rows])
        tgt.append(truth[cols])
    weight = torch.ones(classes, device=logits.device)
    weight[-1] = eos_coef
    loss_class = F.cross_entropy(logits.transpose(1, 2), target, weight)
    src, tgt = (torch.cat(t) if t else boxes.new_zeros(0, 4) for t in (src, tgt))
    n = max(len(tgt), 1)
    loss_l1 = (src - tgt).abs().sum() / n
    loss_giou = (1 - box_giou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))).sum() / n
    return w_class * loss_class + w_l1 * loss_l1 + w_giou * loss_giou


@torch.no_grad()
def detect(self, images, score_threshold: float = 0.7, iou_threshold: float = 1.0):
    """Detections per image: each query's most likely class (softmax without the no-object class) and its box in
    pixels, kept above score_threshold. DETR needs no NMS (its queries are matched one-to-one in training); an
    iou_threshold below 1 applies class-wise NMS anyway. A list of {"boxes": (K, 4) x1 y1 x2 y2 in pixels,
    "scores": (K,), "labels": (K,)}, one per image."""
    logits, boxes = self(images)
    scores, labels = logits.softmax(-1)[..., :-1].max(-1)  # (B, queries)
    boxes = box_cxcywh_to_xyxy(boxes) * self.config.image_size
    out = []
    for b in range(scores.shape[0]):
        keep = (scores[b] > score_threshold).nonzero()[:, 0]
        if iou_threshold < 1.0:
            keep = keep[batched_nms(boxes[b, keep], scores[b, keep], labels[b, keep], iou_threshold)]
        out.append({"boxes": boxes[b, keep], "scores": scores[b, keep], "labels": labels[b, keep]})
    return out
