"""The two-tower recommender (std.recsys): parameter counts by arithmetic, and each loss and metric of the
generated code against a plain loop over the users, queries and pairs written here."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from test_rl import gen  # noqa: F401  (the fixture that compiles an example into a module)

SMALL = dict(num_users=50, num_items=40, embedding_dim=16, hidden=16, layers=1, output_dim=8, ranking_hidden=16)


def _small(mod: Any) -> Any:
    return mod.build_model(dataclasses.replace(mod.Config(), **SMALL))


def _tower(count: int, emb: int, hidden: int, layers: int, out: int) -> int:
    return count * emb + (emb * hidden + hidden) + layers * (hidden * hidden + hidden) + (hidden * out + out)


def test_parameters_by_arithmetic(gen: Any) -> None:  # noqa: F811
    mod = gen("two_tower_recsys")
    model = mod.build_model()
    c = model.config
    want = _tower(c.num_users, c.embedding_dim, c.hidden, c.layers, c.output_dim) + _tower(
        c.num_items, c.embedding_dim, c.hidden, c.layers, c.output_dim)
    assert want == 689_920 and sum(p.numel() for p in model.parameters()) == want
    ranker = gen("ranker").build_model()
    c = ranker.config
    head = (c.output_dim * c.ranking_hidden + c.ranking_hidden) + 2 * c.output_dim * c.ranking_hidden + c.ranking_hidden + 1
    want = _tower(c.num_users, c.embedding_dim, c.hidden, c.layers, c.output_dim) + _tower(
        c.num_items, c.embedding_dim, c.hidden, c.layers, c.output_dim) + head
    assert sum(p.numel() for p in ranker.parameters()) == want == 794_881


def test_in_batch_softmax_and_its_metrics(gen: Any) -> None:  # noqa: F811
    mod = gen("two_tower_recsys")
    model = _small(mod)
    batch = mod.example_batch(model, batch_size=24)
    batch["item"][5] = batch["item"][3]  # a recurring item: no negative for the other row whose positive it is
    user, item = batch["user"], batch["item"]
    u, v = model(user, item)
    assert torch.allclose(u.norm(dim=-1), torch.ones(24)) and torch.allclose(v.norm(dim=-1), torch.ones(24))
    ud, vd = u.detach(), v.detach()
    losses, hits, gains = [], [], []
    for i in range(24):
        keep = [j for j in range(24) if j == i or item[j] != item[i]]
        logits = torch.stack([u[i] @ v[j] for j in keep]) / model.config.temperature
        losses.append(-torch.log_softmax(logits, 0)[keep.index(i)])
        rank = sum(float(ud[i] @ vd[j]) > float(ud[i] @ vd[i]) for j in keep)
        hits.append(rank < 10)
        gains.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
    assert torch.allclose(model.loss(batch), torch.stack(losses).mean(), atol=1e-5)
    m = model.metrics(batch)
    assert float(m["recall_at_10"]) == pytest.approx(sum(hits) / 24, abs=1e-6)
    assert float(m["ndcg_at_10"]) == pytest.approx(sum(gains) / 24, abs=1e-5)


def test_recommend_scores_the_whole_catalogue(gen: Any) -> None:  # noqa: F811
    mod = gen("two_tower_recsys")
    model = _small(mod).eval()
    users = torch.tensor([0, 7, 49])
    top = model.recommend(users, k=5)
    with torch.no_grad():
        u = model.encoder_user(users)
        v = model.encoder_item(torch.arange(model.config.num_items))
    assert torch.equal(top, (u @ v.t()).argsort(-1, descending=True)[:, :5])


def _ndcg_at_10(scores: list[float], rel: list[int]) -> float:
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    ideal = sorted(range(len(rel)), key=lambda j: (-rel[j], j))
    dcg = sum((2 ** rel[j] - 1) / math.log2(r + 2) for r, j in enumerate(order[:10]))
    idcg = sum((2 ** rel[j] - 1) / math.log2(r + 2) for r, j in enumerate(ideal[:10]))
    return dcg / idcg if idcg > 0 else 1.0


def test_pairwise_logistic_and_ndcg_per_query(gen: Any) -> None:  # noqa: F811
    mod = gen("ranker")
    model = _small(mod)
    g = torch.Generator().manual_seed(3)
    user = torch.tensor([4] * 13 + [9] * 5 + [2] * 3 + [7])  # lists of 13, 5, 3 and 1 candidates
    batch = {"user": user, "item": torch.randint(0, 40, (22,), generator=g),
             "relevance": torch.randint(0, 5, (22,), generator=g)}
    batch["relevance"][18:21] = 0  # a query without any relevant candidate: NDCG 1 by convention
    s = model(batch["user"], batch["item"])
    rel = batch["relevance"].tolist()
    pairs = [(i, j) for i in range(22) for j in range(22) if user[i] == user[j] and rel[i] > rel[j]]
    want = torch.stack([F.softplus(s[j] - s[i]) for i, j in pairs]).mean()
    assert torch.allclose(model.loss(batch), want, atol=1e-6)
    m = model.metrics(batch)
    sl = s.detach().tolist()
    per_query = []
    for q in (4, 9, 2, 7):
        rows = [k for k in range(22) if user[k] == q]
        per_query.append(_ndcg_at_10([sl[k] for k in rows], [rel[k] for k in rows]))
    assert float(m["ndcg_at_10"]) == pytest.approx(sum(per_query) / 4, abs=1e-5)
    assert float(m["pairwise_accuracy"]) == pytest.approx(sum(sl[i] > sl[j] for i, j in pairs) / len(pairs), abs=1e-6)
