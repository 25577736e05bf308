"""Where each part of a world zoo lives in its folder (the models stage's work folder and paths.world_models alike).

Kept apart from the trainers so that the stages that only read a zoo (evaluate's and RL's oracle) do not depend on
how it is trained.
"""

from __future__ import annotations

from pathlib import Path

WORLD_CLIP_NAME = "negopt-world-clip"  # the open_clip architecture name of the world's CLIP (models.world.clip_name)

#: what the models stage copies from the resumable work folder into paths.world_models
DEPLOYED = ("detectors", "sd", "clip_config", "clip_pretrained", "aesthetic", "inception", "timings")


def zoo_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where each component lives inside a zoo folder."""
    out = Path(out_dir)
    return {
        "data": out / "data" / "train",
        "detectors": out / "detectors.json",
        "vae": out / "vae",
        "sd": out / "sd",
        "clip_config": out / "clip" / f"{WORLD_CLIP_NAME}.json",
        "clip_pretrained": out / "clip" / "open_clip_model.safetensors",
        "aesthetic": out / "aesthetic" / "model.safetensors",
        "inception": out / "inception" / "weights.pt",
        "timings": out / "timings.json",
    }
