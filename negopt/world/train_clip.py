"""Train an open_clip CLIP on the world's renders and their descriptive captions.

Saved as the project's loader reads any open_clip model (``negopt.models.loader.load_clip``): a model
config ``<name>.json`` (registered with ``open_clip.add_model_config``) and the state dict
``open_clip_model.safetensors``. The text side uses open_clip's own tokenizer (CLIP's BPE, shipped in
the package), so the world's prompts tokenise as any prompt does.

A CLIP caption describes everything in the image, as alt-text does: the content and every present
defect, with "slightly" (severity < 0.7) or "very" in front, e.g. ``"two red circles on a black
background, very grainy, slightly blurry"``. So the image embedding has to encode content *and* defects,
which is what the aesthetic MLP (:mod:`negopt.world.train_scorers`) reads true quality from, while a
user's prompt (content only) still scores high against a clean image of that content.

Loss: the symmetric InfoNCE of CLIP, ``(CE(s * I T^T, diag) + CE(s * T I^T, diag)) / 2`` on L2-normalised
image and text embeddings ``I, T`` ``[B, D]``, learnable temperature ``s = exp(logit_scale)`` (<= 100).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from negopt.world.dataset import RenderedSet
from negopt.world.defects import DEFECTS, SPECS, severity
from negopt.world.grammar import Content
from negopt.world.layout import WORLD_CLIP_NAME


@dataclass
class ClipConfig:
    """Architecture (a ViT on 8 x 8 patches of the 32 px image) and optimisation of the world CLIP."""

    # 128 wide: the aesthetic MLP reads true quality from these embeddings, and at 64 they held too little of
    # the defects' strength for it (held-out Spearman 0.795 at 64, 0.838 at 128; docs/EXPERIMENTS.md)
    embed_dim: int = 128
    image_size: int = 32
    patch_size: int = 8  # 4 x 4 = 16 patch tokens (4 px patches: 64 tokens, ~4x the time)
    vision_width: int = 128
    vision_layers: int = 3
    vision_head_width: int = 32
    context_length: int = 32
    text_width: int = 64
    text_heads: int = 4
    text_layers: int = 2
    steps: int = 2400
    batch_size: int = 64
    learning_rate: float = 5e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    seed: int = 0


def open_clip_config(cfg: ClipConfig) -> dict:
    """The open_clip model config (the ``<name>.json`` content)."""
    return {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {"image_size": cfg.image_size, "layers": cfg.vision_layers, "width": cfg.vision_width,
                       "head_width": cfg.vision_head_width, "patch_size": cfg.patch_size},
        "text_cfg": {"context_length": cfg.context_length, "vocab_size": 49408, "width": cfg.text_width,
                     "heads": cfg.text_heads, "layers": cfg.text_layers},
    }


def clip_caption(row: pd.Series, rng: np.random.Generator) -> str:
    """The descriptive caption of one truth row (content + every present defect, qualified, shuffled)."""
    content = Content(row["shape"], int(row["count"]), row["fg"], row["bg"])
    parts = []
    for d in DEFECTS:
        if row[d] > 0:
            qualifier = "slightly" if severity(d, row[d]) < 0.7 else "very"
            parts.append(f"{qualifier} {SPECS[d].pick(rng.random())}")
    rng.shuffle(parts)
    return ", ".join([content.text(), *parts])


def build_clip(cfg: ClipConfig, out_dir: Path, name: str = WORLD_CLIP_NAME):
    """Write ``<name>.json`` into ``out_dir``, register it, return (config path, seeded untrained model)."""
    import open_clip

    from negopt.models.nets import register_clip_config

    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{name}.json"
    config_path.write_text(json.dumps(open_clip_config(cfg), indent=2) + "\n")
    register_clip_config(config_path)
    torch.manual_seed(cfg.seed)
    return config_path, open_clip.create_model(name, pretrained=None)


def train_clip(cfg: ClipConfig, data: RenderedSet, out_dir: str | Path, name: str = WORLD_CLIP_NAME,
               progress: bool = True) -> tuple[Path, Path]:
    """Train on ``data`` for ``cfg.steps`` batches (captions redrawn each time, :func:`clip_caption`); write
    ``<name>.json``, ``open_clip_model.safetensors`` and ``world_train.json`` to ``out_dir``; returns (config
    path, weights path)."""
    import open_clip
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from negopt.images.scorers import clip_pixels, open_clip_input_spec

    out_dir = Path(out_dir)
    config_path, model = build_clip(cfg, out_dir, name)
    tokenizer = open_clip.get_tokenizer(name)
    size, mean, std = open_clip_input_spec(model)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.learning_rate)
    lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    images = torch.from_numpy(data.images)
    bar = tqdm(range(cfg.steps), desc="clip", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(images), (cfg.batch_size,), generator=gen)
        captions = [clip_caption(data.truth.iloc[int(i)], rng) for i in idx]
        img = model.encode_image(clip_pixels(images[idx], size, mean, std), normalize=True)
        txt = model.encode_text(tokenizer(captions), normalize=True)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        target = torch.arange(len(idx))
        loss = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    weights = out_dir / "open_clip_model.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    (out_dir / "world_train.json").write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    return config_path, weights


def load_world_clip(config_path: str | Path, weights: str | Path):
    """(model, tokenizer) the way the project's loader builds them: register the config, then
    ``open_clip.create_model_and_transforms(name, pretrained=weights)``."""
    import open_clip

    from negopt.models.nets import register_clip_config

    name = register_clip_config(config_path)
    model, _, _ = open_clip.create_model_and_transforms(name, pretrained=str(weights), weights_only=True)
    return model.eval(), open_clip.get_tokenizer(name)
