"""The one loader every stage uses: the active profile's components, built from their weights.

Both profiles share this code path; a profile field is either a local path (tiny files, or real
weights the user put on disk) or a hub id / open_clip tag that must already be in the local cache.
*Finding* a component (and the how-to when it is missing) is :mod:`negopt.models.find`; the classes
the weights fill are :mod:`negopt.models.nets`. Nothing here ever substitutes one model for another.
"""

from __future__ import annotations

from pathlib import Path

import torch

from negopt.models.find import MissingWeightsError, require_component, resolve_hf, sd_variant
from negopt.models.nets import AestheticMLP, register_clip_config
from negopt.models.policy import load_policy as load_policy  # re-exported: every stage imports it from here
from negopt.params import Profile


def default_dtype(device: torch.device) -> torch.dtype:
    """The one precision policy for every Stable Diffusion call (RL rewards *and* generate).

    fp16 on CUDA (SD 1.5's published precision and the ``fp16`` weight files we fetch), float32 on CPU
    (half matmuls are slow or missing there). RL must score the pixels the comparison later shows, so
    the rl and generate stages both take this dtype from :func:`load_sd_pipeline`, never their own.
    """
    return torch.float16 if device.type == "cuda" else torch.float32


def load_sd_pipeline(profile: Profile, device: torch.device, dtype: torch.dtype | None = None):
    """``StableDiffusionPipeline.from_pretrained(profile.sd)`` on ``device``: safety checker off, bar off,
    :func:`default_dtype` unless ``dtype`` is given, PyTorch SDPA attention in the UNet and VAE.

    The safety checker is disabled because it blacks out flagged images, which would corrupt image metrics;
    it is not a swapped model (it never touches the generated pixels otherwise).
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    where = resolve_hf(profile.sd, "model_index.json")
    if where is None:
        require_component(profile, "sd")  # raises, with the how-to
    pipe = StableDiffusionPipeline.from_pretrained(
        str(where),
        dtype=dtype or default_dtype(device),
        variant=sd_variant(where),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    # Fused attention (flash / memory-efficient on GPU) set explicitly, so rl and generate run the same
    # kernels and a config or an older default cannot fall back to the slow unfused attention.
    for module in (pipe.unet, pipe.vae):
        module.set_attn_processor(AttnProcessor2_0())
    return pipe.to(device)


def load_clip(profile: Profile, device: torch.device):
    """(open_clip model, tokenizer) through ``create_model_and_transforms(name, pretrained=...)``."""
    import open_clip

    if profile.clip_config and Path(profile.clip_config).is_file():
        register_clip_config(profile.clip_config)
    require_component(profile, "clip")  # a missing config file or checkpoint raises, with the how-to
    # Pass the tag itself (not the cached file), so open_clip finds the file in the local cache. open_clip
    # 3.x does *not* apply the tag's activation on its own: ViT-L-14's config says GELU while the openai
    # weights were trained with QuickGELU (it only warns "QuickGELU mismatch"), so force what the tag says.
    tag = open_clip.get_pretrained_cfg(profile.clip_name, profile.clip_pretrained) or {}
    model, _, _ = open_clip.create_model_and_transforms(
        profile.clip_name,
        pretrained=profile.clip_pretrained,
        device=device,
        weights_only=True,
        force_quick_gelu=bool(tag.get("quick_gelu", False)),
    )
    return model.eval(), open_clip.get_tokenizer(profile.clip_name)


def load_aesthetic(path: str | Path, device: torch.device | None = None) -> torch.nn.Module:
    """The LAION aesthetic MLP from ``.safetensors`` or a ``.pth`` state dict (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"aesthetic MLP weights not found at {path} (profile field `aesthetic`)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if "layers.0.weight" not in state:
        raise ValueError(f"{path}: not a LAION aesthetic MLP state dict (no layers.0.weight)")
    mlp = AestheticMLP(state["layers.0.weight"].shape[1])
    mlp.load_state_dict(state)
    return mlp.to(device or torch.device("cpu")).eval()


def load_scorer(profile: Profile, device: torch.device, batch_size: int = 64):
    """An :class:`negopt.metrics.ImageScorer` with the profile's CLIP, aesthetic MLP and Inception."""
    from negopt.metrics import ImageScorer, build_inception

    clip_model, tokenizer = load_clip(profile, device)
    mlp = load_aesthetic(profile.aesthetic, device)
    embed_dim = getattr(clip_model.visual, "output_dim", None)
    if embed_dim is not None and mlp.input_size != embed_dim:
        raise ValueError(
            f"aesthetic MLP expects {mlp.input_size}-d embeddings but CLIP {profile.clip_name} gives {embed_dim}: "
            "point `aesthetic` at an MLP trained for this CLIP"
        )
    require_component(profile, "inception")
    inception = build_inception(profile.inception, profile.inception_input_size, device)
    return ImageScorer(clip_model, tokenizer, mlp, inception, device=device, batch_size=batch_size)
