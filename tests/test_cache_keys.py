"""Keys that cannot go stale: every setting a saved-and-reused artefact depends on is in its key.

Three artefacts are reused when their key matches: the reward calibration (saved beside the RL weights, read
by best_of_n), the RL checkpoint (resumed by a rerun) and the SFT checkpoint (likewise). For each, the settings
the code *reads* while making the artefact are recorded through a params proxy (no hand-written list), and
every one of them must change the key when changed, unless the artefact's own exemption list names it with a
reason: ``paths.*`` (the files are hashed by content instead), ``base.device`` (its resolved type is in the
key), and each fingerprint's ``NOT_TRAINING``, which must hold only settings no saved state depends on.
A setting added to the schema and read by the code is therefore checked without an edit here.
"""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path

import pytest
import torch
from helpers import RL_PROMPTS, SFT_FAST, rl_params, sft_features
from pydantic import BaseModel, RootModel

from negopt.core.errors import ParamsError
from negopt.core.params import validate_params

CPU = torch.device("cpu")


# --- recording what the code reads -------------------------------------------------------------------------


class Reads:
    """A read-only proxy of a params object that records the dotted path of every setting read.

    Reading a section returns a proxy of it; reading a leaf records it; calling a method of a section
    (``model_copy``, ``model_dump``, ``scored``) records the whole section. ``params.active`` is recorded as
    ``models.<profile>``.
    """

    def __init__(self, target, path: str, log: set[str], root=None) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_root", root if root is not None else target)

    def __getattr__(self, name: str):
        target, path = object.__getattribute__(self, "_target"), object.__getattribute__(self, "_path")
        log, root = object.__getattribute__(self, "_log"), object.__getattribute__(self, "_root")
        value = getattr(target, name)
        here = f"models.{root.profile}" if (path == "" and name == "active") else (f"{path}.{name}" if path else name)
        if isinstance(value, BaseModel):
            return Reads(value, here, log, root)
        if callable(value):
            log.add(path)  # a method of the section: all of it counts as read
            return value
        log.add(here)
        return value

    def __setattr__(self, name, value):
        raise AttributeError("params are read-only")


def leaves(model: BaseModel, prefix: str = "") -> dict[str, object]:
    """``{dotted path: value}`` of every setting under ``model`` (a weights mapping counts term by term)."""
    out: dict[str, object] = {}
    items = model.root.items() if isinstance(model, RootModel) else ((n, getattr(model, n)) for n in type(model).model_fields)
    for name, value in items:
        path = f"{prefix}.{name}" if prefix else name
        out |= leaves(value, path) if isinstance(value, BaseModel) else {path: value}
    return out


def expand(read: set[str], params) -> set[str]:
    """The leaves of everything read (a section read whole stands for each of its settings)."""
    every = leaves(params)
    return {leaf for leaf in every for r in read if r and (leaf == r or leaf.startswith(r + "."))}


def raw_with(params, path: str, value) -> dict:
    raw = copy.deepcopy(params.model_dump())
    node = raw
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return raw


def changed(params, path: str):
    """``params`` with the setting at ``path`` changed to another valid value (the first that validates)."""
    value = dict(leaves(params))[path]
    if isinstance(value, bool):
        options = [not value]
    elif isinstance(value, int):
        options = [value + 1, value + 8, value - 1, value * 2 + 1]
    elif isinstance(value, float):
        options = [value * 2 + 0.5, value / 2, min(value + 0.1, 1.0), 0.5, 0.1]
    elif isinstance(value, str):
        options = [*literal_options(params, path, value), value + "x"]
    elif isinstance(value, dict):  # a mapping setting (textual_inversions): one entry more, or none
        options = [{**value, "other": "other.safetensors"}, {}]
    else:
        options = []
    for option in options:
        if option == value:
            continue
        try:
            return validate_params(raw_with(params, path, option))
        except ParamsError:
            continue
    raise AssertionError(f"no other valid value for {path} = {value!r}")


def literal_options(params, path: str, value: str) -> list[str]:
    """The other values of a Literal setting (an enum), else none."""
    node: type[BaseModel] = type(params)
    *parents, last = path.split(".")
    for key in parents:
        annotation = node.model_fields[key].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        node = annotation
    field = node.model_fields.get(last)
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return []
    return [o for o in typing.get_args(field.annotation) if o != value]


