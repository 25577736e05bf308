"""negopt models fetch: verified URL downloads against a 127.0.0.1 fixture server, hub allow-lists, offline how-to.

The hub part runs twice: with an injected downloader (*what* is asked for: repo ids and exact
allow_patterns) and with huggingface_hub's real ``snapshot_download`` against a hub on 127.0.0.1
(tests/fake_hub.py) whose repo also holds files the loaders never read. The full-size version of the
second, where the paper profile's ``models`` stage fetches the whole replica, is in
tests/test_replica_paper_path.py.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch
from fake_hub import serve_hub
from helpers import loopback_server
from huggingface_hub import constants
from safetensors.torch import save_file

from negopt.models import hub_cache
from negopt.models.fetch import (
    FetchError,
    download_url,
    fetch_profile,
    hash_prefix,
    verify_aesthetic,
    verify_inception,
)
from negopt.models.find import check_components
from negopt.models.hub import HUB_FILES
from negopt.models.nets import AestheticMLP


def _pth(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


MLP_BYTES = _pth(AestheticMLP(768).state_dict())
WRONG_MLP_BYTES = _pth(AestheticMLP(512).state_dict())  # a ViT-B head: right keys, wrong shapes
INCEPTION_BYTES = _pth({"fc.weight": torch.ones(2, 2)})
INCEPTION_PREFIX = hashlib.sha256(INCEPTION_BYTES).hexdigest()[:8]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        routes = {"/mlp.pth": MLP_BYTES, "/wrong-mlp.pth": WRONG_MLP_BYTES, "/inception.pth": INCEPTION_BYTES}
        if self.path in routes:
            body = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/truncated.pth":  # promises the whole file, sends half, closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(MLP_BYTES)))
            self.end_headers()
            self.wfile.write(MLP_BYTES[: len(MLP_BYTES) // 2])
            self.close_connection = True
        else:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def server():
    with loopback_server(Handler) as url:
        yield url


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_good_file_is_verified_and_renamed_into_place(server, tmp_path):
    dest = tmp_path / "paper" / "sac+logos+ava1-l14-linearMSE.pth"
    download_url(f"{server}/mlp.pth", dest, verify=verify_aesthetic, timeout=5, progress=False)
    assert dest.read_bytes() == MLP_BYTES and _leftovers(dest.parent) == [dest.name]


def test_truncated_body_never_counts_as_present(server, tmp_path):
    dest = tmp_path / "mlp.pth"
    with pytest.raises(FetchError, match=r"truncated download \(\d+ of \d+ bytes\)"):
        download_url(f"{server}/truncated.pth", dest, verify=verify_aesthetic, timeout=5, progress=False)
    assert _leftovers(tmp_path) == []  # no dest, no .partial


def test_a_killed_download_is_never_a_weight_and_the_next_fetch_restarts(server, tmp_path, empty_cache):
    """What a SIGKILL mid-download leaves (a .partial beside the target) is not the weight; the next fetch
    removes it and downloads the file whole."""
    profile = empty_cache.model_copy(update={"aesthetic_url": f"{server}/mlp.pth", "inception_url": ""})
    dest = Path(profile.aesthetic)
    dest.parent.mkdir(parents=True)
    (dest.parent / f".{dest.name}.k1ll3d.partial").write_bytes(MLP_BYTES[:1000])
    assert not {s.component: s.available for s in check_components(profile)}["aesthetic"]
    fetch_profile(profile, hub_download=lambda *a, **k: None, log=lambda m: None)
    assert dest.read_bytes() == MLP_BYTES and _leftovers(dest.parent) == [dest.name]


def test_checksum_from_the_torch_hub_name(server, tmp_path):
    good = tmp_path / f"weights-inception-2015-12-05-{INCEPTION_PREFIX}.pth"
    download_url(f"{server}/inception.pth", good, verify=verify_inception, timeout=5, progress=False)
    assert good.read_bytes() == INCEPTION_BYTES
    bad = tmp_path / "weights-inception-2015-12-05-6726825d.pth"  # the real name: our bytes do not match it
    with pytest.raises(FetchError, match=r"invalid hash value \(expected prefix '6726825d'"):
        download_url(f"{server}/inception.pth", bad, verify=verify_inception, timeout=5, progress=False)
    assert _leftovers(tmp_path) == [good.name]


def test_http_500_fails_cleanly(server, tmp_path):
    with pytest.raises(FetchError, match="500"):
        download_url(f"{server}/missing", tmp_path / "x.pth", timeout=5, progress=False)
    assert _leftovers(tmp_path) == []


def test_mlp_with_wrong_shapes_is_refused(server, tmp_path):
    with pytest.raises(FetchError, match="not the LAION 768-d aesthetic MLP"):
        download_url(f"{server}/wrong-mlp.pth", tmp_path / "m.pth", verify=verify_aesthetic, timeout=5,
                     progress=False)
    assert _leftovers(tmp_path) == []


def test_hash_prefix_follows_torch_hub():
    assert hash_prefix("weights-inception-2015-12-05-6726825d.pth") == "6726825d"
    assert hash_prefix("sac+logos+ava1-l14-linearMSE.pth") is None


@pytest.fixture
def empty_cache(tmp_path, monkeypatch, root):
    """The default paper profile (params.yaml) against an empty HF cache and no models/paper/ files."""
    from negopt.core.params import load_params

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)  # models/paper/... relative to here: absent
    return load_params(root / "params.yaml").models.paper


def test_fetch_profile_downloads_exactly_what_the_loaders_read(empty_cache, server):
    profile = empty_cache.model_copy(update={"aesthetic_url": f"{server}/mlp.pth",
                                             "inception_url": f"{server}/inception.pth"})
    hub_calls = []

    def hub(repo, allow_patterns, repo_type=None):
        hub_calls.append((repo, allow_patterns) if repo_type is None else (repo, allow_patterns, repo_type))

    fetched = fetch_profile(
        profile,
        hub_download=hub,
        url_download=lambda url, dest, verify: hub_calls.append((url, str(dest), verify.__name__)),
        log=lambda m: None,
    )
    assert fetched == ["policy", "sd", "clip", "aesthetic", "inception", "hpsv2", "pickscore", "textual_inversions"]
    assert hub_calls == [
        ("google-t5/t5-small", HUB_FILES["policy"]),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", HUB_FILES["sd"]),
        ("timm/vit_large_patch14_clip_224.openai", ["open_clip_model.safetensors"]),
        (f"{server}/mlp.pth", profile.aesthetic, "verify_aesthetic"),
        (f"{server}/inception.pth", profile.inception, "verify_inception"),
        ("xswu/HPSv2", ["HPS_v2.1_compressed.pt"]),
        ("yuvalkirstain/PickScore_v1", HUB_FILES["pickscore"]),
        ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K", HUB_FILES["pickscore_processor"]),
        ("gsdf/EasyNegative", ["EasyNegative.safetensors"], "dataset"),  # the embeddings, one file each
        ("yesyeahvh/bad-hands-5", ["bad-hands-5.pt"], "model"),
        ("nick-x-hacker/bad-artist", ["bad-artist.pt"], "model"),
        ("Nerfgun3/bad_prompt", ["bad_prompt_version2.pt"], "dataset"),
    ]
    sd = HUB_FILES["sd"]
    assert not [f for f in sd if f.endswith((".ckpt", ".bin")) or "safety_checker" in f]
    assert [f for f in sd if f.endswith(".safetensors")] == [
        "text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors"]  # fmt: skip


def test_fetch_profile_url_files_land_where_params_point(empty_cache, server):
    """The real download_url through fetch_profile: the MLP arrives at models.paper.aesthetic and checks."""
    profile = empty_cache.model_copy(update={"aesthetic_url": f"{server}/mlp.pth", "inception_url": ""})
    fetch_profile(profile, hub_download=lambda *a, **k: None, log=lambda m: None)
    status = {s.component: s for s in check_components(profile)}
    assert status["aesthetic"].available and not status["inception"].available


def test_offline_message_lists_every_missing_item_with_commands_that_exist(empty_cache):
    how = {s.component: s.how_to for s in check_components(empty_cache)}
    assert set(how) == {"policy", "sd", "clip", "aesthetic", "inception", "hpsv2", "pickscore",
                        "textual_inversions"} and all(how.values())
    assert "easynegative: `negopt models fetch`, or `hf download gsdf/EasyNegative EasyNegative.safetensors " \
           "--repo-type dataset`" in how["textual_inversions"]
    assert "hf download nick-x-hacker/bad-artist bad-artist.pt`" in how["textual_inversions"]
    assert "hf download xswu/HPSv2 HPS_v2.1_compressed.pt" in how["hpsv2"]
    assert "hf download yuvalkirstain/PickScore_v1 config.json model.safetensors" in how["pickscore"]
    assert "hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K preprocessor_config.json" in how["pickscore"]
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 model_index.json" in how["sd"]
    assert "hf download google-t5/t5-small config.json" in how["policy"]
    assert "hf download timm/vit_large_patch14_clip_224.openai open_clip_model.safetensors" in how["clip"]
    assert "weights-inception-2015-12-05-6726825d.pth" in how["inception"]
    assert not any("huggingface-cli" in h for h in how.values())
    # the command we print exists in the installed huggingface_hub, with this argument order
    hf = Path(sys.executable).parent / "hf"
    usage = subprocess.run([str(hf), "download", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "Usage: hf download [OPTIONS] REPO_ID [FILENAMES]..." in usage and "--repo-type" in usage


def _models_stage(root: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("stage_models", root / "stages" / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_stage_fetches_only_when_online(monkeypatch, root, capsys):
    import negopt.models.fetch as fetch
    from negopt.core.params import load_params

    stage, params = _models_stage(root), load_params(root / "params.yaml")
    calls = []
    monkeypatch.setattr(fetch, "fetch_profile", lambda profile, log: calls.append(profile) or ["sd"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    stage.fetch_if_online(params)
    assert calls == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    stage.fetch_if_online(params)
    assert calls == [params.active] and "models: fetched sd" in capsys.readouterr().err

    def unreachable(profile, log):
        raise OSError("network is unreachable")

    monkeypatch.setattr(fetch, "fetch_profile", unreachable)
    stage.fetch_if_online(params)  # reported, not raised: the offline check then lists what is missing
    assert "fetch failed (OSError: network is unreachable)" in capsys.readouterr().err


def test_fetch_through_a_real_hub_client_takes_only_the_allow_list(empty_cache, tmp_path, monkeypatch):
    """snapshot_download against a 127.0.0.1 hub: the policy's six files land in the (empty) cache, the
    repo's .bin / .msgpack / README copies are never requested, and the policy then counts as available."""
    import functools

    from huggingface_hub import snapshot_download

    served = tmp_path / "served"
    commit = hub_cache.fake_commit("google-t5/t5-small", "fetch-test")
    extra = ["pytorch_model.bin", "flax_model.msgpack", "README.md", "onnx/encoder_model.onnx"]
    for i, rel in enumerate(HUB_FILES["policy"] + extra):
        src = tmp_path / f"src{i}"
        if rel == "model.safetensors":  # the availability check reads the header: a real (tiny) file
            save_file({"shared.weight": torch.ones(3, 2)}, src)
        else:
            src.write_text('{"model_type": "t5"}' if rel == "config.json" else f"bytes of {rel}")
        hub_cache.add_file(served, "google-t5/t5-small", commit, rel, src)
    hub_cache.set_ref(served, "google-t5/t5-small", commit)
    assert not {s.component: s.available for s in check_components(empty_cache)}["policy"]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online, but only 127.0.0.1 answers
    logged = []
    with serve_hub(served) as (url, requests):
        fetched = fetch_profile(empty_cache, hub_download=functools.partial(snapshot_download, endpoint=url),
                                url_download=lambda *a, **k: None, log=logged.append)
    # sd and clip are not on this hub: each failure is logged and the rest still arrives
    assert fetched == ["policy", "aesthetic", "inception"]
    assert [m.split(":")[0] for m in logged if "failed" in m] == ["fetch sd failed", "fetch clip failed",
                                                                  "fetch hpsv2 failed", "fetch pickscore failed",
                                                                  "fetch textual_inversions failed"]
    assert "RepositoryNotFoundError" in next(m for m in logged if m.startswith("fetch sd failed"))
    gets = sorted(r.rsplit(f"/resolve/{commit}/", 1)[1] for r in requests if r.startswith("GET ") and "/resolve/" in r)
    assert gets == sorted(HUB_FILES["policy"])
    snapshot = hub_cache.repo_folder(constants.HF_HUB_CACHE, "google-t5/t5-small") / "snapshots" / commit
    assert sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()) == sorted(HUB_FILES["policy"])
    assert (snapshot / "README.md").exists() is False and (snapshot / "tokenizer.json").read_text() == "bytes of tokenizer.json"
    policy = next(s for s in check_components(empty_cache) if s.component == "policy")
    assert policy.available and policy.num_params == 6


