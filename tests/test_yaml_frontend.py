"""The YAML front end: the seeds' specs lower to the MSL AST, with real spans and coded diagnostics."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from metagen_compiler.diagnostics import Diagnostic, DiagnosticBag
from metagen_compiler.driver import compile_source
from metagen_compiler.semantics.program import read_source
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.yaml_frontend import parse_yaml

HERE = Path(__file__).parent
SEEDS = sorted((HERE / "seeds_yaml").glob("*.yaml"))
BROKEN = sorted((HERE / "broken" / "yaml").glob("*.yaml"))
BUILT = ("text_llm", "imagenet_classifier", "image_vit", "image_diffusion", "multimodal_clip", "vlm", "molecule_classifier",
         "yolo_detector", "atari_agent", "video_gen", "audio_musicgen",
         "stock_forecaster")  # seeds whose families the stdlib builds


def _parse(text: str, path: str = "spec.yaml") -> tuple[A.Module | None, DiagnosticBag, SourceFile]:
    src = SourceFile(path, text)
    bag = DiagnosticBag()
    return parse_yaml(src, bag), bag, src


def _model(text: str) -> tuple[A.Model, DiagnosticBag]:
    module, bag, _ = _parse(text)
    assert module is not None and len(module.models) == 1
    return module.models[0], bag


def _codes(bag: DiagnosticBag) -> list[str]:
    return [d.code for d in bag.sorted()]


def _only(bag: DiagnosticBag, code: str) -> Diagnostic:
    found = [d for d in bag.items if d.code == code]
    assert len(found) == 1, [(d.code, d.message) for d in bag.items]
    return found[0]


def _nodes(x: object) -> list[A.Node]:
    out: list[A.Node] = []
    if isinstance(x, A.Node):
        out.append(x)
    if is_dataclass(x) and not isinstance(x, type):
        for f in fields(x):
            v = getattr(x, f.name)
            for item in v if isinstance(v, tuple) else (v,):
                out += _nodes(item)
    return out


MINIMAL = """\
metagen_version: "1.0"
name: "m"
modality:
  inputs: [text]
  outputs: [text]
training:
  objective: autoregressive
architecture:
  family: transformer
