"""Families against their reference implementations: ConvNeXt against torchvision (parameter counts of the
preset and of user-written configurations, on the meta device; the same outputs from the same weights), and
PointNet against the common PyTorch implementation (fxia22/pointnet.pytorch's PointNetCls, transcribed below)."""

from __future__ import annotations

import sys
import types

import pytest

torch = pytest.importorskip("torch")

from metagen_backends.pytorch import emit  # noqa: E402
from metagen_compiler.driver import compile_source  # noqa: E402
from metagen_compiler.span import SourceFile  # noqa: E402


def _torchvision():  # type: ignore[no-untyped-def]
    """torchvision.models, where installed (not in the `test` extra: PyPI's wheel for torch 2.13 needs the CUDA
    build of torch, and pip would replace the CPU build with it; the published counts are checked without it). A CUDA build of torchvision beside a CPU build of torch
    cannot load its compiled operators (nms, roi_align) and fails registering their fake kernels; the model
    definitions use none of them, so that registration is skipped while importing."""
    try:
        import torchvision
    except ImportError:
        pytest.skip("torchvision is not installed")
    except RuntimeError:
        sys.modules.pop("torchvision", None)
        for k in [k for k in sys.modules if k.startswith("torchvision.")]:
            sys.modules.pop(k)
        real = torch.library.register_fake

        def skip_torchvision_ops(name, *a, **k):  # type: ignore[no-untyped-def]
            if isinstance(name, str) and name.startswith("torchvision::"):
                return lambda fn: fn
            return real(name, *a, **k)

        torch.library.register_fake = skip_torchvision_ops
        try:
            import torchvision
        finally:
            torch.library.register_fake = real
    return torchvision.models


def build(src: str):  # type: ignore[no-untyped-def]
    comp = compile_source(SourceFile("tv.msl", src))
    assert not comp.bag.has_errors, [d.message for d in comp.bag.items]
    mod = types.ModuleType("tv_model")
    sys.modules["tv_model"] = mod  # dataclasses look their module up while the class is made
    exec(compile(emit(comp)["model.py"], "tv_model.py", "exec"), mod.__dict__)  # noqa: S102 - our own code
    return comp, mod


def _convnext(width: int, depths: list[int], image: int = 224, classes: int = 1000) -> str:
    return f"""import std.vision
model c {{
  modality image -> label
  task classification {{ num_classes = {classes} }}
  constraints {{ image_size = {image} }}
  architecture vision.convnext {{ width = {width}; depths = {depths} }}
}}"""


def _count(model) -> int:  # type: ignore[no-untyped-def]
    return sum(p.numel() for p in model.parameters())


# published counts: torchvision's model documentation (convnext_tiny, convnext_small)
CONVNEXT_TINY, CONVNEXT_SMALL = 28_589_128, 50_223_688
_TINY_PRESET = """import std.presets
model t {
  modality image -> label
  task classification { num_classes = 1000 }
  architecture convnext_tiny
}"""


def test_convnext_counts_equal_the_published_ones() -> None:
    """The preset and ConvNeXt-Small as a user writes it (width 96, depths [3, 3, 27, 3]): the compiler's
    count and the generated module's, without torchvision."""
    for src, published in ((_TINY_PRESET, CONVNEXT_TINY), (_convnext(96, [3, 3, 27, 3]), CONVNEXT_SMALL)):
        comp, mod = build(src)
        with torch.device("meta"):
            ours = _count(mod.build_model())
        assert comp.graph.param_count() == ours == published


def test_convnext_tiny_preset_equals_torchvision() -> None:
    tv = _torchvision()
    comp, _ = build(_TINY_PRESET)
    with torch.device("meta"):
        ref = _count(tv.convnext_tiny())
    assert comp.graph.param_count() == ref == CONVNEXT_TINY


def test_user_written_convnext_small_equals_torchvision() -> None:
    tv = _torchvision()
    comp, mod = build(_convnext(96, [3, 3, 27, 3]))
    with torch.device("meta"):
        ref = _count(tv.convnext_small())
        ours = _count(mod.build_model())
    assert comp.graph.param_count() == ours == ref == CONVNEXT_SMALL


def _torchvision_order(model) -> list:  # type: ignore[no-untyped-def]
    """torchvision's parameters in the order of ours: a block's layer_scale is registered before its
    convolution and MLP; ours (LayerScale) comes last, where it is applied."""
    out, pending = [], None
    for name, p in model.named_parameters():
        if name.endswith("layer_scale"):
            pending = p
            continue
        out.append(p)
        if pending is not None and name.endswith("block.5.bias"):
            out.append(pending)
            pending = None
    return out


