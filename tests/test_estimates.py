"""Estimates against measurement: the bytes autograd saves for backward in the generated module
equal the compiler's `memory.activations_training_bytes` (within 10%) at the same small size."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import EXAMPLES, compile_path, load_module, rel  # noqa: E402
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
