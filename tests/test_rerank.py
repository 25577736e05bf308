"""The retrieve-and-rerank decode: its ROUGE-L, features, scores and fit by hand, every consumer applying it,
and on the shared real pairs a fitted rerank that beats copying the nearest prompt's negative."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from helpers import TRAIN_N, TRAIN_P
from rouge_score import rouge_scorer

from negopt.policy.decode import CONFIG, NegativePromptGenerator, Retrieval, saved_retrieval
from negopt.policy.rerank import (
    ALWAYS_OWN,
    RerankWeights,
    candidates,
    choose,
    fit,
    rouge_l_tokens,
    rouge_tokens,
    scores,
)
from negopt.policy.retrieval import RetrievalIndex


def _w(**kw) -> RerankWeights:
    base = dict(neighbours=2, logprob=0.0, agreement=0.0, similarity=0.0, own=0.0, sharpness=0.0)
    return RerankWeights(**(base | kw))


def test_rouge_l_tokens_is_rouge_scores_rouge_l():
    """By hand: "a b c d" vs "a c d e" share "a c d" (LCS 3): F = 2 x 3 / (4 + 4) = 0.75; and rouge_score agrees
    on random texts with repeats (the bit-parallel LCS must count a repeated token once per match)."""
    assert rouge_l_tokens(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 0.75
    assert rouge_l_tokens([], ["a"]) == 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rng = random.Random(0)
    words = ["low", "quality", "worst", "blurry", "hands", "bad", "(worst", "quality:1.4)", "ugly", "watermarks"]
    for _ in range(200):
        a = ", ".join(rng.choices(words, k=rng.randint(0, 40)))
        b = ", ".join(rng.choices(words, k=rng.randint(0, 40)))
        ta, tb = rouge_tokens([a, b])
        assert rouge_l_tokens(ta, tb) == pytest.approx(scorer.score(a, b)["rougeL"].fmeasure, abs=1e-12)


def test_candidates_put_the_models_own_first_and_drop_repeated_neighbours():
    c = candidates([["ugly"]], [["blurry, ugly", "ugly", "blurry, ugly"]], np.array([[0.9, 0.5, 0.4]]))
    assert c.texts == [["ugly", "blurry, ugly"]]  # "ugly" is the model's own; the third repeats the first
    assert c.own.tolist() == [[True, False]] and c.valid.tolist() == [[True, True]]
    assert c.sim.tolist() == [[0.0, 0.9]]
    # agreement with each neighbour's negative (repeats kept: they are votes): ugly vs "blurry, ugly" = 2x1/3
    np.testing.assert_allclose(c.agree[0], [[2 / 3, 1.0, 2 / 3], [1.0, 2 / 3, 1.0]])


def test_scores_by_hand():
    """own "ugly" vs neighbour "blurry, ugly" (cosines 0.9, 0.5, 0.4, sharpness 1): consensus of the own
    = (0.9 x 2/3 + 0.5 x 1 + 0.4 x 2/3) / 1.8 = 0.7593, of the neighbour (0.9 + 0.5 x 2/3 + 0.4) / 1.8 = 0.9074."""
    c = candidates([["ugly"]], [["blurry, ugly", "ugly", "blurry, ugly"]], np.array([[0.9, 0.5, 0.4]]))
    c.logprob[:] = [[-1.0, -3.0]]
    w = _w(logprob=0.5, agreement=2.0, similarity=1.0, own=0.3, sharpness=1.0)
    s = scores(c, w)
    own = 0.5 * -1.0 + 2.0 * (0.9 * 2 / 3 + 0.5 + 0.4 * 2 / 3) / 1.8 + 0.3
    theirs = 0.5 * -3.0 + 2.0 * (0.9 + 0.5 * 2 / 3 + 0.4) / 1.8 + 1.0 * 0.9
    np.testing.assert_allclose(s, [[own, theirs]])
    assert choose(c, w) == [["ugly"]]  # 1.3185 vs 1.2148
    assert choose(c, _w(agreement=2.0, similarity=1.0, own=0.3, sharpness=1.0)) == [["blurry, ugly"]]
    assert choose(c, _w(own=ALWAYS_OWN, similarity=4.0)) == [["ugly"]]
    # sharpness 0: every neighbour weighs alike, whatever its cosine: consensus of the own (2/3 + 1 + 2/3) / 3
    np.testing.assert_allclose(scores(c, _w(agreement=1.0))[0, 0], (2 / 3 + 1 + 2 / 3) / 3)


def test_choose_returns_num_per_prompt_even_when_the_models_repeat():
    c = candidates([["a", "a"], ["b", "c"]], [["x"], ["y"]], np.array([[0.2], [0.9]]))
    assert choose(c, _w(similarity=1.0, own=-0.5), num=2) == [["x", "a"], ["y", "b"]]
    assert choose(c, _w(own=ALWAYS_OWN), num=2) == [["a", "a"], ["b", "c"]]


def _table(n: int, own_rouge: float, theirs_rouge: list[float]):
    """n prompts: the model's own negative "m" and neighbours "x" (cosine 0.9), "y" (0.1), with given ROUGE-L."""
    c = candidates([["m"]] * n, [["x", "y"]] * n, np.tile([0.9, 0.1], (n, 1)))
    rng = np.random.default_rng(0)
    rouge = np.array([[own_rouge, *theirs_rouge]] * n) + rng.normal(0, 0.05, (n, 3))
    return c, rouge


