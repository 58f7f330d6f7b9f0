"""ruff and mypy keep the compiler, the backends and the runtime modules clean (issue 20, section 5).

LINTED lists the paths, files or folders relative to the repository root, that must have no finding of either
tool. It grows as files are made clean; the aim is both packages whole (`python -m ruff check metagen_compiler
backends`, and `python -m mypy`, which checks metagen_compiler and metagen_backends as pyproject's [tool.mypy]
configures it). A backends file is named by its folder here (backends/...); mypy reports it under
typecheck/metagen_backends/..., the link through which it sees the folder under its import name.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Paths with zero ruff and zero mypy findings: extend this list as files become clean.
LINTED: tuple[str, ...] = (
    "backends/__init__.py",
    "backends/decoding.py",
    "backends/latex",
    "backends/onnx",
    "backends/pytorch/__init__.py",
    "backends/pytorch/codegen.py",
    "backends/pytorch/inference/__init__.py",
    "backends/pytorch/inference/audio_out.py",
    "backends/pytorch/inference/command.py",
    "backends/pytorch/inference/inputs.py",
    "backends/pytorch/inference/ocr.py",
    "backends/pytorch/inference/pipelines.py",
    "backends/pytorch/inference/predict.py",
    "backends/pytorch/inference/tasks.py",
    "backends/pytorch/losses.py",
    "backends/pytorch/lowering.py",
    "backends/pytorch/runtime/__init__.py",
    "backends/pytorch/runtime/boxes.py",
    "backends/pytorch/runtime/codec.py",
    "backends/pytorch/runtime/diffusion.py",
    "backends/pytorch/runtime/generation.py",
    "backends/pytorch/runtime/matching.py",
    "backends/pytorch/runtime/objectives",
    "backends/pytorch/runtime/recsys.py",
    "backends/pytorch/runtime/rl.py",
    "backends/pytorch/training",
    "backends/pytorch/weights",
    "backends/pytorch/writer.py",
    "metagen_compiler/__init__.py",
    "metagen_compiler/cli.py",
    "metagen_compiler/compilation.py",
    "metagen_compiler/diagnostics.py",
    "metagen_compiler/ir/__init__.py",
    "metagen_compiler/ir/digraph.py",
    "metagen_compiler/driver.py",
    "metagen_compiler/editor",
    "metagen_compiler/errorcodes.py",
    "metagen_compiler/escape.py",
    "metagen_compiler/ir/graph.py",
    "metagen_compiler/ir/spec.py",
    "metagen_compiler/ir/structure.py",
    "metagen_compiler/outputs.py",
    "metagen_compiler/passes",
    "metagen_compiler/primitives",
    "metagen_compiler/report.py",
    "metagen_compiler/search/__init__.py",
    "metagen_compiler/search/command.py",
    "metagen_compiler/search/engine.py",
    "metagen_compiler/search/history.py",
    "metagen_compiler/search/outputs.py",
    "metagen_compiler/search/pruning.py",
    "metagen_compiler/search/space.py",
    "metagen_compiler/search/training.py",
    "metagen_compiler/semantics",
    "metagen_compiler/span.py",
    "metagen_compiler/syntax",
    "metagen_compiler/tools",
    "metagen_compiler/version.py",
)

# mypy sees backends/ under its import name through this link (pyproject.toml, [tool.mypy] mypy_path)
MYPY_LINK = "typecheck/metagen_backends"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=1200)


def _linted(path: str) -> bool:
    """Whether a repository path (as a tool prints it) is a file of LINTED or inside a folder of it."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in LINTED)


def test_linted_paths_exist() -> None:
    """A moved or deleted file must leave the list too (else its entry would check nothing)."""
    missing = [p for p in LINTED if not (ROOT / p).exists()]
    assert not missing, f"LINTED names paths that do not exist: {missing}"
    outside = [p for p in LINTED if not p.startswith(("metagen_compiler/", "backends/"))]
    assert not outside, f"mypy checks metagen_compiler and backends only, not {outside}"


def test_mypy_sees_backends_under_its_import_name() -> None:
    link = ROOT / MYPY_LINK
    assert link.is_symlink() and link.resolve() == (ROOT / "backends").resolve(), \
        f"{MYPY_LINK} must be a symbolic link to ../backends"


def test_ruff_clean() -> None:
    r = _run("ruff", "check", "--output-format", "concise", *LINTED)
    assert r.returncode == 0, f"ruff findings in LINTED paths:\n{r.stdout}{r.stderr}"


@pytest.mark.slow
def test_mypy_clean() -> None:
    """`python -m mypy` as configured, its findings in LINTED paths (the other files' are not counted yet)."""
    r = _run("mypy", "--no-pretty", "--no-error-summary")
    assert r.returncode in (0, 1), f"mypy failed to run (exit {r.returncode}):\n{r.stdout}{r.stderr}"
    findings = []
    for line in r.stdout.splitlines():
        m = re.match(r"(?P<path>[^:]+\.pyi?):\d+(?::\d+)?: (?:error|note):", line)
        if m is None:
            continue
        path = Path(m["path"]).as_posix().removeprefix("./")
        path = re.sub(rf"^{re.escape(MYPY_LINK)}/", "backends/", path)
        if _linted(path):
            findings.append(line)
    assert not findings, "mypy findings in LINTED paths:\n" + "\n".join(findings)
