"""Reinforcement learning for train.py and evaluate.py: the model's RL loss on rollouts of a Gymnasium environment.

    python train.py --data gym:CartPole-v1 --steps 100 --batch-size 512     # PPO, REINFORCE or DQN, from loss()

Copied verbatim next to a generated model.py; depends on torch and gymnasium. No MetaGen import.

The algorithm is the one the model's loss() implements, read from the keys of example_batch(model):
- policy_gradient (REINFORCE): {tabular, action, return}. One step = whole episodes of at least --batch-size
  environment steps, discounted returns from each step, one gradient step.
- actor_critic (PPO): {tabular, action, old_log_prob, advantage, return}. One step = a rollout of --batch-size
  environment steps, GAE(gamma, lambda) advantages from the value head, --ppo-epochs passes of shuffled
  minibatches over it (each an optimizer step).
- value_based (DQN): {tabular, action, reward, next_tabular, done}. One step = --train-every environment steps
  (epsilon-greedy, epsilon falling linearly over the first --explore-fraction of the steps) into a replay buffer,
  then one gradient step on --batch-size transitions drawn from it; update_target() every --target-every steps.

Evaluation is the mean return of --eval-episodes greedy episodes; `val` and `test` use disjoint reset seeds.
Every rollout resets its environment with a seed derived from --seed and the step, so a run is deterministic
for a seed, and a resumed run (weights, optimizer, RNG and, for DQN, the replay buffer) repeats it exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Env", "ReplayBuffer", "evaluate_policy", "make_env", "policy", "rl_kind", "train"]

PREFIX = "gym:"
KINDS = {
    ("action", "return", "tabular"): "rl_policy_gradient",
    ("action", "advantage", "old_log_prob", "return", "tabular"): "rl_actor_critic",
    ("action", "done", "next_tabular", "reward", "tabular"): "rl_value_based",
}
EVAL_SEEDS = {"val": 1_000_000, "test": 2_000_000, "train": 3_000_000}


class RLError(Exception):
    """Bad environment or settings; one line (train.py prints it as `error: ...`)."""


def rl_kind(keys: tuple[str, ...]) -> str | None:
    """The RL algorithm of a model whose example_batch has these (sorted) keys, or None."""
    return KINDS.get(keys)


# ------------------------------------------------------------------------------------- environment


@dataclass
class Env:
    """A Gymnasium environment with what the model needs to know about it."""

    env: Any
    name: str
    discrete: bool
    low: torch.Tensor | None = None  # continuous action bounds
    high: torch.Tensor | None = None

    def reset(self, seed: int) -> torch.Tensor:
        obs, _ = self.env.reset(seed=seed)
        return torch.as_tensor(obs, dtype=torch.float32)

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, float, bool, bool]:
        """(next observation, reward, terminated, truncated) for one action of the model."""
        if self.discrete:
            a: Any = int(action)
        else:
            a = torch.maximum(torch.minimum(action, self.high), self.low).numpy()  # type: ignore[arg-type]
        obs, reward, terminated, truncated, _ = self.env.step(a)
        return torch.as_tensor(obs, dtype=torch.float32), float(reward), bool(terminated), bool(truncated)


def make_env(source: str, config: dict[str, Any]) -> Env:
    """`gym:ENV_ID` -> the environment, checked against the model's Config (features, actions)."""
    if not source.startswith(PREFIX):
        raise RLError(f"{source}: an RL model trains on an environment; expected --data gym:ENV_ID (e.g. gym:CartPole-v1)")
    name = source[len(PREFIX) :]
    try:
        import gymnasium as gym
    except ImportError:
        raise RLError(f"{source}: needs the `gymnasium` package (pip install gymnasium)") from None
    try:
        env = gym.make(name)
    except Exception as e:  # noqa: BLE001 (gymnasium raises several kinds: unknown id, missing extras)
        raise RLError(f"{source}: cannot make the environment ({e.__class__.__name__}: {str(e).splitlines()[0]})") from None
    obs_shape = tuple(env.observation_space.shape or ())
    features = int(config.get("features", 0))
    if obs_shape != (features,):
        raise RLError(f"{source}: observations have shape {obs_shape}, but the model expects features = {features}")
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        if "num_actions" not in config:
            raise RLError(f"{source}: {int(space.n)} discrete actions, but the model's policy is continuous")
        if int(space.n) != int(config["num_actions"]):
            raise RLError(f"{source}: {int(space.n)} actions, but the model has num_actions = {config['num_actions']}")
        return Env(env, name, True)
    if isinstance(space, gym.spaces.Box):
        dim = int(config.get("action_dim", 0))
        if "action_dim" not in config:
            raise RLError(f"{source}: continuous actions {tuple(space.shape)}, but the model's policy is discrete")
        if tuple(space.shape) != (dim,):
            raise RLError(f"{source}: actions have shape {tuple(space.shape)}, but the model has action_dim = {dim}")
        low = torch.as_tensor(space.low, dtype=torch.float32)
        high = torch.as_tensor(space.high, dtype=torch.float32)
        return Env(env, name, False, low, high)
    raise RLError(f"{source}: action space {space} is neither Discrete nor Box")


