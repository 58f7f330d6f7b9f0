"""Golden files: every stage's canonical dump and the emitted model.py, for each example.

Update with `pytest --snapshot-update` and read the diff like code.
"""

from __future__ import annotations

import pytest

from conftest import EXAMPLES, compile_path
from metagen_compiler import ast as A
from metagen_compiler.passes import PASSES

STAGES = ("parse", "check", "solve", "shapes", "estimate", "constraints")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("stage", STAGES)
def test_stage_dump(path, stage, text_snapshot):  # type: ignore[no-untyped-def]
    comp = compile_path(path, verify=True)
    assert not comp.bag.has_errors, comp.bag.items
    text = A.dump(comp.module) if stage == "parse" else PASSES[stage].dump(comp)
    assert text == text_snapshot


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_model_py(path, text_snapshot):  # type: ignore[no-untyped-def]
    from metagen_backends.pytorch import emit

    comp = compile_path(path)
    assert not comp.bag.has_errors
    assert emit(comp)["model.py"] == text_snapshot
