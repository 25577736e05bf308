"""Train the world's text-to-image model and save it as a stock ``StableDiffusionPipeline`` folder.

Components (all diffusers / transformers classes, trained from scratch here):

- tokenizer: :func:`negopt.world.vocab.build_world_tokenizer` (one token per world word, 48 tokens)
- text encoder: ``CLIPTextModel``, ``text_layers`` x ``text_width`` (pipeline conditioning = its last
  hidden state ``[B, 48, text_width]``, exactly what ``StableDiffusionPipeline.encode_prompt`` feeds)
- VAE: trained first by :mod:`negopt.world.train_vae`, frozen here
- UNet: ``UNet2DConditionModel`` on ``[B, C, 16, 16]`` latents, cross-attention to the text states
- scheduler: ``DDIMScheduler`` on a cosine (``squaredcos_cap_v2``) schedule, v-prediction, sampling
  steps spaced ``"trailing"`` (the first at t = 999)

Why v-prediction with trailing steps: sampling starts from pure noise, so its first step must be a
timestep where training also saw (almost) pure noise. On the cosine schedule ``abar_999 ~ 2e-9`` but
``"leading"`` spacing starts 15 steps at t = 925, where ``abar = 0.013``: the latent still carries 11%
of its signal (its mean colour above all), the sampler starts without it and images come out grey and
low in contrast. ``"trailing"`` starts at t = 999, where an epsilon-predicting model cannot recover
``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)`` (division by ~5e-5: garbage); a v-predicting one can
(``x0 = sqrt(abar) x_t - sqrt(1 - abar) v``), as in Lin et al. 2024, "Common diffusion noise schedules
and sample steps are flawed".

Text encoder and UNet train jointly on the v objective, weighted by min-SNR (Hang et al. 2023)::

    z0 = scaling_factor * (mu + sigma * e)  with (mu, sigma) the VAE posterior, e ~ N(0, I)
    zt = sqrt(abar_t) z0 + sqrt(1 - abar_t) n,   t ~ U{0..999},  n ~ N(0, I)
    v  = sqrt(abar_t) n - sqrt(1 - abar_t) z0,   snr_t = abar_t / (1 - abar_t)
    loss = mean_b  min(snr_t, gamma) / (snr_t + 1) * || unet(zt, t, text_encoder(ids)) - v ||^2 / numel

with each caption replaced by "" with probability ``empty_rate`` (the unconditional branch that
classifier-free guidance and every negative prompt replace). The saved weights are an exponential
moving average (decay ``min(ema_decay, (1 + s) / (10 + s))`` at step ``s``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from negopt.world.dataset import RenderedSet


@dataclass
class DiffusionConfig:
    """Architecture, optimisation and default sampling of the world's diffusion model."""

    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 256
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    empty_rate: float = 0.1  # share of captions dropped to "" (the unconditional branch)
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    timestep_spacing: str = "trailing"
    snr_gamma: float = 5.0  # min-SNR weighting; 0 = unweighted
    log_every: int = 50  # loss curve points saved in world_train.json
    seed: int = 0
    # sampling defaults (the world profile's num_inference_steps / guidance_scale)
    num_inference_steps: int = 15
    guidance_scale: float = 6.0


