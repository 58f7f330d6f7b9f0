"""The temporal fusion transformer (std.forecast): parameter counts by arithmetic from the paper's layers, and
the generated model against a reference written here from Lim et al. (2021) with a loop over the variables
(one Linear, GRN and LayerNorm each) and over the attention heads (one shared value)."""

from __future__ import annotations

import dataclasses
import math
import sys
import types
from typing import Any

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from metagen_backends.pytorch import emit
from test_rl import gen  # noqa: F401  (the fixture that compiles an example into a module)

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile

SMALL = dict(features=3, lookback=12, horizon=5, d_model=16, heads=4)


def _build(src: str) -> tuple[Any, Any]:
    comp = compile_source(SourceFile("tft.msl", src))
    assert not comp.bag.has_errors, [d.message for d in comp.bag.items]
    mod = types.ModuleType("tft_model")
    sys.modules["tft_model"] = mod
    exec(compile(emit(comp)["model.py"], "tft_model.py", "exec"), mod.__dict__)  # noqa: S102 - our own generated code
    return comp, mod


def tft_params(features: int, d: int, heads: int, horizon: int, lstm_layers: int = 1) -> int:
    """Lim et al. 2021, Sections 4.1-4.5, without static covariates or known future inputs."""
    m, dv = features, d // heads

    def lin(i: int, o: int) -> int:
        return i * o + o

    def grn(i: int, h: int, o: int) -> int:  # W2, W1, the GLU's W4 and W5, the skip when i != o, LayerNorm
        return lin(i, h) + lin(h, o) + 2 * lin(o, o) + (lin(i, o) if i != o else 0) + 2 * o

    embed = m * lin(1, d)  # one Linear(1, d) per real-valued variable
    selection = grn(m * d, d, m) + m * grn(d, d, d)
    lstm = lstm_layers * 4 * (d * d + d * d + 2 * d)  # PyTorch's two bias vectors per gate
    gate_add_norm = 2 * lin(d, d) + 2 * d
    attention = 2 * lin(d, d) + lin(d, dv) + lin(dv, d)  # per-head Q and K, one V, W_H
    head = lin(d, horizon * features)
    return embed + selection + lstm + 3 * gate_add_norm + 2 * grn(d, d, d) + attention + head


def test_parameters_by_arithmetic(gen: Any) -> None:  # noqa: F811
    model = gen("tft_forecast").build_model()
    c = model.config
    want = tft_params(c.features, c.d_model, c.heads, c.horizon, c.lstm_layers)
    assert want == 264_260 and sum(p.numel() for p in model.parameters()) == want
    _comp, mod = _build("""import std.forecast
model e { modality time_series -> time_series
  task time_series_forecast { horizon = 24; lookback = 168 }
  architecture forecast.tft_electricity }""")
    assert sum(p.numel() for p in mod.build_model().parameters()) == tft_params(1, 160, 4, 24) == 766_472


