"""The training loop's options (backends/pytorch/training): training.json defaults, --optimizer, --schedule,
--epochs, fp16 with loss scaling, the EMA of the weights, FSDP under torchrun, TensorBoard.

Runs train on scikit-learn's breast-cancer table and Debian's GPL-3 text, a few steps each; the resume-after-kill
test with these options is tests/test_training.py::test_resume_after_sigkill_gives_the_same_curve_bit_for_bit.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from metagen_backends.pytorch.training import evaluate as evaluate_script
from metagen_backends.pytorch.training import loop
from metagen_backends.pytorch.training import train as train_script
from training_helpers import GPL, ONE_THREAD, TINY_LM, model_folder, records, run_script, write_cancer


@pytest.fixture(autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compiled tabular classifier (an MLP with dropout) in its own folder: tests write its training.json."""
    return model_folder(tmp_path_factory.mktemp("loop"), "tabular_classifier")


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn.datasets")
    return write_cancer(tmp_path_factory.mktemp("cancer") / "cancer.csv")[0]


@pytest.fixture
def spec(folder: Path):  # type: ignore[no-untyped-def]
    """Writes folder/training.json for one test and removes it after."""
    path = folder / "training.json"

    def write(doc: Any) -> Path:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return path

    yield write
    path.unlink(missing_ok=True)


def _train(folder: Path, cancer: Path, *args: str) -> int:
    return train_script.main(["--model", str(folder / "model.py"), "--data", str(cancer), "--target", "diagnosis",
                              "--batch-size", "16", *args])


def _config(folder: Path, run: str) -> dict[str, Any]:
    return json.loads((folder / "runs" / run / "config.json").read_text())


# ------------------------------------------------------------------------------------------ the pieces


def test_schedules_after_warmup() -> None:
    cos, lin, const = ([loop.lr_factor(s, 10, 110, 0.1, kind) for s in range(111)]
                       for kind in ("cosine", "linear", "constant"))
    for f in (cos, lin, const):
        assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # the same warmup
    assert lin[60] == pytest.approx(0.55) and lin[35] == pytest.approx(0.775) and lin[110] == pytest.approx(0.1)
    assert cos[35] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert const[10:] == [1.0] * 101


def test_optimizers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = lambda: loop.param_groups(model, 0.1)
    assert type(loop.make_optimizer("adamw", groups(), 1e-3, (0.9, 0.95), 0.9)) is torch.optim.AdamW
    adam = loop.make_optimizer("adam", groups(), 1e-3, (0.8, 0.9), 0.9)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["betas"] == (0.8, 0.9)
    sgd = loop.make_optimizer("sgd", groups(), 1e-2, (0.9, 0.95), 0.5)
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.5
    assert [g["weight_decay"] for g in sgd.param_groups] == [0.1, 0.0]  # the same groups: no decay on the norm


