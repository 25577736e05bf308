"""Train the world's ``AutoencoderKL`` from scratch and save it with ``save_pretrained``.

Images ``x`` in [-1, 1] ``[B, 3, 32, 32]`` -> posterior ``q(z|x)`` ``[B, C, 16, 16]`` (one 2x downsampling:
``block_out_channels`` has two entries) -> ``z`` sampled -> ``x_hat``. Loss per batch::

    mse(x_hat, x) + edge_weight * (|dx x_hat - dx x| + |dy x_hat - dy x|).mean() + kl_weight * KL(q || N(0, I)).mean()

The edge term (finite differences along width and height) keeps edges sharp: with MSE alone the decoder
softens every edge, and a sharp image decoded soft reads as blurred (the blur detector's AUC after
reconstruction is how :mod:`bench.world_feasibility` checks it). The KL weight is tiny, as in Stable
Diffusion's VAE: the latent only needs to be smooth enough for a diffusion model.

After training, ``scaling_factor`` is set to ``1 / std`` of the latent means over the training images,
so the diffusion model sees unit-variance latents (SD's 0.18215 was found the same way).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class VaeConfig:
    """Architecture and optimisation of the world VAE (defaults: ~0.2 M parameters, 16x16x8 latents)."""

    block_out_channels: tuple[int, ...] = (16, 32)  # one entry per resolution; len - 1 downsamplings
    latent_channels: int = 8
    layers_per_block: int = 1
    norm_num_groups: int = 8
    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    kl_weight: float = 1e-6
    edge_weight: float = 1.0
    seed: int = 0


def build_vae(cfg: VaeConfig):
    """A seeded, untrained ``AutoencoderKL`` of ``cfg``'s shape."""
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    torch.manual_seed(cfg.seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels, norm_num_groups=cfg.norm_num_groups, sample_size=32,
    )


def to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> float32 in [-1, 1] (the VAE's input range)."""
    x = torch.as_tensor(images)
    return x.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float in [-1, 1] -> uint8 numpy, as the pipeline's image processor rounds it."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def vae_loss(vae, x: torch.Tensor, cfg: VaeConfig, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """The training loss of the module docstring on a batch ``x`` in [-1, 1]; returns (loss, parts)."""
    posterior = vae.encode(x).latent_dist
    x_hat = vae.decode(posterior.sample(generator=generator)).sample
    mse = torch.nn.functional.mse_loss(x_hat, x)
    edge = ((x_hat.diff(dim=-1) - x.diff(dim=-1)).abs().mean() + (x_hat.diff(dim=-2) - x.diff(dim=-2)).abs().mean())
    kl = posterior.kl().mean()
    loss = mse + cfg.edge_weight * edge + cfg.kl_weight * kl
    return loss, {"mse": mse.item(), "edge": edge.item(), "kl": kl.item()}


@torch.no_grad()
def reconstruct(vae, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """uint8 images through the VAE (posterior mean, no sampling) -> uint8 ``[N, 3, H, W]``."""
    vae.eval()
    out = [to_uint8(vae.decode(vae.encode(to_unit(images[i:i + batch_size])).latent_dist.mean).sample)
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


@torch.no_grad()
def latent_moments(vae, images: np.ndarray, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior (mean, std) ``[N, C, h, w]`` of uint8 images, unscaled (float32, CPU)."""
    vae.eval()
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        dist = vae.encode(to_unit(images[i:i + batch_size])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def train_vae(cfg: VaeConfig, images: np.ndarray, out_dir: str | Path, progress: bool = True) -> Path:
    """Train on uint8 ``images`` ``[N, 3, 32, 32]`` for ``cfg.steps`` batches (drawn by a generator seeded
    with ``cfg.seed``); set ``scaling_factor``; ``save_pretrained`` to ``out_dir`` (plus ``train_config``
    in its config.json's sibling ``world_train.json``). Returns ``out_dir``."""
    import json

    from tqdm.auto import tqdm

    vae = build_vae(cfg).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    data = torch.from_numpy(images)
    bar = tqdm(range(cfg.steps), desc="vae", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
        loss, parts = vae_loss(vae, to_unit(data[idx]), cfg, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(mse=f"{parts['mse']:.4f}", edge=f"{parts['edge']:.3f}")
    vae.eval()
    means, _ = latent_moments(vae, images[: min(len(images), 4096)])
    vae.register_to_config(scaling_factor=float(1.0 / means.std()))
    out_dir = Path(out_dir)
    vae.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "world_train.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    return out_dir


def load_vae(folder: str | Path):
    """The saved VAE (``AutoencoderKL.from_pretrained``), eval mode."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(folder)).eval()