"""


# ---------------------------------------------------------------- the seeds
def test_all_seed_examples_are_here() -> None:
    names = {p.stem for p in SEEDS}
    assert {"text_llm", "imagenet_classifier", "image_vit", "yolo_detector", "stock_forecaster", "atari_agent",
            "molecule_classifier", "image_diffusion", "audio_musicgen", "video_gen", "multimodal_clip", "vlm"} <= names
    for p in SEEDS:
        assert p.read_text(encoding="utf-8").startswith("# from the seeds: ")


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.stem)
def test_seed_parses_without_errors(path: Path) -> None:
    src = read_source(path)
    bag = DiagnosticBag()
    module = parse_yaml(src, bag)
    assert not bag.has_errors, [(d.code, d.message) for d in bag.errors]
    assert isinstance(module, A.Module) and module.version == "1.0"
    assert [m.name.name for m in module.models] == [path.stem]
    assert {i.path.dotted for i in module.imports} >= {"std.transformer", "std.vision"}
    # every node carries a real span into this file
    for node in _nodes(module):
        assert node.span.file is src, node
        assert 0 <= node.span.start <= node.span.end <= len(src.text), node
        if not isinstance(node, A.Module):
            assert node.span.line >= 2, node  # line 1 is the provenance comment


@pytest.mark.parametrize("name", BUILT)
def test_built_seeds_check(name: str) -> None:
    comp = compile_source(read_source(HERE / "seeds_yaml" / f"{name}.yaml"), stop_after="check")
    assert not comp.bag.has_errors, [(d.code, d.message) for d in comp.bag.errors]
    assert comp.spec is not None and comp.spec.name == name


@pytest.mark.parametrize("name", BUILT)
def test_built_seeds_compile(name: str) -> None:
    comp = compile_source(read_source(HERE / "seeds_yaml" / f"{name}.yaml"))
    assert not comp.bag.has_errors, [(d.code, d.message) for d in comp.bag.errors]


def test_text_llm_lowering() -> None:
    model, bag = _model((HERE / "seeds_yaml" / "text_llm.yaml").read_text(encoding="utf-8"))
    assert not bag.items
    assert [i.name for i in model.inputs] == ["text"] and [o.name for o in model.outputs] == ["text"]
    assert [o.name for o in model.objectives] == ["autoregressive"]
    assert model.task is None and model.modality_span is not None
    params, context = model.constraints
    assert (params.name.name, params.op) == ("params", "<=")
    assert params.value == A.Quantity(params.span, 8.0, "B", "8B")
    assert (context.name.name, context.op) == ("context", "=")
    assert context.value == A.Quantity(context.span, 256.0, "k", "256k")
    assert model.architecture is not None and model.architecture.family.dotted == "transformer"


def test_imagenet_classifier_lowering() -> None:
    model, _ = _model((HERE / "seeds_yaml" / "imagenet_classifier.yaml").read_text(encoding="utf-8"))
    assert model.task is not None and model.task.name.name == "classification"
    assert {f.name.name: f.value for f in model.task.fields} == {
        "domain": A.Name(model.span, ("image",)), "num_classes": A.Num(model.span, 1000)}
    assert [(c.name.name, c.op, c.value) for c in model.constraints] == [
        ("params", "<=", A.Quantity(model.span, 86.0, "M", "86M")),
        ("device", "=", A.Name(model.span, ("consumer_gpu",))),
    ]


def test_yolo_variant_selects_the_detection_family() -> None:
    src = read_source(HERE / "seeds_yaml" / "yolo_detector.yaml")
    bag = DiagnosticBag()
    module = parse_yaml(src, bag)
    assert module is not None and not bag.items
    model = module.models[0]
    assert model.architecture is not None and model.architecture.family.dotted == "yolo_v8"
    assert "std.detection" in {i.path.dotted for i in module.imports}  # `cnn` covers the YOLO family
    latency = model.constraints[0]
    assert (latency.name.name, latency.op, latency.value) == ("latency", "=", A.Name(model.span, ("real_time",)))
    comp = compile_source(src)
    assert not comp.bag.has_errors and comp.spec is not None and comp.spec.family.qualname == "std.detection.yolo"


def test_unbuilt_variant_is_kept_and_warned() -> None:
    model, bag = _model(MINIMAL.replace("[text]\n  outputs", "[image]\n  outputs").replace("transformer", "cnn")
                        + "  variant: yolo_v11\n")
    w = _only(bag, "W003")
    assert "yolo_v11" in w.message and "cnn" in w.message and w.span is not None
    assert model.architecture is not None and model.architecture.family.dotted == "cnn"
    assert [(e.name.name, e.value) for e in model.metadata if isinstance(e, A.Field)] == [
        ("variant", A.Str(model.span, "yolo_v11"))]


# ---------------------------------------------------------------- lowering details
def test_preset_variant_selects_the_preset() -> None:
    module, bag, _ = _parse(MINIMAL + "  variant: gpt2\n")
    assert module is not None and not bag.items
    assert module.models[0].architecture is not None
    assert module.models[0].architecture.family.dotted == "gpt2"
    assert "std.presets" in {i.path.dotted for i in module.imports}


def test_family_group_variant() -> None:
    model, bag = _model(MINIMAL.replace("[text]\n  outputs", "[image]\n  outputs") + "  variant: vit\n")
    assert not bag.items and model.architecture is not None and model.architecture.family.dotted == "vit"


def test_architecture_dims_become_fields() -> None:
    model, bag = _model(MINIMAL + "  layers: 12\n  d_model: \"?\"\n  norm: rmsnorm\n  depths: [2, 2]\n")
    assert not bag.items and model.architecture is not None
    got = {f.name.name: f.value for f in model.architecture.fields}
    s = model.span
    assert got == {"layers": A.Num(s, 12), "d_model": A.Unknown(s), "norm": A.Name(s, ("rmsnorm",)),
                   "depths": A.ListExpr(s, (A.Num(s, 2), A.Num(s, 2)))}


def test_constraint_forms() -> None:
    text = MINIMAL.replace("training:", """constraints:
  parameter_budget: {max: "1.5B", min: 100M}
  latency: "20ms"
  memory: 12GB
  throughput: 30fps
  image_size: 224
  device: consumer-gpu
training:""")
    model, bag = _model(text)
    assert not bag.items
    got = [(c.name.name, c.op, c.value) for c in model.constraints]
    s = model.span
    assert got == [
        ("params", "<=", A.Quantity(s, 1.5, "B", "1.5B")), ("params", ">=", A.Quantity(s, 100.0, "M", "100M")),
        ("latency", "<=", A.Quantity(s, 20.0, "ms", "20ms")), ("memory", "<=", A.Quantity(s, 12.0, "GB", "12GB")),
        ("throughput", ">=", A.Quantity(s, 30.0, "fps", "30fps")), ("image_size", "=", A.Num(s, 224)),
        ("device", "=", A.Name(s, ("consumer_gpu",))),
    ]


def test_metadata_keys_are_kept() -> None:
    text = MINIMAL.replace("training:\n  objective: autoregressive", """description: "a tiny model"
training:
  objective: [autoregressive]
  data:
    sources: [synthetic, licensed]
    governance: {pii: none}
