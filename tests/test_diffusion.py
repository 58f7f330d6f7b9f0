"""The diffusion family (stdlib/diffusion.msl) and its task `denoising`, run: the U-Net against diffusers'
UNet2DConditionModel (count, and outputs with the same weights), the text encoder against transformers'
CLIPTextModel, the noise schedules and both samplers against diffusers' schedulers. The diffusers tests skip
cleanly without diffusers (it is not a dependency of the project)."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT, load_module

from metagen_compiler.cli import main

SD15_UNET = 859_520_964  # diffusers UNet2DConditionModel of runwayml/stable-diffusion-v1-5
CLIP_L_TEXT = 123_060_480  # transformers CLIPTextModel of openai/clip-vit-large-patch14
SD15 = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
            attention_head_dim=8, sample_size=64,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
# a small configuration with the same kinds of blocks: three levels, attention at the lower two
SMALL = dict(image_size=16, base=32, channel_mult=(1, 2, 2), attention_levels=(False, True, True), layers_per_block=2,
             heads=2, vocab=97, context=8, text_layers=1, text_width=32, text_heads=2, text_mlp=64)


@pytest.fixture(scope="module")
def ldm(tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("ldm")
    assert main([str(ROOT / "examples" / "latent_diffusion.msl"), "-o", str(out), "--backend", "pytorch"]) == 0
    return load_module(out / "latent_diffusion" / "model.py", "gen_latent_diffusion")


def _small(mod, **kw):  # type: ignore[no-untyped-def]
    return mod.build_model(dataclasses.replace(mod.Config(), **{**SMALL, **kw})).eval()


def _diffusers_config(c) -> dict:  # type: ignore[no-untyped-def]
    mult, attn = c.channel_mult, c.attention_levels
    return dict(sample_size=c.image_size, in_channels=c.channels, out_channels=c.channels,
                block_out_channels=tuple(c.base * m for m in mult), layers_per_block=c.layers_per_block,
                cross_attention_dim=c.text_width, attention_head_dim=c.heads, norm_num_groups=c.groups,
                down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
                up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)))


def _our_names(c) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """diffusers' module prefix -> ours, following the recursion of unet_level."""
    levels, n = len(c.channel_mult), c.layers_per_block
    out = {"conv_in": "encoder_image.conv_in", "time_embedding.linear_1": "encoder_timestep.linear_1",
           "time_embedding.linear_2": "encoder_timestep.linear_2", "conv_norm_out": "head.conv_norm_out",
           "conv_out": "head.conv_out"}
    path = "backbone.down"
    for level in range(levels):
        up = levels - 1 - level
        for j in range(n + 1):
            out[f"up_blocks.{up}.resnets.{n - j}"] = f"{path}.up_res"
            out[f"up_blocks.{up}.attentions.{n - j}"] = f"{path}.up_attn"
            if j == 0 and level > 0:
                out[f"up_blocks.{up}.upsamplers.0.conv"] = f"{path}.upsample"
            if j < n:
                out[f"down_blocks.{level}.resnets.{j}"] = f"{path}.down_res"
                out[f"down_blocks.{level}.attentions.{j}"] = f"{path}.down_attn"
                path += ".inner"
        if level < levels - 1:
            out[f"down_blocks.{level}.downsamplers.0.conv"] = f"{path}.downsample"
            path += ".next"
        else:
            out.update({"mid_block.resnets.0": f"{path}.mid.resnet_0",
                        "mid_block.attentions.0": f"{path}.mid.attention_0",
                        "mid_block.resnets.1": f"{path}.mid.resnet_1"})
    return out


def _from_diffusers(sd, c) -> dict:  # type: ignore[no-untyped-def]
    names = sorted(_our_names(c).items(), key=lambda kv: -len(kv[0]))
    out = {}
    for key, v in sd.items():
        k = key.replace(".to_out.0.", ".to_out.").replace(".ff.net.0.proj.", ".ff.proj.")
        k = k.replace(".ff.net.2.", ".ff.out.")
        for theirs, ours in names:
            if k.startswith(theirs + "."):
                out[ours + k[len(theirs):]] = v
                break
        else:
            raise KeyError(key)
    return out


def test_sd15_unet_equals_diffusers_count(ldm) -> None:  # type: ignore[no-untyped-def]
    with torch.device("meta"):
        model = ldm.build_model()
    unet = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder_text."))
    text = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder_text."))
    assert (unet, text) == (SD15_UNET, CLIP_L_TEXT)
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        ref = diffusers.UNet2DConditionModel(**SD15)
    assert sum(p.numel() for p in ref.parameters()) == SD15_UNET
    assert _diffusers_config(model.config) == {**SD15, "in_channels": 4, "out_channels": 4, "norm_num_groups": 32}


def test_sd15_text_encoder_equals_clip_text_model(ldm) -> None:  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77)
    with torch.device("meta"):
        ref = transformers.CLIPTextModel(cfg)
    assert sum(p.numel() for p in ref.parameters()) == CLIP_L_TEXT


