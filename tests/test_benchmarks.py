"""Smoke runs of the benchmark scripts at small sizes, so they cannot rot. Speed is not asserted
here (that lives in the benchmarks' own tables); only that they run and write well-formed JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow  # each script runs in a process of its own, a few seconds each


def _run(script: str, out: Path) -> dict:  # type: ignore[type-arg]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text())


def test_compile_benchmark_smoke(tmp_path: Path) -> None:
    data = _run("compile.py", tmp_path / "compile.json")
    rows = data["rows"]
    assert {r["group"] for r in rows} == {"example", "scale", "depth"}
    assert all(r["median_s"] > 0 and r["peak_rss_mb"] > 0 and r["nodes"] > 0 for r in rows)
    depth = [r for r in rows if r["group"] == "depth"]
    assert depth[-1]["nodes"] > depth[0]["nodes"]


def test_growth_benchmark_smoke(tmp_path: Path) -> None:
    data = _run("growth.py", tmp_path / "growth.json")
    kinds = data["kinds"]
    assert set(kinds) == {"msl_list", "msl_models", "msl_blocks", "yaml_keys", "yaml_unknown_keys", "solver_range",
                          "layers"}
    for name, kind in kinds.items():
        rows = kind["rows"]
        assert len(rows) >= 3 and all(r["seconds"] > 0 and r["peak_rss_mb"] > 0 for r in rows), name
        assert all(r["rc"] == (1 if name == "yaml_unknown_keys" else 0) for r in rows), (name, rows)
    unknown = kinds["yaml_unknown_keys"]["rows"]
    assert [r["errors"] for r in unknown] == [r["size"] for r in unknown]  # every diagnostic, counted
    assert kinds["solver_range"]["rows"][-1]["size"] >= 2**52  # the range's size does not matter


def test_models_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    data = _run("models.py", tmp_path / "models.json")
    names = {(r["model"], r["reference"]) for r in data["rows"]}
    assert ("gpt2", "transformers GPT2LMHeadModel") in names
    assert all(r["ratio"] > 0 for r in data["rows"])
    same = [r for r in data["rows"] if "params_reference" in r]
    assert all(r["params_generated"] == r["params_reference"] for r in same), same


def test_latency_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    data = _run("latency.py", tmp_path / "latency.json")
    rows = data["rows"]
    assert len(rows) >= 4 and {r["batch"] for r in rows} >= {1, 2}
    assert all(r["measured_s"] > 0 and r["estimate_s"] > 0 and r["proxy_s"] > 0 for r in rows)
    assert "device calibrated" in data["profile"]
    for key in ("estimate", "proxy"):
        assert set(data[key]) == {"mape", "within_20", "spearman"}


def test_coverage_table_smoke(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    data = _run("coverage.py", tmp_path / "coverage.json")
    assert len(data["rows"]) == 3 and all(r["compiles"] and r["train_ok"] and r["params_exact"] for r in data["rows"])
    assert {t["task"] for t in data["tasks"]} >= {"generation", "classification"}
    assert any(f["examples"] for f in data["families"])


def test_latency_offline_reestimates_the_stored_rows() -> None:
    """benchmarks/latency_offline.py re-estimates the committed measurements with the current estimator
    and prints the stored and the new scores (nothing timed, nothing written)."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latency_offline.py")], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith(("stored estimate", "new estimate"))]
    assert len(lines) == 2 and all("MAPE" in line and "Spearman" in line for line in lines), r.stdout


def test_search_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    data = _run("search.py", tmp_path / "search.json")
    assert {r["storage"] for r in data["throughput"]} == {"sqlite", "memory"}
    assert all(r["trials_per_s"] > 0 and r["compile_s_mean"] > 0 for r in data["throughput"])
    assert len({r["spec"] for r in data["quality"]}) >= 2
    assert {r["sampler"] for r in data["quality"]} == {"nsga2", "tpe", "random"}
    for r in data["quality"]:  # normalised hypervolume of 2 objectives, reference point 1.1: at most 1.21
        assert 0 <= r["hv_mean"][str(r["trials"])] <= 1.1 ** 2 and len(r["hv"]) == r["seeds"]
    [train] = data["training"]  # prototype training: one spec in --quick
    assert {r["sampler"] for r in train["rows"]} == {"nsga2", "tpe", "random"}
    assert all(0 <= r["hv_mean"] <= 1.1 ** 2 for r in train["rows"]) and train["cost"]["train_s_mean"] > 0
    [warm] = data["warm_start"]
    assert len(warm["per_seed"]) == warm["seeds"] and all(r["enqueued"] > 0 for r in warm["per_seed"])


def test_fuzz_benchmark_smoke(tmp_path: Path) -> None:
    data = _run("fuzz.py", tmp_path / "fuzz.json")
    counts = data["counts"]
    assert data["cases"] == 200 and sum(counts[k] for k in ("ok", "input_error", "internal_error", "traceback",
                                                               "timeout")) == 200
    assert counts["internal_error"] == counts["traceback"] == counts["timeout"] == counts["unpositioned"] == 0, data
    assert counts["ok"] > 0 and counts["input_error"] > 0


def test_generate_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    data = _run("generate.py", tmp_path / "generate.json")
    rows = data["rows"]
    assert {(r["model"], r["batch"]) for r in rows} == {(m, b) for m in ("gpt2", "llama", "mamba", "t5") for b in (1, 8)}
    assert all(r["ours_tokens_per_s"] > 0 and r["reference_tokens_per_s"] > 0 and r["ours_first_token_s"] > 0
               for r in rows)
    assert all(r["same_tokens"] for r in rows), rows  # the same weights give transformers' greedy tokens
    memory = data["memory"]  # peak resident memory of generation, each in its own process, against the estimate
    assert {(r["model"], r["batch"]) for r in memory} == {(m, b) for m in ("gpt2", "llama", "mamba", "t5") for b in (1, 8)}
    assert all(r["measured_bytes"] >= r["measured_model_bytes"] > 0 and r["estimate_bytes"] > 0 for r in memory)
    assert "clear_refs" in data["memory_method"]


def test_train_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("sklearn")
    data = _run("train.py", tmp_path / "train.json")
    assert data["quick"] is True and data["settings"]["threads_per_process"] == 1
    assert [r["model"] for r in data["digits"]] == ["resnet", "vit"]
    for r in data["digits"]:  # a few steps only: the numbers are real but not good
        assert r["test_items"] == 359 and 0 <= r["test_accuracy"] <= 1 and r["wall_s"] > 0  # the 60/20/20 split
        assert r["items"] == {"train": 1079, "val": 359, "test": 359}
        assert [v["step"] for v in r["val_curve"]] == [0, 2, 4]
    tab = data["tabular"]
    assert tab["train_rows"] + tab["test_rows"] < 569 and tab["test_rows"] == 57
    assert all(0.5 <= tab[k] <= 1 for k in ("mlp_test_accuracy", "logreg_test_accuracy", "hist_gbdt_test_accuracy"))
    text = data["text"]
    assert text["val_perplexity"] < text["val_perplexity_start"] and text["unigram_perplexity"] > 1
    assert text["ours_tokens_per_s"] > 0 and text["reference_tokens_per_s"] > 0 and text["ratio"] > 0
    run = data["torchrun"]
    assert run["max_rel_loss_diff"] < 1e-4 and run["throughput_ratio"] > 0, run
