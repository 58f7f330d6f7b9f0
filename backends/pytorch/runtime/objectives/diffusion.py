"""The diffusion task: DDPM's epsilon-prediction loss, the noise schedule's buffers and the sampler.

The task code of backends/pytorch/runtime/objectives (see its __init__): each class's loss, metrics, targets and
other methods are pasted into model.py with the spec's input names filled in (backends/pytorch/losses.py).
"""

import torch
import torch.nn.functional as F

from ..diffusion import noise_schedule
from .slots import TaskModel, guided_inputs, noised_inputs, sample_shape, step_inputs


class DiffusionMse(TaskModel):
    """`diffusion_mse`: DDPM's epsilon prediction; the noise schedule's buffers and the sampler."""

    def loss(self, batch):
        x0 = batch["x"]
        t = torch.randint(0, self.config.timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        abar = self.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ...)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        return F.mse_loss(self(*noised_inputs(batch, x_t, t)), noise)

    @torch.no_grad()
    def metrics(self, batch):
        x0 = batch["x"]
        # a fixed draw of t and noise, so that the metrics of two checkpoints compare
        g = torch.Generator(device=x0.device).manual_seed(0)
        t = torch.randint(0, self.config.timesteps, (x0.shape[0],), generator=g, device=x0.device)
        noise = torch.randn(x0.shape, generator=g, device=x0.device)
        abar = self.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        eps = self(*noised_inputs(batch, x_t, t))
        x0_hat = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()  # the clean input the prediction implies
        return {"noise_mse": F.mse_loss(eps, noise), "x0_mse": F.mse_loss(x0_hat, x0)}

    def init(self, config):
        # the forward process: betas and their cumulative products abar_t (buffers, not in the state_dict)
        betas = noise_schedule(config.beta_schedule, config.timesteps, config.beta_start, config.beta_end)
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, dim=0), persistent=False)

    @torch.no_grad()
    def sample(self, *cond, steps: int = 50, method: str = "ddim", eta: float = 0.0, guidance_scale: float = 1.0,
               uncond=None, generator=None, x=None, t_start=None, callback=None):
        """Runs the reverse process from x_T ~ N(0, I) (or the given `x`) to x_0 in `steps` steps at timesteps
        (steps - 1) k, ..., k, 0 with k = timesteps // steps (diffusers' "leading" spacing). method "ddpm": ancestral
        sampling from the posterior q(x_prev | x_t, x0_hat) (Ho et al. 2020; with fewer steps, of the respaced
        process); "ddim": Song et al. 2021, deterministic at eta = 0. guidance_scale != 1: classifier-free
        guidance, eps_u + s (eps_c - eps_u), eps_u conditioned on `uncond` (default: all-zero ids of the same shape,
        e.g. pass the tokenised empty prompt). Noise is drawn from `generator`. t_start: `x` is x_t at that timestep
        and only the steps at timesteps <= t_start run (image-to-image, SDEdit); callback(x, abar_prev) after each
        step returns the new x (inpainting: the known region noised to abar_prev, 1 after the last step)."""
        if method not in ("ddpm", "ddim"):
            raise ValueError(f"method must be 'ddpm' or 'ddim', got {method!r}")
        c, first = self.config, cond[0]
        n, device = first.shape[0], first.device
        if x is None:
            x = torch.randn((n, *sample_shape(c)), generator=generator, device=device)
        ratio = c.timesteps // min(max(steps, 1), c.timesteps)
        abar = self.alphas_cumprod
        if uncond is None:
            uncond = tuple(torch.zeros_like(i) for i in (*cond,))
        for step in range(min(max(steps, 1), c.timesteps) - 1, -1, -1):
            t_now = step * ratio
            if t_start is not None and t_now > t_start:
                continue
            a_t = abar[t_now]
            a_prev = abar[t_now - ratio] if t_now - ratio >= 0 else abar.new_tensor(1.0)
            t = torch.full((n,), t_now, dtype=torch.long, device=device)
            if guidance_scale != 1.0:
                eps_u, eps_c = self(*guided_inputs(x, t, cond, uncond)).chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            else:
                eps = self(*step_inputs(x, t, cond))
            x0_hat = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            if method == "ddim":
                sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
                x = a_prev.sqrt() * x0_hat + (1 - a_prev - sigma**2).sqrt() * eps
                if eta > 0:
                    x = x + sigma * torch.randn(x.shape, generator=generator, device=device)
            else:
                beta = 1 - a_t / a_prev
                x = (a_prev.sqrt() * beta / (1 - a_t)) * x0_hat + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x
                if t_now > 0:
                    var = ((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20)
                    x = x + var.sqrt() * torch.randn(x.shape, generator=generator, device=device)
            if callback is not None:
                x = callback(x, a_prev)
        return x
