"""The command line, end to end in a subprocess: exit codes, outputs, atomic writes, no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

GPT2 = str(ROOT / "examples" / "gpt2.msl")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metagen_compiler.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONHASHSEED": "0"})


def test_compile_writes_the_model_folder(tmp_path: Path) -> None:
    r = run(GPT2, "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    d = tmp_path / "gpt2"
    assert sorted(p.name for p in d.iterdir()) == ["MODEL_CARD.md", "graph.dot", "graph.json", "model.py", "paper",
                                                   "report.json", "spec.txt"]
    assert (d / "paper" / "main.tex").is_file()
    report = json.loads((d / "report.json").read_text())
    for key in ("params", "flops_forward", "macs_forward", "memory", "latency", "constraints", "compiler"):
        assert key in report
    assert report["params"] == 124_439_808
    assert report["macs_forward"] * 2 == report["flops_forward"]
    assert len(report["compiler"]["input_sha256"]) == 64
    assert {c["kind"]: c["status"] for c in report["constraints"]}["params"] == "ok"
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind


def test_output_is_byte_identical_across_runs_and_hash_seeds(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(GPT2, "-o", str(a)).returncode == 0
    r = subprocess.run([sys.executable, "-m", "metagen_compiler.cli", GPT2, "-o", str(b)], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "4242"})
    assert r.returncode == 0
    files = sorted(f.relative_to(a / "gpt2") for f in (a / "gpt2").rglob("*") if f.is_file())
    assert Path("paper/figures/params_per_block.tex") in files  # the figures are compared too
    assert files == sorted(f.relative_to(b / "gpt2") for f in (b / "gpt2").rglob("*") if f.is_file())
    for f in files:
        assert (a / "gpt2" / f).read_bytes() == (b / "gpt2" / f).read_bytes(), f


def test_errors_exit_1_and_leave_outputs_untouched(tmp_path: Path) -> None:
    assert run(GPT2, "-o", str(tmp_path)).returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "gpt2").rglob("*") if p.is_file()}
    bad = tmp_path / "gpt2_bad.msl"
    bad.write_text(Path(GPT2).read_text().replace("params <= 125M", "params <= 100M"))
    r = run(str(bad), "-o", str(tmp_path))
    assert r.returncode == 1
    assert "error[E403]" in r.stderr
    after = {p: p.read_bytes() for p in (tmp_path / "gpt2").rglob("*") if p.is_file()}
    assert before == after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2", "gpt2_bad.msl"]


def test_recompile_replaces_the_folder(tmp_path: Path) -> None:
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "stale.txt").write_text("old")
    assert run(GPT2, "-o", str(tmp_path)).returncode == 0
    assert not (tmp_path / "gpt2" / "stale.txt").exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run().returncode == 2
    assert run(GPT2, "--emit", "nonsense").returncode == 2
    assert run(GPT2, "--backend", "fortran").returncode == 2
    assert run(GPT2, "--set", "novalue").returncode == 2


def test_missing_file_is_a_diagnostic(tmp_path: Path) -> None:
    r = run(str(tmp_path / "nope.msl"))
    assert r.returncode == 1
    assert "error[E004]" in r.stderr and "Traceback" not in r.stderr


def test_emit_prints_a_stage_and_writes_nothing(tmp_path: Path) -> None:
    r = run(GPT2, "--emit=ir", "-o", str(tmp_path))
    assert r.returncode == 0
    assert r.stdout.startswith("model gpt2")
    assert list(tmp_path.iterdir()) == []


def test_print_after(tmp_path: Path) -> None:
    r = run(GPT2, "--check", "--print-after=solve", "--print-after=constraints")
    assert r.returncode == 0
    assert "// ----- after solve" in r.stdout and "// ----- after constraints" in r.stdout


def test_check_writes_nothing(tmp_path: Path) -> None:
    r = run(GPT2, "--check", "-o", str(tmp_path))
    assert r.returncode == 0 and list(tmp_path.iterdir()) == []


def test_json_diagnostics(tmp_path: Path) -> None:
    bad = tmp_path / "bad.msl"
    bad.write_text("model m {\n  modality text -> txt\n  task genration\n}\n")
    r = run(str(bad), "--diagnostics-format=json")
    assert r.returncode == 1
    data = json.loads(r.stderr)
    codes = {d["code"] for d in data}
    assert "E203" in codes  # unknown task, with a hint
    task = next(d for d in data if d["code"] == "E203")
    assert task["span"]["line"] == 3 and "generation" in task["hint"]


def test_set_overrides_dims(tmp_path: Path) -> None:
    r = run(GPT2, "-o", str(tmp_path), "--set", "layers=2", "--set", "d_model=128", "--set", "heads=2")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "gpt2" / "report.json").read_text())
    assert report["dims"]["layers"] == 2 and report["dims"]["d_model"] == 128


def test_compile_path_never_imports_torch_onnx_or_networkx(tmp_path: Path) -> None:
    # networkx: its import (0.12 s) is a third of a compile; the graph IR converts to it on request
    code = (
        "import sys\n"
        "from metagen_compiler.cli import main\n"
        f"rc = main([{GPT2!r}, '-o', {str(tmp_path)!r}])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'networkx'))\n"
        "print(rc, bad)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr


def test_model_name_cannot_escape_the_output_folder(tmp_path: Path) -> None:
    from metagen_compiler.cli import _commit

    import pytest

    with pytest.raises(ValueError):
        _commit(tmp_path / "m", {"../../escape.txt": "x"})
    assert not (tmp_path.parent / "escape.txt").exists()
    assert not (tmp_path / "m").exists()


def test_include_path_finds_user_modules(tmp_path: Path) -> None:
    spec = str(ROOT / "tests" / "golden" / "include_path" / "main.msl")
    r = run(spec, "--check")
    assert r.returncode == 1 and "error[E101]" in r.stderr and "`shared`" in r.stderr
    r = run(spec, "-I", str(ROOT / "tests" / "golden" / "include_path" / "lib"), "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "tiny_resnet_cifar" / "report.json").read_text())["preset"] == "tiny_resnet"


def test_yaml_front_end_compiles_the_seeds(tmp_path: Path) -> None:
    for name in ("text_llm", "imagenet_classifier", "image_vit"):
        r = run(str(ROOT / "tests" / "seeds_yaml" / f"{name}.yaml"), "-o", str(tmp_path))
        assert r.returncode == 0, r.stderr
        report = json.loads((tmp_path / name / "report.json").read_text())
        assert report["params"] <= {"text_llm": 8e9}.get(name, 86e6)


def test_main_gives_back_the_collector_settings() -> None:
    import gc

    from metagen_compiler.cli import main

    before = gc.get_threshold()
    assert main([str(ROOT / "examples" / "gpt2.msl"), "--check"]) == 0
    assert gc.get_threshold() == before


def test_command_compiles_without_the_cyclic_collector_and_subcommands_keep_it(tmp_path: Path) -> None:
    """`metagenc` (cli.command) is one compile per process: the collector is off for it; a subcommand (the
    language server is long-lived) leaves it on."""
    import gc

    from metagen_compiler.cli import command

    try:
        assert command([str(ROOT / "examples" / "gpt2.msl"), "--check"]) == 0
        assert not gc.isenabled()
        gc.enable()
        spec = tmp_path / "m.msl"
        spec.write_text((ROOT / "examples" / "gpt2.msl").read_text())
        command(["fmt", str(spec)])
        assert gc.isenabled()
    finally:
        gc.enable()
