"""Builders for the tiny offline profile: small random-initialised models saved in each library's format.

No machine here reaches a model hub, so the tiny profile builds every component from a config with a
fixed seed and saves it the way the real weights are stored (``save_pretrained`` folders, an open_clip
checkpoint, the LAION MLP state dict, a torch-fidelity Inception state dict). The loader then uses the
*same* code path for tiny files and real hub ids. Tiny numbers prove the machinery, not image quality.

Layout written by :func:`build_tiny_zoo` (params.yaml ``models.tiny`` points into it)::

    t5/                                    policy (helper "sft": negopt.models.t5.build_tiny_t5)
    sd/                                    diffusers StableDiffusionPipeline (save_pretrained)
    sdxl/                                  diffusers StableDiffusionXLPipeline (two text encoders), not the default
    clip/negopt-tiny-clip.json             open_clip model config (registered by name)
    clip/open_clip_model.safetensors       open_clip state dict
    aesthetic/model.safetensors            LAION aesthetic MLP sized to the CLIP embed dim
    inception/weights.pt                   torch-fidelity InceptionV3 state dict (random, ~92 MB)
    hpsv2/negopt-tiny-hpsv2.json           HPSv2: open_clip config (the tiny CLIP's architecture) ...
    hpsv2/hps_tiny.pt                      ... and ``{"state_dict": ...}``, the layout of HPS_v2.1_compressed.pt
    pickscore/                             PickScore: transformers CLIPModel + CLIPProcessor (save_pretrained)
    embeddings/tiny-negative.safetensors   a textual-inversion embedding, A1111's layout (EasyNegative's)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from negopt.core.io import atomic_dir, atomic_path, write_text
from negopt.models.nets import AestheticMLP, register_clip_config

TINY_CLIP_NAME = "negopt-tiny-clip"
TINY_HPSV2_NAME = "negopt-tiny-hpsv2"
SD_SPECIALS = (
    "<|startoftext|>",
    "<|endoftext|>",
)  # bos id 0, eos = pad id 1 (eos id 2 would hit a legacy path)
SD_MAX_LENGTH = 32

# open_clip config for a ~0.2 M-parameter ViT + text transformer: a real open_clip architecture, small enough for CPU tests.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


# --- Stable Diffusion -----------------------------------------------------------------------------


def build_sd_tokenizer(texts: Sequence[str], vocab_size: int = 1000, max_length: int = SD_MAX_LENGTH):
    """A CLIPTokenizer with a BPE vocabulary trained on ``texts`` (CLIP's normaliser and pre-tokeniser)."""
    from tokenizers import Tokenizer, models, trainers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    # Borrow the exact normaliser / pre-tokeniser CLIPTokenizer uses, so training sees the same words.
    template = CLIPTokenizer(vocab={s: i for i, s in enumerate(SD_SPECIALS)}, merges=[])
    bpe = Tokenizer(
        models.BPE(unk_token=SD_SPECIALS[1], end_of_word_suffix="</w>", continuing_subword_prefix="")
    )
    bpe.normalizer = template.backend_tokenizer.normalizer
    bpe.pre_tokenizer = template.backend_tokenizer.pre_tokenizer
    # Every byte and byte+</w> gets a fixed id up front (passed as "special" tokens so the trainer numbers
    # them first): bytes never seen at a word end (e.g. digits) would otherwise encode as unk, and the
    # trainer would number the others in hash-map order, which breaks ties between equally frequent merges
    # differently from run to run.
    base = sorted({ch + end for ch in ByteLevel.alphabet() for end in ("", "</w>")})
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SD_SPECIALS, *base],
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    tok.model_max_length = max_length
    return tok


