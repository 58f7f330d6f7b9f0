"""Every bad input of the inference package (backends/pytorch/inference) is one line `error: ...` on stderr and
exit status 1, never a traceback: each `raise PredictError(...)` is triggered here through a public entry
(predict.py's main, `metagenc predict`, load_pipeline) with real inputs, tiny files the tests write, and tiny
examples with random weights. test_every_predict_error_is_triggered checks that no raise site is left without a
test (here, in test_predict.py or in test_inference_more.py)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from training_helpers import ROOT, gpl_tokenizer, model_folder, one_thread, run_script

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")
pytest.importorskip("PIL")

_one_thread = pytest.fixture(autouse=True)(one_thread)

INFERENCE = ROOT / "backends" / "pytorch" / "inference"
OWN = ("inputs.py", "pipelines.py", "predict.py", "tasks.py", "ocr.py", "audio_out.py")  # raise sites checked below

SETS: dict[str, list[str]] = {
    "gpt2": ["vocab=400", "layers=1", "d_model=32", "heads=2", "context=32"],
    "switch_lm": ["vocab=400", "layers=1", "d_model=32", "heads=2", "hidden=64", "experts=2", "context=32"],
    "resnet50": ["image_size=32", "channels=1", "width=8", "depths=1,1,1,1", "expansion=2", "num_classes=3"],
    "video_classifier": ["frames=2", "image_size=16", "tubelet=2", "patch_size=8", "layers=1", "d_model=32",
                         "heads=2", "mlp_dim=64", "num_classes=3"],
    "whisper_tiny": ["samples=16000", "source_positions=50", "vocab=400", "context=32", "layers=1",
                     "decoder_layers=1", "d_model=64", "heads=2", "ffn=128"],
    "tabular_classifier": ["features=3", "hidden=8", "layers=1"],
    "lstm_forecast": ["features=3", "lookback=4", "horizon=2", "d_model=8", "hidden=8", "layers=1"],
    "gcn_cora": ["features=3", "hidden=4", "num_classes=2"],
    "gcn_link_prediction": ["features=3", "hidden=4", "embedding_dim=4"],
    "pointnet": ["points=32", "width=8", "num_classes=3"],
    "vlm_small": ["vocab=400", "image_size=32", "vision_layers=1", "vision_width=64", "vision_heads=2", "layers=1",
                  "d_model=64", "heads=2", "context=8"],
    "fusion_early": ["image_size=32", "patch_size=16", "vocab=400", "layers=1", "d_model=64"],
    "bert_squad": ["vocab=400", "layers=1", "d_model=64", "heads=2", "mlp_dim=128", "context=16"],
    "latte_video": ["vocab=400", "frames=2", "image_size=8", "text_layers=1", "layers=1", "d_model=32", "heads=2"],
    "tiny_diffusion": ["image_size=8", "base=32", "channel_mult=1,2", "attention_levels=0,1", "groups=8",
                       "text_width=32", "text_heads=2", "heads=2", "vocab=100"],
    "clip_vit_b_32": ["vocab=400", "vision_layers=1", "vision_width=64", "vision_heads=2", "vision_mlp=128",
                      "text_layers=1", "text_width=64", "text_heads=2", "text_mlp=128", "embed_dim=32",
                      "image_size=32"],
    "two_tower_recsys": ["num_users=10", "num_items=20", "embedding_dim=8", "hidden=16", "output_dim=8",
                         "ranking_hidden=8"],
    "ranker": ["num_users=10", "num_items=20", "embedding_dim=8", "hidden=16", "output_dim=8", "ranking_hidden=8"],
    "rag_fid": ["vocab=400", "passage_length=16", "num_passages=4", "top_k=2", "retriever_layers=1",
                "retriever_d_model=32", "retriever_heads=2", "retriever_mlp=64", "layers=1", "decoder_layers=1",
                "d_model=32", "heads=2", "d_kv=16", "d_ff=64"],
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("predict_errors")


tokenizer = pytest.fixture(scope="module")(gpl_tokenizer)


@pytest.fixture(scope="module")
def folder(root: Path) -> Callable[[str], Path]:
    """The output folder of examples/<name>.msl, compiled once."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = model_folder(root / "models", name)
        return made[name]

    return get


