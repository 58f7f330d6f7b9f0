"""Each task's loss, metrics and training batch as PyTorch code, keyed by the loss name the compiler
picked (metagen_compiler/semantics/tasks.py). `{x}` is the model's first input, as named in the spec; `{args}` all
its inputs from the batch, in forward's order (`batch["image"], batch["text"]`); `{y}` the token input a
next-token loss predicts (the family-declared `target` input of an encoder-decoder, else the first) and
`{shifted}` all inputs with `tokens` (= batch["{y}"]) cut before its last token, for teacher forcing.

- `loss`: the body of `Model.loss(self, batch)`, returning a scalar;
- `metrics`: the body of `Model.metrics(self, batch)`, returning {metric name: float tensor} with
  exactly the task's metric names;
- `batch`: lines of `example_batch` after `batch` holds the inputs (`inputs` the tuple, `g` a seeded
  generator, `model` the module): the targets, random but of the right form;
- `init`: lines at the end of `Model.__init__` (the diffusion task's noise schedule buffers);
- `methods`: more methods of the model as template lines (diffusion's sample(), which takes the inputs' names);
- `source_methods`: more methods that are runtime code as it is, by `module.name` of backends/pytorch/runtime/
  (detect(), an agent's `act`, a DQN's `update_target`), after `metrics`;
- `imports`: modules those need beyond torch (one `import` line each in the generated file).
The runtime definitions all of these read are found by `loss_helpers` and pasted into model.py with those they
read in turn (lowering.runtime_source).

The diffusion task (`diffusion_mse`) calls the model on the noised input: `{noisy}` is forward's arguments
with the first input replaced by `x_t` and the timestep by `t`; in `sample`, `{cond}` is the conditioning
inputs' names (all but those two), `{step}` the call at `x`, `t` and `{guided}` the call on the batch doubled
by the unconditional inputs `uncond`.

Reinforcement-learning batches hold transitions: `{x}` the observations, "action" (B,) the actions taken,
and what each loss needs besides ("reward", "next_{x}", "done", "return", "advantage", "old_log_prob").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from .lowering import runtime_method, runtime_names_in

__all__ = ["LOSSES", "TARGET_INPUT", "LossCode", "loss_helpers"]

TARGET_INPUT = "target"  # an encoder-decoder's decoder tokens (`encoder target: text = ...` in its family)


@dataclass(frozen=True)
class LossCode:
    doc: str
    loss: tuple[str, ...]
    metrics: tuple[str, ...]
    batch: tuple[str, ...] = ()
    init: tuple[str, ...] = ()  # lines at the end of Model.__init__ (the diffusion noise schedule's buffers)
    methods: tuple[str, ...] = ()  # more methods, as template lines formatted like `loss` (diffusion's sample())
    # runtime definitions model.py gets though nothing calls them (loss_helpers finds the ones the code calls)
    helpers: tuple[str, ...] = ()
    # more methods: runtime model methods as `module.name` (detection's detect()), `module.name as method` where the
    # class names it otherwise (rl.policy_act as act); one blank line between two, "" for one more
    source_methods: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()  # modules the methods need beyond torch (one `import` line each)


LOSSES: dict[str, LossCode] = {
    "next_token_cross_entropy": LossCode(
        'Next-token cross-entropy: batch = {{"{y}": (B, T) token ids}}.',
        ('tokens = batch["{y}"]',
         "logits = self({shifted})  # (B, T-1, vocab)",
         "return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))"),
        ('tokens = batch["{y}"]',
         "logits = self({shifted})",
         "nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))",
         'return {{"perplexity": nll.exp(), "token_accuracy": (logits.argmax(-1) == tokens[:, 1:]).float().mean()}}'),
    ),
    "transcription_cross_entropy": LossCode(
        'Next-token cross-entropy of the transcript (teacher forcing): batch = {{"{y}": (B, T) token ids, ...}}.',
        ('tokens = batch["{y}"]',
         "logits = self({shifted})  # (B, T-1, vocab)",
         "return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))"),
        ('tokens = batch["{y}"]',
         "pred, ref = self({shifted}).argmax(-1), tokens[:, 1:]",
         "# token error rate: edit distance of the teacher-forced greedy tokens to the reference, per reference token",
         "n = ref.size(1)",
         "dist = torch.arange(n + 1, device=ref.device).repeat(ref.size(0), 1)  # (B, n + 1)",
         "for i in range(pred.size(1)):",
         "    prev, dist = dist, torch.full_like(dist, i + 1)",
         "    for j in range(1, n + 1):",
         "        sub = prev[:, j - 1] + (pred[:, i] != ref[:, j - 1]).long()",
         "        dist[:, j] = torch.minimum(torch.minimum(prev[:, j], dist[:, j - 1]) + 1, sub)",
         'return {{"token_accuracy": (pred == ref).float().mean(), "token_error_rate": (dist[:, n].float() / n).mean()}}'),
    ),
    "cross_entropy": LossCode(
        'Cross-entropy: batch = {{"{x}": inputs, "label": (B,) class ids}}.',
        ('logits = self({args})  # (B, num_classes)',
         'return F.cross_entropy(logits, batch["label"])'),
        ('logits = self({args})',
         'label = batch["label"]',
         "top5 = logits.topk(min(5, logits.size(-1)), dim=-1).indices",
         'return {{"accuracy": (logits.argmax(-1) == label).float().mean(),',
         '        "top5_accuracy": (top5 == label[:, None]).any(-1).float().mean()}}'),
        ('batch["label"] = torch.randint(0, model.config.num_classes, (batch_size,), generator=g)',),
    ),
    "mse": LossCode(
        'Mean squared error: batch = {{"{x}": inputs, "target": (B, outputs)}}.',
        ('prediction = self({args})',
         'return F.mse_loss(prediction, batch["target"])'),
        ('err = self({args}) - batch["target"]',
         'return {{"mae": err.abs().mean(), "rmse": err.pow(2).mean().sqrt()}}'),
        ("with torch.no_grad():",
         "    shape = model(*inputs).shape",
         'batch["target"] = torch.randn(shape, generator=g)'),
    ),
    "token_cross_entropy": LossCode(
        'Per-token cross-entropy: batch = {{"{x}": (B, T) token ids, "labels": (B, T) label ids}}.',
        ('logits = self({args})  # (B, T, num_classes)',
         'return F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["labels"].reshape(-1))'),
        ('logits = self({args})',
         'pred, labels = logits.argmax(-1).reshape(-1), batch["labels"].reshape(-1)',
         "classes = torch.arange(logits.size(-1), device=labels.device)[:, None]",
         "tp = ((pred == classes) & (labels == classes)).sum(-1).float()",
         "fp = ((pred == classes) & (labels != classes)).sum(-1).float()",
         "fn = ((pred != classes) & (labels == classes)).sum(-1).float()",
         "present = (labels == classes).any(-1) | (pred == classes).any(-1)",
         "f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)",
         'return {{"token_accuracy": (pred == labels).float().mean(), "macro_f1": f1[present].mean()}}'),
        ("with torch.no_grad():",
         "    shape = model(*inputs).shape[:-1]",
         'batch["labels"] = torch.randint(0, model.config.num_classes, shape, generator=g)'),
    ),
    "span_cross_entropy": LossCode(
        'Extractive question answering (SQuAD): batch = {{"{x}": (B, T) token ids of question and context,\n'
        '"start": (B,) and "end": (B,) positions of the answer span}}; the mean of the start and end cross-entropies.',
        ('logits = self({args})  # (B, T, 2): start and end logits per token',
         "start, end = logits.unbind(-1)",
         'return (F.cross_entropy(start, batch["start"]) + F.cross_entropy(end, batch["end"])) / 2'),
        ('start, end = self({args}).unbind(-1)',
         "# the best span with start <= end (scores add: start logit + end logit)",
         "scores = start[:, :, None] + end[:, None, :]",
         "scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).tril(-1), float(\"-inf\"))",
         "best = scores.flatten(1).argmax(-1)",
         "s, e = best // scores.size(-1), best % scores.size(-1)",
         'gs, ge = batch["start"], batch["end"]',
         "# token-overlap F1 of the predicted and the gold span (SQuAD's F1 over positions)",
         "overlap = (torch.minimum(e, ge) - torch.maximum(s, gs) + 1).clamp(min=0).float()",
         "precision, recall = overlap / (e - s + 1).float(), overlap / (ge - gs + 1).float()",
         "f1 = torch.where(overlap > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)",
         'return {{"exact_match": ((s == gs) & (e == ge)).float().mean(), "span_f1": f1.mean()}}'),
        ("with torch.no_grad():",
         "    b, t = model(*inputs).shape[:2]",
         'batch["start"] = torch.randint(0, t, (b,), generator=g)',
         'batch["end"] = torch.minimum(batch["start"] + torch.randint(0, 4, (b,), generator=g), torch.tensor(t - 1))'),
    ),
    "chamfer": LossCode(
        'Symmetric Chamfer distance (squared, as in Fan et al. 2017 and Point-E): batch = {{"{x}": prompts,\n'
        '"points": (B, M, 3) the target point clouds}}; the mean over predicted points of the squared distance to the\n'
        "nearest target point plus the mean over target points of the squared distance to the nearest prediction.",
        ('pred, target = self({args}), batch["points"]  # (B, N, 3), (B, M, 3)',
         "d = torch.cdist(pred, target).pow(2)  # (B, N, M) squared distances",
         "return d.min(2).values.mean() + d.min(1).values.mean()"),
        ('pred, target = self({args}), batch["points"]',
         "dist = torch.cdist(pred, target)  # (B, N, M)",
         "chamfer = dist.pow(2).min(2).values.mean() + dist.pow(2).min(1).values.mean()",
         "# F-score at 0.1 (Tatarchenko et al. 2019): precision = predicted points within 0.1 of the target, recall the",
         "# converse, F = 2 P R / (P + R), per cloud, averaged",
         "precision = (dist.min(2).values < 0.1).float().mean(1)",
         "recall = (dist.min(1).values < 0.1).float().mean(1)",
         "f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)",
         'return {{"chamfer_distance": chamfer, "f_score": f.mean()}}'),
        ("# target clouds: points on the unit sphere",
         "with torch.no_grad():",
         "    n = model(*inputs).shape[1]",
         "pts = torch.randn(batch_size, n, 3, generator=g)",
         'batch["points"] = pts / pts.norm(dim=-1, keepdim=True)'),
    ),
    "in_batch_contrastive": LossCode(
        'In-batch InfoNCE (temperature 0.05): batch = {{"{x}": inputs, "positive": a second view of each input}};\n'
        "the i-th input's positive is the i-th row of `positive`, the other rows are its negatives.",
        ('a = F.normalize(self(batch["{x}"]), dim=-1)',
         'b = F.normalize(self(batch["positive"]), dim=-1)',
         "logits = a @ b.t() / 0.05",
         "target = torch.arange(logits.size(0), device=logits.device)",
         "return F.cross_entropy(logits, target)"),
        ('a = F.normalize(self(batch["{x}"]), dim=-1)',
         'b = F.normalize(self(batch["positive"]), dim=-1)',
         "sim = a @ b.t()",
         "rank = (sim > sim.diagonal()[:, None]).sum(-1)  # 0 when the positive ranks first",
         'return {{"recall_at_1": (rank == 0).float().mean(), "mean_reciprocal_rank": (1.0 / (rank + 1)).mean()}}'),
        ('batch["positive"] = example_inputs(model, batch_size, seed + 2)[0]',),
    ),
    "pixel_cross_entropy": LossCode(
        'Per-pixel cross-entropy: batch = {{"{x}": images, "mask": (B, H, W) class ids}}.',
        ("logits = self({args})  # (B, num_classes, H, W)",
         'return F.cross_entropy(logits, batch["mask"])'),
        ("logits = self({args})",
         'pred, mask = logits.argmax(1).flatten(), batch["mask"].flatten()',
         "classes = torch.arange(logits.size(1), device=mask.device)[:, None]",
         "inter = ((pred == classes) & (mask == classes)).sum(-1).float()",
         "union = ((pred == classes) | (mask == classes)).sum(-1).float()",
         "present = union > 0  # classes in the mask or the prediction",
         'return {{"pixel_accuracy": (pred == mask).float().mean(), "mean_iou": (inter[present] / union[present]).mean()}}'),
        ("with torch.no_grad():",
         "    b, _, h, w = model(*inputs).shape",
         'batch["mask"] = torch.randint(0, model.config.num_classes, (b, h, w), generator=g)'),
    ),
    "symmetric_contrastive": LossCode(
        "Symmetric InfoNCE over the batch (CLIP): the i-th first input matches the i-th second input;\n"
        "batch = {{the model's inputs}}, nothing else: the pairing is the label.",
        ("logits = self({args})  # (B, B)",
         "target = torch.arange(logits.size(0), device=logits.device)",
         "return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2"),
        ("logits = self({args})",
         "target = torch.arange(logits.size(0), device=logits.device)",
         'return {{"recall_at_1_a_to_b": (logits.argmax(1) == target).float().mean(),',
         '        "recall_at_1_b_to_a": (logits.argmax(0) == target).float().mean()}}'),
    ),
    "forecast_mse": LossCode(
        'Mean squared error of the forecast: batch = {{"{x}": (B, lookback, features), "target": (B, horizon, features)}}.',
        ('forecast = self({args})',
         'return F.mse_loss(forecast, batch["target"])'),
        ('target = batch["target"]',
         'err = self({args}) - target',
         'return {{"mae": err.abs().mean(), "rmse": err.pow(2).mean().sqrt(),',
         '        "mape": (err.abs() / target.abs().clamp(min=1e-6)).mean()}}'),
        ("with torch.no_grad():",
         "    shape = model(*inputs).shape",
         'batch["target"] = torch.randn(shape, generator=g)'),
    ),
    "reconstruction_mse": LossCode(
        'Reconstruction error, trained on normal data: batch = {{"{x}": inputs, "is_anomaly": (B,) 0/1 labels\n'
        'for the metrics}}; the anomaly score of a sample is its mean squared reconstruction error.',
        ('x = batch["{x}"]',
         "return F.mse_loss(self(x), x)"),
        ('x = batch["{x}"]',
         "score = (self(x) - x).pow(2).flatten(1).mean(-1)  # (B,) anomaly scores",
         'label = batch["is_anomaly"].float()',
         "order = score.argsort(descending=True)",
         "hits = label[order]",
         "precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, device=hits.device)",
         "ap = (precision * hits).sum() / hits.sum().clamp(min=1)",
         "pos, neg = score[label == 1], score[label == 0]",
         "pairs = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()",
         "auc = pairs.mean() if pos.numel() and neg.numel() else torch.tensor(float('nan'))",
         'return {{"roc_auc": auc, "average_precision": ap}}'),
        ('batch["is_anomaly"] = (torch.arange(batch_size) % 2).long()  # both classes, for the metrics',),
    ),
    "node_cross_entropy": LossCode(
        'Cross-entropy over the nodes of one graph: batch = {{the graph inputs, "label": (N,) class ids,\n'
        '"train_mask": (N,) bool, optional: the nodes with a known label (all nodes without it)}}.',
        ('logits, label = self({args}), batch["label"]  # (N, num_classes), (N,)',
         'mask = batch.get("train_mask")',
         "if mask is not None:",
         "    logits, label = logits[mask], label[mask]",
         "return F.cross_entropy(logits, label)"),
        ('logits, label = self({args}), batch["label"]',
         'mask = batch.get("train_mask")',
         "if mask is not None:",
         "    logits, label = logits[mask], label[mask]",
         "pred = logits.argmax(-1)",
         "classes = torch.arange(logits.size(-1), device=label.device)[:, None]",
         "tp = ((pred == classes) & (label == classes)).sum(-1).float()",
         "fp = ((pred == classes) & (label != classes)).sum(-1).float()",
         "fn = ((pred != classes) & (label == classes)).sum(-1).float()",
         "present = (label == classes).any(-1) | (pred == classes).any(-1)",
         "f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)",
         'return {{"accuracy": (pred == label).float().mean(), "macro_f1": f1[present].mean()}}'),
        ("nodes = inputs[0].shape[0]",
         'batch["label"] = torch.randint(0, model.config.num_classes, (nodes,), generator=g)',
         'batch["train_mask"] = torch.arange(nodes) % 2 == 0  # half the nodes labelled, as in a transductive split'),
    ),
    "link_bce": LossCode(
        'Link prediction, binary cross-entropy of edge scores z_i . z_j: batch = {{the graph inputs (its edges pass\n'
        'the messages), "pos_edges": (2, P) edges to predict, "neg_edges": (2, Q) sampled non-edges}}.',
        ("z = self({args})  # (N, embedding_dim)",
         'pos, neg = batch["pos_edges"], batch["neg_edges"]',
         "score = torch.cat(((z[pos[0]] * z[pos[1]]).sum(-1), (z[neg[0]] * z[neg[1]]).sum(-1)))  # (P + Q,)",
         "target = torch.cat((score.new_ones(pos.shape[1]), score.new_zeros(neg.shape[1])))",
         "return F.binary_cross_entropy_with_logits(score, target)"),
        ("z = self({args})",
         'pos, neg = batch["pos_edges"], batch["neg_edges"]',
         "p, n = (z[pos[0]] * z[pos[1]]).sum(-1), (z[neg[0]] * z[neg[1]]).sum(-1)",
         "pairs = (p[:, None] > n[None, :]).float() + 0.5 * (p[:, None] == n[None, :]).float()",
         "auc = pairs.mean() if p.numel() and n.numel() else torch.tensor(float('nan'))",
         "correct = (p > 0).float().sum() + (n <= 0).float().sum()",
         'return {{"roc_auc": auc, "accuracy": correct / (p.numel() + n.numel())}}'),
        ("nodes, edges = inputs[0].shape[0], inputs[1]",
         'batch["pos_edges"] = edges  # the graph\'s own edges as positives (a held-out split in practice)',
         'batch["neg_edges"] = torch.randint(0, nodes, edges.shape, generator=g)  # uniform negative sampling'),
    ),
}

# per graph, the same cross-entropy and metrics as per sample; only the targets differ (one label per graph)
LOSSES["graph_cross_entropy"] = replace(
    LOSSES["cross_entropy"],
    doc='Cross-entropy per graph: batch = {{the graph inputs with each node\'s graph id, "label": (graphs,) class ids}}.',
    loss=("logits = self({args})  # (graphs, num_classes)", 'return F.cross_entropy(logits, batch["label"])'),
    batch=('batch["label"] = torch.randint(0, model.config.num_classes, (model.config.graphs,), generator=g)',),
)

LOSSES["vqa_soft_bce"] = LossCode(
    'VQA soft-score loss (Teney et al. 2018; as ViLT): batch = {{"{x}": inputs, "answer_scores": (B, num_classes)\n'
    "each answer's soft score, min(annotators who gave it / 3, 1)}}. Binary cross-entropy per answer, summed over\n"
    "the answers and averaged over the batch. vqa_score: the soft score of the predicted answer (VQA accuracy);\n"
    "exact_match: the prediction is the answer with the highest score.",
    ('logits = self({args})  # (B, num_classes)',
     'return F.binary_cross_entropy_with_logits(logits, batch["answer_scores"], reduction="sum") / logits.size(0)'),
    ('scores = batch["answer_scores"]',
     "pred = self({args}).argmax(-1)",
     'return {{"vqa_score": scores.gather(-1, pred[:, None]).squeeze(-1).mean(),',
     '        "exact_match": (pred == scores.argmax(-1)).float().mean()}}'),
    ("n = model.config.num_classes",
     "votes = torch.randint(0, n, (batch_size, 10), generator=g)  # ten annotators' answers per question",
     ('batch["answer_scores"] = (torch.zeros(batch_size, n).scatter_add_(1, votes, torch.ones(batch_size, 10)) / 3)'
      ".clamp(max=1.0)")),
)


# ---------------------------------------------------------------- reinforcement learning
_ENTROPY = "entropy = -(logp.exp() * logp).sum(-1).mean()"


LOSSES["reinforce"] = LossCode(
    'REINFORCE (Williams 1992): batch = {{"{x}": observations, "action": (B,) actions taken, "return": (B,)\n'
    "discounted returns from each step}}. The baseline is the batch's mean return (returns normalised to zero\n"
    "mean and unit variance), and an entropy bonus of weight config.entropy_coef keeps the policy exploring.",
    ("logits = self({args})  # (B, num_actions)",
     "logp = F.log_softmax(logits, dim=-1)",
     'ret = batch["return"]',
     "advantage = (ret - ret.mean()) / (ret.std(correction=0) + 1e-8)",
     'chosen = logp.gather(-1, batch["action"][:, None]).squeeze(-1)  # log pi(a_t | s_t)',
     _ENTROPY,
     "return -(chosen * advantage).mean() - self.config.entropy_coef * entropy"),
    ("logp = F.log_softmax(self({args}), dim=-1)",
     _ENTROPY,
     'return {{"entropy": entropy, "mean_return": batch["return"].float().mean()}}'),
    ('batch["action"] = torch.randint(0, model.config.num_actions, (batch_size,), generator=g)',
     'batch["return"] = torch.randn(batch_size, generator=g)'),
    source_methods=("rl.policy_act as act",),
)

_TD = ('obs, action = batch["{x}"], batch["action"]',
       "q = self(obs).gather(-1, action[:, None]).squeeze(-1)  # Q(s, a): (B,)",
       "with torch.no_grad():",
       '    target_net = self.__dict__.get("target_network", self)',
       '    next_obs = batch["next_{x}"]',
       "    next_action = self(next_obs).argmax(-1, keepdim=True)  # the online network picks a'",
       "    next_q = target_net(next_obs).gather(-1, next_action).squeeze(-1)  # the target network values it",
       '    target = batch["reward"] + self.config.gamma * (1.0 - batch["done"]) * next_q')

LOSSES["dqn_td"] = LossCode(
    'DQN temporal-difference loss (Huber): batch = {{"{x}": observations, "action": (B,) actions taken,\n'
    '"reward": (B,), "next_{x}": the next observations, "done": (B,) 1.0 where the episode ended}}. The target\n'
    "r + gamma (1 - done) Q'(s', argmax_a Q(s', a)) is Double DQN (van Hasselt et al. 2016) with the target\n"
    "network of update_target(); before the first update_target() Q' is the online network, detached.",
    (*_TD, "return F.smooth_l1_loss(q, target)"),
    (*_TD, 'return {{"mean_q": q.mean(), "td_error": (q - target).abs().mean()}}'),
    ('batch["action"] = torch.randint(0, model.config.num_actions, (batch_size,), generator=g)',
     'batch["reward"] = torch.randn(batch_size, generator=g)',
     'batch["next_{x}"] = example_inputs(model, batch_size, seed + 2)[0]',
     'batch["done"] = (torch.rand(batch_size, generator=g) < 0.1).float()'),
    source_methods=("rl.q_act as act", "rl.update_target"),
    imports=("copy",),
)

_PPO = ("logits, value = self({args})  # (B, num_actions), (B, 1)",
        "logp = F.log_softmax(logits, dim=-1)",
        'log_ratio = logp.gather(-1, batch["action"][:, None]).squeeze(-1) - batch["old_log_prob"]',
        "ratio = log_ratio.exp()  # pi(a | s) / pi_old(a | s)")

LOSSES["ppo_clip"] = LossCode(
    'PPO clipped surrogate (Schulman et al. 2017) with a shared trunk: batch = {{"{x}": observations,\n'
    '"action": (B,) actions taken, "old_log_prob": (B,) their log-probability under the rollout policy,\n'
    '"advantage": (B,) advantage estimates, "return": (B,) value targets}}; clip range config.clip_range,\n'
    "value loss weight config.value_coef, entropy bonus weight config.entropy_coef.",
    (*_PPO,
     'adv = batch["advantage"]',
     "adv = (adv - adv.mean()) / (adv.std(correction=0) + 1e-8)",
     "clip = self.config.clip_range",
     "policy_loss = -torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()",
     'value_loss = F.mse_loss(value.squeeze(-1), batch["return"])',
     _ENTROPY,
     "return policy_loss + self.config.value_coef * value_loss - self.config.entropy_coef * entropy"),
    (*_PPO,
     _ENTROPY,
     'ret = batch["return"]',
     "explained = 1 - (ret - value.squeeze(-1)).var(correction=0) / ret.var(correction=0).clamp(min=1e-8)",
     'return {{"entropy": entropy, "approx_kl": ((ratio - 1) - log_ratio).mean(),',
     '        "clip_fraction": ((ratio - 1).abs() > self.config.clip_range).float().mean(),',
     '        "explained_variance": explained}}'),
    ("with torch.no_grad():",
     "    logits = model(*inputs)[0]",
     'batch["action"] = torch.randint(0, model.config.num_actions, (batch_size,), generator=g).to(logits.device)',
     "# the rollout policy: the current one, moved a little (so the ratio is not 1 and clipping takes part)",
     "old = F.log_softmax(logits, dim=-1).gather(-1, batch[\"action\"][:, None]).squeeze(-1)",
     'batch["old_log_prob"] = old + 0.3 * torch.randn(batch_size, generator=g).to(logits.device)',
     'batch["advantage"] = torch.randn(batch_size, generator=g).to(logits.device)',
     'batch["return"] = torch.randn(batch_size, generator=g).to(logits.device)'),
    source_methods=("rl.actor_critic_act as act",),
)

LOSSES["world_model"] = LossCode(
    'World model: batch = {{"{x}": observations, "action": (B,) actions taken (the model\'s second input),\n'
    '"next_{x}": the observations that followed, "reward": (B,), "done": (B,) 1.0 where the episode ended}};\n'
    "squared error of the next observation and of the reward, binary cross-entropy of the episode end.",
    ("next_obs, reward, done_logit = self({args})  # (B, features), (B, 1), (B, 1)",
     'return (F.mse_loss(next_obs, batch["next_{x}"]) + F.mse_loss(reward.squeeze(-1), batch["reward"])',
     '        + F.binary_cross_entropy_with_logits(done_logit.squeeze(-1), batch["done"]))'),
    ("next_obs, reward, done_logit = self({args})",
     'return {{"next_observation_mse": F.mse_loss(next_obs, batch["next_{x}"]),',
     '        "reward_mse": F.mse_loss(reward.squeeze(-1), batch["reward"]),',
     '        "done_accuracy": ((done_logit.squeeze(-1) > 0).float() == batch["done"]).float().mean()}}'),
    ('batch["next_{x}"] = example_inputs(model, batch_size, seed + 2)[0]',
     'batch["reward"] = torch.randn(batch_size, generator=g)',
     'batch["done"] = (torch.rand(batch_size, generator=g) < 0.1).float()'),
    source_methods=("rl.planning_act as act",),
)

# ---------------------------------------------------------------- recommendation and ranking
_IN_BATCH = ('item = batch["item"]',
             "u, v = self({args})  # (B, d), (B, d): unit vectors",
             "sim = u @ v.t()  # (B, B): every user with every item of the batch",
             "# an item that recurs in the batch is no negative for the rows whose positive it is",
             "same = (item[:, None] == item[None, :]) & ~torch.eye(len(item), dtype=torch.bool, device=item.device)",
             'sim = sim.masked_fill(same, float("-inf"))')

LOSSES["in_batch_softmax"] = LossCode(
    'In-batch sampled softmax: batch = {{"user": (B,) user ids, "item": (B,) the item each user interacted with}};\n'
    "the other items of the batch are the negatives (a recurring item is masked out), the scores u . v of unit\n"
    "vectors divided by config.temperature (Yi et al. 2019, without their sampling-bias correction).",
    (*_IN_BATCH,
     "target = torch.arange(len(item), device=item.device)",
     "return F.cross_entropy(sim / self.config.temperature, target)"),
    (*_IN_BATCH,
     "rank = (sim > sim.diagonal()[:, None]).sum(-1)  # of each user's own item among the batch's items, from 0",
     "hit = rank < 10",
     'return {{"recall_at_10": hit.float().mean(),',
     '        "ndcg_at_10": torch.where(hit, 1.0 / torch.log2(rank.float() + 2), torch.zeros_like(sim[:, 0])).mean()}}'),
    source_methods=("recsys.recommend",),
)

_GROUPS = ('user, rel = batch["user"], batch["relevance"]',
           "score = self({args})  # (B,)",
           "same = user[:, None] == user[None, :]  # the rows of one query",
           "better = same & (rel[:, None] > rel[None, :])  # (i, j): i should rank above j")

LOSSES["pairwise_logistic"] = LossCode(
    'Pairwise logistic loss (RankNet): batch = {{"user": (B,) query ids, "item": (B,) candidate ids,\n'
    '"relevance": (B,) graded relevance (0 = not relevant)}}; each row is a (query, candidate) pair, the rows of\n'
    "one query id a list; log(1 + exp(s_j - s_i)) over the pairs of a list where i is the more relevant.",
    (*_GROUPS,
     "pair_loss = F.softplus(score[None, :] - score[:, None])  # log(1 + exp(s_j - s_i))",
     "return (pair_loss * better).sum() / better.sum().clamp(min=1)"),
    (*_GROUPS,
     "# NDCG@10 per query (gain 2^rel - 1, ties broken by row order), averaged over the queries; 1 with no gain",
     "idx = torch.arange(len(user), device=user.device)",
     "earlier = idx[None, :] < idx[:, None]",
     "rank = (same & ((score[None, :] > score[:, None]) | ((score[None, :] == score[:, None]) & earlier))).sum(-1)",
     "ideal = (same & ((rel[None, :] > rel[:, None]) | ((rel[None, :] == rel[:, None]) & earlier))).sum(-1)",
     "gain = 2.0 ** rel.float() - 1",
     "dcg = same.float() @ torch.where(rank < 10, gain / torch.log2(rank.float() + 2), torch.zeros_like(gain))",
     "idcg = same.float() @ torch.where(ideal < 10, gain / torch.log2(ideal.float() + 2), torch.zeros_like(gain))",
     "first = ~(same & earlier).any(-1)  # one row per query",
     "ndcg = torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.ones_like(dcg))[first].mean()",
     "ordered = (score[:, None] > score[None, :]).float()",
     'return {{"ndcg_at_10": ndcg, "pairwise_accuracy": (ordered * better).sum() / better.sum().clamp(min=1)}}'),
    ('batch["user"] = batch["user"][torch.arange(batch_size) // 4 * 4]  # lists of 4 candidates per query',
     'batch["relevance"] = torch.randperm(batch_size, generator=g) % 5  # graded 0..4'),
)

# ---------------------------------------------------------------- continuous actions: Gaussian policies
_GAUSSIAN = ("std = log_std.exp()",
             "# log N(a; mean, std^2), summed over the action dims",
             'logp = (-0.5 * ((batch["action"] - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)',
             "entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).mean()")


LOSSES["reinforce_gaussian"] = LossCode(
    'REINFORCE with a Gaussian policy (continuous actions): batch = {{"{x}": observations, "action": (B, action_dim)\n'
    'actions taken, "return": (B,) discounted returns}}; baseline, normalisation and entropy bonus as with\n'
    "discrete actions, the log-probability that of N(mean, exp(log_std)^2) with independent action dims.",
    ("mean, log_std = self({args})  # (B, action_dim) each",
     *_GAUSSIAN,
     'ret = batch["return"]',
     "advantage = (ret - ret.mean()) / (ret.std(correction=0) + 1e-8)",
     "return -(logp * advantage).mean() - self.config.entropy_coef * entropy"),
    ("mean, log_std = self({args})",
     "entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).mean()",
     'return {{"entropy": entropy, "mean_return": batch["return"].float().mean()}}'),
    ("with torch.no_grad():",
     "    mean = model(*inputs)[0]",
     'batch["action"] = torch.randn(mean.shape, generator=g).to(mean.device)',
     'batch["return"] = torch.randn(batch_size, generator=g).to(mean.device)'),
    source_methods=("rl.gaussian_act as act",),
)

_PPO_GAUSSIAN = ("mean, log_std, value = self({args})  # (B, action_dim), (B, action_dim), (B, 1)",
                 *_GAUSSIAN,
                 'log_ratio = logp - batch["old_log_prob"]',
                 "ratio = log_ratio.exp()  # pi(a | s) / pi_old(a | s)")

LOSSES["ppo_clip_gaussian"] = replace(
    LOSSES["ppo_clip"],
    doc='PPO clipped surrogate with a Gaussian policy (continuous actions): batch = {{"{x}": observations,\n'
        '"action": (B, action_dim) actions taken, "old_log_prob": (B,) their log-density under the rollout policy,\n'
        '"advantage": (B,), "return": (B,)}}; clip range config.clip_range, weights config.value_coef and\n'
        "config.entropy_coef; the policy N(mean, exp(log_std)^2) with independent action dims.",
    # the discrete PPO's clipped surrogate, value loss and metrics after the ratio; its own entropy left out
    loss=(*_PPO_GAUSSIAN, *(ln for ln in LOSSES["ppo_clip"].loss[4:] if ln != _ENTROPY)),
    metrics=(*_PPO_GAUSSIAN, *(ln for ln in LOSSES["ppo_clip"].metrics[4:] if ln != _ENTROPY)),
    batch=("with torch.no_grad():",
           "    mean, log_std, _ = model(*inputs)",
           "device = mean.device",
           'batch["action"] = mean + log_std.exp() * torch.randn(mean.shape, generator=g).to(device)',
           "# the rollout policy's log-density, moved a little (so the ratio is not 1 and clipping takes part)",
           "logp = (-0.5 * ((batch[\"action\"] - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)",
           'batch["old_log_prob"] = logp + 0.3 * torch.randn(batch_size, generator=g).to(device)',
           'batch["advantage"] = torch.randn(batch_size, generator=g).to(device)',
           'batch["return"] = torch.randn(batch_size, generator=g).to(device)'),
    source_methods=("rl.gaussian_actor_critic_act as act",),
)


TIMESTEP_INPUT = "timestep"  # a diffusion model's family-declared timestep input (`encoder timestep: timestep = ...`)

LOSSES["diffusion_mse"] = LossCode(
    "Epsilon-prediction loss (DDPM's L_simple): for clean inputs x0 = batch[\"{x}\"], t uniform in [0, timesteps) and\n"
    "noise ~ N(0, I), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; the mean squared error of the predicted noise.\n"
    "batch[\"{t}\"] is not read (the loss draws its own t); the other inputs condition the model.",
    ('x0 = batch["{x}"]',
     "t = torch.randint(0, self.config.timesteps, (x0.shape[0],), device=x0.device)",
     "noise = torch.randn_like(x0)",
     "abar = self.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ...)",
     "x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise",
     "return F.mse_loss(self({noisy}), noise)"),
    ('x0 = batch["{x}"]',
     "# a fixed draw of t and noise, so that the metrics of two checkpoints compare",
     "g = torch.Generator(device=x0.device).manual_seed(0)",
     "t = torch.randint(0, self.config.timesteps, (x0.shape[0],), generator=g, device=x0.device)",
     "noise = torch.randn(x0.shape, generator=g, device=x0.device)",
     "abar = self.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))",
     "x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise",
     "eps = self({noisy})",
     "x0_hat = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()  # the clean input the prediction implies",
     'return {{"noise_mse": F.mse_loss(eps, noise), "x0_mse": F.mse_loss(x0_hat, x0)}}'),
    init=("# the forward process: betas and their cumulative products abar_t (buffers, not in the state_dict)",
          "betas = noise_schedule(config.beta_schedule, config.timesteps, config.beta_start, config.beta_end)",
          'self.register_buffer("betas", betas, persistent=False)',
          'self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, dim=0), persistent=False)'),
    methods=(
        "@torch.no_grad()",
        "def sample(self, {cond}, steps: int = 50, method: str = \"ddim\", eta: float = 0.0, guidance_scale: float = 1.0,",
        "           uncond=None, generator=None, x=None, t_start=None, callback=None):",
        '    """Runs the reverse process from x_T ~ N(0, I) (or the given `x`) to x_0 in `steps` steps at timesteps',
        "    (steps - 1) k, ..., k, 0 with k = timesteps // steps (diffusers' \"leading\" spacing). method \"ddpm\": ancestral",
        "    sampling from the posterior q(x_prev | x_t, x0_hat) (Ho et al. 2020; with fewer steps, of the respaced",
        "    process); \"ddim\": Song et al. 2021, deterministic at eta = 0. guidance_scale != 1: classifier-free",
        "    guidance, eps_u + s (eps_c - eps_u), eps_u conditioned on `uncond` (default: all-zero ids of the same shape,",
        "    e.g. pass the tokenised empty prompt). Noise is drawn from `generator`. t_start: `x` is x_t at that timestep",
        "    and only the steps at timesteps <= t_start run (image-to-image, SDEdit); callback(x, abar_prev) after each",
        '    step returns the new x (inpainting: the known region noised to abar_prev, 1 after the last step)."""',
        '    if method not in ("ddpm", "ddim"):',
        '        raise ValueError(f"method must be \'ddpm\' or \'ddim\', got {{method!r}}")',
        "    c, first = self.config, {first}",
        "    n, device = first.shape[0], first.device",
        "    if x is None:",
        "        x = torch.randn((n, {shape}), generator=generator, device=device)",
        "    ratio = c.timesteps // min(max(steps, 1), c.timesteps)",
        "    abar = self.alphas_cumprod",
        "    if uncond is None:",
        "        uncond = tuple(torch.zeros_like(i) for i in ({cond},))",
        "    for step in range(min(max(steps, 1), c.timesteps) - 1, -1, -1):",
        "        t_now = step * ratio",
        "        if t_start is not None and t_now > t_start:",
        "            continue",
        "        a_t = abar[t_now]",
        "        a_prev = abar[t_now - ratio] if t_now - ratio >= 0 else abar.new_tensor(1.0)",
        "        t = torch.full((n,), t_now, dtype=torch.long, device=device)",
        "        if guidance_scale != 1.0:",
        "            eps_u, eps_c = self({guided}).chunk(2)",
        "            eps = eps_u + guidance_scale * (eps_c - eps_u)",
        "        else:",
        "            eps = self({step})",
        "        x0_hat = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()",
        '        if method == "ddim":',
        "            sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()",
        "            x = a_prev.sqrt() * x0_hat + (1 - a_prev - sigma**2).sqrt() * eps",
        "            if eta > 0:",
        "                x = x + sigma * torch.randn(x.shape, generator=generator, device=device)",
        "        else:",
        "            beta = 1 - a_t / a_prev",
        "            x = (a_prev.sqrt() * beta / (1 - a_t)) * x0_hat + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x",
        "            if t_now > 0:",
        "                var = ((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20)",
        "                x = x + var.sqrt() * torch.randn(x.shape, generator=generator, device=device)",
        "        if callback is not None:",
        "            x = callback(x, a_prev)",
        "    return x",
    ),
)


