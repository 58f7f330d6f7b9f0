"""The diffusion task's noise schedules (the forward process's betas).

Each top-level definition is pasted into the model.py that needs it, as it is here (backends/pytorch/lowering.py's
runtime_source: a definition with the ones it calls); a function whose first parameter is `self` is a method of
the generated model class, pasted into it. Imports here are model.py's (torch, nn, F, math) or other runtime
modules', whose definitions model.py holds beside these.
"""

import math

import torch


def noise_schedule(kind: str, timesteps: int, beta_start: float, beta_end: float):
    """The betas of the forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), (timesteps,) float32:
    linear (DDPM), scaled_linear (Stable Diffusion: linear in sqrt(beta)) or cosine (Nichol and Dhariwal 2021:
    alpha_bar(s) = cos((s + 0.008) / 1.008 * pi / 2) ** 2, each beta capped at 0.999), as diffusers' schedulers."""
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float32)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float32) ** 2
    if kind == "cosine":
        def alpha_bar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), 0.999)
                             for i in range(timesteps)], dtype=torch.float32)
    raise ValueError(f"unknown beta schedule {kind!r}")
