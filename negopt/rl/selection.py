"""Checkpoint selection: which training step's weights ship, decided on validation prompts only.

A check runs at every step up to ``rl.selection.dense_steps``, then every ``rl.selection.every`` steps and at
the last step (:meth:`CheckpointSelector.due`):

1. **diversity**: the deployed decode (``decode.*``) of ``diversity_prompts`` val prompts; its share of distinct
   negatives ``s_t`` against the SFT model's ``s_0`` on the same prompts, ``ratio_t = s_t / s_0`` (1 when
   ``s_0 == 0``). The check is *diverse* when ``ratio_t >= min_ratio``: a policy whose greedy decode answers
   every prompt alike has collapsed, whatever its reward says.
2. **val reward** (diverse checks only): the paired gain ``g_t`` of those negatives' reward over SFT's and its
   standard error ``se_t``, on a plan fixed for the run (``reward_prompts`` val prompts x ``reward_seeds``
   diffusion seeds; prompts are the units, as on the test; :class:`ValRewardGain`).

The kept step is::

    kept = argmax{g_t : ratio_t >= min_ratio, g_t > 0, g_t >= min_z * se_t}  (the later step on a tie), or 0

where step 0 is the SFT weights. The test stays held out from every choice.

**Early stops**: ``collapse`` once ``patience`` checks in a row are not diverse (a collapse does not undo
itself); ``stale`` once the last check is ``stale_steps`` or more steps after the kept step (step 0, SFT,
counts: an attempt that has not beaten SFT by then ends). **Restarts** (``rl.restarts``,
``negopt.rl.loop``): an attempt that ends keeping nothing trains again from the SFT weights on its own
stream; :meth:`CheckpointSelector.new_attempt` archives its checks. The reward and the val plan stay the first
attempt's, so every attempt is judged alike. Why selection, and why by reward: docs/EXPERIMENTS.md, "Why the
deployed weights are chosen on val".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from negopt.core.params import Params, Selection
from negopt.core.stats import mean_and_se
from negopt.reward.weighted import RewardFn, score_triples
from negopt.rl.heldout import distinct_share, eval_plan, greedy_negatives


@dataclass(frozen=True)
class Check:
    """One checkpoint-selection check: the val distinct share and its ratio to SFT's, and (diverse checks
    only) the paired val reward gain over SFT with its standard error."""

    step: int
    share: float
    ratio: float
    gain: float | None = None
    se: float | None = None

    def significant(self, min_ratio: float, min_z: float) -> bool:
        """Diverse, and a positive gain of at least ``min_z`` standard errors."""
        return (self.ratio >= min_ratio and self.gain is not None and self.gain > 0
                and self.gain >= min_z * self.se)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Check:
        return cls(int(d["step"]), float(d["share"]), float(d["ratio"]),
                   *(None if d.get(k) is None else float(d[k]) for k in ("gain", "se")))


def best_step(checks: list[Check], min_ratio: float, min_z: float) -> int:
    """The step of the largest significant gain (the later step on a tie); 0 (SFT) when none is significant."""
    ok = [(c.gain, c.step) for c in checks if c.significant(min_ratio, min_z)]
    return max(ok)[1] if ok else 0


class CheckpointSelector:
    """Checks the policy at due steps and holds the weights of the kept step (CPU copies).

    ``measure(model) -> val distinct share`` and ``gain(model) -> (val reward gain over SFT, SE)``; ``gain`` may
    need ``bind(reward_fn)`` once the reward is calibrated (:meth:`bind_reward`). The kept weights start as the
    SFT weights (step 0).
    """

    def __init__(self, cfg: Selection, measure: Callable[[torch.nn.Module], float],
                 gain: Callable[[torch.nn.Module], tuple[float, float]], sft_policy: torch.nn.Module) -> None:
        self.cfg, self.measure, self.gain = cfg, measure, gain
        self.sft_share = measure(sft_policy)
        self.checks: list[Check] = []
        self.kept_step = 0
        self.kept = self._copy(sft_policy)
        self.past: list[dict] = []  # earlier attempts (rl.restarts), each {"checks", "kept_step"}: all kept SFT

    @staticmethod
    def _copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}

    def due(self, step: int, last: int) -> bool:
        """Every step up to ``dense_steps`` (where a collapse starts), then every ``every`` steps, and the last."""
        return step <= self.cfg.dense_steps or step % self.cfg.every == 0 or step == last

    @property
    def image_seconds(self) -> float:
        """Seconds the ``gain`` measure spent rendering and scoring val images so far."""
        return float(getattr(self.gain, "image_seconds", 0.0))

    def bind_reward(self, reward_fn: RewardFn) -> None:
        """Hand the calibrated reward to the ``gain`` measure."""
        if hasattr(self.gain, "bind"):
            self.gain.bind(reward_fn)

    def observe(self, step: int, policy: torch.nn.Module) -> Check:
        """Check the policy after ``step`` (its val reward too when diverse); keep its weights if it is now the
        best step. A replayed step (a resume) replaces its earlier check."""
        share = self.measure(policy)
        ratio = share / self.sft_share if self.sft_share > 0 else 1.0
        check = Check(step, share, ratio, *(self.gain(policy) if ratio >= self.cfg.min_ratio else (None, None)))
        self.checks = [c for c in self.checks if c.step < step] + [check]
        if best_step(self.checks, self.cfg.min_ratio, self.cfg.min_z) == step:
            self.kept_step, self.kept = step, self._copy(policy)
        return check

    def new_attempt(self) -> None:
        """Archive this attempt's checks and start the next afresh. Only after an attempt that kept nothing, so
        the kept weights are still the SFT weights the next attempt starts from."""
        if self.kept_step != 0:
            raise RuntimeError(f"new_attempt after an attempt that kept step {self.kept_step}")
        self.past.append({"checks": [c.to_dict() for c in self.checks], "kept_step": 0})
        self.checks = []

    def stop_reason(self) -> str | None:
        """``collapse``: the last ``patience`` checks were all not diverse (never with patience 0); ``stale``: the
        last check is ``stale_steps`` or more steps after the kept step (never with stale_steps 0); else None."""
        patience, stale = self.cfg.patience, self.cfg.stale_steps
        last = self.checks[-patience:] if patience else []
        if len(last) == patience > 0 and all(c.ratio < self.cfg.min_ratio for c in last):
            return "collapse"
        if stale and self.checks and self.checks[-1].step - self.kept_step >= stale:
            return "stale"
        return None

    def stopped(self) -> bool:
        return self.stop_reason() is not None

    def restore(self, policy: torch.nn.Module, final_step: int) -> int:
        """Load the kept weights into ``policy`` unless the final step is the kept one; returns the kept step."""
        if self.kept_step != final_step:
            policy.load_state_dict(self.kept)
        return self.kept_step

    def report(self) -> dict:
        cfg = self.cfg
        return {"by": cfg.by, "every": cfg.every, "dense_steps": cfg.dense_steps, "patience": cfg.patience,
                "min_distinct_ratio": cfg.min_ratio, "min_z": cfg.min_z, "stale_steps": cfg.stale_steps,
                "val_distinct_sft": self.sft_share, "kept_step": self.kept_step, "stopped_early": self.stopped(),
                "stop_reason": self.stop_reason(), "history": [c.to_dict() for c in self.checks],
                "attempt": len(self.past), "past_attempts": self.past}

    def state_dict(self) -> dict:
        return {"kept_step": self.kept_step, "checks": [c.to_dict() for c in self.checks], "past": self.past}

    def load_state_dict(self, state: dict, kept: dict[str, torch.Tensor]) -> None:
        self.kept_step = int(state["kept_step"])
        self.checks = [Check.from_dict(c) for c in state["checks"]]
        self.past = list(state["past"])
        self.kept = kept


def weights_version(model) -> tuple[int, ...]:
    """A key that changes whenever the model's weights may have: its identity and every parameter's version
    counter, which torch bumps on each in-place write (optimizer steps, ``load_state_dict``)."""
    return (id(model), *(p._version for p in model.parameters()))


class ValDecode:
    """The deployed decode (``greedy_negatives``) of val prompts, at most once per prompt and weights.

    A check reads the decode twice, for the diversity share and for the reward plan's prompts (mostly the same
    prompts): the second read is free. ``__call__(model, prompts)`` decodes only the prompts this model's
    current weights have not decoded yet.
    """

    def __init__(self, tokenizer, params: Params) -> None:
        self.tokenizer, self.params = tokenizer, params
        self.key: tuple[int, ...] | None = None
        self.negatives: dict[str, str] = {}
        self.decoded = 0  # prompts decoded, over all calls

    def __call__(self, model, prompts: list[str]) -> list[str]:
        key = weights_version(model)
        if key != self.key:
            self.key, self.negatives = key, {}
        missing = [p for p in dict.fromkeys(prompts) if p not in self.negatives]
        if missing:
            self.negatives |= dict(zip(missing, greedy_negatives(model, self.tokenizer, missing, self.params), strict=True))
            self.decoded += len(missing)
        return [self.negatives[p] for p in prompts]


class ValRewardGain:
    """Paired val reward gain of a policy's deployed decode over SFT's.

    Plan: ``rl.selection.reward_prompts`` val prompts (a seeded draw) x ``reward_seeds`` diffusion seeds, fixed
    for the run. SFT's images are rendered once (``bind``, after calibration); at a check, a prompt whose deployed
    negative equals SFT's has the same images, so its difference is exactly 0 and only the changed prompts are
    rendered. ``__call__(model) -> (gain, se)``: the mean and standard error over prompts of the per-prompt mean
    difference, as on the test. With an ``oracle`` (the world profile), each call also sets ``oracle_gain``: the
    same paired difference in true quality, for the curves (selection never reads it).
    """

    def __init__(self, accelerator, pipe, tokenizer, sft_model, val_prompts: list[str], params: Params,
                 decode: ValDecode | None = None, oracle=None) -> None:
        cfg = params.rl.selection
        self.accelerator, self.pipe, self.tokenizer, self.params = accelerator, pipe, tokenizer, params
        self.decode = decode or ValDecode(tokenizer, params)  # shared with the diversity share: one decode a check
        self.prompts, self.seeds = eval_plan(val_prompts, cfg.reward_prompts, cfg.seed, cfg.reward_seeds)
        self.sft_negatives = self.decode(sft_model, self.prompts)
        self.reward_fn: RewardFn | None = None
        self.oracle = oracle
        self.oracle_gain: float | None = None
        self.sft_rewards: torch.Tensor | None = None  # [prompt, seed]
        self.sft_truth: torch.Tensor | None = None  # [prompt, seed]: the oracle's true quality
        self.images_rendered = 0
        self.image_seconds = 0.0  # rendering + scoring, which the loop's anatomy counts with the training images

    def rewards(self, idx: list[int], negatives: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[len(idx), seeds] rewards of the plan's prompts ``idx`` with ``negatives`` (one per index), and their
        true quality (None without an oracle)."""
        s = len(self.seeds[0])
        flat_p = [self.prompts[i] for i in idx for _ in range(s)]
        flat_n = [n for n in negatives for _ in range(s)]
        flat_s = [x for i in idx for x in self.seeds[i]]
        start = time.perf_counter()
        scores = score_triples(self.accelerator, self.pipe, self.params.active, self.reward_fn, flat_p, flat_n, flat_s,
                               self.params.reward.image_batch_size, self.oracle)
        self.images_rendered += len(flat_p)
        self.image_seconds += time.perf_counter() - start
        truth = scores.get("oracle/true_quality")
        return (scores["reward"].double().cpu().reshape(len(idx), s),
                None if truth is None else truth.double().cpu().reshape(len(idx), s))

    def bind(self, reward_fn: RewardFn) -> None:
        """Fix the reward (the calibrated one, frozen for the run) and render SFT's plan."""
        self.reward_fn = reward_fn
        self.sft_rewards, self.sft_truth = self.rewards(list(range(len(self.prompts))), self.sft_negatives)

    def __call__(self, model) -> tuple[float, float]:
        if self.sft_rewards is None:
            raise RuntimeError("ValRewardGain: bind(reward_fn) before scoring a step")
        negatives = self.decode(model, self.prompts)
        changed = [i for i, (a, b) in enumerate(zip(negatives, self.sft_negatives, strict=True)) if a != b]
        diff = torch.zeros(len(self.prompts), dtype=torch.float64)
        truth = torch.zeros(len(self.prompts), dtype=torch.float64)
        if changed:
            rewards, true_quality = self.rewards(changed, [negatives[i] for i in changed])
            diff[changed] = rewards.mean(1) - self.sft_rewards[changed].mean(1)
            if true_quality is not None:
                truth[changed] = true_quality.mean(1) - self.sft_truth[changed].mean(1)
        self.oracle_gain = None if self.oracle is None else truth.mean().item()
        return mean_and_se(diff)


def checkpoint_selector(params: Params, tokenizer, sft_policy, val_prompts: list[str], accelerator=None,
                        pipe=None, oracle=None) -> CheckpointSelector | None:
    """The run's selector over the val prompts (None with ``rl.selection.by: last_step``): the diversity share of
    ``diversity_prompts`` of them and the val reward gain (on ``pipe``), sharing one decode per check."""
    cfg = params.rl.selection
    if cfg.by == "last_step":
        return None
    prompts, _ = eval_plan(val_prompts, cfg.diversity_prompts, cfg.seed)
    decode = ValDecode(tokenizer, params)

    def measure(model) -> float:
        return distinct_share(decode(model, prompts))

    gain = ValRewardGain(accelerator, pipe, tokenizer, sft_policy, val_prompts, params, decode, oracle)
    return CheckpointSelector(cfg, measure, gain, sft_policy)