# ------------------------------------------------------------------ object detection
# Ground truth, padded: batch["boxes"] (B, max_objects, 4) as (x1, y1, x2, y2) in pixels of the input image,
# batch["labels"] (B, max_objects) class ids, -1 for padding. Both detectors' `detect()` give per image
# {"boxes": (K, 4) x1 y1 x2 y2 in pixels, "scores": (K,), "labels": (K,)}.
_DETECTION_BATCH = (
    "max_objects, size = 4, model.config.image_size",
    "count = 1 + torch.arange(batch_size) % max_objects  # objects per image: 1, 2, 3, 4, 1, ...",
    "wh = (0.15 + 0.45 * torch.rand(batch_size, max_objects, 2, generator=g)) * size",
    "centre = wh / 2 + torch.rand(batch_size, max_objects, 2, generator=g) * (size - wh)",
    "pad = torch.arange(max_objects)[None, :] >= count[:, None]",
    'batch["boxes"] = torch.cat((centre - wh / 2, centre + wh / 2), -1).masked_fill(pad[..., None], 0.0)',
    'batch["labels"] = torch.randint(0, model.config.num_classes, (batch_size, max_objects), generator=g).masked_fill(pad, -1)',
)

_DETECTION_METRICS_DOC = (
    "# mAP at IoU 0.5 over the batch (all-point interpolated AP per class with ground truth, averaged) and the",
    "# recall of the same detections at IoU 0.5",
)


