"""Estimates against measurement: the bytes autograd saves for backward in the generated module
equal the compiler's `memory.activations_training_bytes` (within 10%) at the same small size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import EXAMPLES, ROOT, compile_path, load_module, rel  # noqa: E402
from test_numeric import SMALL  # noqa: E402

from metagen_compiler.cli import write_outputs  # noqa: E402
from metagen_compiler.compilation import Options  # noqa: E402
from metagen_compiler.driver import compile_model_set  # noqa: E402
from metagen_compiler.passes.estimate import estimate  # noqa: E402
from metagen_compiler.program import read_source  # noqa: E402

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