# ------------------------------------------------------------------------------------------ policy


def policy(model: nn.Module, obs: torch.Tensor) -> tuple[torch.distributions.Distribution | None, torch.Tensor | None]:
    """(action distribution, state value or None) from the model's outputs: logits [, value] for discrete actions,
    mean, log_std [, value] for continuous ones. A Q-network gives (None, None): it acts by argmax."""
    out = model(obs)
    outs = out if isinstance(out, tuple) else (out,)
    if "action_dim" in vars(model.config):
        mean, log_std = outs[0], outs[1]
        dist: torch.distributions.Distribution = torch.distributions.Independent(
            torch.distributions.Normal(mean, log_std.exp()), 1)
        return dist, outs[2].squeeze(-1) if len(outs) > 2 else None
    return torch.distributions.Categorical(logits=outs[0]), outs[1].squeeze(-1) if len(outs) > 1 else None


@torch.no_grad()
def _choose(model: nn.Module, kind: str, obs: torch.Tensor, greedy: bool, epsilon: float = 0.0,
            g: torch.Generator | None = None) -> torch.Tensor:
    """One action for one observation (no batch dimension)."""
    x = obs[None]
    if kind == "rl_value_based":
        q = model(x)
        q = q[0] if isinstance(q, tuple) else q
        if not greedy and float(torch.rand((), generator=g)) < epsilon:
            return torch.randint(0, q.shape[-1], (), generator=g)
        return q[0].argmax()
    dist, _ = policy(model, x)
    assert dist is not None
    if greedy:
        return dist.mode[0] if hasattr(dist, "mode") else dist.mean[0]
    return dist.sample()[0]


@torch.no_grad()
def evaluate_policy(model: nn.Module, kind: str, env: Env, episodes: int, seed: int, split: str = "val",
                    max_steps: int = 100_000) -> dict[str, float]:
    """Mean, spread and length of `episodes` greedy episodes; reset seeds disjoint per split and from training's."""
    was_training = model.training
    model.eval()
    returns, lengths = [], []
    for i in range(episodes):
        obs, total, n = env.reset(seed + EVAL_SEEDS[split] + i), 0.0, 0
        while n < max_steps:
            obs, reward, terminated, truncated = env.step(_choose(model, kind, obs, greedy=True))
            total, n = total + reward, n + 1
            if terminated or truncated:
                break
        returns.append(total)
        lengths.append(n)
    model.train(was_training)
    r = torch.tensor(returns, dtype=torch.float64)
    return {"mean_return": float(r.mean()), "std_return": float(r.std(correction=0)),
            "min_return": float(r.min()), "max_return": float(r.max()),
            "mean_length": sum(lengths) / len(lengths), "episodes": float(episodes)}


# ----------------------------------------------------------------------------------------- rollouts


def _episodes(model: nn.Module, kind: str, env: Env, min_steps: int, seed: int, gamma: float) -> dict[str, Any]:
    """REINFORCE: whole episodes until at least `min_steps` steps; discounted return from each step."""
    obs_list: list[torch.Tensor] = []
    actions: list[torch.Tensor] = []
    returns: list[float] = []
    totals: list[float] = []
    k = 0
    while len(obs_list) < min_steps:
        obs, rewards = env.reset(seed * 100_003 + k), []
        k += 1
        while True:
            a = _choose(model, kind, obs, greedy=False)
            obs_list.append(obs)
            actions.append(a)
            obs, r, terminated, truncated = env.step(a)
            rewards.append(r)
            if terminated or truncated:
                break
        g = 0.0
        back = []
        for r in reversed(rewards):
            g = r + gamma * g
            back.append(g)
        returns.extend(reversed(back))
        totals.append(sum(rewards))
    batch = {"tabular": torch.stack(obs_list), "action": torch.stack(actions),
             "return": torch.tensor(returns, dtype=torch.float32)}
    return {"batch": batch, "episode_returns": totals, "env_steps": len(obs_list)}


