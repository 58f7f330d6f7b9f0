"""Box utilities of the detection tasks: area, IoU, generalized IoU, the (cx, cy, w, h) <-> (x1, y1, x2, y2)
conversions, greedy and class-wise non-maximum suppression. Boxes are (..., 4) tensors.

Each top-level definition is pasted into the model.py that needs it, as it is here (backends/pytorch/lowering.py's
runtime_source: a definition with the ones it calls); a function whose first parameter is `self` is a method of
the generated model class, pasted into it. Imports here are model.py's (torch, nn, F, math) or other runtime
modules', whose definitions model.py holds beside these.
"""

import torch


def box_area(b):
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a, b):
    """IoU and union of (x1, y1, x2, y2) boxes, elementwise over broadcast shapes (a[:, None], b[None]: all pairs)."""
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a) + box_area(b) - inter
    return inter / union.clamp(min=1e-9), union


def box_giou(a, b):
    """Generalized IoU (Rezatofighi et al. 2019) of (x1, y1, x2, y2) boxes, elementwise over broadcast shapes."""
    iou, union = box_iou(a, b)
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-9)


def box_cxcywh_to_xyxy(b):
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def box_xyxy_to_cxcywh(b):
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), -1)


def nms(boxes, scores, iou_threshold: float):
    """Greedy non-maximum suppression: the indices of the kept boxes, by decreasing score."""
    order = scores.argsort(descending=True)
    keep = []
    while order.numel():
        i, order = order[0], order[1:]
        keep.append(i)
        order = order[box_iou(boxes[i][None], boxes[order])[0] <= iou_threshold]
    return torch.stack(keep) if keep else order


def batched_nms(boxes, scores, labels, iou_threshold: float):
    """NMS within each class: the boxes of each class are moved apart, so other classes never suppress them."""
    if boxes.numel() == 0:
        return labels.new_zeros(0)
    offset = labels.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)