evaluation:
  benchmarks: ["GEN-EVAL"]
  seeds: 3""") + "  components:\n    - {name: Encoder, type: transformer_encoder}\n"
    model, bag = _model(text)
    assert not bag.items, [(d.code, d.message) for d in bag.items]
    meta = {e.name.name: e for e in model.metadata}
    assert list(meta) == ["description", "training", "evaluation", "components"]
    s = model.span
    assert meta["description"] == A.Field(s, A.Ident(s, "description"), A.Str(s, "a tiny model"))
    training = meta["training"]
    assert isinstance(training, A.MetaGroup)
    data = training.entries[0]
    assert isinstance(data, A.MetaGroup) and [e.name.name for e in data.entries] == ["sources", "governance"]
    assert data.entries[0] == A.Field(s, A.Ident(s, "sources"),
                                      A.ListExpr(s, (A.Str(s, "synthetic"), A.Str(s, "licensed"))))
    evaluation = meta["evaluation"]
    assert isinstance(evaluation, A.MetaGroup)
    assert evaluation.entries[1] == A.Field(s, A.Ident(s, "seeds"), A.Num(s, 3))
    components = meta["components"]
    assert isinstance(components, A.MetaGroup) and components.entries[0].name.name == "Encoder"
    encoder = components.entries[0]
    assert isinstance(encoder, A.MetaGroup)
    assert encoder.entries[-1] == A.Field(s, A.Ident(s, "maps_to"), A.Str(s, "transformer.encoder"))


def test_several_documents_are_several_models() -> None:
    module, bag, _ = _parse(MINIMAL + "---\n" + MINIMAL.replace('name: "m"', 'name: "n"'))
    assert module is not None and not bag.items
    assert [m.name.name for m in module.models] == ["m", "n"]


def test_yaml_tags_are_not_constructed() -> None:
    module, bag, _ = _parse(MINIMAL + 'description: !!python/object/apply:os.system ["echo hi"]\n')
    assert module is not None
    assert "E006" in _codes(bag)


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 8)]
    text = MINIMAL + "evaluation:\n" + "".join(f"  {line}\n" for line in lines)
    _, bag, _ = _parse(text)
    # the loader stops while composing (a limit of the language, with the limit in the message)
    assert "more than the 100,000 the language allows" in _only(bag, "E009").message


# ---------------------------------------------------------------- diagnostics
def test_unknown_keys_get_did_you_mean() -> None:
    text = MINIMAL.replace("modality:", "modalty:").replace("  objective:", "  objectve:")
    text += "task:\n  type: classification\n  num_clases: 10\n"
    _, bag, _ = _parse(text)
    e007 = [d for d in bag.sorted() if d.code == "E007"]
    assert [(d.message, d.hint) for d in e007] == [
        ("unknown key `modalty` at the top level", "did you mean `modality`?"),
        ("unknown key `objectve` in `training`", "did you mean `objective`?"),
        ("unknown key `num_clases` in `task`", "did you mean `num_classes`?"),
    ]
    assert [d.span.line for d in e007 if d.span] == [3, 7, 12]


def test_bad_yaml_gives_e005_at_the_line() -> None:
    module, bag, _ = _parse(MINIMAL.replace("  outputs: [text]", "    outputs: [text]"))
    assert module is None
    d = _only(bag, "E005")
    assert d.span is not None and (d.span.line, d.span.col) == (5, 5)
    assert d.message.startswith("malformed YAML: ")


def test_unclosed_list_is_e005() -> None:
    module, bag, _ = _parse(MINIMAL.replace("inputs: [text]", "inputs: [text"))
    assert module is None
    d = _only(bag, "E005")
    assert d.span is not None and d.span.line == 5
    assert d.notes and d.notes[0].span is not None and d.notes[0].span.line == 4  # where the list opened


def test_spans_point_at_the_yaml_text() -> None:
    text = (HERE / "seeds_yaml" / "imagenet_classifier.yaml").read_text(encoding="utf-8")
    src = SourceFile("imagenet_classifier.yaml", text)
    module = parse_yaml(src, DiagnosticBag())
    assert module is not None
    model = module.models[0]
    lines = text.splitlines()

    def at(node: A.Node) -> str:
        return text[node.span.start:node.span.end]

    assert (model.name.span.line, at(model.name)) == (3, "imagenet_classifier")
    assert model.task is not None and (model.task.name.span.line, at(model.task.name)) == (8, "classification")
    assert lines[model.task.span.line - 1] == "task:"
    budget = model.constraints[0]
    assert (budget.span.line, at(budget.name), at(budget.value)) == (13, "max", "86M")
    assert at(budget) == 'max: "86M"'
    assert model.architecture is not None and at(model.architecture.family) == "transformer"
    assert at(model.architecture) == "architecture:\n  family: transformer"  # no trailing comment or newline


def test_wrong_shapes_are_e006() -> None:
    text = MINIMAL.replace("inputs: [text]", "inputs: text")
    text = text.replace("training:", "constraints:\n  parameter_budget: 8B\ntraining:")
    _, bag, _ = _parse(text)
    msgs = [d for d in bag.sorted() if d.code == "E006"]
    assert [d.message for d in msgs] == [
        "`modality.inputs` must be a list such as [text, image], not the string `text`",
        "`constraints.parameter_budget` must be a mapping of keys to values, not the string `8B`",
    ]
    assert msgs[0].hint == "write `inputs: [text]`"


def test_bad_quantity_unit() -> None:
    _, bag, _ = _parse(MINIMAL + 'constraints:\n  parameter_budget: {max: "86Q"}\n')
    d = _only(bag, "E202")
    assert d.message == "`86Q` has an unknown unit `Q`" and d.hint == "units here: k, K, M, B, G, T"


def test_version_and_name() -> None:
    model, bag = _model(MINIMAL.replace('"1.0"', '"2.0"').replace('name: "m"', 'name: "my-model"'))
    assert _codes(bag) == ["E008"]  # a display name is any text: the identifier is derived from it
    assert model.name.name == "my_model"
    assert model.metadata[0] == A.Field(model.span, A.Ident(model.span, "display_name"), A.Str(model.span, "my-model"))
    _, bag, _ = _parse(MINIMAL.replace("metagen_version: \"1.0\"", "metagen_version: 1.0"))
    assert not bag.items


def test_duplicate_key_is_reported() -> None:
    _, bag, _ = _parse(MINIMAL + "name: again\n")
    d = _only(bag, "E104")
    assert d.span is not None and d.span.line == 10 and d.notes[0].span is not None and d.notes[0].span.line == 2


def test_missing_pieces() -> None:
    _, bag, _ = _parse("metagen_version: '1.0'\nmodality: {inputs: [text]}\ntask: {domain: x}\n"
                       "architecture: {d_model: 64}\n")
    assert [d.message for d in bag.sorted()] == [
        "the spec has no `name`", "`modality` names no `outputs`", "`architecture` names no `family`"]


def test_not_a_mapping() -> None:
    module, bag, _ = _parse("- a\n- b\n")
    assert module is not None and not module.models and _codes(bag) == ["E006"]


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_yaml_specs_report_something(path: Path) -> None:
    assert path.read_text(encoding="utf-8").startswith("# broken")
    comp = compile_source(read_source(path), stop_after="check")
    assert comp.bag.items


def test_variant_of_another_family() -> None:
    _, bag, _ = _parse(MINIMAL.replace("family: transformer", "family: cnn") + "  variant: gpt2\n")
    d = _only(bag, "E106")
    assert d.message == "variant `gpt2` builds `transformer.decoder`, which family `cnn` does not cover"
    assert d.hint == "use `family: transformer`"


# ---------------------------------------------------------------- the earlier tool's whole schema (issue 16)
def _check(text: str):  # type: ignore[no-untyped-def]
    comp = compile_source(SourceFile("spec.yaml", text), stop_after="check")
    return comp, [(d.code, d.message) for d in comp.bag.sorted()]


def test_identifier_from_display_name() -> None:
    from metagen_compiler.syntax.yaml_schema import identifier

    assert identifier("text_llm") == "text_llm"  # already an identifier: kept as written
    assert identifier("ViT-Base/16 Image Classifier") == "vit_base_16_image_classifier"
    assert identifier("Latent Diffusion Model (Small)") == "latent_diffusion_model_small"
    assert identifier("3d_text_to_mesh") == "m_3d_text_to_mesh"
    assert identifier("\\input{/etc/passwd}") == "input_etc_passwd"
    assert identifier("class") == "m_class" and identifier("%%") == "model" and identifier("") == "model"
    assert len(identifier("x " * 100)) <= 64


def test_display_name_is_kept_and_clashes_are_errors() -> None:
    model, bag = _model(MINIMAL.replace('name: "m"', 'name: "Chat LLM (v2)"'))
    assert not bag.items and model.name.name == "chat_llm_v2"
    assert {e.name.name: e for e in model.metadata}["display_name"].value == A.Str(model.span, "Chat LLM (v2)")
    module, bag, _ = _parse(MINIMAL.replace('name: "m"', 'name: "A-b"') + "---\n"
                            + MINIMAL.replace('name: "m"', 'name: "a b"'))
    d = _only(bag, "E104")
    assert "`A-b` and `a b`" in d.message and "`a_b`" in d.message
    assert module is not None and [m.name.name for m in module.models] == ["a_b", "a_b_2"]  # one error, not two


def test_rates_of_any_unit_noun() -> None:
    from metagen_compiler.syntax.yaml_schema import parse_rate

    assert parse_rate("120 tok/s") is not None and parse_rate("120 tok/s").per_second == 120  # type: ignore[union-attr]
    got = {t: parse_rate(t) for t in ("2 img/s", "1 sample/s", "1 mesh/s", "30fps", "30s clip/min", "90 frames/min",
                                      "1.5k tokens per second")}
    assert {t: (r.per_second, r.noun, r.media_seconds) for t, r in got.items() if r} == {
        "2 img/s": (2.0, "img", False), "1 sample/s": (1.0, "sample", False), "1 mesh/s": (1.0, "mesh", False),
        "30fps": (30.0, "frame", False), "30s clip/min": (0.5, "clip", True), "90 frames/min": (1.5, "frames", False),
        "1.5k tokens per second": (1500.0, "tokens", False)}
    assert parse_rate("fast") is None and parse_rate("12 tok/fortnight") is None


def test_throughput_rate_becomes_a_checked_constraint() -> None:
    model, bag = _model(MINIMAL + 'constraints:\n  throughput: "120 tok/s"\n  device: cpu\n')
    assert not bag.items
    (c, _) = model.constraints
    assert (c.name.name, c.op, c.value) == ("throughput", ">=", A.Quantity(model.span, 120.0, "fps", "120 tok/s"))
    model, bag = _model(MINIMAL + 'constraints:\n  throughput: "30s clip/min"\n  device: cpu\n')
    assert _only(bag, "W003").message.startswith("`constraints.throughput` counts seconds of media")
    assert [c.name.name for c in model.constraints] == ["device"]


def test_latency_classes_and_default_device() -> None:
    comp, diags = _check(MINIMAL + "constraints:\n  latency: batch\n")
    assert diags == [] and comp.spec is not None and comp.spec.metadata["constraints"] == {"latency": "batch"}
    comp, diags = _check(MINIMAL + "constraints:\n  latency: near-real-time\n")
    assert diags == [("W002", "`latency` names no device: it is checked on consumer_gpu, the default device class")]
    assert comp.spec is not None and comp.spec.device == "consumer_gpu"


def test_unbounded_context() -> None:
    ssm = MINIMAL.replace("family: transformer", "family: ssm")
    for word in ("∞", "inf", "unbounded"):
        comp, diags = _check(ssm + f'constraints:\n  context_window: "{word}"\n')
        assert diags == [] and comp.spec is not None
        assert comp.spec.metadata["constraints"] == {"context_window": "unbounded"}
    _, diags = _check(MINIMAL + 'constraints:\n  context_window: "∞"\n')
    assert [c for c, _ in diags] == ["E209"] and "transformer.decoder" in diags[0][1]
    _, bag, _ = _parse(MINIMAL + 'constraints:\n  context_window: "∞"\n')
    assert "`ssm`" in (_only(bag, "E209").hint or "") and "`rnn`" in (_only(bag, "E209").hint or "")


def test_image_size_forms() -> None:
    vit = MINIMAL.replace("[text]\n  outputs: [text]", "[image]\n  outputs: [label]")
    for form, warned in (("[224, 224]", False), ('"224x224"', False), ("[256, 128]", True)):
        model, bag = _model(vit + f"constraints:\n  image_size: {form}\n")
        assert [c.value for c in model.constraints] == [A.Num(model.span, 256 if warned else 224)]
        assert [d.code for d in bag.items] == (["W003"] if warned else [])
    _, bag, _ = _parse(vit + "constraints:\n  image_size: [224, 0]\n")
    assert _codes(bag) == ["E006"]


def test_task_keys_map_to_family_parameters() -> None:
    mlp = MINIMAL.replace("[text]\n  outputs: [text]", "[tabular]\n  outputs: [regression]").replace(
        "transformer", "mlp").replace("training:\n  objective: autoregressive\n", "")
    comp, diags = _check(mlp + "task:\n  type: regression\n  num_outputs: 3\n  mask_resolution: 64\n")
    assert diags == [("W003", "`task.mask_resolution` sets no parameter of `tabular.mlp`; it is recorded, not built")]
    assert comp.spec is not None and comp.spec.task_fields == {"outputs": 3, "mask_size": 64}
    assert (comp.spec.bindings["outputs"].value, comp.spec.bindings["outputs"].source) == (3, "task")
    comp, diags = _check(mlp + "task:\n  num_outputs: 2\n")  # no type: the `regression` output decides
    assert diags == [] and comp.spec is not None and comp.spec.task == "regression"
    _, diags = _check(MINIMAL + "task:\n  domain: x\n")  # nothing decides: generation
    assert diags == []
    gnn = mlp.replace("[tabular]", "[graph]").replace("[regression]", "[label]").replace("mlp", "gnn")
    comp, diags = _check(gnn + "task:\n  type: node_classification\n  node_features: 64\n  edge_features: 4\n")
    assert diags == []  # `gnn` with edge features builds the edge-feature GAT (tests/test_graph_edges.py)
    assert comp.spec is not None and comp.spec.bindings["features"].value == 64
    assert comp.spec.family.qualname == "std.graph.gat_edge" and comp.spec.bindings["edge_features"].expr.value == 4
    assert comp.spec.metadata["task"] == {"edge_features": 4}


def test_task_field_that_sets_nothing_is_warned() -> None:
    vid = MINIMAL.replace("[text]\n  outputs: [text]", "[video]\n  outputs: [regression]").replace(
        "training:\n  objective: autoregressive\n", "")
    _, bag, _ = _parse(vid + "task:\n  type: regression\n  num_outputs: 2\n")  # the divided transformer takes it
    assert bag.items == []
    _, bag, _ = _parse(vid + "task:\n  type: regression\n  num_anchors: 2\n")
    assert _only(bag, "W003").message == "`task.num_anchors` sets no parameter of `video.divided`; it is recorded, not built"


def test_training_config_is_recorded_and_checked() -> None:
    text = MINIMAL.replace("  objective: autoregressive\n", """  objective: autoregressive
  config:
    optimizer: adamw
    learning_rate: 3e-4
    batch_size: 64
    warmup_steps: 0
    data_augmentation: [token_dropout]
    gradient_clip: 1.0