def _one_line(rc: int, err: str) -> str:
    assert rc == 1, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def predict(capsys: pytest.CaptureFixture[str], folder: Callable[[str], Path],
            tokenizer: Path) -> Callable[..., str]:
    """predict.py's main on an example at its tiny size with random weights (or `weights`), with the test's
    tokenizer unless `tokenizer=False`; returns the one error line (and checks there is exactly one, exit 1)."""
    from metagen_backends.pytorch.inference.predict import main

    def run(name: str, *args: str, init: bool = True, tok: bool = True, sets: list[str] | None = None) -> str:
        capsys.readouterr()
        where = ["--model-dir", str(folder(name))] if "--model-dir" not in args else []
        setting = [a for s in (SETS.get(name, []) if sets is None else sets) for a in ("--set", s)]
        rc = main([*where, *(["--random-init"] if init else []), *setting,
                   *(["--tokenizer", str(tokenizer)] if tok else []), *args])
        return _one_line(rc, capsys.readouterr().err)

    return run


@pytest.fixture(scope="module")
def files(root: Path) -> dict[str, Path]:
    """The tiny inputs, good and bad."""
    from PIL import Image

    d = root / "files"
    d.mkdir()
    out: dict[str, Path] = {"dir": d}

    def write(name: str, text: str | bytes) -> Path:
        out[name] = d / name
        if isinstance(text, bytes):
            out[name].write_bytes(text)
        else:
            out[name].write_text(text)
        return out[name]

    Image.new("L", (20, 12), 128).save(d / "grey.png")
    Image.new("RGB", (8, 8), (200, 10, 10)).save(d / "rgb8.png")
    Image.new("L", (5, 5), 255).save(d / "mask5.png")
    out.update(png=d / "grey.png", rgb8=d / "rgb8.png", mask5=d / "mask5.png")
    write("not_json.json", "{not json")
    write("labels_bad.json", "[1, 2,")
    write("garbage.pt", b"not a pickle at all")
    write("three_cols.csv", "a,b,c\n1,2,3\n")
    write("two_cols.csv", "a,b\n1,2\n3,4\n5,6\n7,8\n9,10\n")
    write("short_series.csv", "a,b,c\n1,2,3\n4,5,6\n")
    write("points_bad.json", "[[1, 2, 3], [4, 5")
    write("points_2d.xyz", "1 2\n3 4\n5 6\n")
    write("points_words.xyz", "1 2 3\n4 five 6\n")
    (d / "empty_frames").mkdir()
    (d / "no_docs").mkdir()
    (d / "docs").mkdir()
    (d / "docs" / "gpl.txt").write_text("Free software is software that respects freedom.")
    torch.save(torch.zeros(2, 8, 8), d / "wrong.pt")
    out["wrong.pt"] = d / "wrong.pt"
    return out


# ----------------------------------------------------------------------------------- loading the pipeline


def test_weights_and_checkpoints_that_are_not_there(predict: Callable[..., str], root: Path) -> None:
    assert "no weights: pass --weights FILE" in predict("gpt2", "Once", init=False)
    assert "nope.safetensors: no such checkpoint file or folder" in predict(
        "gpt2", "--weights", str(root / "nope.safetensors"), "Once", init=False)
    assert "no checkpoint (expected runs/<run>/last with trainer.json" in predict(
        "gpt2", "--checkpoint", str(root / "runs" / "none" / "last"), "Once", init=False, sets=[])


def _fake_run(root: Path, name: str, config: str | None, weights: bytes | None = None,
              data_json: str | None = None) -> Path:
    run = root / "runs" / name
    (run / "last").mkdir(parents=True, exist_ok=True)
    (run / "last" / "trainer.json").write_text("{}")
    if config is not None:
        (run / "config.json").write_text(config)
    if weights is not None:
        (run / "last" / "model.safetensors").write_bytes(weights)
    if data_json is not None:
        (run / "data.json").write_text(data_json)
    return run / "last"


def test_run_folders_that_do_not_load(predict: Callable[..., str], root: Path) -> None:
    def ckpt(last: Path) -> str:
        return predict("tabular_classifier", "--checkpoint", str(last), "1,2,3", init=False, sets=[], tok=False)

    model = {"model": {"features": 3, "hidden": 8, "layers": 1}}
    assert "not a run folder (FileNotFoundError reading config.json)" in ckpt(_fake_run(root, "no_config", None))
    assert "not a run folder (JSONDecodeError reading config.json)" in ckpt(_fake_run(root, "bad_config", "{x"))
    assert "expected an object with the run's `model` Config fields" in ckpt(_fake_run(root, "list", "[1]"))
    assert "model.safetensors: does not load into this model.py (FileNotFoundError" in ckpt(
        _fake_run(root, "no_weights", json.dumps(model)))
    assert "model.safetensors: does not load into this model.py (SafetensorError" in ckpt(
        _fake_run(root, "garbage", json.dumps(model), b"not safetensors"))


