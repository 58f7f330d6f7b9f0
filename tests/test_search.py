"""`metagenc search`: estimate-only architecture search over a spec's open dimensions (docs/search.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna  # the test extra installs it (pip install -e ".[test]")
import pytest
from conftest import ROOT
from sqlalchemy.exc import SQLAlchemyError

from metagen_compiler.cli import main as cli_main
from metagen_compiler.compilation import Options
from metagen_compiler.driver import compile_model_set
from metagen_compiler.search.command import main as search_main
from metagen_compiler.search.engine import hypervolume
from metagen_compiler.search.space import filled_text, read_space
from metagen_compiler.semantics.program import read_source
from metagen_compiler.span import SourceFile

SMALL = """msl 1
import std.transformer

model small_lm {
  modality text -> text
  task generation
  objective autoregressive
  constraints {
    params <= 2M
    context = 256
    latency < LATENCY on consumer_gpu
  }
  architecture transformer.decoder {
    vocab = 1000
    layers = ? in 1..8
    d_model = ? multiple_of 32 in 64..512
    heads = d_model / 32
    norm = rmsnorm
    position = rope
    mlp = swiglu
    bias = false
    tied = true
  }
}
"""
# the solver fills the 2M budget (layers 4, d_model 192) at an estimated 0.359 ms: 0.3 ms is broken (W002)
FAST = SMALL.replace("LATENCY", "0.3ms")
LOOSE = SMALL.replace("LATENCY", "1ms")
# heads left open beside d_model: a choice where heads does not divide d_model fails the family's requirement
HEADS = LOOSE.replace("layers = ? in 1..8", "layers = 2").replace("heads = d_model / 32", "heads = ? in 1..12")


YAML = """metagen_version: "1.0"
name: "text_llm"
modality:
  inputs: ["text"]
  outputs: ["text"]
constraints:
  parameter_budget:
    max: "50M"
  context_window: 256
training:
  objective: ["autoregressive"]
architecture:
  family: "transformer"
  vocab: 1000
  layers: "?"
  d_model: 64
