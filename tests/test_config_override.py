"""A generated Config is the architecture at any size: overriding its main dims rebuilds a working model.

Fields the spec derives from others (`heads = d_model / 64`, a family default `kv_heads = heads`) are
derived again in `Config.__post_init__`, so `Config(layers=2, d_model=128, heads=2)` (the README's line)
builds: before, kv_heads stayed frozen at the nominal 12 and the attention asserted.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import EXAMPLES, generated_module

torch = pytest.importorskip("torch")

# the width of a transformer stack and its heads, per prefix the families use
_PREFIXES = ("", "text_", "vision_", "retriever_")
_LAYERS = re.compile(r"^(|text_|vision_|image_|retriever_|decoder_|lstm_)layers$")


def small_override(cfg: object) -> dict[str, object]:
    """The main dims of a Config made small: depth at most 2, transformer width 128 with 2 heads where a field
    sets the heads (a derived heads field follows the width by itself)."""
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    plain = {f.name for f in dataclasses.fields(cfg) if f.default is not None}  # type: ignore[arg-type]
    out: dict[str, object] = {}
    for name, v in fields.items():
        if _LAYERS.match(name) and name in plain and isinstance(v, int) and v > 2:
            out[name] = 2
    for name, v in fields.items():
        if name in plain and name == "depths" and isinstance(v, tuple):
            out[name] = tuple(min(x, 1) for x in v)
        elif name in plain and name in ("depth", "layers_per_block", "transformer_depth") and isinstance(v, int) and v > 1:
            out[name] = 1
        elif name in plain and name in ("hidden", "mlp_dim", "ffn", "ffn_dim", "d_ff") and isinstance(v, int) and v > 64:
            out[name] = 64
    for p in _PREFIXES:
        width = next((w for w in (f"{p}d_model", f"{p}width") if w in fields), None)
        heads = f"{p}heads"
        if width is None or heads not in fields or width not in plain:
            continue
        out[width] = 128
        if heads in plain:
            out[heads] = 2
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_builds_with_small_main_dims(path: Path, tmp_path: Path) -> None:
    m = generated_module(path, tmp_path, f"cfg_{path.stem}")
    nominal = m.Config()
    small = small_override(nominal)
    if not small:
        pytest.skip("no main dim to shrink (depth, width, hidden size)")
    cfg = m.Config(**small)
    for f in dataclasses.fields(cfg):
        assert getattr(cfg, f.name) is not None, f"{f.name} was not derived"
    model = m.build_model(cfg)
    model.eval()
    with torch.no_grad():
        out = model(*m.example_inputs(model, batch_size=1))
    outs = out if isinstance(out, (tuple, list)) else [out]
    assert all(torch.isfinite(o).all() for o in outs if isinstance(o, torch.Tensor))


def test_readme_small_config_line(tmp_path: Path) -> None:
    """The README's own line: GPT-2 at 2 layers, width 128, 2 heads (kv_heads follows heads)."""
    m = generated_module(Path(__file__).parent.parent / "examples" / "gpt2.msl", tmp_path, "cfg_readme_gpt2")
    cfg = m.Config(layers=2, d_model=128, heads=2)
    assert cfg.kv_heads == 2
    model = m.build_model(cfg)
    logits = model(*m.example_inputs(model, batch_size=2))
    assert logits.shape[0] == 2 and logits.shape[-1] == cfg.vocab
    assert m.Config().kv_heads == m.Config().heads == 12


def test_derived_fields_follow_and_can_be_pinned(tmp_path: Path) -> None:
    """tiny_story derives heads from d_model (d_model / 64) and kv_heads from heads; a given value wins."""
    m = generated_module(Path(__file__).parent.parent / "examples" / "tiny_story.msl", tmp_path, "cfg_tiny_story")
    assert (m.Config().heads, m.Config().kv_heads) == (m.Config().d_model // 64, m.Config().d_model // 64)
    assert (m.Config(d_model=256).heads, m.Config(d_model=256).kv_heads) == (4, 4)
    assert (m.Config(d_model=256, heads=2).heads, m.Config(d_model=256, heads=2).kv_heads) == (2, 2)
    assert m.Config(d_model=256, kv_heads=1).kv_heads == 1