def _real_run(root: Path, folder: Path, name: str, data_json: str) -> Path:
    """A run folder of the tabular classifier at its tiny size: its weights saved as train.py saves them."""
    from metagen_backends.pytorch.inference import load_pipeline
    from safetensors.torch import save_model

    pipe = load_pipeline(folder, random_init=True, overrides=SETS["tabular_classifier"])
    model = {"model": {"features": 3, "hidden": 8, "layers": 1}}
    last = _fake_run(root, name, json.dumps(model), data_json=data_json)
    save_model(pipe.model, str(last / "model.safetensors"))
    return last


def test_run_state_and_weights_of_another_size(predict: Callable[..., str], root: Path, folder: Callable[[str], Path],
                                               files: dict[str, Path]) -> None:
    last = _real_run(root, folder("tabular_classifier"), "bad_state", "{oops")
    assert "data.json: not valid JSON" in predict("tabular_classifier", "--checkpoint", str(last), "1,2,3",
                                                  init=False, sets=[], tok=False)
    wide = _fake_run(root, "wide", json.dumps({"model": {"features": 3, "hidden": 16, "layers": 1}}))
    shutil.copy(last / "model.safetensors", wide / "model.safetensors")
    err = predict("tabular_classifier", "--checkpoint", str(wide), "1,2,3", init=False, sets=[], tok=False)
    assert "does not load into this model.py (RuntimeError: Error(s) in loading state_dict" in err
    named = _real_run(root, folder("tabular_classifier"), "named", json.dumps({"features": ["a", "b", "d"]}))
    err = predict("tabular_classifier", "--checkpoint", str(named), str(files["three_cols.csv"]), init=False,
                  sets=[], tok=False)
    assert "three_cols.csv: no column `d`; the model was trained on the columns a, b, d" in err


def test_bad_config_overrides_and_a_folder_without_weights_py(predict: Callable[..., str], root: Path,
                                                              folder: Callable[[str], Path]) -> None:
    assert "--set colour=red: expected NAME=VALUE with NAME one of" in predict("gpt2", "--set", "colour=red", "Once")
    bare = root / "bare_gpt2"
    shutil.copytree(folder("gpt2"), bare)
    (bare / "weights.py").unlink()
    weights = root / "gpt2_own.pt"
    weights.write_bytes(b"")
    err = predict("gpt2", "--model-dir", str(bare), "--weights", str(weights), "Once", init=False)
    assert "no weights.py beside model.py; compile the spec again" in err


def test_devices_that_are_not_here(predict: Callable[..., str]) -> None:
    assert "--device gpu: not a device; expected cpu, cuda, cuda:N or auto" in predict("gpt2", "--device", "gpu",
                                                                                    "Once")
    if not torch.cuda.is_available():
        err = predict("gpt2", "--device", "cuda", "Once")
        assert "--device cuda: this torch sees no CUDA GPU; use --device cpu (or auto)" in err


def test_a_folder_without_model_py(predict: Callable[..., str], root: Path) -> None:
    (root / "empty_out").mkdir()
    err = predict("gpt2", "--model-dir", str(root / "empty_out"), "Once", sets=[])
    assert "empty_out: no model.py; expected an output folder of metagenc (OUT/<model>)" in err


HAND_WRITTEN = '''"""A model.py written by hand, not by metagenc."""
import dataclasses

import torch

TASK = "{task}"


@dataclasses.dataclass
class Config:
    width: int = 4


class Net(torch.nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(4, 2)

    def forward(self, {inputs}):
        return self.proj({first})


def build_model(config=None):
    return Net(config or Config())


def example_inputs(model, batch_size=1):
    return tuple(torch.zeros(batch_size, 4) for _ in range({count}))
'''


def _hand_written(root: Path, name: str, task: str, inputs: list[str], broken: bool = False) -> Path:
    out = root / "hand" / name
    out.mkdir(parents=True)
    text = HAND_WRITTEN.format(task=task, inputs=", ".join(inputs), first=inputs[0], count=len(inputs))
    (out / "model.py").write_text(text + "\nthis line is not Python\n" if broken else text)
    return out


