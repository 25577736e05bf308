"""How a profile's components are found offline, and what to tell the user when one is missing.

Every component resolves, without downloading, to a :class:`Location` (where it is, which weight files
it has, how to get it) by one entry of :data:`LOCATORS`; :func:`component_status` turns any location
into a :class:`ComponentStatus` the same way (available = found with weight files that can be read).
These kinds of source cover the components:

- an HF folder (``policy``, ``sd``): a local folder with a marker file, or a hub id in the HF cache;
- a single file with an optional download URL (``aesthetic``, ``inception``);
- an open_clip ``(name, pretrained)`` pair: a local checkpoint, or the tag's file in the HF cache;
- files that are each a local path or a hub file in the HF cache (``hpsv2``; ``textual_inversions``, found when
  every embedding is).

:func:`require_profile` fails before any work starts, listing *every* missing item with a one-line
how-to; nothing here ever substitutes one model for another.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from negopt.core.errors import UserError
from negopt.core.params import PROFILES, Params, Profile
from negopt.models.hub import (
    HUB_FILES,
    clip_hub_file,
    hub_download_command,
    hub_file_in,
    hub_file_ref,
    url_download_command,
)

SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "text_encoder_2")  # model weights a pipeline loads (SDXL has two
# text encoders); only those its model_index.json names count; the safety checker is off
SD_VARIANT = "fp16"  # the hub's half-size weight files; read on every device and cast to default_dtype
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class MissingWeightsError(UserError, RuntimeError):
    """A profile component is not available offline; the message lists every one and how to get it."""


@dataclass(frozen=True)
class ComponentStatus:
    component: str  # policy | sd | clip | aesthetic | inception | hpsv2 | pickscore | textual_inversions
    source: str  # the profile field's value (path, hub id, or open_clip name/tag)
    available: bool
    num_params: (
        int | None
    )  # tensor elements in the weight files (BN statistics included); None when unavailable
    how_to: str = ""  # one line: how to fetch or point to it (empty when available)
    location: str = ""  # the resolved local folder or file
    hub: bool = False  # source is a hub id (fetchable through huggingface_hub)


@dataclass(frozen=True)
class Location:
    """Where a component was found (``where`` None: not found), its weight files, and how to get it."""

    source: str
    where: Path | None
    files: list[Path]
    how: str
    hub: bool = False


# --- resolving sources ---------------------------------------------------------------------------------


def looks_like_hub_id(ref: str) -> bool:
    """``org/name`` that is not a local path (its first component is not an existing folder)."""
    return bool(_HUB_ID.match(ref)) and not Path(ref.split("/")[0]).exists()


def resolve_hf(ref: str, marker: str) -> Path | None:
    """A local folder for a path or a hub id found in the HF cache (never downloads); None if absent."""
    path = Path(ref)
    if (path / marker).is_file():
        return path
    if not looks_like_hub_id(ref):
        return None
    from huggingface_hub import snapshot_download

    try:
        # allow_patterns: after a fetch with an allow-list, huggingface_hub 2.x's cached tree listing makes a
        # pattern-less local lookup fail as "incomplete" (the repo's other files are absent by design); the
        # weights themselves are checked by the caller, file by file.
        folder = Path(snapshot_download(ref, local_files_only=True, allow_patterns=[marker]))
    except Exception:  # not cached (LocalEntryNotFoundError and friends)
        return None
    return folder if (folder / marker).is_file() else None


def sd_variant(folder: Path) -> str | None:
    """``fp16`` when the folder holds the hub's fp16 variant files, else None (e.g. the tiny zoo)."""
    return SD_VARIANT if (folder / "unet" / f"diffusion_pytorch_model.{SD_VARIANT}.safetensors").is_file() else None


def weight_files(folder: Path, variant: str | None = None) -> list[Path]:
    """Weights in an HF folder: the ``variant`` files if asked, else full-precision safetensors, then .bin."""
    if variant:
        return sorted(folder.glob(f"*.{variant}.safetensors"))
    for pattern in ("*.safetensors", "*.bin"):
        files = sorted(p for p in folder.glob(pattern) if p.name.count(".") == 1)
        if files:
            return files
    return sorted(folder.glob("*.safetensors"))[:1]