""")
    comp, diags = _check(text)
    assert [c for c, _ in diags] == ["W003"] and comp.spec is not None  # a text model: no augmentation is built
    assert comp.spec.metadata["training"]["config"] == {
        "optimizer": "adamw", "learning_rate": 0.0003, "batch_size": 64, "warmup_steps": 0,
        "data_augmentation": ["token_dropout"], "gradient_clip": 1.0}  # a key of its own is recorded
    for bad, code in (("batch_size: -1", "E201"), ("ema_decay: 2", "E201"), ("epochs: 1.5", "E201"),
                      ("learning_rate: fast", "E006"), ("lerning_rate: 0.1", "E007")):
        _, bag, _ = _parse(MINIMAL.replace("  objective: autoregressive\n", f"  objective: autoregressive\n  config:\n    {bad}\n"))
        assert _codes(bag) == [code], bad


def test_diffusion_config_sets_the_family() -> None:
    text = """metagen_version: "1.0"
name: "Latent Diffusion Model (Small)"
modality: {inputs: [text], outputs: [image]}
constraints: {image_size: 512, latent_size: 32}
training:
  objective: [diffusion]
  config: {timesteps: 500, noise_schedule: cosine, unconditional_probability: 0.1}
architecture: {family: diffusion}
"""
    comp, diags = _check(text)
    assert diags == [] and comp.spec is not None
    assert comp.spec.task == "denoising" and [n for n, _ in comp.spec.inputs] == ["text", "image"]
    b = {k: v.expr for k, v in comp.spec.bindings.items() if v.source == "model"}
    assert b == {"image_size": A.Num(model_span := b["image_size"].span, 32), "timesteps": A.Num(model_span, 500),
                 "beta_schedule": A.Name(model_span, ("cosine",))}
    assert comp.spec.metadata["constraints"] == {"image_size": 512}
    _, diags = _check(text.replace("cosine", "sigmoid"))
    assert [c for c, _ in diags] == ["W003"]


def test_recorded_sections_accept_their_keys_and_refuse_typos() -> None:
    text = MINIMAL + """version: 1.10