def test_model_py_that_does_not_import_or_has_no_pipeline(predict: Callable[..., str], root: Path,
                                                          files: dict[str, Path]) -> None:
    def run(out: Path, *args: str) -> str:
        return predict("gpt2", "--model-dir", str(out), *args, sets=[], tok=False)

    err = run(_hand_written(root, "broken", "classification", ["x"], broken=True), "1,2,3,4")
    assert "model.py: cannot import it (SyntaxError" in err and "compile the spec again" in err
    err = run(_hand_written(root, "telepathy", "telepathy", ["x"]), "1")
    assert "task `telepathy` of " in err and err.endswith(": no pipeline")
    err = run(_hand_written(root, "two_inputs", "classification", ["left", "right"]), "1,2,3,4")
    assert "a model with inputs left, right: no pipeline for the task `classification` yet" in err
    err = run(_hand_written(root, "signal", "classification", ["signal"]), "1,2,3,4")
    assert "input `signal` (4,): no reader yet for the task `classification`" in err


def test_tokenizers_and_labels_that_cannot_be_read(predict: Callable[..., str], root: Path,
                                                   files: dict[str, Path]) -> None:
    assert "missing.json: no such tokenizer file; expected a tokenizer.json" in predict(
        "gpt2", "--tokenizer", str(root / "missing.json"), "Once", tok=False)
    assert "not_json.json: not a tokenizer.json (" in predict("gpt2", "--tokenizer", str(files["not_json.json"]),
                                                             "Once", tok=False)
    png = str(files["png"])
    assert "labels.txt: no such labels file" in predict("resnet50", "--labels", str(root / "labels.txt"), png,
                                                        tok=False)
    assert "labels_bad.json: not valid JSON (" in predict("resnet50", "--labels", str(files["labels_bad.json"]), png,
                                                          tok=False)
    number, keys = files["dir"] / "labels_number.json", files["dir"] / "labels_keys.json"
    number.write_text("5")
    keys.write_text(json.dumps({"id2label": {"0": "cat", "dog": "dog"}}))
    assert 'labels_number.json: expected a JSON list of class names or an id2label object ({"0": name, ...}), not int' \
        in predict(
        "resnet50", "--labels", str(number), png, tok=False)
    assert "labels_keys.json: the key `dog` of the id2label object is not an integer class id" in predict(
        "resnet50", "--labels", str(keys), png, tok=False)


def test_no_inputs(predict: Callable[..., str], root: Path, folder: Callable[[str], Path]) -> None:
    from metagen_backends.pytorch.inference import load_pipeline
    from metagen_backends.pytorch.inference.inputs import PredictError

    assert "no inputs: give prompts, files or values after the options" in predict("resnet50", tok=False)
    pipe = load_pipeline(folder("resnet50"), random_init=True, overrides=SETS["resnet50"])
    with pytest.raises(PredictError, match="no inputs: give a prompt, a file or a value"):
        pipe([])


# ----------------------------------------------------------------------------------------------- text


def test_text_errors(predict: Callable[..., str]) -> None:
    assert "text input needs a tokenizer: pass --tokenizer tokenizer.json" in predict("gpt2", "Once", tok=False)
    assert "an empty prompt: give at least one token of text" in predict("gpt2", "")
    small_vocab = [s if not s.startswith("vocab=") else "vocab=100" for s in SETS["gpt2"]]
    err = predict("gpt2", "--max-new-tokens", "2", "This License applies to any program", sets=small_vocab)
    assert "beyond the model's vocab of 100: pass this model's tokenizer.json (--tokenizer)" in err
    long_prompt = " ".join(["freedom"] * 40)
    assert "tokens, longer than the model's context of 32" in predict("gpt2", long_prompt)
    assert "that passes the model's context of 32" in predict("gpt2", "--max-new-tokens", "40", "Once upon")
    long_question = "what does the license say about " + " ".join(["software"] * 20)
    assert "the question and context are" in predict("bert_squad", "--context", "free software", long_question)
    assert "longer than the model's context of 16" in predict("bert_squad", long_question)


