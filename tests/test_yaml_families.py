"""The families built for the earlier YAML tool's family/modality pairs (issue 16): `cnn` on video (std.videocnn's
3-D ResNets, R(2+1)D and R3D), `hybrid` on text, audio and several inputs (std.hybrid), `transformer` on graphs
(std.graphtransformer's GraphGPS), point clouds (std.pointtransformer's PCT) and tables (std.tabtransformer's
FT-Transformer). Exact parameter counts (the published ones where a reference exists), the instantiated model's count
and output shapes equal to the compiler's, and numeric checks: the 3-D ResNets against a torchvision-layout reference
module with the same weights, causality, order invariance and equivariance, the feature tokenizer's formula."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from test_properties import build, check, train_step

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile

nn = torch.nn


def spec(imports: str, modality: str, task: str, arch: str, constraints: str = "") -> str:
    return f"""msl 1
import std.{imports}
model m {{
  modality {modality}
  task {task}
  {f"constraints {{ {constraints} }}" if constraints else ""}
  architecture {arch}
}}
"""


def trained(src: str, batch_size: int = 2):  # type: ignore[no-untyped-def]
    """The spec built and checked against the compiler's counts and shapes, then one loss and backward."""
    comp, mod = build(src)
    check(comp, mod)
    train_step(mod, batch_size)
    return comp, mod


def seeded_model(mod):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return mod.build_model().eval()


def params_of(src: str) -> int:
    comp = compile_source(SourceFile("<test>", src))
    assert not comp.bag.has_errors, [d.message for d in comp.bag.sorted()]
    assert comp.graph is not None
    return comp.graph.param_count()


# ---------------------------------------------------------------- 3-D ResNets (cnn on video)
@pytest.mark.parametrize("preset,published", [("r2plus1d_18", 31_505_325), ("r3d_18", 33_371_472)])
def test_video_resnets_have_torchvisions_counts(preset: str, published: int) -> None:
    """torchvision.models.video r2plus1d_18 / r3d_18 (400 classes): the counts its documentation gives."""
    assert params_of(spec("videocnn", "video -> label", "classification { num_classes = 400 }",
                          f"videocnn.{preset}")) == published


class _Conv2Plus1D(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, mid: int, stride: int) -> None:
        super().__init__(nn.Conv3d(c_in, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
                         nn.BatchNorm3d(mid), nn.ReLU(), nn.Conv3d(mid, c_out, (3, 1, 1), (stride, 1, 1), (1, 0, 0),
                                                                   bias=False))


class _Block(nn.Module):
    """torchvision's VideoResNet BasicBlock (its module order, so state dicts line up item by item)."""

    def __init__(self, c_in: int, width: int, stride: int, full3d: bool) -> None:
        super().__init__()
        mid = c_in * width * 27 // (c_in * 9 + 3 * width)

        def conv(a: int, b: int, s: int) -> nn.Module:
            return nn.Conv3d(a, b, 3, s, 1, bias=False) if full3d else _Conv2Plus1D(a, b, mid, s)

        self.conv1 = nn.Sequential(conv(c_in, width, stride), nn.BatchNorm3d(width), nn.ReLU())
        self.conv2 = nn.Sequential(conv(width, width, 1), nn.BatchNorm3d(width))
        self.downsample = (nn.Sequential(nn.Conv3d(c_in, width, 1, stride, bias=False), nn.BatchNorm3d(width))
                           if stride != 1 or c_in != width else None)

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = self.conv2(self.conv1(x))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class _VideoResNet(nn.Module):
    def __init__(self, width: int, depths: list[int], classes: int, full3d: bool) -> None:
        super().__init__()
        if full3d:
            self.stem = nn.Sequential(nn.Conv3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                                      nn.BatchNorm3d(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv3d(3, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), nn.BatchNorm3d(45),
                                      nn.ReLU(), nn.Conv3d(45, width, (3, 1, 1), 1, (1, 0, 0), bias=False),
                                      nn.BatchNorm3d(width), nn.ReLU())
        layers, c = [], width
        for i, d in enumerate(depths):
            w = width * 2 ** i
            layers.append(nn.Sequential(*(_Block(c if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1, full3d)
                                          for j in range(d))))
            c = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * width, classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(self.layers(self.stem(x)).mean((2, 3, 4)))


@pytest.mark.parametrize("full3d", [False, True], ids=["r2plus1d", "r3d"])
@pytest.mark.parametrize("side,frames", [(32, 4), (30, 3)])
def test_video_resnet_computes_the_reference(full3d: bool, side: int, frames: int) -> None:
    """The generated 3-D ResNet, its weights copied item by item into a torchvision-layout reference (BatchNorm3d),
    gives the same logits in eval and in training mode (BatchNorm2d over (B, C, T, H*W) is BatchNorm3d); an odd
    side and clip length check the stages' output sides."""
    conv = "conv = conv_3d; stem = stem_3d;" if full3d else ""
    src = spec("videocnn", "video -> label", "classification { num_classes = 5 }",
               f"videocnn.resnet3d {{ width = 8; depths = [1, 2, 1, 1]; frames = {frames}; image_size = {side}; {conv} }}")
    comp, mod = build(src)
    check(comp, mod)
    torch.manual_seed(0)
    ours = mod.build_model()
    ref = _VideoResNet(8, [1, 2, 1, 1], 5, full3d)
    src_sd, ref_sd = ours.state_dict(), ref.state_dict()
    assert [tuple(v.shape) for v in src_sd.values()] == [tuple(v.shape) for v in ref_sd.values()]
    ref.load_state_dict(dict(zip(ref_sd, (v.clone() for v in src_sd.values()), strict=True)))
    x = torch.randn(2, 3, frames, side, side)
    for train in (True, False):
        ours.train(train)
        ref.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- hybrid: text, audio, several inputs
def test_conv_decoder_is_causal_and_trains() -> None:
    """Logits at position t do not depend on tokens after t (the convolutions are causal, attention masked)."""
    _, mod = trained(spec("hybrid", "text -> text", "generation",
                          "hybrid.conv_decoder { vocab = 97; context = 16; layers = 2; d_model = 64; kernel = 3 }"))
    model = seeded_model(mod)
    x = torch.randint(0, 97, (2, 16))
    y = x.clone()
    y[:, 9:] = torch.randint(0, 97, (2, 7))
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])


