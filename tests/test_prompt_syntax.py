"""Prompts and negatives as A1111 users write them (negopt/core/prompt_syntax.py, negopt/images/render.py): A1111's
reading of weights and emphasis, the counts in metrics/data.json, and the two prompt syntaxes every renderer goes
through (literal: the pipeline's own reading, to the bit; a1111: compel's weighted, chunked embeddings), with
textual inversions loaded, spelt and reported. Expected values are worked out by hand."""

from __future__ import annotations

import json

import pytest
import torch

from negopt.core.prompt_syntax import (
    KNOWN_EMBEDDINGS,
    clip_token_counts,
    parse_a1111,
    spell_embeddings,
    syntax_counts,
    unloaded_embeddings,
    unloaded_warning,
)

CPU = torch.device("cpu")


# --- reading A1111's syntax (no models) ------------------------------------------------------------------


def test_a1111_weights_emphasis_and_escapes_read_as_a1111_reads_them():
    assert parse_a1111("a (cat:1.4), ((dog)), [bird]") == [
        ("a ", 1.0), ("cat", 1.4), (", ", 1.0), ("dog", 1.21), (", ", 1.0), ("bird", 0.9090909091)]
    assert parse_a1111("((x))") == parse_a1111("(x:1.21)") == [("x", 1.21)]  # 1.1 x 1.1
    assert parse_a1111("[x]") == parse_a1111("(x:0.9090909091)") == [("x", 0.9090909091)]  # 1 / 1.1
    assert parse_a1111("[[x]]") == [("x", 0.826446281)]  # 1 / 1.21
    assert parse_a1111("(a [b] c:1.2) d") == [("a ", 1.2), ("b", 1.0909090909), (" c", 1.2), (" d", 1.0)]
    assert parse_a1111("((a:1.5))") == [("a", 1.65)]  # a weight inside one more bracket: 1.5 x 1.1
    assert parse_a1111(r"\(literal\) \[x\]") == [("(literal) [x]", 1.0)]  # escaped brackets are text
    assert parse_a1111("(open") == [("open", 1.1)]  # an unclosed bracket runs to the end
    assert parse_a1111("a) b]") == [("a) b]", 1.0)]  # unmatched closers are text
    assert parse_a1111("x:1.2) y") == [("x:1.2) y", 1.0)]  # a weight with no bracket open is text
    assert parse_a1111("(x:.)") == [("x:.", 1.1)]  # not a number: the colon is text, the bracket 1.1
    assert parse_a1111("(a) (b)") == [("a", 1.1), (" ", 1.0), ("b", 1.1)]
    assert parse_a1111("(a)(b)") == [("ab", 1.1)]  # adjacent fragments of one weight merge
    assert parse_a1111("<lora:detail:0.8> a cat") == [(" a cat", 1.0)]  # an extra network leaves the text
    assert parse_a1111("") == [("", 1.0)] and parse_a1111("()") == [("", 1.0)]


CRAFTED = ["", "a cat", "A CAT", "photo of a cat, 8k", "(masterpiece:1.2), ((best quality))", "bad-hands-5",
           "it's don't  we'll\tthey've", "x" * 300, "emoji 🐱 and café", "a\nb  c, d"]


def test_clip_token_counts_equal_open_clips_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    theirs = SimpleTokenizer()
    assert clip_token_counts(CRAFTED).tolist() == [len(theirs.encode(t)) for t in CRAFTED]
    assert clip_token_counts(["a cat", "", None]).tolist() == [2, 0, 0]  # no start / end tokens counted
    assert clip_token_counts(["(masterpiece:1.2)"]).tolist() == [7]  # ( masterpiece : 1 . 2 ), one token each
    assert clip_token_counts([]).tolist() == []


def test_clip_token_counts_on_the_real_pairs(shared_pairs):
    from open_clip.tokenizer import SimpleTokenizer

    rows = [json.loads(line) for line in open(shared_pairs)]
    texts = [r["negative_prompt"] for r in rows if r["negative_prompt"] and r["negative_prompt"].isascii()]
    assert len(texts) > 1000
    theirs = SimpleTokenizer()
    assert clip_token_counts(texts).tolist() == [len(theirs.encode(t)) for t in texts]