def test_a_context_without_tokens_is_one_line(predict: Callable[..., str], root: Path) -> None:
    """A WordPiece tokenizer that lower-cases strips accents: a context of a lone combining accent has no tokens,
    so no span of it can be the answer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(["what is free software?"], trainers.WordPieceTrainer(
        vocab_size=60, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    path = root / "wordpiece.json"
    tok.save(str(path))
    err = predict("bert_squad", "--tokenizer", str(path), "--context", "\u0301", "what is free?", tok=False)
    assert "gives the tokenizer no tokens to answer from" in err
    assert "--max-answer must be 1 or more, got 0" in predict("bert_squad", "--max-answer", "0", "--context",
                                                             "free software", "what is free?")


def test_beam_search_options(predict: Callable[..., str]) -> None:
    short = ["--max-new-tokens", "4"]
    assert "--num-beams must be 1 or more, got 0" in predict("gpt2", *short, "--num-beams", "0", "Once")
    assert "--num-beams 3 searches for the likeliest text and --do-sample samples one: give one of them" in predict(
        "gpt2", *short, "--num-beams", "3", "--do-sample", "Once")
    err = predict("switch_lm", *short, "--num-beams", "2", "Once")
    assert "has no generate() in model.py" in err and "beam search is not available" in err


# --------------------------------------------------------------------------------------- images, video


def test_image_and_video_errors(predict: Callable[..., str], root: Path, files: dict[str, Path]) -> None:
    assert "gone.png: no such image file" in predict("resnet50", str(root / "gone.png"), tok=False)
    assert "not_json.json: not a readable image (" in predict("resnet50", str(files["not_json.json"]), tok=False)
    assert "empty_frames: no frames; expected a folder of frame images or an animated GIF" in predict(
        "video_classifier", str(files["dir"] / "empty_frames"), tok=False)


def test_image_and_text_pairs(predict: Callable[..., str], files: dict[str, Path]) -> None:
    png = str(files["png"])
    assert "the task `multimodal_classification` takes an image file (" in predict("fusion_early", "a caption")
    assert "1 images and 2 texts: give one text, or one per image" in predict("fusion_early", png, "one", "two")
    err = predict("vlm_small", "--max-new-tokens", "6", png, "free software")
    assert "the prompt is 7 tokens; with --max-new-tokens 6 that passes the model's context of 8" in err
    assert "retrieval ranks texts for images: give image files and texts" in predict("clip_vit_b_32", "a photo")


# ---------------------------------------------------------------------------------------------- audio


def test_audio_errors(predict: Callable[..., str], root: Path, files: dict[str, Path]) -> None:
    soundfile = pytest.importorskip("soundfile")
    import numpy as np

    low = root / "low.wav"
    soundfile.write(str(low), np.zeros(2000, dtype="float32"), 2000)
    assert "transcripts need the tokenizer: pass --checkpoint" in predict("whisper_tiny", str(low), tok=False)
    assert "nothing.wav: no such audio file" in predict("whisper_tiny", str(root / "nothing.wav"))
    assert "not_json.json: not a readable audio file (" in predict("whisper_tiny", str(files["not_json.json"]))
    assert "sampled at 2000 Hz, too low to resample to the model's 16000 Hz" in predict("whisper_tiny", str(low))


# ----------------------------------------------------------------------------------- tables and series


def test_rows_that_are_not_the_models(predict: Callable[..., str], root: Path, files: dict[str, Path]) -> None:
    def rows(*args: str) -> str:
        return predict("tabular_classifier", *args, tok=False)

    assert "input `1,x,3`: `x` is not a number; expected comma-separated numbers" in rows("1,x,3")
    assert "input `1,inf,3`: `inf` is not a finite number" in rows("1,inf,3")
    assert "absent.csv: no such CSV file" in rows(str(root / "absent.csv"))
    assert "error: 1,2: 2 values; the model expects features = 3" in rows("1,2")
    assert "two_cols.csv:2: 2 values; the model expects features = 3" in rows(str(files["two_cols.csv"]))


def test_series_that_do_not_fit(predict: Callable[..., str], root: Path, files: dict[str, Path]) -> None:
    def series(path: Path) -> str:
        return predict("lstm_forecast", str(path), tok=False)

    assert "absent.csv: no such CSV file" in series(root / "absent.csv")
    assert "two_cols.csv: 2 input columns (a, b), but the model expects features = 3" in series(
        files["two_cols.csv"])
    assert "short_series.csv: 2 rows, fewer than the model's lookback of 4" in series(files["short_series.csv"])


# ------------------------------------------------------------------------------------- graphs and points


def test_graph_errors(predict: Callable[..., str], root: Path) -> None:
    graph = root / "path_graph.json"
    graph.write_text(json.dumps({"x": [[1.0, 0.0, float(i)] for i in range(3)], "edges": [[0, 1], [1, 2]]}))
    assert "absent.json: no such graph file" in predict("gcn_cora", str(root / "absent.json"), tok=False)
    assert "--pairs `0-7`: expected SOURCE-TARGET node ids in 0..2" in predict(
        "gcn_link_prediction", "--pairs", "0-1,0-7", str(graph), tok=False)
    assert "--pairs `1`: expected SOURCE-TARGET node ids" in predict("gcn_link_prediction", "--pairs", "1",
                                                                     str(graph), tok=False)


def test_point_cloud_errors(predict: Callable[..., str], root: Path, folder: Callable[[str], Path],
                            files: dict[str, Path]) -> None:
    def points(*args: str) -> str:
        return predict("pointnet", *args, tok=False)

    assert "absent.xyz: no such point-cloud file" in points(str(root / "absent.xyz"))
    assert "points_bad.json: not valid JSON (" in points(str(files["points_bad.json"]))
    assert "points_2d.xyz: expected one point of 3 coordinates per line" in points(str(files["points_2d.xyz"]))
    assert "points_words.xyz:2: `five` is not a number" in points(str(files["points_words.xyz"]))
    old = root / "pointnet_old"
    shutil.copytree(folder("pointnet"), old)
    (old / "data_points.py").unlink()
    npy = root / "cloud.npy"
    npy.write_bytes(b"\x93NUMPY")
    err = _script_error(old, "--random-init", *[a for s in SETS["pointnet"] for a in ("--set", s)], str(npy))
    assert "cloud.npy: .npy and .ply need data_points.py beside model.py; compile again" in err


def _script_error(out: Path, *args: str) -> str:
    """The folder's own predict.py in a process of its own, MetaGen unimportable: its one error line."""
    r = run_script(out, "predict.py", *args)
    return _one_line(r.returncode, r.stderr)


