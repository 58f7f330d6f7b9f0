"""The primitives' input checks: an input of the wrong rank or with the wrong channels is a ShapeError whose
message names the expected dims (the message reaches the user in the compiler's E4xx diagnostic)."""

from __future__ import annotations

from typing import Any

import pytest

from metagen_compiler.primitives import PRIMITIVES, Shape, ShapeError


@pytest.mark.parametrize("name,args,inputs,message", [
    ("conv2d", {"in_channels": 4}, [(2, 4, 8)], "expects (B, C, H, W), got (2, 4, 8)"),
    ("conv2d", {"in_channels": 4}, [(2, 3, 8, 8)], "expects 4 input channels, got 3"),
    ("conv3d", {"in_channels": 4}, [(2, 4, 8, 8)], "expects (B, C, T, H, W), got (2, 4, 8, 8)"),
    ("conv3d", {"in_channels": 4}, [(2, 3, 2, 8, 8)], "expects 4 input channels, got 3"),
    ("conv1d", {"in_channels": 4}, [(2, 4)], "expects (B, C, L), got (2, 4)"),
    ("conv1d", {"in_channels": 4}, [(2, 3, 8)], "expects 4 input channels, got 3"),
    ("conv_transpose2d", {"in_channels": 4}, [(2, 4, 8)], "expects (B, C, H, W), got (2, 4, 8)"),
    ("conv_transpose2d", {"in_channels": 4}, [(2, 5, 8, 8)], "expects 4 input channels, got 5"),
    ("maxpool2d", {}, [(2, 4, 8)], "expects (B, C, H, W), got (2, 4, 8)"),
    ("avgpool2d", {}, [(2, 4, 8)], "expects (B, C, H, W), got (2, 4, 8)"),
    ("resize", {}, [(2, 4)], "expects (B, C, H, W), got (2, 4)"),
    ("global_avgpool", {}, [(2, 4)], "expects (B, C, H, W), got (2, 4)"),
    ("upsample", {}, [(2, 4)], "expects (B, C, H, W), got (2, 4)"),
    ("layernorm2d", {"channels": 4}, [(2, 4)], "expects (B, C, H, W), got (2, 4)"),
    ("layernorm2d", {"channels": 4}, [(2, 3, 8, 8)], "expects 4 channels, got 3 (shape (2, 3, 8, 8))"),
    ("lstm", {"in_features": 4}, [(2, 4)], "expects (B, T, features), got (2, 4)"),
    ("gru", {"in_features": 4}, [(2, 4, 5)], "expects last dimension 4, got 5 (shape (2, 4, 5))"),
    ("causal_conv1d", {"channels": 4}, [(2, 4)], "expects (B, T, C), got (2, 4)"),
])
def test_a_wrong_input_shape_names_the_expected_dims(name: str, args: dict[str, Any], inputs: list[Shape],
                                                    message: str) -> None:
    prim = PRIMITIVES[name]
    bound = {p.name: (p.default if p.default is not ... else 1) for p in prim.params} | args
    with pytest.raises(ShapeError) as e:
        prim.shape(bound, inputs)
    assert str(e.value) == message


def test_lstm_and_gru_differ_only_in_name_and_gates() -> None:
    """lstm has 4 gates and gru 3: the weights of each gate stack, the same shape rule."""
    args = {"in_features": 5, "hidden": 7, "layers": 2, "bidirectional": True}
    lstm, gru = PRIMITIVES["lstm"].weights(args), PRIMITIVES["gru"].weights(args)
    assert lstm.keys() == gru.keys() and len(lstm) == 16
    assert all(lstm[k][0] == 4 * 7 and gru[k][0] == 3 * 7 for k in lstm)
    assert PRIMITIVES["lstm"].shape(args, [(2, 3, 5)]) == PRIMITIVES["gru"].shape(args, [(2, 3, 5)]) == [(2, 3, 14)]
    assert PRIMITIVES["gru"].doc.startswith("GRU over (B, T, in)")