evaluation:
  benchmarks: [MMLU]
  metrics: [top-1 accuracy]
  baselines: [GPT-2]
  protocol: "5-shot"
outputs: {artifacts: [model.py]}
reproducibility: {seed: 1, "GPU hours": 12}
"""
    comp, diags = _check(text)
    assert diags == [] and comp.spec is not None
    meta = comp.spec.metadata
    assert meta["version"] == "1.10" and meta["evaluation"]["protocol"] == "5-shot"
    assert meta["reproducibility"] == {"seed": 1, "gpu_hours": 12} and meta["outputs"] == {"artifacts": ["model.py"]}
    _, bag, _ = _parse(MINIMAL + "evaluation:\n  benchmark: [MMLU]\n")
    assert _only(bag, "E007").hint == "did you mean `benchmarks`?"


def test_components_are_recorded_and_unknown_types_warned() -> None:
    model, bag = _model(MINIMAL + "  components:\n    - {name: Text Encoder, type: text_encoder, layers: 12}\n"
                        "    - {name: flux capacitor, type: flux}\n")
    w = _only(bag, "W003")
    assert "`flux`" in w.message and w.span is not None and w.span.line == 12
    comps = {e.name.name: e for e in model.metadata}["components"]
    assert isinstance(comps, A.MetaGroup) and [e.name.name for e in comps.entries] == ["text_encoder", "flux_capacitor"]


def test_family_and_modality_pairs() -> None:
    def pick(inputs: str, outputs: str, family: str, task: str = "") -> tuple[str | None, list[str]]:
        text = (f'metagen_version: "1.0"\nname: m\nmodality: {{inputs: [{inputs}], outputs: [{outputs}]}}\n'
                + (f"task: {{type: {task}}}\n" if task else "") + f"architecture: {{family: {family}}}\n")
        comp, diags = _check(text)
        return (comp.spec.family.qualname if comp.spec else None), [c for c, _ in diags]

    assert pick("audio", "text", "hybrid", "speech_recognition") == ("std.seq2seq.whisper", [])
    assert pick("audio", "text", "hybrid") == ("std.seq2seq.whisper", [])  # generation: speech recognition
    assert pick("audio", "label", "hybrid", "classification") == ("std.hybrid.audio", [])
    assert pick("text", "text", "hybrid") == ("std.hybrid.conv_decoder", [])
    assert pick("text", "label", "hybrid", "classification") == ("std.hybrid.conv_decoder", [])
    assert pick("image, text", "text", "hybrid") == ("std.vlm.vlm", ["W003"])  # image-text to text: the VLM
    assert pick("image, text", "label", "hybrid", "classification") == ("std.hybrid.fusion", [])
    assert pick("multimodal", "label", "hybrid", "multimodal_classification") == ("std.hybrid.fusion", [])
    assert pick("image, audio", "label", "hybrid", "classification") == ("std.hybrid.fusion", [])
    assert pick("text, audio", "regression", "hybrid") == ("std.hybrid.fusion", [])
    assert pick("video, text, audio", "label", "hybrid", "classification") == ("std.hybrid.fusion3", [])
    assert pick("video", "label", "cnn", "classification") == ("std.videocnn.resnet3d", [])
    assert pick("video", "regression", "cnn") == ("std.videocnn.resnet3d", [])
    assert pick("video", "label", "transformer", "classification") == ("std.video.divided", [])
    assert pick("graph", "label", "transformer", "node_classification") == ("std.graphtransformer.gps", [])
    assert pick("graph", "label", "transformer", "graph_classification") == ("std.graphtransformer.gps_graph", [])
    assert pick("point_cloud", "label", "transformer", "classification") == ("std.pointtransformer.pct", [])
    assert pick("3d", "regression", "transformer") == ("std.pointtransformer.pct", [])
    assert pick("tabular", "label", "transformer", "classification") == ("std.tabtransformer.ft_transformer", [])
    assert pick("tabular", "regression", "transformer") == ("std.tabtransformer.ft_transformer", [])
    assert pick("3d", "label", "pointnet", "classification") == ("std.pointcloud.pointnet", [])
    assert pick("tabular", "action", "mlp", "value_based") == ("std.rl.mlp_agent", [])
    assert pick("text", "label", "lstm", "classification") == ("std.rnn.rnn", [])
    fam, codes = pick("image", "label", "gnn", "classification")  # no sensible model: the error names what fits
    assert fam is None and codes == ["E106"]
    comp, _ = _check('metagen_version: "1.0"\nname: m\nmodality: {inputs: [image], outputs: [label]}\n'
                     "task: {type: classification}\narchitecture: {family: gnn}\n")
    hint = _only(comp.bag, "E106").hint or ""
    assert "for image try" in hint and "`cnn`" in hint and "`hybrid`" in hint
    for inputs, family, task, fits in (("graph", "hybrid", "node_classification", ("`transformer`", "`gnn`")),
                                       ("tabular", "cnn", "classification", ("`transformer`", "`mlp`"))):
        comp, _ = _check(f'metagen_version: "1.0"\nname: m\nmodality: {{inputs: [{inputs}], outputs: [label]}}\n'
                         f"task: {{type: {task}}}\narchitecture: {{family: {family}}}\n")
        hint = _only(comp.bag, "E106").hint or ""
        assert f"for {inputs} try" in hint and all(f in hint for f in fits), hint


def test_variants_of_the_new_families() -> None:
    """The seeds' variant names pick the 3-D ResNets: `r2plus1d` the family (R(2+1)D by default), `r3d_18` the preset
    with full 3-D convolutions; a variant of another family's group is E106."""
    base = ('metagen_version: "1.0"\nname: m\nmodality: {inputs: [video], outputs: [label]}\n'
            "task: {type: classification}\narchitecture: {family: cnn, variant: %s}\n")
    for variant, conv in (("r2plus1d", "conv_2plus1d"), ("r3d_18", "conv_3d"), ("r2plus1d_18", "conv_2plus1d")):
        comp, diags = _check(base % variant)
        assert diags == [] and comp.spec is not None and comp.spec.family.qualname == "std.videocnn.resnet3d"
        assert comp.spec.bindings["conv"].expr == A.Name(comp.spec.span, (conv,))
    _, diags = _check(base % "gps")
    assert [c for c, _ in diags] == ["E106"]


