"""Reward-term statistics: the centre and scale that z-score each term before weighting.

Pure arithmetic on term values (no models). The terms are the registered ones
(``negopt.reward.terms.REWARD_TERMS``) unless ``names`` says otherwise.
"""

from __future__ import annotations

import math

import torch

from negopt.reward.terms import REWARD_TERMS


class DegenerateTermError(ValueError):
    """A weighted reward term has no spread to scale by; the message names the term and the fixes."""


class TermStats:
    """Centre and scale per reward term, to z-score each term before weighting.

    The reward nets give terms on unrelated scales (on the tiny profile the random aesthetic MLP varies
    thousands of times less than CLIP: bench/bench_reward_signal.py in bench/RESULTS.md), so without
    standardisation the weights would not mean what they say. The centre is the term's
    mean over the calibration images; the **scale** is the pooled standard deviation *within* groups of
    ``k`` images that share a prompt and a diffusion seed and differ only in the negative,
    ``sqrt(sum_g sum_i (x_gi - mean_g)^2 / sum_g (k - 1))``: the variation a negative prompt can cause, the
    only part RLOO's baseline leaves in the advantages. Scaled by the global spread instead, the prompt's and
    seed's share drowned the signal (docs/EXPERIMENTS.md, "Why the reward is scaled within groups").

    **The floor** (``reward.scale_floor``, ``floor`` here): the scale is never below ``floor x`` the term's
    global standard deviation, ``scale = max(within_std, floor * std)``. A term whose k images of a group
    hardly differ would otherwise be divided by ~0 and turn into noise times 10^8. ``floored`` lists the
    terms the floor lifted. A term with no spread at all (``std == 0``: constant over every calibration
    image) has no scale: ``check_scales`` refuses it when its weight is non-zero, and ``standardise`` gives
    it z = 0 (dropped) otherwise.

    ``update`` merges a batch with Chan's parallel formula (the statistics of all data seen); calibration
    calls it once.
    """

    def __init__(self, names: tuple[str, ...] | None = None, floor: float = 0.0) -> None:
        if not 0.0 <= floor <= 1.0:
            raise ValueError(f"reward.scale_floor: expected a share of the global std in [0, 1], got {floor}")
        # default: every registered term that needs no model of its own (those are scored only when weighted)
        self.names = tuple((n for n, t in REWARD_TERMS.items() if not t.model) if names is None else names)
        self.floor = floor
        self.count = 0
        self.mean = {n: 0.0 for n in self.names}
        self.m2 = {n: 0.0 for n in self.names}  # sum of squared deviations from the mean
        self.within_df = 0  # sum over groups of (group size - 1)
        self.within_ss = {n: 0.0 for n in self.names}  # sum of squared deviations from each group's mean

    def update(self, terms: dict[str, torch.Tensor], group_size: int | None = None) -> None:
        """Merge a batch; ``group_size`` k: rows ``g*k .. g*k+k-1`` share a prompt and a seed."""
        grouped = group_size is not None and group_size > 1
        sizes = {terms[name].numel() for name in self.names}
        if grouped and any(n % group_size for n in sizes):
            raise ValueError(f"{sorted(sizes)} values do not split into groups of {group_size}")
        n_b = None
        for name in self.names:
            x = terms[name].detach().double().reshape(-1)
            n_b = x.numel()
            if n_b == 0:
                return
            if not torch.isfinite(x).all():
                raise ValueError(f"reward term {name!r}: non-finite values in the batch; check the reward models")
            mean_b = x.mean().item()
            m2_b = ((x - mean_b) ** 2).sum().item()
            n = self.count + n_b
            delta = mean_b - self.mean[name]
            self.mean[name] += delta * n_b / n
            self.m2[name] += m2_b + delta**2 * self.count * n_b / n
            if grouped:
                g = x.reshape(-1, group_size)
                self.within_ss[name] += ((g - g.mean(dim=1, keepdim=True)) ** 2).sum().item()
        if grouped and n_b:
            self.within_df += n_b - n_b // group_size
        self.count += n_b or 0

    def std(self, name: str) -> float:
        """Population standard deviation over all values (0 for a constant term)."""
        if self.count == 0:
            raise RuntimeError("TermStats: no data yet; call update() with a calibration batch first")
        return math.sqrt(max(self.m2[name], 0.0) / self.count)

    def within_std(self, name: str) -> float:
        """Pooled within-group standard deviation (unbiased: divides by the sum of ``k - 1``)."""
        if self.within_df == 0:
            raise RuntimeError("TermStats: no grouped data; call update(terms, group_size=k) with k >= 2")
        return math.sqrt(max(self.within_ss[name], 0.0) / self.within_df)

    def is_constant(self, name: str) -> bool:
        """No spread at all: the std is 0 up to float rounding of the mean (relative 1e-12)."""
        return self.std(name) <= 1e-12 * max(1.0, abs(self.mean[name]))

    def scale(self, name: str) -> float:
        """``max(within_std, floor * std)``; ``inf`` for a constant term (z = 0)."""
        if self.is_constant(name):
            return math.inf
        return max(self.within_std(name), self.floor * self.std(name))

    def floored(self, name: str) -> bool:
        """The group scale was lifted to the floor (the within-group spread is below ``floor * std``)."""
        return not self.is_constant(name) and self.within_std(name) < self.floor * self.std(name)

    def check_scales(self, weights: dict[str, float]) -> None:
        """Refuse a weighted term with no usable scale, naming it and the fixes (``DegenerateTermError``)."""
        for name in self.names:
            if not weights.get(name, 0.0):
                continue
            if self.is_constant(name):
                raise DegenerateTermError(
                    f"reward term {name!r} is constant ({self.mean[name]:.6g}) over all {self.count} calibration "
                    f"images, so it has no scale: set reward.weights.{name}: 0 to drop it, or raise "
                    "reward.calibration.prompts")
            if self.scale(name) <= 0.0:
                raise DegenerateTermError(
                    f"reward term {name!r} has no spread within the calibration groups (within-group std 0, "
                    f"global std {self.std(name):.3g}) and reward.scale_floor is 0: set reward.scale_floor > 0 "
                    f"(e.g. 0.02), or reward.weights.{name}: 0")

    def report(self) -> dict[str, float | bool]:
        """Per term: ``mean_<t>``, ``std_<t>`` (global), ``within_std_<t>``, ``scale_<t>`` (what z divides by),
        ``floored_<t>``, ``constant_<t>``: what the metrics JSON and the model card show."""
        out: dict[str, float | bool] = {}
        for n in self.names:
            out |= {f"mean_{n}": self.mean[n], f"std_{n}": self.std(n), f"scale_{n}": self.scale(n),
                    f"floored_{n}": self.floored(n), f"constant_{n}": self.is_constant(n)}
            if self.within_df:
                out[f"within_std_{n}"] = self.within_std(n)
        return out

    def standardise(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: (terms[n] - self.mean[n]) / self.scale(n) for n in self.names}

    def state_dict(self) -> dict:
        return {"names": list(self.names), "floor": self.floor, "count": self.count,
                "mean": dict(self.mean), "m2": dict(self.m2), "within_df": self.within_df,
                "within_ss": dict(self.within_ss)}

    def load_state_dict(self, state: dict) -> None:
        self.names = tuple(state["names"])
        self.floor = float(state.get("floor", 0.0))
        self.count = int(state["count"])
        self.mean = {k: float(v) for k, v in state["mean"].items()}
        self.m2 = {k: float(v) for k, v in state["m2"].items()}
        self.within_df = int(state["within_df"])
        self.within_ss = {k: float(v) for k, v in state["within_ss"].items()}
