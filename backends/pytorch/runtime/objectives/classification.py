"""Classification tasks: per sample, per graph, per token, per pixel and per node, extractive question
answering (answer spans) and VQA's soft scores.

The task code of backends/pytorch/runtime/objectives (see its __init__): each class's loss, metrics, targets and
other methods are pasted into model.py with the spec's input names filled in (backends/pytorch/losses.py).
"""

import torch
import torch.nn.functional as F

from .slots import TaskModel, batch_inputs


class CrossEntropy(TaskModel):
    """`cross_entropy`: a class per sample; accuracy and top-5 accuracy."""

    def loss(self, batch):
        logits = self(*batch_inputs(batch))  # (B, num_classes)
        return F.cross_entropy(logits, batch["label"])

    @torch.no_grad()
    def metrics(self, batch):
        logits = self(*batch_inputs(batch))
        label = batch["label"]
        top5 = logits.topk(min(5, logits.size(-1)), dim=-1).indices
        return {"accuracy": (logits.argmax(-1) == label).float().mean(),
                "top5_accuracy": (top5 == label[:, None]).any(-1).float().mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        batch["label"] = torch.randint(0, model.config.num_classes, (batch_size,), generator=g)


class GraphCrossEntropy(CrossEntropy):
    """`graph_cross_entropy`: a class per graph of a batch of graphs; the metrics of `cross_entropy`."""

    def loss(self, batch):
        logits = self(*batch_inputs(batch))  # (graphs, num_classes)
        return F.cross_entropy(logits, batch["label"])

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        batch["label"] = torch.randint(0, model.config.num_classes, (model.config.graphs,), generator=g)


class TokenCrossEntropy(TaskModel):
    """`token_cross_entropy`: a label per token (tagging); token accuracy and macro F1."""

    def loss(self, batch):
        logits = self(*batch_inputs(batch))  # (B, T, num_classes)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["labels"].reshape(-1))

    @torch.no_grad()
    def metrics(self, batch):
        logits = self(*batch_inputs(batch))
        pred, labels = logits.argmax(-1).reshape(-1), batch["labels"].reshape(-1)
        classes = torch.arange(logits.size(-1), device=labels.device)[:, None]
        tp = ((pred == classes) & (labels == classes)).sum(-1).float()
        fp = ((pred == classes) & (labels != classes)).sum(-1).float()
        fn = ((pred != classes) & (labels == classes)).sum(-1).float()
        present = (labels == classes).any(-1) | (pred == classes).any(-1)
        f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
        return {"token_accuracy": (pred == labels).float().mean(), "macro_f1": f1[present].mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        with torch.no_grad():
            shape = model(*inputs).shape[:-1]
        batch["labels"] = torch.randint(0, model.config.num_classes, shape, generator=g)


class SpanCrossEntropy(TaskModel):
    """`span_cross_entropy`: the answer span's start and end (SQuAD); exact match and span F1."""

    def loss(self, batch):
        logits = self(*batch_inputs(batch))  # (B, T, 2): start and end logits per token
        start, end = logits.unbind(-1)
        return (F.cross_entropy(start, batch["start"]) + F.cross_entropy(end, batch["end"])) / 2

    @torch.no_grad()
    def metrics(self, batch):
        start, end = self(*batch_inputs(batch)).unbind(-1)
        # the best span with start <= end (scores add: start logit + end logit)
        scores = start[:, :, None] + end[:, None, :]
        scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).tril(-1), float("-inf"))
        best = scores.flatten(1).argmax(-1)
        s, e = best // scores.size(-1), best % scores.size(-1)
        gs, ge = batch["start"], batch["end"]
        # token-overlap F1 of the predicted and the gold span (SQuAD's F1 over positions)
        overlap = (torch.minimum(e, ge) - torch.maximum(s, gs) + 1).clamp(min=0).float()
        precision, recall = overlap / (e - s + 1).float(), overlap / (ge - gs + 1).float()
        f1 = torch.where(overlap > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
        return {"exact_match": ((s == gs) & (e == ge)).float().mean(), "span_f1": f1.mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        with torch.no_grad():
            b, t = model(*inputs).shape[:2]
        batch["start"] = torch.randint(0, t, (b,), generator=g)
        batch["end"] = torch.minimum(batch["start"] + torch.randint(0, 4, (b,), generator=g), torch.tensor(t - 1))


class PixelCrossEntropy(TaskModel):
    """`pixel_cross_entropy`: a class per pixel (semantic segmentation); pixel accuracy and mean IoU."""

    def loss(self, batch):
        logits = self(*batch_inputs(batch))  # (B, num_classes, H, W)
        return F.cross_entropy(logits, batch["mask"])

    @torch.no_grad()
    def metrics(self, batch):
        logits = self(*batch_inputs(batch))
        pred, mask = logits.argmax(1).flatten(), batch["mask"].flatten()
        classes = torch.arange(logits.size(1), device=mask.device)[:, None]
        inter = ((pred == classes) & (mask == classes)).sum(-1).float()
        union = ((pred == classes) | (mask == classes)).sum(-1).float()
        present = union > 0  # classes in the mask or the prediction
        return {"pixel_accuracy": (pred == mask).float().mean(), "mean_iou": (inter[present] / union[present]).mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        with torch.no_grad():
            b, _, h, w = model(*inputs).shape
        batch["mask"] = torch.randint(0, model.config.num_classes, (b, h, w), generator=g)


class NodeCrossEntropy(TaskModel):
    """`node_cross_entropy`: a class per node of one graph, on the labelled nodes; accuracy and macro F1."""

    def loss(self, batch):
        logits, label = self(*batch_inputs(batch)), batch["label"]  # (N, num_classes), (N,)
        mask = batch.get("train_mask")
        if mask is not None:
            logits, label = logits[mask], label[mask]
        return F.cross_entropy(logits, label)

    @torch.no_grad()
    def metrics(self, batch):
        logits, label = self(*batch_inputs(batch)), batch["label"]
        mask = batch.get("train_mask")
        if mask is not None:
            logits, label = logits[mask], label[mask]
        pred = logits.argmax(-1)
        classes = torch.arange(logits.size(-1), device=label.device)[:, None]
        tp = ((pred == classes) & (label == classes)).sum(-1).float()
        fp = ((pred == classes) & (label != classes)).sum(-1).float()
        fn = ((pred != classes) & (label == classes)).sum(-1).float()
        present = (label == classes).any(-1) | (pred == classes).any(-1)
        f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
        return {"accuracy": (pred == label).float().mean(), "macro_f1": f1[present].mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        nodes = inputs[0].shape[0]
        batch["label"] = torch.randint(0, model.config.num_classes, (nodes,), generator=g)
        batch["train_mask"] = torch.arange(nodes) % 2 == 0  # half the nodes labelled, as in a transductive split


class VqaSoftBce(TaskModel):
    """`vqa_soft_bce`: VQA's soft answer scores; VQA score and exact match."""

    def loss(self, batch):
        logits = self(*batch_inputs(batch))  # (B, num_classes)
        return F.binary_cross_entropy_with_logits(logits, batch["answer_scores"], reduction="sum") / logits.size(0)

    @torch.no_grad()
    def metrics(self, batch):
        scores = batch["answer_scores"]
        pred = self(*batch_inputs(batch)).argmax(-1)
        return {"vqa_score": scores.gather(-1, pred[:, None]).squeeze(-1).mean(),
                "exact_match": (pred == scores.argmax(-1)).float().mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        n = model.config.num_classes
        votes = torch.randint(0, n, (batch_size, 10), generator=g)  # ten annotators' answers per question
        batch["answer_scores"] = (torch.zeros(batch_size, n).scatter_add_(1, votes, torch.ones(batch_size, 10)) / 3).clamp(max=1.0)
