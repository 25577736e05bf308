"""A full-size replica of the paper profile: real architectures and hub file layouts, random weights.

No machine here reaches a model hub, yet the paper profile's code (77-token CLIP truncation, 512 -> 224 px
CLIP resize, the 299 px Inception, the 768-d aesthetic head, t5-small's tokenizer) must run before a GPU
user meets it. :func:`build_replica` writes every paper component at its real size, in the files and
names the loaders read, so the *unchanged* paper profile resolves them offline::

    <out>/hub/                         an HF_HUB_CACHE (refs/main + blobs + snapshots/<commit>/...)
      models--stable-diffusion-v1-5--stable-diffusion-v1-5   model_index.json, unet/ vae/ text_encoder/
                                       tokenizer/ scheduler/ (SD 1.5's own configs, fp16 variant weights)
      models--google-t5--t5-small      config.json, generation_config.json, model.safetensors,
                                       tokenizer.json, tokenizer_config.json
      models--timm--vit_large_patch14_clip_224.openai   open_clip_model.safetensors (open_clip's
                                       ``ViT-L-14`` / ``openai`` hub entry)
      models--xswu--HPSv2              HPS_v2.1_compressed.pt: open_clip ``ViT-H-14`` (986M), fp16,
                                       ``{"state_dict": ...}`` (HPSv2's checkpoint layout)
      models--yuvalkirstain--PickScore_v1   config.json + model.safetensors: CLIPModel at CLIP-H (986M), fp16
      models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K   PickScore's processor: preprocessor_config.json,
                                       CLIP's BPE (vocab.json, merges.txt) and tokenizer configs
    <out>/paper/                       what params.yaml models.paper.{aesthetic,inception} name
      sac+logos+ava1-l14-linearMSE.pth           LAION MLP state dict, 768 -> 1024 -> 128 -> 64 -> 16 -> 1
      weights-inception-2015-12-05-6726825d.pth  torch-fidelity InceptionV3, logits scaled at 299 px
    <out>/REPLICA.json                 stamp (version, seed): a matching stamp skips the rebuild

Use it: ``HF_HUB_CACHE=<out>/hub HF_HUB_OFFLINE=1`` and copy (or link) ``<out>/paper/*`` to
``models/paper/``. Deterministic for a seed (each component is built from ``torch.manual_seed``).

Honest differences from the hub (docs/PAPER.md, "The paper path, tested offline on a full-size replica"):
- weights are random; SD's are written as the hub's ``fp16`` variant files (``*.fp16.safetensors``, the
  ones negopt loads and fetches), open_clip's ViT-L in fp16 too (open_clip casts on load), and so are the
  two preference models (HPSv2, PickScore: ~2 GB each instead of ~4 GB; the loaders cast them to float32),
  so the replica grows by ~4 GB, not ~8 GB;
- t5-small's ``spiece.model`` (a SentencePiece protobuf) cannot be produced offline without the
  ``sentencepiece`` trainer; the replica ships only the hub's ``tokenizer.json`` form: a Unigram with
  T5's id layout (<pad>=0, </s>=1, <unk>=2, 32000 pieces, <extra_id_99..0> = 32000..32099), its pieces
  trained on the words of CLIP's BPE vocabulary and topped up with CLIP's whole-word tokens;
- only what the loaders read is written (:data:`negopt.models.hub.HUB_FILES`, the same list ``negopt
  models fetch`` downloads): no ``safety_checker/`` or ``feature_extractor/`` (negopt passes None for
  both), no ``.ckpt``, ``.bin`` or full-precision duplicates.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

import torch

from negopt.core.io import atomic_path, read_json, write_json
from negopt.models.hub_cache import add_file, fake_commit, set_ref

REPLICA_VERSION = 3  # bump when a component changes: the stamp then forces a rebuild
SD_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
T5_REPO = "google-t5/t5-small"
CLIP_NAME, CLIP_TAG = "ViT-L-14", "openai"
HPSV2_NAME, HPSV2_REPO, HPSV2_FILE = "ViT-H-14", "xswu/HPSv2", "HPS_v2.1_compressed.pt"
PICKSCORE_REPO, PICKSCORE_PROCESSOR_REPO = "yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"

# --- SD 1.5's own configs (the hub repo stable-diffusion-v1-5/stable-diffusion-v1-5) ---------------------------
_ADDED = {"__type": "AddedToken", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
SD_FILES: dict[str, dict] = {
    "model_index.json": {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.6.0",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet/config.json": {
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.6.0",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    },
    "vae/config.json": {
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.6.0",
        "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "in_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "out_channels": 3,
        "sample_size": 512,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    },
    "text_encoder/config.json": {
        "_name_or_path": "openai/clip-vit-large-patch14",
        "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": 768,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 77,
        "model_type": "clip_text_model",
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "pad_token_id": 1,
        "projection_dim": 768,
        "torch_dtype": "float32",
        "transformers_version": "4.22.0.dev0",
        "vocab_size": 49408,
    },
    "scheduler/scheduler_config.json": {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.6.0",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    },
    "tokenizer/special_tokens_map.json": {
        "bos_token": {"content": "<|startoftext|>", **_ADDED},
        "eos_token": {"content": "<|endoftext|>", **_ADDED},
        "pad_token": "<|endoftext|>",
        "unk_token": {"content": "<|endoftext|>", **_ADDED},
    },
    "tokenizer/tokenizer_config.json": {
        "add_prefix_space": False,
        "bos_token": {"content": "<|startoftext|>", **_ADDED},
        "do_lower_case": True,
        "eos_token": {"content": "<|endoftext|>", **_ADDED},
        "errors": "replace",
        "model_max_length": 77,
        "name_or_path": "openai/clip-vit-large-patch14",
        "pad_token": "<|endoftext|>",
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": {"content": "<|endoftext|>", **_ADDED},
    },
}

# google-t5/t5-small's config.json (less the task_specific_params the pipeline never reads).
T5_CONFIG = {
    "architectures": ["T5ForConditionalGeneration"],
    "d_ff": 2048,
    "d_kv": 64,
    "d_model": 512,
    "decoder_start_token_id": 0,
    "dropout_rate": 0.1,
    "eos_token_id": 1,
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "t5",
    "n_positions": 512,
    "num_heads": 8,
    "num_layers": 6,
    "output_past": True,
    "pad_token_id": 0,
    "relative_attention_num_buckets": 32,
    "vocab_size": 32128,
}
T5_PIECES = 32000  # SentencePiece pieces incl. <pad>, </s>, <unk>; then 100 sentinels; 28 padding rows to 32128


# --- PickScore: CLIP-H in transformers' layout (yuvalkirstain/PickScore_v1, laion/CLIP-ViT-H-14-...) ------
_CLIP_MEAN, _CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
PICKSCORE_CONFIG: dict = {
    "architectures": ["CLIPModel"],
    "model_type": "clip",
    "projection_dim": 1024,
    "logit_scale_init_value": 2.6592,
    "text_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                    "num_attention_heads": 16, "max_position_embeddings": 77, "vocab_size": 49408,
                    "hidden_act": "gelu", "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1},
    "vision_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                      "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "gelu"},
}
PICKSCORE_PROCESSOR_FILES: dict[str, dict] = {
    "preprocessor_config.json": {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                                 "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": _CLIP_MEAN,
                                 "image_std": _CLIP_STD, "resample": 3, "size": 224},
    "tokenizer_config.json": {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                              "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                              "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
    "special_tokens_map.json": {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
}


# --- tokenizers -----------------------------------------------------------------------------------


def clip_bpe() -> tuple[list[str], list[tuple[str, str]]]:
    """SD's CLIP vocabulary (49408, id order) and merges (48894) from open_clip's shipped BPE file.

    Merges are lines 1 .. 48894 of ``bpe_simple_vocab_16e6.txt.gz``; the vocabulary is the 256 byte
    symbols of ``bytes_to_unicode()``, the same with ``</w>``, one token per merge, then the two specials.
    """
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    return vocab + ["<|startoftext|>", "<|endoftext|>"], merges  # type: ignore[return-value]


def write_clip_tokenizer(folder: Path) -> None:
    """``vocab.json`` + ``merges.txt`` (``#version: 0.2``) as in SD 1.5's tokenizer/ folder."""
    vocab, merges = clip_bpe()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def t5_tokenizer_json() -> str:
    """A ``tokenizer.json`` in t5-small's form: Unigram, Metaspace, ``$A </s>``; ids as T5's (see module doc)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    vocab, _ = clip_bpe()
    # The merged tokens (English-web subwords), ASCII only: a character too rare to become a piece is
    # appended by the trainer in hash-map order, which differs from run to run.
    words = [t.removesuffix("</w>") for t in vocab[512:-2] if t.isascii()]
    specials = ["<pad>", "</s>", "<unk>"]
    trainer = trainers.UnigramTrainer(
        vocab_size=T5_PIECES, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(words, trainer=trainer)
    trained = json.loads(tok.to_str())["model"]["vocab"]  # [[piece, log-prob], ...], specials first
    # The trainer's float sums vary in the last bits from run to run (threads), reordering ties: round
    # and sort, so a seed gives the same ids every time.
    body = sorted(((p, round(sc, 6)) for p, sc in trained[len(specials):]), key=lambda x: (-x[1], x[0]))
    pieces = [[p, 0.0] for p in specials] + [list(x) for x in _sort_required_chars(body)]
    have = {p for p, _ in pieces}
    floor = min(s for _, s in pieces[len(specials):]) - 1.0
    for t in vocab[512:-2]:  # top up with ASCII whole words ("cat</w>" -> "▁cat") in CLIP's merge order
        if len(pieces) >= T5_PIECES:
            break
        piece = "\u2581" + t.removesuffix("</w>")
        if t.endswith("</w>") and t.isascii() and piece not in have:
            pieces.append([piece, floor])
            have.add(piece)
            floor -= 1e-4
    if len(pieces) != T5_PIECES:
        raise RuntimeError(f"T5 replica tokenizer: {len(pieces)} pieces, expected {T5_PIECES}")
    pieces += [[f"<extra_id_{i}>", 0.0] for i in range(99, -1, -1)]  # <extra_id_0> = 32099, as in T5
    tok = Tokenizer(models.Unigram([tuple(p) for p in pieces], unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens([*specials, *(f"<extra_id_{i}>" for i in range(100))])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return tok.to_str()


def _sort_required_chars(body: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Put the trainer's appended characters in codepoint order.

    Characters too rare to be kept are appended by the trainer in hash-map order (which changes from
    process to process) with scores one ``1e-4`` step apart: within each such run of single characters,
    keep the run's scores and sort its characters.
    """
    out, i = list(body), 0
    while i < len(out):
        j = i
        while j + 1 < len(out) and len(out[j][0]) == len(out[j + 1][0]) == 1 and \
                round(out[j][1] - out[j + 1][1], 6) == 1e-4:
            j += 1
        if j > i:
            chars = sorted(p for p, _ in out[i : j + 1])
            out[i : j + 1] = [(c, sc) for c, (_, sc) in zip(chars, out[i : j + 1], strict=True)]
        i = j + 1
    return out


T5_TOKENIZER_CONFIG = {
    "eos_token": "</s>",
    "extra_ids": 100,
    "additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)],
    "model_max_length": 512,
    "pad_token": "<pad>",
    "tokenizer_class": "T5Tokenizer",
    "unk_token": "<unk>",
}


T5_SPECIAL_TOKENS = {
    "additional_special_tokens": T5_TOKENIZER_CONFIG["additional_special_tokens"],
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
}


# --- weights --------------------------------------------------------------------------------------


def _save_safetensors(state: dict[str, torch.Tensor], path: Path, dtype: torch.dtype | None) -> None:
    from safetensors.torch import save_file

    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
        for k, v in state.items()
    }
    save_file(tensors, str(path), metadata={"format": "pt"})


