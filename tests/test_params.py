import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import RootModel

from negopt.core.params import ParamsError, load_params, validate_params


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


def _plain(value):
    return value.model_dump() if isinstance(value, RootModel) else value


def _defaults_vs_yaml(model_cls, data: dict, prefix: str = "") -> list[str]:
    """Every schema default that params.yaml does not repeat exactly (or a schema field it lacks)."""
    diffs = []
    for name, field in model_cls.model_fields.items():
        key = f"{prefix}{name}"
        if name not in data:
            diffs.append(f"{key}: missing from params.yaml")
        elif isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields") \
                and not issubclass(field.annotation, RootModel):  # a RootModel (reward.weights) is one leaf mapping
            diffs += _defaults_vs_yaml(field.annotation, data[name], key + ".")
        elif not field.is_required() and _plain(field.get_default(call_default_factory=True)) != data[name]:
            diffs.append(f"{key}: schema {field.default!r} vs params.yaml {data[name]!r}")
    return diffs


def test_schema_defaults_equal_params_yaml(root):
    """One home for defaults: params.yaml repeats the schema's values (DVC tracks them), never others."""
    from negopt.core.params import Params, read_yaml

    assert _defaults_vs_yaml(Params, read_yaml((root / "params.yaml").read_text())) == []


def test_drift_is_detected(raw):
    from negopt.core.params import Params

    drifted = copy.deepcopy(raw)
    drifted["sft"]["max_steps"] = 600
    assert _defaults_vs_yaml(Params, drifted) == ["sft.max_steps: schema 200 vs params.yaml 600"]


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("sft", "max_steps", "400"), ("data", "clean", None), ("sft", "do_sample", "yes"),
     ("rl", "k", 4.0), ("sft", "max_steps", True), ("rl", "learning_rate", "6e-4")],
)
def test_strict_types_name_the_key(raw, section, key, value):
    bad = copy.deepcopy(raw)
    if value is None:  # a section given as a scalar
        bad[section][key] = "none"
    else:
        bad[section][key] = value
    with pytest.raises(ParamsError, match=rf"{section}\.{key}"):
        validate_params(bad)


def test_yaml_floats_without_a_dot_are_floats(tmp_path, root):
    """`dvc exp run -S rl.learning_rate=1e-05` writes YAML 1.2's 1e-05, a string to PyYAML."""
    text = (root / "params.yaml").read_text().replace("learning_rate: 0.0006", "learning_rate: 1e-05")
    assert "learning_rate: 1e-05" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").rl.learning_rate == pytest.approx(1e-5)


def test_image_size_must_be_a_multiple_of_8(raw):
    bad = copy.deepcopy(raw)
    bad["models"]["paper"]["image_size"] = 500
    with pytest.raises(ParamsError, match=r"models\.paper\.image_size.*multiple of 8"):
        validate_params(bad)


def test_small_eval_is_a_warning_not_an_error(raw):
    from negopt.core.params import recommendations

    small = copy.deepcopy(raw)
    small["rl"]["test"]["prompts"] = 16
    p = validate_params(small)  # valid: smoke runs stay possible
    notes = recommendations(p)
    assert len(notes) == 1 and notes[0].startswith("rl.test.prompts=16")
    assert recommendations(validate_params(raw)) == []


def _leaves(data: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for key, value in data.items():
        out += _leaves(value, prefix + (key,)) if isinstance(value, dict) else [prefix + (key,)]
    return out


def _sections(data: dict, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _sections(value, prefix + (key,))
    return out


def _set(d: dict, path: tuple, value) -> dict:
    d = copy.deepcopy(d)
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return d


def test_every_key_rejects_a_wrong_type_naming_it(raw):
    """A mapping is the wrong type for every leaf (str, number, bool, list): each error names its key."""
    for path in _leaves(raw):
        with pytest.raises(ParamsError, match=rf"{re.escape('.'.join(path))}:"):
            validate_params(_set(raw, path, {"not": "a leaf"}))


def test_every_section_rejects_an_unknown_key_naming_it(raw):
    for path in _sections(raw):
        with pytest.raises(ParamsError, match=rf"{re.escape('.'.join(path))}\.typo_key"):
            validate_params(_set(raw, path + ("typo_key",), 1))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [(("sft", "learning_rate"), -1e-3, "greater than 0"), (("rl", "learning_rate"), 0.0, "greater than 0"),
     (("rl", "k"), 1, "greater than or equal to 2"), (("models", "tiny", "image_size"), 60, "multiple of 8"),
     (("profile",), "huge", "'tiny', 'world' or 'paper'"), (("data", "split", "test"), 1.5, "less than or equal to 1"),
     (("sampling", "top_p"), 0.0, "greater than 0"), (("decode", "repetition_penalty"), 0.5, "greater than or equal to 1"),
     (("base", "device"), "tpu", "'auto', 'cpu' or 'cuda'"), (("generate", "methods"), ["sft", "dalle"], "generate.methods.1"),
     (("rl", "learning_rate"), float("inf"), "finite number"), (("sft", "learning_rate"), float("nan"), "finite number"),
     (("reward", "weights", "clip"), -1.0, "is negative; use a weight >= 0"),
     (("reward", "weights", "fidelity"), float("inf"), "finite number")],
)
def test_out_of_range_values_name_the_key_and_the_bound(raw, path, value, message):
    with pytest.raises(ParamsError) as err:
        validate_params(_set(raw, path, value))
    assert ".".join(path) in str(err.value) and message in str(err.value), str(err.value)


def test_every_float_rejects_inf_and_nan_naming_it(raw):
    """YAML's .inf / .nan are floats that pass every `gt=0` bound; no setting of ours means either."""
    floats = [p for p in _leaves(raw) if isinstance(_get(raw, p), float)]
    assert len(floats) > 20
    for path in floats:
        for bad in (float("inf"), float("nan")):
            with pytest.raises(ParamsError, match=rf"{re.escape('.'.join(path))}: Input should be a finite number"):
                validate_params(_set(raw, path, bad))


def _get(d: dict, path: tuple):
    for key in path:
        d = d[key]
    return d


def test_every_key_in_params_yaml_says_what_it_means_on_its_line():
    """One line of meaning per key: a key line without a ``#`` comment is a setting nobody can read."""
    bare = [f"{n}: {line.strip()}" for n, line in enumerate((Path(__file__).resolve().parents[1] / "params.yaml").read_text().splitlines(), 1)
            if re.match(r"^\s*[\w.-]+:", line) and "#" not in line]
    assert not bare, "params.yaml keys without a comment:\n" + "\n".join(bare)


def test_the_rl_section_reads_as_a_few_settings_and_named_groups():
    from negopt.core.params import Rl, Section

    plain = [n for n, f in Rl.model_fields.items() if not (isinstance(f.annotation, type)
                                                          and issubclass(f.annotation, Section))]
    assert len(plain) <= 20, plain
    assert {"ppo", "selection", "test", "health"} <= set(Rl.model_fields)


def test_the_world_profile_needs_the_worlds_prompts(raw):
    raw["profile"] = "world"
    with pytest.raises(ParamsError, match=r"profile: world needs data.source: world \(got data.source: 'sample'\)"):
        validate_params(raw)
    raw["data"]["source"] = "world"
    assert validate_params(raw).active.image_size == 32  # models.world
