"""The RL model card (``paths.rl/README.md``): reward, calibration scales, health, test numbers, examples.

Written by ``negopt.core.model_card.write_model_card`` (the SFT card's helper): YAML metadata the hub reads,
then :func:`model_card_body`. The terms are the run's (``reward.weights``: every scored term).
"""

from __future__ import annotations

import json
from pathlib import Path

from negopt.core.model_card import write_model_card

#: the test metrics that go into the card's YAML ``model-index`` (all in metrics/rl.json)
CARD_METRICS = ("reward_test_sft", "reward_test_rl", "reward_test_gain", "reward_test_gain_se", "kl_test",
                "distinct_negatives_sft", "distinct_negatives_rl")


def write_rl_card(out_dir: str | Path, params, metrics: dict, examples: list[dict], seconds: dict) -> Path:
    """``out_dir/README.md``: metadata (base model: the SFT model's own base, data licence, test metrics) + body."""
    return write_model_card(out_dir, "negopt-rl", params.active.policy, params.data.source,
                            {k: metrics[k] for k in CARD_METRICS}, f"negopt test split ({params.data.source})",
                            model_card_body(params, metrics, examples, seconds))


def model_card_body(params, metrics: dict, examples: list[dict], seconds: dict) -> str:
    rl, reward = params.rl, params.reward
    sel = rl.selection
    weights = reward.weights.scored()  # {term: weight}, every scored term
    rows = "\n".join(f"| {e['prompt']} | {e['sft']} | {e['rl']} |" for e in examples)
    keys = ("reward_test_sft", "reward_test_rl", "reward_test_gain", "reward_test_gain_se", "distinct_negatives_sft",
            "distinct_negatives_rl", "kl_test", "z_test_abs_max")
    cal = metrics["calibration"]
    scales = "\n".join(
        f"| {t} | {w} | {cal[f'std_{t}']:.4g} | {cal.get(f'within_std_{t}', float('nan')):.4g} | "
        f"{cal[f'scale_{t}']:.4g} | {'floored' if cal[f'floored_{t}'] else 'constant: z = 0' if cal[f'constant_{t}'] else ''} |"
        for t, w in weights.items())
    health = "healthy" if metrics["healthy"] else "**NOT healthy**"
    warnings = "".join(f"\n- {w}" for w in metrics["warnings"]) or "\n- none"
    rule = (f"the diverse check (val negatives >= `rl.selection.min_ratio = {sel.min_ratio}` x SFT's distinct share) "
            f"with the largest paired val reward gain over SFT, if >= `rl.selection.min_z = {sel.min_z}` SE "
            f"({sel.reward_prompts} val prompts x {sel.reward_seeds} seeds)" if sel.by == "val_reward" else
            "the last step (`rl.selection.by: last_step`)")
    stop = {"stale": f"; stopped early: the kept step was `rl.selection.stale_steps = {sel.stale_steps}` steps old",
            "collapse": f"; stopped early: `rl.selection.patience = {sel.patience}` checks in a row below the bound"
            }.get((metrics.get("selection") or {}).get("stop_reason"), "")
    rollout = (f", rendered with `reward.rollout_inference_steps = {reward.rollout_inference_steps}` denoising steps "
               f"for training and calibration ({params.active.num_inference_steps} for checkpoint selection and the test)"
               if reward.rollout_inference_steps else "")
    return f"""# negopt RL policy

Negative-prompt generator: the SFT model (`{params.paths.sft}`) optimised with {rl.algo.upper()} for
{metrics.get("steps", rl.steps)} of rl.steps = {rl.steps} steps{stop} ({rl.batch_prompts} prompts x k={rl.k} samples per step) on the reward of images from
the `{params.profile}` profile's text-to-image pipeline (`{params.active.sd}`){rollout}.

Reward: `{" + ".join(f"{w} * z({t})" for t, w in weights.items())}`,
each term centred and scaled by its standard deviation across the negatives of one prompt and seed (never below
`reward.scale_floor = {reward.scale_floor}` x the global one), fixed from SFT samples before training; the CLIP term
is the unclamped `100 cos`; KL-to-SFT penalty `rl.kl_coef = {rl.kl_coef}` in the reward. The KL penalty is the guard
against reward hacking: a low KL coefficient or a high learning rate lets RL drift to degenerate negatives
(repeated commas, byte fragments); the default keeps them readable.

Calibration scales (raw units; z = (term - mean) / scale):

| term | weight | global std | within-group std | scale | note |
|---|---|---|---|---|---|
{scales}

Deployed weights: step {metrics.get('kept_step', metrics.get('steps'))} of {metrics.get('steps')} of attempt {metrics.get('attempt', 0)}
(`rl.restarts = {rl.restarts}`; checkpoint selection: {rule}; 0 = the SFT weights).

Health: {health}. Warnings:{warnings}

Test ({metrics['n_test']} held-out prompts x {rl.test.seeds_per_prompt} fixed seeds, the deployed decode (`decode` params), paired per prompt):

| metric | value |
|---|---|
""" + "\n".join(f"| {k} | {metrics[k]:.4g} |" for k in keys) + """

Per-term test means (z units), SFT -> RL: """ + ", ".join(
        f"{t} {metrics[f'{t}_test_sft']:.3f} -> {metrics[f'{t}_test_rl']:.3f}" for t in weights
    ) + f"""

Time (s): {json.dumps({k: round(v, 1) for k, v in seconds.items()})}

| prompt | SFT negative | RL negative |
|---|---|---|
{rows}

Parameters: `{json.dumps({"rl": rl.model_dump(), "reward": reward.model_dump(), "sampling": params.sampling.model_dump()})}`, seed {params.base.seed}.
"""
