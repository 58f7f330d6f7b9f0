"""Training runtime, more data forms: RL agents on real Gymnasium environments, and runs/<run>/measurements.json.

Real environments only (CartPole-v1, Pendulum-v1: Gymnasium's classic control, no extras). Scripts run in
subprocesses with MetaGen made unimportable and one thread, as in test_training.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("gymnasium")

from metagen_backends.pytorch.training import RUNTIME_FILES, rl
from training_helpers import (
    GPL,
    NO_METAGEN,
    ONE_THREAD,
    TINY_LM,
    TINY_WHISPER,
    model_folder,
    records,
    run_script,
    write_speech,
)

# a DQN-style agent for CartPole: the stdlib's MLP agent with its value_based head (dqn_atari.msl needs Atari ROMs)
DQN_CARTPOLE = """msl 1
import std.rl

model dqn_cartpole {
  modality tabular -> action
  task value_based { num_actions = 2 }
  objective reinforcement
  architecture rl.mlp_agent { features = 4; hidden = 64; layers = 1 }
}
"""
CARTPOLE_REINFORCE = ["--set", "features=4", "--set", "num_actions=2", "--set", "hidden=32", "--set", "layers=1"]


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("agents")
    spec = root / "dqn_cartpole.msl"
    spec.write_text(DQN_CARTPOLE)
    out = {name: model_folder(root, name)
           for name in ("ppo_cartpole", "reinforce_lunar_lander", "reinforce_pendulum")}
    out["dqn_cartpole"] = model_folder(root, "dqn_cartpole", spec)
    return out


def _evals(run: Path) -> list[float]:
    return [r["mean_return"] for r in records(run, "val")]


def _train_losses(run: Path) -> list[float]:
    return [r["loss"] for r in records(run, "train")]


# ------------------------------------------------------------------------------------------------- RL


def test_rl_module_is_copied(agents: dict[str, Path]) -> None:
    assert "rl.py" in RUNTIME_FILES
    assert (agents["ppo_cartpole"] / "rl.py").read_text() == Path(rl.__file__).read_text()


def test_rl_kind_from_the_loss_keys() -> None:
    assert rl.rl_kind(("action", "advantage", "old_log_prob", "return", "tabular")) == "rl_actor_critic"
    assert rl.rl_kind(("action", "return", "tabular")) == "rl_policy_gradient"
    assert rl.rl_kind(("action", "done", "next_tabular", "reward", "tabular")) == "rl_value_based"
    assert rl.rl_kind(("image", "label")) is None


PPO = ["--data", "gym:CartPole-v1", "--batch-size", "512", "--lr", "3e-3", "--weight-decay", "0",
       "--eval-every", "10", "--eval-episodes", "10", "--seed", "0"]


def test_ppo_on_cartpole_improves_and_resumes_bit_exactly(agents: dict[str, Path]) -> None:
    """PPO (ppo_cartpole.msl as compiled) on CartPole-v1, 512 env steps per step: the greedy mean return over
    10 validation episodes goes 9.0 (step 0), 167.3 (step 10), 139.3 (step 20) (measured, seed 0); a run killed
    after step 12 and resumed from its step-10 checkpoint repeats the uninterrupted run's losses and returns."""
    folder = agents["ppo_cartpole"]
    r = run_script(folder, "train.py", *PPO, "--steps", "20", "--run-name", "full")
    assert r.returncode == 0, r.stderr
    returns = _evals(folder / "runs" / "full")
    assert returns == [9.0, 167.3, 139.3]  # deterministic for a seed
    assert returns[-1] > 5 * returns[0], returns
    # the same run killed (SIGKILL) after step 12, its checkpoint at step 10
    with subprocess.Popen([sys.executable, "-c", NO_METAGEN, "train.py", *PPO, "--steps", "20", "--log-every", "1",
                           "--run-name", "half"], cwd=folder, stdout=subprocess.PIPE, text=True, env=ONE_THREAD) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("step 12/"):
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    assert json.loads((folder / "runs" / "half" / "last" / "trainer.json").read_text())["step"] == 10
    r = run_script(folder, "train.py", "--resume", "--run-name", "half")
    assert r.returncode == 0, r.stderr
    assert _train_losses(folder / "runs" / "half") == _train_losses(folder / "runs" / "full")
    assert _evals(folder / "runs" / "half") == returns
    # evaluate.py: the test split's episodes (other reset seeds), as one JSON object, into measurements.json
    r = run_script(folder, "evaluate.py", "--checkpoint", "runs/full/last", "--split", "test", "--episodes", "5")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["split"] == "test" and result["metrics"]["episodes"] == 5 and result["unit"] == "env steps"
    m = json.loads((folder / "runs" / "full" / "measurements.json").read_text())["measurements"]
    assert {(x["split"], x["metric"]) for x in m} >= {("val", "mean_return"), ("test", "mean_return")}
    test_value = next(x["value"] for x in m if (x["split"], x["metric"]) == ("test", "mean_return"))
    assert test_value == result["metrics"]["mean_return"]