def assert_every_read_setting_moves_the_key(read: set[str], params, key, exempt: set[str]) -> list[str]:
    """Each setting read (less ``exempt`` prefixes) changes ``key(params)``; returns the settings checked."""
    base = key(params)
    checked = sorted(p for p in expand(read, params) if not any(p == e or p.startswith(e + ".") for e in exempt))
    stale = [p for p in checked if key(changed(params, p)) == base]
    assert not stale, f"settings the artefact reads that its key ignores (a stale key): {stale}"
    return checked


def test_the_recorder_sees_leaves_sections_and_methods(tiny_params):
    log: set[str] = set()
    p = Reads(tiny_params, "", log)
    assert p.rl.kl_coef == tiny_params.rl.kl_coef and p.active.image_size == tiny_params.active.image_size
    p.reward.weights.scored()
    assert log == {"rl.kl_coef", "models.tiny.image_size", "reward.weights"}
    assert {"reward.weights.aesthetic", "rl.kl_coef"} <= expand(log, tiny_params)
    assert changed(tiny_params, "rl.selection.by").rl.selection.by == "last_step"
    assert changed(tiny_params, "reward.weights.clip").reward.weights.root["clip"] != 1.0


def test_the_check_fails_for_a_key_that_ignores_a_setting_it_reads(tiny_params):
    """The check itself: a key built from the reward weights but not the scale floor is caught."""
    def narrow(p):
        return str(p.reward.weights.model_dump())

    with pytest.raises(AssertionError, match=r"reward\.scale_floor"):
        assert_every_read_setting_moves_the_key({"reward.weights", "reward.scale_floor"}, tiny_params, narrow, set())


# --- the reward calibration ---------------------------------------------------------------------------------


def test_every_setting_the_calibration_reads_is_in_its_key(rl_zoo, tmp_path):
    import pandas as pd

    from negopt.models.loader import load_policy, load_scorer, load_sd_pipeline
    from negopt.reward.calibration import calibrate_rewards, calibration_key

    clean = tmp_path / "clean"
    clean.mkdir()
    pd.DataFrame({"prompt": RL_PROMPTS, "negative_prompt": ["x"] * len(RL_PROMPTS)}).to_parquet(clean / "train.parquet")
    params = rl_params(rl_zoo, "keys", {"paths": {"clean": str(clean)}, "reward": {"rollout_inference_steps": 1}})
    log: set[str] = set()
    p = Reads(params, "", log)
    policy, tok = load_policy(p.paths.sft, CPU)
    calibrate_rewards(None, p, RL_PROMPTS, policy=policy, tokenizer=tok, sft_dir=p.paths.sft,
                      pipe=load_sd_pipeline(p.active, CPU), scorer=load_scorer(p.active, CPU))
    checked = assert_every_read_setting_moves_the_key(log, params, lambda q: calibration_key(q, CPU),
                                                      exempt={"paths", "base.device"})
    assert {"reward.calibration.prompts", "reward.rollout_inference_steps", "sampling.top_p", "base.seed",
            "models.tiny.num_inference_steps", "reward.weights.fidelity"} <= set(checked)
    # what the paths point at is hashed by content: other SFT weights or another train split, another key
    base = calibration_key(params, CPU)
    pd.DataFrame({"prompt": RL_PROMPTS[:4], "negative_prompt": ["x"] * 4}).to_parquet(clean / "train.parquet")
    assert calibration_key(params, CPU) != base


# --- the RL checkpoint --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_setting_rl_training_reads_is_in_its_fingerprint(rl_zoo):
    from helpers import rl_components

    from negopt.rl.checkpoint import NOT_TRAINING, fingerprint
    from negopt.rl.loop import run_rl
    from negopt.rl.selection import checkpoint_selector

    params = rl_params(rl_zoo, "fp-rl", steps=2, selection={"every": 1, "diversity_prompts": 4, "reward_prompts": 2})
    comp = rl_components(params)
    log: set[str] = set()
    p = Reads(params, "", log)
    selector = checkpoint_selector(p, comp.tokenizer, comp.ref, RL_PROMPTS, None, comp.pipe)
    run_rl(p, comp, RL_PROMPTS, selector=selector)
    exempt = {"paths", "base.device", "rl.checkpoint_every", "rl.test", "rl.health", "rl.selection.stale_steps"}
    assert exempt - {"paths", "base.device"} == {f"rl.{k}" if v is True else f"rl.{k}.{next(iter(v))}"
                                                  for k, v in NOT_TRAINING.items()}
    checked = assert_every_read_setting_moves_the_key(log, params, lambda q: fingerprint(q, q.paths.sft), exempt)
    assert {"rl.steps", "rl.kl_coef", "rl.selection.min_z", "sampling.temperature", "reward.image_batch_size",
            "sft.task_prefix"} <= set(checked)
    # nothing the test or the health checks set is read while training: their exemption is safe
    assert not {r for r in log if r.startswith(("rl.test", "rl.health"))}