def _detection_metrics(which: str, detect: str) -> tuple[str, ...]:
    """The metrics body of both detectors: mAP@0.5 and recall of the detections `detect` binds."""
    return (*_DETECTION_METRICS_DOC, which, detect,
            'mean_ap, recall = map_50(detections, batch["boxes"], batch["labels"])',
            'return {{"map_50": mean_ap, "recall_50": recall}}')


LOSSES["dense_detection"] = LossCode(
    'Anchor-free detection loss: batch = {{"{x}": images, "boxes": (B, max_objects, 4) x1 y1 x2 y2 in pixels,\n'
    '"labels": (B, max_objects) class ids, -1 padding}}. FCOS centre-sampling assignment, focal loss over every\n'
    "cell and class and 2 (1 - GIoU) over the positives, each divided by the number of positives.",
    ("logits, raw = self({args})  # (B, cells, num_classes), (B, cells, 4)",
     "centres, strides = detection_anchors(self.config.image_size, logits.device)",
     'target_cls, target_box, positive = assign_center_prior(centres, strides, batch["boxes"], batch["labels"],',
     "                                                       logits.shape[-1])",
     "n = positive.sum().clamp(min=1)",
     "loss_cls = sigmoid_focal_loss(logits, target_cls).sum() / n",
     "loss_box = (1 - box_giou(decode_ltrb(raw, centres, strides)[positive], target_box[positive])).sum() / n",
     "return loss_cls + 2.0 * loss_box"),
    _detection_metrics("# of all detections kept at score 0.001 (NMS at IoU 0.6, at most 100 per image)",
                       'detections = self.detect(batch["{x}"], score_threshold=0.001, iou_threshold=0.6)'),
    _DETECTION_BATCH,
    helpers=("box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh"),  # not called: model.py has kept them (unchanged goldens)
    source_methods=("detection.detect",),
)

