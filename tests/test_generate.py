"""generate: a deterministic plan (same prompts and seeds for every method), and sharded == single."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from negopt.compare.generate import (
    MANIFEST,
    build_plan,
    check_method_models,
    clear_outputs,
    distinct_items,
    make_batches,
    manifest_frame,
    render_batches,
)
from negopt.compare.methods import METHODS, MethodInputs, negatives_of
from negopt.compare.seeds import prompt_seeds
from negopt.core.params import validate_params

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "a red fox in snow",
    "portrait of an old sailor",
    "a castle at dusk",
    "neon city street",
    "a bowl of fruit",
]
GT = ["blurry", "deformed hands", "low contrast", "watermark", "overexposed"]


def test_seeds_deterministic_distinct_and_prefix_stable():
    a = prompt_seeds(0, 4, 3)
    assert a == prompt_seeds(0, 4, 3)
    assert len({s for row in a for s in row}) == 12  # no seed repeats across prompts or within one
    assert all(0 <= s < 2**31 for row in a for s in row)
    # More prompts or more seeds per prompt keep the old seeds, so experiments stay comparable.
    assert prompt_seeds(0, 6, 3)[:4] == a
    assert [row[:3] for row in prompt_seeds(0, 4, 5)] == a
    assert prompt_seeds(1, 4, 3) != a


def test_the_plain_methods_by_hand(tmp_path):
    params = validate_params(project_params(tmp_path, ["none"]) | {"generate": {"generic_negative": "ugly"}})
    inputs = MethodInputs(params, PROMPTS[:2], GT[:2], [[1], [2]])
    assert negatives_of("none", inputs) == ["", ""]
    assert negatives_of("generic", inputs) == ["ugly", "ugly"]
    assert negatives_of("ground_truth", inputs) == GT[:2]
    with pytest.raises(ValueError, match="unknown method 'best'"):
        negatives_of("best", inputs)


def test_a_method_must_answer_every_prompt(tmp_path, monkeypatch):
    params = validate_params(project_params(tmp_path, ["none"]))
    monkeypatch.setitem(METHODS, "generic", lambda inputs: ["one"])
    with pytest.raises(ValueError, match="'generic' gave 1 negatives for 2 prompts"):
        negatives_of("generic", MethodInputs(params, PROMPTS[:2], GT[:2], [[1], [2]]))


def test_retrieval_method_answers_the_nearest_train_prompts_negative(tmp_path):
    """Fit on train.parquet only: a test prompt never retrieves another test row, however similar."""
    clean = tmp_path / "data/clean"
    clean.mkdir(parents=True)
    pd.DataFrame({"prompt": ["a cat on a sofa", "a city street at night"],
                  "negative_prompt": ["blurry cat", "cars"]}).to_parquet(clean / "train.parquet")
    pd.DataFrame({"prompt": ["street at night, rain"], "negative_prompt": ["umbrella"]}).to_parquet(
        clean / "test.parquet")
    params = validate_params(project_params(tmp_path, ["retrieval"]))
    prompts = ["night street", "cat sofa", "street at night, rain"]
    assert negatives_of("retrieval", MethodInputs(params, prompts, [""] * 3, [[1]] * 3)) == [
        "cars", "blurry cat", "cars"]


def test_plan_same_prompts_and_seeds_for_every_method():
    seeds = prompt_seeds(7, 3, 2)
    negatives = {"none": ["", "", ""], "ground_truth": GT[:3]}
    plan = build_plan(PROMPTS[:3], negatives, seeds)
    assert len(plan) == 2 * 3 * 2
    by_method = {m: [(w.prompt_idx, w.prompt, w.seed) for w in plan if w.method == m] for m in negatives}
    assert by_method["none"] == by_method["ground_truth"]
    assert by_method["none"] == [(i, PROMPTS[i], s) for i in range(3) for s in seeds[i]]
    gt = [w for w in plan if w.method == "ground_truth"]
    assert [w.negative for w in gt] == [GT[0], GT[0], GT[1], GT[1], GT[2], GT[2]]
    assert gt[3].file == f"ground_truth/1_{seeds[1][1]}.png"
    assert len({w.file for w in plan}) == len(plan)
    assert plan == build_plan(PROMPTS[:3], negatives, prompt_seeds(7, 3, 2))
    batches = make_batches(plan, 5)
    assert [len(b) for b in batches] == [5, 5, 2] and [w for b in batches for w in b] == plan
    m = manifest_frame(plan)
    assert list(m.columns) == ["method", "prompt_idx", "prompt", "negative", "seed", "file"]
    assert m["file"].tolist() == [w.file for w in plan]


def test_load_prompts_from_the_test_split(tmp_path):
    from negopt.data.prompt_files import load_prompts

    path = tmp_path / "test.parquet"
    pd.DataFrame({"prompt": PROMPTS, "negative_prompt": GT, "likes": range(5)}).to_parquet(path)
    df = load_prompts("test", tmp_path, 3)
    assert df["prompt"].tolist() == PROMPTS[:3] and df["negative_prompt"].tolist() == GT[:3]
    with pytest.raises(ValueError, match="generate.num_prompts=9"):
        load_prompts("test", tmp_path, 9)
    with pytest.raises(FileNotFoundError, match="dvc repro clean"):
        load_prompts("test", tmp_path / "nope", 1)


def project_params(tmp: Path, methods: list[str]) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["paths"].update(
        clean=str(tmp / "data/clean"),
        sft=str(tmp / "models/sft"),
        rl=str(tmp / "models/rl"),
        images=str(tmp / "data/images"),
        metrics=str(tmp / "metrics"),
    )
    raw["models"]["tiny"]["sd"] = str(tmp / "models/tiny/sd")
    raw["models"]["tiny"]["textual_inversions"] = {}  # the mini project builds the tiny SD alone
    raw["generate"].update(methods=methods, num_prompts=3, seeds_per_prompt=2, batch_size=4, seed=3)
    raw["base"]["device"] = "cpu"
    return raw


def test_missing_model_is_a_clear_error(tmp_path):
    params = validate_params(project_params(tmp_path, ["none", "rl"]))
    with pytest.raises(FileNotFoundError, match=r"'rl'.*paths\.rl.*dvc repro rl"):
        check_method_models(params, ["none", "rl"])
    with pytest.raises(FileNotFoundError, match=r"'best_of_n'.*paths\.sft.*dvc repro sft"):
        check_method_models(params, ["best_of_n"])  # its search samples the SFT model
    check_method_models(params, ["none", "generic", "ground_truth", "retrieval"])  # no model needed


def test_render_batches_fake_generator(tmp_path):
    """Each image lands at its item's file; pixels come from that item's (prompt, negative, seed)."""
    import torch
    from PIL import Image

    def fake(prompts, negatives, seeds):
        return torch.stack(
            [
                torch.full((3, 4, 4), (s + len(n)) % 256, dtype=torch.uint8)
                for n, s in zip(negatives, seeds, strict=True)
            ]
        )

    plan = build_plan(PROMPTS[:2], {"none": ["", ""], "generic": ["xx", "xx"]}, [[1, 2], [3, 4]])
    done = render_batches(make_batches(plan, 3), fake, tmp_path, progress=False)
    assert done == plan
    for w in plan:
        pixels = Image.open(tmp_path / w.file)
        assert pixels.size == (4, 4) and pixels.getpixel((0, 0)) == ((w.seed + len(w.negative)),) * 3


def test_a_negative_two_methods_share_is_rendered_once_and_written_for_both(tmp_path):
    """sft and rl agree on prompt 0: its two seeds render once and land in both folders; prompt 1 renders twice."""
    import torch
    from PIL import Image

    calls: list[tuple[str, str, int]] = []

    def fake(prompts, negatives, seeds):
        calls.extend(zip(prompts, negatives, seeds, strict=True))
        return torch.stack([torch.full((3, 4, 4), (s + len(n)) % 256, dtype=torch.uint8)
                            for n, s in zip(negatives, seeds, strict=True)])

    plan = build_plan(PROMPTS[:2], {"sft": ["ab", "abc"], "rl": ["ab", "xyzw"]}, [[1, 2], [3, 4]])
    distinct, copies = distinct_items(plan)
    assert [w.file for w in distinct] == ["sft/0_1.png", "sft/0_2.png", "sft/1_3.png", "sft/1_4.png",
                                          "rl/1_3.png", "rl/1_4.png"]
    assert copies == {"sft/0_1.png": ["rl/0_1.png"], "sft/0_2.png": ["rl/0_2.png"]}
    done = render_batches(make_batches(distinct, 4), fake, tmp_path, progress=False, copies=copies)
    assert done == distinct and len(calls) == 6 == len(set(calls))
    for w in plan:  # every planned file, with its own item's pixels
        assert Image.open(tmp_path / w.file).getpixel((0, 0)) == ((w.seed + len(w.negative)),) * 3


def test_clear_outputs_removes_the_manifest_before_any_image(tmp_path, monkeypatch):
    """A kill while clearing must not leave the old manifest beside a half-removed image set (evaluate would
    take it for whole): the manifest is gone before the first image folder is touched."""
    import shutil

    (tmp_path / "sft").mkdir()
    (tmp_path / "sft/0_0.png").write_bytes(b"png")
    (tmp_path / MANIFEST).write_bytes(b"manifest")
    seen = []

    def killed(path, *a, **k):
        seen.append((Path(path).name, (tmp_path / MANIFEST).exists()))
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        clear_outputs(tmp_path)
    assert seen == [("sft", False)]
    assert (tmp_path / "sft/0_0.png").exists() and not (tmp_path / MANIFEST).exists()


@pytest.fixture(scope="module")
def mini_project(tmp_path_factory):
    """A tiny SD, a random tiny T5 as the sft model, and a 5-row test split."""
    from negopt.models.t5 import build_tiny_t5
    from negopt.models.tiny import build_tiny_sd

    base = tmp_path_factory.mktemp("gen")
    texts = PROMPTS + GT
    build_tiny_sd(texts * 20, base / "models/tiny/sd", vocab_size=300, seed=0)
    build_tiny_t5(texts * 20, base / "models/sft", vocab_size=300, seed=0)
    (base / "data/clean").mkdir(parents=True)
    pd.DataFrame({"prompt": PROMPTS, "negative_prompt": GT}).to_parquet(base / "data/clean/test.parquet")
    return base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_equals_single_process(mini_project, tmp_path):
    """Two processes under `accelerate launch` (gloo on CPU) write byte-identical images and manifest."""
    import torch
    from accelerate import PartialState

    from negopt.compare.generate import generate_all

    methods = ["none", "ground_truth", "sft"]  # 18 images in 5 batches of 4: an uneven 3 / 2 split
    single = validate_params(project_params(mini_project, methods))
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # like each launched process (OMP_NUM_THREADS=1); 2-core CI boxes thrash otherwise
    try:
        manifest = generate_all(single, PartialState(), torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert len(manifest) == 3 * 3 * 2
    assert manifest.groupby("method")["seed"].apply(tuple).nunique() == 1  # same seeds for every method
    # sft negatives are the model's greedy, repetition-penalised outputs for the same prompts, repeated per seed.
    from negopt.models.loader import load_policy
    from negopt.policy.decode import decode_negatives

    model, tok = load_policy(str(mini_project / "models/sft"))
    direct = decode_negatives(model, tok, PROMPTS[:3], single.decode, single.sft.task_prefix,
                              single.sft.max_source_length)  # the deployed decode, as in the sft stage's ROUGE
    assert manifest[manifest["method"] == "sft"]["negative"].tolist() == [n for n in direct for _ in range(2)]

    sharded_dir = tmp_path / "sharded"
    raw = project_params(mini_project, methods)
    raw["paths"]["images"] = str(sharded_dir)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",  # torchrun under the hood; `--cpu` alone would start one process (no MPI here)
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(ROOT / "stages/generate.py"),
    ]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 2 process(es)" in res.stdout
    images = Path(single.paths.images)
    pd.testing.assert_frame_equal(pd.read_parquet(sharded_dir / MANIFEST), pd.read_parquet(images / MANIFEST))
    for f in manifest["file"]:
        assert (sharded_dir / f).read_bytes() == (images / f).read_bytes(), f


def test_prompt_file_renders_its_prompts_and_skips_ground_truth(mini_project, tmp_path, capsys):
    """generate.prompts=file:<txt>: the file's prompts in order; ground_truth is dropped with a notice
    because a prompt-only file carries no negatives."""
    import torch
    from accelerate import PartialState

    from negopt.compare.generate import generate_all

    prompt_file = tmp_path / "bench.txt"
    prompt_file.write_text("a teapot on a table\n\n  a lighthouse in fog  \nthree cats\n")
    raw = project_params(mini_project, ["none", "ground_truth", "generic"])
    raw["paths"]["images"] = str(tmp_path / "images")
    raw["generate"].update(prompts=f"file:{prompt_file}", seeds_per_prompt=1)
    manifest = generate_all(validate_params(raw), PartialState(), torch.device("cpu"))
    assert list(dict.fromkeys(manifest["method"])) == ["none", "generic"]
    assert manifest[manifest.method == "none"]["prompt"].tolist() == ["a teapot on a table", "a lighthouse in fog",
                                                                      "three cats"]
    assert "skipping 'ground_truth'" in capsys.readouterr().err


def test_generate_reads_the_profiles_prompt_syntax(tiny_params, tmp_path, capsys):
    """The comparison on the tiny zoo under both syntaxes: texts without syntax render the same images, a ground
    truth written for A1111 renders differently under a1111; generate.json counts how each method's negatives are
    written and names the embedding the pipeline has not loaded (with a warning), not the one it has."""
    import json

    import numpy as np
    import torch
    from accelerate import PartialState
    from PIL import Image

    from negopt.compare.generate import generate_all

    (tmp_path / "clean").mkdir()
    gt = ["(blurry:1.4), ((lowres))", "easynegative, ugly", "tiny-negative, [text]"]
    pd.DataFrame({"prompt": PROMPTS[:3], "negative_prompt": gt}).to_parquet(tmp_path / "clean/test.parquet")
    manifests = {}
    for syntax in ("literal", "a1111"):
        raw = tiny_params.model_dump()
        raw["models"]["tiny"] |= {"prompt_syntax": syntax, "num_inference_steps": 2}
        raw["paths"] |= {"clean": str(tmp_path / "clean"), "images": str(tmp_path / syntax),
                         "metrics": str(tmp_path / f"metrics-{syntax}")}
        raw["generate"] |= {"methods": ["none", "generic", "ground_truth"], "num_prompts": 3, "seeds_per_prompt": 1}
        manifests[syntax] = generate_all(validate_params(raw), PartialState(), torch.device("cpu"))
        metrics = json.loads((tmp_path / f"metrics-{syntax}/generate.json").read_text())
        assert metrics["syntax"]["ground_truth"]["weighted"] == pytest.approx(1 / 3, abs=1e-4)
        assert metrics["syntax"]["ground_truth"]["embedding_rows"] == {"easynegative": 1, "tiny-negative": 1}
        assert metrics["unloaded_embeddings"] == {"ground_truth": {"easynegative": 1}}
        assert "ground_truth negatives name textual-inversion embeddings" in capsys.readouterr().err

    def pixels(syntax, file):
        return np.asarray(Image.open(tmp_path / syntax / file))

    files = manifests["literal"]["file"].tolist()
    assert files == manifests["a1111"]["file"].tolist()
    same = {f: np.array_equal(pixels("literal", f), pixels("a1111", f)) for f in files}
    with_syntax = {f for f, neg in zip(files, manifests["a1111"]["negative"], strict=True) if "(" in neg or "[" in neg}
    assert with_syntax == {f for f in files if f.startswith("ground_truth/0_") or f.startswith("ground_truth/2_")}
    assert all(same[f] != (f in with_syntax) for f in files)  # plain texts render alike, A1111 syntax does not
