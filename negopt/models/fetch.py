"""Fetch the paper profile's weights: exactly the files the loaders read, verified, never half-written.

- Hub models (SD 1.5, t5-small, open_clip's ViT-L-14/openai repo, the textual-inversion files) go through
  ``huggingface_hub`` into the HF cache with ``allow_patterns`` = :data:`HUB_FILES` (no ``.ckpt``, no ``.bin`` copies, SD's
  ``fp16`` variant only, since that is what :func:`negopt.models.loader.load_sd_pipeline` reads).
- The two URL files (LAION aesthetic MLP, torch-fidelity Inception) are streamed to a temporary file
  beside the target with a progress bar, checked (length against ``Content-Length``; the Inception's
  SHA-256 against the prefix in its name, torch.hub's ``name-<sha256 prefix>.pth`` convention and
  ``digest[:len(prefix)] == prefix`` check; the MLP by its state-dict keys and shapes) and only then
  renamed into place, so an interrupted or corrupt download never counts as present.

Offline, nothing is fetched: :func:`negopt.models.find.require_profile` lists what is missing with the
``hf download`` commands below (huggingface_hub 2.x's CLI; ``huggingface-cli`` is gone since 1.0).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import torch

from negopt.core.params import Profile
from negopt.models.find import check_components, textual_inversion_location
from negopt.models.hub import HUB_FILES, clip_hub_file, hub_file_in, hub_file_ref

# Aesthetic MLP: LAION improved-aesthetic-predictor layout, 768 -> 1024 -> 128 -> 64 -> 16 -> 1.
AESTHETIC_SHAPES = {
    "layers.0.weight": (1024, 768), "layers.0.bias": (1024,),
    "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
    "layers.4.weight": (64, 128), "layers.4.bias": (64,),
    "layers.6.weight": (16, 64), "layers.6.bias": (16,),
    "layers.7.weight": (1, 16), "layers.7.bias": (1,),
}  # fmt: skip


class FetchError(RuntimeError):
    """A download failed or did not verify; the target file was left untouched."""


# --- URL files ------------------------------------------------------------------------------------


def hash_prefix(filename: str) -> str | None:
    """torch.hub's convention: the hex after the last ``-`` before the suffix (``...-6726825d.pth``)."""
    from torch.hub import HASH_REGEX

    m = HASH_REGEX.search(Path(filename).name)
    return m.group(1) if m and m.group(1) else None


def verify_aesthetic(path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    shapes = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
    if shapes != AESTHETIC_SHAPES:
        raise FetchError(f"{path.name}: not the LAION 768-d aesthetic MLP (keys/shapes {shapes})")


def verify_inception(path: Path) -> None:
    torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # refuses pickled code


def download_url(
    url: str,
    dest: str | Path,
    verify: Callable[[Path], None] | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Stream ``url`` to a temp file beside ``dest``, check length / hash / ``verify``, then rename into place."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = hash_prefix(dest.name)
    for stale in dest.parent.glob(f".{dest.name}.*.partial"):  # left by a killed earlier fetch: restart
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)
        except OSError as err:  # URLError, HTTPError (a 500), timeouts
            raise FetchError(f"{url}: {err}") from None
        with resp, os.fdopen(fd, "wb") as out:
            expected = resp.headers.get("Content-Length")
            total = int(expected) if expected and expected.isdigit() else None
            digest, received = hashlib.sha256(), 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        # http.client does not raise on a short body read in chunks: check the length ourselves.
        if total is not None and received != total:
            raise FetchError(f"{url}: truncated download ({received} of {total} bytes)")
        if prefix and not digest.hexdigest().startswith(prefix):
            raise FetchError(f"{url}: invalid hash value (expected prefix {prefix!r}, got {digest.hexdigest()})")
        if verify is not None:
            try:
                verify(tmp)
            except FetchError:
                raise
            except Exception as err:
                raise FetchError(f"{url}: downloaded file does not load ({type(err).__name__}: {err})") from None
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


# --- the profile ----------------------------------------------------------------------------------

HubDownloader = Callable[..., str]  # huggingface_hub.snapshot_download's signature


def fetch_profile(
    profile: Profile,
    hub_download: HubDownloader | None = None,
    url_download: Callable[..., Path] = download_url,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Download every component of ``profile`` that is missing; returns the components fetched.

    A component whose download fails (huggingface_hub's errors, :class:`FetchError` for a URL file) is
    logged and skipped, so the others still arrive and the offline check then names exactly what is left.

    ``hub_download`` / ``url_download`` are injectable (tests); the defaults are
    ``huggingface_hub.snapshot_download`` and :func:`download_url`.
    """
    if hub_download is None:
        from huggingface_hub import snapshot_download as hub_download
    fetched = []
    for status in check_components(profile):
        if status.available:
            continue
        try:
            done = _fetch_component(status, profile, hub_download, url_download, log)
        except Exception as err:  # one unreachable repo or bad file must not stop the others; the check lists it
            log(f"fetch {status.component} failed: {type(err).__name__}: {err}")
            continue
        if done:
            fetched.append(status.component)
    return fetched


def _fetch_component(status, profile: Profile, hub_download, url_download, log) -> bool:
    """Download one missing component; False when it has no download source."""
    if status.component == "pickscore" and status.hub:
        log(f"fetch pickscore: {profile.pickscore} + processor {profile.pickscore_processor}")
        hub_download(profile.pickscore, allow_patterns=HUB_FILES["pickscore"])
        hub_download(profile.pickscore_processor, allow_patterns=HUB_FILES["pickscore_processor"])
    elif status.component in HUB_FILES and status.hub:
        files = HUB_FILES[status.component]
        log(f"fetch {status.component}: {status.source} ({len(files)} files)")
        hub_download(status.source, allow_patterns=files)
    elif status.component == "hpsv2" and (ref := hub_file_ref(profile.hpsv2)):
        log(f"fetch hpsv2: {ref[0]}/{ref[1]}")
        hub_download(ref[0], allow_patterns=[ref[1]])
    elif status.component == "clip" and (hub := clip_hub_file(profile.clip_name, profile.clip_pretrained)):
        log(f"fetch clip: {hub[0]}/{hub[1]}")
        hub_download(hub[0], allow_patterns=[hub[1]])
    elif status.component == "textual_inversions" and status.hub:
        for name, ref in profile.textual_inversions.items():
            if textual_inversion_location(ref) is None and (hub := hub_file_in(ref)):
                log(f"fetch textual inversion {name}: {'/'.join(hub[:2])} ({hub[2]} repo)")
                hub_download(hub[0], allow_patterns=[hub[1]], repo_type=hub[2])
    elif status.component == "aesthetic" and profile.aesthetic_url:
        url_download(profile.aesthetic_url, profile.aesthetic, verify=verify_aesthetic)
    elif status.component == "inception" and profile.inception_url:
        url_download(profile.inception_url, profile.inception, verify=verify_inception)
    else:
        log(f"fetch {status.component}: {status.source} has no download source; {status.how_to}")
        return False
    return True
