"""Regression tasks: mean squared error, forecasting, reconstruction (anomaly detection) and point clouds
(Chamfer distance).

The task code of backends/pytorch/runtime/objectives (see its __init__): each class's loss, metrics, targets and
other methods are pasted into model.py with the spec's input names filled in (backends/pytorch/losses.py).
"""

import torch
import torch.nn.functional as F

from .slots import TaskModel, batch_inputs


class Mse(TaskModel):
    """`mse`: regression by mean squared error; MAE and RMSE."""

    def loss(self, batch):
        prediction = self(*batch_inputs(batch))
        return F.mse_loss(prediction, batch["target"])

    @torch.no_grad()
    def metrics(self, batch):
        err = self(*batch_inputs(batch)) - batch["target"]
        return {"mae": err.abs().mean(), "rmse": err.pow(2).mean().sqrt()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        with torch.no_grad():
            shape = model(*inputs).shape
        batch["target"] = torch.randn(shape, generator=g)


class ForecastMse(TaskModel):
    """`forecast_mse`: a forecast's mean squared error; MAE, RMSE and MAPE."""

    def loss(self, batch):
        forecast = self(*batch_inputs(batch))
        return F.mse_loss(forecast, batch["target"])

    @torch.no_grad()
    def metrics(self, batch):
        target = batch["target"]
        err = self(*batch_inputs(batch)) - target
        return {"mae": err.abs().mean(), "rmse": err.pow(2).mean().sqrt(),
                "mape": (err.abs() / target.abs().clamp(min=1e-6)).mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        with torch.no_grad():
            shape = model(*inputs).shape
        batch["target"] = torch.randn(shape, generator=g)


class ReconstructionMse(TaskModel):
    """`reconstruction_mse`: reconstruction error as anomaly score; ROC AUC and average precision."""

    def loss(self, batch):
        x = batch["x"]
        return F.mse_loss(self(x), x)

    @torch.no_grad()
    def metrics(self, batch):
        x = batch["x"]
        score = (self(x) - x).pow(2).flatten(1).mean(-1)  # (B,) anomaly scores
        label = batch["is_anomaly"].float()
        order = score.argsort(descending=True)
        hits = label[order]
        precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, device=hits.device)
        ap = (precision * hits).sum() / hits.sum().clamp(min=1)
        pos, neg = score[label == 1], score[label == 0]
        pairs = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()
        auc = pairs.mean() if pos.numel() and neg.numel() else torch.tensor(float('nan'))
        return {"roc_auc": auc, "average_precision": ap}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        batch["is_anomaly"] = (torch.arange(batch_size) % 2).long()  # both classes, for the metrics


class Chamfer(TaskModel):
    """`chamfer`: point clouds by the squared Chamfer distance; Chamfer distance and F-score at 0.1."""

    def loss(self, batch):
        pred, target = self(*batch_inputs(batch)), batch["points"]  # (B, N, 3), (B, M, 3)
        d = torch.cdist(pred, target).pow(2)  # (B, N, M) squared distances
        return d.min(2).values.mean() + d.min(1).values.mean()

    @torch.no_grad()
    def metrics(self, batch):
        pred, target = self(*batch_inputs(batch)), batch["points"]
        dist = torch.cdist(pred, target)  # (B, N, M)
        chamfer = dist.pow(2).min(2).values.mean() + dist.pow(2).min(1).values.mean()
        # F-score at 0.1 (Tatarchenko et al. 2019): precision = predicted points within 0.1 of the target, recall the
        # converse, F = 2 P R / (P + R), per cloud, averaged
        precision = (dist.min(2).values < 0.1).float().mean(1)
        recall = (dist.min(1).values < 0.1).float().mean(1)
        f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
        return {"chamfer_distance": chamfer, "f_score": f.mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        # target clouds: points on the unit sphere
        with torch.no_grad():
            n = model(*inputs).shape[1]
        pts = torch.randn(batch_size, n, 3, generator=g)
        batch["points"] = pts / pts.norm(dim=-1, keepdim=True)