def _sd_weights(tmp: Path, seed: int) -> dict[str, Path]:
    """unet / vae / text_encoder fp16 state dicts (the hub's ``fp16`` variant) built from SD 1.5's configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = {}
    for sub, build in (
        ("unet", lambda c: UNet2DConditionModel.from_config(c)),
        ("vae", lambda c: AutoencoderKL.from_config(c)),
        ("text_encoder", lambda c: CLIPTextModel(CLIPTextConfig(**c))),
    ):
        cfg = {k: v for k, v in SD_FILES[f"{sub}/config.json"].items() if k != "architectures"}
        torch.manual_seed(seed)
        model = build(cfg)
        # the hub's fp16 variant files: what the loader reads (negopt.models.find.SD_VARIANT)
        name = "model.fp16.safetensors" if sub == "text_encoder" else "diffusion_pytorch_model.fp16.safetensors"
        path = tmp / f"sd-{sub}.safetensors"
        _save_safetensors(model.state_dict(), path, torch.float16)
        del model
        out[f"{sub}/{name}"] = path
    return out


def _t5_weights(tmp: Path, seed: int) -> Path:
    """t5-small at its real shape, fp32 like the hub file (transformers loads a checkpoint in its own dtype)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(T5Config(**{k: v for k, v in T5_CONFIG.items() if k != "architectures"}))
    model.save_pretrained(tmp / "t5")  # handles the tied embeddings (one stored copy, as on the hub)
    path = tmp / "t5.safetensors"
    (tmp / "t5" / "model.safetensors").rename(path)
    return path