"""


@pytest.fixture(autouse=True)
def _history_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every search records itself in the history under $XDG_CACHE_HOME: a test's goes to its own folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _spec(tmp_path: Path, text: str, name: str = "spec.msl") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _search(spec: Path, out: Path, *extra: str) -> int:
    return search_main([str(spec), "-o", str(out), "--backend", "none", "--no-plots", *extra])


def _trials(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


def _pareto(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "pareto.json").read_text())


def _finished(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    s = optuna.load_study(study_name=study, storage=storage)
    return [t for t in s.get_trials(deepcopy=False) if t.state.is_finished()]


# ---------------------------------------------------------------- the space and the filled spec
def test_space_is_the_solvers_domains(tmp_path: Path) -> None:
    src = read_source(_spec(tmp_path, LOOSE))
    space = read_space(src, Options())
    assert [(d.name, d.domain) for d in space.dims] == [("layers", range(1, 9)), ("d_model", range(64, 513, 32))]
    # a `--set` removes a dimension from the space
    assert [d.name for d in read_space(src, Options(), (("layers", "3"),)).dims] == ["d_model"]


def test_filled_spec_replaces_the_holes_and_compiles_to_the_same_model(tmp_path: Path) -> None:
    src = read_source(_spec(tmp_path, LOOSE))
    space = read_space(src, Options())
    text = filled_text(src, space, {"layers": 3, "d_model": 160})
    assert "layers = 3\n" in text and "d_model = 160\n" in text and "?" not in text
    comp = compile_model_set(SourceFile(src.path, text), Options())[0]
    assert not comp.bag.has_errors and comp.spec is not None
    assert comp.spec.dims["layers"] == 3 and comp.spec.dims["d_model"] == 160


_VAE_BLOCK = " {\n    channels = 3\n    latent = 64\n    beta = 0.5\n  }"


@pytest.mark.parametrize("block, filled", [
    (_VAE_BLOCK, " {\n    channels = 3\n    latent = 64\n    beta = 0.5\n    width = 24\n  }"),
    ("", " { width = 24 }"),  # `architecture autoencoder.conv_vae` without a block
    (" { channels = 3; latent = 64 }", " { channels = 3; latent = 64; width = 24 }"),
    (" { channels = 3; latent = 64; }", " { channels = 3; latent = 64; width = 24 }"),
])
def test_filled_spec_sets_a_hole_the_family_declares(block: str, filled: str) -> None:
    # conv_vae's `width = ? multiple_of 8` is a default in the stdlib: the filled spec sets it in the model
    example = ROOT / "examples" / "conv_vae_images.msl"
    src = SourceFile(str(example), example.read_text().replace(_VAE_BLOCK, block))
    space = read_space(src, Options())
    assert [d.name for d in space.dims] == ["width"] and space.dims[0].span is None
    text = filled_text(src, space, {"width": 24})
    assert f"architecture autoencoder.conv_vae{filled}\n" in text
    comp = compile_model_set(SourceFile(src.path, text), Options())[0]
    assert not comp.bag.has_errors and comp.spec is not None and comp.spec.dims["width"] == 24


@pytest.mark.parametrize("architecture", [
    'architecture:\n  family: "transformer"\n  vocab: 1000\n',
    'architecture: {family: "transformer", vocab: 1000}\n',
])
def test_filled_yaml_spec_sets_the_holes_the_family_declares_in_yaml(architecture: str) -> None:
    text = YAML.split("architecture:")[0] + architecture
    src = SourceFile("llm.yaml", text)
    space = read_space(src, Options())
    assert [d.name for d in space.dims] == ["layers", "d_model"] and all(d.span is None for d in space.dims)
    filled = filled_text(src, space, {"layers": 2, "d_model": 128})
    assert filled.startswith(text.rstrip()[:-1]) and "layers: 2" in filled and "d_model: 128" in filled
    comp = compile_model_set(SourceFile(src.path, filled), Options())[0]
    assert not comp.bag.has_errors and comp.spec is not None
    assert comp.spec.dims["layers"] == 2 and comp.spec.dims["d_model"] == 128


def test_a_yaml_specs_candidates_are_yaml(tmp_path: Path) -> None:
    # a YAML spec's filled spec is YAML: it is written as <model>.yaml, and compiles on its own
    spec = _spec(tmp_path, YAML, "llm.yaml")
    out = tmp_path / "out"
    assert _search(spec, out, "--trials", "3", "--quiet", "--backend", "pytorch") == 0
    doc = _pareto(out)
    assert doc["candidates"]
    for c in doc["candidates"]:
        folder = out / c["folder"]
        assert not (folder / "text_llm.msl").exists()
        filled = (folder / "text_llm.yaml").read_text()
        assert f'layers: "{c["values"]["layers"]}"' in filled
        assert cli_main([str(folder / "text_llm.yaml"), "--check"]) == 0


# ---------------------------------------------------------------- a search, end to end
def test_estimate_only_search_writes_trials_front_and_candidates(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    assert search_main([str(spec), "-o", str(out), "--trials", "20", "--seed", "1"]) == 0
    trials = _trials(out)
    assert [t["trial"] for t in trials] == list(range(20))
    assert (out / "study.db").is_file()
    doc = _pareto(out)
    assert [o["name"] for o in doc["objectives"]] == ["params", "latency"]
    assert doc["candidates"] and doc["trials"] == 20
    # one compiled folder per Pareto-optimal candidate, and no other
    assert sorted((out / "pareto").iterdir()) == sorted(out / c["folder"] for c in doc["candidates"])
    for c in doc["candidates"]:
        folder = out / c["folder"]
        filled = (folder / "small_lm.msl").read_text()
        assert "?" not in filled and (folder / "model.py").is_file()
        report = json.loads((folder / "report.json").read_text())
        assert report["params"] == c["metrics"]["params"] and c["verified"]
        assert report["dims"]["layers"] == c["values"]["layers"]
        # the candidate's own spec compiles on its own, with no warning
        assert cli_main([str(folder / "small_lm.msl"), "--check"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # not a terminal: no progress line, only the summary
    assert "search small_lm: 20 trials" in err and "Pareto-optimal" in err
    if shutil.which("python") and _has_matplotlib():
        assert (out / "pareto.png").stat().st_size > 1000 and (out / "hypervolume.png").is_file()


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_pareto_candidates_meet_the_latency_constraint_that_the_solver_breaks(tmp_path: Path) -> None:
    spec, out = _spec(tmp_path, FAST), tmp_path / "out"
    solved = compile_model_set(read_source(spec), Options())[0]
    assert [d.code for d in solved.bag.items] == ["W002"]  # today's solver: fills the budget, breaks the latency
    assert _search(spec, out, "--trials", "30", "--seed", "0") == 0
    doc = _pareto(out)
    assert doc["candidates"]
    for c in doc["candidates"]:
        assert c["metrics"]["latency"] < 0.3e-3 and c["metrics"]["params"] <= 2_000_000
        assert all(v <= 0 for v in c["constraints"].values()), c
    # and some trials did break it: the constraint did the work
    assert any(t["status"] == "infeasible" for t in _trials(out))


def test_constraints_are_never_violated_on_the_front(tmp_path: Path) -> None:
    spec, out = _spec(tmp_path, FAST), tmp_path / "out"
    assert _search(spec, out, "--trials", "25", "--sampler", "random", "--objective", "params:max") == 0
    trials = {t["trial"]: t for t in _trials(out)}
    doc = _pareto(out)
    assert len(doc["candidates"]) == 1  # one objective: the best feasible trial
    best = doc["candidates"][0]
    feasible = [t for t in trials.values() if t["status"] == "ok"]
    assert best["objectives"]["params"] == max(t["objectives"]["params"] for t in feasible)
    infeasible = [t for t in trials.values() if t["status"] == "infeasible"]
    assert infeasible and all(any(v > 0 for v in t["constraints"].values()) for t in infeasible)
    assert best["objectives"]["params"] < max(t["objectives"]["params"] for t in infeasible)


def test_failed_candidates_are_recorded_with_their_reason(tmp_path: Path) -> None:
    spec, out = _spec(tmp_path, HEADS), tmp_path / "out"
    assert _search(spec, out, "--trials", "20", "--sampler", "random") == 0
    trials = _trials(out)
    assert len(trials) == 20
    failed = [t for t in trials if t["status"] == "failed"]
    assert failed and all("error[E206]" in t["reason"] and "heads must divide d_model" in t["reason"]
                          for t in failed)
    assert all(t["values"]["d_model"] % t["values"]["heads"] for t in failed)
    assert all(t["values"]["d_model"] % t["values"]["heads"] == 0 for t in trials if t["status"] != "failed")
    assert _pareto(out)["failed"] == len(failed)


def test_a_candidate_that_breaks_a_family_requirement_is_a_broken_constraint_the_sampler_reads(
        tmp_path: Path) -> None:
    # heads must divide d_model: a rule of the family, so a constraint of the samplers, not only a failed trial
    from metagen_compiler.search.engine import COMPILES, trial_status

    spec, out = _spec(tmp_path, HEADS), tmp_path / "out"
    assert _search(spec, out, "--trials", "12", "--sampler", "tpe", "--quiet") == 0
    trials = optuna.load_study(study_name="small_lm", storage=f"sqlite:///{out / 'study.db'}").trials
    failed = [t for t in trials if trial_status(t) == "failed"]
    assert failed
    for t in failed:  # complete, so NSGA-II and TPE read it; infeasible by its violation
        assert t.state == optuna.trial.TrialState.COMPLETE and t.constraints == {COMPILES: 1.0}
        assert t.values == [-float("inf"), float("inf")]  # params:max, latency:min: the worst there is
    assert all(t.constraints.get(COMPILES) is None for t in trials if trial_status(t) != "failed")
    assert all(t["status"] != "ok" or t["values"]["d_model"] % t["values"]["heads"] == 0 for t in _trials(out))


def test_same_seed_same_search(tmp_path: Path) -> None:
    spec = _spec(tmp_path, LOOSE)
    runs = {}
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert _search(spec, tmp_path / name, "--trials", "15", "--seed", seed, "--quiet") == 0
        runs[name] = [(t["values"], t.get("objectives")) for t in _trials(tmp_path / name)]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_a_finished_study_is_not_run_again_and_a_larger_budget_continues_it(tmp_path: Path) -> None:
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    assert _search(spec, out, "--trials", "8", "--quiet") == 0
    first = _trials(out)
    assert _search(spec, out, "--trials", "8", "--quiet") == 0
    assert _trials(out) == first
    assert _search(spec, out, "--trials", "12", "--quiet") == 0
    assert _trials(out)[:8] == first and len(_trials(out)) == 12


def test_timeout_stops_the_run_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    assert _search(spec, out, "--trials", "100000", "--timeout", "1") == 0
    assert 1 <= len(_trials(out)) < 100000
    assert "of 100000 (--timeout; run again to continue)" in capsys.readouterr().err


def test_a_study_of_another_spec_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _search(_spec(tmp_path, LOOSE), out, "--trials", "3", "--quiet") == 0
    assert _search(_spec(tmp_path, FAST, "fast.msl"), out, "--trials", "3", "--quiet") == 2
    assert "is a search of another spec text" in capsys.readouterr().err


def test_resumes_after_sigkill_and_loses_no_finished_trial(tmp_path: Path) -> None:
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    cmd = [sys.executable, "-m", "metagen_compiler.cli", "search", str(spec), "-o", str(out), "--trials", "60",
           "--backend", "none", "--no-plots", "--sampler", "random"]
    storage = f"sqlite:///{out / 'study.db'}"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before: dict[int, tuple[dict, tuple]] = {}  # type: ignore[type-arg]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                done = _finished(storage, "small_lm")
            except (KeyError, SQLAlchemyError):  # the database or the study is not there yet
                done = []
            if len(done) >= 6:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the search ended before it could be killed"
    for t in _finished(storage, "small_lm"):  # what the storage held when the process died
        before[t.number] = (t.params, tuple(t.values or ()))
    assert 6 <= len(before) < 60
    r = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)  # the same command again
    assert r.returncode == 0, r.stderr
    trials = {t["trial"]: t for t in _trials(out)}
    for n, (params, values) in before.items():  # every trial finished before the kill is kept, unchanged
        assert trials[n]["values"] == params
        if values:
            assert tuple(trials[n]["objectives"].values()) == values
    counted = [t for t in trials.values() if t["status"] in ("ok", "infeasible", "failed")]
    assert len(counted) == 60
    interrupted = [t for t in trials.values() if t["status"] == "interrupted"]
    for t in (t for t in interrupted if t["values"]):  # a trial the kill cut short is run again, same values
        retry = [u for u in trials.values() if u.get("retry_of") == t["trial"]]
        assert len(retry) == 1 and retry[0]["values"] == t["values"] and retry[0]["status"] != "interrupted"
    assert all(t["status"] != "running" for t in trials.values())


def test_ctrl_c_keeps_the_finished_trials_and_exits_130(tmp_path: Path) -> None:
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    cmd = [sys.executable, "-m", "metagen_compiler.cli", "search", str(spec), "-o", str(out), "--trials", "500",
           "--backend", "none", "--no-plots", "--sampler", "random"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{out / 'study.db'}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            if len(_finished(storage, "small_lm")) >= 3:
                break
        except (KeyError, SQLAlchemyError):
            pass
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted after" in err and "run the same command again" in err and "Traceback" not in err
    trials = _trials(out)  # written on the way out
    assert sum(t["status"] in ("ok", "infeasible") for t in trials) >= 3


def test_random_baseline_runs_beside_and_is_plotted(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    assert search_main([str(spec), "-o", str(out), "--trials", "8", "--baseline", "random", "--backend", "none",
                        "--quiet"]) == 0
    base = _finished(f"sqlite:///{out / 'study.db'}", "small_lm-random")
    assert len(base) == 8
    assert (out / "hypervolume.png").stat().st_size > 1000 and (out / "pareto.png").is_file()


def test_progress_line_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from metagen_compiler.search.command import Progress
    from metagen_compiler.search.engine import ObjectiveSpec

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[1.5e6, 2e-4], user_attrs={"result": {"status": "ok"}}))
    cfg = type("Cfg", (), {"objectives": [ObjectiveSpec("params", "maximize"), ObjectiveSpec("latency", "minimize")],
                           "trials": 10, "timeout": None})()
    p = Progress(True, use_rich=False)  # the plain line, where rich is not installed
    p(study, cfg, 2.0)
    p.close()
    err = capsys.readouterr().err
    assert err.startswith("\rtrial 1/10  feasible 1  best: params 1.5M, latency 0.2 ms  ~18s left") and err.endswith("\n")
    pytest.importorskip("rich")
    p = Progress(True)  # rich's live display: the same line, drawn by rich
    assert p.live is not None
    p(study, cfg, 2.0)
    p.close()
    assert "trial 1/10  feasible 1  best: params 1.5M, latency 0.2 ms  ~18s left" in capsys.readouterr().err


def test_a_search_on_a_terminal_shows_live_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # the command draws it while trials finish (not only a unit of the display): stderr is a terminal
    import builtins

    real_import = builtins.__import__

    def no_rich(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.startswith("rich"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rich)  # the plain line: one redrawn line per update
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr("metagen_compiler.search.command.time.monotonic", iter(range(10, 10**6, 10)).__next__)
    spec, out = _spec(tmp_path, LOOSE.replace("params <= 2M", "params <= 50M").replace("< 1ms", "< 1s")), tmp_path / "out"
    assert _search(spec, out, "--trials", "4", "--seed", "0") == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.split("\r") if ln.startswith("trial ")]
    assert [ln.split()[1] for ln in lines] == ["1/4", "2/4", "3/4", "4/4"], err
    assert all("best: params " in ln and "latency " in ln and "s left" in ln for ln in lines)
    assert "search small_lm: 4 trials" in err


def test_each_trial_compiles_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no subprocess per trial: starting one fails the test
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a subprocess was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(os, "posix_spawn", refuse)
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    assert _search(spec, out, "--trials", "5", "--quiet") == 0
    assert len(_trials(out)) == 5


def test_a_dead_workers_trial_is_run_again_with_its_values(tmp_path: Path) -> None:
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    assert _search(spec, out, "--trials", "3", "--quiet") == 0
    study = optuna.load_study(study_name="small_lm", storage=f"sqlite:///{out / 'study.db'}")
    cut = study.ask()  # a worker that died in the middle of its trial: RUNNING, with values, its process gone
    cut.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    values = {"layers": cut.suggest_int("layers", 1, 8), "d_model": cut.suggest_int("d_model", 64, 512, step=32)}
    assert _search(spec, out, "--trials", "5", "--quiet") == 0
    trials = {t["trial"]: t for t in _trials(out)}
    assert trials[cut.number]["status"] == "interrupted" and trials[cut.number]["values"] == values
    retry = [t for t in trials.values() if t.get("retry_of") == cut.number]
    assert len(retry) == 1 and retry[0]["values"] == values and retry[0]["status"] in ("ok", "infeasible")
    assert len([t for t in trials.values() if t["status"] != "interrupted"]) == 5


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_one_study(tmp_path: Path, kind: str) -> None:
    spec = _spec(tmp_path, LOOSE)
    storage = f"journal:{tmp_path / 'study.log'}" if kind == "journal" else f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [subprocess.Popen([sys.executable, "-m", "metagen_compiler.cli", "search", str(spec),
                               "-o", str(tmp_path / f"out{i}"), "--trials", "24", "--storage", storage,
                               "--study", "shared", "--seed", str(i), "--backend", "none", "--no-plots"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = _trials(tmp_path / "out1")
    numbers = [t["trial"] for t in trials]
    assert numbers == sorted(set(numbers))
    done = [t for t in trials if t["status"] in ("ok", "infeasible", "failed")]
    assert 24 <= len(done) <= 26  # each worker may finish the trial it had started when the budget was reached
    assert len({t["worker"] for t in trials}) == 2  # both took part


# ---------------------------------------------------------------- usage
@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "--trials must be 1 or more"),
    (["--objective", "accuracy:max"], "unknown objective `accuracy`"),
    (["--objective", "params:up"], "the direction is min or max"),
    (["--objective", "params:min", "--objective", "params:max"], "an objective is given twice"),
    (["--data", "corpus/"], "--data `corpus/` does not exist"),
    (["--timeout", "-1"], "--timeout must be a positive number"),
    (["--backend", "tex"], "unknown backend `tex`"),
    (["--device", "abacus"], "unknown device `abacus`"),
    (["--set", "layers"], "--set takes NAME=VALUE"),
])
def test_bad_arguments_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                        message: str) -> None:
    spec = _spec(tmp_path, LOOSE)
    assert cli_main(["search", str(spec), "-o", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "usage: metagenc search" in err and "Traceback" not in err


@pytest.mark.parametrize("url", ["nosuchdb://x", "sqlite:///TMP/file/x.db", "journal:TMP/file/x.log",
                                 "mysql://u:secret@h/db"])
def test_a_storage_that_cannot_be_opened_is_an_error_without_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str) -> None:
    (tmp_path / "file").write_text("a file where the storage's folder should be")
    url = url.replace("TMP", str(tmp_path))
    assert cli_main(["search", str(_spec(tmp_path, LOOSE)), "-o", str(tmp_path / "o"), "--storage", url]) == 1
    err = capsys.readouterr().err
    assert "error: cannot open the storage" in err and "Traceback" not in err and "secret" not in err


def test_a_spec_that_cannot_be_read_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nosuch.msl"
    assert cli_main(["search", str(missing), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"metagenc search: error: cannot read `{missing}`" in err and "Traceback" not in err


def test_unknown_sampler_is_an_argparse_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        cli_main(["search", str(_spec(tmp_path, LOOSE)), "--sampler", "grid"])
    assert e.value.code == 2


def test_a_spec_without_open_dimensions_or_with_errors_is_an_input_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["search", str(ROOT / "examples" / "gpt2.msl"), "-o", str(tmp_path / "o")]) == 1
    assert "has no open dimension" in capsys.readouterr().err
    bad = _spec(tmp_path, LOOSE.replace("task generation", "task genration"), "bad.msl")
    assert cli_main(["search", str(bad), "-o", str(tmp_path / "o")]) == 1
    assert "error[E203]" in capsys.readouterr().err
    assert cli_main(["search", str(tmp_path / "missing.msl")]) == 1
    body = LOOSE.split("import std.transformer\n", 1)[1]
    two = _spec(tmp_path, LOOSE + body.replace("model small_lm", "model other_lm"), "two.msl")
    assert cli_main(["search", str(two), "-o", str(tmp_path / "o")]) == 1
    assert "has 2 models (small_lm, other_lm); choose one with --model NAME" in capsys.readouterr().err
    assert cli_main(["search", str(two), "-o", str(tmp_path / "o"), "--model", "other_lm", "--trials", "2",
                     "--backend", "none", "--no-plots", "--quiet"]) == 0
    assert json.loads((tmp_path / "o" / "pareto.json").read_text())["model"] == "other_lm"


@pytest.mark.parametrize("old, new, code", [
    ("? multiple_of 32 in 64..512", "? multiple_of 32 in 1..20", "E401"),  # no multiple of 32 in 1..20
    ("? multiple_of 32 in 64..512", "? multiple_of 0 in 64..512", "E205"),
])
def test_a_hole_without_a_domain_is_a_diagnostic_at_the_hole(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             old: str, new: str, code: str) -> None:
    spec = _spec(tmp_path, LOOSE.replace(old, new))
    assert cli_main(["search", str(spec), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"{spec}:16:" in err and f"error[{code}]" in err and "Traceback" not in err


def test_outputs_that_cannot_be_written_are_an_error_without_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, LOOSE)
    (tmp_path / "afile").write_text("a file where the output folder should be")
    assert _search(spec, tmp_path / "afile", "--trials", "2") == 1
    err = capsys.readouterr().err
    assert "error: cannot create the output folder" in err and "Traceback" not in err
    (tmp_path / "out" / "pareto.json").mkdir(parents=True)  # a folder where pareto.json goes
    assert _search(spec, tmp_path / "out", "--trials", "2") == 1
    err = capsys.readouterr().err
    assert "error: cannot write" in err and "pareto.json" in err and "Traceback" not in err


def test_trials_and_pareto_are_strict_json_whatever_the_metrics(tmp_path: Path) -> None:
    from metagen_compiler.search.engine import ObjectiveSpec
    from metagen_compiler.search.outputs import write_trials

    # an evaluator's metric can be infinite (a diverged training run): JSON has no such number
    t = optuna.trial.create_trial(values=[1.0], params={"layers": 2},
                                  distributions={"layers": optuna.distributions.IntDistribution(1, 8)},
                                  user_attrs={"result": {"status": "ok", "metrics": {"val_loss": float("inf")}}})
    text = write_trials(tmp_path, [t], [ObjectiveSpec("params", "maximize")]).read_text()

    def no_constant(c: str) -> None:
        raise AssertionError(f"{c} is not JSON")

    assert json.loads(text, parse_constant=no_constant)["metrics"] == {"val_loss": "inf"}


def test_a_trial_whose_heartbeat_stopped_is_run_again(tmp_path: Path) -> None:
    # on a database server a worker elsewhere is known dead by its heartbeat: its RUNNING trial is failed
    # (interrupted) and its values queued again, though its worker's process id is alive on this machine
    from metagen_compiler.search.engine import requeue_interrupted, trial_status

    with pytest.warns(optuna.exceptions.ExperimentalWarning):  # the search's storages silence it (warnings: errors)
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="hb")
    with pytest.warns(UserWarning, match="Heartbeat"):  # a worker that died: its trial had begun in optimize()
        cut = study.ask()
    cut.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    cut.suggest_int("layers", 1, 8)
    storage.record_heartbeat(cut._trial_id)
    time.sleep(2.5)
    assert requeue_interrupted(study) == [cut.number]
    trials = study.get_trials(deepcopy=False)
    assert trial_status(trials[cut.number]) == "interrupted"
    queued = trials[-1]  # its values, queued to run again
    assert queued.state == optuna.trial.TrialState.WAITING and queued.user_attrs["retry_of"] == cut.number
    assert queued.system_attrs["fixed_params"] == cut.params


def test_compiling_a_spec_never_imports_the_search(tmp_path: Path) -> None:
    # `metagenc FILE` compiles a spec with `?` through the solver: optuna, SQLAlchemy and matplotlib stay out
    spec = _spec(tmp_path, LOOSE)
    code = (
        "import sys\n"
        "from metagen_compiler.cli import main\n"
        f"rc = main([{str(spec)!r}, '-o', {str(tmp_path / 'o')!r}])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'sqlalchemy', 'matplotlib'))\n"
        "print(rc, bad)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr


def test_hypervolume_2d() -> None:
    assert hypervolume([(0.0, 0.0)], (1.0, 1.0)) == 1.0
    assert hypervolume([(0.0, 0.5), (0.5, 0.0)], (1.0, 1.0)) == pytest.approx(0.75)
    assert hypervolume([(0.2, 0.2), (0.5, 0.5), (2.0, 0.0)], (1.0, 1.0)) == pytest.approx(0.64)
    assert hypervolume([], (1.0, 1.0)) == 0.0


# ---------------------------------------------------------------- PostgreSQL, a real server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").is_file():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.mark.slow
def test_two_workers_on_a_real_postgresql_server(tmp_path: Path) -> None:
    pytest.importorskip("psycopg2")
    pg = _pg_bin()
    if pg is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="metagen-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        os.chmod(root, 0o777)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    try:
        subprocess.run([*as_user, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, str(pg / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        spec = _spec(tmp_path, LOOSE)
        procs = [subprocess.Popen([sys.executable, "-m", "metagen_compiler.cli", "search", str(spec),
                                   "-o", str(tmp_path / f"out{i}"), "--trials", "20", "--storage", url,
                                   "--study", "pg", "--seed", str(i), "--backend", "none", "--no-plots"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        done = [t for t in _finished(url, "pg")]
        assert 20 <= len(done) <= 22
        assert len({t.user_attrs["worker"] for t in done}) == 2
    finally:
        subprocess.run([*as_user, str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       check=False, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- objectives from the spec, sampler, history, outputs
@pytest.mark.parametrize("metadata", [
    'metadata { search { objectives = ["params:min", "flops:max"] } }',
    "metadata { search { objectives { params = min; flops = max } } }",
])
def test_the_spec_names_the_objectives(tmp_path: Path, metadata: str) -> None:
    spec, out = _spec(tmp_path, LOOSE.replace("  architecture transformer.decoder", f"  {metadata}\n"
                                              "  architecture transformer.decoder")), tmp_path / "out"
    assert _search(spec, out, "--trials", "3", "--quiet") == 0
    assert _pareto(out)["objectives"] == [{"name": "params", "direction": "minimize"},
                                          {"name": "flops", "direction": "maximize"}]
    # the command line comes first
    assert _search(spec, tmp_path / "out2", "--trials", "3", "--quiet", "--objective", "latency:min") == 0
    assert [o["name"] for o in _pareto(tmp_path / "out2")["objectives"]] == ["latency"]


def test_a_training_objective_in_the_spec_is_left_out_of_an_estimate_only_search(tmp_path: Path) -> None:
    meta = 'metadata { search { objectives = ["val_perplexity:min", "latency:min"] } }'
    spec, out = _spec(tmp_path, LOOSE.replace("  architecture transformer.decoder",
                                              f"  {meta}\n  architecture transformer.decoder")), tmp_path / "out"
    assert _search(spec, out, "--trials", "2", "--quiet") == 0
    assert [o["name"] for o in _pareto(out)["objectives"]] == ["latency"]


def test_a_bad_objective_in_the_spec_is_a_diagnostic_at_the_entry(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    meta = 'metadata { search { objectives = ["params:up"] } }'
    spec = _spec(tmp_path, LOOSE.replace("  architecture transformer.decoder",
                                         f"  {meta}\n  architecture transformer.decoder"))
    assert _search(spec, tmp_path / "out", "--trials", "2") == 1
    err = capsys.readouterr().err
    line = LOOSE.split("\n").index("  architecture transformer.decoder {") + 1
    assert f"spec.msl:{line}:23: error[E203]: search objective: objective `params:up`: the direction is min or max" \
        in err and "^" in err and "Traceback" not in err


@pytest.mark.parametrize("objectives, trials, sampler", [
    (["params:max"], "2", "tpe"), (["params:max", "latency:min"], "2", "tpe"),
    (["params:max", "latency:min"], "500", "nsga2"),  # a budget of 500: the first few trials, then --timeout
    (["params:max", "latency:min"], "500+tight", "tpe")])  # the solver breaks the spec's latency bound (W002)
def test_auto_sampler_of_a_search(tmp_path: Path, objectives: list[str], trials: str, sampler: str) -> None:
    spec, out = _spec(tmp_path, FAST if trials.endswith("tight") else LOOSE), tmp_path / "out"
    trials = trials.removesuffix("+tight")
    assert _search(spec, out, "--trials", trials, "--timeout", "3", "--quiet",
                   *[f"--objective={o}" for o in objectives]) == 0
    assert json.loads((out / "search.json").read_text())["sampler"] == sampler


def test_auto_sampler_chooses_by_objectives_and_budget() -> None:
    # measured (docs/search.md, Samplers): TPE ahead of NSGA-II up to 300 trials, NSGA-II ahead from 500 on
    from metagen_compiler.search.engine import NSGA2_FROM_TRIALS, auto_sampler, make_sampler

    assert NSGA2_FROM_TRIALS == 500
    assert auto_sampler(1, 10) == auto_sampler(1, 10_000) == "tpe"  # one objective: TPE at any budget
    assert auto_sampler(2, 30) == auto_sampler(3, 499) == "tpe"
    assert auto_sampler(2, 500) == auto_sampler(3, 2000) == "nsga2"
    assert auto_sampler(2, 2000, tight=True) == "tpe"  # few feasible candidates: TPE stayed ahead
    assert isinstance(make_sampler("auto", 2, 0, 499), optuna.samplers.TPESampler)
    assert isinstance(make_sampler("auto", 2, 0, 500), optuna.samplers.NSGAIISampler)
    assert isinstance(make_sampler("nsga2", 2, 0, 30), optuna.samplers.NSGAIISampler)  # named: no choice


def test_the_solver_breaking_a_constraint_is_found_before_the_search() -> None:
    from metagen_compiler.search.engine import solver_breaks_a_constraint

    assert solver_breaks_a_constraint(SourceFile("fast.msl", FAST), Options())  # W002: 0.359 ms against 0.3 ms
    assert not solver_breaks_a_constraint(SourceFile("loose.msl", LOOSE), Options())
    assert not solver_breaks_a_constraint(SourceFile("fast.msl", FAST), Options(), (("layers", "1"),))


def test_history_records_searches_and_warm_start_runs_the_nearest_front_first(tmp_path: Path) -> None:
    import sqlite3

    history = tmp_path / "h.db"
    earlier = _spec(tmp_path, FAST, "earlier.msl")
    assert _search(earlier, tmp_path / "a", "--trials", "20", "--history", str(history), "--quiet") == 0
    front = {tuple(sorted(c["values"].items())) for c in _pareto(tmp_path / "a")["candidates"]}
    # an unrelated spec (another family) recorded later: not the nearest
    other = (ROOT / "examples" / "tabular_classifier.msl").read_text()
    assert _search(_spec(tmp_path, other, "tab.msl"), tmp_path / "b", "--trials", "5", "--history", str(history),
                   "--quiet") == 0
    with sqlite3.connect(history) as con:
        rows = con.execute("SELECT model, trials, features FROM searches ORDER BY id").fetchall()
    assert [(m, n) for m, n, _ in rows] == [("small_lm", 20), ("credit_default", 5)]
    feats = json.loads(rows[0][2])
    assert feats["family"] == "std.transformer.decoder" and feats["task"] == "generation"
    assert feats["inputs"] == ["text"] and {c["kind"] for c in feats["constraints"]} >= {"params", "latency"}
    # a similar spec (a looser latency bound): its first trials are the earlier front, each marked with its origin
    similar = _spec(tmp_path, SMALL.replace("LATENCY", "0.35ms"), "similar.msl")
    out = tmp_path / "c"
    assert _search(similar, out, "--trials", "12", "--history", str(history), "--warm-start", "3", "--quiet") == 0
    trials = _trials(out)
    warm = [t for t in trials if "warm_start" in t]
    assert len(warm) == min(3, len(front)) and [t["trial"] for t in warm] == list(range(len(warm)))
    assert all(t["warm_start"].startswith("small_lm/small_lm trial ") for t in warm)
    assert {tuple(sorted(t["values"].items())) for t in warm} <= front
    assert json.loads((out / "search.json").read_text())["warm_started"] == len(warm)
    # --no-history: nothing recorded
    assert _search(similar, tmp_path / "d", "--trials", "2", "--history", str(history), "--no-history",
                   "--quiet") == 0
    with sqlite3.connect(history) as con:
        assert con.execute("SELECT COUNT(*) FROM searches").fetchone()[0] == 3


def test_warm_start_without_history_starts_cold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    assert _search(spec, out, "--trials", "2", "--warm-start") == 0
    assert "warm start: 0 configurations from no earlier search" in capsys.readouterr().err
    assert not any("warm_start" in t for t in _trials(out))


def test_the_history_lives_in_the_users_cache_by_default(tmp_path: Path) -> None:
    spec = _spec(tmp_path, LOOSE)
    assert _search(spec, tmp_path / "out", "--trials", "2", "--quiet") == 0
    assert (tmp_path / "cache" / "metagen" / "history.db").is_file()  # $XDG_CACHE_HOME, set by the fixture


def test_search_json_importances_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    assert search_main([str(spec), "-o", str(out), "--trials", "16", "--backend", "none", "--quiet",
                        "--baseline", "random"]) == 0
    doc = json.loads((out / "search.json").read_text())
    assert doc["trials"] == 16 and sum(doc["status"].values()) == 16
    assert len(doc["hypervolume"]["curve"]) == 16 and len(doc["hypervolume"]["random_curve"]) == 16
    assert doc["hypervolume"]["final"] == max(doc["hypervolume"]["curve"])  # it never falls
    assert set(doc["importance"]) == {"params", "latency"}
    for imp in doc["importance"].values():
        assert set(imp) == {"layers", "d_model"} and abs(sum(imp.values()) - 1) < 1e-6
    for name in ("pareto", "hypervolume", "importance"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_candidates_paper_has_a_search_section_with_the_searchs_numbers(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from metagen_backends.latex.ledger import lookup

    spec, out = _spec(tmp_path, FAST), tmp_path / "out"
    assert search_main([str(spec), "-o", str(out), "--trials", "12", "--backend", "latex", "--quiet"]) == 0
    cand = _pareto(out)["candidates"][0]
    folder = out / cand["folder"]
    report = json.loads((folder / "report.json").read_text())
    assert report["search"]["this_trial"] == cand["trial"] and report["search"]["trials"] == 12
    main = (folder / "paper" / "main.tex").read_text()
    assert main.index("\\input{sections/search}") < main.index("\\input{sections/limitations}")
    section = (folder / "paper" / "sections" / "search.tex").read_text()
    assert "\\section{Architecture search}" in section
    for plot in ("pareto", "hypervolume", "importance"):  # the three plots, as figures of the paper
        assert f"figures/search_{plot}.png" in section
        assert (folder / "paper" / "figures" / f"search_{plot}.png").read_bytes()[:4] == b"\x89PNG"
    # every number the section prints is in report.json, where the provenance says
    numbers = json.loads((folder / "paper" / "provenance.json").read_text())["numbers"]
    searched = [n for n in numbers if n["key"].startswith("search.")]
    assert {"search.trials", "search.hypervolume.final"} <= {n["key"] for n in searched}
    for n in searched:
        assert lookup(report, n["key"]) == n["value"]
        assert f"\\mgnum[{n['id']}]" in section


def test_history_distance_orders_specs_by_likeness() -> None:
    from metagen_compiler.search.history import distance

    a = {"family": "std.transformer.decoder", "task": "generation", "inputs": ["text"], "outputs": ["text"],
         "dims": {"layers": [1, 8, 1], "d_model": [64, 512, 32]},
         "constraints": [{"kind": "params", "bound": 2e6, "device": None},
                         {"kind": "latency", "bound": 3e-4, "device": "consumer_gpu"}], "data": {"bytes": 35_000}}
    looser = {**a, "constraints": [a["constraints"][0], {**a["constraints"][1], "bound": 3.5e-4}]}
    bigger = {**a, "constraints": [{**a["constraints"][0], "bound": 2e8}, a["constraints"][1]]}
    more_data = {**a, "data": {"bytes": 35_000_000}}
    other_family = {**a, "family": "std.ssm.s4d"}
    assert distance(a, a) == 0 and distance(a, looser) == distance(looser, a)
    assert 0 < distance(a, looser) < distance(a, more_data) == 1.0 < distance(a, bigger) == 2.0
    assert distance(a, other_family) == 4.0


# ---------------------------------------------------------------- the Pareto pruner (search/pruning.py)
def _pruning_study(pruner: optuna.pruners.BasePruner, runs: list[tuple[dict[int, float], list[float]]],
                   direction: str = "minimize") -> optuna.Study:
    """A pruning study with complete runs: (intermediate values {step: metric}, costs, lower is better)."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    for i, (curve, costs) in enumerate(runs):
        study.add_trial(optuna.trial.create_trial(value=curve[max(curve)], intermediate_values=curve,
                                                  user_attrs={"costs": costs, "trial": 10 + i}))
    return study


