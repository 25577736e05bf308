"""The one loader every stage uses: the active profile's components, built from their weights.

Both profiles share this code path; a profile field is either a local path (tiny files, or real
weights the user put on disk) or a hub id / open_clip tag that must already be in the local cache.
*Finding* a component (and the how-to when it is missing) is :mod:`negopt.models.find`; the classes
the weights fill are :mod:`negopt.models.nets`. Nothing here ever substitutes one model for another.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from negopt.core.errors import ParamsError
from negopt.core.params import Profile
from negopt.models.find import (
    OPTIONAL,
    MissingWeightsError,
    hpsv2_location,
    named_components,
    require_component,
    resolve_hf,
    sd_variant,
    textual_inversion_location,
)
from negopt.models.nets import AestheticMLP, register_clip_config
from negopt.models.t5 import load_policy as load_policy  # re-exported: every stage imports it from here


def default_dtype(device: torch.device) -> torch.dtype:
    """The one precision policy for every Stable Diffusion call (RL rewards *and* generate).

    fp16 on CUDA (SD 1.5's published precision and the ``fp16`` weight files we fetch), float32 on CPU
    (half matmuls are slow or missing there). RL must score the pixels the comparison later shows, so
    the rl and generate stages both take this dtype from :func:`load_sd_pipeline`, never their own.
    """
    return torch.float16 if device.type == "cuda" else torch.float32


#: init arguments that would change or hide pixels, off wherever a pipeline class takes them: the safety
#: checker blacks out flagged images, SDXL's invisible watermark alters every pixel (both would corrupt image
#: metrics; neither is a swapped model); no IP-adapter image encoder is used
_PIXEL_GUARDS = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
                 "image_encoder": None, "add_watermarker": False}


def pipeline_class(folder: Path, field: str = "models.<profile>.sd"):
    """The diffusers pipeline class a folder's ``model_index.json`` names (``_class_name``), checked to be a
    text-to-image pipeline taking ``negative_prompt``: SD 1.x / 2.x (``StableDiffusionPipeline``), SDXL
    (``StableDiffusionXLPipeline``, two text encoders) and any other diffusers class with that call."""
    import inspect

    import diffusers

    name = json.loads((folder / "model_index.json").read_text()).get("_class_name", "")
    cls = getattr(diffusers, name, None)
    call = inspect.signature(cls.__call__).parameters if isinstance(cls, type) else {}
    if not {"prompt", "negative_prompt", "height", "width"} <= set(call):
        raise ParamsError(f"{field}: {folder} holds a {name or 'unnamed'} pipeline, not a diffusers text-to-image "
                          "pipeline taking prompt, negative_prompt, height and width; point it at one "
                          "(e.g. Stable Diffusion 1.5 / 2.1 or SDXL)")
    return cls


def load_sd_pipeline(profile: Profile, device: torch.device, dtype: torch.dtype | None = None):
    """The profile's text-to-image pipeline (class from its ``model_index.json``, :func:`pipeline_class`) on
    ``device``: pixel guards off (:data:`_PIXEL_GUARDS`), bar off, :func:`default_dtype` unless ``dtype`` is
    given, PyTorch SDPA attention in the UNet and VAE, the profile's textual inversions loaded
    (:func:`load_textual_inversions`).
    """
    import inspect

    from diffusers.models.attention_processor import AttnProcessor2_0

    where = resolve_hf(profile.sd, "model_index.json")
    if where is None:
        require_component(profile, "sd")  # raises, with the how-to
    cls = pipeline_class(where)
    takes = inspect.signature(cls.__init__).parameters
    pipe = cls.from_pretrained(
        str(where),
        dtype=dtype or default_dtype(device),
        variant=sd_variant(where),
        **{k: v for k, v in _PIXEL_GUARDS.items() if k in takes},
    )
    pipe.set_progress_bar_config(disable=True)
    load_textual_inversions(pipe, profile)
    # Fused attention (flash / memory-efficient on GPU) set explicitly, so rl and generate run the same
    # kernels and a config or an older default cannot fall back to the slow unfused attention.
    for module in (pipe.unet, pipe.vae):
        module.set_attn_processor(AttnProcessor2_0())
    return pipe.to(device)


def load_textual_inversions(pipe, profile: Profile) -> None:
    """Each of ``profile.textual_inversions`` into the pipeline under its name, with diffusers'
    ``load_textual_inversion`` (the name becomes a token; a multi-vector embedding adds ``name_1`` ...).

    The file is read by :func:`load_state_dict` (safetensors, or a torch file with ``weights_only``): an A1111 ``.pt``
    (``string_to_param``) or a one-tensor file loads into the (first) text encoder; an SDXL embedding
    (``clip_l`` + ``clip_g``) loads each half into its encoder. The global RNG is left as it was: resizing the
    token embeddings draws the new rows at random before they are overwritten, and a stage's later draws must not
    depend on whether a profile names an embedding.
    """
    if not profile.textual_inversions:
        return
    require_component(profile, "textual_inversions")  # a missing file raises, with its `hf download` line
    with torch.random.fork_rng(devices=[]):
        for name, ref in profile.textual_inversions.items():
            state = load_state_dict(textual_inversion_location(ref))
            if {"clip_l", "clip_g"} <= set(state):
                if getattr(pipe, "text_encoder_2", None) is None:
                    raise ParamsError(f"models.<profile>.textual_inversions.{name}: {ref} is an SDXL embedding "
                                      "(clip_l + clip_g) but the pipeline has one text encoder")
                pipe.load_textual_inversion(state["clip_l"], token=name, text_encoder=pipe.text_encoder,
                                            tokenizer=pipe.tokenizer)
                pipe.load_textual_inversion(state["clip_g"], token=name, text_encoder=pipe.text_encoder_2,
                                            tokenizer=pipe.tokenizer_2)
            else:
                pipe.load_textual_inversion(state, token=name)


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
    state = load_state_dict(path)
    if "layers.0.weight" not in state:
        raise ValueError(f"{path}: not a LAION aesthetic MLP state dict (no layers.0.weight)")
    mlp = AestheticMLP(state["layers.0.weight"].shape[1])
    mlp.load_state_dict(state)
    return mlp.to(device or torch.device("cpu")).eval()


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``; a ``{"state_dict": ...}``
    checkpoint, HPSv2's layout, is unwrapped)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_hpsv2(profile: Profile, device: torch.device):
    """:class:`negopt.images.preference.HPSv2Scorer`: ``open_clip.create_model(hpsv2_name)`` filled with ``hpsv2``."""
    import open_clip

    from negopt.images.preference import HPSv2Scorer

    if profile.hpsv2_config and Path(profile.hpsv2_config).is_file():
        register_clip_config(profile.hpsv2_config)
    require_component(profile, "hpsv2")
    model = open_clip.create_model(profile.hpsv2_name, pretrained=None)
    model.load_state_dict(load_state_dict(hpsv2_location(profile)))  # strict: a wrong architecture fails here
    return HPSv2Scorer(model.float(), open_clip.get_tokenizer(profile.hpsv2_name), device)


def load_pickscore(profile: Profile, device: torch.device):
    """:class:`negopt.images.preference.PickScoreScorer`: ``CLIPModel`` from ``pickscore``, processor from
    ``pickscore_processor`` (float32: the scores are compared across methods)."""
    from transformers import CLIPModel, CLIPProcessor

    from negopt.images.preference import PickScoreScorer

    require_component(profile, "pickscore")
    model = CLIPModel.from_pretrained(str(resolve_hf(profile.pickscore, "config.json")), dtype=torch.float32)
    processor = CLIPProcessor.from_pretrained(str(resolve_hf(profile.pickscore_processor, "preprocessor_config.json")))
    return PickScoreScorer(model, processor, device)


PREFERENCE_LOADERS = {"hpsv2": load_hpsv2, "pickscore": load_pickscore}


def named_preference(profile: Profile) -> list[str]:
    """The preference scorers the profile names (``hpsv2_name`` / ``pickscore`` set): evaluate's metrics."""
    return [c for c in named_components(profile) if c in PREFERENCE_LOADERS]


def load_scorer(profile: Profile, device: torch.device, batch_size: int = 64, preference=()):
    """An :class:`negopt.images.scorers.ImageScorer` with the profile's CLIP, aesthetic MLP and Inception, and the
    human-preference scorers named in ``preference`` (``hpsv2``, ``pickscore``; none by default: each is a
    ~1 B-parameter model on the paper profile, loaded only where it is evaluated or weighted)."""
    unnamed = [n for n in preference if n not in named_preference(profile)]
    if unnamed:
        raise MissingWeightsError(
            "; ".join(f"{n} is asked for (reward.weights.{n} is non-zero) but the profile names no {n} model: set "
                      f"models.<profile>.{OPTIONAL[n]} (docs/MODELS.md) or set reward.weights.{n}: 0" for n in unnamed))
    from negopt.images.scorers import ImageScorer, build_inception

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
    loaded = {name: PREFERENCE_LOADERS[name](profile, device) for name in preference}
    return ImageScorer(clip_model, tokenizer, mlp, inception, device=device, batch_size=batch_size, preference=loaded)
