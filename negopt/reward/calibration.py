"""The reward's calibration: the term statistics and Inception marginal, fixed from SFT samples before RL.

``reward.calibration.prompts`` training prompts, ``reward.calibration.samples_per_prompt`` SFT samples each
(the policy's sampler, ``sampling.*``), every sample of a prompt rendered on that prompt's one diffusion seed,
as the training rollouts are (``rollout_profile``): so the statistics describe the images RL is rewarded on,
and the within-group spread is what a negative can move. The rl stage saves its calibration beside its
weights (:func:`save_calibration`); best_of_n reads it back when the key matches (:func:`calibration_key`),
so both judge with one reward.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from negopt.core.fingerprint import file_chunks, fingerprint
from negopt.reward.term_stats import TermStats
from negopt.reward.terms import TermBatch, score_terms
from negopt.reward.weighted import rollout_profile


def calibration_plan(params, prompts: list[str]) -> tuple[list[str], list[int], int]:
    """The calibration's prompts, one diffusion seed per prompt and the sampling seed, from ``base.seed``
    on a stream no training step uses (steps draw from ``(seed, step)``, step < 2**31)."""
    rng = np.random.default_rng([params.base.seed, 2**31])
    pick = rng.choice(len(prompts), size=min(params.reward.calibration.prompts, len(prompts)), replace=False)
    group_seeds = rng.integers(0, 2**31 - 1, size=len(pick)).tolist()
    return [prompts[i] for i in pick], group_seeds, int(rng.integers(0, 2**31 - 1))


def calibrate_rewards(accelerator, params, prompts: list[str], *, policy, tokenizer, sft_dir: str, pipe,
                      scorer) -> tuple[torch.Tensor, TermStats]:
    """Inception marginal and term statistics from the SFT policy's samples of ``prompts``.

    Two sharded passes over the ``M = prompts x samples_per_prompt`` samples, each handing the next its values:

    1. images [M, 3, H, W] (uint8) and their Inception posteriors [M, C], gathered on every process;
       the marginal is the posteriors' mean;
    2. every scored term of those gathered images under that marginal -> ``TermStats``.

    Both passes run micro-batches of ``reward.image_batch_size``, as ``score_triples`` does, so any
    process count gives the same numbers.
    """
    from negopt.core.sharding import map_micro_batches
    from negopt.images.render import generate_images
    from negopt.policy.decode import format_sources, saved_retrieval
    from negopt.policy.sampling import sample_rollout

    cfg, sampling = params.reward, params.sampling
    k, mb = cfg.calibration.samples_per_prompt, cfg.image_batch_size
    picked, group_seeds, sample_seed = calibration_plan(params, prompts)
    sources = format_sources(picked, params.sft.task_prefix, saved_retrieval(sft_dir))
    negatives = sample_rollout(policy, tokenizer, sources, k, sampling.temperature, sampling.top_p,
                               sampling.max_new_tokens, params.sft.max_source_length, sample_seed).negatives
    chosen = [p for p in picked for _ in range(k)]  # prompt-major, like a rollout
    seeds = [s for s in group_seeds for _ in range(k)]
    profile = rollout_profile(params)

    def images_and_probs(part: list[int]) -> dict[str, torch.Tensor]:
        images = generate_images(pipe, [chosen[i] for i in part], [negatives[i] for i in part],
                                 [seeds[i] for i in part], profile, batch_size=mb)
        return {"images": images, "probs": scorer.inception_probs(images).float().cpu()}

    first = map_micro_batches(accelerator, len(chosen), images_and_probs, mb)
    images = first["images"]  # [M, 3, H, W]: pass 2 reads these rows, whichever process made them
    names = tuple(cfg.weights.scored())

    def terms_for(marginal: torch.Tensor) -> dict[str, torch.Tensor]:
        def work(part: list[int]) -> dict[str, torch.Tensor]:
            batch = TermBatch(images[part[0]:part[-1] + 1], [chosen[i] for i in part], scorer, marginal)
            return score_terms(batch, names)

        return map_micro_batches(accelerator, len(chosen), work, mb)

    return fit_term_stats(first["probs"], terms_for, group_size=k, floor=cfg.scale_floor, weights=cfg.weights.scored())


def fit_term_stats(probs: torch.Tensor, terms_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], group_size: int,
                   floor: float = 0.0,
                   weights: dict[str, float] | None = None) -> tuple[torch.Tensor, TermStats]:
    """Fix the Inception marginal and the term statistics from calibration images.

    probs: [M, C] Inception class probabilities of the calibration images, ``M / group_size``
    groups of ``group_size`` images that share a prompt and a seed; ``terms_fn(marginal)`` returns
    their raw terms given that marginal, one entry per term to standardise. Returns (marginal [C],
    statistics with the ``floor`` rule of ``TermStats``). With ``weights``, a
    weighted term without a usable scale stops here (``DegenerateTermError``), before any training step.
    """
    marginal = probs.double().mean(0).float()  # [C]
    terms = terms_fn(marginal)
    stats = TermStats(tuple(terms), floor=floor)
    stats.update(terms, group_size=group_size)
    if weights is not None:
        stats.check_scales(weights)
    return marginal, stats


#: the rl stage's calibration, saved beside its weights (``paths.rl``) for best_of_n, which scores with that reward
CALIBRATION_FILE = "reward_calibration.safetensors"


def calibration_settings(params, device: torch.device) -> dict:
    """Every setting the calibration reads: the whole ``reward`` and ``sampling`` sections (a setting added
    to either is in the key without an edit here), the profile, the device type (fp16 on CUDA), ``base.seed``
    and the SFT model's input format."""
    return {"reward": params.reward.model_dump(), "sampling": params.sampling.model_dump(), "seed": params.base.seed,
            "profile": params.active.model_dump(), "device": device.type, "task_prefix": params.sft.task_prefix,
            "max_source_length": params.sft.max_source_length}


def calibration_key(params, device: torch.device) -> str:
    """What fixes the calibration: :func:`calibration_settings`, the SFT weights and saved input format, and
    the training prompts (``paths.clean``'s train split). A calibration saved under another key is not reused."""
    sft = Path(params.paths.sft)
    inputs = [*sorted(sft.glob("*.safetensors")), sft / "negopt.json", Path(params.paths.clean) / "train.parquet"]
    return fingerprint(calibration_settings(params, device), file_chunks(p for p in inputs if p.is_file()))


def save_calibration(folder: str | Path, key: str, stats: TermStats, marginal: torch.Tensor) -> None:
    """The calibrated statistics and Inception marginal into ``folder`` (the caller makes the folder atomic)."""
    from safetensors.torch import save_file

    save_file({"marginal": marginal.contiguous()}, str(Path(folder) / CALIBRATION_FILE),
              metadata={"key": key, "stats": json.dumps(stats.state_dict())})


def load_calibration(folder: str | Path, key: str) -> tuple[torch.Tensor, TermStats] | None:
    """(marginal, statistics) saved in ``folder`` under ``key``; None when there is none or it is another run's."""
    from safetensors import safe_open

    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("key") != key:
            return None
        marginal = f.get_tensor("marginal")
    stats = TermStats()
    stats.load_state_dict(json.loads(meta["stats"]))
    return marginal, stats


