"""Train every model of the world profile into one folder, in the libraries' formats.

Layout written by :func:`build_world_zoo` (each path is what the matching ``models.<profile>`` field of
params.yaml would point at)::

    data/train/                     rendered training set (images.npy, truth.parquet)
    detectors.json                  detector calibration (negopt.world.detectors.Calibration)
    vae/                            AutoencoderKL (save_pretrained), trained first
    sd/                             StableDiffusionPipeline (save_pretrained; its vae/ is the one above)
    clip/negopt-world-clip.json     open_clip model config ...
    clip/open_clip_model.safetensors   ... and its state dict
    aesthetic/model.safetensors     AestheticMLP state dict (true quality x 10 from CLIP embeddings)
    inception/weights.pt            torch-fidelity InceptionV3 state dict (scene classifier)
    timings.json                    wall seconds per step

Each step writes its output atomically; steps whose output exists are skipped (so a rerun resumes), except
when ``force`` is set.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from negopt.core.io import atomic_dir, atomic_path, read_json, write_json
from negopt.world.dataset import RenderedSet, render_set
from negopt.world.layout import zoo_paths
from negopt.world.train_clip import ClipConfig
from negopt.world.train_diffusion import DiffusionConfig
from negopt.world.train_scorers import AestheticConfig, InceptionConfig
from negopt.world.train_vae import VaeConfig


@dataclass
class ZooConfig:
    """Everything the zoo is trained from: data sizes, seeds and each model's config."""

    train_images: int = 24000
    calibration_images: int = 4000
    inception_images: int = 8000  # stem activations cached for this many (float16, ~14 KB each at 75 px)
    seed: int = 0
    vae: VaeConfig = field(default_factory=VaeConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    inception: InceptionConfig = field(default_factory=InceptionConfig)


def build_world_zoo(cfg: ZooConfig, out_dir: str | Path, force: bool = False,
                    progress: bool = True) -> dict[str, Path]:
    """Render, calibrate and train every component into ``out_dir`` (layout in the module docstring);
    returns :func:`zoo_paths`. Wall times per step go to ``timings.json`` (merged with earlier runs')."""
    from negopt.world.detectors import calibrate_on_renders
    from negopt.world.train_clip import load_world_clip, train_clip
    from negopt.world.train_diffusion import train_diffusion
    from negopt.world.train_scorers import (
        clip_image_embeddings,
        quality_targets,
        train_aesthetic,
        train_inception,
    )
    from negopt.world.train_vae import train_vae

    paths = zoo_paths(out_dir)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    timings = read_json(paths["timings"]) if paths["timings"].is_file() else {}

    def step(name: str, target: Path, write) -> None:
        """``write(dest)`` produces ``target`` at a temp ``dest`` renamed onto it when done: a crash leaves
        no half-written model for a rerun to take as finished."""
        if target.exists() and not force:
            return
        start = time.perf_counter()
        with (atomic_path(target) if target.suffix else atomic_dir(target)) as dest:
            write(dest)
        timings[name] = round(time.perf_counter() - start, 1)
        write_json(paths["timings"], timings)

    step("render", paths["data"], lambda d: render_set(cfg.train_images, cfg.seed, progress=progress).save(d))
    data = RenderedSet.load(paths["data"])
    step("calibrate", paths["detectors"], lambda d: calibrate_on_renders(cfg.calibration_images, cfg.seed + 12345).save(d))
    step("vae", paths["vae"], lambda d: train_vae(cfg.vae, data.images, d, progress=progress))
    step("diffusion", paths["sd"], lambda d: train_diffusion(cfg.diffusion, data, paths["vae"], d, progress=progress))
    step("clip", paths["clip_config"].parent, lambda d: train_clip(cfg.clip, data, d, progress=progress))

    def aesthetic(dest: Path) -> None:
        model, _ = load_world_clip(paths["clip_config"], paths["clip_pretrained"])
        emb = clip_image_embeddings(model, data.images)
        train_aesthetic(cfg.aesthetic, emb, quality_targets(data), dest / paths["aesthetic"].name, progress=progress)

    step("aesthetic", paths["aesthetic"].parent, aesthetic)
    subset = data.subset(np.arange(min(cfg.inception_images, len(data))))
    step("inception", paths["inception"].parent,
         lambda d: train_inception(cfg.inception, subset, d / paths["inception"].name, progress=progress))
    write_json(Path(out_dir) / "zoo_config.json", asdict(cfg))
    return paths



def zoo_key(cfg: ZooConfig) -> str:
    """The name of a zoo's work folder: a fingerprint of everything it is trained from, so a changed config
    trains a new zoo and an unchanged one resumes."""
    from negopt.core.fingerprint import fingerprint

    return fingerprint(asdict(cfg))[:16]


def zoo_config(build) -> ZooConfig:
    """The :class:`ZooConfig` of params.yaml's ``models.world_build`` (its sizes and seed; every other field
    keeps the trainer configs' defaults)."""
    from dataclasses import replace

    base = ZooConfig()
    return ZooConfig(
        train_images=build.train_images, calibration_images=build.calibration_images,
        inception_images=build.inception_images, seed=build.seed,
        vae=replace(base.vae, steps=build.vae_steps, seed=build.seed),
        diffusion=replace(base.diffusion, steps=build.diffusion_steps, seed=build.seed),
        clip=replace(base.clip, steps=build.clip_steps, seed=build.seed),
        aesthetic=replace(base.aesthetic, steps=build.aesthetic_steps, seed=build.seed),
        inception=replace(base.inception, steps=build.inception_steps, seed=build.seed),
    )
