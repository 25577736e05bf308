"""Pipelines beyond SD 1.5: the class comes from model_index.json; the tiny SDXL-architecture pipeline (two
text encoders) generates through the same helper, is scored by evaluate, and takes the Python API's negatives."""

from __future__ import annotations

import json

import pytest
import torch

from negopt.core.errors import ParamsError
from negopt.images.render import generate_images
from negopt.models.find import check_components
from negopt.models.loader import load_scorer, load_sd_pipeline, named_preference, pipeline_class

CPU = torch.device("cpu")
PROMPTS = ["a portrait of a cat, oil painting", "a castle on a hill, anime style"]

@pytest.fixture(scope="module")
def sdxl_profile(tiny_params, tiny_zoo):
    return tiny_params.active.model_copy(update={"sd": str(tiny_zoo / "sdxl"), "num_inference_steps": 2})


@pytest.fixture(scope="module")
def sdxl(sdxl_profile):
    return load_sd_pipeline(sdxl_profile, CPU)


def test_the_pipeline_class_is_the_one_model_index_names(tiny_zoo, tmp_path):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    assert pipeline_class(tiny_zoo / "sd") is StableDiffusionPipeline
    assert pipeline_class(tiny_zoo / "sdxl") is StableDiffusionXLPipeline
    for name in ("DDPMPipeline", "NoSuchPipeline"):  # unconditional (no prompt / negative_prompt), unknown
        (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": name}))
        with pytest.raises(ParamsError, match=rf"models\.<profile>\.sd: .* holds a {name} pipeline"):
            pipeline_class(tmp_path)


def test_sdxl_has_two_text_encoders_and_both_count_as_weights(sdxl, sdxl_profile, tmp_path):
    import shutil

    from diffusers import StableDiffusionXLPipeline

    assert type(sdxl) is StableDiffusionXLPipeline and sdxl.text_encoder_2 is not None
    assert sdxl.unet.config.addition_embed_type == "text_time" and sdxl.unet.config.cross_attention_dim == 64
    assert sdxl.watermark is None  # the invisible watermark would change every pixel the metrics read
    status = {s.component: s for s in check_components(sdxl_profile)}["sd"]
    loaded = 2 * 32  # the tiny profile's textual inversion: two 32-wide token vectors in the first text encoder
    assert status.available and status.num_params + loaded == sum(
        p.numel() for m in ("unet", "vae", "text_encoder", "text_encoder_2") for p in getattr(sdxl, m).parameters())
    # without the second text encoder's weights the pipeline is missing, as for SD 1.5's subfolders
    shutil.copytree(sdxl_profile.sd, tmp_path / "sdxl")
    for f in (tmp_path / "sdxl" / "text_encoder_2").glob("*.safetensors"):
        f.unlink()
    broken = {s.component: s for s in check_components(sdxl_profile.model_copy(update={"sd": str(tmp_path / "sdxl")}))}
    assert not broken["sd"].available


def test_sdxl_generates_per_seed_and_is_scored_by_evaluate(sdxl, sdxl_profile):
    from negopt.compare.evaluate import evaluate_method

    prompts = PROMPTS * 2
    negatives = ["blurry, lowres", "", "watermark, text", "blurry, lowres"]
    images = generate_images(sdxl, prompts, negatives, [1, 2, 3, 4], sdxl_profile, batch_size=4)
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    one = generate_images(sdxl, prompts[:1], negatives[:1], [1], sdxl_profile)
    # per-image generators: batched equals single up to float sums that depend on the batch size (SDXL's
    # UNet here: at most 1 level of 255, measured; a shared generator would move every pixel)
    assert (one[0].int() - images[0].int()).abs().max() <= 1
    other = generate_images(sdxl, prompts[:1], ["watermark, text"], [1], sdxl_profile)
    assert (other.float() - one.float()).abs().mean() > 0.01  # the negative prompt reaches the image
    scorer = load_scorer(sdxl_profile, CPU, preference=named_preference(sdxl_profile))
    row = evaluate_method(scorer, images, prompts, 2, 4)
    assert set(row) >= {"inception_score", "aesthetic", "clip_score", "hpsv2", "pickscore"} and row["n_images"] == 4
    assert all(torch.isfinite(torch.tensor(float(v))) for v in row.values())


def test_the_python_api_fills_negative_prompt_for_any_pipeline(sdxl, sdxl_profile, tiny_params, tiny_zoo):
    """``pipe(**gen.pipeline_kwargs(prompts))``: the generator's own negatives, on SDXL as on SD 1.5."""
    from negopt import NegativePromptGenerator

    gen = NegativePromptGenerator.from_params(tiny_zoo / "t5", tiny_params)
    kwargs = gen.pipeline_kwargs(PROMPTS)
    assert kwargs == {"prompt": PROMPTS, "negative_prompt": gen(PROMPTS)}
    out = sdxl(**kwargs, num_inference_steps=2, height=64, width=64, output_type="pt",
               generator=[torch.Generator().manual_seed(s) for s in (5, 6)]).images
    from negopt.images.render import to_uint8

    same = generate_images(sdxl, PROMPTS, gen(PROMPTS), [5, 6], sdxl_profile.model_copy(update={"guidance_scale": 5.0}))
    assert torch.equal(to_uint8(out), same)  # SDXL's default guidance is 5.0: the same call as the stages'


def test_sdxl_renders_a1111_with_both_encoders_and_pooled_embeddings(sdxl, sdxl_profile, tiny_params, tiny_zoo):
    """a1111 on SDXL: each encoder's weighted, chunked embeddings side by side, the pooled embedding of the text
    without its syntax (a plain text embeds as the pipeline embeds it); images differ from literal's; the Python
    API returns the same arguments for one call."""
    from negopt import NegativePromptGenerator
    from negopt.images.render import text_inputs

    long = ", ".join(["ugly blurry lowres"] * 12)  # 47 tiny tokens: two windows of 30
    negatives = ["(blurry:1.3), [text]", long]
    groups = text_inputs(sdxl, PROMPTS, negatives, "a1111")
    assert [rows for rows, _ in groups] == [[0], [1]]
    short, two = groups[0][1], groups[1][1]
    assert set(short) == {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                          "negative_pooled_prompt_embeds"}
    assert short["prompt_embeds"].shape == (1, 32, 64) and short["negative_pooled_prompt_embeds"].shape == (1, 32)
    assert two["negative_prompt_embeds"].shape == two["prompt_embeds"].shape == (1, 64, 64)
    own = sdxl.encode_prompt("blurry, text", device=CPU, do_classifier_free_guidance=False)
    assert torch.equal(short["negative_pooled_prompt_embeds"], own[2])  # pooled: the text as A1111 reads it
    plain = text_inputs(sdxl, ["a cat"], ["blurry, text"], "a1111")[0][1]
    assert torch.equal(plain["negative_prompt_embeds"], own[0])
    a1111 = generate_images(sdxl, PROMPTS, negatives, [1, 2], sdxl_profile.model_copy(update={"prompt_syntax": "a1111"}))
    literal = generate_images(sdxl, PROMPTS, negatives, [1, 2], sdxl_profile)
    assert a1111.shape == (2, 3, 64, 64) and all(not torch.equal(a1111[i], literal[i]) for i in range(2))

    gen = NegativePromptGenerator.from_params(tiny_zoo / "t5", tiny_params)
    kwargs = gen.pipeline_kwargs(PROMPTS, sdxl, "a1111")
    ((rows, expected),) = text_inputs(sdxl, PROMPTS, gen(PROMPTS), "a1111", one_call=True)
    assert rows == [0, 1] and set(kwargs) == set(expected) and all(torch.equal(kwargs[k], expected[k]) for k in kwargs)
    assert sdxl(**kwargs, num_inference_steps=2, height=64, width=64, output_type="pt").images.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="pass the pipeline"):
        gen.pipeline_kwargs(PROMPTS, syntax="a1111")