@torch.no_grad()
def _rollout(model: nn.Module, kind: str, env: Env, steps: int, seed: int, gamma: float, lam: float,
             scale: float) -> dict[str, Any]:
    """PPO: `steps` environment steps (episodes cut at the end are bootstrapped from V), GAE advantages; the
    value head learns returns of rewards times `scale` (keeps the value loss from swamping a shared trunk)."""
    obs_list, actions, logps, values, rewards, ends = [], [], [], [], [], []
    k = 0
    obs, total, totals = env.reset(seed * 100_003), 0.0, []
    for _ in range(steps):
        dist, value = policy(model, obs[None])
        assert dist is not None and value is not None
        a = dist.sample()
        obs_list.append(obs)
        actions.append(a[0])
        logps.append(dist.log_prob(a)[0])
        values.append(value[0])
        obs, r, terminated, truncated = env.step(a[0])
        total += r
        rewards.append(r * scale)
        if terminated or truncated:
            ends.append(1.0 if terminated else 0.5)  # 0.5: truncated, bootstrap from V(next) below
            if truncated:
                _, boot = policy(model, obs[None])
                rewards[-1] += gamma * float(boot[0])  # type: ignore[index]
            totals.append(total)
            k += 1
            obs, total = env.reset(seed * 100_003 + k), 0.0
        else:
            ends.append(0.0)
    _, last_value = policy(model, obs[None])
    next_value = float(last_value[0])  # type: ignore[index]
    adv = torch.zeros(steps)
    gae = 0.0
    for t in reversed(range(steps)):
        cut = ends[t] > 0
        v_next = 0.0 if cut else next_value
        delta = rewards[t] + gamma * v_next - float(values[t])
        gae = delta + gamma * lam * (0.0 if cut else gae)
        adv[t] = gae
        next_value = float(values[t])
    v = torch.stack(values)
    batch = {"tabular": torch.stack(obs_list), "action": torch.stack(actions), "old_log_prob": torch.stack(logps),
             "advantage": adv, "return": adv + v}
    return {"batch": batch, "episode_returns": totals, "env_steps": steps}


class ReplayBuffer:
    """A ring buffer of transitions (obs, action, reward, next obs, done) as tensors; its state goes in checkpoints."""

    def __init__(self, capacity: int, features: int):
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.data = {"tabular": torch.zeros(capacity, features), "action": torch.zeros(capacity, dtype=torch.long),
                     "reward": torch.zeros(capacity), "next_tabular": torch.zeros(capacity, features),
                     "done": torch.zeros(capacity)}

    def add(self, obs: torch.Tensor, action: torch.Tensor, reward: float, next_obs: torch.Tensor, done: bool) -> None:
        for k, v in (("tabular", obs), ("action", action), ("reward", reward), ("next_tabular", next_obs),
                     ("done", float(done))):
            self.data[k][self.pos] = v
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, self.size, (n,), generator=g)
        return {k: v[idx] for k, v in self.data.items()}

    def state(self) -> dict[str, Any]:
        return {"size": self.size, "pos": self.pos, "data": {k: v[: self.size].clone() for k, v in self.data.items()}}

    def load(self, state: dict[str, Any]) -> None:
        self.size, self.pos = state["size"], state["pos"]
        for k, v in state["data"].items():
            self.data[k][: self.size] = v


# -------------------------------------------------------------------------------------------- training


