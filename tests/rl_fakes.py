"""A fake diffusion pipeline and a fake scorer whose numbers are known by hand, for the RL wiring tests.

``fake_generate`` replaces ``negopt.images.render.generate_images``: each image encodes the index of its
(prompt, negative, seed) triple in two pixels, so the fake scorer reads back exactly which prompt,
negative and seed made it. The terms are then known functions of those::

    aesthetic = len(negative) + (seed % 5)          (a negative and a seed effect)
    clip      = 10 * [prompt given == prompt drawn] + len(negative) % 3
    p(y|x)    = (q, 1 - q),  q = 0.1 + 0.4 * (seed % 1000) / 1000 + 0.08 * (len(negative) % 6);   fidelity = KL(p(y|x) || marginal)

Weights and temperatures are never 1, so a loop that ignores them gives other numbers. The policy is a
real tiny T5 (sampling and log-probs run for real); the reference is a perturbed copy so the KL is not 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import yaml
from helpers import RL_PROMPTS as PROMPTS
from helpers import deep_merge

from negopt.core.params import validate_params
from negopt.images.scorers import inception_kl
from negopt.reward.terms import default_weights, scored_weights
from negopt.rl.loop import Components

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"aesthetic": 2.0, "clip": 0.5, "fidelity": 3.0}
TERMS = tuple(scored_weights(default_weights()))  # the terms RL scores at the default weights


class FakeImages:
    """Stands in for ``generate_images``; records every call's (prompt, negative, seed) triples."""

    def __init__(self) -> None:
        self.triples: list[tuple[str, str, int]] = []
        self.calls: list[list[tuple[str, str, int]]] = []
        self.steps: list[int | None] = []  # each call's denoising steps (the profile it was given)

    def __call__(self, pipe, prompts, negatives, seeds, profile, batch_size=32, progress=False):
        assert len(prompts) == len(negatives) == len(seeds)
        call = list(zip(prompts, negatives, [int(s) for s in seeds], strict=True))
        self.calls.append(call)
        self.steps.append(None if profile is None else profile.num_inference_steps)
        images = torch.zeros(len(call), 3, 4, 4, dtype=torch.uint8)
        for j, triple in enumerate(call):
            idx = len(self.triples)
            self.triples.append(triple)
            images[j, 0, 0, 0], images[j, 1, 0, 0] = idx % 256, idx // 256
        return images


def aesthetic_of(neg: str, seed: int) -> float:
    return len(neg) + seed % 5


def clip_of(prompt_given: str, prompt_drawn: str, neg: str) -> float:
    return 10.0 * (prompt_given == prompt_drawn) + len(neg) % 3


def probs_of(neg: str, seed: int) -> torch.Tensor:
    q = 0.1 + 0.4 * (seed % 1000) / 1000 + 0.08 * (len(neg) % 6)
    return torch.tensor([q, 1 - q])


class FakeScorer:
    """Reads the triple back from the image; see the module docstring for the formulas."""

    def __init__(self, fake: FakeImages) -> None:
        self.fake = fake

    def triple(self, img: torch.Tensor) -> tuple[str, str, int]:
        return self.fake.triples[int(img[0, 0, 0]) + 256 * int(img[1, 0, 0])]

    def inception_probs(self, images):
        return torch.stack([probs_of(*self.triple(x)[1:]) for x in images])

    def reward_terms(self, images, prompts, marginal=None):
        assert len(images) == len(prompts)
        ts = [self.triple(x) for x in images]
        probs = self.inception_probs(images)
        q = probs.mean(0) if marginal is None else marginal
        return {"aesthetic": torch.tensor([aesthetic_of(n, s) for _, n, s in ts]),
                "clip": torch.tensor([clip_of(p, pd, n) for p, (pd, n, _) in zip(prompts, ts, strict=True)]),
                "fidelity": inception_kl(probs, q)}


def hand_terms(triples, marginal: torch.Tensor) -> dict[str, torch.Tensor]:
    """The fake scorer's terms computed straight from the triples (prompt given = prompt drawn)."""
    probs = torch.stack([probs_of(n, s) for _, n, s in triples])
    return {"aesthetic": torch.tensor([aesthetic_of(n, s) for _, n, s in triples]),
            "clip": torch.tensor([clip_of(p, p, n) for p, n, _ in triples]),
            "fidelity": inception_kl(probs, marginal)}


def hand_z(raw: dict[str, torch.Tensor], calib: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """(x - calibration mean) / pooled within-group std of the calibration terms (groups of k)."""
    out = {}
    for t in TERMS:
        c = calib[t].double().reshape(-1, k)
        within = math.sqrt(((c - c.mean(1, keepdim=True)) ** 2).sum().item() / (c.shape[0] * (k - 1)))
        out[t] = (raw[t].double() - c.mean().item()) / within
    return out


def make_params(tmp: Path, overlay: dict | None = None, **rl):
    """Small settings with weights and a temperature that are not 1; ``rl`` keys override the rl section,
    ``overlay`` any section (nested, merged)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["paths"].update(checkpoints=str(tmp / "checkpoints"))
    raw["base"].update(device="cpu", seed=3)
    deep_merge(raw, {"sampling": {"max_new_tokens": 5, "temperature": 0.7},
                     "reward": {"weights": WEIGHTS, "calibration": {"prompts": 4, "samples_per_prompt": 3},
                                "image_batch_size": 4},
                     "rl": {"steps": 2, "batch_prompts": 3, "k": 3, "checkpoint_every": 10, "learning_rate": 1e-2,
                            "kl_coef": 0.7, "test": {"prompts": 4, "seeds_per_prompt": 3}}})
    deep_merge(raw, {"rl": rl} | (overlay or {}))
    return validate_params(raw)


def make_components(t5_dir, fake: FakeImages) -> Components:
    from negopt.models.loader import load_policy

    policy, tok = load_policy(t5_dir, torch.device("cpu"))
    ref, _ = load_policy(t5_dir, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the frozen reference differs from the policy, so the KL is not 0 at step 0
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return Components(policy=policy, ref=ref, tokenizer=tok, pipe=None, scorer=FakeScorer(fake), sft_dir=str(t5_dir))


class Named(torch.nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


def fake_decode(seen: list):
    """Stands in for ``decode_negatives``: SFT answers 'x' * (i + 1), RL 'y' * (2i + 3) for prompt i."""

    def decode(model, tokenizer, prompts, decode, task_prefix, max_source_length, **kw):
        seen.append((model.name, decode, task_prefix, max_source_length))
        if model.name == "sft":
            return ["x" * (PROMPTS.index(p) + 1) for p in prompts]
        return ["y" * (2 * PROMPTS.index(p) + 3) for p in prompts]

    return decode