def test_an_sdxl_embedding_loads_each_half_into_its_encoder(sdxl_profile, tiny_params, tmp_path):
    """An SDXL textual inversion (``clip_l`` + ``clip_g``, negativeXL's layout) puts each half into its own text
    encoder under one name; an SD 1.x pipeline refuses it, naming the key."""
    from safetensors.torch import save_file

    from negopt.core.errors import ParamsError

    gen = torch.Generator().manual_seed(3)
    halves = {"clip_l": torch.randn(2, 32, generator=gen), "clip_g": torch.randn(2, 32, generator=gen)}
    save_file(halves, str(tmp_path / "xl-neg.safetensors"))
    named = {"xl-neg": str(tmp_path / "xl-neg.safetensors")}
    pipe = load_sd_pipeline(sdxl_profile.model_copy(update={"textual_inversions": named}), CPU)
    for half, encoder, tokenizer in (("clip_l", pipe.text_encoder, pipe.tokenizer),
                                     ("clip_g", pipe.text_encoder_2, pipe.tokenizer_2)):
        ids = tokenizer.convert_tokens_to_ids(["xl-neg", "xl-neg_1"])
        assert torch.equal(encoder.get_input_embeddings().weight[ids], halves[half]), half
    with pytest.raises(ParamsError, match=r"textual_inversions\.xl-neg: .* SDXL embedding"):
        load_sd_pipeline(tiny_params.active.model_copy(update={"textual_inversions": named}), CPU)
