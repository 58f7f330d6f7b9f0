"""Metrics over a whole split that no weighted mean of batch values gives: mAP, mean IoU, macro F1, ROC-AUC, PQ.

Copied verbatim next to a generated model.py, beside loop.py, whose evaluate() it runs; depends on torch only.

loop.evaluate sums each batch's metrics weighted by the batch's prediction count: exact for means (accuracy,
perplexity, rmse), not for average precision, IoU or F1. `evaluate()` here runs loop.evaluate with the model's
metrics() watched, so that every batch also feeds an accumulator, and then replaces these metrics by their value
over the split:

- `map_50`, `recall_50` (object detection): the model's own metrics() runs, and what it hands to its module's
  map_50() (the detections at its thresholds, the ground truth) is kept; map_50() runs once more over every
  image of the split;
- `mask_map_50` (instance segmentation): per image, the module's mask_iou() and greedy_hits() mark each
  instance a hit or not; the module's average_precision() runs once over the split's instances;
  `mean_matched_iou`: the module's mean_matched_iou() over every matched mask of the split;
- `pixel_accuracy`, `mean_iou` (semantic segmentation): a confusion matrix of argmax model(image) against the
  mask over the split; IoU per class present in the labels or the predictions, and their mean;
- `accuracy`, `token_accuracy`, `top5_accuracy`, `macro_f1` (classification, tagging, graphs and nodes): from
  model(inputs) over the labelled items (label >= 0, and `train_mask` where the batch has one): macro F1 is the
  mean over the classes present of 2 TP / (2 TP + FP + FN);
- `roc_auc`, `average_precision` (anomaly detection, batches with `is_anomaly`): every item's anomaly score, its
  mean squared reconstruction error (model(x) - x)^2 as the generated metrics() scores it, is kept with its 0/1
  label; ROC-AUC (ties count 1/2, as sklearn's roc_auc_score) and average precision (sklearn's
  average_precision_score: precision at each distinct score, weighted by the recall it adds) over the split;
- `pq`, `sq`, `rq` (panoptic segmentation): what the model's metrics() hands its module's panoptic_quality() (the
  predicted and ground-truth segment-id maps and segment classes) is kept; panoptic_quality() runs once more over
  every image of the split, so its per-class sums (IoU of the matches, TP, FP, FN) are over the split before PQ,
  SQ and RQ are taken and averaged over the classes (Kirillov et al. 2019; the COCO panoptic evaluation's sums
  over the dataset). The split's segment maps are held, as int32, until then.

Under torchrun each process accumulates its own batches and the states are gathered before the final values.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.distributed as dist

if __package__:
    from . import loop
else:  # beside loop.py in the model's folder
    import loop  # type: ignore[no-redef]

__all__ = ["CLASSIFICATION", "SplitAccumulator", "average_precision", "evaluate", "roc_auc"]

CLASSIFICATION = ("accuracy", "token_accuracy", "top5_accuracy", "macro_f1")
# the module functions whose arguments are kept
INTERCEPTED = ("map_50", "mask_map_50", "mean_matched_iou", "panoptic_quality")
ANOMALY = ("roc_auc", "average_precision")


# ------------------------------------------------------------------------------------------- functions


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of `scores` (higher: more likely positive) for 0/1 `labels`: the probability that a
    positive outscores a negative, ties counting 1/2 (the Mann-Whitney U statistic from average ranks); NaN without
    both classes."""
    scores, labels = scores.double().flatten(), labels.flatten() > 0
    pos, neg = int(labels.sum()), int((~labels).sum())
    if not pos or not neg:
        return math.nan
    order = scores.argsort()
    _, inverse, counts = torch.unique(scores[order], return_inverse=True, return_counts=True)
    last = counts.cumsum(0).double()  # 1-based rank of each tie group's last item
    mean_rank = (last - (counts.double() - 1) / 2)[inverse]  # average rank of the group, per sorted item
    ranks = torch.empty_like(mean_rank)
    ranks[order] = mean_rank
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision of `scores` for 0/1 `labels`, as sklearn's average_precision_score: the sum over the
    distinct scores, from the highest, of the precision there times the recall it adds; NaN without positives."""
    scores, labels = scores.double().flatten(), (labels.flatten() > 0).double()
    total = float(labels.sum())
    if not total:
        return math.nan
    order = scores.argsort(descending=True, stable=True)
    scores, labels = scores[order], labels[order]
    tp = labels.cumsum(0)
    last = torch.ones_like(scores, dtype=torch.bool)  # the last item of each run of equal scores
    last[:-1] = scores[1:] != scores[:-1]
    tp, seen = tp[last], (torch.arange(1, len(scores) + 1, dtype=torch.float64))[last]
    recall_gain = torch.diff(tp, prepend=tp.new_zeros(1)) / total
    return float((recall_gain * tp / seen).sum())


def anomaly_scores(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Each item's anomaly score, the mean squared error of its reconstruction (the generated metrics()' score), for
    a batch of one input and `is_anomaly`; None for another batch."""
    inputs = [k for k in batch if k != "is_anomaly"]
    if len(inputs) != 1:
        return None
    x = batch[inputs[0]]
    out = model(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not torch.is_tensor(out) or out.shape != x.shape:
        return None
    return (out.float() - x.float()).pow(2).flatten(1).mean(-1)


class SplitAccumulator:
    """What one process saw of a split, batch by batch, and the split-level metrics from it."""

    def __init__(self, model: Any, batches: int):
        self.model = model
        self.batches = batches  # this process's batches of the split; loop.evaluate may repeat one more (FSDP)
        self.names: tuple[str, ...] | None = None  # what the model's metrics() returns, from the first batch
        method = inspect.unwrap(getattr(type(model), "metrics", None) or (lambda: None))  # under @torch.no_grad()
        self.scope: dict[str, Any] = getattr(method, "__globals__", {})  # the model's module (model.py)
        self.boxes: dict[str, list[Any]] = {"detections": [], "boxes": [], "labels": []}
        self.mask_hits: list[tuple[torch.Tensor, ...]] = []
        self.matches: list[tuple[Any, ...]] = []
        self.pixels: torch.Tensor | None = None  # semantic segmentation: (C, C) counts, truth x prediction
        self.classes: torch.Tensor | None = None  # classification: (C, C) counts
        self.top5 = 0
        self.anomaly: list[tuple[torch.Tensor, torch.Tensor]] = []  # (scores, 0/1 labels) per batch
        self.panoptic: list[tuple[Any, ...]] = []  # panoptic_quality()'s arguments per batch

    # ------------------------------------------------------------------------------------------- batches

    def batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's metrics on one batch (what loop.evaluate sums), with the split's state updated."""
        self.batches -= 1
        if self.batches < 0:  # a repeated batch that loop.evaluate weighs 0 (processes in lockstep)
            return self.model.metrics(batch)
        saved = {name: self.scope[name] for name in INTERCEPTED if callable(self.scope.get(name))}
        for name, fn in saved.items():
            self.scope[name] = self._keeper(name, fn)
        try:
            values = self.model.metrics(batch)
        finally:
            self.scope.update(saved)
        if self.names is None:
            self.names = tuple(values)
        if "mean_iou" in values and "mask" in batch and "image" in batch:
            self._segmentation(batch)
        if set(values) & set(CLASSIFICATION):
            self._classification(batch)
        if set(values) & set(ANOMALY) and "is_anomaly" in batch:
            scores = anomaly_scores(self.model, batch)
            if scores is not None:
                self.anomaly.append((scores.detach().cpu(), batch["is_anomaly"].detach().cpu()))
        return values

    def _keeper(self, name: str, fn: Any) -> Any:
        def kept(*args: Any) -> Any:
            if name == "map_50":
                detections, gt_boxes, gt_labels = args
                self.boxes["detections"] += [{k: v.detach().cpu() for k, v in d.items()} for d in detections]
                self.boxes["boxes"] += [b.detach().cpu() for b in gt_boxes]
                self.boxes["labels"] += [lab.detach().cpu() for lab in gt_labels]
            elif name == "mask_map_50":
                self._mask_hits(*args)
            elif name == "panoptic_quality":
                pred_ids, pred_classes, gt_ids, gt_classes, num_classes = args
                self.panoptic.append((pred_ids.detach().cpu().int(), [torch.as_tensor(c).cpu() for c in pred_classes],
                                      gt_ids.detach().cpu().int(), [torch.as_tensor(c).cpu() for c in gt_classes],
                                      num_classes))
            else:
                for rows, cols, pred, truth, labels in args[0]:
                    rows_t = torch.as_tensor(rows, dtype=torch.long)
                    cols_t = torch.as_tensor(cols, dtype=torch.long)
                    index = torch.arange(len(rows_t))
                    self.matches.append((index, index, (pred[rows_t] > 0).cpu(), truth[cols_t].cpu(), labels.cpu()))
            return fn(*args)

        return kept

    def _mask_hits(self, instances: list[dict[str, torch.Tensor]], gt_masks: torch.Tensor,
                   gt_labels: torch.Tensor) -> None:
        """Per image, as the module's mask_map_50: instances by decreasing score, hits by greedy matching."""
        mask_iou, greedy_hits = self.scope["mask_iou"], self.scope["greedy_hits"]
        for det, gm, labels in zip(instances, gt_masks, gt_labels):
            gm, labels = gm[labels >= 0], labels[labels >= 0]
            order = det["scores"].argsort(descending=True)
            dm, ds, dl = det["masks"][order], det["scores"][order], det["labels"][order]
            tp = greedy_hits(mask_iou(dm, gm > 0.5), dl, labels)
            self.mask_hits.append((ds.cpu(), tp.cpu(), dl.cpu(), labels.cpu()))

    def _segmentation(self, batch: dict[str, torch.Tensor]) -> None:
        logits = self.model(batch["image"])
        classes = logits.shape[1]
        pred, mask = logits.argmax(1).flatten(), batch["mask"].flatten()
        keep = (mask >= 0) & (mask < classes)
        counts = torch.bincount(mask[keep] * classes + pred[keep], minlength=classes * classes)
        counts = counts.view(classes, classes).cpu()
        self.pixels = counts if self.pixels is None else self.pixels + counts

    def _classification(self, batch: dict[str, torch.Tensor]) -> None:
        key = "label" if "label" in batch else "labels" if "labels" in batch else None
        if key is None or batch[key].is_floating_point():
            return
        params = [p for p in inspect.signature(self.model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not all(p.name in batch or p.default is not p.empty for p in params):
            return
        logits = self.model(*[batch[p.name] for p in params if p.name in batch])
        label = batch[key]
        if not torch.is_tensor(logits) or logits.shape[:-1] != label.shape:
            return
        valid = label >= 0
        if "train_mask" in batch:
            valid = valid & batch["train_mask"]
        logits, label = logits[valid].float(), label[valid]
        classes = logits.shape[-1]
        pred = logits.argmax(-1)
        counts = torch.bincount(label * classes + pred, minlength=classes * classes).view(classes, classes).cpu()
        self.classes = counts if self.classes is None else self.classes + counts
        top = logits.topk(min(5, classes), dim=-1).indices
        self.top5 += int((top == label[:, None]).any(-1).sum())

    # ------------------------------------------------------------------------------------------- results

    def state(self) -> dict[str, Any]:
        return {"boxes": self.boxes, "mask_hits": self.mask_hits, "matches": self.matches, "pixels": self.pixels,
                "classes": self.classes, "top5": self.top5, "anomaly": self.anomaly, "panoptic": self.panoptic}

    def merge(self, other: dict[str, Any]) -> None:
        """Add another process's state (its batches are other items of the same split)."""
        for k in self.boxes:
            self.boxes[k] += other["boxes"][k]
        self.mask_hits += other["mask_hits"]
        self.matches += other["matches"]
        self.anomaly += other["anomaly"]
        self.panoptic += other["panoptic"]
        for k in ("pixels", "classes"):
            if other[k] is not None:
                mine = getattr(self, k)
                setattr(self, k, other[k] if mine is None else mine + other[k])
        self.top5 += other["top5"]

    def results(self) -> dict[str, float]:
        """The split-level values of the metrics this accumulator measures (of those the model's metrics() names)."""
        out: dict[str, float] = {}
        names = set(self.names or ())
        if "map_50" in names and self.boxes["detections"]:
            ap, recall = self.scope["map_50"](self.boxes["detections"], self.boxes["boxes"], self.boxes["labels"])
            out["map_50"] = float(ap)
            if "recall_50" in names:
                out["recall_50"] = float(recall)
        if "mask_map_50" in names and self.mask_hits:
            scores, hits, classes, truth = (torch.cat(t) for t in zip(*self.mask_hits))
            out["mask_map_50"] = float(self.scope["average_precision"](scores, hits, classes, truth))
        if "mean_matched_iou" in names and self.matches:
            out["mean_matched_iou"] = float(self.scope["mean_matched_iou"](self.matches))
        if self.pixels is not None and "mean_iou" in names:
            c = self.pixels.double()
            inter, union = c.diag(), c.sum(0) + c.sum(1) - c.diag()
            present = union > 0
            out["mean_iou"] = float((inter[present] / union[present]).mean()) if present.any() else math.nan
            if "pixel_accuracy" in names:
                out["pixel_accuracy"] = float(c.diag().sum() / c.sum().clamp(min=1))
        if self.anomaly:
            scores, labels = (torch.cat(t) for t in zip(*self.anomaly))
            for name, metric in (("roc_auc", roc_auc), ("average_precision", average_precision)):
                if name in names:
                    out[name] = metric(scores, labels)
        if self.panoptic and names & {"pq", "sq", "rq"}:
            pred_ids, pred_classes, gt_ids, gt_classes, num_classes = zip(*self.panoptic)
            values = self.scope["panoptic_quality"](torch.cat(pred_ids), [c for b in pred_classes for c in b],
                                                    torch.cat(gt_ids), [c for b in gt_classes for c in b],
                                                    num_classes[0])
            out.update({k: float(v) for k, v in zip(("pq", "sq", "rq"), values) if k in names})
        if self.classes is not None:
            c = self.classes.double()
            total = float(c.sum())
            for name in ("accuracy", "token_accuracy"):
                if name in names:
                    out[name] = float(c.diag().sum()) / total if total else math.nan
            if "top5_accuracy" in names:
                out["top5_accuracy"] = self.top5 / total if total else math.nan
            if "macro_f1" in names:
                tp = c.diag()
                fp, fn = c.sum(0) - tp, c.sum(1) - tp
                present = (tp + fp + fn) > 0
                f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
                out["macro_f1"] = float(f1[present].mean()) if present.any() else math.nan
        return out


class _Watched:
    """The model as loop.evaluate uses it (loss, metrics, train/eval), with metrics() fed to an accumulator."""

    def __init__(self, model: Any, accumulator: SplitAccumulator):
        self._model, self._accumulator = model, accumulator

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._accumulator.batch(batch)


def evaluate(model: Any, dataset: Any, micro: int, d: Any, autocast: Any = None, count_of: Any = None, *args: Any,
             **kwargs: Any) -> tuple[dict[str, float], int]:
    """loop.evaluate's loss and metrics over the split (further arguments passed on to it), with the metrics above
    computed over the whole split."""
    accumulator = SplitAccumulator(model, len(loop.eval_batches(dataset, micro)[d.rank :: d.world]))
    metrics, count = loop.evaluate(_Watched(model, accumulator), dataset, micro, d, autocast, count_of, *args,
                                   **kwargs)
    if getattr(d, "enabled", False):
        states: list[Any] = [None] * d.world
        dist.all_gather_object(states, accumulator.state())
        accumulator = SplitAccumulator(model, 0)
        accumulator.names = tuple(metrics)
        for s in states:
            accumulator.merge(s)
    else:
        accumulator.names = accumulator.names or tuple(metrics)
    metrics.update({k: v for k, v in accumulator.results().items() if k in metrics})
    return metrics, count