def _report(study: optuna.Study, curve: dict[int, float], costs: list[float]) -> bool:
    t = study.ask()
    t.set_user_attr("costs", costs)
    for step, v in curve.items():
        t.report(v, step)
    prune = t.should_prune()
    study.tell(t, state=optuna.trial.TrialState.FAIL)  # not a run the next report is compared with
    return prune


def test_pareto_pruner_stops_a_run_that_others_dominate_and_keeps_a_cheaper_one() -> None:
    from metagen_compiler.search.pruning import ParetoPruner

    # three complete runs of cost (latency, -params) = (2.0, 5.0): loss 0.3 at step 20
    done = [({10: 0.6, 20: 0.3}, [2.0, 5.0]) for _ in range(3)]
    pruner = ParetoPruner(min_dominators=2, n_startup_trials=3, n_warmup_steps=10)
    study = _pruning_study(pruner, done)
    assert _report(study, {10: 0.9, 20: 0.8}, [2.0, 5.0])  # as costly, worse loss: dominated by all three
    assert pruner.last == [10, 11, 12]  # the main study's numbers of the runs that dominate it
    assert _report(study, {10: 0.9, 20: 0.8}, [3.0, 6.0])  # costlier on both and worse: dominated
    assert not _report(study, {10: 0.9, 20: 0.8}, [1.0, 5.0])  # cheaper (latency) with a worse loss: may be on the front
    assert not _report(study, {10: 0.9, 20: 0.8}, [2.0, 4.0])  # cheaper on the second cost
    assert not _report(study, {10: 0.9, 20: 0.2}, [3.0, 6.0])  # costlier but a better loss
    assert not _report(study, {10: 0.9, 20: 0.3}, [2.0, 5.0])  # equal on everything: nobody is strictly better
    assert not _report(study, {10: 0.9}, [9.0, 9.0])  # the first evaluation is the warm-up


