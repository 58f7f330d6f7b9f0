"""The `training { ... }` section: parsing, formatting, checking, the IR, training.json, report.json, the paper,
the YAML front end's `training.config` and editor completion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metagen_compiler.cli import main as metagenc
from metagen_compiler.diagnostics import DiagnosticBag
from metagen_compiler.driver import compile_source
from metagen_compiler.editor.analysis import DocState
from metagen_compiler.editor.completion import complete
from metagen_compiler.ir.spec import dump_spec
from metagen_compiler.semantics.training_section import AUGMENTATIONS, KEYS
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.fmt import format_text
from metagen_compiler.syntax.parser import parse_msl

ROOT = Path(__file__).resolve().parent.parent

SPEC = """msl 1
import std.transformer

model tiny {{
  modality text -> text
  task generation
  architecture transformer.decoder {{ vocab = 256; layers = 2; d_model = 64; context = 64 }}
  {training}
}}
"""

FULL = ("training {\n    optimizer = adamw; lr = 3e-4; schedule = cosine; warmup = 200; steps = 10k; batch_size = 64\n"
        "    grad_clip = 1.0; grad_accum = 2; weight_decay = 0.1; precision = bf16\n"
        "    ema_decay = 0.999\n  }")

IMAGE = """msl 1
import std.vision

model cnn {{
  modality image -> label
  task classification {{ num_classes = 10 }}
  constraints {{ image_size = 32; patch_size = 8 }}
  architecture vision.vit {{ layers = 1; d_model = 64 }}
  training {{ {training} }}
}}
"""
POINTS = """msl 1
import std.pointcloud

model pts {{
  modality point_cloud -> label
  task classification {{ num_classes = 4 }}
  architecture pointcloud.pointnet {{ points = 64; width = 16 }}
  training {{ {training} }}
}}
"""

DIFFUSION = """msl 1
import std.diffusion

