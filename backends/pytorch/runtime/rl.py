"""Reinforcement-learning agents' methods: act() of a discrete or Gaussian policy, with or without a value head,
of a Q-network (epsilon-greedy) and of a world model (one-step lookahead), and DQN's update_target(). Each is
pasted into the model class as `act` (losses.py names it there) or under its own name.

Each top-level definition is pasted into the model.py that needs it, as it is here (backends/pytorch/lowering.py's
runtime_source: a definition with the ones it calls); a function whose first parameter is `self` is a method of
the generated model class, pasted into it. Imports here are model.py's (torch, nn, F, math) or other runtime
modules', whose definitions model.py holds beside these.
"""

import copy

import torch
import torch.nn.functional as F


@torch.no_grad()
def policy_act(self, obs, greedy=False):
    """Actions for a batch of observations: the most likely (greedy) or sampled from the policy."""
    logits = self(obs)
    if greedy:
        return logits.argmax(-1)
    return torch.multinomial(F.softmax(logits, dim=-1), 1).squeeze(-1)


@torch.no_grad()
def actor_critic_act(self, obs, greedy=False):
    """Actions for a batch of observations: the most likely (greedy) or sampled from the policy."""
    logits, _ = self(obs)
    if greedy:
        return logits.argmax(-1)
    return torch.multinomial(F.softmax(logits, dim=-1), 1).squeeze(-1)


@torch.no_grad()
def gaussian_act(self, obs, greedy=False):
    """Actions for a batch of observations: the Gaussian's mean (greedy) or a sample from it."""
    mean, log_std = self(obs)
    if greedy:
        return mean
    return mean + log_std.exp() * torch.randn_like(mean)


@torch.no_grad()
def gaussian_actor_critic_act(self, obs, greedy=False):
    """Actions for a batch of observations: the Gaussian's mean (greedy) or a sample from it."""
    mean, log_std, _ = self(obs)
    if greedy:
        return mean
    return mean + log_std.exp() * torch.randn_like(mean)


@torch.no_grad()
def q_act(self, obs, greedy=False, epsilon=0.05):
    """Actions for a batch of observations: argmax_a Q(s, a), or epsilon-greedy unless greedy."""
    action = self(obs).argmax(-1)
    if greedy:
        return action
    explore = torch.rand(action.shape, device=action.device) < epsilon
    return torch.where(explore, torch.randint_like(action, self.config.num_actions), action)


@torch.no_grad()
def update_target(self):
    """Copy the online weights into the target network (every C steps in DQN). The copy is kept out of
    the module's submodules: parameters(), state_dict() and exports hold the online network only; call
    it again after moving the model to another device."""
    target = self.__dict__.pop("target_network", None)
    if target is None:
        target = copy.deepcopy(self).requires_grad_(False).eval()
    else:
        target.load_state_dict(self.state_dict())
    self.__dict__["target_network"] = target
    return target


@torch.no_grad()
def planning_act(self, obs, greedy=False):
    """Planning by one-step lookahead in the model: every action is imagined from each observation and
    scored by its predicted reward; the best (greedy), or one sampled by the softmax of the scores."""
    b, n = obs.shape[0], self.config.num_actions
    actions = torch.arange(n, device=obs.device).repeat(b)  # (B * n,): every action for every state
    _, reward, _ = self(obs.repeat_interleave(n, 0), actions)
    score = reward.view(b, n)
    if greedy:
        return score.argmax(-1)
    return torch.multinomial(F.softmax(score, dim=-1), 1).squeeze(-1)