def test_edge_features_are_recorded_and_warned() -> None:
    """GCN and GraphGPS read no edge features: recorded in the metadata, with a warning (none for 0); a value
    that is no count is E006. (`gnn` and `gat` build the edge-feature GAT: tests/test_graph_edges.py.)"""
    base = ('metagen_version: "1.0"\nname: m\nmodality: {inputs: [graph], outputs: [label]}\n'
            "task: {type: node_classification, edge_features: %s}\narchitecture: {family: %s}\n")
    for family, target in (("gcn", "graph.gcn"), ("transformer", "graphtransformer.gps")):
        comp, diags = _check(base % (8, family))
        assert [c for c, _ in diags] == ["W003"] and f"`{target}` reads node features" in diags[0][1]
        assert comp.spec is not None and comp.spec.metadata["task"] == {"edge_features": 8}
    _, diags = _check(base % (0, "gnn"))
    assert diags == []
    for bad in ("-1", "2.5", "many", "[3]"):
        _, bag, _ = _parse(base % (bad, "gnn"))
        assert "edge_features` takes a whole number" in _only(bag, "E006").message


def test_mask_resolution_sizes_the_masks() -> None:
    """`mask_resolution` sets the FCN head's `mask_size` (`cnn` and ConvNeXt semantic segmentation): the logits are
    (B, classes, N, N); [h, w] with h != w gives the larger side and a warning; MaskFormer (masks at a quarter of the
    image) takes none: W003 naming the families that do; a value that is no size is E006."""
    seg = ('metagen_version: "1.0"\nname: m\nmodality: {inputs: [image], outputs: [segmentation_mask]}\n'
           "task: {type: %s, num_classes: 5, mask_resolution: %s}\nconstraints: {image_size: 256}\n"
           "architecture: {family: cnn, width: 8}\n")
    for form, side, codes in (("128", 128, []), ("[64, 64]", 64, []), ("[128, 64]", 128, ["W003"])):
        comp = compile_source(SourceFile("spec.yaml", seg % ("semantic_segmentation", form)))
        assert [d.code for d in comp.bag.sorted()] == codes and comp.graph is not None
        assert comp.spec is not None and comp.spec.dims["mask_size"] == side
        assert comp.graph.shape_of(comp.graph.outputs[0][1])[1:] == (5, side, side)
    _, diags = _check(seg % ("instance_segmentation", "64"))
    assert [c for c, _ in diags] == ["W003"] and "segmentation.maskformer" in diags[0][1]
    _, bag, _ = _parse(seg % ("instance_segmentation", "64"))
    for bad in ("0", "[1, 2, 3]", "fine"):
        _, bag, _ = _parse(seg % ("semantic_segmentation", bad))
        assert "mask_resolution` takes one size or [height, width]" in _only(bag, "E006").message