@pytest.mark.slow
def test_dqn_on_cartpole_improves(agents: dict[str, Path]) -> None:
    """DQN (replay buffer, epsilon-greedy, Double-DQN target network) on CartPole-v1, one env step per gradient
    step. Greedy mean returns every 1000 steps, measured: seed 0: 44.1, 9.2, 11.0, 23.1, 109.9, 92.7; seed 1:
    8.9 ... 137.9, 61.8; seed 2: 9.2 ... 174.3, 124.2. DQN's curve is not monotone, so the test asks for the
    best evaluation after training to be more than twice the untrained one (train.py: 6.0 s)."""
    folder = agents["dqn_cartpole"]
    r = run_script(folder, "train.py", "--data", "gym:CartPole-v1", "--steps", "5000", "--batch-size", "64",
                "--lr", "1e-3", "--weight-decay", "0", "--eval-every", "1000", "--target-every", "200",
                "--explore-fraction", "0.3", "--run-name", "a")
    assert r.returncode == 0, r.stderr
    returns = _evals(folder / "runs" / "a")
    assert returns == [44.1, 9.2, 11.0, 23.1, 109.9, 92.7]  # deterministic for a seed
    assert max(returns[1:]) > 2 * returns[0], returns
    saved = torch.load(folder / "runs" / "a" / "last" / "extra.pt", weights_only=False)
    assert saved["replay"]["size"] == 5000