@pytest.mark.parametrize("task,arch", [
    ("classification { num_classes = 35 }", "hybrid.audio { samples = 3200; n_mels = 16; layers = 2; d_model = 64 }"),
    ("regression { outputs = 3 }", "hybrid.audio { samples = 3200; n_mels = 16; layers = 1; d_model = 64 }"),
])
def test_audio_hybrid(task: str, arch: str) -> None:
    trained(spec("hybrid", f"audio -> {'label' if 'class' in task else 'regression'}", task, arch))


SMALL_FUSION = ("image_size = 32; patch_size = 8; stem_width = 8; vocab = 97; context = 12; samples = 3200; n_mels = 16;"
                " frames = 4; layers = 2; d_model = 64")


@pytest.mark.parametrize("inputs", ["image, text", "image, audio", "text, audio", "video, text", "image, text, audio",
                                    "video, text, audio"])
def test_fusion_of_several_inputs(inputs: str) -> None:
    family = "fusion3" if inputs.count(",") == 2 else "fusion"
    comp, _ = trained(spec("hybrid", f"{inputs} -> label", "multimodal_classification { num_classes = 4 }",
                           f"hybrid.{family} {{ {SMALL_FUSION} }}"))
    order = ("image", "text", "audio", "video")  # the family's encoders' order, whatever the spec's
    assert [i.name for i in comp.graph.inputs] == sorted((m.strip() for m in inputs.split(",")), key=order.index)


def test_fusion_regression_reads_num_outputs() -> None:
    comp, mod = build(spec("hybrid", "image, audio -> regression", "regression { outputs = 3 }",
                           f"hybrid.fusion {{ {SMALL_FUSION} }}"))
    check(comp, mod)
    assert mod.build_model().head.head.out_features == 3


# ---------------------------------------------------------------- transformers on graphs, point clouds, tables
def test_graph_transformer_is_permutation_equivariant() -> None:
    """Relabelling the nodes (and the edge index with them) permutes GraphGPS's node logits the same way."""
    _, mod = trained(spec("graphtransformer", "graph -> label", "node_classification { num_classes = 5 }",
                          "graphtransformer.gps { nodes = 30; edges = 90; features = 6; layers = 2; d_model = 32; "
                          "heads = 2 }"), 1)
    model = seeded_model(mod)
    x, edges = torch.randn(30, 6), torch.randint(0, 30, (2, 90))
    perm = torch.randperm(30)
    inv = torch.argsort(perm)
    with torch.no_grad():
        a = model(x, edges)
        b = model(x[perm], inv[edges])
    torch.testing.assert_close(b, a[perm], rtol=1e-4, atol=1e-5)