def test_syntax_counts_by_hand():
    long = ", ".join(["blurry"] * 40)  # 40 words + 39 commas = 79 tokens: past the 75-token window
    full = ", ".join(["blurry"] * 38)  # 38 + 37 = 75 tokens: the window holds it
    texts = ["(bad hands:1.4), ugly", "((blurry)), lowres", "[text] watermark", full, "easynegative, x",
             "(EasyNegative:1.1), Bad-Artist", "bad-artist-anime", "<lora:detail:0.5> photo", long, "(x)"]
    c = syntax_counts(texts)
    assert clip_token_counts([long, full]).tolist() == [79, 75]
    assert c["rows"] == 10
    assert c["weighted"] == 0.2  # rows 0 and 5
    assert c["emphasis"] == 0.2  # rows 1 and 2; a single (x) is a bracket, not emphasis
    assert c["brackets"] == 0.5  # rows 0, 1, 2, 5, 9
    assert c["extra_networks"] == 0.1 and c["over_window"] == 0.1
    assert c["embeddings"] == 0.3  # rows 4, 5, 6: any case, whole names only
    assert c["embedding_rows"] == {"easynegative": 2, "bad-artist": 1, "bad-artist-anime": 1}
    assert list(c["embedding_rows"]) == ["easynegative", "bad-artist", "bad-artist-anime"]  # most named first
    assert syntax_counts(["(a:1.2)"], names=["a"])["embedding_rows"] == {"a": 1}
    lengths = syntax_counts([" ".join(["cat"] * k) for k in range(1, 11)])  # 1 .. 10 tokens
    assert lengths["tokens_median"] == 5.5 and lengths["tokens_p90"] == pytest.approx(9.1)  # 9 + 0.1 x (10 - 9)
    empty = syntax_counts([])
    assert empty["rows"] == 0 and empty["weighted"] == 0.0 and empty["embedding_rows"] == {}


def test_an_unloaded_embedding_is_counted_and_reported():
    c = syntax_counts(["easynegative, ugly", "tiny-negative", "bad-hands-5"], names=[*KNOWN_EMBEDDINGS, "tiny-negative"])
    assert c["embedding_rows"] == {"bad-hands-5": 1, "easynegative": 1, "tiny-negative": 1}
    missing = unloaded_embeddings(c, ["tiny-negative", "EasyNegative"])
    assert missing == {"bad-hands-5": 1}
    line = unloaded_warning("sft negatives", missing)
    assert "sft negatives" in line and "bad-hands-5 (1)" in line and "textual_inversions" in line
    assert unloaded_warning("x", {}) is None


def test_loaded_names_are_spelt_as_their_token():
    text = "(EasyNegative:1.2),EASYNEGATIVE, easynegativev2, bad-artist-anime, Bad-Artist"
    assert spell_embeddings(text, ["easynegative", "bad-artist"]) == \
        "(easynegative:1.2),easynegative, easynegativev2, bad-artist-anime, bad-artist"


def test_data_json_counts_the_kept_rows(tmp_path):
    """clean's data.json: the syntax of the rows it keeps (a dropped duplicate or a too-short negative is not
    counted), for prompts and negatives separately."""
    import pandas as pd

    from negopt.core.params import CleanRules, Split
    from negopt.data.clean import run_clean
    from negopt.data.schema import conform

    raw = pd.DataFrame({"prompt": ["a cat", "a dog", "a dog", "a fox", "(a bird:1.2)"],
                        "negative_prompt": ["(ugly:1.3)", "easynegative", "easynegative", "x", "blurry"]})
    conform(raw).to_parquet(tmp_path / "pairs.parquet")
    report = run_clean(tmp_path / "pairs.parquet", tmp_path / "clean", CleanRules(), Split())
    assert report["rows_out"] == 3 and report["dropped"]["short_negative"] == 1  # "x"; one exact duplicate
    neg, prompt = report["syntax"]["negative_prompt"], report["syntax"]["prompt"]
    assert neg["rows"] == prompt["rows"] == 3
    assert neg["weighted"] == pytest.approx(1 / 3, abs=1e-4) and neg["embedding_rows"] == {"easynegative": 1}
    assert prompt["weighted"] == pytest.approx(1 / 3, abs=1e-4) and prompt["embedding_rows"] == {}


def test_rouge_scores_the_text_as_written():
    """Targets keep their syntax; ROUGE reads a weight's digits as words and drops brackets and colons."""
    from negopt.policy.sft import rouge

    assert rouge(["bad hands"], ["(bad hands:1.4)"])["rouge1"] == pytest.approx(2 / 3)  # bad hands 1 4
    assert rouge(["(bad hands:1.2)"], ["(bad hands:1.4)"])["rouge1"] == pytest.approx(3 / 4)
    assert rouge(["[bad hands]"], ["bad hands"])["rouge1"] == 1.0