def _clip_weights(tmp: Path, seed: int) -> tuple[str, str, Path]:
    """open_clip ViT-L-14 (QuickGELU, as the openai tag) -> (hub repo, file name, fp16 safetensors)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(CLIP_NAME, CLIP_TAG)
    repo, filename = cfg["hf_hub"].rstrip("/"), "open_clip_model.safetensors"
    torch.manual_seed(seed)
    model = open_clip.create_model(CLIP_NAME, pretrained=None, force_quick_gelu=cfg.get("quick_gelu", False))
    path = tmp / "clip.safetensors"
    _save_safetensors(model.state_dict(), path, torch.float16)
    return repo, filename, path


def _hpsv2_weights(tmp: Path, seed: int) -> Path:
    """open_clip ViT-H-14 saved as HPSv2's checkpoint: ``torch.save({"state_dict": fp16 tensors})``."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(HPSV2_NAME, pretrained=None)
    path = tmp / HPSV2_FILE
    torch.save({"state_dict": {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}}, path)
    return path


def _pickscore_weights(tmp: Path, seed: int) -> Path:
    """transformers CLIPModel at CLIP-H (PickScore_v1's config), fp16 ``model.safetensors``."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    cfg = {k: v for k, v in PICKSCORE_CONFIG.items() if k not in ("architectures", "model_type")}
    model = CLIPModel(CLIPConfig(**cfg))
    path = tmp / "pickscore.safetensors"
    _save_safetensors(model.state_dict(), path, torch.float16)
    return path


def _non_hub_files(paper_dir: Path, seed: int) -> None:
    from negopt.models.nets import AestheticMLP
    from negopt.models.tiny import random_inception_state_dict

    torch.manual_seed(seed)
    mlp = AestheticMLP(768)
    with atomic_path(paper_dir / AESTHETIC_FILE) as tmp:
        torch.save({k: v.contiguous() for k, v in mlp.state_dict().items()}, tmp)
    # Logits scaled at 299 px, the size it runs at: the tiny zoo's 75 px scaling reaches logits ~9e5 here.
    with atomic_path(paper_dir / INCEPTION_FILE) as tmp:
        torch.save(random_inception_state_dict(seed, input_size=299), tmp)


# --- the whole replica ----------------------------------------------------------------------------


def stamp(seed: int) -> dict:
    return {"version": REPLICA_VERSION, "seed": seed, "sd": SD_REPO, "policy": T5_REPO,
            "clip": f"{CLIP_NAME}/{CLIP_TAG}"}


def replica_ready(out: str | Path, seed: int) -> bool:
    path = Path(out) / "REPLICA.json"
    try:
        return read_json(path) == stamp(seed)
    except (OSError, ValueError):
        return False


def build_replica(out: str | Path, seed: int = 0, force: bool = False, log=print) -> Path:
    """Build (or keep, if the stamp matches) the replica under ``out``; returns ``out``."""
    out = Path(out)
    if not force and replica_ready(out, seed):
        log(f"replica: {out} is up to date (seed {seed}, version {REPLICA_VERSION})")
        return out
    (out / "REPLICA.json").unlink(missing_ok=True)
    for stale in ("hub", "paper"):
        shutil.rmtree(out / stale, ignore_errors=True)
    hub, paper = out / "hub", out / "paper"
    paper.mkdir(parents=True, exist_ok=True)
    salt = f"seed{seed}-v{REPLICA_VERSION}"
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmpdir:
        tmp = Path(tmpdir)

        def add_json(repo: str, commit: str, rel: str, obj: dict | str) -> None:
            src = tmp / "small.json"
            src.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=2, sort_keys=True))
            add_file(hub, repo, commit, rel, src)

        log("replica: stable diffusion 1.5 (unet 860M, vae 84M, text encoder 123M) ...")
        sd_commit = fake_commit(SD_REPO, salt)
        for rel, obj in SD_FILES.items():
            add_json(SD_REPO, sd_commit, rel, obj)
        write_clip_tokenizer(tmp / "cliptok")
        for name in ("vocab.json", "merges.txt"):
            add_file(hub, SD_REPO, sd_commit, f"tokenizer/{name}", tmp / "cliptok" / name)
        for rel, path in _sd_weights(tmp, seed).items():
            add_file(hub, SD_REPO, sd_commit, rel, path)
        set_ref(hub, SD_REPO, sd_commit)

        log("replica: t5-small (60M) ...")
        t5_commit = fake_commit(T5_REPO, salt)
        add_json(T5_REPO, t5_commit, "config.json", T5_CONFIG)
        add_json(T5_REPO, t5_commit, "generation_config.json",
                 {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0})
        add_json(T5_REPO, t5_commit, "tokenizer_config.json", T5_TOKENIZER_CONFIG)
        add_json(T5_REPO, t5_commit, "special_tokens_map.json", T5_SPECIAL_TOKENS)
        add_json(T5_REPO, t5_commit, "tokenizer.json", t5_tokenizer_json())
        add_file(hub, T5_REPO, t5_commit, "model.safetensors", _t5_weights(tmp, seed))
        set_ref(hub, T5_REPO, t5_commit)

        log("replica: open_clip ViT-L-14 / openai (428M) ...")
        repo, filename, path = _clip_weights(tmp, seed)
        clip_commit = fake_commit(repo, salt)
        add_file(hub, repo, clip_commit, filename, path)
        set_ref(hub, repo, clip_commit)

        log("replica: HPSv2 (open_clip ViT-H-14, 986M) and PickScore (CLIPModel CLIP-H, 986M), fp16 ...")
        add_preference_models(hub, tmp, seed, salt, add_json)

        log("replica: LAION aesthetic MLP, Inception logits scaled at 299 px ...")
        _non_hub_files(paper, seed)
    write_json(out / "REPLICA.json", stamp(seed))  # last: only a complete replica is ever "ready"
    return out


def add_preference_models(hub: Path, tmp: Path, seed: int, salt: str, add_json) -> None:
    """HPSv2's and PickScore's repos (and PickScore's processor repo) into the hub cache ``hub``."""
    commit = fake_commit(HPSV2_REPO, salt)
    add_file(hub, HPSV2_REPO, commit, HPSV2_FILE, _hpsv2_weights(tmp, seed))
    set_ref(hub, HPSV2_REPO, commit)  # add_file moved the ~2 GB file into the cache: tmp holds one model at a time

    commit = fake_commit(PICKSCORE_REPO, salt)
    add_json(PICKSCORE_REPO, commit, "config.json", PICKSCORE_CONFIG)
    add_file(hub, PICKSCORE_REPO, commit, "model.safetensors", _pickscore_weights(tmp, seed))
    set_ref(hub, PICKSCORE_REPO, commit)

    commit = fake_commit(PICKSCORE_PROCESSOR_REPO, salt)
    for rel, obj in PICKSCORE_PROCESSOR_FILES.items():
        add_json(PICKSCORE_PROCESSOR_REPO, commit, rel, obj)
    write_clip_tokenizer(tmp / "pickscore-tok")
    for name in ("vocab.json", "merges.txt"):
        add_file(hub, PICKSCORE_PROCESSOR_REPO, commit, name, tmp / "pickscore-tok" / name)
    set_ref(hub, PICKSCORE_PROCESSOR_REPO, commit)


def disk_usage(out: str | Path) -> int:
    """Bytes under ``out`` (symlinks not followed, so each blob counts once)."""
    return sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file() and not p.is_symlink())