def build_scheduler(cfg: DiffusionConfig):
    """DDIM on ``cfg.beta_schedule``, 1000 training steps (spacing and target: the module docstring)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_schedule=cfg.beta_schedule, clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, timestep_spacing=cfg.timestep_spacing,
                         prediction_type=cfg.prediction_type)


def diffusion_loss(pred: torch.Tensor, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, scheduler,
                   snr_gamma: float) -> torch.Tensor:
    """The weighted objective of the module docstring for ``pred`` ``[B, C, h, w]`` (epsilon or v target
    by the scheduler's ``prediction_type``); ``snr_gamma = 0`` leaves every timestep weight 1."""
    abar = scheduler.alphas_cumprod.to(z0.dtype)[t].view(-1, 1, 1, 1)
    if scheduler.config.prediction_type == "v_prediction":
        target = abar.sqrt() * noise - (1 - abar).sqrt() * z0
    else:
        target = noise
    per_sample = (pred - target).pow(2).mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        snr = (abar / (1 - abar)).view(-1)
        weight = snr.clamp(max=snr_gamma) / (snr + 1 if scheduler.config.prediction_type == "v_prediction" else snr)
        per_sample = per_sample * weight
    return per_sample.mean()


def build_text_encoder(cfg: DiffusionConfig, tokenizer):
    """A seeded, untrained ``CLIPTextModel`` whose ids and length match ``tokenizer``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(cfg.seed)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_width, intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))


def build_unet(cfg: DiffusionConfig, latent_channels: int, latent_size: int):
    """A seeded, untrained ``UNet2DConditionModel``: cross-attention in every block but the lowest."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.block_out_channels)
    torch.manual_seed(cfg.seed + 1)
    return UNet2DConditionModel(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cfg.text_width, attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
    )


def assemble_pipeline(vae, text_encoder, tokenizer, unet, scheduler):
    """The stock ``StableDiffusionPipeline`` of these parts (no safety checker, no feature extractor)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
            pe.mul_(decay).add_(p.detach(), alpha=1 - decay)


def train_diffusion(cfg: DiffusionConfig, data: RenderedSet, vae_dir: str | Path, out_dir: str | Path,
                    progress: bool = True) -> Path:
    """Train text encoder + UNet on ``data`` (images and ``truth.caption``) with the VAE in ``vae_dir``;
    ``save_pretrained`` the EMA pipeline to ``out_dir`` (with ``world_train.json``). Returns ``out_dir``."""
    import copy

    from tqdm.auto import tqdm

    from negopt.world.train_vae import latent_moments, load_vae
    from negopt.world.vocab import build_world_tokenizer

    tokenizer = build_world_tokenizer()
    vae = load_vae(vae_dir).requires_grad_(False)
    mean, std = latent_moments(vae, data.images)
    scale = float(vae.config.scaling_factor)
    ids = tokenizer(list(data.truth["caption"]), padding="max_length", truncation=True,
                    max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                      return_tensors="pt").input_ids
    text_encoder = build_text_encoder(cfg, tokenizer).train()
    unet = build_unet(cfg, mean.shape[1], mean.shape[-1]).train()
    ema_text, ema_unet = (copy.deepcopy(m).requires_grad_(False) for m in (text_encoder, unet))
    scheduler = build_scheduler(cfg)
    params = [*text_encoder.parameters(), *unet.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=1e-2)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(cfg.steps), desc="diffusion", disable=not progress)
    curve, running = [], 0.0
    for step in bar:
        idx = torch.randint(len(mean), (cfg.batch_size,), generator=gen)
        z0 = scale * (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen))
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.empty_rate
        batch_ids = torch.where(drop[:, None], empty, ids[idx])
        states = text_encoder(batch_ids)[0]
        pred = unet(scheduler.add_noise(z0, noise, t), t, states).sample
        loss = diffusion_loss(pred, z0, noise, t, scheduler, cfg.snr_gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_text, text_encoder, decay)
        _ema_update(ema_unet, unet, decay)
        running += loss.item()
        if (step + 1) % cfg.log_every == 0:
            curve.append([step + 1, round(running / cfg.log_every, 5)])
            running = 0.0
        bar.set_postfix(loss=f"{loss.item():.4f}")
    pipe = assemble_pipeline(vae, ema_text.eval(), tokenizer, ema_unet.eval(), scheduler)
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "world_train.json").write_text(json.dumps({**asdict(cfg), "loss_curve": curve}) + "\n")
    return out_dir


def load_pipeline(folder: str | Path):
    """The saved pipeline through ``StableDiffusionPipeline.from_pretrained`` (what the project's loader
    does), progress bar off."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, prompts: list[str], negatives: list[str], seeds: list[int], guidance_scale: float = 6.0,
             num_inference_steps: int = 15, batch_size: int = 64) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` images from the stock pipeline, one ``torch.Generator(seed)`` per image (so an
    image depends on its prompt, negative and seed only, not on its batch)."""
    if not len(prompts) == len(negatives) == len(seeds):
        raise ValueError(f"generate: {len(prompts)} prompts, {len(negatives)} negatives, {len(seeds)} seeds")
    out = []
    for i in range(0, len(prompts), batch_size):
        sl = slice(i, i + batch_size)
        images = pipe(prompt=prompts[sl], negative_prompt=negatives[sl], guidance_scale=guidance_scale,
                      num_inference_steps=num_inference_steps, output_type="pt",
                      generator=[torch.Generator().manual_seed(int(s)) for s in seeds[sl]]).images
        out.append((images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
    return np.concatenate(out)
