"""`metagenc search --data`: prototype training as an objective, pruning, failed and diverging runs
(metagen_compiler/search/training.py, docs/search.md). Real data: scikit-learn's breast-cancer table (569 rows,
30 features), trained by the generated train.py in process for a few steps a trial."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import ROOT
from training_helpers import one_thread, write_cancer

from metagen_compiler.search.command import main as search_main

pytest.importorskip("sklearn")
pytest.importorskip("torch")

# credit_default with a smaller space: every candidate trains in well under a second
SPEC = (ROOT / "examples" / "tabular_classifier.msl").read_text().replace(
    "hidden = ? multiple_of 32 in 64..1024", "hidden = ? multiple_of 32 in 32..256").replace(
    "layers = ? in 1..6", "layers = ? in 1..3")


@pytest.fixture(autouse=True)
def _history_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


_one_thread = pytest.fixture(autouse=True)(one_thread)  # as the other training tests


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cancer(tmp_path_factory.mktemp("data") / "cancer.csv")[0]


def _run(tmp_path: Path, cancer: Path, *extra: str, train_args: str = "--target diagnosis") -> tuple[int, Path]:
    spec = tmp_path / "credit.msl"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    rc = search_main([str(spec), "-o", str(out), "--data", str(cancer), "--train-args", train_args,
                      "--backend", "none", "--no-plots", "--quiet", *extra])
    return rc, out


def _trials(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


def test_each_candidate_is_trained_and_its_validation_metric_is_an_objective(tmp_path: Path, cancer: Path) -> None:
    rc, out = _run(tmp_path, cancer, "--trials", "4", "--train-steps", "20", "--eval-every", "10", "--pruner", "none")
    assert rc == 0
    trials = _trials(out)
    assert len(trials) == 4 and all(t["status"] == "ok" for t in trials), trials
    for t in trials:
        run = out / "trials" / "credit_default" / f"trial_{t['trial']:04d}" / "runs" / "proto"
        final = json.loads((run / "eval_val.json").read_text())
        assert final["step"] == 20 and not final["synthetic"]
        # the trial's metrics are the run's own validation metrics, as train.py wrote them
        assert t["metrics"]["val_loss"] == final["metrics"]["loss"]
        assert t["metrics"]["val_accuracy"] == final["metrics"]["accuracy"]
        assert t["objectives"] == {"val_accuracy": final["metrics"]["accuracy"], "latency": t["metrics"]["latency"]}
        assert 0.5 < t["metrics"]["val_accuracy"] <= 1.0 and t["metrics"]["train_seconds"] > 0
        assert not (run / "last").exists()  # the prototype's checkpoint is not kept
        # its model is the candidate's: the width the trial chose
        assert json.loads((run / "config.json").read_text())["model"]["hidden"] == t["values"]["hidden"]
    doc = json.loads((out / "pareto.json").read_text())
    assert [o["name"] for o in doc["objectives"]] == ["val_accuracy", "latency"]
    assert doc["candidates"] and all("val_accuracy" in c["objectives"] for c in doc["candidates"])
    summary = json.loads((out / "search.json").read_text())
    assert summary["training"]["steps"] == 20 and summary["timing"]["train_s_mean"] > 0
    assert summary["sampler"] == "tpe"  # auto, two objectives, a budget under 500 trials


LM = """msl 1
import std.transformer

