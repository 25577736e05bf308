"""The world profile's models stage at a few steps per trainer: every model is trained, saved in its library's
format, deployed into paths.world_models and loads through the project's own loader; a crash resumes at the
model it was training; the checks against the truth land in metrics/models.json. Image quality is not
asserted here (a few steps); tests/test_world_done.py asserts it on the fully trained zoo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import WORLD_REDUCED

from negopt.world.defects import DEFECTS

pytestmark = pytest.mark.slow  # trains every world model twice (about 100 s)

ROOT = Path(__file__).resolve().parents[1]


def world_project(base: Path, build: dict = WORLD_REDUCED) -> Path:
    """A project on the world's users' pairs with profile=world and ``build`` as models.world_build."""
    from negopt.world.users import generate_world_pairs

    (base / "data/clean").mkdir(parents=True)
    generate_world_pairs(400, seed=3).to_parquet(base / "data/clean/train.parquet")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = "world"
    raw["data"]["source"] = "world"
    raw["models"]["world_build"] |= build
    (base / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return base


def run_models(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, str(ROOT / "stages" / "models.py")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = world_project(tmp_path_factory.mktemp("world"))
    proc = run_models(root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return root


@pytest.fixture(scope="module")
def profile(built):
    """models.world of the built project, its paths made absolute."""
    from negopt.core.params import load_params

    p = load_params(built / "params.yaml").models.world
    fields = ("policy", "sd", "clip_pretrained", "clip_config", "aesthetic", "inception")
    return p.model_copy(update={f: str(built / getattr(p, f)) for f in fields})


def test_the_stage_deploys_every_model_and_marks_the_tiny_zoo_not_built(built):
    from negopt.world.layout import DEPLOYED, zoo_paths

    deployed = zoo_paths(built / "models/world")
    for key in DEPLOYED:
        assert deployed[key].exists(), key
    assert not deployed["data"].exists()  # the rendered training set stays in the work folder
    assert (built / "models/world/t5/config.json").is_file()
    assert json.loads((built / "models/world/timings.json").read_text()).keys() == {
        "render", "calibrate", "vae", "diffusion", "clip", "aesthetic", "inception"}
    assert [p.name for p in (built / "models/tiny").iterdir()] == ["NOT_BUILT.json"]
    (work,) = (built / "checkpoints/world").iterdir()
    assert json.loads((work / "zoo_config.json").read_text())["diffusion"]["steps"] == WORLD_REDUCED["diffusion_steps"]


def test_metrics_hold_each_models_check_against_the_truth(built):
    m = json.loads((built / "metrics/models.json").read_text())
    assert m["profile"] == "world"
    # the detectors are analytic: calibrated on renders, they separate every defect whatever the zoo's size
    assert set(m["detector_auc"]) == set(DEFECTS) and min(m["detector_auc"].values()) >= 0.95
    for key in ("aesthetic_spearman_true_quality", "inception_accuracy", "clip_own_prompt_beats_swapped_fg"):
        assert -1 <= m[key] <= 1, key
    pipeline = m["pipeline"]
    assert pipeline["prompts"] == WORLD_REDUCED["check_prompts"]
    assert set(pipeline["defects_on_likely_prompts"]) == set(DEFECTS)
    assert set(pipeline["alignment_clean"]) == {"shape", "count", "fg", "bg"}
    assert m["train_seconds"]["diffusion"] > 0


def test_a_rerun_resumes_at_the_first_model_not_saved(built, tmp_path):
    """A crash mid-build loses only the model being trained: a rerun keeps every saved one."""
    import shutil

    root = tmp_path / "p"
    shutil.copytree(built, root)
    (work,) = (root / "checkpoints/world").iterdir()
    shutil.rmtree(root / "models/world")
    shutil.rmtree(work / "inception")
    vae_mtime = (work / "vae" / "config.json").stat().st_mtime_ns
    proc = run_models(root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "vae" / "config.json").stat().st_mtime_ns == vae_mtime
    assert (work / "inception" / "weights.pt").is_file() and (root / "models/world/inception/weights.pt").is_file()


def test_a_world_model_outside_its_folder_is_refused_naming_the_key(tmp_path):
    root = world_project(tmp_path)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["models"]["world"]["aesthetic"] = "elsewhere/model.safetensors"
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run_models(root)
    assert proc.returncode != 0
    assert "models.world.aesthetic" in proc.stderr and "paths.world_models" in proc.stderr


def test_pipeline_loads_through_the_project_loader_and_generates(profile):
    from negopt.models.loader import load_sd_pipeline
    from negopt.world.train_diffusion import generate

    pipe = load_sd_pipeline(profile, torch.device("cpu"))
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.vae.config.latent_channels == 8 and pipe.unet.config.sample_size == 16
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    prompts = ["two red circles on a black background"] * 3
    a = generate(pipe, prompts, ["", "grainy", ""], [1, 1, 2], num_inference_steps=3, batch_size=2)
    assert a.shape == (3, 3, 32, 32) and a.dtype == np.uint8
    b = generate(pipe, prompts[:1], [""], [1], num_inference_steps=3)
    # an image depends on its seed, not its batch (up to float summation order: 1 level in a few pixels)
    assert np.abs(a[:1].astype(int) - b.astype(int)).max() <= 1


def test_vae_scaling_factor_is_fitted(built):
    from negopt.world.train_vae import load_vae

    vae = load_vae(built / "models/world/sd/vae")
    assert vae.config.scaling_factor != 0.18215 and np.isfinite(vae.config.scaling_factor)


def test_scorer_loads_through_the_project_loader(profile):
    from negopt.models.loader import load_scorer
    from negopt.world.train_scorers import scene_classes

    scorer = load_scorer(profile, torch.device("cpu"))
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8))
    terms = scorer.reward_terms(images, ["one red circle on a white background"] * 4)
    assert set(terms) == {"aesthetic", "clip", "fidelity"}
    assert all(torch.isfinite(v).all() for v in terms.values())
    logits = scorer.inception_logits(images)
    assert logits.shape == (4, 1008)
    assert (logits[:, len(scene_classes()):] < 0).all()  # unused classes sit below every scene class's zero


def test_inception_stem_and_head_match_torch_fidelity_forward(built):
    from negopt.world.train_scorers import head_forward, load_inception, stem_forward

    net = load_inception(built / "models/world/inception/weights.pt")
    net.features_list = ["2048"]
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
    with torch.no_grad():
        ours = head_forward(net, stem_forward(net, images))
        (theirs,) = net(images)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