def build_tiny_sd(texts: Sequence[str], out_dir: str | Path, vocab_size: int = 1000, seed: int = 0) -> Path:
    """Build a tiny StableDiffusionPipeline (64x64 images, 8x8 latents) and ``save_pretrained`` it."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_sd_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=SD_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_tiny_sdxl(texts: Sequence[str], out_dir: str | Path, vocab_size: int = 1000, seed: int = 0) -> Path:
    """A tiny ``StableDiffusionXLPipeline`` (64x64 images, 8x8 latents) with SDXL's architecture, saved.

    What differs from SD 1.x is all here, small: two text encoders (``CLIPTextModel`` and
    ``CLIPTextModelWithProjection``, 32 wide each) whose penultimate hidden states are concatenated into a
    64-wide cross-attention context; a UNet with ``addition_embed_type="text_time"`` that adds the pooled,
    projected text embedding and the six size / crop conditioning numbers (``addition_time_embed_dim`` 8 each:
    ``6 * 8 + 32 = 80`` inputs); an ``EulerDiscreteScheduler``; the VAE scaling factor 0.13025.
    Both tokenizers are the tiny SD tokenizer (SDXL's two are both CLIP's BPE).
    """
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_sd_tokenizer(texts, vocab_size)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=SD_MAX_LENGTH, projection_dim=32, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(text_config)
    torch.manual_seed(seed + 1)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    torch.manual_seed(seed + 2)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 1),
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64, norm_num_groups=8,
    )
    torch.manual_seed(seed + 3)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32), latent_channels=4,
        norm_num_groups=8, sample_size=64, scaling_factor=0.13025,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                     add_watermarker=False)
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


TINY_EMBEDDING = "tiny-negative"  # the tiny profile's textual inversion (params.yaml models.tiny.textual_inversions)


def build_tiny_embedding(out_path: str | Path, width: int = 32, vectors: int = 2, seed: int = 0) -> Path:
    """A random textual-inversion embedding for the tiny SD's text encoder (``width`` wide), saved as A1111's
    safetensors embeddings are (``{"emb_params": [vectors, width]}``, EasyNegative's layout), which diffusers'
    ``load_textual_inversion`` reads. Two vectors, so the name expands to two tokens (``name name_1``) as a real
    multi-vector embedding does."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    with atomic_path(out_path) as tmp:
        save_file({"emb_params": torch.randn(vectors, width, generator=gen) * 0.5}, str(tmp))
    return Path(out_path)


# --- CLIP, aesthetic head, Inception --------------------------------------------------------------


def _random_open_clip(out_dir: Path, name: str, seed: int):
    """Write the tiny open_clip config ``<name>.json`` into ``out_dir``, register it, and build a seeded
    random model of it; returns (config path, model). The CLIP scorer and the tiny HPSv2 share it."""
    import open_clip

    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{name}.json"
    write_text(config_path, json.dumps(TINY_CLIP_CONFIG, indent=2) + "\n")
    register_clip_config(config_path)
    torch.manual_seed(seed)
    return config_path, open_clip.create_model(name, pretrained=None)


def build_tiny_clip(out_dir: str | Path, seed: int = 0, name: str = TINY_CLIP_NAME) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``open_clip_model.safetensors``; returns (config path, weights path)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    config_path, model = _random_open_clip(out_dir, name, seed)
    weights = out_dir / "open_clip_model.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    return config_path, weights


def build_tiny_hpsv2(out_dir: str | Path, seed: int = 0, name: str = TINY_HPSV2_NAME) -> tuple[Path, Path]:
    """A random open_clip model saved as HPSv2's checkpoint, ``torch.save({"state_dict": ...})``.

    Same class and file layout as HPSv2.1 (open_clip ``ViT-H-14``, ``HPS_v2.1_compressed.pt``), so
    :func:`negopt.models.loader.load_hpsv2` reads both; returns (config path, weights path).
    """
    out_dir = Path(out_dir)
    config_path, model = _random_open_clip(out_dir, name, seed)
    weights = out_dir / "hps_tiny.pt"
    with atomic_path(weights) as tmp:
        torch.save({"state_dict": {k: v.contiguous() for k, v in model.state_dict().items()}}, tmp)
    return config_path, weights


def build_tiny_pickscore(texts: Sequence[str], out_dir: str | Path, vocab_size: int = 1000, seed: int = 0) -> Path:
    """A random transformers ``CLIPModel`` (PickScore's class) and its ``CLIPProcessor``, ``save_pretrained``.

    64 px images (patch 8), a 32-token text encoder on a BPE trained on ``texts`` (the tiny SD's tokenizer
    recipe); the processor resizes and centre-crops to 64 as PickScore's does to 224.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = build_sd_tokenizer(texts, vocab_size)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(small, vocab_size=len(tokenizer), max_position_embeddings=SD_MAX_LENGTH,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(small, image_size=64, patch_size=8),
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    # the hub layout of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (preprocessor_config.json + tokenizer files), which
    # CLIPProcessor.from_pretrained reads; transformers 5's CLIPProcessor.save_pretrained would write processor_config.json
    image_processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_aesthetic(out_path: str | Path, embed_dim: int, seed: int = 0) -> Path:
    """A random LAION-layout aesthetic MLP for a CLIP with ``embed_dim``-wide embeddings (safetensors)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    mlp = AestheticMLP(embed_dim)
    with atomic_path(out_path) as tmp:
        save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(tmp))
    return Path(out_path)


