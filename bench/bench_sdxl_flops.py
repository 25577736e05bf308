"""Count model FLOPs per image of SD 1.5 vs SDXL (and the preference scorers) on the meta device.

No weights, no GPU: each architecture is built on torch's ``meta`` device and one forward is traced with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; 1 MAC = 2 FLOPs). The numbers are
*counted from the architecture*, not timings. Configs: SD 1.5's from ``negopt.models.replica``; SDXL base
1.0's UNet / text encoders as published in stabilityai/stable-diffusion-xl-base-1.0 (not fetched here).

    python bench/bench_sdxl_flops.py        # prints a JSON table (docs/PAPER.md "SDXL" rows)
"""

from __future__ import annotations

import json

import torch
from torch.utils.flop_counter import FlopCounterMode

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
CLIP_L_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu")
CLIP_BIGG_TEXT = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                      max_position_embeddings=77, vocab_size=49408, hidden_act="gelu", projection_dim=1280)


def count(module: torch.nn.Module, *args, **kwargs) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*args, **kwargs)
    return counter.get_total_flops()


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from negopt.models.replica import SD_FILES

    out = {}
    with torch.device("meta"):
        sd_cfg = {k: v for k, v in SD_FILES["unet/config.json"].items() if not k.startswith("_")}
        sd = UNet2DConditionModel(**sd_cfg)
        out["sd15_unet_forward_512px"] = count(sd, torch.zeros(1, 4, 64, 64), torch.tensor([10]), torch.zeros(1, 77, 768))
        out["sd15_unet_params"] = params(sd)
        del sd
        xl = UNet2DConditionModel(**SDXL_UNET)
        cond = {"text_embeds": torch.zeros(1, 1280), "time_ids": torch.zeros(1, 6)}
        out["sdxl_unet_forward_1024px"] = count(xl, torch.zeros(1, 4, 128, 128), torch.tensor([10]),
                                                torch.zeros(1, 77, 2048), added_cond_kwargs=cond)
        out["sdxl_unet_params"] = params(xl)
        del xl
        vae_cfg = {k: v for k, v in SD_FILES["vae/config.json"].items() if not k.startswith("_")}
        vae = AutoencoderKL(**vae_cfg)
        out["vae_decode_512px"] = count(vae.decoder, torch.zeros(1, 4, 64, 64))
        out["vae_decode_1024px"] = count(vae.decoder, torch.zeros(1, 4, 128, 128))
        ids = torch.zeros(1, 77, dtype=torch.long)
        out["clip_l_text_77"] = count(CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)), ids)
        big = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG_TEXT))
        out["clip_bigg_text_77"], out["clip_bigg_text_params"] = count(big, ids), params(big)
    import open_clip

    with torch.device("meta"):
        vit_h = open_clip.create_model("ViT-H-14", pretrained=None, device="meta")
    out["vit_h14_image_224px"] = count(vit_h.visual, torch.zeros(1, 3, 224, 224, device="meta"))
    print(json.dumps({k: (f"{v / 1e12:.3f} TFLOP" if "params" not in k else f"{v / 1e6:.0f} M") for k, v in out.items()},
                     indent=2))


if __name__ == "__main__":
    main()
