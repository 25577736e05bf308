"""NucleusWarper: the nucleus by hand, and the same samples as transformers' own warpers."""

import math

import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from negopt.policy.nucleus import NucleusWarper, nucleus_kwargs, sorted_values

PROBS = [0.5, 0.3, 0.15, 0.05]  # ascending cumulative mass: 0.05, 0.20, 0.50, 1.00


def kept(temperature: float, top_p: float, probs=PROBS) -> set[int]:
    scores = torch.tensor([[math.log(p) for p in probs]])
    out = NucleusWarper(temperature, top_p)(torch.zeros(1, 1, dtype=torch.long), scores)
    return {i for i, s in enumerate(out[0].tolist()) if s != -math.inf}


@pytest.mark.parametrize(("top_p", "expected"), [
    (0.9, {0, 1, 2}),      # 1 - p = 0.1: only the 0.05 token's mass lies below it
    (0.75, {0, 1}),        # 0.25: 0.05 and 0.05 + 0.15 do
    (0.4, {0}),            # 0.6: 0.05, 0.20, 0.50 do
    (0.01, {0}),           # the top token is never cut
    (1.0, {0, 1, 2, 3}),   # off
])
def test_the_nucleus_by_hand(top_p, expected):
    assert kept(1.0, top_p) == expected


def test_temperature_comes_before_the_nucleus():
    # at T = 2 the probabilities go as sqrt(p): 0.379, 0.294, 0.208, 0.120; top-p 0.75 cuts the 0.120 only
    assert kept(2.0, 0.75) == {0, 1, 2}
    scores = torch.tensor([[math.log(p) for p in PROBS]])
    out = NucleusWarper(2.0, 0.75)(None, scores)
    assert out[0, :3].tolist() == (scores[0, :3] / 2.0).tolist()  # kept tokens carry logits / T, exactly


def test_mass_exactly_at_the_edge_is_cut_as_transformers_cuts_it():
    # ascending 0.125, 0.375, 0.5: cumulative 0.125, 0.5 (exact in float32), 1.0; top-p 0.5 cuts mass <= 0.5
    probs = [0.5, 0.375, 0.125]
    assert kept(1.0, 0.5, probs) == {0}
    scores = torch.tensor([[math.log(p) for p in probs]])
    assert torch.equal(NucleusWarper(1.0, 0.5)(None, scores), TopPLogitsWarper(0.5)(None, scores.clone()))


def test_a_tie_at_the_edge_keeps_both_tokens():
    # ascending 0.3, 0.3, 0.4: the first position's mass 0.3 <= 0.5 is cut by transformers (one of the two
    # tied tokens, whichever its sort puts first); one threshold per row keeps both
    assert kept(1.0, 0.5, [0.3, 0.3, 0.4]) == {0, 1, 2}


def test_each_row_has_its_own_nucleus():
    scores = torch.log(torch.tensor([PROBS, PROBS[::-1], [0.25] * 4]))
    out = NucleusWarper(1.0, 0.75)(None, scores)
    assert torch.isfinite(out).tolist() == [[True, True, False, False], [False, False, True, True], [True] * 4]


def test_bad_settings_name_themselves():
    with pytest.raises(ValueError, match="top_p"):
        NucleusWarper(1.0, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        NucleusWarper(0.0, 0.9)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 0.95), (0.7, 0.9), (1.3, 0.5)])
def test_the_mask_equals_transformers_warpers(temperature, top_p):
    scores = torch.randn(64, 1000, generator=torch.Generator().manual_seed(0)) * 3
    theirs = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))
    ours = NucleusWarper(temperature, top_p)(None, scores.clone())
    assert torch.equal(ours, theirs)
    assert 1 < torch.isfinite(ours).sum(-1).float().mean() < 1000  # the cut does something


def test_sorted_values_match_torch_sort():
    x = torch.randn(8, 300, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sorted_values(x), torch.sort(x).values)
    assert torch.equal(sorted_values(x.bfloat16()), torch.sort(x.bfloat16()).values)  # numpy has no bf16


@pytest.fixture(scope="module")
def peaky_t5():
    """A random T5 whose next-token distributions are peaked (a scaled head), so the nucleus cuts tokens."""
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=300, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # head scale 0.3: mean entropy ~4 nats of log(300) = 5.7, a few dozen tokens in play
        model.lm_head.weight.copy_(torch.randn(300, 32, generator=torch.Generator().manual_seed(3)) * 0.3)
    ids = torch.randint(2, 300, (12, 9), generator=torch.Generator().manual_seed(2))
    return model, ids, torch.ones_like(ids)


@pytest.mark.parametrize(("temperature", "top_p", "penalty"), [(1.0, 0.95, 1.0), (0.7, 0.8, 1.0), (1.0, 0.9, 1.3)])
def test_generate_samples_the_same_tokens_as_transformers_warpers(peaky_t5, temperature, top_p, penalty):
    model, ids, am = peaky_t5

    def ours(seed, p):
        torch.manual_seed(seed)
        return model.generate(input_ids=ids, attention_mask=am, repetition_penalty=penalty, max_new_tokens=12,
                              **nucleus_kwargs(temperature, p))

    for seed in range(3):
        torch.manual_seed(seed)
        theirs = model.generate(input_ids=ids, attention_mask=am, do_sample=True, temperature=temperature,
                                top_p=top_p, top_k=0, repetition_penalty=penalty, max_new_tokens=12)
        assert torch.equal(ours(seed, top_p), theirs)
        assert not torch.equal(ours(seed, 1.0), theirs)  # the nucleus changes the samples: the equality means something
