"""Tasks that score pairs: contrastive embeddings (in-batch and symmetric InfoNCE), link prediction, and
recommendation and ranking (in-batch softmax, pairwise logistic).

The task code of backends/pytorch/runtime/objectives (see its __init__): each class's loss, metrics, targets and
other methods are pasted into model.py with the spec's input names filled in (backends/pytorch/losses.py).
"""

import torch
import torch.nn.functional as F

from .slots import TaskModel, batch_inputs


class InBatchContrastive(TaskModel):
    """`in_batch_contrastive`: InfoNCE of each input against its positive; recall@1 and MRR."""

    def loss(self, batch):
        a = F.normalize(self(batch["x"]), dim=-1)
        b = F.normalize(self(batch["positive"]), dim=-1)
        logits = a @ b.t() / 0.05
        target = torch.arange(logits.size(0), device=logits.device)
        return F.cross_entropy(logits, target)

    @torch.no_grad()
    def metrics(self, batch):
        a = F.normalize(self(batch["x"]), dim=-1)
        b = F.normalize(self(batch["positive"]), dim=-1)
        sim = a @ b.t()
        rank = (sim > sim.diagonal()[:, None]).sum(-1)  # 0 when the positive ranks first
        return {"recall_at_1": (rank == 0).float().mean(), "mean_reciprocal_rank": (1.0 / (rank + 1)).mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        batch["positive"] = example_inputs(model, batch_size, seed + 2)[0]


class SymmetricContrastive(TaskModel):
    """`symmetric_contrastive`: CLIP's symmetric InfoNCE; recall@1 both ways."""

    def loss(self, batch):
        logits = self(*batch_inputs(batch))  # (B, B)
        target = torch.arange(logits.size(0), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2

    @torch.no_grad()
    def metrics(self, batch):
        logits = self(*batch_inputs(batch))
        target = torch.arange(logits.size(0), device=logits.device)
        return {"recall_at_1_a_to_b": (logits.argmax(1) == target).float().mean(),
                "recall_at_1_b_to_a": (logits.argmax(0) == target).float().mean()}


class LinkBce(TaskModel):
    """`link_bce`: link prediction by edge scores z_i . z_j; ROC AUC and accuracy."""

    def loss(self, batch):
        z = self(*batch_inputs(batch))  # (N, embedding_dim)
        pos, neg = batch["pos_edges"], batch["neg_edges"]
        score = torch.cat(((z[pos[0]] * z[pos[1]]).sum(-1), (z[neg[0]] * z[neg[1]]).sum(-1)))  # (P + Q,)
        target = torch.cat((score.new_ones(pos.shape[1]), score.new_zeros(neg.shape[1])))
        return F.binary_cross_entropy_with_logits(score, target)

    @torch.no_grad()
    def metrics(self, batch):
        z = self(*batch_inputs(batch))
        pos, neg = batch["pos_edges"], batch["neg_edges"]
        p, n = (z[pos[0]] * z[pos[1]]).sum(-1), (z[neg[0]] * z[neg[1]]).sum(-1)
        pairs = (p[:, None] > n[None, :]).float() + 0.5 * (p[:, None] == n[None, :]).float()
        auc = pairs.mean() if p.numel() and n.numel() else torch.tensor(float('nan'))
        correct = (p > 0).float().sum() + (n <= 0).float().sum()
        return {"roc_auc": auc, "accuracy": correct / (p.numel() + n.numel())}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        nodes, edges = inputs[0].shape[0], inputs[1]
        batch["pos_edges"] = edges  # the graph's own edges as positives (a held-out split in practice)
        batch["neg_edges"] = torch.randint(0, nodes, edges.shape, generator=g)  # uniform negative sampling


class InBatchSoftmax(TaskModel):
    """`in_batch_softmax`: in-batch sampled softmax (retrieval); recall@10 and NDCG@10."""

    def loss(self, batch):
        item = batch["item"]
        u, v = self(*batch_inputs(batch))  # (B, d), (B, d): unit vectors
        sim = u @ v.t()  # (B, B): every user with every item of the batch
        # an item that recurs in the batch is no negative for the rows whose positive it is
        same = (item[:, None] == item[None, :]) & ~torch.eye(len(item), dtype=torch.bool, device=item.device)
        sim = sim.masked_fill(same, float("-inf"))
        target = torch.arange(len(item), device=item.device)
        return F.cross_entropy(sim / self.config.temperature, target)

    @torch.no_grad()
    def metrics(self, batch):
        item = batch["item"]
        u, v = self(*batch_inputs(batch))  # (B, d), (B, d): unit vectors
        sim = u @ v.t()  # (B, B): every user with every item of the batch
        # an item that recurs in the batch is no negative for the rows whose positive it is
        same = (item[:, None] == item[None, :]) & ~torch.eye(len(item), dtype=torch.bool, device=item.device)
        sim = sim.masked_fill(same, float("-inf"))
        rank = (sim > sim.diagonal()[:, None]).sum(-1)  # of each user's own item among the batch's items, from 0
        hit = rank < 10
        return {"recall_at_10": hit.float().mean(),
                "ndcg_at_10": torch.where(hit, 1.0 / torch.log2(rank.float() + 2), torch.zeros_like(sim[:, 0])).mean()}


class PairwiseLogistic(TaskModel):
    """`pairwise_logistic`: RankNet's pairwise logistic loss; NDCG@10 and pairwise accuracy."""

    def loss(self, batch):
        user, rel = batch["user"], batch["relevance"]
        score = self(*batch_inputs(batch))  # (B,)
        same = user[:, None] == user[None, :]  # the rows of one query
        better = same & (rel[:, None] > rel[None, :])  # (i, j): i should rank above j
        pair_loss = F.softplus(score[None, :] - score[:, None])  # log(1 + exp(s_j - s_i))
        return (pair_loss * better).sum() / better.sum().clamp(min=1)

    @torch.no_grad()
    def metrics(self, batch):
        user, rel = batch["user"], batch["relevance"]
        score = self(*batch_inputs(batch))  # (B,)
        same = user[:, None] == user[None, :]  # the rows of one query
        better = same & (rel[:, None] > rel[None, :])  # (i, j): i should rank above j
        # NDCG@10 per query (gain 2^rel - 1, ties broken by row order), averaged over the queries; 1 with no gain
        idx = torch.arange(len(user), device=user.device)
        earlier = idx[None, :] < idx[:, None]
        rank = (same & ((score[None, :] > score[:, None]) | ((score[None, :] == score[:, None]) & earlier))).sum(-1)
        ideal = (same & ((rel[None, :] > rel[:, None]) | ((rel[None, :] == rel[:, None]) & earlier))).sum(-1)
        gain = 2.0 ** rel.float() - 1
        dcg = same.float() @ torch.where(rank < 10, gain / torch.log2(rank.float() + 2), torch.zeros_like(gain))
        idcg = same.float() @ torch.where(ideal < 10, gain / torch.log2(ideal.float() + 2), torch.zeros_like(gain))
        first = ~(same & earlier).any(-1)  # one row per query
        ndcg = torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.ones_like(dcg))[first].mean()
        ordered = (score[:, None] > score[None, :]).float()
        return {"ndcg_at_10": ndcg, "pairwise_accuracy": (ordered * better).sum() / better.sum().clamp(min=1)}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        batch["user"] = batch["user"][torch.arange(batch_size) // 4 * 4]  # lists of 4 candidates per query
        batch["relevance"] = torch.randperm(batch_size, generator=g) % 5  # graded 0..4