def test_an_embedding_in_a_dataset_repo_arrives_through_a_real_hub_client(empty_cache, tmp_path, monkeypatch):
    """A textual inversion named ``datasets/org/repo/file`` (EasyNegative lives in a dataset repo): missing, with its
    `hf download ... --repo-type dataset` line; fetched file alone through snapshot_download; then found."""
    import functools

    from huggingface_hub import snapshot_download

    from negopt.models.find import component_status

    served = tmp_path / "served"
    commit = hub_cache.fake_commit("gsdf/EasyNegative", "fetch-test")
    for rel in ("EasyNegative.safetensors", "README.md", "EasyNegative.pt"):
        src = tmp_path / rel
        save_file({"emb_params": torch.ones(2, 4)}, src) if rel.endswith(".safetensors") else src.write_text(rel)
        hub_cache.add_file(served, "gsdf/EasyNegative", commit, rel, src, repo_type="dataset")
    hub_cache.set_ref(served, "gsdf/EasyNegative", commit, repo_type="dataset")
    profile = empty_cache.model_copy(update={
        "textual_inversions": {"easynegative": "datasets/gsdf/EasyNegative/EasyNegative.safetensors"}})
    before = component_status(profile, "textual_inversions")
    assert not before.available and before.hub
    assert "hf download gsdf/EasyNegative EasyNegative.safetensors --repo-type dataset" in before.how_to
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with serve_hub(served) as (url, requests):
        fetched = fetch_profile(profile, hub_download=functools.partial(snapshot_download, endpoint=url),
                                url_download=lambda *a, **k: None, log=lambda m: None)
    assert "textual_inversions" in fetched
    gets = [r for r in requests if r.startswith("GET ") and "/resolve/" in r]
    assert len(gets) == 1 and gets[0].startswith("GET /datasets/gsdf/EasyNegative/resolve/")
    after = component_status(profile, "textual_inversions")
    assert after.available and after.num_params == 8 and after.location.startswith(str(tmp_path / "hub"))
