"""Generative models' pieces: the VAE's sampling, diffusion timesteps."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .core import Param, Primitive, Shape, ShapeError, _check_positive, _elementwise, _same, fmt_shape, numel


def _timestep_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if len(x) != 1:
        raise ShapeError(f"expects one timestep per sample (B,), got {fmt_shape(x)}")
    return [(x[0], a["dim"])]


def _reparameterize_shape(a: Mapping[str, Any], s: list[Shape]) -> list[Shape]:
    x = s[0]
    if not x or not _same(x[-1], 2 * a["latent"]):
        raise ShapeError(f"expects last dimension 2 * latent = {2 * a['latent']} (mean, log-variance), "
                         f"got {fmt_shape(x)}")
    return [x[:-1] + (a["latent"],)]


_P = Param

PRIMS: list[Primitive] = [
    Primitive(
        "timestep_embedding", (_P("dim", "int"), _P("flip_sin_to_cos", "bool", True), _P("shift", "float", 0.0),
                               _P("max_period", "float", 10000.0)),
        "Sinusoidal embedding of integer timesteps (B,) -> (B, dim) (DDPM, diffusers' Timesteps): with half = dim / 2, "
        "frequencies exp(-ln(max_period) i / (half - shift)) for i < half, sin and cos of t times each (cos first "
        "if flip_sin_to_cos). No weights.",
        shape=_timestep_shape, flops=_elementwise(3),
        check=lambda a: _check_positive("dim")(a) or (
            None if a["dim"] % 2 == 0 else f"dim must be even, got {a['dim']}"),
        saves="none",
    ),
    Primitive(
        "reparameterize", (_P("latent", "int"), _P("beta", "float", 1.0), _P("elements", "int", 1)),
        "VAE sampling: splits (B, 2*latent) into mean and log-variance; z = mean + exp(logvar / 2) * noise in "
        "training, the mean at inference. Adds beta * KL(q(z|x) || N(0, I)) / elements to the model's loss (KL "
        "summed over the latent dims, averaged over the batch; `elements` per input puts it on the scale of a "
        "mean squared reconstruction error).",
        shape=_reparameterize_shape, flops=lambda a, i, o: (0, 4 * numel(o[0])),
        check=lambda a: _check_positive("latent", "elements")(a) or (
            None if a["beta"] >= 0 else f"beta must not be negative, got {a['beta']}"),
        tags=frozenset({"module", "aux_loss"}),
        saved=lambda a, i, o: 3 * 4 * math.prod(o[0]),  # exp(logvar) for the KL term, the std and the noise
    ),
]
