"""Estimates against measurement: the bytes autograd saves for backward in the generated module
equal the compiler's `memory.activations_training_bytes` (within 10%) at the same small size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import EXAMPLES, ROOT, compile_path, load_module, rel
from test_numeric import SMALL

from metagen_compiler.cli import write_outputs
from metagen_compiler.compilation import Options
from metagen_compiler.driver import compile_model_set
from metagen_compiler.passes.estimate import estimate
from metagen_compiler.semantics.program import read_source

BATCH = 2
FAMILY = {"gpt2": "std.transformer.decoder", "tiny_story": "std.transformer.decoder",
          "parallel_decoder": "parallel_decoder", "resnet50": "std.vision.resnet", "vit_b_16": "std.vision.vit",
          "mamba_lm": "std.ssm.mamba", "moe_lm": "std.moe.decoder",
          "switch_lm": "std.moe.decoder", "s4d_lm": "std.ssm.s4d"}


def saved_activation_bytes(model, inputs) -> int:  # type: ignore[no-untyped-def]
    """Bytes of the distinct storages autograd saves during one training-mode forward, parameters and
    buffers (running statistics) excluded: they exist whether or not anything is saved."""
    state = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t):  # type: ignore[no-untyped-def]
        s = t.untyped_storage()
        if s.data_ptr() not in state:
            seen.setdefault(s.data_ptr(), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(*inputs)
    return sum(seen.values())


def _family(path: Path) -> str:
    comp = compile_path(path)
    assert comp.spec is not None
    return comp.spec.family.qualname


def test_every_example_has_a_small_config() -> None:
    assert {_family(p) for p in EXAMPLES} <= set(SMALL)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_training_activations_match_saved_tensors(path: Path, tmp_path: Path) -> None:
    small = SMALL[_family(path)]
    (comp,) = compile_model_set(read_source(path, display=rel(path)), Options(),
                                overrides=tuple((k, str(v)) for k, v in small.items()))
    # the small overrides may break the example's own constraints (E403, `context = 1024`); nothing else
    assert {d.code for d in comp.bag.items if d.severity.value == "error"} <= {"E403"}
    assert comp.graph is not None and comp.program is not None
    assert comp.graph.g.graph["estimates"]["params"] > 0
    _, files = write_outputs(comp, tmp_path, ["pytorch"])
    (tmp_path / "model.py").write_text(files["model.py"])
    mod = load_module(tmp_path / "model.py", f"est_{path.stem}")
    torch.manual_seed(0)
    model = mod.build_model().train()
    inputs = mod.example_inputs(model, batch_size=BATCH)
    est = estimate(comp.graph, comp.program, {**comp.graph.symbols, "B": BATCH})
    expected = est["memory"]["activations_training_bytes"]
    measured = saved_activation_bytes(model, inputs)
    assert abs(expected - measured) <= 0.10 * measured, (expected, measured)


GPT2_SMALL = ("gpt2", (("layers", "2"), ("d_model", "128"), ("heads", "2")))


def _latency_with(tmp_path: Path, fields: str, batch: int = 2,
                  example: tuple[str, tuple[tuple[str, str], ...]] = GPT2_SMALL) -> float:
    prof = tmp_path / f"p{abs(hash(fields)) % 10**8}.msl"
    prof.write_text("msl 1\ndevice probe {\n  name = \"probe\"; fp32 = 1e11; bf16 = 1e11; fp16 = 1e11\n"
                    f"  bandwidth = 1e10; overhead = 1us; launch = 5us; efficiency = 1.0\n{fields}}}\n")
    name, overrides = example
    (comp,) = compile_model_set(read_source(ROOT / "examples" / f"{name}.msl"), Options(device_profiles=(prof,)),
                                overrides=overrides)
    assert not comp.bag.has_errors
    est = estimate(comp.graph, comp.program, {**comp.graph.symbols, "B": batch})
    return float(est["latency_s"]["probe"]["fp32"])


@pytest.mark.parametrize(("example", "steps", "state"), [
    # the tagger's bidirectional GRU: 128 positions x 2 layers x 2 directions, no per-element scan cost
    (("gru_tagger", (("d_model", "64"), ("layers", "2"))), 128 * 2 * 2, 0),
    # Mamba: per layer one scan over the 1024 positions of a (B, d_inner = 2 x 128, d_state = 16) state
    (("mamba_lm", (("layers", "2"), ("d_model", "128"))), 2 * 1024, 2 * 128 * 16),
])
def test_recurrences_cost_their_steps(tmp_path: Path, example: Any, steps: int, state: int) -> None:
    """`rnn_step` (LSTM, GRU) and `scan_step` + `scan_element` x state elements (selective scan) add their
    cost once per step (docs/estimates.md), at batch 2; a profile without them prices no step."""
    plain = _latency_with(tmp_path, "", example=example)
    key = "scan_step" if state else "rnn_step"
    assert _latency_with(tmp_path, f"  {key} = 0us\n", example=example) == pytest.approx(plain)
    with_step = _latency_with(tmp_path, f"  {key} = 10us\n", example=example)
    assert with_step - plain == pytest.approx(steps * 10e-6)
    per_elem = _latency_with(tmp_path, "  scan_element = 1ns\n", example=example)
    assert per_elem - plain == pytest.approx(steps * 2 * state * 1e-9, abs=1e-12)  # B = 2


def test_recurrent_products_run_at_the_rate_of_batch_rows(tmp_path: Path) -> None:
    """An LSTM's recurrent product has B rows per step, its input product B x T: a rows table slow for few
    rows prices the recurrence higher, at batch 1 more than at batch 64 per sample."""
    lstm = ("lstm_forecast", ())
    flat = "  matmul_rows = [1, 1024]\n  matmul_rows_fp32 = [1e11, 1e11]\n"
    skew = "  matmul_rows = [1, 1024]\n  matmul_rows_fp32 = [1e9, 1e11]\n"
    assert _latency_with(tmp_path, flat, example=lstm) == pytest.approx(_latency_with(tmp_path, "", example=lstm))
    one = _latency_with(tmp_path, skew, batch=1, example=lstm) / _latency_with(tmp_path, flat, batch=1, example=lstm)
    many = _latency_with(tmp_path, skew, batch=64, example=lstm) / _latency_with(tmp_path, flat, batch=64, example=lstm)
    assert one > many > 1.0


def test_calibrated_rates_change_the_latency_as_documented(tmp_path: Path) -> None:
    """`vector` prices non-matmul FLOPs and `matmul_half` attention's small products (docs/estimates.md):
    absent, or at values that change nothing, the plain roofline; lower rates, a longer estimate."""
    plain = _latency_with(tmp_path, "")
    assert _latency_with(tmp_path, "  vector = 1e11\n") == pytest.approx(plain)
    assert _latency_with(tmp_path, "  matmul_half = 0\n") == pytest.approx(plain)
    slow_vec = _latency_with(tmp_path, "  vector = 1e9\n")
    slow_att = _latency_with(tmp_path, "  matmul_half = 1e9\n")
    assert slow_vec > plain * 1.01 and slow_att > plain * 1.01
    # attention's products: per (batch, head), so a larger batch is no larger product
    assert _latency_with(tmp_path, "  matmul_half = 1e9\n", batch=4) > slow_att
    # linear layers at the rate measured for their number of rows: the peak everywhere changes nothing
    flat = "  matmul_rows = [1, 1024]\n  matmul_rows_fp32 = [1e11, 1e11]\n"
    assert _latency_with(tmp_path, flat) == pytest.approx(plain)
    assert _latency_with(tmp_path, "  matmul_rows = [1, 100000]\n  matmul_rows_fp32 = [1e9, 1e11]\n") > plain * 1.01


def test_rows_rate_interpolates_in_log_rows() -> None:
    from metagen_compiler.passes.estimate import _by_rows

    table = [(1, 1e9), (16, 5e9), (256, 9e9)]
    assert _by_rows(table, 1) == 1e9 and _by_rows(table, 0) == 1e9 and _by_rows(table, 4096) == 9e9
    assert _by_rows(table, 4) == pytest.approx(3e9)  # halfway between 1 and 16 in log(rows)
    assert _by_rows(table, 64) == pytest.approx(7e9)


def test_cache_resident_weights_are_read_at_the_cache_bandwidth(tmp_path: Path) -> None:
    """A model whose weights and live activations fit in `cache_bytes` reads its weights at `cache_bandwidth`
    (docs/estimates.md): at batch 1 the small GPT-2's weight reads dominate, so a faster cache shortens the
    estimate; a cache too small for the model, or one no faster than DRAM, changes nothing."""
    plain = _latency_with(tmp_path, "", batch=1)
    fast = "  cache_bandwidth = 1e12\n"
    assert _latency_with(tmp_path, f"  cache_bytes = 1e12\n{fast}", batch=1) < plain * 0.99
    assert _latency_with(tmp_path, f"  cache_bytes = 1000\n{fast}", batch=1) == pytest.approx(plain)
    assert _latency_with(tmp_path, "  cache_bytes = 1e12\n  cache_bandwidth = 1e10\n", batch=1) == pytest.approx(plain)


def test_products_of_a_model_beyond_the_cache_run_at_the_dram_rows_rate(tmp_path: Path) -> None:
    """Linear layers run at `matmul_rows_fp32` (weights cached) where the model fits in `cache_bytes`, at
    `matmul_rows_dram_fp32` (weights streamed from DRAM) where it does not; without `cache_bytes` the
    cached table throughout."""
    rows = "  matmul_rows = [1, 1024]\n  matmul_rows_fp32 = [1e11, 1e11]\n  matmul_rows_dram_fp32 = [1e9, 1e10]\n"
    flat = _latency_with(tmp_path, "  matmul_rows = [1, 1024]\n  matmul_rows_fp32 = [1e11, 1e11]\n")
    assert _latency_with(tmp_path, rows) == pytest.approx(flat)
    assert _latency_with(tmp_path, rows + "  cache_bytes = 1e12\n") == pytest.approx(flat)
    assert _latency_with(tmp_path, rows + "  cache_bytes = 1000\n") > flat * 2


def test_recurrent_weights_stay_cached_while_the_model_streams(tmp_path: Path) -> None:
    """An LSTM's recurrent product reuses one weight at every step: where that weight fits in the cache it
    runs at the cached rate even when the whole model does not fit (its input product streams)."""
    lstm = ("lstm_forecast", ())  # hidden 256: a recurrent weight of 4 gates x 256 x 256 floats
    base = "  matmul_rows = [1, 1024]\n  matmul_rows_fp32 = [1e11, 1e11]\n  matmul_rows_dram_fp32 = [1e9, 1e9]\n"
    step_w = 4 * 4 * 256 * 256
    assert step_w < _estimate_of(lstm)["params"] * 4
    cached = _latency_with(tmp_path, base + "  cache_bytes = 1e12\n", batch=1, example=lstm)
    partly = _latency_with(tmp_path, base + f"  cache_bytes = {step_w}\n", batch=1, example=lstm)
    streamed = _latency_with(tmp_path, base + f"  cache_bytes = {step_w - 1}\n", batch=1, example=lstm)
    assert cached < partly < streamed


def _estimate_of(example: tuple[str, tuple[tuple[str, str], ...]]) -> dict[str, Any]:
    name, overrides = example
    (comp,) = compile_model_set(read_source(ROOT / "examples" / f"{name}.msl"), Options(), overrides=overrides)
    assert comp.graph is not None and comp.program is not None
    return estimate(comp.graph, comp.program, {**comp.graph.symbols, "B": 1})


def test_cache_size_reads_the_last_level_data_cache(tmp_path: Path) -> None:
    from metagen_compiler.tools.calibrate import cache_size

    caches = [("1", "Data", "48K"), ("1", "Instruction", "32K"), ("2", "Unified", "1024K"), ("3", "Unified", "32768K")]
    for i, (level, kind, size) in enumerate(caches):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for f, v in (("level", level), ("type", kind), ("size", size)):
            (d / f).write_text(v + "\n")
    assert cache_size(tmp_path) == 32 * 2**20
    assert cache_size(tmp_path / "none") is None


def test_recurrent_products_run_at_the_measured_recurrence_rate(tmp_path: Path) -> None:
    """With `rnn_rows` / `rnn_rows_fp32` (the runtime's own LSTM and GRU steps, timed by batch rows) the
    recurrent products run at that rate instead of the matmul rows table; the input products keep it."""
    lstm = ("lstm_forecast", ())
    rows = "  matmul_rows = [1, 1024]\n  matmul_rows_fp32 = [1e11, 1e11]\n"
    plain = _latency_with(tmp_path, rows, batch=1, example=lstm)
    assert _latency_with(tmp_path, rows + "  rnn_rows = [1, 16]\n  rnn_rows_fp32 = [1e11, 1e11]\n", batch=1,
                         example=lstm) == pytest.approx(plain)
    slow = _latency_with(tmp_path, rows + "  rnn_rows = [1, 16]\n  rnn_rows_fp32 = [1e10, 1e11]\n", batch=1,
                         example=lstm)
    # at batch 1: 2 layers x 96 steps (lookback) of a (1 x 256) @ (256 x 4 gates x 256) product, at 1e10
    # FLOP/s instead of 1e11
    rec_flops = 2 * 96 * 2 * 4 * 256 * 256
    assert slow - plain == pytest.approx(rec_flops / 1e10 - rec_flops / 1e11, rel=1e-6)


def test_lowered_with_constant_weights_makes_them_initializers() -> None:
    from metagen_compiler.tools.calibrate import _lowered

    args = {"in_features": 8, "hidden": 16, "layers": 1, "bidirectional": False}
    plain, const = _lowered("lstm", args, (1, 4, 8)), _lowered("lstm", args, (1, 4, 8), constant=True)
    assert [i.name for i in const.graph.input] == ["x"]
    assert {i.name for i in plain.graph.input} - {"x"} == {t.name for t in const.graph.initializer} != set()