def test_the_policy_learns_and_writes_the_syntax(tiny_zoo):
    """SFT's targets keep their syntax: the tiny policy's tokenizer gives the weights, brackets and names back."""
    from negopt.models.t5 import load_policy
    from negopt.policy.sft import encode_pairs

    _, tok = load_policy(str(tiny_zoo / "t5"))
    target = "(bad hands:1.4), ((blurry)), [text], easynegative"
    (row,) = encode_pairs(tok, ["a cat"], [target], "negative prompt: ", 32, 64)
    assert tok.decode(row["labels"], skip_special_tokens=True).strip() == target


def test_the_real_pairs_counts_in_data_json(shared_pairs, tmp_path):
    """The clean stage's data.json on the shared real pairs: A1111 syntax in most negatives (counted on the raw
    file in ../shared/REFERENCE.md: 65% weighted, 39% emphasis, 52% past the window, 50% naming an embedding)."""
    from negopt.core.params import CleanRules, Data, Split
    from negopt.data.clean import run_clean
    from negopt.data.sources import load_source

    df, _ = load_source(Data(source=f"file:{shared_pairs}"))
    df.to_parquet(tmp_path / "pairs.parquet")
    loose = CleanRules(max_prompt_chars=10_000, max_negative_chars=10_000)  # keep the long ones the counts are about
    neg = run_clean(tmp_path / "pairs.parquet", tmp_path / "clean", loose, Split())["syntax"]["negative_prompt"]
    assert 0.6 < neg["weighted"] < 0.7 and 0.35 < neg["emphasis"] < 0.45 and 0.45 < neg["embeddings"] < 0.55
    assert 0.45 < neg["over_window"] < 0.6 and neg["tokens_p90"] > 200
    assert list(neg["embedding_rows"])[0] == "easynegative"
    default = run_clean(tmp_path / "pairs.parquet", tmp_path / "clean", CleanRules(), Split())["syntax"]
    assert set(default) == {"prompt", "negative_prompt"} and default["negative_prompt"]["rows"] < neg["rows"]


# --- the two syntaxes through the pipelines (the tiny zoo) ----------------------------------------------------


@pytest.fixture(scope="module")
def pipe(tiny_params):
    from negopt.models.loader import load_sd_pipeline

    return load_sd_pipeline(tiny_params.active, CPU)


@pytest.fixture(scope="module")
def bare(tiny_params):
    """The tiny SD without its textual inversion: the pipeline as it was before one was named."""
    from negopt.models.loader import load_sd_pipeline

    return load_sd_pipeline(tiny_params.active.model_copy(update={"textual_inversions": {}}), CPU)


def _embeds(pipe, prompts, negatives, syntax="a1111"):
    from negopt.images.render import text_inputs

    groups = text_inputs(pipe, prompts, negatives, syntax)
    assert len(groups) == 1
    return groups[0][1]


def test_a_weighted_phrase_embeds_as_compel_embeds_the_converted_string(pipe):
    """(x:1.4) and ((x)) through A1111's reading equal compel's own parse of its own syntax, (x)1.4 and (x)1.21;
    [x] equals (x)0.9090909091; and a text with no syntax embeds as the pipeline embeds it."""
    from compel import CompelForSD

    compel = CompelForSD(pipe)
    for ours, theirs in (("a cat, (oil painting:1.4)", "a cat, (oil painting)1.4"),
                         ("a cat, ((oil painting))", "a cat, (oil painting)1.21"),
                         ("a cat, [oil painting]", "a cat, (oil painting)0.9090909091"),
                         ("ugly, (blurry:0.5), lowres", "ugly, (blurry)0.5, lowres")):
        got = _embeds(pipe, [ours], [""])["prompt_embeds"]
        assert torch.equal(got, compel(theirs).embeds), ours
    plain = _embeds(pipe, ["a cat, oil painting"], ["blurry"])
    own_pos, own_neg = pipe.encode_prompt(["a cat, oil painting"], CPU, 1, True, ["blurry"])
    assert torch.equal(plain["prompt_embeds"], own_pos) and torch.equal(plain["negative_prompt_embeds"], own_neg)
    weighted = _embeds(pipe, ["a cat, (oil painting:1.4)"], [""])["prompt_embeds"]
    assert not torch.equal(weighted, own_pos)