def test_pareto_pruner_needs_enough_dominators_and_started_runs() -> None:
    from metagen_compiler.search.pruning import ParetoPruner

    runs = [({10: 0.6, 20: 0.3}, [2.0]), ({10: 0.6, 20: 0.3}, [0.5]), ({10: 0.6, 20: 0.9}, [0.1])]
    # one run (cost 0.5, loss 0.3) dominates (cost 1.0, loss 0.5); the costly one and the lossy one do not
    assert not _report(_pruning_study(ParetoPruner(min_dominators=2), runs), {20: 0.5}, [1.0])
    assert _report(_pruning_study(ParetoPruner(min_dominators=1), runs), {20: 0.5}, [1.0])
    assert not _report(_pruning_study(ParetoPruner(min_dominators=1, n_startup_trials=4), runs), {20: 0.5}, [1.0])
    # a maximised metric (accuracy): higher is better
    up = [({20: 0.9}, [1.0]), ({20: 0.95}, [1.0])]
    assert _report(_pruning_study(ParetoPruner(min_dominators=2, n_startup_trials=2), up, "maximize"), {20: 0.8},
                   [1.0])
    assert not _report(_pruning_study(ParetoPruner(min_dominators=2, n_startup_trials=2), up, "maximize"),
                       {20: 0.92}, [1.0])
    # a run that reports at another step is not compared; a running one at the same step is
    study = _pruning_study(ParetoPruner(min_dominators=1, n_startup_trials=1), [({10: 0.1, 30: 0.1}, [0.1])])
    assert not _report(study, {20: 0.5}, [1.0])
    running = study.ask()
    running.set_user_attr("costs", [0.1])
    running.report(0.2, 20)
    assert _report(study, {20: 0.5}, [1.0])
    with pytest.raises(ValueError, match="min_dominators must be 1 or more"):
        ParetoPruner(min_dominators=0)


