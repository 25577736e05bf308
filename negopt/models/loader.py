"""The one loader every stage uses: components of the active profile, and what is missing offline.

Both profiles share this code path; a profile field is either a local path (tiny files, or real
weights the user put on disk) or a hub id / open_clip tag that must already be in the local cache.
:func:`require_profile` fails before any work starts, listing *every* missing item with a one-line
how-to; nothing here ever substitutes one model for another.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from negopt.errors import UserError
from negopt.models.fetch import HUB_FILES, clip_hub_file, hub_download_command, url_download_command
from negopt.models.policy import load_policy as load_policy  # re-exported: every stage imports it from here
from negopt.params import Params, Profile

SD_SUBFOLDERS = ("unet", "vae", "text_encoder")  # what the pipeline loads; the safety checker is off
SD_VARIANT = "fp16"  # the hub's half-size weight files; read on every device and cast to default_dtype
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class MissingWeightsError(UserError, RuntimeError):
    """A profile component is not available offline; the message lists every one and how to get it."""


@dataclass(frozen=True)
class ComponentStatus:
    component: str  # policy | sd | clip | aesthetic | inception
    source: str  # the profile field's value (path, hub id, or open_clip name/tag)
    available: bool
    num_params: (
        int | None
    )  # tensor elements in the weight files (BN statistics included); None when unavailable
    how_to: str = ""  # one line: how to fetch or point to it (empty when available)
    location: str = ""  # the resolved local folder or file
    hub: bool = False  # source is a hub id (fetchable through huggingface_hub)


def default_dtype(device: torch.device) -> torch.dtype:
    """The one precision policy for every Stable Diffusion call (RL rewards *and* generate).

    fp16 on CUDA (SD 1.5's published precision and the ``fp16`` weight files we fetch), float32 on CPU
    (half matmuls are slow or missing there). RL must score the pixels the comparison later shows, so
    the rl and generate stages both take this dtype from :func:`load_sd_pipeline`, never their own.
    """
    return torch.float16 if device.type == "cuda" else torch.float32


def sd_variant(folder: Path) -> str | None:
    """``fp16`` when the folder holds the hub's fp16 variant files, else None (e.g. the tiny zoo)."""
    return SD_VARIANT if (folder / "unet" / f"diffusion_pytorch_model.{SD_VARIANT}.safetensors").is_file() else None


def load_sd_pipeline(profile: Profile, device: torch.device, dtype: torch.dtype | None = None):
    """``StableDiffusionPipeline.from_pretrained(profile.sd)`` on ``device``: safety checker off, bar off,
    :func:`default_dtype` unless ``dtype`` is given, PyTorch SDPA attention in the UNet and VAE.

    The safety checker is disabled because it blacks out flagged images, which would corrupt image metrics;
    it is not a swapped model (it never touches the generated pixels otherwise).
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    where = _resolve_hf(profile.sd, "model_index.json")
    if where is None:
        raise MissingWeightsError(_missing_message([_sd_status(profile)]))
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

    from negopt.models.tiny import register_clip_config

    if profile.clip_config:
        if not Path(profile.clip_config).is_file():
            raise MissingWeightsError(_missing_message([_clip_status(profile)]))
        register_clip_config(profile.clip_config)
    status = _clip_status(profile)
    if not status.available:
        raise MissingWeightsError(_missing_message([status]))
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
    from negopt.models.tiny import AestheticMLP

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
    if not Path(profile.inception).is_file():
        raise MissingWeightsError(_missing_message([_inception_status(profile)]))
    inception = build_inception(profile.inception, profile.inception_input_size, device)
    return ImageScorer(clip_model, tokenizer, mlp, inception, device=device, batch_size=batch_size)


# --- availability --------------------------------------------------------------------------------


def _looks_like_hub_id(ref: str) -> bool:
    """``org/name`` that is not a local path (its first component is not an existing folder)."""
    return bool(_HUB_ID.match(ref)) and not Path(ref.split("/")[0]).exists()


def _resolve_hf(ref: str, marker: str) -> Path | None:
    """A local folder for a path or a hub id found in the HF cache (never downloads); None if absent."""
    path = Path(ref)
    if (path / marker).is_file():
        return path
    if not _looks_like_hub_id(ref):
        return None
    from huggingface_hub import snapshot_download

    try:
        # allow_patterns: after a fetch with an allow-list, huggingface_hub 2.x's cached tree listing makes a
        # pattern-less local lookup fail as "incomplete" (the repo's other files are absent by design); the
        # weights themselves are checked by the caller, file by file.
        folder = Path(snapshot_download(ref, local_files_only=True, allow_patterns=[marker]))
    except Exception:  # not cached (LocalEntryNotFoundError and friends)
        return None
    return folder if (folder / marker).is_file() else None


def count_params(files: list[Path]) -> int:
    """Parameter count from weight files without building models (safetensors headers, mmap'd torch files)."""
    total = 0
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    shape = sf.get_slice(key).get_shape()
                    total += int(torch.Size(shape).numel())
        else:
            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            total += sum(v.numel() for k, v in state.items() if torch.is_tensor(v) and "num_batches" not in k)
    return total


def _weight_files(folder: Path, variant: str | None = None) -> list[Path]:
    """Weights in an HF folder: the ``variant`` files if asked, else full-precision safetensors, then .bin."""
    if variant:
        return sorted(folder.glob(f"*.{variant}.safetensors"))
    for pattern in ("*.safetensors", "*.bin"):
        files = sorted(p for p in folder.glob(pattern) if p.name.count(".") == 1)
        if files:
            return files
    return sorted(folder.glob("*.safetensors"))[:1]


def _policy_status(p: Profile) -> ComponentStatus:
    where = _resolve_hf(p.policy, "config.json")
    files = _weight_files(where) if where else []
    hub = _looks_like_hub_id(p.policy)
    how = (
        f"`negopt models fetch`, or `{hub_download_command(p.policy, HUB_FILES['policy'])}` "
        "(or copy an HF cache here / point the policy field at a local folder)"
        if hub
        else "run `dvc repro models` (builds the tiny zoo)"
    )
    return _status("policy", p.policy, where, files, how, hub)


def _sd_status(p: Profile) -> ComponentStatus:
    where = _resolve_hf(p.sd, "model_index.json")
    files: list[Path] = []
    if where is not None:
        parts = [_weight_files(where / sub, sd_variant(where)) for sub in SD_SUBFOLDERS]
        files = [f for part in parts for f in part] if all(parts) else []
    hub = _looks_like_hub_id(p.sd)
    how = (
        f"`negopt models fetch`, or `{hub_download_command(p.sd, HUB_FILES['sd'])}` "
        "(or copy an HF cache here / point the sd field at a local pipeline folder)"
        if hub
        else "run `dvc repro models` (builds the tiny zoo)"
    )
    return _status("sd", p.sd, where, files, how, hub)


def _clip_location(p: Profile) -> Path | None:
    """The local weights file for (clip_name, clip_pretrained): a path, or the open_clip tag's cached file."""
    if Path(p.clip_pretrained).is_file():
        return Path(p.clip_pretrained)
    hub = clip_hub_file(p.clip_name, p.clip_pretrained)
    if hub is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename = hub
    # open_clip itself tries the .safetensors name first, then its .bin default (pretrained.py)
    for name in dict.fromkeys([filename, "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str):
            return Path(hit)
    return None


def _clip_status(p: Profile) -> ComponentStatus:
    config_ok = not p.clip_config or Path(p.clip_config).is_file()
    where = _clip_location(p) if config_ok else None
    source = f"open_clip {p.clip_name} / {p.clip_pretrained}"
    hub = clip_hub_file(p.clip_name, p.clip_pretrained) if config_ok and not Path(p.clip_pretrained).suffix else None
    if not config_ok:
        how = f"run `dvc repro models` to build {p.clip_config}"
    elif hub:
        how = f"`negopt models fetch`, or `{hub_download_command(hub[0], [hub[1]])}` (open_clip's own hub entry)"
    else:
        how = f"point clip_pretrained at a local open_clip checkpoint ({p.clip_pretrained!r} has no hub entry)"
    return _status("clip", source, where, [where] if where else [], how, hub is not None)


def _aesthetic_status(p: Profile) -> ComponentStatus:
    f = Path(p.aesthetic)
    how = (
        f"`negopt models fetch`, or `{url_download_command(p.aesthetic_url, p.aesthetic)}`"
        if p.aesthetic_url
        else "run `dvc repro models`"
    )
    return _status("aesthetic", p.aesthetic, f if f.is_file() else None, [f] if f.is_file() else [], how)


def _inception_status(p: Profile) -> ComponentStatus:
    f = Path(p.inception)
    how = (
        f"`negopt models fetch`, or `{url_download_command(p.inception_url, p.inception)}`"
        if p.inception_url
        else "run `dvc repro models`"
    )
    return _status("inception", p.inception, f if f.is_file() else None, [f] if f.is_file() else [], how)


def _status(
    component: str, source: str, where: Path | None, files: list[Path], how: str, hub: bool = False
) -> ComponentStatus:
    available = where is not None and bool(files)
    n = None
    if available:
        try:
            n = count_params(files)
        except Exception as err:  # an unreadable or truncated file counts as missing
            available, how = (
                False,
                f"{files[0]} is unreadable ({type(err).__name__}: {err}); re-fetch it. {how}",
            )
    return ComponentStatus(component, source, available, n, "" if available else how, str(where or ""), hub)


def check_profile(params: Params, profile_name: str | None = None) -> list[ComponentStatus]:
    """Availability of every component of ``profile_name`` (default: the active profile), offline."""
    name = profile_name or params.profile
    if name not in ("tiny", "paper"):
        raise ValueError(f"unknown profile {name!r}: use tiny or paper")
    return check_components(getattr(params.models, name))


def check_components(p: Profile) -> list[ComponentStatus]:
    """Availability of every component of one profile section, offline (never downloads)."""
    return [_policy_status(p), _sd_status(p), _clip_status(p), _aesthetic_status(p), _inception_status(p)]


def _missing_message(statuses: list[ComponentStatus], profile_name: str = "") -> str:
    missing = [s for s in statuses if not s.available]
    head = f"profile {profile_name!r}: " if profile_name else ""
    lines = [f"{head}{len(missing)} component(s) not available offline (no model is ever swapped in):"]
    lines += [f"  - {s.component}: {s.source}\n      how: {s.how_to}" for s in missing]
    return "\n".join(lines)


def require_profile(params: Params, profile_name: str | None = None) -> None:
    """Raise :class:`MissingWeightsError` listing every missing component of the profile; else return."""
    name = profile_name or params.profile
    statuses = check_profile(params, name)
    if any(not s.available for s in statuses):
        raise MissingWeightsError(_missing_message(statuses, name))


def profile_summary(statuses: list[ComponentStatus]) -> str:
    """JSON of the statuses (for logs and the models stage)."""
    return json.dumps([s.__dict__ for s in statuses], indent=2)