LOSSES["set_detection"] = LossCode(
    'DETR\'s set prediction loss: batch = {{"{x}": images, "boxes": (B, max_objects, 4) x1 y1 x2 y2 in pixels,\n'
    '"labels": (B, max_objects) class ids, -1 padding}}. Hungarian matching, then cross-entropy (no-object weighted\n'
    "0.1) + 5 L1 + 2 (1 - GIoU) of the matched boxes (normalised cx cy w h).",
    ("logits, boxes = self({args})  # (B, queries, num_classes + 1), (B, queries, 4)",
     'return set_prediction_loss(logits, boxes, batch["boxes"], batch["labels"], self.config.image_size)'),
    _detection_metrics("# of every query's most likely class (no threshold: DETR ranks its queries by score)",
                       'detections = self.detect(batch["{x}"], score_threshold=0.0)'),
    _DETECTION_BATCH,
    source_methods=("matching.detect",),
)

LOSSES["codebook_cross_entropy"] = LossCode(
    'Codec language model loss (MusicGen): batch = {{"{x}": (B, K, T) aligned codec tokens}}. The tokens are laid\n'
    "out in the delay pattern (delay_pattern: codebook k k steps late, a start column, gaps of the special id\n"
    "config.codebook_size); the model reads all but the last column and predicts the next column of every\n"
    "codebook; the cross-entropy of each codebook over its real tokens, averaged over the K codebooks.",
    ('seq = delay_pattern(batch["{x}"], self.config.codebook_size)  # (B, K, T + K)',
     "logits = self(seq[:, :, :-1])  # (B, K, T + K - 1, codebook_size)",
     "return codebook_nll(logits, seq[:, :, 1:], self.config.codebook_size)[0]"),
    ('seq = delay_pattern(batch["{x}"], self.config.codebook_size)',
     "nll, accuracy = codebook_nll(self(seq[:, :, :-1]), seq[:, :, 1:], self.config.codebook_size)",
     'return {{"perplexity": nll.exp(), "token_accuracy": accuracy}}'),
    source_methods=("codec.generate",),
)