def test_emphasis_equals_its_weight(pipe):
    double = _embeds(pipe, ["a cat, ((oil painting))"], ["((blurry))"])
    weight = _embeds(pipe, ["a cat, (oil painting:1.21)"], ["(blurry:1.21)"])
    assert all(torch.equal(double[k], weight[k]) for k in double)
    square = _embeds(pipe, ["[oil painting]"], [""])["prompt_embeds"]
    assert torch.equal(square, _embeds(pipe, ["(oil painting:0.9090909091)"], [""])["prompt_embeds"])
    assert torch.allclose(square, _embeds(pipe, ["(oil painting:0.909)"], [""])["prompt_embeds"], atol=1e-3)


def test_a_long_negative_is_chunked_under_a1111_and_cut_under_literal(pipe):
    """The tiny SD's window is 30 tokens (32 positions): a 150-token negative takes 5 windows under a1111, and
    changing its 100th token changes the embedding there; under literal it is cut at 30 and nothing changes."""
    words = [("ugly", "blurry", "lowres", "watermark", "text")[i % 5] for i in range(150)]  # one tiny token each
    long = " ".join(words)
    other = " ".join(words[:99] + ["castle"] + words[100:])
    assert len(pipe.tokenizer(long, add_special_tokens=False).input_ids) == 150
    a = _embeds(pipe, ["a cat"], [long])
    b = _embeds(pipe, ["a cat"], [other])
    assert a["negative_prompt_embeds"].shape == (1, 32 * 5, 32)  # 150 / 30 windows, each start + 30 + end
    assert a["prompt_embeds"].shape == a["negative_prompt_embeds"].shape  # the prompt padded to the negative
    assert torch.equal(a["negative_prompt_embeds"][:, :32], b["negative_prompt_embeds"][:, :32])  # first window
    assert not torch.equal(a["negative_prompt_embeds"][:, 32:], b["negative_prompt_embeds"][:, 32:])
    la, lb = _embeds(pipe, ["a cat"], [long], "literal"), _embeds(pipe, ["a cat"], [other], "literal")
    assert la["negative_prompt_embeds"].shape == (1, 32, 32)
    assert torch.equal(la["negative_prompt_embeds"], lb["negative_prompt_embeds"])


def test_rows_are_grouped_by_length_so_no_row_is_padded_for_a_neighbour(pipe, tiny_params):
    from negopt.images.render import generate_images, text_inputs

    long = ", ".join(["ugly blurry lowres"] * 20)
    groups = text_inputs(pipe, ["a cat", "a dog", "a castle"], ["blurry", long, ""], "a1111")
    assert [rows for rows, _ in groups] == [[0, 2], [1]]
    assert [kw["prompt_embeds"].shape[1] for _, kw in groups] == [32, 32 * 3]
    one = text_inputs(pipe, ["a cat", "a dog", "a castle"], ["blurry", long, ""], "a1111", one_call=True)
    assert [rows for rows, _ in one] == [[0, 1, 2]] and one[0][1]["prompt_embeds"].shape == (3, 96, 32)
    prof = tiny_params.active.model_copy(update={"prompt_syntax": "a1111", "num_inference_steps": 2})
    batch = generate_images(pipe, ["a cat", "a dog", "a castle"], ["blurry", long, ""], [1, 2, 3], prof, batch_size=3)
    alone = generate_images(pipe, ["a cat"], ["blurry"], [1], prof, batch_size=1)
    assert (batch[0].int() - alone[0].int()).abs().max() <= 1  # float sums of another batch size, nothing more
    single = generate_images(pipe, ["a dog"], [long], [2], prof, batch_size=1)
    assert (batch[1].int() - single[0].int()).abs().max() <= 1


def test_literal_images_are_the_pipelines_own_with_the_embedding_loaded(pipe, bare, tiny_params):
    """literal renders what the pipeline renders from the strings, to the bit, whether or not the profile's
    textual inversion is loaded (it adds tokens; it changes no other text's)."""
    from negopt.images.render import generate_images, to_uint8

    prof = tiny_params.active.model_copy(update={"num_inference_steps": 2})
    prompts, negatives, seeds = ["a cat, (oil:1.3)", "a castle"], ["((blurry)), lowres", ""], [4, 5]
    ours = generate_images(pipe, prompts, negatives, seeds, prof)
    before = generate_images(bare, prompts, negatives, seeds, prof)
    with torch.no_grad():
        theirs = bare(prompt=prompts, negative_prompt=negatives, generator=[torch.Generator().manual_seed(s) for s in seeds],
                      num_inference_steps=2, guidance_scale=prof.guidance_scale, height=64, width=64,
                      output_type="pt").images
    assert torch.equal(ours, before) and torch.equal(ours, to_uint8(theirs))
    a1111 = generate_images(pipe, prompts, negatives, seeds, prof.model_copy(update={"prompt_syntax": "a1111"}))
    assert not torch.equal(a1111, ours)