model tiny_diffusion {{
  modality text, image -> image
  task denoising
  objective diffusion
  architecture diffusion.ldm_tiny {{ base = 32 }}
  training {{ {training} }}
}}
"""


def _compile(text: str, path: str = "m.msl"):  # type: ignore[no-untyped-def]
    return compile_source(SourceFile(path, text))


def _codes(text: str) -> list[str]:
    return [d.code for d in _compile(text).bag.sorted()]


# ---------------------------------------------------------------- parse, AST, format
def test_the_section_parses_into_a_training_node() -> None:
    bag = DiagnosticBag()
    module = parse_msl(SourceFile("m.msl", SPEC.format(training=FULL)), bag)
    assert module is not None and not bag.items
    (section,) = module.models[0].training
    assert isinstance(section, A.Training)
    assert [f.name.name for f in section.fields][:3] == ["optimizer", "lr", "schedule"]
    steps = next(f for f in section.fields if f.name.name == "steps")
    assert isinstance(steps.value, A.Quantity) and steps.value.text == "10k"
    assert "Training @" in A.dump(module)


def test_a_model_without_the_section_dumps_as_before() -> None:
    bag = DiagnosticBag()
    module = parse_msl(SourceFile("m.msl", SPEC.format(training="")), bag)
    assert module is not None and module.models[0].training == ()
    assert "training" not in A.dump(module)


def test_format_round_trip() -> None:
    messy = SPEC.format(training="training {  optimizer=adamw ;lr = 3e-4\n augment = [ token_dropout, ]\n }")
    out = format_text(messy)
    assert "  training {\n    optimizer = adamw; lr = 3e-4\n    augment = [token_dropout]\n  }\n" in out
    assert format_text(out) == out
    one_line = format_text(SPEC.format(training="training { steps = 10k;  lr = 1e-3 }"))
    assert "  training { steps = 10k; lr = 1e-3 }\n" in one_line
    bag = DiagnosticBag()
    a, b = parse_msl(SourceFile("a.msl", messy), bag), parse_msl(SourceFile("b.msl", out), bag)
    assert a is not None and b is not None and a.models == b.models  # spans do not compare


# ---------------------------------------------------------------- check and IR
def test_values_are_checked_and_recorded_in_the_ir() -> None:
    comp = _compile(SPEC.format(training=FULL))
    assert not comp.bag.items, comp.bag.items
    assert comp.spec is not None
    assert comp.spec.training == {
        "batch_size": 64, "ema_decay": 0.999, "grad_accum": 2, "grad_clip": 1.0, "lr": 0.0003, "optimizer": "adamw",
        "precision": "bf16", "schedule": "cosine", "steps": 10000, "warmup": 200, "weight_decay": 0.1}
    assert list(comp.spec.training) == sorted(comp.spec.training)
    assert '  training: {"batch_size": 64, "ema_decay": 0.999,' in dump_spec(comp.spec)


def test_augmentations_fit_the_input_and_only_built_ones_reach_train_py() -> None:
    comp = _compile(IMAGE.format(training="augment = [random_resized_crop, mixup, horizontal_flip]"))
    assert [(d.code, d.span.start if d.span else 0) for d in comp.bag.sorted()] == [
        ("W003", comp.source.text.index("mixup"))]
    assert comp.spec is not None and comp.spec.training == {"augment": ["random_resized_crop", "horizontal_flip"]}
    text = _compile(SPEC.format(training="training { augment = [token_dropout] }"))
    assert [d.code for d in text.bag.sorted()] == ["W003"]  # a text augmentation: known, not built
    assert text.spec is not None and text.spec.training == {"augment": []}


def _runtime_constant(path: str, name: str) -> object:
    """The literal a runtime module (copied next to model.py, imports torch) assigns to `name`, read without
    importing it."""
    import ast as pyast

    tree = pyast.parse((ROOT / path).read_text(encoding="utf-8"))
    return next(pyast.literal_eval(n.value) for n in tree.body if isinstance(n, pyast.Assign)
                and any(isinstance(t, pyast.Name) and t.id == name for t in n.targets))


def test_the_built_augmentations_are_the_runtime_s() -> None:
    """The names train.py applies (data_vision.py and data_points.py, read without importing torch) are the ones the
    compiler lets through to training.json, for the input each applies to."""
    from metagen_compiler.semantics.training_section import BUILT_AUGMENTATIONS

    runtime = _runtime_constant("backends/pytorch/training/data_vision.py", "AUGMENTATIONS")
    assert set(BUILT_AUGMENTATIONS["image"]) == set(runtime)
    points = _runtime_constant("backends/pytorch/training/data_points.py", "POINT_AUGMENTATIONS")
    aliases = _runtime_constant("backends/pytorch/training/data_points.py", "POINT_ALIASES")
    assert {aliases.get(n, n) for n in BUILT_AUGMENTATIONS["point_cloud"]} == set(points)
    for modality, names in BUILT_AUGMENTATIONS.items():
        assert all(modality in AUGMENTATIONS[n] for n in names), modality


def test_point_cloud_augmentations_reach_train_py() -> None:
    """A point-cloud model's `augment` list reaches training.json (train.py's --augment default), image ones do not."""
    comp = _compile(POINTS.format(training="augment = [rotation, point_jitter, noise]"))
    assert [d.code for d in comp.bag.sorted()] == ["W003"]  # noise: known for point clouds, not built
    assert comp.spec is not None and comp.spec.training == {"augment": ["rotation", "point_jitter"]}
    bad = _compile(POINTS.format(training="augment = [horizontal_flip]"))
    assert [d.code for d in bad.bag.sorted()] == ["E203"]


@pytest.mark.parametrize("name", ["OPTIMIZERS", "SCHEDULES", "PRECISIONS"])
def test_the_training_choices_are_the_runtime_s(name: str) -> None:
    """The compiler's copy of train.py's choices (loop.py imports torch, so the compiler cannot import it) is
    equal to the runtime's: training.json never holds a value train.py's parser refuses."""
    from metagen_compiler.semantics import training_section

    assert getattr(training_section, name) == _runtime_constant("backends/pytorch/training/loop.py", name)


def test_every_key_has_a_value_that_passes() -> None:
    ok = {"optimizer": "sgd", "lr": "0.1", "schedule": "constant", "warmup": "0",
          "weight_decay": "0", "batch_size": "1", "steps": "1", "epochs": "2", "grad_clip": "0", "grad_accum": "1",
          "precision": "fp16", "augment": "[]", "ema_decay": "0.5", "noise_schedule": "linear", "timesteps": "2",
          "cfg_dropout": "0"}
    assert set(ok) == set(KEYS)
    for key, value in ok.items():
        if key in ("noise_schedule", "timesteps", "cfg_dropout"):
            comp = _compile(DIFFUSION.format(training=f"{key} = {value}"))
        else:
            comp = _compile(SPEC.format(training=f"training {{ {key} = {value} }}"))
        assert not comp.bag.has_errors, (key, comp.bag.items)


@pytest.mark.parametrize("training,codes", [
    ("optimiser = adamw", ["E207"]),
    ("learning_rate = 3e-4", ["E207"]),
    ("lr = 3e-4; lr = 1e-3", ["E104"]),
    ("lr = -3e-4", ["E211"]),
    ("lr = 0", ["E211"]),
    ("weight_decay = -0.1", ["E211"]),
    ("ema_decay = 1", ["E211"]),
    ("grad_accum = 0", ["E211"]),
    ("steps = 100; warmup = 200", ["E211"]),
    ("steps = 10k; epochs = 3", ["E212"]),
    ("warmup_epochs = 1", ["E207"]),  # train.py counts warmup in steps: "did you mean `warmup`?"
    ("optimizer = lamb", ["E203"]),
    ("optimizer = 3", ["E201"]),
    ("precision = fp8", ["E203"]),
    ("schedule = true", ["E201"]),
    ("batch_size = 2.5", ["E201"]),
    ("steps = true", ["E201"]),
    ("grad_clip = 1ms", ["E202"]),
    ("steps = 2GB", ["E202"]),
    ("augment = [noize]", ["E203"]),
    ("augment = [token_dropout, token_dropout]", ["E104"]),
    ("augment = [horizontal_flip]", ["E203"]),  # an image augmentation for a text model
    ("augment = [token_dropout]", ["W003"]),  # known, not built by train.py
    ("augment = [3]", ["E201"]),
    ("lr = x", ["E201"]),
    ("lr = 1 / 0", ["E210"]),
    ("layers = ? in {1, 2}", ["E207"]),
    ("lr = 3e-4 in 1..2", ["E201"]),
    ("noise_schedule = cosine", ["W003"]),  # no noise process in a decoder
    ("cfg_dropout = 0.1", ["W003"]),
])
def test_bad_values_get_diagnostics(training: str, codes: list[str]) -> None:
    assert _codes(SPEC.format(training=f"training {{ {training} }}")) == codes


def test_messages_say_what_is_wrong() -> None:
    comp = _compile(SPEC.format(training="training { learning_rate = 1; lr = -1; steps = 1k; epochs = 2 }"))
    text = [(d.code, d.message, d.hint) for d in comp.bag.sorted()]
    assert text[0] == ("E207", "unknown training setting `learning_rate`", "did you mean `lr`?")
    assert text[1][:2] == ("E211", "`lr` must be greater than 0, not -1")
    assert text[2][:2] == ("E212", "`steps` and `epochs` are both given; a training run takes one of them")


def test_a_second_section_is_a_duplicate() -> None:
    assert _codes(SPEC.format(training="training { lr = 1e-3 }\n  training { steps = 10 }")) == ["E104"]


def test_every_augmentation_names_modalities_the_compiler_knows() -> None:
    from metagen_compiler.semantics.catalog import INPUT_MODALITIES

    assert all(set(mods) <= set(INPUT_MODALITIES) for mods in AUGMENTATIONS.values())


# ---------------------------------------------------------------- diffusion's keys
def test_diffusion_keys_set_the_family_config_and_cfg_dropout_goes_to_training_json(tmp_path: Path) -> None:
    text = DIFFUSION.format(training="noise_schedule = cosine; timesteps = 500; cfg_dropout = 0.1; lr = 1e-4")
    comp = _compile(text)
    assert not comp.bag.has_errors, comp.bag.items
    assert comp.spec is not None
    assert comp.spec.dims["timesteps"] == 500 and str(comp.spec.dims["beta_schedule"]) == "cosine"
    assert comp.spec.bindings["timesteps"].source == "training"
    assert comp.spec.training_family == {"noise_schedule": "beta_schedule", "timesteps": "timesteps"}
    src = tmp_path / "d.msl"
    src.write_text(text, encoding="utf-8")
    assert metagenc([str(src), "-o", str(tmp_path / "out"), "--backend", "pytorch"]) == 0
    folder = tmp_path / "out" / "tiny_diffusion"
    assert json.loads((folder / "training.json").read_text()) == {"cfg_dropout": 0.1, "lr": 0.0001}
    model_py = (folder / "model.py").read_text()
    assert "    timesteps: int = 500\n" in model_py and "    beta_schedule: str = 'cosine'\n" in model_py


def test_diffusion_key_set_twice_is_an_error() -> None:
    text = DIFFUSION.format(training="timesteps = 500").replace("{ base = 32 }", "{ base = 32; timesteps = 1000 }")
    assert _codes(text) == ["E104"]


# ---------------------------------------------------------------- outputs
def test_training_json_report_and_paper(tmp_path: Path) -> None:
    src = tmp_path / "tiny.msl"
    src.write_text(SPEC.format(training=FULL), encoding="utf-8")
    out = tmp_path / "out"
    assert metagenc([str(src), "-o", str(out), "--backend", "pytorch,latex"]) == 0
    folder = out / "tiny"
    raw = (folder / "training.json").read_text(encoding="utf-8")
    settings = json.loads(raw)
    assert raw == json.dumps(settings, indent=2, sort_keys=True) + "\n"
    assert settings["lr"] == 0.0003 and settings["steps"] == 10000 and settings["precision"] == "bf16"
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["training"] == settings
    tex = (folder / "paper" / "sections" / "training.tex").read_text(encoding="utf-8")
    assert "The specification's training section sets the optimiser AdamW" in tex
    assert "fixes no optimiser" not in tex
    ledger = json.loads((folder / "paper" / "provenance.json").read_text(encoding="utf-8"))
    entries = ledger if isinstance(ledger, list) else next(v for v in ledger.values() if isinstance(v, list))
    keys = {e["key"]: e["value"] for e in entries if e.get("source") == "report"}
    assert keys["training.lr"] == 0.0003 and keys["training.steps"] == 10000
    # the same run twice writes the same file (deterministic)
    assert metagenc([str(src), "-o", str(out), "--backend", "pytorch"]) == 0
    assert (folder / "training.json").read_text(encoding="utf-8") == raw


def test_no_section_writes_no_training_json(tmp_path: Path) -> None:
    src = tmp_path / "tiny.msl"
    src.write_text(SPEC.format(training=""), encoding="utf-8")
    assert metagenc([str(src), "-o", str(tmp_path / "out"), "--backend", "pytorch"]) == 0
    assert not (tmp_path / "out" / "tiny" / "training.json").exists()
    report = json.loads((tmp_path / "out" / "tiny" / "report.json").read_text(encoding="utf-8"))
    assert "training" not in report


# ---------------------------------------------------------------- YAML
YAML = """metagen_version: "1.0"
name: "vit"
modality: {{inputs: [image], outputs: [label]}}
task: {{type: classification, num_classes: 10}}
constraints: {{image_size: 32}}
training:
  config:
{config}
architecture: {{family: transformer, variant: vit_b_16, layers: 2, d_model: 64, heads: 2, patch_size: 8}}
"""


def test_yaml_training_config_maps_into_the_section() -> None:
    config = ("    optimizer: AdamW\n    learning_rate: 1e-3\n    weight_decay: 0.05\n    batch_size: 128\n"
              "    epochs: 3\n    warmup_steps: 100\n    data_augmentation: [random_resized_crop, horizontal_flip]\n"
              "    ema_decay: 0.9999\n")
    comp = _compile(YAML.format(config=config), "vit.yaml")
    assert not comp.bag.has_errors, comp.bag.items
    assert [d.code for d in comp.bag.sorted()] == []
    assert comp.spec is not None and comp.spec.training == {
        "augment": ["random_resized_crop", "horizontal_flip"], "batch_size": 128, "ema_decay": 0.9999, "epochs": 3,
        "lr": 0.001, "optimizer": "adamw", "warmup": 100, "weight_decay": 0.05}
    bad = _compile(YAML.format(config="    warmup_epochs: 1\n    epochs: 2\n    data_augmentation: [flipp]\n"
                               "    optimizer: lamb\n"), "vit.yaml")
    got = [(d.code, d.span.line if d.span else 0) for d in bad.bag.sorted()]
    assert got == [("W003", 8), ("E203", 10), ("E203", 11)]  # warmup_epochs is recorded only


def test_yaml_diffusion_config_keeps_setting_the_family() -> None:
    text = """metagen_version: "1.0"