def test_convnext_computes_what_torchvision_computes() -> None:
    """torchvision's weights copied into ours tensor by tensor (same order, same numbers of elements): the
    same logits, at a small size (width 16, one or two blocks per stage, 64 x 64 images)."""
    _torchvision()
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    depths = [1, 2, 1, 1]
    dims = [16, 32, 64, 128]
    torch.manual_seed(0)
    cfg = [CNBlockConfig(d, dims[i + 1] if i < 3 else None, n) for i, (d, n) in enumerate(zip(dims, depths))]
    ref = ConvNeXt(cfg, stochastic_depth_prob=0.0, layer_scale=0.5, num_classes=10).eval()
    _, mod = build(_convnext(16, depths, image=64, classes=10))
    ours = mod.build_model().eval()
    theirs = _torchvision_order(ref)
    mine = list(ours.parameters())
    assert [p.numel() for p in mine] == [p.numel() for p in theirs]
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            a.copy_(b.reshape(a.shape) + 0.01 * torch.randn(a.shape))  # and off the init, so every tensor counts
            b.copy_(a.reshape(b.shape))
        x = torch.randn(2, 3, 64, 64)
        err = (ours(x) - ref(x)).abs().max().item()
    assert err < 5e-5, err  # fp32: summation orders differ (the layer scale is applied channels last)


# ------------------------------------------------------------------ PointNet
class _STN3d(torch.nn.Module):  # fxia22/pointnet.pytorch, pointnet/model.py: STN3d
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1, self.conv2, self.conv3 = nn.Conv1d(3, 64, 1), nn.Conv1d(64, 128, 1), nn.Conv1d(128, 1024, 1)
        self.fc1, self.fc2, self.fc3 = nn.Linear(1024, 512), nn.Linear(512, 256), nn.Linear(256, 9)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(64), nn.BatchNorm1d(128), nn.BatchNorm1d(1024)
        self.bn4, self.bn5 = nn.BatchNorm1d(512), nn.BatchNorm1d(256)

    def forward(self, x):  # type: ignore[no-untyped-def]
        F = torch.nn.functional
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = torch.max(x, 2, keepdim=True)[0].view(-1, 1024)
        x = F.relu(self.bn4(self.fc1(x)))
        x = F.relu(self.bn5(self.fc2(x)))
        x = self.fc3(x) + torch.eye(3).flatten()
        return x.view(-1, 3, 3)


class _PointNetfeat(torch.nn.Module):  # PointNetfeat(global_feat=True, feature_transform=False)
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stn = _STN3d()
        self.conv1, self.conv2, self.conv3 = nn.Conv1d(3, 64, 1), nn.Conv1d(64, 128, 1), nn.Conv1d(128, 1024, 1)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(64), nn.BatchNorm1d(128), nn.BatchNorm1d(1024)

    def forward(self, x):  # type: ignore[no-untyped-def]  # x: (B, 3, N)
        F = torch.nn.functional
        trans = self.stn(x)
        x = torch.bmm(x.transpose(2, 1), trans).transpose(2, 1)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return torch.max(x, 2, keepdim=True)[0].view(-1, 1024)


class _PointNetCls(torch.nn.Module):  # PointNetCls(k=40), returning logits (the original adds log_softmax)
    def __init__(self, k: int = 40) -> None:
        super().__init__()
        nn = torch.nn
        self.feat = _PointNetfeat()
        self.fc1, self.fc2, self.fc3 = nn.Linear(1024, 512), nn.Linear(512, 256), nn.Linear(256, k)
        self.dropout = nn.Dropout(p=0.3)
        self.bn1, self.bn2 = nn.BatchNorm1d(512), nn.BatchNorm1d(256)

    def forward(self, x):  # type: ignore[no-untyped-def]
        F = torch.nn.functional
        x = self.feat(x)
        x = F.relu(self.bn1(self.fc1(x)))
        x = F.relu(self.bn2(self.dropout(self.fc2(x))))
        return self.fc3(x)


def _reference_key(key: str) -> str:
    for ours, theirs in (("encoder.stn.", "feat.stn."), ("backbone.", "feat."), ("head.", "")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise KeyError(key)


def test_pointnet_equals_the_reference_implementation() -> None:
    """examples/pointnet.msl against PointNetCls: the same state_dict keys (up to the module prefixes) and
    shapes, 1,614,129 parameters, and the same logits from the same (perturbed) weights and statistics."""
    from conftest import ROOT, compile_path

    comp = compile_path(ROOT / "examples" / "pointnet.msl")
    assert not comp.bag.has_errors
    mod = types.ModuleType("pointnet_ref")
    sys.modules["pointnet_ref"] = mod
    exec(compile(emit(comp)["model.py"], "pointnet_ref.py", "exec"), mod.__dict__)  # noqa: S102
    ours = mod.build_model().eval()
    torch.manual_seed(0)
    ref = _PointNetCls(40).eval()
    assert comp.graph.param_count() == _count(ours) == _count(ref) == 1_614_129
    theirs = ref.state_dict()
    mapped = {_reference_key(k): v for k, v in ours.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k, v in theirs.items():
            if v.is_floating_point():
                v.copy_((1.0 + 0.2 * torch.rand(v.shape, generator=g)) if k.endswith("running_var")
                        else v + 0.05 * torch.randn(v.shape, generator=g))
        ours.load_state_dict({k: theirs[_reference_key(k)] for k in ours.state_dict()})
        points = torch.randn(4, 1024, 3, generator=g)
        expect = ref(points.transpose(1, 2))
        got = ours(points)
    assert expect.abs().max() > 0.1  # logits of a size that shows a difference
    assert (got - expect).abs().max().item() < 1e-4