def test_a_textual_inversion_changes_its_names_embeddings_once_loaded(pipe, bare, tiny_zoo):
    """The name expands to its two vectors, in any case (the tokenizer lower-cases the text, but diffusers expands
    only a name spelt as its token), and the text encoder reads the file's vectors there; the same text without the
    embedding loaded is a few plain tokens."""
    from safetensors.torch import load_file

    vectors = load_file(tiny_zoo / "embeddings" / "tiny-negative.safetensors")["emb_params"]
    ids = pipe.tokenizer.convert_tokens_to_ids(["tiny-negative", "tiny-negative_1"])
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(table[ids], vectors)
    assert pipe.maybe_convert_prompt("ugly, tiny-negative", pipe.tokenizer) == "ugly, tiny-negative tiny-negative_1"
    for syntax in ("literal", "a1111"):
        loaded = _embeds(pipe, ["a cat"], ["ugly, Tiny-Negative"], syntax)["negative_prompt_embeds"]
        spelt = _embeds(pipe, ["a cat"], ["ugly, tiny-negative"], syntax)["negative_prompt_embeds"]
        plain = _embeds(bare, ["a cat"], ["ugly, tiny-negative"], syntax)["negative_prompt_embeds"]
        assert torch.equal(loaded, spelt) and not torch.equal(loaded, plain), syntax
        ugly = _embeds(pipe, ["a cat"], ["ugly"], syntax)["negative_prompt_embeds"]
        assert torch.equal(ugly, _embeds(bare, ["a cat"], ["ugly"], syntax)["negative_prompt_embeds"])
    # a plain short text embeds alike under both: under a1111 too the name brings both of its vectors
    both = [_embeds(pipe, ["a cat"], ["ugly, Tiny-Negative"], s)["negative_prompt_embeds"] for s in ("literal", "a1111")]
    assert torch.equal(*both)


def test_loading_leaves_the_rng_alone_and_a_missing_embedding_is_named_with_its_fetch(tiny_params, tmp_path):
    from negopt.models.find import MissingWeightsError
    from negopt.models.loader import load_sd_pipeline

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_sd_pipeline(tiny_params.active, CPU)
    assert torch.equal(torch.rand(3), expected)
    missing = tiny_params.active.model_copy(update={"textual_inversions": {
        **tiny_params.active.textual_inversions,  # present: the others still make the component missing
        "easynegative": "datasets/gsdf/EasyNegative/EasyNegative.safetensors", "mine": str(tmp_path / "mine.pt")}})
    with pytest.raises(MissingWeightsError) as err:
        load_sd_pipeline(missing, CPU)
    msg = str(err.value)
    assert "tiny-negative:" not in msg
    assert "hf download gsdf/EasyNegative EasyNegative.safetensors --repo-type dataset" in msg
    assert f"mine: {tmp_path / 'mine.pt'} is not a file" in msg


def test_an_a1111_pt_embedding_loads_and_counts(tiny_params, tmp_path):
    """A1111's .pt layout (``string_to_param``) loads as safetensors do, through the weights-only reader."""
    from negopt.models.find import component_status
    from negopt.models.loader import load_sd_pipeline

    vec = torch.randn(3, 32)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "bad-thing", "step": 10},
               tmp_path / "bad-thing.pt")
    prof = tiny_params.active.model_copy(update={"textual_inversions": {"bad-thing": str(tmp_path / "bad-thing.pt")}})
    status = component_status(prof, "textual_inversions")
    assert status.available and status.num_params == 3 * 32
    p = load_sd_pipeline(prof, CPU)
    ids = p.tokenizer.convert_tokens_to_ids(["bad-thing", "bad-thing_1", "bad-thing_2"])
    assert torch.equal(p.text_encoder.get_input_embeddings().weight[ids], vec)


def test_names_must_be_lower_case(root):
    import yaml

    from negopt.core.errors import ParamsError
    from negopt.core.params import validate_params

    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["models"]["tiny"]["textual_inversions"] = {"EasyNegative": "x.safetensors"}
    with pytest.raises(ParamsError, match=r"textual_inversions.*EasyNegative.*lower case"):
        validate_params(raw)
    raw["models"]["tiny"]["textual_inversions"] = {"easynegative": ""}
    with pytest.raises(ParamsError, match="name no file"):
        validate_params(raw)
    raw["models"]["tiny"] |= {"textual_inversions": {}, "prompt_syntax": "compel"}
    with pytest.raises(ParamsError, match="prompt_syntax"):
        validate_params(raw)
