"""Each task's loss, metrics and training batch as PyTorch code, keyed by the loss name the compiler
picked (metagen_compiler/tasks.py). `{x}` is the model's first input, as named in the spec; `{args}` all
its inputs from the batch, in forward's order (`batch["image"], batch["text"]`); `{y}` the token input a
next-token loss predicts (the family-declared `target` input of an encoder-decoder, else the first) and
`{shifted}` all inputs with `tokens` (= batch["{y}"]) cut before its last token, for teacher forcing.

- `loss`: the body of `Model.loss(self, batch)`, returning a scalar;
- `metrics`: the body of `Model.metrics(self, batch)`, returning {metric name: float tensor} with
  exactly the task's metric names;
- `batch`: lines of `example_batch` after `batch` holds the inputs (`inputs` the tuple, `g` a seeded
  generator, `model` the module): the targets, random but of the right form;
- `init`: lines at the end of `Model.__init__` (the diffusion task's noise schedule buffers), `methods`: more
  methods of the model (its samplers), `helpers`: module-level source they use.

The diffusion task (`diffusion_mse`) calls the model on the noised input: `{noisy}` is forward's arguments
with the first input replaced by `x_t` and the timestep by `t`; in `sample`, `{cond}` is the conditioning
inputs' names (all but those two), `{step}` the call at `x`, `t` and `{guided}` the call on the batch doubled
by the unconditional inputs `uncond`.
- `methods`: more methods of the model (an agent's `act`, a DQN's `update_target`), after `metrics`;
- `imports`: modules those need beyond torch (one `import` line each in the generated file).

Reinforcement-learning batches hold transitions: `{x}` the observations, "action" (B,) the actions taken,
and what each loss needs besides ("reward", "next_{x}", "done", "return", "advantage", "old_log_prob").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["LossCode", "LOSSES", "LOSS_HELPERS", "TARGET_INPUT"]

TARGET_INPUT = "target"  # an encoder-decoder's decoder tokens (`encoder target: text = ...` in its family)


@dataclass(frozen=True)
class LossCode:
    doc: str
    loss: tuple[str, ...]
    metrics: tuple[str, ...]
    batch: tuple[str, ...] = ()
    init: tuple[str, ...] = ()  # lines at the end of Model.__init__ (the diffusion noise schedule's buffers)
    methods: tuple[str, ...] = ()  # more methods, as template lines formatted like `loss` (diffusion's sample())
    helpers: tuple[str, ...] = ()  # module-level functions of LOSS_HELPERS the code calls
    source_methods: str = ""  # more methods, verbatim source at class level (detection's detect())
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
     'batch["answer_scores"] = (torch.zeros(batch_size, n).scatter_add_(1, votes, torch.ones(batch_size, 10)) / 3)'
     ".clamp(max=1.0)"),
)


# ---------------------------------------------------------------- reinforcement learning
_ENTROPY = "entropy = -(logp.exp() * logp).sum(-1).mean()"


def _act(forward: str, doc: str) -> tuple[str, ...]:
    """`act` of a policy with discrete actions: `forward` binds `logits` for the observations `obs`."""
    return ("@torch.no_grad()",
            "def act(self, obs, greedy=False):",
            f'    """{doc}"""',
            f"    {forward}",
            "    if greedy:",
            "        return logits.argmax(-1)",
            "    return torch.multinomial(F.softmax(logits, dim=-1), 1).squeeze(-1)")


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
    methods=_act("logits = self(obs)",
                 "Actions for a batch of observations: the most likely (greedy) or sampled from the policy."),
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
    methods=("@torch.no_grad()",
             "def act(self, obs, greedy=False, epsilon=0.05):",
             '    """Actions for a batch of observations: argmax_a Q(s, a), or epsilon-greedy unless greedy."""',
             "    action = self(obs).argmax(-1)",
             "    if greedy:",
             "        return action",
             "    explore = torch.rand(action.shape, device=action.device) < epsilon",
             "    return torch.where(explore, torch.randint_like(action, self.config.num_actions), action)",
             "",
             "@torch.no_grad()",
             "def update_target(self):",
             '    """Copy the online weights into the target network (every C steps in DQN). The copy is kept out of',
             "    the module's submodules: parameters(), state_dict() and exports hold the online network only; call",
             '    it again after moving the model to another device."""',
             '    target = self.__dict__.pop("target_network", None)',
             "    if target is None:",
             "        target = copy.deepcopy(self).requires_grad_(False).eval()",
             "    else:",
             "        target.load_state_dict(self.state_dict())",
             '    self.__dict__["target_network"] = target',
             "    return target"),
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
    methods=_act("logits, _ = self(obs)",
                 "Actions for a batch of observations: the most likely (greedy) or sampled from the policy."),
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
    methods=("@torch.no_grad()",
             "def act(self, obs, greedy=False):",
             '    """Planning by one-step lookahead in the model: every action is imagined from each observation and',
             '    scored by its predicted reward; the best (greedy), or one sampled by the softmax of the scores."""',
             "    b, n = obs.shape[0], self.config.num_actions",
             "    actions = torch.arange(n, device=obs.device).repeat(b)  # (B * n,): every action for every state",
             "    _, reward, _ = self(obs.repeat_interleave(n, 0), actions)",
             "    score = reward.view(b, n)",
             "    if greedy:",
             "        return score.argmax(-1)",
             "    return torch.multinomial(F.softmax(score, dim=-1), 1).squeeze(-1)"),
)

