"""Where a component lives on the hub and the command that fetches it: the one table both the offline check
(:mod:`negopt.models.find`, which prints the commands) and the download (:mod:`negopt.models.fetch`) read."""

from __future__ import annotations

import os
from pathlib import Path

#: component -> the files its loader reads (exact names; snapshot_download's allow_patterns)
HUB_FILES: dict[str, list[str]] = {
    "sd": [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        # SDXL's second tokenizer and text encoder (absent from SD 1.x / 2.x repos: nothing is fetched for them)
        "tokenizer_2/vocab.json",
        "tokenizer_2/merges.txt",
        "tokenizer_2/special_tokens_map.json",
        "tokenizer_2/tokenizer_config.json",
        "text_encoder_2/config.json",
        "text_encoder_2/model.fp16.safetensors",
    ],
    "policy": [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ],
    # PickScore: the fine-tuned CLIPModel, and the processor of the CLIP-H it was tuned from (a second repo)
    "pickscore": ["config.json", "model.safetensors"],
    "pickscore_processor": [
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
    ],
}

#: SDXL's second tokenizer / text encoder in HUB_FILES["sd"]: an SD 1.x / 2.x repo has none, so none is fetched
SDXL_ONLY = ("tokenizer_2/", "text_encoder_2/")

def clip_hub_file(clip_name: str, clip_tag: str) -> tuple[str, str] | None:
    """(repo, file) open_clip's own pretrained table names for a tag, or None for a local file / no hub entry."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(clip_name, clip_tag)
    hub = cfg.get("hf_hub", "") if cfg else ""
    if not hub:
        return None
    repo, filename = os.path.split(hub)  # "org/model/" (trailing slash): open_clip's default file names
    return repo, filename or "open_clip_model.safetensors"


def hub_file_ref(ref: str) -> tuple[str, str] | None:
    """``org/repo/file`` (a file at a hub repo's root, e.g. HPSv2's checkpoint) -> (repo, file); None for a
    local path: an existing one, one whose first folder exists, or any other number of parts."""
    parts = ref.split("/")
    if len(parts) != 3 or not all(parts) or Path(ref).exists() or Path(parts[0]).exists():
        return None
    return "/".join(parts[:2]), parts[2]


def hub_file_in(ref: str) -> tuple[str, str, str] | None:
    """A hub file as a profile names a textual inversion: ``org/repo/file`` (a model repo) or
    ``datasets/org/repo/file`` (a dataset repo, where embeddings such as EasyNegative live) -> (repo, file, repo
    type); None for a local path (:func:`hub_file_ref`'s rule)."""
    kind, rest = ("dataset", ref.removeprefix("datasets/")) if ref.startswith("datasets/") else ("model", ref)
    found = hub_file_ref(rest) if not Path(ref).exists() else None
    return (*found, kind) if found else None


def hub_download_command(repo: str, files: list[str], repo_type: str = "model") -> str:
    """The ``hf download`` line that puts ``files`` of ``repo`` in the HF cache (huggingface_hub 2.x CLI)."""
    kind = [] if repo_type == "model" else ["--repo-type", repo_type]
    return " ".join(["hf download", repo, *files, *kind])


def url_download_command(url: str, dest: str) -> str:
    return f"curl -L --fail -o '{dest}' '{url}'  (or: negopt models fetch)"