# ---------------------------------------------------------------- retrieval-augmented generation
_RAG = ('tokens, positive = batch["{y}"], batch["positive"]',
        "logits, scores = self({shifted})  # (B, T-1, vocab), (B, num_passages)",
        "nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))")

LOSSES["retrieval_augmented_cross_entropy"] = LossCode(
    'Retrieval-augmented generation (Fusion-in-Decoder reader, DPR retriever): batch = {{"{x}": (B, Tq) question\n'
    'tokens, "passages": (B, num_passages, Tp) candidate passages, "{y}": (B, T) answer tokens, "positive": (B,)\n'
    "the index of the gold passage among the candidates}}. The answer's next-token cross-entropy (teacher forcing,\n"
    "the reader reading the top_k candidates by retrieval score) plus config.retrieval_weight times the\n"
    "cross-entropy of the retrieval scores over the candidates with the gold passage the target.",
    (*_RAG,
     "return nll + self.config.retrieval_weight * F.cross_entropy(scores, positive)"),
    (*_RAG,
     'return {{"perplexity": nll.exp(), "token_accuracy": (logits.argmax(-1) == tokens[:, 1:]).float().mean(),',
     '        "retrieval_recall_at_1": (scores.argmax(-1) == positive).float().mean()}}'),
    ('batch["positive"] = torch.randint(0, model.config.num_passages, (batch_size,), generator=g)',),
)