def test_fit_keeps_weights_that_beat_the_model_and_only_those():
    c, rouge = _table(40, 0.2, [0.6, 0.1])  # the nearest neighbour's negative is far better: rerank on
    w, report = fit(c, rouge, 2, min_z=3.0)
    assert report["rerank"] is True and report["rerank_val_gain_z"] > 3
    assert choose(c, w) == [["x"]] * 40
    assert report["rerank_val_rougeL"] == pytest.approx(rouge[:, 1].mean())
    assert report["rerank_val_rougeL_own"] == pytest.approx(rouge[:, 0].mean())
    assert fit(c, rouge, 2, min_z=1e6)[0] is None  # the gate: not significant enough, the plain decode stays
    c, rouge = _table(40, 0.5, [0.3, 0.1])  # the model wins: always-own fits best, so no rerank
    w, report = fit(c, rouge, 2, min_z=0.0)
    assert w is None and report["rerank"] is False and report["rerank_val_gain_z"] == 0.0


def test_fit_follows_the_models_log_prob_to_the_far_neighbour_when_it_is_the_better_one():
    c, rouge = _table(40, 0.2, [0.1, 0.6])  # the far one (cosine 0.1) is right: similarity must not win
    assert fit(c, rouge, 2, min_z=3.0)[0] is None  # no feature tells y apart: the model's own stays
    c.logprob[:] = [-2.0, -2.0, -0.5]  # the model prefers y
    w, _ = fit(c, rouge, 2, min_z=3.0)
    assert w.logprob > 0 and choose(c, w) == [["y"]] * 40


def test_table_scores_each_candidate_by_its_mean_token_log_prob(tiny_zoo):
    """By hand: a single (source, target)'s mean token log-prob is minus the model's own teacher-forced loss."""
    from negopt.models.t5 import load_policy
    from negopt.policy.rerank import table

    model, tok = load_policy(str(tiny_zoo / "t5"))
    index = RetrievalIndex(TRAIN_P, TRAIN_N)
    c = table(model, tok, ["a city street"], ["negative prompt: a city street"], [["blurry, ugly"]], index, 2, 64, 16)
    assert c.texts == [["blurry, ugly", "lowres", "noise"]]
    for j, text in enumerate(c.texts[0]):
        enc = tok(["negative prompt: a city street"], return_tensors="pt")
        labels = tok(text_target=[text], return_tensors="pt")["input_ids"]
        assert c.logprob[0, j] == pytest.approx(-model(**enc, labels=labels).loss.item(), abs=1e-5)
    assert not table(model, tok, ["a city street"], ["x"], [["blurry"]], index, 2, 64, 16, logprob=False).logprob.any()


@pytest.fixture(scope="module")
def reranked(tmp_path_factory, tiny_zoo, tiny_params):
    """A project whose models/sft and models/rl carry a rerank that always answers the nearest neighbour's negative."""
    import yaml

    from negopt.core.params import load_params

    root = tmp_path_factory.mktemp("rerank")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params.model_dump()))
    params = load_params(root / "params.yaml")
    gen = NegativePromptGenerator.from_params(tiny_zoo / "t5", params)
    gen.retrieval = Retrieval(RetrievalIndex(TRAIN_P, TRAIN_N), 0, _w(similarity=1.0, own=-1e9, logprob=0.1))
    for name in ("sft", "rl"):
        gen.save_pretrained(root / "models" / name)
    return root, params


