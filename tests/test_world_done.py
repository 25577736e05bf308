"""The world zoo trained at params.yaml's ``models.world_build`` (the models stage's own sizes and seed), checked
against the world's known truth: what the world profile's numbers are worth rests on these.

Training the zoo takes most of an hour on one core, so these tests are marked ``world`` and are not part of the
default ``pytest`` run: ``pytest -m world`` runs them. The zoo is trained once into ``NEGOPT_WORLD_ZOO_DIR``
(default ``~/.cache/negopt/world-<fingerprint>``) and reused while its config is unchanged; point the variable at
a models stage's work folder (``checkpoints/world/<fingerprint>``) to check the zoo a run trained.
"""

import os
from pathlib import Path

import pytest

from negopt.world.defects import DEFECTS

pytestmark = [pytest.mark.world, pytest.mark.slow, pytest.mark.timeout(3 * 3600)]

MIN_DROP_SE = 5.0  # each defect's rate falls by this many paired SE under its own word, against the control
MIN_FG_ALIGNMENT = 0.8  # clean prompts: the foreground colour asked for
MIN_AESTHETIC_SPEARMAN = 0.8  # the aesthetic MLP against the true quality of held-out renders
MIN_DETECTOR_AUC = 0.95  # the oracle's detectors on held-out renders
MIN_CLASSIFIER_ACCURACY = 0.15  # the Inception scene classifier, 54 classes (chance 0.019)


@pytest.fixture(scope="session")
def checks(root: Path) -> dict:
    from negopt.core.io import read_json, write_json
    from negopt.core.params import load_params
    from negopt.world.checks import check_setting, check_zoo
    from negopt.world.zoo import build_world_zoo, zoo_config, zoo_key

    params = load_params(root / "params.yaml")
    cfg = zoo_config(params.models.world_build)
    out = Path(os.environ.get("NEGOPT_WORLD_ZOO_DIR", Path.home() / ".cache" / "negopt" / f"world-{zoo_key(cfg)}"))
    paths = build_world_zoo(cfg, out, progress=False)
    kwargs = check_setting(params.models.world_build, params.models.world)
    setting = {"zoo": zoo_key(cfg), **kwargs}
    cached = out / "checks.json"
    if cached.is_file() and (found := read_json(cached)).get("setting") == setting:
        return found
    result = {"setting": setting, **check_zoo(paths, **kwargs)}
    write_json(cached, result)
    return result


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_defect_falls_under_its_own_word_against_the_control(checks, defect):
    row = checks["pipeline"]["defects_on_likely_prompts"][defect]
    assert row["drop_z"] >= MIN_DROP_SE, row


def test_clean_prompts_show_the_foreground_colour_asked_for(checks):
    assert checks["pipeline"]["alignment_clean"]["fg"] >= MIN_FG_ALIGNMENT


def test_the_aesthetic_mlp_ranks_held_out_renders_by_their_true_quality(checks):
    assert checks["aesthetic_spearman_true_quality"] >= MIN_AESTHETIC_SPEARMAN


def test_the_scene_classifier_beats_chance_on_held_out_renders(checks):
    assert checks["inception_accuracy"] >= MIN_CLASSIFIER_ACCURACY
    assert checks["inception_mass_on_scene_classes"] > 0.99


@pytest.mark.parametrize("defect", DEFECTS)
def test_the_oracles_detectors_separate_each_defect(checks, defect):
    assert checks["detector_auc"][defect] >= MIN_DETECTOR_AUC