def test_ema_averages_and_restores_the_weights_exactly() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = loop.EMA(model, 0.5)
    start = {n: t.clone() for n, t in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model[1].running_mean.add_(2.0)
    ema.update(model)  # first update: d = min(0.5, 2 / 11)
    d = 2 / 11
    w = model[0].weight
    assert torch.allclose(ema.shadow["0.weight"], d * start["0.weight"] + (1 - d) * w.detach())
    assert torch.allclose(ema.shadow["1.running_mean"], d * start["1.running_mean"] + (1 - d) * 2.0)
    assert "1.num_batches_tracked" not in ema.shadow  # integer buffers are the model's own
    trained = {n: t.clone() for n, t in model.state_dict().items()}
    with ema.applied(model):
        assert torch.equal(model[0].weight, ema.shadow["0.weight"])
    assert all(torch.equal(trained[n], t) for n, t in model.state_dict().items())


def test_cfg_dropout_zeroes_the_condition_of_some_samples() -> None:
    class Diffusion(torch.nn.Module):  # what condition_keys looks for: a diffusion family's noise schedule buffer
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("alphas_cumprod", torch.ones(4))

    keys = loop.condition_keys(Diffusion(), ("image", "text", "timestep"))
    assert keys == ["text"] and loop.condition_keys(torch.nn.Linear(2, 2), ("image", "text")) == []
    batch = {"image": torch.ones(1000, 1, 2, 2), "text": torch.arange(1, 8001).view(1000, 8)}
    torch.manual_seed(0)
    out = loop.drop_condition(batch, keys, 0.25)
    dropped = (out["text"] == 0).all(1)
    kept = (out["text"] == batch["text"]).all(1)
    assert bool((dropped | kept).all()) and 200 < int(dropped.sum()) < 300  # whole samples, about a quarter
    assert torch.equal(out["image"], batch["image"])  # the denoised input is never dropped
    assert loop.drop_condition(batch, keys, 0.0) is batch


# -------------------------------------------------------------------------------------- training.json


def test_training_json_sets_defaults_and_flags_override(folder: Path, cancer: Path, spec) -> None:  # type: ignore[no-untyped-def]
    spec({"optimizer": "sgd", "lr": 0.05, "schedule": "linear", "steps": 6, "ema_decay": 0.9, "grad_clip": 0.5,
          "warmup": 0})
    assert _train(folder, cancer, "--lr", "0.01", "--eval-every", "3", "--run-name", "spec") == 0
    cfg = _config(folder, "spec")
    t = cfg["train"]
    assert (t["optimizer"], t["schedule"], t["steps"], t["ema_decay"], t["grad_clip"]) == ("sgd", "linear", 6, 0.9, 0.5)
    assert t["lr"] == 0.01  # the flag, not training.json's 0.05
    assert cfg["training_json"]["lr"] == 0.05  # what the spec said is recorded
    lrs = [r["lr"] for r in records(folder / "runs" / "spec", "train")]
    assert lrs == pytest.approx([0.01 * (0.1 + 0.9 * (1 - s / 6)) for s in range(6)])  # linear from --lr
    assert records(folder / "runs" / "spec", "val")[-1]["weights"] == "ema"


def test_epochs_from_training_json_and_steps_from_the_command_line(folder: Path, cancer: Path, spec) -> None:  # type: ignore[no-untyped-def]
    spec({"epochs": 2})
    assert _train(folder, cancer, "--eval-every", "100", "--run-name", "epochs") == 0
    train_items = len(json.loads((folder / "runs" / "epochs" / "data.json").read_text())["split"]["train"])
    assert _config(folder, "epochs")["train"]["steps"] == 2 * (train_items // 16)
    assert len(records(folder / "runs" / "epochs", "train")) == 2 * (train_items // 16)
    assert _train(folder, cancer, "--steps", "3", "--run-name", "steps_win") == 0  # --steps beats the spec's epochs
    assert _config(folder, "steps_win")["train"]["epochs"] is None
    assert len(records(folder / "runs" / "steps_win", "train")) == 3


@pytest.mark.parametrize(("doc", "message"), [
    ({"optimiser": "sgd"}, "unknown key `optimiser`; did you mean `optimizer`?"),
    ({"colour": 3}, "unknown key `colour`; its keys are train.py's settings"),
    ({"lr": "fast"}, "`lr` is \"fast\"; expected a number"),
    ({"lr": True}, "`lr` is true; expected a number"),
    ({"steps": 2.5}, "`steps` is 2.5; expected an integer"),
    ({"steps": 0}, "`steps` is 0; expected a number >= 1"),
    ({"schedule": "step"}, "`schedule` is \"step\"; expected one of cosine, linear, constant"),
    ({"precision": "fp8"}, "`precision` is \"fp8\"; expected one of fp32, bf16, fp16"),
    ({"ema_decay": 1}, "`ema_decay` is 1; expected a number > 0 and < 1"),
    ({"compile": "yes"}, "`compile` is \"yes\"; expected true or false"),
    ({"steps": 10, "epochs": 2}, "both `steps` and `epochs`"),
    ({"run_name": "x"}, "unknown key `run_name`"),
    ([1, 2], "expected a JSON object of train.py settings, got list"),
    ("{\"lr\": 0.1,", "not readable JSON"),
])
def test_bad_training_json_is_one_line(folder: Path, cancer: Path, spec, capsys, doc: Any, message: str) -> None:  # type: ignore[no-untyped-def]
    path = spec(doc)
    capsys.readouterr()
    assert _train(folder, cancer, "--steps", "1", "--run-name", "never") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and message in err and err.count("\n") == 1, err
    assert not (folder / "runs" / "never").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--ema-decay", "1.5"], "--ema-decay is 1.5; expected a number > 0 and < 1"),
    (["--lr", "-1"], "--lr is -1.0; expected a number >= 0"),
    (["--epochs", "2"], "--steps and --epochs: give one of them"),
    (["--fsdp"], "--fsdp shards the model across processes; run train.py under torchrun"),
    (["--cfg-dropout", "0.1"], "--cfg-dropout 0.1: classifier-free guidance dropout is for a diffusion model"),
    (["--cfg-dropout", "2"], "--cfg-dropout is 2.0; expected a number >= 0 and <= 1"),
])
def test_bad_loop_flags_are_one_line(folder: Path, cancer: Path, capsys, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert _train(folder, cancer, "--steps", "1", *args, "--run-name", "never") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


# ----------------------------------------------------------------------------------- precision and EMA


def test_fp16_autocast_with_loss_scaling_on_cpu(folder: Path, cancer: Path) -> None:
    """torch 2.13 runs float16 autocast on the CPU; the GradScaler's scale is logged and checkpointed."""
    assert _train(folder, cancer, "--steps", "6", "--eval-every", "3", "--precision", "fp16", "--run-name",
                  "fp16") == 0
    run = folder / "runs" / "fp16"
    steps = records(run, "train")
    assert len(steps) == 6 and all(math.isfinite(r["loss"]) and r["loss_scale"] > 0 for r in steps)
    assert torch.load(run / "last" / "scaler.pt")["scale"] == steps[-1]["loss_scale"]
    assert records(run, "val")[-1]["accuracy"] > 0.8


def test_ema_is_evaluated_saved_and_evaluate_uses_it(folder: Path, cancer: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert _train(folder, cancer, "--steps", "20", "--eval-every", "10", "--lr", "3e-3", "--ema-decay", "0.95",
                  "--run-name", "ema") == 0
    run = folder / "runs" / "ema"
    last = records(run, "val")[-1]
    assert last["weights"] == "ema" and last["loss"] != last["raw_loss"]
    assert (run / "last" / "ema.safetensors").is_file()
    assert json.loads((run / "eval_val.json").read_text())["metrics"]["loss"] == last["loss"]  # measured: the EMA's
    capsys.readouterr()
    out = {}
    for weights in ("ema", "raw"):
        assert evaluate_script.main(["--checkpoint", str(run / "last"), "--split", "val", "--weights", weights,
                                     "--model", str(folder / "model.py")]) == 0
        out[weights] = json.loads(capsys.readouterr().out)
    assert out["ema"]["weights"] == "ema" and out["raw"]["weights"] == "raw"
    assert out["ema"]["metrics"]["loss"] == pytest.approx(last["loss"], rel=1e-6)  # what training measured
    assert out["raw"]["metrics"]["loss"] == pytest.approx(last["raw_loss"], rel=1e-6)


# -------------------------------------------------------------------------------------------- FSDP


@pytest.mark.slow
def test_fsdp_under_torchrun_matches_ddp_on_cpu(tmp_path: Path) -> None:
    """Two gloo processes: FSDP (torch's fully_shard) gives DDP's losses, EMA included; its checkpoint (gathered
    whole) evaluates in one process to the same number."""
    lm = model_folder(tmp_path, "tiny_story")
    common = ["--data", str(GPL), "--steps", "6", "--batch-size", "8", "--block-size", "32", "--lr", "3e-3",
              "--eval-every", "3", "--grad-accum", "2", "--ema-decay", "0.9", "--precision", "fp32", "--warmup", "0",
              *TINY_LM]  # fp32 and no warmup over the example's training section (bf16, 200 warmup steps)
    for name, extra in (("ddp", []), ("fsdp", ["--fsdp"])):
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            "train.py", *common, *extra, "--run-name", name], cwd=lm, capture_output=True, text=True,
                           timeout=600, env=ONE_THREAD, check=False)
        assert r.returncode == 0, r.stderr[-3000:]
    ddp, fsdp = (lm / "runs" / n for n in ("ddp", "fsdp"))
    assert [r["loss"] for r in records(fsdp, "train")] == pytest.approx([r["loss"] for r in records(ddp, "train")],
                                                                         rel=1e-5)
    val = records(fsdp, "val")
    assert [v["perplexity"] for v in val] == pytest.approx([v["perplexity"] for v in records(ddp, "val")], rel=1e-5)
    cfg = json.loads((fsdp / "config.json").read_text())
    assert cfg["train"]["fsdp"] is True and cfg["model_class"] == json.loads((ddp / "config.json").read_text())[
        "model_class"]
    r = run_script(lm, "evaluate.py", "--checkpoint", str(fsdp / "last"), "--split", "val")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["metrics"]["perplexity"] == pytest.approx(val[-1]["perplexity"], rel=1e-5)


# -------------------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_gets_every_number(folder: Path, cancer: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--tensorboard writes through torch.utils.tensorboard.SummaryWriter (a recording stand-in here)."""
    calls: list[tuple[str, float, int]] = []

    class Writer:
        def __init__(self, log_dir: str) -> None:
            calls.append(("log_dir", 0.0, 0))
            self.log_dir = log_dir

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            calls.append((tag, value, step))

        def close(self) -> None:
            calls.append(("closed", 0.0, 0))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    assert _train(folder, cancer, "--steps", "4", "--eval-every", "2", "--tensorboard", "--run-name", "tb") == 0
    tags = {t for t, _, _ in calls}
    assert {"train/loss", "train/lr", "train/grad_norm", "val/loss", "val/accuracy"} <= tags
    assert [s for t, _, s in calls if t == "train/loss"] == [1, 2, 3, 4]
    assert calls[-1][0] == "closed"
    val = records(folder / "runs" / "tb", "val")
    assert [v for t, v, _ in calls if t == "val/accuracy"] == [r["accuracy"] for r in val]


def test_tensorboard_missing_is_one_line(folder: Path, cancer: Path, capsys,  # type: ignore[no-untyped-def]
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    capsys.readouterr()
    assert _train(folder, cancer, "--steps", "1", "--tensorboard", "--run-name", "no_tb") == 1
    err = capsys.readouterr().err
    assert err == ("error: --tensorboard needs the tensorboard package (pip install tensorboard); "
                   "metrics.jsonl has the same numbers\n")
    assert not (folder / "runs" / "no_tb" / "metrics.jsonl").exists()


def test_the_examples_training_sections_are_train_py_settings(tmp_path: Path) -> None:
    """The compiler's training.json (the contract of issue 17) holds only keys and values train.py takes."""
    from conftest import ROOT

    examples = sorted(p.stem for p in (ROOT / "examples").glob("*.msl") if "training {" in p.read_text())
    assert examples  # tiny_story, vit_b_16, tiny_diffusion, ...
    for name in examples:
        path = model_folder(tmp_path, name) / "training.json"
        doc = json.loads(path.read_text())
        assert train_script.spec_defaults(train_script.parser(), path) == doc, name
