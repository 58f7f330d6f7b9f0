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
- `methods`: more methods of the model (an agent's `act`, a DQN's `update_target`), after `metrics`;
- `imports`: modules those need beyond torch (one `import` line each in the generated file).

Reinforcement-learning batches hold transitions: `{x}` the observations, "action" (B,) the actions taken,
and what each loss needs besides ("reward", "next_{x}", "done", "return", "advantage", "old_log_prob").
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["LossCode", "LOSSES", "TARGET_INPUT"]

TARGET_INPUT = "target"  # an encoder-decoder's decoder tokens (`encoder target: text = ...` in its family)


@dataclass(frozen=True)
class LossCode:
    doc: str
    loss: tuple[str, ...]
    metrics: tuple[str, ...]
    batch: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()


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