# ------------------------------------------------------------------------------------------- diffusion


def test_diffusion_inputs(predict: Callable[..., str], root: Path, files: dict[str, Path]) -> None:
    run = ["--steps", "2"]
    assert "image-to-image and inpainting are for image models; this model samples" in predict(
        "latte_video", *run, "--init-image", str(files["rgb8"]), "a cat")
    assert "garbage.pt: not a readable tensor file (" in predict("tiny_diffusion", *run, "--init-image",
                                                                 str(files["garbage.pt"]), "a cat")
    assert "--strength and --mask need --init-image" in predict("tiny_diffusion", *run, "--strength", "0.5", "a")
    assert "wrong.pt: the init latent is (2, 8, 8), the model samples (4, 8, 8)" in predict(
        "tiny_diffusion", *run, "--init-image", str(files["wrong.pt"]), "a cat")
    pixel = [*SETS["tiny_diffusion"], "channels=3"]
    assert "the mask is 5x5, the init image 8x8; they must be the same size" in predict(
        "tiny_diffusion", *run, "--init-image", str(files["rgb8"]), "--mask", str(files["mask5"]), "a", sets=pixel)
    assert "--strength must be in [0, 1]" in predict("tiny_diffusion", *run, "--init-image", str(files["rgb8"]),
                                                     "--strength", "2", "a", sets=pixel)


# ------------------------------------------------------------------------------------ recommendation, RAG


def test_ids_and_documents(predict: Callable[..., str], files: dict[str, Path]) -> None:
    assert "input `alice`: expected an integer user id" in predict("two_tower_recsys", "alice", tok=False)
    assert "user 12: the model knows users 0..9" in predict("two_tower_recsys", "3", "12", tok=False)
    assert "input `3`: expected USER:ITEM ids" in predict("ranker", "3", tok=False)
    assert "input `x`: expected an integer item id" in predict("ranker", "3:x", tok=False)
    assert "item 20: the model knows items 0..19" in predict("ranker", "3:4", "3:20", tok=False)
    assert "user 10: the model knows users 0..9" in predict("ranker", "10:4", tok=False)
    assert "user -1: the model knows users 0..9" in predict("two_tower_recsys", "-1", tok=False)
    assert "action 5: the model knows actions 0..1" in predict("world_model", "--action", "5", "0.1,0.2,0.3,0.4",
                                                               tok=False)
    assert "retrieval-augmented generation needs --docs FOLDER" in predict("rag_fid", "what is free?")
    assert "no_docs: no .txt or .md documents" in predict("rag_fid", "--docs", str(files["dir"] / "no_docs"),
                                                          "what is free?")


