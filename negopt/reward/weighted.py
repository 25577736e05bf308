"""The RL reward over the registered terms, its calibration, and scoring (prompt, negative, seed) triples.

The terms are ``negopt.reward.terms.REWARD_TERMS`` (raw values per image); the reward is a weighted
sum of their *standardised* values::

    R = sum_t w_t * z(t),   z(t) = (t - mean_t) / scale_t,   t over the registered terms

with ``w`` = ``rl.reward.<t>``. The raw terms live on unrelated scales (the random tiny aesthetic MLP
varies by ~5e-4, CLIP scores by ~1), so z-scoring is what makes "weight 3 on aesthetics" mean three
times as many standard deviations. ``scale_t`` is by default (``rl.reward_norm: group``) the
standard deviation of the term *across the k negatives of one prompt and seed*, the variation a
negative can cause (see ``negopt.reward.term_stats.TermStats``); ``global`` uses the standard deviation
over all images. ``mean_t, scale_t`` and the Inception marginal ``p(y)`` (a fixed input of every term,
read by the fidelity term ``KL(p(y|x) || p(y))``) come from a calibration batch drawn before RL starts:
``k`` SFT samples for each of ``rl.calibration_prompts`` prompts, one seed per prompt
(``rl.reward_stats: fixed``); ``running`` keeps updating the term statistics (not the marginal) with
every step's terms. Either way the test comparison scores SFT and RL with one and the same final
normalisation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from negopt.core.fingerprint import file_chunks, fingerprint
from negopt.reward.term_stats import TermStats
from negopt.reward.terms import TermBatch, score_terms
from negopt.rl.advantages import weighted_reward

RewardFn = Callable[[torch.Tensor, list[str], dict], tuple[torch.Tensor, dict]]


def weighted_sum_reward(scorer, weights: dict[str, float], stats: TermStats, marginal: torch.Tensor,
                        clip_term: str = "cosine") -> RewardFn:
    """The RL reward ``fn(images, prompts, metadata) -> (sum_t w_t * z_t [N], info)`` over ``stats.names``.

    ``clip_term`` (``rl.clip_term``): ``cosine`` (unclamped ``100 cos``) or ``clamped`` (the CLIP score).
    info: ``raw`` and ``z``, each a dict term -> [N]. Per image only (the marginal and the statistics
    are fixed inputs), so slices of a batch scored on different processes give the same numbers.
    """

    def fn(images: torch.Tensor, prompts: list[str], metadata: dict) -> tuple[torch.Tensor, dict]:
        raw = score_terms(TermBatch(images, list(prompts), scorer, marginal, clip_term), stats.names)
        z = {t: v.float() for t, v in stats.standardise(raw).items()}
        return weighted_reward(z, weights).float(), {"raw": raw, "z": z}

    return fn


def fit_term_stats(probs: torch.Tensor, terms_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], group_size: int,
                   norm: str = "group", floor: float = 0.0,
                   weights: dict[str, float] | None = None) -> tuple[torch.Tensor, TermStats]:
    """Fix the Inception marginal and the term statistics from calibration images.

    probs: [M, C] Inception class probabilities of the calibration images, ``M / group_size``
    groups of ``group_size`` images that share a prompt and a seed; ``terms_fn(marginal)`` returns
    their raw terms given that marginal, one entry per term to standardise. Returns (marginal [C],
    statistics with scale ``norm`` and the ``floor`` rule of ``TermStats``). With ``weights``, a
    weighted term without a usable scale stops here (``DegenerateTermError``), before any training step.
    """
    marginal = probs.double().mean(0).float()  # [C]
    terms = terms_fn(marginal)
    stats = TermStats(tuple(terms), norm=norm, floor=floor)
    stats.update(terms, group_size=group_size)
    if weights is not None:
        stats.check_scales(weights)
    return marginal, stats


#: the rl stage's calibration, saved beside its weights (``paths.rl``) for best_of_n, which scores with that reward
CALIBRATION_FILE = "reward_calibration.safetensors"


def calibration_key(params, device: torch.device) -> str:
    """What fixes the calibration (``negopt.rl.loop.calibrate_rewards``): the SFT weights and input format, the
    training prompts (``paths.clean``'s train split), the profile, the device type (fp16 on CUDA), ``base.seed``
    and the rl settings it reads. A calibration saved under another key is not reused."""
    rl = params.rl
    settings = {"seed": params.base.seed, "profile": params.active.model_dump(), "device": device.type,
                "task_prefix": params.sft.task_prefix, "max_source_length": params.sft.max_source_length,
                "weights": rl.reward.scored(), **{name: getattr(rl, name) for name in (
                    "calibration_prompts", "k", "temperature", "top_p", "max_new_tokens", "image_batch_size",
                    "clip_term", "reward_norm", "scale_floor", "rollout_inference_steps")}}
    sft = Path(params.paths.sft)
    inputs = [*sorted(sft.glob("*.safetensors")), sft / "negopt.json", Path(params.paths.clean) / "train.parquet"]
    return fingerprint(settings, file_chunks(p for p in inputs if p.is_file()))


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


def score_triples(
    accelerator, pipe, profile, reward_fn: RewardFn, prompts: list[str], negatives: list[str], seeds: list[int],
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """Generate one image per (prompt, negative, seed) and score it, sharded over processes.

    A triple that repeats is rendered and scored once (``distinct_triples``) and its values copied to every
    row that asks for it: per-image generators make it the same image (the pipeline's images do not depend
    on what else is in the batch), and the reward is per image. Repeats are common: the test's SFT and RL
    negatives agree on about half the sample's prompts, a trained policy's k samples of a prompt (one seed)
    coincide ~20% of the time.

    The distinct items are cut into micro-batches of ``batch_size`` (one pipeline call and one scoring call
    each) and whole micro-batches are dealt to processes; results are gathered, so every process
    returns the full ``reward`` [N] and ``raw/<term>``, ``z/<term>`` [N]. Per-image generators, fixed
    reward statistics and process-independent batch shapes make the result the same for any number
    of processes.
    """
    from negopt.core.sharding import map_sharded
    from negopt.images.render import distinct_triples, generate_images

    rows, inverse = distinct_triples(prompts, negatives, seeds)

    def micro_batch(idx: list[int]) -> dict[str, torch.Tensor]:
        p = [prompts[rows[i]] for i in idx]
        s = [seeds[rows[i]] for i in idx]
        images = generate_images(pipe, p, [negatives[rows[i]] for i in idx], s, profile, batch_size=len(idx))
        rewards, info = reward_fn(images, p, {"seeds": s})
        out = {"reward": rewards}
        for kind in ("raw", "z"):
            out.update({f"{kind}/{t}": v for t, v in info.get(kind, {}).items()})
        return out

    def work(idx: list[int]) -> dict[str, torch.Tensor]:
        # one pipeline call and one scorer call per micro-batch: the same batches as on any process count
        parts = [micro_batch(idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}

    out = map_sharded(accelerator, len(rows), work, granularity=batch_size)
    return {k: v[inverse.to(v.device)] for k, v in out.items()}

