"""predict.py, pipelines.py and inputs.py (backends/pytorch/inference): raw inputs to task-shaped answers.

Each task group compiles an example, trains it a few steps on real data (scikit-learn's digits as PNG, its
breast-cancer table as CSV, espeak-ng speech) or loads transformers' weights through weights.py, then runs the
output folder's predict.py as a subprocess with MetaGen unimportable, checking the output form and, where the
weights are real, the answer against a reference computed another way.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import (
    GPL,
    TINY_WHISPER,
    gpl_tokenizer,
    model_folder,
    run_script,
    write_cancer,
    write_digits,
    write_speech,
)

pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

TINY_RESNET = ["--set", "image_size=32", "--set", "channels=1", "--set", "width=8", "--set", "depths=1,1,1,1",
               "--set", "expansion=2", "--set", "num_classes=10"]
TINY_GPT2 = ["--set", "vocab=400", "--set", "layers=2", "--set", "d_model=64", "--set", "heads=2",
             "--set", "context=64"]
TINY_DIFFUSION = ["--set", "image_size=8", "--set", "base=32", "--set", "channel_mult=1,2", "--set",
                  "attention_levels=0,1", "--set", "groups=8", "--set", "text_width=32", "--set", "text_heads=2",
                  "--set", "heads=2", "--set", "vocab=100"]
TINY_SEGMENTATION = ["--set", "image_size=32", "--set", "width=8", "--set", "depths=1,1,1,1", "--set", "expansion=2"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def folders(root: Path) -> dict[str, Path]:
    names = ("gpt2", "resnet50", "tabular_classifier", "tiny_diffusion", "resnet_segmentation", "ppo_cartpole",
             "yolo_detector", "lstm_forecast", "gcn_cora", "whisper_tiny")
    return {n: model_folder(root / "models", n) for n in names}


def predict(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """The folder's predict.py as a subprocess, MetaGen unimportable, one thread."""
    return run_script(folder, "predict.py", *args)


@pytest.fixture
def here(capsys: pytest.CaptureFixture[str]) -> Any:
    """The folder's predict.py run in this process (as `metagenc predict` runs it), for the checks of output forms
    and errors: the same script without a process start, which is most of a small run's time."""
    from metagen_backends.pytorch.inference.command import main

    def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()  # what the test printed before (transformers' progress bars)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            rc = main([str(folder), *args])
        finally:
            torch.set_num_threads(threads)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out.out, out.err)

    return run


