"""The reinforcement-learning families and tasks (std.rl): the Nature DQN against a network written by hand
from Mnih et al. (2015), and each loss of the generated code against the formula computed here."""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from conftest import ROOT, compile_path, load_module
from metagen_backends.pytorch import emit


@cache
def _module(stem: str, tmp: str = "/tmp") -> Any:
    comp = compile_path(ROOT / "examples" / f"{stem}.msl")
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    folder = Path(tmp) / f"metagen-test-rl-{stem}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(emit(comp)["model.py"])
    return load_module(folder / "model.py", f"rl_{stem}")


@pytest.fixture
def gen(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = str(tmp_path_factory.getbasetemp())
    return lambda stem: _module(stem, root)


def _small(mod: Any, **over: Any) -> Any:
    return mod.build_model(dataclasses.replace(mod.Config(), **over))


def nature_dqn(actions: int) -> Any:
    """Mnih et al. 2015, Methods: 4 x 84 x 84 input, conv 32 8x8 stride 4, conv 64 4x4 stride 2, conv 64 3x3
    stride 1, fully connected 512, a linear output per action; ReLU after each hidden layer."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(),
                         nn.Linear(512, actions))


def test_nature_dqn_parameters_by_arithmetic_and_by_torch(gen: Any) -> None:
    by_hand = (4 * 32 * 8 * 8 + 32) + (32 * 64 * 4 * 4 + 64) + (64 * 64 * 3 * 3 + 64) + (3136 * 512 + 512) + (512 * 18 + 18)
    assert by_hand == 1_693_362
    assert sum(p.numel() for p in nature_dqn(18).parameters()) == by_hand
    model = gen("dqn_atari").build_model()
    assert sum(p.numel() for p in model.parameters()) == by_hand


def test_nature_dqn_computes_the_reference_network(gen: Any) -> None:
    """The same weights in both (in order), frames in [0, 255]: the same Q-values (the generated torso scales by
    1/255 itself, as the DQN code does before its first convolution)."""
    model = gen("dqn_atari").build_model().eval()
    ref = nature_dqn(18).eval()
    with torch.no_grad():
        for a, b in zip(ref.parameters(), model.parameters(), strict=True):
            a.copy_(b)
        frames = torch.randint(0, 256, (3, 4, 84, 84), generator=torch.Generator().manual_seed(0)).float()
        assert torch.allclose(model(frames), ref(frames / 255.0), atol=1e-5)


def test_dqn_loss_is_huber_td_with_a_fixed_target_network(gen: Any) -> None:
    mod = gen("dqn_atari")
    model = _small(mod, image_size=36, hidden=32, num_actions=6)
    batch = mod.example_batch(model, batch_size=5)
    obs, a, r, nxt, done = (batch[k] for k in ("image", "action", "reward", "next_image", "done"))

    def expected(target_net: Any) -> Any:
        q = model(obs)[torch.arange(5), a]
        with torch.no_grad():
            best = model(nxt).argmax(-1)
            y = r + model.config.gamma * (1 - done) * target_net(nxt)[torch.arange(5), best]
        return F.huber_loss(q, y, delta=1.0)

    assert torch.allclose(model.loss(batch), expected(model))  # no target network yet: the online one, detached
    keys, n = list(model.state_dict()), sum(p.numel() for p in model.parameters())
    target = model.update_target()
    assert list(model.state_dict()) == keys and sum(p.numel() for p in model.parameters()) == n
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.loss(batch).backward()
    opt.step()
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), target.parameters()))
    assert torch.allclose(model.loss(batch), expected(target))  # the target keeps the weights of update_target()
    model.update_target()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), target.parameters()))
    m = model.metrics(batch)
    assert float(m["mean_q"]) == pytest.approx(float(model(obs)[torch.arange(5), a].mean().detach()), abs=1e-6)
    assert torch.equal(model.act(obs, greedy=True), model(obs).argmax(-1))
    assert torch.equal(model.act(obs, epsilon=0.0), model(obs).argmax(-1))


def test_reinforce_loss_is_the_policy_gradient_with_a_baseline(gen: Any) -> None:
    mod = gen("reinforce_lunar_lander")
    model = _small(mod, hidden=32, layers=1)
    batch = mod.example_batch(model, batch_size=6)
    logp = torch.log_softmax(model(batch["tabular"]), -1)
    ret = batch["return"]
    adv = (ret - ret.mean()) / (ret.std(unbiased=False) + 1e-8)
    entropy = -(logp.exp() * logp).sum(-1).mean()
    want = -(logp[torch.arange(6), batch["action"]] * adv).mean() - model.config.entropy_coef * entropy
    assert torch.allclose(model.loss(batch), want, atol=1e-6)
    assert float(model.metrics(batch)["entropy"]) == pytest.approx(float(entropy.detach()), abs=1e-6)
    obs = batch["tabular"]
    assert torch.equal(model.act(obs, greedy=True), model(obs).argmax(-1))
    torch.manual_seed(0)
    acts = model.act(obs.repeat(200, 1))
    assert acts.min() >= 0 and acts.max() < model.config.num_actions and len(set(acts.tolist())) > 1


def test_ppo_at_the_rollout_policy(gen: Any) -> None:
    """With the rollout's own log-probabilities the ratio is 1: no clipping, no KL, and the loss is the
    advantage-weighted surrogate plus the value and entropy terms."""
    mod = gen("ppo_cartpole")
    model = mod.build_model()
    batch = mod.example_batch(model, batch_size=8)
    logits, value = model(batch["tabular"])
    logp = torch.log_softmax(logits, -1)
    batch["old_log_prob"] = logp[torch.arange(8), batch["action"]].detach()
    m = model.metrics(batch)
    assert float(m["approx_kl"]) == pytest.approx(0.0, abs=1e-7) and float(m["clip_fraction"]) == 0.0
    adv = batch["advantage"]
    adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    entropy = -(logp.exp() * logp).sum(-1).mean()
    c = model.config
    want = -adv.mean() + c.value_coef * F.mse_loss(value[:, 0], batch["return"]) - c.entropy_coef * entropy
    assert torch.allclose(model.loss(batch), want, atol=1e-6)
    # far from the rollout policy every ratio is clipped: the surrogate's gradient is zero where it is clipped
    batch["old_log_prob"] = batch["old_log_prob"] - 5.0
    assert float(model.metrics(batch)["clip_fraction"]) == 1.0


def test_world_model_loss_and_planning(gen: Any) -> None:
    mod = gen("world_model")
    model = _small(mod, hidden=32, layers=1)
    batch = mod.example_batch(model, batch_size=4)
    nxt, rew, done = model(batch["tabular"], batch["action"])
    want = (F.mse_loss(nxt, batch["next_tabular"]) + F.mse_loss(rew[:, 0], batch["reward"])
            + F.binary_cross_entropy_with_logits(done[:, 0], batch["done"]))
    assert torch.allclose(model.loss(batch), want, atol=1e-6)
    obs = batch["tabular"]
    n = model.config.num_actions
    rewards = torch.stack([model(obs, torch.full((4,), a))[1][:, 0] for a in range(n)], -1)
    assert torch.equal(model.act(obs, greedy=True), rewards.argmax(-1))


def _normal(mean: Any, log_std: Any) -> Any:
    return torch.distributions.Independent(torch.distributions.Normal(mean, log_std.exp()), 1)


def test_gaussian_reinforce_is_the_normal_log_density(gen: Any) -> None:
    """The continuous policy gradient against torch.distributions: the same log-density, entropy and loss."""
    mod = gen("reinforce_pendulum")
    model = _small(mod, hidden=16, action_dim=3, log_std_init=-0.5)
    batch = mod.example_batch(model, batch_size=6)
    mean, log_std = model(batch["tabular"])
    assert torch.equal(log_std, torch.full((6, 3), -0.5))  # one learned value per dim, the same in every state
    dist = _normal(mean, log_std)
    ret = batch["return"]
    adv = (ret - ret.mean()) / (ret.std(unbiased=False) + 1e-8)
    entropy = dist.entropy().mean()
    want = -(dist.log_prob(batch["action"]) * adv).mean() - model.config.entropy_coef * entropy
    assert torch.allclose(model.loss(batch), want, atol=1e-6)
    assert float(model.metrics(batch)["entropy"]) == pytest.approx(float(entropy.detach()), abs=1e-5)
    model.loss(batch).backward()
    assert model.head.log_std.log_std.grad is not None
    obs = batch["tabular"]
    assert torch.equal(model.act(obs, greedy=True), mean.detach())
    torch.manual_seed(0)
    sample = model.act(obs.repeat(4000, 1))  # mean + exp(-0.5) noise
    assert float((sample - mean.detach().repeat(4000, 1)).std()) == pytest.approx(math.exp(-0.5), rel=0.05)


def test_gaussian_ppo_is_the_clipped_surrogate_of_the_normal(gen: Any) -> None:
    mod = gen("ppo_continuous")
    model = _small(mod, hidden=16)
    batch = mod.example_batch(model, batch_size=8)
    mean, log_std, value = model(batch["tabular"])
    logp = _normal(mean, log_std).log_prob(batch["action"])
    ratio = (logp - batch["old_log_prob"]).exp()
    adv = batch["advantage"]
    adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    c = model.config
    surrogate = -torch.minimum(ratio * adv, ratio.clamp(1 - c.clip_range, 1 + c.clip_range) * adv).mean()
    entropy = _normal(mean, log_std).entropy().mean()
    want = surrogate + c.value_coef * F.mse_loss(value[:, 0], batch["return"]) - c.entropy_coef * entropy
    assert torch.allclose(model.loss(batch), want, atol=1e-5)
    m = model.metrics(batch)
    assert float(m["clip_fraction"]) == pytest.approx(float(((ratio - 1).abs() > c.clip_range).float().mean()))
