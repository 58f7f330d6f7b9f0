"""Reinforcement-learning tasks: REINFORCE, Double DQN, PPO (discrete and Gaussian policies) and world models.

The task code of backends/pytorch/runtime/objectives (see its __init__): each class's loss, metrics, targets and
other methods are pasted into model.py with the spec's input names filled in (backends/pytorch/losses.py).
"""

import math

import torch
import torch.nn.functional as F

from .slots import TaskModel, batch_inputs


class Reinforce(TaskModel):
    """`reinforce`: REINFORCE with a discrete policy."""

    def loss(self, batch):
        logits = self(*batch_inputs(batch))  # (B, num_actions)
        logp = F.log_softmax(logits, dim=-1)
        ret = batch["return"]
        advantage = (ret - ret.mean()) / (ret.std(correction=0) + 1e-8)
        chosen = logp.gather(-1, batch["action"][:, None]).squeeze(-1)  # log pi(a_t | s_t)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        return -(chosen * advantage).mean() - self.config.entropy_coef * entropy

    @torch.no_grad()
    def metrics(self, batch):
        logp = F.log_softmax(self(*batch_inputs(batch)), dim=-1)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        return {"entropy": entropy, "mean_return": batch["return"].float().mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        batch["action"] = torch.randint(0, model.config.num_actions, (batch_size,), generator=g)
        batch["return"] = torch.randn(batch_size, generator=g)


class ReinforceGaussian(TaskModel):
    """`reinforce_gaussian`: REINFORCE with a Gaussian policy (continuous actions)."""

    def loss(self, batch):
        mean, log_std = self(*batch_inputs(batch))  # (B, action_dim) each
        std = log_std.exp()
        # log N(a; mean, std^2), summed over the action dims
        logp = (-0.5 * ((batch["action"] - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).mean()
        ret = batch["return"]
        advantage = (ret - ret.mean()) / (ret.std(correction=0) + 1e-8)
        return -(logp * advantage).mean() - self.config.entropy_coef * entropy

    @torch.no_grad()
    def metrics(self, batch):
        mean, log_std = self(*batch_inputs(batch))  # noqa: RUF059 (model.py reads as the loss does)
        entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).mean()
        return {"entropy": entropy, "mean_return": batch["return"].float().mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        with torch.no_grad():
            mean = model(*inputs)[0]
        batch["action"] = torch.randn(mean.shape, generator=g).to(mean.device)
        batch["return"] = torch.randn(batch_size, generator=g).to(mean.device)


class DqnTd(TaskModel):
    """`dqn_td`: Double DQN's temporal-difference loss (Huber)."""

    def loss(self, batch):
        obs, action = batch["x"], batch["action"]
        q = self(obs).gather(-1, action[:, None]).squeeze(-1)  # Q(s, a): (B,)
        with torch.no_grad():
            target_net = self.__dict__.get("target_network", self)
            next_obs = batch["next_x"]
            next_action = self(next_obs).argmax(-1, keepdim=True)  # the online network picks a'
            next_q = target_net(next_obs).gather(-1, next_action).squeeze(-1)  # the target network values it
            target = batch["reward"] + self.config.gamma * (1.0 - batch["done"]) * next_q
        return F.smooth_l1_loss(q, target)

    @torch.no_grad()
    def metrics(self, batch):
        obs, action = batch["x"], batch["action"]
        q = self(obs).gather(-1, action[:, None]).squeeze(-1)  # Q(s, a): (B,)
        with torch.no_grad():
            target_net = self.__dict__.get("target_network", self)
            next_obs = batch["next_x"]
            next_action = self(next_obs).argmax(-1, keepdim=True)  # the online network picks a'
            next_q = target_net(next_obs).gather(-1, next_action).squeeze(-1)  # the target network values it
            target = batch["reward"] + self.config.gamma * (1.0 - batch["done"]) * next_q
        return {"mean_q": q.mean(), "td_error": (q - target).abs().mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        batch["action"] = torch.randint(0, model.config.num_actions, (batch_size,), generator=g)
        batch["reward"] = torch.randn(batch_size, generator=g)
        batch["next_x"] = example_inputs(model, batch_size, seed + 2)[0]
        batch["done"] = (torch.rand(batch_size, generator=g) < 0.1).float()


class PpoClip(TaskModel):
    """`ppo_clip`: PPO's clipped surrogate with a value head, discrete actions."""

    def loss(self, batch):
        logits, value = self(*batch_inputs(batch))  # (B, num_actions), (B, 1)
        logp = F.log_softmax(logits, dim=-1)
        log_ratio = logp.gather(-1, batch["action"][:, None]).squeeze(-1) - batch["old_log_prob"]
        ratio = log_ratio.exp()  # pi(a | s) / pi_old(a | s)
        adv = batch["advantage"]
        adv = (adv - adv.mean()) / (adv.std(correction=0) + 1e-8)
        clip = self.config.clip_range
        policy_loss = -torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
        value_loss = F.mse_loss(value.squeeze(-1), batch["return"])
        entropy = -(logp.exp() * logp).sum(-1).mean()
        return policy_loss + self.config.value_coef * value_loss - self.config.entropy_coef * entropy

    @torch.no_grad()
    def metrics(self, batch):
        logits, value = self(*batch_inputs(batch))  # (B, num_actions), (B, 1)
        logp = F.log_softmax(logits, dim=-1)
        log_ratio = logp.gather(-1, batch["action"][:, None]).squeeze(-1) - batch["old_log_prob"]
        ratio = log_ratio.exp()  # pi(a | s) / pi_old(a | s)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        ret = batch["return"]
        explained = 1 - (ret - value.squeeze(-1)).var(correction=0) / ret.var(correction=0).clamp(min=1e-8)
        return {"entropy": entropy, "approx_kl": ((ratio - 1) - log_ratio).mean(),
                "clip_fraction": ((ratio - 1).abs() > self.config.clip_range).float().mean(),
                "explained_variance": explained}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        with torch.no_grad():
            logits = model(*inputs)[0]
        batch["action"] = torch.randint(0, model.config.num_actions, (batch_size,), generator=g).to(logits.device)
        # the rollout policy: the current one, moved a little (so the ratio is not 1 and clipping takes part)
        old = F.log_softmax(logits, dim=-1).gather(-1, batch["action"][:, None]).squeeze(-1)
        batch["old_log_prob"] = old + 0.3 * torch.randn(batch_size, generator=g).to(logits.device)
        batch["advantage"] = torch.randn(batch_size, generator=g).to(logits.device)
        batch["return"] = torch.randn(batch_size, generator=g).to(logits.device)


class PpoClipGaussian(TaskModel):
    """`ppo_clip_gaussian`: PPO's clipped surrogate with a value head, Gaussian policy."""

    def loss(self, batch):
        mean, log_std, value = self(*batch_inputs(batch))  # (B, action_dim), (B, action_dim), (B, 1)
        std = log_std.exp()
        # log N(a; mean, std^2), summed over the action dims
        logp = (-0.5 * ((batch["action"] - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).mean()
        log_ratio = logp - batch["old_log_prob"]
        ratio = log_ratio.exp()  # pi(a | s) / pi_old(a | s)
        adv = batch["advantage"]
        adv = (adv - adv.mean()) / (adv.std(correction=0) + 1e-8)
        clip = self.config.clip_range
        policy_loss = -torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
        value_loss = F.mse_loss(value.squeeze(-1), batch["return"])
        return policy_loss + self.config.value_coef * value_loss - self.config.entropy_coef * entropy

    @torch.no_grad()
    def metrics(self, batch):
        mean, log_std, value = self(*batch_inputs(batch))  # (B, action_dim), (B, action_dim), (B, 1)
        std = log_std.exp()
        # log N(a; mean, std^2), summed over the action dims
        logp = (-0.5 * ((batch["action"] - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).mean()
        log_ratio = logp - batch["old_log_prob"]
        ratio = log_ratio.exp()  # pi(a | s) / pi_old(a | s)
        ret = batch["return"]
        explained = 1 - (ret - value.squeeze(-1)).var(correction=0) / ret.var(correction=0).clamp(min=1e-8)
        return {"entropy": entropy, "approx_kl": ((ratio - 1) - log_ratio).mean(),
                "clip_fraction": ((ratio - 1).abs() > self.config.clip_range).float().mean(),
                "explained_variance": explained}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        with torch.no_grad():
            mean, log_std, _ = model(*inputs)
        device = mean.device
        batch["action"] = mean + log_std.exp() * torch.randn(mean.shape, generator=g).to(device)
        # the rollout policy's log-density, moved a little (so the ratio is not 1 and clipping takes part)
        logp = (-0.5 * ((batch["action"] - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        batch["old_log_prob"] = logp + 0.3 * torch.randn(batch_size, generator=g).to(device)
        batch["advantage"] = torch.randn(batch_size, generator=g).to(device)
        batch["return"] = torch.randn(batch_size, generator=g).to(device)


class WorldModel(TaskModel):
    """`world_model`: the next observation, reward and episode end of a world model."""

    def loss(self, batch):
        next_obs, reward, done_logit = self(*batch_inputs(batch))  # (B, features), (B, 1), (B, 1)
        return (F.mse_loss(next_obs, batch["next_x"]) + F.mse_loss(reward.squeeze(-1), batch["reward"])
                + F.binary_cross_entropy_with_logits(done_logit.squeeze(-1), batch["done"]))

    @torch.no_grad()
    def metrics(self, batch):
        next_obs, reward, done_logit = self(*batch_inputs(batch))
        return {"next_observation_mse": F.mse_loss(next_obs, batch["next_x"]),
                "reward_mse": F.mse_loss(reward.squeeze(-1), batch["reward"]),
                "done_accuracy": ((done_logit.squeeze(-1) > 0).float() == batch["done"]).float().mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        batch["next_x"] = example_inputs(model, batch_size, seed + 2)[0]
        batch["reward"] = torch.randn(batch_size, generator=g)
        batch["done"] = (torch.rand(batch_size, generator=g) < 0.1).float()