def test_task_key_under_another_parameter_name() -> None:
    text = ('metagen_version: "1.0"\nname: m\nmodality: {inputs: [image, text], outputs: [embedding]}\n'
            "task: {type: retrieval, embedding_dim: 256}\narchitecture: {family: clip}\n")
    comp, diags = _check(text)
    assert diags == [] and comp.spec is not None and comp.spec.task == "multimodal_retrieval"
    assert comp.spec.task_fields == {} and comp.spec.bindings["embed_dim"].expr == A.Num(comp.spec.span, 256)


def test_numbers_past_what_a_number_can_be() -> None:
    """`inf`, `nan` and `1e400` are YAML 1.1 strings that float() reads as non-finite: no number of training.config
    or of an image size (they raised OverflowError, ValueError); a side past MAX_INT is E009, `0x0` no size."""
    config = MINIMAL.replace("  objective: autoregressive\n", "  objective: autoregressive\n  config:\n    {}\n")
    for bad in ("learning_rate: inf", "learning_rate: nan", "batch_size: 1e400", "learning_rate: fast"):
        _, bag, _ = _parse(config.format(bad))
        key, value = bad.split(": ")
        assert _only(bag, "E006").message == f"`training.config.{key}` takes a number, not the string `{value}`"
    vit = MINIMAL.replace("[text]\n  outputs: [text]", "[image]\n  outputs: [label]")
    vit += "constraints:\n  image_size: {}\n"
    for form in ("[nan, 224]", "[inf, 224]", "[1e400, 2]", '"0x0"', "[0, 0]"):
        _, bag, _ = _parse(vit.format(form))
        assert _only(bag, "E006").message.startswith("`constraints.image_size` takes one size or [height, width]"), form
    for form in ('"9999999999999999999x9999999999999999999"', "[99999999999999999999, 2]"):
        _, bag, _ = _parse(vit.format(form))
        assert _codes(bag) == ["E009"] and "past the largest integer" in bag.items[0].message, form


