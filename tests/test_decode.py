"""One deployed decode: its generate() settings, and every consumer returning the same negative."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch
from helpers import TRAIN_N, TRAIN_P
from typer.testing import CliRunner

from negopt.core.params import Decode
from negopt.policy.decode import (
    CONFIG,
    NegativePromptGenerator,
    Retrieval,
    decode_negatives,
    format_source,
    generate_kwargs,
    saved_retrieval,
)
from negopt.policy.nucleus import NucleusWarper
from negopt.policy.retrieval import RetrievalIndex


class _Tok:
    def __init__(self, seen):
        self.seen = seen

    def __call__(self, texts, **kw):
        self.seen.append(("encode", texts, kw["max_length"]))
        return SimpleNamespace(to=lambda device: {"input_ids": torch.zeros(len(texts), 1, dtype=torch.long)})

    def batch_decode(self, ids, skip_special_tokens):
        return [f" n{i} " for i in range(len(ids))]


class _Model:
    training, device = False, torch.device("cpu")

    def __init__(self, seen):
        self.seen = seen

    def eval(self):
        return self

    def train(self, mode):
        return self

    def generate(self, input_ids, **kw):
        self.seen.append(("generate", kw))
        return input_ids.repeat_interleave(kw["num_return_sequences"], dim=0)


def test_decode_passes_every_setting_and_the_input_format():
    seen = []
    d = Decode(repetition_penalty=1.7, num_beams=3, max_new_tokens=11)
    out = decode_negatives(_Model(seen), _Tok(seen), ["a cat", "a dog"], d, "np: ", 9)
    assert out == ["n0", "n1"]  # stripped, in prompt order
    assert seen[0] == ("encode", ["np: a cat", "np: a dog"], 9)
    assert seen[1][1] == {"max_new_tokens": 11, "repetition_penalty": 1.7, "do_sample": False,
                          "num_return_sequences": 1, "num_beams": 3}


def test_num_means_beams_when_greedy_and_samples_when_sampling():
    greedy = generate_kwargs(Decode(num_beams=1), num=4)
    assert greedy["num_beams"] == 4 and greedy["num_return_sequences"] == 4 and not greedy["do_sample"]
    assert "top_p" not in greedy and "temperature" not in greedy
    sampled = generate_kwargs(Decode(do_sample=True, top_p=0.8, temperature=0.7), num=3)
    (warper,) = sampled.pop("logits_processor")  # temperature and top-p in one processor (negopt/policy/nucleus.py)
    assert isinstance(warper, NucleusWarper) and (warper.temperature, warper.top_p) == (0.7, 0.8)
    assert sampled == {"max_new_tokens": 48, "repetition_penalty": 1.3, "do_sample": True, "num_return_sequences": 3,
                       "num_beams": 1, "top_p": 1.0, "temperature": 1.0, "top_k": 0}  # transformers' warpers off
    beams = generate_kwargs(Decode(do_sample=True, num_beams=2, top_p=0.8, temperature=0.7), num=2)
    assert "logits_processor" not in beams and (beams["top_p"], beams["temperature"], beams["num_beams"]) == (0.8, 0.7, 2)


def test_sampling_is_seeded_and_leaves_the_callers_rng_alone(tiny_zoo):
    from negopt.models.t5 import load_policy

    model, tok = load_policy(str(tiny_zoo / "t5"))
    d = Decode(do_sample=True, max_new_tokens=6)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = decode_negatives(model, tok, ["a castle"], d, "negative prompt: ", 16, num=4, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert a == decode_negatives(model, tok, ["a castle"], d, "negative prompt: ", 16, num=4, seed=5)
    assert a != decode_negatives(model, tok, ["a castle"], d, "negative prompt: ", 16, num=4, seed=6)


def test_source_with_context_puts_the_neighbours_first():
    assert format_source(" a city street ", "np: ") == "np: a city street"
    assert format_source(" a city street ", "np: ", ["lowres ", "noise"]) == "np: lowres | noise || prompt: a city street"
    gen = NegativePromptGenerator(None, None, task_prefix="np: ",
                                  retrieval=Retrieval(RetrievalIndex(TRAIN_P, TRAIN_N), 2))
    assert gen.sources(["a city street"]) == ["np: lowres | noise || prompt: a city street"]
    assert NegativePromptGenerator(None, None, task_prefix="np: ").sources(["a city street"]) == ["np: a city street"]


@pytest.fixture(scope="module", params=[0, 2], ids=["plain", "retrieval_k2"])
def project(request, tmp_path_factory, tiny_zoo, tiny_params):
    """A project folder whose models/sft and models/rl are the tiny T5 saved with a non-default decode
    (and, for ``retrieval_k2``, the crafted train index with k = 2)."""
    import yaml

    root = tmp_path_factory.mktemp("decode")
    decode = {"num_beams": 2, "do_sample": False, "top_p": 0.95, "temperature": 1.0, "max_new_tokens": 7,
              "repetition_penalty": 1.6}
    raw = tiny_params.model_dump()
    raw["decode"] = decode
    raw["sft"]["task_prefix"] = "avoid: "
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    from negopt.core.params import load_params

    params = load_params(root / "params.yaml")
    gen = NegativePromptGenerator.from_params(tiny_zoo / "t5", params)
    if request.param:
        gen.retrieval = Retrieval(RetrievalIndex(TRAIN_P, TRAIN_N), request.param)
    for name in ("sft", "rl"):
        gen.save_pretrained(root / "models" / name)
    return root, params


def test_every_consumer_gives_the_same_negative(project, monkeypatch):
    """sft ROUGE / the Python API, the rl test, generate's sft method and `negopt suggest` agree."""
    from negopt.cli import app
    from negopt.compare.methods import MethodInputs, negatives_of
    from negopt.rl.heldout import greedy_negatives

    root, params = project
    monkeypatch.chdir(root)
    prompts = ["a portrait of a cat oil painting", "a city street at night"]
    gen = NegativePromptGenerator.from_params("models/sft", params)
    expected = gen(prompts)
    direct = decode_negatives(gen.model, gen.tokenizer, prompts, params.decode, "avoid: ", params.sft.max_source_length,
                              retrieval=gen.retrieval)
    assert expected == direct
    assert greedy_negatives(gen.model, gen.tokenizer, prompts, params) == expected
    # a random tiny T5 may answer any input alike: check what the rl test encodes, too
    encoded = []

    class Spy:
        def __call__(self, texts, **kw):
            encoded.append(list(texts))
            return gen.tokenizer(texts, **kw)

        def __getattr__(self, name):
            return getattr(gen.tokenizer, name)

    greedy_negatives(gen.model, Spy(), prompts, params)
    assert encoded == [gen.sources(prompts)]
    paths = params.paths.model_copy(update={"sft": "models/sft", "rl": "models/rl"})
    inputs = MethodInputs(params.model_copy(update={"paths": paths}), prompts, ["", ""], [[0], [0]], torch.device("cpu"))
    assert negatives_of("sft", inputs) == negatives_of("rl", inputs) == expected
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n\n")
    result = CliRunner().invoke(app, ["suggest", "--file", "prompts.txt", "--model", "models/rl"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [n.replace("\n", " ") for n in expected]
    # the settings matter: the default decode gives other output on the same model
    assert NegativePromptGenerator.from_params("models/sft", params.model_copy(
        update={"decode": Decode(max_new_tokens=3, repetition_penalty=1.0)}))(prompts) != expected


def test_saved_config_travels_with_the_model(project, tmp_path):
    """Outside a project, from_pretrained uses the decode and input format saved in negopt.json."""
    root, params = project
    folder = tmp_path / "copied"
    shutil.copytree(root / "models" / "rl", folder)
    gen = NegativePromptGenerator.from_pretrained(folder)
    assert (folder / CONFIG).is_file()
    assert gen.decode == params.decode and gen.task_prefix == "avoid: "
    prompts = ["a bowl of fruit 2024"]
    assert gen(prompts) == NegativePromptGenerator.from_params(root / "models" / "rl", params)(prompts)
    kwargs = gen.pipeline_kwargs("a bowl of fruit 2024")
    assert kwargs == {"prompt": prompts, "negative_prompt": gen(prompts)}


class _Stop(Exception):
    """Raised by a stand-in sampler once it has seen the sources."""


def test_rl_rollouts_and_kl_feed_the_deployed_source(project, monkeypatch):
    """The rl stage's rollouts and its KL estimate encode exactly the source the deployed decode does."""
    from negopt.rl import heldout as rl_evaluate
    from negopt.rl import loop

    root, params = project
    monkeypatch.chdir(root)
    prompts = ["a city street", "a cat oil painting"]
    gen = NegativePromptGenerator.from_params("models/sft", params)
    seen = []

    def sampler(model, tokenizer, sources, *args, **kwargs):
        seen.append(list(sources))
        raise _Stop

    monkeypatch.setattr(loop, "sample_rollout", sampler)
    monkeypatch.setattr(rl_evaluate, "sample_rollout", sampler)
    with pytest.raises(_Stop):
        loop.rollout(SimpleNamespace(policy=None, ref=None, tokenizer=None, sft_dir="models/sft"), params, prompts, 0)
    with pytest.raises(_Stop):
        rl_evaluate.kl_to_sft(None, None, None, prompts, params)
    assert seen == [gen.sources(prompts)] * 2
    if gen.retrieval is not None:  # by hand: "a city street" retrieves rows 2, 3; the cat painting rows 1, 0
        assert seen[0] == ["avoid: lowres | noise || prompt: a city street",
                           "avoid: ugly hands | blurry || prompt: a cat oil painting"]
    else:
        assert seen[0] == ["avoid: a city street", "avoid: a cat oil painting"]


def test_retrieval_changes_the_negative_and_travels_with_the_model(project, tiny_zoo, tmp_path):
    """The index is part of the model: saved beside it (no pickle), reloaded, and it changes the output."""
    root, params = project
    folder = root / "models" / "sft"
    saved = saved_retrieval(folder)
    prompts = ["a city street", "a cat oil painting"]
    if saved is None:
        assert not RetrievalIndex.saved_in(folder)
        return
    assert saved.k == 2 and saved.index.negatives == TRAIN_N and RetrievalIndex.saved_in(folder)
    assert not list(folder.glob("*.pkl")) and not list(folder.glob("*.pickle"))
    gen = NegativePromptGenerator.from_pretrained(folder)
    encoded, tokenizer = [], gen.tokenizer

    class Spy:  # records what the decode encodes (a random tiny T5 answers the same garbage to any input)
        def __call__(self, texts, **kw):
            encoded.append(list(texts))
            return tokenizer(texts, **kw)

        def __getattr__(self, name):
            return getattr(tokenizer, name)

    gen.tokenizer = Spy()
    gen(prompts)
    assert encoded == [["avoid: lowres | noise || prompt: a city street",
                        "avoid: ugly hands | blurry || prompt: a cat oil painting"]]  # the context reaches the model
    (folder / "retrieval.json").rename(tmp_path / "moved.json")
    try:  # an index named in negopt.json but gone is an error naming the fix, not a silent plain decode
        with pytest.raises(FileNotFoundError, match="dvc repro sft"):
            NegativePromptGenerator.from_pretrained(folder)
    finally:
        (tmp_path / "moved.json").rename(folder / "retrieval.json")
