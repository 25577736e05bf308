"""The encoder-decoder policy: sample k negatives per prompt, score their tokens with the decoder.

For a T5 policy the prompt is the *encoder* input and the negative prompt is the *decoder* output, so
``log pi(y | x) = sum_t log p(y_t | y_<t, x)`` over the generated decoder tokens only. Sequences come
back from ``generate`` as ``[decoder_start, y_1, ..., y_T]`` with pad after ``eos``; the mask keeps
``y_1`` up to and including the first ``eos`` (a sampled pad token before ``eos`` still counts).

The rollout scores its own samples: ``generate`` returns each step's logits, so ``log pi_old(y | x)``
and the entropy come from the sampling pass itself, not from a second, teacher-forced one (an RL
step's third decoder pass; ``bench/bench_rl_step.py`` in bench/RESULTS.md).
The two agree to float rounding (``tests/test_rl_policy.py``): the cached decoder computes the same sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from negopt.policy.nucleus import nucleus_kwargs


@dataclass
class Rollout:
    """One step's samples, prompt-major: rows ``i*k .. i*k+k-1`` belong to prompt ``i``."""

    input_ids: torch.Tensor  # [N, S] encoder input (prompt with task prefix), repeated k times
    attention_mask: torch.Tensor  # [N, S]
    sequences: torch.Tensor  # [N, 1 + T] decoder_start followed by the generated tokens
    gen_mask: torch.Tensor  # [N, T] 1 for generated tokens up to and including the first eos
    negatives: list[str]  # [N] decoded negative prompts
    logp: torch.Tensor | None = None  # [N] log pi(y|x) under the sampling weights, at the sampling temperature
    entropy: torch.Tensor | None = None  # [N] mean per-token entropy there


def encode_sources(tokenizer, sources: list[str], max_source_length: int, device: torch.device | None = None):
    enc = tokenizer(sources, max_length=max_source_length, truncation=True, padding=True, return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def generated_mask(tokens: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """[N, T] generated tokens -> [N, T] float mask: 1 up to and including the first eos, 0 after.

    ``is_eos.cumsum`` counts eos tokens seen so far; a position is kept while no eos came *before* it.
    """
    is_eos = (tokens == eos_token_id).long()
    eos_before = is_eos.cumsum(dim=1) - is_eos  # [N, T] number of eos strictly before position t
    return (eos_before == 0).float()


@torch.no_grad()
def sample_rollout(
    model,
    tokenizer,
    sources: list[str],
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    max_source_length: int,
    seed: int,
    scored: bool = False,
) -> Rollout:
    """Sample ``k`` negatives per source with temperature / nucleus sampling (no top-k cut).

    ``scored``: keep each step's logits and fill ``logp`` / ``entropy`` from them (the RL step's old
    log-probs). Off for callers that only want the samples: the logits are [N, T, vocab] floats
    (at t5-small's 32k vocabulary, 4 GB for 1,024 rows of 32 tokens).

    The sampling RNG is forked and seeded with ``seed`` so a step's samples depend only on
    (weights, sources, seed): every process draws the same samples and a resumed run repeats them.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask = encode_sources(tokenizer, sources, max_source_length, device)
    input_ids = input_ids.repeat_interleave(k, dim=0)  # [N, S] prompt-major
    attention_mask = attention_mask.repeat_interleave(k, dim=0)
    was_training = model.training
    model.eval()  # no dropout while sampling: the behaviour policy is the eval-mode policy
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                             return_dict_in_generate=True, output_logits=scored, **nucleus_kwargs(temperature, top_p))
    model.train(was_training)
    sequences = out.sequences  # [N, 1 + T]
    gen = sequences[:, 1:]
    mask = generated_mask(gen, model.config.eos_token_id)
    negatives = [n.strip() for n in tokenizer.batch_decode(gen, skip_special_tokens=True)]
    ro = Rollout(input_ids, attention_mask, sequences, mask, negatives)
    if scored:
        ro.logp, ro.entropy = per_sequence(*masked_logprobs(torch.stack(out.logits, dim=1), gen, mask, temperature), mask)
    return ro


def masked_logprobs(logits: torch.Tensor, tokens: torch.Tensor, gen_mask: torch.Tensor,
                    temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, T, V] logits predicting [N, T] tokens -> per-token log-probs and entropies at ``temperature``,
    zero where ``gen_mask`` is 0."""
    logp_all = torch.log_softmax(logits.float() / temperature, dim=-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [N, T]
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # [N, T]
    return logp * gen_mask, entropy * gen_mask


def per_sequence(logp: torch.Tensor, entropy: torch.Tensor, gen_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token [N, T] -> ``log pi(y|x)`` summed [N] and mean per-token entropy [N]."""
    return logp.sum(dim=1), entropy.sum(dim=1) / gen_mask.sum(dim=1).clamp(min=1)


def token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sequences: torch.Tensor,
    gen_mask: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the generated tokens and per-token entropy, both masked.

    Logits are divided by the sampling temperature so the log-probs are those of the distribution
    the samples came from (trl does the same). Top-p truncation is ignored, as in trl.
    Returns (logp [N, T], entropy [N, T]), zero where ``gen_mask`` is 0.
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=sequences[:, :-1])
    return masked_logprobs(out.logits, sequences[:, 1:], gen_mask, temperature)  # position t predicts t + 1


def sequence_logprobs(model, rollout: Rollout, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``log pi(y|x)`` summed over generated tokens [N] and mean per-token entropy [N]."""
    logp, entropy = token_logprobs(
        model, rollout.input_ids, rollout.attention_mask, rollout.sequences, rollout.gen_mask, temperature
    )
    return per_sequence(logp, entropy, rollout.gen_mask)