def test_unet_computes_diffusers_unet(ldm) -> None:  # type: ignore[no-untyped-def]
    """diffusers' weights copied into the generated module (names mapped through the recursion): the same noise
    prediction for the same latent, timesteps and text states."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ours = _small(ldm)
    ref = diffusers.UNet2DConditionModel(**_diffusers_config(ours.config)).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.05)
    state = _from_diffusers(ref.state_dict(), ours.config)
    text_state = {k: v for k, v in ours.state_dict().items() if k.startswith("encoder_text.")}
    missing, unexpected = ours.load_state_dict({**state, **text_state}, strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 4, 16, 16)
    t = torch.tensor([3, 917])
    ids = torch.randint(0, 97, (2, 8))
    with torch.no_grad():
        got = ours(x, t, ids)
        want = ref(x, t, encoder_hidden_states=ours.encoder_text(ids)).sample
    assert got.shape == want.shape == (2, 4, 16, 16)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_noise_schedule_equals_diffusers(ldm, schedule) -> None:  # type: ignore[no-untyped-def]
    model = _small(ldm, beta_schedule=schedule)
    abar = torch.cumprod(1 - model.betas.double(), 0)
    assert model.betas.shape == model.alphas_cumprod.shape == (1000,)
    assert torch.allclose(model.alphas_cumprod.double(), abar, rtol=1e-5)
    assert bool((model.betas > 0).all() and (model.betas < 1).all())
    diffusers = pytest.importorskip("diffusers")
    name = {"cosine": "squaredcos_cap_v2"}.get(schedule, schedule)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, beta_start=model.config.beta_start,
                                  beta_end=model.config.beta_end)
    assert torch.allclose(model.betas, ref.betas, rtol=1e-6, atol=0)
    assert torch.allclose(model.alphas_cumprod, ref.alphas_cumprod, rtol=1e-6, atol=0)


def _fake_eps(x, t, *_):  # type: ignore[no-untyped-def]
    """A stand-in noise prediction that depends on x and t, so the samplers' arithmetic is what is compared."""
    return 0.5 * torch.tanh(x) + 1e-3 * t.float().view(-1, 1, 1, 1)


@pytest.mark.parametrize("method,steps,eta", [("ddim", 20, 0.0), ("ddim", 10, 0.7), ("ddpm", 25, 0.0),
                                              ("ddpm", 1000, 0.0)])
def test_samplers_equal_diffusers_schedulers(ldm, method, steps, eta) -> None:  # type: ignore[no-untyped-def]
    diffusers = pytest.importorskip("diffusers")
    model = _small(ldm, beta_schedule="scaled_linear")
    model.forward = _fake_eps  # type: ignore[method-assign]
    ids = torch.zeros(2, 8, dtype=torch.long)
    got = model.sample(ids, steps=steps, method=method, eta=eta, generator=torch.Generator().manual_seed(1))
    common = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=model.config.beta_start,
                  beta_end=model.config.beta_end, clip_sample=False, timestep_spacing="leading", steps_offset=0)
    if method == "ddim":
        sched = diffusers.DDIMScheduler(**common, set_alpha_to_one=True)
    else:
        sched = diffusers.DDPMScheduler(**common, variance_type="fixed_small")
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((2, 4, 16, 16), generator=g)
    for t in sched.timesteps:
        eps = _fake_eps(x, torch.full((2,), int(t)))
        kw = {"eta": eta} if method == "ddim" else {}
        x = sched.step(eps, t, x, generator=g, **kw).prev_sample
    assert torch.allclose(got, x, atol=1e-5, rtol=1e-5), (got - x).abs().max()


def test_sample_shapes_guidance_and_determinism(ldm) -> None:  # type: ignore[no-untyped-def]
    model = _small(ldm)
    ids = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(0))
    a = model.sample(ids, steps=3, generator=torch.Generator().manual_seed(5))
    b = model.sample(ids, steps=3, generator=torch.Generator().manual_seed(5))
    assert a.shape == (2, 4, 16, 16) and torch.equal(a, b) and torch.isfinite(a).all()
    # guidance scale 1 is the conditional model; another scale moves the sample
    g1 = model.sample(ids, steps=3, guidance_scale=1.0, generator=torch.Generator().manual_seed(5))
    g7 = model.sample(ids, steps=3, guidance_scale=7.5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(g1, a) and not torch.allclose(g7, a)
    # one DDIM step (at t = 0, to abar = 1) is x0_hat of the guided prediction eps_u + s (eps_c - eps_u),
    # eps_u from the all-zero prompt
    x, t = torch.randn(2, 4, 16, 16), torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        eps_c, eps_u = model(x, t, ids), model(x, t, torch.zeros_like(ids))
    got = model.sample(ids, steps=1, guidance_scale=3.0, x=x.clone())
    a0 = model.alphas_cumprod[0]
    want = (x - (1 - a0).sqrt() * (eps_u + 3.0 * (eps_c - eps_u))) / a0.sqrt()
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()
    with pytest.raises(ValueError, match="ddpm"):
        model.sample(ids, steps=2, method="euler")


def test_loss_regresses_the_noise(ldm) -> None:  # type: ignore[no-untyped-def]
    """loss() is the MSE of the noise: zero for a model that returns the noise it was given (checked by
    replaying the loss's random draws), and the metrics are deterministic."""
    model = _small(ldm).train()
    batch = ldm.example_batch(model, batch_size=2)
    torch.manual_seed(3)
    loss = model.loss(batch)
    torch.manual_seed(3)
    x0 = batch["image"]
    t = torch.randint(0, 1000, (2,))
    noise = torch.randn_like(x0)
    abar = model.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    assert torch.allclose(loss, torch.nn.functional.mse_loss(model(x_t, t, batch["text"]), noise))
    m1, m2 = model.metrics(batch), model.metrics(batch)
    assert sorted(m1) == ["noise_mse", "x0_mse"] and all(torch.equal(m1[k], m2[k]) for k in m1)


def test_training_steps_reduce_the_noise_error(ldm) -> None:  # type: ignore[no-untyped-def]
    """A few AdamW steps on one batch lower the (fixed-draw) noise_mse: the loss trains the denoiser."""
    torch.manual_seed(0)
    model = _small(ldm, layers_per_block=1).train()
    batch = ldm.example_batch(model, batch_size=4)
    before = model.metrics(batch)["noise_mse"]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(30):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    after = model.metrics(batch)["noise_mse"]
    assert after < 0.7 * before, (before, after)
