"""Golden files: every stage's canonical dump and the emitted model.py, for each example.

Update with `pytest --snapshot-update` and read the diff like code.
"""

from __future__ import annotations

import functools

import pytest
from conftest import EXAMPLES, ROOT, compile_path

from metagen_compiler.compilation import Options
from metagen_compiler.passes import PASSES
from metagen_compiler.syntax import ast as A

# examples/ plus tests/golden/**/main.msl (a `lib/` folder beside a main.msl is put on the -I path)
SPECS = EXAMPLES + sorted((ROOT / "tests" / "golden").glob("**/main.msl"))


def _id(p):  # type: ignore[no-untyped-def]
    return p.stem if p.parent.name == "examples" else p.parent.name


@functools.cache
def _compile(path, verify=False):  # type: ignore[no-untyped-def]
    """Each spec compiled once for all its stage dumps (once more, without the verifier, for model.py): the
    dumps only read the compilation."""
    lib = path.parent / "lib"
    opts = Options(search_paths=(lib,)) if lib.is_dir() else Options()
    return compile_path(path, options=opts, verify=verify)

STAGES = ("parse", "check", "solve", "shapes", "structure", "estimate", "constraints")


@pytest.mark.parametrize("path", SPECS, ids=_id)
@pytest.mark.parametrize("stage", STAGES)
def test_stage_dump(path, stage, text_snapshot):  # type: ignore[no-untyped-def]
    comp = _compile(path, verify=True)
    assert not comp.bag.has_errors, comp.bag.items
    text = A.dump(comp.module) if stage == "parse" else PASSES[stage].dump(comp)
    assert text == text_snapshot


@pytest.mark.parametrize("path", SPECS, ids=_id)
def test_model_py(path, text_snapshot):  # type: ignore[no-untyped-def]
    from metagen_backends.pytorch import emit

    comp = _compile(path)
    assert not comp.bag.has_errors
    assert emit(comp)["model.py"] == text_snapshot


def test_every_model_py_is_pyflakes_clean(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No unused import, variable or undefined name in any generated model.py (ruff's pyflakes rules)."""
    import subprocess
    import sys

    from metagen_backends.pytorch import emit

    for path in SPECS:
        (tmp_path / f"{_id(path)}.py").write_text(emit(_compile(path))["model.py"], encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", "--output-format",
                        "concise", str(tmp_path)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