# ---------------------------------------------------------------- recommendation and ranking
_IN_BATCH = ('user, item = batch["user"], batch["item"]',
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
    methods=("@torch.no_grad()",
             "def recommend(self, user, k=10):",
             '    """The k items of the highest score u . v for each user, over the whole catalogue: (B, k) item ids."""',
             "    items = torch.arange(self.config.num_items, device=user.device)",
             "    u, v = self(user, items)  # the towers are independent: B users, all items",
             "    return (u @ v.t()).topk(min(k, len(items)), dim=-1).indices"),
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


def _act_gaussian(forward: str) -> tuple[str, ...]:
    return ("@torch.no_grad()",
            "def act(self, obs, greedy=False):",
            '    """Actions for a batch of observations: the Gaussian\'s mean (greedy) or a sample from it."""',
            f"    {forward}",
            "    if greedy:",
            "        return mean",
            "    return mean + log_std.exp() * torch.randn_like(mean)")


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
    methods=_act_gaussian("mean, log_std = self(obs)"),
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
    methods=_act_gaussian("mean, log_std, _ = self(obs)"),
)


TIMESTEP_INPUT = "timestep"  # a diffusion model's family-declared timestep input (`encoder timestep: timestep = ...`)

_NOISE_SCHEDULE = '''
def noise_schedule(kind: str, timesteps: int, beta_start: float, beta_end: float):
    """The betas of the forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), (timesteps,) float32:
    linear (DDPM), scaled_linear (Stable Diffusion: linear in sqrt(beta)) or cosine (Nichol and Dhariwal 2021:
    alpha_bar(s) = cos((s + 0.008) / 1.008 * pi / 2) ** 2, each beta capped at 0.999), as diffusers' schedulers."""
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float32)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float32) ** 2
    if kind == "cosine":
        def alpha_bar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), 0.999)
                             for i in range(timesteps)], dtype=torch.float32)
    raise ValueError(f"unknown beta schedule {kind!r}")
'''

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
        "           uncond=None, generator=None, x=None):",
        '    """Runs the reverse process from x_T ~ N(0, I) (or the given `x`) to x_0 in `steps` steps at timesteps',
        "    (steps - 1) k, ..., k, 0 with k = timesteps // steps (diffusers' \"leading\" spacing). method \"ddpm\": ancestral",
        "    sampling from the posterior q(x_prev | x_t, x0_hat) (Ho et al. 2020; with fewer steps, of the respaced",
        "    process); \"ddim\": Song et al. 2021, deterministic at eta = 0. guidance_scale != 1: classifier-free",
        "    guidance, eps_u + s (eps_c - eps_u), eps_u conditioned on `uncond` (default: all-zero ids of the same shape,",
        '    e.g. pass the tokenised empty prompt). Noise is drawn from `generator`."""',
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
        "    return x",
    ),
    helpers=("noise_schedule",),
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