def test_graph_transformer_link_prediction() -> None:
    comp, mod = build(spec("graphtransformer", "graph -> embedding", "link_prediction { embedding_dim = 16 }",
                           "graphtransformer.gps { nodes = 20; edges = 40; features = 4; layers = 1; d_model = 32 }"))
    check(comp, mod)


def test_point_transformer_ignores_the_order_of_points() -> None:
    _, mod = trained(spec("pointtransformer", "point_cloud -> label", "classification { num_classes = 10 }",
                          "pointtransformer.pct { points = 48; layers = 2; d_model = 32; heads = 2 }"))
    model = seeded_model(mod)
    pts = torch.randn(2, 48, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(pts[:, torch.randperm(48)]), model(pts), rtol=1e-4, atol=1e-5)


def test_ft_transformer_tokenizes_each_feature() -> None:
    """The feature tokenizer gives feature j the token x_j W_j + b_j after the [CLS] token; the count is the paper's
    (F d weights and F d biases, the [CLS] token, the blocks, the head) and `outputs` sizes the regression head."""
    src = spec("tabtransformer", "tabular -> regression", "regression { outputs = 2 }",
               "tabtransformer.ft_transformer { features = 5; layers = 1; d_model = 32; heads = 4 }")
    comp, mod = trained(src)
    d, f, mlp = 32, 5, 4 * 32 // 3
    block = 2 * 2 * d + (3 * d * d + 3 * d + d * d + d) + (d * mlp + mlp + mlp * d + d)
    assert comp.graph.param_count() == 2 * f * d + d + block + 2 * d + (d * 2 + 2)
    torch.manual_seed(0)
    model = mod.build_model()
    tok = model.encoder
    x = torch.randn(3, f)
    w = tok.tokenizer.weight.view(f, d)
    b = tok.tokenizer.bias.view(f, d)
    with torch.no_grad():
        got = tok(x)
    torch.testing.assert_close(got[:, 1:], x[:, :, None] * w + b)
    assert model.head.head.out_features == 2


# ---------------------------------------------------------------- task.num_outputs on every regression head
def _regression_families() -> dict[str, tuple[str, ...]]:
    from test_presets import stdlib_program

    out = {}
    for d in stdlib_program().defs_of("family"):
        fam = d.node
        if any(h.task.name == "regression" for h in fam.heads):
            out[d.qualname] = tuple(p.name.name for p in fam.params)
    return out


def test_every_regression_head_takes_outputs() -> None:
    """Each family with a regression head sizes it by `outputs` (what the YAML `task.num_outputs` sets)."""
    fams = _regression_families()
    assert len(fams) >= 13
    assert sorted(f for f, params in fams.items() if "outputs" not in params) == []


YAML_REGRESSION = {  # one YAML spec per input form whose family group builds a regression head, at a small size
    "text": ("transformer", "layers: 1\n  d_model: 64\n  vocab: 97\n  context: 16"),
    "image": ("transformer", "layers: 1\n  d_model: 64\n  image_size: 32\n  patch_size: 8"),
    "video": ("transformer", "layers: 1\n  d_model: 64\n  image_size: 32\n  patch_size: 8\n  frames: 4"),
    "time_series": ("lstm", "layers: 1\n  d_model: 32\n  lookback: 8"),
}


@pytest.mark.parametrize("inputs", sorted(YAML_REGRESSION))
def test_num_outputs_sizes_the_regression_head(inputs: str) -> None:
    """`task.num_outputs: 3` with a regression output: the family's `outputs` is 3 (no warning) and the model
    predicts (B, 3)."""
    family, dims = YAML_REGRESSION[inputs]
    text = (f'metagen_version: "1.0"\nname: r\nmodality: {{inputs: [{inputs}], outputs: [regression]}}\n'
            f"task: {{type: regression, num_outputs: 3}}\narchitecture:\n  family: {family}\n  {dims}\n")
    comp = compile_source(SourceFile("r.yaml", text))
    assert [d.code for d in comp.bag.sorted()] == [], [d.message for d in comp.bag.sorted()]
    assert comp.spec is not None and comp.spec.bindings["outputs"].value == 3
    from metagen_backends.pytorch import emit

    mod = _module(emit(comp)["model.py"])
    with torch.no_grad():
        out = mod.build_model().eval()(*mod.example_inputs(mod.build_model(), batch_size=2))
    assert tuple(out.shape) == (2, 3)


def _module(code: str):  # type: ignore[no-untyped-def]
    import sys
    import types

    mod = types.ModuleType("yaml_regression_model")
    sys.modules["yaml_regression_model"] = mod
    exec(compile(code, "yaml_regression_model.py", "exec"), mod.__dict__)  # noqa: S102 - our own generated code
    return mod