def _reference(sd: dict[str, Any], x: Any, c: Any) -> Any:
    """The TFT forward pass, written from the paper with explicit loops, reading the generated model's weights."""
    m, d, heads = c.features, c.d_model, c.heads
    dv = d // heads

    def lin(h: Any, w: Any, b: Any) -> Any:
        return h @ w.reshape(w.shape[0], -1).T + b

    def grn(a: Any, p: str, rows: slice | None = None, norm: tuple[Any, Any] | None = None) -> Any:
        def w(name: str) -> Any:
            t = sd[f"{p}.{name}"]
            return t[rows] if rows is not None else t

        if rows is None:  # the GLU as one map: value half then gate half
            eta = lin(F.elu(lin(a, w("fc2.weight"), w("fc2.bias"))), w("fc1.weight"), w("fc1.bias"))
            glu = F.glu(lin(eta, w("glu.weight"), w("glu.bias")), dim=-1)
            skip = lin(a, w("skip.weight"), w("skip.bias")) if f"{p}.skip.weight" in sd else a
            return F.layer_norm(skip + glu, (glu.shape[-1],), w("norm.weight"), w("norm.bias"))
        eta = lin(F.elu(lin(a, w("fc2.weight"), w("fc2.bias"))), w("fc1.weight"), w("fc1.bias"))
        glu = torch.sigmoid(lin(eta, w("gate.weight"), w("gate.bias"))) * lin(eta, w("value.weight"), w("value.bias"))
        assert norm is not None
        return F.layer_norm(a + glu, (d,), *norm)

    # variable selection (Section 4.2): xi_j = Linear_j(x_j), v = softmax(GRN(Xi)), xi~_j = GRN_j(xi_j)
    xis = [x[..., j:j + 1] * sd["encoder.embed.weight"][j * d:(j + 1) * d, 0, 0] + sd["encoder.embed.bias"][j * d:(j + 1) * d]
           for j in range(m)]
    weights = F.softmax(grn(torch.cat(xis, -1), "encoder.weights"), dim=-1)
    selected = 0
    for j in range(m):
        rows = slice(j * d, (j + 1) * d)
        norm = (sd["encoder.variables.norm.weight"][rows], sd["encoder.variables.norm.bias"][rows])
        selected = selected + weights[..., j:j + 1] * grn(xis[j], "encoder.variables", rows, norm)

    def gate_add_norm(h: Any, skip: Any, p: str) -> Any:
        glu = F.glu(lin(h, sd[f"{p}.glu.weight"], sd[f"{p}.glu.bias"]), dim=-1)
        return F.layer_norm(skip + glu, (d,), sd[f"{p}.norm.weight"], sd[f"{p}.norm.bias"])

    lstm = torch.nn.LSTM(d, d, c.lstm_layers, batch_first=True)
    lstm.load_state_dict({k.removeprefix("backbone.lstm."): v for k, v in sd.items() if k.startswith("backbone.lstm.")})
    phi = gate_add_norm(lstm(selected)[0], selected, "backbone.lstm_gate")
    theta = grn(phi, "backbone.enrichment")
    # interpretable multi-head attention (Section 4.4): H~ = 1/H sum_h A(Q W_Q^h, K W_K^h) V W_V, then W_H
    p = "backbone.attention"
    q, k = (lin(theta, sd[f"{p}.{n}.weight"], sd[f"{p}.{n}.bias"]) for n in ("q_proj", "k_proj"))
    v = lin(theta, sd[f"{p}.v_proj.weight"], sd[f"{p}.v_proj.bias"])
    t = theta.shape[1]
    future = torch.ones(t, t, dtype=torch.bool).triu(1)
    mixed = 0
    for h in range(heads):
        cols = slice(h * dv, (h + 1) * dv)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(dv)
        if c.causal:
            scores = scores.masked_fill(future, float("-inf"))
        mixed = mixed + F.softmax(scores, dim=-1) @ v / heads
    beta = lin(mixed, sd[f"{p}.out_proj.weight"], sd[f"{p}.out_proj.bias"])
    delta = gate_add_norm(beta, theta, "backbone.attention_gate")
    psi = gate_add_norm(grn(delta, "backbone.positionwise"), phi, "backbone.output_gate")
    out = lin(psi[:, -1], sd["head.proj.weight"], sd["head.proj.bias"])
    return out.unflatten(1, (c.horizon, c.features))


@pytest.mark.parametrize("causal", [True, False])
def test_forward_equals_the_papers_layers(gen: Any, causal: bool) -> None:  # noqa: F811
    mod = gen("tft_forecast")
    model = mod.build_model(dataclasses.replace(mod.Config(), **SMALL, causal=causal)).eval()
    with torch.no_grad():  # non-trivial norms and biases: every parameter random
        for prm in model.parameters():
            prm.copy_(torch.randn_like(prm) * 0.3)
    (x,) = mod.example_inputs(model, batch_size=3)
    with torch.no_grad():
        got = model(x)
        want = _reference(model.state_dict(), x, model.config)
    assert got.shape == (3, SMALL["horizon"], SMALL["features"])
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), float((got - want).abs().max())


def test_causal_attention_ignores_nothing_it_should_see(gen: Any) -> None:  # noqa: F811
    """The forecast reads the last position, which sees the whole window: every input step moves it, the
    first as well as the last."""
    mod = gen("tft_forecast")
    model = mod.build_model(dataclasses.replace(mod.Config(), **SMALL)).eval()
    (x,) = mod.example_inputs(model, batch_size=1)
    with torch.no_grad():
        base = model(x)
        for t in (0, x.shape[1] - 1):
            y = x.clone()
            y[0, t] += 1.0
            assert not torch.allclose(model(y), base)


def test_seed_stock_forecaster_solves_under_its_budget() -> None:
    """The seeds' stock_forecaster (family transformer, variant temporal_fusion, 90 days -> 30 days, 10M): the
    widest d_model (a multiple of 16) under the budget."""
    from conftest import ROOT

    from metagen_compiler.semantics.program import read_source

    comp = compile_source(read_source(ROOT / "tests" / "seeds_yaml" / "stock_forecaster.yaml"))
    assert not comp.bag.has_errors, [(d.code, d.message) for d in comp.bag.errors]
    assert comp.spec is not None and comp.spec.family.qualname == "std.forecast.tft"
    mod = types.ModuleType("tft_stock")
    sys.modules["tft_stock"] = mod
    exec(compile(emit(comp)["model.py"], "tft_stock.py", "exec"), mod.__dict__)  # noqa: S102 - our own generated code
    c = mod.Config()
    assert (c.lookback, c.horizon, c.features, c.heads) == (90, 30, 1, 4)
    params = tft_params(c.features, c.d_model, c.heads, c.horizon)
    assert comp.graph is not None and comp.graph.param_count() == params == 9_831_350
    assert params <= 10_000_000 < tft_params(c.features, c.d_model + 16, c.heads, c.horizon)
