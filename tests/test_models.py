"""The tiny zoo, the loader, generate_images and the `models check` command (offline)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from negopt.cli import app
from negopt.images.render import generate_images
from negopt.images.scorers import inception_score
from negopt.models.find import MissingWeightsError, check_profile, count_params, require_profile
from negopt.models.loader import load_aesthetic, load_scorer, load_sd_pipeline
from negopt.models.nets import AestheticMLP
from negopt.models.tiny import _inception_shell, build_tiny_zoo

CPU = torch.device("cpu")
COMPONENTS = ["policy", "sd", "clip", "aesthetic", "inception", "hpsv2", "pickscore", "textual_inversions"]



@pytest.fixture(scope="module")
def pipe(tiny_params):
    return load_sd_pipeline(tiny_params.active, CPU)


def test_tiny_zoo_builds_every_component(tiny_zoo, tiny_params):
    for rel in (
        "t5/config.json",
        "sd/model_index.json",
        "clip/negopt-tiny-clip.json",
        "clip/open_clip_model.safetensors",
        "aesthetic/model.safetensors",
        "inception/weights.pt",
        "embeddings/tiny-negative.safetensors",
    ):
        assert (tiny_zoo / rel).is_file(), rel
    statuses = check_profile(tiny_params, "tiny")
    assert [s.component for s in statuses] == COMPONENTS
    assert all(s.available for s in statuses), [s.how_to for s in statuses if not s.available]
    counts = {s.component: s.num_params for s in statuses}
    # Parameter counts from the file headers equal the loaded modules' counts.
    assert counts["aesthetic"] == sum(p.numel() for p in AestheticMLP(32).parameters())
    shell = _inception_shell(75).state_dict()  # weight-file counts include BN statistics, not step counters
    assert counts["inception"] == sum(v.numel() for k, v in shell.items() if "num_batches" not in k)
    assert counts["textual_inversions"] == 2 * 32  # tiny-negative: two 32-wide vectors
    assert counts["sd"] + counts["textual_inversions"] == sum(  # the loader adds them to the text encoder
        p.numel()
        for m in ("unet", "vae", "text_encoder")
        for p in getattr(load_sd_pipeline(tiny_params.active, CPU), m).parameters()
    )
    require_profile(tiny_params, "tiny")  # does not raise


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        out.update({f"{f.relative_to(folder)}:{k}": v for k, v in load_file(f).items()})
    out.update(
        {
            f"inception:{k}": v
            for k, v in torch.load(folder / "inception/weights.pt", weights_only=True).items()
        }
    )
    return out


def test_second_build_with_same_seed_is_identical(tiny_zoo, tmp_path):
    from helpers import TINY_TEXTS

    again = tmp_path / "tiny"
    build_tiny_zoo(TINY_TEXTS, again, seed=0)
    a, b = _tensors(tiny_zoo), _tensors(again)
    assert a.keys() == b.keys() and len(a) > 600
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    for tok in ("sd/tokenizer/tokenizer.json", "t5/tokenizer.json"):
        assert (tiny_zoo / tok).read_text() == (again / tok).read_text(), tok


def test_generate_images_per_image_seeds(pipe, tiny_params):
    prof = tiny_params.active
    prompts = ["a cat", "a castle", "a cat"]
    imgs = generate_images(pipe, prompts, ["", "ugly", "blurry"], [0, 1, 0], prof, batch_size=3)
    assert imgs.dtype == torch.uint8 and imgs.shape == (3, 3, 64, 64) and imgs.device == CPU
    single = generate_images(pipe, prompts[:1], [""], [0], prof, batch_size=1)
    # Same seed and inputs in a batch of 3 or alone: equal up to 1/255 (float sums in another order).
    assert (single[0].int() - imgs[0].int()).abs().max() <= 1
    assert torch.equal(single, generate_images(pipe, prompts[:1], [""], [0], prof, batch_size=1))
    # Same prompt and seed, different negative prompt -> a different image.
    assert (imgs[0].float() - imgs[2].float()).abs().mean() > 0.1
    with pytest.raises(ValueError, match="same length"):
        generate_images(pipe, prompts, ["x"], [0, 1, 2], prof)


def test_generate_images_equals_the_pipelines_own_text_encoding(pipe, tiny_params):
    """generate_images encodes each distinct string once (text_inputs): the images equal the pipeline called
    with the strings, to the bit, including a prompt repeated over seeds, an empty negative and a negative that
    is also a prompt."""
    from negopt.images.render import text_inputs, to_uint8

    prof = tiny_params.active
    prompts = ["a cat", "a cat", "a castle", "blurry", "a cat"]
    negatives = ["blurry", "", "blurry", "a cat", "lowres, watermark"]
    seeds = [0, 1, 0, 2, 3]
    ((rows, kwargs),) = text_inputs(pipe, prompts, negatives)  # literal: one call for every row
    assert rows == [0, 1, 2, 3, 4] and set(kwargs) == {"prompt_embeds", "negative_prompt_embeds"}
    own_pos, own_neg = pipe.encode_prompt(prompts, CPU, 1, True, negatives)
    assert torch.equal(kwargs["prompt_embeds"], own_pos) and torch.equal(kwargs["negative_prompt_embeds"], own_neg)
    ours = generate_images(pipe, prompts, negatives, seeds, prof, batch_size=5)
    with torch.no_grad():
        theirs = pipe(prompt=prompts, negative_prompt=negatives,
                      generator=[torch.Generator(CPU).manual_seed(s) for s in seeds],
                      num_inference_steps=prof.num_inference_steps, guidance_scale=prof.guidance_scale,
                      height=prof.image_size, width=prof.image_size, output_type="pt").images
    assert torch.equal(ours, to_uint8(theirs))


def test_scorer_and_inception_score_on_tiny_images(pipe, tiny_params):
    prof = tiny_params.active
    imgs = generate_images(
        pipe, [f"prompt {i}" for i in range(8)], [""] * 8, list(range(8)), prof, batch_size=8
    )
    scorer = load_scorer(prof, CPU)
    terms = scorer.reward_terms(imgs, [f"prompt {i}" for i in range(8)])
    assert all(v.shape == (8,) and torch.isfinite(v).all() for v in terms.values())
    assert terms["clip"].abs().max() <= 100 and (terms["fidelity"] >= 0).all()
    # the reward's clip term is the unclamped 100 cos; the evaluation's CLIP score is its clamp at 0
    assert (terms["clip"] < 0).any()  # random tiny models: some images are anti-aligned with their prompt
    assert torch.allclose(scorer.clip_score(imgs, [f"prompt {i}" for i in range(8)]), terms["clip"].clamp_min(0), atol=1e-4)
    probs = scorer.inception_probs(imgs)
    assert probs.shape == (8, 1008) and torch.allclose(probs.sum(1), torch.ones(8), atol=1e-5)
    mean, std = inception_score(imgs, prof.inception, prof.inception_input_size, splits=1)
    # IS with one split is exp(mean KL to the batch marginal), from the same features the scorer uses.
    assert mean == pytest.approx(float(terms["fidelity"].double().mean().exp()), rel=1e-3)
    # Random weights, but not degenerate: uniform posteriors would give exactly 1.0.
    assert mean > 1.05 and std == 0.0


def test_aesthetic_loads_pth_and_safetensors(tmp_path, tiny_zoo):
    mlp = load_aesthetic(tiny_zoo / "aesthetic/model.safetensors")
    torch.save(mlp.state_dict(), tmp_path / "mlp.pth")  # the real LAION file is a .pth state dict
    again = load_aesthetic(tmp_path / "mlp.pth")
    x = torch.randn(4, 32)
    assert torch.equal(mlp(x), again(x))
    assert count_params([tmp_path / "mlp.pth"]) == sum(p.numel() for p in mlp.parameters())
    with pytest.raises(MissingWeightsError, match="aesthetic"):
        load_aesthetic(tmp_path / "absent.pth")


def test_paper_profile_reports_missing_offline(tiny_params):
    statuses = check_profile(tiny_params, "paper")
    missing = [s for s in statuses if not s.available]
    assert [s.component for s in statuses] == COMPONENTS
    # The aesthetic and Inception files are never shipped in the repo, so at least those are missing here.
    assert {"aesthetic", "inception"} <= {s.component for s in missing}
    with pytest.raises(MissingWeightsError) as err:
        require_profile(tiny_params, "paper")
    for s in missing:  # one message lists every missing item with its how-to
        assert s.component in str(err.value) and s.how_to in str(err.value)
    with pytest.raises(MissingWeightsError):
        load_sd_pipeline(tiny_params.models.paper.model_copy(update={"sd": "nobody/no-such-model"}), CPU)


def test_models_check_cli(tmp_path, tiny_params):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(tiny_params.model_dump()))  # JSON is valid YAML
    runner = CliRunner()
    ok = runner.invoke(app, ["models", "check", "--path", str(params_file)])
    assert ok.exit_code == 0, ok.output
    assert "all components available" in ok.output
    # the aesthetic row's count, by hand: 32*1024+1024 + 1024*128+128 + 128*64+64 + 64*16+16 + 16+1 = 174305
    assert sum(p.numel() for p in AestheticMLP(32).parameters()) == 174305
    row = next(line for line in ok.output.splitlines() if line.startswith("aesthetic"))
    assert row.split()[-2:] == ["yes", "174.31K"]
    bad = runner.invoke(app, ["models", "check", "--profile", "paper", "--path", str(params_file)])
    assert bad.exit_code == 1 and "MISSING" in bad.output and "inception" in bad.output