# Module-level functions the detection losses, metrics and detect() use, emitted into model.py in this order.
LOSS_HELPERS: dict[str, str] = {
    "boxes": '''
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
''',
    "nms": '''
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
''',
    "ap": '''
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
''',
    "map": '''
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
''',
    "anchors": '''
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
''',
    "focal": '''
def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """Focal loss (Lin et al. 2017) per element of multi-label logits and 0/1 targets."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    return ce * (1 - p_t) ** gamma * (alpha * targets + (1 - alpha) * (1 - targets))
''',
    "hungarian": '''
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
''',
    "set_loss": '''
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
''',
    "noise_schedule": _NOISE_SCHEDULE,
    "delay": '''
def delay_pattern(codes, special: int):
    """MusicGen's delay interleaving: aligned codec tokens (B, K, T) -> (B, K, T + K), a first column of `special`
    (the start token), codebook k moved k steps right, the gaps `special`: column c holds frame c - 1 - k of codebook
    k, so one step predicts frame t of codebook 0 with frames t - k of codebooks k > 0 seen up to t - 1."""
    B, K, T = codes.shape
    out = codes.new_full((B, K, T + K), special)
    for k in range(K):
        out[:, k, 1 + k : 1 + k + T] = codes[:, k]
    return out


def undelay_pattern(seq, frames: int):
    """The inverse of delay_pattern: (B, K, S) in the delay layout -> the first `frames` aligned frames (B, K, frames)."""
    return torch.stack([seq[:, k, 1 + k : 1 + k + frames] for k in range(seq.size(1))], dim=1)


def codebook_nll(logits, targets, special: int):
    """Next-token cross-entropy of each codebook over the positions whose target is a token (the delay pattern's
    `special` gaps are ignored), averaged over the codebooks; and the accuracy of the argmax over those positions.
    logits (B, K, S, V), targets (B, K, S)."""
    nll = torch.stack([F.cross_entropy(logits[:, k].flatten(0, 1), targets[:, k].flatten(), ignore_index=special)
                       for k in range(logits.size(1))]).mean()
    valid = targets != special
    accuracy = ((logits.argmax(-1) == targets) & valid).sum().float() / valid.sum().clamp(min=1)
    return nll, accuracy
''',
}

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
    helpers=("boxes", "nms", "ap", "map", "anchors", "focal"),
    source_methods='''
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
''',
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
    helpers=("boxes", "nms", "ap", "map", "hungarian", "set_loss"),
    source_methods='''
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
''',
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
    helpers=("delay",),
    source_methods='''
@torch.no_grad()
def generate(self, prompt_tokens, steps: int, temperature: float = 1.0, top_k: int = 250, generator=None):
    """Autoregressive sampling over all codebooks in the delay pattern: prompt_tokens (B, K, P) aligned codec tokens
    (P may be 0) -> (B, K, P + steps): the prompt, then `steps` new frames. Column c of the delay layout takes one
    token of every codebook from the model's logits at the last position (no key/value cache: each step runs the
    model on the sequence so far); top-k sampling at `temperature` (MusicGen: k = 250, temperature 1), the argmax
    with temperature 0. Columns that hold a prompt frame or a gap keep it."""
    special = self.config.codebook_size
    B, K, P = prompt_tokens.shape
    frames = P + steps
    seq = delay_pattern(prompt_tokens, special)
    seq = torch.cat([seq, seq.new_full((B, K, steps), special)], dim=2)  # (B, K, frames + K)
    codebook = torch.arange(K, device=seq.device)
    for c in range(1 + P, frames + K):
        logits = self(seq[:, :, :c])[:, :, -1].float()  # (B, K, codebook_size): the next column's logits
        if temperature > 0:
            logits = logits / temperature
            if top_k:
                kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            token = torch.multinomial(F.softmax(logits, dim=-1).flatten(0, 1), 1, generator=generator).view(B, K)
        else:
            token = logits.argmax(-1)
        frame = c - 1 - codebook  # the frame column c holds in each codebook
        seq[:, :, c] = torch.where((frame >= P) & (frame < frames), token, seq[:, :, c])
    return undelay_pattern(seq, frames)
''',
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
LOSS_HELPERS["masks"] = '''
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
'''

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

_INFERENCE_METHODS = '''
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
'''

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
    helpers=("ap", "focal", "hungarian", "masks"),
    source_methods=_INFERENCE_METHODS,
)

# the same loss, batch, helpers and inference methods; panoptic quality for metrics
LOSSES["mask_set_panoptic"] = replace(
    LOSSES["mask_set_instance"],
    doc="Panoptic segmentation by mask classification: " + _MASK_DOC,
    metrics=("# panoptic quality of MaskFormer's panoptic inference (thresholds 0.8) against the ground-truth segments",
             "pred_ids, pred_classes = self.panoptic_inference(self({args}))",
             'gt_ids, gt_classes = segments_from_masks(batch["masks"], batch["labels"])',
             "pq, sq, rq = panoptic_quality(pred_ids, pred_classes, gt_ids, gt_classes, self.config.num_classes)",
             'return {{"pq": pq, "sq": sq, "rq": rq}}'),
)
