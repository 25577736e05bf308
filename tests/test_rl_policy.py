"""Sampling and decoder log-probs of the encoder-decoder policy on a tiny random T5."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from negopt.policy.sampling import (
    encode_sources,
    generated_mask,
    sample_rollout,
    sequence_logprobs,
    token_logprobs,
)
from negopt.rl.loss import rloo_loss

WORDS = "negative prompt : a cat dog blurry ugly lowres bad hands sky red".split()


@pytest.fixture(scope="module")
def policy():
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(vocab), d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = T5ForConditionalGeneration(cfg).eval()
    return model, tokenizer


def test_generated_mask_by_hand():
    tokens = torch.tensor([[5, 1, 0, 0], [5, 6, 7, 8], [0, 1, 0, 1]])
    # keep up to and including the first eos (1); a pad before eos (row 3) still counts
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float)
    assert torch.equal(generated_mask(tokens, eos_token_id=1), expected)


def test_sample_rollout_shapes_seed_and_rng_isolation(policy):
    model, tokenizer = policy
    sources = ["negative prompt : a cat", "negative prompt : red sky dog"]
    state = torch.get_rng_state()
    a = sample_rollout(model, tokenizer, sources, k=3, temperature=1.0, top_p=1.0, max_new_tokens=6,
                       max_source_length=16, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    b = sample_rollout(model, tokenizer, sources, k=3, temperature=1.0, top_p=1.0, max_new_tokens=6,
                       max_source_length=16, seed=7)
    c = sample_rollout(model, tokenizer, sources, k=3, temperature=1.0, top_p=1.0, max_new_tokens=6,
                       max_source_length=16, seed=8)
    assert torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.sequences, c.sequences)
    scored = sample_rollout(model, tokenizer, sources, k=3, temperature=1.0, top_p=1.0, max_new_tokens=6,
                            max_source_length=16, seed=7, scored=True)
    assert torch.equal(scored.sequences, a.sequences)  # keeping the logits does not change the samples
    assert a.logp is None and a.entropy is None and scored.logp.shape == scored.entropy.shape == (6,)
    assert a.input_ids.shape[0] == 6 and len(a.negatives) == 6
    # prompt-major: rows 0..2 are prompt 0, rows 3..5 prompt 1
    assert torch.equal(a.input_ids[0], a.input_ids[2]) and not torch.equal(a.input_ids[2], a.input_ids[3])
    assert a.gen_mask.shape == (6, a.sequences.shape[1] - 1)
    assert (a.sequences[:, 0] == 0).all()  # decoder_start = pad


def _incremental_logprob(model, input_ids, attention_mask, seq, mask, temperature):
    """Reference: one decoder call per position, reading only the last logits."""
    total = 0.0
    for t in range(seq.shape[0] - 1):
        if mask[t] == 0:
            continue
        out = model(input_ids=input_ids[None], attention_mask=attention_mask[None], decoder_input_ids=seq[None, : t + 1])
        total += torch.log_softmax(out.logits[0, -1] / temperature, -1)[seq[t + 1]].item()
    return total


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sequence_logprobs_match_incremental_decoding(policy, temperature):
    model, tokenizer = policy
    ro = sample_rollout(model, tokenizer, ["negative prompt : a cat", "negative prompt : dog"], k=2,
                        temperature=temperature, top_p=1.0, max_new_tokens=5, max_source_length=16, seed=3,
                        scored=True)
    with torch.no_grad():
        logp, entropy = sequence_logprobs(model, ro, temperature)
    for i in range(4):
        ref = _incremental_logprob(model, ro.input_ids[i], ro.attention_mask[i], ro.sequences[i], ro.gen_mask[i], temperature)
        assert logp[i].item() == pytest.approx(ref, abs=1e-4)
    # the rollout scored its own samples in the sampling pass: the same log-probs and entropies
    assert torch.allclose(ro.logp, logp, atol=1e-5) and torch.allclose(ro.entropy, entropy, atol=1e-5)
    # entropy of a distribution over V tokens lies in (0, log V]
    assert ((entropy > 0) & (entropy <= torch.log(torch.tensor(float(model.config.vocab_size))) + 1e-5)).all()


def test_masked_positions_contribute_nothing(policy):
    model, tokenizer = policy
    ids, am = encode_sources(tokenizer, ["negative prompt : a cat"], 16)
    seq = torch.tensor([[0, 5, 1, 7]])  # a token after eos must not count
    mask = generated_mask(seq[:, 1:], 1)
    with torch.no_grad():
        logp, ent = token_logprobs(model, ids, am, seq, mask)
    assert logp[0, 2].item() == 0.0 and ent[0, 2].item() == 0.0 and logp[0, :2].lt(0).all()


def test_one_rloo_step_raises_the_favoured_sample(policy):
    model, tokenizer = policy
    model = T5ForConditionalGeneration(model.config)
    model.load_state_dict(policy[0].state_dict())
    model.eval()
    ro = sample_rollout(model, tokenizer, ["negative prompt : sky"], k=2, temperature=1.0, top_p=1.0,
                        max_new_tokens=5, max_source_length=16, seed=11)
    assert not torch.equal(ro.sequences[0], ro.sequences[1])  # seed 11 draws two different samples
    before, _ = sequence_logprobs(model, ro)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    logp, _ = sequence_logprobs(model, ro)
    rloo_loss(logp, torch.tensor([1.0, -1.0])).backward()
    opt.step()
    with torch.no_grad():
        after, _ = sequence_logprobs(model, ro)
    assert after[0] > before[0] and after[1] < before[1]
