import copy

import pytest
import yaml

from negopt.params import ParamsError, load_params, validate_params


@pytest.fixture
def raw(root):
    return yaml.safe_load((root / "params.yaml").read_text())


def test_repo_params_validate(root):
    p = load_params(root / "params.yaml")
    assert p.profile == "tiny"
    assert p.active.image_size == 64


def test_wrong_type_names_key(raw):
    bad = copy.deepcopy(raw)
    bad["sft"]["learning_rate"] = "fast"
    with pytest.raises(ParamsError, match=r"sft\.learning_rate"):
        validate_params(bad)


def test_unknown_key_names_key(raw):
    bad = copy.deepcopy(raw)
    bad["rl"]["klcoef"] = 0.1
    with pytest.raises(ParamsError, match=r"rl\.klcoef"):
        validate_params(bad)


def test_out_of_range_names_key(raw):
    bad = copy.deepcopy(raw)
    bad["rl"]["k"] = 1
    with pytest.raises(ParamsError, match=r"rl\.k"):
        validate_params(bad)


def test_split_fractions_must_sum_to_one(raw):
    bad = copy.deepcopy(raw)
    bad["data"]["split"]["train"] = 0.5
    with pytest.raises(ParamsError, match=r"data\.split.*sum to 1"):
        validate_params(bad)


def test_unknown_source_rejected(raw):
    bad = copy.deepcopy(raw)
    bad["data"]["source"] = "ftp"
    with pytest.raises(ParamsError, match=r"data\.source"):
        validate_params(bad)
