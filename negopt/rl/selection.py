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
*sampled* negatives stayed ~all distinct, so the remaining steps would only cost time); 0 never stops.
Validation prompts, not test prompts: the test stays held out from every choice. The rule reads only diversity (no images), so it costs one
greedy decode of the validation prompts per evaluation.

**Stale stop**: an attempt also stops once ``rl.select_stale_steps`` steps have passed since its kept step
with no check choosing a later one (early stopping's patience, counted in steps so the dense checks do not
spend it); 0 never stops. The kept step may be step 0, the SFT weights: an attempt whose checks have not
beaten SFT within that many steps ends too, and restarts (``rl.restarts``). The kept weights are the same as
a full run's unless a step past that window would have beaten them: the sample's default run keeps step 50
and its later checks gain less on val (or have collapsed), so it stops at step 75 of 150; on the real pairs
the reranked decode hardly moves (val gain +0.08 +- 0.09 from step 7 to 150), and each attempt that kept
SFT used to train all 150 steps (750 steps, ~8 min, in 5 attempts) to deploy SFT.

**By reward** (``rl.select_reward_prompts`` > 0): a diverse step is also scored on a fixed validation plan
(those prompts x ``rl.select_reward_seeds`` diffusion seeds, the same for SFT and every step), giving the
paired gain ``g_t`` of its deployed decode over SFT's and its standard error ``se_t`` (prompts are the
units, as on the test), and the kept step becomes::

    kept = argmax{g_t : ratio_t >= rl.select_min_ratio, g_t > 0, g_t >= rl.select_min_z x se_t}, or 0

The diversity rule alone keeps the last diverse step whatever its reward; on the real pairs the few
steps before the decode collapses are mostly a random walk, and two RL seeds of one configuration gave
test gains of -6.5 and +5.8 SE (README). Reading the reward on held-out val prompts turns that walk into
a choice, and deploys SFT when no step beat it; the test stays untouched by the choice.

**Restarts** (``rl.restarts``, ``negopt.rl.loop.run_rl``): an attempt that finished keeping nothing (step 0)
trains again from the SFT weights on its own training stream; ``new_attempt`` archives its history
(``past_attempts`` in the report). The reward statistics and the val plan stay those of the first attempt,
so every attempt is judged by one reward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def kept_step(history: list[tuple[int, float]], min_ratio: float) -> int:
    """The last step of ``(step, ratio)`` pairs with ``ratio >= min_ratio``; 0 (SFT) when there is none."""
    passing = [step for step, ratio in history if ratio >= min_ratio]
    return max(passing) if passing else 0


def best_gain_step(history: list[tuple[int, float, float | None, float | None]], min_ratio: float, min_z: float) -> int:
    """Of ``(step, ratio, gain, se)`` rows, the step with the largest val gain among those with ``ratio >=
    min_ratio``, ``gain > 0`` and ``gain >= min_z x se`` (the later step on a tie); 0 (SFT) when there is none."""
    ok = [(gain, step) for step, ratio, gain, se in history
          if ratio >= min_ratio and gain is not None and gain > 0 and gain >= min_z * se]
    return max(ok)[1] if ok else 0


