"""The command line, end to end in a subprocess: exit codes, outputs, atomic writes, no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

GPT2 = str(ROOT / "examples" / "gpt2.msl")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metagen_compiler.cli", *args], cwd=cwd, capture_output=True,
                          text=True, check=False, env={**os.environ, "PYTHONHASHSEED": "0"})


def test_compile_writes_the_model_folder(tmp_path: Path) -> None:
    r = run(GPT2, "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    d = tmp_path / "gpt2"
    assert sorted(p.name for p in d.iterdir()) == ["MODEL_CARD.md", "audio_out.py", "data.py", "data_audio.py",
                                                   "data_graph.py", "data_points.py", "data_series.py",
                                                   "data_vision.py", "evaluate.py", "generation.py", "graph.dot",
                                                   "graph.json", "inputs.py", "loop.py", "model.py", "ocr.py",
                                                   "paper", "pipelines.py", "predict.py",
                                                   "report.json", "rl.py", "spec.txt", "split_metrics.py",
                                                   "tasks.py", "train.py", "weights.py"]
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
                       capture_output=True, text=True, check=False, env={**os.environ, "PYTHONHASHSEED": "4242"})
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


# what the default compile must not import: networkx (its import, 0.12 s, is a third of a compile; the graph IR
# converts to it on request), the optional packages, and the runtime files the PyTorch backend copies beside
# model.py (train.py, weights.py, generation.py, ...), which it reads as text
_NOT_ON_THE_COMPILE_PATH = ("torch", "onnx", "onnx_ir", "onnxruntime", "networkx", "numpy", "safetensors", "tokenizers",
                            "PIL", "soundfile", "gymnasium", "optuna", "matplotlib", "transformers")


def test_compile_path_never_imports_torch_onnx_or_networkx(tmp_path: Path) -> None:
    copied = tuple(f"metagen_backends.pytorch.{p}." for p in ("training", "weights", "runtime", "inference"))
    code = (
        "import sys\n"
        "from metagen_compiler.cli import main\n"
        f"rc = main([{GPT2!r}, '-o', {str(tmp_path)!r}])\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {_NOT_ON_THE_COMPILE_PATH!r} or m.startswith({copied!r}))\n"
        "print(rc, bad)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr


def test_model_name_cannot_escape_the_output_folder(tmp_path: Path) -> None:
    from metagen_compiler.outputs import commit

    for name, rel in (("m", "../../escape.txt"), ("m", "/abs.txt"), ("m", "a/../../escape.txt"), ("..", "x.txt")):
        with pytest.raises(ValueError):
            commit(tmp_path, {name: {rel: "x"}})
    assert not (tmp_path.parent / "escape.txt").exists()
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == []


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


# ---------------------------------------------------------------- what a new user meets (issue 15)
def _without(modules: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`metagenc ARGS` in a Python where `modules` cannot be imported (as if never installed)."""
    code = ("import sys\n"
            f"for m in {modules!r}:\n"
            "    sys.modules[m] = None\n"
            "from metagen_compiler.cli import command\n"
            "sys.exit(command(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120)


def test_a_missing_optional_dependency_is_a_usage_error_naming_the_extra(tmp_path: Path) -> None:
    """Was exit 3, `internal error in a backend: ModuleNotFoundError: No module named 'numpy'`."""
    out = tmp_path / "out"
    for missing, named in ((["numpy"], "numpy, which is"), (["onnx_ir", "onnx"], "onnx, onnx-ir, which are")):
        r = _without(missing, GPT2, "--backend", "pytorch,latex,onnx", "-o", str(out))
        assert r.returncode == 2, r.stderr
        assert r.stderr == (f"metagenc: error: the onnx backend needs {named} not installed: "
                            'pip install "metagen[onnx]"\n')
    assert not out.exists()  # checked before compiling
    r = _without(["pygls"], "lsp")
    assert r.returncode == 2 and r.stderr == ("metagenc: error: `metagenc lsp` needs pygls, which is not installed: "
                                              'pip install "metagen[editor]"\n'), r.stderr
    r = _without(["onnxruntime"], "calibrate", "--quick", "-o", str(tmp_path / "cal.msl"))
    assert r.returncode == 2 and 'pip install "metagen[onnx]"' in r.stderr and "onnxruntime" in r.stderr, r.stderr
    assert not (tmp_path / "cal.msl").exists()
    r = _without(["torch"], "import-weights", str(tmp_path), str(tmp_path / "w.pt"))
    assert r.returncode == 2 and r.stderr == ("metagenc: error: `metagenc import-weights` needs torch, which is not "
                                              'installed: pip install "metagen[torch]"\n'), r.stderr
    r = _without(["torch"], "import-weights", str(tmp_path), str(tmp_path / "w.npz"))  # .npz: numpy reads it
    assert "metagen[torch]" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = _without(["torch"], GPT2, "-o", str(out), "--backend", "pytorch,latex")  # compiling never needs torch
    assert r.returncode == 0, r.stderr
    for sub, module, extra in (("train", "safetensors", "train"), ("search", "optuna", "search")):
        r = _without([module], sub, GPT2, "-o", str(out))
        assert r.returncode == 2 and r.stderr == (f"metagenc: error: `metagenc {sub}` needs {module}, which is not "
                                                  f'installed: pip install "metagen[{extra}]"\n'), r.stderr


def test_an_undeclared_missing_module_is_still_a_usage_error(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """A module the table does not declare, missing when the subcommand is imported: exit 2 naming it and the
    subcommand's extras, never a traceback."""
    from metagen_compiler import cli

    monkeypatch.setitem(cli.SUBCOMMANDS, "x", cli.Subcommand("metagen_no_such_module:main", "x",
                                                             (cli.Needs("search", ("json",)),)))
    assert cli.main(["x"]) == 2
    assert capsys.readouterr().err == ("metagenc: error: `metagenc x` needs metagen_no_such_module, which is not "
                                       'installed: pip install "metagen[search]"\n')


def _dist(name: str) -> str:
    """A distribution's name as pip compares them (PEP 503)."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(reqs: list[str]) -> set[str]:
    import re

    return {_dist(re.split(r"[<>=!~\[;( ]", r, maxsplit=1)[0]) for r in reqs if "extra ==" not in r}


def test_declared_needs_come_from_the_extra_they_name() -> None:
    """pyproject.toml's extras are the truth: every extra a backend or subcommand names is one pyproject.toml
    defines, and each module declared with it is installed by that extra: by one of its distributions, or by one
    they require (numpy comes with onnx, lsprotocol with pygls)."""
    import importlib.metadata
    import tomllib

    from metagen_backends import REQUIRES

    from metagen_compiler.cli import SUBCOMMANDS

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    providers = importlib.metadata.packages_distributions()
    needs = [(n.extra, n.modules) for s in SUBCOMMANDS.values() for n in s.needs] + list(REQUIRES.values())
    assert {"onnx", "editor", "torch", "train", "search"} <= {extra for extra, _ in needs}
    for extra, modules in needs:
        assert extra in extras, extra
        closure, todo = set(), list(_requirement_names(extras[extra]))
        while todo:
            d = todo.pop()
            if d not in closure:
                closure.add(d)
                try:
                    todo += _requirement_names(importlib.metadata.requires(d) or [])
                except importlib.metadata.PackageNotFoundError:  # not installed here (another Python's marker)
                    pass
        for m in modules:
            assert {_dist(d) for d in providers.get(m, [])} & closure, (extra, m, providers.get(m))


def test_help_lists_the_subcommands_from_the_table(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from metagen_compiler import cli

    r = run("--help")
    assert r.returncode == 0
    for name, sub in cli.SUBCOMMANDS.items():
        assert f"  {name}" in r.stdout and sub.summary in r.stdout, name
    assert {"fmt", "lsp", "calibrate", "import-weights"} <= set(cli.SUBCOMMANDS)
    assert "exit codes: 0 ok, 1 errors in the input or outputs that cannot be written, 2 usage" in r.stdout
    monkeypatch.setitem(cli.SUBCOMMANDS, "train", cli.Subcommand("metagen_compiler.train:main", "train a model"))
    assert "  train           train a model" in cli._parser().format_help()


def test_output_folders_get_the_users_umask(tmp_path: Path) -> None:
    """Were 0700 (a temporary folder renamed into place)."""
    import stat

    for umask, want in ((0o022, 0o755), (0o027, 0o750)):
        out = tmp_path / f"u{umask:o}"
        r = subprocess.run([sys.executable, "-m", "metagen_compiler.cli", GPT2, "-o", str(out)], cwd=ROOT,
                           capture_output=True, text=True, check=False, preexec_fn=lambda u=umask: os.umask(u))
        assert r.returncode == 0, r.stderr
        for d in (out, out / "gpt2", out / "gpt2" / "paper", out / "gpt2" / "paper" / "sections"):
            assert stat.S_IMODE(d.stat().st_mode) == want, (d, oct(d.stat().st_mode))
        assert stat.S_IMODE((out / "gpt2" / "model.py").stat().st_mode) == want & 0o666


def test_filesystem_failures_are_one_line(tmp_path: Path) -> None:
    """-o a file, OUT/<model> a file or a symbolic link: exit 1 and one line, never a traceback, no stray entry
    (the cases in depth: tests/test_outputs.py)."""
    f = tmp_path / "f"
    f.write_text("x")
    r = run(GPT2, "-o", str(f), "--backend", "none")
    assert r.returncode == 1
    assert r.stderr == f"metagenc: error: the output folder `{f}` is not a folder: choose another -o\n"
    out = tmp_path / "out"
    out.mkdir()
    (out / "gpt2").symlink_to(tmp_path)
    r = run(GPT2, "-o", str(out), "--backend", "none")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "symbolic link" in r.stderr, r.stderr
    assert [p.name for p in out.iterdir()] == ["gpt2"] and (out / "gpt2").is_symlink()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_paper_makefile_says_what_to_install_without_tex(tmp_path: Path) -> None:
    """Was `make: pdflatex: No such file or directory`."""
    r = run(str(ROOT / "examples" / "house_prices.msl"), "-o", str(tmp_path), "--backend", "latex")
    assert r.returncode == 0, r.stderr
    paper = tmp_path / "house_prices" / "paper"
    empty = tmp_path / "bin"
    empty.mkdir()
    for latexmk in ([], ["LATEXMK="]):
        r = subprocess.run([shutil.which("make") or "make", "-s", "-C", str(paper), *latexmk], capture_output=True,
                           text=True, check=False, env={"PATH": str(empty)})
        assert r.returncode != 0
        assert r.stderr.startswith("pdflatex not found: apt-get install texlive-latex-base texlive-latex-recommended "
                                   "texlive-latex-extra texlive-pictures latexmk\n"), r.stderr
        assert "No such file or directory" not in r.stdout + r.stderr
    if shutil.which("pdflatex") and shutil.which("bibtex"):
        r = subprocess.run(["make", "-s", "-C", str(paper), "check"], capture_output=True, text=True, check=False)
        assert r.returncode == 0 and r.stdout + r.stderr == "", r.stderr


def test_a_module_without_a_spec_counts_as_installed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """find_spec raises ValueError for a module in sys.modules whose __spec__ is None (made at run time, as some
    packages do): it is there. One set to None is not (how the tests above hide a module)."""
    import types

    from metagen_compiler import cli

    monkeypatch.setitem(sys.modules, "metagen_made_at_run_time", types.ModuleType("metagen_made_at_run_time"))
    monkeypatch.setitem(sys.modules, "metagen_hidden", None)
    assert cli._installed("metagen_made_at_run_time") and not cli._installed("metagen_hidden")
    assert not cli._installed("metagen_no_such_module") and cli._installed("json")