def train(args: Any, model: nn.Module, kind: str, trainer: dict[str, Any], optimizer: Any, scheduler: Any, log: Any, extra: dict[str, Any] | None, save: Any) -> dict[str, Any]:
    """The RL loop; `save(trainer, extra)` writes a checkpoint. Returns the last validation metrics."""
    config = vars(model.config)
    env = make_env(args.data, config)
    eval_env = make_env(args.data, config)
    gamma = float(config.get("gamma", 0.99))
    g = torch.Generator().manual_seed(args.seed)
    buffer = ReplayBuffer(args.replay_size, int(config["features"])) if kind == "rl_value_based" else None
    state: dict[str, Any] = {"obs": None, "episode": 0, "total": 0.0}
    if extra:
        g.set_state(extra["generator"])
        state["episode"] = extra["episode"]
        if buffer is not None and "replay" in extra:
            buffer.load(extra["replay"])
    if kind == "rl_value_based":
        model.update_target()  # type: ignore[operator]

    def run_eval(step: int) -> dict[str, float]:
        metrics = evaluate_policy(model, kind, eval_env, args.eval_episodes, args.seed, "val")
        log.write({"step": step, "split": "val", **metrics})
        shown = " | ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k != "episodes")
        print(f"eval step {step} | {shown}", flush=True)
        return metrics

    step = trainer["step"]
    metrics = run_eval(0) if step == 0 else {}
    started = time.perf_counter()
    recent: list[float] = []
    while step < args.steps:
        lr = optimizer.param_groups[0]["lr"]
        record: dict[str, Any] = {}
        if kind == "rl_policy_gradient":
            got = _episodes(model, kind, env, args.batch_size, args.seed * 1_000 + step, gamma)
            loss = _update(model, optimizer, got["batch"], args.grad_clip)
            record["episode_return"] = sum(got["episode_returns"]) / len(got["episode_returns"])
        elif kind == "rl_actor_critic":
            got = _rollout(model, kind, env, args.batch_size, args.seed * 1_000 + step, gamma, args.gae_lambda,
                           args.reward_scale)
            losses = []
            n = args.batch_size
            mb = max(1, n // args.ppo_minibatches)
            for _ in range(args.ppo_epochs):
                order = torch.randperm(n, generator=g)
                for i in range(0, n - mb + 1, mb):
                    idx = order[i : i + mb]
                    losses.append(_update(model, optimizer, {k: v[idx] for k, v in got["batch"].items()}, args.grad_clip))
            loss = sum(losses) / len(losses)
            if got["episode_returns"]:
                record["episode_return"] = sum(got["episode_returns"]) / len(got["episode_returns"])
        else:
            assert buffer is not None
            epsilon = max(args.final_epsilon, 1.0 - (1.0 - args.final_epsilon) * step / max(1, args.explore_fraction * args.steps))
            for _ in range(args.train_every):
                if state["obs"] is None:
                    state["obs"] = env.reset(args.seed * 100_003 + step * 7 + state["episode"])
                a = _choose(model, kind, state["obs"], greedy=False, epsilon=epsilon, g=g)
                nxt, r, terminated, truncated = env.step(a)
                buffer.add(state["obs"], a, r, nxt, terminated)
                state["total"] += r
                state["obs"] = nxt
                if terminated or truncated:
                    recent.append(state["total"])
                    state.update(obs=None, episode=state["episode"] + 1, total=0.0)
            loss = 0.0  # no gradient step until the buffer holds one batch
            if buffer.size >= args.batch_size:
                loss = _update(model, optimizer, buffer.sample(args.batch_size, g), args.grad_clip)
            if (step + 1) % args.target_every == 0:
                model.update_target()  # type: ignore[operator]
            record["epsilon"] = epsilon
            if recent:
                record["episode_return"] = recent[-1]
            got = {"env_steps": args.train_every}
        if optimizer.state:  # after the first optimizer step (DQN waits for its buffer)
            scheduler.step()
        step += 1
        trainer["seen"] += got["env_steps"]
        if not math.isfinite(loss):
            raise RLError(f"step {step}: the loss is {loss}; lower --lr")
        log.write({"step": step, "split": "train", "loss": loss, "lr": lr, "seen": trainer["seen"], **record})
        if step % args.log_every == 0 or step == args.steps:
            ret = f" | return {record['episode_return']:.1f}" if "episode_return" in record else ""
            rate = trainer["seen"] / max(time.perf_counter() - started, 1e-9)
            print(f"step {step}/{args.steps} | loss {loss:.4f}{ret} | lr {lr:.2e} | {rate:,.0f} env steps/s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            metrics = run_eval(step)
        if step % args.checkpoint_every == 0 or step == args.steps:
            trainer["step"] = step
            if kind == "rl_value_based":  # an episode in progress restarts after a resume; end it here too
                state.update(obs=None, episode=state["episode"] + 1, total=0.0)
            saved = {"generator": g.get_state(), "episode": state["episode"]}
            if buffer is not None:
                saved["replay"] = buffer.state()
            save(dict(trainer), saved)
    env.env.close()
    eval_env.env.close()
    return metrics


def _update(model: nn.Module, optimizer: Any, batch: dict[str, torch.Tensor], clip: float) -> float:
    loss = model.loss(batch)  # type: ignore[operator]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return float(loss.detach())