def _sd_weight_files(folder: Path) -> list[Path]:
    """Each weighted subfolder's files (those of :data:`SD_SUBFOLDERS` that ``model_index.json`` names);
    empty unless every one has them."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return []
    subs = [sub for sub in SD_SUBFOLDERS if isinstance(index.get(sub), list) and index[sub][0] is not None]
    parts = [weight_files(folder / sub, sd_variant(folder)) for sub in subs]
    return [f for part in parts for f in part] if all(parts) else []


def clip_location(p: Profile) -> Path | None:
    """The local weights file for (clip_name, clip_pretrained): a path, or the open_clip tag's cached file."""
    if Path(p.clip_pretrained).is_file():
        return Path(p.clip_pretrained)
    hub = clip_hub_file(p.clip_name, p.clip_pretrained)
    if hub is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename = hub
    # open_clip itself tries the .safetensors name first, then its .bin default (pretrained.py)
    for name in dict.fromkeys([filename, "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str):
            return Path(hit)
    return None


# --- the three kinds of source ---------------------------------------------------------------------------


def hf_folder(ref: str, marker: str, files_of: Callable[[Path], list[Path]], component: str, local: str) -> Location:
    """An HF folder (local, or a hub id in the cache); ``local`` names what a local replacement is."""
    where = resolve_hf(ref, marker)
    hub = looks_like_hub_id(ref)
    how = (
        f"`negopt models fetch`, or `{hub_download_command(ref, HUB_FILES[component])}` "
        f"(or copy an HF cache here / point the {component} field at {local})"
        if hub
        else "run `dvc repro models` (builds the tiny zoo, or trains the world's)"
    )
    return Location(ref, where, files_of(where) if where else [], how, hub)


def url_file(path: str, url: str) -> Location:
    """One weights file; ``url`` (may be empty) is where ``negopt models fetch`` downloads it from."""
    f = Path(path)
    how = f"`negopt models fetch`, or `{url_download_command(url, path)}`" if url else "run `dvc repro models`"
    return Location(path, f if f.is_file() else None, [f] if f.is_file() else [], how)


def open_clip_checkpoint(p: Profile) -> Location:
    """open_clip's (name, pretrained): its config file must exist when one is named (the tiny CLIP)."""
    config_ok = not p.clip_config or Path(p.clip_config).is_file()
    where = clip_location(p) if config_ok else None
    hub = clip_hub_file(p.clip_name, p.clip_pretrained) if config_ok and not Path(p.clip_pretrained).suffix else None
    if not config_ok:
        how = f"run `dvc repro models` to build {p.clip_config}"
    elif hub:
        how = f"`negopt models fetch`, or `{hub_download_command(hub[0], [hub[1]])}` (open_clip's own hub entry)"
    else:
        how = f"point clip_pretrained at a local open_clip checkpoint ({p.clip_pretrained!r} has no hub entry)"
    return Location(f"open_clip {p.clip_name} / {p.clip_pretrained}", where, [where] if where else [], how,
                    hub is not None)


def hpsv2_location(p: Profile) -> Path | None:
    """The HPSv2 weights file: a local path, or the ``org/repo/file`` hub file in the HF cache."""
    if Path(p.hpsv2).is_file():
        return Path(p.hpsv2)
    ref = hub_file_ref(p.hpsv2)
    if ref is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(*ref)
    return Path(hit) if isinstance(hit, str) else None


def hpsv2_checkpoint(p: Profile) -> Location:
    """HPSv2: an open_clip architecture (``hpsv2_name``, its config file when one is named) + one weights file."""
    config_ok = not p.hpsv2_config or Path(p.hpsv2_config).is_file()
    where = hpsv2_location(p) if config_ok else None
    ref = hub_file_ref(p.hpsv2)
    if ref and config_ok:
        how = f"`negopt models fetch`, or `{hub_download_command(ref[0], [ref[1]])}`"
    else:
        how = f"run `dvc repro models` (builds the tiny zoo), or point hpsv2 at a local HPSv2 checkpoint ({p.hpsv2!r})"
    return Location(f"open_clip {p.hpsv2_name} / {p.hpsv2}", where, [where] if where else [], how, ref is not None)


def pickscore_folder(p: Profile) -> Location:
    """PickScore: the CLIPModel folder (weights) *and* its processor folder; missing either, it is missing."""
    model = hf_folder(p.pickscore, "config.json", weight_files, "pickscore", "a local CLIPModel folder")
    processor = resolve_hf(p.pickscore_processor, "preprocessor_config.json")
    how = model.how
    if looks_like_hub_id(p.pickscore_processor):
        how += f"; processor: `{hub_download_command(p.pickscore_processor, HUB_FILES['pickscore_processor'])}`"
    hub = model.hub or looks_like_hub_id(p.pickscore_processor)
    if processor is None:
        return Location(f"{p.pickscore} + {p.pickscore_processor}", None, [], how, hub)
    return Location(f"{p.pickscore} + {p.pickscore_processor}", model.where, model.files, how, hub)


def textual_inversion_location(ref: str) -> Path | None:
    """One embedding file: a local path, or the hub file (``hub_file_in``) in the HF cache."""
    if Path(ref).is_file():
        return Path(ref)
    hub = hub_file_in(ref)
    if hub is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename, kind = hub
    hit = try_to_load_from_cache(repo, filename, repo_type=kind)
    return Path(hit) if isinstance(hit, str) else None


def textual_inversion_files(p: Profile) -> Location:
    """Every embedding of ``textual_inversions``; found only when all are, the how-to naming each missing one."""
    found, how, hub = [], [], False
    for name, ref in p.textual_inversions.items():
        where = textual_inversion_location(ref)
        ref_hub = hub_file_in(ref)
        hub |= ref_hub is not None
        if where is not None:
            found.append(where)
        elif ref_hub:
            how.append(f"{name}: `negopt models fetch`, or `{hub_download_command(ref_hub[0], [ref_hub[1]], ref_hub[2])}`")
        else:
            how.append(f"{name}: {ref} is not a file (run `dvc repro models` for the tiny zoo's, or put the embedding "
                       "there)")
    complete = bool(found) and not how
    return Location(", ".join(p.textual_inversions), found[0].parent if complete else None,
                    found if complete else [], "; ".join(how), hub)


#: component -> how it is found, in the order ``models check`` lists them
LOCATORS: dict[str, Callable[[Profile], Location]] = {
    "policy": lambda p: hf_folder(p.policy, "config.json", weight_files, "policy", "a local folder"),
    "sd": lambda p: hf_folder(p.sd, "model_index.json", _sd_weight_files, "sd", "a local pipeline folder"),
    "clip": open_clip_checkpoint,
    "aesthetic": lambda p: url_file(p.aesthetic, p.aesthetic_url),
    "inception": lambda p: url_file(p.inception, p.inception_url),
    "hpsv2": hpsv2_checkpoint,
    "pickscore": pickscore_folder,
    "textual_inversions": textual_inversion_files,
}

#: components a profile may leave out: listed (and required) only when this profile field is set (non-empty)
OPTIONAL = {"hpsv2": "hpsv2_name", "pickscore": "pickscore", "textual_inversions": "textual_inversions"}


def named_components(p: Profile) -> list[str]:
    """The components ``p`` uses, in :data:`LOCATORS` order (an optional one only when its field is set)."""
    return [c for c in LOCATORS if c not in OPTIONAL or getattr(p, OPTIONAL[c])]


# --- status -----------------------------------------------------------------------------------------------


def count_params(files: list[Path]) -> int:
    """Parameter count from weight files without building models (safetensors headers, mmap'd torch files)."""
    total = 0
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as sf:
                for key in sf.keys():
                    shape = sf.get_slice(key).get_shape()
                    total += int(torch.Size(shape).numel())
        else:
            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
            total += _tensor_elements(state)
    return total


def _tensor_elements(state: dict) -> int:
    """Elements of the tensors in a state dict, nested dicts included (an A1111 embedding keeps its vectors under
    ``string_to_param``); BatchNorm step counters are not parameters."""
    return sum(v.numel() if torch.is_tensor(v) else _tensor_elements(v) for k, v in state.items()
               if (torch.is_tensor(v) and "num_batches" not in k) or isinstance(v, dict))


def component_status(p: Profile, component: str) -> ComponentStatus:
    """Availability of one component: found, with weight files that can be read (a truncated one is missing)."""
    loc = LOCATORS[component](p)
    available, how, n = loc.where is not None and bool(loc.files), loc.how, None
    if available:
        try:
            n = count_params(loc.files)
        except Exception as err:  # an unreadable or truncated file counts as missing
            available, how = False, f"{loc.files[0]} is unreadable ({type(err).__name__}: {err}); re-fetch it. {how}"
    return ComponentStatus(component, loc.source, available, n, "" if available else how, str(loc.where or ""),
                           loc.hub)


def check_components(p: Profile) -> list[ComponentStatus]:
    """Availability of every component of one profile section, offline (never downloads)."""
    return [component_status(p, c) for c in named_components(p)]


def check_profile(params: Params, profile_name: str | None = None) -> list[ComponentStatus]:
    """Availability of every component of ``profile_name`` (default: the active profile), offline."""
    name = profile_name or params.profile
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: use {', '.join(PROFILES)}")
    return check_components(getattr(params.models, name))


def missing_message(statuses: list[ComponentStatus], profile_name: str = "") -> str:
    """Every unavailable component with its how-to line (the text of :class:`MissingWeightsError`)."""
    missing = [s for s in statuses if not s.available]
    head = f"profile {profile_name!r}: " if profile_name else ""
    lines = [f"{head}{len(missing)} component(s) not available offline (no model is ever swapped in):"]
    lines += [f"  - {s.component}: {s.source}\n      how: {s.how_to}" for s in missing]
    return "\n".join(lines)


def require_component(p: Profile, component: str) -> None:
    """Raise :class:`MissingWeightsError` (with its how-to) unless ``component`` is available."""
    status = component_status(p, component)
    if not status.available:
        raise MissingWeightsError(missing_message([status]))


def require_profile(params: Params, profile_name: str | None = None, unused: Iterable[str] = ()) -> None:
    """Raise :class:`MissingWeightsError` listing every missing component of the profile; else return.

    ``unused``: components the caller will not load (the rl stage's preference models at weight 0), so a
    user is never sent to download weights a run does not read."""
    name = profile_name or params.profile
    skipped = set(unused)
    statuses = [s for s in check_profile(params, name) if s.component not in skipped]
    if any(not s.available for s in statuses):
        raise MissingWeightsError(missing_message(statuses, name))


def profile_summary(statuses: list[ComponentStatus]) -> str:
    """JSON of the statuses (for logs and the models stage)."""
    return json.dumps([s.__dict__ for s in statuses], indent=2)
