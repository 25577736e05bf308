"""Checkpoint selection: the deployed model is the last evaluated step whose negatives stayed diverse.

A reward shaping term can only make a collapse less likely; this makes the diversity check a guarantee
on held-out prompts. At every step up to ``rl.select_dense_steps``, then every ``rl.select_every`` steps
(and at the last step) the policy decodes the
validation prompts with the deployed decode (``decode.*``, greedy by default) and its share of distinct
negatives ``s_t`` is compared with the SFT model's share ``s_0`` on the same prompts::

    ratio_t = s_t / s_0                      (1.0 when s_0 == 0)
    kept    = max{t evaluated : ratio_t >= rl.select_min_ratio}, or 0 (the SFT weights)

``rl.select_min_ratio`` (0.75) is stricter than the health bound on the test (0.5): with few distinct
SFT negatives (8 on the real pairs' 158 val prompts) the val share is a coarse estimate of the test's.

The kept weights replace the final ones when the final step fails the bound, and ``metrics/rl.json``
reports the history and the kept step (``selection``). **Early stop**: once ``rl.select_patience``
consecutive evaluations fail the bound, training stops (a collapse onto one negative does not undo
itself: on the real pairs the greedy distinct share fell from 1 to 1/8 of SFT's in 15 steps while the
*sampled* negatives stayed ~all distinct, so the remaining steps would only cost time); 0 never stops. Validation prompts, not test prompts: the
test stays held out from every choice. The rule reads only diversity (no images), so it costs one
greedy decode of the validation prompts per evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def kept_step(history: list[tuple[int, float]], min_ratio: float) -> int:
    """The last step of ``(step, ratio)`` pairs with ``ratio >= min_ratio``; 0 (SFT) when there is none."""
    passing = [step for step, ratio in history if ratio >= min_ratio]
    return max(passing) if passing else 0


class DiversityGuard:
    """Evaluates the policy at selected steps and holds the weights of the kept step.

    ``measure(model) -> share of distinct deployed negatives on the validation prompts``. The kept
    weights start as the SFT weights (step 0, ratio 1 by definition) and live on the CPU.
    """

    def __init__(self, every: int, min_ratio: float, measure: Callable[[torch.nn.Module], float],
                 sft_policy: torch.nn.Module, patience: int = 0, dense_steps: int = 0) -> None:
        if every < 1:
            raise ValueError(f"rl.select_every: expected >= 1 (0 turns selection off), got {every}")
        self.every = every
        self.dense_steps = dense_steps
        self.min_ratio = min_ratio
        self.patience = patience
        self.measure = measure
        self.sft_share = measure(sft_policy)
        self.history: list[tuple[int, float, float]] = []  # (step, share, ratio)
        self.kept_step = 0
        self.kept = self._copy(sft_policy)

    @staticmethod
    def _copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}

    def due(self, step: int, last: int) -> bool:
        """Every step up to ``dense_steps`` (where a collapse starts: steps 3-7 on the real pairs), then every
        ``every`` steps, and the last step."""
        return step <= self.dense_steps or step % self.every == 0 or step == last

    def observe(self, step: int, policy: torch.nn.Module) -> float:
        """Measure the policy after ``step``; keep its weights if it is now the last passing step. Returns the ratio."""
        share = self.measure(policy)
        ratio = share / self.sft_share if self.sft_share > 0 else 1.0
        self.history = [h for h in self.history if h[0] < step] + [(step, share, ratio)]
        if kept_step([(s, r) for s, _, r in self.history], self.min_ratio) == step:
            self.kept_step, self.kept = step, self._copy(policy)
        return ratio

    def first_failure(self) -> int | None:
        """The first evaluated step below the bound (None: none so far): where the decode began to collapse."""
        return next((step for step, _, r in self.history if r < self.min_ratio), None)

    def failed_once(self) -> bool:
        """Some evaluation so far fell below the bound (``rl.anchor_when: collapse`` latches on it)."""
        return self.first_failure() is not None

    def stopped(self) -> bool:
        """The last ``patience`` evaluations all failed the bound (never with patience 0)."""
        last = self.history[-self.patience:] if self.patience else []
        return len(last) == self.patience > 0 and all(r < self.min_ratio for _, _, r in last)

    def restore(self, policy: torch.nn.Module, final_step: int) -> int:
        """Load the kept weights into ``policy`` unless the final step is the kept one; returns the kept step."""
        if self.kept_step != final_step:
            policy.load_state_dict(self.kept)
        return self.kept_step

    def report(self) -> dict:
        return {"every": self.every, "dense_steps": self.dense_steps, "patience": self.patience, "min_distinct_ratio": self.min_ratio,
                "val_distinct_sft": self.sft_share, "kept_step": self.kept_step, "stopped_early": self.stopped(), "history": [list(h) for h in self.history]}

    def state_dict(self) -> dict:
        return {"kept_step": self.kept_step, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict, kept: dict[str, torch.Tensor]) -> None:
        self.kept_step = int(state["kept_step"])
        self.history = [(int(s), float(sh), float(r)) for s, sh, r in state["history"]]
        self.kept = kept