model story_lm {
  modality text -> text
  task generation
  objective autoregressive
  constraints { params <= 400k; context = 32; latency < 0.7ms on cpu }
  architecture transformer.decoder {
    vocab = 384; layers = ? in 1..2; d_model = ? multiple_of 16 in 16..64; heads = d_model / 16
    norm = rmsnorm; position = rope; mlp = swiglu; bias = false; tied = true
  }
}
"""


def test_a_language_model_is_searched_on_a_text_corpus(tmp_path: Path) -> None:
    # the first flow (`metagenc search tiny_story.msl --data corpus/`) on a small decoder: the default
    # objectives of generation are the validation perplexity and the latency
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "a", "dog", "ran", "to", "the", "red", "door"]
    for k in range(10):  # a train/val/test split of files
        lines = (" ".join(words[i % 7:] + words[:i % 7]) for i in range(k, 60))
        (corpus / f"story{k}.txt").write_text("\n".join(lines))
    spec = tmp_path / "story_lm.msl"
    spec.write_text(LM)
    out = tmp_path / "out"
    assert search_main([str(spec), "-o", str(out), "--data", str(corpus), "--trials", "3", "--train-steps", "6",
                        "--eval-every", "3", "--train-args", "--batch-size 4", "--backend", "pytorch", "--no-plots",
                        "--quiet"]) == 0
    trials = _trials(out)
    assert len(trials) == 3 and {t["status"] for t in trials} <= {"ok", "infeasible"}
    trained = [t for t in trials if t["status"] == "ok"]
    assert trained and all(t["objectives"].keys() == {"val_perplexity", "latency"} for t in trained)
    assert all(1 < t["metrics"]["val_perplexity"] < 1000 and t["metrics"]["train_steps"] == 6 for t in trained)
    summary = json.loads((out / "search.json").read_text())
    assert summary["training"]["pruner"] == "pareto" and summary["training"]["watch"] == "val_perplexity"
    for c in json.loads((out / "pareto.json").read_text())["candidates"]:  # each a model folder with its filled spec
        assert (out / c["folder"] / "story_lm.msl").is_file() and (out / c["folder"] / "model.py").is_file()


@pytest.mark.parametrize("objectives, pruner", [
    (["val_loss:min"], "median"), (["val_loss:min", "latency:min"], "pareto"), ([], "pareto"),
    (["val_loss:min", "val_accuracy:max"], "none")])
def test_auto_pruner_is_median_for_one_objective_and_pareto_for_cost_objectives(tmp_path: Path, cancer: Path,
                                                                               objectives: list[str], pruner: str) -> None:
    # the median pruner reads one metric: in a search of several objectives it would stop the cheap end of the front;
    # the Pareto pruner reads the cost objectives too. Two training metrics: a pruner would watch only one
    rc, out = _run(tmp_path, cancer, "--trials", "1", "--train-steps", "4", *[f"--objective={o}" for o in objectives])
    assert rc == 0
    assert json.loads((out / "search.json").read_text())["training"]["pruner"] == pruner


def test_a_hopeless_trial_is_pruned_and_keeps_its_reason(tmp_path: Path, cancer: Path) -> None:
    # three earlier runs with a perfect validation loss at every evaluation: the median pruner must stop the next
    out = tmp_path / "out"
    out.mkdir()
    companion = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name="credit_default:pruning",
                                    direction="minimize")
    for _ in range(3):
        companion.add_trial(optuna.trial.create_trial(value=1e-9, intermediate_values={10: 1e-9, 20: 1e-9, 30: 1e-9}))
    # a budget far past the pruning point: the search polls the run's metrics, so the stop lands a few steps late
    rc, out = _run(tmp_path, cancer, "--trials", "1", "--train-steps", "3000", "--eval-every", "10",
                   "--objective", "val_loss:min", "--objective", "params:min", "--pruner", "median")
    assert rc == 0
    [t] = _trials(out)
    assert t["status"] == "pruned"
    # not at the first evaluation (warm-up), at the second
    assert t["reason"].startswith("pruned at step 20: val_loss ") and t["reason"].endswith("(MedianPruner)")
    assert [s for s, _ in t["curve"]] == [10, 20] and t["metrics"]["val_loss"] == t["curve"][-1][1]
    run = out / "trials" / "credit_default" / "trial_0000" / "runs" / "proto"
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"]
    assert 20 <= max(steps) < 3000  # stopped: the run never reached its budget
    assert not (run / "eval_val.json").exists()
    pruning = optuna.load_study(study_name="credit_default:pruning", storage=f"sqlite:///{out / 'study.db'}")
    assert pruning.trials[-1].state == optuna.trial.TrialState.PRUNED
    assert pruning.trials[-1].user_attrs["trial"] == 0


@pytest.mark.parametrize("cost, pruned", [(1.0, True), (1e12, False)])
def test_the_pareto_pruner_stops_a_dominated_run_and_not_a_cheaper_one(tmp_path: Path, cancer: Path, cost: float,
                                                                        pruned: bool) -> None:
    # three earlier runs with a perfect validation loss: at cost 1 parameter (params:min) they dominate any candidate;
    # at 10^12 parameters every candidate is cheaper, so none of them dominates it: it trains to the end
    out = tmp_path / "out"
    out.mkdir()
    companion = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name="credit_default:pruning",
                                    direction="minimize")
    for i in range(3):
        companion.add_trial(optuna.trial.create_trial(value=1e-9, intermediate_values={10: 1e-9, 20: 1e-9, 30: 1e-9},
                                                      user_attrs={"costs": [cost], "trial": 100 + i}))
    rc, out = _run(tmp_path, cancer, "--trials", "1", "--train-steps", "30" if not pruned else "3000",
                   "--eval-every", "10", "--objective", "val_loss:min", "--objective", "params:min")
    assert rc == 0
    assert json.loads((out / "search.json").read_text())["training"]["pruner"] == "pareto"  # auto
    [t] = _trials(out)
    pruning = optuna.load_study(study_name="credit_default:pruning", storage=f"sqlite:///{out / 'study.db'}")
    assert pruning.trials[-1].user_attrs["costs"] == [t["metrics"]["params"]]  # its cost objective, known exactly
    if pruned:
        assert t["status"] == "pruned"
        assert t["reason"].startswith("pruned at step 20: val_loss ")  # not at the first evaluation (warm-up)
        assert t["reason"].endswith("(ParetoPruner: dominated by trials 100, 101, 102)")
    else:
        assert t["status"] == "ok" and t["metrics"]["train_steps"] == 30


def test_a_single_objective_search_prunes_with_successive_halving(tmp_path: Path, cancer: Path) -> None:
    rc, out = _run(tmp_path, cancer, "--trials", "6", "--train-steps", "30", "--eval-every", "5",
                   "--objective", "val_loss:min", "--pruner", "halving", "--seed", "3")
    assert rc == 0
    trials = _trials(out)
    assert json.loads((out / "search.json").read_text())["sampler"] == "tpe"  # auto, one objective
    pruned = [t for t in trials if t["status"] == "pruned"]
    assert pruned and all(t["reason"].endswith("(SuccessiveHalvingPruner)") for t in pruned)
    assert all(t["status"] in ("ok", "pruned") for t in trials)


@pytest.mark.parametrize("train_args, reason", [
    ("--target diagnosis --lr 1e30 --grad-clip 0", "diverged: step "),  # the loss goes to nan: train.py says so
    ("--target no_such_column", "training failed: "),
])
def test_failed_and_diverging_runs_are_recorded_with_their_reason(tmp_path: Path, cancer: Path, train_args: str,
                                                                   reason: str) -> None:
    rc, out = _run(tmp_path, cancer, "--trials", "2", "--train-steps", "10", train_args=train_args)
    assert rc == 0
    trials = _trials(out)
    assert len(trials) == 2
    for t in trials:
        assert t["status"] == "failed" and t["reason"].startswith(reason), t
    if "no_such_column" in train_args:
        assert "no_such_column" in trials[0]["reason"]
    else:
        assert "the loss is nan" in trials[0]["reason"]
    assert json.loads((out / "pareto.json").read_text())["candidates"] == []


def test_a_time_budget_stops_training_and_the_last_evaluation_counts(tmp_path: Path, cancer: Path) -> None:
    # the clock starts when training does (the data and the model ready): a loaded machine still evaluates in time
    rc, out = _run(tmp_path, cancer, "--trials", "1", "--train-steps", "1000000", "--train-seconds", "3",
                   "--eval-every", "1", "--pruner", "none", "--objective", "val_loss:min")
    assert rc == 0
    [t] = _trials(out)
    assert t["status"] == "ok" and t["metrics"]["stopped_by_time"] == 1.0
    assert 1 <= t["metrics"]["train_steps"] < 1000000 and t["metrics"]["train_seconds"] < 30
    run = out / "trials" / "credit_default" / "trial_0000" / "runs" / "proto"
    vals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "val"]
    assert t["metrics"]["val_loss"] == vals[-1]["loss"] and t["metrics"]["train_steps"] == vals[-1]["step"]


@pytest.mark.parametrize("args, message", [
    (["--train-args", "--nosuch 1"], "--train-args: unrecognized arguments: --nosuch 1"),
    (["--train-args", "--steps 5"], "--train-args: --steps is set by the search"),
    (["--train-args", "'--lr"], "--train-args: No closing quotation"),
    (["--estimate-only"], "--estimate-only and --data exclude each other"),
    (["--train-steps", "0"], "--train-steps must be 1 or more"),
    (["--train-seconds", "0"], "--train-seconds must be a positive number of seconds"),
    (["--train-seconds", "inf"], "--train-seconds must be a positive number of seconds"),
    (["--eval-every", "0"], "--eval-every must be 1 or more"),
    (["--warm-start", "-2"], "--warm-start takes a number of configurations"),
    (["--objective", "val_nosuch:min"], "unknown objective `val_nosuch`"),
])
def test_bad_training_arguments_are_usage_errors(tmp_path: Path, cancer: Path, capsys: pytest.CaptureFixture[str],
                                                 args: list[str], message: str) -> None:
    spec = tmp_path / "credit.msl"
    spec.write_text(SPEC)
    rc = search_main([str(spec), "-o", str(tmp_path / "out"), "--data", str(cancer), *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_data_that_does_not_exist_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "credit.msl"
    spec.write_text(SPEC)
    assert search_main([str(spec), "--data", str(tmp_path / "nope.csv")]) == 2
    assert "--data `" in capsys.readouterr().err


@pytest.mark.slow  # two processes that import torch and train: over a minute on a shared 2-core machine
def test_a_search_killed_during_training_resumes_and_runs_the_trial_again(tmp_path: Path, cancer: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = tmp_path / "credit.msl"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    base = [sys.executable, "-m", "metagen_compiler.cli", "search", str(spec), "-o", str(out), "--data", str(cancer),
            "--train-args", "--target diagnosis", "--backend", "none", "--no-plots", "--quiet", "--trials", "2",
            "--objective", "val_loss:min", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*base, "--train-steps", "1000000", "--eval-every", "5"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "trials" / "credit_default" / "trial_0000" / "runs" / "proto" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # kill it in the middle of the first training run
        if log.is_file() and any('"split": "val"' in ln and '"step": 0' not in ln for ln in log.read_text().splitlines()):
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.stderr is not None
    proc.stderr.close()
    # the same search again (a smaller training budget is not another search): the cut trial runs again
    r = subprocess.run([*base, "--train-steps", "10"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                       check=False)
    assert r.returncode == 0, r.stderr
    trials = _trials(out)
    assert trials[0]["status"] == "interrupted"
    retry = [t for t in trials if t.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0]["values"] == trials[0]["values"] and retry[0]["status"] == "ok"
    assert sum(t["status"] == "ok" for t in trials) == 2
    pruning = optuna.load_study(study_name="credit_default:pruning", storage=f"sqlite:///{out / 'study.db'}")
    states = {t.user_attrs["trial"]: t.state for t in pruning.trials}
    assert states[0] == optuna.trial.TrialState.FAIL  # the dead run's companion: failed, not left running
    assert all(s == optuna.trial.TrialState.COMPLETE for n, s in states.items() if n != 0)


def test_a_run_stopped_while_it_holds_an_unclosed_resource_is_stopped_quietly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stop lands between any two Python operations, also inside a `with` that has opened a resource and not
    entered it yet (a checkpoint rmtree's os.scandir, seen once in the full suite): the run is stopped and what it
    dropped unclosed raises no ResourceWarning (the suite turns one into an error)."""
    import os
    import time

    from metagen_backends.pytorch.training import train

    from metagen_compiler.search.training import run_training

    metrics = tmp_path / "metrics.jsonl"

    def holding_a_scandir(argv: list[str]) -> int:
        metrics.write_text(json.dumps({"split": "val", "step": 1, "loss": 1.0}) + "\n")
        it = os.scandir(tmp_path)  # opened, never closed: as an interrupted `with os.scandir(...)` leaves it
        while True:
            time.sleep(0.01)
            assert it is not None

    monkeypatch.setattr(train, "main", holding_a_scandir)
    run, why = run_training([], metrics, tmp_path / "log.txt", lambda step, values: "pruned", None)
    assert why == "pruned" and run.stopped and run.error is None