def test_every_consumer_applies_the_saved_rerank(reranked, monkeypatch):
    """The rerank travels in negopt.json (no pickle), and sft scoring / the API, the rl test, generate and
    `negopt suggest` all answer with it: here the nearest training prompt's negative, by hand."""
    from typer.testing import CliRunner

    from negopt.cli import app
    from negopt.compare.methods import MethodInputs, negatives_of
    from negopt.rl.heldout import greedy_negatives

    root, params = reranked
    monkeypatch.chdir(root)
    prompts = ["a city street at dusk", "a cat oil painting, detailed"]
    expected = ["lowres", "ugly hands"]
    cfg = json.loads((root / "models" / "sft" / CONFIG).read_text())
    assert cfg["retrieval_k"] == 0 and cfg["rerank"]["similarity"] == 1.0 and cfg["rerank"]["neighbours"] == 2
    saved = saved_retrieval("models/sft")
    assert saved.k == 0 and saved.rerank == _w(similarity=1.0, own=-1e9, logprob=0.1)
    gen = NegativePromptGenerator.from_pretrained("models/sft")
    assert gen(prompts) == expected == RetrievalIndex(TRAIN_P, TRAIN_N).predict(prompts)
    assert gen.sources(prompts) == ["negative prompt: a city street at dusk", "negative prompt: a cat oil painting, detailed"]
    assert greedy_negatives(gen.model, gen.tokenizer, prompts, params) == expected
    paths = params.paths.model_copy(update={"rl": "models/rl"})
    inputs = MethodInputs(params.model_copy(update={"paths": paths}), prompts, ["", ""], [[0], [0]])
    assert negatives_of("rl", inputs) == expected
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")
    result = CliRunner().invoke(app, ["suggest", "--file", "prompts.txt", "--model", "models/rl"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == expected
    plain = NegativePromptGenerator(gen.model, gen.tokenizer, gen.decode, gen.task_prefix, gen.max_source_length)
    assert plain(prompts) != expected  # without the rerank the random tiny T5 answers its own


def test_fitted_rerank_beats_copying_the_nearest_negative_on_real_pairs(shared_pairs, tmp_path, tiny_zoo, tiny_params):
    """The shared real pairs, the project's split: the rerank fitted on val (here over a random tiny T5, so the
    gain is the neighbours' consensus) scores a higher test ROUGE-L than the nearest prompt's negative."""
    import pandas as pd

    from negopt.core.params import CleanRules, Data, Split
    from negopt.core.stats import paired_gain
    from negopt.data.clean import run_clean
    from negopt.data.sources import load_source
    from negopt.models.t5 import load_policy
    from negopt.policy.sft import fit_rerank, rouge_rows

    df, _ = load_source(Data(source=f"file:{shared_pairs}"))
    df.to_parquet(tmp_path / "pairs.parquet")
    run_clean(tmp_path / "pairs.parquet", tmp_path / "clean", CleanRules(), Split())
    train, val, test = (pd.read_parquet(tmp_path / "clean" / f"{n}.parquet") for n in ("train", "val", "test"))
    index = RetrievalIndex(train.prompt.tolist(), train.negative_prompt.tolist())
    model, tokenizer = load_policy(str(tiny_zoo / "t5"))
    fitted, report = fit_rerank(model, tokenizer, val.prompt.tolist(), val.negative_prompt.tolist(),
                                Retrieval(index, 0), tiny_params.sft, tiny_params.decode)
    assert report["rerank"] is True and report["rerank_val_gain_z"] > 3 and fitted.rerank is not None
    gen = NegativePromptGenerator(model, tokenizer, tiny_params.decode, retrieval=fitted)
    refs = test.negative_prompt.tolist()
    ours = rouge_rows(gen(test.prompt.tolist()), refs)["rougeL"]
    nearest = rouge_rows(index.predict(test.prompt.tolist()), refs)["rougeL"]
    gain, se = paired_gain(ours, nearest)
    assert gain > 0 and gain > se, (gain, se)


def test_mean_logprobs_is_each_pair_scored_alone(tiny_zoo):
    """Batched, with a batch's repeated sources encoded once, each row is still its own pair's mean token
    log-prob: minus the model's cross-entropy on that pair alone (EOS included)."""
    import torch

    from negopt.models.t5 import load_policy
    from negopt.policy.rerank import mean_logprobs

    model, tok = load_policy(str(tiny_zoo / "t5"), torch.device("cpu"))
    sources = ["a castle at dusk", "portrait of a woman, studio light", "a castle at dusk", "a red car",
               "portrait of a woman, studio light", "portrait of a woman, studio light"]
    targets = ["blurry", "bad anatomy, extra fingers, lowres", "blurry, lowres", "lowres, jpeg artifacts", "watermark",
               "text"]
    got = mean_logprobs(model, tok, sources, targets, 32, 32, batch_size=4)  # batches of 4 (3 sources) and 2 (1)
    with torch.no_grad():
        want = [-model(**tok([s], return_tensors="pt"), labels=tok(text_target=[t], return_tensors="pt")["input_ids"]).loss.item()
                for s, t in zip(sources, targets, strict=True)]
    assert got.shape == (6,)
    assert np.allclose(got, want, atol=1e-5)
    assert len(set(np.round(got, 4))) == 6  # distinct pairs, distinct values: a row mix-up would show