# ------------------------------------------------------------------------------------- the other entries


def test_metagenc_predict_gives_the_same_one_line(folder: Callable[[str], Path], root: Path) -> None:
    """`metagenc predict` in a process of its own: the error line and exit 1; and a folder without predict.py."""
    out = folder("tabular_classifier")
    args = ["--random-init", *[a for s in SETS["tabular_classifier"] for a in ("--set", s)], "1,x,3"]
    r = subprocess.run([sys.executable, "-m", "metagen_compiler.cli", "predict", str(out), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, check=False)
    assert "`x` is not a number" in _one_line(r.returncode, r.stderr)
    assert "`x` is not a number" in _script_error(out, *args)
    r = subprocess.run([sys.executable, "-m", "metagen_compiler.cli", "predict", str(root), "x"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 1 and "no predict.py; expected an output folder of metagenc" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------------------------- the guard


def _raise_sites() -> list[tuple[str, int, list[str]]]:
    """(file, line, the literal parts of the message) of every `raise PredictError(...)` in OWN."""
    sites = []
    for name in OWN:
        for node in ast.walk(ast.parse((INFERENCE / name).read_text())):
            if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
                continue
            func = node.exc.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called != "PredictError" or not node.exc.args:
                continue
            message = node.exc.args[0]
            parts = [v.value for v in message.values if isinstance(v, ast.Constant)] \
                if isinstance(message, ast.JoinedStr) else \
                [message.value] if isinstance(message, ast.Constant) else []
            sites.append((name, node.lineno, [str(p).strip() for p in parts]))
    return sites


def _expected_texts() -> list[str]:
    """Every string in the inference tests (the messages they expect among them)."""
    texts = []
    for name in ("test_predict_errors.py", "test_predict.py", "test_predict_decoding.py", "test_inference_more.py"):
        for node in ast.walk(ast.parse((ROOT / "tests" / name).read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.append(node.value.strip())
    return texts


def test_every_predict_error_is_triggered() -> None:
    """Each raise site's message is expected by a test: a literal part of it (10 characters or more) lies within a
    string of the tests, or such a string within it. A message made only of the caught error (`str(e)`) is the
    overrides' ValueError, expected above."""
    sites = _raise_sites()
    assert len(sites) >= 50, sites
    texts = [t for t in _expected_texts() if len(t) >= 10]
    untested = [(file, line, parts) for file, line, parts in sites
                if parts and not any(p in t or t in p for p in parts if len(p) >= 10 for t in texts)]
    assert not untested, untested


# --------------------------------------------------------------------------------- docs/inference.md's table


def _task_table() -> list[list[str]]:
    """The rows of docs/inference.md's table "Tasks, inputs and outputs", as lists of cells."""
    text = (ROOT / "docs" / "inference.md").read_text()
    section = text.split("### Tasks, inputs and outputs", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| task ", "|---")):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows.append(cells)
    return rows


def test_the_task_table_lists_every_task_of_the_catalog() -> None:
    """Each task of the compiler's catalog has a row (a row may name several tasks), with the input and output
    forms filled in, and its examples exist; the table names no task the catalog lacks."""
    from metagen_compiler.semantics.tasks import TASK_SPECS

    rows = _task_table()
    assert rows and all(len(r) == 5 for r in rows), [r for r in rows if len(r) != 5]
    listed = {name for r in rows for name in re.findall(r"`(\w+)`", r[0])}
    assert listed == set(TASK_SPECS), (sorted(set(TASK_SPECS) - listed), sorted(listed - set(TASK_SPECS)))
    empty = [r[0] for r in rows if not r[2] or not r[3]]
    assert not empty, f"rows without their input or output forms: {empty}"
    examples = [name for r in rows for name in re.findall(r"`([\w*]+)`", r[1])]
    missing = [n for n in examples if not list((ROOT / "examples").glob(f"{n}.msl"))]
    assert not missing, f"examples the table names that examples/ lacks: {missing}"