def random_inception_state_dict(
    seed: int = 0, input_size: int = 75, logit_std: float = 3.0
) -> dict[str, torch.Tensor]:
    """A random state dict for torch-fidelity's InceptionV3 whose logits are not degenerate.

    Kaiming-normal convs and an fc with std 0.02 alone give near-uniform posteriors, an IS of ~1
    (docs/MODELS.md, "The tiny Inception"): with identity BatchNorms every pooled feature is a mean of
    positive activations, so all images share one dominant feature direction. A deterministic data-dependent
    init fixes that: BN statistics from one seeded batch of smooth random images (as the real BNs hold
    ImageNet statistics), the fc made orthogonal to the mean feature, and scaled so logits have std
    ``logit_std`` on that batch.
    """
    gen = torch.Generator().manual_seed(seed)
    net = _inception_shell(input_size)
    for name, value in net.state_dict().items():
        if name.endswith("conv.weight"):
            fan_in = value[0].numel()
            value.copy_(torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
        elif name == "fc.weight":
            value.copy_(torch.randn(value.shape, generator=gen) * 0.02)
        elif name == "fc.bias":
            value.zero_()
    smooth = _smooth_images(32, 64, gen)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float sums in one fixed order: the same weights whatever the caller's threads
    try:
        _fit_batchnorm_and_logit_scale(net, smooth, bns, logit_std)
    finally:
        torch.set_num_threads(threads)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _fit_batchnorm_and_logit_scale(net: nn.Module, images: torch.Tensor, bns: list[nn.BatchNorm2d],
                                   logit_std: float) -> None:
    """BatchNorm statistics of ``images``, then an fc layer whose logits on them have std ``logit_std``."""
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one batch gives exactly its statistics
        net.train()
        net.features_list = ["2048"]
        net(images)
        net.eval()
        (feats,) = net(images)
        mean = torch.nn.functional.normalize(feats.mean(0), dim=0)
        w = net.fc.weight
        w -= torch.outer(w @ mean, mean)  # remove the shared direction: logits then follow the image
        w *= logit_std / (feats @ w.T).std()
    for bn in bns:
        bn.momentum = 0.1  # back to torch's default so the saved module is an ordinary one


def _smooth_images(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` uint8 images of low-frequency colour noise (grids of 2-16 cells, bilinearly upsampled)."""
    out = []
    for i in range(n):
        cells = 2 ** (1 + i % 4)
        grid = torch.rand(1, 3, cells, cells, generator=gen) * 255
        out.append(
            torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)
        )
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8)


def _inception_shell(input_size: int) -> nn.Module:
    """torch-fidelity's InceptionV3 extractor without its constructor (which insists on loading weights)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3.__new__(FeatureExtractorInceptionV3)
    nn.Module.__init__(net)
    _inception_layers(net)
    net.name, net.features_list = "negopt-inception-init", ["logits_unbiased"]
    net.feature_extractor_internal_dtype = torch.float32
    net.INPUT_IMAGE_SIZE = input_size  # instance attribute shadows the class's 299
    return net


def _inception_layers(m: nn.Module) -> None:
    """The module tree of torch-fidelity's FeatureExtractorInceptionV3.__init__, without the weight load."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    m.Conv2d_1a_3x3 = fe.BasicConv2d(3, 32, kernel_size=3, stride=2)
    m.Conv2d_2a_3x3 = fe.BasicConv2d(32, 32, kernel_size=3)
    m.Conv2d_2b_3x3 = fe.BasicConv2d(32, 64, kernel_size=3, padding=1)
    m.MaxPool_1 = nn.MaxPool2d(kernel_size=3, stride=2)
    m.Conv2d_3b_1x1 = fe.BasicConv2d(64, 80, kernel_size=1)
    m.Conv2d_4a_3x3 = fe.BasicConv2d(80, 192, kernel_size=3)
    m.MaxPool_2 = nn.MaxPool2d(kernel_size=3, stride=2)
    m.Mixed_5b = fe.InceptionA(192, pool_features=32)
    m.Mixed_5c = fe.InceptionA(256, pool_features=64)
    m.Mixed_5d = fe.InceptionA(288, pool_features=64)
    m.Mixed_6a = fe.InceptionB(288)
    m.Mixed_6b = fe.InceptionC(768, channels_7x7=128)
    m.Mixed_6c = fe.InceptionC(768, channels_7x7=160)
    m.Mixed_6d = fe.InceptionC(768, channels_7x7=160)
    m.Mixed_6e = fe.InceptionC(768, channels_7x7=192)
    m.Mixed_7a = fe.InceptionD(768)
    m.Mixed_7b = fe.InceptionE_1(1280)
    m.Mixed_7c = fe.InceptionE_2(2048)
    m.AvgPool = nn.AdaptiveAvgPool2d(output_size=(1, 1))
    m.fc = nn.Linear(2048, 1008)


def build_inception(out_path: str | Path, seed: int = 0, input_size: int = 75) -> Path:
    """Save the random Inception state dict with torch.save (torch-fidelity's own format)."""
    with atomic_path(out_path) as tmp:
        torch.save(random_inception_state_dict(seed, input_size), tmp)
    return Path(out_path)


# --- the whole zoo --------------------------------------------------------------------------------


def build_tiny_zoo(
    texts: Sequence[str],
    out_dir: str | Path,
    seed: int = 0,
    t5_vocab_size: int = 1000,
    sd_vocab_size: int = 1000,
    t5_pretokenizer: str = "word",
    inception_input_size: int = 75,
) -> dict[str, Path]:
    """Build every tiny component into ``out_dir`` (replaced atomically as a whole); returns their paths."""
    from negopt.models.t5 import build_tiny_t5  # helper "sft" owns the T5 builder

    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError(
            "build_tiny_zoo: no texts to train the tokenizers on (is data/clean/train.parquet empty?)"
        )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        build_tiny_t5(texts, tmp / "t5", vocab_size=t5_vocab_size, seed=seed, pretokenizer=t5_pretokenizer)
        build_tiny_sd(texts, tmp / "sd", vocab_size=sd_vocab_size, seed=seed)
        build_tiny_sdxl(texts, tmp / "sdxl", vocab_size=sd_vocab_size, seed=seed)
        build_tiny_clip(tmp / "clip", seed=seed)
        build_aesthetic(tmp / "aesthetic" / "model.safetensors", TINY_CLIP_CONFIG["embed_dim"], seed=seed)
        build_inception(tmp / "inception" / "weights.pt", seed=seed, input_size=inception_input_size)
        build_tiny_hpsv2(tmp / "hpsv2", seed=seed + 1)
        build_tiny_pickscore(texts, tmp / "pickscore", vocab_size=sd_vocab_size, seed=seed + 2)
        build_tiny_embedding(tmp / "embeddings" / f"{TINY_EMBEDDING}.safetensors", seed=seed + 3)
    return {
        "policy": out_dir / "t5",
        "sd": out_dir / "sd",
        "sdxl": out_dir / "sdxl",  # the SDXL architecture: models.tiny.sd=models/tiny/sdxl runs the SDXL path
        "clip_config": out_dir / "clip" / f"{TINY_CLIP_NAME}.json",
        "clip_pretrained": out_dir / "clip" / "open_clip_model.safetensors",
        "aesthetic": out_dir / "aesthetic" / "model.safetensors",
        "inception": out_dir / "inception" / "weights.pt",
        "hpsv2_config": out_dir / "hpsv2" / f"{TINY_HPSV2_NAME}.json",
        "hpsv2": out_dir / "hpsv2" / "hps_tiny.pt",
        "pickscore": out_dir / "pickscore",
        "textual_inversions": out_dir / "embeddings" / f"{TINY_EMBEDDING}.safetensors",
    }