def json_lines(r: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.fixture(scope="module")
def tokenizer(root: Path) -> Path:
    """A byte-level BPE of 400 tokens trained on the whole GPL-3 text."""
    return gpl_tokenizer(root, None)


@pytest.fixture(scope="module")
def digits_run(folders: dict[str, Path], root: Path) -> tuple[Path, Path]:
    """resnet50.msl at a tiny Config trained 30 steps on the digits; returns the run's checkpoint and the PNGs."""
    pytest.importorskip("sklearn")
    digits = write_digits(root / "digits")
    r = run_script(folders["resnet50"], "train.py", "--data", str(digits), *TINY_RESNET, "--steps", "30",
                   "--batch-size", "32", "--lr", "3e-3", "--weight-decay", "0", "--eval-every", "30",
                   "--run-name", "digits")
    assert r.returncode == 0, r.stderr
    return folders["resnet50"] / "runs" / "digits" / "last", digits


# ----------------------------------------------------------------------------------------- the folder


def test_output_folder_carries_the_inference_files(folders: dict[str, Path]) -> None:
    from metagen_backends.pytorch.inference import INFERENCE_FILES, inference_files

    files = inference_files()
    assert sorted(files) == sorted(INFERENCE_FILES)
    for name, text in files.items():
        assert (folders["gpt2"] / name).read_text() == text
        for node in ast.walk(ast.parse(text)):  # never MetaGen: the folder stands alone
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("metagen"), (name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("metagen") for a in node.names), name


def test_every_task_has_a_runner() -> None:
    from metagen_backends.pytorch.inference.tasks import TASKS

    from metagen_compiler.semantics.tasks import TASK_SPECS

    assert set(TASKS) == set(TASK_SPECS)


# ------------------------------------------------------------------------------------------- text


def test_gpt2_greedy_text_equals_transformers(folders: dict[str, Path], tokenizer: Path, root: Path) -> None:
    """transformers' GPT2LMHeadModel with random weights, saved with save_pretrained and read by predict.py through
    weights.py: its greedy text is transformers' generate() decoded with the same tokenizer, for a batch of two
    prompts of different lengths (left-padded together by predict.py)."""
    t = pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    ref = t.GPT2LMHeadModel(t.GPT2Config(vocab_size=400, n_embd=64, n_layer=2, n_head=2, n_positions=64,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # off the init, so that every tensor matters
        for v in ref.state_dict().values():
            if v.is_floating_point():
                v.add_(0.2 * torch.randn(v.shape, generator=g))
    ref.eval().save_pretrained(root / "gpt2_ref")
    prompts = ["This License applies to", "the GNU General Public License is a free, copyleft license"]
    r = predict(folders["gpt2"], "--weights", str(root / "gpt2_ref"), *TINY_GPT2, "--tokenizer", str(tokenizer),
                "--max-new-tokens", "12", "--json", *prompts)
    got = json_lines(r)
    tok = Tokenizer.from_file(str(tokenizer))
    eos = tok.token_to_id("<|endoftext|>")
    for prompt, result in zip(prompts, got):
        ids = torch.tensor([tok.encode(prompt).ids])
        out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                           eos_token_id=eos, pad_token_id=eos)[0, ids.shape[1]:].tolist()
        out = out[: out.index(eos)] if eos in out else out
        assert result["tokens"] == out
        assert result["completion"] == tok.decode(out)
        assert result["generated_text"] == tok.decode(tok.encode(prompt).ids + out)
    # the plain output is the text itself, one line per prompt
    plain = predict(folders["gpt2"], "--weights", str(root / "gpt2_ref"), *TINY_GPT2, "--tokenizer", str(tokenizer),
                    "--max-new-tokens", "12", prompts[0])
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.rstrip("\n") == got[0]["generated_text"]


# ------------------------------------------------------------------------------------------ images


def _reference_probs(folder: Path, ckpt: Path, png: Path) -> torch.Tensor:
    """The run's model on data.py's own loading of one PNG: what predict.py must reproduce."""
    from metagen_backends.pytorch.training import data, loop

    run = ckpt.parent
    values = json.loads((run / "config.json").read_text())["model"]
    module = loop.load_model_module(folder / "model.py")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    model = module.build_model(module.Config(**values)).eval()
    loop.load_checkpoint(ckpt, model)
    x = data._load_image(png, values["image_size"], values["channels"])
    with torch.no_grad():
        return model(x[None])[0].softmax(-1)


def test_digit_pngs_give_top_labels_of_the_trained_run(folders: dict[str, Path],
                                                        digits_run: tuple[Path, Path], root: Path) -> None:
    ckpt, digits = digits_run
    pngs = [min((digits / str(d)).iterdir()) for d in (3, 7, 0)]
    out = root / "labels.json"
    got = json_lines(predict(folders["resnet50"], "--checkpoint", str(ckpt), "--top", "3", "-o", str(out),
                             *map(str, pngs)))
    assert json.loads(out.read_text()) == got
    assert [r["input"] for r in got] == [str(p) for p in pngs]
    for png, r in zip(pngs, got):
        want = _reference_probs(folders["resnet50"], ckpt, png)
        p, i = want.topk(3)
        assert [x["label"] for x in r["labels"]] == [str(int(k)) for k in i]  # the run's class names
        assert [x["score"] for x in r["labels"]] == pytest.approx(p.tolist(), abs=1e-5)


def test_load_pipeline_batches_like_single_calls(folders: dict[str, Path], digits_run: tuple[Path, Path]) -> None:
    from metagen_backends.pytorch.inference import load_pipeline

    ckpt, digits = digits_run
    pngs = [str(sorted((digits / str(d)).iterdir())[1]) for d in range(5)]
    pipe = load_pipeline(folders["resnet50"], checkpoint=ckpt)
    batched = pipe(pngs, batch_size=2, top=2)
    assert len(batched) == 5
    for png, r in zip(pngs, batched):
        one = pipe(png, top=2)
        assert isinstance(one, dict) and one["input"] == png
        assert [x["label"] for x in one["labels"]] == [x["label"] for x in r["labels"]]
        assert [x["score"] for x in one["labels"]] == pytest.approx([x["score"] for x in r["labels"]], abs=1e-5)


def test_metagenc_predict_runs_the_folders_script(folders: dict[str, Path], digits_run: tuple[Path, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from metagen_compiler.cli import main

    ckpt, digits = digits_run
    png = str(min((digits / "4").iterdir()))
    assert main(["predict", str(folders["resnet50"]), "--checkpoint", str(ckpt), "--top", "2", png]) == 0
    via_cli = capsys.readouterr().out
    script = predict(folders["resnet50"], "--checkpoint", str(ckpt), "--top", "2", png)
    assert script.returncode == 0, script.stderr
    cli_result, script_result = json.loads(via_cli), json.loads(script.stdout)
    assert [x["label"] for x in cli_result["labels"]] == [x["label"] for x in script_result["labels"]]
    assert main(["predict", str(folders["resnet50"] / "nowhere"), png]) == 1
    assert "no predict.py" in capsys.readouterr().err


def _png(path: Path, width: int = 64, height: int = 48) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    Image.frombytes("RGB", (width, height), bytes(pixels.flatten().tolist())).save(path)
    return path


def test_segmentation_map_is_a_png_at_the_image_size(folders: dict[str, Path], root: Path, here: Any) -> None:
    from PIL import Image

    png = _png(root / "street.png")
    out = root / "masks"
    got = json_lines(here(folders["resnet_segmentation"], "--random-init", *TINY_SEGMENTATION, "-o", str(out),
                             str(png)))
    with Image.open(got[0]["mask"]) as mask:
        assert mask.size == (64, 48) and mask.mode == "L"
        assert mask.getextrema()[1] < 21  # class ids of the 21 classes
    assert sum(got[0]["classes"].values()) == pytest.approx(1.0)
    assert json.loads((out / "results.json").read_text()) == got


def test_detection_boxes_are_in_image_coordinates(folders: dict[str, Path], root: Path, here: Any) -> None:
    png = _png(root / "boxes.png", 96, 40)
    got = json_lines(here(folders["yolo_detector"], "--random-init", "--set", "image_size=64", "--set", "width=8",
                             "--threshold", "0.0", str(png)))
    objects = got[0]["objects"]
    assert got[0]["size"] == [96, 40] and objects
    assert [o["score"] for o in objects] == sorted((o["score"] for o in objects), reverse=True)
    for o in objects:
        x1, y1, x2, y2 = o["box"]
        assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 40
        assert 0 <= o["id"] < 80


def test_diffusion_samples_are_pngs_seeded(folders: dict[str, Path], root: Path) -> None:
    from PIL import Image

    args = ["--random-init", *TINY_DIFFUSION, "--steps", "3", "--guidance", "2.5", "--seed", "7"]
    a = json_lines(predict(folders["tiny_diffusion"], *args, "-o", str(root / "a")))
    b = json_lines(predict(folders["tiny_diffusion"], *args, "-o", str(root / "b")))
    assert len(a) == 1 and a[0]["latent"]  # 4 channels: the U-Net's latent space, shown by its first three
    with Image.open(a[0]["image"]) as im:
        assert im.size == (8, 8) and im.mode == "RGB"
    assert Path(a[0]["image"]).read_bytes() == Path(b[0]["image"]).read_bytes()
    assert torch.load(a[0]["tensor"]).shape == (4, 8, 8)


DIFFUSION_RUN = ["--random-init", *TINY_DIFFUSION, "--steps", "4", "--guidance", "2.5", "--seed", "7"]


def _latent(path: Path) -> Path:
    """A (4, 8, 8) init latent for the tiny (latent, no VAE) U-Net, in [-1, 1]."""
    torch.save(torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1, path)
    return path


def test_diffusion_image_to_image_strength_0_keeps_1_is_text_to_image(here: Any, folders: dict[str, Path],
                                                                       root: Path) -> None:
    folder, init = folders["tiny_diffusion"], _latent(root / "init.pt")
    x0 = torch.load(init)

    def tensor(*extra: str) -> torch.Tensor:
        out = root / f"i2i{len(list(root.glob('i2i*')))}"
        got = json_lines(here(folder, *DIFFUSION_RUN, *extra, "-o", str(out)))
        return torch.load(got[0]["tensor"])

    text_to_image = tensor()
    assert torch.equal(tensor("--init-image", str(init), "--strength", "0"), x0)  # no step: the init itself
    assert torch.equal(tensor("--init-image", str(init), "--strength", "1"), text_to_image)  # pure noise, same seed
    half = tensor("--init-image", str(init), "--strength", "0.5")  # 2 of the 4 steps, from the noised init
    assert not torch.equal(half, x0) and not torch.equal(half, text_to_image)
    assert torch.equal(half, tensor("--init-image", str(init), "--strength", "0.5"))  # seeded


def test_diffusion_inpainting_keeps_the_unmasked_region(here: Any, folders: dict[str, Path], root: Path) -> None:
    from PIL import Image

    folder, init = folders["tiny_diffusion"], _latent(root / "inpaint.pt")
    x0 = torch.load(init)
    mask = torch.zeros(8, 8, dtype=torch.uint8)
    mask[:, :4] = 255  # the left half is repainted
    Image.frombytes("L", (8, 8), bytes(mask.flatten().tolist())).save(root / "mask.png")
    for strength in ("1", "0.5"):
        got = json_lines(here(folder, *DIFFUSION_RUN, "--init-image", str(init), "--mask", str(root / "mask.png"),
                              "--strength", strength, "-o", str(root / f"inpaint{strength}")))
        x = torch.load(got[0]["tensor"])
        assert torch.equal(x[:, :, 4:], x0[:, :, 4:]), strength  # kept exactly
        assert (x[:, :, :4] - x0[:, :, :4]).abs().min() > 0, strength  # every repainted value moved
        with Image.open(got[0]["image"]) as im:
            assert im.size == (8, 8)


def test_diffusion_pixel_model_takes_png_init_and_mask(here: Any, folders: dict[str, Path], root: Path) -> None:
    from PIL import Image

    pixels = torch.randint(0, 256, (8, 8, 3), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    Image.frombytes("RGB", (8, 8), bytes(pixels.flatten().tolist())).save(root / "init.png")
    mask = torch.zeros(8, 8, dtype=torch.uint8)
    mask[:4] = 255  # the top half is repainted
    Image.frombytes("L", (8, 8), bytes(mask.flatten().tolist())).save(root / "top.png")
    run = [*DIFFUSION_RUN, "--set", "channels=3", "--init-image", str(root / "init.png")]
    kept = json_lines(here(folders["tiny_diffusion"], *run, "--strength", "0", "-o", str(root / "png0")))
    assert not kept[0]["latent"]
    with Image.open(kept[0]["image"]) as im:
        assert im.tobytes() == bytes(pixels.flatten().tolist())  # [0, 255] -> [-1, 1] -> [0, 255]
    got = json_lines(here(folders["tiny_diffusion"], *run, "--mask", str(root / "top.png"), "-o", str(root / "pngm")))
    with Image.open(got[0]["image"]) as im:
        out = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(8, 8, 3)
    assert torch.equal(out[4:], pixels[4:]) and not torch.equal(out[:4], pixels[:4])


def test_diffusion_image_inputs_bad_are_one_line_errors(here: Any, folders: dict[str, Path], root: Path) -> None:
    from PIL import Image

    folder, init = folders["tiny_diffusion"], _latent(root / "bad.pt")
    Image.new("L", (5, 5), 255).save(root / "small_mask.png")
    Image.new("RGB", (8, 8)).save(root / "rgb.png")
    torch.save(torch.zeros(3, 8, 8), root / "wrong.pt")
    cases = {
        ("--init-image", str(init), "--strength", "1.5"): "--strength must be in [0, 1]",
        ("--init-image", str(init), "--strength", "-0.1"): "--strength must be in [0, 1]",
        ("--init-image", str(init), "--mask", str(root / "small_mask.png")): "the mask is 5x5, the init image 8x8",
        ("--mask", str(root / "small_mask.png")): "--strength and --mask need --init-image",
        ("--init-image", str(root / "rgb.png")): "give --init-image as a .pt latent",
        ("--init-image", str(root / "wrong.pt")): "the init latent is (3, 8, 8), the model samples (4, 8, 8)",
        ("--init-image", str(root / "missing.pt")): "no such file",
    }
    for extra, message in cases.items():
        r = here(folder, *DIFFUSION_RUN, *extra)
        assert r.returncode == 1, extra
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


# ------------------------------------------------------------------------------------ tables, series


def test_csv_rows_of_breast_cancer_give_the_models_classes(folders: dict[str, Path], root: Path) -> None:
    pytest.importorskip("sklearn")
    from metagen_backends.pytorch.training import loop

    path, x, _ = write_cancer(root / "cancer.csv")
    folder = folders["tabular_classifier"]
    r = run_script(folder, "train.py", "--data", str(path), "--target", "diagnosis", "--steps", "20", "--batch-size",
                   "32", "--eval-every", "20", "--run-name", "cancer")
    assert r.returncode == 0, r.stderr
    rows = root / "rows.csv"
    lines = path.read_text().splitlines()
    rows.write_text("\n".join(lines[:6]) + "\n")  # the header and 5 rows, the target column included
    ckpt = folder / "runs" / "cancer" / "last"
    got = json_lines(predict(folder, "--checkpoint", str(ckpt), "--top", "2", str(rows)))
    assert [g["input"] for g in got] == [f"rows.csv:{k}" for k in range(2, 7)]
    state = json.loads((ckpt.parent / "data.json").read_text())
    values = json.loads((ckpt.parent / "config.json").read_text())["model"]
    module = loop.load_model_module(folder / "model.py")
    model = module.build_model(module.Config(**values)).eval()
    loop.load_checkpoint(ckpt, model)
    mean, std = (torch.tensor(state["standardize"][k]) for k in ("mean", "std"))
    with torch.no_grad():
        probs = model((torch.tensor(x[:5], dtype=torch.float32) - mean) / std).softmax(-1)
    for k, g in enumerate(got):
        assert g["labels"][0]["label"] == state["classes"][int(probs[k].argmax())]
        assert g["labels"][0]["score"] == pytest.approx(float(probs[k].max()), abs=1e-5)


def test_forecast_of_a_csv_window(folders: dict[str, Path], root: Path, here: Any) -> None:
    path = root / "series.csv"
    path.write_text("date,a,b\n" + "".join(f"2024-01-{d:02d},{d * 1.5},{30 - d}\n" for d in range(1, 21)))
    got = json_lines(here(folders["lstm_forecast"], "--random-init", "--set", "features=2", "--set", "lookback=8",
                             "--set", "horizon=3", "--set", "d_model=16", "--set", "hidden=16", str(path)))
    assert len(got[0]["forecast"]) == 3
    assert all(set(row) == {"a", "b"} for row in got[0]["forecast"])


def test_policy_action_from_an_observation_row(folders: dict[str, Path], here: Any) -> None:
    got = json_lines(here(folders["ppo_cartpole"], "--random-init", "0.01,-0.2,0.03,0.1", "0.5,0.1,-0.1,0"))
    assert len(got) == 2
    for g in got:
        assert g["action"] in (0, 1)
        assert sum(g["probabilities"]) == pytest.approx(1.0, abs=1e-5)
        assert g["action"] == max(range(2), key=lambda a: g["probabilities"][a])
        assert isinstance(g["value"], float)


def test_graph_in_the_training_format_gives_node_classes(folders: dict[str, Path], root: Path, here: Any) -> None:
    nx = pytest.importorskip("networkx")
    g = nx.karate_club_graph()
    n = g.number_of_nodes()
    path = root / "karate.json"
    path.write_text(json.dumps({"x": [[float(i == j) for j in range(n)] for i in range(n)],
                                "edges": [list(e) for e in g.edges()]}))
    got = json_lines(here(folders["gcn_cora"], "--random-init", "--set", "features=34", "--set", "num_classes=2",
                             "--labels", str(_labels(root, ["Mr. Hi", "Officer"])), str(path)))
    assert [x["node"] for x in got[0]["nodes"]] == list(range(34))
    assert {x["label"] for x in got[0]["nodes"]} <= {"Mr. Hi", "Officer"}


EDGE_SPEC = """msl 1
import std.graph

model {family} {{
  modality graph -> label
  task {task} {{ num_classes = 3 }}
  objective classification
  architecture graph.{family} {{ nodes = 8; edges = 16; features = 3; edge_features = 2; hidden = 4; heads = 2;
                                layers = 1{extra} }}
}}
"""


@pytest.fixture(scope="module")
def edge_models(root: Path) -> dict[str, tuple[Path, Path, torch.nn.Module]]:
    """gat_edge (node classes) and gat_graph_edge (graph classes, 2 graphs a batch), the families that read edge
    features, compiled from a spec written here; each with random weights (seeded) saved as its own state_dict."""
    from metagen_backends.pytorch.inference import load_pipeline
    from safetensors.torch import save_file

    made = {}
    for family, task, extra in (("gat_edge", "node_classification", ""),
                                ("gat_graph_edge", "graph_classification", "; graphs = 2")):
        source = root / f"{family}.msl"
        source.write_text(EDGE_SPEC.format(family=family, task=task, extra=extra))
        folder = model_folder(root / "edge_models", family, source)
        torch.manual_seed(0)
        model = load_pipeline(folder, random_init=True).model
        weights = root / f"{family}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        made[family] = (folder, weights, model)
    return made


def _edge_graph(path: Path, nodes: int, edges: int, seed: int) -> dict[str, torch.Tensor]:
    """A random undirected graph with 3 node and 2 edge features written in the training format; returns forward's
    inputs for it, built here: each edge both ways, its features with it both times."""
    g = torch.Generator().manual_seed(seed)
    x, attr = torch.randn(nodes, 3, generator=g), torch.randn(edges, 2, generator=g)
    pairs = [[k % nodes, (k * 3 + 1) % nodes] for k in range(edges)]
    path.write_text(json.dumps({"x": x.tolist(), "edges": pairs, "edge_attr": attr.tolist()}))
    index = torch.tensor(pairs).t()
    return {"x": x, "edges": torch.cat((index, index.flip(0)), 1), "attr": torch.cat((attr, attr))}


def test_graphs_with_edge_features_give_the_models_output(edge_models: dict[str, Any], root: Path, here: Any) -> None:
    """predict.py passes a graph file's edge_attr to the models that read edge features: each node's class (gat_edge)
    and each graph's labels (gat_graph_edge, three files in one call though the model pools 2 graphs a batch) are
    the model's on those features, computed here from the same weights."""
    folder, weights, model = edge_models["gat_edge"]
    g = _edge_graph(root / "edge_nodes.json", 5, 6, seed=1)
    got = json_lines(here(folder, "--weights", str(weights), str(root / "edge_nodes.json")))[0]["nodes"]
    with torch.no_grad():
        score, label = model(g["x"], g["edges"], g["attr"]).softmax(-1).max(-1)
    assert [x["label"] for x in got] == [str(int(c)) for c in label]
    assert [x["score"] for x in got] == pytest.approx(score.tolist(), abs=1e-5)

    folder, weights, model = edge_models["gat_graph_edge"]
    graphs = {root / f"edge_graph{k}.json": _edge_graph(root / f"edge_graph{k}.json", 3 + k, 2 + 2 * k, seed=10 + k)
              for k in range(3)}
    results = json_lines(here(folder, "--weights", str(weights), *map(str, graphs)))
    assert [r["input"] for r in results] == [str(p) for p in graphs]
    for r, g in zip(results, graphs.values()):
        with torch.no_grad():
            probs = model(g["x"], g["edges"], g["attr"], torch.zeros(len(g["x"]), dtype=torch.long))[0].softmax(-1)
        assert {x["id"]: x["score"] for x in r["labels"]} == pytest.approx(dict(enumerate(probs.tolist())), abs=1e-5)


def test_graph_without_the_models_edge_features_is_one_line(edge_models: dict[str, Any], root: Path,
                                                            here: Any) -> None:
    folder, weights, _ = edge_models["gat_edge"]
    cases = {"edge_none.json": ({}, "no `edge_attr`; the model reads edge features"),
             "edge_rows.json": ({"edge_attr": [[1.0, 2.0]]}, "`edge_attr` has 1 rows; expected one row per edge (2)"),
             "edge_width.json": ({"edge_attr": [[1.0], [2.0]]}, "edge_attr[0] has 1 values; expected 2 finite numbers")}
    for name, (extra, message) in cases.items():
        (root / name).write_text(json.dumps({"x": [[0.0, 1.0, 2.0]] * 3, "edges": [[0, 1], [1, 2]], **extra}))
        assert message in _error(here(folder, "--weights", str(weights), str(root / name)))


def _labels(root: Path, names: list[str]) -> Path:
    path = root / "labels.txt"
    path.write_text("\n".join(names) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ audio


@pytest.fixture(scope="module")
def speech(root: Path) -> Path:
    return write_speech(root / "speech", ["the cat sat on the mat", "a dog ran in the park", "we like green apples",
                                          "the sun is hot today", "open the red door", "she reads a long book",
                                          "birds sing in the morning", "it is cold at night"])


@pytest.mark.slow
def test_whisper_transcribes_an_espeak_wav(folders: dict[str, Path], speech: Path) -> None:
    """whisper_tiny.msl at a tiny Config trained 40 steps on espeak-ng speech; predict.py transcribes a WAV with
    the run's tokenizer (a transcript string, its tokens within the vocabulary)."""
    folder = folders["whisper_tiny"]
    r = run_script(folder, "train.py", "--data", str(speech), *TINY_WHISPER, "--steps", "40", "--batch-size", "4",
                   "--lr", "3e-3", "--eval-every", "40", "--run-name", "speech")
    assert r.returncode == 0, r.stderr
    got = json_lines(predict(folder, "--checkpoint", "runs/speech/last", "--json", str(speech / "s0.wav"),
                             str(speech / "s1.wav")))
    assert len(got) == 2
    for g in got:
        assert isinstance(g["text"], str) and all(0 <= t < 320 for t in g["tokens"])
        assert len(g["tokens"]) <= 31


# ------------------------------------------------------------------------------------------------- errors


def _error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_an_unreadable_image_is_one_line(folders: dict[str, Path], root: Path, here: Any) -> None:
    bad = root / "broken.png"
    bad.write_text("not a picture")
    err = _error(here(folders["resnet_segmentation"], "--random-init", *TINY_SEGMENTATION, str(bad)))
    assert "broken.png: not a readable image" in err
    err = _error(here(folders["resnet_segmentation"], "--random-init", *TINY_SEGMENTATION, str(root / "no.png")))
    assert "no.png: no such image file" in err


def test_a_sample_rate_it_cannot_resample_is_one_line(folders: dict[str, Path], tokenizer: Path, root: Path,
                                                       here: Any) -> None:
    soundfile = pytest.importorskip("soundfile")
    import numpy as np

    low = root / "low.wav"
    soundfile.write(str(low), np.zeros(4000, dtype="float32"), 2000)
    err = _error(here(folders["whisper_tiny"], "--random-init", *TINY_WHISPER, "--tokenizer", str(tokenizer),
                         str(low)))
    assert "sampled at 2000 Hz, too low to resample to the model's 16000 Hz" in err
    garbage = root / "garbage.wav"
    garbage.write_bytes(b"RIFF....WAVEfmt nonsense")
    err = _error(here(folders["whisper_tiny"], "--random-init", *TINY_WHISPER, "--tokenizer", str(tokenizer),
                         str(garbage)))
    assert "garbage.wav: not a readable audio file" in err


def test_a_prompt_longer_than_the_context_is_one_line(folders: dict[str, Path], tokenizer: Path, here: Any) -> None:
    small = [a if a != "context=64" else "context=16" for a in TINY_GPT2]
    long_prompt = "This License applies to any program or other work which contains a notice placed by the holder"
    err = _error(here(folders["gpt2"], "--random-init", *small, "--tokenizer", str(tokenizer), long_prompt))
    assert "tokens, longer than the model's context of 16" in err
    err = _error(here(folders["gpt2"], "--random-init", *small, "--tokenizer", str(tokenizer),
                         "--max-new-tokens", "14", "This License applies"))
    assert "with --max-new-tokens 14 that passes the model's context of 16" in err


def test_no_weights_is_one_line(folders: dict[str, Path], root: Path, here: Any) -> None:
    err = _error(here(folders["gpt2"], "Once upon a time"))
    assert "no weights: pass --weights FILE" in err
    err = _error(here(folders["gpt2"], "--weights", str(root / "missing.safetensors"), "Once"))
    assert "missing.safetensors: no such checkpoint file or folder" in err
    err = _error(here(folders["gpt2"], "--checkpoint", str(root / "runs" / "x" / "last"), "Once"))
    assert "no checkpoint" in err


def test_weights_of_another_shape_are_one_line(folders: dict[str, Path], root: Path, here: Any) -> None:
    t = pytest.importorskip("transformers")
    ref = t.GPT2LMHeadModel(t.GPT2Config(vocab_size=400, n_embd=32, n_layer=2, n_head=2, n_positions=64))
    ref.save_pretrained(root / "gpt2_narrow")
    err = _error(here(folders["gpt2"], "--weights", str(root / "gpt2_narrow"), *TINY_GPT2, "Once"))
    assert "has shape" in err and "needs" in err


# --------------------------------------------------------------------------- reference weights, benchmark


def _benchmark_module() -> Any:
    from conftest import load_module

    return load_module(Path(__file__).resolve().parent.parent / "benchmarks" / "predict.py", "predict_benchmark")


def test_torchvision_layout_weights_give_the_references_labels(folders: dict[str, Path], root: Path) -> None:
    """A narrow ResNet-50 of transformers with random weights, saved as a .pth in torchvision's keys and read by
    predict.py through weights.py: on a real photo (scikit-learn's china.jpg) the pipeline's ImageNet preprocessing
    (Resize 256, CenterCrop 224, Normalize) and the model give the reference's top-5 labels and probabilities."""
    t = pytest.importorskip("transformers")
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from PIL import Image

    bench = _benchmark_module()
    cfg = t.ResNetConfig(embedding_size=8, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                         layer_type="bottleneck", num_labels=1000)
    torch.manual_seed(0)
    ref = t.ResNetForImageClassification(cfg).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, v in ref.state_dict().items():
            if v.is_floating_point() and "running_var" not in k:
                v.add_(0.05 * torch.randn(v.shape, generator=g))
    torch.save({bench.hf_to_torchvision(k): v for k, v in ref.state_dict().items()}, root / "narrow.pth")
    photo = root / "china.jpg"
    Image.fromarray(sklearn_datasets.load_sample_images().images[0]).save(photo, quality=90)
    got = json_lines(predict(folders["resnet50"], "--weights", str(root / "narrow.pth"), "--set", "width=8",
                             "--set", "depths=1,1,1,1", str(photo)))[0]
    with torch.no_grad():
        p, i = ref(pixel_values=bench.reference_transform(photo)[None]).logits.softmax(-1)[0].topk(5)
    assert [x["id"] for x in got["labels"]] == i.tolist()
    assert [x["score"] for x in got["labels"]] == pytest.approx(p.tolist(), abs=1e-5)


@pytest.mark.slow
def test_predict_benchmark_smoke(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("sklearn")
    import sys

    out = tmp_path / "predict.json"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "predict.py"
    r = subprocess.run([sys.executable, str(script), "--quick", "--out", str(out)], capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out.read_text())
    row = data["rows"][0]
    assert data["quick"] is True and row["images"] == 8
    assert row["ours_images_per_s"] > 0 and row["reference_images_per_s"] > 0
    assert row["top5_agree"] == 8 and row["max_top5_prob_diff"] < 1e-4  # the same weights, the same answers


# ------------------------------------------------------------------ more task groups, in this process (fast)

TINY_TEXT = {
    "bert_base": ["vocab=400", "layers=1", "d_model=64", "heads=2", "mlp_dim=128"],
    "bert_squad": ["vocab=400", "layers=1", "d_model=64", "heads=2", "mlp_dim=128"],
    "mamba_lm": ["vocab=400", "layers=1", "d_model=32", "dt_rank=4"],
    "switch_lm": ["vocab=400", "layers=1", "d_model=32", "heads=2", "hidden=64", "experts=2", "context=32"],
    "t5_small": ["vocab=400", "layers=1", "decoder_layers=1", "d_model=64", "heads=2", "d_kv=32", "d_ff=128"],
    "clip_vit_b_32": ["vocab=400", "vision_layers=1", "vision_width=64", "vision_heads=2", "vision_mlp=128",
                      "text_layers=1", "text_width=64", "text_heads=2", "text_mlp=128", "embed_dim=32"],
}


@pytest.fixture(scope="module")
def tiny(root: Path, tokenizer: Path) -> Any:
    from metagen_backends.pytorch.inference import load_pipeline

    made: dict[str, Any] = {}

    def get(name: str, sets: list[str] | None = None) -> Any:
        if name not in made:
            folder = model_folder(root / "tiny", name)
            made[name] = load_pipeline(folder, random_init=True, overrides=sets or TINY_TEXT[name], tokenizer=tokenizer)
        return made[name]

    return get


def test_embeddings_are_batched_like_single_calls(tiny: Any) -> None:
    pipe = tiny("bert_base")
    texts = ["free software", "the GNU General Public License", "copyleft"]
    batched = pipe(texts, batch_size=3)
    assert [len(r["embedding"]) for r in batched] == [64, 64, 64]
    for text, r in zip(texts, batched):
        assert r["embedding"] == pytest.approx(pipe(text)["embedding"], abs=1e-5)


def test_question_answering_answers_from_the_context(tiny: Any) -> None:
    pipe = tiny("bert_squad")
    question, context = "what is free?", "free software is software that respects freedom"
    r = pipe(question, context=context)
    n_question = len(pipe.tokenizer.encode(question).ids)
    assert n_question <= r["start"] <= r["end"] < n_question + len(pipe.tokenizer.encode(context).ids)
    assert r["answer"] and r["answer"] in context
    one = pipe(question, context=context, max_answer=1)  # --max-answer 1: a span of one token
    assert one["start"] == one["end"] and one["score"] <= r["score"]


@pytest.mark.parametrize(("name", "plan"), [("switch_lm", "none"), ("t5_small", "hidden"), ("mamba_lm", "generate"),
                                          ("t5_small", "generate")])
def test_greedy_decoding_is_the_argmax_of_full_forwards(tiny: Any, name: str, plan: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Greedy decoding gives the argmax of a full forward at every step, computed here the plain way, whichever
    path the pipeline takes: plan `none`, a model.py without generate() (switch_lm: its MoE has a capacity factor,
    so a token's experts depend on the others', and it does not decode token by token), decoded by the pipeline's
    loop re-running the model; `hidden`, T5 with its decoding plan taken away (as a model.py of an encoder-decoder
    without generate()), the same loop; `generate`, model.generate() with Mamba's recurrent state or T5's
    key-value cache."""
    pipe = tiny(name)
    assert hasattr(pipe.model, "generate") == (plan != "none")
    if plan == "hidden":
        monkeypatch.setattr(pipe.model, "decoding", None)
    r = pipe("This License applies", max_new_tokens=5)
    ids = torch.tensor([pipe.tokenizer.encode("This License applies").ids])
    eos = pipe.tokenizer.token_to_id("<|endoftext|>")
    decoder_only = name != "t5_small"
    with torch.no_grad():
        seq = ids if decoder_only else torch.zeros(1, 1, dtype=torch.long)  # T5 starts at <pad>, id 0; here
        # the tokenizer has no <pad>, and its first special token, <|endoftext|>, is id 0 too
        want: list[int] = []
        for _ in range(5):
            logits = pipe.model(seq) if decoder_only else pipe.model(ids, seq)
            nxt = int(logits[0, -1].argmax())
            if nxt == eos:
                break
            want.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], 1)
    assert r["tokens"] == want
    assert r["completion"] == pipe.tokenizer.decode(want)


def test_retrieval_ranks_texts_for_each_image(tiny: Any, root: Path) -> None:
    pipe = tiny("clip_vit_b_32")
    a, b = _png(root / "r1.png"), _png(root / "r2.png", 32, 80)
    results = pipe([str(a), "a red square", str(b), "a photo of a dog", "text"])
    by_input = {r["input"]: r["ranking"] for r in results}
    for image in (str(a), str(b)):
        scores = [x["score"] for x in by_input[image]]
        assert {x["text"] for x in by_input[image]} == {"a red square", "a photo of a dog", "text"}
        assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert {x["image"] for x in by_input["text"]} == {str(a), str(b)}


def test_graphs_are_batched_like_single_calls(tiny: Any, root: Path) -> None:
    pipe = tiny("graph_classifier", ["features=3"])
    paths = []
    for k, edges in enumerate(([[0, 1], [1, 2]], [[0, 1], [1, 2], [2, 3], [3, 0]])):
        n = 1 + max(max(e) for e in edges)
        paths.append(root / f"graph{k}.json")
        paths[-1].write_text(json.dumps({"x": [[float(i), 1.0, float(k)] for i in range(n)], "edges": edges}))
    batched = pipe([str(p) for p in paths], top=2)
    for p, r in zip(paths, batched):
        assert [x["score"] for x in pipe(str(p), top=2)["labels"]] == pytest.approx([x["score"] for x in r["labels"]],
                                                                                    abs=1e-5)


# examples at a tiny size with random weights: the runner of each remaining task group gives its result's form
FORMS: dict[str, tuple[list[str], list[str], dict[str, Any], set[str]]] = {  # sets, inputs ({png}, {docs}), options, keys
    "bert_ner": (["vocab=400", "layers=1", "d_model=64", "heads=2"], ["free software"], {}, {"tokens"}),
    "fusion_early": (["vocab=400", "layers=1", "d_model=64"], ["{png}", "a caption"], {}, {"labels"}),
    "vqa_cross": (["vocab=400", "image_layers=1", "layers=1", "d_model=64", "num_classes=10"], ["{png}", "what?"], {},
                  {"labels"}),
    "vlm_small": (["vocab=400", "vision_layers=1", "vision_width=64", "vision_heads=2", "layers=1", "d_model=64",
                   "heads=2", "context=64"], ["{png}", "a photo of"], {"max_new_tokens": 3}, {"generated_text"}),
    "text_to_points": (["vocab=400", "text_layers=1", "layers=1", "d_model=64", "points=16"], ["a chair"], {},
                       {"points"}),
    "gcn_link_prediction": (["features=3"], ["{graph}"], {"top": 3}, {"links"}),
    "world_model": ([], ["0.1,0.2,0.3,0.4"], {"action": 1}, {"next_observation", "reward", "done_probability"}),
    "two_tower_recsys": ([], ["3", "5"], {"top": 3}, {"items"}),
    "ranker": ([], ["3:4"], {}, {"score"}),
    "pointnet": (["points=32", "width=8"], ["{points}"], {}, {"labels"}),
    "house_prices": (["features=3"], ["1,2,3"], {}, {"prediction"}),
    "sensor_autoencoder": (["features=3"], ["1,2,3"], {"threshold": 0.5}, {"score", "anomaly"}),
    "maskformer_instance": (["image_size=64", "width=8", "depths=1,1,1,1", "features=32", "mask_dim=32", "d_model=32",
                             "heads=2", "ffn=64", "decoder_layers=1", "num_queries=10"], ["{png}"], {"threshold": 0.0},
                            {"mask", "objects"}),
    "rag_fid": (["vocab=400", "passage_length=16", "num_passages=4", "top_k=2", "retriever_layers=1",
                 "retriever_d_model=32", "retriever_heads=2", "retriever_mlp=64", "layers=1", "decoder_layers=1",
                 "d_model=32", "heads=2", "d_kv=16", "d_ff=64"], ["what is free?"], {"docs": "{docs}",
                                                                                    "max_new_tokens": 3},
                {"answer", "passages"}),
    "latte_video": (["vocab=400", "frames=2", "image_size=8", "text_layers=1", "layers=1", "d_model=32", "heads=2"],
                    ["a cat"], {"steps": 2}, {"frames", "latent"}),
}


@pytest.mark.parametrize("name", sorted(FORMS))
def test_task_runner_gives_its_form(name: str, root: Path, tokenizer: Path) -> None:
    from metagen_backends.pytorch.inference import load_pipeline

    sets, args, options, keys = FORMS[name]
    places = {"{png}": str(_png(root / "form.png")), "{graph}": str(root / "form_graph.json"),
              "{docs}": str(root / "docs"), "{points}": str(root / "cloud.xyz")}
    (root / "cloud.xyz").write_text("x y z\n" + "".join(f"{i} {i % 5} {i * i % 7}\n" for i in range(50)))
    (root / "form_graph.json").write_text(json.dumps({"x": [[1.0, 0.0, float(i)] for i in range(5)],
                                                      "edges": [[0, 1], [1, 2], [3, 4]]}))
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "gpl.txt").write_text(GPL.read_text()[:2000])
    folder = model_folder(root / "forms", name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = load_pipeline(folder, random_init=True, overrides=sets, tokenizer=tokenizer)
        results = pipe([places.get(a, a) for a in args], **{k: places.get(v, v) if isinstance(v, str) else v
                                                             for k, v in options.items()})
    finally:
        torch.set_num_threads(threads)
    assert results and all(keys <= set(r) for r in results), results