def test_reinforce_runs_on_cartpole_and_pendulum(agents: dict[str, Path]) -> None:
    """REINFORCE: a discrete policy on CartPole and the Gaussian one on Pendulum (continuous torque) train and
    evaluate; returns are those of real episodes (Pendulum's lie in [-16.3 * 200, 0])."""
    folder = agents["reinforce_lunar_lander"]
    r = run_script(folder, "train.py", "--data", "gym:CartPole-v1", *CARTPOLE_REINFORCE, "--steps", "3",
                "--batch-size", "256", "--eval-every", "3", "--eval-episodes", "3", "--run-name", "a")
    assert r.returncode == 0, r.stderr
    assert all(1 <= v <= 500 for v in _evals(folder / "runs" / "a"))
    folder = agents["reinforce_pendulum"]
    r = run_script(folder, "train.py", "--data", "gym:Pendulum-v1", "--steps", "2", "--batch-size", "200",
                "--eval-every", "2", "--eval-episodes", "2", "--run-name", "a")
    assert r.returncode == 0, r.stderr
    returns = _evals(folder / "runs" / "a")
    assert all(-16.3 * 200 <= v <= 0 for v in returns), returns
    assert json.loads((folder / "runs" / "a" / "data.json").read_text())["environment"] == "gym:Pendulum-v1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "gym:Pendulum-v1"], "gym:Pendulum-v1: observations have shape (3,), but the model expects features = 4"),
        (["--data", "gym:NoSuchEnv-v0"], "gym:NoSuchEnv-v0: cannot make the environment (NameNotFound"),
        (["--data", "gym:CartPole-v1", "--set", "num_actions=3"], "gym:CartPole-v1: 2 actions, but the model has num_actions = 3"),
        (["--data", "corpus.txt"], "corpus.txt: an RL model trains on an environment; expected --data gym:ENV_ID"),
    ],
)
def test_rl_bad_environment_is_one_line(agents: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    folder = agents["ppo_cartpole"]
    r = run_script(folder, "train.py", *args, "--steps", "1", "--out", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {message}"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())  # no run folder for a run that never started


def test_rl_continuous_env_for_a_discrete_policy_is_one_line(agents: dict[str, Path], tmp_path: Path) -> None:
    folder = agents["ppo_cartpole"]
    r = run_script(folder, "train.py", "--data", "gym:Pendulum-v1", "--set", "features=3", "--steps", "1",
                "--out", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.strip() == "error: gym:Pendulum-v1: continuous actions (1,), but the model's policy is discrete"


@pytest.mark.parametrize(
    ("source", "config", "message"),
    [
        ("gym:CartPole-v1", {"features": 4, "action_dim": 1},
         "gym:CartPole-v1: 2 discrete actions, but the model's policy is continuous"),
        ("gym:Pendulum-v1", {"features": 3, "action_dim": 2},
         "gym:Pendulum-v1: actions have shape (1,), but the model has action_dim = 2"),
    ],
)
def test_rl_action_space_mismatch(source: str, config: dict, message: str) -> None:
    with pytest.raises(rl.RLError) as e:
        rl.make_env(source, config)
    assert str(e.value) == message


# ---------------------------------------------------------------------------------------------- audio



@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten English sentences spoken by espeak-ng (22,050 Hz WAV, 1.2 to 2.8 s each) and transcripts.tsv."""
    return write_speech(tmp_path_factory.mktemp("speech") / "speech")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("more_models")
    return {name: model_folder(root, name)
            for name in ("whisper_tiny", "gcn_cora", "gcn_link_prediction", "lstm_forecast")}


def test_resample_keeps_a_tone() -> None:
    from metagen_backends.pytorch.training import data_audio

    t = torch.arange(22050) / 22050
    x = torch.sin(2 * torch.pi * 440 * t)
    y = data_audio.resample(x, 22050, 16000)
    assert y.shape == (16000,)
    ref = torch.sin(2 * torch.pi * 440 * torch.arange(16000) / 16000)
    assert (y[100:-100] - ref[100:-100]).abs().max() < 0.02


def test_whisper_trains_on_spoken_sentences(models: dict[str, Path], speech: Path) -> None:
    """whisper_tiny.msl at a tiny Config (144k parameters, 3 s windows) on espeak-ng speech: 30 steps of 4 clips.
    Measured (seed 0): train loss 5.52 -> 2.01, validation loss 5.45 (step 0) -> 2.77 (step 30)."""
    folder = models["whisper_tiny"]
    r = run_script(folder, "train.py", "--data", str(speech), *TINY_WHISPER, "--steps", "30", "--batch-size", "4",
                "--lr", "3e-3", "--eval-every", "15", "--run-name", "a")
    assert r.returncode == 0, r.stderr
    run = folder / "runs" / "a"
    losses = _train_losses(run)
    assert losses[-1] < 0.6 * losses[0], losses
    val = records(run, "val")
    assert val[-1]["loss"] < val[0]["loss"]
    info = json.loads((run / "data.json").read_text())
    assert info["sample_rate"] == 16000 and info["items"] == {"train": 8, "val": 1, "test": 1}
    assert (run / "tokenizer.json").is_file()
    r = run_script(folder, "evaluate.py", "--checkpoint", "runs/a/last", "--split", "test")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["metrics"]) == {"loss", "token_accuracy", "token_error_rate"}
    assert result["predictions"] == info["target_length"] - 1  # one clip, every next-token prediction


# ---------------------------------------------------------------------------------------------- graphs


@pytest.fixture(scope="module")
def karate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Zachary's karate club (networkx's copy of the 1977 data): 34 members, 78 ties, the club each member
    joined after the split ("Mr. Hi" or "Officer") as the label; identity features, as in Kipf and Welling."""
    nx = pytest.importorskip("networkx")
    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    doc = {"x": [[float(i == j) for j in range(n)] for i in range(n)], "edges": [list(e) for e in g.edges()],
           "undirected": True, "y": [g.nodes[i]["club"] for i in range(n)]}
    path = tmp_path_factory.mktemp("karate") / "karate.json"
    path.write_text(json.dumps(doc))
    return path


GCN_KARATE = ["--set", "features=34", "--set", "num_classes=2", "--set", "nodes=34", "--set", "edges=156"]


def test_gcn_node_classification_on_karate(models: dict[str, Path], karate: Path) -> None:
    """GCN (gcn_cora.msl with 34 features, 2 classes) on the karate club, full batch, 50 steps. Measured (seed 0):
    train loss 0.69 -> 0.19; test split (4 members) accuracy 1.0."""
    folder = models["gcn_cora"]
    r = run_script(folder, "train.py", "--data", str(karate), *GCN_KARATE, "--steps", "50", "--lr", "1e-2",
                "--eval-every", "25", "--run-name", "a")
    assert r.returncode == 0, r.stderr
    run = folder / "runs" / "a"
    losses = _train_losses(run)
    assert losses[-1] < 0.5 * losses[0], losses
    info = json.loads((run / "data.json").read_text())
    assert info["classes"] == ["Mr. Hi", "Officer"] and info["items"] == {"train": 28, "val": 3, "test": 3}
    r = run_script(folder, "evaluate.py", "--checkpoint", "runs/a/last", "--split", "test")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["predictions"] == 3 and result["metrics"]["accuracy"] >= 2 / 3


def test_gcn_link_prediction_on_karate(models: dict[str, Path], karate: Path) -> None:
    folder = models["gcn_link_prediction"]
    r = run_script(folder, "train.py", "--data", str(karate), "--set", "features=34", "--steps", "40", "--lr", "1e-2",
                "--eval-every", "20", "--run-name", "a")
    assert r.returncode == 0, r.stderr
    losses = _train_losses(folder / "runs" / "a")
    assert losses[-1] < losses[0], losses
    info = json.loads((folder / "runs" / "a" / "data.json").read_text())
    assert sorted(len(info["split"][s]) for s in ("train", "val", "test")) == [8, 8, 62]
    r = run_script(folder, "evaluate.py", "--checkpoint", "runs/a/last", "--split", "test")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["metrics"]) == {"loss", "roc_auc", "accuracy"}


def test_whole_graph_takes_batch_size_one(models: dict[str, Path], karate: Path, tmp_path: Path) -> None:
    r = run_script(models["gcn_cora"], "train.py", "--data", str(karate), *GCN_KARATE, "--steps", "1",
                "--batch-size", "8", "--out", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.strip() == (f"error: {karate}: the whole graph is one batch; train in one process with "
                                "--batch-size 1 and no --grad-accum")


# ---------------------------------------------------------------------------------------------- series


@pytest.fixture(scope="module")
def stocks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Monthly closing prices 1990-2024 (matplotlib's sample_data/Stocks.csv, from Yahoo Finance): the S&P 500,
    the Nasdaq composite, IBM and Microsoft, the rows where all four are present, with their date column."""
    cbook = pytest.importorskip("matplotlib.cbook")
    source = Path(cbook.get_sample_data("Stocks.csv", asfileobj=False))
    lines = [x for x in source.read_text().splitlines() if not x.startswith("#")]
    header = lines[0].split(",")
    cols = ["Date", "^GSPC", "^IXIC", "IBM", "MSFT"]
    idx = [header.index(c) for c in cols]
    rows = [[r[i] for i in idx] for r in (x.split(",") for x in lines[1:])]
    path = tmp_path_factory.mktemp("stocks") / "stocks.csv"
    path.write_text(",".join(cols) + "\n" + "".join(",".join(r) + "\n" for r in rows if all(r)))
    return path


TINY_LSTM = ["--set", "features=4", "--set", "lookback=12", "--set", "horizon=3", "--set", "d_model=16",
             "--set", "hidden=32", "--set", "layers=1"]


def test_lstm_forecasts_stock_prices(models: dict[str, Path], stocks: Path) -> None:
    """lstm_forecast.msl (12 months in, 3 out, 4 series) on the stocks table, split by time 80/10/10."""
    folder = models["lstm_forecast"]
    r = run_script(folder, "train.py", "--data", str(stocks), *TINY_LSTM, "--steps", "60", "--batch-size", "32",
                "--lr", "3e-3", "--eval-every", "30", "--run-name", "a")
    assert r.returncode == 0, r.stderr
    run = folder / "runs" / "a"
    info = json.loads((run / "data.json").read_text())
    assert info["features"] == ["^GSPC", "^IXIC", "IBM", "MSFT"] and info["split"]["by"] == "time"
    rows = info["split"]["rows"]
    assert rows["train"][1] == rows["val"][0] and rows["val"][1] == rows["test"][0]
    assert info["items"]["val"] == rows["val"][1] - rows["val"][0] - 12 - 3 + 1
    losses = _train_losses(run)
    assert losses[-1] < 0.5 * losses[0], losses
    r = run_script(folder, "evaluate.py", "--checkpoint", "runs/a/last", "--split", "test")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["metrics"]) == {"loss", "mae", "rmse", "mape"}
    assert result["predictions"] == info["items"]["test"] * 3 * 4


# ------------------------------------------------------------------------------------------ bad data


def _bad(folder: Path, tmp_path: Path, *args: str) -> str:
    r = run_script(folder, "train.py", *args, "--steps", "1", "--out", str(tmp_path / "runs"))
    assert r.returncode == 1, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    return r.stderr.strip().removeprefix("error: ")


def test_bad_audio_is_one_line(models: dict[str, Path], speech: Path, tmp_path: Path) -> None:
    folder = models["whisper_tiny"]
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in speech.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    tsv = bad / "transcripts.tsv"
    lines = tsv.read_text().splitlines()
    tsv.write_text("\n".join([*lines[:2], "missing.wav\thello", *lines[2:]]) + "\n")
    assert _bad(folder, tmp_path, "--data", str(bad), *TINY_WHISPER) == (
        f"{tsv}:3: audio file `missing.wav` not found (relative to {bad})")
    tsv.write_text("\n".join([*lines[:2], "s0.wav hello", *lines[2:]]) + "\n")
    assert _bad(folder, tmp_path, "--data", str(bad), *TINY_WHISPER) == f"{tsv}:3: no tab; expected `path<TAB>transcript`"
    (bad / "s3.wav").write_text("not audio")
    tsv.write_text("\n".join(lines) + "\n")
    msg = _bad(folder, tmp_path, "--data", str(bad), *TINY_WHISPER)
    assert msg.startswith(f"{bad / 's3.wav'}: not a readable audio file (") and msg.endswith("expected WAV or FLAC")
    (bad / "s3.wav").write_bytes((speech / "s3.wav").read_bytes())
    short = [a if a != "samples=48000" else "samples=16000" for a in TINY_WHISPER]
    msg = _bad(folder, tmp_path, "--data", str(bad), *short)
    assert msg.endswith("longer than the model's 16000 samples (1.00 s); split the file or build the model with "
                        "--set samples=N"), msg
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _bad(folder, tmp_path, "--data", str(empty), *TINY_WHISPER) == (
        f"{empty}: no transcripts.tsv or transcripts.jsonl; expected a list of audio files and their transcripts")


def test_bad_graph_is_one_line(models: dict[str, Path], karate: Path, tmp_path: Path) -> None:
    folder = models["gcn_cora"]
    doc = json.loads(karate.read_text())
    path = tmp_path / "g.json"

    def bad(change: dict) -> str:
        path.write_text(json.dumps({**doc, **change}))
        return _bad(folder, tmp_path, "--data", str(path), *GCN_KARATE)

    assert bad({"edges": [*doc["edges"][:5], [0, 34]]}) == (
        f"{path}: edges[5] is [0, 34]; expected [source, target] node ids in 0..33")
    assert bad({"x": [*doc["x"][:3], [1.0, 2.0], *doc["x"][4:]]}) == (
        f"{path}: x[3] has 2 values; expected 34 numbers (the model's features)")
    assert bad({"y": doc["y"][:10]}) == f"{path}: `y` has 10 labels; expected one per node (34)"
    assert bad({"y": [*doc["y"][:-1], "Third"]}) == f"{path}: 3 classes in `y`, but the model has num_classes = 2"
    assert bad({"split": {"train": [0, 1], "val": [2, 99], "test": [3]}}) == (
        f"{path}: split `val` lists node 99, which is not a labelled node id")
    path.write_text("{not json")
    assert _bad(folder, tmp_path, "--data", str(path), *GCN_KARATE) == (
        f"{path}: not a JSON graph (JSONDecodeError); expected {{\"x\", \"edges\", ...}}")


def test_bad_series_is_one_line(models: dict[str, Path], stocks: Path, tmp_path: Path) -> None:
    folder = models["lstm_forecast"]
    lines = stocks.read_text().splitlines()
    path = tmp_path / "s.csv"
    path.write_text("\n".join([*lines[:5], "1991-01-01,,1,2,3", *lines[5:]]) + "\n")
    assert _bad(folder, tmp_path, "--data", str(path), *TINY_LSTM) == (
        f"{path}:6: column `^GSPC` is `(empty)`; expected a finite number")
    assert _bad(folder, tmp_path, "--data", str(stocks), *TINY_LSTM, "--features", "IBM,Volume") == (
        f"{stocks}: no column `Volume`; columns are Date, ^GSPC, ^IXIC, IBM, MSFT")
    assert _bad(folder, tmp_path, "--data", str(stocks), *TINY_LSTM, "--features", "IBM,MSFT") == (
        f"{stocks}: 2 input columns (IBM, MSFT), but the model expects features = 4 (name them with --features)")
    path.write_text("\n".join(lines[:40]) + "\n")
    assert _bad(folder, tmp_path, "--data", str(path), *TINY_LSTM) == (
        f"{path}: the val split has 4 rows, fewer than one window of lookback 12 + horizon 3")


# ------------------------------------------------------------------------------------ measurements.json


def test_measurements_of_a_text_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    """train.py writes the final validation metrics, evaluate.py adds its split; tokens seen = steps x batch x block."""
    if not GPL.is_file():
        pytest.skip("Debian's base-files GPL-3 text is not here")
    folder = model_folder(tmp_path_factory.mktemp("lm"), "tiny_story")
    r = run_script(folder, "train.py", "--data", str(GPL), "--steps", "4", "--batch-size", "8", "--block-size", "16",
                "--eval-every", "4", "--run-name", "a", *TINY_LM)
    assert r.returncode == 0, r.stderr
    run = folder / "runs" / "a"
    doc = json.loads((run / "measurements.json").read_text())
    assert doc["format"] == 1
    val = {m["metric"]: m for m in doc["measurements"] if m["split"] == "val"}
    assert set(val) == {"loss", "perplexity", "token_accuracy"}
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert val["perplexity"]["value"] == last["perplexity"] and val["perplexity"]["steps"] == 4
    m = val["loss"]
    assert (m["seen"], m["unit"], m["synthetic"], m["data"]) == (4 * 8 * 16, "tokens", False, str(GPL))
    assert m["hardware"]["device"] == "cpu" and m["hardware"]["processes"] == 1 and m["wall_s"] > 0
    r = run_script(folder, "evaluate.py", "--checkpoint", "runs/a/last", "--split", "test")
    assert r.returncode == 0, r.stderr
    doc = json.loads((run / "measurements.json").read_text())
    assert {m["split"] for m in doc["measurements"]} == {"val", "test"}
    r = run_script(folder, "evaluate.py", "--checkpoint", "runs/a/last", "--split", "test")  # replaces, not appends
    assert len(json.loads((run / "measurements.json").read_text())["measurements"]) == 6


def test_synthetic_measurements_say_so(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = model_folder(tmp_path_factory.mktemp("syn"), "tiny_story")
    r = run_script(folder, "train.py", "--data", "synthetic", "--steps", "2", "--batch-size", "4", "--block-size", "8",
                "--eval-every", "2", "--run-name", "a", *TINY_LM)
    assert r.returncode == 0, r.stderr
    doc = json.loads((folder / "runs" / "a" / "measurements.json").read_text())
    assert doc["measurements"] and all(m["synthetic"] for m in doc["measurements"])