# ---------------------------------------------------------------- mask classification (MaskFormer)
# Ground truth, padded: batch["labels"] (B, max_segments) class ids, -1 for padding; batch["masks"]
# (B, max_segments, H, W) float 0/1 at the input's resolution, disjoint: image i has 1 + i % 4 rectangles painted in
# order (a later one covers an earlier one), each segment the pixels its rectangle kept.
_MASK_BATCH = (
    "max_segments, size = 4, model.config.image_size",
    "count = 1 + torch.arange(batch_size) % max_segments  # segments per image: 1, 2, 3, 4, 1, ...",
    "wh = ((0.2 + 0.5 * torch.rand(batch_size, max_segments, 2, generator=g)) * size).long()",
    "corner = (torch.rand(batch_size, max_segments, 2, generator=g) * (size - wh)).long()",
    "ids = torch.zeros(batch_size, size, size, dtype=torch.long)",
    "for b in range(batch_size):",
    "    for m in range(int(count[b])):",
    "        (x, y), (w, h) = corner[b, m].tolist(), wh[b, m].tolist()",
    "        ids[b, y : y + h, x : x + w] = m + 1",
    "slots = torch.arange(1, max_segments + 1)[None, :, None, None]",
    'batch["masks"] = (ids[:, None] == slots).float()',
    'labels = torch.randint(0, model.config.num_classes, (batch_size, max_segments), generator=g)',
    'batch["labels"] = labels.masked_fill((batch["masks"].sum((2, 3)) == 0) | (slots[0, :, 0, 0] > count[:, None]), -1)',
)