class DiversityGuard:
    """Evaluates the policy at selected steps and holds the weights of the kept step.

    ``measure(model) -> share of distinct deployed negatives on the validation prompts``; ``gain(model) ->
    (val reward gain over SFT, its SE)`` (optional: selection by reward, called only at diverse steps; it
    may need a ``bind(reward_fn)`` once the reward is calibrated, ``bind_reward``). The kept weights start
    as the SFT weights (step 0, ratio 1 by definition) and live on the CPU.
    """

    def __init__(self, every: int, min_ratio: float, measure: Callable[[torch.nn.Module], float],
                 sft_policy: torch.nn.Module, patience: int = 0, dense_steps: int = 0,
                 gain: Callable[[torch.nn.Module], tuple[float, float]] | None = None, min_z: float = 2.0,
                 stale_steps: int = 0) -> None:
        if every < 1:
            raise ValueError(f"rl.select_every: expected >= 1 (0 turns selection off), got {every}")
        self.every = every
        self.dense_steps = dense_steps
        self.min_ratio = min_ratio
        self.patience = patience
        self.stale_steps = stale_steps
        self.measure = measure
        self.gain = gain
        self.min_z = min_z
        self.sft_share = measure(sft_policy)
        self.history: list[tuple] = []  # (step, share, ratio) or, by reward, (step, share, ratio, gain | None, se | None)
        self.kept_step = 0
        self.kept = self._copy(sft_policy)
        self.past: list[dict] = []  # earlier attempts (rl.restarts), each {"history", "kept_step"}: all deployed SFT

    @staticmethod
    def _copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}

    def due(self, step: int, last: int) -> bool:
        """Every step up to ``dense_steps`` (where a collapse starts: steps 3-7 on the real pairs), then every
        ``every`` steps, and the last step."""
        return step <= self.dense_steps or step % self.every == 0 or step == last

    @property
    def image_seconds(self) -> float:
        """Seconds the ``gain`` measure spent rendering and scoring val images so far (0 without one)."""
        return float(getattr(self.gain, "image_seconds", 0.0))

    def bind_reward(self, reward_fn) -> None:
        """Hand the calibrated reward to the ``gain`` measure (a no-op when selecting by diversity alone)."""
        if self.gain is not None and hasattr(self.gain, "bind"):
            self.gain.bind(reward_fn)

    def choose(self) -> int:
        """The kept step the history gives: ``best_gain_step`` by reward, else ``kept_step``."""
        if self.gain is None:
            return kept_step([(h[0], h[2]) for h in self.history], self.min_ratio)
        return best_gain_step([(h[0], h[2], h[3], h[4]) for h in self.history], self.min_ratio, self.min_z)

    def observe(self, step: int, policy: torch.nn.Module) -> float:
        """Measure the policy after ``step`` (its val reward too when selecting by reward and the step is
        diverse); keep its weights if the history now chooses it. Returns the ratio."""
        share = self.measure(policy)
        ratio = share / self.sft_share if self.sft_share > 0 else 1.0
        row: tuple = (step, share, ratio)
        if self.gain is not None:
            row += tuple(self.gain(policy)) if ratio >= self.min_ratio else (None, None)
        self.history = [h for h in self.history if h[0] < step] + [row]
        if self.choose() == step:
            self.kept_step, self.kept = step, self._copy(policy)
        return ratio

    def new_attempt(self) -> None:
        """Archive this attempt's history and start the next afresh. Only after an attempt that kept nothing
        (step 0), so the kept weights are still the SFT weights the next attempt starts from."""
        if self.kept_step != 0:
            raise RuntimeError(f"new_attempt after an attempt that kept step {self.kept_step}")
        self.past.append({"history": [list(h) for h in self.history], "kept_step": 0})
        self.history = []

    def first_failure(self) -> int | None:
        """The first evaluated step below the bound (None: none so far): where the decode began to collapse."""
        return next((h[0] for h in self.history if h[2] < self.min_ratio), None)

    def failed_once(self) -> bool:
        """Some evaluation so far fell below the bound (``rl.anchor_when: collapse`` latches on it)."""
        return self.first_failure() is not None

    def stopped(self) -> bool:
        """Training is over early: ``stop_reason()`` is not None."""
        return self.stop_reason() is not None

    def stop_reason(self) -> str | None:
        """``collapse``: the last ``patience`` evaluations all failed the bound (never with patience 0);
        ``stale``: the last evaluation is ``stale_steps`` or more steps after the kept step, which is 0 while
        the SFT weights are kept (never with stale_steps 0)."""
        last = self.history[-self.patience:] if self.patience else []
        if len(last) == self.patience > 0 and all(h[2] < self.min_ratio for h in last):
            return "collapse"
        if self.stale_steps and self.history and self.history[-1][0] - self.kept_step >= self.stale_steps:
            return "stale"
        return None

    def restore(self, policy: torch.nn.Module, final_step: int) -> int:
        """Load the kept weights into ``policy`` unless the final step is the kept one; returns the kept step."""
        if self.kept_step != final_step:
            policy.load_state_dict(self.kept)
        return self.kept_step

    def report(self) -> dict:
        return {"every": self.every, "dense_steps": self.dense_steps, "patience": self.patience, "min_distinct_ratio": self.min_ratio,
                "by": "reward" if self.gain is not None else "diversity", "min_z": self.min_z if self.gain is not None else None,
                "stale_steps": self.stale_steps, "val_distinct_sft": self.sft_share, "kept_step": self.kept_step,
                "stopped_early": self.stopped(), "stop_reason": self.stop_reason(), "history": [list(h) for h in self.history],
                "attempt": len(self.past), "past_attempts": self.past}

    def state_dict(self) -> dict:
        return {"kept_step": self.kept_step, "history": [list(h) for h in self.history], "past": self.past}

    def load_state_dict(self, state: dict, kept: dict[str, torch.Tensor]) -> None:
        self.kept_step = int(state["kept_step"])
        self.history = [(int(h[0]), float(h[1]), float(h[2]), *(None if x is None else float(x) for x in h[3:]))
                        for h in state["history"]]
        self.past = list(state.get("past", []))
        self.kept = kept