name: "ldm"
modality: {inputs: [text], outputs: [image]}
constraints: {image_size: 256, latent_size: 32}
training:
  objective: [diffusion]
  config: {timesteps: 500, noise_schedule: squaredcos_cap_v2, unconditional_probability: 0.1}
architecture: {family: diffusion, base: 32}
"""
    comp = _compile(text, "ldm.yaml")
    assert not comp.bag.has_errors, comp.bag.items
    assert comp.spec is not None and comp.spec.training == {"cfg_dropout": 0.1}
    assert comp.spec.dims["timesteps"] == 500 and str(comp.spec.dims["beta_schedule"]) == "cosine"


# ---------------------------------------------------------------- editor
def test_completion_offers_the_keys_and_their_choices() -> None:
    base = "msl 1\nimport std.transformer\nmodel m {\n  modality text -> text\n  "
    cases = {"": "training", "training {\n    ": "lr", "training {\n    optimizer = ": "adamw",
             "training { precision = ": "bf16", "training { augment = [random_crop, ": "horizontal_flip"}
    for tail, want in cases.items():
        text = base + tail
        labels = [c.label for c in complete(DocState("/tmp/m.msl", text), len(text))]
        assert want in labels, (tail, labels)


def test_the_outline_lists_the_section_and_its_settings() -> None:
    from metagen_compiler.editor.analysis import document_symbols

    text = SPEC.format(training=FULL)
    bag = DiagnosticBag()
    module = parse_msl(SourceFile("m.msl", text), bag)
    assert module is not None
    (model,) = [s for s in document_symbols(module) if s.kind == "model"]
    (section,) = [c for c in model.children if c.name == "training"]
    assert text[section.name_span.start:section.name_span.end] == "training"
    assert [c.name for c in section.children][:3] == ["optimizer", "lr", "schedule"]


def test_training_stays_usable_as_a_name() -> None:
    """`training` is a keyword only where a model statement starts: a parameter, a metadata group and a field may
    still be called so."""
    text = """msl 1
import std.transformer

block b(training: int = 2) {
  input x
  return x >> linear(training, training)
}

model tiny {
  modality text -> text
  task generation
  architecture transformer.decoder { vocab = 1000; layers = 2; d_model = 64 }
  metadata { training { data = ["x"] } compute { training = 3 } }
}
"""
    comp = compile_source(SourceFile("m.msl", text), stop_after="check")
    assert not comp.bag.items, comp.bag.items
    assert comp.spec is not None and comp.spec.metadata["training"] == {"data": ["x"]}