_MASK_LOSS = (
    "logits, masks = self({args})  # (B, queries, num_classes + 1), (B, queries, H/4, W/4)",
    'return mask_set_loss(logits, masks, batch["masks"], batch["labels"])',
)

_MASK_DOC = (
    'batch = {{"{x}": images, "masks": (B, max_segments, H, W) binary float, "labels": (B, max_segments) class ids,\n'
    "-1 padding}}. MaskFormer's set loss: Hungarian matching on -p(class) + 20 focal + 1 dice, then cross-entropy\n"
    "(no object weighted 0.1) + 20 sigmoid focal + 1 dice of the matched masks (upsampled to the ground truth's size)."
)

LOSSES["mask_set_instance"] = LossCode(
    "Instance segmentation by mask classification: " + _MASK_DOC,
    _MASK_LOSS,
    ("# mask AP at IoU 0.5 of the top-100 instances per image, and the mean IoU of the Hungarian-matched masks",
     "outputs = self({args})",
     'instances = self.instance_inference(outputs, top_k=100)',
     'matches = match_masks(*outputs, batch["masks"], batch["labels"])',
     'return {{"mask_map_50": mask_map_50(instances, batch["masks"], batch["labels"]),',
     '        "mean_matched_iou": mean_matched_iou(matches)}}'),
    _MASK_BATCH,
    helpers=("panoptic_quality", "segments_from_masks"),  # panoptic metrics, not called: kept (unchanged goldens)
    # "": one more blank line between the two (as model.py has had them)
    source_methods=("masks.instance_inference", "", "masks.panoptic_inference"),
)