@pytest.mark.slow
def test_the_stale_stop_and_the_checkpoint_interval_leave_a_steps_state_alone(rl_zoo):
    """The exempt settings that training does read change when it stops or saves, never what a step holds: the
    checkpoint of step 2 holds the same weights, optimizer moments and checks (to float rounding: two runs in
    one process may differ in the last bits, which the same run in two processes does not)."""
    from helpers import assert_same_weights, rl_components
    from safetensors.torch import load_file

    from negopt.rl.loop import run_rl
    from negopt.rl.selection import checkpoint_selector

    def checkpoint_at_2(name: str, **rl):
        params = rl_params(rl_zoo, name, steps=2, restarts=0, **rl)
        comp = rl_components(params)
        selector = checkpoint_selector(params, comp.tokenizer, comp.ref, RL_PROMPTS, None, comp.pipe)
        run_rl(params, comp, RL_PROMPTS, selector=selector)
        ckpt = Path(params.paths.checkpoints) / "rl"
        state = json.loads((ckpt / "state.json").read_text())
        model = type(comp.policy).from_pretrained(params.paths.sft)
        model.load_state_dict(load_file(str(ckpt / "policy.safetensors")), strict=False)
        moments = torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]
        return model, moments, state["step"], state["selection"]

    selection = {"every": 1, "diversity_prompts": 4, "reward_prompts": 2}
    a = checkpoint_at_2("stale-a", checkpoint_every=1, selection=selection | {"stale_steps": 25})
    b = checkpoint_at_2("stale-b", checkpoint_every=2, selection=selection | {"stale_steps": 0})
    assert_same_weights(a[0], b[0])
    for key, moment in a[1].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(moment[name], b[1][key][name], atol=1e-9), (key, name)
    assert a[2:] == b[2:]


# --- the SFT checkpoint -------------------------------------------------------------------------------------


def test_every_setting_sft_training_reads_is_in_its_fingerprint(tmp_path):
    from helpers import SFT_NEGATIVES, SFT_PROMPTS

    from negopt.core.params import Sft
    from negopt.models.t5 import build_tiny_t5, load_policy
    from negopt.policy.decode import Retrieval
    from negopt.policy.retrieval import RetrievalIndex
    from negopt.policy.sft import (
        NOT_TRAINING,
        run_fingerprint,
        train_sft,
        training_contexts,
        training_settings,
    )

    t5 = build_tiny_t5(SFT_PROMPTS + SFT_NEGATIVES, tmp_path / "t5", vocab_size=400, seed=0)
    raw = {"sft": Sft(**SFT_FAST, max_steps=2, eval_steps=1, save_steps=2, retrieval={"k": 1, "self_share": 0.5})
           .model_dump()}
    params = validate_params(validate_params(raw | {"models": _profiles()}).model_dump())
    log: set[str] = set()
    sft = Reads(params.sft, "sft", log)
    model, tok = load_policy(t5)
    retrieval = Retrieval(RetrievalIndex(SFT_PROMPTS, SFT_NEGATIVES), sft.retrieval.k)
    training_contexts(retrieval, SFT_PROMPTS, 0.7, SFT_NEGATIVES, sft.retrieval.self_share, 0)
    feats = sft_features(tok)
    train_sft(model, tok, feats, feats[:4], sft, tmp_path / "ckpt", seed=0, use_cpu=True)
    assert not {r for r in log if r.removeprefix("sft.").split(".")[0] in NOT_TRAINING}, \
        "training reads a setting the fingerprint leaves out"

    def key(q):
        return run_fingerprint(training_settings(q.sft, 0, "t5"), feats, feats[:4])

    checked = assert_every_read_setting_moves_the_key(log, params, key, exempt=set())
    assert {"sft.max_steps", "sft.eval_steps", "sft.learning_rate", "sft.retrieval.self_share"} <= set(checked)
    # the pairs are in it too: other val rows (what the evaluations read), another fingerprint
    assert run_fingerprint(training_settings(params.sft, 0, "t5"), feats, feats[1:5]) != key(params)


def _profiles() -> dict:
    """models.tiny / models.paper as params.yaml has them (the schema has no defaults for profiles)."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    return raw["models"]
