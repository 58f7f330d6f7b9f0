"""Metrics over a whole split that no weighted mean of batch values gives: mAP, mean IoU, macro F1.

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
  mean over the classes present of 2 TP / (2 TP + FP + FN).

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

__all__ = ["CLASSIFICATION", "SplitAccumulator", "evaluate"]

CLASSIFICATION = ("accuracy", "token_accuracy", "top5_accuracy", "macro_f1")
INTERCEPTED = ("map_50", "mask_map_50", "mean_matched_iou")  # module functions whose arguments are kept


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
                "classes": self.classes, "top5": self.top5}

    def merge(self, other: dict[str, Any]) -> None:
        """Add another process's state (its batches are other items of the same split)."""
        for k in self.boxes:
            self.boxes[k] += other["boxes"][k]
        self.mask_hits += other["mask_hits"]
        self.matches += other["matches"]
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