# the same loss, batch, helpers and inference methods; panoptic quality for metrics
LOSSES["mask_set_panoptic"] = replace(
    LOSSES["mask_set_instance"],
    doc="Panoptic segmentation by mask classification: " + _MASK_DOC,
    helpers=("mask_map_50", "mean_matched_iou"),  # instance metrics, not called: kept (unchanged goldens)
    metrics=("# panoptic quality of MaskFormer's panoptic inference (thresholds 0.8) against the ground-truth segments",
             "pred_ids, pred_classes = self.panoptic_inference(self({args}))",
             'gt_ids, gt_classes = segments_from_masks(batch["masks"], batch["labels"])',
             "pq, sq, rq = panoptic_quality(pred_ids, pred_classes, gt_ids, gt_classes, self.config.num_classes)",
             'return {{"pq": pq, "sq": sq, "rq": rq}}'),
)


@functools.cache
def loss_helpers(loss: str) -> frozenset[str]:
    """The runtime definitions a task's code reads: its loss, metrics, batch, init and methods (strings and comments
    left out), its runtime methods', and its `helpers`; model.py gets them with what they read (runtime_source)."""
    code = LOSSES[loss]
    names = runtime_names_in("\n".join((*code.loss, *code.metrics, *code.batch, *code.init, *code.methods)))
    methods = [runtime_method(key).uses for key in code.source_methods if key]
    return frozenset(names.union(code.helpers, *methods))
