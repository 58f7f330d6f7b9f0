"""Training runtime (backends/pytorch/training): compiled models train, resume and evaluate on real data.

Real data only: a GPL text that Debian's base-files ships, scikit-learn's bundled digits (as PNG folders)
and breast-cancer table (as CSV). Small Config overrides (--set) keep each run to seconds.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from conftest import ROOT, load_module
from metagen_backends.pytorch.training import RUNTIME_FILES, data, loop, runtime_files
from metagen_backends.pytorch.training import evaluate as evaluate_script
from metagen_backends.pytorch.training import train as train_script
from training_helpers import (
    GPL,
    NO_METAGEN,
    ONE_THREAD,
    TINY_LM,
    model_folder,
    one_thread,
    records,
    run_script,
    unigram_perplexity,
    write_cancer,
    write_csv,
    write_digits,
)

TINY_RESNET = ["--set", "image_size=32", "--set", "channels=1", "--set", "width=8", "--set", "depths=1,1,1,1",
               "--set", "expansion=2", "--set", "num_classes=10"]


_one_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: model_folder(root, name) for name in ("tiny_story", "tabular_classifier", "resnet50")}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's 1,797 handwritten digits (8x8, 0..16) as PNGs in one folder per class."""
    pytest.importorskip("sklearn.datasets")
    pytest.importorskip("PIL.Image")
    return write_digits(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's breast-cancer table (569 rows, 30 numeric features, 2 classes) as a CSV."""
    pytest.importorskip("sklearn.datasets")
    return write_cancer(tmp_path_factory.mktemp("cancer") / "cancer.csv")[0]


def _train(folder: Path, *args: str) -> int:
    return train_script.main(["--model", str(folder / "model.py"), *args])


# ------------------------------------------------------------------------------------ the copied files


def test_backend_copies_the_runtime_verbatim(models: dict[str, Path]) -> None:
    files = runtime_files()
    assert sorted(files) == sorted(RUNTIME_FILES)
    for name, text in files.items():
        assert (models["tiny_story"] / name).read_text() == text
        assert text == (ROOT / "backends" / "pytorch" / "training" / name).read_text()


def test_runtime_imports_no_metagen() -> None:
    allowed = {"torch", "safetensors", "tokenizers", "PIL", "soundfile", "gymnasium", "datasets", "data", "data_vision",
               "data_graph", "loop", "rl", "split_metrics", "__future__"}
    for name, text in runtime_files().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            for root in roots:
                assert root in allowed or root in sys.stdlib_module_names, f"{name} imports {root}"


# ------------------------------------------------------------------------------------------ the pieces


def test_weight_decay_skips_norms_biases_and_embeddings(models: dict[str, Path]) -> None:
    mod = load_module(models["tiny_story"] / "model.py", "tiny_story_groups")
    model = mod.build_model(mod.Config(vocab=64, d_model=32, heads=2, layers=1))
    decay, no_decay = loop.param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    no = {id(p) for p in no_decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert id(model.encoder.wte.weight) in no  # the embedding (tied to the LM head)
    assert all(id(p) in no for m in model.modules() if isinstance(m, torch.nn.RMSNorm) for p in m.parameters())
    assert {names[id(p)] for p in decay["params"]} == {n for n, p in model.named_parameters()
                                                       if p.ndim == 2 and "wte" not in n}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_cosine() -> None:
    f = [loop.lr_factor(s, 10, 110, 0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))


def test_seeded_split_is_disjoint_complete_and_stable() -> None:
    ids = [f"i{k}" for k in range(100)]
    a, b = data.split_ids(ids, seed=3), data.split_ids(ids, seed=3)
    assert a == b and a != data.split_ids(ids, seed=4)
    assert [len(a[s]) for s in ("train", "val", "test")] == [80, 10, 10]
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(ids)


def test_two_processes_take_the_items_of_one_process_batch() -> None:
    ds = data.TensorItems({"x": torch.arange(101)})
    one = loop.BatchStream(ds, 8, seed=5, d=loop.Dist())
    two = [loop.BatchStream(ds, 4, seed=5, d=loop.Dist(rank=r, world=2)) for r in (0, 1)]
    for _ in range(30):  # over several epochs
        together = sorted(next(two[0])["x"].tolist() + next(two[1])["x"].tolist())
        assert together == sorted(next(one)["x"].tolist())


def test_batch_stream_resumes_at_its_position() -> None:
    ds = data.TensorItems({"x": torch.arange(50)})
    full = loop.BatchStream(ds, 8, seed=1, d=loop.Dist())
    seen = [next(full)["x"].tolist() for _ in range(20)]
    part = loop.BatchStream(ds, 8, seed=1, d=loop.Dist())
    for _ in range(13):
        next(part)
    again = loop.BatchStream(ds, 8, seed=1, d=loop.Dist(), **part.state())
    assert [next(again)["x"].tolist() for _ in range(7)] == seen[13:]


def test_split_metrics_are_totals_not_batch_averages(models: dict[str, Path]) -> None:
    """Perplexity over a split with a short last window equals exp(total NLL / total tokens)."""
    mod = load_module(models["tiny_story"] / "model.py", "tiny_story_ppl")
    model = mod.build_model(mod.Config(vocab=50, d_model=32, heads=2, layers=1)).eval()
    stream = torch.randint(0, 50, (103,), generator=torch.Generator().manual_seed(0))
    ds = data.TokenWindows(stream, 16, tail=True)
    assert len(ds) == 7 and len(ds[6]["text"]) == 7  # 6 full windows of 17 tokens, then 7
    metrics, count = loop.evaluate(model, ds, 4, loop.Dist(), count_of=data.target_count)
    with torch.no_grad():
        nll = sum(torch.nn.functional.cross_entropy(model(w[:-1][None])[0], w[1:], reduction="sum").item()
                  for w in (ds[i]["text"] for i in range(len(ds))))
    assert count == len(stream) - 1
    assert metrics["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert metrics["loss"] == pytest.approx(nll / count, rel=1e-5)


def test_config_overrides_parse_by_field_type(models: dict[str, Path]) -> None:
    mod = load_module(models["resnet50"] / "model.py", "resnet_cfg")
    got = loop.parse_overrides(mod.Config, ["depths=1,2,1,1", "width=8"])
    assert got == {"depths": (1, 2, 1, 1), "width": 8}
    with pytest.raises(ValueError, match="not a valid int for width"):
        loop.parse_overrides(mod.Config, ["width=wide"])
    with pytest.raises(ValueError, match="NAME one of"):
        loop.parse_overrides(mod.Config, ["colour=red"])


def _form(models: dict[str, Path], example: str, **config: object) -> data.Form:
    mod = load_module(models[example] / "model.py", f"{example}_form")
    return data.detect_form(mod.build_model(mod.Config(**config)), mod)


def test_explicit_split_files_are_used_and_val_is_carved(models: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "table"
    root.mkdir()
    write_csv(root / "train.csv", _table(rows=40))
    write_csv(root / "test.csv", _table(rows=7))
    splits = data.prepare(data.DataOptions(str(root), target="y"), _form(models, "tabular_classifier"), tmp_path,
                          None)
    record = splits.state["split"]
    assert record["explicit"] is True and splits.state["items"] == {"train": 36, "val": 4, "test": 7}
    assert all(i.startswith("test.csv:") for i in record["test"])
    assert all(i.startswith("train.csv:") for i in record["train"] + record["val"])


def test_text_folders_and_jsonl(models: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    for split, n in (("train", 30), ("val", 3), ("test", 3)):
        (root / split).mkdir(parents=True)
        rows = [json.dumps({"body": f"{split} line {k}: " + "the quick brown fox " * (k % 5 + 1)}) for k in range(n)]
        (root / split / "part.jsonl").write_text("\n".join(rows) + "\n")
    opts = data.DataOptions(str(root), block_size=16, text_field="body")
    splits = data.prepare(opts, _form(models, "tiny_story", vocab=300, d_model=32, heads=2, layers=1), tmp_path, None)
    assert splits.state["split"]["val"] == ["val/part.jsonl:1", "val/part.jsonl:2", "val/part.jsonl:3"]
    assert (tmp_path / "tokenizer.json").is_file() and splits.state["vocab_size"] <= 300
    assert len(splits.train) > 0 and splits.train[0]["text"].shape == (17,)


def test_gradient_accumulation_gives_the_same_steps(models: dict[str, Path]) -> None:
    folder = models["tiny_story"]
    common = ["--data", str(GPL), "--steps", "4", "--batch-size", "8", "--block-size", "16", "--eval-every", "4",
              *TINY_LM]
    assert _train(folder, *common, "--run-name", "accum1") == 0
    assert _train(folder, *common, "--grad-accum", "4", "--run-name", "accum4") == 0
    one, four = (records(folder / "runs" / n, "train") for n in ("accum1", "accum4"))
    assert [r["loss"] for r in four] == pytest.approx([r["loss"] for r in one], rel=1e-5)


def test_early_stopping(models: dict[str, Path], cancer_csv: Path) -> None:
    folder = models["tabular_classifier"]  # lr 0: the validation loss never gets lower
    assert _train(folder, "--data", str(cancer_csv), "--target", "diagnosis", "--steps", "100", "--batch-size", "8",
                  "--lr", "0", "--eval-every", "1", "--early-stop", "2", "--run-name", "patience") == 0
    run = folder / "runs" / "patience"
    assert records(run, "train")[-1]["step"] == 3
    assert json.loads((run / "last" / "trainer.json").read_text())["step"] == 3


def test_bf16_autocast_runs(models: dict[str, Path]) -> None:
    folder = models["tiny_story"]
    assert _train(folder, "--data", str(GPL), "--steps", "2", "--batch-size", "2", "--block-size", "16",
                  "--precision", "bf16", "--eval-every", "2", "--run-name", "bf16", *TINY_LM) == 0
    losses = [r["loss"] for r in records(folder / "runs" / "bf16", "train")]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


def test_regression_on_diabetes(tmp_path: Path) -> None:
    """A tabular regressor (house_prices, built with 10 features) on scikit-learn's diabetes table."""
    sklearn = pytest.importorskip("sklearn.datasets")
    d = sklearn.load_diabetes()
    path = write_csv(tmp_path / "diabetes.csv", [[*d.feature_names, "progression"]] +
                [[*map(float, row), float(y)] for row, y in zip(d.data, d.target)])
    folder = model_folder(tmp_path, "house_prices")
    assert _train(folder, "--data", str(path), "--target", "progression", "--set", "features=10", "--steps", "600",
                  "--batch-size", "32", "--lr", "1e-2", "--eval-every", "300", "--run-name", "diabetes") == 0
    run = folder / "runs" / "diabetes"
    val = records(run, "val")
    split = json.loads((run / "data.json").read_text())["split"]
    y = {s: [float(d.target[int(i.rsplit(":", 1)[1]) - 2]) for i in split[s]] for s in ("train", "val")}
    mean = sum(y["train"]) / len(y["train"])
    mean_only = math.sqrt(sum((v - mean) ** 2 for v in y["val"]) / len(y["val"]))  # predicting the train mean
    assert val[0]["rmse"] > 100 and val[-1]["rmse"] < 0.9 * mean_only, (val, mean_only)


# ------------------------------------------------------------------------------------ real training runs


@pytest.mark.slow
def test_text_lm_learns_gpl3_without_metagen(models: dict[str, Path]) -> None:
    folder = models["tiny_story"]
    r = run_script(folder, "train.py", "--data", str(GPL), "--steps", "120", "--batch-size", "16", "--block-size", "32",
                "--lr", "1e-2", "--eval-every", "60", "--run-name", "gpl", *TINY_LM)
    assert r.returncode == 0, r.stderr
    assert "loss" in r.stdout and "tokens/s" in r.stdout and "eta" in r.stdout
    run = folder / "runs" / "gpl"
    val = records(run, "val")
    start, end = val[0]["perplexity"], val[-1]["perplexity"]
    baseline = unigram_perplexity(run)
    assert val[0]["step"] == 0 and val[-1]["step"] == 120
    assert end < 0.9 * baseline < start, (start, end, baseline)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["steps"] == 120 and config["model"]["vocab"] == 384 and not config["synthetic"]
    assert (run / "tokenizer.json").is_file() and (run / "last" / "model.safetensors").is_file()

    r = run_script(folder, "evaluate.py", "--checkpoint", str(run / "last"), "--data", str(GPL), "--split", "test")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result == json.loads((run / "eval_test.json").read_text())
    assert result["split"] == "test" and result["step"] == 120 and result["synthetic"] is False
    assert result["metrics"]["perplexity"] < baseline


@pytest.mark.slow
def test_image_classifier_learns_digits(models: dict[str, Path], digits: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = models["resnet50"]
    assert _train(folder, "--data", str(digits), "--steps", "80", "--batch-size", "32", "--lr", "3e-3",
                  "--weight-decay", "0", "--eval-every", "40", "--run-name", "digits", *TINY_RESNET) == 0
    run = folder / "runs" / "digits"
    state = json.loads((run / "data.json").read_text())
    assert state["classes"] == [str(k) for k in range(10)] and state["items"] == {"train": 1437, "val": 180, "test": 180}
    capsys.readouterr()
    assert evaluate_script.main(["--checkpoint", str(run / "last"), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["predictions"] == 180
    assert result["metrics"]["accuracy"] >= 0.90, result  # measured 0.97 on the validation split at 100 steps


def test_tabular_classifier_learns_breast_cancer(models: dict[str, Path], cancer_csv: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = models["tabular_classifier"]  # 30 features, 2 classes: the table's own shape
    assert _train(folder, "--data", str(cancer_csv), "--target", "diagnosis", "--steps", "60", "--batch-size", "32",
                  "--lr", "1e-3", "--eval-every", "30", "--run-name", "cancer") == 0
    run = folder / "runs" / "cancer"
    assert records(run, "val")[-1]["accuracy"] >= 0.9
    capsys.readouterr()
    assert evaluate_script.main(["--checkpoint", str(run / "last"), "--split", "test"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["predictions"] == 57 and result["metrics"]["accuracy"] >= 0.9, result


def test_synthetic_data_says_so(models: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    folder = models["tabular_classifier"]
    assert _train(folder, "--data", "synthetic", "--steps", "4", "--batch-size", "8", "--eval-every", "2",
                  "--run-name", "synthetic") == 0
    out = capsys.readouterr().out
    run = folder / "runs" / "synthetic"
    assert "SYNTHETIC" in out and "[synthetic data] step" in out
    assert all(json.loads(line)["synthetic"] is True for line in (run / "metrics.jsonl").read_text().splitlines())
    assert json.loads((run / "config.json").read_text())["synthetic"] is True
    assert json.loads((run / "eval_val.json").read_text())["synthetic"] is True


@pytest.mark.parametrize("options", [
    [],  # AdamW, warmup + cosine, fp32
    # an EMA of the weights (ema.safetensors), a linear schedule, Adam, fp16 with its loss scale (scaler.pt)
    ["--ema-decay", "0.9", "--schedule", "linear", "--optimizer", "adam", "--precision", "fp16"],
], ids=["adamw-cosine", "ema-linear-adam-fp16"])
def test_resume_after_sigkill_gives_the_same_curve_bit_for_bit(models: dict[str, Path], cancer_csv: Path,
                                                               options: list[str]) -> None:
    """The tabular model has dropout, so this also checks that the RNG state is restored."""
    folder = models["tabular_classifier"]
    common = ["--data", str(cancer_csv), "--target", "diagnosis", "--steps", "300", "--batch-size", "16",
              "--grad-accum", "2", "--eval-every", "50", "--checkpoint-every", "5", "--log-every", "1000", *options]
    tag = "-".join(options).replace("-", "").replace(".", "")
    assert _train(folder, *common, "--run-name", "whole" + tag) == 0

    run = folder / "runs" / ("killed" + tag)
    proc = subprocess.Popen([sys.executable, "-c", NO_METAGEN, "train.py", *common, "--run-name", run.name],
                            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads((run / "last" / "trainer.json").read_text())["step"] >= 10:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads((loop.find_checkpoint(run / "last") / "trainer.json").read_text())["step"]
    assert 10 <= killed_at < 300  # really interrupted
    r = run_script(folder, "train.py", "--resume", "--run-name", run.name)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    whole = folder / "runs" / ("whole" + tag)
    assert (run / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()
    saved = ["model.safetensors", "optimizer.pt"] + (["ema.safetensors", "scaler.pt"] if options else [])
    for name in saved:
        assert (run / "last" / name).read_bytes() == (whole / "last" / name).read_bytes(), name


@pytest.mark.slow
def test_torchrun_two_processes_match_one(models: dict[str, Path]) -> None:
    folder = models["tiny_story"]
    common = ["--data", str(GPL), "--steps", "12", "--batch-size", "8", "--block-size", "32", "--lr", "3e-3",
              "--eval-every", "6", *TINY_LM]
    r = subprocess.run([sys.executable, "train.py", *common, "--run-name", "one"], cwd=folder, capture_output=True,
                       text=True, timeout=600, env=ONE_THREAD, check=False)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train.py", *common, "--run-name", "two"], cwd=folder, capture_output=True, text=True, timeout=600,
                       env=ONE_THREAD, check=False)
    assert r.returncode == 0, r.stderr
    one, two = (records(folder / "runs" / n, "train") for n in ("one", "two"))
    assert len(one) == len(two) == 12
    assert [t["loss"] for t in two] == pytest.approx([o["loss"] for o in one], rel=1e-4)
    val_one, val_two = (records(folder / "runs" / n, "val") for n in ("one", "two"))
    assert [v["perplexity"] for v in val_two] == pytest.approx([v["perplexity"] for v in val_one], rel=1e-4)
    assert json.loads((folder / "runs" / "two" / "config.json").read_text())["world_size"] == 2


# ----------------------------------------------------------------------------------------------- bad data


def _error(capsys, folder: Path, *args: str) -> str:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert _train(folder, "--steps", "2", "--batch-size", "4", *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_data_missing_path(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    err = _error(capsys, models["tabular_classifier"], "--data", str(tmp_path / "nope.csv"), "--run-name", "x")
    assert "nope.csv: no such file or folder" in err


def test_bad_jsonl_line(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"\n')
    err = _error(capsys, models["tiny_story"], "--data", str(path), "--run-name", "x", *TINY_LM)
    assert f"{path}:2: not valid JSON" in err


def test_jsonl_without_the_field(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "one"}\n{"body": "two"}\n')
    err = _error(capsys, models["tiny_story"], "--data", str(path), "--run-name", "x", *TINY_LM)
    assert f"{path}:2: no field `text`" in err
    path.write_text('{"text": 3}\n')
    assert f"{path}:1: field `text` is int; expected a string" in _error(
        capsys, models["tiny_story"], "--data", str(path), "--run-name", "x", *TINY_LM)


def test_text_not_utf8(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9\n\nau lait\n\nnoir".encode("latin-1"))
    err = _error(capsys, models["tiny_story"], "--data", str(path), "--run-name", "x", *TINY_LM)
    assert f"{path}: byte 3 is not UTF-8" in err


def test_text_too_short_for_a_window(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "short.txt"
    path.write_text("one\n\ntwo\n\nthree\n\nfour")
    err = _error(capsys, models["tiny_story"], "--data", str(path), "--block-size", "64", "--run-name", "x", *TINY_LM)
    assert "fewer than one window of --block-size 64" in err


def test_csv_missing_target(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(tmp_path / "t.csv", [["a", "b"], [1, 2]])
    err = _error(capsys, models["tabular_classifier"], "--data", str(path), "--target", "y", "--run-name", "x")
    assert f"{path}: no column `y` (--target); columns are a, b" in err
    err = _error(capsys, models["tabular_classifier"], "--data", str(path), "--run-name", "x")
    assert "needs --target COLUMN" in err


def _table(rows: int = 10, features: int = 30) -> list[list[object]]:
    return [[f"f{k}" for k in range(features)] + ["y"]] + [[0.5] * features + [r % 2] for r in range(rows)]


def test_csv_not_a_number(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rows = _table()
    rows[4][7] = "n/a"
    path = write_csv(tmp_path / "t.csv", rows)
    err = _error(capsys, models["tabular_classifier"], "--data", str(path), "--target", "y", "--run-name", "x")
    assert f"{path}:5: column `f7` is `n/a`; expected a number" in err


def test_csv_ragged_row(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rows = _table()
    rows[3] = rows[3][:-2]
    path = write_csv(tmp_path / "t.csv", rows)
    err = _error(capsys, models["tabular_classifier"], "--data", str(path), "--target", "y", "--run-name", "x")
    assert f"{path}:4: 29 values; expected 31" in err


def test_csv_label_out_of_range(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rows = _table()
    rows[6][-1] = 2  # num_classes = 2
    path = write_csv(tmp_path / "t.csv", rows)
    err = _error(capsys, models["tabular_classifier"], "--data", str(path), "--target", "y", "--run-name", "x")
    assert "3 classes in `y`, but the model has num_classes = 2" in err


def test_csv_feature_count_mismatch(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(tmp_path / "t.csv", _table(features=4))
    err = _error(capsys, models["tabular_classifier"], "--data", str(path), "--target", "y", "--run-name", "x")
    assert "4 feature columns, but the model expects features = 30" in err


def test_too_few_rows_to_split(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(tmp_path / "t.csv", _table(rows=2))
    err = _error(capsys, models["tabular_classifier"], "--data", str(path), "--target", "y", "--run-name", "x")
    assert "2 item(s), but a train/val/test split needs at least 3" in err


def test_unreadable_image(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    image = pytest.importorskip("PIL.Image")
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(3):
            image.new("L", (8, 8), k * 40).save(root / c / f"{k}.png")
    (root / "b" / "broken.png").write_bytes(b"not a png")
    err = _error(capsys, models["resnet50"], "--data", str(root), "--run-name", "x", *TINY_RESNET)
    assert f"{root / 'b' / 'broken.png'}: not a readable image" in err


def test_more_class_folders_than_classes(models: dict[str, Path], digits: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = [a if a != "num_classes=10" else "num_classes=5" for a in TINY_RESNET]
    err = _error(capsys, models["resnet50"], "--data", str(digits), "--run-name", "x", *args)
    assert "10 class folders, but the model has num_classes = 5" in err


def test_bad_config_override(models: dict[str, Path], cancer_csv: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    err = _error(capsys, models["tabular_classifier"], "--data", str(cancer_csv), "--target", "diagnosis",
                 "--set", "hidden=big", "--run-name", "x")
    assert "--set hidden=big: `big` is not a valid int for hidden" in err


def test_bad_data_from_the_command_line_is_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("not json\n")
    r = run_script(models["tiny_story"], "train.py", "--data", str(path), *TINY_LM)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {path}:1: not valid JSON (Expecting value); expected one object per line"


# ------------------------------------------------------------------------------------------- metagenc train


def test_metagenc_train_compiles_then_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metagen_backends.pytorch.training import command

    monkeypatch.setenv("OMP_NUM_THREADS", "1")

    spec = str(ROOT / "examples" / "tabular_classifier.msl")
    with pytest.raises(SystemExit):
        command.main([spec, "-o", str(tmp_path)])  # no --data
    assert command.main([spec, "-o", str(tmp_path), "--backend", "pytorch", "--data", "synthetic", "--steps", "2",
                         "--batch-size", "4", "--eval-every", "1", "--run-name", "r"]) == 0
    run = tmp_path / "credit_default" / "runs" / "r"
    assert json.loads((run / "last" / "trainer.json").read_text())["step"] == 2
    assert json.loads((run / "config.json").read_text())["synthetic"] is True
    # compiled again after the run: the report shows what it measured, marked as synthetic, and the card too
    measured = json.loads((run / "measurements.json").read_text())["measurements"]
    report = json.loads((tmp_path / "credit_default" / "report.json").read_text())
    assert {(m["metric"], m["split"], m["value"]) for m in report["measurements"]} == \
        {(m["metric"], m["split"], m["value"]) for m in measured if m["steps"] == 2}
    assert all(m["dataset"] == "synthetic data" and m["source"].startswith("measured: run r, step 2")
               for m in report["measurements"])


def test_report_without_runs_has_no_measurements(tmp_path: Path) -> None:
    """A model never trained shows no measurement: nothing measured is invented."""
    from metagen_compiler.cli import main as compile_main

    assert compile_main([str(ROOT / "examples" / "tabular_classifier.msl"), "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "credit_default" / "report.json").read_text())
    assert "measurements" not in report
    assert "Not evaluated" in (tmp_path / "credit_default" / "MODEL_CARD.md").read_text()


def test_evaluate_without_a_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert evaluate_script.main(["--checkpoint", str(tmp_path / "runs" / "r" / "last")]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'runs' / 'r' / 'last'}: no checkpoint (expected trainer.json and model.safetensors)\n"


def test_fewer_items_than_one_batch(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(tmp_path / "t.csv", _table(rows=10))
    err = _error(capsys, models["tabular_classifier"], "--data", str(path), "--target", "y", "--batch-size", "16",
                 "--run-name", "x")
    assert "the train split has 8 items, fewer than one batch of 16; lower --batch-size or give more data" in err
    assert "--block-size" not in err  # the hint about text windows is for language models only


# ------------------------------------------------------------------- every loader's one-line data errors

TEXT = {"vocab": 300}
IMAGES = {"image_size": 8, "channels": 1, "num_classes": 2}
TABLE = {"features": 2, "num_classes": 2}
SPEECH = {"samples": 16000, "context": 8, "vocab": 300}
GRAPH = {"features": 2, "num_classes": 2}
SERIES = {"features": 2, "lookback": 2, "horizon": 1}
ROWS = "a,b,y\n" + "".join(f"{k},{k % 3},{k % 2}\n" for k in range(10))
GRAPH4 = {"x": [[0.0, 1.0]] * 4, "edges": [[0, 1], [1, 2], [2, 3]]}
SPLIT4 = {"train": [0, 1], "val": [2], "test": [3]}


class _Forecaster(torch.nn.Module):
    """Forecasts (batch, horizon 1, 2 outputs): what data_series checks the --target columns against."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 1, 2) + self.w


# (kind, Config, files under tmp_path (text, bytes, or None: a folder), --data, DataOptions, data.json state, message)
# with @ for tmp_path; a message ending in "(" is a prefix (the rest is the library's own words)
DATA_ERRORS = {
    "text-folder-without-text": ("lm", TEXT, {"corpus/notes.md": "x"}, "corpus", {}, None,
                                 "@/corpus: no .txt, .jsonl, .parquet or .arrow files; expected text files"),
    "text-empty": ("lm", TEXT, {"c.txt": "\n\n"}, "c.txt", {}, None,
                   "@/c.txt: no text found; expected non-empty .txt, .jsonl, .parquet or .arrow"),
    "text-bad-tokenizer": ("lm", TEXT, {"c.txt": "a\n\nb\n\nc", "tok.json": "{}"}, "c.txt", {"tokenizer": "@/tok.json"},
                           None, "@/tok.json: not a tokenizer.json ("),
    "text-vocab-below-bytes": ("lm", {"vocab": 100}, {"c.txt": "a\n\nb\n\nc"}, "c.txt", {}, None,
                               ("@/c.txt: the byte-level BPE of the train split (256 bytes and 1 special token(s) at "
                                "least): 257 tokens, but the model's vocab is 100")),
    "recorded-item-missing": ("lm", TEXT, {"c.txt": "a\n\nb\n\nc"}, "c.txt", {},
                              {"split": {"train": ["c.txt:0"], "val": ["c.txt:7"], "test": ["c.txt:2"]}},
                              "@/c.txt: item `c.txt:7` of the recorded val split is missing from the data"),
    "images-not-a-folder": ("image_classification", IMAGES, {"x.png": b"png"}, "x.png", {}, None,
                            "@/x.png: not a folder; expected one subfolder of images per class"),
    "images-no-class-folders": ("image_classification", IMAGES, {"imgs/a.png": b"png"}, "imgs", {}, None,
                                "@/imgs: no class subfolders; expected one subfolder of images per class"),
    "images-none": ("image_classification", IMAGES, {"imgs/a/notes.txt": "x"}, "imgs", {}, None,
                    "@/imgs: no images (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff) in the class subfolders"),
    "images-unknown-test-class": ("image_classification", IMAGES,
                                  {"imgs/train/a/0.png": b"", "imgs/train/b/0.png": b"", "imgs/test/c/0.png": b""},
                                  "imgs", {}, None,
                                  "@/imgs/test/c: class `c` is not among the training classes ['a', 'b']"),
    "csv-not-csv": ("tabular_classification", TABLE, {"t.txt": ROWS}, "t.txt", {"target": "y"}, None,
                    "@/t.txt: not a .csv file; expected a CSV with a header row"),
    "csv-empty": ("tabular_classification", TABLE, {"t.csv": ""}, "t.csv", {"target": "y"}, None,
                  "@/t.csv: empty file; expected a header row"),
    "csv-no-feature-column": ("tabular_classification", TABLE, {"t.csv": ROWS}, "t.csv",
                              {"target": "y", "features": "a,z"}, None,
                              "@/t.csv: no feature column `z` (--features); columns are a, b, y"),
    "csv-not-finite": ("tabular_classification", TABLE, {"t.csv": "a,b,y\n1,inf,0\n" + ROWS[6:]}, "t.csv",
                       {"target": "y"}, None, "@/t.csv:2: column `b` is `inf`; expected a finite number"),
    "csv-not-utf8": ("tabular_classification", TABLE, {"t.csv": ROWS.encode() + "caf\u00e9,1,0\n".encode("latin-1")},
                     "t.csv", {"target": "y"}, None, "@/t.csv: byte 69 is not UTF-8; expected UTF-8 text"),
    "audio-list-not-utf8": ("speech_recognition", SPEECH, {"sp/transcripts.tsv": "a.wav\tcaf\u00e9\n".encode("latin-1")},
                            "sp", {}, None, "@/sp/transcripts.tsv: byte 9 is not UTF-8; expected UTF-8 text"),
    "csv-no-rows": ("tabular_classification", TABLE, {"t.csv": "a,b,y\n"}, "t.csv", {"target": "y"}, None,
                    "@/t.csv: no data rows after the header"),
    "csv-two-class-targets": ("tabular_classification", {"features": 1, "num_classes": 2}, {"t.csv": ROWS}, "t.csv",
                              {"target": "a,y"}, None, "@/t.csv: classification takes one --target column, got 2"),
    "csv-label-unseen-in-train": ("tabular_classification", TABLE,
                                  {"t/train.csv": ROWS, "t/test.csv": "a,b,y\n1,2,5\n"}, "t", {"target": "y"}, None,
                                  "test.csv:2: label `5` in `y` is not one of the 2 classes 0..1 (num_classes = 2)"),
    "csv-outputs-mismatch": ("tabular_regression", {"features": 2, "outputs": 2}, {"t.csv": ROWS}, "t.csv",
                             {"target": "y"}, None,
                             "@/t.csv: 1 --target column(s), but the model predicts outputs = 2"),
    "csv-target-not-a-number": ("tabular_regression", {"features": 2, "outputs": 1},
                                {"t.csv": ROWS.replace("\n1,1,1\n", "\n1,1,high\n")}, "t.csv", {"target": "y"}, None,
                                "t.csv:3: target `high` is not a number; expected numbers"),
    "no-loader": ("unsupported", {}, {"t.csv": ROWS}, "t.csv", {}, None,
                  ("@/t.csv: no loader yet for a model whose batches are {boxes, image}; use --data synthetic for a "
                   "smoke test")),
    "audio-jsonl-not-json": ("speech_recognition", SPEECH, {"sp/transcripts.jsonl": "{bad\n"}, "sp", {}, None,
                             "@/sp/transcripts.jsonl:1: not valid JSON ("),
    "audio-jsonl-fields": ("speech_recognition", SPEECH, {"sp/transcripts.jsonl": '{"path": "a.wav"}\n'}, "sp", {},
                           None, "@/sp/transcripts.jsonl:1: expected an object with string fields `audio` (or `path`) "
                           "and `text`"),
    "audio-empty-transcript": ("speech_recognition", SPEECH, {"sp/a.wav": b"", "sp/transcripts.tsv": "a.wav\t \n"},
                               "sp", {}, None, "@/sp/transcripts.tsv:1: empty transcript for `a.wav`"),
    "audio-no-rows": ("speech_recognition", SPEECH, {"sp/transcripts.tsv": "\n"}, "sp", {}, None,
                      "@/sp/transcripts.tsv: no rows; expected one audio file and transcript per line"),
    "audio-transcript-too-long": ("speech_recognition", {**SPEECH, "context": 2},
                                  {"sp/a.wav": b"", "sp/b.wav": b"", "sp/c.wav": b"",
                                   "sp/transcripts.tsv": "a.wav\tone two\nb.wav\tthree four\nc.wav\tfive six\n"},
                                  "sp", {}, None, "transcripts.tsv: the transcript of `"),
    "graph-two-files": ("node_classification", GRAPH, {"g/a.json": "{}", "g/b.json": "{}"}, "g", {}, None,
                        "@/g: expected one graph .json file in the folder, found 2"),
    "graph-no-x": ("node_classification", GRAPH, {"g.json": '{"edges": []}'}, "g.json", {}, None,
                   "@/g.json: expected an object with `x` (node features) and `edges` (node index pairs)"),
    "graph-empty-x": ("node_classification", GRAPH, {"g.json": '{"x": [], "edges": [[0, 1]]}'}, "g.json", {}, None,
                      "@/g.json: `x` is not a non-empty list of feature rows"),
    "graph-no-edges": ("node_classification", GRAPH, {"g.json": '{"x": [[0, 1]], "edges": []}'}, "g.json", {}, None,
                       "@/g.json: `edges` is not a non-empty list of [source, target] pairs"),
    "graph-unlabelled": ("node_classification", GRAPH, {"g.json": json.dumps({**GRAPH4, "y": [None] * 4})}, "g.json",
                         {}, None, "@/g.json: every entry of `y` is null; node classification needs labelled nodes"),
    "graph-too-few-labels": ("node_classification", GRAPH, {"g.json": json.dumps({**GRAPH4, "y": [0, None, 1, None]})},
                             "g.json", {}, None, "@/g.json: 2 item(s), but a train/val/test split needs at least 3"),
    "graph-empty-split": ("node_classification", GRAPH,
                          {"g.json": json.dumps({**GRAPH4, "y": [0, 1, 0, 1], "split": {**SPLIT4, "test": []}})},
                          "g.json", {}, None, "@/g.json: split `test` is empty; expected labelled node ids"),
    "graph-label-not-recorded": ("node_classification", GRAPH, {"g.json": json.dumps({**GRAPH4, "y": [0, 1, 2, 1]})},
                                 "g.json", {}, {"classes": [0, 1], "split": SPLIT4},
                                 "@/g.json: y[2] is 2; expected a class among 2 (0..1, num_classes = 2)"),
    "graph-too-dense": ("link_prediction", GRAPH, {"g.json": json.dumps({"x": [[0.0, 1.0]] * 3,
                                                                         "edges": [[0, 1], [0, 2], [1, 2]]})},
                        "g.json", {}, None, "@/g.json: too dense to draw 1 non-edges"),
    "series-not-csv": ("forecast", SERIES, {"s.txt": ROWS}, "s.txt", {}, None,
                       "@/s.txt: not a .csv file; expected a CSV with a header row, rows in time order"),
    "series-empty": ("forecast", SERIES, {"s.csv": "# a comment only\n"}, "s.csv", {}, None,
                     "@/s.csv: empty file; expected a header row"),
    "series-no-rows": ("forecast", SERIES, {"s.csv": "a,b\n"}, "s.csv", {}, None,
                       "@/s.csv: no data rows after the header"),
    "series-ragged": ("forecast", SERIES, {"s.csv": "a,b\n1,2\n3\n"}, "s.csv", {}, None,
                      "@/s.csv:3: 1 values; expected 2 (one per header column)"),
    "series-folder-without-val": ("forecast", SERIES, {"ser/train.csv": "a,b\n1,2\n", "ser/test.csv": "a,b\n1,2\n"},
                                  "ser", {}, None,
                                  "@/ser: a folder of series needs train.csv, val.csv and test.csv (a split by time)"),
    "series-target-mismatch": ("forecast", SERIES, {"s.csv": "a,b\n" + "1,2\n" * 40}, "s.csv", {"target": "a"}, None,
                               ("@/s.csv: 1 target column(s) (a), but the model forecasts (1, 2) (horizon, outputs); "
                                "name them with --target")),
}


@pytest.mark.parametrize("case", list(DATA_ERRORS))
def test_data_error_is_one_line(case: str, tmp_path: Path) -> None:
    kind, config, files, source, options, state, message = DATA_ERRORS[case]
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    options = {k: v.replace("@", str(tmp_path)) for k, v in options.items()}
    form = data.Form(kind, ("boxes", "image") if kind == "unsupported" else (), config)
    with pytest.raises(data.DataError) as e:
        data.prepare(data.DataOptions(str(tmp_path / source), **options), form, tmp_path / "run", state, _Forecaster())
    text, expected = str(e.value), message.replace("@", str(tmp_path))
    assert "\n" not in text
    assert text.startswith(expected) if expected.endswith("(") or case == "audio-transcript-too-long" else \
        text == expected, text


def test_unknown_split_name() -> None:
    splits = data.Splits(data.TensorItems({"x": torch.zeros(1)}), *[data.TensorItems({"x": torch.zeros(1)})] * 2)
    with pytest.raises(data.DataError, match="^unknown split `dev`: expected one of train, val, test$"):
        splits.get("dev")


def test_tokenizer_larger_than_the_vocab(models: dict[str, Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """--tokenizer is checked against the vocab, and is the one used even where a run of the same name that
    failed before it started left its tokenizer.json (only --resume and evaluate.py reuse the run's own)."""
    tokenizers = pytest.importorskip("tokenizers")

    def word_level(n: int, path: Path) -> None:
        tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(n)}, unk_token="w0")).save(str(path))

    word_level(500, tmp_path / "tok.json")
    (tmp_path / "runs" / "stale").mkdir(parents=True)
    word_level(10, tmp_path / "runs" / "stale" / "tokenizer.json")
    err = _error(capsys, models["tiny_story"], "--data", str(GPL), "--tokenizer", str(tmp_path / "tok.json"),
                 "--out", str(tmp_path / "runs"), "--run-name", "stale", *TINY_LM)
    assert err == f"error: {tmp_path / 'tok.json'}: 500 tokens, but the model's vocab is 384\n"


def test_run_folder_errors(models: dict[str, Path], cancer_csv: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder, runs = models["tabular_classifier"], tmp_path / "runs"
    table = ["--data", str(cancer_csv), "--target", "diagnosis", "--out", str(runs)]
    assert _error(capsys, folder, *table, "--resume") == f"error: {runs}: no run with a checkpoint to resume\n"
    assert _error(capsys, folder, *table, "--resume", "--run-name", "r") == (
        f"error: {runs / 'r'}: no checkpoint to resume (expected {runs / 'r' / 'last'})\n")
    (runs / "r").mkdir(parents=True)
    (runs / "r" / "metrics.jsonl").write_text("")
    assert _error(capsys, folder, *table, "--run-name", "r") == (
        f"error: {runs / 'r'}: the run exists; pass --resume to continue it, or --run-name NAME\n")
    assert _error(capsys, folder, *table, "--run-name", "s", "--grad-accum", "3") == (
        "error: --batch-size 4 is not a multiple of processes x --grad-accum (1 x 3)\n")
    assert _error(capsys, folder, *table, "--run-name", "s", "--lr", "1e30") == (
        "error: step 2: the loss is nan; lower --lr or check the data\n")


def test_evaluate_outside_a_run_folder(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    last = tmp_path / "runs" / "r" / "last"
    last.mkdir(parents=True)
    (last / "trainer.json").write_text("{}")
    assert evaluate_script.main(["--checkpoint", str(last)]) == 1
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'runs' / 'r'}: not a run folder (FileNotFoundError: config.json, data.json)\n")
