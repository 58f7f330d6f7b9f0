"""The vision families against torchvision, the reference implementation: parameter counts of the presets
and of user-written configurations (on the meta device), and the same outputs from the same weights."""

from __future__ import annotations

import sys
import types

import pytest

torch = pytest.importorskip("torch")

from metagen_backends.pytorch import emit  # noqa: E402
from metagen_compiler.driver import compile_source  # noqa: E402
from metagen_compiler.span import SourceFile  # noqa: E402


def _torchvision():  # type: ignore[no-untyped-def]
    """torchvision.models. A CUDA build of torchvision beside a CPU build of torch cannot load its compiled
    operators (nms, roi_align) and fails registering their fake kernels; the model definitions use none of
    them, so that registration is skipped while importing."""
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


def test_convnext_tiny_preset_equals_torchvision() -> None:
    tv = _torchvision()
    comp, _ = build("""import std.presets
model t {
  modality image -> label
  task classification { num_classes = 1000 }
  architecture convnext_tiny
}""")
    with torch.device("meta"):
        ref = _count(tv.convnext_tiny())
    assert comp.graph.param_count() == ref == 28_589_128


def test_user_written_convnext_small_equals_torchvision() -> None:
    tv = _torchvision()
    comp, mod = build(_convnext(96, [3, 3, 27, 3]))
    with torch.device("meta"):
        ref = _count(tv.convnext_small())
        ours = _count(mod.build_model())
    assert comp.graph.param_count() == ours == ref == 50_223_688


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
