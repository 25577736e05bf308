"""Is a finished RL run sane? Named checks on its test metrics, reported in ``metrics/rl.json``.

A reward can degenerate without any error (a term divided by a near-zero scale turns seed noise into a
"significant" gain and one negative for every prompt: docs/EXPERIMENTS.md, "A reward that cannot
degenerate"), so the stage does not assume a run is sound: it checks, and ``healthy`` is false when any
check fails. Checks (bounds from ``rl.health``):

- ``finite``: every test image's reward is finite;
- ``bounded``: every weighted term of every test image lies within ``max_abs_z`` calibration scales
  of the calibration mean (``z_test_abs_max <= max_abs_z``); a term divided by ~0 breaks it by orders
  of magnitude;
- ``kl``: ``KL(RL || SFT)`` on the test prompts ``<= max_kl`` nats per negative (the policy did not run
  away from the SFT model it was anchored to);
- ``diversity``: RL's share of distinct greedy test negatives is ``>= min_distinct_ratio x`` SFT's
  (the policy did not collapse onto a few strings);
- ``scales``: no weighted term needed the scale floor (``TermStats.floored``). A warning only, not a
  failure: the floor is the documented rule that keeps such a term finite, and the reader should know.

NaN never passes a check (every comparison with NaN is false).
"""

from __future__ import annotations

from negopt.core.params import RlHealth

FAILING = ("finite", "bounded", "kl", "diversity")


def health_checks(metrics: dict, scales: dict, weights: dict[str, float], bounds: RlHealth) -> tuple[dict, list[str]]:
    """(``{"health_<check>": bool, ..., "healthy": bool}``, warnings) from ``evaluate_rl``'s metrics and
    ``TermStats.report()``. ``healthy`` is the AND of the failing checks; warnings name what failed and why."""
    warnings: list[str] = []
    finite = metrics["reward_test_finite"] == 1.0
    if not finite:
        warnings.append(f"non-finite test rewards: only {metrics['reward_test_finite']:.3f} of the images have a "
                        f"finite reward; check the reward models and reward.scale_floor")
    z_max = metrics["z_test_abs_max"]
    bounded = bool(z_max <= bounds.max_abs_z)
    if not bounded:
        warnings.append(f"reward out of range: a test image's weighted term is {z_max:.3g} calibration scales from "
                        f"the calibration mean (bound rl.health.max_abs_z = {bounds.max_abs_z}); a term with "
                        f"~no within-group spread is being divided by ~0: raise reward.scale_floor or drop the term")
    kl = metrics["kl_test"]
    kl_ok = bool(kl <= bounds.max_kl)
    if not kl_ok:
        warnings.append(f"policy far from SFT: KL(RL || SFT) on test prompts {kl:.3g} nats > rl.health.max_kl = "
                        f"{bounds.max_kl}; raise rl.kl_coef or lower rl.learning_rate / rl.steps")
    d_sft, d_rl = metrics["distinct_negatives_sft"], metrics["distinct_negatives_rl"]
    diverse = bool(d_rl >= bounds.min_distinct_ratio * d_sft)
    if not diverse:
        warnings.append(f"collapsed negatives: RL gives {d_rl:.3f} distinct test negatives vs SFT's {d_sft:.3f} "
                        f"(< rl.health.min_distinct_ratio = {bounds.min_distinct_ratio} x SFT); the gain is not "
                        f"trustworthy: keep rl.selection.by: val_reward, lower rl.learning_rate or raise rl.kl_coef")
    floored = [t for t, w in weights.items() if w and scales.get(f"floored_{t}")]
    if floored:
        warnings.append("scale floor applied to " + ", ".join(
            f"{t} (within-group std {scales[f'within_std_{t}']:.3g} < floor x global std {scales[f'std_{t}']:.3g})"
            for t in floored) + ": these terms carry little per-negative signal")
    checks = {"health_finite": finite, "health_bounded": bounded, "health_kl": kl_ok, "health_diversity": diverse,
              "health_scales_floored": len(floored)}
    checks["healthy"] = all(checks[f"health_{c}"] for c in FAILING)
    return checks, warnings