def test_config_list_and_recorded_shapes() -> None:
    config = MINIMAL.replace("  objective: autoregressive\n", "  objective: autoregressive\n  config:\n    {}\n")
    _, bag, _ = _parse(config.format("data_augmentation: {flip: true}"))
    assert _only(bag, "E006").message == ("`training.config.data_augmentation` takes a list such as "
                                          "[random_crop, horizontal_flip], not a mapping")
    _, bag, _ = _parse(MINIMAL + "version: [1]\n")
    assert _only(bag, "E006").message == '`version` takes a string such as "1.2.0", not a list'
    model, bag = _model(MINIMAL + "  components:\n    - encoder\n    - [a]\n")
    assert _only(bag, "E006").message.startswith("`architecture.components item 2` takes a string")
    comps = {e.name.name: e for e in model.metadata}["components"]
    assert isinstance(comps, A.MetaGroup) and comps.entries == (A.Field(model.span, A.Ident(model.span, "item_1"),
                                                                        A.Str(model.span, "encoder")),)


def test_family_and_dim_that_are_not_names() -> None:
    """The hint's name is the display-name identifier (yaml_schema.identifier), as `name:` gets."""
    _, bag, _ = _parse(MINIMAL.replace("family: transformer", 'family: "Vision Transformer"'))
    d = _only(bag, "E006")
    assert (d.message, d.hint) == ("`architecture.family` must be a name, not `Vision Transformer`",
                                   "use `vision_transformer`")
    _, bag, _ = _parse(MINIMAL + '  "Hidden Size": 64\n')
    d = _only(bag, "E006")
    assert (d.message, d.hint) == ("`architecture.Hidden Size` is not a parameter name", "use `hidden_size`")


def test_constraint_words_and_quantities_that_are_neither() -> None:
    _, bag, _ = _parse(MINIMAL + 'constraints:\n  device: "gpu #1"\n')
    assert _only(bag, "E201").message == "`constraints.device` takes a name such as consumer_gpu, not `gpu #1`"
    _, bag, _ = _parse(MINIMAL + 'constraints:\n  throughput: "fast"\n  device: cpu\n')
    assert _only(bag, "E201").message == "`constraints.throughput` takes a quantity such as 30fps, not `fast`"