@pytest.mark.parametrize("objectives, pruner", [
    (["val_loss"], "median"), (["val_loss", "latency"], "pareto"), (["val_loss", "params", "latency"], "pareto"),
    (["val_loss", "val_accuracy"], "none"), (["val_loss", "train_seconds"], "none"), (["params", "latency"], "none"),
    (["latency"], "none")])
def test_auto_pruner_choice(objectives: list[str], pruner: str) -> None:
    from metagen_compiler.search.training import auto_pruner, training_metrics

    assert auto_pruner(objectives, training_metrics("classification")) == pruner


def test_ctrl_c_inside_optunas_tell_is_an_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # Ctrl-C while Optuna records a trial: its `finally` then raises UnboundLocalError (optuna 5.1, _optimize.py), an
    # error whose context is the interrupt: the search exits 130 as for any Ctrl-C, not with a traceback
    from optuna.study import _optimize

    calls = {"n": 0}
    real = _optimize._tell_with_warning

    def tell(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_optimize, "_tell_with_warning", tell)
    spec, out = _spec(tmp_path, LOOSE), tmp_path / "out"
    assert _search(spec, out, "--trials", "10") == 130
    err = capsys.readouterr().err
    assert "interrupted after 2 finished trials" in err and "Traceback" not in err


def test_the_papers_search_section_names_the_pruner() -> None:
    from metagen_backends.latex.sections_search import _pruner_text

    assert _pruner_text({"pruner": "none", "watch": "val_loss"}) == "no pruner ran. "
    assert "Optuna's" in _pruner_text({"pruner": "median", "watch": "val_loss"})
    pareto = _pruner_text({"pruner": "pareto", "watch": "val_loss"})
    assert "Optuna" not in pareto and "dominated" in pareto and "cost objectives" in pareto
